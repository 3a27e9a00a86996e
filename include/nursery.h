/* SPDX-License-Identifier: MIT */
/*
 * nursery.h - structured concurrency and futures for C on POSIX threads.
 *
 * Every task lives inside a nursery: a task group that is joined when its
 * scope ends.  Every task's outcome can be captured in a result.  Waiting,
 * deadlines and cancellation compose.  See nursery(7) for an overview.
 *
 * Conventions used on every function below:
 *   - Errors are returned as int codes, pthread-style: 0 for success, an
 *     errno value where one fits, or one of the NURSERY_E* codes.  Use
 *     nursery_strerror() to print any of them.
 *   - Blocking functions take an absolute deadline (nursery_time_t, on
 *     CLOCK_MONOTONIC; NURSERY_FOREVER waits forever), fail with ETIMEDOUT
 *     when it passes and with ECANCELED when the calling task is cancelled,
 *     even when they could complete at once (nursery_join() is the
 *     exception).  A waiting pool worker runs some of the queued tasks it
 *     waits for; any other thread runs nothing while it waits (see
 *     nursery(7), "What a waiting thread runs").
 *   - Objects are opaque.  Each function says who owns what afterwards.
 *   - Everything a task wrote before it finished happens-before anything
 *     that observes it finished (join, wait, a done result).
 *   - In the child of a fork(), a call that returns a code fails with
 *     NURSERY_EFORKED on a pool, nursery or result made before the fork, at
 *     once and without taking its locks (the functions below say which
 *     checks come first); releasing such an object does nothing.  See
 *     nursery(7), "fork".
 */
#ifndef NURSERY_H
#define NURSERY_H

/* Only what the declarations below use: bool, size_t, int64_t and INT64_MAX, uint64_t,
 * pid_t, FILE. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NURSERY_VERSION_MAJOR 0
#define NURSERY_VERSION_MINOR 1
#define NURSERY_VERSION_PATCH 0

/* libtool -version-info current:revision:age of the shared library. */
#define NURSERY_ABI_CURRENT 0
#define NURSERY_ABI_REVISION 0
#define NURSERY_ABI_AGE 0

#if defined(NURSERY_BUILDING) && defined(__GNUC__)
#define NURSERY_API __attribute__((visibility("default")))
#else
#define NURSERY_API
#endif

#if defined(__GNUC__)
#define NURSERY_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define NURSERY_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------ */
/* Time                                                                     */
/* ------------------------------------------------------------------------ */

/* A point in time: nanoseconds on CLOCK_MONOTONIC.  Deadlines are absolute. */
typedef int64_t nursery_time_t;

/* A deadline that never passes. */
#define NURSERY_FOREVER INT64_MAX

/* The current time on CLOCK_MONOTONIC.  Thread-safe, never blocks. */
NURSERY_API nursery_time_t nursery_now(void);

/* The deadline `ms` milliseconds (or `ns` nanoseconds) from now.  Saturates
 * at NURSERY_FOREVER; a negative or zero amount gives a deadline that has
 * already passed (a blocking call with it only polls).  Thread-safe. */
NURSERY_API nursery_time_t nursery_after_ms(int64_t ms);
NURSERY_API nursery_time_t nursery_after_ns(int64_t ns);

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* Library-specific error codes, outside the errno range. */
enum {
    NURSERY_EBASE = 0x4e000,
    NURSERY_ENOTDONE,    /* the result is not done yet */
    NURSERY_EFAILED,     /* the task failed (or was cancelled); see its error */
    NURSERY_ECLOSED,     /* the nursery (or scope) is closed: joined (or closed) */
    NURSERY_ENOTSTARTED, /* the task returned without calling nursery_started() */
    NURSERY_EEOC,        /* end of channel: every sender closed, nothing buffered */
    NURSERY_EFORKED,     /* the object belongs to the parent of a fork() */
    NURSERY_EEXPIRED,    /* the nursery's own deadline passed and cancelled it */
    NURSERY_EEND,        /* nothing left: an iteration handed out everything, or a
                          * generator (nursery_map_stream()) has no more items */
    NURSERY_ELAST
};

/* A human-readable description of any code this library returns (errno
 * values too).  The string is static; never NULL.  Thread-safe. */
NURSERY_API const char *nursery_strerror(int code);

/* An error: an int code, a message, the name of the task that failed (if it
 * had one) and an optional user payload.  Reference-counted and immutable
 * once recorded, so it can be read from any thread. */
typedef struct nursery_error nursery_error_t;

/* Creates an error with `code` (non-zero) and a printf-style message (NULL
 * fmt: nursery_strerror(code)).  *out owns one reference.
 * Returns 0, EINVAL (out NULL or code 0) or ENOMEM. */
NURSERY_API int nursery_error_create(nursery_error_t **out, int code, const char *fmt, ...)
    NURSERY_PRINTF(3, 4);

/* Attaches a payload to an error that is not yet shared (before it is given
 * to nursery_fail_with() or nursery_future_set_error()).  `destroy`, if not
 * NULL, is called on the payload when the last reference goes.
 * Returns 0, EINVAL (NULL error) or EALREADY (it already has a payload). */
NURSERY_API int nursery_error_set_payload(nursery_error_t *err, void *payload,
                                          void (*destroy)(void *payload));

/* Accessors.  The strings belong to the error and live as long as it does.
 * task_name is NULL when the task had no name; payload NULL when none. */
NURSERY_API int nursery_error_code(const nursery_error_t *err);
NURSERY_API const char *nursery_error_message(const nursery_error_t *err);
NURSERY_API const char *nursery_error_task_name(const nursery_error_t *err);
NURSERY_API void *nursery_error_payload(const nursery_error_t *err);

/* Reference counting.  Both accept NULL.  Thread-safe. */
NURSERY_API nursery_error_t *nursery_error_retain(nursery_error_t *err);
NURSERY_API void nursery_error_release(nursery_error_t *err);

/* Called from a task (or a nursery body): records an error as this task's
 * outcome and returns `code`, so a task fails with
 *     return nursery_fail(EIO, "cannot read %s", path);
 * A task that returns a non-zero code without calling this fails with a
 * plain error made from the code.  In a nursery body (the opener's code
 * between nursery_open() and nursery_join(), or nursery_run()'s body) it
 * fails the nursery at once, as a failing task does: the error goes into
 * the nursery's error group (first, so primary, if nothing failed before)
 * and the nursery is cancelled; its join returns NURSERY_EFAILED whatever
 * the body does next.  Outside any task and body it only sets
 * nursery_last_error().  Returns `code`; ENOMEM if the error could not be
 * allocated (a shared ENOMEM error is recorded instead: returning that fails
 * the task with ENOMEM); 0 for code 0, recording nothing. */
NURSERY_API int nursery_fail(int code, const char *fmt, ...) NURSERY_PRINTF(2, 3);

/* Like nursery_fail() with an error you built (for a payload), in a task
 * or a body alike; takes ownership of `err` and returns its code (EINVAL
 * for NULL, recording nothing). */
NURSERY_API int nursery_fail_with(nursery_error_t *err);

/* The error most recently recorded in this thread by nursery_fail(),
 * nursery_fail_with(), or a library call that reports a task's failure
 * (nursery_start, nursery_capture_run).  Borrowed: valid until the next
 * such call in this thread or the end of the current task.  NULL if none.
 * When a task returns code C and this error has code C, it becomes the
 * task's outcome: errors propagate like exceptions by returning the code. */
NURSERY_API nursery_error_t *nursery_last_error(void);

/* An error group, returned by nursery_join(): the primary error (the one
 * that cancelled the nursery) first, then every other real error in
 * arrival order.  At most NURSERY_ERRORS_KEPT errors are kept; later ones
 * are only counted.  Tasks that ended only because they were cancelled are
 * counted, not listed: join hands over a group also when nothing failed
 * but some task ended cancelled (count 0, cancelled > 0).  The group is
 * the nursery's own record, handed over as it is, so it keeps the joined
 * nursery's memory until nursery_errors_free().  Owned by the caller of
 * join; it may be read from several threads, but not freed while another
 * thread reads it. */
typedef struct nursery_errors nursery_errors_t;

#define NURSERY_ERRORS_KEPT 64

/* Number of errors listed; error i, borrowed until the group is freed
 * (NULL if i is out of range; 0 is the primary error); the number of real
 * errors not listed because of the cap; the number of tasks that ended
 * cancelled (running tasks that returned ECANCELED when cancelled, and
 * queued tasks that never ran).  All accept NULL (0 / NULL) and never
 * block. */
NURSERY_API size_t nursery_errors_count(const nursery_errors_t *group);
NURSERY_API nursery_error_t *nursery_errors_get(const nursery_errors_t *group, size_t i);
NURSERY_API size_t nursery_errors_dropped(const nursery_errors_t *group);
NURSERY_API size_t nursery_errors_cancelled(const nursery_errors_t *group);

/* Frees the group: releases its errors and the joined nursery's memory it
 * holds (unless a nursery_retain() still holds it).  NULL is a no-op.
 * Works in the child of a fork() too (on a group of the parent's, the
 * nursery's memory is left alone). */
NURSERY_API void nursery_errors_free(nursery_errors_t *group);

/* ------------------------------------------------------------------------ */
/* Pools                                                                    */
/* ------------------------------------------------------------------------ */

/* A pool of worker threads that runs tasks.  A default pool is created on
 * first use; explicit pools give control over threads and names. */
typedef struct nursery_pool nursery_pool_t;

typedef struct nursery nursery_t;

/* What a pool's task hooks are told (see nursery_pool_options_t).  Every
 * pointer is valid only during the call. */
typedef struct nursery_task_event {
    const void *task;         /* the task's id: unique among tasks not yet ended */
    const char *task_name;    /* its name, or NULL */
    nursery_t *nursery;       /* the nursery it runs in */
    const char *nursery_name; /* that nursery's name (nursery_set_name()), or "" */
    int code;                 /* on_task_finish: 0, ECANCELED, or the task's error
                               * code; on_task_start: 0 */
} nursery_task_event_t;

