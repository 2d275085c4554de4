/* One instruction-set variant of the float32 step products; included by step_gemm.h once per
 * variant (a C "template"): the includer defines
 *     SUFFIX  name suffix of the functions made here         (e.g. avx512)
 *     VW      floats per SIMD vector                          (16 for AVX-512)
 *     NV      vectors per row of a packed panel, NR = NV*VW   (panel width in columns)
 *     MR      rows of C a register tile holds                 (MR*NV accumulators)
 * and wraps the include in a target pragma, so the plain C below is compiled for that ISA.
 *
 * Every product here is   C[M, N] = epilogue(C + A[M, K] . B[K, N])   (see the STEP_* epilogues
 * in step_gemm.h), with sizes and strides in 64 bits.
 *
 * The tile keeps MR x NR sums in registers while it walks the whole K dimension: per k it loads
 * NV vectors of the packed panel once and broadcasts one element of each of the MR rows of A.
 * MR and NV are chosen per ISA so that the accumulators, the panel vectors and the broadcast
 * fit the register file (32 zmm for AVX-512, 16 ymm for AVX2, 16 xmm for SSE2/NEON).
 */
#define NR (NV * VW)
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)

/* aligned(4): loads and stores through this type may be unaligned (C rows are arbitrary). */
typedef float FN(vec) __attribute__((vector_size(VW * sizeof(float)), aligned(4)));
typedef int FN(mask) __attribute__((vector_size(VW * sizeof(float)), aligned(4)));

/* Lane-wise `mask ? a : b` (vector comparisons give all-ones or all-zeros lanes). */
static inline FN(vec) FN(select)(FN(mask) mask, FN(vec) a, FN(vec) b)
{
    return (FN(vec))(((FN(mask))a & mask) | ((FN(mask))b & ~mask));
}

/* tanh_f32 (activations.h) on a whole vector: the same expression, clamp and operation order. */
static inline FN(vec) FN(tanh_vec)(FN(vec) v)
{
    const FN(vec) clamp = (FN(vec)){0} + TANH_CLAMP;
    v = FN(select)(v > clamp, clamp, v);
    v = FN(select)(v < -clamp, -clamp, v);
    return TANH_RATIONAL(v, v * v);
}

/* One full row of a tile: c[0:NR] = epilogue(c + sums), in registers (h: [NR] or NULL). */
static inline __attribute__((always_inline)) void FN(store_row)(
    float *restrict c, const FN(vec) *sums, int epilogue, const float *restrict h)
{
    FN(vec) *cv = (FN(vec) *)c;
    const FN(vec) *hv = (const FN(vec) *)h, zero = {0};
    int v;
    for (v = 0; v < NV; v++) {
        FN(vec) r = epilogue == STEP_ASSIGN ? sums[v] : cv[v] + sums[v];
        switch (epilogue) {
        case STEP_TANH: r = FN(tanh_vec)(r); break;
        case STEP_RELU: r = FN(select)(r <= zero, zero, r); break;   /* NaN passes */
        case STEP_TANH_GRAD: r = r * (1.0f - hv[v] * hv[v]); break;
        case STEP_RELU_GRAD: r = FN(select)(hv[v] > zero, r, zero); break;
        default: break;
        }
        cv[v] = r;
    }
}

/* Applies the epilogue's activation (or derivative) to one row of n floats of C (h: the
 * matching row of the layer output). PLAIN and ASSIGN have none. */
static void FN(epilogue_row)(float *restrict c, ptrdiff_t n, int epilogue,
                             const float *restrict h)
{
    ptrdiff_t j;
    switch (epilogue) {
    case STEP_TANH:
        for (j = 0; j < n; j++) c[j] = tanh_f32(c[j]);
        break;
    case STEP_RELU:
        for (j = 0; j < n; j++) c[j] = relu_f32(c[j]);
        break;
    case STEP_TANH_GRAD:
        for (j = 0; j < n; j++) c[j] = tanh_grad_f32(c[j], h[j]);
        break;
    case STEP_RELU_GRAD:
        for (j = 0; j < n; j++) c[j] = relu_grad_f32(c[j], h[j]);
        break;
    default:
        break;
    }
}

