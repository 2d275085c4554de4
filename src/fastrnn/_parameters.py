"""``ParameterStore``: what every fastrnn layer with parameters shares.

Why a base class: fastrnn.RNN and the fastrnn.nn layers follow one convention, so that one
optimizer loop serves them all: parameters in a dict with torch's names, reachable as
attributes; ``named_parameters()`` returns the layer's own live arrays (optimizers update them
in place); ``grads`` has the same keys and backward ADDS into it until ``zero_grad()``;
``state_dict()`` returns host NumPy copies; ``load_state_dict()`` checks every name and shape
before it changes anything. A subclass sets ``dtype``, ``_params``, ``grads`` and ``_arrays``
(the array operations of the device its parameters live on).
"""
from collections import namedtuple

import numpy as np

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class ParameterStore:
    def __getattr__(self, name):
        params = self.__dict__.get("_params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def named_parameters(self):
        """(name, array) pairs in torch's order; the arrays are the layer's own (not copies)."""
        return list(self._params.items())

    def parameters(self):
        return list(self._params.values())

    def zero_grad(self):
        for grad in self.grads.values():
            self._arrays.copy_into(grad, self._arrays.zeros(grad.shape, grad.dtype))

    def state_dict(self):
        """{name: host NumPy copy} in torch's names and order."""
        return {name: np.array(self._arrays.to_host(p)) for name, p in self._params.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy parameters in from anything np.asarray accepts (a torch state_dict works)."""
        missing = [name for name in self._params if name not in state_dict]
        unexpected = [name for name in state_dict if name not in self._params]
        if strict and (missing or unexpected):
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}: "
                               f"missing key(s) {missing}, unexpected key(s) {unexpected}")
        incoming = {}
        for name, current in self._params.items():
            if name in state_dict:
                value = np.asarray(state_dict[name])
                if value.shape != tuple(current.shape):
                    raise RuntimeError(f"size mismatch for {name}: copying a param with shape "
                                       f"{value.shape} from checkpoint, the shape in current "
                                       f"model is {tuple(current.shape)}.")
                incoming[name] = value.astype(self.dtype)
        for name, value in incoming.items():        # all checked first: no partial load
            self._arrays.copy_into(self._params[name], self._arrays.asarray(value))
        return IncompatibleKeys(missing, unexpected)
