/* SPDX-License-Identifier: MIT */
/*
 * test_scope.c - tests of src/scope.c: cancel scopes (Trio's CancelScope,
 * move_on_after, fail_after, shield), their deadlines reaching every kind
 * of library wait, nursery_open_until() and nursery_run_until(),
 * nursery_current_deadline(), and cancel hooks.
 *
 * Where the header is silent the semantics are Trio's.  Nothing is ordered
 * by sleeping: where a deadline is the subject, it is short (SHORT_MS) and
 * only generous bounds are asserted (the wait ends, and not before the
 * deadline).  A few tests wait for a state that nothing signals (a scope's
 * deadline having fired, a sender being blocked) by polling it.
 */
#include "helpers.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define MS INT64_C(1000000)
#define SEC INT64_C(1000000000)
#define HANG nursery_after_ms(TEST_HANG_MS)

/* The deadline of the tests whose subject it is: short, so the suite is
 * quick; nothing assumes it has not passed yet when the wait starts. */
#define SHORT_MS 50
/* How late a deadline may end a wait and still pass (sanitizers, valgrind,
 * a loaded machine). */
#define LATE_NS (10 * SEC)

#define CALLED NURSERY_SCOPE_CANCEL_CALLED
#define PASSED NURSERY_SCOPE_DEADLINE_PASSED
#define CAUGHT NURSERY_SCOPE_CANCELLED_CAUGHT
#define ALL_BITS (CALLED | PASSED | CAUGHT)

/* An outcome value no close may leave behind. */
#define NO_OUTCOME 0xdeadu

static nursery_pool_t *pool;

static void setup(void)
{
    pool = test_pool(4);
}

static void teardown(void)
{
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}

/* ---- helpers ----------------------------------------------------------- */

/* Round counts of the races, scaled down where the suite runs slowly
 * (CK_TIMEOUT_MULTIPLIER > 1: the sanitizer and valgrind stages of CI). */
static int scaled(int rounds)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    double f = m ? strtod(m, NULL) : 1.0;
    if (f > 1.0)
        rounds = (int)(rounds / f);
    return rounds < 50 ? 50 : rounds;
}

static nursery_scope_t *open_scope(nursery_time_t deadline, unsigned flags)
{
    nursery_scope_t *s = NULL;
    ck_assert_int_eq(nursery_scope_open(&s, deadline, flags), 0);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* Closes s, which must succeed, and returns the outcome. */
static unsigned close_scope(nursery_scope_t *s)
{
    unsigned outcome = NO_OUTCOME;
    ck_assert_int_eq(nursery_scope_close(s, &outcome), 0);
    ck_assert_uint_ne(outcome, NO_OUTCOME);
    return outcome;
}

static bool cancel_called(const void *s)
{
    return nursery_scope_cancel_called(s);
}

/* Waits (not cancellably) until the scope's deadline has cancelled it.
 * False after TEST_HANG_MS. */
static bool wait_cancel_called(const nursery_scope_t *s)
{
    return poll_until(cancel_called, s);
}

struct senders {
    const nursery_receiver_t *rx;
    size_t count;
};

static bool senders_blocked(const void *ctx)
{
    const struct senders *w = ctx;
    nursery_channel_stats_t st;
    return nursery_receiver_stats(w->rx, &st) == 0 && st.waiting_senders == w->count;
}

/* Waits until `senders` threads are blocked in send on rx's channel. */
static bool wait_senders(const nursery_receiver_t *rx, size_t senders)
{
    return poll_until(senders_blocked, &(struct senders){rx, senders});
}

static void hook_count(void *arg);

static int fail_task(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "failing on purpose");
}

/* ---- a deadline passing while blocked in each kind of wait ------------- */

struct blocked {
    struct gated g;         /* for the calls that start a task */
    nursery_sender_t *tx;   /* a channel of capacity 1 */
    nursery_receiver_t *rx;
    nursery_t *target;      /* nursery_start's target, opened outside the scope */
    nursery_result_t *done; /* nursery_start's capture of its task */
    nursery_errors_t *errs; /* what the join returned */
};

static int call_sleep(struct blocked *b)
{
    (void)b;
    return nursery_sleep(HANG);
}

static int call_result_wait(struct blocked *b)
{
    return nursery_result_wait(b->g.gate, HANG);
}

static int call_send_on_full_channel(struct blocked *b)
{
    return nursery_channel_send(b->tx, INT2PTR(2), HANG);
}

static int call_recv_on_empty_channel(struct blocked *b)
{
    void *item = INT2PTR(77);
    int rc = nursery_channel_recv(b->rx, &item, HANG);
    ck_assert_int_eq(PTR2INT(item), 77); /* unchanged on failure */
    return rc;
}

static int call_join(struct blocked *b)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &b->g, NULL), 0);
    return nursery_join(n, NURSERY_FOREVER, &b->errs);
}

static int call_start(struct blocked *b)
{
    void *v = INT2PTR(5);
    int rc = nursery_start(b->target, gated_task, &b->g, NULL, HANG, &v, &b->done);
    ck_assert_ptr_eq(v, INT2PTR(5));
    return rc;
}

/* Runs call(b) in a scope whose deadline is SHORT_MS away: it fails with
 * ECANCELED, not before the deadline, and the scope reports all three
 * bits; close returns close_rc. */
static void expect_deadline_cancels(int (*call)(struct blocked *), struct blocked *b,
                                    unsigned flags, int close_rc)
{
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_scope_t *s = open_scope(d, flags);
    ck_assert_int_eq(nursery_scope_deadline(s), d);
    ck_assert_int_eq(nursery_current_deadline(), d);
    int rc = call(b);
    nursery_time_t end = nursery_now();
    ck_assert_int_eq(rc, ECANCELED);
    ck_assert_int_ge(end, d);
    ck_assert_int_lt(end - d, LATE_NS);
    ck_assert(nursery_scope_cancel_called(s));
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    unsigned outcome = NO_OUTCOME;
    ck_assert_int_eq(nursery_scope_close(s, &outcome), close_rc);
    ck_assert_uint_eq(outcome, ALL_BITS);
    /* Outside the scope the code is uncancelled again. */
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
}

static void blocked_init(struct blocked *b)
{
    memset(b, 0, sizeof(*b));
    gated_init(&b->g, 1);
    ck_assert_int_eq(nursery_channel_create(1, NULL, &b->tx, &b->rx), 0);
}

static void blocked_fini(struct blocked *b)
{
    nursery_sender_free(b->tx);
    nursery_receiver_free(b->rx);
    gated_fini(&b->g);
}

START_TEST(deadline_cancels_sleep)
{
    struct blocked b;
    blocked_init(&b);
    expect_deadline_cancels(call_sleep, &b, 0, 0);
    blocked_fini(&b);
}
END_TEST

START_TEST(deadline_cancels_result_wait_on_unset_future)
{
    struct blocked b;
    blocked_init(&b);
    expect_deadline_cancels(call_result_wait, &b, 0, 0);
    ck_assert(!nursery_result_is_done(b.g.gate)); /* the awaited future is untouched */
    blocked_fini(&b);
}
END_TEST

START_TEST(deadline_cancels_send_on_full_channel)
{
    struct blocked b;
    blocked_init(&b);
    ck_assert_int_eq(nursery_channel_try_send(b.tx, INT2PTR(1)), 0);
    expect_deadline_cancels(call_send_on_full_channel, &b, 0, 0);
    /* The item was not delivered. */
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(b.rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 1);
    ck_assert_int_eq(nursery_channel_try_recv(b.rx, &item), EAGAIN);
    blocked_fini(&b);
}
END_TEST

START_TEST(deadline_cancels_recv_on_empty_channel)
{
    struct blocked b;
    blocked_init(&b);
    expect_deadline_cancels(call_recv_on_empty_channel, &b, 0, 0);
    /* The channel still works. */
    ck_assert_int_eq(nursery_channel_send(b.tx, INT2PTR(3), HANG), 0);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(b.rx, &item, HANG), 0);
    ck_assert_int_eq(PTR2INT(item), 3);
    blocked_fini(&b);
}
END_TEST

START_TEST(deadline_cancels_join_of_nursery_waiting_on_gate)
{
    struct blocked b;
    blocked_init(&b);
    expect_deadline_cancels(call_join, &b, 0, 0);
    /* The task ended cancelled (running, or before it ran): counted, not
     * listed. */
    int rc = atomic_load(&b.g.rc);
    ck_assert_msg(rc == ECANCELED || rc == -1, "gate_wait returned %d", rc);
    ck_assert_ptr_nonnull(b.errs);
    ck_assert_uint_eq(nursery_errors_count(b.errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(b.errs), 1);
    nursery_errors_free(b.errs);
    blocked_fini(&b);
}
END_TEST

START_TEST(deadline_cancels_start_waiting_for_started)
{
    struct blocked b;
    blocked_init(&b);
    ck_assert_int_eq(nursery_open(&b.target, pool), 0);
    expect_deadline_cancels(call_start, &b, 0, 0);
    int rc = atomic_load(&b.g.rc);
    ck_assert_msg(rc == ECANCELED || rc == -1, "gate_wait returned %d", rc);
    /* start waited until its task ended: it is done with a cancellation. */
    ck_assert_ptr_nonnull(b.done);
    assert_failed(b.done, ECANCELED);
    nursery_result_release(b.done);
    /* The target was neither failed nor cancelled by it. */
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(b.target, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    blocked_fini(&b);
}
END_TEST

/* The same inside a task: its scope catches the cancellation, so the task
 * goes on uncancelled and its nursery is not cancelled. */
struct task_deadline {
    nursery_time_t deadline;
    int sleep_rc;
    nursery_time_t end;
    unsigned outcome;
    int after_rc; /* a checkpoint after the scope */
};

static int sleep_in_scope_task(void *arg, void **value)
{
    (void)value;
    struct task_deadline *t = arg;
    nursery_scope_t *s = NULL;
    t->deadline = nursery_after_ms(SHORT_MS);
    task_expect_eq(nursery_scope_open(&s, t->deadline, 0), 0);
    task_expect_eq(nursery_current_deadline(), t->deadline);
    t->sleep_rc = nursery_sleep(HANG);
    t->end = nursery_now();
    t->outcome = NO_OUTCOME;
    task_expect_eq(nursery_scope_close(s, &t->outcome), 0);
    t->after_rc = nursery_checkpoint();
    task_expect(!nursery_cancelled());
    return 0;
}

START_TEST(deadline_cancels_sleep_in_task)
{
    struct task_deadline t = {0};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, sleep_in_scope_task, &t, NULL), 0);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    ck_assert_int_eq(t.sleep_rc, ECANCELED);
    ck_assert_int_ge(t.end, t.deadline);
    ck_assert_int_lt(t.end - t.deadline, LATE_NS);
    ck_assert_uint_eq(t.outcome, ALL_BITS);
    ck_assert_int_eq(t.after_rc, 0);
}
END_TEST

/* ---- fail_after: NURSERY_SCOPE_FAIL_ON_DEADLINE ------------------------- */

START_TEST(fail_on_deadline_close_is_etimedout)
{
    struct blocked b;
    blocked_init(&b);
    /* Closed all the same: seen through a reference kept across the close. */
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_scope_t *s = open_scope(d, NURSERY_SCOPE_FAIL_ON_DEADLINE);
    ck_assert_ptr_eq(nursery_scope_retain(s), s);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert_int_ge(nursery_now(), d);
    unsigned outcome = NO_OUTCOME;
    ck_assert_int_eq(nursery_scope_close(s, &outcome), ETIMEDOUT);
    ck_assert_uint_eq(outcome, ALL_BITS);
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_scope_close(s, &outcome), EINVAL);
    ck_assert_uint_eq(outcome, 0);
    nursery_scope_release(s);

    /* And through the shared check, with another kind of wait. */
    expect_deadline_cancels(call_recv_on_empty_channel, &b, NURSERY_SCOPE_FAIL_ON_DEADLINE,
                            ETIMEDOUT);
    blocked_fini(&b);
}
END_TEST

START_TEST(fail_on_deadline_cancelled_by_hand_close_is_0)
{
    nursery_scope_t *s = open_scope(HANG, NURSERY_SCOPE_FAIL_ON_DEADLINE);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    unsigned outcome = close_scope(s);
    ck_assert_uint_eq(outcome, CALLED | CAUGHT);
    ck_assert_int_eq(nursery_checkpoint(), 0);
}
END_TEST

/* Its deadline passed, but no cancellation point saw it: nothing was
 * caught, so nothing timed out. */
START_TEST(fail_on_deadline_not_caught_close_is_0)
{
    nursery_scope_t *s = open_scope(nursery_after_ms(SHORT_MS), NURSERY_SCOPE_FAIL_ON_DEADLINE);
    ck_assert(wait_cancel_called(s));
    unsigned outcome = close_scope(s);
    ck_assert_uint_eq(outcome, CALLED | PASSED);
}
END_TEST

/* ---- which scope catches ----------------------------------------------- */

