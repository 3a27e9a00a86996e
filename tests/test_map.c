/* SPDX-License-Identifier: MIT */
/*
 * test_map.c - asyncio.gather and parallel maps: nursery_gather (outcomes
 * in argument order, fail-fast and NURSERY_RETURN_ERRORS, nesting on a
 * one-thread pool, n == 0, bad input, a cancelled caller),
 * nursery_outcomes_release, nursery_map (input order, the in-flight limit,
 * a million items with the pool's queue bounded by the limit, fail-fast,
 * RETURN_ERRORS, progress, arg_destroy on every path, nesting, a cancelled
 * caller) and nursery_map_stream (ordered delivery, a failing generator, a
 * sink that stops it, the read-ahead window, progress totals).
 *
 * Orders are forced with gates and latches (a branch's arg_destroy opens
 * the gate of the next, so "finished in reverse order" needs no sleep);
 * where a random completion order is the point, items sleep a random
 * small time with nursery_sleep(), and nothing asserts how long anything
 * took.  Checks made inside tasks, sinks and callbacks are recorded and
 * asserted by the test thread afterwards.
 */
#include "helpers.h"

#define HANG nursery_after_ms(TEST_HANG_MS)

/* A sentinel the calls must not have written. */
#define UNSET_CODE (-7)
#define UNSET_PTR INT2PTR(-7)

/* How much slower the suite runs here (CK_TIMEOUT_MULTIPLIER: the sanitizer
 * and valgrind stages of CI), to scale the sizes of the big cases. */
static double slow_factor(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    double f = m ? strtod(m, NULL) : 1.0;
    return f > 1.0 ? f : 1.0;
}

/* A small deterministic generator (xorshift32). */
static uint32_t next_random(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static void outcomes_unset(nursery_outcome_t *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        o[i] = (nursery_outcome_t){.code = UNSET_CODE, .value = UNSET_PTR, .error = UNSET_PTR};
}

static bool outcomes_untouched(const nursery_outcome_t *o, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (o[i].code != UNSET_CODE || o[i].value != UNSET_PTR || o[i].error != UNSET_PTR)
            return false;
    return true;
}

/* o is a success with `value`. */
static void assert_ok_(const char *file, int line, const nursery_outcome_t *o, size_t i,
                       int value)
{
    ck_assert_msg(o->code == 0, "%s:%d: outcome %zu: code %d", file, line, i, o->code);
    ck_assert_msg(PTR2INT(o->value) == value, "%s:%d: outcome %zu: value %d, expected %d", file,
                  line, i, PTR2INT(o->value), value);
    ck_assert_msg(o->error == NULL, "%s:%d: outcome %zu: an error on success", file, line, i);
}

#define assert_ok(o, i, value) assert_ok_(__FILE__, __LINE__, (o), (i), (value))

/* o failed with `code`, its error saying so. */
static void assert_failed_with_(const char *file, int line, const nursery_outcome_t *o, size_t i,
                                int code)
{
    ck_assert_msg(o->code == code, "%s:%d: outcome %zu: code %d, expected %d", file, line, i,
                  o->code, code);
    ck_assert_msg(o->value == NULL, "%s:%d: outcome %zu: a value on failure", file, line, i);
    ck_assert_msg(o->error != NULL, "%s:%d: outcome %zu: no error", file, line, i);
    ck_assert_msg(nursery_error_code(o->error) == code, "%s:%d: outcome %zu: error code %d", file,
                  line, i, nursery_error_code(o->error));
}

#define assert_failed_with(o, i, code) assert_failed_with_(__FILE__, __LINE__, (o), (i), (code))

/* o's task was started and cancelled: ECANCELED, with a cancellation
 * error. */
static void assert_cancelled_(const char *file, int line, const nursery_outcome_t *o, size_t i)
{
    ck_assert_msg(o->code == ECANCELED, "%s:%d: outcome %zu: code %d, expected ECANCELED", file,
                  line, i, o->code);
    ck_assert_msg(o->value == NULL, "%s:%d: outcome %zu: a value when cancelled", file, line, i);
    ck_assert_msg(o->error != NULL, "%s:%d: outcome %zu: cancelled without an error", file, line,
                  i);
    ck_assert_msg(nursery_error_code(o->error) == ECANCELED, "%s:%d: outcome %zu: error code %d",
                  file, line, i, nursery_error_code(o->error));
}

#define assert_cancelled(o, i) assert_cancelled_(__FILE__, __LINE__, (o), (i))

/* o never started: ECANCELED and no error. */
static void assert_never_started_(const char *file, int line, const nursery_outcome_t *o,
                                  size_t i)
{
    ck_assert_msg(o->code == ECANCELED, "%s:%d: outcome %zu: code %d, expected ECANCELED", file,
                  line, i, o->code);
    ck_assert_msg(o->value == NULL, "%s:%d: outcome %zu: a value", file, line, i);
    ck_assert_msg(o->error == NULL, "%s:%d: outcome %zu: an error for an item never started",
                  file, line, i);
}

#define assert_never_started(o, i) assert_never_started_(__FILE__, __LINE__, (o), (i))

/* The group holds an error of `code`. */
static bool group_has(const nursery_errors_t *g, int code)
{
    for (size_t i = 0; i < nursery_errors_count(g); i++)
        if (nursery_error_code(nursery_errors_get(g, i)) == code)
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* gather                                                                   */
/* ------------------------------------------------------------------------ */

/* A branch: counts its runs, may wait (not cancellably) for a latch, may
 * wait (cancellably) for a gate, may fail, records when it finished, and
 * returns `value`.  Its arg_destroy counts and may open a gate, so that
 * "after this branch ended" needs no sleep. */
struct leaf {
    int value;
    int fail;                /* fail with this code (0: none) */
    latch_t *running;        /* counted down on entry (NULL: none) */
    latch_t *wait_for;       /* waited for on entry, not cancellably (NULL: none) */
    nursery_result_t *gate;  /* waited for, cancellably (NULL: none) */
    nursery_result_t *opens; /* opened by arg_destroy (NULL: none) */
    atomic_int *finish_seq;  /* shared: the next place in the finish order */
    int finished_as;         /* this leaf's place (-1: did not finish) */
    atomic_int ran;
    atomic_int destroyed;
    atomic_int wait_rc;
};

static void leaf_init(struct leaf *l, int value)
{
    memset(l, 0, sizeof *l);
    l->value = value;
    l->finished_as = -1;
    atomic_init(&l->ran, 0);
    atomic_init(&l->destroyed, 0);
    atomic_init(&l->wait_rc, -1);
}

static int leaf_fn(void *arg, void **value)
{
    struct leaf *l = arg;
    atomic_fetch_add(&l->ran, 1);
    if (l->running)
        latch_count_down(l->running);
    if (l->wait_for)
        task_expect(latch_wait(l->wait_for));
    if (l->gate) {
        int rc = gate_wait(l->gate);
        atomic_store(&l->wait_rc, rc);
        if (rc)
            return rc;
    }
    if (l->fail)
        return nursery_fail(l->fail, "leaf %d failed", l->value);
    if (l->finish_seq)
        l->finished_as = atomic_fetch_add(l->finish_seq, 1);
    *value = INT2PTR(l->value);
    return 0;
}

static void leaf_destroy(void *arg)
{
    struct leaf *l = arg;
    atomic_fetch_add(&l->destroyed, 1);
    if (l->opens)
        nursery_future_set_value(l->opens, NULL);
}

static const nursery_task_options_t leaf_opts = {.arg_destroy = leaf_destroy};

static nursery_branch_t leaf_branch(struct leaf *l)
{
    return (nursery_branch_t){.fn = leaf_fn, .arg = l, .opts = &leaf_opts};
}

static void assert_destroyed_once(struct leaf *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(atomic_load(&l[i].destroyed) == 1, "leaf %zu: arg_destroy ran %d times", i,
                      atomic_load(&l[i].destroyed));
}

/* Branch i waits for a gate that branch i+1's arg_destroy opens: they
 * finish last to first, and the outcomes are still in argument order. */
START_TEST(gather_outcomes_in_argument_order)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 4 };
    atomic_int seq;
    atomic_init(&seq, 0);
    nursery_result_t *gates[N - 1];
    struct leaf l[N];
    nursery_branch_t b[N];
    for (int i = 0; i < N; i++) {
        leaf_init(&l[i], 10 + i);
        l[i].finish_seq = &seq;
    }
    for (int i = 0; i < N - 1; i++) {
        gates[i] = gate_new();
        l[i].gate = gates[i];
        l[i + 1].opens = gates[i];
    }
    for (int i = 0; i < N; i++)
        b[i] = leaf_branch(&l[i]);
    nursery_outcome_t o[N];
    outcomes_unset(o, N);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_gather(pool, b, N, 0, o, &errs), 0);
    ck_assert_tasks_ok();
    ck_assert_ptr_null(errs);
    for (int i = 0; i < N; i++) {
        assert_ok(&o[i], (size_t)i, 10 + i);
        ck_assert_int_eq(l[i].finished_as, N - 1 - i); /* really in reverse */
        ck_assert_int_eq(atomic_load(&l[i].ran), 1);
    }
    assert_destroyed_once(l, N);
    nursery_outcomes_release(o, N);
    for (int i = 0; i < N - 1; i++)
        nursery_result_release(gates[i]);
    destroy_pool(pool);
}
END_TEST

