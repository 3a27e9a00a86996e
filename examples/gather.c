/* SPDX-License-Identifier: MIT */
/*
 * gather.c - gather-style fan-out: one task per input, the values handed
 * back in input order (asyncio.gather).
 *
 * Counts the primes below one million, split into eight ranges.  Each range
 * is a branch of nursery_gather(), which runs them all as tasks of a
 * nursery of its own and puts what each came to in an array of outcomes, in
 * argument order, whatever order they finished in.  Without
 * NURSERY_RETURN_ERRORS it fails fast: a failing range would cancel the
 * others and come back in the error group.  The program checks its own
 * answer (each range is recounted here, in order, and there are 78498
 * primes below 10^6) and exits 1 if anything is wrong.
 */
#include <nursery.h>

#include <stdint.h>
#include <stdio.h>

#define NRANGES 8
#define LIMIT 1000000UL
#define PRIMES_BELOW_LIMIT 78498 /* pi(10^6) */

struct range {
    unsigned long lo, hi; /* [lo, hi) */
};

static bool is_prime(unsigned long n)
{
    if (n < 2)
        return false;
    for (unsigned long d = 2; d * d <= n; d++)
        if (n % d == 0)
            return false;
    return true;
}

/* The task: its value is the count itself, carried in the void * (no
 * allocation, so nothing for the reader to free). */
static int count_primes(void *arg, void **value)
{
    const struct range *r = arg;
    uintptr_t count = 0;

    for (unsigned long n = r->lo; n < r->hi; n++) {
        /* Pure computation never blocks in the library, so look for
         * cancellation now and then: if a sibling failed, stop early. */
        if (n % 4096 == 0) {
            int rc = nursery_checkpoint();
            if (rc != 0)
                return rc;
        }
        if (is_prime(n))
            count++;
    }
    *value = (void *)count;
    return 0;
}

static void print_errors(const nursery_errors_t *errors)
{
    for (size_t i = 0; i < nursery_errors_count(errors); i++) {
        const nursery_error_t *e = nursery_errors_get(errors, i);
        const char *name = nursery_error_task_name(e);
        fprintf(stderr, "gather:   %s: %s\n", name ? name : "(body)", nursery_error_message(e));
    }
}

int main(void)
{
    struct range ranges[NRANGES];
    char names[NRANGES][48];
    nursery_task_options_t opts[NRANGES];
    nursery_branch_t branches[NRANGES];
    for (size_t i = 0; i < NRANGES; i++) {
        ranges[i].lo = i * (LIMIT / NRANGES);
        ranges[i].hi = (i + 1) * (LIMIT / NRANGES);
        snprintf(names[i], sizeof names[i], "primes in [%lu, %lu)", ranges[i].lo, ranges[i].hi);
        opts[i] = (nursery_task_options_t){.name = names[i]};
        branches[i] = (nursery_branch_t){.fn = count_primes, .arg = &ranges[i], .opts = &opts[i]};
    }

    /* Returns once every branch has ended; the ranges, which the tasks
     * read, live on this stack until then. */
    nursery_outcome_t outcomes[NRANGES];
    nursery_errors_t *errors = NULL;
    int rc = nursery_gather(NULL, branches, NRANGES, 0, outcomes, &errors);
    if (rc != 0 && rc != NURSERY_EFAILED) {
        fprintf(stderr, "gather: %s\n", nursery_strerror(rc)); /* nothing ran */
        return 1;
    }
    int status = 0;
    if (rc == NURSERY_EFAILED) {
        fprintf(stderr, "gather: %s\n", nursery_strerror(rc));
        print_errors(errors);
        status = 1;
    }
    nursery_errors_free(errors);

    unsigned long total = 0;
    for (size_t i = 0; i < NRANGES; i++) {
        if (outcomes[i].code != 0) {
            fprintf(stderr, "gather: range %zu: %s\n", i, nursery_strerror(outcomes[i].code));
            status = 1;
            continue;
        }
        unsigned long count = (unsigned long)(uintptr_t)outcomes[i].value;
        printf("primes in [%7lu, %7lu): %5lu\n", ranges[i].lo, ranges[i].hi, count);
        total += count;

        /* The check: the same count, done here without any task, must be
         * the one that came back in position i. */
        void *expected;
        if (count_primes(&ranges[i], &expected) != 0 || outcomes[i].value != expected) {
            fprintf(stderr, "gather: range %zu: got %lu primes, expected %lu\n", i, count,
                    (unsigned long)(uintptr_t)expected);
            status = 1;
        }
    }
    printf("primes below %lu:       %5lu\n", LIMIT, total);
    nursery_outcomes_release(outcomes, NRANGES);

    if (total != PRIMES_BELOW_LIMIT) {
        fprintf(stderr, "gather: expected %d primes, counted %lu\n", PRIMES_BELOW_LIMIT, total);
        status = 1;
    }
    return status;
}
