/* SPDX-License-Identifier: MIT */
/*
 * test_aioresult.c - aioresult's own nine tests, ported to libnursery.
 *
 * Each upstream test is restated in /work/shared/reference/aioresult-tests.md.
 * Upstream orders events with sleeps of 0.1 s "steps"; here every step is a
 * gate (a future) that the test opens in order, so the order is forced.
 * Upstream's "expects an exception" helper also passed when nothing was
 * raised; here every error is asserted to be there, with its code.
 *
 * Values: a task "returning t" stores INT2PTR(t).  The startable tasks of
 * tests 3-5 report t/2 and t in hundredths (50 * t and 100 * t), so that
 * 0.5 is 50 and 1.5 is 150.
 */
#include <stdio.h>
#include <string.h>

#include "helpers.h"

/* The code of a "test error"; outside the errno range and the library's. */
#define TEST_ERR 4242

#define HANG nursery_after_ms(TEST_HANG_MS)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* sleep_and_return(t) / sleep_and_raise(t): waits for its step (a gate;
 * NULL: no wait), then returns t or fails with a test error carrying t.
 * A cancelled wait ends the task with ECANCELED. */
struct step {
    nursery_result_t *gate;
    int t;
    bool raise;
    atomic_int runs;  /* how many times the task body ran */
    latch_t *entered; /* counted down when it starts (NULL: none) */
};

static int step_task(void *arg, void **value)
{
    struct step *s = arg;
    atomic_fetch_add(&s->runs, 1);
    if (s->entered != NULL)
        latch_count_down(s->entered);
    if (s->gate != NULL) {
        int rc = gate_wait(s->gate);
        if (rc != 0)
            return rc;
    }
    if (s->raise)
        return nursery_fail(TEST_ERR, "test error %d", s->t);
    *value = INT2PTR(s->t);
    return 0;
}

static void step_init(struct step *s, nursery_result_t *gate, int t, bool raise)
{
    s->gate = gate;
    s->t = t;
    s->raise = raise;
    atomic_init(&s->runs, 0);
    s->entered = NULL;
}

/* r is a test error carrying t (assert_value, assert_failed and the other
 * assertions on results are in helpers.h). */
static void assert_test_error(const nursery_result_t *r, int t)
{
    nursery_error_t *e = assert_failed(r, TEST_ERR);
    char expect[32];
    snprintf(expect, sizeof expect, "test error %d", t);
    ck_assert_ptr_nonnull(nursery_error_message(e));
    ck_assert_str_eq(nursery_error_message(e), expect);
}

/* ------------------------------------------------------------------------ */
/* 1. capture                                                               */
/* ------------------------------------------------------------------------ */

START_TEST(capture_error_cancels_siblings_and_reports_error)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *g2 = gate_new(), *g3 = gate_new(), *g4 = gate_new();
    struct step s1, s2, s3, s4;
    step_init(&s1, NULL, 1, false);
    step_init(&s2, g2, 2, false);
    step_init(&s3, g3, 3, true);
    step_init(&s4, g4, 4, false);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *r1 = NULL, *r2 = NULL, *r3 = NULL, *r4 = NULL;
    ck_assert_int_eq(nursery_capture_create(&r1, step_task, &s1, NULL), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, step_task, &s2, NULL, &r2), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, step_task, &s3, NULL, &r3), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, step_task, &s4, NULL, &r4), 0);

    /* Immediately: nothing is done, reads are not-done errors. */
    assert_not_done(r1);
    assert_not_done(r2);
    assert_not_done(r3);
    assert_not_done(r4);

    /* Running r1 by hand, in the body. */
    ck_assert_int_eq(nursery_capture_run(r1), 0);
    assert_value(r1, 1);
    ck_assert_int_eq(atomic_load(&s1.runs), 1);
    ck_assert(!nursery_result_is_done(r2));
    ck_assert(!nursery_result_is_done(r3));
    ck_assert(!nursery_result_is_done(r4));

    /* Step 2: r2 returns 2; nothing has failed. */
    gate_open(g2);
    ck_assert_int_eq(nursery_result_wait(r2, HANG), 0);
    assert_value(r2, 2);
    ck_assert(!nursery_cancelled());
    ck_assert(!nursery_result_is_done(r3));
    ck_assert(!nursery_result_is_done(r4));

    /* Step 3: r3 fails, which cancels the nursery and so r4 (its gate is
     * never opened: only the cancellation can end it). */
    gate_open(g3);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), NURSERY_EFAILED);
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_error_t *primary = nursery_errors_get(errs, 0);
    ck_assert_ptr_nonnull(primary);
    ck_assert_int_eq(nursery_error_code(primary), TEST_ERR);
    ck_assert_str_eq(nursery_error_message(primary), "test error 3");
    ck_assert_ptr_null(nursery_errors_get(errs, 1));
    nursery_errors_free(errs);

    /* Afterwards. */
    assert_value(r1, 1);
    assert_value(r2, 2);
    assert_test_error(r3, 3);
    assert_failed(r4, ECANCELED);
    ck_assert(!nursery_result_is_done(g4));
    /* r4 may have been cancelled while waiting or before it started. */
    ck_assert_int_le(atomic_load(&s4.runs), 1);

    /* Running r1 or r3 again: set-again error, outcomes unchanged. */
    ck_assert_int_eq(nursery_capture_run(r1), EALREADY);
    ck_assert_int_eq(nursery_capture_run(r3), EALREADY);
    assert_value(r1, 1);
    assert_test_error(r3, 3);
    ck_assert_int_eq(atomic_load(&s1.runs), 1);
    ck_assert_int_eq(atomic_load(&s3.runs), 1);

    nursery_result_release(r1);
    nursery_result_release(r2);
    nursery_result_release(r3);
    nursery_result_release(r4);
    nursery_result_release(g2);
    nursery_result_release(g3);
    nursery_result_release(g4);
    destroy_pool(pool);
}
END_TEST

