# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CPU kernels for one RNN layer in one direction: the time loops of forward and BPTT.

Why it is built this way (design.md, "what makes it fast"):
- one Python call per layer-direction; the whole time loop runs without the GIL;
- the input projection of all T steps is ONE matrix product, written straight into the output
  buffer, which was first filled with the folded bias; each step then adds h_{t-1} W_hh^T in
  place (beta = 1) and applies the activation in place;
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
from libc.string cimport memcpy
from scipy.linalg.cython_blas cimport dgemm, sgemm

# tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= TANH_CLAMP, fitted for this project by iterated
# weighted least squares on relative error (max 3.1e-7 relative in float32, about 5 ulp);
# Q >= 1 on the range, so there is no pole. Beyond the clamp float32 tanh rounds to +-1.
cdef float TANH_CLAMP = 7.90531110763549805
cdef float P0 = 9.999999984e-01, P1 = 1.312633455e-01, P2 = 3.151615143e-03
cdef float P3 = 1.166729047e-05, P4 = -2.242689466e-08, P5 = 6.428730564e-11, P6 = -1.176104782e-13
cdef float Q1 = 4.645966619e-01, Q2 = 2.468386526e-02, Q3 = 2.616320310e-04


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, leading dimensions lda/ldb/ldc.

    Column-major BLAS reads a row-major matrix as its transpose, so it is asked for
    C^T = op(B)^T op(A)^T: the operands swap places and keep their transpose flags.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    lda, ldb, ldc = max(lda, 1), max(ldb, 1), max(ldc, 1)
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline void tanh_inplace(floating* row, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    cdef float v, s
    if floating is float:
        for j in range(n):           # branch-free: the compiler turns this into SIMD
            v = row[j]
            v = TANH_CLAMP if v > TANH_CLAMP else v
            v = -TANH_CLAMP if v < -TANH_CLAMP else v
            s = v * v
            row[j] = v * (P0 + s * (P1 + s * (P2 + s * (P3 + s * (P4 + s * (P5 + s * P6)))))) \
                / (1.0 + s * (Q1 + s * (Q2 + s * Q3)))
    else:
        for j in range(n):
            row[j] = tanh(row[j])


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


def rnn_forward_cpu(const floating[:, :, ::1] x,      # [T, B, I]
                    const floating[:, ::1] h0,         # [B, H]
                    const floating[:, ::1] w_ih,       # [H, I]
                    const floating[:, ::1] w_hh,       # [H, H]
                    const floating[::1] bias,          # [H]  b_ih + b_hh (zeros without bias)
                    floating[:, :, :] out,             # [T, B, H]  unit inner stride, rows evenly spaced
                    bint reverse, bint relu):
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = w_hh.shape[0]
    cdef int ld_out = out.strides[1] // sizeof(floating)
    cdef Py_ssize_t s, t, b, j
    cdef const floating* h_prev
    cdef int ld_prev
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
            gemm(False, True, B, H, H, 1, h_prev, ld_prev, &w_hh[0, 0], H, 1, &out[t, 0, 0], ld_out)
            for b in range(B):
                if relu:
                    relu_inplace(&out[t, b, 0], H)
                else:
                    tanh_inplace(&out[t, b, 0], H)


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
                     floating[:, :, ::1] g):               # [T, B, H]  scratch: dL/d a_t
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = w_hh.shape[0]
    cdef int ld_out = out.strides[1] // sizeof(floating)
    cdef Py_ssize_t first = T - 1 if reverse else 0     # the step that reads h0
    cdef Py_ssize_t last = 0 if reverse else T - 1      # the step that writes h_n
    cdef Py_ssize_t s, t, b, j
    with nogil:
        for t in range(T):
            for b in range(B):
                memcpy(&g[t, b, 0], &grad_out[t, b, 0], H * sizeof(floating))
        for b in range(B):
            for j in range(H):
                g[last, b, j] += grad_hn[b, j]
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            for b in range(B):
                times_activation_grad(&g[t, b, 0], &out[t, b, 0], H, relu)
            if s > 0:   # dL/dh_{t-1} += g_t W_hh, straight into the previous step's g
                gemm(False, False, B, H, H, 1, &g[t, 0, 0], H, &w_hh[0, 0], H, 1,
                     &g[t + 1 if reverse else t - 1, 0, 0], H)
        gemm(False, False, B, H, H, 1, &g[first, 0, 0], H, &w_hh[0, 0], H, 0, &grad_h0[0, 0], H)
        # After the loop, one product each over all T*B rows.
        gemm(True, False, H, I, T * B, 1, &g[0, 0, 0], H, &x[0, 0, 0], I, 1, &grad_w_ih[0, 0], I)
        gemm(True, False, H, H, B, 1, &g[first, 0, 0], H, &h0[0, 0], H, 1, &grad_w_hh[0, 0], H)
        if T > 1:   # g_t pairs with h_{t-1}: the outputs shifted one step against g
            if reverse:
                gemm(True, False, H, H, (T - 1) * B, 1, &g[0, 0, 0], H, &out[1, 0, 0], ld_out, 1,
                     &grad_w_hh[0, 0], H)
            else:
                gemm(True, False, H, H, (T - 1) * B, 1, &g[1, 0, 0], H, &out[0, 0, 0], ld_out, 1,
                     &grad_w_hh[0, 0], H)
        gemm(False, False, T * B, I, H, 1, &g[0, 0, 0], H, &w_ih[0, 0], I,
             1 if accumulate_x else 0, &grad_x[0, 0, 0], I)
        add_column_sums(&g[0, 0, 0], T * B, H, &grad_b_ih[0])
        add_column_sums(&g[0, 0, 0], T * B, H, &grad_b_hh[0])