/* Fail-fast: branch 2 fails once every other branch runs; branch 0 has
 * returned its value; the others wait (cancellably) and are cancelled. */
START_TEST(gather_first_failure_cancels_the_others)
{
    nursery_pool_t *pool = test_pool(6);
    enum { N = 5 };
    nursery_result_t *never = gate_new();
    latch_t others;
    latch_init(&others, N - 1);
    struct leaf l[N];
    nursery_branch_t b[N];
    for (int i = 0; i < N; i++) {
        leaf_init(&l[i], 10 + i);
        l[i].running = &others;
        l[i].gate = never;
        b[i] = leaf_branch(&l[i]);
    }
    l[0].gate = NULL; /* returns at once */
    l[2].running = NULL;
    l[2].gate = NULL;
    l[2].wait_for = &others;
    l[2].fail = EIO;
    nursery_outcome_t o[N];
    outcomes_unset(o, N);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_gather(pool, b, N, 0, o, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 0)), "leaf 12 failed");
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 3);
    nursery_errors_free(errs);

    assert_ok(&o[0], 0, 10);
    assert_failed_with(&o[2], 2, EIO);
    ck_assert_str_eq(nursery_error_message(o[2].error), "leaf 12 failed");
    for (int i = 1; i < N; i++) {
        if (i == 2)
            continue;
        assert_cancelled(&o[i], (size_t)i);
        ck_assert_int_eq(atomic_load(&l[i].wait_rc), ECANCELED); /* they saw it */
    }
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(atomic_load(&l[i].ran), 1);
    assert_destroyed_once(l, N);
    nursery_outcomes_release(o, N);
    for (int i = 0; i < N; i++)
        ck_assert_ptr_null(o[i].error);
    latch_destroy(&others);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* RETURN_ERRORS: failures cancel nothing (branch 0 goes on after branch 1
 * failed, through a gate branch 1's arg_destroy opens); every outcome is
 * in its slot; the call returns 0. */
START_TEST(gather_return_errors_runs_every_branch)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 4 };
    nursery_result_t *after1 = gate_new();
    struct leaf l[N];
    nursery_branch_t b[N];
    for (int i = 0; i < N; i++) {
        leaf_init(&l[i], 20 + i);
        b[i] = leaf_branch(&l[i]);
    }
    l[0].gate = after1;
    l[1].fail = EIO;
    l[1].opens = after1;
    l[2].fail = EPIPE;
    nursery_outcome_t o[N];
    outcomes_unset(o, N);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_gather(pool, b, N, NURSERY_RETURN_ERRORS, o, &errs), 0);
    ck_assert_tasks_ok();
    ck_assert_ptr_null(errs);
    assert_ok(&o[0], 0, 20);
    ck_assert_int_eq(atomic_load(&l[0].wait_rc), 0); /* not cancelled */
    assert_failed_with(&o[1], 1, EIO);
    ck_assert_str_eq(nursery_error_message(o[1].error), "leaf 21 failed");
    assert_failed_with(&o[2], 2, EPIPE);
    assert_ok(&o[3], 3, 23);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(atomic_load(&l[i].ran), 1);
    assert_destroyed_once(l, N);
    /* errors NULL is allowed. */
    for (int i = 0; i < N; i++)
        l[i].opens = NULL;
    l[0].gate = NULL;
    nursery_outcomes_release(o, N);
    ck_assert_int_eq(nursery_gather(pool, b, N, NURSERY_RETURN_ERRORS, o, NULL), 0);
    assert_failed_with(&o[1], 1, EIO);
    assert_ok(&o[3], 3, 23);
    nursery_outcomes_release(o, N);
    nursery_result_release(after1);
    destroy_pool(pool);
}
END_TEST

/* In a task of a pool of one thread that cannot grow: the gather (pool
 * NULL: the task's own pool) runs its branches in the calling worker. */
struct nested_gather {
    nursery_branch_t *b;
    size_t n;
    unsigned flags;
    nursery_outcome_t *o;
    int rc;
    size_t errors_count;
};

static int nested_gather_task(void *arg, void **value)
{
    struct nested_gather *g = arg;
    (void)value;
    nursery_errors_t *errs = NULL;
    g->rc = nursery_gather(NULL, g->b, g->n, g->flags, g->o, &errs);
    g->errors_count = nursery_errors_count(errs);
    nursery_errors_free(errs);
    return 0;
}

START_TEST(gather_nested_on_a_one_thread_pool)
{
    nursery_pool_t *pool = capped_pool(1);
    enum { N = 3 };
    struct leaf l[N];
    nursery_branch_t b[N];
    for (int i = 0; i < N; i++) {
        leaf_init(&l[i], 30 + i);
        b[i] = leaf_branch(&l[i]);
    }
    l[1].fail = EIO;
    nursery_outcome_t o[N];
    for (int pass = 0; pass < 2; pass++) {
        outcomes_unset(o, N);
        for (int i = 0; i < N; i++)
            atomic_store(&l[i].destroyed, 0);
        struct nested_gather g = {.b = b, .n = N, .o = o, .rc = -1};
        /* First pass: with RETURN_ERRORS; second: branch 1 succeeds. */
        if (pass == 0)
            g.flags = NURSERY_RETURN_ERRORS;
        else
            l[1].fail = 0;
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        ck_assert_int_eq(nursery_start_soon(n, nested_gather_task, &g, NULL), 0);
        ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
        ck_assert_tasks_ok();
        ck_assert_int_eq(g.rc, 0);
        ck_assert_uint_eq(g.errors_count, 0);
        assert_ok(&o[0], 0, 30);
        if (pass == 0)
            assert_failed_with(&o[1], 1, EIO);
        else
            assert_ok(&o[1], 1, 31);
        assert_ok(&o[2], 2, 32);
        assert_destroyed_once(l, N);
        nursery_outcomes_release(o, N);
    }
    /* The branches ran on the task's pool: 2 x (the task and 3 branches). */
    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
    ck_assert_uint_eq(st.completed, 2 * (1 + N));
    destroy_pool(pool);
}
END_TEST

START_TEST(gather_of_nothing_returns_zero)
{
    nursery_pool_t *pool = test_pool(1);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_gather(NULL, NULL, 0, 0, NULL, &errs), 0);
    ck_assert_ptr_null(errs);
    errs = UNSET_PTR;
    ck_assert_int_eq(nursery_gather(pool, NULL, 0, NURSERY_RETURN_ERRORS, NULL, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(nursery_gather(pool, NULL, 0, 0, NULL, NULL), 0);
    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
    ck_assert_uint_eq(st.completed, 0);
    /* A cancelled caller: ECANCELED even with nothing to run. */
    nursery_scope_t *s = NULL;
    ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_gather(pool, NULL, 0, 0, NULL, NULL), ECANCELED);
    ck_assert_int_eq(nursery_scope_close(s, NULL), 0);
    destroy_pool(pool);
}
END_TEST

