"""``fastrnn.no_grad()``: forward passes that keep nothing for backward.

Inference should not pay for training: under no_grad the layer keeps no per-layer activations
after the call returns. A thread-local flag, like torch's, so threads do not see each other's mode.
"""
import contextlib
import threading

_mode = threading.local()


def is_grad_enabled():
    return getattr(_mode, "enabled", True)


@contextlib.contextmanager
def no_grad():
    previous = is_grad_enabled()
    _mode.enabled = False
    try:
        yield
    finally:
        _mode.enabled = previous
