# The Elman cell (torch's RNN, tanh or relu); included by rnn_cpu.pyx, whose docstring says how
# every cell is built, and whose configuration (call_config) and checks (take_*) it uses.
#
# Forward, for the rows [0, B_t) that step t computes (sequences longer than t):
#     a_t = x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh            h_t = act(a_t)
#     h_prev: the previous step's state of each row in the walk (t-1 forward, t+1 reverse), or
#     h0 for a row that starts at step t (step 0 forward; its own last step in reverse).
# Backward (BPTT), mirroring it:
#     g_t = (dY_t + dH_t) * act'(h_t)   dH_t: g_next W_hh from the step after t in the walk, or
#     grad_hn for a row whose sequence ends at t;   grad_h0 = g W_hh of each row at its first step
#     dW_ih += G^T X   dW_hh += G^T H_prev   dX = G W_ih   db_ih = db_hh = column sums of G
# It must match fastrnn/backends/reference.py (the oracle), which writes the same loops plainly.
# The activation (forward) and its derivative (backward) run in the step product's epilogue:
# the whole step is one round of the plan.
from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from cell_shared cimport (add_column_sums, add_recurrent_weight_gradient, copy_final_states,
                          fill_bias_rows, run_time_loop, start_state_gradients)
from cpu_products cimport add_weight_gradient, matmul
from packed_steps cimport (add_block, add_operand, alloc_plan, before, begin_round,
                           carried_rows, free_offsets, set_offsets, walk_step)
from step_gemm cimport (STEP_ASSIGN, STEP_RELU, STEP_RELU_GRAD, STEP_TANH, STEP_TANH_GRAD)
from step_jobs cimport step_plan


def rnn_forward_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, bint reverse, bint relu, out,
                    h_n):
    """One layer, one direction, forward (see the module docstring and the backend contract):
    x [N, I], h0 [B, H], w_ih [H, I], w_hh [H, H], b_ih/b_hh [H] or both None, batch_sizes [T]
    int64; writes out [N, H] (rows evenly spaced, e.g. half of [N, 2H]) and h_n [B, H]."""
    cdef layer_call call
    cdef rows_view v
    cdef int typenum = float_type(x, "x")
    take_inputs(&call, typenum, 1, x, h0, batch_sizes, reverse)
    call.relu = relu
    take_weights(&call, typenum, w_ih, w_hh, b_ih, b_hh)
    take_out(&call, typenum, out, True)
    take(h_n, "h_n", typenum, 2, call.B, call.H, "(B, H)", True, True, &v)
    call.h_n = v.data
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            rnn_forward(&call, <float*>call.out)
    else:
        with nogil:
            rnn_forward(&call, <double*>call.out)


