/* SPDX-License-Identifier: MIT */
/*
 * job.c - one attempt of one job, in a task: spawn the command in a
 * process group of its own, drain its stdout and stderr as it writes them,
 * reap it.
 *
 * The attempt runs inside a cancel scope whose deadline is --timeout;
 * --halt now and a signal to npar cancel the same scope (runner.c keeps
 * the scopes of the live jobs).  However it is cancelled, a cancel hook
 * sends SIGTERM to the job's group at once, from the cancelling thread,
 * and the waits here (nursery_poll() on the pipes, nursery_child_wait())
 * return ECANCELED.  The job is then given --grace to end, in a shielded
 * scope so that the waits wait again, still draining what it writes as it
 * dies; after that its group gets SIGKILL.  Once a killed job's process is
 * reaped, whatever is left of its group (a grandchild that ignored
 * SIGTERM) gets SIGKILL too: the group cannot have been reused meanwhile,
 * since a group id is not given out again while the group has members.
 */
#include "npar.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* After SIGKILL, how long the job's pipes are still read for what its
 * group wrote before it died. */
#define LAST_READ_MS 100

/* The read ends of the job's stdout and stderr (-1 once at their end),
 * and with --line-buffer what has come of a line not yet whole. */
struct pipes {
    int fd[2];
    struct npar_buf pending[2];
};

static int64_t wall_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Starts the job with its stdout and stderr on the write ends of `out`
 * and `err`, stdin from /dev/null, in a new process group, with default
 * signal dispositions and none blocked (npar catches SIGINT and SIGTERM
 * and its workers block nothing the job should inherit).  Returns 0 or
 * the errno of the spawn (glibc and musl report a failed exec here). */
static int spawn(struct npar_job *j, int out, int err)
{
    posix_spawn_file_actions_t files;
    posix_spawnattr_t attr;
    sigset_t none, every;
    sigemptyset(&none);
    sigfillset(&every);
    int rc = posix_spawn_file_actions_init(&files);
    if (rc != 0)
        return rc;
    rc = posix_spawnattr_init(&attr);
    if (rc != 0)
        goto error1;
    if ((rc = posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0)) ||
        (rc = posix_spawn_file_actions_adddup2(&files, out, STDOUT_FILENO)) ||
        (rc = posix_spawn_file_actions_adddup2(&files, err, STDERR_FILENO)) ||
        (rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                  POSIX_SPAWN_SETSIGDEF)) ||
        (rc = posix_spawnattr_setpgroup(&attr, 0)) ||
        (rc = posix_spawnattr_setsigmask(&attr, &none)) ||
        (rc = posix_spawnattr_setsigdefault(&attr, &every)))
        goto error2;
    rc = posix_spawnp(&j->pid, j->argv[0], &files, &attr, j->argv, environ);
error2:
    posix_spawnattr_destroy(&attr);
error1:
    posix_spawn_file_actions_destroy(&files);
    return rc;
}

/* The cancel hook: runs once, in the thread that cancels the job's scope
 * (its deadline's thread for --timeout). */
static void terminate(void *arg)
{
    struct npar_job *j = arg;
    kill(-j->pid, SIGTERM);
}

/* Takes what the pipe i has; at its end (or on an error) closes it. */
static void read_pipe(struct npar_job *j, struct pipes *p, int i, bool line_buffer)
{
    char chunk[65536];
    ssize_t n = read(p->fd[i], chunk, sizeof chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n > 0) {
        j->received += (size_t)n;
        if (!line_buffer) {
            npar_buf_append(i == 0 ? &j->out : &j->err, chunk, (size_t)n);
            return;
        }
        npar_buf_append(&p->pending[i], chunk, (size_t)n);
    }
    if (line_buffer)
        npar_output_lines(npar_runner_output(j->runner), i == 0 ? STDOUT_FILENO : STDERR_FILENO,
                          &p->pending[i], n <= 0);
    if (n <= 0) {
        close(p->fd[i]);
        p->fd[i] = -1;
    }
}

/* Reads both pipes until both are at their end, until `deadline`. */
static int drain(struct npar_job *j, struct pipes *p, nursery_time_t deadline, bool line_buffer)
{
    while (p->fd[0] >= 0 || p->fd[1] >= 0) {
        struct pollfd fds[2] = {{p->fd[0], POLLIN, 0}, {p->fd[1], POLLIN, 0}};
        size_t ready;
        int rc = nursery_poll(fds, 2, deadline, &ready);
        if (rc != 0)
            return rc;
        for (int i = 0; i < 2; i++) {
            if (fds[i].revents != 0)
                read_pipe(j, p, i, line_buffer);
        }
    }
    return 0;
}

static void record_status(struct npar_job *j, int status)
{
    j->exitval = WIFEXITED(status) ? WEXITSTATUS(status) : 0;
    j->signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* Drains the job's output, then reaps it: 0, or why not (ECANCELED,
 * ETIMEDOUT, or an error of nursery_poll()). */
