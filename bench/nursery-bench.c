/* SPDX-License-Identifier: MIT */
/*
 * nursery-bench.c - libnursery's benchmark: each workload with libnursery and with its peers
 * in one process, alternating, several repetitions, medians.
 *
 * For every workload the driver prepares the input, runs one untimed warm-up per
 * implementation, then `reps` repetitions in which every implementation runs once (the order
 * rotates from one repetition to the next), checks every answer, and prints the medians (of
 * a peak, the largest) with the smallest and the largest repetition:
 *
 *     RESULT workload=<name> impl=<impl> value=<median> unit=<unit> min=<min> max=<max>
 *     RATIO workload=<name> nursery/<peer>=<nursery's median / the peer's>
 *
 * (or, for a workload this machine cannot run, "SKIP workload=<name> reason=<why>")
 * on stdout (progress and notes go to stderr: first the load average, with a warning when the
 * machine is busy), then writes results.csv and, when gnuplot is installed, ratios.svg into
 * the output directory.  Every unit is "lower is better", so a ratio below 1 means libnursery
 * did better.  See bench/README.md.
 *
 * libnursery runs on its default pool unless a workload says otherwise; the peers are in
 * peers_*.c, peers_tbb.cc and toypool.c.  A wrong answer anywhere ends the run (bench_die).
 */
#include "bench.h"

#include <nursery.h>

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

/* glibc: mallinfo2 (2.33) counts the heap in use, malloc_trim returns free heap memory. */
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
#define HAVE_MALLINFO2 1
#else
#define HAVE_MALLINFO2 0
#endif

/* ------------------------------------------------------------------------ */
/* Helpers shared with the peers (bench.h)                                  */
/* ------------------------------------------------------------------------ */

void bench_die(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("nursery-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t bench_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_nap(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        continue;
}

void bench_pin_self(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (rc != 0)
        bench_die("cannot pin a thread to CPU %d: %s", cpu, strerror(rc));
}

bench_mem_t bench_mem_now(void)
{
    bench_mem_t m = {0, 0};
    unsigned long size, resident;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%lu %lu", &size, &resident) != 2)
        bench_die("cannot read /proc/self/statm");
    fclose(f);
    m.rss = (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
#if HAVE_MALLINFO2
    struct mallinfo2 mi = mallinfo2();
    m.heap = mi.uordblks + mi.hblkhd;
#endif
    return m;
}

size_t bench_mem_growth(bench_mem_t before, bench_mem_t after)
{
    size_t rss = after.rss > before.rss ? after.rss - before.rss : 0;
    size_t heap = after.heap > before.heap ? after.heap - before.heap : 0;
    return rss > heap ? rss : heap;
}

/* Out of line, so that every implementation calls the same machine code. */
__attribute__((noinline)) long bench_fib_seq(int n)
{
    return n < 2 ? n : bench_fib_seq(n - 1) + bench_fib_seq(n - 2);
}

/* fib(17) by plain recursion, about 5 000 calls: 4 to 10 µs of CPU. */
#define MAP_ITEM_FIB 17
#define MAP_ITEM_ANSWER 1597

void bench_map_item(size_t i)
{
    long r = bench_fib_seq(MAP_ITEM_FIB);
    if (r != MAP_ITEM_ANSWER)
        bench_die("map_ordered: item %zu computed %ld", i, r);
}

__attribute__((noinline)) double bench_sum_sqrt(const double *a, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += sqrt(a[i]);
    return s;
}

/* Branch-free: which side the next element comes from is random, so a branch on it would be
 * mispredicted half the time, and the sort would measure the branch predictor. */
__attribute__((noinline)) void bench_merge(const int *a, size_t na, const int *b, size_t nb,
                                           int *out)
{
    const int *a_end = a + na, *b_end = b + nb;
    while (a < a_end && b < b_end) {
        int x = *a, y = *b, take_b = y < x;
        *out++ = take_b ? y : x;
        a += !take_b;
        b += take_b;
    }
    while (a < a_end)
        *out++ = *a++;
    while (b < b_end)
        *out++ = *b++;
}

__attribute__((noinline)) void bench_merge_sort_seq(const int *in, int *out, int *tmp, size_t n)
{
    if (n <= 16) { /* insertion sort, straight from in into out */
        for (size_t i = 0; i < n; i++) {
            int v = in[i];
            size_t j = i;
            for (; j > 0 && out[j - 1] > v; j--)
                out[j] = out[j - 1];
            out[j] = v;
        }
        return;
    }
    size_t h = n / 2;
    bench_merge_sort_seq(in, tmp, out, h);
    bench_merge_sort_seq(in + h, tmp + h, out + h, n - h);
    bench_merge(tmp, h, tmp + h, n - h, out);
}

struct bench_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open; /* (mu) set once by bench_gate_open */
};

bench_gate_t *bench_gate_create(void)
{
    bench_gate_t *g = malloc(sizeof *g);
    if (!g)
        bench_die("out of memory");
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = false;
    return g;
}

/* Gives up after a minute: no workload keeps a gate closed for that long, so a peer that
 * never ran the task it was given ends the run instead of hanging it. */
void bench_gate_wait(bench_gate_t *g)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 60;
    pthread_mutex_lock(&g->mu);
    while (!g->open)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &deadline) == ETIMEDOUT)
            bench_die("a gate stayed closed for a minute: some task never ran");
    pthread_mutex_unlock(&g->mu);
}

