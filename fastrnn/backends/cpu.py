"""The 'cpu' backend: an adapter over the compiled Cython kernels (csrc/rnn_cpu.pyx).

Why an adapter: the kernels take typed memoryviews and no optional arguments, so this module
supplies what they cannot: zero biases when the layer has none, a throwaway buffer for bias
gradients that are not wanted, the scratch buffer that BPTT accumulates dL/da_t in (one
allocation per call, none per step), and how many threads share each time step.
Arrays are host NumPy arrays (see HostArrays).

Why it chooses OpenBLAS's kernels: OpenBLAS picks its compute kernels once, when the library
loads, and on some CPUs that pick depends on the machine's load at that moment (AVX-512
"SkylakeX" kernels on a quiet machine, AVX2 "Haswell" ones when a core is busy: half the
speed for the life of the process). ``OPENBLAS_CORETYPE``, read at load time, fixes the pick.
So, just before the kernels load SciPy's BLAS, this module sets it to "SkylakeX" when the
CPU runs AVX-512 (as NumPy's CPU detection reports it), and removes it again right after, so
no other library and no child process sees it. The user stays in charge:
  - ``OPENBLAS_CORETYPE`` set by the user is left alone;
  - ``FASTRNN_OPENBLAS_CORETYPE=<name>`` asks for another coretype, ``=off`` lets OpenBLAS
    choose by itself;
  - when SciPy's BLAS was loaded before fastrnn (e.g. ``import scipy.linalg`` first), its
    kernels are already chosen; ``coretype_report()`` (shown by ``python -m fastrnn info``
    and ``bench``) says so.
"""
import os

import numpy as np

from . import HostArrays
from .. import threads

ARRAYS = HostArrays

# A time step is shared among the BLAS threads only from this many multiply-adds (B * H * H)
# up: below it the hand-off between threads at every step costs more than it saves (4M
# multiply-adds take about 50 us on one core).
STEP_THREADING_MIN_MACS = 1 << 22

CORETYPE_SETTING = "FASTRNN_OPENBLAS_CORETYPE"
_AVX512_CORETYPE = "SkylakeX"


def _cpu_runs_avx512():
    """Whether CPU and OS run the AVX-512 subsets of OpenBLAS's SkylakeX kernels (F, CD, BW,
    DQ, VL), as NumPy's runtime CPU detection found them."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:                     # NumPy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return False
    return bool(__cpu_features__.get("AVX512_SKX"))


def _coretype_request():
    """(coretype to request or None, why) before SciPy's BLAS loads."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return None, f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} set by the user"
    setting = os.environ.get(CORETYPE_SETTING, "auto").strip()
    if setting.lower() in ("off", "none", "0"):
        return None, f"chosen by OpenBLAS ({CORETYPE_SETTING}={setting})"
    if threads.kernel_blas_loaded():
        return None, ("chosen by OpenBLAS: SciPy's BLAS was loaded before fastrnn's kernels "
                      "(e.g. by an earlier `import scipy.linalg`); import fastrnn first or set "
                      "OPENBLAS_CORETYPE to fix the choice")
    if setting.lower() != "auto":
        return setting, f"{setting} requested by {CORETYPE_SETTING}"
    if _cpu_runs_avx512():
        return _AVX512_CORETYPE, (f"{_AVX512_CORETYPE} requested by fastrnn (the CPU runs "
                                  f"AVX-512; {CORETYPE_SETTING}=off lets OpenBLAS choose)")
    return None, "chosen by OpenBLAS (the CPU does not run AVX-512)"


def _import_kernels():
    """(compiled module or None, ImportError or None, why its BLAS has the kernels it has)."""
    coretype, why = _coretype_request()
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    try:
        from .. import _rnn_cpu
        return _rnn_cpu, None, why
    except ImportError as exc:   # the package was not built (e.g. imported from a source tree)
        return None, exc, why
    finally:
        if coretype is not None:
            del os.environ["OPENBLAS_CORETYPE"]


_rnn_cpu, _IMPORT_ERROR, _CORETYPE_WHY = _import_kernels()
if _rnn_cpu is not None:       # lets the kernels keep small products on one BLAS thread
    _rnn_cpu.use_blas_thread_functions(*threads.kernel_blas_thread_functions())


def coretype_report():
    """One line: the OpenBLAS coretype the kernels' BLAS runs, and how it was chosen."""
    library = threads.kernel_blas()
    running = (library or {}).get("architecture", "unknown")
    return f"{running} ({_CORETYPE_WHY})"


def step_kernel_name():
    """The instruction set the float32 step kernel was compiled for and runs here."""
    return _rnn_cpu.step_kernel_name()


def unavailable_reason():
    if _rnn_cpu is None:
        return (f"the compiled module fastrnn._rnn_cpu could not be imported ({_IMPORT_ERROR}); "
                "install the package with `pip install .` to build it")
    return None


def _step_threads(batch, hidden):
    """Threads to share each time step: the kernels' BLAS threads, for big enough steps."""
    if batch * hidden * hidden < STEP_THREADING_MIN_MACS:
        return 1
    return threads.kernel_blas_threads()


def rnn_forward_cpu(x, h0, w_ih, w_hh, bias, out, reverse, relu):
    # x [T, B, I], h0 [B, H], w_ih [H, I], w_hh [H, H], bias [H] or None, out [T, B, H]
    if bias is None:
        bias = np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
    _rnn_cpu.rnn_forward_cpu(x, h0, w_ih, w_hh, bias, out, reverse, relu,
                             _step_threads(x.shape[1], w_hh.shape[0]))


def rnn_backward_cpu(x, h0, w_ih, w_hh, out, grad_out, grad_hn, reverse, relu,
                     grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # shapes: see fastrnn/backends/__init__.py; grad_b_ih/grad_b_hh [H] or None
    if grad_b_ih is None:
        grad_b_ih = grad_b_hh = np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
    scratch = np.empty(out.shape, dtype=out.dtype)
    _rnn_cpu.rnn_backward_cpu(x, h0, w_ih, w_hh, out, grad_out, grad_hn, reverse, relu,
                              grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh,
                              grad_b_ih, grad_b_hh, scratch,
                              _step_threads(x.shape[1], w_hh.shape[0]))


rnn_forward = rnn_forward_cpu
rnn_backward = rnn_backward_cpu
