"""The recurrent layers on plain arrays: ONE stacking code for every cell (Elman, LSTM, GRU).

Why here: everything a backend should not have to know lives in this one place, written once
for all cells. What differs between cells is small and sits in a ``Cell`` description (gate
count, workspace width, whether the state is a pair, how to call the backend for one
layer-direction); everything else (the layer loop, the two directions writing the two halves
of one [N, D*P] buffer, dropout between layers, states, lengths, layouts, checks) is shared.
Two levels:

- ``forward_packed`` / ``backward_packed``: the stack over PACKED sequences (the layout of
  backends/__init__.py, a sorted batch). fastrnn.torch calls this level directly. Both check
  every array they are given (shape, dtype, byte order, contiguity, writeability) before any
  kernel runs, unless the caller says it already did (``validate=False``).
- ``rnn_forward`` / ``lstm_forward`` / ``gru_forward`` and their backwards: the user's arrays:
  checks in torch's words, ``batch_first`` and unbatched input, ``lengths`` (sorting and
  packing, the caller's order restored), drawing the dropout masks, picking the backend.

The cell is torch's ``mode`` ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU'), held by a ``Structure``
with the sizes (and LSTM's ``proj_size`` P; P = H without a projection: the width of h and of
one direction's output). Parameters are passed as a mapping with torch's names
(``weight_ih_l0``, ..., ``bias_hh_l1_reverse``, ``weight_hr_l0``); the layers, directions,
biases and projection are read off the names, so a torch state_dict works as it is. Below
that, weights travel as a list in torch's flat order (``parameter_names``), as torch's own RNN
ops take them. ``prepare_weights`` does the reading and checking once; a caller that keeps its
weights (the layers) keeps the ``Prepared`` result and pays for it only when they change.

States: the Elman RNN and the GRU have one state array h [L*D, B, H]; the LSTM has the pair
(h [L*D, B, P], c [L*D, B, H]), passed and returned as a tuple, as torch does.

What backward needs from forward (``saved``, returned by forward_packed and passed back to
backward_packed) is ONE flat array, so that a torch custom op can return it as one tensor and
a fake implementation can size it from the input shapes alone. For N packed rows it holds

    saved_size(N) = N * ((L - 1) * D * P  +  L * D * G)        G = workspace columns: 0 (Elman),
                                                                   5H (LSTM), 4H (GRU)
    [ layer outputs [L-1, N, D*P] | workspaces [L*D, N, G] ]     both C-contiguous blocks

the outputs of layers 0..L-2 before dropout, then the workspace of each layer-direction
(index layer * D + direction) in the layout of the backend contract. ``Structure.saved_size``
and ``Structure.saved_views`` compute the size and carve the views. (For the Elman RNN the
array is exactly the [L-1, N, D*H] layer outputs: empty for one layer.)

What a backward needs is OWNED by its ``Context``: an input, ``hx`` or output that would alias
the caller's memory is copied (once per call, only when backward is wanted), so the caller may
change the arrays it passed or got back without changing any gradient. Parameters are not
copied (that would cost a full weight copy per call): they must not change between a forward
and its backward; the layers check that for their own (see _parameters.py).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _checks
from .backends import BackendUnavailable, HostArrays, is_cuda_array, load_backend
from .packing import equal_batch_sizes, plan_packing

MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}      # the Elman RNN's nonlinearity -> mode

States = Union[Any, tuple]      # one state array, or LSTM's pair (h, c)


# ----------------------------------------------------------------------------- cells
# One layer-direction of each cell: ``kernel`` (the backend's <cell>_forward or _backward)
# called in the backend contract's argument order. h0, h_n,
# grad_h_n and grad_h0 are the stack's states as the API passes them (h [L*D, B, H], or
# LSTM's pair (h, c)) and ``s`` picks this layer-direction's row block; ``w`` is
# (w_ih, w_hh, b_ih, b_hh[, w_hr]) as Structure.layer_weights returns it, ``g`` the matching
# gradient buffers.
def _rnn_layer_forward(kernel, x, h0, s, w, batch_sizes, reverse, relu, out, h_n, workspace):
    kernel(x, h0[s], w[0], w[1], w[2], w[3], batch_sizes, reverse, relu, out, h_n[s])


def _lstm_layer_forward(kernel, x, h0, s, w, batch_sizes, reverse, relu, out, h_n, workspace):
    kernel(x, h0[0][s], h0[1][s], w[0], w[1], w[2], w[3], w[4], batch_sizes, reverse, out,
           h_n[0][s], h_n[1][s], workspace)


def _gru_layer_forward(kernel, x, h0, s, w, batch_sizes, reverse, relu, out, h_n, workspace):
    kernel(x, h0[s], w[0], w[1], w[2], w[3], batch_sizes, reverse, out, h_n[s], workspace)


def _rnn_layer_backward(kernel, x, h0, s, w, batch_sizes, reverse, relu, out, workspace,
                        grad_out, grad_h_n, grad_x, accumulate_x, grad_h0, g):
    kernel(x, h0[s], w[0], w[1], batch_sizes, reverse, relu, out, grad_out, grad_h_n[s], grad_x,
           accumulate_x, grad_h0[s], g[0], g[1], g[2], g[3])


def _lstm_layer_backward(kernel, x, h0, s, w, batch_sizes, reverse, relu, out, workspace,
                         grad_out, grad_h_n, grad_x, accumulate_x, grad_h0, g):
    kernel(x, h0[0][s], h0[1][s], w[0], w[1], w[4], batch_sizes, reverse, out, workspace,
           grad_out, grad_h_n[0][s], grad_h_n[1][s], grad_x, accumulate_x, grad_h0[0][s],
           grad_h0[1][s], g[0], g[1], g[2], g[3], g[4])


def _gru_layer_backward(kernel, x, h0, s, w, batch_sizes, reverse, relu, out, workspace,
                        grad_out, grad_h_n, grad_x, accumulate_x, grad_h0, g):
    kernel(x, h0[s], w[0], w[1], batch_sizes, reverse, out, workspace, grad_out, grad_h_n[s],
           grad_x, accumulate_x, grad_h0[s], g[0], g[1], g[2], g[3])


@dataclass(frozen=True)
class Cell:
    """What one kind of cell changes in the stack (everything else is shared)."""
    name: str              # torch's class name: 'RNN', 'LSTM', 'GRU' (in messages)
    entry: str             # the backend's entry points: <entry>_forward, <entry>_backward
    gates: int             # rows of W_ih and W_hh per hidden unit (torch's gate_size / H)
    workspace: int         # columns per hidden unit that forward keeps for backward, per row
    paired: bool           # whether the state is the pair (h, c)
    forward: Callable      # one layer-direction forward (see _rnn_layer_forward)
    backward: Callable     # one layer-direction backward

    def kernels(self, backend) -> tuple:
        """The backend's (forward, backward) kernels of this cell."""
        return (getattr(backend, self.entry + "_forward"),
                getattr(backend, self.entry + "_backward"))

    def runs_on(self, backend) -> bool:
        """Whether ``backend`` (a module) has this cell's kernels."""
        return (hasattr(backend, self.entry + "_forward")
                and hasattr(backend, self.entry + "_backward"))


