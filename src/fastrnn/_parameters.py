"""``ParameterStore``: what every fastrnn layer with parameters shares.

Why a base class: fastrnn.RNN and the fastrnn.nn layers follow one convention, so that one
optimizer loop serves them all: parameters in a dict with torch's names, reachable as
attributes; ``named_parameters()`` returns the layer's own live arrays (optimizers update them
in place); ``grads`` has the same keys and backward ADDS into it until ``zero_grad()``;
``state_dict()`` returns host NumPy copies; ``load_state_dict()`` checks every name and shape
before it changes anything. Assigning a parameter (``layer.weight_hh_l0 = array``) is a
``load_state_dict`` of that one name: the same checks, copied into the layer's own array, so
every holder of it (an optimizer, the prepared kernels' arguments) sees the new values.

Why the rest is here too, once for every layer:
- a parameter VERSION, bumped whenever parameters change through the layer (assignment,
  loading, a device move, a fastrnn.nn optimizer step), so backward can refuse to mix a
  forward's activations with changed parameters instead of silently computing wrong gradients;
- what backward needs is kept PER THREAD (the forward this thread ran last), and a re-entrant
  lock serialises the calls that touch the layer's state (forward, backward, loading, gradient
  accumulation): one layer may be called from several threads; its calls then run one at a
  time, each thread's backward pairs with that thread's forward;
- copies and pickles (``copy.deepcopy``, ``pickle``, multiprocessing's spawn) work at any
  point: the lock and the thread-local store are rebuilt, and the calling thread's kept
  forward travels with the copy.

A subclass calls ``super().__init__()`` first, then sets ``dtype``, ``_params``, ``grads`` and
``_arrays`` (the array operations of the device its parameters live on).
"""
from __future__ import annotations

import threading
from collections import namedtuple
from typing import Any, Mapping

import numpy as np

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])

_UNPICKLED = ("_lock", "_local")


class ParameterStore:
    def __init__(self) -> None:
        object.__setattr__(self, "_lock", threading.RLock())
        object.__setattr__(self, "_local", threading.local())
        object.__setattr__(self, "_version", 0)

    # ----------------------------------------------------------------- attribute access
    def __getattr__(self, name):
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in self.__dict__.get("_params", {}):
            self.load_state_dict({name: value}, strict=False)
        else:
            object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if name in self.__dict__.get("_params", {}):
            raise AttributeError(f"cannot delete parameter {name!r} of {type(self).__name__}: "
                                 "the layer's structure is fixed when it is built")
        object.__delattr__(self, name)

    # ----------------------------------------------------------------- parameters
    def named_parameters(self) -> list[tuple[str, Any]]:
        """(name, array) pairs in torch's order; the arrays are the layer's own (not copies)."""
        return list(self._params.items())

    def parameters(self) -> list:
        return list(self._params.values())

    def zero_grad(self) -> None:
        with self._lock:
            for grad in self.grads.values():
                self._arrays.copy_into(grad, self._arrays.zeros(grad.shape, grad.dtype))

    def state_dict(self) -> dict[str, np.ndarray]:
        """{name: host NumPy copy} in torch's names and order."""
        return {name: np.array(self._arrays.to_host(p)) for name, p in self._params.items()}

    def load_state_dict(self, state_dict: Mapping, strict: bool = True) -> IncompatibleKeys:
        """Copy parameters in from anything np.asarray accepts (a torch state_dict works):
        every name, shape and dtype is checked before anything changes (no partial load);
        values are cast to the layer's dtype and copied into the layer's own arrays."""
        missing = [name for name in self._params if name not in state_dict]
        unexpected = [name for name in state_dict if name not in self._params]
        if strict and (missing or unexpected):
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                               f"missing key(s) {missing}, unexpected key(s) {unexpected}")
        incoming = {name: self._checked_value(name, state_dict[name], tuple(current.shape))
                    for name, current in self._params.items() if name in state_dict}
        with self._lock:
            for name, value in incoming.items():        # all checked first: no partial load
                self._arrays.copy_into(self._params[name], self._arrays.asarray(value))
            self._parameters_changed()
        return IncompatibleKeys(missing, unexpected)

    def _checked_value(self, name, value, shape):
        """``value`` as a host array of the layer's dtype, after load_state_dict's checks."""
        try:
            value = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"parameter {name!r}: expected an array of shape {shape}, got "
                            f"{type(value).__name__} ({exc})") from None
        if value.dtype.kind not in "fiub":
            raise TypeError(f"parameter {name!r}: expected real numbers of shape {shape}, got "
                            f"an array of dtype {value.dtype}")
        if value.shape != shape:
            raise RuntimeError(f"size mismatch for {name}: copying a param with shape "
                               f"{value.shape} from checkpoint, the shape in current "
                               f"model is {shape}.")
        return value.astype(self.dtype)

    def _parameters_changed(self) -> None:
        """Called whenever the parameters change through the layer: the kept forward (if
        any) was computed with the old values, so its backward must be refused."""
        object.__setattr__(self, "_version", self._version + 1)

    # ----------------------------------------------------------------- kept for backward
    def _keep_for_backward(self, value) -> None:
        """What this thread's next backward needs (None: nothing)."""
        self._local.kept = None if value is None else (value, self._version)

    def _kept_for_backward(self, what: str):
        """What this thread's last forward kept; a clear error when there is nothing, or when
        the parameters changed since that forward."""
        kept = getattr(self._local, "kept", None)
        if kept is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a forward pass first: "
                               f"call the layer on {what} (outside fastrnn.no_grad(), in this "
                               "thread) before calling backward()")
        value, version = kept
        if version != self._version:
            raise RuntimeError(f"one of the parameters of this {type(self).__name__} needed for "
                               "gradient computation has been modified since the forward pass "
                               "(by an optimizer step, load_state_dict or an assignment); run "
                               "the forward pass again before backward()")
        return value

    # ----------------------------------------------------------------- copies and pickles
    def __getstate__(self):
        state = {k: v for k, v in self.__dict__.items() if k not in _UNPICKLED}
        state["_kept"] = getattr(self._local, "kept", None)
        return state

    def __setstate__(self, state):
        state = dict(state)
        kept = state.pop("_kept", None)
        ParameterStore.__init__(self)
        self.__dict__.update(state)
        self._local.kept = kept
