/* SPDX-License-Identifier: MIT */
/*
 * dump.c - nursery_dump(): a snapshot of every pool, thread record, open
 * nursery and running task, printed as a tree (or as JSON); and the dump
 * thread that prints it on a signal.
 *
 * The snapshot is taken first, under the registry's lock and each record's
 * lock in turn (trace.c says why the nurseries it finds are alive then),
 * into memory of its own; only then is anything written, so a slow FILE
 * holds no lock of the library's.  Tasks are known only by what their
 * threads' frames say (a dump never follows a task pointer); they are tied
 * to their nurseries, and nurseries to the tasks that opened them, by ids.
 */
#include "internal.h"
#include "pool.h"
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <strings.h>
#include <unistd.h>

/* ---- the snapshot ------------------------------------------------------ */

enum shown_state { TASK_SHOWN_RUNNING, TASK_SHOWN_BLOCKED, TASK_SHOWN_HELPING };
enum worker_state { WORKER_IDLE, WORKER_RUNNING, WORKER_BLOCKED };
enum cancel_why { WHY_NONE, WHY_CANCELLED, WHY_FAILED, WHY_DEADLINE, WHY_OUTER };

struct snap_worker {
    uintptr_t thread;
    char name[24];
    int tid;
    int state;
};

struct snap_pool {
    const void *id;
    char name[sizeof(((nursery_pool_t *)0)->name)];
    bool is_default, forked;
    nursery_pool_stats_t stats;
    struct snap_worker *workers;
    size_t nworkers;
};

struct snap_thread {
    uintptr_t id;
    char name[16];
    int tid;
    bool worker;
    bool blocked; /* the thread itself (no task of its own is running) */
    struct blocked_copy wait;
    int hidden; /* frames deeper than TRACE_FRAMES */
};

struct snap_nursery {
    const void *id, *task; /* task: the one that opened it, NULL for a thread's body */
    size_t thread;
    char name[sizeof(((nursery_t *)0)->name)];
    int_fast64_t opened_at; /* nursery__coarse_now() */
    nursery_time_t deadline;
    uint64_t pending;
    nursery_counts_t counts;
    int why;
    size_t running;
    bool printed;
};

struct snap_task {
    const void *id, *nursery;
    size_t thread;
    char name[TRACE_NAME_WORDS * 8];
    int_fast64_t since;
    int state;
    struct blocked_copy wait;
    bool printed;
};

#define VEC(type)                                                                                  \
    struct {                                                                                       \
        type *items;                                                                               \
        size_t n, cap;                                                                             \
    }

struct snapshot {
    nursery_time_t now;
    int_fast64_t coarse_now;
    VEC(struct snap_pool) pools;
    VEC(struct snap_thread) threads;
    VEC(struct snap_nursery) nurseries;
    VEC(struct snap_task) tasks;
    bool failed; /* out of memory */
};

/* Room for one more item of `size` bytes: a pointer to it (zeroed), or NULL
 * when memory ran out (then `failed` is set, and the snapshot is useless). */
static void *vec_push(struct snapshot *s, void **items, size_t *n, size_t *cap, size_t size)
{
    if (s->failed)
        return NULL;
    if (*n == *cap) {
        size_t cap2 = *cap ? *cap * 2 : 16;
        void *grown = realloc(*items, cap2 * size);
        if (!grown) {
            s->failed = true;
            return NULL;
        }
        *items = grown;
        *cap = cap2;
    }
    void *item = (char *)*items + (*n)++ * size;
    memset(item, 0, size);
    return item;
}

#define PUSH(s, vec)                                                                               \
    vec_push((s), (void **)&(s)->vec.items, &(s)->vec.n, &(s)->vec.cap, sizeof(*(s)->vec.items))

static void snapshot_free(struct snapshot *s)
{
    for (size_t i = 0; i < s->pools.n; i++)
        free(s->pools.items[i].workers);
    free(s->pools.items);
    free(s->threads.items);
    free(s->nurseries.items);
    free(s->tasks.items);
}

