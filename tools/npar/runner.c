/* SPDX-License-Identifier: MIT */
/*
 * runner.c - a run of npar: the jobs in flight, --halt, --retries,
 * SIGINT and SIGTERM, and the two ways jobs are driven.
 *
 * Every job is a task on a pool of npar's own.  With --keep-order they are
 * the items of nursery_map_stream(): it takes jobs from the inputs as there
 * is room (-j running, at most -j more ended and waiting for an earlier
 * one), and hands each to the printer in input order.  Otherwise they are
 * tasks of one nursery with a limit of -j, started by
 * nursery_start_limited(), which waits for room; each prints itself when
 * it ends.
 *
 * Stopping (--halt, a signal) never cancels the map or the nursery, which
 * would drop the output of jobs that have ended: it stops taking inputs
 * and, for "now", cancels the scope of each live job (job.c kills the job
 * when its scope is cancelled), so every job still ends, is printed and
 * logged.  A job whose task starts after the stop is not run.
 *
 * Signals: SIGINT and SIGTERM are blocked in every thread but that of a
 * task that waits with nursery_poll() on a pipe, into which the handler
 * only writes the signal's number; the task then stops the run.
 *
 * Locking: mu guards the live list, the stop and the counts.  Job scopes
 * are cancelled under mu, so a job cannot leave (and close its scope)
 * while it is being cancelled; the cancel hooks that then run only call
 * kill().
 */
#include "npar.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct npar_runner {
    const struct npar_options *opt;
    struct npar_output *output;
    struct npar_input *input; /* read by the thread that starts jobs only */
    nursery_pool_t *pool;
    size_t next_seq; /* the last job made, same thread */

    pthread_mutex_t mu;
    struct npar_job *live; /* jobs between enter and leave */
    bool stopping;         /* no job starts any more */
    bool halted;           /* --halt's condition was met */
    int signal;            /* the signal that stopped the run, 0 if none */
    int input_error;       /* errno of a failed read of the inputs */
    size_t done, failed, succeeded, killed;
    size_t total; /* jobs in all, 0 while not known */
    nursery_time_t started;
};

/* The write end of the signal pipe, for the handler. */
static int signal_pipe_w = -1;

const struct npar_options *npar_runner_options(const struct npar_runner *r)
{
    return r->opt;
}

struct npar_output *npar_runner_output(const struct npar_runner *r)
{
    return r->output;
}

/* ---- Stopping ---------------------------------------------------------- */

/* Stops starting jobs; with `now`, kills the live ones.  Under mu. */
static void stop_locked(struct npar_runner *r, bool now)
{
    r->stopping = true;
    if (!now)
        return;
    for (struct npar_job *j = r->live; j != NULL; j = j->next_live)
        nursery_scope_cancel(j->scope);
}

static bool stopping(struct npar_runner *r)
{
    pthread_mutex_lock(&r->mu);
    bool s = r->stopping;
    pthread_mutex_unlock(&r->mu);
    return s;
}

bool npar_runner_enter(struct npar_runner *r, struct npar_job *j)
{
    pthread_mutex_lock(&r->mu);
    bool enter = !r->stopping;
    if (enter) {
        /* A reference of the runner's own: it may cancel the scope. */
        nursery_scope_retain(j->scope);
        j->prev_live = NULL;
        j->next_live = r->live;
        if (r->live != NULL)
            r->live->prev_live = j;
        r->live = j;
    }
    pthread_mutex_unlock(&r->mu);
    return enter;
}

void npar_runner_leave(struct npar_runner *r, struct npar_job *j)
{
    pthread_mutex_lock(&r->mu);
    if (j->prev_live != NULL)
        j->prev_live->next_live = j->next_live;
    else
        r->live = j->next_live;
    if (j->next_live != NULL)
        j->next_live->prev_live = j->prev_live;
    pthread_mutex_unlock(&r->mu);
    nursery_scope_release(j->scope);
}

