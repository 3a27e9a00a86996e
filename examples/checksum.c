/* SPDX-License-Identifier: MIT */
/*
 * checksum.c - the demo: a batch tool that checksums every file under a
 * directory, with one task per file, and times it against a plain loop.
 *
 *     checksum [-hv] [--files N] [--latency MS] [--rounds N] [DIR]
 *
 * DIR defaults to /usr/share/doc.  This is the work the library is for:
 * many small jobs that block (open, read in 64 KiB blocks, close) and burn
 * some CPU (FNV-1a over every byte).  Every regular file under DIR becomes a
 * task of one nursery on the default pool, started with
 * nursery_capture_start_soon() and named after its path.  A file that
 * cannot be read fails its task with a message; the tasks are started with
 * NURSERY_TASK_SUPPRESS_ERROR, so that failure is kept in the task's result
 * and reported, instead of cancelling the other files.
 *
 * How it measures.  A first parallel pass, untimed, reads every file once:
 * it gives the checksums printed, and it brings the files into the caches,
 * so that no timed pass pays for cold reads the others do not (dropping
 * pages with posix_fadvise() would not do: it does not reach a hypervisor's
 * cache).  Then the same checksums are computed again by parallel passes
 * (the nursery) and sequential passes (a plain loop in the main thread),
 * alternated - sequential first in odd rounds, parallel first in even ones -
 * and every pass must reproduce the first pass's checksums.  The medians of
 * each kind give the speed-up, with the fastest and slowest pass beside
 * them.  Before each parallel pass the default pool is given up to a second
 * to retire the threads it added for the last one, so that every pass grows
 * the pool itself; a sampler thread reads the pool's thread count every
 * millisecond during the pass, and the largest count seen is printed.
 * When a sequential pass takes less than a tenth of a second (a small
 * directory), the passes are too short to compare - starting threads and
 * the machine's other work weigh more than the files - and no speed-up is
 * printed.  On Linux it also says how much of the CPUs other processes took
 * while it measured: on a busy machine the times are noisy, and a pass with
 * more threads wins more of the CPUs from the other processes.
 *
 * --latency MS simulates files on a network store: in every timed pass,
 * after reading a file, its task sleeps MS milliseconds in a plain
 * nanosleep(), standing for the store's round trip.  The pool cannot see
 * that sleep (it is no library call); its monitor sees workers that use no
 * CPU, and adds threads, so the parallel passes overlap the waits of many
 * files, far more than one per CPU.  A sequential pass sleeps files x MS, so
 * with --latency there is only one.
 *
 * --files N keeps the first N files in path order; --rounds N sets the
 * passes of each kind (default 3); -v prints every checksum; -h the usage.
 *
 * Prints "checksum  path" in path order (only the first 20 without -v), the
 * unreadable files on stderr, what it measured, and the results.  Symbolic
 * links are not followed; at most 20000 files are read, to keep the demo
 * quick.  Exits 0 on success (unreadable files are reported, not fatal),
 * 1 when a pass disagrees with the first or something else failed, 2 for a
 * usage error.
 */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* nftw() */
#endif

#include <nursery.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DIR "/usr/share/doc"
#define MAX_FILES 20000
#define SHOWN_LINES 20
#define BLOCK_SIZE (64 * 1024)
#define DEFAULT_ROUNDS 3
#define MAX_ROUNDS 99
#define MAX_LATENCY_MS 10000
#define MIN_TIMED_S 0.1   /* a shorter sequential pass is too short to compare */
#define BUSY_SHARE 0.1    /* other processes' share of the CPUs that makes it say so */
#define REST_WAIT_MS 1000 /* how long a parallel pass waits for the pool to shrink */

/* What one pass found for one file. */
struct outcome {
    uint64_t sum;   /* FNV-1a of the contents */
    uint64_t bytes; /* bytes read */
    int error;      /* 0, or the errno value that stopped the read (ECANCELED: never started) */
};

