/* SPDX-License-Identifier: MIT */
/*
 * toypool.c - the design a first attempt would make, as a peer for the benchmark.
 *
 * A fixed set of threads takes tasks from one FIFO guarded by one mutex and one condition
 * variable.  Every submitted task is a malloc'ed future with its own mutex and condition
 * variable; the submitter waits on each future and frees it.  Nothing is clever: no
 * per-thread queues, no batching, no spinning, no helping (a task that waits for another task
 * holds its thread, so nested waits can deadlock once every thread waits; fib is not run on
 * this pool for that reason).
 *
 * Locking: pool.mu protects head, tail and stop; future.mu protects done.  They are never
 * held together.
 */
#include "bench.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct toyfuture {
    void (*fn)(void *arg);  /* the task; fixed */
    void *arg;              /* its argument; fixed */
    struct toyfuture *next; /* (pool.mu) next in the FIFO while queued */
    pthread_mutex_t mu;     /* protects done */
    pthread_cond_t cv;      /* signalled when done becomes true */
    bool done;              /* (mu) the task has returned */
};

struct toypool {
    pthread_mutex_t mu;     /* protects head, tail, stop */
    pthread_cond_t cv;      /* signalled when a task is queued or stop is set */
    struct toyfuture *head; /* (mu) oldest queued task, NULL when empty */
    struct toyfuture *tail; /* (mu) newest queued task */
    bool stop;              /* (mu) set by destroy: workers exit once the FIFO is empty */
    size_t nthreads;        /* fixed */
    pthread_t threads[];    /* fixed */
};

static void *toy_worker(void *arg)
{
    toypool_t *p = arg;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop)
            pthread_cond_wait(&p->cv, &p->mu);
        struct toyfuture *f = p->head;
        if (!f)
            break; /* stop, and nothing left to run */
        p->head = f->next;
        pthread_mutex_unlock(&p->mu);

        f->fn(f->arg);
        pthread_mutex_lock(&f->mu);
        f->done = true;
        pthread_cond_signal(&f->cv);
        pthread_mutex_unlock(&f->mu);

        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

toypool_t *toypool_create(size_t threads)
{
    toypool_t *p = calloc(1, sizeof *p + threads * sizeof p->threads[0]);
    if (!p)
        bench_die("toypool: out of memory");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->nthreads = threads;
    for (size_t i = 0; i < threads; i++)
        if (pthread_create(&p->threads[i], NULL, toy_worker, p) != 0)
            bench_die("toypool: cannot create thread %zu", i);
    return p;
}

