/* SPDX-License-Identifier: MIT */
/*
 * test_dump.c - tests of src/dump.c and src/trace.c: nursery_dump() in its
 * text and JSON forms, nursery_set_name(), nursery_counts(), the pool's
 * task hooks, the pool statistics they brought (steals, threads created and
 * retired, time parked), and nursery_dump_on_signal().
 *
 * The formats are the contract of nursery_dump(3) (notes/dump-format.md).
 * A dump is parsed, never compared byte for byte: the text form into lines
 * (indentation level, kind, id, key=value fields, strings unescaped), the
 * JSON form into a small tree; then the tests assert the tree's shape, the
 * fields' syntax, and the values they know.  Tasks announce with a latch
 * that they are about to block; since the library marks a thread blocked
 * only once it parks, the tests then poll the dump (every 5 ms, up to
 * DUMP_WAIT_MS) until it shows what they expect: a look at a state that
 * nothing signals, not a sleep that orders events.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* open_memstream, syscall */
#endif
#include "helpers.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long a test polls the dump for a state it waits for: 10 s, times
 * CK_TIMEOUT_MULTIPLIER (raised for the sanitizer and valgrind runs). */
#define DUMP_WAIT_MS (10000 * timeout_multiplier())
/* A deadline that does not pass during a test: one hour. */
#define HOUR_MS INT64_C(3600000)

static int timeout_multiplier(void)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    int x = m ? atoi(m) : 1;
    return x > 1 ? x : 1;
}

static long my_tid(void)
{
    return (long)syscall(SYS_gettid);
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* "%p" of a pointer: the id the dump gives the object at that address. */
static const char *ptr_id(const void *p, char buf[32])
{
    snprintf(buf, 32, "%p", p);
    return buf;
}

/* ---- Taking a dump ---------------------------------------------------------- */

/* nursery_dump() into memory: the text (malloc'd, NUL-terminated) and its
 * length; *rc is what nursery_dump() returned (EIO if the stream could not
 * be closed).  NULL only when no memory stream could be made. */
static char *dump_capture(unsigned flags, int *rc, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (f == NULL) {
        *rc = errno;
        return NULL;
    }
    *rc = nursery_dump(f, flags);
    if (fclose(f) != 0 && *rc == 0)
        *rc = EIO;
    *len = size;
    return buf;
}

/* ---- Parsing the text form ---------------------------------------------------
 * Each line: two spaces per level, a kind, an id (all but `dump`), then
 * " key=value" fields.  Strings are unescaped in place; the lines point into
 * the parsed copy. */

#define DUMP_MAX_FIELDS 48

struct field {
    const char *key;
    const char *val;
    bool quoted;
};

struct dline {
    int level;
    const char *kind;
    const char *id; /* NULL for `dump` */
    size_t nf;
    struct field f[DUMP_MAX_FIELDS];
};

struct dump {
    char *text; /* the parsed copy */
    size_t n;
    struct dline *l;
};

static void dump_free(struct dump *d)
{
    free(d->text);
    free(d->l);
    memset(d, 0, sizeof(*d));
}

static bool errf(char *err, size_t errlen, const char *fmt, ...) NURSERY_PRINTF(3, 4);

static bool errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return false;
}

static bool is_word_char(char c)
{
    return (c >= 'a' && c <= 'z') || c == '_';
}

