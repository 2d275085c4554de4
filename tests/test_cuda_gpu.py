"""The 'cuda' backend on a real GPU: ``FASTRNN_TEST_REAL_GPU=1 python -m pytest -m cuda``
(tests/conftest.py; skipped everywhere else, CI included).

What only hardware can show: the core issue's full grid of layer options against the NumPy
reference, with and without ragged ``lengths``; shapes that run the grid-barrier kernel on many
blocks at once (cooperative launch at full size, W_hh slices on and off chip), equal and ragged;
parity with torch's cuDNN RNN in exact fp32, padded and packed; and device arrays from CuPy and
torch going in and out without copies (ragged batches too).
"""
import itertools
import os
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn.backends import backend_status
from cuda_helpers import device_pointer, forbid_host_copies
from helpers import assert_close, random_array


def real_gpu_problem():
    if os.environ.get("FASTRNN_TEST_REAL_GPU") != "1":
        return "real-GPU tests run with FASTRNN_TEST_REAL_GPU=1 (see tests/conftest.py)"
    reason = backend_status()["cuda"]
    if reason is not None:
        return f"cuda backend: {reason}"
    from numba import config
    return "the CUDA simulator is on" if config.ENABLE_CUDASIM else None


PROBLEM = real_gpu_problem()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(PROBLEM is not None, reason=str(PROBLEM))]

if PROBLEM is None:
    from numba import cuda as numba_cuda
    from fastrnn.backends import cuda as backend

RTOL = {"float32": 1e-4, "float64": 1e-10}


def host(a):
    return backend.ARRAYS.to_host(a) if backend.ARRAYS.is_device_array(a) else np.asarray(a)


def ragged_lengths(rng, batch, steps):
    """Lengths 1..steps in a shuffled order, the longest being ``steps``."""
    lengths = rng.integers(1, steps + 1, batch)
    lengths[rng.integers(batch)] = steps
    return lengths


def compare_with_reference(layer_kwargs, x, hx, dtype, grad_h_n=True, seed=0, lengths=None):
    """Forward and backward on 'numpy' and 'cuda' layers with the same parameters."""
    rng = np.random.default_rng(seed)
    ref = fastrnn.RNN(backend="numpy", seed=1, dtype=dtype, **layer_kwargs)
    dev = fastrnn.RNN(backend="cuda", seed=1, dtype=dtype, **layer_kwargs)
    expected, actual = ref(x, hx, lengths=lengths), dev(x, hx, lengths=lengths)
    for e, a in zip(expected, actual):
        assert_close(host(a), e, dtype, RTOL[dtype])
    grad_out = random_array(rng, expected[0].shape, dtype)
    grad_hn = random_array(rng, expected[1].shape, dtype) if grad_h_n else None
    for e, a in zip(ref.backward(grad_out, grad_hn), dev.backward(grad_out, grad_hn)):
        assert_close(host(a), e, dtype, RTOL[dtype])
    for name, expected_grad in ref.grads.items():
        assert_close(host(dev.grads[name]), expected_grad, dtype, RTOL[dtype])


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,bias,nonlinearity,dtype",
                         list(itertools.product([1, 2, 3], [False, True], [False, True],
                                                [True, False], ["tanh", "relu"],
                                                ["float32", "float64"])))
def test_full_grid_matches_reference(num_layers, bidirectional, batch_first, bias, nonlinearity,
                                     dtype, with_hx, ragged):
    rng = np.random.default_rng(0)
    T, B, I, H = 5, 4, 4, 6
    directions = 2 if bidirectional else 1
    x = random_array(rng, (B, T, I) if batch_first else (T, B, I), dtype)
    hx = random_array(rng, (num_layers * directions, B, H), dtype) if with_hx else None
    lengths = np.array([3, 5, 1, 3]) if ragged else None      # unsorted, a tie, a length of 1
    compare_with_reference(dict(input_size=I, hidden_size=H, num_layers=num_layers,
                                bidirectional=bidirectional, batch_first=batch_first, bias=bias,
                                nonlinearity=nonlinearity), x, hx, dtype, lengths=lengths)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ["unbatched", "one step", "batch of one", "non-contiguous"])
