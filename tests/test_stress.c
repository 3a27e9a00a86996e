/* SPDX-License-Identifier: MIT */
/*
 * test_stress.c - races repeated in bounded loops: pool lifetime, join and
 * cancel against completion, per-task cancel, wait_any, nested waits on one
 * thread, concurrent starters, shutdown after join; and the scheduler:
 * helping joiners and waiters, stealing, the injection queue, sleeping and
 * waking, threads added for blocked workers and retired.
 *
 * Counts are moderate so that each case stays well under its timeout even
 * under ThreadSanitizer; the sanitizer, not the count, is what finds races.
 */
#include "helpers.h"

START_TEST(pool_create_destroy_loop)
{
    atomic_int count = 0;
    int expected = 0;
    for (int i = 0; i < 200; i++) {
        nursery_pool_options_t o = {.threads = 1 + (size_t)(i % 4)};
        nursery_pool_t *p = NULL;
        ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
        if (i % 2) {
            run_count_tasks(p, &count, 1);
            expected++;
        }
        ck_assert_int_eq(nursery_pool_destroy(p), 0);
    }
    ck_assert_int_eq(atomic_load(&count), expected);
}
END_TEST

/* Plain (non-atomic) writes: join must make them visible. */
struct plain {
    int value;
    char pad[60];
};

static int write_plain(void *arg, void **value)
{
    struct plain *p = arg;
    p->value++;
    *value = arg;
    return 0;
}

