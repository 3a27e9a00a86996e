/* SPDX-License-Identifier: MIT */
/*
 * test_combinator.c - asyncgui's wait_any and wait_all over functions
 * (nursery_run_any, nursery_run_all) and their nesting
 * (nursery_run_combinator): who finishes, who is cancelled, how errors
 * come back, bad input, arg_destroy on every path, and a cancelled caller.
 */
#include "helpers.h"

/* ---- leaves ---------------------------------------------------------------
 * A leaf counts its runs, may wait on a gate (a cancellation point), may
 * fail, and returns `value`.  Its arg_destroy counts and may open a gate for
 * another leaf, so "after this branch ended" needs no sleep. */

struct leaf {
    int value;
    int fail;                /* fail with this code after the wait (0: none) */
    const char *msg;         /* its message */
    bool fail_on_cancel;     /* fail also when the wait was cancelled */
    latch_t *running;        /* counted down on entry (NULL: none) */
    latch_t *barrier;        /* counted down, then waited for (not cancellable) */
    nursery_result_t *gate;  /* waited for (NULL: none) */
    nursery_result_t *opens; /* opened by arg_destroy (NULL: none) */
    atomic_int ran;
    atomic_int destroyed;
    atomic_int wait_rc;
};

static void leaf_init(struct leaf *l, int value)
{
    memset(l, 0, sizeof(*l));
    l->value = value;
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
    if (l->barrier) {
        latch_count_down(l->barrier);
        task_expect(latch_wait(l->barrier));
    }
    if (l->gate) {
        int rc = gate_wait(l->gate);
        atomic_store(&l->wait_rc, rc);
        if (rc && !(l->fail && l->fail_on_cancel))
            return rc;
    }
    if (l->fail)
        return nursery_fail(l->fail, "%s", l->msg ? l->msg : "leaf");
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
static const nursery_task_options_t quiet_opts = {.arg_destroy = leaf_destroy,
                                                  .flags = NURSERY_TASK_SUPPRESS_ERROR};

static nursery_branch_t leaf_branch(struct leaf *l)
{
    return (nursery_branch_t){.fn = leaf_fn, .arg = l, .opts = &leaf_opts};
}

/* r is done with a cancellation. */
static void assert_cancelled(const nursery_result_t *r)
{
    assert_failed(r, ECANCELED);
}

static void assert_destroyed_once(struct leaf *leaves, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(atomic_load(&leaves[i].destroyed) == 1, "leaf %zu: arg_destroy ran %d times",
                      i, atomic_load(&leaves[i].destroyed));
}

/* ---- run_any ------------------------------------------------------------- */

START_TEST(run_any_first_finisher_cancels_the_rest)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *never = gate_new();
    struct leaf l[3];
    for (int i = 0; i < 3; i++)
        leaf_init(&l[i], 10 + i);
    l[1].gate = never;
    l[2].gate = never;
    nursery_branch_t b[3] = {leaf_branch(&l[0]), leaf_branch(&l[1]), leaf_branch(&l[2])};
    nursery_result_t *r[3] = {NULL, NULL, NULL};
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run_any(pool, b, 3, r, &errs), 0);
    ck_assert_tasks_ok();
    assert_value(r[0], 10);
    assert_cancelled(r[1]);
    assert_cancelled(r[2]);
    /* The cancellations it caused are not errors, but counted as join does. */
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 2);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&l[0].ran), 1);
    assert_destroyed_once(l, 3);
    results_release(r, 3);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* Every branch meets the others at a barrier no cancellation reaches, then
 * returns: all finish, none is reported cancelled. */
