/* SPDX-License-Identifier: MIT */
/*
 * bench.h - what the benchmark's driver (nursery-bench.c) and its peers share.
 *
 * Every implementation of a workload gets the same input and leaves its answer where the
 * driver can check it: the driver prepares the data, times the call, and verifies the result.
 * The peers are OpenMP tasks (peers_openmp.c), oneTBB task_group (peers_tbb.cc, C++), one
 * POSIX thread per task (peers_pthread.c) and a minimal mutex+condvar pool with a future per
 * task (toypool.c).  The kernels that do the work (bench_fib_seq, bench_sum_sqrt,
 * bench_merge_sort_seq, bench_merge) are compiled once, out of line, so every implementation
 * runs the very same code between its spawns and joins.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define BENCH_NORETURN __attribute__((noreturn))
#define BENCH_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BENCH_NORETURN
#define BENCH_PRINTF(f, a)
#endif

/* fib(n) opens a task group with two child tasks while n >= this, and recurses plainly
 * below it. */
#define BENCH_FIB_CUTOFF 20

/* A merge sort of n ints opens a task group with two child tasks (one per half) while
 * n >= this, and sorts plainly below it: 2^19 ints make 255 groups and 256 leaves of 2048. */
#define BENCH_SORT_CUTOFF 4096

/* ------------------------------------------------------------------------ */
/* Helpers (nursery-bench.c)                                                */
/* ------------------------------------------------------------------------ */

/* Prints "nursery-bench: <message>" to stderr and exits with status 1: a wrong answer or a
 * failed setup makes every number of the run meaningless. */
BENCH_NORETURN void bench_die(const char *fmt, ...) BENCH_PRINTF(1, 2);

/* CLOCK_MONOTONIC and the calling thread's CPU time, in nanoseconds. */
int64_t bench_now_ns(void);
int64_t bench_thread_cpu_ns(void);

/* Sleeps `ns` nanoseconds in plain nanosleep(2), as user code that knows nothing of any
 * scheduler would. */
void bench_nap(int64_t ns);

/* k pipes, for poll_cancel: fds[2 * i] is the read end of pipe i, fds[2 * i + 1] its write
 * end (dies when one cannot be made).  Closing closes all 2k and frees fds. */
int *bench_pipes_open(size_t k);
void bench_pipes_close(int *fds, size_t k);

/* Pins the calling thread to `cpu` (no-op for cpu < 0). */
void bench_pin_self(int cpu);

/* The memory the process uses: its resident set (/proc/self/statm) and the bytes malloc has
 * handed out (mallinfo2; 0 without glibc). */
typedef struct bench_mem {
    size_t rss;
    size_t heap;
} bench_mem_t;
bench_mem_t bench_mem_now(void);

/* How much memory was added between two readings: the larger of the two growths.  The RSS
 * misses heap memory that was freed earlier and is reused; malloc's count misses memory that
 * does not come from malloc (TBB's allocator maps its own). */
size_t bench_mem_growth(bench_mem_t before, bench_mem_t after);

/* The kernels: plain recursive fib, and the sum of sqrt(a[i]) for i < n. */
long bench_fib_seq(int n);
/* map_ordered's item i: about 10 µs of CPU (fib(17)), its answer checked. */
void bench_map_item(size_t i);
double bench_sum_sqrt(const double *a, size_t n);

/* Merge sort, out of place: sorts in[0..n) into out[0..n), with tmp[0..n) as scratch, and
 * never writes in[].  Each half is sorted into tmp (with out as its scratch), then the
 * halves are merged into out; so the three ranges must not overlap, and two halves touch
 * disjoint parts of all three, which is what lets a parallel version sort them at once. */
void bench_merge_sort_seq(const int *in, int *out, int *tmp, size_t n);
/* Merges the sorted a[0..na) and b[0..nb) into out[0..na+nb). */
void bench_merge(const int *a, size_t na, const int *b, size_t nb, int *out);

/* A gate: threads wait until it is opened, once.  For the peers that have no futures of
 * their own to block a worker with (toypool, TBB).  The struct is opaque here so that the
 * C++ file needs no pthread types in its interface. */
typedef struct bench_gate bench_gate_t;
bench_gate_t *bench_gate_create(void);
void bench_gate_wait(bench_gate_t *g);
void bench_gate_open(bench_gate_t *g);
void bench_gate_destroy(bench_gate_t *g);

/* ------------------------------------------------------------------------ */
/* Peers                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * The functions every peer offers, named <peer>_<workload>; a peer without one of them does
 * not run that workload.  Their contracts:
 *
 *   spawn_join(slots, n)         n tasks, task i stores 2*i in slots[i], started from the
 *                                calling thread into one group, then joined.
 *   spawn_join_nested(slots, n)  the same fan-out, started and joined inside one task.
 *   fib(n)                       fib(n) with two child tasks per call while n >= the
 *                                cutoff, the root call in the calling thread.
 *   fib_from_task(n)             the same, with the root call itself a task.
 *   map_sum(a, n, chunks, part)  chunk c (of `chunks` equal slices of a[0..n)) is one task
 *                                that stores bench_sum_sqrt of its slice in part[c].
 *   merge_sort(in, out, tmp, n)  bench_merge_sort_seq's recursion, with one group of two
 *                                child tasks (the halves) per call while n >= the cutoff,
 *                                then bench_merge in the calling thread; the root call in
 *                                the calling thread.
 *   blocking_fanout(k, ns, done) k tasks; task i sleeps ns in bench_nap, then sets done[i].
 *   map_items(n)                 bench_map_item(i) for every i < n, a parallel for with
 *                                dynamic scheduling (OpenMP only).
 *   queued_memory(slots, n)      n spawn_join tasks queued behind a worker blocked on a gate;
 *                                returns bench_mem_growth from before they are started to
 *                                after, then opens the gate and joins.
 */

