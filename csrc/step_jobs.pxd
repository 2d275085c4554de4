# Declarations of step_jobs.h: step plans (time loops as rounds of blocks) and rank-k updates.
from gate_cells cimport cell_pass_fn
from step_gemm cimport step_kernel

cdef extern from "step_jobs.h" nogil:
    enum:
        MAX_STEP_OPERANDS
    ctypedef struct step_block:
        const void* a
        Py_ssize_t lda
        void* c
        Py_ssize_t ldc
        const void* h
        Py_ssize_t ldh
        Py_ssize_t m
        int epilogue
        int operand
        int descending
        const void* cell
    ctypedef struct step_operand:
        Py_ssize_t N, K
        Py_ssize_t panels
        const float* packed
        const void* w
        Py_ssize_t ldw
        int w_is_transposed
    ctypedef struct step_plan:
        const step_kernel* kernel
        int n_operands
        step_operand operands[MAX_STEP_OPERANDS]
        cell_pass_fn cell_pass
        Py_ssize_t units
        Py_ssize_t rounds_per_step
        Py_ssize_t n_rounds
        const step_block* blocks
        const Py_ssize_t* round_start
        Py_ssize_t n_items
    Py_ssize_t panel_count(const step_kernel* kernel, Py_ssize_t N)
    void run_step_plan(step_plan* plan, int n_threads)
    ctypedef struct rank_k_job:
        const step_kernel* kernel
        Py_ssize_t M, N, K
        const float* a
        Py_ssize_t lda
        const float* b
        Py_ssize_t ldb
        float* c
        Py_ssize_t ldc
    void run_rank_k_update(const rank_k_job* job, int n_threads)
