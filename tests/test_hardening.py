"""Issue 9 (hardening) at the NumPy API: no silent wrong answer, clear errors, copies and files.

Each test is a regression test for one item of the issue (its number in the test's name or
docstring); a hostile or careless caller must get the right numbers or a clear exception.
"""
import copy
import json
import multiprocessing
import pickle
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import functional
from helpers import assert_close, random_array

BACKENDS = ["numpy", "cpu"]


def layer_and_data(backend, dtype="float64", **kwargs):
    rng = np.random.default_rng(0)
    layer = fastrnn.RNN(3, 4, num_layers=2, bidirectional=True, backend=backend, dtype=dtype,
                        seed=1, **kwargs)
    x = random_array(rng, (5, 2, 3), dtype)
    hx = random_array(rng, (4, 2, 4), dtype)
    grad_out = random_array(rng, (5, 2, 8), dtype)
    return layer, x, hx, grad_out


def gradients(layer, x, hx, grad_out):
    """Forward + backward from scratch: (grad_x, grad_hx, {name: grad})."""
    layer.zero_grad()
    layer(x, hx)
    grad_x, grad_hx = layer.backward(grad_out)
    return grad_x, grad_hx, {k: v.copy() for k, v in layer.grads.items()}


def assert_same_gradients(actual, expected, dtype="float64"):
    assert_close(actual[0], expected[0], dtype)
    assert_close(actual[1], expected[1], dtype)
    for name in expected[2]:
        assert_close(actual[2][name], expected[2][name], dtype)


