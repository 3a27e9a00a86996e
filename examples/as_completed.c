/* SPDX-License-Identifier: MIT */
/*
 * as_completed.c - asyncio's as_completed() in C: results taken one at a
 * time, as they finish.
 *
 * Three phases start; phase i sleeps 0.5 - 0.1 * i seconds, so they finish
 * in the reverse order of their start.  An as_completed iterator over their
 * captures hands each one out as it completes, and the main thread prints
 * its answer at once, while the others still run.  The iterator registers
 * once on each result and sleeps until the next completion; it never polls.
 *
 * The program checks that every phase was handed out exactly once, with
 * the answer of that phase, and that the iterator then says NURSERY_EEND;
 * it exits 1 otherwise.  The order printed is the order of completion,
 * which the sleeps make 2, 1, 0 on an unhurried machine.
 */
#include <nursery.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define NPHASES 3

static const char *const answers[NPHASES] = {"phase 0 result", "phase 1 result",
                                             "phase 2 result"};

static int phase(void *arg, void **value)
{
    intptr_t i = (intptr_t)arg;
    printf("in phase %ld\n", (long)i);
    int rc = nursery_sleep(nursery_after_ms(500 - 100 * i));
    if (rc)
        return rc;
    printf("done with phase %ld\n", (long)i);
    *value = (void *)answers[i];
    return 0;
}

/* Takes the answers as they come.  Returns the number of problems. */
static int take_answers(nursery_result_t *const *phases)
{
    nursery_as_completed_t *it;
    int rc = nursery_as_completed_create(&it, phases, NPHASES, NURSERY_FOREVER);
    if (rc) {
        fprintf(stderr, "as_completed: create: %s\n", nursery_strerror(rc));
        return 1;
    }
    int problems = 0;
    bool seen[NPHASES] = {false};
    size_t i;
    nursery_result_t *r;
    printf("waiting for phases to complete\n");
    while ((rc = nursery_as_completed_next(it, &i, &r)) == 0) {
        void *answer = NULL;
        if (nursery_result_value(r, &answer) != 0 || seen[i] || strcmp(answer, answers[i]) != 0) {
            fprintf(stderr, "as_completed: phase %zu handed out wrong\n", i);
            problems++;
        } else {
            printf("received answer '%s'\n", (const char *)answer);
        }
        seen[i] = true;
        nursery_result_release(r); /* the iterator's reference, now ours */
    }
    if (rc != NURSERY_EEND) {
        fprintf(stderr, "as_completed: next: %s\n", nursery_strerror(rc));
        problems++;
    }
    nursery_as_completed_free(it);
    return problems;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* the phases print from their threads */
    printf("starting main\n");
    nursery_t *n;
    int rc = nursery_open(&n, NULL);
    if (rc) {
        fprintf(stderr, "as_completed: nursery_open: %s\n", nursery_strerror(rc));
        return 1;
    }
    nursery_result_t *phases[NPHASES] = {NULL};
    int problems = 0;
    for (intptr_t i = 0; i < NPHASES && problems == 0; i++) {
        rc = nursery_capture_start_soon(n, phase, (void *)i, NULL, &phases[i]);
        if (rc) {
            fprintf(stderr, "as_completed: start: %s\n", nursery_strerror(rc));
            nursery_cancel(n);
            problems++;
        }
    }
    if (problems == 0)
        problems += take_answers(phases);

    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    if (rc) {
        fprintf(stderr, "as_completed: join: %s\n", nursery_strerror(rc));
        problems++;
    }
    for (size_t i = 0; i < NPHASES; i++)
        nursery_result_release(phases[i]);
    return problems ? 1 : 0;
}
