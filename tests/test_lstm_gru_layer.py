"""fastrnn.LSTM and fastrnn.GRU as layers: torch's parameters and state_dicts, shapes, the state
pair, step, dropout, grad mode, persistence, copies, threads, and torch's errors for bad input.

The numbers themselves are checked against torch over a grid in test_lstm_gru_vs_torch.py;
here each test checks one convention the layers share with fastrnn.RNN and torch.
"""
import copy
import json
import pickle
import threading

import numpy as np
import pytest

import fastrnn
from cell_cases import (LAYERS, as_state, backends_for, make_layer, members, random_states,
                        state_shapes, torch_twin)
from helpers import assert_close, central_difference, raised_by, random_array

MODES = ["LSTM", "GRU"]
# (mode, proj_size): the LSTM with and without a projection, the GRU
VARIANTS = [("LSTM", 0), ("LSTM", 2), ("GRU", 0)]
VARIANT_IDS = ["LSTM", "LSTM-proj", "GRU"]


def make(mode, proj_size=0, **kwargs):
    kwargs = {"seed": 0, **kwargs}
    return make_layer(mode, 3, 5, proj_size, **kwargs)


def forward_backward(layer, x, hx, grad_out, grad_hn=None):
    layer.zero_grad()
    output, h_n = layer(x, hx)
    grad_x, grad_hx = layer.backward(grad_out, grad_hn)
    return [output, *members(h_n), grad_x, *members(grad_hx)] + [g.copy() for g in layer.grads.values()]


def data(layer, rng, T=6, B=2):
    D = 2 if layer.bidirectional else 1
    x = random_array(rng, (T, B, layer.input_size), layer.dtype)
    grad_out = random_array(rng, (T, B, D * (layer.proj_size or layer.hidden_size)), layer.dtype)
    return x, random_states(rng, layer, B), grad_out


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("mode,proj_size", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameters_are_torchs_names_order_shapes_and_initialisation(mode, proj_size, bias,
                                                                     bidirectional):
    torch = pytest.importorskip("torch")
    layer = make(mode, proj_size, num_layers=2, bias=bias, bidirectional=bidirectional)
    kwargs = {"proj_size": proj_size} if mode == "LSTM" else {}
    module = getattr(torch.nn, mode)(3, 5, num_layers=2, bias=bias, bidirectional=bidirectional,
                                     **kwargs)
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    state = layer.state_dict()
    assert list(state) == list(expected)                  # names and torch's order
    assert {name: value.shape for name, value in state.items()} == expected
    assert list(layer.grads) == list(expected)
    for value in state.values():
        assert value.dtype == np.float32
        assert np.all(np.abs(value) <= 1 / np.sqrt(5))    # torch: U(-1/sqrt(H), 1/sqrt(H))
        assert np.std(value) > 0.25 / np.sqrt(5)


@pytest.mark.parametrize("mode,proj_size", VARIANTS, ids=VARIANT_IDS)
def test_state_dicts_load_strictly_both_ways(mode, proj_size):
    torch = pytest.importorskip("torch")
    kwargs = {"proj_size": proj_size} if mode == "LSTM" else {}
    module = getattr(torch.nn, mode)(3, 5, num_layers=2, bidirectional=True, **kwargs)
    layer = make(mode, proj_size, num_layers=2, bidirectional=True, seed=9)
    result = layer.load_state_dict(module.state_dict())              # torch -> fastrnn
    assert result.missing_keys == [] and result.unexpected_keys == []
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[name], value.numpy())
    layer2 = make(mode, proj_size, num_layers=2, bidirectional=True, seed=10)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer2.state_dict().items()},
                           strict=True)                              # fastrnn -> torch
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    expected, _ = module(torch.from_numpy(x))
    assert_close(layer2(x)[0], expected.detach().numpy(), "float32", 2e-5)


