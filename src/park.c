/* SPDX-License-Identifier: MIT */
/*
 * park.c - how a thread blocks in this library: waiters, wait queues, and
 * nursery__block(), the one wait loop behind every blocking call.
 *
 * A waiter lives on the blocked thread's stack.  The objects it waits for
 * (results, nurseries, channels, cancel nodes) keep wait_links to it in
 * wait queues protected by their own locks; a state change signals every
 * linked waiter while holding the object's lock, and a waiter unlinks itself
 * under that same lock before its stack frame goes, so no signal ever
 * reaches a dead waiter.  `signalled` is a latch, so a signal that arrives
 * between the waiter's check and its sleep is not lost.  On Linux the latch
 * is a futex word and signalling takes no lock; elsewhere, and when
 * configured with --disable-futex, a mutex and a condition variable (see
 * struct waiter).
 */
#include "internal.h"
#include "trace.h"

#include <errno.h>

#ifdef NURSERY_FUTEX
#include <sys/syscall.h>
#include <unistd.h>
#ifdef HAVE_LINUX_FUTEX_H
#include <linux/futex.h>
#else
/* The kernel's ABI, for C libraries whose headers lack <linux/futex.h>
 * (musl without the kernel headers). */
#define FUTEX_WAKE 1
#define FUTEX_WAIT_BITSET 9
#define FUTEX_PRIVATE_FLAG 128
#define FUTEX_BITSET_MATCH_ANY 0xffffffff
#endif
#endif

/* ---- waiters ----------------------------------------------------------- */

#ifdef NURSERY_FUTEX

/* The signaller holds the lock of the object the waiter is linked on, so
 * the waiter (which must unlink under that lock) outlives the whole signal,
 * FUTEX_WAKE included.  The woken thread takes no lock at all. */
void nursery__waiter_init(struct waiter *w)
{
    atomic_init(&w->signalled, 0);
}

void nursery__waiter_destroy(struct waiter *w)
{
    (void)w;
}

void nursery__waiter_signal(struct waiter *w)
{
    if (atomic_exchange_explicit(&w->signalled, 1, memory_order_release) == 0)
        syscall(SYS_futex, &w->signalled, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, NULL, NULL, 0);
}

int nursery__waiter_park(struct waiter *w, nursery_time_t deadline)
{
    for (;;) {
        if (atomic_exchange_explicit(&w->signalled, 0, memory_order_acquire))
            return 0;
        if (deadline != NURSERY_FOREVER && nursery_now() >= deadline)
            return ETIMEDOUT;
        /* An absolute CLOCK_MONOTONIC deadline (FUTEX_WAIT_BITSET's
         * default clock).  Woken, timed out, interrupted or the word
         * already set: the loop tells which. */
        struct timespec ts = nursery__timespec(deadline);
        syscall(SYS_futex, &w->signalled, FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG, 0,
                deadline == NURSERY_FOREVER ? NULL : &ts, NULL, FUTEX_BITSET_MATCH_ANY);
    }
}

#else

void nursery__waiter_init(struct waiter *w)
{
    nursery__cond_init_monotonic(&w->cv);
    pthread_mutex_init(&w->mu, NULL);
    w->signalled = false;
}

void nursery__waiter_destroy(struct waiter *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
}

