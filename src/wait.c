/* SPDX-License-Identifier: MIT */
/*
 * wait.c - waiting for several results: wait_all, wait_any, and
 * results_to_channel (aioresult's waiting utilities).
 *
 * wait_any registers one waiter on every result and sleeps until the first
 * completion signals it: no polling, whatever the number of results.  Of
 * the results found done, it reports the one that completed first, by the
 * completion time each result records under its lock.  A waiting pool
 * worker runs a queued capture of the set itself (see result_help), so the
 * wait makes progress on a pool of any size.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

/* EINVAL for a NULL array or entry, NURSERY_EFORKED for a result of the
 * parent of a fork(), else 0. */
static int check_results(nursery_result_t *const *results, size_t n)
{
    if (n && !results)
        return EINVAL;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!results[i])
            return EINVAL;
        if (nursery__forked(results[i]->generation))
            rc = NURSERY_EFORKED;
    }
    return rc;
}

/* Whether the calling task's own capture is among the results: waiting for
 * all of them could never end. */
static bool holds_own_capture(nursery_result_t *const *results, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (results[i]->is_capture && nursery__ctx.task == &results[i]->task)
            return true;
    return false;
}

int nursery_wait_all(nursery_result_t *const *results, size_t n, nursery_time_t deadline)
{
    int rc = check_results(results, n);
    if (rc == 0 && holds_own_capture(results, n))
        rc = EDEADLK;
    if (rc == 0)
        rc = nursery_checkpoint(); /* also with nothing to wait for */
    if (rc)
        return rc;
    /* Waiting in turn is enough: a result already done returns at once. */
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = nursery_result_wait(results[i], deadline);
    return rc;
}

/* ---- wait_any ---------------------------------------------------------- */

#define ANY_INLINE_LINKS 16

struct any_wait {
    nursery_result_t *const *results;
    size_t n;
    struct wait_link *links; /* one per result */
};

static bool any_ready(void *ctx)
{
    struct any_wait *aw = ctx;
    for (size_t i = 0; i < aw->n; i++)
        if (nursery_result_is_done(aw->results[i]))
            return true;
    return false;
}

static void any_attach(void *ctx, struct waiter *w)
{
    struct any_wait *aw = ctx;
    for (size_t i = 0; i < aw->n; i++) {
        nursery_result_t *r = aw->results[i];
        pthread_mutex_lock(&r->mu);
        nursery__waitq_add(&r->waiters, &aw->links[i], w);
        pthread_mutex_unlock(&r->mu);
    }
}

static void any_detach(void *ctx)
{
    struct any_wait *aw = ctx;
    for (size_t i = 0; i < aw->n; i++) {
        nursery_result_t *r = aw->results[i];
        pthread_mutex_lock(&r->mu);
        nursery__waitq_remove(&aw->links[i]);
        pthread_mutex_unlock(&r->mu);
    }
}

/* Runs one queued capture of the set, if the waiter is a worker of its
 * pool: on a pool that cannot grow nobody else might.  It may not be the
 * first to complete; the first is reported all the same. */
static bool any_help(void *ctx)
{
    struct any_wait *aw = ctx;
    for (size_t i = 0; i < aw->n; i++)
        if (nursery__result_help(aw->results[i]))
            return true;
    return false;
}

static const struct block_ops any_ops = {
    .ready = any_ready,
    .attach = any_attach,
    .detach = any_detach,
    .help = any_help,
};

/* The done result that completed first (lowest index on a tie). */
static size_t first_completed(nursery_result_t *const *results, size_t n)
{
    size_t best = n;
    for (size_t i = 0; i < n; i++) {
        if (!nursery_result_is_done(results[i]))
            continue;
        if (best == n || results[i]->completed_at < results[best]->completed_at)
            best = i;
    }
    return best;
}

int nursery_wait_any(nursery_result_t *const *results, size_t n, nursery_time_t deadline,
                     size_t *index)
{
    if (n == 0 || !index)
        return EINVAL;
    int rc = check_results(results, n);
    if (rc)
        return rc;
    struct wait_link inline_links[ANY_INLINE_LINKS];
    struct any_wait aw = {.results = results, .n = n, .links = inline_links};
    /* Links are needed only to sleep: a cancelled caller, or a result done
     * already (done stays done), ends the wait before any is used. */
    if (n > ANY_INLINE_LINKS && nursery_checkpoint() == 0 && !any_ready(&aw) &&
        !(aw.links = malloc(n * sizeof(aw.links[0]))))
        return ENOMEM;
    rc = nursery__block(&any_ops, &aw, deadline, 0);
    if (aw.links != inline_links)
        free(aw.links);
    if (rc == 0)
        *index = first_completed(results, n);
    return rc;
}

/* ---- results_to_channel ------------------------------------------------ */

int nursery_results_to_channel(nursery_result_t *const *results, size_t n, nursery_sender_t *tx,
                               bool close_on_complete)
{
    int rc = !tx ? EINVAL : check_results(results, n);
    if (rc == 0)
        rc = nursery_checkpoint(); /* also with nothing to send */
    nursery_result_t **left = NULL;
    if (rc == 0 && n && !(left = malloc(n * sizeof(*left))))
        rc = ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++)
        left[i] = results[i];

    /* Each round sends the earliest completion and drops it from the set. */
    for (size_t remaining = n; rc == 0 && remaining > 0;) {
        size_t i;
        rc = nursery_wait_any(left, remaining, NURSERY_FOREVER, &i);
        if (rc)
            break;
        nursery_result_t *r = nursery_result_retain(left[i]);
        rc = nursery_channel_send(tx, r, NURSERY_FOREVER);
        if (rc) {
            nursery_result_release(r);
            break;
        }
        left[i] = left[--remaining];
    }
    free(left);
    /* Also on failure, so that the consumer's loop ends instead of hanging.
     * (An end already closed is no failure of this call; one of a fork's
     * parent is.) */
    int closed = close_on_complete && tx ? nursery_sender_close(tx) : 0;
    return rc ? rc : closed == NURSERY_EFORKED ? closed : 0;
}
