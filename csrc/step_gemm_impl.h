/* One instruction-set variant of the recurrent-step product; included by step_gemm.h once per
 * variant (a C "template"): the includer defines
 *     SUFFIX  name suffix of the functions made here         (e.g. avx512)
 *     VW      floats per SIMD vector                          (16 for AVX-512)
 *     NV      vectors per row of a packed panel, NR = NV*VW   (panel width in columns)
 *     MR      rows of C a register tile holds                 (MR*NV accumulators)
 * and wraps the include in a target pragma, so the plain C below is compiled for that ISA.
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

/* tanh_f32 (step_gemm.h) on a whole vector: the same formula, clamp and operation order. */
static inline FN(vec) FN(tanh_vec)(FN(vec) v)
{
    const FN(vec) one = (FN(vec)){0} + 1.0f, clamp = one * 7.90531110763549805f;
    FN(vec) s;
    v = FN(select)(v > clamp, clamp, v);
    v = FN(select)(v < -clamp, -clamp, v);
    s = v * v;
    return v * (9.999999984e-01f + s * (1.312633455e-01f + s * (3.151615143e-03f
           + s * (1.166729047e-05f + s * (-2.242689466e-08f + s * (6.428730564e-11f
           + s * -1.176104782e-13f))))))
        / (one + s * (4.645966619e-01f + s * (2.468386526e-02f + s * 2.616320310e-04f)));
}

/* One full row of a tile: c[0:NR] = epilogue(c + sums), in registers (h: [NR] or NULL). */
static inline __attribute__((always_inline)) void FN(store_row)(
    float *restrict c, const FN(vec) *sums, int epilogue, const float *restrict h)
{
    FN(vec) *cv = (FN(vec) *)c;
    const FN(vec) *hv = (const FN(vec) *)h, zero = {0};
    int v;
    for (v = 0; v < NV; v++) {
        FN(vec) r = cv[v] + sums[v];
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

/* Applies the epilogue to one row of n floats of C (h: the matching row of the layer output). */
static void FN(epilogue_row)(float *restrict c, int n, int epilogue, const float *restrict h)
{
    int j;
    switch (epilogue) {
    case STEP_TANH:
        for (j = 0; j < n; j++) c[j] = tanh_f32(c[j]);
        break;
    case STEP_RELU:
        for (j = 0; j < n; j++) c[j] = c[j] <= 0.0f ? 0.0f : c[j];   /* NaN passes, as np.maximum */
        break;
    case STEP_TANH_GRAD:
        for (j = 0; j < n; j++) c[j] = c[j] * (1.0f - h[j] * h[j]);
        break;
    case STEP_RELU_GRAD:
        for (j = 0; j < n; j++) c[j] = h[j] > 0.0f ? c[j] : 0.0f;
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
    const int mr, const int K,
    const float *restrict a, const ptrdiff_t a_row, const ptrdiff_t a_k,
    const float *restrict b, const ptrdiff_t b_k,
    float *restrict c, const ptrdiff_t ldc,              /* [mr, ncols] rows ldc apart */
    const int ncols, const int epilogue,
    const float *restrict h, const ptrdiff_t ldh)        /* [mr, ncols] or NULL */
{
    enum { SPLIT = 2 };
    const int split = mr <= 2 ? SPLIT : 1;
    FN(vec) acc[SPLIT][MR][NV];
    int i, v, k, s;
    for (s = 0; s < split; s++)
        for (i = 0; i < mr; i++)
            for (v = 0; v < NV; v++) acc[s][i][v] = (FN(vec)){0};
    for (k = 0; k + split <= K; k += split) {
        for (s = 0; s < split; s++) {
            const FN(vec) *bk = (const FN(vec) *)(b + (ptrdiff_t)(k + s) * b_k);
            for (i = 0; i < mr; i++) {
                const float ai = a[i * a_row + (k + s) * a_k];
                for (v = 0; v < NV; v++) acc[s][i][v] += ai * bk[v];
            }
        }
    }
    for (; k < K; k++) {                                 /* odd K with a split tile */
        const FN(vec) *bk = (const FN(vec) *)(b + (ptrdiff_t)k * b_k);
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
            int j;
            memcpy(sums, acc[0][i], sizeof(sums));
            for (j = 0; j < ncols; j++) ci[j] += sums[j];
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
 * for the column panels [panel_begin, panel_end) only (threads share a step by panels). */
static void FN(step_gemm)(int M, int N, int K, const float *a, ptrdiff_t lda, const float *packed,
                          float *c, ptrdiff_t ldc, int epilogue, const float *h, ptrdiff_t ldh,
                          int panel_begin, int panel_end)
{
    int p, i0;
    for (p = panel_begin; p < panel_end && p * NR < N; p++) {   /* panel outer: it stays in cache */
        const int ncols = N - p * NR < NR ? N - p * NR : NR;
        const float *panel = packed + (ptrdiff_t)p * K * NR;
        for (i0 = 0; i0 < M; i0 += MR) {
            const float *a_rows = a + i0 * lda;
            float *c_rows = c + i0 * ldc + p * NR;
            const float *h_rows = h ? h + i0 * ldh + p * NR : NULL;
#define TILE_CALL(rows) FN(tile)(rows, K, a_rows, lda, 1, panel, NR, c_rows, ldc, ncols, \
                                 epilogue, h_rows, ldh)
            SWITCH_ON_ROWS(M - i0 < MR ? M - i0 : MR)
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
static void FN(rank_k_update)(int M, int N, int K, const float *a, ptrdiff_t lda, const float *b,
                              ptrdiff_t ldb, float *c, ptrdiff_t ldc, int panel_begin,
                              int panel_end)
{
    int k0, p, i0;
    for (k0 = 0; k0 < K; k0 += FN(RANK_K_BLOCK)) {
        const int kc = K - k0 < FN(RANK_K_BLOCK) ? K - k0 : FN(RANK_K_BLOCK);
        for (p = panel_begin; p < panel_end && p * NR < N; p++) {
            const float *b_cols = b + (ptrdiff_t)k0 * ldb + p * NR;
            for (i0 = 0; i0 < M; i0 += MR) {
                const float *a_cols = a + (ptrdiff_t)k0 * lda + i0;
                float *c_rows = c + i0 * ldc + p * NR;
#define TILE_CALL(rows) FN(tile)(rows, kc, a_cols, 1, lda, b_cols, ldb, c_rows, ldc, NR, \
                                 STEP_PLAIN, NULL, 0)
                SWITCH_ON_ROWS(M - i0 < MR ? M - i0 : MR)
#undef TILE_CALL
            }
        }
    }
}

/* Applies the epilogue alone to C[M, N] (the step that has no product before it). */
static void FN(epilogue_only)(int M, int N, float *c, ptrdiff_t ldc, int epilogue,
                              const float *h, ptrdiff_t ldh)
{
    int i;
    for (i = 0; i < M; i++) FN(epilogue_row)(c + i * ldc, N, epilogue, h ? h + i * ldh : NULL);
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
