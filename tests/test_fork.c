/* SPDX-License-Identifier: MIT */
/*
 * test_fork.c - fork() from a program that uses the library (issue 6, items
 * 5 and 6): what the child of a fork may and may not do with the parent's
 * objects, and that a task of the parent never runs in the child.
 *
 * Every case forks a child.  The child arms alarm(CHILD_ALARM_S) first, so a
 * hang there ends as SIGALRM; it reports through its exit status and a pipe
 * (the step it is at, and what failed), and the parent waits for it with a
 * bounded wait of its own before it asserts.  Most cases fork from a task,
 * on a worker thread that has tasks queued behind it: parent tasks record in
 * memory shared with the child (MAP_SHARED) in which process they ran, and
 * the parent asserts that each ran exactly once, in the parent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "helpers.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* The sanitizers' runtimes are not fork-safe in a multi-threaded process:
 * ThreadSanitizer kills a child that starts a thread (die_after_fork), and
 * the allocator of GCC 12's AddressSanitizer can be inherited locked by a
 * parent thread that was inside it at the fork, so that a thread started in
 * the child (its allocator cache empty) hangs on that lock.  Under either,
 * the child skips the steps that start a new pool, and says so. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define CHILD_CANNOT_START_THREADS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define CHILD_CANNOT_START_THREADS 1
#endif
#endif

#define CHILD_ALARM_S 10            /* a child that hangs dies of SIGALRM after this */
#define CHILD_WAIT_MS 30000         /* the parent kills a child still alive after this */
#define CHILD_WAIT_DEADLINE_MS 2000 /* deadline of the child's own waits on parent objects */

/* Exit status of a child whose check failed (0 and 1 mean what a task
 * returned, in the cases where a task returns in the child). */
#define CHILD_FAILED 3

/* ---- Memory shared with the children -------------------------------------- */

/* Tasks of the parent queued behind a forking task, plus one capture. */
enum { PARENT_TASKS = 16 };

struct shared {
    pid_t parent;                      /* the test process */
    atomic_int foreign;                /* parent tasks that ran in another process */
    atomic_int runs[PARENT_TASKS + 1]; /* runs of parent task i in the parent */
};

static struct shared *shm;

/* Checked fixture: mapped in the test's own process, before any fork. */
static void shared_setup(void)
{
    shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(shm, MAP_FAILED);
    shm->parent = getpid();
    atomic_init(&shm->foreign, 0);
    for (int i = 0; i <= PARENT_TASKS; i++)
        atomic_init(&shm->runs[i], 0);
}

static void shared_teardown(void)
{
    munmap(shm, sizeof(*shm));
}

/* A task of the parent: records where it ran (arg: its index). */
static int parent_task(void *arg, void **value)
{
    (void)value;
    if (getpid() == shm->parent)
        atomic_fetch_add(&shm->runs[PTR2INT(arg)], 1);
    else
        atomic_fetch_add(&shm->foreign, 1);
    return 0;
}

/* Each parent task ran once, in the parent; none ran in a child. */
static void assert_parent_tasks_ran_once_here(void)
{
    ck_assert_msg(atomic_load(&shm->foreign) == 0, "%d task(s) of the parent ran in the child",
                  atomic_load(&shm->foreign));
    for (int i = 0; i <= PARENT_TASKS; i++)
        ck_assert_msg(atomic_load(&shm->runs[i]) == 1, "parent task %d ran %d times in the parent",
                      i, atomic_load(&shm->runs[i]));
}

/* ---- The child's side ----------------------------------------------------- */

/* Write end of the pipe to the parent (in the child only). */
static int child_out = -1;

static void child_note(const char *fmt, ...) NURSERY_PRINTF(1, 2);

static void child_note(const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    if (len > (int)sizeof(line) - 2)
        len = (int)sizeof(line) - 2;
    line[len++] = '\n';
    for (int off = 0; off < len;) {
        ssize_t put = write(child_out, line + off, (size_t)(len - off));
        if (put <= 0)
            return;
        off += (int)put;
    }
}