static uintptr_t thread_id(pthread_t t)
{
    uintptr_t id = 0;
    memcpy(&id, &t, sizeof(t) < sizeof(id) ? sizeof(t) : sizeof(id));
    return id;
}

static void take_pool(struct snapshot *s, nursery_pool_t *p)
{
    struct snap_pool *sp = PUSH(s, pools);
    if (!sp)
        return;
    sp->id = p;
    memcpy(sp->name, p->name, sizeof(sp->name));
    sp->is_default = nursery__pool_is_default(p);
    /* A pool of the parent's, in a fork child: its lock may be held by a
     * thread that is not here. */
    sp->forked = nursery__pool_is_forked(p);
    if (sp->forked || nursery_pool_stats(p, &sp->stats) != 0)
        return;
    pthread_mutex_lock(&p->mu);
    size_t n = atomic_load_explicit(&p->nworkers, memory_order_acquire);
    sp->workers = calloc(n ? n : 1, sizeof(*sp->workers));
    if (!sp->workers)
        s->failed = true;
    for (size_t i = 0; sp->workers && i < n; i++) {
        struct worker *w = p->workers[i];
        if (!atomic_load(&w->live))
            continue;
        struct snap_worker *sw = &sp->workers[sp->nworkers++];
        sw->thread = thread_id(w->thread);
        snprintf(sw->name, sizeof(sw->name), "%s-%zu", p->name, w->id);
        sw->tid = atomic_load_explicit(&w->tid, memory_order_relaxed);
        sw->state = w->parked                                                     ? WORKER_IDLE
                    : atomic_load_explicit(&w->waiting, memory_order_relaxed) > 0 ? WORKER_BLOCKED
                                                                                  : WORKER_RUNNING;
    }
    pthread_mutex_unlock(&p->mu);
}

/* n is open while the caller holds the record's lock of the thread that
 * opened it (trace.c). */
static void take_nursery(struct snapshot *s, nursery_t *n, const void *task, size_t thread)
{
    if (nursery__forked(n->generation))
        return; /* the parent's: its lock may be held by a thread not here */
    struct snap_nursery *sn = PUSH(s, nurseries);
    if (!sn)
        return;
    sn->id = n;
    sn->task = task;
    sn->thread = thread;
    pthread_mutex_lock(&n->mu);
    memcpy(sn->name, n->name, sizeof(sn->name));
    bool failed = n->errors.count > 0 || n->errors.dropped > 0;
    pthread_mutex_unlock(&n->mu);
    sn->opened_at = n->opened_at;
    sn->deadline = atomic_load_explicit(&n->node.deadline, memory_order_relaxed);
    nursery_counts(n, &sn->counts);
    sn->pending = sn->counts.started - sn->counts.finished; /* finished <= started */
    if (nursery__cancel_node_cancelled(&n->node))
        sn->why = atomic_load_explicit(&n->expired, memory_order_relaxed)          ? WHY_DEADLINE
                  : failed                                                         ? WHY_FAILED
                  : atomic_load_explicit(&n->node.cancelled, memory_order_relaxed) ? WHY_CANCELLED
                                                                                   : WHY_OUTER;
}

