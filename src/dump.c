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
    sn->pending = atomic_load_explicit(&n->pending, memory_order_relaxed) & ~NURSERY_CLOSED;
    uint64_t credits = atomic_load_explicit(&n->credits, memory_order_relaxed);
    sn->pending = sn->pending > credits ? sn->pending - credits : 0;
    nursery_counts(n, &sn->counts);
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

static void indent(FILE *f, int level)
{
    for (int i = 0; i < level; i++)
        fputs("  ", f);
}

/* The fields of a wait, text form. */
static void text_wait(FILE *f, const struct snapshot *s, const struct blocked_copy *w)
{
    fprintf(f, " for=%.3fs blocked_in=%s", seconds(s->coarse_now - w->since),
            blocked_name(w->kind));
    if (w->object)
        fprintf(f, " object=%p", w->object);
    if (w->kind == BLOCKED_WAIT || w->kind == BLOCKED_POLL)
        fprintf(f, " count=%" PRIdFAST64, w->count);
    if (w->kind == BLOCKED_POLL)
        fprintf(f, " fd=%" PRIdFAST64, w->arg);
    if (w->kind == BLOCKED_CHILD)
        fprintf(f, " pid=%" PRIdFAST64, w->arg);
    if (w->until != NURSERY_FOREVER)
        fprintf(f, " until=%.3fs", seconds(w->until - s->now));
}

static void text_task(FILE *f, struct snapshot *s, size_t i, int level);

static void text_nursery(FILE *f, struct snapshot *s, size_t i, int level)
{
    struct snap_nursery *n = &s->nurseries.items[i];
    if (n->printed)
        return;
    n->printed = true;
    indent(f, level);
    fprintf(f, "nursery %p", n->id);
    if (n->name[0]) {
        fputs(" name=", f);
        put_string(f, n->name, false);
    }
    fprintf(f,
            " age=%.3fs pending=%" PRIu64 " queued=%" PRIu64 " started=%" PRIu64
            " finished=%" PRIu64 " failed=%" PRIu64 " cancelled=%" PRIu64 " cancel=%s",
            seconds(s->coarse_now - n->opened_at), n->pending,
            n->pending > n->running ? n->pending - n->running : 0, n->counts.started,
            n->counts.finished, n->counts.failed, n->counts.cancelled, n->why ? "yes" : "no");
    if (n->why)
        fprintf(f, " why=%s", why_names[n->why]);
    if (n->deadline == NURSERY_FOREVER)
        fputs(" deadline=none\n", f);
    else
        fprintf(f, " deadline=%.3fs\n", seconds(n->deadline - s->now));
    for (size_t t = 0; t < s->tasks.n; t++)
        if (s->tasks.items[t].nursery == n->id)
            text_task(f, s, t, level + 1);
}

static void text_task(FILE *f, struct snapshot *s, size_t i, int level)
{
    struct snap_task *t = &s->tasks.items[i];
    if (t->printed)
        return;
    t->printed = true;
    const struct snap_thread *th = &s->threads.items[t->thread];
    indent(f, level);
    fprintf(f, "task %p", t->id);
    if (t->name[0]) {
        fputs(" name=", f);
        put_string(f, t->name, false);
    }
    fprintf(f, " state=%s", task_states[t->state]);
    if (t->state == TASK_SHOWN_BLOCKED)
        text_wait(f, s, &t->wait);
    else
        fprintf(f, " for=%.3fs", seconds(s->coarse_now - t->since));
    fprintf(f, " thread=%#" PRIxPTR, th->id);
    if (th->name[0]) {
        fputs(" thread_name=", f);
        put_string(f, th->name, false);
    }
    if (th->tid)
        fprintf(f, " tid=%d", th->tid);
    fputc('\n', f);
    for (size_t n = 0; n < s->nurseries.n; n++)
        if (s->nurseries.items[n].task == t->id)
            text_nursery(f, s, n, level + 1);
}

