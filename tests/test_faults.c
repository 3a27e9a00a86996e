/* SPDX-License-Identifier: MIT */
/*
 * test_faults.c - allocation failure (issue 6, items 14 and 15): join keeps
 * its errors when memory runs out, the calls that should not need memory do
 * not fail for the lack of it (nursery_wait with its condition holding or
 * at most 16 results, and nursery_as_completed_next(), which allocates
 * nothing after the iterator's creation), and a sweep that fails each
 * allocation of a small program in turn.  Also pool options that no allocation can fix
 * (stack_size below the minimum, item 15).
 *
 * Failures are injected by faults.h in the test's thread only (the pools'
 * workers allocate normally).  Where the injector cannot work (sanitizer
 * builds, valgrind's own malloc) the cases that need it are not run, and
 * the program says so.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "faults.h"
#include "helpers.h"

#include <limits.h>

/* ---- Item 14: join never loses errors ------------------------------------- */

/* One task fails first (the primary error); three others, cancelled by
 * that failure while they wait, then fail too; two more just end
 * cancelled. */
struct failing_group {
    latch_t secondaries_waiting;
    nursery_result_t *gate; /* never opened */
};

static int fail_first(void *arg, void **value)
{
    (void)value;
    struct failing_group *g = arg;
    task_expect(latch_wait(&g->secondaries_waiting));
    return nursery_fail(EIO, "primary");
}

static int fail_when_cancelled(void *arg, void **value)
{
    (void)value;
    struct failing_group *g = arg;
    latch_count_down(&g->secondaries_waiting);
    task_expect_eq(gate_wait(g->gate), ECANCELED);
    return nursery_fail(EPIPE, "secondary");
}

static int end_cancelled(void *arg, void **value)
{
    (void)value;
    struct failing_group *g = arg;
    return gate_wait(g->gate);
}

START_TEST(join_keeps_errors_when_allocation_fails)
{
    nursery_pool_t *p = test_pool(4);
    struct failing_group g = {.gate = gate_new()};
    latch_init(&g.secondaries_waiting, 3);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_start_soon(n, fail_first, &g, NULL), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_start_soon(n, fail_when_cancelled, &g, NULL), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(nursery_start_soon(n, end_cancelled, &g, NULL), 0);

    /* Every allocation of this thread fails during the join. */
    nursery_errors_t *errors = NULL;
    faults_fail_all(true);
    int rc = nursery_join(n, NURSERY_FOREVER, &errors);
    faults_fail_all(false);

    ck_assert_int_eq(rc, NURSERY_EFAILED);
    ck_assert_msg(errors != NULL, "join failed, and reported no error group");
    ck_assert_uint_eq(nursery_errors_count(errors), 4);
    nursery_error_t *primary = nursery_errors_get(errors, 0);
    ck_assert_int_eq(nursery_error_code(primary), EIO);
    ck_assert_str_eq(nursery_error_message(primary), "primary");
    for (size_t i = 1; i < 4; i++)
        ck_assert_int_eq(nursery_error_code(nursery_errors_get(errors, i)), EPIPE);
    ck_assert_tasks_ok();
    nursery_errors_free(errors);
    nursery_result_release(g.gate);
    latch_destroy(&g.secondaries_waiting);
    destroy_pool(p);
}
END_TEST

/* ---- Item 15: calls that need no memory ------------------------------------ */

START_TEST(result_cancel_of_pending_future_needs_no_memory)
{
    nursery_result_t *f = gate_new();
    faults_fail_all(true);
    int rc = nursery_result_cancel(f);
    faults_fail_all(false);
    ck_assert_int_eq(rc, 0);
    assert_failed(f, ECANCELED);
    ck_assert_int_eq(nursery_result_cancel(f), EALREADY);
    nursery_result_release(f);
}
END_TEST

enum { ANY_RESULTS = 40 };

/* Completes results[i] with value i: `first` first, then every i in
 * `others` (each strictly later on the clock than `first`). */
