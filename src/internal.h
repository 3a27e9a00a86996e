/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what the files of src/ share.  Nothing here is public.
 *
 * Lock order (a lock may be taken while holding the ones to its left):
 *
 *   start_slot.mu -> result.mu -> cancel_node.mu (parent before child)
 *   result.mu -> watch.mu
 *   nursery.mu, result.mu, channel.mu, cancel_node.mu, watch.mu -> waiter.mu
 *   pool.mu is a leaf apart from waiter.mu: nothing else is taken under it.
 *   (waiter.mu exists only where there is no futex: see struct waiter.)
 *
 * Every blocking wait in the library goes through nursery__block() (park.c),
 * so deadlines, cancellation, pool compensation and helping are written once.
 */
#ifndef NURSERY_INTERNAL_H
#define NURSERY_INTERNAL_H

#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include "nursery.h"
#include "annotate.h"
#include "list.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HIDDEN __attribute__((visibility("hidden")))
/* Thread-locals read on every start, run and wait: a fixed offset from the
 * thread pointer instead of a __tls_get_addr() call per function.  They are
 * a few dozen bytes, well inside the static TLS that the C library keeps
 * spare for a library loaded with dlopen(). */
#define FAST_TLS __attribute__((tls_model("initial-exec")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

struct task;
struct worker;

/* calloc() for types with members cache lines apart (_Alignas(64)), which
 * malloc's 16-byte alignment does not honour. */
static inline void *calloc_aligned(size_t align, size_t size)
{
    void *p = aligned_alloc(align, (size + align - 1) / align * align);
    if (p)
        memset(p, 0, size);
    return p;
}

/* ---- time.c ------------------------------------------------------------ */

/* The deadline as a timespec for pthread_cond_timedwait on CLOCK_MONOTONIC. */
HIDDEN struct timespec nursery__timespec(nursery_time_t t);
/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines. */
HIDDEN void nursery__cond_init_monotonic(pthread_cond_t *cv);

/* ---- context.c: the calling thread, and the side of a fork() ----------- */

/* What the calling thread is doing, for cancellation and helping. */
struct trace_thread;

struct thread_ctx {
    struct cancel_node *node;    /* innermost cancel node, NULL outside tasks, bodies, scopes */
    uint64_t cancels_delivered;  /* ECANCELED returned by cancellation points (scope.c) */
    struct task *task;           /* the task this thread runs now, or NULL */
    struct worker *worker;       /* this thread's worker record on a pool thread */
    struct trace_thread *trace;  /* what nursery_dump() sees of this thread (trace.h) */
    nursery_error_t *last_error; /* owned reference, see nursery_last_error() */
};

HIDDEN extern _Thread_local struct thread_ctx nursery__ctx FAST_TLS;

/* Replaces the thread's last error (takes ownership of err, may be NULL). */
HIDDEN void nursery__set_last_error(nursery_error_t *err);

/* Objects that own locks or wait for threads (pools, nurseries, results,
 * channels) record the fork generation they were made in: in the child of
 * a fork() the generation moves on, and such an object of the parent's
 * refuses service with NURSERY_EFORKED instead of waiting for threads that
 * do not exist there.  nursery__generation() also makes sure the child
 * handler is installed, so call it when an object is made. */
HIDDEN extern atomic_uint nursery__fork_generation;
HIDDEN unsigned nursery__generation(void);

static inline bool nursery__forked(unsigned generation)
{
    return generation != atomic_load_explicit(&nursery__fork_generation, memory_order_relaxed);
}

/* ---- error.c ----------------------------------------------------------- */

/* Creates an error from a code and an optional message; NULL on ENOMEM. */
HIDDEN nursery_error_t *nursery__error_new(int code, const char *fmt, va_list ap);
/* An error made from a code; never NULL: when memory runs out, a shared
 * ENOMEM error (nursery__error_oom). */
HIDDEN nursery_error_t *nursery__error_from_code(int code);
/* A cancellation error for a task (with its name); never NULL: when memory
 * runs out, a shared one without a name. */
