"""fastrnn.torch.RNN as a drop-in torch.nn.RNN: numbers, gradients, errors, training."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import fastrnn.functional  # noqa: E402
from fastrnn.torch import RNN  # noqa: E402
from helpers import raised_by  # noqa: E402

# torch computes with its own BLAS and libm tanh: float32 agrees to a few ulps per step
TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}


def make_pair(direction, input_size=3, hidden_size=5, dtype=torch.float32, backend="auto",
              **kwargs):
    """(ours, theirs) with equal parameters, copied strictly in ``direction``."""
    ours = RNN(input_size, hidden_size, dtype=dtype, backend=backend, **kwargs)
    theirs = nn.RNN(input_size, hidden_size, dtype=dtype, **kwargs)
    if direction == "torch_to_fastrnn":
        ours.load_state_dict(theirs.state_dict(), strict=True)
    else:
        theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def forward_backward(module, x, hx, grad_out_seed=0):
    """Outputs and every gradient (input, hx, each parameter) of one forward + backward."""
    x = x.detach().clone().requires_grad_(True)
    hx = None if hx is None else hx.detach().clone().requires_grad_(True)
    module.zero_grad()
    out, h_n = module(x, hx)
    generator = torch.Generator().manual_seed(grad_out_seed)
    weight_out = torch.randn(out.shape, generator=generator, dtype=out.dtype)
    weight_hn = torch.randn(h_n.shape, generator=generator, dtype=h_n.dtype)
    ((out * weight_out).sum() + (h_n * weight_hn).sum()).backward()
    results = {"output": out.detach(), "h_n": h_n.detach(), "grad input": x.grad}
    if hx is not None:
        results["grad hx"] = hx.grad
    results.update({f"grad {name}": p.grad for name, p in module.named_parameters()})
    return results


def assert_results_match(ours, theirs, dtype):
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key] is not None, f"{key}: no gradient"
        assert ours[key].dtype == theirs[key].dtype, key
        torch.testing.assert_close(ours[key], theirs[key], **TOLERANCE[dtype], msg=key)


# ----------------------------------------------------------------------------- packaging
def test_import_fastrnn_does_not_import_torch():
    code = "import fastrnn, sys; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bidirectional=True),
                                    dict(num_layers=3, bias=False, nonlinearity="relu")])
def test_same_seed_gives_nn_rnn_parameters(kwargs):
    torch.manual_seed(7)
    ours = RNN(4, 6, **kwargs)
    torch.manual_seed(7)
    theirs = nn.RNN(4, 6, **kwargs)
    ours_named, theirs_named = list(ours.named_parameters()), list(theirs.named_parameters())
    assert [n for n, _ in ours_named] == [n for n, _ in theirs_named]
    for (name, a), (_, b) in zip(ours_named, theirs_named):
        assert isinstance(a, nn.Parameter) and a.shape == b.shape, name
        assert torch.equal(a, b), name
    assert [[w.shape for w in ws] for ws in ours.all_weights] == \
           [[w.shape for w in ws] for ws in theirs.all_weights]


def test_device_and_dtype_arguments():
    ours = RNN(3, 4, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in ours.parameters())


def test_dtype_the_kernels_cannot_compute_in_is_a_clear_error():
    module = RNN(3, 4, dtype=torch.complex64)
    with pytest.raises(TypeError, match="computes in float32 or float64 .*got torch.complex64"):
        module(torch.zeros(2, 1, 3, dtype=torch.complex64))


@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bias=False, batch_first=True),
                                    dict(dropout=0.25, num_layers=2, bidirectional=True),
                                    dict(nonlinearity="relu")])
def test_repr_matches_nn_rnn(kwargs):
    assert repr(RNN(3, 4, **kwargs)) == repr(nn.RNN(3, 4, **kwargs))


def test_unknown_backend_is_refused_at_construction():
    with pytest.raises(ValueError, match="Unknown backend 'gpu'"):
        RNN(3, 4, backend="gpu")


# ----------------------------------------------------------------------------- gradients
def gradcheck_inputs(module, x_shape, hx_shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    leaf = lambda shape: torch.randn(shape, generator=generator, dtype=torch.float64,
                                     requires_grad=True)
    weights = [leaf(p.shape) for p in module.parameters()]
    return (leaf(x_shape), leaf(hx_shape), *weights)


def with_weights(module, dropout_seed=None):
    """f(x, hx, *weights) running ``module`` with the given weights (torch.func.functional_call)."""
    names = [name for name, _ in module.named_parameters()]

    def run(x, hx, *weights):
        if dropout_seed is not None:
            torch.manual_seed(dropout_seed)        # the same masks on every call
        return torch.func.functional_call(module, dict(zip(names, weights)), (x, hx))
    return run


@pytest.mark.parametrize("num_layers,bidirectional,nonlinearity,batch_first", [
    (1, False, "tanh", False), (1, True, "relu", True), (2, False, "relu", False),
    (2, True, "tanh", True)])
def test_gradcheck_float64(num_layers, bidirectional, nonlinearity, batch_first):
    module = RNN(3, 4, num_layers=num_layers, bidirectional=bidirectional,
                 nonlinearity=nonlinearity, batch_first=batch_first, dtype=torch.float64)
    x_shape = (2, 4, 3) if batch_first else (4, 2, 3)
    inputs = gradcheck_inputs(module, x_shape, (num_layers * (1 + bidirectional), 2, 4))
    assert torch.autograd.gradcheck(with_weights(module), inputs)


def test_gradcheck_with_dropout_and_unbatched_input():
    module = RNN(3, 4, num_layers=2, dropout=0.5, bidirectional=True, dtype=torch.float64)
    inputs = gradcheck_inputs(module, (4, 3), (4, 4), seed=1)
    assert torch.autograd.gradcheck(with_weights(module, dropout_seed=3), inputs)


# ----------------------------------------------------------------------------- parity
PARITY_CASES = {
    "time-major, hx": (dict(), (5, 3, 3), (1, 3, 5)),
    "batch_first, hx": (dict(batch_first=True), (3, 5, 3), (1, 3, 5)),
    "unbatched, hx": (dict(num_layers=2), (5, 3), (2, 5)),
    "no bias, no hx": (dict(bias=False), (5, 3, 3), None),
    "2 layers bidirectional relu": (dict(num_layers=2, bidirectional=True, nonlinearity="relu"),
                                    (5, 3, 3), (4, 3, 5)),
    "bidirectional, batch_first, unbatched": (dict(bidirectional=True, batch_first=True),
                                              (5, 3), (2, 5)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("direction", ["torch_to_fastrnn", "fastrnn_to_torch"])
@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_outputs_and_gradients_match_nn_rnn(case, direction, dtype):
    kwargs, x_shape, hx_shape = PARITY_CASES[case]
    torch.manual_seed(0)
    ours, theirs = make_pair(direction, dtype=dtype, **kwargs)
    x = torch.randn(x_shape, dtype=dtype)
    hx = None if hx_shape is None else torch.randn(hx_shape, dtype=dtype)
    assert_results_match(forward_backward(ours, x, hx), forward_backward(theirs, x, hx), dtype)


def spy_on_functional(monkeypatch):
    """The calls fastrnn.functional's forward entry points receive from now on, as a list of
    (entry, backend name, whether it keeps what backward needs)."""
    calls = []
    real_packed, real_prepared = fastrnn.functional.forward_packed, fastrnn.functional.forward_prepared

    def packed(backend, *args, need_saved=True, **kwargs):
        calls.append(("forward_packed", backend.__name__.rsplit(".", 1)[-1], need_saved))
        return real_packed(backend, *args, need_saved=need_saved, **kwargs)

    def prepared(weights, *args, need_backward=True, **kwargs):
        calls.append(("forward_prepared", weights.backend_name, need_backward))
        return real_prepared(weights, *args, need_backward=need_backward, **kwargs)
    monkeypatch.setattr(fastrnn.functional, "forward_packed", packed)
    monkeypatch.setattr(fastrnn.functional, "forward_prepared", prepared)
    return calls


def test_numpy_backend_matches_nn_rnn(monkeypatch):
    calls = spy_on_functional(monkeypatch)
    torch.manual_seed(1)
    ours, theirs = make_pair("torch_to_fastrnn", dtype=torch.float64, backend="numpy",
                             num_layers=2, bidirectional=True)
    x, hx = torch.randn(4, 2, 3, dtype=torch.float64), torch.randn(4, 2, 5, dtype=torch.float64)
    assert_results_match(forward_backward(ours, x, hx), forward_backward(theirs, x, hx),
                         torch.float64)
    assert [backend for _, backend, _ in calls] == ["reference"]    # the 'numpy' backend


def test_double_after_construction_and_empty_batch_match_nn_rnn():
    torch.manual_seed(2)
    ours, theirs = make_pair("torch_to_fastrnn", num_layers=2)
    ours.double(), theirs.double()
    for x in (torch.randn(4, 2, 3, dtype=torch.float64), torch.zeros(4, 0, 3, dtype=torch.float64)):
        assert_results_match(forward_backward(ours, x, None), forward_backward(theirs, x, None),
                             torch.float64)


def test_eval_mode_ignores_dropout_like_nn_rnn():
    torch.manual_seed(3)
    ours, theirs = make_pair("torch_to_fastrnn", num_layers=3, dropout=0.5)
    ours.eval(), theirs.eval()
    x = torch.randn(6, 2, 3)
    assert_results_match(forward_backward(ours, x, None), forward_backward(theirs, x, None),
                         torch.float32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.cuda
def test_cuda_tensors_match_nn_rnn_on_cuda():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(4)
    ours, theirs = make_pair("torch_to_fastrnn", num_layers=2, bidirectional=True)
    ours.cuda(), theirs.cuda()
    x, hx = torch.randn(7, 3, 3, device="cuda"), torch.randn(4, 3, 5, device="cuda")
    ours_results = forward_backward(ours, x, hx)
    theirs_results = forward_backward(theirs, x, hx)
    assert all(value.device.type == "cuda" for value in ours_results.values())
    assert_results_match(ours_results, theirs_results, torch.float32)


# ----------------------------------------------------------------------------- autograd
def test_no_grad_keeps_nothing_for_backward(monkeypatch):
    calls = spy_on_functional(monkeypatch)
    module, x = RNN(3, 4, num_layers=2), torch.randn(5, 2, 3)
    out_train, _ = module(x)
    with torch.no_grad():
        out, h_n = module(x)
    module.requires_grad_(False)
    out_frozen, _ = module(x)
    assert [keeps for _, _, keeps in calls] == [True, False, False]
    assert out_train.grad_fn is not None
    assert out.grad_fn is None and h_n.grad_fn is None and out_frozen.grad_fn is None
    torch.testing.assert_close(out, out_train.detach(), rtol=0, atol=0)


def test_gradients_go_only_where_asked():
    module = RNN(3, 4)
    module.weight_ih_l0.requires_grad_(False)
    x = torch.randn(5, 2, 3)                       # no grad wanted for the input
    hx = torch.randn(1, 2, 4, requires_grad=True)
    out, _ = module(x, hx)
    out.sum().backward()
    assert x.grad is None and module.weight_ih_l0.grad is None
    assert hx.grad is not None and hx.grad.abs().sum() > 0
    assert module.weight_hh_l0.grad is not None and module.bias_ih_l0.grad is not None


def test_in_place_change_of_the_input_between_forward_and_backward_is_caught():
    module, x = RNN(3, 4), torch.randn(5, 2, 3, requires_grad=True)
    out, _ = module(x)
    with torch.no_grad():
        x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_weights_changed_after_forward_give_the_gradient_of_the_forward_that_ran():
    """The operator takes the weights as one flat copy (ops.flatten_weights): an in-place
    update between forward and backward (optimizer.step() too early) cannot change what
    backward differentiates, so the gradient stays that of the computed forward."""
    torch.manual_seed(8)
    module, x = RNN(3, 4), torch.randn(5, 2, 3)
    reference = nn.RNN(3, 4)
    reference.load_state_dict(module.state_dict())
    out, _ = module(x)
    with torch.no_grad():
        module.weight_hh_l0.add_(1.0)
    out.sum().backward()
    reference(x)[0].sum().backward()
    for (name, ours), theirs in zip(module.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, msg=name)


def test_outputs_share_memory_with_nothing_the_caller_passed():
    x = torch.randn(5, 2, 3)
    hx = torch.randn(1, 2, 4)
    x_before, hx_before = x.clone(), hx.clone()
    module = RNN(3, 4)
    out, h_n = module(x, hx)
    out.zero_(), h_n.zero_()
    assert torch.equal(x, x_before) and torch.equal(hx, hx_before)


# ----------------------------------------------------------------------------- dropout
def test_dropout_masks_follow_torch_manual_seed():
    module = RNN(3, 6, num_layers=3, dropout=0.5)
    x = torch.randn(5, 2, 3)
    runs = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        runs.append(module(x)[0].detach())
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_dropout_one_feeds_zeros_to_the_upper_layer():
    """With p=1 every mask is zero: layer 1 sees zeros, i.e. an nn.RNN on zero input."""
    torch.manual_seed(5)
    ours = RNN(3, 4, num_layers=2, dropout=1.0)
    upper = nn.RNN(4, 4)
    upper.load_state_dict({name.replace("l1", "l0"): p for name, p in ours.state_dict().items()
                           if name.endswith("l1")})
    x, hx = torch.randn(5, 2, 3), torch.randn(2, 2, 4)
    out, h_n = ours(x, hx)
    expected, expected_h = upper(torch.zeros(5, 2, 4), hx[1:])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h_n[1:], expected_h)


# ----------------------------------------------------------------------------- errors
message_and_type = raised_by     # (exception type, message): both must match nn.RNN


BAD_FORWARDS = {   # name: (constructor kwargs, input, hx)
    "4-D input": (dict(), torch.zeros(2, 2, 1, 3), None),
    "wrong input_size": (dict(), torch.zeros(2, 2, 7), None),
    "wrong hx size": (dict(), torch.zeros(2, 3, 3), torch.zeros(2, 4, 5)),
    "wrong hx size, batch_first": (dict(batch_first=True), torch.zeros(3, 2, 3),
                                   torch.zeros(2, 2, 5)),
    "unbatched wrong hx size": (dict(), torch.zeros(2, 3), torch.zeros(1, 5)),
    "3-D input, 2-D hx": (dict(), torch.zeros(2, 1, 3), torch.zeros(2, 5)),
    "2-D input, 3-D hx": (dict(), torch.zeros(2, 3), torch.zeros(2, 1, 5)),
    "sequence length 0": (dict(), torch.zeros(0, 2, 3), None),
    "sequence length 0, batch_first": (dict(batch_first=True), torch.zeros(2, 0, 3), None),
    "input dtype": (dict(), torch.zeros(2, 2, 3, dtype=torch.float64), None),
}


@pytest.mark.parametrize("case", sorted(BAD_FORWARDS))
def test_forward_errors_match_nn_rnn(case):
    kwargs, x, hx = BAD_FORWARDS[case]
    ours = RNN(3, 5, num_layers=2, **kwargs)
    theirs = nn.RNN(3, 5, num_layers=2, **kwargs)
    ours_type, ours_message = message_and_type(lambda: ours(x, hx))
    theirs_type, theirs_message = message_and_type(lambda: theirs(x, hx))
    assert ours_message == theirs_message
    assert issubclass(ours_type, theirs_type)       # `except` clauses written for torch work


@pytest.mark.parametrize("kwargs", [dict(nonlinearity="sigmoid"), dict(hidden_size=0),
                                    dict(num_layers=0), dict(dropout=1.5),
                                    dict(hidden_size=2.0)])
def test_constructor_errors_match_nn_rnn(kwargs):
    arguments = {"input_size": 3, "hidden_size": 5, **kwargs}
    assert message_and_type(lambda: RNN(**arguments)) == \
           message_and_type(lambda: nn.RNN(**arguments))


def test_input_size_zero_is_refused_like_nn_rnn():
    assert message_and_type(lambda: RNN(0, 5)) == message_and_type(lambda: nn.RNN(0, 5))


@pytest.mark.parametrize("kwargs", [dict(bias=1), dict(batch_first="yes")])
def test_non_bool_flags_are_refused_like_nn_rnn(kwargs):
    assert message_and_type(lambda: RNN(3, 5, **kwargs)) == \
           message_and_type(lambda: nn.RNN(3, 5, **kwargs))


def test_hx_dtype_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"hx dtype \(torch.float64\) does not match weight "
                                         r"dtype \(torch.float32\)"):
        RNN(3, 4)(torch.zeros(2, 1, 3), torch.zeros(1, 1, 4, dtype=torch.float64))


@pytest.mark.parametrize("where", ["input", "hx"])
def test_tensors_on_another_device_are_refused_like_nn_rnn(where):
    x = torch.zeros(2, 1, 3, device="meta" if where == "input" else "cpu")
    hx = torch.zeros(1, 1, 4, device="meta" if where == "hx" else "cpu")
    ours, theirs = RNN(3, 4), nn.RNN(3, 4)
    assert message_and_type(lambda: ours(x, hx)) == message_and_type(lambda: theirs(x, hx))


def test_numpy_input_is_refused_with_how_to_convert():
    with pytest.raises(TypeError, match=r"expects a torch.Tensor .*torch.from_numpy\(x\)"):
        RNN(3, 4)(np.zeros((2, 1, 3), np.float32))


# ----------------------------------------------------------------------------- training
class CharModel(nn.Module):
    """Seed 004's model: Embedding -> RNN -> Linear over the vocabulary."""

    def __init__(self, rnn_class, vocabulary, dtype):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, 8, dtype=dtype)
        self.rnn = rnn_class(8, 16, num_layers=2, dtype=dtype)
        self.head = nn.Linear(16, vocabulary, dtype=dtype)

    def forward(self, tokens, hx=None):
        out, hx = self.rnn(self.embedding(tokens), hx)
        return self.head(out), hx


def train_losses(model, tokens, targets, steps):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        logits, _ = model(tokens)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           targets.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        optimizer.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_training_loop_matches_nn_rnn(dtype, rtol):
    generator = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, 12, (10, 4), generator=generator)
    targets = torch.roll(tokens, -1, dims=0)
    torch.manual_seed(6)
    theirs = CharModel(nn.RNN, 12, dtype)
    ours = CharModel(RNN, 12, dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours_losses = train_losses(ours, tokens, targets, steps=8)
    theirs_losses = train_losses(theirs, tokens, targets, steps=8)
    assert ours_losses[-1] < ours_losses[0] - 0.1          # it learns
    torch.testing.assert_close(ours_losses, theirs_losses, rtol=rtol, atol=0)
