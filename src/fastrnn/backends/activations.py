"""The activations and their derivatives, written once for the Python-language backends.

Why one module: the NumPy reference applies them to whole arrays, the Numba CUDA kernels to
one element at a time in device code, and the tests use them to build expected values; each
function here is plain arithmetic that means the same in all three (a NumPy array, a float).
The derivatives are written in terms of the activation's OUTPUT h = act(a), which is what
backward keeps. (C has its own single definition, in csrc/.)
"""
import numpy as np


def tanh(a):
    return np.tanh(a)


def relu(a):
    """max(a, 0); NaN passes through, as in np.maximum and torch.relu."""
    return np.maximum(a, 0)


def sigmoid(a):
    """1 / (1 + exp(-a)), written as 0.5 + 0.5 tanh(a / 2): the same value, and no overflow for
    large negative a (the gates of LSTM and GRU)."""
    return 0.5 + 0.5 * np.tanh(0.5 * a)


def sigmoid_grad(s):
    """d sigmoid(a) / da with s = sigmoid(a)."""
    return s * (1 - s)


def tanh_grad(h):
    """d tanh(a) / da with h = tanh(a)."""
    return 1 - h * h


def relu_grad(h):
    """d relu(a) / da with h = relu(a): true (1) where h > 0, false (0) elsewhere."""
    return h > 0


def activate(a, relu_mode):
    return relu(a) if relu_mode else tanh(a)


def activation_grad(h, relu_mode):
    """act'(a) in terms of h = act(a), to multiply a gradient by."""
    return relu_grad(h) if relu_mode else tanh_grad(h)
