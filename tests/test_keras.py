"""fastrnn.keras: Keras SimpleRNN weights <-> fastrnn / torch.nn.RNN state_dicts.

Two oracles: Keras's documented layout (a SimpleRNN step written here from Keras's docs:
h_t = act(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)), always run; and a real Keras
layer, when Keras installs (it is in the ``keras`` extra; CI has it), on its torch backend if
torch is installed (no JIT compiles to wait for), else its JAX backend (``KERAS_BACKEND`` set
by you wins). Both directions:
a Keras model's weights loaded into fastrnn.RNN, and fastrnn.RNN's weights set into Keras,
must give the same outputs on the same input.
"""
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn.keras import state_dict_from_keras, state_dict_to_keras

# Keras 3.15's own variables trip NumPy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
RTOL, ATOL = 1e-5, 1e-5      # float32, outputs in [-1, 1] (tanh) or O(1) (relu)
B, T, I, H = 3, 7, 5, 4


def random_keras_weights(rng, input_size, hidden, bidirectional, bias=True):
    """What SimpleRNN(hidden).get_weights() holds, filled with random numbers."""
    cell = lambda: [rng.uniform(-0.6, 0.6, (input_size, hidden)).astype(np.float32),
                    rng.uniform(-0.6, 0.6, (hidden, hidden)).astype(np.float32)] + (
                   [rng.uniform(-0.6, 0.6, hidden).astype(np.float32)] if bias else [])
    return cell() + cell() if bidirectional else cell()


def keras_stack(rng, num_layers, bidirectional, bias=True):
    sizes = [I] + [H * (2 if bidirectional else 1)] * (num_layers - 1)
    return [random_keras_weights(rng, size, H, bidirectional, bias) for size in sizes]


def keras_simple_rnn_documented(x, kernel, recurrent_kernel, bias, activation, backwards=False):
    """Keras's SimpleRNN over batch-first x [B, T, I], written from its documentation."""
    h = np.zeros((x.shape[0], kernel.shape[1]))
    steps = range(x.shape[1] - 1, -1, -1) if backwards else range(x.shape[1])
    out = np.zeros((x.shape[0], x.shape[1], kernel.shape[1]))
    for t in steps:
        h = activation(x[:, t] @ kernel + h @ recurrent_kernel + (0 if bias is None else bias))
        out[:, t] = h
    return out


def keras_stack_documented(x, layers, bidirectional, activation):
    for weights in layers:
        n = len(weights) // (2 if bidirectional else 1)
        cells = [weights[:n], weights[n:]] if bidirectional else [weights]
        outs = [keras_simple_rnn_documented(x, c[0], c[1], c[2] if len(c) == 3 else None,
                                            activation, backwards=d == 1)
                for d, c in enumerate(cells)]
        x = np.concatenate(outs, axis=-1)
    return x


ACTIVATIONS = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0)}


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_keras_layout_into_fastrnn_gives_keras_outputs(num_layers, bidirectional, bias,
                                                       nonlinearity):
    rng = np.random.default_rng(0)
    layers = keras_stack(rng, num_layers, bidirectional, bias)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    rnn = fastrnn.RNN(I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                      nonlinearity=nonlinearity, batch_first=True)
    rnn.load_state_dict(state_dict_from_keras(layers))
    output, _ = rnn(x)
    expected = keras_stack_documented(x.astype(np.float64), layers, bidirectional,
                                      ACTIVATIONS[nonlinearity])
    np.testing.assert_allclose(output, expected, rtol=RTOL, atol=ATOL)


def test_state_dict_names_shapes_and_bias_split():
    rng = np.random.default_rng(1)
    [[kernel, recurrent, bias, *backward]] = keras_stack(rng, 1, True)
    state = state_dict_from_keras([[kernel, recurrent, bias, *backward]])
    assert list(state) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                           "weight_ih_l0_reverse", "weight_hh_l0_reverse",
                           "bias_ih_l0_reverse", "bias_hh_l0_reverse"]
    np.testing.assert_array_equal(state["weight_ih_l0"], kernel.T)
    np.testing.assert_array_equal(state["weight_hh_l0"], recurrent.T)
    np.testing.assert_array_equal(state["bias_ih_l0"] + state["bias_hh_l0"], bias)
    np.testing.assert_array_equal(state["weight_ih_l0_reverse"], backward[0].T)
    assert all(a.flags.c_contiguous and a.dtype == np.float32 for a in state.values())


def test_fastrnn_to_keras_adds_the_two_biases_and_round_trips():
    rnn = fastrnn.RNN(I, H, num_layers=2, bidirectional=True, seed=3)
    state = rnn.state_dict()
    layers = state_dict_to_keras(state)
    assert [len(layer) for layer in layers] == [6, 6]
    assert [a.shape for a in layers[1]] == [(2 * H, H), (H, H), (H,)] * 2
    np.testing.assert_array_equal(layers[0][2], state["bias_ih_l0"] + state["bias_hh_l0"])
    np.testing.assert_array_equal(layers[1][3], state["weight_ih_l1_reverse"].T)
    back = state_dict_from_keras(layers)
    for name, value in back.items():
        if name.startswith("bias_hh"):
            assert not value.any()
        elif name.startswith("bias_ih"):
            ih, hh = name, name.replace("bias_ih", "bias_hh")
            np.testing.assert_array_equal(value, state[ih] + state[hh])
        else:
            np.testing.assert_array_equal(value, state[name])