static void expect_gather_einval(const nursery_branch_t *b, size_t n, unsigned flags,
                                 bool with_outcomes, struct leaf *l, size_t nl)
{
    nursery_outcome_t o[4];
    outcomes_unset(o, 4);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_gather(NULL, b, n, flags, with_outcomes ? o : NULL, &errs), EINVAL);
    ck_assert_ptr_null(errs);
    ck_assert(outcomes_untouched(o, 4));
    for (size_t i = 0; i < nl; i++) {
        ck_assert_int_eq(atomic_load(&l[i].ran), 0);
        ck_assert_msg(atomic_load(&l[i].destroyed) == 0, "arg_destroy ran for EINVAL");
    }
}

START_TEST(gather_bad_input_is_einval_and_runs_nothing)
{
    struct leaf l[2];
    leaf_init(&l[0], 1);
    leaf_init(&l[1], 2);
    nursery_branch_t ok[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
    expect_gather_einval(NULL, 2, 0, true, l, 2);
    expect_gather_einval(ok, 2, 0, false, l, 2);
    nursery_branch_t null_fn[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
    null_fn[1].fn = NULL;
    expect_gather_einval(null_fn, 2, 0, true, l, 2);
    const unsigned bad_task_flags[] = {1u << 3, 1u << 29, 1u << 31};
    for (size_t f = 0; f < sizeof bad_task_flags / sizeof bad_task_flags[0]; f++) {
        nursery_task_options_t bad = {.arg_destroy = leaf_destroy, .flags = bad_task_flags[f]};
        nursery_branch_t flagged[2] = {leaf_branch(&l[0]), {.fn = leaf_fn, .arg = &l[1], .opts = &bad}};
        expect_gather_einval(flagged, 2, 0, true, l, 2);
    }
    const unsigned bad_flags[] = {1u << 1, 1u << 7, 1u << 31, NURSERY_RETURN_ERRORS | (1u << 4)};
    for (size_t f = 0; f < sizeof bad_flags / sizeof bad_flags[0]; f++)
        expect_gather_einval(ok, 2, bad_flags[f], true, l, 2);
    /* The same branches, fixed, run. */
    nursery_outcome_t o[2];
    ck_assert_int_eq(nursery_gather(NULL, ok, 2, 0, o, NULL), 0);
    assert_ok(&o[0], 0, 1);
    assert_ok(&o[1], 1, 2);
    assert_destroyed_once(l, 2);
}
END_TEST

/* The caller is cancelled: at the call (a cancelled scope), or while the
 * branches run (another thread cancels the scope). */
START_TEST(gather_cancelled_caller_is_ecanceled)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 3 };
    nursery_result_t *never = gate_new();
    struct leaf l[N];
    nursery_branch_t b[N];
    nursery_outcome_t o[N];

    /* At the call. */
    for (int i = 0; i < N; i++) {
        leaf_init(&l[i], i);
        b[i] = leaf_branch(&l[i]);
    }
    nursery_scope_t *s = NULL;
    ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    outcomes_unset(o, N);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_gather(pool, b, N, 0, o, &errs), ECANCELED);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    for (int i = 0; i < N; i++)
        assert_cancelled(&o[i], (size_t)i);
    assert_destroyed_once(l, N);
    nursery_outcomes_release(o, N);
    ck_assert_int_eq(nursery_scope_close(s, NULL), 0);

    /* While the branches run. */
    latch_t running;
    latch_init(&running, N);
    for (int i = 0; i < N; i++) {
        leaf_init(&l[i], i);
        l[i].running = &running;
        l[i].gate = never;
        b[i] = leaf_branch(&l[i]);
    }
    ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    struct canceller c = {.running = &running, .scope = nursery_scope_retain(s)};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_when_running, &c), 0);
    outcomes_unset(o, N);
    errs = NULL;
    ck_assert_int_eq(nursery_gather(pool, b, N, 0, o, &errs), ECANCELED);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), N);
    nursery_errors_free(errs);
    for (int i = 0; i < N; i++) {
        assert_cancelled(&o[i], (size_t)i);
        ck_assert_int_eq(atomic_load(&l[i].wait_rc), ECANCELED);
    }
    assert_destroyed_once(l, N);
    nursery_outcomes_release(o, N);
    ck_assert_int_eq(nursery_scope_close(s, NULL), 0);
    latch_destroy(&running);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* nursery_outcomes_release() releases each error once and sets it NULL;
 * codes and values stay.  Payloads make the last release visible. */
START_TEST(outcomes_release_sets_errors_to_null)
{
    atomic_int freed;
    atomic_init(&freed, 0);
    nursery_error_t *e1 = NULL, *e2 = NULL;
    ck_assert_int_eq(nursery_error_create(&e1, EIO, "one"), 0);
    ck_assert_int_eq(nursery_error_create(&e2, ECANCELED, "cancelled"), 0);
    ck_assert_int_eq(nursery_error_set_payload(e1, &freed, count_call), 0);
    ck_assert_int_eq(nursery_error_set_payload(e2, &freed, count_call), 0);
    nursery_error_retain(e2); /* one of ours besides the outcome's */
    nursery_outcome_t o[3] = {
        {.code = 0, .value = INT2PTR(42), .error = NULL},
        {.code = EIO, .value = NULL, .error = e1},
        {.code = ECANCELED, .value = NULL, .error = e2},
    };
    nursery_outcomes_release(o, 3);
    ck_assert_int_eq(o[0].code, 0);
    ck_assert_ptr_eq(o[0].value, INT2PTR(42));
    ck_assert_int_eq(o[1].code, EIO);
    ck_assert_int_eq(o[2].code, ECANCELED);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_null(o[i].error);
    ck_assert_int_eq(atomic_load(&freed), 1); /* e1's last reference went */
    ck_assert_int_eq(nursery_error_code(e2), ECANCELED);
    /* Again: nothing left to release. */
    nursery_outcomes_release(o, 3);
    ck_assert_int_eq(atomic_load(&freed), 1);
    nursery_error_release(e2);
    ck_assert_int_eq(atomic_load(&freed), 2);
    nursery_outcomes_release(NULL, 3);
    nursery_outcomes_release(NULL, 0);
    nursery_outcomes_release(o, 0);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* map                                                                      */
/* ------------------------------------------------------------------------ */

/* The items of a map: item i returns 2i + 1, or fails, after an optional
 * random sleep or gate; every item counts its runs and the number in
 * flight. */
struct map_ctx;

struct item {
    struct map_ctx *ctx;
    size_t index;
    atomic_int ran;
    atomic_int destroyed;
};

struct map_ctx {
    size_t n;
    struct item *items;
    void **args;
    size_t fail_at;          /* this item fails with fail_code (SIZE_MAX: none) */
    size_t fail_every;       /* and every item i with i % fail_every == fail_every - 1 (0: none) */
    int fail_code;
    uint32_t *sleep_us;      /* each item sleeps this long first (NULL: none) */
    latch_t *first_k;        /* the first k items meet here (NULL: none) */
    size_t k;
    latch_t *running;        /* counted down on entry (NULL: none) */
    nursery_result_t *block; /* items in [block_from, block_to) wait for it, cancellably */
    size_t block_from, block_to;
    nursery_result_t *hold;  /* item hold_index waits for it, at most 2 s (NULL: none) */
    size_t hold_index;
    atomic_int in_flight;
    atomic_int max_in_flight;
    atomic_int ran_total;
};

static void map_ctx_init(struct map_ctx *c, size_t n)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    c->items = calloc(n ? n : 1, sizeof *c->items);
    c->args = calloc(n ? n : 1, sizeof *c->args);
    ck_assert(c->items && c->args);
    for (size_t i = 0; i < n; i++) {
        c->items[i].ctx = c;
        c->items[i].index = i;
        atomic_init(&c->items[i].ran, 0);
        atomic_init(&c->items[i].destroyed, 0);
        c->args[i] = &c->items[i];
    }
    c->fail_at = SIZE_MAX;
    c->fail_code = EIO;
    atomic_init(&c->in_flight, 0);
    atomic_init(&c->max_in_flight, 0);
    atomic_init(&c->ran_total, 0);
}

/* Random sleeps of up to max_us for every item. */
static void map_ctx_random_sleeps(struct map_ctx *c, uint32_t max_us, uint32_t seed)
{
    c->sleep_us = calloc(c->n ? c->n : 1, sizeof *c->sleep_us);
    ck_assert_ptr_nonnull(c->sleep_us);
    for (size_t i = 0; i < c->n; i++)
        c->sleep_us[i] = next_random(&seed) % (max_us + 1);
}

