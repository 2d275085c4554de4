"""Argument checks shared by the layer and the functional API.

Every check runs in Python before any kernel does, so a kernel never sees a wrong shape or
dtype. Messages follow torch.nn.RNN's wording where torch has one, so code and habits carry
over; shape errors are ``ShapeError``, which is both a ValueError (NumPy's convention) and a
RuntimeError (what torch raises), so either ``except`` clause catches them.
"""
import numbers
import warnings

import numpy as np

SUPPORTED_DTYPES = ("float32", "float64")
NONLINEARITIES = ("tanh", "relu")


class ShapeError(ValueError, RuntimeError):
    """An array has the wrong number of dimensions or the wrong size along one."""


def check_dtype_name(dtype):
    """'float32' or 'float64' from anything np.dtype accepts; ValueError otherwise."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in SUPPORTED_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return name


def check_nonlinearity(nonlinearity):
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def check_dropout(dropout):
    """torch's check of a dropout probability (NaN and bools fail it too)."""
    if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
            or not 0 <= dropout <= 1):
        raise ValueError("dropout should be a number in range [0, 1] representing the "
                         "probability of an element being zeroed")


def check_constructor(input_size, hidden_size, num_layers, dropout, bias=True, batch_first=False):
    """torch.nn.RNN's constructor checks, in its order, with its messages and its one warning."""
    check_dropout(dropout)
    if dropout > 0 and num_layers == 1:
        warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                      "non-zero dropout expects num_layers greater than 1, but got "
                      f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
    for name, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("num_layers", num_layers)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero")


def check_array_dtype(what, array, dtype):
    """TypeError that says how to convert when ``array`` is not of the layer's dtype."""
    got = np.dtype(array.dtype).name
    if got != dtype:
        alternative = (f", or build the layer with dtype={got!r} if {got} is what you want"
                       if got in SUPPORTED_DTYPES else "")
        raise TypeError(f"Expected {what} of dtype {dtype} (the layer's dtype), got {got}. "
                        f"Convert it with .astype(np.{dtype}){alternative}.")


def check_input(x, hx, input_size, num_states, hidden_size, batch_first):
    """torch.nn.RNN.forward's checks of ``input`` and ``hx``, in torch's order."""
    if x.ndim not in (2, 3):
        raise ShapeError(f"RNN: Expected input to be 2D or 3D, got {x.ndim}D tensor instead")
    batched = x.ndim == 3
    if hx is not None and hx.ndim != x.ndim:
        kind = "batched 3-D" if batched else "unbatched 2-D"
        raise ShapeError(f"For {kind} input, hx should also be {x.ndim}-D but got {hx.ndim}-D tensor")
    shape = tuple(x.shape)      # a plain tuple whatever the array type (device arrays too)
    if shape[-1] != input_size:
        raise ShapeError(f"input.size(-1) must be equal to input_size. "
                         f"Expected {input_size}, got {shape[-1]}")
    batch = (shape[0] if batch_first else shape[1]) if batched else 1
    if hx is not None:
        expected = (num_states, batch, hidden_size)
        hx_shape = tuple(hx.shape)
        got = hx_shape if batched else (hx_shape[0], 1) + hx_shape[1:]
        if got != expected:
            raise ShapeError(f"Expected hidden size {expected}, got {list(got)}")
    steps = shape[1] if (batched and batch_first) else shape[0]
    if steps == 0:
        raise ShapeError("Expected sequence length to be larger than 0 in RNN")


def check_same_shape(what, array, expected_shape):
    if tuple(array.shape) != tuple(expected_shape):
        raise ShapeError(f"Expected {what} of shape {tuple(expected_shape)}, got {tuple(array.shape)}")