START_TEST(join_races_last_task_completion)
{
    nursery_pool_t *pool = test_pool(4);
    struct plain slots[4] = {{0}};
    for (int i = 0; i < 500; i++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        int tasks = 1 + i % 4;
        for (int t = 0; t < tasks; t++)
            ck_assert_int_eq(nursery_start_soon(n, write_plain, &slots[t], NULL), 0);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
        for (int t = 0; t < tasks; t++)
            slots[t].value--;
        for (int t = 0; t < 4; t++)
            ck_assert_int_eq(slots[t].value, 0);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* One task racing cancellation: it either runs (and then may see the
 * cancellation at its checkpoint) or never runs; its argument is destroyed
 * exactly once either way, and its capture gets exactly one outcome. */
struct racer {
    atomic_int ran;
    atomic_int destroyed;
};

static int racer_task(void *arg, void **value)
{
    struct racer *r = arg;
    atomic_fetch_add(&r->ran, 1);
    *value = arg;
    return nursery_checkpoint();
}

static void racer_destroy(void *arg)
{
    atomic_fetch_add(&((struct racer *)arg)->destroyed, 1);
}

/* Checks a racer's capture once everything is over; returns 1 if it
 * succeeded, 0 if it ended cancelled. */
static int check_racer(nursery_result_t *res, struct racer *r)
{
    ck_assert(nursery_result_is_done(res));
    ck_assert_int_eq(atomic_load(&r->destroyed), 1);
    ck_assert_int_le(atomic_load(&r->ran), 1);
    void *v = NULL;
    int rc = nursery_result_value(res, &v);
    if (rc == 0) {
        ck_assert_ptr_eq(v, r);
        ck_assert_int_eq(atomic_load(&r->ran), 1);
        return 1;
    }
    ck_assert_int_eq(rc, NURSERY_EFAILED);
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_result_error(res, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(nursery_error_code(err), ECANCELED);
    return 0;
}

#define RACERS 4

START_TEST(cancel_races_task_completion)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_task_options_t opts = {.arg_destroy = racer_destroy};
    int succeeded = 0;
    for (int i = 0; i < 300; i++) {
        struct racer r[RACERS];
        nursery_result_t *res[RACERS];
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        for (int t = 0; t < RACERS; t++) {
            atomic_init(&r[t].ran, 0);
            atomic_init(&r[t].destroyed, 0);
            ck_assert_int_eq(nursery_capture_start_soon(n, racer_task, &r[t], &opts, &res[t]), 0);
        }
        ck_assert_int_eq(nursery_cancel(n), 0);
        nursery_errors_t *errs = NULL;
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
        ck_assert_uint_eq(nursery_errors_count(errs), 0);
        nursery_errors_free(errs);
        for (int t = 0; t < RACERS; t++) {
            succeeded += check_racer(res[t], &r[t]);
            nursery_result_release(res[t]);
        }
    }
    /* Both outcomes are possible; neither is required. */
    ck_assert_int_le(succeeded, 300 * RACERS);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* Cancelling a nursery detaches its tasks' cancel nodes while the tasks
 * wake, end (freeing their nodes) or park again after a short sleep ran
 * out.  Every task must end cancelled, and nothing may be touched after it
 * is freed (the sanitizers watch that). */
struct napper {
    latch_t *entered;
    atomic_int *cancelled;
    unsigned seed;
};

static int nap_until_cancelled(void *arg, void **value)
{
    (void)value;
    struct napper *np = arg;
    latch_count_down(np->entered);
    for (;;) {
        np->seed = np->seed * 1103515245u + 12345u;
        int rc = nursery_sleep(nursery_after_ns((np->seed >> 16) % 200000));
        if (rc == ECANCELED) {
            atomic_fetch_add(np->cancelled, 1);
            return rc;
        }
        if (rc != 0)
            return rc;
    }
}

#define NAPPERS 24

START_TEST(cancel_races_tasks_that_park_again)
{
    /* A thread each: naps this short never count as blocked. */
    nursery_pool_t *pool = test_pool(NAPPERS);
    for (int i = 0; i < 100; i++) {
        latch_t entered;
        latch_init(&entered, NAPPERS);
        atomic_int cancelled = 0;
        struct napper np[NAPPERS];
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        for (int t = 0; t < NAPPERS; t++) {
            np[t] = (struct napper){.entered = &entered, .cancelled = &cancelled,
                                    .seed = (unsigned)(i * NAPPERS + t)};
            ck_assert_int_eq(nursery_start_soon(n, nap_until_cancelled, &np[t], NULL), 0);
        }
        /* Some rounds cancel while tasks are still starting. */
        if (i % 2)
            ck_assert(latch_wait(&entered));
        ck_assert_int_eq(nursery_cancel(n), 0);
        nursery_errors_t *errs = NULL;
        ck_assert_int_eq(nursery_join(n, nursery_after_ms(TEST_HANG_MS), &errs), 0);
        /* Ending cancelled is no failure, but it is counted: every task,
         * whether it ran or was cancelled before it started. */
        ck_assert_ptr_nonnull(errs);
        ck_assert_uint_eq(nursery_errors_count(errs), 0);
        ck_assert_uint_eq(nursery_errors_cancelled(errs), NAPPERS);
        nursery_errors_free(errs);
        /* Tasks cancelled before they started never ran. */
        ck_assert_int_le(atomic_load(&cancelled), NAPPERS);
        if (i % 2)
            ck_assert_int_eq(atomic_load(&cancelled), NAPPERS);
        latch_destroy(&entered);
    }
    destroy_pool(pool);
}
END_TEST

/* nursery_cancel() from another thread while the opener is in join (issue
 * 6, item 1).  The tasks end only when cancelled, so every cancel begins
 * while the nursery is open; join may free the nursery only once that
 * cancel is done with it.  The sanitizers see a canceller that touches it
 * afterwards; the test checks the codes.  Odd rounds cancel once the tasks
 * run, even rounds at once (the tasks may still be queued). */
#define JOIN_CANCEL_TASKS 4

struct join_canceller {
    nursery_t *n;
    latch_t *running; /* waited for first (NULL: cancel at once) */
};

static void *cancel_during_join(void *arg)
{
    struct join_canceller *c = arg;
    if (c->running != NULL && !latch_wait(c->running))
        return INT2PTR(-1);
    return INT2PTR(nursery_cancel(c->n));
}

static int sleep_until_cancelled(void *arg, void **value)
{
    (void)value;
    latch_count_down(arg);
    return nursery_sleep(NURSERY_FOREVER);
}

START_TEST(cancel_racing_join_never_touches_freed_nursery)
{
    nursery_pool_t *pool = test_pool(JOIN_CANCEL_TASKS);
    for (int i = 0; i < 1000; i++) {
        latch_t running;
        latch_init(&running, JOIN_CANCEL_TASKS);
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        for (int t = 0; t < JOIN_CANCEL_TASKS; t++)
            ck_assert_int_eq(nursery_start_soon(n, sleep_until_cancelled, &running, NULL), 0);
        struct join_canceller c = {.n = n, .running = i % 2 ? &running : NULL};
        pthread_t canceller;
        ck_assert_int_eq(pthread_create(&canceller, NULL, cancel_during_join, &c), 0);
        nursery_errors_t *errs = NULL;
        int rc = nursery_join(n, nursery_after_ms(TEST_HANG_MS), &errs);
        void *cancel_rc = INT2PTR(-2);
        ck_assert_int_eq(pthread_join(canceller, &cancel_rc), 0);
        ck_assert_msg(rc == 0 && PTR2INT(cancel_rc) == 0,
                      "round %d: join returned %d, the cancel racing it %d", i, rc,
                      PTR2INT(cancel_rc));
        ck_assert_uint_eq(nursery_errors_count(errs), 0);
        nursery_errors_free(errs);
        latch_destroy(&running);
    }
    destroy_pool(pool);
}
END_TEST

START_TEST(result_cancel_races_task_completion)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_task_options_t opts = {.arg_destroy = racer_destroy};
    for (int i = 0; i < 300; i++) {
        struct racer r;
        atomic_init(&r.ran, 0);
        atomic_init(&r.destroyed, 0);
        atomic_int sibling = 0;
        nursery_result_t *res = NULL;
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        ck_assert_int_eq(nursery_capture_start_soon(n, racer_task, &r, &opts, &res), 0);
        ck_assert_int_eq(nursery_start_soon(n, count_task, &sibling, NULL), 0);
        int crc = nursery_result_cancel(res);
        ck_assert(crc == 0 || crc == EALREADY);
        /* Cancelling one task is not the nursery's failure or cancellation. */
        ck_assert(!nursery_cancelled());
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
        ck_assert_int_eq(atomic_load(&sibling), 1);
        int ok = check_racer(res, &r);
        if (crc == EALREADY)
            ck_assert_int_eq(ok, 1); /* it had finished, successfully */
        ck_assert_int_eq(nursery_result_cancel(res), EALREADY);
        nursery_result_release(res);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int return_arg(void *arg, void **value)
{
    *value = arg;
    return 0;
}

static int set_future(void *arg, void **value)
{
    (void)value;
    return nursery_future_set_value(arg, INT2PTR(77));
}

START_TEST(wait_any_races_completions)
{
    nursery_pool_t *pool = test_pool(4);
    for (int i = 0; i < 200; i++) {
        nursery_result_t *res[4];
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        ck_assert_int_eq(nursery_future_create(&res[3]), 0);
        for (int t = 0; t < 3; t++)
            ck_assert_int_eq(
                nursery_capture_start_soon(n, return_arg, INT2PTR(t + 1), NULL, &res[t]), 0);
        ck_assert_int_eq(nursery_start_soon(n, set_future, res[3], NULL), 0);
        size_t idx = SIZE_MAX;
        ck_assert_int_eq(nursery_wait_any(res, 4, nursery_after_ms(TEST_HANG_MS), &idx), 0);
        ck_assert_uint_lt(idx, 4);
        ck_assert(nursery_result_is_done(res[idx]));
        void *v = NULL;
        ck_assert_int_eq(nursery_result_value(res[idx], &v), 0);
        ck_assert_ptr_eq(v, idx == 3 ? INT2PTR(77) : INT2PTR(idx + 1));
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
        ck_assert_int_eq(nursery_wait_all(res, 4, nursery_after_ms(-1)), 0);
        for (int t = 0; t < 4; t++)
            nursery_result_release(res[t]);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int start_at_once(void *arg, void **value)
{
    (void)arg;
    int rc = nursery_started(INT2PTR(1));
    *value = INT2PTR(2);
    return rc;
}

START_TEST(start_deadline_races_started)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_task_options_t opts = {.arg_destroy = racer_destroy};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct racer r[300];
    nursery_result_t *done[300];
    for (int i = 0; i < 300; i++) {
        atomic_init(&r[i].ran, 0);
        atomic_init(&r[i].destroyed, 0);
        /* A deadline that has passed, or one of a few microseconds. */
        nursery_time_t deadline = i % 3 ? nursery_after_ns(20000) : nursery_after_ns(0);
        void *v = NULL;
        int rc = nursery_start(n, start_at_once, &r[i], &opts, deadline, &v, &done[i]);
        ck_assert_msg(rc == 0 || rc == ETIMEDOUT, "start returned %d", rc);
        if (rc == 0)
            ck_assert_ptr_eq(v, INT2PTR(1));
        ck_assert_ptr_nonnull(done[i]);
    }
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    for (int i = 0; i < 300; i++) {
        ck_assert(nursery_result_is_done(done[i]));
        ck_assert_int_eq(atomic_load(&r[i].destroyed), 1);
        nursery_result_release(done[i]);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* A task that opens a nursery, captures a child there and waits for it:
 * on a one-thread pool only the waiter itself can run the child. */
struct nested {
    nursery_pool_t *pool;
    atomic_int leaves;
};

static int leaf(void *arg, void **value)
{
    atomic_fetch_add(&((struct nested *)arg)->leaves, 1);
    *value = INT2PTR(5);
    return 0;
}

static int wait_on_child(void *arg, void **value)
{
    (void)value;
    struct nested *s = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, s->pool);
    if (rc)
        return rc;
    nursery_result_t *child = NULL;
    task_expect_eq(nursery_capture_start_soon(n, leaf, s, NULL, &child), 0);
    task_expect_eq(nursery_result_wait(child, nursery_after_ms(TEST_HANG_MS)), 0);
    void *v = NULL;
    task_expect_eq(nursery_result_value(child, &v), 0);
    task_expect(v == INT2PTR(5));
    nursery_result_release(child);
    /* and a plain child the join has to run */
    task_expect_eq(nursery_start_soon(n, leaf, s, NULL), 0);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    task_expect_eq(rc, 0);
    return rc;
}

START_TEST(nested_waits_on_one_thread_pool)
{
    nursery_pool_options_t o = {.threads = 1, .max_threads = 1};
    struct nested s = {.leaves = 0};
    ck_assert_int_eq(nursery_pool_create(&s.pool, &o), 0);
    for (int i = 0; i < 200; i++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, s.pool), 0);
        for (int t = 0; t < 2; t++)
            ck_assert_int_eq(nursery_start_soon(n, wait_on_child, &s, NULL), 0);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    }
    ck_assert_tasks_ok();
    ck_assert_int_eq(atomic_load(&s.leaves), 200 * 2 * 2);
    ck_assert_int_eq(nursery_pool_destroy(s.pool), 0);
}
END_TEST

#define STARTERS 4
#define PER_STARTER 500

struct starter {
    nursery_t *n;
    atomic_int *count;
    latch_t *go;
    int failures;
};

static void *start_many(void *arg)
{
    struct starter *s = arg;
    latch_wait(s->go);
    for (int i = 0; i < PER_STARTER; i++)
        if (nursery_start_soon(s->n, count_task, s->count, NULL) != 0)
            s->failures++;
    return NULL;
}

START_TEST(many_threads_start_into_one_nursery)
{
    nursery_pool_t *pool = test_pool(4);
    for (int round = 0; round < 5; round++) {
        atomic_int count = 0;
        latch_t go;
        latch_init(&go, 1);
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        pthread_t threads[STARTERS];
        struct starter st[STARTERS];
        for (int i = 0; i < STARTERS; i++) {
            st[i] = (struct starter){.n = n, .count = &count, .go = &go};
            ck_assert_int_eq(pthread_create(&threads[i], NULL, start_many, &st[i]), 0);
        }
        latch_count_down(&go);
        for (int i = 0; i < STARTERS; i++) {
            ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
            ck_assert_int_eq(st[i].failures, 0);
        }
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
        ck_assert_int_eq(atomic_load(&count), STARTERS * PER_STARTER);
        latch_destroy(&go);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* Blocks on a gate that its sibling opens, so the pool adds a thread. */
struct pair {
    nursery_result_t *gate;
};

static int pair_wait(void *arg, void **value)
{
    (void)value;
    return gate_wait(((struct pair *)arg)->gate);
}

static int pair_open(void *arg, void **value)
{
    (void)value;
    return nursery_future_set_value(((struct pair *)arg)->gate, NULL);
}

START_TEST(destroy_right_after_join)
{
    atomic_int count = 0;
    for (int i = 0; i < 200; i++) {
        nursery_pool_options_t o = {.threads = 1 + (size_t)(i % 4), .max_threads = 8};
        nursery_pool_t *p = NULL;
        ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
        struct pair pr = {.gate = gate_new()};
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, p), 0);
        for (int t = 0; t < 8; t++)
            ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
        /* Every other round, leave extra (compensation) threads behind. */
        if (i % 2) {
            ck_assert_int_eq(nursery_start_soon(n, pair_wait, &pr, NULL), 0);
            ck_assert_int_eq(nursery_start_soon(n, pair_open, &pr, NULL), 0);
        }
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
        ck_assert_int_eq(nursery_pool_destroy(p), 0);
        ck_assert(nursery_result_is_done(pr.gate) == (i % 2 == 1));
        nursery_result_release(pr.gate);
    }
    ck_assert_int_eq(atomic_load(&count), 200 * 8);
}
END_TEST

/* ---- the scheduler ----------------------------------------------------------
 * Work-stealing deques, the injection queue, helping joiners and waiters,
 * sleeping and waking, threads added for blocked workers.  Outcomes are
 * checked as values (counts, sums, statistics that follow from the
 * structure of the test), never as timings. */

/* Waits until the pool's statistics satisfy `ok`: a pool has no event for
 * "every worker is asleep" or "the extra threads have retired", so this
 * polls, bounded by TEST_HANG_MS.  Returns false on time-out; *last gets
 * the last statistics read. */
static bool stats_become(nursery_pool_t *p, bool (*ok)(const nursery_pool_stats_t *, size_t),
                         size_t arg, nursery_pool_stats_t *last)
{
    nursery_time_t deadline = nursery_after_ms(TEST_HANG_MS);
    for (;;) {
        ck_assert_int_eq(nursery_pool_stats(p, last), 0);
        if (ok(last, arg))
            return true;
        if (nursery_now() >= deadline)
            return false;
        nursery_sleep(nursery_after_ns(100 * 1000));
    }
}

/* ck_assert_msg that the pool's statistics come to satisfy `ok`. */
#define ck_assert_stats_become(p, ok, arg)                                                         \
    do {                                                                                           \
        nursery_pool_stats_t st_;                                                                  \
        ck_assert_msg(stats_become((p), (ok), (arg), &st_),                                        \
                      #ok " never held: threads %zu idle %zu blocked %zu queued %zu running %zu",  \
                      st_.threads, st_.idle, st_.blocked, st_.queued, st_.running);                \
    } while (0)

static bool all_idle(const nursery_pool_stats_t *st, size_t unused)
{
    (void)unused;
    return st->idle == st->threads && st->running == 0 && st->queued == 0;
}

static bool threads_are(const nursery_pool_stats_t *st, size_t threads)
{
    return st->threads == threads;
}

/* Joins `n` from the test thread within TEST_HANG_MS; if it times out, the
 * failure shows the pool's state (a lost wake-up: every worker idle with
 * tasks queued; or no worker left at all). */
static void join_or_fail(nursery_pool_t *pool, nursery_t *n)
{
    int rc = nursery_join(n, nursery_after_ms(TEST_HANG_MS), NULL);
    nursery_pool_stats_t st = {0};
    if (rc)
        nursery_pool_stats(pool, &st);
    ck_assert_msg(rc == 0, "join: %d; threads %zu idle %zu blocked %zu queued %zu running %zu", rc,
                  st.threads, st.idle, st.blocked, st.queued, st.running);
}

/* fib(n), splitting each call: fib(n - 1) is captured in a nursery of its
 * own, fib(n - 2) computed inline, then the nursery is joined (the joiner
 * runs the capture if nobody else has) and the capture's value read.  With
 * wait_first, odd levels wait for the capture before joining (a waiting
 * worker runs a queued capture itself). */
struct fib {
    nursery_pool_t *pool;
    int n;
    bool wait_first;
};

static int fib_task(void *arg, void **value)
{
    const struct fib *f = arg;
    if (f->n < 2) {
        *value = INT2PTR(f->n);
        return 0;
    }
    nursery_t *n = NULL;
    int rc = nursery_open(&n, f->pool);
    if (rc)
        return rc;
    struct fib left = {.pool = f->pool, .n = f->n - 1, .wait_first = f->wait_first};
    struct fib right = {.pool = f->pool, .n = f->n - 2, .wait_first = f->wait_first};
    nursery_result_t *r = NULL;
    task_expect_eq(nursery_capture_start_soon(n, fib_task, &left, NULL, &r), 0);
    void *rv = NULL;
    task_expect_eq(fib_task(&right, &rv), 0);
    if (f->wait_first && f->n % 2)
        task_expect_eq(nursery_result_wait(r, nursery_after_ms(TEST_HANG_MS)), 0);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    task_expect_eq(rc, 0);
    void *lv = NULL;
    task_expect_eq(nursery_result_value(r, &lv), 0);
    nursery_result_release(r);
    *value = INT2PTR(PTR2INT(lv) + PTR2INT(rv));
    return rc;
}

static int fib_sequential(int n)
{
    int a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        int c = a + b;
        a = b;
        b = c;
    }
    return a;
}

/* Captures that fib_task(n) starts, at every depth. */
static int fib_captures(int n)
{
    return n < 2 ? 0 : 1 + fib_captures(n - 1) + fib_captures(n - 2);
}

#define FIB_N 17
#define FIB_ROUNDS 8

START_TEST(fib_captures_on_pools_of_one_two_four)
{
    const size_t sizes[] = {1, 2, 4};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        /* One thread and no more: only helping makes progress. */
        nursery_pool_t *pool = sizes[k] == 1 ? capped_pool(1) : test_pool(sizes[k]);
        for (int round = 0; round < FIB_ROUNDS; round++) {
            int n = FIB_N - round % 2;
            /* Not waiting first on one thread: a capture its waiter ran
             * leaves its queue entry at the bottom of the worker's deque,
             * and the join of an outer nursery, which helps only with the
             * bottom entry, hangs behind it when no other worker can steal
             * (a limitation of pool_help, reported). */
            struct fib top = {.pool = pool, .n = n, .wait_first = sizes[k] > 1 && round % 2};
            nursery_t *nur = NULL;
            nursery_result_t *r = NULL;
            ck_assert_int_eq(nursery_open(&nur, pool), 0);
            ck_assert_int_eq(nursery_capture_start_soon(nur, fib_task, &top, NULL, &r), 0);
            join_or_fail(pool, nur);
            ck_assert_tasks_ok();
            assert_value(r, fib_sequential(n));
            nursery_result_release(r);
        }
        if (sizes[k] == 1) {
            /* Every capture below the top task was run by a waiter or a
             * joiner on the one worker: nobody else could. */
            nursery_pool_stats_t st;
            ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
            int expected = 0;
            for (int round = 0; round < FIB_ROUNDS; round++)
                expected += fib_captures(FIB_N - round % 2);
            ck_assert_uint_eq(st.helped, (uint64_t)expected);
            ck_assert_uint_eq(st.threads, 1);
        }
        ck_assert_int_eq(nursery_pool_destroy(pool), 0);
    }
}
END_TEST

/* A task (T) opens a nursery and starts a child (C) in it, then waits on a
 * gate while the pool's other worker steals C.  C opens a nursery of its
 * own, starts the grandchildren there and waits until they have all run.
 * The pool has two threads and may not grow, and both are waiting: once T
 * joins, the only way forward is for T's join to steal the grandchildren
 * from C's worker and run them - helping is restricted to descendants, and
 * these are. */
#define GRANDCHILDREN 8

struct lineage {
    nursery_pool_t *pool;
    nursery_result_t *join_gate;  /* T joins once this is open */
    nursery_result_t *grand_done; /* opened by the last grandchild */
    latch_t grand_started;        /* C has started every grandchild */
    atomic_int grand_ran;
};

static int grandchild(void *arg, void **value)
{
    (void)value;
    struct lineage *l = arg;
    if (atomic_fetch_add(&l->grand_ran, 1) + 1 == GRANDCHILDREN)
        task_expect_eq(nursery_future_set_value(l->grand_done, NULL), 0);
    return 0;
}

static int lineage_child(void *arg, void **value)
{
    (void)value;
    struct lineage *l = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, l->pool);
    if (rc)
        return rc;
    for (int i = 0; i < GRANDCHILDREN; i++)
        task_expect_eq(nursery_start_soon(n, grandchild, l, NULL), 0);
    latch_count_down(&l->grand_started);
    task_expect_eq(gate_wait(l->grand_done), 0);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    task_expect_eq(rc, 0);
    return rc;
}

static int lineage_top(void *arg, void **value)
{
    (void)value;
    struct lineage *l = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, l->pool);
    if (rc)
        return rc;
    task_expect_eq(nursery_start_soon(n, lineage_child, l, NULL), 0);
    task_expect_eq(gate_wait(l->join_gate), 0);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    task_expect_eq(rc, 0);
    return rc;
}

