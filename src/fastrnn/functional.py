"""The RNN on plain arrays: stacks layer-direction kernels into a full multi-layer RNN.

Why here: everything a backend should not have to know lives in this one place. Two levels:

- ``forward_packed`` / ``backward_packed``: the stack over PACKED sequences (the layout of
  backends/__init__.py, a sorted batch): the layer loop, the two directions writing the two
  halves of one [N, 2H] buffer (no concatenation), dropout masks (given by the caller) between
  layers, ``h_0``/``h_n`` bookkeeping. fastrnn.torch calls this level directly. Both check
  every array they are given (shape, dtype, byte order, contiguity, writeability) before any
  kernel runs, unless the caller says it already did (``validate=False``).
- ``rnn_forward`` / ``rnn_backward``: the user's arrays: checks in torch's words,
  ``batch_first`` and unbatched input, ``lengths`` (sorting and packing, the caller's order
  restored), drawing the dropout masks, picking the backend.

Parameters are passed as a mapping with torch's names (``weight_ih_l0``, ...,
``bias_hh_l1_reverse``); the number of layers, the directions and the presence of biases are
read off the names, so a torch state_dict works as it is. Below that, weights travel as a list
in torch's flat order (``parameter_names``), as torch's own RNN ops take them.
``prepare_weights`` does the reading and checking once; a caller that keeps its weights
(fastrnn.RNN) keeps the ``Prepared`` result and pays for it only when the weights change.

What a backward needs is OWNED by its ``Context``: an input, ``hx`` or output that would alias
the caller's memory is copied (once per call, only when backward is wanted), so the caller may
change the arrays it passed or got back without changing any gradient. Parameters are not
copied (that would cost a full weight copy per call): they must not change between a forward
and its backward; fastrnn.RNN checks that for its own (see rnn.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike

from . import _checks
from .backends import HostArrays, is_cuda_array, load_backend
from .packing import equal_batch_sizes, plan_packing

MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}


def parameter_names(num_layers: int, bidirectional: bool, bias: bool) -> list[str]:
    """torch.nn.RNN's parameter names, in its order."""
    names = []
    for layer in range(num_layers):
        for suffix in ("", "_reverse")[: 2 if bidirectional else 1]:
            kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
            names += [f"{kind}_l{layer}{suffix}" for kind in kinds]
    return names


def parameter_shapes(input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
                     bias: bool) -> dict[str, tuple[int, ...]]:
    """{name: shape} for every parameter, as torch.nn.RNN lays them out."""
    directions = 2 if bidirectional else 1
    shapes = {}
    for name in parameter_names(num_layers, bidirectional, bias):
        kind, layer = name.split("_l")[0], int(name.split("_l")[1].split("_")[0])
        layer_input = input_size if layer == 0 else hidden_size * directions
        shapes[name] = {"weight_ih": (hidden_size, layer_input),
                        "weight_hh": (hidden_size, hidden_size)}.get(kind, (hidden_size,))
    return shapes


@dataclass(frozen=True)
class Structure:
    """The shape of a stacked RNN: what its parameters say, plus the cell's mode."""
    mode: str                    # "RNN_TANH" or "RNN_RELU" (torch's names)
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    bias: bool
    dtype: str

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def num_states(self) -> int:
        return self.num_layers * self.directions

    @property
    def relu(self) -> bool:
        return self.mode == "RNN_RELU"

    def names(self) -> list[str]:
        return parameter_names(self.num_layers, self.bidirectional, self.bias)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return parameter_shapes(self.input_size, self.hidden_size, self.num_layers,
                                self.bidirectional, self.bias)

    def layer_weights(self, weights, layer, direction):
        """(w_ih, w_hh, b_ih, b_hh) of one layer-direction from the flat list; None biases
        without bias. The same positions index a list of their gradients."""
        per_state = 4 if self.bias else 2
        start = (layer * self.directions + direction) * per_state
        found = tuple(weights[start:start + per_state])
        return found if self.bias else found + (None, None)


def _named_shape(weights, name, what):
    """The shape of ``weights[name]``, which must be a 2-D array."""
    shape = tuple(np.shape(weights[name]))
    if len(shape) != 2:
        raise _checks.ShapeError(f"Expected parameter {name!r} to be 2-D {what}, got shape {shape}")
    return shape