/* Trio's rule: the outermost cancelled scope catches. */
START_TEST(outer_cancelled_after_inner_catches_instead)
{
    nursery_scope_t *outer = open_scope(NURSERY_FOREVER, 0);
    nursery_scope_t *inner = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(inner), 0);
    ck_assert_int_eq(nursery_scope_cancel(outer), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(inner), CALLED);
    /* Still cancelled by the outer scope. */
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(outer), CALLED | CAUGHT);
    ck_assert_int_eq(nursery_checkpoint(), 0);
}
END_TEST

/* The outermost cancelled scope catches, also two levels up, and also
 * when it was cancelled before the scopes in between were opened; a shield
 * in between hides it. */
START_TEST(outer_cancelled_two_levels_up_catches_instead)
{
    nursery_scope_t *s0 = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s0), 0);
    nursery_scope_t *s1 = open_scope(NURSERY_FOREVER, 0);
    nursery_scope_t *s2 = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s2), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(s2), CALLED);
    ck_assert_uint_eq(close_scope(s1), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(s0), CALLED | CAUGHT);
    ck_assert_int_eq(nursery_checkpoint(), 0);

    /* A shield in between: s2 catches, s0 has seen nothing. */
    s0 = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s0), 0);
    s1 = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    s2 = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_scope_cancel(s2), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(s2), CALLED | CAUGHT);
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_uint_eq(close_scope(s1), 0);
    ck_assert_uint_eq(close_scope(s0), CALLED);

}
END_TEST

/* A hook in a scope of a task runs once, although the scope is cancelled
 * twice over: by hand, then by its deadline while the hook is still
 * registered. */
START_TEST(hook_runs_once_when_cancelled_then_deadline_passes)
{
    atomic_int calls = 0;
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_scope_t *s = open_scope(d, 0);
    nursery_cancel_hook_t *h = NULL;
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(atomic_load(&calls), 1);
    /* A later deadline of a scope inside tells when the deadline thread
     * has gone past s's (it fires deadlines in order). */
    nursery_scope_t *later = open_scope(d + MS, 0);
    ck_assert(wait_cancel_called(later));
    ck_assert_uint_eq(close_scope(later), CALLED | PASSED);
    bool ran = false;
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(ran);
    ck_assert_int_eq(atomic_load(&calls), 1);
    unsigned outcome = close_scope(s);
    ck_assert_uint_eq(outcome & CALLED, CALLED);
    if (!(outcome & PASSED))
        printf("hook_runs_once_when_cancelled_then_deadline_passes: s's deadline had not fired "
               "by its close: the second cancellation was not exercised\n");
}
END_TEST

START_TEST(inner_cancelled_alone_catches)
{
    nursery_scope_t *outer = open_scope(NURSERY_FOREVER, 0);
    nursery_scope_t *inner = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(inner), 0);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert(!nursery_scope_cancel_called(outer));
    ck_assert_uint_eq(close_scope(inner), CALLED | CAUGHT);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_uint_eq(close_scope(outer), 0);
}
END_TEST

START_TEST(cancel_without_checkpoint_is_not_caught)
{
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert(!nursery_scope_cancel_called(s));
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0); /* idempotent */
    ck_assert(nursery_scope_cancel_called(s));
    ck_assert_uint_eq(close_scope(s), CALLED);

    /* The same with a deadline. */
    s = open_scope(nursery_after_ms(SHORT_MS), 0);
    ck_assert(wait_cancel_called(s));
    ck_assert_uint_eq(close_scope(s), CALLED | PASSED);
    ck_assert_int_eq(nursery_checkpoint(), 0);
}
END_TEST

START_TEST(scope_cancellation_is_level_triggered)
{
    nursery_result_t *done = gate_new();
    gate_open(done);
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(4, NULL, &tx, &rx), 0);

    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    for (int i = 0; i < 3; i++) {
        ck_assert(nursery_cancelled());
        ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    }
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(-1)), ECANCELED);
    ck_assert_int_eq(nursery_result_wait(done, HANG), ECANCELED);
    ck_assert_int_eq(nursery_channel_send(tx, INT2PTR(1), HANG), ECANCELED);
    /* try_send is no cancellation point. */
    ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(2)), 0);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, HANG), ECANCELED);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(s), CALLED | CAUGHT);

    /* Uncancelled after the close. */
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(1)), 0);
    ck_assert_int_eq(nursery_result_wait(done, HANG), 0);
    ck_assert_int_eq(nursery_channel_recv(rx, &item, HANG), 0);
    ck_assert_int_eq(PTR2INT(item), 2);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    nursery_result_release(done);
}
END_TEST

/* A scope in a task: cancelling it cancels only the scope's region. */
struct level_task {
    int before, during[3], sleep_rc, after, after_sleep;
    unsigned outcome;
};

static int level_scope_task(void *arg, void **value)
{
    (void)value;
    struct level_task *l = arg;
    nursery_scope_t *s = NULL;
    task_expect_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    l->before = nursery_checkpoint();
    task_expect_eq(nursery_scope_cancel(s), 0);
    for (int i = 0; i < 3; i++)
        l->during[i] = nursery_checkpoint();
    l->sleep_rc = nursery_sleep(HANG);
    l->outcome = NO_OUTCOME;
    task_expect_eq(nursery_scope_close(s, &l->outcome), 0);
    l->after = nursery_checkpoint();
    l->after_sleep = nursery_sleep(nursery_after_ms(1));
    return 0;
}

START_TEST(scope_in_task_is_level_triggered_until_close)
{
    struct level_task l = {0};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, level_scope_task, &l, NULL), 0);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    ck_assert_int_eq(l.before, 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(l.during[i], ECANCELED);
    ck_assert_int_eq(l.sleep_rc, ECANCELED);
    ck_assert_uint_eq(l.outcome, CALLED | CAUGHT);
    ck_assert_int_eq(l.after, 0);
    ck_assert_int_eq(l.after_sleep, 0);
}
END_TEST

/* Cancellation of the enclosing nursery is not the scope's: the scope
 * neither reports it nor catches it, also when it is cancelled itself (the
 * enclosing nursery, cancelled too, takes it). */
START_TEST(scope_inside_cancelled_body_does_not_catch)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert(!nursery_scope_cancel_called(s));
    ck_assert_uint_eq(close_scope(s), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);

    s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(s), CALLED);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
}
END_TEST

/* ---- shields ------------------------------------------------------------ */

struct receiver_thread {
    nursery_receiver_t *rx;
    bool saw_sender;
    int rc;
    void *item;
};

/* Waits until one sender is blocked, then takes one item. */
static void *receive_one_when_sender_blocked(void *arg)
{
    struct receiver_thread *r = arg;
    r->saw_sender = wait_senders(r->rx, 1);
    r->rc = nursery_channel_try_recv(r->rx, &r->item);
    return NULL;
}

struct shielded_send {
    nursery_sender_t *tx;
    bool cancelled_before, cancelled_inside, cancelled_after;
    int checkpoint_inside, send_rc, checkpoint_after;
    nursery_time_t deadline_inside;
    unsigned outcome;
};

/* In cancelled code: a shielded scope completes a blocking send. */
static void shielded_send_run(struct shielded_send *sh)
{
    sh->cancelled_before = nursery_cancelled();
    nursery_scope_t *s = NULL;
    task_expect_eq(nursery_scope_open(&s, NURSERY_FOREVER, NURSERY_SCOPE_SHIELD), 0);
    sh->cancelled_inside = nursery_cancelled();
    sh->checkpoint_inside = nursery_checkpoint();
    sh->deadline_inside = nursery_current_deadline();
    sh->send_rc = nursery_channel_send(sh->tx, INT2PTR(2), HANG);
    sh->outcome = NO_OUTCOME;
    task_expect_eq(nursery_scope_close(s, &sh->outcome), 0);
    sh->cancelled_after = nursery_cancelled();
    sh->checkpoint_after = nursery_checkpoint();
}

static void check_shielded_send(const struct shielded_send *sh)
{
    ck_assert_tasks_ok();
    ck_assert(sh->cancelled_before);
    ck_assert(!sh->cancelled_inside);
    ck_assert_int_eq(sh->checkpoint_inside, 0);
    ck_assert_int_eq(sh->deadline_inside, NURSERY_FOREVER);
    ck_assert_int_eq(sh->send_rc, 0);
    ck_assert_uint_eq(sh->outcome, 0);
    ck_assert(sh->cancelled_after);
    ck_assert_int_eq(sh->checkpoint_after, ECANCELED);
}

START_TEST(shield_in_cancelled_body_completes_blocking_send)
{
    struct receiver_thread r = {.rc = -1};
    struct shielded_send sh = {0};
    ck_assert_int_eq(nursery_channel_create(1, NULL, &sh.tx, &r.rx), 0);
    ck_assert_int_eq(nursery_channel_try_send(sh.tx, INT2PTR(1)), 0); /* full */

    /* A deadline on the nursery too: the shield hides it. */
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, HANG), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, receive_one_when_sender_blocked, &r), 0);
    shielded_send_run(&sh);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    check_shielded_send(&sh);
    ck_assert(r.saw_sender);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(PTR2INT(r.item), 1);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(r.rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 2);
    nursery_sender_free(sh.tx);
    nursery_receiver_free(r.rx);
}
END_TEST

struct shield_task {
    struct shielded_send sh;
    latch_t running;   /* the task runs (so the cancel reaches it running) */
    latch_t cancelled; /* the test cancelled the nursery */
};

static int shielded_send_task(void *arg, void **value)
{
    (void)value;
    struct shield_task *st = arg;
    latch_count_down(&st->running);
    task_expect(latch_wait(&st->cancelled));
    shielded_send_run(&st->sh);
    return 0;
}

START_TEST(shield_in_cancelled_task_completes_blocking_send)
{
    struct receiver_thread r = {.rc = -1};
    struct shield_task st = {0};
    latch_init(&st.running, 1);
    latch_init(&st.cancelled, 1);
    ck_assert_int_eq(nursery_channel_create(1, NULL, &st.sh.tx, &r.rx), 0);
    ck_assert_int_eq(nursery_channel_try_send(st.sh.tx, INT2PTR(1)), 0); /* full */
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, shielded_send_task, &st, NULL), 0);
    ck_assert(latch_wait(&st.running));
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, receive_one_when_sender_blocked, &r), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    latch_count_down(&st.cancelled);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    check_shielded_send(&st.sh);
    ck_assert(r.saw_sender);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(PTR2INT(r.item), 1);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(r.rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 2);
    nursery_sender_free(st.sh.tx);
    nursery_receiver_free(r.rx);
    latch_destroy(&st.running);
    latch_destroy(&st.cancelled);
}
END_TEST

START_TEST(shield_own_deadline_still_applies)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_scope_t *s = open_scope(d, NURSERY_SCOPE_SHIELD);
    ck_assert_int_eq(nursery_current_deadline(), d);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert_int_ge(nursery_now(), d);
    ck_assert_int_lt(nursery_now() - d, LATE_NS);
    /* The shield catches its own cancellation, though the body is
     * cancelled too: the body is shielded from. */
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
}
END_TEST

START_TEST(shield_own_cancel_still_applies)
{
    nursery_scope_t *outer = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(outer), 0);
    nursery_scope_t *shield = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_int_eq(nursery_scope_cancel(shield), 0);
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(shield), CALLED | CAUGHT);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(outer), CALLED | CAUGHT);
    ck_assert_int_eq(nursery_checkpoint(), 0);
}
END_TEST

/* Tasks of a nursery opened inside a shield are not cancelled with the
 * code outside it. */
START_TEST(shield_keeps_outer_cancel_from_nursery_inside)
{
    struct gated g;
    gated_init(&g, 1);
    nursery_scope_t *outer = open_scope(NURSERY_FOREVER, 0);
    nursery_scope_t *shield = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));
    ck_assert_int_eq(nursery_scope_cancel(outer), 0);
    ck_assert(!nursery_cancelled());
    gate_open(g.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&g.rc), 0);
    ck_assert_uint_eq(close_scope(shield), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(outer), CALLED | CAUGHT);
    gated_fini(&g);
}
END_TEST

/* ---- moving deadlines --------------------------------------------------- */

struct mover {
    latch_t published;       /* the task published its scope */
    nursery_scope_t *scope;  /* a reference for the test thread */
    int sleep_rc;
    nursery_time_t end;
    unsigned outcome;
};

static int blocked_in_scope_task(void *arg, void **value)
{
    (void)value;
    struct mover *m = arg;
    nursery_scope_t *s = NULL;
    task_expect_eq(nursery_scope_open(&s, HANG, 0), 0);
    m->scope = nursery_scope_retain(s);
    latch_count_down(&m->published);
    m->sleep_rc = nursery_sleep(HANG);
    m->end = nursery_now();
    m->outcome = NO_OUTCOME;
    task_expect_eq(nursery_scope_close(s, &m->outcome), 0);
    task_expect_eq(nursery_checkpoint(), 0);
    return 0;
}

