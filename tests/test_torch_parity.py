"""fastrnn.RNN against torch.nn.RNN: the same numbers and the same error messages."""
import itertools

import numpy as np
import pytest

import fastrnn
from helpers import assert_close, raised_by

torch = pytest.importorskip("torch")

TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}
# torch computes with its own BLAS and libm tanh: float32 agrees to a few ulps per step
PARITY_RTOL = {"float32": 2e-5, "float64": 1e-10}


def torch_run(module, x, hx, grad_out, grad_hn):
    """Forward + backward through torch; returns outputs and all gradients as NumPy."""
    x_t = torch.tensor(x, requires_grad=True)
    hx_t = None if hx is None else torch.tensor(hx, requires_grad=True)
    out, h_n = module(x_t, hx_t)
    torch.autograd.backward([out, h_n], [torch.tensor(grad_out), torch.tensor(grad_hn)])
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    grad_hx = None if hx is None else hx_t.grad.numpy()
    return out.detach().numpy(), h_n.detach().numpy(), x_t.grad.numpy(), grad_hx, grads


CASES = list(itertools.product([1, 2], [False, True], [False, True], [True, False],
                               ["tanh", "relu"], ["float32", "float64"]))


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,nonlinearity,dtype", CASES)
@pytest.mark.parametrize("direction", ["fastrnn_to_torch", "torch_to_fastrnn"])
def test_numbers_match_torch(num_layers, bidirectional, batch_first, bias, nonlinearity, dtype, direction):
    rng = np.random.default_rng(num_layers + 2 * bidirectional + 4 * batch_first)
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                  bias=bias, nonlinearity=nonlinearity)
    ours = fastrnn.RNN(4, 6, dtype=dtype, seed=0, **kwargs)
    theirs = torch.nn.RNN(4, 6, dtype=TORCH_DTYPE[dtype], **kwargs)
    if direction == "fastrnn_to_torch":
        theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    else:
        ours.load_state_dict(theirs.state_dict())
    T, B = 5, 3
    x = rng.standard_normal((B, T, 4) if batch_first else (T, B, 4)).astype(dtype)
    hx = rng.standard_normal((num_layers * (1 + bidirectional), B, 6)).astype(dtype)
    out, h_n = ours(x, hx)
    grad_out = rng.standard_normal(out.shape).astype(dtype)
    grad_hn = rng.standard_normal(h_n.shape).astype(dtype)
    grad_x, grad_hx = ours.backward(grad_out, grad_hn)
    t_out, t_hn, t_grad_x, t_grad_hx, t_grads = torch_run(theirs, x, hx, grad_out, grad_hn)
    rtol = PARITY_RTOL[dtype]
    for a, e in ((out, t_out), (h_n, t_hn), (grad_x, t_grad_x), (grad_hx, t_grad_hx)):
        assert_close(a, e, dtype, rtol)
    assert list(ours.grads) == list(t_grads)
    for name in t_grads:
        assert_close(ours.grads[name], t_grads[name], dtype, rtol)


def test_unbatched_and_no_hx_match_torch():
    rng = np.random.default_rng(0)
    ours = fastrnn.RNN(3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=1)
    theirs = torch.nn.RNN(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    x = rng.standard_normal((6, 3))
    out, h_n = ours(x)
    t_out, t_hn = theirs(torch.tensor(x))
    assert_close(out, t_out.detach().numpy(), "float64")
    assert_close(h_n, t_hn.detach().numpy(), "float64")


def test_initialisation_distribution_matches_torch():
    """Same bound (1/sqrt(H)) and the same uniform spread as torch's reset_parameters."""
    ours = fastrnn.RNN(8, 64, seed=0).weight_hh_l0
    theirs = torch.nn.RNN(8, 64).weight_hh_l0.detach().numpy()
    bound = 1 / np.sqrt(64)
    assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
    assert abs(ours.std() - theirs.std()) < 0.1 * bound      # uniform: std = bound / sqrt(3)


def message_of(call):
    return raised_by(call)[1]


def as_torch(array):
    return None if array is None else torch.tensor(array)


BAD_INPUTS = {   # name: (input shape, hx shape or None), for a layer RNN(3, 5, num_layers=2)
    "4-D input": ((1, 2, 1, 3), None),
    "wrong input size": ((2, 1, 7), None),
    "wrong hidden size": ((2, 4, 3), (2, 4, 7)),
    "wrong number of states": ((2, 4, 3), (1, 4, 5)),
    "unbatched wrong hidden size": ((2, 3), (2, 7)),
    "unbatched input, 3-D hx": ((2, 3), (2, 1, 5)),
    "batched input, 2-D hx": ((2, 1, 3), (2, 5)),
    "zero-length sequence": ((0, 2, 3), None),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_forward_error_messages_match_torch(case):
    x_shape, hx_shape = BAD_INPUTS[case]
    x = np.zeros(x_shape, np.float32)
    hx = None if hx_shape is None else np.zeros(hx_shape, np.float32)
    ours = fastrnn.RNN(3, 5, num_layers=2)
    theirs = torch.nn.RNN(3, 5, num_layers=2)
    assert message_of(lambda: ours(x, hx)) == message_of(lambda: theirs(as_torch(x), as_torch(hx)))


@pytest.mark.parametrize("kwargs", [
    dict(nonlinearity="gelu"), dict(hidden_size=4.0), dict(hidden_size=0), dict(hidden_size=-1),
    dict(num_layers=0), dict(dropout=1.5), dict(dropout=-0.1), dict(dropout=True),
    dict(input_size=0), dict(input_size=2.0), dict(bias=1), dict(batch_first="yes"),
    dict(nonlinearity="gelu", hidden_size=0), dict(dropout=2, bias=1), dict(bias=1, hidden_size=0),
])
def test_constructor_messages_match_torch(kwargs):
    arguments = {"input_size": 3, "hidden_size": 5, **kwargs}
    ours = message_of(lambda: fastrnn.RNN(**arguments))
    theirs = message_of(lambda: torch.nn.RNN(**arguments))
    assert ours == theirs


def test_dropout_warning_matches_torch():
    with pytest.warns(UserWarning) as ours:
        fastrnn.RNN(3, 5, dropout=0.5)
    with pytest.warns(UserWarning) as theirs:
        torch.nn.RNN(3, 5, dropout=0.5)
    assert str(ours[0].message) == str(theirs[0].message)