/* Pool options.  Zero in any field means "the default". */
typedef struct nursery_pool_options {
    /* Threads kept running: default, the CPUs this process may run on. */
    size_t threads;
    /* Upper bound when the pool adds threads to replace stuck workers
     * (blocked in a library wait, or in the user's own blocking calls,
     * detected from their CPU clocks; see nursery_pool_create(3), "How the
     * pool grows"): default max(threads, 256).  Extra threads retire after
     * 250 ms idle.  At max_threads, with no worker idle, a worker waiting in
     * nursery_start() runs its task itself.  Smaller than threads is
     * EINVAL. */
    size_t max_threads;
    /* Name prefix of the worker threads (up to 11 bytes are used, a number
     * is appended, visible in top -H and gdb).  Default "nursery". */
    const char *name;
    /* Stack size of each worker thread in bytes.  Default: the system's.
     * Below PTHREAD_STACK_MIN, or a size the system refuses, is EINVAL (it
     * is never replaced by another). */
    size_t stack_size;
    /* Hooks, for progress reports and tracing: called for every task started
     * in a nursery of this pool (captures started in one included), on the
     * thread that runs the task (a worker, a thread that helps while it
     * waits, see nursery(7), or, for a queued capture that
     * nursery_result_cancel() ends, the cancelling thread).  on_task_start
     * just before the task's function
     * is called; on_task_finish once its outcome is known, before its
     * nursery, its result or a waiter can see it ended, also for a task
     * cancelled before it ran (code ECANCELED; on_task_start was not called
     * for it).  Either may be NULL.  A hook must return promptly and must
     * not wait for other tasks; it may call the non-blocking functions of
     * this library.  hook_arg is passed to both. */
    void (*on_task_start)(const nursery_task_event_t *ev, void *hook_arg);
    void (*on_task_finish)(const nursery_task_event_t *ev, void *hook_arg);
    void *hook_arg;
} nursery_pool_options_t;

/* Creates a pool.  `opts` may be NULL for defaults.  Threads start at once,
 * and a monitor thread that adds threads when workers are stuck.  Returns
 * 0; EINVAL (out NULL, max_threads < threads, a stack_size below
 * PTHREAD_STACK_MIN or refused by the system); ENOMEM; EAGAIN (a thread
 * could not be created).  On failure *out is NULL (if out is not) and
 * nothing is left behind.  Thread-safe. */
NURSERY_API int nursery_pool_create(nursery_pool_t **out, const nursery_pool_options_t *opts);

/* Destroys a pool: stops and joins every thread, frees everything.
 * Returns 0; EINVAL for NULL or the default pool; EBUSY if nurseries opened
 * on it are not yet joined (nothing is changed); EDEADLK when called from
 * one of its own threads (nothing is changed); NURSERY_EFORKED in the child
 * of a fork() (the pool's threads do not exist there; it is not freed).
 * Not to be called concurrently with another use of the same pool. */
NURSERY_API int nursery_pool_destroy(nursery_pool_t *pool);

/* The default pool, created on first use (sized to the CPUs the process may
 * run on).  Returns 0; EINVAL (out NULL); ENOMEM or EAGAIN when it cannot
 * be created (then *out is NULL, and the next call tries again).  After
 * fork(), the child gets a new default pool on first use.  It lives until
 * the process exits; then (in an atexit() handler), if every nursery opened
 * on it is joined and exit() was not called by one of its threads, its
 * threads are stopped and joined, so that a leak checker finds no thread
 * left (valgrind's --error-exitcode passes).  Thread-safe. */
NURSERY_API int nursery_pool_default(nursery_pool_t **out);

/* A snapshot of a pool's counters, for monitoring (they are read one after
 * the other while the pool runs, not at one instant). */
typedef struct nursery_pool_stats {
    size_t threads;     /* worker threads alive */
    size_t idle;        /* workers parked waiting for work */
    size_t blocked;     /* workers parked in a library wait (a join included)
                         * for over 1 ms, or sleeping in nursery_poll() or
                         * nursery_child_wait() at all; not those blocked
                         * in user code */
    size_t queued;      /* tasks in the pool's queues, not yet taken */
    size_t running;     /* tasks the workers started and have not finished;
                         * a worker running a task inside a wait of another
                         * task counts both */
    uint64_t completed; /* tasks the workers finished since creation (also
                         * those that ended cancelled without running),
                         * counted before anything can see them finished */
    uint64_t helped;    /* of those, tasks a worker ran inside one of its own
                         * library waits (see nursery(7)) */
    uint64_t steals;    /* tasks a worker took from another worker's queue */
    uint64_t threads_created; /* worker threads started since creation */
    uint64_t threads_retired; /* of those, surplus threads that retired idle */
    uint64_t parked_ns; /* nanoseconds workers spent parked, idle or in a
                         * library wait, summed over workers, up to their
                         * last wake-up */
} nursery_pool_stats_t;

/* Fills *out.  Returns 0, EINVAL (NULL), or NURSERY_EFORKED (a pool of the
 * parent of a fork, refused without taking its lock).  Thread-safe. */
NURSERY_API int nursery_pool_stats(nursery_pool_t *pool, nursery_pool_stats_t *out);

/* ------------------------------------------------------------------------ */
/* Nurseries and tasks                                                      */
/* ------------------------------------------------------------------------ */

/* A task's outcome; see "Results" below. */
typedef struct nursery_result nursery_result_t;

/* A task: returns 0 and may store a value in *value (initially NULL), or
 * returns a non-zero code to fail (see nursery_fail()). */
typedef int (*nursery_fn)(void *arg, void **value);

/* Task flags. */
enum {
    /* The task's error is kept in its result but does not cancel the
     * nursery and is not reported by join. */
    NURSERY_TASK_SUPPRESS_ERROR = 1u << 0,
    /* A daemon (asyncgui's run_as_daemon, trio-util's run_and_cancelling):
     * once the body has reached nursery_join() and every task of the
     * nursery without this flag has ended, the nursery is cancelled, so
     * that its daemons see it and end.  That cancellation is the nursery's
     * own: join counts the daemons that end cancelled (see
     * nursery_errors_cancelled()), and returns 0 for them. */
    NURSERY_TASK_DAEMON = 1u << 1,
    /* A main task (asyncgui's run_as_main): its end, however it ends,
     * cancels the rest of the nursery, body included, as nursery_cancel()
     * does.  With NURSERY_TASK_DAEMON too (asyncgui's wait_any_cm): the
     * task's end cancels the body, and the body's end (once every other
     * task without NURSERY_TASK_DAEMON has ended too) cancels the task.
     * Without flags, the nursery waits for both (wait_all_cm).  A task
     * begun with nursery_start() counts as main or daemon only once it has
     * called nursery_started(). */
    NURSERY_TASK_MAIN = 1u << 2,
};

/* Per-task options; NULL means all defaults. */
typedef struct nursery_task_options {
    /* The task's name, for errors, printing and debugging; copied. */
    const char *name;
    /* Called once on the argument after the task ends, or instead of the
     * task when it never runs (cancelled before it started, or the start
     * call failed), so no argument is ever leaked. */
    void (*arg_destroy)(void *arg);
    /* NURSERY_TASK_* flags. */
    unsigned flags;
} nursery_task_options_t;

/* Opens a nursery on `pool` (NULL: the default pool, created on first
 * use).  The calling thread's code until nursery_join() is the nursery's
 * body: it sees the nursery's cancellation (nursery_cancelled(),
 * nursery_checkpoint(), blocking calls), and nursery_fail() in it fails the
 * nursery.  Nurseries opened in one thread must be joined by that thread in
 * reverse order of opening.  Returns 0; EINVAL (out NULL); ENOMEM;
 * EAGAIN or ENOMEM when `pool` is NULL and the default pool cannot be
 * created (see nursery_pool_default()); NURSERY_EFORKED (a pool from before
 * a fork, in the child).  On failure *out is NULL (if out is not).  *out
 * belongs to the caller until nursery_join() succeeds.  Thread-safe. */
NURSERY_API int nursery_open(nursery_t **out, nursery_pool_t *pool);

/* Joins a nursery: waits until every task started in it has finished, then
 * closes it and frees it.  When the caller is a worker of the nursery's
 * pool, it runs queued tasks of this nursery and of nurseries opened by its
 * tasks (at any depth) while it waits, never other work, so nested joins
 * progress even on a pool of one thread; the deadline is checked between
 * the tasks it runs.  Other threads run nothing: they just wait.
 *
 * Returns 0 when no task failed; NURSERY_EFAILED when a task (or the body)
 * failed: *errors gets the error group, never NULL then; ECANCELED when an
 * enclosing scope (a nursery this one runs in, or a cancel scope, not
 * shielded from it) was cancelled and nothing failed; NURSERY_EEXPIRED
 * when the nursery's own deadline (nursery_open_until()) cancelled it (it
 * was not cancelled before: by nursery_cancel(), a failure, a main task's
 * end or the cancellation of its daemons), nothing failed and no
 * enclosing scope was cancelled.  In these four
 * cases the nursery is closed and its handle is
 * invalid (unless retained).  Cancelling the nursery itself with
 * nursery_cancel() is not an error: join then returns 0.
 *
 * ETIMEDOUT when `deadline` passes first: nothing is freed, the tasks keep
 * running and join must be called again (after nursery_cancel(), say).
 * EINVAL for NULL or when called by a thread other than the opener or out
 * of order (nothing is changed).  NURSERY_EFORKED in the child of a fork()
 * on a nursery of the parent's (checked right after NULL, without waiting,
 * whatever its tasks do).  Join allocates nothing: it cannot fail with
 * ENOMEM, and no error is ever lost.
 *
 * `errors` may be NULL (the group is then freed); otherwise *errors is set
 * to a group owned by the caller, to be freed with nursery_errors_free()
 * (it holds the nursery's memory): after NURSERY_EFAILED, and after 0,
 * ECANCELED or NURSERY_EEXPIRED when some task ended cancelled (then nursery_errors_count() is
 * 0 and nursery_errors_cancelled() tells how many).  *errors is NULL when
 * nothing failed and nothing was cancelled, and after ETIMEDOUT, EINVAL and
 * NURSERY_EFORKED.  Join is not itself cut short by cancellation (it is not
 * a cancellation point): the tasks are cancelled and join waits for them,
 * as structured concurrency requires. */
NURSERY_API int nursery_join(nursery_t *n, nursery_time_t deadline, nursery_errors_t **errors);