START_TEST(run_any_more_than_one_may_finish)
{
    nursery_pool_t *pool = test_pool(4);
    latch_t barrier;
    latch_init(&barrier, 3);
    struct leaf l[3];
    for (int i = 0; i < 3; i++) {
        leaf_init(&l[i], 20 + i);
        l[i].barrier = &barrier;
    }
    nursery_branch_t b[3] = {leaf_branch(&l[0]), leaf_branch(&l[1]), leaf_branch(&l[2])};
    nursery_result_t *r[3];
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run_any(pool, b, 3, r, &errs), 0);
    ck_assert_tasks_ok();
    for (int i = 0; i < 3; i++)
        assert_value(r[i], 20 + i);
    ck_assert_ptr_null(errs);
    assert_destroyed_once(l, 3);
    results_release(r, 3);
    latch_destroy(&barrier);
    destroy_pool(pool);
}
END_TEST

/* A branch that fails but keeps its error still ends first: it cancels the
 * others, and the call succeeds. */
START_TEST(run_any_suppressed_failure_still_ends_first)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *never = gate_new();
    struct leaf l[2];
    leaf_init(&l[0], 0);
    leaf_init(&l[1], 1);
    l[0].fail = EIO;
    l[0].msg = "kept";
    l[1].gate = never;
    nursery_branch_t b[2] = {{.fn = leaf_fn, .arg = &l[0], .opts = &quiet_opts}, leaf_branch(&l[1])};
    nursery_result_t *r[2];
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run_any(pool, b, 2, r, &errs), 0);
    nursery_error_t *e = assert_failed(r[0], EIO);
    ck_assert_str_eq(nursery_error_message(e), "kept");
    assert_cancelled(r[1]);
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    assert_destroyed_once(l, 2);
    results_release(r, 2);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* ---- run_all ------------------------------------------------------------- */

/* Branch 1 waits for a gate that branch 0's arg_destroy opens, so it goes
 * on after branch 0 has ended: wait_all does not cancel it. */
START_TEST(run_all_waits_for_every_branch)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *after0 = gate_new();
    struct leaf l[3];
    for (int i = 0; i < 3; i++)
        leaf_init(&l[i], 30 + i);
    l[0].opens = after0;
    l[1].gate = after0;
    nursery_branch_t b[3] = {leaf_branch(&l[0]), leaf_branch(&l[1]), leaf_branch(&l[2])};
    nursery_result_t *r[3];
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run_all(pool, b, 3, r, &errs), 0);
    ck_assert_tasks_ok();
    for (int i = 0; i < 3; i++)
        assert_value(r[i], 30 + i);
    ck_assert_int_eq(atomic_load(&l[1].wait_rc), 0);
    ck_assert_ptr_null(errs);
    assert_destroyed_once(l, 3);
    results_release(r, 3);
    nursery_result_release(after0);
    destroy_pool(pool);
}
END_TEST

START_TEST(run_all_suppressed_failure_cancels_nothing)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *after0 = gate_new();
    struct leaf l[2];
    leaf_init(&l[0], 0);
    leaf_init(&l[1], 41);
    l[0].fail = EIO;
    l[0].msg = "kept";
    l[0].opens = after0;
    l[1].gate = after0;
    nursery_branch_t b[2] = {{.fn = leaf_fn, .arg = &l[0], .opts = &quiet_opts}, leaf_branch(&l[1])};
    nursery_result_t *r[2];
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run_all(pool, b, 2, r, &errs), 0);
    assert_failed(r[0], EIO);
    assert_value(r[1], 41);
    ck_assert_ptr_null(errs);
    assert_destroyed_once(l, 2);
    results_release(r, 2);
    nursery_result_release(after0);
    destroy_pool(pool);
}
END_TEST

/* ---- errors -------------------------------------------------------------- */

/* Branch 0 fails once all are running; the others are cancelled, and the
 * group has the one error and counts the cancellations.  Both forms. */
