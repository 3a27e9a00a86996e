/* SPDX-License-Identifier: MIT */
/*
 * annotate.h - happens-before edges that ThreadSanitizer must be told about
 * when a user's program is built with -fsanitize=thread and this library
 * is not.
 *
 * TSan sees what instrumented code does, and the pthread calls it
 * intercepts (a mutex unlock happens-before the next lock, whoever makes
 * it).  The library's own atomics and futexes it does not see: a task that
 * ends with an atomic decrement, a result marked done with a release
 * store, a task queued on a lock-free deque, a block recycled through a
 * compare-and-swap.  Without being told, TSan reports races on what a task
 * wrote and its joiner read, and on the library's own memory that a worker
 * used (through intercepted calls such as pthread_mutex_destroy) and
 * another thread then recycles or frees.
 *
 * So where one thread publishes with an atomic that another observes, the
 * publisher calls nursery__hb_release(obj) before its publishing store and
 * the observer nursery__hb_acquire(obj) after its observing load: TSan then
 * orders everything the publisher did before the release before everything
 * the observer does after the acquire, as the atomics really do.  Edges
 * made by a mutex the two sides share (channels, nursery_start's slot) need
 * nothing.  A reference count is annotated like the acq_rel decrement it
 * is: a release before every drop, an acquire by the thread that drops the
 * last one and frees the object.
 *
 * __tsan_acquire and __tsan_release are the TSan runtime's public
 * interface (libtsan, compiler-rt).  They are weak references: in a
 * program without the runtime they are null, and each annotation costs a
 * load and a branch that is always predicted.  When the library itself is
 * built with -fsanitize=thread, TSan sees its atomics, and the annotations
 * are left out so that they cannot hide a missing memory order from the
 * library's own TSan tests.
 */
#ifndef NURSERY_ANNOTATE_H
#define NURSERY_ANNOTATE_H

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NURSERY_TSAN_BUILD 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define NURSERY_TSAN_BUILD 1
#endif

/* Weak undefined references need ELF; elsewhere there is nothing to call. */
#if defined(__ELF__) && !defined(NURSERY_TSAN_BUILD)

extern void __tsan_acquire(void *addr) __attribute__((weak, visibility("default")));
extern void __tsan_release(void *addr) __attribute__((weak, visibility("default")));

/* What the calling thread did so far happens-before whatever a thread
 * does after a later nursery__hb_acquire(addr). */
static inline void nursery__hb_release(const void *addr)
{
    if (__builtin_expect(__tsan_release != 0, 0))
        __tsan_release((void *)addr);
}

/* Everything done before each nursery__hb_release(addr) so far happens-
 * before what the calling thread does next. */
static inline void nursery__hb_acquire(const void *addr)
{
    if (__builtin_expect(__tsan_acquire != 0, 0))
        __tsan_acquire((void *)addr);
}

#else

static inline void nursery__hb_release(const void *addr)
{
    (void)addr;
}

static inline void nursery__hb_acquire(const void *addr)
{
    (void)addr;
}

#endif

#endif
