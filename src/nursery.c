/*
 * nursery.c - nurseries: open, start tasks, join; and Trio's start/started.
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
 * joiner's wait queue.
 *
 * The opener's thread context points at the nursery's cancel node from open
 * to join, which is how the body sees the nursery's cancellation; that is
 * why nurseries are joined by their opener, innermost first.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

/* ---- task accounting --------------------------------------------------- */

/* The body counts its starts in advance, START_CREDITS at a time: adding
 * one to `pending` per task, a line the finishing workers write too, was 40%
 * of the time of a body that starts a million tiny tasks.  Only the body in
 * its own context (not a task that a joining opener runs while it helps)
 * uses credits, and join gives back what is left before it waits. */
#define START_CREDITS 64

int nursery__task_begin(nursery_t *n)
{
    bool body = nursery__ctx.node == &n->node;
    if (body && n->credits > 0) {
        n->credits--;
        return 0;
    }
    uint64_t count = body ? START_CREDITS : 1;
    uint64_t old = atomic_fetch_add_explicit(&n->pending, count, memory_order_relaxed);
    if (unlikely(old & NURSERY_CLOSED)) {
        atomic_fetch_sub_explicit(&n->pending, count, memory_order_relaxed);
        return NURSERY_ECLOSED;
    }
    if (body)
        n->credits = count - 1;
    return 0;
}

static void return_credits(nursery_t *n)
{
    if (n->credits) {
        atomic_fetch_sub_explicit(&n->pending, n->credits, memory_order_relaxed);
        n->credits = 0;
    }
}

void nursery__task_end(nursery_t *n)
{
    uint64_t v = atomic_load_explicit(&n->pending, memory_order_relaxed);
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
    nursery__error_acc_add(&n->errors, err);
    pthread_mutex_unlock(&n->mu);
    nursery__cancel_node_cancel(&n->node);
}

void nursery__task_cancelled(nursery_t *n)
{
    atomic_fetch_add_explicit(&n->cancelled_tasks, 1, memory_order_relaxed);
}

int nursery__submit(nursery_t *n, struct task *t, struct cancel_node *parent)
{
    int rc = nursery__pool_is_forked(n->pool) ? NURSERY_EFORKED : nursery__task_begin(n);
    if (unlikely(rc)) {
        nursery__task_discard(t);
        return rc;
    }
    t->nursery = n;
    atomic_store_explicit(&t->node.parent, parent, memory_order_relaxed);
    nursery__pool_submit(n->pool, t);
    return 0;
}

/* ---- open and join ----------------------------------------------------- */

int nursery_open(nursery_t **out, nursery_pool_t *pool)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    int rc = pool ? 0 : nursery_pool_default(&pool);
    if (rc)
        return rc;
    nursery_t *n = calloc(1, sizeof(*n));
    if (!n)
        return ENOMEM;
    rc = nursery__pool_nursery_opened(pool);
    if (rc) {
        free(n);
        return rc;
    }
    n->pool = pool;
    n->outer = nursery__ctx.node;
    n->opener_task = nursery__ctx.task;
    n->opener = pthread_self();
    if (n->outer)
        nursery__cancel_node_attach(n->outer);
    nursery__cancel_node_init(&n->node, n->outer);
    nursery__cancel_node_attach(&n->node);
    atomic_init(&n->pending, 0);
    atomic_init(&n->refs, 1);
    atomic_init(&n->cancelled_tasks, 0);
    pthread_mutex_init(&n->mu, NULL);
    nursery__waitq_init(&n->joiners);
    nursery__ctx.node = &n->node;
    *out = n;
    return 0;
}

struct join_wait {
    struct wait_one one; /* on n->joiners; first, for nursery__wait_one_attach */
    nursery_t *n;
};

