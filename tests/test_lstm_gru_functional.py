"""fastrnn.functional for the gated cells: the user-level entry points, and the packed level
fastrnn.torch builds on (Structure, forward_packed/backward_packed and what forward saves).

The packed-level checks here are what a torch custom op relies on: ``saved`` is one flat
array whose size follows from the structure and N alone (a fake implementation sizes it
without running anything), carved into the layer outputs and each layer-direction's
workspace in the backend contract's layout.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn import functional
from fastrnn.backends import BackendUnavailable, reference
from cell_cases import make_layer, members, random_states
from helpers import assert_close, random_array

LENGTHS = [5, 3, 3, 1]
SIZES = np.array([4, 3, 3, 1, 1], np.int64)           # batch_sizes of LENGTHS, N = 12
N, B, I, H = 12, 4, 3, 4
WORKSPACE = {"RNN_TANH": 0, "LSTM": 5 * H, "GRU": 4 * H}   # the contract's columns per row


def packed_case(mode, num_layers, bidirectional, proj_size=0, bias=True, seed=0):
    """(structure, weights list, x [N, I], hx) for forward_packed, float64."""
    rng = np.random.default_rng(seed)
    if mode == "RNN_TANH":
        layer = fastrnn.RNN(I, H, num_layers, bias=bias, bidirectional=bidirectional,
                            dtype="float64", seed=seed)
    else:
        layer = make_layer(mode, I, H, proj_size, num_layers=num_layers, bias=bias,
                           bidirectional=bidirectional, dtype="float64", seed=seed)
    prepared = functional.prepare_weights(layer.state_dict(), mode, "numpy")
    return prepared.structure, list(prepared.weights), rng.standard_normal((N, I)), \
        random_states(rng, layer, B)


@pytest.mark.parametrize("mode,proj_size", [("RNN_TANH", 0), ("LSTM", 0), ("LSTM", 2), ("GRU", 0)])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_saved_size_follows_from_the_structure_and_n(mode, proj_size, num_layers, bidirectional):
    structure, weights, x, hx = packed_case(mode, num_layers, bidirectional, proj_size)
    D, P = (2 if bidirectional else 1), proj_size or H
    expected = N * ((num_layers - 1) * D * P + num_layers * D * WORKSPACE[mode])
    assert structure.saved_size(N) == expected
    output, h_n, saved = functional.forward_packed(reference, structure, x, hx, weights, SIZES)
    assert saved.shape == (expected,) and saved.dtype == np.float64
    assert output.shape == (N, D * P)
    assert [s.shape for s in members(h_n)] == [s.shape for s in members(hx)]
    _, _, nothing = functional.forward_packed(reference, structure, x, hx, weights, SIZES,
                                              need_saved=False)
    assert nothing is None


@pytest.mark.parametrize("mode,proj_size", [("LSTM", 0), ("LSTM", 2), ("GRU", 0)])
def test_saved_holds_the_layer_outputs_then_each_layer_directions_workspace(mode, proj_size):
    """Layer 0's output and the workspace of (layer 1, reverse) are what the reference
    writes when it runs those layer-directions alone (backends/__init__.py's layout)."""
    structure, weights, x, hx = packed_case(mode, 2, True, proj_size, seed=1)
    output, _, saved = functional.forward_packed(reference, structure, x, hx, weights, SIZES)
    layer_outputs, workspaces = structure.saved_views(saved, N)
    P = proj_size or H
    assert layer_outputs.shape == (1, N, 2 * P) and workspaces.shape == (4, N, WORKSPACE[mode])
    states = members(hx)
    first = functional.Structure(mode, I, H, 1, True, True, "float64", proj_size)
    first_states = tuple(s[:2] for s in states)          # layer 0's two directions
    alone, _, _ = functional.forward_packed(
        reference, first, x, first_states if mode == "LSTM" else first_states[0],
        weights[:len(weights) // 2], SIZES, need_saved=False)
    np.testing.assert_array_equal(layer_outputs[0], alone)
    # (layer 1, reverse) = state 3: its input is layer 0's output
    w = structure.layer_weights(weights, 1, 1)
    out, workspace = np.empty((N, P)), np.empty((N, WORKSPACE[mode]))
    finals = [np.empty_like(s[3]) for s in states]
    if mode == "LSTM":
        reference.lstm_forward(layer_outputs[0], states[0][3], states[1][3], *w, SIZES, True, out,
                               *finals, workspace)
    else:
        reference.gru_forward(layer_outputs[0], states[0][3], *w, SIZES, True, out, *finals,
                              workspace)
    np.testing.assert_array_equal(workspaces[3], workspace)
    np.testing.assert_array_equal(output[:, P:], out)


def test_elman_saved_is_the_layer_outputs_and_backward_reads_it_in_any_shape():
    structure, weights, x, hx = packed_case("RNN_TANH", 3, True)
    output, _, saved = functional.forward_packed(reference, structure, x, hx, weights, SIZES)
    grad_out = np.random.default_rng(2).standard_normal(output.shape)
    flat = functional.backward_packed(reference, structure, x, hx, weights, SIZES, output, saved,
                                      None, grad_out)
    shaped = functional.backward_packed(reference, structure, x, hx, weights, SIZES, output,
                                        saved.reshape(2, N, 2 * H), None, grad_out)
    for a, e in zip(flat[:2] + tuple(flat[2]), shaped[:2] + tuple(shaped[2])):
        np.testing.assert_array_equal(a, e)
    one_layer, w1, x1, h1 = packed_case("RNN_TANH", 1, False)
    out1, _, saved1 = functional.forward_packed(reference, one_layer, x1, h1, w1, SIZES)
    assert saved1.size == 0
    functional.backward_packed(reference, one_layer, x1, h1, w1, SIZES, out1, None, None,
                               np.ones_like(out1))      # nothing to save: None is accepted


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_packed_backward_matches_the_layer(mode):
    """backward_packed on an equal-length batch gives the layer's gradients (grad_h_n too)."""
    layer = make_layer(mode, I, H, 2 if mode == "LSTM" else 0, num_layers=2,
                       bidirectional=True, dtype="float64", backend="numpy", seed=4)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, I))
    hx = random_states(rng, layer, 2)
    grad_hn = random_states(rng, layer, 2, scale=1.0)
    output, h_n = layer(x, hx)
    grad_out = rng.standard_normal(output.shape)
    grad_x, grad_hx = layer.backward(grad_out, grad_hn)
    prepared = functional.prepare_weights(layer.state_dict(), mode, "numpy")
    sizes = np.full(3, 2, np.int64)
    out_p, h_n_p, saved = functional.forward_packed(reference, prepared.structure,
                                                    x.reshape(6, I), hx, prepared.weights, sizes)
    grad_x_p, grad_hx_p, grads = functional.backward_packed(
        reference, prepared.structure, x.reshape(6, I), hx, prepared.weights, sizes, out_p,
        saved, None, grad_out.reshape(6, -1), grad_hn)
    assert_close(out_p.reshape(output.shape), output, "float64")
    assert_close(grad_x_p.reshape(x.shape), grad_x, "float64")
    for a, e in zip(members(h_n_p) + members(grad_hx_p), members(h_n) + members(grad_hx)):
        assert_close(a, e, "float64")
    for name, grad in zip(prepared.structure.names(), grads):
        assert_close(grad, layer.grads[name], "float64")


@pytest.mark.parametrize("mode,proj_size", [("RNN_TANH", 0), ("LSTM", 2), ("GRU", 0)])
def test_saved_as_its_two_blocks_gives_what_the_flat_array_gives(mode, proj_size):
    """fastrnn.torch keeps saved's blocks as two arrays (an operator's outputs may not share
    memory): forward_packed writes them in place, backward_packed reads them, bit for bit as
    with one flat array; blocks of the wrong shape are refused."""
    structure, weights, x, hx = packed_case(mode, 2, True, proj_size, seed=5)
    output, h_n, flat = functional.forward_packed(reference, structure, x, hx, weights, SIZES)
    blocks = tuple(np.full(shape, np.nan) if size else None for shape, size in
                   zip(structure.saved_shapes(N), (True, structure.workspace_width > 0)))
    output2, h_n2, saved = functional.forward_packed(reference, structure, x, hx, weights, SIZES,
                                                     saved=blocks)
    assert saved is blocks
    for a, e in zip(structure.saved_views(blocks, N), structure.saved_views(flat, N)):
        np.testing.assert_array_equal(a, e)
    grad = np.random.default_rng(5).standard_normal(output.shape)
    from_flat = functional.backward_packed(reference, structure, x, hx, weights, SIZES, output,
                                           flat, None, grad)
    from_blocks = functional.backward_packed(reference, structure, x, hx, weights, SIZES,
                                             output2, blocks, None, grad)
    for a, e in zip([from_blocks[0], *members(from_blocks[1]), *from_blocks[2]],
                    [from_flat[0], *members(from_flat[1]), *from_flat[2]]):
        np.testing.assert_array_equal(a, e)
    with pytest.raises(ValueError, match=r"saved\[0\] of shape"):
        functional.backward_packed(reference, structure, x, hx, weights, SIZES, output,
                                   (blocks[0][:, :-1], blocks[1]), None, grad)
    with pytest.raises(ValueError, match=r"saved\[0\] of shape .*got None"):
        functional.backward_packed(reference, structure, x, hx, weights, SIZES, output,
                                   (None, blocks[1]), None, grad)


def test_packed_level_checks_the_gated_arguments():
    structure, weights, x, (h, c) = packed_case("LSTM", 2, False, seed=3)
    with pytest.raises(TypeError, match=r"LSTM: Expected hx to be a tuple \(h, c\) of two arrays"):
        functional.forward_packed(reference, structure, x, h, weights, SIZES)
    with pytest.raises(ValueError, match=r"hx\[1\] of shape \(2, 4, 4\), got \(2, 3, 4\)"):
        functional.forward_packed(reference, structure, x, (h, c[:, :3]), weights, SIZES)
    with pytest.raises(ValueError, match=r"h_n\[0\] is read-only"):
        frozen = np.empty_like(h)
        frozen.flags.writeable = False
        functional.forward_packed(reference, structure, x, (h, c), weights, SIZES,
                                  h_n=(frozen, np.empty_like(c)))
    output, _, saved = functional.forward_packed(reference, structure, x, (h, c), weights, SIZES)
    grad = np.ones_like(output)
    with pytest.raises(ValueError, match=rf"saved to hold {saved.size} elements"):
        functional.backward_packed(reference, structure, x, (h, c), weights, SIZES, output,
                                   saved[:-1], None, grad)
    with pytest.raises(ValueError, match="run forward_packed with need_saved=True"):
        functional.backward_packed(reference, structure, x, (h, c), weights, SIZES, output,
                                   None, None, grad)
    with pytest.raises(ValueError, match="C-contiguous"):
        functional.backward_packed(reference, structure, x, (h, c), weights, SIZES, output,
                                   np.repeat(saved, 2)[::2], None, grad)


def test_structure_checks_mode_and_projection():
    with pytest.raises(ValueError, match="Unrecognized RNN mode: 'LSTMX'"):
        functional.Structure("LSTMX", 3, 4, 1, False, True, "float32")
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        functional.Structure("GRU", 3, 4, 1, False, True, "float32", proj_size=2)
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        functional.Structure("LSTM", 3, 4, 1, False, True, "float32", proj_size=4)
    lstm = functional.Structure("LSTM", 3, 4, 2, True, False, "float32", proj_size=2)
    assert lstm.names() == [f"{kind}_l{layer}{suffix}" for layer in range(2)
                            for suffix in ("", "_reverse")
                            for kind in ("weight_ih", "weight_hh", "weight_hr")]
    assert lstm.shapes()["weight_ih_l1"] == (16, 4) and lstm.shapes()["weight_hr_l0"] == (2, 4)


def test_read_structure_names_what_is_wrong():
    lstm = fastrnn.LSTM(3, 4, proj_size=2).state_dict()
    with pytest.raises(ValueError, match=r"'weight_ih_l0' of shape \[4 \* hidden_size, input_size\]"):
        functional.read_structure({**lstm, "weight_ih_l0": np.zeros((6, 3), np.float32)}, "LSTM")
    gru = fastrnn.GRU(3, 4).state_dict()
    with pytest.raises(ValueError, match=r"unexpected \['weight_hr_l0'\]"):
        functional.read_structure({**gru, "weight_hr_l0": np.zeros((2, 4), np.float32)}, "GRU")
    two_layers = fastrnn.LSTM(3, 4, num_layers=2, proj_size=2).state_dict()
    del two_layers["weight_hr_l1"]
    with pytest.raises(ValueError, match=r"missing \['weight_hr_l1 \[2, 4\]'\]"):
        functional.read_structure(two_layers, "LSTM")
    structure = functional.read_structure(lstm, "LSTM")
    assert (structure.hidden_size, structure.proj_size, structure.output_size) == (4, 2, 2)


# ----------------------------------------------------------------------------- user level
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_functional_entry_points_take_a_torch_state_dict(mode):
    torch = pytest.importorskip("torch")
    kwargs = {"proj_size": 2} if mode == "LSTM" else {}
    module = getattr(torch.nn, mode)(3, 4, num_layers=2, batch_first=True, **kwargs).double()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 5, 3))
    forward = {"LSTM": functional.lstm_forward, "GRU": functional.gru_forward}[mode]
    output, h_n, context = forward(x, module.state_dict(), lengths=[5, 2], batch_first=True,
                                   backend="numpy")
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), [5, 2],
                                                     batch_first=True)
    expected, final = module(packed)
    expected, _ = torch.nn.utils.rnn.pad_packed_sequence(expected, batch_first=True)
    assert_close(output, expected.detach().numpy(), "float64")
    for a, e in zip(members(h_n), members(final)):
        assert_close(a, e.detach().numpy(), "float64")
    backward = {"LSTM": functional.lstm_backward, "GRU": functional.gru_backward}[mode]
    grad_x, grad_hx, grads = backward(context, np.ones_like(output))
    assert grad_x.shape == x.shape and set(grads) == set(module.state_dict())
    other = {"LSTM": functional.gru_backward, "GRU": functional.lstm_backward}[mode]
    with pytest.raises(RuntimeError, match=f"got one of the {mode} cell"):
        other(context, np.ones_like(output))
    with pytest.raises(RuntimeError, match="rnn_backward needs the context of a forward of the RNN cell"):
        functional.rnn_backward(context, np.ones_like(output))