START_TEST(first_error_cancels_the_rest_and_comes_back_in_a_group)
{
    nursery_pool_t *pool = test_pool(4);
    for (int any = 0; any < 2; any++) {
        nursery_result_t *never = gate_new();
        /* All three meet at a barrier, then branch 0 fails at once and the
         * others wait to be cancelled. */
        latch_t barrier;
        latch_init(&barrier, 3);
        struct leaf l[3];
        for (int i = 0; i < 3; i++) {
            leaf_init(&l[i], i);
            l[i].barrier = &barrier;
            l[i].gate = never;
        }
        l[0].gate = NULL;
        l[0].fail = EIO;
        l[0].msg = "boom";
        nursery_branch_t b[3] = {leaf_branch(&l[0]), leaf_branch(&l[1]), leaf_branch(&l[2])};
        nursery_result_t *r[3];
        nursery_errors_t *errs = NULL;
        int rc = any ? nursery_run_any(pool, b, 3, r, &errs) : nursery_run_all(pool, b, 3, r, &errs);
        ck_assert_int_eq(rc, NURSERY_EFAILED);
        ck_assert_tasks_ok();
        ck_assert_ptr_nonnull(errs);
        ck_assert_uint_eq(nursery_errors_count(errs), 1);
        nursery_error_t *e = nursery_errors_get(errs, 0);
        ck_assert_int_eq(nursery_error_code(e), EIO);
        ck_assert_str_eq(nursery_error_message(e), "boom");
        ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
        ck_assert_uint_eq(nursery_errors_cancelled(errs), 2);
        nursery_errors_free(errs);
        assert_failed(r[0], EIO);
        assert_cancelled(r[1]);
        assert_cancelled(r[2]);
        ck_assert_int_eq(atomic_load(&l[1].wait_rc), ECANCELED);
        ck_assert_int_eq(atomic_load(&l[2].wait_rc), ECANCELED);
        assert_destroyed_once(l, 3);
        results_release(r, 3);
        latch_destroy(&barrier);
        nursery_result_release(never);
    }
    destroy_pool(pool);
}
END_TEST

/* Two real errors: the primary one first, the later one after it; with
 * errors NULL the call still fails and frees the group. */
START_TEST(every_real_error_is_in_the_group)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *never = gate_new();
    latch_t barrier;
    latch_init(&barrier, 2);
    struct leaf l[2];
    leaf_init(&l[0], 0);
    leaf_init(&l[1], 0);
    l[0].barrier = l[1].barrier = &barrier;
    l[0].fail = EIO;
    l[0].msg = "first";
    l[1].gate = never;
    l[1].fail = EPIPE;
    l[1].msg = "second";
    l[1].fail_on_cancel = true;
    nursery_branch_t b[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
    nursery_result_t *r[2];
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run_all(pool, b, 2, r, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 2);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 0)), "first");
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 1)), EPIPE);
    ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 1)), "second");
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&l[1].wait_rc), ECANCELED);
    assert_failed(r[0], EIO);
    assert_failed(r[1], EPIPE);
    assert_destroyed_once(l, 2);
    results_release(r, 2);

    /* errors NULL */
    latch_destroy(&barrier);
    latch_init(&barrier, 2);
    struct leaf m[2];
    leaf_init(&m[0], 0);
    leaf_init(&m[1], 0);
    m[0].barrier = m[1].barrier = &barrier;
    m[0].fail = EIO;
    m[1].gate = never;
    nursery_branch_t c[2] = {leaf_branch(&m[0]), leaf_branch(&m[1])};
    ck_assert_int_eq(nursery_run_any(pool, c, 2, r, NULL), NURSERY_EFAILED);
    assert_failed(r[0], EIO);
    assert_cancelled(r[1]);
    assert_destroyed_once(m, 2);
    results_release(r, 2);
    latch_destroy(&barrier);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* ---- nesting ------------------------------------------------------------- */

static nursery_result_t *nest_gate;

static void open_nest_gate(void *arg)
{
    (void)arg;
    nursery_future_set_value(nest_gate, NULL);
}

/* wait_all(f1, wait_any(f2, f3)): f2 ends first and cancels f3; the inner
 * branch's end cancels nothing outside (f1 goes on after it, through a gate
 * the inner branch's arg_destroy opens); every leaf's outcome is in the
 * inner results. */
