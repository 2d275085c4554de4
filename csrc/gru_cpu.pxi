# The GRU cell (torch's nn.GRU, gate order r z n, b_hn inside the reset gate); included by
# rnn_cpu.pyx, whose docstring says how every cell is built, and whose configuration
# (call_config) and checks (take_*) it uses. The elementwise maths is in gate_cells.h.
#
# Forward, for the rows [0, B_t) that step t computes (h_prev as for the Elman cell):
#     workspace[:, :3H] = X = x W_ih^T   for every row at once
#     S_t = h_prev W_hh^T                                     [B_t, 3H], a scratch
#     r = sigmoid(X_r + S_r + b_ir + b_hr)   z = sigmoid(X_z + S_z + b_iz + b_hz)
#     hn = S_n + b_hn   n = tanh(X_n + b_in + r hn)   h_t = (1 - z) n + z h_prev
#     workspace row = r z n hn
# The biases are folded into one vector b_ih + [b_hr, b_hz, 0] that the gate pass adds with
# b_hn, which stays apart because torch multiplies it by r.
# Backward, the walk in reverse (dH [N, H] starts as grad_out plus grad_hn where a sequence
# ends): the cell pass writes dA_t = [dr, dz, dn r, dn] and adds dh z to dH_prev (or writes it
# into grad_h0 for the rows that started at t); then dH_prev += dA_t[:, :3H] W_hh. After the
# loop, one product each over all N rows (two where the n block of W_ih needs dn, not dn r):
#     dW_ih += [dr dz dn]^T X   dW_hh += [dr dz dn r]^T H_prev   dX = [dr dz dn] W_ih
#     db_ih = column sums of [dr dz dn]   db_hh = column sums of [dr dz dn r]
# It must match fastrnn/backends/reference.py (gru_forward_numpy, gru_backward_numpy).
from cython cimport floating
from libc.stdlib cimport free

from cell_shared cimport (add_column_sums, add_recurrent_weight_gradient, alloc_rows,
                          cell_passes, copy_final_states, fold_biases, run_time_loop,
                          start_state_gradients)
from cpu_products cimport add_weight_gradient, matmul
from gate_cells cimport gru_rows
from packed_steps cimport (add_block, add_cell_block, add_operand, alloc_plan, before,
                           begin_round, carried_rows, free_offsets, set_offsets, walk_step)
from step_gemm cimport STEP_ASSIGN, STEP_PLAIN
from step_jobs cimport step_plan


def gru_forward_cpu(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes, bint reverse, out, h_n,
                    workspace):
    """One GRU layer, one direction, forward (the backend contract): x [N, I], h0 [B, H],
    w_ih [3H, I], w_hh [3H, H], b_ih/b_hh [3H] or both None, batch_sizes [T] int64; writes
    out [N, H] (rows evenly spaced, e.g. half of [N, 2H]), h_n [B, H] and workspace [N, 4H]
    (r, z, n, h_prev W_hn^T + b_hn of every row)."""
    cdef layer_call call
    cdef rows_view v
    cdef int typenum = float_type(x, "x")
    take_inputs(&call, typenum, 3, x, h0, batch_sizes, reverse)
    take_weights(&call, typenum, w_ih, w_hh, b_ih, b_hh)
    take_out(&call, typenum, out, True)
    take(h_n, "h_n", typenum, 2, call.B, call.H, "(B, H)", True, True, &v)
    call.h_n = v.data
    take_workspace(&call, typenum, workspace, True)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            gru_forward(&call, <float*>call.workspace)
    else:
        with nogil:
            gru_forward(&call, <double*>call.workspace)


