/* SPDX-License-Identifier: MIT */
/*
 * deque.h - a fixed-size work-stealing deque (Chase-Lev, after Lê, Pop,
 * Cohen and Zappa Nardelli, "Correct and efficient work-stealing for weak
 * memory models", PPoPP 2013).
 *
 * The owner pushes and takes at the bottom (LIFO, hot in its cache);
 * thieves steal at the top (FIFO, the oldest and usually largest work).
 * Only the owner writes slots, and only below the top that thieves have not
 * passed, so a slot is never overwritten while a thief may still claim it:
 * a full deque refuses the push and the caller queues the task elsewhere.
 *
 * The Dekker-style race between the owner's take and a thief's steal on
 * the last element is settled with seq_cst accesses to top and bottom
 * rather than standalone fences, which ThreadSanitizer does not model.
 * Each slot also carries a key (the task's nursery) that helpers compare
 * without touching the task, which another thread may have just claimed.
 */
#ifndef NURSERY_DEQUE_H
#define NURSERY_DEQUE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct task;

#define DEQUE_CAPACITY 4096 /* a power of two */

struct deque_slot {
    _Atomic(struct task *) task;
    _Atomic(const void *) key;
};

struct deque {
    _Alignas(64) atomic_int_fast64_t top;    /* next to steal; thieves CAS it */
    _Alignas(64) atomic_int_fast64_t bottom; /* next free; written by the owner */
    struct deque_slot slots[DEQUE_CAPACITY];
};

static inline struct deque_slot *deque_slot(struct deque *d, int_fast64_t i)
{
    return &d->slots[i & (DEQUE_CAPACITY - 1)];
}

static inline void deque_init(struct deque *d)
{
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
}

/* Owner only.  Returns 0, or -1 when full. */
static inline int deque_push(struct deque *d, struct task *t, const void *key)
{
    int_fast64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    int_fast64_t top = atomic_load_explicit(&d->top, memory_order_acquire);
    if (b - top >= DEQUE_CAPACITY)
        return -1;
    struct deque_slot *s = deque_slot(d, b);
    atomic_store_explicit(&s->task, t, memory_order_relaxed);
    atomic_store_explicit(&s->key, key, memory_order_relaxed);
    /* Publishes the slot and the task's contents to thieves. */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_seq_cst);
    return 0;
}

/* Owner only: the newest task, or NULL. */
static inline struct task *deque_take(struct deque *d)
{
    int_fast64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    atomic_store_explicit(&d->bottom, b, memory_order_seq_cst);
    int_fast64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    if (t > b) {
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return NULL;
    }
    struct task *x = atomic_load_explicit(&deque_slot(d, b)->task, memory_order_relaxed);
    if (t == b) {
        /* The last one: race the thieves for it. */
        if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                     memory_order_relaxed))
            x = NULL;
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    }
    return x;
}

/* Owner only: the newest task if its key is `key`, else NULL. */
static inline struct task *deque_take_if(struct deque *d, const void *key)
{
    int_fast64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    if (b < atomic_load_explicit(&d->top, memory_order_acquire))
        return NULL;
    if (atomic_load_explicit(&deque_slot(d, b)->key, memory_order_relaxed) != key)
        return NULL;
    /* Only a thief can interfere now, and only by taking it first. */
    return deque_take(d);
}

/* Any thread: the oldest task, if `key` is NULL or matches; NULL when
 * empty, not matching, or another thief won the race. */
static inline struct task *deque_steal(struct deque *d, const void *key)
{
    int_fast64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    int_fast64_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    if (t >= b)
        return NULL;
    struct deque_slot *s = deque_slot(d, t);
    struct task *x = atomic_load_explicit(&s->task, memory_order_relaxed);
    if (key && atomic_load_explicit(&s->key, memory_order_relaxed) != key)
        return NULL;
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return NULL;
    return x;
}

/* Any thread, approximate: tasks in the deque. */
static inline int_fast64_t deque_size(struct deque *d)
{
    int_fast64_t n = atomic_load_explicit(&d->bottom, memory_order_relaxed) -
                     atomic_load_explicit(&d->top, memory_order_relaxed);
    return n > 0 ? n : 0;
}

#endif
