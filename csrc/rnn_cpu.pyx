# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CPU kernels for one RNN layer in one direction: the time loops of forward and BPTT.

Why it is built this way (design.md, "what makes it fast"):
- one Python call per layer-direction; the whole time loop runs without the GIL;
- the input projection of all T steps is ONE matrix product, written straight into the output
  buffer, which was first filled with the folded bias; each step then adds h_{t-1} W_hh^T in
  place and applies the activation in place;
- float32 steps (the common case) run the fused step kernel of step_gemm.h: W_hh is packed once
  per call, each step's product keeps its tiles in registers and applies tanh/relu (forward)
  or the activation's derivative (backward) before storing them: no per-step BLAS call, no
  repacking, no second pass over the step's rows. Big steps are shared by ``step_threads``
  threads (step_threads.h); float64 steps are one BLAS product plus an activation loop;
- BLAS products too small to repay a thread hand-off run on one BLAS thread (see below);
- the float32 tanh is a rational approximation that the compiler vectorises (libm's scalar
  tanhf costs more than the product it follows); float64 keeps libm's tanh for full accuracy;
- BPTT keeps the per-step work to the activation derivative and one product with W_hh; the
  weight, input and bias gradients are single products over all T*B rows after the loop;
- ``out`` may be one half of a bidirectional [T, B, 2H] buffer: every product takes the row
  stride as its leading dimension, so no concatenation is ever needed.
