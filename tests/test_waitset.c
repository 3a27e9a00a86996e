/* SPDX-License-Identifier: MIT */
/*
 * test_waitset.c - waiting for many operations (asyncio.wait and
 * as_completed): nursery_wait with its three return_when conditions and
 * the done/pending partition it reports (order, ndone), its deadline, its
 * argument checks, cancellation, EDEADLK and a worker waiting on its own
 * captures; and the as_completed iterator (nursery_as_completed_create,
 * _next, _set_deadline, _remaining, _free): hand-out order, the total
 * deadline, cancellation, who owns the references, and many results.
 * (That next() allocates nothing is in test_faults.c, which has the
 * allocation-failure injector.)
 *
 * Completion order is forced: futures are completed by the test thread, or
 * by a plain thread that follows a script of steps and can pause until the
 * test lets it go on, so that what is done when a wait returns is known
 * exactly.  After each completion the clock is made to advance, so that
 * "the order they completed" never rests on a tie.  Nothing sleeps to
 * order events; timeouts are asserted with generous bounds only.
 */
#include "helpers.h"

#define HANG nursery_after_ms(TEST_HANG_MS)

/* What an output parameter holds when the call did not write it. */
#define UNSET ((size_t)0xdead)

/* Half the hang limit, in nanoseconds: a generous upper bound for what
 * should take no time at all. */
#define GENEROUS_NS ((nursery_time_t)TEST_HANG_MS * 1000000 / 2)

static const int modes[3] = {NURSERY_FIRST_COMPLETED, NURSERY_FIRST_ERROR,
                             NURSERY_ALL_COMPLETED};

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static void futures_new(nursery_result_t **f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        f[i] = NULL;
        ck_assert_int_eq(nursery_future_create(&f[i]), 0);
    }
}

/* Spins until the clock has moved on: whatever completes next completes
 * strictly later than whatever completed before the call. */
static void clock_tick(void)
{
    nursery_time_t t = nursery_now();
    while (nursery_now() <= t)
        continue;
}

static void set_future(nursery_result_t *f, int v)
{
    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(v)), 0);
    clock_tick();
}

static void fail_future(nursery_result_t *f, int code)
{
    ck_assert_int_eq(nursery_future_fail(f, code, "failed with %d", code), 0);
    clock_tick();
}

static void cancel_future(nursery_result_t *f)
{
    ck_assert_int_eq(nursery_result_cancel(f), 0);
    clock_tick();
}

/* ---- A scripted completer ----------------------------------------------- */

enum step_kind { STEP_VALUE, STEP_FAIL, STEP_CANCEL };

/* Complete f[index]: with value index + 100, with an error of `code`, or by
 * nursery_result_cancel(). */
struct step {
    size_t index;
    enum step_kind kind;
    int code;
};

#define V(i) {(i), STEP_VALUE, 0}
#define F(i, c) {(i), STEP_FAIL, (c)}
#define C(i) {(i), STEP_CANCEL, 0}

static int do_step(nursery_result_t *const *f, const struct step *s)
{
    int rc;
    switch (s->kind) {
    case STEP_VALUE:
        rc = nursery_future_set_value(f[s->index], INT2PTR(s->index + 100));
        break;
    case STEP_FAIL:
        rc = nursery_future_fail(f[s->index], s->code, "step on %zu", s->index);
        break;
    default:
        rc = nursery_result_cancel(f[s->index]);
        break;
    }
    clock_tick();
    return rc;
}

#define MAX_STEPS 64

/* A plain thread that takes the steps in turn; before step `pause_after`
 * it waits until the test calls completer_resume(). */
struct completer {
    nursery_result_t *const *f;
    const struct step *steps;
    size_t n;
    size_t pause_after; /* >= n: no pause */
    latch_t resume;
    bool resumed;
    int rc[MAX_STEPS];
    pthread_t thread;
};

static void *completer_main(void *arg)
{
    struct completer *c = arg;
    for (size_t i = 0; i < c->n; i++) {
        if (i == c->pause_after)
            c->resumed = latch_wait(&c->resume);
        c->rc[i] = do_step(c->f, &c->steps[i]);
    }
    return NULL;
}

static void completer_start(struct completer *c, nursery_result_t *const *f,
                            const struct step *steps, size_t n, size_t pause_after)
{
    ck_assert_uint_le(n, MAX_STEPS);
    memset(c, 0, sizeof *c);
    c->f = f;
    c->steps = steps;
    c->n = n;
    c->pause_after = pause_after;
    c->resumed = pause_after >= n;
    latch_init(&c->resume, 1);
    for (size_t i = 0; i < MAX_STEPS; i++)
        c->rc[i] = -1;
    ck_assert_int_eq(pthread_create(&c->thread, NULL, completer_main, c), 0);
}

static void completer_resume(struct completer *c)
{
    latch_count_down(&c->resume);
}

/* Lets it finish (resuming it if it is paused), and checks every step
 * succeeded. */
static void completer_join(struct completer *c)
{
    latch_count_down(&c->resume);
    ck_assert_int_eq(pthread_join(c->thread, NULL), 0);
    ck_assert(c->resumed);
    for (size_t i = 0; i < c->n; i++)
        ck_assert_msg(c->rc[i] == 0, "step %zu (result %zu) returned %d", i, c->steps[i].index,
                      c->rc[i]);
    latch_destroy(&c->resume);
}

/* ---- Partitions --------------------------------------------------------- */

#define MAX_N 64

struct partition {
    size_t order[MAX_N];
    size_t ndone;
};

static void partition_reset(struct partition *p)
{
    for (size_t i = 0; i < MAX_N; i++)
        p->order[i] = UNSET;
    p->ndone = UNSET;
}

static bool partition_untouched(const struct partition *p)
{
    for (size_t i = 0; i < MAX_N; i++)
        if (p->order[i] != UNSET)
            return false;
    return p->ndone == UNSET;
}

/* nursery_wait() into *p, whose entries are reset first. */
static int wait_p(nursery_result_t *const *r, size_t n, nursery_time_t deadline, int mode,
                  struct partition *p)
{
    partition_reset(p);
    return nursery_wait(r, n, deadline, mode, p->order, &p->ndone);
}

