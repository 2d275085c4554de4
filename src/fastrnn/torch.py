"""``fastrnn.torch.RNN``: fastrnn's kernels behind a drop-in ``torch.nn.RNN``.

Why it is built this way:
- It is an ``nn.Module`` whose ``nn.Parameter``s have nn.RNN's names, shapes, order and
  initialisation, so state_dicts load both ways (strict), optimizers, ``clip_grad_norm_``,
  ``.to()``/``.double()`` and ``torch.func.functional_call`` work unchanged. Constructor and
  shape checks are fastrnn's own (``fastrnn._checks``, torch's wording); only the checks that
  name torch dtypes and devices are written here.
- Forward and backward are ONE ``torch.autograd.Function`` around ``fastrnn.functional``,
  which already does the stacking, directions, dropout and layouts. CPU tensors cross to NumPy
  and back without copies (``.numpy()`` / ``torch.from_numpy``); CUDA tensors are passed as
  they are: they carry ``__cuda_array_interface__``, so ``functional`` picks its 'cuda'
  backend, and its device arrays come back through ``torch.as_tensor``.
- fastrnn's backward context keeps views of the input, hx, weights and output; they are also
  saved with ``save_for_backward``, so changing one in place between forward and backward
  raises torch's usual error instead of silently giving wrong gradients.
- When no gradient can be asked for (``torch.no_grad()``, or no tensor requires grad) the
  forward runs outside autograd with ``need_backward=False``: nothing is kept.
- Dropout masks come from a NumPy generator seeded from torch's default generator, so
  ``torch.manual_seed`` reproduces them (they are not the masks torch.nn.RNN would draw).
- PackedSequence input is REFUSED with NotImplementedError: the kernels run every sequence of
  a batch over the same number of steps, and the reverse direction and per-layer ``h_n`` of
  variable-length sequences cannot be had from them.

``import fastrnn`` never imports this module (nor torch).
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from . import _checks, functional
from .backends import load_backend

__all__ = ["RNN"]

_HOST_BACKENDS = ("numpy", "cpu")


@dataclass(frozen=True)
class _Options:
    """Everything rnn_forward needs besides the tensors."""
    names: tuple                 # parameter names, in the order the weights are passed
    nonlinearity: str
    batch_first: bool
    dropout: float
    training: bool
    rng: object                  # NumPy Generator for the dropout masks, or None
    backend: str


def _array(tensor):
    """The tensor as an array fastrnn.functional takes, without a copy."""
    if tensor.device.type == "cpu":
        return tensor.detach().numpy()
    return tensor.detach()       # CUDA: has __cuda_array_interface__


def _tensor(array, like):
    """A fastrnn result as a tensor on ``like``'s device, without a copy."""
    if like.device.type == "cpu":
        return torch.from_numpy(array)
    return torch.as_tensor(array, device=like.device)


def _run_forward(options, input, hx, weights, need_backward):
    """(output, h_n, context) of functional.rnn_forward, outputs as tensors."""
    output, h_n, context = functional.rnn_forward(
        _array(input), {name: _array(w) for name, w in zip(options.names, weights)},
        None if hx is None else _array(hx), nonlinearity=options.nonlinearity,
        batch_first=options.batch_first, dropout=options.dropout, training=options.training,
        rng=options.rng, backend=options.backend, need_backward=need_backward)
    return _tensor(output, input), _tensor(h_n, input), context


class _RNNFunction(torch.autograd.Function):
    """fastrnn's forward and BPTT as one autograd node over input, hx and every weight."""

    @staticmethod
    def forward(ctx, options, input, hx, *weights):
        output, h_n, context = _run_forward(options, input, hx, weights, need_backward=True)
        ctx.context, ctx.names = context, options.names
        ctx.save_for_backward(input, hx, output, *weights)
        return output, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, grad_h_n):
        input = ctx.saved_tensors[0]      # raises if a saved tensor was changed in place
        grad_x, grad_hx, grads = functional.rnn_backward(ctx.context, _array(grad_output),
                                                         _array(grad_h_n))
        needs = ctx.needs_input_grad      # (options, input, hx, *weights)
        grad_weights = [_tensor(grads[name], input) if need else None
                        for name, need in zip(ctx.names, needs[3:])]
        return (None, _tensor(grad_x, input) if needs[1] else None,
                _tensor(grad_hx, input) if needs[2] else None, *grad_weights)


def _dtype_name(torch_dtype):
    """'float32' for torch.float32: the name fastrnn._checks knows dtypes by."""
    return str(torch_dtype).rsplit(".", 1)[-1]