/* The record's frames, its nurseries included: under its lock. */
static void take_thread(struct snapshot *s, struct trace_thread *tt)
{
    struct frame_copy frames[TRACE_FRAMES];
    size_t nframes = 0;
    size_t index = s->threads.n;
    struct snap_thread *st = PUSH(s, threads);
    if (!st)
        return;
    st->id = thread_id(tt->thread);
    st->tid = tt->tid;
    st->worker = tt->worker;
#ifdef HAVE_PTHREAD_GETNAME_NP
    if (pthread_getname_np(tt->thread, st->name, sizeof(st->name)) != 0)
        st->name[0] = '\0';
#endif

    pthread_mutex_lock(&tt->mu);
    int depth = atomic_load_explicit(&tt->depth, memory_order_seq_cst); /* see trace.c */
    st->hidden = depth > TRACE_FRAMES ? depth - TRACE_FRAMES : 0;
    for (int i = 0; i < depth && i < TRACE_FRAMES; i++)
        if (nursery__trace_frame_read(&tt->frames[i], &frames[nframes]))
            nframes++;
    struct blocked_copy wait;
    bool parked = nursery__trace_blocked_read(&tt->blocked, &wait) && wait.kind != BLOCKED_NONE;
    for (size_t i = 0; i < nframes; i++)
        if (frames[i].kind == FRAME_NURSERY)
            take_nursery(s, (nursery_t *)frames[i].object, frames[i].parent, index);
    pthread_mutex_unlock(&tt->mu);

    /* The innermost task is the one that runs (or is parked); those below
     * it on this thread are in a wait of theirs, helping. */
    struct snap_task *top = NULL;
    for (size_t i = 0; i < nframes; i++) {
        if (frames[i].kind != FRAME_TASK)
            continue;
        if (top)
            top->state = TASK_SHOWN_HELPING;
        struct snap_task *t = PUSH(s, tasks);
        if (!t)
            return;
        t->id = frames[i].object;
        t->nursery = frames[i].parent;
        t->thread = index;
        memcpy(t->name, frames[i].name, sizeof(t->name));
        t->since = frames[i].since;
        t->state = TASK_SHOWN_RUNNING;
        top = t;
    }
    st = &s->threads.items[index]; /* PUSH may have moved nothing, but be sure */
    if (parked && top) {
        top->state = TASK_SHOWN_BLOCKED;
        top->wait = wait;
    } else if (parked) {
        st->blocked = true;
        st->wait = wait;
    }
    /* A thread that does nothing the dump can show is left out. */
    if (nframes == 0 && !parked && st->hidden == 0)
        s->threads.n--;
}

static int take_snapshot(struct snapshot *s)
{
    memset(s, 0, sizeof(*s));
    nursery__trace_lock();
    struct list *pos;
    list_for_each(pos, nursery__trace_pools())
        take_pool(s, list_entry(pos, nursery_pool_t, registry_link));
    list_for_each(pos, nursery__trace_threads())
    {
        struct trace_thread *tt = list_entry(pos, struct trace_thread, link);
        if (!tt->gone)
            take_thread(s, tt);
    }
    /* After every time read above, so that no duration is negative. */
    s->now = nursery_now();
    s->coarse_now = nursery__coarse_now();
    nursery__trace_unlock();
    for (size_t i = 0; i < s->tasks.n; i++)
        for (size_t j = 0; j < s->nurseries.n; j++)
            if (s->nurseries.items[j].id == s->tasks.items[i].nursery)
                s->nurseries.items[j].running++;
    if (s->failed) {
        snapshot_free(s);
        return ENOMEM;
    }
    return 0;
}

/* ---- writing ----------------------------------------------------------- */

static const char *const blocked_names[] = {
    [BLOCKED_NONE] = "none",
    [BLOCKED_JOIN] = "join",
    [BLOCKED_START] = "start",
    [BLOCKED_ROOM] = "room",
    [BLOCKED_RESULT] = "result",
    [BLOCKED_WAIT] = "wait",
    [BLOCKED_AS_COMPLETED] = "as_completed",
    [BLOCKED_MAP] = "map",
    [BLOCKED_SEND] = "send",
    [BLOCKED_RECV] = "recv",
    [BLOCKED_SLEEP] = "sleep",
    [BLOCKED_POLL] = "poll",
    [BLOCKED_CHILD] = "child",
};
static const char *const task_states[] = {"running", "blocked", "helping"};
static const char *const worker_states[] = {"idle", "running", "blocked"};
static const char *const why_names[] = {NULL, "cancelled", "failed", "deadline", "outer"};

static const char *blocked_name(int kind)
{
    return kind >= 0 && (size_t)kind < sizeof(blocked_names) / sizeof(blocked_names[0])
               ? blocked_names[kind]
               : "unknown";
}

static double seconds(int_fast64_t ns)
{
    return (double)ns / 1e9;
}

/* A string in double quotes: the text form escapes " and \ with a
 * backslash and control bytes as \n, \t or \xHH; JSON's are the same but
 * \u00HH. */