static void format_order(char *buf, size_t size, const size_t *order, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used + 1 < size; i++) {
        int w = snprintf(buf + used, size - used, i ? ",%zu" : "%zu",
                         order[i] == UNSET ? (size_t)9999 : order[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* *p is exactly `want` (n entries), of which the first want_done done. */
static void assert_partition_(const char *where, int line, const struct partition *p,
                              size_t want_done, const size_t *want, size_t n)
{
    char got_s[512], want_s[512];
    format_order(got_s, sizeof got_s, p->order, n);
    format_order(want_s, sizeof want_s, want, n);
    ck_assert_msg(p->ndone == want_done, "%s:%d: ndone %zu, expected %zu (order %s)", where,
                  line, p->ndone, want_done, got_s);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(p->order[i] == want[i], "%s:%d: order [%s], expected [%s]", where, line,
                      got_s, want_s);
    /* Nothing written past the n entries. */
    for (size_t i = n; i < MAX_N; i++)
        ck_assert_msg(p->order[i] == UNSET, "%s:%d: order[%zu] written (n = %zu)", where, line,
                      i, n);
}

#define ASSERT_PARTITION(p, want_done, ...)                                                        \
    do {                                                                                           \
        const size_t want_[] = {__VA_ARGS__};                                                      \
        assert_partition_(__FILE__, __LINE__, (p), (want_done), want_,                             \
                          sizeof want_ / sizeof want_[0]);                                         \
    } while (0)

/* The pending ones ascending after a done prefix: the partition of n
 * results whose done ones are done[0..nd-1] in that completion order. */
static void expected_partition(size_t *out, size_t n, const size_t *done, size_t nd)
{
    bool is_done[MAX_N] = {false};
    for (size_t i = 0; i < nd; i++) {
        out[i] = done[i];
        is_done[done[i]] = true;
    }
    size_t k = nd;
    for (size_t i = 0; i < n; i++)
        if (!is_done[i])
            out[k++] = i;
}

/* ---- Tasks -------------------------------------------------------------- */

static int return_arg(void *arg, void **value)
{
    *value = arg;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* nursery_wait: arguments                                                  */
/* ------------------------------------------------------------------------ */

START_TEST(wait_on_nothing_returns_zero_at_once)
{
    nursery_result_t *f[1];
    futures_new(f, 1);
    for (int m = 0; m < 3; m++) {
        size_t ndone = UNSET;
        nursery_time_t t0 = nursery_now();
        ck_assert_int_eq(nursery_wait(NULL, 0, HANG, modes[m], NULL, &ndone), 0);
        ck_assert_uint_eq(ndone, 0);
        ndone = UNSET;
        ck_assert_int_eq(nursery_wait(f, 0, NURSERY_FOREVER, modes[m], NULL, &ndone), 0);
        ck_assert_uint_eq(ndone, 0);
        /* A deadline already past: nothing is pending, so not a timeout. */
        ndone = UNSET;
        ck_assert_int_eq(nursery_wait(f, 0, nursery_after_ms(0), modes[m], NULL, &ndone), 0);
        ck_assert_uint_eq(ndone, 0);
        ck_assert_int_eq(nursery_wait(NULL, 0, 0, modes[m], NULL, NULL), 0);
        ck_assert_int_lt(nursery_now() - t0, GENEROUS_NS);
        /* An order array is allowed, and has no entry to write. */
        struct partition p;
        ck_assert_int_eq(wait_p(f, 0, HANG, modes[m], &p), 0);
        ck_assert_uint_eq(p.ndone, 0);
        ck_assert_uint_eq(p.order[0], UNSET);
    }
    /* The unused future was not touched. */
    ck_assert(!nursery_result_is_done(f[0]));
    results_release(f, 1);
}
END_TEST

START_TEST(wait_rejects_bad_arguments)
{
    nursery_result_t *f[3];
    futures_new(f, 3);
    set_future(f[0], 0);
    struct partition p;
    for (int m = 0; m < 3; m++) {
        ck_assert_int_eq(wait_p(NULL, 3, HANG, modes[m], &p), EINVAL);
        ck_assert(partition_untouched(&p));
        /* A NULL entry, even with another entry done (the condition of
         * FIRST_COMPLETED holds). */
        nursery_result_t *with_null[3] = {f[0], NULL, f[2]};
        ck_assert_int_eq(wait_p(with_null, 3, HANG, modes[m], &p), EINVAL);
        ck_assert(partition_untouched(&p));
        nursery_result_t *null_last[2] = {f[0], NULL};
        ck_assert_int_eq(wait_p(null_last, 2, nursery_after_ms(0), modes[m], &p), EINVAL);
        ck_assert(partition_untouched(&p));
    }
    /* An unknown return_when, also with n == 0 (checked first). */
    const int bad[] = {0, 4, -1, 42, NURSERY_ALL_COMPLETED + 1};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(wait_p(f, 3, HANG, bad[i], &p), EINVAL);
        ck_assert(partition_untouched(&p));
        ck_assert_int_eq(wait_p(f, 1, HANG, bad[i], &p), EINVAL);
        ck_assert_int_eq(wait_p(NULL, 0, HANG, bad[i], &p), EINVAL);
        ck_assert(partition_untouched(&p));
    }
    /* Nothing happened to the results. */
    assert_value(f[0], 0);
    ck_assert(!nursery_result_is_done(f[1]));
    ck_assert(!nursery_result_is_done(f[2]));
    results_release(f, 3);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* nursery_wait: the three conditions                                       */
/* ------------------------------------------------------------------------ */

/* FIRST_COMPLETED wakes on a completion from another thread; the
 * completer then pauses until the wait has returned, so exactly one is
 * done.  Later waits report every completion, earliest first. */
START_TEST(wait_first_completed_partition)
{
    enum { N = 5 };
    nursery_result_t *f[N];
    futures_new(f, N);
    static const struct step steps[] = {V(3), V(4), V(1), V(0), V(2)};
    struct completer c;
    completer_start(&c, f, steps, N, 1);
    struct partition p;
    ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 1, 3, 0, 1, 2, 4);
    ck_assert(!nursery_result_is_done(f[4]));
    completer_resume(&c);
    completer_join(&c);

    /* Everything done: the partition is the completion order. */
    for (int m = 0; m < 3; m++) {
        ck_assert_int_eq(wait_p(f, N, HANG, modes[m], &p), 0);
        ASSERT_PARTITION(&p, N, 3, 4, 1, 0, 2);
    }
    for (int i = 0; i < N; i++)
        assert_value(f[i], i + 100);
    /* order and ndone may be NULL. */
    ck_assert_int_eq(nursery_wait(f, N, HANG, NURSERY_FIRST_COMPLETED, NULL, NULL), 0);
    size_t ndone = UNSET;
    ck_assert_int_eq(nursery_wait(f, N, HANG, NURSERY_ALL_COMPLETED, NULL, &ndone), 0);
    ck_assert_uint_eq(ndone, N);
    results_release(f, N);
}
END_TEST

/* Done before the call, by the test thread: FIRST_COMPLETED returns at once
 * (even with a deadline already past) with every done result. */
START_TEST(wait_first_completed_reports_every_done_result)
{
    enum { N = 4 };
    nursery_result_t *f[N];
    futures_new(f, N);
    set_future(f[2], 2);
    fail_future(f[0], EIO); /* done with an error counts as done */
    struct partition p;
    ck_assert_int_eq(wait_p(f, N, nursery_after_ms(0), NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 2, 2, 0, 1, 3);
    ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 2, 2, 0, 1, 3);
    /* A subset, in another order: indices are into the array given. */
    nursery_result_t *perm[3] = {f[3], f[0], f[2]};
    ck_assert_int_eq(wait_p(perm, 3, 0, NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 2, 2, 1, 0);
    ck_assert(!nursery_result_is_done(f[1]));
    ck_assert(!nursery_result_is_done(f[3]));
    results_release(f, N);
}
END_TEST

START_TEST(wait_all_completed_partition_is_completion_order)
{
    enum { N = 6 };
    nursery_result_t *f[N];
    futures_new(f, N);
    static const struct step steps[] = {V(5), V(0), F(3, EIO), C(1), V(4), V(2)};
    struct completer c;
    completer_start(&c, f, steps, N, N);
    struct partition p;
    ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_ALL_COMPLETED, &p), 0);
    /* Every result is done once it returns. */
    for (int i = 0; i < N; i++)
        ck_assert(nursery_result_is_done(f[i]));
    ASSERT_PARTITION(&p, N, 5, 0, 3, 1, 4, 2);
    completer_join(&c);
    assert_value(f[5], 105);
    assert_failed(f[3], EIO);
    assert_failed(f[1], ECANCELED);
    results_release(f, N);
}
END_TEST

/* FIRST_ERROR, by the test thread: cancelled results (by
 * nursery_result_cancel(), or failed with code ECANCELED) are not
 * failures; the first real failure ends the wait. */
START_TEST(wait_first_error_ignores_cancelled_results)
{
    enum { N = 6 };
    nursery_result_t *f[N];
    futures_new(f, N);
    struct partition p;
    set_future(f[4], 4);
    cancel_future(f[1]);
    fail_future(f[5], ECANCELED);
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(wait_p(f, N, nursery_after_ms(0), NURSERY_FIRST_ERROR, &p), ETIMEDOUT);
    ASSERT_PARTITION(&p, 3, 4, 1, 5, 0, 2, 3);
    ck_assert_int_lt(nursery_now() - t0, GENEROUS_NS);

    fail_future(f[2], EIO);
    ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_FIRST_ERROR, &p), 0);
    ASSERT_PARTITION(&p, 4, 4, 1, 5, 2, 0, 3);
    /* A second failure changes nothing but the partition. */
    fail_future(f[0], EPIPE);
    ck_assert_int_eq(wait_p(f, N, nursery_after_ms(0), NURSERY_FIRST_ERROR, &p), 0);
    ASSERT_PARTITION(&p, 5, 4, 1, 5, 2, 0, 3);
    /* The wait cancelled nothing. */
    ck_assert(!nursery_result_is_done(f[3]));
    results_release(f, N);
}
END_TEST

/* FIRST_ERROR, live: the completer cancels and finishes results, then fails
 * one and pauses: the wait returns on that failure, not before. */
