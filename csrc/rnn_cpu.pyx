# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CPU kernels of the Elman cell (torch's RNN, tanh or relu): one layer, one direction, over a
packed batch (the layout and contract of fastrnn/backends/__init__.py).

Forward, for the rows [0, B_t) that step t computes (sequences longer than t):
    a_t = x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh            h_t = act(a_t)
    h_prev: the previous step's state of each row in the walk (t-1 forward, t+1 reverse), or
    h0 for a row that starts at step t (step 0 forward; its own last step in reverse).
Backward (BPTT), mirroring it:
    g_t = (dY_t + dH_t) * act'(h_t)   dH_t: g_next W_hh from the step after t in the walk, or
    grad_hn for a row whose sequence ends at t;   grad_h0 = g W_hh of each row at its first step
    dW_ih += G^T X   dW_hh += G^T H_prev   dX = G W_ih   db_ih = db_hh = column sums of G
It must match fastrnn/backends/reference.py (the oracle), which writes the same loops plainly.

Why it is built this way (design.md, "what makes it fast"):
- one compiled call per layer-direction; every array is checked once here (buffer_checks.pxd)
  and the time loop runs without the GIL; no per-step Python or allocation;
- the input projection of all N tokens is ONE product, written straight into ``out``, which
  was first filled with b_ih + b_hh; each step then adds h_prev W_hh^T in place and applies
  the activation; a step works on its own rows only, so padding costs nothing;
- float32 steps run the fused step kernel (step_gemm.h): W_hh packed once per call (or used
  in place when the call has so few rows that packing would cost more), the activation or its
  derivative applied to the tile in registers. A time loop is a "plan" of blocks per step
  (step_jobs.h), which is how variable lengths enter: in reverse some rows continue from
  step t+1 and others start from h0; in backward some rows receive no product and others
  send theirs to grad_h0. Big steps are shared by a thread team of our own (thread_team.h);
  float64 steps run the same plans as BLAS products plus a loop;
- small float32 products (input projection, dX, grad_h0, weight gradients of small layers)
  run on the step kernel's tiles and never reach the BLAS; big ones go to SciPy's BLAS, which
  threads them as the user set it. The BLAS's thread count is only read, never changed
  (cpu_products.pxd);
- weight gradients, dX and the bias gradients are single products over all N rows after the
  loop; dW_hh pairs each g row with its own h_prev row: for equal lengths two products over
  shifted slices, for ragged batches one product with a gathered copy of the h_prev rows;
- ``out`` may be one half of a bidirectional [N, 2H] buffer: every product takes the row
  stride as its leading dimension, so no concatenation is ever needed.
BLAS is SciPy's (scipy.linalg.cython_blas). float32 and float64 share one source through
Cython's fused type.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

cimport numpy as cnp

from buffer_checks cimport (float_type, rows_view, take, take_batch_sizes,
                            take_optional_vector)
from cpu_products cimport add_weight_gradient, matmul, product_config, product_sizes, run_plan
from packed_steps cimport (add_block, after, alloc_plan, before, begin_round, carried_rows,
                           first_ending_row, free_offsets, free_plan, packed_walk, set_offsets,
                           walk_step)
from step_gemm cimport (STEP_ASSIGN, STEP_RELU, STEP_RELU_GRAD, STEP_TANH, STEP_TANH_GRAD,
                        current_step_kernel, select_step_kernel)
from step_jobs cimport step_plan

cnp.import_array()


# ---- configuration --------------------------------------------------------------------------
def step_kernel_name():
    """The instruction-set variant the float32 step kernel runs ("avx512", "avx2", "generic")."""
    return current_step_kernel().name.decode()


def use_step_kernel(str name):
    """Makes ``name`` ("avx512", "avx2", "generic" or "best") the float32 step kernel; returns
    the previous name. ValueError when this CPU cannot run it. For tests and benchmarks."""
    previous = step_kernel_name()
    if not select_step_kernel(name.encode()):
        raise ValueError(f"step kernel {name!r} cannot run on this CPU "
                         "(expected one of 'avx512', 'avx2', 'generic', 'best' that it supports)")
    return previous


ctypedef int (*thread_count_fn)() noexcept nogil
cdef thread_count_fn blas_thread_count = NULL


