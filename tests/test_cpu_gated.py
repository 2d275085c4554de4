"""The compiled LSTM and GRU kernels (fastrnn._rnn_cpu) at the backend contract's level,
against the NumPy reference (backends/reference.py, itself checked against torch by
test_gated_reference.py), on packed batches built here: equal and ragged lengths, both
directions, with and without biases, LSTM with and without proj_size, output in one half of a
bidirectional buffer, accumulate_x, float32 and float64, every path a product can take, every
step-kernel variant and two step threads; a long float32 sequence. The bad buffers a direct
caller could pass are in test_cpu_buffers.py.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn.backends import cpu, reference
from gated_problems import gated_problem, run_gated
from helpers import assert_close
from packed_problems import (LENGTHS, PATHS, STEP_KERNELS,  # noqa: F401 - the fixtures
                             assert_results_agree, step_kernel, tuning)

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason="the compiled CPU kernels are not built")
kernels = cpu._rnn_cpu

SIZES = [(3, 5), (16, 64), (9, 33), (0, 8)]   # odd, whole panels, partial panel, no input
# (cell, proj_size): LSTM plain and projected to fewer units, GRU
CELLS = {"lstm": ("lstm", None), "lstm proj": ("lstm", 3), "gru": ("gru", None)}


def assert_backends_agree(cell, problem, reverse, accumulate_x=False):
    """run_gated writes out into one half of [N, 2P] buffers (the other half must keep its
    filling), starts the parameter gradients at 1 (added to) and grad_x at 2 or NaN."""
    expected = run_gated(reference, cell, problem, reverse, accumulate_x)
    actual = run_gated(cpu, cell, problem, reverse, accumulate_x)
    assert_results_agree(actual, expected, problem["x"].dtype.name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("I,H", SIZES)
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_match_the_reference(cell, lengths, I, H, reverse, bias, dtype):
    cell, proj_size = CELLS[cell]
    rng = np.random.default_rng(len(lengths) * 100 + I)
    problem = gated_problem(rng, cell, lengths, I, H, dtype, bias, proj_size)
    assert_backends_agree(cell, problem, reverse, accumulate_x=reverse)


@pytest.mark.parametrize("cell", CELLS)
def test_a_contiguous_output_gets_the_same_rows(cell):
    """out as a plain C-contiguous [N, P] array (run_gated writes half of [N, 2P])."""
    cell, proj_size = CELLS[cell]
    problem = gated_problem(np.random.default_rng(4), cell, [5, 5, 2], 6, 32, "float32",
                            P=proj_size)
    (N, _), (B, P) = problem["x"].shape, problem["h0"].shape
    H = problem["w_ih"].shape[0] // (4 if cell == "lstm" else 3)
    expected = run_gated(cpu, cell, problem, True)["out"][:, P:]
    values = {name: value for name, value in problem.items() if not name.startswith("grad")}
    values.update(reverse=True, out=np.full((N, P), np.nan, np.float32),
                  h_n=np.empty((B, P), np.float32),
                  workspace=np.empty((N, (5 if cell == "lstm" else 4) * H), np.float32))
    if cell == "lstm":
        values["c_n"] = np.empty((B, H), np.float32)
    getattr(cpu, f"{cell}_forward")(**values)
    np.testing.assert_array_equal(values["out"], expected)


# ----------------------------------------------------------------------------- every path
PATH_CASES = [(lengths, reverse) for lengths in (LENGTHS["equal"], LENGTHS["ties and ones"])
              for reverse in (False, True)]


def assert_paths_agree(cell, lengths, reverse, dtype):
    cell, proj_size = CELLS[cell]
    rng = np.random.default_rng(11)
    for I, H in [(16, 64), (9, 33)]:
        problem = gated_problem(rng, cell, lengths, I, H, dtype, P=proj_size)
        assert_backends_agree(cell, problem, reverse, accumulate_x=True)


@pytest.mark.parametrize("lengths,reverse", PATH_CASES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("step_kernel", STEP_KERNELS, indirect=True)
@pytest.mark.parametrize("tuning", PATHS, indirect=True)
def test_every_float32_path_and_variant_matches_the_reference(tuning, step_kernel, cell,
                                                              lengths, reverse):
    """Every tuning path (packed, in place, BLAS, split BLAS, own products, two step threads)
    on every step-kernel variant this CPU runs: the gate passes run on the variant's vectors."""
    assert kernels.step_kernel_name() == step_kernel
    assert_paths_agree(cell, lengths, reverse, "float32")


