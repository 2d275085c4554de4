"""Variable-length batches (``lengths=``) against torch.nn.RNN on the same packed batch.

torch packs with pack_padded_sequence and unpacks with pad_packed_sequence; fastrnn takes the
padded batch and ``lengths`` and must give the same padded output (zero past each length),
the same h_n (each sequence's state after its own last step) and the same gradients of the
input, hx and every parameter, with the caller's batch order kept.
"""
import itertools

import numpy as np
import pytest

import fastrnn
from cell_cases import torch_forward
from helpers import assert_close, random_array

torch = pytest.importorskip("torch")

BACKENDS = ["numpy", "cpu"]    # cpu: ragged batches need the ragged kernels (kernel branch)
GRID = list(itertools.product([1, 2], [False, True], [False, True], ["tanh", "relu"],
                              [True, False], ["float32", "float64"]))


def torch_run(layer, x, hx, lengths, grad_out, grad_hn, batch_first):
    """torch.nn.RNN on the packed batch: padded output, h_n and every gradient, as NumPy."""
    x_t = torch.from_numpy(x).requires_grad_(True)
    hx_t = torch.from_numpy(hx).requires_grad_(True)
    out, h_n = torch_forward(layer, x_t, hx_t, lengths, batch_first)
    loss = (out * torch.from_numpy(grad_out)).sum() + (h_n * torch.from_numpy(grad_hn)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in layer.named_parameters()}
    return out.detach().numpy(), h_n.detach().numpy(), x_t.grad.numpy(), hx_t.grad.numpy(), grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,nonlinearity,bias,dtype", GRID)
