/*
 * pool.c - worker threads and the queue of started tasks.
 *
 * One mutex (pool.mu) protects everything below it in struct nursery_pool,
 * the queue links of queued tasks (task.qlink, task.nlink) and every
 * nursery's list of queued tasks.  Nothing else is locked while it is held,
 * except a waiter's mutex to wake a parked worker.
 *
 * A task is claimed exactly once: whoever unlinks it from the queue under
 * pool.mu (a worker, a waiter helping, a canceller) runs it.
 *
 * Elasticity: a worker parked in a library wait is counted as blocked.
 * While queued work waits and no worker is idle, the pool adds a thread as
 * long as fewer than `target` workers are unblocked and it stays under
 * `max`.  Threads above the target retire after RETIRE_NS idle, so a burst
 * of blocking leaves no lasting threads.  CPU-bound work never adds threads.
 *
 * fork(): the child inherits no worker threads.  A pool records the fork
 * generation it was created in; pools from before a fork refuse service
 * with NURSERY_EFORKED instead of hanging, and the default pool is simply
 * forgotten in the child and created anew on first use.
 */
#include "internal.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RETIRE_NS INT64_C(1000000000)
#define DEFAULT_MAX_THREADS 256

struct worker {
    struct list link;     /* in pool.workers; at stop, in pool.retired (mu) */
    pthread_t thread;     /* set before the worker can be joined */
    nursery_pool_t *pool; /* fixed */
    size_t id;            /* fixed, for the thread name */
};

struct nursery_pool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* idle workers wait here for work or stop */
    pthread_cond_t exit_cv;   /* destroy waits here for threads == 0 */
    struct list queue;        /* queued tasks, FIFO, via task.qlink */
    size_t queued;            /* tasks in queue */
    size_t threads;           /* live workers */
    size_t idle;              /* workers waiting on work_cv */
    size_t blocked;           /* workers parked in a library wait */
    size_t running;           /* tasks running (workers and helpers) */
    size_t target;            /* workers kept when nothing blocks; fixed */
    size_t max;               /* upper bound on threads; fixed */
    uint64_t completed;       /* tasks finished */
    uint64_t helped;          /* tasks run by their waiters */
    bool stopping;            /* set by destroy */
    atomic_size_t open_nurseries; /* opened and not yet joined */
    unsigned generation;      /* fork generation at creation; fixed */
    struct list workers;      /* live workers */
    struct list retired;      /* workers that exited at stop, for destroy to join */
    size_t next_id;           /* for thread names */
    char name[12];            /* thread name prefix; fixed */
    size_t stack_size;        /* 0: system default; fixed */
};

/* Incremented in the child after every fork(). */
static atomic_uint fork_generation;

static pthread_mutex_t default_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(nursery_pool_t *) default_pool;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_in_child(void)
{
    atomic_fetch_add(&fork_generation, 1);
    /* The parent's default pool has no threads here; forget it (its memory
     * is the parent's image, not ours to free) and start over on demand. */
    atomic_store(&default_pool, NULL);
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

/* ---- the queue (pool.mu held) ------------------------------------------ */

static void unlink_locked(nursery_pool_t *p, struct task *t)
{
    list_remove(&t->qlink);
    list_remove(&t->nlink);
    p->queued--;
    p->running++;
    atomic_store_explicit(&t->state, TASK_RUNNING, memory_order_relaxed);
}

static struct task *dequeue_locked(nursery_pool_t *p)
{
    struct list *first = list_first(&p->queue);
    if (!first)
        return NULL;
    struct task *t = list_entry(first, struct task, qlink);
    unlink_locked(p, t);
    return t;
}

/* ---- workers ----------------------------------------------------------- */

static void *worker_main(void *arg);

/* Joins the workers that exited because the pool is stopping. */
static void reap_retired(nursery_pool_t *p)
{
    struct list *first;
    while ((first = list_first(&p->retired))) {
        struct worker *w = list_entry(first, struct worker, link);
        list_remove(&w->link);
        pthread_join(w->thread, NULL);
        free(w);
    }
}

/* Starts one worker.  Returns 0, ENOMEM or EAGAIN. */
static int spawn_locked(nursery_pool_t *p)
{
    struct worker *w = calloc(1, sizeof(*w));
    if (!w)
        return ENOMEM;
    w->pool = p;
    w->id = p->next_id++;

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (p->stack_size)
        pthread_attr_setstacksize(&attr, p->stack_size);
    /* The worker blocks on mu before touching its record, so publishing
     * w->thread after pthread_create returns is safe. */
    int rc = pthread_create(&w->thread, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc) {
        free(w);
        return rc == EAGAIN ? EAGAIN : ENOMEM;
    }
    list_push_back(&p->workers, &w->link);
    p->threads++;
    return 0;
}

/* Adds a thread when queued work cannot be served because workers block. */
static void grow_if_starved_locked(nursery_pool_t *p)
{
    if (p->stopping || p->queued == 0 || p->idle > 0)
        return;
    if (p->threads - p->blocked >= p->target || p->threads >= p->max)
        return;
    spawn_locked(p); /* on failure the blocked workers will come back */
}

static bool surplus_locked(const nursery_pool_t *p)
{
    return p->threads - p->blocked > p->target;
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
    set_thread_name(self);
    nursery__ctx.worker = self;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct task *t = dequeue_locked(p);
        if (t) {
            pthread_mutex_unlock(&p->mu);
            task_run(t);
            pthread_mutex_lock(&p->mu);
            p->running--;
            p->completed++;
            continue;
        }
        if (p->stopping)
            break;
        p->idle++;
        if (surplus_locked(p)) {
            struct timespec ts = nursery__timespec(nursery_after_ns(RETIRE_NS));
            int rc = pthread_cond_timedwait(&p->work_cv, &p->mu, &ts);
            p->idle--;
            if (rc == ETIMEDOUT && p->queued == 0 && surplus_locked(p))
                break;
        } else {
            pthread_cond_wait(&p->work_cv, &p->mu);
            p->idle--;
        }
    }
    p->threads--;
    list_remove(&self->link);
    bool retiring = !p->stopping;
    if (!retiring)
        list_push_back(&p->retired, &self->link); /* destroy joins us */
    else
        pthread_detach(self->thread); /* nobody will join a surplus thread */
    if (p->threads == 0)
        pthread_cond_broadcast(&p->exit_cv);
    pthread_mutex_unlock(&p->mu);
    if (retiring)
        free(self);
    nursery__set_last_error(NULL);
    return NULL;
}

