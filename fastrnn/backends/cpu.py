"""The 'cpu' backend: an adapter over the compiled Cython kernels (csrc/rnn_cpu.pyx).

Why an adapter: the kernels take typed memoryviews and no optional arguments, so this module
supplies what they cannot: zero biases when the layer has none, a throwaway buffer for bias
gradients that are not wanted, and the scratch buffer that BPTT accumulates dL/da_t in (one
allocation per call, none per step). Arrays are host NumPy arrays (see HostArrays).
"""
import numpy as np

from . import HostArrays

try:
    from .. import _rnn_cpu
    _IMPORT_ERROR = None
except ImportError as exc:   # the package was not built (e.g. imported from a source tree)
    _rnn_cpu, _IMPORT_ERROR = None, exc

ARRAYS = HostArrays


def unavailable_reason():
    if _rnn_cpu is None:
        return (f"the compiled module fastrnn._rnn_cpu could not be imported ({_IMPORT_ERROR}); "
                "install the package with `pip install .` to build it")
    return None


def rnn_forward_cpu(x, h0, w_ih, w_hh, bias, out, reverse, relu):
    # x [T, B, I], h0 [B, H], w_ih [H, I], w_hh [H, H], bias [H] or None, out [T, B, H]
    if bias is None:
        bias = np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
    _rnn_cpu.rnn_forward_cpu(x, h0, w_ih, w_hh, bias, out, reverse, relu)


def rnn_backward_cpu(x, h0, w_ih, w_hh, out, grad_out, grad_hn, reverse, relu,
                     grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # shapes: see fastrnn/backends/__init__.py; grad_b_ih/grad_b_hh [H] or None
    if grad_b_ih is None:
        grad_b_ih = grad_b_hh = np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
    scratch = np.empty(out.shape, dtype=out.dtype)
    _rnn_cpu.rnn_backward_cpu(x, h0, w_ih, w_hh, out, grad_out, grad_hn, reverse, relu,
                              grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh,
                              grad_b_ih, grad_b_hh, scratch)


rnn_forward = rnn_forward_cpu
rnn_backward = rnn_backward_cpu
