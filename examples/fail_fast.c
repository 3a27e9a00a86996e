/* SPDX-License-Identifier: MIT */
/*
 * fail_fast.c - the first error cancels the rest; join reports an error group.
 *
 * A job runs six tasks in one nursery.  Four download from mirrors and an
 * upload sends a report, each blocked in a 60 second nursery_sleep(); a
 * sixth task fails at once, because its configuration file is missing.
 * That failure cancels the nursery: the sleepers wake up with ECANCELED, so
 * the program ends in milliseconds, not in a minute.  The upload, cut off,
 * fails in its turn with an error of its own.
 *
 * nursery_join() then returns NURSERY_EFAILED and an error group: the primary
 * error (the one that cancelled the nursery) first, the upload's error next,
 * and the four downloads only counted as cancelled, since "cancelled because
 * a sibling failed" is not a failure of their own.  Exits 0 when the group
 * is exactly that.
 */
#include <nursery.h>

#include <errno.h>
#include <stdio.h>

#define NDOWNLOADS 4
#define CONFIG_PATH "/etc/fail_fast-example.conf"

/* Tasks begun with nursery_start() say when they are running; the long
 * sleep stands for any blocking call that honours cancellation. */
static int download(void *arg, void **value)
{
    (void)arg;
    (void)value;
    int rc = nursery_started(NULL);
    if (rc != 0)
        return rc;
    return nursery_sleep(nursery_after_ms(60 * 1000)); /* ECANCELED when cancelled */
}

/* Cancellation is cooperative: the task sees it as ECANCELED and decides
 * what its outcome is.  This one reports the damage as a real error. */
static int upload(void *arg, void **value)
{
    (void)arg;
    (void)value;
    int rc = nursery_started(NULL);
    if (rc != 0)
        return rc;
    rc = nursery_sleep(nursery_after_ms(60 * 1000));
    if (rc == ECANCELED)
        return nursery_fail(EIO, "interrupted, report.txt left half-written");
    return rc;
}

static int read_config(void *arg, void **value)
{
    (void)value;
    const char *path = arg;
    return nursery_fail(ENOENT, "cannot read %s", path);
}

static void print_error(const char *label, const nursery_error_t *e)
{
    const char *name = nursery_error_task_name(e);
    printf("%s%s: %s (%s)\n", label, name ? name : "(body)", nursery_error_message(e),
           nursery_strerror(nursery_error_code(e)));
}

int main(void)
{
    nursery_errors_t *errors = NULL;
    nursery_t *n;
    int status = 0;

    nursery_time_t begin = nursery_now();
    int rc = nursery_open(&n, NULL);
    if (rc != 0) {
        fprintf(stderr, "fail_fast: nursery_open: %s\n", nursery_strerror(rc));
        return 1;
    }

    /* nursery_start() returns once the task is running, so every sleeper is
     * surely at work before the failing task begins: the demonstration has
     * the same outcome on every run. */
    for (int i = 0; i <= NDOWNLOADS && status == 0; i++) {
        char name[32];
        if (i < NDOWNLOADS)
            snprintf(name, sizeof name, "download %d", i + 1);
        else
            snprintf(name, sizeof name, "upload");
        nursery_task_options_t opts = {.name = name};
        rc = nursery_start(n, i < NDOWNLOADS ? download : upload, NULL, &opts,
                           nursery_after_ms(10 * 1000), NULL, NULL);
        if (rc != 0) {
            fprintf(stderr, "fail_fast: start %s: %s\n", name, nursery_strerror(rc));
            status = 1;
        }
    }
    if (status == 0) {
        nursery_task_options_t opts = {.name = "read config"};
        rc = nursery_start_soon(n, read_config, CONFIG_PATH, &opts);
        if (rc != 0) {
            fprintf(stderr, "fail_fast: start: %s\n", nursery_strerror(rc));
            status = 1;
        }
    }
    if (status != 0)
        nursery_cancel(n); /* don't wait a minute for the sleepers */

    rc = nursery_join(n, NURSERY_FOREVER, &errors);
    double seconds = (double)(nursery_now() - begin) / 1e9;
    printf("join: %s, after %.1f ms\n", nursery_strerror(rc), seconds * 1000);

    /* The group: primary error first, then the others in arrival order. */
    nursery_error_t *primary = nursery_errors_get(errors, 0);
    if (primary != NULL)
        print_error("primary error: ", primary);
    for (size_t i = 1; i < nursery_errors_count(errors); i++)
        print_error("other error:   ", nursery_errors_get(errors, i));
    printf("cancelled:     %zu tasks\n", nursery_errors_cancelled(errors));
    if (nursery_errors_dropped(errors) != 0)
        printf("not listed:    %zu more errors\n", nursery_errors_dropped(errors));

    if (rc != NURSERY_EFAILED || primary == NULL || nursery_error_code(primary) != ENOENT) {
        fprintf(stderr, "fail_fast: expected join to fail with ENOENT first\n");
        status = 1;
    } else if (nursery_errors_count(errors) != 2 ||
               nursery_error_code(nursery_errors_get(errors, 1)) != EIO ||
               nursery_errors_cancelled(errors) != NDOWNLOADS) {
        fprintf(stderr, "fail_fast: expected one more error (EIO) and %d cancelled tasks\n",
                NDOWNLOADS);
        status = 1;
    } else if (seconds > 30) {
        fprintf(stderr, "fail_fast: the sleepers were not cancelled\n");
        status = 1;
    }
    nursery_errors_free(errors);
    return status;
}
