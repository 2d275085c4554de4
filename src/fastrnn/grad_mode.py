"""``fastrnn.no_grad()``: forward passes that keep nothing for backward.

Inference should not pay for training: under no_grad the layer keeps no per-layer activations
after the call returns. A thread-local flag, like torch's, so threads do not see each other's mode.
"""
import contextlib
import threading

class _Mode(threading.local):
    enabled = True              # each thread starts with gradients enabled


_mode = _Mode()


def is_grad_enabled() -> bool:
    """Whether forward passes in this thread keep what backward needs."""
    return _mode.enabled


@contextlib.contextmanager
def no_grad():
    """``with fastrnn.no_grad():`` forward passes in this thread keep nothing for backward."""
    previous = is_grad_enabled()
    _mode.enabled = False
    try:
        yield
    finally:
        _mode.enabled = previous