/* OpenMP tasks (libgomp), with the default team of one thread per CPU. */
#ifdef _OPENMP
void openmp_warm_up(void);
void openmp_spawn_join(long *slots, size_t n);
void openmp_spawn_join_nested(long *slots, size_t n);
long openmp_fib(int n);
long openmp_fib_from_task(int n);
void openmp_map_sum(const double *a, size_t n, size_t chunks, double *part);
void openmp_merge_sort(const int *in, int *out, int *tmp, size_t n);
void openmp_blocking_fanout(size_t k, int64_t ns, unsigned char *done);
void openmp_map_items(size_t n);
#else
/* Built without OpenMP: the driver never selects openmp (see impls_built()), and these stand
 * in for the calls it then never makes, so that it needs no #ifdef at each of them. */
#define BENCH_NO_OPENMP (bench_die("built without OpenMP"), 0)
#define openmp_warm_up() ((void)BENCH_NO_OPENMP)
#define openmp_spawn_join(slots, n) ((void)BENCH_NO_OPENMP)
#define openmp_spawn_join_nested(slots, n) ((void)BENCH_NO_OPENMP)
#define openmp_fib(n) ((long)BENCH_NO_OPENMP)
#define openmp_fib_from_task(n) ((long)BENCH_NO_OPENMP)
#define openmp_map_sum(a, n, chunks, part) ((void)BENCH_NO_OPENMP)
#define openmp_merge_sort(in, out, tmp, n) ((void)BENCH_NO_OPENMP)
#define openmp_blocking_fanout(k, ns, done) ((void)BENCH_NO_OPENMP)
#define openmp_map_items(n) ((void)BENCH_NO_OPENMP)
#endif

/* oneTBB task_group, with the default arena of one thread per CPU (peers_tbb.cc, compiled
 * when configure finds oneTBB; it defines BENCH_HAVE_TBB). */
#ifdef BENCH_HAVE_TBB
void tbb_warm_up(void);
void tbb_spawn_join(long *slots, size_t n);
void tbb_spawn_join_nested(long *slots, size_t n);
long tbb_fib(int n);
void tbb_map_sum(const double *a, size_t n, size_t chunks, double *part);
void tbb_merge_sort(const int *in, int *out, int *tmp, size_t n);
void tbb_blocking_fanout(size_t k, int64_t ns, unsigned char *done);
size_t tbb_queued_memory(long *slots, size_t n);
#else
#define BENCH_NO_TBB (bench_die("built without oneTBB"), 0)
#define tbb_warm_up() ((void)BENCH_NO_TBB)
#define tbb_spawn_join(slots, n) ((void)BENCH_NO_TBB)
#define tbb_spawn_join_nested(slots, n) ((void)BENCH_NO_TBB)
#define tbb_fib(n) ((long)BENCH_NO_TBB)
#define tbb_map_sum(a, n, chunks, part) ((void)BENCH_NO_TBB)
#define tbb_merge_sort(in, out, tmp, n) ((void)BENCH_NO_TBB)
#define tbb_blocking_fanout(k, ns, done) ((void)BENCH_NO_TBB)
#define tbb_queued_memory(slots, n) ((size_t)BENCH_NO_TBB)
#endif

/* One POSIX thread per task (small stacks), and a raw mutex+condvar ping-pong. */
void pt_spawn_join(long *slots, size_t n);
void pt_spawn_join_nested(long *slots, size_t n);
void pt_map_sum(const double *a, size_t n, size_t chunks, double *part);
void pt_blocking_fanout(size_t k, int64_t ns, unsigned char *done);
/* k threads wait on one condition variable (60 s timeout) for a flag; returns ns from
 * setting it (and broadcasting) to the last thread joined. */
int64_t pt_cancel_latency(size_t k);
/* k threads each blocked in poll(2) on the read end of its own pipe (60 s timeout); returns
 * ns from setting a flag (then writing a byte to every pipe) to the last thread joined. */
int64_t pt_poll_cancel(size_t k);
/* `rounds` round trips between the calling thread and a partner thread pinned to `cpu`,
 * through one mutex and two condition variables.  *wall_ns and *cpu_ns get the elapsed time
 * and the calling (waiting) thread's CPU time over all rounds. */
void pt_pingpong(size_t rounds, int cpu, int64_t *wall_ns, int64_t *cpu_ns);

/* The toy pool: what a first attempt looks like.  One mutex and one condition variable guard
 * a FIFO of tasks; each task is a malloc'ed future with its own mutex and condition
 * variable, which the submitter waits on and frees. */
typedef struct toypool toypool_t;
typedef struct toyfuture toyfuture_t;
toypool_t *toypool_create(size_t threads);
void toypool_destroy(toypool_t *pool);
toyfuture_t *toypool_submit(toypool_t *pool, void (*fn)(void *arg), void *arg);
void toyfuture_wait_free(toyfuture_t *f);

void toy_spawn_join(toypool_t *pool, long *slots, size_t n);
void toy_spawn_join_nested(toypool_t *pool, long *slots, size_t n);
void toy_map_sum(toypool_t *pool, const double *a, size_t n, size_t chunks, double *part);
void toy_blocking_fanout(toypool_t *pool, size_t k, int64_t ns, unsigned char *done);
size_t toy_queued_memory(long *slots, size_t n);
/* As pt_pingpong, on a new pool of one thread pinned to `cpu`: submit a task, wait for its
 * future. */
void toy_pingpong(size_t rounds, int cpu, int64_t *wall_ns, int64_t *cpu_ns);

#ifdef __cplusplus
}
#endif

#endif /* BENCH_H */
