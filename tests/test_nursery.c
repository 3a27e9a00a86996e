/* SPDX-License-Identifier: MIT */
/*
 * test_nursery.c - open/join, start_soon, nesting, first-error cancellation,
 * error groups, task flags, and Trio's start/started; daemon and main tasks
 * (asyncgui's _cm forms) and the concurrency cap (nursery_set_limit,
 * nursery_start_limited, nursery_try_start).
 */
#include "helpers.h"

#include <string.h>

static int return_zero(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return 0;
}

/* ---- open, join, start_soon --------------------------------------------- */

static int empty_body(nursery_t *n, void *arg)
{
    ck_assert_ptr_nonnull(n);
    *(int *)arg = 1;
    return 0;
}

START_TEST(open_and_join_empty_nursery)
{
    nursery_pool_t *pool = test_pool(1);
    nursery_t *n = NULL;
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_ptr_nonnull(n);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);

    /* An empty nursery joins even with a deadline that has passed. */
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(-1), NULL), 0);

    int ran = 0;
    errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run(pool, empty_body, &ran, &errs), 0);
    ck_assert_int_eq(ran, 1);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

#define MANY 1000

static atomic_int many_runs[MANY];
static atomic_int many_destroyed[MANY];

static int mark_run(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&many_runs[PTR2INT(arg)], 1);
    return 0;
}

static void mark_destroyed(void *arg)
{
    atomic_fetch_add(&many_destroyed[PTR2INT(arg)], 1);
}

START_TEST(start_soon_runs_every_task_exactly_once)
{
    nursery_pool_t *pool = test_pool(4);
    nursery_task_options_t opts = {.arg_destroy = mark_destroyed};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(nursery_start_soon(n, mark_run, INT2PTR(i), &opts), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    for (int i = 0; i < MANY; i++) {
        ck_assert_int_eq(atomic_load(&many_runs[i]), 1);
        ck_assert_int_eq(atomic_load(&many_destroyed[i]), 1);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* The starter marks each task right after start_soon returns; a task that
 * runs on the starter's thread without the mark ran inside start_soon. */
struct inline_probe {
    pthread_t starter;
    atomic_bool start_returned;
};

static int check_not_inline(void *arg, void **value)
{
    (void)value;
    struct inline_probe *p = arg;
    task_expect(!pthread_equal(pthread_self(), p->starter) || atomic_load(&p->start_returned));
    return 0;
}

START_TEST(start_soon_never_runs_task_in_caller)
{
    for (size_t threads = 1; threads <= 4; threads += 3) {
        nursery_pool_t *pool = test_pool(threads);
        static struct inline_probe probes[200];
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        for (int i = 0; i < 200; i++) {
            probes[i].starter = pthread_self();
            atomic_store(&probes[i].start_returned, false);
            ck_assert_int_eq(nursery_start_soon(n, check_not_inline, &probes[i], NULL), 0);
            atomic_store(&probes[i].start_returned, true);
        }

        /* A task that needs what its starter does next: if start_soon ran
         * it, the gate would never open. */
        struct gated g;
        gated_init(&g, 1);
        ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
        gate_open(g.gate);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
        ck_assert_int_eq(atomic_load(&g.rc), 0);
        gated_fini(&g);
        ck_assert_int_eq(nursery_pool_destroy(pool), 0);
    }
    ck_assert_tasks_ok();
}
END_TEST

struct body_arg {
    atomic_int count;
    nursery_t *seen;
};

static int starting_body(nursery_t *n, void *arg)
{
    struct body_arg *b = arg;
    b->seen = n;
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, &b->count, NULL), 0);
    return 0;
}

START_TEST(run_calls_body_then_joins)
{
    nursery_pool_t *pool = test_pool(2);
    struct body_arg b = {.count = 0};
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_run(pool, starting_body, &b, &errs), 0);
    ck_assert_ptr_nonnull(b.seen);
    ck_assert_int_eq(atomic_load(&b.count), 10); /* joined: all done */
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- nesting ------------------------------------------------------------ */

struct spawner {
    nursery_pool_t *pool;
    nursery_t *outer;
    atomic_int count;
};

/* Runs in an inner nursery, starts a task into the outer one. */
static int inner_task(void *arg, void **value)
{
    (void)value;
    struct spawner *s = arg;
    atomic_fetch_add(&s->count, 1);
    task_expect_eq(nursery_start_soon(s->outer, count_task, &s->count, NULL), 0);
    return 0;
}

static int spawning_task(void *arg, void **value)
{
    (void)value;
    struct spawner *s = arg;
    atomic_fetch_add(&s->count, 1);
    /* Into its own nursery. */
    task_expect_eq(nursery_start_soon(s->outer, count_task, &s->count, NULL), 0);
    /* Into a nursery of its own, whose task starts one into the outer. */
    nursery_t *inner = NULL;
    task_expect_eq(nursery_open(&inner, s->pool), 0);
    task_expect_eq(nursery_start_soon(inner, inner_task, s, NULL), 0);
    task_expect_eq(nursery_join(inner, NURSERY_FOREVER, NULL), 0);
    return 0;
}

START_TEST(tasks_start_tasks_in_own_and_outer_nurseries)
{
    struct spawner s = {.pool = test_pool(2), .count = 0};
    ck_assert_int_eq(nursery_open(&s.outer, s.pool), 0);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(nursery_start_soon(s.outer, spawning_task, &s, NULL), 0);
    ck_assert_int_eq(nursery_join(s.outer, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    /* each spawning task: itself, one in its nursery, the inner task and
     * the one that started into the outer nursery */
    ck_assert_int_eq(atomic_load(&s.count), 40);
    ck_assert_int_eq(nursery_pool_destroy(s.pool), 0);
}
END_TEST

/* The body counts its starts in batches.  Here the body is a task on a
 * pool of one thread, so its join runs the children itself, on the body's
 * thread, and they start more tasks into the same nursery: those must be
 * counted one by one, or join would wait for starts that never come.  Then
 * a join that times out gives its batch back, and the body starts again. */
struct refill {
    nursery_pool_t *pool;
    nursery_t *n;
    atomic_int count;
    int depth;
};

static int refill_task(void *arg, void **value)
{
    (void)value;
    struct refill *r = arg;
    atomic_fetch_add(&r->count, 1);
    if (atomic_load(&r->count) < r->depth)
        task_expect_eq(nursery_start_soon(r->n, refill_task, r, NULL), 0);
    return 0;
}

static int refilling_body(void *arg, void **value)
{
    (void)value;
    struct refill *r = arg;
    int rc = nursery_open(&r->n, r->pool);
    if (rc)
        return rc;
    task_expect_eq(nursery_start_soon(r->n, refill_task, r, NULL), 0);
    rc = nursery_join(r->n, NURSERY_FOREVER, NULL);
    return rc;
}

START_TEST(starts_from_tasks_the_joiner_runs_are_counted)
{
    nursery_pool_t *pool = test_pool(1);
    struct refill r = {.pool = pool, .count = 0, .depth = 200};
    nursery_t *outer = NULL;
    ck_assert_int_eq(nursery_open(&outer, pool), 0);
    nursery_result_t *res = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(outer, refilling_body, &r, NULL, &res), 0);
    ck_assert_int_eq(nursery_join(outer, nursery_after_ms(TEST_HANG_MS), NULL), 0);
    ck_assert_int_eq(atomic_load(&r.count), 200);
    ck_assert_ptr_null(error_of(res));
    nursery_result_release(res);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

struct gated_count {
    nursery_result_t *gate;
    atomic_int *count;
};

static int wait_gate_then_count(void *arg, void **value)
{
    (void)value;
    struct gated_count *g = arg;
    int rc = gate_wait(g->gate);
    atomic_fetch_add(g->count, 1);
    return rc;
}

START_TEST(join_that_times_out_gives_back_counted_starts)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    atomic_int count = 0;
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct gated_count g = {gate, &count};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
    ck_assert_int_eq(nursery_start_soon(n, wait_gate_then_count, &g, NULL), 0);
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(20), NULL), ETIMEDOUT);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
    gate_open(gate);
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(TEST_HANG_MS), NULL), 0);
    ck_assert_int_eq(atomic_load(&count), 104);
    nursery_result_release(gate);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

#define DEPTH 8

struct chain {
    nursery_pool_t *pool;
    atomic_int deepest;
    int join_rc[DEPTH];
};

struct chain_link {
    struct chain *chain;
    int level;
};

static int chain_task(void *arg, void **value)
{
    (void)value;
    struct chain_link *l = arg;
    struct chain *c = l->chain;
    if (l->level == DEPTH) {
        atomic_fetch_add(&c->deepest, 1);
        return 0;
    }
    struct chain_link next = {.chain = c, .level = l->level + 1};
    nursery_t *n = NULL;
    int rc = nursery_open(&n, c->pool);
    if (rc)
        return rc;
    task_expect_eq(nursery_start_soon(n, chain_task, &next, NULL), 0);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    c->join_rc[l->level] = rc;
    return rc;
}

START_TEST(nurseries_nest_eight_levels_deep)
{
    struct chain c = {.pool = test_pool(2), .deepest = 0};
    for (int i = 0; i < DEPTH; i++)
        c.join_rc[i] = -1;
    struct chain_link root = {.chain = &c, .level = 0};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, c.pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, chain_task, &root, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(atomic_load(&c.deepest), 1);
    for (int i = 0; i < DEPTH; i++)
        ck_assert_int_eq(c.join_rc[i], 0);
    ck_assert_int_eq(nursery_pool_destroy(c.pool), 0);
}
END_TEST

struct fan {
    nursery_pool_t *pool;
    atomic_int tasks;
    atomic_int args_freed;
};

struct fan_arg {
    struct fan *fan;
    int depth;
};

static void fan_arg_free(void *arg)
{
    struct fan_arg *a = arg;
    atomic_fetch_add(&a->fan->args_freed, 1);
    free(a);
}

static int fan_out(void *arg, void **value)
{
    (void)value;
    struct fan_arg *a = arg;
    struct fan *f = a->fan;
    atomic_fetch_add(&f->tasks, 1);
    if (a->depth == 0)
        return 0;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, f->pool);
    if (rc)
        return rc;
    nursery_task_options_t opts = {.arg_destroy = fan_arg_free};
    for (int i = 0; i < 2; i++) {
        struct fan_arg *child = malloc(sizeof(*child));
        task_expect(child != NULL);
        *child = (struct fan_arg){.fan = f, .depth = a->depth - 1};
        task_expect_eq(nursery_start_soon(n, fan_out, child, &opts), 0);
    }
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    task_expect_eq(rc, 0);
    return rc;
}

START_TEST(recursive_fan_out_completes_on_one_thread)
{
    /* One thread and no compensation: only joins running their own
     * nursery's queued tasks can make progress. */
    nursery_pool_options_t o = {.threads = 1, .max_threads = 1};
    struct fan f = {.tasks = 0, .args_freed = 0};
    ck_assert_int_eq(nursery_pool_create(&f.pool, &o), 0);
    struct fan_arg *root = malloc(sizeof(*root));
    *root = (struct fan_arg){.fan = &f, .depth = DEPTH};
    nursery_task_options_t opts = {.arg_destroy = fan_arg_free};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, f.pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, fan_out, root, &opts), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    const int expected = (1 << (DEPTH + 1)) - 1; /* 511 */
    ck_assert_int_eq(atomic_load(&f.tasks), expected);
    ck_assert_int_eq(atomic_load(&f.args_freed), expected);

    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(f.pool, &st), 0);
    ck_assert_uint_eq(st.threads, 1);
    ck_assert_int_eq(nursery_pool_destroy(f.pool), 0);
}
END_TEST

/* Opening and joining nested nurseries costs the same at every depth
 * (issue 6, item 4): 100 000 levels in one thread end well inside the
 * case's timeout.  A join that walks up to the root is quadratic: over a
 * minute for these. */
#define NESTED_LEVELS 100000