/* Opens a nursery on `pool`, runs body(n, arg) in the calling thread, then
 * joins.  A non-zero return from the body counts as a task failure, unless
 * the error the body last recorded with nursery_fail() or
 * nursery_fail_with() (which failed the nursery already) is still the
 * thread's nursery_last_error(): so `return nursery_fail(EIO, ...)` is
 * reported once, and a body that calls nursery_fail() and then returns 0
 * still fails.  A body that returns ECANCELED while the nursery is
 * cancelled has not failed.  Returns EINVAL (body NULL), the error of
 * nursery_open(), or what nursery_join() returns (never ETIMEDOUT).
 * *errors as for nursery_join() (NULL when the nursery could not be
 * opened). */
NURSERY_API int nursery_run(nursery_pool_t *pool, int (*body)(nursery_t *n, void *arg), void *arg,
                            nursery_errors_t **errors);

/* nursery_open() with a deadline: a scope around the nursery (see "Cancel
 * scopes" below).  When `deadline` passes before the nursery is joined, the
 * nursery is cancelled as by nursery_cancel() (its tasks, its body and
 * what they opened), from a library thread, whatever the nursery's threads
 * are doing; nursery_join() then returns NURSERY_EEXPIRED instead of 0.
 * NURSERY_FOREVER: exactly nursery_open().  A deadline already past
 * cancels the nursery before this returns.  Returns what nursery_open()
 * returns, and, with a deadline that has not passed, EAGAIN or ENOMEM when
 * the library's deadline thread cannot be started (the first time a
 * deadline is set in a process) or keep one more deadline (nothing is
 * opened then). */
NURSERY_API int nursery_open_until(nursery_t **out, nursery_pool_t *pool, nursery_time_t deadline);

/* nursery_run() with a deadline, as nursery_open_until(): returns
 * NURSERY_EEXPIRED when the deadline cancelled the nursery and nothing
 * failed (a body that returned ECANCELED then has not failed); EAGAIN or
 * ENOMEM as nursery_open_until() (the body does not run). */
NURSERY_API int nursery_run_until(nursery_pool_t *pool, nursery_time_t deadline,
                                  int (*body)(nursery_t *n, void *arg), void *arg,
                                  nursery_errors_t **errors);

/* Cancels every task of the nursery and its body: queued tasks never run
 * (their outcome is a cancellation, their arg_destroy runs), running ones
 * see it at their next cancellation point, nurseries opened inside them are
 * cancelled too, at any depth (the walk uses constant stack).  Idempotent;
 * never blocks for the tasks.  Returns 0; EINVAL (NULL); NURSERY_ECLOSED
 * when the nursery has been joined (a retained handle, or a join that
 * closed it meanwhile), changing nothing; NURSERY_EFORKED in the child of
 * a fork() on a nursery of the parent's.  Thread-safe: any thread may
 * cancel while the nursery is open, also while its opener is inside
 * nursery_join() (join does not free the nursery before a cancel in
 * progress is done with it); after join has returned, only through a
 * retained handle. */
NURSERY_API int nursery_cancel(nursery_t *n);

/* Keeps a nursery handle valid after join (for a long-lived object that may
 * still try to start tasks): starting a task in a joined nursery fails with
 * NURSERY_ECLOSED, even when its pool has been destroyed since, and
 * nursery_cancel() on it returns NURSERY_ECLOSED.  Every retain needs one
 * release.  Both accept NULL.  Thread-safe.  In the child of a fork(),
 * releasing a nursery of the parent's does nothing. */
NURSERY_API nursery_t *nursery_retain(nursery_t *n);
NURSERY_API void nursery_release(nursery_t *n);

/* Schedules fn(arg) in the nursery; never runs it in the calling thread
 * before returning.  Returns 0; EINVAL (n or fn NULL, or an unknown flag
 * in opts); ENOMEM; NURSERY_EFORKED (a nursery of the parent of a fork,
 * in the child); NURSERY_ECLOSED (joined nursery), checked in that order.
 * On every failure nothing was queued and opts->arg_destroy has run on
 * arg.  A task may be started into a nursery that is cancelled: it then
 * ends cancelled without running.  In a nursery with a limit
 * (nursery_set_limit()), a task beyond it waits in the nursery, in start
 * order, until an admitted one ends: this call does not wait for room.
 * Thread-safe: any thread (tasks included) may start tasks in an open
 * nursery. */
NURSERY_API int nursery_start_soon(nursery_t *n, nursery_fn fn, void *arg,
                                   const nursery_task_options_t *opts);

/* Starts fn(arg) in nursery `n` and blocks until the task calls
 * nursery_started(value) (Trio's nursery.start).  Until then the task
 * belongs to the caller: if the caller is cancelled, so is the task, and if
 * the task fails or returns first, that outcome goes to the caller and not
 * to `n` (which is neither failed nor cancelled by it).  After started, the
 * task belongs to `n`.
 *
 * Who runs the task: a worker of the pool.  When the caller is itself a
 * worker of n's pool and the pool can neither add a thread nor wake an idle
 * worker (it has max_threads threads, none idle), the caller runs the
 * queued task itself, on its own stack: this call then returns only once
 * the task function has returned, not when it calls started.  Otherwise
 * the task waits for a worker (a caller that is a worker of the pool and
 * has waited over 1 ms counts as blocked, and the pool may add a thread:
 * see nursery_pool_create(3)); any other caller runs nothing.
 *
 * Giving up: when `deadline` passes or the caller is cancelled (also when
 * it already is at the call) before the task has called started, the task
 * is cancelled.  Still queued, it is cancelled on the spot: it never runs,
 * its arg_destroy runs, and this call returns at once.  Running, it sees
 * the cancellation, its nursery_started() returns ECANCELED (the value
 * stays the task's), and this call waits, past the deadline, until the
 * task has ended.  A task that called started before the caller gave up
 * has started: that wins.
 *
 * Returns, after the checks of nursery_start_soon() (EINVAL, ENOMEM,
 * NURSERY_EFORKED, NURSERY_ECLOSED: nothing was started): 0 with
 * *started_value (may be NULL) set, when the task called started; the
 * task's own error code if it failed before started, also after the caller
 * gave up (nursery_last_error() holds its error); NURSERY_ENOTSTARTED if
 * it returned 0 without calling started (also after the caller gave up);
 * ETIMEDOUT or ECANCELED when the caller gave up and the task ended
 * cancelled (never ran, or returned ECANCELED).
 * If `done` is not NULL, *done gets a capture of the task's final outcome
 * (also on failure: done with a cancellation when it never ran), owned by
 * the caller (nursery_result_release); it is NULL when nothing was
 * started. */
NURSERY_API int nursery_start(nursery_t *n, nursery_fn fn, void *arg,
                              const nursery_task_options_t *opts, nursery_time_t deadline,
                              void **started_value, nursery_result_t **done);

/* Called by a task begun with nursery_start(): hands `value` to the caller
 * and moves the task into its target nursery.  Returns 0 (the value is the
 * caller's); ECANCELED when the caller of nursery_start() gave up (its
 * deadline passed or it was cancelled): nobody takes the value, which stays
 * the task's to free, and the task is cancelled and stays the caller's;
 * EINVAL when the current task was not begun with nursery_start (or no
 * task is running in this thread, as in the child of a fork()); EALREADY
 * when called again after it returned 0. */
NURSERY_API int nursery_started(void *value);

/* ---- A concurrency cap (Go's errgroup SetLimit and TryGo) ---- */

/* Sets how many tasks of the nursery may be admitted at once: queued in the
 * pool or running (0: no limit, the default).  Every start counts
 * (nursery_start_soon(), nursery_start(), the capture starts): tasks
 * started beyond the limit wait in the nursery, in start order, taking no
 * worker and no place in the pool's queues, and are admitted in that
 * order as admitted ones end, or at once when the limit is raised.  Only
 * nursery_start_limited() waits for room, and nursery_try_start() asks
 * for it.  Lowering the limit stops nothing already admitted.  Returns 0; EINVAL
 * (NULL); NURSERY_EFORKED (a nursery of the parent of a fork, in the
 * child); NURSERY_ECLOSED (joined).  Thread-safe. */
NURSERY_API int nursery_set_limit(nursery_t *n, size_t limit);

/* Starts fn(arg) in the nursery once it has room under its limit (no task
 * waiting in the nursery, fewer than the limit admitted), waiting for room
 * until `deadline`: back-pressure for a producer.  Without a limit there
 * is always room.  A cancellation point, with or without a limit, for the
 * caller's own cancellation and for the nursery's.  Returns, in this
 * order: EINVAL (n or fn NULL, or an unknown flag), NURSERY_EFORKED,
 * NURSERY_ECLOSED, as nursery_start_soon(); ECANCELED when the caller or
 * the nursery is cancelled at the call; then 0, ENOMEM, ETIMEDOUT, or
 * ECANCELED when either is cancelled while it waits.  On every failure
 * nothing was started and opts->arg_destroy has run on arg.  Thread-safe; called
 * from a task of the same nursery, it waits for that task's siblings to
 * end (with a limit of 1, forever: the calling task holds the slot). */
NURSERY_API int nursery_start_limited(nursery_t *n, nursery_fn fn, void *arg,
                                      const nursery_task_options_t *opts,
                                      nursery_time_t deadline);

/* Starts fn(arg) if the nursery has room under its limit now (as
 * nursery_start_limited(), without waiting; without a limit, as
 * nursery_start_soon()).  Returns, in this order: EINVAL,
 * NURSERY_EFORKED, NURSERY_ECLOSED as nursery_start_soon() (arg_destroy
 * has run); EAGAIN when it has no room: then, unlike every other failure,
 * arg_destroy has not run and the argument is still the caller's, to
 * start again later; then 0 or ENOMEM (arg_destroy has run).  Never
 * blocks; not a cancellation point. */
NURSERY_API int nursery_try_start(nursery_t *n, nursery_fn fn, void *arg,
                                  const nursery_task_options_t *opts);

/* ---- asyncgui's wait_any and wait_all, over functions ---- */

/* One function for nursery_run_any() and nursery_run_all(); opts as for
 * nursery_start_soon() (may be NULL; nursery_run_any() adds
 * NURSERY_TASK_MAIN to its flags, nursery_run_all() adds nothing). */
typedef struct nursery_branch {
    nursery_fn fn;
    void *arg;
    const nursery_task_options_t *opts;
} nursery_branch_t;

