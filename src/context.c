/* SPDX-License-Identifier: MIT */
/*
 * context.c - what the library knows of the calling thread (its innermost
 * cancel node, the task it runs, its worker record, its last error), and of
 * the process: which side of a fork() it is on.
 *
 * The context is thread-local and only its own thread touches it, so it
 * needs no lock.  The fork generation is a process-wide counter that only
 * the child handler changes, in a process that has a single thread then.
 *
 * fork() copies one thread: the one that called it.  If that thread was a
 * pool worker or was running a task, its copy in the child is neither: the
 * child handler empties its context, so that nothing in the child can wait
 * on, help with, or start threads for the parent's pools.
 */
#include "internal.h"

FAST_TLS _Thread_local struct thread_ctx nursery__ctx;

atomic_uint nursery__fork_generation;

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_in_child(void)
{
    atomic_fetch_add_explicit(&nursery__fork_generation, 1, memory_order_relaxed);
    nursery__ctx.node = NULL;
    nursery__ctx.task = NULL;
    nursery__ctx.worker = NULL;
}

static void install_fork_handler(void)
{
    /* Cannot fail but for ENOMEM: then a forking program's child may find
     * the parent's objects usable and hang in them, as without the
     * handler; nothing is worse than that. */
    pthread_atfork(NULL, NULL, after_fork_in_child);
}

unsigned nursery__generation(void)
{
    pthread_once(&atfork_once, install_fork_handler);
    return atomic_load_explicit(&nursery__fork_generation, memory_order_relaxed);
}

void nursery__set_last_error(nursery_error_t *err)
{
    nursery_error_t *old = nursery__ctx.last_error;
    nursery__ctx.last_error = err;
    nursery_error_release(old);
}

nursery_error_t *nursery_last_error(void)
{
    return nursery__ctx.last_error;
}