static void put_string(FILE *f, const char *str, bool json)
{
    fputc('"', f);
    for (const unsigned char *c = (const unsigned char *)str; *c; c++) {
        if (*c == '"' || *c == '\\')
            fprintf(f, "\\%c", *c);
        else if (*c == '\n')
            fputs("\\n", f);
        else if (*c == '\t')
            fputs("\\t", f);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(f, json ? "\\u%04x" : "\\x%02x", *c);
        else
            fputc(*c, f);
    }
    fputc('"', f);
}

/* ---- one writer for both forms ----------------------------------------- */

/* A text line is "kind id key=value ...", indented by its level; a JSON
 * object is {"id":"...","key":value,...}.  The put_ functions write one
 * field: the separator and the key, then the value as the form spells it
 * (a duration with an "s" in text; yes/no or true/false; an absent value
 * left out of a line, null in JSON). */
struct writer {
    FILE *f;
    bool json;
    const struct snapshot *s;
};

static void put_key(struct writer *w, const char *key)
{
    fprintf(w->f, w->json ? ",\"%s\":" : " %s=", key);
}

static void put_null(struct writer *w, const char *key)
{
    if (w->json) {
        put_key(w, key);
        fputs("null", w->f);
    }
}

static void put_u64(struct writer *w, const char *key, uint64_t value)
{
    put_key(w, key);
    fprintf(w->f, "%" PRIu64, value);
}

static void put_i64(struct writer *w, const char *key, int_fast64_t value)
{
    put_key(w, key);
    fprintf(w->f, "%" PRIdFAST64, value);
}

static void put_seconds(struct writer *w, const char *key, int_fast64_t ns)
{
    put_key(w, key);
    fprintf(w->f, w->json ? "%.3f" : "%.3fs", seconds(ns));
}

static void put_word(struct writer *w, const char *key, const char *word)
{
    put_key(w, key);
    fprintf(w->f, w->json ? "\"%s\"" : "%s", word);
}

static void put_bool(struct writer *w, const char *key, bool value)
{
    put_key(w, key);
    fputs(w->json ? (value ? "true" : "false") : (value ? "yes" : "no"), w->f);
}

static void put_name(struct writer *w, const char *key, const char *name)
{
    if (!name[0]) {
        put_null(w, key);
        return;
    }
    put_key(w, key);
    put_string(w->f, name, w->json);
}

static void put_id(struct writer *w, const char *key, const void *id)
{
    if (!id) {
        put_null(w, key);
        return;
    }
    put_key(w, key);
    fprintf(w->f, w->json ? "\"%p\"" : "%p", id);
}

static void put_thread(struct writer *w, const char *key, uintptr_t id)
{
    put_key(w, key);
    fprintf(w->f, w->json ? "\"%#" PRIxPTR "\"" : "%#" PRIxPTR, id);
}

static void put_tid(struct writer *w, int tid)
{
    if (tid)
        put_i64(w, "tid", tid);
    else
        put_null(w, "tid");
}

/* A line or an object begins: its id first (a pointer or a thread's). */
static void begin(struct writer *w, int level, const char *kind, const char *id_format, ...)
    NURSERY_PRINTF(4, 5);

static void begin(struct writer *w, int level, const char *kind, const char *id_format, ...)
{
    if (w->json) {
        fputs("{\"id\":\"", w->f);
    } else {
        for (int i = 0; i < level; i++)
            fputs("  ", w->f);
        fprintf(w->f, "%s ", kind);
    }
    va_list ap;
    va_start(ap, id_format);
    vfprintf(w->f, id_format, ap);
    va_end(ap);
    if (w->json)
        fputc('"', w->f);
}

static void end(struct writer *w)
{
    fputc(w->json ? '}' : '\n', w->f);
}

/* ---- what each kind of entry says --------------------------------------- */

