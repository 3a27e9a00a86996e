/* SPDX-License-Identifier: MIT */
/*
 * time.c - deadlines on CLOCK_MONOTONIC, as int64 nanoseconds.
 *
 * Deadlines are absolute so that a wait cut short by a spurious wake-up and
 * resumed does not drift.  Every conversion saturates instead of wrapping.
 */
#include "internal.h"

#include <time.h>

#define NS_PER_SEC INT64_C(1000000000)

nursery_time_t nursery_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (nursery_time_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

nursery_time_t nursery_after_ns(int64_t ns)
{
    nursery_time_t now = nursery_now();
    if (ns > 0 && ns >= NURSERY_FOREVER - now)
        return NURSERY_FOREVER;
    return now + ns;
}

nursery_time_t nursery_after_ms(int64_t ms)
{
    if (ms > INT64_MAX / 1000000)
        return NURSERY_FOREVER;
    if (ms < INT64_MIN / 1000000)
        ms = INT64_MIN / 1000000;
    return nursery_after_ns(ms * 1000000);
}

struct timespec nursery__timespec(nursery_time_t t)
{
    struct timespec ts;
    if (t < 0)
        t = 0;
    ts.tv_sec = (time_t)(t / NS_PER_SEC);
    ts.tv_nsec = (long)(t % NS_PER_SEC);
    return ts;
}

void nursery__cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}