def read_structure(weights: Mapping, nonlinearity: str = "tanh") -> Structure:
    """The Structure a parameter mapping describes; a clear error naming the offending
    parameter (and the shape it should have) when it is inconsistent."""
    _checks.check_nonlinearity(nonlinearity)
    if not isinstance(weights, Mapping):
        raise TypeError("weights must be a mapping from torch.nn.RNN's parameter names "
                        f"('weight_ih_l0', ...) to arrays, got {type(weights).__name__}")
    if "weight_ih_l0" not in weights or "weight_hh_l0" not in weights:
        raise ValueError("weights must contain at least 'weight_ih_l0' and 'weight_hh_l0' "
                         f"(torch.nn.RNN's names), got {sorted(map(str, weights))}")
    hidden_size, input_size = _named_shape(weights, "weight_ih_l0", "[hidden_size, input_size]")
    num_layers = 0
    while f"weight_ih_l{num_layers}" in weights:
        num_layers += 1
    found = getattr(weights["weight_ih_l0"], "dtype", None)
    try:
        dtype = _checks.check_dtype_name(found)
    except ValueError:
        raise TypeError(f"Expected parameter 'weight_ih_l0' of dtype float32 or float64, got "
                        f"{found}") from None
    structure = Structure(MODES[nonlinearity], input_size, hidden_size, num_layers,
                          bidirectional="weight_ih_l0_reverse" in weights,
                          bias="bias_ih_l0" in weights, dtype=dtype)
    check_parameters(weights, structure)
    return structure