static bool is_key_char(char c)
{
    return is_word_char(c) || (c >= '0' && c <= '9');
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "0x" and lower-case hex digits. */
static bool is_id(const char *s)
{
    if (s == NULL || strncmp(s, "0x", 2) != 0 || s[2] == '\0')
        return false;
    for (s += 2; *s; s++)
        if (!is_lower_hex(*s))
            return false;
    return true;
}

/* Parses the rest of a line, from just after its kind: " id" (want_id), then
 * " key=value" fields.  NULL, or what is wrong. */
static const char *parse_fields(struct dline *l, char *p, bool want_id)
{
    if (want_id) {
        if (*p != ' ')
            return "no id after the kind";
        *p++ = '\0';
        l->id = p;
        while (*p && *p != ' ')
            p++;
        char save = *p;
        *p = '\0';
        bool ok = is_id(l->id);
        *p = save;
        if (!ok)
            return "the id is not 0x and lower-case hex";
    }
    while (*p) {
        if (*p != ' ')
            return "fields not separated by one space";
        *p++ = '\0';
        char *key = p;
        while (is_key_char(*p))
            p++;
        if (p == key || *p != '=')
            return "a field is not key=value";
        *p++ = '\0';
        char *val = p;
        bool quoted = *p == '"';
        if (quoted) {
            char *w = p++;
            for (;;) {
                char c = *p++;
                if (c == '\0')
                    return "an unterminated string";
                if (c == '"')
                    break;
                if ((unsigned char)c < 0x20 || c == 0x7f)
                    return "a raw control character in a string";
                if (c == '\\') {
                    c = *p++;
                    if (c == 'n') {
                        c = '\n';
                    } else if (c == 't') {
                        c = '\t';
                    } else if (c == 'x') {
                        if (hex_value(p[0]) < 0 || hex_value(p[1]) < 0)
                            return "a bad \\x escape";
                        c = (char)(hex_value(p[0]) * 16 + hex_value(p[1]));
                        p += 2;
                    } else if (c != '"' && c != '\\') {
                        return "an unknown escape in a string";
                    }
                }
                *w++ = c;
            }
            if (*p != ' ' && *p != '\0')
                return "text after a closing quote";
            *w = '\0'; /* w < p: the separator is still there */
        } else {
            if (*p == ' ' || *p == '\0')
                return "an empty value";
            for (; *p && *p != ' '; p++)
                if ((unsigned char)*p <= 0x20 || *p == '"' || *p == 0x7f)
                    return "a bad character in an unquoted value";
        }
        if (l->nf == DUMP_MAX_FIELDS)
            return "too many fields";
        l->f[l->nf++] = (struct field){key, val, quoted};
    }
    return NULL;
}

/* Parses the text form: true, or false with what is wrong in err. */
static bool dump_parse(struct dump *d, const char *text, size_t len, char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    if (text == NULL || len == 0)
        return errf(err, errlen, "an empty dump");
    if (text[len - 1] != '\n')
        return errf(err, errlen, "the dump does not end with a newline");
    if (memchr(text, '\0', len) != NULL)
        return errf(err, errlen, "the dump has a NUL byte");
    d->text = malloc(len + 1);
    ck_assert_ptr_nonnull(d->text);
    memcpy(d->text, text, len + 1);
    d->text[len] = '\0';
    size_t cap = 0;
    char *p = d->text;
    while (*p) {
        char *eol = strchr(p, '\n');
        *eol = '\0';
        if (d->n == cap) {
            cap = cap ? 2 * cap : 64;
            d->l = realloc(d->l, cap * sizeof(*d->l));
            ck_assert_ptr_nonnull(d->l);
        }
        struct dline *l = &d->l[d->n++];
        memset(l, 0, sizeof(*l));
        size_t spaces = strspn(p, " ");
        if (spaces % 2 != 0)
            return errf(err, errlen, "line %zu: odd indentation", d->n);
        l->level = (int)(spaces / 2);
        p += spaces;
        l->kind = p;
        while (is_word_char(*p))
            p++;
        if (p == l->kind)
            return errf(err, errlen, "line %zu: no kind", d->n);
        bool want_id = !(p - l->kind == 4 && memcmp(l->kind, "dump", 4) == 0);
        char sep = *p;
        if (sep != ' ' && sep != '\0')
            return errf(err, errlen, "line %zu: a bad character after the kind", d->n);
        /* The kind ends at the separator, which parse_fields overwrites. */
        const char *why = parse_fields(l, p, want_id);
        if (sep == '\0' && want_id)
            why = "no id after the kind";
        if (why != NULL)
            return errf(err, errlen, "line %zu: %s", d->n, why);
        *p = '\0';
        p = eol + 1;
    }
    return true;
}

/* The value of a field (NULL: absent). */
static const char *fv(const struct dline *l, const char *key)
{
    for (size_t i = 0; i < l->nf; i++)
        if (strcmp(l->f[i].key, key) == 0)
            return l->f[i].val;
    return NULL;
}

static bool fquoted(const struct dline *l, const char *key)
{
    for (size_t i = 0; i < l->nf; i++)
        if (strcmp(l->f[i].key, key) == 0)
            return l->f[i].quoted;
    return false;
}

static bool fis(const struct dline *l, const char *key, const char *val)
{
    const char *v = fv(l, key);
    return v != NULL && strcmp(v, val) == 0;
}

/* A field's value as a number (-1: absent or not a number). */
static long long fnum(const struct dline *l, const char *key)
{
    const char *v = fv(l, key);
    if (v == NULL || !isdigit((unsigned char)v[0]))
        return -1;
    char *end;
    long long x = strtoll(v, &end, 10);
    return *end == '\0' ? x : -1;
}

/* A duration: -?digits.ddd followed by s. */
static bool is_duration(const char *v)
{
    if (v == NULL)
        return false;
    if (*v == '-')
        v++;
    if (!isdigit((unsigned char)*v))
        return false;
    while (isdigit((unsigned char)*v))
        v++;
    return v[0] == '.' && isdigit((unsigned char)v[1]) && isdigit((unsigned char)v[2]) &&
           isdigit((unsigned char)v[3]) && v[4] == 's' && v[5] == '\0';
}

/* A duration field in seconds (NAN-like -1e9 when absent or malformed). */
static double fsec(const struct dline *l, const char *key)
{
    const char *v = fv(l, key);
    return is_duration(v) ? strtod(v, NULL) : -1e9;
}

static bool is_digits(const char *v)
{
    if (v == NULL || *v == '\0')
        return false;
    for (; *v; v++)
        if (!isdigit((unsigned char)*v))
            return false;
    return true;
}

static bool kind_is(const struct dline *l, const char *kind)
{
    return strcmp(l->kind, kind) == 0;
}

/* The line above line i one level up (-1: none, a root). */
static int parent_of(const struct dump *d, int i)
{
    for (int j = i - 1; j >= 0; j--)
        if (d->l[j].level == d->l[i].level - 1)
            return j;
    return -1;
}

/* The first line of `kind` whose field `key` is `val` (-1: none). */
static int find_line(const struct dump *d, const char *kind, const char *key, const char *val)
{
    for (size_t i = 0; i < d->n; i++)
        if (kind_is(&d->l[i], kind) && fis(&d->l[i], key, val))
            return (int)i;
    return -1;
}

static int find_id(const struct dump *d, const char *kind, const char *id)
{
    for (size_t i = 0; i < d->n; i++)
        if (kind_is(&d->l[i], kind) && d->l[i].id != NULL && strcmp(d->l[i].id, id) == 0)
            return (int)i;
    return -1;
}

static size_t count_kind(const struct dump *d, const char *kind)
{
    size_t n = 0;
    for (size_t i = 0; i < d->n; i++)
        n += kind_is(&d->l[i], kind);
    return n;
}

static bool one_of(const char *v, const char *const *set)
{
    for (; v != NULL && *set; set++)
        if (strcmp(v, *set) == 0)
            return true;
    return false;
}

static const char *const numeric_keys[] = {
    "pid",     "pools",    "threads",   "nurseries", "tasks",  "tid",     "idle",    "blocked",
    "queued",  "running",  "completed", "helped",    "steals", "created", "retired", "pending",
    "started", "finished", "failed",    "cancelled", "count",  "fd",      "hidden",  NULL};
static const char *const blocked_ins[] = {"join",         "start", "room", "result", "wait",
                                          "as_completed", "map",   "send", "recv",   "sleep",
                                          "poll",         "child", NULL};
/* The states of a task line (notes/dump-format.md: running or blocked). */
static const char *const task_states[] = {"running", "blocked", "helping", NULL};
static const char *const whys[] = {"cancelled", "failed", "deadline", "outer", NULL};
static const char *const known_kinds[] = {"dump",    "pool", "worker", "thread",
                                          "nursery", "task", NULL};

/* Checks what the contract says of every line: the first line, the tree
 * (each kind under the right kind), the syntax of the values it defines,
 * and the counts on the first line.  With known_only, a kind the format
 * does not define is an error too (these tests know the whole format). */
static bool dump_check(const struct dump *d, bool known_only, char *err, size_t errlen)
{
    if (d->n == 0 || !kind_is(&d->l[0], "dump") || d->l[0].level != 0)
        return errf(err, errlen, "the first line is not `dump`");
    for (size_t i = 0; i < d->n; i++) {
        const struct dline *l = &d->l[i];
        int parent = parent_of(d, (int)i);
        const char *pk = parent >= 0 ? d->l[parent].kind : "";
        if (i > 0 && l->level > d->l[i - 1].level + 1)
            return errf(err, errlen, "line %zu: more than one level deeper than the line above",
                        i + 1);
        if (i > 0 && kind_is(l, "dump"))
            return errf(err, errlen, "line %zu: a second `dump` line", i + 1);
        if (known_only && !one_of(l->kind, known_kinds))
            return errf(err, errlen, "line %zu: unknown kind `%s`", i + 1, l->kind);
        if ((kind_is(l, "pool") || kind_is(l, "thread")) && l->level != 0)
            return errf(err, errlen, "line %zu: a %s that is not a root", i + 1, l->kind);
        if (kind_is(l, "worker") && (l->level != 1 || strcmp(pk, "pool") != 0))
            return errf(err, errlen, "line %zu: a worker not under a pool", i + 1);
        /* A nursery is under its opener, or at level 0 at the end when its
         * opener is not in the snapshot (as a task whose nursery is not). */
        if (kind_is(l, "nursery") && l->level != 0 && strcmp(pk, "thread") != 0 &&
            strcmp(pk, "task") != 0)
            return errf(err, errlen, "line %zu: a nursery under `%s`", i + 1, pk);
        if (kind_is(l, "task") && l->level != 0 && strcmp(pk, "nursery") != 0)
            return errf(err, errlen, "line %zu: a task under `%s`", i + 1, pk);
        for (size_t k = 0; k < l->nf; k++) {
            const char *key = l->f[k].key, *v = l->f[k].val;
            bool ok = true;
            if (one_of(key, numeric_keys))
                ok = is_digits(v);
            else if (!strcmp(key, "for") || !strcmp(key, "age") || !strcmp(key, "parked") ||
                     !strcmp(key, "until"))
                ok = is_duration(v);
            else if (!strcmp(key, "deadline"))
                ok = !strcmp(v, "none") || is_duration(v);
            else if (!strcmp(key, "name") || !strcmp(key, "thread_name"))
                ok = l->f[k].quoted;
            else if (!strcmp(key, "object") || !strcmp(key, "thread"))
                ok = is_id(v);
            else if (!strcmp(key, "blocked_in"))
                ok = one_of(v, blocked_ins);
            else if (!strcmp(key, "why"))
                ok = one_of(v, whys);
            else if (!strcmp(key, "cancel") || !strcmp(key, "default") || !strcmp(key, "forked"))
                ok = !strcmp(v, "yes") || !strcmp(v, "no");
            if (!ok)
                return errf(err, errlen, "line %zu (%s): bad value %s=%s", i + 1, l->kind, key, v);
        }
        const char *state = fv(l, "state");
        if (kind_is(l, "worker") &&
            !one_of(state, (const char *const[]){"idle", "running", "blocked", NULL}))
            return errf(err, errlen, "line %zu: worker state=%s", i + 1, state ? state : "");
        if (kind_is(l, "task") || kind_is(l, "thread")) {
            if (!one_of(state, task_states))
                return errf(err, errlen, "line %zu: %s state=%s", i + 1, l->kind,
                            state ? state : "");
            bool blocked = !strcmp(state, "blocked");
            if (blocked != (fv(l, "blocked_in") != NULL))
                return errf(err, errlen, "line %zu: state=%s with%s blocked_in", i + 1, state,
                            blocked ? "out" : "");
        }
        if (kind_is(l, "task") && !is_duration(fv(l, "for")))
            return errf(err, errlen, "line %zu: a task without for=", i + 1);
        if (kind_is(l, "nursery")) {
            const char *cancel = fv(l, "cancel");
            if (cancel == NULL || (!strcmp(cancel, "yes")) != (fv(l, "why") != NULL))
                return errf(err, errlen, "line %zu: cancel=%s and why=%s", i + 1,
                            cancel ? cancel : "", fv(l, "why") ? fv(l, "why") : "");
            /* nursery_counts() of an open nursery: read one after the other,
             * but never more finished than started. */
            long long started = fnum(l, "started"), finished = fnum(l, "finished");
            long long failed = fnum(l, "failed"), cancelled = fnum(l, "cancelled");
            if (started < 0 || finished < 0 || failed < 0 || cancelled < 0 || finished > started)
                return errf(err, errlen,
                            "line %zu: nursery counts started=%lld finished=%lld failed=%lld "
                            "cancelled=%lld",
                            i + 1, started, finished, failed, cancelled);
        }
    }
    const struct dline *first = &d->l[0];
    long long pools = fnum(first, "pools"), nurseries = fnum(first, "nurseries");
    long long tasks = fnum(first, "tasks"), threads = fnum(first, "threads");
    if (fnum(first, "pid") != (long long)getpid())
        return errf(err, errlen, "dump pid=%s, not %ld", fv(first, "pid") ? fv(first, "pid") : "",
                    (long)getpid());
    if (pools != (long long)count_kind(d, "pool") ||
        nurseries != (long long)count_kind(d, "nursery") ||
        tasks != (long long)count_kind(d, "task"))
        return errf(err, errlen,
                    "the first line counts pools=%lld nurseries=%lld tasks=%lld; the dump has "
                    "%zu, %zu and %zu",
                    pools, nurseries, tasks, count_kind(d, "pool"), count_kind(d, "nursery"),
                    count_kind(d, "task"));
    long long roots = (long long)count_kind(d, "thread");
    if (threads < roots || threads > roots + (long long)count_kind(d, "worker"))
        return errf(err, errlen,
                    "the first line counts threads=%lld: %lld thread and %zu worker lines", threads,
                    roots, count_kind(d, "worker"));
    return true;
}

/* Parses and checks a text dump, asserting that it is well formed. */
static void dump_parse_checked(struct dump *d, const char *text, size_t len)
{
    char err[256] = "";
    ck_assert_msg(dump_parse(d, text, len, err, sizeof(err)) &&
                      dump_check(d, true, err, sizeof(err)),
                  "malformed dump: %s\n%s", err, text);
}

/* A fresh dump, parsed and checked; the text stays in *text (free it). */
static void dump_take(struct dump *d, char **text)
{
    int rc = -1;
    size_t len = 0;
    *text = dump_capture(0, &rc, &len);
    ck_assert_ptr_nonnull(*text);
    ck_assert_int_eq(rc, 0);
    dump_parse_checked(d, *text, len);
}

/* Polls the dump every 5 ms, up to DUMP_WAIT_MS, until ready(d, ctx): then
 * true with that dump in *d and its text in *text; else false with the last
 * one. */
static bool dump_wait(struct dump *d, char **text, bool (*ready)(const struct dump *, const void *),
                      const void *ctx)
{
    nursery_time_t give_up = nursery_after_ms(DUMP_WAIT_MS);
    for (;;) {
        dump_take(d, text);
        if (ready(d, ctx))
            return true;
        if (nursery_now() >= give_up)
            return false;
        dump_free(d);
        free(*text);
        pause_ms(5);
    }
}

/* The task lines named in a NULL-terminated list of {name, blocked_in}
 * pairs all show that wait (blocked_in NULL: running). */
struct expect {
    const char *name;
    const char *blocked_in;
};

static bool tasks_show(const struct dump *d, const void *ctx)
{
    for (const struct expect *e = ctx; e->name; e++) {
        int i = find_line(d, "task", "name", e->name);
        if (i < 0)
            return false;
        const char *state = e->blocked_in ? "blocked" : "running";
        if (e->blocked_in ? !fis(&d->l[i], "blocked_in", e->blocked_in)
                          : !fis(&d->l[i], "state", state))
            return false;
        /* The snapshot is not taken at one instant: a worker that has just
         * parked may still show running, so wait for its line to agree. */
        const char *thread = fv(&d->l[i], "thread");
        int w = thread ? find_id(d, "worker", thread) : -1;
        if (w >= 0 && !fis(&d->l[w], "state", state))
            return false;
    }
    return true;
}

/* ---- Parsing the JSON form ---------------------------------------------------
 * A small tree: enough to follow the ids from task to nursery to thread. */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jv {
    enum jtype t;
    bool b;
    double num;
    char *str;
    size_t n;     /* items of an array or an object */
    struct jv *v; /* the items */
    char **keys;  /* an object's keys */
};

struct jparser {
    const char *p;
    const char *err;
    int depth;
};

static void jfree(struct jv *j)
{
    for (size_t i = 0; i < j->n; i++) {
        jfree(&j->v[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->v);
    free(j->keys);
    free(j->str);
    memset(j, 0, sizeof(*j));
}

static void jws(struct jparser *jp)
{
    while (*jp->p == ' ' || *jp->p == '\n' || *jp->p == '\t' || *jp->p == '\r')
        jp->p++;
}

static bool jfail(struct jparser *jp, const char *why)
{
    if (jp->err == NULL)
        jp->err = why;
    return false;
}

static void put_utf8(char **w, unsigned cp)
{
    if (cp < 0x80) {
        *(*w)++ = (char)cp;
    } else if (cp < 0x800) {
        *(*w)++ = (char)(0xc0 | (cp >> 6));
        *(*w)++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *(*w)++ = (char)(0xe0 | (cp >> 12));
        *(*w)++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *(*w)++ = (char)(0x80 | (cp & 0x3f));
    }
}

static bool jstring(struct jparser *jp, char **out)
{
    if (*jp->p != '"')
        return jfail(jp, "expected a string");
    const char *p = ++jp->p, *q = p;
    /* Unescaping never makes a string longer: \uXXXX is at most 3 bytes. */
    while (*q && *q != '"')
        q += *q == '\\' && q[1] ? 2 : 1;
    char *s = malloc((size_t)(q - p) + 1), *w = s;
    ck_assert_ptr_nonnull(s);
    for (;;) {
        unsigned char c = (unsigned char)*p++;
        if (c == '"')
            break;
        if (c == '\0' || c < 0x20) {
            free(s);
            return jfail(jp, c ? "a raw control character in a string" : "an unterminated string");
        }
        if (c != '\\') {
            *w++ = (char)c;
            continue;
        }
        c = (unsigned char)*p++;
        switch (c) {
        case '"':
        case '\\':
        case '/':
            *w++ = (char)c;
            break;
        case 'b':
            *w++ = '\b';
            break;
        case 'f':
            *w++ = '\f';
            break;
        case 'n':
            *w++ = '\n';
            break;
        case 'r':
            *w++ = '\r';
            break;
        case 't':
            *w++ = '\t';
            break;
        case 'u': {
            unsigned cp = 0;
            for (int i = 0; i < 4; i++) {
                int h = hex_value(p[i]);
                if (h < 0) {
                    free(s);
                    return jfail(jp, "a bad \\u escape");
                }
                cp = cp * 16 + (unsigned)h;
            }
            p += 4;
            put_utf8(&w, cp);
            break;
        }
        default:
            free(s);
            return jfail(jp, "an unknown escape");
        }
    }
    *w = '\0';
    jp->p = p;
    *out = s;
    return true;
}

static bool jvalue(struct jparser *jp, struct jv *out);

static bool jitems(struct jparser *jp, struct jv *out, bool object)
{
    char close = object ? '}' : ']';
    size_t cap = 0;
    jp->p++;
    jws(jp);
    if (*jp->p == close) {
        jp->p++;
        return true;
    }
    for (;;) {
        if (out->n == cap) {
            cap = cap ? 2 * cap : 8;
            out->v = realloc(out->v, cap * sizeof(*out->v));
            ck_assert_ptr_nonnull(out->v);
            if (object) {
                out->keys = realloc(out->keys, cap * sizeof(*out->keys));
                ck_assert_ptr_nonnull(out->keys);
            }
        }
        char *key = NULL;
        if (object) {
            jws(jp);
            if (!jstring(jp, &key))
                return false;
            jws(jp);
            if (*jp->p++ != ':') {
                free(key);
                return jfail(jp, "expected ':'");
            }
        }
        memset(&out->v[out->n], 0, sizeof(out->v[0]));
        if (object)
            out->keys[out->n] = key;
        out->n++;
        if (!jvalue(jp, &out->v[out->n - 1]))
            return false;
        jws(jp);
        if (*jp->p == ',') {
            jp->p++;
            continue;
        }
        if (*jp->p == close) {
            jp->p++;
            return true;
        }
        return jfail(jp, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static bool jvalue(struct jparser *jp, struct jv *out)
{
    memset(out, 0, sizeof(*out));
    jws(jp);
    const char *p = jp->p;
    if (++jp->depth > 64)
        return jfail(jp, "nested too deep");
    bool ok = true;
    if (*p == '{') {
        out->t = J_OBJ;
        ok = jitems(jp, out, true);
    } else if (*p == '[') {
        out->t = J_ARR;
        ok = jitems(jp, out, false);
    } else if (*p == '"') {
        out->t = J_STR;
        ok = jstring(jp, &out->str);
    } else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
        out->t = J_BOOL;
        out->b = *p == 't';
        jp->p += out->b ? 4 : 5;
    } else if (!strncmp(p, "null", 4)) {
        out->t = J_NULL;
        jp->p += 4;
    } else if (*p == '-' || isdigit((unsigned char)*p)) {
        /* JSON's grammar: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? */
        const char *q = p + (*p == '-');
        if (!isdigit((unsigned char)*q))
            return jfail(jp, "a bad number");
        if (*q == '0' && isdigit((unsigned char)q[1]))
            return jfail(jp, "a number with a leading zero");
        while (isdigit((unsigned char)*q))
            q++;
        if (*q == '.') {
            if (!isdigit((unsigned char)*++q))
                return jfail(jp, "a bad fraction");
            while (isdigit((unsigned char)*q))
                q++;
        }
        if (*q == 'e' || *q == 'E') {
            q++;
            if (*q == '+' || *q == '-')
                q++;
            if (!isdigit((unsigned char)*q))
                return jfail(jp, "a bad exponent");
            while (isdigit((unsigned char)*q))
                q++;
        }
        out->t = J_NUM;
        out->num = strtod(p, NULL);
        jp->p = q;
    } else {
        ok = jfail(jp, "expected a value");
    }
    jp->depth--;
    return ok;
}

/* Parses one JSON object followed by "\n" and nothing else. */
static bool json_parse(struct jv *out, const char *text, size_t len, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (text == NULL || len == 0 || text[len - 1] != '\n' || memchr(text, '\0', len))
        return errf(err, errlen, "not one line of text ending with a newline");
    struct jparser jp = {text, NULL, 0};
    jws(&jp);
    if (*jp.p != '{')
        return errf(err, errlen, "does not start with an object");
    if (!jvalue(&jp, out)) {
        jfree(out);
        return errf(err, errlen, "%s at offset %td", jp.err, jp.p - text);
    }
    if (strcmp(jp.p, "\n") != 0) {
        jfree(out);
        return errf(err, errlen, "text after the object at offset %td", jp.p - text);
    }
    return true;
}

static const struct jv *jget(const struct jv *o, const char *key)
{
    if (o == NULL || o->t != J_OBJ)
        return NULL;
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->keys[i], key) == 0)
            return &o->v[i];
    return NULL;
}

static const char *jstr(const struct jv *o, const char *key)
{
    const struct jv *v = jget(o, key);
    return v != NULL && v->t == J_STR ? v->str : NULL;
}

static bool jstr_is(const struct jv *o, const char *key, const char *val)
{
    const char *s = jstr(o, key);
    return s != NULL && strcmp(s, val) == 0;
}

static bool jis_null(const struct jv *o, const char *key)
{
    const struct jv *v = jget(o, key);
    return v != NULL && v->t == J_NULL;
}

/* The object of array o[key] whose field `field` is the string `val`. */
static const struct jv *jfind(const struct jv *o, const char *key, const char *field,
                              const char *val)
{
    const struct jv *a = jget(o, key);
    if (a == NULL || a->t != J_ARR)
        return NULL;
    for (size_t i = 0; i < a->n; i++)
        if (jstr_is(&a->v[i], field, val))
            return &a->v[i];
    return NULL;
}

/* Checks what the contract says of the JSON form's shape: the four lists,
 * every entry an object with a string id "0x...", and the links by id
 * (a task's nursery and thread, a nursery's thread and task) resolving. */
static bool json_check(const struct jv *root, char *err, size_t errlen)
{
    const struct jv *pid = jget(root, "pid");
    if (pid == NULL || pid->t != J_NUM || pid->num != (double)getpid())
        return errf(err, errlen, "no \"pid\" %ld", (long)getpid());
    static const char *const lists[] = {"pools", "threads", "nurseries", "tasks"};
    for (size_t k = 0; k < 4; k++) {
        const struct jv *a = jget(root, lists[k]);
        if (a == NULL || a->t != J_ARR)
            return errf(err, errlen, "no \"%s\" array", lists[k]);
        for (size_t i = 0; i < a->n; i++)
            if (a->v[i].t != J_OBJ || !is_id(jstr(&a->v[i], "id")))
                return errf(err, errlen, "\"%s\"[%zu] has no id", lists[k], i);
    }
    const struct jv *pools = jget(root, "pools");
    for (size_t i = 0; i < pools->n; i++) {
        const struct jv *w = jget(&pools->v[i], "workers");
        if (w == NULL || w->t != J_ARR)
            return errf(err, errlen, "pool %zu has no \"workers\" array", i);
    }
    const struct jv *nurseries = jget(root, "nurseries"), *tasks = jget(root, "tasks");
    for (size_t i = 0; i < nurseries->n; i++) {
        const struct jv *n = &nurseries->v[i];
        const char *thread = jstr(n, "thread"), *task = jstr(n, "task");
        if (thread == NULL || !jfind(root, "threads", "id", thread))
            return errf(err, errlen, "nursery %zu: \"thread\" is not in \"threads\"", i);
        /* Its opener may be missing from the snapshot, as in the text form. */
        if (task == NULL ? !jis_null(n, "task") : !is_id(task))
            return errf(err, errlen, "nursery %zu: \"task\" is neither null nor an id", i);
    }
    for (size_t i = 0; i < tasks->n; i++) {
        const struct jv *t = &tasks->v[i];
        const char *state = jstr(t, "state");
        if (!one_of(state, task_states))
            return errf(err, errlen, "task %zu: state %s", i, state ? state : "absent");
        if (!strcmp(state, "blocked") && !one_of(jstr(t, "blocked_in"), blocked_ins))
            return errf(err, errlen, "task %zu: blocked without a known blocked_in", i);
        const char *thread = jstr(t, "thread");
        if (thread == NULL || !jfind(root, "threads", "id", thread))
            return errf(err, errlen, "task %zu: \"thread\" is not in \"threads\"", i);
        /* A task whose nursery was being joined may name one not listed. */
        if (!is_id(jstr(t, "nursery")))
            return errf(err, errlen, "task %zu: no \"nursery\" id", i);
    }
    return true;
}

static void json_take(struct jv *root, char **text)
{
    int rc = -1;
    size_t len = 0;
    *text = dump_capture(NURSERY_DUMP_JSON, &rc, &len);
    ck_assert_ptr_nonnull(*text);
    ck_assert_int_eq(rc, 0);
    char err[256] = "";
    ck_assert_msg(json_parse(root, *text, len, err, sizeof(err)) &&
                      json_check(root, err, sizeof(err)),
                  "malformed JSON dump: %s\n%s", err, *text);
}

/* ---- A dump of a process with nothing in it ---------------------------------- */

START_TEST(dump_of_idle_process_is_one_line)
{
    /* Each test runs in a fresh child: no pool, no nursery yet. */
    struct dump d;
    char *text;
    dump_take(&d, &text);
    ck_assert_msg(d.n == 1, "a process with no pool dumps %zu lines:\n%s", d.n, text);
    ck_assert_int_eq(fnum(&d.l[0], "pools"), 0);
    ck_assert_int_eq(fnum(&d.l[0], "threads"), 0);
    ck_assert_int_eq(fnum(&d.l[0], "nurseries"), 0);
    ck_assert_int_eq(fnum(&d.l[0], "tasks"), 0);
    dump_free(&d);
    free(text);

    struct jv root;
    json_take(&root, &text);
    ck_assert_uint_eq(jget(&root, "pools")->n, 0);
    ck_assert_uint_eq(jget(&root, "threads")->n, 0);
    ck_assert_uint_eq(jget(&root, "nurseries")->n, 0);
    ck_assert_uint_eq(jget(&root, "tasks")->n, 0);
    jfree(&root);
    free(text);
}
END_TEST

/* ---- Every kind of wait, in a tree of nurseries ------------------------------ */

#define WAIT_POOL_THREADS 20

/* Everything the tasks of the big scene share.  Each task counts `entered`
 * down right before its blocking call and stores what the call returned. */
struct scene {
    nursery_pool_t *pool;
    nursery_t *outer, *inner;
    latch_t entered;       /* one per blocking call below */
    latch_t inner_running; /* the inner tasks run, so the joiner's join cannot run them */
    latch_t release_busy;  /* the tasks that wait in user code */
    nursery_result_t *fut_result, *fut_inner, *fut_any[2], *fut_wait, *fut_unstarted;
    nursery_sender_t *full_tx, *empty_tx;
    nursery_receiver_t *full_rx, *empty_rx;
    int poll_pipe[2];
    int child_pipe[2];
    pid_t child;
    /* What each blocking call returned (-1: not yet). */
    int join_rc, inner_rc, result_rc, any_rc, wait_rc, recv_rc, send_rc, sleep_rc, poll_rc,
        child_rc, start_rc, unstarted_rc, busy_rc, inner_busy_rc;
};

static int busy_in_user_code(latch_t *entered, latch_t *release)
{
    latch_count_down(entered);
    return latch_wait(release) ? 0 : ETIMEDOUT;
}

static int inner_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->inner_running);
    latch_count_down(&s->entered);
    s->inner_rc = nursery_result_wait(s->fut_inner, NURSERY_FOREVER);
    return s->inner_rc;
}

static int inner_busy_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->inner_running);
    s->inner_busy_rc = busy_in_user_code(&s->entered, &s->release_busy);
    return s->inner_busy_rc;
}