/* The error read from a failed capture is the very object the nursery
 * reported, and stays valid while the result is held. */
START_TEST(capture_error_is_the_object_join_reports)
{
    nursery_pool_t *pool = test_pool(2);
    struct step s;
    step_init(&s, NULL, 7, true);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, step_task, &s, NULL, &r), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    nursery_error_t *reported = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(reported), TEST_ERR);
    ck_assert_ptr_eq(assert_failed(r, TEST_ERR), reported);
    nursery_errors_free(errs);
    /* Still readable after the group is gone. */
    assert_test_error(r, 7);
    nursery_result_release(r);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 2. capture with suppressed error                                         */
/* ------------------------------------------------------------------------ */

START_TEST(capture_suppressed_error_does_not_cancel_siblings)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *g[3] = {gate_new(), gate_new(), gate_new()};
    struct step s[3];
    step_init(&s[0], g[0], 1, false);
    step_init(&s[1], g[1], 2, true);
    step_init(&s[2], g[2], 3, false);
    nursery_task_options_t opts = {.flags = NURSERY_TASK_SUPPRESS_ERROR};

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *r[3] = {NULL, NULL, NULL};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_capture_start_soon(n, step_task, &s[i], &opts, &r[i]), 0);

    gate_open(g[0]);
    ck_assert_int_eq(nursery_result_wait(r[0], HANG), 0);
    /* r2 fails while r3 is still running... */
    gate_open(g[1]);
    ck_assert_int_eq(nursery_result_wait(r[1], HANG), 0);
    assert_test_error(r[1], 2);
    /* ...which cancels nothing: not the body, not r3. */
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert(!nursery_result_is_done(r[2]));
    gate_open(g[2]);

    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    ck_assert_ptr_null(errs);

    assert_value(r[0], 1);
    assert_test_error(r[1], 2);
    assert_value(r[2], 3);
    for (int i = 0; i < 3; i++) {
        nursery_result_release(r[i]);
        nursery_result_release(g[i]);
    }
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 3-5. start values                                                        */
/* ------------------------------------------------------------------------ */

enum startable_mode {
    START_OK,     /* step, started(t/2), step, return t */
    FAIL_BEFORE,  /* step, fail with a test error carrying t */
    RETURN_EARLY, /* step, return t without calling started */
};

struct startable {
    nursery_result_t *before; /* gate before started (NULL: none) */
    nursery_result_t *after;  /* gate after started (NULL: none) */
    latch_t *entered;         /* counted down on entry (NULL: none) */
    int t;
    enum startable_mode mode;
    int started_rc; /* what nursery_started() returned */
};

