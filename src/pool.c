/* SPDX-License-Identifier: MIT */
/*
 * pool.c - worker threads, where started tasks wait, and how idle workers
 * sleep and wake.
 *
 * Queues.  Every worker owns a work-stealing deque (deque.h): a task
 * started by a worker of the pool goes to the bottom of that worker's
 * deque with no lock and no shared counter.  A task started from any other
 * thread (or when the deque is full) goes to the pool's injection queue, a
 * lock-free multi-producer FIFO that one worker at a time drains in batches
 * into its deque.  A worker looks for work in its own deque, then the
 * injection queue, then the top of up to STEAL_VICTIMS other workers'
 * deques, from a random one (a pool grown to a thousand threads must not
 * make each idle worker read a thousand deques).
 *
 * Claiming.  A task in a queue is in state TASK_QUEUED; whoever turns that
 * into TASK_RUNNING runs it.  That is usually the worker that removed it
 * from a queue, but a waiter may claim a capture it waits for, and a
 * canceller a capture it cancels, while the queue still lists it.  So the
 * remover runs the task only if its claim succeeds, and a queued capture
 * holds a reference to its result that only the remover releases: the
 * task's memory outlives every queue entry that names it.
 *
 * Sleeping.  An idle worker first spins a little (at most one spinner per
 * two CPUs), then puts itself on the idle list, counts itself in
 * `sleepers`, looks at every queue once more - unless a spinner is still
 * looking, which does that look itself before it sleeps - and parks.  A
 * thread that queues a task reads `sleepers` and `spinning` after
 * publishing it and wakes one worker if someone sleeps and nobody spins;
 * both sides use seq_cst, so at least one of them sees the other and no
 * wake-up is lost.  A spinner that finds work wakes a sleeper to take over
 * the looking, and so does a worker that steals a task (more may wait in
 * that deque, behind a worker about to block in its task, and whoever
 * moved them there may have been the spinner that would have looked).
 *
 * Elasticity.  A worker parked in a library wait past a grace period counts
 * as blocked (see nursery__pool_block_enter); one blocked in user code is
 * found by the monitor.  The monitor alone adds threads (monitor.c): while
 * tasks are queued, no worker is idle and the CPUs are not busy, as long as
 * fewer than `target` workers make progress and the pool stays under
 * `max`.  Threads above the target retire after RETIRE_NS idle.
 *
 * Worker records are never freed before the pool: thieves read other
 * workers' deques without a lock, so a retired worker's record (with its
 * empty deque) stays, and a new thread reuses it.
 *
 * pool.mu protects the fields marked (mu): the idle list, thread counts
 * and flags.  Nothing else is locked under it (waking a parked worker is a
 * futex wake, or the waiter's own mutex where there are no futexes).
 *
 * fork(): the child inherits no worker threads.  A pool records the fork
 * generation it was created in; pools from before a fork refuse service
 * with NURSERY_EFORKED instead of hanging, and the default pool is simply
 * forgotten in the child and created anew on first use.
 */
#include "pool.h"
#include "probes.h"
#include "trace.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#define RETIRE_NS INT64_C(250000000)
#define DEFAULT_MAX_THREADS 256
#define INJECT_BATCH 32
#define SPIN_ROUNDS 64 /* about 50 microseconds of looking before sleeping */
#define SPIN_PAUSES 16
#define STEAL_VICTIMS 16

/* The counters of a worker record that only its thread writes (readers
 * take a snapshot): a load and a store, not a locked read-modify-write,
 * which costs several of these on every task. */
#define OWNER_ADD(counter, delta, order)                                                  \
    atomic_store_explicit((counter),                                                      \
                          atomic_load_explicit((counter), memory_order_relaxed) + (delta), \
                          (order))

static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(nursery_pool_t *) default_pool;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static pthread_once_t dump_env_once = PTHREAD_ONCE_INIT;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

/* The parent's default pool, in a child: kept only so that leak checkers
 * see it as reachable (not static, so the store is not optimised away). */
HIDDEN nursery_pool_t *nursery__forsaken_default;

