/* SPDX-License-Identifier: MIT */
/*
 * nursery.c - nurseries: open, start tasks, join; how a task or a body
 * fails; and Trio's start/started.
 *
 * A nursery counts its pending tasks in one atomic word whose top bit is
 * NURSERY_CLOSED.  Starting a task adds one without a lock; finishing one
 * subtracts one without a lock too, except the step from 1 to 0, which is
 * done under nursery.mu together with waking the joiner.  The joiner closes
 * the nursery (0 -> CLOSED) under the same lock, so it can never free the
 * nursery while the last task is still inside nursery__task_end().  The
 * body adds its starts in batches (credits, see nursery__task_begin).
 *
 * nursery.mu also protects the error group under construction and the
 * joiner's wait queue.  The group lives in the nursery and is handed to the
 * joiner as it is (holding a reference to the nursery), so join allocates
 * nothing and loses no error.
 *
 * The nursery's memory (its cancel node included) lives as long as a
 * reference does: the opener's until join, nursery_retain()'s, the error
 * group's, and a nursery_cancel() in progress, so a cancel that races with
 * join never touches freed memory.
 *
 * The opener's thread context points at the nursery's cancel node from open
 * to join, which is how the body sees the nursery's cancellation; that is
 * why nurseries are joined by their opener, innermost first.
 */
#include "internal.h"
#include "probes.h"
#include "trace.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- task accounting --------------------------------------------------- */

/* The body counts its starts in advance, START_CREDITS at a time: adding
 * one to `pending` per task, a line the finishing workers write too, was 40%
 * of the time of a body that starts a million tiny tasks.  Only the body in
 * its own context (not a task that a joining opener runs while it helps)
 * uses credits, and join gives back what is left before it waits. */
#define START_CREDITS 64

/* credits is the body's own (a load and a store, no locked instruction);
 * it is atomic for nursery_counts(), which reads it from anywhere. */
static uint64_t credits_left(nursery_t *n)
{
    return atomic_load_explicit(&n->credits, memory_order_relaxed);
}

static void set_credits(nursery_t *n, uint64_t credits)
{
    atomic_store_explicit(&n->credits, credits, memory_order_relaxed);
}

int nursery__task_begin(nursery_t *n)
{
    bool body = nursery__ctx.node == &n->node;
    uint64_t credits = body ? credits_left(n) : 0;
    if (credits > 0) {
        set_credits(n, credits - 1);
        return 0;
    }
    uint64_t count = body ? START_CREDITS : 1;
    uint64_t old = atomic_fetch_add_explicit(&n->pending, count, memory_order_relaxed);
    if (unlikely(old & NURSERY_CLOSED)) {
        atomic_fetch_sub_explicit(&n->pending, count, memory_order_relaxed);
        return NURSERY_ECLOSED;
    }
    atomic_fetch_add_explicit(&n->counted, count, memory_order_relaxed);
    if (body)
        set_credits(n, count - 1);
    return 0;
}

static void return_credits(nursery_t *n)
{
    uint64_t credits = credits_left(n);
    if (credits) {
        atomic_fetch_sub_explicit(&n->pending, credits, memory_order_relaxed);
        atomic_fetch_sub_explicit(&n->counted, credits, memory_order_relaxed);
        set_credits(n, 0);
    }
}

/* Gives back an ended task's place under the limit: to the next task
 * waiting in the nursery, or to a nursery_start_limited() caller. */
static void release_place(nursery_t *n)
{
    pthread_mutex_lock(&n->mu);
    struct task *next = n->backlog;
    if (next && (n->limit == 0 || n->admitted <= n->limit)) {
        n->backlog = atomic_load_explicit(&next->next, memory_order_relaxed);
        if (!n->backlog)
            n->backlog_tail = NULL;
    } else {
        next = NULL;
        n->admitted--;
        nursery__waitq_wake_all(&n->room);
    }
    pthread_mutex_unlock(&n->mu);
    if (next)
        nursery__pool_submit(n->pool, next);
}

void nursery__task_end(nursery_t *n, unsigned task_flags)
{
    if (unlikely(task_flags & TASK_COUNTED_FLAG))
        release_place(n);
    if (unlikely(task_flags & NURSERY_TASK_DAEMON))
        atomic_fetch_sub_explicit(&n->daemons, 1, memory_order_relaxed);
    /* For TSan, the release orders below (see annotate.h): nursery_join
     * acquires it. */
    nursery__hb_release(n);
    uint64_t v = atomic_load_explicit(&n->pending, memory_order_relaxed);
    if (unlikely(atomic_load_explicit(&n->daemons, memory_order_relaxed) > 0) &&
        !(task_flags & NURSERY_TASK_DAEMON) && v > 1) {
        /* Maybe the last task that is not a daemon: the joiner looks (see
         * join_ready), woken under the lock as for the last task. */
        pthread_mutex_lock(&n->mu);
        atomic_fetch_sub_explicit(&n->pending, 1, memory_order_release);
        nursery__waitq_wake_all(&n->joiners);
        pthread_mutex_unlock(&n->mu);
        return;
    }
    for (;;) {
        if (v == 1) {
            /* The last one: under the lock, so the joiner cannot close and
             * free the nursery until we are done with it. */
            pthread_mutex_lock(&n->mu);
            if (atomic_fetch_sub_explicit(&n->pending, 1, memory_order_release) == 1)
                nursery__waitq_wake_all(&n->joiners);
            pthread_mutex_unlock(&n->mu);
            return;
        }
        /* release: the task's writes happen-before the joiner's close. */
        if (atomic_compare_exchange_weak_explicit(&n->pending, &v, v - 1, memory_order_release,
                                                  memory_order_relaxed))
            return;
    }
}