START_TEST(wait_first_error_returns_on_first_failure)
{
    enum { N = 6 };
    nursery_result_t *f[N];
    futures_new(f, N);
    static const struct step steps[] = {V(4), C(1), F(5, ECANCELED), F(2, EIO), V(0), V(3)};
    struct completer c;
    completer_start(&c, f, steps, N, 4);
    struct partition p;
    ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_FIRST_ERROR, &p), 0);
    ASSERT_PARTITION(&p, 4, 4, 1, 5, 2, 0, 3);
    completer_resume(&c);
    completer_join(&c);
    assert_failed(f[2], EIO);
    results_release(f, N);
}
END_TEST

/* FIRST_ERROR with no failure: returns once every result is done. */
START_TEST(wait_first_error_without_failure_waits_for_all)
{
    enum { N = 5 };
    nursery_result_t *f[N];
    futures_new(f, N);
    static const struct step steps[] = {V(2), C(0), V(4), F(1, ECANCELED), V(3)};
    struct completer c;
    completer_start(&c, f, steps, N, N);
    struct partition p;
    ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_FIRST_ERROR, &p), 0);
    for (int i = 0; i < N; i++)
        ck_assert(nursery_result_is_done(f[i]));
    ASSERT_PARTITION(&p, N, 2, 0, 4, 1, 3);
    completer_join(&c);
    results_release(f, N);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* nursery_wait: deadlines                                                  */
/* ------------------------------------------------------------------------ */

START_TEST(wait_times_out_with_partition_and_cancels_nothing)
{
    enum { N = 4 };
    nursery_result_t *f[N];
    futures_new(f, N);
    set_future(f[2], 2);
    set_future(f[0], 0);
    struct partition p;

    nursery_time_t deadline = nursery_after_ms(50);
    ck_assert_int_eq(wait_p(f, N, deadline, NURSERY_ALL_COMPLETED, &p), ETIMEDOUT);
    nursery_time_t now = nursery_now();
    ck_assert_int_ge(now, deadline); /* it did wait for the deadline */
    ck_assert_int_lt(now - deadline, GENEROUS_NS);
    ASSERT_PARTITION(&p, 2, 2, 0, 1, 3);

    /* FIRST_ERROR: no failure, not all done. */
    deadline = nursery_after_ms(30);
    ck_assert_int_eq(wait_p(f, N, deadline, NURSERY_FIRST_ERROR, &p), ETIMEDOUT);
    ck_assert_int_ge(nursery_now(), deadline);
    ASSERT_PARTITION(&p, 2, 2, 0, 1, 3);

    /* FIRST_COMPLETED over the pending ones only. */
    nursery_result_t *pending[2] = {f[3], f[1]};
    deadline = nursery_after_ms(30);
    ck_assert_int_eq(wait_p(pending, 2, deadline, NURSERY_FIRST_COMPLETED, &p), ETIMEDOUT);
    ck_assert_int_ge(nursery_now(), deadline);
    ASSERT_PARTITION(&p, 0, 0, 1);

    /* Nothing was cancelled: the pending ones are still pending, and can
     * be completed, and a new wait sees that. */
    assert_not_done(f[1]);
    assert_not_done(f[3]);
    set_future(f[3], 3);
    set_future(f[1], 1);
    ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_ALL_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 4, 2, 0, 3, 1);
    for (int i = 0; i < N; i++)
        assert_value(f[i], i);
    results_release(f, N);
}
END_TEST

/* The setting of the next test: a one-thread pool whose only worker is
 * busy with a gated capture, and a capture queued behind it. */
struct queued_capture {
    nursery_pool_t *pool;
    latch_t entered;
    struct gated_value blocker;
    atomic_int runs;
    nursery_t *n;
    nursery_result_t *rb, *rq;
};

static int count_and_return(void *arg, void **value)
{
    atomic_int *runs = arg;
    atomic_fetch_add(runs, 1);
    *value = INT2PTR(7);
    return 0;
}

/* A deadline already past only looks: ETIMEDOUT at once with the
 * partition, in every mode; a thread that is not a worker runs nothing
 * (a queued capture of the set stays queued). */