def _check_dtypes(input, hx, weight):
    """torch.nn.RNN's dtype check (its message), and the same rule for hx."""
    if input.dtype != weight.dtype:
        raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype "
                         f"({weight.dtype}). Convert input: input.to({weight.dtype}), or "
                         f"convert model: model.to({input.dtype})")
    if hx is not None and hx.dtype != weight.dtype:
        raise ValueError(f"RNN hx dtype ({hx.dtype}) does not match weight dtype "
                         f"({weight.dtype}). Convert hx: hx.to({weight.dtype})")


def _check_devices(input, hx, weight, backend):
    """All tensors on one CPU or CUDA device, and one the chosen backend runs on."""
    if input.device.type not in ("cpu", "cuda"):
        raise ValueError(f"fastrnn.torch.RNN runs on CPU and CUDA tensors, got input on "
                         f"{input.device}")
    if hx is not None and hx.device != input.device:
        raise RuntimeError("Input and hidden tensors are not at the same device, found input "
                           f"tensor at {input.device} and hidden tensor at {hx.device}")
    if weight.device != input.device:
        raise RuntimeError(f"Input and parameter tensors are not at the same device, found "
                           f"input tensor at {input.device} and parameter tensor at "
                           f"{weight.device}")
    on_host = input.device.type == "cpu"
    if backend != "auto" and (backend in _HOST_BACKENDS) != on_host:
        raise ValueError(f"backend {backend!r} cannot run on a tensor on {input.device}; "
                         "use backend='auto'")


class RNN(nn.Module):
    """Elman RNN with torch.nn.RNN's interface, run by fastrnn's kernels.

    Same constructor, parameters, ``forward(input, hx=None) -> (output, h_n)`` and errors as
    ``torch.nn.RNN``; ``backend`` ('auto', 'cpu', 'numpy' or 'cuda') picks the kernels
    ('auto': 'cuda' for CUDA tensors, 'cpu' otherwise). PackedSequence input is refused.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None,
                 *, backend="auto"):
        super().__init__()
        _checks.check_nonlinearity(nonlinearity)
        _checks.check_constructor(input_size, hidden_size, num_layers, dropout, bias, batch_first)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        _checks.check_dtype_name(_dtype_name(dtype))
        if backend != "auto":
            load_backend(backend)          # unknown or unavailable: an error now, not later
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        self.dropout, self.bidirectional, self.backend = float(dropout), bidirectional, backend
        shapes = functional.parameter_shapes(input_size, hidden_size, num_layers,
                                             bidirectional, bias)
        self._flat_weights_names = tuple(shapes)
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        """Every parameter uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)], in
        nn.RNN's order: the same seed gives nn.RNN's values."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    @property
    def all_weights(self):
        """[[w_ih, w_hh, b_ih, b_hh], ...] per layer and direction, as nn.RNN.all_weights."""
        per_state = 4 if self.bias else 2
        weights = [getattr(self, name) for name in self._flat_weights_names]
        return [weights[i:i + per_state] for i in range(0, len(weights), per_state)]

    def flatten_parameters(self):
        """No-op, for code written for nn.RNN: the kernels read the parameters in place."""

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    def _dropout_rng(self):
        """A NumPy generator seeded from torch's, when this call drops anything; else None."""
        if self.training and self.dropout > 0 and self.num_layers > 1:
            return np.random.default_rng(int(torch.randint(2 ** 62, ()).item()))
        return None

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            raise NotImplementedError(
                "fastrnn.torch.RNN takes a tensor [T, B, I] (or [B, T, I] with batch_first), "
                "got a PackedSequence: variable-length batches are not supported. Use "
                "torch.nn.RNN for packed input, or batch sequences of equal length.")
        weights = [getattr(self, name) for name in self._flat_weights_names]
        directions = 2 if self.bidirectional else 1
        _checks.check_input(input, hx, self.input_size, self.num_layers * directions,
                            self.hidden_size, self.batch_first)
        _check_dtypes(input, hx, weights[0])
        _check_devices(input, hx, weights[0], self.backend)
        options = _Options(self._flat_weights_names, self.nonlinearity, self.batch_first,
                           self.dropout, self.training, self._dropout_rng(), self.backend)
        tensors = [input, hx, *weights]
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return _RNNFunction.apply(options, input, hx, *weights)
        output, h_n, _ = _run_forward(options, input, hx, weights, need_backward=False)
        return output, h_n
