/* SPDX-License-Identifier: MIT */
/*
 * future_demux.c - a future completed by another thread: matching replies to
 * requests on a connection that answers out of order (aioresult's Future).
 *
 * Several tasks send requests over one shared "connection".  Each request
 * has an id; before sending, the task creates an empty future and files it
 * in the connection's table of pending requests under that id.  The
 * connection's reader, a plain pthread that knows nothing of nurseries,
 * receives the replies in its own order, looks each id up and completes the
 * matching future with nursery_future_set_value(), or nursery_future_fail()
 * when the server rejected the request.  Each task waits on its own future
 * with nursery_result_wait() and a deadline, so a lost reply cannot hang it.
 *
 * The wire is simulated with a channel (requests out) and a server inside
 * the reader thread that answers everything it received, shuffled.  Exits 0
 * when every reply reached the task that asked for it.
 */
#include <nursery.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#define NREQUESTS 8
#define FIRST_ID 100
#define REJECTED_ID 105 /* the server refuses this request */

/* What the server answers to request `id`. */
static intptr_t answer_to(int id)
{
    return (intptr_t)id * id;
}

struct connection {
    pthread_mutex_t lock;                 /* protects pending */
    nursery_result_t *pending[NREQUESTS]; /* futures awaiting a reply, by id - FIRST_ID;
                                             each holds one reference of its own */
    nursery_sender_t *wire;               /* requests out, shared by the request tasks */
    nursery_receiver_t *server;           /* where the simulated server reads them */
    int failures;                         /* reader thread problems; read after its join */
};

struct request {
    struct connection *conn;
    int id;
};

/* ------------------------------------------------------------------------ */
/* The client side: one task per request                                    */
/* ------------------------------------------------------------------------ */