void nursery__task_failed(nursery_t *n, nursery_error_t *err)
{
    pthread_mutex_lock(&n->mu);
    nursery__errors_add(&n->errors, err);
    pthread_mutex_unlock(&n->mu);
    nursery__cancel_node_cancel(&n->node);
}

void nursery__task_cancelled(nursery_t *n)
{
    atomic_fetch_add_explicit(&n->cancelled_tasks, 1, memory_order_relaxed);
}

void nursery__task_counted_failure(nursery_t *n)
{
    atomic_fetch_add_explicit(&n->failed_tasks, 1, memory_order_relaxed);
}

/* Whether t may go to the pool now under the nursery's limit; if not, it
 * waits in the nursery (it has a place already when TASK_COUNTED_FLAG is
 * set: nursery_start_limited and nursery_try_start took it). */
static bool admit(nursery_t *n, struct task *t)
{
    if (t->flags & TASK_COUNTED_FLAG)
        return true;
    t->flags |= TASK_COUNTED_FLAG;
    pthread_mutex_lock(&n->mu);
    bool now = !n->backlog && (n->limit == 0 || n->admitted < n->limit);
    if (now) {
        n->admitted++;
    } else {
        atomic_store_explicit(&t->state, TASK_WAITING, memory_order_relaxed);
        atomic_store_explicit(&t->next, NULL, memory_order_relaxed);
        if (n->backlog_tail)
            atomic_store_explicit(&n->backlog_tail->next, t, memory_order_relaxed);
        else
            n->backlog = t;
        n->backlog_tail = t;
    }
    pthread_mutex_unlock(&n->mu);
    return now;
}

bool nursery__backlog_take(nursery_t *n, struct task *t)
{
    pthread_mutex_lock(&n->mu);
    struct task *prev = NULL, *x = n->backlog;
    while (x && x != t) {
        prev = x;
        x = atomic_load_explicit(&x->next, memory_order_relaxed);
    }
    if (x) {
        struct task *next = atomic_load_explicit(&t->next, memory_order_relaxed);
        if (prev)
            atomic_store_explicit(&prev->next, next, memory_order_relaxed);
        else
            n->backlog = next;
        if (n->backlog_tail == t)
            n->backlog_tail = prev;
        t->flags &= ~TASK_COUNTED_FLAG; /* it never took a place */
        atomic_store_explicit(&t->state, TASK_RUNNING, memory_order_relaxed);
    }
    pthread_mutex_unlock(&n->mu);
    return x != NULL;
}

int nursery__submit(nursery_t *n, struct task *t, struct cancel_node *parent)
{
    /* Nothing of the pool is read before the nursery is known open: a
     * joined nursery's pool may be gone. */
    int rc = nursery__forked(n->generation) ? NURSERY_EFORKED : nursery__task_begin(n);
    if (unlikely(rc)) {
        if (t->flags & TASK_COUNTED_FLAG)
            release_place(n);
        nursery__task_discard(t);
        return rc;
    }
    t->nursery = n;
    if (t->result)
        t->result->pool = n->pool; /* where a waiter may help with it */
    atomic_store_explicit(&t->node.parent, parent, memory_order_relaxed);
    if (unlikely(t->flags & NURSERY_TASK_DAEMON))
        atomic_fetch_add_explicit(&n->daemons, 1, memory_order_relaxed);
    if (unlikely(atomic_load_explicit(&n->limited, memory_order_acquire)) && !admit(n, t))
        return 0;
    nursery__pool_submit(n->pool, t);
    return 0;
}

/* ---- open and join ----------------------------------------------------- */

static bool is_closed(const nursery_t *n)
{
    return atomic_load_explicit(&n->pending, memory_order_acquire) & NURSERY_CLOSED;
}

/* The error group's hold on the nursery, given back when it is freed. */
static void release_group(nursery_errors_t *g)
{
    nursery_release((nursery_t *)((char *)g - offsetof(nursery_t, errors)));
}

