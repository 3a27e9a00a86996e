/* SPDX-License-Identifier: MIT */
/*
 * input.c - where the jobs' inputs come from: the lines (or NUL-separated
 * items) of stdin or of -a FILE, read one job ahead of the runner so that a
 * stream that never ends still runs; or the ::: groups, whose cross product
 * is counted through like an odometer, the first group turning slowest.
 * Used by one thread at a time (the one that starts jobs).
 */
#include "npar.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct npar_input {
    /* Lines: the stream (NULL for groups), its separator, the last line. */
    FILE *stream;
    bool own_stream; /* opened here (-a FILE), so closed here */
    char separator;
    char *line;
    size_t line_cap;
    size_t read; /* lines read so far */
    bool ended;  /* the stream is at its end: total is known */

    /* Groups: the options' groups, the odometer, the current inputs. */
    char ***groups;
    const size_t *sizes;
    size_t ngroups;
    size_t *at;    /* at[g]: the index in group g of the next job's input */
    char **values; /* the next job's inputs, one per group */
    size_t total;  /* the product of the sizes */
    size_t given;  /* jobs handed out */
};

static int open_groups(struct npar_input *in, const struct npar_options *o)
{
    in->groups = o->groups;
    in->sizes = o->group_sizes;
    in->ngroups = o->ngroups;
    in->at = npar_xmalloc(o->ngroups * sizeof *in->at);
    in->values = npar_xmalloc(o->ngroups * sizeof *in->values);
    in->total = 1;
    for (size_t g = 0; g < o->ngroups; g++) {
        in->at[g] = 0;
        in->total =
            o->group_sizes[g] > SIZE_MAX / in->total ? SIZE_MAX : in->total * o->group_sizes[g];
    }
    return 0;
}

int npar_input_open(struct npar_input **out, const struct npar_options *o)
{
    struct npar_input *in = npar_xmalloc(sizeof *in);
    *in = (struct npar_input){.separator = o->separator};
    if (o->groups != NULL) {
        open_groups(in, o);
    } else if (o->arg_file != NULL) {
        in->stream = fopen(o->arg_file, "r");
        if (in->stream == NULL) {
            int err = errno;
            free(in);
            return err;
        }
        in->own_stream = true;
    } else {
        in->stream = stdin;
    }
    *out = in;
    return 0;
}

static int next_line(struct npar_input *in, char *const **values, size_t *n)
{
    if (in->ended)
        return NURSERY_EEND;
    errno = 0;
    ssize_t len = getdelim(&in->line, &in->line_cap, in->separator, in->stream);
    if (len < 0) {
        if (ferror(in->stream))
            return errno != 0 ? errno : EIO;
        in->ended = true;
        return NURSERY_EEND;
    }
    if (len > 0 && in->line[len - 1] == in->separator)
        in->line[len - 1] = '\0';
    in->read++;
    *values = &in->line;
    *n = 1;
    return 0;
}

static int next_product(struct npar_input *in, char *const **values, size_t *n)
{
    if (in->given == in->total)
        return NURSERY_EEND;
    for (size_t g = 0; g < in->ngroups; g++)
        in->values[g] = in->groups[g][in->at[g]];
    /* Turn the odometer: the last group fastest. */
    for (size_t g = in->ngroups; g-- > 0;) {
        if (++in->at[g] < in->sizes[g])
            break;
        in->at[g] = 0;
    }
    in->given++;
    *values = in->values;
    *n = in->ngroups;
    return 0;
}

int npar_input_next(struct npar_input *in, char *const **values, size_t *n)
{
    return in->stream != NULL ? next_line(in, values, n) : next_product(in, values, n);
}

size_t npar_input_total(const struct npar_input *in)
{
    if (in->stream != NULL)
        return in->ended ? in->read : 0;
    return in->total;
}

void npar_input_close(struct npar_input *in)
{
    if (in == NULL)
        return;
    if (in->own_stream)
        fclose(in->stream);
    free(in->line);
    free(in->at);
    free(in->values);
    free(in);
}
