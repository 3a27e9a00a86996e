/* SPDX-License-Identifier: MIT */
/*
 * race.c - two strategies for one answer, raced: the first to finish wins and
 * the loser is cancelled, the whole race under an overall timeout
 * (nursery_run_any, a cancel scope with NURSERY_SCOPE_FAIL_ON_DEADLINE).
 *
 * The question is how many primes lie below N.  One strategy asks a table on
 * a (simulated) server, which answers after a network delay spent in
 * nursery_sleep(); the other counts them, calling nursery_checkpoint() now
 * and then.  Both are cancellable, so whichever ends first cancels the other
 * at once.  Each race runs in a scope with a deadline (Trio's fail_after):
 * when neither strategy answers in time, the deadline cancels both, and
 * nursery_scope_close() says so with ETIMEDOUT.  Three races: the table
 * wins, the count wins, and nobody wins in time.  Exits 0 when every race
 * ended as expected, with the right answer and the loser cancelled.
 */
#include <nursery.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#define TIMEOUT_MS 500

struct query {
    unsigned long below; /* count the primes below this */
    int table_ms;        /* how long the table takes to answer */
    int winner;          /* expected: 0 the table, 1 the count, -1 nobody in time */
};

/* The server's table of pi(N), the primes below N (0: not in it). */
static uintptr_t table(unsigned long below)
{
    return below == 10000 ? 1229 : below == 10000000 ? 664579 : below == 100000000 ? 5761455 : 0;
}

static int ask_table(void *arg, void **value)
{
    const struct query *q = arg;
    int rc = nursery_sleep(nursery_after_ms(q->table_ms)); /* the round trip */
    if (rc != 0)
        return rc; /* ECANCELED: the count won, or the time is up */
    if (table(q->below) == 0)
        return nursery_fail(ENOENT, "pi(%lu) is not in the table", q->below);
    *value = (void *)table(q->below);
    return 0;
}

static bool is_prime(unsigned long n)
{
    for (unsigned long d = 2; d * d <= n; d++)
        if (n % d == 0)
            return false;
    return n >= 2;
}

static int count(void *arg, void **value)
{
    const struct query *q = arg;
    uintptr_t primes = 0;
    for (unsigned long n = 2; n < q->below; n++) {
        int rc = n % 1024 == 0 ? nursery_checkpoint() : 0; /* pure CPU work: look now and then */
        if (rc != 0)
            return rc;
        primes += is_prime(n);
    }
    *value = (void *)primes;
    return 0;
}

static const char *const names[2] = {"table", "count"};

/* Runs one race; returns 0 when it ended as q->winner says. */
static int race(const struct query *q)
{
    nursery_task_options_t opts[2] = {{.name = names[0]}, {.name = names[1]}};
    nursery_branch_t branches[2] = {{ask_table, (void *)q, &opts[0]}, {count, (void *)q, &opts[1]}};
    nursery_result_t *results[2];
    nursery_scope_t *timeout;

    int rc =
        nursery_scope_open(&timeout, nursery_after_ms(TIMEOUT_MS), NURSERY_SCOPE_FAIL_ON_DEADLINE);
    if (rc != 0) {
        fprintf(stderr, "race: nursery_scope_open: %s\n", nursery_strerror(rc));
        return 1;
    }
    /* ECANCELED when the scope's deadline cut the race short. */
    int raced = nursery_run_any(NULL, branches, 2, results, NULL);
    int closed = nursery_scope_close(timeout, NULL); /* ETIMEDOUT then */
    if (raced != 0 && raced != ECANCELED) {
        fprintf(stderr, "race: nursery_run_any: %s\n", nursery_strerror(raced));
        if (raced != NURSERY_EFAILED)
            return 1; /* no results */
    }

    int winner = -1, status = 0;
    printf("primes below %9lu:", q->below);
    for (int i = 0; i < 2; i++) {
        void *value;
        nursery_error_t *err = NULL;
        if (nursery_result_value(results[i], &value) == 0) {
            winner = i;
            printf(" %s won with %lu", names[i], (unsigned long)(uintptr_t)value);
            if ((uintptr_t)value != table(q->below))
                status = 1; /* the two strategies must agree */
        } else if (nursery_result_error(results[i], &err) == 0 &&
                   nursery_error_code(err) == ECANCELED) {
            printf(" %s cancelled", names[i]);
        } else {
            printf(" %s failed: %s", names[i], err ? nursery_error_message(err) : "?");
            status = 1;
        }
        putchar(i == 0 ? ';' : '\n');
        nursery_result_release(results[i]);
    }
    if (winner < 0)
        printf("  no answer within %d ms: %s\n", TIMEOUT_MS, nursery_strerror(closed));
    if (winner != q->winner ||
        (winner < 0 ? closed != ETIMEDOUT || raced != ECANCELED : closed != 0 || raced != 0))
        status = 1;
    return status;
}

int main(void)
{
    const struct query queries[] = {
        {10000000, 20, 0},     /* counting takes seconds: the table wins */
        {10000, 2000, 1},      /* a slow table, a quick count: the count wins */
        {100000000, 10000, -1} /* the table is down, counting takes minutes */
    };
    int status = 0;
    nursery_pool_t *pool;
    /* Start the default pool's threads now, so that the first race does not pay for it. */
    if (nursery_pool_default(&pool) != 0)
        return 1;
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++)
        if (race(&queries[i]) != 0) {
            fprintf(stderr, "race: race %zu did not end as expected\n", i + 1);
            status = 1;
        }
    return status;
}
