"""Which BLAS libraries are loaded in this process, and which one fastrnn's CPU kernels call.

Why a module of its own: both the thread-count API (fastrnn.threads) and the cpu backend need
to find the kernels' BLAS (the OpenBLAS bundled in SciPy's wheel, which the kernels reach
through scipy.linalg.cython_blas), and neither should import the other for it. This module
only looks; it changes nothing (no thread count, no environment variable).
"""
import ctypes
import functools
import os
import sys

from threadpoolctl import ThreadpoolController, threadpool_info


def load_kernel_blas():
    """Loads the BLAS the kernels call (SciPy's), so that threadpoolctl can see it."""
    import scipy.linalg.cython_blas  # noqa: F401 - importing it loads the library


def blas_libraries():
    """threadpoolctl's description of every BLAS library loaded now (a list of dicts)."""
    return [info for info in threadpool_info() if info.get("user_api") == "blas"]


def _is_scipy_library(filepath):
    """Whether a loaded library ships inside SciPy's wheel (scipy.libs/, scipy/.dylibs/)."""
    scipy = sys.modules.get("scipy")
    if scipy is None or not filepath:
        return False
    site = os.path.dirname(os.path.dirname(os.path.realpath(scipy.__file__)))
    path = os.path.realpath(filepath)
    return os.path.commonpath([site, path]) == site and \
        os.path.relpath(path, site).split(os.sep)[0] in ("scipy", "scipy.libs")


@functools.lru_cache(maxsize=None)
def _kernel_blas_controller():
    """threadpoolctl's controller for the kernels' BLAS: SciPy's bundled one, else the only one
    (None when it cannot be told). Cached: once loaded a library stays loaded, and finding it
    costs milliseconds, while asking it for its thread count costs a microsecond."""
    load_kernel_blas()
    controllers = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    scipy_own = [c for c in controllers if _is_scipy_library(c.filepath)]
    if scipy_own:
        return scipy_own[0]
    return controllers[0] if len(controllers) == 1 else None


def kernel_blas():
    """The description of the BLAS library fastrnn's kernels call (None if it cannot be told)."""
    controller = _kernel_blas_controller()
    return None if controller is None else controller.info()


def kernel_blas_threads():
    """The thread count of the kernels' BLAS (1 if unknown)."""
    controller = _kernel_blas_controller()
    return controller.num_threads if controller is not None else 1


# The C function that reads a BLAS's thread count, by library, tried with the prefixes and
# suffixes that wheels add to OpenBLAS's symbols.
_THREAD_COUNT_FUNCTIONS = {"openblas": "openblas_get_num_threads", "mkl": "MKL_Get_Max_Threads"}


def kernel_blas_thread_count_address():
    """Address of the kernels' BLAS ``get_num_threads()`` C function, which the kernels call
    without the GIL to size their thread team (0 when unknown)."""
    controller = _kernel_blas_controller()
    stem = _THREAD_COUNT_FUNCTIONS.get(getattr(controller, "internal_api", None))
    if stem is None:
        return 0
    for name in (stem, "scipy_" + stem, stem + "64_", "scipy_" + stem + "64_"):
        function = getattr(controller.dynlib, name, None)
        if function is not None:
            return ctypes.cast(function, ctypes.c_void_p).value
    return 0
