/* SPDX-License-Identifier: MIT */
/*
 * trace.c - the threads' records of what they do, and the registries of
 * records and pools that nursery_dump() walks (see trace.h).
 *
 * Why a dump may read the nurseries it finds in a record's frames.  Dumps
 * count themselves in `dumping` (seq_cst) before they read any record, and
 * read a record's frames holding its mutex.  A join pops the nursery's
 * frame (a seq_cst store of the depth), then, if a dump is counted, takes
 * and drops the record's mutex, and only then may free the nursery.
 * Suppose a dump reads depth d (seq_cst) and finds nursery N, stable under
 * the seqlock, in slot i < d.  If N's pop saw a dump counted, it waits for
 * the mutex the dump holds, or it got the mutex first and the dump sees its
 * pop.  If it saw none, the pop comes before the dump's count in the single
 * order of seq_cst operations, so the dump's depth load sees the pop (depth
 * i) or a later push, and a push at slot i writes the slot before it stores
 * the depth: the slot would not hold N's old frame.  Either way N is open,
 * or it is not freed, until the dump lets go of the mutex.  No lock is
 * taken on the way of a task, an open or a join while nobody dumps.
 *
 * fork(): the registry's lock is taken around fork(), so the child never
 * inherits a dump half done; records of threads that did not survive are
 * left in place, marked gone (a dump skips them: their locks may be held;
 * they stay reachable for leak checkers).
 */
#include "trace.h"
#include "pool.h"

#include <errno.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct list threads = {&threads, &threads}; /* (registry_mu) */
static struct list pools = {&pools, &pools};       /* (registry_mu) */
static atomic_int dumping;                         /* dumps reading the records now */
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t key; /* its destructor unregisters the thread's record */
static bool key_ok;

int_fast64_t nursery__coarse_now(void)
{
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
        return (int_fast64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#endif
    return nursery_now();
}

/* ---- the registry ------------------------------------------------------ */

void nursery__trace_lock(void)
{
    pthread_mutex_lock(&registry_mu);
    atomic_fetch_add_explicit(&dumping, 1, memory_order_seq_cst);
}

void nursery__trace_unlock(void)
{
    atomic_fetch_sub_explicit(&dumping, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&registry_mu);
}

struct list *nursery__trace_threads(void)
{
    return &threads;
}

struct list *nursery__trace_pools(void)
{
    return &pools;
}

void nursery__trace_pool_add(nursery_pool_t *p)
{
    pthread_mutex_lock(&registry_mu);
    list_push_back(&pools, &p->registry_link);
    pthread_mutex_unlock(&registry_mu);
}

void nursery__trace_pool_remove(nursery_pool_t *p)
{
    pthread_mutex_lock(&registry_mu);
    list_remove(&p->registry_link);
    pthread_mutex_unlock(&registry_mu);
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&registry_mu);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&registry_mu);
}

static void fork_child(void)
{
    struct trace_thread *self = nursery__ctx.trace;
    struct list *pos;
    list_for_each(pos, &threads)
    {
        struct trace_thread *tt = list_entry(pos, struct trace_thread, link);
        tt->gone = tt != self;
    }
    if (self) {
        pthread_mutex_init(&self->mu, NULL);
        self->thread = pthread_self();
#ifdef __linux__
        self->tid = (int)syscall(SYS_gettid);
#endif
    }
    pthread_mutex_unlock(&registry_mu);
}

static void unregister(void *arg)
{
    struct trace_thread *tt = arg;
    pthread_mutex_lock(&registry_mu);
    list_remove(&tt->link);
    pthread_mutex_unlock(&registry_mu);
    if (nursery__ctx.trace == tt)
        nursery__ctx.trace = NULL;
    pthread_mutex_destroy(&tt->mu);
    free(tt);
}

static void make_key(void)
{
    key_ok = pthread_key_create(&key, unregister) == 0 &&
             pthread_atfork(fork_prepare, fork_parent, fork_child) == 0;
}

void nursery__trace_register(void)
{
    if (likely(nursery__ctx.trace))
        return;
    pthread_once(&key_once, make_key);
    if (!key_ok)
        return;
    struct trace_thread *tt = calloc(1, sizeof(*tt));
    if (!tt)
        return;
    pthread_mutex_init(&tt->mu, NULL);
    tt->thread = pthread_self();
#ifdef __linux__
    tt->tid = (int)syscall(SYS_gettid);
#endif
    tt->worker = nursery__ctx.worker != NULL;
    if (pthread_setspecific(key, tt) != 0) {
        pthread_mutex_destroy(&tt->mu);
        free(tt);
        return;
    }
    pthread_mutex_lock(&registry_mu);
    list_push_back(&threads, &tt->link);
    pthread_mutex_unlock(&registry_mu);
    nursery__ctx.trace = tt;
}

/* ---- frames ------------------------------------------------------------ */

/* The seqlock's writer side (Boehm, "Can seqlocks get along with
 * programming language memory models?"): odd, fence, relaxed stores, even
 * with release.  On x86 none of it is a locked instruction. */