START_TEST(wait_all_of_f1_and_wait_any_of_f2_f3)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *never = gate_new();
    nest_gate = gate_new();
    struct leaf f[3];
    for (int i = 0; i < 3; i++)
        leaf_init(&f[i], i + 1);
    f[0].gate = nest_gate;
    f[2].gate = never;
    nursery_branch_t inner_b[2] = {leaf_branch(&f[1]), leaf_branch(&f[2])};
    nursery_result_t *inner_r[2] = {NULL, NULL};
    nursery_combinator_t inner = {.any = true, .branches = inner_b, .n = 2, .results = inner_r};
    nursery_task_options_t inner_opts = {.name = "inner", .arg_destroy = open_nest_gate};
    nursery_branch_t outer_b[2] = {leaf_branch(&f[0]),
                                   {.fn = nursery_run_combinator, .arg = &inner, .opts = &inner_opts}};
    nursery_result_t *outer_r[2];
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run_all(pool, outer_b, 2, outer_r, &errs), 0);
    ck_assert_tasks_ok();
    ck_assert_ptr_null(errs);
    assert_value(outer_r[0], 1);
    ck_assert_int_eq(atomic_load(&f[0].wait_rc), 0);
    assert_value(outer_r[1], 0); /* never stores a value */
    ck_assert_ptr_nonnull(inner_r[0]);
    ck_assert_ptr_nonnull(inner_r[1]);
    assert_value(inner_r[0], 2);
    assert_cancelled(inner_r[1]);
    assert_destroyed_once(f, 3);
    results_release(outer_r, 2);
    results_release(inner_r, 2);
    nursery_result_release(nest_gate);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* wait_any(f1, wait_all(f2, f3)): the inner wait_all ends first (both its
 * leaves finish) and cancels f1. */
START_TEST(wait_any_of_f1_and_wait_all_of_f2_f3)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *never = gate_new();
    struct leaf f[3];
    for (int i = 0; i < 3; i++)
        leaf_init(&f[i], i + 1);
    f[0].gate = never;
    nursery_branch_t inner_b[2] = {leaf_branch(&f[1]), leaf_branch(&f[2])};
    nursery_result_t *inner_r[2] = {NULL, NULL};
    nursery_combinator_t inner = {.any = false, .branches = inner_b, .n = 2, .results = inner_r};
    nursery_branch_t outer_b[2] = {leaf_branch(&f[0]), {.fn = nursery_run_combinator, .arg = &inner}};
    nursery_result_t *outer_r[2];
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run_any(pool, outer_b, 2, outer_r, &errs), 0);
    assert_cancelled(outer_r[0]);
    assert_value(outer_r[1], 0);
    assert_value(inner_r[0], 2);
    assert_value(inner_r[1], 3);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    assert_destroyed_once(f, 3);
    results_release(outer_r, 2);
    results_release(inner_r, 2);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

static void assert_inner_group(const nursery_error_t *e)
{
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(nursery_error_code(e), NURSERY_EFAILED);
    nursery_errors_t *g = nursery_error_payload(e);
    ck_assert_ptr_nonnull(g);
    ck_assert_uint_eq(nursery_errors_count(g), 1);
    nursery_error_t *leaf_err = nursery_errors_get(g, 0);
    ck_assert_int_eq(nursery_error_code(leaf_err), EIO);
    ck_assert_str_eq(nursery_error_message(leaf_err), "leaf failed");
    ck_assert_uint_eq(nursery_errors_cancelled(g), 1);
}

/* wait_all(f1, wait_any(f2 fails, f3)): the inner group is the payload of
 * the outer error, in the outer group and in the inner branch's result. */
