"""Numba CUDA kernels of the 'cuda' backend; cuda.py chooses and launches them.

Why these kernels and no others:

- ``gemm``: every big product of a layer-direction (the input projection of all T steps with
  the folded bias, dX = G W_ih, dW_ih = G^T X, dW_hh = G^T H_prev) is this one tiled kernel
  (shared-memory tiles, a small register tile per thread). Its operands are 3-D "row arrays"
  [P, Q, F] read as the matrix [P*Q, F] (matrix row r is [r // Q, r % Q]), each optionally
  transposed, so the strided half of a bidirectional [T, B, 2H] buffer, time-shifted slices of
  it and 2-D weights (viewed as [1, H, F]) all go in without a copy.
- ``forward`` / ``backward``: the time loop runs inside ONE launch. At every step a block
  computes the outputs (b, j) of its batch rows x its hidden units from the previous step's
  vector (h_{t-1} forward, dL/da_{t+1} backward, read from global memory) and its rows of W_hh
  (W_hh^T backward), kept in shared memory for the whole launch (or, when cuda.py finds they
  cannot be, read from global memory at every step). A block that owns
  ALL the units of its batch rows only waits for its own threads between steps ("rows"
  kernels, any number of blocks); a block that owns a slice of the units needs every other
  block's outputs: one grid-wide barrier per step ("grid" kernels, cooperative launch). Both
  come from one body with a different barrier, because numba launches a kernel that contains
  a grid sync cooperatively, and a cooperative grid is limited to what fits on the GPU at once.
  When a block has more threads than outputs, ``lanes`` threads share one dot product and
  add their parts through shared memory.
- small helpers: batch/time swap (also transposes W_hh), elementwise products, fill, column
  sums.

Shared-memory arrays and typed constants need the dtype at compile time, so the kernels that
use them are built per dtype by cached factories. Kernels never check their arguments:
cuda.py (and functional.py above it) do.
"""
import functools
import math

import numpy as np
from numba import cuda, from_dtype

# (BM, BN, BK, TM, TN): a block computes a BM x BN tile of C, stepping K by BK; each of its
# (BM/TM) x (BN/TN) threads owns TM x TN outputs, strided so neighbouring threads touch
# neighbouring shared-memory words.
SMALL_TILE = (16, 16, 8, 2, 2)
LARGE_TILE = (64, 64, 16, 4, 4)


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
def _time_at(step, steps, backwards):
    """The time index visited at ``step`` of a walk over ``steps`` time steps."""
    return steps - 1 - step if backwards else step


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


# ----------------------------------------------------------------------------- per-dtype kernels
@functools.lru_cache(maxsize=None)
def column_sums_kernel(dtype):
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def add_column_sums(g, out_a, out_b):
        # g [T, B, H]; out_a, out_b [H]: both += the column sums of g as a [T*B, H] matrix
        n = cuda.grid(1)
        if n < g.shape[2]:
            total = zero
            for t in range(g.shape[0]):
                for b in range(g.shape[1]):
                    total += g[t, b, n]
            out_a[n] += total
            out_b[n] += total

    return add_column_sums