def use_blas_thread_count(size_t address):
    """The address of the kernels' BLAS ``get_num_threads()`` C function (0: unknown, then
    everything runs on the calling thread). The kernels only read the count: big steps and
    products use that many threads."""
    global blas_thread_count
    blas_thread_count = <thread_count_fn>address


cdef int threads_allowed() noexcept nogil:
    return max(blas_thread_count(), 1) if blas_thread_count != NULL else 1


def planned_step_threads(Py_ssize_t batch, Py_ssize_t hidden):
    """How many threads would share each step of a layer of this batch and hidden size now.
    For tests and benchmarks."""
    cdef product_config cfg = call_config()
    return step_threads(&cfg, batch, hidden)


cdef int step_threads(const product_config* cfg, Py_ssize_t batch,
                      Py_ssize_t hidden) noexcept nogil:
    """Threads that share each step: the BLAS's count for big steps (B * H * H), else one."""
    if <double>batch * hidden * hidden >= cfg.sizes.step_threading_min_macs:
        return cfg.threads
    return 1


# The sizes at which the work changes hands. own_max_macs: products below 2^24 multiply-adds
# (about 0.2 ms on one core) are too small to repay a thread hand-off (the old BLAS threshold
# of 2^25 FLOPs). step_threading_min_macs: a step (B * H * H) is shared among the threads
# from 2^21: at B=32, H=256 (~25 us a step on one core) 2 threads ran 1.4-1.7x faster than 1
# on a quiet machine; at 2^20 the forward gained only 1.25x, too little to risk the hand-off
# at every step on a busy machine. direct_max_rows, in_place_max_rows: calls with so few rows
# that packing W costs more than it saves (step_gemm_impl.h's direct_gemm); the A W^T form
# pays a horizontal sum per output, the A W form nothing, so it stays in place for longer.
cdef product_sizes tuning = product_sizes(
    own_max_macs=1 << 24, step_threading_min_macs=1 << 21, product_threading_min_macs=1 << 24,
    direct_max_rows=2, in_place_max_rows=16, rank_k_max_output=256 * 256,
    blas_max_dim=2147483647)


def get_tuning():
    """{field: value} of the size thresholds above (for tests and benchmarks)."""
    return tuning


def set_tuning(**changes):
    """Changes size thresholds (e.g. blas_max_dim=7 to exercise the split BLAS products, or
    direct_max_rows=0 to always pack); returns the previous values of those changed. Not for
    use while kernels run in other threads."""
    global tuning
    cdef dict current = tuning
    unknown = set(changes) - set(current)
    if unknown:
        raise ValueError(f"unknown tuning fields {sorted(unknown)}; expected {sorted(current)}")
    if not 1 <= changes.get("blas_max_dim", 1) <= 2147483647:
        raise ValueError("blas_max_dim must be in [1, 2**31 - 1]")
    tuning = {**current, **changes}
    return {name: current[name] for name in changes}


cdef product_config call_config() noexcept nogil:
    return product_config(kernel=current_step_kernel(), threads=threads_allowed(), sizes=tuning)


# ---- one checked call -----------------------------------------------------------------------
cdef struct layer_call:            # the arrays of one call, checked; data in the call's dtype
    packed_walk walk               # T, batch_sizes [T], offsets, reverse
    Py_ssize_t B, N, H
    Py_ssize_t input_size          # I
    bint equal_lengths, relu
    const char* x                  # [N, I]
    const char* h0                 # [B, H]
    const char* w_ih               # [H, I]
    const char* w_hh               # [H, H]
    const char* b_ih               # [H] or NULL
    const char* b_hh               # [H] or NULL
    char* out                      # [N, H] rows ld_out apart (forward: written)
    Py_ssize_t ld_out
    char* h_n                      # [B, H]   forward: written
    const char* grad_out           # [N, H] rows ld_grad_out apart
    Py_ssize_t ld_grad_out
    const char* grad_hn            # [B, H]
    char* grad_x                   # [N, I]   written, or added to (accumulate_x)
    bint accumulate_x
    char* grad_h0                  # [B, H]   written
    char* grad_w_ih                # [H, I]   added to
    char* grad_w_hh                # [H, H]   added to
    char* grad_b_ih                # [H] or NULL, added to
    char* grad_b_hh                # [H] or NULL, added to


