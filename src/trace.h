/* SPDX-License-Identifier: MIT */
/*
 * trace.h - what each thread is doing, kept where nursery_dump() can read
 * it at any time (trace.c: the records and the registries; dump.c: the
 * reader).
 *
 * Every thread that runs a task, opens a nursery or parks in a library wait
 * has a record: a stack of frames (the tasks it runs, nested when it helps
 * while it waits, and the nurseries it opened) and what it is parked in.
 * Only its thread writes it.  Task frames are pushed and popped on every
 * task, so they take no lock: each frame is a small seqlock (the writer
 * makes `seq` odd, writes, makes it even again; a reader retries when it
 * saw it odd or changed), every field an atomic, and a reader never follows
 * a task pointer, it only prints it.  A nursery a dump finds in a frame
 * is not freed while the dump holds the record's mutex (trace.c says why),
 * so it reads the nursery itself.
 */
#ifndef NURSERY_TRACE_H
#define NURSERY_TRACE_H

#include "internal.h"

#define TRACE_FRAMES 32
#define TRACE_NAME_WORDS 4 /* a name's first 31 bytes and its NUL, as words */

enum frame_kind { FRAME_TASK = 1, FRAME_NURSERY = 2 };

struct trace_frame {
    atomic_uint seq;
    atomic_int kind;
    _Atomic(const void *) object; /* the task or the nursery */
    _Atomic(const void *) parent; /* a task's nursery; a nursery's opening task or NULL */
    _Atomic int_fast64_t since;   /* nursery__coarse_now() at the push */
    _Atomic uint64_t name[TRACE_NAME_WORDS]; /* a task's name; a nursery's is read live */
};

/* What a parked thread waits for (enum blocked_kind in internal.h). */
struct trace_blocked {
    atomic_uint seq;
    atomic_int kind; /* BLOCKED_NONE when not parked */
    _Atomic(const void *) object;
    _Atomic int_fast64_t arg; /* an fd or a pid, by kind */
    _Atomic int_fast64_t count;
    _Atomic int_fast64_t since;
    _Atomic int_fast64_t until; /* the wait's deadline */
};

struct trace_thread {
    /* First: the registry's pointers then point at the block itself, and a
     * leak checker finds a live thread's record reachable. */
    struct list link; /* in the registry (registry mu) */
    pthread_mutex_t mu; /* held by a dump reading the record (trace.c) */
    atomic_int depth;   /* frames pushed, also those past TRACE_FRAMES */
    struct trace_frame frames[TRACE_FRAMES];
    struct trace_blocked blocked;
    pthread_t thread; /* fixed */
    int tid;          /* the kernel's id, 0 if unknown; fixed */
    bool worker;      /* a pool's worker thread; fixed */
    bool gone;        /* its thread is the parent's, in a fork child (registry mu) */
};

/* Gives the calling thread a record if it has none: where the library may
 * allocate anyway (a worker's start, nursery_open), never in a wait or a
 * task's start, which promise not to.  A thread without one (it never
 * opened a nursery, or there was no memory) is not in the dump. */
HIDDEN void nursery__trace_register(void);

/* CLOCK_MONOTONIC read cheaply, to a few milliseconds: the frames' times. */
HIDDEN int_fast64_t nursery__coarse_now(void);

HIDDEN void nursery__trace_frame_write(struct trace_frame *f, int kind, const void *object,
                                       const void *parent, const char *name, int_fast64_t since);

/* A task begins or ends running on this thread (task.c): no lock. */
static inline void nursery__trace_task_push(const struct task *t)
{
    struct trace_thread *tt = nursery__ctx.trace;
    if (unlikely(!tt))
        return;
    int d = atomic_load_explicit(&tt->depth, memory_order_relaxed);
    if (likely(d < TRACE_FRAMES))
        nursery__trace_frame_write(&tt->frames[d], FRAME_TASK, t, t->nursery, t->name,
                                   nursery__coarse_now());
    /* release: a reader that sees the new depth sees the frame. */
    atomic_store_explicit(&tt->depth, d + 1, memory_order_release);
}

static inline void nursery__trace_task_pop(void)
{
    struct trace_thread *tt = nursery__ctx.trace;
    if (tt)
        atomic_store_explicit(&tt->depth,
                              atomic_load_explicit(&tt->depth, memory_order_relaxed) - 1,
                              memory_order_release);
}

/* A nursery is opened or joined by this thread (nursery.c); n->opened_at
 * is set. */
HIDDEN void nursery__trace_nursery_push(const nursery_t *n);
HIDDEN void nursery__trace_nursery_pop(void);

/* The thread parks in a wait (park.c, io.c), and wakes. */
HIDDEN void nursery__trace_block(const struct blocked_on *b, int_fast64_t since,
                                 nursery_time_t until);
HIDDEN void nursery__trace_unblock(void);

/* The registries a dump walks (trace.c).  nursery__trace_lock() holds the
 * registry: no record is freed and no pool unregistered meanwhile. */
HIDDEN void nursery__trace_lock(void);
HIDDEN void nursery__trace_unlock(void);
HIDDEN struct list *nursery__trace_threads(void); /* of trace_thread.link */
HIDDEN struct list *nursery__trace_pools(void);   /* of nursery_pool.registry_link */
HIDDEN void nursery__trace_pool_add(nursery_pool_t *p);
HIDDEN void nursery__trace_pool_remove(nursery_pool_t *p);

/* Reads a frame or the blocked record consistently; false if it kept
 * changing (the reader skips it). */
struct frame_copy {
    int kind;
    const void *object, *parent;
    int_fast64_t since;
    char name[TRACE_NAME_WORDS * 8];
};
struct blocked_copy {
    int kind;
    const void *object;
    int_fast64_t arg, count, since, until;
};
HIDDEN bool nursery__trace_frame_read(struct trace_frame *f, struct frame_copy *out);
HIDDEN bool nursery__trace_blocked_read(struct trace_blocked *b, struct blocked_copy *out);

#endif