void bench_gate_open(bench_gate_t *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

void bench_gate_destroy(bench_gate_t *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* ------------------------------------------------------------------------ */
/* Implementations and settings                                             */
/* ------------------------------------------------------------------------ */

enum impl { NURSERY, OPENMP, TBB, PTHREAD, TOYPOOL, CAPTURES, SEQUENTIAL, NIMPLS };

static const char *const impl_names[NIMPLS] = {"nursery", "openmp",   "tbb",       "pthread",
                                               "toypool", "captures", "sequential"};

#define ALL_IMPLS ((1u << NIMPLS) - 1)

/* The peers this binary was built with. */
static unsigned impls_built(void)
{
    unsigned m = ALL_IMPLS;
#ifndef _OPENMP
    m &= ~(1u << OPENMP);
#endif
#ifndef BENCH_HAVE_TBB
    m &= ~(1u << TBB);
#endif
    return m;
}

static struct config {
    unsigned impls;       /* -i: the implementations to run */
    int reps;             /* -r: timed repetitions per implementation */
    bool verbose;         /* -v: every sample on stderr */
    const char *outdir;   /* -o: where results.csv and ratios.svg go */
    size_t spawn_tasks;   /* -n: spawn_join and spawn_join_nested */
    size_t pthread_tasks; /* the same for one thread per task (capped) */
    int fib_n;            /* --fib */
    size_t sum_len;       /* map_sum: doubles */
    size_t sum_chunks;    /* map_sum: tasks */
    size_t map_items;     /* map_ordered: items */
    size_t map_limit;     /* map_ordered: items in flight */
    size_t burst_len;     /* fork_join_burst: ints per sort */
    int burst_calls;      /* fork_join_burst: sorts back to back */
    size_t wake_rounds;   /* wake_latency: round trips per run */
    size_t fanout_tasks;  /* blocking_fanout: tasks */
    int64_t fanout_ns;    /* blocking_fanout: each task's nanosleep */
    size_t cancel_tasks;  /* cancel_latency: sleeping tasks */
    size_t poll_tasks;    /* poll_cancel: tasks blocked in nursery_poll */
    size_t queued_tasks;  /* queued_memory: tasks queued */
    size_t idle_burst;    /* idle_cpu: spawn_join tasks before the idle second */
    int64_t idle_ns;      /* idle_cpu: how long the main thread sleeps */
} cfg = {
    .impls = ALL_IMPLS,
    .reps = 5,
    .outdir = ".",
    .spawn_tasks = 1000000,
    .pthread_tasks = 10000,
    .fib_n = 38,
    .sum_len = 10000000,
    .sum_chunks = 1000,
    .map_items = 100000,
    .map_limit = 64,
    .burst_len = 1u << 21,
    .burst_calls = 15,
    .wake_rounds = 10000,
    .fanout_tasks = 64,
    .fanout_ns = 10000000,
    .cancel_tasks = 1000,
    .poll_tasks = 1000,
    .queued_tasks = 1000000,
    .idle_burst = 100000,
    .idle_ns = 1000000000,
};

static size_t ncpu;            /* CPUs this process may run on */
static int cpu_waiter = -1;    /* wake_latency: where the waiting thread runs */
static int cpu_partner = -1;   /* wake_latency: where the task (or partner) runs */
static cpu_set_t cpus_allowed; /* the main thread's affinity at start */
static toypool_t *toy;         /* the toy pool, ncpu threads, alive for the whole run */

static void find_cpus(void)
{
    if (sched_getaffinity(0, sizeof cpus_allowed, &cpus_allowed) != 0)
        bench_die("sched_getaffinity: %s", strerror(errno));
    ncpu = (size_t)CPU_COUNT(&cpus_allowed);
    for (int c = 0; c < CPU_SETSIZE; c++) {
        if (!CPU_ISSET(c, &cpus_allowed))
            continue;
        if (cpu_waiter < 0)
            cpu_waiter = c;
        else if (cpu_partner < 0)
            cpu_partner = c;
    }
    if (cpu_partner < 0) /* one CPU: nothing to pin apart */
        cpu_waiter = -1;
}

/* Prints the load average of the last minute, and a warning when it exceeds half the CPUs
 * online: every figure assumes the benchmark has the machine to itself, and other work that
 * competes for the CPUs makes them unreliable (the spread, min and max, then widens).  The
 * load counts the whole system, so it is compared with the CPUs online, not with those this
 * process may use. */
static void report_load(void)
{
    double load;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (getloadavg(&load, 1) != 1) {
        fprintf(stderr, "nursery-bench: no load average (getloadavg failed)\n");
        return;
    }
    fprintf(stderr, "nursery-bench: load average %.2f over the last minute, %ld CPUs online\n",
            load, online);
    if (online > 0 && load > online / 2.0)
        fprintf(stderr,
                "nursery-bench: warning: the machine is busy (load %.2f on %ld CPUs): other "
                "work competes\nnursery-bench: for the CPUs, and the figures are unreliable\n",
                load, online);
}

static void unpin_self(void)
{
    pthread_setaffinity_np(pthread_self(), sizeof cpus_allowed, &cpus_allowed);
}

/* ------------------------------------------------------------------------ */
/* libnursery's side of each workload                                       */
/* ------------------------------------------------------------------------ */

static void check(int rc, const char *what)
{
    if (rc != 0)
        bench_die("%s: %s", what, nursery_strerror(rc));
}

/* Joins a nursery whose tasks must all succeed. */
static void join_ok(nursery_t *n)
{
    nursery_errors_t *errors = NULL;
    int rc = nursery_join(n, NURSERY_FOREVER, &errors);
    if (rc != 0) {
        nursery_error_t *e = nursery_errors_get(errors, 0);
        bench_die("nursery_join: %s%s%s", nursery_strerror(rc), e ? ": " : "",
                  e ? nursery_error_message(e) : "");
    }
    nursery_errors_free(errors); /* tasks that ended cancelled are counted in a group */
}

/* The slots of spawn_join: a task's argument is its index. */
static long *lib_slots;

static int store_task(void *arg, void **value)
{
    size_t i = (uintptr_t)arg;
    lib_slots[i] = 2 * (long)i;
    (void)value;
    return 0;
}

static void lib_fan_out(nursery_pool_t *pool, size_t n)
{
    nursery_t *nur;
    check(nursery_open(&nur, pool), "nursery_open");
    for (size_t i = 0; i < n; i++)
        check(nursery_start_soon(nur, store_task, (void *)(uintptr_t)i, NULL),
              "nursery_start_soon");
    join_ok(nur);
}

static void lib_spawn_join(long *slots, size_t n)
{
    lib_slots = slots;
    lib_fan_out(NULL, n);
}

static int fan_out_task(void *arg, void **value)
{
    lib_fan_out(NULL, (uintptr_t)arg);
    (void)value;
    return 0;
}

static void lib_spawn_join_nested(long *slots, size_t n)
{
    nursery_t *nur;
    lib_slots = slots;
    check(nursery_open(&nur, NULL), "nursery_open");
    check(nursery_start_soon(nur, fan_out_task, (void *)(uintptr_t)n, NULL), "nursery_start_soon");
    join_ok(nur);
}

/* One call of fib as a task: its own nursery holds the two calls below it. */
struct fib_call {
    nursery_pool_t *pool; /* where the nurseries open (NULL: the default pool) */
    int n;
    long result;
};

static long lib_fib(nursery_pool_t *pool, int n);

static int fib_task(void *arg, void **value)
{
    struct fib_call *c = arg;
    c->result = lib_fib(c->pool, c->n);
    (void)value;
    return 0;
}

static long lib_fib(nursery_pool_t *pool, int n)
{
    if (n < BENCH_FIB_CUTOFF)
        return bench_fib_seq(n);
    struct fib_call a = {pool, n - 1, 0}, b = {pool, n - 2, 0};
    nursery_t *nur;
    check(nursery_open(&nur, pool), "nursery_open");
    check(nursery_start_soon(nur, fib_task, &a, NULL), "nursery_start_soon");
    check(nursery_start_soon(nur, fib_task, &b, NULL), "nursery_start_soon");
    join_ok(nur);
    return a.result + b.result;
}

static long lib_fib_from_task(nursery_pool_t *pool, int n)
{
    struct fib_call root = {pool, n, 0};
    nursery_t *nur;
    check(nursery_open(&nur, pool), "nursery_open");
    check(nursery_start_soon(nur, fib_task, &root, NULL), "nursery_start_soon");
    join_ok(nur);
    return root.result;
}

/* One call of the merge sort as a task: fib's shape, with a merge after the join. */
struct sort_call {
    const int *in; /* sorted into out, with tmp as scratch (bench_merge_sort_seq) */
    int *out;
    int *tmp;
    size_t n;
};

static void lib_merge_sort(const int *in, int *out, int *tmp, size_t n);

static int sort_task(void *arg, void **value)
{
    struct sort_call *c = arg;
    lib_merge_sort(c->in, c->out, c->tmp, c->n);
    (void)value;
    return 0;
}

/* On the default pool.  The halves go into tmp, each with its part of out as scratch; after
 * the join, which makes everything they wrote visible here, they are merged into out. */
static void lib_merge_sort(const int *in, int *out, int *tmp, size_t n)
{
    if (n < BENCH_SORT_CUTOFF) {
        bench_merge_sort_seq(in, out, tmp, n);
        return;
    }
    size_t h = n / 2;
    struct sort_call a = {in, tmp, out, h}, b = {in + h, tmp + h, out + h, n - h};
    nursery_t *nur;
    check(nursery_open(&nur, NULL), "nursery_open");
    check(nursery_start_soon(nur, sort_task, &a, NULL), "nursery_start_soon");
    check(nursery_start_soon(nur, sort_task, &b, NULL), "nursery_start_soon");
    join_ok(nur);
    bench_merge(tmp, h, tmp + h, n - h, out);
}

struct chunk {
    const double *a;
    size_t len;
    double *out;
};

static int chunk_task(void *arg, void **value)
{
    struct chunk *c = arg;
    *c->out = bench_sum_sqrt(c->a, c->len);
    (void)value;
    return 0;
}

static void lib_map_sum(const double *a, size_t n, size_t chunks, double *part)
{
    struct chunk *args = malloc(chunks * sizeof *args);
    nursery_t *nur;
    if (!args)
        bench_die("out of memory");
    check(nursery_open(&nur, NULL), "nursery_open");
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
        args[c] = (struct chunk){a + lo, hi - lo, &part[c]};
        check(nursery_start_soon(nur, chunk_task, &args[c], NULL), "nursery_start_soon");
    }
    join_ok(nur);
    free(args);
}

struct nap {
    int64_t ns;
    unsigned char *done;
};

/* map_ordered: item i runs bench_map_item(i); its value is i, so that the order of the
 * outcomes can be checked. */
static int map_item_task(void *arg, void **value)
{
    size_t i = (size_t)(uintptr_t)arg;
    bench_map_item(i);
    *value = arg;
    return 0;
}

static void lib_map_ordered(void *const *args, size_t n, size_t limit, nursery_outcome_t *out)
{
    nursery_map_options_t opts = {.limit = limit};
    check(nursery_map(NULL, map_item_task, args, n, &opts, out, NULL), "nursery_map");
    for (size_t i = 0; i < n; i++)
        if (out[i].code != 0 || out[i].value != args[i])
            bench_die("map_ordered, nursery: outcome %zu out of order", i);
}

/* The same items by hand: a capture each, all started, then nursery_wait_all. */
static void lib_captures_ordered(void *const *args, size_t n, nursery_result_t **r)
{
    nursery_t *nur;
    check(nursery_open(&nur, NULL), "nursery_open");
    for (size_t i = 0; i < n; i++)
        check(nursery_capture_start_soon(nur, map_item_task, args[i], NULL, &r[i]),
              "nursery_capture_start_soon");
    check(nursery_wait_all(r, n, NURSERY_FOREVER), "nursery_wait_all");
    for (size_t i = 0; i < n; i++) {
        void *v;
        if (nursery_result_value(r[i], &v) != 0 || v != args[i])
            bench_die("map_ordered, captures: result %zu out of order", i);
        nursery_result_release(r[i]);
    }
    join_ok(nur);
}

static int nap_task(void *arg, void **value)
{
    struct nap *t = arg;
    bench_nap(t->ns); /* user code that blocks without telling the library */
    *t->done = 1;
    (void)value;
    return 0;
}

static void lib_blocking_fanout(size_t k, int64_t ns, unsigned char *done)
{
    struct nap *args = malloc(k * sizeof *args);
    nursery_t *nur;
    if (!args)
        bench_die("out of memory");
    check(nursery_open(&nur, NULL), "nursery_open");
    for (size_t i = 0; i < k; i++) {
        args[i] = (struct nap){ns, &done[i]};
        check(nursery_start_soon(nur, nap_task, &args[i], NULL), "nursery_start_soon");
    }
    join_ok(nur);
    free(args);
}

static int pin_task(void *arg, void **value)
{
    bench_pin_self(*(int *)arg);
    (void)value;
    return 0;
}

static int echo_task(void *arg, void **value)
{
    *value = arg;
    return 0;
}

/* The waiter is the calling thread; the task runs on a pool of one thread, which a first
 * task pins to `cpu` (a task may pin the thread it runs on; the API has no other way). */
static void lib_pingpong(size_t rounds, int cpu, int64_t *wall_ns, int64_t *cpu_ns)
{
    nursery_pool_options_t opts = {.threads = 1, .name = "bench-wake"};
    nursery_pool_t *pool;
    nursery_t *nur;
    nursery_result_t *r;
    void *v;

    check(nursery_pool_create(&pool, &opts), "nursery_pool_create");
    check(nursery_open(&nur, pool), "nursery_open");
    check(nursery_capture_start_soon(nur, pin_task, &cpu, NULL, &r), "nursery_capture_start_soon");
    check(nursery_result_wait(r, NURSERY_FOREVER), "nursery_result_wait");
    nursery_result_release(r);

    int64_t t0 = bench_now_ns(), c0 = bench_thread_cpu_ns();
    for (size_t i = 1; i <= rounds; i++) {
        check(nursery_capture_start_soon(nur, echo_task, (void *)(uintptr_t)i, NULL, &r),
              "nursery_capture_start_soon");
        check(nursery_result_wait(r, NURSERY_FOREVER), "nursery_result_wait");
        if (nursery_result_value(r, &v) != 0 || (uintptr_t)v != i)
            bench_die("nursery: wake_latency round %zu got a wrong value", i);
        nursery_result_release(r);
    }
    *cpu_ns = bench_thread_cpu_ns() - c0;
    *wall_ns = bench_now_ns() - t0;

    join_ok(nur);
    check(nursery_pool_destroy(pool), "nursery_pool_destroy");
}

/* cancel_latency: the tasks of one run. */
struct cancel_run {
    nursery_result_t *gate;    /* the failing task waits for this future */
    atomic_size_t sleeping;    /* sleepers that have entered nursery_sleep */
    _Atomic int64_t failed_at; /* when the failing task failed (bench_now_ns) */
};

static int sleeper_task(void *arg, void **value)
{
    struct cancel_run *run = arg;
    atomic_fetch_add(&run->sleeping, 1);
    (void)value;
    return nursery_sleep(nursery_after_ms(60000)); /* ECANCELED, we hope, long before */
}

static int failing_task(void *arg, void **value)
{
    struct cancel_run *run = arg;
    int rc = nursery_result_wait(run->gate, NURSERY_FOREVER);
    if (rc != 0)
        return rc;
    (void)value;
    atomic_store(&run->failed_at, bench_now_ns());
    return nursery_fail(EIO, "the planned failure");
}

/* Setup, not measured: waits (10 s at most) until `k` tasks have said they are about to
 * block (*started) and the pool counts them, and one more, blocked; says so once (*warned)
 * when they do not. */
static void wait_until_blocked(nursery_pool_t *pool, atomic_size_t *started, size_t k,
                               const char *workload, const char *what, bool *warned)
{
    nursery_pool_stats_t st = {0};
    int64_t give_up = bench_now_ns() + 10 * INT64_C(1000000000);
    while (bench_now_ns() < give_up) {
        check(nursery_pool_stats(pool, &st), "nursery_pool_stats");
        if (atomic_load(started) == k && st.blocked >= k + 1)
            return;
        bench_nap(1000000);
    }
    if (!*warned) {
        *warned = true;
        fprintf(stderr,
                "nursery-bench: %s: after 10 s only %zu of %zu %s started "
                "(pool: %zu threads, %zu blocked, %zu queued); measuring anyway\n",
                workload, atomic_load(started), k, what, st.threads, st.blocked, st.queued);
    }
}

/* The failing task is started first and parks on a future, so that it is already running
 * when the sleepers fill the pool.  Returns the time from its failure to join's return. */
static int64_t lib_cancel_latency(size_t k)
{
    /* Room for every sleeper, the failing task and the kept threads: a worker blocked in a
     * library wait is replaced up to max_threads. */
    nursery_pool_options_t opts = {.threads = ncpu,
                                   .max_threads = k + ncpu + 16,
                                   .stack_size = 256 * 1024,
                                   .name = "bench-cancel"};
    struct cancel_run run = {.sleeping = 0, .failed_at = 0};
    static bool warned;
    nursery_pool_t *pool;
    nursery_t *nur;
    nursery_errors_t *errors = NULL;

    check(nursery_pool_create(&pool, &opts), "nursery_pool_create");
    check(nursery_future_create(&run.gate), "nursery_future_create");
    check(nursery_open(&nur, pool), "nursery_open");
    check(nursery_start_soon(nur, failing_task, &run, NULL), "nursery_start_soon");
    for (size_t i = 0; i < k; i++)
        check(nursery_start_soon(nur, sleeper_task, &run, NULL), "nursery_start_soon");

    /* Setup, not measured: wait until every sleeper is asleep (the pool counts it blocked). */
    wait_until_blocked(pool, &run.sleeping, k, "cancel_latency", "sleepers", &warned);

    check(nursery_future_set_value(run.gate, NULL), "nursery_future_set_value");
    int rc = nursery_join(nur, NURSERY_FOREVER, &errors);
    int64_t joined = bench_now_ns();

    nursery_error_t *e = nursery_errors_get(errors, 0);
    if (rc != NURSERY_EFAILED || nursery_errors_count(errors) != 1 || nursery_error_code(e) != EIO)
        bench_die("cancel_latency: join returned %s with %zu errors, not the one planned failure",
                  nursery_strerror(rc), nursery_errors_count(errors));
    if (nursery_errors_cancelled(errors) != k)
        bench_die("cancel_latency: %zu of %zu sleepers ended cancelled",
                  nursery_errors_cancelled(errors), k);
    nursery_errors_free(errors);
    nursery_result_release(run.gate);
    check(nursery_pool_destroy(pool), "nursery_pool_destroy");
    return joined - atomic_load(&run.failed_at);
}

/* poll_cancel: a task blocked in nursery_poll() on the read end of a pipe nobody writes to. */
struct poller {
    struct cancel_run *run; /* its gate and failed_at are the failing task's, as above */
    int fd;
};

static int poller_task(void *arg, void **value)
{
    struct poller *p = arg;
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    size_t ready;
    atomic_fetch_add(&p->run->sleeping, 1);
    (void)value;
    int rc = nursery_poll(&pfd, 1, NURSERY_FOREVER, &ready); /* ECANCELED, we hope */
    return rc == 0 ? nursery_fail(EPROTO, "a pipe nobody writes to became ready") : rc;
}

/* k pipes: fds[2 * i] is the read end of pipe i, fds[2 * i + 1] its write end. */
int *bench_pipes_open(size_t k)
{
    int *fds = malloc(2 * k * sizeof *fds);
    if (!fds)
        bench_die("out of memory");
    for (size_t i = 0; i < k; i++)
        if (pipe(&fds[2 * i]) != 0)
            bench_die("pipe %zu of %zu: %s", i, k, strerror(errno));
    return fds;
}

void bench_pipes_close(int *fds, size_t k)
{
    for (size_t i = 0; i < 2 * k; i++)
        close(fds[i]);
    free(fds);
}

/* As lib_cancel_latency, with the k tasks blocked in nursery_poll(), each on its own pipe,
 * which the library wakes through the polling thread's own wake-up descriptor. */
static int64_t lib_poll_cancel(size_t k)
{
    nursery_pool_options_t opts = {.threads = ncpu,
                                   .max_threads = k + ncpu + 100,
                                   .stack_size = 256 * 1024,
                                   .name = "bench-poll"};
    struct cancel_run run = {.sleeping = 0, .failed_at = 0};
    struct poller *args = malloc(k * sizeof *args);
    int *fds = bench_pipes_open(k);
    static bool warned;
    nursery_pool_t *pool;
    nursery_t *nur;
    nursery_errors_t *errors = NULL;

    if (!args)
        bench_die("out of memory");
    check(nursery_pool_create(&pool, &opts), "nursery_pool_create");
    check(nursery_future_create(&run.gate), "nursery_future_create");
    check(nursery_open(&nur, pool), "nursery_open");
    check(nursery_start_soon(nur, failing_task, &run, NULL), "nursery_start_soon");
    for (size_t i = 0; i < k; i++) {
        args[i] = (struct poller){&run, fds[2 * i]};
        check(nursery_start_soon(nur, poller_task, &args[i], NULL), "nursery_start_soon");
    }

    /* Setup, not measured: wait until every poller polls (the pool counts it blocked), then
     * a moment more, for the last ones to get from there into poll(2) (the pthread floor
     * waits as long). */
    wait_until_blocked(pool, &run.sleeping, k, "poll_cancel", "pollers", &warned);
    bench_nap(10000000);

    check(nursery_future_set_value(run.gate, NULL), "nursery_future_set_value");
    int rc = nursery_join(nur, NURSERY_FOREVER, &errors);
    int64_t joined = bench_now_ns();

    nursery_error_t *e = nursery_errors_get(errors, 0);
    if (rc != NURSERY_EFAILED || nursery_errors_count(errors) != 1 || nursery_error_code(e) != EIO)
        bench_die("poll_cancel: join returned %s with %zu errors (first: %s), not the one "
                  "planned failure",
                  nursery_strerror(rc), nursery_errors_count(errors),
                  e ? nursery_error_message(e) : "none");
    if (nursery_errors_cancelled(errors) != k)
        bench_die("poll_cancel: %zu of %zu pollers ended cancelled",
                  nursery_errors_cancelled(errors), k);
    nursery_errors_free(errors);
    nursery_result_release(run.gate);
    check(nursery_pool_destroy(pool), "nursery_pool_destroy");
    bench_pipes_close(fds, k);
    free(args);
    return joined - atomic_load(&run.failed_at);
}

/* queued_memory: the single worker of a pool that may not grow waits on a future. */
struct blocker {
    nursery_result_t *entered; /* set by the task once it runs */
    nursery_result_t *gate;    /* the task waits for this one */
};

static int blocker_task(void *arg, void **value)
{
    struct blocker *b = arg;
    nursery_future_set_value(b->entered, NULL);
    (void)value;
    return nursery_result_wait(b->gate, NURSERY_FOREVER);
}

static size_t lib_queued_memory(long *slots, size_t n)
{
    nursery_pool_options_t opts = {.threads = 1, .max_threads = 1, .name = "bench-queue"};
    nursery_pool_t *pool;
    nursery_t *nur;
    struct blocker b;
    nursery_pool_stats_t st;

    lib_slots = slots;
    check(nursery_pool_create(&pool, &opts), "nursery_pool_create");
    check(nursery_future_create(&b.entered), "nursery_future_create");
    check(nursery_future_create(&b.gate), "nursery_future_create");
    check(nursery_open(&nur, pool), "nursery_open");
    check(nursery_start_soon(nur, blocker_task, &b, NULL), "nursery_start_soon");
    check(nursery_result_wait(b.entered, NURSERY_FOREVER), "nursery_result_wait");

    bench_mem_t before = bench_mem_now();
    for (size_t i = 0; i < n; i++)
        check(nursery_start_soon(nur, store_task, (void *)(uintptr_t)i, NULL),
              "nursery_start_soon");
    bench_mem_t after = bench_mem_now();
    check(nursery_pool_stats(pool, &st), "nursery_pool_stats");
    if (st.queued != n)
        bench_die("queued_memory: %zu tasks queued, not %zu: the gate did not hold", st.queued, n);

    check(nursery_future_set_value(b.gate, NULL), "nursery_future_set_value");
    join_ok(nur);
    nursery_result_release(b.entered);
    nursery_result_release(b.gate);
    check(nursery_pool_destroy(pool), "nursery_pool_destroy");
    return bench_mem_growth(before, after);
}

/* ------------------------------------------------------------------------ */
/* Workloads                                                                */
/* ------------------------------------------------------------------------ */

/* Each measure function runs the workload once with `impl`, checks the answer and stores
 * its value(s) in v[] (NAN: this implementation has no such value). */

static long *slots; /* spawn_join, queued_memory, idle_cpu */
static size_t slots_len;
static double *sum_input;        /* map_sum */
static double *sum_part;         /* map_sum: one partial sum per chunk */
static double sum_expected;      /* map_sum: the partials summed in order */
static int *burst_in;            /* fork_join_burst: the ints to sort, never written */
static int *burst_out;           /* fork_join_burst: where each sort puts them */
static int *burst_tmp;           /* fork_join_burst: each sort's scratch */
static int *burst_expected;      /* fork_join_burst: burst_in sorted by qsort */
static unsigned char *naps_done; /* blocking_fanout */
static void **map_args;          /* map_ordered: item i's argument, i */
static nursery_outcome_t *map_out; /* map_ordered: nursery_map's outcomes */
static nursery_result_t **map_captures; /* map_ordered: the captures of the by-hand version */

static double ms_since(int64_t t0)
{
    return (double)(bench_now_ns() - t0) / 1e6;
}

/* Reached only through a bug in the table of workloads. */
static BENCH_NORETURN void no_version(const char *workload, enum impl impl)
{
    bench_die("%s has no %s version", workload, (unsigned)impl < NIMPLS ? impl_names[impl] : "?");
}

static void slots_clear(size_t n)
{
    if (n > slots_len) {
        free(slots);
        slots = malloc(n * sizeof *slots);
        if (!slots)
            bench_die("out of memory");
        slots_len = n;
    }
    memset(slots, 0xff, n * sizeof *slots);
}

static void slots_verify(const char *workload, enum impl impl, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (slots[i] != 2 * (long)i)
            bench_die("%s, %s: slot %zu holds %ld, not %ld", workload, impl_names[impl], i,
                      slots[i], 2 * (long)i);
}

/* One fan-out of n trivial tasks with `impl`: the core of spawn_join and idle_cpu. */
static void spawn_join_with(enum impl impl, size_t n)
{
    switch (impl) {
    case NURSERY:
        lib_spawn_join(slots, n);
        break;
    case OPENMP:
        openmp_spawn_join(slots, n);
        break;
    case TBB:
        tbb_spawn_join(slots, n);
        break;
    case PTHREAD:
        pt_spawn_join(slots, n);
        break;
    case TOYPOOL:
        toy_spawn_join(toy, slots, n);
        break;
    default:
        no_version("spawn_join", impl);
    }
}

static size_t spawn_tasks_for(enum impl impl)
{
    return impl == PTHREAD && cfg.pthread_tasks < cfg.spawn_tasks ? cfg.pthread_tasks
                                                                  : cfg.spawn_tasks;
}

/* spawn_join: n trivial tasks (task i stores 2*i in slot i) started from the main thread into
 * one group, then joined.  ns per task. */
static void measure_spawn_join(enum impl impl, double *v)
{
    size_t n = spawn_tasks_for(impl);
    slots_clear(n);
    int64_t t0 = bench_now_ns();
    spawn_join_with(impl, n);
    v[0] = (double)(bench_now_ns() - t0) / (double)n;
    slots_verify("spawn_join", impl, n);
}

/* spawn_join_nested: the same fan-out, started and joined from inside a task.  ns per task. */
static void measure_spawn_join_nested(enum impl impl, double *v)
{
    size_t n = spawn_tasks_for(impl);
    slots_clear(n);
    int64_t t0 = bench_now_ns();
    switch (impl) {
    case NURSERY:
        lib_spawn_join_nested(slots, n);
        break;
    case OPENMP:
        openmp_spawn_join_nested(slots, n);
        break;
    case TBB:
        tbb_spawn_join_nested(slots, n);
        break;
    case PTHREAD:
        pt_spawn_join_nested(slots, n);
        break;
    case TOYPOOL:
        toy_spawn_join_nested(toy, slots, n);
        break;
    default:
        no_version("spawn_join_nested", impl);
    }
    v[0] = (double)(bench_now_ns() - t0) / (double)n;
    slots_verify("spawn_join_nested", impl, n);
}

static long fib_expected(int n)
{
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

static void fib_verify(const char *workload, enum impl impl, long got)
{
    if (got != fib_expected(cfg.fib_n))
        bench_die("%s, %s: fib(%d) = %ld, not %ld", workload, impl_names[impl], cfg.fib_n, got,
                  fib_expected(cfg.fib_n));
}

/* fib: fib(n) with a group of two child tasks per call while n >= 20, plain recursion below;
 * the root call runs in the main thread.  ms; sequential is the plain recursion alone. */
static void measure_fib(enum impl impl, double *v)
{
    long r = 0;
    int64_t t0 = bench_now_ns();
    switch (impl) {
    case NURSERY:
        r = lib_fib(NULL, cfg.fib_n);
        break;
    case OPENMP:
        r = openmp_fib(cfg.fib_n);
        break;
    case TBB:
        r = tbb_fib(cfg.fib_n);
        break;
    case SEQUENTIAL:
        r = bench_fib_seq(cfg.fib_n);
        break;
    default:
        no_version("fib", impl);
    }
    v[0] = ms_since(t0);
    fib_verify("fib", impl, r);
}

/* fib_from_task: the same, with the root call itself a task started from the main thread
 * (the main thread then only joins).  ms. */
static void measure_fib_from_task(enum impl impl, double *v)
{
    long r = 0;
    int64_t t0 = bench_now_ns();
    switch (impl) {
    case NURSERY:
        r = lib_fib_from_task(NULL, cfg.fib_n);
        break;
    case OPENMP:
        r = openmp_fib_from_task(cfg.fib_n);
        break;
    default:
        no_version("fib_from_task", impl);
    }
    v[0] = ms_since(t0);
    fib_verify("fib_from_task", impl, r);
}

/* fib_pool1: fib_from_task on a pool of one thread that may not grow (threads = max_threads
 * = 1): it completes only if joins run their own nursery's tasks.  ms. */
static void measure_fib_pool1(enum impl impl, double *v)
{
    nursery_pool_options_t opts = {.threads = 1, .max_threads = 1, .name = "bench-fib1"};
    nursery_pool_t *pool;
    check(nursery_pool_create(&pool, &opts), "nursery_pool_create");
    int64_t t0 = bench_now_ns();
    long r = lib_fib_from_task(pool, cfg.fib_n);
    v[0] = ms_since(t0);
    check(nursery_pool_destroy(pool), "nursery_pool_destroy");
    fib_verify("fib_pool1", impl, r);
}

static void map_sum_setup(void)
{
    sum_input = malloc(cfg.sum_len * sizeof *sum_input);
    sum_part = malloc(cfg.sum_chunks * sizeof *sum_part);
    if (!sum_input || !sum_part)
        bench_die("out of memory");
    for (size_t i = 0; i < cfg.sum_len; i++)
        sum_input[i] = (double)i;
    sum_expected = 0;
    for (size_t c = 0; c < cfg.sum_chunks; c++) {
        size_t lo = cfg.sum_len * c / cfg.sum_chunks, hi = cfg.sum_len * (c + 1) / cfg.sum_chunks;
        sum_expected += bench_sum_sqrt(sum_input + lo, hi - lo);
    }
}

static void map_sum_teardown(void)
{
    free(sum_input);
    free(sum_part);
}

/* map_sum: the sum of sqrt over 10^7 doubles, in 1000 chunk tasks whose partial sums the main
 * thread adds in order (so every implementation's answer is bit-identical).  ms; sequential
 * is one plain loop over the whole array. */
static void measure_map_sum(enum impl impl, double *v)
{
    const double *a = sum_input;
    size_t n = cfg.sum_len, chunks = cfg.sum_chunks;
    double sum = 0;

    for (size_t c = 0; c < chunks; c++)
        sum_part[c] = NAN;
    int64_t t0 = bench_now_ns();
    switch (impl) {
    case NURSERY:
        lib_map_sum(a, n, chunks, sum_part);
        break;
    case OPENMP:
        openmp_map_sum(a, n, chunks, sum_part);
        break;
    case TBB:
        tbb_map_sum(a, n, chunks, sum_part);
        break;
    case PTHREAD:
        pt_map_sum(a, n, chunks, sum_part);
        break;
    case TOYPOOL:
        toy_map_sum(toy, a, n, chunks, sum_part);
        break;
    case SEQUENTIAL:
        sum = bench_sum_sqrt(a, n);
        break;
    default:
        no_version("map_sum", impl);
    }
    v[0] = ms_since(t0);

    if (impl == SEQUENTIAL) {
        if (fabs(sum - sum_expected) > 1e-9 * sum_expected)
            bench_die("map_sum, sequential: %.17g, not %.17g", sum, sum_expected);
        return;
    }
    for (size_t c = 0; c < chunks; c++)
        sum += sum_part[c];
    if (sum != sum_expected)
        bench_die("map_sum, %s: %.17g, not %.17g", impl_names[impl], sum, sum_expected);
}

static void map_ordered_setup(void)
{
    map_args = malloc(cfg.map_items * sizeof *map_args);
    map_out = malloc(cfg.map_items * sizeof *map_out);
    map_captures = malloc(cfg.map_items * sizeof *map_captures);
    if (!map_args || !map_out || !map_captures)
        bench_die("out of memory");
    for (size_t i = 0; i < cfg.map_items; i++)
        map_args[i] = (void *)(uintptr_t)i;
}

static void map_ordered_teardown(void)
{
    free(map_args);
    free(map_out);
    free(map_captures);
}

/* map_ordered: 100 000 items of fib(17) each (4 to 10 µs of CPU), results in input order: nursery_map
 * with at most 64 in flight, against OpenMP's parallel for schedule(dynamic) over the same
 * items, the same items through a capture each and nursery_wait_all, and a plain loop.  ns
 * per item of wall time: the ratios give the overhead per item. */
static void measure_map_ordered(enum impl impl, double *v)
{
    size_t n = cfg.map_items;
    int64_t t0 = bench_now_ns();
    switch (impl) {
    case NURSERY:
        lib_map_ordered(map_args, n, cfg.map_limit, map_out);
        break;
    case OPENMP:
        openmp_map_items(n);
        break;
    case CAPTURES:
        lib_captures_ordered(map_args, n, map_captures);
        break;
    case SEQUENTIAL:
        for (size_t i = 0; i < n; i++)
            bench_map_item(i);
        break;
    default:
        no_version("map_ordered", impl);
    }
    v[0] = (double)(bench_now_ns() - t0) / (double)n;
}

/* wake_latency: the main thread, pinned to one CPU, waits for a result that a task completes
 * on another CPU: one round trip is a wake-up of the pool and a wake-up of the waiter.  µs
 * per round trip, and (wake_latency_cpu) the waiter's own CPU time per round trip, which
 * shows a waiter that wins by spinning.  pthread is a raw mutex+condvar ping-pong between two
 * pinned threads. */
static void measure_wake_latency(enum impl impl, double *v)
{
    int64_t wall = 0, cpu = 0;
    bench_pin_self(cpu_waiter);
    switch (impl) {
    case NURSERY:
        lib_pingpong(cfg.wake_rounds, cpu_partner, &wall, &cpu);
        break;
    case PTHREAD:
        pt_pingpong(cfg.wake_rounds, cpu_partner, &wall, &cpu);
        break;
    case TOYPOOL:
        toy_pingpong(cfg.wake_rounds, cpu_partner, &wall, &cpu);
        break;
    default:
        no_version("wake_latency", impl);
    }
    unpin_self();
    v[0] = (double)wall / (double)cfg.wake_rounds / 1e3;
    v[1] = (double)cpu / (double)cfg.wake_rounds / 1e3;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The input is the same pseudo-random ints in every run (xorshift64, fixed seed); the answer
 * comes from qsort, so a fault in the merge sort kernel itself is caught too. */
static void fork_join_burst_setup(void)
{
    size_t n = cfg.burst_len;
    uint64_t x = UINT64_C(88172645463325252);
    burst_in = malloc(n * sizeof *burst_in);
    burst_out = malloc(n * sizeof *burst_out);
    burst_tmp = malloc(n * sizeof *burst_tmp);
    burst_expected = malloc(n * sizeof *burst_expected);
    if (!burst_in || !burst_out || !burst_tmp || !burst_expected)
        bench_die("out of memory");
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        burst_in[i] = (int)(x >> 33);
    }
    memcpy(burst_expected, burst_in, n * sizeof *burst_in);
    qsort(burst_expected, n, sizeof *burst_expected, cmp_int);
}

static void fork_join_burst_teardown(void)
{
    free(burst_in);
    free(burst_out);
    free(burst_tmp);
    free(burst_expected);
}

/* A thread that reads the default pool's thread count every millisecond and keeps the
 * largest, so that a peak between two joins is seen; a millisecond of sleep between reads
 * (each one a short critical section on the pool's lock) barely touches the run. */
struct thread_sampler {
    pthread_t tid;
    nursery_pool_t *pool;
    atomic_bool stop; /* set once, by thread_sampler_stop; relaxed: it publishes nothing */
    size_t first;     /* the count when the sampler started */
    size_t peak;      /* the largest count read; the sampler's until it is joined */
};

static size_t pool_threads(nursery_pool_t *pool)
{
    nursery_pool_stats_t st;
    check(nursery_pool_stats(pool, &st), "nursery_pool_stats");
    return st.threads;
}

static void *thread_sampler_main(void *arg)
{
    struct thread_sampler *s = arg;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        size_t t = pool_threads(s->pool);
        if (t > s->peak)
            s->peak = t;
        bench_nap(1000000);
    }
    return NULL;
}

/* The first reading is taken here, before the caller starts its work. */
static void thread_sampler_start(struct thread_sampler *s)
{
    check(nursery_pool_default(&s->pool), "nursery_pool_default");
    atomic_init(&s->stop, false);
    s->first = s->peak = pool_threads(s->pool);
    int rc = pthread_create(&s->tid, NULL, thread_sampler_main, s);
    if (rc != 0)
        bench_die("cannot create the sampler thread: %s", strerror(rc));
}

/* Returns the peak, with one last reading taken after the sampler's last one. */
static size_t thread_sampler_stop(struct thread_sampler *s)
{
    atomic_store_explicit(&s->stop, true, memory_order_relaxed);
    pthread_join(s->tid, NULL); /* makes s->peak visible here */
    size_t t = pool_threads(s->pool);
    return t > s->peak ? t : s->peak;
}

/* Waits (up to a second) until the default pool is back to the threads it keeps, one per CPU
 * (threads added for blocked workers retire after 250 ms idle), so that a run's peak is the
 * growth of that run alone, not what an earlier run left. */
static void default_pool_rest(void)
{
    nursery_pool_t *pool;
    check(nursery_pool_default(&pool), "nursery_pool_default");
    size_t t = pool_threads(pool);
    for (int ms = 0; t > ncpu && ms < 1000; ms += 10) {
        bench_nap(10000000);
        t = pool_threads(pool);
    }
}

/* fork_join_burst: a merge sort of 2^21 ints (fib's task shape: a group of two child tasks
 * per call while n >= 4096, then a merge after the join) called 15 times back to back, the
 * root calls in the main thread.  ms for the 15 calls; and (fork_join_burst_threads) the
 * largest thread count of libnursery's default pool seen during them, which issue 6 item 18
 * wants at most CPUs + 2.  The sampler runs for every implementation, so that each pays for
 * it alike.  Every call sorts the same input; the last call's output is checked. */
static void measure_fork_join_burst(enum impl impl, double *v)
{
    size_t n = cfg.burst_len;
    struct thread_sampler sampler;

    memset(burst_out, 0xff, n * sizeof *burst_out);
    if (impl == NURSERY)
        default_pool_rest();
    thread_sampler_start(&sampler);
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < cfg.burst_calls; i++) {
        switch (impl) {
        case NURSERY:
            lib_merge_sort(burst_in, burst_out, burst_tmp, n);
            break;
        case OPENMP:
            openmp_merge_sort(burst_in, burst_out, burst_tmp, n);
            break;
        case TBB:
            tbb_merge_sort(burst_in, burst_out, burst_tmp, n);
            break;
        case SEQUENTIAL:
            bench_merge_sort_seq(burst_in, burst_out, burst_tmp, n);
            break;
        default:
            no_version("fork_join_burst", impl);
        }
    }
    v[0] = ms_since(t0);
    size_t peak = thread_sampler_stop(&sampler);
    if (impl == NURSERY) {
        v[1] = (double)peak;
        if (cfg.verbose)
            fprintf(stderr,
                    "\n  nursery: the default pool had %zu threads before the burst, %zu "
                    "at its peak",
                    sampler.first, peak);
    }
    if (memcmp(burst_out, burst_expected, n * sizeof *burst_out) != 0)
        bench_die("fork_join_burst, %s: the ints are not sorted as qsort sorts them",
                  impl_names[impl]);
}