/* Counts a job that ran, and applies --halt.  Under mu. */
static void count_locked(struct npar_runner *r, const struct npar_job *j)
{
    const struct npar_options *o = r->opt;
    r->done++;
    if (j->killed)
        r->killed++;
    else if (npar_job_failed(j))
        r->failed++;
    else
        r->succeeded++;
    if (o->halt_when == NPAR_HALT_NEVER || r->stopping)
        return;
    size_t count = o->halt_on_success ? r->succeeded : r->failed;
    if (count >= o->halt_count) {
        r->halted = true;
        stop_locked(r, o->halt_when == NPAR_HALT_NOW);
    }
}

static struct npar_progress progress_locked(const struct npar_runner *r)
{
    return (struct npar_progress){r->done, r->failed, r->total, r->started};
}

/* Once nobody reads npar's output (npar ... | head), jobs would run for
 * nothing: the run stops as for a signal. */
static void stop_if_unread(struct npar_runner *r)
{
    if (!npar_output_broken(r->output))
        return;
    pthread_mutex_lock(&r->mu);
    stop_locked(r, true);
    pthread_mutex_unlock(&r->mu);
}

/* ---- The task of a job -------------------------------------------------- */

static int job_task(void *arg, void **value)
{
    struct npar_job *j = arg;
    struct npar_runner *r = j->runner;
    (void)value;
    for (unsigned attempt = 1;; attempt++) {
        npar_job_run(j);
        if (!npar_job_failed(j) || attempt >= r->opt->attempts || stopping(r))
            break;
    }
    if (!j->started)
        return 0; /* the run stopped before it */
    pthread_mutex_lock(&r->mu);
    count_locked(r, j);
    struct npar_progress p = progress_locked(r);
    pthread_mutex_unlock(&r->mu);
    if (!r->opt->keep_order)
        npar_output_job(r->output, j);
    npar_output_ended(r->output, j, &p);
    stop_if_unread(r);
    return 0;
}

/* The next job from the inputs: 0, or NURSERY_EEND at their end (also
 * after a read error, which is kept for the exit status). */
static int take_job(struct npar_runner *r, struct npar_job **out)
{
    char *const *values;
    size_t n;
    int rc = npar_input_next(r->input, &values, &n);
    pthread_mutex_lock(&r->mu);
    r->total = npar_input_total(r->input);
    if (rc != 0 && rc != NURSERY_EEND)
        r->input_error = rc;
    pthread_mutex_unlock(&r->mu);
    if (rc != 0)
        return NURSERY_EEND;
    *out = npar_job_new(r->opt, ++r->next_seq, values, n);
    (*out)->runner = r;
    return 0;
}

/* ---- Input order: a streaming map ------------------------------------- */

static int next_job(void *ctx, void **arg)
{
    struct npar_runner *r = ctx;
    if (stopping(r))
        return NURSERY_EEND;
    return take_job(r, (struct npar_job **)arg);
}

static int print_job(void *ctx, size_t index, void *arg, const nursery_outcome_t *outcome)
{
    struct npar_runner *r = ctx;
    (void)index;
    (void)outcome;
    npar_output_job(r->output, arg);
    stop_if_unread(r);
    return 0;
}

static int run_in_input_order(struct npar_runner *r)
{
    nursery_task_options_t task = {.name = "npar job", .arg_destroy = npar_job_free};
    nursery_map_options_t map = {.limit = r->opt->jobs, .task = &task};
    return nursery_map_stream(r->pool, job_task, next_job, r, print_job, r, &map, NULL);
}

/* ---- End order: a nursery with a limit -------------------------------- */

static int run_in_end_order(struct npar_runner *r)
{
    nursery_t *n;
    int rc = nursery_open(&n, r->pool);
    if (rc != 0)
        return rc;
    nursery_set_limit(n, r->opt->jobs);
    nursery_task_options_t task = {.name = "npar job", .arg_destroy = npar_job_free};
    struct npar_job *j;
    while (rc == 0 && !stopping(r) && take_job(r, &j) == 0)
        rc = nursery_start_limited(n, job_task, j, &task, NURSERY_FOREVER);
    int join = nursery_join(n, NURSERY_FOREVER, NULL);
    return rc != 0 ? rc : join;
}

