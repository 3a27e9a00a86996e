/* SPDX-License-Identifier: MIT */
/*
 * test_wait.c - waiting for several results (src/wait.c): nursery_wait_all,
 * nursery_wait_any and nursery_results_to_channel.
 *
 * Completion order is forced: futures are completed from the test thread
 * (or from threads serialised by a mutex that records the order), captures
 * wait for gates.  Nothing sleeps to order events.
 */
#include <stdio.h>
#include <string.h>

#include "helpers.h"

#define HANG nursery_after_ms(TEST_HANG_MS)

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

static void set(nursery_result_t *f, int v)
{
    ck_assert_int_eq(nursery_future_set_value(f, INT2PTR(v)), 0);
}

/* A task that calls wait_any or wait_all on a set, from inside a nursery. */
struct waiter_args {
    nursery_result_t *const *results;
    size_t n;
    bool any;
    latch_t entered;
    int rc;
    size_t index;
};

static int waiter_task(void *arg, void **value)
{
    struct waiter_args *w = arg;
    (void)value;
    latch_count_down(&w->entered);
    if (w->any)
        w->rc = nursery_wait_any(w->results, w->n, HANG, &w->index);
    else
        w->rc = nursery_wait_all(w->results, w->n, HANG);
    return w->rc == ECANCELED ? ECANCELED : 0;
}

static void waiter_init(struct waiter_args *w, nursery_result_t *const *results, size_t n,
                        bool any)
{
    memset(w, 0, sizeof *w);
    w->results = results;
    w->n = n;
    w->any = any;
    w->rc = -1;
    w->index = 12345;
    latch_init(&w->entered, 1);
}

/* ------------------------------------------------------------------------ */
/* Arguments                                                                */
/* ------------------------------------------------------------------------ */

START_TEST(wait_on_empty_set)
{
    nursery_result_t *f[1];
    futures_new(f, 1);
    size_t idx = 77;
    ck_assert_int_eq(nursery_wait_any(f, 0, HANG, &idx), EINVAL);
    ck_assert_int_eq(nursery_wait_any(f, 0, nursery_after_ms(0), &idx), EINVAL);
    ck_assert_int_eq(nursery_wait_all(f, 0, HANG), 0);
    ck_assert_int_eq(nursery_wait_all(f, 0, nursery_after_ms(0)), 0);
    /* Nothing happened to the (unused) future. */
    ck_assert(!nursery_result_is_done(f[0]));
    results_release(f, 1);
}
END_TEST

START_TEST(wait_rejects_null_arguments)
{
    nursery_result_t *f[3];
    futures_new(f, 3);
    set(f[0], 1);
    size_t idx = 77;
    ck_assert_int_eq(nursery_wait_any(NULL, 3, HANG, &idx), EINVAL);
    ck_assert_int_eq(nursery_wait_any(f, 3, HANG, NULL), EINVAL);
    ck_assert_int_eq(nursery_wait_all(NULL, 3, HANG), EINVAL);
    /* A NULL entry is EINVAL even when another entry is already done. */
    nursery_result_t *with_null[3] = {f[0], NULL, f[2]};
    ck_assert_int_eq(nursery_wait_any(with_null, 3, HANG, &idx), EINVAL);
    ck_assert_int_eq(nursery_wait_all(with_null, 3, HANG), EINVAL);
    nursery_result_t *null_last[2] = {f[0], NULL};
    ck_assert_int_eq(nursery_wait_any(null_last, 2, HANG, &idx), EINVAL);
    ck_assert_int_eq(nursery_wait_all(null_last, 2, HANG), EINVAL);
    ck_assert(!nursery_result_is_done(f[1]));
    ck_assert(!nursery_result_is_done(f[2]));
    results_release(f, 3);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* wait_all                                                                 */
/* ------------------------------------------------------------------------ */

START_TEST(wait_all_mixes_captures_and_futures)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *f[2];
    futures_new(f, 2);
    latch_t entered;
    latch_init(&entered, 2);
    struct gated_value g[2] = {{.gate = gate_new(), .value = 10, .entered = &entered},
                         {.gate = gate_new(), .value = 11, .entered = &entered}};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *c[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(nursery_capture_start_soon(n, gated_value_task, &g[i], NULL, &c[i]), 0);
    /* Both running: the waits below cannot run them (see wait_deadline_*). */
    ck_assert(latch_wait(&entered));
    nursery_result_t *all[4] = {c[0], f[0], c[1], f[1]};

    ck_assert_int_eq(nursery_wait_all(all, 4, nursery_after_ms(0)), ETIMEDOUT);
    set(f[1], 21);
    size_t idx = 77;
    ck_assert_int_eq(nursery_wait_any(all, 4, HANG, &idx), 0);
    ck_assert_uint_eq(idx, 3);
    gate_open(g[0].gate);
    ck_assert_int_eq(nursery_result_wait(c[0], HANG), 0);
    /* The future completed first is still the earliest. */
    ck_assert_int_eq(nursery_wait_any(all, 4, HANG, &idx), 0);
    ck_assert_uint_eq(idx, 3);
    nursery_result_t *caps_first[3] = {f[0], c[1], c[0]};
    ck_assert_int_eq(nursery_wait_any(caps_first, 3, HANG, &idx), 0);
    ck_assert_uint_eq(idx, 2);
    /* Two of four done: still a timeout. */
    ck_assert_int_eq(nursery_wait_all(all, 4, nursery_after_ms(0)), ETIMEDOUT);
    set(f[0], 20);
    gate_open(g[1].gate);
    ck_assert_int_eq(nursery_wait_all(all, 4, HANG), 0);
    for (int i = 0; i < 4; i++)
        ck_assert(nursery_result_is_done(all[i]));
    assert_value(c[0], 10);
    assert_value(c[1], 11);
    assert_value(f[0], 20);
    assert_value(f[1], 21);
    /* Again, all done: returns at once even with a passed deadline. */
    ck_assert_int_eq(nursery_wait_all(all, 4, nursery_after_ms(0)), 0);

    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    results_release(c, 2);
    results_release(f, 2);
    nursery_result_release(g[0].gate);
    nursery_result_release(g[1].gate);
    latch_destroy(&entered);
    destroy_pool(pool);
}
END_TEST

/* Completes futures in a given order from a plain thread. */
struct completer {
    nursery_result_t **f;
    const int *order;
    size_t n;
    latch_t *go;
};

static void *completer_thread(void *arg)
{
    struct completer *c = arg;
    if (c->go != NULL)
        latch_wait(c->go);
    for (size_t i = 0; i < c->n; i++)
        nursery_future_set_value(c->f[c->order[i]], INT2PTR(c->order[i] + 100));
    return NULL;
}

START_TEST(wait_all_returns_when_all_done_in_any_order)
{
    enum { N = 6 };
    nursery_result_t *f[N];
    futures_new(f, N);
    static const int order[N] = {5, 0, 3, 1, 4, 2};
    struct completer c = {.f = f, .order = order, .n = N, .go = NULL};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, completer_thread, &c), 0);
    ck_assert_int_eq(nursery_wait_all(f, N, HANG), 0);
    for (int i = 0; i < N; i++)
        assert_value(f[i], i + 100);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    results_release(f, N);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* wait_any                                                                 */
