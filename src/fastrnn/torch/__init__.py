"""fastrnn for torch users: ``fastrnn.torch.RNN``, a drop-in ``torch.nn.RNN`` on fastrnn's kernels.

Importing this package registers the operators ``torch.ops.fastrnn.rnn_forward`` and
``torch.ops.fastrnn.rnn_backward`` (ops.py). Modules:

    module.py      RNN: the torch.nn.RNN subclass (checks, PackedSequence, precision, dropout)
    autograd.py    the operators' derivatives: first order fused, higher orders and forward mode
                   through composite.py
    ops.py         the custom operators: kernels via fastrnn.functional, fake and vmap rules
    composite.py   the same RNN in plain torch operations (for higher-order derivatives)

``import fastrnn`` never imports this package (nor torch).
"""
from .module import RNN

__all__ = ["RNN"]
