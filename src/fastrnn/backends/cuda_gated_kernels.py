"""Numba CUDA time-loop kernels of the gated cells (LSTM, GRU); cuda.py checks their arguments
and launches them, as for the Elman cell's kernels in cuda_kernels.

Why they look like this. A gated layer-direction is the Elman recipe with wider products
(design.md "Gated cells"): cuda.py runs the input projection of all N packed rows as ONE GEMM
of width 4H (LSTM) / 3H (GRU) straight into the first columns of ``workspace``, and the weight
gradients after the loop as merged GEMMs; these kernels are the time loop between them, ONE
launch per layer-direction. The loop itself is cuda_kernels.time_loop, the Elman kernels' too
(the packed walk over ``schedule``, the "rows" and "grid" strategies and barriers, W_hh in
shared memory when cuda.py's plan says it fits, the chunked dot products): a cell adds only
its maths, as the ``finish`` functions that complete one output (b, j) after the product.

- Forward: the thread that owns output (b, j) takes the dots of h_{t-1}[b] with ALL the gate
  rows of unit j (LSTM i, f, g, o; GRU r, z, n), which cuda.py lays out unit by unit, so the
  gates of a step are ONE fused elementwise pass right after the step's product, with no
  barrier between them; it overwrites the pre-activations in ``workspace`` with the
  activations (and c_t, or GRU's h W_hn^T + b_hn) in the contract's layout. LSTM with
  proj_size: o * tanh(c) goes to an [N, H] scratch, and after a barrier the step's second
  product h_t = (o * tanh(c_t)) W_hr^T gives ``out``: two barriers per step instead of one.
- Backward: the product is dL/dh_{t-1} = dA_t W_hh (dA: dL/d the gates' pre-activations of
  the later step), one output per state unit; then the owner of (b, j) runs the cell's
  backward for unit j and writes dA of its row. With proj_size, dL/dh_t is stored, and after
  a barrier dL/d(o * tanh(c_t)) = dL/dh_t W_hr is a second product. What a unit carries to its
  own next visit, and nobody else reads, stays in the caller's output array: LSTM's
  dL/dc (grad_c0), GRU's direct path dh_t * z_t (grad_h0). Each ends as the gradient of the
  initial state when the sequence's walk is over.
- GRU's gradient rows are [d_r, d_z, d_n * r, d_n] ([N, 4H]): the first 3H columns are what
  reaches W_hh, b_hh and h_{t-1} (the dot reads them), columns 0:2H and 3H:4H what reaches
  W_ih, b_ih and x (b_hn sits inside r * (.), so d_n reaches the two sides differently).

The sigmoid and its derivative are activations.py's formulas, 0.5 + 0.5 tanh(a / 2) and
s (1 - s), written again here with the constants in the kernel's dtype: with the shared
definitions' Python constants Numba computes a float32 gate in float64, and NVVM does not fold
that back (it does for tanh's 1 - h*h). The sm_90 PTX test checks float32 kernels have no .f64.
"""
import functools

import numpy as np
from numba import cuda

from .cuda_kernels import tanh, tanh_grad, time_loop


@cuda.jit
def lstm_cell_outputs(workspace, cell_out):
    # workspace [N, 5H] (i, f, g, o, c); cell_out [N, H] written: o * tanh(c), what W_hr sees
    hidden = cell_out.shape[1]
    for e in range(cuda.grid(1), cell_out.shape[0] * hidden, cuda.gridsize(1)):
        row, j = e // hidden, e % hidden
        cell_out[row, j] = workspace[row, 3 * hidden + j] * tanh(workspace[row, 4 * hidden + j])


@functools.lru_cache(maxsize=None)
def _gate_functions(dtype):
    """(sigmoid, sigmoid_grad, tanh, tanh_grad) as device functions that stay in ``dtype``."""
    scalar = np.dtype(dtype).type
    half, one = scalar(0.5), scalar(1)

    @cuda.jit(device=True)
    def sigmoid_of(a):
        return half + half * scalar(tanh(half * a))

    @cuda.jit(device=True)
    def sigmoid_grad_of(s):
        return s * (one - s)

    @cuda.jit(device=True)
    def tanh_of(a):
        return scalar(tanh(a))

    @cuda.jit(device=True)
    def tanh_grad_of(h):
        return scalar(tanh_grad(h))

    return sigmoid_of, sigmoid_grad_of, tanh_of, tanh_grad_of


