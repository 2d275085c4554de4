"""The 'cpu' backend: an adapter over the compiled Cython kernels (csrc/rnn_cpu.pyx).

Why an adapter: the kernels take typed memoryviews and no optional arguments, so this module
supplies what they cannot: zero biases when the layer has none, a throwaway buffer for bias
gradients that are not wanted, the scratch buffer that BPTT accumulates dL/da_t in (one
allocation per call, none per step), and how many threads share each time step.
Arrays are host NumPy arrays (see HostArrays).

Why it sets OpenBLAS up: OpenBLAS reads some settings once, when the library loads, and
two of its defaults cost fastrnn dearly:
  - ``OPENBLAS_CORETYPE``: OpenBLAS picks its compute kernels at load time, and on some CPUs
    the pick depends on the machine's load at that moment (AVX-512 "SkylakeX" kernels on a
    quiet machine, AVX2 "Haswell" ones when a core is busy: half the speed for the life of
    the process). fastrnn asks for "SkylakeX" when the CPU runs AVX-512 (as NumPy's runtime
    CPU detection reports it).
  - ``OPENBLAS_THREAD_TIMEOUT``: after a multi-threaded product OpenBLAS's idle threads spin
    for 2^28 cycles (~0.1 s) before sleeping; the step kernel's own threads, which start right
    after the input projection, then find the other cores taken (measured: 2 threads no faster
    than 1 on a DeepBench forward; 1.9x with the spin shortened). fastrnn asks for 2^16
    cycles (~25 us): products big enough to be threaded pay one wake-up of ~10 us instead.
Each variable is set just before the kernels load SciPy's BLAS and removed right after, so
no other library and no child process sees it. The user stays in charge: a variable the
user set is left alone; ``FASTRNN_OPENBLAS_CORETYPE`` / ``FASTRNN_OPENBLAS_THREAD_TIMEOUT``
ask for another value, or ``off`` for OpenBLAS's default. When SciPy's BLAS was loaded before
fastrnn (e.g. ``import scipy.linalg`` first), nothing can be changed any more;
``openblas_setup_report()`` (shown by ``python -m fastrnn bench``) says what happened.
"""
import os

import numpy as np

from . import HostArrays
from .. import threads

ARRAYS = HostArrays

# A time step is shared among the BLAS threads only from this many multiply-adds (B * H * H)
# up: below it the hand-off between threads at every step costs more than it saves. At 2^21
# (B=32, H=256: ~25 us a step on one core) 2 threads ran 1.4-1.7x faster than 1 on a quiet
# machine; at 2^20 (B=16, H=256) the forward gained 1.25x in one run, too little to risk the
# hand-off, which on a busy machine waits for the other core at every step.
STEP_THREADING_MIN_MACS = 1 << 21

_AVX512_CORETYPE = "SkylakeX"
_THREAD_TIMEOUT = "16"        # OpenBLAS's unit: 2^16 cycles of spinning before a thread sleeps


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


def _fastest_coretype():
    if _cpu_runs_avx512():
        return _AVX512_CORETYPE, f"{_AVX512_CORETYPE} requested by fastrnn (the CPU runs AVX-512)"
    return None, "OpenBLAS's choice (the CPU does not run AVX-512)"


def _short_thread_timeout():
    return _THREAD_TIMEOUT, f"{_THREAD_TIMEOUT} (2^{_THREAD_TIMEOUT} cycles) requested by fastrnn"


# OpenBLAS variable -> (fastrnn's variable to change or turn off its choice, fastrnn's choice)
LOAD_SETTINGS = {"OPENBLAS_CORETYPE": ("FASTRNN_OPENBLAS_CORETYPE", _fastest_coretype),
                 "OPENBLAS_THREAD_TIMEOUT": ("FASTRNN_OPENBLAS_THREAD_TIMEOUT",
                                             _short_thread_timeout)}
CORETYPE_SETTING = LOAD_SETTINGS["OPENBLAS_CORETYPE"][0]


def _decide(variable, already_loaded):
    """(value to set or None, why) for one OpenBLAS variable, before SciPy's BLAS loads."""
    override, choose = LOAD_SETTINGS[variable]
    if os.environ.get(variable):
        return None, f"{variable}={os.environ[variable]} set by the user"
    setting = os.environ.get(override, "auto").strip()
    if setting.lower() in ("off", "none", "0"):
        return None, f"OpenBLAS's default ({override}={setting})"
    if already_loaded:
        return None, ("OpenBLAS's choice: SciPy's BLAS was loaded before fastrnn's kernels "
                      "(e.g. by an earlier `import scipy.linalg`); import fastrnn first or set "
                      f"{variable} to fix it")
    if setting.lower() != "auto":
        return setting, f"{setting} requested by {override}"
    value, why = choose()
    return value, (f"{why}; {override}=off for OpenBLAS's default" if value else why)


