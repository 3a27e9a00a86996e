/* SPDX-License-Identifier: MIT */
/*
 * test_error.c - error objects, nursery_fail(), error groups, strerror.
 */
#include "helpers.h"

#include <string.h>

/* Runs fn(arg) as the only task of a nursery on a fresh pool; returns
 * join's code and the group. */
static int run_one(nursery_fn fn, void *arg, const nursery_task_options_t *opts,
                   nursery_errors_t **errors)
{
    nursery_pool_t *pool = test_pool(2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, fn, arg, opts), 0);
    int rc = nursery_join(n, NURSERY_FOREVER, errors);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
    return rc;
}

/* ---- error objects ----------------------------------------------------- */

START_TEST(error_create_rejects_null_out_and_zero_code)
{
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_error_create(NULL, EIO, "x"), EINVAL);
    ck_assert_int_eq(nursery_error_create(&err, 0, "x"), EINVAL);
    ck_assert_ptr_null(err);
}
END_TEST

START_TEST(error_create_formats_message)
{
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_error_create(&err, EIO, "cannot read %s: %d", "a.txt", 42), 0);
    ck_assert_ptr_nonnull(err);
    ck_assert_int_eq(nursery_error_code(err), EIO);
    ck_assert_str_eq(nursery_error_message(err), "cannot read a.txt: 42");
    ck_assert_ptr_null(nursery_error_task_name(err));
    ck_assert_ptr_null(nursery_error_payload(err));
    nursery_error_release(err);

    /* A message longer than any fixed buffer is kept whole. */
    static char big[5001];
    memset(big, 'x', sizeof(big) - 1);
    ck_assert_int_eq(nursery_error_create(&err, NURSERY_EFAILED, "<%s>", big), 0);
    ck_assert_uint_eq(strlen(nursery_error_message(err)), 5002);
    ck_assert_int_eq(nursery_error_code(err), NURSERY_EFAILED);
    nursery_error_release(err);
}
END_TEST

START_TEST(error_create_without_format_uses_strerror)
{
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_error_create(&err, ETIMEDOUT, NULL), 0);
    ck_assert_str_eq(nursery_error_message(err), nursery_strerror(ETIMEDOUT));
    nursery_error_release(err);

    ck_assert_int_eq(nursery_error_create(&err, NURSERY_EEOC, NULL), 0);
    ck_assert_str_eq(nursery_error_message(err), nursery_strerror(NURSERY_EEOC));
    nursery_error_release(err);
}
END_TEST

START_TEST(error_payload_destroyed_once_at_last_release)
{
    atomic_int destroyed = 0;
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_error_create(&err, EPROTO, "with payload"), 0);
    ck_assert_int_eq(nursery_error_set_payload(err, &destroyed, count_call), 0);
    ck_assert_ptr_eq(nursery_error_payload(err), &destroyed);

    ck_assert_ptr_eq(nursery_error_retain(err), err);
    ck_assert_ptr_eq(nursery_error_retain(err), err);
    nursery_error_release(err);
    nursery_error_release(err);
    ck_assert_int_eq(atomic_load(&destroyed), 0);
    ck_assert_int_eq(nursery_error_code(err), EPROTO); /* still alive */
    nursery_error_release(err);
    ck_assert_int_eq(atomic_load(&destroyed), 1);

    /* NULL is accepted by both. */
    ck_assert_ptr_null(nursery_error_retain(NULL));
    nursery_error_release(NULL);
}
END_TEST

START_TEST(error_set_payload_twice_is_ealready)
{
    int a = 1, b = 2;
    nursery_error_t *err = NULL;
    ck_assert_int_eq(nursery_error_set_payload(NULL, &a, NULL), EINVAL);
    ck_assert_int_eq(nursery_error_create(&err, EIO, NULL), 0);
    ck_assert_int_eq(nursery_error_set_payload(err, &a, NULL), 0);
    ck_assert_int_eq(nursery_error_set_payload(err, &b, NULL), EALREADY);
    ck_assert_ptr_eq(nursery_error_payload(err), &a);
    nursery_error_release(err);
}
END_TEST

/* ---- failing tasks ----------------------------------------------------- */

static int fail_reading(void *arg, void **value)
{
    (void)value;
    int rc = nursery_fail(EIO, "cannot read %s", (const char *)arg);
    task_expect_eq(rc, EIO);
    nursery_error_t *last = nursery_last_error();
    task_expect(last != NULL);
    task_expect_eq(nursery_error_code(last), EIO);
    task_expect(strcmp(nursery_error_message(last), "cannot read in.txt") == 0);
    return rc;
}

