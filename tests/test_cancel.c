/* SPDX-License-Identifier: MIT */
/*
 * test_cancel.c - cancellation points (nursery_cancelled, checkpoint, sleep),
 * how cancellation reaches tasks and bodies, and the time helpers.
 */
#include "helpers.h"

#include <string.h>

#define MS INT64_C(1000000)
#define SEC INT64_C(1000000000)

/* ---- outside any task -------------------------------------------------- */

START_TEST(cancelled_is_false_outside_tasks)
{
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);

    /* Also after a nursery that was cancelled has been joined: the body's
     * context ends with the join. */
    nursery_pool_t *pool = test_pool(1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

START_TEST(cancel_rejects_null)
{
    ck_assert_int_eq(nursery_cancel(NULL), EINVAL);
}
END_TEST

/* ---- level-triggered cancellation in a task ----------------------------- */

struct level_ctx {
    latch_t running;        /* the task has passed its first checkpoint */
    nursery_result_t *gate; /* never opened */
    int before;             /* checkpoint before cancellation */
    int gate_rc;            /* gate_wait once cancelled */
    int after[3];           /* checkpoints after */
    bool cancelled_after;   /* nursery_cancelled() after */
    int sleep_rc;           /* a sleep after cancellation */
    nursery_time_t sleep_took;
};

static int level_task(void *arg, void **value)
{
    (void)value;
    struct level_ctx *c = arg;
    c->before = nursery_checkpoint();
    task_expect(!nursery_cancelled());
    latch_count_down(&c->running);
    c->gate_rc = gate_wait(c->gate);
    for (int i = 0; i < 3; i++)
        c->after[i] = nursery_checkpoint();
    c->cancelled_after = nursery_cancelled();
    nursery_time_t t0 = nursery_now();
    c->sleep_rc = nursery_sleep(nursery_after_ms(TEST_HANG_MS));
    c->sleep_took = nursery_now() - t0;
    return ECANCELED;
}

START_TEST(cancellation_is_level_triggered)
{
    nursery_pool_t *pool = test_pool(2);
    struct level_ctx c = {.gate = gate_new()};
    latch_init(&c.running, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, level_task, &c, NULL), 0);
    ck_assert(latch_wait(&c.running));
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_cancel(n), 0); /* idempotent */
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_tasks_ok();

    ck_assert_int_eq(c.before, 0);
    ck_assert_int_eq(c.gate_rc, ECANCELED);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(c.after[i], ECANCELED);
    ck_assert(c.cancelled_after);
    ck_assert_int_eq(c.sleep_rc, ECANCELED);
    ck_assert_int_lt(c.sleep_took, 30 * SEC);
    ck_assert(!nursery_result_is_done(c.gate));
    nursery_result_release(c.gate);
    latch_destroy(&c.running);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

START_TEST(body_sees_its_own_cancellation)
{
    nursery_pool_t *pool = test_pool(1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert(nursery_cancelled());
        ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    }
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(TEST_HANG_MS)), ECANCELED);
    ck_assert_int_lt(nursery_now() - t0, 30 * SEC);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- sleep -------------------------------------------------------------- */

struct sleep_ctx {
    latch_t sleeping;
    int64_t ms; /* how long to sleep */
    int rc;
    nursery_time_t took;
};

static int sleeper(void *arg, void **value)
{
    (void)value;
    struct sleep_ctx *c = arg;
    latch_count_down(&c->sleeping);
    nursery_time_t t0 = nursery_now();
    c->rc = nursery_sleep(nursery_after_ms(c->ms));
    c->took = nursery_now() - t0;
    return c->rc;
}