/* Runs the n branches as tasks of a new nursery on `pool` (NULL: the
 * default pool) and waits for them all to end; the first to end cancels
 * the others (asyncgui's wait_any).  results[i] gets branch i's capture,
 * done when this returns, owned by the caller (nursery_result_release()):
 * nursery_result_value() returns 0 for a branch that finished (more than
 * one may have finished, or none), and nursery_result_error() gives
 * ECANCELED for one that was cancelled.  Errors follow the nursery rule:
 * the first real error cancels the rest, and the call returns
 * NURSERY_EFAILED with the error group in *errors (as nursery_join(); a
 * branch with NURSERY_TASK_SUPPRESS_ERROR keeps its error to its result);
 * the cancellations this call causes are not errors.  The call is not
 * itself a cancellation point: a caller that is cancelled (at the call or
 * meanwhile) has its branches cancelled, as nurseries it opens are (one
 * cancelled at the call runs none), and gets ECANCELED.  Returns, in this
 * order: EINVAL (branches or results NULL, n == 0, or a NULL fn or an
 * unknown flag in a branch: nothing runs, no arg_destroy runs); ENOMEM,
 * NURSERY_EFORKED or the other errors of nursery_open() (nothing runs;
 * the arg_destroy of every branch runs); then 0, NURSERY_EFAILED, or
 * ECANCELED when the caller is cancelled and no branch failed.  results[] are all set, and done, on 0,
 * NURSERY_EFAILED and ECANCELED, and all NULL on the other returns.
 * *errors (errors may be NULL) as for nursery_join(). */
NURSERY_API int nursery_run_any(nursery_pool_t *pool, const nursery_branch_t *branches, size_t n,
                                nursery_result_t **results, nursery_errors_t **errors);

/* As nursery_run_any(), but waits for every branch (asyncgui's wait_all):
 * none is cancelled by another's end, only by a failure or the caller's
 * cancellation. */
NURSERY_API int nursery_run_all(nursery_pool_t *pool, const nursery_branch_t *branches, size_t n,
                                nursery_result_t **results, nursery_errors_t **errors);

/* A call of nursery_run_any() (any = true) or nursery_run_all(), as the
 * argument of nursery_run_combinator(), so that combinators nest. */
typedef struct nursery_combinator {
    bool any;
    const nursery_branch_t *branches;
    size_t n;
    nursery_result_t **results; /* n entries, set as nursery_run_any() sets them */
} nursery_combinator_t;

/* A nursery_fn that runs the combinator `arg` (a nursery_combinator_t *)
 * on the calling task's pool (the default pool outside one), so that
 * wait_all(f1, wait_any(f2, f3)) is a branch {nursery_run_combinator,
 * &inner} among the outer's, and the leaves' outcomes are in the inner's
 * results.  Returns what the call returns (EINVAL also for arg NULL); when
 * that is NURSERY_EFAILED, the task's error (its result's, or the outer's
 * error group's entry) has code NURSERY_EFAILED and carries the inner
 * error group as its payload (nursery_error_payload(): a
 * nursery_errors_t *, freed with the error; without memory for that
 * error, the group is freed and the code alone is returned).  Never
 * stores a value.  A combinator task cancelled before it runs leaves the
 * inner results as they were: set them to NULL first. */
NURSERY_API int nursery_run_combinator(void *arg, void **value);

/* ------------------------------------------------------------------------ */
/* Results: captures and futures                                            */
/* ------------------------------------------------------------------------ */

/* The outcome of a task (a capture) or of an operation set by hand (a
 * future): not done, or done with a value, or done with an error.  Shared
 * by reference counting; it may outlive its nursery.  Every accessor is
 * thread-safe.  In the child of a fork(), every function below that
 * returns a code gives NURSERY_EFORKED on a result made before the fork
 * (after EINVAL for bad arguments), and releasing one does nothing.
 * (nursery_result_t is declared above.) */

/* Creates a capture of fn(arg) that is not started: run it with
 * nursery_capture_run().  *out owns one reference.  opts->arg_destroy runs
 * when the capture has run, or when it is freed or cancelled without having
 * run, or at once if this call fails.  Returns 0, EINVAL (out or fn NULL,
 * or an unknown flag in opts)
 * or ENOMEM; on failure *out is NULL (if out is not). */
NURSERY_API int nursery_capture_create(nursery_result_t **out, nursery_fn fn, void *arg,
                                       const nursery_task_options_t *opts);

/* Runs a capture created by nursery_capture_create() now, in the calling
 * thread, as part of the caller's task: in a cancelled task it does not
 * run and is done with a cancellation (ECANCELED).  Returns 0 when it
 * succeeded; the task's code when it failed (the error is in the result and
 * in nursery_last_error()); EALREADY if the capture was already run,
 * started or cancelled (nothing happens); EINVAL (NULL, or a future);
 * NURSERY_EFORKED for a capture made before a fork(), in the child, or
 * when fn called fork() and returned in the child in a thread that is not
 * a pool worker (the capture is left as it was; see nursery(7)). */
NURSERY_API int nursery_capture_run(nursery_result_t *r);

/* Starts fn(arg) in the nursery like nursery_start_soon() and captures its
 * outcome: *out owns one reference to the result (release it when done).
 * Errors as nursery_start_soon() (EINVAL also for out NULL); on failure
 * *out is NULL and opts->arg_destroy has run. */
NURSERY_API int nursery_capture_start_soon(nursery_t *n, nursery_fn fn, void *arg,
                                           const nursery_task_options_t *opts,
                                           nursery_result_t **out);

/* aioresult's capture_start_and_done_results: starts, as a task of
 * `start_nursery`, a call to nursery_start(run_nursery, fn, arg, ...).
 * *start_result gets the started value (or the failure before started);
 * *done_result the task's final outcome.  Both are owned by the caller.
 * Cancelling *done_result before the start task has run cancels that start
 * task too: both results are done with ECANCELED and start_nursery counts a
 * cancellation, not a failure.  If run_nursery is joined (or the parent's,
 * in a fork child) when the start task runs, both results are done with
 * that error (NURSERY_ECLOSED or NURSERY_EFORKED) and the start task fails
 * with it.  Returns 0, EINVAL, ENOMEM, NURSERY_ECLOSED or NURSERY_EFORKED
 * (start_nursery); on failure nothing was started, opts->arg_destroy has
 * run and both outputs are NULL. */
NURSERY_API int nursery_capture_start_and_done(nursery_t *start_nursery, nursery_t *run_nursery,
                                               nursery_fn fn, void *arg,
                                               const nursery_task_options_t *opts,
                                               nursery_result_t **start_result,
                                               nursery_result_t **done_result);

/* Creates an empty future, to be completed with nursery_future_set_value()
 * or nursery_future_set_error().  *out owns one reference.  0/EINVAL/ENOMEM. */
NURSERY_API int nursery_future_create(nursery_result_t **out);

/* Completes a future with a value.  Returns 0; EALREADY if it is already
 * done (the first outcome is kept); EINVAL for NULL or a capture;
 * NURSERY_EFORKED (made before a fork, in the child). */
NURSERY_API int nursery_future_set_value(nursery_result_t *r, void *value);

/* Completes a future with an error; takes ownership of `err` in every case
 * (it is released if the call fails).  Returns 0, EALREADY (first outcome
 * kept), EINVAL (NULL result or error, or a capture) or NURSERY_EFORKED. */
NURSERY_API int nursery_future_set_error(nursery_result_t *r, nursery_error_t *err);

/* nursery_future_set_error() with an error made from a code and message.
 * Returns what it returns; EINVAL also for code 0; ENOMEM when the error
 * cannot be made (the future is left as it was). */
NURSERY_API int nursery_future_fail(nursery_result_t *r, int code, const char *fmt, ...)
    NURSERY_PRINTF(3, 4);

/* Whether the result is done.  Never blocks.  NULL: false. */
NURSERY_API bool nursery_result_is_done(const nursery_result_t *r);

/* Waits until the result is done.  Never reports the task's own error.
 * Returns, in this order: EINVAL for NULL; NURSERY_EFORKED (made before a
 * fork, in the child); EDEADLK when called by the very task the result
 * captures; ECANCELED when the *waiting* task is cancelled, also when the
 * result is already done (the awaited task is not cancelled); then 0 once
 * done, or ETIMEDOUT.  When the caller is a worker of the capture's pool,
 * it runs the awaited task itself if no worker has started it yet, so
 * nested waits progress even on a pool of one thread (the wait then ends
 * when that task does, even past the deadline); any other waiter, and any
 * waiter on a future, runs nothing and leaves the task to the pool. */
NURSERY_API int nursery_result_wait(nursery_result_t *r, nursery_time_t deadline);

/* The value of a done result.  Returns 0 with *value set; NURSERY_ENOTDONE;
 * NURSERY_EFAILED when it failed or was cancelled (see
 * nursery_result_error()); EINVAL for NULL arguments; NURSERY_EFORKED.
 * Never blocks.  The value belongs to whoever the task's contract says; the
 * result never frees it. */
NURSERY_API int nursery_result_value(const nursery_result_t *r, void **value);

/* The error of a done result: *err is the error (the same object on every
 * call, borrowed for as long as you hold the result) or NULL for a success.
 * Returns 0, NURSERY_ENOTDONE, EINVAL or NURSERY_EFORKED.  Never blocks. */
NURSERY_API int nursery_result_error(const nursery_result_t *r, nursery_error_t **err);

/* Cancels the result's task alone (concurrent.futures' Future.cancel):
 * not started yet (queued, or a capture never run), it never runs, its
 * arg_destroy runs in the calling thread, and the result is done at once
 * with a cancellation error; running, it sees cancellation at its next
 * cancellation point; the rest of its nursery is unaffected.  On a
 * pending future it completes it with a cancellation error.  It does not
 * wait for a running task to end, and cannot fail with ENOMEM (out of
 * memory, the cancellation error is a shared one that names no task).
 * Returns 0; EALREADY if the result is done or its task has already ended
 * (nothing changes); EINVAL (NULL); NURSERY_EFORKED. */
NURSERY_API int nursery_result_cancel(nursery_result_t *r);

