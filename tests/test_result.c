/* SPDX-License-Identifier: MIT */
/*
 * test_result.c - results: captures and futures (src/result.c).
 *
 * Every accessor's error path, waiting (deadlines, cancellation, EDEADLK,
 * helping), per-result cancellation, the printable form, reference
 * counting, reads from several threads, and arg_destroy running exactly
 * once whatever happens to a task.  Events are ordered with gates and
 * latches from helpers.h, never with sleeps.
 */
#include <stdio.h>
#include <string.h>

#include "helpers.h"

#define TEST_ERR 4242
#define HANG nursery_after_ms(TEST_HANG_MS)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* The general-purpose task of this file.  It counts its runs, optionally
 * signals that it is running and waits for a gate, then returns `value` or
 * fails with `fail` (non-zero).  arg_destroy counts its calls. */
struct job {
    atomic_int runs;
    atomic_int destroys;
    latch_t entered;         /* counted down when the task starts */
    nursery_result_t *gate;  /* waited for after `entered` (NULL: none) */
    int wait_rc;             /* what the gate wait returned */
    int value;
    int fail;                /* non-zero: fail with this code */
    pthread_t thread;        /* the thread that ran the task */
};

static void job_init(struct job *j, nursery_result_t *gate, int value, int fail)
{
    memset(j, 0, sizeof *j);
    atomic_init(&j->runs, 0);
    atomic_init(&j->destroys, 0);
    latch_init(&j->entered, 1);
    j->gate = gate;
    j->wait_rc = -1;
    j->value = value;
    j->fail = fail;
}

static void job_fini(struct job *j)
{
    latch_destroy(&j->entered);
}

static int job_task(void *arg, void **value)
{
    struct job *j = arg;
    atomic_fetch_add(&j->runs, 1);
    j->thread = pthread_self();
    latch_count_down(&j->entered);
    if (j->gate != NULL) {
        j->wait_rc = gate_wait(j->gate);
        if (j->wait_rc != 0)
            return j->wait_rc;
    }
    if (j->fail != 0)
        return nursery_fail(j->fail, "job failed with %d", j->value);
    *value = INT2PTR(j->value);
    return 0;
}

static void job_destroy(void *arg)
{
    struct job *j = arg;
    atomic_fetch_add(&j->destroys, 1);
}

static const nursery_task_options_t job_opts = {.arg_destroy = job_destroy};

/* ------------------------------------------------------------------------ */
/* Accessors and their error paths                                          */
/* ------------------------------------------------------------------------ */

START_TEST(accessors_reject_null_arguments)
{
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(NULL), EINVAL);
    ck_assert_int_eq(nursery_future_create(&f), 0);
    ck_assert_ptr_nonnull(f);

    void *v = NULL;
    nursery_error_t *e = NULL;
    ck_assert_int_eq(nursery_result_value(NULL, &v), EINVAL);
    ck_assert_int_eq(nursery_result_value(f, NULL), EINVAL);
    ck_assert_int_eq(nursery_result_error(NULL, &e), EINVAL);
    ck_assert_int_eq(nursery_result_error(f, NULL), EINVAL);
    ck_assert(!nursery_result_is_done(NULL));
    ck_assert_int_eq(nursery_result_wait(NULL, HANG), EINVAL);
    ck_assert_int_eq(nursery_result_cancel(NULL), EINVAL);
    ck_assert_int_eq(nursery_capture_run(NULL), EINVAL);
    ck_assert_int_eq(nursery_future_set_value(NULL, NULL), EINVAL);
    ck_assert_int_eq(nursery_future_fail(NULL, EIO, "x"), EINVAL);
    ck_assert_int_eq(nursery_future_set_error(f, NULL), EINVAL);
    ck_assert_int_eq(nursery_error_create(&e, EIO, "owned by the call"), 0);
    ck_assert_int_eq(nursery_future_set_error(NULL, e), EINVAL); /* e released */
    char buf[8] = "xxxxxxx";
    ck_assert_int_eq(nursery_result_format(NULL, buf, sizeof buf, 0), -1);
    ck_assert_ptr_null(nursery_result_retain(NULL));
    nursery_result_release(NULL);

    /* A future is not a capture: it cannot be run. */
    ck_assert_int_eq(nursery_capture_run(f), EINVAL);

    /* None of that touched f. */
    assert_not_done(f);
    nursery_result_release(f);

    /* Capture constructors. */
    struct job j;
    job_init(&j, NULL, 1, 0);
    nursery_result_t *r = INT2PTR(1);
    ck_assert_int_eq(nursery_capture_create(NULL, job_task, &j, NULL), EINVAL);
    ck_assert_int_eq(nursery_capture_create(&r, NULL, &j, NULL), EINVAL);
    ck_assert_int_eq(atomic_load(&j.runs), 0);
    job_fini(&j);
}
END_TEST

START_TEST(reads_before_done_are_not_done)
{
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    void *v = INT2PTR(77);
    nursery_error_t *e = NULL;
    ck_assert(!nursery_result_is_done(f));
    ck_assert_int_eq(nursery_result_value(f, &v), NURSERY_ENOTDONE);
    ck_assert_int_eq(nursery_result_error(f, &e), NURSERY_ENOTDONE);
    /* Reading does not change anything: still not done, repeatedly. */
    ck_assert_int_eq(nursery_result_value(f, &v), NURSERY_ENOTDONE);
    ck_assert(!nursery_result_is_done(f));

    /* An unrun capture is not done either. */
    struct job j;
    job_init(&j, NULL, 5, 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_create(&c, job_task, &j, NULL), 0);
    assert_not_done(c);
    nursery_result_release(c);
    ck_assert_int_eq(atomic_load(&j.runs), 0);
    job_fini(&j);
    nursery_result_release(f);
}
END_TEST

