"""The compiled CPU kernels (fastrnn._rnn_cpu) at the backend contract's level, against the
NumPy reference (backends/reference.py), on packed batches built here: equal and ragged
lengths, both directions, tanh and relu, with and without biases, float32 and float64, every
path a product can take (packed panels, W in place, the BLAS, BLAS products split where a
dimension passes a limit, steps shared by two threads) and every step-kernel variant; then
every bad buffer a direct caller could pass, which must be a clean exception.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn.backends import cpu, reference
from helpers import assert_close
from packed_problems import (LENGTHS, PATHS, STEP_KERNELS,  # noqa: F401 - the fixtures
                             assert_results_agree, batch_sizes_of, make_problem, run_layer,
                             step_kernel, tuning)

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason="the compiled CPU kernels are not built")
kernels = cpu._rnn_cpu

SIZES = [(3, 5), (16, 64), (9, 33), (0, 8)]   # odd, in-place dW size, partial panel, no input


def assert_backends_agree(problem, reverse, relu, half_of_two=False, accumulate_x=False):
    expected = run_layer(reference, problem, reverse, relu, half_of_two, accumulate_x)
    actual = run_layer(cpu, problem, reverse, relu, half_of_two, accumulate_x)
    assert_results_agree(actual, expected, problem.x.dtype.name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("I,H", SIZES)
@pytest.mark.parametrize("lengths", LENGTHS.values(), ids=LENGTHS.keys())
def test_kernels_match_the_reference(lengths, I, H, reverse, relu, bias, dtype):
    rng = np.random.default_rng(len(lengths) * 100 + I)
    problem = make_problem(rng, lengths, I, H, dtype, bias)
    assert_backends_agree(problem, reverse, relu, half_of_two=True, accumulate_x=reverse)


# ----------------------------------------------------------------------------- every path
PATH_CASES = [(lengths, reverse, relu) for lengths in (LENGTHS["equal"], LENGTHS["ties and ones"])
              for reverse, relu in [(False, False), (True, True)]]


def assert_paths_agree(lengths, reverse, relu, dtype):
    rng = np.random.default_rng(11)
    for I, H in [(16, 64), (9, 33)]:
        problem = make_problem(rng, lengths, I, H, dtype)
        assert_backends_agree(problem, reverse, relu, half_of_two=True, accumulate_x=True)


@pytest.mark.parametrize("lengths,reverse,relu", PATH_CASES)
@pytest.mark.parametrize("step_kernel", STEP_KERNELS, indirect=True)
@pytest.mark.parametrize("tuning", PATHS, indirect=True)
def test_every_float32_path_and_variant_matches_the_reference(tuning, step_kernel, lengths,
                                                              reverse, relu):
    assert kernels.step_kernel_name() == step_kernel
    assert_paths_agree(lengths, reverse, relu, "float32")


@pytest.mark.parametrize("lengths,reverse,relu", PATH_CASES)
@pytest.mark.parametrize("tuning", PATHS, indirect=True)
def test_every_float64_path_matches_the_reference(tuning, lengths, reverse, relu):
    """float64 runs no step-kernel variant: its products are the BLAS's."""
    assert_paths_agree(lengths, reverse, relu, "float64")


def test_tuning_is_checked_and_restorable():
    before = kernels.get_tuning()
    with pytest.raises(ValueError, match="unknown tuning fields"):
        kernels.set_tuning(speed=11)
    with pytest.raises(ValueError, match="blas_max_dim must be in"):
        kernels.set_tuning(blas_max_dim=0)
    previous = kernels.set_tuning(direct_max_rows=7)
    assert previous == {"direct_max_rows": before["direct_max_rows"]}
    assert kernels.get_tuning()["direct_max_rows"] == 7
    kernels.set_tuning(**previous)
    assert kernels.get_tuning() == before


def test_small_steps_stay_on_one_thread():
    with fastrnn.num_threads(2):
        assert kernels.planned_step_threads(16, 64) == 1
        assert kernels.planned_step_threads(64, 1760) == 2
    with fastrnn.num_threads(1):
        assert kernels.planned_step_threads(64, 1760) == 1


# ----------------------------------------------------------------------------- 64-bit sizes
def test_more_than_2_to_the_31_rows_of_zero_width():
    """N = 2**31 + 1 tokens with zero-width features fit in no memory at all; the kernels must
    take the sizes as 64-bit and return, not wrap around to negative sizes."""
    N, B = 2 ** 31 + 1, 2 ** 30 + 1
    f32 = np.float32
    batch_sizes = np.array([B, B - 1], np.int64)
    zero_width = dict(x=np.empty((N, 0), f32), h0=np.empty((B, 0), f32),
                      w_ih=np.empty((0, 0), f32), w_hh=np.empty((0, 0), f32))
    kernels.rnn_forward_cpu(**zero_width, b_ih=None, b_hh=None, batch_sizes=batch_sizes,
                            reverse=True, relu=False, out=np.empty((N, 0), f32),
                            h_n=np.empty((B, 0), f32))
    kernels.rnn_backward_cpu(**zero_width, batch_sizes=batch_sizes, reverse=False, relu=False,
                             out=np.empty((N, 0), f32), grad_out=np.empty((N, 0), f32),
                             grad_hn=np.empty((B, 0), f32), grad_x=np.empty((N, 0), f32),
                             accumulate_x=False, grad_h0=np.empty((B, 0), f32),
                             grad_w_ih=np.empty((0, 0), f32), grad_w_hh=np.empty((0, 0), f32),
                             grad_b_ih=None, grad_b_hh=None)


def test_blas_products_split_at_the_int_limit_give_the_same_numbers():
    """The BLAS takes int sizes; products with a dimension past the limit are split. The limit
    is lowered to 2 here (real sizes past 2**31 need gigabytes) and every product forced to
    the BLAS, so that every dimension of every product is split."""
    rng = np.random.default_rng(5)
    problem = make_problem(rng, [5, 5, 3, 2, 1], 7, 6, "float64")
    expected = run_layer(reference, problem, True, False)
    previous = kernels.set_tuning(blas_max_dim=2)
    try:
        actual = run_layer(cpu, problem, True, False)
    finally:
        kernels.set_tuning(**previous)
    for name in expected:
        assert_close(actual[name], expected[name], "float64"), name


def test_equal_lengths_are_the_time_major_batch():
    """batch_sizes = [B] * T is the [T, B, I] batch itself: same numbers either way."""
    rng = np.random.default_rng(8)
    lengths = [6] * 4
    assert list(batch_sizes_of(lengths)) == [4] * 6
    problem = make_problem(rng, lengths, 5, 32, "float32")
    assert_backends_agree(problem, False, False)
    assert_backends_agree(problem, True, False)
