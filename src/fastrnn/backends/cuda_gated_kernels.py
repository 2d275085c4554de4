"""Numba CUDA time-loop kernels of the gated cells (LSTM, GRU); cuda.py checks their arguments
and launches them, as for the Elman cell's kernels in cuda_kernels.

Why they look like this. A gated layer-direction is the Elman recipe with wider products
(design.md "Gated cells"): cuda.py runs the input projection of all N packed rows as ONE GEMM
of width 4H (LSTM) / 3H (GRU) straight into the first columns of ``workspace``, and the weight
gradients after the loop as merged GEMMs; these kernels are the time loop between them, ONE
launch per layer-direction, built from cuda_kernels.time_loop_pieces like the Elman kernels
(the same packed walk over ``schedule``, the same "rows" and "grid" strategies and barriers,
W_hh in shared memory when cuda.py's plan says it fits).

- Forward: the thread that owns output (b, j) takes the dots of h_{t-1}[b] with ALL the gate
  rows of unit j (LSTM i, f, g, o; GRU r, z, n), which cuda.py lays out unit by unit, so the
  gates of a step are ONE fused elementwise pass right after the step's product, with no
  barrier between them; it overwrites the pre-activations in ``workspace`` with the
  activations (and c_t, or GRU's h W_hn^T + b_hn) in the contract's layout. LSTM with
  proj_size: o * tanh(c) goes to a [B, H] scratch, and after a barrier the step's second
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
from numba import cuda, from_dtype

from .cuda_kernels import (block_barrier, chunk_count, grid_barrier, rows_below, slice_of, step_at,
                           tanh, tanh_grad, time_loop_pieces, unit_stride_on_chip)

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
    """(forward, backward) LSTM time-loop kernels; ``grid_wide`` and ``layout`` as for
    cuda_kernels.recurrent_kernels, the layout's last two entries being the projection's
    units per block and lanes (0 and 1 without proj_size)."""
    numba_dtype = from_dtype(np.dtype(dtype))
    barrier = grid_barrier if grid_wide else block_barrier
    gates_setup, _, gate_dots = time_loop_pieces(dtype, 4)
    single_setup, stage_units, single_dots = time_loop_pieces(dtype, 1)
    sigmoid, sigmoid_grad, tanh_, tanh_grad_ = _gate_functions(dtype)

    @cuda.jit(device=True)
    def stage_projection(weights, per_block, units, length, shared_start, on_chip):
        # weights [units*length]: the block's slice of the projection's units and their weight
        # rows, as block_setup gives the step product's (in shared memory after those, from
        # word shared_start)
        projections = slice_of(cuda.blockIdx.y, per_block, units)
        staged, stride = stage_units(weights, projections[0], projections[1], length,
                                     shared_start, on_chip)
        cuda.syncthreads()
        return projections, staged, stride

    @cuda.jit(device=True)
    def cell(workspace, row, j, hidden, dots, c_prev):
        # unit j of packed row ``row``: the gates from their pre-activations (workspace's
        # x W_ih^T + b plus dots = h_{t-1} W_hh^T), written back activated with c_t;
        # returns (c_t, o * tanh(c_t))
        i = sigmoid(workspace[row, j] + dots[0])
        f = sigmoid(workspace[row, hidden + j] + dots[1])
        g = tanh_(workspace[row, 2 * hidden + j] + dots[2])
        o = sigmoid(workspace[row, 3 * hidden + j] + dots[3])
        c = f * c_prev + i * g
        workspace[row, j], workspace[row, hidden + j] = i, f
        workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j] = g, o
        workspace[row, 4 * hidden + j] = c
        return c, o * tanh_(c)

    @cuda.jit(device=True)
    def cell_backward(workspace, row, j, hidden, grad_m, grad_c, c_prev, grad_gates):
        # unit j of packed row ``row`` given dL/d(o * tanh(c_t)) and the dL/dc_t carried from
        # the later step: writes dL/d of the four pre-activations; returns dL/dc_{t-1}
        i, f = workspace[row, j], workspace[row, hidden + j]
        g, o = workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j]
        tanh_c = tanh_(workspace[row, 4 * hidden + j])
        grad_c = grad_c + grad_m * o * tanh_grad_(tanh_c)
        grad_gates[row, j] = grad_c * g * sigmoid_grad(i)
        grad_gates[row, hidden + j] = grad_c * c_prev * sigmoid_grad(f)
        grad_gates[row, 2 * hidden + j] = grad_c * i * tanh_grad_(g)
        grad_gates[row, 3 * hidden + j] = grad_m * tanh_c * sigmoid_grad(o)
        return grad_c * f

    @cuda.jit
    def forward(h0, c0, w_gates, w_hr, workspace, cell_out, out, h_n, c_n, schedule, reverse,
                projecting, layout, weights_on_chip):
        # h0 [B, P]; c0 [B, H]; w_gates [H*4*P]: W_hh's rows unit by unit (i_j, f_j, g_j, o_j);
        # w_hr [P*H] row-major W_hr, read when projecting; workspace [N, 5H]: x W_ih^T + b in
        # columns :4H on entry, i, f, g, o, c_t on exit; cell_out [B, H] (projecting): the
        # step's o * tanh(c_t); out [N, P] (h_t), h_n [B, P], c_n [B, H] written;
        # schedule [2, T+1] int64 (cuda_kernels' module header)
        rows_per_block, units_per_block, lanes, projection_per_block, projection_lanes = layout
        hidden, width = c0.shape[1], h0.shape[1]
        rows, units, scratch, weights, stride = gates_setup(
            w_gates, rows_per_block, units_per_block, h0.shape[0], hidden, width,
            weights_on_chip)
        projections, projection_weights, projection_stride = stage_projection(
            w_hr, projection_per_block, width, hidden,
            cuda.blockDim.x * 4 + units[1] * unit_stride_on_chip(4 * width), weights_on_chip)
        dots = cuda.local.array(4, numba_dtype)
        for step in range(schedule.shape[1] - 1):
            size, offset = step_at(schedule, step, reverse)
            previous_size, previous_offset = step_at(schedule, step - 1, reverse)
            next_size, _ = step_at(schedule, step + 1, reverse)
            active = rows_below(rows, size)
            for chunk in range(chunk_count(active, units, lanes)):
                owner, b, j = gate_dots(out, previous_offset, previous_size, h0, True, chunk,
                                        active, units, weights, stride, width, scratch, lanes,
                                        dots)
                if owner:
                    c_prev = (workspace[previous_offset + b, 4 * hidden + j]
                              if b < previous_size else c0[b, j])
                    c, m = cell(workspace, offset + b, j, hidden, dots, c_prev)
                    ends = b >= next_size             # sequence b's last step in this walk
                    if ends:
                        c_n[b, j] = c
                    if projecting:
                        cell_out[b, j] = m
                    else:
                        out[offset + b, j] = m
                        if ends:
                            h_n[b, j] = m
            barrier()
            if projecting:
                for chunk in range(chunk_count(active, projections, projection_lanes)):
                    owner, b, p = single_dots(cell_out, 0, size, cell_out, False, chunk, active,
                                              projections, projection_weights,
                                              projection_stride, hidden, scratch,
                                              projection_lanes, dots)
                    if owner:
                        out[offset + b, p] = dots[0]
                        if b >= next_size:
                            h_n[b, p] = dots[0]
                barrier()

    @cuda.jit
    def backward(grad_out, workspace, c0, grad_hn, grad_cn, w_hh_t, w_hr_t, grad_gates, grad_h,
                 grad_h0, grad_c0, schedule, reverse, projecting, layout, weights_on_chip):
        # grad_out [N, P]; workspace [N, 5H] (the forward's); c0 [B, H]; grad_hn [B, P];
        # grad_cn [B, H]; w_hh_t [P*4H] row-major W_hh^T; w_hr_t [H*P] row-major W_hr^T, read
        # when projecting; grad_gates [N, 4H] written: dL/d the gates' pre-activations;
        # grad_h [N, P] written when projecting: dL/dh_t; grad_h0 [B, P], grad_c0 [B, H]
        # written. The walk is the forward's, backwards (see cuda_kernels' backward).
        rows_per_block, units_per_block, lanes, projection_per_block, projection_lanes = layout
        width, hidden = grad_hn.shape[1], grad_cn.shape[1]
        rows, units, scratch, weights, stride = single_setup(
            w_hh_t, rows_per_block, units_per_block, grad_hn.shape[0], width, 4 * hidden,
            weights_on_chip)
        projections, projection_weights, projection_stride = stage_projection(
            w_hr_t, projection_per_block, hidden, width,
            cuda.blockDim.x + units[1] * unit_stride_on_chip(4 * hidden), weights_on_chip)
        dots = cuda.local.array(1, numba_dtype)
        for step in range(schedule.shape[1]):     # T steps, then one that only ends grad_h0
            size, offset = step_at(schedule, step, not reverse)
            later_size, later_offset = step_at(schedule, step - 1, not reverse)
            earlier_size, earlier_offset = step_at(schedule, step + 1, not reverse)
            active = rows_below(rows, max(size, later_size))
            for chunk in range(chunk_count(active, units, lanes)):
                owner, b, k = single_dots(grad_gates, later_offset, later_size, grad_hn, False,
                                          chunk, active, units, weights, stride, 4 * hidden,
                                          scratch, lanes, dots)
                if owner and b < size:
                    grad_h_k = grad_out[offset + b, k] + (dots[0] if b < later_size
                                                          else grad_hn[b, k])
                    if projecting:
                        grad_h[offset + b, k] = grad_h_k
                    else:                         # h_t = o * tanh(c_t): unit k is unit j
                        c_prev = (workspace[earlier_offset + b, 4 * hidden + k]
                                  if b < earlier_size else c0[b, k])
                        grad_c = grad_c0[b, k] if b < later_size else grad_cn[b, k]
                        grad_c0[b, k] = cell_backward(workspace, offset + b, k, hidden, grad_h_k,
                                                      grad_c, c_prev, grad_gates)
                elif owner:                       # sequence b started at the later step
                    grad_h0[b, k] = dots[0]
            if projecting:
                barrier()
                now = rows_below(rows, size)
                for chunk in range(chunk_count(now, projections, projection_lanes)):
                    owner, b, j = single_dots(grad_h, offset, size, grad_h, False, chunk, now,
                                              projections, projection_weights,
                                              projection_stride, width, scratch,
                                              projection_lanes, dots)
                    if owner:
                        c_prev = (workspace[earlier_offset + b, 4 * hidden + j]
                                  if b < earlier_size else c0[b, j])
                        grad_c = grad_c0[b, j] if b < later_size else grad_cn[b, j]
                        grad_c0[b, j] = cell_backward(workspace, offset + b, j, hidden, dots[0],
                                                      grad_c, c_prev, grad_gates)
            barrier()

    return forward, backward


@functools.lru_cache(maxsize=None)
def gru_kernels(dtype, grid_wide):
    """(forward, backward) GRU time-loop kernels; ``grid_wide`` and ``layout`` as for
    cuda_kernels.recurrent_kernels."""
    scalar, numba_dtype = np.dtype(dtype).type, from_dtype(np.dtype(dtype))
    zero, one = scalar(0), scalar(1)
    barrier = grid_barrier if grid_wide else block_barrier
    gates_setup, _, gate_dots = time_loop_pieces(dtype, 3)
    single_setup, _, single_dots = time_loop_pieces(dtype, 1)
    sigmoid, sigmoid_grad, tanh_, tanh_grad_ = _gate_functions(dtype)

    @cuda.jit
    def forward(h0, w_gates, b_hn, has_bias, workspace, out, h_n, schedule, reverse, layout,
                weights_on_chip):
        # h0 [B, H]; w_gates [H*3*H]: W_hh's rows unit by unit (r_j, z_j, n_j); b_hn [H], read
        # when has_bias; workspace [N, 4H]: x W_ih^T + b_ih (+ b_hh for r and z) in columns
        # :3H on entry, r, z, n, h_{t-1} W_hn^T + b_hn on exit; out [N, H] (h_t) and h_n [B, H]
        # written; schedule [2, T+1] int64
        rows_per_block, units_per_block, lanes, _, _ = layout
        hidden = out.shape[1]
        rows, units, scratch, weights, stride = gates_setup(
            w_gates, rows_per_block, units_per_block, h0.shape[0], hidden, hidden,
            weights_on_chip)
        dots = cuda.local.array(3, numba_dtype)
        for step in range(schedule.shape[1] - 1):
            size, offset = step_at(schedule, step, reverse)
            previous_size, previous_offset = step_at(schedule, step - 1, reverse)
            next_size, _ = step_at(schedule, step + 1, reverse)
            active = rows_below(rows, size)
            for chunk in range(chunk_count(active, units, lanes)):
                owner, b, j = gate_dots(out, previous_offset, previous_size, h0, True, chunk,
                                        active, units, weights, stride, hidden, scratch, lanes,
                                        dots)
                if owner:
                    row = offset + b
                    h_prev = out[previous_offset + b, j] if b < previous_size else h0[b, j]
                    hidden_n = dots[2] + (b_hn[j] if has_bias else zero)
                    r = sigmoid(workspace[row, j] + dots[0])
                    z = sigmoid(workspace[row, hidden + j] + dots[1])
                    n = tanh_(workspace[row, 2 * hidden + j] + r * hidden_n)
                    h = (one - z) * n + z * h_prev
                    workspace[row, j], workspace[row, hidden + j] = r, z
                    workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j] = n, hidden_n
                    out[row, j] = h
                    if b >= next_size:            # sequence b's last step in this walk
                        h_n[b, j] = h
            barrier()

    @cuda.jit
    def backward(grad_out, out, h0, workspace, grad_hn, w_hh_t, grad_gates, grad_h0, schedule,
                 reverse, layout, weights_on_chip):
        # grad_out, out [N, H] (out: the h_t); h0 [B, H]; workspace [N, 4H] (the forward's);
        # grad_hn [B, H]; w_hh_t [H*3H] row-major W_hh^T; grad_gates [N, 4H] written:
        # [d_r, d_z, d_n * r, d_n] (module header); grad_h0 [B, H] written. The walk is the
        # forward's, backwards (see cuda_kernels' backward).
        rows_per_block, units_per_block, lanes, _, _ = layout
        hidden = out.shape[1]
        rows, units, scratch, weights, stride = single_setup(
            w_hh_t, rows_per_block, units_per_block, grad_hn.shape[0], hidden, 3 * hidden,
            weights_on_chip)
        dots = cuda.local.array(1, numba_dtype)
        for step in range(schedule.shape[1]):     # T steps, then one that only ends grad_h0
            size, offset = step_at(schedule, step, not reverse)
            later_size, later_offset = step_at(schedule, step - 1, not reverse)
            earlier_size, earlier_offset = step_at(schedule, step + 1, not reverse)
            active = rows_below(rows, max(size, later_size))
            for chunk in range(chunk_count(active, units, lanes)):
                owner, b, j = single_dots(grad_gates, later_offset, later_size, grad_hn, False,
                                          chunk, active, units, weights, stride, 3 * hidden,
                                          scratch, lanes, dots)
                # grad_h0[b, j] carries dh * z from the later step (the path h_{t-1} -> h_t)
                if owner and b < size:
                    row = offset + b
                    grad_h = grad_out[row, j] + (dots[0] + grad_h0[b, j] if b < later_size
                                                 else grad_hn[b, j])
                    h_prev = out[earlier_offset + b, j] if b < earlier_size else h0[b, j]
                    r, z = workspace[row, j], workspace[row, hidden + j]
                    n, hidden_n = workspace[row, 2 * hidden + j], workspace[row, 3 * hidden + j]
                    grad_n = grad_h * (one - z) * tanh_grad_(n)
                    grad_r = grad_n * hidden_n * sigmoid_grad(r)
                    grad_gates[row, j] = grad_r
                    grad_gates[row, hidden + j] = grad_h * (h_prev - n) * sigmoid_grad(z)
                    grad_gates[row, 2 * hidden + j] = grad_n * r
                    grad_gates[row, 3 * hidden + j] = grad_n
                    grad_h0[b, j] = grad_h * z
                elif owner:                       # sequence b started at the later step
                    grad_h0[b, j] = dots[0] + grad_h0[b, j]
            barrier()

    return forward, backward