# ----------------------------------------------------------------------------- item 5
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change", ["output", "input", "hx"])
def test_item5_changing_arrays_between_forward_and_backward_leaves_gradients_alone(backend, change):
    layer, x, hx, grad_out = layer_and_data(backend)
    expected = gradients(layer, x.copy(), hx.copy(), grad_out)
    layer.zero_grad()
    output, _ = layer(x, hx)
    {"output": output, "input": x, "hx": hx}[change][...] *= 3      # the caller's arrays
    grad_x, grad_hx = layer.backward(grad_out)
    assert_same_gradients((grad_x, grad_hx, layer.grads), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_item5_functional_output_and_input_are_the_callers(backend):
    layer, x, hx, grad_out = layer_and_data(backend)
    weights = layer.state_dict()
    output, _, context = functional.rnn_forward(x, weights, hx, backend=backend)
    assert not np.may_share_memory(output, context.output)
    assert not np.may_share_memory(x, context.x) and not np.may_share_memory(hx, context.hx)
    expected = functional.rnn_backward(context, grad_out)
    output *= 0
    x += 1
    hx -= 1
    again = functional.rnn_backward(context, grad_out)
    for a, e in zip(again[:2], expected[:2]):
        np.testing.assert_array_equal(a, e)


def test_item5_unbatched_output_is_the_callers():
    layer = fastrnn.RNN(3, 4, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    output, _ = layer(x)
    grad = np.ones_like(output)
    expected = layer.backward(grad)[0]
    output[...] = 7
    np.testing.assert_array_equal(layer.backward(grad)[0], expected)


def test_item5_backward_refuses_after_parameters_changed():
    layer, x, hx, grad_out = layer_and_data("numpy")
    layer(x, hx)
    layer.load_state_dict(layer.state_dict())
    with pytest.raises(RuntimeError, match="modified since the forward pass"):
        layer.backward(grad_out)
    layer(x, hx)
    optimizer = fastrnn.nn.SGD([layer], lr=0.1)
    optimizer.step()
    with pytest.raises(RuntimeError, match="modified since the forward pass"):
        layer.backward(grad_out)


# ----------------------------------------------------------------------------- item 7
@pytest.mark.parametrize("backend", BACKENDS)
def test_item7_assigning_a_parameter_takes_effect_everywhere(backend):
    layer, x, hx, _ = layer_and_data(backend)
    held = layer.weight_hh_l0                        # e.g. an optimizer's reference
    new = np.full((4, 4), 0.05)
    layer.weight_hh_l0 = new
    assert np.array_equal(layer.state_dict()["weight_hh_l0"], new)
    assert held is layer.weight_hh_l0 and np.array_equal(held, new)
    twin = fastrnn.RNN(3, 4, num_layers=2, bidirectional=True, backend=backend, dtype="float64")
    twin.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(layer(x, hx)[0], twin(x, hx)[0])
    layer.weight_hh_l0 = new.astype(np.float32).tolist()      # anything array-like, cast
    assert layer.weight_hh_l0.dtype == np.float64


def test_item7_bad_assignments_raise_and_change_nothing():
    layer = fastrnn.RNN(3, 4, seed=0)
    before = layer.state_dict()
    with pytest.raises(RuntimeError, match=r"size mismatch for weight_hh_l0.*\(3, 3\).*\(4, 4\)"):
        layer.weight_hh_l0 = np.zeros((3, 3))
    with pytest.raises(TypeError, match="weight_hh_l0"):
        layer.weight_hh_l0 = np.array([["a"] * 4] * 4)
    with pytest.raises(AttributeError, match="cannot delete parameter"):
        del layer.weight_hh_l0
    for name, value in before.items():
        np.testing.assert_array_equal(layer.state_dict()[name], value)


def test_item7_structure_is_read_only_and_settings_are_checked():
    layer = fastrnn.RNN(3, 4, num_layers=2)
    for name in ("input_size", "hidden_size", "num_layers", "bias", "bidirectional", "dtype"):
        with pytest.raises(AttributeError):
            setattr(layer, name, 5)
    with pytest.raises(ValueError, match="dropout should be a number in range"):
        layer.dropout = 2.0
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        layer.nonlinearity = "gelu"
    with pytest.raises(TypeError, match="batch_first should be of type bool"):
        layer.batch_first = 1
    layer.nonlinearity = "relu"
    x = np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32)
    assert np.all(layer(x)[0] >= 0)                  # the new setting is used


# ----------------------------------------------------------------------------- item 8
@pytest.mark.parametrize("dropout", [2.0, -1.0, float("nan"), True, "0.5"])
def test_item8_one_dropout_check_guards_layer_and_functional(dropout):
    weights = fastrnn.RNN(3, 4, num_layers=2).state_dict()
    x = np.zeros((2, 1, 3), np.float32)
    with pytest.raises(ValueError) as functional_error:
        functional.rnn_forward(x, weights, dropout=dropout, training=True)
    with pytest.raises(ValueError) as layer_error:
        fastrnn.RNN(3, 4, num_layers=2, dropout=dropout)
    assert str(functional_error.value) == str(layer_error.value)
    assert "dropout should be a number in range [0, 1]" in str(layer_error.value)


# ----------------------------------------------------------------------------- item 9
def weights_with(change):
    weights = fastrnn.RNN(3, 4, num_layers=2).state_dict()
    change(weights)
    return weights


@pytest.mark.parametrize("change,error,message", [
    (lambda w: w.__setitem__("weight_ih_l0", np.zeros(4, np.float32)), ValueError,
     "'weight_ih_l0' to be 2-D [hidden_size, input_size], got shape (4,)"),
    (lambda w: w.__setitem__("weight_hh_l0", np.zeros((4,), np.float32)), ValueError,
     "parameter 'weight_hh_l0' of shape (4, 4), got (4,)"),
    (lambda w: w.__setitem__("bias_hh_l1", np.zeros((5,), np.float32)), ValueError,
     "parameter 'bias_hh_l1' of shape (4,), got (5,)"),
    (lambda w: w.pop("weight_hh_l1"), ValueError, "missing ['weight_hh_l1 [4, 4]']"),
    (lambda w: w.__setitem__("weight_hh_l1", [[0.0] * 4] * 4), TypeError,
     "parameter 'weight_hh_l1' to be an array of shape (4, 4), got list"),
    (lambda w: w.__setitem__("weight_ih_l0", np.zeros((4, 3), np.float16)), TypeError,
     "'weight_ih_l0' of dtype float32 or float64, got float16"),
    (lambda w: w.__setitem__("weight_hh_l1", np.zeros((4, 4))), TypeError,
     "parameter 'weight_hh_l1' of dtype float32"),
    (lambda w: w.__setitem__("weight_ih_l0", None), ValueError, "'weight_ih_l0' to be 2-D"),
])
def test_item9_malformed_weights_name_the_key_and_the_expected_shape(change, error, message):
    weights = weights_with(change)
    with pytest.raises(error) as caught:
        functional.rnn_forward(np.zeros((2, 1, 3), np.float32), weights)
    assert message in str(caught.value)


def test_item9_weights_must_be_a_mapping():
    with pytest.raises(TypeError, match="weights must be a mapping"):
        functional.rnn_forward(np.zeros((2, 1, 3), np.float32), [np.zeros((4, 3))])


# ----------------------------------------------------------------------------- items 1, 11
@pytest.mark.parametrize("backend", BACKENDS)
def test_item11_other_byte_orders_and_misaligned_buffers_are_converted(backend):
    layer, x, hx, grad_out = layer_and_data(backend)
    expected_out = layer(x, hx)[0]
    expected = gradients(layer, x, hx, grad_out)
    swapped = lambda a: a.astype(a.dtype.newbyteorder())
    misaligned = np.frombuffer(b"\0" + x.tobytes(), dtype=np.float64, offset=1).reshape(x.shape)
    assert not misaligned.flags.aligned
    for x_in, hx_in in ((swapped(x), swapped(hx)), (misaligned, hx)):
        layer.zero_grad()
        out, _ = layer(x_in, hx_in)
        np.testing.assert_array_equal(out, expected_out)
        grad_x, grad_hx = layer.backward(swapped(grad_out))
        assert_same_gradients((grad_x, grad_hx, layer.grads), expected)
    weights = {k: swapped(v) for k, v in layer.state_dict().items()}
    np.testing.assert_array_equal(functional.rnn_forward(x, weights, hx, backend=backend)[0],
                                  expected_out)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad,message", [
    (lambda g: np.zeros((3, 3)), "gradient buffer 'weight_ih_l0' of shape (4, 3), got (3, 3)"),
    (lambda g: g.astype(np.float32), "gradient buffer 'weight_ih_l0' of dtype float64"),
    (lambda g: g.astype(g.dtype.newbyteorder()), "in native byte order"),
    (lambda g: np.asfortranarray(g), "C-contiguous"),
    (lambda g: np.broadcast_to(g[:1], g.shape), "C-contiguous"),
    (lambda g: g.tolist(), "NumPy array"),
])
def test_item1_gradient_buffers_are_checked_before_any_kernel_writes(backend, bad, message):
    layer, x, hx, grad_out = layer_and_data(backend)
    _, _, context = functional.rnn_forward(x, layer.state_dict(), hx, backend=backend)
    grads = functional.zero_grads(layer.state_dict())
    grads["weight_ih_l0"] = bad(grads["weight_ih_l0"])
    with pytest.raises((TypeError, ValueError)) as caught:
        functional.rnn_backward(context, grad_out, grads=grads)
    assert message in str(caught.value)


