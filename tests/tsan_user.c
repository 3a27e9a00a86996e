/* SPDX-License-Identifier: MIT */
/*
 * tsan_user.c - a user's program built with -fsanitize=thread against the
 * plain (uninstrumented) library: ThreadSanitizer must see every
 * happens-before edge that nursery.h promises, and report no race.
 *
 * The library hands data between threads with atomics and futexes that
 * TSan cannot see in code it did not instrument; src/annotate.h tells the
 * TSan runtime about each hand-off.  Each edge below is a plain (not
 * atomic) write by one thread and a plain read by another that only the
 * library orders.  Every cell is written once and read once, and the two
 * sides share nothing else that TSan could take for the ordering (the
 * tasks take their cells as arguments and the cells are static, so neither
 * an allocation nor an earlier round orders them).
 *
 * Where the edge has a fast path that takes no lock - the result is
 * already done when the caller looks - the caller first waits until the
 * result is done without learning anything TSan would count: another
 * thread watches it and raises a relaxed flag (wait_unseen).
 *
 * The last two are not edges of the header's but the library's own memory
 * changing hands between threads, which TSan sees through the calls it
 * intercepts (a mutex destroyed, a block freed): a cancel walk over tasks
 * that then free their nodes, and the last reference to a nursery or an
 * error dropped on another thread than the one that used it last.
 *
 * Run by tests/tsan_user.sh, which sets TSAN_OPTIONS (a race makes the
 * program exit 66).  By hand: tests/tsan_user [edge ...], default every edge;
 * each edge at most once per run (its cells are used once).
 * Exit status: 0 every edge held, 1 a check failed, 2 usage.
 */
#include <nursery.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUNDS 64
#define TASKS 4
#define MAGIC 42 /* what a writer leaves in its cell */

static nursery_pool_t *pool;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "tsan_user: %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);    \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* ---- helpers ------------------------------------------------------------ */

/* Writes MAGIC into the cell it is given; its value is the cell. */
static int write_cell(void *arg, void **value)
{
    long *cell = arg;
    *cell = MAGIC;
    *value = cell;
    return 0;
}

/* Reads the cell it is given: fails unless it holds MAGIC. */
static int read_cell(void *arg, void **value)
{
    (void)value;
    const long *cell = arg;
    return *cell == MAGIC ? 0 : EINVAL;
}

/* Returns once r is done, without giving the calling thread a
 * happens-before edge from its completion: a watcher thread polls it and
 * raises a relaxed flag, which TSan does not count as synchronisation.
 * The caller joins the watcher (an edge) only after its own read. */
struct watch {
    nursery_result_t *r;
    atomic_int seen;
    pthread_t thread;
};

static void *watch_main(void *arg)
{
    struct watch *w = arg;
    while (!nursery_result_is_done(w->r))
        sched_yield();
    atomic_store_explicit(&w->seen, 1, memory_order_relaxed);
    return NULL;
}

static void wait_unseen(struct watch *w, nursery_result_t *r)
{
    w->r = r;
    atomic_init(&w->seen, 0);
    CHECK(pthread_create(&w->thread, NULL, watch_main, w) == 0);
    while (!atomic_load_explicit(&w->seen, memory_order_relaxed))
        sched_yield();
}

static void watch_end(struct watch *w)
{
    CHECK(pthread_join(w->thread, NULL) == 0);
}

/* ---- task end -> join ---------------------------------------------------- */

static long join_cells[ROUNDS][TASKS];

static void edge_join(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_t *n;
        CHECK(nursery_open(&n, pool) == 0);
        for (int i = 0; i < TASKS; i++)
            CHECK(nursery_start_soon(n, write_cell, &join_cells[round][i], NULL) == 0);
        CHECK(nursery_join(n, NURSERY_FOREVER, NULL) == 0);
        for (int i = 0; i < TASKS; i++)
            CHECK(join_cells[round][i] == MAGIC);
    }
}

/* ---- task end -> nursery_result_wait ------------------------------------- */

static long wait_cells[ROUNDS];

