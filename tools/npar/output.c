/* SPDX-License-Identifier: MIT */
/*
 * output.c - everything npar writes: each job's captured output, whole,
 * with one writer at a time so that two jobs never mix; --line-buffer's
 * whole lines; the --bar line on stderr, cleared while anything else is
 * written there and redrawn at most ten times a second; the --joblog.
 * mu is held for each of them, by whichever thread prints (a job's task,
 * or the map's caller with --keep-order).
 */
#include "npar.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BAR_INTERVAL_NS (100 * (int64_t)1000000) /* ten redraws a second at most */

struct npar_output {
    pthread_mutex_t mu;
    bool bar;                  /* --bar, on a terminal */
    bool bar_shown;            /* the bar is on stderr's last line now */
    nursery_time_t bar_drawn;  /* when it was last drawn */
    struct npar_progress last; /* what it shows */
    FILE *joblog;
    _Atomic bool broken; /* a write met EPIPE: nobody reads any more */
};

int npar_output_open(struct npar_output **out, const struct npar_options *o)
{
    struct npar_output *p = npar_xmalloc(sizeof *p);
    *p = (struct npar_output){.bar = o->bar};
    if (o->joblog != NULL) {
        p->joblog = fopen(o->joblog, "w");
        if (p->joblog == NULL) {
            int err = errno;
            free(p);
            return err;
        }
        fputs("Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n",
              p->joblog);
        fflush(p->joblog);
    }
    pthread_mutex_init(&p->mu, NULL);
    *out = p;
    return 0;
}

void npar_output_close(struct npar_output *out)
{
    if (out->joblog != NULL)
        fclose(out->joblog);
    pthread_mutex_destroy(&out->mu);
    free(out);
}

/* write(2) until all is written.  A reader that has gone away (EPIPE:
 * npar ignores SIGPIPE) is remembered, for the runner to stop the run;
 * other errors lose what could not be written, as they would in stdio. */
static void write_all(struct npar_output *out, int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EPIPE)
            atomic_store(&out->broken, true);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

bool npar_output_broken(const struct npar_output *out)
{
    return atomic_load(&out->broken);
}

/* ---- The bar ------------------------------------------------------------ */

static void draw_bar(struct npar_output *out)
{
    const struct npar_progress *p = &out->last;
    nursery_time_t now = nursery_now();
    double seconds = (double)(now - p->started) / 1e9;
    double rate = seconds > 0 ? (double)p->done / seconds : 0;
    char total[32] = "?", eta[32] = "";
    if (p->total > 0) {
        snprintf(total, sizeof total, "%zu", p->total);
        if (rate > 0 && p->total >= p->done)
            snprintf(eta, sizeof eta, ", ETA %.0fs", (double)(p->total - p->done) / rate);
    }
    char line[160];
    int n = snprintf(line, sizeof line, "\r\033[Knpar: %zu/%s done, %zu failed, %.1f jobs/s%s",
                     p->done, total, p->failed, rate, eta);
    write_all(out, STDERR_FILENO, line, n < (int)sizeof line ? (size_t)n : sizeof line - 1);
    out->bar_shown = true;
    out->bar_drawn = now;
}

/* Before something else is written: the bar leaves the line. */
static void hide_bar(struct npar_output *out)
{
    if (out->bar_shown)
        write_all(out, STDERR_FILENO, "\r\033[K", 4);
    out->bar_shown = false;
}

/* After it: the bar is back, as it was. */
static void show_bar(struct npar_output *out)
{
    if (out->bar && out->bar_drawn != 0)
        draw_bar(out);
}

/* ---- Jobs ------------------------------------------------------------- */

void npar_output_job(struct npar_output *out, const struct npar_job *j)
{
    if (j->out.len == 0 && j->err.len == 0)
        return;
    pthread_mutex_lock(&out->mu);
    hide_bar(out);
    write_all(out, STDOUT_FILENO, j->out.data, j->out.len);
    write_all(out, STDERR_FILENO, j->err.data, j->err.len);
    show_bar(out);
    pthread_mutex_unlock(&out->mu);
}

void npar_output_lines(struct npar_output *out, int fd, struct npar_buf *pending, bool last)
{
    size_t n = pending->len;
    if (!last) {
        char *nl = memrchr(pending->data, '\n', pending->len);
        n = nl != NULL ? (size_t)(nl - pending->data) + 1 : 0;
    }
    if (n == 0)
        return;
    pthread_mutex_lock(&out->mu);
    hide_bar(out);
    write_all(out, fd, pending->data, n);
    show_bar(out);
    pthread_mutex_unlock(&out->mu);
    memmove(pending->data, pending->data + n, pending->len - n);
    pending->len -= n;
}

/* GNU parallel's joblog line. */
static void log_job(FILE *log, const struct npar_job *j)
{
    fprintf(log, "%zu\t:\t%.3f\t%8.3f\t0\t%zu\t%d\t%d\t%s\n", j->seq,
            (double)j->start_epoch_ns / 1e9, (double)j->runtime_ns / 1e9, j->received, j->exitval,
            j->signal, j->command);
    fflush(log);
}

void npar_output_ended(struct npar_output *out, const struct npar_job *j,
                       const struct npar_progress *p)
{
    if (out->joblog == NULL && !out->bar)
        return;
    pthread_mutex_lock(&out->mu);
    if (out->joblog != NULL)
        log_job(out->joblog, j);
    if (out->bar) {
        if (p->done > out->last.done)
            out->last = *p;
        if (nursery_now() - out->bar_drawn >= BAR_INTERVAL_NS)
            draw_bar(out);
    }
    pthread_mutex_unlock(&out->mu);
}

void npar_output_note(struct npar_output *out, const char *fmt, ...)
{
    struct npar_buf line = {0};
    va_list ap;
    va_start(ap, fmt);
    char *text;
    if (vasprintf(&text, fmt, ap) < 0)
        npar_oom();
    va_end(ap);
    npar_buf_printf(&line, "%s\n", text);
    free(text);
    pthread_mutex_lock(&out->mu);
    hide_bar(out);
    write_all(out, STDERR_FILENO, line.data, line.len);
    show_bar(out);
    pthread_mutex_unlock(&out->mu);
    npar_buf_free(&line);
}

void npar_output_finish(struct npar_output *out, const struct npar_progress *p)
{
    if (!out->bar)
        return;
    pthread_mutex_lock(&out->mu);
    out->last = *p;
    draw_bar(out);
    write_all(out, STDERR_FILENO, "\n", 1);
    out->bar_shown = false;
    out->bar_drawn = 0; /* notes after the end go below it, without a bar */
    pthread_mutex_unlock(&out->mu);
}
