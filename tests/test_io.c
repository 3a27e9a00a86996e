/* SPDX-License-Identifier: MIT */
/*
 * test_io.c - tests of src/io.c: nursery_poll() and nursery_child_wait(),
 * the cancellable waits for file descriptors and child processes.
 *
 * Descriptors are pipes; children are forked and either exit at once or
 * pause until killed (SIGALRM ends them if a test leaves one behind).
 * Nothing is ordered by sleeping: where a deadline is the subject it is
 * short and only generous bounds are asserted.
 */
#include "helpers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MS INT64_C(1000000)
#define SEC INT64_C(1000000000)
#define HANG nursery_after_ms(TEST_HANG_MS)
#define SHORT_MS 50
#define LATE_NS (10 * SEC)

#define CALLED NURSERY_SCOPE_CANCEL_CALLED
#define PASSED NURSERY_SCOPE_DEADLINE_PASSED
#define CAUGHT NURSERY_SCOPE_CANCELLED_CAUGHT
#define ALL_BITS (CALLED | PASSED | CAUGHT)

/* revents that no poll sets: "revents is set only on 0". */
#define UNTOUCHED ((short)0x4000)

static nursery_pool_t *pool;

static void setup(void)
{
    pool = test_pool(4);
}

static void teardown(void)
{
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}

/* ---- helpers ----------------------------------------------------------- */

static void make_pipe(int fds[2])
{
    ck_assert_int_eq(pipe(fds), 0);
}

static void close_pipe(int fds[2])
{
    close(fds[0]);
    close(fds[1]);
}

static void put_byte(int fd)
{
    char c = 'x';
    ck_assert_int_eq(write(fd, &c, 1), 1);
}

static struct pollfd pollin(int fd)
{
    return (struct pollfd){.fd = fd, .events = POLLIN, .revents = UNTOUCHED};
}

static nursery_scope_t *open_scope(nursery_time_t deadline, unsigned flags)
{
    nursery_scope_t *s = NULL;
    ck_assert_int_eq(nursery_scope_open(&s, deadline, flags), 0);
    ck_assert_ptr_nonnull(s);
    return s;
}

static unsigned close_scope(nursery_scope_t *s)
{
    unsigned outcome = 0xdeadu;
    ck_assert_int_eq(nursery_scope_close(s, &outcome), 0);
    ck_assert_uint_ne(outcome, 0xdeadu);
    return outcome;
}

/* Under valgrind (which runs one thread at a time and allows 500 threads
 * by default). */
static bool under_valgrind(void)
{
    const char *preload = getenv("LD_PRELOAD");
    return preload && strstr(preload, "vgpreload");
}

/* A forked child that pauses until killed; SIGALRM ends it after `seconds`
 * if the test never does. */
static pid_t pausing_child(unsigned seconds)
{
    pid_t pid = fork_child(seconds);
    if (pid == 0) {
        /* Check's SIGTERM handler, inherited, would kill the whole group. */
        signal(SIGTERM, SIG_DFL);
        for (;;)
            pause();
    }
    return pid;
}

static pid_t exiting_child(int code)
{
    pid_t pid = fork_child(10);
    if (pid == 0)
        _exit(code);
    return pid;
}

