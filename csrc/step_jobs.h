/* The float32 work the thread team runs: time loops of step products, and rank-k updates.
 *
 * A step plan is a time loop written as data: round r is a list of independent blocks, each
 * either a product
 *     c[m, N] = epilogue(c + a[m, K] . B)          (a == NULL: c = epilogue(c), no product)
 * with B one of the plan's operands (W_hh, packed once or used in place by direct_gemm; the
 * LSTM's projection W_hr), or a pass of the cell's elementwise code over a block of rows
 * (gate_cells.h: the gated cells' gates between two products). Round r+1 may read anything
 * round r wrote. Why blocks rather than one product per step: with variable lengths a step's
 * rows do not all come from the same place (in the reverse direction some continue from the
 * step before, others start from h0; in backward some rows of the previous step receive no
 * product but still need the activation's derivative, and the rows that started at this step
 * send their gradient to grad_h0). Every round is shared among the threads, products by column
 * panels of B and cell passes by units, so a step is still one or a few rounds of the team.
 *
 * A rank-k job is   c[M, N] += a^T b   for a [K, M] and b [K, N], both used in place.
 */
#ifndef FASTRNN_STEP_JOBS_H
#define FASTRNN_STEP_JOBS_H

#include "gate_cells.h"
#include "step_gemm.h"
#include "thread_team.h"

enum { MAX_STEP_OPERANDS = 2, CELL_UNIT_GRAIN = 16 };

/* One block of rows of a step. The element type is the call's dtype (float for the team's
 * plans; the float64 kernels execute the same plans with BLAS). */
typedef struct {
    const void *a;           /* [m, K] rows lda apart, or NULL (epilogue only) */
    ptrdiff_t lda;
    void *c;                 /* [m, N] rows ldc apart */
    ptrdiff_t ldc;
    const void *h;           /* [m, N] rows ldh apart: the outputs the derivative reads, or NULL */
    ptrdiff_t ldh;
    ptrdiff_t m;
    int epilogue;            /* STEP_* */
    int operand;             /* B = the plan's operands[operand] */
    int descending;          /* its panels in descending order (every other step: step_gemm) */
    const void *cell;        /* not NULL: this block is the plan's cell pass on these rows (an */
                             /* lstm_rows or gru_rows), and the fields above are unused */
} step_block;

typedef struct {             /* B [K, N] of a plan's products */
    ptrdiff_t N, K;
    ptrdiff_t panels;        /* set by run_step_plan: column panels of kernel->panel_width */
    const float *packed;     /* B packed with kernel->panel_width, or NULL: */
    const void *w;           /*   B = w^T (w [N, K]) if w_is_transposed else w ([K, N]), */
    ptrdiff_t ldw;           /*   used in place by direct_gemm on one thread */
    int w_is_transposed;
} step_operand;

typedef struct {
    const step_kernel *kernel;
    int n_operands;
    step_operand operands[MAX_STEP_OPERANDS];
    cell_pass_fn cell_pass;  /* what the cell blocks run (NULL: the plan has none), */
    ptrdiff_t units;         /*   over this many units per row */
    ptrdiff_t rounds_per_step;      /* the rounds of one time step (0: not a time loop) */
    ptrdiff_t n_rounds;
    const step_block *blocks;
    const ptrdiff_t *round_start;   /* [n_rounds + 1]: round r runs the blocks */
                                    /* [round_start[r], round_start[r + 1]) */
    ptrdiff_t n_items;       /* set by run_step_plan: the items the team shares each round */
} step_plan;

static ptrdiff_t panel_count(const step_kernel *kernel, ptrdiff_t N)
{
    return (N + kernel->panel_width - 1) / kernel->panel_width;
}

/* Where the share of item `item` (of n_items) begins among `total` things, in whole grains:
 * the team shares every round by the same items, whatever each block divides. */
static inline ptrdiff_t share_start(ptrdiff_t total, ptrdiff_t item, ptrdiff_t n_items,
                                   ptrdiff_t grain)
{
    if (item <= 0) return 0;                /* the ends without a division: one thread's */
    if (item >= n_items) return total;      /* share is all of it, at every tiny step */
    return total * item / n_items / grain * grain;
}