def check_parameters(weights: Mapping, structure: Structure) -> None:
    """Names, shapes and dtype of every parameter, against what ``structure`` needs; the
    message names each offending parameter and the shape it should have."""
    expected = structure.shapes()
    missing = [f"{n} {list(shape)}" for n, shape in expected.items() if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    if missing or unexpected:
        raise ValueError(f"Parameter names do not describe one RNN ({structure.num_layers} "
                         f"layer(s), bidirectional={structure.bidirectional}, "
                         f"bias={structure.bias}): missing {missing}, unexpected {unexpected}")
    for name, shape in expected.items():
        value = weights[name]
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError(f"Expected parameter {name!r} to be an array of shape {shape}, got "
                            f"{type(value).__name__}")
        _checks.check_same_shape(f"parameter {name!r}", value, shape)
        _checks.check_array_dtype(f"parameter {name!r}", value, structure.dtype)


def resolve_backend_name(backend: str, x: Any) -> str:
    """'auto' means 'cuda' for a device array (see is_cuda_array), 'cpu' otherwise."""
    if backend == "auto":
        return "cuda" if is_cuda_array(x) else "cpu"
    return backend


class Prepared:
    """Parameters checked once and laid out for one backend: what every call needs from them.

    ``weights`` are in torch's flat order, C-contiguous, aligned, native byte order, on the
    backend's device; they are the caller's own arrays whenever those already qualify (so a
    later in-place update of a parameter is seen), copies otherwise. ``layers`` holds each
    layer's kernel arguments ready to pass (see _layer_arguments), so that a call does no
    bookkeeping of its own. Pickles by its three defining fields."""
    __slots__ = ("structure", "backend_name", "weights", "backend", "layers", "native", "on_host",
                 "input_size", "hidden_size", "num_states", "width", "relu", "stacked")

    def __init__(self, structure: Structure, backend_name: str, weights: tuple):
        self.structure, self.backend_name, self.weights = structure, backend_name, tuple(weights)
        self.backend = load_backend(backend_name)
        self.layers = _layer_arguments(structure, self.weights)
        # what every call reads, as plain attributes (a call's checks are a few comparisons)
        self.native = _checks.NATIVE_DTYPES[structure.dtype]
        self.on_host = self.backend.ARRAYS is HostArrays
        self.input_size, self.hidden_size = structure.input_size, structure.hidden_size
        self.num_states, self.relu = structure.num_states, structure.relu
        self.width, self.stacked = structure.directions * structure.hidden_size, structure.num_layers > 1

    def __reduce__(self):
        return Prepared, (self.structure, self.backend_name, self.weights)


def _layer_arguments(structure, weights):
    """For each layer, for each direction: (state index, w_ih, w_hh, b_ih, b_hh, reverse,
    columns of the layer's [N, D*H] output it writes, or None for all of them)."""
    D, H = structure.directions, structure.hidden_size
    return tuple(
        tuple((layer * D + direction,) + structure.layer_weights(weights, layer, direction)
              + (bool(direction), None if D == 1 else slice(direction * H, (direction + 1) * H))
              for direction in range(D))
        for layer in range(structure.num_layers))


def prepare_weights(weights: Mapping, nonlinearity: str = "tanh",
                    backend: str = "cpu") -> Prepared:
    """Read and check a parameter mapping once (see read_structure) for ``backend`` (a name,
    not 'auto')."""
    structure = read_structure(weights, nonlinearity)
    arrays = load_backend(backend).ARRAYS
    flat = tuple(_device_array(arrays, f"parameter {name!r}", weights[name], structure.dtype,
                               contiguous=True) for name in structure.names())
    return Prepared(structure, backend, flat)


def _device_array(arrays, what, a, dtype, contiguous=False):
    """``a`` as an array of the backend's device that its kernels can read (see
    _checks.host_array: byte order and alignment converted, other dtypes refused)."""
    if arrays is HostArrays:
        a = _checks.host_array(what, a, dtype)
    elif arrays.is_device_array(a):
        a = arrays.asarray(a)
        _checks.check_array_dtype(what, a, dtype)
    else:
        a = arrays.asarray(_checks.host_array(what, a, dtype))
    return arrays.contiguous(a) if contiguous else a


def dropout_masks(rng: np.random.Generator, shape: tuple, p: float, dtype: str) -> np.ndarray:
    """Inverted dropout: zero with probability p, scaled by 1/(1-p) elsewhere (torch's rule),
    so that the expected value of ``mask * y`` is ``y``."""
    if p >= 1:
        return np.zeros(shape, dtype=dtype)
    keep = rng.random(shape) >= p
    return (keep / (1 - p)).astype(dtype)


# ----------------------------------------------------------------------------- packed level
def _check_packed_array(arrays, what, a, shape, dtype, writeable=False):
    """Shape, dtype and (on the host) contiguity, alignment, byte order, writeability."""
    if arrays is HostArrays:
        _checks.check_buffer(what, a, shape, dtype, writeable)
    else:
        _checks.check_same_shape(what, a, shape)
        _checks.check_array_dtype(what, a, dtype)


def check_batch_sizes(batch_sizes: np.ndarray) -> tuple[int, int]:
    """(N, B) of a valid ``batch_sizes``: int64 host array [T], non-increasing, entries >= 1."""
    if type(batch_sizes) is not np.ndarray or batch_sizes.dtype != np.int64 or batch_sizes.ndim != 1:
        raise TypeError("batch_sizes must be a 1-D int64 NumPy array (torch's PackedSequence "
                        f"batch_sizes), got {type(batch_sizes).__name__} "
                        f"{getattr(batch_sizes, 'dtype', '')} {np.shape(batch_sizes)}")
    if len(batch_sizes) and (batch_sizes.min() < 1 or np.any(batch_sizes[1:] > batch_sizes[:-1])):
        raise ValueError("batch_sizes must be non-increasing with every entry >= 1 (the number "
                         f"of sequences longer than each step), got {batch_sizes.tolist()}")
    return int(batch_sizes.sum()), (int(batch_sizes[0]) if len(batch_sizes) else 0)


def _check_packed(arrays, structure, x, hx, weights, batch_sizes, masks):
    """What forward_packed and backward_packed both read; returns (N, B)."""
    if not isinstance(structure, Structure):
        raise TypeError(f"structure must be a fastrnn.functional.Structure, got "
                        f"{type(structure).__name__}")
    N, B = check_batch_sizes(batch_sizes)
    S, H, dtype = structure.num_states, structure.hidden_size, structure.dtype
    _check_packed_array(arrays, "x", x, (N, structure.input_size), dtype)
    if hx is not None:
        _check_packed_array(arrays, "hx", hx, (S, B, H), dtype)
    names, shapes = structure.names(), structure.shapes()
    if len(weights) != len(names):
        raise ValueError(f"Expected {len(names)} weights in the order {names}, got {len(weights)}")
    for name, weight in zip(names, weights):
        _check_packed_array(arrays, f"parameter {name!r}", weight, shapes[name], dtype)
    if masks is not None:
        _check_packed_array(arrays, "masks", masks,
                            (structure.num_layers - 1, N, structure.directions * H), dtype)
    return N, B


def forward_packed(backend, structure: Structure, x, hx, weights, batch_sizes: np.ndarray,
                   masks=None, need_saved: bool = True, *, output=None, h_n=None,
                   validate: bool = True):
    """The stacked RNN over packed sequences.

    x [N, I] C-contiguous; hx [L*D, B, H] C-contiguous in sorted order, or None (zeros);
    weights: the parameters in torch's flat order (``structure.names()``), C-contiguous;
    batch_sizes [T] int64 (see backends/__init__.py); masks [L-1, N, D*H] multipliers for the
    outputs of layers 0..L-2 (dropout, already scaled), or None. ``output`` [N, D*H] and
    ``h_n`` [L*D, B, H] (C-contiguous, writeable): buffers to write the results into instead
    of fresh ones. ``validate=False`` skips the checks of every argument (for callers that
    made these arrays themselves).
    Returns ``(output [N, D*H], h_n [L*D, B, H], saved)``; ``saved`` [L-1, N, D*H] holds the
    outputs of layers 0..L-2 before dropout (what backward_packed needs besides output), or
    None when ``need_saved`` is False or L == 1.
    """
    arrays, D, H, L = backend.ARRAYS, structure.directions, structure.hidden_size, structure.num_layers
    dtype = structure.dtype
    if validate:
        N, B = _check_packed(arrays, structure, x, hx, weights, batch_sizes, masks)
        for what, buffer, shape in (("output", output, (N, D * H)), ("h_n", h_n, (L * D, B, H))):
            if buffer is not None:
                _check_packed_array(arrays, what, buffer, shape, dtype, writeable=True)
    else:
        N, B = x.shape[0], (int(batch_sizes[0]) if len(batch_sizes) else 0)
    h0 = arrays.zeros((L * D, B, H), dtype) if hx is None else hx
    h_n = arrays.empty((L * D, B, H), dtype) if h_n is None else h_n
    output = arrays.empty((N, D * H), dtype) if output is None else output
    saved = arrays.empty((L - 1, N, D * H), dtype) if need_saved and L > 1 else None
    output = _stack_forward(backend, structure.relu, _layer_arguments(structure, weights), x, h0,
                            batch_sizes, masks, saved, output, h_n)
    return output, h_n, saved


def _stack_forward(backend, relu, layers, x, h0, batch_sizes, masks, saved, output, h_n):
    """forward_packed's layer loop over ready kernel arguments (see _layer_arguments): each
    layer writes ``saved[layer]`` (or a scratch buffer), the last one ``output``; returns
    ``output``. B == 0 runs no kernel."""
    arrays, last = backend.ARRAYS, len(layers) - 1
    run = h0.shape[1] > 0
    layer_input = x
    for layer, directions in enumerate(layers):
        if layer == last:
            layer_output = output
        else:
            layer_output = saved[layer] if saved is not None else arrays.empty(output.shape, output.dtype)
        for state, w_ih, w_hh, b_ih, b_hh, reverse, columns in directions:
            if run:
                backend.rnn_forward(layer_input, h0[state], w_ih, w_hh, b_ih, b_hh, batch_sizes,
                                    reverse, relu, layer_output if columns is None else layer_output[:, columns],
                                    h_n[state])
        layer_input = layer_output if masks is None or layer == last else arrays.multiply(layer_output, masks[layer])
    return output


def backward_packed(backend, structure: Structure, x, hx, weights, batch_sizes: np.ndarray,
                    output, saved, masks, grad_output, grad_h_n=None, grads=None, *,
                    validate: bool = True):
    """Backpropagation through time for one forward_packed call (same arguments, plus its
    ``output`` and ``saved``). grad_output [N, D*H]; grad_h_n [L*D, B, H] or None (zeros);
    ``grads``: arrays in the weights' order that parameter gradients are ADDED into (None:
    fresh zeros); they must be C-contiguous, writeable and of the weights' shapes and dtype.
    Returns ``(grad_x [N, I], grad_hx [L*D, B, H], grads)``."""
    arrays, D, H, L = backend.ARRAYS, structure.directions, structure.hidden_size, structure.num_layers
    dtype = structure.dtype
    if validate:
        _check_backward_packed(arrays, structure, x, hx, weights, batch_sizes, output, saved,
                               masks, grad_output, grad_h_n, grads)
    B = int(batch_sizes[0]) if len(batch_sizes) else 0
    h0 = arrays.zeros((L * D, B, H), dtype) if hx is None else hx
    grad_h_n = arrays.zeros((L * D, B, H), dtype) if grad_h_n is None else grad_h_n
    grads = [arrays.zeros(w.shape, dtype) for w in weights] if grads is None else grads
    grad_hx = arrays.zeros((L * D, B, H), dtype)
    grad_layer_output = grad_output
    for layer in reversed(range(L)):
        layer_output = output if layer == L - 1 else saved[layer]
        layer_input = x if layer == 0 else _dropped(arrays, saved[layer - 1], masks, layer - 1)
        grad_input = arrays.empty(layer_input.shape, dtype)
        for direction in range(D):
            state, halves = layer * D + direction, slice(direction * H, (direction + 1) * H)
            w_ih, w_hh, _, _ = structure.layer_weights(weights, layer, direction)
            g_w_ih, g_w_hh, g_b_ih, g_b_hh = structure.layer_weights(grads, layer, direction)
            if B > 0:
                backend.rnn_backward(layer_input, h0[state], w_ih, w_hh, batch_sizes,
                                     bool(direction), structure.relu, layer_output[:, halves],
                                     grad_layer_output[:, halves], grad_h_n[state], grad_input,
                                     direction > 0, grad_hx[state], g_w_ih, g_w_hh, g_b_ih, g_b_hh)
            elif direction == 0:
                grad_input = arrays.zeros(layer_input.shape, dtype)
        grad_layer_output = _dropped(arrays, grad_input, masks, layer - 1) if layer > 0 else grad_input
    return grad_layer_output, grad_hx, grads


def _check_backward_packed(arrays, structure, x, hx, weights, batch_sizes, output, saved, masks,
                           grad_output, grad_h_n, grads):
    N, B = _check_packed(arrays, structure, x, hx, weights, batch_sizes, masks)
    L, S, H, dtype = structure.num_layers, structure.num_states, structure.hidden_size, structure.dtype
    width = structure.directions * H
    _check_packed_array(arrays, "output", output, (N, width), dtype)
    _check_packed_array(arrays, "grad_output", grad_output, (N, width), dtype)
    if L > 1:
        if saved is None:
            raise ValueError("backward_packed needs the outputs of layers 0..L-2 (``saved``): "
                             "run forward_packed with need_saved=True")
        _check_packed_array(arrays, "saved", saved, (L - 1, N, width), dtype)
    if grad_h_n is not None:
        _check_packed_array(arrays, "grad_h_n", grad_h_n, (S, B, H), dtype)
    if grads is not None:
        names, shapes = structure.names(), structure.shapes()
        if len(grads) != len(names):
            raise ValueError(f"Expected {len(names)} gradient buffers in the order {names}, "
                             f"got {len(grads)}")
        for name, grad in zip(names, grads):
            _check_packed_array(arrays, f"gradient buffer {name!r}", grad, shapes[name], dtype,
                                writeable=True)


def _dropped(arrays, values, masks, index):
    """values times dropout mask ``index`` (the one between layers index and index+1)."""
    return values if masks is None else arrays.multiply(values, masks[index])


# ----------------------------------------------------------------------------- the caller's arrays
class Layout:
    """How the caller's arrays map to the packed ones, and back."""
    __slots__ = ("batch_first", "unbatched", "steps", "batch", "packing", "on_host")

    def __init__(self, batch_first, unbatched, steps, batch, packing, on_host):
        self.batch_first = batch_first
        self.unbatched = unbatched
        self.steps = steps               # T of the caller's (padded) input
        self.batch = batch
        self.packing = packing           # a packing.Packing, or None for equal lengths
        self.on_host = on_host           # results go back to host memory

    @property
    def plain(self):
        """Whether the caller's [T, B, F] array IS the packed one (time-major, equal lengths)."""
        return self.packing is None and not self.batch_first

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)