static void after_fork_in_child(void)
{
    /* The parent's default pool has no threads here; forget it (its memory
     * is the parent's image, not ours to free) and start over on demand. */
    nursery__forsaken_default = atomic_exchange(&default_pool, NULL);
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    default_mu = fresh;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

bool nursery__pool_is_forked(const nursery_pool_t *p)
{
    return nursery__forked(p->generation);
}

static size_t cpu_count(void)
{
#ifdef HAVE_SCHED_GETAFFINITY
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
        return (size_t)CPU_COUNT(&set);
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (size_t)n : 1;
}

static struct worker *current_worker(const nursery_pool_t *p)
{
    struct worker *w = nursery__ctx.worker;
    return w && w->pool == p ? w : NULL;
}

bool nursery__pool_is_current(const nursery_pool_t *p)
{
    return current_worker(p) != NULL;
}

nursery_pool_t *nursery__pool_current(void)
{
    struct worker *w = nursery__ctx.worker;
    return w ? w->pool : NULL;
}

/* ---- running ----------------------------------------------------------- */

static void kick_monitor(nursery_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    nursery__monitor_kick_locked(p);
    pthread_mutex_unlock(&p->mu);
}

/* Runs a task removed from a queue, if nobody claimed it meanwhile, and
 * drops the queue's reference to its capture. */
static void run_removed(struct task *t)
{
    nursery_result_t *r = t->result; /* a plain task is freed by nursery__task_run */
    if (nursery__task_claim(t))
        nursery__task_run(t);
    nursery_result_release(r);
}

/* ---- waking sleepers ---------------------------------------------------- */

static bool no_spinner_but_sleepers(nursery_pool_t *p)
{
    return atomic_load_explicit(&p->spinning, memory_order_seq_cst) == 0 &&
           atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0;
}

size_t nursery__pool_queued_estimate(nursery_pool_t *p)
{
    size_t queued = atomic_load_explicit(&p->injected, memory_order_relaxed);
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        queued += (size_t)deque_size(&p->workers[i]->dq);
    return queued;
}

static void wake_one_locked(nursery_pool_t *p)
{
    struct list *first = list_first(&p->idle);
    if (first) {
        struct worker *w = list_entry(first, struct worker, idle_link);
        list_remove(&w->idle_link);
        w->parked = false;
        atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
        NURSERY_PROBE1(wake, atomic_load_explicit(&w->tid, memory_order_relaxed));
        nursery__waiter_signal(&w->park);
    }
}

static void wake_one(nursery_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    wake_one_locked(p);
    pthread_mutex_unlock(&p->mu);
}

/* Work just became stealable (a batch moved into a deque, a task put
 * back): make sure someone is looking for it. */
static void spread_work(nursery_pool_t *p)
{
    if (no_spinner_but_sleepers(p))
        wake_one(p);
}

/* ---- the injection queue ---------------------------------------------- */

static void inject_link(nursery_pool_t *p, struct task *t)
{
    atomic_store_explicit(&t->next, NULL, memory_order_relaxed);
    /* seq_cst: the publication that worker_idle's look must see. */
    struct task *prev = atomic_exchange_explicit(&p->in_tail, t, memory_order_seq_cst);
    atomic_store_explicit(&prev->next, t, memory_order_release);
}

static void inject(nursery_pool_t *p, struct task *t)
{
    /* Counted before it is linked, and the count is what sleepers look at:
     * the tail is no emptiness test, since the drainer puts the stub at the
     * tail while tasks may still be linking in front of it. */
    atomic_fetch_add_explicit(&p->injected, 1, memory_order_seq_cst);
    inject_link(p, t);
}

static bool inject_nonempty(nursery_pool_t *p)
{
    return atomic_load_explicit(&p->injected, memory_order_seq_cst) > 0;
}

/* The oldest injected task, or NULL when empty or when a producer is
 * between its two steps (it is then visible to inject_nonempty, so nobody
 * sleeps on it).  Drainer only. */
static struct task *inject_pop(nursery_pool_t *p)
{
    struct task *head = p->in_head;
    struct task *next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (head == &p->in_stub) {
        if (!next)
            return NULL;
        p->in_head = head = next;
        next = atomic_load_explicit(&head->next, memory_order_acquire);
    }
    if (!next) {
        if (head != atomic_load_explicit(&p->in_tail, memory_order_acquire))
            return NULL;
        /* head is the last task: put the stub behind it to take it. */
        inject_link(p, &p->in_stub);
        next = atomic_load_explicit(&head->next, memory_order_acquire);
        if (!next)
            return NULL;
    }
    p->in_head = next;
    return head;
}

/* Whether a task just popped from the injection queue was put aside there
 * by a helper (see put_aside); it is not any more. */
static bool took_aside(struct task *t)
{
    return atomic_load_explicit(&t->aside, memory_order_relaxed) &&
           atomic_exchange_explicit(&t->aside, false, memory_order_relaxed);
}

/* Takes one injected task and moves up to a batch more into the worker's
 * deque, so that draining is paid once per batch.  NULL if another worker
 * is draining: its deque is where the tasks go, and we steal from it.
 * `injected` drops once per batch, not per task: the thread starting tasks
 * adds to it each time, and the cache line then moves half as often.  Until
 * then it over-counts, which only keeps a worker from sleeping a moment. */
static struct task *take_injected(nursery_pool_t *p, struct worker *self, bool batch)
{
    if (!inject_nonempty(p) ||
        atomic_flag_test_and_set_explicit(&p->in_draining, memory_order_acquire))
        return NULL;
    struct task *first = inject_pop(p);
    size_t popped = first != NULL;
    size_t aside = first && took_aside(first);
    int moved = 0;
    for (; first && batch && moved < INJECT_BATCH; moved++) {
        struct task *t = inject_pop(p);
        if (!t)
            break;
        popped++;
        aside += took_aside(t);
        if (deque_push(&self->dq, t, t->nursery) != 0) {
            inject(p, t);
            break;
        }
    }
    if (aside)
        atomic_fetch_sub_explicit(&p->aside, aside, memory_order_relaxed);
    if (popped)
        atomic_fetch_sub_explicit(&p->injected, popped, memory_order_relaxed);
    atomic_flag_clear_explicit(&p->in_draining, memory_order_release);
    if (moved)
        spread_work(p);
    return first;
}

/* ---- finding work ------------------------------------------------------ */

/* Steals from the other workers: up to STEAL_VICTIMS of them in a row,
 * from a random one.  A pool grown to a thousand threads for blocking
 * tasks must not make every idle worker read a thousand deques, over and
 * over while it spins; the full look is work_visible's, once before each
 * sleep.  `key` limits it to tasks of one nursery (NULL: any). */
static struct task *steal(nursery_pool_t *p, struct worker *self, const void *key)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    if (n < 2)
        return NULL;
    self->seed = self->seed * 1103515245u + 12345u;
    size_t start = (self->seed >> 16) % n;
    size_t victims = n < STEAL_VICTIMS ? n : STEAL_VICTIMS;
    for (size_t k = 0; k < victims; k++) {
        struct worker *v = p->workers[(start + k) % n];
        if (v == self)
            continue;
        struct task *t = deque_steal(&v->dq, key);
        if (t) {
            OWNER_ADD(&self->steals, 1, memory_order_relaxed);
            NURSERY_PROBE2(steal, atomic_load_explicit(&self->tid, memory_order_relaxed), t);
            return t;
        }
    }
    return NULL;
}

