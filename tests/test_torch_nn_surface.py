"""fastrnn.torch.RNN IS a torch.nn.RNN: its attributes, parameter bookkeeping, parametrizations,
device and dtype moves, copies and constructor errors behave as torch.nn.RNN's own; the
parametrizations, copies and weight replacements also for fastrnn.torch.LSTM and GRU."""
import copy
import io
import pickle

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils import parametrizations, parametrize  # noqa: E402

from fastrnn.torch import RNN  # noqa: E402
from helpers import raised_by  # noqa: E402
from torch_helpers import module_pair, state_members  # noqa: E402

KWARGS = dict(num_layers=2, bidirectional=True, nonlinearity="relu")
CELL_KWARGS = {"RNN": KWARGS, "LSTM": dict(num_layers=2, bidirectional=True, proj_size=2),
               "GRU": dict(num_layers=2, bidirectional=True)}
CELLS = sorted(CELL_KWARGS)


def test_is_an_nn_rnn_with_its_attributes():
    ours, theirs = module_pair(**KWARGS)
    assert isinstance(ours, nn.RNN) and isinstance(ours, nn.RNNBase)
    for name in ("mode", "proj_size", "input_size", "hidden_size", "num_layers", "bias",
                 "batch_first", "dropout", "bidirectional", "nonlinearity", "_flat_weights_names",
                 "_all_weights"):
        assert getattr(ours, name) == getattr(theirs, name), name
    parameters = dict(ours.named_parameters())
    assert [w is parameters[n] for w, n in zip(ours._flat_weights, ours._flat_weights_names)] \
        == [True] * len(parameters)
    assert [[w is parameters[n] for w, n in zip(ws, ns)] for ws, ns in
            zip(ours.all_weights, ours._all_weights)] == [[True] * 4] * 4


def test_flatten_parameters_leaves_results_unchanged():
    ours, theirs = module_pair(**KWARGS)
    x = torch.randn(5, 2, 3)
    before = ours(x)[0].detach()
    ours.flatten_parameters()
    torch.testing.assert_close(ours(x)[0], before, rtol=0, atol=0)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])


@pytest.mark.parametrize("kwargs", [dict(proj_size=2), dict(dropout=-1), dict(hidden_size=0),
                                    dict(bias="yes"), dict(nonlinearity="gelu"),
                                    dict(num_layers=0)])
def test_constructor_errors_are_nn_rnns(kwargs):
    arguments = {"input_size": 3, "hidden_size": 4, **kwargs}
    assert raised_by(lambda: RNN(**arguments)) == raised_by(lambda: nn.RNN(**arguments))


def test_repr_names_a_backend_chosen_by_name():
    assert repr(RNN(3, 4, num_layers=2)) == repr(nn.RNN(3, 4, num_layers=2))
    assert repr(RNN(3, 4, backend="numpy")) == "RNN(3, 4, backend='numpy')"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("parametrization", ["weight_norm", "spectral_norm"])
def test_parametrizations_match_torch(parametrization, cell):
    ours, theirs = module_pair(num_layers=2, cell=cell)
    for module in (ours, theirs):
        torch.manual_seed(1)                       # spectral_norm draws its start vectors
        getattr(parametrizations, parametrization)(module, "weight_hh_l0")
        getattr(parametrizations, parametrization)(module, "weight_ih_l1")
    x = torch.randn(5, 2, 3)
    for _ in range(2):                             # spectral_norm iterates once per call
        results = []
        for module in (ours, theirs):
            module.zero_grad()
            output, final = module(x)
            (output.pow(2).sum() + sum(s.sum() for s in state_members(final))).backward()
            results.append([output.detach()] + [p.grad for p in module.parameters()])
        for a, b in zip(*results):
            torch.testing.assert_close(a, b)
    for module in (ours, theirs):
        parametrize.remove_parametrizations(module, "weight_hh_l0")
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])


def test_dtype_and_device_moves_follow_the_parameters():
    ours, theirs = module_pair(**KWARGS)
    ours.double(), theirs.double()
    assert all(w.dtype == torch.float64 for w in ours._flat_weights)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-9, atol=1e-11)
    ours.float()
    assert ours(x.float())[0].dtype == torch.float32
    ours.to("meta")
    assert all(w.device.type == "meta" for w in ours._flat_weights)
    assert ours(torch.empty(5, 2, 3, device="meta"))[0].shape == (5, 2, 8)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
def test_copies_after_a_forward_with_a_graph_give_the_same_results(how, cell):
    ours, _ = module_pair(cell=cell, **CELL_KWARGS[cell])
    x = torch.randn(5, 2, 3)
    output, _ = ours(x)                            # a graph holding the weights exists
    if how == "deepcopy":
        twin = copy.deepcopy(ours)
    elif how == "pickle":
        twin = pickle.loads(pickle.dumps(ours))
    else:
        buffer = io.BytesIO()
        torch.save(ours, buffer)
        buffer.seek(0)
        twin = torch.load(buffer, weights_only=False)
    assert type(twin) is type(ours) and twin.backend == ours.backend
    torch.testing.assert_close(twin(x)[0], output.detach(), rtol=0, atol=0)
    with torch.no_grad():
        twin.weight_ih_l0.add_(1.0)                # the copy's weights are its own
    torch.testing.assert_close(ours(x)[0], output, rtol=0, atol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_weights_replaced_between_calls_are_used(cell):
    """The eager fast path keeps views of the weights: a replaced tensor (.data = ...) or an
    in-place update must show in the next call."""
    ours, theirs = module_pair(cell=cell)
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        ours(x)
        for module in (ours, theirs):
            module.weight_hh_l0.mul_(0.5)
        torch.testing.assert_close(ours(x)[0], theirs(x)[0])
        new = torch.randn(ours.weight_hh_l0.shape)
        ours.weight_hh_l0.data = new.clone()
        theirs.weight_hh_l0.data = new.clone()
        torch.testing.assert_close(ours(x)[0], theirs(x)[0])
