"""fastrnn's own engines: ``fastrnn.RNN`` / ``LSTM`` / ``GRU`` on a backend (cpu, numpy, cuda),
the same layer on a ragged batch padded to its longest sequence, and ``RNN.step``.

Why only public calls: the layer's internals are rewritten often; the bench uses the
constructor, ``layer(x, lengths=...)``, ``layer.backward(grad_out)``, ``fastrnn.no_grad()``,
``load_state_dict`` and, when the layer has one, ``layer.step(x_t, h)`` (found with getattr),
so it keeps measuring what a user gets.

The padded variant is what a user without ``lengths=`` runs on a ragged batch: the whole
[T, B] batch, then the padding's outputs masked away. With zero gradients past each length
its outputs and gradients equal the packed ones (one direction: step t sees only steps before
it); its final state is the padding's, so the agreement check leaves ``h_n`` out.
"""
import os

import numpy as np

from . import Runner, Skip
from ..agreement import layer_class, past_lengths, state_results


def unavailable(variant):
    import fastrnn
    if variant == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1): no GPU to time"
    backend = "cpu" if variant in ("step", "padded") else variant
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
    """A fastrnn layer of the problem's shape and cell holding the problem's weights."""
    shape = problem.shape
    layer = layer_class(shape.cell)(shape.I, shape.H, shape.layers,
                                    bidirectional=shape.bidirectional, backend=backend)
    layer.load_state_dict(problem.weights)
    return layer


def _step_method(layer):
    return getattr(layer, "step", None)


def make_runner(variant, problem):
    if variant == "step":
        return _step_runner(problem)
    if variant == "padded":
        return _padded_runner(problem)
    import fastrnn
    layer = _layer(problem, backend=variant)
    x, grad_out, lengths, sync = problem.x, problem.grad_out, problem.lengths, lambda: None
    if variant == "cuda":
        from numba import cuda
        x, grad_out, sync = cuda.to_device(x), cuda.to_device(grad_out), cuda.synchronize

    def forward():
        layer(x, lengths=lengths)
        sync()

    def forward_backward():
        layer(x, lengths=lengths)
        layer.backward(grad_out)
        sync()

    def results():
        host = lambda a: a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
        output, h_n = layer(x, lengths=lengths)
        layer.zero_grad()
        grad_input, _ = layer.backward(grad_out)
        grads = {f"grad_{name}": host(grad) for name, grad in layer.grads.items()}
        states = {name: host(state) for name, state in state_results(h_n).items()}
        return {"output": host(output), **states, "grad_input": host(grad_input), **grads}

    return Runner(forward, forward_backward, results, no_grad=fastrnn.no_grad,
                  threads=fastrnn.get_num_threads)


def _padded_runner(problem):
    """The ragged batch without lengths: every sequence runs all T steps (see the header)."""
    import fastrnn
    if problem.lengths is None:
        raise Skip("times ragged batches only (the ragged section)")
    if problem.shape.bidirectional:
        raise Skip("a padded batch's reverse direction starts in the padding: another problem")
    layer = _layer(problem)
    x, grad_out = problem.x, problem.grad_out
    padding = past_lengths(problem.lengths, problem.shape.T)

    def forward():
        layer(x)

    def forward_backward():
        layer(x)
        layer.backward(grad_out)

    def results():
        output, _ = layer(x)
        layer.zero_grad()
        grad_input, _ = layer.backward(grad_out)
        grads = {f"grad_{name}": np.array(grad) for name, grad in layer.grads.items()}
        return {"output": np.where(padding, 0, output), "grad_input": np.asarray(grad_input),
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
