/*
 * pool.c - worker threads, where started tasks wait, and how idle workers
 * sleep and wake.
 *
 * Queues.  Every worker owns a work-stealing deque (deque.h): a task
 * started by a worker of the pool goes to the bottom of that worker's
 * deque with no lock and no shared counter.  A task started from any other
 * thread (or when the deque is full) goes to the pool's injection queue, a
 * mutex-protected FIFO that idle workers drain in batches.  A worker looks
 * for work in its own deque, then the injection queue, then the top of the
 * other workers' deques.
 *
 * Claiming.  A task in a queue is in state TASK_QUEUED; whoever turns that
 * into TASK_RUNNING runs it.  That is usually the worker that removed it
 * from a queue, but a waiter may claim a capture it waits for, and a
 * canceller a capture it cancels, while the queue still lists it.  So the
 * remover runs the task only if its claim succeeds, and a queued capture
 * holds a reference to its result that only the remover releases: the
 * task's memory outlives every queue entry that names it.
 *
 * Sleeping.  An idle worker puts itself on the idle list, counts itself in
 * `sleepers`, looks for work once more, and parks.  A thread that queues a
 * task reads `sleepers` after publishing it and wakes one worker if it is
 * not zero; both sides use seq_cst, so at least one of them sees the other
 * and no wake-up is lost.
 *
 * Elasticity.  A worker parked in a library wait counts as blocked (see
 * pool_block_enter); while tasks are queued and no worker is idle, the pool
 * adds a thread as long as fewer than `target` workers are unblocked and it
 * stays under `max`.  Threads above the target retire after RETIRE_NS idle.
 *
 * Worker records are never freed before the pool: thieves read other
 * workers' deques without a lock, so a retired worker's record (with its
 * empty deque) stays, and a new thread reuses it.
 *
 * pool.mu protects the fields marked (mu): the idle list, the injection
 * queue, thread counts and flags.  Nothing else is locked under it except a
 * waiter's mutex, to wake a parked worker.
 *
 * fork(): the child inherits no worker threads.  A pool records the fork
 * generation it was created in; pools from before a fork refuse service
 * with NURSERY_EFORKED instead of hanging, and the default pool is simply
 * forgotten in the child and created anew on first use.
 */
#include "internal.h"
#include "deque.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RETIRE_NS INT64_C(1000000000)
#define DEFAULT_MAX_THREADS 256
#define INJECT_BATCH 32

struct worker {
    struct deque dq;             /* owned by the thread using this record */
    nursery_pool_t *pool;        /* fixed */
    size_t id;                   /* index in pool.workers; fixed */
    pthread_t thread;            /* (mu) valid while live */
    bool live;                   /* (mu) a thread uses this record */
    bool joinable;               /* (mu) destroy must join the thread */
    bool parked;                 /* (mu) on pool.idle */
    struct list idle_link;       /* (mu) in pool.idle while parked */
    struct waiter park;          /* where the thread sleeps when idle */
    atomic_bool busy;            /* running a task (stats) */
    atomic_uint_fast64_t completed; /* tasks run, by this record's threads */
    atomic_uint_fast64_t helped;    /* of which while waiting for them */
    unsigned seed;               /* victim choice; owner only */
};

struct nursery_pool {
    pthread_mutex_t mu;
    pthread_cond_t exit_cv;       /* destroy waits here for threads == 0 */
    struct worker **workers;      /* max records; [0, nworkers) allocated */
    atomic_size_t nworkers;       /* records allocated; grows only */
    struct list idle;             /* (mu) parked workers */
    atomic_int sleepers;          /* workers on idle, read without mu */
    struct task *inject_head;     /* (mu) injection FIFO via task.next */
    struct task *inject_tail;     /* (mu) */
    atomic_size_t injected;       /* tasks in the injection queue */
    size_t threads;               /* (mu) live worker threads */
    atomic_size_t blocked;        /* workers parked in a library wait */
    size_t target;                /* threads kept when nothing blocks; fixed */
    size_t max;                   /* upper bound on threads; fixed */
    bool stopping;                /* (mu) set by destroy */
    atomic_size_t open_nurseries; /* opened and not yet joined */
    unsigned generation;          /* fork generation at creation; fixed */
    char name[12];                /* thread name prefix; fixed */
    size_t stack_size;            /* 0: system default; fixed */
};

/* Incremented in the child after every fork(). */
static atomic_uint fork_generation;

static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(nursery_pool_t *) default_pool;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* The parent's default pool, in a child: kept only so that leak checkers
 * see it as reachable (not static, so the store is not optimised away). */
HIDDEN nursery_pool_t *nursery__forsaken_default;

static void after_fork_in_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
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