static int joiner_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    nursery_t *n = NULL;
    int rc = nursery_open_until(&n, s->pool, nursery_after_ms(HOUR_MS));
    if (rc != 0)
        return rc;
    s->inner = n;
    task_expect_eq(nursery_set_name(n, "inner"), 0);
    nursery_task_options_t a = {.name = "inner_task"}, b = {.name = "inner_busy"};
    task_expect_eq(nursery_start_soon(n, inner_task, s, &a), 0);
    task_expect_eq(nursery_start_soon(n, inner_busy_task, s, &b), 0);
    /* Both run on other workers before the join: it has nothing to run. */
    task_expect(latch_wait(&s->inner_running));
    latch_count_down(&s->entered);
    s->join_rc = nursery_join(n, NURSERY_FOREVER, NULL);
    return s->join_rc;
}

static int result_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->entered);
    s->result_rc = nursery_result_wait(s->fut_result, NURSERY_FOREVER);
    return s->result_rc;
}

static int wait_any_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    size_t index = 99;
    latch_count_down(&s->entered);
    s->any_rc = nursery_wait_any(s->fut_any, 2, NURSERY_FOREVER, &index);
    return s->any_rc;
}

static int wait_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->entered);
    s->wait_rc = nursery_wait(&s->fut_wait, 1, NURSERY_FOREVER, NURSERY_ALL_COMPLETED, NULL, NULL);
    return s->wait_rc;
}

static int recv_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    void *item = NULL;
    latch_count_down(&s->entered);
    s->recv_rc = nursery_channel_recv(s->empty_rx, &item, NURSERY_FOREVER);
    return s->recv_rc;
}

static int send_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->entered);
    s->send_rc = nursery_channel_send(s->full_tx, INT2PTR(2), NURSERY_FOREVER);
    return s->send_rc;
}

static int sleep_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->entered);
    s->sleep_rc = nursery_sleep(nursery_after_ms(HOUR_MS));
    return s->sleep_rc;
}

static int poll_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    struct pollfd p = {.fd = s->poll_pipe[0], .events = POLLIN};
    size_t ready = 0;
    latch_count_down(&s->entered);
    s->poll_rc = nursery_poll(&p, 1, NURSERY_FOREVER, &ready);
    return s->poll_rc;
}

static int child_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->entered);
    s->child_rc = nursery_child_wait(s->child, NULL, NURSERY_FOREVER);
    return s->child_rc;
}

static int unstarted_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    latch_count_down(&s->entered);
    s->unstarted_rc = nursery_result_wait(s->fut_unstarted, NURSERY_FOREVER);
    if (s->unstarted_rc != 0)
        return s->unstarted_rc;
    return nursery_started(NULL);
}

static int starter_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    nursery_task_options_t o = {.name = "unstarted"};
    latch_count_down(&s->entered);
    s->start_rc = nursery_start(s->outer, unstarted_task, s, &o, NURSERY_FOREVER, NULL, NULL);
    return s->start_rc;
}

static int busy_task(void *arg, void **value)
{
    (void)value;
    struct scene *s = arg;
    s->busy_rc = busy_in_user_code(&s->entered, &s->release_busy);
    return s->busy_rc;
}

static const struct {
    const char *name;
    nursery_fn fn;
} scene_tasks[] = {
    {"joiner", joiner_task},   {"result", result_task}, {"wait_any", wait_any_task},
    {"wait", wait_task},       {"recv", recv_task},     {"send", send_task},
    {"sleep", sleep_task},     {"poll", poll_task},     {"child", child_task},
    {"starter", starter_task}, {"busy", busy_task},
};
#define SCENE_TASKS (sizeof(scene_tasks) / sizeof(scene_tasks[0]))
/* The blocking calls: the outer tasks, the two inner ones and "unstarted". */
#define SCENE_BLOCKING ((int)SCENE_TASKS + 3)

static const struct expect scene_waits[] = {
    {"joiner", "join"},      {"inner_task", "result"}, {"inner_busy", NULL}, {"result", "result"},
    {"wait_any", "wait"},    {"wait", "wait"},         {"recv", "recv"},     {"send", "send"},
    {"sleep", "sleep"},      {"poll", "poll"},         {"child", "child"},   {"starter", "start"},
    {"unstarted", "result"}, {"busy", NULL},           {NULL, NULL},
};

static void scene_init(struct scene *s)
{
    memset(s, 0, sizeof(*s));
    /* The child first, while this process has one thread: it waits for
     * its pipe to close, then exits. */
    ck_assert_int_eq(pipe(s->child_pipe), 0);
    s->child = fork_child(60);
    if (s->child == 0) {
        char c;
        close(s->child_pipe[1]);
        while (read(s->child_pipe[0], &c, 1) > 0)
            continue;
        _exit(0);
    }
    close(s->child_pipe[0]);
    ck_assert_int_eq(pipe(s->poll_pipe), 0);

    nursery_pool_options_t o = {.threads = WAIT_POOL_THREADS, .name = "dumpt"};
    ck_assert_int_eq(nursery_pool_create(&s->pool, &o), 0);
    latch_init(&s->entered, SCENE_BLOCKING);
    latch_init(&s->inner_running, 2);
    latch_init(&s->release_busy, 1);
    s->fut_result = gate_new();
    s->fut_inner = gate_new();
    s->fut_any[0] = gate_new();
    s->fut_any[1] = gate_new();
    s->fut_wait = gate_new();
    s->fut_unstarted = gate_new();
    ck_assert_int_eq(nursery_channel_create(1, NULL, &s->full_tx, &s->full_rx), 0);
    ck_assert_int_eq(nursery_channel_try_send(s->full_tx, INT2PTR(1)), 0);
    ck_assert_int_eq(nursery_channel_create(1, NULL, &s->empty_tx, &s->empty_rx), 0);
    int *rcs[] = {&s->join_rc,  &s->inner_rc,     &s->result_rc, &s->any_rc,       &s->wait_rc,
                  &s->recv_rc,  &s->send_rc,      &s->sleep_rc,  &s->poll_rc,      &s->child_rc,
                  &s->start_rc, &s->unstarted_rc, &s->busy_rc,   &s->inner_busy_rc};
    for (size_t i = 0; i < sizeof(rcs) / sizeof(rcs[0]); i++)
        *rcs[i] = -1;
}

static void scene_fini(struct scene *s)
{
    /* The child exits once its pipe closes. */
    close(s->child_pipe[1]);
    int status = -1;
    ck_assert_int_eq(waitpid(s->child, &status, 0), s->child);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(s->poll_pipe[0]);
    close(s->poll_pipe[1]);
    nursery_result_t *futs[] = {s->fut_result, s->fut_inner, s->fut_any[0],
                                s->fut_any[1], s->fut_wait,  s->fut_unstarted};
    results_release(futs, sizeof(futs) / sizeof(futs[0]));
    nursery_sender_free(s->full_tx);
    nursery_receiver_free(s->full_rx);
    nursery_sender_free(s->empty_tx);
    nursery_receiver_free(s->empty_rx);
    latch_destroy(&s->entered);
    latch_destroy(&s->inner_running);
    latch_destroy(&s->release_busy);
    ck_assert_int_eq(nursery_pool_destroy(s->pool), 0);
}

/* A helper thread, while the main thread is in nursery_join(outer): it
 * dumps until main shows as blocked in that join, cancels the outer
 * nursery, dumps until only the tasks that wait in user code (and the
 * joiner, which waits for one of them) are left, then lets those go.  It
 * keeps both dumps for the main thread to check after the join; it asserts
 * nothing itself (ck_assert in it would end the test process while the
 * pool runs). */
struct watcher {
    struct scene *s;
    long main_tid;
    char *joining_text;   /* the dump with main in its join (NULL: never seen) */
    char *cancelled_text; /* the dump after the cancel (NULL: never seen) */
    int cancel_rc;
    char err[256];
};

static bool main_in_join(const struct dump *d, long tid)
{
    char tids[32];
    snprintf(tids, sizeof(tids), "%ld", tid);
    int i = find_line(d, "thread", "tid", tids);
    return i >= 0 && fis(&d->l[i], "blocked_in", "join");
}

static bool only_user_waits_left(const struct dump *d)
{
    int outer = find_line(d, "nursery", "name", "outer");
    int inner = find_line(d, "nursery", "name", "inner");
    if (outer < 0 || inner < 0 || !fis(&d->l[outer], "cancel", "yes") ||
        !fis(&d->l[inner], "cancel", "yes"))
        return false;
    /* A task's frame goes before its nursery counts it ended: wait for the
     * counts to settle too. */
    if (fnum(&d->l[outer], "pending") != 2 || fnum(&d->l[inner], "pending") != 1 ||
        fnum(&d->l[inner], "finished") != 1)
        return false;
    for (size_t i = 0; i < d->n; i++) {
        const char *name = fv(&d->l[i], "name");
        if (kind_is(&d->l[i], "task") &&
            !one_of(name, (const char *const[]){"joiner", "busy", "inner_busy", NULL}))
            return false;
    }
    return count_kind(d, "task") == 3;
}

/* One dump in the watcher: the text if it parsed and matches; NULL
 * otherwise (err set when it did not parse). */
