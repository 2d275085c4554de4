"""``fastrnn.torch.RNN``: a ``torch.nn.RNN`` whose forward and backward run fastrnn's kernels.

Why a subclass of torch.nn.RNN: everything that is not the computation stays torch's own code,
so it behaves as torch's does because it IS torch's: the constructor and its errors
(``proj_size=`` included), parameters (names, order, initialisation, ``_flat_weights``,
``all_weights``), ``flatten_parameters``, ``_apply`` and device moves, parametrizations
(weight_norm, spectral_norm), state_dict, pickling, ``extra_repr``, and
``isinstance(m, torch.nn.RNN)``. ``forward`` follows torch.nn.RNN.forward step by step
(the same checks and messages, PackedSequence, unbatched input, ``batch_first``) and replaces
its one call to the ATen RNN by fastrnn's operator (ops.py, differentiated by autograd.py).
The price of being an nn.RNN: torch.compile's dynamo refuses to trace any torch.nn.RNN
instance unless ``torch._dynamo.config.allow_rnn = True``; fastrnn does not change another
library's settings, so a user who compiles sets it (then fullgraph=True works).

Precision: the kernels compute in float32 or float64. float16/bfloat16 modules, and float32
modules under ``torch.autocast``, compute in float32 from inputs and weights cast up, and return
output and h_n in the low dtype (what torch.nn.RNN returns there); gradients reach the
parameters in their own dtype. Dropout masks are drawn with torch's generator
(``torch.manual_seed`` reproduces them; they are not the masks torch.nn.RNN would draw).

Per-call cost: for plain CPU tensors in eager mode, when nothing needs a gradient or a trace
(no grad, no autocast, no tracing, compiling, functorch transform, forward AD or dispatch
mode: ``_eager_fast_path_applies``), the forward calls ``ops.EagerForward`` directly instead
of going through the dispatcher; everything else goes through the operator, which is what
compile, export and jit.trace see.
"""
from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..backends import load_backend
from . import autograd, ops