static struct task *find_work(nursery_pool_t *p, struct worker *self)
{
    struct task *t = deque_take(&self->dq);
    if (!t)
        t = take_injected(p, self, true);
    if (!t && (t = steal(p, self, NULL)))
        /* Where one was stolen, more may wait, behind a worker that may
         * block in its task: pass the looking on.  (The worker that moved
         * them there may have counted as the spinner that would look.) */
        spread_work(p);
    return t;
}

/* Looks for work a little longer before sleeping: a worker that parks pays
 * a wake-up (tens of microseconds) when work comes right back, and so does
 * the thread that starts it.  Bounded, so an idle pool costs no CPU. */
static struct task *find_work_spinning(nursery_pool_t *p, struct worker *self)
{
    /* Few spinners: more would take the CPUs from the threads making work. */
    size_t limit = p->target > 3 ? p->target / 2 : 1;
    struct task *t = NULL;
    if (atomic_fetch_add_explicit(&p->spinning, 1, memory_order_relaxed) < limit) {
        for (int round = 0; round < SPIN_ROUNDS && !t; round++) {
            for (int i = 0; i < SPIN_PAUSES; i++)
                nursery__cpu_relax();
            t = find_work(p, self);
        }
    }
    /* Before any sleep: a starter that saw us spinning did not wake anyone
     * and relies on our look in worker_idle. */
    atomic_fetch_sub_explicit(&p->spinning, 1, memory_order_seq_cst);
    return t;
}

static bool work_visible(nursery_pool_t *p)
{
    if (inject_nonempty(p))
        return true;
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (deque_size(&p->workers[i]->dq) > 0)
            return true;
    return false;
}

/* ---- workers ----------------------------------------------------------- */

static void *worker_main(void *arg);

/* Starts one worker thread, on a retired record or a new one.  Returns 0,
 * ENOMEM, EAGAIN, or EINVAL (a stack size the system refuses). */
