"""The compiled 'cpu' backend against the NumPy reference, forward and every gradient."""
import itertools

import numpy as np
import pytest

import fastrnn
from helpers import assert_close, random_array

GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [True, False],
                              ["tanh", "relu"], [True, False], ["float32", "float64"]))


def make_pair(input_size, hidden_size, **kwargs):
    """The same layer (same seed, same parameters) on the reference and on the cpu backend."""
    reference = fastrnn.RNN(input_size, hidden_size, backend="numpy", seed=7, **kwargs)
    fast = fastrnn.RNN(input_size, hidden_size, backend="cpu", seed=7, **kwargs)
    for name, value in reference.state_dict().items():
        assert np.array_equal(value, fast.state_dict()[name])
    return reference, fast


def run_both(reference, fast, x, hx, rng, lengths=None):
    """Forward and backward on both layers with the same random upstream gradients."""
    out_ref, hn_ref = reference(x, hx, lengths=lengths)
    out_fast, hn_fast = fast(x, hx, lengths=lengths)
    grad_out = random_array(rng, out_ref.shape, out_ref.dtype)
    grad_hn = random_array(rng, hn_ref.shape, hn_ref.dtype)
    grads_ref = reference.backward(grad_out, grad_hn)
    grads_fast = fast.backward(grad_out, grad_hn)
    return (out_ref, hn_ref, *grads_ref), (out_fast, hn_fast, *grads_fast)


def assert_layers_agree(reference, fast, x, hx, rng, dtype, lengths=None):
    expected, actual = run_both(reference, fast, x, hx, rng, lengths)
    for what, a, e in zip(("output", "h_n", "grad_input", "grad_hx"), actual, expected):
        assert_close(a, e, dtype, what=what)
    for name in reference.grads:
        assert_close(fast.grads[name], reference.grads[name], dtype, what=name)


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,nonlinearity,with_hx,dtype", GRID)
def test_grid(num_layers, bidirectional, batch_first, bias, nonlinearity, with_hx, dtype):
    rng = np.random.default_rng(hash((num_layers, bidirectional, batch_first, bias)) % 2**32)
    T, B, I, H = 5, 3, 4, 6
    reference, fast = make_pair(I, H, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
                                batch_first=batch_first, bidirectional=bidirectional, dtype=dtype)
    x = random_array(rng, (B, T, I) if batch_first else (T, B, I), dtype)
    states = num_layers * (2 if bidirectional else 1)
    hx = random_array(rng, (states, B, H), dtype) if with_hx else None
    assert_layers_agree(reference, fast, x, hx, rng, dtype)


# ragged batches: unsorted lengths with ties, one full-length and one of a single step
RAGGED = {2: [2, 5], 3: [3, 5, 1], 4: [4, 1, 5, 4]}


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,nonlinearity,with_hx,dtype", GRID)
@pytest.mark.parametrize("B", sorted(RAGGED))
def test_ragged_grid(num_layers, bidirectional, batch_first, bias, nonlinearity, with_hx, dtype, B):
    """The same grid on ragged batches (the packed layout with batch_sizes shrinking)."""
    rng = np.random.default_rng(num_layers * 100 + B)
    T, I, H = 5, 4, 6
    reference, fast = make_pair(I, H, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
                                batch_first=batch_first, bidirectional=bidirectional, dtype=dtype)
    x = random_array(rng, (B, T, I) if batch_first else (T, B, I), dtype)
    states = num_layers * (2 if bidirectional else 1)
    hx = random_array(rng, (states, B, H), dtype) if with_hx else None
    assert_layers_agree(reference, fast, x, hx, rng, dtype, lengths=RAGGED[B])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("T,B", [(1, 1), (1, 4), (7, 1), (3, 0)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_edge_sizes(T, B, bidirectional, dtype):
    rng = np.random.default_rng(T * 10 + B)
    reference, fast = make_pair(3, 5, num_layers=2, bidirectional=bidirectional, dtype=dtype)
    x = random_array(rng, (T, B, 3), dtype)
    assert_layers_agree(reference, fast, x, None, rng, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched(dtype, with_hx):
    rng = np.random.default_rng(3)
    reference, fast = make_pair(4, 5, num_layers=2, bidirectional=True, dtype=dtype)
    x = random_array(rng, (6, 4), dtype)
    hx = random_array(rng, (4, 5), dtype) if with_hx else None
    assert_layers_agree(reference, fast, x, hx, rng, dtype)


@pytest.mark.parametrize("layout", ["strided", "fortran", "readonly", "transposed"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unusual_memory_layouts(layout, dtype):
    rng = np.random.default_rng(5)
    reference, fast = make_pair(4, 5, num_layers=2, bidirectional=True, dtype=dtype)
    base = random_array(rng, (6, 3, 8), dtype)
    x = {"strided": base[:, :, ::2],
         "fortran": np.asfortranarray(base[:, :, :4]),
         "readonly": base[:, :, :4].copy(),
         "transposed": np.ascontiguousarray(base[:, :, :4].transpose(1, 0, 2)).transpose(1, 0, 2)}[layout]
    if layout == "readonly":
        x.flags.writeable = False
    snapshot = x.copy()
    assert_layers_agree(reference, fast, x, None, rng, dtype)
    assert np.array_equal(x, snapshot), "the input was modified"


def test_long_sequence_float32_stays_within_tolerance():
    """Errors of the vectorised float32 tanh must not grow along a long sequence."""
    rng = np.random.default_rng(11)
    reference, fast = make_pair(16, 32, dtype="float32")
    x = random_array(rng, (200, 4, 16), "float32")
    assert_layers_agree(reference, fast, x, None, rng, "float32")


def test_functional_matches_layer():
    """rnn_forward/rnn_backward on plain arrays give what the layer gives."""
    rng = np.random.default_rng(2)
    layer = fastrnn.RNN(4, 5, num_layers=2, bidirectional=True, seed=1, dtype="float64")
    x = random_array(rng, (6, 3, 4), "float64")
    out, h_n = layer(x)
    grad_out = random_array(rng, out.shape, "float64")
    grad_x, grad_hx = layer.backward(grad_out)
    f_out, f_hn, context = fastrnn.functional.rnn_forward(x, layer.state_dict(), backend="cpu")
    f_grad_x, f_grad_hx, f_grads = fastrnn.functional.rnn_backward(context, grad_out)
    for what, a, e in (("output", f_out, out), ("h_n", f_hn, h_n), ("grad_x", f_grad_x, grad_x),
                       ("grad_hx", f_grad_hx, grad_hx)):
        assert_close(a, e, "float64", what=what)
    for name, grad in layer.grads.items():
        assert_close(f_grads[name], grad, "float64", what=name)
