/*
 * cancel.c - the cancel tree, and the cancellation points that are not tied
 * to another object (checkpoint, sleep).
 *
 * Every task and every nursery has a cancel node.  A nursery's node hangs
 * under the node of the code that opened it (a task, or an enclosing
 * nursery's body); a task's node hangs under its nursery's node.  Being
 * cancelled is inherited: a node is cancelled when it or any ancestor is, so
 * nursery_cancelled() walks up and cancellation never has to visit
 * thousands of queued tasks.
 *
 * Waking is the other half: a thread parked in the library is linked on its
 * innermost node's waiters, and nodes that may have parked threads below
 * them are attached to their parents.  nursery__cancel_node_cancel() sets the flag,
 * then walks the attached subtree under each node's lock, parent before
 * child, and signals every parked thread.  A node is attached before its
 * thread parks and the flag is checked after, so a cancellation either sees
 * the attachment or is seen by the check (both go through the parent's
 * lock), and no wake-up is lost.
 */
#include "internal.h"

#include <errno.h>

void nursery__cancel_node_init(struct cancel_node *n, struct cancel_node *parent)
{
    atomic_init(&n->parent, parent);
    atomic_init(&n->cancelled, false);
    atomic_init(&n->attached, false);
    pthread_mutex_init(&n->mu, NULL);
    list_init(&n->children);
    list_init(&n->sibling);
    nursery__waitq_init(&n->waiters);
}

/* The canceller of the parent may have detached n already (see
 * nursery__cancel_node_cancel), and then no longer touches it. */
static void cancel_node_detach(struct cancel_node *n)
{
    if (!atomic_load_explicit(&n->attached, memory_order_acquire))
        return;
    struct cancel_node *parent = atomic_load_explicit(&n->parent, memory_order_relaxed);
    pthread_mutex_lock(&parent->mu);
    if (atomic_load_explicit(&n->attached, memory_order_relaxed)) {
        list_remove(&n->sibling);
        atomic_store_explicit(&n->attached, false, memory_order_relaxed);
    }
    pthread_mutex_unlock(&parent->mu);
}

void nursery__cancel_node_fini(struct cancel_node *n)
{
    cancel_node_detach(n);
    pthread_mutex_destroy(&n->mu);
}

void nursery__cancel_node_attach(struct cancel_node *n)
{
    struct cancel_node *parent = atomic_load_explicit(&n->parent, memory_order_relaxed);
    if (!parent || atomic_load_explicit(&n->attached, memory_order_acquire))
        return;
    pthread_mutex_lock(&parent->mu);
    if (!atomic_load_explicit(&n->attached, memory_order_relaxed)) {
        list_push_back(&parent->children, &n->sibling);
        atomic_store_explicit(&n->attached, true, memory_order_relaxed);
    }
    pthread_mutex_unlock(&parent->mu);
}

/* Attached under the new parent whatever the node was before: a canceller
 * of the old parent may have detached it, while nurseries opened under it
 * still need the path up. */
void nursery__cancel_node_reparent(struct cancel_node *n, struct cancel_node *parent)
{
    cancel_node_detach(n);
    atomic_store_explicit(&n->parent, parent, memory_order_release);
    nursery__cancel_node_attach(n);
}

bool nursery__cancel_node_cancelled(struct cancel_node *n)
{
    for (; n; n = atomic_load_explicit(&n->parent, memory_order_acquire))
        if (atomic_load_explicit(&n->cancelled, memory_order_acquire))
            return true;
    return false;
}

/* Signals every thread parked in the subtree.  Holds each node's lock while
 * visiting its children, so a child cannot detach (and be freed) meanwhile. */
static void wake_subtree(struct cancel_node *n)
{
    pthread_mutex_lock(&n->mu);
    nursery__waitq_wake_all(&n->waiters);
    struct list *pos;
    list_for_each(pos, &n->children)
        wake_subtree(list_entry(pos, struct cancel_node, sibling));
    pthread_mutex_unlock(&n->mu);
}

/* The direct children are detached on the way: nothing below a cancelled
 * node needs waking again (whoever parks there sees the flag first), so the
 * thousand tasks just woken end without queueing on n's lock.  Only direct
 * children: one of them stays cancelled unless it moves (reparent attaches
 * it again), while a deeper node would become uncancelled, and unreachable,
 * if a node between moved. */
void nursery__cancel_node_cancel(struct cancel_node *n)
{
    if (atomic_exchange_explicit(&n->cancelled, true, memory_order_acq_rel))
        return;
    pthread_mutex_lock(&n->mu);
    nursery__waitq_wake_all(&n->waiters);
    struct list *pos = n->children.next;
    while (pos != &n->children) {
        struct cancel_node *child = list_entry(pos, struct cancel_node, sibling);
        pos = pos->next;
        wake_subtree(child);
        list_remove(&child->sibling);
        /* The last touch: its owner may free it as soon as it sees this. */
        atomic_store_explicit(&child->attached, false, memory_order_release);
    }
    pthread_mutex_unlock(&n->mu);
}

/* ---- cancellation points ----------------------------------------------- */

bool nursery_cancelled(void)
{
    return nursery__cancel_node_cancelled(nursery__ctx.node);
}

int nursery_checkpoint(void)
{
    return nursery_cancelled() ? ECANCELED : 0;
}

/* A sleep waits for nothing but its deadline and cancellation. */
static bool never_ready(void *ctx)
{
    (void)ctx;
    return false;
}

static void attach_nothing(void *ctx, struct waiter *w)
{
    (void)ctx;
    (void)w;
}

static void detach_nothing(void *ctx)
{
    (void)ctx;
}

static const struct block_ops sleep_ops = {
    .ready = never_ready,
    .attach = attach_nothing,
    .detach = detach_nothing,
};

int nursery_sleep(nursery_time_t deadline)
{
    int rc = nursery__block(&sleep_ops, NULL, deadline, 0);
    return rc == ETIMEDOUT ? 0 : rc;
}