static int startable_task(void *arg, void **value)
{
    struct startable *s = arg;
    int rc;
    if (s->entered != NULL)
        latch_count_down(s->entered);
    if (s->before != NULL && (rc = gate_wait(s->before)) != 0)
        return rc;
    switch (s->mode) {
    case FAIL_BEFORE:
        return nursery_fail(TEST_ERR, "test error %d", s->t);
    case RETURN_EARLY:
        *value = INT2PTR(100 * s->t);
        return 0;
    case START_OK:
        break;
    }
    s->started_rc = nursery_started(INT2PTR(50 * s->t));
    if (s->started_rc != 0)
        return s->started_rc;
    if (s->after != NULL && (rc = gate_wait(s->after)) != 0)
        return rc;
    *value = INT2PTR(100 * s->t);
    return 0;
}

static void startable_init(struct startable *s, int t, enum startable_mode mode, bool gated)
{
    memset(s, 0, sizeof *s);
    s->t = t;
    s->mode = mode;
    s->started_rc = -1;
    if (gated) {
        s->before = gate_new();
        s->after = gate_new();
    }
}

static void startable_fini(struct startable *s)
{
    nursery_result_release(s->before);
    nursery_result_release(s->after);
}

START_TEST(start_returns_started_value_before_done)
{
    nursery_pool_t *pool = test_pool(4);
    struct startable s1, s2, s3;
    startable_init(&s1, 1, START_OK, true);
    startable_init(&s2, 2, START_OK, true);
    startable_init(&s3, 3, START_OK, true);

    nursery_t *run = NULL, *start = NULL;
    ck_assert_int_eq(nursery_open(&run, pool), 0);
    ck_assert_int_eq(nursery_open(&start, pool), 0);

    /* A plain start blocks until started(0.5); the task goes on. */
    gate_open(s1.before);
    void *sv = INT2PTR(-1);
    nursery_result_t *d1 = NULL;
    ck_assert_int_eq(nursery_start(run, startable_task, &s1, NULL, HANG, &sv, &d1), 0);
    ck_assert_int_eq(PTR2INT(sv), 50);
    ck_assert_ptr_nonnull(d1);
    assert_not_done(d1);

    /* Two start/done pairs begun in the start nursery. */
    nursery_result_t *st2 = NULL, *dn2 = NULL, *st3 = NULL, *dn3 = NULL;
    ck_assert_int_eq(
        nursery_capture_start_and_done(start, run, startable_task, &s2, NULL, &st2, &dn2), 0);
    ck_assert_int_eq(
        nursery_capture_start_and_done(start, run, startable_task, &s3, NULL, &st3, &dn3), 0);
    ck_assert_ptr_nonnull(st2);
    ck_assert_ptr_nonnull(dn2);
    ck_assert_ptr_nonnull(st3);
    ck_assert_ptr_nonnull(dn3);
    assert_not_done(st2);
    assert_not_done(dn2);
    assert_not_done(st3);
    assert_not_done(dn3);

    /* Step: task 2 calls started(1). */
    gate_open(s2.before);
    ck_assert_int_eq(nursery_result_wait(st2, HANG), 0);
    assert_value(st2, 100);
    ck_assert(!nursery_result_is_done(dn2));
    ck_assert(!nursery_result_is_done(st3));

    /* Step: task 3 calls started(1.5). */
    gate_open(s3.before);
    ck_assert_int_eq(nursery_result_wait(st3, HANG), 0);
    assert_value(st3, 150);
    ck_assert(!nursery_result_is_done(dn3));
    ck_assert(!nursery_result_is_done(dn2));
    ck_assert(!nursery_result_is_done(d1));

    /* The start nursery has nothing left once the tasks have started. */
    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(start, HANG, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert(!nursery_result_is_done(dn2));
    ck_assert(!nursery_result_is_done(dn3));

    /* Final steps: the tasks return in the run nursery. */
    gate_open(s1.after);
    gate_open(s2.after);
    gate_open(s3.after);
    errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(run, HANG, &errs), 0);
    ck_assert_ptr_null(errs);

    assert_value(d1, 100);
    assert_value(st2, 100);
    assert_value(dn2, 200);
    assert_value(st3, 150);
    assert_value(dn3, 300);
    ck_assert_int_eq(s1.started_rc, 0); /* written after started() returned */
    ck_assert_int_eq(s2.started_rc, 0);
    ck_assert_int_eq(s3.started_rc, 0);

    nursery_result_release(d1);
    nursery_result_release(st2);
    nursery_result_release(dn2);
    nursery_result_release(st3);
    nursery_result_release(dn3);
    startable_fini(&s1);
    startable_fini(&s2);
    startable_fini(&s3);
    destroy_pool(pool);
}
END_TEST