START_TEST(sleep_waits_at_least_until_deadline)
{
    /* Outside any task. */
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(20)), 0);
    nursery_time_t took = nursery_now() - t0;
    ck_assert_int_ge(took, 20 * MS);
    ck_assert_int_lt(took, 30 * SEC);

    /* A deadline in the past only polls. */
    t0 = nursery_now();
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(-1)), 0);
    ck_assert_int_eq(nursery_sleep(0), 0);
    ck_assert_int_lt(nursery_now() - t0, 30 * SEC);

    /* In a task. */
    nursery_pool_t *pool = test_pool(1);
    struct sleep_ctx c = {.ms = 30};
    latch_init(&c.sleeping, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, sleeper, &c, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert_int_ge(c.took, 30 * MS);
    ck_assert_int_lt(c.took, 30 * SEC);
    latch_destroy(&c.sleeping);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

START_TEST(sleep_returns_promptly_when_cancelled)
{
    nursery_pool_t *pool = test_pool(2);
    struct sleep_ctx c = {.ms = 60000};
    latch_init(&c.sleeping, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, sleeper, &c, NULL), 0);
    ck_assert(latch_wait(&c.sleeping));
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_int_lt(nursery_now() - t0, 30 * SEC);
    ck_assert_int_eq(c.rc, ECANCELED);
    ck_assert_int_lt(c.took, 30 * SEC);
    /* Ended only cancelled: counted, not listed. */
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), errs ? 1 : 0);
    nursery_errors_free(errs);
    latch_destroy(&c.sleeping);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- how far cancellation reaches --------------------------------------- */

struct started_count {
    atomic_int ran;
    atomic_int destroyed;
};

static int count_run(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct started_count *)arg)->ran, 1);
    return 0;
}

static void count_destroy(void *arg)
{
    atomic_fetch_add(&((struct started_count *)arg)->destroyed, 1);
}

START_TEST(task_started_into_cancelled_nursery_never_runs)
{
    nursery_pool_t *pool = test_pool(2);
    struct started_count c = {0};
    nursery_task_options_t opts = {.arg_destroy = count_destroy};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_run, &c, &opts), 0);
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, count_run, &c, &opts, &r), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_int_eq(atomic_load(&c.ran), 0);
    ck_assert_int_eq(atomic_load(&c.destroyed), 11);
    /* Nothing failed: there may be no group; if there is, it counts them. */
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), errs ? 11 : 0);
    nursery_errors_free(errs);

    /* The capture is done with a cancellation. */
    ck_assert(nursery_result_is_done(r));
    void *v = NULL;
    ck_assert_int_eq(nursery_result_value(r, &v), NURSERY_EFAILED);
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_result_error(r, &err), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(nursery_error_code(err), ECANCELED);
    nursery_result_release(r);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* Eight nested bodies in one thread, each with a task waiting on a gate;
 * cancelling the outermost reaches every task and the innermost body. */
#define LEVELS 8

struct level_task_ctx {
    latch_t *waiting;
    nursery_result_t *gate;
    int rc;
};

static int wait_gate_task(void *arg, void **value)
{
    (void)value;
    struct level_task_ctx *c = arg;
    latch_count_down(c->waiting);
    c->rc = gate_wait(c->gate);
    return c->rc;
}

START_TEST(cancel_outer_reaches_nested_bodies_and_tasks)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    latch_t waiting;
    latch_init(&waiting, LEVELS);
    struct level_task_ctx ctx[LEVELS];
    nursery_t *n[LEVELS];
    for (int i = 0; i < LEVELS; i++) {
        ctx[i] = (struct level_task_ctx){.waiting = &waiting, .gate = gate, .rc = -1};
        ck_assert_int_eq(nursery_open(&n[i], pool), 0);
        ck_assert_int_eq(nursery_start_soon(n[i], wait_gate_task, &ctx[i], NULL), 0);
    }
    /* Every task is running (the pool adds threads as they block). */
    ck_assert(latch_wait(&waiting));
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_cancel(n[0]), 0);
    ck_assert(nursery_cancelled()); /* the innermost body */
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);

    /* Inner nurseries end with ECANCELED (an enclosing scope was
     * cancelled); the outermost, cancelled by hand, with 0. */
    for (int i = LEVELS - 1; i >= 1; i--)
        ck_assert_int_eq(nursery_join(n[i], NURSERY_FOREVER, NULL), ECANCELED);
    ck_assert_int_eq(nursery_join(n[0], NURSERY_FOREVER, NULL), 0);
    for (int i = 0; i < LEVELS; i++)
        ck_assert_int_eq(ctx[i].rc, ECANCELED);
    ck_assert(!nursery_cancelled());
    nursery_result_release(gate);
    latch_destroy(&waiting);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* nursery_cancel() from a plain thread that is no task. */
static void *cancel_from_thread(void *arg)
{
    return INT2PTR(nursery_cancel(arg));
}

