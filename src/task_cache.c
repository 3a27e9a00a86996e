/* SPDX-License-Identifier: MIT */
/*
 * task_cache.c - recycling task memory between the thread that starts
 * tasks and the workers that end them.
 *
 * A thread that starts a million tasks mallocs each one and the workers
 * free them: with glibc every such free of another thread's chunk takes the
 * starter's arena lock, which the starter's own mallocs need too, and the
 * hand-off rate of spawn_join was set by that lock.  So each starting
 * thread keeps a cache of task blocks.  The thread that ends a task gives
 * its block back to the cache it came from (its `home`): onto a local list
 * when that is its own cache, else onto the cache's `returned` stack with
 * one compare-and-swap.  The owner takes the whole stack at once (an
 * exchange, so no ABA) when its local list runs dry.
 *
 * Caches are never freed, since a block may be given back to its home at
 * any time.  When a thread exits, its cache is closed (CLOSED in
 * `returned`: blocks given back are then freed at once), emptied, and kept
 * for the next thread that starts tasks.  The owner keeps about
 * CACHE_KEEP blocks; more that come back are freed as it takes blocks.
 */
#include "internal.h"

#include <stdint.h>

#define CACHE_KEEP 1024
#define CLOSED ((uintptr_t)1)

struct free_block {
    struct free_block *next;
};

struct task_cache {
    /* Written by other threads: a cache line apart from the owner's fields. */
    _Alignas(64) _Atomic uintptr_t returned; /* a stack of free_blocks given back, or CLOSED */
    atomic_size_t nreturned;    /* about how many: counted just after each push */
    _Alignas(64) struct free_block *local; /* owner only */
    size_t nlocal;              /* owner only; about how many, see nreturned */
    struct task_cache *next;    /* on all_caches (all_mu), for reuse and for leak checkers */
    bool ownerless;             /* (all_mu) closed and emptied: a thread may take it */
};

static pthread_mutex_t all_mu = PTHREAD_MUTEX_INITIALIZER;
static struct task_cache *all_caches; /* (all_mu) every cache ever made */
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t cache_key; /* its destructor closes the thread's cache */
static bool key_ok;
static FAST_TLS _Thread_local struct task_cache *my_cache;

static void free_chain(struct free_block *b)
{
    while (b) {
        struct free_block *next = b->next;
        free(b);
        b = next;
    }
}

static void cache_close(void *arg)
{
    struct task_cache *c = arg;
    uintptr_t returned = atomic_exchange_explicit(&c->returned, CLOSED, memory_order_acquire);
    nursery__hb_acquire(c); /* the givers' releases, for TSan */
    atomic_store_explicit(&c->nreturned, 0, memory_order_relaxed);
    free_chain((struct free_block *)returned);
    free_chain(c->local);
    c->local = NULL;
    c->nlocal = 0;
    my_cache = NULL;
    pthread_mutex_lock(&all_mu);
    c->ownerless = true;
    pthread_mutex_unlock(&all_mu);
}

/* A child of fork() must not inherit all_mu held by a thread it lacks. */
static void fork_prepare(void)
{
    pthread_mutex_lock(&all_mu);
}

static void fork_done(void)
{
    pthread_mutex_unlock(&all_mu);
}

static void make_key(void)
{
    key_ok = pthread_key_create(&cache_key, cache_close) == 0 &&
             pthread_atfork(fork_prepare, fork_done, fork_done) == 0;
}

/* The calling thread's cache: a closed one reopened, or a new one.  NULL
 * when none can be had (the caller then just mallocs). */
static struct task_cache *cache_of_this_thread(void)
{
    if (my_cache)
        return my_cache;
    pthread_once(&key_once, make_key);
    if (!key_ok)
        return NULL;
    pthread_mutex_lock(&all_mu);
    struct task_cache *c = all_caches;
    while (c && !c->ownerless)
        c = c->next;
    if (c) {
        c->ownerless = false;
        atomic_store_explicit(&c->returned, 0, memory_order_relaxed);
    } else if ((c = calloc_aligned(_Alignof(struct task_cache), sizeof(*c)))) {
        c->next = all_caches;
        all_caches = c;
    }
    pthread_mutex_unlock(&all_mu);
    if (c && pthread_setspecific(cache_key, c) != 0) {
        cache_close(c);
        return NULL;
    }
    return my_cache = c;
}

static struct free_block *pop_local(struct task_cache *c)
{
    struct free_block *b = c->local;
    if (b) {
        c->local = b->next;
        c->nlocal -= c->nlocal > 0;
    } else {
        c->nlocal = 0;
    }
    return b;
}

void *nursery__task_cache_get(struct task_cache **home)
{
    struct task_cache *c = cache_of_this_thread();
    *home = c;
    if (!c)
        return malloc(sizeof(struct task));
    if (!c->local) {
        /* The count may miss a push in progress: it is only for trimming. */
        c->local = (struct free_block *)atomic_exchange_explicit(&c->returned, 0,
                                                                 memory_order_acquire);
        /* The givers used the blocks last (see annotate.h). */
        if (c->local)
            nursery__hb_acquire(c);
        c->nlocal = atomic_exchange_explicit(&c->nreturned, 0, memory_order_relaxed);
    }
    struct free_block *b = pop_local(c);
    if (!b)
        return malloc(sizeof(struct task));
    if (c->nlocal > CACHE_KEEP) {
        /* A burst came back: free one more block per block taken, until
         * what is kept is what a burst of this size needs.  (Counting or
         * cutting the list at once would walk blocks that other CPUs
         * wrote last, a cache miss each.) */
        free(pop_local(c));
    }
    return b;
}

void nursery__task_cache_put(void *mem, struct task_cache *home)
{
    struct free_block *b = mem;
    if (!home) {
        free(b);
    } else if (home == my_cache) {
        if (home->nlocal >= CACHE_KEEP) {
            free(b);
            return;
        }
        b->next = home->local;
        home->local = b;
        home->nlocal++;
    } else {
        nursery__hb_release(home); /* the CAS's release, for TSan */
        uintptr_t head = atomic_load_explicit(&home->returned, memory_order_relaxed);
        do {
            if (head == CLOSED) {
                free(b);
                return;
            }
            b->next = (struct free_block *)head;
        } while (!atomic_compare_exchange_weak_explicit(&home->returned, &head, (uintptr_t)b,
                                                        memory_order_release,
                                                        memory_order_relaxed));
        atomic_fetch_add_explicit(&home->nreturned, 1, memory_order_relaxed);
    }
}