static void complete_in_order(nursery_result_t **results, int first, bool others)
{
    ck_assert_int_eq(nursery_future_set_value(results[first], INT2PTR(first)), 0);
    if (!others)
        return;
    /* Completion times are read from this clock: make the others later. */
    nursery_time_t t = nursery_now();
    while (nursery_now() <= t)
        continue;
    for (int i = 0; i < ANY_RESULTS; i++)
        if (i != first)
            ck_assert_int_eq(nursery_future_set_value(results[i], INT2PTR(i)), 0);
}

static void wait_any_without_memory(bool all_done)
{
    const int first = 17;
    nursery_result_t *results[ANY_RESULTS];
    for (int i = 0; i < ANY_RESULTS; i++)
        results[i] = gate_new();
    complete_in_order(results, first, all_done);

    size_t index = ANY_RESULTS;
    faults_fail_all(true);
    int rc = nursery_wait_any(results, ANY_RESULTS, nursery_after_ms(TEST_HANG_MS), &index);
    faults_fail_all(false);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(index, (size_t)first);
    results_release(results, ANY_RESULTS);
}

START_TEST(wait_any_on_done_results_needs_no_memory)
{
    wait_any_without_memory(true);
}
END_TEST

START_TEST(wait_any_with_one_result_done_needs_no_memory)
{
    wait_any_without_memory(false);
}
END_TEST

/* ---- nursery_wait and as_completed: what needs no memory ----------------- */

/* Parks this thread once in a library wait, so that whatever per-thread
 * state a first sleep may set up exists before failures are armed. */
static void warm_up_waits(void)
{
    nursery_result_t *g = gate_new();
    ck_assert_int_eq(nursery_result_wait(g, nursery_after_ms(1)), ETIMEDOUT);
    nursery_as_completed_t *it = NULL;
    ck_assert_int_eq(nursery_as_completed_create(&it, &g, 1, nursery_after_ms(1)), 0);
    ck_assert_int_eq(nursery_as_completed_next(it, NULL, NULL), ETIMEDOUT);
    nursery_as_completed_free(it);
    size_t ndone = 0;
    ck_assert_int_eq(nursery_wait(&g, 1, nursery_after_ms(1), NURSERY_ALL_COMPLETED, NULL, &ndone),
                     ETIMEDOUT);
    nursery_result_release(g);
}

enum { WAIT_RESULTS = 40 };

/* nursery_wait needs memory only when more than 16 results are given, its
 * condition does not hold at the call and the deadline has not passed. */