static char *watch_once(struct watcher *w, int what)
{
    int rc = -1;
    size_t len = 0;
    char *text = dump_capture(0, &rc, &len);
    struct dump d;
    if (text == NULL || rc != 0) {
        snprintf(w->err, sizeof(w->err), "nursery_dump returned %d", rc);
        free(text);
        return NULL;
    }
    if (!dump_parse(&d, text, len, w->err, sizeof(w->err)) ||
        !dump_check(&d, true, w->err, sizeof(w->err))) {
        dump_free(&d);
        free(text);
        return NULL;
    }
    bool match = what == 0 ? main_in_join(&d, w->main_tid) : only_user_waits_left(&d);
    dump_free(&d);
    if (!match) {
        free(text);
        return NULL;
    }
    return text;
}

static char *watch_until(struct watcher *w, int what)
{
    nursery_time_t give_up = nursery_after_ms(DUMP_WAIT_MS);
    char *text = NULL;
    while (text == NULL && w->err[0] == '\0' && nursery_now() < give_up) {
        text = watch_once(w, what);
        if (text == NULL)
            pause_ms(5);
    }
    return text;
}

static void *watcher_main(void *arg)
{
    struct watcher *w = arg;
    w->joining_text = watch_until(w, 0);
    w->cancel_rc = nursery_cancel(w->s->outer);
    if (w->err[0] == '\0')
        w->cancelled_text = watch_until(w, 1);
    latch_count_down(&w->s->release_busy);
    return NULL;
}

/* Asserts the line of a task of the scene: under `parent`, state and
 * blocked_in as expected, on a worker of the pool whose line agrees. */
static const struct dline *assert_task_line(const struct dump *d, const char *name,
                                            const char *blocked_in, int parent)
{
    int i = find_line(d, "task", "name", name);
    ck_assert_msg(i >= 0, "no task line named \"%s\"", name);
    const struct dline *t = &d->l[i];
    if (parent >= 0) {
        ck_assert_msg(parent_of(d, i) == parent, "task \"%s\" is not under its nursery", name);
        ck_assert_int_eq(t->level, d->l[parent].level + 1);
    }
    ck_assert_str_eq(fv(t, "state"), blocked_in ? "blocked" : "running");
    if (blocked_in)
        ck_assert_str_eq(fv(t, "blocked_in"), blocked_in);
    ck_assert(is_duration(fv(t, "for")));
    ck_assert_msg(fsec(t, "for") >= 0 && fsec(t, "for") < 600, "task \"%s\" for=%s", name,
                  fv(t, "for"));
    /* Where it runs: a worker of "dumpt", in the state the task implies. */
    const char *thread = fv(t, "thread");
    ck_assert_msg(is_id(thread), "task \"%s\" has no thread=", name);
    int w = find_id(d, "worker", thread);
    ck_assert_msg(w >= 0, "task \"%s\" runs on %s, which no worker line names", name, thread);
    ck_assert_str_eq(fv(&d->l[w], "state"), blocked_in ? "blocked" : "running");
    ck_assert_str_eq(fv(t, "thread_name"), fv(&d->l[w], "name"));
    ck_assert_int_eq(fnum(t, "tid"), fnum(&d->l[w], "tid"));
    ck_assert_int_gt(fnum(t, "tid"), 0);
    return t;
}

START_TEST(dump_shows_tree_and_every_kind_of_wait)
{
    struct scene s;
    scene_init(&s);
    char id[32];

    ck_assert_int_eq(nursery_open(&s.outer, s.pool), 0);
    ck_assert_int_eq(nursery_set_name(s.outer, "outer"), 0);
    for (size_t i = 0; i < SCENE_TASKS; i++) {
        nursery_task_options_t o = {.name = scene_tasks[i].name};
        ck_assert_int_eq(nursery_start_soon(s.outer, scene_tasks[i].fn, &s, &o), 0);
    }
    ck_assert(latch_wait(&s.entered));

    /* The main thread dumps while it runs the outer nursery's body. */
    struct dump d;
    char *text;
    ck_assert_msg(dump_wait(&d, &text, tasks_show, scene_waits),
                  "the tasks never all showed their waits:\n%s", text);

    /* The pool and its workers. */
    int pool = find_line(&d, "pool", "name", "dumpt");
    ck_assert_msg(pool >= 0, "no pool line named \"dumpt\":\n%s", text);
    ck_assert_uint_eq(count_kind(&d, "pool"), 1);
    ck_assert(!fis(&d.l[pool], "default", "yes"));
    ck_assert_int_ge(fnum(&d.l[pool], "threads"), WAIT_POOL_THREADS);
    size_t workers = 0;
    for (size_t i = (size_t)pool + 1; i < d.n && d.l[i].level == 1; i++) {
        /* A worker the pool has just added may not know its tid yet: a
         * field whose value is unknown is left out. */
        const char *wname = fv(&d.l[i], "name");
        ck_assert(kind_is(&d.l[i], "worker"));
        ck_assert_msg(wname == NULL || strncmp(wname, "dumpt", 5) == 0, "worker name=\"%s\"",
                      wname);
        ck_assert(fv(&d.l[i], "tid") == NULL || fnum(&d.l[i], "tid") > 0);
        workers++;
    }
    ck_assert_uint_ge(workers, WAIT_POOL_THREADS);
    ck_assert_uint_eq(workers, count_kind(&d, "worker"));

    /* The main thread, running the body of "outer". */
    char tids[32];
    snprintf(tids, sizeof(tids), "%ld", my_tid());
    int main_line = find_line(&d, "thread", "tid", tids);
    ck_assert_msg(main_line >= 0, "no thread line with tid=%s:\n%s", tids, text);
    ck_assert_str_eq(fv(&d.l[main_line], "state"), "running");
    ck_assert_ptr_null(fv(&d.l[main_line], "blocked_in"));
    ck_assert_uint_eq(count_kind(&d, "thread"), 1);

    /* "outer" under the main thread; its counts are nursery_counts(). */
    int outer = find_line(&d, "nursery", "name", "outer");
    ck_assert_msg(outer >= 0, "no nursery named \"outer\":\n%s", text);
    ck_assert_int_eq(parent_of(&d, outer), main_line);
    ck_assert_int_eq(d.l[outer].level, 1);
    ck_assert_str_eq(d.l[outer].id, ptr_id(s.outer, id));
    ck_assert(fquoted(&d.l[outer], "name"));
    ck_assert_str_eq(fv(&d.l[outer], "cancel"), "no");
    ck_assert_ptr_null(fv(&d.l[outer], "why"));
    ck_assert_str_eq(fv(&d.l[outer], "deadline"), "none");
    ck_assert(fsec(&d.l[outer], "age") >= 0 && fsec(&d.l[outer], "age") < 600);
    nursery_counts_t c;
    ck_assert_int_eq(nursery_counts(s.outer, &c), 0);
    ck_assert_uint_eq(c.started, SCENE_TASKS + 1); /* with the one nursery_start() began */
    ck_assert_uint_eq(c.finished, 0);
    ck_assert_int_eq(fnum(&d.l[outer], "started"), (long long)c.started);
    ck_assert_int_eq(fnum(&d.l[outer], "finished"), 0);
    ck_assert_int_eq(fnum(&d.l[outer], "failed"), 0);
    ck_assert_int_eq(fnum(&d.l[outer], "cancelled"), 0);
    ck_assert_int_ge(fnum(&d.l[outer], "pending"), (long long)SCENE_TASKS);
    ck_assert_int_le(fnum(&d.l[outer], "pending"), (long long)SCENE_TASKS + 1);
    ck_assert_int_eq(fnum(&d.l[outer], "queued"), 0);

    /* Every task of "outer" under it, and "inner" under its opener. */
    for (size_t i = 0; i < SCENE_TASKS; i++) {
        const struct expect *e = &scene_waits[0];
        while (strcmp(e->name, scene_tasks[i].name) != 0)
            e++;
        assert_task_line(&d, e->name, e->blocked_in, outer);
    }
    int joiner = find_line(&d, "task", "name", "joiner");
    int inner = find_line(&d, "nursery", "name", "inner");
    ck_assert_msg(inner >= 0, "no nursery named \"inner\":\n%s", text);
    ck_assert_int_eq(parent_of(&d, inner), joiner);
    ck_assert_int_eq(d.l[inner].level, d.l[joiner].level + 1);
    ck_assert_int_eq(d.l[joiner].level, d.l[outer].level + 1);
    ck_assert_str_eq(d.l[inner].id, ptr_id(s.inner, id));
    ck_assert_str_eq(fv(&d.l[joiner], "object"), d.l[inner].id);
    ck_assert_str_eq(fv(&d.l[inner], "cancel"), "no");
    double left = fsec(&d.l[inner], "deadline");
    ck_assert_msg(left > 3000 && left <= 3600, "inner deadline=%s", fv(&d.l[inner], "deadline"));
    ck_assert_int_eq(fnum(&d.l[inner], "started"), 2);
    ck_assert_int_eq(fnum(&d.l[inner], "finished"), 0);
    ck_assert_int_eq(fnum(&d.l[inner], "pending"), 2);
    ck_assert_int_eq(fnum(&d.l[inner], "queued"), 0);
    const struct dline *t = assert_task_line(&d, "inner_task", "result", inner);
    ck_assert_str_eq(fv(t, "object"), ptr_id(s.fut_inner, id));
    assert_task_line(&d, "inner_busy", NULL, inner);

    /* What each wait says about its object. */
    t = &d.l[find_line(&d, "task", "name", "result")];
    ck_assert_str_eq(fv(t, "object"), ptr_id(s.fut_result, id));
    t = &d.l[find_line(&d, "task", "name", "wait_any")];
    ck_assert_str_eq(fv(t, "object"), ptr_id(s.fut_any[0], id));
    ck_assert_int_eq(fnum(t, "count"), 2);
    t = &d.l[find_line(&d, "task", "name", "wait")];
    ck_assert_str_eq(fv(t, "object"), ptr_id(s.fut_wait, id));
    ck_assert_int_eq(fnum(t, "count"), 1);
    const char *recv_obj = fv(&d.l[find_line(&d, "task", "name", "recv")], "object");
    const char *send_obj = fv(&d.l[find_line(&d, "task", "name", "send")], "object");
    ck_assert(is_id(recv_obj) && is_id(send_obj));
    ck_assert_str_ne(recv_obj, send_obj);
    t = &d.l[find_line(&d, "task", "name", "sleep")];
    double until = fsec(t, "until");
    ck_assert_msg(until > 3000 && until <= 3600, "sleep until=%s", fv(t, "until"));
    t = &d.l[find_line(&d, "task", "name", "poll")];
    ck_assert_int_eq(fnum(t, "fd"), s.poll_pipe[0]);
    ck_assert_int_eq(fnum(t, "count"), 1);
    t = &d.l[find_line(&d, "task", "name", "child")];
    ck_assert_int_eq(fnum(t, "pid"), s.child);
    t = &d.l[find_line(&d, "task", "name", "starter")];
    ck_assert_str_eq(fv(t, "object"), ptr_id(s.outer, id));
    /* The task nursery_start() began, not started yet: in a nursery. */
    int unstarted = find_line(&d, "task", "name", "unstarted");
    ck_assert(kind_is(&d.l[parent_of(&d, unstarted)], "nursery"));
    assert_task_line(&d, "unstarted", "result", -1);
    ck_assert_str_eq(fv(&d.l[unstarted], "object"), ptr_id(s.fut_unstarted, id));
    dump_free(&d);
    free(text);

    /* Main in its join: the watcher sees it, then cancels and releases. */
    nursery_t *outer_handle = nursery_retain(s.outer);
    struct watcher w = {.s = &s, .main_tid = my_tid(), .cancel_rc = -1};
    pthread_t thread;
    ck_assert_int_eq(pthread_create(&thread, NULL, watcher_main, &w), 0);
    nursery_errors_t *errs = NULL;
    int join_rc = nursery_join(s.outer, NURSERY_FOREVER, &errs);
    ck_assert_int_eq(pthread_join(thread, NULL), 0);
    ck_assert_msg(w.err[0] == '\0', "in the watcher: %s", w.err);
    ck_assert_int_eq(w.cancel_rc, 0);
    ck_assert_int_eq(join_rc, 0); /* cancelling a nursery is not an error */
    ck_assert_tasks_ok();

    /* Every library wait ended cancelled; the user-code waits returned. */
    int *cancelled_rcs[] = {&s.join_rc, &s.inner_rc, &s.result_rc, &s.any_rc,
                            &s.wait_rc, &s.recv_rc,  &s.send_rc,   &s.sleep_rc,
                            &s.poll_rc, &s.child_rc, &s.start_rc,  &s.unstarted_rc};
    for (size_t i = 0; i < sizeof(cancelled_rcs) / sizeof(cancelled_rcs[0]); i++)
        ck_assert_msg(*cancelled_rcs[i] == ECANCELED, "wait %zu returned %d", i, *cancelled_rcs[i]);
    ck_assert_int_eq(s.busy_rc, 0);
    ck_assert_int_eq(s.inner_busy_rc, 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), SCENE_TASKS - 1); /* all but busy */
    nursery_errors_free(errs);
    ck_assert_int_eq(nursery_counts(outer_handle, &c), 0);
    ck_assert_uint_eq(c.finished, c.started);
    ck_assert_uint_eq(c.failed, 0);
    ck_assert_uint_ge(c.cancelled, SCENE_TASKS - 1);
    nursery_release(outer_handle);

    /* The dump with main in its join. */
    ck_assert_msg(w.joining_text != NULL, "the main thread never showed blocked_in=join");
    dump_parse_checked(&d, w.joining_text, strlen(w.joining_text));
    main_line = find_line(&d, "thread", "tid", tids);
    ck_assert_int_ge(main_line, 0);
    ck_assert_str_eq(fv(&d.l[main_line], "state"), "blocked");
    ck_assert_str_eq(fv(&d.l[main_line], "blocked_in"), "join");
    ck_assert_str_eq(fv(&d.l[main_line], "object"), ptr_id(s.outer, id));
    ck_assert(is_duration(fv(&d.l[main_line], "for")));
    ck_assert_int_eq(parent_of(&d, find_line(&d, "nursery", "name", "outer")), main_line);
    dump_free(&d);

    /* The dump after the cancel: why each nursery is cancelled. */
    ck_assert_msg(w.cancelled_text != NULL,
                  "after the cancel, the dump never showed only the user-code waits");
    dump_parse_checked(&d, w.cancelled_text, strlen(w.cancelled_text));
    outer = find_line(&d, "nursery", "name", "outer");
    inner = find_line(&d, "nursery", "name", "inner");
    ck_assert_str_eq(fv(&d.l[outer], "cancel"), "yes");
    ck_assert_str_eq(fv(&d.l[outer], "why"), "cancelled");
    ck_assert_int_eq(fnum(&d.l[outer], "pending"), 2); /* joiner and busy */
    ck_assert_int_eq(fnum(&d.l[outer], "finished"), fnum(&d.l[outer], "started") - 2);
    ck_assert_str_eq(fv(&d.l[inner], "cancel"), "yes");
    ck_assert_str_eq(fv(&d.l[inner], "why"), "outer");
    ck_assert_int_eq(fnum(&d.l[inner], "pending"), 1);
    ck_assert_int_eq(fnum(&d.l[inner], "finished"), 1);
    ck_assert_int_eq(fnum(&d.l[inner], "cancelled"), 1);
    ck_assert_int_eq(parent_of(&d, inner), find_line(&d, "task", "name", "joiner"));
    ck_assert_str_eq(fv(&d.l[find_line(&d, "task", "name", "joiner")], "blocked_in"), "join");
    ck_assert_str_eq(fv(&d.l[find_line(&d, "task", "name", "busy")], "state"), "running");
    dump_free(&d);
    free(w.joining_text);
    free(w.cancelled_text);
    scene_fini(&s);
}
END_TEST