/* ---- what the rest of the library calls -------------------------------- */

void pool_submit(nursery_pool_t *p, struct task *t)
{
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&t->state, TASK_QUEUED, memory_order_relaxed);
    list_push_back(&p->queue, &t->qlink);
    list_push_back(&t->nursery->queued, &t->nlink);
    p->queued++;
    if (p->idle > 0)
        pthread_cond_signal(&p->work_cv);
    else
        grow_if_starved_locked(p);
    pthread_mutex_unlock(&p->mu);
}

bool pool_claim(nursery_pool_t *p, struct task *t)
{
    pthread_mutex_lock(&p->mu);
    bool claimed = atomic_load_explicit(&t->state, memory_order_relaxed) == TASK_QUEUED;
    if (claimed)
        unlink_locked(p, t);
    pthread_mutex_unlock(&p->mu);
    return claimed;
}

struct task *pool_claim_first(nursery_pool_t *p, struct list *queued)
{
    pthread_mutex_lock(&p->mu);
    struct list *first = list_first(queued);
    struct task *t = first ? list_entry(first, struct task, nlink) : NULL;
    if (t)
        unlink_locked(p, t);
    pthread_mutex_unlock(&p->mu);
    return t;
}

void pool_claimed_done(nursery_pool_t *p, bool helped)
{
    pthread_mutex_lock(&p->mu);
    p->running--;
    p->completed++;
    p->helped += helped;
    pthread_mutex_unlock(&p->mu);
}

bool pool_is_current(const nursery_pool_t *p)
{
    return nursery__ctx.worker && nursery__ctx.worker->pool == p;
}

void pool_block_enter(void)
{
    struct worker *w = nursery__ctx.worker;
    if (!w)
        return;
    nursery_pool_t *p = w->pool;
    pthread_mutex_lock(&p->mu);
    p->blocked++;
    grow_if_starved_locked(p);
    pthread_mutex_unlock(&p->mu);
}

void pool_block_leave(void)
{
    struct worker *w = nursery__ctx.worker;
    if (!w)
        return;
    pthread_mutex_lock(&w->pool->mu);
    w->pool->blocked--;
    pthread_mutex_unlock(&w->pool->mu);
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
    reap_retired(p);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->exit_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Stops and joins every worker (mu not held). */
static void stop_workers(nursery_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->work_cv);
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
    if (!p)
        return ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work_cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&p->exit_cv, NULL);
    list_init(&p->queue);
    list_init(&p->workers);
    list_init(&p->retired);
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
    if (nursery__ctx.worker && nursery__ctx.worker->pool == p)
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
    pthread_mutex_lock(&p->mu);
    out->threads = p->threads;
    out->idle = p->idle;
    out->blocked = p->blocked;
    out->queued = p->queued;
    out->running = p->running;
    out->completed = p->completed;
    out->helped = p->helped;
    pthread_mutex_unlock(&p->mu);
    return 0;
}