static void blocking_fanout_setup(void)
{
    naps_done = malloc(cfg.fanout_tasks);
    if (!naps_done)
        bench_die("out of memory");
}

static void blocking_fanout_teardown(void)
{
    free(naps_done);
}

/* blocking_fanout: 64 tasks that each block 10 ms in plain nanosleep, which no scheduler can
 * see, on the default pool (peers at their defaults).  ms; and (blocking_fanout_threads) the
 * default pool's thread count just after the join. */
static void measure_blocking_fanout(enum impl impl, double *v)
{
    size_t k = cfg.fanout_tasks;
    int64_t ns = cfg.fanout_ns;

    memset(naps_done, 0, k);
    int64_t t0 = bench_now_ns();
    switch (impl) {
    case NURSERY:
        lib_blocking_fanout(k, ns, naps_done);
        break;
    case OPENMP:
        openmp_blocking_fanout(k, ns, naps_done);
        break;
    case TBB:
        tbb_blocking_fanout(k, ns, naps_done);
        break;
    case PTHREAD:
        pt_blocking_fanout(k, ns, naps_done);
        break;
    case TOYPOOL:
        toy_blocking_fanout(toy, k, ns, naps_done);
        break;
    default:
        no_version("blocking_fanout", impl);
    }
    v[0] = ms_since(t0);
    if (impl == NURSERY) {
        nursery_pool_t *pool;
        nursery_pool_stats_t st;
        check(nursery_pool_default(&pool), "nursery_pool_default");
        check(nursery_pool_stats(pool, &st), "nursery_pool_stats");
        v[1] = (double)st.threads;
    }
    for (size_t i = 0; i < k; i++)
        if (!naps_done[i])
            bench_die("blocking_fanout, %s: task %zu did not run", impl_names[impl], i);
}