_ELMAN = Cell("RNN", "rnn", 1, 0, False, _rnn_layer_forward, _rnn_layer_backward)
CELLS = {"RNN_TANH": _ELMAN, "RNN_RELU": _ELMAN,
         "LSTM": Cell("LSTM", "lstm", 4, 5, True, _lstm_layer_forward, _lstm_layer_backward),
         "GRU": Cell("GRU", "gru", 3, 4, False, _gru_layer_forward, _gru_layer_backward)}


def check_mode(mode: str) -> str:
    """torch's mode name ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU'); the Elman nonlinearities
    'tanh' and 'relu' stand for 'RNN_TANH' and 'RNN_RELU'."""
    mode = MODES.get(mode, mode) if isinstance(mode, str) else mode
    if mode not in CELLS:
        raise ValueError(f"Unrecognized RNN mode: {mode!r}. Select from {sorted(CELLS)} "
                         "(or the nonlinearity 'tanh' or 'relu' of the Elman RNN)")
    return mode


def backend_runs(backend: str, mode: str) -> bool:
    """Whether the backend called ``backend`` is available here and has ``mode``'s kernels."""
    try:
        return CELLS[check_mode(mode)].runs_on(load_backend(backend))
    except BackendUnavailable:
        return False


# ----------------------------------------------------------------------------- parameters
def parameter_names(num_layers: int, bidirectional: bool, bias: bool, *,
                    proj_size: int = 0) -> list[str]:
    """torch's parameter names (nn.RNN, nn.LSTM, nn.GRU alike), in its order: per layer and
    direction weight_ih, weight_hh, [bias_ih, bias_hh], [weight_hr (LSTM with proj_size)]."""
    kinds = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    kinds += ("weight_hr",) if proj_size else ()
    return [f"{kind}_l{layer}{suffix}" for layer in range(num_layers)
            for suffix in ("", "_reverse")[: 2 if bidirectional else 1] for kind in kinds]


def parameter_shapes(input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
                     bias: bool, *, mode: str = "RNN_TANH",
                     proj_size: int = 0) -> dict[str, tuple[int, ...]]:
    """{name: shape} for every parameter, as torch lays them out: W_ih [G, layer input],
    W_hh [G, P], biases [G] with G = gates * hidden_size (1, 4 or 3 gates), W_hr [P, H]; the
    input of layers 1.. is the previous layer's output, D * P wide."""
    gates = CELLS[check_mode(mode)].gates * hidden_size
    out = proj_size or hidden_size
    shapes = {}
    for name in parameter_names(num_layers, bidirectional, bias, proj_size=proj_size):
        kind, layer = name.split("_l")[0], int(name.split("_l")[1].split("_")[0])
        layer_input = input_size if layer == 0 else out * (2 if bidirectional else 1)
        shapes[name] = {"weight_ih": (gates, layer_input), "weight_hh": (gates, out),
                        "weight_hr": (out, hidden_size)}.get(kind, (gates,))
    return shapes


@dataclass(frozen=True)
class Structure:
    """The shape of a stacked recurrent layer: the cell (torch's mode) and its sizes; the
    sizes derived from them are plain attributes (see __post_init__)."""
    mode: str                    # 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU' (torch's names)
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    bias: bool
    dtype: str
    proj_size: int = 0           # LSTM only: h is projected to this width (0: no projection)

    def __post_init__(self):
        check_mode(self.mode)
        if self.proj_size and self.mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if self.proj_size and not 0 < self.proj_size < self.hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        cell, directions = CELLS[self.mode], 2 if self.bidirectional else 1
        output_size = self.proj_size or self.hidden_size
        derived = dict(
            cell=cell,                                   # the Cell of ``mode``
            directions=directions,                       # D
            num_states=self.num_layers * directions,     # L * D
            relu=self.mode == "RNN_RELU",
            output_size=output_size,                     # P: width of h and of a direction's output
            layer_width=directions * output_size,        # D * P: a layer's output width
            # the last dimension of each state array: (P, H) for LSTM's (h, c), else (H,)
            state_sizes=(output_size, self.hidden_size) if cell.paired else (self.hidden_size,),
            workspace_width=cell.workspace * self.hidden_size)   # G, 0 for the Elman RNN
        for name, value in derived.items():             # plain attributes: read on every call
            object.__setattr__(self, name, value)

    def state_shapes(self, batch: int) -> tuple:
        """The shape of each state array, [L*D, B, P] (and [L*D, B, H] for LSTM's c)."""
        return tuple((self.num_states, batch, size) for size in self.state_sizes)

    def saved_size(self, rows: int) -> int:
        """The number of elements of ``saved`` for ``rows`` (N) packed rows (module header)."""
        return rows * ((self.num_layers - 1) * self.layer_width
                       + self.num_states * self.workspace_width)

    def saved_views(self, saved, rows: int) -> tuple:
        """(layer outputs [L-1, N, D*P], workspaces [L*D, N, G]): views of ``saved``, a
        C-contiguous array of saved_size(rows) elements; None for a part that is empty by
        structure (one layer; the Elman RNN's workspaces)."""
        flat = saved if saved.ndim == 1 else saved.reshape(saved.size)
        split = (self.num_layers - 1) * rows * self.layer_width
        outputs = (flat[:split].reshape(self.num_layers - 1, rows, self.layer_width)
                   if self.num_layers > 1 else None)
        workspaces = (flat[split:].reshape(self.num_states, rows, self.workspace_width)
                      if self.workspace_width else None)
        return outputs, workspaces

    def names(self) -> list[str]:
        """The parameter names in torch's flat order."""
        return list(self._shape_table)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """{name: shape} of every parameter, in torch's flat order."""
        return dict(self._shape_table)

    @functools.cached_property
    def _shape_table(self):
        return parameter_shapes(self.input_size, self.hidden_size, self.num_layers,
                                self.bidirectional, self.bias, mode=self.mode,
                                proj_size=self.proj_size)

    def layer_weights(self, weights, layer: int, direction: int) -> tuple:
        """(w_ih, w_hh, b_ih, b_hh) of one layer-direction from the flat list (+ w_hr for
        LSTM), None where the structure has no such parameter. The same positions index a
        list of their gradients."""
        per_state = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        start = (layer * self.directions + direction) * per_state
        found = tuple(weights[start:start + per_state])
        if not self.bias:
            found = found[:2] + (None, None) + found[2:]
        return found + (None,) if self.cell.paired and not self.proj_size else found

    def public(self, states: tuple) -> States:
        """A tuple of state arrays as the API passes them: the LSTM pair, or one array."""
        return states if self.cell.paired else states[0]


def _named_shape(weights, name, what):
    """The shape of ``weights[name]``, which must be a 2-D array."""
    shape = tuple(np.shape(weights[name]))
    if len(shape) != 2:
        raise _checks.ShapeError(f"Expected parameter {name!r} to be 2-D {what}, got shape {shape}")
    return shape