/* The child is gone and reaped: nothing is left to wait for. */
static void assert_no_zombie(pid_t pid)
{
    int st = 0;
    errno = 0;
    ck_assert_int_eq(waitpid(pid, &st, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
}

/* Kills the child and reaps it (plain waitpid). */
static void kill_and_reap(pid_t pid)
{
    int st = 0;
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
}

/* A task that waits for a child. */
struct child_call {
    pid_t pid;
    nursery_time_t deadline;
    latch_t entered;
    int rc;
    int status;
};

static int child_wait_task(void *arg, void **value)
{
    (void)value;
    struct child_call *c = arg;
    latch_count_down(&c->entered);
    c->rc = nursery_child_wait(c->pid, &c->status, c->deadline);
    return c->rc;
}

/* ---- nursery_poll: ready, timed out ------------------------------------ */

START_TEST(poll_ready_pipe_returns_0_with_revents)
{
    int a[2], b[2];
    make_pipe(a);
    make_pipe(b);
    put_byte(a[1]);

    struct pollfd p[3] = {pollin(b[0]), pollin(a[0]), pollin(-1)};
    size_t ready = 99;
    ck_assert_int_eq(nursery_poll(p, 3, HANG, &ready), 0);
    ck_assert_uint_eq(ready, 1);
    ck_assert(p[1].revents & POLLIN);
    ck_assert_int_eq(p[0].revents, 0);
    ck_assert_int_eq(p[2].revents, 0);

    /* A deadline that has passed only polls. */
    p[1] = pollin(a[0]);
    ready = 99;
    ck_assert_int_eq(nursery_poll(&p[1], 1, nursery_after_ms(-1), &ready), 0);
    ck_assert_uint_eq(ready, 1);
    ck_assert(p[1].revents & POLLIN);

    /* Two ready: a readable end and a writable one. */
    struct pollfd two[2] = {pollin(a[0]), {.fd = b[1], .events = POLLOUT, .revents = UNTOUCHED}};
    ck_assert_int_eq(nursery_poll(two, 2, HANG, &ready), 0);
    ck_assert_uint_eq(ready, 2);
    ck_assert(two[0].revents & POLLIN);
    ck_assert(two[1].revents & POLLOUT);

    /* A closed write end: POLLHUP is ready too. */
    close(b[1]);
    p[0] = pollin(b[0]);
    ck_assert_int_eq(nursery_poll(p, 1, HANG, &ready), 0);
    ck_assert_uint_eq(ready, 1);
    ck_assert(p[0].revents & POLLHUP);
    close(b[0]);
    close_pipe(a);
}
END_TEST

struct poll_call {
    struct pollfd *fds;
    size_t n;
    nursery_time_t deadline;
    latch_t entered;
    int rc;
    size_t ready;
    nursery_time_t end;
    int64_t scope_ms;              /* > 0: poll in a scope with this deadline */
    nursery_time_t scope_deadline; /* its deadline */
    unsigned outcome;              /* its outcome */
};

static void poll_call_init(struct poll_call *c, struct pollfd *fds, size_t n,
                           nursery_time_t deadline)
{
    memset(c, 0, sizeof(*c));
    c->fds = fds;
    c->n = n;
    c->deadline = deadline;
    c->rc = -1;
    c->ready = 99;
    latch_init(&c->entered, 1);
}

static int poll_task(void *arg, void **value)
{
    (void)value;
    struct poll_call *c = arg;
    latch_count_down(&c->entered);
    nursery_scope_t *s = NULL;
    if (c->scope_ms > 0) {
        c->scope_deadline = nursery_after_ms(c->scope_ms);
        task_expect_eq(nursery_scope_open(&s, c->scope_deadline, 0), 0);
    }
    c->rc = nursery_poll(c->fds, c->n, c->deadline, &c->ready);
    c->end = nursery_now();
    if (s) {
        c->outcome = 0xdeadu;
        task_expect_eq(nursery_scope_close(s, &c->outcome), 0);
        return 0;
    }
    return c->rc;
}

START_TEST(poll_in_task_woken_by_data)
{
    int a[2];
    make_pipe(a);
    struct pollfd p = pollin(a[0]);
    struct poll_call c;
    poll_call_init(&c, &p, 1, HANG);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_task, &c, NULL), 0);
    ck_assert(latch_wait(&c.entered));
    put_byte(a[1]);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert_uint_eq(c.ready, 1);
    ck_assert(p.revents & POLLIN);
    latch_destroy(&c.entered);
    close_pipe(a);
}
END_TEST

START_TEST(poll_times_out)
{
    int a[2];
    make_pipe(a);
    struct pollfd p = pollin(a[0]);
    size_t ready = 99;
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    ck_assert_int_eq(nursery_poll(&p, 1, d, &ready), ETIMEDOUT);
    nursery_time_t end = nursery_now();
    ck_assert_int_ge(end, d);
    ck_assert_int_lt(end - d, LATE_NS);
    ck_assert_int_eq(p.revents, UNTOUCHED);

    /* Passed already, nothing ready. */
    ck_assert_int_eq(nursery_poll(&p, 1, nursery_after_ms(-1), &ready), ETIMEDOUT);
    ck_assert_int_eq(p.revents, UNTOUCHED);

    /* In a task. */
    struct poll_call c;
    poll_call_init(&c, &p, 1, nursery_after_ms(SHORT_MS));
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_task, &c, NULL), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), ETIMEDOUT);
    nursery_errors_free(errs);
    ck_assert_int_eq(c.rc, ETIMEDOUT);
    ck_assert_int_ge(c.end, c.deadline);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    latch_destroy(&c.entered);
    close_pipe(a);
}
END_TEST

/* ---- nursery_poll: cancellation ----------------------------------------- */

START_TEST(poll_cancelled_at_call_even_if_ready)
{
    int a[2];
    make_pipe(a);
    put_byte(a[1]);
    struct pollfd p = pollin(a[0]);
    size_t ready = 99;

    /* A cancelled scope. */
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_poll(&p, 1, HANG, &ready), ECANCELED);
    ck_assert_int_eq(nursery_poll(&p, 1, nursery_after_ms(-1), &ready), ECANCELED);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    ck_assert_uint_eq(close_scope(s), CALLED | CAUGHT);

    /* A cancelled body. */
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    ck_assert_int_eq(nursery_poll(&p, 1, HANG, &ready), ECANCELED);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* Uncancelled again: ready. */
    ck_assert_int_eq(nursery_poll(&p, 1, HANG, &ready), 0);
    ck_assert_uint_eq(ready, 1);
    ck_assert(p.revents & POLLIN);
    close_pipe(a);
}
END_TEST

/* A task that polls a ready pipe once its nursery is cancelled. */
struct late_poll {
    struct pollfd p;
    latch_t running, cancelled;
    int rc;
};

