/* SPDX-License-Identifier: MIT */
/*
 * peers_pthread.c - the peer without a pool: one POSIX thread per task, created and then
 * joined, the raw mutex+condvar ping-pong that wake_latency compares with, and the
 * hand-written cancellation floors of cancel_latency and poll_cancel.
 *
 * Threads get small stacks (64 KiB) so that ten thousand of them fit comfortably; the
 * driver caps spawn_join's task count for this peer, since a million thread creations would
 * take longer than the rest of the benchmark together.
 */
#include "bench.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define THREAD_STACK (64 * 1024)

/* Starts fn(args + i * size) in a new thread for each i < n (size 0: the same argument for
 * all); returns the threads, for threads_join. */
static pthread_t *threads_start(size_t n, void *(*fn)(void *), void *args, size_t size)
{
    pthread_t *tids = malloc(n * sizeof *tids);
    pthread_attr_t attr;
    if (!tids)
        bench_die("pthread: out of memory");
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, THREAD_STACK);
    for (size_t i = 0; i < n; i++)
        if (pthread_create(&tids[i], &attr, fn, (char *)args + i * size) != 0)
            bench_die("pthread: cannot create thread %zu of %zu", i, n);
    pthread_attr_destroy(&attr);
    return tids;
}

static void threads_join(pthread_t *tids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        pthread_join(tids[i], NULL);
    free(tids);
}

/* One thread per task: fn(args + i * size) for each i < n, then join all. */
static void thread_per_task(size_t n, void *(*fn)(void *), void *args, size_t size)
{
    threads_join(threads_start(n, fn, args, size), n);
}

struct slot_task {
    long *slots;
    size_t i;
};

static void *store(void *arg)
{
    struct slot_task *t = arg;
    t->slots[t->i] = 2 * (long)t->i;
    return NULL;
}

void pt_spawn_join(long *slots, size_t n)
{
    struct slot_task *args = malloc(n * sizeof *args);
    if (!args)
        bench_die("pthread: out of memory");
    for (size_t i = 0; i < n; i++)
        args[i] = (struct slot_task){slots, i};
    thread_per_task(n, store, args, sizeof *args);
    free(args);
}

struct nested {
    long *slots;
    size_t n;
};

static void *nested_fan_out(void *arg)
{
    struct nested *t = arg;
    pt_spawn_join(t->slots, t->n);
    return NULL;
}

void pt_spawn_join_nested(long *slots, size_t n)
{
    struct nested t = {slots, n};
    thread_per_task(1, nested_fan_out, &t, sizeof t);
}

struct chunk_task {
    const double *a;
    size_t len;
    double *out;
};

static void *chunk_sum(void *arg)
{
    struct chunk_task *t = arg;
    *t->out = bench_sum_sqrt(t->a, t->len);
    return NULL;
}

void pt_map_sum(const double *a, size_t n, size_t chunks, double *part)
{
    struct chunk_task *args = malloc(chunks * sizeof *args);
    if (!args)
        bench_die("pthread: out of memory");
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
        args[c] = (struct chunk_task){a + lo, hi - lo, &part[c]};
    }
    thread_per_task(chunks, chunk_sum, args, sizeof *args);
    free(args);
}

struct nap_task {
    int64_t ns;
    unsigned char *done;
};

static void *nap(void *arg)
{
    struct nap_task *t = arg;
    bench_nap(t->ns);
    *t->done = 1;
    return NULL;
}

void pt_blocking_fanout(size_t k, int64_t ns, unsigned char *done)
{
    struct nap_task *args = malloc(k * sizeof *args);
    if (!args)
        bench_die("pthread: out of memory");
    for (size_t i = 0; i < k; i++)
        args[i] = (struct nap_task){ns, &done[i]};
    thread_per_task(k, nap, args, sizeof *args);
    free(args);
}

/* ------------------------------------------------------------------------ */
/* cancel_latency by hand: a flag, a condition variable, a thread per task  */
/* ------------------------------------------------------------------------ */

struct cancel_flag {
    pthread_mutex_t mu;   /* protects asleep, cancelled */
    pthread_cond_t cv;    /* the sleepers wait here for `cancelled`, the caller for `asleep` */
    size_t asleep;        /* (mu) sleepers that have started waiting */
    bool cancelled;       /* (mu) */
};

static void *cancellable_sleeper(void *arg)
{
    struct cancel_flag *c = arg;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&c->mu);
    c->asleep++; /* seen by the caller only once we wait, since we hold mu until then */
    pthread_cond_broadcast(&c->cv);
    while (!c->cancelled)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0)
            break;
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

int64_t pt_cancel_latency(size_t k)
{
    struct cancel_flag c = {.asleep = 0, .cancelled = false};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    pthread_t *tids = threads_start(k, cancellable_sleeper, &c, 0);
    pthread_mutex_lock(&c.mu);
    while (c.asleep < k)
        pthread_cond_wait(&c.cv, &c.mu);
    int64_t t0 = bench_now_ns();
    c.cancelled = true;
    pthread_cond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    threads_join(tids, k);
    int64_t elapsed = bench_now_ns() - t0;
    pthread_cond_destroy(&c.cv);
    pthread_mutex_destroy(&c.mu);
    return elapsed;
}