/* Writes a printable form, like aioresult's str(): "not done",
 * "done: value 0x2a" (or "done: value NULL"), "done: error 5 (message)",
 * "done: cancelled"; with NURSERY_FORMAT_DETAILED, first the kind, the
 * task's name and its argument: "capture 'fetch' arg=0x5610c2a0: ...",
 * "capture arg=0x5610c2a0: ..." (no name), "future: ...".
 * Returns the length it needed (snprintf-style; the output is truncated to
 * size - 1 and NUL-terminated if size > 0), or -1 for a NULL result. */
enum { NURSERY_FORMAT_DETAILED = 1 };
NURSERY_API int nursery_result_format(const nursery_result_t *r, char *buf, size_t size,
                                      int flags);

/* Reference counting.  Both accept NULL.  Thread-safe.  In the child of a
 * fork(), releasing a result made before it does nothing. */
NURSERY_API nursery_result_t *nursery_result_retain(nursery_result_t *r);
NURSERY_API void nursery_result_release(nursery_result_t *r);

/* ------------------------------------------------------------------------ */
/* Waiting for several results                                              */
/* ------------------------------------------------------------------------ */

/* Waits until every result is done (any mix of captures and futures),
 * waiting for each in turn as nursery_result_wait() does: a waiting pool
 * worker runs queued captures of the set that belong to its pool, each to
 * its end even past the deadline, and looks at the deadline between them.
 * Never reports the tasks' own errors; cancels nothing.  Returns, in this
 * order: EINVAL (results NULL while n > 0, or a NULL entry);
 * NURSERY_EFORKED (a result made before a fork, in the child); ECANCELED
 * when the calling task is cancelled, also when every result is done and
 * when n == 0; EDEADLK when the calling task's own capture is in the array
 * (checked before waiting for any); then 0 once every result is done (at
 * once for n == 0), or ETIMEDOUT. */
NURSERY_API int nursery_wait_all(nursery_result_t *const *results, size_t n,
                                 nursery_time_t deadline);

/* Waits until at least one result is done and sets *index to the one that
 * finished first (the earliest completion among those done, lowest index on
 * a tie).  Registers one waiter on all the results and sleeps until the
 * first completion; never polls.  While none is done, a waiting pool
 * worker runs a queued capture of the set that belongs to its pool, to its
 * end even past the deadline, and the wait then returns 0 (reporting the
 * earliest completion, which may be another result).  Cancels nothing.
 * Returns, in this order: EINVAL (n == 0, NULL array, entry or index);
 * NURSERY_EFORKED (a result made before a fork, in the child); ECANCELED
 * when the calling task is cancelled, also when a result is done already;
 * ENOMEM only when n > 16, no result is done and the caller is not
 * cancelled (it needs memory to sleep on that many); then 0, or ETIMEDOUT.
 * *index is set only on 0.  Waiting on the calling task's own capture is
 * not detected: it is just not done before the wait ends. */
NURSERY_API int nursery_wait_any(nursery_result_t *const *results, size_t n,
                                 nursery_time_t deadline, size_t *index);

/* ------------------------------------------------------------------------ */
/* Waiting for many operations (asyncio and concurrent.futures)             */
/* ------------------------------------------------------------------------ */

/* What nursery_wait() waits for (concurrent.futures' return_when). */
enum {
    /* One result done, whatever its outcome. */
    NURSERY_FIRST_COMPLETED = 1,
    /* One result failed (done with an error whose code is not ECANCELED:
     * a cancelled result is not a failure), or every result done
     * (FIRST_EXCEPTION). */
    NURSERY_FIRST_ERROR = 2,
    /* Every result done. */
    NURSERY_ALL_COMPLETED = 3,
};

/* asyncio.wait / concurrent.futures.wait: waits until the return_when
 * condition holds over the results (any mix of captures and futures), or
 * the deadline passes, and partitions them into done and pending.  A
 * deadline passing is not a failure of this call and cancels nothing: it
 * returns ETIMEDOUT with the partition set, and the caller decides
 * (cancel the pending ones with nursery_result_cancel(), say).
 * `order` (NULL, or n entries) gets the partition: order[0] to
 * order[*ndone - 1] are the indices of the done results, in the order they
 * completed (the earliest first, the lowest index on a tie), then the
 * indices of the pending ones, increasing.  Every index appears once: a
 * result given twice appears at both its indices, on the same side.
 * `ndone` (may be NULL) gets the number of done results.  Both are set on
 * 0 and ETIMEDOUT only, from one look at the results as the call returns.
 * The wait takes no reference, and any number of threads may wait on the
 * same results at once.  It registers once on each result and sleeps until
 * completions make the condition hold; it never polls.  While the condition does not
 * hold, a waiting pool worker runs queued captures of the set that belong
 * to its pool (each to its end, even past the deadline), looking at the
 * condition and the deadline between them; any other thread runs nothing.
 * Returns, in this order: EINVAL (results NULL while n > 0, a NULL entry,
 * or an unknown return_when); NURSERY_EFORKED (a result made before a
 * fork, in the child); ECANCELED when the calling task is cancelled, also
 * when the condition holds already and when n == 0; EDEADLK when
 * return_when is NURSERY_ALL_COMPLETED and the calling task's own capture
 * is in the set (checked before waiting; with the other conditions, the
 * caller's own capture is not detected: it is just not done before the
 * wait ends); ENOMEM only when n > 16, the condition does not hold at the
 * call and the deadline has not passed (it needs memory to sleep on that
 * many); then 0 when the condition holds (at once for n == 0: nothing is
 * pending), or ETIMEDOUT (a deadline already past only looks). */
NURSERY_API int nursery_wait(nursery_result_t *const *results, size_t n, nursery_time_t deadline,
                             int return_when, size_t *order, size_t *ndone);

/* An as_completed iterator (asyncio.as_completed): hands out the results
 * of a set one at a time as they complete, each exactly once, those done
 * already when it was created first (in the order they completed, the
 * lowest index on a tie), then the others in the order their completions
 * reach it.  It
 * registers once on each result when created, not on every call, and
 * sleeps until a completion; it never polls and cancels nothing.  One
 * thread at a time may use an iterator (its calls must not race with one
 * another); the results may complete on any thread. */
typedef struct nursery_as_completed nursery_as_completed_t;

/* Creates an iterator over n results (n == 0 is an empty iteration) with
 * a total `deadline` for the whole iteration (NURSERY_FOREVER: none; see
 * nursery_as_completed_set_deadline()).  It takes a reference to each
 * entry (one per index: a result given twice is handed out twice) and
 * keeps its own copy of the pointers, so the caller's array and
 * references are free afterwards; it allocates about 64 bytes per result
 * here, and nothing afterwards.  Not a blocking call (nor a cancellation
 * point).  Returns, in this order: EINVAL (out NULL, results NULL while
 * n > 0, or a NULL entry); NURSERY_EFORKED (a result made before a fork,
 * in the child); ENOMEM; 0.  On failure *out is NULL (if out is not) and
 * no reference is taken. */
NURSERY_API int nursery_as_completed_create(nursery_as_completed_t **out,
                                            nursery_result_t *const *results, size_t n,
                                            nursery_time_t deadline);

/* Waits for the next result to complete and hands it out: *index (may be
 * NULL) gets its index in the array given to create, and *result (may be
 * NULL) the iterator's reference to it, now the caller's to release; with
 * result NULL the iterator releases it.  While no result is ready, a
 * waiting pool worker runs a queued capture of the set that belongs to its
 * pool, as nursery_wait_any() does.  Returns, in this order: EINVAL (it
 * NULL); NURSERY_EFORKED (an iterator made before a fork, in the child);
 * ECANCELED when the calling task is cancelled, also when a result is
 * ready (nothing is handed out); NURSERY_EEND when every result has been
 * handed out; then 0 (also past the deadline, when a result is ready), or
 * ETIMEDOUT when the iterator's deadline passes and none is ready (nothing
 * is handed out; the iterator stays usable: give it a new deadline and
 * call again).  *index and *result are set only on 0. */
NURSERY_API int nursery_as_completed_next(nursery_as_completed_t *it, size_t *index,
                                          nursery_result_t **result);

/* Replaces the iterator's total deadline (NURSERY_FOREVER: none), for
 * the calls that follow.  Returns 0, EINVAL (NULL) or NURSERY_EFORKED. */
NURSERY_API int nursery_as_completed_set_deadline(nursery_as_completed_t *it,
                                                  nursery_time_t deadline);

/* How many results are still to be handed out (0 for NULL; the count
 * the iterator had, for one made before a fork, in the child).  Never
 * blocks. */
NURSERY_API size_t nursery_as_completed_remaining(const nursery_as_completed_t *it);

/* Frees the iterator and releases its references to the results it has
 * not handed out (it waits for none of them, and cancels none).  NULL is a
 * no-op; so is an iterator made before a fork, in the child. */
NURSERY_API void nursery_as_completed_free(nursery_as_completed_t *it);

/* What one task of nursery_gather() or nursery_map() came to. */
typedef struct nursery_outcome {
    /* 0: it succeeded.  Else its error's code: ECANCELED when it was
     * cancelled, or never started because the call stopped first. */
    int code;
    /* Its value when code is 0, else NULL.  The value belongs to whoever
     * the task's contract says; an outcome never frees it. */
    void *value;
    /* A reference to its error (release it with nursery_error_release(),
     * or all at once with nursery_outcomes_release()); NULL when it
     * succeeded, and for an item of nursery_map() that never started (a
     * task that was started and cancelled before it ran has a
     * cancellation error). */
    nursery_error_t *error;
} nursery_outcome_t;

/* Releases the errors of n outcomes and sets each error to NULL (the codes
 * and values stay).  Accepts NULL. */
NURSERY_API void nursery_outcomes_release(nursery_outcome_t *outcomes, size_t n);

/* Flags of nursery_gather() and nursery_map_options_t. */
enum {
    /* asyncio's return_exceptions=True: a task's failure cancels nothing
     * and does not fail the call; its outcome holds the error, and every
     * other task runs to its end. */
    NURSERY_RETURN_ERRORS = 1u << 0,
};