int nursery_open(nursery_t **out, nursery_pool_t *pool)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    int rc = pool ? 0 : nursery_pool_default(&pool);
    if (rc)
        return rc;
    /* Not calloc: glibc's calloc never takes a block from the thread's
     * cache of small blocks (tcache), malloc does, and a nursery (1032
     * bytes on 64-bit glibc: its fields are ordered so that it stays one)
     * is freed mostly by the thread that opens the next one.  Every field
     * is cleared but the error group's items, which are read only up to
     * its count. */
    nursery_t *n = malloc(sizeof(*n));
    if (!n)
        return ENOMEM;
    memset(n, 0, offsetof(nursery_t, errors));
    rc = nursery__pool_nursery_opened(pool);
    if (rc) {
        free(n);
        return rc;
    }
    n->pool = pool;
    n->generation = nursery__generation(); /* the pool's: it is not forked */
    n->outer = nursery__ctx.node;
    n->opener_task = nursery__ctx.task;
    n->opener = pthread_self();
    n->opened_by_worker = nursery__pool_is_current(pool);
    nursery__cancel_node_open(&n->node, n->outer, NODE_NURSERY, false);
    atomic_init(&n->pending, 0);
    atomic_init(&n->refs, 1);
    atomic_init(&n->cancelled_tasks, 0);
    atomic_init(&n->expired, false);
    atomic_init(&n->daemons, 0);
    atomic_init(&n->limited, false);
    nursery__waitq_init(&n->room);
    pthread_mutex_init(&n->mu, NULL);
    nursery__waitq_init(&n->joiners);
    nursery__errors_init(&n->errors, release_group);
    n->opened_at = nursery__coarse_now();
    nursery__ctx.node = &n->node;
    nursery__trace_nursery_push(n);
    NURSERY_PROBE2(nursery__open, n, n->opener_task);
    *out = n;
    return 0;
}

struct join_wait {
    struct wait_one one; /* on n->joiners; first, for wait_one_attach */
    nursery_t *n;
};

/* The body has ended (its opener is in join): when every task left is a
 * daemon, they are cancelled.  (A daemon is counted after its start is,
 * and uncounted before its end is, so the two counts meet only when every
 * pending task is a daemon.) */
static void cancel_daemons(nursery_t *n, uint64_t pending)
{
    size_t daemons = atomic_load_explicit(&n->daemons, memory_order_relaxed);
    if (daemons > 0 && pending == daemons)
        nursery__cancel_node_cancel(&n->node);
}

static bool join_ready(void *ctx)
{
    nursery_t *n = ((struct join_wait *)ctx)->n;
    /* Asked between every task a joiner helps with: the lock only when
     * there may be something to close. */
    uint64_t pending = atomic_load_explicit(&n->pending, memory_order_relaxed);
    if (pending != 0) {
        cancel_daemons(n, pending);
        return false;
    }
    uint64_t idle = 0;
    pthread_mutex_lock(&n->mu);
    bool closed = atomic_compare_exchange_strong_explicit(&n->pending, &idle, NURSERY_CLOSED,
                                                          memory_order_acquire,
                                                          memory_order_relaxed);
    pthread_mutex_unlock(&n->mu);
    return closed;
}

/* Restricted helping: only tasks of this nursery, never unrelated work. */
static bool join_help(void *ctx)
{
    return nursery__pool_help(((struct join_wait *)ctx)->n);
}

static void join_describe(void *ctx, struct blocked_on *b)
{
    *b = (struct blocked_on){.kind = BLOCKED_JOIN, .object = ((struct join_wait *)ctx)->n};
}

void nursery__wake_joiner(nursery_t *n)
{
    pthread_mutex_lock(&n->mu);
    nursery__waitq_wake_all(&n->joiners);
    pthread_mutex_unlock(&n->mu);
}

static const struct block_ops join_ops = {
    .ready = join_ready,
    .attach = nursery__wait_one_attach,
    .detach = nursery__wait_one_detach,
    .help = join_help,
    .describe = join_describe,
    .joins = true,
};

/* Closed under n->mu after the last task's errors were added under it:
 * nothing changes them any more, so they are read without the lock.  The
 * group goes to the caller as it is, with a reference to the nursery. */
static void hand_over_errors(nursery_t *n, nursery_errors_t **out)
{
    nursery_errors_t *g = &n->errors;
    g->cancelled = atomic_load_explicit(&n->cancelled_tasks, memory_order_relaxed);
    if (out && (g->count || g->dropped || g->cancelled)) {
        *out = g;
        nursery_retain(n);
    } else {
        nursery__errors_clear(g);
    }
}

