/* SPDX-License-Identifier: MIT */
/*
 * monitor.c - adds threads when workers block.
 *
 * A worker blocked in the library says so (nursery__pool_block_enter).  A
 * worker blocked in the user's own code - read(), nanosleep(), a foreign
 * lock - cannot, so a monitor thread watches from outside: every tick while
 * work is queued and no worker is idle, it reads each busy worker's CPU-time
 * clock, and a busy worker that used less than a tenth of a tick, two ticks
 * in a row (or, at the first tick that sees it busy, since it began to look
 * for work: a thread just added and blocked in its first task is stalled at
 * once), and that the kernel does not list as runnable (on Linux), is
 * stalled.  Stalled workers and those blocked in the library are stuck -
 * except a worker parked in a join, which waits for tasks that other workers
 * run.  When the process left the CPUs partly unused since the last tick and
 * fewer than `target` workers make progress, the monitor adds one thread per
 * stuck worker, two while no busy worker makes progress (so a pool full of
 * sleepers triples every tick), no more than the tasks queued and up to the
 * pool's maximum; at the maximum it nudges the workers waiting for a task to
 * start (pool.c).  Whatever the CPUs say, it adds a thread when every worker
 * has been blocked in a library wait (past the grace period) while work is
 * queued, at two ticks in a row with no task run in between: nothing would
 * take that work otherwise.  CPU-bound work keeps the
 * CPUs busy and never adds threads, and the monitor looks less and less
 * often (TICK_NS doubling to MAX_TICK_NS) while nothing shows a sign of
 * blocking.  The extra threads retire when idle (pool.c).
 *
 * The monitor sleeps on its condition variable while nothing runs, and is
 * kicked when a sleeping worker is woken for new work, so an idle pool
 * costs no CPU.  `asleep` and `stopping` are protected by pool.mu; the
 * clocks are read without it.
 */
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_NS INT64_C(1000000)
#define STALLED_CPU_NS (TICK_NS / 10)
#define STALL_TICKS 2
#define MAX_TICK_NS (16 * TICK_NS)

struct monitor {
    pthread_t thread;
    pthread_cond_t cv;  /* the monitor sleeps here (monotonic clock) */
    int_fast64_t process_cpu; /* monitor only: process CPU time at the last reading, or -1 */
    nursery_time_t read_at;   /* monitor only: when it was read */
    int64_t interval;         /* (mu) the time between ticks: TICK_NS, longer while nothing
                               * looks blocked */
    bool parked_seen;   /* monitor only: every worker was parked at the last tick */
    uint64_t completed_seen; /* monitor only: tasks the workers had run by then */
    bool asleep;        /* (mu) waiting for a kick, not ticking */
    bool stopping;      /* (mu) */
};

static int_fast64_t cpu_time(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        return -1;
    return (int_fast64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether the kernel says the thread is runnable (so a stopped CPU clock
 * means it waits for a CPU, not for an event).  Linux only; elsewhere the
 * clocks decide alone. */
static bool thread_runnable(int tid)
{
#ifdef __linux__
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    FILE *f = tid > 0 ? fopen(path, "re") : NULL;
    if (!f)
        return false;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    const char *paren = strrchr(buf, ')'); /* the name may hold spaces */
    return paren && paren[1] == ' ' && paren[2] == 'R';
#else
    (void)tid;
    return false;
#endif
}

/* Counts the busy workers and, when `watch`, updates each one's stall
 * count and returns how many have gone a tick or more without CPU time: a
 * worker is stalled when it is busy, not in a library wait, and without
 * CPU time for STALL_TICKS ticks in a row (a short wait for a lock is not a
 * stall), or at first sight since it began to look for work.  Monitor
 * only; no lock held, since reading clocks takes system calls. */
static size_t look_at_workers(nursery_pool_t *p, bool watch, size_t *busy)
{
    size_t candidates = 0;
    *busy = 0;
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        struct worker *w = p->workers[i];
        bool is_busy = atomic_load_explicit(&w->live, memory_order_relaxed) &&
                       atomic_load_explicit(&w->running, memory_order_relaxed) > 0;
        if (is_busy)
            ++*busy;
        /* Waiting in the library: nursery__pool_block_enter's business. */
        if (!watch || !is_busy || atomic_load_explicit(&w->waiting, memory_order_relaxed) > 0) {
            w->cpu_seen = -1;
            w->stalled_ticks = 0;
            continue;
        }
        /* First seen: a thread that has used next to no CPU since it
         * began to look for work - one added at an earlier tick and blocked
         * since in its first task - is stalled at once: a short wait for a
         * lock would have left it some CPU time to show.  Waiting for a
         * second tick would cost a tick per doubling of the pool.  Acquire:
         * a thread that has said when it was ready has its clock published
         * (pool.c's worker_main). */
        bool first = w->cpu_seen < 0;
        int_fast64_t since =
            first ? atomic_load_explicit(&w->cpu_ready, memory_order_acquire) : w->cpu_seen;
        if (since < 0) { /* still starting */
            w->stalled_ticks = 0;
            continue;
        }
        int_fast64_t now = cpu_time(atomic_load_explicit(&w->cpu_clock, memory_order_relaxed));
        if (now >= 0 && now - since < STALLED_CPU_NS)
            w->stalled_ticks = first ? STALL_TICKS : w->stalled_ticks + 1;
        else
            w->stalled_ticks = 0;
        w->cpu_seen = now;
        candidates += w->stalled_ticks > 0;
    }
    return candidates;
}

/* The stalled workers that the kernel does not list as runnable: a
 * runnable worker that simply did not get a CPU is not blocked. */
static size_t count_stalled(nursery_pool_t *p)
{
    size_t stalled = 0;
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        struct worker *w = p->workers[i];
        if (w->stalled_ticks >= STALL_TICKS &&
            !thread_runnable(atomic_load_explicit(&w->tid, memory_order_relaxed)))
            stalled++;
    }
    return stalled;
}

