# The matrix products of the CPU kernels, for every cell: who computes each one, decided once
# per call from its shape.
#
# Why: a product goes either to the step kernel's own tiles (step_gemm.h, float32) or to
# SciPy's BLAS, which may run it on several threads. A thread hand-off costs more than a small
# product saves, and lowering the BLAS's thread count around small products would change
# process-wide state that the user owns (a fastrnn.set_num_threads from another thread could be
# undone). So small float32 products never reach the BLAS: they run on the step kernel's tiles
# on the calling thread; only products big enough to repay threads (product_config) go to the
# BLAS, which threads them as the user configured it. float64 products all go to the BLAS,
# which applies its own size threshold for threading.
# BLAS takes int sizes: every dimension above blas_max_dim (INT_MAX) is split into pieces, so
# sizes are 64-bit end to end (leading dimensions above INT_MAX are refused by the callers'
# checks before any kernel runs).
from cython cimport floating
from libc.stdlib cimport free
from scipy.linalg.cython_blas cimport dgemm, sgemm

from activations cimport (relu_f32, relu_f64, relu_grad_f32, relu_grad_f64, tanh_f32,
                          tanh_f64, tanh_grad_f32, tanh_grad_f64)
from step_gemm cimport (STEP_ASSIGN, STEP_PLAIN, STEP_RELU, STEP_RELU_GRAD, STEP_TANH,
                        STEP_TANH_GRAD, alloc_packed, packed_floats, step_kernel)
from step_jobs cimport (rank_k_job, run_rank_k_update, run_step_plan, step_block, step_operand,
                        step_plan)


cdef struct product_sizes:            # the sizes at which the work changes hands
    double own_max_macs               # float32 products with fewer multiply-adds: own tiles
    double step_threading_min_macs    # a step of rows*N*K from this size is shared by threads
    double product_threading_min_macs # an in-place weight gradient from this size too
    Py_ssize_t direct_max_rows        # A W^T products of at most this many rows: no packing (dots)
    Py_ssize_t in_place_max_rows      # A W products of at most this many rows: W read in place
    Py_ssize_t rank_k_max_output      # float32 weight gradients up to this many entries: in place
    Py_ssize_t blas_max_dim           # BLAS dimensions above this are split (BLAS takes int)


cdef struct product_config:           # one call's choices
    const step_kernel* kernel         # the float32 step-kernel variant
    int threads                       # threads big steps and products may use (the BLAS's count)
    product_sizes sizes


cdef inline void blas_gemm(bint trans_a, bint trans_b, int m, int n, int k,
                           const floating* a, int lda, const floating* b, int ldb, floating beta,
                           floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] = op(A)[m, k] op(B)[k, n] + beta C, by one BLAS call.

    Column-major BLAS reads a row-major matrix as its transpose, so it is asked for
    C^T = op(B)^T op(A)^T: the operands swap places and keep their transpose flags.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef floating one = 1
    lda, ldb, ldc = max(lda, 1), max(ldb, 1), max(ldc, 1)
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline void gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating* a, Py_ssize_t lda,   # [m, k], or [k, m] if trans_a
                      const floating* b, Py_ssize_t ldb,   # [k, n], or [n, k] if trans_b
                      floating beta,
                      floating* c, Py_ssize_t ldc,         # [m, n]
                      Py_ssize_t max_dim) noexcept nogil:
    """C = op(A) op(B) + beta C by the BLAS, in pieces of at most max_dim along every dimension:
    m and n cut C into blocks, k cuts each block's sum into partial sums (beta then 1)."""
    cdef Py_ssize_t i, j, p, mi, nj, kp, row, col
    cdef floating block_beta
    if m == 0 or n == 0:
        return
    if k == 0:                         # no product: C = beta C
        for row in range(m):
            for col in range(n):
                c[row * ldc + col] = 0 if beta == 0 else beta * c[row * ldc + col]
        return
    i = 0
    while i < m:
        mi = min(max_dim, m - i)
        j = 0
        while j < n:
            nj = min(max_dim, n - j)
            block_beta = beta
            p = 0
            while p < k:
                kp = min(max_dim, k - p)
                blas_gemm(trans_a, trans_b, <int>mi, <int>nj, <int>kp,
                          a + (p * lda + i if trans_a else i * lda + p), <int>lda,
                          b + (j * ldb + p if trans_b else p * ldb + j), <int>ldb,
                          block_beta, c + i * ldc + j, <int>ldc)
                block_beta = 1
                p += kp
            j += nj
        i += mi


cdef inline void apply_epilogue(floating* c, Py_ssize_t ldc, Py_ssize_t m, Py_ssize_t n,
                                int epilogue, const floating* h, Py_ssize_t ldh) noexcept nogil:
    """c[m, n] = act(c) (forward epilogues) or act'-scaled c (derivative epilogues, h [m, n])."""
    cdef Py_ssize_t i, j
    cdef floating* row
    for i in range(m):
        row = c + i * ldc
        if epilogue == STEP_TANH:
            for j in range(n):
                row[j] = tanh_f32(row[j]) if floating is float else tanh_f64(row[j])
        elif epilogue == STEP_RELU:
            for j in range(n):
                row[j] = relu_f32(row[j]) if floating is float else relu_f64(row[j])
        elif epilogue == STEP_TANH_GRAD:
            for j in range(n):
                row[j] = (tanh_grad_f32(row[j], h[i * ldh + j]) if floating is float
                          else tanh_grad_f64(row[j], h[i * ldh + j]))
        elif epilogue == STEP_RELU_GRAD:
            for j in range(n):
                row[j] = (relu_grad_f32(row[j], h[i * ldh + j]) if floating is float
                          else relu_grad_f64(row[j], h[i * ldh + j]))


