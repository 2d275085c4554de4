"""Backends: one module per device, each computing ONE layer in ONE direction.

Why this shape: stacking layers, the two directions, dropout, ``batch_first`` and unbatched
input are handled once, in ``fastrnn.functional`` (its packed level, ``_stack.py``, for every
cell); a backend only needs the kernels below, a forward and a backward per cell it supports,
plus a handful of array operations on its own device (allocation, copies, products by a mask).
A backend may lack a cell: ``functional.backend_runs(name, mode)`` says whether it has that
cell's kernels, 'auto' picks one that does, and asking a backend for a cell it lacks is a
clear BackendUnavailable error.

The contract every backend module meets (arrays live on the backend's device; all float
arrays share one dtype, float32 or float64). Sequences are PACKED, as in torch's
PackedSequence: the batch is sorted by decreasing length, ``batch_sizes[t]`` (int64, host
NumPy, [T], non-increasing, every entry >= 1) is the number of sequences longer than t, and
step t's rows are the ``batch_sizes[t]`` rows after the ``batch_sizes[:t].sum()`` rows of the
earlier steps (N rows in all; B = batch_sizes[0]). An equal-length batch [T, B, I] is the case
batch_sizes = [B] * T, where the packed array is the time-major array itself. Step t computes
its rows only; in the reverse direction the rows that step t+1 did not compute start there
from h0; h_n holds each sequence's state after its own last step in the walk.

    rnn_forward_<dev>(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, relu, out, h_n)
        x     [N, I]  C-contiguous layer input
        h0    [B, H]  C-contiguous initial state
        w_ih  [H, I], w_hh [H, H]  C-contiguous
        b_ih, b_hh  [H] each, or both None (no bias)
        out   [N, H]  written; last axis contiguous, rows evenly spaced (row stride >= H), so
                      it may be one half of a bidirectional [N, 2H] buffer
        h_n   [B, H]  written, C-contiguous
        reverse: bool   walk t = T-1 .. 0 instead of 0 .. T-1
        relu: bool      relu instead of tanh

    rnn_backward_<dev>(x, h0, w_ih, w_hh, batch_sizes, reverse, relu, out, grad_out, grad_hn,
                       grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
        out       [N, H]  the forward's output (the activations h_t)
        grad_out  [N, H]  dL/d out, same layout rules as ``out``
        grad_hn   [B, H]  dL/d h_n
        grad_x    [N, I]  written (accumulate_x False) or added to (accumulate_x True)
        grad_h0   [B, H]  written
        grad_w_ih [H, I], grad_w_hh [H, H], grad_b_ih [H], grad_b_hh [H]
                          ADDED to (parameter gradients accumulate); the biases may be None

    The gated cells (torch's gate order: LSTM i, f, g, o; GRU r, z, n with b_hn inside
    r * (h W_hn^T + b_hn)) follow the same rules. ``workspace`` is written by the forward and
    read by the backward: what backward needs of each row, in a layout every backend shares.
    (functional keeps each layer-direction's workspace as one C-contiguous block of the flat
    array a forward saves for its backward, see _stack.py; in inference one scratch block is
    reused by every layer-direction.)

    lstm_forward_<dev>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse,
                       out, h_n, c_n, workspace)
        h0 [B, P], c0 [B, H]; w_ih [4H, I], w_hh [4H, P]; b_ih, b_hh [4H] or None;
        w_hr [P, H] (proj_size P) or None (then P == H); out [N, P] (layout rules as above);
        h_n [B, P], c_n [B, H] written; workspace [N, 5H] C-contiguous, written with the gates
        i, f, g, o after their activations and c_t
    lstm_backward_<dev>(x, h0, c0, w_ih, w_hh, w_hr, batch_sizes, reverse, out, workspace,
                        grad_out, grad_hn, grad_cn, grad_x, accumulate_x, grad_h0, grad_c0,
                        grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr)
        grad_out [N, P]; grad_hn [B, P], grad_cn [B, H]; grad_h0 [B, P], grad_c0 [B, H]
        written; grad_w_hr [P, H] or None; parameter gradients ADDED to, as for the RNN

    gru_forward_<dev>(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, out, h_n, workspace)
        w_ih [3H, I], w_hh [3H, H]; b_ih, b_hh [3H] or None; workspace [N, 4H] C-contiguous,
        written with r, z, n after their activations and h_prev W_hn^T + b_hn
    gru_backward_<dev>(x, h0, w_ih, w_hh, batch_sizes, reverse, out, workspace, grad_out,
                       grad_hn, grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh,
                       grad_b_ih, grad_b_hh)

    Array operations on the device (``HostArrays`` below is the NumPy version):
        asarray(a, dtype) / to_host(a) / empty(shape, dtype) / zeros(shape, dtype)
        contiguous(a)       -> C-contiguous, equal to ``a`` (``a`` itself when it already is)
        swap_batch_time(a)  -> C-contiguous copy of ``a`` with axes 0 and 1 swapped
        copy_into(dst, src) ; multiply(a, b) -> a * b ; add(a, b) -> a + b
        take_rows(a, index)          -> a[index] for a 2-D a and a 1-D int64 index (a copy)
        put_rows(shape, index, rows) -> zeros(shape) with rows placed at index (2-D)
        is_device_array(a)  -> whether ``a`` is this device's array rather than host memory
"""
import functools
import importlib