/* Whether the process kept the CPUs busy since the last reading: more
 * threads than CPUs stop clocks too, and a worker that waits for CPU work
 * (a join whose tasks run elsewhere) blocks no CPU.  Then a thread added
 * would only share the CPUs.  The first reading is only a base. */
static bool cpus_busy(nursery_pool_t *p)
{
    struct monitor *m = p->monitor;
    int_fast64_t cpu = cpu_time(CLOCK_PROCESS_CPUTIME_ID);
    nursery_time_t now = nursery_now();
    bool busy = m->process_cpu < 0 || cpu < 0 ||
                (cpu - m->process_cpu) * 4 >= (now - m->read_at) * (int_fast64_t)p->target * 3;
    m->process_cpu = cpu;
    m->read_at = now;
    return busy;
}

/* Workers parked in a library wait that keep queued work from running.  A
 * worker parked in a join waits for tasks that run on other workers: its
 * own deque is empty (a joiner runs or puts aside what it holds before it
 * parks), so what is queued sits with workers that run, or that count
 * here or as stalled themselves.  Tasks in the injection queue are another
 * matter: only a worker looking for work drains it, and one started there
 * from outside the pool may be what a parked joiner waits for; then
 * joiners count too - but not for tasks a helper put aside there whose
 * nursery a worker joins (pool.c): that joiner is woken to look for them,
 * and if it is busy in a join further up its stack, it comes back to them
 * once that join ends, which depends only on tasks below it. */
static size_t stuck_in_library(nursery_pool_t *p)
{
    size_t blocked = atomic_load_explicit(&p->blocked, memory_order_relaxed);
    if (atomic_load_explicit(&p->injected, memory_order_relaxed) >
        atomic_load_explicit(&p->aside, memory_order_relaxed))
        return blocked;
    size_t joiners = atomic_load_explicit(&p->blocked_joiners, memory_order_relaxed);
    return blocked > joiners ? blocked - joiners : 0;
}

/* Whether every worker is blocked in a library wait while work is
 * queued, and was at the last tick too with no task run since: nothing
 * runs that would ever take that work (a joiner looks only for tasks of
 * its own).  One look is not enough: a worker just woken counts as
 * blocked until it gets a CPU, which a busy machine may take a while to
 * give it. */
static bool all_parked(nursery_pool_t *p, bool watch, size_t threads)
{
    struct monitor *m = p->monitor;
    bool parked = watch && atomic_load_explicit(&p->blocked, memory_order_relaxed) >= threads;
    uint64_t completed = 0;
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; parked && i < n; i++)
        completed += atomic_load_explicit(&p->workers[i]->completed, memory_order_relaxed);
    bool still = parked && m->parked_seen && completed == m->completed_seen;
    m->parked_seen = parked;
    m->completed_seen = completed;
    return still;
}

/* One tick.  Returns false when nothing runs or waits (mu held on entry and
 * exit, released while looking). */