@functools.lru_cache(maxsize=None)
def gemm_kernel(dtype, tile):
    """c = op(a) @ op(b) (+ bias) (+ c) on row arrays, as described in the module header."""
    block_m, block_n, block_k, thread_m, thread_n = tile
    cols, rows = tile_threads(tile)
    threads = rows * cols
    numba_dtype, zero = from_dtype(np.dtype(dtype)), np.dtype(dtype).type(0)
    a_tile_shape = (block_k, block_m + 1)      # +1: the column-wise tile loads avoid bank conflicts
    b_tile_shape = (block_k, block_n + 1)

    @cuda.jit(device=True)
    def load_tile(tile_s, extent, src, x0, k0, nx, nk, k_along_features):
        # tile_s [block_k, extent + 1] <- tile_s[kk, x] = op(x0 + x, k0 + kk), zero outside
        # op's [nx, nk]; op(x, k) is src's matrix at [x, k] (k_along_features) or at [k, x].
        # Neighbouring threads read neighbouring features, so global reads coalesce.
        tid = cuda.threadIdx.y * cols + cuda.threadIdx.x
        q_size = src.shape[1]
        for e in range(tid, block_k * extent, threads):
            if k_along_features:
                x, kk = e // block_k, e % block_k
                row, feature = x0 + x, k0 + kk
                inside = row < nx and feature < nk
            else:
                kk, x = e // extent, e % extent
                row, feature = k0 + kk, x0 + x
                inside = row < nk and feature < nx
            tile_s[kk, x] = src[row // q_size, row % q_size, feature] if inside else zero

    @cuda.jit
    def gemm(a, a_transposed, b, b_transposed, bias, add_bias, c, accumulate):
        # c [P, Q, N] is the matrix C [M = P*Q, N];
        # a: A [M, K] is a's matrix, or its transpose (a_transposed);
        # b: B [K, N] is b's matrix, or its transpose (b_transposed);
        # bias [N] (read only when add_bias); C = A @ B (+ bias) (+ C when accumulate)
        a_s = cuda.shared.array(a_tile_shape, numba_dtype)
        b_s = cuda.shared.array(b_tile_shape, numba_dtype)
        acc = cuda.local.array((thread_m, thread_n), numba_dtype)
        b_row = cuda.local.array(thread_n, numba_dtype)
        m_size, n_size = c.shape[0] * c.shape[1], c.shape[2]
        k_size = a.shape[0] * a.shape[1] if a_transposed else a.shape[2]
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
        q_size = c.shape[1]
        for i in range(thread_m):
            m = m0 + ty + i * rows
            if m < m_size:
                p, q = m // q_size, m % q_size
                for j in range(thread_n):
                    n = n0 + tx + j * cols
                    if n < n_size:
                        value = acc[i, j]
                        if add_bias:
                            value += bias[n]
                        if accumulate:
                            value += c[p, q, n]
                        c[p, q, n] = value

    return gemm


@functools.lru_cache(maxsize=None)
def recurrent_kernels(dtype, grid_wide):
    """(forward, backward) time-loop kernels; ``grid_wide``: blocks own unit slices and meet at
    a grid barrier each step (cooperative launch), else blocks own whole batch rows."""
    zero, one = np.dtype(dtype).type(0), np.dtype(dtype).type(1)
    numba_dtype = from_dtype(np.dtype(dtype))
    barrier = _grid_barrier if grid_wide else _block_barrier

    @cuda.jit(device=True)
    def activate(a, relu):
        if relu:
            return a if a > zero else zero
        return math.tanh(a)

    @cuda.jit(device=True)
    def through_activation(upstream, h, relu):
        """upstream * act'(a), written with h = act(a)."""
        if relu:
            return upstream if h > zero else zero
        return upstream * (one - h * h)

    @cuda.jit(device=True)
    def partial_dot(vector, row, weights, start, n, lane, lanes):
        # vector [B, n]; weights [*]: this lane's share of sum_k vector[row, k] weights[start + k]
        total = zero
        for k in range(lane, n, lanes):
            total += vector[row, k] * weights[start + k]
        return total

    @cuda.jit(device=True)
    def chunk_dot(vector, use_vector, chunk, block_rows, block_units, weights, row_stride,
                  scratch, lanes):
        # One chunk of the block's (row, unit) outputs; block_rows = (b0, nb), block_units =
        # (j0, nj); unit j's weights start at weights[(j - j0) * row_stride]. Every thread of
        # the block must call it (it has barriers). Returns (owner, b, j, dot): owner is True
        # for the one thread per output that holds the finished sum (0 if not use_vector).
        b0, nb = block_rows
        j0, nj = block_units
        tid = cuda.threadIdx.x
        lane = tid % lanes
        pair = chunk * (cuda.blockDim.x // lanes) + tid // lanes
        inside = pair < nb * nj
        b = b0 + (pair // nj if inside else 0)
        jj = pair % nj if inside else 0
        partial = zero
        if inside and use_vector:
            partial = partial_dot(vector, b, weights, jj * row_stride, vector.shape[1], lane, lanes)
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
    def forward(h0, w_hh, out, reverse, relu, rows_per_block, units_per_block, lanes,
                weights_on_chip):
        # h0 [B, H]; w_hh [H*H] (row-major W_hh);
        # out [T, B, H]: x_t W_ih^T + b on entry, h_t on exit
        steps, n_rows, n = out.shape
        rows, units, scratch, weights, stride = block_setup(
            w_hh, rows_per_block, units_per_block, n_rows, n, weights_on_chip)
        for step in range(steps):
            t, t_prev = _time_at(step, steps, reverse), _time_at(max(step - 1, 0), steps, reverse)
            for chunk in range(chunk_count(rows, units, lanes)):
                if step == 0:
                    owner, b, j, dot = chunk_dot(h0, True, chunk, rows, units, weights, stride,
                                                 scratch, lanes)
                else:
                    owner, b, j, dot = chunk_dot(out[t_prev], True, chunk, rows, units, weights,
                                                 stride, scratch, lanes)
                if owner:
                    out[t, b, j] = activate(out[t, b, j] + dot, relu)
            barrier()

    @cuda.jit
    def backward(grad_out, out, grad_hn, w_hh_t, grad_a, grad_h0, reverse, relu, rows_per_block,
                 units_per_block, lanes, weights_on_chip):
        # grad_out, out [T, B, H] (out: the h_t); grad_hn [B, H]; w_hh_t [H*H] (row-major
        # W_hh^T); grad_a [T, B, H] written: dL/da_t; grad_h0 [B, H] written: dL/dh_0
        steps, n_rows, n = out.shape
        rows, units, scratch, weights, stride = block_setup(
            w_hh_t, rows_per_block, units_per_block, n_rows, n, weights_on_chip)
        for step in range(steps):
            t = _time_at(step, steps, not reverse)
            t_prev = _time_at(max(step - 1, 0), steps, not reverse)   # == t at step 0 (unused)
            for chunk in range(chunk_count(rows, units, lanes)):
                owner, b, j, dot = chunk_dot(grad_a[t_prev], step > 0, chunk, rows, units,
                                             weights, stride, scratch, lanes)
                if owner:
                    grad_h = grad_hn[b, j] if step == 0 else dot
                    grad_a[t, b, j] = through_activation(grad_out[t, b, j] + grad_h, out[t, b, j],
                                                         relu)
            barrier()
        t_first = _time_at(steps - 1, steps, not reverse)
        for chunk in range(chunk_count(rows, units, lanes)):
            owner, b, j, dot = chunk_dot(grad_a[t_first], True, chunk, rows, units, weights,
                                         stride, scratch, lanes)
            if owner:
                grad_h0[b, j] = dot

    return forward, backward
