"""fastrnn.torch.LSTM and GRU under torch's derivative machinery and tracers: gradcheck and
gradgradcheck (float64; gradcheck with batched grads on torch's own samples is in
test_torch_moduleinfo.py), double backward against torch, torch.func (vmap,
grad, jvp, jacfwd), forward-mode AD, torch.compile (fullgraph, forward and backward),
torch.export (saved and loaded), meta and FakeTensor shapes. Results must equal eager ones
or torch's own modules'."""
import io

import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from torch_helpers import (assert_per_sample_grads_match, module_pair,  # noqa: E402
                           state_members)

F64 = torch.float64
TIGHT = dict(rtol=1e-9, atol=1e-11)
EXACT = dict(rtol=0, atol=0)
CELLS = {   # name: (cell, constructor kwargs): the LSTM with a projection, a bidirectional GRU
    "LSTM": ("LSTM", dict(num_layers=2, proj_size=2)),
    "GRU": ("GRU", dict(num_layers=2, bidirectional=True)),
}
# gradgradcheck's cost grows with the square of the parameter count: smaller stacks for it
SMALL_CELLS = {"LSTM": ("LSTM", dict(num_layers=2, proj_size=1)),
               "GRU": ("GRU", dict(bidirectional=True))}


def make_pair(case, seed=0, dtype=F64, cells=CELLS, hidden_size=3, **kwargs):
    cell, cell_kwargs = cells[case]
    return module_pair(2, hidden_size, seed=seed, cell=cell, dtype=dtype,
                       **{**cell_kwargs, **kwargs})


def make_small(case, **kwargs):
    return make_pair(case, cells=SMALL_CELLS, hidden_size=2, **kwargs)[0]


def as_function(module, packed_lengths=None, dropout_seed=None):
    """f(x, *states, *weights) -> (output, *final states) running ``module`` with the given
    tensors; x packed with ``packed_lengths`` when given (output: the packed data)."""
    names = [name for name, _ in module.named_parameters()]
    count = 2 if module.mode == "LSTM" else 1

    def run(x, *tensors):
        states, weights = tensors[:count], tensors[count:]
        if dropout_seed is not None:
            torch.manual_seed(dropout_seed)        # the same masks on every call
        if packed_lengths is not None:
            x = pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
        hx = tuple(states) if count == 2 else states[0]
        output, final = torch.func.functional_call(module, dict(zip(names, weights)), (x, hx))
        output = output.data if packed_lengths is not None else output
        return (output, *state_members(final))
    return run


def leaves(module, x_shape, batch, seed=0):
    """Random float64 leaves: the input, the initial states and every parameter."""
    generator = torch.Generator().manual_seed(seed)
    leaf = lambda shape: torch.randn(shape, generator=generator, dtype=F64, requires_grad=True)
    lead = (module.num_layers * (2 if module.bidirectional else 1), batch)
    widths = [module.proj_size or module.hidden_size, module.hidden_size] \
        if module.mode == "LSTM" else [module.hidden_size]
    return (leaf(x_shape), *[leaf((*lead, width)) for width in widths],
            *[leaf(p.shape) for p in module.parameters()])


@pytest.mark.parametrize("case", sorted(CELLS))
def test_gradcheck_through_packed_input_and_dropout(case):
    ours, _ = make_pair(case, dropout=0.5, hidden_size=2, proj_size=1) if case == "LSTM" \
        else make_pair(case, dropout=0.5, hidden_size=2)
    function = as_function(ours, packed_lengths=torch.tensor([1, 3]), dropout_seed=3)
    assert torch.autograd.gradcheck(function, leaves(ours, (3, 2, 2), 2, seed=1),
                                    check_batched_grad=True)


@pytest.mark.parametrize("case", sorted(SMALL_CELLS))
@pytest.mark.parametrize("lengths", [None, [1, 2]])
def test_gradgradcheck_padded_and_packed(case, lengths):
    ours = make_small(case)
    function = as_function(ours, None if lengths is None else torch.tensor(lengths))
    assert torch.autograd.gradgradcheck(function, leaves(ours, (2, 2, 2), 2, seed=4))