START_TEST(join_runs_grandchildren_of_a_waiting_child)
{
    nursery_pool_t *pool = capped_pool(2);
    for (int round = 0; round < 500; round++) {
        struct lineage l = {.pool = pool, .join_gate = gate_new(), .grand_done = gate_new()};
        latch_init(&l.grand_started, 1);
        atomic_init(&l.grand_ran, 0);
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        ck_assert_int_eq(nursery_start_soon(n, lineage_top, &l, NULL), 0);
        ck_assert(latch_wait(&l.grand_started));
        gate_open(l.join_gate);
        join_or_fail(pool, n);
        ck_assert_tasks_ok();
        ck_assert_int_eq(atomic_load(&l.grand_ran), GRANDCHILDREN);
        /* Every grandchild was run by T's join, helping. */
        nursery_pool_stats_t st;
        ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
        ck_assert_uint_eq(st.helped, (uint64_t)(round + 1) * GRANDCHILDREN);
        ck_assert_uint_eq(st.threads, 2);
        latch_destroy(&l.grand_started);
        nursery_result_release(l.join_gate);
        nursery_result_release(l.grand_done);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* On a pool of one thread (and no more), nested joins: T's join runs its
 * child C, which opens a nursery, hands it to the test thread and waits on
 * a gate - the only worker is then blocked.  The test thread starts tasks
 * into C's nursery (they go to the injection queue) and opens the gate;
 * C's join must find them there. */
#define INJECTED 40 /* more than one batch moved from the injection queue */

struct inner {
    nursery_pool_t *pool;
    nursery_result_t *inner_nursery; /* C's nursery, as the future's value */
    nursery_result_t *gate;
    atomic_int ran;
};

static int inner_leaf(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct inner *)arg)->ran, 1);
    return 0;
}