/* C[mr, ncols] = epilogue(C + A[mr, K] . B[K, NR]); mr is a constant after inlining, so the
 * accumulators live in registers. A's element (i, k) is a[i * a_row + k * a_k] and B's row k
 * starts at b + k * b_k: with (a_row, a_k, b_k) = (lda, 1, NR), A is row-major and B a packed
 * panel (the step product); with (1, lda, ldb), A is read transposed and B is a row-major
 * matrix used in place (the weight gradients' A^T B). With one or two rows the FMA chains are
 * too few to hide the FMA latency, so those tiles sum even and odd k separately. */
static inline __attribute__((always_inline)) void FN(tile)(
    const int mr, const ptrdiff_t K,
    const float *restrict a, const ptrdiff_t a_row, const ptrdiff_t a_k,
    const float *restrict b, const ptrdiff_t b_k,
    float *restrict c, const ptrdiff_t ldc,              /* [mr, ncols] rows ldc apart */
    const ptrdiff_t ncols, const int epilogue,
    const float *restrict h, const ptrdiff_t ldh)        /* [mr, ncols] or NULL */
{
    enum { SPLIT = 2 };
    const int split = mr <= 2 ? SPLIT : 1;
    FN(vec) acc[SPLIT][MR][NV];
    int i, v, s;
    ptrdiff_t k;
    for (s = 0; s < split; s++)
        for (i = 0; i < mr; i++)
            for (v = 0; v < NV; v++) acc[s][i][v] = (FN(vec)){0};
    for (k = 0; k + split <= K; k += split) {
        for (s = 0; s < split; s++) {
            const FN(vec) *bk = (const FN(vec) *)(b + (k + s) * b_k);
            for (i = 0; i < mr; i++) {
                const float ai = a[i * a_row + (k + s) * a_k];
                for (v = 0; v < NV; v++) acc[s][i][v] += ai * bk[v];
            }
        }
    }
    for (; k < K; k++) {                                 /* odd K with a split tile */
        const FN(vec) *bk = (const FN(vec) *)(b + k * b_k);
        for (i = 0; i < mr; i++)
            for (v = 0; v < NV; v++) acc[0][i][v] += a[i * a_row + k * a_k] * bk[v];
    }
    for (s = 1; s < split; s++)
        for (i = 0; i < mr; i++)
            for (v = 0; v < NV; v++) acc[0][i][v] += acc[s][i][v];
    for (i = 0; i < mr; i++) {
        float *ci = c + i * ldc;
        const float *hi = h ? h + i * ldh : NULL;
        if (ncols == NR) {
            FN(store_row)(ci, acc[0][i], epilogue, hi);
        } else {                                          /* the last, partial panel */
            float sums[NR];
            ptrdiff_t j;
            memcpy(sums, acc[0][i], sizeof(sums));
            for (j = 0; j < ncols; j++) ci[j] = epilogue == STEP_ASSIGN ? sums[j] : ci[j] + sums[j];
            FN(epilogue_row)(ci, ncols, epilogue, hi);
        }
    }
}

/* One row tile of `rows` rows, for a runtime `rows` <= MR: a switch of constant-size tiles. */
#define TILE_CASE(rows) case rows: TILE_CALL(rows); break;
#if MR >= 8
#define TILE_CASE_8 TILE_CASE(8)
#else
#define TILE_CASE_8
#endif
#if MR >= 7
#define TILE_CASE_7 TILE_CASE(7)
#else
#define TILE_CASE_7
#endif
#if MR >= 6
#define TILE_CASE_6 TILE_CASE(6)
#else
#define TILE_CASE_6
#endif
#if MR >= 5
#define TILE_CASE_5 TILE_CASE(5)
#else
#define TILE_CASE_5
#endif
#if MR >= 4
#define TILE_CASE_4 TILE_CASE(4)
#else
#define TILE_CASE_4
#endif
#if MR >= 3
#define TILE_CASE_3 TILE_CASE(3)
#else
#define TILE_CASE_3
#endif
#define SWITCH_ON_ROWS(rows) switch (rows) { \
    TILE_CASE_8 TILE_CASE_7 TILE_CASE_6 TILE_CASE_5 TILE_CASE_4 TILE_CASE_3 \
    TILE_CASE(2) TILE_CASE(1) }