/* A task of the start nursery that calls a plain nursery_start(). */
struct plain_start {
    nursery_t *run;
    struct startable *task;
    int rc;
    void *started;
    nursery_result_t *done;
};

static int plain_start_task(void *arg, void **value)
{
    struct plain_start *p = arg;
    (void)value;
    p->rc = nursery_start(p->run, startable_task, p->task, NULL, HANG, &p->started, &p->done);
    return p->rc;
}

START_TEST(start_failure_before_started_cancels_start_nursery)
{
    nursery_pool_t *pool = test_pool(4);
    struct startable s2, s3, s4;
    startable_init(&s2, 2, START_OK, true);
    startable_init(&s3, 3, FAIL_BEFORE, true);
    startable_init(&s4, 4, START_OK, true);
    latch_t entered4;
    latch_init(&entered4, 1);
    s4.entered = &entered4;

    nursery_t *run = NULL, *start = NULL;
    ck_assert_int_eq(nursery_open(&run, pool), 0);
    ck_assert_int_eq(nursery_open(&start, pool), 0);

    /* Pair 2 starts fine. */
    nursery_result_t *st2 = NULL, *dn2 = NULL, *st3 = NULL, *dn3 = NULL;
    ck_assert_int_eq(
        nursery_capture_start_and_done(start, run, startable_task, &s2, NULL, &st2, &dn2), 0);
    gate_open(s2.before);
    ck_assert_int_eq(nursery_result_wait(st2, HANG), 0);
    assert_value(st2, 100);

    /* A plain start of task 4, in progress: task 4 waits before started. */
    struct plain_start p4 = {.run = run, .task = &s4, .rc = -1};
    nursery_result_t *r4 = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(start, plain_start_task, &p4, NULL, &r4), 0);
    ck_assert(latch_wait(&entered4));

    /* Pair 3 fails before calling started. */
    ck_assert_int_eq(
        nursery_capture_start_and_done(start, run, startable_task, &s3, NULL, &st3, &dn3), 0);
    gate_open(s3.before);

    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(start, HANG, &errs), NURSERY_EFAILED);
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_error_t *primary = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(primary), TEST_ERR);
    ck_assert_str_eq(nursery_error_message(primary), "test error 3");
    nursery_errors_free(errs);

    /* Both results of pair 3 hold that same error. */
    assert_test_error(st3, 3);
    assert_test_error(dn3, 3);
    ck_assert_ptr_eq(error_of(st3), error_of(dn3));
    ck_assert_int_eq(s3.started_rc, -1);

    /* The plain start of task 4 was cancelled, and so was task 4. */
    assert_failed(r4, ECANCELED);
    ck_assert_int_eq(p4.rc, ECANCELED);
    ck_assert_int_eq(s4.started_rc, -1);
    ck_assert_ptr_nonnull(p4.done);
    assert_failed(p4.done, ECANCELED);

    /* The run nursery is unaffected: task 2 still finishes normally. */
    ck_assert(!nursery_result_is_done(dn2));
    gate_open(s2.after);
    ck_assert_int_eq(nursery_result_wait(dn2, HANG), 0);
    assert_value(dn2, 200);
    ck_assert(!nursery_cancelled());
    errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(run, HANG, &errs), 0);
    ck_assert_ptr_null(errs);

    nursery_result_release(st2);
    nursery_result_release(dn2);
    nursery_result_release(st3);
    nursery_result_release(dn3);
    nursery_result_release(r4);
    nursery_result_release(p4.done);
    latch_destroy(&entered4);
    startable_fini(&s2);
    startable_fini(&s3);
    startable_fini(&s4);
    destroy_pool(pool);
}
END_TEST

START_TEST(start_early_return_is_not_started_error)
{
    nursery_pool_t *pool = test_pool(4);
    struct startable s;
    startable_init(&s, 1, RETURN_EARLY, true);

    nursery_t *run = NULL, *start = NULL;
    ck_assert_int_eq(nursery_open(&run, pool), 0);
    ck_assert_int_eq(nursery_open(&start, pool), 0);
    nursery_result_t *st = NULL, *dn = NULL;
    ck_assert_int_eq(
        nursery_capture_start_and_done(start, run, startable_task, &s, NULL, &st, &dn), 0);
    assert_not_done(st);
    assert_not_done(dn);
    gate_open(s.before);

    /* The start side fails with "returned without calling started". */
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(start, HANG, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), NURSERY_ENOTSTARTED);
    nursery_errors_free(errs);
    assert_failed(st, NURSERY_ENOTSTARTED);

    /* The done capture holds the value and no error. */
    assert_value(dn, 100);

    /* The run nursery is unaffected. */
    errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(run, HANG, &errs), 0);
    ck_assert_ptr_null(errs);

    nursery_result_release(st);
    nursery_result_release(dn);
    startable_fini(&s);
    destroy_pool(pool);
}
END_TEST