def read_structure(weights: Mapping, mode: str = "RNN_TANH") -> Structure:
    """The Structure a parameter mapping describes for the cell ``mode`` (torch's mode name,
    or the Elman nonlinearity 'tanh' / 'relu'); a clear error naming the offending parameter
    (and the shape it should have) when it is inconsistent."""
    mode = check_mode(mode)
    cell = CELLS[mode]
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping from torch.nn.{cell.name}'s parameter names "
                        f"('weight_ih_l0', ...) to arrays, got {type(weights).__name__}")
    if "weight_ih_l0" not in weights or "weight_hh_l0" not in weights:
        raise ValueError("weights must contain at least 'weight_ih_l0' and 'weight_hh_l0' "
                         f"(torch.nn.{cell.name}'s names), got {sorted(map(str, weights))}")
    rows_what = "[hidden_size, input_size]" if cell.gates == 1 else \
        f"[{cell.gates} * hidden_size, input_size]"
    rows, input_size = _named_shape(weights, "weight_ih_l0", rows_what)
    if rows % cell.gates:
        raise _checks.ShapeError(f"Expected parameter 'weight_ih_l0' of shape {rows_what} "
                                 f"({cell.name}: {cell.gates} gates), got {(rows, input_size)}")
    proj_size = 0
    if cell.paired and "weight_hr_l0" in weights:
        proj_size = _named_shape(weights, "weight_hr_l0", "[proj_size, hidden_size]")[0]
    num_layers = 0
    while f"weight_ih_l{num_layers}" in weights:
        num_layers += 1
    found = getattr(weights["weight_ih_l0"], "dtype", None)
    try:
        dtype = _checks.check_dtype_name(found)
    except ValueError:
        raise TypeError(f"Expected parameter 'weight_ih_l0' of dtype float32 or float64, got "
                        f"{found}") from None
    structure = Structure(mode, input_size, rows // cell.gates, num_layers,
                          bidirectional="weight_ih_l0_reverse" in weights,
                          bias="bias_ih_l0" in weights, dtype=dtype, proj_size=proj_size)
    check_parameters(weights, structure)
    return structure


def check_parameters(weights: Mapping, structure: Structure) -> None:
    """Names, shapes and dtype of every parameter, against what ``structure`` needs; the
    message names each offending parameter and the shape it should have."""
    expected = structure.shapes()
    missing = [f"{n} {list(shape)}" for n, shape in expected.items() if n not in weights]
    unexpected = [n for n in weights if n not in expected]
    if missing or unexpected:
        raise ValueError(f"Parameter names do not describe one {structure.cell.name} "
                         f"({structure.num_layers} layer(s), bidirectional="
                         f"{structure.bidirectional}, bias={structure.bias}): missing "
                         f"{missing}, unexpected {unexpected}")
    for name, shape in expected.items():
        value = weights[name]
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise TypeError(f"Expected parameter {name!r} to be an array of shape {shape}, got "
                            f"{type(value).__name__}")
        _checks.check_same_shape(f"parameter {name!r}", value, shape)
        _checks.check_array_dtype(f"parameter {name!r}", value, structure.dtype)


# ----------------------------------------------------------------------------- backends
_AUTO_HOST = {}          # mode -> the host backend 'auto' picks for it


def resolve_backend_name(backend: str, x: Any, mode: str = "RNN_TANH") -> str:
    """'auto' means 'cuda' for a device array (see is_cuda_array); on the host 'cpu', or the
    'numpy' reference for a cell whose compiled kernels this build does not have."""
    if backend != "auto":
        return backend
    if is_cuda_array(x):
        return "cuda"
    name = _AUTO_HOST.get(mode)
    if name is None:
        name = _AUTO_HOST[mode] = "cpu" if backend_runs("cpu", mode) else "numpy"
    return name


def _check_cell_kernels(backend, structure, name=None):
    """BackendUnavailable when ``backend`` has no kernels for the structure's cell."""
    cell = structure.cell
    if not cell.runs_on(backend):
        name = name or backend.__name__.rsplit(".", 1)[-1]
        raise BackendUnavailable(f"backend {name!r} has no {cell.name} kernels "
                                 f"({cell.entry}_forward/{cell.entry}_backward) in this build; "
                                 "use backend='numpy' (the reference) or 'auto'")


class Prepared:
    """Parameters checked once and laid out for one backend: what every call needs from them.

    ``weights`` are in torch's flat order, C-contiguous, aligned, native byte order, on the
    backend's device; they are the caller's own arrays whenever those already qualify (so a
    later in-place update of a parameter is seen), copies otherwise. ``layers`` holds each
    layer's kernel arguments ready to pass (see _layer_arguments), so that a call does no
    bookkeeping of its own. Pickles by its three defining fields."""
    __slots__ = ("structure", "backend_name", "weights", "backend", "layers", "native",
                 "on_host", "input_size", "num_states", "width", "relu", "stacked", "forward",
                 "kernel", "paired", "state_sizes", "workspace_width")

    def __init__(self, structure: Structure, backend_name: str, weights: tuple):
        self.structure, self.backend_name, self.weights = structure, backend_name, tuple(weights)
        self.backend = load_backend(backend_name)
        _check_cell_kernels(self.backend, structure, backend_name)
        self.layers = _layer_arguments(structure, self.weights)
        # what every call reads, as plain attributes (a call's checks are a few comparisons)
        self.native = _checks.NATIVE_DTYPES[structure.dtype]
        self.on_host = self.backend.ARRAYS is HostArrays
        self.input_size, self.num_states = structure.input_size, structure.num_states
        self.width, self.stacked = structure.layer_width, structure.num_layers > 1
        self.forward, self.relu = structure.cell.forward, structure.relu
        self.kernel = structure.cell.kernels(self.backend)[0]
        self.paired, self.state_sizes = structure.cell.paired, structure.state_sizes
        self.workspace_width = structure.workspace_width

    def __reduce__(self):
        return Prepared, (self.structure, self.backend_name, self.weights)


def _layer_arguments(structure, weights):
    """For each layer, for each direction: (state index, parameters (see
    Structure.layer_weights), reverse, columns of the layer's [N, D*P] output it writes, or
    None for all of them)."""
    D, P = structure.directions, structure.output_size
    return tuple(
        tuple((layer * D + direction, structure.layer_weights(weights, layer, direction),
               bool(direction), None if D == 1 else slice(direction * P, (direction + 1) * P))
              for direction in range(D))
        for layer in range(structure.num_layers))


def prepare_weights(weights: Mapping, mode: str = "RNN_TANH", backend: str = "cpu") -> Prepared:
    """Read and check a parameter mapping once (see read_structure) for the cell ``mode`` and
    ``backend`` (a name, not 'auto')."""
    structure = read_structure(weights, mode)
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


def _state_tuple(structure, states, what, members_may_be_none=False):
    """A state argument (one array, or LSTM's pair) as a tuple of arrays; TypeError when an
    LSTM state is not a pair."""
    if not structure.cell.paired:
        return (states,)
    if not isinstance(states, (tuple, list)) or len(states) != 2:
        raise TypeError(f"{structure.cell.name}: Expected {what} to be a tuple (h, c) of two "
                        f"arrays, got {type(states).__name__}")
    if not members_may_be_none and (states[0] is None or states[1] is None):
        raise TypeError(f"{structure.cell.name}: Expected {what} to be a tuple (h, c) of two "
                        "arrays, got None in it")
    return tuple(states)