def test_seed_makes_initialisation_reproducible():
    for mode in MODES:
        a, b, c = (make(mode, seed=s) for s in (1, 1, 2))
        assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
        assert not np.array_equal(a.weight_hh_l0, c.weight_hh_l0)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("mode,proj_size", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_and_state_shapes(mode, proj_size, batch_first, bidirectional):
    layer = make(mode, proj_size, num_layers=2, batch_first=batch_first,
                 bidirectional=bidirectional)
    T, Bt, D, P = 7, 2, 2 if bidirectional else 1, proj_size or 5
    x = np.zeros((Bt, T, 3) if batch_first else (T, Bt, 3), np.float32)
    out, h_n = layer(x)
    assert out.shape == ((Bt, T, D * P) if batch_first else (T, Bt, D * P))
    assert [s.shape for s in members(h_n)] == state_shapes(layer, Bt)   # batch_first not applied
    assert isinstance(h_n, tuple) == (mode == "LSTM")
    out, h_n = layer(np.zeros((T, 3), np.float32))                      # unbatched: [T, I]
    assert out.shape == (T, D * P)
    assert [s.shape for s in members(h_n)] == state_shapes(layer, None)


@pytest.mark.parametrize("mode,proj_size", VARIANTS, ids=VARIANT_IDS)
def test_unbatched_input_matches_torch_unbatched(mode, proj_size):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    layer = make(mode, proj_size, num_layers=2, bidirectional=True, dtype="float64")
    module = torch_twin(layer)
    x = rng.standard_normal((6, 3))
    hx = random_states(rng, layer, None)
    out, h_n = layer(x, hx)
    initial = tuple(map(torch.from_numpy, members(hx)))
    expected, final = module(torch.from_numpy(x), initial if mode == "LSTM" else initial[0])
    assert_close(out, expected.detach().numpy(), "float64")
    for actual, wanted in zip(members(h_n), members(final)):
        assert_close(actual, wanted.detach().numpy(), "float64")


def test_final_states_are_each_directions_last_step():
    layer = make("LSTM", num_layers=2, bidirectional=True)
    out, (h_n, c_n) = layer(np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32))
    assert np.array_equal(h_n[2], out[-1, :, :5])       # last layer, forward: its last step
    assert np.array_equal(h_n[3], out[0, :, 5:])        # last layer, reverse: step 0
    assert np.all(np.abs(c_n) > 0) and c_n.shape == (4, 2, 5)


def test_empty_batch_works_like_torch():
    for mode in MODES:
        layer = make(mode, num_layers=2, bidirectional=True)
        out, h_n = layer(np.zeros((4, 0, 3), np.float32))
        assert out.shape == (4, 0, 10)
        assert [s.shape for s in members(h_n)] == state_shapes(layer, 0)
        grad_x, grad_hx = layer.backward(np.zeros((4, 0, 10), np.float32))
        assert grad_x.shape == (4, 0, 3)
        assert [s.shape for s in members(grad_hx)] == state_shapes(layer, 0)


# ----------------------------------------------------------------------------- backward
def test_lstm_grad_h_n_pair_may_hold_none():
    rng = np.random.default_rng(2)
    layer = make("LSTM", 2, dtype="float64", num_layers=2)
    x, hx, grad_out = data(layer, rng)
    grad_h, grad_c = (random_array(rng, s.shape, "float64") for s in hx)
    zeros = [np.zeros_like(s) for s in hx]
    both = forward_backward(layer, x, hx, grad_out, (grad_h, zeros[1]))
    only_h = forward_backward(layer, x, hx, grad_out, (grad_h, None))
    for a, e in zip(only_h, both):
        np.testing.assert_array_equal(a, e)
    none = forward_backward(layer, x, hx, grad_out, None)
    zero = forward_backward(layer, x, hx, grad_out, tuple(zeros))
    for a, e in zip(none, zero):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("mode", MODES)
def test_backward_accumulates_until_zero_grad(mode):
    rng = np.random.default_rng(0)
    layer = make(mode, dtype="float64")
    x, hx, grad_out = data(layer, rng)
    layer(x, hx)
    layer.backward(grad_out)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer(x, hx)
    layer.backward(grad_out)
    for name in once:
        assert_close(layer.grads[name], 2 * once[name], "float64")
    layer.zero_grad()
    assert all(not np.any(g) for g in layer.grads.values())


