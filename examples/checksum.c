/* SPDX-License-Identifier: MIT */
/*
 * checksum.c - the demo: a batch tool that checksums every file under a
 * directory, with one task per file.
 *
 *     checksum [-v] [DIR]        (DIR defaults to /usr/share/doc)
 *
 * This is the work the library is for: many small jobs that block (open,
 * read in 64 KiB blocks, close) and burn some CPU (FNV-1a over every byte).
 * Every regular file under DIR becomes a task of one nursery on the default
 * pool, started with nursery_capture_start_soon() and named after its path.
 * A file that cannot be read fails its task with a message; the tasks are
 * started with NURSERY_TASK_SUPPRESS_ERROR, so that failure is kept in the
 * task's result and reported, instead of cancelling the other files.  While
 * the files are hashed, the main thread joins with a short deadline and
 * shows progress between attempts.
 *
 * Then the same checksums are computed again, one file after the other in
 * the main thread: both runs must agree, and their times give the speed-up.
 * Each run starts with the files dropped from the page cache, so that both
 * read from the disk, as a first run does (otherwise the parallel run would
 * warm the cache for the sequential one).
 *
 * Prints "checksum  path" in path order (only the first 20 without -v), the
 * unreadable files on stderr, and a summary over all files.  Symbolic links
 * are not followed; at most 20000 files are read, to keep the demo quick.
 * Exits 0 on success (unreadable files are reported, not fatal), 1 when the
 * runs disagree or something else failed, 2 for a usage error.
 */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* nftw() */
#endif

#include <nursery.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_DIR "/usr/share/doc"
#define MAX_FILES 20000
#define SHOWN_LINES 20
#define BLOCK_SIZE (64 * 1024)

struct file {
    char *path;               /* owned; also the name of its task */
    nursery_result_t *result; /* outcome of its task; NULL once read, or if never started */
    uint64_t sum;             /* FNV-1a of the contents: written by the task, read after join */
    uint64_t bytes;           /* bytes read: likewise */
    int error;                /* 0, or the code its task failed with (set after join) */
};

/* What the walk found.  nftw() gives its callback no pointer of ours, hence
 * a static; only the main thread touches it. */
static struct {
    struct file *files;
    size_t count, capacity;
    bool truncated; /* there were more than MAX_FILES files */
    size_t skipped; /* entries nftw() could not list or stat */
    int error;      /* ENOMEM if collecting failed */
} walk;

/* Files finished, counted by the tasks for the progress line.  Relaxed is
 * enough: it is only a number to show; join orders everything else. */
static atomic_size_t hashed;

/* ------------------------------------------------------------------------ */
/* Hashing one file: plain blocking I/O, shared by both runs                */
/* ------------------------------------------------------------------------ */

/* FNV-1a, 64 bits, of the file's contents.  Returns 0, or an errno value
 * with *what naming the call that failed. */
static int hash_file(const char *path, unsigned char *buf, uint64_t *sum, uint64_t *bytes,
                     const char **what)
{
    uint64_t h = 0xcbf29ce484222325u, n = 0;

    /* O_NONBLOCK: should a FIFO have taken the file's place since the walk,
     * don't hang on it (it changes nothing for a regular file). */
    *what = "open";
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno;

    *what = "read";
    for (;;) {
        ssize_t got = read(fd, buf, BLOCK_SIZE);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int err = errno;
            close(fd);
            return err;
        }
        if (got == 0)
            break;
        for (ssize_t i = 0; i < got; i++) {
            h ^= buf[i];
            h *= 0x100000001b3u;
        }
        n += (uint64_t)got;
    }
    close(fd);
    *sum = h;
    *bytes = n;
    return 0;
}

/* The task.  Its outcome is all in the record and the error; no value. */
static int hash_task(void *arg, void **value)
{
    (void)value;
    struct file *f = arg;
    const char *what = "malloc";
    int rc = ENOMEM;

    /* On the heap, not the stack: pool threads may have been given small
     * stacks (nursery_pool_options_t.stack_size). */
    unsigned char *buf = malloc(BLOCK_SIZE);
    if (buf != NULL) {
        rc = hash_file(f->path, buf, &f->sum, &f->bytes, &what);
        free(buf);
    }
    atomic_fetch_add_explicit(&hashed, 1, memory_order_relaxed);
    if (rc != 0)
        return nursery_fail(rc, "%s: %s", what, nursery_strerror(rc));
    return 0;
}

