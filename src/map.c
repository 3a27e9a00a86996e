/* SPDX-License-Identifier: MIT */
/*
 * map.c - a parallel map with a bounded number of items in flight, over an
 * array (nursery_map) or from a generator to a sink in input order
 * (nursery_map_stream).
 *
 * Both are one engine: the body of a nursery of the map's own, running in
 * the calling thread, starts items as captures while there is room, then
 * sleeps on a watch (watch.c) of the captures in flight until about half
 * of them have ended, and collects what ended.  Room is a fixed set of slots, each a watch
 * link and the item it holds, so a million items cost `limit` slots, not a
 * million tasks.  The array form frees a slot as soon as its item ends; the
 * stream gives item i the slot i % (2 * limit) and frees it when the sink
 * has seen the item, so that at most `limit` ended items wait for an
 * earlier one.  Failures, cancellation and joining are the nursery's:
 * nursery_run() decides what the body's return means.
 */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

struct map_item {
    size_t index; /* in the input */
    void *arg;
    bool ended;
};

struct map {
    struct watch watch; /* first, for nursery__watch_attach; counts the items ended */
    nursery_fn fn;
    nursery_task_options_t task;    /* the items' options, without arg_destroy */
    void (*arg_destroy)(void *arg); /* the map calls it itself (see header) */
    size_t limit;
    bool fail_fast;
    void (*progress)(void *ctx, size_t done, size_t total);
    void *progress_ctx;

    /* Input: an array, or a generator. */
    void *const *args;
    size_t n;
    nursery_map_next_fn next;
    void *next_ctx;
    bool input_ended;
    size_t started; /* items taken from the input and started */

    /* Output: an array of outcomes, or a sink in input order. */
    nursery_outcome_t *outcomes;
    nursery_map_sink_fn sink;
    void *sink_ctx;
    size_t delivered; /* stream: items the sink has seen */

    bool body_ran; /* the outcomes are the body's to set */
    size_t running, ended, cursor;
    size_t watch_target; /* the body sleeps until this many items have ended */
    size_t reported_done, reported_total; /* what progress was last told */
    size_t nslots;
    struct watch_link *links; /* per slot; result NULL when the slot is free */
    struct map_item *items;   /* per slot */
    size_t *free_slots, nfree; /* array form: the free slots */
};

/* ---- starting items ---------------------------------------------------- */

static bool has_room(const struct map *m)
{
    if (m->input_ended || m->running >= m->limit || nursery_cancelled())
        return false;
    return m->sink ? m->started - m->delivered < m->nslots : m->nfree > 0;
}

/* The next argument: 0, NURSERY_EEND, or the generator's failure. */
static int take_input(struct map *m, void **arg)
{
    if (!m->next) {
        if (m->started == m->n)
            return NURSERY_EEND;
        *arg = m->args[m->started];
        return 0;
    }
    return m->next(m->next_ctx, arg);
}

static int start_next(struct map *m, nursery_t *n)
{
    void *arg = NULL;
    int rc = take_input(m, &arg);
    if (rc == NURSERY_EEND) {
        m->input_ended = true;
        return 0;
    }
    if (rc)
        return rc;
    size_t s = m->sink ? m->started % m->nslots : m->free_slots[m->nfree - 1];
    nursery_result_t *r;
    rc = nursery_capture_start_soon(n, m->fn, arg, &m->task, &r);
    if (rc) {
        if (m->sink && m->arg_destroy)
            m->arg_destroy(arg); /* the stream took it; the array's is destroyed at the end */
        return nursery_fail(rc, "cannot start item %zu", m->started);
    }
    if (!m->sink)
        m->nfree--;
    m->items[s] = (struct map_item){.index = m->started, .arg = arg};
    nursery__watch_add(&m->watch, &m->links[s], r, s);
    m->started++;
    m->running++;
    return 0;
}

/* ---- collecting what ended --------------------------------------------- */

/* Gives the slot's capture and argument back; the slot is free. */
static void release_slot(struct map *m, size_t s)
{
    nursery__watch_remove(&m->links[s]);
    nursery_result_release(m->links[s].result);
    m->links[s].result = NULL;
    if (m->arg_destroy)
        m->arg_destroy(m->items[s].arg);
    if (!m->sink)
        m->free_slots[m->nfree++] = s;
}