def _check_states(arrays, structure, what, states, batch, writeable=False, may_be_none=False):
    """Each state array of ``states`` (public form) against its [L*D, B, P|H] shape."""
    members = _state_tuple(structure, states, what, may_be_none)
    names = (what,) if len(members) == 1 else (f"{what}[0]", f"{what}[1]")
    for name, state, shape in zip(names, members, structure.state_shapes(batch)):
        if state is not None:
            _check_packed_array(arrays, name, state, shape, structure.dtype, writeable)


def _check_packed(arrays, structure, x, hx, weights, batch_sizes, masks):
    """What forward_packed and backward_packed both read; returns (N, B)."""
    if not isinstance(structure, Structure):
        raise TypeError(f"structure must be a fastrnn.functional.Structure, got "
                        f"{type(structure).__name__}")
    N, B = check_batch_sizes(batch_sizes)
    dtype = structure.dtype
    _check_packed_array(arrays, "x", x, (N, structure.input_size), dtype)
    if hx is not None:
        _check_states(arrays, structure, "hx", hx, B)
    names, shapes = structure.names(), structure.shapes()
    if len(weights) != len(names):
        raise ValueError(f"Expected {len(names)} weights in the order {names}, got {len(weights)}")
    for name, weight in zip(names, weights):
        _check_packed_array(arrays, f"parameter {name!r}", weight, shapes[name], dtype)
    if masks is not None:
        _check_packed_array(arrays, "masks", masks,
                            (structure.num_layers - 1, N, structure.layer_width), dtype)
    return N, B


class _Stack(NamedTuple):
    """What the layer loop needs besides arrays (a Prepared has the same attributes)."""
    backend: Any
    forward: Callable            # the cell's one layer-direction forward
    kernel: Callable             # the backend's forward kernel of the cell
    relu: bool
    layers: tuple
    paired: bool                 # whether states are LSTM's pairs


def forward_packed(backend, structure: Structure, x, hx, weights, batch_sizes: np.ndarray,
                   masks=None, need_saved: bool = True, *, output=None, h_n=None,
                   validate: bool = True):
    """The stacked layer (any cell) over packed sequences.

    x [N, I] C-contiguous; hx: the initial state in sorted order, C-contiguous, or None
    (zeros): h [L*D, B, H] for RNN and GRU, the pair (h [L*D, B, P], c [L*D, B, H]) for LSTM;
    weights: the parameters in torch's flat order (``structure.names()``), C-contiguous;
    batch_sizes [T] int64 (see backends/__init__.py); masks [L-1, N, D*P] multipliers for the
    outputs of layers 0..L-2 (dropout, already scaled), or None. ``output`` [N, D*P] and
    ``h_n`` (like hx; C-contiguous, writeable): buffers to write the results into instead of
    fresh ones. ``validate=False`` skips the checks of every argument (for callers that made
    these arrays themselves).
    Returns ``(output [N, D*P], h_n (like hx), saved)``: ``saved`` is the 1-D array of
    ``structure.saved_size(N)`` elements that backward_packed needs (module header), or None
    when ``need_saved`` is False.
    """
    arrays, dtype = backend.ARRAYS, structure.dtype
    if validate:
        N, B = _check_packed(arrays, structure, x, hx, weights, batch_sizes, masks)
        if output is not None:
            _check_packed_array(arrays, "output", output, (N, structure.layer_width), dtype,
                                writeable=True)
        if h_n is not None:
            _check_states(arrays, structure, "h_n", h_n, B, writeable=True)
        _check_cell_kernels(backend, structure)
    else:
        N, B = x.shape[0], (int(batch_sizes[0]) if len(batch_sizes) else 0)
    h0 = _new_states(arrays, structure, B, arrays.zeros) if hx is None else hx
    finals = _new_states(arrays, structure, B, arrays.empty) if h_n is None else h_n
    output = arrays.empty((N, structure.layer_width), dtype) if output is None else output
    saved = arrays.empty((structure.saved_size(N),), dtype) if need_saved else None
    layer_outputs, workspaces = (structure.saved_views(saved, N) if need_saved
                                 else (None, _scratch_workspaces(arrays, structure, N)))
    cell = structure.cell
    stack = _Stack(backend, cell.forward, cell.kernels(backend)[0], structure.relu,
                   _layer_arguments(structure, weights), cell.paired)
    _stack_forward(stack, x, h0, batch_sizes, masks, layer_outputs, workspaces, output, finals)
    return output, finals, saved


def _new_states(arrays, structure, batch, make):
    """Fresh states for ``batch`` sequences made by ``make`` (arrays.zeros, arrays.empty)."""
    return structure.public(tuple(make(shape, structure.dtype)
                                  for shape in structure.state_shapes(batch)))


def _scratch_workspaces(arrays, structure, rows):
    """One workspace [N, G] that every layer-direction writes in turn (nothing is kept), as
    the per-state sequence _stack_forward indexes; None for the Elman RNN (no workspace)."""
    width = structure.workspace_width
    return (arrays.empty((rows, width), structure.dtype),) * structure.num_states if width else None


def _stack_forward(stack, x, h0, batch_sizes, masks, layer_outputs, workspaces, output, h_n):
    """The layer loop over ready kernel arguments (``stack``: a Prepared or _Stack). h0 and
    h_n are states as the API passes them; each layer but the last writes ``layer_outputs[layer]``
    (or a scratch buffer when None), the last one ``output``; ``workspaces[state]`` is each
    layer-direction's workspace (None: the cell has none). B == 0 runs no kernel."""
    forward, kernel, relu, layers = stack.forward, stack.kernel, stack.relu, stack.layers
    arrays, last = stack.backend.ARRAYS, len(layers) - 1
    run = (h0[0] if stack.paired else h0).shape[1] > 0
    layer_input = x
    for layer, directions in enumerate(layers):
        if layer == last:
            layer_output = output
        elif layer_outputs is not None:
            layer_output = layer_outputs[layer]
        else:
            layer_output = arrays.empty(output.shape, output.dtype)
        for state, weights, reverse, columns in directions:
            if run:
                forward(kernel, layer_input, h0, state, weights, batch_sizes, reverse, relu,
                        layer_output if columns is None else layer_output[:, columns], h_n,
                        None if workspaces is None else workspaces[state])
        layer_input = layer_output if masks is None or layer == last else arrays.multiply(layer_output, masks[layer])
    return output