HIDDEN nursery_error_t *nursery__error_cancelled(const char *task_name);
/* A shared ENOMEM error, for when recording an error ran out of memory. */
HIDDEN nursery_error_t *nursery__error_oom(void);
/* Sets the task name if the error has none and is not yet shared. */
HIDDEN void nursery__error_set_task_name(nursery_error_t *err, const char *name);

/* An error group: built inside a nursery (its lock held), then handed to
 * the joiner as it is. */
struct nursery_errors {
    size_t count;                                /* entries used in items */
    size_t dropped;                              /* real errors past the cap */
    size_t cancelled;                            /* tasks that ended only cancelled */
    void (*release)(nursery_errors_t *g);        /* gives back the memory holding g */
    nursery_error_t *items[NURSERY_ERRORS_KEPT]; /* owned references, arrival order */
};
HIDDEN void nursery__errors_init(nursery_errors_t *g, void (*release)(nursery_errors_t *g));
HIDDEN void nursery__errors_add(nursery_errors_t *g, nursery_error_t *err);
/* Releases the errors; the group is empty again. */
HIDDEN void nursery__errors_clear(nursery_errors_t *g);

/* ---- park.c: waiters, wait queues and the one blocking loop ------------- */

/* A thread blocked in the library.  Lives on the blocked thread's stack for
 * the duration of one wait.  `signalled` is a latch: a signal that comes
 * before the thread parks is not lost.  On Linux it is a futex word, so a
 * signal is one atomic exchange and one system call, and the woken thread
 * takes no lock; elsewhere (or configured with --disable-futex, which
 * defines no NURSERY_FUTEX) a mutex and a condition variable. */
#ifdef NURSERY_FUTEX
struct waiter {
    atomic_uint signalled; /* 1 from nursery__waiter_signal until nursery__waiter_park takes it */
};
#else
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool signalled; /* set by nursery__waiter_signal, cleared by nursery__waiter_park; mu */
};
#endif

HIDDEN void nursery__waiter_init(struct waiter *w);
HIDDEN void nursery__waiter_destroy(struct waiter *w);
HIDDEN void nursery__waiter_signal(struct waiter *w);
/* Sleeps until signalled or the deadline.  Returns 0 or ETIMEDOUT. */
HIDDEN int nursery__waiter_park(struct waiter *w, nursery_time_t deadline);

/* The waiters registered on one object, protected by that object's lock.
 * A waiter watching several objects has one link in each. */
struct waitq {
    struct list links;
};
struct wait_link {
    struct list node;
    struct waiter *waiter;
    /* Called instead of signalling `waiter` (under the object's lock), for
     * a watcher that must learn which object changed (watch.c). */
    void (*notify)(struct wait_link *link);
};

HIDDEN void nursery__waitq_init(struct waitq *q);
HIDDEN void nursery__waitq_add(struct waitq *q, struct wait_link *link, struct waiter *w);
/* Links a watcher's callback in place of a waiter. */
HIDDEN void nursery__waitq_add_notify(struct waitq *q, struct wait_link *link,
                                      void (*notify)(struct wait_link *link));
HIDDEN void nursery__waitq_remove(struct wait_link *link);
HIDDEN void nursery__waitq_wake_all(struct waitq *q);

/* What a thread parked in the library waits for, as nursery_dump() names it
 * (dump.c has the names, in this order). */
enum blocked_kind {
    BLOCKED_NONE,
    BLOCKED_JOIN,         /* object: the nursery */
    BLOCKED_START,        /* object: the nursery */
    BLOCKED_ROOM,         /* object: the nursery */
    BLOCKED_RESULT,       /* object: the result */
    BLOCKED_WAIT,         /* object: the first result; count: how many */
    BLOCKED_AS_COMPLETED, /* object: the iterator */
    BLOCKED_MAP,          /* object: the map */
    BLOCKED_SEND,         /* object: the channel */
    BLOCKED_RECV,         /* object: the channel */
    BLOCKED_SLEEP,
    BLOCKED_POLL,         /* arg: the first fd; count: how many */
    BLOCKED_CHILD,        /* arg: the pid */
};

