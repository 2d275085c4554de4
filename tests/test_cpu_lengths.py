"""Variable-length batches through fastrnn.functional on the 'cpu' backend against the 'numpy'
reference backend: stacked layers, both directions, tanh/relu, with and without biases,
float32/float64, ragged and equal lengths (in the caller's order), each step-kernel variant,
and steps shared by two threads. Output, h_n, and the gradients of the input, h0 and every
parameter must agree.
"""
import itertools

import numpy as np
import pytest

import fastrnn
from fastrnn import functional
from fastrnn.backends import cpu
from helpers import assert_close
from packed_problems import step_kernel  # noqa: F401 - a fixture

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason="the compiled CPU kernels are not built")
kernels = cpu._rnn_cpu

T, B, I, H = 7, 5, 6, 32
LENGTHS = {"ragged": [4, 7, 1, 3, 4], "equal": [7] * 5}


def parameters(rng, layers, bidirectional, bias, dtype):
    shapes = functional.parameter_shapes(I, H, layers, bidirectional, bias)
    return {name: (rng.standard_normal(shape) / np.sqrt(H)).astype(dtype)
            for name, shape in shapes.items()}


def run(backend, weights, x, hx, lengths, grad_out, grad_hn, nonlinearity):
    out, h_n, context = functional.rnn_forward(x, weights, hx, lengths=lengths,
                                               nonlinearity=nonlinearity, backend=backend)
    grad_x, grad_hx, grads = functional.rnn_backward(context, grad_out, grad_hn)
    return {"output": out, "h_n": h_n, "grad_x": grad_x, "grad_hx": grad_hx, **grads}


def assert_cpu_matches_reference(layers, bidirectional, nonlinearity, bias, dtype, lengths,
                                 seed=0):
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    weights = parameters(rng, layers, bidirectional, bias, dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = (0.5 * rng.standard_normal((layers * D, B, H))).astype(dtype)
    grad_out = rng.standard_normal((T, B, D * H)).astype(dtype)
    grad_hn = rng.standard_normal((layers * D, B, H)).astype(dtype)
    args = (weights, x, hx, np.array(lengths), grad_out, grad_hn, nonlinearity)
    expected = run("numpy", *args)
    actual = run("cpu", *args)
    for name in expected:
        assert_close(actual[name], expected[name], dtype), name


GRID = list(itertools.product([1, 2], [False, True], ["tanh", "relu"], [True, False],
                              ["float32", "float64"]))


@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("layers,bidirectional,nonlinearity,bias,dtype", GRID)
def test_stacked_layers_match_the_reference(layers, bidirectional, nonlinearity, bias, dtype,
                                            lengths):
    assert_cpu_matches_reference(layers, bidirectional, nonlinearity, bias, dtype, lengths)


@pytest.mark.parametrize("step_kernel", ["avx512", "avx2"], indirect=True)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
def test_each_variant_with_one_and_two_step_threads(step_kernel, lengths, nonlinearity,
                                                    threads):
    previous = kernels.set_tuning(step_threading_min_macs=0, product_threading_min_macs=0)
    try:
        with fastrnn.num_threads(threads):
            assert kernels.planned_step_threads(B, H) == threads
            assert kernels.step_kernel_name() == step_kernel
            assert_cpu_matches_reference(2, True, nonlinearity, True, "float32", lengths)
    finally:
        kernels.set_tuning(**previous)