/* Asks the kernel to drop the file's cached pages, so that the next read
 * goes to the disk.  Best effort: some filesystems keep them anyway. */
static void uncache(const char *path)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0) {
        (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

/* ------------------------------------------------------------------------ */
/* Finding the files                                                        */
/* ------------------------------------------------------------------------ */

static int collect(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type == FTW_DNR || type == FTW_NS) {
        walk.skipped++;
        return 0;
    }
    /* FTW_PHYS reports symbolic links as FTW_SL: skipped with the rest. */
    if (type != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    if (walk.count == MAX_FILES) {
        walk.truncated = true;
        return 1; /* stops the walk */
    }
    if (walk.count == walk.capacity) {
        size_t capacity = walk.capacity ? 2 * walk.capacity : 1024;
        struct file *files = realloc(walk.files, capacity * sizeof *files);
        if (files == NULL)
            goto nomem;
        walk.files = files;
        walk.capacity = capacity;
    }
    char *copy = strdup(path);
    if (copy == NULL)
        goto nomem;
    walk.files[walk.count++] = (struct file){.path = copy};
    return 0;

nomem:
    walk.error = ENOMEM;
    return 1;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const struct file *)a)->path, ((const struct file *)b)->path);
}

static void free_files(void)
{
    for (size_t i = 0; i < walk.count; i++) {
        nursery_result_release(walk.files[i].result);
        free(walk.files[i].path);
    }
    free(walk.files);
}

/* ------------------------------------------------------------------------ */
/* The parallel run                                                         */
/* ------------------------------------------------------------------------ */

/* Hashes every file, one task each; returns 0 when every task ran (some
 * may have failed: that is in their results), 1 otherwise. */
static int hash_in_parallel(void)
{
    nursery_errors_t *errors = NULL;
    nursery_t *n;
    int status = 0;

    int rc = nursery_open(&n, NULL);
    if (rc != 0) {
        fprintf(stderr, "checksum: nursery_open: %s\n", nursery_strerror(rc));
        return 1;
    }
    for (size_t i = 0; i < walk.count; i++) {
        struct file *f = &walk.files[i];
        nursery_task_options_t opts = {.name = f->path, .flags = NURSERY_TASK_SUPPRESS_ERROR};
        rc = nursery_capture_start_soon(n, hash_task, f, &opts, &f->result);
        if (rc != 0) {
            fprintf(stderr, "checksum: starting a task for %s: %s\n", f->path,
                    nursery_strerror(rc));
            nursery_cancel(n); /* a partial run is no use: stop the rest */
            status = 1;
            break;
        }
    }

    /* A join that times out changes nothing (the tasks keep running), so a
     * short deadline gives the main thread a moment to show progress. */
    bool tty = isatty(STDERR_FILENO);
    do {
        rc = nursery_join(n, nursery_after_ms(250), &errors);
        if (tty)
            fprintf(stderr, "\rhashed %zu/%zu files", atomic_load(&hashed), walk.count);
    } while (rc == ETIMEDOUT);
    fprintf(stderr, "%shashed %zu/%zu files\n", tty ? "\r" : "", atomic_load(&hashed), walk.count);

    if (rc != 0) {
        /* Suppressed errors never get here: this is something else. */
        fprintf(stderr, "checksum: join: %s\n", nursery_strerror(rc));
        for (size_t i = 0; i < nursery_errors_count(errors); i++)
            fprintf(stderr, "checksum:   %s\n",
                    nursery_error_message(nursery_errors_get(errors, i)));
        status = 1;
    }
    nursery_errors_free(errors);
    return status;
}

/* ------------------------------------------------------------------------ */

static int usage(void)
{
    fprintf(stderr,
            "usage: checksum [-v] [DIR]\n"
            "  Checksums every regular file under DIR (default " DEFAULT_DIR ")\n"
            "  in parallel, then sequentially, and compares the two runs.\n"
            "  -v  print every file, not only the first %d\n",
            SHOWN_LINES);
    return 2;
}

static double seconds_since(nursery_time_t start)
{
    return (double)(nursery_now() - start) / 1e9;
}