/* asyncio.gather: runs the n branches (functions with their arguments and
 * options, as for nursery_run_all()) as tasks of a nursery of its own on
 * `pool` (NULL: the pool of the calling task, else the default pool),
 * waits for them all, and puts what each came to in outcomes[i], in
 * argument order whatever the order they finished in.  Without flags it
 * fails fast: the first failure cancels the other branches and the call
 * returns NURSERY_EFAILED with the error group in *errors (as
 * nursery_join(); the cancellations it causes are not errors, and a
 * branch with NURSERY_TASK_SUPPRESS_ERROR keeps its error to its
 * outcome).  With NURSERY_RETURN_ERRORS, failures cancel nothing, are kept
 * to their outcomes (not in *errors), and the call returns 0 once every
 * branch has ended (ECANCELED when the caller was cancelled): look at each
 * outcome's code.
 * From inside a task it nests: its nursery is joined as nursery_join()
 * does, running queued branches in the calling worker, so it makes
 * progress on a pool of one thread.  Not itself a cancellation point: a
 * caller cancelled at the call or meanwhile has its branches cancelled
 * (their outcomes say ECANCELED) and gets ECANCELED.  Returns, in this
 * order: EINVAL (branches or outcomes NULL while n > 0, a NULL fn or an
 * unknown flag in a branch's options, or an unknown flag: nothing runs,
 * no arg_destroy runs); ENOMEM, NURSERY_EFORKED or the other errors of
 * nursery_open() (nothing runs; every branch's arg_destroy runs); then 0,
 * NURSERY_EFAILED, or ECANCELED (the caller was cancelled and no branch
 * failed).  n == 0 runs nothing, opens no nursery, and returns 0
 * (ECANCELED for a cancelled caller), after the EINVAL checks.  outcomes[] are set, with their error references the caller's,
 * on those last three returns only.  *errors (errors may be NULL) as for
 * nursery_join(), NULL on the other returns. */
NURSERY_API int nursery_gather(nursery_pool_t *pool, const nursery_branch_t *branches, size_t n,
                               unsigned flags, nursery_outcome_t *outcomes,
                               nursery_errors_t **errors);

/* Options of nursery_map() and nursery_map_stream(); NULL means all
 * defaults. */
typedef struct nursery_map_options {
    /* At most this many items in flight at once: started and not ended,
     * whatever the pool's size (0: the number of CPUs the process may run
     * on).  Only that many tasks are ever queued or running, so a map of a
     * million items costs O(limit) memory besides the outcomes. */
    size_t limit;
    /* NURSERY_RETURN_ERRORS, or 0 to fail fast. */
    unsigned flags;
    /* Each item's task options (its name; of the NURSERY_TASK_* flags only
     * NURSERY_TASK_SUPPRESS_ERROR, which keeps an item's failure to its
     * outcome even when failing fast; and
     * arg_destroy, which the map calls once on every argument it took:
     * for nursery_map(), when the item has ended, and on the arguments of
     * items that never started before it returns; for
     * nursery_map_stream(), once the sink has seen the item, or before it
     * returns for an item the sink will not see); NULL for none. */
    const nursery_task_options_t *task;
    /* If not NULL, called in the calling thread each time a batch of
     * items has ended (about half of those in flight): `done` items have
     * ended out of `total` (for nursery_map_stream(), 0 until the
     * generator has ended).  Items that never started do not count; when
     * the map runs to its end (nothing stopped it), the last call has
     * done == total.  Not called when nothing runs.  Keep it short: no item starts while it runs. */
    void (*progress)(void *ctx, size_t done, size_t total);
    void *progress_ctx;
} nursery_map_options_t;

/* A parallel map: runs fn(args[i]) for each of the n arguments as tasks of
 * a nursery of its own on `pool` (NULL: the pool of the calling task,
 * else the default pool), at most opts->limit at once, starting them in
 * input order, and puts what each came to in outcomes[i] (input order).
 * Fail-fast (no NURSERY_RETURN_ERRORS): the first failure cancels the
 * items in flight, no item starts after it, and the call returns
 * NURSERY_EFAILED with the error group in *errors; the items that never
 * started have outcome code ECANCELED and no error.  With
 * NURSERY_RETURN_ERRORS, an item's failure stops nothing and is kept to
 * its outcome: every item runs, and the call returns 0 unless the caller
 * is cancelled or an item cannot be started.  The calling thread starts
 * the items and waits for them (a worker of the map's pool runs queued
 * items of the map while it waits, so a map inside a task makes progress
 * on a pool of one thread), and calls opts->progress.  Not itself
 * a cancellation point: a caller cancelled at the call or meanwhile stops
 * starting items, has those in flight cancelled, and gets ECANCELED.
 * Returns, in this order: EINVAL (fn NULL, args or outcomes NULL while n >
 * 0, an unknown flag in opts, a flag other than NURSERY_TASK_SUPPRESS_ERROR
 * in opts->task: nothing runs, no arg_destroy runs); for n == 0, 0 or
 * ECANCELED (a cancelled caller) at once, opening no nursery; ENOMEM, NURSERY_EFORKED or the other errors of nursery_open()
 * (nothing runs; every argument's arg_destroy runs); then 0,
 * NURSERY_EFAILED (an item
 * failed, or an item could not be started for want of memory: the error
 * group says ENOMEM), or ECANCELED.  outcomes[] are all set, the error
 * references the caller's, on those last three returns only.  *errors
 * (may be NULL) as for nursery_join() on those three, NULL on the
 * others. */
NURSERY_API int nursery_map(nursery_pool_t *pool, nursery_fn fn, void *const *args, size_t n,
                            const nursery_map_options_t *opts, nursery_outcome_t *outcomes,
                            nursery_errors_t **errors);

/* The input of nursery_map_stream(): stores the next argument in *arg and
 * returns 0; returns NURSERY_EEND when there are no more; any other code
 * stops the map as a failure (the generator may call nursery_fail() for a
 * message).  Called in the calling thread of nursery_map_stream(), one
 * call at a time. */
typedef int (*nursery_map_next_fn)(void *ctx, void **arg);

/* The output of nursery_map_stream(): called in the calling thread, in
 * input order (index 0, 1, 2, ...), with each item's argument and outcome
 * (borrowed for the call: retain the error to keep it).  Returning non-zero
 * stops the map as a failure, as the generator's does. */
typedef int (*nursery_map_sink_fn)(void *ctx, size_t index, void *arg,
                                   const nursery_outcome_t *outcome);

/* A streaming, ordered parallel map, for inputs that do not fit in memory
 * and for a tool that prints results in input order while later items
 * still run: takes arguments from next(next_ctx, &arg) as there is room,
 * runs fn(arg) for each as nursery_map() does (at most opts->limit in
 * flight), and hands each outcome to sink(sink_ctx, ...) in input order as
 * soon as every earlier item has been handed out.  Memory stays O(limit):
 * at most opts->limit items run at once, and at most opts->limit more
 * wait, ended, for an earlier one to be handed out; no argument is read
 * from the generator while that window is full.  Fail-fast (no
 * NURSERY_RETURN_ERRORS): the first failure, of an item, the generator
 * or the sink, cancels the items in flight, starts no more and hands out
 * nothing more; the call returns NURSERY_EFAILED with the error group in
 * *errors.  With NURSERY_RETURN_ERRORS an item's failure is handed to the
 * sink like any outcome, and only the generator or the sink can stop the
 * map (as a failure, the same way).  A caller cancelled at the call or
 * meanwhile has the items in flight cancelled, gets ECANCELED, and from
 * then on no argument is read and nothing is handed out (cancelled at the
 * call, next is never called).  The rest as nursery_map().  Returns, in
 * this order: EINVAL (fn, next or sink NULL, or a flag nursery_map()
 * refuses); ENOMEM, NURSERY_EFORKED or the other errors of nursery_open()
 * (next is never called); then 0 (every item handed out, the generator
 * ended with NURSERY_EEND), NURSERY_EFAILED, or ECANCELED.  *errors as for
 * nursery_map(). */
NURSERY_API int nursery_map_stream(nursery_pool_t *pool, nursery_fn fn, nursery_map_next_fn next,
                                   void *next_ctx, nursery_map_sink_fn sink, void *sink_ctx,
                                   const nursery_map_options_t *opts, nursery_errors_t **errors);

/* ------------------------------------------------------------------------ */
/* Cancellation                                                             */
/* ------------------------------------------------------------------------ */

/* Whether the calling code is cancelled: its task, nursery body or cancel
 * scope (or an enclosing one it is not shielded from).  False outside any
 * task, body and scope (so in the child of a fork(), in the thread that
 * forked, whatever it was running).  Never blocks. */
NURSERY_API bool nursery_cancelled(void);

/* Returns ECANCELED if the calling code is cancelled (as
 * nursery_cancelled() tells), else 0 (also outside any task, body and
 * scope, as in a fork child).  Never blocks. */
NURSERY_API int nursery_checkpoint(void);

/* Sleeps until `deadline`.  Returns 0 when it passed, ECANCELED as soon as
 * the calling code is cancelled (at once if it already is, even with a
 * deadline that has passed).  Runs nothing while it sleeps, even in a pool
 * worker. */
NURSERY_API int nursery_sleep(nursery_time_t deadline);

/* ---- Cancel scopes (Trio's CancelScope, move_on_after, fail_after) ----
 *
 * A scope is a region of code in one thread, opened and closed by that
 * thread, nested strictly inside the task, body or scope that opened it.
 * Cancelling it (or its deadline passing) cancels that region: every
 * cancellation point inside it (nursery_checkpoint(), nursery_sleep(),
 * every blocking call of the library, nursery_poll(),
 * nursery_child_wait()) fails with ECANCELED until the scope is closed
 * (level-triggered), cancel hooks registered inside it run, and the tasks
 * of nurseries opened inside it are cancelled.  Outside any task or body
 * (the main thread, say) a scope makes the code inside it cancellable.
 *
 * Deadlines are kept by a library thread, started the first time a
 * deadline is set in the process: a deadline fires on time even while
 * every thread under it is blocked (in a library wait, nursery_poll(),
 * nursery_child_wait(), or a call a cancel hook interrupts), and the
 * hooks of the code it cancels run in that thread. */
typedef struct nursery_scope nursery_scope_t;

/* Scope flags. */
enum {
    /* Cancellation from outside the scope (enclosing scopes, nurseries,
     * tasks) does not reach inside it; its own cancel and deadline do.
     * Outer deadlines do not count in nursery_current_deadline() inside
     * it.  For cleanup that must still wait. */
    NURSERY_SCOPE_SHIELD = 1u << 0,
    /* fail_after: nursery_scope_close() returns ETIMEDOUT when the scope
     * caught a cancellation (NURSERY_SCOPE_CANCELLED_CAUGHT) and its
     * deadline passed while it was open. */
    NURSERY_SCOPE_FAIL_ON_DEADLINE = 1u << 1,
};