static int inner_child(void *arg, void **value)
{
    (void)value;
    struct inner *in = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, in->pool);
    if (rc)
        return rc;
    task_expect_eq(nursery_future_set_value(in->inner_nursery, n), 0);
    task_expect_eq(gate_wait(in->gate), 0);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    task_expect_eq(rc, 0);
    return rc;
}

static int inner_top(void *arg, void **value)
{
    (void)value;
    struct inner *in = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, in->pool);
    if (rc)
        return rc;
    task_expect_eq(nursery_start_soon(n, inner_child, in, NULL), 0);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    task_expect_eq(rc, 0);
    return rc;
}

START_TEST(nested_joins_take_injected_tasks_on_one_thread)
{
    nursery_pool_t *pool = capped_pool(1);
    for (int round = 0; round < 300; round++) {
        struct inner in = {.pool = pool, .gate = gate_new()};
        ck_assert_int_eq(nursery_future_create(&in.inner_nursery), 0);
        atomic_init(&in.ran, 0);
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        ck_assert_int_eq(nursery_start_soon(n, inner_top, &in, NULL), 0);
        ck_assert_int_eq(gate_wait(in.inner_nursery), 0);
        void *inner = NULL;
        ck_assert_int_eq(nursery_result_value(in.inner_nursery, &inner), 0);
        for (int i = 0; i < INJECTED; i++)
            ck_assert_int_eq(nursery_start_soon(inner, inner_leaf, &in, NULL), 0);
        gate_open(in.gate);
        join_or_fail(pool, n);
        ck_assert_tasks_ok();
        ck_assert_int_eq(atomic_load(&in.ran), INJECTED);
        /* C by T's join, the leaves by C's. */
        nursery_pool_stats_t st;
        ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
        ck_assert_uint_eq(st.helped, (uint64_t)(round + 1) * (INJECTED + 1));
        nursery_result_release(in.gate);
        nursery_result_release(in.inner_nursery);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* A task's memory goes back to the cache of the thread that started it.
 * Here that thread has exited before its tasks end (its cache is closed and
 * the memory must simply be freed), and the next thread reuses the closed
 * cache while tasks of the previous one still come back to it.  ASan and
 * valgrind see any block lost or used after it was freed. */
#define STARTER_TASKS 300

struct cache_starter {
    nursery_t *n;
    nursery_result_t *gate;
    atomic_int *ran;
    int failures;
};

static int count_after_gate(void *arg, void **value)
{
    (void)value;
    struct cache_starter *s = arg;
    int rc = gate_wait(s->gate);
    atomic_fetch_add(s->ran, 1);
    return rc;
}

static void *cache_starter_main(void *arg)
{
    struct cache_starter *s = arg;
    for (int i = 0; i < STARTER_TASKS; i++)
        if (nursery_start_soon(s->n, count_after_gate, s, NULL) != 0)
            s->failures++;
    return NULL;
}

START_TEST(task_memory_outlives_the_thread_that_started_it)
{
    nursery_pool_t *pool = test_pool(2);
    atomic_int ran = 0;
    for (int round = 0; round < 20; round++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        struct cache_starter s[2];
        for (int k = 0; k < 2; k++) {
            /* The second starter runs after the first has exited, while
             * the first one's tasks still wait on their gate. */
            s[k] = (struct cache_starter){.n = n, .gate = gate_new(), .ran = &ran};
            pthread_t tid;
            ck_assert_int_eq(pthread_create(&tid, NULL, cache_starter_main, &s[k]), 0);
            ck_assert_int_eq(pthread_join(tid, NULL), 0);
            ck_assert_int_eq(s[k].failures, 0);
        }
        /* Half of the rounds end the older tasks first. */
        gate_open(s[round % 2].gate);
        gate_open(s[1 - round % 2].gate);
        ck_assert_int_eq(nursery_join(n, nursery_after_ms(TEST_HANG_MS), NULL), 0);
        ck_assert_int_eq(atomic_load(&ran), (round + 1) * 2 * STARTER_TASKS);
        nursery_result_release(s[0].gate);
        nursery_result_release(s[1].gate);
    }
    destroy_pool(pool);
}
END_TEST

/* Plain threads start tasks into one nursery (the injection queue) while
 * those tasks start children and grandchildren into it from the workers
 * (their deques).  Every task runs once and has its argument destroyed
 * once. */
#define FEEDERS 4
#define PER_FEEDER 1000
#define FEED_DEPTH 3 /* a fed task, its child, its grandchild */

struct feed {
    nursery_t *n;
    struct feed_item *items; /* FEED_DEPTH * FEEDERS * PER_FEEDER */
    latch_t go;
};

struct feed_item {
    struct feed *feed;
    int index;
    atomic_int ran;
    atomic_int destroyed;
};

static void feed_item_destroy(void *arg)
{
    atomic_fetch_add(&((struct feed_item *)arg)->destroyed, 1);
}

static const nursery_task_options_t feed_opts = {.arg_destroy = feed_item_destroy};

static int feed_task(void *arg, void **value)
{
    (void)value;
    struct feed_item *it = arg;
    atomic_fetch_add(&it->ran, 1);
    /* Item i starts item i + FEEDERS * PER_FEEDER, one level down. */
    int next = it->index + FEEDERS * PER_FEEDER;
    if (next < FEED_DEPTH * FEEDERS * PER_FEEDER)
        task_expect_eq(
            nursery_start_soon(it->feed->n, feed_task, &it->feed->items[next], &feed_opts), 0);
    return 0;
}

struct feeder {
    struct feed *feed;
    int first;
    int failures;
};

static void *feeder_main(void *arg)
{
    struct feeder *f = arg;
    latch_wait(&f->feed->go);
    for (int i = 0; i < PER_FEEDER; i++)
        if (nursery_start_soon(f->feed->n, feed_task, &f->feed->items[f->first + i], &feed_opts))
            f->failures++;
    return NULL;
}

START_TEST(outside_threads_and_tasks_start_into_one_nursery)
{
    enum { ITEMS = FEED_DEPTH * FEEDERS * PER_FEEDER };
    nursery_pool_t *pool = test_pool(4);
    struct feed_item *items = calloc(ITEMS, sizeof(*items));
    ck_assert_ptr_nonnull(items);
    for (int round = 0; round < 8; round++) {
        struct feed feed = {.items = items};
        for (int i = 0; i < ITEMS; i++) {
            items[i].feed = &feed;
            items[i].index = i;
            atomic_init(&items[i].ran, 0);
            atomic_init(&items[i].destroyed, 0);
        }
        latch_init(&feed.go, 1);
        ck_assert_int_eq(nursery_open(&feed.n, pool), 0);
        pthread_t threads[FEEDERS];
        struct feeder feeders[FEEDERS];
        for (int i = 0; i < FEEDERS; i++) {
            feeders[i] = (struct feeder){.feed = &feed, .first = i * PER_FEEDER};
            ck_assert_int_eq(pthread_create(&threads[i], NULL, feeder_main, &feeders[i]), 0);
        }
        latch_count_down(&feed.go);
        for (int i = 0; i < FEEDERS; i++) {
            ck_assert_int_eq(pthread_join(threads[i], NULL), 0);
            ck_assert_int_eq(feeders[i].failures, 0);
        }
        join_or_fail(pool, feed.n);
        ck_assert_tasks_ok();
        for (int i = 0; i < ITEMS; i++) {
            ck_assert_msg(atomic_load(&items[i].ran) == 1, "item %d ran %d times", i,
                          atomic_load(&items[i].ran));
            ck_assert_msg(atomic_load(&items[i].destroyed) == 1, "item %d destroyed %d times", i,
                          atomic_load(&items[i].destroyed));
        }
        latch_destroy(&feed.go);
    }
    free(items);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* Bursts of tiny tasks from the test thread.  Before every other burst the
 * pool is left to fall asleep (every worker parked); the others come while
 * workers are still spinning or on their way to sleep.  A lost wake-up
 * leaves a burst queued with everyone asleep: its join times out. */
START_TEST(bursts_after_idle_gaps_are_never_lost)
{
    const size_t sizes[] = {1, 4};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        nursery_pool_t *pool = test_pool(sizes[k]);
        atomic_int count = 0;
        int expected = 0;
        for (int round = 0; round < 2000; round++) {
            if (round % 2 == 0)
                ck_assert_stats_become(pool, all_idle, 0);
            int tasks = 1 + round % 5;
            nursery_t *n = NULL;
            ck_assert_int_eq(nursery_open(&n, pool), 0);
            for (int t = 0; t < tasks; t++)
                ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
            join_or_fail(pool, n);
            expected += tasks;
            ck_assert_int_eq(atomic_load(&count), expected);
        }
        ck_assert_int_eq(nursery_pool_destroy(pool), 0);
    }
}
END_TEST

/* On a pool of 2 threads (up to 16), 12 tasks block in a library wait on a
 * gate.  They can only all be waiting at once if the pool added threads for
 * them; 12 counting tasks started after them must then still complete.
 * After the gate opens, the extra threads retire. */
#define BLOCKERS 12

struct elastic {
    nursery_result_t *gate;
    latch_t waiting; /* every blocker is in its wait */
    latch_t counted; /* every counter ran */
};

static int elastic_block(void *arg, void **value)
{
    (void)value;
    struct elastic *e = arg;
    latch_count_down(&e->waiting);
    return gate_wait(e->gate);
}

static int elastic_count(void *arg, void **value)
{
    (void)value;
    latch_count_down(&((struct elastic *)arg)->counted);
    return 0;
}

START_TEST(blocked_workers_are_replaced_then_retire)
{
    nursery_pool_options_t o = {.threads = 2, .max_threads = 16};
    nursery_pool_t *pool = NULL;
    ck_assert_int_eq(nursery_pool_create(&pool, &o), 0);
    for (int round = 0; round < 3; round++) {
        struct elastic e = {.gate = gate_new()};
        latch_init(&e.waiting, BLOCKERS);
        latch_init(&e.counted, BLOCKERS);
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        for (int i = 0; i < BLOCKERS; i++)
            ck_assert_int_eq(nursery_start_soon(n, elastic_block, &e, NULL), 0);
        ck_assert(latch_wait(&e.waiting));
        for (int i = 0; i < BLOCKERS; i++)
            ck_assert_int_eq(nursery_start_soon(n, elastic_count, &e, NULL), 0);
        ck_assert(latch_wait(&e.counted));

        /* Still blocked, each on a thread of its own. */
        ck_assert(!nursery_result_is_done(e.gate));
        nursery_pool_stats_t st;
        ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
        ck_assert_uint_gt(st.threads, 2);
        ck_assert_uint_ge(st.threads, BLOCKERS);
        ck_assert_uint_le(st.threads, 16);

        gate_open(e.gate);
        join_or_fail(pool, n);
        /* Idle threads above the two retire (after a while). */
        ck_assert_stats_become(pool, threads_are, 2);
        latch_destroy(&e.waiting);
        latch_destroy(&e.counted);
        nursery_result_release(e.gate);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* Tasks that start more tasks from the workers, so deques are in use when
 * the pool goes. */
struct spawner {
    nursery_t *n;
    atomic_int *count;
};

static int spawn_counts(void *arg, void **value)
{
    (void)value;
    struct spawner *s = arg;
    for (int i = 0; i < 4; i++)
        task_expect_eq(nursery_start_soon(s->n, count_task, s->count, NULL), 0);
    return count_task(s->count, value);
}

/* Destroy right after a join (workers still spinning, or going to sleep)
 * and after every worker has parked, many times over. */
START_TEST(destroy_while_workers_spin_or_sleep)
{
    atomic_int count = 0;
    int expected = 0;
    for (int i = 0; i < 400; i++) {
        nursery_pool_t *pool = test_pool(1 + (size_t)(i % 4));
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        struct spawner s = {.n = n, .count = &count};
        for (int t = 0; t < 3; t++)
            ck_assert_int_eq(nursery_start_soon(n, spawn_counts, &s, NULL), 0);
        join_or_fail(pool, n);
        expected += 3 * 5;
        if (i % 3 == 1)
            ck_assert_stats_become(pool, all_idle, 0);
        else if (i % 3 == 2) {
            /* One more nursery, from a sleeping start. */
            run_count_tasks(pool, &count, 1);
            expected++;
        }
        ck_assert_int_eq(nursery_pool_destroy(pool), 0);
        ck_assert_tasks_ok();
        ck_assert_int_eq(atomic_load(&count), expected);
    }
}
END_TEST

/* A worker starts a capture (onto its own deque, where idle workers steal
 * it), then cancels it at once; in every other round a sibling task waits
 * for the capture too (a waiting worker claims a queued capture).  Whoever
 * claims it first decides: it either ran, or was cancelled before it ran,
 * and its argument is destroyed exactly once. */
#define CANCEL_RACES 8

struct steal_race {
    nursery_t *n;
    bool with_waiter;
    struct racer r;
    nursery_result_t *res; /* owned by the test once the nursery is joined */
    int cancel_rc;
};

static int wait_for_capture(void *arg, void **value)
{
    (void)value;
    task_expect_eq(nursery_result_wait(arg, nursery_after_ms(TEST_HANG_MS)), 0);
    return 0;
}

static int start_then_cancel(void *arg, void **value)
{
    (void)value;
    struct steal_race *c = arg;
    nursery_task_options_t opts = {.arg_destroy = racer_destroy};
    int rc = nursery_capture_start_soon(c->n, racer_task, &c->r, &opts, &c->res);
    task_expect_eq(rc, 0);
    if (rc)
        return rc;
    if (c->with_waiter) {
        nursery_task_options_t wopts = {.arg_destroy = release_item};
        task_expect_eq(
            nursery_start_soon(c->n, wait_for_capture, nursery_result_retain(c->res), &wopts), 0);
    }
    c->cancel_rc = nursery_result_cancel(c->res);
    return 0;
}

START_TEST(result_cancel_races_steal_of_queued_capture)
{
    nursery_pool_t *pool = test_pool(4);
    int ran = 0, cancelled = 0;
    for (int round = 0; round < 600; round++) {
        struct steal_race c[CANCEL_RACES];
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        for (int i = 0; i < CANCEL_RACES; i++) {
            memset(&c[i], 0, sizeof(c[i]));
            c[i].n = n;
            c[i].with_waiter = round % 2 == 1;
            c[i].cancel_rc = -1;
            atomic_init(&c[i].r.ran, 0);
            atomic_init(&c[i].r.destroyed, 0);
            ck_assert_int_eq(nursery_start_soon(n, start_then_cancel, &c[i], NULL), 0);
        }
        join_or_fail(pool, n);
        ck_assert_tasks_ok();
        for (int i = 0; i < CANCEL_RACES; i++) {
            ck_assert_ptr_nonnull(c[i].res);
            ck_assert(c[i].cancel_rc == 0 || c[i].cancel_rc == EALREADY);
            int succeeded = check_racer(c[i].res, &c[i].r);
            /* Exactly one of: it ran (to its end or to its checkpoint), or
             * the cancel claimed it before anyone ran it. */
            if (atomic_load(&c[i].r.ran) == 0) {
                ck_assert_int_eq(c[i].cancel_rc, 0);
                cancelled++;
            } else {
                ran++;
            }
            if (c[i].cancel_rc == EALREADY)
                ck_assert_int_eq(succeeded, 1);
            ck_assert_int_eq(nursery_result_cancel(c[i].res), EALREADY);
            nursery_result_release(c[i].res);
        }
    }
    ck_assert_int_eq(ran + cancelled, 600 * CANCEL_RACES);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST
/* ------------------------------------------------------------------------ */
/* Regressions: scheduler bugs these cases once caught.                     */
/* ------------------------------------------------------------------------ */
/* ---- 1. Restricted helping looks only at the bottom of the joiner's deque ----
 * On a pool that cannot grow (max_threads == threads, here 1), a join whose own
 * tasks lie under an entry of another nursery in the worker's deque never runs
 * them: pool_help() tries deque_take_if(n) on the bottom entry, steals (nobody
 * to steal from) and the injection queue (empty), then parks forever. */

struct one {
    nursery_pool_t *pool;
    int rc;
};

static int leaf_value(void *arg, void **value)
{
    *value = arg;
    return 0;
}

/* (a) The bottom entry is a capture this worker already ran while waiting for
 * it: result_help() claims a capture without removing its deque entry, and a
 * join that finds its nursery empty returns without dropping it. */
static int stale_entry_buries_outer_task(void *arg, void **value)
{
    (void)value;
    struct one *o = arg;
    nursery_t *outer = NULL, *inner = NULL;
    nursery_result_t *a = NULL, *b = NULL;
    task_expect_eq(nursery_open(&outer, o->pool), 0);
    task_expect_eq(nursery_capture_start_soon(outer, leaf_value, INT2PTR(1), NULL, &a), 0);
    task_expect_eq(nursery_open(&inner, o->pool), 0);
    task_expect_eq(nursery_capture_start_soon(inner, leaf_value, INT2PTR(2), NULL, &b), 0);
    task_expect_eq(nursery_result_wait(b, nursery_after_ms(TEST_HANG_MS)), 0); /* runs b here */
    task_expect_eq(nursery_join(inner, NURSERY_FOREVER, NULL), 0); /* at once; b's entry stays */
    o->rc = nursery_join(outer, nursery_after_ms(2000), NULL);     /* a is under b's entry */
    if (o->rc == ETIMEDOUT) {
        nursery_result_wait(a, nursery_after_ms(TEST_HANG_MS)); /* runs a: unblocks */
        nursery_join(outer, NURSERY_FOREVER, NULL);
    }
    nursery_result_release(a);
    nursery_result_release(b);
    return 0;
}

START_TEST(join_is_not_blocked_by_stale_entry_of_waited_capture)
{
    struct one o = {.pool = capped_pool(1), .rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, o.pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, stale_entry_buries_outer_task, &o, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(o.rc, 0); /* was ETIMEDOUT */
    destroy_pool(o.pool);
}
END_TEST

/* (b) The bottom entry is a task started into an enclosing nursery after the
 * inner nursery's task (legal: any task may start tasks in an open nursery). */
static atomic_int counted;

static int count_one(void *arg, void **value)
{
    (void)arg;
    (void)value;
    atomic_fetch_add(&counted, 1);
    return 0;
}

static int outer_task_on_top(void *arg, void **value)
{
    (void)value;
    struct one *o = arg;
    nursery_t *outer = NULL, *inner = NULL;
    task_expect_eq(nursery_open(&outer, o->pool), 0);
    task_expect_eq(nursery_open(&inner, o->pool), 0);
    task_expect_eq(nursery_start_soon(inner, count_one, NULL, NULL), 0);
    task_expect_eq(nursery_start_soon(outer, count_one, NULL, NULL), 0);
    o->rc = nursery_join(inner, nursery_after_ms(2000), NULL); /* was ETIMEDOUT */
    if (o->rc == 0)
        o->rc = nursery_join(outer, nursery_after_ms(2000), NULL);
    /* On a failure the nurseries stay open: the test fails, the process
     * (a Check child) is gone right after. */
    return 0;
}

START_TEST(join_is_not_blocked_by_task_of_enclosing_nursery)
{
    struct one o = {.pool = capped_pool(1), .rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, o.pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, outer_task_on_top, &o, NULL), 0);
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(TEST_HANG_MS), NULL), 0);
    ck_assert_int_eq(o.rc, 0);
    destroy_pool(o.pool);
}
END_TEST

/* (c) Tasks from a plain thread: it starts G1, G2 into the worker's nursery
 * and then U into the enclosing one.  The join's first help moves G2 and U
 * from the injection queue into the deque (U at the bottom) and runs G1; G2
 * is then buried.  (With U first instead, the help requeues U, not a
 * descendant, to the deque's bottom: the same.) */
struct fed {
    nursery_pool_t *pool;
    nursery_result_t *inner; /* the worker's nursery, as value */
    nursery_result_t *gate;
    int rc;
};

static int fed_worker(void *arg, void **value)
{
    (void)value;
    struct fed *f = arg;
    nursery_t *n = NULL;
    task_expect_eq(nursery_open(&n, f->pool), 0);
    task_expect_eq(nursery_future_set_value(f->inner, n), 0);
    task_expect_eq(gate_wait(f->gate), 0);
    f->rc = nursery_join(n, nursery_after_ms(2000), NULL); /* was ETIMEDOUT */
    return 0;
}

START_TEST(join_is_not_blocked_by_injected_task_of_enclosing_nursery)
{
    struct fed f = {.pool = capped_pool(1), .gate = gate_new(), .rc = -1};
    ck_assert_int_eq(nursery_future_create(&f.inner), 0);
    atomic_store(&counted, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, f.pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, fed_worker, &f, NULL), 0);
    ck_assert_int_eq(gate_wait(f.inner), 0);
    void *inner = NULL;
    ck_assert_int_eq(nursery_result_value(f.inner, &inner), 0);
    ck_assert_int_eq(nursery_start_soon(inner, count_one, NULL, NULL), 0);
    ck_assert_int_eq(nursery_start_soon(inner, count_one, NULL, NULL), 0);
    ck_assert_int_eq(nursery_start_soon(n, count_one, NULL, NULL), 0);
    gate_open(f.gate);
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(TEST_HANG_MS), NULL), 0);
    ck_assert_int_eq(f.rc, 0);
    nursery_result_release(f.gate);
    nursery_result_release(f.inner);
    destroy_pool(f.pool);
}
END_TEST