cdef inline void run_plan_by_blas(const product_config* cfg, const step_plan* plan) noexcept nogil:
    """The rounds of a float64 step plan: each product block one BLAS product and a loop, each
    cell block its pass over all units."""
    cdef Py_ssize_t r, i
    cdef const step_block* block
    cdef const step_operand* b
    for r in range(plan.n_rounds):
        for i in range(plan.round_start[r], plan.round_start[r + 1]):
            block = &plan.blocks[i]
            if block.m == 0:
                continue
            if block.cell != NULL:
                plan.cell_pass(block.cell, 0, plan.units)
                continue
            b = &plan.operands[block.operand]
            if block.a != NULL:
                gemm(False, b.w_is_transposed, block.m, b.N, b.K, <const double*>block.a,
                     block.lda, <const double*>b.w, b.ldw,
                     0 if block.epilogue == STEP_ASSIGN else 1, <double*>block.c, block.ldc,
                     cfg.sizes.blas_max_dim)
            apply_epilogue(<double*>block.c, block.ldc, block.m, b.N, block.epilogue,
                           <const double*>block.h, block.ldh)


cdef inline int run_plan(const product_config* cfg, step_plan* plan, bint doubles,
                         Py_ssize_t total_rows, int n_threads) except -1 nogil:
    """Runs the rounds of ``plan`` (its blocks, operands and cell pass filled in): float32 on the
    step kernel (each operand packed once, or used in place when the plan has so few rows in
    all that packing would cost more), on up to n_threads threads; float64 (``doubles``) by
    BLAS."""
    cdef step_operand* b
    cdef int i
    if doubles:
        run_plan_by_blas(cfg, plan)
        return 0
    plan.kernel = cfg.kernel
    for i in range(plan.n_operands):
        plan.operands[i].packed = NULL
    try:
        for i in range(plan.n_operands):
            b = &plan.operands[i]
            if total_rows > (cfg.sizes.direct_max_rows if b.w_is_transposed
                             else cfg.sizes.in_place_max_rows):
                b.packed = alloc_packed(packed_floats(b.K, b.N, cfg.kernel.panel_width))
                if b.packed == NULL:
                    with gil:
                        raise MemoryError(f"could not allocate the packed {b.K}x{b.N} weights")
                cfg.kernel.pack_panels(<const float*>b.w, b.ldw, b.K, b.N, b.w_is_transposed,
                                       <float*>b.packed)
        run_step_plan(plan, n_threads)
    finally:
        for i in range(plan.n_operands):
            free(<void*>plan.operands[i].packed)
    return 0


cdef inline int matmul(const product_config* cfg, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       const floating* a, Py_ssize_t lda,   # [M, K]
                       const floating* w, Py_ssize_t ldw,   # [N, K] if w_is_transposed else [K, N]
                       bint w_is_transposed, bint accumulate,
                       floating* c, Py_ssize_t ldc) except -1 nogil:   # [M, N]
    """c = a op(w) (+ c if accumulate): float32 products of fewer than own_max_macs multiply-adds
    on the step kernel's tiles (one thread), the rest by the BLAS."""
    cdef step_block block
    cdef Py_ssize_t round_start[2]
    cdef step_plan plan
    if M == 0 or N == 0:
        return 0
    if floating is float and <double>M * N * K < cfg.sizes.own_max_macs:
        block = step_block(a=a, lda=lda, c=c, ldc=ldc, h=NULL, ldh=0, m=M,
                           epilogue=STEP_PLAIN if accumulate else STEP_ASSIGN, operand=0,
                           descending=0, cell=NULL)
        round_start[0], round_start[1] = 0, 1
        plan.n_rounds, plan.blocks, plan.round_start = 1, &block, round_start
        plan.n_operands, plan.cell_pass, plan.units, plan.rounds_per_step = 1, NULL, 0, 1
        plan.operands[0] = step_operand(N=N, K=K, panels=0, packed=NULL, w=w, ldw=ldw,
                                        w_is_transposed=w_is_transposed)
        return run_plan(cfg, &plan, False, M, 1)
    gemm(False, w_is_transposed, M, N, K, a, lda, w, ldw, 1 if accumulate else 0, c, ldc,
         cfg.sizes.blas_max_dim)
    return 0


cdef inline void add_weight_gradient(const product_config* cfg, Py_ssize_t M, Py_ssize_t N,
                                     Py_ssize_t K,
                                     const floating* a, Py_ssize_t lda,   # [K, M]
                                     const floating* b, Py_ssize_t ldb,   # [K, N]
                                     floating* c, Py_ssize_t ldc) noexcept nogil:   # [M, N]
    """c += a^T b (a weight gradient: K runs over the tokens).

    For an output this small OpenBLAS spends a third of its time packing a and b (py-spy: its
    copy routines were 22% of a (100,32,256,256) backward, its compute kernel 51%), while the
    step kernel's tiles read both in place and keep c in cache: 97-101 GFLOP/s against
    OpenBLAS's 67-78 for 256x256, K=3200. Bigger outputs leave the cache and go to the BLAS,
    which blocks them better."""
    cdef rank_k_job job
    if M == 0 or N == 0 or K == 0:
        return
    if (floating is float and N % cfg.kernel.panel_width == 0
            and M * N <= cfg.sizes.rank_k_max_output):
        job = rank_k_job(kernel=cfg.kernel, M=M, N=N, K=K, a=a, lda=lda, b=b, ldb=ldb, c=c,
                         ldc=ldc)
        run_rank_k_update(&job, cfg.threads
                          if <double>M * N * K >= cfg.sizes.product_threading_min_macs else 1)
    else:
        gemm(True, False, M, N, K, a, lda, b, ldb, 1, c, ldc, cfg.sizes.blas_max_dim)