static void edge_wait(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_t *n;
        nursery_result_t *r;
        struct watch w;
        CHECK(nursery_open(&n, pool) == 0);
        CHECK(nursery_capture_start_soon(n, write_cell, &wait_cells[round], NULL, &r) == 0);
        /* Odd rounds: the result is done before the wait (no lock taken). */
        if (round % 2)
            wait_unseen(&w, r);
        CHECK(nursery_result_wait(r, NURSERY_FOREVER) == 0);
        void *value;
        CHECK(nursery_result_value(r, &value) == 0);
        CHECK(*(long *)value == MAGIC && value == &wait_cells[round]);
        if (round % 2)
            watch_end(&w);
        nursery_result_release(r);
        CHECK(nursery_join(n, NURSERY_FOREVER, NULL) == 0);
    }
}

/* ---- task end -> nursery_wait_any, nursery_wait_all ---------------------- */

static long any_cells[ROUNDS][2];

static void edge_wait_any(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_t *n;
        nursery_result_t *r[2];
        struct watch w[2];
        CHECK(nursery_open(&n, pool) == 0);
        for (int i = 0; i < 2; i++)
            CHECK(nursery_capture_start_soon(n, write_cell, &any_cells[round][i], NULL, &r[i]) ==
                  0);
        for (int i = 0; i < 2; i++)
            wait_unseen(&w[i], r[i]);
        size_t first;
        CHECK(nursery_wait_any(r, 2, NURSERY_FOREVER, &first) == 0 && first < 2);
        CHECK(any_cells[round][first] == MAGIC);
        CHECK(nursery_wait_all(r, 2, NURSERY_FOREVER) == 0);
        CHECK(any_cells[round][1 - first] == MAGIC);
        for (int i = 0; i < 2; i++) {
            watch_end(&w[i]);
            nursery_result_release(r[i]);
        }
        CHECK(nursery_join(n, NURSERY_FOREVER, NULL) == 0);
    }
}

/* ---- task end -> a done result, found by polling --------------------------- */

static long done_cells[ROUNDS];

static void edge_done(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_t *n;
        nursery_result_t *r;
        CHECK(nursery_open(&n, pool) == 0);
        CHECK(nursery_capture_start_soon(n, write_cell, &done_cells[round], NULL, &r) == 0);
        while (!nursery_result_is_done(r))
            sched_yield();
        void *value;
        nursery_error_t *err;
        CHECK(nursery_result_value(r, &value) == 0);
        CHECK(nursery_result_error(r, &err) == 0 && err == NULL);
        CHECK(*(long *)value == MAGIC);
        nursery_result_release(r);
        CHECK(nursery_join(n, NURSERY_FOREVER, NULL) == 0);
    }
}

/* ---- future set by a plain thread -> wait -------------------------------- */

static long future_cells[ROUNDS];

struct setter {
    nursery_result_t *future;
    long *cell;
    bool fail; /* fail the future with a message instead of setting a value */
    pthread_t thread;
};

static void *setter_main(void *arg)
{
    struct setter *s = arg;
    *s->cell = MAGIC;
    if (s->fail)
        nursery_future_fail(s->future, EIO, "cell %p is %ld", (void *)s->cell, *s->cell);
    else
        nursery_future_set_value(s->future, s->cell);
    return NULL;
}

static void edge_future(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        struct setter s = {.cell = &future_cells[round], .fail = round % 4 >= 2};
        struct watch w;
        CHECK(nursery_future_create(&s.future) == 0);
        CHECK(pthread_create(&s.thread, NULL, setter_main, &s) == 0);
        if (round % 2)
            wait_unseen(&w, s.future);
        if (s.fail) {
            /* The message the setter formatted is read here too. */
            char expected[64];
            snprintf(expected, sizeof(expected), "cell %p is %d", (void *)s.cell, MAGIC);
            CHECK(nursery_result_wait(s.future, NURSERY_FOREVER) == 0);
            nursery_error_t *err;
            CHECK(nursery_result_error(s.future, &err) == 0 && err != NULL);
            CHECK(strcmp(nursery_error_message(err), expected) == 0);
        } else {
            CHECK(nursery_result_wait(s.future, NURSERY_FOREVER) == 0);
            void *value;
            CHECK(nursery_result_value(s.future, &value) == 0 && value == s.cell);
        }
        CHECK(*s.cell == MAGIC);
        if (round % 2)
            watch_end(&w);
        CHECK(pthread_join(s.thread, NULL) == 0);
        nursery_result_release(s.future);
    }
}