@functools.lru_cache(maxsize=None)
def lstm_kernels(dtype, grid_wide):
    """(forward, backward) LSTM time-loop kernels on cuda_kernels.time_loop; ``grid_wide`` and
    ``layout`` as for cuda_kernels.recurrent_kernels, the layout's last two entries being the
    projection's units per block and lanes (0 and 1 without proj_size)."""
    sigmoid, sigmoid_grad, tanh_, tanh_grad_ = _gate_functions(dtype)

    @cuda.jit(device=True)
    def finish_forward(cell, visit, b, j, dots):
        # unit j of row b: the gates from their pre-activations (workspace's x W_ih^T + b plus
        # dots = h_{t-1} W_hh^T), written back activated with c_t; then o * tanh(c_t) is h_t
        # (out), or what the projection takes (cell_out)
        workspace, c0, cell_out, out, h_n, c_n, projecting = cell
        (_, offset), (previous_size, previous_offset), (next_size, _) = visit
        row, hidden = offset + b, c0.shape[1]
        c_prev = (workspace[previous_offset + b, 4 * hidden + j] if b < previous_size
                  else c0[b, j])
        i = sigmoid(workspace[row, j] + dots[0])
        f = sigmoid(workspace[row, hidden + j] + dots[1])
        g = tanh_(workspace[row, 2 * hidden + j] + dots[2])
        o = sigmoid(workspace[row, 3 * hidden + j] + dots[3])
        c = f * c_prev + i * g
        workspace[row, j], workspace[row, hidden + j] = i, f
        workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j] = g, o
        workspace[row, 4 * hidden + j] = c
        m = o * tanh_(c)
        ends = b >= next_size                 # sequence b's last step in this walk
        if ends:
            c_n[b, j] = c
        if projecting:
            cell_out[row, j] = m
        else:
            out[row, j] = m
            if ends:
                h_n[b, j] = m

    @cuda.jit(device=True)
    def finish_projection(cell, visit, b, p, dots):
        # h_t = (o * tanh(c_t)) W_hr^T: output p of row b
        _, _, _, out, h_n, _, _ = cell
        (_, offset), _, (next_size, _) = visit
        out[offset + b, p] = dots[0]
        if b >= next_size:
            h_n[b, p] = dots[0]

    @cuda.jit(device=True)
    def cell_backward(cell, visit, b, j, grad_m):
        # unit j of row b, given dL/d(o * tanh(c_t)): dL/d the four pre-activations, and the
        # dL/dc carried to the earlier step in grad_c0 (it comes from grad_cn where b ends)
        workspace, c0, grad_cn, grad_gates, grad_c0 = cell[:5]
        (size, offset), (later_size, _), (earlier_size, earlier_offset) = visit
        row, hidden = offset + b, c0.shape[1]
        i, f = workspace[row, j], workspace[row, hidden + j]
        g, o = workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j]
        tanh_c = tanh_(workspace[row, 4 * hidden + j])
        c_prev = (workspace[earlier_offset + b, 4 * hidden + j] if b < earlier_size
                  else c0[b, j])
        grad_c = ((grad_c0[b, j] if b < later_size else grad_cn[b, j])
                  + grad_m * o * tanh_grad_(tanh_c))
        grad_gates[row, j] = grad_c * g * sigmoid_grad(i)
        grad_gates[row, hidden + j] = grad_c * c_prev * sigmoid_grad(f)
        grad_gates[row, 2 * hidden + j] = grad_c * i * tanh_grad_(g)
        grad_gates[row, 3 * hidden + j] = grad_m * tanh_c * sigmoid_grad(o)
        grad_c0[b, j] = grad_c * f

    @cuda.jit(device=True)
    def finish_backward(cell, visit, b, k, dots):
        # dL/dh_t = dL/dout_t + (dots = dA_{t+1} W_hh, or dL/dh_n where b ends); without a
        # projection h_t is o * tanh(c_t) (unit k is unit j), with one it is kept for the
        # projection's product; where b started at the later step, dL/dh_0 = dots
        grad_out, grad_hn, grad_h, grad_h0, projecting = cell[5:]
        (size, offset), (later_size, _), _ = visit
        if b < size:
            grad_h_k = grad_out[offset + b, k] + (dots[0] if b < later_size else grad_hn[b, k])
            if projecting:
                grad_h[offset + b, k] = grad_h_k
            else:
                cell_backward(cell, visit, b, k, grad_h_k)
        else:
            grad_h0[b, k] = dots[0]

    @cuda.jit(device=True)
    def finish_backward_projection(cell, visit, b, j, dots):
        cell_backward(cell, visit, b, j, dots[0])     # dots: dL/dh_t W_hr

    walk_forward = time_loop(dtype, 4, grid_wide, False, finish_forward, finish_projection)
    walk_backward = time_loop(dtype, 1, grid_wide, True, finish_backward,
                              finish_backward_projection)

    @cuda.jit
    def forward(h0, c0, w_gates, w_hr, workspace, cell_out, out, h_n, c_n, schedule, reverse,
                projecting, layout, weights_on_chip):
        # h0 [B, P]; c0 [B, H]; w_gates [H*4*P]: W_hh's rows unit by unit (i_j, f_j, g_j, o_j);
        # w_hr [P*H] row-major W_hr, read when projecting; workspace [N, 5H]: x W_ih^T + b in
        # columns :4H on entry, i, f, g, o, c_t on exit; cell_out [N, H] (projecting): the
        # o * tanh(c_t); out [N, P] (h_t), h_n [B, P], c_n [B, H] written;
        # schedule [2, T+1] int64 (cuda_kernels' module header)
        hidden, width = c0.shape[1], h0.shape[1]
        walk_forward(out, h0, w_gates, cell_out, w_hr, (hidden, width, width, hidden), schedule,
                     reverse, layout, weights_on_chip,
                     (workspace, c0, cell_out, out, h_n, c_n, projecting))

    @cuda.jit
    def backward(grad_out, workspace, c0, grad_hn, grad_cn, w_hh_t, w_hr_t, grad_gates, grad_h,
                 grad_h0, grad_c0, schedule, reverse, projecting, layout, weights_on_chip):
        # grad_out [N, P]; workspace [N, 5H] (the forward's); c0 [B, H]; grad_hn [B, P];
        # grad_cn [B, H]; w_hh_t [P*4H] row-major W_hh^T; w_hr_t [H*P] row-major W_hr^T, read
        # when projecting; grad_gates [N, 4H] written: dL/d the gates' pre-activations;
        # grad_h [N, P] written when projecting: dL/dh_t; grad_h0 [B, P], grad_c0 [B, H]
        # written
        width, hidden = grad_hn.shape[1], grad_cn.shape[1]
        walk_backward(grad_gates, grad_hn, w_hh_t, grad_h, w_hr_t,
                      (width, 4 * hidden, hidden, width), schedule, reverse, layout,
                      weights_on_chip, (workspace, c0, grad_cn, grad_gates, grad_c0, grad_out,
                                        grad_hn, grad_h, grad_h0, projecting))

    return forward, backward