static unsigned write_begin(atomic_uint *seq)
{
    unsigned s = atomic_load_explicit(seq, memory_order_relaxed) + 1;
    atomic_store_explicit(seq, s, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    return s;
}

static void write_end(atomic_uint *seq, unsigned s)
{
    atomic_store_explicit(seq, s + 1, memory_order_release);
}

void nursery__trace_frame_write(struct trace_frame *f, int kind, const void *object,
                                const void *parent, const char *name, int_fast64_t since)
{
    uint64_t words[TRACE_NAME_WORDS] = {0};
    size_t len = 0;
    if (name) {
        len = strnlen(name, sizeof(words) - 1);
        memcpy(words, name, len);
    }
    unsigned s = write_begin(&f->seq);
    atomic_store_explicit(&f->kind, kind, memory_order_relaxed);
    atomic_store_explicit(&f->object, object, memory_order_relaxed);
    atomic_store_explicit(&f->parent, parent, memory_order_relaxed);
    atomic_store_explicit(&f->since, since, memory_order_relaxed);
    /* Only the words the name uses, and the one that ends it. */
    for (size_t i = 0; i <= len / 8 && i < TRACE_NAME_WORDS; i++)
        atomic_store_explicit(&f->name[i], words[i], memory_order_relaxed);
    write_end(&f->seq, s);
}

bool nursery__trace_frame_read(struct trace_frame *f, struct frame_copy *out)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned s = atomic_load_explicit(&f->seq, memory_order_acquire);
        if (s & 1)
            continue;
        out->kind = atomic_load_explicit(&f->kind, memory_order_relaxed);
        out->object = atomic_load_explicit(&f->object, memory_order_relaxed);
        out->parent = atomic_load_explicit(&f->parent, memory_order_relaxed);
        out->since = atomic_load_explicit(&f->since, memory_order_relaxed);
        uint64_t words[TRACE_NAME_WORDS] = {0};
        for (size_t i = 0; i < TRACE_NAME_WORDS; i++) {
            words[i] = atomic_load_explicit(&f->name[i], memory_order_relaxed);
            if (memchr(&words[i], 0, sizeof(words[i])))
                break;
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&f->seq, memory_order_relaxed) != s)
            continue;
        memcpy(out->name, words, sizeof(out->name) - 1);
        out->name[sizeof(out->name) - 1] = '\0';
        out->name[strnlen(out->name, sizeof(out->name))] = '\0';
        return out->kind == FRAME_TASK || out->kind == FRAME_NURSERY;
    }
    return false;
}

void nursery__trace_nursery_push(const nursery_t *n)
{
    nursery__trace_register();
    struct trace_thread *tt = nursery__ctx.trace;
    if (!tt)
        return;
    int d = atomic_load_explicit(&tt->depth, memory_order_relaxed);
    if (d < TRACE_FRAMES)
        nursery__trace_frame_write(&tt->frames[d], FRAME_NURSERY, n, n->opener_task, NULL,
                                   n->opened_at);
    atomic_store_explicit(&tt->depth, d + 1, memory_order_release);
}

void nursery__trace_nursery_pop(void)
{
    struct trace_thread *tt = nursery__ctx.trace;
    if (!tt)
        return;
    atomic_store_explicit(&tt->depth, atomic_load_explicit(&tt->depth, memory_order_relaxed) - 1,
                          memory_order_seq_cst);
    /* A dump may be reading the nursery: it is done with it when it lets
     * go of the mutex (see the top of the file). */
    if (atomic_load_explicit(&dumping, memory_order_seq_cst) > 0) {
        pthread_mutex_lock(&tt->mu);
        pthread_mutex_unlock(&tt->mu);
    }
}

/* ---- what a parked thread waits for ------------------------------------ */

void nursery__trace_block(const struct blocked_on *b, int_fast64_t since, nursery_time_t until)
{
    struct trace_thread *tt = nursery__ctx.trace;
    if (!tt)
        return;
    struct trace_blocked *r = &tt->blocked;
    unsigned s = write_begin(&r->seq);
    atomic_store_explicit(&r->kind, b->kind, memory_order_relaxed);
    atomic_store_explicit(&r->object, b->object, memory_order_relaxed);
    atomic_store_explicit(&r->arg, b->arg, memory_order_relaxed);
    atomic_store_explicit(&r->count, b->count, memory_order_relaxed);
    atomic_store_explicit(&r->since, since, memory_order_relaxed);
    atomic_store_explicit(&r->until, until, memory_order_relaxed);
    write_end(&r->seq, s);
}

void nursery__trace_unblock(void)
{
    struct trace_thread *tt = nursery__ctx.trace;
    if (!tt)
        return;
    unsigned s = write_begin(&tt->blocked.seq);
    atomic_store_explicit(&tt->blocked.kind, BLOCKED_NONE, memory_order_relaxed);
    write_end(&tt->blocked.seq, s);
}

bool nursery__trace_blocked_read(struct trace_blocked *b, struct blocked_copy *out)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        unsigned s = atomic_load_explicit(&b->seq, memory_order_acquire);
        if (s & 1)
            continue;
        out->kind = atomic_load_explicit(&b->kind, memory_order_relaxed);
        out->object = atomic_load_explicit(&b->object, memory_order_relaxed);
        out->arg = atomic_load_explicit(&b->arg, memory_order_relaxed);
        out->count = atomic_load_explicit(&b->count, memory_order_relaxed);
        out->since = atomic_load_explicit(&b->since, memory_order_relaxed);
        out->until = atomic_load_explicit(&b->until, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&b->seq, memory_order_relaxed) == s)
            return true;
    }
    return false;
}