static bool tick_locked(nursery_pool_t *p)
{
    struct monitor *m = p->monitor;
    bool no_idle = list_empty(&p->idle);
    bool may_grow = no_idle && p->threads < p->max;
    size_t threads = p->threads;
    pthread_mutex_unlock(&p->mu);
    /* Stalls matter only while work waits and no idle worker can take it;
     * otherwise no clock is read at all, since with a thousand threads each
     * tick would take a CPU of its own. */
    size_t queued = nursery__pool_queued_estimate(p);
    bool watch = queued > 0 && no_idle;
    size_t busy;
    size_t candidates = look_at_workers(p, watch, &busy);
    size_t blocked = stuck_in_library(p);
    /* Whatever the reasons above say. */
    bool stuck_all = all_parked(p, watch, threads);
    /* The process clock costs a read of every thread: only while some
     * worker shows a sign of blocking. */
    bool signs = watch && (candidates > 0 || blocked > 0 || m->parked_seen);
    size_t stuck = signs && !cpus_busy(p) ? blocked + count_stalled(p) : 0;
    if (!signs)
        m->process_cpu = -1;
    pthread_mutex_lock(&p->mu);

    /* One new thread per stuck worker while fewer than `target` workers
     * make progress, and two when no busy worker makes any: then the tasks
     * queued behind them are likely to block as well, and each tick the
     * pool waits to see that costs a millisecond or more (the pool triples
     * per tick while everything it runs sleeps).  Never more than the
     * tasks queued; one when every worker is parked. */
    size_t add = 0;
    if (stuck && p->threads < p->target + stuck) {
        add = stuck >= busy ? 2 * stuck : stuck;
        add = add < queued ? add : queued;
    }
    if (stuck_all && add == 0)
        add = 1;
    if (add && list_empty(&p->idle)) {
        if (may_grow) {
            while (add-- && p->threads < p->max && nursery__pool_spawn_locked(p) == 0)
                ;
        } else {
            nursery__pool_nudge_locked(p);
        }
    }
    /* Nothing looks blocked: look again later and later, so that CPU-bound
     * work is left alone; a sign of blocking or a kick starts over. */
    m->interval = signs ? TICK_NS : m->interval * 2 < MAX_TICK_NS ? m->interval * 2 : MAX_TICK_NS;
    return busy > 0 || queued > 0 || atomic_load_explicit(&p->blocked, memory_order_relaxed) > 0;
}

static void *monitor_main(void *arg)
{
    nursery_pool_t *p = arg;
    struct monitor *m = p->monitor;
    pthread_mutex_lock(&p->mu);
    while (!m->stopping) {
        if (m->asleep) {
            pthread_cond_wait(&m->cv, &p->mu);
            m->process_cpu = -1; /* a fresh start: no tick to compare with */
            m->parked_seen = false;
            continue;
        }
        struct timespec ts = nursery__timespec(nursery_after_ns(m->interval));
        pthread_cond_timedwait(&m->cv, &p->mu, &ts);
        if (!m->stopping && !tick_locked(p)) {
            m->asleep = true;
            atomic_store_explicit(&p->monitor_asleep, true, memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void nursery__monitor_kick_locked(nursery_pool_t *p)
{
    struct monitor *m = p->monitor;
    if (!m || (!m->asleep && m->interval == TICK_NS))
        return;
    m->asleep = false;
    m->interval = TICK_NS;
    atomic_store_explicit(&p->monitor_asleep, false, memory_order_relaxed);
    pthread_cond_signal(&m->cv);
}

int nursery__monitor_start(nursery_pool_t *p)
{
    struct monitor *m = calloc(1, sizeof(*m));
    if (!m)
        return ENOMEM;
    nursery__cond_init_monotonic(&m->cv);
    m->asleep = true;
    m->process_cpu = -1;
    m->interval = TICK_NS;
    atomic_store(&p->monitor_asleep, true);
    p->monitor = m;
    int rc = pthread_create(&m->thread, NULL, monitor_main, p);
    if (rc) {
        pthread_cond_destroy(&m->cv);
        free(m);
        p->monitor = NULL;
        return rc == EAGAIN ? EAGAIN : ENOMEM;
    }
#ifdef HAVE_PTHREAD_SETNAME_NP
    /* Named here, not by itself, so that it has its name once the pool is
     * created: "<prefix>-mon" in top -H and gdb. */
    char name[16];
    snprintf(name, sizeof(name), "%s-mon", p->name);
    pthread_setname_np(m->thread, name);
#endif
    return 0;
}

void nursery__monitor_stop(nursery_pool_t *p)
{
    struct monitor *m = p->monitor;
    if (!m)
        return;
    pthread_mutex_lock(&p->mu);
    m->stopping = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(m->thread, NULL);
    pthread_cond_destroy(&m->cv);
    free(m);
    p->monitor = NULL;
}