START_TEST(joining_100000_nested_nurseries_is_linear)
{
    nursery_pool_t *pool = test_pool(1);
    nursery_t **n = malloc(NESTED_LEVELS * sizeof(*n));
    ck_assert_ptr_nonnull(n);
    for (int i = 0; i < NESTED_LEVELS; i++)
        ck_assert_int_eq(nursery_open(&n[i], pool), 0);
    for (int i = NESTED_LEVELS - 1; i >= 0; i--)
        ck_assert_int_eq(nursery_join(n[i], NURSERY_FOREVER, NULL), 0);
    free(n);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* A worker's join checks its deadline between the tasks it runs while it
 * helps (issue 6, item 8).  On a pool of one thread that cannot grow, a
 * task starts 100 tasks of 20 ms into a nursery and joins it with a 50 ms
 * deadline: the join gives up long before it has run them all, and the
 * task then cancels the nursery and joins it.  Today's join runs all 100
 * back to back and returns 0 after two seconds. */
#define SLOW_TASKS 100

struct slow_join {
    nursery_pool_t *pool;
    atomic_int ran;
    atomic_int destroyed;
    int join_rc;     /* the join with a deadline */
    int ran_by_then; /* tasks that had begun when it returned */
    int cancel_rc;
    int final_rc; /* the join after the cancel */
};

static int slow_task(void *arg, void **value)
{
    (void)value;
    struct slow_join *s = arg;
    atomic_fetch_add(&s->ran, 1);
    return nursery_sleep(nursery_after_ms(20));
}

static void slow_task_destroyed(void *arg)
{
    atomic_fetch_add(&((struct slow_join *)arg)->destroyed, 1);
}

static int join_slow_tasks_with_deadline(void *arg, void **value)
{
    (void)value;
    struct slow_join *s = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, s->pool);
    if (rc)
        return rc;
    nursery_task_options_t opts = {.arg_destroy = slow_task_destroyed};
    for (int i = 0; i < SLOW_TASKS; i++)
        task_expect_eq(nursery_start_soon(n, slow_task, s, &opts), 0);
    s->join_rc = nursery_join(n, nursery_after_ms(50), NULL);
    s->ran_by_then = atomic_load(&s->ran);
    if (s->join_rc == ETIMEDOUT) {
        s->cancel_rc = nursery_cancel(n);
        s->final_rc = nursery_join(n, NURSERY_FOREVER, NULL);
    }
    return 0;
}

START_TEST(worker_join_checks_deadline_between_tasks_it_runs)
{
    nursery_pool_t *pool = capped_pool(1);
    struct slow_join s = {.pool = pool, .join_rc = -1, .cancel_rc = -1, .final_rc = -1};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, join_slow_tasks_with_deadline, &s, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_msg(s.join_rc == ETIMEDOUT && s.ran_by_then < SLOW_TASKS,
                  "join with a 50 ms deadline returned %d after %d of %d tasks of 20 ms had run",
                  s.join_rc, s.ran_by_then, SLOW_TASKS);
    ck_assert_int_eq(s.cancel_rc, 0);
    ck_assert_int_eq(s.final_rc, 0);
    /* The ones still queued at the cancel never ran, and every argument
     * was destroyed once. */
    ck_assert_int_lt(atomic_load(&s.ran), SLOW_TASKS);
    ck_assert_int_eq(atomic_load(&s.destroyed), SLOW_TASKS);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- failures and cancellation ------------------------------------------ */

struct first_error {
    latch_t running;
    nursery_result_t *gate;
    atomic_int queued_ran;
    atomic_int queued_destroyed;
    atomic_int first_destroyed;
};

static int fail_after_gate(void *arg, void **value)
{
    (void)value;
    struct first_error *c = arg;
    latch_count_down(&c->running);
    task_expect_eq(gate_wait(c->gate), 0);
    return nursery_fail(EIO, "boom %d", 1);
}

static void first_destroyed(void *arg)
{
    atomic_fetch_add(&((struct first_error *)arg)->first_destroyed, 1);
}

static int queued_task(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct first_error *)arg)->queued_ran, 1);
    return 0;
}

static void queued_destroyed(void *arg)
{
    atomic_fetch_add(&((struct first_error *)arg)->queued_destroyed, 1);
}

START_TEST(first_error_cancels_queued_tasks)
{
    /* One worker, no compensation: while the first task holds it, the
     * others stay queued. */
    nursery_pool_options_t o = {.threads = 1, .max_threads = 1};
    nursery_pool_t *pool = NULL;
    ck_assert_int_eq(nursery_pool_create(&pool, &o), 0);
    struct first_error c = {.gate = gate_new()};
    latch_init(&c.running, 1);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_task_options_t first = {.name = "first", .arg_destroy = first_destroyed};
    ck_assert_int_eq(nursery_start_soon(n, fail_after_gate, &c, &first), 0);
    ck_assert(latch_wait(&c.running));
    nursery_task_options_t queued = {.name = "queued", .arg_destroy = queued_destroyed};
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(nursery_start_soon(n, queued_task, &c, &queued), 0);

    gate_open(c.gate);
    /* The body sees the cancellation the failure causes. */
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(TEST_HANG_MS)), ECANCELED);
    ck_assert(nursery_cancelled());
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);

    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    nursery_error_t *err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), EIO);
    ck_assert_str_eq(nursery_error_message(err), "boom 1");
    ck_assert_ptr_nonnull(nursery_error_task_name(err));
    ck_assert_str_eq(nursery_error_task_name(err), "first");
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 10);
    nursery_errors_free(errs);

    ck_assert_int_eq(atomic_load(&c.queued_ran), 0);
    ck_assert_int_eq(atomic_load(&c.queued_destroyed), 10);
    ck_assert_int_eq(atomic_load(&c.first_destroyed), 1);
    nursery_result_release(c.gate);
    latch_destroy(&c.running);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* Three failures in a forced order: the first cancels the nursery; the
 * second and third fail (with real errors) after seeing cancellation, the
 * third only once the second has ended (its arg_destroy has run). */
struct ordered {
    latch_t running;
    latch_t second_ended;
    nursery_result_t *first_gate;
    nursery_result_t *never;
};

static int ordered_first(void *arg, void **value)
{
    (void)value;
    struct ordered *o = arg;
    latch_count_down(&o->running);
    task_expect_eq(gate_wait(o->first_gate), 0);
    return nursery_fail(EIO, "first");
}

static int ordered_second(void *arg, void **value)
{
    (void)value;
    struct ordered *o = arg;
    latch_count_down(&o->running);
    task_expect_eq(gate_wait(o->never), ECANCELED);
    return nursery_fail(EPIPE, "second");
}

static void second_ended(void *arg)
{
    latch_count_down(&((struct ordered *)arg)->second_ended);
}

static int ordered_third(void *arg, void **value)
{
    (void)value;
    struct ordered *o = arg;
    latch_count_down(&o->running);
    task_expect_eq(gate_wait(o->never), ECANCELED);
    task_expect(latch_wait(&o->second_ended));
    return nursery_fail(ENOSPC, "third");
}

START_TEST(join_reports_primary_error_first_then_arrival_order)
{
    nursery_pool_t *pool = test_pool(3);
    struct ordered o = {.first_gate = gate_new(), .never = gate_new()};
    latch_init(&o.running, 3);
    latch_init(&o.second_ended, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    /* Started in an order unrelated to the order they fail in. */
    nursery_task_options_t third = {.name = "t3"};
    nursery_task_options_t second = {.name = "t2", .arg_destroy = second_ended};
    nursery_task_options_t first = {.name = "t1"};
    ck_assert_int_eq(nursery_start_soon(n, ordered_third, &o, &third), 0);
    ck_assert_int_eq(nursery_start_soon(n, ordered_second, &o, &second), 0);
    ck_assert_int_eq(nursery_start_soon(n, ordered_first, &o, &first), 0);
    ck_assert(latch_wait(&o.running));
    gate_open(o.first_gate);

    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_uint_eq(nursery_errors_count(errs), 3);
    const int codes[] = {EIO, EPIPE, ENOSPC};
    const char *names[] = {"t1", "t2", "t3"};
    const char *messages[] = {"first", "second", "third"};
    for (size_t i = 0; i < 3; i++) {
        nursery_error_t *err = nursery_errors_get(errs, i);
        ck_assert_int_eq(nursery_error_code(err), codes[i]);
        ck_assert_str_eq(nursery_error_message(err), messages[i]);
        ck_assert_str_eq(nursery_error_task_name(err), names[i]);
    }
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 0);
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    nursery_errors_free(errs);
    nursery_result_release(o.first_gate);
    nursery_result_release(o.never);
    latch_destroy(&o.running);
    latch_destroy(&o.second_ended);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

#define CAP_TASKS (NURSERY_ERRORS_KEPT + 50)

struct cap {
    latch_t running;
    nursery_result_t *gate;
};

static int fail_when_released(void *arg, void **value)
{
    (void)value;
    struct cap *c = arg;
    latch_count_down(&c->running);
    int rc = gate_wait(c->gate); /* 0, or ECANCELED once a sibling failed */
    task_expect(rc == 0 || rc == ECANCELED);
    return nursery_fail(EIO, "failure");
}

START_TEST(error_group_is_capped)
{
    /* Every task blocks until all are running: the pool adds threads. */
    nursery_pool_options_t o = {.threads = 2, .max_threads = CAP_TASKS + 8};
    nursery_pool_t *pool = NULL;
    ck_assert_int_eq(nursery_pool_create(&pool, &o), 0);
    struct cap c = {.gate = gate_new()};
    latch_init(&c.running, CAP_TASKS);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < CAP_TASKS; i++)
        ck_assert_int_eq(nursery_start_soon(n, fail_when_released, &c, NULL), 0);
    ck_assert(latch_wait(&c.running));
    gate_open(c.gate);

    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    size_t count = nursery_errors_count(errs);
    size_t dropped = nursery_errors_dropped(errs);
    size_t cancelled = nursery_errors_cancelled(errs);
    ck_assert_uint_eq(count, NURSERY_ERRORS_KEPT);
    ck_assert_uint_eq(count + dropped + cancelled, CAP_TASKS);
    /* All were running when released: each one failed for real. */
    ck_assert_uint_eq(cancelled, 0);
    ck_assert_uint_eq(dropped, 50);
    for (size_t i = 0; i < count; i++)
        ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, i)), EIO);
    ck_assert_ptr_null(nursery_errors_get(errs, count));
    nursery_errors_free(errs);
    nursery_result_release(c.gate);
    latch_destroy(&c.running);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int fail_eio(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "suppressed");
}

START_TEST(suppressed_error_does_not_cancel_nursery)
{
    nursery_pool_t *pool = test_pool(2);
    struct gated g;
    gated_init(&g, 1);
    atomic_int count = 0;
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    /* A sibling that is running when the error happens. */
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));

    nursery_task_options_t quiet = {.name = "quiet", .flags = NURSERY_TASK_SUPPRESS_ERROR};
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, fail_eio, NULL, &quiet, &r), 0);
    ck_assert_int_eq(nursery_result_wait(r, nursery_after_ms(TEST_HANG_MS)), 0);
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_result_error(r, &err), 0);
    ck_assert_int_eq(nursery_error_code(err), EIO);
    ck_assert_str_eq(nursery_error_message(err), "suppressed");

    ck_assert(!nursery_cancelled());
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
    gate_open(g.gate);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(atomic_load(&g.rc), 0);
    ck_assert_int_eq(atomic_load(&count), 5);
    nursery_result_release(r);
    gated_fini(&g);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int fail_now(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "task failed");
}

struct watching_body {
    int sleep_rc;
    bool cancelled;
};

static int watching_body(nursery_t *n, void *arg)
{
    struct watching_body *w = arg;
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_start_soon(n, fail_now, NULL, NULL), 0);
    w->sleep_rc = nursery_sleep(nursery_after_ms(TEST_HANG_MS));
    w->cancelled = nursery_cancelled();
    return 0;
}

START_TEST(body_sees_cancellation_after_task_fails)
{
    nursery_pool_t *pool = test_pool(1);
    struct watching_body w = {.sleep_rc = -1};
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run(pool, watching_body, &w, &errs), NURSERY_EFAILED);
    ck_assert_int_eq(w.sleep_rc, ECANCELED);
    ck_assert(w.cancelled);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    nursery_errors_free(errs);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int failing_body(nursery_t *n, void *arg)
{
    struct gated *g = arg;
    ck_assert_int_eq(nursery_start_soon(n, gated_task, g, NULL), 0);
    ck_assert(latch_wait(&g->running));
    return EPROTO; /* a plain code, no nursery_fail() */
}

START_TEST(body_error_counts_as_failure)
{
    nursery_pool_t *pool = test_pool(2);
    struct gated g;
    gated_init(&g, 1);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run(pool, failing_body, &g, &errs), NURSERY_EFAILED);
    /* The body's failure cancelled the running task. */
    ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EPROTO);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    gated_fini(&g);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* A task opens an inner nursery whose task waits on a gate; the outer
 * nursery is cancelled. */
struct inner_wait {
    nursery_pool_t *pool;
    struct gated g;
    int inner_join_rc;
};