static void text_pool(FILE *f, const struct snap_pool *p)
{
    fprintf(f, "pool %p name=", p->id);
    put_string(f, p->name, false);
    fprintf(f, " default=%s", p->is_default ? "yes" : "no");
    if (p->forked) {
        fputs(" forked=yes\n", f);
        return;
    }
    const nursery_pool_stats_t *st = &p->stats;
    fprintf(f,
            " threads=%zu idle=%zu blocked=%zu queued=%zu running=%zu completed=%" PRIu64
            " helped=%" PRIu64 " steals=%" PRIu64 " created=%" PRIu64 " retired=%" PRIu64
            " parked=%.3fs\n",
            st->threads, st->idle, st->blocked, st->queued, st->running, st->completed, st->helped,
            st->steals, st->threads_created, st->threads_retired,
            seconds((int_fast64_t)st->parked_ns));
    for (size_t i = 0; i < p->nworkers; i++) {
        const struct snap_worker *w = &p->workers[i];
        fprintf(f, "  worker %#" PRIxPTR " name=", w->thread);
        put_string(f, w->name, false);
        if (w->tid)
            fprintf(f, " tid=%d", w->tid);
        fprintf(f, " state=%s\n", worker_states[w->state]);
    }
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
    fprintf(f, "dump pid=%ld pools=%zu threads=%zu nurseries=%zu tasks=%zu\n", (long)getpid(),
            s->pools.n, s->threads.n, s->nurseries.n, s->tasks.n);
    for (size_t i = 0; i < s->pools.n; i++)
        text_pool(f, &s->pools.items[i]);
    /* The roots: threads that are not workers, with the nurseries their
     * own code opened. */
    for (size_t i = 0; i < s->threads.n; i++) {
        const struct snap_thread *th = &s->threads.items[i];
        if (th->worker)
            continue;
        fprintf(f, "thread %#" PRIxPTR, th->id);
        if (th->name[0]) {
            fputs(" name=", f);
            put_string(f, th->name, false);
        }
        if (th->tid)
            fprintf(f, " tid=%d", th->tid);
        fprintf(f, " state=%s", th->blocked ? "blocked" : "running");
        if (th->blocked)
            text_wait(f, s, &th->wait);
        if (th->hidden)
            fprintf(f, " hidden=%d", th->hidden);
        fputc('\n', f);
        for (size_t n = 0; n < s->nurseries.n; n++)
            if (s->nurseries.items[n].thread == i && !s->nurseries.items[n].task)
                text_nursery(f, s, n, 1);
    }
    /* What the tree did not reach: nurseries whose opening task is not in
     * the snapshot, tasks whose nursery is not (being joined as the dump
     * ran, or deeper than the frames kept). */
    for (size_t n = 0; n < s->nurseries.n; n++)
        if (!s->nurseries.items[n].printed && !task_known(s, s->nurseries.items[n].task))
            text_nursery(f, s, n, 0);
    for (size_t t = 0; t < s->tasks.n; t++)
        text_task(f, s, t, 0);
    for (size_t n = 0; n < s->nurseries.n; n++)
        text_nursery(f, s, n, 0);
}

/* ---- JSON -------------------------------------------------------------- */

static void json_id(FILE *f, const char *key, const void *id)
{
    if (id)
        fprintf(f, ",\"%s\":\"%p\"", key, id);
    else
        fprintf(f, ",\"%s\":null", key);
}

static void json_tid(FILE *f, int tid)
{
    if (tid)
        fprintf(f, ",\"tid\":%d", tid);
    else
        fputs(",\"tid\":null", f);
}

static void json_wait(FILE *f, const struct snapshot *s, const struct blocked_copy *w)
{
    fprintf(f, ",\"state\":\"blocked\",\"for\":%.3f,\"blocked_in\":\"%s\"",
            seconds(s->coarse_now - w->since), blocked_name(w->kind));
    json_id(f, "object", w->object);
    if (w->kind == BLOCKED_WAIT || w->kind == BLOCKED_POLL)
        fprintf(f, ",\"count\":%" PRIdFAST64, w->count);
    if (w->kind == BLOCKED_POLL)
        fprintf(f, ",\"fd\":%" PRIdFAST64, w->arg);
    if (w->kind == BLOCKED_CHILD)
        fprintf(f, ",\"pid\":%" PRIdFAST64, w->arg);
    if (w->until != NURSERY_FOREVER)
        fprintf(f, ",\"until\":%.3f", seconds(w->until - s->now));
}