/* ---- 2. Surplus threads retiring together take the pool below `threads` ----
 * worker_idle() decides to retire (threads - blocked > target) under pool.mu
 * but worker_main() decrements p->threads later, under a second acquisition
 * of the lock; surplus workers that time out together all see the same count
 * and all leave.  Every idle worker of a grown pool is "surplus" (nothing says
 * which ones are above the target), so the pool can fall to 0 threads, after
 * which nothing runs: pool_submit() wakes or grows only when workers sleep or
 * block.  Seen within a few iterations under ThreadSanitizer. */
struct gate_waiters {
    nursery_result_t *gate;
    latch_t waiting;
};

static int wait_gate(void *arg, void **value)
{
    (void)value;
    struct gate_waiters *g = arg;
    latch_count_down(&g->waiting);
    return gate_wait(g->gate);
}

START_TEST(surplus_threads_retire_down_to_threads_not_below)
{
    for (int round = 0; round < 4; round++) {
        nursery_pool_options_t o = {.threads = 1, .max_threads = 16};
        nursery_pool_t *p = NULL;
        ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
        struct gate_waiters g = {.gate = gate_new()};
        latch_init(&g.waiting, 12);
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, p), 0);
        for (int i = 0; i < 12; i++)
            ck_assert_int_eq(nursery_start_soon(n, wait_gate, &g, NULL), 0);
        ck_assert(latch_wait(&g.waiting));
        gate_open(g.gate);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
        /* Wait for the retirements (RETIRE_NS is 250 ms), then some more. */
        nursery_pool_stats_t st;
        nursery_time_t deadline = nursery_after_ms(TEST_HANG_MS);
        do {
            nursery_sleep(nursery_after_ms(10));
            ck_assert_int_eq(nursery_pool_stats(p, &st), 0);
        } while (st.threads > 1 && nursery_now() < deadline);
        nursery_sleep(nursery_after_ms(300));
        ck_assert_int_eq(nursery_pool_stats(p, &st), 0);
        ck_assert_uint_eq(st.threads, 1); /* once fell to 0: two retired on one count */
        latch_destroy(&g.waiting);
        nursery_result_release(g.gate);
        destroy_pool(p);
    }
}
END_TEST

