/* SPDX-License-Identifier: MIT */
/*
 * helpers.h - helpers shared by the test suites.
 *
 * Tests order events with latches and gates, never with sleeps.  A latch
 * counts down to zero; a gate is a future that tasks wait on.  Waits
 * here are bounded (a hang becomes a test failure, not a CI timeout).
 *
 * Sections: latches, gates, task values, pools, small tasks, assertions on
 * results, results sent to a channel, expectations checked inside tasks,
 * forked children, and registering and running suites.  The functions are static inline, so
 * a suite that uses only some of them builds without unused-function
 * warnings.
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
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nursery.h"

/* How long a helper waits before declaring the test hung (generous: CI
 * machines are shared and slow, and sanitizers slow everything). */
#define TEST_HANG_MS 60000

/* ---- Latches --------------------------------------------------------------
 * A latch counts down to zero; waiting for it is a plain condvar wait (not a
 * cancellation point). */

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
 * Returns true if it reached zero, false after `ms` milliseconds. */
static inline bool latch_wait_ms(latch_t *l, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&l->mu);
    int rc = 0;
    while (l->count > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&l->cv, &l->mu, &ts);
    bool ok = l->count == 0;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

/* latch_wait_ms() with the hang limit: false after TEST_HANG_MS. */
static inline bool latch_wait(latch_t *l)
{
    return latch_wait_ms(l, TEST_HANG_MS);
}

static inline bool latch_is_open(latch_t *l)
{
    pthread_mutex_lock(&l->mu);
    bool open = l->count == 0;
    pthread_mutex_unlock(&l->mu);
    return open;
}

/* ---- Polling a state nothing signals ----------------------------------------
 * Some states have no event to wait on (a deadline that cancelled a scope,
 * the number of threads blocked in a channel or a pool): poll_until looks
 * at the state itself every 200 us.  It orders nothing but that look. */

static inline bool poll_until(bool (*cond)(const void *ctx), const void *ctx)
{
    nursery_time_t give_up = nursery_after_ms(TEST_HANG_MS);
    struct timespec pause = {0, 200 * 1000};
    while (!cond(ctx)) {
        if (nursery_now() >= give_up)
            return false;
        nanosleep(&pause, NULL);
    }
    return true;
}

/* ---- Gates ----------------------------------------------------------------
 * A gate is a future that tasks wait on and the test opens: waiting on it is
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

/* ---- Gated tasks ---------------------------------------------------------- */

/* Tasks that say they are running, then wait on a gate and return what the
 * wait returned (rc: -1 until then, so also when a task never ran). */
struct gated {
    latch_t running;
    nursery_result_t *gate;
    atomic_int rc;
};

static inline void gated_init(struct gated *g, int tasks)
{
    latch_init(&g->running, tasks);
    g->gate = gate_new();
    atomic_init(&g->rc, -1);
}

static inline void gated_fini(struct gated *g)
{
    nursery_result_release(g->gate);
    latch_destroy(&g->running);
}

static inline int gated_task(void *arg, void **value)
{
    (void)value;
    struct gated *g = arg;
    latch_count_down(&g->running);
    int rc = gate_wait(g->gate);
    atomic_store(&g->rc, rc);
    return rc;
}

/* One task that waits on a gate, then fails with `fail` (a message made by
 * nursery_fail) or returns `value`; wait_rc is what the wait returned. */
struct gated_value {
    nursery_result_t *gate;
    int value;
    int fail;
    int wait_rc;
    latch_t *entered; /* counted down when it starts (NULL: none) */
};

/* ---- Task values ------------------------------------------------------- */

/* Encodes small integers as task values. */
#define INT2PTR(i) ((void *)(intptr_t)(i))
#define PTR2INT(p) ((int)(intptr_t)(p))

/* The task of a struct gated_value. */
static inline int gated_value_task(void *arg, void **value)
{
    struct gated_value *g = arg;
    if (g->entered != NULL)
        latch_count_down(g->entered);
    g->wait_rc = gate_wait(g->gate);
    if (g->wait_rc != 0)
        return g->wait_rc;
    if (g->fail)
        return nursery_fail(g->fail, "gated failure");
    *value = INT2PTR(g->value);
    return 0;
}

/* A thread that cancels a scope once a latch opens, then releases its
 * reference to it (start it with pthread_create(..., cancel_when_running,
 * &c) after nursery_scope_retain()). */
struct canceller {
    latch_t *running;
    nursery_scope_t *scope;
};

static inline void *cancel_when_running(void *arg)
{
    struct canceller *c = arg;
    if (latch_wait(c->running))
        nursery_scope_cancel(c->scope);
    nursery_scope_release(c->scope);
    return NULL;
}

/* ---- Pools ------------------------------------------------------------- */

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

static inline bool pool_is_quiet(const void *ctx)
{
    nursery_pool_stats_t st;
    return nursery_pool_stats((nursery_pool_t *)ctx, &st) == 0 && st.idle == st.threads &&
           st.running == 0 && st.queued == 0;
}

/* Waits until every worker of the pool has parked.  A task's join returns
 * once the task is reported finished, while its worker may still be giving
 * the task's memory back: a fork() then leaves that block reachable only
 * from a thread the child does not have, which valgrind in the child calls
 * definitely lost.  A fork test calls this first. */
static inline void wait_pool_quiet(nursery_pool_t *p)
{
    ck_assert_msg(poll_until(pool_is_quiet, p), "the pool's workers never all parked");
}

/* A pool that never grows past `threads` (no compensation threads), so a
 * task that blocks really keeps its worker busy and what is queued behind
 * it stays queued. */