int nursery__pool_spawn_locked(nursery_pool_t *p)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
    struct worker *w = NULL;
    for (size_t i = 0; i < n && !w; i++)
        if (!atomic_load(&p->workers[i]->live) && !p->workers[i]->joinable)
            w = p->workers[i];
    bool fresh = !w;
    if (fresh) {
        if (n >= p->max)
            return EAGAIN;
        if (!(w = calloc_aligned(_Alignof(struct worker), sizeof(*w))))
            return ENOMEM;
        deque_init(&w->dq);
        w->pool = p;
        w->id = n;
        w->seed = (unsigned)n * 2654435761u + 1;
        list_init(&w->idle_link);
        nursery__waiter_init(&w->park);
    }

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* A size the system refuses is the caller's mistake (EINVAL), not a
     * reason to run with another. */
    int rc = p->stack_size ? pthread_attr_setstacksize(&attr, p->stack_size) : 0;
    /* Until the thread says it is ready, the monitor leaves it alone (a
     * reused record holds the last thread's reading). */
    atomic_store_explicit(&w->cpu_ready, -1, memory_order_relaxed);
    /* The thread reads only what is set above before it takes mu. */
    if (rc == 0)
        rc = pthread_create(&w->thread, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc) {
        if (fresh) {
            nursery__waiter_destroy(&w->park);
            free(w);
        }
        return rc == EINVAL || rc == EAGAIN ? rc : ENOMEM;
    }
    atomic_store(&w->live, true);
    w->joinable = true;
    if (fresh) {
        p->workers[n] = w;
        atomic_store_explicit(&p->nworkers, n + 1, memory_order_release);
    }
    p->threads++;
    p->threads_created++;
    return 0;
}

/* The pool cannot add a thread for queued work: a worker waiting for a
 * task to start may have to run it itself (see nursery__pool_saturated). */
void nursery__pool_nudge_locked(nursery_pool_t *p)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
    for (size_t i = 0; i < n; i++)
        if (p->workers[i]->nudge)
            nursery__waiter_signal(p->workers[i]->nudge);
}

/* Queued work may be waiting for a worker that blocks: an idle worker takes
 * it; else the monitor decides whether a thread is worth adding (it asks
 * whether the CPUs are busy first), or, at the maximum, workers waiting for
 * a task to start are told to run it themselves. */
static void serve_starved_locked(nursery_pool_t *p)
{
    if (p->stopping || !work_visible(p))
        return;
    if (!list_empty(&p->idle))
        wake_one_locked(p);
    else if (p->threads >= p->max)
        nursery__pool_nudge_locked(p);
    else
        nursery__monitor_kick_locked(p);
}

static void unpark_locked(nursery_pool_t *p, struct worker *self)
{
    if (!self->parked)
        return;
    list_remove(&self->idle_link);
    self->parked = false;
    atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
}

/* Sleeps until there may be work.  Returns false when the thread must
 * exit (the pool stops, or it is a surplus thread that stayed idle). */
/* The thread leaves the pool (mu held).  Counted out in the same lock
 * hold as the decision, so that two idle surplus threads cannot both
 * decide to retire on one stale count and leave fewer than `target`. */
static void exit_locked(nursery_pool_t *p, struct worker *self)
{
    p->threads--;
    atomic_store(&self->live, false);
    if (!p->stopping) {
        /* A surplus thread: nobody will join it. */
        p->threads_retired++;
        self->joinable = false;
        pthread_detach(self->thread);
    }
    if (p->threads == 0)
        pthread_cond_broadcast(&p->exit_cv);
}

static bool worker_idle(nursery_pool_t *p, struct worker *self)
{
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        exit_locked(p, self);
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    list_push_back(&p->idle, &self->idle_link);
    self->parked = true;
    atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
    bool surplus = p->threads - atomic_load(&p->blocked) > p->target;
    pthread_mutex_unlock(&p->mu);

    /* Counted as a sleeper before this look: a task queued after it sees
     * us and wakes someone.  Work queued before it was seen by a worker
     * still spinning, if there is one: that worker looks again here itself
     * before sleeping, or wakes a sleeper when it stops to run something.
     * Then this look, which reads every deque, is left to it: a thousand
     * threads going idle at once would otherwise read a million. */
    int rc = 0;
    if (atomic_load_explicit(&p->spinning, memory_order_seq_cst) > 0 || !work_visible(p)) {
        NURSERY_PROBE1(park, atomic_load_explicit(&self->tid, memory_order_relaxed));
        nursery_time_t since = nursery_now();
        rc = nursery__waiter_park(&self->park,
                                  surplus ? nursery_after_ns(RETIRE_NS) : NURSERY_FOREVER);
        OWNER_ADD(&self->parked_ns, (uint64_t)(nursery_now() - since), memory_order_relaxed);
    } else
        sched_yield(); /* work we could not take is held by a thread between
                        * two steps (a drainer, a producer): with more threads
                        * than CPUs it may be preempted and need this CPU */

    pthread_mutex_lock(&p->mu);
    unpark_locked(p, self);
    bool stay = !p->stopping;
    if (rc == ETIMEDOUT && p->threads - atomic_load(&p->blocked) > p->target &&
        !work_visible(p))
        stay = false;
    if (!stay)
        exit_locked(p, self);
    pthread_mutex_unlock(&p->mu);
    return stay;
}

