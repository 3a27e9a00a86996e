/* SPDX-License-Identifier: MIT */
/*
 * cancel.c - the cancel tree, and the cancellation points that are not tied
 * to another object (checkpoint, sleep).
 *
 * Every task, nursery and cancel scope has a cancel node.  A nursery's or
 * a scope's node hangs under the node of the code that opened it (a task,
 * an enclosing nursery's body, a scope); a task's node hangs under its
 * nursery's node.  A node is cancelled when it or any ancestor is (up to
 * a shielded one).
 *
 * Attaching.  Nodes that have a thread parked under them, or a hook, are
 * attached: linked in their parent's `children`, parent first (a node
 * attaches its unattached ancestors before itself).  Everything else stays
 * unattached until then: queued and running tasks, and the nurseries and
 * scopes they open, so that a fork point (open, two starts, join) takes no
 * lock of the tree, and cancelling never visits thousands of tasks.
 *
 * Cancelling sets the node's own flag, then walks its attached subtree and,
 * at each node, under that node's lock, sets `inherited` and signals the
 * threads parked there.  So an attached node knows of its ancestors'
 * cancellation, and cancelled() stops at the first attached node it meets
 * on its way up (or at a flag).  A node attaching under a parent copies the
 * parent's flags under the parent's lock: either the walk has been there
 * (the copy sees it) or it has not (the walk will see the new child).  A
 * thread attaches and links its waiter before it checks the flags, so a
 * cancellation either finds the waiter or is seen by the check, and no
 * wake-up is lost.
 *
 * The epoch.  What keeps checks short under unattached nodes is a count of
 * the changes that can cancel a node without touching it: `cancel_epoch`
 * goes up when a walk begins and again when it ends, and when a node moves
 * (reparent).  A nursery's or scope's node opened unattached looks at its
 * ancestors once, at open: if one is cancelled it copies that into
 * `inherited`, else it notes the epoch in `clean_at`.  While the epoch has
 * not moved, nothing above it can have been cancelled since, and
 * cancelled() stops there.  A check made during a walk may stop at a mark
 * taken before the walk reached the nodes above (the walk is not done
 * yet); the rise at the walk's end makes every such mark stale.  So a check
 * costs a few steps when nothing was cancelled since the open, and at most
 * MAX_UNATTACHED (plus the tasks in between) otherwise: a node opened
 * under a longer unattached way up attaches at once.
 *
 * The walk holds one lock at a time and uses constant stack, whatever the
 * depth.  To let go of a parent's lock while it visits a child's subtree,
 * it pins the child (`pins`, under the parent's lock): a pinned child stays
 * linked, so its `sibling` link still leads to the next child when the walk
 * comes back, and its `parent` leads back up.  Whoever detaches a node
 * (its owner, at the end of its task or at join) waits until it is
 * unpinned.  The walk also detaches the direct children of the node it
 * cancels, so a thousand tasks woken by one cancel end without queueing on
 * its lock; deeper nodes stay attached, since a node between them may move.
 *
 * Hooks (nursery_on_cancel, and nursery_poll's wake-up) hang on a node,
 * which is attached first.  Whoever cancels runs them: the walk, at each
 * node it visits, runs its pending hooks without holding its lock (the
 * node is pinned or is the walk's root), one at a time, so a hook may call
 * into the library; a remover waits while one runs.
 *
 * A shielded node (a NURSERY_SCOPE_SHIELD scope) is a root: it is never
 * linked under its parent, so no walk from above reaches it, and
 * cancelled() stops there.
 *
 * Moving (nursery_started() moves a task from its starter to its nursery)
 * keeps a node cancelled if it was cancelled where it was: its own flag is
 * set, so what the walk told its subtree stays true.
 */
#include "internal.h"
#include "probes.h"

#include <errno.h>

/* Unattached nodes a nursery's or scope's node may have above it: the
 * bound on a check's walk up when the epoch moved, and on attaching. */
#define MAX_UNATTACHED 64

/* Starts at 1: a node's clean_at of 0 never matches. */
static _Atomic uint64_t cancel_epoch = 1;

static void epoch_advance(void)
{
    atomic_fetch_add_explicit(&cancel_epoch, 1, memory_order_acq_rel);
}

