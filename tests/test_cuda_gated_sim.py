"""The 'cuda' backend's LSTM and GRU against the NumPy reference at the backend contract's
level, under Numba's CUDA simulator in CI (tests/conftest.py; FASTRNN_TEST_REAL_GPU=1 runs them
on a GPU).

Each case builds a packed problem, runs forward and backward through the contract on both
backends with ``out`` and ``grad_out`` the second half of [N, 2P] buffers, parameter gradients
that start at one (they are added to) and grad_x written or added to, and compares every
output, the workspace (its layout is part of the contract) and every gradient. What the
simulator can run faithfully (tests/test_cuda_sim.py says why): the 'grid' kernels with one
block, several blocks only at T=1 in a forward without a projection (no step reads another
block's output then); the 'rows' kernels with any number of blocks. The compile check of the
gated kernels for sm_90 runs beside them (tests/cuda_sm90.py).
"""
import re

import numpy as np
import pytest

from fastrnn.backends import backend_status, reference
import cuda_sm90
from cuda_helpers import forbid_host_copies
from cuda_launches import h100_limits, record_plans, spy_launches
from gated_problems import PARAMETERS, call_entry, gated_problem, run_gated
from helpers import assert_close

CUDA_REASON = backend_status()["cuda"]
pytestmark = pytest.mark.skipif(CUDA_REASON is not None, reason=f"cuda backend: {CUDA_REASON}")

if CUDA_REASON is None:
    from numba import cuda as numba_cuda
    from fastrnn.backends import cuda as backend

RTOL = {"float32": 1e-5, "float64": 1e-12}
RAGGED = (3, 2, 2, 1)            # sorted lengths: batch_sizes [4, 3, 1], a tie, a length of 1
def check_gated(cell, problem, reverse, accumulate_x=False):
    expected = run_gated(reference, cell, problem, reverse, accumulate_x)
    actual = run_gated(backend, cell, problem, reverse, accumulate_x)
    width = problem["grad_out"].shape[1]
    assert np.all(actual["out"][:, :width] == 7), "the other half of the output buffer was touched"
    assert set(actual) == set(expected)
    dtype = problem["x"].dtype.name
    for name in expected:
        assert_close(actual[name], expected[name], dtype, RTOL[dtype])


def planned(monkeypatch, strategy, on_chip, run):
    """``run()`` with the time loops forced to ``strategy``; the plans of its two launches."""
    plans = record_plans(monkeypatch)
    with backend.forced_recurrence(strategy, on_chip):
        run()
    assert [plan.strategy for plan in plans] == [strategy, strategy]     # forward, backward
    assert all(plan.weights_on_chip == (on_chip is not False) for plan in plans)
    return plans


# (lengths, I, H, P); the simulator costs ~1 ms per thread-step: B*H <= 32 is one warp
@pytest.mark.parametrize("strategy,on_chip,dtype,reverse,bias,accumulate_x,shape", [
    ("rows", None, "float32", False, True, False, (RAGGED, 2, 3, None)),
    ("rows", None, "float64", True, False, True, (RAGGED, 3, 3, 2)),
    ("rows", None, "float64", False, True, False, ((3, 3), 2, 2, 3)),      # P > H
    ("grid", True, "float64", True, True, False, (RAGGED, 2, 3, 2)),
    ("grid", False, "float32", False, False, True, ((3, 2, 2), 2, 3, None)),
])
def test_lstm_matches_reference(monkeypatch, strategy, on_chip, dtype, reverse, bias,
                                accumulate_x, shape):
    lengths, I, H, P = shape
    problem = gated_problem(np.random.default_rng(0), "lstm", lengths, I, H, dtype, bias, P)
    plans = planned(monkeypatch, strategy, on_chip,
                    lambda: check_gated("lstm", problem, reverse, accumulate_x))
    assert all((plan.projection_units_per_block > 0) == (P is not None) for plan in plans)


@pytest.mark.parametrize("strategy,on_chip,dtype,reverse,bias,accumulate_x,lengths", [
    ("rows", None, "float32", True, True, False, RAGGED),
    ("rows", None, "float64", False, False, True, (3, 3)),
    ("grid", True, "float64", False, True, True, RAGGED),
    ("grid", False, "float32", True, False, False, (3, 2, 2)),
])
def test_gru_matches_reference(monkeypatch, strategy, on_chip, dtype, reverse, bias,
                               accumulate_x, lengths):
    problem = gated_problem(np.random.default_rng(1), "gru", lengths, 2, 3, dtype, bias)
    planned(monkeypatch, strategy, on_chip,
            lambda: check_gated("gru", problem, reverse, accumulate_x))


