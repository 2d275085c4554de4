# The time walk over a packed batch, and the step plans built on it; for every cell's kernels.
#
# The packed layout (fastrnn/backends/__init__.py): step t holds the first B_t = batch_sizes[t]
# sequences of a batch sorted by decreasing length, in rows [offsets[t], offsets[t + 1]).
# A direction walks t = 0 .. T-1 (forward) or T-1 .. 0 (reverse). At step t, the rows
# [0, carried) continue from the step before it in the walk and the rows [carried, B_t) start
# there from h0 (carried = min(B_t, B_before), 0 at the walk's first step); symmetrically the
# rows of step t that the step after it does not carry end their sequence at t (h_n, and
# where grad_hn enters). A time loop is then a step plan (step_jobs.h): rounds of blocks of
# rows, built here once per call.
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from step_jobs cimport step_block, step_operand, step_plan


cdef struct packed_walk:
    Py_ssize_t T
    const int64_t* batch_sizes        # [T]
    Py_ssize_t* offsets               # [T + 1]: step t's rows are [offsets[t], offsets[t + 1])
    bint reverse


cdef inline Py_ssize_t walk_step(const packed_walk* walk, Py_ssize_t s) noexcept nogil:
    """The step visited s-th (forward: t = s; reverse: t = T-1-s)."""
    return walk.T - 1 - s if walk.reverse else s


cdef inline Py_ssize_t before(const packed_walk* walk, Py_ssize_t t) noexcept nogil:
    """The step before t in the walk (may be out of range)."""
    return t + 1 if walk.reverse else t - 1


cdef inline Py_ssize_t after(const packed_walk* walk, Py_ssize_t t) noexcept nogil:
    """The step after t in the walk (may be out of range)."""
    return t - 1 if walk.reverse else t + 1


cdef inline Py_ssize_t carried_rows(const packed_walk* walk, Py_ssize_t t,
                                    Py_ssize_t previous) noexcept nogil:
    """How many rows of step t continue from step ``previous``, the step before t in the walk
    (none when either is out of range)."""
    if previous < 0 or previous >= walk.T or t < 0 or t >= walk.T:
        return 0
    return min(walk.batch_sizes[t], walk.batch_sizes[previous])


cdef inline Py_ssize_t first_ending_row(const packed_walk* walk, Py_ssize_t t) noexcept nogil:
    """Rows [first_ending_row, B_t) of step t end their sequence there (in this walk)."""
    return carried_rows(walk, after(walk, t), t)


cdef inline int set_offsets(packed_walk* walk) except -1 nogil:
    """Fills walk.offsets (allocated here; free_offsets releases it)."""
    cdef Py_ssize_t t
    walk.offsets = <Py_ssize_t*>malloc((walk.T + 1) * sizeof(Py_ssize_t))
    if walk.offsets == NULL:
        with gil:
            raise MemoryError("could not allocate the step offsets")
    walk.offsets[0] = 0
    for t in range(walk.T):
        walk.offsets[t + 1] = walk.offsets[t] + walk.batch_sizes[t]
    return 0


cdef inline void free_offsets(packed_walk* walk) noexcept nogil:
    free(walk.offsets)
    walk.offsets = NULL


cdef inline int alloc_plan(step_plan* plan, Py_ssize_t n_rounds, Py_ssize_t blocks_per_round,
                           Py_ssize_t rounds_per_step) except -1 nogil:
    """A plan of n_rounds rounds of up to blocks_per_round blocks, each time step
    rounds_per_step rounds, no operands yet (free_plan frees it)."""
    cdef step_block* blocks = <step_block*>malloc(n_rounds * blocks_per_round * sizeof(step_block))
    cdef Py_ssize_t* round_start = <Py_ssize_t*>malloc((n_rounds + 1) * sizeof(Py_ssize_t))
    if blocks == NULL or round_start == NULL:
        free(blocks)
        free(round_start)
        with gil:
            raise MemoryError(f"could not allocate the plan of {n_rounds} steps")
    plan.n_rounds, plan.n_operands, plan.cell_pass, plan.units = n_rounds, 0, NULL, 0
    plan.rounds_per_step = rounds_per_step
    plan.blocks, plan.round_start = blocks, round_start
    round_start[0] = 0
    return 0


cdef inline void free_plan(step_plan* plan) noexcept nogil:
    free(<void*>plan.blocks)
    free(<void*>plan.round_start)


cdef inline int add_operand(step_plan* plan, const void* w, Py_ssize_t ldw, bint w_is_transposed,
                            Py_ssize_t N, Py_ssize_t K) noexcept nogil:
    """Adds B [K, N] = w^T (w [N, K] rows ldw apart) if w_is_transposed, else w ([K, N]), to the
    plan's operands (at most MAX_STEP_OPERANDS); returns its index for add_block."""
    plan.operands[plan.n_operands] = step_operand(N=N, K=K, panels=0, packed=NULL, w=w, ldw=ldw,
                                                  w_is_transposed=w_is_transposed)
    plan.n_operands += 1
    return plan.n_operands - 1


cdef inline void append_block(step_plan* plan, Py_ssize_t round, step_block block) noexcept nogil:
    """Appends ``block`` to round ``round`` (the last one begun) unless it has no rows; its
    panels run in descending order every other time step."""
    cdef Py_ssize_t* round_start = <Py_ssize_t*>plan.round_start
    cdef Py_ssize_t n = round_start[round + 1]
    block.descending = round // plan.rounds_per_step % 2
    if block.m > 0:
        (<step_block*>plan.blocks)[n] = block
        round_start[round + 1] = n + 1


cdef inline void add_block(step_plan* plan, Py_ssize_t round, const void* a, Py_ssize_t lda,
                           void* c, Py_ssize_t ldc, const void* h, Py_ssize_t ldh,
                           Py_ssize_t m, int epilogue, int operand=0) noexcept nogil:
    """Appends a product block of m rows to round ``round``: c[m, N] = epilogue(c + a . B) with
    B the plan's operand ``operand``, or epilogue(c) for a == NULL."""
    append_block(plan, round, step_block(a=a, lda=lda, c=c, ldc=ldc, h=h, ldh=ldh, m=m,
                                         epilogue=epilogue, operand=operand, descending=0,
                                         cell=NULL))


cdef inline void add_cell_block(step_plan* plan, Py_ssize_t round, const void* rows,
                                Py_ssize_t m) noexcept nogil:
    """Appends the plan's cell pass over ``rows`` (an lstm_rows or gru_rows of m rows)."""
    append_block(plan, round, step_block(a=NULL, lda=0, c=NULL, ldc=0, h=NULL, ldh=0, m=m,
                                         epilogue=0, operand=0, descending=0, cell=rows))


cdef inline void begin_round(step_plan* plan, Py_ssize_t round) noexcept nogil:
    """Starts round ``round`` (0, 1, ... in order) with no blocks."""
    (<Py_ssize_t*>plan.round_start)[round + 1] = plan.round_start[round]
