"""fastrnn.torch.LSTM and fastrnn.torch.GRU as drop-in torch.nn.LSTM / torch.nn.GRU: outputs,
final states and the gradients of the input, the initial states and every parameter over a
grid (layers, directions, batch_first, bias, proj_size, dtypes, padded and PackedSequence
sorted and unsorted, with and without initial states; see ``grid``); strict state_dicts both
ways, torch's initialisation, attributes, constructor and forward errors, low precision and
dropout."""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import fastrnn.torch  # noqa: E402
from fastrnn.torch import GRU, LSTM  # noqa: E402
from helpers import raised_by  # noqa: E402
from torch_helpers import module_pair, state_members  # noqa: E402

# torch computes with its own BLAS and libm: float32 agrees to a few ulps per step
TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}
T, B, I, H, P = 5, 4, 3, 4, 2
LENGTHS = {"padded": None, "sorted": [5, 3, 3, 1], "unsorted": [3, 5, 1, 3]}


def states_for(module, batch, dtype, generator):
    """Random initial states of ``module``'s shapes: [h] or the LSTM's [h, c]."""
    directions = 2 if module.bidirectional else 1
    lead = (module.num_layers * directions, batch)
    widths = [module.proj_size or module.hidden_size, module.hidden_size] \
        if isinstance(module, nn.LSTM) else [module.hidden_size]
    return [torch.randn(*lead, width, generator=generator, dtype=dtype) for width in widths]


def as_hx(module, states):
    """A list of state tensors as the module takes them (the LSTM: a pair)."""
    if states is None:
        return None
    return tuple(states) if isinstance(module, nn.LSTM) else states[0]


def forward_backward(module, x, states, lengths, batch_first, enforce_sorted=False):
    """Outputs and every gradient (input, initial states, each parameter) of one forward and
    a backward of a random weighting of output and final states."""
    x = x.detach().clone().requires_grad_(True)
    states = None if states is None else [s.detach().clone().requires_grad_(True) for s in states]
    module.zero_grad()
    given = x if lengths is None else pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=batch_first, enforce_sorted=enforce_sorted)
    output, final = module(given, as_hx(module, states))
    results = {}
    if lengths is not None:
        assert isinstance(output, PackedSequence)
        for name in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            results[name] = getattr(output, name)
        output = output.data
    finals = state_members(final)
    assert isinstance(final, tuple) == isinstance(module, nn.LSTM)
    generator = torch.Generator().manual_seed(1)
    loss = 0
    for name, value in zip(("output", "h_n", "c_n"), [output] + finals):
        results[name] = value.detach()
        loss = loss + (value * torch.randn(value.shape, generator=generator,
                                           dtype=value.dtype)).sum()
    loss.backward()
    results["grad input"] = x.grad
    for name, state in zip(("grad h_0", "grad c_0"), states or ()):
        results[name] = state.grad
    results.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    return results


def assert_results_match(ours, theirs, dtype):
    assert list(ours) == list(theirs)
    for key, expected in theirs.items():
        if expected is None:
            assert ours[key] is None, key
            continue
        assert ours[key] is not None, f"{key}: no gradient"
        assert ours[key].dtype == expected.dtype, key
        torch.testing.assert_close(ours[key], expected, **TOLERANCE[dtype], msg=key)


def grid(cell):
    """(layers, bidirectional, batch_first, bias, proj_size, dtype, layout, with hx): every
    combination of layers, directions, proj_size, dtype, layout and hx; batch_first and bias
    take their four combinations in turn (the sum of the other choices picks one), so that
    each meets every layout, dtype and hx (the whole product would take four times as long)."""
    projections = [0, P] if cell == "LSTM" else [0]
    flags = list(itertools.product([False, True], [True, False]))
    cases = []
    for choice in itertools.product(range(2), range(2), range(len(projections)), range(2),
                                    range(len(LENGTHS)), range(2)):
        layers, bidirectional, proj, dtype, layout, with_hx = choice
        batch_first, bias = flags[sum(choice) % len(flags)]
        cases.append((layers + 1, bool(bidirectional), batch_first, bias, projections[proj],
                      [torch.float32, torch.float64][dtype], sorted(LENGTHS)[layout],
                      bool(with_hx)))
    return cases


CASES = [pytest.param(cell, *case, id=f"{cell}-" + "-".join(map(str, case)))
         for cell in ("LSTM", "GRU") for case in grid(cell)]


