"""PackedSequence through fastrnn.torch.RNN exactly as through torch.nn.RNN: packed output,
h_n in the caller's order, and the gradients of the input, hx and every parameter, over a grid
of configurations, sorted (enforce_sorted=True) and unsorted batches."""
import itertools

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

from fastrnn.torch import RNN  # noqa: E402

TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}
SORTED_LENGTHS, UNSORTED_LENGTHS = [5, 3, 3, 1], [3, 5, 1, 3]
BACKENDS = ["numpy", "cpu"]

GRID = list(itertools.product([1, 2], [False, True], [False, True], ["tanh", "relu"],
                              [True, False], [torch.float32, torch.float64], [True, False]))


def packed_run(module, x, hx, lengths, batch_first, enforce_sorted):
    """Packed output, h_n and every gradient of one forward + backward."""
    x = x.detach().clone().requires_grad_(True)
    hx = hx.detach().clone().requires_grad_(True)
    module.zero_grad()
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                  enforce_sorted=enforce_sorted)
    output, h_n = module(packed, hx)
    assert isinstance(output, PackedSequence)
    generator = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in (output.data, h_n)]
    ((output.data * weights[0]).sum() + (h_n * weights[1]).sum()).backward()
    results = {"output": output.data.detach(), "batch_sizes": output.batch_sizes,
               "h_n": h_n.detach(), "grad input": x.grad, "grad hx": hx.grad}
    for name in ("sorted_indices", "unsorted_indices"):
        results[name] = getattr(output, name)
    results.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    return results


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layers,bidirectional,batch_first,nonlinearity,bias,dtype,sort", GRID)
def test_packed_sequence_matches_nn_rnn(layers, bidirectional, batch_first, nonlinearity, bias,
                                        dtype, sort, backend):
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                  nonlinearity=nonlinearity, bias=bias, dtype=dtype)
    torch.manual_seed(layers + 2 * bidirectional + 4 * batch_first)
    ours = RNN(3, 4, backend=backend, **kwargs)
    theirs = nn.RNN(3, 4, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    lengths = SORTED_LENGTHS if sort else UNSORTED_LENGTHS
    x = torch.randn((4, 5, 3) if batch_first else (5, 4, 3), dtype=dtype)
    hx = torch.randn(layers * (2 if bidirectional else 1), 4, 4, dtype=dtype)
    ours_results = packed_run(ours, x, hx, lengths, batch_first, sort)
    theirs_results = packed_run(theirs, x, hx, lengths, batch_first, sort)
    assert list(ours_results) == list(theirs_results)
    for key, expected in theirs_results.items():
        if expected is None:
            assert ours_results[key] is None, key
        else:
            torch.testing.assert_close(ours_results[key], expected, **TOLERANCE[dtype], msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_without_hx_and_in_eval_under_no_grad_match_nn_rnn(backend):
    torch.manual_seed(9)
    ours = RNN(3, 4, num_layers=2, bidirectional=True, dropout=0.3, backend=backend)
    theirs = nn.RNN(3, 4, num_layers=2, bidirectional=True, dropout=0.3)
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()
    packed = pack_padded_sequence(torch.randn(5, 4, 3), torch.tensor(UNSORTED_LENGTHS),
                                  enforce_sorted=False)
    with torch.no_grad():
        (ours_output, ours_h_n), (theirs_output, theirs_h_n) = ours(packed), theirs(packed)
    torch.testing.assert_close(ours_output.data, theirs_output.data, **TOLERANCE[torch.float32])
    torch.testing.assert_close(ours_h_n, theirs_h_n, **TOLERANCE[torch.float32])


def test_packed_dropout_masks_follow_torch_manual_seed():
    module = RNN(3, 4, num_layers=3, dropout=0.5)
    packed = pack_padded_sequence(torch.randn(5, 4, 3), torch.tensor(SORTED_LENGTHS))
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        runs.append(module(packed)[0].data.detach())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
