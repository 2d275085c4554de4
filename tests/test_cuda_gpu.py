"""The 'cuda' backend on a real GPU: ``FASTRNN_TEST_REAL_GPU=1 python -m pytest -m cuda``
(tests/conftest.py; skipped everywhere else, CI included).

What only hardware can show: the core issue's full grid of layer options against the NumPy
reference, with and without ragged ``lengths``; shapes that run the grid-barrier kernel on many
blocks at once (cooperative launch at full size, W_hh slices on and off chip), equal and ragged;
parity with torch's cuDNN RNN in exact fp32, padded and packed; and device arrays from CuPy and
torch going in and out without copies (ragged batches too). For LSTM and GRU, at the backend
contract's level (the layers come separately): both strategies at full grid size against the
reference, and each direction of a bidirectional torch.nn.LSTM / GRU on cuDNN, torch tensors
in and out.
"""
import itertools
import os
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn.backends import backend_status
from cuda_helpers import device_pointer, forbid_host_copies
from cuda_launches import record_plans
from gated_problems import call_entry, gated_problem, run_gated
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
    plans = record_plans(monkeypatch)
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


# ----------------------------------------------------------------------------- LSTM and GRU
GATED_FULL_SIZE = [       # (cell, T, B, I, H, P, dtype, strategy, on_chip)
    ("lstm", 20, 4, 16, 32, None, "float32", "rows", None),
    ("lstm", 10, 300, 8, 16, None, "float32", "rows", None),     # 38 blocks of 8 batch rows
    ("lstm", 10, 5, 8, 24, 12, "float64", "rows", None),         # projection inside a block
    ("lstm", 12, 8, 32, 256, None, "float32", "grid", True),
    ("lstm", 12, 8, 32, 512, 128, "float32", "grid", None),      # 2 grid barriers a step
    ("lstm", 8, 1, 16, 1024, None, "float32", "grid", True),     # inference, W_hh on chip
    ("lstm", 8, 16, 16, 256, 64, "float64", "grid", False),
    ("gru", 20, 4, 16, 48, None, "float32", "rows", None),
    ("gru", 12, 8, 32, 1024, None, "float32", "grid", None),
    ("gru", 8, 1, 16, 1024, None, "float32", "grid", True),      # 342 blocks, W_hh on chip
    ("gru", 8, 16, 16, 512, None, "float64", "grid", False),
]


@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("cell,T,B,I,H,P,dtype,strategy,on_chip", GATED_FULL_SIZE)
def test_gated_strategies_at_full_grid_size(monkeypatch, cell, T, B, I, H, P, dtype, strategy,
                                            on_chip, ragged):
    """Both time loops of a layer-direction, at grid sizes the simulator cannot run (many
    blocks meeting at grid barriers, W_hh slices on and off chip, LSTM's projection sliced
    over the grid), against the NumPy reference; reverse when ragged (late starters)."""
    from fastrnn.backends import reference
    plans = record_plans(monkeypatch)
    rng = np.random.default_rng(4)
    lengths = np.sort(ragged_lengths(rng, B, T))[::-1] if ragged else np.full(B, T)
    problem = gated_problem(rng, cell, lengths, I, H, dtype, True, P)
    with backend.forced_recurrence(strategy, on_chip):
        actual = run_gated(backend, cell, problem, reverse=ragged, accumulate_x=True)
    expected = run_gated(reference, cell, problem, reverse=ragged, accumulate_x=True)
    for name in expected:
        assert_close(actual[name], expected[name], dtype, RTOL[dtype])
    assert len(plans) == 2 and all(plan.strategy == strategy for plan in plans)
    if on_chip is not None:
        assert all(plan.weights_on_chip == on_chip for plan in plans)
    if strategy == "grid":
        assert all(plan.unit_blocks > 1 for plan in plans)    # a real multi-block grid barrier