struct blocked_on {
    int kind; /* enum blocked_kind */
    const void *object;
    int_fast64_t arg;
    int_fast64_t count;
};

/* nursery_sleep(), shown to nursery_dump() as waiting in `what` (NULL: a
 * sleep). */
HIDDEN int nursery__sleep_as(nursery_time_t deadline, const struct blocked_on *what);

/* What a blocking call waits for.  attach registers the waiter on the
 * objects (under their locks); ready tells whether the wait is over (it may
 * lock); detach unregisters; help, if not NULL, runs queued work the waiter
 * is waiting for and returns true if it ran something (it is called only
 * in pool workers). */
/* A pause in a loop that waits for another CPU (less power, and room for
 * a hyperthread sibling). */
static inline void nursery__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

struct block_ops {
    bool (*ready)(void *ctx);
    void (*attach)(void *ctx, struct waiter *w);
    void (*detach)(void *ctx);
    bool (*help)(void *ctx);
    /* What nursery_dump() shows the thread waiting for, while it is parked. */
    void (*describe)(void *ctx, struct blocked_on *b);
    /* A join: what it waits for runs on the pool's other workers, so a
     * worker parked in it keeps no CPU idle (see monitor.c). */
    bool joins;
};

/* The common case of attach/detach: one object's wait queue under its
 * mutex.  Put it first in a block context and use nursery__wait_one_attach and
 * nursery__wait_one_detach as the ops. */
struct wait_one {
    pthread_mutex_t *mu;
    struct waitq *q;
    struct wait_link link;
};
HIDDEN void nursery__wait_one_attach(void *ctx, struct waiter *w);
HIDDEN void nursery__wait_one_detach(void *ctx);

/* Do not return early when the calling task is cancelled. */
#define BLOCK_UNCANCELLABLE 1

/* Blocks until ops->ready(ctx), the deadline, or (unless
 * BLOCK_UNCANCELLABLE) cancellation of the calling task.  Returns 0,
 * ETIMEDOUT or ECANCELED.  A ready condition wins over the other two.  A
 * pool worker parked here for more than a grace period is counted as
 * blocked, so the pool can add a thread. */
HIDDEN int nursery__block(const struct block_ops *ops, void *ctx, nursery_time_t deadline,
                          int flags);

/* ---- watch.c: which results of a set completed, in what order ----------- */

/* One result of a watched set. */
struct watch_link {
    struct wait_link link; /* first: the callback gets this */
    struct watch *watch;
    nursery_result_t *result;
    size_t index;          /* what the watch records when the result completes */
    bool linked;           /* in the result's wait queue (the owner's) */
};

/* Counts completions and, with a queue, queues their indices.  Put it first in a block
 * context to sleep on it with nursery__watch_attach/_detach as the ops. */
struct watch {
    pthread_mutex_t mu;
    size_t *queue;         /* capacity entries (NULL: count only), owner's storage */
    size_t capacity, head; /* mu */
    /* Written under mu, read without it (nursery__watch_counts), so that
     * the sleeper's looks do not contend with the completions. */
    atomic_size_t count;     /* indices queued */
    atomic_size_t completed; /* results that completed since added */
    atomic_size_t failed;    /* of those, done with an error other than ECANCELED */
    atomic_size_t wake_at; /* the sleeper is woken once `completed` reaches it, or by a
                            * failure */
    struct waiter *sleeper; /* mu */
};

HIDDEN void nursery__watch_init(struct watch *w, size_t *queue, size_t capacity);
HIDDEN void nursery__watch_destroy(struct watch *w);
/* Watches r: its completion (at once if it is done) records `index`. */
HIDDEN void nursery__watch_add(struct watch *w, struct watch_link *l, nursery_result_t *r,
                               size_t index);
