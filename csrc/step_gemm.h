/* The float32 products of the RNN kernels, with the activation fused into them.
 *
 *     C[M, N] = epilogue(C + A[M, K] . B[K, N])        (epilogues: STEP_* below)
 *
 * Why not sgemm: each time step multiplies a few rows (the batch) by the same H x H matrix.
 * A BLAS call repacks that matrix on every call and pays its call overhead T times; at B=1 and
 * small H the overhead is most of the step. Here W_hh is packed ONCE per layer-direction call
 * into column panels; each step then runs register tiles over the panels and applies the
 * activation (forward) or its derivative (backward) to the tile while it is still in cache.
 * The same packed-panel product serves the products too small to be worth a (possibly
 * threaded) BLAS call: the input projection, dX and grad_h0 of small layers. `rank_k_update`
 * computes the weight gradients of small layers in place, and `direct_gemm` skips packing
 * altogether for calls with so few rows that packing would cost more than it saves.
 * Each variant also carries the gated cells' elementwise passes (gate_cells.h), which run
 * between a step's products on the same vectors and the same rational tanh.
 *
 * Why the variants: a portable build cannot assume AVX-512 or AVX2, and `-march=native` would
 * tie the wheel to the build machine. The same plain C (GCC vector extensions, which the
 * compiler lowers to the vector width it targets) is compiled three times, for AVX-512, AVX2+FMA
 * and the baseline ISA, and the variant is picked once at import from what the CPU reports
 * (runtime dispatch; setup.py keeps the build itself at the baseline). `select_step_kernel`
 * lets tests and benchmarks run a lower variant on purpose.
 */
#ifndef FASTRNN_STEP_GEMM_H
#define FASTRNN_STEP_GEMM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "activations.h"
#include "gate_cells.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* What a product does with C after the sums S = A . B of a tile are ready. */
enum {
    STEP_PLAIN = 0,      /* C = C + S                                                         */
    STEP_TANH = 1,       /* C = tanh(C + S)                 (forward step, tanh)              */
    STEP_RELU = 2,       /* C = relu(C + S)                 (forward step, relu)              */
    STEP_TANH_GRAD = 3,  /* C = (C + S) * (1 - H^2)         (backward step, H = the outputs)  */
    STEP_RELU_GRAD = 4,  /* C = (C + S) * (H > 0)                                             */
    STEP_ASSIGN = 5      /* C = S                           (C is not read)                   */
};

/* ---- the variants ------------------------------------------------------------------------ */
#define SUFFIX generic
#define VW 4
#define NV 2
#define MR 4
#include "step_gemm_impl.h"
#define REAL float
#include "gate_cells_impl.h"
#undef REAL
#undef SUFFIX
#undef VW
#undef NV
#undef MR

#if defined(__x86_64__) && defined(__GNUC__)
#define FASTRNN_X86_VARIANTS 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define SUFFIX avx2
#define VW 8
#define NV 2
#define MR 6
#include "step_gemm_impl.h"
#define REAL float
#include "gate_cells_impl.h"
#undef REAL
#undef SUFFIX
#undef VW
#undef NV
#undef MR
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma")
#endif
#define SUFFIX avx512
#define VW 16
#define NV 2
#define MR 8
#include "step_gemm_impl.h"
#define REAL float
#include "gate_cells_impl.h"
#undef REAL
#undef SUFFIX
#undef VW
#undef NV
#undef MR
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

/* ---- dispatch ---------------------------------------------------------------------------- */
/* The functions of one variant; their arguments are documented in step_gemm_impl.h. */
typedef void (*step_gemm_fn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *a,
                             ptrdiff_t lda, const float *packed, float *c, ptrdiff_t ldc,
                             int epilogue, const float *h, ptrdiff_t ldh, ptrdiff_t panel_begin,
                             ptrdiff_t panel_end, int descending);
typedef void (*rank_k_fn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *a, ptrdiff_t lda,
                          const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc,
                          ptrdiff_t panel_begin, ptrdiff_t panel_end);