@dataclass
class Context:
    """Everything rnn_backward needs from one rnn_forward call; every array in it belongs to
    it (none is the caller's), and it pickles (the backend is kept by name)."""
    backend_name: str
    structure: Structure
    weights: tuple
    layout: Layout
    x: Any                       # [N, I] packed
    hx: Any                      # [L*D, B, H] sorted, or None
    batch_sizes: np.ndarray
    masks: Any
    saved: Any
    output: Any                  # [N, D*H] packed
    output_shape: tuple
    hx_shape: tuple

    @property
    def backend(self):
        return load_backend(self.backend_name)


def _to_time_major(arrays, a, layout):
    """[T, B, F] C-contiguous from the caller's layout ([T, F], [B, T, F] or [T, B, F])."""
    if layout.unbatched:
        a = arrays.contiguous(a)
        return a.reshape(a.shape[0], 1, a.shape[1])
    return arrays.swap_batch_time(a) if layout.batch_first else arrays.contiguous(a)


def _from_time_major(arrays, a, layout):
    """The inverse of _to_time_major."""
    if layout.unbatched:
        return a.reshape(a.shape[0], a.shape[2])
    return arrays.swap_batch_time(a) if layout.batch_first else a


def _pack(arrays, a, layout):
    """The caller's [T, B, F]-like array as packed rows [N, F]."""
    a = _to_time_major(arrays, a, layout)
    flat = a.reshape(layout.steps * layout.batch, a.shape[2])
    return flat if layout.packing is None else arrays.take_rows(flat, layout.packing.rows)


