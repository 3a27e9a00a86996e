/* SPDX-License-Identifier: MIT */
/*
 * channel.c - bounded multi-producer multi-consumer channels of void * items
 * (Trio's memory channels), reached through send and receive ends.
 *
 * Owns: the channel core (a ring buffer of `capacity` items, the queues of
 * blocked senders and receivers, the counts of open ends) and the ends.  The
 * core is reference-counted by its ends and freed with the last one.  Frees
 * of different ends may run at once on different threads, so an end drops
 * its reference only when it is done with the core: freeing the last
 * receive end destroys the items its close drained from the ring first.
 *
 * Locking: one mutex per channel, ch->mu, protects everything in the core,
 * the `closed` flag of each of its ends and every wait record queued on it.
 * Nothing else is taken under it except waiter.mu (nursery__waiter_signal), as the
 * lock order in internal.h allows.  item_destroy is never called under it.
 *
 * A blocked send or recv is a wait record (struct chan_op) on the blocked
 * thread's stack, queued on send_waiting or recv_waiting.  The thread that
 * makes progress possible completes the record itself, under ch->mu: it
 * moves the item (into the ring, or straight from sender to receiver), sets
 * `done` and the result, unqueues the record and signals its waiter.  So
 * whether an operation happened is decided once, under the lock, by `done`:
 * a send that times out or is cancelled at the moment a receiver takes its
 * item either was taken (done: it returns 0, even past its deadline) or was
 * not (the caller unqueues it under the lock and keeps the item).  Nothing
 * is ever lost or delivered twice.  Records and waiters live on stacks; they
 * stay valid while signalled because their owner must take ch->mu again
 * (detach, then the final check) before it returns.  The queues are lists
 * of these records rather than struct waitq, because a waker needs the
 * oldest record's item and must hand it a result, not only a wake-up.
 *
 * fork(): a channel belongs to the process that made it.  In the child of
 * a fork(), the threads blocked on a channel of the parent's do not exist
 * and ch->mu may have been copied locked by one of them; an item handed to
 * such a receiver would be lost.  So an end made before the fork refuses
 * every call with NURSERY_EFORKED without touching the lock (the fork
 * generation is fixed, read without it), and its free does nothing: the
 * core and its items are the parent's, copied.
 *
 * Invariants, whenever ch->mu is free:
 *   - senders wait only on a full buffer: send_waiting non-empty implies
 *     count == capacity (every receive that frees a slot refills it from the
 *     oldest waiting sender);
 *   - receivers wait only on an empty channel: recv_waiting non-empty
 *     implies count == 0 and send_waiting empty;
 *   - FIFO: items leave in the order they were offered: the ring oldest
 *     first, then the waiting senders oldest first;
 *   - open_senders == 0 implies send_waiting empty (closing an end fails the
 *     sends blocked on it), and recv_waiting empty too (the last close
 *     ends every blocked recv with NURSERY_EEOC);
 *   - open_receivers == 0 implies count == 0 and both queues empty: the
 *     ring is never touched again.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>

/* ---- structures -------------------------------------------------------- */

/* A thread blocked in send or recv.  Lives on its stack for one call. */
struct chan_op {
    struct list link;      /* in send_waiting or recv_waiting while queued (!done); ch->mu */
    struct channel *ch;    /* the channel; fixed */
    const void *end;       /* the end the call came through, failed when that end closes; fixed */
    bool sending;          /* a send (else a recv); fixed */
    void *item;            /* send: the item offered; recv: the item taken, once done; ch->mu */
    struct waiter *waiter; /* the parked thread's waiter between attach and detach, else NULL;
                            * ch->mu */
    bool done;             /* set once, by whoever completes the record; ch->mu */
    int result;            /* once done: 0, EPIPE, NURSERY_EEOC or NURSERY_ECLOSED; ch->mu */
};

