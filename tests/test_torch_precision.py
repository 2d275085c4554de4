"""Low precision: float16/bfloat16 modules and torch.autocast give what torch.nn.RNN gives
(output dtypes, gradients in the parameters' dtype) and values within the low dtype's
tolerance of torch.nn.RNN in float32. fastrnn computes them in float32 inside."""
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from torch_helpers import module_pair  # noqa: E402

# a few roundings of the low dtype at unit scale (outputs are tanh values in [-1, 1]): inputs
# and weights rounded to the low dtype move the outputs by that much
LOW_TOLERANCE = {torch.float16: dict(rtol=0, atol=4e-3), torch.bfloat16: dict(rtol=0, atol=3e-2)}
# under autocast fastrnn computes from the float32 inputs and weights: only the final rounding
# of the outputs (half a unit in the last place at 1, plus float32 noise) separates them
ROUNDING_ONLY = {torch.float16: dict(rtol=0, atol=5e-4), torch.bfloat16: dict(rtol=0, atol=4e-3)}


def float32_pair(**kwargs):
    return module_pair(3, 8, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_module_matches_nn_rnn(dtype):
    ours, reference = float32_pair(num_layers=2, bidirectional=True)
    theirs = nn.RNN(3, 8, num_layers=2, bidirectional=True).to(dtype)
    theirs.load_state_dict(reference.state_dict())
    ours.to(dtype)
    x = torch.randn(6, 2, 3)
    results = {}
    for name, module in (("ours", ours), ("theirs", theirs)):
        x_low = x.to(dtype).requires_grad_(True)
        output, h_n = module(x_low)
        (output.float().pow(2).sum() + h_n.float().sum()).backward()
        results[name] = (output, h_n, x_low.grad, module.weight_ih_l0.grad)
    for ours_value, theirs_value in zip(results["ours"], results["theirs"]):
        assert ours_value.dtype == theirs_value.dtype == dtype
    expected_output, expected_h_n = reference(x)
    torch.testing.assert_close(results["ours"][0].float(), expected_output.detach(),
                               **LOW_TOLERANCE[dtype])
    torch.testing.assert_close(results["ours"][1].float(), expected_h_n.detach(),
                               **LOW_TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_autocast_matches_nn_rnn(dtype):
    ours, theirs = float32_pair(num_layers=2)
    x, hx = torch.randn(6, 2, 3), torch.randn(2, 2, 8)
    with torch.autocast("cpu", dtype):
        ours_output, ours_h_n = ours(x, hx)
        theirs_output, theirs_h_n = theirs(x, hx)
    assert (ours_output.dtype, ours_h_n.dtype) == (theirs_output.dtype, theirs_h_n.dtype) == (dtype, dtype)
    expected_output, expected_h_n = nn.RNN.forward(theirs, x, hx)       # float32, no autocast
    torch.testing.assert_close(ours_output.float(), expected_output.detach(), **ROUNDING_ONLY[dtype])
    torch.testing.assert_close(ours_h_n.float(), expected_h_n.detach(), **ROUNDING_ONLY[dtype])
    ours_output.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in ours.parameters())


def test_float64_module_is_left_alone_by_autocast():
    """autocast lowers float32 computations only; nn.RNN in float64 stays float64 too."""
    ours, _ = float32_pair()
    ours.double()
    with torch.autocast("cpu", torch.bfloat16):
        output, h_n = ours(torch.randn(4, 2, 3, dtype=torch.float64))
    assert output.dtype == h_n.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_cuda_autocast_matches_nn_rnn():
    ours, theirs = float32_pair(num_layers=2)
    ours.cuda(), theirs.cuda()
    x = torch.randn(6, 2, 3, device="cuda")
    with torch.autocast("cuda", torch.float16):
        ours_output, _ = ours(x)
        theirs_output, _ = theirs(x)
    assert ours_output.dtype == theirs_output.dtype == torch.float16
    torch.testing.assert_close(ours_output.float(), theirs_output.float(),
                               **LOW_TOLERANCE[torch.float16])
