"""Packed problems for the kernel tests: one layer-direction at the backend contract's level.

The tests build the packed layout themselves (sorted lengths -> batch_sizes, x [N, I], ...),
so that the compiled kernels are compared with backends/reference.py directly, without the
layers above them. Also the fixtures that run a test on one step-kernel variant and on one
tuning path of the compiled module (every cell's kernel tests use them).
"""
from dataclasses import dataclass

import numpy as np
import pytest

from helpers import assert_close

STEP_KERNELS = ["avx512", "avx2", "generic"]

LENGTHS = {   # sorted lengths of the batches every cell's kernels are tested on
    "equal": [4, 4, 4],
    "ragged": [7, 4, 4, 2, 1],
    "one": [1],
    "ties and ones": [6, 6, 3, 3, 1, 1, 1],
    "staircase": list(range(1, 13)),
}

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
def step_kernel(request):
    """Runs a test with the step-kernel variant ``request.param`` (indirect parametrisation),
    if this CPU runs it; then back to the variant that ran before."""
    from fastrnn.backends import cpu
    try:
        previous = cpu._rnn_cpu.use_step_kernel(request.param)
    except ValueError as exc:
        pytest.skip(str(exc))
    yield request.param
    cpu._rnn_cpu.use_step_kernel(previous)


@pytest.fixture
def tuning(request):
    """Runs a test with one PATHS entry in force (and two BLAS threads for "two threads")."""
    import fastrnn
    from fastrnn.backends import cpu
    kernels = cpu._rnn_cpu
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


def batch_sizes_of(lengths):
    """batch_sizes [T] int64 of a batch with these lengths (any order)."""
    lengths = np.asarray(lengths)
    return np.array([(lengths > t).sum() for t in range(int(lengths.max()))], dtype=np.int64)


@dataclass
class Problem:
    x: np.ndarray            # [N, I]
    h0: np.ndarray           # [B, H]
    w_ih: np.ndarray         # [H, I]
    w_hh: np.ndarray         # [H, H]
    b_ih: object             # [H] or None
    b_hh: object             # [H] or None
    batch_sizes: np.ndarray  # [T]
    grad_out: np.ndarray     # [N, H]
    grad_hn: np.ndarray      # [B, H]

    @property
    def shape(self):
        (N, I), (B, H) = self.x.shape, self.h0.shape
        return N, I, B, H


def make_problem(rng, lengths, I, H, dtype, bias=True):
    batch_sizes = batch_sizes_of(lengths)
    N, B = int(batch_sizes.sum()), int(batch_sizes[0])

    def draw(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    return Problem(draw(N, I), draw(B, H, scale=0.5), draw(H, I, scale=1 / np.sqrt(max(I, 1))),
                   draw(H, H, scale=1 / np.sqrt(H)), draw(H) if bias else None,
                   draw(H) if bias else None, batch_sizes, draw(N, H), draw(B, H))


def run_layer(backend, p, reverse, relu, half_of_two=False, accumulate_x=False):
    """Forward and backward of one layer-direction; returns {name: result}.

    half_of_two: out and grad_out are the second half of [N, 2H] buffers (a bidirectional
    layer's), whose first half must stay untouched (NaN). Parameter gradients start at 1 to
    check they are added to; grad_x starts at 2 (accumulate_x) or NaN (it must be written).
    """
    N, I, B, H = p.shape
    dtype = p.x.dtype
    out_buffer = np.full((N, 2 * H if half_of_two else H), np.nan, dtype)
    out = out_buffer[:, H:] if half_of_two else out_buffer
    h_n = np.full((B, H), np.nan, dtype)
    backend.rnn_forward(p.x, p.h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, p.batch_sizes, reverse, relu,
                        out, h_n)
    grad_out = p.grad_out
    if half_of_two:
        grad_out = np.zeros((N, 2 * H), dtype)
        grad_out[:, H:] = p.grad_out
        grad_out = grad_out[:, H:]
    grad_x = np.full((N, I), 2.0 if accumulate_x else np.nan, dtype)
    grad_h0 = np.full((B, H), np.nan, dtype)
    grads = [np.ones((H, I), dtype), np.ones((H, H), dtype)]
    grads += [np.ones(H, dtype), np.ones(H, dtype)] if p.b_ih is not None else [None, None]
    backend.rnn_backward(p.x, p.h0, p.w_ih, p.w_hh, p.batch_sizes, reverse, relu, out, grad_out,
                         p.grad_hn, grad_x, accumulate_x, grad_h0, *grads)
    results = {"out": out.copy(), "h_n": h_n, "grad_x": grad_x, "grad_h0": grad_h0,
               "grad_w_ih": grads[0], "grad_w_hh": grads[1]}
    if p.b_ih is not None:
        results.update(grad_b_ih=grads[2], grad_b_hh=grads[3])
    if half_of_two:
        results["untouched half"] = out_buffer[:, :H].copy()
    return results


def assert_results_agree(actual, expected, dtype):
    """{name: result} of run_layer (or gated_problems.run_gated) from two backends agree to the
    dtype's tolerance, every result finite; "untouched half" must still be all NaN."""
    assert actual.keys() == expected.keys()
    for name in expected:
        if name == "untouched half":
            assert np.isnan(actual[name]).all(), "the other half of the output was written"
        else:
            assert np.isfinite(actual[name]).all(), name
            assert_close(actual[name], expected[name], dtype), name