/* Stops watching (before l or its result goes away). */
HIDDEN void nursery__watch_remove(struct watch_link *l);
/* Takes the oldest index queued.  False when there is none. */
HIDDEN bool nursery__watch_pop(struct watch *w, size_t *index);
HIDDEN void nursery__watch_counts(struct watch *w, size_t *completed, size_t *failed,
                                  size_t *queued);
/* Wakes the sleeper only once `completed` results have completed (0, the
 * default: at every completion), or when one fails. */
HIDDEN void nursery__watch_wake_at(struct watch *w, size_t completed);
HIDDEN void nursery__watch_attach(void *ctx, struct waiter *waiter);
HIDDEN void nursery__watch_detach(void *ctx);
/* A block_ops help: runs one queued capture among the linked ones (in a
 * worker of its pool), looking from *cursor on.  True if it ran one. */
HIDDEN bool nursery__watch_help(struct watch_link *links, size_t n, size_t *cursor);

/* ---- cancel.c: the cancel tree ------------------------------------------ */

/* A node of the cancel tree: a nursery, a task or a cancel scope.  See
 * cancel.c for how cancellation is inherited and how the walk wakes parked
 * threads and runs cancel hooks. */
enum { NODE_TASK, NODE_NURSERY, NODE_SCOPE };
struct cancel_node {
    unsigned char kind;                   /* NODE_*: what the node is the scope of; set by
                                           * its owner right after init (NODE_TASK) */
    bool shield;                          /* a walk from above stops here; set at init */
    unsigned char hops;                   /* a nursery's or scope's node opened unattached:
                                           * it and the unattached nodes above it then */
    _Atomic nursery_time_t deadline;      /* for nursery_current_deadline() */
    uint64_t clean_at;                    /* the cancel epoch at which its ancestors were
                                           * seen not cancelled; 0: never (cancel.c) */
    _Atomic(struct cancel_node *) parent; /* changed by its owner thread, only while it is
                                           * not attached */
    atomic_bool cancelled;                /* cancelled itself: set once, never cleared */
    atomic_bool inherited;                /* an ancestor is cancelled: set under mu by a
                                           * walk, or at attach from the parent; never
                                           * cleared */
    atomic_bool attached;                 /* in parent->children; changed under parent->mu
                                           * (by the owner, or a walk detaching it) */
    int pins;                             /* walks inside this node's subtree that let go
                                           * of parent->mu; parent->mu */
    struct waiter *unpinned;              /* the owner waiting for pins == 0; parent->mu */
    pthread_mutex_t mu;                   /* protects children, waiters, the children's
                                           * pins and links */
    struct list children;                 /* attached child nodes */
    struct list sibling;                  /* link in parent->children (parent->mu) */
    struct waitq waiters;                 /* threads parked under this node */
    struct list hooks;                    /* cancel hooks not yet run (mu) */
};

/* A cancel hook (nursery_on_cancel): runs once, in the cancelling thread,
 * when its node is cancelled; see cancel.c. */
enum { HOOK_PENDING, HOOK_RUNNING, HOOK_RAN };
struct cancel_hook {
    struct list link; /* in node->hooks while pending (node->mu) */
    void (*fn)(void *arg);
    void *arg;
    struct cancel_node *node;
    int state;               /* HOOK_* (node->mu) */
    pthread_t runner;        /* the thread running it (HOOK_RUNNING) */
    struct waiter *finished; /* a remover waiting for HOOK_RAN (node->mu) */
};

HIDDEN void nursery__cancel_node_init(struct cancel_node *n, struct cancel_node *parent);
/* Inits the node of a nursery or a scope (kind NODE_NURSERY or NODE_SCOPE)
 * opened under parent (NULL: a root), shielded or not.  It is attached
 * only when the way up to an attached node is long (see cancel.c). */
HIDDEN void nursery__cancel_node_open(struct cancel_node *n, struct cancel_node *parent,
                                      int kind, bool shield);