static int open_inner(void *arg, void **value)
{
    (void)value;
    struct inner_wait *w = arg;
    nursery_t *inner = NULL;
    int rc = nursery_open(&inner, w->pool);
    if (rc)
        return rc;
    task_expect_eq(nursery_start_soon(inner, gated_task, &w->g, NULL), 0);
    w->inner_join_rc = nursery_join(inner, NURSERY_FOREVER, NULL);
    return w->inner_join_rc;
}

START_TEST(outer_cancel_reaches_inner_nursery_tasks)
{
    struct inner_wait w = {.pool = test_pool(2), .inner_join_rc = -1};
    gated_init(&w.g, 1);
    nursery_t *outer = NULL;
    ck_assert_int_eq(nursery_open(&outer, w.pool), 0);
    ck_assert_int_eq(nursery_start_soon(outer, open_inner, &w, NULL), 0);
    ck_assert(latch_wait(&w.g.running));
    ck_assert_int_eq(nursery_cancel(outer), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(outer, NURSERY_FOREVER, &errs), 0);
    ck_assert_tasks_ok();
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&w.g.rc), ECANCELED);
    ck_assert_int_eq(w.inner_join_rc, ECANCELED);
    gated_fini(&w.g);
    ck_assert_int_eq(nursery_pool_destroy(w.pool), 0);
}
END_TEST

/* A body that calls nursery_fail() between open and join fails the
 * nursery at once, as a task would (issue 6, item 16): it is cancelled
 * (body and tasks), and join reports the body's error. */
START_TEST(body_fail_between_open_and_join_fails_the_nursery)
{
    nursery_pool_t *pool = test_pool(2);
    struct gated g;
    gated_init(&g, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));
    ck_assert(!nursery_cancelled());
    ck_assert_int_eq(nursery_fail(EIO, "body %d", 7), EIO);
    ck_assert_msg(nursery_cancelled(), "the body failed but its nursery is not cancelled");
    ck_assert_int_eq(nursery_checkpoint(), ECANCELED);

    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    nursery_error_t *err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), EIO);
    ck_assert_str_eq(nursery_error_message(err), "body 7");
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
    gated_fini(&g);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* A task that fails once it sees the cancellation. */
static int fail_when_cancelled(void *arg, void **value)
{
    (void)value;
    struct gated *g = arg;
    latch_count_down(&g->running);
    int rc = gate_wait(g->gate);
    atomic_store(&g->rc, rc);
    return nursery_fail(EPIPE, "after the body");
}

START_TEST(body_fail_with_is_the_primary_error)
{
    nursery_pool_t *pool = test_pool(2);
    struct gated g;
    gated_init(&g, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_task_options_t later = {.name = "later"};
    ck_assert_int_eq(nursery_start_soon(n, fail_when_cancelled, &g, &later), 0);
    ck_assert(latch_wait(&g.running));
    nursery_error_t *e = NULL;
    ck_assert_int_eq(nursery_error_create(&e, EPROTO, "built %s", "by the body"), 0);
    ck_assert_int_eq(nursery_fail_with(e), EPROTO);
    ck_assert_msg(nursery_cancelled(), "the body failed but its nursery is not cancelled");

    /* The body's error first (it cancelled the nursery), then the task's. */
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 2);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EPROTO);
    ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 0)), "built by the body");
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 1)), EPIPE);
    ck_assert_str_eq(nursery_error_task_name(nursery_errors_get(errs, 1)), "later");
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
    gated_fini(&g);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* nursery_run's body: the same failure whether it returns the code of
 * nursery_fail() or calls it and returns 0, and reported once. */
static int body_returns_fail(nursery_t *n, void *arg)
{
    struct gated *g = arg;
    ck_assert_int_eq(nursery_start_soon(n, gated_task, g, NULL), 0);
    ck_assert(latch_wait(&g->running));
    int rc = nursery_fail(EIO, "returned");
    ck_assert_msg(nursery_cancelled(), "the body failed but its nursery is not cancelled");
    return rc;
}

static int body_fails_then_returns_zero(nursery_t *n, void *arg)
{
    struct gated *g = arg;
    ck_assert_int_eq(nursery_start_soon(n, gated_task, g, NULL), 0);
    ck_assert(latch_wait(&g->running));
    ck_assert_int_eq(nursery_fail(EIO, "not returned"), EIO);
    ck_assert_msg(nursery_cancelled(), "the body failed but its nursery is not cancelled");
    return 0;
}

START_TEST(run_body_failure_is_reported_once_whether_returned_or_not)
{
    nursery_pool_t *pool = test_pool(2);
    int (*bodies[2])(nursery_t *, void *) = {body_returns_fail, body_fails_then_returns_zero};
    const char *messages[2] = {"returned", "not returned"};
    for (int i = 0; i < 2; i++) {
        struct gated g;
        gated_init(&g, 1);
        nursery_errors_t *errs = NULL;
        ck_assert_int_eq(nursery_run(pool, bodies[i], &g, &errs), NURSERY_EFAILED);
        ck_assert_uint_eq(nursery_errors_count(errs), 1);
        ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
        ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 0)), messages[i]);
        ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
        nursery_errors_free(errs);
        ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
        gated_fini(&g);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* A join that returns 0 after nursery_cancel() still tells how many tasks
 * ended cancelled (issue 6, item 17): a group with no error, counting the
 * task that was running and the ones that never ran. */
#define QUEUED_BEHIND 5

START_TEST(join_after_cancel_reports_cancelled_tasks_in_a_group)
{
    nursery_pool_t *pool = capped_pool(1);
    struct gated g;
    gated_init(&g, 1);
    atomic_int destroyed = 0;
    nursery_task_options_t opts = {.arg_destroy = count_call};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running)); /* the only worker is busy */
    for (int i = 0; i < QUEUED_BEHIND; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, &destroyed, &opts), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);

    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_msg(errs != NULL, "join after nursery_cancel gave no group");
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_ptr_null(nursery_errors_get(errs, 0));
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), QUEUED_BEHIND + 1);
    nursery_errors_free(errs);
    /* The argument is the counter: a task that ran would have added one. */
    ck_assert_int_eq(atomic_load(&destroyed), QUEUED_BEHIND);
    ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
    gated_fini(&g);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- misuse ------------------------------------------------------------- */

START_TEST(start_soon_on_joined_nursery_is_eclosed)
{
    nursery_pool_t *pool = test_pool(1);
    atomic_int destroyed = 0;
    nursery_task_options_t opts = {.arg_destroy = count_call};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_ptr_eq(nursery_retain(n), n);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* The argument is the counter: a task that ran would add one more. */
    ck_assert_int_eq(nursery_start_soon(n, count_task, &destroyed, &opts), NURSERY_ECLOSED);
    ck_assert_int_eq(atomic_load(&destroyed), 1);
    nursery_result_t *r = INT2PTR(1);
    ck_assert_int_eq(nursery_capture_start_soon(n, count_task, &destroyed, &opts, &r),
                     NURSERY_ECLOSED);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(atomic_load(&destroyed), 2);
    void *v = NULL;
    ck_assert_int_eq(nursery_start(n, count_task, &destroyed, &opts, NURSERY_FOREVER, &v, NULL),
                     NURSERY_ECLOSED);
    ck_assert_int_eq(atomic_load(&destroyed), 3);
    nursery_release(n);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* The same once the nursery's explicit pool has been destroyed: the start
 * calls must not read the pool (issue 6, item 2; AddressSanitizer sees the
 * use after free, the plain build happens to return NURSERY_ECLOSED). */
START_TEST(start_in_joined_nursery_of_destroyed_pool_is_eclosed)
{
    nursery_pool_t *pool = test_pool(1);
    atomic_int destroyed = 0;
    nursery_task_options_t opts = {.arg_destroy = count_call};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_ptr_eq(nursery_retain(n), n);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);

    /* The argument is the counter: a task that ran would add one more. */
    ck_assert_int_eq(nursery_start_soon(n, count_task, &destroyed, &opts), NURSERY_ECLOSED);
    ck_assert_int_eq(atomic_load(&destroyed), 1);
    nursery_result_t *r = INT2PTR(1);
    ck_assert_int_eq(nursery_capture_start_soon(n, count_task, &destroyed, &opts, &r),
                     NURSERY_ECLOSED);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(atomic_load(&destroyed), 2);
    void *v = NULL;
    nursery_result_t *done = INT2PTR(1);
    ck_assert_int_eq(nursery_start(n, count_task, &destroyed, &opts, NURSERY_FOREVER, &v, &done),
                     NURSERY_ECLOSED);
    ck_assert_ptr_null(done);
    ck_assert_int_eq(atomic_load(&destroyed), 3);
    nursery_release(n);
}
END_TEST

START_TEST(null_arguments_are_einval)
{
    nursery_pool_t *pool = test_pool(1);
    atomic_int destroyed = 0;
    nursery_task_options_t opts = {.arg_destroy = count_call};
    ck_assert_int_eq(nursery_open(NULL, pool), EINVAL);
    ck_assert_int_eq(nursery_join(NULL, NURSERY_FOREVER, NULL), EINVAL);
    ck_assert_int_eq(nursery_start_soon(NULL, return_zero, &destroyed, &opts), EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 1);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, NULL, &destroyed, &opts), EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 2);
    nursery_result_t *r = INT2PTR(1);
    ck_assert_int_eq(nursery_capture_start_soon(n, NULL, &destroyed, &opts, &r), EINVAL);
    ck_assert_ptr_null(r);
    ck_assert_int_eq(atomic_load(&destroyed), 3);
    ck_assert_int_eq(nursery_start(n, NULL, &destroyed, &opts, NURSERY_FOREVER, NULL, NULL),
                     EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 4);
    ck_assert_int_eq(
        nursery_start(NULL, return_zero, &destroyed, &opts, NURSERY_FOREVER, NULL, NULL), EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 5);
    /* Without options there is nothing to destroy, and still no crash. */
    ck_assert_int_eq(nursery_start_soon(n, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_run(pool, NULL, NULL, NULL), EINVAL);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static void *join_elsewhere(void *arg)
{
    return INT2PTR(nursery_join(arg, NURSERY_FOREVER, NULL));
}

START_TEST(join_by_other_thread_or_out_of_order_is_einval)
{
    nursery_pool_t *pool = test_pool(1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    pthread_t t;
    void *rc = NULL;
    ck_assert_int_eq(pthread_create(&t, NULL, join_elsewhere, n), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq(PTR2INT(rc), EINVAL);

    /* Nested: the inner one must be joined first. */
    nursery_t *inner = NULL;
    ck_assert_int_eq(nursery_open(&inner, pool), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), EINVAL);
    ck_assert_int_eq(nursery_join(inner, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

START_TEST(join_times_out_then_cancel_and_join)
{
    nursery_pool_t *pool = test_pool(2);
    struct gated g;
    gated_init(&g, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));

    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(-1), &errs), ETIMEDOUT);
    ck_assert_ptr_null(errs);
    nursery_time_t t0 = nursery_now();
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(20), &errs), ETIMEDOUT);
    ck_assert_int_ge(nursery_now() - t0, 20 * INT64_C(1000000));
    ck_assert_int_eq(atomic_load(&g.rc), -1); /* still waiting */

    /* Cancelling the nursery itself is not an error. */
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&g.rc), ECANCELED);
    gated_fini(&g);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- start / started ----------------------------------------------------- */

struct server {
    nursery_result_t *gate;
    atomic_bool finished;
    int started_rc[2];
};

static int serve(void *arg, void **value)
{
    struct server *s = arg;
    s->started_rc[0] = nursery_started(INT2PTR(42));
    int rc = gate_wait(s->gate); /* the caller has returned by now */
    atomic_store(&s->finished, true);
    *value = INT2PTR(43);
    return rc;
}

