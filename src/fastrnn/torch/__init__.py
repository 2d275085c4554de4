"""fastrnn for torch users: ``fastrnn.torch.RNN``, a drop-in ``torch.nn.RNN`` on fastrnn's kernels.

Importing this package registers the operators ``torch.ops.fastrnn.rnn_forward`` and
``torch.ops.fastrnn.rnn_backward`` (ops.py). Modules:

    module.py      RNN: the torch.nn.RNN subclass (checks, PackedSequence, precision, dropout)
    autograd.py    the operators' derivatives: first order fused, higher orders and forward mode
                   through composite.py
    ops.py         the custom operators: kernels via fastrnn.functional, fake and vmap rules
    composite.py   the same RNN in plain torch operations (for higher-order derivatives)

torch.compile: dynamo refuses every torch.nn.RNN instance (fastrnn.torch.RNN is one) unless
``torch._dynamo.config.allow_rnn = True``; with it, ``fullgraph=True`` works.

``import fastrnn`` never imports this package (nor torch).
"""
from .module import RNN

__all__ = ["RNN"]
