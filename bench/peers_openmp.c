/* SPDX-License-Identifier: MIT */
/*
 * peers_openmp.c - the OpenMP peer: explicit tasks (libgomp with -fopenmp), the team at its
 * default size (one thread per CPU), the defaults of the runtime everywhere else.
 *
 * Each run is one parallel region in which a single thread creates the tasks; the region's
 * closing barrier (or a taskwait) is the join.  libgomp keeps its team between regions, so a
 * run pays for waking the team, as a pool pays for waking its workers.
 */
#include "bench.h"

/* Without OpenMP (configure found no flag for it) the driver runs no openmp lines. */
#ifdef _OPENMP

void openmp_warm_up(void)
{
#pragma omp parallel
    {
        (void)0;
    }
}

void openmp_spawn_join(long *slots, size_t n)
{
#pragma omp parallel
#pragma omp single
    {
        for (size_t i = 0; i < n; i++) {
#pragma omp task firstprivate(i)
            slots[i] = 2 * (long)i;
        }
#pragma omp taskwait
    }
}

void openmp_spawn_join_nested(long *slots, size_t n)
{
#pragma omp parallel
#pragma omp single
    {
#pragma omp task
        {
            for (size_t i = 0; i < n; i++) {
#pragma omp task firstprivate(i)
                slots[i] = 2 * (long)i;
            }
#pragma omp taskwait
        }
#pragma omp taskwait
    }
}

static long fib_tasks(int n)
{
    if (n < BENCH_FIB_CUTOFF)
        return bench_fib_seq(n);
    long a, b;
#pragma omp task shared(a)
    a = fib_tasks(n - 1);
#pragma omp task shared(b)
    b = fib_tasks(n - 2);
#pragma omp taskwait
    return a + b;
}

long openmp_fib(int n)
{
    long r = 0;
#pragma omp parallel
#pragma omp single
    r = fib_tasks(n);
    return r;
}

long openmp_fib_from_task(int n)
{
    long r = 0;
#pragma omp parallel
#pragma omp single
    {
#pragma omp task shared(r)
        r = fib_tasks(n);
#pragma omp taskwait
    }
    return r;
}

void openmp_map_sum(const double *a, size_t n, size_t chunks, double *part)
{
#pragma omp parallel
#pragma omp single
    {
        for (size_t c = 0; c < chunks; c++) {
#pragma omp task firstprivate(c)
            {
                size_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
                part[c] = bench_sum_sqrt(a + lo, hi - lo);
            }
        }
#pragma omp taskwait
    }
}

void openmp_map_items(size_t n)
{
#pragma omp parallel for schedule(dynamic)
    for (size_t i = 0; i < n; i++)
        bench_map_item(i);
}

static void merge_sort_tasks(const int *in, int *out, int *tmp, size_t n)
{
    if (n < BENCH_SORT_CUTOFF) {
        bench_merge_sort_seq(in, out, tmp, n);
        return;
    }
    size_t h = n / 2;
#pragma omp task
    merge_sort_tasks(in, tmp, out, h);
#pragma omp task
    merge_sort_tasks(in + h, tmp + h, out + h, n - h);
#pragma omp taskwait
    bench_merge(tmp, h, tmp + h, n - h, out);
}

void openmp_merge_sort(const int *in, int *out, int *tmp, size_t n)
{
#pragma omp parallel
#pragma omp single
    merge_sort_tasks(in, out, tmp, n);
}

void openmp_blocking_fanout(size_t k, int64_t ns, unsigned char *done)
{
#pragma omp parallel
#pragma omp single
    {
        for (size_t i = 0; i < k; i++) {
#pragma omp task firstprivate(i)
            {
                bench_nap(ns);
                done[i] = 1;
            }
        }
#pragma omp taskwait
    }
}

#endif /* _OPENMP */
