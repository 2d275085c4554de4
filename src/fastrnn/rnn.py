"""``fastrnn.RNN``: the public layer, a NumPy twin of ``torch.nn.RNN``.

Why it is thin: the maths lives in the backends and the stacking in ``functional``; this class
only owns state, the parameters (torch's names, shapes, order and initialisation), their
accumulated gradients, the dropout generator, the train/eval mode and the context of the last
forward, and it checks constructor arguments. Parameters live on the device of the backend in
use (host memory for 'numpy' and 'cpu'); ``state_dict()`` always returns host NumPy copies.
"""
import json

import numpy as np

from . import _checks
from ._parameters import ParameterStore
from .backends import load_backend
from .functional import (parameter_shapes, resolve_backend_name, rnn_backward, rnn_forward,
                         zero_grads)
from .grad_mode import is_grad_enabled

_CONFIG_KEY = "__fastrnn_config__"


class RNN(ParameterStore):
    """Elman RNN, ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, like torch.nn.RNN.

    ``output, h_n = rnn(x, hx)`` runs it; ``grad_x, grad_hx = rnn.backward(grad_output,
    grad_h_n)`` backpropagates through the most recent forward and adds every parameter's
    gradient into ``rnn.grads`` (cleared by ``zero_grad()``). Parameter access, state_dict
    and zero_grad come from ParameterStore.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype="float32",
                 backend="auto", seed=None):
        _checks.check_nonlinearity(nonlinearity)
        _checks.check_constructor(input_size, hidden_size, num_layers, dropout, bias, batch_first)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bool(bidirectional)
        self.dtype = _checks.check_dtype_name(dtype)
        if backend != "auto":
            load_backend(backend)          # unknown or unavailable: an error now, not later
        self.backend = backend
        self.training = True
        self._rng = np.random.default_rng(seed)
        self._arrays = load_backend("numpy").ARRAYS
        self._params = self._initial_parameters()
        self.grads = zero_grads(self._params, self._arrays)
        self._context = None

    # ----------------------------------------------------------------- parameters
    def _parameter_shapes(self):
        return parameter_shapes(self.input_size, self.hidden_size, self.num_layers,
                                self.bidirectional, self.bias)

    def _initial_parameters(self):
        """Every parameter uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)], as torch does."""
        bound = 1.0 / np.sqrt(self.hidden_size)
        return {name: self._rng.uniform(-bound, bound, shape).astype(self.dtype)
                for name, shape in self._parameter_shapes().items()}

    # ----------------------------------------------------------------- modes and devices
    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def _place_parameters(self, backend):
        """Move parameters and gradients to ``backend``'s device, if they are elsewhere."""
        if backend.ARRAYS is self._arrays:
            return
        move = lambda a: backend.ARRAYS.contiguous(backend.ARRAYS.asarray(self._arrays.to_host(a)))
        self._params = {name: move(p) for name, p in self._params.items()}
        self.grads = {name: move(g) for name, g in self.grads.items()}
        self._arrays, self._context = backend.ARRAYS, None

    # ----------------------------------------------------------------- forward and backward
    def forward(self, input, hx=None, lengths=None):
        """``(output, h_n)``; under ``fastrnn.no_grad()`` nothing is kept for backward.
        ``lengths``: one length per sequence (any order) for a padded batch of ragged sequences."""
        backend_name = resolve_backend_name(self.backend, input)
        self._place_parameters(load_backend(backend_name))
        output, h_n, self._context = rnn_forward(
            input, self._params, hx, lengths=lengths, nonlinearity=self.nonlinearity, batch_first=self.batch_first,
            dropout=self.dropout, training=self.training, rng=self._rng, backend=backend_name,
            need_backward=is_grad_enabled())
        return output, h_n

    __call__ = forward

    def backward(self, grad_output, grad_h_n=None):
        """``(grad_input, grad_hx)`` for the most recent forward; adds into ``self.grads``."""
        if self._context is None:
            raise RuntimeError("RNN.backward() needs a forward pass first: call the layer on an "
                               "input (outside fastrnn.no_grad()) before calling backward()")
        grad_x, grad_hx, _ = rnn_backward(self._context, grad_output, grad_h_n, self.grads)
        return grad_x, grad_hx

    # ----------------------------------------------------------------- persistence
    def config(self):
        """The constructor arguments, enough to rebuild the layer."""
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, nonlinearity=self.nonlinearity, bias=self.bias,
                    batch_first=self.batch_first, dropout=self.dropout,
                    bidirectional=self.bidirectional, dtype=self.dtype, backend=self.backend)

    def save(self, path):
        """Parameters and constructor arguments in one ``.npz`` (no pickle)."""
        np.savez(path, **self.state_dict(), **{_CONFIG_KEY: np.array(json.dumps(self.config()))})

    @classmethod
    def load(cls, path, **overrides):
        """Rebuild a layer saved by ``save``; keyword arguments override saved settings."""
        with np.load(path, allow_pickle=False) as archive:
            if _CONFIG_KEY not in archive:
                raise ValueError(f"{path} was not written by fastrnn.RNN.save (no {_CONFIG_KEY})")
            config = {**json.loads(str(archive[_CONFIG_KEY])), **overrides}
            layer = cls(**config)
            layer.load_state_dict({k: archive[k] for k in archive.files if k != _CONFIG_KEY})
        return layer

    def __repr__(self):
        defaults = RNN.__init__.__defaults__
        names = ("num_layers", "nonlinearity", "bias", "batch_first", "dropout", "bidirectional")
        extras = [f"{n}={getattr(self, n)!r}" for n, d in zip(names, defaults) if getattr(self, n) != d]
        extras += [f"dtype={self.dtype!r}"] if self.dtype != "float32" else []
        return f"RNN({', '.join([str(self.input_size), str(self.hidden_size)] + extras)})"