START_TEST(fail_in_task_reaches_join_group_with_task_name)
{
    nursery_task_options_t opts = {.name = "reader"};
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(run_one(fail_reading, "in.txt", &opts, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 0);
    nursery_error_t *err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), EIO);
    ck_assert_str_eq(nursery_error_message(err), "cannot read in.txt");
    ck_assert_ptr_nonnull(nursery_error_task_name(err));
    ck_assert_str_eq(nursery_error_task_name(err), "reader");
    nursery_errors_free(errs);
}
END_TEST

static int return_eperm(void *arg, void **value)
{
    (void)arg;
    *value = INT2PTR(5); /* a failing task's value is not kept */
    return EPERM;
}

START_TEST(task_returning_code_fails_with_plain_error)
{
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(run_one(return_eperm, NULL, NULL, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    nursery_error_t *err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), EPERM);
    ck_assert_ptr_nonnull(nursery_error_message(err));
    ck_assert_str_eq(nursery_error_message(err), nursery_strerror(EPERM));
    ck_assert_ptr_null(nursery_error_task_name(err)); /* the task had no name */
    nursery_errors_free(errs);
}
END_TEST

static int fail_with_payload(void *arg, void **value)
{
    (void)value;
    nursery_error_t *err = NULL;
    task_expect_eq(nursery_error_create(&err, EBADMSG, "bad record %d", 7), 0);
    task_expect_eq(nursery_error_set_payload(err, arg, count_call), 0);
    task_expect_eq(nursery_fail_with(NULL), EINVAL);
    return nursery_fail_with(err);
}

START_TEST(fail_with_custom_error_keeps_payload)
{
    atomic_int destroyed = 0;
    nursery_task_options_t opts = {.name = "parser"};
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(run_one(fail_with_payload, &destroyed, &opts, &errs), NURSERY_EFAILED);
    ck_assert_tasks_ok();
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    nursery_error_t *err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), EBADMSG);
    ck_assert_str_eq(nursery_error_message(err), "bad record 7");
    ck_assert_ptr_eq(nursery_error_payload(err), &destroyed);
    ck_assert_ptr_nonnull(nursery_error_task_name(err));
    ck_assert_str_eq(nursery_error_task_name(err), "parser");
    ck_assert_int_eq(atomic_load(&destroyed), 0);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&destroyed), 1);
}
END_TEST

/* A helper deep in a task's call chain fails; the task passes the code up. */
static int open_config(void)
{
    return nursery_fail(ENOENT, "no config in %s", "/etc/x");
}

static int propagate_code(void *arg, void **value)
{
    (void)value;
    int rc = open_config();
    if (arg) /* return a different code: the recorded error does not apply */
        return EIO;
    return rc;
}

START_TEST(last_error_propagates_when_code_matches)
{
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(run_one(propagate_code, NULL, NULL, &errs), NURSERY_EFAILED);
    nursery_error_t *err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), ENOENT);
    ck_assert_str_eq(nursery_error_message(err), "no config in /etc/x");
    nursery_errors_free(errs);

    ck_assert_int_eq(run_one(propagate_code, INT2PTR(1), NULL, &errs), NURSERY_EFAILED);
    err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), EIO);
    ck_assert_str_ne(nursery_error_message(err), "no config in /etc/x");
    nursery_errors_free(errs);
}
END_TEST

static int expect_no_last_error(void *arg, void **value)
{
    (void)arg;
    (void)value;
    task_expect(nursery_last_error() == NULL);
    return 0;
}

static void *last_error_in_thread(void *arg)
{
    (void)arg;
    return nursery_last_error();
}

START_TEST(last_error_is_null_in_fresh_thread_and_task)
{
    pthread_t t;
    void *seen = INT2PTR(1);
    ck_assert_int_eq(pthread_create(&t, NULL, last_error_in_thread, NULL), 0);
    ck_assert_int_eq(pthread_join(t, &seen), 0);
    ck_assert_ptr_null(seen);

    /* A task starts with no last error, even on a thread where an earlier
     * task failed. */
    nursery_pool_t *pool = test_pool(1);
    for (int i = 0; i < 2; i++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, pool), 0);
        nursery_task_options_t quiet = {.flags = NURSERY_TASK_SUPPRESS_ERROR};
        ck_assert_int_eq(nursery_start_soon(n, fail_reading, "in.txt", &quiet), 0);
        ck_assert_int_eq(nursery_start_soon(n, expect_no_last_error, NULL, NULL), 0);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    }
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
    ck_assert_tasks_ok();
}
END_TEST

