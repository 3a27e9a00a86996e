/* SPDX-License-Identifier: MIT */
/*
 * error.c - error objects, error groups and nursery_strerror().
 *
 * An error is immutable once shared: the code, message, task name and
 * payload are set by its creator (the task name by the runner while the
 * runner holds the only reference) and then only read, so readers need no
 * lock.  The reference count is the only field that changes afterwards.
 *
 * An error group is built inside the nursery whose errors it holds, under
 * the nursery's lock, and handed to the joiner as it is: join allocates
 * nothing, so no error is lost for want of memory.  The group's `release`
 * gives the memory holding it back when the caller frees it.  The cap keeps
 * a million failing tasks from exhausting memory while still counting
 * every one of them.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nursery_error {
    atomic_int refs;           /* owners; freed at zero */
    int code;                  /* non-zero, fixed */
    char *message;             /* owned, fixed */
    char *task_name;           /* owned or NULL; set once before sharing */
    void *payload;             /* user data, or NULL; set once before sharing */
    void (*destroy)(void *);   /* payload destructor, or NULL */
};

/* ---- errors ------------------------------------------------------------ */

nursery_error_t *nursery__error_new(int code, const char *fmt, va_list ap)
{
    nursery_error_t *err = calloc(1, sizeof(*err));
    if (!err)
        return NULL;
    if (fmt) {
        if (vasprintf(&err->message, fmt, ap) < 0)
            err->message = NULL;
    } else {
        err->message = strdup(nursery_strerror(code));
    }
    if (!err->message) {
        free(err);
        return NULL;
    }
    atomic_init(&err->refs, 1);
    err->code = code;
    return err;
}

static nursery_error_t *error_make(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    nursery_error_t *err = nursery__error_new(code, fmt, ap);
    va_end(ap);
    return err;
}

/* Errors for when memory runs out, shared by everyone and never freed:
 * their count starts so high that releases cannot bring it to 0. */
#define IMMORTAL_ERROR(c, text) {.refs = INT32_MAX / 2, .code = (c), .message = (char *)(text)}

nursery_error_t *nursery__error_oom(void)
{
    static nursery_error_t oom =
        IMMORTAL_ERROR(ENOMEM, "Cannot allocate memory (while recording a task's error)");
    return &oom;
}

nursery_error_t *nursery__error_from_code(int code)
{
    nursery_error_t *err = error_make(code, NULL);
    return err ? err : nursery__error_oom();
}

nursery_error_t *nursery__error_cancelled(const char *task_name)
{
    /* A cancellation stays a cancellation when memory runs out. */
    static nursery_error_t cancelled = IMMORTAL_ERROR(ECANCELED, "Operation canceled");
    nursery_error_t *err = error_make(ECANCELED, NULL);
    if (!err)
        return &cancelled;
    nursery__error_set_task_name(err, task_name);
    return err;
}

void nursery__error_set_task_name(nursery_error_t *err, const char *name)
{
    /* Only while unshared: a second owner could be reading it. */
    if (!err || !name || err->task_name || atomic_load(&err->refs) != 1)
        return;
    err->task_name = strdup(name);
}

int nursery_error_create(nursery_error_t **out, int code, const char *fmt, ...)
{
    if (!out || code == 0)
        return EINVAL;
    va_list ap;
    va_start(ap, fmt);
    *out = nursery__error_new(code, fmt, ap);
    va_end(ap);
    return *out ? 0 : ENOMEM;
}

int nursery_error_set_payload(nursery_error_t *err, void *payload, void (*destroy)(void *))
{
    if (!err)
        return EINVAL;
    if (err->payload || err->destroy)
        return EALREADY;
    err->payload = payload;
    err->destroy = destroy;
    return 0;
}

int nursery_error_code(const nursery_error_t *err)
{
    return err ? err->code : 0;
}

const char *nursery_error_message(const nursery_error_t *err)
{
    return err ? err->message : NULL;
}

const char *nursery_error_task_name(const nursery_error_t *err)
{
    return err ? err->task_name : NULL;
}