/* ---- A worker that runs a task inside its own wait ------------------------------ */

struct helping {
    nursery_pool_t *pool;
    latch_t helped_running;
    latch_t release;
    int join_rc, helped_rc;
};

static int helped_task(void *arg, void **value)
{
    (void)value;
    struct helping *h = arg;
    h->helped_rc = busy_in_user_code(&h->helped_running, &h->release);
    return h->helped_rc;
}

/* On a pool of one thread: the join runs "helped" in this thread. */
static int helper_task(void *arg, void **value)
{
    (void)value;
    struct helping *h = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, h->pool);
    if (rc != 0)
        return rc;
    task_expect_eq(nursery_set_name(n, "helped_nursery"), 0);
    nursery_task_options_t o = {.name = "helped"};
    task_expect_eq(nursery_start_soon(n, helped_task, h, &o), 0);
    h->join_rc = nursery_join(n, NURSERY_FOREVER, NULL);
    return h->join_rc;
}

START_TEST(dump_shows_helped_task_under_its_own_nursery)
{
    /* One worker that never gets company: "helped" can only run inside
     * "helper"'s join, on the same thread. */
    struct helping h = {.pool = capped_pool(1), .join_rc = -1, .helped_rc = -1};
    latch_init(&h.helped_running, 1);
    latch_init(&h.release, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, h.pool), 0);
    nursery_task_options_t o = {.name = "helper"};
    ck_assert_int_eq(nursery_start_soon(n, helper_task, &h, &o), 0);
    ck_assert(latch_wait(&h.helped_running));

    /* dump_take checks every task line is running, blocked or helping. */
    struct dump d;
    char *text;
    dump_take(&d, &text);
    int helper = find_line(&d, "task", "name", "helper");
    int inner = find_line(&d, "nursery", "name", "helped_nursery");
    int helped = find_line(&d, "task", "name", "helped");
    ck_assert_msg(helper >= 0 && inner >= 0 && helped >= 0, "a line is missing:\n%s", text);
    ck_assert_int_eq(parent_of(&d, inner), helper);
    ck_assert_int_eq(parent_of(&d, helped), inner);
    ck_assert_str_eq(fv(&d.l[helped], "state"), "running");
    ck_assert_str_eq(fv(&d.l[helper], "state"), "helping");
    ck_assert_str_eq(fv(&d.l[helped], "thread"), fv(&d.l[helper], "thread"));
    ck_assert_int_eq(fnum(&d.l[helped], "tid"), fnum(&d.l[helper], "tid"));
    dump_free(&d);
    free(text);

    latch_count_down(&h.release);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(h.join_rc, 0);
    ck_assert_int_eq(h.helped_rc, 0);
    latch_destroy(&h.helped_running);
    latch_destroy(&h.release);
    destroy_pool(h.pool);
}
END_TEST

/* ---- Why a nursery is cancelled, and its deadline ---------------------------- */

static int fail_at_once(void *arg, void **value)
{
    (void)arg;
    (void)value;
    return nursery_fail(EIO, "failed on purpose");
}

static bool nursery_finished_one(const void *ctx)
{
    nursery_counts_t c;
    return nursery_counts((nursery_t *)ctx, &c) == 0 && c.finished == 1;
}

/* The line of the nursery named `name`, in a fresh dump (kept in *d). */
static const struct dline *nursery_line(struct dump *d, char **text, const char *name)
{
    dump_take(d, text);
    int i = find_line(d, "nursery", "name", name);
    ck_assert_msg(i >= 0, "no nursery named \"%s\":\n%s", name, *text);
    return &d->l[i];
}

START_TEST(dump_shows_why_a_nursery_is_cancelled_and_its_deadline)
{
    nursery_pool_t *p = test_pool(2);
    struct dump d;
    char *text;
    nursery_t *n = NULL;

    /* A deadline that has passed: why=deadline, and a negative time left. */
    ck_assert_int_eq(nursery_open_until(&n, p, nursery_after_ms(-50)), 0);
    ck_assert_int_eq(nursery_set_name(n, "expired"), 0);
    const struct dline *l = nursery_line(&d, &text, "expired");
    ck_assert_str_eq(fv(l, "cancel"), "yes");
    ck_assert_str_eq(fv(l, "why"), "deadline");
    ck_assert_msg(fsec(l, "deadline") < 0 && fsec(l, "deadline") > -600, "deadline=%s",
                  fv(l, "deadline"));
    dump_free(&d);
    free(text);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), NURSERY_EEXPIRED);

    /* A task failed. */
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "failing"), 0);
    ck_assert_int_eq(nursery_start_soon(n, fail_at_once, NULL, NULL), 0);
    ck_assert(poll_until(nursery_finished_one, n));
    l = nursery_line(&d, &text, "failing");
    ck_assert_str_eq(fv(l, "cancel"), "yes");
    ck_assert_str_eq(fv(l, "why"), "failed");
    ck_assert_str_eq(fv(l, "deadline"), "none");
    ck_assert_int_eq(fnum(l, "started"), 1);
    ck_assert_int_eq(fnum(l, "finished"), 1);
    ck_assert_int_eq(fnum(l, "failed"), 1);
    ck_assert_int_eq(fnum(l, "cancelled"), 0);
    ck_assert_int_eq(fnum(l, "pending"), 0);
    ck_assert_int_eq(fnum(l, "queued"), 0);
    dump_free(&d);
    free(text);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), NURSERY_EFAILED);
    nursery_errors_free(errs);

    /* nursery_cancel(). */
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "cancelled"), 0);
    l = nursery_line(&d, &text, "cancelled");
    ck_assert_str_eq(fv(l, "cancel"), "no");
    ck_assert_ptr_null(fv(l, "why"));
    dump_free(&d);
    free(text);
    ck_assert_int_eq(nursery_cancel(n), 0);
    l = nursery_line(&d, &text, "cancelled");
    ck_assert_str_eq(fv(l, "cancel"), "yes");
    ck_assert_str_eq(fv(l, "why"), "cancelled");
    dump_free(&d);
    free(text);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* An enclosing cancel scope. */
    nursery_scope_t *scope = NULL;
    ck_assert_int_eq(nursery_scope_open(&scope, NURSERY_FOREVER, 0), 0);
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "in_scope"), 0);
    ck_assert_int_eq(nursery_scope_cancel(scope), 0);
    l = nursery_line(&d, &text, "in_scope");
    ck_assert_str_eq(fv(l, "cancel"), "yes");
    ck_assert_str_eq(fv(l, "why"), "outer");
    dump_free(&d);
    free(text);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), ECANCELED);
    ck_assert_int_eq(nursery_scope_close(scope, NULL), 0);

    /* A deadline an hour away. */
    ck_assert_int_eq(nursery_open_until(&n, p, nursery_after_ms(HOUR_MS)), 0);
    ck_assert_int_eq(nursery_set_name(n, "later"), 0);
    l = nursery_line(&d, &text, "later");
    ck_assert_str_eq(fv(l, "cancel"), "no");
    double left = fsec(l, "deadline");
    ck_assert_msg(left > 3000 && left <= 3600, "deadline=%s", fv(l, "deadline"));
    dump_free(&d);
    free(text);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* Joined nurseries are gone from the dump. */
    dump_take(&d, &text);
    ck_assert_uint_eq(count_kind(&d, "nursery"), 0);
    ck_assert_int_eq(find_line(&d, "thread", "state", "running"), -1);
    dump_free(&d);
    free(text);
    destroy_pool(p);
}
END_TEST

/* ---- The JSON form ------------------------------------------------------------ */

struct jscene {
    nursery_pool_t *pool;
    nursery_t *inner;
    latch_t entered;
    latch_t inner_running;
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    int recv_rc, sleep_rc, join_rc;
};

static int jrecv_task(void *arg, void **value)
{
    (void)value;
    struct jscene *s = arg;
    void *item = NULL;
    latch_count_down(&s->inner_running);
    latch_count_down(&s->entered);
    s->recv_rc = nursery_channel_recv(s->rx, &item, NURSERY_FOREVER);
    return s->recv_rc;
}

static int jsleep_task(void *arg, void **value)
{
    (void)value;
    struct jscene *s = arg;
    latch_count_down(&s->entered);
    s->sleep_rc = nursery_sleep(nursery_after_ms(HOUR_MS));
    return s->sleep_rc;
}

static int jopener_task(void *arg, void **value)
{
    (void)value;
    struct jscene *s = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, s->pool);
    if (rc != 0)
        return rc;
    s->inner = n;
    task_expect_eq(nursery_set_name(n, "j\"inner\\"), 0);
    nursery_task_options_t o = {.name = "jrecv"};
    task_expect_eq(nursery_start_soon(n, jrecv_task, s, &o), 0);
    task_expect(latch_wait(&s->inner_running));
    latch_count_down(&s->entered);
    s->join_rc = nursery_join(n, NURSERY_FOREVER, NULL);
    return s->join_rc;
}

static const struct expect jscene_waits[] = {
    {"jopener", "join"}, {"jrecv", "recv"}, {"jsleep", "sleep"}, {NULL, NULL}};

