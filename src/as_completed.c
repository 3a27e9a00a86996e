/* SPDX-License-Identifier: MIT */
/*
 * as_completed.c - asyncio's as_completed: hands out the results of a set
 * one at a time, in the order they complete.
 *
 * The iterator is a watch (watch.c) over the set, made once at creation:
 * every completion queues its index, so each call takes the next index
 * from the queue, or sleeps until there is one, without looking at the
 * set.  The results done at creation are queued first, in the order they
 * completed.  A result handed out is unlinked at once and its reference
 * passed on, so the iterator holds only what it has still to hand out.
 */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

struct nursery_as_completed {
    struct watch watch; /* first, for nursery__watch_attach */
    unsigned generation;
    size_t n, remaining, cursor;
    nursery_time_t deadline;
    size_t *queue;            /* n entries, the watch's */
    struct watch_link links[]; /* n; result NULL once handed out */
};

static bool forked(const nursery_as_completed_t *it)
{
    return nursery__forked(it->generation);
}

int nursery_as_completed_create(nursery_as_completed_t **out, nursery_result_t *const *results,
                                size_t n, nursery_time_t deadline)
{
    if (out)
        *out = NULL;
    if (!out || (n && !results))
        return EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!results[i])
            return EINVAL;
    for (size_t i = 0; i < n; i++)
        if (nursery__forked(results[i]->generation))
            return NURSERY_EFORKED;
    size_t per_result = sizeof(struct watch_link) + sizeof(size_t);
    nursery_as_completed_t *it = n > (SIZE_MAX - sizeof(*it)) / per_result
                                     ? NULL
                                     : malloc(sizeof(*it) + n * per_result);
    if (!it)
        return ENOMEM;
    it->generation = nursery__generation();
    it->n = it->remaining = n;
    it->cursor = 0;
    it->deadline = deadline;
    it->queue = (size_t *)(it->links + n);
    nursery__watch_init(&it->watch, it->queue, n);
    for (size_t i = 0; i < n; i++)
        it->links[i] = (struct watch_link){.result = nursery_result_retain(results[i])};

    /* The done ones first, in the order they completed: watched in that
     * order, each is queued at once (the j-th writes queue[j], the very
     * entry it was read from).  Then the others, which queue themselves as
     * they complete. */
    size_t done = 0;
    for (size_t i = 0; i < n; i++)
        if (nursery_result_is_done(results[i]))
            it->queue[done++] = i;
    nursery__sort_by_completion(it->queue, done, results);
    for (size_t j = 0; j < done; j++) {
        size_t i = it->queue[j];
        nursery__watch_add(&it->watch, &it->links[i], results[i], i);
    }
    for (size_t i = 0; i < n; i++)
        if (!it->links[i].watch)
            nursery__watch_add(&it->watch, &it->links[i], results[i], i);
    *out = it;
    return 0;
}

static bool next_ready(void *ctx)
{
    size_t queued;
    nursery__watch_counts(ctx, NULL, NULL, &queued);
    return queued > 0;
}

static bool next_help(void *ctx)
{
    nursery_as_completed_t *it = ctx;
    return nursery__watch_help(it->links, it->n, &it->cursor);
}

static void next_describe(void *ctx, struct blocked_on *b)
{
    *b = (struct blocked_on){.kind = BLOCKED_AS_COMPLETED, .object = ctx};
}

static const struct block_ops next_ops = {
    .ready = next_ready,
    .attach = nursery__watch_attach,
    .detach = nursery__watch_detach,
    .help = next_help,
    .describe = next_describe,
};

int nursery_as_completed_next(nursery_as_completed_t *it, size_t *index,
                              nursery_result_t **result)
{
    if (!it)
        return EINVAL;
    if (forked(it))
        return NURSERY_EFORKED;
    int rc = nursery_checkpoint(); /* also with a result ready, or none left */
    if (rc == 0 && it->remaining == 0)
        rc = NURSERY_EEND;
    if (rc == 0)
        rc = nursery__block(&next_ops, it, it->deadline, 0);
    size_t i;
    if (rc || !nursery__watch_pop(&it->watch, &i))
        return rc;
    struct watch_link *l = &it->links[i];
    nursery__watch_remove(l);
    nursery_result_t *r = l->result;
    l->result = NULL;
    it->remaining--;
    if (index)
        *index = i;
    if (result)
        *result = r;
    else
        nursery_result_release(r);
    return 0;
}

int nursery_as_completed_set_deadline(nursery_as_completed_t *it, nursery_time_t deadline)
{
    if (!it)
        return EINVAL;
    if (forked(it))
        return NURSERY_EFORKED;
    it->deadline = deadline;
    return 0;
}

size_t nursery_as_completed_remaining(const nursery_as_completed_t *it)
{
    return it ? it->remaining : 0;
}

void nursery_as_completed_free(nursery_as_completed_t *it)
{
    if (!it || forked(it))
        return;
    for (size_t i = 0; i < it->n; i++) {
        if (!it->links[i].result)
            continue;
        nursery__watch_remove(&it->links[i]);
        nursery_result_release(it->links[i].result);
    }
    nursery__watch_destroy(&it->watch);
    free(it);
}