def backward_packed(backend, structure: Structure, x, hx, weights, batch_sizes: np.ndarray,
                    output, saved, masks, grad_output, grad_h_n=None, grads=None, *,
                    validate: bool = True):
    """Backpropagation through time for one forward_packed call (same arguments, plus its
    ``output`` and ``saved``: any C-contiguous array of saved_size(N) elements, read flat;
    None only when that size is 0). grad_output [N, D*P]; grad_h_n like hx, or None (zeros;
    for LSTM either member of the pair may be None too); ``grads``: arrays in the weights'
    order that parameter gradients are ADDED into (None: fresh zeros); they must be
    C-contiguous, writeable and of the weights' shapes and dtype.
    Returns ``(grad_x [N, I], grad_hx (like hx), grads)``."""
    arrays, dtype = backend.ARRAYS, structure.dtype
    if validate:
        _check_backward_packed(arrays, structure, x, hx, weights, batch_sizes, output, saved,
                               masks, grad_output, grad_h_n, grads)
        _check_cell_kernels(backend, structure)
    N, B = x.shape[0], (int(batch_sizes[0]) if len(batch_sizes) else 0)
    h0 = _new_states(arrays, structure, B, arrays.zeros) if hx is None else hx
    grad_finals = _new_states(arrays, structure, B, arrays.zeros)
    if grad_h_n is not None:
        given = _state_tuple(structure, grad_h_n, "grad_h_n", members_may_be_none=True)
        grad_finals = structure.public(tuple(
            zero if grad is None else grad
            for grad, zero in zip(given, _state_tuple(structure, grad_finals, "zeros"))))
    grads = [None if w is None else arrays.zeros(w.shape, dtype) for w in weights] if grads is None else grads
    grad_h0 = _new_states(arrays, structure, B, arrays.zeros)
    layer_outputs, workspaces = (structure.saved_views(saved, N) if saved is not None
                                 else (None, None))
    cell, D, P, L = structure.cell, structure.directions, structure.output_size, structure.num_layers
    kernel = cell.kernels(backend)[1]
    grad_layer_output = grad_output
    for layer in reversed(range(L)):
        layer_output = output if layer == L - 1 else layer_outputs[layer]
        layer_input = x if layer == 0 else _dropped(arrays, layer_outputs[layer - 1], masks, layer - 1)
        grad_input = arrays.empty(layer_input.shape, dtype)
        for direction in range(D):
            state, columns = layer * D + direction, slice(direction * P, (direction + 1) * P)
            if B > 0:
                cell.backward(kernel, layer_input, h0, state,
                              structure.layer_weights(weights, layer, direction), batch_sizes,
                              bool(direction), structure.relu, layer_output[:, columns],
                              None if workspaces is None else workspaces[state],
                              grad_layer_output[:, columns], grad_finals, grad_input,
                              direction > 0, grad_h0,
                              structure.layer_weights(grads, layer, direction))
            elif direction == 0:
                grad_input = arrays.zeros(layer_input.shape, dtype)
        grad_layer_output = _dropped(arrays, grad_input, masks, layer - 1) if layer > 0 else grad_input
    return grad_layer_output, grad_h0, grads


def _check_saved(arrays, structure, saved, rows):
    """``saved``: a C-contiguous array of saved_size(rows) elements (any shape), or None when
    that size is 0."""
    size = structure.saved_size(rows)
    if saved is None:
        if size:
            raise ValueError(f"backward_packed needs what forward_packed saved ({size} "
                             "elements): run forward_packed with need_saved=True")
        return
    if int(np.prod(saved.shape)) != size:
        raise _checks.ShapeError(f"Expected saved to hold {size} elements (saved_size of "
                                 f"{rows} rows), got shape {tuple(saved.shape)}")
    _check_packed_array(arrays, "saved", saved, tuple(saved.shape), structure.dtype)
    if arrays is not HostArrays and not saved.is_c_contiguous():
        raise ValueError("Expected saved to be C-contiguous")


def _check_backward_packed(arrays, structure, x, hx, weights, batch_sizes, output, saved, masks,
                           grad_output, grad_h_n, grads):
    N, B = _check_packed(arrays, structure, x, hx, weights, batch_sizes, masks)
    width, dtype = structure.layer_width, structure.dtype
    _check_packed_array(arrays, "output", output, (N, width), dtype)
    _check_packed_array(arrays, "grad_output", grad_output, (N, width), dtype)
    _check_saved(arrays, structure, saved, N)
    if grad_h_n is not None:
        _check_states(arrays, structure, "grad_h_n", grad_h_n, B, may_be_none=True)
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
    """Everything a backward needs from one forward call; every array in it belongs to it
    (none is the caller's), and it pickles (the backend is kept by name)."""
    backend_name: str
    structure: Structure
    weights: tuple
    layout: Layout
    x: Any                       # [N, I] packed
    hx: Any                      # sorted initial state(s) (one array, or LSTM's pair), or None
    batch_sizes: np.ndarray
    masks: Any
    saved: Any                   # see the module header
    output: Any                  # [N, D*P] packed
    output_shape: tuple
    state_shapes: tuple          # the caller's shape of each state array

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


def _states_in(arrays, states, layout, shapes):
    """The caller's state arrays (a tuple) as sorted, contiguous [L*D, B, *] arrays."""
    order = None if layout.packing is None else layout.packing.sorted_indices
    return tuple(_reorder_states(arrays, arrays.contiguous(state).reshape(shape), order)
                 for state, shape in zip(states, shapes))


def _states_out(arrays, states, layout, shapes):
    """Sorted [L*D, B, *] arrays (a tuple) in the caller's order and shapes."""
    order = None if layout.packing is None else layout.packing.unsorted_indices
    return tuple(_reorder_states(arrays, state, order).reshape(shape)
                 for state, shape in zip(states, shapes))


def _caller_states(arrays, structure, states, what):
    """The caller's state argument (None, one array, LSTM's pair) as None or a tuple of
    arrays of the backend's device (converted as _device_array does)."""
    if states is None:
        return None
    members = _state_tuple(structure, states, what)
    names = (what,) if len(members) == 1 else (f"{what}[0]", f"{what}[1]")
    return tuple(_device_array(arrays, name, state, structure.dtype)
                 for name, state in zip(names, members))


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


def _to_host_states(arrays, states):
    return tuple(arrays.to_host(state) for state in states)


_FORWARD_PARAMETERS = """
    x : array [T, B, I] ([B, T, I] with ``batch_first``, [T, I] unbatched), float32 or
        float64 (the weights' dtype; another byte order or a misaligned buffer is converted).
    weights : mapping from torch's parameter names to arrays (a torch state_dict works);
        L (layers), D (2 if bidirectional), bias{projection} are read off the names.
    hx : {hx}, or None for zeros.
    lengths : None, or one length per sequence (integers in 1..T, any order): step t then runs
        only the sequences longer than t, ``output`` is zero past each length and the final
        state holds each sequence's state after its own last step.
    dropout, training, rng : dropout between layers (torch's rule), drawn from ``rng`` (a
        NumPy Generator) when ``training``.
    backend : 'auto' (cuda for device arrays, else cpu where it has this cell's kernels,
        else the numpy reference), 'cpu', 'numpy' or 'cuda'.
    need_backward : keep what the backward needs (the ``context``); False for inference.
    out : optional array of ``output``'s shape and dtype to write the output into (it is then
        the ``output`` returned).

    Returns ``(output, {final}, context)``: output [T, B, D*{P}] in x's layout, {final_doc},
    context None unless ``need_backward``. Device arrays (``__cuda_array_interface__``) stay
    on the device; NumPy input gives NumPy output. The returned arrays are the caller's:
    changing them (or x, hx) does not change what the backward computes.
"""


def _forward(mode, x, weights, hx, lengths, batch_first, dropout, training, rng, backend,
             need_backward, out):
    """The user-level forward of any cell (rnn_forward, lstm_forward, gru_forward)."""
    _checks.check_dropout(dropout)
    prepared = prepare_weights(weights, mode, resolve_backend_name(backend, x, mode))
    return forward_prepared(prepared, x, hx, lengths=lengths, batch_first=batch_first,
                            dropout=dropout, training=training, rng=rng,
                            need_backward=need_backward, out=out)