int nursery_join(nursery_t *n, nursery_time_t deadline, nursery_errors_t **errors)
{
    if (errors)
        *errors = NULL;
    if (!n)
        return EINVAL;
    if (nursery__forked(n->generation))
        return NURSERY_EFORKED;
    if (!pthread_equal(n->opener, pthread_self()) || nursery__ctx.node != &n->node)
        return EINVAL;

    return_credits(n);
    /* Not cut short by cancellation: the tasks are cancelled through the
     * tree and join waits for them. */
    struct join_wait jw = {.one = {.mu = &n->mu, .q = &n->joiners}, .n = n};
    int rc = nursery__block(&join_ops, &jw, deadline, BLOCK_UNCANCELLABLE);
    if (rc)
        return rc;
    nursery__hb_acquire(n); /* every task's end (nursery__task_end) */

    nursery__ctx.node = n->outer;
    nursery__trace_nursery_pop();
    nursery__cancel_node_detach(&n->node); /* before the outer node can go */
    if (atomic_load_explicit(&n->node.deadline, memory_order_relaxed) != NURSERY_FOREVER)
        nursery__timer_disarm(&n->expiry); /* waits while it fires */
    bool outer_cancelled = n->outer && nursery__cancel_node_cancelled(n->outer);
    bool failed = n->errors.count > 0 || n->errors.dropped > 0;
    /* An enclosing scope's cancellation comes out of here as ECANCELED, as
     * a cancellation point's would: the scope that catches it counts it. */
    rc = failed            ? NURSERY_EFAILED
         : outer_cancelled ? nursery__cancel_delivered()
         : atomic_load_explicit(&n->expired, memory_order_relaxed) ? NURSERY_EEXPIRED
                                                                   : 0;
    NURSERY_PROBE3(nursery__join, n, n->name, rc);
    hand_over_errors(n, errors);
    nursery__pool_nursery_closed(n->pool);
    nursery_release(n);
    return rc;
}

/* In the deadline thread: the nursery's deadline passed.  Join waits for
 * this to return before it frees the nursery. */
static void expire(struct timer_entry *e)
{
    nursery_t *n = (nursery_t *)((char *)e - offsetof(nursery_t, expiry));
    if (!atomic_load_explicit(&n->node.cancelled, memory_order_acquire))
        atomic_store_explicit(&n->expired, true, memory_order_relaxed);
    nursery__cancel_node_cancel(&n->node);
}

int nursery_open_until(nursery_t **out, nursery_pool_t *pool, nursery_time_t deadline)
{
    int rc = nursery_open(out, pool);
    if (rc || deadline == NURSERY_FOREVER)
        return rc;
    nursery_t *n = *out;
    n->expiry.fire = expire;
    atomic_store_explicit(&n->node.deadline, deadline, memory_order_release);
    if (nursery_now() >= deadline) {
        expire(&n->expiry);
        return 0;
    }
    rc = nursery__timer_arm(&n->expiry, deadline);
    if (rc) {
        /* Nothing was started in it: the join is immediate. */
        nursery_join(n, NURSERY_FOREVER, NULL);
        *out = NULL;
    }
    return rc;
}

/* The body, then join (nursery_run and nursery_run_until). */
static int run_body(nursery_t *n, int (*body)(nursery_t *n, void *arg), void *arg,
                    nursery_errors_t **errors)
{
    int rc = body(n, arg);
    /* Cancelled and saying so is not a failure; an error the body recorded
     * with nursery_fail() and returns is already counted.  (A body that
     * forked and returns in the child has a nursery of the parent's, which
     * join refuses.) */
    if (nursery__forked(n->generation)) {
        /* nothing to record */
    } else if (rc == ECANCELED && nursery__cancel_node_cancelled(&n->node)) {
        nursery__set_last_error(NULL);
    } else if (rc && !(nursery__ctx.last_error && nursery__ctx.last_error == n->body_error)) {
        nursery_error_t *err = nursery__outcome_error(rc);
        nursery__task_failed(n, err);
        nursery_error_release(err);
    }
    return nursery_join(n, NURSERY_FOREVER, errors);
}

int nursery_run(nursery_pool_t *pool, int (*body)(nursery_t *n, void *arg), void *arg,
                nursery_errors_t **errors)
{
    return nursery_run_until(pool, NURSERY_FOREVER, body, arg, errors);
}

int nursery_run_until(nursery_pool_t *pool, nursery_time_t deadline,
                      int (*body)(nursery_t *n, void *arg), void *arg, nursery_errors_t **errors)
{
    if (errors)
        *errors = NULL;
    if (!body)
        return EINVAL;
    nursery_t *n;
    int rc = nursery_open_until(&n, pool, deadline);
    return rc ? rc : run_body(n, body, arg, errors);
}

int nursery_cancel(nursery_t *n)
{
    if (!n)
        return EINVAL;
    if (nursery__forked(n->generation))
        return NURSERY_EFORKED;
    /* The cancel may be what lets the tasks end and join free the
     * nursery: hold it until the walk is over. */
    nursery_retain(n);
    int rc = is_closed(n) ? NURSERY_ECLOSED : 0;
    if (rc == 0)
        nursery__cancel_node_cancel(&n->node);
    nursery_release(n);
    return rc;
}