def _unpack(arrays, packed, layout):
    """Packed rows [N, F] as the caller's layout, zeros past each sequence's length."""
    shape = (layout.steps * layout.batch, packed.shape[1])
    flat = packed if layout.packing is None else arrays.put_rows(shape, layout.packing.rows, packed)
    return _from_time_major(arrays, flat.reshape(layout.steps, layout.batch, packed.shape[1]), layout)


def _reorder_states(arrays, states, order):
    """[S, B, H] with its batch axis permuted by ``order`` (None: unchanged)."""
    if order is None:
        return states
    S, B, H = states.shape
    by_batch = arrays.swap_batch_time(states).reshape(B, S * H)
    return arrays.swap_batch_time(arrays.take_rows(by_batch, order).reshape(B, S, H))


def _states_in(arrays, states, layout, shape):
    """The caller's hx-like array as a sorted, contiguous [L*D, B, H] array."""
    states = arrays.contiguous(states).reshape(shape)
    return _reorder_states(arrays, states, None if layout.packing is None else layout.packing.sorted_indices)


def _states_out(arrays, states, layout, shape):
    """A sorted [L*D, B, H] array in the caller's order and shape."""
    order = None if layout.packing is None else layout.packing.unsorted_indices
    return _reorder_states(arrays, states, order).reshape(shape)