START_TEST(wait_with_past_deadline_only_looks)
{
    enum { N = 3 };
    nursery_result_t *f[N];
    futures_new(f, N);
    struct partition p;
    const nursery_time_t past[] = {nursery_after_ms(0), nursery_after_ms(-10), 0};
    for (int m = 0; m < 3; m++) {
        for (size_t d = 0; d < sizeof past / sizeof past[0]; d++) {
            nursery_time_t t0 = nursery_now();
            ck_assert_int_eq(wait_p(f, N, past[d], modes[m], &p), ETIMEDOUT);
            ck_assert_int_lt(nursery_now() - t0, GENEROUS_NS);
            ASSERT_PARTITION(&p, 0, 0, 1, 2);
        }
    }
    set_future(f[1], 1);
    ck_assert_int_eq(wait_p(f, N, 0, NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 1, 1, 0, 2);
    ck_assert_int_eq(wait_p(f, N, 0, NURSERY_ALL_COMPLETED, &p), ETIMEDOUT);
    ASSERT_PARTITION(&p, 1, 1, 0, 2);

    /* With a queued capture in the set. */
    struct queued_capture s;
    memset(&s, 0, sizeof s);
    s.pool = capped_pool(1);
    latch_init(&s.entered, 1);
    s.blocker = (struct gated_value){.gate = gate_new(), .value = 1, .wait_rc = -1, .entered = &s.entered};
    atomic_init(&s.runs, 0);
    ck_assert_int_eq(nursery_open(&s.n, s.pool), 0);
    ck_assert_int_eq(nursery_capture_start_soon(s.n, gated_value_task, &s.blocker, NULL, &s.rb), 0);
    ck_assert(latch_wait(&s.entered));
    ck_assert_int_eq(nursery_capture_start_soon(s.n, count_and_return, &s.runs, NULL, &s.rq), 0);
    nursery_result_t *set[2] = {f[0], s.rq};
    for (int m = 0; m < 3; m++) {
        ck_assert_int_eq(wait_p(set, 2, nursery_after_ms(0), modes[m], &p), ETIMEDOUT);
        ASSERT_PARTITION(&p, 0, 0, 1);
    }
    nursery_time_t deadline = nursery_after_ms(30);
    ck_assert_int_eq(wait_p(set, 2, deadline, NURSERY_FIRST_COMPLETED, &p), ETIMEDOUT);
    ck_assert_int_ge(nursery_now(), deadline);
    ASSERT_PARTITION(&p, 0, 0, 1);
    ck_assert_int_eq(atomic_load(&s.runs), 0);
    ck_assert(!nursery_result_is_done(s.rq));

    gate_open(s.blocker.gate);
    ck_assert_int_eq(nursery_join(s.n, HANG, NULL), 0);
    ck_assert_int_eq(atomic_load(&s.runs), 1);
    assert_value(s.rq, 7);
    assert_value(s.rb, 1);
    nursery_result_release(s.rb);
    nursery_result_release(s.rq);
    nursery_result_release(s.blocker.gate);
    latch_destroy(&s.entered);
    destroy_pool(s.pool);
    results_release(f, N);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* nursery_wait: duplicates, mixes, many                                    */
/* ------------------------------------------------------------------------ */

/* A result given twice appears at both its indices, on the same side
 * (done ones of one completion: lowest index first). */
START_TEST(wait_duplicates_are_on_the_same_side)
{
    nursery_result_t *f[3];
    futures_new(f, 3);
    nursery_result_t *set[5] = {f[2], f[0], f[1], f[0], f[2]};
    struct partition p;
    ck_assert_int_eq(wait_p(set, 5, 0, NURSERY_FIRST_COMPLETED, &p), ETIMEDOUT);
    ASSERT_PARTITION(&p, 0, 0, 1, 2, 3, 4);

    set_future(f[0], 0);
    ck_assert_int_eq(wait_p(set, 5, HANG, NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 2, 1, 3, 0, 2, 4);
    ck_assert_int_eq(wait_p(set, 5, nursery_after_ms(10), NURSERY_ALL_COMPLETED, &p), ETIMEDOUT);
    ASSERT_PARTITION(&p, 2, 1, 3, 0, 2, 4);

    fail_future(f[2], EIO);
    ck_assert_int_eq(wait_p(set, 5, HANG, NURSERY_FIRST_ERROR, &p), 0);
    ASSERT_PARTITION(&p, 4, 1, 3, 0, 4, 2);

    set_future(f[1], 1);
    ck_assert_int_eq(wait_p(set, 5, HANG, NURSERY_ALL_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 5, 1, 3, 0, 4, 2);
    /* The same result three times, alone. */
    nursery_result_t *same[3] = {f[1], f[1], f[1]};
    ck_assert_int_eq(wait_p(same, 3, HANG, NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 3, 0, 1, 2);
    results_release(f, 3);
}
END_TEST

/* Captures (running, gated) and futures in one set; a capture's failure
 * counts for FIRST_ERROR; a wait that times out leaves running captures
 * running. */
START_TEST(wait_mixes_captures_and_futures)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *f[2];
    futures_new(f, 2);
    latch_t entered;
    latch_init(&entered, 3);
    struct gated_value g[3] = {
        {.gate = gate_new(), .value = 10, .wait_rc = -1, .entered = &entered},
        {.gate = gate_new(), .value = 11, .wait_rc = -1, .entered = &entered},
        {.gate = gate_new(), .fail = EIO, .wait_rc = -1, .entered = &entered},
    };
    const nursery_task_options_t quiet = {.flags = NURSERY_TASK_SUPPRESS_ERROR};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *c[3];
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_capture_start_soon(n, gated_value_task, &g[i], &quiet, &c[i]), 0);
    ck_assert(latch_wait(&entered)); /* all three run */

    nursery_result_t *all[4] = {c[0], f[0], c[1], f[1]};
    struct partition p;
    for (int m = 0; m < 3; m++) {
        ck_assert_int_eq(wait_p(all, 4, nursery_after_ms(0), modes[m], &p), ETIMEDOUT);
        ASSERT_PARTITION(&p, 0, 0, 1, 2, 3);
    }
    set_future(f[1], 21);
    gate_open(g[1].gate);
    ck_assert_int_eq(nursery_result_wait(c[1], HANG), 0);
    clock_tick();
    ck_assert_int_eq(wait_p(all, 4, HANG, NURSERY_FIRST_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 2, 3, 2, 0, 1);
    ck_assert_int_eq(wait_p(all, 4, nursery_after_ms(20), NURSERY_ALL_COMPLETED, &p), ETIMEDOUT);
    ASSERT_PARTITION(&p, 2, 3, 2, 0, 1);
    ck_assert(!nursery_result_is_done(c[0])); /* still running, not cancelled */

    /* A capture that fails ends a FIRST_ERROR wait. */
    nursery_result_t *with_failing[3] = {c[0], f[0], c[2]};
    gate_open(g[2].gate);
    ck_assert_int_eq(wait_p(with_failing, 3, HANG, NURSERY_FIRST_ERROR, &p), 0);
    ASSERT_PARTITION(&p, 1, 2, 0, 1);
    assert_failed(c[2], EIO);
    clock_tick();

    gate_open(g[0].gate);
    ck_assert_int_eq(nursery_result_wait(c[0], HANG), 0);
    clock_tick();
    set_future(f[0], 20);
    ck_assert_int_eq(wait_p(all, 4, HANG, NURSERY_ALL_COMPLETED, &p), 0);
    ASSERT_PARTITION(&p, 4, 3, 2, 0, 1);
    assert_value(c[0], 10);
    assert_value(c[1], 11);
    assert_value(f[0], 20);
    assert_value(f[1], 21);
    ck_assert_int_eq(g[0].wait_rc, 0);

    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    results_release(c, 3);
    results_release(f, 2);
    for (int i = 0; i < 3; i++)
        nursery_result_release(g[i].gate);
    latch_destroy(&entered);
    destroy_pool(pool);
}
END_TEST

/* A small deterministic generator (xorshift32), for shuffles. */
static uint32_t next_random(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static void shuffle(size_t *a, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        a[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)next_random(&seed) % (i + 1);
        size_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* More than 16 results (the wait needs memory to sleep on them all): each
 * condition, completions from another thread in a shuffled order. */
START_TEST(wait_over_more_than_16_results)
{
    enum { N = 40 };
    size_t perm[N];
    struct step steps[N];
    size_t want[N];
    struct partition p;
    for (int m = 0; m < 3; m++) {
        shuffle(perm, N, 1234u + (uint32_t)m);
        nursery_result_t *f[N];
        futures_new(f, N);
        /* The completer pauses after the step that satisfies the mode. */
        size_t pause_after = N;
        for (size_t i = 0; i < N; i++)
            steps[i] = (struct step){perm[i], STEP_VALUE, 0};
        if (modes[m] == NURSERY_FIRST_COMPLETED) {
            pause_after = 1;
        } else if (modes[m] == NURSERY_FIRST_ERROR) {
            steps[3].kind = STEP_CANCEL;
            steps[25].kind = STEP_FAIL;
            steps[25].code = EIO;
            pause_after = 26;
        }
        struct completer c;
        completer_start(&c, f, steps, N, pause_after);
        ck_assert_int_eq(wait_p(f, N, HANG, modes[m], &p), 0);
        size_t nd = pause_after < N ? pause_after : N;
        expected_partition(want, N, perm, nd);
        assert_partition_(__FILE__, __LINE__, &p, nd, want, N);
        completer_resume(&c);
        completer_join(&c);
        /* Everything done now: the whole completion order. */
        ck_assert_int_eq(wait_p(f, N, HANG, NURSERY_ALL_COMPLETED, &p), 0);
        assert_partition_(__FILE__, __LINE__, &p, N, perm, N);
        results_release(f, N);
    }
}
END_TEST

/* ------------------------------------------------------------------------ */
/* nursery_wait: inside tasks                                               */
/* ------------------------------------------------------------------------ */

/* A task whose nursery the test cancels before it waits, with conditions
 * that hold: ECANCELED all the same, the partition untouched; EINVAL is
 * still checked first. */
struct cancelled_waiter {
    nursery_result_t *const *results;
    size_t n;
    latch_t entered; /* it runs: a cancel can no longer skip it */
    latch_t go;
    int rc[3];
    bool untouched[3];
    int rc_empty;
    int rc_einval;
    bool untouched_empty;
};

static int cancelled_waiter_task(void *arg, void **value)
{
    struct cancelled_waiter *w = arg;
    (void)value;
    latch_count_down(&w->entered);
    task_expect(latch_wait(&w->go));
    struct partition p;
    for (int m = 0; m < 3; m++) {
        w->rc[m] = wait_p(w->results, w->n, HANG, modes[m], &p);
        w->untouched[m] = partition_untouched(&p);
    }
    w->rc_empty = wait_p(NULL, 0, HANG, NURSERY_FIRST_COMPLETED, &p);
    w->untouched_empty = partition_untouched(&p);
    w->rc_einval = wait_p(NULL, 2, HANG, NURSERY_ALL_COMPLETED, &p);
    return ECANCELED;
}

/* A task blocked in a wait when its nursery is cancelled. */
struct blocked_waiter {
    nursery_result_t *const *results;
    size_t n;
    int mode;
    latch_t entered;
    int rc;
    bool untouched;
};

static int blocked_waiter_task(void *arg, void **value)
{
    struct blocked_waiter *w = arg;
    (void)value;
    latch_count_down(&w->entered);
    struct partition p;
    w->rc = wait_p(w->results, w->n, HANG, w->mode, &p);
    w->untouched = partition_untouched(&p);
    return w->rc == ECANCELED ? ECANCELED : 0;
}

START_TEST(wait_in_cancelled_task_is_ecanceled)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 3 };
    nursery_result_t *f[N];
    futures_new(f, N);
    for (int i = 0; i < N; i++)
        set_future(f[i], i); /* every condition holds */
    struct cancelled_waiter w = {.results = f, .n = N, .rc_empty = -1, .rc_einval = -1};
    for (int m = 0; m < 3; m++)
        w.rc[m] = -1;
    latch_init(&w.entered, 1);
    latch_init(&w.go, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, cancelled_waiter_task, &w, NULL), 0);
    ck_assert(latch_wait(&w.entered));
    ck_assert_int_eq(nursery_cancel(n), 0);
    latch_count_down(&w.go);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_tasks_ok();
    for (int m = 0; m < 3; m++) {
        ck_assert_msg(w.rc[m] == ECANCELED, "mode %d: %d", modes[m], w.rc[m]);
        ck_assert(w.untouched[m]);
    }
    ck_assert_int_eq(w.rc_empty, ECANCELED);
    ck_assert(w.untouched_empty);
    ck_assert_int_eq(w.rc_einval, EINVAL);
    latch_destroy(&w.entered);
    latch_destroy(&w.go);
    results_release(f, N);

    /* Blocked in the wait: cancelling the nursery ends it with ECANCELED,
     * and cancels none of the results. */
    nursery_result_t *g[N];
    futures_new(g, N);
    set_future(g[0], 0);
    struct blocked_waiter b[3];
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int m = 0; m < 3; m++) {
        b[m] = (struct blocked_waiter){.results = g, .n = N, .mode = modes[m], .rc = -1};
        if (modes[m] == NURSERY_FIRST_COMPLETED) {
            b[m].results = &g[1]; /* only the pending ones */
            b[m].n = N - 1;
        }
        latch_init(&b[m].entered, 1);
        ck_assert_int_eq(nursery_start_soon(n, blocked_waiter_task, &b[m], NULL), 0);
    }
    for (int m = 0; m < 3; m++)
        ck_assert(latch_wait(&b[m].entered));
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_lt(nursery_now() - t0, GENEROUS_NS);
    for (int m = 0; m < 3; m++) {
        ck_assert_msg(b[m].rc == ECANCELED, "mode %d: %d", modes[m], b[m].rc);
        ck_assert(b[m].untouched);
        latch_destroy(&b[m].entered);
    }
    assert_not_done(g[1]);
    assert_not_done(g[2]);
    set_future(g[1], 1);
    set_future(g[2], 2);
    results_release(g, N);
    destroy_pool(pool);
}
END_TEST

/* A task that waits on a set holding its own capture: EDEADLK for
 * ALL_COMPLETED (before waiting, whatever the deadline); the other modes
 * just see it pending. */
struct self_waiter {
    nursery_result_t *self;
    nursery_result_t *done_ok;
    nursery_result_t *done_failed;
    latch_t published;
    int rc_all, rc_all_past, rc_first, rc_ferr;
    bool untouched_all, untouched_all_past;
    struct partition p_first, p_ferr;
};

static int self_waiter_task(void *arg, void **value)
{
    struct self_waiter *w = arg;
    (void)value;
    task_expect(latch_wait(&w->published));
    struct partition p;
    nursery_result_t *with_ok[2] = {w->done_ok, w->self};
    w->rc_all = wait_p(with_ok, 2, nursery_after_ms(TEST_HANG_MS), NURSERY_ALL_COMPLETED, &p);
    w->untouched_all = partition_untouched(&p);
    w->rc_all_past = wait_p(with_ok, 2, 0, NURSERY_ALL_COMPLETED, &p);
    w->untouched_all_past = partition_untouched(&p);
    w->rc_first = wait_p(with_ok, 2, nursery_after_ms(TEST_HANG_MS), NURSERY_FIRST_COMPLETED,
                         &w->p_first);
    nursery_result_t *with_failed[2] = {w->done_failed, w->self};
    w->rc_ferr = wait_p(with_failed, 2, nursery_after_ms(TEST_HANG_MS), NURSERY_FIRST_ERROR,
                        &w->p_ferr);
    *value = INT2PTR(1);
    return 0;
}

START_TEST(wait_all_completed_on_own_capture_is_edeadlk)
{
    nursery_pool_t *pool = test_pool(2);
    struct self_waiter w;
    memset(&w, 0, sizeof w);
    w.rc_all = w.rc_all_past = w.rc_first = w.rc_ferr = -1;
    ck_assert_int_eq(nursery_future_create(&w.done_ok), 0);
    ck_assert_int_eq(nursery_future_create(&w.done_failed), 0);
    set_future(w.done_ok, 5);
    fail_future(w.done_failed, EIO);
    latch_init(&w.published, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, self_waiter_task, &w, NULL, &c), 0);
    w.self = c;
    latch_count_down(&w.published);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_tasks_ok();
    assert_value(c, 1);
    ck_assert_int_eq(w.rc_all, EDEADLK);
    ck_assert(w.untouched_all);
    ck_assert_int_eq(w.rc_all_past, EDEADLK);
    ck_assert(w.untouched_all_past);
    ck_assert_int_eq(w.rc_first, 0);
    ASSERT_PARTITION(&w.p_first, 1, 0, 1);
    ck_assert_int_eq(w.rc_ferr, 0);
    ASSERT_PARTITION(&w.p_ferr, 1, 0, 1);
    nursery_result_release(c);
    nursery_result_release(w.done_ok);
    nursery_result_release(w.done_failed);
    latch_destroy(&w.published);
    destroy_pool(pool);
}
END_TEST

/* On a pool of one thread that cannot grow, a task starts captures into
 * its own nursery and waits for them: nobody else can run them, so the
 * wait must.  Bounded (5 s): a wait that only waits fails the test. */
#define OWN 4

struct own_waiter {
    nursery_t *n;
    int mode;
    int start_rc;
    int rc;
    struct partition p;
    int values[OWN]; /* of the done ones in the partition, -1 elsewhere */
};

static int own_waiter_task(void *arg, void **value)
{
    struct own_waiter *w = arg;
    (void)value;
    nursery_result_t *c[OWN];
    for (int i = 0; i < OWN; i++) {
        w->start_rc = nursery_capture_start_soon(w->n, return_arg, INT2PTR(i + 1), NULL, &c[i]);
        if (w->start_rc) {
            results_release(c, (size_t)i);
            return w->start_rc;
        }
    }
    w->rc = wait_p(c, OWN, nursery_after_ms(5000), w->mode, &w->p);
    for (int i = 0; i < OWN; i++)
        w->values[i] = -1;
    if (w->rc == 0 && w->p.ndone <= OWN) {
        for (size_t k = 0; k < w->p.ndone; k++) {
            size_t i = w->p.order[k];
            void *v = NULL;
            if (i < OWN && nursery_result_value(c[i], &v) == 0)
                w->values[i] = PTR2INT(v);
        }
    }
    results_release(c, OWN);
    return 0;
}

START_TEST(wait_in_only_worker_runs_own_captures)
{
    nursery_pool_t *pool = capped_pool(1);
    for (int m = 0; m < 3; m++) {
        struct own_waiter w = {.mode = modes[m], .rc = -1};
        ck_assert_int_eq(nursery_open(&w.n, pool), 0);
        ck_assert_int_eq(nursery_start_soon(w.n, own_waiter_task, &w, NULL), 0);
        ck_assert_int_eq(nursery_join(w.n, HANG, NULL), 0);
        ck_assert_int_eq(w.start_rc, 0);
        ck_assert_msg(w.rc == 0, "mode %d in the only worker returned %d", modes[m], w.rc);
        size_t want_min = modes[m] == NURSERY_FIRST_COMPLETED ? 1 : OWN;
        ck_assert_uint_ge(w.p.ndone, want_min);
        ck_assert_uint_le(w.p.ndone, OWN);
        /* A permutation of the indices; each done one has its value. */
        bool seen[OWN] = {false};
        for (size_t k = 0; k < OWN; k++) {
            ck_assert_uint_lt(w.p.order[k], OWN);
            ck_assert(!seen[w.p.order[k]]);
            seen[w.p.order[k]] = true;
        }
        for (size_t k = 0; k < w.p.ndone; k++)
            ck_assert_int_eq(w.values[w.p.order[k]], (int)w.p.order[k] + 1);
        /* The pending ones are ascending. */
        for (size_t k = w.p.ndone + 1; k < OWN; k++)
            ck_assert_uint_lt(w.p.order[k - 1], w.p.order[k]);
    }
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* as_completed                                                             */
/* ------------------------------------------------------------------------ */

static nursery_as_completed_t *ac_new(nursery_result_t *const *r, size_t n,
                                      nursery_time_t deadline)
{
    nursery_as_completed_t *it = NULL;
    ck_assert_int_eq(nursery_as_completed_create(&it, r, n, deadline), 0);
    ck_assert_ptr_nonnull(it);
    ck_assert_uint_eq(nursery_as_completed_remaining(it), n);
    return it;
}

/* next() hands out r[want], done, and the count goes down by one. */
static void ac_expect_(const char *file, int line, nursery_as_completed_t *it,
                       nursery_result_t *const *r, size_t want)
{
    size_t before = nursery_as_completed_remaining(it);
    size_t idx = UNSET;
    nursery_result_t *got = NULL;
    int rc = nursery_as_completed_next(it, &idx, &got);
    ck_assert_msg(rc == 0, "%s:%d: next returned %d", file, line, rc);
    ck_assert_msg(idx == want, "%s:%d: next handed out %zu, expected %zu", file, line, idx, want);
    ck_assert_ptr_eq(got, r[want]);
    ck_assert(nursery_result_is_done(got));
    ck_assert_uint_eq(nursery_as_completed_remaining(it), before - 1);
    nursery_result_release(got);
}

#define ac_expect(it, r, want) ac_expect_(__FILE__, __LINE__, (it), (r), (want))

/* Everything handed out: NURSERY_EEND, again and again, setting nothing. */
static void ac_expect_end(nursery_as_completed_t *it)
{
    for (int k = 0; k < 3; k++) {
        size_t idx = UNSET;
        nursery_result_t *got = INT2PTR(1);
        ck_assert_int_eq(nursery_as_completed_next(it, &idx, &got), NURSERY_EEND);
        ck_assert_uint_eq(idx, UNSET);
        ck_assert_ptr_eq(got, INT2PTR(1));
        ck_assert_int_eq(nursery_as_completed_next(it, NULL, NULL), NURSERY_EEND);
        ck_assert_uint_eq(nursery_as_completed_remaining(it), 0);
    }
}

START_TEST(as_completed_hands_out_in_completion_order)
{
    enum { N = 6 };
    nursery_result_t *f[N];
    futures_new(f, N);
    nursery_as_completed_t *it = ac_new(f, N, NURSERY_FOREVER);
    static const struct step steps[] = {V(4), F(1, EIO), V(5), C(0), V(3), V(2)};
    struct completer c;
    completer_start(&c, f, steps, N, N);
    for (int k = 0; k < N; k++)
        ac_expect(it, f, steps[k].index);
    ac_expect_end(it);
    completer_join(&c);
    nursery_as_completed_free(it);

    /* In lock step from the test thread: each next() sees the one just
     * completed. */
    it = ac_new(f, N, NURSERY_FOREVER);
    /* All done already: handed out in their completion order. */
    for (int k = 0; k < N; k++)
        ac_expect(it, f, steps[k].index);
    ac_expect_end(it);
    nursery_as_completed_free(it);
    results_release(f, N);

    futures_new(f, N);
    it = ac_new(f, N, NURSERY_FOREVER);
    static const size_t lock_step[N] = {2, 5, 0, 1, 4, 3};
    for (int k = 0; k < N; k++) {
        set_future(f[lock_step[k]], k);
        ck_assert_uint_eq(nursery_as_completed_remaining(it), (size_t)(N - k));
        ac_expect(it, f, lock_step[k]);
    }
    ac_expect_end(it);
    nursery_as_completed_free(it);
    results_release(f, N);
}
END_TEST

/* Those done at creation come first, in their completion order; then the
 * others as they complete.  index and result may each be NULL. */
START_TEST(as_completed_done_ones_come_first)
{
    enum { N = 5 };
    nursery_result_t *f[N];
    futures_new(f, N);
    set_future(f[3], 3);
    fail_future(f[1], EPIPE);
    set_future(f[4], 4);
    nursery_as_completed_t *it = ac_new(f, N, NURSERY_FOREVER);
    set_future(f[2], 2);
    set_future(f[0], 0);
    ac_expect(it, f, 3);
    /* index only: the iterator releases the result. */
    size_t idx = UNSET;
    ck_assert_int_eq(nursery_as_completed_next(it, &idx, NULL), 0);
    ck_assert_uint_eq(idx, 1);
    /* result only. */
    nursery_result_t *got = NULL;
    ck_assert_int_eq(nursery_as_completed_next(it, NULL, &got), 0);
    ck_assert_ptr_eq(got, f[4]);
    nursery_result_release(got);
    /* neither. */
    ck_assert_int_eq(nursery_as_completed_next(it, NULL, NULL), 0);
    ck_assert_uint_eq(nursery_as_completed_remaining(it), 1);
    ac_expect(it, f, 0);
    ac_expect_end(it);
    nursery_as_completed_free(it);
    assert_failed(f[1], EPIPE);
    results_release(f, N);
}
END_TEST

/* A result given twice is handed out twice, once per index. */
START_TEST(as_completed_duplicates_are_handed_out_twice)
{
    nursery_result_t *f[2];
    futures_new(f, 2);
    nursery_result_t *set[3] = {f[0], f[1], f[0]};
    nursery_as_completed_t *it = ac_new(set, 3, NURSERY_FOREVER);
    set_future(f[0], 0);
    bool seen[3] = {false};
    for (int k = 0; k < 2; k++) {
        size_t idx = UNSET;
        nursery_result_t *got = NULL;
        ck_assert_int_eq(nursery_as_completed_next(it, &idx, &got), 0);
        ck_assert(idx == 0 || idx == 2);
        ck_assert(!seen[idx]);
        seen[idx] = true;
        ck_assert_ptr_eq(got, f[0]);
        nursery_result_release(got);
    }
    ck_assert_uint_eq(nursery_as_completed_remaining(it), 1);
    set_future(f[1], 1);
    ac_expect(it, set, 1);
    ac_expect_end(it);
    nursery_as_completed_free(it);
    results_release(f, 2);
}
END_TEST

static void count_destroy(void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

START_TEST(as_completed_empty_and_bad_arguments)
{
    /* n == 0: an empty iteration. */
    nursery_as_completed_t *it = ac_new(NULL, 0, NURSERY_FOREVER);
    ac_expect_end(it);
    nursery_as_completed_free(it);
    nursery_result_t *f[2];
    futures_new(f, 2);
    it = ac_new(f, 0, nursery_after_ms(0));
    ac_expect_end(it); /* not a timeout: nothing is left */
    nursery_as_completed_free(it);

    /* EINVAL: *out NULL afterwards. */
    it = INT2PTR(1);
    ck_assert_int_eq(nursery_as_completed_create(NULL, f, 2, NURSERY_FOREVER), EINVAL);
    ck_assert_int_eq(nursery_as_completed_create(&it, NULL, 2, NURSERY_FOREVER), EINVAL);
    ck_assert_ptr_null(it);
    it = INT2PTR(1);
    nursery_result_t *with_null[3] = {f[0], NULL, f[1]};
    ck_assert_int_eq(nursery_as_completed_create(&it, with_null, 3, NURSERY_FOREVER), EINVAL);
    ck_assert_ptr_null(it);

    /* A failed create takes no reference: an unrun capture's arg_destroy
     * runs as soon as our own reference goes. */
    atomic_int destroyed;
    atomic_init(&destroyed, 0);
    const nursery_task_options_t o = {.arg_destroy = count_destroy};
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_create(&c, return_arg, &destroyed, &o), 0);
    nursery_result_t *c_then_null[2] = {c, NULL};
    it = INT2PTR(1);
    ck_assert_int_eq(nursery_as_completed_create(&it, c_then_null, 2, NURSERY_FOREVER), EINVAL);
    ck_assert_ptr_null(it);
    ck_assert_int_eq(atomic_load(&destroyed), 0);
    nursery_result_release(c);
    ck_assert_int_eq(atomic_load(&destroyed), 1);

    /* The other calls on NULL. */
    size_t idx = UNSET;
    ck_assert_int_eq(nursery_as_completed_next(NULL, &idx, NULL), EINVAL);
    ck_assert_uint_eq(idx, UNSET);
    ck_assert_int_eq(nursery_as_completed_set_deadline(NULL, NURSERY_FOREVER), EINVAL);
    ck_assert_uint_eq(nursery_as_completed_remaining(NULL), 0);
    nursery_as_completed_free(NULL);
    ck_assert(!nursery_result_is_done(f[0]));
    ck_assert(!nursery_result_is_done(f[1]));
    results_release(f, 2);
}
END_TEST

/* The total deadline: ETIMEDOUT hands out nothing and leaves the iterator
 * usable; set_deadline() gives it a new one. */
START_TEST(as_completed_total_deadline_then_set_deadline)
{
    enum { N = 3 };
    nursery_result_t *f[N];
    futures_new(f, N);
    nursery_time_t deadline = nursery_after_ms(50);
    nursery_as_completed_t *it = ac_new(f, N, deadline);
    size_t idx = UNSET;
    nursery_result_t *got = INT2PTR(1);
    ck_assert_int_eq(nursery_as_completed_next(it, &idx, &got), ETIMEDOUT);
    nursery_time_t now = nursery_now();
    ck_assert_int_ge(now, deadline);
    ck_assert_int_lt(now - deadline, GENEROUS_NS);
    ck_assert_uint_eq(idx, UNSET);
    ck_assert_ptr_eq(got, INT2PTR(1));
    ck_assert_uint_eq(nursery_as_completed_remaining(it), N);
    /* The deadline is total: a second call times out at once. */
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_as_completed_next(it, &idx, &got), ETIMEDOUT);
    ck_assert_int_lt(nursery_now() - t0, GENEROUS_NS);
    ck_assert_uint_eq(idx, UNSET);
    /* Nothing was cancelled. */
    for (int i = 0; i < N; i++)
        assert_not_done(f[i]);

    /* A new deadline, and a completion from another thread. */
    ck_assert_int_eq(nursery_as_completed_set_deadline(it, NURSERY_FOREVER), 0);
    static const struct step steps[] = {V(1)};
    struct completer c;
    completer_start(&c, f, steps, 1, 1);
    ac_expect(it, f, 1);
    completer_join(&c);

    /* A deadline already past: looks only. */
    ck_assert_int_eq(nursery_as_completed_set_deadline(it, nursery_after_ms(0)), 0);
    ck_assert_int_eq(nursery_as_completed_next(it, &idx, NULL), ETIMEDOUT);
    ck_assert_uint_eq(nursery_as_completed_remaining(it), 2);
    /* A result ready wins over the passed deadline. */
    set_future(f[2], 2);
    ac_expect(it, f, 2);
    ck_assert_int_eq(nursery_as_completed_next(it, &idx, NULL), ETIMEDOUT);
    ck_assert_int_eq(nursery_as_completed_set_deadline(it, HANG), 0);
    set_future(f[0], 0);
    ac_expect(it, f, 0);
    ac_expect_end(it);
    nursery_as_completed_free(it);
    results_release(f, N);
}
END_TEST

/* next() in a cancelled task: ECANCELED, also with a result ready and
 * when everything was handed out; nothing is handed out, and the iterator
 * is still usable afterwards (by the test thread, after the join). */
struct ac_task {
    nursery_as_completed_t *it;
    latch_t entered; /* counted down first */
    latch_t go;      /* then waited for before next(), if wait_go (not cancellable) */
    bool wait_go;
    int rc;
    size_t idx;
    nursery_result_t *got;
    size_t remaining;
};

static int ac_next_task(void *arg, void **value)
{
    struct ac_task *t = arg;
    (void)value;
    latch_count_down(&t->entered);
    if (t->wait_go)
        task_expect(latch_wait(&t->go));
    t->rc = nursery_as_completed_next(t->it, &t->idx, &t->got);
    t->remaining = nursery_as_completed_remaining(t->it);
    return t->rc == ECANCELED ? ECANCELED : 0;
}

static void ac_task_init(struct ac_task *t, nursery_as_completed_t *it, bool wait_go)
{
    memset(t, 0, sizeof *t);
    t->it = it;
    t->wait_go = wait_go;
    t->rc = -1;
    t->idx = UNSET;
    t->got = INT2PTR(1);
    latch_init(&t->go, 1);
    latch_init(&t->entered, 1);
}

static void ac_task_destroy(struct ac_task *t)
{
    latch_destroy(&t->go);
    latch_destroy(&t->entered);
}

/* Runs ac_next_task(t) in a nursery of `pool` that is cancelled: before
 * next() (wait_go) or while it waits (not wait_go). */
static void run_cancelled_next(nursery_pool_t *pool, struct ac_task *t)
{
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, ac_next_task, t, NULL), 0);
    /* Running (a cancel can no longer skip it), before next() or in it. */
    ck_assert(latch_wait(&t->entered));
    ck_assert_int_eq(nursery_cancel(n), 0);
    latch_count_down(&t->go);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    nursery_errors_free(errs);
    ck_assert_tasks_ok();
}

