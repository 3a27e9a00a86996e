/* SPDX-License-Identifier: MIT */
/*
 * pool.h - the pool's private structures, shared by pool.c (workers,
 * queues, sleeping) and monitor.c (threads for workers blocked in user
 * code).  See pool.c for the design and the locking rules.
 */
#ifndef NURSERY_POOL_H
#define NURSERY_POOL_H

#include "internal.h"
#include "deque.h"

#include <time.h>

struct monitor;

struct worker {
    struct deque dq;             /* owned by the thread using this record */
    nursery_pool_t *pool;        /* fixed */
    size_t id;                   /* index in pool.workers; fixed */
    pthread_t thread;            /* (mu) valid while live */
    atomic_bool live;            /* a thread uses this record (written under mu) */
    bool joinable;               /* (mu) destroy must join the thread */
    bool parked;                 /* (mu) on pool.idle */
    struct list idle_link;       /* (mu) in pool.idle while parked */
    struct waiter park;          /* where the thread sleeps when idle */
    atomic_int running;          /* tasks started and not finished on this thread
                                  * (nested when it helps while waiting): stats, monitor */
    atomic_int waiting;          /* parked in a library wait (0 or 1; for the monitor) */
    int wait_depth;              /* library waits in progress, nested; owner only */
    atomic_uint_fast64_t completed; /* tasks run, by this record's threads */
    atomic_uint_fast64_t helped;    /* of which run inside one of its own waits */
    atomic_uint_fast64_t steals;    /* tasks taken from other workers' deques */
    atomic_uint_fast64_t parked_ns; /* time parked, idle or in a library wait */
    nursery_time_t parked_at;    /* owner only: when it last parked */
    atomic_size_t open_nurseries; /* opened by this record's threads, not yet joined */
    struct waiter *nudge;        /* (mu) a start waiting for its task, to signal when the
                                  * pool cannot grow (nursery__pool_watch_saturation) */
    unsigned seed;               /* victim choice; owner only */
    atomic_int cpu_clock;        /* the thread's CPU-time clock (a clockid_t) */
    atomic_int tid;              /* the thread's kernel id, 0 if unknown */
    _Atomic int_fast64_t cpu_ready; /* the thread's CPU time when it began to look for
                                  * work, -1 until then (set by spawn, then the thread) */
    int_fast64_t cpu_seen;       /* monitor only: CPU time at its last tick */
    int stalled_ticks;           /* monitor only: ticks in a row without CPU */
};

struct nursery_pool {
    /* Fixed at creation and read on every start: kept off the lines that
     * workers write. */
    struct worker **workers;      /* max records; [0, nworkers) allocated */
    size_t target;                /* threads kept when nothing blocks */
    size_t max;                   /* upper bound on threads */
    unsigned generation;          /* fork generation at creation */
    char name[12];                /* thread name prefix */
    size_t stack_size;            /* 0: system default */
    struct monitor *monitor;      /* see monitor.c */
    void (*on_task_start)(const nursery_task_event_t *ev, void *arg);
    void (*on_task_finish)(const nursery_task_event_t *ev, void *arg);
    void *hook_arg;
    struct list registry_link;    /* in trace.c's registry of pools */

    _Alignas(64) pthread_mutex_t mu;
    pthread_cond_t exit_cv;       /* destroy waits here for threads == 0 */
    atomic_size_t nworkers;       /* records allocated; grows only */
    struct list idle;             /* (mu) parked workers */
    atomic_int sleepers;          /* workers on idle, read without mu */
    atomic_size_t spinning;       /* workers looking for work before sleeping */
    size_t threads;               /* (mu) live worker threads */
    uint64_t threads_created;     /* (mu) since creation */
    uint64_t threads_retired;     /* (mu) surplus threads that left idle */
    atomic_size_t blocked;        /* workers parked in a library wait */
    atomic_size_t blocked_joiners; /* of which in a join (see the monitor) */
    bool stopping;                /* (mu) set by destroy */
    atomic_size_t open_nurseries; /* opened by other threads, not yet joined */
    atomic_bool monitor_asleep;   /* the monitor waits for a kick */
    /* The injection queue: a multi-producer queue (Vyukov's intrusive
     * MPSC design, linked by task.next) that any thread pushes to without a
     * lock and one worker at a time drains, holding in_draining. */
    _Alignas(64) _Atomic(struct task *) in_tail; /* last pushed; producers swap it */
    atomic_size_t injected;       /* tasks pushed and not yet popped */
    atomic_size_t aside;          /* of which put aside by a helper (task.aside) */
    _Alignas(64) struct task *in_head; /* next to pop; the drainer only */
    atomic_flag in_draining;      /* held by the one worker draining */
    struct task in_stub;          /* keeps the queue non-empty for the algorithm */
};

/* pool.c, for the monitor (mu held where named _locked). */
HIDDEN int nursery__pool_spawn_locked(nursery_pool_t *p);
HIDDEN size_t nursery__pool_queued_estimate(nursery_pool_t *p);
HIDDEN void nursery__pool_nudge_locked(nursery_pool_t *p);

/* Whether p is the default pool (for nursery_dump). */
HIDDEN bool nursery__pool_is_default(const nursery_pool_t *p);

/* dump.c: NURSERY_DUMP_SIGNAL, looked at when the first pool is created. */
HIDDEN void nursery__dump_signal_from_env(void);

/* monitor.c */
HIDDEN int nursery__monitor_start(nursery_pool_t *p);
HIDDEN void nursery__monitor_stop(nursery_pool_t *p);
/* Tells a sleeping monitor that work started (mu held). */
HIDDEN void nursery__monitor_kick_locked(nursery_pool_t *p);

#endif