START_TEST(moving_deadline_earlier_wakes_blocked_task)
{
    struct mover m = {0};
    latch_init(&m.published, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, blocked_in_scope_task, &m, NULL), 0);
    ck_assert(latch_wait(&m.published));
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    ck_assert_int_eq(nursery_scope_set_deadline(m.scope, d), 0);
    ck_assert_int_eq(nursery_scope_deadline(m.scope), d);
    /* The task's scope caught it: the nursery is not cancelled. */
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    ck_assert_int_eq(m.sleep_rc, ECANCELED);
    ck_assert_int_ge(m.end, d);
    ck_assert_int_lt(m.end - d, LATE_NS);
    ck_assert_uint_eq(m.outcome, ALL_BITS);
    ck_assert(nursery_scope_cancel_called(m.scope));
    ck_assert_int_eq(nursery_scope_set_deadline(m.scope, HANG), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_scope_cancel(m.scope), NURSERY_ECLOSED);
    nursery_scope_release(m.scope);
    latch_destroy(&m.published);
}
END_TEST

START_TEST(moving_deadline_into_the_past_cancels_before_returning)
{
    struct mover m = {0};
    latch_init(&m.published, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, blocked_in_scope_task, &m, NULL), 0);
    ck_assert(latch_wait(&m.published));
    nursery_time_t d = nursery_after_ms(-1);
    ck_assert_int_eq(nursery_scope_set_deadline(m.scope, d), 0);
    ck_assert(nursery_scope_cancel_called(m.scope));
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(m.sleep_rc, ECANCELED);
    ck_assert_uint_eq(m.outcome, ALL_BITS);
    nursery_scope_release(m.scope);
    latch_destroy(&m.published);
}
END_TEST

/* d1 is far enough that the move happens before it, even under valgrind. */
START_TEST(moving_deadline_later)
{
    nursery_time_t d1 = nursery_after_ms(1000);
    nursery_scope_t *s = open_scope(d1, 0);
    nursery_time_t d2 = d1 + 200 * MS;
    ck_assert_int_eq(nursery_scope_set_deadline(s, d2), 0);
    if (nursery_now() >= d1) {
        /* Not a failure of the library: this run was too slow to tell. */
        printf("moving_deadline_later: skipped: the first deadline passed before it was moved\n");
        nursery_scope_close(s, NULL);
        return;
    }
    ck_assert(!nursery_scope_cancel_called(s));
    ck_assert_int_eq(nursery_scope_deadline(s), d2);
    ck_assert_int_eq(nursery_current_deadline(), d2);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    nursery_time_t end = nursery_now();
    ck_assert_int_ge(end, d2);
    ck_assert_int_lt(end - d2, LATE_NS);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
}
END_TEST

START_TEST(moving_deadline_to_forever_removes_it)
{
    nursery_time_t d = nursery_after_ms(1000);
    nursery_scope_t *s = open_scope(d, 0);
    ck_assert_int_eq(nursery_scope_set_deadline(s, NURSERY_FOREVER), 0);
    if (nursery_now() >= d) {
        printf("moving_deadline_to_forever_removes_it: skipped: the deadline passed before it "
               "was moved\n");
        nursery_scope_close(s, NULL);
        return;
    }
    ck_assert_int_eq(nursery_scope_deadline(s), NURSERY_FOREVER);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    ck_assert_int_eq(nursery_sleep(d + 100 * MS), 0);
    ck_assert(!nursery_scope_cancel_called(s));
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_uint_eq(close_scope(s), 0);

    /* From none to one, and back to none. */
    s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_deadline(s), NURSERY_FOREVER);
    d = nursery_after_ms(SHORT_MS);
    ck_assert_int_eq(nursery_scope_set_deadline(s, d), 0);
    ck_assert_int_eq(nursery_current_deadline(), d);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert_int_ge(nursery_now(), d);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
}
END_TEST

/* Once the deadline has cancelled the scope, it stays cancelled. */
START_TEST(moving_deadline_after_it_fired_does_not_uncancel)
{
    nursery_scope_t *s = open_scope(nursery_after_ms(SHORT_MS), 0);
    ck_assert(wait_cancel_called(s));
    ck_assert_int_eq(nursery_scope_set_deadline(s, NURSERY_FOREVER), 0);
    ck_assert(nursery_scope_cancel_called(s));
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
}
END_TEST

START_TEST(deadline_in_the_past_at_open_cancels_at_once)
{
    nursery_time_t past[] = {nursery_after_ms(-1), 0, nursery_now()};
    for (size_t i = 0; i < sizeof(past) / sizeof(past[0]); i++) {
        nursery_scope_t *s = open_scope(past[i], 0);
        ck_assert(nursery_scope_cancel_called(s));
        ck_assert(nursery_cancelled());
        ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
        ck_assert_uint_eq(close_scope(s), ALL_BITS);
        ck_assert_int_eq(nursery_checkpoint(), 0);
    }
}
END_TEST

/* ---- cancelling from other threads ------------------------------------- */

struct cancel_thread {
    nursery_scope_t *scope; /* the thread's own reference */
    latch_t *go;
    int rc;
};

static void *cancel_scope_thread(void *arg)
{
    struct cancel_thread *c = arg;
    if (c->go != NULL)
        latch_wait(c->go);
    c->rc = nursery_scope_cancel(c->scope);
    nursery_scope_release(c->scope);
    return NULL;
}

START_TEST(cancel_from_other_thread_wakes_sleeper)
{
    latch_t go;
    latch_init(&go, 1);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    struct cancel_thread c = {.scope = nursery_scope_retain(s), .go = &go, .rc = -1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_scope_thread, &c), 0);
    latch_count_down(&go);
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert_int_lt(nursery_now() - t0, 30 * SEC);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert_uint_eq(close_scope(s), CALLED | CAUGHT);
    latch_destroy(&go);
}
END_TEST

/* A scope's end racing a cancel (or a deadline moved into the past) from
 * another thread: each round's outcome agrees with what the other thread
 * was told. */
struct race {
    pthread_barrier_t start, end;
    nursery_scope_t *_Atomic scope; /* a reference for the racer, per round */
    atomic_int mode;                /* 0: cancel, 1: set_deadline in the past, -1: stop */
    int rc;                         /* read after the end barrier */
};

static void *racer(void *arg)
{
    struct race *r = arg;
    for (;;) {
        pthread_barrier_wait(&r->start);
        int mode = atomic_load(&r->mode);
        if (mode < 0)
            break;
        nursery_scope_t *s = atomic_load(&r->scope);
        r->rc = mode == 0 ? nursery_scope_cancel(s) : nursery_scope_set_deadline(s, 1);
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

START_TEST(cancel_racing_scope_end_is_consistent)
{
    struct race r = {0};
    ck_assert_int_eq(pthread_barrier_init(&r.start, NULL, 2), 0);
    ck_assert_int_eq(pthread_barrier_init(&r.end, NULL, 2), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, racer, &r), 0);
    int rounds = scaled(1000);
    int counts[2][2] = {{0}}; /* [mode][cancelled] */
    for (int i = 0; i < rounds; i++) {
        int mode = i % 2;
        bool checkpoint = (i / 2) % 2 == 1;
        nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
        atomic_store(&r.scope, nursery_scope_retain(s));
        atomic_store(&r.mode, mode);
        pthread_barrier_wait(&r.start);
        int cp = checkpoint ? nursery_checkpoint() : 0;
        unsigned outcome = NO_OUTCOME;
        int close_rc = nursery_scope_close(s, &outcome);
        int after = nursery_checkpoint();
        pthread_barrier_wait(&r.end);
        int rc = r.rc;
        bool called = nursery_scope_cancel_called(s);
        nursery_scope_release(s);

        bool ok = close_rc == 0 && after == 0 && (cp == 0 || cp == ECANCELED) &&
                  (rc == 0 || rc == NURSERY_ECLOSED);
        /* Told 0: it reached the open scope, so close saw it; told
         * closed: close did not. */
        ok = ok && ((outcome & CALLED) != 0) == (rc == 0) && called == (rc == 0);
        /* A deadline moved into the past is a deadline that passed. */
        ok = ok && ((outcome & PASSED) != 0) == (mode == 1 && rc == 0);
        /* Caught exactly when the checkpoint inside saw it. */
        ok = ok && ((outcome & CAUGHT) != 0) == (cp == ECANCELED);
        ok = ok && (outcome & ~(unsigned)ALL_BITS) == 0;
        if (!ok) {
            atomic_store(&r.mode, -1);
            pthread_barrier_wait(&r.start);
            pthread_join(t, NULL);
            ck_abort_msg("round %d (mode %d): close %d outcome %#x, checkpoint inside %d, after "
                         "%d; the other thread's call returned %d, cancel_called %d",
                         i, mode, close_rc, outcome, cp, after, rc, called);
        }
        counts[mode][rc == 0]++;
    }
    atomic_store(&r.mode, -1);
    pthread_barrier_wait(&r.start);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.end);
    printf("cancel_racing_scope_end_is_consistent: %d rounds; cancel reached the scope %d times "
           "(closed first %d), set_deadline %d (closed first %d)\n",
           rounds, counts[0][1], counts[0][0], counts[1][1], counts[1][0]);
}
END_TEST

/* Many scopes with deadlines, in many threads, set in no order: each
 * fires, not before its time. */
#define MANY_DEADLINES 64

struct own_deadline {
    int64_t ms;
    nursery_time_t deadline, end;
    int rc;
    unsigned outcome;
};

static int sleep_past_own_deadline(void *arg, void **value)
{
    (void)value;
    struct own_deadline *o = arg;
    nursery_scope_t *s = NULL;
    o->deadline = nursery_after_ms(o->ms);
    task_expect_eq(nursery_scope_open(&s, o->deadline, 0), 0);
    o->rc = nursery_sleep(HANG);
    o->end = nursery_now();
    o->outcome = NO_OUTCOME;
    task_expect_eq(nursery_scope_close(s, &o->outcome), 0);
    return 0;
}

START_TEST(many_deadlines_fire_each_not_before_its_time)
{
    struct own_deadline o[MANY_DEADLINES];
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < MANY_DEADLINES; i++) {
        o[i] = (struct own_deadline){.ms = 1 + (i * 37) % 100, .rc = -1};
        ck_assert_int_eq(nursery_start_soon(n, sleep_past_own_deadline, &o[i], NULL), 0);
    }
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    for (int i = 0; i < MANY_DEADLINES; i++) {
        ck_assert_int_eq(o[i].rc, ECANCELED);
        ck_assert_int_ge(o[i].end, o[i].deadline);
        ck_assert_int_lt(o[i].end - o[i].deadline, LATE_NS);
        ck_assert_uint_eq(o[i].outcome, ALL_BITS);
    }
}
END_TEST

/* Deadlines a few microseconds away racing the scope's close (and a
 * nursery's join): each outcome is consistent, and a deadline that fired
 * had passed.  The sanitizers watch the deadline thread touching a closed
 * scope or a joined nursery. */
START_TEST(deadline_racing_close_is_consistent)
{
    int rounds = scaled(1000), fired = 0, expired = 0;
    for (int i = 0; i < rounds; i++) {
        nursery_time_t d = nursery_after_ns((i % 20) * 10000);
        unsigned flags = i % 3 == 0 ? NURSERY_SCOPE_FAIL_ON_DEADLINE : 0;
        nursery_scope_t *s = open_scope(d, flags);
        /* Every fifth round takes the deadline back at once: if it had not
         * fired by then, it never does. */
        bool taken_back = i % 5 == 4, fired_before = false;
        if (taken_back) {
            ck_assert_int_eq(nursery_scope_set_deadline(s, NURSERY_FOREVER), 0);
            fired_before = nursery_scope_cancel_called(s);
        }
        int cp = i % 2 ? nursery_checkpoint() : 0;
        unsigned outcome = NO_OUTCOME;
        int rc = nursery_scope_close(s, &outcome);
        nursery_time_t closed = nursery_now();
        int after = nursery_checkpoint();
        bool called = outcome & CALLED, caught = outcome & CAUGHT;
        int want_rc = (flags && caught) ? ETIMEDOUT : 0;
        bool ok = (outcome & ~(unsigned)ALL_BITS) == 0 && called == ((outcome & PASSED) != 0) &&
                  caught == (cp == ECANCELED) && (cp == 0 || cp == ECANCELED) &&
                  (!caught || called) && rc == want_rc && after == 0 && (!called || closed >= d) &&
                  (!taken_back || called == fired_before);
        ck_assert_msg(ok, "round %d: close %d outcome %#x, checkpoint inside %d, after %d, "
                      "deadline %s", i, rc, outcome, cp, after,
                      closed >= d ? "passed" : "not passed");
        fired += called;

        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open_until(&n, pool, nursery_after_ns((i % 20) * 10000)), 0);
        nursery_errors_t *errs = INT2PTR(1);
        int jr = nursery_join(n, NURSERY_FOREVER, &errs);
        ck_assert_msg(jr == 0 || jr == NURSERY_EEXPIRED, "round %d: join %d", i, jr);
        ck_assert_ptr_null(errs); /* nothing failed, nothing was cancelled */
        expired += jr == NURSERY_EEXPIRED;
        ck_assert(!nursery_cancelled());
    }
    printf("deadline_racing_close_is_consistent: %d rounds; the scope's deadline fired in %d, "
           "the nursery's in %d\n",
           rounds, fired, expired);
}
END_TEST

