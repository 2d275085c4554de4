/* Runs the float32 kernels' work on one thread or on a small team.
 *
 * Why a team of our own: the step products are tiny next to the start-up cost of a BLAS call,
 * but a big layer's steps (DeepBench: B=64, H=1760) are worth sharing. Step s+1 reads all of
 * step s, so threads split each step by column panels and meet at a barrier between steps
 * ("rounds" below; a single product is one round). The team lives for one call: threads are
 * created at the start and joined at the end, so nothing stays alive, or spins, between
 * calls. The barrier spins briefly and then yields, because on a busy machine the partner
 * may not be running. Without POSIX threads (e.g. MSVC) everything runs on the caller alone.
 */
#ifndef FASTRNN_STEP_THREADS_H
#define FASTRNN_STEP_THREADS_H

#include "step_gemm.h"

#if defined(__unix__) || defined(__APPLE__)
#define FASTRNN_HAVE_PTHREADS 1
#include <pthread.h>
#include <sched.h>
#endif

/* The work of a team: in round r, the items [begin, end) that fall to one thread. */
typedef void (*team_work_fn)(const void *job, int round, int begin, int end);

#ifdef FASTRNN_HAVE_PTHREADS
enum { BARRIER_SPINS = 20000, MAX_TEAM_THREADS = 64 };

typedef struct {
    team_work_fn work;
    const void *job;
    int n_items, n_rounds;
    int n_threads;           /* fixed before the gate opens */
    int gate_open;
    int arrived;
    int generation;
} team;

typedef struct {
    team *team;
    int index;
} team_member;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void wait_while_equal(const int *flag, int value)
{
    int spins = 0;
    while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) == value) {
        if (++spins < BARRIER_SPINS) cpu_relax();
        else sched_yield();
    }
}

static void team_barrier(team *t)
{
    const int generation = __atomic_load_n(&t->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&t->arrived, 1, __ATOMIC_ACQ_REL) == t->n_threads) {
        __atomic_store_n(&t->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&t->generation, generation + 1, __ATOMIC_RELEASE);
        return;
    }
    wait_while_equal(&t->generation, generation);
}

static void run_member_share(team *t, int index)
{
    const int begin = t->n_items * index / t->n_threads;
    const int end = t->n_items * (index + 1) / t->n_threads;
    int round;
    for (round = 0; round < t->n_rounds; round++) {
        t->work(t->job, round, begin, end);
        if (round + 1 < t->n_rounds) team_barrier(t);   /* round r+1 reads all of round r */
    }
}

static void *team_member_main(void *arg)
{
    team_member *member = (team_member *)arg;
    wait_while_equal(&member->team->gate_open, 0);
    run_member_share(member->team, member->index);
    return NULL;
}
#endif

/* Runs n_rounds rounds of work over n_items items, each round shared among up to n_threads
 * threads (fewer when there are fewer items, or when threads cannot be created). */
static void run_team(int n_threads, int n_items, int n_rounds, team_work_fn work, const void *job)
{
    int round;
#ifdef FASTRNN_HAVE_PTHREADS
    if (n_threads > n_items) n_threads = n_items;
    if (n_threads > MAX_TEAM_THREADS) n_threads = MAX_TEAM_THREADS;
    if (n_threads > 1) {
        team t = {work, job, n_items, n_rounds, 0, 0, 0, 0};
        team_member members[MAX_TEAM_THREADS];
        pthread_t threads[MAX_TEAM_THREADS];
        int started = 0, i;
        for (i = 1; i < n_threads; i++) {
            members[i].team = &t;
            members[i].index = i;
            if (pthread_create(&threads[i], NULL, team_member_main, &members[i]) != 0) break;
            started++;
        }
        t.n_threads = started + 1;       /* whoever started shares the work */
        __atomic_store_n(&t.gate_open, 1, __ATOMIC_RELEASE);
        run_member_share(&t, 0);
        for (i = 1; i <= started; i++) pthread_join(threads[i], NULL);
        return;
    }
#else
    (void)n_threads;
#endif
    for (round = 0; round < n_rounds; round++) work(job, round, 0, n_items);
}

static int panel_count(const step_kernel *kernel, int N)
{
    return (N + kernel->panel_width - 1) / kernel->panel_width;
}

/* ---- the time loop ------------------------------------------------------------------------ */
/* The operands of one step: c = epilogue(c + a . B), h for the derivative epilogues. */
typedef struct {
    const float *a;          /* [M, K] rows lda apart */
    ptrdiff_t lda;
    float *c;                /* [M, N] rows ldc apart (ldc is shared by all steps) */
    const float *h;          /* [M, N] rows ldh apart, or NULL */
} step_operands;

/* A time loop: n_steps dependent products with one packed B and one epilogue. */
typedef struct {
    const step_kernel *kernel;
    int n_steps, M, N, K, epilogue;
    const float *packed;     /* B [K, N] packed with kernel->panel_width */
    const step_operands *steps;
    ptrdiff_t ldc, ldh;
} step_sequence;

static void step_sequence_work(const void *job, int s, int panel_begin, int panel_end)
{
    const step_sequence *seq = (const step_sequence *)job;
    const step_operands *op = &seq->steps[s];
    seq->kernel->step_gemm(seq->M, seq->N, seq->K, op->a, op->lda, seq->packed, op->c, seq->ldc,
                           seq->epilogue, op->h, seq->ldh, panel_begin, panel_end);
}

/* Runs every step of `seq` in order, each shared among up to n_threads threads by panels. */
static void run_step_sequence(const step_sequence *seq, int n_threads)
{
    run_team(n_threads, panel_count(seq->kernel, seq->N), seq->n_steps, step_sequence_work, seq);
}

/* ---- weight gradients ----------------------------------------------------------------------- */
/* C[M, N] += A^T B with A [K, M] and B [K, N] row-major, used in place (see rank_k_update). */
typedef struct {
    const step_kernel *kernel;
    int M, N, K;
    const float *a;
    ptrdiff_t lda;
    const float *b;
    ptrdiff_t ldb;
    float *c;
    ptrdiff_t ldc;
} rank_k_job;

static void rank_k_work(const void *job, int round, int panel_begin, int panel_end)
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