def _layout_for(x, lengths, batch_first, on_host):
    unbatched = x.ndim == 2
    shape = x.shape
    steps = shape[1] if (not unbatched and batch_first) else shape[0]
    batch = 1 if unbatched else (shape[0] if batch_first else shape[1])
    packing = None
    if lengths is not None:
        packing = plan_packing(lengths, batch, steps)
        if batch and len(packing.batch_sizes) == steps and bool((packing.batch_sizes == batch).all()):
            packing = None       # every sequence runs all steps: the plain layout, no copies
    return Layout(batch_first and not unbatched, unbatched, steps, batch, packing, on_host)


def _owned(arrays, a, caller_array):
    """``a``, or a copy of it when it may share memory with the caller's array (which the
    caller may change between forward and backward). On a device, ``a`` is copied unless the
    caller's array was host memory (then ``a`` is already the upload, a copy)."""
    if arrays is HostArrays:
        shared = np.may_share_memory(a, caller_array)
    else:
        shared = arrays.is_device_array(caller_array)
    return _copy(arrays, a) if shared else a


def _copy(arrays, a):
    copy = arrays.empty(a.shape, a.dtype)
    arrays.copy_into(copy, a)
    return copy


def rnn_forward(x: ArrayLike, weights: Mapping, hx: Optional[ArrayLike] = None, *,
                lengths: Optional[ArrayLike] = None, nonlinearity: str = "tanh",
                batch_first: bool = False, dropout: float = 0.0, training: bool = False,
                rng: Optional[np.random.Generator] = None, backend: str = "auto",
                need_backward: bool = True, out: Optional[np.ndarray] = None
                ) -> tuple[Any, Any, Optional[Context]]:
    """Run a (stacked, optionally bidirectional) Elman RNN over ``x``.

    Parameters
    ----------
    x : array [T, B, I] ([B, T, I] with ``batch_first``, [T, I] unbatched), float32 or
        float64 (the weights' dtype; another byte order or a misaligned buffer is converted).
    weights : mapping from torch.nn.RNN's parameter names to arrays (a torch state_dict works);
        L (layers), D (2 if bidirectional) and bias are read off the names.
    hx : array [L*D, B, H] ([L*D, H] unbatched), or None for zeros.
    lengths : None, or one length per sequence (integers in 1..T, any order): step t then runs
        only the sequences longer than t, ``output`` is zero past each length and ``h_n``
        holds each sequence's state after its own last step.
    dropout, training, rng : dropout between layers (torch's rule), drawn from ``rng`` (a
        NumPy Generator) when ``training``.
    backend : 'auto' (cuda for device arrays, cpu otherwise), 'cpu', 'numpy' or 'cuda'.
    need_backward : keep what rnn_backward needs (the ``context``); False for inference.
    out : optional array of ``output``'s shape and dtype to write the output into (it is then
        the ``output`` returned).

    Returns ``(output, h_n, context)``: output [T, B, D*H] in x's layout, h_n like hx, context
    None unless ``need_backward``. Device arrays (``__cuda_array_interface__``) stay on the
    device; NumPy input gives NumPy output. The returned arrays are the caller's: changing
    them (or x, hx) does not change what rnn_backward computes.
    """
    _checks.check_nonlinearity(nonlinearity)
    _checks.check_dropout(dropout)
    prepared = prepare_weights(weights, nonlinearity, resolve_backend_name(backend, x))
    return forward_prepared(prepared, x, hx, lengths=lengths, batch_first=batch_first,
                            dropout=dropout, training=training, rng=rng,
                            need_backward=need_backward, out=out)