nursery_t *nursery_retain(nursery_t *n)
{
    if (n)
        atomic_fetch_add_explicit(&n->refs, 1, memory_order_relaxed);
    return n;
}

void nursery_release(nursery_t *n)
{
    /* A parent's nursery, in a child of fork(): its locks may be held by
     * threads that are not here; leave it be. */
    if (!n || nursery__forked(n->generation))
        return;
    nursery__hb_release(n); /* the acq_rel below, for TSan (see annotate.h) */
    if (atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) != 1)
        return;
    nursery__hb_acquire(n);
    nursery__errors_clear(&n->errors);
    nursery__cancel_node_fini(&n->node);
    pthread_mutex_destroy(&n->mu);
    free(n);
}

/* ---- names and counts -------------------------------------------------- */

int nursery_set_name(nursery_t *n, const char *name)
{
    if (!n)
        return EINVAL;
    if (nursery__forked(n->generation))
        return NURSERY_EFORKED;
    pthread_mutex_lock(&n->mu);
    int rc = is_closed(n) ? NURSERY_ECLOSED : 0;
    if (rc == 0) {
        size_t len = name ? strnlen(name, sizeof(n->name) - 1) : 0;
        memcpy(n->name, name ? name : "", len);
        n->name[len] = '\0';
    }
    pthread_mutex_unlock(&n->mu);
    return rc;
}

void nursery__name_copy(nursery_t *n, char *buf)
{
    pthread_mutex_lock(&n->mu);
    memcpy(buf, n->name, sizeof(n->name));
    pthread_mutex_unlock(&n->mu);
}

int nursery_counts(nursery_t *n, nursery_counts_t *out)
{
    if (!n || !out)
        return EINVAL;
    if (nursery__forked(n->generation))
        return NURSERY_EFORKED;
    /* counted first: starts after it only make pending larger, which can
     * only make finished smaller (it is clamped at 0), never too large. */
    uint64_t counted = atomic_load_explicit(&n->counted, memory_order_acquire);
    uint64_t credits = credits_left(n);
    uint64_t pending = atomic_load_explicit(&n->pending, memory_order_acquire) & ~NURSERY_CLOSED;
    uint64_t started = counted > credits ? counted - credits : 0;
    uint64_t finished = counted > pending ? counted - pending : 0;
    if (finished > started)
        finished = started;
    /* Counted before the task's end is: a task counted here may not be in
     * finished yet, so they are kept "of those" (exact once joined). */
    uint64_t failed = atomic_load_explicit(&n->failed_tasks, memory_order_relaxed);
    uint64_t cancelled = atomic_load_explicit(&n->cancelled_tasks, memory_order_relaxed);
    if (failed > finished)
        failed = finished;
    if (cancelled > finished - failed)
        cancelled = finished - failed;
    *out = (nursery_counts_t){
        .started = started, .finished = finished, .failed = failed, .cancelled = cancelled};
    return 0;
}

/* ---- failing: tasks and bodies ----------------------------------------- */

/* The nursery whose body the calling thread runs, or NULL.  The innermost
 * node is the running task's own, a nursery's opened since, or a cancel
 * scope's. */
static nursery_t *current_body(void)
{
    /* Cancel scopes opened in the body are the thread's own: look past them. */
    struct cancel_node *node = nursery__ctx.node;
    while (node && node->kind == NODE_SCOPE)
        node = atomic_load_explicit(&node->parent, memory_order_relaxed);
    if (!node || node->kind != NODE_NURSERY)
        return NULL;
    return (nursery_t *)((char *)node - offsetof(nursery_t, node));
}

/* Records err (owned) as the calling thread's last error; in a body, also
 * as a failure of its nursery, at once, as a task's failure would be. */
static int fail_here(nursery_error_t *err)
{
    nursery_t *body = current_body();
    if (body) {
        body->body_error = err;
        nursery__task_failed(body, err);
    }
    nursery__set_last_error(err);
    return nursery_error_code(err);
}

int nursery_fail(int code, const char *fmt, ...)
{
    if (code == 0)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    nursery_error_t *err = nursery__error_new(code, fmt, ap);
    va_end(ap);
    return fail_here(err ? err : nursery__error_oom());
}

int nursery_fail_with(nursery_error_t *err)
{
    return err ? fail_here(err) : EINVAL;
}

/* ---- starting tasks ---------------------------------------------------- */

int nursery_start_soon(nursery_t *n, nursery_fn fn, void *arg, const nursery_task_options_t *opts)
{
    struct task *t = NULL;
    int rc = !n || !fn ? EINVAL : nursery__task_new(&t, fn, arg, opts);
    if (unlikely(rc)) {
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        return rc;
    }
    rc = nursery__submit(n, t, &n->node);
    if (unlikely(rc)) {
        nursery__cancel_node_fini(&t->node);
        nursery__task_free(t);
    }
    return rc;
}