/* C[M, N] = epilogue(C + A[M, K] . B[K, N]), B packed by pack_panels with this variant's NR,
 * for the column panels [panel_begin, panel_end) only (threads share a step by panels), in
 * descending order if `descending`: a time loop alternates the order from step to step, so
 * that the panels a step used last, still in L1 when B is bigger than L1, come first in the
 * next (at B = 1 each step streams all of W_hh: 12% faster at 64 KB). */
static void FN(step_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *a, ptrdiff_t lda,
                          const float *packed, float *c, ptrdiff_t ldc, int epilogue,
                          const float *h, ptrdiff_t ldh, ptrdiff_t panel_begin,
                          ptrdiff_t panel_end, int descending)
{
    ptrdiff_t q, i0;
    if (panel_end > (N + NR - 1) / NR) panel_end = (N + NR - 1) / NR;
    for (q = panel_begin; q < panel_end; q++) {   /* panel outer: it stays in cache */
        const ptrdiff_t p = descending ? panel_end - 1 - (q - panel_begin) : q;
        const ptrdiff_t ncols = N - p * NR < NR ? N - p * NR : NR;
        const float *panel = packed + p * K * NR;
        for (i0 = 0; i0 < M; i0 += MR) {
            const float *a_rows = a + i0 * lda;
            float *c_rows = c + i0 * ldc + p * NR;
            const float *h_rows = h ? h + i0 * ldh + p * NR : NULL;
#define TILE_CALL(rows) FN(tile)(rows, K, a_rows, lda, 1, panel, NR, c_rows, ldc, ncols, \
                                 epilogue, h_rows, ldh)
            SWITCH_ON_ROWS(M - i0 < MR ? (int)(M - i0) : MR)
#undef TILE_CALL
        }
    }
}

/* C[M, N] += A^T B for A [K, M] (rows lda apart) and B [K, N] (rows ldb apart), both used in
 * place (no packing), N a multiple of NR, for the column panels [panel_begin, panel_end).
 * Meant for outputs that stay in cache (the weight gradients of small layers): K is walked in
 * blocks of RANK_K_BLOCK rows so that the rows of A and B a block reads stay in L2 while
 * every tile of C uses them. */
enum { FN(RANK_K_BLOCK) = 128 };
static void FN(rank_k_update)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *a,
                              ptrdiff_t lda, const float *b, ptrdiff_t ldb, float *c,
                              ptrdiff_t ldc, ptrdiff_t panel_begin, ptrdiff_t panel_end)
{
    ptrdiff_t k0, p, i0;
    for (k0 = 0; k0 < K; k0 += FN(RANK_K_BLOCK)) {
        const ptrdiff_t kc = K - k0 < FN(RANK_K_BLOCK) ? K - k0 : FN(RANK_K_BLOCK);
        for (p = panel_begin; p < panel_end && p * NR < N; p++) {
            const float *b_cols = b + k0 * ldb + p * NR;
            for (i0 = 0; i0 < M; i0 += MR) {
                const float *a_cols = a + k0 * lda + i0;
                float *c_rows = c + i0 * ldc + p * NR;
#define TILE_CALL(rows) FN(tile)(rows, kc, a_cols, 1, lda, b_cols, ldb, c_rows, ldc, NR, \
                                 STEP_PLAIN, NULL, 0)
                SWITCH_ON_ROWS(M - i0 < MR ? (int)(M - i0) : MR)
#undef TILE_CALL
            }
        }
    }
}

/* Applies the epilogue alone to C[M, N] (rows that have no product before them). */
static void FN(epilogue_only)(ptrdiff_t M, ptrdiff_t N, float *c, ptrdiff_t ldc, int epilogue,
                              const float *h, ptrdiff_t ldh)
{
    ptrdiff_t i;
    for (i = 0; i < M; i++) FN(epilogue_row)(c + i * ldc, N, epilogue, h ? h + i * ldh : NULL);
}