static void map_ctx_free(struct map_ctx *c)
{
    free(c->items);
    free(c->args);
    free(c->sleep_us);
}

static bool item_fails(const struct map_ctx *c, size_t i)
{
    return i == c->fail_at || (c->fail_every && i % c->fail_every == c->fail_every - 1);
}

static int item_fn(void *arg, void **value)
{
    struct item *it = arg;
    struct map_ctx *c = it->ctx;
    atomic_fetch_add(&it->ran, 1);
    atomic_fetch_add(&c->ran_total, 1);
    int now = atomic_fetch_add(&c->in_flight, 1) + 1;
    int max = atomic_load(&c->max_in_flight);
    while (now > max && !atomic_compare_exchange_weak(&c->max_in_flight, &max, now))
        continue;
    if (c->running)
        latch_count_down(c->running);
    int rc = 0;
    if (c->first_k && it->index < c->k) {
        latch_count_down(c->first_k);
        task_expect(latch_wait_ms(c->first_k, 10000));
    }
    if (c->hold && it->index == c->hold_index)
        nursery_result_wait(c->hold, nursery_after_ms(2000));
    if (c->sleep_us && c->sleep_us[it->index])
        rc = nursery_sleep(nursery_after_ns((int64_t)c->sleep_us[it->index] * 1000));
    if (rc == 0 && c->block && it->index >= c->block_from && it->index < c->block_to &&
        it->index != c->fail_at)
        rc = gate_wait(c->block);
    atomic_fetch_sub(&c->in_flight, 1);
    if (rc)
        return rc;
    if (item_fails(c, it->index))
        return nursery_fail(c->fail_code, "item %zu", it->index);
    *value = INT2PTR(2 * it->index + 1);
    return 0;
}

static void item_destroy(void *arg)
{
    struct item *it = arg;
    atomic_fetch_add(&it->destroyed, 1);
}

static const nursery_task_options_t item_opts = {.arg_destroy = item_destroy};

static void assert_items_destroyed_once(const struct map_ctx *c)
{
    for (size_t i = 0; i < c->n; i++)
        ck_assert_msg(atomic_load(&c->items[i].destroyed) == 1,
                      "item %zu: arg_destroy ran %d times", i,
                      atomic_load(&c->items[i].destroyed));
}

static void assert_items_ran_once(const struct map_ctx *c)
{
    for (size_t i = 0; i < c->n; i++)
        ck_assert_msg(atomic_load(&c->items[i].ran) == 1, "item %zu ran %d times", i,
                      atomic_load(&c->items[i].ran));
}

/* Every outcome of a map that ran everything: failures where the context
 * says, values elsewhere. */
static void assert_map_outcomes(const struct map_ctx *c, const nursery_outcome_t *o)
{
    for (size_t i = 0; i < c->n; i++) {
        if (item_fails(c, i))
            assert_failed_with(&o[i], i, c->fail_code);
        else
            assert_ok(&o[i], i, (int)(2 * i + 1));
    }
}

static nursery_outcome_t *outcomes_new(size_t n)
{
    nursery_outcome_t *o = calloc(n ? n : 1, sizeof *o);
    ck_assert_ptr_nonnull(o);
    outcomes_unset(o, n);
    return o;
}

START_TEST(map_preserves_input_order)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 200, K = 8 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    map_ctx_random_sleeps(&c, 2000, 7u);
    nursery_map_options_t opts = {.limit = K, .task = &item_opts};
    nursery_outcome_t *o = outcomes_new(N);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_map(pool, item_fn, c.args, N, &opts, o, &errs), 0);
    ck_assert_tasks_ok();
    ck_assert_ptr_null(errs);
    assert_map_outcomes(&c, o);
    assert_items_ran_once(&c);
    assert_items_destroyed_once(&c);
    ck_assert_int_le(atomic_load(&c.max_in_flight), K);
    ck_assert_int_eq(atomic_load(&c.in_flight), 0);
    nursery_outcomes_release(o, N);
    free(o);
    map_ctx_free(&c);
    destroy_pool(pool);
}
END_TEST

/* At most `limit` items in flight, whatever the pool's size; and exactly
 * that many when the first `limit` items can only go on together. */
START_TEST(map_never_has_more_than_limit_in_flight)
{
    nursery_pool_t *pool = test_pool(16);
    const size_t limits[] = {1, 3, 4};
    for (size_t t = 0; t < sizeof limits / sizeof limits[0]; t++) {
        size_t k = limits[t];
        enum { N = 120 };
        struct map_ctx c;
        map_ctx_init(&c, N);
        map_ctx_random_sleeps(&c, 500, 11u + (uint32_t)k);
        latch_t first_k;
        latch_init(&first_k, (int)k);
        c.first_k = &first_k;
        c.k = k;
        nursery_map_options_t opts = {.limit = k};
        nursery_outcome_t *o = outcomes_new(N);
        ck_assert_int_eq(nursery_map(pool, item_fn, c.args, N, &opts, o, NULL), 0);
        ck_assert_tasks_ok(); /* the first k did run together */
        assert_map_outcomes(&c, o);
        assert_items_ran_once(&c);
        ck_assert_msg(atomic_load(&c.max_in_flight) == (int)k, "limit %zu: at most %d in flight",
                      k, atomic_load(&c.max_in_flight));
        nursery_outcomes_release(o, N);
        free(o);
        map_ctx_free(&c);
        latch_destroy(&first_k);
    }
    /* limit 0: the number of CPUs the process may run on. */
    enum { M = 64 };
    struct map_ctx c;
    map_ctx_init(&c, M);
    map_ctx_random_sleeps(&c, 300, 5u);
    nursery_outcome_t *o = outcomes_new(M);
    ck_assert_int_eq(nursery_map(pool, item_fn, c.args, M, NULL, o, NULL), 0);
    assert_map_outcomes(&c, o);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_ge(atomic_load(&c.max_in_flight), 1);
    if (cpus > 0)
        ck_assert_int_le(atomic_load(&c.max_in_flight), cpus);
    nursery_outcomes_release(o, M);
    free(o);
    map_ctx_free(&c);
    destroy_pool(pool);
}
END_TEST

/* A million cheap items with limit 8: the pool never holds more than the
 * map's items in flight.  Sampled from inside items and from the progress
 * callback.  (The pool's counters are read one after the other, so an item
 * that moves from the queue to a worker between the two reads can count in
 * both: queued alone is at most the limit, queued + running at most twice
 * it.) */
enum { MILLION_LIMIT = 8, SAMPLE_EVERY = 4096 };

static struct million {
    nursery_pool_t *pool;
    atomic_size_t samples;
    atomic_size_t max_queued;
    atomic_size_t max_sum;
    atomic_int stats_failures;
    size_t progress_calls;
    size_t last_done;
    bool progress_decreasing;
} million;

static void atomic_max(atomic_size_t *m, size_t v)
{
    size_t cur = atomic_load(m);
    while (v > cur && !atomic_compare_exchange_weak(m, &cur, v))
        continue;
}

static void million_sample(void)
{
    nursery_pool_stats_t st;
    if (nursery_pool_stats(million.pool, &st) != 0) {
        atomic_fetch_add(&million.stats_failures, 1);
        return;
    }
    atomic_fetch_add(&million.samples, 1);
    atomic_max(&million.max_queued, st.queued);
    atomic_max(&million.max_sum, st.queued + st.running);
}

static int cheap_fn(void *arg, void **value)
{
    size_t i = (size_t)(uintptr_t)arg;
    if (i % SAMPLE_EVERY == 0)
        million_sample();
    *value = arg;
    return 0;
}

static void million_progress(void *ctx, size_t done, size_t total)
{
    (void)total;
    (void)ctx;
    if (done < million.last_done)
        million.progress_decreasing = true;
    million.last_done = done;
    if (million.progress_calls++ % 64 == 0)
        million_sample();
}

