"""``fastrnn.GRU``: the GRU layer, a NumPy twin of ``torch.nn.GRU``.

Why so short: everything the cells share is ``RNNBase`` (rnn_base.py); the GRU adds only its
constructor signature (torch's) and its docs. Its state is one array, like the Elman RNN's.
"""
from __future__ import annotations

from typing import Optional

from .rnn_base import RNNBase


class GRU(RNNBase):
    """Gated recurrent unit, like torch.nn.GRU (torch's gate order r, z, n; b_hn inside r)::

        r = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)
        z = sigmoid(x_t W_iz^T + b_iz + h_{t-1} W_hz^T + b_hz)
        n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))
        h_t = (1 - z) * n + z * h_{t-1}

    Parameters
    ----------
    input_size, hidden_size, num_layers : int (> 0). Fixed once built (read-only attributes).
    bias : bool, whether the layer has ``bias_ih_l*``/``bias_hh_l*`` ([3H] each). Fixed.
    batch_first : bool, input and output as [B, T, F] instead of [T, B, F] (h_n stays [L*D, B, H]).
    dropout : float in [0, 1], dropout on the outputs of all layers but the last, in training.
    bidirectional : bool, a reverse direction per layer (D = 2). Fixed once built.
    dtype : 'float32' (default) or 'float64'; inputs must have it. Fixed once built.
    backend : 'auto' (default: 'cuda' for device arrays; else 'cpu' where this build has its
        GRU kernels, else the 'numpy' reference), 'cpu', 'numpy' or 'cuda'.
    seed : int or None, seeds the initialisation and the dropout masks.

    ``output, h_n = gru(x, h_0)``: x [T, B, I]; h_0, h_n [L*D, B, H]; output [T, B, D*H];
    ``h = gru.step(x_t, h)`` runs one time step; ``grad_x, grad_h0 = gru.backward(
    grad_output, grad_h_n)`` backpropagates and adds into ``gru.grads``. See RNNBase.
    """
    _MODE = "GRU"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, *, dtype: str = "float32",
                 backend: str = "auto", seed: Optional[int] = None):
        self._build(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                    bidirectional, 0, dtype, backend, seed)
