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
from step_gemm cimport (STEP_ASSIGN, STEP_RELU, STEP_RELU_GRAD, STEP_TANH, STEP_TANH_GRAD,
                        current_step_kernel, select_step_kernel)
from step_jobs cimport step_block, step_plan

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
    """How many threads would share each step of a layer of this batch and hidden size now
    (the BLAS's thread count for big steps, else 1). For tests and benchmarks."""
    cdef product_config cfg = call_config()
    return cfg.threads if <double>batch * hidden * hidden >= cfg.sizes.step_threading_min_macs else 1


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
    Py_ssize_t T, B, N, H
    Py_ssize_t input_size          # I
    const int64_t* batch_sizes     # [T]
    Py_ssize_t* offsets            # [T + 1]: step t's rows are [offsets[t], offsets[t + 1])
    bint equal_lengths, reverse, relu
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
                     bint reverse, bint relu) except -1:
    """Checks the arrays both passes read; their sizes fix N, I, B, H and T."""
    cdef rows_view v
    take(x, "x", typenum, 2, -1, -1, "(N, I)", True, False, &v)
    call.x, call.N, call.input_size = v.data, v.rows, v.cols
    take(h0, "h0", typenum, 2, -1, -1, "(B, H)", True, False, &v)
    call.h0, call.B, call.H = v.data, v.rows, v.cols
    take(w_ih, "w_ih", typenum, 2, call.H, call.input_size, "(H, I)", True, False, &v)
    call.w_ih = v.data
    take(w_hh, "w_hh", typenum, 2, call.H, call.H, "(H, H)", True, False, &v)
    call.w_hh = v.data
    call.batch_sizes = take_batch_sizes(batch_sizes, call.N, call.B, &call.T,
                                        &call.equal_lengths)
    call.reverse, call.relu = reverse, relu
    return 0


cdef int take_outputs(layer_call* call, int typenum, out, bint out_written) except -1:
    cdef rows_view v
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
    take_common(&call, typenum, x, h0, w_ih, w_hh, batch_sizes, reverse, relu)
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be arrays [H] or both be None (no bias)")
    call.b_ih = take_optional_vector(b_ih, "b_ih", typenum, call.H, False)
    call.b_hh = take_optional_vector(b_hh, "b_hh", typenum, call.H, False)
    take_outputs(&call, typenum, out, True)
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
    take_common(&call, typenum, x, h0, w_ih, w_hh, batch_sizes, reverse, relu)
    take_outputs(&call, typenum, out, False)
    take(grad_out, "grad_out", typenum, 2, call.N, call.H, "(N, H)", False, False, &v)
    call.grad_out, call.ld_grad_out = v.data, v.ld
    take(grad_hn, "grad_hn", typenum, 2, call.B, call.H, "(B, H)", True, False, &v)
    call.grad_hn = v.data
    take(grad_x, "grad_x", typenum, 2, call.N, call.input_size, "(N, I)", True, True, &v)
    call.grad_x, call.accumulate_x = v.data, accumulate_x
    take(grad_h0, "grad_h0", typenum, 2, call.B, call.H, "(B, H)", True, True, &v)
    call.grad_h0 = v.data
    take(grad_w_ih, "grad_w_ih", typenum, 2, call.H, call.input_size, "(H, I)", True, True, &v)
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


# ---- the packed layout ----------------------------------------------------------------------
cdef inline Py_ssize_t walk_step(const layer_call* call, Py_ssize_t s) noexcept nogil:
    """The step visited s-th by the recurrence (forward: t = s; reverse: t = T-1-s)."""
    return call.T - 1 - s if call.reverse else s


cdef inline Py_ssize_t carried_rows(const layer_call* call, Py_ssize_t t,
                                    Py_ssize_t previous) noexcept nogil:
    """How many rows of step t continue from step ``previous``, the step before t in the walk
    (none when either is out of range). Rows [carried, B_t) of step t start there from h0."""
    if previous < 0 or previous >= call.T or t < 0 or t >= call.T:
        return 0
    return min(call.batch_sizes[t], call.batch_sizes[previous])


