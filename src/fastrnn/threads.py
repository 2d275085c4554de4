"""How many threads fastrnn's CPU kernels use: fastrnn.set_num_threads / num_threads /
get_num_threads.

Why through the BLAS pools: the kernels' large products (input projection, weight gradients)
are SciPy's BLAS calls, and the kernels share a big time step among as many threads as that
BLAS has. One setting therefore governs both. NumPy and SciPy wheels each bundle their own
OpenBLAS, and the NumPy reference and user code run on NumPy's, so ``set_num_threads`` sets
every BLAS library loaded in the process (threadpoolctl), not just the kernels' one. The
kernels only read that count; nothing in fastrnn changes it but these functions, when called.

The default: fastrnn changes nothing at import. The count is whatever the libraries chose
(OpenBLAS: one thread per core, or ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``), because a
library should not change process-wide settings that the user's NumPy code also depends on.
Many threads do not hurt small layers: the kernels keep small steps and products on the
calling thread by themselves (csrc/cpu_products.pxd).
"""
import contextlib

from threadpoolctl import threadpool_limits

from ._blas import blas_libraries, kernel_blas, kernel_blas_threads, load_kernel_blas

__all__ = ["set_num_threads", "num_threads", "get_num_threads",
           "blas_libraries", "kernel_blas"]     # the last two: for the benchmark's report


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"the number of threads must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"the number of threads must be >= 1, got {n}")


def set_num_threads(n):
    """Use ``n`` threads in every BLAS library loaded in this process (fastrnn's kernels, NumPy,
    SciPy), until changed again. Like ``torch.set_num_threads``."""
    _check_count(n)
    load_kernel_blas()       # loaded lazily otherwise, after this limit, which would miss it
    threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def num_threads(n):
    """``with fastrnn.num_threads(1): ...`` runs the block with ``n`` BLAS threads and restores
    every library's previous count afterwards."""
    _check_count(n)
    load_kernel_blas()
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def get_num_threads():
    """The number of threads of the BLAS that fastrnn's CPU kernels call (1 if unknown)."""
    return kernel_blas_threads()