@pytest.mark.parametrize("case", sorted(SMALL_CELLS))
def test_forward_mode_gradcheck(case):
    ours = make_small(case)
    assert torch.autograd.gradcheck(as_function(ours), leaves(ours, (3, 2, 2), 2, seed=2),
                                    check_forward_ad=True, check_backward_ad=False,
                                    check_undefined_grad=False, check_batched_forward_grad=True)


@pytest.mark.parametrize("case", sorted(CELLS))
def test_double_backward_gradient_penalty_matches_torch(case):
    results = []
    for module in make_pair(case, seed=1):
        x = torch.randn(4, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(5),
                        requires_grad=True)
        output, final = module(x)
        loss = output.pow(2).sum() + sum(s.sum() for s in state_members(final))
        (grad_x,) = torch.autograd.grad(loss, x, create_graph=True)
        penalty = grad_x.pow(2).sum()
        penalty.backward()
        results.append([penalty.detach()] + [p.grad for p in module.parameters()])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **TIGHT)


# ----------------------------------------------------------------------------- torch.func
@pytest.mark.parametrize("case", sorted(CELLS))
def test_vmap_matches_a_loop_over_the_mapped_dimension(case):
    ours, _ = make_pair(case, seed=2)
    generator = torch.Generator().manual_seed(6)
    xs = torch.randn(4, 3, 2, 2, dtype=F64, generator=generator)
    states = [torch.randn(4, *s.shape, generator=generator, dtype=F64)
              for s in leaves(ours, (1, 2, 2), 2)[1:1 + (2 if ours.mode == "LSTM" else 1)]]

    def run(x, *states):
        output, final = ours(x, tuple(states) if len(states) == 2 else states[0])
        return (output, *state_members(final))
    mapped = torch.func.vmap(run)(xs, *states)
    looped = [run(x, *[s[i] for s in states]) for i, x in enumerate(xs)]
    for index, value in enumerate(mapped):
        torch.testing.assert_close(value, torch.stack([r[index] for r in looped]), **TIGHT)


@pytest.mark.parametrize("case", sorted(CELLS))
def test_per_sample_grads_match_torch(case):
    ours, theirs = make_pair(case, seed=4, batch_first=True)
    xs = torch.randn(3, 1, 4, 2, dtype=F64)                    # 3 samples of batch 1
    assert_per_sample_grads_match(ours, theirs, xs, TIGHT)


@pytest.mark.parametrize("case", sorted(CELLS))
def test_jacobians_and_jvp_match_torch(case):
    ours, theirs = make_pair(case, seed=5)
    x = torch.randn(3, 2, 2, dtype=F64)
    tangent = torch.randn_like(x)
    last_state = lambda module: (lambda x: state_members(module(x)[1])[-1])
    jacobian = torch.autograd.functional.jacobian(last_state(theirs), x)
    torch.testing.assert_close(torch.func.jacrev(last_state(ours))(x), jacobian, **TIGHT)
    torch.testing.assert_close(torch.func.jacfwd(last_state(ours))(x), jacobian, **TIGHT)
    _, jvp = torch.func.jvp(last_state(ours), (x,), (tangent,))
    torch.testing.assert_close(jvp, torch.einsum("abcijk,ijk->abc", jacobian, tangent), **TIGHT)


@pytest.mark.parametrize("case", sorted(CELLS))
def test_grad_of_grad_matches_torch(case):
    ours, theirs = make_pair(case, seed=6)
    x = torch.randn(3, 2, 2, dtype=F64)

    def second_order(module):
        inner = torch.func.grad(lambda x: module(x)[0].pow(3).sum())
        return torch.func.grad(lambda x: inner(x).pow(2).sum())(x)
    torch.testing.assert_close(second_order(ours), second_order(theirs), **TIGHT)


