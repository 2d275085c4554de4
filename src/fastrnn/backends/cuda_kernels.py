"""Numba CUDA kernels of the 'cuda' backend; cuda.py checks their arguments and launches them.

Why these kernels and no others:

- ``gemm``: every big product of a layer-direction (the input projection of all N packed rows
  with the bias, dX = G W_ih, dW_ih = G^T X, dW_hh = G^T H_prev) is this one tiled kernel
  (shared-memory tiles, a small register tile per thread) on 2-D operands with any strides,
  each optionally transposed, so the strided half of a bidirectional [N, 2H] buffer and row
  ranges of it go in without a copy.
- ``forward`` / ``backward``: the time loop runs inside ONE launch. Rows are PACKED (see
  backends/__init__.py): step t owns rows [offset_t, offset_t + B_t) of out, its B_t batch rows
  being the sequences still running at t. At every step a block computes the outputs (b, j) of
  its batch rows below B_t x its hidden units from each row's previous vector (the same
  sequence's row of the previous step of the walk, or h0 for a sequence that starts here;
  backward: dL/da of the later step, or dL/dh_n where a sequence ends) and its rows of W_hh
  (W_hh^T backward), kept in shared memory for the whole launch (or, when cuda.py finds they
  cannot be, read from global memory at every step). Nothing runs for rows past B_t.
  A block that owns ALL the units of its batch rows only waits for its own threads between
  steps ("rows" kernels, any number of blocks); a block that owns a slice of the units needs
  every other block's outputs: one grid-wide barrier per step ("grid" kernels, cooperative
  launch). Both come from one body with a different barrier, because numba launches a kernel
  that contains a grid sync cooperatively, and a cooperative grid is limited to what fits on
  the GPU at once. When a block has more threads than outputs, ``lanes`` threads share one dot
  product and add their parts through shared memory.
- ``schedule`` [2, T+1] int64, copied to the device once per call, tells the kernels the packed
  layout: schedule[0, t] = B_t (schedule[0, T] = 0), schedule[1, t] = offset_t (schedule[1, T] = N).
- ``previous_states``: the state each packed row started from, for dW_hh of a ragged batch
  (there a row's predecessor is not a fixed number of rows earlier).
- small helpers: row gather/scatter (packing), batch/time swap (also transposes W_hh),
  elementwise products, fill, column sums.

The activations and their derivatives are those of activations.py (one definition for NumPy
and Numba), compiled as device functions. Shared-memory arrays and typed constants need the
dtype at compile time, so the kernels that use them are built per dtype by cached factories.
Index arithmetic is 64-bit (array shapes are int64; thread indices only ever meet int64
operands), so N*H past 2**31 is fine. Kernels never check their arguments: cuda.py does.
"""
import functools

import numpy as np
from numba import cuda, from_dtype

from . import activations

# (BM, BN, BK, TM, TN): a block computes a BM x BN tile of C, stepping K by BK; each of its
# (BM/TM) x (BN/TN) threads owns TM x TN outputs, strided so neighbouring threads touch
# neighbouring shared-memory words.
SMALL_TILE = (16, 16, 8, 2, 2)
LARGE_TILE = (64, 64, 16, 4, 4)

# activations.py's functions as device functions. Numba types a Python int constant as int64,
# so for a float32 h `1 - h * h` is float64 there (float32 in NumPy): the kernels cast each
# result back to their dtype at once (recurrent_kernels), which lets NVVM fold the round trip
# away, and float32 kernels stay float32 (the sm_90 PTX test checks it).
tanh = cuda.jit(device=True)(activations.tanh)
relu = cuda.jit(device=True)(activations.relu)
tanh_grad = cuda.jit(device=True)(activations.tanh_grad)
relu_grad = cuda.jit(device=True)(activations.relu_grad)


def tile_threads(tile):
    """The block shape (x: tile columns, y: tile rows) a GEMM tile is launched with."""
    block_m, block_n, _, thread_m, thread_n = tile
    return block_n // thread_n, block_m // thread_m


# ----------------------------------------------------------------------------- helpers
@cuda.jit
def swap_first_axes(src, dst):
    # src [P, Q, F] -> dst [Q, P, F]; one thread per output element, grid-stride
    q_size, p_size, f_size = dst.shape
    for e in range(cuda.grid(1), q_size * p_size * f_size, cuda.gridsize(1)):
        q = e // (p_size * f_size)
        p = (e // f_size) % p_size
        f = e % f_size
        dst[q, p, f] = src[p, q, f]


@cuda.jit
def gather_rows(src, index, dst):
    # src [R, F]; index [M] int64, each in [0, R); dst [M, F] = src[index]
    f_size = dst.shape[1]
    for e in range(cuda.grid(1), dst.shape[0] * f_size, cuda.gridsize(1)):
        i, f = e // f_size, e % f_size
        dst[i, f] = src[index[i], f]


@cuda.jit
def scatter_rows(rows, index, dst):
    # rows [M, F]; index [M] int64, distinct, each in [0, R); dst [R, F]: dst[index] = rows
    f_size = rows.shape[1]
    for e in range(cuda.grid(1), rows.shape[0] * f_size, cuda.gridsize(1)):
        i, f = e // f_size, e % f_size
        dst[index[i], f] = rows[i, f]


@cuda.jit
def elementwise(a, b, out, multiply):
    # a, b, out [n]; out = a * b (multiply) or a + b
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] * b[i] if multiply else a[i] + b[i]