START_TEST(cancel_from_foreign_thread_wakes_task)
{
    nursery_pool_t *pool = test_pool(1);
    nursery_result_t *gate = gate_new();
    latch_t waiting;
    latch_init(&waiting, 1);
    struct level_task_ctx c = {.waiting = &waiting, .gate = gate, .rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, wait_gate_task, &c, NULL), 0);
    ck_assert(latch_wait(&waiting));
    pthread_t t;
    void *rc = INT2PTR(-1);
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_from_thread, n), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq(PTR2INT(rc), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(c.rc, ECANCELED);
    nursery_result_release(gate);
    latch_destroy(&waiting);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* A nursery that was retained and joined is closed: cancelling it is
 * NURSERY_ECLOSED and reaches nobody (issue 6, item 1). */
START_TEST(cancel_of_joined_retained_nursery_is_eclosed)
{
    nursery_pool_t *pool = test_pool(1);

    /* Joined without having been cancelled. */
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_ptr_eq(nursery_retain(n), n);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_cancel(n), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_cancel(n), NURSERY_ECLOSED);
    ck_assert(!nursery_cancelled());
    nursery_release(n);

    /* Cancelled, then joined. */
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_ptr_eq(nursery_retain(n), n);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_cancel(n), NURSERY_ECLOSED);
    nursery_release(n);

    /* Joined inside a body that is still open: the enclosing body is not
     * cancelled through it. */
    nursery_t *outer = NULL;
    ck_assert_int_eq(nursery_open(&outer, pool), 0);
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_ptr_eq(nursery_retain(n), n);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_cancel(n), NURSERY_ECLOSED);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_join(outer, NURSERY_FOREVER, NULL), 0);
    nursery_release(n);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- one rule for every blocking call -------------------------------------
 * Argument errors first, then ECANCELED in a cancelled task or body, even
 * when the call could complete at once; then the rest (issue 6, item 12).
 * try_send and try_recv are no blocking calls: they still work. */

struct blocking_calls {
    latch_t running;
    nursery_result_t *never; /* a gate nobody opens */
    nursery_result_t *done;  /* a future already done */
    nursery_result_t *self;  /* the checking task's own capture */
    nursery_t *other;        /* an open nursery that is not cancelled */
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    struct started_count started; /* the task nursery_start would start */
};

static int check_blocking_calls_when_cancelled(void *arg, void **value)
{
    (void)value;
    struct blocking_calls *b = arg;
    latch_count_down(&b->running);
    task_expect_eq(gate_wait(b->never), ECANCELED);
    nursery_time_t hang = nursery_after_ms(TEST_HANG_MS);
    nursery_result_t *done[1] = {b->done};
    size_t idx = 77;

    /* Argument errors first. */
    task_expect_eq(nursery_result_wait(NULL, hang), EINVAL);
    task_expect_eq(nursery_result_wait(b->self, hang), EDEADLK);
    task_expect_eq(nursery_wait_any(done, 0, hang, &idx), EINVAL);
    task_expect_eq(nursery_wait_any(done, 1, hang, NULL), EINVAL);
    task_expect_eq(nursery_wait_all(NULL, 1, hang), EINVAL);
    task_expect_eq(nursery_channel_send(NULL, INT2PTR(1), hang), EINVAL);

    /* Then cancellation, though each of these could complete at once. */
    task_expect_eq(nursery_result_wait(b->done, hang), ECANCELED);
    task_expect_eq(nursery_result_wait(b->done, nursery_after_ms(-1)), ECANCELED);
    task_expect_eq(nursery_wait_any(done, 1, hang, &idx), ECANCELED);
    task_expect_eq(idx, 77);
    task_expect_eq(nursery_wait_all(done, 1, hang), ECANCELED);
    task_expect_eq(nursery_wait_all(done, 0, hang), ECANCELED);
    task_expect_eq(nursery_sleep(nursery_after_ms(-1)), ECANCELED);
    task_expect_eq(nursery_channel_send(b->tx, INT2PTR(1), hang), ECANCELED);
    task_expect_eq(nursery_results_to_channel(done, 1, b->tx, false), ECANCELED);
    nursery_task_options_t opts = {.arg_destroy = count_destroy};
    task_expect_eq(nursery_start(b->other, count_run, &b->started, &opts, hang, NULL, NULL),
                   ECANCELED);

    /* try_send and try_recv still work; recv with an item waiting does
     * not. */
    task_expect_eq(nursery_channel_try_send(b->tx, INT2PTR(2)), 0);
    void *item = NULL;
    task_expect_eq(nursery_channel_recv(b->rx, &item, hang), ECANCELED);
    task_expect_eq(nursery_channel_try_recv(b->rx, &item), 0);
    task_expect_eq(PTR2INT(item), 2);
    return ECANCELED;
}