/* ---- channel send -> recv, both ways ------------------------------------- */

static long to_main_cells[ROUNDS];
static long to_task_cells[ROUNDS];

/* Sends the cell it filled to main, then receives one from main and checks
 * it; channel_io's own fields were written before it started. */
struct channel_io {
    nursery_sender_t *tx;   /* to main */
    nursery_receiver_t *rx; /* from main */
    long *cell;             /* filled and sent */
};

static int channel_task(void *arg, void **value)
{
    (void)value;
    struct channel_io *io = arg;
    *io->cell = MAGIC;
    if (nursery_channel_send(io->tx, io->cell, NURSERY_FOREVER) != 0)
        return EPIPE;
    void *item;
    int rc = nursery_channel_recv(io->rx, &item, NURSERY_FOREVER);
    if (rc != 0)
        return rc;
    return *(long *)item == MAGIC ? 0 : EINVAL;
}

static void edge_channel(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        /* Rendezvous and buffered channels in turn; try_recv in some rounds. */
        size_t capacity = round % 2;
        bool try = round % 4 >= 2;
        nursery_sender_t *to_main_tx, *to_task_tx;
        nursery_receiver_t *to_main_rx, *to_task_rx;
        CHECK(nursery_channel_create(capacity, NULL, &to_main_tx, &to_main_rx) == 0);
        CHECK(nursery_channel_create(capacity, NULL, &to_task_tx, &to_task_rx) == 0);
        struct channel_io io = {.tx = to_main_tx, .rx = to_task_rx, .cell = &to_main_cells[round]};
        nursery_t *n;
        CHECK(nursery_open(&n, pool) == 0);
        CHECK(nursery_start_soon(n, channel_task, &io, NULL) == 0);

        void *item;
        if (try) {
            int rc;
            while ((rc = nursery_channel_try_recv(to_main_rx, &item)) == EAGAIN)
                sched_yield();
            CHECK(rc == 0);
        } else {
            CHECK(nursery_channel_recv(to_main_rx, &item, NURSERY_FOREVER) == 0);
        }
        CHECK(item == &to_main_cells[round] && *(long *)item == MAGIC);

        to_task_cells[round] = MAGIC;
        CHECK(nursery_channel_send(to_task_tx, &to_task_cells[round], NURSERY_FOREVER) == 0);
        CHECK(nursery_join(n, NURSERY_FOREVER, NULL) == 0);
        nursery_sender_free(to_main_tx);
        nursery_receiver_free(to_main_rx);
        nursery_sender_free(to_task_tx);
        nursery_receiver_free(to_task_rx);
    }
}

/* ---- nursery_started -> nursery_start ------------------------------------ */

static long started_cells[ROUNDS];
static long unstarted_cells[ROUNDS];

/* Writes its cell and hands it over with nursery_started(). */
static int started_task(void *arg, void **value)
{
    (void)value;
    long *cell = arg;
    *cell = MAGIC;
    return nursery_started(cell);
}

/* Writes its cell and fails before started: nursery_start() observes its
 * end. */
static int unstarted_task(void *arg, void **value)
{
    (void)value;
    long *cell = arg;
    *cell = MAGIC;
    return EIO;
}

static void edge_start(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_t *n;
        void *value = NULL;
        CHECK(nursery_open(&n, pool) == 0);
        CHECK(nursery_start(n, started_task, &started_cells[round], NULL, NURSERY_FOREVER, &value,
                            NULL) == 0);
        CHECK(value == &started_cells[round] && *(long *)value == MAGIC);
        CHECK(nursery_start(n, unstarted_task, &unstarted_cells[round], NULL, NURSERY_FOREVER, NULL,
                            NULL) == EIO);
        CHECK(unstarted_cells[round] == MAGIC);
        CHECK(nursery_join(n, NURSERY_FOREVER, NULL) == 0);
    }
}

/* ---- what the starter wrote -> the task it starts ------------------------ */

static long spawn_cells[ROUNDS];
static long capture_cells[ROUNDS];
static long nested_cells[ROUNDS];

/* A task that writes a cell, then starts a task of the same nursery (on
 * this worker's deque, maybe stolen) that reads it. */