struct channel {
    pthread_mutex_t mu;           /* protects everything below that is not fixed */
    size_t capacity;              /* ring slots, 0 for rendezvous; fixed */
    void **ring;                  /* the buffer (NULL when capacity is 0); fixed pointer;
                                   * slots under mu until the ring is drained (struct drained) */
    size_t head;                  /* slot of the oldest buffered item; moves on each take */
    size_t count;                 /* items buffered, 0..capacity */
    struct list send_waiting;     /* chan_op of blocked sends, oldest first */
    struct list recv_waiting;     /* chan_op of blocked recvs, oldest first */
    size_t nsend_waiting;         /* length of send_waiting, for stats */
    size_t nrecv_waiting;         /* length of recv_waiting, for stats */
    size_t open_senders;          /* send ends not closed; once 0, stays 0 (nothing to clone) */
    size_t open_receivers;        /* receive ends not closed; once 0, stays 0 */
    size_t ends;                  /* ends not freed (open or closed): the reference count */
    void (*item_destroy)(void *); /* for items left when the last receiver closes; fixed */
    unsigned generation;          /* fork generation at creation; fixed */
};

/* The two ends.  Separate types so that the compiler keeps them apart. */
struct nursery_sender {
    struct channel *ch; /* fixed */
    bool closed;        /* set once by close or free; ch->mu */
};

struct nursery_receiver {
    struct channel *ch; /* fixed */
    bool closed;        /* set once by close or free; ch->mu */
};

/* Items taken out of a dead ring, to destroy after ch->mu is released.
 * Filled once by the last receiver close; read-only afterwards. */
struct drained {
    void **ring;             /* ch->ring, which nobody else touches any more */
    size_t capacity;         /* ch->capacity, for the wrap-around */
    size_t head;             /* slot of the oldest item left */
    size_t count;            /* items left (0: nothing to do) */
    void (*destroy)(void *); /* ch->item_destroy (NULL: the items are dropped) */
};

/* ---- the ring and the wait records (ch->mu held) ----------------------- */

static void ring_push(struct channel *ch, void *item)
{
    ch->ring[(ch->head + ch->count) % ch->capacity] = item;
    ch->count++;
}

static void *ring_pop(struct channel *ch)
{
    void *item = ch->ring[ch->head];
    ch->head = (ch->head + 1) % ch->capacity;
    ch->count--;
    return item;
}

static void op_enqueue(struct channel *ch, struct chan_op *op)
{
    if (op->sending) {
        list_push_back(&ch->send_waiting, &op->link);
        ch->nsend_waiting++;
    } else {
        list_push_back(&ch->recv_waiting, &op->link);
        ch->nrecv_waiting++;
    }
}

static void op_dequeue(struct channel *ch, struct chan_op *op)
{
    list_remove(&op->link);
    if (op->sending)
        ch->nsend_waiting--;
    else
        ch->nrecv_waiting--;
}

/* Ends a blocked operation on the owner's behalf and wakes it.  The waiter
 * is signalled under ch->mu, so it cannot be gone (see the header). */
static void op_complete(struct channel *ch, struct chan_op *op, int result)
{
    op_dequeue(ch, op);
    op->result = result;
    op->done = true;
    if (op->waiter)
        nursery__waiter_signal(op->waiter);
}

static struct chan_op *op_oldest(struct list *queue)
{
    struct list *first = list_first(queue);
    return first ? list_entry(first, struct chan_op, link) : NULL;
}

/* Completes with `result` every record of `queue` that came through `end`
 * (every record when end is NULL). */
static void op_fail_all(struct channel *ch, struct list *queue, const void *end, int result)
{
    struct list *pos = queue->next;
    while (pos != queue) {
        struct chan_op *op = list_entry(pos, struct chan_op, link);
        pos = pos->next; /* op leaves the queue */
        if (!end || op->end == end)
            op_complete(ch, op, result);
    }
}

