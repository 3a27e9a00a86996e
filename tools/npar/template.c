/* SPDX-License-Identifier: MIT */
/*
 * template.c - a job's command: the template's words with their
 * replacement strings ({} {.} {/} {//} {/.} {#} and {N...} for the N-th
 * ::: group) replaced by the job's inputs, or the inputs appended when no
 * word has one.  Without --shell the words are the argv, untouched by any
 * shell; with it they are joined into one string for /bin/sh -c, every
 * replaced value quoted so that the shell reads it back as it was.
 */
#include "npar.h"

#include <stdlib.h>
#include <string.h>

/* What a replacement string takes from its input. */
enum part {
    PART_WHOLE,       /* {} */
    PART_NO_EXT,      /* {.} */
    PART_BASE,        /* {/} */
    PART_DIR,         /* {//} */
    PART_BASE_NO_EXT, /* {/.} */
};

struct replacement {
    size_t length; /* of the string in the word, braces included */
    bool seq;      /* {#} */
    size_t group;  /* 1-based {N}, 0 for all groups */
    enum part part;
};

/* Whether s starts with a replacement string, and which. */
static bool parse_replacement(const char *s, struct replacement *r)
{
    static const struct {
        const char *text;
        enum part part;
    } parts[] = {
        {"}", PART_WHOLE}, {".}", PART_NO_EXT},       {"/}", PART_BASE},
        {"//}", PART_DIR}, {"/.}", PART_BASE_NO_EXT},
    };
    if (s[0] != '{')
        return false;
    if (strncmp(s, "{#}", 3) == 0) {
        *r = (struct replacement){.length = 3, .seq = true};
        return true;
    }
    const char *p = s + 1;
    size_t group = 0;
    while (*p >= '0' && *p <= '9' && group < 100000)
        group = group * 10 + (size_t)(*p++ - '0');
    if (p > s + 1 && group == 0)
        return false; /* {0}: not a group */
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i].text);
        if (strncmp(p, parts[i].text, n) == 0) {
            *r = (struct replacement){(size_t)(p + n - s), false, group, parts[i].part};
            return true;
        }
    }
    return false;
}

/* The part of one input a replacement takes, appended (quoted for the
 * shell when asked). */
static void append_part(struct npar_buf *b, const char *value, enum part part, bool quote)
{
    const char *slash = strrchr(value, '/');
    const char *base = slash != NULL ? slash + 1 : value;
    const char *start = value;
    size_t len = strlen(value);
    if (part == PART_BASE || part == PART_BASE_NO_EXT) {
        start = base;
        len = strlen(base);
    } else if (part == PART_DIR) {
        if (slash == NULL) {
            start = ".";
            len = 1;
        } else {
            len = slash == value ? 1 : (size_t)(slash - value);
        }
    }
    if (part == PART_NO_EXT || part == PART_BASE_NO_EXT) {
        const char *dot = strrchr(base, '.');
        /* A leading dot is a hidden file's name, not an extension. */
        if (dot != NULL && dot != base)
            len = (size_t)(dot - start);
    }
    if (!quote) {
        npar_buf_append(b, start, len);
        return;
    }
    char *piece = npar_xmalloc(len + 1);
    memcpy(piece, start, len);
    piece[len] = '\0';
    npar_shell_quote(b, piece);
    free(piece);
}

struct expansion {
    char *const *values; /* the job's inputs, one per group */
    size_t n;
    size_t seq;
    bool quote;    /* --shell: quote what is put in */
    bool replaced; /* a replacement string was seen */
};

static void append_replacement(struct npar_buf *b, const struct replacement *r, struct expansion *e)
{
    e->replaced = true;
    if (r->seq) {
        npar_buf_printf(b, "%zu", e->seq);
    } else if (r->group == 0) {
        for (size_t g = 0; g < e->n; g++) {
            if (g > 0)
                npar_buf_append(b, " ", 1);
            append_part(b, e->values[g], r->part, e->quote);
        }
    } else if (r->group <= e->n) {
        append_part(b, e->values[r->group - 1], r->part, e->quote);
    }
    /* {N} beyond the groups there are: replaced by nothing, as GNU parallel does. */
}