/* A plain nursery_start of a task that returns early: the call reports it. */
START_TEST(plain_start_early_return_reports_not_started)
{
    nursery_pool_t *pool = test_pool(2);
    struct startable s;
    startable_init(&s, 1, RETURN_EARLY, false);
    nursery_t *run = NULL;
    ck_assert_int_eq(nursery_open(&run, pool), 0);
    void *sv = INT2PTR(-1);
    nursery_result_t *dn = NULL;
    ck_assert_int_eq(nursery_start(run, startable_task, &s, NULL, HANG, &sv, &dn),
                     NURSERY_ENOTSTARTED);
    ck_assert_ptr_nonnull(dn);
    assert_value(dn, 100);
    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(run, HANG, &errs), 0);
    ck_assert_ptr_null(errs);
    nursery_result_release(dn);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 6. future                                                                */
/* ------------------------------------------------------------------------ */

struct setter {
    nursery_result_t *gate;
    nursery_result_t *target;
    bool error;
    int rc;
};

static int setter_task(void *arg, void **value)
{
    struct setter *s = arg;
    (void)value;
    int rc = gate_wait(s->gate);
    if (rc != 0)
        return rc;
    if (s->error)
        s->rc = nursery_future_fail(s->target, TEST_ERR, "test error %d", 2);
    else
        s->rc = nursery_future_set_value(s->target, INT2PTR(1));
    return 0;
}

START_TEST(future_set_by_tasks_keeps_first_outcome)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *fr = NULL, *fx = NULL;
    ck_assert_int_eq(nursery_future_create(&fr), 0);
    ck_assert_int_eq(nursery_future_create(&fx), 0);
    struct setter sr = {.gate = gate_new(), .target = fr, .error = false, .rc = -1};
    struct setter sx = {.gate = gate_new(), .target = fx, .error = true, .rc = -1};

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, setter_task, &sr, NULL), 0);
    ck_assert_int_eq(nursery_start_soon(n, setter_task, &sx, NULL), 0);

    /* Before: not done, reads are not-done errors. */
    assert_not_done(fr);
    assert_not_done(fx);

    gate_open(sr.gate);
    gate_open(sx.gate);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(sr.rc, 0);
    ck_assert_int_eq(sx.rc, 0);

    /* fr: value 1, no error; setting again fails, the value stays. */
    assert_value(fr, 1);
    ck_assert_int_eq(nursery_future_set_value(fr, INT2PTR(2)), EALREADY);
    nursery_error_t *e = NULL;
    ck_assert_int_eq(nursery_error_create(&e, TEST_ERR, "late"), 0);
    ck_assert_int_eq(nursery_future_set_error(fr, e), EALREADY);
    ck_assert_int_eq(nursery_future_fail(fr, TEST_ERR, "late"), EALREADY);
    assert_value(fr, 1);

    /* fx: the test error; its value is a task-failed error. */
    assert_test_error(fx, 2);
    nursery_error_t *first = error_of(fx);
    ck_assert_int_eq(nursery_future_set_value(fx, INT2PTR(3)), EALREADY);
    ck_assert_int_eq(nursery_future_fail(fx, EIO, "other"), EALREADY);
    assert_test_error(fx, 2);
    ck_assert_ptr_eq(error_of(fx), first);

    nursery_result_release(fr);
    nursery_result_release(fx);
    nursery_result_release(sr.gate);
    nursery_result_release(sx.gate);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 7. printable form                                                        */
/* ------------------------------------------------------------------------ */