static void json_pool(FILE *f, const struct snap_pool *p)
{
    fprintf(f, "{\"id\":\"%p\",\"name\":", p->id);
    put_string(f, p->name, true);
    fprintf(f, ",\"default\":%s,\"forked\":%s", p->is_default ? "true" : "false",
            p->forked ? "true" : "false");
    if (!p->forked) {
        const nursery_pool_stats_t *st = &p->stats;
        fprintf(f,
                ",\"threads\":%zu,\"idle\":%zu,\"blocked\":%zu,\"queued\":%zu,\"running\":%zu,"
                "\"completed\":%" PRIu64 ",\"helped\":%" PRIu64 ",\"steals\":%" PRIu64
                ",\"created\":%" PRIu64 ",\"retired\":%" PRIu64 ",\"parked\":%.3f",
                st->threads, st->idle, st->blocked, st->queued, st->running, st->completed,
                st->helped, st->steals, st->threads_created, st->threads_retired,
                seconds((int_fast64_t)st->parked_ns));
    }
    fputs(",\"workers\":[", f);
    for (size_t i = 0; i < p->nworkers; i++) {
        const struct snap_worker *w = &p->workers[i];
        fprintf(f, "%s{\"id\":\"%#" PRIxPTR "\",\"name\":", i ? "," : "", w->thread);
        put_string(f, w->name, true);
        json_tid(f, w->tid);
        fprintf(f, ",\"state\":\"%s\"}", worker_states[w->state]);
    }
    fputs("]}", f);
}

static void write_json(FILE *f, const struct snapshot *s)
{
    fprintf(f, "{\"pid\":%ld,\n \"pools\":[", (long)getpid());
    for (size_t i = 0; i < s->pools.n; i++) {
        fputs(i ? ",\n  " : "", f);
        json_pool(f, &s->pools.items[i]);
    }
    fputs("],\n \"threads\":[", f);
    for (size_t i = 0; i < s->threads.n; i++) {
        const struct snap_thread *th = &s->threads.items[i];
        fprintf(f, "%s{\"id\":\"%#" PRIxPTR "\",\"name\":", i ? ",\n  " : "", th->id);
        put_string(f, th->name, true);
        json_tid(f, th->tid);
        fprintf(f, ",\"worker\":%s,\"hidden\":%d", th->worker ? "true" : "false", th->hidden);
        if (th->blocked)
            json_wait(f, s, &th->wait);
        else
            fputs(",\"state\":\"running\"", f);
        fputc('}', f);
    }
    fputs("],\n \"nurseries\":[", f);
    for (size_t i = 0; i < s->nurseries.n; i++) {
        const struct snap_nursery *n = &s->nurseries.items[i];
        fprintf(f, "%s{\"id\":\"%p\",\"name\":", i ? ",\n  " : "", n->id);
        put_string(f, n->name, true);
        fprintf(f, ",\"thread\":\"%#" PRIxPTR "\"", s->threads.items[n->thread].id);
        json_id(f, "task", n->task);
        fprintf(f,
                ",\"age\":%.3f,\"pending\":%" PRIu64 ",\"queued\":%" PRIu64 ",\"started\":%" PRIu64
                ",\"finished\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"cancelled\":%" PRIu64
                ",\"cancel\":%s",
                seconds(s->coarse_now - n->opened_at), n->pending,
                n->pending > n->running ? n->pending - n->running : 0, n->counts.started,
                n->counts.finished, n->counts.failed, n->counts.cancelled,
                n->why ? "true" : "false");
        if (n->why)
            fprintf(f, ",\"why\":\"%s\"", why_names[n->why]);
        else
            fputs(",\"why\":null", f);
        if (n->deadline == NURSERY_FOREVER)
            fputs(",\"deadline\":null}", f);
        else
            fprintf(f, ",\"deadline\":%.3f}", seconds(n->deadline - s->now));
    }
    fputs("],\n \"tasks\":[", f);
    for (size_t i = 0; i < s->tasks.n; i++) {
        const struct snap_task *t = &s->tasks.items[i];
        fprintf(f, "%s{\"id\":\"%p\",\"name\":", i ? ",\n  " : "", t->id);
        if (t->name[0])
            put_string(f, t->name, true);
        else
            fputs("null", f);
        json_id(f, "nursery", t->nursery);
        fprintf(f, ",\"thread\":\"%#" PRIxPTR "\"", s->threads.items[t->thread].id);
        if (t->state == TASK_SHOWN_BLOCKED)
            json_wait(f, s, &t->wait);
        else
            fprintf(f, ",\"state\":\"%s\",\"for\":%.3f", task_states[t->state],
                    seconds(s->coarse_now - t->since));
        fputc('}', f);
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
