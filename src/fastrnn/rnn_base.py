"""``RNNBase``: what fastrnn.RNN, fastrnn.LSTM and fastrnn.GRU share (torch's RNNBase is the model).

Why one base: the three layers differ only in their cell (torch's ``mode``), so the parameters
(torch's names, shapes, order and initialisation), their accumulated gradients, the dropout
generator, train/eval, forward/backward/step, the backend choice, persistence and the checks
live here once; ``rnn.py``, ``lstm.py`` and ``gru.py`` add only their constructor signature,
their settings (RNN's ``nonlinearity``, LSTM's ``proj_size``) and their docs. Parameters live
on the device of the backend in use (host memory for 'numpy' and 'cpu'); ``state_dict()``
always returns host NumPy copies.

Why it is thin: the maths lives in the backends and the stacking in ``functional``; this class
only owns state and checks constructor arguments. Why it is fast to call: configuration and
parameters are checked when they CHANGE (the constructor, a setter, ``load_state_dict``, an
assignment, a backend move), and the result (``functional.Prepared``) is kept; a call then
only checks its own arrays and runs the kernels. ``step`` is the shortest path of all, for
generation: one time step of every layer.

What a layer guarantees (see ParameterStore for how): arrays it returns are the caller's to
change; backward refuses to run after the parameters changed since its forward; one layer may
be used from several threads (calls are serialised, each thread's backward pairs with its own
forward); it deep-copies and pickles at any point. ``save(path)`` writes exactly ``path`` and
``load`` checks a whole file (and that it holds this kind of layer) before it allocates
anything.
"""
from __future__ import annotations

import inspect
import json
import os
import zipfile
from typing import Any, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _checks
from ._parameters import ParameterStore
from .backends import load_backend
from .functional import (CELLS, Prepared, States, _backward, _plain_inference, _ready_step,
                         check_cell_kernels, forward_prepared, parameter_shapes,
                         prepare_weights, resolve_backend_name, step_prepared, zero_grads)
from .grad_mode import is_grad_enabled

_CONFIG_KEY = "__fastrnn_config__"
_CELL_KEY = "cell"               # in the saved config: which layer class wrote the file
_MAX_CONFIG_BYTES = 1 << 16
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
_SHARED_KEYS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                "bidirectional", "dtype", "backend")
_NOT_IN_REPR = ("self", "input_size", "hidden_size", "dtype", "backend", "seed")


def _checked_batch_first(value):
    if not isinstance(value, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(value).__name__}")
    return value


def _checked_dropout(value):
    _checks.check_dropout(value)
    return float(value)


class Setting:
    """A constructor argument that may change after construction: checked (and converted) by
    ``check`` on assignment, stored as ``_<name>``; the prepared call state is redone."""

    def __init__(self, check, doc):
        self.check, self.__doc__ = check, doc

    def __set_name__(self, owner, name):
        self.private = "_" + name

    def __get__(self, layer, owner=None):
        return self if layer is None else getattr(layer, self.private)

    def __set__(self, layer, value):
        value = self.check(value)
        with layer._lock:
            object.__setattr__(layer, self.private, value)
            layer._prepared = None