/* cancel_latency: 1000 tasks asleep in nursery_sleep(60 s); then one task fails, which
 * cancels them.  ms from the failure to nursery_join() returning.  The pthread peer is the
 * floor a C programmer would write by hand: a thread per sleeper waiting on one condition
 * variable for a flag, then a broadcast and a join of every thread. */
static void measure_cancel_latency(enum impl impl, double *v)
{
    switch (impl) {
    case NURSERY:
        v[0] = (double)lib_cancel_latency(cfg.cancel_tasks) / 1e6;
        break;
    case PTHREAD:
        v[0] = (double)pt_cancel_latency(cfg.cancel_tasks) / 1e6;
        break;
    default:
        no_version("cancel_latency", impl);
    }
}

/* poll_cancel needs a pipe per task (two descriptors) and, per polling pool thread, the
 * library's wake-up descriptor; the pthread floor needs the pipes.  Raises the soft limit
 * on descriptors to the hard one; says why the workload cannot run when that is too few. */
static const char *poll_cancel_unavailable(void)
{
    static char why[160];
    struct rlimit rl;
    rlim_t need = (rlim_t)(3 * cfg.poll_tasks + ncpu + 256);
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return "getrlimit(RLIMIT_NOFILE) failed";
    if (rl.rlim_cur != rl.rlim_max) {
        struct rlimit raised = {rl.rlim_max, rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0)
            rl = raised;
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        snprintf(why, sizeof why,
                 "RLIMIT_NOFILE is %llu (hard limit %llu), %llu descriptors needed",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                 (unsigned long long)need);
        return why;
    }
    return NULL;
}