START_TEST(wait_needs_memory_only_for_more_than_16_pending)
{
    nursery_result_t *f[WAIT_RESULTS];
    for (int i = 0; i < WAIT_RESULTS; i++)
        f[i] = gate_new();
    ck_assert_int_eq(nursery_future_set_value(f[17], INT2PTR(17)), 0);
    warm_up_waits();
    size_t order_first[WAIT_RESULTS], order_small[16], order_big[WAIT_RESULTS];
    size_t nd_first = 0, nd_small = 0, nd_big = 12345;
    for (int i = 0; i < WAIT_RESULTS; i++)
        order_big[i] = 12345;

    faults_fail_all(true);
    /* The condition holds at the call (40 results). */
    int rc_first = nursery_wait(f, WAIT_RESULTS, nursery_after_ms(TEST_HANG_MS),
                                NURSERY_FIRST_COMPLETED, order_first, &nd_first);
    /* 16 results, none done: it sleeps without memory, and times out. */
    int rc_small = nursery_wait(f, 16, nursery_after_ms(10), NURSERY_FIRST_COMPLETED, order_small,
                                &nd_small);
    /* 40 results, not all done: ENOMEM is allowed (ETIMEDOUT too). */
    int rc_big = nursery_wait(f, WAIT_RESULTS, nursery_after_ms(10), NURSERY_ALL_COMPLETED,
                              order_big, &nd_big);
    /* The same with a deadline already past: it only looks, needing no
     * memory. */
    size_t nd_past = 12345;
    int rc_past = nursery_wait(f, WAIT_RESULTS, nursery_after_ms(0), NURSERY_ALL_COMPLETED, NULL,
                               &nd_past);
    faults_fail_all(false);

    ck_assert_int_eq(rc_first, 0);
    ck_assert_uint_eq(nd_first, 1);
    ck_assert_uint_eq(order_first[0], 17);
    for (size_t k = 1; k < WAIT_RESULTS; k++)
        ck_assert_uint_eq(order_first[k], k <= 17 ? k - 1 : k);
    ck_assert_int_eq(rc_small, ETIMEDOUT);
    ck_assert_uint_eq(nd_small, 0);
    for (size_t k = 0; k < 16; k++)
        ck_assert_uint_eq(order_small[k], k);
    ck_assert_int_eq(rc_past, ETIMEDOUT);
    ck_assert_uint_eq(nd_past, 1);
    ck_assert_msg(rc_big == ENOMEM || rc_big == ETIMEDOUT, "40 pending: %d", rc_big);
    if (rc_big == ENOMEM) {
        ck_assert_uint_eq(nd_big, 12345); /* not set */
        ck_assert_uint_eq(order_big[0], 12345);
    } else {
        ck_assert_uint_eq(nd_big, 1);
        ck_assert_uint_eq(order_big[0], 17);
    }
    results_release(f, WAIT_RESULTS);
}
END_TEST

/* as_completed registers on the results when it is created, never on a
 * call: once created, next() hands out every result with every
 * allocation of this thread failing (and tries none), whether the result
 * was done already or completes, in another thread, while next() sleeps;
 * set_deadline() and remaining() need no memory either. */
enum { AC_RESULTS = 40, AC_DONE_FIRST = 10 };

struct ac_completer {
    nursery_result_t **f;
    latch_t go;
    int failures;
};

static void *ac_completer_main(void *arg)
{
    struct ac_completer *c = arg;
    if (!latch_wait(&c->go))
        c->failures++;
    for (int i = AC_RESULTS - 1; i >= AC_DONE_FIRST; i--)
        if (nursery_future_set_value(c->f[i], INT2PTR(i)) != 0)
            c->failures++;
    return NULL;
}

START_TEST(as_completed_next_needs_no_memory)
{
    nursery_result_t *f[AC_RESULTS];
    for (int i = 0; i < AC_RESULTS; i++)
        f[i] = gate_new();
    for (int i = 0; i < AC_DONE_FIRST; i++)
        ck_assert_int_eq(nursery_future_set_value(f[i], INT2PTR(i)), 0);
    warm_up_waits();
    nursery_as_completed_t *it = NULL;
    ck_assert_int_eq(
        nursery_as_completed_create(&it, f, AC_RESULTS, nursery_after_ms(TEST_HANG_MS)), 0);
    struct ac_completer c = {.f = f};
    latch_init(&c.go, 1);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, ac_completer_main, &c), 0);

    int rc[AC_RESULTS + 1];
    size_t idx[AC_RESULTS], remaining[AC_RESULTS];
    nursery_result_t *got[AC_RESULTS];
    int rc_deadline = -1;
    unsigned long before = faults_injected();
    faults_fail_all(true);
    latch_count_down(&c.go);
    for (int k = 0; k < AC_RESULTS; k++) {
        idx[k] = AC_RESULTS;
        got[k] = NULL;
        rc[k] = nursery_as_completed_next(it, &idx[k], k % 2 ? &got[k] : NULL);
        remaining[k] = nursery_as_completed_remaining(it);
        if (k == AC_RESULTS / 2)
            rc_deadline = nursery_as_completed_set_deadline(it, nursery_after_ms(TEST_HANG_MS));
    }
    rc[AC_RESULTS] = nursery_as_completed_next(it, NULL, NULL);
    unsigned long injected = faults_injected() - before;
    faults_fail_all(false);
    ck_assert_int_eq(pthread_join(th, NULL), 0);

    ck_assert_int_eq(c.failures, 0);
    bool seen[AC_RESULTS] = {false};
    for (int k = 0; k < AC_RESULTS; k++) {
        ck_assert_msg(rc[k] == 0, "next %d with allocations failing returned %d", k, rc[k]);
        ck_assert_uint_lt(idx[k], AC_RESULTS);
        ck_assert(!seen[idx[k]]);
        seen[idx[k]] = true;
        ck_assert_uint_eq(remaining[k], (size_t)(AC_RESULTS - k - 1));
        if (k % 2) {
            ck_assert_ptr_eq(got[k], f[idx[k]]);
            nursery_result_release(got[k]);
        }
    }
    /* Those done at creation came first, in their completion order. */
    for (int k = 0; k < AC_DONE_FIRST; k++)
        ck_assert_uint_eq(idx[k], (size_t)k);
    ck_assert_int_eq(rc[AC_RESULTS], NURSERY_EEND);
    ck_assert_int_eq(rc_deadline, 0);
    ck_assert_msg(injected == 0, "the calls tried %lu allocations", injected);
    nursery_as_completed_free(it);
    latch_destroy(&c.go);
    results_release(f, AC_RESULTS);
}
END_TEST