/* Detaches from the parent (waiting while a cancel walks its subtree): its
 * parent may go after this.  The node must have no attached children. */
HIDDEN void nursery__cancel_node_detach(struct cancel_node *n);
/* Detaches and destroys the node. */
HIDDEN void nursery__cancel_node_fini(struct cancel_node *n);
/* Cancels the node and everything under it; constant stack.  The caller
 * keeps the node alive for the call. */
HIDDEN void nursery__cancel_node_cancel(struct cancel_node *n);
/* Whether the node or an ancestor is cancelled.  O(1) steps in practice. */
HIDDEN bool nursery__cancel_node_cancelled(struct cancel_node *n);
/* Attaches the node, and its unattached ancestors first (idempotent).
 * Called by the thread running under the node. */
HIDDEN void nursery__cancel_node_attach(struct cancel_node *n);
/* Moves the node under a new parent; a node cancelled where it was stays
 * cancelled.  Owner thread only. */
HIDDEN void nursery__cancel_node_reparent(struct cancel_node *n, struct cancel_node *parent);
/* Registers h on the calling thread's innermost node (EINVAL when it has
 * none): fn runs when that node is cancelled, at once (here) if it is
 * already.  Returns 0 or EINVAL. */
HIDDEN int nursery__cancel_hook_add(struct cancel_hook *h, void (*fn)(void *arg), void *arg);
/* Unregisters h, waiting while another thread runs it.  Returns whether it
 * ran (or was running). */
HIDDEN bool nursery__cancel_hook_remove(struct cancel_hook *h);
/* Whether the calling thread is inside h's fn (removing it would wait
 * for itself). */
HIDDEN bool nursery__cancel_hook_running_here(struct cancel_hook *h);
/* What a cancellation point returns when the caller is cancelled: counts
 * it for the scopes (NURSERY_SCOPE_CANCELLED_CAUGHT) and returns
 * ECANCELED. */
HIDDEN int nursery__cancel_delivered(void);

/* ---- timer.c: the deadline thread --------------------------------------- */

/* A deadline, kept by the deadline thread: fire(e) runs there once `when`
 * has passed, unless it is disarmed first.  Zero-initialized = not armed. */
struct timer_entry {
    nursery_time_t when;                 /* timer.mu */
    size_t index;                        /* heap slot + 1, 0 when not armed (timer.mu) */
    void (*fire)(struct timer_entry *e); /* set by the owner before arming */
};

/* Arms (or moves) the entry.  Returns 0; ENOMEM; EAGAIN (the deadline
 * thread cannot be started). */
HIDDEN int nursery__timer_arm(struct timer_entry *e, nursery_time_t when);
/* Disarms the entry, waiting while its fire() runs in the deadline thread
 * (unless that is the caller): afterwards the entry may be freed.
 * Returns whether it was still armed. */
HIDDEN bool nursery__timer_disarm(struct timer_entry *e);

/* ---- pool.c ------------------------------------------------------------ */

/* Queues a started task (state becomes TASK_QUEUED): on the calling
 * worker's deque, else on the injection queue.  Never fails.  A capture's
 * queue entry holds a reference to its result, released by whoever removes
 * the entry. */
HIDDEN void nursery__pool_submit(nursery_pool_t *p, struct task *t);
/* Restricted helping for a joiner that is a worker of n's pool: runs one
 * queued task of n or of a nursery opened under it.  Returns true if it
 * made progress (ran a task, or dropped a stale queue entry). */
HIDDEN bool nursery__pool_help(nursery_t *n);
/* The calling worker starts / has finished running a task (no-ops off
 * the pool): the statistics, and the monitor's watch over blocked tasks. */
