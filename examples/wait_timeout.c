/* SPDX-License-Identifier: MIT */
/*
 * wait_timeout.c - asyncio's wait() with a timeout, in C: what is done and
 * what is pending when the time is up, and the pending ones cancelled.
 *
 * Three phases start; phase i sleeps 0.1 * i seconds.  The main thread
 * waits 0.1 s for all of them with nursery_wait(), which gives back the
 * partition: on an unhurried machine "1 completed and 2 pending".  A
 * deadline is not a failure of the wait and cancels nothing, so the main
 * thread cancels the pending phases itself, with nursery_result_cancel();
 * each sees the cancellation in its sleep and says so.  The nursery is then
 * joined: structured concurrency leaves nothing running behind.
 *
 * The program checks what does not depend on timing (every phase either
 * finished or was cancelled, the partition adds up, the joined nursery
 * reports no failure) and exits 1 if anything is wrong; how many phases
 * finished in 0.1 s depends on the machine, and is only printed.
 */
#include <nursery.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>

#define NPHASES 3

static int phase(void *arg, void **value)
{
    intptr_t i = (intptr_t)arg;
    printf("in phase %ld\n", (long)i);
    int rc = nursery_sleep(nursery_after_ms(100 * i));
    if (rc == ECANCELED) {
        printf("phase %ld canceled\n", (long)i);
        return rc; /* a cancelled task ends cancelled: not a failure */
    }
    printf("done with phase %ld\n", (long)i);
    static const char *const answers[NPHASES] = {"phase 0 result", "phase 1 result",
                                                 "phase 2 result"};
    *value = (void *)answers[i];
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* the phases print from their threads */
    printf("starting main\n");
    nursery_t *n;
    int rc = nursery_open(&n, NULL);
    if (rc) {
        fprintf(stderr, "wait_timeout: nursery_open: %s\n", nursery_strerror(rc));
        return 1;
    }
    /* The 0.1 s run from before the phases start, as asyncio's timeout. */
    nursery_time_t deadline = nursery_after_ms(100);
    nursery_result_t *phases[NPHASES] = {NULL};
    int status = 0;
    for (intptr_t i = 0; i < NPHASES && status == 0; i++) {
        rc = nursery_capture_start_soon(n, phase, (void *)i, NULL, &phases[i]);
        if (rc) {
            fprintf(stderr, "wait_timeout: start: %s\n", nursery_strerror(rc));
            nursery_cancel(n);
            status = 1;
        }
    }

    size_t order[NPHASES], ndone = 0;
    if (status == 0) {
        printf("waiting 0.1 for phases to complete\n");
        rc = nursery_wait(phases, NPHASES, deadline, NURSERY_ALL_COMPLETED, order, &ndone);
        if (rc != 0 && rc != ETIMEDOUT) {
            fprintf(stderr, "wait_timeout: nursery_wait: %s\n", nursery_strerror(rc));
            status = 1;
        }
    }
    if (status == 0) {
        printf("%zu completed and %zu pending\n", ndone, NPHASES - ndone);
        if (ndone < NPHASES)
            printf("canceling tasks\n");
        for (size_t k = ndone; k < NPHASES; k++) /* the pending ones */
            nursery_result_cancel(phases[order[k]]); /* EALREADY if it just finished */
    }

    nursery_errors_t *errors = NULL;
    rc = nursery_join(n, NURSERY_FOREVER, &errors);
    if (rc != 0) {
        fprintf(stderr, "wait_timeout: join: %s\n", nursery_strerror(rc));
        status = 1;
    }
    nursery_errors_free(errors);

    /* Every phase ended: finished with its answer, or cancelled. */
    for (size_t i = 0; i < NPHASES && phases[i]; i++) {
        void *value;
        nursery_error_t *err;
        if (nursery_result_value(phases[i], &value) == 0)
            continue;
        if (nursery_result_error(phases[i], &err) != 0 || nursery_error_code(err) != ECANCELED) {
            fprintf(stderr, "wait_timeout: phase %zu neither finished nor was cancelled\n", i);
            status = 1;
        }
    }
    for (size_t i = 0; i < NPHASES; i++)
        nursery_result_release(phases[i]);
    printf("exiting main\n");
    return status;
}