/* ---- 3. The injection queue can hide tasks from every worker ----
 * inject_nonempty() reads "tail != &in_stub" as "tasks queued".  When the
 * drainer takes the last task, inject_pop() links the stub in behind it; a
 * task pushed between its "head == tail" check and that link ends up before
 * the stub, and then tail == &in_stub while tasks are queued.  If the drainer
 * also returned NULL (the producer had not yet stored prev->next), the task
 * stays there: take_injected() and work_visible() say "empty", every worker
 * parks, and nothing wakes them until the next start.  A plain thread that
 * starts tasks and joins hangs: about 1 in 150 000 joins here (4 workers, 2
 * CPUs), and 1 in 5 runs of test_stress's join_races_last_task_completion
 * under ThreadSanitizer.  Seen state: injected 2, in_head = a queued task,
 * its next the other, that one's next = &in_stub = in_tail, all workers
 * parked, spinning 0. */
static atomic_int bumps;

static int bump(void *arg, void **value)
{
    (void)arg;
    (void)value;
    atomic_fetch_add(&bumps, 1);
    return 0;
}

START_TEST(injected_tasks_are_never_stranded)
{
    nursery_pool_t *p = test_pool(4);
    for (int i = 0; i < 20000; i++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, p), 0);
        for (int t = 0; t < 1 + i % 4; t++)
            ck_assert_int_eq(nursery_start_soon(n, bump, NULL, NULL), 0);
        int rc = nursery_join(n, nursery_after_ms(5000), NULL);
        nursery_pool_stats_t st;
        nursery_pool_stats(p, &st);
        ck_assert_msg(rc == 0, "join %d at %d: threads %zu idle %zu queued %zu", rc, i,
                      st.threads, st.idle, st.queued);
    }
    destroy_pool(p);
}
END_TEST