static int failing_body(nursery_t *n, void *arg)
{
    (void)n;
    return nursery_fail(EIO, "body failed at step %d", *(int *)arg);
}

START_TEST(body_fail_is_reported_by_join)
{
    nursery_pool_t *pool = test_pool(1);
    int step = 3;
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_run(pool, failing_body, &step, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    nursery_error_t *err = nursery_errors_get(errs, 0);
    ck_assert_int_eq(nursery_error_code(err), EIO);
    ck_assert_str_eq(nursery_error_message(err), "body failed at step 3");
    nursery_errors_free(errs);
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}
END_TEST

/* ---- strerror and groups ----------------------------------------------- */

START_TEST(strerror_describes_every_code)
{
    const int codes[] = {NURSERY_ENOTDONE,
                         NURSERY_EFAILED,
                         NURSERY_ECLOSED,
                         NURSERY_ENOTSTARTED,
                         NURSERY_EEOC,
                         NURSERY_EFORKED,
                         EINVAL,
                         ENOMEM,
                         EAGAIN,
                         ETIMEDOUT,
                         ECANCELED,
                         EPIPE,
                         EDEADLK,
                         EALREADY,
                         EBUSY};
    const size_t n = sizeof(codes) / sizeof(codes[0]);
    const char *unknown = nursery_strerror(NURSERY_ELAST);
    ck_assert_ptr_nonnull(unknown);
    for (size_t i = 0; i < n; i++) {
        const char *s = nursery_strerror(codes[i]);
        ck_assert_msg(s != NULL && s[0] != '\0', "code %d has no description", codes[i]);
        ck_assert_msg(strcmp(s, unknown) != 0, "code %d described as unknown: %s", codes[i], s);
        for (size_t j = 0; j < i; j++)
            ck_assert_msg(strcmp(s, nursery_strerror(codes[j])) != 0,
                          "codes %d and %d share the description \"%s\"", codes[i], codes[j], s);
    }
    /* Codes nobody returns still get a string. */
    ck_assert_ptr_nonnull(nursery_strerror(-1));
    ck_assert_ptr_nonnull(nursery_strerror(NURSERY_EBASE));
    ck_assert_ptr_nonnull(nursery_strerror(INT32_MAX));
    ck_assert_ptr_nonnull(nursery_strerror(0));
}
END_TEST

START_TEST(errors_group_accessors_accept_null)
{
    ck_assert_uint_eq(nursery_errors_count(NULL), 0);
    ck_assert_ptr_null(nursery_errors_get(NULL, 0));
    ck_assert_uint_eq(nursery_errors_dropped(NULL), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(NULL), 0);
    nursery_errors_free(NULL);

    /* Out of range on a real group is NULL too. */
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(run_one(return_eperm, NULL, NULL, &errs), NURSERY_EFAILED);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_ptr_nonnull(nursery_errors_get(errs, 0));
    ck_assert_ptr_null(nursery_errors_get(errs, 1));
    ck_assert_ptr_null(nursery_errors_get(errs, SIZE_MAX));
    nursery_errors_free(errs);
}
END_TEST

static Suite *error_suite(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_with_timeout(s, "objects", 60);
    tcase_add_test(tc, error_create_rejects_null_out_and_zero_code);
    tcase_add_test(tc, error_create_formats_message);
    tcase_add_test(tc, error_create_without_format_uses_strerror);
    tcase_add_test(tc, error_payload_destroyed_once_at_last_release);
    tcase_add_test(tc, error_set_payload_twice_is_ealready);

    tc = tcase_with_timeout(s, "tasks", 60);
    tcase_add_test(tc, fail_in_task_reaches_join_group_with_task_name);
    tcase_add_test(tc, task_returning_code_fails_with_plain_error);
    tcase_add_test(tc, fail_with_custom_error_keeps_payload);
    tcase_add_test(tc, last_error_propagates_when_code_matches);
    tcase_add_test(tc, last_error_is_null_in_fresh_thread_and_task);
    tcase_add_test(tc, body_fail_is_reported_by_join);

    tc = tcase_with_timeout(s, "groups", 60);
    tcase_add_test(tc, strerror_describes_every_code);
    tcase_add_test(tc, errors_group_accessors_accept_null);
    return s;
}

int main(void)
{
    return run_suite(error_suite());
}