import numpy as np

BACKEND_MODULES = {"numpy": "reference", "cpu": "cpu", "cuda": "cuda"}


def is_cuda_array(a):
    """Whether ``a`` lives in GPU memory: a numba device array (also the simulator's) or any
    object exporting ``__cuda_array_interface__`` (CuPy arrays, torch CUDA tensors)."""
    return bool(getattr(a, "__cuda_ndarray__", False)) or hasattr(a, "__cuda_array_interface__")


class BackendUnavailable(RuntimeError):
    """A backend was asked for by name but cannot run here; the message says why."""


class HostArrays:
    """Array operations for the backends whose arrays are NumPy arrays in host memory."""

    @staticmethod
    def is_device_array(a):
        return False

    @staticmethod
    def asarray(a, dtype=None):
        return np.asarray(a, dtype=dtype)

    @staticmethod
    def to_host(a):
        return np.asarray(a)

    @staticmethod
    def empty(shape, dtype):
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def zeros(shape, dtype):
        return np.zeros(shape, dtype=dtype)

    @staticmethod
    def contiguous(a):
        return np.ascontiguousarray(a)

    @staticmethod
    def swap_batch_time(a):
        return np.ascontiguousarray(a.swapaxes(0, 1))

    @staticmethod
    def copy_into(dst, src):
        dst[...] = src

    @staticmethod
    def multiply(a, b):
        return np.multiply(a, b)

    @staticmethod
    def add(a, b):
        return np.add(a, b)

    @staticmethod
    def take_rows(a, index):
        return a[index]

    @staticmethod
    def put_rows(shape, index, rows):
        result = np.zeros(shape, dtype=rows.dtype)
        result[index] = rows
        return result


@functools.lru_cache(maxsize=None)
def load_backend(name):
    """The backend module called ``name``; BackendUnavailable (with the reason) if it can't run."""
    if name not in BACKEND_MODULES:
        raise ValueError(f"Unknown backend {name!r}. Select from {sorted(BACKEND_MODULES)} or 'auto'.")
    try:
        module = importlib.import_module(f"fastrnn.backends.{BACKEND_MODULES[name]}")
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} is not available: {exc}") from exc
    reason = module.unavailable_reason()
    if reason:
        raise BackendUnavailable(f"backend {name!r} is not available: {reason}")
    return module


def backend_status():
    """{name: None if usable here, else the reason it is not} for every backend."""
    status = {}
    for name in BACKEND_MODULES:
        try:
            load_backend(name)
            status[name] = None
        except BackendUnavailable as exc:
            status[name] = str(exc).split(": ", 1)[1]
    return status
