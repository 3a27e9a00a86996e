/* SPDX-License-Identifier: MIT */
/*
 * run_child.c - running a program under a deadline: wait for it with
 * nursery_child_wait(), and when cancelled, kill it and reap it anyway, in a
 * shielded scope, so that no zombie is left behind.
 *
 * A task starts `sleep 30` (fork and exec) and waits for it to end, in a
 * cancel scope whose deadline is 200 ms away (Trio's move_on_after).  When
 * it passes, the wait fails with ECANCELED, leaving the child running and
 * unreaped, as documented.  The task owns that child, so it kills it
 * (SIGKILL) and waits again; the scope is still cancelled, which would make
 * that wait fail at once, so it waits in a nested scope with
 * NURSERY_SCOPE_SHIELD (and a deadline of its own, in case the child cannot
 * be reaped).  Closing the deadline scope ends the cancellation there: the
 * task goes on, uncancelled, and succeeds.  Exits 0 when the child ended by
 * SIGKILL and waitpid(WNOHANG) finds no child left to reap (ECHILD).
 */
#include <nursery.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEADLINE_MS 200

struct child {
    pid_t pid;
    int status; /* as waitpid() sets it */
    bool reaped;
    bool timed_out; /* the deadline passed */
};

static int run_sleep(void *arg, void **value)
{
    struct child *c = arg;
    (void)value;

    c->pid = fork();
    if (c->pid < 0)
        return nursery_fail(errno, "fork: %s", strerror(errno));
    if (c->pid == 0) {
        /* Only async-signal-safe calls between fork and exec. */
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        pause(); /* no /bin/sleep: wait for the signal all the same */
        _exit(127);
    }
    printf("started sleep 30 as a child process\n");

    nursery_scope_t *deadline, *shield;
    int rc = nursery_scope_open(&deadline, nursery_after_ms(DEADLINE_MS), 0);
    if (rc == 0)
        rc = nursery_child_wait(c->pid, &c->status, NURSERY_FOREVER);
    printf("wait for it: %s\n", nursery_strerror(rc));
    if (rc == 0) {
        c->reaped = true; /* it ended early: nothing to clean up */
    } else {
        /* Cancelled (or failed): the child is still ours to end and reap. */
        kill(c->pid, SIGKILL);
        rc = nursery_scope_open(&shield, nursery_after_ms(5000), NURSERY_SCOPE_SHIELD);
        if (rc == 0) {
            rc = nursery_child_wait(c->pid, &c->status, NURSERY_FOREVER);
            c->reaped = rc == 0;
            nursery_scope_close(shield, NULL);
        }
        printf("killed and reaped it in a shield: %s\n", nursery_strerror(rc));
    }
    unsigned outcome = 0;
    if (deadline != NULL)
        nursery_scope_close(deadline, &outcome);
    c->timed_out = outcome & NURSERY_SCOPE_DEADLINE_PASSED;
    return rc;
}

int main(void)
{
    struct child c = {.pid = -1};
    nursery_errors_t *errors = NULL;
    nursery_t *n;
    int status = 0;

    int rc = nursery_open(&n, NULL);
    if (rc != 0) {
        fprintf(stderr, "run_child: nursery_open: %s\n", nursery_strerror(rc));
        return 1;
    }
    nursery_task_options_t opts = {.name = "sleep 30"};
    rc = nursery_start_soon(n, run_sleep, &c, &opts);
    if (rc != 0)
        fprintf(stderr, "run_child: start: %s\n", nursery_strerror(rc));
    rc = nursery_join(n, NURSERY_FOREVER, &errors);
    printf("join: %s; the deadline %s\n", nursery_strerror(rc),
           c.timed_out ? "passed" : "did not pass");
    if (rc != 0 || !c.timed_out)
        status = 1;
    nursery_errors_free(errors);

    if (c.reaped && WIFSIGNALED(c.status))
        printf("the child ended by signal %d (%s)\n", WTERMSIG(c.status),
               strsignal(WTERMSIG(c.status)));
    if (!c.reaped || !WIFSIGNALED(c.status) || WTERMSIG(c.status) != SIGKILL) {
        fprintf(stderr, "run_child: the child was not killed and reaped\n");
        status = 1;
    }

    /* No zombie: nothing is left to reap. */
    int st;
    errno = 0;
    pid_t left = c.pid > 0 ? waitpid(c.pid, &st, WNOHANG) : -1;
    printf("waitpid(WNOHANG) afterwards: %d (%s)\n", (int)left, strerror(errno));
    if (left != -1 || errno != ECHILD)
        status = 1;
    return status;
}
