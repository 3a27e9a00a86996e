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
    w->wake_at = 0;
    w->sleeper = NULL;
}

void nursery__watch_destroy(struct watch *w)
{
    pthread_mutex_destroy(&w->mu);
}

/* Records the completion of l's result; the watch's lock is held. */
static void record_locked(struct watch *w, struct watch_link *l)
{
    bool failed = nursery__result_failed(l->result);
    if (w->queue) {
        size_t count = atomic_load_explicit(&w->count, memory_order_relaxed);
        w->queue[(w->head + count) % w->capacity] = l->index;
        atomic_store_explicit(&w->count, count + 1, memory_order_release);
    }
    if (failed)
        atomic_fetch_add_explicit(&w->failed, 1, memory_order_release);
    size_t completed = atomic_fetch_add_explicit(&w->completed, 1, memory_order_release) + 1;
    /* A sleeper that waits for a batch is woken once, not once per result:
     * a system call and a context switch saved per completion. */
    if (w->sleeper && (completed >= w->wake_at || failed))
        nursery__waiter_signal(w->sleeper);
}

/* Called by the result's completion, under its lock. */
static void notify(struct wait_link *link)
{
    struct watch_link *l = (struct watch_link *)link;
    pthread_mutex_lock(&l->watch->mu);
    record_locked(l->watch, l);
    pthread_mutex_unlock(&l->watch->mu);
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
        pthread_mutex_lock(&w->mu);
        record_locked(w, l);
        pthread_mutex_unlock(&w->mu);
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

size_t nursery__watch_take(struct watch *w, size_t *out, size_t max)
{
    if (atomic_load_explicit(&w->count, memory_order_relaxed) == 0)
        return 0; /* only the owner takes: an empty queue needs no lock */
    pthread_mutex_lock(&w->mu);
    size_t count = atomic_load_explicit(&w->count, memory_order_relaxed);
    size_t k = count < max ? count : max;
    for (size_t i = 0; i < k; i++)
        out[i] = w->queue[(w->head + i) % w->capacity];
    w->head = (w->head + k) % w->capacity;
    atomic_store_explicit(&w->count, count - k, memory_order_relaxed);
    pthread_mutex_unlock(&w->mu);
    return k;
}

bool nursery__watch_pop(struct watch *w, size_t *index)
{
    return nursery__watch_take(w, index, 1) == 1;
}

/* Read without the lock (acquire: what the completions recorded before
 * counting is seen). */
void nursery__watch_counts(struct watch *w, size_t *completed, size_t *failed_count,
                           size_t *queued)
{
    if (completed)
        *completed = atomic_load_explicit(&w->completed, memory_order_acquire);
    if (failed_count)
        *failed_count = atomic_load_explicit(&w->failed, memory_order_acquire);
    if (queued)
        *queued = atomic_load_explicit(&w->count, memory_order_acquire);
}

/* ---- sleeping on a watch (struct block_ops attach/detach) -------------- */

void nursery__watch_wake_at(struct watch *w, size_t completed)
{
    pthread_mutex_lock(&w->mu);
    w->wake_at = completed;
    pthread_mutex_unlock(&w->mu);
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