static void put_wait(struct writer *w, const struct blocked_copy *b)
{
    put_seconds(w, "for", w->s->coarse_now - b->since);
    put_word(w, "blocked_in", blocked_name(b->kind));
    put_id(w, "object", b->object);
    if (b->kind == BLOCKED_WAIT || b->kind == BLOCKED_POLL)
        put_i64(w, "count", b->count);
    if (b->kind == BLOCKED_POLL)
        put_i64(w, "fd", b->arg);
    if (b->kind == BLOCKED_CHILD)
        put_i64(w, "pid", b->arg);
    if (b->until != NURSERY_FOREVER)
        put_seconds(w, "until", b->until - w->s->now);
}

static void put_pool(struct writer *w, const struct snap_pool *p)
{
    begin(w, 0, "pool", "%p", p->id);
    put_name(w, "name", p->name);
    put_bool(w, "default", p->is_default);
    if (p->forked || w->json)
        put_bool(w, "forked", p->forked);
    if (!p->forked) {
        const nursery_pool_stats_t *st = &p->stats;
        put_u64(w, "threads", st->threads);
        put_u64(w, "idle", st->idle);
        put_u64(w, "blocked", st->blocked);
        put_u64(w, "queued", st->queued);
        put_u64(w, "running", st->running);
        put_u64(w, "completed", st->completed);
        put_u64(w, "helped", st->helped);
        put_u64(w, "steals", st->steals);
        put_u64(w, "created", st->threads_created);
        put_u64(w, "retired", st->threads_retired);
        put_seconds(w, "parked", (int_fast64_t)st->parked_ns);
    }
    if (w->json)
        fputs(",\"workers\":[", w->f);
    else
        end(w);
    for (size_t i = 0; i < p->nworkers; i++) {
        const struct snap_worker *wk = &p->workers[i];
        if (w->json && i)
            fputc(',', w->f);
        begin(w, 1, "worker", "%#" PRIxPTR, wk->thread);
        put_name(w, "name", wk->name);
        put_tid(w, wk->tid);
        put_word(w, "state", worker_states[wk->state]);
        end(w);
    }
    if (w->json) {
        fputc(']', w->f);
        end(w);
    }
}

static void put_thread_entry(struct writer *w, const struct snap_thread *th)
{
    begin(w, 0, "thread", "%#" PRIxPTR, th->id);
    put_name(w, "name", th->name);
    put_tid(w, th->tid);
    if (w->json)
        put_bool(w, "worker", th->worker);
    put_word(w, "state", th->blocked ? "blocked" : "running");
    if (th->blocked)
        put_wait(w, &th->wait);
    if (th->hidden || w->json)
        put_i64(w, "hidden", th->hidden);
    end(w);
}

static void put_nursery(struct writer *w, const struct snap_nursery *n, int level)
{
    const struct snapshot *s = w->s;
    begin(w, level, "nursery", "%p", n->id);
    put_name(w, "name", n->name);
    if (w->json) { /* in text, where it stands in the tree says it */
        put_thread(w, "thread", s->threads.items[n->thread].id);
        put_id(w, "task", n->task);
    }
    put_seconds(w, "age", s->coarse_now - n->opened_at);
    put_u64(w, "pending", n->pending);
    put_u64(w, "queued", n->pending > n->running ? n->pending - n->running : 0);
    put_u64(w, "started", n->counts.started);
    put_u64(w, "finished", n->counts.finished);
    put_u64(w, "failed", n->counts.failed);
    put_u64(w, "cancelled", n->counts.cancelled);
    put_bool(w, "cancel", n->why != WHY_NONE);
    if (n->why)
        put_word(w, "why", why_names[n->why]);
    else
        put_null(w, "why");
    if (n->deadline != NURSERY_FOREVER)
        put_seconds(w, "deadline", n->deadline - s->now);
    else if (w->json)
        put_null(w, "deadline");
    else
        put_word(w, "deadline", "none");
    end(w);
}

static void put_task(struct writer *w, const struct snap_task *t, int level)
{
    const struct snap_thread *th = &w->s->threads.items[t->thread];
    begin(w, level, "task", "%p", t->id);
    put_name(w, "name", t->name);
    if (w->json)
        put_id(w, "nursery", t->nursery);
    put_word(w, "state", task_states[t->state]);
    if (t->state == TASK_SHOWN_BLOCKED)
        put_wait(w, &t->wait);
    else
        put_seconds(w, "for", w->s->coarse_now - t->since);
    put_thread(w, "thread", th->id);
    put_name(w, "thread_name", th->name);
    put_tid(w, th->tid);
    end(w);
}