START_TEST(future_set_again_keeps_first_value)
{
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(1)), 0);
    assert_value(f, 1);
    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(2)), EALREADY);
    nursery_error_t *e = NULL;
    ck_assert_int_eq(nursery_error_create(&e, EIO, "too late"), 0);
    ck_assert_int_eq(nursery_future_set_error(f, e), EALREADY); /* e released */
    ck_assert_int_eq(nursery_future_fail(f, EIO, "too late"), EALREADY);
    ck_assert_int_eq(nursery_result_cancel(f), EALREADY);
    assert_value(f, 1);
    /* A NULL value is a value. */
    nursery_result_t *g = NULL;
    ck_assert_int_eq(nursery_future_create(&g), 0);
    ck_assert_int_eq(nursery_future_set_value(g, NULL), 0);
    assert_value(g, 0);
    nursery_result_release(g);
    nursery_result_release(f);
}
END_TEST

START_TEST(future_set_again_keeps_first_error)
{
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    nursery_error_t *e = NULL;
    ck_assert_int_eq(nursery_error_create(&e, TEST_ERR, "first %d", 1), 0);
    ck_assert_int_eq(nursery_future_set_error(f, e), 0);
    nursery_error_t *got = assert_failed(f, TEST_ERR);
    ck_assert_ptr_eq(got, e); /* the very error given */
    ck_assert_str_eq(nursery_error_message(got), "first 1");

    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(3)), EALREADY);
    ck_assert_int_eq(nursery_future_fail(f, EIO, "second"), EALREADY);
    nursery_error_t *e2 = NULL;
    ck_assert_int_eq(nursery_error_create(&e2, EPERM, NULL), 0);
    ck_assert_int_eq(nursery_future_set_error(f, e2), EALREADY);
    ck_assert_ptr_eq(assert_failed(f, TEST_ERR), got);
    ck_assert_str_eq(nursery_error_message(got), "first 1");

    /* future_fail builds the error from the code and message. */
    nursery_result_t *g = NULL;
    ck_assert_int_eq(nursery_future_create(&g), 0);
    ck_assert_int_eq(nursery_future_fail(g, EIO, "disk %s", "gone"), 0);
    ck_assert_str_eq(nursery_error_message(assert_failed(g, EIO)), "disk gone");
    nursery_result_release(g);
    nursery_result_release(f);
}
END_TEST

START_TEST(capture_cannot_be_set_by_hand)
{
    struct job j;
    job_init(&j, NULL, 9, 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_create(&c, job_task, &j, &job_opts), 0);
    ck_assert_int_eq(nursery_future_set_value(c, INT2PTR(1)), EINVAL);
    ck_assert_int_eq(nursery_future_fail(c, EIO, "no"), EINVAL);
    nursery_error_t *e = NULL;
    ck_assert_int_eq(nursery_error_create(&e, EIO, NULL), 0);
    ck_assert_int_eq(nursery_future_set_error(c, e), EINVAL); /* e released */
    assert_not_done(c);

    /* The capture still runs normally afterwards. */
    ck_assert_int_eq(nursery_capture_run(c), 0);
    assert_value(c, 9);
    ck_assert_int_eq(nursery_future_set_value(c, INT2PTR(1)), EINVAL);
    assert_value(c, 9);
    nursery_result_release(c);
    ck_assert_int_eq(atomic_load(&j.runs), 1);
    ck_assert_int_eq(atomic_load(&j.destroys), 1);
    job_fini(&j);
}
END_TEST

START_TEST(capture_run_twice_is_ealready)
{
    struct job j;
    job_init(&j, NULL, 3, 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_create(&c, job_task, &j, &job_opts), 0);
    ck_assert_int_eq(nursery_capture_run(c), 0);
    assert_value(c, 3);
    ck_assert_int_eq(nursery_capture_run(c), EALREADY);
    ck_assert_int_eq(nursery_capture_run(c), EALREADY);
    assert_value(c, 3);
    ck_assert_int_eq(atomic_load(&j.runs), 1);
    ck_assert_int_eq(atomic_load(&j.destroys), 1);
    nursery_result_release(c);
    ck_assert_int_eq(atomic_load(&j.destroys), 1);
    job_fini(&j);

    /* A failing capture: run returns its code, the error is kept and is
     * also the thread's last error. */
    struct job k;
    job_init(&k, NULL, 4, TEST_ERR);
    ck_assert_int_eq(nursery_capture_create(&c, job_task, &k, &job_opts), 0);
    ck_assert_int_eq(nursery_capture_run(c), TEST_ERR);
    nursery_error_t *e = assert_failed(c, TEST_ERR);
    ck_assert_str_eq(nursery_error_message(e), "job failed with 4");
    nursery_error_t *last = nursery_last_error();
    ck_assert_ptr_nonnull(last);
    ck_assert_int_eq(nursery_error_code(last), TEST_ERR);
    ck_assert_int_eq(nursery_capture_run(c), EALREADY);
    ck_assert_ptr_eq(assert_failed(c, TEST_ERR), e);
    ck_assert_int_eq(atomic_load(&k.runs), 1);
    nursery_result_release(c);
    ck_assert_int_eq(atomic_load(&k.destroys), 1);
    job_fini(&k);
}
END_TEST

START_TEST(capture_run_of_started_capture_is_ealready)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    struct job j;
    job_init(&j, gate, 6, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &j, &job_opts, &c), 0);
    /* Queued or running: either way it is started and cannot be run. */
    ck_assert_int_eq(nursery_capture_run(c), EALREADY);
    ck_assert(latch_wait(&j.entered));
    ck_assert_int_eq(nursery_capture_run(c), EALREADY);
    gate_open(gate);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(nursery_capture_run(c), EALREADY);
    assert_value(c, 6);
    ck_assert_int_eq(atomic_load(&j.runs), 1);
    ck_assert_int_eq(atomic_load(&j.destroys), 1);
    nursery_result_release(c);
    nursery_result_release(gate);
    job_fini(&j);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Waiting                                                                  */