START_TEST(nested_failure_carries_the_inner_group)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *never = gate_new();
    latch_t barrier;
    latch_init(&barrier, 2);
    struct leaf f[3];
    for (int i = 0; i < 3; i++)
        leaf_init(&f[i], i + 1);
    f[0].gate = never;
    f[1].barrier = f[2].barrier = &barrier; /* f3 runs when f2 fails */
    f[1].fail = EIO;
    f[1].msg = "leaf failed";
    f[2].gate = never;
    nursery_branch_t inner_b[2] = {leaf_branch(&f[1]), leaf_branch(&f[2])};
    nursery_result_t *inner_r[2] = {NULL, NULL};
    nursery_combinator_t inner = {.any = true, .branches = inner_b, .n = 2, .results = inner_r};
    nursery_branch_t outer_b[2] = {leaf_branch(&f[0]), {.fn = nursery_run_combinator, .arg = &inner}};
    nursery_result_t *outer_r[2];
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run_all(pool, outer_b, 2, outer_r, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1); /* f1 */
    nursery_error_t *outer_e = nursery_errors_get(errs, 0);
    assert_inner_group(outer_e);
    nursery_error_t *r_e = assert_failed(outer_r[1], NURSERY_EFAILED);
    assert_inner_group(r_e);
    ck_assert_ptr_eq(nursery_error_payload(r_e), nursery_error_payload(outer_e));
    assert_cancelled(outer_r[0]);
    assert_failed(inner_r[0], EIO);
    assert_cancelled(inner_r[1]);
    assert_destroyed_once(f, 3);
    nursery_errors_free(errs);
    /* The payload lives as long as the error: still readable through the
     * result after the group is gone. */
    assert_inner_group(r_e);
    results_release(outer_r, 2);
    results_release(inner_r, 2);
    latch_destroy(&barrier);
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* Called outside any task, it runs on the default pool; in a task, on that
 * task's pool (whose completed count then includes the leaves). */
START_TEST(run_combinator_runs_on_the_calling_tasks_pool)
{
    struct leaf f[2];
    leaf_init(&f[0], 5);
    leaf_init(&f[1], 6);
    nursery_branch_t b[2] = {leaf_branch(&f[0]), leaf_branch(&f[1])};
    nursery_result_t *r[2] = {NULL, NULL};
    nursery_combinator_t c = {.any = false, .branches = b, .n = 2, .results = r};
    void *v = INT2PTR(7);
    ck_assert_int_eq(nursery_run_combinator(&c, &v), 0);
    ck_assert_ptr_eq(v, INT2PTR(7));
    assert_value(r[0], 5);
    assert_value(r[1], 6);
    results_release(r, 2);
    ck_assert_int_eq(nursery_run_combinator(NULL, &v), EINVAL);

    nursery_pool_t *pool = test_pool(2);
    leaf_init(&f[0], 5);
    leaf_init(&f[1], 6);
    nursery_branch_t outer = {.fn = nursery_run_combinator, .arg = &c};
    nursery_result_t *outer_r = NULL;
    ck_assert_int_eq(nursery_run_all(pool, &outer, 1, &outer_r, NULL), 0);
    assert_value(outer_r, 0);
    assert_value(r[0], 5);
    assert_value(r[1], 6);
    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
    ck_assert_uint_eq(st.completed, 3);
    nursery_result_release(outer_r);
    results_release(r, 2);
    destroy_pool(pool);
}
END_TEST

/* An invalid inner combinator fails its branch with EINVAL. */
START_TEST(run_combinator_with_bad_branches_is_einval)
{
    nursery_pool_t *pool = test_pool(2);
    struct leaf f;
    leaf_init(&f, 1);
    nursery_branch_t b = {.fn = NULL, .arg = &f, .opts = &leaf_opts};
    nursery_result_t *r = INT2PTR(1);
    nursery_combinator_t c = {.any = true, .branches = &b, .n = 1, .results = &r};
    ck_assert_int_eq(nursery_run_combinator(&c, NULL), EINVAL);
    ck_assert_int_eq(atomic_load(&f.destroyed), 0);
    nursery_branch_t outer = {.fn = nursery_run_combinator, .arg = &c};
    nursery_result_t *outer_r = NULL;
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run_all(pool, &outer, 1, &outer_r, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EINVAL);
    assert_failed(outer_r, EINVAL);
    ck_assert_int_eq(atomic_load(&f.destroyed), 0);
    ck_assert_int_eq(atomic_load(&f.ran), 0);
    nursery_errors_free(errs);
    nursery_result_release(outer_r);
    destroy_pool(pool);
}
END_TEST