static int poll_after_cancel(void *arg, void **value)
{
    (void)value;
    struct late_poll *l = arg;
    latch_count_down(&l->running);
    task_expect(latch_wait(&l->cancelled));
    size_t ready = 99;
    l->rc = nursery_poll(&l->p, 1, HANG, &ready);
    return l->rc;
}

START_TEST(poll_in_cancelled_task_even_if_ready)
{
    int a[2];
    make_pipe(a);
    put_byte(a[1]);
    struct late_poll l = {.p = pollin(a[0]), .rc = -1};
    latch_init(&l.running, 1);
    latch_init(&l.cancelled, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_after_cancel, &l, NULL), 0);
    ck_assert(latch_wait(&l.running));
    ck_assert_int_eq(nursery_cancel(n), 0);
    latch_count_down(&l.cancelled);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(l.rc, ECANCELED);
    ck_assert_int_eq(l.p.revents, UNTOUCHED);
    latch_destroy(&l.running);
    latch_destroy(&l.cancelled);
    close_pipe(a);
}
END_TEST

static void *cancel_thread(void *arg)
{
    return INT2PTR(nursery_cancel(arg));
}

START_TEST(poll_blocked_cancelled_from_other_thread)
{
    int a[2];
    make_pipe(a);
    struct pollfd p = pollin(a[0]);
    struct poll_call c;
    poll_call_init(&c, &p, 1, NURSERY_FOREVER);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_task, &c, NULL), 0);
    ck_assert(latch_wait(&c.entered));
    pthread_t t;
    void *rc = INT2PTR(-1);
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_thread, n), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq(PTR2INT(rc), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 1);
    nursery_errors_free(errs);
    ck_assert_int_eq(c.rc, ECANCELED);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    latch_destroy(&c.entered);
    close_pipe(a);
}
END_TEST

START_TEST(poll_blocked_cancelled_by_scope_deadline)
{
    int a[2];
    make_pipe(a);
    struct pollfd p = pollin(a[0]);
    size_t ready = 99;
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_scope_t *s = open_scope(d, 0);
    ck_assert_int_eq(nursery_poll(&p, 1, NURSERY_FOREVER, &ready), ECANCELED);
    nursery_time_t end = nursery_now();
    ck_assert_int_ge(end, d);
    ck_assert_int_lt(end - d, LATE_NS);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);

    /* In a task, by a scope of its own. */
    struct poll_call c;
    poll_call_init(&c, &p, 1, NURSERY_FOREVER);
    c.scope_ms = SHORT_MS;
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_task, &c, NULL), 0);
    nursery_errors_t *errs = INT2PTR(1);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_ptr_null(errs);
    ck_assert_tasks_ok();
    ck_assert_int_eq(c.rc, ECANCELED);
    ck_assert_int_ge(c.end, c.scope_deadline);
    ck_assert_int_lt(c.end - c.scope_deadline, LATE_NS);
    ck_assert_uint_eq(c.outcome, ALL_BITS);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    latch_destroy(&c.entered);

    /* In a task, by its nursery's deadline (the task may not even have run
     * by then on a slow machine). */
    poll_call_init(&c, &p, 1, NURSERY_FOREVER);
    d = nursery_after_ms(SHORT_MS);
    ck_assert_int_eq(nursery_open_until(&n, pool, d), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_task, &c, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), NURSERY_EEXPIRED);
    ck_assert_msg(c.rc == ECANCELED || c.rc == -1, "nursery_poll returned %d", c.rc);
    if (c.rc == ECANCELED)
        ck_assert_int_ge(c.end, d);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    latch_destroy(&c.entered);
    close_pipe(a);
}
END_TEST

/* A shielded scope in a cancelled body still polls. */
START_TEST(poll_in_shield_inside_cancelled_body_works)
{
    int a[2];
    make_pipe(a);
    put_byte(a[1]);
    struct pollfd p = pollin(a[0]);
    size_t ready = 0;
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, NURSERY_SCOPE_SHIELD);
    ck_assert_int_eq(nursery_poll(&p, 1, HANG, &ready), 0);
    ck_assert_uint_eq(ready, 1);
    ck_assert_uint_eq(close_scope(s), 0);
    ck_assert_int_eq(nursery_poll(&p, 1, HANG, &ready), ECANCELED);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    close_pipe(a);
}
END_TEST