/* ------------------------------------------------------------------------ */

START_TEST(wait_with_passed_deadline_polls)
{
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    ck_assert_int_eq(nursery_result_wait(f, nursery_after_ms(0)), ETIMEDOUT);
    ck_assert_int_eq(nursery_result_wait(f, nursery_after_ms(-1000)), ETIMEDOUT);
    ck_assert_int_eq(nursery_result_wait(f, nursery_now()), ETIMEDOUT);
    ck_assert_int_eq(nursery_result_wait(f, 0), ETIMEDOUT);
    /* A short real wait times out too, and leaves the future pending. */
    nursery_time_t before = nursery_now();
    ck_assert_int_eq(nursery_result_wait(f, nursery_after_ms(20)), ETIMEDOUT);
    ck_assert_int_ge(nursery_now() - before, 20 * 1000000LL);
    assert_not_done(f);

    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(8)), 0);
    ck_assert_int_eq(nursery_result_wait(f, nursery_after_ms(0)), 0);
    ck_assert_int_eq(nursery_result_wait(f, 0), 0);
    ck_assert_int_eq(nursery_result_wait(f, NURSERY_FOREVER), 0);
    assert_value(f, 8);
    nursery_result_release(f);
}
END_TEST

/* A task that waits on its own capture, handed to it through `self`. */
struct self_wait {
    nursery_result_t *gate;
    nursery_result_t *self; /* written before the gate opens */
    int rc;
};

static int self_wait_task(void *arg, void **value)
{
    struct self_wait *s = arg;
    int rc = gate_wait(s->gate);
    if (rc != 0)
        return rc;
    s->rc = nursery_result_wait(s->self, HANG);
    *value = INT2PTR(11);
    return 0;
}

START_TEST(wait_on_own_capture_is_edeadlk)
{
    nursery_pool_t *pool = test_pool(2);
    struct self_wait s = {.gate = gate_new(), .self = NULL, .rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, self_wait_task, &s, NULL, &r), 0);
    s.self = r; /* published by opening the gate */
    gate_open(s.gate);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(s.rc, EDEADLK);
    assert_value(r, 11);
    nursery_result_release(r);
    nursery_result_release(s.gate);
    destroy_pool(pool);
}
END_TEST

START_TEST(wait_never_reports_task_error)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    struct job j;
    job_init(&j, gate, 1, TEST_ERR);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *c = NULL;
    nursery_task_options_t opts = {.flags = NURSERY_TASK_SUPPRESS_ERROR};
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &j, &opts, &c), 0);
    gate_open(gate);
    ck_assert_int_eq(nursery_result_wait(c, HANG), 0);
    ck_assert_int_eq(nursery_result_wait(c, HANG), 0);
    assert_failed(c, TEST_ERR);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);

    /* A future with an error, and a cancelled one, wait fine too. */
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    ck_assert_int_eq(nursery_future_fail(f, EIO, "bad"), 0);
    ck_assert_int_eq(nursery_result_wait(f, HANG), 0);
    nursery_result_t *g = NULL;
    ck_assert_int_eq(nursery_future_create(&g), 0);
    ck_assert_int_eq(nursery_result_cancel(g), 0);
    ck_assert_int_eq(nursery_result_wait(g, HANG), 0);
    assert_failed(g, ECANCELED);

    nursery_result_release(g);
    nursery_result_release(f);
    nursery_result_release(c);
    nursery_result_release(gate);
    job_fini(&j);
    destroy_pool(pool);
}
END_TEST

/* Waits (from a task) on a result nobody completes. */
struct stuck_wait {
    nursery_result_t *target;
    latch_t entered;
    int rc;
};

static int stuck_wait_task(void *arg, void **value)
{
    struct stuck_wait *s = arg;
    (void)value;
    latch_count_down(&s->entered);
    s->rc = nursery_result_wait(s->target, HANG);
    return s->rc;
}

START_TEST(wait_is_cancelled_by_nursery_cancel)
{
    nursery_pool_t *pool = test_pool(2);
    struct stuck_wait s = {.rc = -1};
    latch_init(&s.entered, 1);
    ck_assert_int_eq(nursery_future_create(&s.target), 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, stuck_wait_task, &s, NULL, &c), 0);
    ck_assert(latch_wait(&s.entered));
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    /* Cancelled, not timed out. */
    ck_assert_int_lt(nursery_now() - t0, (nursery_time_t)TEST_HANG_MS * 1000000 / 2);
    ck_assert_int_eq(s.rc, ECANCELED);
    assert_failed(c, ECANCELED);
    /* The awaited future was not touched. */
    assert_not_done(s.target);
    nursery_errors_free(errs);
    nursery_result_release(c);
    nursery_result_release(s.target);
    latch_destroy(&s.entered);
    destroy_pool(pool);
}
END_TEST

/* The waiter of the helping test: waits on a capture of a task that has not
 * started (its pointer arrives through `target` before the gate opens). */
struct helper_wait {
    nursery_result_t *gate;
    nursery_result_t *target;
    latch_t entered;
    int rc;
    pthread_t thread;
};

static int helper_wait_task(void *arg, void **value)
{
    struct helper_wait *h = arg;
    h->thread = pthread_self();
    latch_count_down(&h->entered);
    int rc = gate_wait(h->gate);
    if (rc != 0)
        return rc;
    h->rc = nursery_result_wait(h->target, HANG);
    *value = INT2PTR(1);
    return h->rc;
}