cdef int take_common(layer_call* call, int typenum, x, h0, w_ih, w_hh, batch_sizes,
                     bint reverse, bint relu, out, bint out_written) except -1:
    """Checks the arrays both passes use; x and h0 fix N, I, B and H, batch_sizes T."""
    cdef rows_view v
    take(x, "x", typenum, 2, -1, -1, "(N, I)", True, False, &v)
    call.x, call.N, call.input_size = v.data, v.rows, v.cols
    take(h0, "h0", typenum, 2, -1, -1, "(B, H)", True, False, &v)
    call.h0, call.B, call.H = v.data, v.rows, v.cols
    take(w_ih, "w_ih", typenum, 2, call.H, call.input_size, "(H, I)", True, False, &v)
    call.w_ih = v.data
    take(w_hh, "w_hh", typenum, 2, call.H, call.H, "(H, H)", True, False, &v)
    call.w_hh = v.data
    call.walk.batch_sizes = take_batch_sizes(batch_sizes, call.N, call.B, &call.walk.T,
                                             &call.equal_lengths)
    call.walk.reverse, call.walk.offsets, call.relu = reverse, NULL, relu
    take(out, "out", typenum, 2, call.N, call.H, "(N, H)", False, out_written, &v)
    call.out, call.ld_out = v.data, v.ld
    return 0


def rnn_forward_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, bint reverse, bint relu, out,
                    h_n):
    """One layer, one direction, forward (see the module docstring and the backend contract):
    x [N, I], h0 [B, H], w_ih [H, I], w_hh [H, H], b_ih/b_hh [H] or both None, batch_sizes [T]
    int64; writes out [N, H] (rows evenly spaced, e.g. half of [N, 2H]) and h_n [B, H]."""
    cdef layer_call call
    cdef rows_view v
    cdef int typenum = float_type(x, "x")
    take_common(&call, typenum, x, h0, w_ih, w_hh, batch_sizes, reverse, relu, out, True)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays [H] or both be None (no bias)")
    call.b_ih = take_optional_vector(b_ih, "b_ih", typenum, call.H, False)
    call.b_hh = take_optional_vector(b_hh, "b_hh", typenum, call.H, False)
    take(h_n, "h_n", typenum, 2, call.B, call.H, "(B, H)", True, True, &v)
    call.h_n = v.data
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            forward(&call, <float*>call.out)
    else:
        with nogil:
            forward(&call, <double*>call.out)


def rnn_backward_cpu(x, h0, w_ih, w_hh, batch_sizes, bint reverse, bint relu, out, grad_out,
                     grad_hn, grad_x, bint accumulate_x, grad_h0, grad_w_ih, grad_w_hh,
                     grad_b_ih, grad_b_hh):
    """One layer, one direction, BPTT (see the module docstring and the backend contract):
    out [N, H] the forward's output, grad_out [N, H] (both rows evenly spaced), grad_hn [B, H];
    writes grad_x [N, I] (or adds to it: accumulate_x) and grad_h0 [B, H]; adds to grad_w_ih
    [H, I], grad_w_hh [H, H] and grad_b_ih/grad_b_hh [H] (each may be None)."""
    cdef layer_call call
    cdef rows_view v
    cdef int typenum = float_type(x, "x")
    cdef Py_ssize_t I
    take_common(&call, typenum, x, h0, w_ih, w_hh, batch_sizes, reverse, relu, out, False)
    I = call.input_size
    take(grad_out, "grad_out", typenum, 2, call.N, call.H, "(N, H)", False, False, &v)
    call.grad_out, call.ld_grad_out = v.data, v.ld
    take(grad_hn, "grad_hn", typenum, 2, call.B, call.H, "(B, H)", True, False, &v)
    call.grad_hn = v.data
    take(grad_x, "grad_x", typenum, 2, call.N, I, "(N, I)", True, True, &v)
    call.grad_x, call.accumulate_x = v.data, accumulate_x
    take(grad_h0, "grad_h0", typenum, 2, call.B, call.H, "(B, H)", True, True, &v)
    call.grad_h0 = v.data
    take(grad_w_ih, "grad_w_ih", typenum, 2, call.H, I, "(H, I)", True, True, &v)
    call.grad_w_ih = v.data
    take(grad_w_hh, "grad_w_hh", typenum, 2, call.H, call.H, "(H, H)", True, True, &v)
    call.grad_w_hh = v.data
    call.grad_b_ih = take_optional_vector(grad_b_ih, "grad_b_ih", typenum, call.H, True)
    call.grad_b_hh = take_optional_vector(grad_b_hh, "grad_b_hh", typenum, call.H, True)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            backward(&call, <const float*>call.out)
    else:
        with nogil:
            backward(&call, <const double*>call.out)