/* A wake-up left from a cancelled poll does not end the next one early. */
START_TEST(poll_after_cancelled_poll_waits_again)
{
    int a[2];
    make_pipe(a);
    struct pollfd p = pollin(a[0]);
    size_t ready = 99;
    for (int i = 0; i < 3; i++) {
        nursery_scope_t *s = open_scope(nursery_after_ms(SHORT_MS), 0);
        ck_assert_int_eq(nursery_poll(&p, 1, NURSERY_FOREVER, &ready), ECANCELED);
        ck_assert_uint_eq(close_scope(s), ALL_BITS);
        s = open_scope(NURSERY_FOREVER, 0);
        nursery_time_t d = nursery_after_ms(SHORT_MS);
        ck_assert_int_eq(nursery_poll(&p, 1, d, &ready), ETIMEDOUT);
        ck_assert_int_ge(nursery_now(), d);
        put_byte(a[1]);
        ck_assert_int_eq(nursery_poll(&p, 1, HANG, &ready), 0);
        ck_assert_uint_eq(ready, 1);
        char c;
        ck_assert_int_eq(read(a[0], &c, 1), 1);
        ck_assert_uint_eq(close_scope(s), 0);
    }
    close_pipe(a);
}
END_TEST

/* ---- nursery_poll: arguments, many descriptors, signals ------------------ */

START_TEST(poll_rejects_bad_input)
{
    int a[2];
    make_pipe(a);
    put_byte(a[1]);
    struct pollfd p = pollin(a[0]);
    size_t ready = 99;
    ck_assert_int_eq(nursery_poll(NULL, 1, HANG, &ready), EINVAL);
    ck_assert_int_eq(nursery_poll(&p, 1, HANG, NULL), EINVAL);
    ck_assert_int_eq(nursery_poll(&p, 0, HANG, &ready), EINVAL);
    ck_assert_int_eq(nursery_poll(NULL, 0, HANG, NULL), EINVAL);
    /* Before cancellation. */
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_poll(NULL, 1, HANG, &ready), EINVAL);
    ck_assert_int_eq(nursery_poll(&p, 0, HANG, &ready), EINVAL);
    ck_assert_int_eq(nursery_poll(&p, 1, HANG, NULL), EINVAL);
    ck_assert_uint_eq(close_scope(s), CALLED);
    ck_assert_int_eq(p.revents, UNTOUCHED);
    close_pipe(a);
}
END_TEST

#define MANY 40

START_TEST(poll_more_than_16_fds)
{
    int fds[MANY][2];
    struct pollfd p[MANY];
    for (int i = 0; i < MANY; i++) {
        make_pipe(fds[i]);
        p[i] = pollin(fds[i][0]);
    }
    p[3].fd = -1; /* ignored, as by poll() */

    /* Ready at the call. */
    put_byte(fds[37][1]);
    size_t ready = 99;
    ck_assert_int_eq(nursery_poll(p, MANY, HANG, &ready), 0);
    ck_assert_uint_eq(ready, 1);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(p[i].revents, i == 37 ? POLLIN : 0);
    char c;
    ck_assert_int_eq(read(fds[37][0], &c, 1), 1);

    /* Ready while blocked, in a task. */
    for (int i = 0; i < MANY; i++)
        p[i].revents = UNTOUCHED;
    struct poll_call call;
    poll_call_init(&call, p, MANY, HANG);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_task, &call, NULL), 0);
    ck_assert(latch_wait(&call.entered));
    put_byte(fds[25][1]);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(call.rc, 0);
    ck_assert_uint_eq(call.ready, 1);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(p[i].revents, i == 25 ? POLLIN : 0);
    ck_assert_int_eq(read(fds[25][0], &c, 1), 1);
    latch_destroy(&call.entered);

    /* Cancelled while blocked, and timed out. */
    for (int i = 0; i < MANY; i++)
        p[i].revents = UNTOUCHED;
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_scope_t *s = open_scope(d, 0);
    ck_assert_int_eq(nursery_poll(p, MANY, NURSERY_FOREVER, &ready), ECANCELED);
    ck_assert_int_ge(nursery_now(), d);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
    d = nursery_after_ms(SHORT_MS);
    ck_assert_int_eq(nursery_poll(p, MANY, d, &ready), ETIMEDOUT);
    ck_assert_int_ge(nursery_now(), d);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(p[i].revents, UNTOUCHED);
    for (int i = 0; i < MANY; i++)
        close_pipe(fds[i]);
}
END_TEST

/* poll(2)'s own errors come back: EINVAL for more descriptors than
 * RLIMIT_NOFILE. */
START_TEST(poll_too_many_fds_is_poll_einval)
{
    if (under_valgrind()) {
        /* valgrind keeps RLIMIT_NOFILE to itself: poll(2) never sees it. */
        printf("poll_too_many_fds_is_poll_einval: skipped under valgrind, whose setrlimit "
               "does not reach the kernel\n");
        return;
    }
    int a[2];
    make_pipe(a);
    struct pollfd first = pollin(a[0]);
    size_t ready = 99;
    /* This thread's wake-up descriptor is made now, under the old limit. */
    ck_assert_int_eq(nursery_poll(&first, 1, nursery_after_ms(1), &ready), ETIMEDOUT);

    struct rlimit old, low;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 64;
    if (old.rlim_cur != RLIM_INFINITY && old.rlim_cur <= 64) {
        printf("poll_too_many_fds_is_poll_einval: skipped: RLIMIT_NOFILE is already %llu\n",
               (unsigned long long)old.rlim_cur);
        close_pipe(a);
        return;
    }
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) {
        printf("poll_too_many_fds_is_poll_einval: skipped: cannot lower RLIMIT_NOFILE (%s)\n",
               strerror(errno));
        close_pipe(a);
        return;
    }
    enum { N = 200 };
    struct pollfd *p = calloc(N, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < N; i++)
        p[i] = pollin(i == 0 ? a[0] : -1);
    int rc = nursery_poll(p, N, nursery_after_ms(SHORT_MS), &ready);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    ck_assert_int_eq(rc, EINVAL);
    ck_assert_int_eq(p[0].revents, UNTOUCHED);
    free(p);
    close_pipe(a);
}
END_TEST