START_TEST(format_shows_state_name_value_and_error)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    struct step s;
    step_init(&s, gate, 0x2a, false);
    nursery_task_options_t opts = {.name = "printer"};

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, step_task, &s, &opts, &r), 0);

    char buf[512];
    /* Running (or queued): "not done". */
    int len = nursery_result_format(r, buf, sizeof buf, 0);
    ck_assert_int_gt(len, 0);
    ck_assert_int_eq((int)strlen(buf), len);
    ck_assert_msg(contains(buf, "not done"), "short form: %s", buf);

    /* Detailed: also the task's name and its argument. */
    char argstr[64];
    snprintf(argstr, sizeof argstr, "%p", (void *)&s);
    len = nursery_result_format(r, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    ck_assert_int_eq((int)strlen(buf), len);
    ck_assert_msg(contains(buf, "not done"), "detailed form: %s", buf);
    ck_assert_msg(contains(buf, "printer"), "detailed form: %s", buf);
    ck_assert_msg(contains(buf, argstr), "detailed form lacks %s: %s", argstr, buf);

    gate_open(gate);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);

    /* After success: its value. */
    len = nursery_result_format(r, buf, sizeof buf, 0);
    ck_assert_int_eq((int)strlen(buf), len);
    ck_assert_msg(contains(buf, "0x2a"), "short form: %s", buf);
    ck_assert_msg(!contains(buf, "not done"), "short form: %s", buf);
    len = nursery_result_format(r, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    ck_assert_msg(contains(buf, "0x2a"), "detailed form: %s", buf);
    ck_assert_msg(contains(buf, "printer"), "detailed form: %s", buf);

    /* A future with an error: the error. */
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    ck_assert_int_eq(nursery_future_fail(f, TEST_ERR, "test error %d", 9), 0);
    len = nursery_result_format(f, buf, sizeof buf, 0);
    ck_assert_int_eq((int)strlen(buf), len);
    ck_assert_msg(contains(buf, "test error 9"), "short form: %s", buf);
    ck_assert_msg(contains(buf, "4242"), "short form: %s", buf);
    ck_assert_msg(!contains(buf, "not done"), "short form: %s", buf);

    nursery_result_release(f);
    nursery_result_release(r);
    nursery_result_release(gate);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 8. wait_any / wait_all                                                   */
/* ------------------------------------------------------------------------ */

#define NCAPS 10

/* Opens gates [from, to] in order, each after the previous capture is done,
 * so the captures finish in index order. */
struct stepper {
    nursery_result_t **gates;
    nursery_result_t **caps;
    int from, to;
    int rc;
};

static int stepper_task(void *arg, void **value)
{
    struct stepper *st = arg;
    (void)value;
    for (int i = st->from; i <= st->to; i++) {
        int rc = nursery_future_set_value(st->gates[i], NULL);
        if (rc == 0)
            rc = nursery_result_wait(st->caps[i], HANG);
        if (rc != 0) {
            st->rc = rc;
            return rc;
        }
    }
    st->rc = 0;
    return 0;
}

START_TEST(wait_any_and_wait_all_follow_completion_order)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *gates[NCAPS], *caps[NCAPS], *rev[NCAPS];
    struct step s[NCAPS];
    latch_t entered;
    latch_init(&entered, NCAPS);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < NCAPS; i++) {
        gates[i] = gate_new();
        step_init(&s[i], gates[i], i, false);
        s[i].entered = &entered;
        ck_assert_int_eq(nursery_capture_start_soon(n, step_task, &s[i], NULL, &caps[i]), 0);
        rev[NCAPS - 1 - i] = caps[i];
    }
    /* All ten are running (blocked on their gates, the pool adds threads
     * for blocked workers), so the waits below only wait: none of them can
     * run a queued capture, which would block on a gate opened later. */
    ck_assert(latch_wait(&entered));

    /* wait_any over them in reverse order returns capture 0. */
    gate_open(gates[0]);
    size_t idx = 12345;
    ck_assert_int_eq(nursery_wait_any(rev, NCAPS, HANG, &idx), 0);
    ck_assert_uint_eq(idx, NCAPS - 1);
    ck_assert_ptr_eq(rev[idx], caps[0]);
    assert_value(caps[0], 0);
    for (int i = 1; i < NCAPS; i++)
        ck_assert(!nursery_result_is_done(caps[i]));

    /* wait_all over (3, 2, 0) returns when 0..3 are done, 4..9 not. */
    struct stepper st = {.gates = gates, .caps = caps, .from = 1, .to = 3, .rc = -1};
    ck_assert_int_eq(nursery_start_soon(n, stepper_task, &st, NULL), 0);
    nursery_result_t *some[3] = {caps[3], caps[2], caps[0]};
    ck_assert_int_eq(nursery_wait_all(some, 3, HANG), 0);
    for (int i = 0; i <= 3; i++)
        assert_value(caps[i], i);
    for (int i = 4; i < NCAPS; i++)
        ck_assert(!nursery_result_is_done(caps[i]));

    /* The rest, in order. */
    for (int i = 4; i < NCAPS; i++) {
        gate_open(gates[i]);
        ck_assert_int_eq(nursery_result_wait(caps[i], HANG), 0);
    }
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(st.rc, 0);
    for (int i = 0; i < NCAPS; i++) {
        assert_value(caps[i], i);
        nursery_result_release(caps[i]);
        nursery_result_release(gates[i]);
    }
    latch_destroy(&entered);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* 9. results to channel                                                    */
