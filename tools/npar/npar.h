/* SPDX-License-Identifier: MIT */
/*
 * npar.h - what the parts of npar share: the options, a job, and the
 * interfaces of the files that make a run (one concept per file):
 *
 *   options.c   the command line, checked; usage errors exit 255
 *   input.c     where inputs come from: lines of a stream, or ::: groups
 *   template.c  a job's command from the template and its inputs
 *   job.c       one attempt of one job: spawn, capture, kill, reap
 *   output.c    printing captured output, the progress bar, the joblog
 *   runner.c    the jobs in flight, --halt, --retries, signals, and the
 *               two drivers (input order: nursery_map_stream(); end
 *               order: a nursery with a limit)
 *   npar.c      main()
 */
#ifndef NPAR_H
#define NPAR_H

#include <nursery.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit status of a usage error, and of an input or joblog that cannot be
 * opened (as GNU parallel's). */
#define NPAR_EXIT_USAGE 255
/* Exit status when more than this many jobs failed. */
#define NPAR_EXIT_FAILED_MAX 101

/* ---- Options (options.c) ---------------------------------------------- */

enum npar_halt_when {
    NPAR_HALT_NEVER, /* every job runs (the default) */
    NPAR_HALT_SOON,  /* start no more; let the running ones end */
    NPAR_HALT_NOW,   /* start no more; kill the running ones */
};

struct npar_options {
    size_t jobs;          /* -j: jobs at once, >= 1 */
    char separator;       /* '\n', or '\0' with -0 */
    const char *arg_file; /* -a FILE, or NULL: stdin */
    bool keep_order;      /* -k */
    bool line_buffer;     /* --line-buffer */
    bool shell;           /* --shell */
    bool bar;             /* --bar (and stderr is a terminal) */
    bool dry_run;         /* --dry-run */
    enum npar_halt_when halt_when;
    bool halt_on_success;  /* success=N rather than fail=N */
    size_t halt_count;     /* the N of --halt */
    const char *halt_text; /* --halt's value as given, for messages */
    unsigned attempts;     /* --retries: attempts in all, >= 1 */
    int64_t timeout_ns;    /* --timeout, 0: none */
    int64_t grace_ns;      /* --grace: SIGTERM to SIGKILL */
    const char *joblog;    /* --joblog FILE, or NULL */
    char **words;          /* the command template */
    size_t nwords;
    char ***groups; /* the ::: groups (NULL: read lines) */
    size_t *group_sizes;
    size_t ngroups;
};

/* Parses argv into *o; on a usage error prints why and exits 255; for
 * --help and --version prints and exits 0. */
void npar_options_parse(struct npar_options *o, int argc, char **argv);
void npar_options_free(struct npar_options *o);

/* ---- Inputs (input.c) --------------------------------------------------- */

struct npar_input;

/* Opens the inputs the options name: the ::: groups, -a FILE or stdin.
 * Returns 0, or errno when FILE cannot be opened. */
int npar_input_open(struct npar_input **out, const struct npar_options *o);
/* The next job's inputs, one per group (one for lines), in *values; valid
 * until the next call.  Returns 0, NURSERY_EEND after the last, or errno
 * of a failed read. */
int npar_input_next(struct npar_input *in, char *const **values, size_t *n);
/* How many jobs the inputs make, when it is known (::: groups, or a stream
 * read to its end); 0 while it is not. */
size_t npar_input_total(const struct npar_input *in);
void npar_input_close(struct npar_input *in);

/* ---- A job (template.c, job.c) ---------------------------------------- */

/* A growable byte buffer. */
struct npar_buf {
    char *data;
    size_t len, cap;
};

void npar_buf_append(struct npar_buf *b, const char *p, size_t n);
void npar_buf_printf(struct npar_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void npar_buf_free(struct npar_buf *b);

struct npar_runner;

/* One job: its command, and what its last attempt came to.  Made by the
 * input side (the caller's thread), run by one task at a time, printed by
 * the thread that prints it, then freed. */
struct npar_job {
    size_t seq;    /* 1, 2, ... in input order ({#}) */
    char **argv;   /* what is spawned (NULL-terminated) */
    char *command; /* the command as --dry-run and the joblog show it */
    struct npar_runner *runner;

    /* The last attempt. */
    bool started;           /* it ran (false: skipped by --halt or a signal) */
    int exitval;            /* its exit status (0 when killed by a signal) */
    int signal;             /* the signal that ended it, 0 if none */
    bool timed_out;         /* --timeout killed it */
    bool killed;            /* killed by --halt now or a signal to npar */
    nursery_time_t start;   /* nursery_now() at its start */
    int64_t start_epoch_ns; /* the same, as wall-clock time */
    int64_t runtime_ns;
    size_t received;     /* bytes of stdout and stderr */
    struct npar_buf out; /* captured stdout (not with --line-buffer) */
    struct npar_buf err; /* captured stderr, npar's notes included */

    /* While it runs (job.c). */
    pid_t pid;                  /* also its process group */
    nursery_scope_t *scope;     /* its --timeout scope, cancelled to kill it */
    struct npar_job *next_live; /* runner.c's list of live jobs */
    struct npar_job *prev_live;
};

/* Makes the job of `seq` from the template and its inputs (template.c). */
struct npar_job *npar_job_new(const struct npar_options *o, size_t seq, char *const *values,
                              size_t n);
void npar_job_free(void *job);
/* A word as a POSIX shell reads it back: itself when it is made only of
 * safe characters, else in single quotes (template.c). */
void npar_shell_quote(struct npar_buf *b, const char *word);

/* Whether the last attempt failed. */
bool npar_job_failed(const struct npar_job *j);
/* Runs one attempt, start to reaped (job.c).  Called in a task; returns
 * when the job's process has ended, or was never started because the run
 * is halting (j->started false). */
void npar_job_run(struct npar_job *j);

/* ---- Output (output.c) ------------------------------------------------- */

struct npar_output;

/* Progress shown by --bar. */
struct npar_progress {
    size_t done, failed;
    size_t total; /* 0 while not known */
    nursery_time_t started;
};

/* Opens the output side: the joblog (errno when it cannot be created). */
int npar_output_open(struct npar_output **out, const struct npar_options *o);
void npar_output_close(struct npar_output *out);
/* Prints a job's captured stdout and stderr, whole. */
void npar_output_job(struct npar_output *out, const struct npar_job *j);
/* --line-buffer: passes the whole lines of *pending through to fd, keeping
 * a last partial line; with `last`, that too. */
void npar_output_lines(struct npar_output *out, int fd, struct npar_buf *pending, bool last);
/* Logs a job that ran to the joblog, and redraws the bar. */
void npar_output_ended(struct npar_output *out, const struct npar_job *j,
                       const struct npar_progress *p);
/* A line of npar's own on stderr (the bar cleared around it). */
void npar_output_note(struct npar_output *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Whether a write met EPIPE: the reader of npar's output is gone. */
bool npar_output_broken(const struct npar_output *out);
/* The bar's last line, drawn whatever the time, and left on its line. */
void npar_output_finish(struct npar_output *out, const struct npar_progress *p);

/* ---- The run (runner.c) ------------------------------------------------- */

/* Runs every job of the inputs as the options say; returns npar's exit
 * status. */
int npar_run(const struct npar_options *o);

/* For job.c: a job enters the live set before it spawns (false: the run
 * is halting, do not start it) and leaves it once reaped. */
bool npar_runner_enter(struct npar_runner *r, struct npar_job *j);
void npar_runner_leave(struct npar_runner *r, struct npar_job *j);
const struct npar_options *npar_runner_options(const struct npar_runner *r);
struct npar_output *npar_runner_output(const struct npar_runner *r);

/* Out of memory: says so and exits 255 (a batch tool has nothing better). */
_Noreturn void npar_oom(void);
void *npar_xmalloc(size_t n);
void *npar_xrealloc(void *p, size_t n);
char *npar_xstrdup(const char *s);

#endif