START_TEST(as_completed_next_in_cancelled_task_is_ecanceled)
{
    nursery_pool_t *pool = test_pool(2);
    enum { N = 3 };
    nursery_result_t *f[N];
    futures_new(f, N);
    set_future(f[2], 2);
    nursery_as_completed_t *it = ac_new(f, N, NURSERY_FOREVER);

    /* Cancelled at the call, with a result ready. */
    struct ac_task t;
    ac_task_init(&t, it, true);
    run_cancelled_next(pool, &t);
    ck_assert_int_eq(t.rc, ECANCELED);
    ck_assert_uint_eq(t.idx, UNSET);
    ck_assert_ptr_eq(t.got, INT2PTR(1));
    ck_assert_uint_eq(t.remaining, N);
    ac_task_destroy(&t);
    ac_expect(it, f, 2); /* still there */

    /* Cancelled while it waits. */
    ac_task_init(&t, it, false);
    run_cancelled_next(pool, &t);
    ck_assert_int_eq(t.rc, ECANCELED);
    ck_assert_uint_eq(t.idx, UNSET);
    ck_assert_uint_eq(t.remaining, N - 1);
    ac_task_destroy(&t);
    assert_not_done(f[0]); /* it cancelled nothing */
    assert_not_done(f[1]);
    set_future(f[0], 0);
    set_future(f[1], 1);
    ac_expect(it, f, 0);
    ac_expect(it, f, 1);

    /* Everything handed out: ECANCELED comes before NURSERY_EEND. */
    ac_task_init(&t, it, true);
    run_cancelled_next(pool, &t);
    ck_assert_int_eq(t.rc, ECANCELED);
    ck_assert_uint_eq(t.remaining, 0);
    ac_task_destroy(&t);
    ac_expect_end(it);
    nursery_as_completed_free(it);

    /* An empty iteration too. */
    it = ac_new(NULL, 0, NURSERY_FOREVER);
    ac_task_init(&t, it, true);
    run_cancelled_next(pool, &t);
    ck_assert_int_eq(t.rc, ECANCELED);
    ac_task_destroy(&t);
    nursery_as_completed_free(it);
    results_release(f, N);
    destroy_pool(pool);
}
END_TEST

