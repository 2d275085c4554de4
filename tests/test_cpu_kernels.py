"""The compiled CPU kernels (fastrnn._rnn_cpu) at the backend contract's level, against the
NumPy reference (backends/reference.py), on packed batches built here: equal and ragged
lengths, both directions, tanh and relu, with and without biases, float32 and float64, every
path a product can take (packed panels, W in place, the BLAS, BLAS products split where a
dimension passes a limit, steps shared by two threads) and every step-kernel variant; then
every bad buffer a direct caller could pass, which must be a clean exception.
"""
import itertools

import numpy as np
import pytest

import fastrnn
from fastrnn.backends import cpu, reference
from helpers import assert_close
from packed_problems import (STEP_KERNELS, batch_sizes_of, make_problem, run_layer,
                             step_kernel)  # noqa: F401 - step_kernel is a fixture

pytestmark = pytest.mark.skipif(cpu.unavailable_reason() is not None,
                                reason="the compiled CPU kernels are not built")
kernels = cpu._rnn_cpu

LENGTHS = {
    "equal": [4, 4, 4],
    "ragged": [7, 4, 4, 2, 1],
    "one": [1],
    "ties and ones": [6, 6, 3, 3, 1, 1, 1],
    "staircase": list(range(1, 13)),
}
SIZES = [(3, 5), (16, 64), (9, 33), (0, 8)]   # odd, in-place dW size, partial panel, no input


def assert_backends_agree(problem, reverse, relu, half_of_two=False, accumulate_x=False):
    expected = run_layer(reference, problem, reverse, relu, half_of_two, accumulate_x)
    actual = run_layer(cpu, problem, reverse, relu, half_of_two, accumulate_x)
    dtype = problem.x.dtype.name
    assert actual.keys() == expected.keys()
    for name in expected:
        if name == "untouched half":
            assert np.isnan(actual[name]).all(), "the other half of [N, 2H] was written"
        else:
            assert np.isfinite(actual[name]).all(), name
            assert_close(actual[name], expected[name], dtype), name


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
PATHS = {   # tuning of the compiled module -> which code every product takes
    "default": {},
    "always packed": dict(direct_max_rows=0, in_place_max_rows=0),
    "W in place": dict(direct_max_rows=10 ** 9, in_place_max_rows=10 ** 9),
    "BLAS products": dict(own_max_macs=0, rank_k_max_output=0),
    "BLAS split in pieces of 3": dict(own_max_macs=0, rank_k_max_output=0, blas_max_dim=3),
    "own products only": dict(own_max_macs=1e18, rank_k_max_output=10 ** 9),
    "two threads": dict(step_threading_min_macs=0, product_threading_min_macs=0),
}


@pytest.fixture
def tuning(request):
    """Runs a test with one PATHS entry in force (and two BLAS threads for "two threads")."""
    previous = kernels.set_tuning(**PATHS[request.param])
    try:
        if request.param == "two threads":
            with fastrnn.num_threads(2):
                assert kernels.planned_step_threads(4, 64) == 2
                yield request.param
        else:
            yield request.param
    finally:
        kernels.set_tuning(**previous)


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


# ----------------------------------------------------------------------------- bad buffers
def forward_arguments(dtype="float32", lengths=(3, 2, 2), I=4, H=5):
    """Valid arguments of rnn_forward_cpu, by name, for a small ragged batch."""
    p = make_problem(np.random.default_rng(0), list(lengths), I, H, dtype)
    N, _, B, _ = p.shape
    return dict(x=p.x, h0=p.h0, w_ih=p.w_ih, w_hh=p.w_hh, b_ih=p.b_ih, b_hh=p.b_hh,
                batch_sizes=p.batch_sizes, reverse=False, relu=False,
                out=np.empty((N, H), dtype), h_n=np.empty((B, H), dtype))