/* Scopes with deadlines a few microseconds away, moved, cancelled and
 * closed in many threads at once: each outcome is consistent.  The
 * sanitizers watch the deadline thread's bookkeeping. */
#define DEADLINE_STRESS_TASKS 8

struct deadline_stress {
    int rounds;
    int bad_round;
    char what[160];
};

static int deadline_stress_task(void *arg, void **value)
{
    (void)value;
    struct deadline_stress *st = arg;
    st->bad_round = -1;
    for (int i = 0; i < st->rounds && st->bad_round < 0; i++) {
        nursery_time_t d = nursery_after_ns((i % 13) * 7000);
        nursery_scope_t *s = NULL;
        if (nursery_scope_open(&s, d, 0) != 0) {
            st->bad_round = i;
            snprintf(st->what, sizeof(st->what), "open failed");
            break;
        }
        switch (i % 4) {
        case 1: /* later */
            nursery_scope_set_deadline(s, d + 20000);
            break;
        case 2: /* earlier, then later again */
            nursery_scope_set_deadline(s, d - 5000);
            nursery_scope_set_deadline(s, d + 5000);
            break;
        case 3:
            nursery_scope_cancel(s);
            break;
        }
        int cp = nursery_checkpoint();
        unsigned outcome = NO_OUTCOME;
        int rc = nursery_scope_close(s, &outcome);
        bool called = outcome & CALLED, passed = outcome & PASSED, caught = outcome & CAUGHT;
        bool ok = rc == 0 && (outcome & ~(unsigned)ALL_BITS) == 0 &&
                  caught == (cp == ECANCELED) && (!caught || called) && (!passed || called) &&
                  (i % 4 != 3 || called) && nursery_checkpoint() == 0;
        if (!ok) {
            st->bad_round = i;
            snprintf(st->what, sizeof(st->what), "close %d outcome %#x checkpoint %d", rc,
                     outcome, cp);
        }
    }
    return 0;
}

START_TEST(deadlines_in_many_threads_stay_consistent)
{
    struct deadline_stress st[DEADLINE_STRESS_TASKS];
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < DEADLINE_STRESS_TASKS; i++) {
        st[i] = (struct deadline_stress){.rounds = scaled(500)};
        ck_assert_int_eq(nursery_start_soon(n, deadline_stress_task, &st[i], NULL), 0);
    }
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    for (int i = 0; i < DEADLINE_STRESS_TASKS; i++)
        ck_assert_msg(st[i].bad_round < 0, "task %d, round %d: %s", i, st[i].bad_round,
                      st[i].what);
}
END_TEST

/* ---- nurseries inside scopes -------------------------------------------- */

START_TEST(scope_cancel_reaches_tasks_of_nurseries_inside)
{
    enum { TASKS = 3 };
    struct gated g;
    gated_init(&g, TASKS);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < TASKS; i++)
        ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), ECANCELED);
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), TASKS);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
    ck_assert_uint_eq(close_scope(s), CALLED | CAUGHT);
    ck_assert_int_eq(nursery_checkpoint(), 0);
    gated_fini(&g);
}
END_TEST

/* A scope in a task, with a nursery inside it whose tasks nest one more
 * nursery: cancelling the scope from the test thread reaches them all, and
 * not the task's own nursery. */
struct deep_scope {
    struct gated g;
    latch_t published;
    nursery_scope_t *scope;
    int inner_join_rc;
    unsigned outcome;
    int after;
};

static int nest_one_more(void *arg, void **value)
{
    (void)value;
    struct deep_scope *d = arg;
    nursery_t *n = NULL;
    task_expect_eq(nursery_open(&n, pool), 0);
    task_expect_eq(nursery_start_soon(n, gated_task, &d->g, NULL), 0);
    return nursery_join(n, NURSERY_FOREVER, NULL);
}

static int scope_with_nurseries_task(void *arg, void **value)
{
    (void)value;
    struct deep_scope *d = arg;
    nursery_scope_t *s = NULL;
    task_expect_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    d->scope = nursery_scope_retain(s);
    nursery_t *n = NULL;
    task_expect_eq(nursery_open(&n, pool), 0);
    task_expect_eq(nursery_start_soon(n, gated_task, &d->g, NULL), 0);
    task_expect_eq(nursery_start_soon(n, nest_one_more, d, NULL), 0);
    latch_count_down(&d->published);
    d->inner_join_rc = nursery_join(n, NURSERY_FOREVER, NULL);
    d->outcome = NO_OUTCOME;
    task_expect_eq(nursery_scope_close(s, &d->outcome), 0);
    d->after = nursery_checkpoint();
    return 0;
}

START_TEST(scope_cancel_in_task_reaches_nested_nurseries_only)
{
    struct deep_scope d = {0};
    gated_init(&d.g, 2);
    latch_init(&d.published, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, scope_with_nurseries_task, &d, NULL), 0);
    ck_assert(latch_wait(&d.published));
    ck_assert(latch_wait(&d.g.running));
    ck_assert_int_eq(nursery_scope_cancel(d.scope), 0);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    ck_assert_int_eq(atomic_load(&d.g.rc), ECANCELED);
    ck_assert_int_eq(d.inner_join_rc, ECANCELED);
    ck_assert_uint_eq(d.outcome, CALLED | CAUGHT);
    ck_assert_int_eq(d.after, 0);
    nursery_scope_release(d.scope);
    latch_destroy(&d.published);
    gated_fini(&d.g);
}
END_TEST

/* ---- nursery_current_deadline() ----------------------------------------- */

START_TEST(current_deadline_is_forever_outside)
{
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    ck_assert_uint_eq(close_scope(s), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
}
END_TEST

START_TEST(current_deadline_is_min_of_nested_scopes)
{
    nursery_time_t now = nursery_now();
    nursery_time_t d1 = now + 40 * SEC, d2 = now + 50 * SEC, d3 = now + 30 * SEC;
    nursery_scope_t *s1 = open_scope(d1, 0);
    ck_assert_int_eq(nursery_current_deadline(), d1);
    nursery_scope_t *s2 = open_scope(d2, 0);
    ck_assert_int_eq(nursery_current_deadline(), d1);
    nursery_scope_t *s3 = open_scope(d3, 0);
    ck_assert_int_eq(nursery_current_deadline(), d3);
    /* Moving an outer deadline shows inside. */
    nursery_time_t d0 = now + 20 * SEC;
    ck_assert_int_eq(nursery_scope_set_deadline(s1, d0), 0);
    ck_assert_int_eq(nursery_current_deadline(), d0);
    ck_assert_uint_eq(close_scope(s3), 0);
    ck_assert_int_eq(nursery_current_deadline(), d0);
    ck_assert_int_eq(nursery_scope_set_deadline(s1, d1), 0);
    ck_assert_int_eq(nursery_current_deadline(), d1);
    ck_assert_uint_eq(close_scope(s2), 0);
    ck_assert_int_eq(nursery_current_deadline(), d1);
    ck_assert_uint_eq(close_scope(s1), 0);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
}
END_TEST

struct deadline_seen {
    nursery_time_t in_task;
    nursery_time_t in_task_scope;   /* a later deadline of its own: no change */
    nursery_time_t in_task_earlier; /* an earlier one of its own */
    nursery_time_t in_task_shield;  /* a shield without a deadline */
    nursery_time_t after;           /* after closing them */
    nursery_time_t own;             /* the earlier one */
};

static int record_deadlines(void *arg, void **value)
{
    (void)value;
    struct deadline_seen *d = arg;
    d->in_task = nursery_current_deadline();
    nursery_scope_t *later = NULL, *earlier = NULL, *shield = NULL;
    task_expect_eq(nursery_scope_open(&later, d->in_task == NURSERY_FOREVER
                                                  ? NURSERY_FOREVER
                                                  : d->in_task + 10 * SEC,
                                      0),
                   0);
    d->in_task_scope = nursery_current_deadline();
    d->own = nursery_after_ms(TEST_HANG_MS / 4);
    task_expect_eq(nursery_scope_open(&earlier, d->own, 0), 0);
    d->in_task_earlier = nursery_current_deadline();
    task_expect_eq(nursery_scope_open(&shield, NURSERY_FOREVER, NURSERY_SCOPE_SHIELD), 0);
    d->in_task_shield = nursery_current_deadline();
    task_expect_eq(nursery_scope_close(shield, NULL), 0);
    task_expect_eq(nursery_scope_close(earlier, NULL), 0);
    task_expect_eq(nursery_scope_close(later, NULL), 0);
    d->after = nursery_current_deadline();
    return 0;
}

START_TEST(current_deadline_reaches_tasks_on_other_threads)
{
    nursery_time_t d = nursery_after_ms(TEST_HANG_MS / 2);
    nursery_scope_t *s = open_scope(d, 0);
    struct deadline_seen a = {0}, b = {0};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, record_deadlines, &a, NULL), 0);
    /* A nursery with an earlier deadline of its own, inside. */
    nursery_time_t dn = d - 5 * SEC;
    nursery_t *inner = NULL;
    ck_assert_int_eq(nursery_open_until(&inner, pool, dn), 0);
    ck_assert_int_eq(nursery_current_deadline(), dn);
    ck_assert_int_eq(nursery_start_soon(inner, record_deadlines, &b, NULL), 0);
    ck_assert_int_eq(nursery_join(inner, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_current_deadline(), d);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_uint_eq(close_scope(s), 0);
    ck_assert_tasks_ok();

    ck_assert_int_eq(a.in_task, d);
    ck_assert_int_eq(a.in_task_scope, d);
    ck_assert_int_eq(a.in_task_earlier, a.own);
    ck_assert_int_eq(a.in_task_shield, NURSERY_FOREVER);
    ck_assert_int_eq(a.after, d);

    ck_assert_int_eq(b.in_task, dn);
    ck_assert_int_eq(b.in_task_scope, dn);
    ck_assert_int_eq(b.in_task_earlier, b.own);
    ck_assert_int_eq(b.in_task_shield, NURSERY_FOREVER);
    ck_assert_int_eq(b.after, dn);
}
END_TEST

START_TEST(shield_stops_outer_deadlines)
{
    nursery_time_t d1 = nursery_after_ms(TEST_HANG_MS / 2);
    nursery_scope_t *outer = open_scope(d1, 0);
    nursery_scope_t *shield = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    /* Its own deadline counts, even later than the outer one. */
    nursery_time_t d4 = d1 + 10 * SEC;
    ck_assert_int_eq(nursery_scope_set_deadline(shield, d4), 0);
    ck_assert_int_eq(nursery_current_deadline(), d4);
    /* And scopes inside it count from there. */
    nursery_scope_t *inner = open_scope(d4 + SEC, 0);
    ck_assert_int_eq(nursery_current_deadline(), d4);
    ck_assert_uint_eq(close_scope(inner), 0);
    ck_assert_uint_eq(close_scope(shield), 0);
    ck_assert_int_eq(nursery_current_deadline(), d1);
    ck_assert_uint_eq(close_scope(outer), 0);
}
END_TEST

/* Across threads, at any depth: a grandchild task sees the deadline of a
 * scope its grandparent nursery was opened in, a shield around that
 * nursery hides it, and moving it shows at once. */
struct seen_deeper {
    nursery_time_t seen;      /* the grandchild's first look */
    nursery_time_t seen_moved; /* after the test moved the deadline */
    latch_t looked, moved;
};

static int grandchild_looks(void *arg, void **value)
{
    (void)value;
    struct seen_deeper *d = arg;
    d->seen = nursery_current_deadline();
    latch_count_down(&d->looked);
    task_expect(latch_wait(&d->moved));
    d->seen_moved = nursery_current_deadline();
    return 0;
}

static int child_opens_nursery(void *arg, void **value)
{
    (void)value;
    nursery_t *m = NULL;
    task_expect_eq(nursery_open(&m, pool), 0);
    task_expect_eq(nursery_start_soon(m, grandchild_looks, arg, NULL), 0);
    return nursery_join(m, NURSERY_FOREVER, NULL);
}

static void run_grandchild(struct seen_deeper *d, nursery_scope_t *moved, nursery_time_t to)
{
    latch_init(&d->looked, 1);
    latch_init(&d->moved, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, child_opens_nursery, d, NULL), 0);
    ck_assert(latch_wait(&d->looked));
    ck_assert_int_eq(nursery_scope_set_deadline(moved, to), 0);
    latch_count_down(&d->moved);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    latch_destroy(&d->looked);
    latch_destroy(&d->moved);
}