static void expand_word(struct npar_buf *b, const char *word, struct expansion *e)
{
    const char *p = word;
    while (*p != '\0') {
        struct replacement r;
        const char *brace = strchr(p, '{');
        if (brace == NULL) {
            npar_buf_append(b, p, strlen(p));
            return;
        }
        npar_buf_append(b, p, (size_t)(brace - p));
        if (parse_replacement(brace, &r)) {
            append_replacement(b, &r, e);
            p = brace + r.length;
        } else {
            npar_buf_append(b, brace, 1);
            p = brace + 1;
        }
    }
}

void npar_shell_quote(struct npar_buf *b, const char *word)
{
    static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789_@%+=:,./-";
    if (word[0] != '\0' && word[strspn(word, safe)] == '\0') {
        npar_buf_append(b, word, strlen(word));
        return;
    }
    npar_buf_append(b, "'", 1);
    for (const char *p = word; *p != '\0'; p++) {
        if (*p == '\'')
            npar_buf_append(b, "'\\''", 4);
        else
            npar_buf_append(b, p, 1);
    }
    npar_buf_append(b, "'", 1);
}

static char *take(struct npar_buf *b)
{
    char *s = b->data != NULL ? b->data : npar_xstrdup("");
    *b = (struct npar_buf){0};
    return s;
}

/* --shell: one string for /bin/sh -c. */
static void build_shell(struct npar_job *j, const struct npar_options *o, struct expansion *e)
{
    struct npar_buf cmd = {0};
    for (size_t i = 0; i < o->nwords; i++) {
        if (i > 0)
            npar_buf_append(&cmd, " ", 1);
        expand_word(&cmd, o->words[i], e);
    }
    if (!e->replaced) {
        for (size_t g = 0; g < e->n; g++) {
            npar_buf_append(&cmd, " ", 1);
            npar_shell_quote(&cmd, e->values[g]);
        }
    }
    j->argv = npar_xmalloc(4 * sizeof *j->argv);
    j->argv[0] = npar_xstrdup("/bin/sh");
    j->argv[1] = npar_xstrdup("-c");
    j->argv[2] = take(&cmd);
    j->argv[3] = NULL;
    j->command = npar_xstrdup(j->argv[2]);
}

/* No shell: the words are the argv; the command shows them quoted. */
static void build_argv(struct npar_job *j, const struct npar_options *o, struct expansion *e)
{
    size_t argc = o->nwords;
    j->argv = npar_xmalloc((argc + e->n + 1) * sizeof *j->argv);
    for (size_t i = 0; i < o->nwords; i++) {
        struct npar_buf word = {0};
        expand_word(&word, o->words[i], e);
        j->argv[i] = take(&word);
    }
    if (!e->replaced) {
        for (size_t g = 0; g < e->n; g++)
            j->argv[argc++] = npar_xstrdup(e->values[g]);
    }
    j->argv[argc] = NULL;
    struct npar_buf shown = {0};
    for (size_t i = 0; i < argc; i++) {
        if (i > 0)
            npar_buf_append(&shown, " ", 1);
        npar_shell_quote(&shown, j->argv[i]);
    }
    j->command = take(&shown);
}

struct npar_job *npar_job_new(const struct npar_options *o, size_t seq, char *const *values,
                              size_t n)
{
    struct npar_job *j = npar_xmalloc(sizeof *j);
    *j = (struct npar_job){.seq = seq, .pid = -1};
    struct expansion e = {.values = values, .n = n, .seq = seq, .quote = o->shell};
    if (o->shell)
        build_shell(j, o, &e);
    else
        build_argv(j, o, &e);
    return j;
}

void npar_job_free(void *job)
{
    struct npar_job *j = job;
    if (j == NULL)
        return;
    for (char **a = j->argv; *a != NULL; a++)
        free(*a);
    free(j->argv);
    free(j->command);
    npar_buf_free(&j->out);
    npar_buf_free(&j->err);
    free(j);
}