cdef inline Py_ssize_t before(const layer_call* call, Py_ssize_t t) noexcept nogil:
    """The step before t in the walk (may be out of range)."""
    return t + 1 if call.reverse else t - 1


cdef inline Py_ssize_t after(const layer_call* call, Py_ssize_t t) noexcept nogil:
    """The step after t in the walk (may be out of range)."""
    return t - 1 if call.reverse else t + 1


cdef int set_offsets(layer_call* call) except -1 nogil:
    cdef Py_ssize_t t
    call.offsets = <Py_ssize_t*>malloc((call.T + 1) * sizeof(Py_ssize_t))
    if call.offsets == NULL:
        with gil:
            raise MemoryError("could not allocate the step offsets")
    call.offsets[0] = 0
    for t in range(call.T):
        call.offsets[t + 1] = call.offsets[t] + call.batch_sizes[t]
    return 0


cdef struct plan_storage:          # the blocks and round boundaries of a step plan
    step_block* blocks
    Py_ssize_t* round_start


cdef int alloc_plan(step_plan* plan, plan_storage* storage, Py_ssize_t n_rounds,
                    Py_ssize_t blocks_per_round, Py_ssize_t N, Py_ssize_t K) except -1 nogil:
    storage.blocks = <step_block*>malloc(n_rounds * blocks_per_round * sizeof(step_block) + 1)
    storage.round_start = <Py_ssize_t*>malloc((n_rounds + 1) * sizeof(Py_ssize_t))
    if storage.blocks == NULL or storage.round_start == NULL:
        free(storage.blocks)
        free(storage.round_start)
        with gil:
            raise MemoryError(f"could not allocate the plan of {n_rounds} steps")
    plan.N, plan.K, plan.n_rounds = N, K, n_rounds
    plan.blocks, plan.round_start = storage.blocks, storage.round_start
    return 0


cdef void free_plan(plan_storage* storage) noexcept nogil:
    free(storage.blocks)
    free(storage.round_start)


cdef inline Py_ssize_t add_block(step_block* blocks, Py_ssize_t n, const void* a, Py_ssize_t lda,
                                 void* c, Py_ssize_t ldc, const void* h, Py_ssize_t ldh,
                                 Py_ssize_t m, int epilogue) noexcept nogil:
    """Appends a block of m > 0 rows; returns the new count."""
    if m <= 0:
        return n
    blocks[n] = step_block(a=a, lda=lda, c=c, ldc=ldc, h=h, ldh=ldh, m=m, epilogue=epilogue)
    return n + 1


cdef int step_threads(const product_config* cfg, const layer_call* call) noexcept nogil:
    """Threads that share each step: the BLAS's count for big steps, else one."""
    return cfg.threads if <double>call.B * call.H * call.H >= cfg.sizes.step_threading_min_macs else 1


# ---- forward --------------------------------------------------------------------------------
cdef int forward(layer_call* call, floating* out) except -1 nogil:
    cdef product_config cfg = call_config()
    if call.T == 0 or call.H == 0:
        return 0
    set_offsets(call)
    try:
        fill_biases(call, out)
        # out[N, H] += x[N, I] . W_ih^T: the input projection of every step at once
        matmul(&cfg, call.N, call.H, call.input_size, <const floating*>call.x, call.input_size,
               <const floating*>call.w_ih, call.input_size, True, True, out, call.ld_out)
        run_forward_steps(&cfg, call, out)
        copy_final_states(call, out)
    finally:
        free(call.offsets)
    return 0