/* Hands the ended items to the sink in input order, as far as the prefix
 * has ended.  Once the map is cancelled (a failure, or the caller), it
 * hands out nothing more. */
static int deliver(struct map *m)
{
    for (;;) {
        size_t s = m->delivered % m->nslots;
        if (m->delivered == m->started || !m->items[s].ended)
            return 0;
        if (nursery_cancelled())
            return ECANCELED;
        nursery_outcome_t o;
        nursery__outcome_of(m->links[s].result, &o);
        int rc = m->sink(m->sink_ctx, m->items[s].index, m->items[s].arg, &o);
        nursery_error_release(o.error);
        release_slot(m, s);
        m->delivered++;
        if (rc)
            return rc;
    }
}

/* Calls the progress callback with what changed since its last call (a
 * generator's end may be read after the last item ended). */
static void report(struct map *m)
{
    size_t total = !m->next ? m->n : m->input_ended ? m->started : 0;
    if (!m->progress || m->ended == 0 ||
        (m->ended == m->reported_done && total == m->reported_total))
        return; /* nothing ended, or nothing new */
    m->reported_done = m->ended;
    m->reported_total = total;
    m->progress(m->progress_ctx, m->ended, total);
}

/* Finds the items that ended by a look at every slot: the watch only
 * counts (its completions then take no lock), and a look per slot once per
 * batch of about half the slots is a few looks per item. */
static int collect(struct map *m)
{
    for (size_t s = 0; s < m->nslots; s++) {
        nursery_result_t *r = m->links[s].result;
        if (!r || m->items[s].ended || !nursery_result_is_done(r))
            continue;
        m->running--;
        m->ended++;
        m->items[s].ended = true;
        if (!m->sink) {
            nursery__outcome_of(r, &m->outcomes[m->items[s].index]);
            release_slot(m, s);
        }
    }
    int rc = m->sink ? deliver(m) : 0;
    report(m);
    return rc;
}

/* ---- the body ---------------------------------------------------------- */

/* Whether the batch the body waits for has ended (see map_body). */
static bool batch_ended(void *ctx)
{
    struct map *m = ctx;
    size_t completed;
    nursery__watch_counts(&m->watch, &completed, NULL, NULL);
    return completed >= m->watch_target;
}

static bool help_an_item(void *ctx)
{
    struct map *m = ctx;
    return nursery__watch_help(m->links, m->nslots, &m->cursor);
}

static void map_describe(void *ctx, struct blocked_on *b)
{
    *b = (struct blocked_on){.kind = BLOCKED_MAP, .object = ctx};
}

static const struct block_ops item_ops = {
    .ready = batch_ended,
    .attach = nursery__watch_attach,
    .detach = nursery__watch_detach,
    .help = help_an_item,
    .describe = map_describe,
};

static int map_body(nursery_t *n, void *arg)
{
    struct map *m = arg;
    m->body_ran = true;
    for (;;) {
        int rc = 0;
        while (rc == 0 && has_room(m))
            rc = start_next(m, n);
        if (rc || m->running == 0) {
            if (rc == 0)
                report(m);
            return rc;
        }
        /* Half the items in flight end before the body refills them: one
         * wake-up per batch instead of one per item, while the other half
         * keeps the workers busy. */
        m->watch_target = m->ended + (m->running + 1) / 2;
        nursery__watch_wake_at(&m->watch, m->watch_target);
        rc = nursery__block(&item_ops, m, NURSERY_FOREVER, 0);
        if (rc == 0)
            rc = collect(m);
        if (rc)
            return rc;
    }
}

/* After the join (every capture still held has ended), or when the body
 * never ran: records the outcomes left and gives back every argument. */
static void finish(struct map *m)
{
    for (size_t s = 0; s < m->nslots; s++) {
        if (!m->links[s].result)
            continue;
        if (!m->sink)
            nursery__outcome_of(m->links[s].result, &m->outcomes[m->items[s].index]);
        release_slot(m, s);
    }
    for (size_t i = m->started; i < m->n; i++) {
        if (m->body_ran)
            m->outcomes[i] = (nursery_outcome_t){.code = ECANCELED};
        if (m->arg_destroy)
            m->arg_destroy(m->args[i]);
    }
}

