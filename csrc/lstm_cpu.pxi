# The LSTM cell (torch's nn.LSTM, gate order i f g o, with proj_size); included by rnn_cpu.pyx,
# whose docstring says how every cell is built, and whose configuration (call_config) and
# checks (take_*) it uses. The elementwise maths is in gate_cells.h.
#
# Forward, for the rows [0, B_t) that step t computes (h_prev, c_prev as for the Elman cell:
# the step before in the walk, or h0, c0 for a row that starts at t):
#     a_t = x_t W_ih^T + h_prev W_hh^T (+ b_ih + b_hh)          [B_t, 4H], in the workspace
#     i, f, o = sigmoid(a)  g = tanh(a)  c_t = f c_prev + i g  m_t = o tanh(c_t)
#     h_t = m_t W_hr^T (proj_size P), else m_t                   workspace row = i f g o c_t
# Backward, the walk in reverse (dH [N, P] starts as grad_out plus grad_hn where a sequence
# ends; dL/dc flows in grad_c0, which starts as grad_cn):
#     dM_t = dH_t W_hr (projection)   the cell pass: dA_t [4H] and dc_prev (gate_cells.h)
#     dH_prev += dA_t W_hh, or grad_h0 = dA_t W_hh for the rows that started at t
# after the loop, one product each over all N rows:
#     dW_ih += dA^T X   dW_hh += dA^T H_prev   dX = dA W_ih   db_ih = db_hh = column sums of dA
#     dW_hr += dH^T M (M = o tanh(c) of every row, written by the backward cell pass)
# It must match fastrnn/backends/reference.py (lstm_forward_numpy, lstm_backward_numpy).
# A step is two rounds of its plan (three with a projection): the product, then the cell pass
# over the whole rows (a unit's four gates sit in four different column panels of the product).
# The biases are folded into one vector that the forward cell pass adds: it reads every
# pre-activation anyway, so the input projection need not start from N rows of biases.
from cython cimport floating
from libc.stdlib cimport free
from libc.string cimport memmove

from cell_shared cimport (add_column_sums, add_recurrent_weight_gradient, alloc_rows,
                          cell_passes, copy_final_states, fold_biases, run_time_loop,
                          start_state_gradients)
from cpu_products cimport add_weight_gradient, matmul
from gate_cells cimport lstm_rows
from packed_steps cimport (add_block, add_cell_block, add_operand, alloc_plan, before,
                           begin_round, carried_rows, free_offsets, set_offsets, walk_step)
from step_gemm cimport STEP_ASSIGN, STEP_PLAIN
from step_jobs cimport step_plan


def lstm_forward_cpu(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, bint reverse, out,
                     h_n, c_n, workspace):
    """One LSTM layer, one direction, forward (the backend contract): x [N, I], h0 [B, P],
    c0 [B, H], w_ih [4H, I], w_hh [4H, P], b_ih/b_hh [4H] or both None, w_hr [P, H] or None
    (then P == H), batch_sizes [T] int64; writes out [N, P] (rows evenly spaced, e.g. half of
    [N, 2P]), h_n [B, P], c_n [B, H] and workspace [N, 5H] (i, f, g, o, c_t of every row)."""
    cdef layer_call call
    cdef rows_view v
    cdef int typenum = float_type(x, "x")
    take_lstm_states(&call, typenum, x, h0, c0, w_hr, batch_sizes, reverse)
    take_weights(&call, typenum, w_ih, w_hh, b_ih, b_hh)
    take_out(&call, typenum, out, True)
    take(h_n, "h_n", typenum, 2, call.B, call.P, f"(B, {state_text(&call)})", True, True, &v)
    call.h_n = v.data
    take(c_n, "c_n", typenum, 2, call.B, call.H, "(B, H)", True, True, &v)
    call.c_n = v.data
    take_workspace(&call, typenum, workspace, True)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            lstm_forward(&call, <float*>call.workspace)
    else:
        with nogil:
            lstm_forward(&call, <double*>call.workspace)