def test_item1_read_only_gradient_buffer_is_refused():
    layer, x, hx, grad_out = layer_and_data("cpu")
    layer(x, hx)
    layer.grads["bias_hh_l1_reverse"].flags.writeable = False
    with pytest.raises(ValueError, match="'bias_hh_l1_reverse' is read-only"):
        layer.backward(grad_out)


def test_item1_packed_level_checks_its_arguments():
    layer, x, hx, _ = layer_and_data("cpu")
    prepared = functional.prepare_weights(layer.state_dict(), backend="cpu")
    backend = prepared.backend
    sizes = np.full(5, 2, np.int64)
    with pytest.raises(ValueError, match="non-increasing"):
        functional.forward_packed(backend, prepared.structure, x.reshape(10, 3), hx,
                                  prepared.weights, np.array([1, 2, 2, 2, 3], np.int64))
    with pytest.raises(ValueError, match=r"x of shape \(10, 3\), got \(8, 3\)"):
        functional.forward_packed(backend, prepared.structure, x.reshape(10, 3)[:8], hx,
                                  prepared.weights, sizes)
    with pytest.raises(TypeError, match="batch_sizes must be a 1-D int64"):
        functional.forward_packed(backend, prepared.structure, x.reshape(10, 3), hx,
                                  prepared.weights, sizes.astype(np.int32))
    with pytest.raises(ValueError, match="h_n is read-only"):
        frozen = np.zeros((4, 2, 4))
        frozen.flags.writeable = False
        functional.forward_packed(backend, prepared.structure, x.reshape(10, 3), hx,
                                  prepared.weights, sizes, h_n=frozen)