/* ---- a limit on the tasks admitted at once ------------------------------ */

/* Admits every waiting task the limit has room for (n->mu held); returns
 * them, linked, for the caller to submit once the lock is let go. */
static struct task *admit_waiting_locked(nursery_t *n)
{
    struct task *first = NULL, **link = &first;
    while (n->backlog && (n->limit == 0 || n->admitted < n->limit)) {
        struct task *t = n->backlog;
        n->backlog = atomic_load_explicit(&t->next, memory_order_relaxed);
        n->admitted++;
        *link = t;
        link = (struct task **)&t->next; /* reused as this list's link */
    }
    if (!n->backlog)
        n->backlog_tail = NULL;
    *link = NULL;
    return first;
}

int nursery_set_limit(nursery_t *n, size_t limit)
{
    if (!n)
        return EINVAL;
    if (nursery__forked(n->generation))
        return NURSERY_EFORKED;
    if (is_closed(n))
        return NURSERY_ECLOSED;
    pthread_mutex_lock(&n->mu);
    n->limit = limit;
    atomic_store_explicit(&n->limited, true, memory_order_release);
    struct task *admitted = admit_waiting_locked(n);
    nursery__waitq_wake_all(&n->room);
    pthread_mutex_unlock(&n->mu);
    while (admitted) {
        struct task *next = (struct task *)atomic_load_explicit(&admitted->next,
                                                                memory_order_relaxed);
        nursery__pool_submit(n->pool, admitted);
        admitted = next;
    }
    return 0;
}

/* Takes a place under the limit if there is room (n->mu held). */
static bool take_place_locked(nursery_t *n)
{
    if (n->backlog || (n->limit != 0 && n->admitted >= n->limit))
        return false;
    n->admitted++;
    return true;
}

/* A nursery_start_limited() caller's wait: for room, or for the nursery's
 * cancellation (the caller's own is nursery__block's). */
struct room_wait {
    struct wait_one one;      /* on n->room; first, for wait_one_attach */
    struct wait_link on_node; /* on n->node.waiters */
    nursery_t *n;
    bool placed;
};

static bool room_ready(void *ctx)
{
    struct room_wait *rw = ctx;
    nursery_t *n = rw->n;
    if (nursery__cancel_node_cancelled(&n->node))
        return true;
    pthread_mutex_lock(&n->mu);
    rw->placed = take_place_locked(n);
    pthread_mutex_unlock(&n->mu);
    return rw->placed;
}

static void room_attach(void *ctx, struct waiter *w)
{
    struct room_wait *rw = ctx;
    nursery__wait_one_attach(&rw->one, w);
    struct cancel_node *node = &rw->n->node;
    rw->on_node.waiter = w;
    pthread_mutex_lock(&node->mu);
    list_push_back(&node->waiters.links, &rw->on_node.node);
    pthread_mutex_unlock(&node->mu);
}

static void room_detach(void *ctx)
{
    struct room_wait *rw = ctx;
    struct cancel_node *node = &rw->n->node;
    pthread_mutex_lock(&node->mu);
    list_remove(&rw->on_node.node);
    pthread_mutex_unlock(&node->mu);
    nursery__wait_one_detach(&rw->one);
}

static void room_describe(void *ctx, struct blocked_on *b)
{
    *b = (struct blocked_on){.kind = BLOCKED_ROOM, .object = ((struct room_wait *)ctx)->n};
}

static const struct block_ops room_ops = {
    .ready = room_ready,
    .attach = room_attach,
    .detach = room_detach,
    .describe = room_describe,
};

/* Checks of nursery_start_limited and nursery_try_start before a place is
 * sought; 0 when the nursery has a limit, 1 when it has none. */
static int check_limited_start(nursery_t *n, nursery_fn fn, const nursery_task_options_t *opts)
{
    if (!n || !fn || (opts && (opts->flags & ~(unsigned)TASK_USER_FLAGS)))
        return EINVAL;
    if (nursery__forked(n->generation))
        return NURSERY_EFORKED;
    if (is_closed(n))
        return NURSERY_ECLOSED;
    return atomic_load_explicit(&n->limited, memory_order_acquire) ? 0 : 1;
}

/* Starts a task that has its place already (TASK_COUNTED_FLAG). */
static int start_placed(nursery_t *n, nursery_fn fn, void *arg, const nursery_task_options_t *opts)
{
    struct task *t = NULL;
    int rc = nursery__task_new(&t, fn, arg, opts);
    if (rc) {
        release_place(n);
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        return rc;
    }
    t->flags |= TASK_COUNTED_FLAG;
    rc = nursery__submit(n, t, &n->node);
    if (rc) {
        nursery__cancel_node_fini(&t->node);
        nursery__task_free(t);
    }
    return rc;
}