def backward_arguments(dtype="float32", lengths=(3, 2, 2), I=4, H=5):
    """Valid arguments of rnn_backward_cpu, by name, after a forward call on them."""
    f = forward_arguments(dtype, lengths, I, H)
    kernels.rnn_forward_cpu(**f)
    N, B = f["x"].shape[0], f["h0"].shape[0]
    return dict(x=f["x"], h0=f["h0"], w_ih=f["w_ih"], w_hh=f["w_hh"],
                batch_sizes=f["batch_sizes"], reverse=False, relu=False, out=f["out"],
                grad_out=np.ones((N, H), dtype), grad_hn=np.ones((B, H), dtype),
                grad_x=np.empty((N, I), dtype), accumulate_x=False,
                grad_h0=np.empty((B, H), dtype), grad_w_ih=np.zeros((H, I), dtype),
                grad_w_hh=np.zeros((H, H), dtype), grad_b_ih=np.zeros(H, dtype),
                grad_b_hh=np.zeros(H, dtype))


def byte_swapped(a):
    return a.astype(a.dtype.newbyteorder())


def misaligned(a):
    raw = np.zeros(a.nbytes + 1, np.uint8)
    view = raw[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def broadcast_rows(a):
    """The same shape, every row the same memory (row stride 0)."""
    return np.broadcast_to(a[:1], a.shape)


def every_other_column(a):
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def padded_rows(a):
    """Rows evenly spaced with a gap: fine where the contract allows it, not where it wants
    C-contiguous rows."""
    wide = np.zeros((a.shape[0], a.shape[1] + 3), a.dtype)
    wide[:, :a.shape[1]] = a
    return wide[:, :a.shape[1]]


def transposed_copy(a):
    return np.asfortranarray(a) if a.ndim == 2 and min(a.shape) > 1 else a


def call_with(entry, arguments, name, change):
    arguments = dict(arguments)
    arguments[name] = change(arguments[name])
    getattr(kernels, entry)(**arguments)


FLOAT_ARRAYS = {"rnn_forward_cpu": ["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh", "out", "h_n"],
                "rnn_backward_cpu": ["x", "h0", "w_ih", "w_hh", "out", "grad_out", "grad_hn",
                                     "grad_x", "grad_h0", "grad_w_ih", "grad_w_hh", "grad_b_ih",
                                     "grad_b_hh"]}
WRITTEN = {"rnn_forward_cpu": {"out", "h_n"},
           "rnn_backward_cpu": {"grad_x", "grad_h0", "grad_w_ih", "grad_w_hh", "grad_b_ih",
                                "grad_b_hh"}}
ROWS_MAY_BE_SPACED = {"out", "grad_out"}
ENTRIES = {"rnn_forward_cpu": forward_arguments, "rnn_backward_cpu": backward_arguments}
CASES = [(entry, name) for entry, names in FLOAT_ARRAYS.items() for name in names]


@pytest.mark.parametrize("entry,name", CASES)
@pytest.mark.parametrize("bad,change,error,words", [
    ("other dtype", lambda a: a.astype(np.float64), TypeError, "must be an array of float32"),
    ("integers", lambda a: a.astype(np.int32), TypeError, "must be an array of float32"),
    ("a list", lambda a: a.tolist(), TypeError, "must be a NumPy array of float32.*got list"),
    ("byte-swapped", byte_swapped, ValueError, "must be in the machine's byte order"),
    ("misaligned", misaligned, ValueError, "must be aligned"),
    ("one row more", lambda a: np.concatenate([a, a[:1]]), ValueError, "have shape"),
    ("an extra axis", lambda a: a[None], ValueError, "-D"),
    ("strided last axis", every_other_column, ValueError, "contiguous last axis"),
])
def test_bad_float_buffers_are_refused(entry, name, bad, change, error, words):
    arguments = ENTRIES[entry]()
    if name in ("x", "h0") and bad == "one row more":
        words = "batch_sizes"                # x and h0 fix N and B, which batch_sizes contradicts
    if name == "x" and bad in ("other dtype", "integers"):
        words = "float32 or float64" if bad == "integers" else "must be an array of float64"
    with pytest.raises(error, match=words):
        call_with(entry, arguments, name, change)


@pytest.mark.parametrize("entry,name", [c for c in CASES if c[1] in WRITTEN[c[0]]])
def test_read_only_outputs_are_refused(entry, name):
    with pytest.raises(ValueError, match=f"{name} is read-only"):
        call_with(entry, ENTRIES[entry](), name, read_only)


@pytest.mark.parametrize("entry,name", [c for c in CASES if c[1] not in ("b_ih", "b_hh",
                                                                         "grad_b_ih", "grad_b_hh")])
@pytest.mark.parametrize("change", [broadcast_rows, padded_rows, transposed_copy])
def test_row_layouts(entry, name, change):
    """Broadcast rows are refused everywhere; spaced rows only where the contract allows them
    (out, grad_out); a Fortran-ordered copy nowhere."""
    arguments = ENTRIES[entry]()
    if change is padded_rows and name in ROWS_MAY_BE_SPACED:
        call_with(entry, arguments, name, change)
        return
    if change is broadcast_rows and name in WRITTEN[entry]:
        with pytest.raises(ValueError):     # numpy marks broadcast views read-only
            call_with(entry, arguments, name, change)
        return
    with pytest.raises(ValueError, match="rows of|contiguous last axis"):
        call_with(entry, arguments, name, change)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("batch_sizes,words", [
    (np.array([3, 2, 2], np.int32), "must be an array of int64"),
    (np.array([3.0, 2.0, 2.0]), "must be an array of int64"),
    ([3, 2, 2], "must be a NumPy array of int64"),
    (np.array([[3, 2, 2]]), "1-D"),
    (np.array([3, 2, 3]), "non-increasing"),
    (np.array([3, 2, 0, 2]), "non-increasing and >= 1"),
    (np.array([3, 2, 1]), "must sum to the number of rows of x, N = 7, got 6"),
    (np.array([3, 3, 3]), "exceeds N"),
    (np.array([2, 2, 2, 1]), "batch_sizes\\[0\\] must be the batch size B"),
    (np.array([3, 1, 2, 1])[::2], "must be contiguous"),
    (np.array([3, 2, 2]).astype(">i8"), "byte order"),
    (np.zeros(0, np.int64), "batch_sizes is empty"),
])
def test_bad_batch_sizes_are_refused(entry, batch_sizes, words):
    arguments = ENTRIES[entry]()
    arguments["batch_sizes"] = batch_sizes
    with pytest.raises((ValueError, TypeError), match=words):
        getattr(kernels, entry)(**arguments)


def test_biases_come_in_pairs():
    arguments = forward_arguments()
    arguments["b_hh"] = None
    with pytest.raises(ValueError, match="both be arrays \\[H\\] or both be None"):
        kernels.rnn_forward_cpu(**arguments)


def test_errors_come_before_any_write():
    arguments = backward_arguments()
    arguments["grad_b_hh"] = np.zeros(4, np.float32)          # the last array checked is wrong
    before = {name: arguments[name].copy() for name in WRITTEN["rnn_backward_cpu"]}
    with pytest.raises(ValueError, match="grad_b_hh"):
        kernels.rnn_backward_cpu(**arguments)
    for name, value in before.items():
        np.testing.assert_array_equal(arguments[name], value, err_msg=name)


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


def test_huge_broadcast_input_is_refused_before_anything_runs():
    """A [2**33, I] input that is one row broadcast would make the kernels read 32 GB that
    does not exist; it is refused by its row stride."""
    arguments = forward_arguments()
    N = 2 ** 33
    arguments["x"] = np.broadcast_to(arguments["x"][:1], (N, 4))
    with pytest.raises(ValueError, match="x must have C-contiguous rows"):
        kernels.rnn_forward_cpu(**arguments)


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


def test_all_inputs_are_left_unchanged():
    arguments = backward_arguments(dtype="float64")
    inputs = {name: np.copy(arguments[name]) for name in
              ("x", "h0", "w_ih", "w_hh", "out", "grad_out", "grad_hn", "batch_sizes")}
    kernels.rnn_backward_cpu(**arguments)
    for name, value in inputs.items():
        np.testing.assert_array_equal(arguments[name], value, err_msg=name)


@pytest.mark.parametrize("combination", list(itertools.product([False, True], repeat=2)))
def test_biases_gradients_may_be_missing(combination):
    """grad_b_ih / grad_b_hh may each be None (a caller that does not want one)."""
    arguments = backward_arguments()
    wanted = {}
    for name, keep in zip(("grad_b_ih", "grad_b_hh"), combination):
        if not keep:
            arguments[name] = None
        else:
            wanted[name] = arguments[name]
    kernels.rnn_backward_cpu(**arguments)
    reference_arguments = backward_arguments()
    reference.rnn_backward(**{k: v for k, v in reference_arguments.items()})
    for name, value in wanted.items():
        assert_close(value, reference_arguments[name], "float32")