/* What the child is about to do: the last step noted is where it hung. */
#define child_step(what) child_note("step: %s", what)

#define child_expect(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            child_note("FAILED at line %d: %s", __LINE__, #cond);                                  \
            _exit(CHILD_FAILED);                                                                   \
        }                                                                                          \
    } while (0)

#define child_expect_eq(a, b)                                                                      \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_) {                                                                            \
            child_note("FAILED at line %d: %s == %s (%lld, %lld)", __LINE__, #a, #b, a_, b_);      \
            _exit(CHILD_FAILED);                                                                   \
        }                                                                                          \
    } while (0)

/* Threads of the calling process (the entries of /proc/self/task). */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* ---- Forking and waiting for the child ------------------------------------ */

struct child {
    pid_t pid;
    int from; /* read end of the child's report pipe */
};

/* Forks.  In the child: returns 0 with SIGALRM at its default action,
 * unblocked (a worker thread may have it blocked) and armed.  In the
 * parent: returns the child's pid, or -1 with errno set. */
static pid_t child_fork(struct child *c)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        child_out = fds[1];
        signal(SIGALRM, SIG_DFL);
        sigset_t alarm_only;
        sigemptyset(&alarm_only);
        sigaddset(&alarm_only, SIGALRM);
        pthread_sigmask(SIG_UNBLOCK, &alarm_only, NULL);
        alarm(CHILD_ALARM_S);
        return 0;
    }
    close(fds[1]);
    c->pid = pid;
    c->from = fds[0];
    return pid;
}

/* Reads the child's report until it exits (the pipe's end of file), at most
 * CHILD_WAIT_MS, then reaps it.  Returns its wait status, or -1 when it had
 * to be killed. */
static int child_wait(struct child *c, char *report, size_t size)
{
    size_t len = 0;
    bool killed = false;
    nursery_time_t deadline = nursery_after_ms(CHILD_WAIT_MS);
    for (;;) {
        int64_t left_ms = (deadline - nursery_now()) / 1000000;
        if (left_ms <= 0) {
            kill(c->pid, SIGKILL);
            killed = true;
            break;
        }
        struct pollfd pfd = {.fd = c->from, .events = POLLIN};
        int ready = poll(&pfd, 1, (int)left_ms);
        if (ready <= 0)
            continue; /* EINTR, or the deadline: the loop tells which */
        char buf[512];
        ssize_t got = read(c->from, buf, sizeof(buf));
        if (got == 0)
            break;
        if (got < 0)
            continue;
        size_t keep = (size_t)got < size - 1 - len ? (size_t)got : size - 1 - len;
        memcpy(report + len, buf, keep);
        len += keep;
    }
    report[len] = '\0';
    close(c->from);
    int status = 0;
    while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
        continue;
    return killed ? -1 : status;
}

/* The child exited with `expected`; otherwise fails with what it said. */
static void assert_child_exit(struct child *c, int expected)
{
    char report[4096];
    int status = child_wait(c, report, sizeof(report));
    ck_assert_msg(status != -1, "the child was still running after %d ms; it reported:\n%s",
                  CHILD_WAIT_MS, report);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        ck_assert_msg(false, "the child was killed by signal %d (%s)%s; it reported:\n%s", sig,
                      strsignal(sig), sig == SIGALRM ? ": it hung" : "", report);
    }
    ck_assert_msg(WEXITSTATUS(status) == expected,
                  "the child exited with status %d, not %d%s; it reported:\n%s",
                  WEXITSTATUS(status), expected,
                  WEXITSTATUS(status) == 99 ? " (99: valgrind found an error)" : "", report);
}

/* ---- A task that forks ---------------------------------------------------- */

struct forking;
typedef int (*child_fn)(struct forking *f);

/* One worker thread (the pool may grow) runs a task, F, that queues the
 * parent tasks and a capture on its own worker, then forks at once: in the
 * child's copy of the pool they are all still queued. */
