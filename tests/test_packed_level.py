"""functional.forward_packed / backward_packed as fastrnn.torch calls them (issue 16).

Mutation testing found this level checked mostly for "it raises": a check that looked at the
wrong argument, named the wrong one, or let a buffer the kernels write in place through
unchecked, survived. Here every argument's check is asserted with its whole message (the
host checks: shape, dtype, byte order, contiguity, writeability), validate=False is held to
the same results as validate=True, the arrays the level allocates to the structure's dtype,
and backward (dropout masks between three layers, one sequence, no steps at all) to central
differences: an oracle that shares no code with the level.
"""
import re
from types import SimpleNamespace

import numpy as np
import pytest

import fastrnn
from fastrnn import functional
from fastrnn.backends import backend_status, load_backend, reference
from cell_cases import make_layer, members, random_states
from helpers import numerical_gradient

LENGTHS = [5, 3, 3, 1]
SIZES = np.array([4, 3, 3, 1, 1], np.int64)           # batch_sizes of LENGTHS: N = 12, B = 4
N, B, I, H = 12, 4, 3, 4
T_STEPS = 5


def exactly(message):
    return "^" + re.escape(message) + "$"


def case(mode="LSTM", num_layers=2, bidirectional=True, dtype="float32", seed=0,
         sizes=SIZES, backend="numpy"):
    """A stacked layer's packed problem: structure, weights, x [N, I], hx, masks [L-1, N, D*H]."""
    rng = np.random.default_rng(seed)
    if mode == "RNN_TANH":
        layer = fastrnn.RNN(I, H, num_layers, bidirectional=bidirectional, dtype=dtype, seed=seed)
    else:
        layer = make_layer(mode, I, H, num_layers=num_layers, bidirectional=bidirectional,
                           dtype=dtype, seed=seed)
    prepared = functional.prepare_weights(layer.state_dict(), mode, "numpy")
    rows, D = int(sizes.sum()), 2 if bidirectional else 1
    masks = (rng.random((num_layers - 1, rows, D * H)) < 0.6).astype(dtype) / 0.6
    return SimpleNamespace(backend=load_backend(backend), structure=prepared.structure, weights=list(prepared.weights),
                           x=rng.standard_normal((rows, I)).astype(dtype),
                           hx=random_states(rng, layer, int(sizes[0]) if len(sizes) else 0),
                           masks=masks, sizes=sizes, dtype=dtype)


def forward(c, **changes):
    arguments = dict(x=c.x, hx=c.hx, weights=c.weights, batch_sizes=c.sizes, masks=c.masks)
    arguments.update(changes)
    return functional.forward_packed(c.backend, c.structure, **arguments)


def backward(c, **changes):
    output, _, saved = forward(c)
    arguments = dict(x=c.x, hx=c.hx, weights=c.weights, batch_sizes=c.sizes, output=output,
                     saved=saved, masks=c.masks, grad_output=np.ones_like(output),
                     grad_h_n=None, grads=None)
    arguments.update(changes)
    return functional.backward_packed(c.backend, c.structure, **arguments)


def fortran(a):
    """The same values in Fortran order: not C-contiguous (every use here is 2-D or more)."""
    return np.asfortranarray(a)


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def big_endian(a):
    return a.astype(a.dtype.newbyteorder(">"))


C_CONTIGUOUS = ("Expected {0} to be C-contiguous and aligned (it is written or read in place); "
                "pass np.ascontiguousarray({0}) or a fresh np.zeros array")
WEIGHT_NAMES = ("['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', "
                "'weight_ih_l0_reverse', 'weight_hh_l0_reverse', 'bias_ih_l0_reverse', "
                "'bias_hh_l0_reverse', 'weight_ih_l1', 'weight_hh_l1', 'bias_ih_l1', "
                "'bias_hh_l1', 'weight_ih_l1_reverse', 'weight_hh_l1_reverse', "
                "'bias_ih_l1_reverse', 'bias_hh_l1_reverse']")