def test_item11_masked_arrays_are_refused():
    x = np.ma.masked_array(np.zeros((2, 1, 3), np.float32), mask=False)
    with pytest.raises(TypeError, match="masked array"):
        fastrnn.RNN(3, 4)(x)


# ----------------------------------------------------------------------------- item 12
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_item12_copies_and_pickles_at_any_point(backend, how):
    layer, x, hx, grad_out = layer_and_data(backend, dropout=0.3)
    duplicate = {"deepcopy": copy.deepcopy,
                 "pickle": lambda o: pickle.loads(pickle.dumps(o))}[how]
    fresh = duplicate(layer)                              # before any forward
    assert fresh.state_dict().keys() == layer.state_dict().keys()
    layer(x, hx)
    twin = duplicate(layer)                               # after a forward: backward works on both
    grad_twin = twin.backward(grad_out)
    grad_layer = layer.backward(grad_out)
    for a, e in zip(grad_twin, grad_layer):
        np.testing.assert_array_equal(a, e)
    for name in layer.grads:
        np.testing.assert_array_equal(twin.grads[name], layer.grads[name])
    twin.weight_ih_l0 = np.zeros((4, 3))                   # independent parameters
    assert np.any(layer.weight_ih_l0)
    np.testing.assert_array_equal(duplicate(twin)(x, hx)[0], twin(x, hx)[0])  # same masks


def _forward_in_child(layer, x):
    with fastrnn.no_grad():
        return layer(x)[0]


def test_item12_layers_travel_to_a_spawn_pool():
    layer, x, _, _ = layer_and_data("cpu")
    layer.eval()
    layer(x)                                   # a context is kept: it must pickle too
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(_forward_in_child, (layer, x))
    np.testing.assert_array_equal(result, _forward_in_child(layer, x))


# ----------------------------------------------------------------------------- items 13-15
def test_item13_save_writes_exactly_the_given_path_and_load_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layer = fastrnn.RNN(3, 4, seed=2)
    layer.save("checkpoint")
    assert (tmp_path / "checkpoint").exists() and not (tmp_path / "checkpoint.npz").exists()
    loaded = fastrnn.RNN.load("checkpoint")
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


def test_item14_numpy_integer_sizes_survive_save(tmp_path):
    layer = fastrnn.RNN(np.int64(3), np.int32(4), num_layers=np.int64(2), dropout=np.float64(0.5))
    assert all(type(v) in (int, float, bool, str) for v in layer.config().values())
    layer.save(tmp_path / "model.npz")
    assert fastrnn.RNN.load(tmp_path / "model.npz").config() == layer.config()


def crafted_checkpoint(path, config, arrays=None):
    np.savez(path, **(arrays or {}), __fastrnn_config__=np.array(json.dumps(config)))


def test_item15_crafted_file_is_refused_before_allocating(tmp_path):
    path = tmp_path / "crafted.npz"
    crafted_checkpoint(path, {"input_size": 3, "hidden_size": 4, "num_layers": 100_000_000})
    assert path.stat().st_size < 1000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="describes 100000000 layer"):
            fastrnn.RNN.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("config,arrays,message", [
    ({"input_size": 3, "hidden_size": 4}, {}, "describes 1 layer(s) (4 arrays), the file holds 0"),
    ({"input_size": 3, "hidden_size": 4, "bias": False},
     {"weight_ih_l0": np.zeros((4, 3)), "weight_hh_l0": np.zeros((5, 5))},
     "'weight_hh_l0' should be a float array of shape (4, 4)"),
    ({"input_size": 3, "hidden_size": 4, "bias": False},
     {"weight_ih_l0": np.zeros((4, 3)), "weight_hh_l9": np.zeros((4, 4))},
     "'weight_hh_l0' [4, 4] is missing"),
    ({"input_size": 3, "hidden_size": 10 ** 12, "bias": False},
     {"weight_ih_l0": np.zeros((4, 3)), "weight_hh_l0": np.zeros((4, 4))}, "should be a float array"),
    ({"input_size": -3, "hidden_size": 4}, {}, "input_size must be greater than zero"),
    ({"input_size": 3, "hidden_size": 4, "evil": 1}, {}, "keys among"),
    ([1, 2], {}, "keys among"),
])
def test_item15_inconsistent_files_are_clear_errors(tmp_path, config, arrays, message):
    path = tmp_path / "bad.npz"
    crafted_checkpoint(path, config, arrays)
    with pytest.raises(ValueError) as caught:
        fastrnn.RNN.load(path)
    assert message in str(caught.value)