def forward_prepared(prepared: Prepared, x, hx=None, *, lengths=None, batch_first=False,
                     dropout=0.0, training=False, rng=None, need_backward=True, out=None):
    """rnn_forward with the parameters already read and checked by ``prepare_weights`` (what
    fastrnn.RNN calls: the per-call work is the input checks and the kernels)."""
    if lengths is None and out is None and not need_backward and not batch_first:
        result = _plain_inference(prepared, x, hx, training and dropout > 0)
        if result is not None:
            return result
    backend, structure = prepared.backend, prepared.structure
    arrays, dtype = backend.ARRAYS, structure.dtype
    on_host = not arrays.is_device_array(x)
    caller_x, caller_hx = x, hx
    x = _device_array(arrays, "input", x, dtype)
    if hx is not None:
        hx = _device_array(arrays, "hx", hx, dtype)
    _checks.check_input(x, hx, structure.input_size, structure.num_states,
                        structure.hidden_size, batch_first)
    layout = _layout_for(x, lengths, batch_first, on_host)
    S, B, H = structure.num_states, layout.batch, structure.hidden_size
    states_shape = (S, B, H)
    hx_shape = (S, H) if layout.unbatched else states_shape
    output_shape = tuple(x.shape[:-1]) + (structure.directions * H,)
    if out is not None:
        _check_out(arrays, out, output_shape, dtype)
    batch_sizes = (equal_batch_sizes(B, layout.steps) if layout.packing is None
                   else layout.packing.batch_sizes)
    x_packed = _pack(arrays, x, layout)
    hx_sorted = None if hx is None else _states_in(arrays, hx, layout, states_shape)
    masks = None
    if training and dropout > 0 and structure.num_layers > 1:
        rng = np.random.default_rng() if rng is None else rng
        mask_shape = (structure.num_layers - 1, x_packed.shape[0], structure.directions * H)
        masks = arrays.asarray(dropout_masks(rng, mask_shape, dropout, dtype))

    direct = out is not None and not need_backward and layout.plain and _is_kernel_buffer(arrays, out)
    packed_out = out.reshape(x_packed.shape[0], output_shape[-1]) if direct else None
    output, h_n, saved = forward_packed(backend, structure, x_packed, hx_sorted, prepared.weights,
                                        batch_sizes, masks, need_saved=need_backward,
                                        output=packed_out, validate=False)
    user_h_n = _states_out(arrays, h_n, layout, hx_shape)
    user_output = _unpack(arrays, output, layout)
    context = None
    if need_backward:
        if out is None and layout.plain and not (on_host and arrays is not HostArrays):
            user_output = _copy(arrays, user_output)   # the caller's; `output` is the context's
        context = Context(prepared.backend_name, structure, prepared.weights, layout,
                          _owned(arrays, x_packed, caller_x),
                          None if hx_sorted is None else _owned(arrays, hx_sorted, caller_hx),
                          batch_sizes, masks, saved, output, output_shape, hx_shape)
    if out is not None:
        if not direct:
            arrays.copy_into(out, user_output)
        user_output = out
    elif layout.on_host:
        user_output = arrays.to_host(user_output)
    if layout.on_host:
        user_h_n = arrays.to_host(user_h_n)
    return user_output, user_h_n, context


def _plain_inference(prepared, x, hx, dropping):
    """The common inference call, if it is one: host arrays the kernels take as they are
    (native dtype, aligned, C-contiguous), time-major, equal lengths, no dropout. Only the
    checks run before the kernels (the general path does the same plus every conversion and
    layout change); None when the call is not of this kind."""
    native = prepared.native
    if (type(x) is not np.ndarray or x.ndim != 3 or x.dtype != native or not prepared.on_host
            or (dropping and prepared.stacked)):
        return None
    flags = x.flags
    T, B, I = x.shape
    if not (flags.c_contiguous and flags.aligned) or I != prepared.input_size or T == 0:
        return None
    states_shape = (prepared.num_states, B, prepared.hidden_size)
    if hx is None:
        hx = np.zeros(states_shape, native)
    elif type(hx) is not np.ndarray or hx.dtype != native or hx.shape != states_shape:
        return None
    else:
        flags = hx.flags
        if not (flags.c_contiguous and flags.aligned):
            return None
    output = np.empty((T, B, prepared.width), native)
    h_n = np.empty(states_shape, native)
    _stack_forward(prepared.backend, prepared.relu, prepared.layers, x.reshape(T * B, I), hx,
                   equal_batch_sizes(B, T), None, None, output.reshape(T * B, prepared.width), h_n)
    return output, h_n, None


