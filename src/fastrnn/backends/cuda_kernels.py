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
  product and add their parts through shared memory. That loop is written once, as the
  device function ``time_loop``, for every cell: the Elman kernels here and the gated cells'
  (cuda_gated_kernels) only add their maths, as ``finish`` functions that complete one output
  from its dot products. A gated unit has several weight rows (its gates), read in one pass;
  LSTM's proj_size adds a second product per step. In shared memory each unit's rows are
  padded to an odd number of words, so that the 32 threads of a warp, on 32 units at the same
  k, read 32 different banks (rows padded by one word give an even stride for odd H: one bank).
  cuda.py's launch plan reaches the kernels as ``layout`` (cuda.RecurrencePlan.layout).
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
def step_at(schedule, walk_index, backwards):
    """(B_t, offset_t) of the step visited at ``walk_index`` of a walk over the schedule's T
    steps (backwards: t = T-1 .. 0); (0, 0) before the walk's start or after its end."""
    steps = schedule.shape[1] - 1
    if walk_index < 0 or walk_index >= steps:
        return 0, 0
    t = steps - 1 - walk_index if backwards else walk_index
    return schedule[0, t], schedule[1, t]


@cuda.jit(device=True)
def visit_at(schedule, walk_index, backwards):
    """What a time loop needs at ``walk_index`` of a walk over the steps: (size, offset) of the
    step visited there, of the step visited just before (the "carried" one) and of the step
    visited just after ((0, 0) where there is none)."""
    return (step_at(schedule, walk_index, backwards), step_at(schedule, walk_index - 1, backwards),
            step_at(schedule, walk_index + 1, backwards))


@cuda.jit(device=True)
def step_of_row(schedule, row):
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
        t = step_of_row(schedule, row)
        b = row - schedule[1, t]
        previous = t + 1 if reverse else t - 1
        if 0 <= previous < steps and b < schedule[0, previous]:
            h_prev[row, k] = out[schedule[1, previous] + b, k]
        else:
            h_prev[row, k] = h0[b, k]


@cuda.jit(device=True)
def block_barrier():
    cuda.syncthreads()


@cuda.jit(device=True)
def grid_barrier():
    cuda.cg.this_grid().sync()


@cuda.jit(device=True)
def slice_of(index, per_block, total):
    """(start, length) of block ``index``'s share when blocks take ``per_block`` items each."""
    start = index * per_block
    return start, max(0, min(per_block, total - start))


@cuda.jit(device=True)
def rows_below(block_rows, size):
    """The part of the block's batch rows (start, count) that lies below ``size``."""
    start, count = block_rows
    return start, max(0, min(count, size - start))


@cuda.jit(device=True)
def chunk_count(rows, units, lanes):
    """How many passes the block's threads make over its (row, unit) outputs."""
    per_chunk = cuda.blockDim.x // lanes
    return (rows[1] * units[1] + per_chunk - 1) // per_chunk


# ----------------------------------------------------------------------------- per-dtype kernels
@functools.lru_cache(maxsize=None)
def column_sums_kernel(dtype):
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def add_column_sums(g, out_a, out_b, into_both):
        # g [N, H]; out_a [H] += the column sums of g, and out_b [H] too when into_both
        n = cuda.grid(1)
        if n < g.shape[1]:
            total = zero
            for r in range(g.shape[0]):
                total += g[r, n]
            out_a[n] += total
            if into_both:
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


def padded_unit_words(unit_words):
    """The shared-memory stride between the weight rows of neighbouring units: odd, so that
    the threads of a warp, each on its own unit at the same k, read 32 different banks (cuda.py
    sizes shared memory with it, the kernels lay rows out with ``unit_stride_on_chip``)."""
    return unit_words | 1


unit_stride_on_chip = cuda.jit(device=True)(padded_unit_words)