void nursery__cancel_node_init(struct cancel_node *n, struct cancel_node *parent)
{
    n->kind = NODE_TASK;
    n->shield = false;
    n->hops = 0;
    n->clean_at = 0;
    atomic_init(&n->deadline, NURSERY_FOREVER);
    list_init(&n->hooks);
    atomic_init(&n->parent, parent);
    atomic_init(&n->cancelled, false);
    atomic_init(&n->inherited, false);
    atomic_init(&n->attached, false);
    n->pins = 0;
    n->unpinned = NULL;
    pthread_mutex_init(&n->mu, NULL);
    list_init(&n->children);
    list_init(&n->sibling);
    nursery__waitq_init(&n->waiters);
}

static struct cancel_node *parent_of(struct cancel_node *n)
{
    return atomic_load_explicit(&n->parent, memory_order_acquire);
}

/* Cancelled itself, or told so by a walk (or a copy at attach). */
static bool flagged(struct cancel_node *n)
{
    return atomic_load_explicit(&n->cancelled, memory_order_acquire) ||
           atomic_load_explicit(&n->inherited, memory_order_acquire);
}

bool nursery__cancel_node_cancelled(struct cancel_node *n)
{
    uint64_t epoch = atomic_load_explicit(&cancel_epoch, memory_order_acquire);
    for (; n; n = parent_of(n)) {
        if (flagged(n))
            return true;
        /* An attached node has heard of every cancellation above it; a
         * shielded one hears of none; one whose mark is current has had
         * none above it since it was opened. */
        if (atomic_load_explicit(&n->attached, memory_order_acquire) || n->shield ||
            n->clean_at == epoch)
            return false;
    }
    return false;
}

/* ---- attaching and detaching ------------------------------------------- */

/* Links n under its parent, which is attached, a root, or flagged. */
static void attach_one(struct cancel_node *n, struct cancel_node *parent)
{
    pthread_mutex_lock(&parent->mu);
    if (!atomic_load_explicit(&n->attached, memory_order_relaxed)) {
        list_push_back(&parent->children, &n->sibling);
        if (flagged(parent))
            atomic_store_explicit(&n->inherited, true, memory_order_relaxed);
        atomic_store_explicit(&n->attached, true, memory_order_release);
    }
    pthread_mutex_unlock(&parent->mu);
}

/* Whether a node can take children as it is: attached, a root (a shielded
 * node is one: nothing above reaches it), or known to be cancelled (then a
 * child learns it from the copy at attach). */
static bool anchored(struct cancel_node *n)
{
    return !parent_of(n) || n->shield ||
           atomic_load_explicit(&n->attached, memory_order_acquire) || flagged(n);
}

/* Unattached nodes from x up to the first that can take children, counted
 * up to MAX_UNATTACHED: a nursery's or scope's node opened unattached knows
 * its count as of then. */
static unsigned unattached_above(struct cancel_node *x)
{
    unsigned hops = 0;
    for (; x && !anchored(x) && hops < MAX_UNATTACHED; x = parent_of(x)) {
        if (x->kind != NODE_TASK)
            return hops + x->hops;
        hops++;
    }
    return hops;
}

void nursery__cancel_node_open(struct cancel_node *n, struct cancel_node *parent, int kind,
                               bool shield)
{
    nursery__cancel_node_init(n, parent);
    n->kind = (unsigned char)kind;
    n->shield = shield;
    if (!parent || shield)
        return; /* a root */
    unsigned hops = unattached_above(parent);
    if (hops >= MAX_UNATTACHED) {
        nursery__cancel_node_attach(n);
        return;
    }
    /* The epoch before the look: a walk that ends after it makes the mark
     * stale (see the top of the file). */
    uint64_t epoch = atomic_load_explicit(&cancel_epoch, memory_order_acquire);
    n->hops = hops + 1;
    if (nursery__cancel_node_cancelled(parent))
        atomic_store_explicit(&n->inherited, true, memory_order_relaxed);
    else
        n->clean_at = epoch;
}

void nursery__cancel_node_attach(struct cancel_node *n)
{
    /* The unattached ancestors first, from the top: a few at most (a
     * capture run inline by a task that never waited, say). */
    while (!anchored(n)) {
        struct cancel_node *x = n;
        while (!anchored(parent_of(x)))
            x = parent_of(x);
        attach_one(x, parent_of(x));
    }
}