START_TEST(blocking_calls_in_cancelled_task_are_ecanceled_even_when_ready)
{
    nursery_pool_t *pool = test_pool(2);
    struct blocking_calls b = {.never = gate_new(), .done = gate_new()};
    latch_init(&b.running, 1);
    gate_open(b.done);
    ck_assert_int_eq(nursery_channel_create(4, NULL, &b.tx, &b.rx), 0);
    ck_assert_int_eq(nursery_open(&b.other, pool), 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(
        nursery_capture_start_soon(n, check_blocking_calls_when_cancelled, &b, NULL, &b.self), 0);
    ck_assert(latch_wait(&b.running));
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_tasks_ok();

    /* The start never ran its task, and destroyed its argument. */
    ck_assert_int_eq(nursery_join(b.other, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&b.started.ran), 0);
    ck_assert_int_eq(atomic_load(&b.started.destroyed), 1);
    /* Nothing was sent by the calls that were cancelled. */
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(b.rx, &item), EAGAIN);

    nursery_result_release(b.self);
    nursery_sender_free(b.tx);
    nursery_receiver_free(b.rx);
    nursery_result_release(b.never);
    nursery_result_release(b.done);
    latch_destroy(&b.running);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* The same in a body, where nursery_sleep already follows the rule. */
START_TEST(waits_in_cancelled_body_are_ecanceled_even_when_ready)
{
    nursery_pool_t *pool = test_pool(1);
    nursery_result_t *done[1] = {gate_new()};
    gate_open(done[0]);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_time_t hang = nursery_after_ms(TEST_HANG_MS);
    size_t idx = 77;
    ck_assert_int_eq(nursery_wait_any(done, 0, hang, &idx), EINVAL);
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(-1)), ECANCELED);
    ck_assert_int_eq(nursery_result_wait(done[0], hang), ECANCELED);
    ck_assert_int_eq(nursery_wait_any(done, 1, hang, &idx), ECANCELED);
    ck_assert_uint_eq(idx, 77);
    ck_assert_int_eq(nursery_wait_all(done, 1, hang), ECANCELED);
    ck_assert_int_eq(nursery_wait_all(done, 0, hang), ECANCELED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* Outside any nursery again: the waits complete. */
    ck_assert_int_eq(nursery_result_wait(done[0], hang), 0);
    ck_assert_int_eq(nursery_wait_any(done, 1, hang, &idx), 0);
    ck_assert_uint_eq(idx, 0);
    ck_assert_int_eq(nursery_wait_all(done, 1, hang), 0);
    nursery_result_release(done[0]);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- deep trees ---------------------------------------------------------
 * Cancelling and failing walk the cancel tree with constant stack (issue 6,
 * item 4): a thread with a small stack opens thousands of nested nurseries,
 * the innermost with a task that waits for cancellation, then the
 * outermost is cancelled or fails.  Every join is checked. */

enum deep_end {
    DEEP_CANCEL, /* the opener cancels the outermost with nursery_cancel */
    DEEP_FAIL,   /* a task fails in the innermost, then one in the outermost */
};

struct deep {
    nursery_pool_t *pool;
    int depth;
    enum deep_end end;
    nursery_t **n;    /* depth nurseries, outermost first */
    int *join_rc;     /* what each join returned, -1 until joined */
    int opened;       /* how many opened (depth unless an open failed) */
    int open_rc;      /* the failing open's code, or 0 */
    int cancel_rc;    /* DEEP_CANCEL: nursery_cancel's code */
    int sleeper_rc;   /* the innermost task's sleep, -1 until it returns */
    latch_t sleeping; /* the innermost task is running */
    /* DEEP_FAIL: counted down by the failing tasks' arg_destroy, which runs
     * once the failure has cancelled its nursery. */
    latch_t failed_inner, failed_outer;
};

static void deep_init(struct deep *d, nursery_pool_t *pool, int depth, enum deep_end end)
{
    memset(d, 0, sizeof(*d));
    d->pool = pool;
    d->depth = depth;
    d->end = end;
    d->n = calloc((size_t)depth, sizeof(*d->n));
    d->join_rc = malloc((size_t)depth * sizeof(*d->join_rc));
    ck_assert_ptr_nonnull(d->n);
    ck_assert_ptr_nonnull(d->join_rc);
    for (int i = 0; i < depth; i++)
        d->join_rc[i] = -1;
    d->sleeper_rc = -1;
    d->cancel_rc = -1;
    latch_init(&d->sleeping, 1);
    latch_init(&d->failed_inner, 1);
    latch_init(&d->failed_outer, 1);
}

static void deep_fini(struct deep *d)
{
    latch_destroy(&d->sleeping);
    latch_destroy(&d->failed_inner);
    latch_destroy(&d->failed_outer);
    free(d->n);
    free(d->join_rc);
}

static int deep_sleeper(void *arg, void **value)
{
    (void)value;
    struct deep *d = arg;
    latch_count_down(&d->sleeping);
    d->sleeper_rc = nursery_sleep(NURSERY_FOREVER);
    return d->sleeper_rc;
}

static int deep_fail(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "deep failure");
}