/* ---- bad input ----------------------------------------------------------- */

typedef int (*run_fn)(nursery_pool_t *, const nursery_branch_t *, size_t, nursery_result_t **,
                      nursery_errors_t **);

static void expect_einval(run_fn run, const nursery_branch_t *b, size_t n, bool with_results,
                          struct leaf *l, size_t nl)
{
    nursery_result_t *r[2] = {INT2PTR(1), INT2PTR(1)};
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(run(NULL, b, n, with_results ? r : NULL, &errs), EINVAL);
    ck_assert_ptr_null(errs);
    if (with_results && n > 0 && b) {
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(r[i] == NULL, "results[%zu] not NULL after EINVAL", i);
    }
    for (size_t i = 0; i < nl; i++) {
        ck_assert_int_eq(atomic_load(&l[i].ran), 0);
        ck_assert_msg(atomic_load(&l[i].destroyed) == 0, "arg_destroy ran for EINVAL");
    }
}

START_TEST(bad_input_is_einval_and_runs_no_arg_destroy)
{
    run_fn runs[2] = {nursery_run_any, nursery_run_all};
    for (int k = 0; k < 2; k++) {
        struct leaf l[2];
        leaf_init(&l[0], 1);
        leaf_init(&l[1], 2);
        nursery_branch_t ok[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
        expect_einval(runs[k], NULL, 2, true, l, 2);
        expect_einval(runs[k], ok, 2, false, l, 2);
        expect_einval(runs[k], ok, 0, true, l, 2);

        nursery_branch_t null_fn[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
        null_fn[1].fn = NULL;
        expect_einval(runs[k], null_fn, 2, true, l, 2);

        const unsigned bad_flags[] = {1u << 3, 1u << 29, 1u << 31};
        for (size_t f = 0; f < sizeof(bad_flags) / sizeof(bad_flags[0]); f++) {
            nursery_task_options_t bad = {.arg_destroy = leaf_destroy, .flags = bad_flags[f]};
            nursery_branch_t flagged[2] = {leaf_branch(&l[0]), {.fn = leaf_fn, .arg = &l[1], .opts = &bad}};
            expect_einval(runs[k], flagged, 2, true, l, 2);
        }
        /* The same branches, fixed, run. */
        nursery_result_t *r[2];
        ck_assert_int_eq(runs[k](NULL, ok, 2, r, NULL), 0);
        assert_destroyed_once(l, 2);
        results_release(r, 2);
    }
}
END_TEST

/* ---- the caller cancelled ------------------------------------------------ */

static void assert_all_cancelled_unrun(nursery_result_t **r, struct leaf *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(r[i]);
        assert_cancelled(r[i]);
        ck_assert_int_eq(atomic_load(&l[i].ran), 0);
    }
    assert_destroyed_once(l, n);
}

START_TEST(in_a_cancelled_nursery_body_is_ecanceled)
{
    nursery_pool_t *pool = test_pool(2);
    run_fn runs[2] = {nursery_run_any, nursery_run_all};
    for (int k = 0; k < 2; k++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        ck_assert_int_eq(nursery_cancel(n), 0);
        struct leaf l[2];
        leaf_init(&l[0], 1);
        leaf_init(&l[1], 2);
        nursery_branch_t b[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
        nursery_result_t *r[2] = {NULL, NULL};
        nursery_errors_t *errs = NULL;
        ck_assert_int_eq(runs[k](pool, b, 2, r, &errs), ECANCELED);
        ck_assert_uint_eq(nursery_errors_count(errs), 0);
        ck_assert_uint_eq(nursery_errors_cancelled(errs), 2);
        nursery_errors_free(errs);
        assert_all_cancelled_unrun(r, l, 2);
        results_release(r, 2);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    }
    destroy_pool(pool);
}
END_TEST

START_TEST(in_a_cancelled_scope_is_ecanceled)
{
    nursery_pool_t *pool = test_pool(2);
    run_fn runs[2] = {nursery_run_any, nursery_run_all};
    for (int k = 0; k < 2; k++) {
        nursery_scope_t *s = NULL;
        ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
        ck_assert_int_eq(nursery_scope_cancel(s), 0);
        struct leaf l[3];
        for (int i = 0; i < 3; i++)
            leaf_init(&l[i], i);
        nursery_branch_t b[3] = {leaf_branch(&l[0]), leaf_branch(&l[1]), leaf_branch(&l[2])};
        nursery_result_t *r[3] = {NULL, NULL, NULL};
        ck_assert_int_eq(runs[k](pool, b, 3, r, NULL), ECANCELED);
        assert_all_cancelled_unrun(r, l, 3);
        results_release(r, 3);
        unsigned outcome = 0;
        ck_assert_int_eq(nursery_scope_close(s, &outcome), 0);
        ck_assert(outcome & NURSERY_SCOPE_CANCEL_CALLED);
    }
    destroy_pool(pool);
}
END_TEST

/* The caller's scope is cancelled by another thread while the branches
 * run: they are cancelled and the call returns ECANCELED; when a branch
 * fails on its way out, NURSERY_EFAILED wins. */
START_TEST(caller_cancelled_while_branches_run)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *never = gate_new();
    for (int failing = 0; failing < 2; failing++) {
        for (int any = 0; any < 2; any++) {
            latch_t running;
            latch_init(&running, 2);
            struct leaf l[2];
            for (int i = 0; i < 2; i++) {
                leaf_init(&l[i], i);
                l[i].running = &running;
                l[i].gate = never;
            }
            if (failing) {
                l[1].fail = ENOSPC;
                l[1].fail_on_cancel = true;
            }
            nursery_scope_t *s = NULL;
            ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
            struct canceller c = {.running = &running, .scope = nursery_scope_retain(s)};
            pthread_t t;
            ck_assert_int_eq(pthread_create(&t, NULL, cancel_when_running, &c), 0);
            nursery_branch_t b[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
            nursery_result_t *r[2] = {NULL, NULL};
            nursery_errors_t *errs = NULL;
            int rc = any ? nursery_run_any(pool, b, 2, r, &errs) : nursery_run_all(pool, b, 2, r, &errs);
            ck_assert_int_eq(pthread_join(t, NULL), 0);
            if (failing) {
                ck_assert_int_eq(rc, NURSERY_EFAILED);
                ck_assert_uint_eq(nursery_errors_count(errs), 1);
                ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), ENOSPC);
                ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
                assert_cancelled(r[0]);
                assert_failed(r[1], ENOSPC);
            } else {
                ck_assert_int_eq(rc, ECANCELED);
                ck_assert_uint_eq(nursery_errors_count(errs), 0);
                ck_assert_uint_eq(nursery_errors_cancelled(errs), 2);
                assert_cancelled(r[0]);
                assert_cancelled(r[1]);
            }
            ck_assert_int_eq(atomic_load(&l[0].wait_rc), ECANCELED);
            ck_assert_int_eq(atomic_load(&l[1].wait_rc), ECANCELED);
            nursery_errors_free(errs);
            assert_destroyed_once(l, 2);
            results_release(r, 2);
            ck_assert_int_eq(nursery_scope_close(s, NULL), 0);
            latch_destroy(&running);
        }
    }
    nursery_result_release(never);
    destroy_pool(pool);
}
END_TEST