/* EMFILE when a thread's wake-up descriptor cannot be made: a new thread,
 * with every descriptor in use, polls in a scope (code that can be
 * cancelled, so it needs one). */
struct emfile {
    int fd;
    int rc;
    int open_rc, close_rc;
};

static void *poll_in_new_thread(void *arg)
{
    struct emfile *e = arg;
    struct pollfd p = pollin(e->fd);
    size_t ready = 99;
    nursery_scope_t *s = NULL;
    e->open_rc = nursery_scope_open(&s, NURSERY_FOREVER, 0);
    if (e->open_rc == 0) {
        e->rc = nursery_poll(&p, 1, nursery_after_ms(SHORT_MS), &ready);
        e->close_rc = nursery_scope_close(s, NULL);
    }
    return NULL;
}

START_TEST(poll_emfile_when_wakeup_fd_cannot_be_made)
{
    int a[2];
    make_pipe(a);
    struct rlimit old, low;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = 128;
    if ((old.rlim_cur != RLIM_INFINITY && old.rlim_cur <= 128) ||
        setrlimit(RLIMIT_NOFILE, &low) != 0) {
        printf("poll_emfile_when_wakeup_fd_cannot_be_made: skipped: cannot set RLIMIT_NOFILE "
               "to 128\n");
        close_pipe(a);
        return;
    }
    /* Every descriptor below the limit in use. */
    int dups[128], ndups = 0;
    while (ndups < 128) {
        int fd = dup(a[0]);
        if (fd < 0)
            break;
        dups[ndups++] = fd;
    }
    int dup_errno = errno;
    struct emfile e = {.fd = a[0], .rc = -1, .open_rc = -1, .close_rc = -1};
    pthread_t t;
    int create_rc = pthread_create(&t, NULL, poll_in_new_thread, &e);
    if (create_rc == 0)
        pthread_join(t, NULL);
    for (int i = 0; i < ndups; i++)
        close(dups[i]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    ck_assert_int_eq(dup_errno, EMFILE);
    ck_assert_int_eq(create_rc, 0);
    ck_assert_int_eq(e.open_rc, 0);
    ck_assert_int_eq(e.close_rc, 0);
    ck_assert_msg(e.rc == EMFILE || e.rc == ENFILE, "nursery_poll returned %d", e.rc);

    /* With a descriptor free again, a new thread polls normally. */
    e.rc = -1;
    ck_assert_int_eq(pthread_create(&t, NULL, poll_in_new_thread, &e), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(e.rc, ETIMEDOUT);
    ck_assert_int_eq(e.close_rc, 0);
    close_pipe(a);
}
END_TEST

/* Interrupted by a signal, it goes on waiting. */
static atomic_int signals_seen;

static void count_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

struct signaller {
    pthread_t target;
    atomic_int stop;
    int write_fd;   /* written to after `signals` were seen, or -1 */
    int signals;
};

static void *send_signals(void *arg)
{
    struct signaller *s = arg;
    struct timespec pace = {0, 1000 * 1000};
    bool wrote = false;
    while (!atomic_load(&s->stop)) {
        pthread_kill(s->target, SIGUSR1);
        if (!wrote && s->write_fd >= 0 && atomic_load(&signals_seen) >= s->signals) {
            char c = 'x';
            wrote = write(s->write_fd, &c, 1) == 1;
        }
        nanosleep(&pace, NULL);
    }
    return NULL;
}

START_TEST(poll_goes_on_waiting_when_interrupted_by_signals)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = count_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: poll(2) itself fails with EINTR */
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    int a[2];
    make_pipe(a);

    /* Signals, then data. */
    atomic_store(&signals_seen, 0);
    struct signaller s = {.target = pthread_self(), .write_fd = a[1], .signals = 5};
    atomic_init(&s.stop, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, send_signals, &s), 0);
    struct pollfd p = pollin(a[0]);
    size_t ready = 99;
    int rc = nursery_poll(&p, 1, HANG, &ready);
    atomic_store(&s.stop, 1);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(ready, 1);
    ck_assert_int_ge(atomic_load(&signals_seen), 5);
    char c;
    ck_assert_int_eq(read(a[0], &c, 1), 1);

    /* Signals, then the deadline. */
    atomic_store(&signals_seen, 0);
    s.write_fd = -1;
    atomic_store(&s.stop, 0);
    ck_assert_int_eq(pthread_create(&t, NULL, send_signals, &s), 0);
    p = pollin(a[0]);
    nursery_time_t d = nursery_after_ms(200);
    rc = nursery_poll(&p, 1, d, &ready);
    nursery_time_t end = nursery_now();
    atomic_store(&s.stop, 1);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(rc, ETIMEDOUT);
    ck_assert_int_ge(end, d);
    printf("poll_goes_on_waiting_when_interrupted_by_signals: %d signals during the timed poll\n",
           atomic_load(&signals_seen));
    close_pipe(a);
    /* The handler stays: a signal still pending must not end the test. */
}
END_TEST