/* poll_cancel: 1000 tasks blocked in nursery_poll(), each on its own pipe; then one task
 * fails, which cancels them.  ms from the failure to nursery_join() returning.  The pthread
 * peer is the floor written by hand: a thread per pipe in poll(2), then a flag and a byte
 * written to every pipe, and a join of every thread. */
static void measure_poll_cancel(enum impl impl, double *v)
{
    switch (impl) {
    case NURSERY:
        v[0] = (double)lib_poll_cancel(cfg.poll_tasks) / 1e6;
        break;
    case PTHREAD:
        v[0] = (double)pt_poll_cancel(cfg.poll_tasks) / 1e6;
        break;
    default:
        no_version("poll_cancel", impl);
    }
}

struct queued_run {
    enum impl impl;
    size_t tasks;
    size_t bytes; /* out: the growth of the RSS */
};

static void *queued_memory_thread(void *arg)
{
    struct queued_run *q = arg;
    switch (q->impl) {
    case NURSERY:
        q->bytes = lib_queued_memory(slots, q->tasks);
        break;
    case TBB:
        q->bytes = tbb_queued_memory(slots, q->tasks);
        break;
    case TOYPOOL:
        q->bytes = toy_queued_memory(slots, q->tasks);
        break;
    default:
        no_version("queued_memory", q->impl);
    }
    return NULL;
}