/* ---- the operations (ch->mu held) -------------------------------------- */

/* Sends without blocking: 0, NURSERY_ECLOSED, EPIPE or EAGAIN (the caller
 * must wait; nothing changed). */
static int send_locked(struct channel *ch, const nursery_sender_t *tx, void *item)
{
    if (unlikely(tx->closed))
        return NURSERY_ECLOSED;
    if (unlikely(ch->open_receivers == 0))
        return EPIPE;
    /* A waiting receiver means an empty buffer: hand the item over. */
    struct chan_op *rx = op_oldest(&ch->recv_waiting);
    if (rx) {
        rx->item = item;
        op_complete(ch, rx, 0);
        return 0;
    }
    /* Space means no sender waits before us (invariant), so FIFO holds. */
    if (ch->count < ch->capacity) {
        ring_push(ch, item);
        return 0;
    }
    return EAGAIN;
}

/* Receives without blocking: 0 with *item, NURSERY_ECLOSED, NURSERY_EEOC or
 * EAGAIN (the caller must wait; nothing changed). */
static int recv_locked(struct channel *ch, const nursery_receiver_t *rx, void **item)
{
    if (unlikely(rx->closed))
        return NURSERY_ECLOSED;
    struct chan_op *tx = op_oldest(&ch->send_waiting);
    if (ch->count > 0) {
        *item = ring_pop(ch);
        /* The freed slot goes to the oldest blocked sender: its item is
         * younger than everything buffered, so it goes at the tail. */
        if (tx) {
            ring_push(ch, tx->item);
            op_complete(ch, tx, 0);
        }
        return 0;
    }
    if (tx) { /* rendezvous: straight from the sender */
        *item = tx->item;
        op_complete(ch, tx, 0);
        return 0;
    }
    if (ch->open_senders == 0)
        return NURSERY_EEOC;
    return EAGAIN;
}

/* ---- blocking ---------------------------------------------------------- */

/* The record is queued before nursery__block() runs, in the same critical
 * section as the failed attempt, so that a sender and a receiver can never
 * both decide to wait.  attach and detach only lend it the waiter. */

static bool op_ready(void *ctx)
{
    struct chan_op *op = ctx;
    pthread_mutex_lock(&op->ch->mu);
    bool done = op->done;
    pthread_mutex_unlock(&op->ch->mu);
    return done;
}

static void op_attach(void *ctx, struct waiter *w)
{
    struct chan_op *op = ctx;
    pthread_mutex_lock(&op->ch->mu);
    op->waiter = w;
    pthread_mutex_unlock(&op->ch->mu);
}

static void op_detach(void *ctx)
{
    struct chan_op *op = ctx;
    pthread_mutex_lock(&op->ch->mu);
    op->waiter = NULL; /* w is about to go; a later completion only sets done */
    pthread_mutex_unlock(&op->ch->mu);
}

static void op_describe(void *ctx, struct blocked_on *b)
{
    struct chan_op *op = ctx;
    *b = (struct blocked_on){.kind = op->sending ? BLOCKED_SEND : BLOCKED_RECV,
                             .object = op->ch};
}

static const struct block_ops op_block_ops = {
    .ready = op_ready,
    .attach = op_attach,
    .detach = op_detach,
    .help = NULL,
    .describe = op_describe,
};

/* Waits for a queued record.  `done`, read under the lock, decides: a
 * record completed after the deadline or the cancellation still counts. */