START_TEST(pool_create_rejects_stack_below_minimum)
{
    /* Needs no injector: it belongs with test_pool's option checks. */
    const size_t too_small[] = {1, (size_t)PTHREAD_STACK_MIN / 2, (size_t)PTHREAD_STACK_MIN - 1};
    for (size_t i = 0; i < sizeof(too_small) / sizeof(too_small[0]); i++) {
        nursery_pool_options_t o = {.threads = 1, .stack_size = too_small[i]};
        nursery_pool_t *p = INT2PTR(1);
        int rc = nursery_pool_create(&p, &o);
        if (rc == 0)
            destroy_pool(p); /* not to leave its threads behind when failing */
        ck_assert_msg(rc == EINVAL, "stack_size %zu: nursery_pool_create returned %d (%s)",
                      too_small[i], rc, nursery_strerror(rc));
        ck_assert_ptr_null(p);
    }
}
END_TEST

/* ---- The sweep: every allocation of a small program failed in turn --------- */

/* Arguments of the program's tasks: runs and arg_destroy calls counted. */
struct sweep_arg {
    atomic_int runs;
    atomic_int destroyed;
    bool handed; /* given to a start call (so arg_destroy must run once) */
};

static int sweep_task(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct sweep_arg *)arg)->runs, 1);
    return 0;
}

static int sweep_failing_task(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct sweep_arg *)arg)->runs, 1);
    return nursery_fail(EIO, "the program's failing task");
}

static void sweep_destroy(void *arg)
{
    atomic_fetch_add(&((struct sweep_arg *)arg)->destroyed, 1);
}

/* args[0..2]: start_soon; args[3]: the capture; args[4]: the failing task. */
enum { SWEEP_STARTS = 3, SWEEP_CAPTURE = 3, SWEEP_FAILING = 4, SWEEP_ARGS = 5 };

/* What each call of one run returned. */
struct sweep_run {
    int open;
    int start[SWEEP_STARTS];
    int capture;
    bool capture_set;    /* *out non-NULL after capture_start_soon */
    bool capture_done;   /* done after join (when started) */
    int capture_outcome; /* then 0 (its value) or its error's code */
    int failing;
    int join;
};

/* The program: open, three start_soon, a capture, a failing task, join,
 * release.  Named tasks, so that names are copied too.  The failing task
 * cancels the nursery: a task still queued then never runs, so a task runs
 * at most once, and the capture ends with its value or cancelled.  No
 * Check call while failures may be armed. */
