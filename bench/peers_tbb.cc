/* SPDX-License-Identifier: MIT */
// peers_tbb.cc - the oneTBB peer: tbb::task_group in the default arena (one thread per CPU,
// the calling thread included), behind the C functions that bench.h declares.
//
// The only C++ in the project.  It is compiled when configure finds oneTBB (Debian:
// libtbb-dev); without it the benchmark simply has no tbb lines.
#include "bench.h"

#if __has_include(<oneapi/tbb/task_group.h>)
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#else
#include <tbb/task_arena.h>
#include <tbb/task_group.h>
#endif

void tbb_warm_up(void)
{
    tbb::task_group g;
    for (int i = 0; i < 64; i++)
        g.run([] {});
    g.wait();
}

void tbb_spawn_join(long *slots, size_t n)
{
    tbb::task_group g;
    for (size_t i = 0; i < n; i++)
        g.run([slots, i] { slots[i] = 2 * (long)i; });
    g.wait();
}

void tbb_spawn_join_nested(long *slots, size_t n)
{
    tbb::task_group g;
    g.run([slots, n] { tbb_spawn_join(slots, n); });
    g.wait();
}

static long fib_tasks(int n)
{
    if (n < BENCH_FIB_CUTOFF)
        return bench_fib_seq(n);
    long a, b;
    tbb::task_group g;
    g.run([&a, n] { a = fib_tasks(n - 1); });
    g.run([&b, n] { b = fib_tasks(n - 2); });
    g.wait();
    return a + b;
}

long tbb_fib(int n)
{
    return fib_tasks(n);
}

void tbb_map_sum(const double *a, size_t n, size_t chunks, double *part)
{
    tbb::task_group g;
    for (size_t c = 0; c < chunks; c++)
        g.run([=] {
            size_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
            part[c] = bench_sum_sqrt(a + lo, hi - lo);
        });
    g.wait();
}

void tbb_merge_sort(const int *in, int *out, int *tmp, size_t n)
{
    if (n < BENCH_SORT_CUTOFF) {
        bench_merge_sort_seq(in, out, tmp, n);
        return;
    }
    size_t h = n / 2;
    tbb::task_group g;
    g.run([=] { tbb_merge_sort(in, tmp, out, h); });
    g.run([=] { tbb_merge_sort(in + h, tmp + h, out + h, n - h); });
    g.wait();
    bench_merge(tmp, h, tmp + h, n - h, out);
}

void tbb_blocking_fanout(size_t k, int64_t ns, unsigned char *done)
{
    tbb::task_group g;
    for (size_t i = 0; i < k; i++)
        g.run([=] {
            bench_nap(ns);
            done[i] = 1;
        });
    g.wait();
}

// An arena of two slots, one kept for the calling thread: its single worker takes the task
// that blocks on the gate, so the tasks the calling thread then spawns stay in its own deque,
// unstarted, until the gate opens and wait() runs them.
size_t tbb_queued_memory(long *slots, size_t n)
{
    tbb::task_arena arena(2, 1);
    bench_gate_t *gate = bench_gate_create();
    bench_gate_t *entered = bench_gate_create();
    bench_mem_t before = {0, 0}, after = {0, 0};

    arena.execute([&] {
        tbb::task_group g;
        g.run([=] {
            bench_gate_open(entered);
            bench_gate_wait(gate);
        });
        bench_gate_wait(entered);
        before = bench_mem_now();
        for (size_t i = 0; i < n; i++)
            g.run([slots, i] { slots[i] = 2 * (long)i; });
        after = bench_mem_now();
        bench_gate_open(gate);
        g.wait();
    });
    bench_gate_destroy(entered);
    bench_gate_destroy(gate);
    return bench_mem_growth(before, after);
}
