"""fastrnn.functional's VALUES against an oracle that shares no code with fastrnn (issue 16).

The cpu-vs-reference tests cannot see a bug in functional.py: both backends are called
through it, so a wrong layout, a lost ``hx``, a skipped fast path or a dropped gradient
term changes both alike. Here every result is compared with a few lines of NumPy written from
torch's equations (``oracle``), and every gradient with central differences of the forward,
on every path the caller's arguments select: plain inference (need_backward=False), the
general path, batch_first, unbatched, ``lengths``, ``out=``, one ``step``, dropout in training.
Sizes are tiny, so the whole file runs in about a second.
"""
import re

import numpy as np
import pytest

import fastrnn
from fastrnn import functional as F
from helpers import assert_close

I, H, B, T = 3, 4, 2, 5
FORWARDS = {"RNN": F.rnn_forward, "LSTM": F.lstm_forward, "GRU": F.gru_forward}
BACKWARDS = {"RNN": F.rnn_backward, "LSTM": F.lstm_backward, "GRU": F.gru_backward}
MODES = {"RNN": "RNN_TANH", "LSTM": "LSTM", "GRU": "GRU"}
TOLERANCE = {"float32": 2e-5, "float64": 1e-10}


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def oracle_cell(cell, x, h, c, w):
    """One step of one layer-direction, torch's equations; (h, c) after it."""
    gi, gh = x @ w["ih"].T + w["b_ih"], h @ w["hh"].T + w["b_hh"]
    if cell == "RNN":
        return np.tanh(gi + gh), None
    if cell == "LSTM":
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        return sigmoid(o) * np.tanh(c), c
    (ri, zi, ni), (rh, zh, nh) = np.split(gi, 3, axis=-1), np.split(gh, 3, axis=-1)
    r, z = sigmoid(ri + rh), sigmoid(zi + zh)
    return (1 - z) * np.tanh(ni + r * nh) + z * h, None


def oracle(cell, x, weights, h0, c0, num_layers, directions):
    """(output [T, B, D*H], h_n, c_n) of a stack over time-major x, from h0/c0 [L*D, B, H]."""
    h_n, c_n = np.empty_like(h0), np.empty_like(h0)
    for layer in range(num_layers):
        outputs = []
        for d in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            w = {k: weights[f"{name}{suffix}"] for k, name in
                 [("ih", "weight_ih"), ("hh", "weight_hh"), ("b_ih", "bias_ih"),
                  ("b_hh", "bias_hh")]}
            h, c = h0[layer * directions + d], c0[layer * directions + d]
            steps = range(len(x) - 1, -1, -1) if d else range(len(x))
            out = np.empty(x.shape[:2] + (H,))
            for t in steps:
                h, c = oracle_cell(cell, x[t], h, c, w)
                out[t] = h
            h_n[layer * directions + d], c_n[layer * directions + d] = h, c
            outputs.append(out)
        x = np.concatenate(outputs, axis=-1)
    return x, h_n, c_n


def make_weights(cell, num_layers=2, bidirectional=False, dtype="float64", seed=0):
    layer = getattr(fastrnn, cell)(I, H, num_layers=num_layers, bidirectional=bidirectional,
                                   dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 1)
    # larger than the default init, so every term moves the result well above rounding
    return {k: (rng.standard_normal(v.shape) * 0.6).astype(dtype)
            for k, v in layer.state_dict().items()}


def initial_states(cell, rng, num_layers, directions, dtype):
    h0 = rng.standard_normal((num_layers * directions, B, H)).astype(dtype)
    c0 = rng.standard_normal(h0.shape).astype(dtype)
    return h0, c0, ((h0, c0) if cell == "LSTM" else h0)


def expected_states(cell, h_n, c_n):
    return (h_n, c_n) if cell == "LSTM" else h_n


