/* SPDX-License-Identifier: MIT */
/*
 * scope.c - cancel scopes (Trio's CancelScope, move_on_after, fail_after),
 * the effective deadline, and cancel hooks' public face.
 *
 * A scope is a cancel node owned by one thread, pushed on that thread's
 * context at open and popped at close, so everything the thread does in
 * between (its waits, the nurseries it opens and their tasks) hangs below
 * it in the cancel tree.  A shielded scope is a root of the tree: no walk
 * from above reaches it (see cancel.c).
 *
 * Its deadline is a timer entry (timer.c): the deadline thread cancels the
 * scope when it passes.  s->mu orders the three things that can end a
 * scope's life as something cancellable: cancel, the deadline firing, and
 * close.  Each marks the scope under it, so that close's report agrees
 * with what nursery_scope_cancel() returned: a cancel that returned 0 is
 * reported as CANCEL_CALLED, one that returned NURSERY_ECLOSED is not.
 * The walk itself (which runs hooks, which may call back into the scope)
 * runs after the lock is let go.
 *
 * Who catches a cancellation (NURSERY_SCOPE_CANCELLED_CAUGHT): the thread
 * counts the ECANCELED its cancellation points return
 * (nursery__cancel_delivered); a scope that sees the count moved since it
 * opened, was cancelled itself, and has no cancelled enclosing scope
 * that can see through to it, caught them, and takes them off the count,
 * so that enclosing scopes do not catch them again.  That is Trio's rule:
 * the outermost cancelled scope catches.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

struct nursery_scope {
    struct cancel_node node;   /* parent = the opener's node at open */
    struct cancel_node *outer; /* the opener's node, restored at close */
    struct timer_entry expiry;
    pthread_t owner;
    unsigned flags;            /* NURSERY_SCOPE_* */
    unsigned generation;       /* fork generation at open (see context.c) */
    uint64_t delivered_at_open; /* the owner's nursery__ctx.cancels_delivered */
    atomic_int refs;           /* the owner's until close, plus nursery_scope_retain() */
    atomic_bool armed;         /* a deadline was ever armed: disarm before freeing */
    pthread_mutex_t mu;        /* closed, cancel_called, expired */
    bool closed;
    atomic_bool cancel_called;
    atomic_bool expired;
};

#define SCOPE_FLAGS (NURSERY_SCOPE_SHIELD | NURSERY_SCOPE_FAIL_ON_DEADLINE)

/* Marks the scope cancelled (by its deadline when `expired`) unless it is
 * closed, then cancels its subtree.  Returns NURSERY_ECLOSED or 0. */
static int cancel_scope(nursery_scope_t *s, bool expired)
{
    pthread_mutex_lock(&s->mu);
    bool closed = s->closed;
    if (!closed) {
        atomic_store_explicit(&s->cancel_called, true, memory_order_relaxed);
        if (expired)
            atomic_store_explicit(&s->expired, true, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->mu);
    if (closed)
        return NURSERY_ECLOSED;
    nursery__cancel_node_cancel(&s->node);
    return 0;
}

/* In the deadline thread.  A deadline moved later after the entry was
 * taken for firing is not passed yet: it is armed again by then. */
static void expire(struct timer_entry *e)
{
    nursery_scope_t *s = (nursery_scope_t *)((char *)e - offsetof(nursery_scope_t, expiry));
    if (nursery_now() >= atomic_load_explicit(&s->node.deadline, memory_order_acquire))
        cancel_scope(s, true);
}

/* Sets the deadline: arms it, or cancels at once when it has passed
 * (NURSERY_ECLOSED when the scope was closed meanwhile). */
static int set_deadline(nursery_scope_t *s, nursery_time_t deadline)
{
    atomic_store_explicit(&s->node.deadline, deadline, memory_order_release);
    if (deadline == NURSERY_FOREVER) {
        if (atomic_load_explicit(&s->armed, memory_order_acquire))
            nursery__timer_disarm(&s->expiry);
        return 0;
    }
    if (nursery_now() >= deadline)
        return cancel_scope(s, true);
    atomic_store_explicit(&s->armed, true, memory_order_release);
    return nursery__timer_arm(&s->expiry, deadline);
}

int nursery_scope_open(nursery_scope_t **out, nursery_time_t deadline, unsigned flags)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    if (flags & ~(unsigned)SCOPE_FLAGS)
        return EINVAL;
    nursery_scope_t *s = calloc(1, sizeof(*s));
    if (!s)
        return ENOMEM;
    s->outer = nursery__ctx.node;
    s->owner = pthread_self();
    s->flags = flags;
    s->generation = nursery__generation();
    s->delivered_at_open = nursery__ctx.cancels_delivered;
    s->expiry.fire = expire;
    atomic_init(&s->refs, 1);
    atomic_init(&s->armed, false);
    atomic_init(&s->cancel_called, false);
    atomic_init(&s->expired, false);
    pthread_mutex_init(&s->mu, NULL);
    nursery__cancel_node_open(&s->node, s->outer, NODE_SCOPE, flags & NURSERY_SCOPE_SHIELD);
    int rc = deadline == NURSERY_FOREVER ? 0 : set_deadline(s, deadline);
    if (rc) {
        nursery__timer_disarm(&s->expiry);
        nursery__cancel_node_fini(&s->node);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return rc;
    }
    nursery__ctx.node = &s->node;
    *out = s;
    return 0;
}

