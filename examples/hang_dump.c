/* SPDX-License-Identifier: MIT */
/*
 * hang_dump.c - asking a program that hangs what it waits on.
 *
 * Two tasks, "ping" and "pong", in a nursery named "deadlock", each wait for
 * the other's future, and each would set its own only once its wait returns:
 * a deadlock, on purpose.  The program asks the library to dump its state on
 * SIGQUIT (nursery_dump_on_signal()), so that
 *
 *     kill -QUIT <pid>
 *
 * prints on its stderr every pool, nursery and task, and for each blocked
 * task what it waits in and on what (ping and pong: blocked_in=result).  Any
 * program gets the same without a line of code when started with
 * NURSERY_DUMP_SIGNAL=QUIT in its environment.
 *
 * The nursery has a deadline (--timeout SEC, 2 by default): when it passes,
 * the library cancels both waits, join returns NURSERY_EEXPIRED, and the
 * program says so and exits 0.
 *
 *     hang_dump --wait --timeout 60    waits for your kill -QUIT
 *     hang_dump                        (make check) sends SIGQUIT to itself
 */
#define _POSIX_C_SOURCE 200809L /* open_memstream, strdup, strtok_r */
#include <nursery.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct player {
    nursery_result_t *mine; /* set once the wait for theirs returns: never */
    nursery_result_t *theirs;
};

static int play(void *arg, void **value)
{
    struct player *p = arg;
    (void)value;
    int rc = nursery_result_wait(p->theirs, NURSERY_FOREVER);
    if (rc == 0)
        nursery_future_set_value(p->mine, NULL);
    return rc; /* ECANCELED, once the deadline has cancelled the nursery */
}

/* Whether a dump shows both tasks blocked in their waits. */
static bool deadlocked(const char *dump)
{
    int blocked = 0;
    char *copy = strdup(dump), *save = NULL;
    for (char *l = copy ? strtok_r(copy, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
        blocked += strstr(l, "task 0x") && strstr(l, " blocked_in=result") &&
                   (strstr(l, " name=\"ping\"") || strstr(l, " name=\"pong\""));
    free(copy);
    return blocked == 2;
}

/* The self-test raises SIGQUIT only once both tasks are blocked, so that its
 * dump shows the deadlock, not two tasks about to wait.  Nothing signals
 * that moment; a program can look, though (as one normally would not):
 * nursery_dump() into memory, every 10 ms, until the deadline. */
static bool wait_until_deadlocked(nursery_time_t deadline)
{
    const struct timespec pause = {0, 10 * 1000 * 1000};
    while (nursery_now() < deadline) {
        char *dump = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&dump, &size);
        if (f == NULL)
            return false;
        int rc = nursery_dump(f, 0);
        fclose(f);
        bool done = rc == 0 && deadlocked(dump);
        free(dump);
        if (done)
            return true;
        nanosleep(&pause, NULL);
    }
    return false;
}

int main(int argc, char **argv)
{
    bool wait = false;
    double timeout = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0) {
            wait = true;
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc && atof(argv[i + 1]) > 0) {
            timeout = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: hang_dump [--wait] [--timeout SEC]\n");
            return 2;
        }
    }

    struct player ping = {0}, pong = {0};
    nursery_time_t deadline = nursery_after_ms((int64_t)(timeout * 1000));
    nursery_t *n;
    int rc;
    if ((rc = nursery_future_create(&ping.mine)) != 0 ||
        (rc = nursery_future_create(&pong.mine)) != 0 ||
        (rc = nursery_dump_on_signal(SIGQUIT)) != 0 ||
        (rc = nursery_open_until(&n, NULL, deadline)) != 0) {
        fprintf(stderr, "hang_dump: %s\n", nursery_strerror(rc));
        return 1;
    }
    ping.theirs = pong.mine;
    pong.theirs = ping.mine;
    fprintf(stderr, "hang_dump: pid %ld; kill -QUIT %ld to see what it waits on\n", (long)getpid(),
            (long)getpid());
    nursery_set_name(n, "deadlock");
    nursery_task_options_t o1 = {.name = "ping"}, o2 = {.name = "pong"};
    bool ok = nursery_start_soon(n, play, &ping, &o1) == 0 &&
              nursery_start_soon(n, play, &pong, &o2) == 0;
    if (ok && !wait) {
        /* The dump thread writes the dump to stderr while this thread waits
         * for the deadline: what the program does and returns does not
         * depend on when (only the order of the lines in the log does). */
        ok = wait_until_deadlocked(deadline) && raise(SIGQUIT) == 0;
        printf("hang_dump: %s\n", ok ? "ping and pong are blocked: SIGQUIT raised"
                                     : "the dump never showed ping and pong blocked");
    }
    if (!ok)
        nursery_cancel(n);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    if (rc == NURSERY_EEXPIRED)
        printf("hang_dump: the deadline ended the deadlock\n");
    else
        fprintf(stderr, "hang_dump: join: %s\n", nursery_strerror(rc));
    nursery_dump_on_signal(0);
    nursery_result_release(ping.mine);
    nursery_result_release(pong.mine);
    return ok && rc == NURSERY_EEXPIRED ? 0 : 1;
}
