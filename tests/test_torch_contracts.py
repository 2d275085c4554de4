"""fastrnn.torch promises that mutation testing found unasserted (issue 16).

Per-sample gradients through torch's ExpandedWeights (call_for_per_sample_grads) run torch's
own decomposition: each cell's configuration (nonlinearity, projection, no bias, two layers,
both directions, batch_first) must give torch's grad_sample. A dtype or device move drops the
prepared eager path (freeing the old weights), and the next call runs on the moved ones; a pickled module carries no
view of this process's memory.
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