static void sweep_program(nursery_pool_t *p, struct sweep_arg *args, struct sweep_run *run)
{
    const nursery_task_options_t opts[SWEEP_ARGS] = {
        {.name = "start 0", .arg_destroy = sweep_destroy},
        {.name = "start 1", .arg_destroy = sweep_destroy},
        {.name = "start 2", .arg_destroy = sweep_destroy},
        {.name = "capture", .arg_destroy = sweep_destroy},
        {.name = "failing", .arg_destroy = sweep_destroy},
    };
    nursery_t *n = NULL;
    run->open = nursery_open(&n, p);
    if (run->open != 0)
        return;
    for (int i = 0; i < SWEEP_STARTS; i++) {
        args[i].handed = true;
        run->start[i] = nursery_start_soon(n, sweep_task, &args[i], &opts[i]);
    }
    nursery_result_t *r = INT2PTR(1);
    args[SWEEP_CAPTURE].handed = true;
    run->capture =
        nursery_capture_start_soon(n, sweep_task, &args[SWEEP_CAPTURE], &opts[SWEEP_CAPTURE], &r);
    run->capture_set = r != NULL;
    args[SWEEP_FAILING].handed = true;
    run->failing =
        nursery_start_soon(n, sweep_failing_task, &args[SWEEP_FAILING], &opts[SWEEP_FAILING]);
    nursery_errors_t *errors = NULL;
    run->join = nursery_join(n, NURSERY_FOREVER, &errors);
    if (run->capture == 0 && r) {
        nursery_error_t *err = NULL;
        run->capture_done = nursery_result_error(r, &err) == 0;
        run->capture_outcome = nursery_error_code(err);
        nursery_result_release(r);
    }
    nursery_errors_free(errors);
}

static bool is_start_code(int rc)
{
    return rc == 0 || rc == ENOMEM;
}

/* Asserts on one run, in which the k-th allocation failed (k = 0: none). */
static void assert_sweep_run(unsigned long k, const struct sweep_arg *args,
                             const struct sweep_run *run)
{
    ck_assert_msg(is_start_code(run->open), "k=%lu: nursery_open returned %d", k, run->open);
    for (int i = 0; i < SWEEP_ARGS; i++) {
        ck_assert_msg(atomic_load(&args[i].destroyed) == (args[i].handed ? 1 : 0),
                      "k=%lu: argument %d destroyed %d times", k, i,
                      atomic_load(&args[i].destroyed));
    }
    if (run->open != 0)
        return;
    for (int i = 0; i < SWEEP_STARTS; i++) {
        ck_assert_msg(is_start_code(run->start[i]), "k=%lu: nursery_start_soon %d returned %d", k,
                      i, run->start[i]);
        ck_assert_msg(atomic_load(&args[i].runs) <= (run->start[i] == 0),
                      "k=%lu: task %d ran %d times (start returned %d)", k, i,
                      atomic_load(&args[i].runs), run->start[i]);
    }
    ck_assert_msg(is_start_code(run->capture), "k=%lu: nursery_capture_start_soon returned %d", k,
                  run->capture);
    ck_assert_msg(run->capture_set == (run->capture == 0),
                  "k=%lu: capture_start_soon returned %d with *out %s", k, run->capture,
                  run->capture_set ? "set" : "NULL");
    if (run->capture == 0) {
        ck_assert_msg(run->capture_done, "k=%lu: the capture is not done after join", k);
        ck_assert_msg(run->capture_outcome == 0 || run->capture_outcome == ECANCELED,
                      "k=%lu: the capture is done with error %d", k, run->capture_outcome);
    }
    ck_assert_msg(atomic_load(&args[SWEEP_CAPTURE].runs) <= (run->capture == 0),
                  "k=%lu: the captured task ran %d times", k,
                  atomic_load(&args[SWEEP_CAPTURE].runs));
    ck_assert_msg(is_start_code(run->failing), "k=%lu: starting the failing task returned %d", k,
                  run->failing);
    ck_assert_msg(run->join == (run->failing == 0 ? NURSERY_EFAILED : 0),
                  "k=%lu: join returned %d (the failing task %s started)", k, run->join,
                  run->failing == 0 ? "was" : "was not");
}

