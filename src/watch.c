/* SPDX-License-Identifier: MIT */
/*
 * watch.c - watching a set of results: which completed, in what order.
 *
 * nursery_wait(), the as_completed iterator and nursery_map() wait for one
 * of many results and must then learn which it was without looking at them
 * all: with 10 000 results, a scan per completion is quadratic.  A watch
 * links one callback into each result's wait queue; the completion calls it
 * under the result's lock, and it appends the link's index to the watch's
 * queue of completions and wakes the watch's sleeper, if any.  So a link is
 * made once per result for the watch's life, and every wake-up tells the
 * sleeper exactly what is new.
 *
 * Lock order: result.mu -> watch.mu (-> waiter.mu).  The links and the
 * queue's storage belong to the watch's owner, one thread, which alone adds
 * and removes links and pops the queue.
 */
#include "internal.h"

#include <errno.h>

void nursery__watch_init(struct watch *w, size_t *queue, size_t capacity)
{
    pthread_mutex_init(&w->mu, NULL);
    w->queue = queue;
    w->capacity = capacity;
    w->head = 0;
    atomic_init(&w->count, 0);
    atomic_init(&w->completed, 0);
    atomic_init(&w->failed, 0);
    atomic_init(&w->wake_at, 0);
    w->sleeper = NULL;
}

void nursery__watch_destroy(struct watch *w)
{
    pthread_mutex_destroy(&w->mu);
}

/* Records the completion of l's result.  The counts are atomic: only a
 * queue needs the lock to record, and a watch without one takes it only to
 * wake the sleeper, once per batch, so that completions on several workers
 * do not queue up for it.  No wake-up is lost: the sleeper publishes its
 * target (wake_at) and itself (under mu) before it looks at `completed`,
 * and a completion counts itself before it looks at the target (all
 * sequentially consistent), so one of the two sees the other. */
static void record(struct watch *w, struct watch_link *l)
{
    bool failed = nursery__result_failed(l->result);
    bool locked = w->queue != NULL;
    if (locked) {
        pthread_mutex_lock(&w->mu);
        size_t count = atomic_load_explicit(&w->count, memory_order_relaxed);
        w->queue[(w->head + count) % w->capacity] = l->index;
        atomic_store_explicit(&w->count, count + 1, memory_order_release);
    }
    if (failed)
        atomic_fetch_add(&w->failed, 1);
    size_t completed = atomic_fetch_add(&w->completed, 1) + 1;
    if (completed >= atomic_load(&w->wake_at) || failed) {
        if (!locked)
            pthread_mutex_lock(&w->mu);
        locked = true;
        if (w->sleeper)
            nursery__waiter_signal(w->sleeper);
    }
    if (locked)
        pthread_mutex_unlock(&w->mu);
}

/* Called by the result's completion, under its lock. */
static void notify(struct wait_link *link)
{
    struct watch_link *l = (struct watch_link *)link;
    record(l->watch, l);
}

void nursery__watch_add(struct watch *w, struct watch_link *l, nursery_result_t *r, size_t index)
{
    l->watch = w;
    l->result = r;
    l->index = index;
    pthread_mutex_lock(&r->mu);
    /* Done already: recorded now, as the completion would have been. */
    l->linked = !atomic_load_explicit(&r->done, memory_order_relaxed);
    if (l->linked)
        nursery__waitq_add_notify(&r->waiters, &l->link, notify);
    pthread_mutex_unlock(&r->mu);
    if (!l->linked) {
        nursery_result_is_done(r); /* the completer's writes, for the reader of the index */
        record(w, l);
    }
}

void nursery__watch_remove(struct watch_link *l)
{
    if (!l->linked)
        return;
    pthread_mutex_lock(&l->result->mu);
    nursery__waitq_remove(&l->link);
    pthread_mutex_unlock(&l->result->mu);
    l->linked = false;
}

bool nursery__watch_pop(struct watch *w, size_t *index)
{
    if (atomic_load_explicit(&w->count, memory_order_relaxed) == 0)
        return false; /* only the owner pops: an empty queue needs no lock */
    pthread_mutex_lock(&w->mu);
    *index = w->queue[w->head];
    w->head = (w->head + 1) % w->capacity;
    atomic_store_explicit(&w->count, atomic_load_explicit(&w->count, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    pthread_mutex_unlock(&w->mu);
    return true;
}

/* Read without the lock: what a completion recorded before it counted
 * itself is seen (the counts are sequentially consistent: see record()). */
void nursery__watch_counts(struct watch *w, size_t *completed, size_t *failed_count,
                           size_t *queued)
{
    if (completed)
        *completed = atomic_load(&w->completed);
    if (failed_count)
        *failed_count = atomic_load(&w->failed);
    if (queued)
        *queued = atomic_load_explicit(&w->count, memory_order_acquire); /* release in record() */
}

/* ---- sleeping on a watch (struct block_ops attach/detach) -------------- */

void nursery__watch_wake_at(struct watch *w, size_t completed)
{
    atomic_store(&w->wake_at, completed);
}

void nursery__watch_attach(void *ctx, struct waiter *waiter)
{
    struct watch *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->sleeper = waiter;
    pthread_mutex_unlock(&w->mu);
}

void nursery__watch_detach(void *ctx)
{
    struct watch *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->sleeper = NULL;
    pthread_mutex_unlock(&w->mu);
}

bool nursery__watch_help(struct watch_link *links, size_t n, size_t *cursor)
{
    /* Once round from where the last look stopped: a capture that was not
     * queued then is most likely running or done now. */
    for (size_t k = 0; k < n; k++) {
        size_t i = (*cursor + k) % n;
        if (links[i].linked && nursery__result_help(links[i].result)) {
            *cursor = (i + 1) % n;
            return true;
        }
    }
    return false;
}
