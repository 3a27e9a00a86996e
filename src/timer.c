/* SPDX-License-Identifier: MIT */
/*
 * timer.c - the deadline thread: fires the deadlines of scopes and
 * nurseries on time, whatever the threads under them are doing.
 *
 * A deadline cannot be left to the threads it cancels: they may be blocked
 * outside the library (in read(), waiting for a cancel hook to wake them),
 * or running code that never waits.  One thread per process keeps every
 * armed deadline in a binary min-heap and sleeps until the earliest; it is
 * started the first time a deadline is armed, and stopped at exit.
 *
 * An entry's fire() runs in the deadline thread without the heap's lock,
 * so that it may cancel (which runs cancel hooks).  Disarming waits while
 * the entry is being fired, so that its owner may free it at once after;
 * an entry fired by the calling thread itself (a hook that moves the
 * deadline it was fired by) does not wait for itself.
 *
 * fork(): the child has no deadline thread and none of the parent's
 * entries (they belong to objects the child cannot use): the child
 * handler empties the heap, and the next arm starts a thread there.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static struct {
    pthread_mutex_t mu;
    pthread_cond_t changed;          /* the earliest deadline changed, or stop */
    pthread_cond_t fired;            /* `firing` was done with */
    struct timer_entry **heap;       /* min-heap on `when`; entry->index = slot + 1 */
    size_t len, cap;
    struct timer_entry *firing;      /* the entry whose fire() runs now */
    pthread_t thread, firing_thread; /* firing_thread: valid while firing */
    bool running, stop;
} timer = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
};

static pthread_once_t timer_once = PTHREAD_ONCE_INIT;

/* ---- the heap (timer.mu) ----------------------------------------------- */

static void heap_set(size_t i, struct timer_entry *e)
{
    timer.heap[i] = e;
    e->index = i + 1;
}

static void sift_up(size_t i)
{
    struct timer_entry *e = timer.heap[i];
    while (i > 0 && timer.heap[(i - 1) / 2]->when > e->when) {
        heap_set(i, timer.heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(i, e);
}

static void sift_down(size_t i)
{
    struct timer_entry *e = timer.heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= timer.len)
            break;
        if (c + 1 < timer.len && timer.heap[c + 1]->when < timer.heap[c]->when)
            c++;
        if (timer.heap[c]->when >= e->when)
            break;
        heap_set(i, timer.heap[c]);
        i = c;
    }
    heap_set(i, e);
}

static void heap_remove(struct timer_entry *e)
{
    size_t i = e->index - 1;
    e->index = 0;
    struct timer_entry *last = timer.heap[--timer.len];
    if (i == timer.len)
        return;
    heap_set(i, last);
    sift_down(i);
    sift_up(last->index - 1);
}

/* ---- the thread -------------------------------------------------------- */

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&timer.mu);
    while (!timer.stop) {
        if (timer.len == 0) {
            pthread_cond_wait(&timer.changed, &timer.mu);
            continue;
        }
        struct timer_entry *e = timer.heap[0];
        if (nursery_now() < e->when) {
            struct timespec ts = nursery__timespec(e->when);
            pthread_cond_timedwait(&timer.changed, &timer.mu, &ts);
            continue;
        }
        heap_remove(e);
        timer.firing = e;
        timer.firing_thread = pthread_self();
        pthread_mutex_unlock(&timer.mu);
        e->fire(e);
        pthread_mutex_lock(&timer.mu);
        timer.firing = NULL;
        pthread_cond_broadcast(&timer.fired);
    }
    pthread_mutex_unlock(&timer.mu);
    return NULL;
}

/* At exit, the thread is stopped and joined, so that a leak checker finds
 * nothing of it (its stack and thread-local storage). */
static void stop_at_exit(void)
{
    pthread_mutex_lock(&timer.mu);
    bool join = timer.running && !pthread_equal(timer.thread, pthread_self());
    timer.stop = true;
    pthread_cond_signal(&timer.changed);
    pthread_mutex_unlock(&timer.mu);
    if (join)
        pthread_join(timer.thread, NULL);
}

static void after_fork_in_child(void)
{
    /* A single thread now: the parent's threads may have left these held
     * or waited on; they are made anew. */
    pthread_mutex_init(&timer.mu, NULL);
    nursery__cond_init_monotonic(&timer.changed);
    nursery__cond_init_monotonic(&timer.fired);
    for (size_t i = 0; i < timer.len; i++)
        timer.heap[i]->index = 0;
    timer.len = 0;
    timer.firing = NULL;
    timer.running = false;
}

static void timer_setup(void)
{
    nursery__cond_init_monotonic(&timer.changed);
    nursery__cond_init_monotonic(&timer.fired);
    pthread_atfork(NULL, NULL, after_fork_in_child);
    atexit(stop_at_exit);
}

/* Starts the thread if need be (timer.mu held). */
static int start_locked(void)
{
    if (timer.running)
        return 0;
    if (timer.stop)
        return EAGAIN; /* exiting */
    if (pthread_create(&timer.thread, NULL, timer_main, NULL) != 0)
        return EAGAIN;
#ifdef HAVE_PTHREAD_SETNAME_NP
    pthread_setname_np(timer.thread, "nursery-timer");
#endif
    timer.running = true;
    return 0;
}

/* ---- arming ------------------------------------------------------------ */

int nursery__timer_arm(struct timer_entry *e, nursery_time_t when)
{
    pthread_once(&timer_once, timer_setup);
    pthread_mutex_lock(&timer.mu);
    int rc = start_locked();
    if (rc == 0 && !e->index && timer.len == timer.cap) {
        size_t cap = timer.cap ? 2 * timer.cap : 64;
        struct timer_entry **heap = realloc(timer.heap, cap * sizeof(*heap));
        if (heap) {
            timer.heap = heap;
            timer.cap = cap;
        } else {
            rc = ENOMEM;
        }
    }
    if (rc == 0) {
        e->when = when;
        if (e->index) {
            sift_up(e->index - 1);
            sift_down(e->index - 1);
        } else {
            timer.heap[timer.len++] = e;
            e->index = timer.len;
            sift_up(timer.len - 1);
        }
        if (timer.heap[0] == e)
            pthread_cond_signal(&timer.changed);
    }
    pthread_mutex_unlock(&timer.mu);
    return rc;
}

bool nursery__timer_disarm(struct timer_entry *e)
{
    pthread_once(&timer_once, timer_setup);
    pthread_mutex_lock(&timer.mu);
    bool removed = e->index != 0;
    if (removed)
        heap_remove(e);
    while (timer.firing == e && !pthread_equal(timer.firing_thread, pthread_self()))
        pthread_cond_wait(&timer.fired, &timer.mu);
    pthread_mutex_unlock(&timer.mu);
    return removed;
}