struct forking {
    child_fn in_child;       /* the child's checks: its exit status (or F's return value) */
    bool in_cancelled_scope; /* F forks inside a nursery it opened and cancelled */
    bool returns_in_child;   /* F returns in_child's value in the child, instead of _exit */
    int expect_status;       /* the child's expected exit status */

    nursery_pool_t *pool;      /* the parent's pool */
    nursery_t *n;              /* the parent's nursery: F and the parent tasks */
    nursery_result_t *capture; /* parent task PARENT_TASKS, captured; set by F */
    struct child child;        /* set by F in the parent */
    int fork_errno;            /* 0, or why fork() failed */
};

/* In the child: the parent's objects stay reachable from here, so that a
 * leak checker in the child (valgrind follows fork) does not report them as
 * lost (they cannot be freed there). */
static struct forking child_keeps;
static void *child_keeps_objects[2];

static int forking_task(void *arg, void **value)
{
    (void)value;
    struct forking *f = arg;
    for (int i = 0; i < PARENT_TASKS; i++)
        task_expect_eq(nursery_start_soon(f->n, parent_task, INT2PTR(i), NULL), 0);
    task_expect_eq(
        nursery_capture_start_soon(f->n, parent_task, INT2PTR(PARENT_TASKS), NULL, &f->capture), 0);
    nursery_t *scope = NULL;
    if (f->in_cancelled_scope) {
        task_expect_eq(nursery_open(&scope, f->pool), 0);
        task_expect_eq(nursery_cancel(scope), 0);
        task_expect(nursery_cancelled());
    }
    pid_t pid = child_fork(&f->child);
    if (pid == 0) {
        child_keeps = *f;
        int status = f->in_child(f);
        if (f->returns_in_child)
            return status;
        _exit(status);
    }
    if (pid < 0)
        f->fork_errno = errno;
    if (scope)
        task_expect_eq(nursery_join(scope, NURSERY_FOREVER, NULL), 0);
    return 0;
}

/* Runs F on a fresh pool, then asserts on the child and on the parent's
 * tasks. */
static void run_forking_task(struct forking *f)
{
    f->pool = test_pool(1);
    ck_assert_int_eq(nursery_open(&f->n, f->pool), 0);
    ck_assert_int_eq(nursery_start_soon(f->n, forking_task, f, NULL), 0);
    ck_assert_int_eq(nursery_join(f->n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_msg(f->fork_errno == 0, "fork: %s", strerror(f->fork_errno));
    assert_child_exit(&f->child, f->expect_status);
    assert_parent_tasks_ran_once_here();
    assert_value(f->capture, 0);
    nursery_result_release(f->capture);
    destroy_pool(f->pool);
}

/* A task the child tries to start: counts its runs and its arg_destroy. */
struct counted {
    atomic_int runs;
    atomic_int destroyed;
};

static int counted_task(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct counted *)arg)->runs, 1);
    return 0;
}

static void counted_destroy(void *arg)
{
    atomic_fetch_add(&((struct counted *)arg)->destroyed, 1);
}

static const nursery_task_options_t counted_opts = {.arg_destroy = counted_destroy};

/* ---- Item 5: the forking thread in the child ------------------------------ */

static int child_sees_no_cancellation(struct forking *f)
{
    (void)f;
    child_step("nursery_cancelled()");
    child_expect(!nursery_cancelled());
    child_step("nursery_checkpoint()");
    child_expect_eq(nursery_checkpoint(), 0);
    return 0;
}

START_TEST(forked_child_of_cancelled_task_is_not_cancelled)
{
    struct forking f = {.in_child = child_sees_no_cancellation, .in_cancelled_scope = true};
    run_forking_task(&f);
}
END_TEST

