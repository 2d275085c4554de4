"""``fastrnn.LSTM``: the LSTM layer, a NumPy twin of ``torch.nn.LSTM`` (proj_size included).

Why so short: everything the cells share is ``RNNBase`` (rnn_base.py); the LSTM adds its
constructor signature (torch's, with ``proj_size``) and says what its state is: the pair
(h, c), passed and returned as a tuple wherever the other cells pass one array.
"""
from __future__ import annotations

from typing import Optional

from .rnn_base import RNNBase


class LSTM(RNNBase):
    """Long short-term memory, like torch.nn.LSTM (torch's gate order i, f, g, o)::

        [i f g o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        i, f, o sigmoid, g tanh
        c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)       (times W_hr^T if proj_size)

    Parameters
    ----------
    input_size, hidden_size, num_layers : int (> 0). Fixed once built (read-only attributes).
    bias : bool, whether the layer has ``bias_ih_l*``/``bias_hh_l*`` ([4H] each). Fixed.
    batch_first : bool, input and output as [B, T, F] instead of [T, B, F] (states stay
        [L*D, B, *]).
    dropout : float in [0, 1], dropout on the outputs of all layers but the last, in training.
    bidirectional : bool, a reverse direction per layer (D = 2). Fixed once built.
    proj_size : int, 0 (default) or 0 < P < hidden_size: h is projected to P features by
        ``weight_hr_l*`` [P, H], so h, the output and the next layer's input are P wide.
    dtype : 'float32' (default) or 'float64'; inputs must have it. Fixed once built.
    backend : 'auto' (default: 'cuda' for device arrays; else 'cpu' where this build has its
        LSTM kernels, else the 'numpy' reference), 'cpu', 'numpy' or 'cuda'.
    seed : int or None, seeds the initialisation and the dropout masks.

    ``output, (h_n, c_n) = lstm(x, (h_0, c_0))``: x [T, B, I]; h_0, h_n [L*D, B, P];
    c_0, c_n [L*D, B, H]; output [T, B, D*P] (P = H without a projection); hx None for
    zeros. ``h, c = lstm.step(x_t, (h, c))`` runs one time step; ``grad_x, (grad_h0,
    grad_c0) = lstm.backward(grad_output, (grad_h_n, grad_c_n))`` backpropagates (either
    member of the pair may be None) and adds into ``lstm.grads``. See RNNBase for the methods.
    """
    _MODE = "LSTM"
    _EXTRA_KEYS = ("proj_size",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, *, dtype: str = "float32",
                 backend: str = "auto", seed: Optional[int] = None):
        self._build(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                    bidirectional, proj_size, dtype, backend, seed)