START_TEST(map_million_items_keep_the_pool_queue_bounded)
{
    size_t n = 1000000;
    double slow = slow_factor();
    if (slow > 1.0)
        n = (size_t)(n / (slow * 10));
    memset(&million, 0, sizeof million);
    /* One worker: the caller can start items much faster than it runs
     * them, so a map that did not hold back would fill the queue. */
    million.pool = test_pool(1);
    void **args = malloc(n * sizeof *args);
    nursery_outcome_t *o = malloc(n * sizeof *o);
    ck_assert(args && o);
    for (size_t i = 0; i < n; i++) {
        args[i] = (void *)(uintptr_t)i;
        o[i] = (nursery_outcome_t){.code = UNSET_CODE, .value = UNSET_PTR, .error = UNSET_PTR};
    }
    nursery_map_options_t opts = {.limit = MILLION_LIMIT, .progress = million_progress};
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_map(million.pool, cheap_fn, args, n, &opts, o, &errs), 0);
    ck_assert_ptr_null(errs);
    for (size_t i = 0; i < n; i++)
        if (o[i].code != 0 || o[i].value != args[i] || o[i].error != NULL)
            ck_abort_msg("outcome %zu: code %d, value %p", i, o[i].code, o[i].value);
    ck_assert_int_eq(atomic_load(&million.stats_failures), 0);
    ck_assert_uint_ge(atomic_load(&million.samples), n / SAMPLE_EVERY);
    ck_assert_msg(atomic_load(&million.max_queued) <= MILLION_LIMIT,
                  "the pool queued %zu of the map's tasks at once (limit %d)",
                  (size_t)atomic_load(&million.max_queued), MILLION_LIMIT);
    ck_assert_msg(atomic_load(&million.max_sum) <= 2 * MILLION_LIMIT,
                  "queued + running reached %zu (limit %d)", (size_t)atomic_load(&million.max_sum),
                  MILLION_LIMIT);
    ck_assert(!million.progress_decreasing);
    ck_assert_uint_eq(million.last_done, n);
    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(million.pool, &st), 0);
    ck_assert_uint_ge(st.completed, n);
    ck_assert_uint_eq(st.queued, 0);
    free(args);
    free(o);
    destroy_pool(million.pool);
}
END_TEST

/* Fail-fast with limit 1: the items before the failing one and the
 * failing one ran, no other; they never started: ECANCELED, no error. */
START_TEST(map_fail_fast_starts_nothing_after_the_failure)
{
    nursery_pool_t *pool = test_pool(2);
    enum { N = 50, FAIL = 10 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    c.fail_at = FAIL;
    nursery_map_options_t opts = {.limit = 1, .task = &item_opts};
    nursery_outcome_t *o = outcomes_new(N);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_map(pool, item_fn, c.args, N, &opts, o, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 0)), "item 10");
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&c.ran_total), FAIL + 1);
    for (size_t i = 0; i < N; i++) {
        ck_assert_int_eq(atomic_load(&c.items[i].ran), i <= FAIL ? 1 : 0);
        if (i < FAIL)
            assert_ok(&o[i], i, (int)(2 * i + 1));
        else if (i == FAIL)
            assert_failed_with(&o[i], i, EIO);
        else
            assert_never_started(&o[i], i);
    }
    assert_items_destroyed_once(&c);
    nursery_outcomes_release(o, N);
    free(o);
    map_ctx_free(&c);

    /* Limit 4: items 0-3 start together; item 0 fails, the three others
     * (waiting cancellably) are cancelled, and no item starts after. */
    enum { M = 40, K = 4 };
    nursery_result_t *never = gate_new();
    latch_t first_k;
    latch_init(&first_k, K);
    map_ctx_init(&c, M);
    c.fail_at = 0;
    c.first_k = &first_k;
    c.k = K;
    c.block = never;
    c.block_from = 0;
    c.block_to = M;
    opts.limit = K;
    o = outcomes_new(M);
    errs = NULL;
    ck_assert_int_eq(nursery_map(pool, item_fn, c.args, M, &opts, o, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&c.ran_total), K);
    assert_failed_with(&o[0], 0, EIO);
    for (size_t i = 1; i < K; i++)
        assert_cancelled(&o[i], i);
    for (size_t i = K; i < M; i++)
        assert_never_started(&o[i], i);
    assert_items_destroyed_once(&c);
    nursery_outcomes_release(o, M);
    free(o);
    map_ctx_free(&c);
    latch_destroy(&first_k);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

START_TEST(map_return_errors_runs_every_item)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 60 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    map_ctx_random_sleeps(&c, 500, 3u);
    c.fail_every = 7;
    c.fail_code = EPIPE;
    nursery_map_options_t opts = {.limit = 4, .flags = NURSERY_RETURN_ERRORS, .task = &item_opts};
    nursery_outcome_t *o = outcomes_new(N);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_map(pool, item_fn, c.args, N, &opts, o, &errs), 0);
    ck_assert_ptr_null(errs);
    assert_map_outcomes(&c, o);
    ck_assert_str_eq(nursery_error_message(o[6].error), "item 6");
    assert_items_ran_once(&c);
    assert_items_destroyed_once(&c);
    nursery_outcomes_release(o, N);
    for (size_t i = 0; i < N; i++)
        ck_assert_ptr_null(o[i].error);
    free(o);
    map_ctx_free(&c);
    destroy_pool(pool);
}
END_TEST

/* The progress callback runs in the calling thread, total is n, done
 * never goes back and ends at n. */
struct progress {
    pthread_t caller;
    size_t n;
    size_t calls;
    size_t last_done;
    bool wrong_thread, decreasing, bad_total, done_over_total;
};

static void map_progress(void *ctx, size_t done, size_t total)
{
    struct progress *p = ctx;
    p->calls++;
    if (!pthread_equal(pthread_self(), p->caller))
        p->wrong_thread = true;
    if (done < p->last_done)
        p->decreasing = true;
    if (total != p->n)
        p->bad_total = true;
    if (done > total)
        p->done_over_total = true;
    p->last_done = done;
}

START_TEST(map_progress_in_caller_thread)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 100 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    map_ctx_random_sleeps(&c, 1000, 17u);
    struct progress p = {.caller = pthread_self(), .n = N};
    nursery_map_options_t opts = {.limit = 4, .progress = map_progress, .progress_ctx = &p};
    nursery_outcome_t *o = outcomes_new(N);
    ck_assert_int_eq(nursery_map(pool, item_fn, c.args, N, &opts, o, NULL), 0);
    assert_map_outcomes(&c, o);
    ck_assert_uint_ge(p.calls, 1);
    ck_assert_uint_le(p.calls, N);
    ck_assert(!p.wrong_thread);
    ck_assert(!p.decreasing);
    ck_assert(!p.bad_total);
    ck_assert(!p.done_over_total);
    ck_assert_uint_eq(p.last_done, N);
    nursery_outcomes_release(o, N);
    free(o);
    map_ctx_free(&c);
    destroy_pool(pool);
}
END_TEST

/* arg_destroy runs exactly once per argument: on success, on a failure
 * (items never started included), and when the caller is cancelled at the
 * call (nothing starts). */
START_TEST(map_arg_destroy_once_on_every_path)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 30 };
    nursery_map_options_t opts = {.limit = 2, .task = &item_opts};
    for (int path = 0; path < 3; path++) {
        struct map_ctx c;
        map_ctx_init(&c, N);
        if (path == 1)
            c.fail_at = 5;
        nursery_scope_t *s = NULL;
        if (path == 2) {
            ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
            ck_assert_int_eq(nursery_scope_cancel(s), 0);
        }
        nursery_outcome_t *o = outcomes_new(N);
        nursery_errors_t *errs = NULL;
        int rc = nursery_map(pool, item_fn, c.args, N, &opts, o, &errs);
        ck_assert_int_eq(rc, path == 0 ? 0 : path == 1 ? NURSERY_EFAILED : ECANCELED);
        assert_items_destroyed_once(&c);
        if (path == 0) {
            ck_assert_ptr_null(errs);
            assert_items_ran_once(&c);
        } else if (path == 1) {
            ck_assert(group_has(errs, EIO));
            assert_failed_with(&o[5], 5, EIO);
        } else {
            ck_assert_uint_eq(nursery_errors_count(errs), 0);
            ck_assert_int_eq(atomic_load(&c.ran_total), 0);
            for (size_t i = 0; i < N; i++)
                assert_never_started(&o[i], i);
            ck_assert_int_eq(nursery_scope_close(s, NULL), 0);
        }
        nursery_errors_free(errs);
        nursery_outcomes_release(o, N);
        free(o);
        map_ctx_free(&c);
    }
    destroy_pool(pool);
}
END_TEST