START_TEST(waiter_runs_unstarted_capture_on_one_thread_pool)
{
    nursery_pool_t *pool = capped_pool(1);
    struct helper_wait h = {.gate = gate_new(), .rc = -1};
    latch_init(&h.entered, 1);
    struct job b;
    job_init(&b, NULL, 7, 0);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *ra = NULL, *rb = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, helper_wait_task, &h, NULL, &ra), 0);
    /* A occupies the only worker (blocked on its gate); B is queued behind. */
    ck_assert(latch_wait(&h.entered));
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &b, &job_opts, &rb), 0);
    h.target = rb;
    ck_assert(!nursery_result_is_done(rb));
    ck_assert_int_eq(atomic_load(&b.runs), 0);
    gate_open(h.gate);

    /* Wait for A (not join, which could run B itself in this thread). */
    ck_assert_int_eq(nursery_result_wait(ra, HANG), 0);
    assert_value(ra, 1);
    ck_assert_int_eq(h.rc, 0);
    assert_value(rb, 7);
    ck_assert_int_eq(atomic_load(&b.runs), 1);
    ck_assert(pthread_equal(b.thread, h.thread));

    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
    ck_assert_uint_gt(st.helped, 0);
    ck_assert_uint_eq(st.threads, 1);

    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(atomic_load(&b.destroys), 1);
    nursery_result_release(ra);
    nursery_result_release(rb);
    nursery_result_release(h.gate);
    latch_destroy(&h.entered);
    job_fini(&b);
    destroy_pool(pool);
}
END_TEST

/* Everything a task wrote is visible to whoever saw its result done. */
#define VIS_TASKS 64
#define VIS_WORDS 256

struct writer {
    long data[VIS_WORDS]; /* plain, non-atomic memory */
    int seed;
};

static int writer_task(void *arg, void **value)
{
    struct writer *w = arg;
    for (int i = 0; i < VIS_WORDS; i++)
        w->data[i] = (long)w->seed * 1000 + i;
    *value = w->data;
    return 0;
}

START_TEST(task_writes_visible_after_wait)
{
    nursery_pool_t *pool = test_pool(4);
    static struct writer w[VIS_TASKS];
    nursery_result_t *r[VIS_TASKS];
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < VIS_TASKS; i++) {
        w[i].seed = i + 1;
        ck_assert_int_eq(nursery_capture_start_soon(n, writer_task, &w[i], NULL, &r[i]), 0);
    }
    /* Read each one as soon as its wait returns, while others still run. */
    for (int i = VIS_TASKS - 1; i >= 0; i--) {
        ck_assert_int_eq(nursery_result_wait(r[i], HANG), 0);
        void *v = NULL;
        ck_assert_int_eq(nursery_result_value(r[i], &v), 0);
        ck_assert_ptr_eq(v, w[i].data);
        for (int k = 0; k < VIS_WORDS; k++)
            ck_assert_int_eq(((long *)v)[k], (long)(i + 1) * 1000 + k);
    }
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    for (int i = 0; i < VIS_TASKS; i++)
        nursery_result_release(r[i]);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Per-result cancellation                                                  */
/* ------------------------------------------------------------------------ */

START_TEST(result_cancel_before_start_never_runs)
{
    nursery_pool_t *pool = capped_pool(1);
    nursery_result_t *gate = gate_new();
    struct job blocker, victim;
    job_init(&blocker, gate, 1, 0);
    job_init(&victim, NULL, 2, 0);
    nursery_task_options_t vopts = {.name = "victim", .arg_destroy = job_destroy};

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *rb = NULL, *rv = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &blocker, &job_opts, &rb), 0);
    ck_assert(latch_wait(&blocker.entered)); /* the only worker is busy */
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &victim, &vopts, &rv), 0);
    assert_not_done(rv);

    ck_assert_int_eq(nursery_result_cancel(rv), 0);
    /* Done at once, with a cancellation, without having run. */
    nursery_error_t *e = assert_failed(rv, ECANCELED);
    ck_assert_int_eq(nursery_result_cancel(rv), EALREADY);
    ck_assert_ptr_eq(assert_failed(rv, ECANCELED), e);
    ck_assert_int_eq(nursery_result_wait(rv, nursery_after_ms(0)), 0);
    /* The rest of the nursery is unaffected. */
    ck_assert(!nursery_cancelled());
    ck_assert(!nursery_result_is_done(rb));

    gate_open(gate);
    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    nursery_errors_free(errs);
    assert_value(rb, 1);
    ck_assert_int_eq(blocker.wait_rc, 0);
    ck_assert_int_eq(atomic_load(&victim.runs), 0);
    ck_assert_int_eq(atomic_load(&victim.destroys), 1);
    ck_assert_int_eq(atomic_load(&blocker.destroys), 1);
    nursery_result_release(rv);
    nursery_result_release(rb);
    ck_assert_int_eq(atomic_load(&victim.destroys), 1);
    nursery_result_release(gate);
    job_fini(&blocker);
    job_fini(&victim);
    destroy_pool(pool);
}
END_TEST

START_TEST(result_cancel_of_unrun_capture)
{
    struct job j;
    job_init(&j, NULL, 3, 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_create(&c, job_task, &j, &job_opts), 0);
    ck_assert_int_eq(nursery_result_cancel(c), 0);
    assert_failed(c, ECANCELED);
    /* It can no longer be run. */
    ck_assert_int_eq(nursery_capture_run(c), EALREADY);
    ck_assert_int_eq(atomic_load(&j.runs), 0);
    nursery_result_release(c);
    ck_assert_int_eq(atomic_load(&j.destroys), 1);
    job_fini(&j);
}
END_TEST