/* queued_memory: bytes of resident memory per task while 1 000 000 tasks are queued behind a
 * pool whose only thread is blocked.  B per task: the growth of the memory in use (the RSS or
 * malloc's count, whichever grew more: bench_mem_growth) from before the tasks are started to
 * after.  So that memory freed by earlier runs is less often reused unseen, free heap memory
 * is first returned to the system (malloc_trim), and the tasks are started from a new thread,
 * which has no per-thread cache of task memory (TBB keeps one, for example). */
static void measure_queued_memory(enum impl impl, double *v)
{
    struct queued_run q = {impl, cfg.queued_tasks, 0};
    pthread_t tid;

    slots_clear(q.tasks);
#ifdef __GLIBC__
    malloc_trim(0);
#endif
    if (pthread_create(&tid, NULL, queued_memory_thread, &q) != 0)
        bench_die("queued_memory: cannot create a thread");
    pthread_join(tid, NULL);
    v[0] = (double)q.bytes / (double)q.tasks;
    slots_verify("queued_memory", impl, q.tasks);
}

static double process_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

/* idle_cpu: right after a burst of work (a spawn_join of 100 000 tasks), the CPU time the
 * whole process uses while the main thread sleeps for 1 s.  ms. */
static void measure_idle_cpu(enum impl impl, double *v)
{
    slots_clear(cfg.idle_burst);
    spawn_join_with(impl, cfg.idle_burst);
    slots_verify("idle_cpu", impl, cfg.idle_burst);
    double c0 = process_cpu_ms();
    bench_nap(cfg.idle_ns);
    v[0] = process_cpu_ms() - c0;
}

/* ------------------------------------------------------------------------ */
/* The table of workloads                                                   */
/* ------------------------------------------------------------------------ */

#define IMPL(x) (1u << (x))

struct workload {
    const char *name;       /* for -w, and the workload= of the first value */
    const char *unit;       /* of the first value */
    const char *name2;      /* a second value from the same runs (NULL: none) */
    const char *unit2;      /* of the second value */
    bool peak2;             /* the second value is a peak: report the largest of the
                               repetitions, not their median */
    unsigned impls;         /* the implementations it has */
    bool no_warm_up;        /* no untimed run per implementation first */
    void (*setup)(void);    /* before the first run (NULL: nothing to do) */
    void (*teardown)(void); /* after the last run (NULL: nothing to do) */
    /* Why this machine cannot run it (NULL: it can); then a SKIP line replaces its
     * results.  Called first (NULL: always runnable). */
    const char *(*unavailable)(void);
    /* One run with `impl`: checks the answer, stores the value(s) in v[0] (and v[1]). */
    void (*measure)(enum impl impl, double *v);
};