@pytest.mark.parametrize("cell,P,reverse", [("lstm", 2, False), ("gru", None, True)])
def test_rows_kernels_with_one_block_per_batch_row(monkeypatch, cell, P, reverse):
    """Blocks whose rows have ended idle through the later steps (and their barriers)."""
    monkeypatch.setattr(backend, "ROW_OUTPUTS_PER_BLOCK", 1)      # 2 batch rows: 2 blocks
    plans = record_plans(monkeypatch)
    problem = gated_problem(np.random.default_rng(2), cell, (3, 1), 2, 3, "float64", True, P)
    check_gated(cell, problem, reverse)
    assert [plan.grid for plan in plans] == [(2, 1), (2, 1)]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_grid_forward_with_several_blocks_at_one_step(monkeypatch, cell):
    """At T=1 a forward without a projection reads no other block's output, so the simulator
    runs several blocks faithfully: this checks how blocks split the gate rows of the units
    (H=5 over 3 blocks, W_hh laid out unit by unit)."""
    limits = backend.DeviceLimits(3, lambda threads, shared_bytes: 3)
    monkeypatch.setattr(backend, "_device_limits", lambda kernel, args: limits)
    plans = record_plans(monkeypatch)
    problem = gated_problem(np.random.default_rng(3), cell, (1, 1), 3, 5, "float64")
    with backend.forced_recurrence("grid", True):
        expected = run_forward_only(reference, cell, problem)
        actual = run_forward_only(backend, cell, problem)
    assert plans[0].grid == (1, 3)
    for name in expected:
        assert_close(actual[name], expected[name], "float64", RTOL["float64"])


def run_forward_only(module, cell, problem):
    arrays, (N, H), B = module.ARRAYS, problem["grad_out"].shape, problem["h0"].shape[0]
    values = {name: value if value is None or name == "batch_sizes" else arrays.asarray(value)
              for name, value in problem.items()}
    values.update(reverse=False, out=arrays.zeros((N, H), "float64"),
                  h_n=arrays.zeros((B, H), "float64"), c_n=arrays.zeros((B, H), "float64"),
                  workspace=arrays.zeros((N, (5 if cell == "lstm" else 4) * H), "float64"))
    call_entry(getattr(module, f"{cell}_forward"), values)
    names = ["out", "h_n", "workspace"] + (["c_n"] if cell == "lstm" else [])
    return {name: arrays.to_host(values[name]) for name in names}


def test_lstm_without_hidden_units_projects_nothing():
    """H = 0 with a projection (P = 2): the contract allows it, the reference gives zeros."""
    problem = gated_problem(np.random.default_rng(4), "lstm", (2, 1), 2, 0, "float32", True, 2)
    check_gated("lstm", problem, reverse=True)


class TestPlan:
    """The gated cells' time-loop plans, with an H100's numbers."""

    @pytest.mark.parametrize("cell,hidden,width,itemsize", [
        ("lstm", 32, 32, 4), ("lstm", 53, 53, 4), ("lstm", 48, 16, 8), ("gru", 61, 61, 4),
        ("gru", 42, 42, 8)])
    def test_rows_while_every_weight_fits_one_block(self, cell, hidden, width, itemsize):
        """The largest H that fits, and smaller ones. float32 LSTM at H=53: 4 rows of 53 a
        block, 224 threads; 4 words of scratch a thread, 4*53 + 1 words a unit:
        224*4 + 53*213 = 12185 words of 12288."""
        for shape in loops(cell, hidden, width):
            plan = backend.plan_recurrence(8, shape, itemsize, h100_limits())
            assert plan.strategy == "rows" and plan.shared_bytes <= backend.SHARED_BYTES_PER_BLOCK
            words = plan.threads * shape.step.gates + sum(     # units' rows padded to odd
                product.units * (product.gates * product.length | 1)
                for product in shape.products)
            assert plan.shared_bytes == words * itemsize

    @pytest.mark.parametrize("cell,hidden,itemsize", [("lstm", 54, 4), ("gru", 62, 4),
                                                      ("gru", 43, 8)])
    def test_grid_forward_once_w_hh_does_not(self, cell, hidden, itemsize):
        forward, _ = loops(cell, hidden, hidden)
        assert backend.plan_recurrence(8, forward, itemsize, h100_limits()).strategy == "grid"

    @pytest.mark.parametrize("cell,hidden,width,itemsize", [
        ("lstm", 1024, 256, 4), ("lstm", 300, 300, 4), ("gru", 2048, 2048, 4),
        ("lstm", 512, 512, 8)])
    def test_grid_slices_cover_every_unit_of_both_products(self, cell, hidden, width, itemsize):
        cooperative_blocks = h100_limits()().cooperative_blocks
        for batch in (1, 64):
            for shape in loops(cell, hidden, width):
                plan = backend.plan_recurrence(batch, shape, itemsize, h100_limits())
                assert plan.strategy == "grid" and plan.row_blocks == 1
                units, blocks = plan.units_per_block, plan.unit_blocks
                assert blocks * units >= shape.step.units > (blocks - 1) * units
                if shape.projection is not None:
                    assert blocks * plan.projection_units_per_block >= shape.projection.units
                assert blocks <= cooperative_blocks(plan.threads, plan.shared_bytes)
                assert plan.shared_bytes <= backend.SHARED_BYTES_PER_BLOCK

    def test_lstm_weights_stay_on_chip_for_inference(self):
        """B=1, H=1024: 4 gate rows of 1025 words a unit, W_hh over ~4 blocks per SM."""
        forward, _ = backend.lstm_loops(1024, 1024, False)
        plan = backend.plan_recurrence(1, forward, 4, h100_limits())
        assert plan.weights_on_chip and plan.unit_blocks > 132