START_TEST(result_cancel_while_running_spares_siblings)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *ga = gate_new(), *gb = gate_new();
    struct job a, b;
    job_init(&a, ga, 1, 0);
    job_init(&b, gb, 2, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *ra = NULL, *rb = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &a, &job_opts, &ra), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &b, &job_opts, &rb), 0);
    ck_assert(latch_wait(&a.entered));
    ck_assert(latch_wait(&b.entered));

    ck_assert_int_eq(nursery_result_cancel(ra), 0);
    ck_assert_int_eq(nursery_result_wait(ra, HANG), 0);
    ck_assert_int_eq(a.wait_rc, ECANCELED); /* a saw the cancellation */
    assert_failed(ra, ECANCELED);
    ck_assert_int_eq(nursery_result_cancel(ra), EALREADY);

    /* b and the body are unaffected. */
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert(!nursery_result_is_done(rb));
    ck_assert(!nursery_result_is_done(ga));
    gate_open(gb);
    ck_assert_int_eq(nursery_result_wait(rb, HANG), 0);
    assert_value(rb, 2);
    ck_assert_int_eq(b.wait_rc, 0);

    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&a.runs), 1);
    ck_assert_int_eq(atomic_load(&a.destroys), 1);
    ck_assert_int_eq(atomic_load(&b.destroys), 1);
    nursery_result_release(ra);
    nursery_result_release(rb);
    nursery_result_release(ga);
    nursery_result_release(gb);
    job_fini(&a);
    job_fini(&b);
    destroy_pool(pool);
}
END_TEST

/* Cancelling the done result of nursery_capture_start_and_done before its
 * start task has run (issue 6, item 13): the task never runs, both results
 * are done with a cancellation, and the start nursery does not fail - a
 * cancellation stays a cancellation.  Today the start task finds the
 * capture taken and fails its nursery with EALREADY. */
START_TEST(cancel_of_done_result_before_its_start_is_a_cancellation)
{
    nursery_pool_t *pool = capped_pool(1);
    nursery_result_t *gate = gate_new();
    struct job blocker, victim;
    job_init(&blocker, gate, 1, 0);
    job_init(&victim, NULL, 2, 0);
    nursery_t *run_n = NULL, *start_n = NULL;
    ck_assert_int_eq(nursery_open(&run_n, pool), 0);
    ck_assert_int_eq(nursery_open(&start_n, pool), 0);
    nursery_result_t *rb = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(start_n, job_task, &blocker, &job_opts, &rb), 0);
    ck_assert(latch_wait(&blocker.entered)); /* the start task stays queued */

    nursery_result_t *sr = NULL, *dr = NULL;
    ck_assert_int_eq(
        nursery_capture_start_and_done(start_n, run_n, job_task, &victim, &job_opts, &sr, &dr), 0);
    assert_not_done(sr);
    ck_assert_int_eq(nursery_result_cancel(dr), 0);
    nursery_error_t *e = assert_failed(dr, ECANCELED);

    gate_open(gate);
    nursery_errors_t *errs = NULL;
    int rc = nursery_join(start_n, HANG, &errs);
    ck_assert_msg(rc == 0 && nursery_errors_count(errs) == 0,
                  "start nursery's join returned %d with %zu error(s), the first with code %d", rc,
                  nursery_errors_count(errs),
                  errs ? nursery_error_code(nursery_errors_get(errs, 0)) : 0);
    nursery_errors_free(errs);
    assert_failed(sr, ECANCELED);
    ck_assert_ptr_eq(assert_failed(dr, ECANCELED), e);
    assert_value(rb, 1);
    ck_assert_int_eq(nursery_join(run_n, HANG, NULL), 0);
    ck_assert_int_eq(atomic_load(&victim.runs), 0);

    nursery_result_release(sr);
    nursery_result_release(dr);
    nursery_result_release(rb);
    ck_assert_int_eq(atomic_load(&victim.destroys), 1);
    ck_assert_int_eq(atomic_load(&blocker.destroys), 1);
    nursery_result_release(gate);
    job_fini(&blocker);
    job_fini(&victim);
    destroy_pool(pool);
}
END_TEST

START_TEST(result_cancel_of_done_result_is_ealready)
{
    nursery_result_t *f = NULL, *g = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(4)), 0);
    ck_assert_int_eq(nursery_result_cancel(f), EALREADY);
    assert_value(f, 4);
    ck_assert_int_eq(nursery_future_create(&g), 0);
    ck_assert_int_eq(nursery_future_fail(g, EIO, "io"), 0);
    nursery_error_t *e = assert_failed(g, EIO);
    ck_assert_int_eq(nursery_result_cancel(g), EALREADY);
    ck_assert_ptr_eq(assert_failed(g, EIO), e);

    struct job j;
    job_init(&j, NULL, 5, 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_create(&c, job_task, &j, NULL), 0);
    ck_assert_int_eq(nursery_capture_run(c), 0);
    ck_assert_int_eq(nursery_result_cancel(c), EALREADY);
    assert_value(c, 5);
    nursery_result_release(c);
    nursery_result_release(f);
    nursery_result_release(g);
    job_fini(&j);
}
END_TEST

START_TEST(result_cancel_of_pending_future_completes_it)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    struct stuck_wait s = {.target = f, .rc = -1};
    latch_init(&s.entered, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, stuck_wait_task, &s, NULL), 0);
    ck_assert(latch_wait(&s.entered));

    ck_assert_int_eq(nursery_result_cancel(f), 0);
    nursery_error_t *e = assert_failed(f, ECANCELED);
    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(1)), EALREADY);
    ck_assert_int_eq(nursery_result_cancel(f), EALREADY);
    ck_assert_ptr_eq(assert_failed(f, ECANCELED), e);

    /* The waiter was woken by the completion: its wait succeeded. */
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(s.rc, 0);
    nursery_result_release(f);
    latch_destroy(&s.entered);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Printable form                                                           */