static void deep_failed(void *arg)
{
    latch_count_down(arg);
}

/* The opener: runs in a task on a pool with small stacks, or in a thread
 * with a small stack.  Everything it finds is recorded in d; the test
 * thread asserts. */
static void deep_run(struct deep *d)
{
    for (d->opened = 0; d->opened < d->depth; d->opened++) {
        d->open_rc = nursery_open(&d->n[d->opened], d->pool);
        if (d->open_rc)
            break;
    }
    if (d->opened == d->depth) {
        nursery_t *innermost = d->n[d->depth - 1];
        task_expect_eq(nursery_start_soon(innermost, deep_sleeper, d, NULL), 0);
        /* Running, so that the cancellation has a thread to wake at the
         * bottom (a queued task would just never run). */
        task_expect(latch_wait(&d->sleeping));
        if (d->end == DEEP_CANCEL) {
            d->cancel_rc = nursery_cancel(d->n[0]);
        } else {
            /* The inner failure first (it cancels only the innermost),
             * then the outer one, whose cancellation walks the whole
             * chain on the thread of the failing task. */
            nursery_task_options_t inner = {.arg_destroy = deep_failed};
            task_expect_eq(nursery_start_soon(innermost, deep_fail, &d->failed_inner, &inner), 0);
            task_expect(latch_wait(&d->failed_inner));
            nursery_task_options_t outer = {.arg_destroy = deep_failed};
            task_expect_eq(nursery_start_soon(d->n[0], deep_fail, &d->failed_outer, &outer), 0);
            task_expect(latch_wait(&d->failed_outer));
        }
    }
    for (int i = d->opened - 1; i >= 0; i--)
        d->join_rc[i] = nursery_join(d->n[i], NURSERY_FOREVER, NULL);
}

static int deep_task(void *arg, void **value)
{
    (void)value;
    deep_run(arg);
    return 0;
}

static void *deep_thread(void *arg)
{
    deep_run(arg);
    return NULL;
}

/* What the joins must have returned. */
static void deep_check(const struct deep *d)
{
    ck_assert_tasks_ok();
    ck_assert_int_eq(d->open_rc, 0);
    ck_assert_int_eq(d->opened, d->depth);
    ck_assert_int_eq(d->sleeper_rc, ECANCELED);
    int last = d->depth - 1;
    if (d->end == DEEP_CANCEL) {
        ck_assert_int_eq(d->cancel_rc, 0);
        /* Cancelled with nursery_cancel: not an error. */
        ck_assert_int_eq(d->join_rc[0], 0);
    } else {
        ck_assert_int_eq(d->join_rc[0], NURSERY_EFAILED);
        ck_assert_int_eq(d->join_rc[last], NURSERY_EFAILED);
        last--;
    }
    /* Inside a cancelled scope, nothing failed in them. */
    for (int i = 1; i <= last; i++)
        ck_assert_msg(d->join_rc[i] == ECANCELED, "join of level %d of %d returned %d", i, d->depth,
                      d->join_rc[i]);
}