def lstm_backward_cpu(x, h0, c0, w_ih, w_hh, w_hr, batch_sizes, bint reverse, out, workspace,
                      grad_out, grad_hn, grad_cn, grad_x, bint accumulate_x, grad_h0, grad_c0,
                      grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr):
    """One LSTM layer, one direction, BPTT (the backend contract): out [N, P] and workspace
    [N, 5H] as the forward wrote them, grad_out [N, P] (rows evenly spaced), grad_hn [B, P],
    grad_cn [B, H]; writes grad_x [N, I] (or adds to it: accumulate_x), grad_h0 [B, P] and
    grad_c0 [B, H]; adds to grad_w_ih [4H, I], grad_w_hh [4H, P], grad_b_ih/grad_b_hh [4H]
    and grad_w_hr [P, H] (each of the last three may be None)."""
    cdef layer_call call
    cdef rows_view v
    cdef int typenum = float_type(x, "x")
    take_lstm_states(&call, typenum, x, h0, c0, w_hr, batch_sizes, reverse)
    take_weights(&call, typenum, w_ih, w_hh, None, None)
    take_out(&call, typenum, out, False)
    take_workspace(&call, typenum, workspace, False)
    take_state_gradients(&call, typenum, grad_out, grad_hn, grad_x, accumulate_x, grad_h0)
    take(grad_cn, "grad_cn", typenum, 2, call.B, call.H, "(B, H)", True, False, &v)
    call.grad_cn = v.data
    take(grad_c0, "grad_c0", typenum, 2, call.B, call.H, "(B, H)", True, True, &v)
    call.grad_c0 = v.data
    take_weight_gradients(&call, typenum, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
    call.grad_w_hr = NULL
    if grad_w_hr is not None:
        if call.w_hr == NULL:
            raise ValueError("grad_w_hr must be None without a projection (w_hr is None)")
        take(grad_w_hr, "grad_w_hr", typenum, 2, call.P, call.H, "(P, H)", True, True, &v)
        call.grad_w_hr = v.data
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            lstm_backward(&call, <const float*>call.workspace)
    else:
        with nogil:
            lstm_backward(&call, <const double*>call.workspace)


cdef int take_lstm_states(layer_call* call, int typenum, x, h0, c0, w_hr, batch_sizes,
                          bint reverse) except -1:
    """take_inputs (x, h0 [B, P], batch_sizes), then c0 [B, H], which fixes H, and the
    projection w_hr [P, H] or None (then h0 must be [B, H])."""
    cdef rows_view v
    take_inputs(call, typenum, 4, x, h0, batch_sizes, reverse)
    take(c0, "c0", typenum, 2, call.B, -1, "(B, H)", True, False, &v)
    call.c0, call.H = v.data, v.cols
    if w_hr is not None:
        take(w_hr, "w_hr", typenum, 2, call.P, call.H, "(P, H)", True, False, &v)
        call.w_hr = v.data
    elif call.P != call.H:
        raise ValueError(f"Expected h0 to have shape (B, H) = ({call.B}, {call.H}) like c0 "
                         f"without a projection (w_hr is None), got ({call.B}, {call.P})")
    return 0


# ---- forward --------------------------------------------------------------------------------
cdef int lstm_forward(layer_call* call, floating* ws) except -1 nogil:   # ws [N, 5H]
    """ws[:, :4H] = x W_ih^T for every row at once; the steps (whose gate pass adds the folded
    biases b_ih + b_hh, activates the gates and writes c_t and out); then h_n and c_n."""
    cdef product_config cfg = call_config()
    cdef Py_ssize_t H = call.H, ld = 5 * call.H
    cdef floating* bias = NULL        # [4H] b_ih + b_hh, or NULL
    if call.walk.T == 0:
        return 0
    set_offsets(&call.walk)
    try:
        bias = fold_biases(<const floating*>call.b_ih, <const floating*>call.b_hh, 4 * H, 4 * H)
        matmul(&cfg, call.N, 4 * H, call.input_size, <const floating*>call.x, call.input_size,
               <const floating*>call.w_ih, call.input_size, True, False, ws, ld)
        run_lstm_forward_steps(&cfg, call, ws, bias)
        copy_final_states(&call.walk, call.P, <const floating*>call.out, call.ld_out,
                          <floating*>call.h_n)
        copy_final_states(&call.walk, H, <const floating*>ws + 4 * H, ld, <floating*>call.c_n)
    finally:
        free(bias)
        free_offsets(&call.walk)
    return 0


cdef int run_lstm_forward_steps(const product_config* cfg, const layer_call* call,
                                floating* ws,                   # [N, 5H]
                                const floating* bias) except -1 nogil:   # [4H] or NULL
    """Step t, rows [0, B_t): a_t += h_prev W_hh^T; the cell pass; out_t = m_t W_hr^T with a
    projection (m_t in a [B, H] scratch), else the cell pass writes m_t = h_t into out."""
    cdef const packed_walk* walk = &call.walk
    cdef step_plan plan
    cdef bint projecting = call.w_hr != NULL
    cdef Py_ssize_t s, t, p, carried, n, r, H = call.H, P = call.P, ld = 5 * call.H
    cdef Py_ssize_t ld_out = call.ld_out, rounds = 3 if projecting else 2
    cdef floating* out = <floating*>call.out
    cdef floating* gates
    cdef floating* scratch = NULL        # [B, H] m_t before the projection
    cdef floating* hidden                # [B_t, H] where this step's m_t goes
    cdef Py_ssize_t ld_hidden = H if projecting else ld_out
    cdef lstm_rows* cells = NULL         # [T, 2]: the carried and the started rows of each step
    try:
        cells = <lstm_rows*>alloc_rows(2 * walk.T, 1, sizeof(lstm_rows), "the cell blocks")
        if projecting:
            scratch = <floating*>alloc_rows(call.B, H, sizeof(floating), "m_t")
        alloc_plan(&plan, walk.T * rounds, 2, rounds)
        plan.cell_pass, plan.units = cell_passes(cfg, floating is double).lstm_forward, H
        add_operand(&plan, call.w_hh, P, True, 4 * H, P)             # B = W_hh^T
        if projecting:
            add_operand(&plan, call.w_hr, H, True, P, H)             # B = W_hr^T
        for s in range(walk.T):
            t, r = walk_step(walk, s), s * rounds
            p = before(walk, t)
            carried, n = carried_rows(walk, t, p), walk.batch_sizes[t]
            gates = ws + walk.offsets[t] * ld
            hidden = scratch if projecting else out + walk.offsets[t] * ld_out
            begin_round(&plan, r)
            if carried:
                add_block(&plan, r, out + walk.offsets[p] * ld_out, ld_out, gates, ld, NULL, 0,
                          carried, STEP_PLAIN)
            add_block(&plan, r, <const floating*>call.h0 + carried * P, P, gates + carried * ld,
                      ld, NULL, 0, n - carried, STEP_PLAIN)
            begin_round(&plan, r + 1)
            if carried:
                cells[2 * s] = lstm_forward_rows(carried, H, gates, bias,
                                                 ws + walk.offsets[p] * ld + 4 * H, ld, hidden,
                                                 ld_hidden)
                add_cell_block(&plan, r + 1, &cells[2 * s], carried)
            cells[2 * s + 1] = lstm_forward_rows(n - carried, H, gates + carried * ld, bias,
                                                 <const floating*>call.c0 + carried * H, H,
                                                 hidden + carried * ld_hidden, ld_hidden)
            add_cell_block(&plan, r + 1, &cells[2 * s + 1], n - carried)
            if projecting:
                begin_round(&plan, r + 2)
                add_block(&plan, r + 2, scratch, H, out + walk.offsets[t] * ld_out, ld_out, NULL,
                          0, n, STEP_ASSIGN, 1)
        run_time_loop(cfg, &plan, floating is double, call.N, call.B)
    finally:
        free(cells)
        free(scratch)
    return 0


cdef lstm_rows lstm_forward_rows(Py_ssize_t m, Py_ssize_t H, floating* gates,
                                 const floating* bias, const floating* c_prev,
                                 Py_ssize_t ld_c_prev, floating* hidden,
                                 Py_ssize_t ld_hidden) noexcept nogil:
    """The forward cell pass's arguments for m rows (lstm_rows in gate_cells.h)."""
    return lstm_rows(m=m, H=H, gates=gates, ld_gates=5 * H, bias=bias, c_prev=c_prev,
                     ld_c_prev=ld_c_prev,
                     hidden=hidden, ld_hidden=ld_hidden, grad_hidden=NULL, ld_grad_hidden=0,
                     grad_c=NULL, ld_grad_c=0, grad_gates=NULL, ld_grad_gates=0)


# ---- backward -------------------------------------------------------------------------------
cdef int lstm_backward(layer_call* call, const floating* ws) except -1 nogil:   # ws [N, 5H]
    """dA of every row through the walk backwards (dL/dc carried in grad_c0); then the products
    over all N rows."""
    cdef product_config cfg = call_config()
    cdef Py_ssize_t N = call.N, I = call.input_size, H = call.H, P = call.P
    cdef floating* grad_h = NULL      # [N, P]  dL/dh of every row
    cdef floating* grad_a = NULL      # [N, 4H] dL/da of every row
    cdef floating* hidden = NULL      # [N, H]  m = o tanh(c) of every row (for dW_hr only)
    if call.walk.T == 0:
        return 0
    set_offsets(&call.walk)
    try:
        grad_h = <floating*>alloc_rows(N, P, sizeof(floating), "dL/dh")
        grad_a = <floating*>alloc_rows(N, 4 * H, sizeof(floating), "dL/da")
        if call.grad_w_hr != NULL:
            hidden = <floating*>alloc_rows(N, H, sizeof(floating), "o tanh(c)")
        start_state_gradients(&call.walk, P, <const floating*>call.grad_out, call.ld_grad_out,
                              <const floating*>call.grad_hn, grad_h)
        memmove(call.grad_c0, call.grad_cn, call.B * H * sizeof(floating))
        run_lstm_backward_steps(&cfg, call, ws, grad_h, grad_a, hidden)
        # dW_ih += dA^T X, dW_hh += dA^T H_prev, dX = dA W_ih: one product each over all N rows
        add_weight_gradient(&cfg, 4 * H, I, N, grad_a, 4 * H, <const floating*>call.x, I,
                            <floating*>call.grad_w_ih, I)
        add_recurrent_weight_gradient(&cfg, &call.walk, call.equal_lengths, 4 * H, P, grad_a,
                                      4 * H, <const floating*>call.out, call.ld_out,
                                      <const floating*>call.h0, <floating*>call.grad_w_hh)
        matmul(&cfg, N, I, 4 * H, grad_a, 4 * H, <const floating*>call.w_ih, I, False,
               call.accumulate_x, <floating*>call.grad_x, I)
        add_column_sums(N, 4 * H, grad_a, 4 * H, <floating*>call.grad_b_ih,
                        <floating*>call.grad_b_hh)
        if hidden != NULL:                                   # dW_hr += dH^T M
            add_weight_gradient(&cfg, P, H, N, grad_h, P, hidden, H, <floating*>call.grad_w_hr,
                                H)
    finally:
        free(grad_h)
        free(grad_a)
        free(hidden)
        free_offsets(&call.walk)
    return 0


cdef int run_lstm_backward_steps(const product_config* cfg, const layer_call* call,
                                 const floating* ws,      # [N, 5H]
                                 floating* grad_h,        # [N, P] in: grad_out (+ grad_hn)
                                 floating* grad_a,        # [N, 4H] written
                                 floating* hidden) except -1 nogil:   # [N, H] or NULL
    """Step t, from the walk's last to its first, with p the step before it: with a projection
    dM_t = dH_t W_hr (a [B, H] scratch); the cell pass (dA_t, and dL/dc in grad_c0 moves to
    step p); then dH_p += dA_t W_hh for the rows t carried on from p, grad_h0 = dA_t W_hh for
    the rows that started at t."""
    cdef const packed_walk* walk = &call.walk
    cdef step_plan plan
    cdef bint projecting = call.w_hr != NULL
    cdef Py_ssize_t s, t, p, carried, n, r = 0, H = call.H, P = call.P, ld = 5 * call.H
    cdef Py_ssize_t row, rounds = 3 if projecting else 2
    cdef floating* scratch = NULL        # [B, H] dL/dm_t (projection)
    cdef const floating* grad_hidden     # [B_t, H] dL/dm_t of this step's rows
    cdef Py_ssize_t ld_grad_hidden = H if projecting else P
    cdef floating* grad_h0 = <floating*>call.grad_h0
    cdef floating* grad_c0 = <floating*>call.grad_c0
    cdef lstm_rows* cells = NULL         # [T, 2]: the carried and the started rows of each step
    try:
        cells = <lstm_rows*>alloc_rows(2 * walk.T, 1, sizeof(lstm_rows), "the cell blocks")
        if projecting:
            scratch = <floating*>alloc_rows(call.B, H, sizeof(floating), "dL/dm_t")
        alloc_plan(&plan, walk.T * rounds, 2, rounds)
        plan.cell_pass, plan.units = cell_passes(cfg, floating is double).lstm_backward, H
        add_operand(&plan, call.w_hh, P, False, P, 4 * H)            # B = W_hh
        if projecting:
            add_operand(&plan, call.w_hr, H, False, H, P)            # B = W_hr
        for s in range(walk.T - 1, -1, -1):
            t = walk_step(walk, s)
            p = before(walk, t)
            carried, n = carried_rows(walk, t, p), walk.batch_sizes[t]
            if projecting:
                begin_round(&plan, r)
                add_block(&plan, r, grad_h + walk.offsets[t] * P, P, scratch, H, NULL, 0, n,
                          STEP_ASSIGN, 1)
                r += 1
            grad_hidden = scratch if projecting else grad_h + walk.offsets[t] * P
            row = walk.offsets[t]
            begin_round(&plan, r)
            if carried:
                cells[2 * s] = lstm_backward_rows(carried, H, ws + row * ld,
                                                  ws + walk.offsets[p] * ld + 4 * H, ld,
                                                  grad_hidden, ld_grad_hidden, grad_c0,
                                                  grad_a + row * 4 * H,
                                                  hidden + row * H if hidden != NULL else NULL)
                add_cell_block(&plan, r, &cells[2 * s], carried)
            row += carried
            cells[2 * s + 1] = lstm_backward_rows(n - carried, H, ws + row * ld,
                                                  <const floating*>call.c0 + carried * H, H,
                                                  grad_hidden + carried * ld_grad_hidden,
                                                  ld_grad_hidden, grad_c0 + carried * H,
                                                  grad_a + row * 4 * H,
                                                  hidden + row * H if hidden != NULL else NULL)
            add_cell_block(&plan, r, &cells[2 * s + 1], n - carried)
            begin_round(&plan, r + 1)
            if carried:
                add_block(&plan, r + 1, grad_a + walk.offsets[t] * 4 * H, 4 * H,
                          grad_h + walk.offsets[p] * P, P, NULL, 0, carried, STEP_PLAIN)
            add_block(&plan, r + 1, grad_a + row * 4 * H, 4 * H, grad_h0 + carried * P, P, NULL,
                      0, n - carried, STEP_ASSIGN)
            r += 2
        run_time_loop(cfg, &plan, floating is double, call.N, call.B)
    finally:
        free(cells)
        free(scratch)
    return 0


cdef lstm_rows lstm_backward_rows(Py_ssize_t m, Py_ssize_t H, const floating* gates,
                                  const floating* c_prev, Py_ssize_t ld_c_prev,
                                  const floating* grad_hidden, Py_ssize_t ld_grad_hidden,
                                  floating* grad_c, floating* grad_gates,
                                  floating* hidden) noexcept nogil:
    """The backward cell pass's arguments for m rows (lstm_rows in gate_cells.h); hidden may
    be NULL (no projection: M is not needed)."""
    return lstm_rows(m=m, H=H, gates=<void*>gates, ld_gates=5 * H, bias=NULL, c_prev=c_prev,
                     ld_c_prev=ld_c_prev, hidden=hidden, ld_hidden=H, grad_hidden=grad_hidden,
                     ld_grad_hidden=ld_grad_hidden, grad_c=grad_c, ld_grad_c=H,
                     grad_gates=grad_gates, ld_grad_gates=4 * H)
