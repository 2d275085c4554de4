"""``fastrnn.RNN``: the public layer, a NumPy twin of ``torch.nn.RNN``.

Why it is thin: the maths lives in the backends and the stacking in ``functional``; this class
only owns state, the parameters (torch's names, shapes, order and initialisation), their
accumulated gradients, the dropout generator, the train/eval mode and the context of the last
forward, and it checks constructor arguments. Parameters live on the device of the backend in
use (host memory for 'numpy' and 'cpu'); ``state_dict()`` always returns host NumPy copies.

Why it is fast to call: configuration and parameters are checked when they CHANGE (the
constructor, a setter, ``load_state_dict``, an assignment, a backend move), and the result
(``functional.Prepared``) is kept; a call then only checks its own arrays and runs the
kernels. ``step`` is the shortest path of all, for generation: one time step of every layer.

What the layer guarantees (see ParameterStore for how): arrays it returns are the caller's to
change; backward refuses to run after the parameters changed since its forward; one layer may
be used from several threads (calls are serialised, each thread's backward pairs with its own
forward); it deep-copies and pickles at any point. ``save(path)`` writes exactly ``path`` and
``load`` checks a whole file before it allocates anything.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _checks
from ._parameters import ParameterStore
from .backends import HostArrays, load_backend
from .functional import (Prepared, _check_out, _device_array, _is_kernel_buffer, _plain_inference,
                         _stack_forward,
                         dropout_masks, forward_prepared, parameter_shapes,
                         prepare_weights, resolve_backend_name, rnn_backward, zero_grads)
from .grad_mode import is_grad_enabled
from .packing import equal_batch_sizes

_CONFIG_KEY = "__fastrnn_config__"
_MAX_CONFIG_BYTES = 1 << 16
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
_CONSTRUCTOR_KEYS = ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias",
                     "batch_first", "dropout", "bidirectional", "dtype", "backend")


def _checked_nonlinearity(value):
    _checks.check_nonlinearity(value)
    return value


def _checked_batch_first(value):
    if not isinstance(value, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(value).__name__}")
    return value


def _checked_dropout(value):
    _checks.check_dropout(value)
    return float(value)


def _checked_backend(backend):
    if backend != "auto":
        load_backend(backend)          # unknown or unavailable: an error now, not later
    return backend


class _Setting:
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


class RNN(ParameterStore):
    """Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, like torch.nn.RNN.

    Parameters
    ----------
    input_size, hidden_size, num_layers : int (> 0). Fixed once built (read-only attributes).
    nonlinearity : 'tanh' or 'relu'.
    bias : bool, whether the layer has ``bias_ih_l*``/``bias_hh_l*``. Fixed once built.
    batch_first : bool, input and output as [B, T, F] instead of [T, B, F] (h_n stays [L*D, B, H]).
    dropout : float in [0, 1], dropout on the outputs of all layers but the last, in training.
    bidirectional : bool, a reverse direction per layer (D = 2). Fixed once built.
    dtype : 'float32' (default) or 'float64'; inputs must have it. Fixed once built.
    backend : 'auto' (default: 'cuda' for device arrays, 'cpu' otherwise), 'cpu' (compiled
        kernels), 'numpy' (the pure-NumPy reference) or 'cuda' (Numba).
    seed : int or None, seeds the initialisation and the dropout masks.

    ``output, h_n = rnn(x, hx=None, lengths=None)`` runs it; ``h = rnn.step(x_t, h)`` runs one
    time step (generation); ``grad_x, grad_hx = rnn.backward(grad_output, grad_h_n)``
    backpropagates through this thread's most recent forward and adds every parameter's
    gradient into ``rnn.grads`` (cleared by ``zero_grad()``). Parameter access, state_dict and
    zero_grad come from ParameterStore.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, dtype: str = "float32",
                 backend: str = "auto", seed: Optional[int] = None):
        super().__init__()
        _checks.check_nonlinearity(nonlinearity)
        _checks.check_constructor(input_size, hidden_size, num_layers, dropout, bias, batch_first)
        # plain Python values (np.int64(4) works too, and config() stays JSON-serialisable)
        self._input_size, self._hidden_size = int(input_size), int(hidden_size)
        self._num_layers, self._bias = int(num_layers), bool(bias)
        self._bidirectional, self._dtype = bool(bidirectional), _checks.check_dtype_name(dtype)
        self._nonlinearity, self._batch_first, self._dropout = nonlinearity, bool(batch_first), float(dropout)
        self._backend = _checked_backend(backend)
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
    dtype = property(lambda self: self._dtype, doc="'float32' or 'float64' (fixed).")

    nonlinearity = _Setting(_checked_nonlinearity, "'tanh' or 'relu'; may be changed (checked).")
    batch_first = _Setting(_checked_batch_first, "Whether input and output are [B, T, F]; may be changed.")
    dropout = _Setting(_checked_dropout, "Dropout between layers in training; may be changed (checked).")
    backend = _Setting(_checked_backend, "'auto', 'cpu', 'numpy' or 'cuda'; may be changed (checked).")

    # ----------------------------------------------------------------- parameters
    def _parameter_shapes(self):
        return parameter_shapes(self._input_size, self._hidden_size, self._num_layers,
                                self._bidirectional, self._bias)

    def _initial_parameters(self):
        """Every parameter uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)], as torch does."""
        bound = 1.0 / np.sqrt(self._hidden_size)
        return {name: self._rng.uniform(-bound, bound, shape).astype(self._dtype)
                for name, shape in self._parameter_shapes().items()}

    # ----------------------------------------------------------------- modes and devices
    def train(self, mode: bool = True) -> "RNN":
        """Training mode (dropout between layers) when ``mode``, else evaluation mode."""
        self.training = bool(mode)
        return self

    def eval(self) -> "RNN":
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
        only when the backend or the nonlinearity changed."""
        name = self._backend if self._backend != "auto" else resolve_backend_name("auto", input)
        prepared = self._prepared
        if prepared is None or prepared.backend_name != name:
            self._place_parameters(load_backend(name))
            prepared = self._prepared = prepare_weights(self._params, self._nonlinearity, name)
        return prepared

    # ----------------------------------------------------------------- forward and backward
    def forward(self, input: ArrayLike, hx: Optional[ArrayLike] = None,
                lengths: Optional[ArrayLike] = None, *,
                out: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Run the RNN over a whole sequence batch.

        input : [T, B, I] ([B, T, I] with batch_first, [T, I] unbatched), the layer's dtype.
        hx : [L*D, B, H] ([L*D, H] unbatched) initial states, or None for zeros.
        lengths : None, or one length per sequence (ints in 1..T, any order) for a padded
            batch of ragged sequences: output is zero past each length, h_n is each
            sequence's state after its own last step.
        out : optional array of output's shape and dtype to write the output into.

        Returns ``(output, h_n)``: output [T, B, D*H] (input's layout), h_n like hx. Under
        ``fastrnn.no_grad()`` nothing is kept for backward.
        """
        with self._lock:
            prepared = self._prepared_for(input)
            if not is_grad_enabled():
                self._local.kept = None          # nothing to backpropagate after this call
                if lengths is None and out is None and not self._batch_first:
                    result = _plain_inference(prepared, input, hx, self.training and self._dropout > 0)
                    if result is not None:
                        return result[:2]
            output, h_n, context = forward_prepared(
                prepared, input, hx, lengths=lengths, batch_first=self._batch_first,
                dropout=self._dropout, training=self.training, rng=self._rng,
                need_backward=is_grad_enabled(), out=out)
            self._keep_for_backward(context)
            return output, h_n

    __call__ = forward

    def step(self, input: ArrayLike, hx: Optional[ArrayLike] = None, *,
             out: Optional[np.ndarray] = None) -> np.ndarray:
        """One time step of every layer: ``h = rnn.step(x_t, h)``, for generation and online use.

        input : [B, I], or [I] for one sequence; hx : [L, B, H] ([L, H]), or None for zeros.
        out : optional array of hx's shape and dtype to write the new state into (it may be
            hx itself). Returns the new state h [L, B, H] ([L, H]); the top layer's output is
            ``h[-1]``. The same maths as ``rnn(input[None], hx)`` (dropout too, in training),
            but nothing is kept for backward. A bidirectional layer cannot step: its reverse
            direction starts from the END of the sequence, so call the layer on the whole
            sequence instead.
        """
        with self._lock:
            if self._bidirectional:
                raise ValueError("step() runs one time step forward; a bidirectional RNN's "
                                 "reverse direction needs the whole sequence first: call the "
                                 "layer on the sequence instead")
            prepared = self._prepared_for(input)
            if not (self.training and self._dropout > 0 and self._num_layers > 1):
                result = _ready_step(prepared, input, hx, out)
                if result is not None:
                    return result
            arrays, dtype = prepared.backend.ARRAYS, self._dtype
            x = _device_array(arrays, "input", input, dtype)
            L, H = self._num_layers, self._hidden_size
            batch, state_shape = _step_shapes(x, self._input_size, L, H)
            h0 = _step_state(arrays, hx, state_shape, dtype)
            target = _step_target(arrays, out, state_shape, dtype, hx)
            h_n = arrays.empty(state_shape, dtype) if target is None else target
            masks = None
            if self.training and self._dropout > 0 and L > 1:
                masks = arrays.asarray(dropout_masks(self._rng, (L - 1, batch, H), self._dropout, dtype))
            _stack_forward(prepared.backend, prepared.structure.relu, prepared.layers,
                           arrays.contiguous(x).reshape(batch, self._input_size),
                           h0.reshape(L, batch, H), equal_batch_sizes(batch, 1), masks, None,
                           arrays.empty((batch, H), dtype), h_n.reshape(L, batch, H))
            if out is None:
                return h_n
            if target is None:
                arrays.copy_into(out, h_n)
            return out

    def backward(self, grad_output: ArrayLike,
                 grad_h_n: Optional[ArrayLike] = None) -> tuple[np.ndarray, np.ndarray]:
        """``(grad_input, grad_hx)`` for this thread's most recent forward; adds every
        parameter's gradient into ``self.grads``. grad_output is dL/d output (output's shape),
        grad_h_n dL/d h_n (h_n's shape, or None for zero)."""
        with self._lock:
            context = self._kept_for_backward("an input")
            grad_x, grad_hx, _ = rnn_backward(context, grad_output, grad_h_n, self.grads)
            return grad_x, grad_hx

    @property
    def _context(self):
        """The functional Context this thread's last forward kept (None if none)."""
        kept = getattr(self._local, "kept", None)
        return None if kept is None else kept[0]

    # ----------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild the layer (plain JSON types)."""
        return dict(input_size=self._input_size, hidden_size=self._hidden_size,
                    num_layers=self._num_layers, nonlinearity=self._nonlinearity, bias=self._bias,
                    batch_first=self._batch_first, dropout=self._dropout,
                    bidirectional=self._bidirectional, dtype=self._dtype, backend=self._backend)

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Parameters and constructor arguments in one ``.npz`` file (no pickle), written to
        exactly ``path`` (NumPy's habit of appending '.npz' is not followed: the file is
        where ``RNN.load(path)`` will look)."""
        with open(path, "wb") as file:
            np.savez(file, **self.state_dict(), **{_CONFIG_KEY: np.array(json.dumps(self.config()))})

    @classmethod
    def load(cls, path: Union[str, os.PathLike], **overrides: Any) -> "RNN":
        """Rebuild a layer saved by ``save`` (from exactly ``path``); keyword arguments
        override saved settings. The whole file is checked before anything is allocated:
        the config against the arrays present, every array's shape and dtype against the
        config, so a damaged or crafted file is a ValueError, never a huge allocation."""
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ValueError(f"{path} is not a .npz file written by fastrnn.RNN.save") from None
        with archive:
            headers = _npz_headers(archive, path)
            config = {**_read_config(archive, headers, path), **overrides}
            _check_saved_arrays(config, headers, path)
            layer = cls(**config)
            layer.load_state_dict({name: _read_member(archive, name) for name in headers
                                   if name != _CONFIG_KEY})
        return layer

    def __repr__(self):
        defaults = RNN.__init__.__defaults__
        names = ("num_layers", "nonlinearity", "bias", "batch_first", "dropout", "bidirectional")
        extras = [f"{n}={getattr(self, n)!r}" for n, d in zip(names, defaults) if getattr(self, n) != d]
        extras += [f"dtype={self.dtype!r}"] if self.dtype != "float32" else []
        return f"RNN({', '.join([str(self.input_size), str(self.hidden_size)] + extras)})"


# --------------------------------------------------------------------------------- step helpers
def _is_ready(a, native, shape):
    """A host array the kernels take as it is: this shape, native dtype, C-contiguous, aligned."""
    if type(a) is not np.ndarray or a.dtype != native or a.shape != shape:
        return False
    flags = a.flags
    return flags.c_contiguous and flags.aligned


def _ready_step(prepared, x, hx, out):
    """step() when every array is ready for the kernels as it is (host, native, contiguous,
    right shapes, ``out`` writeable and apart from hx): only these checks, then the kernels.
    None when the call is not of this kind (the general path then checks and converts)."""
    if type(x) is not np.ndarray or x.ndim not in (1, 2) or not prepared.on_host:
        return None
    L, I, H = prepared.num_states, prepared.input_size, prepared.hidden_size   # L*D, D = 1
    batch = 1 if x.ndim == 1 else x.shape[0]
    shape = (L, H) if x.ndim == 1 else (L, batch, H)
    if not _is_ready(x, prepared.native, (I,) if x.ndim == 1 else (batch, I)):
        return None
    if hx is None:
        hx = np.zeros(shape, prepared.native)
    elif not _is_ready(hx, prepared.native, shape):
        return None
    if out is None:
        h_n = np.empty(shape, prepared.native)
    elif _is_ready(out, prepared.native, shape) and out.flags.writeable and not np.may_share_memory(out, hx):
        h_n = out
    else:
        return None
    if x.ndim == 1:                              # one sequence: the kernels see a batch of 1
        x, hx, states = x.reshape(1, I), hx.reshape(L, 1, H), h_n.reshape(L, 1, H)
    else:
        states = h_n
    _stack_forward(prepared.backend, prepared.relu, prepared.layers, x, hx,
                   equal_batch_sizes(batch, 1), None, None, np.empty((batch, H), prepared.native),
                   states)
    return h_n


def _step_shapes(x, input_size, num_layers, hidden_size):
    """(batch, state shape) of a step input [B, I] or [I]."""
    if x.ndim not in (1, 2):
        raise _checks.ShapeError(f"RNN.step: Expected input to be 1D [input_size] or 2D "
                                 f"[batch, input_size], got {x.ndim}D tensor instead")
    if x.shape[-1] != input_size:
        raise _checks.ShapeError(f"input.size(-1) must be equal to input_size. "
                                 f"Expected {input_size}, got {x.shape[-1]}")
    if x.ndim == 1:
        return 1, (num_layers, hidden_size)
    return x.shape[0], (num_layers, x.shape[0], hidden_size)


def _step_state(arrays, hx, shape, dtype):
    """hx of a step, checked, as a contiguous array of ``shape`` (zeros when None)."""
    if hx is None:
        return arrays.zeros(shape, dtype)
    hx = _device_array(arrays, "hx", hx, dtype)
    if tuple(hx.shape) != shape:
        raise _checks.ShapeError(f"Expected hidden size {shape}, got {list(hx.shape)}")
    return arrays.contiguous(hx)


def _step_target(arrays, out, shape, dtype, hx):
    """The buffer step's kernels write the new state into: ``out`` itself when they can write
    it in place and it is not hx's memory (the kernels read hx while writing), else None
    (a fresh buffer, copied into ``out`` afterwards)."""
    if out is None:
        return None
    _check_out(arrays, out, shape, dtype)
    if not _is_kernel_buffer(arrays, out):
        return None
    if hx is not None and (arrays.is_device_array(out) or np.may_share_memory(out, hx)):
        return None
    return out


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


def _read_config(archive, headers, path):
    """The saved constructor arguments, checked for type and range (nothing allocated)."""
    if _CONFIG_KEY not in headers:
        raise ValueError(f"{path} was not written by fastrnn.RNN.save (no {_CONFIG_KEY})")
    shape, dtype = headers[_CONFIG_KEY]
    if shape != () or dtype.kind != "U" or dtype.itemsize > _MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: {_CONFIG_KEY} must be one string of at most "
                         f"{_MAX_CONFIG_BYTES // 4} characters, got {shape} {dtype}")
    try:
        config = json.loads(str(_read_member(archive, _CONFIG_KEY)))
    except ValueError as exc:
        raise ValueError(f"{path}: {_CONFIG_KEY} is not valid JSON ({exc})") from None
    if not isinstance(config, dict) or not set(config) <= set(_CONSTRUCTOR_KEYS):
        raise ValueError(f"{path}: {_CONFIG_KEY} must be an object with keys among "
                         f"{list(_CONSTRUCTOR_KEYS)}, got {config!r:.200}")
    return config


def _check_saved_arrays(config, headers, path):
    """The arrays present are exactly the parameters ``config`` describes, with their shapes:
    the number of parameters is checked before their names are even listed."""
    sizes = {key: config.get(key, default) for key, default in
             (("input_size", None), ("hidden_size", None), ("num_layers", 1),
              ("bias", True), ("bidirectional", False), ("dropout", 0.0))}
    try:
        _checks.check_constructor(sizes["input_size"], sizes["hidden_size"], sizes["num_layers"],
                                  sizes["dropout"], sizes["bias"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: invalid saved configuration: {exc}") from None
    arrays = {name: header for name, header in headers.items() if name != _CONFIG_KEY}
    per_layer = (2 if sizes["bidirectional"] else 1) * (4 if sizes["bias"] else 2)
    if sizes["num_layers"] * per_layer != len(arrays):
        raise ValueError(f"{path}: the configuration describes {sizes['num_layers']} layer(s) "
                         f"({sizes['num_layers'] * per_layer} arrays), the file holds "
                         f"{len(arrays)} arrays")
    expected = parameter_shapes(sizes["input_size"], sizes["hidden_size"], sizes["num_layers"],
                                bool(sizes["bidirectional"]), sizes["bias"])
    for name, shape in expected.items():
        if name not in arrays:
            raise ValueError(f"{path}: parameter {name!r} {list(shape)} is missing")
        found_shape, dtype = arrays[name]
        if found_shape != shape or dtype.kind != "f":
            raise ValueError(f"{path}: parameter {name!r} should be a float array of shape "
                             f"{shape}, the file holds {found_shape} {dtype}")