@pytest.mark.parametrize("cell,layers,bidirectional,batch_first,bias,proj_size,dtype,layout,"
                         "with_hx", CASES)
def test_outputs_states_and_gradients_match_torch(cell, layers, bidirectional, batch_first, bias,
                                                  proj_size, dtype, layout, with_hx):
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first,
                  bias=bias, dtype=dtype)
    if proj_size:
        kwargs["proj_size"] = proj_size
    ours, theirs = module_pair(I, H, seed=layers + 2 * bidirectional, cell=cell, **kwargs)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=generator, dtype=dtype)
    states = states_for(ours, B, dtype, generator) if with_hx else None
    lengths, enforce_sorted = LENGTHS[layout], layout == "sorted"
    assert_results_match(forward_backward(ours, x, states, lengths, batch_first, enforce_sorted),
                         forward_backward(theirs, x, states, lengths, batch_first, enforce_sorted),
                         dtype)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("layout", ["padded", "unsorted"])
def test_numpy_backend_matches_torch(cell, layout):
    kwargs = dict(num_layers=2, bidirectional=True, dtype=torch.float64)
    if cell == "LSTM":
        kwargs["proj_size"] = P
    ours, theirs = module_pair(I, H, seed=3, cell=cell, backend="numpy", **kwargs)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(T, B, I, generator=generator, dtype=torch.float64)
    states = states_for(ours, B, torch.float64, generator)
    assert_results_match(forward_backward(ours, x, states, LENGTHS[layout], False),
                         forward_backward(theirs, x, states, LENGTHS[layout], False),
                         torch.float64)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input_matches_torch(cell, batch_first):
    ours, theirs = module_pair(I, H, seed=4, cell=cell, num_layers=2, bidirectional=True,
                               batch_first=batch_first, dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(T, I, generator=generator, dtype=torch.float64)
    states = [s[:, 0] for s in states_for(ours, 1, torch.float64, generator)]
    for hx in (None, states):
        assert_results_match(forward_backward(ours, x, hx, None, batch_first),
                             forward_backward(theirs, x, hx, None, batch_first), torch.float64)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_no_grad_and_eval_match_torch(cell):
    """The eager fast path (no gradient wanted), padded and packed, with dropout off in eval."""
    extra = dict(proj_size=P) if cell == "LSTM" else {}
    ours, theirs = module_pair(I, H, seed=5, cell=cell, num_layers=2, bidirectional=True,
                               dropout=0.3, **extra)
    ours.eval(), theirs.eval()
    x = torch.randn(T, B, I)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS["unsorted"]), enforce_sorted=False)
    with torch.no_grad():
        for given in (x, packed):
            (output, final), (expected, expected_final) = ours(given), theirs(given)
            if isinstance(given, PackedSequence):
                output, expected = output.data, expected.data
            torch.testing.assert_close(output, expected, **TOLERANCE[torch.float32])
            for a, b in zip(state_members(final), state_members(expected_final)):
                torch.testing.assert_close(a, b, **TOLERANCE[torch.float32])


# ----------------------------------------------------------------------------- parameters
CONFIGURATIONS = [("LSTM", dict()), ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2)),
                  ("LSTM", dict(bias=False, proj_size=3)), ("GRU", dict()),
                  ("GRU", dict(num_layers=2, bidirectional=True, bias=False))]


@pytest.mark.parametrize("cell,kwargs", CONFIGURATIONS)
def test_same_seed_gives_torchs_parameters_attributes_and_repr(cell, kwargs):
    torch.manual_seed(7)
    ours = getattr(fastrnn.torch, cell)(4, 6, **kwargs)
    torch.manual_seed(7)
    theirs = getattr(nn, cell)(4, 6, **kwargs)
    assert isinstance(ours, getattr(nn, cell)) and isinstance(ours, nn.RNNBase)
    ours_named, theirs_named = list(ours.named_parameters()), list(theirs.named_parameters())
    assert [n for n, _ in ours_named] == [n for n, _ in theirs_named]
    for (name, a), (_, b) in zip(ours_named, theirs_named):
        assert torch.equal(a, b), name
    for name in ("mode", "proj_size", "input_size", "hidden_size", "num_layers", "bias",
                 "batch_first", "dropout", "bidirectional", "_flat_weights_names", "_all_weights"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("cell,kwargs", CONFIGURATIONS)
@pytest.mark.parametrize("direction", ["fastrnn_to_torch", "torch_to_fastrnn"])
def test_state_dicts_load_strictly_both_ways(cell, kwargs, direction):
    torch.manual_seed(8)
    ours = getattr(fastrnn.torch, cell)(4, 6, **kwargs)
    theirs = getattr(nn, cell)(4, 6, **kwargs)          # different parameters until loaded
    source, target = (ours, theirs) if direction == "fastrnn_to_torch" else (theirs, ours)
    target.load_state_dict(source.state_dict(), strict=True)
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        (output, final), (expected, expected_final) = ours(x), theirs(x)
    torch.testing.assert_close(output, expected, **TOLERANCE[torch.float32])
    for a, b in zip(state_members(final), state_members(expected_final)):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float32])


