"""How many threads fastrnn's CPU kernels use, and which BLAS libraries they run on.

Why through the BLAS pools: the kernels' large products (input projection, weight gradients)
are SciPy's BLAS calls, and the step kernel shares a big time step among as many threads as
that BLAS has. One setting therefore governs both. NumPy and SciPy wheels each bundle their
own OpenBLAS, and the NumPy reference and user code run on NumPy's, so ``set_num_threads``
sets every BLAS library loaded in the process (threadpoolctl), not just the kernels' one.

The default: fastrnn changes nothing at import. The count is whatever the libraries chose
(OpenBLAS: one thread per core, or ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``), because a
library should not change process-wide settings that the user's NumPy code also depends on.
Many threads do not hurt small layers: OpenBLAS keeps small products on one thread by itself,
and the step kernel shares a step only when it is big enough to repay the hand-off (see
``fastrnn.backends.cpu.STEP_THREADING_MIN_MACS``).
"""
import contextlib
import functools
import os
import sys

from threadpoolctl import ThreadpoolController, threadpool_info, threadpool_limits


def _check_count(n):
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"the number of threads must be an int, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"the number of threads must be >= 1, got {n}")


def _load_kernels():
    """Imports the CPU kernels, which load SciPy's BLAS (and choose its coretype first)."""
    from .backends import BackendUnavailable, load_backend
    try:
        load_backend("cpu")
    except BackendUnavailable:       # not built: the libraries already loaded are all there is
        pass


def set_num_threads(n):
    """Use ``n`` threads in every BLAS library loaded in this process (fastrnn's kernels, NumPy,
    SciPy), until changed again. Like ``torch.set_num_threads``."""
    _check_count(n)
    _load_kernels()
    threadpool_limits(limits=n, user_api="blas")


@contextlib.contextmanager
def num_threads(n):
    """``with fastrnn.num_threads(1): ...`` runs the block with ``n`` BLAS threads and restores
    every library's previous count afterwards."""
    _check_count(n)
    _load_kernels()
    with threadpool_limits(limits=n, user_api="blas"):
        yield


def get_num_threads():
    """The number of threads of the BLAS that fastrnn's CPU kernels call (1 if unknown)."""
    _load_kernels()
    return kernel_blas_threads()


def kernel_blas_threads():
    """get_num_threads() for callers that have loaded the kernels already (the kernels)."""
    controller = _kernel_blas_controller()
    return controller.num_threads if controller is not None else 1


def _is_scipy_library(filepath):
    """Whether a loaded library ships inside SciPy's wheel (scipy.libs/, scipy/.dylibs/)."""
    scipy = sys.modules.get("scipy")
    if scipy is None or not filepath:
        return False
    site = os.path.dirname(os.path.dirname(os.path.realpath(scipy.__file__)))
    path = os.path.realpath(filepath)
    return os.path.commonpath([site, path]) == site and \
        os.path.relpath(path, site).split(os.sep)[0] in ("scipy", "scipy.libs")


def kernel_blas_loaded():
    """Whether the BLAS library fastrnn's kernels use (SciPy's) is loaded in this process."""
    return any(_is_scipy_library(info.get("filepath")) for info in blas_libraries())


@functools.lru_cache(maxsize=None)
def _kernel_blas_controller():
    """threadpoolctl's controller for the kernels' BLAS: SciPy's bundled one, else the only one.

    Call it only once the kernels are loaded (it is cached: once loaded a library stays loaded,
    and finding it costs milliseconds, while asking it for its thread count costs a microsecond).
    """
    controllers = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    scipy_own = [c for c in controllers if _is_scipy_library(c.filepath)]
    if scipy_own:
        return scipy_own[0]
    return controllers[0] if len(controllers) == 1 else None


# The C functions that set and read a BLAS's thread count, by library: (set, get) name stems,
# tried with the prefixes and suffixes that wheels add to OpenBLAS's symbols.
_THREAD_FUNCTIONS = {"openblas": ("openblas_set_num_threads", "openblas_get_num_threads"),
                     "mkl": ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads")}


def _c_function_address(dynlib, stem):
    import ctypes
    for name in (stem, "scipy_" + stem, stem + "64_", "scipy_" + stem + "64_"):
        function = getattr(dynlib, name, None)
        if function is not None:
            return ctypes.cast(function, ctypes.c_void_p).value
    return 0


def kernel_blas_thread_functions():
    """Addresses of the kernels' BLAS ``set_num_threads(int)`` and ``get_num_threads()``
    C functions, for the kernels to call without the GIL; (0, 0) when unknown. Called by the
    kernels' module once it has loaded that BLAS."""
    controller = _kernel_blas_controller()
    stems = _THREAD_FUNCTIONS.get(getattr(controller, "internal_api", None))
    if stems is None:
        return 0, 0
    addresses = tuple(_c_function_address(controller.dynlib, stem) for stem in stems)
    return addresses if all(addresses) else (0, 0)


def blas_libraries():
    """threadpoolctl's description of every BLAS library loaded now (a list of dicts)."""
    return [info for info in threadpool_info() if info.get("user_api") == "blas"]


def kernel_blas():
    """The description of the BLAS library fastrnn's kernels call (None if it cannot be told)."""
    _load_kernels()
    controller = _kernel_blas_controller()
    return None if controller is None else controller.info()
