"""The recurrent layers on plain arrays: what the layers (fastrnn.RNN, LSTM, GRU) and users call.

Why here: everything about the caller's arrays lives in this one place, for every cell:
checks in torch's words, ``batch_first`` and unbatched input, ``lengths`` (sorting and
packing, the caller's order restored), drawing the dropout masks, picking the backend, the
LSTM's state pair. Below it is the stack over PACKED sequences (``_stack.py``, re-exported
here: ``Structure``, ``forward_packed``, ``backward_packed``, ``parameter_names``, ...; its
header describes the cells, the weights' order and what forward saves for backward), which
fastrnn.torch calls directly.

Entry points: ``rnn_forward`` / ``lstm_forward`` / ``gru_forward`` and their backwards
(``rnn_backward``, ``lstm_backward``, ``gru_backward``), one per cell so that each documents
its own state; one shared implementation (``_forward``, ``forward_prepared``, ``_backward``).
Parameters are passed as a mapping with torch's names (``weight_ih_l0``, ...,
``bias_hh_l1_reverse``, ``weight_hr_l0``); the layers, directions, biases and projection are
read off the names, so a torch state_dict works as it is. ``prepare_weights`` does the reading
and checking once; a caller that keeps its weights (the layers) keeps the ``Prepared`` result
and pays for it only when they change. ``step_prepared`` runs one time step (generation).

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
from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike

from . import _checks
from ._stack import (CELLS, MODES, Cell, States, Structure, _check_packed_array,
                     _layer_arguments, _new_states, _scratch_workspaces, _stack_forward,
                     _state_tuple, backend_runs, backward_packed, check_batch_sizes,
                     check_cell_kernels, check_mode, check_parameters, forward_packed,
                     parameter_names, parameter_shapes, read_structure)
from .backends import HostArrays, is_cuda_array, load_backend
from .packing import equal_batch_sizes, plan_packing, runs_every_step

__all__ = [  # the packed level (see _stack.py) and the caller's level
    "CELLS", "MODES", "Cell", "States", "Structure", "backend_runs", "backward_packed",
    "check_batch_sizes", "check_cell_kernels", "check_mode", "check_parameters",
    "forward_packed", "parameter_names",
    "parameter_shapes", "read_structure", "Prepared", "prepare_weights", "resolve_backend_name",
    "dropout_masks", "Context", "rnn_forward", "lstm_forward", "gru_forward", "forward_prepared",
    "step_prepared", "rnn_backward", "lstm_backward", "gru_backward", "zero_grads"]


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


class Prepared:
    """Parameters checked once and laid out for one backend: what every call needs from them.

    ``weights`` are in torch's flat order, C-contiguous, aligned, native byte order, on the
    backend's device; they are the caller's own arrays whenever those already qualify (so a
    later in-place update of a parameter is seen), copies otherwise. ``layers`` holds each
    layer's kernel arguments ready to pass (see _layer_arguments), so that a call does no
    bookkeeping of its own. Pickles by its three defining fields."""
    __slots__ = ("structure", "backend_name", "weights", "backend", "layers", "native",
                 "on_host", "input_size", "num_states", "width", "relu", "stacked", "paired",
                 "state_sizes", "workspace_width")

    def __init__(self, structure: Structure, backend_name: str, weights: tuple):
        self.structure, self.backend_name, self.weights = structure, backend_name, tuple(weights)
        self.backend = load_backend(backend_name)
        check_cell_kernels(self.backend, structure.cell)
        self.layers = _layer_arguments(structure, self.weights, self.backend)
        # what every call reads, as plain attributes (a call's checks are a few comparisons)
        self.native = _checks.NATIVE_DTYPES[structure.dtype]
        self.on_host = self.backend.ARRAYS is HostArrays
        self.input_size, self.num_states = structure.input_size, structure.num_states
        self.width, self.stacked = structure.layer_width, structure.num_layers > 1
        self.relu = structure.relu
        self.paired, self.state_sizes = structure.cell.paired, structure.state_sizes
        self.workspace_width = structure.workspace_width

    def __reduce__(self):
        return Prepared, (self.structure, self.backend_name, self.weights)


def prepare_weights(weights: Mapping, mode: str = "RNN_TANH", backend: str = "cpu") -> Prepared:
    """Read and check a parameter mapping once (see read_structure) for the cell ``mode`` and
    ``backend`` (a name, not 'auto'). CPU tensors (a torch state_dict) are read as the NumPy
    arrays they share memory with."""
    if isinstance(weights, Mapping):
        weights = {name: _host_view(value) for name, value in weights.items()}
    structure = read_structure(weights, mode)
    arrays = load_backend(backend).ARRAYS
    flat = tuple(_device_array(arrays, f"parameter {name!r}", weights[name], structure.dtype,
                               contiguous=True) for name in structure.names())
    return Prepared(structure, backend, flat)


def _host_view(value):
    """A CPU torch tensor (anything with ``__array__`` that is not an ndarray or a device
    array) as the NumPy array it shares memory with; anything else as it is."""
    if type(value) is np.ndarray or is_cuda_array(value) or not hasattr(value, "__array__"):
        return value
    return np.asarray(value)


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


def dropout_masks(rng: Optional[np.random.Generator], shape: tuple, p: float,
                  dtype: str) -> np.ndarray:
    """Inverted dropout: zero with probability p, scaled by 1/(1-p) elsewhere (torch's rule),
    so that the expected value of ``mask * y`` is ``y``. rng None: a fresh, unseeded one."""
    if p >= 1:
        return np.zeros(shape, dtype=dtype)
    keep = (np.random.default_rng() if rng is None else rng).random(shape) >= p
    return (keep / (1 - p)).astype(dtype)


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
    result = []          # loops rather than comprehensions here: these run on every call
    for state, shape in zip(states, shapes):
        result.append(_reorder_states(arrays, arrays.contiguous(state).reshape(shape), order))
    return tuple(result)


def _states_out(arrays, states, layout, shapes):
    """Sorted [L*D, B, *] arrays (a tuple) in the caller's order and shapes."""
    order = None if layout.packing is None else layout.packing.unsorted_indices
    result = []
    for state, shape in zip(states, shapes):
        result.append(_reorder_states(arrays, state, order).reshape(shape))
    return tuple(result)


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
    if lengths is not None and not runs_every_step(lengths, batch, steps):
        packing = plan_packing(lengths, batch, steps)
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
    return tuple(map(arrays.to_host, states))


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
    projection=" and the projection\n        (weight_hr_l*, [P, H])",
    hx="the pair (h_0 [L*D, B, P], c_0 [L*D, B, H]) ([L*D, P], [L*D, H]\n        unbatched; P = H "
       "without a projection)", final="(h_n, c_n)", P="P",
    final_doc="\n    (h_n, c_n) like hx")

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
    if out is None and not need_backward and not batch_first:
        result = _plain_inference(prepared, x, hx, training and dropout > 0, lengths)
        if result is not None:
            return result
    backend, structure = prepared.backend, prepared.structure
    arrays, dtype = backend.ARRAYS, structure.dtype
    on_host = not arrays.is_device_array(x)
    caller_x, caller_states = x, _state_tuple(structure, hx, "hx") if hx is not None else None
    x = _device_array(arrays, "input", x, dtype)
    states = _caller_states(arrays, structure, hx, "hx")
    _checks.check_input(structure.cell.name, x, states, structure.input_size,
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
        mask_shape = (structure.num_layers - 1, N, structure.layer_width)
        masks = arrays.asarray(dropout_masks(rng, mask_shape, dropout, dtype))

    direct = out is not None and not need_backward and layout.plain and _is_kernel_buffer(arrays, out)
    output = out.reshape(N, output_shape[-1]) if direct else arrays.empty((N, output_shape[-1]), dtype)
    h_n = _state_tuple(structure, _new_states(structure, layout.batch, arrays.empty), "h_n")
    saved = arrays.empty((structure.saved_size(N),), dtype) if need_backward else None
    layer_outputs, workspaces = (structure.saved_views(saved, N) if need_backward
                                 else (None, _scratch_workspaces(arrays, structure, N)))
    initial = (_new_states(structure, layout.batch, arrays.zeros) if h0 is None
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
            tuple(map(functools.partial(_owned, arrays), h0, caller_states)))
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


def _plain_inference(prepared, x, hx, dropping, lengths=None):
    """The common inference call, if it is one: host arrays the kernels take as they are
    (native dtype, aligned, C-contiguous), time-major, equal lengths (no ``lengths``, or all
    of them T), no dropout. Only the
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
    if lengths is not None and not runs_every_step(lengths, B, T):
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
        shape = (L - 1, batch, structure.output_size)
        masks = arrays.asarray(dropout_masks(rng, shape, dropout, dtype))
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
        for name, grad, caller_shape, shape in zip(names, given, context.state_shapes,
                                                    sorted_shapes):
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
    forward="lstm_forward", final="(h_n, c_n)", pair_none=";\n    either member of the pair "
    "may be None too", grad_hx="the pair (grad_h_0, grad_c_0)")
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