void toypool_destroy(toypool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

toyfuture_t *toypool_submit(toypool_t *p, void (*fn)(void *arg), void *arg)
{
    toyfuture_t *f = malloc(sizeof *f);
    if (!f)
        bench_die("toypool: out of memory");
    f->fn = fn;
    f->arg = arg;
    f->next = NULL;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    f->done = false;

    pthread_mutex_lock(&p->mu);
    if (p->head)
        p->tail->next = f;
    else
        p->head = f; /* tail is stale once the FIFO empties */
    p->tail = f;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return f;
}

void toyfuture_wait_free(toyfuture_t *f)
{
    pthread_mutex_lock(&f->mu);
    while (!f->done)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

/* ------------------------------------------------------------------------ */
/* Workloads on the toy pool                                                */
/* ------------------------------------------------------------------------ */

/* The pool's tasks take one pointer, so each workload passes a pointer into an array of
 * small per-task records that it allocates (and frees) as part of the run. */

struct slot_task {
    long *slots;
    size_t i;
};

static void store_task(void *arg)
{
    struct slot_task *t = arg;
    t->slots[t->i] = 2 * (long)t->i;
}

static void fan_out_slots(toypool_t *p, long *slots, size_t n)
{
    struct slot_task *args = malloc(n * sizeof *args);
    toyfuture_t **fs = malloc(n * sizeof *fs);
    if (!args || !fs)
        bench_die("toypool: out of memory");
    for (size_t i = 0; i < n; i++) {
        args[i] = (struct slot_task){slots, i};
        fs[i] = toypool_submit(p, store_task, &args[i]);
    }
    for (size_t i = 0; i < n; i++)
        toyfuture_wait_free(fs[i]);
    free(fs);
    free(args);
}

void toy_spawn_join(toypool_t *p, long *slots, size_t n)
{
    fan_out_slots(p, slots, n);
}

struct nested_task {
    toypool_t *pool;
    long *slots;
    size_t n;
};

static void nested_fan_out(void *arg)
{
    struct nested_task *t = arg;
    fan_out_slots(t->pool, t->slots, t->n);
}

void toy_spawn_join_nested(toypool_t *p, long *slots, size_t n)
{
    /* The outer task holds one thread while it waits; with one thread this would deadlock. */
    if (p->nthreads < 2)
        bench_die("toypool: spawn_join_nested needs at least 2 threads");
    struct nested_task t = {p, slots, n};
    toyfuture_wait_free(toypool_submit(p, nested_fan_out, &t));
}

struct chunk_task {
    const double *a;
    size_t len;
    double *out;
};

static void chunk_sum(void *arg)
{
    struct chunk_task *t = arg;
    *t->out = bench_sum_sqrt(t->a, t->len);
}

void toy_map_sum(toypool_t *p, const double *a, size_t n, size_t chunks, double *part)
{
    struct chunk_task *args = malloc(chunks * sizeof *args);
    toyfuture_t **fs = malloc(chunks * sizeof *fs);
    if (!args || !fs)
        bench_die("toypool: out of memory");
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
        args[c] = (struct chunk_task){a + lo, hi - lo, &part[c]};
        fs[c] = toypool_submit(p, chunk_sum, &args[c]);
    }
    for (size_t c = 0; c < chunks; c++)
        toyfuture_wait_free(fs[c]);
    free(fs);
    free(args);
}

struct nap_task {
    int64_t ns;
    unsigned char *done;
};

static void nap(void *arg)
{
    struct nap_task *t = arg;
    bench_nap(t->ns);
    *t->done = 1;
}

void toy_blocking_fanout(toypool_t *p, size_t k, int64_t ns, unsigned char *done)
{
    struct nap_task *args = malloc(k * sizeof *args);
    toyfuture_t **fs = malloc(k * sizeof *fs);
    if (!args || !fs)
        bench_die("toypool: out of memory");
    for (size_t i = 0; i < k; i++) {
        args[i] = (struct nap_task){ns, &done[i]};
        fs[i] = toypool_submit(p, nap, &args[i]);
    }
    for (size_t i = 0; i < k; i++)
        toyfuture_wait_free(fs[i]);
    free(fs);
    free(args);
}

struct blocker {
    bench_gate_t *entered; /* opened by the task once it runs */
    bench_gate_t *gate;    /* the task waits here */
};

static void block_worker(void *arg)
{
    struct blocker *b = arg;
    bench_gate_open(b->entered);
    bench_gate_wait(b->gate);
}

size_t toy_queued_memory(long *slots, size_t n)
{
    toypool_t *p = toypool_create(1);
    struct blocker b = {bench_gate_create(), bench_gate_create()};
    /* The user's own arrays are allocated and touched before the first RSS reading. */
    toyfuture_t **fs = malloc(n * sizeof *fs);
    struct slot_task *args = malloc(n * sizeof *args);
    if (!fs || !args)
        bench_die("toypool: out of memory");
    for (size_t i = 0; i < n; i++) {
        args[i] = (struct slot_task){slots, i};
        fs[i] = NULL;
    }

    /* Once the single worker runs block_worker, nothing else can start. */
    toyfuture_t *blocker = toypool_submit(p, block_worker, &b);
    bench_gate_wait(b.entered);

    bench_mem_t before = bench_mem_now();
    for (size_t i = 0; i < n; i++)
        fs[i] = toypool_submit(p, store_task, &args[i]);
    bench_mem_t after = bench_mem_now();

    bench_gate_open(b.gate);
    toyfuture_wait_free(blocker);
    for (size_t i = 0; i < n; i++)
        toyfuture_wait_free(fs[i]);
    free(args);
    free(fs);
    bench_gate_destroy(b.entered);
    bench_gate_destroy(b.gate);
    toypool_destroy(p);
    return bench_mem_growth(before, after);
}

static void pin_task(void *arg)
{
    bench_pin_self(*(int *)arg);
}

static void echo_task(void *arg)
{
    size_t *box = arg;
    *box += 1;
}

void toy_pingpong(size_t rounds, int cpu, int64_t *wall_ns, int64_t *cpu_ns)
{
    toypool_t *p = toypool_create(1);
    toyfuture_wait_free(toypool_submit(p, pin_task, &cpu));

    size_t box = 0;
    int64_t t0 = bench_now_ns(), c0 = bench_thread_cpu_ns();
    for (size_t r = 0; r < rounds; r++) {
        toyfuture_wait_free(toypool_submit(p, echo_task, &box));
        if (box != r + 1)
            bench_die("toypool: wake_latency round %zu saw %zu", r, box);
    }
    *cpu_ns = bench_thread_cpu_ns() - c0;
    *wall_ns = bench_now_ns() - t0;
    toypool_destroy(p);
}