START_TEST(dump_json_links_threads_nurseries_and_tasks)
{
    struct jscene s = {.recv_rc = -1, .sleep_rc = -1, .join_rc = -1};
    nursery_pool_options_t o = {.threads = 6, .name = "jsonp"};
    ck_assert_int_eq(nursery_pool_create(&s.pool, &o), 0);
    latch_init(&s.entered, 3);
    latch_init(&s.inner_running, 1);
    ck_assert_int_eq(nursery_channel_create(1, NULL, &s.tx, &s.rx), 0);
    nursery_t *outer = NULL;
    ck_assert_int_eq(nursery_open(&outer, s.pool), 0);
    ck_assert_int_eq(nursery_set_name(outer, "jouter"), 0);
    nursery_task_options_t a = {.name = "jopener"}, b = {.name = "jsleep"};
    ck_assert_int_eq(nursery_start_soon(outer, jopener_task, &s, &a), 0);
    ck_assert_int_eq(nursery_start_soon(outer, jsleep_task, &s, &b), 0);
    ck_assert(latch_wait(&s.entered));
    struct dump d;
    char *text;
    ck_assert_msg(dump_wait(&d, &text, tasks_show, jscene_waits),
                  "the tasks never all showed their waits:\n%s", text);
    dump_free(&d);
    free(text);

    struct jv root;
    json_take(&root, &text);
    char id[32];
    const struct jv *pool = jfind(&root, "pools", "name", "jsonp");
    ck_assert_msg(pool != NULL, "no pool named jsonp:\n%s", text);
    const struct jv *dflt = jget(pool, "default");
    ck_assert(dflt != NULL && dflt->t == J_BOOL && !dflt->b);
    const struct jv *workers = jget(pool, "workers");
    ck_assert_uint_ge(workers->n, 6);
    for (size_t i = 0; i < workers->n; i++) {
        /* Absent values are null or left out (a worker just added may not
         * know its tid yet). */
        const char *wname = jstr(&workers->v[i], "name");
        ck_assert(wname == NULL || strncmp(wname, "jsonp", 5) == 0);
        ck_assert(one_of(jstr(&workers->v[i], "state"),
                         (const char *const[]){"idle", "running", "blocked", NULL}));
        const struct jv *tid = jget(&workers->v[i], "tid");
        ck_assert_msg(tid == NULL || tid->t == J_NULL || (tid->t == J_NUM && tid->num > 0),
                      "worker %zu has \"tid\":%g (unknown: null or left out):\n%s", i,
                      tid && tid->t == J_NUM ? tid->num : -1.0, text);
    }
    const struct jv *threads_n = jget(pool, "threads");
    ck_assert(threads_n != NULL && threads_n->t == J_NUM && threads_n->num >= 6);

    /* The main thread: not a worker, the thread of "jouter", no task. */
    const struct jv *main_thread = NULL, *threads = jget(&root, "threads");
    for (size_t i = 0; i < threads->n; i++) {
        const struct jv *tid = jget(&threads->v[i], "tid");
        if (tid && tid->t == J_NUM && tid->num == (double)my_tid())
            main_thread = &threads->v[i];
    }
    ck_assert_msg(main_thread != NULL, "the main thread is not in \"threads\":\n%s", text);
    const struct jv *is_worker = jget(main_thread, "worker");
    ck_assert(is_worker != NULL && is_worker->t == J_BOOL && !is_worker->b);
    ck_assert(jstr_is(main_thread, "state", "running"));
    const struct jv *jouter = jfind(&root, "nurseries", "name", "jouter");
    ck_assert_msg(jouter != NULL, "no nursery named jouter:\n%s", text);
    ck_assert_str_eq(jstr(jouter, "id"), ptr_id(outer, id));
    ck_assert(jstr_is(jouter, "thread", jstr(main_thread, "id")));
    ck_assert(jis_null(jouter, "task"));
    const struct jv *cancel = jget(jouter, "cancel");
    ck_assert(cancel != NULL && cancel->t == J_BOOL && !cancel->b);
    const struct jv *started = jget(jouter, "started");
    ck_assert(started != NULL && started->t == J_NUM && started->num == 2);

    /* The inner nursery (its name escaped and back), opened by jopener. */
    const struct jv *jinner = jfind(&root, "nurseries", "name", "j\"inner\\");
    ck_assert_msg(jinner != NULL, "no nursery named j\"inner\\:\n%s", text);
    ck_assert_str_eq(jstr(jinner, "id"), ptr_id(s.inner, id));
    const struct jv *jopener = jfind(&root, "tasks", "name", "jopener");
    ck_assert(jopener != NULL);
    ck_assert(jstr_is(jinner, "task", jstr(jopener, "id")));
    ck_assert(jstr_is(jopener, "nursery", jstr(jouter, "id")));
    ck_assert(jstr_is(jopener, "state", "blocked"));
    ck_assert(jstr_is(jopener, "blocked_in", "join"));
    ck_assert(jstr_is(jopener, "object", jstr(jinner, "id")));
    /* Its nursery's thread is the thread it runs on, a worker. */
    ck_assert(jstr_is(jinner, "thread", jstr(jopener, "thread")));
    const struct jv *jt = jfind(&root, "threads", "id", jstr(jopener, "thread"));
    ck_assert(jt != NULL);
    is_worker = jget(jt, "worker");
    ck_assert(is_worker != NULL && is_worker->t == J_BOOL && is_worker->b);

    const struct jv *jrecv = jfind(&root, "tasks", "name", "jrecv");
    ck_assert(jrecv != NULL);
    ck_assert(jstr_is(jrecv, "nursery", jstr(jinner, "id")));
    ck_assert(jstr_is(jrecv, "state", "blocked"));
    ck_assert(jstr_is(jrecv, "blocked_in", "recv"));
    ck_assert(is_id(jstr(jrecv, "object")));
    const struct jv *for_ = jget(jrecv, "for");
    ck_assert(for_ != NULL && for_->t == J_NUM && for_->num >= 0 && for_->num < 600);
    const struct jv *jsleep = jfind(&root, "tasks", "name", "jsleep");
    ck_assert(jsleep != NULL);
    ck_assert(jstr_is(jsleep, "blocked_in", "sleep"));
    ck_assert(jstr_is(jsleep, "nursery", jstr(jouter, "id")));
    ck_assert_uint_eq(jget(&root, "tasks")->n, 3);
    ck_assert_uint_eq(jget(&root, "nurseries")->n, 2);
    jfree(&root);
    free(text);

    ck_assert_int_eq(nursery_cancel(outer), 0);
    ck_assert_int_eq(nursery_join(outer, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(s.recv_rc, ECANCELED);
    ck_assert_int_eq(s.sleep_rc, ECANCELED);
    ck_assert_int_eq(s.join_rc, ECANCELED);
    nursery_sender_free(s.tx);
    nursery_receiver_free(s.rx);
    latch_destroy(&s.entered);
    latch_destroy(&s.inner_running);
    destroy_pool(s.pool);
}
END_TEST

/* ---- Names -------------------------------------------------------------------- */

/* The raw line of the only nursery in a fresh dump, and its parsed name
 * (NULL: none). */
static void only_nursery(char line[512], char name[64])
{
    struct dump d;
    char *text;
    dump_take(&d, &text);
    ck_assert_uint_eq(count_kind(&d, "nursery"), 1);
    int i = find_line(&d, "nursery", "cancel", "no");
    ck_assert_int_ge(i, 0);
    const char *v = fv(&d.l[i], "name");
    snprintf(name, 64, "%s", v ? v : "(none)");
    /* The same line in the raw text: the i-th line. */
    const char *p = text;
    for (int k = 0; k < i; k++)
        p = strchr(p, '\n') + 1;
    snprintf(line, 512, "%.*s", (int)(strchr(p, '\n') - p), p);
    dump_free(&d);
    free(text);
}

START_TEST(set_name_cuts_escapes_and_removes)
{
    nursery_pool_t *p = test_pool(1);
    nursery_t *n = NULL;
    char line[512], name[64];
    ck_assert_int_eq(nursery_open(&n, p), 0);

    only_nursery(line, name);
    ck_assert_str_eq(name, "(none)");

    ck_assert_int_eq(nursery_set_name(n, "a\"b\\c"), 0);
    only_nursery(line, name);
    ck_assert_str_eq(name, "a\"b\\c");
    ck_assert_msg(strstr(line, " name=\"a\\\"b\\\\c\"") != NULL, "line: %s", line);

    /* Control characters: \n, \t or \xHH. */
    ck_assert_int_eq(nursery_set_name(n, "t\tn\nx\x01"), 0);
    only_nursery(line, name);
    ck_assert_str_eq(name, "t\tn\nx\x01");
    ck_assert_msg(strstr(line, " name=\"t\\tn\\nx\\x01\"") != NULL, "line: %s", line);

    /* 31 bytes kept, the rest cut. */
    const char *long_name = "0123456789abcdefghijklmnopqrstuvwxyz";
    ck_assert_int_eq(nursery_set_name(n, long_name), 0);
    only_nursery(line, name);
    ck_assert_uint_eq(strlen(name), 31);
    ck_assert(strncmp(name, long_name, 31) == 0);
    ck_assert_int_eq(nursery_set_name(n, "0123456789abcdefghijklmnopqrstu"), 0); /* 31 */
    only_nursery(line, name);
    ck_assert_str_eq(name, "0123456789abcdefghijklmnopqrstu");

    /* NULL and "" remove it. */
    ck_assert_int_eq(nursery_set_name(n, NULL), 0);
    only_nursery(line, name);
    ck_assert_str_eq(name, "(none)");
    ck_assert_ptr_null(strstr(line, "name="));
    ck_assert_int_eq(nursery_set_name(n, "again"), 0);
    only_nursery(line, name);
    ck_assert_str_eq(name, "again");
    ck_assert_int_eq(nursery_set_name(n, ""), 0);
    only_nursery(line, name);
    ck_assert_str_eq(name, "(none)");

    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    destroy_pool(p);
}
END_TEST

START_TEST(set_name_rejects_null_and_joined_nursery)
{
    nursery_pool_t *p = test_pool(1);
    ck_assert_int_eq(nursery_set_name(NULL, "x"), EINVAL);
    ck_assert_int_eq(nursery_set_name(NULL, NULL), EINVAL);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    nursery_t *kept = nursery_retain(n);
    ck_assert_int_eq(nursery_set_name(n, "before"), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(nursery_set_name(kept, "after"), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_set_name(kept, NULL), NURSERY_ECLOSED);
    nursery_release(kept);
    destroy_pool(p);
}
END_TEST

/* ---- nursery_counts ----------------------------------------------------------- */

static bool counts_finished(nursery_t *n, uint64_t finished)
{
    nursery_counts_t c;
    return nursery_counts(n, &c) == 0 && c.finished == finished;
}

struct counts_wait {
    nursery_t *n;
    uint64_t finished;
};

static bool counts_reached(const void *ctx)
{
    const struct counts_wait *w = ctx;
    return counts_finished(w->n, w->finished);
}

/* A task that counts its runs, and an arg_destroy that counts its calls. */
struct tally {
    atomic_int ran;
    atomic_int destroyed;
};

static int tally_run(void *arg, void **value)
{
    (void)value;
    atomic_fetch_add(&((struct tally *)arg)->ran, 1);
    return 0;
}

static void tally_destroy(void *arg)
{
    atomic_fetch_add(&((struct tally *)arg)->destroyed, 1);
}

START_TEST(counts_are_exact_after_join)
{
    nursery_pool_t *p = test_pool(4);
    nursery_counts_t c;
    ck_assert_int_eq(nursery_counts(NULL, &c), EINVAL);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_counts(n, NULL), EINVAL);
    ck_assert_int_eq(nursery_counts(n, &c), 0);
    ck_assert_uint_eq(c.started, 0);
    ck_assert_uint_eq(c.finished, 0);
    nursery_t *kept = nursery_retain(n);

    /* 5 succeed, 3 fail (their errors kept to themselves, so nothing else
     * is cancelled by them). */
    atomic_int ran = 0;
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(nursery_start_soon(n, count_task, &ran, NULL), 0);
    nursery_task_options_t quiet = {.flags = NURSERY_TASK_SUPPRESS_ERROR};
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_start_soon(n, fail_at_once, NULL, &quiet), 0);
    struct counts_wait cw = {n, 8};
    ck_assert(poll_until(counts_reached, &cw));

    /* 2 cancelled while they run, under a limit of 2 (set first: tasks
     * started before a nursery has a limit take no place under it)... */
    ck_assert_int_eq(nursery_set_limit(n, 2), 0);
    struct gated g;
    gated_init(&g, 2);
    nursery_result_t *running[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(nursery_capture_start_soon(n, gated_task, &g, NULL, &running[i]), 0);
    ck_assert(latch_wait(&g.running));

    /* ...and 1 cancelled before it ran: beyond the limit, it waits in the
     * nursery, where it is cancelled. */
    struct tally never = {0};
    nursery_task_options_t tallied = {.arg_destroy = tally_destroy};
    nursery_result_t *held = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, tally_run, &never, &tallied, &held), 0);
    ck_assert_int_eq(nursery_result_cancel(held), 0);
    assert_failed(held, ECANCELED);
    ck_assert_int_eq(atomic_load(&never.ran), 0);
    ck_assert_int_eq(atomic_load(&never.destroyed), 1);
    ck_assert_int_eq(nursery_counts(n, &c), 0);
    ck_assert_uint_eq(c.started, 11);
    ck_assert_uint_eq(c.finished, 9);
    ck_assert_uint_eq(c.failed, 3);
    ck_assert_uint_eq(c.cancelled, 1);

    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(nursery_result_cancel(running[i]), 0);
    nursery_errors_t *errs = NULL;
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, &errs), 0);
    ck_assert_uint_eq(nursery_errors_count(errs), 0);
    ck_assert_uint_eq(nursery_errors_cancelled(errs), 3);
    nursery_errors_free(errs);
    ck_assert_int_eq(atomic_load(&ran), 5);
    ck_assert_int_eq(atomic_load(&never.ran), 0);
    ck_assert_int_eq(atomic_load(&never.destroyed), 1);

    /* Exact once joined, through the retained handle. */
    ck_assert_int_eq(nursery_counts(kept, &c), 0);
    ck_assert_uint_eq(c.started, 11);
    ck_assert_uint_eq(c.finished, 11);
    ck_assert_uint_eq(c.failed, 3);
    ck_assert_uint_eq(c.cancelled, 3);
    nursery_release(kept);
    results_release(running, 2);
    nursery_result_release(held);
    gated_fini(&g);
    destroy_pool(p);
}
END_TEST

#define COUNTS_STARTS 2000