START_TEST(start_returns_started_value_while_task_runs)
{
    nursery_pool_t *pool = test_pool(2);
    struct server s = {.gate = gate_new(), .started_rc = {-1, -1}};
    nursery_task_options_t opts = {.name = "server"};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    void *v = NULL;
    nursery_result_t *done = NULL;
    ck_assert_int_eq(nursery_start(n, serve, &s, &opts, nursery_after_ms(TEST_HANG_MS), &v, &done),
                     0);
    ck_assert_ptr_eq(v, INT2PTR(42));
    ck_assert_ptr_nonnull(done);
    ck_assert(!nursery_result_is_done(done));
    ck_assert(!atomic_load(&s.finished));
    gate_open(s.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert(atomic_load(&s.finished));
    ck_assert_int_eq(s.started_rc[0], 0);
    ck_assert(nursery_result_is_done(done));
    ck_assert_int_eq(nursery_result_value(done, &v), 0);
    ck_assert_ptr_eq(v, INT2PTR(43));
    nursery_result_release(done);
    nursery_result_release(s.gate);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int fail_before_started(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "early %d", 1);
}

START_TEST(start_reports_failure_before_started_to_caller)
{
    nursery_pool_t *pool = test_pool(2);
    atomic_int destroyed = 0;
    nursery_task_options_t opts = {.name = "early", .arg_destroy = count_call};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    /* Repeated: the task has ended when start returns, whatever the timing. */
    for (int i = 1; i <= 30; i++) {
        void *v = NULL;
        nursery_result_t *done = NULL;
        ck_assert_int_eq(
            nursery_start(n, fail_before_started, &destroyed, &opts, NURSERY_FOREVER, &v, &done),
            EIO);
        nursery_error_t *last = nursery_last_error();
        ck_assert_ptr_nonnull(last);
        ck_assert_int_eq(nursery_error_code(last), EIO);
        ck_assert_str_eq(nursery_error_message(last), "early 1");
        ck_assert_ptr_nonnull(nursery_error_task_name(last));
        ck_assert_str_eq(nursery_error_task_name(last), "early");
        int d = atomic_load(&destroyed);
        ck_assert_msg(d == i, "arg_destroy ran %d times after %d failed starts", d, i);

        ck_assert_ptr_nonnull(done);
        ck_assert_msg(nursery_result_is_done(done), "done result not done after start failed");
        nursery_error_t *err = NULL;
        ck_assert_int_eq(nursery_result_error(done, &err), 0);
        ck_assert_int_eq(nursery_error_code(err), EIO);
        nursery_result_release(done);
    }

    /* The target nursery never saw the failures. */
    ck_assert(!nursery_cancelled());
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int return_without_started(void *arg, void **value)
{
    (void)arg;
    *value = INT2PTR(9);
    return 0;
}

START_TEST(start_of_task_returning_without_started_is_enotstarted)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    void *v = NULL;
    nursery_result_t *done = NULL;
    ck_assert_int_eq(
        nursery_start(n, return_without_started, NULL, NULL, NURSERY_FOREVER, &v, &done),
        NURSERY_ENOTSTARTED);
    ck_assert_ptr_nonnull(nursery_last_error());
    ck_assert_int_eq(nursery_error_code(nursery_last_error()), NURSERY_ENOTSTARTED);
    /* The task itself succeeded. */
    ck_assert(nursery_result_is_done(done));
    ck_assert_int_eq(nursery_result_value(done, &v), 0);
    ck_assert_ptr_eq(v, INT2PTR(9));
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    nursery_result_release(done);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int start_twice(void *arg, void **value)
{
    (void)value;
    struct server *s = arg;
    s->started_rc[0] = nursery_started(INT2PTR(1));
    s->started_rc[1] = nursery_started(INT2PTR(2));
    return 0;
}

START_TEST(started_twice_is_ealready)
{
    nursery_pool_t *pool = test_pool(2);
    struct server s = {.started_rc = {-1, -1}};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    void *v = NULL;
    ck_assert_int_eq(nursery_start(n, start_twice, &s, NULL, NURSERY_FOREVER, &v, NULL), 0);
    ck_assert_ptr_eq(v, INT2PTR(1));
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(s.started_rc[0], 0);
    ck_assert_int_eq(s.started_rc[1], EALREADY);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int call_started(void *arg, void **value)
{
    (void)value;
    *(int *)arg = nursery_started(NULL);
    return 0;
}

START_TEST(started_outside_start_is_einval)
{
    ck_assert_int_eq(nursery_started(NULL), EINVAL); /* no task at all */
    nursery_pool_t *pool = test_pool(1);
    int rc = -1;
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_started(NULL), EINVAL); /* a body */
    ck_assert_int_eq(nursery_start_soon(n, call_started, &rc, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(rc, EINVAL); /* a task begun with start_soon */
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* The caller of nursery_start is a task of nursery `callers`; the started
 * task waits on a gate without calling started; `callers` is cancelled. */
struct cancelled_start {
    nursery_t *target;
    struct gated g;
    int start_rc;
    nursery_result_t *done;
};

static int start_and_wait(void *arg, void **value)
{
    (void)value;
    struct cancelled_start *c = arg;
    void *v = NULL;
    c->start_rc = nursery_start(c->target, gated_task, &c->g, NULL, NURSERY_FOREVER, &v, &c->done);
    return 0;
}

START_TEST(start_caller_cancelled_cancels_the_task)
{
    nursery_pool_t *pool = test_pool(2);
    for (int i = 0; i < 20; i++) {
        struct cancelled_start c = {.start_rc = -1};
        gated_init(&c.g, 1);
        nursery_t *callers = NULL;
        ck_assert_int_eq(nursery_open(&c.target, pool), 0);
        ck_assert_int_eq(nursery_open(&callers, pool), 0);
        ck_assert_int_eq(nursery_start_soon(callers, start_and_wait, &c, NULL), 0);
        ck_assert(latch_wait(&c.g.running));
        ck_assert_int_eq(nursery_cancel(callers), 0);
        ck_assert_int_eq(nursery_join(callers, NURSERY_FOREVER, NULL), 0);
        ck_assert_int_eq(c.start_rc, ECANCELED);
        ck_assert_int_eq(atomic_load(&c.g.rc), ECANCELED);
        /* start waited for the task to end: its final outcome is known. */
        ck_assert_ptr_nonnull(c.done);
        ck_assert_msg(nursery_result_is_done(c.done), "done result not done after start "
                                                      "returned ECANCELED");
        nursery_error_t *err = NULL;
        ck_assert_int_eq(nursery_result_error(c.done, &err), 0);
        ck_assert_ptr_nonnull(err);
        ck_assert_int_eq(nursery_error_code(err), ECANCELED);

        /* The target nursery is unaffected. */
        ck_assert(!nursery_cancelled());
        nursery_errors_t *errs = INT2PTR(1);
        ck_assert_int_eq(nursery_join(c.target, NURSERY_FOREVER, &errs), 0);
        ck_assert_ptr_null(errs);
        nursery_result_release(c.done);
        gated_fini(&c.g);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

START_TEST(start_deadline_passing_cancels_the_task)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < 10; i++) {
        struct gated g;
        gated_init(&g, 1);
        void *v = INT2PTR(1);
        nursery_result_t *done = NULL;
        nursery_time_t t0 = nursery_now();
        ck_assert_int_eq(nursery_start(n, gated_task, &g, NULL, nursery_after_ms(20), &v, &done),
                         ETIMEDOUT);
        ck_assert_int_ge(nursery_now() - t0, 20 * INT64_C(1000000));
        /* It was cancelled, running (its wait ended) or before it ran. */
        int rc = atomic_load(&g.rc);
        ck_assert_msg(rc == ECANCELED || rc == -1, "gate_wait returned %d", rc);
        ck_assert_ptr_nonnull(done);
        ck_assert(nursery_result_is_done(done));
        nursery_error_t *err = NULL;
        ck_assert_int_eq(nursery_result_error(done, &err), 0);
        ck_assert_ptr_nonnull(err);
        ck_assert_int_eq(nursery_error_code(err), ECANCELED);
        nursery_result_release(done);
        gated_fini(&g);
    }
    /* The target nursery is unaffected: nothing failed in it (a task that
     * ends before started is its caller's). */
    ck_assert(!nursery_cancelled());
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

static int start_then_finish(void *arg, void **value)
{
    nursery_result_t *gate = arg;
    int rc = nursery_started(INT2PTR(7));
    if (rc)
        return rc;
    rc = gate_wait(gate);
    *value = INT2PTR(8);
    return rc;
}

START_TEST(capture_start_and_done_gives_both_results)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    nursery_t *start_n = NULL, *run_n = NULL;
    ck_assert_int_eq(nursery_open(&run_n, pool), 0);
    ck_assert_int_eq(nursery_open(&start_n, pool), 0);

    nursery_result_t *sr = INT2PTR(1), *dr = INT2PTR(1);
    ck_assert_int_eq(
        nursery_capture_start_and_done(NULL, run_n, start_then_finish, gate, NULL, &sr, &dr),
        EINVAL);
    ck_assert_ptr_null(sr);
    ck_assert_ptr_null(dr);

    ck_assert_int_eq(
        nursery_capture_start_and_done(start_n, run_n, start_then_finish, gate, NULL, &sr, &dr), 0);
    ck_assert_int_eq(nursery_result_wait(sr, nursery_after_ms(TEST_HANG_MS)), 0);
    void *v = NULL;
    ck_assert_int_eq(nursery_result_value(sr, &v), 0);
    ck_assert_ptr_eq(v, INT2PTR(7));
    ck_assert(!nursery_result_is_done(dr)); /* still behind the gate */

    /* The start nursery can end while the task runs on in run_n. */
    ck_assert_int_eq(nursery_join(start_n, NURSERY_FOREVER, NULL), 0);
    ck_assert(!nursery_result_is_done(dr));
    gate_open(gate);
    ck_assert_int_eq(nursery_join(run_n, NURSERY_FOREVER, NULL), 0);
    ck_assert(nursery_result_is_done(dr));
    ck_assert_int_eq(nursery_result_value(dr, &v), 0);
    ck_assert_ptr_eq(v, INT2PTR(8));
    nursery_result_release(sr);
    nursery_result_release(dr);
    nursery_result_release(gate);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* nursery_start gives up at its deadline, or at once when its caller is
 * cancelled, while its task is still queued: the task is cancelled on the
 * spot and never runs (issue 6, item 9).  The pool's only worker is held by
 * a task whose own wait is bounded (5 s): a start that waits for a worker
 * to pick its task up returns only once that task has ended. */
struct held {
    latch_t running;
    nursery_result_t *gate;
};

static int hold_the_worker(void *arg, void **value)
{
    (void)value;
    struct held *h = arg;
    latch_count_down(&h->running);
    int rc = nursery_result_wait(h->gate, nursery_after_ms(5000));
    return rc == ECANCELED ? rc : 0;
}

struct start_counts {
    atomic_int ran;
    atomic_int destroyed;
};

static int count_then_started(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct start_counts *)arg)->ran, 1);
    return nursery_started(NULL);
}

static void start_arg_destroyed(void *arg)
{
    atomic_fetch_add(&((struct start_counts *)arg)->destroyed, 1);
}

START_TEST(start_gives_up_on_a_queued_task_at_once)
{
    nursery_pool_t *pool = capped_pool(1);
    struct held h = {.gate = gate_new()};
    latch_init(&h.running, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_result_t *holder = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, hold_the_worker, &h, NULL, &holder), 0);
    ck_assert(latch_wait(&h.running)); /* the only worker is busy */

    struct start_counts c = {0};
    nursery_task_options_t opts = {.arg_destroy = start_arg_destroyed};
    void *v = NULL;
    nursery_result_t *done = NULL;
    int rc = nursery_start(n, count_then_started, &c, &opts, nursery_after_ms(50), &v, &done);
    bool held = !nursery_result_is_done(holder);
    ck_assert_msg(rc == ETIMEDOUT && held,
                  "start (50 ms deadline, task queued) returned %d %s the only worker was free", rc,
                  held ? "before" : "only once");
    ck_assert_int_eq(atomic_load(&c.ran), 0);
    ck_assert_int_eq(atomic_load(&c.destroyed), 1);
    ck_assert_ptr_nonnull(done);
    assert_failed(done, ECANCELED);
    nursery_result_release(done);

    /* The caller is cancelled: the body of a cancelled nursery. */
    nursery_t *callers = NULL;
    ck_assert_int_eq(nursery_open(&callers, pool), 0);
    ck_assert_int_eq(nursery_cancel(callers), 0);
    done = NULL;
    rc = nursery_start(n, count_then_started, &c, &opts, nursery_after_ms(TEST_HANG_MS), &v, &done);
    held = !nursery_result_is_done(holder);
    ck_assert_msg(rc == ECANCELED && held,
                  "start from a cancelled caller returned %d %s the only worker was free", rc,
                  held ? "before" : "only once");
    ck_assert_int_eq(atomic_load(&c.ran), 0);
    ck_assert_int_eq(atomic_load(&c.destroyed), 2);
    /* Whether the task was queued and cancelled, or never made: */
    if (done != NULL)
        assert_failed(done, ECANCELED);
    nursery_result_release(done);
    ck_assert_int_eq(nursery_join(callers, NURSERY_FOREVER, NULL), 0);

    gate_open(h.gate);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    assert_value(holder, 0);
    nursery_result_release(holder);
    nursery_result_release(h.gate);
    latch_destroy(&h.running);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* From the only worker of a pool that cannot grow, nursery_start runs the
 * queued task itself, on its own stack (issue 6, item 9).  The test thread's
 * join is no worker and only waits: a start that waits for another worker
 * never returns, and the join times out. */
struct self_start {
    nursery_t *n;
    int rc;
    void *started;
    nursery_result_t *done;
    pthread_t caller;
    pthread_t ran_on;
};

static int started_seven_returns_eight(void *arg, void **value)
{
    struct self_start *s = arg;
    s->ran_on = pthread_self();
    int rc = nursery_started(INT2PTR(7));
    *value = INT2PTR(8);
    return rc;
}

static int start_on_own_pool(void *arg, void **value)
{
    (void)value;
    struct self_start *s = arg;
    s->caller = pthread_self();
    s->rc = nursery_start(s->n, started_seven_returns_eight, s, NULL,
                          nursery_after_ms(TEST_HANG_MS), &s->started, &s->done);
    return 0;
}

START_TEST(start_from_the_only_worker_runs_the_task_itself)
{
    nursery_pool_t *pool = capped_pool(1);
    struct self_start s = {.rc = -1};
    ck_assert_int_eq(nursery_open(&s.n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(s.n, start_on_own_pool, &s, NULL), 0);
    int rc = nursery_join(s.n, nursery_after_ms(10000), NULL);
    ck_assert_msg(rc == 0, "join returned %d: nursery_start in the only worker never returned", rc);
    ck_assert_int_eq(s.rc, 0);
    ck_assert_ptr_eq(s.started, INT2PTR(7));
    ck_assert(pthread_equal(s.ran_on, s.caller));
    ck_assert_ptr_nonnull(s.done);
    assert_value(s.done, 8);
    nursery_result_release(s.done);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* nursery_start gave up (deadline, or its caller cancelled) while its task
 * runs: the task is cancelled, and its later nursery_started(value) returns
 * ECANCELED, so the value stays the task's (issue 6, item 10).  The value
 * here is an owned object that the task frees when nobody took it; today
 * started returns 0 and the object is lost (a leak checker sees it). */
struct late_started {
    latch_t running;
    nursery_result_t *never; /* a gate nobody opens */
    atomic_int wait_rc;      /* the gate wait's code, -1 before */
    atomic_int started_rc;   /* nursery_started's code, -1 before */
    atomic_int freed;        /* the task freed its value itself */
};

static void late_started_init(struct late_started *l)
{
    latch_init(&l->running, 1);
    l->never = gate_new();
    atomic_init(&l->wait_rc, -1);
    atomic_init(&l->started_rc, -1);
    atomic_init(&l->freed, 0);
}

static void late_started_fini(struct late_started *l)
{
    nursery_result_release(l->never);
    latch_destroy(&l->running);
}

static int start_late_with_owned_value(void *arg, void **value)
{
    (void)value;
    struct late_started *l = arg;
    latch_count_down(&l->running);
    atomic_store(&l->wait_rc, gate_wait(l->never));
    int *owned = malloc(sizeof(*owned));
    int rc = nursery_started(owned);
    atomic_store(&l->started_rc, rc);
    if (rc) {
        free(owned);
        atomic_fetch_add(&l->freed, 1);
    }
    return rc;
}

static void assert_started_refused(struct late_started *l, nursery_result_t *done)
{
    ck_assert_int_eq(atomic_load(&l->wait_rc), ECANCELED);
    ck_assert_msg(atomic_load(&l->started_rc) == ECANCELED,
                  "nursery_started after its caller gave up returned %d",
                  atomic_load(&l->started_rc));
    ck_assert_int_eq(atomic_load(&l->freed), 1);
    ck_assert_ptr_nonnull(done);
    assert_failed(done, ECANCELED);
}

struct late_caller {
    nursery_t *target;
    struct late_started *late;
    int rc;
    nursery_result_t *done;
};

static int call_start_late(void *arg, void **value)
{
    (void)value;
    struct late_caller *c = arg;
    void *v = NULL;
    c->rc = nursery_start(c->target, start_late_with_owned_value, c->late, NULL, NURSERY_FOREVER,
                          &v, &c->done);
    return 0;
}

START_TEST(started_after_start_gave_up_is_ecanceled)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);

    /* The deadline passes while the task runs.  A task still queued at the
     * deadline never runs (see above): then again with a longer one. */
    struct late_started l;
    nursery_result_t *done = NULL;
    for (int ms = 50;; ms *= 10) {
        late_started_init(&l);
        void *v = NULL;
        done = NULL;
        ck_assert_int_eq(nursery_start(n, start_late_with_owned_value, &l, NULL,
                                       nursery_after_ms(ms), &v, &done),
                         ETIMEDOUT);
        if (latch_is_open(&l.running))
            break;
        ck_assert_int_lt(ms, 5000);
        nursery_result_release(done);
        late_started_fini(&l);
    }
    assert_started_refused(&l, done);
    nursery_result_release(done);
    late_started_fini(&l);

    /* The caller, a task, is cancelled while the task runs. */
    late_started_init(&l);
    struct late_caller c = {.target = n, .late = &l, .rc = -1};
    nursery_t *callers = NULL;
    ck_assert_int_eq(nursery_open(&callers, pool), 0);
    ck_assert_int_eq(nursery_start_soon(callers, call_start_late, &c, NULL), 0);
    ck_assert(latch_wait(&l.running));
    ck_assert_int_eq(nursery_cancel(callers), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(callers, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(c.rc, ECANCELED);
    assert_started_refused(&l, c.done);
    nursery_result_release(c.done);
    late_started_fini(&l);

    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- daemon and main tasks: asyncgui's _cm forms ------------------------
 * One row per form, one loop index per (form, scenario).  The body is the
 * test thread's code between open and join; "the body ends" is reaching
 * join.  DAEMON: the body's end cancels the task.  MAIN: the task's end
 * cancels the body. */

struct form {
    const char *name;
    unsigned flags;
    int tasks;
};

static const struct form forms[] = {
    {"wait_any_cm", NURSERY_TASK_DAEMON | NURSERY_TASK_MAIN, 1},
    {"wait_all_cm", 0, 1},
    {"run_as_daemon", NURSERY_TASK_DAEMON, 1},
    {"run_as_main", NURSERY_TASK_MAIN, 1},
    {"open_nursery", 0, 3},
};

enum { TASK_FIRST, BODY_FIRST, TASK_FAILS, BODY_FAILS, BOTH_FAIL, SCENARIOS };
static const char *const scenario_names[] = {"task first", "body first", "task fails",
                                             "body fails", "both fail"};
#define FORMS ((int)(sizeof(forms) / sizeof(forms[0])))

struct bg_task {
    nursery_result_t *gate;
    int fail;
    int value;
    latch_t *running;
    latch_t *ended; /* counted down by arg_destroy, after the task's end */
};

static int bg_fn(void *arg, void **value)
{
    struct bg_task *t = arg;
    latch_count_down(t->running);
    int rc = gate_wait(t->gate);
    if (rc)
        return rc;
    if (t->fail)
        return nursery_fail(t->fail, "task");
    *value = INT2PTR(t->value);
    return 0;
}

static void bg_ended(void *arg)
{
    latch_count_down(((struct bg_task *)arg)->ended);
}

START_TEST(flags_give_asyncgui_cm_forms)
{
    const struct form *f = &forms[_i / SCENARIOS];
    int sc = _i % SCENARIOS;
    bool main_task = f->flags & NURSERY_TASK_MAIN;
    bool daemon = f->flags & NURSERY_TASK_DAEMON;
    char what[64];
    snprintf(what, sizeof(what), "%s, %s", f->name, scenario_names[sc]);

    nursery_pool_t *pool = test_pool(4);
    nursery_result_t *go = gate_new(), *never = gate_new(), *open = gate_new();
    gate_open(open);
    latch_t running, ended;
    latch_init(&running, f->tasks);
    latch_init(&ended, f->tasks);
    struct bg_task t[3];
    nursery_result_t *r[3] = {NULL, NULL, NULL};
    nursery_task_options_t opts = {.name = "bg", .arg_destroy = bg_ended, .flags = f->flags};
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    for (int i = 0; i < f->tasks; i++) {
        t[i] = (struct bg_task){.gate = never, .value = 100 + i, .running = &running, .ended = &ended};
        if (sc == TASK_FIRST)
            t[i].gate = go;
        if ((sc == TASK_FAILS || sc == BOTH_FAIL) && i == 0) {
            t[i].gate = go;
            t[i].fail = EIO;
        }
        ck_assert_int_eq(nursery_capture_start_soon(n, bg_fn, &t[i], &opts, &r[i]), 0);
    }
    ck_assert(latch_wait(&running));
    ck_assert_msg(!nursery_cancelled(), "%s: body cancelled early", what);

    nursery_errors_t *errs = NULL;
    int rc;
    switch (sc) {
    case TASK_FIRST:
        gate_open(go);
        ck_assert(latch_wait(&ended)); /* every task has ended */
        ck_assert_msg(nursery_cancelled() == main_task, "%s: body cancelled: %d", what,
                      nursery_cancelled());
        ck_assert_int_eq(gate_wait(open), main_task ? ECANCELED : 0);
        ck_assert_int_eq(nursery_checkpoint(), main_task ? ECANCELED : 0);
        rc = nursery_join(n, NURSERY_FOREVER, &errs);
        ck_assert_msg(rc == 0, "%s: join %d", what, rc);
        ck_assert_msg(errs == NULL, "%s: a group", what);
        for (int i = 0; i < f->tasks; i++)
            assert_value(r[i], 100 + i);
        break;
    case BODY_FIRST:
        if (daemon) {
            rc = nursery_join(n, NURSERY_FOREVER, &errs);
            ck_assert_msg(rc == 0, "%s: join %d", what, rc);
            ck_assert_msg(errs != NULL, "%s: no group", what);
            ck_assert_uint_eq(nursery_errors_count(errs), 0);
            ck_assert_uint_eq(nursery_errors_cancelled(errs), (size_t)f->tasks);
            for (int i = 0; i < f->tasks; i++)
                assert_failed(r[i], ECANCELED);
        } else {
            /* The body is in join: the task is not cancelled by it. */
            ck_assert_int_eq(nursery_join(n, nursery_after_ms(-1), &errs), ETIMEDOUT);
            ck_assert_ptr_null(errs);
            for (int i = 0; i < f->tasks; i++)
                assert_not_done(r[i]);
            ck_assert_int_eq(nursery_future_set_value(never, NULL), 0);
            rc = nursery_join(n, NURSERY_FOREVER, &errs);
            ck_assert_msg(rc == 0, "%s: join %d", what, rc);
            ck_assert_msg(errs == NULL, "%s: a group (task cancelled?)", what);
            for (int i = 0; i < f->tasks; i++)
                assert_value(r[i], 100 + i);
        }
        break;
    case TASK_FAILS:
    case BOTH_FAIL:
        gate_open(go);
        /* Whatever the flags, a failure cancels the body. */
        ck_assert_int_eq(gate_wait(never), ECANCELED);
        ck_assert(nursery_cancelled());
        if (sc == BOTH_FAIL)
            ck_assert_int_eq(nursery_fail(EPROTO, "body"), EPROTO);
        rc = nursery_join(n, NURSERY_FOREVER, &errs);
        ck_assert_msg(rc == NURSERY_EFAILED, "%s: join %d", what, rc);
        ck_assert_uint_eq(nursery_errors_count(errs), sc == BOTH_FAIL ? 2 : 1);
        ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
        ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 0)), "task");
        ck_assert_str_eq(nursery_error_task_name(nursery_errors_get(errs, 0)), "bg");
        if (sc == BOTH_FAIL) {
            ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 1)), EPROTO);
            ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 1)), "body");
        }
        ck_assert_uint_eq(nursery_errors_cancelled(errs), (size_t)f->tasks - 1);
        assert_failed(r[0], EIO);
        for (int i = 1; i < f->tasks; i++)
            assert_failed(r[i], ECANCELED);
        break;
    case BODY_FAILS:
        ck_assert_int_eq(nursery_fail(EPROTO, "body"), EPROTO);
        ck_assert(nursery_cancelled());
        ck_assert_int_eq(gate_wait(open), ECANCELED);
        rc = nursery_join(n, NURSERY_FOREVER, &errs);
        ck_assert_msg(rc == NURSERY_EFAILED, "%s: join %d", what, rc);
        ck_assert_uint_eq(nursery_errors_count(errs), 1);
        ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EPROTO);
        ck_assert_str_eq(nursery_error_message(nursery_errors_get(errs, 0)), "body");
        ck_assert_uint_eq(nursery_errors_cancelled(errs), (size_t)f->tasks);
        for (int i = 0; i < f->tasks; i++)
            assert_failed(r[i], ECANCELED);
        break;
    }
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    nursery_errors_free(errs);
    ck_assert(latch_is_open(&ended)); /* every arg_destroy ran */
    results_release(r, (size_t)f->tasks);
    latch_destroy(&running);
    latch_destroy(&ended);
    nursery_result_release(go);
    nursery_result_release(never);
    nursery_result_release(open);
    destroy_pool(pool);
}
END_TEST