static int child_starts_in_parent_nursery(struct forking *f)
{
    struct counted c = {0};
    child_step("nursery_start_soon(parent's nursery)");
    child_expect_eq(nursery_start_soon(f->n, counted_task, &c, &counted_opts), NURSERY_EFORKED);
    child_expect_eq(atomic_load(&c.destroyed), 1);

    child_step("nursery_capture_start_soon(parent's nursery)");
    nursery_result_t *r = INT2PTR(1);
    child_expect_eq(nursery_capture_start_soon(f->n, counted_task, &c, &counted_opts, &r),
                    NURSERY_EFORKED);
    child_expect(r == NULL);
    child_expect_eq(atomic_load(&c.destroyed), 2);

    child_step("nursery_start(parent's nursery)");
    nursery_result_t *done = INT2PTR(1);
    void *started = NULL;
    child_expect_eq(nursery_start(f->n, counted_task, &c, &counted_opts,
                                  nursery_after_ms(CHILD_WAIT_DEADLINE_MS), &started, &done),
                    NURSERY_EFORKED);
    child_expect(done == NULL);
    child_expect_eq(atomic_load(&c.destroyed), 3);
    child_expect_eq(atomic_load(&c.runs), 0);
    return 0;
}

START_TEST(forked_child_cannot_start_in_parent_nursery)
{
    struct forking f = {.in_child = child_starts_in_parent_nursery};
    run_forking_task(&f);
}
END_TEST

static int child_waits_on_parent_capture(struct forking *f)
{
    nursery_result_t *r = f->capture;
    nursery_time_t deadline = nursery_after_ms(CHILD_WAIT_DEADLINE_MS);
    child_step("nursery_result_wait(parent's capture)");
    child_expect_eq(nursery_result_wait(r, deadline), NURSERY_EFORKED);
    child_step("nursery_wait_all(parent's capture)");
    child_expect_eq(nursery_wait_all(&r, 1, deadline), NURSERY_EFORKED);
    child_step("nursery_wait_any(parent's capture)");
    size_t index = 7;
    child_expect_eq(nursery_wait_any(&r, 1, deadline, &index), NURSERY_EFORKED);
    child_step("nursery_result_value(parent's capture)");
    void *v = NULL;
    child_expect_eq(nursery_result_value(r, &v), NURSERY_EFORKED);
    child_step("nursery_result_cancel(parent's capture)");
    child_expect_eq(nursery_result_cancel(r), NURSERY_EFORKED);
    child_expect_eq(atomic_load(&shm->foreign), 0);
    return 0;
}

START_TEST(forked_child_cannot_wait_on_parent_capture)
{
    struct forking f = {.in_child = child_waits_on_parent_capture};
    run_forking_task(&f);
}
END_TEST

static int child_sleeps(struct forking *f)
{
    (void)f;
    child_step("nursery_sleep(20 ms)");
    child_expect_eq(nursery_sleep(nursery_after_ms(20)), 0);
    child_step("count the child's threads");
    child_expect_eq(thread_count(), 1);
    child_expect_eq(atomic_load(&shm->foreign), 0);
    return 0;
}

START_TEST(forked_child_sleep_starts_no_thread_and_runs_no_parent_task)
{
    struct forking f = {.in_child = child_sleeps};
    run_forking_task(&f);
}
END_TEST

static int child_opens_nurseries(struct forking *f)
{
    child_step("nursery_open(parent's pool)");
    nursery_t *x = NULL;
    child_expect_eq(nursery_open(&x, f->pool), NURSERY_EFORKED);
#ifdef CHILD_CANNOT_START_THREADS
    child_note("skipped under a sanitizer: a new default pool in the child");
#else
    /* A new default pool; and the nursery is not inside the parent's
     * cancelled scope (it would end ECANCELED, its task never run). */
    child_step("nursery_open(NULL): a new default pool");
    child_expect_eq(nursery_open(&x, NULL), 0);
    struct counted c = {0};
    child_step("nursery_start_soon in the child's nursery");
    child_expect_eq(nursery_start_soon(x, counted_task, &c, &counted_opts), 0);
    child_step("nursery_join of the child's nursery");
    child_expect_eq(nursery_join(x, NURSERY_FOREVER, NULL), 0);
    child_expect_eq(atomic_load(&c.runs), 1);
    child_expect_eq(atomic_load(&c.destroyed), 1);
#endif
    child_expect_eq(atomic_load(&shm->foreign), 0);
    return 0;
}