static bool join_ready(void *ctx)
{
    nursery_t *n = ((struct join_wait *)ctx)->n;
    /* Asked between every task a joiner helps with: the lock only when
     * there may be something to close. */
    if (atomic_load_explicit(&n->pending, memory_order_relaxed) != 0)
        return false;
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

static const struct block_ops join_ops = {
    .ready = join_ready,
    .attach = nursery__wait_one_attach,
    .detach = nursery__wait_one_detach,
    .help = join_help,
};

int nursery_join(nursery_t *n, nursery_time_t deadline, nursery_errors_t **errors)
{
    if (errors)
        *errors = NULL;
    if (!n || !pthread_equal(n->opener, pthread_self()) || nursery__ctx.node != &n->node)
        return EINVAL;

    return_credits(n);
    /* Not cut short by cancellation: the tasks are cancelled through the
     * tree and join waits for them. */
    struct join_wait jw = {.one = {.mu = &n->mu, .q = &n->joiners}, .n = n};
    int rc = nursery__block(&join_ops, &jw, deadline, BLOCK_UNCANCELLABLE);
    if (rc)
        return rc;

    nursery__ctx.node = n->outer;
    bool outer_cancelled = n->outer && nursery__cancel_node_cancelled(n->outer);
    /* Closed under n->mu after the last task's errors were added under it:
     * nothing changes them any more, so they are read without the lock. */
    bool failed = n->errors.count > 0 || n->errors.dropped > 0;
    rc = failed ? NURSERY_EFAILED : outer_cancelled ? ECANCELED : 0;
    nursery_errors_t *group = NULL;
    if (rc)
        group = nursery__error_acc_finish(&n->errors, atomic_load(&n->cancelled_tasks));
    if (errors)
        *errors = group;
    else
        nursery_errors_free(group);

    nursery__cancel_node_fini(&n->node);
    nursery__pool_nursery_closed(n->pool);
    nursery_release(n);
    return rc;
}

/* The body counts as a task of the nursery: its failure is recorded the
 * same way. */
static void record_body_outcome(nursery_t *n, int code)
{
    if (code == 0)
        return;
    if (code == ECANCELED && nursery__cancel_node_cancelled(&n->node)) {
        nursery__set_last_error(NULL);
        return;
    }
    nursery_error_t *err = nursery__ctx.last_error;
    if (err && nursery_error_code(err) == code)
        nursery__ctx.last_error = NULL;
    else if (!(err = nursery__error_from_code(code)))
        err = nursery__error_oom();
    nursery__task_failed(n, err);
    nursery_error_release(err);
}

int nursery_run(nursery_pool_t *pool, int (*body)(nursery_t *n, void *arg), void *arg,
                nursery_errors_t **errors)
{
    if (errors)
        *errors = NULL;
    if (!body)
        return EINVAL;
    nursery_t *n;
    int rc = nursery_open(&n, pool);
    if (rc)
        return rc;
    record_body_outcome(n, body(n, arg));
    return nursery_join(n, NURSERY_FOREVER, errors);
}

int nursery_cancel(nursery_t *n)
{
    if (!n)
        return EINVAL;
    nursery__cancel_node_cancel(&n->node);
    return 0;
}

nursery_t *nursery_retain(nursery_t *n)
{
    if (n)
        atomic_fetch_add_explicit(&n->refs, 1, memory_order_relaxed);
    return n;
}

void nursery_release(nursery_t *n)
{
    if (!n || atomic_fetch_sub_explicit(&n->refs, 1, memory_order_acq_rel) != 1)
        return;
    nursery__error_acc_clear(&n->errors);
    pthread_mutex_destroy(&n->mu);
    free(n);
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

/* ---- start / started --------------------------------------------------- */

enum { SLOT_WAITING, SLOT_STARTED, SLOT_ENDED };

/* Where a nursery_start() caller waits; on its stack. */
struct start_slot {
    pthread_mutex_t mu;     /* state, value, code, err, waiters */
    atomic_int state;       /* SLOT_*: set once by the task, under mu */
    void *value;            /* the started value */
    int code;               /* the task's code when it ended before started */
    nursery_error_t *err;   /* owned: its error then, or NULL */
    struct waitq waiters;
};

/* The caller's wait; wait_one first, for nursery__wait_one_attach. */
struct slot_wait {
    struct wait_one one;
    struct start_slot *slot;
};

static void slot_settle(struct start_slot *slot, int state, void *value, int code,
                        nursery_error_t *err)
{
    pthread_mutex_lock(&slot->mu);
    slot->value = value;
    slot->code = code;
    slot->err = nursery_error_retain(err);
    atomic_store_explicit(&slot->state, state, memory_order_release);
    nursery__waitq_wake_all(&slot->waiters);
    pthread_mutex_unlock(&slot->mu);
}

void nursery__start_slot_end(struct start_slot *slot, int code, nursery_error_t *err)
{
    slot_settle(slot, SLOT_ENDED, NULL, code, err);
}

static bool slot_ready(void *ctx)
{
    struct start_slot *slot = ((struct slot_wait *)ctx)->slot;
    return atomic_load_explicit(&slot->state, memory_order_acquire) != SLOT_WAITING;
}

static const struct block_ops slot_ops = {
    .ready = slot_ready,
    .attach = nursery__wait_one_attach,
    .detach = nursery__wait_one_detach,
};

/* The task's node lives until task_finish tears it down under the
 * capture's lock and marks the task done (every started task has one). */
static void cancel_task_node(struct task *t)
{
    pthread_mutex_lock(&t->result->mu);
    if (atomic_load(&t->state) != TASK_DONE)
        nursery__cancel_node_cancel(&t->node);
    pthread_mutex_unlock(&t->result->mu);
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
    struct slot_wait sw = {.one = {.mu = &slot.mu, .q = &slot.waiters}, .slot = &slot};
    rc = nursery__block(&slot_ops, &sw, deadline, 0);
    if (rc) {
        /* Gave up: cancel the task while it is still ours, then wait until
         * it no longer refers to the slot. */
        pthread_mutex_lock(&slot.mu);
        if (atomic_load(&slot.state) == SLOT_WAITING)
            cancel_task_node(t);
        pthread_mutex_unlock(&slot.mu);
        nursery__block(&slot_ops, &sw, NURSERY_FOREVER, BLOCK_UNCANCELLABLE);
    }
    if (rc == 0 && atomic_load(&slot.state) == SLOT_STARTED) {
        if (started_value)
            *started_value = slot.value;
    } else if (rc == 0) {
        rc = slot.code ? slot.code : NURSERY_ENOTSTARTED;
        if (!slot.err && !(slot.err = nursery__error_from_code(rc)))
            slot.err = nursery__error_oom();
        nursery__set_last_error(slot.err);
        slot.err = NULL;
    }
    nursery_error_release(slot.err);
    /* The task may still be inside slot_settle() after we saw the state
     * change without the lock: wait until it has let go of the slot. */
    pthread_mutex_lock(&slot.mu);
    pthread_mutex_unlock(&slot.mu);
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
    if (rc == NURSERY_ECLOSED || rc == NURSERY_EFORKED)
        nursery_result_release(r); /* the task never existed */
    if (done && rc != NURSERY_ECLOSED && rc != NURSERY_EFORKED)
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
    t->start = NULL;
    t->flags |= TASK_STARTED_FLAG;
    /* Move under the nursery before the caller (our old parent) can go. */
    nursery__cancel_node_reparent(&t->node, &t->nursery->node);
    slot_settle(slot, SLOT_STARTED, value, 0, NULL);
    return 0;
}