/* The same table through nursery_run(): the body's return is its end. */
struct run_form {
    unsigned flags;
    nursery_result_t *never;
    nursery_result_t *r;
    latch_t running;
    int body_wait_rc;
};

static int body_then_return(nursery_t *n, void *arg)
{
    struct run_form *rf = arg;
    struct bg_task *t = malloc(sizeof(*t));
    ck_assert_ptr_nonnull(t);
    *t = (struct bg_task){.gate = rf->never, .value = 7, .running = &rf->running};
    nursery_task_options_t opts = {.arg_destroy = free, .flags = rf->flags};
    ck_assert_int_eq(nursery_capture_start_soon(n, bg_fn, t, &opts, &rf->r), 0);
    ck_assert(latch_wait(&rf->running));
    return 0;
}

START_TEST(run_body_return_cancels_daemons_only)
{
    nursery_pool_t *pool = test_pool(2);
    const unsigned flag_sets[] = {NURSERY_TASK_DAEMON, NURSERY_TASK_DAEMON | NURSERY_TASK_MAIN};
    for (size_t k = 0; k < 2; k++) {
        struct run_form rf = {.flags = flag_sets[k], .never = gate_new()};
        latch_init(&rf.running, 1);
        nursery_errors_t *errs = NULL;
        ck_assert_int_eq(nursery_run(pool, body_then_return, &rf, &errs), 0);
        ck_assert_uint_eq(nursery_errors_count(errs), 0);
        ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
        nursery_errors_free(errs);
        assert_failed(rf.r, ECANCELED);
        nursery_result_release(rf.r);
        nursery_result_release(rf.never);
        latch_destroy(&rf.running);
    }
    destroy_pool(pool);
}
END_TEST