/* ------------------------------------------------------------------------ */

START_TEST(format_short_form)
{
    char buf[256];
    nursery_result_t *f = NULL;
    ck_assert_int_eq(nursery_future_create(&f), 0);
    int len = nursery_result_format(f, buf, sizeof buf, 0);
    ck_assert_int_eq(len, (int)strlen(buf));
    ck_assert_msg(contains(buf, "not done"), "got: %s", buf);

    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(0x2a)), 0);
    len = nursery_result_format(f, buf, sizeof buf, 0);
    ck_assert_int_eq(len, (int)strlen(buf));
    ck_assert_msg(contains(buf, "done"), "got: %s", buf);
    ck_assert_msg(!contains(buf, "not done"), "got: %s", buf);
    ck_assert_msg(contains(buf, "0x2a"), "got: %s", buf);

    /* snprintf-style: the length needed, truncated output, NUL-terminated. */
    ck_assert_int_eq(nursery_result_format(f, NULL, 0, 0), len);
    char small[5];
    memset(small, 'z', sizeof small);
    ck_assert_int_eq(nursery_result_format(f, small, sizeof small, 0), len);
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    ck_assert(strncmp(small, buf, sizeof small - 1) == 0);
    char one[1] = {'z'};
    ck_assert_int_eq(nursery_result_format(f, one, 1, 0), len);
    ck_assert_int_eq(one[0], '\0');

    /* An error: its code and message. */
    nursery_result_t *g = NULL;
    ck_assert_int_eq(nursery_future_create(&g), 0);
    ck_assert_int_eq(nursery_future_fail(g, EIO, "cannot read %s", "foo.txt"), 0);
    len = nursery_result_format(g, buf, sizeof buf, 0);
    ck_assert_int_eq(len, (int)strlen(buf));
    ck_assert_msg(contains(buf, "error"), "got: %s", buf);
    ck_assert_msg(contains(buf, "cannot read foo.txt"), "got: %s", buf);
    char code[16];
    snprintf(code, sizeof code, "%d", EIO);
    ck_assert_msg(contains(buf, code), "got: %s", buf);

    /* A cancellation. */
    nursery_result_t *h = NULL;
    ck_assert_int_eq(nursery_future_create(&h), 0);
    ck_assert_int_eq(nursery_result_cancel(h), 0);
    nursery_result_format(h, buf, sizeof buf, 0);
    ck_assert_msg(contains(buf, "cancelled"), "got: %s", buf);
    ck_assert_msg(!contains(buf, "not done"), "got: %s", buf);

    /* A NULL value reads the same on every C library. */
    nursery_result_t *z = NULL;
    ck_assert_int_eq(nursery_future_create(&z), 0);
    ck_assert_int_eq(nursery_future_set_value(z, NULL), 0);
    nursery_result_format(z, buf, sizeof buf, 0);
    ck_assert_str_eq(buf, "done: value NULL");
    nursery_result_format(z, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    ck_assert_str_eq(buf, "future: done: value NULL");

    nursery_result_release(f);
    nursery_result_release(g);
    nursery_result_release(h);
    nursery_result_release(z);
}
END_TEST