START_TEST(counts_never_show_more_finished_than_started)
{
    nursery_pool_t *p = test_pool(2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    atomic_int ran = 0;
    nursery_task_options_t quiet = {.flags = NURSERY_TASK_SUPPRESS_ERROR};
    for (int i = 0; i < COUNTS_STARTS; i++) {
        bool fail = i % 7 == 3;
        ck_assert_int_eq(
            nursery_start_soon(n, fail ? fail_at_once : count_task, &ran, fail ? &quiet : NULL), 0);
        nursery_counts_t c;
        ck_assert_int_eq(nursery_counts(n, &c), 0);
        /* Only this thread starts tasks: started is exact. */
        ck_assert_uint_eq(c.started, (uint64_t)i + 1);
        ck_assert_msg(c.finished <= c.started && c.failed <= c.started && c.cancelled == 0,
                      "after %d starts: started %llu finished %llu failed %llu cancelled %llu",
                      i + 1, (unsigned long long)c.started, (unsigned long long)c.finished,
                      (unsigned long long)c.failed, (unsigned long long)c.cancelled);
    }
    nursery_t *kept = nursery_retain(n);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    nursery_counts_t c;
    ck_assert_int_eq(nursery_counts(kept, &c), 0);
    ck_assert_uint_eq(c.started, COUNTS_STARTS);
    ck_assert_uint_eq(c.finished, COUNTS_STARTS);
    ck_assert_uint_eq(c.failed, (COUNTS_STARTS + 3) / 7);
    ck_assert_uint_eq(c.cancelled, 0);
    nursery_release(kept);
    destroy_pool(p);
}
END_TEST

/* ---- Task hooks ---------------------------------------------------------------- */

#define MAX_EVENTS 64

struct event {
    bool start;
    const void *task;
    char task_name[32]; /* "(null)" for NULL */
    nursery_t *nursery;
    char nursery_name[32];
    bool nursery_name_null;
    int code;
    pthread_t thread;
};

struct hook_log {
    pthread_mutex_t mu;
    size_t n;
    struct event ev[MAX_EVENTS];
    atomic_int overflow;
};

static void hook_record(const nursery_task_event_t *ev, void *arg, bool start)
{
    struct hook_log *log = arg;
    pthread_mutex_lock(&log->mu);
    if (log->n < MAX_EVENTS) {
        struct event *e = &log->ev[log->n++];
        e->start = start;
        e->task = ev->task;
        snprintf(e->task_name, sizeof(e->task_name), "%s",
                 ev->task_name ? ev->task_name : "(null)");
        e->nursery = ev->nursery;
        e->nursery_name_null = ev->nursery_name == NULL;
        snprintf(e->nursery_name, sizeof(e->nursery_name), "%s",
                 ev->nursery_name ? ev->nursery_name : "");
        e->code = ev->code;
        e->thread = pthread_self();
    } else {
        atomic_fetch_add(&log->overflow, 1);
    }
    pthread_mutex_unlock(&log->mu);
}

static void on_start(const nursery_task_event_t *ev, void *arg)
{
    hook_record(ev, arg, true);
}

static void on_finish(const nursery_task_event_t *ev, void *arg)
{
    hook_record(ev, arg, false);
}

/* A task that notes the thread it runs on, then returns its code. */
struct hooked_task {
    pthread_t thread;
    int code;
    latch_t *running; /* counted down before it waits (NULL: no wait) */
    nursery_result_t *gate;
};

static int hooked_run(void *arg, void **value)
{
    (void)value;
    struct hooked_task *t = arg;
    t->thread = pthread_self();
    if (t->running) {
        latch_count_down(t->running);
        int rc = gate_wait(t->gate);
        if (rc != 0)
            return rc;
    }
    return t->code ? nursery_fail(t->code, "hooked failure") : 0;
}

/* The events of the task named `name`, by kind. */
static size_t events_of(struct hook_log *log, const char *name, bool start, size_t *first)
{
    size_t count = 0;
    for (size_t i = 0; i < log->n; i++)
        if (log->ev[i].start == start && strcmp(log->ev[i].task_name, name) == 0) {
            if (count++ == 0 && first)
                *first = i;
        }
    return count;
}

/* A task named `name` that ran: one start and one finish, in that order,
 * on the thread it ran on (not the main thread), with its nursery and
 * code. */
static void assert_hooked_once(struct hook_log *log, const char *name, const struct hooked_task *t,
                               nursery_t *n, const char *nursery_name, int code)
{
    size_t s = 0, f = 0;
    ck_assert_msg(events_of(log, name, true, &s) == 1, "task %s: %zu start events", name,
                  events_of(log, name, true, NULL));
    ck_assert_msg(events_of(log, name, false, &f) == 1, "task %s: %zu finish events", name,
                  events_of(log, name, false, NULL));
    ck_assert_uint_lt(s, f);
    const struct event *es = &log->ev[s], *ef = &log->ev[f];
    ck_assert_ptr_eq(es->task, ef->task);
    ck_assert_ptr_nonnull(es->task);
    ck_assert_ptr_eq(es->nursery, n);
    ck_assert_ptr_eq(ef->nursery, n);
    ck_assert(!es->nursery_name_null && !ef->nursery_name_null);
    ck_assert_str_eq(es->nursery_name, nursery_name);
    ck_assert_str_eq(ef->nursery_name, nursery_name);
    ck_assert_int_eq(ef->code, code);
    ck_assert(pthread_equal(es->thread, t->thread));
    ck_assert(pthread_equal(ef->thread, t->thread));
    ck_assert(!pthread_equal(es->thread, pthread_self()));
}

START_TEST(hooks_see_every_task_once_on_its_thread)
{
    struct hook_log log = {.n = 0};
    pthread_mutex_init(&log.mu, NULL);
    atomic_init(&log.overflow, 0);
    nursery_pool_options_t o = {
        .threads = 2, .on_task_start = on_start, .on_task_finish = on_finish, .hook_arg = &log};
    nursery_pool_t *p = NULL;
    ck_assert_int_eq(nursery_pool_create(&p, &o), 0);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "hooked"), 0);
    latch_t running;
    latch_init(&running, 1);
    struct hooked_task holder = {.running = &running, .gate = gate_new()};
    struct hooked_task ok = {.code = 0}, bad = {.code = EIO}, unnamed = {.code = 0};
    struct hooked_task never = {.code = 0};

    /* Under a limit of 1, "holder" runs and waits, and "never" waits in the
     * nursery for room, where it is cancelled. */
    nursery_task_options_t oh = {.name = "holder"}, on = {.name = "never"};
    ck_assert_int_eq(nursery_set_limit(n, 1), 0);
    ck_assert_int_eq(nursery_start_soon(n, hooked_run, &holder, &oh), 0);
    ck_assert(latch_wait(&running));
    nursery_result_t *never_r = NULL;
    ck_assert_int_eq(nursery_capture_start_soon(n, hooked_run, &never, &on, &never_r), 0);
    ck_assert_int_eq(nursery_result_cancel(never_r), 0);
    /* Its finish hook ran before its result could be seen done. */
    pthread_mutex_lock(&log.mu);
    size_t never_finish = events_of(&log, "never", false, NULL);
    pthread_mutex_unlock(&log.mu);
    ck_assert_uint_eq(never_finish, 1);

    ck_assert_int_eq(nursery_set_limit(n, 0), 0);
    nursery_task_options_t ook = {.name = "ok"};
    nursery_task_options_t obad = {.name = "bad", .flags = NURSERY_TASK_SUPPRESS_ERROR};
    ck_assert_int_eq(nursery_start_soon(n, hooked_run, &ok, &ook), 0);
    ck_assert_int_eq(nursery_start_soon(n, hooked_run, &bad, &obad), 0);
    ck_assert_int_eq(nursery_start_soon(n, hooked_run, &unnamed, NULL), 0);
    gate_open(holder.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* Join has returned: every finish hook has run. */
    pthread_mutex_lock(&log.mu);
    ck_assert_int_eq(atomic_load(&log.overflow), 0);
    ck_assert_uint_eq(log.n, 9); /* 4 tasks ran: start and finish; "never": finish only */
    assert_hooked_once(&log, "holder", &holder, n, "hooked", 0);
    assert_hooked_once(&log, "ok", &ok, n, "hooked", 0);
    assert_hooked_once(&log, "bad", &bad, n, "hooked", EIO);
    assert_hooked_once(&log, "(null)", &unnamed, n, "hooked", 0);
    size_t f = 0;
    ck_assert_uint_eq(events_of(&log, "never", true, NULL), 0);
    ck_assert_uint_eq(events_of(&log, "never", false, &f), 1);
    ck_assert_int_eq(log.ev[f].code, ECANCELED);
    ck_assert_ptr_eq(log.ev[f].nursery, n);
    ck_assert_str_eq(log.ev[f].nursery_name, "hooked");
    ck_assert_ptr_nonnull(log.ev[f].task);
    /* Ids are unique among tasks not yet ended: the holder outlived all. */
    size_t hs = 0;
    events_of(&log, "holder", true, &hs);
    for (size_t i = 0; i < log.n; i++)
        if (strcmp(log.ev[i].task_name, "holder") != 0)
            ck_assert_ptr_ne(log.ev[i].task, log.ev[hs].task);
    log.n = 0;
    pthread_mutex_unlock(&log.mu);

    /* An unnamed nursery: nursery_name is "", not NULL. */
    struct hooked_task plain = {.code = 0};
    ck_assert_int_eq(nursery_open(&n, p), 0);
    nursery_task_options_t op = {.name = "plain"};
    ck_assert_int_eq(nursery_start_soon(n, hooked_run, &plain, &op), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    pthread_mutex_lock(&log.mu);
    ck_assert_uint_eq(log.n, 2);
    assert_hooked_once(&log, "plain", &plain, n, "", 0);
    pthread_mutex_unlock(&log.mu);

    nursery_result_release(never_r);
    nursery_result_release(holder.gate);
    latch_destroy(&running);
    destroy_pool(p);
    pthread_mutex_destroy(&log.mu);
}
END_TEST

/* ---- Pool statistics: steals, threads created and retired, time parked ------- */

struct steal {
    nursery_pool_t *pool;
    latch_t second_ran;
    atomic_int ran;
};

static int steal_first(void *arg, void **value)
{
    (void)value;
    struct steal *s = arg;
    atomic_fetch_add(&s->ran, 1);
    return 0;
}

static int steal_second(void *arg, void **value)
{
    (void)value;
    struct steal *s = arg;
    atomic_fetch_add(&s->ran, 1);
    latch_count_down(&s->second_ran);
    return 0;
}

/* Starts two tasks from a worker (into its own queue), then waits in user
 * code, running nothing, for the second: only the other worker can run
 * them, and it must take them from this worker's queue. */
static int steal_parent(void *arg, void **value)
{
    (void)value;
    struct steal *s = arg;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, s->pool);
    if (rc != 0)
        return rc;
    task_expect_eq(nursery_start_soon(n, steal_first, s, NULL), 0);
    task_expect_eq(nursery_start_soon(n, steal_second, s, NULL), 0);
    bool ok = latch_wait(&s->second_ran);
    rc = nursery_join(n, NURSERY_FOREVER, NULL);
    return ok ? rc : ETIMEDOUT;
}

START_TEST(stats_count_threads_created_steals_and_parking)
{
    /* Two threads that never grow: the parent's worker is really stuck. */
    struct steal s = {.pool = capped_pool(2)};
    latch_init(&s.second_ran, 1);
    atomic_init(&s.ran, 0);
    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(s.pool, &st), 0);
    ck_assert_uint_ge(st.threads_created, 2);
    ck_assert_uint_eq(st.threads_retired, 0);
    ck_assert_uint_eq(st.steals, 0);
    wait_pool_quiet(s.pool);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, s.pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, steal_parent, &s, NULL), 0);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_tasks_ok();
    ck_assert_int_eq(atomic_load(&s.ran), 2);

    ck_assert_int_eq(nursery_pool_stats(s.pool, &st), 0);
    ck_assert_uint_ge(st.steals, 1);
    ck_assert_uint_le(st.steals, st.completed);
    ck_assert_uint_eq(st.threads_created, 2);
    ck_assert_uint_eq(st.threads_retired, 0);
    /* Both workers were parked idle, then woken. */
    ck_assert_uint_gt(st.parked_ns, 0);
    uint64_t parked = st.parked_ns;
    wait_pool_quiet(s.pool);
    atomic_int count = 0;
    run_count_tasks(s.pool, &count, 4);
    ck_assert_int_eq(nursery_pool_stats(s.pool, &st), 0);
    ck_assert_uint_ge(st.parked_ns, parked);
    latch_destroy(&s.second_ran);
    destroy_pool(s.pool);
}
END_TEST

static bool back_to_one_thread(const void *ctx)
{
    nursery_pool_stats_t st;
    return nursery_pool_stats((nursery_pool_t *)ctx, &st) == 0 && st.threads == 1 &&
           st.threads_retired > 0;
}

START_TEST(stats_count_retired_surplus_threads)
{
    nursery_pool_options_t o = {.threads = 1, .max_threads = 4};
    nursery_pool_t *p = NULL;
    ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
    nursery_pool_stats_t st;
    ck_assert_int_eq(nursery_pool_stats(p, &st), 0);
    ck_assert_uint_ge(st.threads_created, 1);
    ck_assert_uint_eq(st.threads_retired, 0);

    /* Three tasks block at once: the pool must have grown to three. */
    struct gated g;
    gated_init(&g, 3);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, NULL), 0);
    ck_assert(latch_wait(&g.running));
    ck_assert_int_eq(nursery_pool_stats(p, &st), 0);
    ck_assert_uint_ge(st.threads_created, 3);
    gate_open(g.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);

    /* The surplus retires after 250 ms idle. */
    poll_until(back_to_one_thread, p);
    ck_assert_int_eq(nursery_pool_stats(p, &st), 0);
    ck_assert_msg(st.threads == 1 && st.threads_retired > 0,
                  "after the tasks ended: %zu threads, %llu created, %llu retired", st.threads,
                  (unsigned long long)st.threads_created, (unsigned long long)st.threads_retired);
    ck_assert_uint_ge(st.threads_retired, 2);
    ck_assert_uint_eq(st.threads_created - st.threads_retired, st.threads);
    gated_fini(&g);
    destroy_pool(p);
}
END_TEST

/* ---- Arguments and write errors ------------------------------------------------ */

START_TEST(dump_rejects_bad_arguments_and_reports_write_errors)
{
    ck_assert_int_eq(nursery_dump(NULL, 0), EINVAL);
    ck_assert_int_eq(nursery_dump(NULL, NURSERY_DUMP_JSON), EINVAL);
    int rc = -1;
    size_t len = 0;
    unsigned bad_flags[] = {0x2u, 0x80u, NURSERY_DUMP_JSON | 0x4u, ~0u};
    for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
        char *text = dump_capture(bad_flags[i], &rc, &len);
        ck_assert_msg(rc == EINVAL, "flags %#x: %d", bad_flags[i], rc);
        free(text);
    }

    /* Something to write: a pool and a nursery. */
    nursery_pool_t *p = test_pool(1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "unwritten"), 0);

    /* A stream that cannot be written. */
    FILE *ro = fopen("/dev/null", "r");
    ck_assert_ptr_nonnull(ro);
    ck_assert_int_eq(nursery_dump(ro, 0), EIO);
    clearerr(ro);
    ck_assert_int_eq(nursery_dump(ro, NURSERY_DUMP_JSON), EIO);
    fclose(ro);

    /* A device that is always full, unbuffered: every write fails. */
    FILE *full = fopen("/dev/full", "w");
    if (full != NULL) {
        ck_assert_int_eq(setvbuf(full, NULL, _IONBF, 0), 0);
        ck_assert_int_eq(nursery_dump(full, 0), EIO);
        clearerr(full);
        ck_assert_int_eq(nursery_dump(full, NURSERY_DUMP_JSON), EIO);
        fclose(full);
    } else {
        printf("dump_rejects_bad_arguments_and_reports_write_errors: no /dev/full\n");
    }

    /* The same state dumps fine to a stream that works. */
    char *text = dump_capture(0, &rc, &len);
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(strstr(text, "name=\"unwritten\""));
    free(text);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    destroy_pool(p);
}
END_TEST

/* ---- A dump racing tasks that start and end ------------------------------------ */

#define RACE_ROUNDS 1000

struct racer {
    atomic_bool stop;
    latch_t first; /* the first dump is done */
    long dumps;
    char err[4096];
};

static const char *const race_tasks[] = {"t0", "t1", "nest", "leaf", NULL};
static const char *const race_nurseries[] = {"round", "inner", NULL};

/* Checks a text dump of the race: well formed, and every name one that
 * was given (a name read after it was freed would not be). */
static bool race_check_text(const char *text, size_t len, char *err, size_t errlen)
{
    struct dump d;
    bool ok = dump_parse(&d, text, len, err, errlen) && dump_check(&d, true, err, errlen);
    for (size_t i = 0; ok && i < d.n; i++) {
        const struct dline *l = &d.l[i];
        const char *name = fv(l, "name");
        if (kind_is(l, "task") && name && !one_of(name, race_tasks))
            ok = errf(err, errlen, "line %zu: a task named \"%s\"", i + 1, name);
        if (kind_is(l, "nursery") && name && !one_of(name, race_nurseries))
            ok = errf(err, errlen, "line %zu: a nursery named \"%s\"", i + 1, name);
        if (kind_is(l, "pool") && !fis(l, "name", "racep"))
            ok = errf(err, errlen, "line %zu: a pool not named racep", i + 1);
    }
    dump_free(&d);
    return ok;
}

static bool race_check_json(const char *text, size_t len, char *err, size_t errlen)
{
    struct jv root;
    if (!json_parse(&root, text, len, err, errlen))
        return false;
    bool ok = json_check(&root, err, errlen);
    const struct jv *tasks = jget(&root, "tasks");
    for (size_t i = 0; ok && i < tasks->n; i++) {
        const char *name = jstr(&tasks->v[i], "name");
        if (name && !one_of(name, race_tasks))
            ok = errf(err, errlen, "a task named \"%s\"", name);
    }
    jfree(&root);
    return ok;
}

static void *race_dumper(void *arg)
{
    struct racer *r = arg;
    while (!atomic_load(&r->stop) && r->err[0] == '\0') {
        unsigned flags = r->dumps % 2 ? NURSERY_DUMP_JSON : 0;
        int rc = -1;
        size_t len = 0;
        char *text = dump_capture(flags, &rc, &len);
        char err[256] = "";
        bool ok = text != NULL && rc == 0 &&
                  (flags ? race_check_json(text, len, err, sizeof(err))
                         : race_check_text(text, len, err, sizeof(err)));
        if (!ok)
            snprintf(r->err, sizeof(r->err), "dump %ld (%s): rc %d: %s\n%.3000s", r->dumps,
                     flags ? "JSON" : "text", rc, err, text ? text : "");
        free(text);
        if (r->dumps++ == 0)
            latch_count_down(&r->first);
    }
    latch_count_down(&r->first); /* also when the first one failed */
    return NULL;
}

