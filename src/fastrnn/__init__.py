"""fastrnn: recurrent layers (Elman RNN, LSTM, GRU) whose forward and BPTT time loops are
compiled kernels.

``import fastrnn`` needs only NumPy, SciPy and threadpoolctl; torch and numba-cuda are optional
and are imported only by ``fastrnn.torch`` and the 'cuda' backend.
"""
from . import functional, nn
from ._checks import ShapeError
from .backends import BackendUnavailable, backend_status
from .grad_mode import is_grad_enabled, no_grad
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN
from .threads import get_num_threads, num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "functional", "nn", "no_grad", "is_grad_enabled", "backend_status",
           "BackendUnavailable", "ShapeError", "__version__",
           "set_num_threads", "get_num_threads", "num_threads"]