def test_a_state_dict_of_another_shape_is_refused_as_by_torch():
    source = nn.LSTM(4, 6, proj_size=2).state_dict()
    assert raised_by(lambda: LSTM(4, 6).load_state_dict(source, strict=True)) == \
        raised_by(lambda: nn.LSTM(4, 6).load_state_dict(source, strict=True))


def test_repr_names_a_backend_chosen_by_name():
    assert repr(GRU(3, 4, backend="numpy")) == "GRU(3, 4, backend='numpy')"
    assert repr(LSTM(3, 4, proj_size=2, backend="cpu")) == "LSTM(3, 4, proj_size=2, backend='cpu')"


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("cell,kwargs", [
    ("GRU", dict(proj_size=2)), ("LSTM", dict(proj_size=4)), ("LSTM", dict(proj_size=-1)),
    ("LSTM", dict(hidden_size=0)), ("GRU", dict(num_layers=0)), ("LSTM", dict(dropout=1.5)),
    ("GRU", dict(bias="yes")), ("LSTM", dict(batch_first=1)), ("GRU", dict(input_size=2.0))])
def test_constructor_errors_are_torchs(cell, kwargs):
    arguments = {"input_size": 3, "hidden_size": 4, **kwargs}
    assert raised_by(lambda: getattr(fastrnn.torch, cell)(**arguments)) == \
        raised_by(lambda: getattr(nn, cell)(**arguments))


z = torch.zeros
BAD_FORWARDS = {   # name: (cell, constructor kwargs, input, hx)
    "LSTM 4-D input": ("LSTM", dict(), z(2, 2, 1, 3), None),
    "GRU 1-D input": ("GRU", dict(), z(3), None),
    "LSTM wrong input_size": ("LSTM", dict(), z(2, 2, 7), None),
    "GRU wrong input_size, batch_first": ("GRU", dict(batch_first=True), z(2, 2, 7), None),
    "LSTM wrong h size": ("LSTM", dict(), z(2, 3, 3), (z(2, 4, 5), z(2, 3, 5))),
    "LSTM wrong c size": ("LSTM", dict(), z(2, 3, 3), (z(2, 3, 5), z(2, 3, 4))),
    "LSTM proj, h as wide as c": ("LSTM", dict(proj_size=2), z(2, 3, 3), (z(2, 3, 5), z(2, 3, 5))),
    "LSTM proj, c as narrow as h": ("LSTM", dict(proj_size=2), z(2, 3, 3),
                                    (z(2, 3, 2), z(2, 3, 2))),
    "GRU wrong hx size": ("GRU", dict(), z(2, 3, 3), z(2, 4, 5)),
    "GRU wrong number of states": ("GRU", dict(bidirectional=True), z(2, 3, 3), z(2, 3, 5)),
    "LSTM batched input, 2-D c": ("LSTM", dict(), z(2, 1, 3), (z(2, 1, 5), z(2, 5))),
    "LSTM unbatched input, 3-D h": ("LSTM", dict(), z(2, 3), (z(2, 1, 5), z(2, 5))),
    "LSTM a tensor for the pair": ("LSTM", dict(), z(2, 1, 3), z(2, 1, 5)),
    "LSTM a pair of one": ("LSTM", dict(), z(2, 1, 3), (z(2, 1, 5),)),
    "GRU batched input, 2-D hx": ("GRU", dict(), z(2, 1, 3), z(2, 5)),
    "GRU unbatched input, 3-D hx": ("GRU", dict(), z(2, 3), z(2, 1, 5)),
    "LSTM sequence length 0": ("LSTM", dict(), z(0, 2, 3), None),
    "GRU sequence length 0, batch_first": ("GRU", dict(batch_first=True), z(2, 0, 3), None),
    "LSTM input dtype": ("LSTM", dict(), z(2, 2, 3, dtype=torch.float64), None),
    "GRU input on another device": ("GRU", dict(), z(2, 1, 3, device="meta"), z(2, 1, 5)),
    "LSTM c on another device": ("LSTM", dict(), z(2, 1, 3),
                                 (z(2, 1, 5), z(2, 1, 5, device="meta"))),
}