/* One run of the program with its k-th allocation failed (k = 0: none). */
struct sweep_job {
    nursery_pool_t *pool;
    unsigned long k;
    struct sweep_arg args[SWEEP_ARGS];
    struct sweep_run run;
    bool failed_one; /* the k-th allocation came, and failed */
};

static void sweep_once(struct sweep_job *job)
{
    for (int i = 0; i < SWEEP_ARGS; i++) {
        atomic_init(&job->args[i].runs, 0);
        atomic_init(&job->args[i].destroyed, 0);
        job->args[i].handed = false;
    }
    job->run = (struct sweep_run){.open = -1};
    unsigned long before = faults_injected();
    faults_fail_nth(job->k);
    sweep_program(job->pool, job->args, &job->run);
    faults_fail_nth(0);
    job->failed_one = faults_injected() != before;
}

static void *sweep_thread(void *arg)
{
    sweep_once(arg);
    return NULL;
}

/* Runs the program for k = 0, 1, 2, ... until runs reach no k-th
 * allocation: in this thread, whose task cache is warm after the first
 * run, or each run in a new thread, which allocates its tasks afresh. */
static void sweep(bool new_thread_per_run)
{
    struct sweep_job job = {.pool = test_pool(2)};
    const unsigned long k_max = 1000;
    /* How many allocations a run makes varies a little (with what the
     * workers have done yet): stop after three runs in a row reached no
     * k-th allocation. */
    int unreached = 0;
    for (job.k = 0; job.k < k_max; job.k++) {
        if (new_thread_per_run) {
            pthread_t thread;
            ck_assert_int_eq(pthread_create(&thread, NULL, sweep_thread, &job), 0);
            ck_assert_int_eq(pthread_join(thread, NULL), 0);
        } else {
            sweep_once(&job);
        }
        assert_sweep_run(job.k, job.args, &job.run);
        unreached = job.k > 0 && !job.failed_one ? unreached + 1 : 0;
        if (unreached == 3)
            break;
    }
    ck_assert_msg(job.k < k_max, "the program still allocated %lu times", k_max);
    ck_assert_msg(job.k > 3, "no allocation of the program was failed (k = %lu)", job.k);
    destroy_pool(job.pool);
}

START_TEST(every_allocation_of_a_small_program_may_fail)
{
    sweep(false);
}
END_TEST

START_TEST(every_allocation_of_a_small_program_may_fail_in_new_thread)
{
    sweep(true);
}
END_TEST

static Suite *faults_suite(bool injector)
{
    Suite *s = suite_create("faults");
    TCase *tc = tcase_with_timeout(s, "options", 60);
    tcase_add_test(tc, pool_create_rejects_stack_below_minimum);
    if (!injector)
        return s;

    tc = tcase_with_timeout(s, "join", 60);
    tcase_add_test(tc, join_keeps_errors_when_allocation_fails);

    tc = tcase_with_timeout(s, "no_memory_needed", 60);
    tcase_add_test(tc, result_cancel_of_pending_future_needs_no_memory);
    tcase_add_test(tc, wait_any_on_done_results_needs_no_memory);
    tcase_add_test(tc, wait_any_with_one_result_done_needs_no_memory);
    tcase_add_test(tc, wait_needs_memory_only_for_more_than_16_pending);
    tcase_add_test(tc, as_completed_next_needs_no_memory);

    tc = tcase_with_timeout(s, "sweep", 120);
    tcase_add_test(tc, every_allocation_of_a_small_program_may_fail);
    tcase_add_test(tc, every_allocation_of_a_small_program_may_fail_in_new_thread);
    return s;
}

int main(void)
{
    const char *why = NULL;
    bool injector = faults_available(&why);
    if (!injector)
        printf("faults: the allocation-failure cases are skipped: %s\n", why);
    return run_suite(faults_suite(injector));
}