def assert_states(actual, expected, cell, dtype):
    if cell == "LSTM":
        for got, want, what in zip(actual, expected, ("h_n", "c_n")):
            assert_close(got, want.astype(dtype), dtype, TOLERANCE[dtype], what)
    else:
        assert_close(actual, expected.astype(dtype), dtype, TOLERANCE[dtype], "h_n")


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("need_backward", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_hx", [True, False])
def test_forward_matches_oracle(cell, backend, need_backward, dtype, with_hx):
    """Plain time-major input: the fast inference path (need_backward=False) and the general
    one, with and without hx, both give torch's equations' values."""
    rng = np.random.default_rng(3)
    weights = make_weights(cell, dtype=dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0, hx = initial_states(cell, rng, 2, 1, dtype)
    if not with_hx:
        h0, c0, hx = np.zeros_like(h0), np.zeros_like(c0), None
    out, states, context = FORWARDS[cell](x, weights, hx, backend=backend,
                                          need_backward=need_backward)
    want, h_n, c_n = oracle(cell, x.astype(float), weights, h0, c0, 2, 1)
    assert (context is not None) == need_backward
    assert_close(out, want.astype(dtype), dtype, TOLERANCE[dtype], "output")
    assert_states(states, expected_states(cell, h_n, c_n), cell, dtype)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("need_backward", [True, False])
def test_batch_first_bidirectional_matches_oracle(cell, need_backward):
    rng = np.random.default_rng(4)
    weights = make_weights(cell, bidirectional=True)
    x = rng.standard_normal((B, T, I))
    h0, c0, hx = initial_states(cell, rng, 2, 2, "float64")
    out, states, _ = FORWARDS[cell](x, weights, hx, batch_first=True, backend="cpu",
                                    need_backward=need_backward)
    want, h_n, c_n = oracle(cell, x.transpose(1, 0, 2), weights, h0, c0, 2, 2)
    assert_close(out, want.transpose(1, 0, 2), "float64", what="output")
    assert_states(states, expected_states(cell, h_n, c_n), cell, "float64")


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_unbatched_matches_oracle(cell):
    rng = np.random.default_rng(5)
    weights = make_weights(cell)
    x = rng.standard_normal((T, I))
    h0, c0, _ = initial_states(cell, rng, 2, 1, "float64")
    hx = (h0[:, 0], c0[:, 0]) if cell == "LSTM" else h0[:, 0]
    for need_backward in (True, False):
        out, states, _ = FORWARDS[cell](x, weights, hx, backend="cpu",
                                        need_backward=need_backward)
        want, h_n, c_n = oracle(cell, x[:, None], weights, h0[:, :1], c0[:, :1], 2, 1)
        assert_close(out, want[:, 0], "float64", what="output")
        assert_states(states, expected_states(cell, h_n[:, 0], c_n[:, 0]), cell, "float64")


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_lengths_match_each_sequence_alone(cell, batch_first):
    """Sequence b is its first lengths[b] steps (zeros after), in the caller's batch order,
    with its own h0 row; its final state is the state after its last step."""
    rng = np.random.default_rng(6)
    lengths = np.array([2, T, 3])
    weights = make_weights(cell, bidirectional=True)
    x = rng.standard_normal((T, 3, I))
    h0 = rng.standard_normal((4, 3, H))
    c0 = rng.standard_normal((4, 3, H))
    hx = (h0, c0) if cell == "LSTM" else h0
    given = x.transpose(1, 0, 2) if batch_first else x
    out, states, _ = FORWARDS[cell](given, weights, hx, lengths=lengths, batch_first=batch_first,
                                    backend="cpu")
    if batch_first:
        out = out.transpose(1, 0, 2)
    h_n = states[0] if cell == "LSTM" else states
    for b, n in enumerate(lengths):
        want, want_h, want_c = oracle(cell, x[:n, b:b + 1], weights, h0[:, b:b + 1],
                                      c0[:, b:b + 1], 2, 2)
        assert_close(out[:n, b:b + 1], want, "float64", what=f"output of sequence {b}")
        assert not np.any(out[n:, b]), "output past a sequence's length must be zero"
        assert_close(h_n[:, b:b + 1], want_h, "float64", what=f"h_n of sequence {b}")
        if cell == "LSTM":
            assert_close(states[1][:, b:b + 1], want_c, "float64", what=f"c_n of {b}")


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_out_buffer_receives_the_output(cell):
    rng = np.random.default_rng(7)
    weights = make_weights(cell)
    x = rng.standard_normal((T, B, I))
    zeros = np.zeros((2, B, H))
    for need_backward in (True, False):
        out = np.full((T, B, H), np.nan)
        result, _, _ = FORWARDS[cell](x, weights, backend="cpu", out=out,
                                      need_backward=need_backward)
        assert result is out
        assert_close(out, oracle(cell, x, weights, zeros, zeros, 2, 1)[0], "float64")


# ----------------------------------------------------------------------------- backward
def directional_loss(cell, x, weights, hx, g_out, g_states, lengths=None, dropout=0.0):
    """<g_out, output> + <g_states, final states>: its gradient is what backward returns
    (with dropout, the same masks on every call: the rng is seeded alike)."""
    out, states, _ = FORWARDS[cell](x, weights, hx, backend="numpy", lengths=lengths,
                                    need_backward=False, dropout=dropout, training=True,
                                    rng=np.random.default_rng(99))
    states = states if cell == "LSTM" else (states,)
    return np.sum(out * g_out) + sum(np.sum(s * g) for s, g in zip(states, g_states))


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("with_lengths, dropout", [(False, 0.0), (True, 0.0), (False, 0.4)])
def test_backward_matches_central_differences(cell, backend, with_lengths, dropout):
    """Every gradient backward returns (input, hx, each parameter, with grad_h_n given) is
    the derivative of <grad_output, output> + <grad_h_n, h_n> along a random direction."""
    rng = np.random.default_rng(8)
    weights = make_weights(cell, bidirectional=True)
    x = rng.standard_normal((T, B, I))
    h0, c0, hx = initial_states(cell, rng, 2, 2, "float64")
    lengths = np.array([T, 3]) if with_lengths else None
    g_out = rng.standard_normal((T, B, 2 * H))
    if with_lengths:
        g_out[3:, 1] = 0      # past a length the output is a constant zero
    g_states = tuple(rng.standard_normal(h0.shape) for _ in range(2 if cell == "LSTM" else 1))
    _, _, context = FORWARDS[cell](x, weights, hx, backend=backend, lengths=lengths,
                                   dropout=dropout, training=True, rng=np.random.default_rng(99))
    grad_h_n = g_states if cell == "LSTM" else g_states[0]
    grad_x, grad_hx, grads = BACKWARDS[cell](context, g_out, grad_h_n)
    inputs = {"x": x, "h0": h0, **weights}
    if cell == "LSTM":
        inputs["c0"] = c0
        grad_hx = {"h0": grad_hx[0], "c0": grad_hx[1]}
    else:
        grad_hx = {"h0": grad_hx}
    analytic = {"x": grad_x, **grad_hx, **grads}

    def loss():
        states = (inputs["h0"], inputs["c0"]) if cell == "LSTM" else inputs["h0"]
        return directional_loss(cell, inputs["x"], weights, states, g_out, g_states, lengths,
                                dropout)

    for name, array in inputs.items():
        direction = rng.standard_normal(array.shape)
        saved, eps = array.copy(), 1e-6
        array += eps * direction
        plus = loss()
        array[...] = saved - eps * direction
        minus = loss()
        array[...] = saved
        numeric = (plus - minus) / (2 * eps)
        along = np.sum(analytic[name] * direction)
        assert along == pytest.approx(numeric, rel=1e-6, abs=1e-8), name


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_backward_adds_into_the_given_grads(cell):
    """Parameter gradients are ADDED to the caller's buffers, which are returned."""
    rng = np.random.default_rng(9)
    weights = make_weights(cell)
    x = rng.standard_normal((T, B, I))
    g_out = rng.standard_normal((T, B, H))
    _, _, context = FORWARDS[cell](x, weights, backend="cpu")
    fresh = BACKWARDS[cell](context, g_out)[2]
    buffers = {name: np.ones_like(w) for name, w in weights.items()}
    returned = BACKWARDS[cell](context, g_out, None, buffers)[2]
    assert returned is buffers
    for name in weights:
        assert_close(buffers[name], fresh[name] + 1, "float64", what=name)


def test_lstm_backward_takes_either_member_of_grad_h_n():
    """(grad_h_n, None) and (None, grad_c_n) are the two halves of the full gradient."""
    rng = np.random.default_rng(10)
    weights = make_weights("LSTM")
    x = rng.standard_normal((T, B, I))
    g_out = np.zeros((T, B, H))
    g_h, g_c = rng.standard_normal((2, B, H)), rng.standard_normal((2, B, H))
    _, _, context = F.lstm_forward(x, weights, backend="cpu")
    both = F.lstm_backward(context, g_out, (g_h, g_c))[0]
    only_h = F.lstm_backward(context, g_out, (g_h, None))[0]
    only_c = F.lstm_backward(context, g_out, (None, g_c))[0]
    assert np.any(only_h) and np.any(only_c)
    assert_close(only_h + only_c, both, "float64", what="grad_x")


# ----------------------------------------------------------------------------- step
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_matches_oracle_and_writes_out_in_place(cell, dtype):
    rng = np.random.default_rng(11)
    weights = make_weights(cell, dtype=dtype)
    prepared = F.prepare_weights(weights, MODES[cell], "cpu")
    x = rng.standard_normal((1, B, I)).astype(dtype)
    h0, c0, hx = initial_states(cell, rng, 2, 1, dtype)
    _, h_n, c_n = oracle(cell, x.astype(float), weights, h0, c0, 2, 1)
    assert_states(F.step_prepared(prepared, x[0], hx), expected_states(cell, h_n, c_n),
                  cell, dtype)
    unbatched = (hx[0][:, 0], hx[1][:, 0]) if cell == "LSTM" else hx[:, 0]
    got = F.step_prepared(prepared, x[0, 0], unbatched)
    want = (h_n[:, 0], c_n[:, 0]) if cell == "LSTM" else h_n[:, 0]
    assert_states(got, want, cell, dtype)
    returned = F.step_prepared(prepared, x[0], hx, out=hx)       # in place: out is hx
    assert returned is hx
    assert_states(hx, expected_states(cell, h_n, c_n), cell, dtype)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_step_into_separate_out_leaves_hx(cell):
    rng = np.random.default_rng(12)
    weights = make_weights(cell)
    prepared = F.prepare_weights(weights, MODES[cell], "cpu")
    x = rng.standard_normal((B, I))
    h0, c0, hx = initial_states(cell, rng, 2, 1, "float64")
    out = tuple(np.full(h0.shape, np.nan) for _ in range(2)) if cell == "LSTM" \
        else np.full(h0.shape, np.nan)
    kept = (h0.copy(), c0.copy())
    assert F.step_prepared(prepared, x, hx, out=out) is out
    _, h_n, c_n = oracle(cell, x[None], weights, h0, c0, 2, 1)
    assert_states(out, expected_states(cell, h_n, c_n), cell, "float64")
    np.testing.assert_array_equal(h0, kept[0])
    np.testing.assert_array_equal(c0, kept[1])


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_step_with_dropout_scales_the_kept_units(cell):
    """In training, layer 2 sees layer 1's new h times the mask keep / (1 - p) drawn from rng
    (shape [L-1, B, H]); out of training, or with p = 0, no mask at all."""
    p, rng = 0.5, np.random.default_rng(13)
    weights = make_weights(cell)
    prepared = F.prepare_weights(weights, MODES[cell], "cpu")
    x = rng.standard_normal((B, I))
    h0, c0, hx = initial_states(cell, rng, 2, 1, "float64")
    mask = F.dropout_masks(np.random.default_rng(14), (1, B, H), p, "float64")[0]
    assert set(np.unique(mask)) == {0.0, 2.0}
    got = F.step_prepared(prepared, x, hx, dropout=p, training=True,
                          rng=np.random.default_rng(14))
    first = {k: v for k, v in weights.items() if k.endswith("_l0")}
    second = {k.replace("_l1", "_l0"): v for k, v in weights.items() if k.endswith("_l1")}
    h1, c1 = oracle_cell(cell, x, h0[0], c0[0], _cell_weights(first))
    h2, c2 = oracle_cell(cell, h1 * mask, h0[1], c0[1], _cell_weights(second))
    assert_states(got, expected_states(cell, np.stack([h1, h2]), np.stack([c1, c2])),
                  cell, "float64")
    _, h_n, c_n = oracle(cell, x[None], weights, h0, c0, 2, 1)
    for training, dropout in ((False, p), (True, 0.0)):
        plain = F.step_prepared(prepared, x, hx, dropout=dropout, training=training,
                                rng=np.random.default_rng(14))
        assert_states(plain, expected_states(cell, h_n, c_n), cell, "float64")


def _cell_weights(layer_weights):
    return {k: layer_weights[f"{name}_l0"] for k, name in
            [("ih", "weight_ih"), ("hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh")]}


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_forward_dropout_uses_the_masks_of_rng(cell):
    """A two-layer forward in training: layer 2's input is layer 1's output times the mask
    drawn from rng, [L-1, N, H] with N = T*B rows in time-major order."""
    p, rng = 0.3, np.random.default_rng(15)
    weights = make_weights(cell)
    x = rng.standard_normal((T, B, I))
    mask = F.dropout_masks(np.random.default_rng(16), (1, T * B, H), p, "float64")
    assert set(np.unique(mask)) == {0.0, 1 / (1 - p)}      # inverted dropout's scale
    out, _, _ = FORWARDS[cell](x, weights, dropout=p, training=True, backend="cpu",
                               rng=np.random.default_rng(16))
    first = {k: v for k, v in weights.items() if k.endswith("_l0")}
    second = {k.replace("_l1", "_l0"): v for k, v in weights.items() if k.endswith("_l1")}
    zeros = np.zeros((1, B, H))
    hidden = oracle(cell, x, first, zeros, zeros, 1, 1)[0]
    want = oracle(cell, hidden * mask.reshape(T, B, H), second, zeros, zeros, 1, 1)[0]
    assert_close(out, want, "float64", what="output")


# ----------------------------------------------------------------------------- messages
def test_out_of_wrong_shape_dtype_or_type_is_refused_by_name():
    weights = make_weights("RNN")
    x = np.zeros((T, B, I))
    with pytest.raises(ValueError, match=r"out.*\(5, 2, 4\)"):
        F.rnn_forward(x, weights, out=np.zeros((T, B, H + 1)))
    with pytest.raises(TypeError, match="Expected out of dtype float64"):
        F.rnn_forward(x, weights, out=np.zeros((T, B, H), np.float32))
    with pytest.raises(TypeError, match=r"Expected out to be a NumPy array of shape "
                                        r"\(5, 2, 4\) and dtype float64, got list"):
        F.rnn_forward(x, weights, out=[0.0])


def test_backward_messages_name_the_caller_and_the_cell():
    weights = make_weights("LSTM")
    x = np.zeros((T, B, I))
    with pytest.raises(RuntimeError, match=r"^rnn_backward needs the context of a forward run "
                                           r"with need_backward=True$"):
        F.rnn_backward(None, np.zeros((T, B, H)))
    with pytest.raises(RuntimeError, match="need_backward=True, got dict"):
        F.gru_backward({}, np.zeros((T, B, H)))
    _, _, context = F.lstm_forward(x, weights)
    with pytest.raises(RuntimeError, match=r"^rnn_backward needs the context of a forward of "
                                           r"the RNN cell, got one of the LSTM cell$"):
        F.rnn_backward(context, np.zeros((T, B, H)))
    with pytest.raises(ValueError, match=r"grad_h_n\[1\]"):
        F.lstm_backward(context, np.zeros((T, B, H)), (np.zeros((2, B, H)), np.zeros((2, B))))
    with pytest.raises(ValueError, match=r"grad_h_n\[0\]"):
        F.lstm_backward(context, np.zeros((T, B, H)), (np.zeros((2, 1, H)), None))


def test_gradient_buffer_messages():
    weights = make_weights("RNN")
    _, _, context = F.rnn_forward(np.zeros((T, B, I)), weights)
    grad = np.zeros((T, B, H))
    with pytest.raises(TypeError, match="grads must be a dict keyed by parameter name, got list"):
        F.rnn_backward(context, grad, None, [])
    partial = {k: np.zeros_like(v) for k, v in weights.items() if k != "bias_hh_l1"}
    with pytest.raises(ValueError, match=r"grads is missing the gradient buffer\(s\) "
                                         r"\['bias_hh_l1'\]"):
        F.rnn_backward(context, grad, None, partial)
    with pytest.raises(ValueError, match="grad_h_n"):
        F.rnn_backward(context, grad, np.zeros((2, B + 1, H)))


def one_step_problem(cell, seed):
    """A two-layer cell's prepared weights, an input [B, I], the initial states (h0, c0, hx)
    and the oracle's states after one step (h_n, c_n)."""
    rng = np.random.default_rng(seed)
    weights = make_weights(cell)
    prepared = F.prepare_weights(weights, MODES[cell], "cpu")
    x = rng.standard_normal((B, I))
    h0, c0, hx = initial_states(cell, rng, 2, 1, "float64")
    _, h_n, c_n = oracle(cell, x[None], weights, h0, c0, 2, 1)
    return prepared, x, (h0, c0, hx), (h_n, c_n)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("training, dropout", [(False, 0.5), (True, 0.0)])
def test_step_of_converted_input_draws_no_mask_outside_dropout_training(cell, training, dropout):
    """Input the fast path cannot take as it is (a list, another dtype) goes the general way:
    same values, and no mask (and no rng needed) unless training with dropout > 0."""
    prepared, x, (h0, c0, hx), (h_n, c_n) = one_step_problem(cell, seed=17)
    for given in (x.tolist(), np.asfortranarray(x)):
        got = F.step_prepared(prepared, given, hx, dropout=dropout, training=training)
        assert_states(got, expected_states(cell, h_n, c_n), cell, "float64")


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_unbatched_step_with_ready_states(cell):
    """Unbatched input [I] and contiguous states [L, H]: the kernels see a batch of one."""
    rng = np.random.default_rng(18)
    weights = make_weights(cell)
    prepared = F.prepare_weights(weights, MODES[cell], "cpu")
    x = rng.standard_normal(I)
    h0, c0 = rng.standard_normal((2, 2, H))
    hx = (h0, c0) if cell == "LSTM" else h0
    _, h_n, c_n = oracle(cell, x[None, None], weights, h0[:, None], c0[:, None], 2, 1)
    want = expected_states(cell, h_n[:, 0], c_n[:, 0])
    assert_states(F.step_prepared(prepared, x, hx), want, cell, "float64")
    out = (np.empty((2, H)), np.empty((2, H))) if cell == "LSTM" else np.empty((2, H))
    assert F.step_prepared(prepared, x, hx, out=out) is out
    assert_states(out, want, cell, "float64")


@pytest.mark.parametrize("cell", ["RNN", "LSTM"])
def test_step_refuses_a_read_only_or_misshapen_out(cell):
    weights = make_weights(cell)
    prepared = F.prepare_weights(weights, MODES[cell], "cpu")
    x, state = np.zeros((B, I)), np.zeros((2, B, H))
    hx = (state, state.copy()) if cell == "LSTM" else state
    frozen = np.zeros((2, B, H))
    frozen.flags.writeable = False
    out = (np.zeros((2, B, H)), frozen) if cell == "LSTM" else frozen
    last = "out[1]" if cell == "LSTM" else "out"
    with pytest.raises(ValueError, match=rf"^{re.escape(last)} is read-only"):
        F.step_prepared(prepared, x, hx, out=out)
    wrong = (np.zeros((2, B, H)), np.zeros((2, B, H + 1))) if cell == "LSTM" \
        else np.zeros((2, B, H + 1))
    with pytest.raises(ValueError, match=rf"^Expected {re.escape(last)} of shape \(2, 2, 4\)"):
        F.step_prepared(prepared, x, hx, out=wrong)
    if cell == "LSTM":
        with pytest.raises(TypeError, match=r"^LSTM: Expected out to be a tuple \(h, c\)"):
            F.step_prepared(prepared, x, hx, out=np.zeros((2, B, H)))


def test_step_names_the_misshapen_member_of_hx():
    prepared = F.prepare_weights(make_weights("LSTM"), "LSTM", "cpu")
    hx = (np.zeros((2, B, H)), np.zeros((2, B, H + 1)))
    message = r"^Expected hidden\[1\] size \(2, 2, 4\), got \[2, 2, 5\]$"
    with pytest.raises(ValueError, match=message):
        F.step_prepared(prepared, np.zeros((B, I)), hx)
    with pytest.raises(ValueError, match=r"^LSTM.step: Expected input to be 1D"):
        F.step_prepared(prepared, np.zeros((1, B, I)), None)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_general_step_writes_out_apart_or_in_place(cell):
    """A converted input (a list) takes the general path: ``out`` apart from hx is written
    directly, ``out`` that is hx (unbatched too) receives a copy; dropout without training=True
    drops nothing (training defaults to False)."""
    prepared, x, (h0, c0, _), (h_n, c_n) = one_step_problem(cell, seed=19)
    pair = cell == "LSTM"
    apart = (np.empty_like(h0), np.empty_like(c0)) if pair else np.empty_like(h0)
    hx = (h0.copy(), c0.copy()) if pair else h0.copy()
    assert F.step_prepared(prepared, x.tolist(), hx, out=apart, dropout=0.9) is apart
    assert_states(apart, expected_states(cell, h_n, c_n), cell, "float64")
    one = tuple(np.ascontiguousarray(s[:, 0]) for s in (h0, c0))
    hx = one if pair else one[0]
    assert F.step_prepared(prepared, x[0].tolist(), hx, out=hx) is hx
    assert_states(hx, expected_states(cell, h_n[:, 0], c_n[:, 0]), cell, "float64")


@pytest.mark.parametrize("need_backward", [True, False])
def test_inference_takes_and_checks_what_the_general_path_does(need_backward):
    """need_backward=False starts on the fast path, which must hand every call it cannot take
    as it is to the general path: lists convert, wrong dtypes, sizes and lengths are refused
    with the same messages."""
    rng = np.random.default_rng(20)
    weights = make_weights("GRU")
    x, h0 = rng.standard_normal((T, B, I)), rng.standard_normal((2, B, H))
    want = oracle("GRU", x, weights, h0, h0, 2, 1)[0]

    def forward(given, hx=None):
        return F.gru_forward(given, weights, hx, backend="cpu", need_backward=need_backward)[0]

    assert_close(forward(x.tolist(), h0.tolist()), want, "float64", what="lists")
    assert_close(forward(np.asfortranarray(x), h0), want, "float64", what="strided x")
    with pytest.raises(TypeError, match="^Expected input of dtype float64"):
        forward(x.astype(np.float32))
    with pytest.raises(ValueError, match="^input.size\\(-1\\) must be equal to input_size"):
        forward(np.zeros((T, B, I + 1)))
    with pytest.raises(ValueError, match="^Expected sequence length to be larger than 0"):
        forward(np.zeros((0, B, I)))
    with pytest.raises(ValueError, match=r"^Expected hidden size \(2, 2, 4\), got \[2, 3, 4\]$"):
        forward(x, np.zeros((2, 3, H)))


def test_step_refuses_a_zero_dimensional_input():
    prepared = F.prepare_weights(make_weights("RNN"), "RNN_TANH", "cpu")
    with pytest.raises(ValueError, match=r"^RNN.step: Expected input to be 1D .* got 0D"):
        F.step_prepared(prepared, np.zeros(()), None)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_defaults_are_no_dropout_no_training_and_auto_backend(cell, monkeypatch):
    """Called with defaults, a forward drops nothing (dropout given without training=True
    neither); 'auto' picks the compiled 'cpu' backend on the host, also on its first call."""
    monkeypatch.setattr(F, "_AUTO_HOST", {})
    assert F.resolve_backend_name("auto", np.zeros(1), MODES[cell]) == "cpu"
    assert F.resolve_backend_name("numpy", None, MODES[cell]) == "numpy"
    rng = np.random.default_rng(21)
    weights = make_weights(cell)
    x = rng.standard_normal((T, B, I))
    zeros = np.zeros((2, B, H))
    want = oracle(cell, x, weights, zeros, zeros, 2, 1)[0]
    forward = FORWARDS[cell]
    assert_close(forward(x, weights)[0], want, "float64", what="defaults")
    assert_close(forward(x, weights, dropout=0.9)[0], want, "float64", what="no training")
    assert_close(forward(x, weights, training=True)[0], want, "float64", what="no dropout")


def test_dropout_masks_of_p_one_are_zeros_of_the_dtype():
    masks = F.dropout_masks(np.random.default_rng(0), (2, 3), 1.0, "float32")
    assert masks.shape == (2, 3) and masks.dtype == np.float32 and not masks.any()


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_float32_backward_makes_float32_gradients(cell):
    rng = np.random.default_rng(22)
    weights = make_weights(cell, dtype="float32")
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    g_out = rng.standard_normal((T, B, H)).astype(np.float32)
    _, _, context = FORWARDS[cell](x, weights, backend="cpu")
    _, _, context64 = FORWARDS[cell](x.astype(float), {k: v.astype(float) for k, v in
                                                       weights.items()}, backend="cpu")
    grads = BACKWARDS[cell](context, g_out)[2]
    grads64 = BACKWARDS[cell](context64, g_out.astype(float))[2]
    for name, grad in grads.items():
        assert_close(grad, grads64[name].astype(np.float32), "float32", 1e-4, what=name)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_backward_names_each_wrong_argument(cell):
    weights = make_weights(cell)
    _, _, context = FORWARDS[cell](np.zeros((T, B, I)), weights, backend="cpu")
    backward, name = BACKWARDS[cell], BACKWARDS[cell].__name__
    grad = np.zeros((T, B, H))
    with pytest.raises(RuntimeError, match=rf"^{name} needs the context of a forward run"):
        backward(None, grad)
    with pytest.raises(ValueError, match=r"^Expected grad_output of shape \(5, 2, 4\)"):
        backward(context, np.zeros((T, B, H + 1)))
    with pytest.raises(TypeError, match="^Expected grad_output of dtype float64"):
        backward(context, grad.astype(np.float32))
    if cell == "LSTM":
        with pytest.raises(TypeError, match=r"^LSTM: Expected grad_h_n to be a tuple \(h, c\)"):
            backward(context, grad, np.zeros((2, B, H)))
        with pytest.raises(TypeError, match=r"^Expected grad_h_n\[1\] of dtype float64"):
            backward(context, grad, (None, np.zeros((2, B, H), np.float32)))
    else:
        with pytest.raises(ValueError, match=r"^Expected grad_h_n of shape \(2, 2, 4\)"):
            backward(context, grad, np.zeros((2, B + 1, H)))
        with pytest.raises(TypeError, match="^Expected grad_h_n of dtype float64"):
            backward(context, grad, np.zeros((2, B, H), np.float32))


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_forward_prepared_defaults(cell):
    """forward_prepared's own defaults: a context (need_backward), no dropout unless both
    training=True and dropout > 0."""
    rng = np.random.default_rng(23)
    weights = make_weights(cell)
    prepared = F.prepare_weights(weights, MODES[cell], "cpu")
    x = rng.standard_normal((T, B, I))
    zeros = np.zeros((2, B, H))
    want = oracle(cell, x, weights, zeros, zeros, 2, 1)[0]
    out, _, context = F.forward_prepared(prepared, x)
    assert context is not None
    assert_close(out, want, "float64", what="defaults")
    assert_close(F.forward_prepared(prepared, x, training=True)[0], want, "float64")
    assert_close(F.forward_prepared(prepared, x, dropout=0.5)[0], want, "float64")


@pytest.mark.parametrize("need_backward", [True, False])
def test_fast_inference_checks_and_converts_hx_too(need_backward):
    """Batch-first input and an hx that is a list, strided or of another dtype: the same
    values or the same messages on both paths."""
    rng = np.random.default_rng(24)
    weights = make_weights("RNN")
    x, h0 = rng.standard_normal((T, B, I)), rng.standard_normal((2, B, H))
    want = oracle("RNN", x, weights, h0, h0, 2, 1)[0]

    def forward(given, hx=None, **kwargs):
        return F.rnn_forward(given, weights, hx, backend="cpu", need_backward=need_backward,
                             **kwargs)[0]

    strided = np.zeros((2, B, 2 * H))[:, :, ::2]
    strided[...] = h0
    for hx in (h0.tolist(), strided):
        assert_close(forward(x, hx), want, "float64", what=type(hx).__name__)
    zeros = np.zeros((2, B, H))
    got = forward(x.transpose(1, 0, 2).copy(), batch_first=True)
    assert_close(got, oracle("RNN", x, weights, zeros, zeros, 2, 1)[0].transpose(1, 0, 2),
                 "float64", what="batch_first")
    with pytest.raises(TypeError, match="^Expected hx of dtype float64"):
        forward(x, h0.astype(np.float32))
    with pytest.raises(ValueError, match="^RNN: Expected input to be 2D or 3D, got 4D"):
        forward(np.zeros((1, T, B, I)))


def test_lstm_states_are_named_in_messages():
    weights = make_weights("LSTM")
    prepared = F.prepare_weights(weights, "LSTM", "cpu")
    x, state = np.zeros((T, B, I)), np.zeros((2, B, H))
    with pytest.raises(TypeError, match=r"^LSTM: Expected hx to be a tuple \(h, c\)"):
        F.lstm_forward(x, weights, state)
    with pytest.raises(TypeError, match=r"^Expected hx\[1\] of dtype float64"):
        F.lstm_forward(x, weights, (state, state.astype(np.float32)))
    with pytest.raises(TypeError, match=r"^Expected hx\[1\] of dtype float64"):
        F.step_prepared(prepared, x[0], (state, state.astype(np.float32)))
    with pytest.raises(ValueError, match=r"^Expected out\[0\] of shape \(2, 2, 4\)"):
        F.step_prepared(prepared, x[0], (state, state), out=(np.zeros((2, B, 1)), state.copy()))
    lists = (state.tolist(), state.tolist())
    want = F.step_prepared(prepared, x[0], (state, state))
    assert_states(F.step_prepared(prepared, x[0], lists), want, "LSTM", "float64")
    out = (np.empty((2, B, H)), np.empty((2, B, H)))
    assert F.step_prepared(prepared, x[0].tolist(), None, out=out) is out
    assert_states(out, want, "LSTM", "float64")


def test_lstm_step_refuses_three_states_and_read_only_pairs():
    prepared = F.prepare_weights(make_weights("LSTM"), "LSTM", "cpu")
    x, state = np.zeros((B, I)), np.zeros((2, B, H))
    with pytest.raises(TypeError, match=r"^LSTM: Expected hx to be a tuple \(h, c\) of two"):
        F.step_prepared(prepared, x, (state, state.copy(), state.copy()))
    frozen = (np.zeros((2, B, H)), np.zeros((2, B, H)))
    for member in frozen:
        member.flags.writeable = False
    with pytest.raises(ValueError, match=r"^out\[0\] is read-only"):
        F.step_prepared(prepared, x, (state, state.copy()), out=frozen)