def test_against_torch_packed(backend, num_layers, bidirectional, batch_first, nonlinearity,
                              bias, dtype):
    rng = np.random.default_rng(17)
    T, B, I, H = 6, 5, 3, 4
    lengths = [4, 6, 1, 3, 4]              # unsorted, with a tie, one full-length, one of 1
    layer = fastrnn.RNN(I, H, num_layers, nonlinearity, bias, batch_first,
                        bidirectional=bidirectional, dtype=dtype, backend=backend, seed=3)
    reference = torch.nn.RNN(I, H, num_layers, nonlinearity, bias, batch_first,
                             bidirectional=bidirectional, dtype=getattr(torch, dtype))
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    x = random_array(rng, (B, T, I) if batch_first else (T, B, I), dtype)
    hx = random_array(rng, (layer.num_layers * (2 if bidirectional else 1), B, H), dtype)
    out_shape = x.shape[:2] + ((2 if bidirectional else 1) * H,)
    grad_out = random_array(rng, out_shape, dtype)
    grad_hn = random_array(rng, hx.shape, dtype)

    expected = torch_run(reference, x, hx, lengths, grad_out, grad_hn, batch_first)
    out, h_n = layer(x, hx, lengths=np.array(lengths))
    grad_x, grad_hx = layer.backward(grad_out, grad_hn)
    rtol = 1e-5 if dtype == "float32" else 1e-10
    for what, actual, wanted in zip(("output", "h_n", "grad_x", "grad_hx"),
                                    (out, h_n, grad_x, grad_hx), expected[:4]):
        assert_close(actual, wanted, dtype, rtol, what=what)
    for name, wanted in expected[4].items():
        assert_close(layer.grads[name], wanted, dtype, rtol, what=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_is_zero_past_each_length_and_gradients_there_are_ignored(backend):
    rng = np.random.default_rng(1)
    layer = fastrnn.RNN(3, 4, bidirectional=True, backend=backend, dtype="float64", seed=0)
    x = random_array(rng, (5, 3, 3), "float64")
    lengths = np.array([2, 5, 3])
    out, _ = layer(x, lengths=lengths)
    for b, length in enumerate(lengths):
        assert np.all(out[length:, b] == 0)
        assert np.all(out[:length, b] != 0)
    grad_out = random_array(rng, out.shape, "float64")
    grad_x, _ = layer.backward(grad_out)
    layer.zero_grad()
    masked = grad_out.copy()
    for b, length in enumerate(lengths):
        masked[length:, b] = 1e6               # gradients past a length must not matter
    grad_x_masked, _ = layer.backward(masked)
    np.testing.assert_array_equal(grad_x, grad_x_masked)
    for b, length in enumerate(lengths):
        assert np.all(grad_x[length:, b] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_lengths_give_what_no_lengths_give_on_the_plain_path(backend):
    rng = np.random.default_rng(2)
    layer = fastrnn.RNN(3, 4, num_layers=2, bidirectional=True, backend=backend, seed=0)
    x = random_array(rng, (5, 3, 3), "float32")
    out, h_n = layer(x)
    out_l, h_n_l = layer(x, lengths=[5, 5, 5])
    np.testing.assert_array_equal(out, out_l)
    np.testing.assert_array_equal(h_n, h_n_l)
    assert layer._context.layout.packing is None       # no sorting, no gather: no slowdown


@pytest.mark.parametrize("backend", BACKENDS)
def test_caller_order_is_kept_whatever_the_order_of_lengths(backend):
    """Each sequence's results do not depend on where it sits in the batch."""
    rng = np.random.default_rng(5)
    layer = fastrnn.RNN(3, 4, num_layers=2, bidirectional=True, backend=backend,
                        dtype="float64", seed=1)
    x = random_array(rng, (6, 4, 3), "float64")
    hx = random_array(rng, (4, 4, 4), "float64")
    lengths = np.array([2, 6, 3, 5])
    out, h_n = layer(x, hx, lengths=lengths)
    grad_x, grad_hx = layer.backward(np.ones_like(out), np.ones_like(h_n))
    order = np.array([2, 0, 3, 1])
    out_p, h_n_p = layer(x[:, order], hx[:, order], lengths=lengths[order])
    grad_x_p, grad_hx_p = layer.backward(np.ones_like(out), np.ones_like(h_n))
    for a, e in ((out_p, out[:, order]), (h_n_p, h_n[:, order]), (grad_x_p, grad_x[:, order]),
                 (grad_hx_p, grad_hx[:, order])):
        assert_close(a, e, "float64")
    for b, length in enumerate(lengths):          # and each equals the sequence run alone
        alone, alone_h = layer(x[:length, b:b + 1], hx[:, b:b + 1])
        assert_close(out[:length, b:b + 1], alone, "float64")
        assert_close(h_n[:, b:b + 1], alone_h, "float64")


def test_lengths_from_a_torch_tensor_and_a_list_work():
    layer = fastrnn.RNN(2, 3, backend="numpy", dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    expected = layer(x, lengths=np.array([3, 4]))[0]
    np.testing.assert_array_equal(layer(x, lengths=[3, 4])[0], expected)
    np.testing.assert_array_equal(layer(x, lengths=torch.tensor([3, 4]))[0], expected)


def test_functional_takes_lengths_and_batch_first():
    rng = np.random.default_rng(6)
    layer = fastrnn.RNN(3, 4, batch_first=True, backend="numpy", dtype="float64", seed=0)
    x = random_array(rng, (3, 5, 3), "float64")
    out, h_n = layer(x, lengths=[5, 1, 3])
    f_out, f_h_n, _ = fastrnn.functional.rnn_forward(x, layer.state_dict(), lengths=[5, 1, 3],
                                                      batch_first=True, backend="numpy")
    np.testing.assert_array_equal(out, f_out)
    np.testing.assert_array_equal(h_n, f_h_n)
    assert np.all(out[1, 1:] == 0) and np.all(out[2, 3:] == 0)


@pytest.mark.parametrize("lengths,error,message", [
    ([2, 3], ValueError, "Expected `len(lengths)` to be equal to batch_size, but got 2 (batch_size=3)"),
    ([0, 2, 3], ValueError, "Length of all samples has to be greater than 0"),
    ([6, 2, 3], ValueError, "at most the sequence length 5, got a length of 6"),
    ([[1, 2, 3]], ValueError, "lengths must be a 1-D array"),
    ([1.0, 2.0, 3.0], TypeError, "lengths must be integers"),
    ([np.nan, 2.0, 3.0], TypeError, "lengths must be integers"),
    ([True, True, False], TypeError, "lengths must be integers"),
    (["1", "2", "3"], TypeError, "lengths must be integers"),
    ([1, None, 3], TypeError, "lengths must be integers"),
    (3, ValueError, "lengths must be a 1-D array"),
    (np.array([2 ** 63, 2, 3], np.uint64), ValueError, "at most the sequence length 5"),
    ([-1, 2, 3], ValueError, "Length of all samples has to be greater than 0"),
])
def test_bad_lengths_are_refused_before_anything_runs(lengths, error, message):
    layer = fastrnn.RNN(2, 3, backend="numpy")
    with pytest.raises(error) as caught:
        layer(np.zeros((5, 3, 2), np.float32), lengths=lengths)
    assert message in str(caught.value)