/* ---- a pool of the parent, in a fork child ------------------------------- */

/* In the child: the parent's pool stays reachable from here, so that a
 * leak checker in the child (valgrind follows fork) does not report it as
 * lost (it cannot be freed there). */
static nursery_pool_t *volatile fork_child_keeps; /* volatile: a store only, kept */

START_TEST(forked_pool_is_eforked_and_destroys_every_arg)
{
    nursery_pool_t *pool = test_pool(2);
    /* The pool works before the fork. */
    struct leaf l[2];
    leaf_init(&l[0], 1);
    leaf_init(&l[1], 2);
    nursery_branch_t b[2] = {leaf_branch(&l[0]), leaf_branch(&l[1])};
    nursery_result_t *r[2] = {NULL, NULL};
    ck_assert_int_eq(nursery_run_all(pool, b, 2, r, NULL), 0);
    results_release(r, 2);

    pid_t pid = fork_child(30);
    if (pid == 0) {
        fork_child_keeps = pool;
        run_fn runs[2] = {nursery_run_any, nursery_run_all};
        for (int k = 0; k < 2; k++) {
            leaf_init(&l[0], 1);
            leaf_init(&l[1], 2);
            nursery_result_t *cr[2] = {INT2PTR(1), INT2PTR(1)};
            nursery_errors_t *errs = INT2PTR(1);
            if (runs[k](pool, b, 2, cr, &errs) != NURSERY_EFORKED)
                _exit(1 + 10 * k);
            if (errs != NULL)
                _exit(2 + 10 * k);
            if (cr[0] != NULL || cr[1] != NULL)
                _exit(3 + 10 * k);
            for (int i = 0; i < 2; i++)
                if (atomic_load(&l[i].destroyed) != 1 || atomic_load(&l[i].ran) != 0)
                    _exit(4 + 10 * k);
        }
        _exit(0);
    }
    assert_child_passed(pid);
    destroy_pool(pool);
}
END_TEST