START_TEST(current_deadline_reaches_grandchildren_and_stops_at_shields)
{
    nursery_time_t d1 = nursery_after_ms(TEST_HANG_MS / 2), d2 = d1 - 5 * SEC;
    nursery_scope_t *outer = open_scope(d1, 0);
    struct seen_deeper a = {0};
    run_grandchild(&a, outer, d2);
    ck_assert_int_eq(a.seen, d1);
    ck_assert_int_eq(a.seen_moved, d2);

    /* Behind a shield: the outer deadline is hidden, the shield's shows. */
    nursery_scope_t *shield = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    struct seen_deeper b = {0};
    nursery_time_t d3 = d1 + 5 * SEC;
    run_grandchild(&b, shield, d3);
    ck_assert_int_eq(b.seen, NURSERY_FOREVER);
    ck_assert_int_eq(b.seen_moved, d3);
    ck_assert_uint_eq(close_scope(shield), 0);
    ck_assert_uint_eq(close_scope(outer), 0);
}
END_TEST

/* A task begun with nursery_start() belongs to its caller until it calls
 * started: the caller's deadline applies to it (its cancellation points
 * cannot wait beyond it), and no longer once it has started. */
struct start_look {
    nursery_time_t before, after;
    latch_t started;
};

static int look_around_started(void *arg, void **value)
{
    (void)value;
    struct start_look *l = arg;
    l->before = nursery_current_deadline();
    task_expect_eq(nursery_started(NULL), 0);
    l->after = nursery_current_deadline();
    latch_count_down(&l->started);
    return 0;
}

START_TEST(current_deadline_of_start_task_is_callers_until_started)
{
    nursery_t *target = NULL;
    ck_assert_int_eq(nursery_open(&target, pool), 0); /* no deadline */
    nursery_time_t d = nursery_after_ms(TEST_HANG_MS / 2);
    nursery_scope_t *s = open_scope(d, 0);
    struct start_look l = {0};
    latch_init(&l.started, 1);
    ck_assert_int_eq(nursery_start(target, look_around_started, &l, NULL, HANG, NULL, NULL), 0);
    ck_assert_uint_eq(close_scope(s), 0);
    ck_assert_int_eq(nursery_join(target, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(l.before, d);
    ck_assert_int_eq(l.after, NURSERY_FOREVER);
    latch_destroy(&l.started);
}
END_TEST

/* Moving a scope's deadline earlier cancels, at the new deadline, a task
 * of a nursery opened inside it. */
START_TEST(moving_deadline_earlier_reaches_nursery_inside)
{
    struct gated g;
    gated_init(&g, 1);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    ck_assert_int_eq(nursery_scope_set_deadline(s, d), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), ECANCELED);
    ck_assert_int_ge(nursery_now(), d);
    ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
    gated_fini(&g);
}
END_TEST

/* ---- nursery_open_until() and nursery_run_until() ------------------------ */

START_TEST(open_until_expired_join_is_eexpired)
{
    struct gated g;
    gated_init(&g, 1);
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, d), 0);
    ck_assert_int_eq(nursery_current_deadline(), d);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EEXPIRED);
    ck_assert_int_ge(nursery_now(), d);
    ck_assert_int_lt(nursery_now() - d, LATE_NS);
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    /* Cancelled running, or (a slow machine) before it ran. */
    int rc = atomic_load(&g.rc);
    ck_assert_msg(rc == ECANCELED || rc == -1, "gate_wait returned %d", rc);
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    gated_fini(&g);
}
END_TEST

/* The body is cancelled by the deadline too. */
START_TEST(open_until_deadline_cancels_the_body)
{
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, d), 0);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert_int_ge(nursery_now(), d);
    ck_assert(nursery_cancelled());
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EEXPIRED);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
}
END_TEST

START_TEST(open_until_failure_is_efailed)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, HANG), 0);
    ck_assert_int_eq(nursery_start_soon(n, fail_task, NULL, NULL), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    nursery_errors_free(errs);
}
END_TEST

/* The body fails after the deadline cancelled the nursery: a failure wins
 * over the expiry.  (The body, not a task: a task might not have run
 * before the deadline on a slow machine.) */
START_TEST(open_until_failure_after_expiry_is_efailed)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, nursery_after_ms(SHORT_MS)), 0);
    int rc = nursery_sleep(HANG);
    ck_assert_int_eq(rc, ECANCELED);
    ck_assert_int_eq(nursery_fail(EIO, "after sleep returned %d", rc), EIO);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    nursery_error_t *e = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(e), EIO);
    char expected[64];
    snprintf(expected, sizeof(expected), "after sleep returned %d", ECANCELED);
    ck_assert_str_eq(nursery_error_message(e), expected);
    nursery_errors_free(errs);
}
END_TEST

START_TEST(open_until_finished_first_is_0)
{
    atomic_int count = 0;
    nursery_t *n = NULL;
    /* A deadline that passes soon after the join: it must then touch
     * nothing (the sanitizers and valgrind watch the freed nursery). */
    nursery_time_t d = nursery_after_ms(300);
    ck_assert_int_eq(nursery_open_until(&n, pool, d), 0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
    nursery_errors_t *errs = INT2PTR(1);
    int rc = nursery_join(n, NURSERY_FOREVER, &errs);
    if (nursery_now() < d) {
        ck_assert_int_eq(rc, 0);
        ck_assert_ptr_null(errs);
    } else {
        /* Only a very slow machine gets here. */
        ck_assert_msg(rc == 0 || rc == NURSERY_EEXPIRED, "join returned %d", rc);
        nursery_errors_free(errs);
    }
    ck_assert_int_eq(atomic_load(&count), 10);
    ck_assert_int_eq(nursery_sleep(d + 100 * MS), 0);
    ck_assert(!nursery_cancelled());

    /* FOREVER: exactly nursery_open(). */
    ck_assert_int_eq(nursery_open_until(&n, pool, NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&count), 11);
}
END_TEST

START_TEST(open_until_past_deadline_cancels_before_returning)
{
    atomic_int destroyed = 0;
    nursery_task_options_t opts = {.arg_destroy = count_call};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, nursery_after_ms(-1)), 0);
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    /* count_task and arg_destroy both count their argument: once is
     * arg_destroy alone. */
    ck_assert_int_eq(nursery_start_soon(n, count_task, &destroyed, &opts), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EEXPIRED);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&destroyed), 1);
}
END_TEST

START_TEST(open_until_cancelled_by_hand_join_is_0)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, HANG), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
}
END_TEST

/* Cancelled by hand before its deadline passed: not expired, even once the
 * deadline has passed before the join. */
START_TEST(open_until_cancelled_before_deadline_passes_join_is_0)
{
    struct gated g;
    gated_init(&g, 1);
    nursery_time_t d = nursery_after_ms(300);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, d), 0);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    bool in_time = nursery_now() < d; /* else the deadline may have come first */
    /* Past the deadline (a plain sleep: the body is cancelled). */
    while (nursery_now() < d) {
        struct timespec pause = {0, 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    nursery_errors_t *errs = NULL;
    int rc = nursery_join(n, NURSERY_FOREVER, &errs);
    if (in_time) {
        ck_assert_int_eq(rc, 0);
    } else {
        printf("open_until_cancelled_before_deadline_passes_join_is_0: the cancel came too late "
               "to tell (join returned %d)\n", rc);
        ck_assert(rc == 0 || rc == NURSERY_EEXPIRED);
    }
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    gated_fini(&g);
}
END_TEST

/* An enclosing cancelled scope wins over the nursery's own deadline. */
START_TEST(open_until_in_cancelled_scope_join_is_ecanceled)
{
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open_until(&n, pool, nursery_after_ms(-1)), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), ECANCELED);
    ck_assert_uint_eq(close_scope(s) & CALLED, CALLED);
}
END_TEST

START_TEST(open_until_rejects_null)
{
    ck_assert_int_eq(nursery_open_until(NULL, pool, HANG), EINVAL);
    ck_assert_int_eq(nursery_open_until(NULL, pool, NURSERY_FOREVER), EINVAL);
}
END_TEST

struct until_body {
    int mode; /* 0: return 0; 1: sleep, return what it returned; 2: fail; 3: start a gated task */
    struct gated *g;
    nursery_time_t deadline_seen;
    int sleep_rc;
};

static int until_body(nursery_t *n, void *arg)
{
    struct until_body *b = arg;
    b->deadline_seen = nursery_current_deadline();
    switch (b->mode) {
    case 1:
        b->sleep_rc = nursery_sleep(HANG);
        return b->sleep_rc;
    case 2:
        return nursery_fail(EIO, "body fails");
    case 3:
        return nursery_start_soon(n, gated_task, b->g, NULL);
    default:
        return 0;
    }
}

START_TEST(run_until_reports_expiry_failure_and_success)
{
    /* Expired: the body returned ECANCELED, which is no failure. */
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    struct until_body b = {.mode = 1};
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run_until(pool, d, until_body, &b, &errs), NURSERY_EEXPIRED);
    ck_assert_int_eq(b.deadline_seen, d);
    ck_assert_int_eq(b.sleep_rc, ECANCELED);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_ge(nursery_now(), d);

    /* Expired while a task waited. */
    struct gated g;
    gated_init(&g, 1);
    b = (struct until_body){.mode = 3, .g = &g};
    d = nursery_after_ms(SHORT_MS);
    errs = NULL;
    ck_assert_int_eq(nursery_run_until(pool, d, until_body, &b, &errs), NURSERY_EEXPIRED);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    int rc = atomic_load(&g.rc);
    ck_assert_msg(rc == ECANCELED || rc == -1, "gate_wait returned %d", rc);
    gated_fini(&g);

    /* Failed: reported once. */
    b = (struct until_body){.mode = 2};
    errs = NULL;
    ck_assert_int_eq(nursery_run_until(pool, HANG, until_body, &b, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    nursery_errors_free(errs);

    /* Finished first. */
    b = (struct until_body){.mode = 0};
    errs = INT2PTR(1);
    d = HANG;
    ck_assert_int_eq(nursery_run_until(pool, d, until_body, &b, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(b.deadline_seen, d);

    /* FOREVER: nursery_run(). */
    b = (struct until_body){.mode = 0};
    ck_assert_int_eq(nursery_run_until(pool, NURSERY_FOREVER, until_body, &b, NULL), 0);
    ck_assert_int_eq(b.deadline_seen, NURSERY_FOREVER);

    /* Bad input. */
    errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run_until(pool, HANG, NULL, NULL, &errs), EINVAL);
    ck_assert_ptr_null(errs);
    ck_assert(!nursery_cancelled());
}
END_TEST

/* ---- bad input ------------------------------------------------------------ */

START_TEST(scope_open_rejects_null_and_unknown_flags)
{
    ck_assert_int_eq(nursery_scope_open(NULL, NURSERY_FOREVER, 0), EINVAL);
    unsigned bad[] = {1u << 2, 1u << 7, 1u << 31, ~0u,
                      NURSERY_SCOPE_SHIELD | NURSERY_SCOPE_FAIL_ON_DEADLINE | (1u << 4)};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        nursery_scope_t *s = INT2PTR(1);
        ck_assert_int_eq(nursery_scope_open(&s, nursery_after_ms(-1), bad[i]), EINVAL);
        ck_assert_ptr_null(s);
    }
    /* Nothing was opened: no deadline, nothing cancelled, nothing to hook. */
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
    ck_assert(!nursery_cancelled());
    atomic_int calls = 0;
    nursery_cancel_hook_t *h = INT2PTR(1);
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), EINVAL);
    ck_assert_ptr_null(h);
    /* Every known flag is accepted. */
    nursery_scope_t *s = open_scope(NURSERY_FOREVER,
                                    NURSERY_SCOPE_SHIELD | NURSERY_SCOPE_FAIL_ON_DEADLINE);
    ck_assert_uint_eq(close_scope(s), 0);
}
END_TEST

START_TEST(scope_calls_reject_null)
{
    unsigned outcome = NO_OUTCOME;
    ck_assert_int_eq(nursery_scope_close(NULL, &outcome), EINVAL);
    ck_assert_int_eq(nursery_scope_close(NULL, NULL), EINVAL);
    ck_assert_int_eq(nursery_scope_cancel(NULL), EINVAL);
    ck_assert_int_eq(nursery_scope_set_deadline(NULL, 0), EINVAL);
    ck_assert_int_eq(nursery_scope_set_deadline(NULL, NURSERY_FOREVER), EINVAL);
    ck_assert_int_eq(nursery_scope_deadline(NULL), NURSERY_FOREVER);
    ck_assert(!nursery_scope_cancel_called(NULL));
    ck_assert_ptr_null(nursery_scope_retain(NULL));
    nursery_scope_release(NULL);
    ck_assert_int_eq(nursery_cancel_hook_remove(NULL, NULL), EINVAL);
    bool ran = true;
    ck_assert_int_eq(nursery_cancel_hook_remove(NULL, &ran), EINVAL);
}
END_TEST