static void set_thread_name(struct worker *w)
{
#ifdef HAVE_PTHREAD_SETNAME_NP
    char name[16];
    snprintf(name, sizeof(name), "%s-%zu", w->pool->name, w->id);
    pthread_setname_np(pthread_self(), name);
#else
    (void)w;
#endif
}

static void *worker_main(void *arg)
{
    struct worker *self = arg;
    nursery_pool_t *p = self->pool;
    /* Not under mu, unlike the rest of what spawn_locked publishes about
     * us: the monitor holds mu while it adds a batch of threads, and each
     * pthread_create can take a fifth of a millisecond, so a thread that
     * waited for mu here would start its first task only once the whole
     * batch is there.  The fields it uses before it takes mu are fixed
     * before pthread_create (which orders them), or its own. */
    clockid_t clock;
    bool clocked = pthread_getcpuclockid(pthread_self(), &clock) == 0;
    if (!clocked)
        clock = CLOCK_THREAD_CPUTIME_ID; /* the monitor's own: never stalled */
    atomic_store_explicit(&self->cpu_clock, clock, memory_order_relaxed);
#ifdef __linux__
    atomic_store_explicit(&self->tid, (int)syscall(SYS_gettid), memory_order_relaxed);
#endif
    set_thread_name(self);
    nursery__ctx.worker = self;
    nursery__trace_register();
    /* What starting a thread costs (its stack's first pages, its name) is
     * no sign of its blocking: the monitor counts from here (monitor.c).
     * Without a clock of its own, never: the monitor leaves it alone. */
    struct timespec ts;
    if (clocked && clock_gettime(clock, &ts) == 0)
        atomic_store_explicit(&self->cpu_ready,
                              (int_fast64_t)ts.tv_sec * 1000000000 + ts.tv_nsec,
                              memory_order_release);

    for (;;) {
        struct task *t = find_work(p, self);
        if (!t && (t = find_work_spinning(p, self)) && no_spinner_but_sleepers(p))
            wake_one(p); /* hand the looking over: more work may follow */
        if (t)
            run_removed(t);
        else if (!worker_idle(p, self))
            break;
    }
    /* Counted out already (exit_locked): the record is not ours any more. */
    nursery__set_last_error(NULL);
    return NULL;
}

/* ---- what the rest of the library calls -------------------------------- */