HIDDEN void nursery__pool_task_starting(void);
HIDDEN void nursery__pool_task_finished(void);
/* Whether the calling thread is one of the pool's workers. */
HIDDEN bool nursery__pool_is_current(const nursery_pool_t *p);
/* Whether the pool was created before a fork() in this (child) process. */
HIDDEN bool nursery__pool_is_forked(const nursery_pool_t *p);
/* The pool the calling thread is a worker of, or NULL. */
HIDDEN nursery_pool_t *nursery__pool_current(void);
/* The CPUs this process may run on (at least 1). */
HIDDEN size_t nursery__cpu_count(void);
/* The calling worker enters (+1) or leaves (-1) a library wait, in which
 * the tasks it runs count as helped (no-op off the pool). */
HIDDEN void nursery__pool_wait_depth(int delta);
/* The calling worker parks (+1) in a library wait or wakes (-1): the
 * monitor leaves it to the grace period below (no-op off the pool). */
HIDDEN void nursery__pool_park_mark(int delta);
/* The calling worker has been parked a while / has woken (no-ops off the
 * pool). */
HIDDEN void nursery__pool_block_enter(bool joining);
HIDDEN void nursery__pool_block_leave(bool joining);
/* Whether the pool can neither add a thread nor wake an idle one: then a
 * queued task may wait for a worker forever, and a worker waiting for it
 * to start runs it itself.  nursery__pool_watch_saturation(p, w) has w
 * signalled when that happens while the calling worker waits, and returns
 * the waiter it watched for before (waits nest: put it back when done);
 * no-op (NULL) unless the caller is a worker of p. */
HIDDEN bool nursery__pool_saturated(nursery_pool_t *p);
HIDDEN struct waiter *nursery__pool_watch_saturation(nursery_pool_t *p, struct waiter *w);
/* Open-nursery accounting, for EBUSY on destroy. */
HIDDEN int nursery__pool_nursery_opened(nursery_pool_t *p);
HIDDEN void nursery__pool_nursery_closed(nursery_pool_t *p);

/* ---- task.c ------------------------------------------------------------ */

enum task_state {
    TASK_IDLE,    /* a capture created but not started */
    TASK_QUEUED,  /* waiting in a pool queue */
    TASK_WAITING, /* waiting in its nursery, beyond its limit (nursery_set_limit) */
    TASK_RUNNING, /* claimed by a worker or a helper */
    TASK_DONE,
};

struct start_slot; /* nursery.c */

struct task {
    _Atomic(struct task *) next; /* in the pool's injection queue */
    nursery_fn fn;
    void *arg;
    void (*arg_destroy)(void *arg);
    char *name;                  /* owned copy, or NULL */
    unsigned flags;              /* NURSERY_TASK_* */
    _Atomic int state;           /* enum task_state; see nursery__task_claim */
    atomic_bool aside;           /* a helper's put-aside task, in the injection queue
                                  * (pool.c); apart from flags, which the task's
                                  * runner may be using while the drainer clears it */
    nursery_t *nursery;          /* set when started */
    nursery_result_t *result;    /* the capture embedding this task, or NULL */
    struct start_slot *start;    /* a nursery_start() caller waiting for started() */
    struct cancel_node node;     /* parent set when started */
    struct task_cache *home;     /* where a plain task's memory goes back; NULL in a capture */
};

/* Fills a task from fn/arg/opts.  Returns 0 or ENOMEM (name copy). */
HIDDEN int nursery__task_init(struct task *t, nursery_fn fn, void *arg,
                              const nursery_task_options_t *opts);
/* A plain task (not a capture's): allocated and filled.  0 or ENOMEM. */
HIDDEN int nursery__task_new(struct task **out, nursery_fn fn, void *arg,
                             const nursery_task_options_t *opts);
/* Frees a plain task that will never run, or has finished. */
HIDDEN void nursery__task_free(struct task *t);
/* Runs a claimed task in the calling thread (or skips it when cancelled),
 * records its outcome, and finishes it: after this returns, t may be gone. */
