"""Shared test helpers: tolerances per dtype and random inputs (imported by the test modules)."""
import warnings

import numpy as np

# cpu vs reference: the bound, relative to the scale of the expected values
RTOL = {"float32": 1e-5, "float64": 1e-10}


def assert_close(actual, expected, dtype, rtol=None, what=""):
    """|actual - expected| <= rtol * max(|expected|, scale), scale = the largest |expected|;
    ``what`` names the compared quantity in the failure message."""
    rtol = RTOL[dtype] if rtol is None else rtol
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def random_array(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def central_difference(loss_of, array, index, eps=1e-6):
    """d loss_of() / d array[index] by central differences; ``array`` is restored afterwards."""
    saved = array[index]
    array[index] = saved + eps
    plus = loss_of()
    array[index] = saved - eps
    minus = loss_of()
    array[index] = saved
    return (plus - minus) / (2 * eps)


def numerical_gradient(loss_of, array, eps=1e-6):
    """Central differences of the scalar ``loss_of()`` w.r.t. every element of ``array``."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        grad[index] = central_difference(loss_of, array, index, eps)
    return grad


def raised_by(call):
    """(exception type, message) that ``call()`` raises, warnings silenced; fails if none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except Exception as exc:   # noqa: BLE001 - the point is to capture whatever was raised
        return type(exc), str(exc)
    raise AssertionError("no exception raised")
