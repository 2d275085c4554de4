"""fastrnn's own engines: ``fastrnn.RNN`` on a backend (cpu, numpy, cuda) and its ``step``.

Why only public calls: the layer's internals are rewritten often; the bench uses the
constructor, ``layer(x)``, ``layer.backward(grad_out)``, ``fastrnn.no_grad()``,
``load_state_dict`` and, when the layer has one, ``layer.step(x_t, h)`` (found with getattr),
so it keeps measuring what a user gets.
"""
import os

import numpy as np

from . import Runner, Skip


def unavailable(variant):
    import fastrnn
    if variant == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): no GPU to time"
    backend = "cpu" if variant == "step" else variant
    reason = fastrnn.backend_status()[backend]
    if reason is None and variant == "step" and _step_method(fastrnn.RNN(1, 1)) is None:
        return "fastrnn.RNN has no step method in this version"
    return reason


def prepare(variant, threads):
    """fastrnn.set_num_threads loads the kernels' BLAS (SciPy's) first, then sets every BLAS
    in the process: a threadpoolctl limit set before that first load would never reach it."""
    import fastrnn
    fastrnn.set_num_threads(threads)
    return None


def _layer(problem, backend="cpu"):
    """A fastrnn.RNN of the problem's shape holding the problem's weights."""
    import fastrnn
    shape = problem.shape
    layer = fastrnn.RNN(shape.I, shape.H, shape.layers, bidirectional=shape.bidirectional,
                        backend=backend)
    layer.load_state_dict(problem.weights)
    return layer


def _step_method(layer):
    return getattr(layer, "step", None)


def make_runner(variant, problem):
    if variant == "step":
        return _step_runner(problem)
    import fastrnn
    layer = _layer(problem, backend=variant)
    x, grad_out, sync = problem.x, problem.grad_out, lambda: None
    if variant == "cuda":
        from numba import cuda
        x, grad_out, sync = cuda.to_device(x), cuda.to_device(grad_out), cuda.synchronize

    def forward():
        layer(x)
        sync()

    def forward_backward():
        layer(x)
        layer.backward(grad_out)
        sync()

    def results():
        host = lambda a: a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
        output, h_n = layer(x)
        layer.zero_grad()
        grad_input, _ = layer.backward(grad_out)
        grads = {f"grad_{name}": host(grad) for name, grad in layer.grads.items()}
        return {"output": host(output), "h_n": host(h_n), "grad_input": host(grad_input),
                **grads}

    return Runner(forward, forward_backward, results, no_grad=fastrnn.no_grad,
                  threads=fastrnn.get_num_threads)


def _step_runner(problem):
    """T calls of ``h = layer.step(x_t, h)`` from h = 0: what a generation loop does.

    h is passed in hx's layout [layers * directions, B, H]; forward only (streaming)."""
    import fastrnn
    shape = problem.shape
    if shape.bidirectional:
        raise Skip("step is one time step forward; a bidirectional layer has none")
    layer = _layer(problem)
    step = _step_method(layer)
    h0 = np.zeros((shape.layers, shape.B, shape.H), dtype=np.float32)
    steps = [np.ascontiguousarray(x_t) for x_t in problem.x]

    def forward():
        h = h0
        for x_t in steps:
            h = step(x_t, h)

    def results():
        h = h0
        with fastrnn.no_grad():
            for x_t in steps:
                h = step(x_t, h)
        return {"h_n": np.asarray(h)}

    return Runner(forward, None, results, no_grad=fastrnn.no_grad,
                  threads=fastrnn.get_num_threads)