void *nursery_error_payload(const nursery_error_t *err)
{
    return err ? err->payload : NULL;
}

nursery_error_t *nursery_error_retain(nursery_error_t *err)
{
    if (err)
        atomic_fetch_add_explicit(&err->refs, 1, memory_order_relaxed);
    return err;
}

void nursery_error_release(nursery_error_t *err)
{
    /* acq_rel: the last owner must see every other owner's reads finished
     * (and so must TSan: see annotate.h). */
    if (!err)
        return;
    nursery__hb_release(err);
    if (atomic_fetch_sub_explicit(&err->refs, 1, memory_order_acq_rel) != 1)
        return;
    nursery__hb_acquire(err);
    if (err->destroy)
        err->destroy(err->payload);
    free(err->message);
    free(err->task_name);
    free(err);
}

/* ---- error groups ------------------------------------------------------ */

void nursery__errors_init(nursery_errors_t *g, void (*release)(nursery_errors_t *g))
{
    /* Not the items, read only up to count: clearing them would cost every
     * nursery_open 512 bytes of stores. */
    g->count = 0;
    g->dropped = 0;
    g->cancelled = 0;
    g->release = release;
}

void nursery__errors_add(nursery_errors_t *g, nursery_error_t *err)
{
    if (g->count < NURSERY_ERRORS_KEPT)
        g->items[g->count++] = nursery_error_retain(err);
    else
        g->dropped++;
}

void nursery__errors_clear(nursery_errors_t *g)
{
    for (size_t i = 0; i < g->count; i++)
        nursery_error_release(g->items[i]);
    g->count = 0;
    g->dropped = 0;
    g->cancelled = 0;
}

size_t nursery_errors_count(const nursery_errors_t *g)
{
    return g ? g->count : 0;
}

nursery_error_t *nursery_errors_get(const nursery_errors_t *g, size_t i)
{
    return g && i < g->count ? g->items[i] : NULL;
}

size_t nursery_errors_dropped(const nursery_errors_t *g)
{
    return g ? g->dropped : 0;
}

size_t nursery_errors_cancelled(const nursery_errors_t *g)
{
    return g ? g->cancelled : 0;
}

void nursery_errors_free(nursery_errors_t *g)
{
    if (!g)
        return;
    nursery__errors_clear(g);
    if (g->release)
        g->release(g);
}

/* ---- strerror ---------------------------------------------------------- */

static const char *const library_messages[] = {
    [NURSERY_ENOTDONE - NURSERY_EBASE] = "Result is not done yet",
    [NURSERY_EFAILED - NURSERY_EBASE] = "Task failed",
    [NURSERY_ECLOSED - NURSERY_EBASE] = "Nursery, scope or channel end is closed",
    [NURSERY_ENOTSTARTED - NURSERY_EBASE] = "Task returned without calling nursery_started",
    [NURSERY_EEOC - NURSERY_EBASE] = "End of channel",
    [NURSERY_EFORKED - NURSERY_EBASE] = "Object belongs to the parent of a fork",
    [NURSERY_EEXPIRED - NURSERY_EBASE] = "Deadline of the nursery passed",
    [NURSERY_EEND - NURSERY_EBASE] = "Nothing left to hand out",
};

const char *nursery_strerror(int code)
{
    if (code == 0)
        return "Success";
    if (code > NURSERY_EBASE && code < NURSERY_ELAST)
        return library_messages[code - NURSERY_EBASE];
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    /* Thread-safe and static, unlike strerror(). */
    const char *desc = strerrordesc_np(code);
    if (desc)
        return desc;
#else
    switch (code) {
    case EINVAL: return "Invalid argument";
    case ENOMEM: return "Cannot allocate memory";
    case EAGAIN: return "Resource temporarily unavailable";
    case ETIMEDOUT: return "Connection timed out";
    case ECANCELED: return "Operation canceled";
    case EPIPE: return "Broken pipe";
    case EDEADLK: return "Resource deadlock avoided";
    case EALREADY: return "Operation already in progress";
    case EBUSY: return "Device or resource busy";
    }
#endif
    return "Unknown error";
}

