/*
 * test_stress.c - races repeated in bounded loops: pool lifetime, join and
 * cancel against completion, per-task cancel, wait_any, nested waits on one
 * thread, concurrent starters, shutdown after join.
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

static Suite *stress_suite(void)
{
    Suite *s = suite_create("stress");
    TCase *tc = tcase_with_timeout(s, "lifetime", 60);
    tcase_add_test(tc, pool_create_destroy_loop);
    tcase_add_test(tc, destroy_right_after_join);

    tc = tcase_with_timeout(s, "races", 60);
    tcase_add_test(tc, join_races_last_task_completion);
    tcase_add_test(tc, cancel_races_task_completion);
    tcase_add_test(tc, result_cancel_races_task_completion);
    tcase_add_test(tc, wait_any_races_completions);
    tcase_add_test(tc, start_deadline_races_started);
    tcase_add_test(tc, many_threads_start_into_one_nursery);

    tc = tcase_with_timeout(s, "nested", 60);
    tcase_add_test(tc, nested_waits_on_one_thread_pool);
    return s;
}

int main(void)
{
    return run_suite(stress_suite());
}