/* A worker blocked in nursery_poll counts as blocked: the pool adds a
 * thread for the task that will wake it. */
struct wake_pair {
    int fds[2];
    int poll_rc;
};

static int poll_for_sibling(void *arg, void **value)
{
    (void)value;
    struct wake_pair *w = arg;
    struct pollfd p = pollin(w->fds[0]);
    size_t ready = 0;
    w->poll_rc = nursery_poll(&p, 1, nursery_after_ms(TEST_HANG_MS / 3), &ready);
    return 0;
}

static int write_for_sibling(void *arg, void **value)
{
    (void)value;
    struct wake_pair *w = arg;
    char c = 'x';
    return write(w->fds[1], &c, 1) == 1 ? 0 : EIO;
}

START_TEST(poll_in_worker_lets_pool_add_a_thread)
{
    nursery_pool_options_t o = {.threads = 1, .max_threads = 2};
    nursery_pool_t *small = NULL;
    ck_assert_int_eq(nursery_pool_create(&small, &o), 0);
    struct wake_pair w = {.poll_rc = -1};
    make_pipe(w.fds);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, small), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_for_sibling, &w, NULL), 0);
    ck_assert_int_eq(nursery_start_soon(n, write_for_sibling, &w, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(w.poll_rc, 0);
    close_pipe(w.fds);
    ck_assert_int_eq(nursery_pool_destroy(small), 0);
}
END_TEST

/* A worker sleeping in nursery_poll() or nursery_child_wait() counts as
 * blocked in the pool's statistics. */
struct blocked_workers {
    nursery_pool_t *pool;
    size_t count;
};

static bool workers_blocked(const void *ctx)
{
    const struct blocked_workers *w = ctx;
    nursery_pool_stats_t st;
    return nursery_pool_stats(w->pool, &st) == 0 && st.blocked == w->count;
}

static bool wait_pool_blocked(nursery_pool_t *p, size_t blocked)
{
    return poll_until(workers_blocked, &(struct blocked_workers){p, blocked});
}

START_TEST(worker_in_poll_or_child_wait_counts_as_blocked)
{
    nursery_pool_t *one = capped_pool(1);
    int a[2];
    make_pipe(a);
    struct pollfd p = pollin(a[0]);
    struct poll_call c;
    poll_call_init(&c, &p, 1, HANG);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, one), 0);
    ck_assert_int_eq(nursery_start_soon(n, poll_task, &c, NULL), 0);
    ck_assert(latch_wait(&c.entered));
    ck_assert(wait_pool_blocked(one, 1));
    put_byte(a[1]);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert(wait_pool_blocked(one, 0));
    latch_destroy(&c.entered);

    struct child_call cc = {.pid = pausing_child(30), .deadline = HANG, .rc = -1};
    latch_init(&cc.entered, 1);
    ck_assert_int_eq(nursery_open(&n, one), 0);
    ck_assert_int_eq(nursery_start_soon(n, child_wait_task, &cc, NULL), 0);
    ck_assert(latch_wait(&cc.entered));
    ck_assert(wait_pool_blocked(one, 1));
    ck_assert_int_eq(kill(cc.pid, SIGKILL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(cc.rc, 0);
    ck_assert(WIFSIGNALED(cc.status));
    assert_no_zombie(cc.pid);
    latch_destroy(&cc.entered);
    close_pipe(a);
    ck_assert_int_eq(nursery_pool_destroy(one), 0);
}
END_TEST

/* ---- a thousand pollers woken by one failure ----------------------------- */

#define POLLERS 1000
#define POLL_POOL_THREADS (POLLERS + 2)
#define POLL_POOL_MAX 1100

struct poller {
    int fds[2];
    latch_t *polling;
    int rc;
};

static int poller_task(void *arg, void **value)
{
    (void)value;
    struct poller *p = arg;
    struct pollfd pfd = pollin(p->fds[0]);
    size_t ready = 0;
    latch_count_down(p->polling);
    p->rc = nursery_poll(&pfd, 1, NURSERY_FOREVER, &ready);
    return p->rc;
}

static int fail_task(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "one failure wakes them all");
}