int nursery_start_limited(nursery_t *n, nursery_fn fn, void *arg,
                          const nursery_task_options_t *opts, nursery_time_t deadline)
{
    int rc = check_limited_start(n, fn, opts);
    bool limited = rc == 0;
    if (rc == 1 || rc == 0)
        rc = nursery_cancelled() || nursery__cancel_node_cancelled(&n->node)
                 ? nursery__cancel_delivered()
                 : 0;
    if (rc == 0 && !limited)
        return nursery_start_soon(n, fn, arg, opts);
    if (rc == 0) {
        struct room_wait rw = {.one = {.mu = &n->mu, .q = &n->room}, .n = n};
        rc = nursery__block(&room_ops, &rw, deadline, 0);
        if (rc == 0 && !rw.placed)
            rc = nursery__cancel_delivered(); /* the nursery was cancelled */
        else if (rc != 0 && rw.placed)
            release_place(n);
    }
    if (rc) {
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        return rc;
    }
    return start_placed(n, fn, arg, opts);
}

int nursery_try_start(nursery_t *n, nursery_fn fn, void *arg, const nursery_task_options_t *opts)
{
    int rc = check_limited_start(n, fn, opts);
    if (rc == 1)
        return nursery_start_soon(n, fn, arg, opts);
    if (rc) {
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        return rc;
    }
    pthread_mutex_lock(&n->mu);
    bool placed = take_place_locked(n);
    pthread_mutex_unlock(&n->mu);
    return placed ? start_placed(n, fn, arg, opts) : EAGAIN;
}

/* ---- start / started --------------------------------------------------- */

/* WAITING -> STARTED or ENDED, set by the task; WAITING -> ABANDONED, set by
 * the caller when it gives up (then the task can only end: started() is
 * refused). */
enum { SLOT_WAITING, SLOT_ABANDONED, SLOT_STARTED, SLOT_ENDED };

/* Where a nursery_start() caller waits; on its stack. */
struct start_slot {
    pthread_mutex_t mu;     /* state, value, code, err, cancelled, waiters */
    atomic_int state;       /* SLOT_*, changed under mu */
    void *value;            /* the started value */
    int code;               /* the task's code when it ended before started */
    nursery_error_t *err;   /* owned: its error then, or NULL */
    bool cancelled;         /* it ended only because it was cancelled */
    struct waitq waiters;
};

/* The caller's wait; wait_one first, for wait_one_attach. */
struct slot_wait {
    struct wait_one one;
    struct start_slot *slot;
    struct task *task;
    struct waiter *outer_watch; /* an enclosing start's, put back at detach */
};

static bool slot_settled(const struct start_slot *slot)
{
    int state = atomic_load_explicit(&slot->state, memory_order_acquire);
    return state == SLOT_STARTED || state == SLOT_ENDED;
}

static void slot_settle_locked(struct start_slot *slot, int state, void *value)
{
    slot->value = value;
    atomic_store_explicit(&slot->state, state, memory_order_release);
    nursery__waitq_wake_all(&slot->waiters);
}

void nursery__start_slot_end(struct start_slot *slot, int code, nursery_error_t *err,
                             bool cancelled)
{
    pthread_mutex_lock(&slot->mu);
    slot->code = code;
    slot->err = nursery_error_retain(err);
    slot->cancelled = cancelled;
    slot_settle_locked(slot, SLOT_ENDED, NULL);
    pthread_mutex_unlock(&slot->mu);
}

static bool slot_ready(void *ctx)
{
    return slot_settled(((struct slot_wait *)ctx)->slot);
}

/* A worker waiting for its task to start runs it itself only when no
 * other worker can: run here, the task keeps the caller until it returns,
 * not only until it calls started().  So only when its pool can neither
 * grow nor wake an idle worker; the pool signals the waiter if that happens
 * while it waits. */
static bool slot_help(void *ctx)
{
    nursery_result_t *r = ((struct slot_wait *)ctx)->task->result;
    return nursery__pool_saturated(r->pool) && nursery__result_help(r);
}

static void slot_attach(void *ctx, struct waiter *w)
{
    struct slot_wait *sw = ctx;
    nursery__wait_one_attach(&sw->one, w);
    sw->outer_watch = nursery__pool_watch_saturation(sw->task->result->pool, w);
}

static void slot_detach(void *ctx)
{
    struct slot_wait *sw = ctx;
    nursery__pool_watch_saturation(sw->task->result->pool, sw->outer_watch);
    nursery__wait_one_detach(&sw->one);
}

static void slot_describe(void *ctx, struct blocked_on *b)
{
    *b = (struct blocked_on){.kind = BLOCKED_START,
                             .object = ((struct slot_wait *)ctx)->task->nursery};
}

static const struct block_ops slot_ops = {
    .ready = slot_ready,
    .attach = slot_attach,
    .detach = slot_detach,
    .help = slot_help,
    .describe = slot_describe,
};