class RNNBase(ParameterStore):
    """The layer every cell shares. Subclasses set ``_MODE`` (torch's mode of the cell; RNN's
    depends on its nonlinearity, see ``mode``) and ``_EXTRA_KEYS`` (their own constructor
    arguments, saved with the layer), and call ``_build`` from their constructor.

    ``output, h_n = layer(x, hx=None, lengths=None)`` runs it; ``h = layer.step(x_t, h)``
    runs one time step (generation); ``grad_x, grad_hx = layer.backward(grad_output,
    grad_h_n)`` backpropagates through this thread's most recent forward and adds every
    parameter's gradient into ``layer.grads`` (cleared by ``zero_grad()``). The state is one
    array h [L*D, B, H] for RNN and GRU, the pair (h [L*D, B, P], c [L*D, B, H]) for LSTM
    (P = proj_size, or H without a projection). Parameter access, state_dict and zero_grad
    come from ParameterStore.
    """
    _MODE = "RNN_TANH"
    _EXTRA_KEYS: tuple = ()

    def _build(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
               bidirectional, proj_size, dtype, backend, seed):
        """The constructor's work (torch's checks, in its order, then the parameters)."""
        ParameterStore.__init__(self)
        _checks.check_constructor(input_size, hidden_size, num_layers, dropout, bias, batch_first)
        if "proj_size" in self._EXTRA_KEYS:
            _checks.check_proj_size(proj_size, hidden_size)
        # plain Python values (np.int64(4) works too, and config() stays JSON-serialisable)
        self._input_size, self._hidden_size = int(input_size), int(hidden_size)
        self._num_layers, self._bias, self._proj_size = int(num_layers), bool(bias), int(proj_size)
        self._bidirectional, self._dtype = bool(bidirectional), _checks.check_dtype_name(dtype)
        self._batch_first, self._dropout = bool(batch_first), float(dropout)
        self._backend = self._checked_backend(backend)
        self.training = True
        self._rng = np.random.default_rng(seed)
        self._arrays = load_backend("numpy").ARRAYS
        self._params = self._initial_parameters()
        self.grads = zero_grads(self._params, self._arrays)
        self._prepared: Optional[Prepared] = None

    # ----------------------------------------------------------------- configuration
    input_size = property(lambda self: self._input_size, doc="Features of each input step (fixed).")
    hidden_size = property(lambda self: self._hidden_size, doc="Features of the state (fixed).")
    num_layers = property(lambda self: self._num_layers, doc="Stacked layers (fixed).")
    bias = property(lambda self: self._bias, doc="Whether the layer has biases (fixed).")
    bidirectional = property(lambda self: self._bidirectional, doc="Two directions (fixed).")
    proj_size = property(lambda self: self._proj_size,
                         doc="Width of LSTM's projected h (0: none; always 0 for RNN, GRU).")
    dtype = property(lambda self: self._dtype, doc="'float32' or 'float64' (fixed).")

    batch_first = Setting(_checked_batch_first,
                          "Whether input and output are [B, T, F]; may be changed.")
    dropout = Setting(_checked_dropout,
                      "Dropout between layers in training; may be changed (checked).")

    @property
    def backend(self) -> str:
        """'auto', 'cpu', 'numpy' or 'cuda'; may be changed (checked: the backend must run
        here and have this cell's kernels)."""
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        value = self._checked_backend(value)
        with self._lock:
            self._backend, self._prepared = value, None

    def _checked_backend(self, backend):
        """``backend``, after checking that it runs here and has this cell's kernels: an
        error now, not at the first call ('auto' picks one that has them)."""
        if backend != "auto":
            check_cell_kernels(load_backend(backend), CELLS[self._MODE])
        return backend

    @property
    def mode(self) -> str:
        """torch's name of the cell: 'RNN_TANH', 'RNN_RELU', 'LSTM' or 'GRU'."""
        return self._MODE

    # ----------------------------------------------------------------- parameters
    @classmethod
    def _shapes(cls, input_size, hidden_size, num_layers, bidirectional, bias, proj_size=0):
        return parameter_shapes(input_size, hidden_size, num_layers, bidirectional, bias,
                                mode=cls._MODE, proj_size=proj_size)

    def _initial_parameters(self):
        """Every parameter uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)], as torch does."""
        bound = 1.0 / np.sqrt(self._hidden_size)
        shapes = self._shapes(self._input_size, self._hidden_size, self._num_layers,
                              self._bidirectional, self._bias, self._proj_size)
        return {name: self._rng.uniform(-bound, bound, shape).astype(self._dtype)
                for name, shape in shapes.items()}

    # ----------------------------------------------------------------- modes and devices
    def train(self, mode: bool = True) -> "RNNBase":
        """Training mode (dropout between layers) when ``mode``, else evaluation mode."""
        self.training = bool(mode)
        return self

    def eval(self) -> "RNNBase":
        """Evaluation mode: no dropout (``train(False)``)."""
        return self.train(False)

    def _place_parameters(self, backend):
        """Move parameters and gradients to ``backend``'s device, if they are elsewhere."""
        if backend.ARRAYS is self._arrays:
            return
        move = lambda a: backend.ARRAYS.contiguous(backend.ARRAYS.asarray(self._arrays.to_host(a)))
        self._params = {name: move(p) for name, p in self._params.items()}
        self.grads = {name: move(g) for name, g in self.grads.items()}
        self._arrays = backend.ARRAYS
        self._parameters_changed()

    def _prepared_for(self, input) -> Prepared:
        """The parameters checked and laid out for the backend that runs ``input``; redone
        only when the backend or a setting changed (a setting resets ``_prepared``; with a
        fixed backend the callers reuse it without calling this)."""
        name = self._backend
        if name == "auto":
            name = resolve_backend_name("auto", input, self.mode)
        prepared = self._prepared
        if prepared is None or prepared.backend_name != name:
            self._place_parameters(load_backend(name))
            prepared = self._prepared = prepare_weights(self._params, self.mode, name)
        return prepared

    # ----------------------------------------------------------------- forward and backward
    def forward(self, input: ArrayLike, hx: Optional[States] = None,
                lengths: Optional[ArrayLike] = None, *,
                out: Optional[np.ndarray] = None) -> tuple[np.ndarray, States]:
        """Run the layer over a whole sequence batch.

        input : [T, B, I] ([B, T, I] with batch_first, [T, I] unbatched), the layer's dtype.
        hx : the initial state, or None for zeros: [L*D, B, H] ([L*D, H] unbatched) for RNN
            and GRU; for LSTM the pair (h_0 [L*D, B, P], c_0 [L*D, B, H]).
        lengths : None, or one length per sequence (ints in 1..T, any order) for a padded
            batch of ragged sequences: output is zero past each length, the final state is
            each sequence's state after its own last step.
        out : optional array of output's shape and dtype to write the output into.

        Returns ``(output, h_n)``: output [T, B, D*P] (input's layout; P = H but for a
        projected LSTM), h_n like hx (LSTM: the pair (h_n, c_n)). Under
        ``fastrnn.no_grad()`` nothing is kept for backward.
        """
        with self._lock:
            prepared = self._prepared
            if prepared is None or prepared.backend_name != self._backend:   # else: as kept
                prepared = self._prepared_for(input)
            if not is_grad_enabled():
                self._local.kept = None          # nothing to backpropagate after this call
                if out is None and not self._batch_first:
                    result = _plain_inference(prepared, input, hx,
                                              self.training and self._dropout > 0, lengths)
                    if result is not None:
                        return result[:2]
            output, h_n, context = forward_prepared(
                prepared, input, hx, lengths=lengths, batch_first=self._batch_first,
                dropout=self._dropout, training=self.training, rng=self._rng,
                need_backward=is_grad_enabled(), out=out)
            self._keep_for_backward(context)
            return output, h_n

    __call__ = forward

    def step(self, input: ArrayLike, hx: Optional[States] = None, *,
             out: Optional[States] = None) -> States:
        """One time step of every layer: ``h = layer.step(x_t, h)``, for generation and online use.

        input : [B, I], or [I] for one sequence. hx : the state, or None for zeros: [L, B, H]
        ([L, H]) for RNN and GRU, the pair ([L, B, P], [L, B, H]) for LSTM. out : optional
        buffers like hx to write the new state into (they may be hx itself). Returns the new
        state, like hx; the top layer's output is its ``h[-1]``. The same maths as
        ``layer(input[None], hx)`` (dropout too, in training), but nothing is kept for
        backward. A bidirectional layer cannot step: its reverse direction starts from the END
        of the sequence, so call the layer on the whole sequence instead.
        """
        with self._lock:
            if self._bidirectional:
                raise ValueError(f"step() runs one time step forward; a bidirectional "
                                 f"{type(self).__name__}'s reverse direction needs the whole "
                                 "sequence first: call the layer on the sequence instead")
            prepared = self._prepared
            if prepared is None or prepared.backend_name != self._backend:   # else: as kept
                prepared = self._prepared_for(input)
            if not (self.training and self._dropout > 0 and self._num_layers > 1):
                result = _ready_step(prepared, input, hx, out)      # the microsecond path
                if result is not None:
                    return result
            return step_prepared(prepared, input, hx, out=out, dropout=self._dropout,
                                 training=self.training, rng=self._rng)

    def backward(self, grad_output: ArrayLike,
                 grad_h_n: Optional[States] = None) -> tuple[np.ndarray, States]:
        """``(grad_input, grad_hx)`` for this thread's most recent forward; adds every
        parameter's gradient into ``self.grads``. grad_output is dL/d output (output's shape),
        grad_h_n dL/d h_n (h_n's shape; for LSTM the pair (dL/dh_n, dL/dc_n), either may be
        None), or None for zero. grad_hx is shaped like hx (LSTM: a pair)."""
        with self._lock:
            context = self._kept_for_backward("an input")
            name = type(self).__name__
            grad_x, grad_hx, _ = _backward(context, grad_output, grad_h_n, self.grads,
                                           f"{name}.backward", (context.structure.cell.name,))
            return grad_x, grad_hx

    @property
    def _context(self):
        """The functional Context this thread's last forward kept (None if none)."""
        kept = getattr(self._local, "kept", None)
        return None if kept is None else kept[0]

    # ----------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild the layer (plain JSON types)."""
        return {key: getattr(self, key) for key in _SHARED_KEYS + self._EXTRA_KEYS}

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Parameters and constructor arguments in one ``.npz`` file (no pickle), written to
        exactly ``path`` (NumPy's habit of appending '.npz' is not followed: the file is
        where ``load(path)`` will look)."""
        config = {**self.config(), _CELL_KEY: type(self).__name__}
        with open(path, "wb") as file:
            np.savez(file, **self.state_dict(), **{_CONFIG_KEY: np.array(json.dumps(config))})

    @classmethod
    def load(cls, path: Union[str, os.PathLike], **overrides: Any) -> "RNNBase":
        """Rebuild a layer saved by ``save`` (from exactly ``path``); keyword arguments
        override saved settings. The whole file is checked before anything is allocated:
        the layer class, the config against the arrays present, every array's shape and
        dtype against the config, so a damaged or crafted file is a ValueError, never a huge
        allocation."""
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ValueError(f"{path} is not a .npz file written by fastrnn's save") from None
        with archive:
            headers = _npz_headers(archive, path)
            config = {**_read_config(cls, archive, headers, path), **overrides}
            _check_saved_arrays(cls, config, headers, path)
            layer = cls(**config)
            layer.load_state_dict({name: _read_member(archive, name) for name in headers
                                   if name != _CONFIG_KEY})
        return layer

    def __repr__(self):
        signature = inspect.signature(type(self).__init__).parameters.values()
        extras = [f"{p.name}={getattr(self, p.name)!r}" for p in signature
                  if p.name not in _NOT_IN_REPR and getattr(self, p.name) != p.default]
        extras += [f"dtype={self.dtype!r}"] if self.dtype != "float32" else []
        sizes = [str(self.input_size), str(self.hidden_size)]
        return f"{type(self).__name__}({', '.join(sizes + extras)})"


# --------------------------------------------------------------------------------- loading
def _npz_headers(archive, path):
    """{array name: (shape, dtype)} of every member, read from the .npy headers only."""
    headers = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise ValueError(f"{path} is not a fastrnn checkpoint: unexpected member {info.filename!r}")
        with archive.open(info) as member:
            try:
                version = np.lib.format.read_magic(member)
                read_header = _HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = read_header(member)
                header_bytes = member.tell()
            except (ValueError, OSError) as exc:
                raise ValueError(f"{path}: member {info.filename!r} is not a .npy array ({exc})") from None
        if dtype.hasobject or info.file_size != header_bytes + int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: member {info.filename!r} is damaged (its size does not "
                             f"match its header: {shape} {dtype})")
        headers[info.filename[:-4]] = (shape, dtype)
    return headers


def _read_member(archive, name):
    with archive.open(name + ".npy") as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_config(cls, archive, headers, path):
    """The saved constructor arguments, checked for type, range and layer class (nothing
    allocated). Files written before LSTM and GRU existed name no class: they hold an RNN."""
    if _CONFIG_KEY not in headers:
        raise ValueError(f"{path} was not written by fastrnn's save (no {_CONFIG_KEY})")
    shape, dtype = headers[_CONFIG_KEY]
    if shape != () or dtype.kind != "U" or dtype.itemsize > _MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {_CONFIG_KEY} must be one string of at most "
                         f"{_MAX_CONFIG_BYTES // 4} characters, got {shape} {dtype}")
    try:
        config = json.loads(str(_read_member(archive, _CONFIG_KEY)))
    except ValueError as exc:
        raise ValueError(f"{path}: {_CONFIG_KEY} is not valid JSON ({exc})") from None
    keys = _SHARED_KEYS + cls._EXTRA_KEYS
    saved_class = config.pop(_CELL_KEY, "RNN") if isinstance(config, dict) else cls.__name__
    if saved_class != cls.__name__:
        raise ValueError(f"{path} holds a fastrnn.{saved_class!s:.20}, not a fastrnn."
                         f"{cls.__name__}: load it with fastrnn.{saved_class!s:.20}.load")
    if not isinstance(config, dict) or not set(config) <= set(keys):
        raise ValueError(f"{path}: {_CONFIG_KEY} must be an object with keys among "
                         f"{list(keys)}, got {config!r:.200}")
    return config


def _check_saved_arrays(cls, config, headers, path):
    """The arrays present are exactly the parameters ``config`` describes, with their shapes:
    the number of parameters is checked before their names are even listed."""
    sizes = {key: config.get(key, default) for key, default in
             (("input_size", None), ("hidden_size", None), ("num_layers", 1),
              ("bias", True), ("bidirectional", False), ("dropout", 0.0), ("proj_size", 0))}
    try:
        _checks.check_constructor(sizes["input_size"], sizes["hidden_size"], sizes["num_layers"],
                                  sizes["dropout"], sizes["bias"])
        if "proj_size" in cls._EXTRA_KEYS:
            _checks.check_proj_size(sizes["proj_size"], sizes["hidden_size"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid saved configuration: {exc}") from None
    arrays = {name: header for name, header in headers.items() if name != _CONFIG_KEY}
    per_layer = ((2 if sizes["bidirectional"] else 1)
                 * ((4 if sizes["bias"] else 2) + (1 if sizes["proj_size"] else 0)))
    if sizes["num_layers"] * per_layer != len(arrays):
        raise ValueError(f"{path}: the configuration describes {sizes['num_layers']} layer(s) "
                         f"({sizes['num_layers'] * per_layer} arrays), the file holds "
                         f"{len(arrays)} arrays")
    expected = cls._shapes(sizes["input_size"], sizes["hidden_size"], sizes["num_layers"],
                           bool(sizes["bidirectional"]), sizes["bias"], sizes["proj_size"])
    for name, shape in expected.items():
        if name not in arrays:
            raise ValueError(f"{path}: parameter {name!r} {list(shape)} is missing")
        found_shape, dtype = arrays[name]
        if found_shape != shape or dtype.kind != "f":
            raise ValueError(f"{path}: parameter {name!r} should be a float array of shape "
                             f"{shape}, the file holds {found_shape} {dtype}")