void nursery__pool_submit(nursery_pool_t *p, struct task *t)
{
    /* The queues publish t (and what the starter wrote before) with release
     * stores; for TSan, nursery__task_run acquires this. */
    nursery__hb_release(t);
    atomic_store_explicit(&t->state, TASK_QUEUED, memory_order_relaxed);
    struct worker *self = current_worker(p);
    if (!self || deque_push(&self->dq, t, t->nursery) != 0)
        inject(p, t);
    /* After publishing (seq_cst): see worker_idle.  A spinning worker will
     * find the task; it wakes another when it does (see worker_main). */
    if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0 &&
        atomic_load_explicit(&p->spinning, memory_order_seq_cst) == 0) {
        wake_one(p);
    } else if (unlikely(atomic_load_explicit(&p->blocked, memory_order_relaxed) > 0)) {
        pthread_mutex_lock(&p->mu);
        serve_starved_locked(p);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Whether t's nursery is n or was opened, at any depth, by a task of n.
 * Safe only while t is claimed and unfinished: then its nursery is open,
 * the task that opened it is running (it must join it first), and so on
 * up, so every link is alive. */
static bool descends_from(const struct task *t, const nursery_t *n)
{
    for (const nursery_t *x = t->nursery; x; x = x->opener_task ? x->opener_task->nursery : NULL)
        if (x == n)
            return true;
    return false;
}

/* Puts aside a task a helper claimed but must not run: on the injection
 * queue, out of the way of the helper's own deque. */
static void put_aside(nursery_pool_t *p, struct task *t)
{
    nursery_t *n = nursery_retain(t->nursery); /* once queued, it may end */
    /* Its joiner may be parked, and looks in the injection queue only when
     * it helps: it is told.  If that joiner is a worker of the pool, the
     * monitor need not count parked joiners as stuck on its account. */
    if (n->opened_by_worker) {
        atomic_store_explicit(&t->aside, true, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->aside, 1, memory_order_relaxed);
    }
    atomic_store_explicit(&t->state, TASK_QUEUED, memory_order_release);
    inject(p, t);
    spread_work(p);
    nursery__wake_joiner(n);
    nursery_release(n);
}

/* Runs t, removed from a queue by a helper in a join of n, if it is work
 * of n; else puts it aside.  Returns whether it ran (or someone else had
 * claimed it: the entry is dropped). */
static bool help_with(nursery_pool_t *p, struct task *t, nursery_t *n)
{
    nursery_result_t *r = t->result;
    if (!nursery__task_claim(t)) {
        nursery_result_release(r); /* someone else ran it: drop the entry */
        return true;
    }
    if (!descends_from(t, n)) {
        put_aside(p, t);
        return false;
    }
    nursery__task_run(t);
    nursery_result_release(r);
    return true;
}

bool nursery__pool_help(nursery_t *n)
{
    nursery_pool_t *p = n->pool;
    struct worker *self = current_worker(p);
    if (!self)
        return false;
    /* Restricted: only work of this nursery, its children's and so on.
     * First this worker's own newest entry - usually a task it started in
     * n; one that is not ours may hide ours below it: it is put aside, and
     * we look again. */
    struct task *t = deque_take(&self->dq);
    if (t)
        return help_with(p, t, n) || true;
    /* Then the oldest work of another worker: if it is not ours, what that
     * worker holds below it is newer work of the same task, so we stop. */
    if ((t = steal(p, self, NULL)))
        return help_with(p, t, n);
    /* Then the injection queue, one task at a time (a helper that parks
     * must not hold other tasks in its deque), through the whole queue:
     * ours may wait behind tasks that helpers put aside, which go back to
     * its tail. */
    for (size_t left = atomic_load_explicit(&p->injected, memory_order_relaxed);
         left > 0 && (t = take_injected(p, self, false)); left--)
        if (help_with(p, t, n))
            return true;
    return false;
}

void nursery__pool_task_starting(void)
{
    struct worker *self = nursery__ctx.worker;
    if (!self)
        return;
    /* A task may block in user code: the monitor must be watching. */
    if (unlikely(atomic_load_explicit(&self->pool->monitor_asleep, memory_order_relaxed)))
        kick_monitor(self->pool);
    OWNER_ADD(&self->running, 1, memory_order_relaxed);
}

void nursery__pool_task_finished(void)
{
    struct worker *self = nursery__ctx.worker;
    if (!self)
        return;
    OWNER_ADD(&self->running, -1, memory_order_relaxed);
    OWNER_ADD(&self->completed, 1, memory_order_relaxed);
    /* Run inside one of the worker's own waits: it helped. */
    if (self->wait_depth > 0)
        OWNER_ADD(&self->helped, 1, memory_order_relaxed);
}

void nursery__pool_block_enter(bool joining)
{
    struct worker *w = nursery__ctx.worker;
    if (!w)
        return;
    nursery_pool_t *p = w->pool;
    atomic_fetch_add(&p->blocked, 1);
    if (joining)
        atomic_fetch_add(&p->blocked_joiners, 1);
    pthread_mutex_lock(&p->mu);
    serve_starved_locked(p);
    pthread_mutex_unlock(&p->mu);
}

void nursery__pool_wait_depth(int delta)
{
    struct worker *w = nursery__ctx.worker;
    if (w)
        w->wait_depth += delta;
}

void nursery__pool_park_mark(int delta)
{
    struct worker *w = nursery__ctx.worker;
    if (!w)
        return;
    atomic_fetch_add_explicit(&w->waiting, delta, memory_order_relaxed);
    if (delta > 0)
        w->parked_at = nursery_now();
    else
        OWNER_ADD(&w->parked_ns, (uint64_t)(nursery_now() - w->parked_at), memory_order_relaxed);
    /* Going to sleep with tasks in our deque: someone else must take them. */
    if (delta > 0 && deque_size(&w->dq) > 0)
        spread_work(w->pool);
}

void nursery__pool_block_leave(bool joining)
{
    struct worker *w = nursery__ctx.worker;
    if (!w)
        return;
    if (joining)
        atomic_fetch_sub(&w->pool->blocked_joiners, 1);
    atomic_fetch_sub(&w->pool->blocked, 1);
}

bool nursery__pool_saturated(nursery_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    bool saturated = p->threads >= p->max && list_empty(&p->idle);
    pthread_mutex_unlock(&p->mu);
    return saturated;
}

struct waiter *nursery__pool_watch_saturation(nursery_pool_t *p, struct waiter *w)
{
    struct worker *self = current_worker(p);
    if (!self)
        return NULL;
    pthread_mutex_lock(&p->mu);
    struct waiter *before = self->nudge;
    self->nudge = w;
    pthread_mutex_unlock(&p->mu);
    return before;
}

/* Nurseries are counted where they are opened: a pool's own workers open
 * one per recursive call in fib-like code, and one shared counter would
 * move between their CPUs twice per call.  The opener is also the joiner,
 * so both ends pick the same counter, and a worker's is its own. */
static void count_open(nursery_pool_t *p, size_t delta, memory_order order)
{
    struct worker *self = current_worker(p);
    if (self)
        OWNER_ADD(&self->open_nurseries, delta, order);
    else
        atomic_fetch_add_explicit(&p->open_nurseries, delta, order);
}

int nursery__pool_nursery_opened(nursery_pool_t *p)
{
    if (nursery__pool_is_forked(p))
        return NURSERY_EFORKED;
    count_open(p, 1, memory_order_relaxed);
    return 0;
}

void nursery__pool_nursery_closed(nursery_pool_t *p)
{
    count_open(p, (size_t)-1, memory_order_release);
}

static bool nurseries_open(nursery_pool_t *p)
{
    size_t open = atomic_load_explicit(&p->open_nurseries, memory_order_acquire);
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        open += atomic_load_explicit(&p->workers[i]->open_nurseries, memory_order_acquire);
    return open > 0;
}

/* ---- public API -------------------------------------------------------- */

static void pool_free(nursery_pool_t *p)
{
    size_t n = atomic_load(&p->nworkers);
    for (size_t i = 0; i < n; i++) {
        struct worker *w = p->workers[i];
        if (w->joinable)
            pthread_join(w->thread, NULL);
        nursery__waiter_destroy(&w->park);
        free(w);
    }
    free(p->workers);
    pthread_cond_destroy(&p->exit_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Registered pools only (trace.c), once their threads are gone. */
static void pool_free_registered(nursery_pool_t *p)
{
    nursery__trace_pool_remove(p);
    pool_free(p);
}

/* Stops the monitor and every worker and waits until they have all exited
 * (mu not held). */
static void stop_workers(nursery_pool_t *p)
{
    nursery__monitor_stop(p); /* first: it may add workers */
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    struct list *first;
    while ((first = list_first(&p->idle))) {
        struct worker *w = list_entry(first, struct worker, idle_link);
        unpark_locked(p, w);
        nursery__waiter_signal(&w->park);
    }
    while (p->threads > 0)
        pthread_cond_wait(&p->exit_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int nursery_pool_create(nursery_pool_t **out, const nursery_pool_options_t *opts)
{
    static const nursery_pool_options_t defaults;
    if (!out)
        return EINVAL;
    *out = NULL;
    if (!opts)
        opts = &defaults;
    size_t threads = opts->threads ? opts->threads : cpu_count();
    size_t max = opts->max_threads
                     ? opts->max_threads
                     : (threads > DEFAULT_MAX_THREADS ? threads : DEFAULT_MAX_THREADS);
    if (max < threads || (opts->stack_size && opts->stack_size < (size_t)PTHREAD_STACK_MIN))
        return EINVAL;
    pthread_once(&atfork_once, register_atfork);

    nursery_pool_t *p = calloc_aligned(_Alignof(nursery_pool_t), sizeof(*p));
    if (!p || !(p->workers = calloc(max, sizeof(p->workers[0])))) {
        free(p);
        return ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->exit_cv, NULL);
    list_init(&p->idle);
    atomic_init(&p->in_stub.next, NULL);
    atomic_init(&p->in_tail, &p->in_stub);
    p->in_head = &p->in_stub;
    atomic_flag_clear(&p->in_draining);
    p->target = threads;
    p->max = max;
    p->stack_size = opts->stack_size;
    p->generation = nursery__generation();
    snprintf(p->name, sizeof(p->name), "%s", opts->name ? opts->name : "nursery");
    p->on_task_start = opts->on_task_start;
    p->on_task_finish = opts->on_task_finish;
    p->hook_arg = opts->hook_arg;

    int rc = 0;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < threads && rc == 0; i++)
        rc = nursery__pool_spawn_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (rc == 0)
        rc = nursery__monitor_start(p);
    if (rc) {
        stop_workers(p);
        pool_free(p);
        return rc;
    }
    nursery__trace_pool_add(p);
    pthread_once(&dump_env_once, nursery__dump_signal_from_env);
    *out = p;
    return 0;
}

int nursery_pool_destroy(nursery_pool_t *p)
{
    if (!p || p == atomic_load(&default_pool))
        return EINVAL;
    if (nursery__pool_is_forked(p))
        return NURSERY_EFORKED;
    if (current_worker(p))
        return EDEADLK;
    if (nurseries_open(p))
        return EBUSY;
    stop_workers(p);
    pool_free_registered(p);
    return 0;
}

/* At exit, the default pool's threads stop if it has nothing to run: a
 * thread still running when the process ends is "possibly lost" to
 * valgrind's leak checker (its thread-local storage), which fails users'
 * `valgrind --error-exitcode` runs.  Not from a thread of the pool (it
 * cannot join itself), and not while nurseries opened on it may still run
 * tasks.  A later use (another atexit handler, say) gets a new pool. */
static void retire_default_at_exit(void)
{
    pthread_mutex_lock(&default_mu);
    nursery_pool_t *p = atomic_load_explicit(&default_pool, memory_order_relaxed);
    if (p && !nursery__pool_is_forked(p) && !current_worker(p) && !nurseries_open(p)) {
        atomic_store_explicit(&default_pool, NULL, memory_order_relaxed);
        stop_workers(p);
        pool_free_registered(p);
    }
    pthread_mutex_unlock(&default_mu);
}

static void register_atexit(void)
{
    atexit(retire_default_at_exit);
}

int nursery_pool_default(nursery_pool_t **out)
{
    if (!out)
        return EINVAL;
    nursery_pool_t *p = atomic_load_explicit(&default_pool, memory_order_acquire);
    if (p) {
        *out = p;
        return 0;
    }
    pthread_mutex_lock(&default_mu);
    int rc = 0;
    p = atomic_load_explicit(&default_pool, memory_order_relaxed);
    if (!p) {
        nursery_pool_options_t opts = {.name = "nursery"};
        rc = nursery_pool_create(&p, &opts);
        if (rc == 0) {
            pthread_once(&atexit_once, register_atexit);
            atomic_store_explicit(&default_pool, p, memory_order_release);
        }
    }
    pthread_mutex_unlock(&default_mu);
    *out = rc == 0 ? p : NULL;
    return rc;
}

int nursery_pool_stats(nursery_pool_t *p, nursery_pool_stats_t *out)
{
    if (!p || !out)
        return EINVAL;
    /* Before the lock, which a thread that is not in the child may hold. */
    if (nursery__pool_is_forked(p))
        return NURSERY_EFORKED;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&p->mu);
    out->threads = p->threads;
    struct list *pos;
    list_for_each(pos, &p->idle)
        out->idle++;
    out->blocked = atomic_load(&p->blocked);
    out->queued = atomic_load(&p->injected);
    size_t n = atomic_load(&p->nworkers);
    for (size_t i = 0; i < n; i++) {
        struct worker *w = p->workers[i];
        out->queued += (size_t)deque_size(&w->dq);
        out->running += (size_t)atomic_load_explicit(&w->running, memory_order_relaxed);
        out->completed += atomic_load_explicit(&w->completed, memory_order_relaxed);
        out->helped += atomic_load_explicit(&w->helped, memory_order_relaxed);
        out->steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
        out->parked_ns += atomic_load_explicit(&w->parked_ns, memory_order_relaxed);
    }
    out->threads_created = p->threads_created;
    out->threads_retired = p->threads_retired;
    pthread_mutex_unlock(&p->mu);
    return 0;
}

bool nursery__pool_is_default(const nursery_pool_t *p)
{
    return p == atomic_load_explicit(&default_pool, memory_order_acquire);
}

size_t nursery__cpu_count(void)
{
    return cpu_count();
}