BLAS is SciPy's (scipy.linalg.cython_blas), called with row-major arguments swapped into
column-major order. float32 and float64 share one source through Cython's fused type.
"""
from cython cimport floating
from libc.math cimport tanh
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef extern from "step_gemm.h" nogil:
    enum:
        STEP_PLAIN, STEP_TANH, STEP_RELU, STEP_TANH_GRAD, STEP_RELU_GRAD
    ctypedef void (*step_gemm_fn)(int M, int N, int K, const float* a, Py_ssize_t lda,
                                  const float* packed, float* c, Py_ssize_t ldc, int epilogue,
                                  const float* h, Py_ssize_t ldh)
    ctypedef void (*epilogue_fn)(int M, int N, float* c, Py_ssize_t ldc, int epilogue,
                                 const float* h, Py_ssize_t ldh)
    ctypedef struct step_kernel:
        const char* name
        int panel_width
        step_gemm_fn step_gemm
        epilogue_fn epilogue_only
    const step_kernel* current_step_kernel()
    int select_step_kernel(const char* name)
    size_t packed_floats(int K, int N, int width)
    void pack_panels(const float* w, Py_ssize_t ldw, int K, int N, bint w_is_transposed,
                     int width, float* packed)
    float* alloc_packed(size_t floats)
    float tanh_f32(float v)


cdef extern from "step_threads.h" nogil:
    ctypedef struct step_operands:
        const float* a
        Py_ssize_t lda
        float* c
        const float* h
    ctypedef struct step_sequence:
        const step_kernel* kernel
        int n_steps, M, N, K, epilogue
        const float* packed
        const step_operands* steps
        Py_ssize_t ldc, ldh
    void run_step_sequence(const step_sequence* seq, int n_threads)
    ctypedef struct rank_k_job:
        const step_kernel* kernel
        int M, N, K
        const float* a
        Py_ssize_t lda
        const float* b
        Py_ssize_t ldb
        float* c
        Py_ssize_t ldc
    void run_rank_k_update(const rank_k_job* job, int n_threads)


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


# ---- BLAS threads for small products -------------------------------------------------------
# A multi-threaded BLAS hands every product above its own small threshold to its threads; for
# products this small the hand-off costs more than it saves, and on a busy machine (the other
# core taken) it can cost milliseconds. So the kernels run products below this many FLOPs on
# one thread: they lower the BLAS's count for that call and put it back right after. The count
# is process-wide state (as threadpoolctl's is): a thread count set from another thread in
# the microseconds of such a call can be overwritten by the restore.
cdef double BLAS_THREADING_MIN_FLOPS = 1 << 25     # about 0.3 ms of work on one core
ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil
cdef set_threads_fn blas_set_threads = NULL
cdef get_threads_fn blas_get_threads = NULL


def use_blas_thread_functions(size_t set_address, size_t get_address):
    """The addresses of the kernels' BLAS ``set_num_threads(int)`` / ``get_num_threads()``
    (0, 0: unknown; small products then use whatever the BLAS decides)."""
    global blas_set_threads, blas_get_threads
    if (set_address == 0) != (get_address == 0):
        raise ValueError("give both thread functions of the BLAS, or neither (0, 0)")
    blas_set_threads = <set_threads_fn>set_address
    blas_get_threads = <get_threads_fn>get_address


cdef inline int single_thread_for_small(double flops) noexcept nogil:
    """Drops the BLAS to one thread for a product of ``flops``; returns the count to restore
    (0: nothing was changed)."""
    cdef int threads
    if blas_get_threads == NULL or flops >= BLAS_THREADING_MIN_FLOPS:
        return 0
    threads = blas_get_threads()
    if threads <= 1:
        return 0
    blas_set_threads(1)
    return threads


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, leading dimensions lda/ldb/ldc.

    Column-major BLAS reads a row-major matrix as its transpose, so it is asked for
    C^T = op(B)^T op(A)^T: the operands swap places and keep their transpose flags.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int restore = single_thread_for_small(2.0 * m * n * k)
    lda, ldb, ldc = max(lda, 1), max(ldb, 1), max(ldc, 1)
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)
    if restore:
        blas_set_threads(restore)


cdef inline int product_threads(double flops) noexcept nogil:
    """Threads for one of the step kernel's own products: the BLAS's count for big ones."""
    if blas_get_threads == NULL or flops < BLAS_THREADING_MIN_FLOPS:
        return 1
    return blas_get_threads()


# The weight gradients are C[M, N] += A^T B over all T*B rows (K). For an output this small
# OpenBLAS spends a third of its time packing A and B (py-spy: its copy routines were 22% of
# a (100,32,256,256) backward, its compute kernel 51%), while the step kernel's tiles read
# both in place and keep C in cache: 97-101 GFLOP/s against OpenBLAS's 67-78 for
# 256x256, K=3200. Bigger outputs leave the cache and go to BLAS, which blocks them better.
cdef int RANK_K_MAX_OUTPUT = 256 * 256


cdef inline void add_weight_gradient(const step_kernel* kernel, int M, int N, int K,
                                     const floating* a, int lda, const floating* b, int ldb,
                                     floating* c, int ldc) noexcept nogil:
    """c[M, N] += a^T b for row-major a [K, M] and b [K, N] (rows lda / ldb apart)."""
    cdef rank_k_job job
    if floating is float and N % kernel.panel_width == 0 and M * N <= RANK_K_MAX_OUTPUT:
        job = rank_k_job(kernel=kernel, M=M, N=N, K=K, a=a, lda=lda, b=b, ldb=ldb, c=c, ldc=ldc)
        run_rank_k_update(&job, product_threads(2.0 * M * N * K))
    else:
        gemm(True, False, M, N, K, 1, a, lda, b, ldb, 1, c, ldc)


cdef inline void tanh_inplace(floating* row, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        row[j] = tanh_f32(row[j]) if floating is float else tanh(row[j])


cdef inline void relu_inplace(floating* row, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        row[j] = 0 if row[j] <= 0 else row[j]      # NaN passes through, as np.maximum does


cdef inline void times_activation_grad(floating* g, const floating* h, Py_ssize_t n,
                                       bint relu) noexcept nogil:
    """g *= act'(a), with act' written in terms of h = act(a)."""
    cdef Py_ssize_t j
    if relu:
        for j in range(n):
            g[j] = g[j] if h[j] > 0 else 0
    else:
        for j in range(n):
            g[j] = g[j] * (1 - h[j] * h[j])


cdef inline void add_column_sums(const floating* m, Py_ssize_t rows, Py_ssize_t n,
                                 floating* sums) noexcept nogil:
    """sums[n] += column sums of the row-major m[rows, n], row by row (unit stride)."""
    cdef Py_ssize_t i, j
    for i in range(rows):
        for j in range(n):
            sums[j] += m[i * n + j]


cdef class FusedSteps:
    """A float32 time loop for run_step_sequence: W_hh packed once, one operand set per step."""
    cdef step_sequence seq
    cdef float* packed
    cdef step_operands* steps

    def __dealloc__(self):
        free(self.packed)
        free(self.steps)

    cdef int prepare(self, const float* w_hh, int H, bint multiply_by_transpose, int n_steps,
                     int M, int epilogue, Py_ssize_t ldc, Py_ssize_t ldh) except -1:
        """Each step will compute c = epilogue(c + a . W_hh^T) (multiply_by_transpose) or
        c = epilogue(c + a . W_hh), with a [M, H] and c [M, H]."""
        cdef const step_kernel* kernel = current_step_kernel()
        self.packed = alloc_packed(packed_floats(H, H, kernel.panel_width))
        self.steps = <step_operands*>malloc(max(n_steps, 1) * sizeof(step_operands))
        if self.packed == NULL or self.steps == NULL:
            raise MemoryError(f"could not allocate the packed {H}x{H} recurrent weights")
        with nogil:
            pack_panels(w_hh, H, H, H, multiply_by_transpose, kernel.panel_width, self.packed)
        self.seq = step_sequence(kernel=kernel, n_steps=n_steps, M=M, N=H, K=H,
                                 epilogue=epilogue, packed=self.packed, steps=self.steps,
                                 ldc=ldc, ldh=ldh)
        return 0

    cdef inline void set_step(self, int s, const float* a, Py_ssize_t lda, float* c,
                              const float* h) noexcept nogil:
        self.steps[s] = step_operands(a=a, lda=lda, c=c, h=h)

    cdef inline void run(self, int n_threads) noexcept nogil:
        run_step_sequence(&self.seq, n_threads)


def rnn_forward_cpu(const floating[:, :, ::1] x,      # [T, B, I]
                    const floating[:, ::1] h0,         # [B, H]
                    const floating[:, ::1] w_ih,       # [H, I]
                    const floating[:, ::1] w_hh,       # [H, H]
                    const floating[::1] bias,          # [H]  b_ih + b_hh (zeros without bias)
                    floating[:, :, :] out,             # [T, B, H]  unit inner stride, rows evenly spaced
                    bint reverse, bint relu, int step_threads):
    """``step_threads``: threads that share each float32 step (float64 steps use BLAS's)."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = w_hh.shape[0]
    cdef int ld_out = out.strides[1] // sizeof(floating)
    cdef Py_ssize_t s, t, b
    cdef const floating* h_prev
    cdef int ld_prev
    cdef FusedSteps steps
    if floating is float:
        steps = FusedSteps()
        steps.prepare(&w_hh[0, 0], H, True, T, B, STEP_RELU if relu else STEP_TANH, ld_out, 0)
    with nogil:
        for t in range(T):
            for b in range(B):
                memcpy(&out[t, b, 0], &bias[0], H * sizeof(floating))
        # out[T*B, H] += x[T*B, I] @ w_ih^T: the input projection of every step at once
        gemm(False, True, T * B, H, I, 1, &x[0, 0, 0], I, &w_ih[0, 0], I, 1, &out[0, 0, 0], ld_out)
        for s in range(T):
            t = T - 1 - s if reverse else s
            if s == 0:
                h_prev, ld_prev = &h0[0, 0], H
            else:
                h_prev, ld_prev = &out[t + 1 if reverse else t - 1, 0, 0], ld_out
            if floating is float:   # out[t] = act(out[t] + h_prev @ W_hh^T), run below
                steps.set_step(s, h_prev, ld_prev, &out[t, 0, 0], NULL)
            else:
                gemm(False, True, B, H, H, 1, h_prev, ld_prev, &w_hh[0, 0], H, 1, &out[t, 0, 0], ld_out)
                for b in range(B):
                    if relu:
                        relu_inplace(&out[t, b, 0], H)
                    else:
                        tanh_inplace(&out[t, b, 0], H)
        if floating is float:
            steps.run(step_threads)


def rnn_backward_cpu(const floating[:, :, ::1] x,         # [T, B, I]
                     const floating[:, ::1] h0,            # [B, H]
                     const floating[:, ::1] w_ih,          # [H, I]
                     const floating[:, ::1] w_hh,          # [H, H]
                     const floating[:, :, :] out,          # [T, B, H]  forward output, unit inner stride, rows evenly spaced
                     const floating[:, :, :] grad_out,     # [T, B, H]  dL/d out, same layout rules as out
                     const floating[:, ::1] grad_hn,       # [B, H]     dL/d h_n
                     bint reverse, bint relu,
                     floating[:, :, ::1] grad_x,           # [T, B, I]  written, or added to
                     bint accumulate_x,
                     floating[:, ::1] grad_h0,             # [B, H]     written
                     floating[:, ::1] grad_w_ih,           # [H, I]     added to
                     floating[:, ::1] grad_w_hh,           # [H, H]     added to
                     floating[::1] grad_b_ih,              # [H]        added to
                     floating[::1] grad_b_hh,              # [H]        added to
                     floating[:, :, ::1] g,                # [T, B, H]  scratch: dL/d a_t
                     int step_threads):
    """``step_threads``: threads that share each float32 step (float64 steps use BLAS's)."""
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = w_hh.shape[0]
    cdef int ld_out = out.strides[1] // sizeof(floating)
    cdef Py_ssize_t first = T - 1 if reverse else 0     # the step that reads h0
    cdef Py_ssize_t last = 0 if reverse else T - 1      # the step that writes h_n
    cdef Py_ssize_t s, t, t_prev, b, j
    cdef int grad_epilogue = STEP_RELU_GRAD if relu else STEP_TANH_GRAD
    cdef const step_kernel* kernel = current_step_kernel()
    cdef FusedSteps steps
    if floating is float:
        steps = FusedSteps()
        steps.prepare(&w_hh[0, 0], H, False, T - 1, B, grad_epilogue, H, ld_out)
    with nogil:
        for t in range(T):
            for b in range(B):
                memcpy(&g[t, b, 0], &grad_out[t, b, 0], H * sizeof(floating))
        for b in range(B):
            for j in range(H):
                g[last, b, j] += grad_hn[b, j]
        if floating is float:
            # g_last *= act'(h_last); then each step g_prev = (g_prev + g_t W_hh) * act'(h_prev)
            kernel.epilogue_only(B, H, &g[last, 0, 0], H, grad_epilogue, &out[last, 0, 0], ld_out)
            for s in range(T - 1, 0, -1):
                t = T - 1 - s if reverse else s
                t_prev = t + 1 if reverse else t - 1
                steps.set_step(T - 1 - s, &g[t, 0, 0], H, &g[t_prev, 0, 0], &out[t_prev, 0, 0])
            steps.run(step_threads)
        else:
            for s in range(T - 1, -1, -1):
                t = T - 1 - s if reverse else s
                for b in range(B):
                    times_activation_grad(&g[t, b, 0], &out[t, b, 0], H, relu)
                if s > 0:   # dL/dh_{t-1} += g_t W_hh, straight into the previous step's g
                    gemm(False, False, B, H, H, 1, &g[t, 0, 0], H, &w_hh[0, 0], H, 1,
                         &g[t + 1 if reverse else t - 1, 0, 0], H)
        gemm(False, False, B, H, H, 1, &g[first, 0, 0], H, &w_hh[0, 0], H, 0, &grad_h0[0, 0], H)
        # After the loop, one product each over all T*B rows.
        add_weight_gradient(kernel, H, I, T * B, &g[0, 0, 0], H, &x[0, 0, 0], I,
                            &grad_w_ih[0, 0], I)
        add_weight_gradient(kernel, H, H, B, &g[first, 0, 0], H, &h0[0, 0], H,
                            &grad_w_hh[0, 0], H)
        if T > 1:   # g_t pairs with h_{t-1}: the outputs shifted one step against g
            if reverse:
                add_weight_gradient(kernel, H, H, (T - 1) * B, &g[0, 0, 0], H, &out[1, 0, 0],
                                    ld_out, &grad_w_hh[0, 0], H)
            else:
                add_weight_gradient(kernel, H, H, (T - 1) * B, &g[1, 0, 0], H, &out[0, 0, 0],
                                    ld_out, &grad_w_hh[0, 0], H)
        gemm(False, False, T * B, I, H, 1, &g[0, 0, 0], H, &w_ih[0, 0], I,
             1 if accumulate_x else 0, &grad_x[0, 0, 0], I)
        add_column_sums(&g[0, 0, 0], T * B, H, &grad_b_ih[0])
        add_column_sums(&g[0, 0, 0], T * B, H, &grad_b_hh[0])