/* What nursery_scope_close() reports in *outcome (bits). */
enum {
    /* The scope was cancelled: nursery_scope_cancel() was called or its
     * deadline passed (Trio's cancel_called). */
    NURSERY_SCOPE_CANCEL_CALLED = 1u << 0,
    /* Its deadline passed while it was open (also after a cancel). */
    NURSERY_SCOPE_DEADLINE_PASSED = 1u << 1,
    /* The scope was cancelled, a cancellation point inside it returned
     * ECANCELED (so did nursery_join() of a nursery opened inside it), and
     * no enclosing scope, nursery or task that the scope is not shielded
     * from is cancelled too, to take it instead (Trio's cancelled_caught:
     * the outermost cancelled scope catches).  The cancellation ends here:
     * the code after the scope runs on uncancelled, unless something else
     * cancels it. */
    NURSERY_SCOPE_CANCELLED_CAUGHT = 1u << 2,
};

/* Opens a scope in the calling thread, inside its innermost task, body or
 * scope, with a deadline (NURSERY_FOREVER: none) and NURSERY_SCOPE_*
 * flags.  A deadline already past cancels the scope before this returns.
 * Returns 0 and sets *out (the caller's reference, given back by
 * nursery_scope_close()); EINVAL (out NULL, or an unknown flag); ENOMEM;
 * EAGAIN or ENOMEM, with a deadline that has not passed, when the
 * library's deadline thread cannot be started or keep one more deadline.  On failure
 * *out is NULL (if out is not) and nothing is opened. */
NURSERY_API int nursery_scope_open(nursery_scope_t **out, nursery_time_t deadline, unsigned flags);

/* Closes the scope: it must be the calling thread's innermost open scope,
 * and every nursery opened inside it joined.  The code after it is again
 * under the enclosing task, body or scope.  Sets *outcome (if not NULL) to
 * NURSERY_SCOPE_* outcome bits (0 on failure), and releases the caller's
 * reference.  The cancel hooks registered inside it must be removed
 * first: once it is closed they never run, and removing one then touches
 * memory that is gone.
 * Returns 0; ETIMEDOUT with NURSERY_SCOPE_FAIL_ON_DEADLINE when the scope
 * caught a cancellation and its deadline passed (the scope is closed all
 * the same); EINVAL (NULL; not the calling thread's innermost open scope,
 * as when it is another thread's, when a nursery or scope opened inside
 * it is still open, or when it is closed already through a
 * reference retained with nursery_scope_retain(), since close gives back
 * the opener's: nothing changes); NURSERY_EFORKED in the child of a fork()
 * on a scope of the parent's (nothing changes). */
NURSERY_API int nursery_scope_close(nursery_scope_t *s, unsigned *outcome);

/* Cancels the scope (see above).  Idempotent; never blocks for the code
 * inside; runs the cancel hooks registered inside the scope in the calling
 * thread before it returns.  Returns 0; EINVAL (NULL); NURSERY_ECLOSED
 * once the scope is closed (changing nothing); NURSERY_EFORKED in the
 * child of a fork() on a scope of the parent's.  Any thread, through a
 * reference of its own (nursery_scope_retain()) unless it is the owner. */
NURSERY_API int nursery_scope_cancel(nursery_scope_t *s);

/* Moves the deadline of an open scope, earlier or later (NURSERY_FOREVER:
 * none); once it has passed and cancelled the scope, the scope stays
 * cancelled.  A deadline already past cancels the scope before this
 * returns.  Returns 0; EINVAL (NULL); NURSERY_ECLOSED (closed);
 * NURSERY_EFORKED (a scope of the parent of a fork, in the child); ENOMEM
 * or EAGAIN when the scope had no deadline and the library cannot keep
 * one (the deadline is unchanged).  Any thread, as nursery_scope_cancel(). */
NURSERY_API int nursery_scope_set_deadline(nursery_scope_t *s, nursery_time_t deadline);

/* The scope's deadline (NURSERY_FOREVER: none; also for NULL).  Any
 * thread, also after close through a retained reference. */
NURSERY_API nursery_time_t nursery_scope_deadline(const nursery_scope_t *s);

/* Whether the scope was cancelled (nursery_scope_cancel() or its
 * deadline); false for NULL.  Any thread, also after close through a
 * retained reference. */
NURSERY_API bool nursery_scope_cancel_called(const nursery_scope_t *s);

/* A reference for another thread that may cancel the scope or move its
 * deadline, valid after the scope is closed; every retain needs one
 * release.  Retain returns s.  Both accept NULL.  Thread-safe.  Releasing a scope of the
 * parent of a fork, in the child, does nothing. */
NURSERY_API nursery_scope_t *nursery_scope_retain(nursery_scope_t *s);
NURSERY_API void nursery_scope_release(nursery_scope_t *s);

/* The calling code's effective deadline: the earliest deadline of its
 * enclosing scopes and nurseries (nursery_open_until()), in this thread
 * and in the threads that opened the nurseries it runs in, stopping at
 * the first shielded scope (whose own deadline counts).  NURSERY_FOREVER
 * when there is none, and outside any task, body or scope.  When it
 * passes, the scope or nursery it belongs to is cancelled, so no
 * cancellation point waits beyond it, whatever deadline it was given. */
NURSERY_API nursery_time_t nursery_current_deadline(void);

/* ---- Cancel hooks: cancellation that reaches foreign blocking code ---- */

typedef struct nursery_cancel_hook nursery_cancel_hook_t;

/* Registers fn(arg) to run once when the calling code's innermost task,
 * body or scope is cancelled, whatever the cause (nursery_cancel(), a
 * scope's cancel or deadline, a failing sibling, nursery_result_cancel(),
 * an enclosing scope or nursery it is not shielded from): it runs in the
 * thread that cancels, promptly, even while the registering thread is
 * blocked outside the library, so it can wake that thread (shut down a
 * socket with shutdown(2), which, unlike close(2), wakes a thread blocked
 * in read(); kill a child process; signal a condition variable of the
 * caller's).  Keep it short and non-blocking: it may run in the library's
 * deadline thread, delaying other deadlines; it must not remove itself,
 * close the scope or join the nursery it was registered in.  When that code is cancelled already,
 * fn runs in the calling thread before this returns.  Returns 0 and sets
 * *out, to be given to nursery_cancel_hook_remove() before the task, body
 * or scope ends; EINVAL (fn or out NULL, or no task, body or scope in this
 * thread: nothing could cancel it); ENOMEM.  On failure *out is NULL (if
 * out is not) and fn has not run.  Not a cancellation point. */
NURSERY_API int nursery_on_cancel(void (*fn)(void *arg), void *arg, nursery_cancel_hook_t **out);

/* Unregisters and frees a hook (from any thread, once).  If fn is running
 * in another thread, waits until it has returned, so that once this
 * returns fn runs no more and touches nothing.  Sets *ran (if not NULL) to whether fn ran (or is
 * running).  Returns 0; EINVAL (NULL, or called from inside fn itself,
 * which would wait forever). */
NURSERY_API int nursery_cancel_hook_remove(nursery_cancel_hook_t *h, bool *ran);

/* ---- Cancellable waits for file descriptors and child processes ---- */

struct pollfd;

/* poll(2) that is a cancellation point: waits until one of the n
 * descriptors is ready as poll() tells it (events in, revents out), the
 * deadline passes, or the calling code is cancelled.  Returns, in this
 * order: EINVAL (fds or ready NULL, or n == 0); ECANCELED when the caller
 * is cancelled at the call, even if a descriptor is ready; EMFILE, ENFILE
 * or ENOMEM when the calling thread's wake-up descriptor (an eventfd on
 * Linux, else a pipe; one per thread that polls inside a task, body or
 * scope, made on its first use, closed when the thread exits) cannot be
 * made (outside them none is made, and these cannot happen); ENOMEM
 * (more than 16 descriptors, and no memory for the copy that
 * adds the wake-up descriptor); then 0 with *ready set to the number of
 * entries with non-zero revents (at least 1), ETIMEDOUT (a deadline
 * already past only looks), ECANCELED (during the wait a ready descriptor
 * wins), or what poll(2) fails with (EINVAL for too many descriptors,
 * ENOMEM).  Interrupted by a
 * signal, it goes on waiting.  revents is set only on 0.  A pool worker
 * that blocks here counts as blocked, so the pool may add a thread. */
NURSERY_API int nursery_poll(struct pollfd *fds, size_t n, nursery_time_t deadline,
                             size_t *ready);

/* Waits for child process `pid` to end, and reaps it (waitpid(pid, status,
 * 0) that is a cancellation point).  Uses a pidfd where the kernel has
 * them (Linux 5.3), else looks with waitpid(WNOHANG) at growing intervals
 * (1 to 50 ms).  Returns, in this order: EINVAL (pid <= 0); ECANCELED
 * when the caller is cancelled at the call; ECHILD (not a child of this
 * process, or reaped already); then 0 with *status (if not NULL) set as
 * by waitpid(); ETIMEDOUT or ECANCELED, leaving the child running and
 * unreaped (kill it and wait again, in a shielded scope if the caller is
 * cancelled); or
 * EMFILE, ENFILE or ENOMEM from nursery_poll() on the pidfd (a pidfd that
 * cannot be made is not an error: the other way is taken). */
NURSERY_API int nursery_child_wait(pid_t pid, int *status, nursery_time_t deadline);

/* ------------------------------------------------------------------------ */
/* Channels                                                                 */
/* ------------------------------------------------------------------------ */

/* A bounded multi-producer multi-consumer FIFO of void * items, reached
 * through send and receive ends that are cloned and closed separately.
 *
 * A channel belongs to the process that created it.  In the child of a
 * fork(), every call on an end made before the fork returns
 * NURSERY_EFORKED at once, without waiting for the channel's lock (a
 * thread that does not exist in the child may have held it), so an item is
 * never handed to a receiver that is not there: the sender keeps it.
 * nursery_sender_free() and nursery_receiver_free() on such an end do
 * nothing (it and its items are the parent's).  Channels created in the
 * child work normally there. */