static inline nursery_pool_t *capped_pool(size_t threads)
{
    nursery_pool_options_t o = {0};
    o.threads = threads;
    o.max_threads = threads;
    nursery_pool_t *p = NULL;
    ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
    return p;
}

static inline void destroy_pool(nursery_pool_t *p)
{
    ck_assert_int_eq(nursery_pool_destroy(p), 0);
}

/* ---- Small tasks ----------------------------------------------------------
 * Counters are atomic_int, passed as the task's argument. */

/* A task that adds one to its counter. */
static inline int count_task(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add((atomic_int *)arg, 1);
    return 0;
}

/* An arg_destroy that adds one to its counter. */
static inline void count_call(void *p)
{
    atomic_fetch_add((atomic_int *)p, 1);
}

/* Runs `tasks` count_tasks on `count` in a new nursery of `pool` (NULL: the
 * default pool) and joins it. */
static inline void run_count_tasks(nursery_pool_t *pool, atomic_int *count, int tasks)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < tasks; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, count, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
}

/* ---- Assertions on results ------------------------------------------------
 * For the test thread (they use ck_assert).  A value is read as an int
 * (PTR2INT). */

/* r's error (NULL: none); reading it must succeed. */
static inline nursery_error_t *error_of(const nursery_result_t *r)
{
    nursery_error_t *e = (nursery_error_t *)1;
    ck_assert_int_eq(nursery_result_error(r, &e), 0);
    return e;
}

/* r is done with value `expected` and no error. */
static inline void assert_value(const nursery_result_t *r, int expected)
{
    void *v = NULL;
    ck_assert(nursery_result_is_done(r));
    ck_assert_int_eq(nursery_result_value(r, &v), 0);
    ck_assert_int_eq(PTR2INT(v), expected);
    ck_assert_ptr_null(error_of(r));
}

/* r is done with an error of `code`: reading the value is a task-failed
 * error and the error is the same object on every read.  Returns it. */
static inline nursery_error_t *assert_failed(const nursery_result_t *r, int code)
{
    void *v = NULL;
    ck_assert(nursery_result_is_done(r));
    ck_assert_int_eq(nursery_result_value(r, &v), NURSERY_EFAILED);
    nursery_error_t *e = error_of(r);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(nursery_error_code(e), code);
    ck_assert_ptr_eq(error_of(r), e);
    ck_assert_ptr_eq(error_of(r), e);
    return e;
}

/* r is not done: both reads are not-done errors. */
static inline void assert_not_done(const nursery_result_t *r)
{
    void *v = NULL;
    nursery_error_t *e = NULL;
    ck_assert(!nursery_result_is_done(r));
    ck_assert_int_eq(nursery_result_value(r, &v), NURSERY_ENOTDONE);
    ck_assert_int_eq(nursery_result_error(r, &e), NURSERY_ENOTDONE);
}

/* Releases the `n` results of r. */
static inline void results_release(nursery_result_t **r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        nursery_result_release(r[i]);
}

/* For printable forms: does `hay` contain `needle`? */
static inline bool contains(const char *hay, const char *needle)
{
    return strstr(hay, needle) != NULL;
}

/* ---- Results sent to a channel --------------------------------------------
 * nursery_results_to_channel() sends new references: a channel for it
 * releases what it still holds with release_item. */

static inline void release_item(void *item)
{
    nursery_result_release(item);
}

/* nursery_results_to_channel() as a task; rc is what it returned. */
struct to_channel {
    nursery_result_t *const *results;
    size_t n;
    nursery_sender_t *tx;
    bool close_on_complete;
    int rc;
    latch_t *entered; /* counted down on entry (NULL: none) */
};

static inline int to_channel_task(void *arg, void **value)
{
    struct to_channel *tc = arg;
    (void)value;
    if (tc->entered != NULL)
        latch_count_down(tc->entered);
    tc->rc = nursery_results_to_channel(tc->results, tc->n, tc->tx, tc->close_on_complete);
    return tc->rc;
}

/* ---- Expectations checked inside tasks ------------------------------------
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

/* ---- Forked children --------------------------------------------------------
 * A test that forks runs its checks in the child, which reports through its
 * exit status: 0 when every step passed, else the number of the step that
 * failed.  The child never hangs: SIGALRM after `seconds` kills it (Check's
 * own SIGALRM handler, inherited through fork, would end the whole test
 * instead). */

/* fork() for such a test: 0 in the child, the child's pid in the parent. */
static inline pid_t fork_child(unsigned seconds)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm(seconds);
    }
    return pid;
}

/* Waits for the child and asserts that every step of it passed. */
static inline void assert_child_passed(pid_t pid)
{
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "child killed by signal %d",
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    ck_assert_msg(WEXITSTATUS(status) == 0, "child failed at step %d", WEXITSTATUS(status));
}

/* ---- Registering and running suites ---------------------------------------
 * Every test case gets a timeout (every blocking test needs one), in
 * seconds: a suite either groups its tests in a few TCases
 * (tcase_with_timeout) or gives each test a TCase of its own (ADD_CASE). */

/* A new TCase of `s` with a timeout of `seconds`. */
static inline TCase *tcase_with_timeout(Suite *s, const char *name, double seconds)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, seconds);
    suite_add_tcase(s, tc);
    return tc;
}

/* ADD_CASE(s, test, seconds): `test` in a TCase of its own, named after it. */
static inline void add_case(Suite *s, const char *name, const TTest *test, double seconds)
{
    tcase_add_test(tcase_with_timeout(s, name, seconds), test);
}

#define ADD_CASE(s, test, seconds) add_case((s), #test, (test), (seconds))

/* Runs a suite in fork mode and returns the process exit status. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