/* A map inside a task of a pool of one thread that cannot grow (pool NULL:
 * the task's pool): the worker runs the items while it waits. */
struct nested_map {
    struct map_ctx *c;
    nursery_outcome_t *o;
    int rc;
};

static int nested_map_task(void *arg, void **value)
{
    struct nested_map *m = arg;
    (void)value;
    nursery_map_options_t opts = {.limit = 4, .task = &item_opts};
    m->rc = nursery_map(NULL, item_fn, m->c->args, m->c->n, &opts, m->o, NULL);
    return 0;
}

START_TEST(map_inside_a_task_on_a_one_thread_pool)
{
    nursery_pool_t *pool = capped_pool(1);
    enum { N = 20 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    struct nested_map m = {.c = &c, .o = outcomes_new(N), .rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, nested_map_task, &m, NULL), 0);
    ck_assert_int_eq(nursery_join(n, HANG, NULL), 0);
    ck_assert_int_eq(m.rc, 0);
    assert_map_outcomes(&c, m.o);
    assert_items_ran_once(&c);
    assert_items_destroyed_once(&c);
    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
    ck_assert_uint_ge(st.completed, 1 + N); /* the items ran on this pool */
    nursery_outcomes_release(m.o, N);
    free(m.o);
    map_ctx_free(&c);
    destroy_pool(pool);
}
END_TEST

/* The map runs in a task whose nursery the test cancels while two items
 * wait: ECANCELED, the running items cancelled, the others never
 * started, every argument destroyed once. */
struct cancelled_map {
    struct map_ctx *c;
    nursery_outcome_t *o;
    int rc;
    size_t errors_count;
};

static int cancelled_map_task(void *arg, void **value)
{
    struct cancelled_map *m = arg;
    (void)value;
    nursery_map_options_t opts = {.limit = 2, .task = &item_opts};
    nursery_errors_t *errs = NULL;
    m->rc = nursery_map(NULL, item_fn, m->c->args, m->c->n, &opts, m->o, &errs);
    m->errors_count = nursery_errors_count(errs);
    nursery_errors_free(errs);
    return m->rc == ECANCELED ? ECANCELED : 0;
}

START_TEST(map_caller_cancelled_is_ecanceled)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 20 };
    nursery_result_t *never = gate_new();
    latch_t running;
    latch_init(&running, 2);
    struct map_ctx c;
    map_ctx_init(&c, N);
    c.running = &running;
    c.block = never;
    c.block_from = 0;
    c.block_to = N;
    struct cancelled_map m = {.c = &c, .o = outcomes_new(N), .rc = -1, .errors_count = 99};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, cancelled_map_task, &m, NULL), 0);
    ck_assert(latch_wait(&running));
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, HANG, &errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(m.rc, ECANCELED);
    ck_assert_uint_eq(m.errors_count, 0);
    ck_assert_int_eq(atomic_load(&c.ran_total), 2);
    assert_cancelled(&m.o[0], 0);
    assert_cancelled(&m.o[1], 1);
    for (size_t i = 2; i < N; i++)
        assert_never_started(&m.o[i], i);
    assert_items_destroyed_once(&c);
    nursery_outcomes_release(m.o, N);
    free(m.o);
    map_ctx_free(&c);
    latch_destroy(&running);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

static void count_progress(void *ctx, size_t done, size_t total)
{
    (void)done;
    (void)total;
    (*(int *)ctx)++;
}

/* Cancelled at the call (a cancel scope in the main thread): nothing
 * runs, the progress callback is never called, every argument is given
 * back once, and the outcomes say the items never started. */