/* ------------------------------------------------------------------------ */

START_TEST(wait_any_returns_first_completed)
{
    nursery_pool_t *pool = test_pool(2);
    enum { N = 5 };
    nursery_result_t *f[N];
    futures_new(f, N);
    struct waiter_args w;
    waiter_init(&w, f, N, true);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *rw = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, waiter_task, &w, NULL, &rw), 0);
    ck_assert(latch_wait(&w.entered));
    /* 3 completes first, then 1: whether the waiter wakes before or after
     * the second, the earliest completion is 3. */
    set(f[3], 3);
    set(f[1], 1);
    ck_assert_int_eq(nursery_result_wait(rw, HANG), 0);
    ck_assert_int_eq(w.rc, 0);
    ck_assert_uint_eq(w.index, 3);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);

    /* From the test thread, with both already done: the earliest again. */
    size_t idx = 77;
    ck_assert_int_eq(nursery_wait_any(f, N, HANG, &idx), 0);
    ck_assert_uint_eq(idx, 3);
    /* The same set in another order: still the one completed first. */
    nursery_result_t *perm[N] = {f[4], f[1], f[0], f[2], f[3]};
    ck_assert_int_eq(nursery_wait_any(perm, N, HANG, &idx), 0);
    ck_assert_uint_eq(idx, 4);
    nursery_result_t *only_later[3] = {f[0], f[1], f[2]};
    ck_assert_int_eq(nursery_wait_any(only_later, 3, HANG, &idx), 0);
    ck_assert_uint_eq(idx, 1);

    latch_destroy(&w.entered);
    nursery_result_release(rw);
    results_release(f, N);
    destroy_pool(pool);
}
END_TEST

START_TEST(wait_any_with_done_entry_returns_immediately)
{
    nursery_result_t *f[4];
    futures_new(f, 4);
    set(f[2], 2);
    size_t idx = 77;
    /* A passed deadline: a done entry wins over the timeout. */
    ck_assert_int_eq(nursery_wait_any(f, 4, nursery_after_ms(0), &idx), 0);
    ck_assert_uint_eq(idx, 2);
    idx = 77;
    ck_assert_int_eq(nursery_wait_any(f, 4, NURSERY_FOREVER, &idx), 0);
    ck_assert_uint_eq(idx, 2);
    /* A one-element set. */
    ck_assert_int_eq(nursery_wait_any(&f[2], 1, 0, &idx), 0);
    ck_assert_uint_eq(idx, 0);
    /* An entry done with an error counts as done too. */
    nursery_result_t *e = NULL;
    ck_assert_int_eq(nursery_future_create(&e), 0);
    ck_assert_int_eq(nursery_future_fail(e, EIO, "failed"), 0);
    nursery_result_t *set2[3] = {f[0], e, f[1]};
    ck_assert_int_eq(nursery_wait_any(set2, 3, nursery_after_ms(0), &idx), 0);
    ck_assert_uint_eq(idx, 1);
    ck_assert(!nursery_result_is_done(f[0]));
    ck_assert(!nursery_result_is_done(f[1]));
    ck_assert(!nursery_result_is_done(f[3]));
    nursery_result_release(e);
    results_release(f, 4);
}
END_TEST