static int send_request(void *arg, void **value)
{
    const struct request *req = arg;
    struct connection *conn = req->conn;
    nursery_result_t *reply;

    int rc = nursery_future_create(&reply);
    if (rc != 0)
        return nursery_fail(rc, "no future: %s", nursery_strerror(rc));

    /* File the future before the request goes out: the reply may arrive
     * before nursery_channel_send() even returns. */
    pthread_mutex_lock(&conn->lock);
    conn->pending[req->id - FIRST_ID] = nursery_result_retain(reply);
    pthread_mutex_unlock(&conn->lock);

    rc = nursery_channel_send(conn->wire, (void *)(intptr_t)req->id, nursery_after_ms(2000));
    if (rc == 0)
        rc = nursery_result_wait(reply, nursery_after_ms(5000));
    if (rc != 0) {
        /* The table keeps its reference; whoever empties it releases it. */
        nursery_result_release(reply);
        return nursery_fail(rc, "no reply: %s", nursery_strerror(rc));
    }

    /* Done: either the reply's value, or the error the reader put there,
     * which becomes this task's own. */
    rc = nursery_result_value(reply, value);
    if (rc == NURSERY_EFAILED) {
        nursery_error_t *err;
        if (nursery_result_error(reply, &err) == 0 && err != NULL)
            rc = nursery_fail(nursery_error_code(err), "%s", nursery_error_message(err));
    }
    nursery_result_release(reply); /* after the last use of err, which it owns */
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The connection's reader: a plain pthread                                 */
/* ------------------------------------------------------------------------ */

/* Completes the future waiting for reply `id`.  Any thread may do this. */
static void dispatch_reply(struct connection *conn, int id)
{
    nursery_result_t *f = NULL;
    int rc;

    if (id >= FIRST_ID && id < FIRST_ID + NREQUESTS) {
        pthread_mutex_lock(&conn->lock);
        f = conn->pending[id - FIRST_ID];
        conn->pending[id - FIRST_ID] = NULL; /* the table's reference is ours now */
        pthread_mutex_unlock(&conn->lock);
    }
    if (f == NULL) {
        fprintf(stderr, "future_demux: reply %d matches no pending request\n", id);
        conn->failures++;
        return;
    }

    printf("reader: reply to request %d\n", id);
    if (id == REJECTED_ID)
        rc = nursery_future_fail(f, EPROTO, "server rejected it");
    else
        rc = nursery_future_set_value(f, (void *)answer_to(id));
    if (rc != 0) {
        fprintf(stderr, "future_demux: completing %d: %s\n", id, nursery_strerror(rc));
        conn->failures++;
    }
    nursery_result_release(f);
}

static void *reader_main(void *arg)
{
    struct connection *conn = arg;
    int ids[NREQUESTS];
    size_t n = 0;

    /* The server reads every pipelined request first (it ends early if the
     * client closes the wire)... */
    while (n < NREQUESTS) {
        void *item;
        int rc = nursery_channel_recv(conn->server, &item, nursery_after_ms(5000));
        if (rc != 0) {
            if (rc != NURSERY_EEOC)
                fprintf(stderr, "future_demux: server: %s\n", nursery_strerror(rc));
            break;
        }
        ids[n++] = (int)(intptr_t)item;
    }

    /* ...and answers them in an order of its own: shuffled. */
    unsigned seed = 12345;
    for (size_t i = n; i > 1; i--) {
        seed = seed * 1103515245u + 12345u;
        size_t j = (seed >> 16) % i;
        int t = ids[i - 1];
        ids[i - 1] = ids[j];
        ids[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        dispatch_reply(conn, ids[i]);
    return NULL;
}

/* ------------------------------------------------------------------------ */

int main(void)
{
    struct connection conn = {.lock = PTHREAD_MUTEX_INITIALIZER};
    struct request requests[NREQUESTS];
    nursery_result_t *results[NREQUESTS] = {NULL};
    nursery_errors_t *errors = NULL;
    nursery_t *n;
    pthread_t reader;
    int status = 0;

    /* Capacity NREQUESTS: sending a request never waits for the server. */
    int rc = nursery_channel_create(NREQUESTS, NULL, &conn.wire, &conn.server);
    if (rc != 0) {
        fprintf(stderr, "future_demux: channel: %s\n", nursery_strerror(rc));
        return 1;
    }
    rc = pthread_create(&reader, NULL, reader_main, &conn);
    if (rc != 0) {
        fprintf(stderr, "future_demux: pthread_create: %s\n", nursery_strerror(rc));
        nursery_sender_free(conn.wire);
        nursery_receiver_free(conn.server);
        return 1;
    }

    rc = nursery_open(&n, NULL);
    if (rc != 0) {
        fprintf(stderr, "future_demux: nursery_open: %s\n", nursery_strerror(rc));
        status = 1;
    } else {
        for (int i = 0; i < NREQUESTS; i++) {
            char name[32];
            requests[i] = (struct request){.conn = &conn, .id = FIRST_ID + i};
            snprintf(name, sizeof name, "request %d", requests[i].id);
            /* A rejected request is this task's own business: suppressed,
             * its error stays in its result and does not cancel the rest. */
            nursery_task_options_t opts = {.name = name, .flags = NURSERY_TASK_SUPPRESS_ERROR};
            rc = nursery_capture_start_soon(n, send_request, &requests[i], &opts, &results[i]);
            if (rc != 0) {
                fprintf(stderr, "future_demux: start: %s\n", nursery_strerror(rc));
                nursery_cancel(n);
                status = 1;
                break;
            }
        }
        rc = nursery_join(n, NURSERY_FOREVER, &errors);
        if (rc != 0) {
            fprintf(stderr, "future_demux: join: %s\n", nursery_strerror(rc));
            status = 1;
        }
        nursery_errors_free(errors);
    }

    /* Hang up: a server still waiting for requests sees the end of the
     * channel, so the reader ends even if some request was never sent. */
    nursery_sender_free(conn.wire);
    pthread_join(reader, NULL);
    nursery_receiver_free(conn.server);
    if (conn.failures != 0)
        status = 1;
    for (int i = 0; i < NREQUESTS; i++) {
        if (conn.pending[i] != NULL) {
            fprintf(stderr, "future_demux: request %d never got a reply\n", FIRST_ID + i);
            nursery_result_release(conn.pending[i]);
            status = 1;
        }
    }

    /* Every request must have received its own answer, and only the
     * rejected one an error. */
    for (int i = 0; i < NREQUESTS && results[i] != NULL; i++) {
        int id = requests[i].id;
        void *value;
        nursery_error_t *err;

        rc = nursery_result_value(results[i], &value);
        if (rc == 0) {
            printf("request %d: answer %ld\n", id, (long)(intptr_t)value);
            if ((intptr_t)value != answer_to(id) || id == REJECTED_ID)
                status = 1;
        } else if (rc == NURSERY_EFAILED && nursery_result_error(results[i], &err) == 0) {
            printf("request %d: failed: %s (%s)\n", id, nursery_error_message(err),
                   nursery_strerror(nursery_error_code(err)));
            if (id != REJECTED_ID || nursery_error_code(err) != EPROTO)
                status = 1;
        } else {
            printf("request %d: %s\n", id, nursery_strerror(rc));
            status = 1;
        }
        nursery_result_release(results[i]);
    }

    puts(status == 0 ? "every reply reached its request" : "MISMATCH");
    return status;
}