static int op_wait(struct chan_op *op, nursery_time_t deadline)
{
    struct channel *ch = op->ch;
    int rc = nursery__block(&op_block_ops, op, deadline, 0);
    pthread_mutex_lock(&ch->mu);
    if (op->done)
        rc = op->result;
    else
        op_dequeue(ch, op); /* rc is ETIMEDOUT or ECANCELED; the item stays the caller's */
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

/* ---- creation and destruction ------------------------------------------ */

/* Whether the channel was made before a fork() and this is the child: the
 * first thing every call on an end checks, after its arguments. */
static bool channel_forked(const struct channel *ch)
{
    return unlikely(nursery__forked(ch->generation));
}

static void channel_destroy(struct channel *ch)
{
    pthread_mutex_destroy(&ch->mu);
    free(ch->ring);
    free(ch);
}

int nursery_channel_create(size_t capacity, void (*item_destroy)(void *item), nursery_sender_t **tx,
                           nursery_receiver_t **rx)
{
    if (tx)
        *tx = NULL;
    if (rx)
        *rx = NULL;
    if (unlikely(!tx || !rx))
        return EINVAL;

    struct channel *ch;
    nursery_sender_t *s;
    nursery_receiver_t *r;
    ch = calloc(1, sizeof(*ch));
    if (unlikely(!ch))
        goto error0;
    if (capacity > 0) {
        ch->ring = calloc(capacity, sizeof(*ch->ring)); /* overflow checked by calloc */
        if (unlikely(!ch->ring))
            goto error1;
    }
    s = malloc(sizeof(*s));
    if (unlikely(!s))
        goto error1;
    r = malloc(sizeof(*r));
    if (unlikely(!r))
        goto error2;

    pthread_mutex_init(&ch->mu, NULL);
    ch->capacity = capacity;
    list_init(&ch->send_waiting);
    list_init(&ch->recv_waiting);
    ch->open_senders = 1;
    ch->open_receivers = 1;
    ch->ends = 2;
    ch->item_destroy = item_destroy;
    ch->generation = nursery__generation();
    *s = (nursery_sender_t){.ch = ch, .closed = false};
    *r = (nursery_receiver_t){.ch = ch, .closed = false};
    *tx = s;
    *rx = r;
    return 0;

error2:
    free(s);
error1:
    free(ch->ring);
    free(ch);
error0:
    return ENOMEM;
}

/* ---- send and receive -------------------------------------------------- */

int nursery_channel_send(nursery_sender_t *tx, void *item, nursery_time_t deadline)
{
    if (unlikely(!tx))
        return EINVAL;
    if (channel_forked(tx->ch))
        return NURSERY_EFORKED;
    /* A cancellation point even when the send could complete (as Trio). */
    int rc = nursery_checkpoint();
    if (unlikely(rc))
        return rc;
    struct channel *ch = tx->ch;
    pthread_mutex_lock(&ch->mu);
    rc = send_locked(ch, tx, item);
    if (likely(rc != EAGAIN)) {
        pthread_mutex_unlock(&ch->mu);
        return rc;
    }
    struct chan_op op = {.ch = ch, .end = tx, .sending = true, .item = item};
    op_enqueue(ch, &op);
    pthread_mutex_unlock(&ch->mu);
    return op_wait(&op, deadline);
}

int nursery_channel_try_send(nursery_sender_t *tx, void *item)
{
    if (unlikely(!tx))
        return EINVAL;
    struct channel *ch = tx->ch;
    if (channel_forked(ch))
        return NURSERY_EFORKED;
    pthread_mutex_lock(&ch->mu);
    int rc = send_locked(ch, tx, item);
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

int nursery_channel_recv(nursery_receiver_t *rx, void **item, nursery_time_t deadline)
{
    if (unlikely(!rx || !item))
        return EINVAL;
    if (channel_forked(rx->ch))
        return NURSERY_EFORKED;
    int rc = nursery_checkpoint();
    if (unlikely(rc))
        return rc;
    struct channel *ch = rx->ch;
    pthread_mutex_lock(&ch->mu);
    rc = recv_locked(ch, rx, item);
    if (likely(rc != EAGAIN)) {
        pthread_mutex_unlock(&ch->mu);
        return rc;
    }
    struct chan_op op = {.ch = ch, .end = rx, .sending = false};
    op_enqueue(ch, &op);
    pthread_mutex_unlock(&ch->mu);
    rc = op_wait(&op, deadline);
    if (rc == 0)
        *item = op.item;
    return rc;
}

int nursery_channel_try_recv(nursery_receiver_t *rx, void **item)
{
    if (unlikely(!rx || !item))
        return EINVAL;
    struct channel *ch = rx->ch;
    if (channel_forked(ch))
        return NURSERY_EFORKED;
    pthread_mutex_lock(&ch->mu);
    int rc = recv_locked(ch, rx, item);
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

/* ---- cloning, closing and freeing ends --------------------------------- */

/* What cloning an end of either kind does under the lock: refuse a closed
 * end, else count one more open end of its kind (*open). */
static int count_clone(struct channel *ch, const bool *closed, size_t *open)
{
    pthread_mutex_lock(&ch->mu);
    int rc = *closed ? NURSERY_ECLOSED : 0;
    if (rc == 0) {
        ++*open;
        ch->ends++;
    }
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

int nursery_sender_clone(nursery_sender_t *tx, nursery_sender_t **out)
{
    if (out)
        *out = NULL;
    if (unlikely(!tx || !out))
        return EINVAL;
    if (channel_forked(tx->ch))
        return NURSERY_EFORKED;
    nursery_sender_t *s = malloc(sizeof(*s));
    if (unlikely(!s))
        return ENOMEM;
    int rc = count_clone(tx->ch, &tx->closed, &tx->ch->open_senders);
    if (rc) {
        free(s);
        return rc;
    }
    *s = (nursery_sender_t){.ch = tx->ch, .closed = false};
    *out = s;
    return 0;
}

int nursery_receiver_clone(nursery_receiver_t *rx, nursery_receiver_t **out)
{
    if (out)
        *out = NULL;
    if (unlikely(!rx || !out))
        return EINVAL;
    if (channel_forked(rx->ch))
        return NURSERY_EFORKED;
    nursery_receiver_t *r = malloc(sizeof(*r));
    if (unlikely(!r))
        return ENOMEM;
    int rc = count_clone(rx->ch, &rx->closed, &rx->ch->open_receivers);
    if (rc) {
        free(r);
        return rc;
    }
    *r = (nursery_receiver_t){.ch = rx->ch, .closed = false};
    *out = r;
    return 0;
}

/* Closes an open send end: its own blocked sends fail with ECLOSED; after
 * the last one, blocked receivers (the buffer is then empty) get EEOC. */
static void sender_close_locked(struct channel *ch, nursery_sender_t *tx)
{
    tx->closed = true;
    op_fail_all(ch, &ch->send_waiting, tx, NURSERY_ECLOSED);
    if (--ch->open_senders == 0)
        op_fail_all(ch, &ch->recv_waiting, NULL, NURSERY_EEOC);
}

/* Closes an open receive end: its own blocked receives fail with ECLOSED;
 * after the last one, blocked senders get EPIPE (keeping their items) and
 * the buffered items are moved to *d, to be destroyed without the lock:
 * nobody touches the ring once no receiver is open. */
static void receiver_close_locked(struct channel *ch, nursery_receiver_t *rx, struct drained *d)
{
    rx->closed = true;
    op_fail_all(ch, &ch->recv_waiting, rx, NURSERY_ECLOSED);
    if (--ch->open_receivers > 0)
        return;
    op_fail_all(ch, &ch->send_waiting, NULL, EPIPE);
    *d = (struct drained){.ring = ch->ring,
                          .capacity = ch->capacity,
                          .head = ch->head,
                          .count = ch->count,
                          .destroy = ch->item_destroy};
    ch->count = 0;
}

/* Reads the ring without the lock: the caller still holds its end's
 * reference, so the ring is not freed under it (see receiver_close). */
static void drained_destroy(const struct drained *d)
{
    if (!d->destroy)
        return;
    for (size_t i = 0; i < d->count; i++)
        d->destroy(d->ring[(d->head + i) % d->capacity]);
}

/* Close and free share these two: free is close (if the end is still open)
 * followed by dropping the end's reference.  Returns 0 or NURSERY_ECLOSED
 * (closed before; nothing to do). */
static int sender_close(nursery_sender_t *tx)
{
    struct channel *ch = tx->ch;
    pthread_mutex_lock(&ch->mu);
    int rc = tx->closed ? NURSERY_ECLOSED : 0;
    if (rc == 0)
        sender_close_locked(ch, tx);
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

/* The drained items are destroyed after the lock is released (item_destroy
 * may take its own locks or be slow) but before the caller can drop its
 * reference: from the moment it does, a free of another end on another
 * thread may free the ring they are read from. */
static int receiver_close(nursery_receiver_t *rx)
{
    struct channel *ch = rx->ch;
    struct drained d = {0};
    pthread_mutex_lock(&ch->mu);
    int rc = rx->closed ? NURSERY_ECLOSED : 0;
    if (rc == 0)
        receiver_close_locked(ch, rx, &d);
    pthread_mutex_unlock(&ch->mu);
    drained_destroy(&d);
    return rc;
}

/* Drops one end's reference to the core; the last one frees it.  Taking
 * ch->mu orders every other end's use of the core (each made under or
 * before its own release) before channel_destroy. */
static void channel_release(struct channel *ch)
{
    pthread_mutex_lock(&ch->mu);
    bool last = --ch->ends == 0;
    pthread_mutex_unlock(&ch->mu);
    if (last)
        channel_destroy(ch);
}

int nursery_sender_close(nursery_sender_t *tx)
{
    if (unlikely(!tx))
        return EINVAL;
    if (channel_forked(tx->ch))
        return NURSERY_EFORKED;
    return sender_close(tx);
}

int nursery_receiver_close(nursery_receiver_t *rx)
{
    if (unlikely(!rx))
        return EINVAL;
    if (channel_forked(rx->ch))
        return NURSERY_EFORKED;
    return receiver_close(rx);
}

void nursery_sender_free(nursery_sender_t *tx)
{
    if (!tx || channel_forked(tx->ch))
        return;
    struct channel *ch = tx->ch;
    (void)sender_close(tx); /* NURSERY_ECLOSED: closed before, nothing to undo */
    free(tx);
    channel_release(ch);
}

void nursery_receiver_free(nursery_receiver_t *rx)
{
    if (!rx || channel_forked(rx->ch))
        return;
    struct channel *ch = rx->ch;
    (void)receiver_close(rx); /* destroys what it drained, the reference still held */
    free(rx);
    channel_release(ch);
}

/* ---- statistics -------------------------------------------------------- */

static void channel_stats(struct channel *ch, nursery_channel_stats_t *out)
{
    pthread_mutex_lock(&ch->mu);
    *out = (nursery_channel_stats_t){.buffered = ch->count,
                                     .capacity = ch->capacity,
                                     .open_senders = ch->open_senders,
                                     .open_receivers = ch->open_receivers,
                                     .waiting_senders = ch->nsend_waiting,
                                     .waiting_receivers = ch->nrecv_waiting};
    pthread_mutex_unlock(&ch->mu);
}

int nursery_sender_stats(const nursery_sender_t *tx, nursery_channel_stats_t *out)
{
    if (unlikely(!tx || !out))
        return EINVAL;
    if (channel_forked(tx->ch))
        return NURSERY_EFORKED;
    channel_stats(tx->ch, out);
    return 0;
}

int nursery_receiver_stats(const nursery_receiver_t *rx, nursery_channel_stats_t *out)
{
    if (unlikely(!rx || !out))
        return EINVAL;
    if (channel_forked(rx->ch))
        return NURSERY_EFORKED;
    channel_stats(rx->ch, out);
    return 0;
}