static int race_nest(void *arg, void **value)
{
    (void)value;
    nursery_t *n = NULL;
    int rc = nursery_open(&n, arg);
    if (rc != 0)
        return rc;
    nursery_set_name(n, "inner");
    nursery_task_options_t o = {.name = "leaf"};
    static atomic_int leaves;
    rc = nursery_start_soon(n, count_task, &leaves, &o);
    int join_rc = nursery_join(n, NURSERY_FOREVER, NULL);
    return rc ? rc : join_rc;
}

START_TEST(dump_races_tasks_that_start_and_end)
{
    nursery_pool_options_t o = {.threads = 2, .name = "racep"};
    nursery_pool_t *p = NULL;
    ck_assert_int_eq(nursery_pool_create(&p, &o), 0);
    struct racer r = {.dumps = 0};
    atomic_init(&r.stop, false);
    latch_init(&r.first, 1);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, race_dumper, &r), 0);
    ck_assert(latch_wait(&r.first));

    atomic_int count = 0;
    nursery_task_options_t o0 = {.name = "t0"}, o1 = {.name = "t1"}, on = {.name = "nest"};
    for (int i = 0; i < RACE_ROUNDS; i++) {
        nursery_t *n = NULL;
        ck_assert_int_eq(nursery_open(&n, p), 0);
        ck_assert_int_eq(nursery_set_name(n, "round"), 0);
        ck_assert_int_eq(nursery_start_soon(n, count_task, &count, &o0), 0);
        ck_assert_int_eq(nursery_start_soon(n, count_task, &count, &o1), 0);
        ck_assert_int_eq(nursery_start_soon(n, race_nest, p, &on), 0);
        ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    }
    atomic_store(&r.stop, true);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_msg(r.err[0] == '\0', "%s", r.err);
    ck_assert_int_gt(r.dumps, 1);
    ck_assert_int_eq(atomic_load(&count), 2 * RACE_ROUNDS);
    latch_destroy(&r.first);
    destroy_pool(p);
}
END_TEST

/* ---- Dumping on a signal ---------------------------------------------------------- */

START_TEST(dump_on_signal_rejects_signals_it_cannot_catch)
{
    ck_assert_int_eq(nursery_dump_on_signal(SIGKILL), EINVAL);
    ck_assert_int_eq(nursery_dump_on_signal(SIGSTOP), EINVAL);
    ck_assert_int_eq(nursery_dump_on_signal(-1), EINVAL);
    ck_assert_int_eq(nursery_dump_on_signal(NSIG), EINVAL);
    ck_assert_int_eq(nursery_dump_on_signal(100000), EINVAL);
    /* Nothing changed: stopping is still fine. */
    ck_assert_int_eq(nursery_dump_on_signal(0), 0);
}
END_TEST

static atomic_int usr1_seen;

static void count_usr1(int signo)
{
    (void)signo;
    atomic_fetch_add(&usr1_seen, 1);
}

static void (*handler_of(int signo))(int)
{
    struct sigaction sa;
    ck_assert_int_eq(sigaction(signo, NULL, &sa), 0);
    return sa.sa_handler;
}

/* fd 2 into a temporary file, for the dump thread's stderr. */
struct stderr_capture {
    int saved;
    int fd;
};

static void stderr_capture_start(struct stderr_capture *c)
{
    char path[] = "/tmp/test_dump.XXXXXX";
    c->fd = mkstemp(path);
    ck_assert_int_ge(c->fd, 0);
    unlink(path);
    fflush(stderr);
    c->saved = dup(2);
    ck_assert_int_ge(c->saved, 0);
    ck_assert_int_eq(dup2(c->fd, 2), 2);
}

static void stderr_capture_stop(struct stderr_capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
}

/* What the file holds now (malloc'd, NUL-terminated). */
static char *captured(const struct stderr_capture *c)
{
    struct stat sb;
    if (fstat(c->fd, &sb) != 0)
        return NULL;
    char *buf = calloc((size_t)sb.st_size + 1, 1);
    if (buf == NULL)
        return NULL;
    ssize_t got = pread(c->fd, buf, (size_t)sb.st_size, 0);
    buf[got > 0 ? got : 0] = '\0';
    return buf;
}

/* Polls the captured stderr until it holds a whole dump that ends with
 * the line of the task named `last` (up to DUMP_WAIT_MS).  Returns that
 * text, or the last look when it never did. */
static char *wait_for_signal_dump(const struct stderr_capture *c, const char *last, bool *found)
{
    char pid_line[64], task[64];
    snprintf(pid_line, sizeof(pid_line), "dump pid=%ld ", (long)getpid());
    snprintf(task, sizeof(task), " name=\"%s\" ", last);
    nursery_time_t give_up = nursery_after_ms(DUMP_WAIT_MS);
    for (;;) {
        char *text = captured(c);
        const char *start = text ? strstr(text, pid_line) : NULL;
        const char *t = start ? strstr(start, task) : NULL;
        *found = t != NULL && strchr(t, '\n') != NULL && (start == text || start[-1] == '\n');
        if (*found || nursery_now() >= give_up)
            return text;
        free(text);
        pause_ms(5);
    }
}

static const struct expect signal_waits[] = {{"sig_task", "result"}, {NULL, NULL}};

/* Whether a thread of this process is named `name` (Linux: its comm;
 * elsewhere, true). */
static bool thread_named(const void *ctx)
{
#ifdef __linux__
    const char *name = ctx;
    bool found = false;
    DIR *dir = opendir("/proc/self/task");
    if (dir == NULL)
        return false;
    struct dirent *e;
    while (!found && (e = readdir(dir)) != NULL) {
        char path[300], comm[32] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f && fgets(comm, sizeof(comm), f))
            found = strncmp(comm, name, strlen(name)) == 0 && comm[strlen(name)] == '\n';
        if (f)
            fclose(f);
    }
    closedir(dir);
    return found;
#else
    (void)ctx;
    return true;
#endif
}

START_TEST(dump_on_signal_writes_to_stderr_and_restores_the_handler)
{
    atomic_init(&usr1_seen, 0);
    ck_assert(signal(SIGUSR1, count_usr1) != SIG_ERR);

    nursery_pool_t *p = test_pool(2);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "sig"), 0);
    struct gated g;
    gated_init(&g, 1);
    nursery_task_options_t o = {.name = "sig_task"};
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, &o), 0);
    ck_assert(latch_wait(&g.running));
    struct dump d;
    char *text;
    ck_assert_msg(dump_wait(&d, &text, tasks_show, signal_waits), "sig_task never blocked:\n%s",
                  text);
    dump_free(&d);
    free(text);

    ck_assert_int_eq(nursery_dump_on_signal(SIGUSR1), 0);
    ck_assert(handler_of(SIGUSR1) != count_usr1);
    ck_assert(handler_of(SIGUSR1) != SIG_DFL);
    /* The dump thread runs from now on, named as the header says. */
    ck_assert_msg(poll_until(thread_named, "nursery-dump"), "no thread named nursery-dump");

    struct stderr_capture c;
    stderr_capture_start(&c);
    raise(SIGUSR1);
    bool found = false;
    text = wait_for_signal_dump(&c, "sig_task", &found);
    stderr_capture_stop(&c);
    ck_assert_msg(found, "no dump on stderr after SIGUSR1; stderr had:\n%s", text ? text : "");
    ck_assert_int_eq(atomic_load(&usr1_seen), 0);

    /* What the signal wrote is a dump like any other. */
    char pid_line[64];
    snprintf(pid_line, sizeof(pid_line), "dump pid=%ld ", (long)getpid());
    const char *start = strstr(text, pid_line);
    const char *end = strstr(start, " name=\"sig_task\" ");
    end = strchr(end, '\n') + 1;
    dump_parse_checked(&d, start, (size_t)(end - start));
    int task = find_line(&d, "task", "name", "sig_task");
    ck_assert_int_ge(task, 0);
    ck_assert_str_eq(fv(&d.l[task], "blocked_in"), "result");
    ck_assert_int_ge(find_line(&d, "nursery", "name", "sig"), 0);
    dump_free(&d);
    free(text);
    close(c.fd);

    /* Another signal gives SIGUSR1 its handler back; 0 stops. */
    void (*before_usr2)(int) = handler_of(SIGUSR2);
    ck_assert_int_eq(nursery_dump_on_signal(SIGUSR2), 0);
    ck_assert(handler_of(SIGUSR1) == count_usr1);
    ck_assert(handler_of(SIGUSR2) != before_usr2);
    ck_assert_int_eq(nursery_dump_on_signal(0), 0);
    ck_assert(handler_of(SIGUSR2) == before_usr2);
    raise(SIGUSR1);
    ck_assert_int_eq(atomic_load(&usr1_seen), 1);

    gate_open(g.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    gated_fini(&g);
    destroy_pool(p);
}
END_TEST

START_TEST(dump_signal_from_the_environment)
{
    const char *fork_mode = getenv("CK_FORK");
    if (fork_mode && strcmp(fork_mode, "no") == 0) {
        printf("dump_signal_from_the_environment: skipped with CK_FORK=no (a pool was made "
               "before)\n");
        return;
    }
    ck_assert(handler_of(SIGUSR2) == SIG_DFL);
    ck_assert_int_eq(setenv("NURSERY_DUMP_SIGNAL", "USR2", 1), 0);
    nursery_pool_t *p = test_pool(1); /* the process's first pool */
    ck_assert(handler_of(SIGUSR2) != SIG_DFL);

    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "from_env"), 0);
    struct stderr_capture c;
    stderr_capture_start(&c);
    raise(SIGUSR2);
    char pid_line[64];
    snprintf(pid_line, sizeof(pid_line), "dump pid=%ld ", (long)getpid());
    nursery_time_t give_up = nursery_after_ms(DUMP_WAIT_MS);
    char *text = NULL;
    bool found = false;
    while (!found && nursery_now() < give_up) {
        free(text);
        text = captured(&c);
        const char *nl = text ? strstr(text, " name=\"from_env\" ") : NULL;
        found = text && strstr(text, pid_line) && nl && strchr(nl, '\n');
        if (!found)
            pause_ms(5);
    }
    stderr_capture_stop(&c);
    close(c.fd);
    ck_assert_msg(found, "no dump on stderr after SIGUSR2; stderr had:\n%s", text ? text : "");
    free(text);

    ck_assert_int_eq(nursery_dump_on_signal(0), 0);
    ck_assert(handler_of(SIGUSR2) == SIG_DFL);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    destroy_pool(p);
    unsetenv("NURSERY_DUMP_SIGNAL");
}
END_TEST

/* ---- In the child of a fork ------------------------------------------------------ */

/* Whether the dump of the child's text (a memory stream) has `needle`. */
static bool child_dump_has(const char *text, const char *needle)
{
    return text && strstr(text, needle) != NULL;
}

/* The parent's pool, nursery and blocked task are there in the child's
 * memory, and their locks may be held by threads that are not: the dump
 * must not take them.  The pool is shown as forked, the parent's nursery
 * and task not at all, and the dump returns at once (the child's alarm
 * would kill it otherwise). */
START_TEST(dump_in_fork_child_leaves_the_parents_objects)
{
    nursery_pool_t *p = test_pool(2);
    struct gated g;
    gated_init(&g, 1);
    nursery_t *n = NULL;
    ck_assert_int_eq(nursery_open(&n, p), 0);
    ck_assert_int_eq(nursery_set_name(n, "parent_nursery"), 0);
    nursery_task_options_t o = {.name = "parent_task"};
    ck_assert_int_eq(nursery_start_soon(n, gated_task, &g, &o), 0);
    ck_assert(latch_wait(&g.running));

    pid_t pid = fork_child(10);
    if (pid == 0) {
        int rc;
        size_t len;
        char *text = dump_capture(0, &rc, &len);
        nursery_counts_t c;
        int step = 0;
        if (rc != 0)
            step = 1;
        else if (!child_dump_has(text, "dump pid=") || !child_dump_has(text, " forked=yes"))
            step = 2;
        else if (child_dump_has(text, "parent_nursery") || child_dump_has(text, "parent_task"))
            step = 3;
        else if (nursery_counts(n, &c) != NURSERY_EFORKED ||
                 nursery_set_name(n, "x") != NURSERY_EFORKED)
            step = 4;
        free(text);
        _exit(step);
    }
    assert_child_passed(pid);

    gate_open(g.gate);
    ck_assert_int_eq(nursery_join(n, NURSERY_FOREVER, NULL), 0);
    ck_assert_int_eq(atomic_load(&g.rc), 0);
    gated_fini(&g);
    destroy_pool(p);
}
END_TEST

/* ---- The suite ------------------------------------------------------------------ */

static Suite *dump_suite(void)
{
    Suite *s = suite_create("dump");
    ADD_CASE(s, dump_of_idle_process_is_one_line, 30);
    ADD_CASE(s, dump_shows_tree_and_every_kind_of_wait, 120);
    ADD_CASE(s, dump_shows_helped_task_under_its_own_nursery, 60);
    ADD_CASE(s, dump_shows_why_a_nursery_is_cancelled_and_its_deadline, 60);
    ADD_CASE(s, dump_json_links_threads_nurseries_and_tasks, 60);
    ADD_CASE(s, set_name_cuts_escapes_and_removes, 30);
    ADD_CASE(s, set_name_rejects_null_and_joined_nursery, 30);
    ADD_CASE(s, counts_are_exact_after_join, 60);
    ADD_CASE(s, counts_never_show_more_finished_than_started, 60);
    ADD_CASE(s, hooks_see_every_task_once_on_its_thread, 60);
    ADD_CASE(s, stats_count_threads_created_steals_and_parking, 60);
    ADD_CASE(s, stats_count_retired_surplus_threads, 120);
    ADD_CASE(s, dump_rejects_bad_arguments_and_reports_write_errors, 30);
    ADD_CASE(s, dump_races_tasks_that_start_and_end, 120);
    ADD_CASE(s, dump_on_signal_rejects_signals_it_cannot_catch, 30);
    ADD_CASE(s, dump_on_signal_writes_to_stderr_and_restores_the_handler, 60);
    ADD_CASE(s, dump_signal_from_the_environment, 60);
    ADD_CASE(s, dump_in_fork_child_leaves_the_parents_objects, 60);
    return s;
}

int main(void)
{
    return run_suite(dump_suite());
}