def test_a_backend_without_the_cells_kernels_is_a_clear_error_and_auto_avoids_it(monkeypatch):
    from fastrnn.backends import cpu
    monkeypatch.delattr(cpu, "lstm_forward", raising=False)
    monkeypatch.setattr(functional, "_AUTO_HOST", {})
    weights = fastrnn.LSTM(3, 4).state_dict()
    with pytest.raises(BackendUnavailable, match=r"backend 'cpu' has no LSTM kernels \(lstm_forward"):
        functional.prepare_weights(weights, "LSTM", "cpu")
    with pytest.raises(BackendUnavailable, match="backend 'cpu' has no LSTM kernels"):
        fastrnn.LSTM(3, 4, backend="cpu")
    assert functional.resolve_backend_name("auto", np.zeros(1), "LSTM") == "numpy"
    assert functional.resolve_backend_name("auto", np.zeros(1), "RNN_TANH") == "cpu"
    layer = fastrnn.LSTM(3, 4, seed=0)                   # 'auto': runs on the reference
    out, _ = layer(np.ones((2, 1, 3), np.float32))
    assert layer._prepared.backend_name == "numpy" and out.shape == (2, 1, 4)


def test_dropout_masks_of_a_projected_lstm_have_its_output_width():
    layer = fastrnn.LSTM(3, 6, num_layers=3, proj_size=2, dropout=0.5, seed=0, backend="numpy")
    x = random_array(np.random.default_rng(0), (4, 2, 3), "float32")
    layer(x)
    assert layer._context.masks.shape == (2, 8, 2)       # [L-1, N, D*P]