def test_edge_shapes_match_reference(case, dtype):
    rng = np.random.default_rng(1)
    kwargs = dict(input_size=4, hidden_size=6, num_layers=2, bidirectional=True)
    x = {"unbatched": lambda: random_array(rng, (5, 4), dtype),
         "one step": lambda: random_array(rng, (1, 3, 4), dtype),
         "batch of one": lambda: random_array(rng, (5, 1, 4), dtype),
         "non-contiguous": lambda: random_array(rng, (5, 3, 8), dtype)[:, :, ::2]}[case]()
    hx = random_array(rng, (4, 6) if x.ndim == 2 else (4, x.shape[1], 6), dtype)
    compare_with_reference(kwargs, x, hx, dtype)


def test_non_contiguous_device_input():
    rng = np.random.default_rng(2)
    x = random_array(rng, (5, 3, 8), "float32")
    ref = fastrnn.RNN(4, 6, backend="numpy", seed=1)
    dev = fastrnn.RNN(4, 6, backend="cuda", seed=1)
    out, h_n = dev(numba_cuda.to_device(x)[:, :, 2:6])
    expected_out, expected_hn = ref(x[:, :, 2:6])
    assert_close(out.copy_to_host(), expected_out, "float32", RTOL["float32"])
    assert_close(h_n.copy_to_host(), expected_hn, "float32", RTOL["float32"])


def test_empty_batch():
    layer = fastrnn.RNN(4, 6, num_layers=2, backend="cuda")
    out, h_n = layer(np.zeros((3, 0, 4), np.float32))
    assert out.shape == (3, 0, 6) and h_n.shape == (2, 0, 6)
    grad_x, grad_hx = layer.backward(np.zeros((3, 0, 6), np.float32))
    assert grad_x.shape == (3, 0, 4) and grad_hx.shape == (2, 0, 6)