START_TEST(wait_any_and_all_time_out_with_nothing_done)
{
    nursery_result_t *f[3];
    futures_new(f, 3);
    size_t idx = 77;
    ck_assert_int_eq(nursery_wait_any(f, 3, nursery_after_ms(0), &idx), ETIMEDOUT);
    ck_assert_int_eq(nursery_wait_any(f, 3, 0, &idx), ETIMEDOUT);
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_wait_any(f, 3, nursery_after_ms(20), &idx), ETIMEDOUT);
    ck_assert_int_ge(nursery_now() - t0, 20 * 1000000LL);
    ck_assert_int_eq(nursery_wait_all(f, 3, nursery_after_ms(0)), ETIMEDOUT);
    t0 = nursery_now();
    ck_assert_int_eq(nursery_wait_all(f, 3, nursery_after_ms(20)), ETIMEDOUT);
    ck_assert_int_ge(nursery_now() - t0, 20 * 1000000LL);
    for (int i = 0; i < 3; i++)
        ck_assert(!nursery_result_is_done(f[i]));
    /* Timing out left no waiter behind: completing later works, and a new
     * wait sees it. */
    set(f[1], 1);
    ck_assert_int_eq(nursery_wait_any(f, 3, nursery_after_ms(0), &idx), 0);
    ck_assert_uint_eq(idx, 1);
    /* wait_all with some done still times out. */
    ck_assert_int_eq(nursery_wait_all(f, 3, nursery_after_ms(5)), ETIMEDOUT);
    results_release(f, 3);
}
END_TEST

START_TEST(wait_any_and_all_are_cancellable)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *f[3];
    futures_new(f, 3);
    struct waiter_args wany, wall;
    waiter_init(&wany, f, 3, true);
    waiter_init(&wall, f, 3, false);
    set(f[0], 0); /* wait_all still has two to wait for */

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *pending[2] = {f[1], f[2]};
    wany.results = pending;
    wany.n = 2;
    ck_assert_int_eq(nursery_start_soon(n, waiter_task, &wany, NULL), 0);
    ck_assert_int_eq(nursery_start_soon(n, waiter_task, &wall, NULL), 0);
    ck_assert(latch_wait(&wany.entered));
    ck_assert(latch_wait(&wall.entered));
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_lt(nursery_now() - t0, (nursery_time_t)TEST_HANG_MS * 1000000 / 2);
    ck_assert_int_eq(wany.rc, ECANCELED);
    ck_assert_int_eq(wall.rc, ECANCELED);
    /* Cancelling the waiters cancelled none of the results. */
    assert_value(f[0], 0);
    ck_assert(!nursery_result_is_done(f[1]));
    ck_assert(!nursery_result_is_done(f[2]));
    set(f[1], 1);
    set(f[2], 2);

    latch_destroy(&wany.entered);
    latch_destroy(&wall.entered);
    results_release(f, 3);
    destroy_pool(pool);
}
END_TEST

START_TEST(wait_cancels_none_of_the_results)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 3 };
    struct gated_value g[N];
    nursery_result_t *c[N];
    latch_t entered;
    latch_init(&entered, N);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < N; i++) {
        g[i] = (struct gated_value){.gate = gate_new(), .value = i, .wait_rc = -1, .entered = &entered};
        ck_assert_int_eq(nursery_capture_start_soon(n, gated_value_task, &g[i], NULL, &c[i]), 0);
    }
    ck_assert(latch_wait(&entered));
    size_t idx = 77;
    /* Timeouts cancel nothing. */
    ck_assert_int_eq(nursery_wait_any(c, N, nursery_after_ms(10), &idx), ETIMEDOUT);
    ck_assert_int_eq(nursery_wait_all(c, N, nursery_after_ms(10)), ETIMEDOUT);
    /* Neither does a wait_any that returns a winner. */
    gate_open(g[1].gate);
    ck_assert_int_eq(nursery_wait_any(c, N, HANG, &idx), 0);
    ck_assert_uint_eq(idx, 1);
    ck_assert(!nursery_result_is_done(c[0]));
    ck_assert(!nursery_result_is_done(c[2]));
    ck_assert(!nursery_cancelled());
    /* The losers finish normally when their gates open. */
    gate_open(g[0].gate);
    gate_open(g[2].gate);
    ck_assert_int_eq(nursery_wait_all(c, N, HANG), 0);
    for (int i = 0; i < N; i++) {
        assert_value(c[i], i);
        ck_assert_int_eq(g[i].wait_rc, 0);
    }
    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    ck_assert_ptr_null(errs);
    for (int i = 0; i < N; i++) {
        nursery_result_release(c[i]);
        nursery_result_release(g[i].gate);
    }
    latch_destroy(&entered);
    destroy_pool(pool);
}
END_TEST