# ---- forward --------------------------------------------------------------------------------
cdef int forward(layer_call* call, floating* out) except -1 nogil:
    """out = act(x W_ih^T + b_ih + h_prev W_hh^T + b_hh) step by step; h_n."""
    cdef product_config cfg = call_config()
    if call.walk.T == 0 or call.H == 0:
        return 0
    set_offsets(&call.walk)
    try:
        fill_biases(call, out)
        # out[N, H] += x[N, I] . W_ih^T: the input projection of every step at once
        matmul(&cfg, call.N, call.H, call.input_size, <const floating*>call.x, call.input_size,
               <const floating*>call.w_ih, call.input_size, True, True, out, call.ld_out)
        run_forward_steps(&cfg, call, out)
        copy_final_states(call, out)
    finally:
        free_offsets(&call.walk)
    return 0


cdef void fill_biases(const layer_call* call, floating* out) noexcept nogil:
    """Every row of out [N, H] = b_ih + b_hh (zeros without biases)."""
    cdef Py_ssize_t r, j
    cdef const floating* b_ih = <const floating*>call.b_ih
    cdef const floating* b_hh = <const floating*>call.b_hh
    if b_ih == NULL:
        for r in range(call.N):
            memset(out + r * call.ld_out, 0, call.H * sizeof(floating))
        return
    for j in range(call.H):
        out[j] = b_ih[j] + b_hh[j]
    for r in range(1, call.N):
        memcpy(out + r * call.ld_out, out, call.H * sizeof(floating))


cdef int run_forward_steps(const product_config* cfg, const layer_call* call,
                           floating* out) except -1 nogil:   # out [N, H] rows ld_out apart
    """Each step's rows: out_t = act(out_t + h_prev W_hh^T), h_prev from the step before in
    the walk for the rows it carries, from h0 for the rows that start here."""
    cdef const packed_walk* walk = &call.walk
    cdef step_plan plan
    cdef Py_ssize_t s, t, carried, ld = call.ld_out, H = call.H
    cdef const floating* h0 = <const floating*>call.h0
    cdef int epilogue = STEP_RELU if call.relu else STEP_TANH
    alloc_plan(&plan, walk.T, 2, H, H)
    for s in range(walk.T):
        t = walk_step(walk, s)
        carried = carried_rows(walk, t, before(walk, t))
        begin_round(&plan, s)
        if carried:
            add_block(&plan, s, out + walk.offsets[before(walk, t)] * ld, ld,
                      out + walk.offsets[t] * ld, ld, NULL, 0, carried, epilogue)
        add_block(&plan, s, h0 + carried * H, H, out + (walk.offsets[t] + carried) * ld, ld,
                  NULL, 0, walk.batch_sizes[t] - carried, epilogue)
    return run_recurrent_plan(cfg, call, &plan, <const floating*>call.w_hh, True)


cdef int run_recurrent_plan(const product_config* cfg, const layer_call* call, step_plan* plan,
                            const floating* w_hh,            # [H, H]
                            bint transposed) except -1 nogil:
    """Runs a time loop's plan with B = W_hh^T (forward) or W_hh (backward); frees the plan."""
    try:
        run_plan(cfg, plan, w_hh, call.H, transposed, call.N, step_threads(cfg, call.B, call.H))
    finally:
        free_plan(plan)
    return 0