HIDDEN void nursery__task_run(struct task *t);
/* Runs arg_destroy (once) on a task that will never run. */
HIDDEN void nursery__task_discard(struct task *t);
/* The error a task (or a body) that returns `code` leaves: the one it
 * recorded with nursery_fail() if the codes match (an error propagated like
 * an exception; taken from the thread's last error), else one made from the
 * code.  Never NULL; the caller owns it. */
HIDDEN nursery_error_t *nursery__outcome_error(int code);
/* Claims a queued task (TASK_QUEUED -> TASK_RUNNING) wherever it is queued
 * or listed.  Returns true if the caller must now run it. */
HIDDEN bool nursery__task_claim(struct task *t);

/* Set in task.flags once nursery_started() was called. */
#define TASK_STARTED_FLAG (1u << 31)
/* Set in task.flags when the task took a place under its nursery's limit
 * (nursery_set_limit), given back when it ends. */
#define TASK_COUNTED_FLAG (1u << 29)
/* The flags a user may set. */
#define TASK_USER_FLAGS (NURSERY_TASK_SUPPRESS_ERROR | NURSERY_TASK_DAEMON | NURSERY_TASK_MAIN)

/* ---- task_cache.c: recycled memory for plain tasks --------------------- */

struct task_cache;
/* A block of sizeof(struct task) bytes (NULL if out of memory); *home gets
 * the cache it must go back to (NULL: just free it). */
HIDDEN void *nursery__task_cache_get(struct task_cache **home);
/* Gives a block back to `home` from any thread. */
HIDDEN void nursery__task_cache_put(void *mem, struct task_cache *home);

/* ---- nursery.c --------------------------------------------------------- */

struct nursery {
    nursery_pool_t *pool;
    struct cancel_node node;   /* the nursery's scope; parent = opener's node */
    struct cancel_node *outer; /* the opener's node before open, restored at join */
    struct task *opener_task;  /* the task that opened it, or NULL (a plain thread) */
    pthread_t opener;
    bool opened_by_worker;     /* the opener (and so the joiner) is a worker of pool */
    unsigned generation;       /* fork generation at open (see context.c) */
    _Atomic uint64_t credits;  /* written by the opener's body only: starts already
                                * counted in pending (read by nursery_counts) */
    nursery_error_t *body_error; /* opener only: the last error the body failed with by
                                  * nursery_fail(), borrowed, so that nursery_run does
                                  * not count it twice */
    /* pending is written on every start and end: its cache line holds
     * nothing that is read on every start, by padding (an aligned allocation
     * per nursery costs more than it saves), only fields written with it or
     * seldom used, so that the nursery stays 1032 bytes (see nursery_open). */
    char pad_before_pending[32];
    _Atomic uint64_t counted;  /* added to pending by starts, credits included */
    atomic_size_t failed_tasks; /* tasks that ended with an error, not a cancellation */
    nursery_time_t opened_at;  /* nursery__coarse_now(), for nursery_dump() */
    _Atomic uint64_t pending;  /* tasks started, not finished, | NURSERY_CLOSED */
    char name[32];             /* nursery_set_name() (mu) */
    char pad_after_pending[24];
    atomic_int refs;           /* opener until join, plus nursery_retain() */
    atomic_size_t cancelled_tasks; /* tasks that ended only cancelled */
    atomic_size_t daemons;     /* NURSERY_TASK_DAEMON tasks pending */
    atomic_bool limited;       /* nursery_set_limit() was called: starts take mu */
    atomic_bool expired;       /* the deadline of nursery_open_until cancelled it */
    size_t limit;              /* 0: none (mu) */
    size_t admitted;           /* TASK_COUNTED_FLAG tasks not yet ended (mu) */
    struct task *backlog, *backlog_tail; /* started beyond the limit, linked by next (mu) */
    struct waitq room;         /* nursery_start_limited() callers waiting for room (mu) */
    struct timer_entry expiry; /* nursery_open_until's deadline, when there is one */
    pthread_mutex_t mu;        /* protects errors, joiners, and pending's 1->0 */
    struct waitq joiners;
    nursery_errors_t errors;   /* built under mu, then handed to the joiner */
};