/* The sum of a vector's lanes: its 4-lane quarters added as vectors, then 4 scalars. */
typedef float FN(quad) __attribute__((vector_size(4 * sizeof(float))));
static inline float FN(lane_sum)(FN(vec) v)
{
    union { FN(vec) whole; FN(quad) quarter[VW / 4]; } lanes = {v};
    FN(quad) sum = lanes.quarter[0];
    int q;
    for (q = 1; q < VW / 4; q++) sum += lanes.quarter[q];
    return (sum[0] + sum[1]) + (sum[2] + sum[3]);
}

/* dots[q] = sum over k < n of x[k] * y[q * ldy + k], for q < 4: four dot products that share
 * the loads of x and run as independent FMA chains (the order of the additions differs from
 * a plain loop). */
static inline void FN(dot4)(const float *restrict x, const float *restrict y, ptrdiff_t ldy,
                            ptrdiff_t n, float dots[4])
{
    FN(vec) acc[4] = {{0}};
    ptrdiff_t k = 0;
    int q;
    for (; k + VW <= n; k += VW) {
        const FN(vec) xk = *(const FN(vec) *)(x + k);
        for (q = 0; q < 4; q++) acc[q] += xk * *(const FN(vec) *)(y + q * ldy + k);
    }
    for (q = 0; q < 4; q++) {
        ptrdiff_t tail;
        dots[q] = FN(lane_sum)(acc[q]);
        for (tail = k; tail < n; tail++) dots[q] += x[tail] * y[q * ldy + tail];
    }
}

/* Sum of x[k] * y[k] for k < n, on vectors. */
static inline float FN(dot)(const float *restrict x, const float *restrict y, ptrdiff_t n)
{
    FN(vec) acc = {0};
    float sum;
    ptrdiff_t k = 0;
    for (; k + VW <= n; k += VW) acc += *(const FN(vec) *)(x + k) * *(const FN(vec) *)(y + k);
    sum = FN(lane_sum)(acc);
    for (; k < n; k++) sum += x[k] * y[k];
    return sum;
}

/* C[M, N] = epilogue(C + A[M, K] . op(W)) with W used in place, no packing: op(W) = W^T for a
 * row-major W [N, K] (w_is_transposed: each entry is the dot product of two contiguous rows),
 * else W itself, row-major [K, N] (register tiles over W's rows in place, as rank_k_update
 * reads B; the columns past the last full panel are summed row by row).
 * For calls with so few rows that packing W would cost more than their products. */
static void FN(direct_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *a, ptrdiff_t lda,
                            const float *w, ptrdiff_t ldw, int w_is_transposed, float *c,
                            ptrdiff_t ldc, int epilogue, const float *h, ptrdiff_t ldh)
{
    const ptrdiff_t full = N / NR * NR;      /* columns in whole panels */
    ptrdiff_t i, i0, j, k, p;
    if (w_is_transposed) {
        for (i = 0; i < M; i++) {
            float *restrict ci = c + i * ldc;
            float dots[4];
            int q;
            if (epilogue == STEP_ASSIGN) memset(ci, 0, (size_t)N * sizeof(float));
            for (j = 0; j + 4 <= N; j += 4) {
                FN(dot4)(a + i * lda, w + j * ldw, ldw, K, dots);
                for (q = 0; q < 4; q++) ci[j + q] += dots[q];
            }
            for (; j < N; j++) ci[j] += FN(dot)(a + i * lda, w + j * ldw, K);
            FN(epilogue_row)(ci, N, epilogue, h ? h + i * ldh : NULL);
        }
        return;
    }
    for (p = 0; p < full; p += NR) {
        for (i0 = 0; i0 < M; i0 += MR) {
            const float *a_rows = a + i0 * lda;
            float *c_rows = c + i0 * ldc + p;
            const float *h_rows = h ? h + i0 * ldh + p : NULL;
#define TILE_CALL(rows) FN(tile)(rows, K, a_rows, lda, 1, w + p, ldw, c_rows, ldc, NR, \
                                 epilogue, h_rows, ldh)
            SWITCH_ON_ROWS(M - i0 < MR ? (int)(M - i0) : MR)
#undef TILE_CALL
        }
    }
    for (i = 0; i < M && full < N; i++) {
        float *restrict ci = c + i * ldc + full;
        if (epilogue == STEP_ASSIGN) memset(ci, 0, (size_t)(N - full) * sizeof(float));
        for (k = 0; k < K; k++) {
            const float aik = a[i * lda + k];
            const float *restrict wk = w + k * ldw + full;
            for (j = 0; j < N - full; j++) ci[j] += aik * wk[j];
        }
        FN(epilogue_row)(ci, N - full, epilogue, h ? h + i * ldh + full : NULL);
    }
}