/* ---- the text form: a tree ----------------------------------------------- */

static void text_task(struct writer *w, struct snapshot *s, size_t i, int level);

static void text_nursery(struct writer *w, struct snapshot *s, size_t i, int level)
{
    struct snap_nursery *n = &s->nurseries.items[i];
    if (n->printed)
        return;
    n->printed = true;
    put_nursery(w, n, level);
    for (size_t t = 0; t < s->tasks.n; t++)
        if (s->tasks.items[t].nursery == n->id)
            text_task(w, s, t, level + 1);
}

static void text_task(struct writer *w, struct snapshot *s, size_t i, int level)
{
    struct snap_task *t = &s->tasks.items[i];
    if (t->printed)
        return;
    t->printed = true;
    put_task(w, t, level);
    for (size_t n = 0; n < s->nurseries.n; n++)
        if (s->nurseries.items[n].task == t->id)
            text_nursery(w, s, n, level + 1);
}

static bool task_known(const struct snapshot *s, const void *id)
{
    for (size_t t = 0; t < s->tasks.n; t++)
        if (s->tasks.items[t].id == id)
            return true;
    return false;
}

static void write_text(FILE *f, struct snapshot *s)
{
    struct writer w = {.f = f, .json = false, .s = s};
    fprintf(f, "dump pid=%ld pools=%zu threads=%zu nurseries=%zu tasks=%zu\n", (long)getpid(),
            s->pools.n, s->threads.n, s->nurseries.n, s->tasks.n);
    for (size_t i = 0; i < s->pools.n; i++)
        put_pool(&w, &s->pools.items[i]);
    /* The roots: threads that are not workers, with the nurseries their
     * own code opened. */
    for (size_t i = 0; i < s->threads.n; i++) {
        if (s->threads.items[i].worker)
            continue;
        put_thread_entry(&w, &s->threads.items[i]);
        for (size_t n = 0; n < s->nurseries.n; n++)
            if (s->nurseries.items[n].thread == i && !s->nurseries.items[n].task)
                text_nursery(&w, s, n, 1);
    }
    /* What the tree did not reach: nurseries whose opening task is not in
     * the snapshot, tasks whose nursery is not (being joined as the dump
     * ran, or deeper than the frames kept). */
    for (size_t n = 0; n < s->nurseries.n; n++)
        if (!s->nurseries.items[n].printed && !task_known(s, s->nurseries.items[n].task))
            text_nursery(&w, s, n, 0);
    for (size_t t = 0; t < s->tasks.n; t++)
        text_task(&w, s, t, 0);
    for (size_t n = 0; n < s->nurseries.n; n++)
        text_nursery(&w, s, n, 0);
}

/* ---- the JSON form: flat lists ------------------------------------------- */

/* ",\n  " between the entries of a list. */
static void list_item(struct writer *w, size_t i)
{
    if (i)
        fputs(",\n  ", w->f);
}

static void write_json(FILE *f, const struct snapshot *s)
{
    struct writer w = {.f = f, .json = true, .s = s};
    fprintf(f, "{\"pid\":%ld,\n \"pools\":[", (long)getpid());
    for (size_t i = 0; i < s->pools.n; i++) {
        list_item(&w, i);
        put_pool(&w, &s->pools.items[i]);
    }
    fputs("],\n \"threads\":[", f);
    for (size_t i = 0; i < s->threads.n; i++) {
        list_item(&w, i);
        put_thread_entry(&w, &s->threads.items[i]);
    }
    fputs("],\n \"nurseries\":[", f);
    for (size_t i = 0; i < s->nurseries.n; i++) {
        list_item(&w, i);
        put_nursery(&w, &s->nurseries.items[i], 0);
    }
    fputs("],\n \"tasks\":[", f);
    for (size_t i = 0; i < s->tasks.n; i++) {
        list_item(&w, i);
        put_task(&w, &s->tasks.items[i], 0);
    }
    fputs("]}\n", f);
}