# (what is changed, how, exception, the whole message); the LSTM case: float32, L=2, D=2
FORWARD_ERRORS = [
    ("x", lambda c: c.x[:-1], ValueError, "Expected x of shape (12, 3), got (11, 3)"),
    ("x", lambda c: c.x.astype(np.float64), TypeError,
     "Expected x of dtype float32 (the layer's dtype), got float64"),
    ("x", lambda c: big_endian(c.x), TypeError,
     "Expected x of dtype float32 in native byte order (the layer's dtype), got >f4"),
    ("x", lambda c: fortran(c.x), ValueError, C_CONTIGUOUS.format("x")),
    ("x", lambda c: c.x.tolist(), TypeError,
     "Expected x to be a NumPy array of shape (12, 3) and dtype float32, got list"),
    ("hx", lambda c: (c.hx[0], fortran(c.hx[1])), ValueError, C_CONTIGUOUS.format("hx[1]")),
    ("hx", lambda c: (c.hx[0][:, :3], c.hx[1]), ValueError,
     "Expected hx[0] of shape (4, 4, 4), got (4, 3, 4)"),
    ("hx", lambda c: (None, c.hx[1]), TypeError,
     "LSTM: Expected hx to be a tuple (h, c) of two arrays, got None in it"),
    ("weights", lambda c: c.weights[:-1], ValueError,
     f"Expected 16 weights in the order {WEIGHT_NAMES}, got 15"),
    ("weights", lambda c: c.weights[:1] + [fortran(c.weights[1])] + c.weights[2:], ValueError,
     C_CONTIGUOUS.format("parameter 'weight_hh_l0'")),
    ("weights", lambda c: c.weights[:2] + [c.weights[2][:-1]] + c.weights[3:], ValueError,
     "Expected parameter 'bias_ih_l0' of shape (16,), got (15,)"),
    ("masks", lambda c: c.masks[:, :-1], ValueError,
     "Expected masks of shape (1, 12, 8), got (1, 11, 8)"),
    ("masks", lambda c: c.masks.astype(np.float64), TypeError,
     "Expected masks of dtype float32 (the layer's dtype), got float64"),
    ("masks", lambda c: fortran(c.masks), ValueError, C_CONTIGUOUS.format("masks")),
    ("batch_sizes", lambda c: c.sizes.tolist(), TypeError,
     "batch_sizes must be a 1-D int64 NumPy array (torch's PackedSequence batch_sizes), got "
     "list  (5,)"),
    ("batch_sizes", lambda c: c.sizes.astype(np.int32), TypeError,
     "batch_sizes must be a 1-D int64 NumPy array (torch's PackedSequence batch_sizes), got "
     "ndarray int32 (5,)"),
    ("batch_sizes", lambda c: np.array([4, 3, 4, 1], np.int64), ValueError,
     "batch_sizes must be non-increasing with every entry >= 1 (the number of sequences "
     "longer than each step), got [4, 3, 4, 1]"),
    ("batch_sizes", lambda c: np.array([4, 3, 0], np.int64), ValueError,
     "batch_sizes must be non-increasing with every entry >= 1 (the number of sequences "
     "longer than each step), got [4, 3, 0]"),
    ("output", lambda c: np.zeros((N, 8), np.float32)[:, ::-1], ValueError,
     C_CONTIGUOUS.format("output")),
    ("output", lambda c: read_only(np.zeros((N, 8), np.float32)), ValueError,
     "output is read-only, but fastrnn writes into it"),
    ("output", lambda c: np.zeros((N, 7), np.float32), ValueError,
     "Expected output of shape (12, 8), got (12, 7)"),
    ("output", lambda c: np.zeros((N, 8)), TypeError,
     "Expected output of dtype float32 (the layer's dtype), got float64"),
    ("h_n", lambda c: (np.zeros((4, B, H), np.float32), read_only(c.hx[1])), ValueError,
     "h_n[1] is read-only, but fastrnn writes into it"),
    ("saved", lambda c: read_only(np.zeros(c.structure.saved_size(N), np.float32)), ValueError,
     "saved is read-only, but fastrnn writes into it"),
    ("saved", lambda c: (read_only(np.zeros((1, N, 8), np.float32)),
                         np.zeros((4, N, 5 * H), np.float32)), ValueError,
     "saved[0] is read-only, but fastrnn writes into it"),
    ("saved", lambda c: (np.zeros((1, N, 8), np.float32),
                         np.zeros((4, N, 5 * H), np.float32)[:, ::-1]), ValueError,
     C_CONTIGUOUS.format("saved[1]")),
    ("saved", lambda c: (np.zeros((1, N, 8), np.float32),), ValueError,
     "Expected saved to be one array or the pair (layer outputs, workspaces), got a tuple of 1"),
]