static Suite *combinator_suite(void)
{
    Suite *s = suite_create("combinator");
    TCase *tc = tcase_with_timeout(s, "run_any", 60);
    tcase_add_test(tc, run_any_first_finisher_cancels_the_rest);
    tcase_add_test(tc, run_any_more_than_one_may_finish);
    tcase_add_test(tc, run_any_suppressed_failure_still_ends_first);

    tc = tcase_with_timeout(s, "run_all", 60);
    tcase_add_test(tc, run_all_waits_for_every_branch);
    tcase_add_test(tc, run_all_suppressed_failure_cancels_nothing);

    tc = tcase_with_timeout(s, "errors", 60);
    tcase_add_test(tc, first_error_cancels_the_rest_and_comes_back_in_a_group);
    tcase_add_test(tc, every_real_error_is_in_the_group);

    tc = tcase_with_timeout(s, "nesting", 60);
    tcase_add_test(tc, wait_all_of_f1_and_wait_any_of_f2_f3);
    tcase_add_test(tc, wait_any_of_f1_and_wait_all_of_f2_f3);
    tcase_add_test(tc, nested_failure_carries_the_inner_group);
    tcase_add_test(tc, run_combinator_runs_on_the_calling_tasks_pool);
    tcase_add_test(tc, run_combinator_with_bad_branches_is_einval);

    tc = tcase_with_timeout(s, "input", 60);
    tcase_add_test(tc, bad_input_is_einval_and_runs_no_arg_destroy);
    tcase_add_test(tc, forked_pool_is_eforked_and_destroys_every_arg);

    tc = tcase_with_timeout(s, "cancelled_caller", 60);
    tcase_add_test(tc, in_a_cancelled_nursery_body_is_ecanceled);
    tcase_add_test(tc, in_a_cancelled_scope_is_ecanceled);
    tcase_add_test(tc, caller_cancelled_while_branches_run);
    return s;
}

int main(void)
{
    return run_suite(combinator_suite());
}
