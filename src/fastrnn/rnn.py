"""``fastrnn.RNN``: the Elman RNN layer, a NumPy twin of ``torch.nn.RNN``.

Why so short: everything the cells share (parameters, forward/backward/step, persistence,
threads, checks) is ``RNNBase`` (rnn_base.py); the Elman RNN adds only its constructor
signature (torch's, with ``nonlinearity``) and the nonlinearity setting, which picks its mode.
"""
from __future__ import annotations

from typing import Optional

from . import _checks
from .functional import MODES
from .rnn_base import RNNBase, Setting


def _checked_nonlinearity(value):
    _checks.check_nonlinearity(value)
    return value


class RNN(RNNBase):
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

    ``output, h_n = rnn(x, hx=None, lengths=None)`` runs it (x [T, B, I], hx and h_n
    [L*D, B, H], output [T, B, D*H]); ``h = rnn.step(x_t, h)`` runs one time step
    (generation); ``grad_x, grad_hx = rnn.backward(grad_output, grad_h_n)`` backpropagates
    through this thread's most recent forward and adds every parameter's gradient into
    ``rnn.grads`` (cleared by ``zero_grad()``). See RNNBase for the methods.
    """
    _EXTRA_KEYS = ("nonlinearity",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, dtype: str = "float32",
                 backend: str = "auto", seed: Optional[int] = None):
        _checks.check_nonlinearity(nonlinearity)
        self._nonlinearity = nonlinearity
        self._build(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                    bidirectional, 0, dtype, backend, seed)

    nonlinearity = Setting(_checked_nonlinearity, "'tanh' or 'relu'; may be changed (checked).")

    @property
    def mode(self) -> str:
        """'RNN_TANH' or 'RNN_RELU' (torch's names), from the nonlinearity."""
        return MODES[self._nonlinearity]