/* A task that waits for a gate at most `bound_ms` (so that a library that
 * wrongly runs it inside a wait makes the test fail instead of hang). */
struct bounded {
    nursery_result_t *gate;
    int bound_ms;
    atomic_int runs;
    pthread_t thread; /* written before runs is incremented */
    latch_t *entered; /* counted down when it starts (NULL: none) */
};

static int bounded_task(void *arg, void **value)
{
    struct bounded *b = arg;
    b->thread = pthread_self();
    atomic_fetch_add(&b->runs, 1);
    if (b->entered != NULL)
        latch_count_down(b->entered);
    int rc = nursery_result_wait(b->gate, nursery_after_ms(b->bound_ms));
    *value = INT2PTR(rc);
    return 0;
}

/* The setting of the two tests below: a one-thread pool whose only worker
 * is busy with `blocker` (a gated capture, rb), a capture rq of the bounded
 * task `q` queued behind it, and a pending future f. */
struct queued_capture {
    nursery_pool_t *pool;
    latch_t entered; /* blocker has started */
    struct gated_value blocker;
    struct bounded q;
    nursery_result_t *f;
    nursery_t *n;
    nursery_result_t *rb, *rq;
};

/* Sets it up; q counts `qstarted` down when it starts (NULL: none). */
static void queued_capture_open(struct queued_capture *s, latch_t *qstarted)
{
    memset(s, 0, sizeof *s);
    s->pool = capped_pool(1);
    latch_init(&s->entered, 1);
    s->blocker.gate = gate_new();
    s->blocker.value = 1;
    s->blocker.wait_rc = -1;
    s->blocker.entered = &s->entered;
    s->q.gate = gate_new();
    s->q.bound_ms = 3000;
    atomic_init(&s->q.runs, 0);
    s->q.entered = qstarted;
    ck_assert_int_eq(nursery_future_create(&s->f), 0);

    ck_assert_int_eq(nursery_open(&s->n, s->pool), 0);
    ck_assert_int_eq(nursery_capture_start_soon(s->n, gated_value_task, &s->blocker, NULL, &s->rb), 0);
    ck_assert(latch_wait(&s->entered)); /* the only worker is busy */
    ck_assert_int_eq(nursery_capture_start_soon(s->n, bounded_task, &s->q, NULL, &s->rq), 0);
}

/* Lets both tasks finish and joins the nursery. */
static void queued_capture_join(struct queued_capture *s)
{
    gate_open(s->q.gate);
    gate_open(s->blocker.gate);
    ck_assert_int_eq(nursery_join(s->n, HANG, NULL), 0);
}

/* Frees what queued_capture_open made (after queued_capture_join). */
static void queued_capture_free(struct queued_capture *s)
{
    nursery_result_release(s->rb);
    nursery_result_release(s->rq);
    nursery_result_release(s->f);
    nursery_result_release(s->q.gate);
    nursery_result_release(s->blocker.gate);
    latch_destroy(&s->entered);
    destroy_pool(s->pool);
}

/* A queued capture in a set must not make wait_any overrun its deadline:
 * the caller of a wait with a deadline only waits (the pool's workers run
 * the tasks).  On a one-thread pool whose worker is busy, the capture stays
 * queued, and wait_any over it and a pending future times out on time. */
START_TEST(wait_deadline_holds_with_queued_capture)
{
    struct queued_capture s;
    queued_capture_open(&s, NULL);

    nursery_result_t *set[2] = {s.rq, s.f};
    size_t idx = 77;
    nursery_time_t t0 = nursery_now();
    int rc = nursery_wait_any(set, 2, nursery_after_ms(50), &idx);
    nursery_time_t waited_ms = (nursery_now() - t0) / 1000000;
    int ran_here = atomic_load(&s.q.runs);
    ck_assert_msg(rc == ETIMEDOUT && waited_ms < 1500 && ran_here == 0,
                  "wait_any(50 ms) returned %d after %lld ms; the queued capture ran %d "
                  "time(s) in the waiting thread",
                  rc, (long long)waited_ms, ran_here);
    ck_assert(!nursery_result_is_done(s.rq));

    /* wait_all and a single wait with a passed deadline only poll too. */
    t0 = nursery_now();
    rc = nursery_wait_all(set, 2, nursery_after_ms(0));
    waited_ms = (nursery_now() - t0) / 1000000;
    ck_assert_msg(rc == ETIMEDOUT && waited_ms < 1500 && atomic_load(&s.q.runs) == 0,
                  "wait_all(passed deadline) returned %d after %lld ms", rc,
                  (long long)waited_ms);

    queued_capture_join(&s);
    ck_assert_int_eq(atomic_load(&s.q.runs), 1);
    void *v = NULL;
    ck_assert_int_eq(nursery_result_value(s.rq, &v), 0);
    ck_assert_int_eq(PTR2INT(v), 0); /* its gate wait succeeded */
    queued_capture_free(&s);
}
END_TEST