/* ---- Signals ------------------------------------------------------------ */

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char c = (unsigned char)sig;
    ssize_t ignored = write(signal_pipe_w, &c, 1);
    (void)ignored;
    errno = saved;
}

/* The signals npar catches, blocked in every thread but the watcher's. */
static void caught_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
}

struct signal_watch {
    struct npar_runner *runner;
    int fd;                    /* the read end of the signal pipe */
    struct sigaction saved[3]; /* SIGINT, SIGTERM and SIGPIPE as they were */
    sigset_t saved_mask;       /* the calling thread's mask as it was */
};

/* A task for the whole run: a signal stops it and kills the jobs.  Its
 * thread is the only one that takes SIGINT and SIGTERM, and only while
 * it waits in nursery_poll(), so the handler always interrupts a poll()
 * (which matters to ThreadSanitizer: it holds a signal back until the
 * thread is in a call it knows to be blocking, and a worker parked on a
 * futex of the library's would hold it forever). */
static int wait_for_signals(void *arg, void **value)
{
    struct signal_watch *w = arg;
    (void)value;
    sigset_t caught, mask;
    caught_signals(&caught);
    pthread_sigmask(SIG_UNBLOCK, &caught, &mask);
    struct pollfd fd = {w->fd, POLLIN, 0};
    size_t ready;
    while (nursery_poll(&fd, 1, NURSERY_FOREVER, &ready) == 0) {
        unsigned char sig;
        if (read(w->fd, &sig, 1) != 1)
            continue;
        struct npar_runner *r = w->runner;
        pthread_mutex_lock(&r->mu);
        if (r->signal == 0)
            r->signal = sig;
        stop_locked(r, true);
        pthread_mutex_unlock(&r->mu);
    }
    /* Cancelled: the run is over.  The worker's own mask again. */
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
    return 0;
}

/* Catches SIGINT and SIGTERM into the pipe, blocked in the calling thread
 * and so in every thread started after this (the pool's, the library's),
 * and ignores SIGPIPE: a closed output is seen as EPIPE (output.c). */
static int catch_signals(struct signal_watch *w)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0)
        return errno;
    signal_pipe_w = p[1];
    w->fd = p[0];
    sigset_t caught;
    caught_signals(&caught);
    pthread_sigmask(SIG_BLOCK, &caught, &w->saved_mask);
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &w->saved[0]);
    sigaction(SIGTERM, &sa, &w->saved[1]);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, &w->saved[2]);
    return 0;
}

/* As they were: a signal that comes now, after the run, does what it did
 * before npar caught it. */
static void release_signals(struct signal_watch *w)
{
    sigaction(SIGINT, &w->saved[0], NULL);
    sigaction(SIGTERM, &w->saved[1], NULL);
    sigaction(SIGPIPE, &w->saved[2], NULL);
    pthread_sigmask(SIG_SETMASK, &w->saved_mask, NULL);
    close(signal_pipe_w);
    close(w->fd);
    signal_pipe_w = -1;
}

/* ---- The run ------------------------------------------------------------ */

static const char *plural(size_t n, const char *one, const char *many)
{
    return n == 1 ? one : many;
}

/* What stopped the run, on stderr; the exit status. */
static int conclude(struct npar_runner *r, int rc)
{
    const struct npar_options *o = r->opt;
    struct npar_progress p = progress_locked(r);
    npar_output_finish(r->output, &p);
    size_t ended = r->done - r->killed;
    if (r->signal != 0) {
        npar_output_note(r->output,
                         "npar: interrupted by %s: %zu %s killed, %zu done (%zu failed), no "
                         "more started",
                         r->signal == SIGINT ? "SIGINT" : "SIGTERM", r->killed,
                         plural(r->killed, "job", "jobs"), ended, r->failed);
        return 128 + r->signal;
    }
    if (npar_output_broken(r->output))
        return 128 + SIGPIPE; /* as if SIGPIPE had ended npar, as it would have */
    if (r->halted) {
        npar_output_note(r->output,
                         "npar: halting after %zu %s %s (--halt %s): %zu %s killed, %zu done, no "
                         "more started",
                         o->halt_count, o->halt_on_success ? "successful" : "failed",
                         plural(o->halt_count, "job", "jobs"), o->halt_text, r->killed,
                         plural(r->killed, "job", "jobs"), ended);
    }
    if (r->input_error != 0) {
        npar_output_note(r->output, "npar: cannot read %s: %s",
                         o->arg_file != NULL ? o->arg_file : "stdin", strerror(r->input_error));
        return NPAR_EXIT_USAGE;
    }
    if (rc != 0 && rc != ECANCELED) {
        npar_output_note(r->output, "npar: %s", nursery_strerror(rc));
        return NPAR_EXIT_USAGE;
    }
    if (r->halted && o->halt_on_success)
        return 0;
    return r->failed > 100 ? NPAR_EXIT_FAILED_MAX : (int)r->failed;
}