typedef struct nursery_sender nursery_sender_t;
typedef struct nursery_receiver nursery_receiver_t;

/* Creates a channel holding up to `capacity` items (0: every send waits for
 * a receiver).  `item_destroy` (may be NULL) is called once on each item
 * still buffered when the last receive end closes, by the thread that
 * closes it, without the channel's lock (an item a send could not deliver
 * stays the sender's).  *tx and *rx are owned by the caller (free them with
 * nursery_sender_free / nursery_receiver_free).  0, EINVAL, ENOMEM.
 *
 * Thread-safe: every call may be made from any thread, on one end or on
 * different ends at once, and frees and closes of *different* ends may
 * race freely (the last send end and the last receive end freed together
 * is safe).  Only an end's own free must not race with another use of that
 * same end.
 *
 * The nursery_channel_*, nursery_sender_* and nursery_receiver_* calls
 * check their arguments (EINVAL), then whether the end was made before a
 * fork() of which this is the child (NURSERY_EFORKED), before anything
 * else. */
NURSERY_API int nursery_channel_create(size_t capacity, void (*item_destroy)(void *item),
                                       nursery_sender_t **tx, nursery_receiver_t **rx);

/* Sends an item, blocking while the channel is full.  Like every blocking
 * call, it fails with ECANCELED in a cancelled task even when it could
 * complete at once.  Returns 0; EPIPE (every receive end closed);
 * NURSERY_ECLOSED (this end was closed, also while blocked in this call);
 * ETIMEDOUT; ECANCELED; NURSERY_EFORKED (see above); EINVAL.  On failure
 * the item was not delivered and the caller still owns it. */
NURSERY_API int nursery_channel_send(nursery_sender_t *tx, void *item, nursery_time_t deadline);

/* Like send, but returns EAGAIN instead of blocking.  Not a blocking call,
 * so not a cancellation point: in a cancelled task it succeeds as it would
 * otherwise (send fails there with ECANCELED).  Returns 0, EAGAIN, EPIPE,
 * NURSERY_ECLOSED, NURSERY_EFORKED or EINVAL. */
NURSERY_API int nursery_channel_try_send(nursery_sender_t *tx, void *item);

/* Receives the oldest item, blocking while the channel is empty.  Returns
 * 0 with *item set; NURSERY_EEOC when every send end is closed and nothing
 * is buffered; NURSERY_ECLOSED (this end was closed, also while blocked in
 * this call); ETIMEDOUT; ECANCELED (even with an item there, as for send);
 * NURSERY_EFORKED (see above); EINVAL.  On failure *item is unchanged. */
NURSERY_API int nursery_channel_recv(nursery_receiver_t *rx, void **item, nursery_time_t deadline);

/* Like recv, but returns EAGAIN instead of blocking.  Not a blocking call,
 * so not a cancellation point: in a cancelled task it still takes an item
 * that is there (recv fails there with ECANCELED).  Returns 0 with *item
 * set, EAGAIN, NURSERY_EEOC, NURSERY_ECLOSED, NURSERY_EFORKED or EINVAL. */
NURSERY_API int nursery_channel_try_recv(nursery_receiver_t *rx, void **item);

/* New ends on the same channel.  0, EINVAL, ENOMEM, NURSERY_ECLOSED (the
 * end given was closed), NURSERY_EFORKED.  On failure *out is NULL. */
NURSERY_API int nursery_sender_clone(nursery_sender_t *tx, nursery_sender_t **out);
NURSERY_API int nursery_receiver_clone(nursery_receiver_t *rx, nursery_receiver_t **out);

/* Closes an end; it stays allocated (further use gives NURSERY_ECLOSED)
 * until freed.  Wakes every blocked sender and receiver that the close
 * affects.  Returns 0, NURSERY_ECLOSED if already closed, NURSERY_EFORKED
 * (nothing is closed), EINVAL. */
NURSERY_API int nursery_sender_close(nursery_sender_t *tx);
NURSERY_API int nursery_receiver_close(nursery_receiver_t *rx);

/* Closes the end if still open (as nursery_*_close) and frees it; the
 * channel is freed with its last end, after the close of the last receive
 * end has passed the buffered items to item_destroy.  NULL is a no-op.
 * May race with anything done to other ends, including their frees; must
 * not race with another use of the same end.  In the child of a fork(),
 * on an end made before it, does nothing. */
NURSERY_API void nursery_sender_free(nursery_sender_t *tx);
NURSERY_API void nursery_receiver_free(nursery_receiver_t *rx);

/* Channel statistics, like Trio's statistics().  The stats calls fill *out
 * with a snapshot and return 0, or return EINVAL or NURSERY_EFORKED (*out
 * unchanged). */
typedef struct nursery_channel_stats {
    size_t buffered;         /* items buffered */
    size_t capacity;         /* the capacity given at creation */
    size_t open_senders;     /* send ends not closed */
    size_t open_receivers;   /* receive ends not closed */
    size_t waiting_senders;  /* senders blocked in send */
    size_t waiting_receivers; /* receivers blocked in recv */
} nursery_channel_stats_t;

NURSERY_API int nursery_sender_stats(const nursery_sender_t *tx, nursery_channel_stats_t *out);
NURSERY_API int nursery_receiver_stats(const nursery_receiver_t *rx,
                                       nursery_channel_stats_t *out);

/* Sends each result (a new reference, which the receiver must release) to
 * `tx` in completion order, as aioresult's results_to_channel.  Blocks
 * until every result is sent; its waits for the results run queued
 * captures of the set as nursery_wait_any() does.  With close_on_complete,
 * closes `tx` when it returns, also on cancellation or error, so a
 * consumer's loop ends.  A cancellation point, also with n == 0.  Returns
 * 0; EINVAL (tx NULL, results NULL while n > 0, or a NULL entry);
 * NURSERY_EFORKED (a result, or tx, made before a fork, in the child);
 * ECANCELED; ENOMEM (no memory for its copy of the array, or to wait on
 * more than 16 results none of which is done); EPIPE (every receive end
 * closed); NURSERY_ECLOSED (tx was closed).  Results sent before a failure
 * stay sent. */
NURSERY_API int nursery_results_to_channel(nursery_result_t *const *results, size_t n,
                                           nursery_sender_t *tx, bool close_on_complete);

/* ------------------------------------------------------------------------ */
/* Debugging a running program                                              */
/* ------------------------------------------------------------------------ */

/* Names a nursery, for nursery_dump(), the task hooks and the probes (see
 * nursery_dump(3)).  Copies up to 31 bytes of `name` (a longer name is cut);
 * NULL or "" removes the name.  Returns 0; EINVAL (n NULL); NURSERY_EFORKED
 * (a nursery of the parent of a fork, in the child); NURSERY_ECLOSED (a
 * joined nursery, through a retained handle), checked in that order.
 * Thread-safe. */
NURSERY_API int nursery_set_name(nursery_t *n, const char *name);

/* A nursery's task counts (a snapshot: read one after the other while tasks
 * run; exact once it is joined). */
typedef struct nursery_counts {
    uint64_t started;   /* tasks a start call accepted (also those still
                         * waiting for a place under nursery_set_limit()) */
    uint64_t finished;  /* of those, tasks that ended, whatever the outcome */
    uint64_t failed;    /* of those, tasks that ended with an error other
                         * than a cancellation (NURSERY_TASK_SUPPRESS_ERROR
                         * ones included) */
    uint64_t cancelled; /* of those, tasks that ended cancelled */
} nursery_counts_t;

/* Fills *out.  Works on an open nursery and on a joined one (through a
 * retained handle).  Returns 0; EINVAL (n or out NULL); NURSERY_EFORKED (a
 * nursery of the parent of a fork, in the child).  Thread-safe. */
NURSERY_API int nursery_counts(nursery_t *n, nursery_counts_t *out);

/* Flags of nursery_dump(). */
#define NURSERY_DUMP_JSON 0x1u /* one JSON object instead of the text form */

/* Writes everything the library knows about this process to `out`: every
 * pool (its threads, idle, blocked, queued, its statistics), every open
 * nursery as a tree under the task or thread that opened it (name, age,
 * tasks pending, queued, whether it is cancelled and why, its deadline),
 * and every task that runs (name, running or blocked, for how long, on
 * which thread, and what it is blocked in: a join, a wait on results, a
 * channel send or receive, a sleep, a poll, a child wait, a start).
 * Queued tasks are counted, not listed.  The formats are in
 * nursery_dump(3).
 *
 * Callable from any thread at any time, a task included; the program goes
 * on meanwhile (the dump takes the library's locks only briefly, one at a
 * time, never waits for a task, and may show a task that is ending).  Not
 * async-signal-safe: to dump on a signal, see nursery_dump_on_signal().
 * At most 32 nested frames (tasks and nurseries) are shown per thread.
 * The dump knows the pools' workers and the threads that have opened a
 * nursery or run nursery_capture_run(): another thread's waits, and a
 * queued capture that such a thread cancels, are not shown (recording one
 * would take memory where the library promises to take none).
 *
 * `out` is flushed at the end.  Returns 0; EINVAL (out NULL, or an unknown
 * flag); ENOMEM (no memory for the snapshot: nothing was written); EIO
 * (writing to or flushing `out` failed; part may have been written).
 * Thread-safe. */
NURSERY_API int nursery_dump(FILE *out, unsigned flags);

/* From now on, signal `signo` makes the library's dump thread (named
 * "nursery-dump") write nursery_dump() in the text form to stderr; the
 * signal handler itself only wakes that thread.  It replaces the signal's
 * handler (installed with SA_RESTART; the disposition it had is restored by
 * a later call with another signal or 0).  0 stops dumping on signals; the
 * signal already in place changes nothing.  The environment variable
 * NURSERY_DUMP_SIGNAL (a number or a name such as QUIT, SIGQUIT or usr1)
 * does the same when the first pool is created (nursery(7)).  In the child
 * of a fork(), the handler stays but no dump thread runs (the signal does
 * nothing) until this is called again there.
 * Returns 0; EINVAL (not a signal this can catch: SIGKILL, SIGSTOP, a
 * number out of range); EAGAIN or ENOMEM (the dump thread could not be
 * started: nothing is changed).  Thread-safe. */
NURSERY_API int nursery_dump_on_signal(int signo);

#ifdef __cplusplus
}
#endif

#endif /* NURSERY_H */