/* References: the iterator holds one per entry, so the caller's may go at
 * once; a result handed out with result != NULL is the caller's reference;
 * free() releases the references of those not handed out.  Under ASan or
 * valgrind a leak or a use after free fails this test; unrun captures make
 * the last release visible (their arg_destroy runs then). */
START_TEST(as_completed_result_references)
{
    enum { N = 4 };
    nursery_result_t *f[N];
    futures_new(f, N);
    set_future(f[0], 0);
    set_future(f[1], 1);
    set_future(f[2], 2);
    nursery_as_completed_t *it = ac_new(f, N, NURSERY_FOREVER);
    /* Ours go now (f[3] kept, to complete it). */
    nursery_result_t *f3 = f[3];
    for (int i = 0; i < 3; i++)
        nursery_result_release(f[i]);
    size_t idx = UNSET;
    nursery_result_t *got = NULL;
    ck_assert_int_eq(nursery_as_completed_next(it, &idx, &got), 0);
    ck_assert_uint_eq(idx, 0);
    assert_value(got, 0); /* alive: the reference is ours now */
    nursery_result_release(got);
    ck_assert_int_eq(nursery_as_completed_next(it, &idx, NULL), 0);
    ck_assert_uint_eq(idx, 1);
    /* f[2] (done) and f[3] (pending) not handed out: free releases them. */
    nursery_as_completed_free(it);
    assert_not_done(f3);
    set_future(f3, 3);
    nursery_result_release(f3);

    /* Unrun captures: the iterator's references keep them; free releases
     * one per index. */
    atomic_int destroyed;
    atomic_init(&destroyed, 0);
    const nursery_task_options_t o = {.arg_destroy = count_destroy};
    nursery_result_t *c = NULL;
    ck_assert_int_eq(nursery_capture_create(&c, return_arg, &destroyed, &o), 0);
    nursery_result_t *twice[2] = {c, c};
    it = ac_new(twice, 2, NURSERY_FOREVER);
    nursery_result_release(c);
    ck_assert_int_eq(atomic_load(&destroyed), 0);
    ck_assert_int_eq(nursery_as_completed_set_deadline(it, nursery_after_ms(0)), 0);
    ck_assert_int_eq(nursery_as_completed_next(it, NULL, NULL), ETIMEDOUT);
    ck_assert_uint_eq(nursery_as_completed_remaining(it), 2);
    ck_assert_int_eq(atomic_load(&destroyed), 0);
    nursery_as_completed_free(it);
    ck_assert_int_eq(atomic_load(&destroyed), 1);
}
END_TEST