START_TEST(thousand_pollers_woken_by_one_failure)
{
    if (under_valgrind()) {
        printf("thousand_pollers_woken_by_one_failure: skipped under valgrind (it allows %d "
               "threads by default; this needs %d)\n",
               500, POLL_POOL_MAX);
        return;
    }
    /* Two per pipe, one wake-up descriptor per thread, and some spare. */
    rlim_t need = 2 * POLLERS + POLL_POOL_MAX + 200;
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        printf("thousand_pollers_woken_by_one_failure: skipped: RLIMIT_NOFILE's hard limit is "
               "%llu, this test needs %llu descriptors\n",
               (unsigned long long)rl.rlim_max, (unsigned long long)need);
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);

    nursery_pool_options_t o = {.threads = POLL_POOL_THREADS,
                                .max_threads = POLL_POOL_MAX,
                                .stack_size = 512 * 1024};
    nursery_pool_t *big = NULL;
    ck_assert_int_eq(nursery_pool_create(&big, &o), 0);
    struct poller *p = calloc(POLLERS, sizeof(*p));
    ck_assert_ptr_nonnull(p);
    latch_t polling;
    latch_init(&polling, POLLERS);
    for (int i = 0; i < POLLERS; i++) {
        make_pipe(p[i].fds);
        p[i].polling = &polling;
        p[i].rc = -1;
    }
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, big), 0);
    for (int i = 0; i < POLLERS; i++)
        ck_assert_int_eq(nursery_start_soon(n, poller_task, &p[i], NULL), 0);
    ck_assert(latch_wait(&polling));
    ck_assert_int_eq(nursery_start_soon(n, fail_task, NULL, NULL), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    ck_assert_ptr_nonnull(errs);
    ck_assert_uint_eq(nursery_errors_count(errs), 1);
    ck_assert_int_eq(nursery_error_code(nursery_errors_get(errs, 0)), EIO);
    ck_assert_uint_eq(nursery_errors_dropped(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), POLLERS);
    nursery_errors_free(errs);
    int bad = -1;
    for (int i = 0; i < POLLERS; i++) {
        if (p[i].rc != ECANCELED && bad < 0)
            bad = i;
        close_pipe(p[i].fds);
    }
    ck_assert_msg(bad < 0, "poller %d returned %d", bad, bad < 0 ? 0 : p[bad].rc);
    free(p);
    latch_destroy(&polling);
    ck_assert_int_eq(nursery_pool_destroy(big), 0);
}
END_TEST

/* ---- nursery_child_wait ---------------------------------------------------- */

START_TEST(child_wait_reaps_exit_status)
{
    pid_t pid = exiting_child(3);
    int status = -1;
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), 0);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 3);
    assert_no_zombie(pid);
    /* Reaped already. */
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), ECHILD);

    /* status may be NULL. */
    pid = exiting_child(0);
    ck_assert_int_eq(nursery_child_wait(pid, NULL, HANG), 0);
    assert_no_zombie(pid);

    /* Killed by a signal. */
    pid = pausing_child(30);
    ck_assert_int_eq(kill(pid, SIGUSR2), 0);
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), 0);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGUSR2);
    assert_no_zombie(pid);
}
END_TEST

START_TEST(child_wait_in_task)
{
    struct child_call c = {.pid = exiting_child(7), .deadline = HANG, .rc = -1};
    latch_init(&c.entered, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, child_wait_task, &c, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(c.rc, 0);
    ck_assert(WIFEXITED(c.status));
    ck_assert_int_eq(WEXITSTATUS(c.status), 7);
    assert_no_zombie(c.pid);
    latch_destroy(&c.entered);
}
END_TEST

START_TEST(child_wait_cancelled_by_deadline_then_reaped_in_shield)
{
    pid_t pid = pausing_child(30);
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    nursery_scope_t *s = open_scope(d, 0);
    int status = -1;
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), ECANCELED);
    nursery_time_t end = nursery_now();
    ck_assert_int_ge(end, d);
    ck_assert_int_lt(end - d, LATE_NS);
    /* Left running and unreaped. */
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, WNOHANG), 0);
    /* Still cancelled here: kill it and wait in a shield. */
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), ECANCELED);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    nursery_scope_t *shield = open_scope(HANG, NURSERY_SCOPE_SHIELD);
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), 0);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGKILL);
    ck_assert_uint_eq(close_scope(shield), 0);
    ck_assert_uint_eq(close_scope(s), ALL_BITS);
    assert_no_zombie(pid);
}
END_TEST

START_TEST(child_wait_times_out_leaving_child)
{
    pid_t pid = pausing_child(30);
    int status = -1;
    nursery_time_t d = nursery_after_ms(SHORT_MS);
    ck_assert_int_eq(nursery_child_wait(pid, &status, d), ETIMEDOUT);
    nursery_time_t end = nursery_now();
    ck_assert_int_ge(end, d);
    ck_assert_int_lt(end - d, LATE_NS);
    int st = 0;
    ck_assert_int_eq(waitpid(pid, &st, WNOHANG), 0);
    /* A deadline already passed only looks. */
    ck_assert_int_eq(nursery_child_wait(pid, &status, nursery_after_ms(-1)), ETIMEDOUT);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), 0);
    ck_assert(WIFSIGNALED(status));
    assert_no_zombie(pid);
}
END_TEST