@functools.lru_cache(maxsize=None)
def _product_pieces(dtype, gates):
    """(stage_units, chunk_dots): device functions of a product whose output units take
    ``gates`` weight rows each. Weights are flat row-major matrices whose rows come unit by
    unit: unit j's gate g is row j * gates + g."""
    numba_dtype, zero = from_dtype(np.dtype(dtype)), np.dtype(dtype).type(0)

    @cuda.jit(device=True)
    def stage_units(weights, units, length, shared_start, on_chip):
        # weights [U*gates*length]: the rows of units (start, count) as the block reads them,
        # with the stride between units: a copy in dynamic shared memory from word
        # shared_start, each unit's rows padded to an odd number of words
        # (unit_stride_on_chip), or the rows in global memory. The caller syncs the block.
        first, count = units
        unit_words = gates * length
        if on_chip:
            stride = unit_stride_on_chip(unit_words)
            shared = cuda.shared.array(0, numba_dtype)
            staged = shared[shared_start:shared_start + count * stride]
            for e in range(cuda.threadIdx.x, count * unit_words, cuda.blockDim.x):
                staged[(e // unit_words) * stride + e % unit_words] = \
                    weights[first * unit_words + e]
            return staged, stride
        return weights[first * unit_words:(first + count) * unit_words], unit_words

    @cuda.jit(device=True)
    def partial_dots(vectors, row, weights, first, length, lane, lanes, dots):
        # dots[g] += this lane's share of sum_k vectors[row, k] weights[first + g*length + k]
        for k in range(lane, length, lanes):
            value = vectors[row, k]
            for g in range(gates):
                dots[g] += value * weights[first + g * length + k]

    @cuda.jit(device=True)
    def chunk_dots(carried, carried_offset, carried_rows, starts, use_starts, chunk, block_rows,
                   block_units, weights, stride, length, scratch, lanes, dots):
        # One chunk of the block's (row, unit) outputs: dots[g] = the dot of row b's vector
        # (its first ``length`` entries) with unit j's weight row g. Row b's vector is
        # carried[carried_offset + b] when b < carried_rows, else starts[b] (use_starts) or
        # zero. block_rows = (b0, nb), block_units = (j0, nj); weights and the stride between
        # units as stage_units returns them. Every thread of the block must call it (it may
        # sync the block). Returns (owner, b, j): owner is True for the one thread per output
        # that holds the sums.
        b0, nb = block_rows
        j0, nj = block_units
        tid = cuda.threadIdx.x
        lane = tid % lanes
        pair = chunk * (cuda.blockDim.x // lanes) + tid // lanes
        inside = pair < nb * nj
        b = b0 + (pair // nj if inside else 0)
        jj = pair % nj if inside else 0
        for g in range(gates):
            dots[g] = zero
        if inside and b < carried_rows:
            partial_dots(carried, carried_offset + b, weights, jj * stride, length, lane, lanes,
                         dots)
        elif inside and use_starts:
            partial_dots(starts, b, weights, jj * stride, length, lane, lanes, dots)
        if lanes > 1:                  # the same for every thread: the block syncs or none does
            for g in range(gates):
                scratch[g * cuda.blockDim.x + tid] = dots[g]
            cuda.syncthreads()
            if lane == 0:
                for g in range(gates):
                    total = zero
                    for i in range(lanes):
                        total += scratch[g * cuda.blockDim.x + tid + i]
                    dots[g] = total
            cuda.syncthreads()
        return inside and lane == 0, b, j0 + jj

    return stage_units, chunk_dots


@functools.lru_cache(maxsize=None)
def step_product(dtype, gates, finish):
    """A device function ``run`` that every thread of the block calls:

        run(vectors, carried_offset, carried_rows, starts, use_starts, rows, product, cell, visit)

    For every output (b, j) of the block's ``rows`` x the product's units: dots[g] = row b's
    vector (vectors[carried_offset + b] for b < carried_rows, else starts[b] when use_starts,
    else zero) . unit j's weight row g; then the thread that holds the sums calls
    ``finish(cell, visit, b, j, dots)``. product = (units, weights, stride, length, scratch,
    lanes) as time_loop stages them."""
    numba_dtype = from_dtype(np.dtype(dtype))
    _, chunk_dots = _product_pieces(dtype, gates)

    @cuda.jit(device=True)
    def run(vectors, carried_offset, carried_rows, starts, use_starts, rows, product, cell,
            visit):
        units, weights, stride, length, scratch, lanes = product
        dots = cuda.local.array(gates, numba_dtype)
        for chunk in range(chunk_count(rows, units, lanes)):
            owner, b, j = chunk_dots(vectors, carried_offset, carried_rows, starts, use_starts,
                                     chunk, rows, units, weights, stride, length, scratch, lanes,
                                     dots)
            if owner:
                finish(cell, visit, b, j, dots)

    return run


@cuda.jit(device=True)
def no_projection(cell, visit, b, j, dots):
    """The projection step of the cells that have none (never called: no projection units)."""


@functools.lru_cache(maxsize=None)
def time_loop(dtype, gates, grid_wide, backward, finish, finish_projection=no_projection):
    """The time loop of every time-loop kernel (each cell's kernels only add their maths): a
    device function ``walk`` that every thread of the kernel calls once,

        walk(vectors, starts, weights, projection_vectors, projection_weights, sizes,
             schedule, reverse, layout, weights_on_chip, cell)

    It visits the steps in the walk's order: forward, t = 0 .. T-1 (T-1 .. 0 when reverse);
    backward (``backward``), the forward's walk backwards, then one more visit that only
    finishes the rows that started at the last step. A visit is ((size, offset) of the step
    visited, of the "carried" step visited just before (forward: the previous step, whose h
    the step continues from; backward: the later step, whose dL/dA flows in), of the step
    visited just after (forward: the next; backward: the earlier)).

    At every visit the STEP PRODUCT (step_product) runs over the block's rows that run there
    (backward: and those that started at the carried step) and its units, each unit taking
    ``gates`` rows of ``weights`` [units*gates*length] (row-major, unit by unit): row b's
    vector is ``vectors``' row of the carried step, or starts[b] (forward: h0; backward:
    zero); ``finish(cell, visit, b, j, dots)`` finishes output (b, j). With a projection
    (layout[3] > 0: LSTM's proj_size) a barrier, then the PROJECTION product of the step's
    rows of ``projection_vectors`` [N, projection length] with ``projection_weights``, one row
    a unit, finished by ``finish_projection``. A barrier ends each visit: the block's, or the
    grid's (``grid_wide``: the units are sliced over the blocks).

    sizes = (units, length, projection units, projection length); starts [B, *] (its rows
    count the batch even where it is not read); layout and weights_on_chip: cuda.py's plan
    (cuda.RecurrencePlan.layout). The weights' slices are staged in dynamic shared memory
    after a reduction scratch of threads * gates words when on chip.
    """
    stage_units, _ = _product_pieces(dtype, gates)
    stage_projection, _ = _product_pieces(dtype, 1)
    numba_dtype = from_dtype(np.dtype(dtype))
    product = step_product(dtype, gates, finish)
    projection = step_product(dtype, 1, finish_projection)
    barrier = grid_barrier if grid_wide else block_barrier

    @cuda.jit(device=True)
    def walk(vectors, starts, weights, projection_vectors, projection_weights, sizes, schedule,
             reverse, layout, weights_on_chip, cell):
        rows_per_block, units_per_block, lanes, projection_per_block, projection_lanes = layout
        n_units, length, n_projections, projection_length = sizes
        scratch = cuda.shared.array(0, numba_dtype)[:cuda.blockDim.x * gates]
        rows = slice_of(cuda.blockIdx.x, rows_per_block, starts.shape[0])  # up to 2**31 - 1
        units = slice_of(cuda.blockIdx.y, units_per_block, n_units)
        projections = slice_of(cuda.blockIdx.y, projection_per_block, n_projections)
        staged, stride = stage_units(weights, units, length, cuda.blockDim.x * gates,
                                     weights_on_chip)
        projection_staged, projection_stride = stage_projection(
            projection_weights, projections, projection_length,
            cuda.blockDim.x * gates + units[1] * unit_stride_on_chip(gates * length),
            weights_on_chip)
        cuda.syncthreads()
        step = (units, staged, stride, length, scratch, lanes)
        projected = (projections, projection_staged, projection_stride, projection_length,
                     scratch, projection_lanes)
        for walk_index in range(schedule.shape[1] - (0 if backward else 1)):
            visit = visit_at(schedule, walk_index, reverse != backward)
            (size, offset), (carried_size, carried_offset), _ = visit
            running = rows_below(rows, max(size, carried_size) if backward else size)
            product(vectors, carried_offset, carried_size, starts, not backward, running, step,
                    cell, visit)
            if projection_per_block > 0:      # the same for every thread
                barrier()
                projection(projection_vectors, offset, size, projection_vectors, False,
                           rows_below(rows, size), projected, cell, visit)
            barrier()

    return walk


@functools.lru_cache(maxsize=None)
def recurrent_kernels(dtype, grid_wide):
    """(forward, backward) time-loop kernels of the Elman cell; ``grid_wide``: blocks own unit
    slices and meet at a grid barrier each step (cooperative launch), else blocks own whole
    batch rows (time_loop). ``layout`` is the launch plan's (rows_per_block, units_per_block,
    lanes, 0, 1) (cuda.RecurrencePlan; no projection)."""
    scalar = np.dtype(dtype).type

    @cuda.jit(device=True)
    def finish_forward(cell, visit, b, j, dots):
        # h_t = act(x W_ih^T + b + h_{t-1} W_hh^T), in place in out; h_n where b ends
        out, h_n, relu_mode = cell
        (_, offset), _, (next_size, _) = visit
        a = out[offset + b, j] + dots[0]
        h = scalar(relu(a)) if relu_mode else scalar(tanh(a))
        out[offset + b, j] = h
        if b >= next_size:                    # sequence b's last step in this walk
            h_n[b, j] = h

    @cuda.jit(device=True)
    def finish_backward(cell, visit, b, j, dots):
        # dL/da_t = (dL/dout_t + dL/dh_t) * act'(a_t), dL/dh_t = dots (dL/da_{t+1} W_hh) or
        # dL/dh_n where b ends; where b started at the later step, dL/dh_0 = dots
        grad_out, out, grad_hn, grad_a, grad_h0, relu_mode = cell
        (size, offset), (later_size, _), _ = visit
        if b < size:
            grad_h = dots[0] if b < later_size else grad_hn[b, j]
            h = out[offset + b, j]
            slope = scalar(relu_grad(h)) if relu_mode else scalar(tanh_grad(h))
            grad_a[offset + b, j] = (grad_out[offset + b, j] + grad_h) * slope
        else:
            grad_h0[b, j] = dots[0]

    walk_forward = time_loop(dtype, 1, grid_wide, False, finish_forward)
    walk_backward = time_loop(dtype, 1, grid_wide, True, finish_backward)

    @cuda.jit
    def forward(h0, w_hh, out, h_n, schedule, reverse, relu_mode, layout, weights_on_chip):
        # h0 [B, H]; w_hh [H*H] (row-major W_hh); out [N, H] packed: x W_ih^T + b on entry,
        # h_t on exit; h_n [B, H] written; schedule [2, T+1] int64 (see the module header)
        n = out.shape[1]
        walk_forward(out, h0, w_hh, out, w_hh, (n, n, 0, 0), schedule, reverse, layout,
                     weights_on_chip, (out, h_n, relu_mode))

    @cuda.jit
    def backward(grad_out, out, grad_hn, w_hh_t, grad_a, grad_h0, schedule, reverse, relu_mode,
                 layout, weights_on_chip):
        # grad_out, out [N, H] packed (out: the h_t); grad_hn [B, H]; w_hh_t [H*H] (row-major
        # W_hh^T); grad_a [N, H] written: dL/da_t; grad_h0 [B, H] written: dL/dh_0;
        # schedule [2, T+1] int64
        n = out.shape[1]
        walk_backward(grad_a, grad_hn, w_hh_t, grad_a, w_hh_t, (n, n, 0, 0), schedule, reverse,
                      layout, weights_on_chip, (grad_out, out, grad_hn, grad_a, grad_h0,
                                                relu_mode))

    return forward, backward