START_TEST(map_cancelled_at_the_call_runs_nothing_and_reports_nothing)
{
    enum { N = 5 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    nursery_outcome_t o[N];
    outcomes_unset(o, N);
    int progress_calls = 0;
    nursery_map_options_t opts = {.limit = 2, .task = &item_opts, .progress = count_progress,
                                  .progress_ctx = &progress_calls};
    nursery_scope_t *scope = NULL;
    ck_assert_int_eq(nursery_scope_open(&scope, NURSERY_FOREVER, 0), 0);
    ck_assert_int_eq(nursery_scope_cancel(scope), 0);
    nursery_errors_t *errs = UNSET_PTR;
    int rc = nursery_map(NULL, item_fn, c.args, N, &opts, o, &errs);
    ck_assert_int_eq(nursery_scope_close(scope, NULL), 0);
    ck_assert_int_eq(rc, ECANCELED);
    nursery_errors_free(errs);
    ck_assert_int_eq(progress_calls, 0);
    ck_assert_int_eq(atomic_load(&c.ran_total), 0);
    for (size_t i = 0; i < N; i++)
        assert_never_started(&o[i], i);
    assert_items_destroyed_once(&c);
    map_ctx_free(&c);
}
END_TEST

START_TEST(map_bad_input_is_einval_and_runs_nothing)
{
    enum { N = 3 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    nursery_outcome_t o[N];
    nursery_map_options_t opts = {.limit = 2, .task = &item_opts};
    outcomes_unset(o, N);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(nursery_map(NULL, NULL, c.args, N, &opts, o, &errs), EINVAL);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(nursery_map(NULL, item_fn, NULL, N, &opts, o, NULL), EINVAL);
    ck_assert_int_eq(nursery_map(NULL, item_fn, c.args, N, &opts, NULL, NULL), EINVAL);
    nursery_map_options_t bad = {.limit = 2, .flags = 1u << 4, .task = &item_opts};
    ck_assert_int_eq(nursery_map(NULL, item_fn, c.args, N, &bad, o, NULL), EINVAL);
    bad.flags = NURSERY_RETURN_ERRORS | (1u << 31);
    ck_assert_int_eq(nursery_map(NULL, item_fn, c.args, N, &bad, o, NULL), EINVAL);
    /* Of the task flags only NURSERY_TASK_SUPPRESS_ERROR means something
     * for an item. */
    const unsigned bad_task_flags[] = {NURSERY_TASK_DAEMON, NURSERY_TASK_MAIN, 1u << 3};
    for (size_t f = 0; f < sizeof bad_task_flags / sizeof bad_task_flags[0]; f++) {
        nursery_task_options_t bad_task = {.arg_destroy = item_destroy, .flags = bad_task_flags[f]};
        nursery_map_options_t bad_item = {.limit = 2, .task = &bad_task};
        errs = UNSET_PTR;
        ck_assert_int_eq(nursery_map(NULL, item_fn, c.args, N, &bad_item, o, &errs), EINVAL);
        ck_assert_ptr_null(errs);
    }
    ck_assert(outcomes_untouched(o, N));
    ck_assert_int_eq(atomic_load(&c.ran_total), 0);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(atomic_load(&c.items[i].destroyed), 0);
    /* n == 0: nothing to run; args and outcomes may be NULL. */
    errs = UNSET_PTR;
    ck_assert_int_eq(nursery_map(NULL, item_fn, NULL, 0, &opts, NULL, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(nursery_map(NULL, item_fn, NULL, 0, NULL, NULL, NULL), 0);
    /* The same arguments, fixed, run. */
    ck_assert_int_eq(nursery_map(NULL, item_fn, c.args, N, &opts, o, NULL), 0);
    assert_map_outcomes(&c, o);
    assert_items_destroyed_once(&c);
    map_ctx_free(&c);
}
END_TEST

/* ------------------------------------------------------------------------ */
/* map_stream                                                               */
/* ------------------------------------------------------------------------ */

/* The generator hands out the items of a map_ctx, then ends (or fails). */
struct gen {
    struct map_ctx *c;
    size_t n;             /* items to hand out */
    int fail_code;        /* then fail with this (0: NURSERY_EEND) */
    pthread_t caller;
    size_t calls;
    size_t yielded;
    bool ended;           /* returned NURSERY_EEND */
    bool called_after_end;
    bool wrong_thread;
    nursery_result_t *open_at_fill; /* opened when `fill` items are out (NULL: none) */
    size_t fill;
    nursery_result_t *open_at_end;  /* opened when it ends (NULL: none) */
};

static int gen_next(void *ctx, void **arg)
{
    struct gen *g = ctx;
    g->calls++;
    if (!pthread_equal(pthread_self(), g->caller))
        g->wrong_thread = true;
    if (g->ended)
        g->called_after_end = true;
    if (g->yielded == g->n) {
        if (g->fail_code)
            return nursery_fail(g->fail_code, "generator failed");
        g->ended = true;
        if (g->open_at_end)
            nursery_future_set_value(g->open_at_end, NULL);
        return NURSERY_EEND;
    }
    *arg = g->c->args[g->yielded++];
    if (g->open_at_fill && g->yielded == g->fill)
        nursery_future_set_value(g->open_at_fill, NULL);
    return 0;
}

/* The sink checks the order, the arguments and the outcomes, and how far
 * ahead the generator was read. */
struct sink {
    struct gen *gen;
    size_t calls;
    size_t next_index;
    bool out_of_order, bad_arg, bad_outcome, wrong_thread;
    size_t max_ahead; /* of gen->yielded - index, at each call */
    size_t stop_at;   /* returns stop_code at this index (SIZE_MAX: never) */
    int stop_code;
};

static int sink_fn(void *ctx, size_t index, void *arg, const nursery_outcome_t *o)
{
    struct sink *s = ctx;
    struct map_ctx *c = s->gen->c;
    s->calls++;
    if (!pthread_equal(pthread_self(), s->gen->caller))
        s->wrong_thread = true;
    if (index != s->next_index)
        s->out_of_order = true;
    s->next_index = index + 1;
    if (index >= c->n || arg != c->args[index])
        s->bad_arg = true;
    else if (item_fails(c, index)) {
        if (o->code != c->fail_code || o->value != NULL || o->error == NULL ||
            nursery_error_code(o->error) != c->fail_code)
            s->bad_outcome = true;
    } else if (o->code != 0 || o->value != INT2PTR(2 * index + 1) || o->error != NULL) {
        s->bad_outcome = true;
    }
    size_t ahead = s->gen->yielded - index;
    if (ahead > s->max_ahead)
        s->max_ahead = ahead;
    if (index == s->stop_at)
        return s->stop_code;
    return 0;
}

static void stream_init(struct gen *g, struct sink *s, struct map_ctx *c, size_t n)
{
    memset(g, 0, sizeof *g);
    memset(s, 0, sizeof *s);
    g->c = c;
    g->n = n;
    g->caller = pthread_self();
    s->gen = g;
    s->stop_at = SIZE_MAX;
}

static void assert_sink_clean(const struct sink *s)
{
    ck_assert(!s->out_of_order);
    ck_assert(!s->bad_arg);
    ck_assert(!s->bad_outcome);
    ck_assert(!s->wrong_thread);
    ck_assert(!s->gen->wrong_thread);
    ck_assert(!s->gen->called_after_end);
}

/* Each item the generator handed out destroyed once, the others never. */
static void assert_yielded_destroyed_once(const struct gen *g)
{
    for (size_t i = 0; i < g->c->n; i++)
        ck_assert_msg(atomic_load(&g->c->items[i].destroyed) == (i < g->yielded ? 1 : 0),
                      "item %zu (of %zu handed out): arg_destroy ran %d times", i, g->yielded,
                      atomic_load(&g->c->items[i].destroyed));
}

START_TEST(map_stream_delivers_in_input_order)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 200, K = 8 };
    for (int return_errors = 0; return_errors < 2; return_errors++) {
        struct map_ctx c;
        map_ctx_init(&c, N);
        map_ctx_random_sleeps(&c, 2000, 23u + (uint32_t)return_errors);
        if (return_errors) {
            c.fail_every = 9;
            c.fail_code = ENOSPC;
        }
        struct gen g;
        struct sink s;
        stream_init(&g, &s, &c, N);
        nursery_map_options_t opts = {.limit = K, .task = &item_opts,
                                      .flags = return_errors ? NURSERY_RETURN_ERRORS : 0u};
        nursery_errors_t *errs = UNSET_PTR;
        ck_assert_int_eq(
            nursery_map_stream(pool, item_fn, gen_next, &g, sink_fn, &s, &opts, &errs), 0);
        ck_assert_tasks_ok();
        ck_assert_ptr_null(errs);
        assert_sink_clean(&s);
        ck_assert_uint_eq(s.calls, N);
        ck_assert(g.ended);
        ck_assert_uint_eq(g.calls, N + 1);
        ck_assert_uint_le(s.max_ahead, 2 * K);
        ck_assert_int_le(atomic_load(&c.max_in_flight), K);
        assert_items_ran_once(&c);
        assert_items_destroyed_once(&c);
        map_ctx_free(&c);
    }
    destroy_pool(pool);
}
END_TEST

/* The generator fails after 100 items (item 99 is still running then):
 * NURSERY_EFAILED with its EIO in the group; the sink saw only a prefix. */
START_TEST(map_stream_generator_failure_stops_it)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 100, K = 4 };
    nursery_result_t *never = gate_new();
    struct map_ctx c;
    map_ctx_init(&c, N);
    map_ctx_random_sleeps(&c, 500, 29u);
    c.block = never;
    c.block_from = N - 1;
    c.block_to = N;
    struct gen g;
    struct sink s;
    stream_init(&g, &s, &c, N);
    g.fail_code = EIO;
    nursery_map_options_t opts = {.limit = K, .task = &item_opts};
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_map_stream(pool, item_fn, gen_next, &g, sink_fn, &s, &opts, &errs),
                     NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_ptr_nonnull(errs);
    ck_assert(group_has(errs, EIO));
    nursery_errors_free(errs);
    assert_sink_clean(&s);
    ck_assert_uint_eq(g.yielded, N);
    ck_assert_uint_eq(g.calls, N + 1); /* not called again after it failed */
    ck_assert_uint_lt(s.calls, N);     /* item 99 never got to the sink */
    ck_assert_uint_eq(s.next_index, s.calls);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_le(atomic_load(&c.items[i].ran), 1);
    assert_yielded_destroyed_once(&g);
    map_ctx_free(&c);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* A sink that returns non-zero stops the map: nothing more is handed out
 * and its code is in the error group. */
START_TEST(map_stream_sink_failure_stops_it)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 100, K = 4, STOP = 10 };
    /* With RETURN_ERRORS too: the sink can always stop it. */
    for (int return_errors = 0; return_errors < 2; return_errors++) {
        struct map_ctx c;
        map_ctx_init(&c, N);
        map_ctx_random_sleeps(&c, 300, 31u + (uint32_t)return_errors);
        struct gen g;
        struct sink s;
        stream_init(&g, &s, &c, N);
        s.stop_at = STOP;
        s.stop_code = EPIPE;
        nursery_map_options_t opts = {.limit = K, .task = &item_opts,
                                      .flags = return_errors ? NURSERY_RETURN_ERRORS : 0u};
        nursery_errors_t *errs = NULL;
        ck_assert_int_eq(
            nursery_map_stream(pool, item_fn, gen_next, &g, sink_fn, &s, &opts, &errs),
            NURSERY_EFAILED);
        ck_assert_tasks_ok();
        ck_assert(group_has(errs, EPIPE));
        nursery_errors_free(errs);
        assert_sink_clean(&s);
        ck_assert_uint_eq(s.calls, STOP + 1);
        ck_assert_uint_le(g.yielded, STOP + 1 + 2 * K);
        assert_yielded_destroyed_once(&g);
        map_ctx_free(&c);
    }
    destroy_pool(pool);
}
END_TEST

/* The window: the generator is read at most 2 x limit ahead of the sink.
 * With limit 4, item 0 waits until the generator has handed out 2 x limit
 * items (or 2 s, if the library keeps a smaller window), so the window
 * fills behind it; at every sink call, items read - items handed out <=
 * 2 x limit.  (With limit 1 nothing can run beside item 0: no hold.) */
