/* A small team of threads that runs rounds of work shared by items (e.g. column panels).
 *
 *     run_team(n_threads, n_items, n_rounds, work, job):
 *         for round in 0 .. n_rounds-1:  work(job, round, begin, end) on every thread's share
 *         of the items [0, n_items), then a barrier (round r+1 may read all of round r)
 *
 * Why a team of our own: the step products are tiny next to the start-up cost of a BLAS call,
 * but a big layer's steps (DeepBench: B=64, H=1760) are worth sharing. Step s+1 reads all of
 * step s, so threads split each step by column panels and meet at a barrier between steps
 * (rounds). The team lives for one call: threads are created at the start and joined at the
 * end, so nothing stays alive, or spins, between calls, and no process-wide setting (no BLAS
 * thread count) is ever touched. The barrier spins briefly and then yields, because on a busy
 * machine the partner may not be running. Without POSIX threads (e.g. MSVC) everything runs
 * on the caller alone. Cell-independent: every cell's kernels may use it.
 */
#ifndef FASTRNN_THREAD_TEAM_H
#define FASTRNN_THREAD_TEAM_H

#include <stddef.h>

#if defined(__unix__) || defined(__APPLE__)
#define FASTRNN_HAVE_PTHREADS 1
#include <pthread.h>
#include <sched.h>
#endif

/* The work of a team: in round `round`, the items [begin, end) that fall to one thread. */
typedef void (*team_work_fn)(const void *job, ptrdiff_t round, ptrdiff_t begin, ptrdiff_t end);

#ifdef FASTRNN_HAVE_PTHREADS
enum { BARRIER_SPINS = 20000, MAX_TEAM_THREADS = 64 };

typedef struct {
    team_work_fn work;
    const void *job;
    ptrdiff_t n_items, n_rounds;
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
    const ptrdiff_t begin = t->n_items / t->n_threads * index
                            + (t->n_items % t->n_threads) * index / t->n_threads;
    const ptrdiff_t end = t->n_items / t->n_threads * (index + 1)
                          + (t->n_items % t->n_threads) * (index + 1) / t->n_threads;
    ptrdiff_t round;
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
static void run_team(int n_threads, ptrdiff_t n_items, ptrdiff_t n_rounds, team_work_fn work,
                     const void *job)
{
    ptrdiff_t round;
#ifdef FASTRNN_HAVE_PTHREADS
    if (n_threads > n_items) n_threads = (int)n_items;
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

#endif