@cuda.jit
def fill(out, value):
    # out [n] = value
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = value


@cuda.jit(device=True)
def _step_at(schedule, walk_index, backwards):
    """(B_t, offset_t) of the step visited at ``walk_index`` of a walk over the schedule's T
    steps (backwards: t = T-1 .. 0); (0, 0) before the walk's start or after its end."""
    steps = schedule.shape[1] - 1
    if walk_index < 0 or walk_index >= steps:
        return 0, 0
    t = steps - 1 - walk_index if backwards else walk_index
    return schedule[0, t], schedule[1, t]


@cuda.jit(device=True)
def _step_of_row(schedule, row):
    """The step t whose rows hold packed row ``row``: offset_t <= row < offset_{t+1}."""
    low, high = 0, schedule.shape[1] - 2
    while low < high:
        middle = (low + high + 1) // 2
        if schedule[1, middle] <= row:
            low = middle
        else:
            high = middle - 1
    return low


@cuda.jit
def previous_states(out, h0, schedule, reverse, h_prev):
    # out [N, H] (the h_t); h0 [B, H]; schedule [2, T+1]; h_prev [N, H] written: packed row r
    # of step t, sequence b, gets the state step t started from: row b of the previous step of
    # this direction's walk (t-1, or t+1 when reverse) if sequence b ran there, else h0[b]
    steps, n = schedule.shape[1] - 1, out.shape[1]
    for e in range(cuda.grid(1), h_prev.shape[0] * n, cuda.gridsize(1)):
        row, k = e // n, e % n
        t = _step_of_row(schedule, row)
        b = row - schedule[1, t]
        previous = t + 1 if reverse else t - 1
        if 0 <= previous < steps and b < schedule[0, previous]:
            h_prev[row, k] = out[schedule[1, previous] + b, k]
        else:
            h_prev[row, k] = h0[b, k]


@cuda.jit(device=True)
def _block_barrier():
    cuda.syncthreads()


@cuda.jit(device=True)
def _grid_barrier():
    cuda.cg.this_grid().sync()


@cuda.jit(device=True)
def _slice_of(index, per_block, total):
    """(start, length) of block ``index``'s share when blocks take ``per_block`` items each."""
    start = index * per_block
    return start, max(0, min(per_block, total - start))


@cuda.jit(device=True)
def _rows_below(block_rows, size):
    """The part of the block's batch rows (start, count) that lies below ``size``."""
    start, count = block_rows
    return start, max(0, min(count, size - start))


# ----------------------------------------------------------------------------- per-dtype kernels
@functools.lru_cache(maxsize=None)
def column_sums_kernel(dtype):
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def add_column_sums(g, out_a, out_b):
        # g [N, H]; out_a, out_b [H]: both += the column sums of g
        n = cuda.grid(1)
        if n < g.shape[1]:
            total = zero
            for r in range(g.shape[0]):
                total += g[r, n]
            out_a[n] += total
            out_b[n] += total

    return add_column_sums