def loops(cell, hidden, width):
    if cell == "lstm":
        return backend.lstm_loops(hidden, width, width != hidden)
    return backend.gru_loops(hidden)


def test_device_arrays_in_and_out_without_host_copies(monkeypatch):
    """Every argument a device array: no float data crosses to or from the host, and the
    results are in the caller's buffers."""
    rng = np.random.default_rng(5)
    for cell, P in (("lstm", 2), ("gru", None)):
        problem = gated_problem(rng, cell, RAGGED, 2, 3, "float32", True, P)
        expected = run_gated(reference, cell, problem, reverse=True)
        values = {name: value if name == "batch_sizes" else numba_cuda.to_device(value)
                  for name, value in problem.items()}
        buffers = device_buffers(cell, values)
        values.update(buffers, out=buffers["out"][:, values["h0"].shape[1]:], reverse=True,
                      accumulate_x=False)
        forbid_host_copies(monkeypatch, type(values["x"]))
        call_entry(getattr(backend, f"{cell}_forward"), values)
        call_entry(getattr(backend, f"{cell}_backward"), values)
        monkeypatch.undo()
        for name, array in buffers.items():
            assert_close(array.copy_to_host(), expected[name], "float32", RTOL["float32"])


def device_buffers(cell, values):
    """The output buffers of a forward and backward on these device inputs, as run_gated
    makes them: "out" is the [N, 2P] buffer whose second half gets the output (the first
    holds 7s), parameter gradients start at ones (they are added to), the rest at zeros."""
    arrays = backend.ARRAYS
    (N, width), (B, _) = values["grad_out"].shape, values["h0"].shape
    H = values["w_hh"].shape[0] // (4 if cell == "lstm" else 3)
    buffers = dict(out=arrays.asarray(np.full((N, 2 * width), 7, "float32")),
                   h_n=arrays.zeros((B, width), "float32"),
                   workspace=arrays.zeros((N, (5 if cell == "lstm" else 4) * H), "float32"),
                   grad_x=arrays.zeros((N, values["x"].shape[1]), "float32"),
                   grad_h0=arrays.zeros((B, width), "float32"))
    for name in PARAMETERS:
        if values.get(name) is not None:
            buffers["grad_" + name] = arrays.asarray(np.ones(values[name].shape, "float32"))
    if cell == "lstm":
        buffers.update(c_n=arrays.zeros((B, H), "float32"),
                       grad_c0=arrays.zeros((B, H), "float32"))
    return buffers


# ----------------------------------------------------------------------------- the boundary
def valid_arguments(cell):
    """Valid device arguments of the cell's forward and backward: N=5, B=2, I=3, H=4, and
    LSTM's P=2 (the GRU's forward reversed, its backward accumulating grad_x)."""
    P = 2 if cell == "lstm" else None
    problem = gated_problem(np.random.default_rng(6), cell, (3, 2), 3, 4, "float32", True, P)
    arrays = backend.ARRAYS
    values = {name: value if name == "batch_sizes" else arrays.asarray(value)
              for name, value in problem.items()}
    width = problem["h0"].shape[1]
    values.update(reverse=cell == "gru", accumulate_x=cell == "gru", out=zeros(5, width),
                  h_n=zeros(2, width), c_n=zeros(2, 4),
                  workspace=zeros(5, 20 if cell == "lstm" else 16))
    for name in ("x", "h0", "c0") + PARAMETERS:
        if name in problem:
            values["grad_" + name] = zeros(*problem[name].shape)
    return values


def zeros(*shape):
    return backend.ARRAYS.zeros(shape, "float32")


def refused_before_any_launch(monkeypatch, entry, name, replacement, error, message):
    """``entry`` with valid arguments but ``name`` replaced by replacement(its valid value)
    raises ``error`` matching ``message`` before any kernel is launched."""
    values = valid_arguments(entry.split("_")[0])
    values[name] = replacement(values[name])
    launches = spy_launches(monkeypatch)
    with pytest.raises(error, match=message):
        call_entry(getattr(backend, entry), values)
    assert launches == []