/* A daemon starts a plain task: the nursery is not cancelled while that
 * task runs, even with the body in join; once it ends, the daemon is. */
struct daemon_parent {
    nursery_t *n;
    nursery_result_t *child_gate;
    nursery_result_t *never;
    nursery_result_t *child; /* the plain task's capture */
    latch_t child_started;
    atomic_int daemon_rc;
};

static int plain_child(void *arg, void **value)
{
    struct daemon_parent *d = arg;
    int rc = gate_wait(d->child_gate);
    if (rc)
        return rc;
    *value = INT2PTR(55);
    return 0;
}

static int starting_daemon(void *arg, void **value)
{
    (void)value;
    struct daemon_parent *d = arg;
    task_expect_eq(nursery_capture_start_soon(d->n, plain_child, d, NULL, &d->child), 0);
    latch_count_down(&d->child_started);
    int rc = gate_wait(d->never);
    atomic_store(&d->daemon_rc, rc);
    return rc;
}

START_TEST(daemon_that_starts_a_plain_task)
{
    nursery_pool_t *pool = test_pool(3);
    struct daemon_parent d = {.child_gate = gate_new(), .never = gate_new()};
    latch_init(&d.child_started, 1);
    atomic_init(&d.daemon_rc, -1);
    ck_assert_int_eq(nursery_open(&d.n, pool), 0);
    nursery_task_options_t daemon = {.flags = NURSERY_TASK_DAEMON};
    nursery_result_t *dr = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(d.n, starting_daemon, &d, &daemon, &dr), 0);
    ck_assert(latch_wait(&d.child_started));
    /* The body reaches join: a plain task is still pending, nothing is
     * cancelled. */
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(d.n, nursery_after_ms(-1), &errs), ETIMEDOUT);
    assert_not_done(d.child);
    assert_not_done(dr);
    gate_open(d.child_gate);
    ck_assert_int_eq(nursery_join(d.n, NURSERY_FOREVER, &errs), 0);
    ck_assert_tasks_ok();
    assert_value(d.child, 55);
    assert_failed(dr, ECANCELED);
    ck_assert_int_eq(atomic_load(&d.daemon_rc), ECANCELED);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    nursery_result_release(dr);
    nursery_result_release(d.child);
    nursery_result_release(d.child_gate);
    nursery_result_release(d.never);
    latch_destroy(&d.child_started);
    destroy_pool(pool);
}
END_TEST

/* A MAIN task begun with nursery_start() is main only once started: its
 * failure before started goes to the caller and cancels nothing; after
 * started, its end cancels the body. */
static int main_fails_before_started(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "before started");
}

static int main_started_then_waits(void *arg, void **value)
{
    (void)value;
    nursery_result_t *gate = arg;
    if (nursery_started(INT2PTR(9)) != 0)
        return EINVAL;
    return gate_wait(gate);
}

START_TEST(main_task_by_start_counts_once_started)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_result_t *gate = gate_new();
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    nursery_task_options_t main_opts = {.flags = NURSERY_TASK_MAIN};
    ck_assert_int_eq(nursery_start(n, main_fails_before_started, NULL, &main_opts, NURSERY_FOREVER,
                                   NULL, NULL),
                     EIO);
    ck_assert(!nursery_cancelled());
    void *v = NULL;
    nursery_result_t *done = NULL;
    ck_assert_int_eq(nursery_start(n, main_started_then_waits, gate, &main_opts, NURSERY_FOREVER,
                                   &v, &done),
                     0);
    ck_assert_ptr_eq(v, INT2PTR(9));
    ck_assert(!nursery_cancelled());
    gate_open(gate);
    ck_assert_int_eq(nursery_sleep(nursery_after_ms(TEST_HANG_MS)), ECANCELED);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    assert_value(done, 0);
    nursery_result_release(done);
    nursery_result_release(gate);
    destroy_pool(pool);
}
END_TEST

/* Unknown flags (and the library's own internal bits) are EINVAL on every
 * start call, and the argument is destroyed. */
START_TEST(unknown_task_flag_is_einval_and_destroys_the_arg)
{
    nursery_pool_t *pool = test_pool(1);
    const unsigned bad[] = {1u << 3, 1u << 16, 1u << 29, 1u << 30, 1u << 31};
    for (size_t limited = 0; limited < 2; limited++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        if (limited)
            ck_assert_int_eq(nursery_set_limit(n, 4), 0);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            atomic_int destroyed = 0;
            nursery_task_options_t o = {.arg_destroy = count_call,
                                        .flags = NURSERY_TASK_DAEMON | bad[i]};
            /* The argument is the counter: running would add one too. */
            ck_assert_int_eq(nursery_start_soon(n, count_task, &destroyed, &o), EINVAL);
            ck_assert_int_eq(atomic_load(&destroyed), 1);
            nursery_result_t *r = INT2PTR(1);
            ck_assert_int_eq(nursery_capture_start_soon(n, count_task, &destroyed, &o, &r), EINVAL);
            ck_assert_ptr_null(r);
            ck_assert_int_eq(atomic_load(&destroyed), 2);
            ck_assert_int_eq(nursery_start(n, count_task, &destroyed, &o, NURSERY_FOREVER, NULL, &r),
                             EINVAL);
            ck_assert_ptr_null(r);
            ck_assert_int_eq(atomic_load(&destroyed), 3);
            ck_assert_int_eq(nursery_start_limited(n, count_task, &destroyed, &o, NURSERY_FOREVER),
                             EINVAL);
            ck_assert_int_eq(atomic_load(&destroyed), 4);
            ck_assert_int_eq(nursery_try_start(n, count_task, &destroyed, &o), EINVAL);
            ck_assert_int_eq(atomic_load(&destroyed), 5);
        }
        nursery_errors_t *errs = INT2PTR(1);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
        ck_assert_ptr_null(errs);
    }
    destroy_pool(pool);
}
END_TEST

/* ---- the concurrency cap ------------------------------------------------ */

#define CAP_LIMIT 3
#define CAP_MANY 60

struct cap_count {
    atomic_int current;
    atomic_int max;
    atomic_int done;
    latch_t first; /* the first CAP_LIMIT meet here: the limit is reached */
    atomic_int next;
    int order[CAP_MANY];
};

struct cap_arg {
    struct cap_count *c;
    int index;
};

static struct cap_arg cap_args[CAP_MANY];

static int capped_task(void *arg, void **value)
{
    (void)value;
    struct cap_arg *a = arg;
    struct cap_count *c = a->c;
    c->order[atomic_fetch_add(&c->next, 1)] = a->index;
    int now = atomic_fetch_add(&c->current, 1) + 1;
    int max = atomic_load(&c->max);
    while (now > max && !atomic_compare_exchange_weak(&c->max, &max, now))
        ;
    if (a->index < CAP_LIMIT) {
        latch_count_down(&c->first);
        task_expect(latch_wait(&c->first));
    }
    for (int i = 0; i < 20; i++)
        sched_yield();
    atomic_fetch_sub(&c->current, 1);
    atomic_fetch_add(&c->done, 1);
    return 0;
}

static void cap_count_init(struct cap_count *c)
{
    memset(c, 0, sizeof(*c));
    latch_init(&c->first, CAP_LIMIT);
    for (int i = 0; i < CAP_MANY; i++)
        cap_args[i] = (struct cap_arg){.c = c, .index = i};
}

START_TEST(limit_caps_the_tasks_running_at_once)
{
    nursery_pool_t *pool = test_pool(8);
    static struct cap_count c;
    cap_count_init(&c);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_set_limit(n, CAP_LIMIT), 0);
    for (int i = 0; i < CAP_MANY; i++)
        ck_assert_int_eq(nursery_start_soon(n, capped_task, &cap_args[i], NULL), 0);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    ck_assert_int_eq(atomic_load(&c.done), CAP_MANY);
    ck_assert_int_eq(atomic_load(&c.max), CAP_LIMIT);
    latch_destroy(&c.first);
    destroy_pool(pool);
}
END_TEST

/* With a limit of one, the tasks run one at a time in start order. */
START_TEST(tasks_beyond_the_limit_wait_in_start_order)
{
    nursery_pool_t *pool = test_pool(4);
    static struct cap_count c;
    cap_count_init(&c);
    latch_destroy(&c.first);
    latch_init(&c.first, 0);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_set_limit(n, 1), 0);
    for (int i = 0; i < CAP_MANY; i++) {
        cap_args[i].index = CAP_LIMIT + i; /* past the meeting */
        ck_assert_int_eq(nursery_start_soon(n, capped_task, &cap_args[i], NULL), 0);
    }
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&c.max), 1);
    for (int i = 0; i < CAP_MANY; i++)
        ck_assert_int_eq(c.order[i], CAP_LIMIT + i);
    latch_destroy(&c.first);
    destroy_pool(pool);
}
END_TEST

/* Waits until `pool` has a worker blocked in a library wait. */
static void wait_for_blocked_worker(nursery_pool_t *pool)
{
    nursery_time_t end = nursery_after_ms(TEST_HANG_MS);
    nursery_pool_stats_t st = {0};
    do {
        ck_assert_int_eq(nursery_pool_stats(pool, &st), 0);
        if (st.blocked > 0)
            return;
        sched_yield();
    } while (nursery_now() < end);
    ck_abort_msg("no worker blocked");
}

/* A producer task (in another nursery, on another pool) calling
 * nursery_start_limited() on a full nursery. */
struct producer {
    nursery_t *target;
    atomic_int ran;
    atomic_int destroyed;
    atomic_int rc;
    nursery_time_t deadline;
    latch_t *returned; /* counted down when start_limited returned (NULL: none) */
};

static int produced(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct producer *)arg)->ran, 1);
    return 0;
}

static void produced_destroy(void *arg)
{
    atomic_fetch_add(&((struct producer *)arg)->destroyed, 1);
}

static int producer_task(void *arg, void **value)
{
    (void)value;
    struct producer *p = arg;
    nursery_task_options_t o = {.arg_destroy = produced_destroy};
    int rc = nursery_start_limited(p->target, produced, p, &o, p->deadline);
    atomic_store(&p->rc, rc);
    if (p->returned)
        latch_count_down(p->returned);
    return 0;
}

