"""fastrnn for torch users: ``fastrnn.torch.RNN``, ``LSTM`` and ``GRU``, drop-in
``torch.nn.RNN`` / ``LSTM`` / ``GRU`` on fastrnn's kernels.

Importing this package registers the operators ``torch.ops.fastrnn.rnn_forward`` and
``torch.ops.fastrnn.rnn_backward`` (ops.py), one pair for every cell (their ``mode``). Modules:

    module.py      RNN, LSTM, GRU: subclasses of torch's modules on one shared mixin (checks,
                   PackedSequence, the LSTM's state pair, precision, dropout)
    autograd.py    the operators' derivatives: first order fused, higher orders and forward mode
                   through composite.py
    ops.py         the custom operators: kernels via fastrnn.functional, fake and vmap rules
    composite.py   the same stacks in plain torch operations (for higher-order derivatives)

torch.compile: dynamo refuses every torch.nn.RNN, LSTM and GRU instance (fastrnn.torch's are
ones) unless ``torch._dynamo.config.allow_rnn = True``; with it, ``fullgraph=True`` works.

Precision: float16/bfloat16 modules and torch.autocast compute in float32 inside and return
the low dtype, as module.py's header says.

``import fastrnn`` never imports this package (nor torch).
"""
from .module import GRU, LSTM, RNN

__all__ = ["RNN", "LSTM", "GRU"]
