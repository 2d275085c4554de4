"""fastrnn.RNN's API: shapes, parameters, modes, state, persistence, errors; no torch needed."""
import numpy as np
import pytest

import fastrnn
from helpers import assert_close, random_array


def torch_parameter_order(num_layers, bidirectional, bias):
    names = []
    for layer in range(num_layers):
        for suffix in ["", "_reverse"] if bidirectional else [""]:
            names += [f"weight_ih_l{layer}{suffix}", f"weight_hh_l{layer}{suffix}"]
            names += [f"bias_ih_l{layer}{suffix}", f"bias_hh_l{layer}{suffix}"] if bias else []
    return names


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parameter_names_order_shapes_and_init(bidirectional, bias):
    layer = fastrnn.RNN(3, 16, num_layers=2, bidirectional=bidirectional, bias=bias, seed=0)
    state = layer.state_dict()
    assert list(state) == torch_parameter_order(2, bidirectional, bias)
    directions = 2 if bidirectional else 1
    assert state["weight_ih_l0"].shape == (16, 3)
    assert state["weight_ih_l1"].shape == (16, 16 * directions)
    assert state["weight_hh_l1"].shape == (16, 16)
    for value in state.values():
        assert value.dtype == np.float32
        assert np.all(np.abs(value) <= 1 / np.sqrt(16))
        assert np.std(value) > 0.25 / np.sqrt(16)     # spread over the range, not constant
    assert list(layer.grads) == list(state)