#define POOLS (IMPL(NURSERY) | IMPL(OPENMP) | IMPL(TBB) | IMPL(TOYPOOL))

/* In the order they run. */
static const struct workload workloads[] = {
    {.name = "spawn_join",
     .unit = "ns/task",
     .impls = POOLS | IMPL(PTHREAD),
     .measure = measure_spawn_join},
    {.name = "spawn_join_nested",
     .unit = "ns/task",
     .impls = POOLS | IMPL(PTHREAD),
     .measure = measure_spawn_join_nested},
    {.name = "fib",
     .unit = "ms",
     .impls = IMPL(NURSERY) | IMPL(OPENMP) | IMPL(TBB) | IMPL(SEQUENTIAL),
     .measure = measure_fib},
    {.name = "fib_from_task",
     .unit = "ms",
     .impls = IMPL(NURSERY) | IMPL(OPENMP),
     .measure = measure_fib_from_task},
    {.name = "fib_pool1", .unit = "ms", .impls = IMPL(NURSERY), .measure = measure_fib_pool1},
    {.name = "map_sum",
     .unit = "ms",
     .impls = POOLS | IMPL(PTHREAD) | IMPL(SEQUENTIAL),
     .setup = map_sum_setup,
     .teardown = map_sum_teardown,
     .measure = measure_map_sum},
    {.name = "map_ordered",
     .unit = "ns/item",
     .impls = IMPL(NURSERY) | IMPL(OPENMP) | IMPL(CAPTURES) | IMPL(SEQUENTIAL),
     .setup = map_ordered_setup,
     .teardown = map_ordered_teardown,
     .measure = measure_map_ordered},
    {.name = "fork_join_burst",
     .unit = "ms",
     .name2 = "fork_join_burst_threads",
     .unit2 = "threads",
     .peak2 = true,
     .impls = IMPL(NURSERY) | IMPL(OPENMP) | IMPL(TBB) | IMPL(SEQUENTIAL),
     .setup = fork_join_burst_setup,
     .teardown = fork_join_burst_teardown,
     .measure = measure_fork_join_burst},
    {.name = "wake_latency",
     .unit = "us",
     .name2 = "wake_latency_cpu",
     .unit2 = "us",
     .impls = IMPL(NURSERY) | IMPL(PTHREAD) | IMPL(TOYPOOL),
     .measure = measure_wake_latency},
    {.name = "blocking_fanout",
     .unit = "ms",
     .name2 = "blocking_fanout_threads",
     .unit2 = "threads",
     .impls = POOLS | IMPL(PTHREAD),
     .setup = blocking_fanout_setup,
     .teardown = blocking_fanout_teardown,
     .measure = measure_blocking_fanout},
    {.name = "cancel_latency",
     .unit = "ms",
     .impls = IMPL(NURSERY) | IMPL(PTHREAD),
     .measure = measure_cancel_latency},
    {.name = "poll_cancel",
     .unit = "ms",
     .impls = IMPL(NURSERY) | IMPL(PTHREAD),
     .unavailable = poll_cancel_unavailable,
     .measure = measure_poll_cancel},
    {.name = "queued_memory",
     .unit = "B/task",
     .impls = IMPL(NURSERY) | IMPL(TBB) | IMPL(TOYPOOL),
     .measure = measure_queued_memory},
    /* The burst before each idle second is the work it follows: no warm-up needed. */
    {.name = "idle_cpu",
     .unit = "ms",
     .impls = POOLS,
     .no_warm_up = true,
     .measure = measure_idle_cpu},
};

#define NWORKLOADS (sizeof workloads / sizeof workloads[0])

/* ------------------------------------------------------------------------ */
/* Running, medians, output                                                 */
/* ------------------------------------------------------------------------ */

/* Everything printed, kept for results.csv and the chart. */
struct record {
    const char *workload;
    const char *unit;
    enum impl impl;
    double value;    /* the median, or of a peak the largest */
    double min, max; /* the smallest and the largest repetition: the spread */
};
static struct record records[NWORKLOADS * 2 * NIMPLS];
static size_t nrecords;

struct ratio {
    const char *workload;
    enum impl peer;
    double value;
};
static struct ratio ratios[NWORKLOADS * 2 * NIMPLS];
static size_t nratios;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Prints the RESULT lines of one value of a workload, then its RATIO lines.  med holds the
 * median of each implementation (NAN: not run), lo and hi the smallest and largest sample. */
static void report(const char *name, const char *unit, const double med[NIMPLS],
                   const double lo[NIMPLS], const double hi[NIMPLS])
{
    for (int i = 0; i < NIMPLS; i++) {
        if (isnan(med[i]))
            continue;
        printf("RESULT workload=%s impl=%s value=%.6g unit=%s min=%.6g max=%.6g\n", name,
               impl_names[i], med[i], unit, lo[i], hi[i]);
        records[nrecords++] = (struct record){name, unit, (enum impl)i, med[i], lo[i], hi[i]};
    }
    if (isnan(med[NURSERY]))
        return;
    for (int i = 0; i < NIMPLS; i++) {
        if (i == NURSERY || isnan(med[i]))
            continue;
        double r = med[NURSERY] / med[i]; /* inf when the peer measured 0 */
        printf("RATIO workload=%s nursery/%s=%.4g\n", name, impl_names[i], r);
        ratios[nratios++] = (struct ratio){name, (enum impl)i, r};
    }
    fflush(stdout);
}

static void run_workload(const struct workload *w)
{
    enum impl order[NIMPLS];
    int k = 0;
    for (int i = 0; i < NIMPLS; i++)
        if (w->impls & cfg.impls & IMPL(i))
            order[k++] = (enum impl)i;
    if (k == 0)
        return;
    const char *why = w->unavailable ? w->unavailable() : NULL;
    if (why) {
        printf("SKIP workload=%s reason=%s\n", w->name, why);
        fflush(stdout);
        fprintf(stderr, "nursery-bench: %s skipped: %s\n", w->name, why);
        return;
    }

    double(*samples)[2][NIMPLS] = calloc((size_t)cfg.reps, sizeof *samples);
    double *column = calloc((size_t)cfg.reps, sizeof *column);
    double v[2];
    int64_t t0 = bench_now_ns();
    if (!samples || !column)
        bench_die("out of memory");
    fprintf(stderr, "nursery-bench: %s ...", w->name);
    if (w->setup)
        w->setup();

    if (!w->no_warm_up)
        for (int j = 0; j < k; j++)
            w->measure(order[j], v);
    for (int r = 0; r < cfg.reps; r++) {
        for (int j = 0; j < k; j++) {
            enum impl impl = order[(j + r) % k]; /* rotate, so no one always goes first */
            bench_nap(10000000); /* let the previous runner's threads go back to sleep */
            v[0] = v[1] = NAN;
            w->measure(impl, v);
            samples[r][0][impl] = v[0];
            samples[r][1][impl] = v[1];
            if (cfg.verbose)
                fprintf(stderr, "\n  rep %d %-10s %12.6g %12.6g", r, impl_names[impl], v[0], v[1]);
        }
    }
    if (w->teardown)
        w->teardown();
    if (cfg.verbose) {
        nursery_pool_t *pool;
        nursery_pool_stats_t st;
        check(nursery_pool_default(&pool), "nursery_pool_default");
        check(nursery_pool_stats(pool, &st), "nursery_pool_stats");
        fprintf(stderr, "\n  libnursery's default pool now has %zu threads", st.threads);
    }
    fprintf(stderr, "%s %.1f s\n", cfg.verbose ? "\n  " : "", (double)(bench_now_ns() - t0) / 1e9);

    for (int which = 0; which < (w->name2 ? 2 : 1); which++) {
        double med[NIMPLS], lo[NIMPLS], hi[NIMPLS];
        for (int i = 0; i < NIMPLS; i++) {
            med[i] = lo[i] = hi[i] = NAN;
            if (!(w->impls & cfg.impls & IMPL(i)))
                continue;
            for (int r = 0; r < cfg.reps; r++)
                column[r] = samples[r][which][i];
            if (isnan(column[0]))
                continue;
            med[i] = median(column, cfg.reps); /* sorts column */
            lo[i] = column[0];
            hi[i] = column[cfg.reps - 1];
            if (which && w->peak2)
                med[i] = hi[i];
        }
        report(which ? w->name2 : w->name, which ? w->unit2 : w->unit, med, lo, hi);
    }
    free(column);
    free(samples);
}

static FILE *open_output(const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", cfg.outdir, file);
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "nursery-bench: cannot write %s: %s\n", path, strerror(errno));
    return f;
}

/* Returns false when the file cannot be written (then there is no chart either). */
static bool write_csv(void)
{
    FILE *f = open_output("results.csv");
    if (!f)
        return false;
    fprintf(f, "workload,impl,value,unit,min,max\n");
    for (size_t i = 0; i < nrecords; i++)
        fprintf(f, "%s,%s,%.6g,%s,%.6g,%.6g\n", records[i].workload, impl_names[records[i].impl],
                records[i].value, records[i].unit, records[i].min, records[i].max);
    return fclose(f) == 0;
}

