"""The layers' promises that mutation testing found unasserted (issue 16).

Each message a user can meet is asserted whole (torch's wording where torch has one): lengths,
settings changed after construction, backward without a forward, step on a bidirectional
layer, and every way ``load`` refuses a damaged file. The fast paths are held to the general
path's values where they could take a call they must decline (batch_first, lengths, dropout
in training); dropout in step is reproducible from the seed; and a layer moved to another
backend (the CUDA simulator's) keeps its parameters and gradients and follows its input.
"""
import contextlib
import json
import re
import threading
import warnings
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn.backends import backend_status
from fastrnn.rnn_base import Setting
from cell_cases import make_layer, members, random_states

T, B, I, H = 5, 4, 3, 4
CONFIG = "__fastrnn_config__"


def exactly(message):
    return "^" + re.escape(message) + "$"


# ------------------------------------------------------------------------------ lengths
LENGTH_ERRORS = [
    ([1.5, 2, 3, 4], TypeError, exactly(
        "lengths must be integers (one per sequence), got an array of float64; convert it with "
        ".astype(np.int64) if its values are whole numbers")),
    ([[1, 2], [3, 4]], ValueError, exactly(
        "lengths must be a 1-D array with one length per sequence, got shape (2, 2)")),
    ([1, 2, 3], ValueError, exactly(
        "Expected `len(lengths)` to be equal to batch_size, but got 3 (batch_size=4)")),
    ([0, 2, 3, 4], ValueError, exactly(
        "Length of all samples has to be greater than 0, but found an element in 'lengths' "
        "that is <= 0")),
    ([6, 2, 3, 4], ValueError, exactly(
        "Expected every length to be at most the sequence length 5, got a length of 6")),
    ([[1], [1, 2], 3, 4], TypeError,
     "^" + re.escape("lengths must be a 1-D array of integers, one per sequence: ")),
]


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("lengths, error, message", LENGTH_ERRORS)
def test_lengths_messages(lengths, error, message, grad):
    layer = fastrnn.GRU(I, H, seed=0)
    x = np.zeros((T, B, I), np.float32)
    with contextlib.nullcontext() if grad else fastrnn.no_grad():
        with pytest.raises(error, match=message):
            layer(x, lengths=lengths)


def test_unsigned_lengths_are_lengths():
    layer = fastrnn.RNN(I, H, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    signed, _ = layer(x, lengths=np.array([5, 1, 3, 2]))
    unsigned, _ = layer(x, lengths=np.array([5, 1, 3, 2], np.uint8))
    np.testing.assert_array_equal(unsigned, signed)


@pytest.mark.parametrize("grad", [True, False])
def test_an_empty_batch_with_empty_lengths(grad):
    layer = fastrnn.LSTM(I, H, seed=0)
    with contextlib.nullcontext() if grad else fastrnn.no_grad():
        output, (h_n, c_n) = layer(np.zeros((T, 0, I), np.float32), lengths=[])
    assert output.shape == (T, 0, H) and h_n.shape == c_n.shape == (1, 0, H)


# ---------------------------------------------------------------- fast paths, same values
def twins(cell, **kwargs):
    return [make_layer(cell, I, H, seed=3, **kwargs) if cell != "RNN"
            else fastrnn.RNN(I, H, seed=3, **kwargs) for _ in range(2)]


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_no_grad_batch_first_gives_the_grad_mode_values(cell):
    fast, general = twins(cell, batch_first=True)
    x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    with fastrnn.no_grad():
        out_fast, h_fast = fast(x)
    out, h = general(x)
    np.testing.assert_array_equal(out_fast, out)
    for a, e in zip(members(h_fast), members(h)):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_no_grad_ragged_lengths_and_a_state_give_the_grad_mode_values(cell):
    fast, general = twins(cell)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = random_states(rng, fast, B)
    lengths = [2, 5, 1, 3]
    with fastrnn.no_grad():
        out_fast, h_fast = fast(x, hx, lengths=lengths)
    out, h = general(x, hx, lengths=lengths)
    np.testing.assert_array_equal(out_fast, out)
    assert not out_fast[2:, 0].any()
    for a, e in zip(members(h_fast), members(h)):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_no_grad_with_a_state_gives_the_grad_mode_values(cell):
    """I == H and T == L: a state that were taken for the input would fit, so it must not."""
    fast, general = [make_layer(cell, H, H, seed=8) if cell != "RNN" else fastrnn.RNN(H, H, seed=8)
                     for _ in range(2)]
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, B, H)).astype(np.float32)
    hx = random_states(rng, fast, B)
    with fastrnn.no_grad():
        out_fast, h_fast = fast(x, hx)
    out, h = general(x, hx)
    np.testing.assert_array_equal(out_fast, out)
    for a, e in zip(members(h_fast), members(h)):
        np.testing.assert_array_equal(a, e)
    zero_state, _ = general(x)
    assert not np.allclose(out, zero_state)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_no_grad_training_with_dropout_draws_the_masks_grad_mode_draws(cell):
    fast, general = twins(cell, num_layers=2, dropout=0.5)
    x = np.random.default_rng(3).standard_normal((T, B, I)).astype(np.float32)
    with fastrnn.no_grad():
        out_fast, _ = fast(x)
    out, _ = general(x)
    np.testing.assert_array_equal(out_fast, out)
    general.eval()
    undropped, _ = general(x)
    assert not np.allclose(out, undropped)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_step_dropout_in_training_follows_the_seed(cell):
    first, second = twins(cell, num_layers=2, dropout=0.5)
    x = np.random.default_rng(4).standard_normal((B, I)).astype(np.float32)
    a, b = first.step(x), second.step(x)
    for u, v in zip(members(a), members(b)):
        np.testing.assert_array_equal(u, v)
    first.eval()
    undropped = first.step(x)
    assert not np.allclose(members(a)[0][-1], members(undropped)[0][-1])


