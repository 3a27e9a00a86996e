/* SPDX-License-Identifier: MIT */
/*
 * buf.c - memory for npar: growable byte buffers, and allocation that
 * exits when there is no memory (a batch tool has nothing better to do:
 * the message says so, and the exit status is 255).
 */
#include "npar.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Noreturn void npar_oom(void)
{
    static const char msg[] = "npar: out of memory\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
    _exit(NPAR_EXIT_USAGE);
}

void *npar_xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    if (p == NULL)
        npar_oom();
    return p;
}

void *npar_xrealloc(void *p, size_t n)
{
    p = realloc(p, n > 0 ? n : 1);
    if (p == NULL)
        npar_oom();
    return p;
}

char *npar_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(npar_xmalloc(n), s, n);
}

/* Room for n more bytes and a terminating NUL, doubling. */
static void reserve(struct npar_buf *b, size_t n)
{
    if (n > SIZE_MAX / 2 - b->len)
        npar_oom();
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap > 0 ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->data = npar_xrealloc(b->data, cap);
    b->cap = cap;
}

void npar_buf_append(struct npar_buf *b, const char *p, size_t n)
{
    reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void npar_buf_printf(struct npar_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void npar_buf_free(struct npar_buf *b)
{
    free(b->data);
    *b = (struct npar_buf){0};
}