@pytest.mark.parametrize("mode", MODES)
def test_grad_mode_and_the_order_of_calls(mode):
    layer = make(mode)
    with pytest.raises(RuntimeError, match="forward pass first"):
        layer.backward(np.zeros((2, 1, 5), np.float32))
    with fastrnn.no_grad():
        layer(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(RuntimeError, match="forward pass first"):
        layer.backward(np.zeros((2, 1, 5), np.float32))
    layer(np.zeros((2, 1, 3), np.float32))
    layer.load_state_dict(layer.state_dict())
    with pytest.raises(RuntimeError, match="modified since the forward pass"):
        layer.backward(np.zeros((2, 1, 5), np.float32))


# host backends: on 'cuda' the caller's host arrays are uploaded (copied) on the way in, and
# test_cuda_sim.py checks what the context keeps of device arrays
@pytest.mark.parametrize("mode,backend,change", [
    (mode, backend, change) for mode in MODES for backend in backends_for(mode) if backend != "cuda"
    for change in ["output", "input", "h"] + (["c"] if mode == "LSTM" else [])])
def test_changing_arrays_between_forward_and_backward_leaves_gradients_alone(mode, backend,
                                                                          change):
    rng = np.random.default_rng(3)
    layer = make(mode, dtype="float64", backend=backend, num_layers=2)
    x, hx, grad_out = data(layer, rng)
    expected = forward_backward(layer, x.copy(), copy.deepcopy(hx), grad_out)
    layer.zero_grad()
    output, _ = layer(x, hx)
    states = members(hx)
    {"output": output, "input": x, "h": states[0], "c": states[-1]}[change][...] *= 3
    grad_x, grad_hx = layer.backward(grad_out)
    actual = [grad_x, *members(grad_hx)] + list(layer.grads.values())
    for a, e in zip(actual, expected[1 + len(states):]):
        assert_close(a, e, "float64")


# ----------------------------------------------------------------------------- step
@pytest.mark.parametrize("mode,backend", [(m, b) for m in MODES for b in backends_for(m)])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_steps_replay_a_forward_over_the_sequence(mode, backend, num_layers):
    rng = np.random.default_rng(num_layers)
    layer = make(mode, 2 if mode == "LSTM" else 0, num_layers=num_layers, backend=backend,
                 dtype="float64")
    x = random_array(rng, (6, 2, 3), "float64")
    hx = random_states(rng, layer, 2)
    output, h_n = layer(x, hx)
    state = hx
    for t in range(6):
        state = layer.step(x[t], state)
        assert isinstance(state, tuple) == (mode == "LSTM")
        assert_close(members(state)[0][-1], output[t], "float64")   # the top layer's h
    for actual, wanted in zip(members(state), members(h_n)):
        assert_close(actual, wanted, "float64")


@pytest.mark.parametrize("mode", MODES)
def test_unbatched_step_and_zero_initial_state(mode):
    rng = np.random.default_rng(0)
    layer = make(mode, num_layers=2, dtype="float64")
    x = random_array(rng, (3,), "float64")
    state = layer.step(x)
    _, h_n = layer(x[None])
    assert [s.shape for s in members(state)] == state_shapes(layer, None)
    for actual, wanted in zip(members(state), members(h_n)):
        assert_close(actual, wanted, "float64")
    zeros = as_state(mode, [np.zeros(s) for s in state_shapes(layer, None)])
    for actual, wanted in zip(members(layer.step(x, zeros)), members(state)):
        assert_close(actual, wanted, "float64")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", ["fresh", "hx itself", "strided"])
def test_step_out_receives_the_new_state(mode, target):
    rng = np.random.default_rng(1)
    layer = make(mode, num_layers=2, dtype="float64")
    x = random_array(rng, (3, 3), "float64")
    hx = random_states(rng, layer, 3)
    expected = layer.step(x, hx)
    shapes = state_shapes(layer, 3)
    out = {"fresh": as_state(mode, [np.empty(s) for s in shapes]), "hx itself": hx,
           "strided": as_state(mode, [np.empty(s[:-1] + (2 * s[-1],))[..., ::2] for s in shapes])}[target]
    result = layer.step(x, hx, out=out)
    assert result is out
    for actual, wanted in zip(members(out), members(expected)):
        np.testing.assert_array_equal(actual, wanted)


def test_lstm_step_needs_the_pair_and_a_bidirectional_layer_cannot_step():
    layer = make("LSTM", num_layers=2)
    with pytest.raises(TypeError, match=r"Expected hx to be a tuple \(h, c\)"):
        layer.step(np.zeros((1, 3), np.float32), np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"Expected hidden\[1\] size \(2, 1, 5\), got \[2, 1, 4\]"):
        layer.step(np.zeros((1, 3), np.float32),
                   (np.zeros((2, 1, 5), np.float32), np.zeros((2, 1, 4), np.float32)))
    with pytest.raises(ValueError, match="reverse direction needs the whole sequence"):
        make("GRU", bidirectional=True).step(np.zeros(3, np.float32))


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("mode", MODES)
def test_dropout_masks_in_training_only_and_reproducible(mode):
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    a, b = (make(mode, num_layers=3, dropout=0.5, seed=3) for _ in range(2))
    out_a1, out_b1 = a(x)[0], b(x)[0]
    assert np.array_equal(out_a1, out_b1)                 # same seed, same masks
    assert not np.array_equal(out_a1, a(x)[0])            # new masks each call
    a.eval()
    assert_close(a(x)[0], make(mode, num_layers=3, seed=3)(x)[0], "float32")


@pytest.mark.parametrize("mode,proj_size", VARIANTS, ids=VARIANT_IDS)
def test_backward_goes_through_the_forward_masks(mode, proj_size):
    """The gradient of the input, by central differences through the SAME masks, replayed
    one layer at a time with fastrnn.functional (the masks scale layer l's output)."""
    rng = np.random.default_rng(4)
    layer = make(mode, proj_size, num_layers=3, dropout=0.4, dtype="float64", backend="numpy")
    x = rng.standard_normal((5, 2, 3))
    out, _ = layer(x)
    grad = rng.standard_normal(out.shape)
    grad_x, _ = layer.backward(grad)
    masks = [m.reshape(5, 2, -1) for m in layer._context.masks]
    params = layer.state_dict()
    forward = {"LSTM": fastrnn.functional.lstm_forward, "GRU": fastrnn.functional.gru_forward}[mode]

    def loss():
        inputs = x
        for index in range(3):
            weights = {k.replace(f"_l{index}", "_l0"): v for k, v in params.items()
                       if f"_l{index}" in k}
            inputs = forward(inputs, weights, backend="numpy", need_backward=False)[0]
            inputs = inputs * masks[index] if index < 2 else inputs
        return float(np.sum(inputs * grad))

    for index in [(0, 0, 0), (2, 1, 2), (4, 0, 1)]:
        assert grad_x[index] == pytest.approx(central_difference(loss, x, index), rel=1e-5)


def test_dropout_one_zeroes_what_the_next_layer_sees():
    for mode in MODES:     # no bias, zero input and state: every gate product is 0, so h is 0
        layer = make(mode, num_layers=2, dropout=1.0, bias=False)
        out, _ = layer(np.ones((3, 2, 3), np.float32))
        assert not np.any(out)


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("mode,proj_size", VARIANTS, ids=VARIANT_IDS)
def test_save_and_load(tmp_path, mode, proj_size):
    layer = make(mode, proj_size, num_layers=2, bidirectional=True, batch_first=True,
                 dtype="float64", seed=4)
    path = tmp_path / "layer.npz"
    layer.save(path)
    loaded = LAYERS[mode].load(path)
    assert type(loaded) is LAYERS[mode] and loaded.config() == layer.config()
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    for actual, wanted in zip(members(loaded(x)[1]), members(layer(x)[1])):
        np.testing.assert_array_equal(actual, wanted)


def test_load_refuses_another_kind_of_layer(tmp_path):
    path = tmp_path / "gru.npz"
    make("GRU").save(path)
    with pytest.raises(ValueError, match=r"holds a fastrnn.GRU, not a fastrnn.LSTM: load it with fastrnn.GRU.load"):
        fastrnn.LSTM.load(path)
    with pytest.raises(ValueError, match="holds a fastrnn.GRU"):
        fastrnn.RNN.load(path)
    fastrnn.RNN(3, 5).save(tmp_path / "rnn.npz")
    with pytest.raises(ValueError, match="holds a fastrnn.RNN"):
        fastrnn.GRU.load(tmp_path / "rnn.npz")


@pytest.mark.parametrize("config,message", [
    ({"input_size": 3, "hidden_size": 4, "proj_size": 4, "cell": "LSTM"},
     "proj_size has to be smaller than hidden_size"),
    ({"input_size": 3, "hidden_size": 4, "proj_size": 2.5, "cell": "LSTM"},
     "proj_size should be of type int"),
    ({"input_size": 3, "hidden_size": 4, "proj_size": 2, "cell": "LSTM"},
     "describes 1 layer(s) (5 arrays), the file holds 4"),
    ({"input_size": 3, "hidden_size": 4, "nonlinearity": "tanh", "cell": "LSTM"}, "keys among"),
])
def test_load_checks_the_lstm_configuration(tmp_path, config, message):
    path = tmp_path / "crafted.npz"
    arrays = fastrnn.LSTM(3, 4).state_dict()          # 4 arrays, no projection
    np.savez(path, **arrays, __fastrnn_config__=np.array(json.dumps(config)))
    with pytest.raises(ValueError) as caught:
        fastrnn.LSTM.load(path)
    assert message in str(caught.value)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_and_pickles_at_any_point(mode, how):
    rng = np.random.default_rng(5)
    layer = make(mode, num_layers=2, dropout=0.3, dtype="float64")
    x, hx, grad_out = data(layer, rng)
    duplicate = {"deepcopy": copy.deepcopy, "pickle": lambda o: pickle.loads(pickle.dumps(o))}[how]
    assert duplicate(layer).state_dict().keys() == layer.state_dict().keys()
    layer(x, hx)
    twin = duplicate(layer)                        # after a forward: backward works on both
    for a, e in zip(members(twin.backward(grad_out)[1]), members(layer.backward(grad_out)[1])):
        np.testing.assert_array_equal(a, e)
    for name in layer.grads:
        np.testing.assert_array_equal(twin.grads[name], layer.grads[name])


def test_one_layer_shared_by_threads_pairs_each_backward_with_its_own_forward():
    rng = np.random.default_rng(6)
    layer = make("LSTM", 2, dtype="float64")
    inputs = [random_array(rng, (6, 3, 3), "float64") for _ in range(4)]
    grad_out = np.ones((6, 3, 2))
    expected = []
    for x in inputs:
        layer(x)
        expected.append(layer.backward(grad_out))
    results, errors = [[] for _ in inputs], []
    barrier = threading.Barrier(len(inputs))

    def work(i):
        try:
            for _ in range(3):
                layer(inputs[i])
                barrier.wait()               # every thread's forward ran before any backward
                results[i].append(layer.backward(grad_out))
        except Exception as exc:   # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for got, wanted in zip(results, expected):
        for grad_x, (grad_h0, grad_c0) in got:
            assert_close(grad_x, wanted[0], "float64")
            assert_close(grad_c0, wanted[1][1], "float64")


def test_repr_names_non_default_arguments():
    assert repr(fastrnn.LSTM(3, 5)) == "LSTM(3, 5)"
    assert repr(fastrnn.LSTM(3, 5, num_layers=2, proj_size=2, dtype="float64")) == \
        "LSTM(3, 5, num_layers=2, proj_size=2, dtype='float64')"
    assert repr(fastrnn.GRU(3, 5, bidirectional=True, batch_first=True)) == \
        "GRU(3, 5, batch_first=True, bidirectional=True)"


# ----------------------------------------------------------------------------- errors
def _lstm_states(shapes):
    return [np.zeros(shape, np.float32) for shape in shapes]


# (mode, description, constructor kwargs, input shape, state shapes or None): each call is
# made on fastrnn and on torch; fastrnn's message must contain torch's.
BAD_CALLS = [
    ("LSTM", "4-D input", {}, (1, 2, 1, 3), None),
    ("GRU", "4-D input", {}, (1, 2, 1, 3), None),
    ("LSTM", "input size", {}, (2, 4, 7), None),
    ("GRU", "input size", {}, (2, 4, 7), None),
    ("LSTM", "h size", {"num_layers": 2}, (2, 4, 3), [(2, 4, 7), (2, 4, 5)]),
    ("LSTM", "c size", {"num_layers": 2}, (2, 4, 3), [(2, 4, 5), (2, 4, 7)]),
    ("LSTM", "h size with projection", {"proj_size": 2}, (2, 4, 3), [(1, 4, 5), (1, 4, 5)]),
    ("GRU", "hidden size", {"num_layers": 2}, (2, 4, 3), [(2, 3, 5)]),
    ("LSTM", "2-D states, batched input", {}, (2, 4, 3), [(1, 5), (1, 5)]),
    ("LSTM", "3-D states, unbatched input", {}, (2, 3), [(1, 1, 5), (1, 1, 5)]),
    ("GRU", "2-D state, batched input", {}, (2, 4, 3), [(1, 5)]),
    ("GRU", "3-D state, unbatched input", {}, (2, 3), [(1, 1, 5)]),
]


@pytest.mark.parametrize("mode,what,kwargs,input_shape,shapes", BAD_CALLS,
                         ids=[f"{m}-{w}" for m, w, *_ in BAD_CALLS])
def test_bad_input_is_torchs_error(mode, what, kwargs, input_shape, shapes):
    torch = pytest.importorskip("torch")
    layer = make_layer(mode, 3, 5, **kwargs)
    module = torch_twin(layer)
    x = np.zeros(input_shape, np.float32)
    states = None if shapes is None else _lstm_states(shapes)
    hx = None if states is None else as_state(mode, states)
    torch_hx = None if states is None else as_state(mode, [torch.from_numpy(s) for s in states])
    _, torch_message = raised_by(lambda: module(torch.from_numpy(x), torch_hx))
    error, message = raised_by(lambda: layer(x, hx))
    assert torch_message in message
    assert issubclass(error, RuntimeError) and issubclass(error, ValueError)   # ShapeError


@pytest.mark.parametrize("kwargs", [
    dict(proj_size=5), dict(proj_size=7), dict(proj_size=-1), dict(hidden_size=0),
    dict(dropout=1.5), dict(bias=1), dict(num_layers=0), dict(input_size=4.0)])
def test_lstm_constructor_errors_are_torchs(kwargs):
    torch = pytest.importorskip("torch")
    arguments = {"input_size": 3, "hidden_size": 5, **kwargs}
    torch_error, torch_message = raised_by(lambda: torch.nn.LSTM(**arguments))
    error, message = raised_by(lambda: fastrnn.LSTM(**arguments))
    assert (error, message) == (torch_error, torch_message)


def test_lstm_state_must_be_a_pair_and_dtypes_say_how_to_convert():
    layer = make("LSTM")
    with pytest.raises(TypeError, match=r"LSTM: Expected hx to be a tuple \(h, c\) of two arrays, got ndarray"):
        layer(np.zeros((2, 1, 3), np.float32), np.zeros((1, 1, 5), np.float32))
    with pytest.raises(TypeError, match=r"Expected hx\[1\] of dtype float32.*astype\(np.float32\)"):
        layer(np.zeros((2, 1, 3), np.float32), (np.zeros((1, 1, 5), np.float32), np.zeros((1, 1, 5))))
    layer(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match=r"grad_h_n\[1\] of shape \(1, 1, 5\), got \(1, 5\)"):
        layer.backward(np.zeros((2, 1, 5), np.float32), (None, np.zeros((1, 5), np.float32)))
    with pytest.raises(TypeError, match=r"Expected grad_h_n to be a tuple \(h, c\)"):
        layer.backward(np.zeros((2, 1, 5), np.float32), np.zeros((1, 1, 5), np.float32))


def test_gru_and_rnn_take_no_proj_size():
    for cls in (fastrnn.GRU, fastrnn.RNN):
        with pytest.raises(TypeError, match="proj_size"):
            cls(3, 5, proj_size=2)
        assert cls(3, 5).proj_size == 0