static int collect(struct npar_job *j, struct pipes *p, nursery_time_t deadline, bool line_buffer)
{
    int rc = drain(j, p, deadline, line_buffer);
    int status;
    if (rc == 0)
        rc = nursery_child_wait(j->pid, &status, deadline);
    if (rc == 0)
        record_status(j, status);
    return rc;
}

/* The job was cancelled (or could not be waited for): SIGTERM (again: the
 * hook may not have run, for a wait that failed), --grace to end while its
 * output is still read, then SIGKILL; reaped in every case. */
static void kill_and_reap(struct npar_job *j, struct pipes *p, const struct npar_options *o)
{
    nursery_scope_t *shield = NULL;
    int rc = nursery_scope_open(&shield, NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    terminate(j);
    if (rc == 0)
        rc = collect(j, p, nursery_after_ns(o->grace_ns), o->line_buffer);
    if (rc != 0) {
        kill(-j->pid, SIGKILL);
        int status = 0;
        if (shield == NULL || nursery_child_wait(j->pid, &status, NURSERY_FOREVER) != 0) {
            while (waitpid(j->pid, &status, 0) < 0 && errno == EINTR) /* no shield: plainly */
                ;
        }
        record_status(j, status);
        if (shield != NULL)
            drain(j, p, nursery_after_ms(LAST_READ_MS), o->line_buffer);
    }
    if (shield != NULL)
        nursery_scope_close(shield, NULL);
}

/* Spawns the job and waits for it in its scope; returns once it is
 * reaped, and whether it was killed: its scope was cancelled (or a wait
 * failed) before it had ended.  A cancel that comes after it ended kills
 * nothing, whenever the hook runs. */
static bool run_spawned(struct npar_job *j, int out[2], int err[2], const struct npar_options *o)
{
    int rc = spawn(j, out[1], err[1]);
    close(out[1]);
    close(err[1]);
    struct pipes p = {{out[0], err[0]}, {{0}, {0}}};
    if (rc != 0) {
        close(out[0]);
        close(err[0]);
        j->exitval = 127; /* as a shell says of a command it cannot run */
        npar_buf_printf(&j->err, "npar: %s: %s\n", j->argv[0], strerror(rc));
        return false;
    }
    nursery_cancel_hook_t *hook = NULL;
    rc = nursery_on_cancel(terminate, j, &hook);
    if (rc == 0)
        rc = collect(j, &p, NURSERY_FOREVER, o->line_buffer);
    bool killed = rc != 0;
    if (killed)
        kill_and_reap(j, &p, o);
    if (hook != NULL)
        nursery_cancel_hook_remove(hook, NULL);
    if (killed)
        kill(-j->pid, SIGKILL); /* what is left of its group */
    for (int i = 0; i < 2; i++) {
        if (p.fd[i] >= 0)
            close(p.fd[i]);
        npar_buf_free(&p.pending[i]);
    }
    return killed;
}

/* Forgets what an earlier attempt came to. */
static void reset(struct npar_job *j)
{
    j->started = j->timed_out = j->killed = false;
    j->exitval = j->signal = 0;
    j->received = 0;
    j->out.len = j->err.len = 0;
    j->pid = -1;
}

void npar_job_run(struct npar_job *j)
{
    const struct npar_options *o = npar_runner_options(j->runner);
    reset(j);
    nursery_time_t deadline = o->timeout_ns > 0 ? nursery_after_ns(o->timeout_ns) : NURSERY_FOREVER;
    int out[2], err[2];
    bool killed = false;
    int rc = nursery_scope_open(&j->scope, deadline, 0);
    if (rc != 0) {
        j->started = true;
        j->exitval = 127;
        npar_buf_printf(&j->err, "npar: cannot time job %zu: %s\n", j->seq, strerror(rc));
        return;
    }
    if (!npar_runner_enter(j->runner, j))
        goto close_scope;
    j->started = true;
    j->start = nursery_now();
    j->start_epoch_ns = wall_clock_ns();
    if (pipe2(out, O_CLOEXEC) != 0) {
        rc = errno;
        goto failed;
    }
    if (pipe2(err, O_CLOEXEC) != 0) {
        rc = errno;
        close(out[0]);
        close(out[1]);
        goto failed;
    }
    killed = run_spawned(j, out, err, o);
    goto leave;
failed:
    j->exitval = 127;
    npar_buf_printf(&j->err, "npar: cannot run job %zu: %s\n", j->seq, strerror(rc));
leave:
    j->runtime_ns = nursery_now() - j->start;
    npar_runner_leave(j->runner, j);
close_scope:;
    unsigned outcome = 0;
    nursery_scope_close(j->scope, &outcome);
    j->scope = NULL;
    if (killed) {
        j->timed_out = outcome & NURSERY_SCOPE_DEADLINE_PASSED;
        j->killed = !j->timed_out;
    }
    if (j->timed_out)
        npar_buf_printf(&j->err, "npar: job %zu timed out after %g s: %s\n", j->seq,
                        (double)o->timeout_ns / 1e9, j->command);
}

bool npar_job_failed(const struct npar_job *j)
{
    /* Killed by --halt or a signal to npar: not its own failure. */
    return j->started && !j->killed && (j->exitval != 0 || j->signal != 0 || j->timed_out);
}