#define DEEP_ON_TASK 4000
#define DEEP_ON_THREAD 40000

/* A pool whose workers have 64 KiB stacks, and room for the opener, the
 * innermost task and the failing tasks. */
static nursery_pool_t *small_stack_pool(void)
{
    nursery_pool_options_t o = {.threads = 3, .stack_size = 65536};
    nursery_pool_t *p = NULL;
    ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
    return p;
}

static void deep_on_small_stack_task(enum deep_end end)
{
    nursery_pool_t *pool = small_stack_pool();
    struct deep d;
    deep_init(&d, pool, DEEP_ON_TASK, end);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, deep_task, &d, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    deep_check(&d);
    deep_fini(&d);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}

START_TEST(cancel_of_4000_nested_nurseries_runs_on_a_64k_stack)
{
    deep_on_small_stack_task(DEEP_CANCEL);
}
END_TEST

START_TEST(failure_in_4000_nested_nurseries_runs_on_a_64k_stack)
{
    deep_on_small_stack_task(DEEP_FAIL);
}
END_TEST

START_TEST(cancel_of_40000_nested_nurseries_runs_on_a_1m_stack)
{
    nursery_pool_t *pool = test_pool(2);
    struct deep d;
    deep_init(&d, pool, DEEP_ON_THREAD, DEEP_CANCEL);
    pthread_attr_t attr;
    ck_assert_int_eq(pthread_attr_init(&attr), 0);
    ck_assert_int_eq(pthread_attr_setstacksize(&attr, (size_t)1 << 20), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, &attr, deep_thread, &d), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    pthread_attr_destroy(&attr);
    deep_check(&d);
    deep_fini(&d);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- cancellation of code that never waits ------------------------------- */

/* Nothing here parks: no node is attached by a wait, so what carries the
 * cancellation down is the check itself (cancel.c's epoch). */
struct polling {
    nursery_pool_t *pool;
    int depth;            /* nurseries the nesting task opens, one in the other */
    latch_t polling;      /* the innermost task is polling */
    int open_rc, join_rc; /* of every open and join (the last one that differs) */
    int seen;             /* 1: the innermost task saw the cancellation */
    int started_inside;   /* 1: a task started after that ran */
};

/* Polls with nursery_cancelled() and nursery_checkpoint() only: no wait. */
static int poll_cancelled_task(void *arg, void **value)
{
    (void)value;
    struct polling *p = arg;
    latch_count_down(&p->polling);
    nursery_time_t give_up = nursery_after_ms(TEST_HANG_MS);
    while (!nursery_cancelled() && nursery_now() < give_up)
        ;
    p->seen = nursery_cancelled() && nursery_checkpoint() == ECANCELED;
    return 0;
}

static int mark_started_task(void *arg, void **value)
{
    (void)value;
    ((struct polling *)arg)->started_inside = 1;
    return 0;
}

static int nest_task(void *arg, void **value)
{
    (void)value;
    struct polling *p = arg;
    nursery_t **n = calloc((size_t)p->depth, sizeof(*n));
    task_expect(n != NULL);
    if (!n)
        return ENOMEM;
    for (int i = 0; i < p->depth; i++)
        if ((p->open_rc = nursery_open(&n[i], p->pool)) != 0)
            break;
    if (p->open_rc == 0) {
        task_expect_eq(nursery_start_soon(n[p->depth - 1], poll_cancelled_task, p, NULL), 0);
        /* A nursery opened once the cancellation is seen is cancelled at
         * once, and so is a task started in it. */
        while (!nursery_cancelled())
            ;
        nursery_t *late = NULL;
        task_expect_eq(nursery_open(&late, p->pool), 0);
        task_expect(nursery_cancelled());
        task_expect_eq(nursery_start_soon(late, mark_started_task, p, NULL), 0);
        task_expect_eq(nursery_join(late, NURSERY_FOREVER, NULL), ECANCELED);
        for (int i = p->depth - 1; i >= 0; i--) {
            int rc = nursery_join(n[i], NURSERY_FOREVER, NULL);
            if (rc != ECANCELED)
                p->join_rc = rc;
        }
    }
    free(n);
    return 0;
}

static void cancel_reaches_polling_tasks(int depth)
{
    struct polling p = {.pool = test_pool(2), .depth = depth, .join_rc = ECANCELED};
    latch_init(&p.polling, 1);
    nursery_t *outer = NULL;
    ck_assert_int_eq(nursery_open(&outer, p.pool), 0);
    ck_assert_int_eq(nursery_start_soon(outer, nest_task, &p, NULL), 0);
    ck_assert(latch_wait(&p.polling));
    ck_assert_int_eq(nursery_cancel(outer), 0);
    ck_assert_int_eq(nursery_join(outer, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(p.open_rc, 0);
    ck_assert_int_eq(p.join_rc, ECANCELED);
    ck_assert_int_eq(p.seen, 1);
    ck_assert_int_eq(p.started_inside, 0);
    latch_destroy(&p.polling);
    ck_assert_int_eq(nursery_pool_destroy(p.pool), 0);
}

START_TEST(cancel_reaches_polling_task_under_nested_nurseries)
{
    cancel_reaches_polling_tasks(4);
}
END_TEST

/* Deeper than the library lets a way up stay unattached. */
START_TEST(cancel_reaches_polling_task_under_300_nested_nurseries)
{
    cancel_reaches_polling_tasks(300);
}
END_TEST

/* A task opens and joins nurseries in a loop while the test cancels the
 * outer one: every check made after nursery_cancel() returned, in a
 * nursery opened before or after, must see it. */
struct open_race {
    nursery_pool_t *pool;
    latch_t running;
    atomic_bool cancel_returned;
    int checks_after; /* checks made after the cancel returned */
    int missed;       /* of which said "not cancelled" */
};

static int open_loop_task(void *arg, void **value)
{
    (void)value;
    struct open_race *r = arg;
    latch_count_down(&r->running);
    nursery_time_t give_up = nursery_after_ms(TEST_HANG_MS);
    while (r->checks_after < 100 && nursery_now() < give_up) {
        bool after = atomic_load_explicit(&r->cancel_returned, memory_order_acquire);
        nursery_t *n = NULL;
        if (nursery_open(&n, r->pool) != 0)
            break;
        bool seen = nursery_cancelled();
        bool after_open = atomic_load_explicit(&r->cancel_returned, memory_order_acquire);
        bool seen_late = nursery_cancelled();
        nursery_join(n, NURSERY_FOREVER, NULL);
        if (after) {
            r->checks_after++;
            r->missed += !seen;
        }
        if (after_open) {
            r->checks_after++;
            r->missed += !seen_late;
        }
    }
    return 0;
}

START_TEST(cancel_racing_nested_opens_is_never_missed)
{
    for (int round = 0; round < 50; round++) {
        struct open_race r = {.pool = test_pool(2)};
        latch_init(&r.running, 1);
        atomic_init(&r.cancel_returned, false);
        nursery_t *outer = NULL;
        ck_assert_int_eq(nursery_open(&outer, r.pool), 0);
        ck_assert_int_eq(nursery_start_soon(outer, open_loop_task, &r, NULL), 0);
        ck_assert(latch_wait(&r.running));
        ck_assert_int_eq(nursery_cancel(outer), 0);
        atomic_store_explicit(&r.cancel_returned, true, memory_order_release);
        ck_assert_int_eq(nursery_join(outer, NURSERY_FOREVER, NULL), 0);
        ck_assert_int_ge(r.checks_after, 100);
        ck_assert_int_eq(r.missed, 0);
        latch_destroy(&r.running);
        ck_assert_int_eq(nursery_pool_destroy(r.pool), 0);
    }
}
END_TEST

/* ---- time --------------------------------------------------------------- */

static nursery_time_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (nursery_time_t)ts.tv_sec * SEC + ts.tv_nsec;
}

START_TEST(now_is_monotonic_clock)
{
    nursery_time_t before = mono_ns();
    nursery_time_t now = nursery_now();
    nursery_time_t after = mono_ns();
    ck_assert_int_le(before, now);
    ck_assert_int_le(now, after);
    nursery_time_t prev = nursery_now();
    for (int i = 0; i < 1000; i++) {
        nursery_time_t t = nursery_now();
        ck_assert_int_ge(t, prev);
        prev = t;
    }
}
END_TEST

START_TEST(after_builds_relative_deadlines)
{
    nursery_time_t t0 = nursery_now();
    nursery_time_t d = nursery_after_ms(10);
    nursery_time_t t1 = nursery_now();
    ck_assert_int_ge(d, t0 + 10 * MS);
    ck_assert_int_le(d, t1 + 10 * MS);

    t0 = nursery_now();
    d = nursery_after_ns(12345);
    t1 = nursery_now();
    ck_assert_int_ge(d, t0 + 12345);
    ck_assert_int_le(d, t1 + 12345);

    /* Zero or negative: already passed. */
    ck_assert_int_le(nursery_after_ms(0), nursery_now());
    ck_assert_int_lt(nursery_after_ms(-1), nursery_now());
    ck_assert_int_lt(nursery_after_ns(-5), nursery_now());
    ck_assert_int_lt(nursery_after_ms(INT64_MIN), nursery_now());
    ck_assert_int_lt(nursery_after_ns(INT64_MIN), nursery_now());
}
END_TEST

START_TEST(after_saturates_at_forever)
{
    ck_assert_int_eq(nursery_after_ns(INT64_MAX), NURSERY_FOREVER);
    ck_assert_int_eq(nursery_after_ms(INT64_MAX), NURSERY_FOREVER);
    /* ms * 1e6 would overflow int64 */
    ck_assert_int_eq(nursery_after_ms(INT64_MAX / 1000), NURSERY_FOREVER);
    ck_assert_int_eq(nursery_after_ms(INT64_MAX / 1000000 + 1), NURSERY_FOREVER);
    /* now + ns would overflow */
    ck_assert_int_eq(nursery_after_ns(INT64_MAX - 1), NURSERY_FOREVER);
    /* A large but representable amount is not forever. */
    nursery_time_t d = nursery_after_ms(INT64_C(1000) * 3600 * 24 * 365);
    ck_assert_int_lt(d, NURSERY_FOREVER);
    ck_assert_int_gt(d, nursery_now());
}
END_TEST

static Suite *cancel_suite(void)
{
    Suite *s = suite_create("cancel");
    TCase *tc = tcase_with_timeout(s, "points", 60);
    tcase_add_test(tc, cancelled_is_false_outside_tasks);
    tcase_add_test(tc, cancel_rejects_null);
    tcase_add_test(tc, cancellation_is_level_triggered);
    tcase_add_test(tc, body_sees_its_own_cancellation);

    tc = tcase_with_timeout(s, "sleep", 60);
    tcase_add_test(tc, sleep_waits_at_least_until_deadline);
    tcase_add_test(tc, sleep_returns_promptly_when_cancelled);

    tc = tcase_with_timeout(s, "rule", 60);
    tcase_add_test(tc, blocking_calls_in_cancelled_task_are_ecanceled_even_when_ready);
    tcase_add_test(tc, waits_in_cancelled_body_are_ecanceled_even_when_ready);

    tc = tcase_with_timeout(s, "reach", 60);
    tcase_add_test(tc, task_started_into_cancelled_nursery_never_runs);
    tcase_add_test(tc, cancel_outer_reaches_nested_bodies_and_tasks);
    tcase_add_test(tc, cancel_from_foreign_thread_wakes_task);
    tcase_add_test(tc, cancel_of_joined_retained_nursery_is_eclosed);
    tcase_add_test(tc, cancel_reaches_polling_task_under_nested_nurseries);
    tcase_add_test(tc, cancel_reaches_polling_task_under_300_nested_nurseries);
    tcase_add_test(tc, cancel_racing_nested_opens_is_never_missed);

    tc = tcase_with_timeout(s, "deep", 60);
    tcase_add_test(tc, cancel_of_4000_nested_nurseries_runs_on_a_64k_stack);
    tcase_add_test(tc, failure_in_4000_nested_nurseries_runs_on_a_64k_stack);
    tcase_add_test(tc, cancel_of_40000_nested_nurseries_runs_on_a_1m_stack);

    tc = tcase_with_timeout(s, "time", 60);
    tcase_add_test(tc, now_is_monotonic_clock);
    tcase_add_test(tc, after_builds_relative_deadlines);
    tcase_add_test(tc, after_saturates_at_forever);
    return s;
}

int main(void)
{
    return run_suite(cancel_suite());
}
