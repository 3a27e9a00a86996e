/* SPDX-License-Identifier: MIT */
/*
 * io.c - cancellable waits outside the library's own objects: file
 * descriptors (nursery_poll) and child processes (nursery_child_wait).
 *
 * A thread in poll() cannot be woken by a futex or a condition variable,
 * only by a descriptor.  Each thread that polls gets a wake-up descriptor
 * of its own (an eventfd, or a pipe where there is none), made on first
 * use and closed when the thread exits; nursery_poll() polls it beside the
 * caller's descriptors, with a cancel hook (the same mechanism users have,
 * see cancel.c) that makes it readable.  The hook is removed, waiting if
 * it runs, before the call returns, and the descriptor drained, so the
 * next call starts quiet.
 *
 * A child process is waited for through a pidfd, which poll() reports
 * readable when the child ends; where the kernel has none, by looking with
 * waitpid(WNOHANG) at growing intervals, sleeping cancellably between.
 */
#include "internal.h"
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef HAVE_SYS_EVENTFD_H
#include <sys/eventfd.h>
#endif

#define INLINE_FDS 16
#define CHILD_POLL_FIRST_NS INT64_C(1000000)
#define CHILD_POLL_MAX_NS INT64_C(50000000)

/* ---- the calling thread's wake-up descriptor ---------------------------- */

struct wake {
    int rd, wr;          /* the same descriptor for an eventfd */
    unsigned generation; /* fork generation it was made in */
};

static _Thread_local struct wake *thread_wake;
static pthread_key_t wake_key;
static pthread_once_t wake_once = PTHREAD_ONCE_INIT;

static void wake_close(struct wake *w)
{
    close(w->rd);
    if (w->wr != w->rd)
        close(w->wr);
    free(w);
}

static void wake_destroy(void *p)
{
    wake_close(p);
}

static void wake_key_create(void)
{
    pthread_key_create(&wake_key, wake_destroy);
}

static int wake_open(struct wake *w)
{
#ifdef HAVE_SYS_EVENTFD_H
    w->rd = w->wr = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return w->rd < 0 ? errno : 0;
#else
    int fds[2];
    if (pipe(fds) != 0)
        return errno;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, O_NONBLOCK);
    }
    w->rd = fds[0];
    w->wr = fds[1];
    return 0;
#endif
}

/* The calling thread's descriptor; a copy inherited through fork() is the
 * parent's object too, so the child makes its own. */
static int wake_get(struct wake **out)
{
    struct wake *w = thread_wake;
    if (w && nursery__forked(w->generation)) {
        wake_close(w);
        pthread_setspecific(wake_key, NULL);
        thread_wake = w = NULL;
    }
    if (!w) {
        pthread_once(&wake_once, wake_key_create);
        w = malloc(sizeof(*w));
        if (!w)
            return ENOMEM;
        int rc = wake_open(w);
        if (rc) {
            free(w);
            return rc;
        }
        w->generation = nursery__generation();
        if (pthread_setspecific(wake_key, w) != 0) {
            wake_close(w);
            return ENOMEM;
        }
        thread_wake = w;
    }
    *out = w;
    return 0;
}

/* The cancel hook: makes the descriptor readable (write() is safe from
 * any thread, and the descriptor outlives the hook). */
static void wake_fire(void *arg)
{
    struct wake *w = arg;
    uint64_t one = 1;
    ssize_t rc;
    do
        rc = write(w->wr, &one, w->wr == w->rd ? sizeof(one) : 1);
    while (rc < 0 && errno == EINTR);
}

static void wake_drain(struct wake *w)
{
    uint64_t buf[8];
    while (read(w->rd, buf, sizeof(buf)) > 0)
        continue;
}

/* ---- nursery_poll ------------------------------------------------------- */

/* Milliseconds to `deadline`, rounded up (poll must not wake before it),
 * or -1 for none. */