__all__ = ["RNN"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_is_tensor(input) -> None:
    """A clear error for anything but a tensor or PackedSequence (NumPy arrays especially)."""
    if isinstance(input, (Tensor, PackedSequence)):
        return
    if isinstance(input, np.ndarray):
        raise TypeError("fastrnn.torch.RNN expects a torch.Tensor (or a PackedSequence), got a "
                        f"numpy.ndarray of {input.dtype}: convert it with torch.from_numpy(x) "
                        "(no copy), or use fastrnn.RNN, the NumPy layer, for NumPy arrays")
    raise TypeError(f"fastrnn.torch.RNN expects a torch.Tensor (or a PackedSequence), got "
                    f"{type(input).__name__}")


def _check_devices(input: Tensor, hx: Tensor, weight: Tensor, backend: str) -> None:
    """torch.nn.RNN's device errors; and the devices the operator runs on."""
    if hx.device != input.device:
        raise RuntimeError("Input and hidden tensors are not at the same device, found input "
                           f"tensor at {input.device} and hidden tensor at {hx.device}")
    if weight.device != input.device:
        raise RuntimeError("Input and parameter tensors are not at the same device, found input "
                           f"tensor at {input.device} and parameter tensor at {weight.device}")
    if input.device.type not in ("cpu", "cuda", "meta"):
        raise RuntimeError(f"fastrnn.torch.RNN runs on CPU and CUDA tensors (meta tensors for "
                           f"shapes), got tensors on {input.device}")
    if backend in ("numpy", "cpu") and input.device.type == "cuda":
        raise ValueError(f"backend {backend!r} cannot run on a tensor on {input.device}; "
                         "use backend='auto'")


def _check_hx_dtype(hx: Tensor, weight: Tensor) -> None:
    if hx.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(f"RNN hx dtype ({hx.dtype}) does not match weight dtype "
                         f"({weight.dtype}). Convert hx: hx.to({weight.dtype})")


def _io_dtype(input: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype output and h_n come out in: the weights', or autocast's for float32 weights."""
    device_type = input.device.type
    if (weight.dtype == torch.float32 and device_type in ("cpu", "cuda")
            and torch.is_autocast_enabled(device_type)):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the kernels compute in for a module or autocast dtype."""
    if dtype in LOW_PRECISION:
        return torch.float32
    if dtype not in ops.COMPUTE_DTYPES:
        raise TypeError(f"fastrnn.torch.RNN computes in float32 or float64 (float16 and "
                        f"bfloat16 through float32), got {dtype}")
    return dtype


def _eager_fast_path_applies(input: Tensor, hx) -> bool:
    """Whether the forward may skip the dispatcher and autograd, as far as the input, hx and
    torch's global state tell: plain CPU tensors in eager mode that need no gradient
    (ops.dispatch_free). The weights are checked when ops.EagerForward takes them, and by
    _weights_need_grad."""
    if not (input.is_cpu and input.dtype in ops.COMPUTE_DTYPES and ops.dispatch_free(input, hx)):
        return False
    return not torch.is_grad_enabled() or not (
        input.requires_grad or (hx is not None and hx.requires_grad))


def _weights_need_grad(weights) -> bool:
    return torch.is_grad_enabled() and any(w.requires_grad for w in weights)


def _uses_expanded_weights(weights) -> bool:
    """Whether per-sample gradients are being taken through torch's ExpandedWeights."""
    return any(type(w).__name__ == "ExpandedWeight" for w in weights)


class RNN(nn.RNN):
    """Elman RNN with torch.nn.RNN's interface (it is a torch.nn.RNN), run by fastrnn's kernels.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None, *,
    backend='auto')``: torch.nn.RNN's arguments, checks and errors, plus ``backend``, the
    kernels to run: 'auto' ('cuda' for CUDA tensors, 'cpu' otherwise), 'cpu', 'numpy' (the
    reference, slow) or 'cuda'.

    ``output, h_n = rnn(input, hx=None)``: input [T, B, I] ([B, T, I] with batch_first, [T, I]
    unbatched) or a PackedSequence (then output is one too); hx and h_n [L*D, B, H] ([L*D, H]
    unbatched). float32 and float64 compute as they are; float16/bfloat16 modules and
    torch.autocast compute in float32 inside and return the low dtype. Parameters, state_dict,
    gradients (any order: double backward, torch.func) and errors are torch.nn.RNN's.
    """

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)      # torch's checks; proj_size= raises its ValueError
        if backend != "auto":
            load_backend(backend)          # unknown or unavailable: an error now, not later
        self.backend = backend

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.backend == "auto" else f"{s}, backend={self.backend!r}"

    def _config(self) -> ops.Config:
        return ops.Config(self.mode, self.num_layers, self.bidirectional, self.bias, self.backend)

    def forward(self, input: Union[Tensor, PackedSequence], hx: Optional[Tensor] = None
                ) -> tuple[Union[Tensor, PackedSequence], Tensor]:
        """``(output, h_n)`` as torch.nn.RNN.forward: input [T, B, I] ([B, T, I] with
        batch_first, [T, I] unbatched) or a PackedSequence; hx [L*D, B, H] ([L*D, H]
        unbatched) in the caller's batch order, or None for zeros."""
        _check_is_tensor(input)
        self._update_flat_weights()
        orig_input = input
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = (sorted_indices.shape[0] if sorted_indices is not None
                              else int(batch_sizes[0]))
            is_batched, batch_dim = True, 0
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D "
                                 "tensor instead")
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError("For unbatched 2-D input, hx should also be 2-D but "
                                           f"got {hx.dim()}-D tensor")
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError("For batched 3-D input, hx should also be 3-D but got "
                                   f"{hx.dim()}-D tensor")
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is not None:                   # None: zeros, made only where they are needed
            hx = self.permute_hidden(hx, sorted_indices)
        self._check_forward_args(input, hx, batch_sizes, max_batch_size)
        if self.batch_first and batch_sizes is None:
            input = input.transpose(0, 1)
        output, hidden = self._run(input, batch_sizes, hx, max_batch_size)
        if self.batch_first and batch_sizes is None:
            output = output.transpose(0, 1)
        if isinstance(orig_input, PackedSequence):
            output_packed = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return output_packed, self.permute_hidden(hidden, unsorted_indices)
        if not is_batched:
            output = output.squeeze(batch_dim)
            hidden = hidden.squeeze(1)
        return output, self.permute_hidden(hidden, unsorted_indices)

    def _check_forward_args(self, input: Tensor, hx, batch_sizes, max_batch_size) -> None:
        """torch.nn.RNN's checks (its own code, messages and order), then the devices and the
        sequence length, which torch checks in its ATen kernels. hx None stands for zeros."""
        self.check_input(input, batch_sizes)
        weight = self._flat_weights[0]
        if hx is not None:
            self.check_hidden_size(hx, self._states_shape(max_batch_size))
            _check_hx_dtype(hx, weight)
        _check_devices(input, input if hx is None else hx, weight, self.backend)
        if batch_sizes is None and input.size(1 if self.batch_first else 0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    def _dropout_masks(self, input: Tensor, dtype: torch.dtype):
        """[L-1, *input.shape[:-1], D*H] inverted-dropout multipliers for the outputs of layers
        0..L-2, drawn with torch's generator; None when nothing is dropped."""
        if not (self.training and self.dropout > 0 and self.num_layers > 1):
            return None
        features = (2 if self.bidirectional else 1) * self.hidden_size
        shape = (self.num_layers - 1, *input.shape[:-1], features)
        keep = 1.0 - self.dropout
        if keep == 0:
            return torch.zeros(shape, dtype=dtype, device=input.device)
        return torch.empty(shape, dtype=dtype, device=input.device).bernoulli_(keep).div_(keep)

    def _states_shape(self, batch: int) -> tuple:
        return (self.num_layers * (2 if self.bidirectional else 1), batch, self.hidden_size)

    def _run(self, input: Tensor, batch_sizes, hx, batch: int):
        """(output, h_n) of the stack on time-major or packed ``input`` and sorted ``hx`` (None:
        zeros) of ``batch`` sequences."""
        weights = self._flat_weights
        if _eager_fast_path_applies(input, hx):
            eager = self._eager_forward(weights)      # None unless plain CPU weights
            if eager is not None and not _weights_need_grad(weights):
                return eager(input, batch_sizes, hx, self._dropout_masks(input, input.dtype))
        if hx is None:
            hx = torch.zeros(self._states_shape(batch), dtype=input.dtype, device=input.device)
        if _uses_expanded_weights(weights):
            return self._run_torch_decomposition(input, batch_sizes, hx, weights)
        io_dtype = _io_dtype(input, weights[0])
        dtype = _compute_dtype(io_dtype)
        masks = self._dropout_masks(input, dtype)
        cast = [t.to(dtype) for t in (input, hx, *weights)]
        output, h_n = autograd.rnn(cast[0], batch_sizes, cast[1], cast[2:], masks, self._config())
        return output.to(io_dtype), h_n.to(io_dtype)

    def _eager_forward(self, weights):
        """The prepared fast path for these weights (kept while they stay the same), or None
        when they cannot be used in place."""
        settings = (self.mode, self.num_layers, self.bidirectional, self.bias, self.backend)
        eager = self.__dict__.get("_eager")        # a tuple equals the Config it would make
        if eager is None or not eager.matches(settings, weights):
            eager = ops.EagerForward(self._config(), weights, self.hidden_size) \
                if ops.EagerForward.possible(weights) else None
            self.__dict__["_eager"] = eager
        return eager

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_eager", None)    # don't keep the old weights alive after a move
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_eager", None)            # views of this process's memory
        return state

    def _weights_have_changed(self) -> bool:
        """torch's check (a weight replaced since _flat_weights was built: functional_call,
        assignment), with one dict lookup per weight instead of two attribute lookups: it runs
        on every call. Weights that are not plain registered parameters (parametrizations,
        whose every access may compute, e.g. spectral_norm's power iteration) get torch's own
        check, so they are accessed exactly as often as torch.nn.RNN accesses them."""
        parameters = self._parameters
        for ref, name in zip(self._flat_weight_refs, self._flat_weights_names):
            weight = parameters.get(name)
            if weight is None:
                return super()._weights_have_changed()
            if ref is not None and ref() is not weight:
                return True
        return False

    def _run_torch_decomposition(self, input, batch_sizes, hx, weights):
        """Per-sample gradients (torch.nn.utils._per_sample_grad): torch's ExpandedWeights
        computes them through its decomposition of torch.rnn_tanh/rnn_relu into per-step
        linear layers, so that is what runs here, exactly as for torch.nn.RNN."""
        function = torch.rnn_tanh if self.mode == "RNN_TANH" else torch.rnn_relu
        dropout = self.dropout if self.training else 0.0
        if batch_sizes is None:
            result = function(input, hx, weights, self.bias, self.num_layers, dropout,
                              self.training, self.bidirectional, False)
        else:
            result = function(input, batch_sizes, hx, weights, self.bias, self.num_layers,
                              dropout, self.training, self.bidirectional)
        return result[0], result[1]
