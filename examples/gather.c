/* SPDX-License-Identifier: MIT */
/*
 * gather.c - gather-style fan-out: one task per input, results read back in
 * input order (asyncio.gather, aioresult's ResultCapture).
 *
 * Counts the primes below one million, split into eight ranges.  Each range
 * gets its own task, started with nursery_capture_start_soon(), which hands
 * back a result object.  The tasks finish in any order; after nursery_join()
 * every result is done, so the counts are printed in the order of the inputs.
 * The program checks its own answer (each range is recounted here, in order,
 * and there are 78498 primes below 10^6) and exits 1 if anything is wrong.
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
    nursery_result_t *results[NRANGES] = {NULL};
    nursery_errors_t *errors = NULL;
    nursery_t *n;
    int status = 0;

    int rc = nursery_open(&n, NULL);
    if (rc != 0) {
        fprintf(stderr, "gather: nursery_open: %s\n", nursery_strerror(rc));
        return 1;
    }

    for (size_t i = 0; i < NRANGES; i++) {
        char name[48];
        ranges[i].lo = i * (LIMIT / NRANGES);
        ranges[i].hi = (i + 1) * (LIMIT / NRANGES);
        snprintf(name, sizeof name, "primes in [%lu, %lu)", ranges[i].lo, ranges[i].hi);
        nursery_task_options_t opts = {.name = name}; /* the name is copied */

        rc = nursery_capture_start_soon(n, count_primes, &ranges[i], &opts, &results[i]);
        if (rc != 0) {
            /* Nothing was queued for this one; the others are already
             * running, and a nursery is always joined, so stop them. */
            fprintf(stderr, "gather: start: %s\n", nursery_strerror(rc));
            nursery_cancel(n);
            status = 1;
            break;
        }
    }

    /* Join before reading anything: after it, every result is done and
     * everything the tasks wrote is visible here.  The ranges array, which
     * the tasks read, lives on this stack until then. */
    rc = nursery_join(n, NURSERY_FOREVER, &errors);
    if (rc != 0) {
        fprintf(stderr, "gather: join: %s\n", nursery_strerror(rc));
        print_errors(errors);
        status = 1;
    }
    nursery_errors_free(errors);

    unsigned long total = 0;
    for (size_t i = 0; i < NRANGES && results[i] != NULL; i++) {
        void *value;
        rc = nursery_result_value(results[i], &value);
        if (rc != 0) {
            fprintf(stderr, "gather: range %zu: %s\n", i, nursery_strerror(rc));
            status = 1;
            continue;
        }
        unsigned long count = (unsigned long)(uintptr_t)value;
        printf("primes in [%7lu, %7lu): %5lu\n", ranges[i].lo, ranges[i].hi, count);
        total += count;

        /* The check: the same count, done here without any task, must be
         * the one that came back in position i. */
        void *expected;
        if (count_primes(&ranges[i], &expected) != 0 || value != expected) {
            fprintf(stderr, "gather: range %zu: got %lu primes, expected %lu\n", i, count,
                    (unsigned long)(uintptr_t)expected);
            status = 1;
        }
    }
    printf("primes below %lu:       %5lu\n", LIMIT, total);

    for (size_t i = 0; i < NRANGES; i++)
        nursery_result_release(results[i]); /* NULL for the ones never started */

    if (total != PRIMES_BELOW_LIMIT) {
        fprintf(stderr, "gather: expected %d primes, counted %lu\n", PRIMES_BELOW_LIMIT, total);
        status = 1;
    }
    return status;
}