struct nested {
    nursery_t *n;
    long *cell;
};

static int nested_task(void *arg, void **value)
{
    (void)value;
    struct nested *nest = arg;
    *nest->cell = MAGIC;
    return nursery_start_soon(nest->n, read_cell, nest->cell, NULL);
}

static void edge_spawn(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_t *n;
        nursery_result_t *r;
        CHECK(nursery_open(&n, pool) == 0);
        spawn_cells[round] = MAGIC;
        CHECK(nursery_start_soon(n, read_cell, &spawn_cells[round], NULL) == 0);
        capture_cells[round] = MAGIC;
        CHECK(nursery_capture_start_soon(n, read_cell, &capture_cells[round], NULL, &r) == 0);
        struct nested nest = {.n = n, .cell = &nested_cells[round]};
        CHECK(nursery_start_soon(n, nested_task, &nest, NULL) == 0);
        CHECK(nursery_join(n, NURSERY_FOREVER, NULL) == 0);
        nursery_result_release(r);
    }
}

/* ---- nursery_cancel on another thread -> running tasks, join -------------- */

/* Not an edge of its own, but the library's memory changing hands.  Each
 * task parks once in a wait (which links its cancel node into the tree),
 * is woken, and runs on until it sees the cancellation: the canceller's
 * walk visits its node, and the task then frees it as it ends, without
 * taking a lock the walk took.  The canceller holds a reference to the
 * nursery, so the nursery's memory goes with whichever of it and the
 * joiner lets go last. */

static long cancel_cells[ROUNDS][TASKS];
static nursery_result_t *go[ROUNDS];  /* set by the canceller once the tasks wait */
static atomic_int waiting[ROUNDS];    /* tasks about to wait for go; relaxed: no edge */
static atomic_int running_on[ROUNDS]; /* tasks past the wait; relaxed: no edge */

static int cancelled_task(void *arg, void **value)
{
    (void)value;
    long *cell = arg;
    int round = (int)((cell - cancel_cells[0]) / TASKS);
    *cell = MAGIC;
    atomic_fetch_add_explicit(&waiting[round], 1, memory_order_relaxed);
    if (nursery_result_wait(go[round], NURSERY_FOREVER) != 0)
        return EINVAL;
    atomic_fetch_add_explicit(&running_on[round], 1, memory_order_relaxed);
    while (!nursery_cancelled())
        sched_yield();
    return ECANCELED;
}

struct canceller {
    nursery_t *n; /* a reference of its own */
    int round;
    pthread_t thread;
};

static void until_all(atomic_int *count)
{
    while (atomic_load_explicit(count, memory_order_relaxed) < TASKS)
        sched_yield();
}

static void *canceller_main(void *arg)
{
    struct canceller *c = arg;
    until_all(&waiting[c->round]);
    sched_yield(); /* most of the time, the last one is asleep by now */
    CHECK(nursery_future_set_value(go[c->round], NULL) == 0);
    until_all(&running_on[c->round]);
    CHECK(nursery_cancel(c->n) == 0);
    nursery_release(c->n);
    return NULL;
}

static void edge_cancel(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_t *n;
        CHECK(nursery_future_create(&go[round]) == 0);
        CHECK(nursery_open(&n, pool) == 0);
        for (int i = 0; i < TASKS; i++)
            CHECK(nursery_start_soon(n, cancelled_task, &cancel_cells[round][i], NULL) == 0);
        struct canceller c = {.n = nursery_retain(n), .round = round};
        CHECK(pthread_create(&c.thread, NULL, canceller_main, &c) == 0);
        nursery_errors_t *errors;
        CHECK(nursery_join(n, NURSERY_FOREVER, &errors) == 0);
        CHECK(errors != NULL && nursery_errors_count(errors) == 0 &&
              nursery_errors_cancelled(errors) == TASKS);
        for (int i = 0; i < TASKS; i++)
            CHECK(cancel_cells[round][i] == MAGIC);
        nursery_errors_free(errors);
        CHECK(pthread_join(c.thread, NULL) == 0);
        nursery_result_release(go[round]);
    }
}

/* ---- an error's last reference, dropped on another thread ---------------- */