START_TEST(format_detailed_shows_task_name)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    struct job j;
    job_init(&j, gate, 0x51, TEST_ERR);
    nursery_task_options_t opts = {.name = "fmt-task", .flags = NURSERY_TASK_SUPPRESS_ERROR};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &j, &opts, &c), 0);

    char buf[512];
    int len = nursery_result_format(c, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    ck_assert_int_eq(len, (int)strlen(buf));
    ck_assert_msg(contains(buf, "not done"), "got: %s", buf);
    ck_assert_msg(contains(buf, "fmt-task"), "got: %s", buf);
    /* The short form does not need the name. */
    nursery_result_format(c, buf, sizeof buf, 0);
    ck_assert_msg(contains(buf, "not done"), "got: %s", buf);

    gate_open(gate);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    len = nursery_result_format(c, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    ck_assert_int_eq(len, (int)strlen(buf));
    ck_assert_msg(contains(buf, "fmt-task"), "got: %s", buf);
    ck_assert_msg(contains(buf, "job failed with 81"), "got: %s", buf);
    ck_assert_msg(!contains(buf, "not done"), "got: %s", buf);
    /* The error carries the task's name too. */
    nursery_error_t *e = assert_failed(c, TEST_ERR);
    ck_assert_ptr_nonnull(nursery_error_task_name(e));
    ck_assert_str_eq(nursery_error_task_name(e), "fmt-task");

    /* A successful named capture shows its value in both forms. */
    struct job k;
    job_init(&k, NULL, 0x77, 0);
    nursery_task_options_t kopts = {.name = "fmt-ok"};
    nursery_result_t *d = NULL;
    ck_assert_int_eq(nursery_capture_create(&d, job_task, &k, &kopts), 0);
    nursery_result_format(d, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    ck_assert_msg(contains(buf, "fmt-ok"), "got: %s", buf);
    ck_assert_msg(contains(buf, "not done"), "got: %s", buf);
    ck_assert_int_eq(nursery_capture_run(d), 0);
    nursery_result_format(d, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    ck_assert_msg(contains(buf, "fmt-ok"), "got: %s", buf);
    ck_assert_msg(contains(buf, "0x77"), "got: %s", buf);
    nursery_result_format(d, buf, sizeof buf, 0);
    ck_assert_msg(contains(buf, "0x77"), "got: %s", buf);
    /* The name, not raw pointers: the kind and name, then the outcome. */
    nursery_result_format(d, buf, sizeof buf, NURSERY_FORMAT_DETAILED);
    char want[128];
    snprintf(want, sizeof want, "capture 'fmt-ok' arg=%p: done: value 0x77", (void *)&k);
    ck_assert_str_eq(buf, want);

    nursery_result_release(d);
    nursery_result_release(c);
    nursery_result_release(gate);
    job_fini(&j);
    job_fini(&k);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* Reference counting and sharing                                           */
/* ------------------------------------------------------------------------ */

START_TEST(result_outlives_nursery_and_pool)
{
    nursery_pool_t *pool = test_pool(2);
    struct job ok, bad;
    job_init(&ok, NULL, 12, 0);
    job_init(&bad, NULL, 13, TEST_ERR);
    nursery_task_options_t sup = {.flags = NURSERY_TASK_SUPPRESS_ERROR};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *r = NULL, *q = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &ok, NULL, &r), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &bad, &sup, &q), 0);
    ck_assert_ptr_eq(nursery_result_retain(r), r);
    ck_assert_ptr_eq(nursery_result_retain(r), r);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    destroy_pool(pool);

    /* The nursery and the pool are gone; the results are not. */
    assert_value(r, 12);
    nursery_result_release(r);
    assert_value(r, 12);
    nursery_result_release(r);
    assert_value(r, 12);
    ck_assert_int_eq(nursery_result_wait(r, HANG), 0);
    char buf[128];
    ck_assert_int_gt(nursery_result_format(r, buf, sizeof buf, NURSERY_FORMAT_DETAILED), 0);
    nursery_result_release(r);

    nursery_error_t *e = assert_failed(q, TEST_ERR);
    /* An error retained from a result outlives the result too. */
    ck_assert_ptr_eq(nursery_error_retain(e), e);
    nursery_result_release(q);
    ck_assert_int_eq(nursery_error_code(e), TEST_ERR);
    ck_assert_str_eq(nursery_error_message(e), "job failed with 13");
    nursery_error_release(e);
    job_fini(&ok);
    job_fini(&bad);
}
END_TEST

/* Readers in plain threads, outside any task. */
#define READERS 8
#define READS 2000

struct reader {
    nursery_result_t *r;
    nursery_error_t *expect_error; /* NULL: expect the value */
    void *expect_value;
    latch_t *ready;
    atomic_int *mismatches;
    int wait_rc;
};

static void *reader_thread(void *arg)
{
    struct reader *rd = arg;
    latch_count_down(rd->ready);
    rd->wait_rc = nursery_result_wait(rd->r, HANG);
    char buf[128];
    for (int i = 0; i < READS; i++) {
        void *v = NULL;
        nursery_error_t *e = (nursery_error_t *)1;
        int vrc = nursery_result_value(rd->r, &v);
        int erc = nursery_result_error(rd->r, &e);
        bool ok = nursery_result_is_done(rd->r) && erc == 0 && e == rd->expect_error;
        if (rd->expect_error == NULL)
            ok = ok && vrc == 0 && v == rd->expect_value;
        else
            ok = ok && vrc == NURSERY_EFAILED;
        ok = ok && nursery_result_format(rd->r, buf, sizeof buf, NURSERY_FORMAT_DETAILED) > 0;
        nursery_result_t *extra = nursery_result_retain(rd->r);
        ok = ok && extra == rd->r;
        nursery_result_release(extra);
        if (!ok)
            atomic_fetch_add(rd->mismatches, 1);
    }
    return NULL;
}

START_TEST(result_read_from_many_threads)
{
    nursery_result_t *fv = NULL, *fe = NULL;
    ck_assert_int_eq(nursery_future_create(&fv), 0);
    ck_assert_int_eq(nursery_future_create(&fe), 0);
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_error_create(&err, TEST_ERR, "shared"), 0);
    latch_t ready;
    latch_init(&ready, 2 * READERS);
    atomic_int mismatches;
    atomic_init(&mismatches, 0);
    int value = 99;

    struct reader rd[2 * READERS];
    pthread_t th[2 * READERS];
    for (int i = 0; i < 2 * READERS; i++) {
        bool val = i < READERS;
        rd[i] = (struct reader){.r = val ? fv : fe,
                                .expect_error = val ? NULL : err,
                                .expect_value = val ? (void *)&value : NULL,
                                .ready = &ready,
                                .mismatches = &mismatches,
                                .wait_rc = -1};
        ck_assert_int_eq(pthread_create(&th[i], NULL, reader_thread, &rd[i]), 0);
    }
    /* The readers wait while the results are pending, then read them. */
    ck_assert(latch_wait(&ready));
    ck_assert_int_eq(nursery_future_set_value(fv, &value), 0);
    ck_assert_int_eq(nursery_future_set_error(fe, err), 0); /* fe owns err now */
    for (int i = 0; i < 2 * READERS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(rd[i].wait_rc, 0);
    }
    ck_assert_int_eq(atomic_load(&mismatches), 0);
    assert_failed(fe, TEST_ERR);
    latch_destroy(&ready);
    nursery_result_release(fv);
    nursery_result_release(fe);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* arg_destroy: exactly once, every path                                    */
/* ------------------------------------------------------------------------ */

START_TEST(arg_destroy_once_when_task_runs)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *gate = gate_new();
    struct job ok, bad, run, cancelled;
    job_init(&ok, NULL, 1, 0);
    job_init(&bad, NULL, 2, TEST_ERR);
    job_init(&run, NULL, 3, 0);
    job_init(&cancelled, gate, 4, 0);
    nursery_task_options_t sup = {.arg_destroy = job_destroy,
                                  .flags = NURSERY_TASK_SUPPRESS_ERROR};

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *rok = NULL, *rbad = NULL, *rrun = NULL, *rcan = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &ok, &job_opts, &rok), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &bad, &sup, &rbad), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &cancelled, &job_opts, &rcan), 0);
    ck_assert_int_eq(nursery_capture_create(&rrun, job_task, &run, &job_opts), 0);
    ck_assert_int_eq(nursery_capture_run(rrun), 0);
    ck_assert_int_eq(atomic_load(&run.destroys), 1); /* "when the capture has run" */
    ck_assert(latch_wait(&cancelled.entered));
    ck_assert_int_eq(nursery_result_cancel(rcan), 0);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);

    struct job *all[] = {&ok, &bad, &run, &cancelled};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(atomic_load(&all[i]->runs), 1);
        ck_assert_int_eq(atomic_load(&all[i]->destroys), 1);
    }
    assert_value(rok, 1);
    assert_failed(rbad, TEST_ERR);
    assert_value(rrun, 3);
    assert_failed(rcan, ECANCELED);
    nursery_result_release(rok);
    nursery_result_release(rbad);
    nursery_result_release(rrun);
    nursery_result_release(rcan);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(atomic_load(&all[i]->destroys), 1);
        job_fini(all[i]);
    }
    nursery_result_release(gate);
    destroy_pool(pool);
}
END_TEST

