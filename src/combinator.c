/* SPDX-License-Identifier: MIT */
/*
 * combinator.c - asyncgui's wait_any and wait_all over functions, and
 * their nesting.
 *
 * Both are one nursery with a capture per branch; wait_any gives every
 * branch NURSERY_TASK_MAIN, so the first to end cancels the others.  The
 * nursery's rules do the rest: a failure cancels the siblings and comes
 * back in the error group, and the cancellations the combinator causes are
 * the nursery's own, so they are not errors.  Nesting is a task that runs
 * a combinator: its error group travels as the payload of its error.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

static void destroy_args(const nursery_branch_t *branches, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (branches[i].opts && branches[i].opts->arg_destroy)
            branches[i].opts->arg_destroy(branches[i].arg);
}

static bool valid(const nursery_branch_t *branches, size_t n)
{
    if (!branches || n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        const nursery_task_options_t *o = branches[i].opts;
        if (!branches[i].fn || (o && (o->flags & ~(unsigned)TASK_USER_FLAGS)))
            return false;
    }
    return true;
}

/* Makes branch b's capture (nothing runs yet), with `flags` added to its
 * own. */
static int make_branch(const nursery_branch_t *b, unsigned flags, nursery_result_t **out)
{
    nursery_task_options_t opts = b->opts ? *b->opts : (nursery_task_options_t){0};
    opts.flags |= flags;
    return nursery_capture_create(out, b->fn, b->arg, &opts);
}

/* Every capture is made before any is started, so that when memory runs
 * out nothing has run. */
static int make_branches(const nursery_branch_t *branches, size_t count,
                         nursery_result_t **results, unsigned flags)
{
    for (size_t i = 0; i < count; i++) {
        int rc = make_branch(&branches[i], flags, &results[i]);
        if (rc) {
            /* Branch i's arg_destroy has run; the made ones run theirs
             * when released, never having run. */
            destroy_args(branches + i + 1, count - i - 1);
            for (size_t j = 0; j < i; j++) {
                nursery_result_release(results[j]);
                results[j] = NULL;
            }
            return rc;
        }
    }
    return 0;
}

static int run_branches(nursery_pool_t *pool, const nursery_branch_t *branches, size_t count,
                        nursery_result_t **results, nursery_errors_t **errors, unsigned flags)
{
    if (errors)
        *errors = NULL;
    if (results)
        for (size_t i = 0; i < count; i++)
            results[i] = NULL;
    if (!results || !valid(branches, count))
        return EINVAL;
    int rc = make_branches(branches, count, results, flags);
    if (rc)
        return rc;
    nursery_t *n = NULL;
    rc = nursery_open(&n, pool);
    if (rc) {
        for (size_t i = 0; i < count; i++) {
            nursery_result_release(results[i]); /* runs its arg_destroy */
            results[i] = NULL;
        }
        return rc;
    }
    /* A fresh nursery of ours takes them all (it is open, and of this
     * side of any fork). */
    for (size_t i = 0; i < count; i++)
        nursery__capture_submit(n, results[i]);
    return nursery_join(n, NURSERY_FOREVER, errors);
}

int nursery_run_any(nursery_pool_t *pool, const nursery_branch_t *branches, size_t n,
                    nursery_result_t **results, nursery_errors_t **errors)
{
    return run_branches(pool, branches, n, results, errors, NURSERY_TASK_MAIN);
}

int nursery_run_all(nursery_pool_t *pool, const nursery_branch_t *branches, size_t n,
                    nursery_result_t **results, nursery_errors_t **errors)
{
    return run_branches(pool, branches, n, results, errors, 0);
}

/* ---- asyncio's gather --------------------------------------------------- */

/* Up to this many branches are gathered without allocating. */
#define INLINE_BRANCHES 16

int nursery_gather(nursery_pool_t *pool, const nursery_branch_t *branches, size_t n,
                   unsigned flags, nursery_outcome_t *outcomes, nursery_errors_t **errors)
{
    if (errors)
        *errors = NULL;
    if ((flags & ~(unsigned)NURSERY_RETURN_ERRORS) || (n && !outcomes) ||
        (n && !valid(branches, n)))
        return EINVAL;
    if (n == 0)
        return nursery_checkpoint();
    nursery_result_t *inline_results[INLINE_BRANCHES];
    nursery_result_t **results = inline_results;
    if (n > INLINE_BRANCHES && !(results = malloc(n * sizeof(*results)))) {
        destroy_args(branches, n);
        return ENOMEM;
    }
    /* Fail-fast is the nursery's own rule; return_exceptions keeps each
     * failure to its capture. */
    unsigned task_flags = flags & NURSERY_RETURN_ERRORS ? NURSERY_TASK_SUPPRESS_ERROR : 0;
    int rc = run_branches(pool ? pool : nursery__pool_current(), branches, n, results, errors,
                          task_flags);
    if (results[0]) { /* they were run: all are set, and done */
        for (size_t i = 0; i < n; i++) {
            nursery__outcome_of(results[i], &outcomes[i]);
            nursery_result_release(results[i]);
        }
    }
    if (results != inline_results)
        free(results);
    return rc;
}

/* ---- nesting ----------------------------------------------------------- */

static void free_group(void *group)
{
    nursery_errors_free(group);
}

int nursery_run_combinator(void *arg, void **value)
{
    (void)value;
    const nursery_combinator_t *c = arg;
    if (!c)
        return EINVAL;
    nursery_errors_t *group = NULL;
    int rc = run_branches(nursery__pool_current(), c->branches, c->n, c->results, &group,
                          c->any ? NURSERY_TASK_MAIN : 0);
    if (rc != NURSERY_EFAILED) {
        nursery_errors_free(group);
        return rc;
    }
    nursery_error_t *err = NULL;
    size_t failed = nursery_errors_count(group);
    if (nursery_error_create(&err, NURSERY_EFAILED, "%zu branch%s failed", failed,
                             failed == 1 ? "" : "es") != 0) {
        nursery_errors_free(group); /* no memory to carry it: the code says enough */
        return rc;
    }
    nursery_error_set_payload(err, group, free_group);
    return nursery_fail_with(err);
}
