"""fastrnn.torch promises that mutation testing found unasserted (issue 16).

Per-sample gradients through torch's ExpandedWeights (call_for_per_sample_grads) run torch's
own decomposition: each cell's configuration (nonlinearity, projection, no bias, two layers,
both directions, batch_first) must give torch's grad_sample. A dtype or device move drops the
prepared eager path (freeing the old weights), and the next call runs on the moved ones; a pickled module carries no
view of this process's memory.

Derivatives of derivatives (the composite stack): double backward with only some gradients
penalised, forward mode and forward-over-reverse through packed batches with dropout, dual
inputs through the weights' gradients, each cell at a width that gate chunking cannot fake.
The operators: their argument checks and messages, one step, other integer batch sizes, the
backend a device picks, and that wrapper subclasses and dispatch modes see them.
"""
import gc
import pickle
import weakref

import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils._per_sample_grad import call_for_per_sample_grads  # noqa: E402

from torch_helpers import module_pair, state_members  # noqa: E402

CONFIGURATIONS = [
    ("RNN", dict(nonlinearity="relu")),
    ("RNN", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("LSTM", dict(proj_size=2)),
    ("LSTM", dict(num_layers=2, bias=False, batch_first=True)),
    ("GRU", dict(bidirectional=True)),
    ("GRU", dict(num_layers=2, bias=False)),
]


def per_sample_grads(module, batch, batch_first, hx):
    wrapped = call_for_per_sample_grads(module, batch_size=3, batch_first=batch_first)
    output, final = wrapped(batch, hx)
    (output.pow(2).sum() + sum(s.sum() for s in state_members(final))).backward()
    return output.detach(), [s.detach() for s in state_members(final)], \
        [p.grad_sample for p in module.parameters()]


@pytest.mark.parametrize("cell, kwargs", CONFIGURATIONS)
def test_per_sample_gradients_through_expanded_weights_match_torch(cell, kwargs):
    ours, theirs = module_pair(cell=cell, dtype=torch.float64, **kwargs)
    batch_first = kwargs.get("batch_first", False)
    generator = torch.Generator().manual_seed(1)
    shape = (3, 5, 3) if batch_first else (5, 3, 3)
    batch = torch.randn(shape, generator=generator, dtype=torch.float64)
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    h = torch.randn(layers, 3, kwargs.get("proj_size") or 4, generator=generator,
                    dtype=torch.float64)
    hx = (h, torch.randn(layers, 3, 4, generator=generator, dtype=torch.float64)) \
        if cell == "LSTM" else h
    got, expected = (per_sample_grads(m, batch, batch_first, hx) for m in (ours, theirs))
    for a, e in zip([got[0], *got[1], *got[2]], [expected[0], *expected[1], *expected[2]]):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    assert all(g.shape[0] == 3 for g in got[2])


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_dtype_move_reaches_the_eager_path(cell):
    ours, theirs = module_pair(cell=cell)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        ours(x)                                   # prepares the eager path on float32 weights
        ours.double()
        theirs.double()
        with torch.no_grad():
            next(ours.parameters()).add_(0.25)    # the moved weights, changed in place
            next(theirs.parameters()).add_(0.25)
        got, got_final = ours(x.double())
        expected, expected_final = theirs(x.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for a, e in zip(state_members(got_final), state_members(expected_final)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_a_move_lets_the_old_weights_go():
    """The prepared eager path holds views of the weights it was made for: a move drops it,
    so the old (float32) storage is freed, not kept alive beside the new one."""
    ours, _ = module_pair(cell="LSTM")
    with torch.no_grad():
        ours(torch.randn(3, 2, 3))
    prepared = weakref.ref(ours.__dict__["_eager"])
    ours.double()
    gc.collect()
    assert prepared() is None


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_pickled_module_keeps_no_eager_state_and_runs_alike(cell):
    ours, _ = module_pair(cell=cell)
    x = torch.randn(4, 2, 3)
    with torch.no_grad():
        expected, _ = ours(x)
    copy = pickle.loads(pickle.dumps(ours))
    assert "_eager" not in copy.__dict__ and "_eager" in ours.__dict__
    with torch.no_grad():
        got, _ = copy(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("cell, kwargs", [("RNN", {}), ("LSTM", dict(num_layers=2)),
                                          ("GRU", dict(bidirectional=True))])
def test_per_sample_gradients_of_a_packed_batch_match_torch(cell, kwargs):
    from torch.nn.utils.rnn import pack_padded_sequence
    ours, theirs = module_pair(cell=cell, dtype=torch.float64, **kwargs)
    x = torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    packed = pack_padded_sequence(x, [5, 3, 2])
    results = []
    for module in (ours, theirs):
        output, final = call_for_per_sample_grads(module, batch_size=3)(packed)
        (output.data.pow(2).sum() + sum(s.sum() for s in state_members(final))).backward()
        results.append([output.data.detach(), *[s.detach() for s in state_members(final)],
                        *[p.grad_sample for p in module.parameters()]])
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_vmap_over_the_data_of_a_packed_batch(cell):
    """vmap folds its entries into the packed batch (batch_sizes scaled by their number):
    forward values and gradients of the data equal one call per entry."""
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
    ours, _ = module_pair(cell=cell, dtype=torch.float64, num_layers=2, bidirectional=True)
    generator = torch.Generator().manual_seed(3)
    packed = pack_padded_sequence(torch.randn(5, 3, 3, generator=generator,
                                              dtype=torch.float64), [5, 3, 2])
    entries = torch.stack([packed.data, -packed.data, 0.5 * packed.data])

    def run(data):
        output, final = ours(PackedSequence(data, packed.batch_sizes))
        return (output.data, *state_members(final))

    def loss(data):
        output, *finals = run(data)
        return output.pow(2).sum() + sum(s.sum() for s in finals)

    batched = torch.func.vmap(run)(entries)
    gradients = torch.func.vmap(torch.func.grad(loss))(entries)
    for v in range(3):
        for got, expected in zip(batched, run(entries[v])):
            torch.testing.assert_close(got[v], expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gradients[v], torch.func.grad(loss)(entries[v]),
                                   rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ derivatives of derivatives
# The composite stack (composite.py) serves double backward and forward mode: each cell at a
# width whose gate blocks no other chunking reproduces (5: 3H and 4H split unevenly otherwise),
# the LSTM with and without a projection, the Elman cell with both nonlinearities.
WIDE = [("RNN", dict()), ("RNN", dict(nonlinearity="relu")), ("LSTM", dict()),
        ("LSTM", dict(proj_size=2)), ("LSTM", dict(proj_size=2, bias=False)), ("GRU", dict())]
F64 = torch.float64
TIGHT = dict(rtol=1e-9, atol=1e-11)


def wide_pair(cell, kwargs, seed=0, **more):
    return module_pair(3, 5, seed=seed, cell=cell, dtype=F64, **{**kwargs, **more})


def leaf_states(module, batch, generator):
    """Initial states that require grad: (h0,) or the LSTM's (h0, c0)."""
    lead = (module.num_layers * (2 if module.bidirectional else 1), batch)
    widths = [module.proj_size or module.hidden_size, module.hidden_size] \
        if module.mode == "LSTM" else [module.hidden_size]
    return [torch.randn(*lead, w, generator=generator, dtype=F64).requires_grad_()
            for w in widths]


def as_hx(module, states):
    return tuple(states) if module.mode == "LSTM" else states[0]


def loss_of(module, x, states):
    output, final = module(x, as_hx(module, states))
    output = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    return output.pow(3).sum() + sum(s.pow(2).sum() for s in state_members(final))


@pytest.mark.parametrize("penalised", ["weights", "input", "states"])
@pytest.mark.parametrize("cell, kwargs", WIDE)
def test_a_penalty_on_some_of_the_gradients_matches_torch(cell, kwargs, penalised):
    """Double backward when only some first-order gradients enter the penalty: the others
    reach backward as None."""
    results = []
    for module in wide_pair(cell, kwargs, seed=1):
        generator = torch.Generator().manual_seed(5)
        x = torch.randn(4, 2, 3, dtype=F64, generator=generator, requires_grad=True)
        states = leaf_states(module, 2, generator)
        wrt = {"weights": list(module.parameters()), "input": [x], "states": states}[penalised]
        grads = torch.autograd.grad(loss_of(module, x, states), wrt, create_graph=True)
        penalty = sum(g.pow(2).sum() for g in grads)
        second = torch.autograd.grad(penalty, [x, *states, *module.parameters()])
        results.append([penalty.detach(), *second])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **TIGHT)


def packed_dropout_case(cell, kwargs):
    """Two-layer bidirectional modules with dropout, in training, and a packed batch."""
    ours, theirs = wide_pair(cell, kwargs, seed=2, num_layers=2, bidirectional=True,
                             dropout=0.5)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(4, 3, 3, dtype=F64, generator=generator)
    data = torch.nn.utils.rnn.pack_padded_sequence(x, [2, 4, 3], enforce_sorted=False).data
    return ours, theirs, data, torch.randn_like(data, generator=generator), \
        [s.detach() for s in leaf_states(ours, 3, generator)]


def run_packed(module, data, states):
    """The module on packed ``data`` of lengths [2, 4, 3] (packed outside: packing has no
    forward-mode derivative in torch)."""
    torch.manual_seed(9)                         # the same dropout masks on every call
    packed = torch.nn.utils.rnn.PackedSequence(data, PACKED_SIZES, *PACKED_ORDER)
    output, final = module(packed, as_hx(module, states))
    return (output.data, *state_members(final))


PACKED_SIZES = torch.tensor([3, 3, 2, 1])
PACKED_ORDER = (torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1]))   # sorted, unsorted


def dual_results(module, data, tangent, states, first_order):
    """Tangents of run_packed's results (forward mode; torch's modules refuse torch.func.jvp),
    or of the gradient of the input data (forward over reverse) when ``first_order``."""
    from torch.autograd import forward_ad
    primal = data.clone().requires_grad_(first_order)
    with forward_ad.dual_level():
        results = run_packed(module, forward_ad.make_dual(primal, tangent), states)
        if first_order:
            loss = results[0].pow(3).sum() + sum(s.pow(2).sum() for s in results[1:])
            results = torch.autograd.grad(loss, primal)
        return [forward_ad.unpack_dual(r).tangent for r in results]


@pytest.mark.parametrize("first_order", [False, True], ids=["forward", "forward_over_reverse"])
@pytest.mark.parametrize("cell, kwargs", WIDE)
def test_forward_mode_through_a_packed_batch_with_dropout_matches_torch(cell, kwargs,
                                                                        first_order):
    ours, theirs, data, tangent, states = packed_dropout_case(cell, kwargs)
    got = dual_results(ours, data, tangent, states, first_order)
    expected = dual_results(theirs, data, tangent, states, first_order)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **TIGHT)


@pytest.mark.parametrize("cell, kwargs", WIDE)
def test_dual_input_through_the_weight_gradients_matches_torch(cell, kwargs):
    """torch.autograd.forward_ad: only the input carries a tangent (the states, the weights
    and the output gradients have none) through the weights' first-order gradients."""
    from torch.autograd import forward_ad
    results = []
    for module in wide_pair(cell, kwargs, seed=3):
        generator = torch.Generator().manual_seed(7)
        x = torch.randn(4, 2, 3, dtype=F64, generator=generator)
        tangent = torch.randn_like(x, generator=generator)
        states = [s.detach() for s in leaf_states(module, 2, generator)]
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(x, tangent)
            grads = torch.autograd.grad(loss_of(module, dual, states),
                                        list(module.parameters()))
            results.append([forward_ad.unpack_dual(g).tangent for g in grads])
    for ours, theirs in zip(*results):
        assert ours is not None
        torch.testing.assert_close(ours, theirs, **TIGHT)


def test_per_sample_gradients_with_dropout_in_training_match_torch():
    """torch's decomposition runs with the module's dropout and mode, as for torch's modules.
    (torch 2.13's decomposition drops nothing: its `train and num_layers < i - 1` is never
    true; fastrnn gives what torch gives.)"""
    ours, theirs = module_pair(cell="LSTM", dtype=F64, num_layers=2, dropout=0.5)
    batch = torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    results = []
    for module in (ours, theirs):
        torch.manual_seed(4)
        results.append(per_sample_grads(module, batch, False, None))
    for a, e in zip([results[0][0], *results[0][2]], [results[1][0], *results[1][2]]):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- the operators
def operator_arguments(mode, cx_shape=None, need_workspace=True):
    """rnn_forward's arguments for a one-layer cell of width 4 on [3, 2, 3] input."""
    import fastrnn.torch.ops as ops
    generator = torch.Generator().manual_seed(5)
    randn = lambda *shape: torch.randn(*shape, generator=generator, dtype=F64)
    module = getattr(torch.nn, mode.split("_")[0])(3, 4, dtype=F64)
    x, hx = randn(3, 2, 3), randn(1, 2, 4)
    cx = randn(*hx.shape) if mode == "LSTM" else ops.no_cell_state(hx)
    cx = cx if cx_shape is None else randn(*cx_shape)
    weights = ops.flatten_weights(list(module.parameters())).detach()
    return (x, None, hx, cx, weights, None, mode, 1, False, True, "cpu", need_workspace)


@pytest.mark.parametrize("mode", ["RNN_TANH", "GRU"])
@pytest.mark.parametrize("cx_shape", [(1, 2, 4), (1, 2, 1), (1, 0), (2, 2, 0), (1, 3, 0)])
def test_a_cell_without_a_cell_state_refuses_any_other_cx(mode, cx_shape):
    with pytest.raises(RuntimeError) as raised:
        torch.ops.fastrnn.rnn_forward(*operator_arguments(mode, cx_shape))
    assert str(raised.value) == (
        f"fastrnn: a {mode} cell has no cell state: cx must have shape (1, 2, 0) (hx's with "
        f"width 0), got {cx_shape}")


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_backward_refuses_a_forward_that_kept_no_workspace(mode):
    arguments = operator_arguments(mode, need_workspace=False)
    output, h_n, c_n, layer_outputs, gates = torch.ops.fastrnn.rnn_forward(*arguments)
    columns = {"RNN_TANH": 0, "LSTM": 5 * 4, "GRU": 4 * 4}[mode]     # the gates of one row
    assert (layer_outputs.shape, gates.shape) == ((0, 3, 2, 4), (0, 3, 2, columns))
    x, sizes, hx, cx, weights, masks, *config, _ = arguments
    backward = lambda: torch.ops.fastrnn.rnn_backward(
        x, sizes, hx, cx, weights, masks, output, layer_outputs, gates, torch.ones_like(output),
        torch.ones_like(h_n), torch.ones_like(c_n), *config, True)
    if mode == "RNN_TANH":             # one Elman layer keeps nothing: its backward can run
        kept = torch.ops.fastrnn.rnn_forward(*arguments[:-1], True)
        expected = torch.ops.fastrnn.rnn_backward(
            x, sizes, hx, cx, weights, masks, *kept[:1], *kept[3:], torch.ones_like(output),
            torch.ones_like(h_n), torch.ones_like(c_n), *config, True)
        for got, wanted in zip(backward(), expected, strict=True):
            torch.testing.assert_close(got, wanted, rtol=0, atol=0)
        return
    with pytest.raises(RuntimeError) as raised:
        backward()
    assert str(raised.value) == ("fastrnn::rnn_backward needs the workspace of an rnn_forward "
                                 "call with need_workspace=True")


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_the_operator_refuses_zero_steps_as_torch_does(mode):
    x, sizes, hx, cx, weights, *rest = operator_arguments(mode)
    with pytest.raises(ValueError) as raised:
        torch.ops.fastrnn.rnn_forward(x[:0], sizes, hx, cx, weights, *rest)
    assert str(raised.value) == "Expected sequence length to be larger than 0 in RNN"


@pytest.mark.parametrize("mode", ["RNN_TANH", "LSTM", "GRU"])
def test_one_step_and_int32_batch_sizes_give_the_operators_usual_results(mode):
    """T = 1 on the equal-length path equals the first step of a longer call; batch_sizes of
    another integer dtype equal int64 ones."""
    x, sizes, hx, cx, weights, *rest = operator_arguments(mode)
    whole = torch.ops.fastrnn.rnn_forward(x, sizes, hx, cx, weights, *rest)
    first = torch.ops.fastrnn.rnn_forward(x[:1], sizes, hx, cx, weights, *rest)
    torch.testing.assert_close(first[0], whole[0][:1], rtol=0, atol=0)
    data = x.reshape(-1, x.shape[-1])                  # 3 steps of 2 rows, packed
    for dtype in (torch.int32, torch.int16):
        got = torch.ops.fastrnn.rnn_forward(data, torch.tensor([2, 2, 2], dtype=dtype), hx, cx,
                                            weights, *rest)
        for a, b in zip(got[:3], whole[:3]):
            torch.testing.assert_close(a.reshape(b.shape), b, rtol=0, atol=0)


@pytest.mark.parametrize("shape_of", [lambda n: (n + 1,), lambda n: (n - 1,), lambda n: (1, n),
                                      lambda n: (n, 1)])
def test_a_flat_weight_buffer_of_another_shape_is_refused(shape_of):
    import fastrnn.torch.ops as ops
    x, sizes, hx, cx, weights, *rest = operator_arguments("GRU")
    n = weights.numel()
    wrong = torch.zeros(shape_of(n), dtype=weights.dtype)
    with pytest.raises(ValueError) as raised:
        torch.ops.fastrnn.rnn_forward(x, sizes, hx, cx, wrong, *rest)
    shapes = ops.weight_shapes(ops.Config("GRU", 1, False, True, "cpu"), 3, 4, 0)
    assert str(raised.value) == (f"Expected a flat weight buffer of {n} elements (torch's flat "
                                 f"order, shapes {shapes}), got shape {shape_of(n)}")


def test_results_for_another_device_are_made_there():
    """What comes back from a device backend becomes a tensor on the input's device (CUDA
    on a GPU; the meta device stands in for it here), a CPU result shares the array."""
    import numpy as np
    import fastrnn.torch.ops as ops
    array = np.arange(6.0).reshape(2, 3)
    elsewhere = ops._as_tensor(array, torch.device("meta"))
    assert (elsewhere.device.type, elsewhere.shape, elsewhere.dtype) == \
        ("meta", (2, 3), torch.float64)
    here = ops._as_tensor(array, torch.device("cpu"))
    assert here.device.type == "cpu" and here.data_ptr() == array.ctypes.data


@pytest.mark.parametrize("name, device, expected", [
    ("auto", "cuda", "cuda"), ("auto", "cuda:1", "cuda"), ("auto", "cpu", "cpu"),
    ("cuda", "cuda", "cuda"), ("cpu", "cpu", "cpu"), ("numpy", "cpu", "numpy"),
    ("cpu", "cuda", "backend 'cpu' cannot run on a tensor on cuda; use backend='auto'"),
    ("cuda", "cpu", "backend 'cuda' cannot run on a tensor on cpu; use backend='auto'")])
def test_the_backend_follows_the_device(name, device, expected):
    """A device needs no tensor (nor a GPU) to be named: the choice is checked on CUDA too."""
    import fastrnn.torch.ops as ops
    if expected.startswith("backend"):
        with pytest.raises(ValueError) as raised:
            ops._backend_name(name, torch.device(device))
        assert str(raised.value) == expected
    else:
        assert ops._backend_name(name, torch.device(device)) == expected


# ---------------------------------------------------------------- tensors that must be seen
class Recorded(torch.Tensor):
    """A wrapper tensor subclass (as DTensor or a quantized wrapper are) that records every
    operator dispatched on it and runs it on the plain tensor inside."""
    seen = []

    @staticmethod
    def __new__(cls, inner):
        return torch.Tensor._make_wrapper_subclass(cls, inner.shape, dtype=inner.dtype,
                                                   device=inner.device, strides=inner.stride())

    def __init__(self, inner):
        self.inner = inner

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(func.name())
        unwrap = lambda t: t.inner if isinstance(t, Recorded) else t
        return func(*torch.utils._pytree.tree_map(unwrap, args),
                    **torch.utils._pytree.tree_map(unwrap, kwargs or {}))


def operator_calls(wrapped_position):
    """rnn_forward and rnn_backward through the autograd Functions (two bidirectional LSTM
    layers with dropout masks), the argument at ``wrapped_position`` of each a Recorded: their
    results, and the operators Recorded saw."""
    from fastrnn.torch.autograd import _Backward, _Forward
    x, sizes, hx, cx, weights, _, *config, _ = operator_arguments("LSTM")
    generator = torch.Generator().manual_seed(6)
    hx, cx = (torch.randn(4, 2, 4, generator=generator, dtype=F64) for _ in range(2))
    weights = torch.randn(2 * (4 * 4 * (3 + 4) + 8 * 4) + 2 * (4 * 4 * (8 + 4) + 8 * 4),
                          generator=generator, dtype=F64)
    masks = torch.rand(1, 3, 2, 8, generator=generator, dtype=F64)
    config = ("LSTM", 2, True, True, "cpu")
    forward_args = [x, sizes, hx, cx, weights, masks]
    Recorded.seen = []
    wrapped_position = -1 if wrapped_position is None else wrapped_position
    if 0 <= wrapped_position < len(forward_args):
        forward_args[wrapped_position] = Recorded(forward_args[wrapped_position])
    output, h_n, c_n, layer_outputs, gates = _Forward.apply(*forward_args, *config, True)
    backward_args = [*forward_args, output, layer_outputs, gates, output.cos(), h_n.sin(),
                     c_n.cos()]
    if wrapped_position >= len(forward_args):
        backward_args[wrapped_position] = Recorded(backward_args[wrapped_position])
    grads = _Backward.apply(*backward_args, *config, True)
    return [output, h_n, c_n, *grads], Recorded.seen


@pytest.mark.parametrize("position", [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
                         ids=["input", "hx", "cx", "weights", "masks", "output",
                              "layer_outputs", "gates", "grad_output", "grad_h_n", "grad_c_n"])
def test_a_wrapper_subclass_in_any_argument_sees_the_operator(position):
    """No shortcut past the dispatcher for such a tensor, in any argument: it sees the
    operator (and hands it plain tensors), and the results are those of plain tensors."""
    expected, _ = operator_calls(wrapped_position=None)
    got, seen = operator_calls(position)
    assert "fastrnn::rnn_backward" in seen                   # every argument reaches it
    assert ("fastrnn::rnn_forward" in seen) == (position < 6)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class RecordingMode(torch.utils._python_dispatch.TorchDispatchMode):
    """A dispatch mode (as FlopCounterMode or a profiler's) that records the operators run."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("wrapped", ["input", "h0", "mode"])
@pytest.mark.parametrize("grad", [False, True])
def test_modules_show_their_operator_to_wrapper_subclasses_and_dispatch_modes(wrapped, grad):
    """With or without a gradient (the eager fast path), a wrapper subclass as the input or
    the initial state, or a dispatch mode, sees fastrnn::rnn_forward; the values are those of
    plain tensors."""
    import contextlib
    ours, _ = module_pair(cell="GRU", dtype=F64, num_layers=2)
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(4, 2, 3, generator=generator, dtype=F64)
    h0 = torch.randn(2, 2, 4, generator=generator, dtype=F64)
    with torch.no_grad():
        expected = ours(x, h0)
    Recorded.seen = []
    mode = RecordingMode()
    given = {"input": (Recorded(x), h0), "h0": (x, Recorded(h0)), "mode": (x, h0)}[wrapped]
    with torch.set_grad_enabled(grad), (mode if wrapped == "mode" else contextlib.nullcontext()):
        output, h_n = ours(*given)
    assert "fastrnn::rnn_forward" in (mode.seen if wrapped == "mode" else Recorded.seen)
    torch.testing.assert_close(output, expected[0], rtol=0, atol=0)
    torch.testing.assert_close(h_n, expected[1], rtol=0, atol=0)


def test_dropout_of_one_drops_every_output_between_layers_as_torch():
    ours, theirs = module_pair(cell="LSTM", dtype=F64, num_layers=2, dropout=1.0)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(10), dtype=F64)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            (output, (h_n, c_n)), (expected, (h_e, c_e)) = ours(x), theirs(x)
        for a, b in ((output, expected), (h_n, h_e), (c_n, c_e)):
            torch.testing.assert_close(a, b, **TIGHT)
