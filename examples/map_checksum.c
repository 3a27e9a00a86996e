/* SPDX-License-Identifier: MIT */
/*
 * map_checksum.c - a bounded parallel map: checksums every file under a
 * directory with at most K files in flight, printed in path order.
 *
 *     map_checksum [-j K] [DIR]
 *
 * DIR defaults to /usr/share/doc (at most 2000 files are read).  The paths
 * are collected first, then nursery_map() runs the checksum of each as a
 * task, at most K at once (default 8): however many files there are, only
 * K tasks exist at a time.  Its outcomes come back in input order, so the
 * output is in path order whatever order the files finished in.  The tasks
 * run with NURSERY_RETURN_ERRORS: an unreadable file is reported on stderr
 * and does not stop the others.  While it runs, a progress line
 * ("checksummed 812/2000 files") is redrawn on stderr, at most ten times a
 * second, when stderr is a terminal.
 *
 * Exits 0 when the map ran (unreadable files are reported, not fatal), 1
 * when it could not, 2 for a usage error.
 */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* nftw() */
#endif

#include <nursery.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILES 2000

/* nftw() gives its callback no pointer of ours. */
static char *paths[MAX_FILES];
static size_t npaths;

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type != FTW_F)
        return 0;
    if (npaths == MAX_FILES)
        return 1; /* enough: stop the walk */
    if (!(paths[npaths] = strdup(path)))
        return -1;
    npaths++;
    return 0;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The task: FNV-1a over the file's bytes.  The value is the checksum
 * itself, carried in the void * (64 bits on the platforms this runs on). */
static int checksum(void *arg, void **value)
{
    const char *path = arg;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return nursery_fail(errno, "cannot open %s: %s", path, strerror(errno));
    uint64_t h = UINT64_C(14695981039346656037);
    unsigned char buf[65536];
    ssize_t got;
    while ((got = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < got; i++)
            h = (h ^ buf[i]) * UINT64_C(1099511628211);
    int err = got < 0 ? errno : 0;
    close(fd);
    if (err)
        return nursery_fail(err, "cannot read %s: %s", path, strerror(err));
    *value = (void *)(uintptr_t)h;
    return 0;
}

/* Called in the main thread as files complete. */
static void progress(void *ctx, size_t done, size_t total)
{
    nursery_time_t *next_draw = ctx;
    if (done < total && nursery_now() < *next_draw)
        return;
    *next_draw = nursery_after_ms(100);
    fprintf(stderr, "\rchecksummed %zu/%zu files", done, total);
    if (done == total)
        fputc('\n', stderr);
}

int main(int argc, char **argv)
{
    size_t jobs = 8;
    int opt;
    while ((opt = getopt(argc, argv, "j:h")) != -1) {
        char *end;
        if (opt == 'j' && (jobs = strtoul(optarg, &end, 10)) > 0 && *end == '\0')
            continue;
        fprintf(stderr, "usage: map_checksum [-j K] [DIR]  (K > 0)\n");
        return 2;
    }
    const char *dir = optind < argc ? argv[optind] : "/usr/share/doc";
    if (nftw(dir, collect, 16, FTW_PHYS) == -1) {
        fprintf(stderr, "map_checksum: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    qsort(paths, npaths, sizeof paths[0], by_path);

    static nursery_outcome_t outcomes[MAX_FILES];
    nursery_time_t next_draw = 0;
    nursery_map_options_t opts = {
        .limit = jobs,
        .flags = NURSERY_RETURN_ERRORS,
        .progress = isatty(STDERR_FILENO) ? progress : NULL,
        .progress_ctx = &next_draw,
    };
    int rc = nursery_map(NULL, checksum, (void *const *)paths, npaths, &opts, outcomes, NULL);
    int status = 0;
    if (rc) {
        fprintf(stderr, "map_checksum: %s\n", nursery_strerror(rc));
        status = 1;
    }
    for (size_t i = 0; rc == 0 && i < npaths; i++) {
        if (outcomes[i].code == 0)
            printf("%016jx  %s\n", (uintmax_t)(uintptr_t)outcomes[i].value, paths[i]);
        else
            fprintf(stderr, "map_checksum: %s\n", nursery_error_message(outcomes[i].error));
    }
    nursery_outcomes_release(outcomes, rc == 0 ? npaths : 0);
    for (size_t i = 0; i < npaths; i++)
        free(paths[i]);
    return status;
}
