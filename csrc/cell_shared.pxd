# What every cell's kernels (Elman, LSTM, GRU) do around their time loop, on the packed layout
# (packed_steps.pxd): run the loop's plan, fill rows with the biases, copy the final states,
# start the state gradients, and the products after the loop that pair each row with the state
# its step started from.
#
# Why here: the cells differ in their gates, not in how the packed rows are walked. Each
# helper takes plain pointers and widths (h is P wide, c is H wide, a row of gates G*H), so the
# same code serves every cell and both dtypes (Cython's fused type).
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from cpu_products cimport add_weight_gradient, product_config, run_plan
from gate_cells cimport gate_cell_passes, gate_cells_f64
from packed_steps cimport before, carried_rows, first_ending_row, free_plan, packed_walk
from step_jobs cimport step_plan


cdef inline void* alloc_rows(Py_ssize_t rows, Py_ssize_t width, size_t itemsize,
                             const char* what) except NULL nogil:
    """Memory for [rows, width] items (free with free()); MemoryError naming ``what``."""
    cdef void* memory = malloc(max(rows * width, 1) * itemsize)
    if memory == NULL:
        with gil:
            raise MemoryError(f"could not allocate {what.decode()} [{rows}, {width}]")
    return memory


cdef inline const gate_cell_passes* cell_passes(const product_config* cfg,
                                                bint doubles) noexcept nogil:
    """The gated cells' elementwise passes of a call: the step kernel's variant (float32) or
    float64's."""
    return &gate_cells_f64 if doubles else &cfg.kernel.cells


cdef inline int step_threads(const product_config* cfg, Py_ssize_t batch,
                             double macs_per_row) noexcept nogil:
    """Threads that share each step: the BLAS's count for big steps (batch * macs_per_row
    multiply-adds), else one."""
    if batch * macs_per_row >= cfg.sizes.step_threading_min_macs:
        return cfg.threads
    return 1


cdef inline int run_time_loop(const product_config* cfg, step_plan* plan, bint doubles,
                              Py_ssize_t total_rows, Py_ssize_t batch) except -1 nogil:
    """Runs a time loop's plan (``doubles``: float64) on as many threads as a step of ``batch``
    rows through its first operand is worth; frees the plan."""
    try:
        run_plan(cfg, plan, doubles, total_rows,
                 step_threads(cfg, batch, <double>plan.operands[0].N * plan.operands[0].K))
    finally:
        free_plan(plan)
    return 0


cdef inline void fill_bias_rows(Py_ssize_t rows, Py_ssize_t width,
                                const floating* b_ih,       # [width] or NULL (no bias)
                                const floating* b_hh,       # [b_hh_width], b_hh_width <= width
                                Py_ssize_t b_hh_width,
                                floating* c, Py_ssize_t ldc) noexcept nogil:   # [rows, width]
    """Every row of c = b_ih + b_hh, b_hh added to the first b_hh_width columns only (the GRU
    keeps b_hn out); zeros without biases."""
    cdef Py_ssize_t r, j
    if rows == 0 or width == 0:
        return
    if b_ih == NULL:
        for r in range(rows):
            memset(c + r * ldc, 0, width * sizeof(floating))
        return
    for j in range(width):
        c[j] = b_ih[j] + b_hh[j] if j < b_hh_width else b_ih[j]
    for r in range(1, rows):
        memcpy(c + r * ldc, c, width * sizeof(floating))


cdef inline floating* fold_biases(const floating* b_ih,     # [width] or NULL (no bias)
                                  const floating* b_hh,     # [b_hh_width]
                                  Py_ssize_t width, Py_ssize_t b_hh_width) except? NULL nogil:
    """b_ih + b_hh as one [width] vector for a gate pass to add (b_hh to the first b_hh_width
    entries only); NULL without biases. Free with free()."""
    cdef floating* folded
    if b_ih == NULL:
        return NULL
    folded = <floating*>alloc_rows(1, width, sizeof(floating), "the folded biases")
    fill_bias_rows(1, width, b_ih, b_hh, b_hh_width, folded, width)
    return folded


cdef inline void copy_final_states(const packed_walk* walk, Py_ssize_t width,
                                   const floating* states, Py_ssize_t ld,   # [N, width]
                                   floating* final) noexcept nogil:         # [B, width]
    """final[b] = the row of ``states`` at sequence b's last step in the walk (h_n, c_n)."""
    cdef Py_ssize_t t, b
    if width == 0:
        return
    for t in range(walk.T):
        for b in range(first_ending_row(walk, t), walk.batch_sizes[t]):
            memcpy(final + b * width, states + (walk.offsets[t] + b) * ld,
                   width * sizeof(floating))