/* Completes a future as soon as a capture starts, or after 300 ms if it
 * does not (a correct wait_any leaves it queued). */
struct late_setter {
    latch_t *when;
    nursery_result_t *f;
};

static void *late_setter_thread(void *arg)
{
    struct late_setter *ls = arg;
    latch_wait_ms(ls->when, 300);
    nursery_future_set_value(ls->f, INT2PTR(5));
    return NULL;
}

/* wait_any returns at the first completion even when one of its results
 * is a capture still queued: the waiter must not be stuck running that
 * capture while another result completes.  A wait_any that ran the queued
 * capture itself returns only when the capture's bounded gate wait gives
 * up (3 s), instead of within a few hundred ms. */
START_TEST(wait_any_first_completion_not_delayed_by_queued_capture)
{
    latch_t qstarted;
    latch_init(&qstarted, 1);
    struct queued_capture s;
    queued_capture_open(&s, &qstarted);
    struct late_setter ls = {.when = &qstarted, .f = s.f};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, late_setter_thread, &ls), 0);

    nursery_result_t *set[2] = {s.rq, s.f};
    size_t idx = 77;
    nursery_time_t t0 = nursery_now();
    int rc = nursery_wait_any(set, 2, HANG, &idx);
    nursery_time_t waited_ms = (nursery_now() - t0) / 1000000;
    int runs = atomic_load(&s.q.runs);
    bool ran_here = runs > 0 && pthread_equal(s.q.thread, pthread_self());
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(idx == 1 && waited_ms < 2000 && !ran_here,
                  "wait_any returned index %zu after %lld ms; the queued capture ran %s",
                  idx, (long long)waited_ms, ran_here ? "in the waiting thread" : "elsewhere");
    queued_capture_join(&s);
    queued_capture_free(&s);
    latch_destroy(&qstarted);
}
END_TEST

/* A pool worker's waits run the queued captures they wait for (issue 6,
 * item 11).  On a pool of one thread that cannot grow, a task starts
 * captures into its own nursery and waits for them: nobody else can run
 * them.  The waits are bounded (5 s) so that a wait that only waits fails
 * the test instead of hanging it. */
#define OWN_CAPTURES 3

static int return_arg(void *arg, void **value)
{
    *value = arg;
    return 0;
}

/* Starts OWN_CAPTURES captures of return_arg(1..) into n; 0 or the first
 * failing start's code (then the started ones are released). */
static int start_own_captures(nursery_t *n, nursery_result_t **c)
{
    for (int i = 0; i < OWN_CAPTURES; i++) {
        int rc = nursery_capture_start_soon(n, return_arg, INT2PTR(i + 1), NULL, &c[i]);
        if (rc) {
            results_release(c, (size_t)i);
            return rc;
        }
    }
    return 0;
}

struct own_wait_any {
    nursery_t *n;
    int start_rc;
    int rc;
    size_t index;
    int value; /* of the result at index */
};

static int wait_any_on_own_captures(void *arg, void **value)
{
    (void)value;
    struct own_wait_any *w = arg;
    nursery_result_t *c[OWN_CAPTURES];
    w->start_rc = start_own_captures(w->n, c);
    if (w->start_rc)
        return w->start_rc;
    w->rc = nursery_wait_any(c, OWN_CAPTURES, nursery_after_ms(5000), &w->index);
    void *v = NULL;
    if (w->rc == 0 && w->index < OWN_CAPTURES && nursery_result_value(c[w->index], &v) == 0)
        w->value = PTR2INT(v);
    results_release(c, OWN_CAPTURES);
    return 0;
}

