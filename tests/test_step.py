"""``RNN.step``: one time step of every layer, the same maths as a forward over one step."""
import contextlib

import numpy as np
import pytest

import fastrnn
from fastrnn.backends.activations import activate
from helpers import assert_close, random_array

BACKENDS = ["numpy", "cpu"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_steps_replay_a_forward_over_the_sequence(backend, num_layers, nonlinearity, dtype):
    rng = np.random.default_rng(num_layers)
    layer = fastrnn.RNN(3, 5, num_layers, nonlinearity, backend=backend, dtype=dtype, seed=2)
    x = random_array(rng, (6, 2, 3), dtype)
    hx = random_array(rng, (num_layers, 2, 5), dtype)
    output, h_n = layer(x, hx)
    h = hx
    for t in range(6):
        h = layer.step(x[t], h)
        assert h.shape == (num_layers, 2, 5) and h.dtype == np.dtype(dtype)
        assert_close(h[-1], output[t], dtype)           # the top layer's output at step t
    assert_close(h, h_n, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("relu", [False, True])
def test_one_step_is_the_formula_layer_by_layer(backend, relu):
    """h_l = act(x_l W_ih^T + b_ih + h_l W_hh^T + b_hh), x_{l+1} = h_l (design.md's maths)."""
    rng = np.random.default_rng(4)
    layer = fastrnn.RNN(3, 5, num_layers=2, nonlinearity="relu" if relu else "tanh",
                        backend=backend, dtype="float64", seed=3)
    x, hx = random_array(rng, (2, 3), "float64"), random_array(rng, (2, 2, 5), "float64")
    p = layer.state_dict()
    expected, inputs = [], x
    for l in range(2):
        a = inputs @ p[f"weight_ih_l{l}"].T + p[f"bias_ih_l{l}"] + hx[l] @ p[f"weight_hh_l{l}"].T + p[f"bias_hh_l{l}"]
        inputs = activate(a, relu)
        expected.append(inputs)
    assert_close(layer.step(x, hx), np.stack(expected), "float64")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unbatched_step_and_zero_initial_state(backend):
    rng = np.random.default_rng(0)
    layer = fastrnn.RNN(3, 5, num_layers=2, backend=backend, dtype="float64", seed=0)
    x = random_array(rng, (3,), "float64")
    h = layer.step(x)
    assert h.shape == (2, 5)
    assert_close(h, layer(x[None])[1], "float64")
    assert_close(layer.step(x, np.zeros((2, 5))), h, "float64")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("target", ["fresh", "hx itself", "strided"])
def test_out_receives_the_new_state(backend, target):
    rng = np.random.default_rng(1)
    layer = fastrnn.RNN(4, 6, num_layers=2, backend=backend, dtype="float64", seed=1)
    x = random_array(rng, (3, 4), "float64")
    hx = random_array(rng, (2, 3, 6), "float64")
    expected = layer.step(x, hx)
    out = {"fresh": np.empty((2, 3, 6)), "hx itself": hx,
           "strided": np.empty((2, 3, 12))[:, :, ::2]}[target]
    result = layer.step(x, hx, out=out)
    assert result is out
    np.testing.assert_array_equal(out, expected)


def test_step_keeps_nothing_for_backward_and_leaves_the_last_forward_alone():
    rng = np.random.default_rng(2)
    layer = fastrnn.RNN(3, 4, dtype="float64", seed=0)
    x = random_array(rng, (5, 2, 3), "float64")
    out, _ = layer(x)
    grad = np.ones_like(out)
    expected = layer.backward(grad)[0]
    layer.step(x[0])
    np.testing.assert_array_equal(layer.backward(grad)[0], expected)


def test_dropout_applies_in_training_steps_like_in_forward():
    x = np.ones((2, 3), np.float32)
    layer = fastrnn.RNN(3, 8, num_layers=2, dropout=0.5, seed=0)
    steps = {tuple(layer.step(x)[-1].ravel().round(5)) for _ in range(5)}
    assert len(steps) > 1                              # masks differ from call to call
    layer.eval()
    assert_close(layer.step(x), fastrnn.RNN(3, 8, num_layers=2, seed=0).step(x), "float32")


@pytest.mark.parametrize("call,error,message", [
    (lambda l: l.step(np.zeros((2, 3, 3), np.float32)), ValueError,
     "Expected input to be 1D [input_size] or 2D [batch, input_size], got 3D"),
    (lambda l: l.step(np.zeros((2, 7), np.float32)), ValueError,
     "input.size(-1) must be equal to input_size. Expected 3, got 7"),
    (lambda l: l.step(np.zeros((2, 3), np.float32), np.zeros((2, 1, 4), np.float32)), ValueError,
     "Expected hidden size (2, 2, 4), got [2, 1, 4]"),
    (lambda l: l.step(np.zeros((2, 3))), TypeError, "Expected input of dtype float32"),
    (lambda l: l.step(np.zeros((2, 3), np.float32), out=np.zeros((2, 2, 5), np.float32)),
     ValueError, "Expected out of shape (2, 2, 4), got (2, 2, 5)"),
    (lambda l: l.step(np.zeros((2, 3), np.float32), out=np.zeros((2, 2, 4))), TypeError,
     "Expected out of dtype float32"),
])
def test_bad_step_arguments(call, error, message):
    layer = fastrnn.RNN(3, 4, num_layers=2)
    with pytest.raises(error) as caught:
        call(layer)
    assert message in str(caught.value)


def test_read_only_out_is_refused():
    out = np.zeros((1, 1, 4), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        fastrnn.RNN(3, 4).step(np.zeros((1, 3), np.float32), out=out)


def test_bidirectional_layer_cannot_step():
    with pytest.raises(ValueError, match="reverse direction needs the whole sequence"):
        fastrnn.RNN(3, 4, bidirectional=True).step(np.zeros(3, np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_out_receives_the_output(backend):
    rng = np.random.default_rng(3)
    layer = fastrnn.RNN(3, 4, num_layers=2, batch_first=True, backend=backend, dtype="float64")
    x = random_array(rng, (2, 5, 3), "float64")
    expected, _ = layer(x)
    for grad_mode in (True, False):
        out = np.empty((2, 5, 4))
        with contextlib.nullcontext() if grad_mode else fastrnn.no_grad():
            result, _ = layer(x, out=out)
        assert result is out
        np.testing.assert_array_equal(out, expected)
    layer.batch_first = False
    x = np.ascontiguousarray(x.swapaxes(0, 1))
    out = np.empty((5, 2, 4))
    with fastrnn.no_grad():
        layer(x, out=out)                       # written in place by the kernels
    np.testing.assert_array_equal(out, expected.swapaxes(0, 1))



def test_functional_step_draws_its_own_masks_when_given_no_generator():
    """step_prepared with dropout in training and no rng: masks from a fresh generator, as
    forward_prepared does (it raised AttributeError on None)."""
    weights = fastrnn.RNN(3, 4, num_layers=2, seed=0).state_dict()
    prepared = fastrnn.functional.prepare_weights(weights)
    x = np.ones((2, 3), np.float32)
    h = fastrnn.functional.step_prepared(prepared, x, dropout=1.0, training=True)
    plain = fastrnn.functional.step_prepared(prepared, x)
    assert h.shape == (2, 2, 4)
    np.testing.assert_array_equal(h[0], plain[0])          # the first layer sees no dropout
    assert not np.allclose(h[1], plain[1])                 # the second sees a zero input
