"""Packed LSTM and GRU problems for the kernel tests: one layer-direction at the backend
contract's level (as packed_problems.py does for the Elman cell), run through any backend
module that has lstm_forward/lstm_backward/gru_forward/gru_backward.
"""
from dataclasses import dataclass

import numpy as np

from packed_problems import batch_sizes_of

GATES = {"lstm": 4, "gru": 3}


@dataclass
class GatedProblem:
    cell: str                # "lstm" or "gru"
    x: np.ndarray            # [N, I]
    h0: np.ndarray           # [B, P]
    c0: object               # [B, H] (LSTM) or None
    w_ih: np.ndarray         # [G*H, I]
    w_hh: np.ndarray         # [G*H, P]
    b_ih: object             # [G*H] or None
    b_hh: object             # [G*H] or None
    w_hr: object             # [P, H] (LSTM projection) or None
    batch_sizes: np.ndarray  # [T]
    grad_out: np.ndarray     # [N, P]
    grad_hn: np.ndarray      # [B, P]
    grad_cn: object          # [B, H] (LSTM) or None

    @property
    def sizes(self):
        """N, I, B, H, P."""
        (N, I), (B, P) = self.x.shape, self.h0.shape
        return N, I, B, self.w_ih.shape[0] // GATES[self.cell], P


def make_gated_problem(rng, cell, lengths, I, H, dtype, bias=True, proj_size=0,
                       recurrent_scale=1.0):
    """Random inputs, weights at torch's scale (recurrent ones times recurrent_scale) and
    output gradients for a batch of these lengths."""
    batch_sizes = batch_sizes_of(lengths)
    N, B, G = int(batch_sizes.sum()), int(batch_sizes[0]), GATES[cell]
    P = proj_size or H
    lstm = cell == "lstm"

    def draw(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    return GatedProblem(
        cell, draw(N, I), draw(B, P, scale=0.5), draw(B, H, scale=0.5) if lstm else None,
        draw(G * H, I, scale=1 / np.sqrt(max(I, 1))),
        draw(G * H, P, scale=recurrent_scale / np.sqrt(max(P, 1))),
        draw(G * H) if bias else None, draw(G * H) if bias else None,
        draw(P, H, scale=1 / np.sqrt(max(H, 1))) if proj_size else None, batch_sizes, draw(N, P),
        draw(B, P), draw(B, H) if lstm else None)


def allocate_results(p, half_of_two, accumulate_x):
    """The buffers a forward and backward write: out (in the second half of [N, 2P] buffers
    for half_of_two, the first half NaN), final states and workspace NaN (they must be
    written), grad_x 2 (accumulate_x: added to) or NaN, parameter gradients 1 (added to)."""
    N, I, B, H, P = p.sizes
    dtype, G = p.x.dtype, GATES[p.cell]
    nan = lambda *shape: np.full(shape, np.nan, dtype)
    buffers = dict(out_buffer=nan(N, 2 * P if half_of_two else P), h_n=nan(B, P),
                   workspace=nan(N, (G + 1) * H), grad_x=np.full((N, I), 2.0, dtype)
                   if accumulate_x else nan(N, I), grad_h0=nan(B, P),
                   grad_w_ih=np.ones((G * H, I), dtype), grad_w_hh=np.ones((G * H, P), dtype),
                   grad_b_ih=None if p.b_ih is None else np.ones(G * H, dtype),
                   grad_b_hh=None if p.b_ih is None else np.ones(G * H, dtype))
    buffers["out"] = buffers["out_buffer"][:, P:] if half_of_two else buffers["out_buffer"]
    grad_out = p.grad_out
    if half_of_two:
        grad_out = np.zeros((N, 2 * P), dtype)
        grad_out[:, P:] = p.grad_out
        grad_out = grad_out[:, P:]
    buffers["grad_out"] = grad_out
    if p.cell == "lstm":
        buffers.update(c_n=nan(B, H), grad_c0=nan(B, H),
                       grad_w_hr=None if p.w_hr is None else np.ones(p.w_hr.shape, dtype))
    return buffers


def run_gated(backend, p, reverse, half_of_two=False, accumulate_x=False):
    """Forward and backward of one layer-direction through ``backend``; returns {name: result}
    (see allocate_results for the buffers' starting values)."""
    r = allocate_results(p, half_of_two, accumulate_x)
    parameter_grads = (r["grad_w_ih"], r["grad_w_hh"], r["grad_b_ih"], r["grad_b_hh"])
    if p.cell == "lstm":
        backend.lstm_forward(p.x, p.h0, p.c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, p.w_hr,
                             p.batch_sizes, reverse, r["out"], r["h_n"], r["c_n"],
                             r["workspace"])
        backend.lstm_backward(p.x, p.h0, p.c0, p.w_ih, p.w_hh, p.w_hr, p.batch_sizes, reverse,
                              r["out"], r["workspace"], r["grad_out"], p.grad_hn, p.grad_cn,
                              r["grad_x"], accumulate_x, r["grad_h0"], r["grad_c0"],
                              *parameter_grads, r["grad_w_hr"])
    else:
        backend.gru_forward(p.x, p.h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, p.batch_sizes, reverse,
                            r["out"], r["h_n"], r["workspace"])
        backend.gru_backward(p.x, p.h0, p.w_ih, p.w_hh, p.batch_sizes, reverse, r["out"],
                             r["workspace"], r["grad_out"], p.grad_hn, r["grad_x"],
                             accumulate_x, r["grad_h0"], *parameter_grads)
    results = {name: value for name, value in r.items()
               if value is not None and name not in ("out_buffer", "out", "grad_out")}
    results["out"] = r["out"].copy()
    if half_of_two:
        results["untouched half"] = r["out_buffer"][:, :p.sizes[4]].copy()
    return results