START_TEST(close_out_of_order_is_einval_and_changes_nothing)
{
    nursery_time_t d1 = nursery_after_ms(TEST_HANG_MS / 2), d2 = d1 - 5 * SEC;
    nursery_scope_t *a = open_scope(d1, 0);
    nursery_scope_t *b = open_scope(d2, 0);
    ck_assert_int_eq(nursery_scope_cancel(b), 0);
    unsigned outcome = NO_OUTCOME;
    ck_assert_int_eq(nursery_scope_close(a, &outcome), EINVAL);
    ck_assert_uint_eq(outcome, 0); /* 0 on failure */
    /* b is still the innermost, in effect. */
    ck_assert_int_eq(nursery_current_deadline(), d2);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert(!nursery_scope_cancel_called(a));
    ck_assert_int_eq(nursery_scope_deadline(a), d1);
    ck_assert_uint_eq(close_scope(b), CALLED | CAUGHT);
    ck_assert_int_eq(nursery_current_deadline(), d1);
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_uint_eq(close_scope(a), 0);
    ck_assert_int_eq(nursery_current_deadline(), NURSERY_FOREVER);
}
END_TEST

struct closer {
    nursery_scope_t *scope;
    int rc;
    int cancel_rc;
};

static void *close_other_threads_scope(void *arg)
{
    struct closer *c = arg;
    unsigned outcome = NO_OUTCOME;
    c->rc = nursery_scope_close(c->scope, &outcome);
    if (outcome != 0)
        c->rc = -3; /* 0 on failure */
    /* Also when this thread has an open scope of its own. */
    nursery_scope_t *own = NULL;
    if (nursery_scope_open(&own, NURSERY_FOREVER, 0) == 0) {
        if (nursery_scope_close(c->scope, &outcome) != EINVAL)
            c->rc = -2;
        nursery_scope_close(own, NULL);
    }
    /* Cancelling it from here is allowed. */
    c->cancel_rc = nursery_scope_cancel(c->scope);
    return NULL;
}

START_TEST(closing_another_threads_scope_is_einval)
{
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    struct closer c = {.scope = nursery_scope_retain(s), .rc = -1, .cancel_rc = -1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, close_other_threads_scope, &c), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(c.rc, EINVAL);
    ck_assert_int_eq(c.cancel_rc, 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(s), CALLED | CAUGHT);
    nursery_scope_release(c.scope);
}
END_TEST

START_TEST(calls_after_close_are_eclosed_and_double_close_einval)
{
    nursery_time_t d = nursery_after_ms(TEST_HANG_MS / 2);
    nursery_scope_t *s = open_scope(d, 0);
    ck_assert_ptr_eq(nursery_scope_retain(s), s);
    ck_assert_uint_eq(close_scope(s), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_scope_set_deadline(s, nursery_after_ms(-1)), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_scope_set_deadline(s, NURSERY_FOREVER), NURSERY_ECLOSED);
    /* Nothing changed. */
    ck_assert(!nursery_scope_cancel_called(s));
    ck_assert_int_eq(nursery_scope_deadline(s), d);
    unsigned outcome = NO_OUTCOME;
    ck_assert_int_eq(nursery_scope_close(s, &outcome), EINVAL);
    ck_assert_uint_eq(outcome, 0);
    ck_assert_int_eq(nursery_checkpoint(), 0);
    nursery_scope_release(s);

    /* A cancelled scope stays cancelled after its close. */
    s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_ptr_eq(nursery_scope_retain(s), s);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_uint_eq(close_scope(s), CALLED);
    ck_assert(nursery_scope_cancel_called(s));
    ck_assert_int_eq(nursery_scope_cancel(s), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_scope_close(s, NULL), EINVAL);
    nursery_scope_release(s);
}
END_TEST

/* "every nursery opened inside it joined": a scope with a nursery still
 * open inside is not the innermost; close changes nothing. */
START_TEST(close_with_open_nursery_inside_is_einval)
{
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_scope_close(s, NULL), EINVAL);
    unsigned outcome = NO_OUTCOME;
    ck_assert_int_eq(nursery_scope_close(s, &outcome), EINVAL);
    ck_assert_uint_eq(outcome, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), ECANCELED);
    ck_assert_uint_eq(close_scope(s) & CALLED, CALLED);
    ck_assert(!nursery_cancelled());
}
END_TEST

/* In the child of a fork(), a scope of the parent's is refused. */
START_TEST(scope_of_parent_in_fork_child_is_eforked)
{
    nursery_scope_t *s = open_scope(HANG, 0);
    ck_assert_ptr_eq(nursery_scope_retain(s), s);
    pid_t pid = fork_child(10);
    if (pid == 0) {
        int step = 0;
        unsigned outcome = NO_OUTCOME;
        if (nursery_scope_close(s, &outcome) != NURSERY_EFORKED)
            _exit(++step);
        ++step;
        if (nursery_scope_cancel(s) != NURSERY_EFORKED)
            _exit(++step);
        ++step;
        if (nursery_scope_set_deadline(s, 0) != NURSERY_EFORKED)
            _exit(++step);
        ++step;
        nursery_scope_release(s); /* does nothing */
        nursery_scope_release(s);
        _exit(0);
    }
    assert_child_passed(pid);
    /* Nothing changed in the parent. */
    ck_assert(!nursery_scope_cancel_called(s));
    ck_assert_int_eq(nursery_checkpoint(), 0);
    ck_assert_uint_eq(close_scope(s), 0);
    nursery_scope_release(s);
}
END_TEST

/* ---- cancel hooks --------------------------------------------------------- */

static void hook_count(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

/* A hook that wakes a thread blocked in read() on a pipe: writes a byte,
 * or closes the write end. */
struct pipe_hook {
    int fds[2];
    bool close_it;
    atomic_int calls;
    pthread_t thread; /* the hook's thread, written before calls */
    pthread_t reader; /* the task's thread */
    latch_t reading;
    nursery_time_t deadline; /* the scope's, for the deadline variant */
    /* What the task saw. */
    int hook_rc, remove_rc, checkpoint_rc;
    ssize_t read_rc;
    bool ran, cancelled;
    unsigned outcome;
};

static void pipe_hook_fn(void *arg)
{
    struct pipe_hook *p = arg;
    p->thread = pthread_self();
    if (p->close_it) {
        close(p->fds[1]);
    } else {
        char c = 'x';
        ssize_t w = write(p->fds[1], &c, 1);
        (void)w;
    }
    atomic_fetch_add_explicit(&p->calls, 1, memory_order_release);
}

static void pipe_hook_init(struct pipe_hook *p, bool close_it)
{
    memset(p, 0, sizeof(*p));
    ck_assert_int_eq(pipe(p->fds), 0);
    p->close_it = close_it;
    latch_init(&p->reading, 1);
    p->hook_rc = p->remove_rc = p->checkpoint_rc = -1;
    p->read_rc = -2;
}

static void pipe_hook_fini(struct pipe_hook *p)
{
    close(p->fds[0]);
    if (!p->close_it || atomic_load(&p->calls) == 0)
        close(p->fds[1]);
    latch_destroy(&p->reading);
}

/* Registers the hook, then blocks in read() (no library call: only the
 * hook can wake it). */
static void hooked_read_registered(struct pipe_hook *p, nursery_cancel_hook_t *h);

static void hooked_read(struct pipe_hook *p)
{
    nursery_cancel_hook_t *h = NULL;
    p->reader = pthread_self();
    p->hook_rc = nursery_on_cancel(pipe_hook_fn, p, &h);
    hooked_read_registered(p, h);
}

/* The rest of hooked_read(), once h is registered. */
static void hooked_read_registered(struct pipe_hook *p, nursery_cancel_hook_t *h)
{
    latch_count_down(&p->reading);
    char c;
    if (p->hook_rc == 0) {
        do
            p->read_rc = read(p->fds[0], &c, 1);
        while (p->read_rc < 0 && errno == EINTR);
    }
    p->cancelled = nursery_cancelled();
    p->checkpoint_rc = nursery_checkpoint();
    p->ran = false;
    p->remove_rc = h ? nursery_cancel_hook_remove(h, &p->ran) : -3;
}

static int hooked_read_task(void *arg, void **value)
{
    (void)value;
    hooked_read(arg);
    return ECANCELED;
}

START_TEST(hook_wakes_foreign_read_on_nursery_cancel)
{
    struct pipe_hook p;
    pipe_hook_init(&p, false);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, hooked_read_task, &p, NULL), 0);
    ck_assert(latch_wait(&p.reading));
    ck_assert_int_eq(atomic_load(&p.calls), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    /* It ran in this thread, the canceller's, before cancel returned. */
    ck_assert_int_eq(atomic_load_explicit(&p.calls, memory_order_acquire), 1);
    ck_assert(pthread_equal(p.thread, pthread_self()));
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    ck_assert_int_eq(p.hook_rc, 0);
    ck_assert_int_eq(p.read_rc, 1);
    ck_assert(p.cancelled);
    ck_assert_int_eq(p.checkpoint_rc, ECANCELED);
    ck_assert_int_eq(p.remove_rc, 0);
    ck_assert(p.ran);
    ck_assert_int_eq(atomic_load(&p.calls), 1); /* once */
    pipe_hook_fini(&p);
}
END_TEST

/* The task's own scope's deadline passes while it is blocked in read():
 * the hook runs in the library's deadline thread and closes the pipe. */
static int hooked_read_in_scope_task(void *arg, void **value)
{
    (void)value;
    struct pipe_hook *p = arg;
    nursery_scope_t *s = NULL;
    task_expect_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    /* Registered before the deadline is set, so that it cannot have passed
     * already (a slow machine) and run the hook here, at registration. */
    nursery_cancel_hook_t *h = NULL;
    p->reader = pthread_self();
    p->hook_rc = nursery_on_cancel(pipe_hook_fn, p, &h);
    p->deadline = nursery_after_ms(SHORT_MS);
    task_expect_eq(nursery_scope_set_deadline(s, p->deadline), 0);
    hooked_read_registered(p, h);
    p->outcome = NO_OUTCOME;
    task_expect_eq(nursery_scope_close(s, &p->outcome), 0);
    task_expect_eq(nursery_checkpoint(), 0);
    return 0;
}

START_TEST(hook_wakes_foreign_read_on_scope_deadline)
{
    struct pipe_hook p;
    pipe_hook_init(&p, true);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, hooked_read_in_scope_task, &p, NULL), 0);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    ck_assert_int_eq(p.hook_rc, 0);
    ck_assert_int_eq(p.read_rc, 0); /* end of file: the hook closed the pipe */
    ck_assert_int_eq(atomic_load_explicit(&p.calls, memory_order_acquire), 1);
    ck_assert(!pthread_equal(p.thread, p.reader));
    ck_assert(!pthread_equal(p.thread, pthread_self()));
    ck_assert(p.cancelled);
    ck_assert_int_eq(p.checkpoint_rc, ECANCELED);
    ck_assert_int_eq(p.remove_rc, 0);
    ck_assert(p.ran);
    ck_assert_uint_eq(p.outcome, ALL_BITS);
    pipe_hook_fini(&p);
}
END_TEST

/* Other causes: a failing sibling, nursery_result_cancel(). */
START_TEST(hook_runs_on_sibling_failure)
{
    struct pipe_hook p;
    pipe_hook_init(&p, false);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, hooked_read_task, &p, NULL), 0);
    ck_assert(latch_wait(&p.reading));
    ck_assert_int_eq(nursery_start_soon(n, fail_task, NULL, NULL), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&p.calls), 1);
    ck_assert_int_eq(p.read_rc, 1);
    ck_assert(p.ran);
    ck_assert_int_eq(p.remove_rc, 0);
    pipe_hook_fini(&p);
}
END_TEST

START_TEST(hook_runs_on_result_cancel)
{
    struct pipe_hook p;
    pipe_hook_init(&p, false);
    nursery_t *n = NULL;
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, hooked_read_task, &p, NULL, &r), 0);
    ck_assert(latch_wait(&p.reading));
    ck_assert_int_eq(nursery_result_cancel(r), 0);
    ck_assert_int_eq(atomic_load_explicit(&p.calls, memory_order_acquire), 1);
    ck_assert(pthread_equal(p.thread, pthread_self()));
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    assert_failed(r, ECANCELED);
    ck_assert_int_eq(p.read_rc, 1);
    ck_assert(p.ran);
    nursery_result_release(r);
    pipe_hook_fini(&p);
}
END_TEST

/* An enclosing scope's cancel reaches a hook in a task of a nursery
 * opened inside it, and runs it in the cancelling thread. */
START_TEST(hook_runs_on_enclosing_scope_cancel)
{
    struct pipe_hook p;
    pipe_hook_init(&p, false);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, hooked_read_task, &p, NULL), 0);
    ck_assert(latch_wait(&p.reading));
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(atomic_load_explicit(&p.calls, memory_order_acquire), 1);
    ck_assert(pthread_equal(p.thread, pthread_self()));
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), ECANCELED);
    ck_assert_uint_eq(close_scope(s) & CALLED, CALLED);
    ck_assert_int_eq(p.read_rc, 1);
    ck_assert(p.cancelled);
    ck_assert(p.ran);
    ck_assert_int_eq(p.remove_rc, 0);
    ck_assert_int_eq(atomic_load(&p.calls), 1);
    pipe_hook_fini(&p);
}
END_TEST