void nursery__waiter_signal(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    w->signalled = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int nursery__waiter_park(struct waiter *w, nursery_time_t deadline)
{
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    if (deadline == NURSERY_FOREVER) {
        while (!w->signalled)
            pthread_cond_wait(&w->cv, &w->mu);
    } else {
        struct timespec ts = nursery__timespec(deadline);
        while (!w->signalled && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    if (w->signalled)
        rc = 0;
    w->signalled = false;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

#endif

/* ---- wait queues ------------------------------------------------------- */

void nursery__waitq_init(struct waitq *q)
{
    list_init(&q->links);
}

void nursery__waitq_add(struct waitq *q, struct wait_link *link, struct waiter *w)
{
    link->waiter = w;
    link->notify = NULL;
    list_push_back(&q->links, &link->node);
}

void nursery__waitq_add_notify(struct waitq *q, struct wait_link *link,
                               void (*notify)(struct wait_link *link))
{
    link->waiter = NULL;
    link->notify = notify;
    list_push_back(&q->links, &link->node);
}

void nursery__waitq_remove(struct wait_link *link)
{
    list_remove(&link->node);
}

void nursery__waitq_wake_all(struct waitq *q)
{
    struct list *pos;
    list_for_each(pos, &q->links) {
        struct wait_link *link = list_entry(pos, struct wait_link, node);
        if (link->notify)
            link->notify(link);
        else
            nursery__waiter_signal(link->waiter);
    }
}

void nursery__wait_one_attach(void *ctx, struct waiter *w)
{
    struct wait_one *one = ctx;
    pthread_mutex_lock(one->mu);
    nursery__waitq_add(one->q, &one->link, w);
    pthread_mutex_unlock(one->mu);
}

void nursery__wait_one_detach(void *ctx)
{
    struct wait_one *one = ctx;
    pthread_mutex_lock(one->mu);
    nursery__waitq_remove(&one->link);
    pthread_mutex_unlock(one->mu);
}

/* ---- the wait loop ----------------------------------------------------- */

/* How long a worker may wait before the pool counts it as blocked. */
#define BLOCK_GRACE_NS INT64_C(1000000)

/* Parks the thread under its innermost cancel node so that cancellation of
 * any enclosing scope wakes it. */
struct cancel_watch {
    struct wait_one one;
    struct cancel_node *node;
};

static void cancel_watch_begin(struct cancel_watch *cw, struct waiter *w)
{
    cw->node = nursery__ctx.node;
    if (!cw->node)
        return;
    nursery__cancel_node_attach(cw->node);
    cw->one = (struct wait_one){.mu = &cw->node->mu, .q = &cw->node->waiters};
    nursery__wait_one_attach(&cw->one, w);
}

static void cancel_watch_end(struct cancel_watch *cw)
{
    if (cw->node)
        nursery__wait_one_detach(&cw->one);
}

/* Whether the wait may stop now: ready, cancelled or past its deadline
 * (in that order: a ready condition wins).  Returns -1 to go on. */
static int wait_outcome(const struct block_ops *ops, void *ctx, nursery_time_t deadline,
                        bool cancellable)
{
    if (ops->ready(ctx))
        return 0;
    if (cancellable && nursery__ctx.node && nursery__cancel_node_cancelled(nursery__ctx.node))
        return nursery__cancel_delivered();
    if (deadline != NURSERY_FOREVER && nursery_now() >= deadline)
        return ETIMEDOUT;
    return -1;
}

/* Shows nursery_dump() what the thread is about to park in (since its
 * first park in this wait: helping in between does not restart it). */
static void show_parked(const struct block_ops *ops, void *ctx, int_fast64_t *since,
                        nursery_time_t deadline)
{
    if (!ops->describe)
        return;
    struct blocked_on b = {0};
    ops->describe(ctx, &b);
    if (*since == 0)
        *since = nursery__coarse_now();
    nursery__trace_block(&b, *since, deadline);
}

/* How long a worker in a join keeps looking for work of the nursery
 * before it parks: what it waits for is most often CPU work on another
 * worker that ends soon or starts tasks it can take, and parking costs a
 * wake-up, tens of microseconds on each side.  Bounded, so that a join
 * waiting for blocked tasks costs next to no CPU. */
#define JOIN_SPIN_NS INT64_C(50000)

/* Whether a helper in a join should look again rather than park: until
 * *spin_end (set at the first call). */
static bool spin_a_little(nursery_time_t *spin_end)
{
    nursery_time_t now = nursery_now();
    if (*spin_end == 0)
        *spin_end = now + JOIN_SPIN_NS;
    if (now >= *spin_end)
        return false;
    for (int i = 0; i < 16; i++)
        nursery__cpu_relax();
    return true;
}

int nursery__block(const struct block_ops *ops, void *ctx, nursery_time_t deadline, int flags)
{
    bool cancellable = !(flags & BLOCK_UNCANCELLABLE);
    /* A cancellation point even when the wait could end at once. */
    if (cancellable && nursery__ctx.node && nursery__cancel_node_cancelled(nursery__ctx.node))
        return nursery__cancel_delivered();
    /* Only pool workers help: their pool may have nobody else to run what
     * they wait for.  Other threads just wait, and stay responsive to their
     * deadline and to cancellation. */
    bool may_help = ops->help && nursery__ctx.worker;
    nursery__pool_wait_depth(1);
    /* Most waits of a worker end by running what they wait for: no waiter
     * is set up until there is nothing left to help with.  The deadline and
     * cancellation are looked at between the tasks it runs. */
    int rc;
    nursery_time_t spin_end = 0;
    while ((rc = wait_outcome(ops, ctx, deadline, cancellable)) < 0)
        if (!may_help || (!ops->help(ctx) && !(ops->joins && spin_a_little(&spin_end))))
            break;
    if (rc >= 0) {
        nursery__pool_wait_depth(-1);
        return rc;
    }

    struct waiter w;
    struct cancel_watch cw;
    nursery__waiter_init(&w);
    ops->attach(ctx, &w);
    if (cancellable)
        cancel_watch_begin(&cw, &w);

    bool replaced = false;
    int_fast64_t parked_since = 0;
    nursery_time_t grace_end = nursery__ctx.worker ? nursery_after_ns(BLOCK_GRACE_NS) : 0;
    /* Registered before looking: a change after this look signals w. */
    while ((rc = wait_outcome(ops, ctx, deadline, cancellable)) < 0) {
        if (may_help && ops->help(ctx))
            continue;
        /* A worker blocked past a grace period counts as blocked (the
         * monitor may add a thread for it); short waits, like a join whose
         * last task is finishing on another CPU, must not grow the pool. */
        if (!replaced && nursery__ctx.worker && nursery_now() >= grace_end) {
            nursery__pool_block_enter(ops->joins);
            replaced = true;
        }
        nursery__pool_park_mark(1);
        show_parked(ops, ctx, &parked_since, deadline);
        nursery__waiter_park(&w, replaced || !nursery__ctx.worker || deadline < grace_end
                                     ? deadline
                                     : grace_end);
        nursery__trace_unblock();
        nursery__pool_park_mark(-1);
    }
    if (replaced)
        nursery__pool_block_leave(ops->joins);

    if (cancellable)
        cancel_watch_end(&cw);
    ops->detach(ctx);
    nursery__waiter_destroy(&w);
    nursery__pool_wait_depth(-1);
    return rc;
}