int main(int argc, char **argv)
{
    bool verbose = false;
    int opt;

    while ((opt = getopt(argc, argv, "v")) != -1) {
        if (opt != 'v')
            return usage();
        verbose = true;
    }
    if (argc - optind > 1)
        return usage();
    const char *dir = optind < argc ? argv[optind] : DEFAULT_DIR;

    /* Find the files, then sort them: the output is in path order whatever
     * order the tasks finish in. */
    if (nftw(dir, collect, 32, FTW_PHYS) == -1) {
        fprintf(stderr, "checksum: %s: %s\n", dir, nursery_strerror(errno));
        free_files();
        return 1;
    }
    if (walk.error != 0) {
        fprintf(stderr, "checksum: %s: %s\n", dir, nursery_strerror(walk.error));
        free_files();
        return 1;
    }
    if (walk.truncated)
        fprintf(stderr, "checksum: more than %d files under %s: only the first %d found are read\n",
                MAX_FILES, dir, MAX_FILES);
    if (walk.skipped != 0)
        fprintf(stderr, "checksum: skipped %zu unreadable directories or entries under %s\n",
                walk.skipped, dir);
    if (walk.count != 0)
        qsort(walk.files, walk.count, sizeof *walk.files, by_path);

    for (size_t i = 0; i < walk.count; i++)
        uncache(walk.files[i].path);
    nursery_time_t start = nursery_now();
    int status = hash_in_parallel();
    double parallel = seconds_since(start);

    /* Report in path order, and let each result go once it is read. */
    size_t failed = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < walk.count; i++) {
        struct file *f = &walk.files[i];
        nursery_error_t *err = NULL;

        if (f->result == NULL || nursery_result_error(f->result, &err) != 0) {
            f->error = ECANCELED; /* never started: hash_in_parallel() said why */
        } else if (err != NULL) {
            f->error = nursery_error_code(err);
            if (verbose || failed < SHOWN_LINES)
                fprintf(stderr, "checksum: %s: %s\n", f->path, nursery_error_message(err));
            failed++;
        } else {
            bytes += f->bytes;
            if (verbose || i < SHOWN_LINES)
                printf("%016" PRIx64 "  %s\n", f->sum, f->path);
        }
        nursery_result_release(f->result);
        f->result = NULL;
    }
    if (!verbose && walk.count > SHOWN_LINES)
        printf("... and %zu more files (-v lists them all)\n", walk.count - SHOWN_LINES);

    /* The same work without the library, to check it and to time it. */
    size_t disagree = 0;
    unsigned char *buf = malloc(BLOCK_SIZE);
    if (buf == NULL) {
        fprintf(stderr, "checksum: %s\n", nursery_strerror(ENOMEM));
        free_files();
        return 1;
    }
    for (size_t i = 0; i < walk.count; i++)
        uncache(walk.files[i].path);
    start = nursery_now();
    for (size_t i = 0; i < walk.count; i++) {
        const struct file *f = &walk.files[i];
        uint64_t sum = 0, size = 0;
        const char *what;
        int rc = hash_file(f->path, buf, &sum, &size, &what);
        if (rc != f->error || (rc == 0 && (sum != f->sum || size != f->bytes))) {
            if (++disagree <= SHOWN_LINES)
                fprintf(stderr, "checksum: %s: the parallel and sequential runs disagree\n",
                        f->path);
        }
    }
    double sequential = seconds_since(start);
    free(buf);

    nursery_pool_t *pool;
    nursery_pool_stats_t stats = {0};
    if (nursery_pool_default(&pool) != 0 || nursery_pool_stats(pool, &stats) != 0)
        status = 1;

    printf("files:      %zu%s, %zu unreadable\n", walk.count, walk.truncated ? " (the limit)" : "",
           failed);
    printf("bytes:      %" PRIu64 " (%.1f MiB)\n", bytes, (double)bytes / (1024 * 1024));
    printf("parallel:   %.3f s (pool threads: %zu)\n", parallel, stats.threads);
    printf("sequential: %.3f s\n", sequential);
    if (parallel > 0)
        printf("speed-up:   %.2fx over a sequential run\n", sequential / parallel);
    if (disagree == 0) {
        printf("parallel and sequential checksums agree\n");
    } else {
        printf("parallel and sequential checksums DISAGREE on %zu files\n", disagree);
        status = 1;
    }

    free_files();
    return status;
}