@functools.lru_cache(maxsize=None)
def gru_kernels(dtype, grid_wide):
    """(forward, backward) GRU time-loop kernels on cuda_kernels.time_loop; ``grid_wide`` and
    ``layout`` as for cuda_kernels.recurrent_kernels."""
    scalar = np.dtype(dtype).type
    zero, one = scalar(0), scalar(1)
    sigmoid, sigmoid_grad, tanh_, tanh_grad_ = _gate_functions(dtype)

    @cuda.jit(device=True)
    def finish_forward(cell, visit, b, j, dots):
        # unit j of row b from the pre-activations (workspace: x W_ih^T + b_ih, + b_hh for r
        # and z) and dots = h_{t-1} W_hh^T; workspace gets r, z, n and h_{t-1} W_hn^T + b_hn
        h0, b_hn, has_bias, workspace, out, h_n = cell
        (_, offset), (previous_size, previous_offset), (next_size, _) = visit
        row, hidden = offset + b, out.shape[1]
        h_prev = out[previous_offset + b, j] if b < previous_size else h0[b, j]
        hidden_n = dots[2] + (b_hn[j] if has_bias else zero)
        r = sigmoid(workspace[row, j] + dots[0])
        z = sigmoid(workspace[row, hidden + j] + dots[1])
        n = tanh_(workspace[row, 2 * hidden + j] + r * hidden_n)
        h = (one - z) * n + z * h_prev
        workspace[row, j], workspace[row, hidden + j] = r, z
        workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j] = n, hidden_n
        out[row, j] = h
        if b >= next_size:                    # sequence b's last step in this walk
            h_n[b, j] = h

    @cuda.jit(device=True)
    def finish_backward(cell, visit, b, j, dots):
        # dL/dh_t = dL/dout_t + dots (dA_h of the later step W_hh) + dh_{t+1} z_{t+1} (carried
        # in grad_h0), or dL/dh_n where b ends; then the gates' gradients [d_r, d_z, d_n r,
        # d_n] and the carry dh_t z_t. Where b started at the later step: dL/dh_0.
        grad_out, out, h0, workspace, grad_hn, grad_gates, grad_h0 = cell
        (size, offset), (later_size, _), (earlier_size, earlier_offset) = visit
        if b >= size:
            grad_h0[b, j] = dots[0] + grad_h0[b, j]
            return
        row, hidden = offset + b, out.shape[1]
        grad_h = grad_out[row, j] + (dots[0] + grad_h0[b, j] if b < later_size
                                     else grad_hn[b, j])
        h_prev = out[earlier_offset + b, j] if b < earlier_size else h0[b, j]
        r, z = workspace[row, j], workspace[row, hidden + j]
        n, hidden_n = workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j]
        grad_n = grad_h * (one - z) * tanh_grad_(n)
        grad_gates[row, j] = grad_n * hidden_n * sigmoid_grad(r)
        grad_gates[row, hidden + j] = grad_h * (h_prev - n) * sigmoid_grad(z)
        grad_gates[row, 2 * hidden + j] = grad_n * r
        grad_gates[row, 3 * hidden + j] = grad_n
        grad_h0[b, j] = grad_h * z

    walk_forward = time_loop(dtype, 3, grid_wide, False, finish_forward)
    walk_backward = time_loop(dtype, 1, grid_wide, True, finish_backward)

    @cuda.jit
    def forward(h0, w_gates, b_hn, has_bias, workspace, out, h_n, schedule, reverse, layout,
                weights_on_chip):
        # h0 [B, H]; w_gates [H*3*H]: W_hh's rows unit by unit (r_j, z_j, n_j); b_hn [H], read
        # when has_bias; workspace [N, 4H]: x W_ih^T + b_ih (+ b_hh for r and z) in columns
        # :3H on entry, r, z, n, h_{t-1} W_hn^T + b_hn on exit; out [N, H] (h_t) and h_n [B, H]
        # written; schedule [2, T+1] int64
        hidden = out.shape[1]
        walk_forward(out, h0, w_gates, out, w_gates, (hidden, hidden, 0, 0), schedule, reverse,
                     layout, weights_on_chip, (h0, b_hn, has_bias, workspace, out, h_n))

    @cuda.jit
    def backward(grad_out, out, h0, workspace, grad_hn, w_hh_t, grad_gates, grad_h0, schedule,
                 reverse, layout, weights_on_chip):
        # grad_out, out [N, H] (out: the h_t); h0 [B, H]; workspace [N, 4H] (the forward's);
        # grad_hn [B, H]; w_hh_t [H*3H] row-major W_hh^T; grad_gates [N, 4H] written:
        # [d_r, d_z, d_n * r, d_n] (module header); grad_h0 [B, H] written
        hidden = out.shape[1]
        walk_backward(grad_gates, grad_hn, w_hh_t, grad_gates, w_hh_t, (hidden, 3 * hidden, 0, 0),
                      schedule, reverse, layout, weights_on_chip,
                      (grad_out, out, h0, workspace, grad_hn, grad_gates, grad_h0))

    return forward, backward