def test_keras_layer_objects_are_read_through_get_weights():
    class FakeKerasLayer:
        def __init__(self, weights):
            self.weights_ = weights

        def get_weights(self):
            return self.weights_

    layers = keras_stack(np.random.default_rng(2), 2, False)
    from_objects = state_dict_from_keras([FakeKerasLayer(w) for w in layers])
    from_lists = state_dict_from_keras(layers)
    assert from_objects.keys() == from_lists.keys()
    assert all(np.array_equal(from_objects[k], from_lists[k]) for k in from_lists)


@pytest.mark.parametrize("layers, message", [
    ([], "at least one Keras layer"),
    ([np.zeros((I, H))], "expected a Keras layer or the list its get_weights() returns"),
    ([[np.zeros((I, H))] * 5], "got 5"),
    ([[np.zeros((I, H)), np.zeros((H, H)), np.zeros(H)], [np.zeros((H, H)), np.zeros((H, H))]],
     "same direction and bias use"),
    ([[np.zeros((I, H)), np.zeros((H, H + 1)), np.zeros(H)]],
     "layers[0] recurrent_kernel: expected shape [4, 4], got [4, 5]"),
    ([[np.zeros((I, H)), np.zeros((H, H)), np.zeros(H)],
      [np.zeros((I, H)), np.zeros((H, H)), np.zeros(H)]],
     "layers[1] kernel: expected shape [4, 4], got [5, 4]"),
    ([[np.zeros((I, H)), np.zeros((H, H)), np.zeros(H + 2)]],
     "layers[0] bias: expected shape [4], got [6]"),
])
def test_from_keras_refuses_what_is_not_a_simple_rnn_stack(layers, message):
    with pytest.raises((ValueError, TypeError)) as raised:
        state_dict_from_keras(layers)
    assert message in str(raised.value)


def test_to_keras_names_what_is_wrong_with_the_state_dict():
    state = fastrnn.RNN(I, H, num_layers=2).state_dict()
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['rnn.weight_ih_l0'\]"):
        state_dict_to_keras({"rnn.weight_ih_l0": state["weight_ih_l0"]})
    del state["bias_hh_l1"]
    with pytest.raises(ValueError, match=r"missing key\(s\) \['bias_hh_l1'\]"):
        state_dict_to_keras(state)


# ---------------------------------------------------------------- against a real Keras layer
def _import_keras():
    if "KERAS_BACKEND" not in os.environ:       # Keras reads it once, when it is imported
        for backend in ("torch", "jax"):
            if importlib.util.find_spec(backend):
                os.environ["KERAS_BACKEND"] = backend
                break
    return pytest.importorskip("keras")


def keras_model(keras, num_layers, bidirectional, nonlinearity, bias=True):
    """A Sequential stack of SimpleRNN layers returning every step, batch-first [B, T, *]."""
    layers = [keras.Input((T, I))]
    for _ in range(num_layers):
        layer = keras.layers.SimpleRNN(H, activation=nonlinearity, use_bias=bias,
                                       return_sequences=True)
        layers.append(keras.layers.Bidirectional(layer) if bidirectional else layer)
    return keras.Sequential(layers)


REAL_CASES = [(1, False, "tanh", True), (2, True, "tanh", True), (2, False, "relu", False)]


@pytest.mark.parametrize("num_layers, bidirectional, nonlinearity, bias", REAL_CASES)
def test_real_keras_model_into_fastrnn(num_layers, bidirectional, nonlinearity, bias):
    keras = _import_keras()
    rng = np.random.default_rng(4)
    model = keras_model(keras, num_layers, bidirectional, nonlinearity, bias)
    for layer, weights in zip(model.layers, keras_stack(rng, num_layers, bidirectional, bias)):
        layer.set_weights(weights)        # random biases too (Keras starts them at zero)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model(x))
    rnn = fastrnn.RNN(I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                      nonlinearity=nonlinearity, batch_first=True)
    rnn.load_state_dict(state_dict_from_keras(model.layers))
    output, _ = rnn(x)
    np.testing.assert_allclose(output, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("num_layers, bidirectional, nonlinearity, bias", REAL_CASES)
def test_fastrnn_into_real_keras_model(num_layers, bidirectional, nonlinearity, bias):
    keras = _import_keras()
    rnn = fastrnn.RNN(I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias,
                      nonlinearity=nonlinearity, batch_first=True, seed=5)
    model = keras_model(keras, num_layers, bidirectional, nonlinearity, bias)
    for layer, weights in zip(model.layers, state_dict_to_keras(rnn.state_dict())):
        layer.set_weights(weights)
    x = np.random.default_rng(6).standard_normal((B, T, I)).astype(np.float32)
    output, _ = rnn(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), output,
                               rtol=RTOL, atol=ATOL)


def test_readme_keras_example_runs(capsys):
    _import_keras()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
               if "fastrnn.keras" in b]
    exec(compile(block, "README Keras example", "exec"), {})
    assert capsys.readouterr().out.strip() == "True"