/* ------------------------------------------------------------------------ */

/* Returns its index after the previous capture in the chain is done, so
 * the chain finishes in index order however the pool schedules it. */
struct chained {
    nursery_result_t *prev; /* NULL for the first */
    nursery_result_t *gate; /* the first one's start step */
    int i;
};

static int chained_task(void *arg, void **value)
{
    struct chained *c = arg;
    int rc = c->prev != NULL ? nursery_result_wait(c->prev, HANG) : gate_wait(c->gate);
    if (rc != 0)
        return rc;
    *value = INT2PTR(c->i);
    return 0;
}

START_TEST(results_to_channel_delivers_in_completion_order_then_closes)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *caps[NCAPS];
    struct chained c[NCAPS];
    nursery_result_t *go = gate_new();
    nursery_sender_t *tx = NULL;
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(1, release_item, &tx, &rx), 0);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < NCAPS; i++) {
        c[i].prev = i > 0 ? caps[i - 1] : NULL;
        c[i].gate = go;
        c[i].i = i;
        ck_assert_int_eq(nursery_capture_start_soon(n, chained_task, &c[i], NULL, &caps[i]), 0);
    }
    struct to_channel tc = {.results = caps, .n = NCAPS, .tx = tx, .close_on_complete = true,
                            .rc = -1};
    ck_assert_int_eq(nursery_start_soon(n, to_channel_task, &tc, NULL), 0);
    gate_open(go);

    /* The consumer: values strictly increase; the loop ends at EEOC. */
    int prev = -1, received = 0;
    bool seen[NCAPS] = {false};
    for (;;) {
        void *item = NULL;
        int rc = nursery_channel_recv(rx, &item, HANG);
        if (rc == NURSERY_EEOC)
            break;
        ck_assert_int_eq(rc, 0);
        ck_assert_ptr_nonnull(item);
        nursery_result_t *r = item;
        ck_assert(nursery_result_is_done(r));
        void *v = NULL;
        ck_assert_int_eq(nursery_result_value(r, &v), 0);
        int i = PTR2INT(v);
        ck_assert_int_gt(i, prev);
        ck_assert_int_lt(i, NCAPS);
        ck_assert_ptr_eq(r, caps[i]);
        ck_assert(!seen[i]);
        seen[i] = true;
        prev = i;
        received++;
        nursery_result_release(r);
    }
    ck_assert_int_eq(received, NCAPS);

    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(tc.rc, 0);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    for (int i = 0; i < NCAPS; i++)
        nursery_result_release(caps[i]);
    nursery_result_release(go);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *aioresult_suite(void)
{
    Suite *s = suite_create("aioresult");
    ADD_CASE(s, capture_error_cancels_siblings_and_reports_error, 30);
    ADD_CASE(s, capture_error_is_the_object_join_reports, 30);
    ADD_CASE(s, capture_suppressed_error_does_not_cancel_siblings, 30);
    ADD_CASE(s, start_returns_started_value_before_done, 30);
    ADD_CASE(s, start_failure_before_started_cancels_start_nursery, 30);
    ADD_CASE(s, start_early_return_is_not_started_error, 30);
    ADD_CASE(s, plain_start_early_return_reports_not_started, 30);
    ADD_CASE(s, future_set_by_tasks_keeps_first_outcome, 30);
    ADD_CASE(s, format_shows_state_name_value_and_error, 30);
    ADD_CASE(s, wait_any_and_wait_all_follow_completion_order, 30);
    ADD_CASE(s, results_to_channel_delivers_in_completion_order_then_closes, 30);
    return s;
}

int main(void)
{
    return run_suite(aioresult_suite());
}