START_TEST(wait_any_from_only_worker_runs_captures_of_own_nursery)
{
    nursery_pool_t *pool = capped_pool(1);
    struct own_wait_any w = {.rc = -1, .index = 77, .value = -1};
    ck_assert_int_eq(nursery_open(&w.n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(w.n, wait_any_on_own_captures, &w, NULL), 0);
    ck_assert_int_eq(nursery_join(w.n, HANG, NULL), 0);
    ck_assert_int_eq(w.start_rc, 0);
    ck_assert_msg(w.rc == 0, "wait_any in the only worker returned %d", w.rc);
    ck_assert_uint_lt(w.index, OWN_CAPTURES);
    ck_assert_int_eq(w.value, (int)w.index + 1);
    destroy_pool(pool);
}
END_TEST

struct own_to_channel {
    nursery_t *n;
    nursery_sender_t *tx;
    int start_rc;
    int rc;
};

static int results_to_channel_on_own_captures(void *arg, void **value)
{
    (void)value;
    struct own_to_channel *t = arg;
    nursery_result_t *c[OWN_CAPTURES];
    t->start_rc = start_own_captures(t->n, c);
    if (t->start_rc) {
        nursery_sender_close(t->tx);
        return t->start_rc;
    }
    t->rc = nursery_results_to_channel(c, OWN_CAPTURES, t->tx, true);
    results_release(c, OWN_CAPTURES);
    return 0;
}

START_TEST(results_to_channel_from_only_worker_runs_captures_of_own_nursery)
{
    nursery_pool_t *pool = capped_pool(1);
    nursery_receiver_t *rx = NULL;
    struct own_to_channel t = {.rc = -1};
    /* Room for every result: sending never waits. */
    ck_assert_int_eq(nursery_channel_create(OWN_CAPTURES, release_item, &t.tx, &rx), 0);
    ck_assert_int_eq(nursery_open(&t.n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(t.n, results_to_channel_on_own_captures, &t, NULL), 0);
    int got = 0, sum = 0, rc = 0;
    while (got < OWN_CAPTURES) {
        void *item = NULL;
        rc = nursery_channel_recv(rx, &item, nursery_after_ms(5000));
        if (rc)
            break;
        void *v = NULL;
        if (nursery_result_value(item, &v) == 0)
            sum += PTR2INT(v);
        nursery_result_release(item);
        got++;
    }
    /* A forwarder stuck in its wait would hold the join forever. */
    if (got < OWN_CAPTURES)
        ck_assert_int_eq(nursery_cancel(t.n), 0);
    ck_assert_int_eq(nursery_join(t.n, HANG, NULL), 0);
    ck_assert_msg(got == OWN_CAPTURES, "received %d of %d results (last recv: %d)", got,
                  OWN_CAPTURES, rc);
    ck_assert_int_eq(sum, 1 + 2 + 3);
    ck_assert_int_eq(t.start_rc, 0);
    ck_assert_int_eq(t.rc, 0);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, HANG), NURSERY_EEOC);
    nursery_sender_free(t.tx);
    nursery_receiver_free(rx);
    destroy_pool(pool);
}
END_TEST

/* The race: several threads complete futures at once while wait_any waits.
 * The completions are serialised by a mutex that records their order, so
 * the first completion is known exactly. */
#define RACERS 4
#define RACE_ROUNDS 200

struct race {
    nursery_result_t *f[RACERS];
    latch_t go;
    pthread_mutex_t mu;
    int order[RACERS]; /* indexes in completion order (mu) */
    int completed;     /* entries used in order (mu) */
};

struct racer {
    struct race *race;
    int i;
};

static void *racer_thread(void *arg)
{
    struct racer *rc = arg;
    struct race *r = rc->race;
    latch_count_down(&r->go);
    latch_wait(&r->go);
    pthread_mutex_lock(&r->mu);
    if (nursery_future_set_value(r->f[rc->i], INT2PTR(rc->i)) == 0)
        r->order[r->completed++] = rc->i;
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

START_TEST(wait_any_race_returns_earliest_completion)
{
    for (int round = 0; round < RACE_ROUNDS; round++) {
        struct race r;
        futures_new(r.f, RACERS);
        latch_init(&r.go, RACERS);
        pthread_mutex_init(&r.mu, NULL);
        r.completed = 0;
        struct racer rc[RACERS];
        pthread_t th[RACERS];
        for (int i = 0; i < RACERS; i++) {
            rc[i] = (struct racer){.race = &r, .i = i};
            ck_assert_int_eq(pthread_create(&th[i], NULL, racer_thread, &rc[i]), 0);
        }
        size_t idx = 77;
        int rv = nursery_wait_any(r.f, RACERS, HANG, &idx);
        /* Snapshot which are done, and the first completion. */
        pthread_mutex_lock(&r.mu);
        int completed = r.completed;
        int first = completed > 0 ? r.order[0] : -1;
        pthread_mutex_unlock(&r.mu);
        ck_assert_int_eq(rv, 0);
        ck_assert_uint_lt(idx, RACERS);
        ck_assert(nursery_result_is_done(r.f[idx]));
        /* The recorded order is written just after the completion, under
         * the same lock, so the first completion may not be recorded yet;
         * after the joins it is. */
        for (int i = 0; i < RACERS; i++)
            ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(r.completed, RACERS);
        ck_assert_msg((int)idx == r.order[0],
                      "round %d: wait_any returned %zu, first completed %d (seen %d/%d)",
                      round, idx, r.order[0], first, completed);
        assert_value(r.f[idx], (int)idx);
        results_release(r.f, RACERS);
        latch_destroy(&r.go);
        pthread_mutex_destroy(&r.mu);
    }
}
END_TEST

/* ------------------------------------------------------------------------ */
/* results_to_channel                                                       */
/* ------------------------------------------------------------------------ */

/* Receives up to `max` results (each a new reference, released here) until
 * end of channel or until `max` have come; returns how many. */
static int drain(nursery_receiver_t *rx, nursery_result_t **got, int max)
{
    int k = 0;
    while (k < max) {
        void *item = NULL;
        int rc = nursery_channel_recv(rx, &item, HANG);
        if (rc == NURSERY_EEOC)
            break;
        ck_assert_int_eq(rc, 0);
        got[k++] = item;
        nursery_result_release(item);
    }
    return k;
}

START_TEST(results_to_channel_sends_in_completion_order)
{
    enum { N = 5 };
    nursery_result_t *f[N];
    futures_new(f, N);
    static const int order[N] = {2, 0, 4, 1, 3};
    for (int i = 0; i < N; i++)
        set(f[order[i]], order[i]);
    nursery_sender_t *tx = NULL;
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(N, release_item, &tx, &rx), 0);
    ck_assert_int_eq(nursery_results_to_channel(f, N, tx, true), 0);

    nursery_result_t *got[N + 1];
    ck_assert_int_eq(drain(rx, got, N + 1), N);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_eq(got[i], f[order[i]]);
    /* Closed on completion: the loop ended with EEOC, and stays there. */
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), NURSERY_EEOC);
    ck_assert_int_eq(nursery_sender_close(tx), NURSERY_ECLOSED);
    nursery_channel_stats_t st;
    ck_assert_int_eq(nursery_receiver_stats(rx, &st), 0);
    ck_assert_uint_eq(st.open_senders, 0);
    ck_assert_uint_eq(st.buffered, 0);

    /* The references sent were the channel's: ours are still valid. */
    for (int i = 0; i < N; i++)
        assert_value(f[i], i);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    results_release(f, N);
}
END_TEST

