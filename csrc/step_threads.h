/* Runs the time loop of the float32 step kernel, on one thread or on a small team.
 *
 * Why a team of our own: the step products are tiny next to the start-up cost of a BLAS call,
 * but a big layer's steps (DeepBench: B=64, H=1760) are worth sharing. Step s+1 reads all of
 * step s, so threads split each step by column panels and meet at a barrier between steps.
 * The team lives for one call (one layer-direction): threads are created at the start of
 * the time loop and joined at its end, so nothing stays alive between calls. The barrier
 * spins briefly and then yields, because on a busy machine the partner may not be running.
 * Without POSIX threads (e.g. MSVC) the loop runs on the calling thread alone.
 */
#ifndef FASTRNN_STEP_THREADS_H
#define FASTRNN_STEP_THREADS_H

#include "step_gemm.h"

#if defined(__unix__) || defined(__APPLE__)
#define FASTRNN_HAVE_PTHREADS 1
#include <pthread.h>
#include <sched.h>
#endif

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

static void run_steps_on_panels(const step_sequence *seq, int s, int panel_begin, int panel_end)
{
    const step_operands *op = &seq->steps[s];
    seq->kernel->step_gemm(seq->M, seq->N, seq->K, op->a, op->lda, seq->packed, op->c, seq->ldc,
                           seq->epilogue, op->h, seq->ldh, panel_begin, panel_end);
}

#ifdef FASTRNN_HAVE_PTHREADS
enum { BARRIER_SPINS = 20000, MAX_STEP_THREADS = 64 };

typedef struct {
    const step_sequence *seq;
    int n_threads;           /* fixed before the gate opens */
    int panels;
    int gate_open;
    int arrived;
    int generation;
} step_team;

typedef struct {
    step_team *team;
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

static void team_barrier(step_team *team)
{
    const int generation = __atomic_load_n(&team->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&team->arrived, 1, __ATOMIC_ACQ_REL) == team->n_threads) {
        __atomic_store_n(&team->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&team->generation, generation + 1, __ATOMIC_RELEASE);
        return;
    }
    wait_while_equal(&team->generation, generation);
}

static void run_member_share(step_team *team, int index)
{
    const int begin = team->panels * index / team->n_threads;
    const int end = team->panels * (index + 1) / team->n_threads;
    int s;
    for (s = 0; s < team->seq->n_steps; s++) {
        run_steps_on_panels(team->seq, s, begin, end);
        team_barrier(team);   /* step s+1 reads every panel of step s */
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

/* Runs every step of `seq` in order, sharing each step among up to n_threads threads (fewer
 * when there are fewer panels, or when threads cannot be created). */
static void run_step_sequence(const step_sequence *seq, int n_threads)
{
    const int width = seq->kernel->panel_width;
    const int panels = (seq->N + width - 1) / width;
    int s;
#ifdef FASTRNN_HAVE_PTHREADS
    if (n_threads > panels) n_threads = panels;
    if (n_threads > MAX_STEP_THREADS) n_threads = MAX_STEP_THREADS;
    if (n_threads > 1) {
        step_team team = {seq, 0, panels, 0, 0, 0};
        team_member members[MAX_STEP_THREADS];
        pthread_t threads[MAX_STEP_THREADS];
        int started = 0, i;
        for (i = 1; i < n_threads; i++) {
            members[i].team = &team;
            members[i].index = i;
            if (pthread_create(&threads[i], NULL, team_member_main, &members[i]) != 0) break;
            started++;
        }
        team.n_threads = started + 1;    /* whoever started shares the work */
        __atomic_store_n(&team.gate_open, 1, __ATOMIC_RELEASE);
        run_member_share(&team, 0);
        for (i = 1; i <= started; i++) pthread_join(threads[i], NULL);
        return;
    }
#else
    (void)n_threads;
#endif
    for (s = 0; s < seq->n_steps; s++) run_steps_on_panels(seq, s, 0, panels);
}

#endif