/* Sets up a nursery of limit 1 whose slot a gated task holds. */
static nursery_t *full_nursery(nursery_pool_t *pool, struct gated *g, nursery_result_t **holder)
{
    gated_init(g, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_set_limit(n, 1), 0);
    ck_assert_int_eq(nursery_capture_start_soon(n, gated_task, g, NULL, holder), 0);
    ck_assert(latch_wait(&g->running));
    return n;
}

START_TEST(start_limited_blocks_while_full_and_wakes_when_a_slot_frees)
{
    nursery_pool_t *pool = test_pool(2), *other = capped_pool(1);
    struct gated g;
    nursery_result_t *holder = NULL;
    nursery_t *n = full_nursery(pool, &g, &holder);
    struct producer p = {.target = n, .deadline = NURSERY_FOREVER};
    atomic_init(&p.rc, -1);
    nursery_t *m = NULL;
    ck_assert_int_eq(nursery_open(&m, other), 0);
    nursery_result_t *pr = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(m, producer_task, &p, NULL, &pr), 0);
    wait_for_blocked_worker(other);
    ck_assert_int_eq(atomic_load(&p.rc), -1);
    ck_assert_int_eq(atomic_load(&p.ran), 0);
    gate_open(g.gate); /* the slot frees */
    ck_assert_int_eq(nursery_join(m, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&p.rc), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&p.ran), 1);
    ck_assert_int_eq(atomic_load(&p.destroyed), 1);
    assert_value(holder, 0);
    nursery_result_release(holder);
    nursery_result_release(pr);
    gated_fini(&g);
    destroy_pool(other);
    destroy_pool(pool);
}
END_TEST

START_TEST(start_limited_wakes_with_ecanceled_when_the_nursery_is_cancelled)
{
    nursery_pool_t *pool = test_pool(2), *other = capped_pool(1);
    /* m first, so that cancelling n (opened inside m's body) leaves m and
     * its producer alone: only the nursery it starts into is cancelled. */
    nursery_t *m = NULL;
    ck_assert_int_eq(nursery_open(&m, other), 0);
    struct gated g;
    nursery_result_t *holder = NULL;
    nursery_t *n = full_nursery(pool, &g, &holder);
    latch_t returned;
    latch_init(&returned, 1);
    struct producer p = {.target = n, .deadline = NURSERY_FOREVER, .returned = &returned};
    atomic_init(&p.rc, -1);
    nursery_result_t *pr = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(m, producer_task, &p, NULL, &pr), 0);
    wait_for_blocked_worker(other);
    ck_assert_int_eq(nursery_cancel(n), 0);
    /* A plain latch: the test thread is n's body, cancelled now. */
    ck_assert(latch_wait(&returned));
    latch_destroy(&returned);
    ck_assert_int_eq(atomic_load(&p.rc), ECANCELED);
    ck_assert_int_eq(atomic_load(&p.destroyed), 1);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1); /* the holder */
    nursery_errors_free(errs);
    ck_assert_int_eq(nursery_join(m, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    assert_value(pr, 0);
    nursery_result_release(pr);
    ck_assert_int_eq(atomic_load(&p.ran), 0);
    assert_failed(holder, ECANCELED);
    nursery_result_release(holder);
    gated_fini(&g);
    destroy_pool(other);
    destroy_pool(pool);
}
END_TEST

START_TEST(start_limited_timeouts_and_cancellation)
{
    nursery_pool_t *pool = test_pool(2);
    struct gated g;
    nursery_result_t *holder = NULL;
    nursery_t *n = full_nursery(pool, &g, &holder);
    struct producer p = {.target = n};
    nursery_task_options_t o = {.arg_destroy = produced_destroy};

    /* Full: a short deadline passes. */
    ck_assert_int_eq(nursery_start_limited(n, produced, &p, &o, nursery_after_ms(20)), ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&p.destroyed), 1);
    /* A deadline already past only polls. */
    ck_assert_int_eq(nursery_start_limited(n, produced, &p, &o, nursery_after_ms(-1)), ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&p.destroyed), 2);
    /* The caller's own cancellation while it waits: a scope's deadline. */
    nursery_scope_t *s = NULL;
    ck_assert_int_eq(nursery_scope_open(&s, nursery_after_ms(20), 0), 0);
    ck_assert_int_eq(nursery_start_limited(n, produced, &p, &o, NURSERY_FOREVER), ECANCELED);
    ck_assert_int_eq(nursery_scope_close(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&p.destroyed), 3);
    ck_assert(!nursery_cancelled());

    gate_open(g.gate);
    ck_assert_int_eq(nursery_result_wait(holder, nursery_after_ms(TEST_HANG_MS)), 0);
    /* Room now (once the slot is given back), but the caller is cancelled:
     * ECANCELED at once. */
    ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_start_limited(n, produced, &p, &o, NURSERY_FOREVER), ECANCELED);
    ck_assert_int_eq(nursery_scope_close(s, NULL), 0);
    ck_assert_int_eq(atomic_load(&p.destroyed), 4);
    /* Room, not cancelled: it starts. */
    ck_assert_int_eq(nursery_start_limited(n, produced, &p, &o, NURSERY_FOREVER), 0);
    /* The nursery cancelled: ECANCELED at once. */
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_start_limited(n, produced, &p, &o, NURSERY_FOREVER), ECANCELED);
    ck_assert_int_eq(nursery_start_limited(n, produced, &p, &o, nursery_after_ms(-1)), ECANCELED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&p.destroyed), 7);
    ck_assert_int_le(atomic_load(&p.ran), 1);
    assert_value(holder, 0);
    nursery_result_release(holder);
    gated_fini(&g);
    destroy_pool(pool);
}
END_TEST

/* Called from a task of the nursery with a limit of 1, it waits forever:
 * the calling task holds the slot. */
struct self_limited {
    nursery_t *n;
    atomic_int rc;
    atomic_int destroyed;
};

static void self_destroyed(void *arg)
{
    atomic_fetch_add(&((struct self_limited *)arg)->destroyed, 1);
}

static int start_limited_from_inside(void *arg, void **value)
{
    (void)value;
    struct self_limited *sl = arg;
    nursery_task_options_t o = {.arg_destroy = self_destroyed};
    atomic_store(&sl->rc, nursery_start_limited(sl->n, return_zero, sl, &o, nursery_after_ms(20)));
    return 0;
}

START_TEST(start_limited_from_a_task_of_the_nursery_waits_for_its_siblings)
{
    nursery_pool_t *pool = test_pool(2);
    struct self_limited sl = {.rc = -1};
    ck_assert_int_eq(nursery_open(&sl.n, pool), 0);
    ck_assert_int_eq(nursery_set_limit(sl.n, 1), 0);
    ck_assert_int_eq(nursery_start_soon(sl.n, start_limited_from_inside, &sl, NULL), 0);
    ck_assert_int_eq(nursery_join(sl.n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&sl.rc), ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&sl.destroyed), 1);
    destroy_pool(pool);
}
END_TEST

struct reusable {
    atomic_int ran;
    atomic_int destroyed;
};

static int reusable_run(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct reusable *)arg)->ran, 1);
    return 0;
}

static void reusable_destroy(void *arg)
{
    atomic_fetch_add(&((struct reusable *)arg)->destroyed, 1);
}

START_TEST(try_start_is_eagain_when_full_and_keeps_the_arg)
{
    nursery_pool_t *pool = test_pool(2);
    struct gated g;
    nursery_result_t *holder = NULL;
    nursery_t *n = full_nursery(pool, &g, &holder);
    struct reusable *arg = calloc(1, sizeof(*arg));
    ck_assert_ptr_nonnull(arg);
    nursery_task_options_t o = {.arg_destroy = reusable_destroy};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_try_start(n, reusable_run, arg, &o), EAGAIN);
    ck_assert_int_eq(atomic_load(&arg->destroyed), 0);
    ck_assert_int_eq(atomic_load(&arg->ran), 0);
    /* Still the caller's: start it again once there is room. */
    gate_open(g.gate);
    ck_assert_int_eq(nursery_start_limited(n, reusable_run, arg, &o, NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&arg->ran), 1);
    ck_assert_int_eq(atomic_load(&arg->destroyed), 1);
    free(arg);
    nursery_result_release(holder);
    gated_fini(&g);
    destroy_pool(pool);
}
END_TEST

START_TEST(try_start_with_room_starts_and_is_no_cancellation_point)
{
    nursery_pool_t *pool = test_pool(3);
    struct gated g;
    gated_init(&g, 2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_set_limit(n, 2), 0);
    ck_assert_int_eq(nursery_try_start(n, gated_task, &g, NULL), 0);
    /* In a cancelled scope: not a cancellation point, it still starts (the
     * nursery is not cancelled, so the task runs). */
    nursery_scope_t *s = NULL;
    ck_assert_int_eq(nursery_scope_open(&s, NURSERY_FOREVER, 0), 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_try_start(n, gated_task, &g, NULL), 0);
    ck_assert_int_eq(nursery_scope_close(s, NULL), 0);
    ck_assert(latch_wait(&g.running)); /* both run at once */
    struct reusable r = {0};
    nursery_task_options_t o = {.arg_destroy = reusable_destroy};
    ck_assert_int_eq(nursery_try_start(n, reusable_run, &r, &o), EAGAIN);
    ck_assert_int_eq(atomic_load(&r.destroyed), 0);
    gate_open(g.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&g.rc), 0);

    /* Without a limit, as start_soon. */
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_try_start(n, reusable_run, &r, &o), 0);
    ck_assert_int_eq(nursery_start_limited(n, reusable_run, &r, &o, nursery_after_ms(-1)), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&r.ran), 2);
    ck_assert_int_eq(atomic_load(&r.destroyed), 2);
    gated_fini(&g);
    destroy_pool(pool);
}
END_TEST

START_TEST(limit_calls_on_null_or_joined_nursery)
{
    nursery_pool_t *pool = test_pool(1);
    atomic_int destroyed = 0;
    nursery_task_options_t o = {.arg_destroy = count_call};
    ck_assert_int_eq(nursery_set_limit(NULL, 1), EINVAL);
    ck_assert_int_eq(nursery_try_start(NULL, count_task, &destroyed, &o), EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 1);
    ck_assert_int_eq(nursery_start_limited(NULL, count_task, &destroyed, &o, NURSERY_FOREVER),
                     EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 2);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_set_limit(n, 1), 0);
    ck_assert_int_eq(nursery_try_start(n, NULL, &destroyed, &o), EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 3);
    ck_assert_int_eq(nursery_start_limited(n, NULL, &destroyed, &o, NURSERY_FOREVER), EINVAL);
    ck_assert_int_eq(atomic_load(&destroyed), 4);
    nursery_retain(n);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_set_limit(n, 2), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_try_start(n, count_task, &destroyed, &o), NURSERY_ECLOSED);
    ck_assert_int_eq(atomic_load(&destroyed), 5);
    ck_assert_int_eq(nursery_start_limited(n, count_task, &destroyed, &o, NURSERY_FOREVER),
                     NURSERY_ECLOSED);
    ck_assert_int_eq(atomic_load(&destroyed), 6);
    nursery_release(n);
    destroy_pool(pool);
}
END_TEST

/* Waiting tasks: count down `ran` and return. */
struct waiting {
    latch_t ran;
    atomic_int destroyed;
};

static int waiting_task(void *arg, void **value)
{
    (void)value;
    latch_count_down(&((struct waiting *)arg)->ran);
    return 0;
}

static void waiting_destroyed(void *arg)
{
    atomic_fetch_add(&((struct waiting *)arg)->destroyed, 1);
}

START_TEST(raising_or_removing_the_limit_admits_waiting_tasks)
{
    nursery_pool_t *pool = test_pool(3);
    const size_t new_limits[] = {3, 0};
    for (size_t k = 0; k < 2; k++) {
        struct gated g;
        nursery_result_t *holder = NULL;
        nursery_t *n = full_nursery(pool, &g, &holder);
        struct waiting w;
        latch_init(&w.ran, 2);
        atomic_init(&w.destroyed, 0);
        nursery_task_options_t o = {.arg_destroy = waiting_destroyed};
        ck_assert_int_eq(nursery_start_soon(n, waiting_task, &w, &o), 0);
        ck_assert_int_eq(nursery_start_soon(n, waiting_task, &w, &o), 0);
        ck_assert_int_eq(nursery_set_limit(n, new_limits[k]), 0);
        /* They run while the holder still holds its slot. */
        ck_assert(latch_wait(&w.ran));
        assert_not_done(holder);
        gate_open(g.gate);
        nursery_errors_t *errs = INT2PTR(1);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
        ck_assert_ptr_null(errs);
        ck_assert_int_eq(atomic_load(&w.destroyed), 2);
        nursery_result_release(holder);
        latch_destroy(&w.ran);
        gated_fini(&g);
    }
    destroy_pool(pool);
}
END_TEST