cdef void fill_biases(const layer_call* call, floating* out) noexcept nogil:
    """Every row of out = b_ih + b_hh (zeros without biases)."""
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
                           floating* out) except -1 nogil:
    """Each step's rows: out_t = act(out_t + h_prev W_hh^T); h_prev from the step before in
    the walk for the rows it carries, from h0 for the rows that start here."""
    cdef step_plan plan
    cdef plan_storage storage
    cdef Py_ssize_t s, t, carried, n = 0, ld = call.ld_out, H = call.H
    cdef const floating* h0 = <const floating*>call.h0
    cdef int epilogue = STEP_RELU if call.relu else STEP_TANH
    alloc_plan(&plan, &storage, call.T, 2, H, H)
    for s in range(call.T):
        t = walk_step(call, s)
        storage.round_start[s] = n
        carried = carried_rows(call, t, before(call, t))
        if carried:
            n = add_block(storage.blocks, n, out + call.offsets[before(call, t)] * ld, ld,
                          out + call.offsets[t] * ld, ld, NULL, 0, carried, epilogue)
        n = add_block(storage.blocks, n, h0 + carried * H, H,
                      out + (call.offsets[t] + carried) * ld, ld, NULL, 0,
                      call.batch_sizes[t] - carried, epilogue)
    storage.round_start[call.T] = n
    try:
        run_plan(cfg, &plan, <const floating*>call.w_hh, H, True, call.N, step_threads(cfg, call))
    finally:
        free_plan(&storage)
    return 0


cdef void copy_final_states(const layer_call* call, const floating* out) noexcept nogil:
    """h_n[b] = out of row b at its sequence's last step in the walk: the rows of step t that
    the step after it does not carry on."""
    cdef Py_ssize_t t, b, H = call.H
    cdef floating* h_n = <floating*>call.h_n
    for t in range(call.T):
        for b in range(carried_rows(call, after(call, t), t), call.batch_sizes[t]):
            memcpy(h_n + b * H, out + (call.offsets[t] + b) * call.ld_out, H * sizeof(floating))


# ---- backward -------------------------------------------------------------------------------
cdef int backward(layer_call* call, const floating* out) except -1 nogil:
    cdef product_config cfg
    cdef floating* g = NULL           # [N, H]  dL/da of every row
    cfg = call_config()
    if call.T == 0:
        return 0
    if call.H == 0:
        if not call.accumulate_x:
            memset(call.grad_x, 0, call.N * call.input_size * sizeof(floating))
        return 0
    set_offsets(call)
    try:
        g = <floating*>malloc(call.N * call.H * sizeof(floating))
        if g == NULL:
            with gil:
                raise MemoryError(f"could not allocate dL/da [{call.N}, {call.H}]")
        start_gradients(call, g)
        run_backward_steps(&cfg, call, out, g)
        # After the loop, one product each over all N rows.
        add_weight_gradient(&cfg, call.H, call.input_size, call.N, g, call.H, <const floating*>call.x,
                            call.input_size, <floating*>call.grad_w_ih, call.input_size)
        add_recurrent_weight_gradient(&cfg, call, out, g)
        matmul(&cfg, call.N, call.input_size, call.H, g, call.H, <const floating*>call.w_ih, call.input_size,
               False, call.accumulate_x, <floating*>call.grad_x, call.input_size)
        add_bias_gradients(call, g)
    finally:
        free(g)
        free(call.offsets)
    return 0


cdef void start_gradients(const layer_call* call, floating* g) noexcept nogil:
    """g = grad_out, plus grad_hn on each sequence's last step in the walk."""
    cdef Py_ssize_t r, t, b, j, H = call.H
    cdef const floating* grad_out = <const floating*>call.grad_out
    cdef const floating* grad_hn = <const floating*>call.grad_hn
    cdef floating* row
    for r in range(call.N):
        memcpy(g + r * H, grad_out + r * call.ld_grad_out, H * sizeof(floating))
    for t in range(call.T):
        for b in range(carried_rows(call, after(call, t), t), call.batch_sizes[t]):
            row = g + (call.offsets[t] + b) * H
            for j in range(H):
                row[j] += grad_hn[b * H + j]


