"""The stacked recurrent layer over PACKED sequences, ONE code for every cell (Elman, LSTM, GRU).

Why this module: everything a backend should not have to know is written here once for all
cells: the layer loop, the two directions writing the two halves of one [N, D*P] buffer (no
concatenation), dropout masks (given by the caller) between layers, the initial and final
states. What differs between cells is small and sits in a ``Cell`` record (gate count,
workspace width, whether the state is the pair (h, c), how to call the backend for one
layer-direction). The layout is the backend contract's (backends/__init__.py): a batch sorted
by decreasing length, ``batch_sizes`` per step. fastrnn.functional re-exports this level
(``Structure``, ``forward_packed``, ``backward_packed``, ...), which fastrnn.torch calls
directly; functional.py adds the user's arrays on top.

The cell is torch's ``mode`` ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU'), held by a ``Structure``
with the sizes and LSTM's ``proj_size`` P (P = H without a projection: the width of h and of
one direction's output). Weights travel as a list in torch's flat order (``parameter_names``:
per layer and direction weight_ih, weight_hh, [bias_ih, bias_hh], [weight_hr]), as torch's own
RNN ops take them. States are passed as the API passes them: h [L*D, B, H] for RNN and GRU,
the pair (h [L*D, B, P], c [L*D, B, H]) for LSTM.

What backward needs from forward (``saved``) is ONE flat array, so that a torch custom op can
return it as one tensor and a fake implementation can size it from the input shapes alone.
For N packed rows it holds

    saved_size(N) = N * ((L - 1) * D * P  +  L * D * G)     G = workspace columns per row:
                                                             0 (Elman), 5H (LSTM), 4H (GRU)
    [ layer outputs [L-1, N, D*P] | workspaces [L*D, N, G] ]  both C-contiguous blocks

the outputs of layers 0..L-2 before dropout, then the workspace of each layer-direction
(index layer * D + direction) in the backend contract's layout. ``Structure.saved_size`` and
``Structure.saved_views`` compute the size and carve the views; backward_packed takes any
C-contiguous array of that many elements (read flat). For the Elman RNN it is exactly the
[L-1, N, D*H] layer outputs (empty for one layer). A caller that must keep the two blocks as
separate arrays (fastrnn.torch: an operator's outputs may not share memory, and each block
must keep its batch axis for vmap) passes ``saved`` as the pair of them instead
(``Structure.saved_shapes``), to forward_packed to be written and to backward_packed.

Both entry points check every array they are given (shape, dtype, byte order, contiguity,
writeability) and that the backend has the cell's kernels, before any kernel runs, unless the
caller says it already did (``validate=False``).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Union

import numpy as np

from . import _checks
from .backends import BACKEND_MODULES, BackendUnavailable, HostArrays, load_backend

MODES = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}      # the Elman RNN's nonlinearity -> mode

States = Union[Any, tuple]      # one state array, or LSTM's pair (h, c)


# ----------------------------------------------------------------------------- cells
# One layer-direction of each cell, in the backend contract's argument order. A forward is
# BOUND once per layer-direction (the kernel, its parameters, direction and nonlinearity) and
# then called with what changes from call to call: on the microsecond path (a step of a small
# layer) a Python frame and a few subscripts per layer-direction are all the sharing costs.
# h0, h_n, grad_h_n and grad_h0 are the stack's states as the API passes them (h [L*D, B, H],
# or LSTM's pair (h, c)) and ``s`` picks this layer-direction's row block; ``w`` is
# (w_ih, w_hh, b_ih, b_hh[, w_hr]) as Structure.layer_weights returns it, ``g`` the matching
# gradient buffers.
def _bind_rnn_forward(kernel, s, w, reverse, relu):
    w_ih, w_hh, b_ih, b_hh = w

    def forward(x, h0, batch_sizes, out, h_n, workspace):
        kernel(x, h0[s], w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, relu, out, h_n[s])
    return forward


def _bind_lstm_forward(kernel, s, w, reverse, relu):
    w_ih, w_hh, b_ih, b_hh, w_hr = w

    def forward(x, h0, batch_sizes, out, h_n, workspace):
        kernel(x, h0[0][s], h0[1][s], w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse, out,
               h_n[0][s], h_n[1][s], workspace)
    return forward


def _bind_gru_forward(kernel, s, w, reverse, relu):
    w_ih, w_hh, b_ih, b_hh = w

    def forward(x, h0, batch_sizes, out, h_n, workspace):
        kernel(x, h0[s], w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, out, h_n[s], workspace)
    return forward


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
    bind_forward: Callable  # (kernel, state, weights, reverse, relu) -> one layer-direction's
                            # forward(x, h0, batch_sizes, out, h_n, workspace); see above
    backward: Callable     # one layer-direction backward

    def kernels(self, backend) -> tuple:
        """The backend's (forward, backward) kernels of this cell."""
        return (getattr(backend, self.entry + "_forward"),
                getattr(backend, self.entry + "_backward"))

    def runs_on(self, backend) -> bool:
        """Whether ``backend`` (a module) has this cell's kernels."""
        return (hasattr(backend, self.entry + "_forward")
                and hasattr(backend, self.entry + "_backward"))