int nursery_dump(FILE *out, unsigned flags)
{
    if (!out || (flags & ~NURSERY_DUMP_JSON))
        return EINVAL;
    struct snapshot s;
    int rc = take_snapshot(&s);
    if (rc)
        return rc;
    if (flags & NURSERY_DUMP_JSON)
        write_json(out, &s);
    else
        write_text(out, &s);
    snapshot_free(&s);
    return fflush(out) != 0 || ferror(out) ? EIO : 0;
}

/* ---- dumping on a signal ----------------------------------------------- */

/* The handler only writes a byte to a pipe; the dump thread reads it and
 * dumps.  sig_mu orders the calls that install and remove the handler and
 * start and stop the thread. */
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int wake_fd = -1;   /* the pipe's write end, for the handler */
static atomic_int wake_pid;       /* the process whose pipe it is */
static int read_fd = -1;          /* (sig_mu) its read end, the dump thread's */
static unsigned pipe_generation;  /* (sig_mu) the fork generation the pipe is of */
static pthread_t dumper;          /* (sig_mu) the dump thread, while running */
static bool dumper_running;       /* (sig_mu) in this process (not a fork's parent) */
static atomic_bool dumper_quit;   /* tells it to end */
static int installed;             /* (sig_mu) the signal handled, or 0 */
static struct sigaction previous; /* (sig_mu) what it did before */
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static void on_signal(int signo)
{
    (void)signo;
    int saved = errno;
    int fd = atomic_load_explicit(&wake_fd, memory_order_relaxed);
    /* In a fork child, the pipe is still the parent's: its dump thread
     * would read the byte and dump the parent. */
    if (atomic_load_explicit(&wake_pid, memory_order_relaxed) != (int)getpid())
        fd = -1;
    if (fd >= 0 && write(fd, "", 1) < 0) {
        /* full: a dump is due already */
    }
    errno = saved;
}

static void *dump_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
#ifdef HAVE_PTHREAD_SETNAME_NP
    pthread_setname_np(pthread_self(), "nursery-dump");
#endif
    char buf[64];
    for (;;) {
        ssize_t got = read(fd, buf, sizeof(buf)); /* the bytes of signals that came together */
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || atomic_load(&dumper_quit))
            return NULL;
        nursery_dump(stderr, 0);
    }
}

/* The pipe: once per process, and again in a fork child, whose parent's
 * pipe may be full and has no reader there.  It is never closed: a handler
 * may be writing to it.  sig_mu held. */
static int make_pipe_locked(void)
{
    if (read_fd >= 0 && !nursery__forked(pipe_generation))
        return 0;
    int fds[2];
    if (pipe(fds) != 0)
        return errno == ENOMEM ? ENOMEM : EAGAIN;
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    atomic_store(&wake_pid, (int)getpid());
    atomic_store(&wake_fd, fds[1]);
    read_fd = fds[0];
    pipe_generation = nursery__generation();
    return 0;
}

static void stop_thread_locked(void)
{
    if (!dumper_running || nursery__forked(pipe_generation))
        return; /* in a fork child, the parent's thread is not here to stop */
    atomic_store(&dumper_quit, true);
    on_signal(0); /* a byte, or the pipe is full: either way it reads */
    pthread_join(dumper, NULL);
    dumper_running = false;
}

/* At exit, the thread ends: valgrind counts a thread still running then as
 * a possible leak. */
static void stop_thread_at_exit(void)
{
    pthread_mutex_lock(&sig_mu);
    stop_thread_locked();
    pthread_mutex_unlock(&sig_mu);
}

static void register_atexit(void)
{
    atexit(stop_thread_at_exit);
}