@pytest.mark.parametrize("case", sorted(BAD_FORWARDS))
def test_forward_errors_are_torchs(case):
    cell, kwargs, x, hx = BAD_FORWARDS[case]
    ours = getattr(fastrnn.torch, cell)(3, 5, num_layers=2, **kwargs)
    theirs = getattr(nn, cell)(3, 5, num_layers=2, **kwargs)
    ours_type, ours_message = raised_by(lambda: ours(x, hx))
    theirs_type, theirs_message = raised_by(lambda: theirs(x, hx))
    assert ours_message == theirs_message
    assert issubclass(ours_type, theirs_type)       # `except` clauses written for torch work


@pytest.mark.parametrize("cell,hx", [("GRU", z(2, 1, 5, dtype=torch.float64)),
                                     ("LSTM", (z(2, 1, 5), z(2, 1, 5, dtype=torch.float64)))])
def test_state_dtype_mismatch_is_a_clear_error(cell, hx):
    """torch raises an unhelpful RuntimeError from its kernels here."""
    with pytest.raises(ValueError, match=r"[hc]x dtype \(torch.float64\) does not match weight "
                                         r"dtype \(torch.float32\)"):
        getattr(fastrnn.torch, cell)(3, 5, num_layers=2)(z(2, 1, 3), hx)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_numpy_input_is_refused_with_how_to_convert(cell):
    with pytest.raises(TypeError, match=rf"fastrnn.torch.{cell} expects a torch.Tensor "
                                        rf".*torch.from_numpy\(x\).*fastrnn.{cell}"):
        getattr(fastrnn.torch, cell)(3, 4)(np.zeros((2, 1, 3), np.float32))


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_and_autocast_return_the_low_dtype_of_float32_values(cell, dtype):
    """float32 inside, the low dtype out (output and every final state), as torch's modules
    do under CUDA autocast. (On the CPU torch's own are not consistent: GRU ignores autocast,
    LSTM fails in oneDNN or, with proj_size, keeps c in float32.) Under autocast only the
    outputs are rounded; a low-precision module is within rounding of the float32 module on
    its rounded weights and inputs."""
    kwargs = dict(num_layers=2, proj_size=2) if cell == "LSTM" else dict(num_layers=2)
    ours, reference = module_pair(3, 8, seed=9, cell=cell, **kwargs)
    x = torch.randn(6, 2, 3)
    with torch.autocast("cpu", dtype):
        output, final = ours(x)
    assert output.dtype == dtype and all(s.dtype == dtype for s in state_members(final))
    expected, expected_final = reference(x)
    rounding = dict(rtol=0, atol=4e-3 if dtype == torch.bfloat16 else 5e-4)
    for a, b in zip([output, *state_members(final)], [expected, *state_members(expected_final)]):
        torch.testing.assert_close(a.float(), b.detach(), **rounding)
    output.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())
    low = getattr(fastrnn.torch, cell)(3, 8, **kwargs).to(dtype)
    low.load_state_dict(ours.state_dict())
    x_low = x.to(dtype).requires_grad_(True)
    output, final = low(x_low)
    assert output.dtype == dtype and all(s.dtype == dtype for s in state_members(final))
    output.float().sum().backward()
    assert x_low.grad.dtype == dtype and low.weight_ih_l0.grad.dtype == dtype
    reference.load_state_dict(low.state_dict())            # the rounded weights, in float32
    torch.testing.assert_close(output.float(), reference(x_low.detach().float())[0].detach(),
                               **rounding)


# ----------------------------------------------------------------------------- dropout
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_dropout_masks_follow_torch_manual_seed(cell):
    kwargs = dict(proj_size=2) if cell == "LSTM" else {}
    module = getattr(fastrnn.torch, cell)(3, 6, num_layers=3, dropout=0.5, **kwargs)
    packed = pack_padded_sequence(torch.randn(5, 4, 3), torch.tensor(LENGTHS["sorted"]))
    runs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        runs.append(module(packed)[0].data.detach())
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_dropout_one_feeds_zeros_to_the_upper_layer(cell):
    """With p=1 every mask is zero: layer 1 sees zeros, i.e. torch's module on zero input."""
    kwargs = dict(proj_size=2) if cell == "LSTM" else {}
    torch.manual_seed(5)
    ours = getattr(fastrnn.torch, cell)(3, 4, num_layers=2, dropout=1.0, **kwargs)
    width = kwargs.get("proj_size", 4)
    upper = getattr(nn, cell)(width, 4, **kwargs)
    upper.load_state_dict({name.replace("l1", "l0"): p for name, p in ours.state_dict().items()
                           if name.endswith("l1")})
    x = torch.randn(5, 2, 3)
    output, _ = ours(x)
    expected, _ = upper(torch.zeros(5, 2, width))
    torch.testing.assert_close(output, expected)