START_TEST(forked_child_opens_only_on_new_pools)
{
    struct forking f = {.in_child = child_opens_nurseries, .in_cancelled_scope = true};
    run_forking_task(&f);
}
END_TEST

/* ---- Item 5: a task that forks and returns in the child ------------------- */

static int child_returns_zero(struct forking *f)
{
    (void)f;
    return 0;
}

static int child_returns_error(struct forking *f)
{
    (void)f;
    return nursery_fail(EIO, "failed in the child");
}

START_TEST(task_returning_0_in_child_exits_it_with_0)
{
    struct forking f = {.in_child = child_returns_zero, .returns_in_child = true};
    run_forking_task(&f);
}
END_TEST

START_TEST(task_failing_in_child_exits_it_with_1)
{
    struct forking f = {
        .in_child = child_returns_error, .returns_in_child = true, .expect_status = 1};
    run_forking_task(&f);
}
END_TEST

/* ---- Item 6: joins and stats that would wait for the parent's threads ----- */

/* Tasks that run until a gate opens. */
struct running {
    latch_t started;
    nursery_result_t *gate;
};

static int run_until_gate(void *arg, void **value)
{
    (void)value;
    struct running *r = arg;
    latch_count_down(&r->started);
    return gate_wait(r->gate);
}

START_TEST(forked_child_join_of_parent_nursery_is_eforked)
{
    /* The test thread opens a nursery whose tasks are running, and forks. */
    nursery_pool_t *p = test_pool(2);
    struct running run = {.gate = gate_new()};
    latch_init(&run.started, 2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(nursery_start_soon(n, run_until_gate, &run, NULL), 0);
    ck_assert(latch_wait(&run.started));

    struct child c;
    pid_t pid = child_fork(&c);
    if (pid == 0) {
        child_keeps_objects[0] = n;
        child_keeps_objects[1] = p;
        child_step("nursery_join(parent's nursery, its tasks running)");
        nursery_errors_t *errors = NULL;
        child_expect_eq(nursery_join(n, nursery_after_ms(CHILD_WAIT_DEADLINE_MS), &errors),
                        NURSERY_EFORKED);
        child_step("nursery_cancel(parent's nursery)");
        child_expect_eq(nursery_cancel(n), NURSERY_EFORKED);
        child_step("nursery_pool_stats(parent's pool)");
        nursery_pool_stats_t st;
        child_expect_eq(nursery_pool_stats(p, &st), NURSERY_EFORKED);
        _exit(0);
    }
    ck_assert_msg(pid > 0, "fork: %s", strerror(errno));
    assert_child_exit(&c, 0);

    gate_open(run.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    nursery_result_release(run.gate);
    latch_destroy(&run.started);
    destroy_pool(p);
}
END_TEST

/* A task (on a worker) that opens a nursery, starts tasks that then run on
 * other workers, and forks: in the child, the worker thread joins. */
struct forking_joiner {
    nursery_pool_t *pool;
    struct running run;
    struct child child;
    int fork_errno;
};

static int fork_with_open_nursery(void *arg, void **value)
{
    (void)value;
    struct forking_joiner *fj = arg;
    nursery_t *inner = NULL;
    task_expect_eq(nursery_open(&inner, fj->pool), 0);
    for (int i = 0; i < 2; i++)
        task_expect_eq(nursery_start_soon(inner, run_until_gate, &fj->run, NULL), 0);
    /* A plain wait (no helping): the two tasks run on other workers. */
    task_expect(latch_wait(&fj->run.started));
    pid_t pid = child_fork(&fj->child);
    if (pid == 0) {
        child_keeps_objects[0] = inner;
        child_keeps_objects[1] = fj->pool;
        child_step("nursery_join(parent's nursery, its tasks running) in a forked task");
        child_expect_eq(nursery_join(inner, nursery_after_ms(CHILD_WAIT_DEADLINE_MS), NULL),
                        NURSERY_EFORKED);
        child_step("nursery_pool_stats(parent's pool) in a forked task");
        nursery_pool_stats_t st;
        child_expect_eq(nursery_pool_stats(fj->pool, &st), NURSERY_EFORKED);
        _exit(0);
    }
    if (pid < 0)
        fj->fork_errno = errno;
    gate_open(fj->run.gate);
    task_expect_eq(nursery_join(inner, NURSERY_FOREVER, NULL), 0);
    return 0;
}

START_TEST(forked_task_join_of_its_nursery_is_eforked)
{
    struct forking_joiner fj = {.pool = test_pool(3), .run = {.gate = gate_new()}};
    latch_init(&fj.run.started, 2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, fj.pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, fork_with_open_nursery, &fj, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_msg(fj.fork_errno == 0, "fork: %s", strerror(fj.fork_errno));
    assert_child_exit(&fj.child, 0);
    nursery_result_release(fj.run.gate);
    latch_destroy(&fj.run.started);
    destroy_pool(fj.pool);
}
END_TEST

/* Another thread calls nursery_pool_stats() in a loop, so that the fork
 * often happens while it holds the pool's lock. */
struct stats_loop {
    nursery_pool_t *pool;
    latch_t started;
    atomic_bool stop;
};

static void *loop_stats(void *arg)
{
    struct stats_loop *sl = arg;
    bool first = true;
    while (!atomic_load(&sl->stop)) {
        nursery_pool_stats_t st;
        nursery_pool_stats(sl->pool, &st);
        if (first)
            latch_count_down(&sl->started);
        first = false;
    }
    return NULL;
}

START_TEST(forked_child_pool_stats_is_eforked_while_parent_thread_in_it)
{
    struct stats_loop sl = {.pool = test_pool(2)};
    latch_init(&sl.started, 1);
    atomic_init(&sl.stop, false);
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, loop_stats, &sl), 0);
    ck_assert(latch_wait(&sl.started));

    for (int round = 0; round < 20; round++) {
        struct child c;
        pid_t pid = child_fork(&c);
        if (pid == 0) {
            child_note("round %d", round);
            child_step("nursery_pool_stats(parent's pool), another thread was in it");
            nursery_pool_stats_t st;
            child_expect_eq(nursery_pool_stats(sl.pool, &st), NURSERY_EFORKED);
            _exit(0);
        }
        ck_assert_msg(pid > 0, "fork: %s", strerror(errno));
        assert_child_exit(&c, 0);
    }

    atomic_store(&sl.stop, true);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    latch_destroy(&sl.started);
    destroy_pool(sl.pool);
}
END_TEST

static Suite *fork_suite(void)
{
    Suite *s = suite_create("fork");
    /* Timeouts: a child that hangs costs CHILD_ALARM_S. */
    TCase *tc = tcase_with_timeout(s, "forking_task", 60);
    tcase_add_checked_fixture(tc, shared_setup, shared_teardown);
    tcase_add_test(tc, forked_child_of_cancelled_task_is_not_cancelled);
    tcase_add_test(tc, forked_child_cannot_start_in_parent_nursery);
    tcase_add_test(tc, forked_child_cannot_wait_on_parent_capture);
    tcase_add_test(tc, forked_child_sleep_starts_no_thread_and_runs_no_parent_task);
    tcase_add_test(tc, forked_child_opens_only_on_new_pools);

    tc = tcase_with_timeout(s, "task_returns_in_child", 60);
    tcase_add_checked_fixture(tc, shared_setup, shared_teardown);
    tcase_add_test(tc, task_returning_0_in_child_exits_it_with_0);
    tcase_add_test(tc, task_failing_in_child_exits_it_with_1);

    tc = tcase_with_timeout(s, "join_and_stats", 60);
    tcase_add_test(tc, forked_child_join_of_parent_nursery_is_eforked);
    tcase_add_test(tc, forked_task_join_of_its_nursery_is_eforked);
    tcase_add_test(tc, forked_child_pool_stats_is_eforked_while_parent_thread_in_it);
    return s;
}

int main(void)
{
    return run_suite(fork_suite());
}