/* ---- fan-outs on the default pool ---------------------------------------
 * 10 000 tasks that each wait for a task of their own: every wait must make
 * progress from inside the pool (issue 6, item 11).  Today nursery_start
 * and nursery_wait_any leave the awaited task queued: all 256 threads of the
 * default pool block with thousands of tasks queued, and the join times
 * out.  (The same fan-out with nursery_result_wait finishes at once.) */
#define FANOUT 10000

struct fanout {
    nursery_t *n;
    atomic_int helpers; /* awaited tasks that ran */
    atomic_int waited;  /* waiters whose wait succeeded */
};

static int started_helper(void *arg, void **value)
{
    struct fanout *f = arg;
    atomic_fetch_add(&f->helpers, 1);
    *value = INT2PTR(2);
    return nursery_started(INT2PTR(1));
}

static int start_a_helper(void *arg, void **value)
{
    (void)value;
    struct fanout *f = arg;
    void *v = NULL;
    int rc = nursery_start(f->n, started_helper, f, NULL, nursery_after_ms(TEST_HANG_MS), &v, NULL);
    task_expect_eq(rc, 0);
    if (rc)
        return rc;
    task_expect_eq(PTR2INT(v), 1);
    atomic_fetch_add(&f->waited, 1);
    return 0;
}