# ----------------------------------------------------------------------------- autograd
def test_no_grad_gives_the_training_output_without_a_graph():
    ours, _ = module_pair(I, H, seed=10, cell="LSTM", num_layers=2, proj_size=P)
    x = torch.randn(T, B, I)
    output_train, _ = ours(x)
    with torch.no_grad():
        output, (h_n, c_n) = ours(x)
    assert output_train.grad_fn is not None
    assert output.grad_fn is None and h_n.grad_fn is None and c_n.grad_fn is None
    torch.testing.assert_close(output, output_train.detach(), rtol=0, atol=0)


def test_gradients_go_only_where_asked():
    module = LSTM(I, H)
    module.weight_ih_l0.requires_grad_(False)
    h0 = torch.randn(1, 2, H)
    c0 = torch.randn(1, 2, H, requires_grad=True)
    x = torch.randn(T, 2, I)                       # no grad wanted for the input
    output, (h_n, c_n) = module(x, (h0, c0))
    (output.sum() + c_n.sum()).backward()
    assert x.grad is None and h0.grad is None and module.weight_ih_l0.grad is None
    assert c0.grad is not None and c0.grad.abs().sum() > 0
    assert module.weight_hh_l0.grad is not None and module.bias_hh_l0.grad is not None


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_training_loop_matches_torch(cell):
    """A few Adam steps of Embedding -> cell -> Linear: the same losses as torch's module."""
    generator = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, 12, (10, 4), generator=generator)
    targets = torch.roll(tokens, -1, dims=0)
    losses = []
    for module_class in (getattr(nn, cell), getattr(fastrnn.torch, cell)):
        torch.manual_seed(6)
        model = nn.ModuleDict({"embedding": nn.Embedding(12, 8, dtype=torch.float64),
                               "rnn": module_class(8, 16, num_layers=2, dtype=torch.float64),
                               "head": nn.Linear(16, 12, dtype=torch.float64)})
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        run = []
        for _ in range(6):
            optimizer.zero_grad()
            output, _ = model["rnn"](model["embedding"](tokens))
            logits = model["head"](output)
            loss = nn.functional.cross_entropy(logits.reshape(-1, 12), targets.reshape(-1))
            loss.backward()
            optimizer.step()
            run.append(loss.item())
        losses.append(torch.tensor(run, dtype=torch.float64))
    assert losses[1][-1] < losses[1][0] - 0.1             # it learns
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-10, atol=0)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_jit_trace_follows_its_input(cell):
    ours, _ = module_pair(I, H, seed=11, cell=cell, num_layers=2)
    traced = torch.jit.trace(ours, (torch.randn(T, 2, I),))
    x = torch.randn(T, 2, I)
    got, expected = traced(x), ours(x)
    for a, b in zip([got[0], *state_members(got[1])], [expected[0], *state_members(expected[1])]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "fastrnn" in str(traced.graph)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_cuda_tensors_match_torch_on_cuda(cell):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    kwargs = dict(num_layers=2, bidirectional=True)
    if cell == "LSTM":
        kwargs["proj_size"] = P
    ours, theirs = module_pair(I, H, seed=12, cell=cell, **kwargs)
    ours.cuda(), theirs.cuda()
    generator = torch.Generator().manual_seed(12)
    x = torch.randn(T, B, I, generator=generator).cuda()
    states = [s.cuda() for s in states_for(ours, B, torch.float32, generator)]
    for layout in ("padded", "unsorted"):
        ours_results = forward_backward(ours, x, states, LENGTHS[layout], False)
        theirs_results = forward_backward(theirs, x, states, LENGTHS[layout], False)
        assert all(value.device.type == "cuda" for key, value in ours_results.items()
                   if key not in ("batch_sizes", "sorted_indices", "unsorted_indices"))
        assert_results_match(ours_results, theirs_results, torch.float32)