START_TEST(child_wait_cancelled_at_call_leaves_child_unreaped)
{
    pid_t pid = exiting_child(0);
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    int status = -1;
    ck_assert_int_eq(nursery_child_wait(pid, &status, HANG), ECANCELED);
    ck_assert_int_eq(nursery_child_wait(pid, &status, nursery_after_ms(-1)), ECANCELED);
    ck_assert_uint_eq(close_scope(s), CALLED | CAUGHT);
    /* Not reaped: this waitpid gets it. */
    int st = -1;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
}
END_TEST

START_TEST(child_wait_blocked_cancelled_from_other_thread)
{
    struct child_call c = {.pid = pausing_child(30), .deadline = NURSERY_FOREVER, .rc = -1};
    latch_init(&c.entered, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, child_wait_task, &c, NULL), 0);
    ck_assert(latch_wait(&c.entered));
    pthread_t t;
    void *rc = INT2PTR(-1);
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_thread, n), 0);
    ck_assert_int_eq(pthread_join(t, &rc), 0);
    ck_assert_int_eq(PTR2INT(rc), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(c.rc, ECANCELED);
    int st = 0;
    ck_assert_int_eq(waitpid(c.pid, &st, WNOHANG), 0); /* still running */
    kill_and_reap(c.pid);
    latch_destroy(&c.entered);
}
END_TEST

START_TEST(child_wait_rejects_bad_pids)
{
    int status = -1;
    ck_assert_int_eq(nursery_child_wait(0, &status, HANG), EINVAL);
    ck_assert_int_eq(nursery_child_wait(-1, &status, HANG), EINVAL);
    ck_assert_int_eq(nursery_child_wait(-getpid(), &status, HANG), EINVAL);
    ck_assert_int_eq(nursery_child_wait(0, NULL, HANG), EINVAL);
    /* Not children of this process. */
    ck_assert_int_eq(nursery_child_wait(getppid(), &status, HANG), ECHILD);
    ck_assert_int_eq(nursery_child_wait(getpid(), &status, HANG), ECHILD);
    ck_assert_int_eq(nursery_child_wait(1, &status, HANG), ECHILD);

    /* In this order: EINVAL, ECANCELED, ECHILD. */
    nursery_scope_t *s = open_scope(NURSERY_FOREVER, 0);
    ck_assert_int_eq(nursery_scope_cancel(s), 0);
    ck_assert_int_eq(nursery_child_wait(0, &status, HANG), EINVAL);
    ck_assert_int_eq(nursery_child_wait(getppid(), &status, HANG), ECANCELED);
    ck_assert_uint_eq(close_scope(s), CALLED | CAUGHT);
}
END_TEST

/* ---- the suite ------------------------------------------------------------ */

static Suite *io_suite(void)
{
    Suite *s = suite_create("io");
    TCase *tc = tcase_with_timeout(s, "poll", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, poll_ready_pipe_returns_0_with_revents);
    tcase_add_test(tc, poll_in_task_woken_by_data);
    tcase_add_test(tc, poll_times_out);
    tcase_add_test(tc, poll_cancelled_at_call_even_if_ready);
    tcase_add_test(tc, poll_in_cancelled_task_even_if_ready);
    tcase_add_test(tc, poll_blocked_cancelled_from_other_thread);
    tcase_add_test(tc, poll_blocked_cancelled_by_scope_deadline);
    tcase_add_test(tc, poll_in_shield_inside_cancelled_body_works);
    tcase_add_test(tc, poll_after_cancelled_poll_waits_again);
    tcase_add_test(tc, poll_rejects_bad_input);
    tcase_add_test(tc, poll_more_than_16_fds);
    tcase_add_test(tc, poll_too_many_fds_is_poll_einval);
    tcase_add_test(tc, poll_emfile_when_wakeup_fd_cannot_be_made);
    tcase_add_test(tc, poll_goes_on_waiting_when_interrupted_by_signals);
    tcase_add_test(tc, poll_in_worker_lets_pool_add_a_thread);
    tcase_add_test(tc, worker_in_poll_or_child_wait_counts_as_blocked);

    tc = tcase_with_timeout(s, "thousand", 120);
    tcase_add_test(tc, thousand_pollers_woken_by_one_failure);

    tc = tcase_with_timeout(s, "child", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, child_wait_reaps_exit_status);
    tcase_add_test(tc, child_wait_in_task);
    tcase_add_test(tc, child_wait_cancelled_by_deadline_then_reaped_in_shield);
    tcase_add_test(tc, child_wait_times_out_leaving_child);
    tcase_add_test(tc, child_wait_cancelled_at_call_leaves_child_unreaped);
    tcase_add_test(tc, child_wait_blocked_cancelled_from_other_thread);
    tcase_add_test(tc, child_wait_rejects_bad_pids);
    return s;
}

int main(void)
{
    return run_suite(io_suite());
}