START_TEST(arg_destroy_once_when_task_never_runs)
{
    nursery_pool_t *pool = test_pool(2);
    struct job unrun, cancelled_capture, in_cancelled, in_closed, null_nursery, null_fn;
    struct job *all[] = {&unrun, &cancelled_capture, &in_cancelled, &in_closed, &null_nursery,
                         &null_fn};
    for (size_t i = 0; i < 6; i++)
        job_init(all[i], NULL, (int)i, 0);

    /* A capture freed without having run. */
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_create(&r, job_task, &unrun, &job_opts), 0);
    ck_assert_int_eq(atomic_load(&unrun.destroys), 0);
    nursery_result_release(r);
    ck_assert_int_eq(atomic_load(&unrun.destroys), 1);

    /* A capture cancelled before being run, then freed. */
    ck_assert_int_eq(nursery_capture_create(&r, job_task, &cancelled_capture, &job_opts), 0);
    ck_assert_int_eq(nursery_result_cancel(r), 0);
    nursery_result_release(r);
    ck_assert_int_eq(atomic_load(&cancelled_capture.destroys), 1);

    /* Started into a cancelled nursery: ends cancelled without running. */
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &in_cancelled, &job_opts, &r), 0);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    assert_failed(r, ECANCELED);
    nursery_result_release(r);
    ck_assert_int_eq(atomic_load(&in_cancelled.destroys), 1);

    /* Started into a joined nursery: ECLOSED, nothing queued. */
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_ptr_eq(nursery_retain(n), n);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    r = INT2PTR(1);
    ck_assert_int_eq(nursery_capture_start_soon(n, job_task, &in_closed, &job_opts, &r),
                     NURSERY_ECLOSED);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(atomic_load(&in_closed.destroys), 1);
    nursery_release(n);

    /* Bad arguments. */
    r = INT2PTR(1);
    ck_assert_int_eq(nursery_capture_start_soon(NULL, job_task, &null_nursery, &job_opts, &r),
                     EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(atomic_load(&null_nursery.destroys), 1);
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    r = INT2PTR(1);
    ck_assert_int_eq(nursery_capture_start_soon(n, NULL, &null_fn, &job_opts, &r), EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(atomic_load(&null_fn.destroys), 1);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);

    for (size_t i = 0; i < 6; i++) {
        ck_assert_int_eq(atomic_load(&all[i]->runs), 0);
        ck_assert_int_eq(atomic_load(&all[i]->destroys), 1);
        job_fini(all[i]);
    }
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *result_suite(void)
{
    Suite *s = suite_create("result");
    ADD_CASE(s, accessors_reject_null_arguments, 30);
    ADD_CASE(s, reads_before_done_are_not_done, 30);
    ADD_CASE(s, future_set_again_keeps_first_value, 30);
    ADD_CASE(s, future_set_again_keeps_first_error, 30);
    ADD_CASE(s, capture_cannot_be_set_by_hand, 30);
    ADD_CASE(s, capture_run_twice_is_ealready, 30);
    ADD_CASE(s, capture_run_of_started_capture_is_ealready, 30);
    ADD_CASE(s, wait_with_passed_deadline_polls, 30);
    ADD_CASE(s, wait_on_own_capture_is_edeadlk, 30);
    ADD_CASE(s, wait_never_reports_task_error, 30);
    ADD_CASE(s, wait_is_cancelled_by_nursery_cancel, 30);
    ADD_CASE(s, waiter_runs_unstarted_capture_on_one_thread_pool, 30);
    ADD_CASE(s, task_writes_visible_after_wait, 30);
    ADD_CASE(s, result_cancel_before_start_never_runs, 30);
    ADD_CASE(s, result_cancel_of_unrun_capture, 30);
    ADD_CASE(s, result_cancel_while_running_spares_siblings, 30);
    ADD_CASE(s, cancel_of_done_result_before_its_start_is_a_cancellation, 30);
    ADD_CASE(s, result_cancel_of_done_result_is_ealready, 30);
    ADD_CASE(s, result_cancel_of_pending_future_completes_it, 30);
    ADD_CASE(s, format_short_form, 30);
    ADD_CASE(s, format_detailed_shows_task_name, 30);
    ADD_CASE(s, result_outlives_nursery_and_pool, 30);
    ADD_CASE(s, result_read_from_many_threads, 30);
    ADD_CASE(s, arg_destroy_once_when_task_runs, 30);
    ADD_CASE(s, arg_destroy_once_when_task_never_runs, 30);
    return s;
}

int main(void)
{
    return run_suite(result_suite());
}
