"""The 'cpu' backend: the compiled Cython kernels of csrc/ (the module fastrnn._rnn_cpu).

Why so little here: the compiled module meets the backend contract (backends/__init__.py)
itself. Its entry points check every array they are given (shape, dtype, strides, byte
order, alignment, writeability, batch_sizes), handle the packed variable-length layout, the
missing biases and their own scratch memory, so ``rnn_forward``/``rnn_backward``,
``lstm_forward``/``lstm_backward`` and ``gru_forward``/``gru_backward`` below ARE the compiled
functions: no Python runs between fastrnn.functional and the kernels.

One compiled module holds every cell, so the choices it runs with are one for all cells:
``use_step_kernel`` (which float32 step-kernel variant runs) and ``_rnn_cpu.set_tuning``.

Threads: the kernels read how many threads SciPy's BLAS has (fastrnn.set_num_threads sets it)
and share big steps and products among that many; they never change it.

OpenBLAS load-time settings: fastrnn sets none (a library must not change how another one
loads). OpenBLAS reads two that matter to the kernels from the environment when it loads
(before the first ``import fastrnn`` or ``import scipy.linalg``); a user may set them:
  - ``OPENBLAS_CORETYPE``: which compute kernels OpenBLAS runs. On the project's AMD EPYC
    (AVX-512, 2 vCPUs) OpenBLAS 0.3.30 picks "SkylakeX" by itself, on a quiet machine and
    with the other core busy alike, and forcing "Haswell" changed fastrnn's forward+backward
    by no more than the run-to-run noise (with either step-kernel variant).
  - ``OPENBLAS_THREAD_TIMEOUT``: after a multi-threaded product OpenBLAS's idle threads spin
    for 2^28 cycles (~0.1 s) before they sleep, taking the cores the kernels' own step threads
    need next. With several threads on a big layer on an otherwise idle machine,
    ``OPENBLAS_THREAD_TIMEOUT=16`` (2^16 cycles) made 2 threads 1.9x faster than 1 in an
    earlier measurement (without it, no faster); on a busy machine neither setting helps.
``python -m fastrnn info`` shows what OpenBLAS runs with.
"""
import os

from . import HostArrays
from .. import _blas

ARRAYS = HostArrays

try:
    from .. import _rnn_cpu
    _IMPORT_ERROR = None
except ImportError as exc:     # the package was not built (e.g. imported from a source tree)
    _rnn_cpu, _IMPORT_ERROR = None, exc

if _rnn_cpu is not None:
    _rnn_cpu.use_blas_thread_count(_blas.kernel_blas_thread_count_address())
    rnn_forward = rnn_forward_cpu = _rnn_cpu.rnn_forward_cpu
    rnn_backward = rnn_backward_cpu = _rnn_cpu.rnn_backward_cpu
    lstm_forward = lstm_forward_cpu = _rnn_cpu.lstm_forward_cpu
    lstm_backward = lstm_backward_cpu = _rnn_cpu.lstm_backward_cpu
    gru_forward = gru_forward_cpu = _rnn_cpu.gru_forward_cpu
    gru_backward = gru_backward_cpu = _rnn_cpu.gru_backward_cpu

# OpenBLAS variables read at load time that change the kernels' speed (see above).
OPENBLAS_LOAD_SETTINGS = ("OPENBLAS_CORETYPE", "OPENBLAS_THREAD_TIMEOUT")


def openblas_setup_report():
    """{OpenBLAS load-time variable: where its value came from} (fastrnn sets none)."""
    return {variable: (f"{variable}={os.environ[variable]} set by the user"
                       if os.environ.get(variable) else "OpenBLAS's default (not set)")
            for variable in OPENBLAS_LOAD_SETTINGS}


def coretype_report():
    """One line: the OpenBLAS coretype the kernels' BLAS runs, and how it was chosen."""
    running = (_blas.kernel_blas() or {}).get("architecture", "unknown")
    chosen = os.environ.get("OPENBLAS_CORETYPE")
    why = f"OPENBLAS_CORETYPE={chosen} set by the user" if chosen else "OpenBLAS own choice"
    return f"{running} ({why})"


def step_kernel_name():
    """The instruction set the float32 step kernel was compiled for and runs here."""
    return _rnn_cpu.step_kernel_name()


def use_step_kernel(name):
    """Runs every cell's float32 kernels on the step-kernel variant ``name`` ("avx512", "avx2",
    "generic", or "best": the widest this CPU runs); returns the previous variant's name.
    ValueError if this CPU cannot run it. For tests and benchmarks (e.g. the AVX2 path on an
    AVX-512 machine); the default is "best"."""
    return _rnn_cpu.use_step_kernel(name)


def unavailable_reason():
    if _rnn_cpu is None:
        return (f"the compiled module fastrnn._rnn_cpu could not be imported ({_IMPORT_ERROR}); "
                "install the package with `pip install .` to build it")
    return None