cdef int run_backward_steps(const product_config* cfg, const layer_call* call,
                            const floating* out, floating* g) except -1 nogil:
    """The walk backwards. First the last step's g *= act'(h); then for each step t, from the
    last to the first: the rows it carried on from the step before (p) get
    g_p = (g_p + g_t W_hh) * act'(h_p), the other rows of p only * act'(h_p), and the rows that
    started at t send g_t W_hh to grad_h0."""
    cdef step_plan plan
    cdef plan_storage storage
    cdef Py_ssize_t s, t, p, carried, rows_p, n = 0, ld = call.ld_out, H = call.H
    cdef floating* grad_h0 = <floating*>call.grad_h0
    cdef int grad = STEP_RELU_GRAD if call.relu else STEP_TANH_GRAD
    alloc_plan(&plan, &storage, call.T + 1, 3, H, H)
    t = walk_step(call, call.T - 1)
    storage.round_start[0] = 0
    n = add_block(storage.blocks, n, NULL, 0, g + call.offsets[t] * H, H,
                  out + call.offsets[t] * ld, ld, call.batch_sizes[t], grad)
    for s in range(call.T - 1, -1, -1):
        t = walk_step(call, s)
        p = before(call, t)
        carried = carried_rows(call, t, p)
        storage.round_start[call.T - s] = n
        if carried:
            rows_p = call.batch_sizes[p]
            n = add_block(storage.blocks, n, g + call.offsets[t] * H, H, g + call.offsets[p] * H,
                          H, out + call.offsets[p] * ld, ld, carried, grad)
            n = add_block(storage.blocks, n, NULL, 0, g + (call.offsets[p] + carried) * H, H,
                          out + (call.offsets[p] + carried) * ld, ld, rows_p - carried, grad)
        n = add_block(storage.blocks, n, g + (call.offsets[t] + carried) * H, H,
                      grad_h0 + carried * H, H, NULL, 0, call.batch_sizes[t] - carried,
                      STEP_ASSIGN)
    storage.round_start[call.T + 1] = n
    try:
        run_plan(cfg, &plan, <const floating*>call.w_hh, H, False, call.N,
                 step_threads(cfg, call))
    finally:
        free_plan(&storage)
    return 0


cdef int add_recurrent_weight_gradient(const product_config* cfg, const layer_call* call,
                                       const floating* out, const floating* g) except -1 nogil:
    """dW_hh += sum over rows of g_row^T h_prev_row. Equal lengths: h_prev of step t's rows is
    step t-1 (t+1 in reverse) in the same order, so two products over shifted slices; ragged:
    one product with the h_prev rows gathered."""
    cdef Py_ssize_t T = call.T, B = call.B, H = call.H, ld = call.ld_out
    cdef Py_ssize_t first = T - 1 if call.reverse else 0     # the step that reads h0
    cdef floating* grad_w_hh = <floating*>call.grad_w_hh
    cdef floating* h_prev
    if call.equal_lengths:
        add_weight_gradient(cfg, H, H, B, g + first * B * H, H, <const floating*>call.h0, H,
                            grad_w_hh, H)
        if call.reverse:
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


cdef void gather_previous_states(const layer_call* call, const floating* out,
                                 floating* h_prev) noexcept nogil:
    """h_prev[N, H]: the state each row's step started from (the row of the step before in the
    walk, or h0 for a row that starts there)."""
    cdef Py_ssize_t t, p, b, carried, H = call.H
    cdef const floating* h0 = <const floating*>call.h0
    for t in range(call.T):
        p = before(call, t)
        carried = carried_rows(call, t, p)
        for b in range(carried):
            memcpy(h_prev + (call.offsets[t] + b) * H, out + (call.offsets[p] + b) * call.ld_out,
                   H * sizeof(floating))
        memcpy(h_prev + (call.offsets[t] + carried) * H, h0 + carried * H,
               (call.batch_sizes[t] - carried) * H * sizeof(floating))


cdef int add_bias_gradients(const layer_call* call, const floating* g) except -1 nogil:
    """grad_b_ih and grad_b_hh each += the column sums of g (both biases enter a_t alike)."""
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