def rnn_forward(x: ArrayLike, weights: Mapping, hx: Optional[ArrayLike] = None, *,
                lengths: Optional[ArrayLike] = None, nonlinearity: str = "tanh",
                batch_first: bool = False, dropout: float = 0.0, training: bool = False,
                rng: Optional[np.random.Generator] = None, backend: str = "auto",
                need_backward: bool = True, out: Optional[np.ndarray] = None
                ) -> tuple[Any, Any, Optional[Context]]:
    _checks.check_nonlinearity(nonlinearity)
    return _forward(MODES[nonlinearity], x, weights, hx, lengths, batch_first, dropout,
                    training, rng, backend, need_backward, out)


def lstm_forward(x: ArrayLike, weights: Mapping, hx: Optional[tuple] = None, *,
                 lengths: Optional[ArrayLike] = None, batch_first: bool = False,
                 dropout: float = 0.0, training: bool = False,
                 rng: Optional[np.random.Generator] = None, backend: str = "auto",
                 need_backward: bool = True, out: Optional[np.ndarray] = None
                 ) -> tuple[Any, tuple, Optional[Context]]:
    return _forward("LSTM", x, weights, hx, lengths, batch_first, dropout, training, rng,
                    backend, need_backward, out)


def gru_forward(x: ArrayLike, weights: Mapping, hx: Optional[ArrayLike] = None, *,
                lengths: Optional[ArrayLike] = None, batch_first: bool = False,
                dropout: float = 0.0, training: bool = False,
                rng: Optional[np.random.Generator] = None, backend: str = "auto",
                need_backward: bool = True, out: Optional[np.ndarray] = None
                ) -> tuple[Any, Any, Optional[Context]]:
    return _forward("GRU", x, weights, hx, lengths, batch_first, dropout, training, rng,
                    backend, need_backward, out)


rnn_forward.__doc__ = """Run a (stacked, optionally bidirectional) Elman RNN over ``x``:
    h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = tanh or relu (``nonlinearity``).

    Parameters
    ----------""" + _FORWARD_PARAMETERS.format(
    projection="", hx="array [L*D, B, H] ([L*D, H] unbatched)", final="h_n", P="H",
    final_doc="h_n like hx")

lstm_forward.__doc__ = """Run a (stacked, optionally bidirectional, optionally projected)
    LSTM over ``x``, torch's gate order i, f, g, o:
    c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t) (times W_hr^T with proj_size P).

    Parameters
    ----------""" + _FORWARD_PARAMETERS.format(
    projection=" and the projection (weight_hr_l*, [P, H])",
    hx="the pair (h_0 [L*D, B, P], c_0 [L*D, B, H]) ([L*D, P], [L*D, H] unbatched); P = H "
       "without a projection", final="(h_n, c_n)", P="P",
    final_doc="(h_n, c_n) like hx")

gru_forward.__doc__ = """Run a (stacked, optionally bidirectional) GRU over ``x``, torch's
    gate order r, z, n with b_hn inside the reset gate:
    n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)), h_t = (1 - z) * n + z * h_{t-1}.

    Parameters
    ----------""" + _FORWARD_PARAMETERS.format(
    projection="", hx="array [L*D, B, H] ([L*D, H] unbatched)", final="h_n", P="H",
    final_doc="h_n like hx")


def forward_prepared(prepared: Prepared, x, hx=None, *, lengths=None, batch_first=False,
                     dropout=0.0, training=False, rng=None, need_backward=True, out=None):
    """The forward of any cell with the parameters already read and checked by
    ``prepare_weights`` (what the layers call: the per-call work is the input checks and the
    kernels). Arguments and results as rnn_forward's / lstm_forward's."""
    if lengths is None and out is None and not need_backward and not batch_first:
        result = _plain_inference(prepared, x, hx, training and dropout > 0)
        if result is not None:
            return result
    backend, structure = prepared.backend, prepared.structure
    arrays, dtype = backend.ARRAYS, structure.dtype
    on_host = not arrays.is_device_array(x)
    caller_x, caller_states = x, _state_tuple(structure, hx, "hx") if hx is not None else None
    x = _device_array(arrays, "input", x, dtype)
    states = _caller_states(arrays, structure, hx, "hx")
    _checks.check_forward_input(structure.cell.name, x, states, structure.input_size,
                                structure.num_states, structure.state_sizes, batch_first)
    layout = _layout_for(x, lengths, batch_first, on_host)
    sorted_shapes = structure.state_shapes(layout.batch)
    caller_shapes = (tuple((shape[0], shape[2]) for shape in sorted_shapes) if layout.unbatched
                     else sorted_shapes)
    output_shape = tuple(x.shape[:-1]) + (structure.layer_width,)
    if out is not None:
        _check_out(arrays, out, output_shape, dtype)
    batch_sizes = (equal_batch_sizes(layout.batch, layout.steps) if layout.packing is None
                   else layout.packing.batch_sizes)
    x_packed = _pack(arrays, x, layout)
    N = x_packed.shape[0]
    h0 = None if states is None else _states_in(arrays, states, layout, sorted_shapes)
    masks = None
    if training and dropout > 0 and structure.num_layers > 1:
        rng = np.random.default_rng() if rng is None else rng
        mask_shape = (structure.num_layers - 1, N, structure.layer_width)
        masks = arrays.asarray(dropout_masks(rng, mask_shape, dropout, dtype))

    direct = out is not None and not need_backward and layout.plain and _is_kernel_buffer(arrays, out)
    output = out.reshape(N, output_shape[-1]) if direct else arrays.empty((N, output_shape[-1]), dtype)
    h_n = tuple(arrays.empty(shape, dtype) for shape in sorted_shapes)
    saved = arrays.empty((structure.saved_size(N),), dtype) if need_backward else None
    layer_outputs, workspaces = (structure.saved_views(saved, N) if need_backward
                                 else (None, _scratch_workspaces(arrays, structure, N)))
    initial = (_new_states(arrays, structure, layout.batch, arrays.zeros) if h0 is None
               else structure.public(h0))
    _stack_forward(prepared, x_packed, initial, batch_sizes, masks, layer_outputs, workspaces,
                   output, structure.public(h_n))
    user_h_n = _states_out(arrays, h_n, layout, caller_shapes)
    user_output = _unpack(arrays, output, layout)
    context = None
    if need_backward:
        if out is None and layout.plain and not (on_host and arrays is not HostArrays):
            user_output = _copy(arrays, user_output)   # the caller's; `output` is the context's
        owned_h0 = None if h0 is None else structure.public(
            tuple(_owned(arrays, h, caller) for h, caller in zip(h0, caller_states)))
        context = Context(prepared.backend_name, structure, prepared.weights, layout,
                          _owned(arrays, x_packed, caller_x), owned_h0, batch_sizes, masks,
                          saved, output, output_shape, caller_shapes)
    if out is not None:
        if not direct:
            arrays.copy_into(out, user_output)
        user_output = out
    elif layout.on_host:
        user_output = arrays.to_host(user_output)
    if layout.on_host:
        user_h_n = _to_host_states(arrays, user_h_n)
    return user_output, structure.public(user_h_n), context