/* nursery_scope_cancel() runs the scope's hooks in the calling thread
 * before it returns; a hook inside an inner scope runs too. */
struct hook_thread_check {
    atomic_int calls;
    pthread_t thread;
};

static void hook_record_thread(void *arg)
{
    struct hook_thread_check *c = arg;
    c->thread = pthread_self();
    atomic_fetch_add_explicit(&c->calls, 1, memory_order_release);
}

struct scope_canceller {
    nursery_scope_t *scope;
    struct hook_thread_check *check;
    int rc;
    int calls_after; /* the hook's calls when cancel returned */
    bool same_thread;
};

static void *scope_cancel_and_look(void *arg)
{
    struct scope_canceller *c = arg;
    c->rc = nursery_scope_cancel(c->scope);
    c->calls_after = atomic_load_explicit(&c->check->calls, memory_order_acquire);
    c->same_thread = c->calls_after == 1 && pthread_equal(c->check->thread, pthread_self());
    return NULL;
}

START_TEST(scope_cancel_runs_hooks_in_calling_thread)
{
    struct hook_thread_check hc = {0};
    nursery_scope_t *outer = open_scope(NURSERY_FOREVER, 0);
    nursery_scope_t *inner = open_scope(NURSERY_FOREVER, 0);
    nursery_cancel_hook_t *h = NULL;
    ck_assert_int_eq(nursery_on_cancel(hook_record_thread, &hc, &h), 0);
    ck_assert_ptr_nonnull(h);
    struct scope_canceller c = {.scope = nursery_scope_retain(outer), .check = &hc, .rc = -1};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, scope_cancel_and_look, &c), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert_int_eq(c.calls_after, 1);
    ck_assert(c.same_thread);
    bool ran = false;
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(ran);
    ck_assert_uint_eq(close_scope(inner), 0); /* inner itself not cancelled */
    ck_assert_uint_eq(close_scope(outer), CALLED);
    ck_assert_int_eq(atomic_load(&hc.calls), 1);
    nursery_scope_release(c.scope);
}
END_TEST

START_TEST(hook_inside_shield_not_run_by_outer_cancel)
{
    atomic_int calls = 0;
    nursery_scope_t *outer = open_scope(NURSERY_FOREVER, 0);
    nursery_scope_t *shield = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    nursery_cancel_hook_t *h = NULL;
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), 0);
    ck_assert_int_eq(nursery_scope_cancel(outer), 0);
    ck_assert_int_eq(atomic_load(&calls), 0);
    bool ran = true;
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(!ran);
    ck_assert_uint_eq(close_scope(shield), 0);
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);
    ck_assert_uint_eq(close_scope(outer), CALLED | CAUGHT);
    ck_assert_int_eq(atomic_load(&calls), 0);

    /* In a nursery body, with nursery_cancel(). */
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    shield = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(atomic_load(&calls), 0);
    /* The shield's own cancel does run it. */
    ck_assert_int_eq(nursery_scope_cancel(shield), 0);
    ck_assert_int_eq(atomic_load(&calls), 1);
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(ran);
    ck_assert_uint_eq(close_scope(shield), CALLED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
}
END_TEST

START_TEST(hook_registered_when_cancelled_runs_at_once)
{
    struct hook_thread_check hc = {0};
    nursery_cancel_hook_t *h = NULL;
    bool ran = false;

    /* In a cancelled scope. */
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_on_cancel(hook_record_thread, &hc, &h), 0);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(atomic_load_explicit(&hc.calls, memory_order_acquire), 1);
    ck_assert(pthread_equal(hc.thread, pthread_self()));
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(ran);
    ck_assert_uint_eq(close_scope(s), CALLED);

    /* In a cancelled body. */
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ran = false;
    ck_assert_int_eq(nursery_on_cancel(hook_record_thread, &hc, &h), 0);
    ck_assert_int_eq(atomic_load(&hc.calls), 2);
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(ran);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* In a scope whose deadline had passed at open. */
    s = open_scope(nursery_after_ms(-1), 0);
    ran = false;
    ck_assert_int_eq(nursery_on_cancel(hook_record_thread, &hc, &h), 0);
    ck_assert_int_eq(atomic_load(&hc.calls), 3);
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(ran);
    ck_assert_uint_eq(close_scope(s), CALLED | PASSED);
}
END_TEST

START_TEST(hook_removed_before_cancel_never_runs)
{
    atomic_int calls = 0;
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_cancel_hook_t *h = NULL;
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), 0);
    bool ran = true;
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(!ran);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&calls), 0);

    /* In a scope, removed, then the scope's deadline passes. */
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), 0);
    ck_assert_int_eq(nursery_cancel_hook_remove(h, NULL), 0);
    ck_assert_int_eq(nursery_scope_set_deadline(s, nursery_after_ms(SHORT_MS)), 0);
    ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
    ck_assert_int_eq(atomic_load(&calls), 0);

    /* Never cancelled at all: not ran. */
    s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), 0);
    ran = true;
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(!ran);
    ck_assert_uint_eq(close_scope(s), 0);
    ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

/* Removing a hook from inside its own fn would wait forever: EINVAL. */
struct self_remove {
    nursery_cancel_hook_t *_Atomic hook;
    atomic_int rc;
};

static void hook_removes_itself(void *arg)
{
    struct self_remove *sr = arg;
    bool ran = false;
    atomic_store(&sr->rc, nursery_cancel_hook_remove(atomic_load(&sr->hook), &ran));
}

START_TEST(hook_remove_inside_fn_is_einval)
{
    struct self_remove sr;
    atomic_init(&sr.hook, NULL);
    atomic_init(&sr.rc, -1);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    nursery_cancel_hook_t *h = NULL;
    ck_assert_int_eq(nursery_on_cancel(hook_removes_itself, &sr, &h), 0);
    atomic_store(&sr.hook, h);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(atomic_load(&sr.rc), EINVAL);
    bool ran = false;
    ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
    ck_assert(ran);
    ck_assert_uint_eq(close_scope(s), CALLED);
}
END_TEST

static void *hook_outside_thread(void *arg)
{
    nursery_cancel_hook_t *h = INT2PTR(1);
    int rc = nursery_on_cancel(hook_count, arg, &h);
    return INT2PTR(rc == EINVAL && h == NULL ? 0 : rc == EINVAL ? -1 : rc);
}

START_TEST(hook_outside_any_task_body_or_scope_is_einval)
{
    atomic_int calls = 0;
    nursery_cancel_hook_t *h = INT2PTR(1);
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), EINVAL);
    ck_assert_ptr_null(h);
    pthread_t t;
    void *rc = INT2PTR(-5);
    ck_assert_int_eq(pthread_create(&t, NULL, hook_outside_thread, &calls), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq(PTR2INT(rc), 0);

    /* After a scope or body has ended, too. */
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_uint_eq(close_scope(s), 0);
    h = INT2PTR(1);
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, &h), EINVAL);
    ck_assert_ptr_null(h);

    /* NULL fn or out, where a hook could be registered. */
    s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0); /* would run at once */
    h = INT2PTR(1);
    ck_assert_int_eq(nursery_on_cancel(NULL, &calls, &h), EINVAL);
    ck_assert_ptr_null(h);
    ck_assert_int_eq(nursery_on_cancel(hook_count, &calls, NULL), EINVAL);
    ck_assert_uint_eq(close_scope(s), CALLED);
    ck_assert_int_eq(atomic_load(&calls), 0);
}
END_TEST

/* nursery_cancel_hook_remove() racing the hook's own run: once remove has
 * returned, fn is not running and never runs again; ran tells whether it
 * ran. */
struct hook_race {
    pthread_barrier_t start, end;
    nursery_scope_t *_Atomic scope;
    atomic_int stop;
    atomic_int running; /* set on entry, cleared on exit */
    atomic_int entered; /* runs, counted on exit */
};

static void slow_hook(void *arg)
{
    struct hook_race *r = arg;
    atomic_store(&r->running, 1);
    /* A spin of a few microseconds, so that remove often finds it running. */
    nursery_time_t until = nursery_now() + 20 * 1000;
    while (nursery_now() < until)
        ;
    atomic_fetch_add(&r->entered, 1);
    atomic_store(&r->running, 0);
}

static void *hook_race_canceller(void *arg)
{
    struct hook_race *r = arg;
    for (;;) {
        pthread_barrier_wait(&r->start);
        if (atomic_load(&r->stop))
            break;
        nursery_scope_cancel(atomic_load(&r->scope));
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

START_TEST(hook_remove_racing_its_run_waits_for_it)
{
    struct hook_race r;
    memset(&r, 0, sizeof(r));
    atomic_init(&r.scope, NULL);
    atomic_init(&r.stop, 0);
    atomic_init(&r.running, 0);
    atomic_init(&r.entered, 0);
    ck_assert_int_eq(pthread_barrier_init(&r.start, NULL, 2), 0);
    ck_assert_int_eq(pthread_barrier_init(&r.end, NULL, 2), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, hook_race_canceller, &r), 0);
    int rounds = scaled(1000), ran_count = 0;
    char bad[200] = "";
    for (int i = 0; i < rounds && bad[0] == '\0'; i++) {
        nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
        nursery_cancel_hook_t *h = NULL;
        ck_assert_int_eq(nursery_on_cancel(slow_hook, &r, &h), 0);
        atomic_store(&r.scope, nursery_scope_retain(s));
        int before = atomic_load(&r.entered);
        pthread_barrier_wait(&r.start);
        bool ran = false;
        int rc = nursery_cancel_hook_remove(h, &ran);
        int running = atomic_load(&r.running);
        int entered_at_remove = atomic_load(&r.entered);
        pthread_barrier_wait(&r.end); /* the cancel has returned */
        int entered = atomic_load(&r.entered);
        if (rc != 0 || running != 0 || entered_at_remove != before + (ran ? 1 : 0) ||
            entered != entered_at_remove)
            snprintf(bad, sizeof(bad),
                     "round %d: remove %d, ran %d, running after remove %d, runs before %d, at "
                     "remove %d, after cancel %d",
                     i, rc, ran, running, before, entered_at_remove, entered);
        ran_count += ran;
        unsigned outcome = close_scope(s);
        if (bad[0] == '\0' && outcome != CALLED)
            snprintf(bad, sizeof(bad), "round %d: outcome %#x", i, outcome);
        nursery_scope_release(atomic_load(&r.scope));
    }
    atomic_store(&r.stop, 1);
    pthread_barrier_wait(&r.start);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.end);
    ck_assert_msg(bad[0] == '\0', "%s", bad);
    printf("hook_remove_racing_its_run_waits_for_it: %d rounds, the hook ran in %d\n", rounds,
           ran_count);
}
END_TEST

/* A hook registered while another thread cancels its scope runs exactly
 * once: at registration (the scope was cancelled already) or by the
 * canceller. */
struct register_race {
    pthread_barrier_t start, end;
    nursery_scope_t *_Atomic scope;
    atomic_int stop;
    atomic_int calls;
};

static void *register_race_canceller(void *arg)
{
    struct register_race *r = arg;
    for (;;) {
        pthread_barrier_wait(&r->start);
        if (atomic_load(&r->stop))
            break;
        nursery_scope_cancel(atomic_load(&r->scope));
        pthread_barrier_wait(&r->end);
    }
    return NULL;
}

START_TEST(hook_registered_racing_cancel_runs_exactly_once)
{
    struct register_race r;
    memset(&r, 0, sizeof(r));
    atomic_init(&r.scope, NULL);
    atomic_init(&r.stop, 0);
    atomic_init(&r.calls, 0);
    ck_assert_int_eq(pthread_barrier_init(&r.start, NULL, 2), 0);
    ck_assert_int_eq(pthread_barrier_init(&r.end, NULL, 2), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, register_race_canceller, &r), 0);
    int rounds = scaled(1000), at_once = 0;
    char bad[160] = "";
    for (int i = 0; i < rounds && bad[0] == '\0'; i++) {
        /* Odd rounds: the hook is registered two scopes below the one
         * cancelled, scopes opened just now (that nothing has linked below
         * the cancelled one yet). */
        bool deep = i % 2 == 1;
        nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
        atomic_store(&r.scope, nursery_scope_retain(s));
        atomic_store(&r.calls, 0);
        nursery_scope_t *mid = deep ? open_scope(NURSERY_FOREVER, 0) : NULL;
        nursery_scope_t *inner = deep ? open_scope(NURSERY_FOREVER, 0) : NULL;
        pthread_barrier_wait(&r.start);
        nursery_cancel_hook_t *h = NULL;
        int rc = nursery_on_cancel(hook_count, &r.calls, &h);
        int calls_at_register = atomic_load(&r.calls);
        pthread_barrier_wait(&r.end); /* the cancel has returned */
        bool ran = false;
        int rm = h ? nursery_cancel_hook_remove(h, &ran) : -1;
        int calls = atomic_load(&r.calls);
        if (rc != 0 || rm != 0 || !ran || calls != 1)
            snprintf(bad, sizeof(bad), "round %d: on_cancel %d, remove %d, ran %d, calls %d", i,
                     rc, rm, ran, calls);
        at_once += calls_at_register;
        if (deep) {
            unsigned o_inner = close_scope(inner), o_mid = close_scope(mid);
            if (bad[0] == '\0' && (o_inner != 0 || o_mid != 0))
                snprintf(bad, sizeof(bad), "round %d: inner outcomes %#x %#x", i, o_inner, o_mid);
        }
        unsigned outcome = close_scope(s);
        if (bad[0] == '\0' && outcome != CALLED)
            snprintf(bad, sizeof(bad), "round %d: outcome %#x", i, outcome);
        nursery_scope_release(atomic_load(&r.scope));
    }
    atomic_store(&r.stop, 1);
    pthread_barrier_wait(&r.start);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    pthread_barrier_destroy(&r.start);
    pthread_barrier_destroy(&r.end);
    ck_assert_msg(bad[0] == '\0', "%s", bad);
    printf("hook_registered_racing_cancel_runs_exactly_once: %d rounds, run at registration "
           "(or before it returned) in %d\n",
           rounds, at_once);
}
END_TEST