@pytest.mark.parametrize("argument, corrupt, error, message", FORWARD_ERRORS)
def test_forward_packed_names_what_is_wrong(argument, corrupt, error, message):
    c = case()
    with pytest.raises(error, match=exactly(message)):
        forward(c, **{argument: corrupt(c)})


def test_forward_packed_refuses_what_is_not_a_structure():
    c = case()
    with pytest.raises(TypeError, match=exactly(
            "structure must be a fastrnn.functional.Structure, got dict")):
        functional.forward_packed(reference, {}, c.x, c.hx, c.weights, c.sizes)


BACKWARD_ERRORS = [
    ("output", lambda c, out: out[:-1], ValueError, "Expected output of shape (12, 8), got (11, 8)"),
    ("output", lambda c, out: fortran(out), ValueError, C_CONTIGUOUS.format("output")),
    ("grad_output", lambda c, out: np.ones((N, 8)), TypeError,
     "Expected grad_output of dtype float32 (the layer's dtype), got float64"),
    ("grad_output", lambda c, out: fortran(np.ones_like(out)), ValueError,
     C_CONTIGUOUS.format("grad_output")),
    ("grad_h_n", lambda c, out: (None, fortran(c.hx[1])), ValueError,
     C_CONTIGUOUS.format("grad_h_n[1]")),
    ("grad_h_n", lambda c, out: c.hx[0], TypeError,
     "LSTM: Expected grad_h_n to be a tuple (h, c) of two arrays, got ndarray"),
    ("hx", lambda c, out: (fortran(c.hx[0]), c.hx[1]), ValueError, C_CONTIGUOUS.format("hx[0]")),
    ("masks", lambda c, out: c.masks[:, 1:], ValueError,
     "Expected masks of shape (1, 12, 8), got (1, 11, 8)"),
    ("grads", lambda c, out: [np.zeros_like(w) for w in c.weights][1:], ValueError,
     f"Expected 16 gradient buffers in the order {WEIGHT_NAMES}, got 15"),
    ("grads", lambda c, out: [read_only(np.zeros_like(w)) for w in c.weights], ValueError,
     "gradient buffer 'weight_ih_l0' is read-only, but fastrnn writes into it"),
    ("grads", lambda c, out: [np.zeros(w.shape) for w in c.weights], TypeError,
     "Expected gradient buffer 'weight_ih_l0' of dtype float32 (the layer's dtype), got float64"),
    ("saved", lambda c, out: fortran(np.zeros((N, c.structure.saved_size(N) // N), np.float32)),
     ValueError, C_CONTIGUOUS.format("saved")),
    ("saved", lambda c, out: np.zeros(c.structure.saved_size(N))[:, None], TypeError,
     "Expected saved of dtype float32 (the layer's dtype), got float64"),
    ("saved", lambda c, out: (np.zeros((1, N, 8), np.float32), None), ValueError,
     "Expected saved[1] of shape (4, 12, 20), got None"),
    ("saved", lambda c, out: (np.zeros((1, N, 8), np.float32), np.zeros((4, N, 19), np.float32)),
     ValueError, "Expected saved[1] of shape (4, 12, 20), got (4, 12, 19)"),
    ("saved", lambda c, out: (np.zeros((1, N, 8)), np.zeros((4, N, 20), np.float32)),
     TypeError, "Expected saved[0] of dtype float32 (the layer's dtype), got float64"),
]


@pytest.mark.parametrize("argument, corrupt, error, message", BACKWARD_ERRORS)
def test_backward_packed_names_what_is_wrong(argument, corrupt, error, message):
    c = case()
    output, _, _ = forward(c)
    with pytest.raises(error, match=exactly(message)):
        backward(c, **{argument: corrupt(c, output)})


def test_backward_packed_reads_saved_and_gradients_it_may_not_write():
    """backward only reads saved and grad_h_n: read-only ones are accepted, and an LSTM
    grad_h_n may leave either member None (zeros)."""
    c = case(dtype="float64")
    output, _, saved = forward(c)
    grad_h = np.random.default_rng(1).standard_normal(c.hx[0].shape)
    plain = backward(c, grad_h_n=(grad_h, np.zeros_like(c.hx[1])))
    frozen = backward(c, saved=read_only(saved), grad_h_n=(read_only(grad_h), None))
    for a, e in zip([frozen[0], *frozen[1], *frozen[2]], [plain[0], *plain[1], *plain[2]]):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
@pytest.mark.parametrize("given", [False, True])
def test_validate_false_gives_what_validate_true_gives(mode, given):
    """fastrnn.torch skips the checks of arrays it made itself: nothing else may change, for
    zero initial states and fresh outputs as for given ones."""
    c = case(mode, dtype="float64", seed=2)
    buffers = {}
    if given:
        states = members(c.hx)
        buffers = dict(output=np.empty((N, 8)),
                       h_n=tuple(np.empty_like(s) for s in states) if mode == "LSTM"
                       else np.empty_like(states[0]))
    hx = c.hx if given else None
    checked = forward(c, hx=hx, **buffers)
    if given:                                     # written in place and returned
        assert checked[0] is buffers["output"]
        assert all(a is e for a, e in zip(members(checked[1]), members(buffers["h_n"])))
    trusted = forward(c, hx=hx, validate=False,
                      **{k: (tuple(np.empty_like(s) for s in v) if isinstance(v, tuple)
                             else np.empty_like(v)) for k, v in buffers.items()})
    for a, e in zip([trusted[0], *members(trusted[1]), trusted[2]],
                    [checked[0], *members(checked[1]), checked[2]]):
        np.testing.assert_array_equal(a, e)
    grad = np.random.default_rng(3).standard_normal(checked[0].shape)
    arguments = (c.x, hx, c.weights, c.sizes, checked[0], checked[2], c.masks, grad)
    slow = functional.backward_packed(reference, c.structure, *arguments)
    fast = functional.backward_packed(reference, c.structure, *arguments, validate=False)
    for a, e in zip([fast[0], *members(fast[1]), *fast[2]], [slow[0], *members(slow[1]), *slow[2]]):
        np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
@pytest.mark.parametrize("validate", [True, False])
def test_no_steps_at_all(mode, validate):
    """T = 0 (batch_sizes empty, so B = 0): empty results of the structure's dtype."""
    c = case(mode, dtype="float32", sizes=np.zeros(0, np.int64))
    output, h_n, saved = forward(c, hx=None, masks=None, validate=validate)
    assert output.shape == (0, 8) and output.dtype == np.float32
    assert [s.shape for s in members(h_n)] == [(4, 0, H)] * len(members(h_n))
    assert all(s.dtype == np.float32 for s in members(h_n))
    grad_x, grad_hx, grads = functional.backward_packed(
        reference, c.structure, c.x, None, c.weights, c.sizes, output, saved, None,
        np.zeros((0, 8), np.float32), validate=validate)
    assert grad_x.shape == (0, I) and grad_x.dtype == np.float32
    assert all(s.shape == (4, 0, H) and s.dtype == np.float32 for s in members(grad_hx))
    assert all(g.dtype == np.float32 and not g.any() for g in grads)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_what_the_level_allocates_has_the_structures_dtype(mode, backend):
    """The compiled kernels take only the structure's dtype: a float64 zero state made for a
    missing gradient would be refused there."""
    c = case(mode, dtype="float32", backend=backend)
    output, h_n, saved = forward(c, hx=None)
    assert output.dtype == saved.dtype == np.float32
    assert all(s.dtype == np.float32 for s in members(h_n))
    grad_x, grad_hx, grads = backward(c, hx=None)
    assert grad_x.dtype == np.float32
    assert all(s.dtype == np.float32 for s in members(grad_hx))
    assert all(g.dtype == np.float32 for g in grads)
    if mode == "LSTM":
        grad_h = np.ones_like(c.hx[0])
        _, grad_hx, _ = backward(c, grad_h_n=(grad_h, None))
        assert all(s.dtype == np.float32 for s in grad_hx)


def test_zero_masks_cut_the_top_layer_off_from_the_one_below():
    """masks multiply layer 0's output before layer 1 reads it: with zero masks the top layer
    runs on zeros, as a one-layer stack of its own weights does."""
    c = case("GRU", dtype="float64", seed=4)
    output, _, _ = forward(c, masks=np.zeros_like(c.masks))
    top = functional.Structure("GRU", 8, H, 1, True, True, "float64")
    alone, _, _ = functional.forward_packed(reference, top, np.zeros((N, 8)), c.hx[2:],
                                            c.weights[8:], c.sizes)
    np.testing.assert_allclose(output, alone, rtol=1e-12, atol=1e-12)
    assert not np.allclose(forward(c)[0], alone)


def numerical_check(c, grad_output, grad_h_n):
    """backward_packed's grad_x, grad_hx and two weights' gradients against central
    differences of L = sum(output * grad_output) + sum(h_n * grad_h_n)."""
    def loss():
        output, h_n, _ = forward(c, need_saved=False)
        return float((output * grad_output).sum()
                     + sum((s * g).sum() for s, g in zip(members(h_n), members(grad_h_n))))
    grad_x, grad_hx, grads = backward(c, grad_output=grad_output, grad_h_n=grad_h_n)
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, c.x), rtol=1e-6, atol=1e-8)
    for got, state in zip(members(grad_hx), members(c.hx)):
        np.testing.assert_allclose(got, numerical_gradient(loss, state), rtol=1e-6, atol=1e-8)
    names = c.structure.names()
    top = c.structure.num_layers - 1
    for name in ("weight_hh_l0", f"weight_ih_l{top}", f"bias_ih_l{top}"):
        index = names.index(name)
        np.testing.assert_allclose(grads[index], numerical_gradient(loss, c.weights[index]),
                                   rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_backward_through_three_layers_with_dropout_masks(mode):
    c = case(mode, num_layers=3, dtype="float64", seed=5)
    rng = np.random.default_rng(6)
    out_width = 2 * H
    grad_h_n = [rng.standard_normal(s.shape) for s in members(c.hx)]
    numerical_check(c, rng.standard_normal((N, out_width)),
                    tuple(grad_h_n) if mode == "LSTM" else grad_h_n[0])


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_backward_of_a_single_sequence(mode):
    c = case(mode, num_layers=2, bidirectional=False, dtype="float64", seed=7,
             sizes=np.ones(3, np.int64))
    rng = np.random.default_rng(8)
    grad_h_n = [rng.standard_normal(s.shape) for s in members(c.hx)]
    numerical_check(c, rng.standard_normal((3, H)),
                    tuple(grad_h_n) if mode == "LSTM" else grad_h_n[0])


def test_one_layer_needs_no_saved_layer_outputs():
    """One layer has no layer outputs to keep: saved's first block may be None."""
    c = case("GRU", num_layers=1, dtype="float64", seed=9)
    c.masks = None
    output, _, flat = forward(c)
    _, workspaces = c.structure.saved_views(flat, N)
    from_flat = backward(c)
    from_blocks = backward(c, saved=(None, workspaces))
    for a, e in zip([from_blocks[0], *from_blocks[2]], [from_flat[0], *from_flat[2]]):
        np.testing.assert_array_equal(a, e)


def test_backward_without_what_forward_saved():
    c = case()
    with pytest.raises(ValueError, match=exactly(
            f"backward_packed needs what forward_packed saved ({c.structure.saved_size(N)} "
            "elements): run forward_packed with need_saved=True")):
        backward(c, saved=None)


def test_backend_runs_is_false_for_a_backend_that_cannot_load(monkeypatch):
    from fastrnn import _stack
    from fastrnn.backends import BackendUnavailable

    def unavailable(name):
        raise BackendUnavailable(f"{name}: not here")
    assert functional.backend_runs("numpy", "GRU")
    monkeypatch.setattr(_stack, "load_backend", unavailable)
    assert functional.backend_runs("numpy", "GRU") is False


@pytest.mark.skipif(backend_status()["cuda"] is not None, reason="no cuda backend (simulator)")
def test_a_strided_device_saved_is_refused():
    """On a device, saved is checked for contiguity by the array itself (Numba's simulator)."""
    from numba import cuda
    c = case(dtype="float64")
    output, _, saved = forward(c)
    strided = cuda.to_device(np.repeat(saved, 2))[::2]
    with pytest.raises(ValueError, match=exactly("Expected saved to be C-contiguous")):
        functional.backward_packed(load_backend("cuda"), c.structure, c.x, c.hx, c.weights,
                                   c.sizes, output, strided, c.masks, np.ones_like(output))


def test_inputs_that_are_only_read_may_be_read_only():
    c = case(dtype="float64")
    expected = forward(c)
    frozen = forward(c, x=read_only(c.x), hx=tuple(read_only(s) for s in c.hx),
                     weights=[read_only(w) for w in c.weights], masks=read_only(c.masks))
    for a, e in zip([frozen[0], *frozen[1], frozen[2]], [expected[0], *expected[1], expected[2]]):
        np.testing.assert_array_equal(a, e)


@pytest.mark.skipif(backend_status()["cuda"] is not None, reason="no cuda backend (simulator)")
def test_device_arrays_are_checked_for_shape_and_dtype():
    from numba import cuda
    c = case(dtype="float64")
    backend = load_backend("cuda")
    with pytest.raises(ValueError, match=exactly("Expected x of shape (12, 3), got (11, 3)")):
        functional.forward_packed(backend, c.structure, cuda.to_device(c.x[:-1]), c.hx,
                                  c.weights, c.sizes)
    with pytest.raises(TypeError, match=exactly(
            "Expected x of dtype float64 (the layer's dtype), got float32. Convert it with "
            ".astype(np.float64), or build the layer with dtype='float32' if float32 is what "
            "you want.")):
        functional.forward_packed(backend, c.structure, cuda.to_device(c.x.astype(np.float32)),
                                  c.hx, c.weights, c.sizes)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_saved_in_any_shape_holds_the_same_blocks(mode):
    """backward reads saved flat whatever its shape: a 2-D view of it gives the same results
    (the gated cells have both blocks, layer outputs then workspaces)."""
    c = case(mode, dtype="float64", seed=10)
    output, _, saved = forward(c)
    flat = backward(c)
    shaped = backward(c, saved=saved.reshape(N, -1))
    for a, e in zip([shaped[0], *members(shaped[1]), *shaped[2]],
                    [flat[0], *members(flat[1]), *flat[2]]):
        np.testing.assert_array_equal(a, e)


def test_an_lstm_without_biases_is_one_with_zero_biases():
    """layer_weights places a missing bias as None, and the projection after it."""
    plain = fastrnn.LSTM(I, H, num_layers=2, bias=False, proj_size=2, dtype="float64", seed=11)
    zero = fastrnn.LSTM(I, H, num_layers=2, proj_size=2, dtype="float64", seed=11)
    zero.load_state_dict({name: plain.state_dict()[name] if name in plain.state_dict()
                          else np.zeros_like(value) for name, value in zero.state_dict().items()})
    x = np.random.default_rng(11).standard_normal((T_STEPS, 3, I))
    for a, e in zip(members(plain(x)[1]) + [plain(x)[0]], members(zero(x)[1]) + [zero(x)[0]]):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


STRUCTURE_ERRORS = [
    (dict(mode="GRU", proj_size=2), "proj_size argument is only supported for LSTM, not RNN or GRU"),
    (dict(mode="LSTM", proj_size=4), "proj_size has to be smaller than hidden_size"),
]


@pytest.mark.parametrize("changes, message", STRUCTURE_ERRORS)
def test_structure_messages(changes, message):
    arguments = dict(mode="LSTM", input_size=3, hidden_size=4, num_layers=1, bidirectional=False,
                     bias=True, dtype="float32")
    with pytest.raises(ValueError, match=exactly(message)):
        functional.Structure(**{**arguments, **changes})


def test_a_projection_of_one_is_a_projection():
    structure = functional.Structure("LSTM", 3, 4, 1, False, True, "float32", proj_size=1)
    assert structure.output_size == 1 and structure.shapes()["weight_hr_l0"] == (1, 4)


def test_read_structure_messages():
    weights = fastrnn.LSTM(I, H, seed=0).state_dict()
    with pytest.raises(TypeError, match=exactly(
            "weights must be a mapping from torch.nn.LSTM's parameter names ('weight_ih_l0', "
            "...) to arrays, got list")):
        functional.read_structure(list(weights.values()), "LSTM")
    without = {k: v for k, v in weights.items() if k != "weight_hh_l0"}
    with pytest.raises(ValueError, match=exactly(
            "weights must contain at least 'weight_ih_l0' and 'weight_hh_l0' (torch.nn.LSTM's "
            "names), got ['bias_hh_l0', 'bias_ih_l0', 'weight_ih_l0']")):
        functional.read_structure(without, "LSTM")
    elman = fastrnn.RNN(I, H, seed=0).state_dict()
    assert functional.read_structure(elman).mode == "RNN_TANH"


def test_check_parameters_names_what_is_not_an_array():
    class ShapeOnly:
        shape = (16, 3)
    weights = fastrnn.LSTM(I, H, seed=0).state_dict()
    structure = functional.read_structure(weights, "LSTM")
    with pytest.raises(TypeError, match=exactly(
            "Expected parameter 'weight_ih_l0' to be an array of shape (16, 3), got ShapeOnly")):
        functional.check_parameters({**weights, "weight_ih_l0": ShapeOnly()}, structure)


def test_a_backend_without_a_cells_kernels_says_what_to_use(monkeypatch):
    from fastrnn.backends import BackendUnavailable
    from fastrnn.backends import cpu
    structure = functional.Structure("GRU", 3, 4, 1, False, True, "float32")
    monkeypatch.delattr(cpu, "gru_forward")
    with pytest.raises(BackendUnavailable, match=exactly(
            "backend 'cpu' has no GRU kernels (gru_forward/gru_backward) in this build; use "
            "backend='numpy' (the reference) or 'auto'")):
        functional.check_cell_kernels(cpu, structure.cell)
    stranger = SimpleNamespace(__name__="elsewhere.backend")
    with pytest.raises(BackendUnavailable, match="^backend 'elsewhere.backend' has no GRU"):
        functional.check_cell_kernels(stranger, structure.cell)
