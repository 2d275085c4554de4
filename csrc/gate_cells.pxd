# Declarations of gate_cells.h: the gated cells' elementwise passes over blocks of rows.
cdef extern from "gate_cells.h" nogil:
    ctypedef struct lstm_rows:
        Py_ssize_t m, H
        void* gates
        Py_ssize_t ld_gates
        const void* bias
        const void* c_prev
        Py_ssize_t ld_c_prev
        void* hidden
        Py_ssize_t ld_hidden
        const void* grad_hidden
        Py_ssize_t ld_grad_hidden
        void* grad_c
        Py_ssize_t ld_grad_c
        void* grad_gates
        Py_ssize_t ld_grad_gates
    ctypedef struct gru_rows:
        Py_ssize_t m, H
        void* gates
        Py_ssize_t ld_gates
        const void* bias
        const void* hidden_part
        Py_ssize_t ld_hidden_part
        const void* b_hn
        const void* h_prev
        Py_ssize_t ld_h_prev
        void* h
        Py_ssize_t ld_h
        const void* grad_h
        Py_ssize_t ld_grad_h
        void* grad_gates
        Py_ssize_t ld_grad_gates
        void* grad_h_prev
        Py_ssize_t ld_grad_h_prev
        int assign_grad_h_prev
    ctypedef void (*cell_pass_fn)(const void* rows, Py_ssize_t unit_begin, Py_ssize_t unit_end)
    ctypedef struct gate_cell_passes:
        cell_pass_fn lstm_forward, lstm_backward, gru_forward, gru_backward
    const gate_cell_passes gate_cells_f64