/* Ten thousand results completed from another thread in a random order:
 * each handed out exactly once (the only time bound: the hang limit). */
struct shuffled_completer {
    nursery_result_t **f;
    const size_t *perm;
    size_t n;
    int failures;
};

static void *shuffled_completer_main(void *arg)
{
    struct shuffled_completer *s = arg;
    for (size_t i = 0; i < s->n; i++)
        if (nursery_future_set_value(s->f[s->perm[i]], INT2PTR(s->perm[i])) != 0)
            s->failures++;
    return NULL;
}

START_TEST(as_completed_ten_thousand_from_another_thread)
{
    enum { N = 10000 };
    nursery_result_t **f = calloc(N, sizeof *f);
    size_t *perm = calloc(N, sizeof *perm);
    unsigned char *seen = calloc(N, 1);
    ck_assert(f && perm && seen);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(nursery_future_create(&f[i]), 0);
    shuffle(perm, N, 20240611u);
    /* A few done before the iterator exists. */
    for (size_t i = 0; i < 10; i++)
        ck_assert_int_eq(nursery_future_set_value(f[perm[i]], INT2PTR(perm[i])), 0);
    nursery_as_completed_t *it = ac_new(f, N, HANG);
    struct shuffled_completer s = {.f = f, .perm = perm + 10, .n = N - 10};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, shuffled_completer_main, &s), 0);
    size_t handed = 0;
    int rc = 0;
    while (handed < N) {
        size_t idx = UNSET;
        nursery_result_t *got = NULL;
        rc = nursery_as_completed_next(it, &idx, handed % 2 ? &got : NULL);
        if (rc != 0)
            break;
        ck_assert_uint_lt(idx, N);
        ck_assert_msg(!seen[idx], "index %zu handed out twice", idx);
        seen[idx] = 1;
        if (handed % 2) {
            ck_assert_ptr_eq(got, f[idx]);
            void *v = NULL;
            ck_assert_int_eq(nursery_result_value(got, &v), 0);
            ck_assert_uint_eq((size_t)(uintptr_t)v, idx);
            nursery_result_release(got);
        }
        handed++;
        ck_assert_uint_eq(nursery_as_completed_remaining(it), N - handed);
    }
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(rc == 0 && handed == N, "next returned %d after %zu of %d", rc, handed, N);
    ck_assert_int_eq(s.failures, 0);
    ac_expect_end(it);
    nursery_as_completed_free(it);
    for (size_t i = 0; i < N; i++)
        nursery_result_release(f[i]);
    free(f);
    free(perm);
    free(seen);
}
END_TEST