def test_item15_damaged_files_are_clear_errors(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a .npz file"):
        fastrnn.RNN.load(tmp_path / "text.npz")
    good = tmp_path / "good.npz"
    fastrnn.RNN(3, 4).save(good)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(tmp_path / "cut.npz", "w") as target:
        for info in source.infolist():
            data = source.read(info)
            target.writestr(info.filename, data[:-4] if "weight_hh" in info.filename else data)
    with pytest.raises(ValueError, match="'weight_hh_l0.npy' is damaged"):
        fastrnn.RNN.load(tmp_path / "cut.npz")


# ----------------------------------------------------------------------------- threads
def run_threads(work, count):
    errors, threads = [], []

    def guarded(index):
        try:
            work(index)
        except Exception as exc:     # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_on_different_layers_give_the_serial_results(backend):
    rng = np.random.default_rng(3)
    layers = [fastrnn.RNN(8, 16, num_layers=2, backend=backend, seed=i) for i in range(4)]
    inputs = [random_array(rng, (20, 4, 8), "float32") for _ in layers]
    expected = [gradients(layer, x, None, np.ones((20, 4, 16), np.float32)) for layer, x in zip(layers, inputs)]
    results = [None] * len(layers)

    def work(i):
        for _ in range(5):
            results[i] = gradients(layers[i], inputs[i], None, np.ones((20, 4, 16), np.float32))
    run_threads(work, len(layers))
    for result, wanted in zip(results, expected):
        assert_same_gradients(result, wanted, "float32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_layer_shared_by_threads_pairs_each_backward_with_its_own_forward(backend):
    rng = np.random.default_rng(4)
    layer = fastrnn.RNN(8, 16, backend=backend, dtype="float64", seed=0)
    inputs = [random_array(rng, (10, 3, 8), "float64") for _ in range(4)]
    grad_out = np.ones((10, 3, 16))
    expected = []
    for x in inputs:
        layer(x)
        expected.append(layer.backward(grad_out)[0])
    layer.zero_grad()
    results = [[] for _ in inputs]
    barrier = threading.Barrier(len(inputs))

    def work(i):
        for _ in range(5):
            layer(inputs[i])
            barrier.wait()                   # every thread's forward ran before any backward
            results[i].append(layer.backward(grad_out)[0])
    run_threads(work, len(inputs))
    for got, wanted in zip(results, expected):
        for grad_x in got:
            assert_close(grad_x, wanted, "float64")
    layer.zero_grad()
    for x in inputs:
        layer(x)
        layer.backward(grad_out)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer.zero_grad()
    run_threads(lambda i: [layer(inputs[i]), layer.backward(grad_out)], len(inputs))
    for name in once:                        # every thread's gradient was added, none lost
        assert_close(layer.grads[name], once[name], "float64")


def test_item12_nn_layers_copy_after_a_forward_too():
    linear = fastrnn.nn.Linear(3, 2, seed=0, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 3))
    linear(x)
    x[...] = 0                                  # item 5: the kept input is the layer's own
    twin = copy.deepcopy(linear)
    grad = np.ones((4, 2))
    np.testing.assert_array_equal(twin.backward(grad), linear.backward(grad))
    np.testing.assert_array_equal(twin.grads["weight"], linear.grads["weight"])
    assert np.any(linear.grads["weight"])