/* The panel [K, NR] of B = W^T for W's rows `rows` [columns, K] (columns <= NR): the
 * transposition, in 4x4 blocks on SSE (baseline on x86-64), element by element elsewhere. */
static void FN(pack_transposed_panel)(const float *rows, ptrdiff_t ldw, ptrdiff_t K,
                                      ptrdiff_t columns, float *panel)
{
    ptrdiff_t j = 0, k;
#if defined(__SSE__)
    for (; j + 4 <= columns; j += 4) {
        const float *r0 = rows + j * ldw, *r1 = r0 + ldw, *r2 = r1 + ldw, *r3 = r2 + ldw;
        for (k = 0; k + 4 <= K; k += 4) {
            __m128 k0 = _mm_loadu_ps(r0 + k), k1 = _mm_loadu_ps(r1 + k);
            __m128 k2 = _mm_loadu_ps(r2 + k), k3 = _mm_loadu_ps(r3 + k);
            _MM_TRANSPOSE4_PS(k0, k1, k2, k3);
            _mm_storeu_ps(panel + k * NR + j, k0);
            _mm_storeu_ps(panel + (k + 1) * NR + j, k1);
            _mm_storeu_ps(panel + (k + 2) * NR + j, k2);
            _mm_storeu_ps(panel + (k + 3) * NR + j, k3);
        }
        for (; k < K; k++) {
            panel[k * NR + j] = r0[k];
            panel[k * NR + j + 1] = r1[k];
            panel[k * NR + j + 2] = r2[k];
            panel[k * NR + j + 3] = r3[k];
        }
    }
#endif
    for (; j < columns; j++)
        for (k = 0; k < K; k++) panel[k * NR + j] = rows[j * ldw + k];
}

/* Packs B[K, N] into column panels of NR (packed_floats(K, N, NR) floats): panel p holds
 * B[k, p*NR + j] at [p][k][j], zero past column N. B is read from w: B[k, n] = w[n*ldw + k]
 * when w_is_transposed (w is the row-major [N, K] matrix, e.g. W_hh for h W_hh^T), else
 * w[k*ldw + n]. */
static void FN(pack_panels)(const float *w, ptrdiff_t ldw, ptrdiff_t K, ptrdiff_t N,
                            int w_is_transposed, float *packed)
{
    ptrdiff_t p, k;
    for (p = 0; p * NR < N; p++) {
        float *panel = packed + p * K * NR;
        const ptrdiff_t columns = N - p * NR < NR ? N - p * NR : NR;
        if (columns < NR) memset(panel, 0, (size_t)K * NR * sizeof(float));
        if (w_is_transposed)
            FN(pack_transposed_panel)(w + p * NR * ldw, ldw, K, columns, panel);
        else if (columns == NR)
            for (k = 0; k < K; k++)
                memcpy(panel + k * NR, w + k * ldw + p * NR, NR * sizeof(float));
        else
            for (k = 0; k < K; k++)
                memcpy(panel + k * NR, w + k * ldw + p * NR, (size_t)columns * sizeof(float));
    }
}

#undef SWITCH_ON_ROWS
#undef TILE_CASE_8
#undef TILE_CASE_7
#undef TILE_CASE_6
#undef TILE_CASE_5
#undef TILE_CASE_4
#undef TILE_CASE_3
#undef TILE_CASE
#undef NR
#undef FN
#undef CAT
#undef CAT_