bool pool_is_forked(const nursery_pool_t *p)
{
    return p->generation != atomic_load_explicit(&fork_generation, memory_order_relaxed);
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

bool pool_is_current(const nursery_pool_t *p)
{
    return current_worker(p) != NULL;
}

/* ---- claiming and running --------------------------------------------- */

bool pool_claim(nursery_pool_t *p, struct task *t)
{
    (void)p;
    int queued = TASK_QUEUED;
    return atomic_compare_exchange_strong_explicit(&t->state, &queued, TASK_RUNNING,
                                                   memory_order_acquire, memory_order_relaxed);
}

/* Runs a task removed from a queue, if nobody claimed it meanwhile, and
 * drops the queue's reference to its capture. */
static void run_removed(struct worker *self, struct task *t, bool helping)
{
    nursery_result_t *r = t->result; /* a plain task is freed by task_run */
    if (pool_claim(self->pool, t)) {
        atomic_store_explicit(&self->busy, true, memory_order_relaxed);
        task_run(t);
        atomic_store_explicit(&self->busy, false, memory_order_relaxed);
        atomic_fetch_add_explicit(&self->completed, 1, memory_order_relaxed);
        if (helping)
            atomic_fetch_add_explicit(&self->helped, 1, memory_order_relaxed);
    }
    nursery_result_release(r);
}

/* ---- the injection queue (mu held) ------------------------------------- */

static void inject_locked(nursery_pool_t *p, struct task *t)
{
    t->next = NULL;
    if (p->inject_tail)
        p->inject_tail->next = t;
    else
        p->inject_head = t;
    p->inject_tail = t;
    atomic_fetch_add_explicit(&p->injected, 1, memory_order_seq_cst);
}

static void reinject_front_locked(nursery_pool_t *p, struct task *t)
{
    t->next = p->inject_head;
    p->inject_head = t;
    if (!p->inject_tail)
        p->inject_tail = t;
    atomic_fetch_add_explicit(&p->injected, 1, memory_order_relaxed);
}

/* Removes the first task whose nursery is `key` (any task for NULL). */
static struct task *uninject_locked(nursery_pool_t *p, const void *key)
{
    struct task *prev = NULL, *t = p->inject_head;
    while (t && key && t->nursery != key) {
        prev = t;
        t = t->next;
    }
    if (!t)
        return NULL;
    if (prev)
        prev->next = t->next;
    else
        p->inject_head = t->next;
    if (p->inject_tail == t)
        p->inject_tail = prev;
    atomic_fetch_sub_explicit(&p->injected, 1, memory_order_relaxed);
    return t;
}

/* Takes one injected task and moves up to a batch more into the worker's
 * deque, so that the lock is taken once per batch, not per task. */
static struct task *take_injected(nursery_pool_t *p, struct worker *self)
{
    if (atomic_load_explicit(&p->injected, memory_order_relaxed) == 0)
        return NULL;
    pthread_mutex_lock(&p->mu);
    struct task *first = uninject_locked(p, NULL);
    for (int i = 0; first && i < INJECT_BATCH; i++) {
        /* Unlinked before the push: once in the deque, a thief may run it. */
        struct task *t = uninject_locked(p, NULL);
        if (!t)
            break;
        if (deque_push(&self->dq, t, t->nursery) != 0) {
            reinject_front_locked(p, t);
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return first;
}

/* ---- finding work ------------------------------------------------------ */

static struct worker *worker_at(nursery_pool_t *p, size_t i)
{
    return p->workers[i];
}

/* Steals from the other workers, starting at a random one.  `key` limits
 * it to tasks of one nursery (NULL: any). */
static struct task *steal(nursery_pool_t *p, struct worker *self, const void *key)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    if (n < 2)
        return NULL;
    self->seed = self->seed * 1103515245u + 12345u;
    size_t start = (self->seed >> 16) % n;
    for (size_t k = 0; k < n; k++) {
        struct worker *v = worker_at(p, (start + k) % n);
        if (v == self)
            continue;
        struct task *t = deque_steal(&v->dq, key);
        if (t)
            return t;
    }
    return NULL;
}

static struct task *find_work(nursery_pool_t *p, struct worker *self)
{
    struct task *t = deque_take(&self->dq);
    if (!t)
        t = take_injected(p, self);
    if (!t)
        t = steal(p, self, NULL);
    return t;
}

static bool work_visible(nursery_pool_t *p)
{
    if (atomic_load_explicit(&p->injected, memory_order_seq_cst) > 0)
        return true;
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    for (size_t i = 0; i < n; i++)
        if (deque_size(&worker_at(p, i)->dq) > 0)
            return true;
    return false;
}

/* ---- workers ----------------------------------------------------------- */

static void *worker_main(void *arg);

/* Starts one worker thread, on a retired record or a new one.  Returns 0,
 * ENOMEM or EAGAIN. */
static int spawn_locked(nursery_pool_t *p)
{
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_relaxed);
    struct worker *w = NULL;
    for (size_t i = 0; i < n && !w; i++)
        if (!p->workers[i]->live && !p->workers[i]->joinable)
            w = p->workers[i];
    bool fresh = !w;
    if (fresh) {
        if (n >= p->max)
            return EAGAIN;
        if (!(w = calloc(1, sizeof(*w))))
            return ENOMEM;
        deque_init(&w->dq);
        w->pool = p;
        w->id = n;
        w->seed = (unsigned)n * 2654435761u + 1;
        list_init(&w->idle_link);
        waiter_init(&w->park);
    }

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (p->stack_size)
        pthread_attr_setstacksize(&attr, p->stack_size);
    /* The thread takes mu before it reads its record's shared fields. */
    int rc = pthread_create(&w->thread, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc) {
        if (fresh) {
            waiter_destroy(&w->park);
            free(w);
        }
        return rc == EAGAIN ? EAGAIN : ENOMEM;
    }
    w->live = true;
    w->joinable = true;
    if (fresh) {
        p->workers[n] = w;
        atomic_store_explicit(&p->nworkers, n + 1, memory_order_release);
    }
    p->threads++;
    return 0;
}

/* Adds a thread when queued work cannot be served because workers block. */
static void grow_if_starved_locked(nursery_pool_t *p)
{
    size_t blocked = atomic_load(&p->blocked);
    if (p->stopping || !list_empty(&p->idle) || !work_visible(p))
        return;
    if (p->threads - blocked >= p->target || p->threads >= p->max)
        return;
    spawn_locked(p); /* on failure the blocked workers will come back */
}

static void wake_one(nursery_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    struct list *first = list_first(&p->idle);
    struct worker *w = NULL;
    if (first) {
        w = list_entry(first, struct worker, idle_link);
        list_remove(&w->idle_link);
        w->parked = false;
        atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
        waiter_signal(&w->park);
    }
    pthread_mutex_unlock(&p->mu);
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
static bool worker_idle(nursery_pool_t *p, struct worker *self)
{
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    list_push_back(&p->idle, &self->idle_link);
    self->parked = true;
    atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
    bool surplus = p->threads - atomic_load(&p->blocked) > p->target;
    pthread_mutex_unlock(&p->mu);

    /* Counted as a sleeper before this look: a task queued after it sees
     * us and wakes someone. */
    int rc = 0;
    if (!work_visible(p))
        rc = waiter_park(&self->park, surplus ? nursery_after_ns(RETIRE_NS) : NURSERY_FOREVER);

    pthread_mutex_lock(&p->mu);
    unpark_locked(p, self);
    bool stay = !p->stopping;
    if (rc == ETIMEDOUT && p->threads - atomic_load(&p->blocked) > p->target &&
        !work_visible(p))
        stay = false;
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
    pthread_mutex_lock(&p->mu); /* until spawn_locked has published us */
    pthread_mutex_unlock(&p->mu);
    set_thread_name(self);
    nursery__ctx.worker = self;

    for (;;) {
        struct task *t = find_work(p, self);
        if (t)
            run_removed(self, t, false);
        else if (!worker_idle(p, self))
            break;
    }

    pthread_mutex_lock(&p->mu);
    p->threads--;
    self->live = false;
    if (!p->stopping) {
        /* A surplus thread: nobody will join it. */
        self->joinable = false;
        pthread_detach(self->thread);
    }
    if (p->threads == 0)
        pthread_cond_broadcast(&p->exit_cv);
    pthread_mutex_unlock(&p->mu);
    nursery__set_last_error(NULL);
    return NULL;
}

/* ---- what the rest of the library calls -------------------------------- */

void pool_submit(nursery_pool_t *p, struct task *t)
{
    atomic_store_explicit(&t->state, TASK_QUEUED, memory_order_relaxed);
    struct worker *self = current_worker(p);
    if (!self || deque_push(&self->dq, t, t->nursery) != 0) {
        pthread_mutex_lock(&p->mu);
        inject_locked(p, t);
        pthread_mutex_unlock(&p->mu);
    }
    /* After publishing (seq_cst): see worker_idle. */
    if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0) {
        wake_one(p);
    } else if (unlikely(atomic_load_explicit(&p->blocked, memory_order_relaxed) > 0)) {
        pthread_mutex_lock(&p->mu);
        grow_if_starved_locked(p);
        pthread_mutex_unlock(&p->mu);
    }
}

bool pool_help(nursery_t *n)
{
    nursery_pool_t *p = n->pool;
    struct worker *self = current_worker(p);
    if (!self)
        return false;
    /* Restricted: only tasks of this nursery - first those this worker
     * queued itself (its deque's bottom), then other workers', then the
     * injection queue's. */
    struct task *t = deque_take_if(&self->dq, n);
    if (!t)
        t = steal(p, self, n);
    if (!t && atomic_load_explicit(&p->injected, memory_order_relaxed) > 0) {
        pthread_mutex_lock(&p->mu);
        t = uninject_locked(p, n);
        pthread_mutex_unlock(&p->mu);
    }
    if (!t)
        return false;
    run_removed(self, t, true);
    return true;
}

void pool_count_helped(nursery_pool_t *p)
{
    struct worker *self = current_worker(p);
    if (self) {
        atomic_fetch_add_explicit(&self->completed, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&self->helped, 1, memory_order_relaxed);
    }
}

void pool_block_enter(void)
{
    struct worker *w = nursery__ctx.worker;
    if (!w)
        return;
    nursery_pool_t *p = w->pool;
    atomic_fetch_add(&p->blocked, 1);
    pthread_mutex_lock(&p->mu);
    grow_if_starved_locked(p);
    pthread_mutex_unlock(&p->mu);
}

void pool_block_leave(void)
{
    struct worker *w = nursery__ctx.worker;
    if (w)
        atomic_fetch_sub(&w->pool->blocked, 1);
}

int pool_nursery_opened(nursery_pool_t *p)
{
    if (pool_is_forked(p))
        return NURSERY_EFORKED;
    atomic_fetch_add_explicit(&p->open_nurseries, 1, memory_order_relaxed);
    return 0;
}

void pool_nursery_closed(nursery_pool_t *p)
{
    atomic_fetch_sub_explicit(&p->open_nurseries, 1, memory_order_release);
}

/* ---- public API -------------------------------------------------------- */

static void pool_free(nursery_pool_t *p)
{
    size_t n = atomic_load(&p->nworkers);
    for (size_t i = 0; i < n; i++) {
        struct worker *w = p->workers[i];
        if (w->joinable)
            pthread_join(w->thread, NULL);
        waiter_destroy(&w->park);
        free(w);
    }
    free(p->workers);
    pthread_cond_destroy(&p->exit_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Stops every worker and waits until they have all exited (mu not held). */
static void stop_workers(nursery_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    struct list *first;
    while ((first = list_first(&p->idle))) {
        struct worker *w = list_entry(first, struct worker, idle_link);
        unpark_locked(p, w);
        waiter_signal(&w->park);
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
    size_t max = opts->max_threads ? opts->max_threads
                                   : (threads > DEFAULT_MAX_THREADS ? threads : DEFAULT_MAX_THREADS);
    if (max < threads)
        return EINVAL;
    pthread_once(&atfork_once, register_atfork);

    nursery_pool_t *p = calloc(1, sizeof(*p));
    if (!p || !(p->workers = calloc(max, sizeof(p->workers[0])))) {
        free(p);
        return ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->exit_cv, NULL);
    list_init(&p->idle);
    p->target = threads;
    p->max = max;
    p->stack_size = opts->stack_size;
    p->generation = atomic_load(&fork_generation);
    snprintf(p->name, sizeof(p->name), "%s", opts->name ? opts->name : "nursery");

    int rc = 0;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < threads && rc == 0; i++)
        rc = spawn_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (rc) {
        stop_workers(p);
        pool_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

int nursery_pool_destroy(nursery_pool_t *p)
{
    if (!p || p == atomic_load(&default_pool))
        return EINVAL;
    if (pool_is_forked(p))
        return NURSERY_EFORKED;
    if (current_worker(p))
        return EDEADLK;
    if (atomic_load_explicit(&p->open_nurseries, memory_order_acquire) > 0)
        return EBUSY;
    stop_workers(p);
    pool_free(p);
    return 0;
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
        if (rc == 0)
            atomic_store_explicit(&default_pool, p, memory_order_release);
    }
    pthread_mutex_unlock(&default_mu);
    *out = rc == 0 ? p : NULL;
    return rc;
}

int nursery_pool_stats(nursery_pool_t *p, nursery_pool_stats_t *out)
{
    if (!p || !out)
        return EINVAL;
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
        out->running += atomic_load_explicit(&w->busy, memory_order_relaxed);
        out->completed += atomic_load_explicit(&w->completed, memory_order_relaxed);
        out->helped += atomic_load_explicit(&w->helped, memory_order_relaxed);
    }
    pthread_mutex_unlock(&p->mu);
    return 0;
}