# ----------------------------------------------------------------------------- tracers
def training_step(module, x, states):
    """(output, final states, parameter grads) of one forward + backward."""
    module.zero_grad()
    output, final = module(x, states)
    finals = state_members(final)
    (output.pow(2).sum() + sum(s.sum() for s in finals)).backward()
    return [output.detach(), *[s.detach() for s in finals]] + \
        [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("case,backend", [("LSTM", "inductor"), ("GRU", "aot_eager")])
def test_compile_fullgraph_forward_and_backward_equal_eager(case, backend):
    """fullgraph=True with dynamo's allow_rnn set (it refuses every torch.nn.RNNBase instance
    otherwise); inductor (the default) for one cell, AOT autograd without codegen (what the
    operator meets in every backend, at a tenth of the time) for the other."""
    ours, _ = make_pair(case, seed=7, dtype=torch.float32, batch_first=True)
    x = torch.randn(2, 5, 2)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(ours, fullgraph=True, backend=backend)
        got = training_step(compiled, x, None)
        with torch.no_grad():
            got_inference = compiled(x)[0]
    expected = training_step(ours, x, None)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **EXACT)
    torch.testing.assert_close(got_inference, expected[0], **EXACT)


def test_compile_of_a_packed_lstm_call():
    """Packed input compiles when the PackedSequence is made outside the compiled function."""
    ours, _ = make_pair("LSTM", seed=8, dtype=torch.float32, bidirectional=True)
    packed = pack_padded_sequence(torch.randn(4, 3, 2), torch.tensor([2, 4, 1]),
                                  enforce_sorted=False)

    def run(packed):
        output, (h_n, c_n) = ours(packed)
        return output.data, h_n, c_n
    with torch._dynamo.config.patch(allow_rnn=True):
        got = torch.compile(run, backend="aot_eager", fullgraph=True)(packed)
    for a, b in zip(got, run(packed)):
        torch.testing.assert_close(a, b, **EXACT)


@pytest.mark.parametrize("case", sorted(CELLS))
def test_export_save_load_round_trip_equals_eager(case):
    ours, _ = make_pair(case, seed=9, dtype=torch.float32)
    generator = torch.Generator().manual_seed(9)
    example = leaves(ours, (5, 2, 2), 2)
    count = 2 if ours.mode == "LSTM" else 1
    x, states = example[0].detach().float(), [s.detach().float() for s in example[1:1 + count]]
    hx = tuple(states) if count == 2 else states[0]
    program = torch.export.export(ours, (x, hx))
    assert "torch.ops.fastrnn.rnn_forward" in program.graph_module.code
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    x2 = torch.randn(x.shape, generator=generator)
    hx2 = tuple(torch.randn(s.shape, generator=generator) for s in states)
    hx2 = hx2 if count == 2 else hx2[0]
    got, expected = loaded(x2, hx2), ours(x2, hx2)
    for a, b in zip([got[0], *state_members(got[1])], [expected[0], *state_members(expected[1])]):
        torch.testing.assert_close(a, b, **EXACT)


def test_export_with_a_dynamic_batch():
    ours, _ = make_pair("LSTM", seed=10, dtype=torch.float32)
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(ours, (torch.randn(5, 2, 2),), dynamic_shapes=({1: batch},))
    x = torch.randn(5, 7, 2)
    got, (expected, (h_n, c_n)) = program.module()(x), ours(x)
    for a, b in zip([got[0], *got[1]], [expected, h_n, c_n]):
        torch.testing.assert_close(a, b, **EXACT)


@pytest.mark.parametrize("case", sorted(CELLS))
def test_meta_and_fake_tensors_give_shapes(case):
    from torch._subclasses.fake_tensor import FakeTensorMode
    cell, kwargs = CELLS[case]
    meta, _ = module_pair(2, 3, cell=cell, device="meta", **kwargs)
    expected, expected_final = make_pair(case, dtype=torch.float32)[1](torch.zeros(5, 4, 2))
    output, final = meta(torch.empty(5, 4, 2, device="meta"))
    assert output.device.type == "meta" and output.shape == expected.shape
    assert [s.shape for s in state_members(final)] == \
        [s.shape for s in state_members(expected_final)]
    with FakeTensorMode():
        fake, _ = module_pair(2, 3, cell=cell, **kwargs)
        x = torch.empty(5, 4, 2, requires_grad=True)
        output, final = fake(x)
        output.sum().backward()
        assert output.shape == expected.shape and x.grad.shape == x.shape
        assert fake.weight_hh_l1.grad.shape == fake.weight_hh_l1.shape