static int counted_helper(void *arg, void **value)
{
    atomic_fetch_add(&((struct fanout *)arg)->helpers, 1);
    *value = INT2PTR(3);
    return 0;
}

static int wait_any_on_a_capture(void *arg, void **value)
{
    (void)value;
    struct fanout *f = arg;
    nursery_result_t *c = NULL;
    int rc = nursery_capture_start_soon(f->n, counted_helper, f, NULL, &c);
    task_expect_eq(rc, 0);
    if (rc)
        return rc;
    size_t idx = 77;
    rc = nursery_wait_any(&c, 1, nursery_after_ms(TEST_HANG_MS), &idx);
    task_expect_eq(rc, 0);
    if (rc == 0) {
        task_expect_eq(idx, 0);
        atomic_fetch_add(&f->waited, 1);
    }
    nursery_result_release(c);
    return rc;
}

static void fan_out_on_default_pool(nursery_fn waiter)
{
    struct fanout f = {.helpers = 0, .waited = 0};
    ck_assert_int_eq(nursery_open(&f.n, NULL), 0);
    for (int i = 0; i < FANOUT; i++)
        ck_assert_int_eq(nursery_start_soon(f.n, waiter, &f, NULL), 0);
    int rc = nursery_join(f.n, nursery_after_ms(TEST_HANG_MS), NULL);
    ck_assert_msg(rc == 0, "join returned %d with %d of %d waits done", rc, atomic_load(&f.waited),
                  FANOUT);
    ck_assert_tasks_ok();
    ck_assert_int_eq(atomic_load(&f.waited), FANOUT);
    ck_assert_int_eq(atomic_load(&f.helpers), FANOUT);
}

START_TEST(ten_thousand_tasks_each_starting_a_helper_all_finish)
{
    fan_out_on_default_pool(start_a_helper);
}
END_TEST

START_TEST(ten_thousand_tasks_each_waiting_any_on_a_capture_all_finish)
{
    fan_out_on_default_pool(wait_any_on_a_capture);
}
END_TEST

static Suite *stress_suite(void)
{
    Suite *s = suite_create("stress");
    TCase *tc = tcase_with_timeout(s, "lifetime", 60);
    tcase_add_test(tc, pool_create_destroy_loop);
    tcase_add_test(tc, destroy_right_after_join);

    tc = tcase_with_timeout(s, "races", 60);
    tcase_add_test(tc, join_races_last_task_completion);
    tcase_add_test(tc, cancel_races_task_completion);
    tcase_add_test(tc, cancel_races_tasks_that_park_again);
    tcase_add_test(tc, cancel_racing_join_never_touches_freed_nursery);
    tcase_add_test(tc, result_cancel_races_task_completion);
    tcase_add_test(tc, wait_any_races_completions);
    tcase_add_test(tc, start_deadline_races_started);
    tcase_add_test(tc, many_threads_start_into_one_nursery);

    tc = tcase_with_timeout(s, "nested", 60);
    tcase_add_test(tc, nested_waits_on_one_thread_pool);

    /* Above TEST_HANG_MS, so that a join that hangs reports the pool's state. */
    tc = tcase_with_timeout(s, "scheduler", 120);
    tcase_add_test(tc, fib_captures_on_pools_of_one_two_four);
    tcase_add_test(tc, join_runs_grandchildren_of_a_waiting_child);
    tcase_add_test(tc, nested_joins_take_injected_tasks_on_one_thread);
    tcase_add_test(tc, outside_threads_and_tasks_start_into_one_nursery);
    tcase_add_test(tc, task_memory_outlives_the_thread_that_started_it);
    tcase_add_test(tc, bursts_after_idle_gaps_are_never_lost);
    tcase_add_test(tc, blocked_workers_are_replaced_then_retire);
    tcase_add_test(tc, destroy_while_workers_spin_or_sleep);
    tcase_add_test(tc, result_cancel_races_steal_of_queued_capture);

    tc = tcase_with_timeout(s, "regressions", 120);
    tcase_add_test(tc, join_is_not_blocked_by_stale_entry_of_waited_capture);
    tcase_add_test(tc, join_is_not_blocked_by_task_of_enclosing_nursery);
    tcase_add_test(tc, join_is_not_blocked_by_injected_task_of_enclosing_nursery);
    tcase_add_test(tc, surplus_threads_retire_down_to_threads_not_below);
    tcase_add_test(tc, injected_tasks_are_never_stranded);

    tc = tcase_with_timeout(s, "fan-outs", 120);
    tcase_add_test(tc, ten_thousand_tasks_each_starting_a_helper_all_finish);
    tcase_add_test(tc, ten_thousand_tasks_each_waiting_any_on_a_capture_all_finish);
    return s;
}

int main(void)
{
    return run_suite(stress_suite());
}