def _is_kernel_buffer(arrays, a):
    """Whether the kernels can write ``a`` in place (else results are copied into it)."""
    if arrays is not HostArrays:
        return arrays.is_device_array(a) and a.is_c_contiguous()
    return type(a) is np.ndarray and a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative


def _check_out(arrays, out, shape, dtype):
    """``out=``: the output's shape and dtype, writeable (any strides: it may be copied into)."""
    if arrays.is_device_array(out):
        _checks.check_same_shape("out", out, shape)
        _checks.check_array_dtype("out", out, dtype)
        return
    if type(out) is not np.ndarray:
        raise TypeError(f"Expected out to be a NumPy array of shape {shape} and dtype {dtype}, "
                        f"got {type(out).__name__}")
    _checks.check_same_shape("out", out, shape)
    _checks.check_array_dtype("out", out, dtype)
    if not out.flags.writeable:
        raise ValueError("out is read-only, but fastrnn writes the output into it")


def zero_grads(weights: Mapping, arrays=HostArrays) -> dict:
    """A gradient buffer for each parameter, on the parameters' device."""
    return {name: arrays.zeros(w.shape, w.dtype) for name, w in weights.items()}


def rnn_backward(context: Context, grad_output: ArrayLike, grad_h_n: Optional[ArrayLike] = None,
                 grads: Optional[dict] = None) -> tuple[Any, Any, dict]:
    """Backpropagation through time for the rnn_forward call that made ``context``.

    ``grad_output`` is dL/d output and ``grad_h_n`` dL/d h_n (None: zero), in the layouts
    rnn_forward returned them; gradients past a sequence's length are ignored. Parameter
    gradients are ADDED into ``grads`` (a dict keyed like the weights, of their shapes and
    dtype, C-contiguous and writeable, on the weights' device; None: fresh zeros).
    Returns ``(grad_input, grad_hx, grads)``, grad_input in the input's layout (zero past each
    length), grad_hx in hx's.
    """
    if not isinstance(context, Context):
        raise RuntimeError("rnn_backward needs the context of a forward run with need_backward=True"
                           + ("" if context is None else f", got {type(context).__name__}"))
    structure, backend, layout = context.structure, context.backend, context.layout
    arrays, dtype = backend.ARRAYS, structure.dtype
    names = structure.names()
    grad_output = _device_array(arrays, "grad_output", grad_output, dtype)
    _checks.check_same_shape("grad_output", grad_output, context.output_shape)
    states_shape = (structure.num_states, layout.batch, structure.hidden_size)
    if grad_h_n is not None:
        grad_h_n = _device_array(arrays, "grad_h_n", grad_h_n, dtype)
        _checks.check_same_shape("grad_h_n", grad_h_n, context.hx_shape)
        grad_h_n = _states_in(arrays, grad_h_n, layout, states_shape)
    if grads is None:
        grads = {name: arrays.zeros(w.shape, dtype) for name, w in zip(names, context.weights)}
    grad_list = _gradient_buffers(arrays, grads, structure)
    grad_x, grad_hx, _ = backward_packed(
        backend, structure, context.x, context.hx, context.weights, context.batch_sizes,
        context.output, context.saved, context.masks, _pack(arrays, grad_output, layout),
        grad_h_n, grad_list, validate=False)
    grad_x = _unpack(arrays, grad_x, layout)
    grad_hx = _states_out(arrays, grad_hx, layout, context.hx_shape)
    if layout.on_host:
        grad_x, grad_hx = arrays.to_host(grad_x), arrays.to_host(grad_hx)
    return grad_x, grad_hx, grads


def _gradient_buffers(arrays, grads, structure):
    """The caller's gradient dict as a list in the weights' order, every buffer checked: the
    kernels ADD into them in place, so nothing can be converted."""
    if not isinstance(grads, Mapping):
        raise TypeError(f"grads must be a dict keyed by parameter name, got {type(grads).__name__}")
    shapes = structure.shapes()
    missing = [name for name in shapes if name not in grads]
    if missing:
        raise ValueError(f"grads is missing the gradient buffer(s) {missing}")
    for name, shape in shapes.items():
        _check_packed_array(arrays, f"gradient buffer {name!r}", grads[name], shape,
                            structure.dtype, writeable=True)
    return [grads[name] for name in shapes]