def rnn_backward_cpu(x, h0, w_ih, w_hh, batch_sizes, bint reverse, bint relu, out, grad_out,
                     grad_hn, grad_x, bint accumulate_x, grad_h0, grad_w_ih, grad_w_hh,
                     grad_b_ih, grad_b_hh):
    """One layer, one direction, BPTT (see the module docstring and the backend contract):
    out [N, H] the forward's output, grad_out [N, H] (both rows evenly spaced), grad_hn [B, H];
    writes grad_x [N, I] (or adds to it: accumulate_x) and grad_h0 [B, H]; adds to grad_w_ih
    [H, I], grad_w_hh [H, H] and grad_b_ih/grad_b_hh [H] (each may be None)."""
    cdef layer_call call
    cdef int typenum = float_type(x, "x")
    take_inputs(&call, typenum, 1, x, h0, batch_sizes, reverse)
    call.relu = relu
    take_weights(&call, typenum, w_ih, w_hh, None, None)
    take_out(&call, typenum, out, False)
    take_state_gradients(&call, typenum, grad_out, grad_hn, grad_x, accumulate_x, grad_h0)
    take_weight_gradients(&call, typenum, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            rnn_backward(&call, <const float*>call.out)
    else:
        with nogil:
            rnn_backward(&call, <const double*>call.out)


# ---- forward --------------------------------------------------------------------------------
cdef int rnn_forward(layer_call* call, floating* out) except -1 nogil:
    """out = act(x W_ih^T + b_ih + h_prev W_hh^T + b_hh) step by step; h_n."""
    cdef product_config cfg = call_config()
    if call.walk.T == 0 or call.H == 0:
        return 0
    set_offsets(&call.walk)
    try:
        fill_bias_rows(call.N, call.H, <const floating*>call.b_ih, <const floating*>call.b_hh,
                       call.H, out, call.ld_out)
        # out[N, H] += x[N, I] . W_ih^T: the input projection of every step at once
        matmul(&cfg, call.N, call.H, call.input_size, <const floating*>call.x, call.input_size,
               <const floating*>call.w_ih, call.input_size, True, True, out, call.ld_out)
        run_forward_steps(&cfg, call, out)
        copy_final_states(&call.walk, call.H, <const floating*>out, call.ld_out,
                          <floating*>call.h_n)
    finally:
        free_offsets(&call.walk)
    return 0


cdef int run_forward_steps(const product_config* cfg, const layer_call* call,
                           floating* out) except -1 nogil:   # out [N, H] rows ld_out apart
    """Each step's rows: out_t = act(out_t + h_prev W_hh^T), h_prev from the step before in
    the walk for the rows it carries, from h0 for the rows that start here."""
    cdef const packed_walk* walk = &call.walk
    cdef step_plan plan
    cdef Py_ssize_t s, t, carried, ld = call.ld_out, H = call.H
    cdef const floating* h0 = <const floating*>call.h0
    cdef int epilogue = STEP_RELU if call.relu else STEP_TANH
    alloc_plan(&plan, walk.T, 2, 1)
    add_operand(&plan, call.w_hh, H, True, H, H)        # B = W_hh^T
    for s in range(walk.T):
        t = walk_step(walk, s)
        carried = carried_rows(walk, t, before(walk, t))
        begin_round(&plan, s)
        if carried:
            add_block(&plan, s, out + walk.offsets[before(walk, t)] * ld, ld,
                      out + walk.offsets[t] * ld, ld, NULL, 0, carried, epilogue)
        add_block(&plan, s, h0 + carried * H, H, out + (walk.offsets[t] + carried) * ld, ld,
                  NULL, 0, walk.batch_sizes[t] - carried, epilogue)
    return run_time_loop(cfg, &plan, floating is double, call.N, call.B)


# ---- backward -------------------------------------------------------------------------------
cdef int rnn_backward(layer_call* call, const floating* out) except -1 nogil:
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
        start_state_gradients(&call.walk, H, <const floating*>call.grad_out, call.ld_grad_out,
                              <const floating*>call.grad_hn, g)
        run_backward_steps(&cfg, call, out, g)
        # dW_ih += G^T X, dW_hh += G^T H_prev, dX = G W_ih: one product each over all N rows
        add_weight_gradient(&cfg, H, I, N, g, H, <const floating*>call.x, I,
                            <floating*>call.grad_w_ih, I)
        add_recurrent_weight_gradient(&cfg, &call.walk, call.equal_lengths, H, H, g, H, out,
                                      call.ld_out, <const floating*>call.h0,
                                      <floating*>call.grad_w_hh)
        matmul(&cfg, N, I, H, g, H, <const floating*>call.w_ih, I, False, call.accumulate_x,
               <floating*>call.grad_x, I)
        # both biases enter a_t alike
        add_column_sums(N, H, g, H, <floating*>call.grad_b_ih, <floating*>call.grad_b_hh)
    finally:
        free(g)
        free_offsets(&call.walk)
    return 0


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
    alloc_plan(&plan, walk.T + 1, 3, 1)
    add_operand(&plan, call.w_hh, H, False, H, H)       # B = W_hh
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
    return run_time_loop(cfg, &plan, floating is double, call.N, call.B)