cdef void copy_final_states(const layer_call* call, const floating* out) noexcept nogil:
    """h_n[b] [B, H] = out of row b at its sequence's last step in the walk."""
    cdef const packed_walk* walk = &call.walk
    cdef Py_ssize_t t, b, H = call.H
    cdef floating* h_n = <floating*>call.h_n
    for t in range(walk.T):
        for b in range(first_ending_row(walk, t), walk.batch_sizes[t]):
            memcpy(h_n + b * H, out + (walk.offsets[t] + b) * call.ld_out, H * sizeof(floating))


# ---- backward -------------------------------------------------------------------------------
cdef int backward(layer_call* call, const floating* out) except -1 nogil:
    """g = dL/da row by row through the walk backwards; then the products over all N rows."""
    cdef product_config cfg = call_config()
    cdef floating* g = NULL           # [N, H]  dL/da of every row
    cdef Py_ssize_t N = call.N, I = call.input_size, H = call.H
    if call.walk.T == 0:
        return 0
    if H == 0:
        if not call.accumulate_x:
            memset(call.grad_x, 0, N * I * sizeof(floating))
        return 0
    set_offsets(&call.walk)
    try:
        g = <floating*>malloc(N * H * sizeof(floating))
        if g == NULL:
            with gil:
                raise MemoryError(f"could not allocate dL/da [{N}, {H}]")
        start_gradients(call, g)
        run_backward_steps(&cfg, call, out, g)
        # dW_ih += G^T X, dW_hh += G^T H_prev, dX = G W_ih: one product each over all N rows
        add_weight_gradient(&cfg, H, I, N, g, H, <const floating*>call.x, I,
                            <floating*>call.grad_w_ih, I)
        add_recurrent_weight_gradient(&cfg, call, out, g)
        matmul(&cfg, N, I, H, g, H, <const floating*>call.w_ih, I, False, call.accumulate_x,
               <floating*>call.grad_x, I)
        add_bias_gradients(call, g)
    finally:
        free(g)
        free_offsets(&call.walk)
    return 0


cdef void start_gradients(const layer_call* call, floating* g) noexcept nogil:
    """g [N, H] = grad_out, plus grad_hn on each sequence's last step in the walk."""
    cdef const packed_walk* walk = &call.walk
    cdef Py_ssize_t r, t, b, j, H = call.H
    cdef const floating* grad_out = <const floating*>call.grad_out
    cdef const floating* grad_hn = <const floating*>call.grad_hn
    cdef floating* row
    for r in range(call.N):
        memcpy(g + r * H, grad_out + r * call.ld_grad_out, H * sizeof(floating))
    for t in range(walk.T):
        for b in range(first_ending_row(walk, t), walk.batch_sizes[t]):
            row = g + (walk.offsets[t] + b) * H
            for j in range(H):
                row[j] += grad_hn[b * H + j]


cdef int run_backward_steps(const product_config* cfg, const layer_call* call,
                            const floating* out, floating* g) except -1 nogil:
    """The walk backwards over g [N, H] (out [N, H] rows ld_out apart). First the last step's
    g *= act'(h); then for each step t, from the last to the first, with p the step before it:
    the rows t carried on from p get g_p = (g_p + g_t W_hh) * act'(h_p), the other rows of p
    only * act'(h_p), and the rows that started at t write g_t W_hh into grad_h0."""
    cdef const packed_walk* walk = &call.walk
    cdef step_plan plan
    cdef Py_ssize_t s, t, p, carried, rounds = 0, ld = call.ld_out, H = call.H
    cdef floating* grad_h0 = <floating*>call.grad_h0
    cdef int grad = STEP_RELU_GRAD if call.relu else STEP_TANH_GRAD
    alloc_plan(&plan, walk.T + 1, 3, H, H)
    t = walk_step(walk, walk.T - 1)
    begin_round(&plan, 0)
    add_block(&plan, 0, NULL, 0, g + walk.offsets[t] * H, H, out + walk.offsets[t] * ld, ld,
              walk.batch_sizes[t], grad)
    for s in range(walk.T - 1, -1, -1):
        t, rounds = walk_step(walk, s), rounds + 1
        p = before(walk, t)
        carried = carried_rows(walk, t, p)
        begin_round(&plan, rounds)
        if carried:
            add_block(&plan, rounds, g + walk.offsets[t] * H, H, g + walk.offsets[p] * H, H,
                      out + walk.offsets[p] * ld, ld, carried, grad)
            add_block(&plan, rounds, NULL, 0, g + (walk.offsets[p] + carried) * H, H,
                      out + (walk.offsets[p] + carried) * ld, ld,
                      walk.batch_sizes[p] - carried, grad)
        add_block(&plan, rounds, g + (walk.offsets[t] + carried) * H, H, grad_h0 + carried * H,
                  H, NULL, 0, walk.batch_sizes[t] - carried, STEP_ASSIGN)
    return run_recurrent_plan(cfg, call, &plan, <const floating*>call.w_hh, False)