# ------------------------------------------------------------------- settings and errors
def test_settings_changed_after_construction():
    layer = fastrnn.RNN(I, H, num_layers=2, seed=0)
    layer.dropout = 1
    assert layer.dropout == 1.0 and type(layer.dropout) is float
    with pytest.raises(ValueError, match=exactly(
            "dropout should be a number in range [0, 1] representing the probability of an "
            "element being zeroed")):
        layer.dropout = 1.5
    with pytest.raises(TypeError, match=exactly("batch_first should be of type bool, got: int")):
        layer.batch_first = 1
    with pytest.raises(TypeError, match=exactly("batch_first should be of type bool, got: int")):
        fastrnn.LSTM(I, H, batch_first=1)
    assert isinstance(fastrnn.RNN.dropout, type(fastrnn.LSTM.batch_first))
    assert "dropout" in fastrnn.RNN.dropout.__doc__.lower()


def test_a_setting_checks_and_stores_under_its_private_name():
    """Setting, the descriptor of every setting that may change after construction, on a
    class made here (so that its __set_name__ runs inside the test)."""
    class Probe:
        _lock = threading.Lock()
        _prepared = "kept"
        size = Setting(int, "how many")
    probe = Probe()
    probe.size = "3"
    assert probe._size == 3 and probe.size == 3 and probe._prepared is None
    assert Probe.size.__doc__ == "how many" and isinstance(Probe.size, Setting)
    with pytest.raises(ValueError):
        probe.size = "three"


def test_train_and_eval():
    layer = fastrnn.GRU(I, H, seed=0)
    assert layer.training is True
    assert layer.train(0) is layer and layer.training is False
    assert layer.train() is layer and layer.training is True
    assert layer.eval() is layer and layer.training is False


def test_backward_without_a_forward_says_what_to_do():
    layer = fastrnn.LSTM(I, H, seed=0)
    with pytest.raises(RuntimeError, match=exactly(
            "LSTM.backward() needs a forward pass first: call the layer on an input (outside "
            "fastrnn.no_grad(), in this thread) before calling backward()")):
        layer.backward(np.zeros((T, B, H), np.float32))


@pytest.mark.parametrize("batch_first", [False, True])
def test_a_no_grad_forward_keeps_nothing_for_backward(batch_first):
    """Under no_grad neither path (the fast one, nor the general one that batch_first takes)
    keeps a context: backward then asks for a forward, as after no forward at all."""
    layer = fastrnn.RNN(I, H, batch_first=batch_first, seed=0)
    x = np.zeros((T, B, I), np.float32)
    output, _ = layer(x)
    with fastrnn.no_grad():
        layer(x)
    with pytest.raises(RuntimeError, match="^RNN.backward\\(\\) needs a forward pass first"):
        layer.backward(np.zeros_like(output))


