/* SPDX-License-Identifier: MIT */
/*
 * timeout_read.c - reading a pipe with a deadline (nursery_poll under a cancel
 * scope), then a goodbye that must still wait, in a shielded scope.
 *
 * A writer task sends a few lines down a pipe, then stalls: it sends nothing
 * more, but still listens on a control pipe.  The reader reads lines with
 * nursery_poll() inside a scope with a deadline (Trio's fail_after), which
 * each line moves 200 ms later (nursery_scope_set_deadline): a timeout on
 * silence.  When it passes, the poll fails with ECANCELED and the scope stays
 * cancelled, so every later wait in it fails at once too.  Yet the reader
 * owes its peer a clean goodbye: it sends QUIT, then waits for the writer's
 * BYE and the end of the pipe.  That wait runs in a nested scope with
 * NURSERY_SCOPE_SHIELD, which the cancellation around it does not reach,
 * and with a deadline of its own, so a peer that never answers cannot hang
 * the cleanup.  Exits 0 when the reader got every line, timed out, and
 * completed the goodbye.
 */
#include <nursery.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define NLINES 3
#define IDLE_MS 200     /* the reader's deadline: this long without a line */
#define GOODBYE_MS 2000 /* the goodbye's own deadline, in the shield */

struct session {
    int data[2];    /* writer -> reader: lines, then BYE and the end of the pipe */
    int control[2]; /* reader -> writer: QUIT */
    int lines;      /* lines the reader got before its deadline */
    bool got_bye;   /* the goodbye completed */
};

static int writer(void *arg, void **value)
{
    struct session *s = arg;
    char line[32], cmd[8] = "";
    (void)value;
    int rc = nursery_started(NULL); /* running: the reader may start */
    for (int i = 1; i <= NLINES && rc == 0; i++) {
        int len = snprintf(line, sizeof line, "line %d\n", i);
        if (write(s->data[1], line, (size_t)len) != len)
            return nursery_fail(EIO, "cannot write: %s", strerror(errno));
        rc = nursery_sleep(nursery_after_ms(10));
    }
    /* Stalled: nothing more to say, but the reader may hang up. */
    struct pollfd p = {.fd = s->control[0], .events = POLLIN};
    size_t ready;
    if (rc == 0)
        rc = nursery_poll(&p, 1, NURSERY_FOREVER, &ready);
    if (rc != 0)
        return rc; /* ECANCELED: the nursery was cancelled */
    if (read(s->control[0], cmd, sizeof cmd - 1) <= 0 || strcmp(cmd, "QUIT") != 0)
        return nursery_fail(EPROTO, "expected QUIT, got '%s'", cmd);
    if (write(s->data[1], "BYE\n", 4) != 4)
        return nursery_fail(EIO, "cannot write BYE");
    close(s->data[1]); /* the end of the pipe: the reader sees EOF */
    s->data[1] = -1;
    return 0;
}

/* Waits for the pipe, then prints the lines it has (each write is one whole line, so a read
 * never ends inside one).  Returns how many; 0 at the end of the pipe; -1 with the error in
 * *rc (ECANCELED when the deadline passed). */
static int read_lines(struct session *s, int *rc, const char *who)
{
    struct pollfd p = {.fd = s->data[0], .events = POLLIN};
    char buf[128];
    size_t ready;
    /* NURSERY_FOREVER: the enclosing scope's deadline bounds the wait. */
    if ((*rc = nursery_poll(&p, 1, NURSERY_FOREVER, &ready)) != 0)
        return -1;
    ssize_t len = read(s->data[0], buf, sizeof buf - 1);
    if (len < 0) {
        *rc = errno;
        return -1;
    }
    buf[len] = '\0';
    int lines = 0;
    for (char *save, *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        printf("%s: %s\n", who, l);
        lines++;
        s->got_bye |= strcmp(l, "BYE") == 0;
    }
    return lines;
}

static int reader(void *arg, void **value)
{
    struct session *s = arg;
    nursery_scope_t *reading, *shield;
    int rc, n;
    (void)value;

    if ((rc = nursery_scope_open(&reading, nursery_after_ms(IDLE_MS),
                                 NURSERY_SCOPE_FAIL_ON_DEADLINE)) != 0)
        return rc;
    while ((n = read_lines(s, &rc, "reader")) > 0) {
        s->lines += n;
        /* A deadline on silence, not on the whole session: each line moves it. */
        nursery_scope_set_deadline(reading, nursery_after_ms(IDLE_MS));
    }
    printf("reader: %s after %d lines\n", nursery_strerror(rc), s->lines);

    /* Still in the cancelled scope: a wait here fails at once... */
    struct pollfd p = {.fd = s->data[0], .events = POLLIN};
    size_t ready;
    printf("reader: an unshielded poll now: %s\n",
           nursery_strerror(nursery_poll(&p, 1, NURSERY_FOREVER, &ready)));

    /* ...but not in a shield, whose deadline is the only one that counts. */
    int goodbye = nursery_scope_open(&shield, nursery_after_ms(GOODBYE_MS), NURSERY_SCOPE_SHIELD);
    if (goodbye == 0) {
        if (nursery_current_deadline() != nursery_scope_deadline(shield))
            goodbye = EINVAL;
        else if (write(s->control[1], "QUIT", 4) != 4)
            goodbye = errno;
        while (goodbye == 0 && read_lines(s, &goodbye, "goodbye") > 0)
            continue;
        nursery_scope_close(shield, NULL);
    }
    printf("reader: goodbye %s\n", goodbye == 0 && s->got_bye ? "completed" : "failed");
    int closed = nursery_scope_close(reading, NULL); /* ETIMEDOUT: our deadline passed */
    if (rc != ECANCELED || closed != ETIMEDOUT || goodbye != 0 || !s->got_bye)
        return nursery_fail(EPROTO, "read: %s, close: %s, goodbye: %s", nursery_strerror(rc),
                            nursery_strerror(closed), nursery_strerror(goodbye));
    return 0;
}

int main(void)
{
    struct session s = {.lines = 0};
    nursery_errors_t *errors = NULL;
    nursery_t *n;

    if (pipe(s.data) != 0 || pipe(s.control) != 0) {
        perror("timeout_read: pipe");
        return 1;
    }
    int rc = nursery_open(&n, NULL);
    if (rc == 0) {
        nursery_task_options_t w = {.name = "writer"}, r = {.name = "reader"};
        /* The writer first, and running (nursery_start), so that the reader's clock starts
         * only once someone is there to write. */
        if (nursery_start(n, writer, &s, &w, NURSERY_FOREVER, NULL, NULL) != 0 ||
            nursery_start_soon(n, reader, &s, &r) != 0)
            nursery_cancel(n); /* the one that started must not wait forever */
        rc = nursery_join(n, NURSERY_FOREVER, &errors);
    }
    if (nursery_errors_count(errors) > 0)
        fprintf(stderr, "timeout_read: %s\n", nursery_error_message(nursery_errors_get(errors, 0)));
    nursery_errors_free(errors);
    for (int i = 0; i < 2; i++) {
        if (s.data[i] >= 0) /* the writer closed data[1] */
            close(s.data[i]);
        close(s.control[i]);
    }
    if (rc != 0 || s.lines != NLINES || !s.got_bye) {
        fprintf(stderr, "timeout_read: %s, %d lines\n", nursery_strerror(rc), s.lines);
        return 1;
    }
    return 0;
}