cdef int add_recurrent_weight_gradient(const product_config* cfg, const layer_call* call,
                                       const floating* out,   # [N, H] rows ld_out apart
                                       const floating* g) except -1 nogil:   # [N, H]
    """dW_hh += sum over rows of g_row^T h_prev_row. Equal lengths: h_prev of step t's rows is
    step t-1 (t+1 in reverse) in the same order, so two products over shifted slices; ragged:
    one product with the h_prev rows gathered."""
    cdef Py_ssize_t T = call.walk.T, B = call.B, H = call.H, ld = call.ld_out
    cdef Py_ssize_t first = T - 1 if call.walk.reverse else 0     # the step that reads h0
    cdef floating* grad_w_hh = <floating*>call.grad_w_hh
    cdef floating* h_prev
    if call.equal_lengths:
        add_weight_gradient(cfg, H, H, B, g + first * B * H, H, <const floating*>call.h0, H,
                            grad_w_hh, H)
        if call.walk.reverse:
            add_weight_gradient(cfg, H, H, (T - 1) * B, g, H, out + B * ld, ld, grad_w_hh, H)
        else:
            add_weight_gradient(cfg, H, H, (T - 1) * B, g + B * H, H, out, ld, grad_w_hh, H)
        return 0
    h_prev = <floating*>malloc(call.N * H * sizeof(floating))
    if h_prev == NULL:
        with gil:
            raise MemoryError(f"could not allocate the previous states [{call.N}, {H}]")
    gather_previous_states(call, out, h_prev)
    add_weight_gradient(cfg, H, H, call.N, g, H, h_prev, H, grad_w_hh, H)
    free(h_prev)
    return 0


cdef void gather_previous_states(const layer_call* call,
                                 const floating* out,               # [N, H] rows ld_out apart
                                 floating* h_prev) noexcept nogil:  # [N, H]
    """h_prev: the state each row's step started from (the row of the step before in the
    walk, or h0 for a row that starts there)."""
    cdef const packed_walk* walk = &call.walk
    cdef Py_ssize_t t, p, b, carried, H = call.H
    cdef const floating* h0 = <const floating*>call.h0
    for t in range(walk.T):
        p = before(walk, t)
        carried = carried_rows(walk, t, p)
        for b in range(carried):
            memcpy(h_prev + (walk.offsets[t] + b) * H, out + (walk.offsets[p] + b) * call.ld_out,
                   H * sizeof(floating))
        memcpy(h_prev + (walk.offsets[t] + carried) * H, h0 + carried * H,
               (walk.batch_sizes[t] - carried) * H * sizeof(floating))


cdef int add_bias_gradients(const layer_call* call, const floating* g) except -1 nogil:
    """grad_b_ih and grad_b_hh [H] each += the column sums of g [N, H] (both biases enter a_t
    alike)."""
    cdef Py_ssize_t r, j, H = call.H
    cdef floating* grad_b_ih = <floating*>call.grad_b_ih
    cdef floating* grad_b_hh = <floating*>call.grad_b_hh
    cdef floating* sums
    if grad_b_ih == NULL and grad_b_hh == NULL:
        return 0
    sums = <floating*>malloc(H * sizeof(floating))
    if sums == NULL:
        with gil:
            raise MemoryError(f"could not allocate the bias gradient [{H}]")
    memset(sums, 0, H * sizeof(floating))
    for r in range(call.N):
        for j in range(H):
            sums[j] += g[r * H + j]
    for j in range(H):
        if grad_b_ih != NULL:
            grad_b_ih[j] += sums[j]
        if grad_b_hh != NULL:
            grad_b_hh[j] += sums[j]
    free(sums)
    return 0
