"""The argument checks' exact messages and the parameter store's promises (issue 16).

A check that raises the wrong exception type, or a message that names the wrong argument,
sends a user to the wrong place; mutation testing found these checks exercised only for
"it raises". Here each message is asserted whole, with torch's wording where torch has one,
and each promise of _parameters.ParameterStore (version bump, what backward keeps, attribute
rules, copies) is asserted by its effect.
"""
import copy
import re
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import functional as F
from fastrnn._parameters import ParameterStore


def exactly(message):
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("proj_size, error, message", [
    (True, TypeError, "proj_size should be of type int, got: bool"),
    (2.0, TypeError, "proj_size should be of type int, got: float"),
    (-1, ValueError, "proj_size should be a positive integer or zero to disable projections"),
    (4, ValueError, "proj_size has to be smaller than hidden_size"),
])
def test_lstm_proj_size_messages(proj_size, error, message):
    with pytest.raises(error, match=exactly(message)):
        fastrnn.LSTM(3, 4, proj_size=proj_size)


def test_lstm_proj_size_just_below_hidden_size_is_accepted():
    layer = fastrnn.LSTM(3, 4, proj_size=3)
    assert layer.state_dict()["weight_hr_l0"].shape == (3, 4)


def test_gradient_buffer_that_is_not_an_array():
    weights = fastrnn.RNN(3, 4, dtype="float64", seed=0).state_dict()
    _, _, context = F.rnn_forward(np.zeros((2, 1, 3)), weights)
    grads = {name: np.zeros_like(w) for name, w in weights.items()}
    grads["weight_ih_l0"] = [[0.0] * 3] * 4
    with pytest.raises(TypeError, match=exactly(
            "Expected gradient buffer 'weight_ih_l0' to be a NumPy array of shape (4, 3) and "
            "dtype float64, got list")):
        F.rnn_backward(context, np.zeros((2, 1, 4)), None, grads)


# ----------------------------------------------------------------------------- ParameterStore
def test_attribute_rules():
    layer = fastrnn.RNN(3, 4, seed=0)
    assert layer.parameters()[0] is layer.weight_ih_l0
    assert [p for _, p in layer.named_parameters()] == layer.parameters()
    with pytest.raises(AttributeError, match=exactly("'RNN' object has no attribute 'nothing'")):
        layer.nothing
    with pytest.raises(AttributeError, match=exactly(
            "cannot delete parameter 'weight_hh_l0' of RNN: the layer's structure is fixed "
            "when it is built")):
        del layer.weight_hh_l0
    layer.note = 1
    del layer.note
    assert not hasattr(layer, "note")


def test_a_store_before_its_parameters_behaves_like_an_object():
    """A subclass's __init__ may look attributes up before it sets _params."""
    store = ParameterStore()
    assert not hasattr(store, "weight_ih_l0")
    store.note = 1
    del store.note
    assert not hasattr(store, "note")


def test_load_state_dict_messages():
    layer = fastrnn.RNN(3, 4, seed=0)
    with pytest.raises(RuntimeError, match=exactly(
            "Error(s) in loading state_dict for RNN: missing key(s) ['bias_hh_l0'], unexpected "
            "key(s) ['extra']")):
        state = layer.state_dict()
        del state["bias_hh_l0"]
        layer.load_state_dict({**state, "extra": np.zeros(1)})
    ragged = [[1.0, 2.0], [3.0]]
    with pytest.raises(TypeError, match="^parameter 'weight_ih_l0': expected an array of shape "
                                        r"\(4, 3\), got list \("):
        layer.load_state_dict({"weight_ih_l0": ragged}, strict=False)
    with pytest.raises(TypeError, match=exactly(
            "parameter 'weight_ih_l0': expected real numbers of shape (4, 3), got an array of "
            "dtype <U1")):
        layer.load_state_dict({"weight_ih_l0": np.full((4, 3), "a")}, strict=False)


def test_backward_needs_this_threads_forward_with_these_parameters():
    layer = fastrnn.RNN(3, 4, seed=0)
    x, grad = np.zeros((2, 1, 3), np.float32), np.zeros((2, 1, 4), np.float32)
    first = ("RNN.backward() needs a forward pass first: call the layer on an input (outside "
             "fastrnn.no_grad(), in this thread) before calling backward()")
    with pytest.raises(RuntimeError, match=exactly(first)):
        layer.backward(grad)
    with fastrnn.no_grad():
        layer(x)
    with pytest.raises(RuntimeError, match=exactly(first)):
        layer.backward(grad)
    layer(x)
    layer.weight_hh_l0 = layer.weight_hh_l0 * 2
    with pytest.raises(RuntimeError, match=exactly(
            "one of the parameters of this RNN needed for gradient computation has been "
            "modified since the forward pass (by an optimizer step, load_state_dict or an "
            "assignment); run the forward pass again before backward()")):
        layer.backward(grad)
    layer(x)
    layer.backward(grad)


