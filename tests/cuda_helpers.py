"""Helpers shared by the 'cuda' backend's test files (simulator and real GPU).

numba is imported inside the functions: these files are collected where numba-cuda is missing.
"""
import numpy as np


def device_pointer(a):
    """Address of a device array's first element (simulator device arrays are host memory)."""
    if hasattr(a, "__cuda_array_interface__"):
        return a.__cuda_array_interface__["data"][0]
    return a.__array_interface__["data"][0]


def forbid_host_copies(monkeypatch, device_array_type):
    """No float data may cross between host and device: copy_to_host is refused, and to_device
    takes only the packed layout's int64 metadata (step sizes, row indices), never floats."""
    from numba import cuda
    to_device = cuda.to_device

    def metadata_only(a, *args, **kwargs):
        if np.asarray(a).dtype != np.int64:
            raise AssertionError(f"a {np.asarray(a).dtype} host -> device copy in a device call")
        return to_device(a, *args, **kwargs)

    def no_host_copy(*args, **kwargs):
        raise AssertionError("a device -> host copy during a device-array call")
    monkeypatch.setattr(cuda, "to_device", metadata_only)
    monkeypatch.setattr(device_array_type, "copy_to_host", no_host_copy)