/* Waits, with *mu let go, until whoever finds a waiter in *slot signals it
 * (under *mu, its last touch of the waiter).  Called and returns with *mu
 * held; the caller looks again at what it waits for. */
static void wait_signal_locked(pthread_mutex_t *mu, struct waiter **slot)
{
    struct waiter w;
    nursery__waiter_init(&w);
    *slot = &w;
    pthread_mutex_unlock(mu);
    nursery__waiter_park(&w, NURSERY_FOREVER);
    pthread_mutex_lock(mu);
    *slot = NULL;
    nursery__waiter_destroy(&w);
}

/* Removes n from its parent's children once no walk holds it (parent->mu
 * held).  Returns with parent->mu still held. */
static void unlink_unpinned_locked(struct cancel_node *n, struct cancel_node *parent)
{
    while (n->pins > 0)
        wait_signal_locked(&parent->mu, &n->unpinned);
    if (atomic_load_explicit(&n->attached, memory_order_relaxed)) {
        list_remove(&n->sibling);
        atomic_store_explicit(&n->attached, false, memory_order_relaxed);
    }
}

/* A walk that detached n (see cancel) does not touch it afterwards. */
static void detach(struct cancel_node *n)
{
    if (!atomic_load_explicit(&n->attached, memory_order_acquire)) {
        nursery__hb_acquire(n); /* the walk's last touch, for TSan */
        return;
    }
    struct cancel_node *parent = parent_of(n);
    pthread_mutex_lock(&parent->mu);
    unlink_unpinned_locked(n, parent);
    pthread_mutex_unlock(&parent->mu);
}

void nursery__cancel_node_detach(struct cancel_node *n)
{
    detach(n);
}

void nursery__cancel_node_fini(struct cancel_node *n)
{
    detach(n);
    pthread_mutex_destroy(&n->mu);
}

void nursery__cancel_node_reparent(struct cancel_node *n, struct cancel_node *parent)
{
    struct cancel_node *old = parent_of(n);
    if (old) {
        pthread_mutex_lock(&old->mu);
        unlink_unpinned_locked(n, old);
        /* Cancelled where it was: it stays so (see the top of the file). */
        if (flagged(n) || nursery__cancel_node_cancelled(old))
            atomic_store_explicit(&n->cancelled, true, memory_order_release);
        pthread_mutex_unlock(&old->mu);
    }
    atomic_store_explicit(&n->parent, parent, memory_order_release);
    /* The marks of nodes opened under n looked at its old ancestors. */
    epoch_advance();
    nursery__cancel_node_attach(n);
}

/* ---- cancelling -------------------------------------------------------- */

/* Runs the node's pending hooks, one at a time, without its lock (a hook
 * may call into the library); a remover waits while one runs.  Called
 * with n->mu held, returns with it held; n stays linked meanwhile (a walk
 * has it pinned, or it is the walk's root). */
static void run_hooks_locked(struct cancel_node *n)
{
    while (!list_empty(&n->hooks)) {
        struct cancel_hook *h = list_entry(n->hooks.next, struct cancel_hook, link);
        list_remove(&h->link);
        h->state = HOOK_RUNNING;
        h->runner = pthread_self();
        pthread_mutex_unlock(&n->mu);
        h->fn(h->arg);
        pthread_mutex_lock(&n->mu);
        h->state = HOOK_RAN;
        if (h->finished)
            nursery__waiter_signal(h->finished); /* the last touch of h */
    }
}

/* Tells a node under a cancelled one, wakes its parked threads and runs
 * its hooks. */
static void visit_locked(struct cancel_node *n)
{
    atomic_store_explicit(&n->inherited, true, memory_order_release);
    nursery__waitq_wake_all(&n->waiters);
    run_hooks_locked(n);
}

/* Lets go of a pinned child on the way back up (parent->mu held); the
 * owner waiting to detach it goes on once nobody holds it. */
static void unpin_locked(struct cancel_node *child)
{
    if (--child->pins == 0 && child->unpinned)
        nursery__waiter_signal(child->unpinned);
}