def test_zero_grad_and_copies():
    layer = fastrnn.RNN(3, 4, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    layer(x)
    layer.backward(np.ones((2, 1, 4), np.float32))
    assert any(np.any(g) for g in layer.grads.values())
    twin = copy.deepcopy(layer)
    twin.backward(np.ones((2, 1, 4), np.float32))      # the kept forward travels with a copy
    layer.zero_grad()
    assert all(not np.any(g) and g.dtype == np.float32 for g in layer.grads.values())


# ----------------------------------------------------------------------------- _checks
def test_dtype_messages_say_how_to_convert():
    layer = fastrnn.RNN(3, 4, dtype="float64", seed=0)
    with pytest.raises(TypeError, match=exactly(
            "Expected input of dtype float64 (the layer's dtype), got float32. Convert it with "
            ".astype(np.float64), or build the layer with dtype='float32' if float32 is what "
            "you want.")):
        layer(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(TypeError, match=exactly(
            "Expected input of dtype float64 (the layer's dtype), got int64. Convert it with "
            ".astype(np.float64).")):
        layer(np.zeros((2, 1, 3), np.int64))


def test_gradient_buffer_dtype_messages():
    weights = fastrnn.RNN(3, 4, dtype="float64", seed=0).state_dict()
    _, _, context = F.rnn_forward(np.zeros((2, 1, 3)), weights)
    for wrong, got in ((np.zeros((4, 3), ">f8"), ">f8"), (np.zeros((4, 3), "float32"), "float32"),
                       (np.zeros((4, 3), "<f4"), "float32")):
        grads = {name: np.zeros_like(w) for name, w in weights.items()}
        grads["weight_ih_l0"] = wrong
        order = " in native byte order" if got == ">f8" else ""
        with pytest.raises(TypeError, match=exactly(
                f"Expected gradient buffer 'weight_ih_l0' of dtype float64{order} (the layer's "
                f"dtype), got {got}")):
            F.rnn_backward(context, np.zeros((2, 1, 4)), None, grads)


def test_other_byte_order_float32_input_is_converted():
    layer = fastrnn.RNN(3, 4, dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer(x.astype(">f4"))[0], layer(x)[0])


def test_one_layer_dropout_warning_only_when_it_applies():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        fastrnn.RNN(3, 4, dropout=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastrnn.RNN(3, 4)
        fastrnn.RNN(3, 4, num_layers=2, dropout=0.3)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_gated_input_rank_message_has_no_tensor_word(cell):
    with pytest.raises(ValueError, match=exactly(
            f"{cell}: Expected input to be 2D or 3D, got 4D instead")):
        getattr(fastrnn, cell)(3, 4)(np.zeros((1, 2, 1, 3), np.float32))


def test_lstm_state_messages():
    layer = fastrnn.LSTM(3, 4)
    x = np.zeros((2, 1, 3), np.float32)
    h, c = np.zeros((1, 1, 4), np.float32), np.zeros((1, 1, 4), np.float32)
    with pytest.raises(ValueError, match=exactly(
            "For batched 3-D input, hx and cx should also be 3-D but got (3-D, 2-D) tensors")):
        layer(x, (h, c[0]))
    message = "Expected hidden[1] size (1, 1, 4), got [1, 1, 5]"
    with pytest.raises(ValueError, match=exactly(message)):
        layer(x, (h, np.zeros((1, 1, 5), np.float32)))


def test_empty_batch_first_sequence_is_refused():
    layer = fastrnn.RNN(3, 4, batch_first=True)
    message = "Expected sequence length to be larger than 0 in RNN"
    with pytest.raises(ValueError, match=exactly(message)):
        layer(np.zeros((2, 0, 3), np.float32))


def test_constructor_messages():
    with pytest.raises(ValueError, match=exactly(
            "dropout should be a number in range [0, 1] representing the probability of an "
            "element being zeroed")):
        fastrnn.RNN(3, 4, dropout=1.5)
    with pytest.raises(TypeError, match=exactly("batch_first should be of type bool, got: str")):
        fastrnn.RNN(3, 4, batch_first="yes")
    with pytest.warns(UserWarning) as record:
        fastrnn.GRU(3, 4, dropout=0.25)
    assert str(record[0].message) == (
        "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
        "expects num_layers greater than 1, but got dropout=0.25 and num_layers=1")


def test_a_no_grad_forward_drops_what_the_last_forward_kept():
    layer = fastrnn.RNN(3, 4, seed=0)
    x = np.zeros((2, 1, 3), np.float32)
    layer(x)
    with fastrnn.no_grad():
        layer(x)
    with pytest.raises(RuntimeError, match="^RNN.backward\\(\\) needs a forward pass first"):
        layer.backward(np.zeros((2, 1, 4), np.float32))
