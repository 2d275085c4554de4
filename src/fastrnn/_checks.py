"""Argument checks shared by the layer and the functional API.

Every check runs in Python before any kernel does, once per call and never per step, so a
kernel never sees a wrong shape, dtype, byte order, alignment, stride or a read-only output.
Messages follow torch.nn.RNN's wording where torch has one, so code and habits carry over;
shape errors are ``ShapeError``, which is both a ValueError (NumPy's convention) and a
RuntimeError (what torch raises), so either ``except`` clause catches them.

Inputs the kernels cannot take as they are but that hold the right numbers (another byte
order, a misaligned buffer, strides) are converted by a copy, as NumPy's own functions do;
buffers the kernels WRITE into (gradients added in place, ``out=``) cannot be converted and
are refused with a message that says what is needed.
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


NATIVE_DTYPES = {name: np.dtype(name) for name in SUPPORTED_DTYPES}   # native byte order


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
    if array.dtype == NATIVE_DTYPES[dtype]:
        return
    got = np.dtype(array.dtype).name
    if got != dtype:
        alternative = (f", or build the layer with dtype={got!r} if {got} is what you want"
                       if got in SUPPORTED_DTYPES else "")
        raise TypeError(f"Expected {what} of dtype {dtype} (the layer's dtype), got {got}. "
                        f"Convert it with .astype(np.{dtype}){alternative}.")


def check_proj_size(proj_size, hidden_size):
    """torch.nn.LSTM's checks of ``proj_size`` (0: no projection), with its messages."""
    if not isinstance(proj_size, numbers.Integral) or isinstance(proj_size, bool):
        raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")


def hidden_size_message(index, paired, expected, got):
    """torch's message for a state of the wrong shape (LSTM names hidden[0] and hidden[1])."""
    which = f"hidden[{index}]" if paired else "hidden"
    return f"Expected {which} size {tuple(expected)}, got {list(got)}"


def check_input(cell, x, hx, input_size, num_states, state_sizes, batch_first):
    """torch's forward checks of ``input`` and ``hx`` (None, or a tuple of state arrays: (h,),
    or LSTM's (h, c)), in torch's order and with its messages for ``cell`` ('RNN', 'LSTM',
    'GRU'), which differ by a word here and there."""
    if x.ndim not in (2, 3):
        tensor = " tensor" if cell == "RNN" else ""
        raise ShapeError(f"{cell}: Expected input to be 2D or 3D, got {x.ndim}D{tensor} instead")
    batched = x.ndim == 3
    if hx is not None and any(h.ndim != x.ndim for h in hx):
        kind = "batched 3-D" if batched else "unbatched 2-D"
        if len(hx) == 2:
            raise ShapeError(f"For {kind} input, hx and cx should also be {x.ndim}-D but got "
                             f"({hx[0].ndim}-D, {hx[1].ndim}-D) tensors")
        raise ShapeError(f"For {kind} input, hx should also be {x.ndim}-D but got "
                         f"{hx[0].ndim}-D tensor")
    shape = _checked_input_size(x, input_size)
    batch = (shape[0] if batch_first else shape[1]) if batched else 1
    for index, (state, size) in enumerate(zip(hx or (), state_sizes)):
        state_shape = tuple(state.shape)
        got = state_shape if batched else (state_shape[0], 1) + state_shape[1:]
        if got != (num_states, batch, size):
            raise ShapeError(hidden_size_message(index, len(hx) == 2, (num_states, batch, size),
                                                 got))
    steps = shape[1] if (batched and batch_first) else shape[0]
    if steps == 0:
        raise ShapeError("Expected sequence length to be larger than 0 in RNN")


def check_step_input(cell, x, input_size):
    """The batch size of a step's input [B, I] or [I] (1), after checking it."""
    if x.ndim not in (1, 2):
        raise ShapeError(f"{cell}.step: Expected input to be 1D [input_size] or 2D "
                         f"[batch, input_size], got {x.ndim}D tensor instead")
    shape = _checked_input_size(x, input_size)
    return 1 if x.ndim == 1 else shape[0]


def _checked_input_size(x, input_size):
    """x's shape as a plain tuple (device arrays too), after torch's check of its last size."""
    shape = tuple(x.shape)
    if shape[-1] != input_size:
        raise ShapeError(f"input.size(-1) must be equal to input_size. "
                         f"Expected {input_size}, got {shape[-1]}")
    return shape


def check_same_shape(what, array, expected_shape):
    if tuple(array.shape) != tuple(expected_shape):
        raise ShapeError(f"Expected {what} of shape {tuple(expected_shape)}, got {tuple(array.shape)}")


def host_array(what, a, dtype):
    """``a`` as a host NumPy array of ``dtype`` (a name) that the kernels can read: native byte
    order and aligned (a copy when it was not: same numbers). Any other dtype is a TypeError
    that says how to convert; a masked array is refused (its mask would be dropped silently)."""
    if type(a) is not np.ndarray:
        if isinstance(a, np.ma.MaskedArray):
            raise TypeError(f"{what} is a masked array; fastrnn would ignore its mask. Pass "
                            f"{what}.filled(0) and give each sequence's length with lengths=")
        a = np.asarray(a)
    native = NATIVE_DTYPES[dtype]
    if a.dtype != native:
        if a.dtype.kind == "f" and a.dtype.newbyteorder("=") == native:
            return a.astype(native)               # another byte order: same numbers, converted
        check_array_dtype(what, a, dtype)
    if not a.flags.aligned:
        return a.copy()
    return a


def check_buffer(what, a, shape, dtype, writeable=False):
    """A buffer the kernels read or WRITE as it is (no conversion possible): a host NumPy array
    of ``shape`` and native ``dtype``, C-contiguous, aligned, and writeable when written to."""
    if type(a) is not np.ndarray:
        raise TypeError(f"Expected {what} to be a NumPy array of shape {tuple(shape)} and dtype "
                        f"{dtype}, got {type(a).__name__}")
    check_same_shape(what, a, shape)
    if a.dtype != NATIVE_DTYPES[dtype]:
        order = " in native byte order" if a.dtype.kind == "f" and a.dtype.itemsize == np.dtype(dtype).itemsize else ""
        raise TypeError(f"Expected {what} of dtype {dtype}{order} (the layer's dtype), got "
                        f"{a.dtype.str if order else a.dtype.name}")
    flags = a.flags
    if not (flags.c_contiguous and flags.aligned):
        raise ValueError(f"Expected {what} to be C-contiguous and aligned (it is written or read "
                         f"in place); pass np.ascontiguousarray({what}) or a fresh np.zeros array")
    if writeable and not flags.writeable:
        raise ValueError(f"{what} is read-only, but fastrnn writes into it")
