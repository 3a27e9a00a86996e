/* SPDX-License-Identifier: MIT */
/*
 * result.c - results: captures (the outcome of a task) and futures (set by
 * hand), one refcounted type.
 *
 * result.mu protects the outcome and the wait queue; `done` is set last,
 * with release order, so a reader that sees done (acquire) sees the value
 * and error without the lock, and the outcome never changes afterwards.
 * A capture embeds its task: a queue entry naming the task holds a
 * reference to the result, so the task's memory outlives it.
 *
 * In the child of a fork(), a result made before it is the parent's: every
 * call that returns a code refuses it with NURSERY_EFORKED without touching
 * its lock, and releasing it does nothing.
 */
#include "internal.h"
#include "trace.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nursery_result_t *result_alloc(bool capture)
{
    nursery_result_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    atomic_init(&r->refs, 1);
    atomic_init(&r->done, false);
    r->is_capture = capture;
    r->generation = nursery__generation();
    pthread_mutex_init(&r->mu, NULL);
    nursery__waitq_init(&r->waiters);
    return r;
}

int nursery__result_complete(nursery_result_t *r, void *value, nursery_error_t *err)
{
    pthread_mutex_lock(&r->mu);
    if (atomic_load_explicit(&r->done, memory_order_relaxed)) {
        pthread_mutex_unlock(&r->mu);
        nursery_error_release(err);
        return EALREADY;
    }
    r->value = err ? NULL : value;
    r->error = err;
    r->completed_at = nursery_now();
    /* Before done: a reader that sees done acquires it (nursery_result_is_done). */
    nursery__hb_release(r);
    atomic_store_explicit(&r->done, true, memory_order_release);
    nursery__waitq_wake_all(&r->waiters);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* ---- captures ---------------------------------------------------------- */

int nursery_capture_create(nursery_result_t **out, nursery_fn fn, void *arg,
                           const nursery_task_options_t *opts)
{
    nursery_result_t *r = NULL;
    int rc = !out || !fn                ? EINVAL
             : (r = result_alloc(true)) ? nursery__task_init(&r->task, fn, arg, opts)
                                        : ENOMEM;
    if (rc) {
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        if (r) {
            r->task.arg_destroy = NULL;
            nursery_result_release(r);
        }
        if (out)
            *out = NULL;
        return rc;
    }
    r->task.result = r;
    *out = r;
    return 0;
}

/* A parent's result, in a child of fork(). */
static bool forked(const nursery_result_t *r)
{
    return nursery__forked(r->generation);
}

int nursery_capture_run(nursery_result_t *r)
{
    if (!r || !r->is_capture)
        return EINVAL;
    if (forked(r))
        return NURSERY_EFORKED;
    int idle = TASK_IDLE;
    if (!atomic_compare_exchange_strong(&r->task.state, &idle, TASK_RUNNING))
        return EALREADY;
    nursery__trace_register(); /* a task runs here: the dump must see this thread */
    atomic_store_explicit(&r->task.node.parent, nursery__ctx.node, memory_order_relaxed);
    nursery__task_run(&r->task);
    if (forked(r)) /* it called fork() and returned in the child */
        return NURSERY_EFORKED;
    if (!r->error)
        return 0;
    nursery__set_last_error(nursery_error_retain(r->error));
    return nursery_error_code(r->error);
}

int nursery_capture_start_soon(nursery_t *n, nursery_fn fn, void *arg,
                               const nursery_task_options_t *opts, nursery_result_t **out)
{
    if (!out || !n) {
        if (out)
            *out = NULL;
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        return EINVAL;
    }
    int rc = nursery_capture_create(out, fn, arg, opts);
    if (rc)
        return rc;
    rc = nursery__capture_submit(n, *out);
    if (rc)
        *out = NULL;
    return rc;
}

int nursery__capture_submit(nursery_t *n, nursery_result_t *r)
{
    nursery_result_retain(r); /* the queue entry's reference */
    int rc = nursery__submit(n, &r->task, &n->node);
    if (rc) {
        nursery_result_release(r);
        nursery_result_release(r);
    }
    return rc;
}

/* The start-and-done pair: a task of the start nursery that starts the
 * done capture's task in the run nursery. */
struct start_and_done {
    nursery_t *run_nursery;
    nursery_result_t *done;
};

/* The done capture was cancelled on its own before its task started: so
 * is this start task, so that the start nursery counts a cancellation and
 * not a failure.  Returns ECANCELED, or 0 if it was not cancelled. */
static int cancelled_with(nursery_result_t *done)
{
    if (!nursery_result_is_done(done) ||
        !atomic_load_explicit(&done->task.node.cancelled, memory_order_acquire))
        return 0;
    nursery__cancel_node_cancel(&nursery__ctx.task->node);
    return ECANCELED;
}

static int start_and_done_task(void *arg, void **value)
{
    struct start_and_done *sd = arg;
    nursery_result_t *done = sd->done;
    int idle = TASK_IDLE;
    if (!atomic_compare_exchange_strong(&done->task.state, &idle, TASK_RUNNING)) {
        int rc = cancelled_with(done);
        return rc ? rc : EALREADY;
    }
    nursery_result_retain(done); /* the queue entry's reference */
    int rc = nursery__start_task(sd->run_nursery, &done->task, NURSERY_FOREVER, value);
    if (rc == NURSERY_ECLOSED || rc == NURSERY_EFORKED) {
        /* The task never existed: settle the done result with the reason,
         * as task_finish would have. */
        pthread_mutex_lock(&done->mu);
        nursery__cancel_node_fini(&done->task.node);
        atomic_store(&done->task.state, TASK_DONE);
        pthread_mutex_unlock(&done->mu);
        nursery_error_t *err = nursery__error_from_code(rc);
        nursery__result_complete(done, NULL, nursery_error_retain(err));
        nursery_result_release(done);
        return nursery_fail_with(err);
    }
    if (rc == ECANCELED && cancelled_with(done))
        return ECANCELED;
    return rc;
}

static void start_and_done_free(void *arg)
{
    struct start_and_done *sd = arg;
    /* Cancelled before it could start the task: the done result must not
     * stay pending forever. */
    if (atomic_load(&sd->done->task.state) == TASK_IDLE)
        nursery_result_cancel(sd->done);
    nursery_result_release(sd->done);
    free(sd);
}

int nursery_capture_start_and_done(nursery_t *start_nursery, nursery_t *run_nursery,
                                   nursery_fn fn, void *arg, const nursery_task_options_t *opts,
                                   nursery_result_t **start_result, nursery_result_t **done_result)
{
    if (start_result)
        *start_result = NULL;
    if (done_result)
        *done_result = NULL;
    struct start_and_done *sd = NULL;
    int rc = !start_nursery || !run_nursery || !fn || !start_result || !done_result ? EINVAL
             : !(sd = malloc(sizeof(*sd)))                                          ? ENOMEM
                                                                                    : 0;
    if (rc) {
        if (opts && opts->arg_destroy)
            opts->arg_destroy(arg);
        return rc;
    }
    nursery_result_t *done;
    rc = nursery_capture_create(&done, fn, arg, opts);
    if (rc) {
        free(sd);
        return rc;
    }
    sd->run_nursery = run_nursery;
    sd->done = nursery_result_retain(done);
    nursery_task_options_t helper = {
        .name = opts ? opts->name : NULL,
        .arg_destroy = start_and_done_free,
    };
    rc = nursery_capture_start_soon(start_nursery, start_and_done_task, sd, &helper,
                                    start_result);
    if (rc) {
        nursery_result_release(done); /* start_and_done_free ran already */
        return rc;
    }
    *done_result = done;
    return 0;
}

/* ---- futures ----------------------------------------------------------- */

int nursery_future_create(nursery_result_t **out)
{
    if (!out)
        return EINVAL;
    *out = result_alloc(false);
    return *out ? 0 : ENOMEM;
}

int nursery_future_set_value(nursery_result_t *r, void *value)
{
    if (!r || r->is_capture)
        return EINVAL;
    if (forked(r))
        return NURSERY_EFORKED;
    return nursery__result_complete(r, value, NULL);
}

int nursery_future_set_error(nursery_result_t *r, nursery_error_t *err)
{
    if (!r || !err || r->is_capture) {
        nursery_error_release(err);
        return EINVAL;
    }
    if (forked(r)) {
        nursery_error_release(err);
        return NURSERY_EFORKED;
    }
    return nursery__result_complete(r, NULL, err);
}

int nursery_future_fail(nursery_result_t *r, int code, const char *fmt, ...)
{
    if (!r || r->is_capture || code == 0)
        return EINVAL;
    if (forked(r))
        return NURSERY_EFORKED;
    va_list ap;
    va_start(ap, fmt);
    nursery_error_t *err = nursery__error_new(code, fmt, ap);
    va_end(ap);
    return err ? nursery_future_set_error(r, err) : ENOMEM;
}

/* ---- reading ----------------------------------------------------------- */

/* Every read of a result's outcome, and every wait for it, comes through
 * here: what its completer did is ordered before the caller's next step. */
bool nursery_result_is_done(const nursery_result_t *r)
{
    if (!r || !atomic_load_explicit(&r->done, memory_order_acquire))
        return false;
    nursery__hb_acquire(r);
    return true;
}

int nursery_result_value(const nursery_result_t *r, void **value)
{
    if (!r || !value)
        return EINVAL;
    if (forked(r))
        return NURSERY_EFORKED;
    if (!nursery_result_is_done(r))
        return NURSERY_ENOTDONE;
    if (r->error)
        return NURSERY_EFAILED;
    *value = r->value;
    return 0;
}

int nursery_result_error(const nursery_result_t *r, nursery_error_t **err)
{
    if (!r || !err)
        return EINVAL;
    if (forked(r))
        return NURSERY_EFORKED;
    if (!nursery_result_is_done(r))
        return NURSERY_ENOTDONE;
    *err = r->error;
    return 0;
}

bool nursery__result_failed(const nursery_result_t *r)
{
    return nursery_result_is_done(r) && r->error && nursery_error_code(r->error) != ECANCELED;
}

void nursery__outcome_of(const nursery_result_t *r, nursery_outcome_t *o)
{
    nursery_result_is_done(r); /* orders the completer's writes before ours */
    nursery_error_t *err = r->error;
    *o = (nursery_outcome_t){
        .code = err ? nursery_error_code(err) : 0,
        .value = err ? NULL : r->value,
        .error = nursery_error_retain(err),
    };
}

void nursery_outcomes_release(nursery_outcome_t *outcomes, size_t n)
{
    if (!outcomes)
        return;
    for (size_t i = 0; i < n; i++) {
        nursery_error_release(outcomes[i].error);
        outcomes[i].error = NULL;
    }
}

/* ---- waiting ----------------------------------------------------------- */

bool nursery__result_help(nursery_result_t *r)
{
    /* A worker must help or its pool may have nobody left to run the task;
     * any other thread leaves it to the pool, so that its wait stays
     * responsive to cancellation and to the caller's own tasks. */
    if (!r->is_capture || !r->pool || !nursery__pool_is_current(r->pool) ||
        atomic_load_explicit(&r->task.state, memory_order_relaxed) != TASK_QUEUED)
        return false;
    if (!nursery__task_claim(&r->task))
        return false;
    /* Its queue entry, and the reference it holds, stay until removed. */
    nursery__task_run(&r->task);
    return true;
}

struct result_wait {
    struct wait_one one; /* on r->waiters; first, for nursery__wait_one_attach */
    nursery_result_t *r;
};

static bool result_ready(void *ctx)
{
    return nursery_result_is_done(((struct result_wait *)ctx)->r);
}

static bool result_wait_help(void *ctx)
{
    return nursery__result_help(((struct result_wait *)ctx)->r);
}

static void result_describe(void *ctx, struct blocked_on *b)
{
    *b = (struct blocked_on){.kind = BLOCKED_RESULT, .object = ((struct result_wait *)ctx)->r};
}

static const struct block_ops result_ops = {
    .ready = result_ready,
    .attach = nursery__wait_one_attach,
    .detach = nursery__wait_one_detach,
    .help = result_wait_help,
    .describe = result_describe,
};

int nursery_result_wait(nursery_result_t *r, nursery_time_t deadline)
{
    if (!r)
        return EINVAL;
    if (forked(r))
        return NURSERY_EFORKED;
    if (r->is_capture && nursery__ctx.task == &r->task)
        return EDEADLK;
    struct result_wait rw = {.one = {.mu = &r->mu, .q = &r->waiters}, .r = r};
    return nursery__block(&result_ops, &rw, deadline, 0);
}

/* ---- cancelling -------------------------------------------------------- */

int nursery_result_cancel(nursery_result_t *r)
{
    if (!r)
        return EINVAL;
    if (forked(r))
        return NURSERY_EFORKED;
    if (!r->is_capture)
        return nursery_future_set_error(r, nursery__error_cancelled(NULL));
    struct task *t = &r->task;
    for (;;) {
        if (nursery_result_is_done(r))
            return EALREADY;
        int state = atomic_load(&t->state);
        if (state == TASK_IDLE) {
            /* Never started: finish it here without running it. */
            if (!atomic_compare_exchange_strong(&t->state, &state, TASK_RUNNING))
                continue;
            atomic_store(&t->node.cancelled, true);
            nursery__task_run(t);
            return 0;
        }
        if (state == TASK_QUEUED && nursery__task_claim(t)) {
            atomic_store(&t->node.cancelled, true);
            nursery__task_run(t);
            return 0;
        }
        if (state == TASK_QUEUED)
            continue; /* claimed meanwhile: it is running now */
        if (state == TASK_WAITING) {
            /* Beyond its nursery's limit: taken out and ended here, or
             * admitted meanwhile (queued in a moment: look again). */
            if (nursery__backlog_take(t->nursery, t)) {
                atomic_store(&t->node.cancelled, true);
                nursery__task_run(t);
                nursery_result_release(r); /* the queue entry's, ours now */
                return 0;
            }
            continue;
        }
        /* task_finish tears the node down under r->mu and marks it done. */
        pthread_mutex_lock(&r->mu);
        bool running = atomic_load(&t->state) == TASK_RUNNING;
        if (running)
            nursery__cancel_node_cancel(&t->node);
        pthread_mutex_unlock(&r->mu);
        return running ? 0 : EALREADY;
    }
}

/* ---- printing ---------------------------------------------------------- */

static int format_outcome(const nursery_result_t *r, char *buf, size_t size)
{
    if (!nursery_result_is_done(r))
        return snprintf(buf, size, "not done");
    if (!r->error && !r->value)
        return snprintf(buf, size, "done: value NULL");
    if (!r->error) /* not %p: its form differs between C libraries */
        return snprintf(buf, size, "done: value 0x%" PRIxPTR, (uintptr_t)r->value);
    int code = nursery_error_code(r->error);
    if (code == ECANCELED)
        return snprintf(buf, size, "done: cancelled");
    return snprintf(buf, size, "done: error %d (%s)", code, nursery_error_message(r->error));
}

int nursery_result_format(const nursery_result_t *r, char *buf, size_t size, int flags)
{
    if (!r)
        return -1;
    char scratch[1];
    if (!buf || size == 0) {
        buf = scratch;
        size = sizeof(scratch);
    }
    if (!(flags & NURSERY_FORMAT_DETAILED))
        return format_outcome(r, buf, size);

    /* The task by its name and argument; its function's address would say
     * nothing to a reader. */
    int head;
    if (!r->is_capture)
        head = snprintf(buf, size, "future: ");
    else if (r->task.name)
        head = snprintf(buf, size, "capture '%s' arg=0x%" PRIxPTR ": ", r->task.name,
                        (uintptr_t)r->task.arg);
    else
        head = snprintf(buf, size, "capture arg=0x%" PRIxPTR ": ", (uintptr_t)r->task.arg);
    if (head < 0)
        return -1;
    size_t used = (size_t)head < size ? (size_t)head : size - 1;
    int tail = format_outcome(r, buf + used, size - used);
    return tail < 0 ? -1 : head + tail;
}

/* ---- references -------------------------------------------------------- */

nursery_result_t *nursery_result_retain(nursery_result_t *r)
{
    if (r)
        atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
    return r;
}

void nursery_result_release(nursery_result_t *r)
{
    if (!r || forked(r))
        return;
    nursery__hb_release(r); /* the acq_rel below, for TSan (see annotate.h) */
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    nursery__hb_acquire(r);
    if (r->is_capture) {
        nursery__task_discard(&r->task); /* never ran: its argument is still ours */
        if (atomic_load(&r->task.state) == TASK_IDLE)
            nursery__cancel_node_fini(&r->task.node);
        free(r->task.name);
    }
    nursery_error_release(r->error);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