typedef void (*epilogue_fn)(ptrdiff_t M, ptrdiff_t N, float *c, ptrdiff_t ldc, int epilogue,
                            const float *h, ptrdiff_t ldh);
typedef void (*pack_fn)(const float *w, ptrdiff_t ldw, ptrdiff_t K, ptrdiff_t N,
                        int w_is_transposed, float *packed);
typedef void (*direct_gemm_fn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const float *a,
                               ptrdiff_t lda, const float *w, ptrdiff_t ldw, int w_is_transposed,
                               float *c, ptrdiff_t ldc, int epilogue, const float *h,
                               ptrdiff_t ldh);

typedef struct {
    const char *name;
    ptrdiff_t panel_width;   /* NR: columns per packed panel */
    step_gemm_fn step_gemm;
    rank_k_fn rank_k_update;
    epilogue_fn epilogue_only;
    direct_gemm_fn direct_gemm;
    pack_fn pack_panels;     /* B into panels of panel_width (see step_gemm_impl.h) */
    gate_cell_passes cells;  /* the gated cells' elementwise passes (gate_cells.h) */
} step_kernel;

#define GATE_CELLS(v) \
    {lstm_forward_cells_##v, lstm_backward_cells_##v, gru_forward_cells_##v, gru_backward_cells_##v}
static const step_kernel step_kernels[] = {
#ifdef FASTRNN_X86_VARIANTS
    {"avx512", 32, step_gemm_avx512, rank_k_update_avx512, epilogue_only_avx512,
     direct_gemm_avx512, pack_panels_avx512, GATE_CELLS(avx512)},
    {"avx2", 16, step_gemm_avx2, rank_k_update_avx2, epilogue_only_avx2, direct_gemm_avx2,
     pack_panels_avx2, GATE_CELLS(avx2)},
#endif
    {"generic", 8, step_gemm_generic, rank_k_update_generic, epilogue_only_generic,
     direct_gemm_generic, pack_panels_generic, GATE_CELLS(generic)},
};
#undef GATE_CELLS
static const int n_step_kernels = sizeof(step_kernels) / sizeof(step_kernels[0]);
static const step_kernel *active_step_kernel = NULL;

static int step_kernel_supported(const step_kernel *kernel)
{
#ifdef FASTRNN_X86_VARIANTS
    __builtin_cpu_init();
    if (strcmp(kernel->name, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (strcmp(kernel->name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

/* The variant called `name` if this CPU runs it ("best": the widest it runs); NULL otherwise. */
static const step_kernel *find_step_kernel(const char *name)
{
    int i;
    for (i = 0; i < n_step_kernels; i++)
        if ((strcmp(name, "best") == 0 || strcmp(name, step_kernels[i].name) == 0)
            && step_kernel_supported(&step_kernels[i]))
            return &step_kernels[i];
    return NULL;
}

static const step_kernel *current_step_kernel(void)
{
    if (active_step_kernel == NULL) active_step_kernel = find_step_kernel("best");
    return active_step_kernel;
}

/* Makes `name` the active variant; returns 0 when this CPU cannot run it (nothing changes). */
static int select_step_kernel(const char *name)
{
    const step_kernel *kernel = find_step_kernel(name);
    if (kernel == NULL) return 0;
    active_step_kernel = kernel;
    return 1;
}

/* ---- packing ----------------------------------------------------------------------------- */
/* Floats in the packed form of a K x N matrix for panels `width` columns wide (zero padded). */
static size_t packed_floats(ptrdiff_t K, ptrdiff_t N, ptrdiff_t width)
{
    return (size_t)((N + width - 1) / width) * (size_t)width * (size_t)K;
}

/* 64-byte aligned buffer for a packed matrix (free with free()); NULL when out of memory. */
static float *alloc_packed(size_t floats)
{
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    return (float *)aligned_alloc(64, bytes ? bytes : 64);
}

#endif
