"""``fastrnn.torch.RNN``, ``LSTM`` and ``GRU``: torch.nn.RNN / LSTM / GRU whose forward and
backward run fastrnn's kernels.

Why subclasses of torch's modules: everything that is not the computation stays torch's own
code, so it behaves as torch's does because it IS torch's: the constructor and its errors
(``proj_size=`` included: the LSTM's projection, refused by RNN and GRU), parameters (names,
order, initialisation, ``_flat_weights``, ``all_weights``), ``flatten_parameters``,
``_apply`` and device moves, parametrizations (weight_norm, spectral_norm), state_dict,
pickling, ``extra_repr``, and ``isinstance(m, torch.nn.LSTM)``. ``forward`` follows torch's
forward step by step (the same checks and messages, PackedSequence, unbatched input,
``batch_first``, LSTM's (h, c) pair) and replaces its one call to the ATen RNN by fastrnn's
operator (ops.py, differentiated by autograd.py). The three cells share all of it through one
mixin, ``_FastrnnRecurrent``; each class adds only torch's messages that differ and its doc.
The price of being an nn.RNNBase: torch.compile's dynamo refuses to trace any torch.nn.RNN,
LSTM or GRU instance unless ``torch._dynamo.config.allow_rnn = True``; fastrnn does not change
another library's settings, so a user who compiles sets it (then fullgraph=True works).

Precision: the kernels compute in float32 or float64. float16/bfloat16 modules, and float32
modules under ``torch.autocast``, compute in float32 from inputs, states and weights cast up,
and return output and the final states in the low dtype (what torch's modules return there);
gradients reach the parameters in their own dtype. Dropout masks are drawn with torch's
generator (``torch.manual_seed`` reproduces them; they are not the masks torch would draw).

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
from torch.nn.modules.rnn import _apply_permutation
from torch.nn.utils.rnn import PackedSequence

from ..backends import load_backend
from . import autograd, ops

__all__ = ["RNN", "LSTM", "GRU"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_is_tensor(input, name: str) -> None:
    """A clear error for anything but a tensor or PackedSequence (NumPy arrays especially);
    ``name`` is the module's class name."""
    if isinstance(input, (Tensor, PackedSequence)):
        return
    if isinstance(input, np.ndarray):
        raise TypeError(f"fastrnn.torch.{name} expects a torch.Tensor (or a PackedSequence), "
                        f"got a numpy.ndarray of {input.dtype}: convert it with "
                        f"torch.from_numpy(x) (no copy), or use fastrnn.{name}, the NumPy "
                        "layer, for NumPy arrays")
    raise TypeError(f"fastrnn.torch.{name} expects a torch.Tensor (or a PackedSequence), got "
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
        raise RuntimeError(f"fastrnn.torch's modules run on CPU and CUDA tensors (meta tensors "
                           f"for shapes), got tensors on {input.device}")
    if backend in ("numpy", "cpu") and input.device.type == "cuda":
        raise ValueError(f"backend {backend!r} cannot run on a tensor on {input.device}; "
                         "use backend='auto'")


def _check_state_dtype(state: Tensor, weight: Tensor, what: str) -> None:
    """``what``: 'hx', or 'cx' for LSTM's cell state."""
    if state.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
        raise ValueError(f"RNN {what} dtype ({state.dtype}) does not match weight dtype "
                         f"({weight.dtype}). Convert {what}: {what}.to({weight.dtype})")


def _io_dtype(input: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype output and h_n come out in: the weights', or autocast's for float32 weights."""
    device_type = input.device.type
    if (weight.dtype == torch.float32 and device_type in ("cpu", "cuda")
            and torch.is_autocast_enabled(device_type)):
        return torch.get_autocast_dtype(device_type)
    return weight.dtype


def _compute_dtype(dtype: torch.dtype, name: str) -> torch.dtype:
    """What the kernels compute in for a module or autocast dtype (``name``: the class)."""
    if dtype in LOW_PRECISION:
        return torch.float32
    if dtype not in ops.COMPUTE_DTYPES:
        raise TypeError(f"fastrnn.torch.{name} computes in float32 or float64 (float16 and "
                        f"bfloat16 through float32), got {dtype}")
    return dtype


def _eager_fast_path_applies(input: Tensor, states: Optional[tuple]) -> bool:
    """Whether the forward may skip the dispatcher and autograd, as far as the input, the
    initial states (a tuple, or None) and torch's global state tell: plain CPU tensors in
    eager mode that need no gradient (ops.dispatch_free). The weights are checked when
    ops.EagerForward takes them, and by _weights_need_grad."""
    states = () if states is None else states
    if not (input.is_cpu and input.dtype in ops.COMPUTE_DTYPES
            and ops.dispatch_free(input, *states)):
        return False
    return not torch.is_grad_enabled() or not (
        input.requires_grad or any(state.requires_grad for state in states))


def _weights_need_grad(weights) -> bool:
    return torch.is_grad_enabled() and any(w.requires_grad for w in weights)


def _uses_expanded_weights(weights) -> bool:
    """Whether per-sample gradients are being taken through torch's ExpandedWeights."""
    return any(type(w).__name__ == "ExpandedWeight" for w in weights)


_TORCH_FUNCTIONS = {"RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu, "LSTM": torch.lstm,
                    "GRU": torch.gru}


class _FastrnnRecurrent:
    """What fastrnn.torch.RNN, LSTM and GRU share, mixed in before torch's class: ``backend``,
    forward (torch's steps, the operator in place of ATen's RNN), the eager fast path, dropout,
    precision, and the bookkeeping around them. Inside, the state is a tuple: (h,) or LSTM's
    (h, c); ``forward`` takes and returns it in torch's form."""

    _PAIRED = False              # whether the state is the pair (h, c): the LSTM
    # torch's wording where the classes differ (the LSTM's state pair; torch.nn.RNN's "tensor")
    _INPUT_DIM_MESSAGE = "{name}: Expected input to be 2D or 3D, got {dim}D instead"
    _STATE_SIZE_MESSAGES = ("Expected hidden size {}, got {}",)

    def __init__(self, *args, backend: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)      # torch's checks and errors
        if backend != "auto":
            load_backend(backend)          # unknown or unavailable: an error now, not later
        self.backend = backend

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.backend == "auto" else f"{s}, backend={self.backend!r}"

    def _config(self) -> ops.Config:
        return ops.Config(self.mode, self.num_layers, self.bidirectional, self.bias, self.backend)

    def forward(self, input: Union[Tensor, PackedSequence], hx=None):
        """``(output, h_n)`` as torch's forward (``(output, (h_n, c_n))`` for the LSTM): input
        [T, B, I] ([B, T, I] with batch_first, [T, I] unbatched) or a PackedSequence; hx
        [L*D, B, H] (the LSTM's pair ([L*D, B, P], [L*D, B, H])) without the batch axis when
        unbatched, in the caller's batch order, or None for zeros."""
        name = type(self).__name__
        _check_is_tensor(input, name)
        self._update_flat_weights()
        orig_input = input
        states = None if hx is None else ((hx[0], hx[1]) if self._PAIRED else (hx,))
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = (sorted_indices.shape[0] if sorted_indices is not None
                              else int(batch_sizes[0]))
            is_batched, batch_dim = True, 0
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(self._INPUT_DIM_MESSAGE.format(name=name, dim=input.dim()))
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            if states is not None:
                self._check_state_dims(states, input.dim())
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                states = None if states is None else tuple(s.unsqueeze(1) for s in states)
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if states is not None and sorted_indices is not None:    # None: zeros where needed
            states = _permute(states, sorted_indices)
        self._check_forward_args(input, states, batch_sizes, max_batch_size)
        if self.batch_first and batch_sizes is None:
            input = input.transpose(0, 1)
        output, finals = self._run(input, batch_sizes, states, max_batch_size)
        if self.batch_first and batch_sizes is None:
            output = output.transpose(0, 1)
        if isinstance(orig_input, PackedSequence):
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        elif not is_batched:
            output = output.squeeze(batch_dim)
            finals = tuple(f.squeeze(1) for f in finals)
        if unsorted_indices is not None:
            finals = _permute(finals, unsorted_indices)
        return output, (finals if self._PAIRED else finals[0])

    def _check_state_dims(self, states: tuple, expected: int) -> None:
        """torch's error for states whose number of dimensions does not suit the input's."""
        for state in states:                  # a loop: this runs on every call
            if state.dim() != expected:
                break
        else:
            return
        dims = [state.dim() for state in states]
        kind = "unbatched 2-D" if expected == 2 else "batched 3-D"
        if self._PAIRED:
            raise RuntimeError(f"For {kind} input, hx and cx should also be {expected}-D but "
                               f"got ({dims[0]}-D, {dims[1]}-D) tensors")
        raise RuntimeError(f"For {kind} input, hx should also be {expected}-D but got "
                           f"{dims[0]}-D tensor")

    def _check_forward_args(self, input: Tensor, states, batch_sizes, max_batch_size) -> None:
        """torch's checks (its own code, messages and order), then the devices and the
        sequence length, which torch checks in its ATen kernels. states None stands for
        zeros."""
        self.check_input(input, batch_sizes)
        weight = self._flat_weights[0]
        if states is None:
            _check_devices(input, input, weight, self.backend)
        else:
            shapes = self._states_shapes(max_batch_size)
            for state, shape, message, what in zip(states, shapes, self._STATE_SIZE_MESSAGES,
                                                   ("hx", "cx")):
                self.check_hidden_size(state, shape, message)
                _check_state_dtype(state, weight, what)
            for state in states:
                _check_devices(input, state, weight, self.backend)
        if batch_sizes is None and input.size(1 if self.batch_first else 0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    def _dropout_masks(self, input: Tensor, dtype: torch.dtype):
        """[L-1, *input.shape[:-1], D*P] inverted-dropout multipliers for the outputs of layers
        0..L-2, drawn with torch's generator; None when nothing is dropped."""
        if not (self.training and self.dropout > 0 and self.num_layers > 1):
            return None
        features = (2 if self.bidirectional else 1) * (self.proj_size or self.hidden_size)
        shape = (self.num_layers - 1, *input.shape[:-1], features)
        keep = 1.0 - self.dropout
        if keep == 0:
            return torch.zeros(shape, dtype=dtype, device=input.device)
        return torch.empty(shape, dtype=dtype, device=input.device).bernoulli_(keep).div_(keep)

    def _states_shapes(self, batch: int) -> tuple:
        """The shape of each state: (h,), or the LSTM's (h, c) with h proj_size wide."""
        lead = (self.num_layers * (2 if self.bidirectional else 1), batch)
        if self._PAIRED:
            return (*lead, self.proj_size or self.hidden_size), (*lead, self.hidden_size)
        return ((*lead, self.hidden_size),)

    def _run(self, input: Tensor, batch_sizes, states, batch: int):
        """(output, final states) of the stack on time-major or packed ``input`` and sorted
        initial ``states`` (a tuple; None: zeros) of ``batch`` sequences."""
        weights = self._flat_weights
        if _eager_fast_path_applies(input, states):
            eager = self._eager_forward(weights)      # None unless plain CPU weights
            if eager is not None and not _weights_need_grad(weights):
                return eager(input, batch_sizes, states, self._dropout_masks(input, input.dtype))
        if states is None:
            states = tuple(torch.zeros(shape, dtype=input.dtype, device=input.device)
                           for shape in self._states_shapes(batch))
        if _uses_expanded_weights(weights):
            return self._run_torch_decomposition(input, batch_sizes, states, weights)
        io_dtype = _io_dtype(input, weights[0])
        dtype = _compute_dtype(io_dtype, type(self).__name__)
        masks = self._dropout_masks(input, dtype)
        hx = states[0].to(dtype)
        cx = states[1].to(dtype) if self._PAIRED else ops.no_cell_state(hx)
        output, h_n, c_n = autograd.rnn(input.to(dtype), batch_sizes, hx, cx,
                                        [w.to(dtype) for w in weights], masks, self._config())
        finals = (h_n, c_n) if self._PAIRED else (h_n,)
        return output.to(io_dtype), tuple(f.to(io_dtype) for f in finals)

    def _eager_forward(self, weights):
        """The prepared fast path for these weights (kept while they stay the same), or None
        when they cannot be used in place."""
        settings = (self.mode, self.num_layers, self.bidirectional, self.bias, self.backend)
        eager = self.__dict__.get("_eager")        # a tuple equals the Config it would make
        if eager is None or not eager.matches(settings, weights):
            eager = ops.EagerForward(self._config(), weights, self.hidden_size, self.proj_size) \
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
        check, so they are accessed exactly as often as torch's modules access them."""
        parameters = self._parameters
        for ref, name in zip(self._flat_weight_refs, self._flat_weights_names):
            weight = parameters.get(name)
            if weight is None:
                return super()._weights_have_changed()
            if ref is not None and ref() is not weight:
                return True
        return False

    def _run_torch_decomposition(self, input, batch_sizes, states, weights):
        """Per-sample gradients (torch.nn.utils._per_sample_grad): torch's ExpandedWeights
        computes them through its decomposition of torch.rnn_tanh/rnn_relu/lstm/gru into
        per-step linear layers, so that is what runs here, exactly as for torch's modules."""
        function = _TORCH_FUNCTIONS[self.mode]
        hx = states if self._PAIRED else states[0]
        dropout = self.dropout if self.training else 0.0
        if batch_sizes is None:
            result = function(input, hx, weights, self.bias, self.num_layers, dropout,
                              self.training, self.bidirectional, False)
        else:
            result = function(input, batch_sizes, hx, weights, self.bias, self.num_layers,
                              dropout, self.training, self.bidirectional)
        return result[0], tuple(result[1:])


def _permute(states: tuple, permutation: Tensor) -> tuple:
    """Each state with its batch axis permuted (torch's permute_hidden)."""
    return tuple(_apply_permutation(state, permutation) for state in states)


_BACKEND_DOC = """``backend``, the kernels to run: 'auto' ('cuda' for CUDA tensors, 'cpu'
    otherwise), 'cpu', 'numpy' (the reference, slow) or 'cuda'."""


class RNN(_FastrnnRecurrent, nn.RNN):
    """Elman RNN with torch.nn.RNN's interface (it is a torch.nn.RNN), run by fastrnn's kernels.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None, *,
    backend='auto')``: torch.nn.RNN's arguments, checks and errors, plus BACKEND

    ``output, h_n = rnn(input, hx=None)``: input [T, B, I] ([B, T, I] with batch_first, [T, I]
    unbatched) or a PackedSequence (then output is one too); hx and h_n [L*D, B, H] ([L*D, H]
    unbatched). float32 and float64 compute as they are; float16/bfloat16 modules and
    torch.autocast compute in float32 inside and return the low dtype. Parameters, state_dict,
    gradients (any order: double backward, torch.func) and errors are torch.nn.RNN's.
    """
    _INPUT_DIM_MESSAGE = "{name}: Expected input to be 2D or 3D, got {dim}D tensor instead"


class LSTM(_FastrnnRecurrent, nn.LSTM):
    """LSTM with torch.nn.LSTM's interface (it is a torch.nn.LSTM), run by fastrnn's kernels.

    ``LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, proj_size=0, device=None, dtype=None, *, backend='auto')``:
    torch.nn.LSTM's arguments, checks and errors, plus BACKEND

    ``output, (h_n, c_n) = lstm(input, (h_0, c_0)=None)``: input [T, B, I] ([B, T, I] with
    batch_first, [T, I] unbatched) or a PackedSequence (then output is one too); h [L*D, B, P]
    (P = proj_size or hidden_size), c [L*D, B, H] (no batch axis unbatched); output [..., D*P].
    torch's gate order (i, f, g, o) and projection h = W_hr (o * tanh(c)). float32 and float64
    compute as they are; float16/bfloat16 modules and torch.autocast compute in float32 inside
    and return the low dtype. Parameters, state_dict, gradients (any order: double backward,
    torch.func) and errors are torch.nn.LSTM's.
    """
    _PAIRED = True
    _STATE_SIZE_MESSAGES = ("Expected hidden[0] size {}, got {}",
                            "Expected hidden[1] size {}, got {}")


class GRU(_FastrnnRecurrent, nn.GRU):
    """GRU with torch.nn.GRU's interface (it is a torch.nn.GRU), run by fastrnn's kernels.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None, *, backend='auto')``: torch.nn.GRU's
    arguments, checks and errors, plus BACKEND

    ``output, h_n = gru(input, hx=None)``: input [T, B, I] ([B, T, I] with batch_first, [T, I]
    unbatched) or a PackedSequence (then output is one too); hx and h_n [L*D, B, H] ([L*D, H]
    unbatched). torch's gates r, z, n with n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
    float32 and float64 compute as they are; float16/bfloat16 modules and torch.autocast
    compute in float32 inside and return the low dtype. Parameters, state_dict, gradients
    (any order: double backward, torch.func) and errors are torch.nn.GRU's.
    """


for _class in (RNN, LSTM, GRU):
    _class.__doc__ = _class.__doc__.replace("BACKEND", _BACKEND_DOC)