void nursery__cancel_node_cancel(struct cancel_node *root)
{
    if (atomic_exchange_explicit(&root->cancelled, true, memory_order_acq_rel))
        return;
    NURSERY_PROBE1(cancel, root);
    epoch_advance();
    struct cancel_node *node = root;
    pthread_mutex_lock(&root->mu);
    nursery__waitq_wake_all(&root->waiters);
    run_hooks_locked(root);
    struct list *next = root->children.next; /* the next child of node to visit */
    for (;;) {
        if (next != &node->children) {
            /* Down into a child, pinned so that it stays linked while
             * node's lock is let go. */
            struct cancel_node *child = list_entry(next, struct cancel_node, sibling);
            child->pins++;
            pthread_mutex_unlock(&node->mu);
            pthread_mutex_lock(&child->mu);
            visit_locked(child);
            node = child;
            next = child->children.next;
            continue;
        }
        if (node == root)
            break;
        /* Back up: node is done, its next sibling is next. */
        struct cancel_node *parent = parent_of(node);
        pthread_mutex_unlock(&node->mu);
        pthread_mutex_lock(&parent->mu);
        next = node->sibling.next;
        unpin_locked(node);
        if (parent == root && node->pins == 0) {
            /* A direct child needs no more waking: whoever parks under it
             * sees its flag first.  The last touch: its owner may free it
             * as soon as it sees it detached. */
            list_remove(&node->sibling);
            nursery__hb_release(node); /* see annotate.h; detach() acquires it */
            atomic_store_explicit(&node->attached, false, memory_order_release);
        }
        node = parent;
    }
    pthread_mutex_unlock(&root->mu);
    /* Every mark taken while the walk went on is stale now. */
    epoch_advance();
}

/* ---- cancel hooks ------------------------------------------------------ */

int nursery__cancel_hook_add(struct cancel_hook *h, void (*fn)(void *arg), void *arg)
{
    struct cancel_node *n = nursery__ctx.node;
    if (!n)
        return EINVAL;
    *h = (struct cancel_hook){.fn = fn, .arg = arg, .node = n, .state = HOOK_PENDING};
    /* Attached first, so that a walk from above reaches n's hooks; then
     * either the walk has been at n (its flag tells, under n->mu) or it
     * will find the hook there. */
    nursery__cancel_node_attach(n);
    pthread_mutex_lock(&n->mu);
    bool now = nursery__cancel_node_cancelled(n);
    if (!now)
        list_push_back(&n->hooks, &h->link);
    else
        h->state = HOOK_RAN;
    pthread_mutex_unlock(&n->mu);
    if (now)
        fn(arg);
    return 0;
}

bool nursery__cancel_hook_remove(struct cancel_hook *h)
{
    struct cancel_node *n = h->node;
    pthread_mutex_lock(&n->mu);
    if (h->state == HOOK_PENDING)
        list_remove(&h->link);
    while (h->state == HOOK_RUNNING && !pthread_equal(h->runner, pthread_self()))
        wait_signal_locked(&n->mu, &h->finished);
    bool ran = h->state != HOOK_PENDING;
    pthread_mutex_unlock(&n->mu);
    return ran;
}

bool nursery__cancel_hook_running_here(struct cancel_hook *h)
{
    pthread_mutex_lock(&h->node->mu);
    bool here = h->state == HOOK_RUNNING && pthread_equal(h->runner, pthread_self());
    pthread_mutex_unlock(&h->node->mu);
    return here;
}

/* ---- cancellation points ----------------------------------------------- */

int nursery__cancel_delivered(void)
{
    nursery__ctx.cancels_delivered++;
    return ECANCELED;
}

bool nursery_cancelled(void)
{
    return nursery__cancel_node_cancelled(nursery__ctx.node);
}

int nursery_checkpoint(void)
{
    return nursery_cancelled() ? nursery__cancel_delivered() : 0;
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

/* ctx: what the sleep stands for (nursery__sleep_as), or NULL. */
static void sleep_describe(void *ctx, struct blocked_on *b)
{
    *b = ctx ? *(const struct blocked_on *)ctx : (struct blocked_on){.kind = BLOCKED_SLEEP};
}

static const struct block_ops sleep_ops = {
    .ready = never_ready,
    .attach = attach_nothing,
    .detach = detach_nothing,
    .describe = sleep_describe,
};

int nursery__sleep_as(nursery_time_t deadline, const struct blocked_on *what)
{
    int rc = nursery__block(&sleep_ops, (void *)what, deadline, 0);
    return rc == ETIMEDOUT ? 0 : rc;
}

int nursery_sleep(nursery_time_t deadline)
{
    return nursery__sleep_as(deadline, NULL);
}