START_TEST(results_to_channel_follows_live_completions)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 4 };
    nursery_result_t *f[N];
    futures_new(f, N);
    nursery_sender_t *tx = NULL;
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(0, release_item, &tx, &rx), 0);
    struct to_channel tc = {.results = f, .n = N, .tx = tx, .close_on_complete = true, .rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, to_channel_task, &tc, NULL), 0);

    /* Each completion is received before the next one happens. */
    static const int order[N] = {3, 1, 0, 2};
    for (int i = 0; i < N; i++) {
        set(f[order[i]], order[i]);
        void *item = NULL;
        ck_assert_int_eq(nursery_channel_recv(rx, &item, HANG), 0);
        ck_assert_ptr_eq(item, f[order[i]]);
        nursery_result_release(item);
    }
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, HANG), NURSERY_EEOC);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(tc.rc, 0);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    results_release(f, N);
    destroy_pool(pool);
}
END_TEST

START_TEST(results_to_channel_without_close_leaves_channel_open)
{
    enum { N = 3 };
    nursery_result_t *f[N];
    futures_new(f, N);
    for (int i = 0; i < N; i++)
        set(f[i], i);
    nursery_sender_t *tx = NULL;
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(N + 1, release_item, &tx, &rx), 0);
    ck_assert_int_eq(nursery_results_to_channel(f, N, tx, false), 0);

    nursery_channel_stats_t st;
    ck_assert_int_eq(nursery_sender_stats(tx, &st), 0);
    ck_assert_uint_eq(st.open_senders, 1);
    ck_assert_uint_eq(st.buffered, N);
    for (int i = 0; i < N; i++) {
        void *item = NULL;
        ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
        ck_assert_ptr_eq(item, f[i]);
        nursery_result_release(item);
    }
    /* Still open: empty, not ended. */
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);
    /* The sender still works, and closing it by hand ends the channel. */
    ck_assert_int_eq(nursery_results_to_channel(&f[1], 1, tx, false), 0);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
    ck_assert_ptr_eq(item, f[1]);
    nursery_result_release(item);
    ck_assert_int_eq(nursery_sender_close(tx), 0);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), NURSERY_EEOC);

    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    results_release(f, N);
}
END_TEST

START_TEST(results_to_channel_cancelled_still_closes_channel)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 3 };
    nursery_result_t *f[N];
    futures_new(f, N);
    set(f[1], 1); /* the only one that ever completes */
    nursery_sender_t *tx = NULL;
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(1, release_item, &tx, &rx), 0);
    struct to_channel tc = {.results = f, .n = N, .tx = tx, .close_on_complete = true, .rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *rtc = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, to_channel_task, &tc, NULL, &rtc), 0);

    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, HANG), 0);
    ck_assert_ptr_eq(item, f[1]);
    nursery_result_release(item);

    /* Cancel the forwarding task alone; the consumer's loop must end. */
    ck_assert_int_eq(nursery_result_cancel(rtc), 0);
    nursery_result_t *got[N];
    ck_assert_int_eq(drain(rx, got, N), 0);
    ck_assert_int_eq(nursery_result_wait(rtc, HANG), 0);
    ck_assert_int_eq(tc.rc, ECANCELED);
    void *v = NULL;
    ck_assert_int_eq(nursery_result_value(rtc, &v), NURSERY_EFAILED);
    nursery_channel_stats_t st;
    ck_assert_int_eq(nursery_receiver_stats(rx, &st), 0);
    ck_assert_uint_eq(st.open_senders, 0);
    /* It cancelled none of the results it was forwarding. */
    ck_assert(!nursery_result_is_done(f[0]));
    ck_assert(!nursery_result_is_done(f[2]));

    nursery_errors_t *errs = (nursery_errors_t *)1;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    nursery_errors_free(errs);
    nursery_result_release(rtc);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    results_release(f, N);
    destroy_pool(pool);
}
END_TEST