/* Lowering the limit stops nothing already admitted. */
START_TEST(lowering_the_limit_stops_nothing)
{
    nursery_pool_t *pool = test_pool(4);
    struct gated g;
    gated_init(&g, 3);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_set_limit(n, 3), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));
    ck_assert_int_eq(nursery_set_limit(n, 1), 0);
    atomic_int count = 0;
    ck_assert_int_eq(nursery_start_soon(n, count_task, &count, NULL), 0);
    gate_open(g.gate);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(atomic_load(&g.rc), 0);
    ck_assert_int_eq(atomic_load(&count), 1);
    gated_fini(&g);
    destroy_pool(pool);
}
END_TEST

START_TEST(limit_applies_to_captures)
{
    nursery_pool_t *pool = test_pool(3);
    struct gated g;
    nursery_result_t *holder = NULL;
    nursery_t *n = full_nursery(pool, &g, &holder);
    atomic_int count = 0;
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, count_task, &count, NULL, &r), 0);
    assert_not_done(r); /* waits in the nursery */
    gate_open(g.gate);
    ck_assert_int_eq(nursery_result_wait(r, nursery_after_ms(TEST_HANG_MS)), 0);
    assert_value(r, 0);
    ck_assert_int_eq(atomic_load(&count), 1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    nursery_result_release(r);
    nursery_result_release(holder);
    gated_fini(&g);
    destroy_pool(pool);
}
END_TEST

/* nursery_result_cancel() on a capture still waiting in the nursery: it
 * never runs, it is done at once, its arg_destroy has run, and the limit
 * still holds for what follows. */
START_TEST(cancelling_a_waiting_capture)
{
    nursery_pool_t *pool = test_pool(3);
    struct gated g;
    nursery_result_t *holder = NULL;
    nursery_t *n = full_nursery(pool, &g, &holder);
    atomic_int destroyed = 0;
    nursery_task_options_t o = {.arg_destroy = count_call};
    nursery_result_t *r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, count_task, &destroyed, &o, &r), 0);
    ck_assert_int_eq(nursery_result_cancel(r), 0);
    assert_failed(r, ECANCELED);
    ck_assert_int_eq(atomic_load(&destroyed), 1);
    /* The holder still holds the only slot. */
    atomic_int count = 0;
    nursery_result_t *after = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, count_task, &count, NULL, &after), 0);
    assert_not_done(holder);
    assert_not_done(after);
    gate_open(g.gate);
    nursery_errors_t *errs = NULL;
    int rc = nursery_join(n, nursery_after_ms(10000), &errs);
    ck_assert_msg(rc != ETIMEDOUT, "join never ends after cancelling a waiting capture");
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&destroyed), 1); /* never ran */
    assert_value(holder, 0);
    assert_value(after, 0);
    ck_assert_int_eq(atomic_load(&count), 1);
    nursery_result_release(r);
    nursery_result_release(after);
    nursery_result_release(holder);
    gated_fini(&g);
    destroy_pool(pool);
}
END_TEST

/* nursery_start() into a full nursery: the task waits; a deadline gives up
 * on it at once, as on a queued task; with room it starts. */
struct limited_start {
    nursery_t *n;
    atomic_int destroyed;
    int rc;
    nursery_result_t *done;
    latch_t returned;
};

static int start_me(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_started(INT2PTR(3));
}

static void start_me_destroyed(void *arg)
{
    atomic_fetch_add(&((struct limited_start *)arg)->destroyed, 1);
}

static void *start_with_short_deadline(void *arg)
{
    struct limited_start *ls = arg;
    nursery_task_options_t o = {.arg_destroy = start_me_destroyed};
    ls->rc = nursery_start(ls->n, start_me, ls, &o, nursery_after_ms(20), NULL, &ls->done);
    latch_count_down(&ls->returned);
    return NULL;
}

START_TEST(limit_applies_to_start)
{
    nursery_pool_t *pool = test_pool(3);
    struct gated g;
    nursery_result_t *holder = NULL;
    nursery_t *n = full_nursery(pool, &g, &holder);
    struct limited_start ls = {.n = n, .rc = -1};
    latch_init(&ls.returned, 1);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, start_with_short_deadline, &ls), 0);
    bool returned = latch_wait_ms(&ls.returned, 10000);
    gate_open(g.gate); /* so that nothing hangs, whatever happened */
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(returned, "nursery_start did not give up at its deadline");
    ck_assert_int_eq(ls.rc, ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&ls.destroyed), 1);
    assert_failed(ls.done, ECANCELED);
    nursery_result_release(ls.done);

    nursery_task_options_t o = {.arg_destroy = start_me_destroyed};
    void *v = NULL;
    nursery_result_t *done = NULL;
    /* Bounded, so that a lost slot fails here rather than hangs. */
    int rc = nursery_start(n, start_me, &ls, &o, nursery_after_ms(10000), &v, &done);
    ck_assert_msg(rc != ETIMEDOUT, "no slot freed after a start gave up on a waiting task");
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_eq(v, INT2PTR(3));
    nursery_errors_t *errs = INT2PTR(1);
    /* Bounded, so that lost accounting fails here rather than hangs. */
    rc = nursery_join(n, nursery_after_ms(10000), &errs);
    ck_assert_msg(rc != ETIMEDOUT, "join never ends after a start gave up on a waiting task");
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_null(errs);
    ck_assert_int_eq(atomic_load(&ls.destroyed), 2);
    assert_value(done, 0);
    nursery_result_release(done);
    nursery_result_release(holder);
    latch_destroy(&ls.returned);
    gated_fini(&g);
    destroy_pool(pool);
}
END_TEST

#define BACKLOG 5

START_TEST(cancel_ends_waiting_tasks_cancelled)
{
    nursery_pool_t *pool = test_pool(2);
    for (int failing = 0; failing < 2; failing++) {
        struct gated g;
        nursery_result_t *holder = NULL;
        nursery_t *n = full_nursery(pool, &g, &holder);
        atomic_int destroyed = 0;
        nursery_task_options_t o = {.arg_destroy = count_call};
        for (int i = 0; i < BACKLOG; i++)
            ck_assert_int_eq(nursery_start_soon(n, count_task, &destroyed, &o), 0);
        if (failing)
            ck_assert_int_eq(nursery_fail(EIO, "body"), EIO);
        else
            ck_assert_int_eq(nursery_cancel(n), 0);
        nursery_errors_t *errs = NULL;
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), failing ? NURSERY_EFAILED : 0);
        ck_assert_ptr_nonnull(errs);
        ck_assert_uint_eq(nursery_errors_count(errs), failing ? 1 : 0);
        ck_assert_uint_eq(nursery_errors_cancelled(errs), BACKLOG + 1);
        nursery_errors_free(errs);
        ck_assert_int_eq(atomic_load(&destroyed), BACKLOG); /* destroyed, never ran */
        assert_failed(holder, ECANCELED);
        nursery_result_release(holder);
        gated_fini(&g);
    }
    destroy_pool(pool);
}
END_TEST

static Suite *nursery_suite(void)
{
    Suite *s = suite_create("nursery");
    TCase *tc = tcase_with_timeout(s, "basics", 60);
    tcase_add_test(tc, open_and_join_empty_nursery);
    tcase_add_test(tc, start_soon_runs_every_task_exactly_once);
    tcase_add_test(tc, start_soon_never_runs_task_in_caller);
    tcase_add_test(tc, run_calls_body_then_joins);

    tc = tcase_with_timeout(s, "nesting", 60);
    tcase_add_test(tc, tasks_start_tasks_in_own_and_outer_nurseries);
    tcase_add_test(tc, nurseries_nest_eight_levels_deep);
    tcase_add_test(tc, recursive_fan_out_completes_on_one_thread);
    tcase_add_test(tc, starts_from_tasks_the_joiner_runs_are_counted);
    tcase_add_test(tc, join_that_times_out_gives_back_counted_starts);
    ADD_CASE(s, joining_100000_nested_nurseries_is_linear, 30);
    ADD_CASE(s, worker_join_checks_deadline_between_tasks_it_runs, 30);

    tc = tcase_with_timeout(s, "failures", 60);
    tcase_add_test(tc, first_error_cancels_queued_tasks);
    tcase_add_test(tc, join_reports_primary_error_first_then_arrival_order);
    tcase_add_test(tc, error_group_is_capped);
    tcase_add_test(tc, suppressed_error_does_not_cancel_nursery);
    tcase_add_test(tc, body_sees_cancellation_after_task_fails);
    tcase_add_test(tc, body_error_counts_as_failure);
    tcase_add_test(tc, outer_cancel_reaches_inner_nursery_tasks);
    tcase_add_test(tc, body_fail_between_open_and_join_fails_the_nursery);
    tcase_add_test(tc, body_fail_with_is_the_primary_error);
    tcase_add_test(tc, run_body_failure_is_reported_once_whether_returned_or_not);
    tcase_add_test(tc, join_after_cancel_reports_cancelled_tasks_in_a_group);

    tc = tcase_with_timeout(s, "misuse", 60);
    tcase_add_test(tc, start_soon_on_joined_nursery_is_eclosed);
    tcase_add_test(tc, start_in_joined_nursery_of_destroyed_pool_is_eclosed);
    tcase_add_test(tc, null_arguments_are_einval);
    tcase_add_test(tc, join_by_other_thread_or_out_of_order_is_einval);
    tcase_add_test(tc, join_times_out_then_cancel_and_join);

    tc = tcase_with_timeout(s, "start", 60);
    tcase_add_test(tc, start_returns_started_value_while_task_runs);
    tcase_add_test(tc, start_reports_failure_before_started_to_caller);
    tcase_add_test(tc, start_of_task_returning_without_started_is_enotstarted);
    tcase_add_test(tc, started_twice_is_ealready);
    tcase_add_test(tc, started_outside_start_is_einval);
    tcase_add_test(tc, start_caller_cancelled_cancels_the_task);
    tcase_add_test(tc, start_deadline_passing_cancels_the_task);
    tcase_add_test(tc, capture_start_and_done_gives_both_results);
    ADD_CASE(s, start_gives_up_on_a_queued_task_at_once, 30);
    ADD_CASE(s, start_from_the_only_worker_runs_the_task_itself, 30);
    ADD_CASE(s, started_after_start_gave_up_is_ecanceled, 30);

    tc = tcase_with_timeout(s, "daemon_main", 60);
    tcase_add_loop_test(tc, flags_give_asyncgui_cm_forms, 0, FORMS * SCENARIOS);
    tcase_add_test(tc, run_body_return_cancels_daemons_only);
    tcase_add_test(tc, daemon_that_starts_a_plain_task);
    tcase_add_test(tc, main_task_by_start_counts_once_started);
    tcase_add_test(tc, unknown_task_flag_is_einval_and_destroys_the_arg);

    tc = tcase_with_timeout(s, "limit", 60);
    tcase_add_test(tc, limit_caps_the_tasks_running_at_once);
    tcase_add_test(tc, tasks_beyond_the_limit_wait_in_start_order);
    tcase_add_test(tc, start_limited_blocks_while_full_and_wakes_when_a_slot_frees);
    tcase_add_test(tc, start_limited_wakes_with_ecanceled_when_the_nursery_is_cancelled);
    tcase_add_test(tc, start_limited_timeouts_and_cancellation);
    tcase_add_test(tc, start_limited_from_a_task_of_the_nursery_waits_for_its_siblings);
    tcase_add_test(tc, try_start_is_eagain_when_full_and_keeps_the_arg);
    tcase_add_test(tc, try_start_with_room_starts_and_is_no_cancellation_point);
    tcase_add_test(tc, limit_calls_on_null_or_joined_nursery);
    tcase_add_test(tc, raising_or_removing_the_limit_admits_waiting_tasks);
    tcase_add_test(tc, lowering_the_limit_stops_nothing);
    tcase_add_test(tc, limit_applies_to_captures);
    tcase_add_test(tc, cancel_ends_waiting_tasks_cancelled);
    ADD_CASE(s, cancelling_a_waiting_capture, 30);
    ADD_CASE(s, limit_applies_to_start, 60);
    return s;
}

int main(void)
{
    return run_suite(nursery_suite());
}
