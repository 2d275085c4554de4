"""What the numbers were measured on: the CPU, the libraries, the BLAS kernels and threads.

Why so much of it: a ratio is only worth quoting with the machine it came from. OpenBLAS picks
its kernels (its "coretype") per CPU and per library, so the report names each BLAS library
loaded in the process, its version, coretype and thread count (threadpoolctl), and says which
one fastrnn's kernels call (SciPy's) and which one NumPy's products use (the limit's steps).
"""
import os
import platform
import sys

import numpy as np

OPTIONAL_LIBRARIES = ("torch", "onnx", "onnxruntime", "jax", "jaxlib", "numba")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def allowed_cpus():
    """The CPUs this process may run on (``taskset -c 0`` makes it [0]); None if unknown."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def load_average():
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def machine_description():
    return {"node": platform.node(), "platform": platform.platform(), "cpu": cpu_name(),
            "logical_cores": os.cpu_count(), "allowed_cpus": allowed_cpus(),
            "loadavg_start": load_average()}


def library_versions():
    """Versions of the core libraries and of every optional one this process imported."""
    import scipy
    import threadpoolctl
    import fastrnn
    versions = {"python": platform.python_version(), "fastrnn": fastrnn.__version__,
                "numpy": np.__version__, "scipy": scipy.__version__,
                "threadpoolctl": threadpoolctl.__version__}
    for name in OPTIONAL_LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return versions


def _bundled_by(filepath):
    """'scipy' or 'numpy' when a library file ships inside that package's wheel, else None."""
    parts = os.path.realpath(filepath or "").split(os.sep)
    for package in ("scipy", "numpy"):
        if f"{package}.libs" in parts or (package in parts and ".dylibs" in parts):
            return package
    return None


def blas_libraries():
    """Every BLAS library loaded now: API, version, coretype, threads, whose it is."""
    from threadpoolctl import threadpool_info
    return [{"internal_api": info.get("internal_api"), "version": info.get("version"),
             "coretype": info.get("architecture"), "num_threads": info.get("num_threads"),
             "bundled_by": _bundled_by(info.get("filepath")), "filepath": info.get("filepath")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def fastrnn_kernels():
    """The step kernel's instruction set and how the kernels' OpenBLAS was set up, when this
    fastrnn version can say (these are not public API: absent is not an error)."""
    try:
        from ..backends import cpu
        return {"step_kernel": cpu.step_kernel_name(), "coretype_choice": cpu.coretype_report()}
    except Exception:          # any version of the kernels' module: describe what is there
        return {}


def torch_description():
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    config = torch.__config__.show()
    return {"blas": "MKL" if "BLAS_INFO=mkl" in config else "see torch.__config__.show()",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "num_threads": torch.get_num_threads()}


def blas_description():
    return {"libraries": blas_libraries(), "fastrnn_kernels": fastrnn_kernels(),
            "torch": torch_description(), "xla_flags": os.environ.get("XLA_FLAGS")}