def _is_ready(a, native, shape):
    """A host array the kernels take as it is: this shape, native dtype, C-contiguous, aligned."""
    if type(a) is not np.ndarray or a.dtype != native or a.shape != shape:
        return False
    flags = a.flags
    return flags.c_contiguous and flags.aligned


def _ready_states(prepared, hx, out, lead, unbatched=False):
    """(h0, h_n, result): ``hx`` and ``out`` (None, one array, or LSTM's pair) as states of
    arrays [*lead, P|H] the kernels take as they are (h0 zeros for None, h_n fresh for None;
    ``out`` writeable and apart from hx), seen as [L, 1, P|H] when ``unbatched`` (lead is
    then (L,)), and ``result``, h_n as the caller gets it. None when an array needs the
    general path's checks and conversions. (Written out for one array and for the pair,
    checks inline: on the microsecond path every call counts.)"""
    native, sizes = prepared.native, prepared.state_sizes
    if prepared.paired:
        h0 = _ready_pair(hx, native, lead, sizes, np.zeros)
        h_n = _ready_pair(out, native, lead, sizes, np.empty)
        if h0 is None or h_n is None or (out is not None and not _writeable_apart(h_n, h0)):
            return None
        if unbatched:                            # one sequence: the kernels see a batch of 1
            return _batch_of_one(h0), _batch_of_one(h_n), h_n
        return h0, h_n, h_n
    shape = lead + sizes
    if hx is None:
        hx = np.zeros(shape, native)
    elif type(hx) is not np.ndarray or hx.dtype != native or hx.shape != shape:
        return None
    else:
        flags = hx.flags
        if not (flags.c_contiguous and flags.aligned):
            return None
    if out is None:
        h_n = np.empty(shape, native)
    elif _is_ready(out, native, shape) and out.flags.writeable and not np.may_share_memory(out, hx):
        h_n = out
    else:
        return None
    if unbatched:
        return hx.reshape(lead[0], 1, sizes[0]), h_n.reshape(lead[0], 1, sizes[0]), h_n
    return hx, h_n, h_n


def _ready_pair(states, native, lead, sizes, make):
    """LSTM's (h, c) for _ready_states: made by ``make`` when None, else checked."""
    h_shape, c_shape = lead + sizes[:1], lead + sizes[1:]
    if states is None:
        return make(h_shape, native), make(c_shape, native)
    if (type(states) is tuple and len(states) == 2 and _is_ready(states[0], native, h_shape)
            and _is_ready(states[1], native, c_shape)):
        return states
    return None


def _writeable_apart(targets, sources):
    """Whether every target array is writeable and shares no memory with any source."""
    for target in targets:
        if not target.flags.writeable:
            return False
        for source in sources:
            if np.may_share_memory(target, source):
                return False
    return True


def _batch_of_one(states):
    """LSTM's unbatched pair of states [L, F] as [L, 1, F] views."""
    return tuple(state.reshape(state.shape[0], 1, state.shape[1]) for state in states)


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
    states = _ready_states(prepared, hx, None, (prepared.num_states, B))
    if states is None:
        return None
    h0, h_n, result = states
    output = np.empty((T, B, prepared.width), native)
    workspaces = None
    if prepared.workspace_width:
        workspaces = (np.empty((T * B, prepared.workspace_width), native),) * prepared.num_states
    _stack_forward(prepared, x.reshape(T * B, I), h0, equal_batch_sizes(B, T), None, None,
                   workspaces, output.reshape(T * B, prepared.width), h_n)
    return output, result, None


def _is_kernel_buffer(arrays, a):
    """Whether the kernels can write ``a`` in place (else results are copied into it)."""
    if arrays is not HostArrays:
        return arrays.is_device_array(a) and a.is_c_contiguous()
    return type(a) is np.ndarray and a.flags.c_contiguous and a.flags.aligned and a.dtype.isnative


def _check_out(arrays, out, shape, dtype, what="out"):
    """``out=``: the output's shape and dtype, writeable (any strides: it may be copied into)."""
    if arrays.is_device_array(out):
        _checks.check_same_shape(what, out, shape)
        _checks.check_array_dtype(what, out, dtype)
        return
    if type(out) is not np.ndarray:
        raise TypeError(f"Expected {what} to be a NumPy array of shape {shape} and dtype "
                        f"{dtype}, got {type(out).__name__}")
    _checks.check_same_shape(what, out, shape)
    _checks.check_array_dtype(what, out, dtype)
    if not out.flags.writeable:
        raise ValueError(f"{what} is read-only, but fastrnn writes the output into it")


# ----------------------------------------------------------------------------- one step
def step_prepared(prepared: Prepared, input, hx=None, *, out=None, dropout: float = 0.0,
                  training: bool = False, rng: Optional[np.random.Generator] = None) -> States:
    """One time step of every layer of a one-direction stack (generation, online use).

    input [B, I] or [I]; hx: the state, [L, B, H] ([L, H]) for RNN and GRU, the pair
    ([L, B, P], [L, B, H]) for LSTM, or None for zeros; ``out``: like hx, buffers to write
    the new state into (they may be hx itself). Returns the new state, like hx; the top
    layer's output is its h[-1]. Dropout between layers as in a forward, in training."""
    if not (training and dropout > 0 and prepared.stacked):
        result = _ready_step(prepared, input, hx, out)
        if result is not None:
            return result
    structure = prepared.structure
    arrays, dtype = prepared.backend.ARRAYS, structure.dtype
    x = _device_array(arrays, "input", input, dtype)
    batch = _checks.check_step_input(structure.cell.name, x, structure.input_size)
    L, unbatched = structure.num_layers, x.ndim == 1
    shapes = structure.state_shapes(batch)
    caller_shapes = tuple((L, size) for size in structure.state_sizes) if unbatched else shapes
    h0 = _step_states(arrays, structure, hx, caller_shapes, shapes)
    targets = _step_targets(arrays, structure, out, caller_shapes, hx)
    h_n = tuple(arrays.empty(shape, dtype) if target is None else target.reshape(shape)
                for target, shape in zip(targets, shapes))
    public = structure.public
    masks = None
    if training and dropout > 0 and L > 1:
        masks = arrays.asarray(dropout_masks(rng, (L - 1, batch, structure.output_size), dropout, dtype))
    _stack_forward(prepared, arrays.contiguous(x).reshape(batch, structure.input_size),
                   public(h0), equal_batch_sizes(batch, 1), masks, None,
                   _scratch_workspaces(arrays, structure, batch),
                   arrays.empty((batch, structure.output_size), dtype), public(h_n))
    if out is None:
        return public(tuple(h.reshape(shape) for h, shape in zip(h_n, caller_shapes)))
    outs = _state_tuple(structure, out, "out")
    for target, result, destination in zip(targets, h_n, outs):
        if target is None:
            arrays.copy_into(destination, result.reshape(destination.shape))
    return out