WRONG_SHAPES = [      # (entry, argument, shape given, shape expected): N=5, B=2, I=3, H=4, P=2
    ("lstm_forward", "c0", (2, 2), (2, 4)),
    ("lstm_forward", "b_ih", (4,), (16,)),
    ("lstm_forward", "w_hr", (4, 2), (2, 4)),
    ("lstm_forward", "out", (5, 4), (5, 2)),
    ("lstm_forward", "workspace", (5, 16), (5, 20)),
    ("lstm_backward", "grad_cn", (2, 2), (2, 4)),
    ("lstm_backward", "grad_w_hh", (16, 4), (16, 2)),
    ("lstm_backward", "workspace", (4, 20), (5, 20)),
    ("gru_forward", "workspace", (5, 20), (5, 16)),
    ("gru_backward", "grad_b_hh", (4,), (12,)),
]


@pytest.mark.parametrize("entry,name,shape,expected", WRONG_SHAPES)
def test_wrong_shapes_are_refused_before_any_launch(monkeypatch, entry, name, shape, expected):
    refused_before_any_launch(monkeypatch, entry, name, lambda valid: zeros(*shape), ValueError,
                              re.escape(f"Expected {name} of shape {expected}, got {shape}"))


def on_host(a):
    return backend.ARRAYS.to_host(a)


def in_float64(a):
    return backend.ARRAYS.asarray(a, "float64")


def strided(a):
    """The same shape, every other column of a wider array (not C-contiguous)."""
    rows, columns = a.shape
    return zeros(rows, 2 * columns)[:, ::2]


WRONG_ARRAYS = [      # (entry, argument, what it becomes, error, message)
    ("lstm_forward", "c_n", on_host, TypeError, "Expected c_n to be a CUDA device array"),
    ("lstm_forward", "h0", in_float64, TypeError, "Expected h0 of dtype float32"),
    ("lstm_forward", "workspace", strided, ValueError, "Expected workspace to be C-contiguous"),
    ("lstm_backward", "grad_c0", strided, ValueError, "Expected grad_c0 to be C-contiguous"),
    ("gru_backward", "grad_x", strided, ValueError, "Expected grad_x to be C-contiguous"),
    ("gru_backward", "workspace", in_float64, TypeError, "Expected workspace of dtype float32"),
]


@pytest.mark.parametrize("entry,name,replacement,error,message", WRONG_ARRAYS)
def test_wrong_arrays_are_refused_before_any_launch(monkeypatch, entry, name, replacement, error,
                                                    message):
    refused_before_any_launch(monkeypatch, entry, name, replacement, error, message)


def shaped(*shape):
    return lambda valid: zeros(*shape)


def absent(valid):
    return None


WRONG_LAYERS = [      # (entry, argument, what it becomes, message): weights, pairs, steps
    ("lstm_forward", "w_hh", shaped(15, 2), r"w_hh of shape \(4H, P\), got \(15, 2\)"),
    ("lstm_forward", "w_hr", absent, r"w_hh of shape \(4H, H\), got \(16, 2\)"),  # P != H
    ("lstm_forward", "w_ih", shaped(12, 3), r"w_ih of shape \(16, I\), got \(12, 3\)"),
    ("gru_forward", "w_hh", shaped(12, 5), r"w_hh of shape \(3H, H\), got \(12, 5\)"),
    ("lstm_backward", "grad_w_hr", absent, "w_hr and grad_w_hr both arrays or both None"),
    ("gru_forward", "b_hh", absent, "b_ih and b_hh both arrays or both None"),
    ("gru_backward", "batch_sizes", lambda valid: valid[::-1].copy(), "non-increasing"),
]


@pytest.mark.parametrize("entry,name,replacement,message", WRONG_LAYERS)
def test_inconsistent_layers_are_refused_before_any_launch(monkeypatch, entry, name,
                                                           replacement, message):
    refused_before_any_launch(monkeypatch, entry, name, replacement, ValueError, message)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_valid_boundary_arguments_run(cell):
    """The arguments the refusals above start from are accepted (so each refusal is about its
    one bad argument)."""
    values = valid_arguments(cell)
    call_entry(getattr(backend, f"{cell}_forward"), values)
    call_entry(getattr(backend, f"{cell}_backward"), values)


# ----------------------------------------------------------------------------- real numba
# 9 kernels per dtype: LSTM's o * tanh(c), and LSTM's and GRU's forward and backward time loops
# of both strategies
(sm90_compile, sm90_report, test_every_kernel_types_and_lowers_for_sm90,
 test_every_kernel_compiles_to_ptx_for_sm90, test_kernel_index_arithmetic_is_64_bit) = \
    cuda_sm90.module_checks("gated", expected=9)