static int dry_run(struct npar_runner *r)
{
    struct npar_job *j;
    while (take_job(r, &j) == 0) {
        printf("%s\n", j->command);
        npar_job_free(j);
    }
    if (fflush(stdout) != 0 || r->input_error != 0)
        return conclude(r, 0);
    return 0;
}

/* The pool: a thread for every job at once (they wait on pipes) and one
 * for the signal watcher; the pool starts the ones beyond the CPUs as
 * the jobs block, up to that. */
static int create_pool(nursery_pool_t **out, size_t jobs)
{
    size_t threads = jobs + 1 < 64 ? jobs + 1 : 64;
    nursery_pool_options_t po = {
        .threads = threads,
        .max_threads = jobs + 1 > threads ? jobs + 1 : threads,
        .name = "npar",
    };
    return nursery_pool_create(out, &po);
}

static int run_jobs(struct npar_runner *r, struct signal_watch *watch)
{
    nursery_t *top;
    nursery_result_t *watcher = NULL;
    int rc = nursery_open(&top, r->pool);
    if (rc != 0)
        return rc;
    rc = nursery_capture_start_soon(top, wait_for_signals, watch, NULL, &watcher);
    if (rc == 0)
        rc = r->opt->keep_order ? run_in_input_order(r) : run_in_end_order(r);
    if (watcher != NULL) {
        nursery_result_cancel(watcher);
        nursery_result_release(watcher);
    }
    nursery_join(top, NURSERY_FOREVER, NULL);
    return rc;
}

/* Signals caught before the pool starts (its threads block them), the
 * pool, the jobs; the exit status. */
static int run(struct npar_runner *r)
{
    struct signal_watch watch = {.runner = r, .fd = -1};
    int rc = catch_signals(&watch);
    if (rc != 0) {
        fprintf(stderr, "npar: cannot catch signals: %s\n", strerror(rc));
        return NPAR_EXIT_USAGE;
    }
    rc = create_pool(&r->pool, r->opt->jobs);
    int status;
    if (rc != 0) {
        fprintf(stderr, "npar: cannot start threads: %s\n", nursery_strerror(rc));
        status = NPAR_EXIT_USAGE;
    } else {
        rc = run_jobs(r, &watch);
        status = conclude(r, rc);
        nursery_pool_destroy(r->pool);
    }
    release_signals(&watch);
    return status;
}

int npar_run(const struct npar_options *o)
{
    struct npar_runner r = {.opt = o, .started = nursery_now()};
    int rc = npar_input_open(&r.input, o);
    if (rc != 0) {
        fprintf(stderr, "npar: cannot read %s: %s\n", o->arg_file, strerror(rc));
        return NPAR_EXIT_USAGE;
    }
    rc = npar_output_open(&r.output, o);
    if (rc != 0) {
        fprintf(stderr, "npar: cannot create the joblog %s: %s\n", o->joblog, strerror(rc));
        npar_input_close(r.input);
        return NPAR_EXIT_USAGE;
    }
    pthread_mutex_init(&r.mu, NULL);
    int status = o->dry_run ? dry_run(&r) : run(&r);
    pthread_mutex_destroy(&r.mu);
    npar_output_close(r.output);
    npar_input_close(r.input);
    return status;
}