/* The caller gave up (deadline or cancellation).  Unless the task started
 * first, it stays the caller's and is cancelled - on the spot if it is still
 * queued - and the caller waits for it to end, as it must not outlive the
 * call.  Returns with the slot settled. */
static void give_up(struct slot_wait *sw)
{
    pthread_mutex_lock(&sw->slot->mu);
    bool abandon = atomic_load_explicit(&sw->slot->state, memory_order_relaxed) == SLOT_WAITING;
    if (abandon)
        atomic_store_explicit(&sw->slot->state, SLOT_ABANDONED, memory_order_relaxed);
    pthread_mutex_unlock(&sw->slot->mu);
    if (abandon)
        nursery_result_cancel(sw->task->result);
    nursery__block(&slot_ops, sw, NURSERY_FOREVER, BLOCK_UNCANCELLABLE);
}

int nursery__start_task(nursery_t *n, struct task *t, nursery_time_t deadline,
                        void **started_value)
{
    struct start_slot slot = {.err = NULL};
    pthread_mutex_init(&slot.mu, NULL);
    atomic_init(&slot.state, SLOT_WAITING);
    nursery__waitq_init(&slot.waiters);
    t->start = &slot;

    /* Until started, the task is cancelled with its caller. */
    if (nursery__ctx.node)
        nursery__cancel_node_attach(nursery__ctx.node);
    int rc = nursery__submit(n, t, nursery__ctx.node);
    if (rc) {
        pthread_mutex_destroy(&slot.mu);
        return rc;
    }
    struct slot_wait sw = {
        .one = {.mu = &slot.mu, .q = &slot.waiters}, .slot = &slot, .task = t};
    int gave_up = nursery__block(&slot_ops, &sw, deadline, 0);
    if (gave_up)
        give_up(&sw);

    /* The task may still be inside settling after we saw the state change
     * without the lock: once we hold it, the slot is ours alone. */
    pthread_mutex_lock(&slot.mu);
    pthread_mutex_unlock(&slot.mu);
    if (atomic_load_explicit(&slot.state, memory_order_relaxed) == SLOT_STARTED) {
        rc = 0; /* started before the caller gave up: that wins */
        if (started_value)
            *started_value = slot.value;
    } else if (gave_up && slot.cancelled) {
        rc = gave_up; /* ended because we cancelled it */
    } else {
        rc = slot.code ? slot.code : NURSERY_ENOTSTARTED;
        nursery__set_last_error(slot.err ? slot.err : nursery__error_from_code(rc));
        slot.err = NULL;
    }
    nursery_error_release(slot.err);
    pthread_mutex_destroy(&slot.mu);
    return rc;
}

int nursery_start(nursery_t *n, nursery_fn fn, void *arg, const nursery_task_options_t *opts,
                  nursery_time_t deadline, void **started_value, nursery_result_t **done)
{
    if (done)
        *done = NULL;
    if (!n || !fn) {
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        return EINVAL;
    }
    nursery_result_t *r = NULL;
    int rc = nursery_capture_create(&r, fn, arg, opts);
    if (rc)
        return rc;
    /* A capture serves both cases; the queue entry holds a reference. */
    nursery_result_retain(r);
    rc = nursery__start_task(n, &r->task, deadline, started_value);
    bool never_existed = rc == NURSERY_ECLOSED || rc == NURSERY_EFORKED;
    if (never_existed)
        nursery_result_release(r); /* the queue entry's: there is none */
    if (done && !never_existed)
        *done = r;
    else
        nursery_result_release(r);
    return rc;
}

int nursery_started(void *value)
{
    struct task *t = nursery__ctx.task;
    if (!t)
        return EINVAL;
    struct start_slot *slot = t->start;
    if (!slot)
        return (t->flags & TASK_STARTED_FLAG) ? EALREADY : EINVAL;
    pthread_mutex_lock(&slot->mu);
    /* A task whose caller gave up, or that is cancelled (with its caller,
     * or on its own) does not start: it is about to end, and its caller to
     * give up.  Nobody takes the value: it stays the task's.  A caller that
     * gave up cancels the task too, but maybe not yet: the task is
     * cancelled here, so that it ends cancelled whatever the order. */
    bool abandoned = atomic_load_explicit(&slot->state, memory_order_relaxed) == SLOT_ABANDONED;
    if (abandoned || nursery__cancel_node_cancelled(&t->node)) {
        if (abandoned)
            nursery__cancel_node_cancel(&t->node);
        pthread_mutex_unlock(&slot->mu);
        return nursery__cancel_delivered();
    }
    t->start = NULL;
    t->flags |= TASK_STARTED_FLAG;
    /* Moved under the nursery before the caller (our old parent) can go. */
    nursery__cancel_node_reparent(&t->node, &t->nursery->node);
    slot_settle_locked(slot, SLOT_STARTED, value);
    pthread_mutex_unlock(&slot->mu);
    return 0;
}
