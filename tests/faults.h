/* SPDX-License-Identifier: MIT */
/*
 * faults.h - an allocation-failure injector for one test program.
 *
 * Include it in exactly one source file of a test program.  It defines
 * malloc, calloc, realloc, aligned_alloc (the library's pools and task
 * caches use it) and free; definitions in the program take precedence over
 * the C library's for the whole process, shared libraries included (libc's
 * own strdup and vasprintf call them too).  They forward to glibc's
 * allocator under its other names (__libc_malloc, ...), so every block,
 * whoever allocated it, comes from one heap.
 *
 * An allocation fails (NULL, errno ENOMEM) only in the thread that asked for
 * it, so Check and the pools' workers are never affected:
 *   faults_fail_all(true)  every allocation of this thread fails, until
 *                          faults_fail_all(false);
 *   faults_fail_nth(k)     the k-th allocation of this thread from now fails,
 *                          once (0 disarms);
 *   faults_injected()      failures injected in this thread so far.
 * Nothing may use Check (ck_assert allocates) while failures are armed:
 * record what the calls returned, disarm, then assert.
 *
 * Where it cannot work, it defines no allocator and faults_available()
 * says why: not glibc, or built with a sanitizer (whose runtime owns
 * malloc).  faults_available() also catches the case where it is present
 * but inert: valgrind's memcheck replaces malloc in the main program too,
 * unless run with --soname-synonyms=somalloc=nouserintercepts (then the
 * injector works and memcheck still sees every block through __libc_*).
 */
#ifndef NURSERY_TEST_FAULTS_H
#define NURSERY_TEST_FAULTS_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FAULTS_UNAVAILABLE "built with a sanitizer, whose runtime owns malloc"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define FAULTS_UNAVAILABLE "built with a sanitizer, whose runtime owns malloc"
#endif
#endif
#if !defined(FAULTS_UNAVAILABLE) && !defined(__GLIBC__)
#define FAULTS_UNAVAILABLE "not glibc: no __libc_malloc to forward to"
#endif

/* This thread's injection state (thread-local, so only its own thread reads
 * or writes it, from inside the allocator too). */
struct faults_thread {
    bool all;                /* every allocation fails */
    unsigned long countdown; /* the countdown-th allocation from now fails; 0: none */
    unsigned long injected;  /* failures injected so far */
};

static _Thread_local struct faults_thread faults_self;

static inline void faults_fail_all(bool on)
{
    faults_self.all = on;
}

static inline void faults_fail_nth(unsigned long k)
{
    faults_self.countdown = k;
}

static inline unsigned long faults_injected(void)
{
    return faults_self.injected;
}

#ifndef FAULTS_UNAVAILABLE

/* glibc's allocator under the names it exports besides malloc & co. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);
extern void __libc_free(void *p);

/* Whether this allocation fails (and then counts it, and sets errno). */
static inline bool faults_fail_now(void)
{
    struct faults_thread *self = &faults_self;
    if (!self->all && (self->countdown == 0 || --self->countdown != 0))
        return false;
    self->injected++;
    errno = ENOMEM;
    return true;
}

void *malloc(size_t size)
{
    return faults_fail_now() ? NULL : __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    return faults_fail_now() ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    /* realloc(p, 0) frees p: not an allocation that can fail. */
    if (p && size == 0)
        return __libc_realloc(p, 0);
    return faults_fail_now() ? NULL : __libc_realloc(p, size);
}

void *aligned_alloc(size_t align, size_t size)
{
    return faults_fail_now() ? NULL : __libc_memalign(align, size);
}

void free(void *p)
{
    __libc_free(p);
}

#endif

/* Whether failures can be injected here; if not, *why says why.  Probes:
 * an allocation made while every allocation must fail has to fail. */
static inline bool faults_available(const char **why)
{
#ifdef FAULTS_UNAVAILABLE
    *why = FAULTS_UNAVAILABLE;
    return false;
#else
    /* Through a volatile pointer: the compiler may not elide or fold it. */
    void *(*volatile alloc)(size_t) = malloc;
    unsigned long before = faults_self.injected;
    faults_fail_all(true);
    void *p = alloc(16);
    faults_fail_all(false);
    faults_self.injected = before;
    if (p) {
        free(p);
        *why = "an allocation succeeded while failures were armed: malloc is replaced "
               "(valgrind: run with --soname-synonyms=somalloc=nouserintercepts)";
        return false;
    }
    *why = NULL;
    return true;
#endif
}

#endif