@functools.lru_cache(maxsize=None)
def gemm_kernel(dtype, tile):
    """c = op(a) @ op(b) (+ bias) (+ c) on 2-D operands, as described in the module header."""
    block_m, block_n, block_k, thread_m, thread_n = tile
    cols, rows = tile_threads(tile)
    threads = rows * cols
    numba_dtype, zero = from_dtype(np.dtype(dtype)), np.dtype(dtype).type(0)
    a_tile_shape = (block_k, block_m + 1)      # +1: the column-wise tile loads avoid bank conflicts
    b_tile_shape = (block_k, block_n + 1)

    @cuda.jit(device=True)
    def load_tile(tile_s, extent, src, x0, k0, nx, nk, k_along_features):
        # tile_s [block_k, extent + 1] <- tile_s[kk, x] = op(x0 + x, k0 + kk), zero outside
        # op's [nx, nk]; op(x, k) is src[x, k] (k_along_features) or src[k, x].
        # Neighbouring threads read neighbouring features, so global reads coalesce.
        tid = cuda.threadIdx.y * cols + cuda.threadIdx.x
        for e in range(tid, block_k * extent, threads):
            if k_along_features:
                x, kk = e // block_k, e % block_k
                row, feature = x0 + x, k0 + kk
                inside = row < nx and feature < nk
            else:
                kk, x = e // extent, e % extent
                row, feature = k0 + kk, x0 + x
                inside = row < nk and feature < nx
            tile_s[kk, x] = src[row, feature] if inside else zero

    @cuda.jit
    def gemm(a, a_transposed, b, b_transposed, bias, add_bias, c, accumulate):
        # c [M, N]; a: A [M, K] is a, or a's transpose (a_transposed, a [K, M]);
        # b: B [K, N] is b, or b's transpose (b_transposed, b [N, K]);
        # bias [N] (read only when add_bias); C = A @ B (+ bias) (+ C when accumulate)
        a_s = cuda.shared.array(a_tile_shape, numba_dtype)
        b_s = cuda.shared.array(b_tile_shape, numba_dtype)
        acc = cuda.local.array((thread_m, thread_n), numba_dtype)
        b_row = cuda.local.array(thread_n, numba_dtype)
        m_size, n_size = c.shape
        k_size = a.shape[0] if a_transposed else a.shape[1]
        m0, n0 = cuda.blockIdx.x * block_m, cuda.blockIdx.y * block_n
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        for i in range(thread_m):
            for j in range(thread_n):
                acc[i, j] = zero
        for k0 in range(0, k_size, block_k):
            load_tile(a_s, block_m, a, m0, k0, m_size, k_size, not a_transposed)
            load_tile(b_s, block_n, b, n0, k0, n_size, k_size, b_transposed)
            cuda.syncthreads()
            for kk in range(block_k):
                for j in range(thread_n):
                    b_row[j] = b_s[kk, tx + j * cols]
                for i in range(thread_m):
                    a_value = a_s[kk, ty + i * rows]
                    for j in range(thread_n):
                        acc[i, j] += a_value * b_row[j]
            cuda.syncthreads()
        for i in range(thread_m):
            m = m0 + ty + i * rows
            if m < m_size:
                for j in range(thread_n):
                    n = n0 + tx + j * cols
                    if n < n_size:
                        value = acc[i, j]
                        if add_bias:
                            value += bias[n]
                        if accumulate:
                            value += c[m, n]
                        c[m, n] = value

    return gemm