/* The same when the whole nursery is cancelled, the consumer elsewhere. */
START_TEST(results_to_channel_closes_when_nursery_cancelled)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 2 };
    nursery_result_t *f[N];
    futures_new(f, N);
    nursery_sender_t *tx = NULL;
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(1, release_item, &tx, &rx), 0);
    latch_t entered;
    latch_init(&entered, 1);
    struct to_channel tc = {.results = f, .n = N, .tx = tx, .close_on_complete = true, .rc = -1,
                            .entered = &entered};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, to_channel_task, &tc, NULL), 0);
    ck_assert(latch_wait(&entered));
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    /* Cancelled while running, it closed the channel on its way out. */
    ck_assert_int_eq(tc.rc, ECANCELED);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, HANG), NURSERY_EEOC);
    ck_assert(!nursery_result_is_done(f[0]));
    ck_assert(!nursery_result_is_done(f[1]));
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    results_release(f, N);
    latch_destroy(&entered);
    destroy_pool(pool);
}
END_TEST

START_TEST(results_to_channel_bad_arguments_and_closed_receiver)
{
    nursery_result_t *f[2];
    futures_new(f, 2);
    set(f[0], 0);
    set(f[1], 1);
    nursery_sender_t *tx = NULL;
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(4, release_item, &tx, &rx), 0);
    ck_assert_int_eq(nursery_results_to_channel(f, 2, NULL, true), EINVAL);
    ck_assert_int_eq(nursery_results_to_channel(NULL, 2, tx, false), EINVAL);
    nursery_result_t *with_null[2] = {f[0], NULL};
    ck_assert_int_eq(nursery_results_to_channel(with_null, 2, tx, false), EINVAL);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);

    /* Nothing to send: returns at once; with close_on_complete, closes. */
    ck_assert_int_eq(nursery_results_to_channel(f, 0, tx, false), 0);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);

    /* Every receiver closed: EPIPE, and the sender is still closed after. */
    ck_assert_int_eq(nursery_receiver_close(rx), 0);
    ck_assert_int_eq(nursery_results_to_channel(f, 2, tx, true), EPIPE);
    ck_assert_int_eq(nursery_sender_close(tx), NURSERY_ECLOSED);
    /* A closed sender: ECLOSED. */
    ck_assert_int_eq(nursery_results_to_channel(f, 2, tx, false), NURSERY_ECLOSED);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);

    /* n == 0 with close_on_complete closes the channel. */
    ck_assert_int_eq(nursery_channel_create(1, release_item, &tx, &rx), 0);
    ck_assert_int_eq(nursery_results_to_channel(f, 0, tx, true), 0);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), NURSERY_EEOC);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    assert_value(f[0], 0);
    assert_value(f[1], 1);
    results_release(f, 2);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *wait_suite(void)
{
    Suite *s = suite_create("wait");
    ADD_CASE(s, wait_on_empty_set, 30);
    ADD_CASE(s, wait_rejects_null_arguments, 30);
    ADD_CASE(s, wait_all_mixes_captures_and_futures, 30);
    ADD_CASE(s, wait_all_returns_when_all_done_in_any_order, 30);
    ADD_CASE(s, wait_any_returns_first_completed, 30);
    ADD_CASE(s, wait_any_with_done_entry_returns_immediately, 30);
    ADD_CASE(s, wait_any_and_all_time_out_with_nothing_done, 30);
    ADD_CASE(s, wait_any_and_all_are_cancellable, 30);
    ADD_CASE(s, wait_cancels_none_of_the_results, 30);
    ADD_CASE(s, wait_deadline_holds_with_queued_capture, 30);
    ADD_CASE(s, wait_any_first_completion_not_delayed_by_queued_capture, 30);
    ADD_CASE(s, wait_any_from_only_worker_runs_captures_of_own_nursery, 30);
    ADD_CASE(s, results_to_channel_from_only_worker_runs_captures_of_own_nursery, 30);
    ADD_CASE(s, wait_any_race_returns_earliest_completion, 30);
    ADD_CASE(s, results_to_channel_sends_in_completion_order, 30);
    ADD_CASE(s, results_to_channel_follows_live_completions, 30);
    ADD_CASE(s, results_to_channel_without_close_leaves_channel_open, 30);
    ADD_CASE(s, results_to_channel_cancelled_still_closes_channel, 30);
    ADD_CASE(s, results_to_channel_closes_when_nursery_cancelled, 30);
    ADD_CASE(s, results_to_channel_bad_arguments_and_closed_receiver, 30);
    return s;
}

int main(void)
{
    return run_suite(wait_suite());
}