def _ready_step(prepared, x, hx, out):
    """step_prepared when every array is ready for the kernels as it is (host, native,
    contiguous, right shapes, ``out`` writeable and apart from hx): only these checks, then
    the kernels. None when the call is not of this kind (the general path then checks and
    converts)."""
    if type(x) is not np.ndarray or x.ndim not in (1, 2) or not prepared.on_host:
        return None
    I, native, L = prepared.input_size, prepared.native, prepared.num_states   # L*D, D = 1
    unbatched = x.ndim == 1
    batch = 1 if unbatched else x.shape[0]
    if not _is_ready(x, native, (I,) if unbatched else (batch, I)):
        return None
    states = _ready_states(prepared, hx, out, (L,) if unbatched else (L, batch), unbatched)
    if states is None:
        return None
    h0, h_n, result = states
    workspaces = None
    if prepared.workspace_width:
        workspaces = (np.empty((batch, prepared.workspace_width), native),) * L
    _stack_forward(prepared, x.reshape(batch, I) if unbatched else x, h0,
                   equal_batch_sizes(batch, 1), None, None, workspaces,
                   np.empty((batch, prepared.width), native), h_n)
    return result


def _step_states(arrays, structure, hx, caller_shapes, shapes):
    """hx of a step, checked, as a tuple of contiguous arrays of ``shapes`` (zeros for None)."""
    if hx is None:
        return tuple(arrays.zeros(shape, structure.dtype) for shape in shapes)
    states = _caller_states(arrays, structure, hx, "hx")
    for index, (state, caller, shape) in enumerate(zip(states, caller_shapes, shapes)):
        if tuple(state.shape) != caller:
            raise _checks.ShapeError(_checks.hidden_size_message(index, structure.cell.paired,
                                                                 caller, state.shape))
    return tuple(arrays.contiguous(state).reshape(shape) for state, shape in zip(states, shapes))


def _step_targets(arrays, structure, out, caller_shapes, hx):
    """For each state, the buffer step's kernels write the new state into: the ``out`` array
    itself when they can write it in place and it is not hx's memory (the kernels read hx
    while writing), else None (a fresh buffer, copied into ``out`` afterwards)."""
    if out is None:
        return (None,) * len(caller_shapes)
    outs = _state_tuple(structure, out, "out")
    names = ("out",) if len(outs) == 1 else ("out[0]", "out[1]")
    states = () if hx is None else _state_tuple(structure, hx, "hx")
    targets = []
    for name, target, shape in zip(names, outs, caller_shapes):
        _check_out(arrays, target, shape, structure.dtype, name)
        usable = _is_kernel_buffer(arrays, target) and not any(
            arrays.is_device_array(target) or np.may_share_memory(target, state)
            for state in states)
        targets.append(target if usable else None)
    return tuple(targets)


# ----------------------------------------------------------------------------- backward
def zero_grads(weights: Mapping, arrays=HostArrays) -> dict:
    """A gradient buffer for each parameter, on the parameters' device."""
    return {name: arrays.zeros(w.shape, w.dtype) for name, w in weights.items()}


def _backward(context, grad_output, grad_h_n, grads, caller, cells):
    """The user-level backward of any cell (rnn_backward, lstm_backward, gru_backward)."""
    if not isinstance(context, Context):
        raise RuntimeError(f"{caller} needs the context of a forward run with "
                           "need_backward=True"
                           + ("" if context is None else f", got {type(context).__name__}"))
    structure, backend, layout = context.structure, context.backend, context.layout
    if structure.cell.name not in cells:
        raise RuntimeError(f"{caller} needs the context of a forward of the {cells[0]} cell, "
                           f"got one of the {structure.cell.name} cell")
    arrays, dtype = backend.ARRAYS, structure.dtype
    grad_output = _device_array(arrays, "grad_output", grad_output, dtype)
    _checks.check_same_shape("grad_output", grad_output, context.output_shape)
    sorted_shapes = structure.state_shapes(layout.batch)
    grad_finals = None
    if grad_h_n is not None:
        given = _state_tuple(structure, grad_h_n, "grad_h_n", members_may_be_none=True)
        names = ("grad_h_n",) if len(given) == 1 else ("grad_h_n[0]", "grad_h_n[1]")
        grad_finals = []
        for name, grad, caller_shape, shape in zip(names, given, context.state_shapes, sorted_shapes):
            if grad is None:
                grad_finals.append(None)
                continue
            grad = _device_array(arrays, name, grad, dtype)
            _checks.check_same_shape(name, grad, caller_shape)
            grad_finals += _states_in(arrays, (grad,), layout, (shape,))
        grad_finals = structure.public(tuple(grad_finals))
    if grads is None:
        grads = {name: arrays.zeros(w.shape, dtype)
                 for name, w in zip(structure.names(), context.weights)}
    grad_list = _gradient_buffers(arrays, grads, structure)
    grad_x, grad_hx, _ = backward_packed(
        backend, structure, context.x, context.hx, context.weights, context.batch_sizes,
        context.output, context.saved, context.masks, _pack(arrays, grad_output, layout),
        grad_finals, grad_list, validate=False)
    grad_x = _unpack(arrays, grad_x, layout)
    grad_hx = _states_out(arrays, _state_tuple(structure, grad_hx, "grad_hx"), layout,
                          context.state_shapes)
    if layout.on_host:
        grad_x, grad_hx = arrays.to_host(grad_x), _to_host_states(arrays, grad_hx)
    return grad_x, structure.public(grad_hx), grads


_BACKWARD_DOC = """Backpropagation through time for the {forward} call that made ``context``.

    ``grad_output`` is dL/d output and ``grad_h_n`` dL/d {final} (None: zero{pair_none}), in
    the layouts {forward} returned them; gradients past a sequence's length are ignored.
    Parameter gradients are ADDED into ``grads`` (a dict keyed like the weights, of their
    shapes and dtype, C-contiguous and writeable, on the weights' device; None: fresh zeros).
    Returns ``(grad_input, grad_hx, grads)``, grad_input in the input's layout (zero past each
    length), grad_hx in hx's ({grad_hx}).
    """


def rnn_backward(context: Context, grad_output: ArrayLike, grad_h_n: Optional[ArrayLike] = None,
                 grads: Optional[dict] = None) -> tuple[Any, Any, dict]:
    return _backward(context, grad_output, grad_h_n, grads, "rnn_backward", ("RNN",))


def lstm_backward(context: Context, grad_output: ArrayLike, grad_h_n: Optional[tuple] = None,
                  grads: Optional[dict] = None) -> tuple[Any, tuple, dict]:
    return _backward(context, grad_output, grad_h_n, grads, "lstm_backward", ("LSTM",))


def gru_backward(context: Context, grad_output: ArrayLike, grad_h_n: Optional[ArrayLike] = None,
                 grads: Optional[dict] = None) -> tuple[Any, Any, dict]:
    return _backward(context, grad_output, grad_h_n, grads, "gru_backward", ("GRU",))


rnn_backward.__doc__ = _BACKWARD_DOC.format(forward="rnn_forward", final="h_n", pair_none="",
                                            grad_hx="one array")
lstm_backward.__doc__ = _BACKWARD_DOC.format(
    forward="lstm_forward", final="(h_n, c_n)", pair_none="; either member of the pair may "
    "be None too", grad_hx="the pair (grad_h_0, grad_c_0)")
gru_backward.__doc__ = _BACKWARD_DOC.format(forward="gru_forward", final="h_n", pair_none="",
                                            grad_hx="one array")


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