@functools.lru_cache(maxsize=None)
def recurrent_kernels(dtype, grid_wide):
    """(forward, backward) time-loop kernels; ``grid_wide``: blocks own unit slices and meet at
    a grid barrier each step (cooperative launch), else blocks own whole batch rows."""
    scalar, zero = np.dtype(dtype).type, np.dtype(dtype).type(0)
    numba_dtype = from_dtype(np.dtype(dtype))
    barrier = _grid_barrier if grid_wide else _block_barrier

    @cuda.jit(device=True)
    def activate(a, relu_mode):
        return scalar(relu(a)) if relu_mode else scalar(tanh(a))

    @cuda.jit(device=True)
    def through_activation(upstream, h, relu_mode):
        """upstream * act'(a), written with h = act(a)."""
        grad = scalar(relu_grad(h)) if relu_mode else scalar(tanh_grad(h))
        return upstream * grad

    @cuda.jit(device=True)
    def partial_dot(vectors, row, weights, start, lane, lanes):
        # vectors [*, n]; weights [*]: this lane's share of sum_k vectors[row, k] weights[start + k]
        total = zero
        for k in range(lane, vectors.shape[1], lanes):
            total += vectors[row, k] * weights[start + k]
        return total

    @cuda.jit(device=True)
    def chunk_dot(carried, carried_offset, carried_rows, starts, use_starts, chunk, block_rows,
                  block_units, weights, row_stride, scratch, lanes):
        # One chunk of the block's (row, unit) outputs: the dot of row b's previous vector with
        # unit j's weights (from weights[(j - j0) * row_stride]). Row b's previous vector is
        # carried[carried_offset + b] when b < carried_rows, else starts[b] (use_starts) or
        # zero. block_rows = (b0, nb), block_units = (j0, nj). Every thread of the block must
        # call it (it has barriers). Returns (owner, b, j, dot): owner is True for the one
        # thread per output that holds the finished sum.
        b0, nb = block_rows
        j0, nj = block_units
        tid = cuda.threadIdx.x
        lane = tid % lanes
        pair = chunk * (cuda.blockDim.x // lanes) + tid // lanes
        inside = pair < nb * nj
        b = b0 + (pair // nj if inside else 0)
        jj = pair % nj if inside else 0
        partial = zero
        start = jj * row_stride
        if inside and b < carried_rows:
            partial = partial_dot(carried, carried_offset + b, weights, start, lane, lanes)
        elif inside and use_starts:
            partial = partial_dot(starts, b, weights, start, lane, lanes)
        scratch[tid] = partial
        cuda.syncthreads()
        total = zero
        if lane == 0:
            for i in range(lanes):
                total += scratch[tid + i]
        cuda.syncthreads()
        return inside and lane == 0, b, j0 + jj, total

    @cuda.jit(device=True)
    def block_setup(weights, rows_per_block, units_per_block, n_rows, n, weights_on_chip):
        # weights [n*n]: row j holds the weights into unit j. Returns the block's rows and units
        # ((start, count) each), its reduction scratch [threads], and its weight rows (a shared
        # copy with padded rows, or the global rows) with their row stride.
        shared = cuda.shared.array(0, numba_dtype)
        scratch = shared[:cuda.blockDim.x]
        rows = _slice_of(cuda.blockIdx.x, rows_per_block, n_rows)     # x: up to 2**31 - 1 blocks
        units = _slice_of(cuda.blockIdx.y, units_per_block, n)
        j0, nj = units
        if weights_on_chip:
            block_weights = shared[cuda.blockDim.x:cuda.blockDim.x + nj * (n + 1)]
            for e in range(cuda.threadIdx.x, nj * n, cuda.blockDim.x):
                block_weights[(e // n) * (n + 1) + e % n] = weights[j0 * n + e]
            row_stride = n + 1     # padding: threads on neighbouring units hit different banks
        else:
            block_weights = weights[j0 * n:(j0 + nj) * n]
            row_stride = n
        cuda.syncthreads()
        return rows, units, scratch, block_weights, row_stride

    @cuda.jit(device=True)
    def chunk_count(rows, units, lanes):
        per_chunk = cuda.blockDim.x // lanes
        return (rows[1] * units[1] + per_chunk - 1) // per_chunk

    @cuda.jit
    def forward(h0, w_hh, out, h_n, schedule, reverse, relu_mode, rows_per_block,
                units_per_block, lanes, weights_on_chip):
        # h0 [B, H]; w_hh [H*H] (row-major W_hh); out [N, H] packed: x W_ih^T + b on entry,
        # h_t on exit; h_n [B, H] written; schedule [2, T+1] int64 (see the module header)
        n = out.shape[1]
        rows, units, scratch, weights, stride = block_setup(
            w_hh, rows_per_block, units_per_block, h0.shape[0], n, weights_on_chip)
        for step in range(schedule.shape[1] - 1):
            size, offset = _step_at(schedule, step, reverse)
            previous_size, previous_offset = _step_at(schedule, step - 1, reverse)
            next_size, _ = _step_at(schedule, step + 1, reverse)
            active = _rows_below(rows, size)
            for chunk in range(chunk_count(active, units, lanes)):
                owner, b, j, dot = chunk_dot(out, previous_offset, previous_size, h0, True, chunk,
                                             active, units, weights, stride, scratch, lanes)
                if owner:
                    h = activate(out[offset + b, j] + dot, relu_mode)
                    out[offset + b, j] = h
                    if b >= next_size:            # sequence b's last step in this walk
                        h_n[b, j] = h
            barrier()

    @cuda.jit
    def backward(grad_out, out, grad_hn, w_hh_t, grad_a, grad_h0, schedule, reverse, relu_mode,
                 rows_per_block, units_per_block, lanes, weights_on_chip):
        # grad_out, out [N, H] packed (out: the h_t); grad_hn [B, H]; w_hh_t [H*H] (row-major
        # W_hh^T); grad_a [N, H] written: dL/da_t; grad_h0 [B, H] written: dL/dh_0;
        # schedule [2, T+1] int64. The walk is the forward's, backwards; each visit reads the
        # dL/da of the step visited just before (the "later" step, later in the forward).
        n = out.shape[1]
        rows, units, scratch, weights, stride = block_setup(
            w_hh_t, rows_per_block, units_per_block, grad_hn.shape[0], n, weights_on_chip)
        for step in range(schedule.shape[1]):     # T steps, then one that only ends grad_h0
            size, offset = _step_at(schedule, step, not reverse)
            later_size, later_offset = _step_at(schedule, step - 1, not reverse)
            active = _rows_below(rows, max(size, later_size))
            for chunk in range(chunk_count(active, units, lanes)):
                owner, b, j, dot = chunk_dot(grad_a, later_offset, later_size, grad_hn, False,
                                             chunk, active, units, weights, stride, scratch,
                                             lanes)
                if owner and b < size:
                    grad_h = dot if b < later_size else grad_hn[b, j]    # else: its last step
                    grad_a[offset + b, j] = through_activation(
                        grad_out[offset + b, j] + grad_h, out[offset + b, j], relu_mode)
                elif owner:                       # sequence b started at the later step
                    grad_h0[b, j] = dot
            barrier()

    return forward, backward
