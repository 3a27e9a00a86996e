/*
 * helpers.h - synchronisation helpers shared by the test suites.
 *
 * Tests order events with latches and gates, never with sleeps.  A latch
 * counts down to zero; a gate is a future that tasks wait on.  Waits
 * here are bounded (a hang becomes a test failure, not a CI timeout).
 */
#ifndef NURSERY_TEST_HELPERS_H
#define NURSERY_TEST_HELPERS_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nursery.h"

/* How long a helper waits before declaring the test hung (generous: CI
 * machines are shared and slow, and sanitizers slow everything). */
#define TEST_HANG_MS 60000

typedef struct latch {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
} latch_t;

static inline void latch_init(latch_t *l, int count)
{
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->count = count;
}

static inline void latch_destroy(latch_t *l)
{
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
}

static inline void latch_count_down(latch_t *l)
{
    pthread_mutex_lock(&l->mu);
    if (l->count > 0 && --l->count == 0)
        pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* Waits (not cancellably: it is a plain condvar) until the count is zero.
 * Returns true if it reached zero, false after TEST_HANG_MS. */
static inline bool latch_wait(latch_t *l)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += TEST_HANG_MS / 1000;
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (l->count > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    bool ok = l->count == 0;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

static inline bool latch_is_open(latch_t *l)
{
    pthread_mutex_lock(&l->mu);
    bool open = l->count == 0;
    pthread_mutex_unlock(&l->mu);
    return open;
}

/* A gate is a future that tasks wait on and the test opens: waiting on it is
 * a cancellation point, so a cancelled nursery never hangs on a gate that
 * nobody opens. */
static inline nursery_result_t *gate_new(void)
{
    nursery_result_t *g = NULL;
    ck_assert_int_eq(nursery_future_create(&g), 0);
    return g;
}

static inline void gate_open(nursery_result_t *g)
{
    ck_assert_int_eq(nursery_future_set_value(g, NULL), 0);
}

/* Waits for the gate: 0, ECANCELED (the calling task was cancelled) or
 * ETIMEDOUT after TEST_HANG_MS. */
static inline int gate_wait(nursery_result_t *g)
{
    return nursery_result_wait(g, nursery_after_ms(TEST_HANG_MS));
}

/* Encodes small integers as task values. */
#define INT2PTR(i) ((void *)(intptr_t)(i))
#define PTR2INT(p) ((int)(intptr_t)(p))

/* A pool of `threads` workers (checked fixture friendly). */
static inline nursery_pool_t *test_pool(size_t threads)
{
    nursery_pool_options_t o = {0};
    o.threads = threads;
    nursery_pool_t *p = NULL;
    ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* Runs a suite in fork mode and returns the process exit status. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* ---- Expectations checked inside tasks -----------------------------------
 * ck_assert() in a worker thread would exit() the test process while other
 * threads still run.  A task records its first failed expectation instead,
 * and the test thread asserts ck_assert_tasks_ok() once the tasks are joined
 * (join makes everything the tasks wrote visible). */

static pthread_mutex_t task_expect_mu __attribute__((unused)) = PTHREAD_MUTEX_INITIALIZER;
static char task_expect_msg[256] __attribute__((unused));

static inline void task_expect_fail(const char *file, int line, const char *what, long long a,
                                    long long b)
{
    pthread_mutex_lock(&task_expect_mu);
    if (task_expect_msg[0] == '\0')
        snprintf(task_expect_msg, sizeof(task_expect_msg), "%s:%d: %s (%lld, %lld)", file, line,
                 what, a, b);
    pthread_mutex_unlock(&task_expect_mu);
}

/* task_expect(cond) and task_expect_eq(a, b), for use inside tasks. */
#define task_expect(cond) ((cond) ? (void)0 : task_expect_fail(__FILE__, __LINE__, #cond, 0, 0))
#define task_expect_eq(a, b)                                                                       \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            task_expect_fail(__FILE__, __LINE__, #a " == " #b, a_, b_);                            \
    } while (0)

#define ck_assert_tasks_ok()                                                                       \
    do {                                                                                           \
        pthread_mutex_lock(&task_expect_mu);                                                       \
        bool ok_ = task_expect_msg[0] == '\0';                                                     \
        pthread_mutex_unlock(&task_expect_mu);                                                     \
        ck_assert_msg(ok_, "in a task: %s", task_expect_msg);                                      \
    } while (0)

/* A TCase with the timeout every blocking test case needs. */
static inline TCase *tcase_with_timeout(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return tc;
}

#endif