/* ------------------------------------------------------------------------ */
/* poll_cancel by hand: a flag, and a byte down every pipe                  */
/* ------------------------------------------------------------------------ */

struct poll_flag {
    atomic_size_t polling; /* threads about to poll */
    atomic_size_t woken;   /* threads that saw the flag when their poll returned */
    atomic_bool cancelled;
};

struct polling_thread {
    struct poll_flag *f;
    int fd; /* the read end of its pipe */
};

static void *poll_until_cancelled(void *arg)
{
    struct polling_thread *t = arg;
    struct pollfd pfd = {.fd = t->fd, .events = POLLIN};
    atomic_fetch_add(&t->f->polling, 1);
    for (;;) {
        int r = poll(&pfd, 1, 60000);
        if (r < 0 && errno == EINTR)
            continue;
        if (atomic_load(&t->f->cancelled))
            atomic_fetch_add(&t->f->woken, 1);
        return NULL; /* woken (or an error, or 60 s passed: the count shows it) */
    }
}

int64_t pt_poll_cancel(size_t k)
{
    struct poll_flag f = {.polling = 0, .woken = 0, .cancelled = false};
    struct polling_thread *args = malloc(k * sizeof *args);
    int *fds = bench_pipes_open(k);
    if (!args)
        bench_die("pthread: out of memory");
    for (size_t i = 0; i < k; i++)
        args[i] = (struct polling_thread){&f, fds[2 * i]};
    pthread_t *tids = threads_start(k, poll_until_cancelled, args, sizeof *args);
    /* Not measured: every thread is about to poll; then a moment for the last ones to get
     * into poll(2) (libnursery's side waits as long). */
    while (atomic_load(&f.polling) < k)
        bench_nap(1000000);
    bench_nap(10000000);

    int64_t t0 = bench_now_ns();
    atomic_store(&f.cancelled, true);
    for (size_t i = 0; i < k; i++)
        if (write(fds[2 * i + 1], "x", 1) != 1)
            bench_die("pthread: cannot write to pipe %zu", i);
    threads_join(tids, k);
    int64_t elapsed = bench_now_ns() - t0;

    if (atomic_load(&f.woken) != k)
        bench_die("pthread: poll_cancel: %zu of %zu threads saw the flag", atomic_load(&f.woken),
                  k);
    bench_pipes_close(fds, k);
    free(args);
    return elapsed;
}

/* ------------------------------------------------------------------------ */
/* Raw condvar ping-pong                                                    */
/* ------------------------------------------------------------------------ */

struct pingpong {
    pthread_mutex_t mu;    /* protects ping, pong, stop */
    pthread_cond_t pinged; /* the partner waits here for ping != pong */
    pthread_cond_t ponged; /* the caller waits here for pong == ping */
    size_t ping;           /* (mu) rounds asked by the caller */
    size_t pong;           /* (mu) rounds answered by the partner */
    bool stop;             /* (mu) the partner exits */
    int cpu;               /* where the partner runs; fixed */
};

static void *partner(void *arg)
{
    struct pingpong *pp = arg;

    bench_pin_self(pp->cpu);
    pthread_mutex_lock(&pp->mu);
    for (;;) {
        while (pp->ping == pp->pong && !pp->stop)
            pthread_cond_wait(&pp->pinged, &pp->mu);
        if (pp->stop)
            break;
        pp->pong = pp->ping;
        pthread_cond_signal(&pp->ponged);
    }
    pthread_mutex_unlock(&pp->mu);
    return NULL;
}

void pt_pingpong(size_t rounds, int cpu, int64_t *wall_ns, int64_t *cpu_ns)
{
    struct pingpong pp = {.cpu = cpu};
    pthread_t tid;

    pthread_mutex_init(&pp.mu, NULL);
    pthread_cond_init(&pp.pinged, NULL);
    pthread_cond_init(&pp.ponged, NULL);
    if (pthread_create(&tid, NULL, partner, &pp) != 0)
        bench_die("pthread: cannot create the ping-pong partner");

    /* One untimed round: the partner has started (and pinned itself) afterwards. */
    int64_t t0 = 0, c0 = 0;
    pthread_mutex_lock(&pp.mu);
    for (size_t r = 0; r <= rounds; r++) {
        if (r == 1) {
            t0 = bench_now_ns();
            c0 = bench_thread_cpu_ns();
        }
        pp.ping++;
        pthread_cond_signal(&pp.pinged);
        while (pp.pong != pp.ping)
            pthread_cond_wait(&pp.ponged, &pp.mu);
    }
    *cpu_ns = bench_thread_cpu_ns() - c0;
    *wall_ns = bench_now_ns() - t0;
    pp.stop = true;
    pthread_cond_signal(&pp.pinged);
    pthread_mutex_unlock(&pp.mu);

    pthread_join(tid, NULL);
    if (pp.pong != rounds + 1)
        bench_die("pthread: ping-pong answered %zu of %zu rounds", pp.pong, rounds + 1);
    pthread_cond_destroy(&pp.ponged);
    pthread_cond_destroy(&pp.pinged);
    pthread_mutex_destroy(&pp.mu);
}