cdef inline void start_state_gradients(const packed_walk* walk, Py_ssize_t width,
                                       const floating* grad_out,     # [N, width]
                                       Py_ssize_t ld_grad_out,
                                       const floating* grad_final,   # [B, width]
                                       floating* g) noexcept nogil:  # [N, width]
    """g = grad_out, plus grad_final (grad_hn) on each sequence's last step in the walk: dL/dh
    of every row before the recurrence adds what flows back from the later steps."""
    cdef Py_ssize_t r, t, b, j
    cdef floating* row
    if width == 0:
        return
    for r in range(walk.offsets[walk.T]):
        memcpy(g + r * width, grad_out + r * ld_grad_out, width * sizeof(floating))
    for t in range(walk.T):
        for b in range(first_ending_row(walk, t), walk.batch_sizes[t]):
            row = g + (walk.offsets[t] + b) * width
            for j in range(width):
                row[j] += grad_final[b * width + j]


cdef inline void gather_previous_states(const packed_walk* walk, Py_ssize_t width,
                                        const floating* out, Py_ssize_t ld_out,  # [N, width]
                                        const floating* h0,                     # [B, width]
                                        floating* h_prev) noexcept nogil:       # [N, width]
    """h_prev: the state each row's step started from (the row of the step before in the
    walk, or h0 for a row that starts there)."""
    cdef Py_ssize_t t, p, b, carried
    if width == 0:
        return
    for t in range(walk.T):
        p = before(walk, t)
        carried = carried_rows(walk, t, p)
        for b in range(carried):
            memcpy(h_prev + (walk.offsets[t] + b) * width, out + (walk.offsets[p] + b) * ld_out,
                   width * sizeof(floating))
        memcpy(h_prev + (walk.offsets[t] + carried) * width, h0 + carried * width,
               (walk.batch_sizes[t] - carried) * width * sizeof(floating))


cdef inline int add_recurrent_weight_gradient(const product_config* cfg, const packed_walk* walk,
                                              bint equal_lengths, Py_ssize_t M, Py_ssize_t width,
                                              const floating* g, Py_ssize_t ldg,     # [N, M]
                                              const floating* out, Py_ssize_t ld_out,  # [N, width]
                                              const floating* h0,                    # [B, width]
                                              floating* grad_w) except -1 nogil:     # [M, width]
    """dW_hh += sum over rows of g_row^T h_prev_row. Equal lengths: h_prev of step t's rows is
    step t-1 (t+1 in reverse) in the same order, so two products over shifted slices; ragged:
    one product with the h_prev rows gathered."""
    cdef Py_ssize_t T = walk.T, B = walk.batch_sizes[0], N = walk.offsets[walk.T]
    cdef Py_ssize_t first = T - 1 if walk.reverse else 0     # the step that reads h0
    cdef floating* h_prev
    if equal_lengths:
        add_weight_gradient(cfg, M, width, B, g + first * B * ldg, ldg, h0, width, grad_w, width)
        if walk.reverse:
            add_weight_gradient(cfg, M, width, (T - 1) * B, g, ldg, out + B * ld_out, ld_out,
                                grad_w, width)
        else:
            add_weight_gradient(cfg, M, width, (T - 1) * B, g + B * ldg, ldg, out, ld_out,
                                grad_w, width)
        return 0
    h_prev = <floating*>malloc(N * width * sizeof(floating))
    if h_prev == NULL:
        with gil:
            raise MemoryError(f"could not allocate the previous states [{N}, {width}]")
    gather_previous_states(walk, width, out, ld_out, h0, h_prev)
    add_weight_gradient(cfg, M, width, N, g, ldg, h_prev, width, grad_w, width)
    free(h_prev)
    return 0


cdef inline int add_column_sums(Py_ssize_t rows, Py_ssize_t width,
                                const floating* g, Py_ssize_t ldg,   # [rows, width]
                                floating* first,                     # [width] or NULL
                                floating* second) except -1 nogil:   # [width] or NULL
    """first and second += the column sums of g (the bias gradients)."""
    cdef Py_ssize_t r, j
    cdef floating* sums
    if (first == NULL and second == NULL) or width == 0:
        return 0
    sums = <floating*>malloc(width * sizeof(floating))
    if sums == NULL:
        with gil:
            raise MemoryError(f"could not allocate the bias gradient [{width}]")
    memset(sums, 0, width * sizeof(floating))
    for r in range(rows):
        for j in range(width):
            sums[j] += g[r * ldg + j]
    for j in range(width):
        if first != NULL:
            first[j] += sums[j]
        if second != NULL:
            second[j] += sums[j]
    free(sums)
    return 0