static void run_product_block(const step_plan *plan, const step_block *block,
                              ptrdiff_t item_begin, ptrdiff_t item_end)
{
    const step_kernel *kernel = plan->kernel;
    const step_operand *b = &plan->operands[block->operand];
    const ptrdiff_t panel_begin = share_start(b->panels, item_begin, plan->n_items, 1);
    const ptrdiff_t panel_end = share_start(b->panels, item_end, plan->n_items, 1);
    const float *a = (const float *)block->a, *h = (const float *)block->h;
    float *c = (float *)block->c;
    if (a == NULL) {
        const ptrdiff_t first = panel_begin * kernel->panel_width;
        const ptrdiff_t last = panel_end * kernel->panel_width < b->N
                               ? panel_end * kernel->panel_width : b->N;
        if (last > first)
            kernel->epilogue_only(block->m, last - first, c + first, block->ldc, block->epilogue,
                                  h ? h + first : NULL, block->ldh);
    } else if (b->packed != NULL) {
        kernel->step_gemm(block->m, b->N, b->K, a, block->lda, b->packed, c, block->ldc,
                          block->epilogue, h, block->ldh, panel_begin, panel_end,
                          block->descending);
    } else {                 /* whole rows: run_step_plan gives direct plans one thread */
        kernel->direct_gemm(block->m, b->N, b->K, a, block->lda, (const float *)b->w, b->ldw,
                            b->w_is_transposed, c, block->ldc, block->epilogue, h, block->ldh);
    }
}

static void run_block(const step_plan *plan, const step_block *block, ptrdiff_t item_begin,
                      ptrdiff_t item_end)
{
    if (block->m == 0) return;
    if (block->cell != NULL)
        plan->cell_pass(block->cell,
                        share_start(plan->units, item_begin, plan->n_items, CELL_UNIT_GRAIN),
                        share_start(plan->units, item_end, plan->n_items, CELL_UNIT_GRAIN));
    else
        run_product_block(plan, block, item_begin, item_end);
}

static void step_plan_work(const void *job, ptrdiff_t round, ptrdiff_t item_begin,
                           ptrdiff_t item_end)
{
    const step_plan *plan = (const step_plan *)job;
    ptrdiff_t b;
    for (b = plan->round_start[round]; b < plan->round_start[round + 1]; b++)
        run_block(plan, &plan->blocks[b], item_begin, item_end);
}

/* Runs every round of `plan` in order, each shared among up to n_threads threads (the items are
 * the column panels of operand 0; one thread when an operand is used in place). */
static void run_step_plan(step_plan *plan, int n_threads)
{
    int i;
    for (i = 0; i < plan->n_operands; i++) {
        plan->operands[i].panels = panel_count(plan->kernel, plan->operands[i].N);
        if (plan->operands[i].packed == NULL) n_threads = 1;
    }
    plan->n_items = plan->operands[0].panels;
    if (plan->n_items < 1) plan->n_items = 1;
    run_team(n_threads, plan->n_items, plan->n_rounds, step_plan_work, plan);
}

/* C[M, N] += A^T B with A [K, M] and B [K, N] row-major, used in place (see rank_k_update). */
typedef struct {
    const step_kernel *kernel;
    ptrdiff_t M, N, K;
    const float *a;
    ptrdiff_t lda;
    const float *b;
    ptrdiff_t ldb;
    float *c;
    ptrdiff_t ldc;
} rank_k_job;

static void rank_k_work(const void *job, ptrdiff_t round, ptrdiff_t panel_begin,
                        ptrdiff_t panel_end)
{
    const rank_k_job *r = (const rank_k_job *)job;
    (void)round;
    r->kernel->rank_k_update(r->M, r->N, r->K, r->a, r->lda, r->b, r->ldb, r->c, r->ldc,
                             panel_begin, panel_end);
}

/* Runs the product shared among up to n_threads threads by panels of C's columns. */
static void run_rank_k_update(const rank_k_job *job, int n_threads)
{
    run_team(n_threads, panel_count(job->kernel, job->N), 1, rank_k_work, job);
}

#endif