START_TEST(map_stream_reads_no_further_than_the_window)
{
    nursery_pool_t *pool = test_pool(8);
    const size_t limits[] = {1, 4};
    for (size_t t = 0; t < sizeof limits / sizeof limits[0]; t++) {
        size_t k = limits[t];
        enum { N = 120 };
        nursery_result_t *filled = gate_new();
        struct map_ctx c;
        map_ctx_init(&c, N);
        map_ctx_random_sleeps(&c, 200, 37u);
        struct gen g;
        struct sink s;
        stream_init(&g, &s, &c, N);
        if (k > 1) {
            c.hold = filled;
            c.hold_index = 0;
            g.open_at_fill = filled;
            g.fill = 2 * k;
        }
        nursery_map_options_t opts = {.limit = k, .task = &item_opts};
        ck_assert_int_eq(
            nursery_map_stream(pool, item_fn, gen_next, &g, sink_fn, &s, &opts, NULL), 0);
        assert_sink_clean(&s);
        ck_assert_uint_eq(s.calls, N);
        ck_assert_msg(s.max_ahead <= 2 * k, "limit %zu: %zu items read ahead of the sink", k,
                      s.max_ahead);
        ck_assert_int_le(atomic_load(&c.max_in_flight), (int)k);
        assert_items_destroyed_once(&c);
        map_ctx_free(&c);
        nursery_result_release(filled);
    }
    destroy_pool(pool);
}
END_TEST

/* Progress: total is 0 until the generator has ended, then the number of
 * items.  The last item waits for the generator's end, so some progress
 * follows it. */
struct stream_progress {
    struct gen *gen;
    size_t n;
    size_t calls;
    size_t last_done;
    bool wrong_thread, decreasing, total_before_end, bad_total_after_end, done_over_total;
    bool saw_total;
};

static void stream_progress_fn(void *ctx, size_t done, size_t total)
{
    struct stream_progress *p = ctx;
    p->calls++;
    if (!pthread_equal(pthread_self(), p->gen->caller))
        p->wrong_thread = true;
    if (done < p->last_done)
        p->decreasing = true;
    p->last_done = done;
    if (!p->gen->ended) {
        if (total != 0)
            p->total_before_end = true;
    } else {
        if (total != p->n)
            p->bad_total_after_end = true;
        else
            p->saw_total = true;
        if (done > total)
            p->done_over_total = true;
    }
}

START_TEST(map_stream_progress_total_is_zero_until_the_end)
{
    nursery_pool_t *pool = test_pool(4);
    enum { N = 50, K = 4 };
    nursery_result_t *ended = gate_new();
    struct map_ctx c;
    map_ctx_init(&c, N);
    map_ctx_random_sleeps(&c, 500, 41u);
    /* The last item waits (at most 2 s) for the generator's end. */
    c.hold = ended;
    c.hold_index = N - 1;
    struct gen g;
    struct sink s;
    stream_init(&g, &s, &c, N);
    g.open_at_end = ended;
    struct stream_progress p = {.gen = &g, .n = N};
    nursery_map_options_t opts = {.limit = K, .progress = stream_progress_fn, .progress_ctx = &p};
    ck_assert_int_eq(nursery_map_stream(pool, item_fn, gen_next, &g, sink_fn, &s, &opts, NULL), 0);
    assert_sink_clean(&s);
    ck_assert_uint_eq(s.calls, N);
    ck_assert(g.ended);
    ck_assert_uint_ge(p.calls, 1);
    ck_assert(!p.wrong_thread);
    ck_assert(!p.decreasing);
    ck_assert_msg(!p.total_before_end, "a non-zero total before the generator ended");
    ck_assert(!p.bad_total_after_end);
    ck_assert(!p.done_over_total);
    ck_assert(p.saw_total);
    ck_assert_uint_eq(p.last_done, N);
    map_ctx_free(&c);
    nursery_result_release(ended);
    destroy_pool(pool);
}
END_TEST

START_TEST(map_stream_bad_input_and_cancelled_caller)
{
    nursery_pool_t *pool = test_pool(2);
    enum { N = 10 };
    struct map_ctx c;
    map_ctx_init(&c, N);
    struct gen g;
    struct sink s;
    stream_init(&g, &s, &c, N);
    nursery_map_options_t opts = {.limit = 2, .task = &item_opts};
    nursery_map_options_t bad = {.limit = 2, .flags = 1u << 5};
    ck_assert_int_eq(nursery_map_stream(pool, NULL, gen_next, &g, sink_fn, &s, &opts, NULL),
                     EINVAL);
    ck_assert_int_eq(nursery_map_stream(pool, item_fn, NULL, &g, sink_fn, &s, &opts, NULL),
                     EINVAL);
    ck_assert_int_eq(nursery_map_stream(pool, item_fn, gen_next, &g, NULL, &s, &opts, NULL),
                     EINVAL);
    ck_assert_int_eq(nursery_map_stream(pool, item_fn, gen_next, &g, sink_fn, &s, &bad, NULL),
                     EINVAL);
    ck_assert_uint_eq(g.calls, 0);
    ck_assert_uint_eq(s.calls, 0);
    ck_assert_int_eq(atomic_load(&c.ran_total), 0);

    /* An empty input. */
    struct map_ctx empty;
    map_ctx_init(&empty, 0);
    struct gen eg;
    struct sink es;
    stream_init(&eg, &es, &empty, 0);
    nursery_errors_t *errs = UNSET_PTR;
    ck_assert_int_eq(
        nursery_map_stream(pool, item_fn, gen_next, &eg, sink_fn, &es, NULL, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_uint_eq(eg.calls, 1);
    ck_assert_uint_eq(es.calls, 0);
    map_ctx_free(&empty);

    /* Cancelled at the call: ECANCELED, the generator is never called,
     * nothing runs, nothing is handed out. */
    nursery_scope_t *sc = NULL;
    ck_assert_int_eq(nursery_scope_open(&sc, NURSERY_FOREVER, 0), 0);
    ck_assert_int_eq(nursery_scope_cancel(sc), 0);
    ck_assert_int_eq(nursery_map_stream(pool, item_fn, gen_next, &g, sink_fn, &s, &opts, NULL),
                     ECANCELED);
    ck_assert_int_eq(nursery_scope_close(sc, NULL), 0);
    ck_assert_uint_eq(g.calls, 0);
    ck_assert_uint_eq(s.calls, 0);
    ck_assert_int_eq(atomic_load(&c.ran_total), 0);
    assert_yielded_destroyed_once(&g);
    map_ctx_free(&c);
    destroy_pool(pool);
}
END_TEST

/* ------------------------------------------------------------------------ */

static Suite *map_suite(void)
{
    Suite *s = suite_create("map");
    TCase *tc = tcase_with_timeout(s, "gather", 60);
    tcase_add_test(tc, gather_outcomes_in_argument_order);
    tcase_add_test(tc, gather_first_failure_cancels_the_others);
    tcase_add_test(tc, gather_return_errors_runs_every_branch);
    tcase_add_test(tc, gather_nested_on_a_one_thread_pool);
    tcase_add_test(tc, gather_of_nothing_returns_zero);
    tcase_add_test(tc, gather_bad_input_is_einval_and_runs_nothing);
    tcase_add_test(tc, gather_cancelled_caller_is_ecanceled);
    tcase_add_test(tc, outcomes_release_sets_errors_to_null);

    tc = tcase_with_timeout(s, "map", 60);
    tcase_add_test(tc, map_preserves_input_order);
    tcase_add_test(tc, map_never_has_more_than_limit_in_flight);
    tcase_add_test(tc, map_fail_fast_starts_nothing_after_the_failure);
    tcase_add_test(tc, map_return_errors_runs_every_item);
    tcase_add_test(tc, map_progress_in_caller_thread);
    tcase_add_test(tc, map_arg_destroy_once_on_every_path);
    tcase_add_test(tc, map_inside_a_task_on_a_one_thread_pool);
    tcase_add_test(tc, map_caller_cancelled_is_ecanceled);
    tcase_add_test(tc, map_cancelled_at_the_call_runs_nothing_and_reports_nothing);
    tcase_add_test(tc, map_bad_input_is_einval_and_runs_nothing);

    tc = tcase_with_timeout(s, "map_million", 120);
    tcase_add_test(tc, map_million_items_keep_the_pool_queue_bounded);

    tc = tcase_with_timeout(s, "map_stream", 60);
    tcase_add_test(tc, map_stream_delivers_in_input_order);
    tcase_add_test(tc, map_stream_generator_failure_stops_it);
    tcase_add_test(tc, map_stream_sink_failure_stops_it);
    tcase_add_test(tc, map_stream_reads_no_further_than_the_window);
    tcase_add_test(tc, map_stream_progress_total_is_zero_until_the_end);
    tcase_add_test(tc, map_stream_bad_input_and_cancelled_caller);
    return s;
}

int main(void)
{
    return run_suite(map_suite());
}