def _import_kernels():
    """(compiled module or None, ImportError or None, {variable: why it has its value})."""
    already_loaded = threads.kernel_blas_loaded()
    decisions = {variable: _decide(variable, already_loaded) for variable in LOAD_SETTINGS}
    chosen = {variable: value for variable, (value, _) in decisions.items() if value is not None}
    os.environ.update(chosen)
    try:
        from .. import _rnn_cpu
        return _rnn_cpu, None, {variable: why for variable, (_, why) in decisions.items()}
    except ImportError as exc:   # the package was not built (e.g. imported from a source tree)
        return None, exc, {variable: why for variable, (_, why) in decisions.items()}
    finally:
        for variable in chosen:
            del os.environ[variable]


_rnn_cpu, _IMPORT_ERROR, _LOAD_SETTINGS_WHY = _import_kernels()
if _rnn_cpu is not None:       # lets the kernels keep small products on one BLAS thread
    _rnn_cpu.use_blas_thread_functions(*threads.kernel_blas_thread_functions())


def coretype_report():
    """One line: the OpenBLAS coretype the kernels' BLAS runs, and how it was chosen."""
    library = threads.kernel_blas()
    running = (library or {}).get("architecture", "unknown")
    return f"{running} ({_LOAD_SETTINGS_WHY['OPENBLAS_CORETYPE']})"


def openblas_setup_report():
    """{OpenBLAS variable: how the kernels' BLAS got its value} for every load-time setting."""
    return dict(_LOAD_SETTINGS_WHY)


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


def _time_major(packed, batch_sizes):
    """The packed [N, F] rows of an equal-length batch as [T, B, F] (a view)."""
    steps, batch = len(batch_sizes), int(batch_sizes[0])
    if not (batch_sizes == batch).all():
        raise NotImplementedError("the cpu kernels do not take variable-length batches yet")
    return packed.reshape(steps, batch, packed.shape[-1]) if packed.ndim == 2 else packed


def _rows_view(packed, batch_sizes):
    """[N, H] with a row stride (one half of [N, 2H]) as [T, B, H], keeping its strides."""
    steps, batch = len(batch_sizes), int(batch_sizes[0])
    return np.lib.stride_tricks.as_strided(
        packed, (steps, batch, packed.shape[1]),
        (packed.strides[0] * batch, packed.strides[0], packed.strides[1]))


def rnn_forward_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, relu, out, h_n):
    # x [N, I], h0 [B, H], w_ih [H, I], w_hh [H, H], b_ih/b_hh [H] or None, out [N, H], h_n [B, H]
    bias = np.zeros(w_hh.shape[0], dtype=w_hh.dtype) if b_ih is None else b_ih + b_hh
    out_tm = _rows_view(out, batch_sizes)
    _rnn_cpu.rnn_forward_cpu(_time_major(x, batch_sizes), h0, w_ih, w_hh, bias, out_tm, reverse,
                             relu, _step_threads(h0.shape[0], w_hh.shape[0]))
    h_n[...] = out_tm[0 if reverse else -1]


def rnn_backward_cpu(x, h0, w_ih, w_hh, batch_sizes, reverse, relu, out, grad_out, grad_hn,
                     grad_x, accumulate_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh):
    # shapes: see fastrnn/backends/__init__.py; grad_b_ih/grad_b_hh [H] or None
    if grad_b_ih is None:
        grad_b_ih = grad_b_hh = np.zeros(w_hh.shape[0], dtype=w_hh.dtype)
    out_tm = _rows_view(out, batch_sizes)
    scratch = np.empty(out_tm.shape, dtype=out.dtype)
    _rnn_cpu.rnn_backward_cpu(_time_major(x, batch_sizes), h0, w_ih, w_hh, out_tm,
                              _rows_view(grad_out, batch_sizes), grad_hn, reverse, relu,
                              _time_major(grad_x, batch_sizes), accumulate_x, grad_h0,
                              grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, scratch,
                              _step_threads(h0.shape[0], w_hh.shape[0]))


rnn_forward = rnn_forward_cpu
rnn_backward = rnn_backward_cpu