/* A worker of a one-thread pool iterates over captures of its own
 * nursery: next() runs them (bounded: 5 s). */
struct own_iter {
    nursery_t *n;
    int start_rc;
    int rc[OWN + 1];
    int sum;
    int seen_mask;
};

static int own_iter_task(void *arg, void **value)
{
    struct own_iter *w = arg;
    (void)value;
    nursery_result_t *c[OWN];
    for (int i = 0; i < OWN; i++) {
        w->start_rc = nursery_capture_start_soon(w->n, return_arg, INT2PTR(i + 1), NULL, &c[i]);
        if (w->start_rc) {
            results_release(c, (size_t)i);
            return w->start_rc;
        }
    }
    nursery_as_completed_t *it = NULL;
    int rc = nursery_as_completed_create(&it, c, OWN, nursery_after_ms(5000));
    results_release(c, OWN);
    if (rc) {
        w->start_rc = rc;
        return rc;
    }
    for (int k = 0; k <= OWN; k++) {
        size_t idx = UNSET;
        nursery_result_t *got = NULL;
        w->rc[k] = nursery_as_completed_next(it, &idx, &got);
        if (w->rc[k] == 0) {
            void *v = NULL;
            if (idx < OWN && nursery_result_value(got, &v) == 0) {
                w->sum += PTR2INT(v);
                w->seen_mask |= 1 << idx;
            }
            nursery_result_release(got);
        }
    }
    nursery_as_completed_free(it);
    return 0;
}

START_TEST(as_completed_in_only_worker_runs_own_captures)
{
    nursery_pool_t *pool = capped_pool(1);
    struct own_iter w = {.start_rc = -1};
    ck_assert_int_eq(nursery_open(&w.n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(w.n, own_iter_task, &w, NULL), 0);
    ck_assert_int_eq(nursery_join(w.n, HANG, NULL), 0);
    ck_assert_int_eq(w.start_rc, 0);
    for (int k = 0; k < OWN; k++)
        ck_assert_msg(w.rc[k] == 0, "next %d in the only worker returned %d", k, w.rc[k]);
    ck_assert_int_eq(w.rc[OWN], NURSERY_EEND);
    ck_assert_int_eq(w.seen_mask, (1 << OWN) - 1);
    ck_assert_int_eq(w.sum, OWN * (OWN + 1) / 2);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *waitset_suite(void)
{
    Suite *s = suite_create("waitset");
    TCase *tc = tcase_with_timeout(s, "wait_arguments", 30);
    tcase_add_test(tc, wait_on_nothing_returns_zero_at_once);
    tcase_add_test(tc, wait_rejects_bad_arguments);

    tc = tcase_with_timeout(s, "wait_conditions", 60);
    tcase_add_test(tc, wait_first_completed_partition);
    tcase_add_test(tc, wait_first_completed_reports_every_done_result);
    tcase_add_test(tc, wait_all_completed_partition_is_completion_order);
    tcase_add_test(tc, wait_first_error_ignores_cancelled_results);
    tcase_add_test(tc, wait_first_error_returns_on_first_failure);
    tcase_add_test(tc, wait_first_error_without_failure_waits_for_all);

    tc = tcase_with_timeout(s, "wait_deadlines", 60);
    tcase_add_test(tc, wait_times_out_with_partition_and_cancels_nothing);
    tcase_add_test(tc, wait_with_past_deadline_only_looks);

    tc = tcase_with_timeout(s, "wait_sets", 60);
    tcase_add_test(tc, wait_duplicates_are_on_the_same_side);
    tcase_add_test(tc, wait_mixes_captures_and_futures);
    tcase_add_test(tc, wait_over_more_than_16_results);

    tc = tcase_with_timeout(s, "wait_in_tasks", 60);
    tcase_add_test(tc, wait_in_cancelled_task_is_ecanceled);
    tcase_add_test(tc, wait_all_completed_on_own_capture_is_edeadlk);
    tcase_add_test(tc, wait_in_only_worker_runs_own_captures);

    tc = tcase_with_timeout(s, "as_completed", 60);
    tcase_add_test(tc, as_completed_hands_out_in_completion_order);
    tcase_add_test(tc, as_completed_done_ones_come_first);
    tcase_add_test(tc, as_completed_duplicates_are_handed_out_twice);
    tcase_add_test(tc, as_completed_empty_and_bad_arguments);
    tcase_add_test(tc, as_completed_total_deadline_then_set_deadline);
    tcase_add_test(tc, as_completed_next_in_cancelled_task_is_ecanceled);
    tcase_add_test(tc, as_completed_result_references);
    tcase_add_test(tc, as_completed_in_only_worker_runs_own_captures);

    tc = tcase_with_timeout(s, "as_completed_many", 120);
    tcase_add_test(tc, as_completed_ten_thousand_from_another_thread);
    return s;
}

int main(void)
{
    return run_suite(waitset_suite());
}