/* sig_mu held. */
static int start_thread_locked(void)
{
    int rc = make_pipe_locked();
    if (rc || (dumper_running && !nursery__forked(pipe_generation)))
        return rc;
    pthread_once(&atexit_once, register_atexit);
    /* No signal is delivered to it: it must not take one meant for a
     * thread that waits for it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    atomic_store(&dumper_quit, false);
    rc = pthread_create(&dumper, NULL, dump_thread, (void *)(intptr_t)read_fd);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        return rc == EAGAIN ? EAGAIN : ENOMEM;
    dumper_running = true;
    return 0;
}

/* A fork while another thread installs a handler must not leave sig_mu
 * held in the child. */
static void sig_fork_prepare(void)
{
    pthread_mutex_lock(&sig_mu);
}

static void sig_fork_done(void)
{
    pthread_mutex_unlock(&sig_mu);
}

static pthread_once_t sig_fork_once = PTHREAD_ONCE_INIT;

static void sig_fork_register(void)
{
    pthread_atfork(sig_fork_prepare, sig_fork_done, sig_fork_done);
}

int nursery_dump_on_signal(int signo)
{
#ifdef NSIG
    int nsig = NSIG;
#else
    int nsig = 65;
#endif
    if (signo < 0 || signo >= nsig || signo == SIGKILL || signo == SIGSTOP)
        return EINVAL;
    pthread_once(&sig_fork_once, sig_fork_register);
    pthread_mutex_lock(&sig_mu);
    if (dumper_running && nursery__forked(pipe_generation))
        dumper_running = false; /* the parent's, in a fork child */
    int rc = signo ? start_thread_locked() : 0;
    if (rc == 0 && signo != installed) {
        struct sigaction act = {.sa_handler = on_signal, .sa_flags = SA_RESTART};
        sigemptyset(&act.sa_mask);
        struct sigaction before;
        if (signo && sigaction(signo, &act, &before) != 0)
            rc = EINVAL;
        if (rc == 0) {
            if (installed)
                sigaction(installed, &previous, NULL);
            if (signo)
                previous = before;
            installed = signo;
        }
    }
    if (signo == 0)
        stop_thread_locked(); /* after the handler is gone: nothing wakes it again */
    pthread_mutex_unlock(&sig_mu);
    return rc;
}

/* NURSERY_DUMP_SIGNAL: a number, or a name with or without "SIG", in any
 * case. */
static int signal_from_name(const char *name)
{
    static const struct {
        const char *name;
        int signo;
    } names[] = {
        {"HUP", SIGHUP},     {"INT", SIGINT},   {"QUIT", SIGQUIT},     {"ILL", SIGILL},
        {"TRAP", SIGTRAP},   {"ABRT", SIGABRT}, {"BUS", SIGBUS},       {"FPE", SIGFPE},
        {"USR1", SIGUSR1},   {"SEGV", SIGSEGV}, {"USR2", SIGUSR2},     {"PIPE", SIGPIPE},
        {"ALRM", SIGALRM},   {"TERM", SIGTERM}, {"CHLD", SIGCHLD},     {"CONT", SIGCONT},
        {"TSTP", SIGTSTP},   {"TTIN", SIGTTIN}, {"TTOU", SIGTTOU},     {"URG", SIGURG},
        {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF},
        {"WINCH", SIGWINCH}, {"SYS", SIGSYS},
#ifdef SIGIO
        {"IO", SIGIO},
#endif
#ifdef SIGPOLL
        {"POLL", SIGPOLL},
#endif
#ifdef SIGPWR
        {"PWR", SIGPWR},
#endif
    };
    char *end;
    long number = strtol(name, &end, 10);
    if (end != name && *end == '\0')
        return number > 0 && number <= INT_MAX ? (int)number : -1;
    if (strncasecmp(name, "SIG", 3) == 0)
        name += 3;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(name, names[i].name) == 0)
            return names[i].signo;
    return -1;
}

void nursery__dump_signal_from_env(void)
{
    const char *value = getenv("NURSERY_DUMP_SIGNAL");
    if (!value || !*value)
        return;
    int signo = signal_from_name(value);
    int rc = signo > 0 ? nursery_dump_on_signal(signo) : EINVAL;
    if (rc)
        fprintf(stderr, "libnursery: NURSERY_DUMP_SIGNAL=%s: %s; ignored\n", value,
                rc == EINVAL ? "not a signal it can catch" : nursery_strerror(rc));
}