#define NURSERY_CLOSED (UINT64_C(1) << 63)

/* Wakes n's joiner if it is parked: a task of n was queued where it looks
 * only while it helps (pool.c, put_aside). */
HIDDEN void nursery__wake_joiner(nursery_t *n);
/* Marks a task's start in n: returns 0 or NURSERY_ECLOSED. */
HIDDEN int nursery__task_begin(nursery_t *n);
/* Called once per begun task when it has finished (last use of n). */
HIDDEN void nursery__task_end(nursery_t *n, unsigned task_flags);
/* Records a task's failure (err borrowed) or cancellation. */
HIDDEN void nursery__task_failed(nursery_t *n, nursery_error_t *err);
HIDDEN void nursery__task_cancelled(nursery_t *n);
HIDDEN void nursery__task_counted_failure(nursery_t *n);
/* Copies n's name (sizeof(n->name) bytes) under its lock. */
HIDDEN void nursery__name_copy(nursery_t *n, char *buf);
/* Delivers a task's end to a nursery_start() caller still waiting for
 * started(); err is borrowed (NULL: returned without started). */
HIDDEN void nursery__start_slot_end(struct start_slot *slot, int code, nursery_error_t *err,
                                    bool cancelled);
/* Queues a prepared task into n (begin + submit) with its cancel node under
 * `parent`.  On failure the task is discarded (arg_destroy has run) and its
 * memory is still the caller's. */
HIDDEN int nursery__submit(nursery_t *n, struct task *t, struct cancel_node *parent);
/* Takes t out of its nursery's tasks waiting beyond the limit, claiming it
 * (TASK_RUNNING, no place under the limit): false when it is no longer
 * there (admitted meanwhile: it is about to be TASK_QUEUED). */
HIDDEN bool nursery__backlog_take(nursery_t *n, struct task *t);
/* Submits a capture made by nursery_capture_create() into n.  On failure
 * the capture is released (its arg_destroy has run). */
HIDDEN int nursery__capture_submit(nursery_t *n, nursery_result_t *r);

/* ---- result.c ---------------------------------------------------------- */

struct nursery_result {
    atomic_int refs;
    bool is_capture;              /* fixed at creation */
    unsigned generation;          /* fork generation at creation (see context.c) */
    atomic_bool done;             /* set once, under mu, after the outcome */
    pthread_mutex_t mu;           /* outcome and waiters */
    void *value;                  /* valid once done */
    nursery_error_t *error;       /* owned; NULL for a success */
    nursery_time_t completed_at;  /* when done was set, for wait_any's order */
    nursery_pool_t *pool;         /* capture: the pool it was queued on, for helping */
    struct waitq waiters;
    struct task task;             /* captures only */
};

/* Completes a result.  Takes ownership of err.  Returns 0 or EALREADY (then
 * err is released and the first outcome kept). */
HIDDEN int nursery__result_complete(nursery_result_t *r, void *value, nursery_error_t *err);

/* Sorts k indices into `results`, all of done results, by the time they
 * completed (the index breaks ties).  wait.c. */
HIDDEN void nursery__sort_by_completion(size_t *idx, size_t k, nursery_result_t *const *results);
/* What a done result came to, with a new reference to its error. */
HIDDEN void nursery__outcome_of(const nursery_result_t *r, nursery_outcome_t *o);
/* Whether a done result failed for NURSERY_FIRST_ERROR: its error is not a
 * cancellation.  False while it is not done. */
HIDDEN bool nursery__result_failed(const nursery_result_t *r);
/* Claims a queued capture and runs it on the waiter's stack, when the
 * waiter is a worker of its pool (else the pool runs it).  True if it ran. */
HIDDEN bool nursery__result_help(nursery_result_t *r);
/* Internal nursery_start() on a prepared task (capture or not). */
HIDDEN int nursery__start_task(nursery_t *n, struct task *t, nursery_time_t deadline,
                               void **started_value);

#endif