struct file {
    char *path;               /* owned; also the name of its task */
    nursery_result_t *result; /* its task's outcome in a parallel pass, until collected; or NULL */
    struct outcome first;     /* from the first pass: what every timed pass must reproduce */
    struct outcome got;       /* from the latest pass: set by main before a parallel pass,
                               * then written by the file's task and read after the join */
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

/* Files finished in the current parallel pass, counted by the tasks for the
 * progress line.  Relaxed is enough: it is only a number to show; join
 * orders everything else. */
static atomic_size_t hashed;

/* The simulated store's round trip: zero in the first pass, --latency in
 * the timed ones.  Only main writes it, between passes; a task reads it
 * after nursery_capture_start_soon() started it, which orders the write. */
static struct timespec store_latency;

/* Progress on stderr, only when it is a terminal. */
static bool tty;

/* ------------------------------------------------------------------------ */
/* Hashing one file: plain blocking calls, shared by both kinds of pass     */
/* ------------------------------------------------------------------------ */

/* Reads the file and sets *out to its FNV-1a (64 bits) and size, or to the
 * errno value that stopped it with *what naming the call that failed. */
static void hash_file(const char *path, unsigned char *buf, struct outcome *out, const char **what)
{
    uint64_t h = 0xcbf29ce484222325u, n = 0;

    *out = (struct outcome){0};
    /* O_NONBLOCK: should a FIFO have taken the file's place since the walk,
     * don't hang on it (it changes nothing for a regular file). */
    *what = "open";
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        out->error = errno;
        return;
    }
    *what = "read";
    for (;;) {
        ssize_t got = read(fd, buf, BLOCK_SIZE);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            out->error = errno;
            close(fd);
            return;
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
    out->sum = h;
    out->bytes = n;
}

/* --latency: the network store's round trip, a plain blocking call like
 * the read before it.  Nothing tells the pool that the thread sleeps. */
static void wait_for_store(void)
{
    struct timespec left = store_latency;
    if (left.tv_sec == 0 && left.tv_nsec == 0)
        return;
    while (nanosleep(&left, &left) == -1 && errno == EINTR)
        continue;
}

/* The task.  Its outcome is in the file's record, and its error, with a
 * message, in its result; no value. */
static int hash_task(void *arg, void **value)
{
    (void)value;
    struct file *f = arg;
    const char *what = "malloc";

    /* On the heap, not the stack: pool threads may have been given small
     * stacks (nursery_pool_options_t.stack_size). */
    unsigned char *buf = malloc(BLOCK_SIZE);
    if (buf != NULL) {
        hash_file(f->path, buf, &f->got, &what);
        free(buf);
    } else {
        f->got = (struct outcome){.error = ENOMEM};
    }
    wait_for_store();
    atomic_fetch_add_explicit(&hashed, 1, memory_order_relaxed);
    if (f->got.error != 0)
        return nursery_fail(f->got.error, "%s: %s", what, nursery_strerror(f->got.error));
    return 0;
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

/* Keeps the first n files (in path order, once sorted). */
static void keep_files(size_t n)
{
    for (size_t i = n; i < walk.count; i++)
        free(walk.files[i].path);
    if (n < walk.count)
        walk.count = n;
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
/* The passes                                                               */
/* ------------------------------------------------------------------------ */

static void show_progress(const char *pass, size_t done)
{
    if (tty)
        fprintf(stderr, "\r%s: %zu/%zu files ", pass, done, walk.count);
}

static void clear_progress(void)
{
    if (tty)
        fprintf(stderr, "\r%60s\r", "");
}

/* Hashes every file, one task each; returns 0 when every task ran (some
 * may have failed: that is in their results), 1 otherwise.  Each file's
 * result is left for collect_results(). */
static int hash_in_parallel(const char *pass)
{
    nursery_errors_t *errors = NULL;
    nursery_t *n;
    int status = 0;

    for (size_t i = 0; i < walk.count; i++)
        walk.files[i].got = (struct outcome){.error = ECANCELED}; /* until its task runs */
    atomic_store_explicit(&hashed, 0, memory_order_relaxed);

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
    while ((rc = nursery_join(n, nursery_after_ms(250), &errors)) == ETIMEDOUT)
        show_progress(pass, atomic_load_explicit(&hashed, memory_order_relaxed));
    clear_progress();

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

/* Lets each file's result go, and prints the messages of the first `shown`
 * failures on stderr.  Returns how many files failed. */
static size_t collect_results(size_t shown)
{
    size_t failed = 0;
    for (size_t i = 0; i < walk.count; i++) {
        struct file *f = &walk.files[i];
        nursery_error_t *err = NULL;

        /* A task that never started has no error; its outcome says ECANCELED. */
        if (f->result != NULL && nursery_result_error(f->result, &err) == 0 && err != NULL &&
            failed < shown)
            fprintf(stderr, "checksum: %s: %s\n", f->path, nursery_error_message(err));
        failed += f->got.error != 0;
        nursery_result_release(f->result);
        f->result = NULL;
    }
    if (failed > shown && shown > 0)
        fprintf(stderr, "checksum: ... and %zu more unreadable files\n", failed - shown);
    return failed;
}

/* The same work without the library, in the main thread. */
static void hash_in_sequence(const char *pass, unsigned char *buf)
{
    nursery_time_t shown = nursery_now();
    for (size_t i = 0; i < walk.count; i++) {
        const char *what;
        hash_file(walk.files[i].path, buf, &walk.files[i].got, &what);
        wait_for_store();
        if (tty && nursery_now() - shown > 250000000) {
            show_progress(pass, i + 1);
            shown = nursery_now();
        }
    }
    clear_progress();
}

/* Counts the files whose latest outcome differs from the first pass's, and
 * names the first few on stderr. */
static size_t count_disagreements(const char *pass)
{
    size_t n = 0;
    for (size_t i = 0; i < walk.count; i++) {
        const struct outcome *a = &walk.files[i].first, *b = &walk.files[i].got;
        if (a->error != b->error || a->sum != b->sum || a->bytes != b->bytes) {
            if (++n <= SHOWN_LINES)
                fprintf(stderr, "checksum: %s: %s disagrees with the first pass\n",
                        walk.files[i].path, pass);
        }
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Watching the pool                                                        */
/* ------------------------------------------------------------------------ */

static size_t pool_threads(nursery_pool_t *pool)
{
    nursery_pool_stats_t stats;
    return nursery_pool_stats(pool, &stats) == 0 ? stats.threads : 0;
}

static void nap_ms(long ms)
{
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L};
    while (nanosleep(&t, &t) == -1 && errno == EINTR)
        continue;
}

/* A thread that reads the pool's thread count every millisecond and keeps
 * the largest: threads added for blocked workers retire 250 ms after the
 * work is done, so a count read afterwards says nothing about the pass.
 * Each read is a short critical section on the pool's lock, a thousand a
 * second: that barely touches the pass. */
struct sampler {
    pthread_t tid;
    nursery_pool_t *pool;
    atomic_bool stop; /* set once, by sampler_stop; relaxed: it publishes nothing, the join does */
    size_t peak;      /* the largest count read; the sampler thread's until it is joined */
};

static void *sampler_main(void *arg)
{
    struct sampler *s = arg;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        size_t t = pool_threads(s->pool);
        if (t > s->peak)
            s->peak = t;
        nap_ms(1);
    }
    return NULL;
}

/* Takes the first reading here, before the caller starts its work. */
static int sampler_start(struct sampler *s, nursery_pool_t *pool)
{
    s->pool = pool;
    s->peak = pool_threads(pool);
    atomic_init(&s->stop, false);
    return pthread_create(&s->tid, NULL, sampler_main, s);
}

/* Returns the peak, with one last reading taken after the sampler's last. */
static size_t sampler_stop(struct sampler *s)
{
    atomic_store_explicit(&s->stop, true, memory_order_relaxed);
    pthread_join(s->tid, NULL); /* makes s->peak visible here */
    size_t t = pool_threads(s->pool);
    return t > s->peak ? t : s->peak;
}

/* Waits, up to REST_WAIT_MS, until the pool is back to the threads it keeps
 * at rest (the added ones retire after 250 ms idle), so that a parallel
 * pass does not start with the threads the previous one added.  Returns
 * the thread count it leaves the pool with. */
static size_t pool_rest(nursery_pool_t *pool, size_t at_rest)
{
    size_t t = pool_threads(pool);
    for (int ms = 0; t > at_rest && ms < REST_WAIT_MS; ms += 10) {
        nap_ms(10);
        t = pool_threads(pool);
    }
    return t;
}

/* ------------------------------------------------------------------------ */
/* Watching the machine                                                     */
/* ------------------------------------------------------------------------ */

/* The CPU time the other processes take while the passes run makes the
 * speed-up smaller and the times noisier, so the demo says how much it
 * was.  Linux's /proc/stat counts, in clock ticks summed over the CPUs,
 * the time they were busy (steal included: a hypervisor gave it to someone
 * else) and the time in all; this process's own CPU time is taken from the
 * busy part.  Elsewhere there is no /proc/stat, and nothing is said. */
struct machine_clock {
    double busy;  /* seconds of CPU time used by anything, or -1 when unknown */
    double total; /* seconds of CPU time available */
    double own;   /* seconds of CPU time of this process */
};

static struct machine_clock machine_clock_read(void)
{
    struct machine_clock c = {.busy = -1};
    unsigned long long user, nice, sys, idle, iowait, irq, softirq, steal;
    long hz = sysconf(_SC_CLK_TCK);
    struct timespec own;
    FILE *f = fopen("/proc/stat", "r");

    if (f == NULL)
        return c;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
                   &iowait, &irq, &softirq, &steal);
    fclose(f);
    if (n != 8 || hz <= 0 || clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &own) != 0)
        return c;
    c.busy = (double)(user + nice + sys + irq + softirq + steal) / (double)hz;
    c.total = c.busy + (double)(idle + iowait) / (double)hz;
    c.own = (double)own.tv_sec + (double)own.tv_nsec / 1e9;
    return c;
}

/* The share of the CPUs that other processes used from a to b, or -1. */
static double machine_others_share(struct machine_clock a, struct machine_clock b)
{
    if (a.busy < 0 || b.busy < 0 || b.total <= a.total)
        return -1;
    double others = (b.busy - a.busy) - (b.own - a.own);
    return others > 0 ? others / (b.total - a.total) : 0;
}

/* ------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts t[0..n) and returns its median. */
static double median(double *t, size_t n)
{
    qsort(t, n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* "1.234 s median (1.200 to 1.300 s, 3 passes)", of t[0..n) sorted. */
static void print_times(const char *label, double *t, size_t n)
{
    double m = median(t, n);
    if (n == 1)
        printf("%-14s%.3f s (1 pass)\n", label, m);
    else
        printf("%-14s%.3f s median (%.3f to %.3f s, %zu passes)\n", label, m, t[0], t[n - 1], n);
}

static double seconds_since(nursery_time_t start)
{
    return (double)(nursery_now() - start) / 1e9;
}

/* Prints the usage on stdout for --help (returns 0), on stderr otherwise
 * (returns 2, a usage error). */
static int usage(bool help)
{
    fprintf(help ? stdout : stderr,
            "usage: checksum [-hv] [-n N] [-l MS] [-r N] [DIR]\n"
            "  Checksums every regular file under DIR (default " DEFAULT_DIR "), one task per\n"
            "  file, then times parallel passes against sequential ones, after a first\n"
            "  untimed pass that warms the caches.\n"
            "  -n, --files N     only the first N files, in path order\n"
            "  -l, --latency MS  simulate a network store: after reading each file, the\n"
            "                    timed passes sleep MS ms in a blocking nanosleep() (then\n"
            "                    only one sequential pass runs: it takes files x MS)\n"
            "  -r, --rounds N    N parallel and N sequential passes, alternated (default %d)\n"
            "  -v, --verbose     print every checksum, not only the first %d\n"
            "  -h, --help        print this and exit\n",
            DEFAULT_ROUNDS, SHOWN_LINES);
    return help ? 0 : 2;
}

/* The argument of option -opt: a whole number in [min, max], or false
 * after saying what was wrong. */
static bool parse_number(int opt, const char *s, unsigned long min, unsigned long max,
                         unsigned long *out)
{
    char *end = (char *)s;
    unsigned long v = 0;
    errno = 0;
    if (*s >= '0' && *s <= '9') /* strtoul() would take "-1" and " 1" */
        v = strtoul(s, &end, 10);
    if (end == s || *end != '\0' || errno != 0 || v < min || v > max) {
        fprintf(stderr, "checksum: -%c wants a whole number from %lu to %lu, not \"%s\"\n", opt,
                min, max, s);
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"files", required_argument, NULL, 'n'},  {"latency", required_argument, NULL, 'l'},
        {"rounds", required_argument, NULL, 'r'}, {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    unsigned long max_files = MAX_FILES, latency_ms = 0, rounds = DEFAULT_ROUNDS;
    bool verbose = false;
    int opt;

    while ((opt = getopt_long(argc, argv, "hn:l:r:v", longopts, NULL)) != -1) {
        switch (opt) {
        case 'n':
            if (!parse_number(opt, optarg, 1, MAX_FILES, &max_files))
                return usage(false);
            break;
        case 'l':
            if (!parse_number(opt, optarg, 0, MAX_LATENCY_MS, &latency_ms))
                return usage(false);
            break;
        case 'r':
            if (!parse_number(opt, optarg, 1, MAX_ROUNDS, &rounds))
                return usage(false);
            break;
        case 'v':
            verbose = true;
            break;
        case 'h':
            return usage(true);
        default:
            return usage(false);
        }
    }
    if (argc - optind > 1)
        return usage(false);
    const char *dir = optind < argc ? argv[optind] : DEFAULT_DIR;
    tty = isatty(STDERR_FILENO);

    /* Find the files, then sort them: the output is in path order whatever
     * order the tasks finish in. */
    if (nftw(dir, collect, 32, FTW_PHYS) == -1) {
        fprintf(stderr, "checksum: %s: %s (give another DIR, such as /usr/include)\n", dir,
                nursery_strerror(errno));
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
    if (walk.count == 0) {
        printf("no regular files under %s: nothing to checksum, nothing to time\n", dir);
        free_files();
        return 0;
    }
    qsort(walk.files, walk.count, sizeof *walk.files, by_path);
    size_t found = walk.count;
    keep_files(max_files);

    /* The threads the default pool keeps: one per CPU this process may run
     * on.  Read before any work, so none were added yet. */
    nursery_pool_t *pool;
    int rc = nursery_pool_default(&pool);
    if (rc != 0) {
        fprintf(stderr, "checksum: nursery_pool_default: %s\n", nursery_strerror(rc));
        free_files();
        return 1;
    }
    size_t cpus = pool_threads(pool);

    unsigned char *buf = malloc(BLOCK_SIZE);
    if (buf == NULL) {
        fprintf(stderr, "checksum: %s\n", nursery_strerror(ENOMEM));
        free_files();
        return 1;
    }

    /* The first pass: untimed, without latency.  It warms the caches, and
     * its checksums are the ones printed and the ones every timed pass must
     * reproduce. */
    if (hash_in_parallel("first pass") != 0) {
        collect_results(0);
        free(buf);
        free_files();
        return 1;
    }
    size_t failed = collect_results(verbose ? SIZE_MAX : SHOWN_LINES);
    uint64_t bytes = 0;
    for (size_t i = 0; i < walk.count; i++) {
        struct file *f = &walk.files[i];
        f->first = f->got;
        bytes += f->first.bytes;
        if (f->first.error == 0 && (verbose || i < SHOWN_LINES))
            printf("%016" PRIx64 "  %s\n", f->first.sum, f->path);
    }
    if (!verbose && walk.count > SHOWN_LINES)
        printf("... and %zu more files (-v lists them all)\n", walk.count - SHOWN_LINES);

    /* Say what is measured before measuring it: with --latency the
     * sequential pass takes a while. */
    size_t seq_rounds = latency_ms > 0 ? 1 : rounds;
    printf("files:        %zu under %s", walk.count, dir);
    if (walk.count < found)
        printf(" (the first %zu of %zu, --files)", walk.count, found);
    else if (walk.truncated)
        printf(" (the limit)");
    printf(", %zu unreadable, %.1f MiB\n", failed, (double)bytes / (1024 * 1024));
    printf("CPUs:         %zu (the threads the default pool keeps)\n", cpus);
    if (latency_ms > 0)
        printf("latency:      %lu ms per file, a blocking nanosleep() after each read,\n"
               "              simulating a network store\n",
               latency_ms);
    if (seq_rounds < rounds)
        printf("measured:     after an untimed first pass, 1 sequential pass (only one with\n"
               "              --latency: it sleeps %zu x %lu ms), then %lu parallel passes\n",
               walk.count, latency_ms, rounds);
    else if (rounds > 1)
        printf("measured:     after an untimed first pass, %lu sequential and %lu parallel "
               "passes,\n"
               "              alternated, on the same cache state\n",
               rounds, rounds);
    else
        printf("measured:     after an untimed first pass, 1 sequential pass, then 1 parallel\n"
               "              pass, on the same cache state\n");
    fflush(stdout);

    store_latency.tv_sec = (time_t)(latency_ms / 1000);
    store_latency.tv_nsec = (long)(latency_ms % 1000) * 1000000L;

    double *seq = malloc(rounds * sizeof *seq), *par = malloc(rounds * sizeof *par);
    size_t nseq = 0, npar = 0, disagree = 0, peak = 0;
    int status = 0;
    size_t start_min = SIZE_MAX, start_max = 0;
    if (seq == NULL || par == NULL) {
        fprintf(stderr, "checksum: %s\n", nursery_strerror(ENOMEM));
        status = 1;
        goto out;
    }
    struct machine_clock before = machine_clock_read();
    for (size_t round = 0; round < rounds && status == 0; round++) {
        for (int k = 0; k < 2 && status == 0; k++) {
            /* Rounds 1, 3, 5... run the sequential pass first, rounds
             * 2, 4... the parallel one: neither kind always goes first. */
            bool parallel = (k == 0) == (round % 2 == 1);
            char pass[64];
            snprintf(pass, sizeof pass, "%s pass %zu", parallel ? "parallel" : "sequential",
                     (parallel ? npar : nseq) + 1);
            if (parallel) {
                struct sampler sampler;
                size_t t = pool_rest(pool, cpus);
                start_min = t < start_min ? t : start_min;
                start_max = t > start_max ? t : start_max;
                rc = sampler_start(&sampler, pool);
                if (rc != 0) {
                    fprintf(stderr, "checksum: pthread_create: %s\n", nursery_strerror(rc));
                    status = 1;
                    break;
                }
                nursery_time_t start = nursery_now();
                status = hash_in_parallel(pass);
                par[npar++] = seconds_since(start);
                size_t p = sampler_stop(&sampler);
                peak = p > peak ? p : peak;
                collect_results(0);
            } else {
                if (nseq == seq_rounds)
                    continue;
                nursery_time_t start = nursery_now();
                hash_in_sequence(pass, buf);
                seq[nseq++] = seconds_since(start);
            }
            disagree += count_disagreements(pass);
        }
    }
    double others = machine_others_share(before, machine_clock_read());
    if (status != 0)
        goto out;

    print_times("sequential:", seq, nseq);
    print_times("parallel:", par, npar);
    double s = median(seq, nseq), p = median(par, npar);
    if (s < MIN_TIMED_S)
        printf("speed-up:     not reported: a sequential pass takes %.0f ms, too short to\n"
               "              compare (give a DIR with more files, or --latency)\n",
               s * 1000);
    else
        printf("speed-up:     %.2fx (median sequential / median parallel)\n", s / p);
    printf("pool threads: peak %zu during the parallel passes (%zu at the start of each", peak,
           start_min);
    if (start_max != start_min)
        printf(" to %zu: the pool had not shrunk yet", start_max);
    printf(")\n");
    if (others >= 0) {
        printf("other work:   %.0f%% of the CPUs went to other processes while it measured\n",
               others * 100);
        if (others >= BUSY_SHARE)
            printf("              (a busy machine: the times are noisy, and more threads win\n"
                   "              more of the CPUs from the other processes)\n");
    }

out:
    if (disagree == 0 && status == 0) {
        printf("checksums:    every pass agrees with the first\n");
    } else if (disagree != 0) {
        printf("checksums:    %zu times a pass DISAGREED with the first (see above)\n", disagree);
        status = 1;
    }
    free(seq);
    free(par);
    free(buf);
    free_files();
    return status;
}