def test_seed_makes_initialisation_reproducible():
    a, b, c = (fastrnn.RNN(3, 4, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not np.array_equal(a.weight_hh_l0, c.weight_hh_l0)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_shapes(batch_first, bidirectional):
    layer = fastrnn.RNN(3, 5, num_layers=2, batch_first=batch_first, bidirectional=bidirectional)
    T, B, D = 7, 2, 2 if bidirectional else 1
    x = np.zeros((B, T, 3) if batch_first else (T, B, 3), np.float32)
    out, h_n = layer(x)
    assert out.shape == ((B, T, D * 5) if batch_first else (T, B, D * 5))
    assert h_n.shape == (2 * D, B, 5)            # batch_first does not apply to h_n
    out, h_n = layer(np.zeros((T, 3), np.float32))   # unbatched: [T, I] whatever batch_first
    assert out.shape == (T, D * 5) and h_n.shape == (2 * D, 5)


def test_h_n_is_last_step_of_each_direction():
    layer = fastrnn.RNN(3, 5, num_layers=2, bidirectional=True, seed=0)
    out, h_n = layer(np.random.default_rng(0).standard_normal((6, 2, 3)).astype(np.float32))
    assert np.array_equal(h_n[2], out[-1, :, :5])   # last layer, forward: its last step
    assert np.array_equal(h_n[3], out[0, :, 5:])    # last layer, reverse: step 0


def test_empty_batch_works_like_torch():
    layer = fastrnn.RNN(3, 5, num_layers=2, bidirectional=True)
    out, h_n = layer(np.zeros((4, 0, 3), np.float32))
    assert out.shape == (4, 0, 10) and h_n.shape == (4, 0, 5)
    grad_x, grad_hx = layer.backward(np.zeros((4, 0, 10), np.float32))
    assert grad_x.shape == (4, 0, 3) and grad_hx.shape == (4, 0, 5)


def test_backward_accumulates_until_zero_grad():
    rng = np.random.default_rng(0)
    layer = fastrnn.RNN(3, 4, seed=0)
    x = random_array(rng, (5, 2, 3), "float32")
    out, _ = layer(x)
    grad_out = random_array(rng, out.shape, "float32")
    layer.backward(grad_out)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(grad_out)
    for name in once:
        assert_close(layer.grads[name], 2 * once[name], "float32")
    layer.zero_grad()
    assert all(not np.any(g) for g in layer.grads.values())


def test_grad_hx_without_hx_is_gradient_of_zero_state():
    rng = np.random.default_rng(1)
    layer = fastrnn.RNN(3, 4, num_layers=2, seed=0, dtype="float64")
    x = random_array(rng, (5, 2, 3), "float64")
    out, _ = layer(x)
    grad_out = random_array(rng, out.shape, "float64")
    _, grad_hx_implicit = layer.backward(grad_out)
    layer(x, np.zeros((2, 2, 4)))
    _, grad_hx_explicit = layer.backward(grad_out)
    assert grad_hx_implicit.shape == (2, 2, 4)
    assert_close(grad_hx_implicit, grad_hx_explicit, "float64")


def test_backward_before_forward_is_an_error():
    with pytest.raises(RuntimeError, match="forward pass first"):
        fastrnn.RNN(3, 4).backward(np.zeros((2, 1, 4), np.float32))


def test_no_grad_keeps_nothing_for_backward():
    layer = fastrnn.RNN(3, 4)
    with fastrnn.no_grad():
        layer(np.zeros((2, 1, 3), np.float32))
    assert fastrnn.is_grad_enabled()
    with pytest.raises(RuntimeError, match="forward pass first"):
        layer.backward(np.zeros((2, 1, 4), np.float32))


def test_backward_checks_grad_shapes_and_dtypes():
    layer = fastrnn.RNN(3, 4)
    layer(np.zeros((2, 1, 3), np.float32))
    with pytest.raises(ValueError, match=r"grad_output of shape \(2, 1, 4\), got \(2, 1, 5\)"):
        layer.backward(np.zeros((2, 1, 5), np.float32))
    with pytest.raises(ValueError, match=r"grad_h_n of shape \(1, 1, 4\), got \(1, 4\)"):
        layer.backward(np.zeros((2, 1, 4), np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="grad_output of dtype float32"):
        layer.backward(np.zeros((2, 1, 4)))


class TestDropout:
    def make(self, **kwargs):
        return fastrnn.RNN(4, 8, num_layers=3, dropout=0.5, seed=3, **kwargs)

    def test_masks_apply_in_training_only_and_are_reproducible(self):
        x = np.random.default_rng(0).standard_normal((5, 2, 4)).astype(np.float32)
        a, b = self.make(), self.make()
        out_a1, out_b1 = a(x)[0], b(x)[0]
        assert np.array_equal(out_a1, out_b1)               # same seed, same masks
        out_a2 = a(x)[0]
        assert not np.array_equal(out_a1, out_a2)           # new masks each call
        a.eval()
        assert np.array_equal(a(x)[0], a(x)[0])             # eval: deterministic
        no_dropout = fastrnn.RNN(4, 8, num_layers=3, seed=3)
        assert_close(a(x)[0], no_dropout(x)[0], "float32")

    def test_backward_uses_the_forward_masks(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((5, 2, 4))
        reference = self.make(dtype="float64", backend="numpy")
        fast = self.make(dtype="float64", backend="cpu")
        out_ref, out_fast = reference(x)[0], fast(x)[0]
        assert_close(out_fast, out_ref, "float64")
        grad = rng.standard_normal(out_ref.shape)
        assert_close(fast.backward(grad)[0], reference.backward(grad)[0], "float64")
        # the gradient w.r.t. x, by central differences through the SAME masks
        T, B = x.shape[:2]
        masks = [m.reshape(T, B, -1) for m in reference._context.masks]   # [L-1, T*B, H] packed
        params = reference.state_dict()

        def replay(inp):
            """The 3-layer forward, one layer at a time, re-applying the recorded masks."""
            for layer in range(3):
                weights = {k.replace(f"_l{layer}", "_l0"): v for k, v in params.items() if f"_l{layer}" in k}
                inp = fastrnn.functional.rnn_forward(inp, weights, backend="numpy")[0]
                inp = inp * masks[layer] if layer < 2 else inp
            return inp

        index, eps = (2, 1, 3), 1e-6
        x_plus, x_minus = x.copy(), x.copy()
        x_plus[index] += eps
        x_minus[index] -= eps
        numeric = (np.sum(replay(x_plus) * grad) - np.sum(replay(x_minus) * grad)) / (2 * eps)
        assert reference.backward(grad)[0][index] == pytest.approx(numeric, rel=1e-5)

    @pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
    def test_mask_values_are_keep_over_one_minus_p(self, p):
        """Inverted dropout (torch's rule): each mask entry is 0 or 1/(1-p), zero with
        probability p, so that the expected value of what the next layer sees is unchanged."""
        masks = fastrnn.functional.dropout_masks(np.random.default_rng(0), (200, 1000), p, "float64")
        assert set(np.unique(masks)) == {0.0, 1 / (1 - p)}
        assert abs(np.mean(masks == 0) - p) < 0.01            # 200000 draws: > 10 sigma
        assert abs(masks.mean() - 1) < 6 * np.sqrt(p / (1 - p) / masks.size)

    def test_layer_feeds_the_scaled_masks_to_the_next_layer(self):
        """Layer 2's input is layer 1's output times keep/(1-p): replayed from the masks'
        zero pattern alone, the output must match (removing the scaling would not)."""
        p, rng = 0.4, np.random.default_rng(2)
        layer = fastrnn.RNN(4, 8, num_layers=2, dropout=p, backend="numpy", dtype="float64", seed=5)
        x = rng.standard_normal((6, 3, 4))
        out, _ = layer(x)
        keep = (layer._context.masks[0] != 0).reshape(6, 3, 8)
        params = layer.state_dict()
        first = {k: v for k, v in params.items() if k.endswith("_l0")}
        second = {k.replace("_l1", "_l0"): v for k, v in params.items() if k.endswith("_l1")}
        hidden = fastrnn.functional.rnn_forward(x, first, backend="numpy")[0]
        expected = fastrnn.functional.rnn_forward(hidden * keep / (1 - p), second, backend="numpy")[0]
        assert_close(out, expected, "float64")

    def test_mask_scale_matches_torch_dropout(self):
        torch = pytest.importorskip("torch")
        dropped = torch.nn.functional.dropout(torch.ones(10000, dtype=torch.float64), p=0.3)
        ours = fastrnn.functional.dropout_masks(np.random.default_rng(0), (10000,), 0.3, "float64")
        assert set(np.unique(ours)) == set(np.unique(dropped.numpy()))

    def test_dropout_one_zeroes_between_layers(self):
        layer = fastrnn.RNN(4, 8, num_layers=2, dropout=1.0, seed=0, bias=False)
        out, _ = layer(np.ones((3, 2, 4), np.float32))
        assert not np.any(out)     # layer 2 sees zeros, has no bias, starts from h0 = 0

    def test_warning_for_one_layer(self):
        with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
            fastrnn.RNN(3, 4, dropout=0.3)


class TestStateDict:
    def test_round_trip_and_copies(self):
        a, b = fastrnn.RNN(3, 4, num_layers=2, seed=1), fastrnn.RNN(3, 4, num_layers=2, seed=2)
        state = a.state_dict()
        state["weight_hh_l0"][...] = 0                      # a copy: the layer is untouched
        assert np.any(a.weight_hh_l0)
        result = b.load_state_dict(a.state_dict())
        assert result.missing_keys == [] and result.unexpected_keys == []
        assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in state)

    def test_strict_names_and_shapes(self):
        layer = fastrnn.RNN(3, 4)
        state = layer.state_dict()
        with pytest.raises(RuntimeError, match=r"missing key\(s\) \['bias_hh_l0'\]"):
            layer.load_state_dict({k: v for k, v in state.items() if k != "bias_hh_l0"})
        with pytest.raises(RuntimeError, match=r"unexpected key\(s\) \['extra'\]"):
            layer.load_state_dict({**state, "extra": np.zeros(1)})
        before = layer.state_dict()
        bad = {**state, "weight_ih_l0": np.zeros((3, 3)), "weight_hh_l0": np.ones((4, 4))}
        with pytest.raises(RuntimeError, match=r"size mismatch for weight_ih_l0.*\(3, 3\).*\(4, 3\)"):
            layer.load_state_dict(bad)
        assert np.array_equal(layer.weight_hh_l0, before["weight_hh_l0"])   # nothing half-loaded
        result = layer.load_state_dict({"weight_hh_l0": np.ones((4, 4))}, strict=False)
        assert "weight_ih_l0" in result.missing_keys and np.all(layer.weight_hh_l0 == 1)

    def test_accepts_lists_and_casts_to_layer_dtype(self):
        layer = fastrnn.RNN(1, 1, bias=False, dtype="float64")
        layer.load_state_dict({"weight_ih_l0": [[0.5]], "weight_hh_l0": np.array([[0.25]], np.float32)})
        assert layer.weight_ih_l0.dtype == np.float64 and layer.weight_hh_l0[0, 0] == 0.25

    def test_save_and_load(self, tmp_path):
        layer = fastrnn.RNN(3, 4, num_layers=2, bidirectional=True, nonlinearity="relu",
                            batch_first=True, dtype="float64", seed=4)
        path = tmp_path / "rnn.npz"
        layer.save(path)
        loaded = fastrnn.RNN.load(path)
        assert loaded.config() == layer.config()
        x = np.random.default_rng(0).standard_normal((2, 5, 3))
        assert np.array_equal(loaded(x)[0], layer(x)[0])
        with np.load(path, allow_pickle=False) as archive:
            assert "weight_ih_l1_reverse" in archive.files

    def test_load_rejects_foreign_npz(self, tmp_path):
        np.savez(tmp_path / "other.npz", a=np.zeros(2))
        with pytest.raises(ValueError, match="not written by fastrnn"):
            fastrnn.RNN.load(tmp_path / "other.npz")


class TestErrors:
    """The messages torch gives, for the same mistakes (tests/test_torch_parity.py compares)."""

    def test_input_size(self):
        with pytest.raises(ValueError, match=r"input.size\(-1\) must be equal to input_size. Expected 3, got 7"):
            fastrnn.RNN(3, 5)(np.zeros((2, 1, 7), np.float32))

    def test_hidden_size(self):
        layer = fastrnn.RNN(3, 5, num_layers=2)
        with pytest.raises(ValueError, match=r"Expected hidden size \(2, 4, 5\), got \[2, 4, 7\]"):
            layer(np.zeros((2, 4, 3), np.float32), np.zeros((2, 4, 7), np.float32))

    def test_input_dims(self):
        with pytest.raises(ValueError, match="RNN: Expected input to be 2D or 3D, got 4D tensor instead"):
            fastrnn.RNN(3, 5)(np.zeros((1, 2, 1, 3), np.float32))

    def test_hx_dims(self):
        layer = fastrnn.RNN(3, 5)
        with pytest.raises(ValueError, match="For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"):
            layer(np.zeros((2, 3), np.float32), np.zeros((1, 1, 5), np.float32))
        with pytest.raises(ValueError, match="For batched 3-D input, hx should also be 3-D but got 2-D tensor"):
            layer(np.zeros((2, 1, 3), np.float32), np.zeros((1, 5), np.float32))

    def test_sequence_length(self):
        with pytest.raises(ValueError, match="Expected sequence length to be larger than 0 in RNN"):
            fastrnn.RNN(3, 5)(np.zeros((0, 2, 3), np.float32))

    def test_shape_errors_are_also_runtime_errors(self):
        with pytest.raises(RuntimeError):
            fastrnn.RNN(3, 5)(np.zeros((2, 1, 7), np.float32))

    def test_dtype_mismatch_says_how_to_convert(self):
        with pytest.raises(TypeError, match=r"Expected input of dtype float32.*got float64.*astype\(np.float32\)"):
            fastrnn.RNN(3, 5)(np.zeros((2, 1, 3)))
        with pytest.raises(TypeError, match=r"got int64. Convert it with .astype\(np.float32\).$"):
            fastrnn.RNN(3, 5)(np.zeros((2, 1, 3), np.int64))
        with pytest.raises(TypeError, match="Expected hx of dtype float64"):
            fastrnn.RNN(3, 5, dtype="float64")(np.zeros((2, 1, 3)), np.zeros((1, 1, 5), np.float32))

    @pytest.mark.parametrize("kwargs,error,message", [
        (dict(nonlinearity="gelu"), ValueError, "Unknown nonlinearity 'gelu'. Select from 'tanh' or 'relu'."),
        (dict(hidden_size=4.0), TypeError, "hidden_size should be of type int, got: float"),
        (dict(hidden_size=0), ValueError, "hidden_size must be greater than zero"),
        (dict(input_size=0), ValueError, "input_size must be greater than zero"),
        (dict(bias=1), TypeError, "bias should be of type bool, got: int"),
        (dict(num_layers=0), ValueError, "num_layers must be greater than zero"),
        (dict(dropout=1.5), ValueError, "dropout should be a number in range [0, 1]"),
        (dict(dropout=True), ValueError, "dropout should be a number in range [0, 1]"),
        (dict(dtype="float16"), ValueError, "dtype must be 'float32' or 'float64', got 'float16'"),
        (dict(backend="gpu"), ValueError, "Unknown backend 'gpu'"),
    ])
    def test_constructor(self, kwargs, error, message):
        arguments = {"input_size": 3, "hidden_size": 5, **kwargs}
        with pytest.raises(error) as info:
            fastrnn.RNN(**arguments)
        assert message in str(info.value)

    def test_unavailable_backend_is_an_error_not_a_fallback(self, monkeypatch):
        from fastrnn.backends import cpu
        fastrnn.backends.load_backend.cache_clear()
        monkeypatch.setattr(cpu, "_rnn_cpu", None)
        try:
            with pytest.raises(fastrnn.BackendUnavailable, match="backend 'cpu' is not available"):
                fastrnn.RNN(3, 5, backend="cpu")
        finally:
            fastrnn.backends.load_backend.cache_clear()

    def test_errors_leave_the_inputs_alone(self):
        x = np.ones((2, 1, 7), np.float32)
        with pytest.raises(ValueError):
            fastrnn.RNN(3, 5)(x)
        assert np.all(x == 1)


def test_repr_names_non_default_arguments():
    assert repr(fastrnn.RNN(3, 5)) == "RNN(3, 5)"
    assert repr(fastrnn.RNN(3, 5, num_layers=2, bidirectional=True, dtype="float64")) == \
        "RNN(3, 5, num_layers=2, bidirectional=True, dtype='float64')"