@pytest.mark.parametrize("lengths,reverse", PATH_CASES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("tuning", PATHS, indirect=True)
def test_every_float64_path_matches_the_reference(tuning, cell, lengths, reverse):
    """float64 runs no step-kernel variant: its products are the BLAS's, its passes scalar."""
    assert_paths_agree(cell, lengths, reverse, "float64")


def test_one_step_kernel_choice_serves_every_cell():
    """cpu.use_step_kernel switches the variant of the one compiled module that holds every
    cell; an unknown name changes nothing."""
    previous = cpu.use_step_kernel("generic")
    try:
        assert cpu.step_kernel_name() == kernels.step_kernel_name() == "generic"
        for cell in ("lstm", "gru"):
            problem = gated_problem(np.random.default_rng(2), cell, [3, 2], 5, 20, "float32")
            assert_backends_agree(cell, problem, True)
        with pytest.raises(ValueError, match="cannot run on this CPU"):
            cpu.use_step_kernel("sse9")
        assert cpu.step_kernel_name() == "generic"
    finally:
        cpu.use_step_kernel(previous)


def test_a_big_step_is_shared_by_two_threads_with_the_same_numbers():
    """At the default thresholds a step of B * 4H * H >= 2^21 multiply-adds is shared by the
    team (products by panels, gate passes by units): B = 32, H = 128."""
    problem = gated_problem(np.random.default_rng(6), "lstm", [3] * 32, 8, 128, "float32")
    with fastrnn.num_threads(2):
        assert kernels.planned_step_threads(32, 2 * 128) == 2     # 4H * H = (2H)^2
        assert_backends_agree("lstm", problem, True)


# ----------------------------------------------------------------------------- long sequence
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_long_float32_sequence_errors_do_not_grow(cell):
    """float32 kernels against the float64 reference over 3000 steps: the vectorised sigmoid
    and tanh (and the state carried through them) must not let the error grow with time."""
    lengths = [3000, 2999, 1500]
    problem = gated_problem(np.random.default_rng(9), cell, lengths, 8, 24, "float32")
    problem["w_hh"] *= np.float32(0.5)     # a contracting recurrence: float64 is the truth
    double = {name: value if value is None or name == "batch_sizes" else
              value.astype(np.float64) for name, value in problem.items()}
    actual = run_gated(cpu, cell, problem, False)
    expected = run_gated(reference, cell, double, False)
    errors = np.abs(actual["out"] - expected["out"]).max(axis=1)    # per packed row
    first, last = errors[:len(errors) // 10].max(), errors[-len(errors) // 10:].max()
    assert errors.max() < 2e-6, errors.max()
    assert last < 4 * first + 1e-7, (first, last)
    for name in ("grad_x", "grad_h0", "grad_w_ih", "grad_w_hh"):
        assert_close(actual[name], expected[name].astype(np.float32), "float32", rtol=1e-4)


# ----------------------------------------------------------------------------- sizes
def test_zero_hidden_units_write_zero_outputs():
    """H = 0 with a projection: the projected output of no units is 0 (as the reference)."""
    problem = gated_problem(np.random.default_rng(3), "lstm", [3, 1], 4, 0, "float64", P=2)
    expected = run_gated(reference, "lstm", problem, True)
    actual = run_gated(cpu, "lstm", problem, True)
    assert_results_agree(actual, expected, "float64")


def test_more_than_2_to_the_31_rows_of_zero_width():
    """N = 2**31 + 1 tokens with zero-width features: the sizes must be taken as 64-bit."""
    N, B = 2 ** 31 + 1, 2 ** 30 + 1
    f32 = np.float32
    empty = lambda rows: np.empty((rows, 0), f32)
    batch_sizes = np.array([B, B - 1], np.int64)
    kernels.gru_forward_cpu(empty(N), empty(B), empty(0), empty(0), None, None, batch_sizes,
                            True, empty(N), empty(B), empty(N))
    kernels.lstm_backward_cpu(empty(N), empty(B), empty(B), empty(0), empty(0), None,
                              batch_sizes, False, empty(N), empty(N), empty(N), empty(B),
                              empty(B), empty(N), False, empty(B), empty(B), empty(0),
                              empty(0), None, None, None)