/* What close reports, and takes a caught cancellation off the count. */
static unsigned outcome_of(nursery_scope_t *s)
{
    unsigned o = 0;
    if (atomic_load_explicit(&s->cancel_called, memory_order_relaxed))
        o |= NURSERY_SCOPE_CANCEL_CALLED;
    if (atomic_load_explicit(&s->expired, memory_order_relaxed))
        o |= NURSERY_SCOPE_DEADLINE_PASSED;
    bool delivered = nursery__ctx.cancels_delivered != s->delivered_at_open;
    bool outer_sees = !s->node.shield && s->outer && nursery__cancel_node_cancelled(s->outer);
    if (delivered && (o & NURSERY_SCOPE_CANCEL_CALLED) && !outer_sees) {
        o |= NURSERY_SCOPE_CANCELLED_CAUGHT;
        nursery__ctx.cancels_delivered = s->delivered_at_open;
    }
    return o;
}

int nursery_scope_close(nursery_scope_t *s, unsigned *outcome)
{
    if (outcome)
        *outcome = 0;
    if (!s)
        return EINVAL;
    if (nursery__forked(s->generation))
        return NURSERY_EFORKED;
    if (nursery__ctx.node != &s->node || !pthread_equal(s->owner, pthread_self()))
        return EINVAL;
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    pthread_mutex_unlock(&s->mu);
    if (atomic_load_explicit(&s->armed, memory_order_acquire))
        nursery__timer_disarm(&s->expiry);
    unsigned o = outcome_of(s);
    nursery__ctx.node = s->outer;
    nursery__cancel_node_detach(&s->node); /* before the outer node can go */
    if (outcome)
        *outcome = o;
    bool timed_out = (s->flags & NURSERY_SCOPE_FAIL_ON_DEADLINE) &&
                     (o & NURSERY_SCOPE_CANCELLED_CAUGHT) && (o & NURSERY_SCOPE_DEADLINE_PASSED);
    nursery_scope_release(s);
    return timed_out ? ETIMEDOUT : 0;
}

/* The checks of every call on a scope from any thread. */
static int usable(const nursery_scope_t *s)
{
    if (!s)
        return EINVAL;
    return nursery__forked(s->generation) ? NURSERY_EFORKED : 0;
}

int nursery_scope_cancel(nursery_scope_t *s)
{
    int rc = usable(s);
    return rc ? rc : cancel_scope(s, false);
}

int nursery_scope_set_deadline(nursery_scope_t *s, nursery_time_t deadline)
{
    int rc = usable(s);
    if (rc)
        return rc;
    /* Checked, then set without the lock (arming may wait for the
     * deadline thread): a close in between is harmless, since whatever is
     * armed is disarmed when the last reference goes, and a firing after
     * close finds the scope closed. */
    pthread_mutex_lock(&s->mu);
    bool closed = s->closed;
    pthread_mutex_unlock(&s->mu);
    if (closed)
        return NURSERY_ECLOSED;
    nursery_time_t old = atomic_load_explicit(&s->node.deadline, memory_order_relaxed);
    rc = set_deadline(s, deadline);
    if (rc == ENOMEM || rc == EAGAIN)
        atomic_store_explicit(&s->node.deadline, old, memory_order_release);
    return rc;
}

nursery_time_t nursery_scope_deadline(const nursery_scope_t *s)
{
    return s ? atomic_load_explicit(&s->node.deadline, memory_order_acquire) : NURSERY_FOREVER;
}

bool nursery_scope_cancel_called(const nursery_scope_t *s)
{
    return s && atomic_load_explicit(&s->cancel_called, memory_order_relaxed);
}

nursery_scope_t *nursery_scope_retain(nursery_scope_t *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void nursery_scope_release(nursery_scope_t *s)
{
    if (!s || nursery__forked(s->generation))
        return;
    nursery__hb_release(s); /* the acq_rel below, for TSan (see annotate.h) */
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    nursery__hb_acquire(s);
    if (atomic_load_explicit(&s->armed, memory_order_acquire))
        nursery__timer_disarm(&s->expiry);
    nursery__cancel_node_fini(&s->node);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- the effective deadline -------------------------------------------- */

nursery_time_t nursery_current_deadline(void)
{
    nursery_time_t earliest = NURSERY_FOREVER;
    for (struct cancel_node *n = nursery__ctx.node; n;
         n = atomic_load_explicit(&n->parent, memory_order_acquire)) {
        nursery_time_t d = atomic_load_explicit(&n->deadline, memory_order_acquire);
        if (d < earliest)
            earliest = d;
        if (n->shield)
            break;
    }
    return earliest;
}

/* ---- cancel hooks ------------------------------------------------------ */

struct nursery_cancel_hook {
    struct cancel_hook hook;
};

int nursery_on_cancel(void (*fn)(void *arg), void *arg, nursery_cancel_hook_t **out)
{
    if (out)
        *out = NULL;
    if (!fn || !out || !nursery__ctx.node)
        return EINVAL;
    nursery_cancel_hook_t *h = malloc(sizeof(*h));
    if (!h)
        return ENOMEM;
    *out = h; /* before fn may run: it may look at it */
    nursery__cancel_hook_add(&h->hook, fn, arg);
    return 0;
}

int nursery_cancel_hook_remove(nursery_cancel_hook_t *h, bool *ran)
{
    if (ran)
        *ran = false;
    if (!h)
        return EINVAL;
    if (nursery__cancel_hook_running_here(&h->hook))
        return EINVAL;
    bool did = nursery__cancel_hook_remove(&h->hook);
    if (ran)
        *ran = did;
    free(h);
    return 0;
}
