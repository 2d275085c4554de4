"""fastrnn.torch.RNN under torch's derivative machinery: gradcheck and gradgradcheck (batched
checks included), forward-mode AD, torch.func (vmap, grad, jvp, jacrev, jacfwd, hessian,
functional_call), against finite differences and against torch.nn.RNN itself."""
import pytest

torch = pytest.importorskip("torch")

from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

from fastrnn.torch import RNN  # noqa: E402
from torch_helpers import assert_per_sample_grads_match, module_pair  # noqa: E402

F64 = torch.float64
TIGHT = dict(rtol=1e-9, atol=1e-11)


def make_pair(seed, **kwargs):
    """(fastrnn, torch) float64 modules with equal parameters; torch's generator seeded."""
    return module_pair(dtype=F64, seed=seed, **kwargs)


def as_function(module):
    """f(x, hx, *weights) -> (output, h_n) running ``module`` with the given weights."""
    names = [name for name, _ in module.named_parameters()]

    def run(x, hx, *weights):
        return torch.func.functional_call(module, dict(zip(names, weights)), (x, hx))
    return run


def leaves(module, x_shape, hx_shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    leaf = lambda shape: torch.randn(shape, generator=generator, dtype=F64, requires_grad=True)
    return (leaf(x_shape), leaf(hx_shape), *[leaf(p.shape) for p in module.parameters()])


GRID = {   # name: (constructor kwargs, input shape); sizes 2: gradgradcheck's cost grows fast
    "1 layer tanh": (dict(), (3, 2, 2)),
    "2 layers bidirectional relu batch_first": (
        dict(num_layers=2, bidirectional=True, nonlinearity="relu", batch_first=True), (2, 2, 2)),
    "2 layers no bias": (dict(num_layers=2, bias=False), (2, 2, 2)),
}


@pytest.mark.parametrize("case", sorted(GRID))
def test_gradcheck_and_gradgradcheck_with_batched_grads(case):
    kwargs, x_shape = GRID[case]
    module = RNN(2, 2, dtype=F64, **kwargs)
    batch = x_shape[0] if kwargs.get("batch_first") else x_shape[1]
    states = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    inputs = leaves(module, x_shape, (states, batch, 2))
    function = as_function(module)
    assert torch.autograd.gradcheck(function, inputs, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(function, inputs, check_batched_grad=True)


def test_forward_mode_gradcheck_with_batched_tangents():
    module = RNN(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    inputs = leaves(module, (3, 2, 3), (4, 2, 4), seed=1)
    assert torch.autograd.gradcheck(as_function(module), inputs, check_forward_ad=True,
                                    check_backward_ad=False, check_undefined_grad=False,
                                    check_batched_forward_grad=True)


def test_gradcheck_through_packed_input_and_dropout():
    torch.manual_seed(0)
    module = RNN(2, 2, num_layers=2, bidirectional=True, dropout=0.5, dtype=F64)
    names = [name for name, _ in module.named_parameters()]
    lengths = torch.tensor([1, 3])

    def run(x, hx, *weights):
        torch.manual_seed(3)                       # the same dropout masks on every call
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        output, h_n = torch.func.functional_call(module, dict(zip(names, weights)), (packed, hx))
        return output.data, h_n
    inputs = leaves(module, (3, 2, 2), (4, 2, 2), seed=2)
    assert torch.autograd.gradcheck(run, inputs, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(run, inputs)


def test_double_backward_gradient_penalty_matches_nn_rnn():
    """create_graph=True: the second-order term must be there (it was silently dropped)."""
    results = []
    for module in make_pair(1, num_layers=2, bidirectional=True):
        x = torch.randn(4, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(5),
                        requires_grad=True)
        output, h_n = module(x)
        (grad_x,) = torch.autograd.grad(output.pow(2).sum() + h_n.sum(), x, create_graph=True)
        penalty = grad_x.pow(2).sum()
        penalty.backward()
        results.append([penalty.detach()] + [p.grad for p in module.parameters()])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, **TIGHT)


# ----------------------------------------------------------------------------- torch.func
def test_vmap_matches_a_loop_over_the_mapped_dimension():
    ours, _ = make_pair(2, num_layers=2, bidirectional=True)
    xs = torch.randn(5, 4, 2, 3, dtype=F64)
    hxs = torch.randn(4, 5, 2, 4, dtype=F64)                   # mapped along dimension 1
    mapped = torch.func.vmap(lambda x, hx: ours(x, hx), in_dims=(0, 1))(xs, hxs)
    looped = [ours(x, hxs[:, i]) for i, x in enumerate(xs)]
    torch.testing.assert_close(mapped[0], torch.stack([o for o, _ in looped]), **TIGHT)
    torch.testing.assert_close(mapped[1], torch.stack([h for _, h in looped]), **TIGHT)


def test_vmap_over_an_ensemble_of_weights():
    torch.manual_seed(3)
    models = [RNN(3, 4, dtype=F64) for _ in range(3)]
    params, buffers = torch.func.stack_module_state(models)
    x = torch.randn(4, 2, 3, dtype=F64)

    def run(params, buffers):
        return torch.func.functional_call(models[0], (params, buffers), (x,))[0]
    mapped = torch.func.vmap(run)(params, buffers)
    torch.testing.assert_close(mapped, torch.stack([m(x)[0] for m in models]), **TIGHT)


def test_grad_and_per_sample_grads_match_nn_rnn():
    ours, theirs = make_pair(4, bidirectional=True, batch_first=True)
    xs = torch.randn(3, 1, 4, 3, dtype=F64)                    # 3 samples of batch 1
    assert_per_sample_grads_match(ours, theirs, xs, TIGHT)


def test_jacobians_jvp_and_hessian_match_nn_rnn():
    ours, theirs = make_pair(5, num_layers=2)
    x = torch.randn(3, 2, 3, dtype=F64)
    tangent = torch.randn_like(x)
    jacobian = torch.autograd.functional.jacobian(lambda x: theirs(x)[1], x)
    torch.testing.assert_close(torch.func.jacrev(lambda x: ours(x)[1])(x), jacobian, **TIGHT)
    torch.testing.assert_close(torch.func.jacfwd(lambda x: ours(x)[1])(x), jacobian, **TIGHT)
    _, jvp = torch.func.jvp(lambda x: ours(x)[1], (x,), (tangent,))
    torch.testing.assert_close(jvp, torch.einsum("abcijk,ijk->abc", jacobian, tangent), **TIGHT)
    small = x[:2, :1]
    hessian = torch.func.hessian(lambda x: ours(x)[0].pow(2).sum())(small)
    expected = torch.autograd.functional.hessian(lambda x: theirs(x)[0].pow(2).sum(), small)
    torch.testing.assert_close(hessian, expected, **TIGHT)


def test_grad_of_grad_matches_nn_rnn():
    ours, theirs = make_pair(6, bidirectional=True)
    x = torch.randn(3, 2, 3, dtype=F64)

    def second_order(module):
        inner = torch.func.grad(lambda x: module(x)[0].pow(3).sum())
        return torch.func.grad(lambda x: inner(x).pow(2).sum())(x)
    torch.testing.assert_close(second_order(ours), second_order(theirs), **TIGHT)


def test_forward_ad_with_dual_tensors_matches_the_jacobian():
    """torch.autograd.forward_ad with a frozen module: the input's tangent alone must flow
    (dual tensors do not require grad, so this also checks the eager fast path steps aside)."""
    ours, theirs = make_pair(7)
    ours.requires_grad_(False)
    x, tangent = torch.randn(3, 2, 3, dtype=F64), torch.randn(3, 2, 3, dtype=F64)
    with torch.autograd.forward_ad.dual_level():
        output = ours(torch.autograd.forward_ad.make_dual(x, tangent))[0]
        output_tangent = torch.autograd.forward_ad.unpack_dual(output).tangent
    jacobian = torch.autograd.functional.jacobian(lambda x: theirs(x)[0], x)
    torch.testing.assert_close(output_tangent, torch.einsum("abcijk,ijk->abc", jacobian, tangent),
                               **TIGHT)
