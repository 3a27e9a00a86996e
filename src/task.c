/* SPDX-License-Identifier: MIT */
/*
 * task.c - running one task and recording its outcome.
 *
 * nursery__task_run() is the single place a task's function is called, whoever
 * claimed it (a worker, a waiter helping, a canceller, capture_run): it
 * installs the task as the thread's context, runs or skips the function,
 * turns the return code into an outcome, and hands the outcome to its
 * consumers in a fixed order:
 *
 *   1. the nursery's error group (failures) or its cancelled count, unless
 *      a nursery_start() caller still waits for started();
 *   2. arg_destroy;
 *   3. the pool's count of completed tasks;
 *   4. the capture's result;
 *   5. that nursery_start() caller, if any;
 *   6. the nursery's pending count - after which join may free the nursery,
 *      so nothing touches it afterwards.
 *
 * So when join returns, every result of its tasks is done, every argument
 * destroyed, and the pool's statistics count the tasks.
 */
#include "internal.h"
#include "pool.h"
#include "probes.h"
#include "trace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int nursery__task_init(struct task *t, nursery_fn fn, void *arg, const nursery_task_options_t *opts)
{
    memset(t, 0, sizeof(*t));
    t->fn = fn;
    t->arg = arg;
    atomic_init(&t->state, TASK_IDLE);
    atomic_init(&t->aside, false);
    nursery__cancel_node_init(&t->node, NULL);
    if (opts) {
        t->arg_destroy = opts->arg_destroy;
        if (opts->flags & ~(unsigned)TASK_USER_FLAGS)
            return EINVAL;
        t->flags = opts->flags;
        if (opts->name && !(t->name = strdup(opts->name)))
            return ENOMEM;
    }
    return 0;
}

int nursery__task_new(struct task **out, nursery_fn fn, void *arg,
                      const nursery_task_options_t *opts)
{
    struct task_cache *home;
    struct task *t = nursery__task_cache_get(&home);
    if (!t)
        return ENOMEM;
    int rc = nursery__task_init(t, fn, arg, opts);
    t->home = home;
    if (rc) {
        nursery__cancel_node_fini(&t->node);
        nursery__task_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void nursery__task_free(struct task *t)
{
    free(t->name);
    nursery__task_cache_put(t, t->home);
}

bool nursery__task_claim(struct task *t)
{
    int queued = TASK_QUEUED;
    return atomic_compare_exchange_strong_explicit(&t->state, &queued, TASK_RUNNING,
                                                   memory_order_acquire, memory_order_relaxed);
}

void nursery__task_discard(struct task *t)
{
    void (*destroy)(void *) = t->arg_destroy;
    t->arg_destroy = NULL;
    if (destroy)
        destroy(t->arg);
}

nursery_error_t *nursery__outcome_error(int code)
{
    nursery_error_t *err = nursery__ctx.last_error;
    if (err && nursery_error_code(err) == code) {
        nursery__ctx.last_error = NULL;
        return err;
    }
    return nursery__error_from_code(code);
}

/* One of the pool's task hooks (nursery_pool_options_t). */
static void call_hook(struct task *t, void (*hook)(const nursery_task_event_t *, void *),
                      int code)
{
    char name[sizeof(t->nursery->name)];
    nursery__name_copy(t->nursery, name);
    nursery_task_event_t ev = {.task = t,
                               .task_name = t->name,
                               .nursery = t->nursery,
                               .nursery_name = name,
                               .code = code};
    hook(&ev, t->nursery->pool->hook_arg);
}

static void task_finish(struct task *t, int code, void *value, nursery_error_t *err)
{
    nursery_t *n = t->nursery;
    unsigned flags = t->flags; /* a capture's task may be gone once it is complete */
    bool cancelled = code == ECANCELED && nursery__cancel_node_cancelled(&t->node);

    NURSERY_PROBE3(task__finish, t, t->name, code);
    if (n && unlikely(n->pool->on_task_finish))
        call_hook(t, n->pool->on_task_finish, code);

    if (err)
        nursery__error_set_task_name(err, t->name);
    /* A nursery_start() caller still waiting for started() gets the
     * outcome instead of the nursery (below, once the task has ended). */
    struct start_slot *start = t->start;
    t->start = NULL;
    if (n && !start) {
        if (cancelled) {
            nursery__task_cancelled(n);
        } else if (code) {
            nursery__task_counted_failure(n);
            if (!(t->flags & NURSERY_TASK_SUPPRESS_ERROR))
                nursery__task_failed(n, err);
        }
        if (flags & NURSERY_TASK_MAIN)
            nursery__cancel_node_cancel(&n->node);
    }

    nursery_result_t *r = t->result;
    if (r) {
        /* result.mu keeps nursery_result_cancel() off a dying node. */
        pthread_mutex_lock(&r->mu);
        nursery__cancel_node_fini(&t->node);
        atomic_store_explicit(&t->state, TASK_DONE, memory_order_relaxed);
        pthread_mutex_unlock(&r->mu);
    } else {
        nursery__cancel_node_fini(&t->node);
    }
    nursery__task_discard(t);
    /* Counted before anyone can see it finished: a joiner that reads the
     * pool's statistics finds it completed. */
    nursery__pool_task_finished();
    if (r)
        nursery__result_complete(r, value, nursery_error_retain(err));
    if (start)
        nursery__start_slot_end(start, code, err, cancelled);
    nursery_error_release(err);
    if (n)
        nursery__task_end(n, flags);
    if (!r)
        nursery__task_free(t);
}

/* The task called fork() and returned in the child, where the task, its
 * nursery and its result are the parent's.  A pool thread has nothing to
 * go back to: the child ends, as if the task had called _exit().  A thread
 * that ran a capture itself (nursery_capture_run) goes on, outside any
 * task, and the capture is left as it was (the call reports
 * NURSERY_EFORKED). */
static void returned_in_fork_child(const struct thread_ctx *saved, int code)
{
    if (saved->worker)
        _exit(code == 0 ? 0 : 1);
    nursery__set_last_error(saved->last_error);
}

void nursery__task_run(struct task *t)
{
    /* Whoever claimed it, the starter's writes are ours (nursery__pool_submit). */
    nursery__hb_acquire(t);
    struct thread_ctx saved = nursery__ctx;
    nursery__ctx.node = &t->node;
    nursery__ctx.task = t;
    nursery__ctx.last_error = NULL;
    nursery__pool_task_starting();
    nursery__trace_task_push(t);

    void *value = NULL;
    int code;
    nursery_error_t *err = NULL;
    if (nursery__cancel_node_cancelled(&t->node)) {
        /* Cancelled before it started: it never runs. */
        code = ECANCELED;
        if (t->result || t->start)
            err = nursery__error_cancelled(t->name);
    } else {
        unsigned generation =
            atomic_load_explicit(&nursery__fork_generation, memory_order_relaxed);
        NURSERY_PROBE3(task__start, t, t->name, t->nursery);
        if (t->nursery && unlikely(t->nursery->pool->on_task_start))
            call_hook(t, t->nursery->pool->on_task_start, 0);
        code = t->fn(t->arg, &value);
        if (unlikely(nursery__forked(generation))) {
            returned_in_fork_child(&saved, code);
            return;
        }
        if (code)
            err = nursery__outcome_error(code);
    }
    if (code)
        value = NULL;

    nursery__trace_task_pop();
    nursery__set_last_error(NULL);
    nursery__ctx.node = saved.node;
    nursery__ctx.task = saved.task;
    nursery__ctx.last_error = saved.last_error;
    task_finish(t, code, value, err);
}