@pytest.mark.parametrize("cell", ["RNN", "GRU"])
def test_a_bidirectional_layer_cannot_step(cell):
    layer = twins(cell, bidirectional=True)[0]
    with pytest.raises(ValueError, match=exactly(
            f"step() runs one time step forward; a bidirectional {cell}'s reverse direction "
            "needs the whole sequence first: call the layer on the sequence instead")):
        layer.step(np.zeros((B, I), np.float32))


# ------------------------------------------------------------------------------ load
def write_file(path, members_):
    """A .npz-like zip of raw members {name: bytes}."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members_.items():
            archive.writestr(name, data)


def npy(array):
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def saved_members(layer, config=None):
    members_ = {f"{name}.npy": npy(value) for name, value in layer.state_dict().items()}
    config = {**layer.config(), "cell": type(layer).__name__} if config is None else config
    members_[f"{CONFIG}.npy"] = npy(np.array(json.dumps(config)))
    return members_


@pytest.fixture
def path(tmp_path):
    return tmp_path / "layer.npz"


def test_load_refuses_a_member_that_is_not_an_array(path):
    write_file(path, {**saved_members(fastrnn.RNN(I, H, seed=0)), "notes.txt": b"hi"})
    with pytest.raises(ValueError, match=exactly(
            f"{path} is not a fastrnn checkpoint: unexpected member 'notes.txt'")):
        fastrnn.RNN.load(path)


def test_load_refuses_an_unknown_npy_version(path):
    bad = bytearray(npy(np.zeros(3, np.float32)))
    bad[6] = 9                                     # the major version byte after the magic
    write_file(path, {**saved_members(fastrnn.RNN(I, H, seed=0)), "weight_hh_l0.npy": bytes(bad)})
    with pytest.raises(ValueError, match=exactly(
            f"{path}: member 'weight_hh_l0.npy' is not a .npy array (unsupported .npy format "
            "version (9, 0))")):
        fastrnn.RNN.load(path)


def test_load_refuses_a_member_without_an_npy_header(path):
    write_file(path, {**saved_members(fastrnn.RNN(I, H, seed=0)), "weight_hh_l0.npy": b"x" * 64})
    with pytest.raises(ValueError, match="^" + re.escape(
            f"{path}: member 'weight_hh_l0.npy' is not a .npy array (")):
        fastrnn.RNN.load(path)


@pytest.mark.parametrize("config, description", [
    (np.array([json.dumps({"input_size": 3, "hidden_size": 4})]), "(1,) <U35"),
    (np.array(json.dumps({"input_size": 3, "hidden_size": 4}).encode()), "() |S35"),
])
def test_load_refuses_a_config_that_is_not_one_string(path, config, description):
    members_ = saved_members(fastrnn.RNN(I, H, seed=0))
    members_[f"{CONFIG}.npy"] = npy(config)
    write_file(path, members_)
    with pytest.raises(ValueError, match=exactly(
            f"{path}: {CONFIG} must be one string of at most 16384 characters, got "
            f"{description}")):
        fastrnn.RNN.load(path)


def test_load_takes_a_config_of_the_longest_length_allowed(path):
    layer = fastrnn.RNN(I, H, seed=0)
    text = json.dumps({**layer.config(), "cell": "RNN"})
    members_ = saved_members(layer)
    members_[f"{CONFIG}.npy"] = npy(np.array(text + " " * (16384 - len(text))))
    write_file(path, members_)
    loaded = fastrnn.RNN.load(path)
    np.testing.assert_array_equal(loaded.weight_hh_l0, layer.weight_hh_l0)


def test_load_refuses_a_config_that_is_not_json(path):
    members_ = saved_members(fastrnn.RNN(I, H, seed=0))
    members_[f"{CONFIG}.npy"] = npy(np.array("{input_size: 3"))
    write_file(path, members_)
    with pytest.raises(ValueError, match="^" + re.escape(f"{path}: {CONFIG} is not valid JSON (")):
        fastrnn.RNN.load(path)


def test_load_names_the_class_that_wrote_the_file(path):
    fastrnn.LSTM(I, H, seed=0).save(path)
    with pytest.raises(ValueError, match=exactly(
            f"{path} holds a fastrnn.LSTM, not a fastrnn.GRU: load it with fastrnn.LSTM.load")):
        fastrnn.GRU.load(path)


def test_load_checks_the_saved_bias_setting(path):
    layer = fastrnn.RNN(I, H, seed=0)
    write_file(path, saved_members(layer, {**layer.config(), "bias": "yes"}))
    with pytest.raises(ValueError, match=exactly(
            f"{path}: invalid saved configuration: bias should be of type bool, got: str")):
        fastrnn.RNN.load(path)


def test_load_checks_the_shape_of_each_bias(path):
    layer = fastrnn.RNN(I, H, seed=0)
    members_ = saved_members(layer)
    members_["bias_ih_l0.npy"] = npy(np.zeros(H + 1, np.float32))
    write_file(path, members_)
    with pytest.raises(ValueError, match=exactly(
            f"{path}: parameter 'bias_ih_l0' should be a float array of shape (4,), the file "
            "holds (5,) float32")):
        fastrnn.RNN.load(path)


def test_load_checks_the_projection(path):
    layer = fastrnn.LSTM(I, H, proj_size=2, seed=0)
    write_file(path, saved_members(layer, {**layer.config(), "proj_size": 4, "cell": "LSTM"}))
    with pytest.raises(ValueError, match=exactly(
            f"{path}: invalid saved configuration: proj_size has to be smaller than hidden_size")):
        fastrnn.LSTM.load(path)


def test_load_of_a_config_naming_only_the_sizes(path):
    """Missing settings take the constructor's defaults (dropout 0: no warning)."""
    layer = fastrnn.RNN(I, H, seed=0)
    write_file(path, saved_members(layer, {"input_size": I, "hidden_size": H}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = fastrnn.RNN.load(path)
    assert loaded.dropout == 0.0 and loaded.num_layers == 1
    np.testing.assert_array_equal(loaded.bias_hh_l0, layer.bias_hh_l0)


@pytest.mark.parametrize("proj_size", [0, 2])
def test_a_projected_lstm_round_trips(path, proj_size):
    layer = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=proj_size, seed=5)
    layer.save(path)
    loaded = fastrnn.LSTM.load(path)
    assert loaded.proj_size == proj_size
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


# ------------------------------------------------------------------ another backend
cuda_reason = backend_status()["cuda"]


@pytest.mark.skipif(cuda_reason is not None, reason=f"cuda backend: {cuda_reason}")
def test_a_layer_moved_to_cuda_and_back_keeps_its_parameters_and_gradients():
    """Under the CUDA simulator (tests/conftest.py): parameters and gradients move with the
    backend, the results stay the reference's, and 'auto' follows the input's device."""
    from numba import cuda
    layer = fastrnn.RNN(I, H, seed=6, dtype="float64")
    x = np.random.default_rng(7).standard_normal((T, 2, I))
    before = {name: value.copy() for name, value in layer.state_dict().items()}
    out_cpu, _ = layer(x)
    layer.backward(np.ones_like(out_cpu))
    grads_cpu = {name: g.copy() for name, g in layer.grads.items()}
    layer.backend = "cuda"
    out_cuda, _ = layer(x)
    np.testing.assert_allclose(out_cuda, out_cpu, rtol=1e-12)
    layer.backward(np.ones_like(out_cpu))
    layer.backend = "cpu"
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
        np.testing.assert_allclose(layer.grads[name], 2 * grads_cpu[name], rtol=1e-12)
    layer.backend = "auto"
    with fastrnn.no_grad():
        on_host, _ = layer(x)
        on_device, _ = layer(cuda.to_device(x))
        state = layer.step(cuda.to_device(x[0]))
    assert isinstance(on_host, np.ndarray) and hasattr(on_device, "copy_to_host")
    assert hasattr(state, "copy_to_host")
    with fastrnn.no_grad():
        back_on_host = layer.step(x[0])           # after a device call: the host again
    assert isinstance(back_on_host, np.ndarray)
    np.testing.assert_allclose(on_device.copy_to_host(), out_cpu, rtol=1e-12)