/* ---- the calls --------------------------------------------------------- */

/* Main and daemon items would mean nothing to a map. */
static bool valid_options(const nursery_map_options_t *o)
{
    return !o || (!(o->flags & ~(unsigned)NURSERY_RETURN_ERRORS) &&
                  !(o->task && (o->task->flags & ~(unsigned)NURSERY_TASK_SUPPRESS_ERROR)));
}

/* Sets up the engine for `nslots_per_limit` slots per item in flight.
 * 0 or ENOMEM. */
static int map_init(struct map *m, nursery_fn fn, const nursery_map_options_t *opts,
                    size_t max_slots, size_t slots_per_limit)
{
    nursery_map_options_t o = opts ? *opts : (nursery_map_options_t){0};
    m->fn = fn;
    m->task = o.task ? *o.task : (nursery_task_options_t){0};
    m->arg_destroy = m->task.arg_destroy;
    m->task.arg_destroy = NULL;
    m->fail_fast = !(o.flags & NURSERY_RETURN_ERRORS);
    if (!m->fail_fast)
        m->task.flags |= NURSERY_TASK_SUPPRESS_ERROR;
    m->limit = o.limit ? o.limit : nursery__cpu_count();
    m->progress = o.progress;
    m->progress_ctx = o.progress_ctx;

    size_t limit = m->limit < max_slots ? m->limit : max_slots;
    size_t per_slot = sizeof(m->links[0]) + sizeof(m->items[0]) + sizeof(size_t);
    if (limit > SIZE_MAX / slots_per_limit / per_slot)
        return ENOMEM;
    size_t nslots = limit * slots_per_limit;
    m->links = calloc(nslots, per_slot);
    if (!m->links)
        return ENOMEM;
    m->nslots = nslots;
    m->items = (struct map_item *)(m->links + m->nslots);
    m->free_slots = (size_t *)(m->items + m->nslots);
    for (size_t s = 0; s < m->nslots; s++)
        m->free_slots[m->nfree++] = m->nslots - 1 - s; /* slot 0 first */
    nursery__watch_init(&m->watch, NULL, 0);
    return 0;
}

static int map_run(struct map *m, nursery_pool_t *pool, nursery_errors_t **errors)
{
    int rc = nursery_run(pool ? pool : nursery__pool_current(), map_body, m, errors);
    /* nursery_run() may have failed before the body ran: then nothing
     * started, and finish() only gives back the arguments. */
    finish(m);
    nursery__watch_destroy(&m->watch);
    free(m->links);
    return rc;
}

int nursery_map(nursery_pool_t *pool, nursery_fn fn, void *const *args, size_t n,
                const nursery_map_options_t *opts, nursery_outcome_t *outcomes,
                nursery_errors_t **errors)
{
    if (errors)
        *errors = NULL;
    if (!fn || (n && (!args || !outcomes)) || !valid_options(opts))
        return EINVAL;
    if (n == 0)
        return nursery_checkpoint();
    struct map m = {.args = args, .n = n, .outcomes = outcomes};
    int rc = map_init(&m, fn, opts, n, 1);
    if (rc) {
        finish(&m); /* no slot: it gives back every argument */
        return rc;
    }
    return map_run(&m, pool, errors);
}

int nursery_map_stream(nursery_pool_t *pool, nursery_fn fn, nursery_map_next_fn next,
                       void *next_ctx, nursery_map_sink_fn sink, void *sink_ctx,
                       const nursery_map_options_t *opts, nursery_errors_t **errors)
{
    if (errors)
        *errors = NULL;
    if (!fn || !next || !sink || !valid_options(opts))
        return EINVAL;
    struct map m = {.next = next, .next_ctx = next_ctx, .sink = sink, .sink_ctx = sink_ctx};
    int rc = map_init(&m, fn, opts, SIZE_MAX, 2);
    return rc ? rc : map_run(&m, pool, errors);
}