/* A clustered bar chart of the ratios, one cluster per workload, one bar per peer, on a log
 * scale with a dashed line at 1.0.  Only when gnuplot is on PATH. */
static void write_chart(void)
{
    if (nratios == 0 || system("command -v gnuplot >/dev/null 2>&1") != 0)
        return;

    bool peer_used[NIMPLS] = {false};
    const char *rows[NWORKLOADS * 2];
    size_t nrows = 0;
    for (size_t i = 0; i < nratios; i++) {
        if (!isfinite(ratios[i].value) || ratios[i].value <= 0)
            continue;
        peer_used[ratios[i].peer] = true;
        if (nrows == 0 || strcmp(rows[nrows - 1], ratios[i].workload) != 0)
            rows[nrows++] = ratios[i].workload;
    }
    if (nrows == 0)
        return;

    char path[4096];
    snprintf(path, sizeof path, "%s/ratios.svg", cfg.outdir);
    /* Quiet: on an error gnuplot would print the SVG itself on stdout. */
    FILE *g = popen("gnuplot >/dev/null 2>&1", "w");
    if (!g)
        return;
    fprintf(g,
            "set terminal svg size 1200,560 dynamic font 'sans,12' background rgb 'white'\n"
            "set output '%s'\n"
            "set title 'libnursery divided by each peer (medians of %d runs, %zu CPUs): "
            "below 1, libnursery is faster or smaller' noenhanced\n"
            "set logscale y\n"
            "set ylabel 'nursery / peer (log scale)'\n"
            "set style data histograms\n"
            "set style histogram cluster gap 1\n"
            "set style fill solid 0.85 border -1\n"
            "set boxwidth 0.9\n"
            "set xrange [-0.5:%zu.5]\n"
            "set xtics scale 0 noenhanced font ',10'\n"
            "set grid ytics\n"
            "set key outside top center horizontal noenhanced\n"
            "set datafile missing '-'\n"
            "set arrow from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 "
            "linewidth 2 linecolor rgb 'black' front\n"
            "$ratios << EOD\nworkload",
            path, cfg.reps, ncpu, nrows - 1);
    for (int p = 0; p < NIMPLS; p++)
        if (peer_used[p])
            fprintf(g, " %s", impl_names[p]);
    fputc('\n', g);
    for (size_t r = 0; r < nrows; r++) {
        fprintf(g, "%s", rows[r]);
        for (int p = 0; p < NIMPLS; p++) {
            if (!peer_used[p])
                continue;
            double value = NAN;
            for (size_t i = 0; i < nratios; i++)
                if (ratios[i].peer == (enum impl)p && strcmp(ratios[i].workload, rows[r]) == 0)
                    value = ratios[i].value;
            if (isfinite(value) && value > 0)
                fprintf(g, " %.6g", value);
            else
                fprintf(g, " -");
        }
        fputc('\n', g);
    }
    fprintf(g, "EOD\nplot ");
    int col = 2; /* column 1 holds the workload names */
    for (int p = 0; p < NIMPLS; p++) {
        if (!peer_used[p])
            continue;
        fprintf(g, "%s$ratios using %d%s title columnheader", col > 2 ? ", " : "", col,
                col == 2 ? ":xtic(1)" : "");
        col++;
    }
    fputc('\n', g);
    if (pclose(g) != 0)
        fprintf(stderr, "nursery-bench: gnuplot failed to write %s\n", path);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nursery-bench [-q] [-v] [-w workload,...] [-i impl,...] [-r reps] [-n tasks]\n"
            "                     [--fib N] [--sort N] [-o dir]\n"
            "  -w LIST   workloads to run (default: all):\n           ");
    for (size_t i = 0; i < NWORKLOADS; i++)
        fprintf(f, " %s", workloads[i].name);
    fprintf(f, "\n  -i LIST   implementations (default: all built):\n           ");
    for (int i = 0; i < NIMPLS; i++)
        if (impls_built() & IMPL(i))
            fprintf(f, " %s", impl_names[i]);
    fprintf(f, "\n"
               "  -r N      timed repetitions of each implementation (default 5; -q: 1)\n"
               "  -n N      tasks of spawn_join and spawn_join_nested (default 1000000)\n"
               "  --fib N   fib(N) for the fib workloads (default 38)\n"
               "  --sort N  ints per merge sort in fork_join_burst (default 2097152)\n"
               "  -q        quick: small sizes, a smoke test that takes seconds\n"
               "  -o DIR    write DIR/results.csv and DIR/ratios.svg (default: .)\n"
               "  -v        print every sample, and the default pool's threads after each\n"
               "            workload, on stderr\n");
}

/* Parses "a,b,c" against `names`; returns the set as a bit mask. */
static unsigned parse_list(const char *opt, char *list, const char *const *names, size_t count)
{
    unsigned mask = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        size_t i = 0;
        while (i < count && strcmp(names[i], tok) != 0)
            i++;
        if (i == count) {
            fprintf(stderr, "nursery-bench: %s: unknown name '%s'\n", opt, tok);
            usage(stderr);
            exit(2);
        }
        mask |= 1u << i;
    }
    return mask;
}

static long parse_number(const char *opt, const char *s, long min)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min)
        bench_die("%s wants a number >= %ld, not '%s'", opt, min, s);
    return v;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"fib", required_argument, NULL, 'f'},
                                             {"sort", required_argument, NULL, 's'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *workload_names[NWORKLOADS];
    unsigned selected = (1u << NWORKLOADS) - 1;
    long reps = -1, tasks = -1, fib = -1, sort = -1;
    bool quick = false;
    int opt;

    for (size_t i = 0; i < NWORKLOADS; i++)
        workload_names[i] = workloads[i].name;
    while ((opt = getopt_long(argc, argv, "w:i:r:n:qo:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'w':
            selected = parse_list("-w", optarg, workload_names, NWORKLOADS);
            break;
        case 'i':
            cfg.impls = parse_list("-i", optarg, impl_names, NIMPLS);
            break;
        case 'r':
            reps = parse_number("-r", optarg, 1);
            break;
        case 'n':
            tasks = parse_number("-n", optarg, 1);
            break;
        case 'f':
            fib = parse_number("--fib", optarg, 0);
            break;
        case 's':
            sort = parse_number("--sort", optarg, 1);
            break;
        case 'q':
            quick = true;
            break;
        case 'o':
            cfg.outdir = optarg;
            break;
        case 'v':
            cfg.verbose = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (quick) {
        cfg.reps = 1;
        cfg.spawn_tasks = 20000;
        cfg.pthread_tasks = 2000;
        cfg.fib_n = 30;
        cfg.sum_len = 1000000;
        cfg.burst_len = 1u << 16;
        cfg.map_items = 10000;
        cfg.wake_rounds = 1000;
        cfg.cancel_tasks = 100;
        cfg.poll_tasks = 200;
        cfg.queued_tasks = 20000;
        cfg.idle_burst = 10000;
        cfg.idle_ns = 100000000;
    }
    if (reps > 0)
        cfg.reps = (int)reps;
    if (tasks > 0)
        cfg.spawn_tasks = (size_t)tasks;
    if (fib >= 0)
        cfg.fib_n = (int)fib;
    if (sort > 0)
        cfg.burst_len = (size_t)sort;
    if (cfg.impls & ~impls_built()) {
        for (int i = 0; i < NIMPLS; i++)
            if (cfg.impls & ~impls_built() & IMPL(i))
                fprintf(stderr, "nursery-bench: %s is not built in (see configure's summary)\n",
                        impl_names[i]);
        cfg.impls &= impls_built();
    }

    find_cpus();
    report_load();
    fprintf(stderr, "nursery-bench: %zu CPUs, %d repetitions, impls:", ncpu, cfg.reps);
    for (int i = 0; i < NIMPLS; i++)
        if (cfg.impls & IMPL(i))
            fprintf(stderr, " %s", impl_names[i]);
    fputc('\n', stderr);
    if (cfg.impls & IMPL(PTHREAD) && cfg.pthread_tasks < cfg.spawn_tasks)
        fprintf(stderr, "nursery-bench: pthread runs spawn_join with %zu tasks, not %zu\n",
                cfg.pthread_tasks, cfg.spawn_tasks);
    if (cpu_waiter < 0)
        fprintf(stderr, "nursery-bench: one CPU: wake_latency runs unpinned\n");

    /* Start every runtime before the first measurement. */
    nursery_pool_t *pool;
    check(nursery_pool_default(&pool), "nursery_pool_default");
    slots_clear(1000);
    lib_spawn_join(slots, 1000);
    if (cfg.impls & IMPL(OPENMP))
        openmp_warm_up();
    if (cfg.impls & IMPL(TBB))
        tbb_warm_up();
    if (cfg.impls & IMPL(TOYPOOL))
        toy = toypool_create(ncpu);

    int64_t t0 = bench_now_ns();
    for (size_t i = 0; i < NWORKLOADS; i++)
        if (selected & (1u << i))
            run_workload(&workloads[i]);
    if (write_csv())
        write_chart();
    fprintf(stderr, "nursery-bench: done in %.1f s\n", (double)(bench_now_ns() - t0) / 1e9);

    if (toy)
        toypool_destroy(toy);
    free(slots);
    return 0;
}