def test_small_launches_do_not_warn():
    """One-block grids are deliberate here: numba's low-occupancy warning must not reach users."""
    layer = fastrnn.RNN(3, 4, backend="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, _ = layer(np.zeros((2, 1, 3), np.float32))
        layer.backward(np.ones_like(out))


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("T,B,I,H,dtype,strategy,on_chip", [
    (20, 4, 16, 32, "float32", "rows", None),
    (10, 300, 8, 32, "float32", "rows", None),      # 38 blocks of 8 batch rows
    (10, 5, 16, 100, "float64", "grid", None),
    (12, 8, 32, 256, "float32", "grid", True),
    (12, 8, 32, 1024, "float32", "grid", None),
    (8, 1, 16, 1536, "float32", "grid", True),      # ~220 blocks, W_hh all on chip
    (8, 16, 16, 1024, "float64", "grid", False),
    (6, 64, 32, 2560, "float32", "grid", None),
])
def test_strategies_at_full_grid_size(monkeypatch, T, B, I, H, dtype, strategy, on_chip, ragged):
    plans = []
    run = backend._run_recurrence
    monkeypatch.setattr(backend, "_run_recurrence", lambda *args: plans.append(run(*args)))
    rng = np.random.default_rng(3)
    x = random_array(rng, (T, B, I), dtype)
    hx = random_array(rng, (1, B, H), dtype)
    lengths = ragged_lengths(rng, B, T) if ragged else None
    with backend.forced_recurrence(strategy, on_chip):
        compare_with_reference(dict(input_size=I, hidden_size=H), x, hx, dtype, lengths=lengths)
    assert len(plans) == 2 and all(plan.strategy == strategy for plan in plans)
    if on_chip is not None:
        assert all(plan.weights_on_chip == on_chip for plan in plans)
    if strategy == "grid":
        assert all(plan.unit_blocks > 1 for plan in plans)    # a real multi-block grid barrier


@pytest.fixture
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("lengths", [None, [4, 9, 1, 7, 9, 2]])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_parity_with_torch_cudnn(torch_cuda, nonlinearity, batch_first, lengths):
    """fastrnn.RNN against cuDNN on the same batch: padded, or packed from unsorted lengths."""
    torch = torch_cuda
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    torch.manual_seed(0)
    T, B, I, H = 9, 6, 12, 48
    reference = torch.nn.RNN(I, H, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
                             batch_first=batch_first).cuda()
    layer = fastrnn.RNN(I, H, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
                        batch_first=batch_first)
    layer.load_state_dict({k: v.detach().cpu().numpy() for k, v in reference.state_dict().items()})
    x = torch.randn((B, T, I) if batch_first else (T, B, I), device="cuda", requires_grad=True)
    hx = torch.randn(4, B, H, device="cuda", requires_grad=True)
    if lengths is None:
        expected_out, expected_hn = reference(x, hx)
    else:
        packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                      enforce_sorted=False)
        expected_packed, expected_hn = reference(packed, hx)
        expected_out, _ = pad_packed_sequence(expected_packed, batch_first=batch_first,
                                              total_length=T)
    out, h_n = layer(x.detach(), hx.detach(),        # auto: a CUDA tensor picks 'cuda'
                     lengths=None if lengths is None else np.array(lengths))
    assert backend.ARRAYS.is_device_array(out)
    grad_out, grad_hn = torch.randn_like(expected_out), torch.randn_like(expected_hn)
    torch.autograd.backward([expected_out, expected_hn], [grad_out, grad_hn])
    grad_x, grad_hx = layer.backward(grad_out, grad_hn)
    pairs = [(out, expected_out), (h_n, expected_hn), (grad_x, x.grad), (grad_hx, hx.grad)]
    pairs += [(layer.grads[name], p.grad) for name, p in reference.named_parameters()]
    for actual, expected in pairs:
        assert_close(host(actual), expected.detach().cpu().numpy(), "float32", RTOL["float32"])


@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
def test_torch_tensors_in_and_out_without_copies(torch_cuda, monkeypatch, lengths):
    torch = torch_cuda
    layer = fastrnn.RNN(6, 8, num_layers=2, bidirectional=True, seed=0)
    x = torch.randn(5, 3, 6, device="cuda")
    layer(x)                                            # parameters move to the device once
    forbid_host_copies(monkeypatch, type(numba_cuda.device_array(1)))
    out, h_n = layer(x, lengths=lengths)
    grad_x, _ = layer.backward(torch.ones(5, 3, 16, device="cuda"))
    if lengths is None:
        assert device_pointer(layer._context.x) == x.data_ptr()
    back_in_torch = torch.as_tensor(out, device="cuda")
    assert back_in_torch.data_ptr() == device_pointer(out)
    monkeypatch.undo()
    expected, _ = fastrnn.RNN(6, 8, num_layers=2, bidirectional=True, seed=0,
                              backend="numpy")(x.cpu().numpy(), lengths=lengths)
    assert_close(back_in_torch.cpu().numpy(), expected, "float32", RTOL["float32"])
    assert grad_x.shape == (5, 3, 6)


def test_cupy_arrays_in_and_out_without_copies(monkeypatch):
    cupy = pytest.importorskip("cupy")
    layer = fastrnn.RNN(6, 8, seed=0)
    x = cupy.random.standard_normal((5, 3, 6), dtype=cupy.float32)
    layer(x)
    forbid_host_copies(monkeypatch, type(numba_cuda.device_array(1)))
    out, h_n = layer(x)
    assert device_pointer(layer._context.x) == x.data.ptr
    monkeypatch.undo()
    expected, _ = fastrnn.RNN(6, 8, seed=0, backend="numpy")(cupy.asnumpy(x))
    assert_close(cupy.asarray(out).get(), expected, "float32", RTOL["float32"])
