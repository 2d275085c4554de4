# Declarations of step_gemm.h: the float32 packed-panel products, their variants and packing.
from gate_cells cimport gate_cell_passes

cdef extern from "step_gemm.h" nogil:
    enum:
        STEP_PLAIN, STEP_TANH, STEP_RELU, STEP_TANH_GRAD, STEP_RELU_GRAD, STEP_ASSIGN
    ctypedef void (*step_gemm_fn)(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a,
                                  Py_ssize_t lda, const float* packed, float* c, Py_ssize_t ldc,
                                  int epilogue, const float* h, Py_ssize_t ldh,
                                  Py_ssize_t panel_begin, Py_ssize_t panel_end, int descending)
    ctypedef void (*rank_k_fn)(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a,
                               Py_ssize_t lda, const float* b, Py_ssize_t ldb, float* c,
                               Py_ssize_t ldc, Py_ssize_t panel_begin, Py_ssize_t panel_end)
    ctypedef void (*epilogue_fn)(Py_ssize_t M, Py_ssize_t N, float* c, Py_ssize_t ldc,
                                 int epilogue, const float* h, Py_ssize_t ldh)
    ctypedef void (*pack_fn)(const float* w, Py_ssize_t ldw, Py_ssize_t K, Py_ssize_t N,
                             int w_is_transposed, float* packed)
    ctypedef void (*direct_gemm_fn)(Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, const float* a,
                                    Py_ssize_t lda, const float* w, Py_ssize_t ldw,
                                    int w_is_transposed, float* c, Py_ssize_t ldc, int epilogue,
                                    const float* h, Py_ssize_t ldh)
    ctypedef struct step_kernel:
        const char* name
        Py_ssize_t panel_width
        step_gemm_fn step_gemm
        rank_k_fn rank_k_update
        epilogue_fn epilogue_only
        direct_gemm_fn direct_gemm
        pack_fn pack_panels
        gate_cell_passes cells
    const step_kernel* current_step_kernel()
    int select_step_kernel(const char* name)
    size_t packed_floats(Py_ssize_t K, Py_ssize_t N, Py_ssize_t width)
    float* alloc_packed(size_t floats)
