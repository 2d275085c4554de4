"""The eager fast path of fastrnn.torch's modules (ops.EagerForward), found unasserted by
mutation testing (issue 16).

A forward that needs no gradient (plain CPU tensors, no_grad or frozen weights) skips the
dispatcher and autograd. Its promises: torch.nn's values for every cell with given initial
states, padded, batch_first and packed; in training with dropout, the masks a call with a graph
draws for the same seed; one preparation serves every call while the weights stay the same
tensors (in-place updates are seen through it), and a replaced parameter gets a new one.
"""
import copy
import pickle

import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fastrnn.torch.ops as ops  # noqa: E402
from torch_helpers import module_pair, state_members  # noqa: E402

F64 = torch.float64
TIGHT = dict(rtol=1e-10, atol=1e-12)
CELLS = [("RNN", dict(nonlinearity="relu")), ("RNN", dict()), ("LSTM", dict(proj_size=2)),
         ("LSTM", dict()), ("GRU", dict())]
LAYOUTS = ["padded", "batch_first", "packed"]
LENGTHS = [2, 5, 3]                     # unsorted: the packed call permutes the states


def make_pair(cell, kwargs, seed=0, **more):
    """Two-layer bidirectional float64 modules, fastrnn's and torch's, with equal parameters."""
    return module_pair(3, 4, seed=seed, cell=cell, dtype=F64, num_layers=2, bidirectional=True,
                       **{**kwargs, **more})


def initial_states(module, generator):
    """Random (h0,) or the LSTM's (h0, c0): all different, so a swapped or dropped one shows."""
    lead = (4, len(LENGTHS))
    widths = [module.proj_size or module.hidden_size, module.hidden_size] \
        if module.mode == "LSTM" else [module.hidden_size]
    states = [torch.randn(*lead, w, generator=generator, dtype=F64) for w in widths]
    return tuple(states) if module.mode == "LSTM" else states[0]


def call(module, layout, x, hx):
    """(output as a tensor, final states as a list) of one call in ``layout``."""
    if layout == "batch_first":
        x = x.transpose(0, 1)
    if layout == "packed":
        x = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    output, final = module(x, hx)
    return (output.data if layout == "packed" else output), state_members(final)


def assert_same(got, expected, tolerance=TIGHT):
    torch.testing.assert_close(got[0], expected[0], **tolerance)
    assert len(got[1]) == len(expected[1])
    for a, b in zip(got[1], expected[1]):
        torch.testing.assert_close(a, b, **tolerance)


def fresh_inputs(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(5, len(LENGTHS), 3, generator=generator, dtype=F64), generator


def prepared_case(cell, kwargs, seed):
    """(ours, theirs, x, hx, generator): a module pair and an input with initial states."""
    ours, theirs = make_pair(cell, kwargs)
    x, generator = fresh_inputs(seed)
    return ours, theirs, x, initial_states(ours, generator), generator


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell, kwargs", CELLS)
def test_no_grad_with_initial_states_matches_torch(cell, kwargs, layout):
    ours, theirs = make_pair(cell, kwargs, batch_first=layout == "batch_first")
    x, generator = fresh_inputs()
    hx = initial_states(ours, generator)
    with torch.no_grad():
        got = call(ours, layout, x, hx)
        expected = call(theirs, layout, x, hx)
    assert ours.__dict__.get("_eager") is not None          # the fast path ran
    assert_same(got, expected)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cell, kwargs", CELLS[1:])
def test_no_grad_dropout_in_training_draws_the_masks_of_a_call_with_a_graph(cell, kwargs,
                                                                              layout):
    """The same seed gives the same masks, so the same values, with or without a graph; and
    they are applied (eval mode gives other values)."""
    ours, _ = make_pair(cell, kwargs, dropout=0.5, batch_first=layout == "batch_first")
    x, generator = fresh_inputs(2)
    hx = initial_states(ours, generator)
    torch.manual_seed(11)
    with torch.no_grad():
        got = call(ours, layout, x, hx)
    assert ours.__dict__.get("_eager") is not None
    torch.manual_seed(11)
    with_graph = call(ours, layout, x, hx)
    assert with_graph[0].requires_grad
    assert_same(got, [with_graph[0].detach(), [s.detach() for s in with_graph[1]]])
    ours.eval()
    with torch.no_grad():
        undropped = call(ours, layout, x, hx)
    assert not torch.allclose(got[0], undropped[0])


class CountingEagerForward(ops.EagerForward):
    """ops.EagerForward that counts the preparations made."""
    made = 0

    def __init__(self, *args, **kwargs):
        type(self).made += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def counting(monkeypatch):
    CountingEagerForward.made = 0
    monkeypatch.setattr(ops, "EagerForward", CountingEagerForward)
    return CountingEagerForward


@pytest.mark.parametrize("cell, kwargs", CELLS[1:])
def test_one_preparation_serves_calls_and_sees_in_place_updates(counting, cell, kwargs):
    ours, theirs, x, hx, generator = prepared_case(cell, kwargs, 3)
    with torch.no_grad():
        for _ in range(3):
            assert_same(call(ours, "padded", x, hx), call(theirs, "padded", x, hx))
        assert counting.made == 1
        for module in (ours, theirs):
            module.weight_hh_l1_reverse.mul_(-0.5)
        assert_same(call(ours, "packed", x, hx), call(theirs, "packed", x, hx))
    assert counting.made == 1


@pytest.mark.parametrize("cell, kwargs", CELLS[1:])
def test_a_replaced_parameter_gets_a_new_preparation(counting, cell, kwargs):
    ours, theirs, x, hx, generator = prepared_case(cell, kwargs, 4)
    with torch.no_grad():
        call(ours, "padded", x, hx)
        replacement = torch.randn_like(ours.weight_ih_l0, generator=generator)
        ours.weight_ih_l0 = torch.nn.Parameter(replacement.clone())
        theirs.weight_ih_l0 = torch.nn.Parameter(replacement.clone())
        assert_same(call(ours, "padded", x, hx), call(theirs, "padded", x, hx))
    assert counting.made == 2


@pytest.mark.parametrize("cell, kwargs", CELLS[1:])
def test_plain_tensor_weights_take_the_fast_path(counting, cell, kwargs):
    """torch.func.functional_call swaps the parameters for plain tensors: still usable in place."""
    ours, theirs, x, hx, generator = prepared_case(cell, kwargs, 5)
    weights = {name: torch.randn_like(p, generator=generator) for name, p in
               ours.named_parameters()}
    with torch.no_grad():
        output, final = torch.func.functional_call(ours, weights, (x, hx))
        theirs.load_state_dict(weights)
        assert_same((output, state_members(final)), call(theirs, "padded", x, hx))
    assert counting.made == 1


@pytest.mark.parametrize("copier", [pickle.dumps, copy.deepcopy])
@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
def test_a_module_never_run_can_be_pickled_and_copied(cell, copier):
    ours, theirs = make_pair(cell, {})
    copied = copier(ours)
    copied = pickle.loads(copied) if isinstance(copied, bytes) else copied
    x, generator = fresh_inputs(6)
    hx = initial_states(ours, generator)
    with torch.no_grad():
        assert_same(call(copied, "padded", x, hx), call(theirs, "padded", x, hx))