_ELMAN = Cell("RNN", "rnn", 1, 0, False, _bind_rnn_forward, _rnn_layer_backward)
CELLS = {"RNN_TANH": _ELMAN, "RNN_RELU": _ELMAN,
         "LSTM": Cell("LSTM", "lstm", 4, 5, True, _bind_lstm_forward, _lstm_layer_backward),
         "GRU": Cell("GRU", "gru", 3, 4, False, _bind_gru_forward, _gru_layer_backward)}


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
        if self.cell.paired:
            return ((self.num_states, batch, self.output_size),
                    (self.num_states, batch, self.hidden_size))
        return ((self.num_states, batch, self.hidden_size),)

    def saved_size(self, rows: int) -> int:
        """The number of elements of ``saved`` for ``rows`` (N) packed rows (module header)."""
        return rows * ((self.num_layers - 1) * self.layer_width
                       + self.num_states * self.workspace_width)

    def saved_shapes(self, rows: int) -> tuple:
        """The shapes of saved's two blocks: layer outputs [L-1, N, D*P], workspaces
        [L*D, N, G]."""
        return ((self.num_layers - 1, rows, self.layer_width),
                (self.num_states, rows, self.workspace_width))

    def saved_views(self, saved, rows: int) -> tuple:
        """(layer outputs [L-1, N, D*P], workspaces [L*D, N, G]): views of ``saved``, a
        C-contiguous array of saved_size(rows) elements, or the pair of blocks itself; None
        for a part that is empty by structure (one layer; the Elman RNN's workspaces)."""
        if isinstance(saved, tuple):
            return (saved[0] if self.num_layers > 1 else None,
                    saved[1] if self.workspace_width else None)
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


# ----------------------------------------------------------------------------- packed level
def check_cell_kernels(backend, cell: Cell) -> None:
    """BackendUnavailable (saying what to use instead) when the backend module ``backend``
    has no kernels for ``cell``."""
    if not cell.runs_on(backend):
        name = {f"fastrnn.backends.{module}": name
                for name, module in BACKEND_MODULES.items()}.get(backend.__name__, backend.__name__)
        raise BackendUnavailable(f"backend {name!r} has no {cell.name} kernels "
                                 f"({cell.entry}_forward/{cell.entry}_backward) in this build; "
                                 "use backend='numpy' (the reference) or 'auto'")


def _layer_arguments(structure, weights, backend):
    """For each layer, for each direction: (its forward, bound to the backend's kernel and its
    parameters (see Cell.bind_forward), its state index, the columns of the layer's [N, D*P]
    output it writes, or None for all of them)."""
    D, P, cell = structure.directions, structure.output_size, structure.cell
    kernel = cell.kernels(backend)[0]
    return tuple(
        tuple((cell.bind_forward(kernel, layer * D + direction,
                                 structure.layer_weights(weights, layer, direction),
                                 bool(direction), structure.relu),
               layer * D + direction,
               None if D == 1 else slice(direction * P, (direction + 1) * P))
              for direction in range(D))
        for layer in range(structure.num_layers))


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
    layers: tuple                # see _layer_arguments
    paired: bool                 # whether states are LSTM's pairs


def forward_packed(backend, structure: Structure, x, hx, weights, batch_sizes: np.ndarray,
                   masks=None, need_saved: bool = True, *, output=None, h_n=None,
                   saved=None, validate: bool = True):
    """The stacked layer (any cell) over packed sequences.

    x [N, I] C-contiguous; hx: the initial state in sorted order, C-contiguous, or None
    (zeros): h [L*D, B, H] for RNN and GRU, the pair (h [L*D, B, P], c [L*D, B, H]) for LSTM;
    weights: the parameters in torch's flat order (``structure.names()``), C-contiguous;
    batch_sizes [T] int64 (see backends/__init__.py); masks [L-1, N, D*P] multipliers for the
    outputs of layers 0..L-2 (dropout, already scaled), or None. ``output`` [N, D*P] and
    ``h_n`` (like hx; C-contiguous, writeable): buffers to write the results into instead of
    fresh ones; ``saved``: the pair of blocks (see Structure.saved_shapes; C-contiguous,
    writeable; None for a block that is empty by structure) to write what backward needs into,
    instead of one fresh flat array. ``validate=False`` skips the checks of every argument (for
    callers that made these arrays themselves).
    Returns ``(output [N, D*P], h_n (like hx), saved)``: ``saved`` is the 1-D array of
    ``structure.saved_size(N)`` elements that backward_packed needs (module header; the pair
    given as ``saved``, if one was), or None when ``need_saved`` is False.
    """
    arrays = backend.ARRAYS
    if validate:
        N, B = _check_packed(arrays, structure, x, hx, weights, batch_sizes, masks)
        if output is not None:
            _check_packed_array(arrays, "output", output, (N, structure.layer_width),
                                structure.dtype, writeable=True)
        if h_n is not None:
            _check_states(arrays, structure, "h_n", h_n, B, writeable=True)
        if need_saved and saved is not None:
            _check_saved(arrays, structure, saved, N, writeable=True)
        check_cell_kernels(backend, structure.cell)
    else:
        N, B = x.shape[0], (int(batch_sizes[0]) if len(batch_sizes) else 0)
    dtype = structure.dtype
    h0 = _new_states(structure, B, arrays.zeros) if hx is None else hx
    finals = _new_states(structure, B, arrays.empty) if h_n is None else h_n
    output = arrays.empty((N, structure.layer_width), dtype) if output is None else output
    if not need_saved:
        saved = None
    elif saved is None:
        saved = arrays.empty((structure.saved_size(N),), dtype)
    layer_outputs, workspaces = (structure.saved_views(saved, N) if need_saved
                                 else (None, _scratch_workspaces(arrays, structure, N)))
    stack = _Stack(backend, _layer_arguments(structure, weights, backend), structure.cell.paired)
    _stack_forward(stack, x, h0, batch_sizes, masks, layer_outputs, workspaces, output, finals)
    return output, finals, saved


