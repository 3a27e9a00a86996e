/* SPDX-License-Identifier: MIT */
/*
 * wait.c - waiting for several results: wait_all, wait_any and
 * results_to_channel (aioresult's waiting utilities), and wait with
 * return_when (asyncio's and concurrent.futures').
 *
 * A wait that sleeps on many results watches them (watch.c): one link per
 * result, and each completion counts itself and wakes the sleeper, so no
 * wake-up looks at the whole set and nothing polls.  The done ones are
 * ordered by the completion time each result records under its lock.  A
 * waiting pool worker runs a queued capture of the set itself (see
 * nursery__result_help), so the wait makes progress on a pool of any size.
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

/* ---- wait (asyncio.wait, concurrent.futures.wait) ---------------------- */

static bool condition_holds(int return_when, size_t n, size_t completed, size_t failed)
{
    switch (return_when) {
    case NURSERY_FIRST_COMPLETED:
        return completed > 0 || n == 0;
    case NURSERY_FIRST_ERROR:
        return failed > 0 || completed == n;
    default:
        return completed == n;
    }
}

/* Whether result i completed before result j (the index breaks ties). */
static bool earlier(nursery_result_t *const *results, size_t i, size_t j)
{
    nursery_time_t a = results[i]->completed_at, b = results[j]->completed_at;
    return a < b || (a == b && i < j);
}

static void sift_down(size_t *idx, size_t root, size_t k, nursery_result_t *const *results)
{
    for (size_t child; (child = 2 * root + 1) < k; root = child) {
        if (child + 1 < k && earlier(results, idx[child], idx[child + 1]))
            child++;
        if (!earlier(results, idx[root], idx[child]))
            return;
        size_t t = idx[root];
        idx[root] = idx[child];
        idx[child] = t;
    }
}

/* A heapsort: in place, and n log n whatever the input. */
void nursery__sort_by_completion(size_t *idx, size_t k, nursery_result_t *const *results)
{
    for (size_t i = k / 2; i-- > 0;)
        sift_down(idx, i, k, results);
    for (size_t end = k; end-- > 1;) {
        size_t t = idx[0];
        idx[0] = idx[end];
        idx[end] = t;
        sift_down(idx, 0, end, results);
    }
}

/* One look at the results: counts the done and the failed ones and, if
 * `order` is not NULL, writes the partition nursery_wait() promises. */
static size_t look(nursery_result_t *const *results, size_t n, size_t *order, size_t *failed)
{
    size_t done = 0, pending = 0;
    *failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!nursery_result_is_done(results[i])) {
            if (order)
                order[n - 1 - pending] = i; /* from the end, reversed below */
            pending++;
            continue;
        }
        if (order)
            order[done] = i;
        done++;
        *failed += nursery__result_failed(results[i]);
    }
    if (order) {
        for (size_t a = done, b = n; a + 1 < b; a++, b--) {
            size_t t = order[a];
            order[a] = order[b - 1];
            order[b - 1] = t;
        }
        nursery__sort_by_completion(order, done, results);
    }
    return done;
}

/* Up to this many results are watched without allocating. */
#define INLINE_LINKS 16

struct wait_set {
    struct watch watch; /* first, for nursery__watch_attach */
    struct watch_link *links;
    size_t n, cursor;
    int return_when;
};

static bool set_ready(void *ctx)
{
    struct wait_set *ws = ctx;
    size_t completed, failed;
    nursery__watch_counts(&ws->watch, &completed, &failed, NULL);
    return condition_holds(ws->return_when, ws->n, completed, failed);
}

static bool set_help(void *ctx)
{
    struct wait_set *ws = ctx;
    return nursery__watch_help(ws->links, ws->n, &ws->cursor);
}

static void set_describe(void *ctx, struct blocked_on *b)
{
    struct wait_set *ws = ctx;
    *b = (struct blocked_on){.kind = BLOCKED_WAIT,
                             .object = ws->n ? ws->links[0].result : NULL,
                             .count = (int_fast64_t)ws->n};
}

static const struct block_ops set_ops = {
    .ready = set_ready,
    .attach = nursery__watch_attach,
    .detach = nursery__watch_detach,
    .help = set_help,
    .describe = set_describe,
};

/* Sleeps on every result until the condition holds (which it does not
 * yet).  0, ETIMEDOUT, ECANCELED or ENOMEM. */
static int wait_for_condition(nursery_result_t *const *results, size_t n,
                              nursery_time_t deadline, int return_when)
{
    if (deadline != NURSERY_FOREVER && nursery_now() >= deadline)
        return ETIMEDOUT; /* only a look: nothing to sleep on */
    struct watch_link inline_links[INLINE_LINKS];
    struct wait_set ws = {.n = n, .return_when = return_when, .links = inline_links};
    if (n > INLINE_LINKS && !(ws.links = malloc(n * sizeof(ws.links[0]))))
        return ENOMEM;
    nursery__watch_init(&ws.watch, NULL, 0);
    /* Woken at the count that can make the condition hold (a failure
     * wakes it too, for FIRST_ERROR). */
    nursery__watch_wake_at(&ws.watch, return_when == NURSERY_FIRST_COMPLETED ? 1 : n);
    for (size_t i = 0; i < n; i++)
        nursery__watch_add(&ws.watch, &ws.links[i], results[i], i);
    int rc = nursery__block(&set_ops, &ws, deadline, 0);
    for (size_t i = 0; i < n; i++)
        nursery__watch_remove(&ws.links[i]);
    nursery__watch_destroy(&ws.watch);
    if (ws.links != inline_links)
        free(ws.links);
    return rc;
}

int nursery_wait(nursery_result_t *const *results, size_t n, nursery_time_t deadline,
                 int return_when, size_t *order, size_t *ndone)
{
    if (return_when != NURSERY_FIRST_COMPLETED && return_when != NURSERY_FIRST_ERROR &&
        return_when != NURSERY_ALL_COMPLETED)
        return EINVAL;
    int rc = check_results(results, n);
    if (rc == 0)
        rc = nursery_checkpoint(); /* also when the condition holds */
    if (rc == 0 && return_when == NURSERY_ALL_COMPLETED && holds_own_capture(results, n))
        rc = EDEADLK;
    if (rc)
        return rc;
    size_t failed, done = look(results, n, NULL, &failed);
    if (!condition_holds(return_when, n, done, failed)) {
        rc = wait_for_condition(results, n, deadline, return_when);
        if (rc != 0 && rc != ETIMEDOUT)
            return rc;
    }
    /* The conditions only ever become true: one that holds now held at the
     * deadline too, or just after. */
    done = look(results, n, order, &failed);
    if (ndone)
        *ndone = done;
    return condition_holds(return_when, n, done, failed) ? 0 : ETIMEDOUT;
}

/* ---- wait_any ---------------------------------------------------------- */

/* The done result that completed first (lowest index on a tie). */
static size_t first_completed(nursery_result_t *const *results, size_t n)
{
    size_t best = n;
    for (size_t i = 0; i < n; i++)
        if (nursery_result_is_done(results[i]) && (best == n || earlier(results, i, best)))
            best = i;
    return best;
}

int nursery_wait_any(nursery_result_t *const *results, size_t n, nursery_time_t deadline,
                     size_t *index)
{
    if (n == 0 || !index)
        return EINVAL;
    int rc = check_results(results, n);
    if (rc == 0)
        rc = nursery_checkpoint(); /* also when one is done */
    size_t failed;
    if (rc == 0 && look(results, n, NULL, &failed) == 0)
        rc = wait_for_condition(results, n, deadline, NURSERY_FIRST_COMPLETED);
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