def gated_parity(torch, device, backend_module, as_backend, cell, proj_size, bias, lengths):
    """One bidirectional layer of torch.nn.LSTM / GRU on ``device`` against the backend's
    contract, one direction at a time, on the same packed batch: outputs (both halves of one
    [N, 2P] buffer), final states, and the gradients of the input, the initial states and
    every parameter. ``as_backend`` gives the backend a tensor (no copy on CUDA: torch tensors
    go in through __cuda_array_interface__, and the buffers written are torch tensors)."""
    from torch.nn.utils.rnn import pack_padded_sequence
    torch.manual_seed(0)
    T, B, I, H = max(lengths), len(lengths), 12, 48
    P = proj_size or H
    module = (torch.nn.LSTM(I, H, bias=bias, bidirectional=True, proj_size=proj_size)
              if cell == "lstm" else torch.nn.GRU(I, H, bias=bias, bidirectional=True)).to(device)
    x = torch.randn(T, B, I, device=device, requires_grad=True)
    states = [torch.randn(2, B, P, device=device, requires_grad=True)]
    states += [torch.randn(2, B, H, device=device, requires_grad=True)] if cell == "lstm" else []
    packed = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, final = module(packed, tuple(states) if cell == "lstm" else states[0])
    final = list(final) if cell == "lstm" else [final]
    grad_out = torch.randn_like(out.data)
    grad_final = [torch.randn_like(f) for f in final]
    torch.autograd.backward([out.data] + final, [grad_out] + grad_final)

    order = packed.sorted_indices                # the packed batch's rows: sorted sequences
    N, batch_sizes = out.data.shape[0], packed.batch_sizes.numpy().astype(np.int64)
    out_both = torch.full((N, 2 * P), 7.0, device=device)
    grad_x = torch.zeros(N, I, device=device)
    pairs = [(out_both, out.data)]                # (ours, torch's)
    for direction in (0, 1):
        suffix = "_l0" + ("_reverse" if direction else "")
        half = slice(direction * P, (direction + 1) * P)
        parameters = {name: getattr(module, kind + suffix, None) for name, kind in (
            ("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
            ("b_hh", "bias_hh"), ("w_hr", "weight_hr"))}
        values = {name: None if p is None else as_backend(p) for name, p in parameters.items()}
        grads = {name: torch.zeros_like(p) for name, p in parameters.items() if p is not None}
        values.update({"grad_" + name: None for name in parameters})
        values.update({"grad_" + name: as_backend(g) for name, g in grads.items()})
        names = ("h", "c") if cell == "lstm" else ("h",)
        buffers = {}
        for name, state, grad_state, state_final in zip(names, states, grad_final, final):
            shape = (B, state.shape[2])
            buffers.update({f"{name}_n": torch.empty(shape, device=device),
                            f"grad_{name}0": torch.empty(shape, device=device)})
            values.update({f"{name}0": as_backend(state[direction][order].contiguous()),
                           f"grad_{name}n": as_backend(grad_state[direction][order].contiguous())})
            pairs += [(buffers[f"{name}_n"], state_final[direction][order]),
                         (buffers[f"grad_{name}0"], state.grad[direction][order])]
        buffers["workspace"] = torch.empty(N, (5 if cell == "lstm" else 4) * H, device=device)
        values.update({name: as_backend(b) for name, b in buffers.items()})
        values.update(x=as_backend(packed.data), batch_sizes=batch_sizes, reverse=bool(direction),
                      out=as_backend(out_both[:, half]), grad_out=as_backend(grad_out[:, half]),
                      grad_x=as_backend(grad_x), accumulate_x=direction > 0)
        call_entry(getattr(backend_module, f"{cell}_forward"), values)
        call_entry(getattr(backend_module, f"{cell}_backward"), values)
        pairs += [(g, parameters[name].grad) for name, g in grads.items()]
    pairs.append((grad_x, pack_padded_sequence(x.grad, torch.tensor(lengths),
                                                  enforce_sorted=False).data))
    for ours, theirs in pairs:
        assert_close(ours.detach().cpu().numpy(), theirs.detach().cpu().numpy(), "float32",
                     RTOL["float32"])


@pytest.mark.parametrize("lengths", [[9] * 6, [4, 9, 1, 7, 9, 2]])
@pytest.mark.parametrize("cell,proj_size,bias", [("lstm", 0, True), ("lstm", 0, False),
                                                 ("lstm", 16, True), ("gru", 0, True),
                                                 ("gru", 0, False)])
def test_gated_parity_with_torch_cudnn(torch_cuda, cell, proj_size, bias, lengths):
    """LSTM / GRU against cuDNN in exact fp32, torch CUDA tensors in and out without copies."""
    gated_parity(torch_cuda, "cuda", backend, lambda t: t.detach(), cell, proj_size, bias,
                 lengths)