def gru_backward_cpu(x, h0, w_ih, w_hh, batch_sizes, bint reverse, out, workspace, grad_out,
                     grad_hn, grad_x, bint accumulate_x, grad_h0, grad_w_ih, grad_w_hh,
                     grad_b_ih, grad_b_hh):
    """One GRU layer, one direction, BPTT (the backend contract): out [N, H] and workspace
    [N, 4H] as the forward wrote them, grad_out [N, H] (rows evenly spaced), grad_hn [B, H];
    writes grad_x [N, I] (or adds to it: accumulate_x) and grad_h0 [B, H]; adds to grad_w_ih
    [3H, I], grad_w_hh [3H, H] and grad_b_ih/grad_b_hh [3H] (each may be None)."""
    cdef layer_call call
    cdef int typenum = float_type(x, "x")
    take_inputs(&call, typenum, 3, x, h0, batch_sizes, reverse)
    take_weights(&call, typenum, w_ih, w_hh, None, None)
    take_out(&call, typenum, out, False)
    take_workspace(&call, typenum, workspace, False)
    take_state_gradients(&call, typenum, grad_out, grad_hn, grad_x, accumulate_x, grad_h0)
    take_weight_gradients(&call, typenum, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
    if typenum == cnp.NPY_FLOAT32:
        with nogil:
            gru_backward(&call, <const float*>call.workspace)
    else:
        with nogil:
            gru_backward(&call, <const double*>call.workspace)


# ---- forward --------------------------------------------------------------------------------
cdef int gru_forward(layer_call* call, floating* ws) except -1 nogil:   # ws [N, 4H]
    """ws[:, :3H] = x W_ih^T for every row at once; the steps (whose gate pass adds the folded
    biases b_ih + [b_hr, b_hz, 0] and b_hn, and writes the gates and out); then h_n."""
    cdef product_config cfg = call_config()
    cdef Py_ssize_t H = call.H
    cdef floating* bias = NULL        # [3H] b_ih + [b_hr, b_hz, 0], or NULL
    if call.walk.T == 0:
        return 0
    set_offsets(&call.walk)
    try:
        bias = fold_biases(<const floating*>call.b_ih, <const floating*>call.b_hh, 3 * H, 2 * H)
        matmul(&cfg, call.N, 3 * H, call.input_size, <const floating*>call.x, call.input_size,
               <const floating*>call.w_ih, call.input_size, True, False, ws, 4 * H)
        run_gru_forward_steps(&cfg, call, ws, bias)
        copy_final_states(&call.walk, H, <const floating*>call.out, call.ld_out,
                          <floating*>call.h_n)
    finally:
        free(bias)
        free_offsets(&call.walk)
    return 0


cdef int run_gru_forward_steps(const product_config* cfg, const layer_call* call,
                               floating* ws,                    # [N, 4H]
                               const floating* bias) except -1 nogil:   # [3H] or NULL
    """Step t, rows [0, B_t): S = h_prev W_hh^T into a [B, 3H] scratch; the cell pass (gates,
    hn and h_t into out)."""
    cdef const packed_walk* walk = &call.walk
    cdef step_plan plan
    cdef Py_ssize_t s, t, p, carried, n, H = call.H, ld = 4 * call.H, ld_out = call.ld_out
    cdef floating* out = <floating*>call.out
    cdef const floating* h0 = <const floating*>call.h0
    cdef const floating* b_hn = (<const floating*>call.b_hh + 2 * H if call.b_hh != NULL
                                 else NULL)
    cdef floating* gates
    cdef floating* hidden_part = NULL    # [B, 3H] S_t
    cdef gru_rows* cells = NULL          # [T, 2]: the carried and the started rows of each step
    try:
        cells = <gru_rows*>alloc_rows(2 * walk.T, 1, sizeof(gru_rows), "the cell blocks")
        hidden_part = <floating*>alloc_rows(call.B, 3 * H, sizeof(floating), "h W_hh^T")
        alloc_plan(&plan, 2 * walk.T, 2, 2)
        plan.cell_pass, plan.units = cell_passes(cfg, floating is double).gru_forward, H
        add_operand(&plan, call.w_hh, H, True, 3 * H, H)             # B = W_hh^T
        for s in range(walk.T):
            t = walk_step(walk, s)
            p = before(walk, t)
            carried, n = carried_rows(walk, t, p), walk.batch_sizes[t]
            gates = ws + walk.offsets[t] * ld
            begin_round(&plan, 2 * s)
            if carried:
                add_block(&plan, 2 * s, out + walk.offsets[p] * ld_out, ld_out, hidden_part,
                          3 * H, NULL, 0, carried, STEP_ASSIGN)
            add_block(&plan, 2 * s, h0 + carried * H, H, hidden_part + carried * 3 * H, 3 * H,
                      NULL, 0, n - carried, STEP_ASSIGN)
            begin_round(&plan, 2 * s + 1)
            if carried:
                cells[2 * s] = gru_forward_rows(carried, H, gates, bias, hidden_part, b_hn,
                                                out + walk.offsets[p] * ld_out, ld_out,
                                                out + walk.offsets[t] * ld_out, ld_out)
                add_cell_block(&plan, 2 * s + 1, &cells[2 * s], carried)
            cells[2 * s + 1] = gru_forward_rows(n - carried, H, gates + carried * ld, bias,
                                                hidden_part + carried * 3 * H, b_hn,
                                                h0 + carried * H, H,
                                                out + (walk.offsets[t] + carried) * ld_out,
                                                ld_out)
            add_cell_block(&plan, 2 * s + 1, &cells[2 * s + 1], n - carried)
        run_time_loop(cfg, &plan, floating is double, call.N, call.B)
    finally:
        free(cells)
        free(hidden_part)
    return 0


cdef gru_rows gru_forward_rows(Py_ssize_t m, Py_ssize_t H, floating* gates,
                               const floating* bias, const floating* hidden_part,
                               const floating* b_hn, const floating* h_prev,
                               Py_ssize_t ld_h_prev, floating* h, Py_ssize_t ld_h) noexcept nogil:
    """The forward cell pass's arguments for m rows (gru_rows in gate_cells.h)."""
    return gru_rows(m=m, H=H, gates=gates, ld_gates=4 * H, bias=bias, hidden_part=hidden_part,
                    ld_hidden_part=3 * H, b_hn=b_hn, h_prev=h_prev, ld_h_prev=ld_h_prev, h=h,
                    ld_h=ld_h, grad_h=NULL, ld_grad_h=0, grad_gates=NULL, ld_grad_gates=0,
                    grad_h_prev=NULL, ld_grad_h_prev=0, assign_grad_h_prev=0)


# ---- backward -------------------------------------------------------------------------------
cdef int gru_backward(layer_call* call, const floating* ws) except -1 nogil:   # ws [N, 4H]
    """dA of every row through the walk backwards; then the products over all N rows."""
    cdef product_config cfg = call_config()
    cdef Py_ssize_t N = call.N, I = call.input_size, H = call.H
    cdef floating* grad_h = NULL      # [N, H]  dL/dh of every row
    cdef floating* grad_a = NULL      # [N, 4H] dr dz dn*r dn of every row
    cdef floating* grad_b_ih = <floating*>call.grad_b_ih
    cdef floating* grad_b_hh = <floating*>call.grad_b_hh
    if call.walk.T == 0:
        return 0
    set_offsets(&call.walk)
    try:
        grad_h = <floating*>alloc_rows(N, H, sizeof(floating), "dL/dh")
        grad_a = <floating*>alloc_rows(N, 4 * H, sizeof(floating), "dL/da")
        start_state_gradients(&call.walk, H, <const floating*>call.grad_out, call.ld_grad_out,
                              <const floating*>call.grad_hn, grad_h)
        run_gru_backward_steps(&cfg, call, ws, grad_h, grad_a)
        # [dr dz] and dn reach W_ih's r z rows and n rows: two products over all N rows
        add_weight_gradient(&cfg, 2 * H, I, N, grad_a, 4 * H, <const floating*>call.x, I,
                            <floating*>call.grad_w_ih, I)
        add_weight_gradient(&cfg, H, I, N, grad_a + 3 * H, 4 * H, <const floating*>call.x, I,
                            <floating*>call.grad_w_ih + 2 * H * I, I)
        add_recurrent_weight_gradient(&cfg, &call.walk, call.equal_lengths, 3 * H, H, grad_a,
                                      4 * H, <const floating*>call.out, call.ld_out,
                                      <const floating*>call.h0, <floating*>call.grad_w_hh)
        matmul(&cfg, N, I, 2 * H, grad_a, 4 * H, <const floating*>call.w_ih, I, False,
               call.accumulate_x, <floating*>call.grad_x, I)
        matmul(&cfg, N, I, H, grad_a + 3 * H, 4 * H, <const floating*>call.w_ih + 2 * H * I, I,
               False, True, <floating*>call.grad_x, I)
        add_column_sums(N, 2 * H, grad_a, 4 * H, grad_b_ih, grad_b_hh)
        add_column_sums(N, H, grad_a + 2 * H, 4 * H, NULL,
                        grad_b_hh + 2 * H if grad_b_hh != NULL else NULL)
        add_column_sums(N, H, grad_a + 3 * H, 4 * H,
                        grad_b_ih + 2 * H if grad_b_ih != NULL else NULL, NULL)
    finally:
        free(grad_h)
        free(grad_a)
        free_offsets(&call.walk)
    return 0


cdef int run_gru_backward_steps(const product_config* cfg, const layer_call* call,
                                const floating* ws,      # [N, 4H]
                                floating* grad_h,        # [N, H] in: grad_out (+ grad_hn)
                                floating* grad_a) except -1 nogil:   # [N, 4H] written
    """Step t, from the walk's last to its first, with p the step before it: the cell pass
    (dA_t; dH_p += dh z for the rows t carried on from p, grad_h0 = dh z for the rows that
    started at t); then the same rows += dA_t[:, :3H] W_hh."""
    cdef const packed_walk* walk = &call.walk
    cdef step_plan plan
    cdef Py_ssize_t s, t, p, carried, n, r = 0, H = call.H, ld_out = call.ld_out
    cdef const floating* out = <const floating*>call.out
    cdef const floating* h0 = <const floating*>call.h0
    cdef floating* grad_h0 = <floating*>call.grad_h0
    cdef Py_ssize_t row
    cdef gru_rows* cells = NULL          # [T, 2]: the carried and the started rows of each step
    try:
        cells = <gru_rows*>alloc_rows(2 * walk.T, 1, sizeof(gru_rows), "the cell blocks")
        alloc_plan(&plan, 2 * walk.T, 2, 2)
        plan.cell_pass, plan.units = cell_passes(cfg, floating is double).gru_backward, H
        add_operand(&plan, call.w_hh, H, False, H, 3 * H)            # B = W_hh
        for s in range(walk.T - 1, -1, -1):
            t = walk_step(walk, s)
            p = before(walk, t)
            carried, n, row = carried_rows(walk, t, p), walk.batch_sizes[t], walk.offsets[t]
            begin_round(&plan, r)
            if carried:
                cells[2 * s] = gru_backward_rows(carried, H, ws + row * 4 * H,
                                                 out + walk.offsets[p] * ld_out, ld_out,
                                                 grad_h + row * H, grad_a + row * 4 * H,
                                                 grad_h + walk.offsets[p] * H, False)
                add_cell_block(&plan, r, &cells[2 * s], carried)
            row += carried
            cells[2 * s + 1] = gru_backward_rows(n - carried, H, ws + row * 4 * H,
                                                 h0 + carried * H, H, grad_h + row * H,
                                                 grad_a + row * 4 * H, grad_h0 + carried * H,
                                                 True)
            add_cell_block(&plan, r, &cells[2 * s + 1], n - carried)
            begin_round(&plan, r + 1)
            if carried:
                add_block(&plan, r + 1, grad_a + walk.offsets[t] * 4 * H, 4 * H,
                          grad_h + walk.offsets[p] * H, H, NULL, 0, carried, STEP_PLAIN)
            add_block(&plan, r + 1, grad_a + row * 4 * H, 4 * H, grad_h0 + carried * H, H, NULL,
                      0, n - carried, STEP_PLAIN)
            r += 2
        run_time_loop(cfg, &plan, floating is double, call.N, call.B)
    finally:
        free(cells)
    return 0


cdef gru_rows gru_backward_rows(Py_ssize_t m, Py_ssize_t H, const floating* gates,
                                const floating* h_prev, Py_ssize_t ld_h_prev,
                                const floating* grad_h, floating* grad_gates,
                                floating* grad_h_prev, bint assign) noexcept nogil:
    """The backward cell pass's arguments for m rows (gru_rows in gate_cells.h)."""
    return gru_rows(m=m, H=H, gates=<void*>gates, ld_gates=4 * H, bias=NULL, hidden_part=NULL,
                    ld_hidden_part=0, b_hn=NULL, h_prev=h_prev, ld_h_prev=ld_h_prev, h=NULL,
                    ld_h=0, grad_h=grad_h, ld_grad_h=H, grad_gates=grad_gates,
                    ld_grad_gates=4 * H, grad_h_prev=grad_h_prev, ld_grad_h_prev=H,
                    assign_grad_h_prev=assign)