/* A hook may call back into the scope it runs for: cancel it again, and
 * move its deadline, also when it runs in the deadline thread (which must
 * not wait for itself). */
struct reentrant_hook {
    nursery_scope_t *scope;
    atomic_int calls;
    int cancel_rc, later_rc, forever_rc;
};

static void hook_reenters_scope(void *arg)
{
    struct reentrant_hook *r = arg;
    r->cancel_rc = nursery_scope_cancel(r->scope);
    r->later_rc = nursery_scope_set_deadline(r->scope, nursery_after_ms(TEST_HANG_MS));
    r->forever_rc = nursery_scope_set_deadline(r->scope, NURSERY_FOREVER);
    atomic_fetch_add_explicit(&r->calls, 1, memory_order_release);
}

START_TEST(hook_may_cancel_and_move_its_own_scope)
{
    for (int by_deadline = 0; by_deadline < 2; by_deadline++) {
        struct reentrant_hook r = {.cancel_rc = -1, .later_rc = -1, .forever_rc = -1};
        atomic_init(&r.calls, 0);
        r.scope = open_scope(NURSERY_FOREVER, 0);
        nursery_cancel_hook_t *h = NULL;
        ck_assert_int_eq(nursery_on_cancel(hook_reenters_scope, &r, &h), 0);
        if (by_deadline)
            ck_assert_int_eq(nursery_scope_set_deadline(r.scope, nursery_after_ms(SHORT_MS)), 0);
        else
            ck_assert_int_eq(nursery_scope_cancel(r.scope), 0);
        ck_assert_int_eq(nursery_sleep(HANG), ECANCELED);
        bool ran = false;
        ck_assert_int_eq(nursery_cancel_hook_remove(h, &ran), 0);
        ck_assert(ran);
        ck_assert_int_eq(atomic_load_explicit(&r.calls, memory_order_acquire), 1);
        ck_assert_int_eq(r.cancel_rc, 0);
        ck_assert_int_eq(r.later_rc, 0);
        ck_assert_int_eq(r.forever_rc, 0);
        /* Cancelled it stays. */
        ck_assert(nursery_scope_cancel_called(r.scope));
        ck_assert_int_eq(nursery_scope_deadline(r.scope), NURSERY_FOREVER);
        unsigned outcome = close_scope(r.scope);
        ck_assert_uint_eq(outcome & (CALLED | CAUGHT), CALLED | CAUGHT);
        if (by_deadline)
            ck_assert_uint_eq(outcome & PASSED, PASSED);
    }
}
END_TEST

/* A hook that removes another hook of the same scope while the cancel runs
 * them: the other runs once or never, as its remove says. */
struct sibling_hooks {
    nursery_cancel_hook_t *_Atomic other;
    atomic_int other_calls, remover_calls;
    int remove_rc;
    bool other_ran;
};

static void hook_other(void *arg)
{
    atomic_fetch_add(&((struct sibling_hooks *)arg)->other_calls, 1);
}

static void hook_removes_sibling(void *arg)
{
    struct sibling_hooks *sh = arg;
    sh->remove_rc = nursery_cancel_hook_remove(atomic_load(&sh->other), &sh->other_ran);
    atomic_fetch_add(&sh->remover_calls, 1);
}

START_TEST(hook_may_remove_a_sibling_hook)
{
    for (int order = 0; order < 2; order++) {
        struct sibling_hooks sh = {.remove_rc = -1};
        atomic_init(&sh.other, NULL);
        atomic_init(&sh.other_calls, 0);
        atomic_init(&sh.remover_calls, 0);
        nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
        nursery_cancel_hook_t *remover = NULL, *other = NULL, *third = NULL;
        atomic_int third_calls = 0;
        /* Registered in both orders, with a third hook after them. */
        if (order == 0) {
            ck_assert_int_eq(nursery_on_cancel(hook_removes_sibling, &sh, &remover), 0);
            ck_assert_int_eq(nursery_on_cancel(hook_other, &sh, &other), 0);
        } else {
            ck_assert_int_eq(nursery_on_cancel(hook_other, &sh, &other), 0);
            ck_assert_int_eq(nursery_on_cancel(hook_removes_sibling, &sh, &remover), 0);
        }
        ck_assert_int_eq(nursery_on_cancel(hook_count, &third_calls, &third), 0);
        atomic_store(&sh.other, other);
        ck_assert_int_eq(nursery_scope_cancel(s), 0);
        ck_assert_int_eq(atomic_load(&sh.remover_calls), 1);
        ck_assert_int_eq(sh.remove_rc, 0);
        ck_assert_int_eq(atomic_load(&sh.other_calls), sh.other_ran ? 1 : 0);
        ck_assert_int_eq(atomic_load(&third_calls), 1);
        bool ran = false;
        ck_assert_int_eq(nursery_cancel_hook_remove(remover, &ran), 0);
        ck_assert(ran);
        ck_assert_int_eq(nursery_cancel_hook_remove(third, &ran), 0);
        ck_assert(ran);
        ck_assert_uint_eq(close_scope(s), CALLED);
        /* The removed one never runs afterwards. */
        ck_assert_int_eq(atomic_load(&sh.other_calls), sh.other_ran ? 1 : 0);
    }
}
END_TEST

/* ---- the suite ------------------------------------------------------------ */

static Suite *scope_suite(void)
{
    Suite *s = suite_create("scope");
    TCase *tc = tcase_with_timeout(s, "deadline_waits", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, deadline_cancels_sleep);
    tcase_add_test(tc, deadline_cancels_result_wait_on_unset_future);
    tcase_add_test(tc, deadline_cancels_send_on_full_channel);
    tcase_add_test(tc, deadline_cancels_recv_on_empty_channel);
    tcase_add_test(tc, deadline_cancels_join_of_nursery_waiting_on_gate);
    tcase_add_test(tc, deadline_cancels_start_waiting_for_started);
    tcase_add_test(tc, deadline_cancels_sleep_in_task);

    tc = tcase_with_timeout(s, "catching", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, fail_on_deadline_close_is_etimedout);
    tcase_add_test(tc, fail_on_deadline_cancelled_by_hand_close_is_0);
    tcase_add_test(tc, fail_on_deadline_not_caught_close_is_0);
    tcase_add_test(tc, outer_cancelled_after_inner_catches_instead);
    tcase_add_test(tc, inner_cancelled_alone_catches);
    tcase_add_test(tc, outer_cancelled_two_levels_up_catches_instead);
    tcase_add_test(tc, cancel_without_checkpoint_is_not_caught);
    tcase_add_test(tc, scope_cancellation_is_level_triggered);
    tcase_add_test(tc, scope_in_task_is_level_triggered_until_close);
    tcase_add_test(tc, scope_inside_cancelled_body_does_not_catch);

    tc = tcase_with_timeout(s, "shield", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, shield_in_cancelled_body_completes_blocking_send);
    tcase_add_test(tc, shield_in_cancelled_task_completes_blocking_send);
    tcase_add_test(tc, shield_own_deadline_still_applies);
    tcase_add_test(tc, shield_own_cancel_still_applies);
    tcase_add_test(tc, shield_keeps_outer_cancel_from_nursery_inside);

    tc = tcase_with_timeout(s, "moving", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, moving_deadline_earlier_wakes_blocked_task);
    tcase_add_test(tc, moving_deadline_into_the_past_cancels_before_returning);
    tcase_add_test(tc, moving_deadline_later);
    tcase_add_test(tc, moving_deadline_to_forever_removes_it);
    tcase_add_test(tc, moving_deadline_after_it_fired_does_not_uncancel);
    tcase_add_test(tc, deadline_in_the_past_at_open_cancels_at_once);

    tc = tcase_with_timeout(s, "threads", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, cancel_from_other_thread_wakes_sleeper);
    tcase_add_test(tc, cancel_racing_scope_end_is_consistent);
    tcase_add_test(tc, many_deadlines_fire_each_not_before_its_time);
    tcase_add_test(tc, deadline_racing_close_is_consistent);
    tcase_add_test(tc, deadlines_in_many_threads_stay_consistent);
    tcase_add_test(tc, scope_cancel_reaches_tasks_of_nurseries_inside);
    tcase_add_test(tc, scope_cancel_in_task_reaches_nested_nurseries_only);

    tc = tcase_with_timeout(s, "current_deadline", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, current_deadline_is_forever_outside);
    tcase_add_test(tc, current_deadline_is_min_of_nested_scopes);
    tcase_add_test(tc, current_deadline_reaches_tasks_on_other_threads);
    tcase_add_test(tc, shield_stops_outer_deadlines);
    tcase_add_test(tc, current_deadline_reaches_grandchildren_and_stops_at_shields);
    tcase_add_test(tc, current_deadline_of_start_task_is_callers_until_started);
    tcase_add_test(tc, moving_deadline_earlier_reaches_nursery_inside);

    tc = tcase_with_timeout(s, "open_until", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, open_until_expired_join_is_eexpired);
    tcase_add_test(tc, open_until_deadline_cancels_the_body);
    tcase_add_test(tc, open_until_failure_is_efailed);
    tcase_add_test(tc, open_until_failure_after_expiry_is_efailed);
    tcase_add_test(tc, open_until_finished_first_is_0);
    tcase_add_test(tc, open_until_past_deadline_cancels_before_returning);
    tcase_add_test(tc, open_until_cancelled_by_hand_join_is_0);
    tcase_add_test(tc, open_until_cancelled_before_deadline_passes_join_is_0);
    tcase_add_test(tc, open_until_in_cancelled_scope_join_is_ecanceled);
    tcase_add_test(tc, open_until_rejects_null);
    tcase_add_test(tc, run_until_reports_expiry_failure_and_success);

    tc = tcase_with_timeout(s, "bad_input", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, scope_open_rejects_null_and_unknown_flags);
    tcase_add_test(tc, scope_calls_reject_null);
    tcase_add_test(tc, close_out_of_order_is_einval_and_changes_nothing);
    tcase_add_test(tc, closing_another_threads_scope_is_einval);
    tcase_add_test(tc, calls_after_close_are_eclosed_and_double_close_einval);
    tcase_add_test(tc, close_with_open_nursery_inside_is_einval);
    tcase_add_test(tc, scope_of_parent_in_fork_child_is_eforked);

    tc = tcase_with_timeout(s, "hooks", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, hook_wakes_foreign_read_on_nursery_cancel);
    tcase_add_test(tc, hook_wakes_foreign_read_on_scope_deadline);
    tcase_add_test(tc, hook_runs_on_sibling_failure);
    tcase_add_test(tc, hook_runs_on_result_cancel);
    tcase_add_test(tc, hook_runs_on_enclosing_scope_cancel);
    tcase_add_test(tc, scope_cancel_runs_hooks_in_calling_thread);
    tcase_add_test(tc, hook_inside_shield_not_run_by_outer_cancel);
    tcase_add_test(tc, hook_registered_when_cancelled_runs_at_once);
    tcase_add_test(tc, hook_removed_before_cancel_never_runs);
    tcase_add_test(tc, hook_remove_inside_fn_is_einval);
    tcase_add_test(tc, hook_outside_any_task_body_or_scope_is_einval);
    tcase_add_test(tc, hook_remove_racing_its_run_waits_for_it);
    tcase_add_test(tc, hook_registered_racing_cancel_runs_exactly_once);
    tcase_add_test(tc, hook_runs_once_when_cancelled_then_deadline_passes);
    tcase_add_test(tc, hook_may_cancel_and_move_its_own_scope);
    tcase_add_test(tc, hook_may_remove_a_sibling_hook);
    return s;
}

int main(void)
{
    return run_suite(scope_suite());
}