/* Errors are shared by reference: the thread that drops the last one frees
 * the message and runs the payload's destructor, after every other
 * holder's reads.  Here the other thread always drops last: it waits for
 * main's drop through a relaxed flag, which TSan counts as no edge. */

static long error_payloads[ROUNDS];

struct dropper {
    nursery_error_t *err; /* a reference of its own */
    atomic_int main_dropped;
    pthread_t thread;
};

static void clear_payload(void *payload)
{
    *(long *)payload = 0;
}

static void *dropper_main(void *arg)
{
    struct dropper *d = arg;
    while (!atomic_load_explicit(&d->main_dropped, memory_order_relaxed))
        sched_yield();
    nursery_error_release(d->err); /* the last: frees it, clears the payload */
    return NULL;
}

static void edge_error(void)
{
    for (int round = 0; round < ROUNDS; round++) {
        nursery_error_t *err;
        error_payloads[round] = MAGIC;
        CHECK(nursery_error_create(&err, EIO, "round %d", round) == 0);
        CHECK(nursery_error_set_payload(err, &error_payloads[round], clear_payload) == 0);
        struct dropper d = {.err = nursery_error_retain(err)};
        atomic_init(&d.main_dropped, 0);
        CHECK(pthread_create(&d.thread, NULL, dropper_main, &d) == 0);
        /* Read after the other thread got its reference. */
        char expected[32];
        snprintf(expected, sizeof(expected), "round %d", round);
        CHECK(strcmp(nursery_error_message(err), expected) == 0);
        CHECK(*(long *)nursery_error_payload(err) == MAGIC);
        nursery_error_release(err);
        atomic_store_explicit(&d.main_dropped, 1, memory_order_relaxed);
        CHECK(pthread_join(d.thread, NULL) == 0);
        CHECK(error_payloads[round] == 0);
    }
}

/* ---- main ---------------------------------------------------------------- */

static const struct edge {
    const char *name;
    void (*run)(void);
    const char *what;
} edges[] = {
    {"join", edge_join, "task end -> nursery_join"},
    {"wait", edge_wait, "task end -> nursery_result_wait"},
    {"wait_any", edge_wait_any, "task end -> nursery_wait_any, nursery_wait_all"},
    {"done", edge_done, "task end -> nursery_result_is_done, _value, _error"},
    {"future", edge_future, "future set by a thread -> nursery_result_wait"},
    {"channel", edge_channel, "channel send -> recv / try_recv, task to main and back"},
    {"start", edge_start, "nursery_started or the task's end -> nursery_start"},
    {"spawn", edge_spawn, "starter's writes -> the task (injection queue, deque)"},
    {"cancel", edge_cancel, "nursery_cancel on a thread -> running tasks end, join"},
    {"error", edge_error, "an error's last reference dropped on another thread"},
};
#define NEDGES (sizeof(edges) / sizeof(edges[0]))

static const struct edge *find_edge(const char *name)
{
    for (size_t i = 0; i < NEDGES; i++)
        if (strcmp(edges[i].name, name) == 0)
            return &edges[i];
    return NULL;
}

int main(int argc, char **argv)
{
    const struct edge *chosen[NEDGES];
    size_t count = 0;
    for (int i = 1; i < argc; i++) {
        const struct edge *e = find_edge(argv[i]);
        if (!e) {
            fprintf(stderr, "usage: %s [edge ...]; edges:", argv[0]);
            for (size_t k = 0; k < NEDGES; k++)
                fprintf(stderr, " %s", edges[k].name);
            fprintf(stderr, "\n");
            return 2;
        }
        for (size_t k = 0; k < count; k++)
            if (chosen[k] == e)
                e = NULL; /* each edge once: its cells are written once */
        if (e)
            chosen[count++] = e;
    }
    if (argc == 1)
        for (size_t k = 0; k < NEDGES; k++)
            chosen[count++] = &edges[k];

    nursery_pool_options_t opts = {.threads = 3, .name = "tsanuser"};
    CHECK(nursery_pool_create(&pool, &opts) == 0);
    for (size_t k = 0; k < count; k++) {
        chosen[k]->run();
        printf("ok: %-8s %s (%d rounds)\n", chosen[k]->name, chosen[k]->what, ROUNDS);
        fflush(stdout);
    }
    CHECK(nursery_pool_destroy(pool) == 0);
    return 0;
}