def _new_states(structure, batch, make):
    """Fresh states for ``batch`` sequences made by ``make`` (arrays.zeros, arrays.empty)."""
    shapes, dtype = structure.state_shapes(batch), structure.dtype
    if len(shapes) == 2:
        return make(shapes[0], dtype), make(shapes[1], dtype)
    return make(shapes[0], dtype)


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
    layers = stack.layers
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
        for forward, state, columns in directions:
            if run:
                forward(layer_input, h0, batch_sizes,
                        layer_output if columns is None else layer_output[:, columns], h_n,
                        None if workspaces is None else workspaces[state])
        layer_input = layer_output if masks is None or layer == last else arrays.multiply(layer_output, masks[layer])
    return output


def backward_packed(backend, structure: Structure, x, hx, weights, batch_sizes: np.ndarray,
                    output, saved, masks, grad_output, grad_h_n=None, grads=None, *,
                    validate: bool = True):
    """Backpropagation through time for one forward_packed call (same arguments, plus its
    ``output`` and ``saved``: any C-contiguous array of saved_size(N) elements, read flat, or
    the pair of its blocks; None only when that size is 0). grad_output [N, D*P]; grad_h_n
    like hx, or None (zeros; for LSTM either member of the pair may be None too); ``grads``:
    arrays in the weights' order that parameter gradients are ADDED into (None: fresh zeros);
    they must be C-contiguous, writeable and of the weights' shapes and dtype.
    Returns ``(grad_x [N, I], grad_hx (like hx), grads)``."""
    arrays = backend.ARRAYS
    if validate:
        _check_backward_packed(arrays, structure, x, hx, weights, batch_sizes, output, saved,
                               masks, grad_output, grad_h_n, grads)
        check_cell_kernels(backend, structure.cell)
    N, B = x.shape[0], (int(batch_sizes[0]) if len(batch_sizes) else 0)
    dtype = structure.dtype
    h0 = _new_states(structure, B, arrays.zeros) if hx is None else hx
    if grad_h_n is None:
        grad_finals = _new_states(structure, B, arrays.zeros)
    elif structure.cell.paired:               # either member may be None: zeros
        grad_finals = tuple(arrays.zeros(shape, dtype) if grad is None else grad
                            for grad, shape in zip(grad_h_n, structure.state_shapes(B)))
    else:
        grad_finals = grad_h_n
    if grads is None:
        grads = [arrays.zeros(w.shape, dtype) for w in weights]
    grad_h0 = _new_states(structure, B, arrays.zeros)
    layer_outputs, workspaces = (structure.saved_views(saved, N) if saved is not None
                                 else (None, None))
    cell, D, P = structure.cell, structure.directions, structure.output_size
    L = structure.num_layers
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


def _check_saved(arrays, structure, saved, rows, writeable=False):
    """``saved``: a C-contiguous array of saved_size(rows) elements (any shape), the pair of
    its blocks (Structure.saved_shapes; None for one that is empty by structure), or None
    when that size is 0."""
    size = structure.saved_size(rows)
    if isinstance(saved, tuple):
        if len(saved) != 2:
            raise ValueError(f"Expected saved to be one array or the pair (layer outputs, "
                             f"workspaces), got a tuple of {len(saved)}")
        needed = (structure.num_layers > 1, structure.workspace_width > 0)
        for name, block, shape, need in zip(("saved[0]", "saved[1]"), saved,
                                            structure.saved_shapes(rows), needed):
            if need and block is None:
                raise ValueError(f"Expected {name} of shape {shape}, got None")
            if need:
                _check_packed_array(arrays, name, block, shape, structure.dtype, writeable)
        return
    if saved is None:
        if size:
            raise ValueError(f"backward_packed needs what forward_packed saved ({size} "
                             "elements): run forward_packed with need_saved=True")
        return
    if int(np.prod(saved.shape)) != size:
        raise _checks.ShapeError(f"Expected saved to hold {size} elements (saved_size of "
                                 f"{rows} rows), got shape {tuple(saved.shape)}")
    _check_packed_array(arrays, "saved", saved, tuple(saved.shape), structure.dtype, writeable)
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