static int timeout_ms(nursery_time_t deadline)
{
    if (deadline == NURSERY_FOREVER)
        return -1;
    nursery_time_t left = deadline - nursery_now();
    if (left <= 0)
        return 0;
    nursery_time_t ms = (left + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static size_t count_ready(const struct pollfd *fds, size_t n)
{
    size_t ready = 0;
    for (size_t i = 0; i < n; i++)
        ready += fds[i].revents != 0;
    return ready;
}

/* Polls all[0..n] (all[n]: the wake-up descriptor, or -1 when the caller
 * cannot be cancelled) until a descriptor of the caller's is ready, the
 * deadline or cancellation. */
static int poll_loop(struct pollfd *all, size_t n, nursery_time_t deadline, size_t *ready,
                     struct wake *w, const struct blocked_on *what)
{
    bool blocked = false;
    int rc;
    for (;;) {
        int timeout = blocked ? timeout_ms(deadline) : 0;
        if (poll(all, (nfds_t)n + 1, timeout) < 0) {
            if (errno != EINTR) {
                rc = errno;
                break;
            }
            for (size_t i = 0; i <= n; i++)
                all[i].revents = 0; /* interrupted: look again, below */
        }
        if ((*ready = count_ready(all, n)) > 0) {
            rc = 0;
            break;
        }
        if (w && all[n].revents)
            wake_drain(w);
        if (w && nursery_cancelled()) {
            rc = nursery__cancel_delivered();
            break;
        }
        if (deadline != NURSERY_FOREVER && nursery_now() >= deadline) {
            rc = ETIMEDOUT;
            break;
        }
        if (!blocked) {
            /* About to sleep, maybe for long: the pool may run its queue,
             * and what this worker's deque holds, on other threads. */
            nursery__pool_block_enter(false);
            nursery__pool_park_mark(1);
            nursery__trace_block(what, nursery__coarse_now(), deadline);
            blocked = true;
        }
    }
    if (blocked) {
        nursery__trace_unblock();
        nursery__pool_park_mark(-1);
        nursery__pool_block_leave(false);
    }
    return rc;
}

/* nursery_poll(), shown to nursery_dump() as waiting in `what`. */
static int poll_as(struct pollfd *fds, size_t n, nursery_time_t deadline, size_t *ready,
                   const struct blocked_on *what)
{
    if (ready)
        *ready = 0;
    if (!fds || !ready || n == 0)
        return EINVAL;
    if (nursery_cancelled())
        return nursery__cancel_delivered();
    if (n >= (size_t)INT_MAX)
        return EINVAL;

    struct wake *w = NULL;
    if (nursery__ctx.node) {
        int rc = wake_get(&w);
        if (rc)
            return rc;
    }
    struct pollfd local[INLINE_FDS + 1];
    struct pollfd *all = n <= INLINE_FDS ? local : malloc((n + 1) * sizeof(*all));
    if (!all)
        return ENOMEM;
    for (size_t i = 0; i < n; i++)
        all[i] = (struct pollfd){.fd = fds[i].fd, .events = fds[i].events};
    all[n] = (struct pollfd){.fd = w ? w->rd : -1, .events = POLLIN};

    struct cancel_hook hook;
    if (w)
        nursery__cancel_hook_add(&hook, wake_fire, w);
    int rc = poll_loop(all, n, deadline, ready, w, what);
    if (w) {
        nursery__cancel_hook_remove(&hook);
        wake_drain(w);
    }
    if (rc == 0)
        for (size_t i = 0; i < n; i++)
            fds[i].revents = all[i].revents;
    if (all != local)
        free(all);
    return rc;
}

int nursery_poll(struct pollfd *fds, size_t n, nursery_time_t deadline, size_t *ready)
{
    struct blocked_on what = {
        .kind = BLOCKED_POLL, .arg = fds && n ? fds[0].fd : -1, .count = (int_fast64_t)n};
    return poll_as(fds, n, deadline, ready, &what);
}

/* ---- nursery_child_wait ------------------------------------------------- */

/* waitpid(WNOHANG): 0 and *status when reaped, EAGAIN while it runs, or
 * waitpid's error. */
static int try_reap(pid_t pid, int *status)
{
    int st;
    pid_t r;
    do
        r = waitpid(pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno;
    if (r == 0)
        return EAGAIN;
    if (status)
        *status = st;
    return 0;
}

/* Through a pidfd: poll says when the child has ended.  Returns ENOSYS
 * when there are no pidfds (or none can be made now). */
static int wait_pidfd(pid_t pid, int *status, nursery_time_t deadline)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return ENOSYS;
    int rc;
    struct blocked_on what = {.kind = BLOCKED_CHILD, .arg = pid};
    do {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        size_t ready;
        rc = poll_as(&p, 1, deadline, &ready, &what);
        if (rc == 0)
            rc = try_reap(pid, status);
    } while (rc == EAGAIN);
    close(fd);
    return rc;
#else
    (void)pid;
    (void)status;
    (void)deadline;
    return ENOSYS;
#endif
}

/* Without a pidfd: look at growing intervals, sleeping cancellably. */
static int wait_looking(pid_t pid, int *status, nursery_time_t deadline)
{
    nursery_time_t interval = CHILD_POLL_FIRST_NS;
    struct blocked_on what = {.kind = BLOCKED_CHILD, .arg = pid};
    for (;;) {
        nursery_time_t next = nursery_after_ns(interval);
        int rc = nursery__sleep_as(next < deadline ? next : deadline, &what);
        if (rc)
            return rc;
        rc = try_reap(pid, status);
        if (rc != EAGAIN)
            return rc;
        if (deadline != NURSERY_FOREVER && nursery_now() >= deadline)
            return ETIMEDOUT;
        if (interval < CHILD_POLL_MAX_NS)
            interval *= 2;
    }
}

int nursery_child_wait(pid_t pid, int *status, nursery_time_t deadline)
{
    if (pid <= 0)
        return EINVAL;
    if (nursery_cancelled())
        return nursery__cancel_delivered();
    int rc = try_reap(pid, status);
    if (rc != EAGAIN)
        return rc;
    rc = wait_pidfd(pid, status, deadline);
    return rc == ENOSYS ? wait_looking(pid, status, deadline) : rc;
}
