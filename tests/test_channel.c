/* SPDX-License-Identifier: MIT */
/*
 * test_channel.c - tests of src/channel.c: FIFO order, rendezvous, bounded
 * buffers, deadlines, cancellation, closing, cloned ends, statistics, a
 * multi-producer multi-consumer stress run, frees of different ends racing,
 * and ends used in the child of a fork().
 *
 * A test knows that a task is blocked in send or recv by watching the
 * channel's waiting counts (wait_blocked); nothing is ordered by sleeping.
 */
#include "helpers.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static nursery_pool_t *pool;

static void setup(void)
{
    pool = test_pool(4);
}

static void teardown(void)
{
    ck_assert_int_eq(nursery_pool_destroy(pool), 0);
}

/* ---- helpers ----------------------------------------------------------- */

/* Waits until exactly `senders` threads are blocked in send and `receivers`
 * in recv.  Returns false after TEST_HANG_MS. */
struct blocked_ends {
    const nursery_receiver_t *rx;
    size_t senders, receivers;
};

static bool ends_blocked(const void *ctx)
{
    const struct blocked_ends *b = ctx;
    nursery_channel_stats_t st;
    ck_assert_int_eq(nursery_receiver_stats(b->rx, &st), 0);
    return st.waiting_senders == b->senders && st.waiting_receivers == b->receivers;
}

static bool wait_blocked(const nursery_receiver_t *rx, size_t senders, size_t receivers)
{
    return poll_until(ends_blocked, &(struct blocked_ends){rx, senders, receivers});
}

static nursery_channel_stats_t stats_of(const nursery_receiver_t *rx)
{
    nursery_channel_stats_t st;
    ck_assert_int_eq(nursery_receiver_stats(rx, &st), 0);
    return st;
}

/* One send or recv run by a task; rc and item are read after the join. */
struct chan_call {
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    void *item; /* send: what to send; recv: what was received */
    nursery_time_t deadline;
    int rc;
};

static int send_task(void *arg, void **value)
{
    (void)value;
    struct chan_call *c = arg;
    c->rc = nursery_channel_send(c->tx, c->item, c->deadline);
    return 0;
}

static int recv_task(void *arg, void **value)
{
    (void)value;
    struct chan_call *c = arg;
    c->rc = nursery_channel_recv(c->rx, &c->item, c->deadline);
    return 0;
}

static void start(nursery_t *n, nursery_fn fn, struct chan_call *c)
{
    ck_assert_int_eq(nursery_start_soon(n, fn, c, NULL), 0);
}

static void join_ok(nursery_t *n)
{
    ck_assert_int_eq(nursery_join(n, nursery_after_ms(TEST_HANG_MS), NULL), 0);
}

/* item_destroy that counts calls per item: items are &destroyed[i]. */
#define NMARKS 8
static atomic_int destroyed[NMARKS];

static void count_destroy(void *item)
{
    atomic_fetch_add((atomic_int *)item, 1);
}

static void reset_destroyed(void)
{
    for (int i = 0; i < NMARKS; i++)
        atomic_store(&destroyed[i], 0);
}

static int destroyed_total(void)
{
    int total = 0;
    for (int i = 0; i < NMARKS; i++)
        total += atomic_load(&destroyed[i]);
    return total;
}

/* ---- arguments --------------------------------------------------------- */

START_TEST(create_rejects_null_outputs)
{
    nursery_sender_t *tx = INT2PTR(1);
    nursery_receiver_t *rx = NULL;
    ck_assert_int_eq(nursery_channel_create(1, NULL, NULL, &rx), EINVAL);
    ck_assert_ptr_null(rx);
    ck_assert_int_eq(nursery_channel_create(1, NULL, &tx, NULL), EINVAL);
    ck_assert_ptr_null(tx);
}
END_TEST

START_TEST(null_arguments_are_einval)
{
    nursery_sender_t *tx, *tx2;
    nursery_receiver_t *rx, *rx2;
    void *item;
    nursery_channel_stats_t st;
    ck_assert_int_eq(nursery_channel_create(1, NULL, &tx, &rx), 0);

    ck_assert_int_eq(nursery_channel_send(NULL, NULL, NURSERY_FOREVER), EINVAL);
    ck_assert_int_eq(nursery_channel_try_send(NULL, NULL), EINVAL);
    ck_assert_int_eq(nursery_channel_recv(NULL, &item, NURSERY_FOREVER), EINVAL);
    ck_assert_int_eq(nursery_channel_recv(rx, NULL, NURSERY_FOREVER), EINVAL);
    ck_assert_int_eq(nursery_channel_try_recv(NULL, &item), EINVAL);
    ck_assert_int_eq(nursery_channel_try_recv(rx, NULL), EINVAL);
    ck_assert_int_eq(nursery_sender_clone(NULL, &tx2), EINVAL);
    ck_assert_ptr_null(tx2);
    ck_assert_int_eq(nursery_sender_clone(tx, NULL), EINVAL);
    ck_assert_int_eq(nursery_receiver_clone(NULL, &rx2), EINVAL);
    ck_assert_ptr_null(rx2);
    ck_assert_int_eq(nursery_receiver_clone(rx, NULL), EINVAL);
    ck_assert_int_eq(nursery_sender_close(NULL), EINVAL);
    ck_assert_int_eq(nursery_receiver_close(NULL), EINVAL);
    ck_assert_int_eq(nursery_sender_stats(NULL, &st), EINVAL);
    ck_assert_int_eq(nursery_sender_stats(tx, NULL), EINVAL);
    ck_assert_int_eq(nursery_receiver_stats(NULL, &st), EINVAL);
    ck_assert_int_eq(nursery_receiver_stats(rx, NULL), EINVAL);
    nursery_sender_free(NULL);
    nursery_receiver_free(NULL);

    /* Nothing above touched the channel. */
    st = stats_of(rx);
    ck_assert_uint_eq(st.open_senders, 1);
    ck_assert_uint_eq(st.open_receivers, 1);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

/* ---- order and capacity ------------------------------------------------ */

START_TEST(items_arrive_in_fifo_order)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(8, NULL, &tx, &rx), 0);
    for (int i = 1; i <= 8; i++)
        ck_assert_int_eq(nursery_channel_send(tx, INT2PTR(i), NURSERY_FOREVER), 0);
    for (int i = 1; i <= 8; i++) {
        void *item = NULL;
        ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), 0);
        ck_assert_int_eq(PTR2INT(item), i);
    }
    /* The ring wraps around. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 5; i++)
            ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(100 + i)), 0);
        for (int i = 0; i < 5; i++) {
            void *item = NULL;
            ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
            ck_assert_int_eq(PTR2INT(item), 100 + i);
        }
    }
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(fifo_order_spans_buffer_and_blocked_senders)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(2, NULL, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_send(tx, INT2PTR(1), NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_channel_send(tx, INT2PTR(2), NURSERY_FOREVER), 0);

    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call a = {.tx = tx, .item = INT2PTR(3), .deadline = NURSERY_FOREVER};
    struct chan_call b = {.tx = tx, .item = INT2PTR(4), .deadline = NURSERY_FOREVER};
    start(n, send_task, &a);
    ck_assert(wait_blocked(rx, 1, 0));
    start(n, send_task, &b);
    ck_assert(wait_blocked(rx, 2, 0));

    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), 0);
    ck_assert_int_eq(PTR2INT(item), 1);
    /* The freed slot went to the oldest blocked sender. */
    nursery_channel_stats_t st = stats_of(rx);
    ck_assert_uint_eq(st.buffered, 2);
    ck_assert_uint_eq(st.waiting_senders, 1);
    for (int i = 2; i <= 4; i++) {
        ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), 0);
        ck_assert_int_eq(PTR2INT(item), i);
    }
    join_ok(n);
    ck_assert_int_eq(a.rc, 0);
    ck_assert_int_eq(b.rc, 0);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(full_buffer_try_send_is_eagain)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_create(2, NULL, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);
    ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(1)), 0);
    ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(2)), 0);
    ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(3)), EAGAIN);
    ck_assert_uint_eq(stats_of(rx).buffered, 2);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 1);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 2);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

/* ---- rendezvous -------------------------------------------------------- */

START_TEST(rendezvous_send_waits_for_a_receiver)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call s = {.tx = tx, .item = INT2PTR(42), .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, send_task, &s);
    ck_assert(wait_blocked(rx, 1, 0));
    ck_assert_uint_eq(stats_of(rx).buffered, 0);

    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, nursery_after_ms(TEST_HANG_MS)), 0);
    ck_assert_int_eq(PTR2INT(item), 42);
    join_ok(n);
    ck_assert_int_eq(s.rc, 0);
    ck_assert(wait_blocked(rx, 0, 0));
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(rendezvous_try_without_partner_is_eagain)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(1)), EAGAIN);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);
    nursery_channel_stats_t st = stats_of(rx);
    ck_assert_uint_eq(st.buffered, 0);
    ck_assert_uint_eq(st.capacity, 0);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(rendezvous_try_send_hands_to_blocked_receiver)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call r = {.rx = rx, .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, recv_task, &r);
    ck_assert(wait_blocked(rx, 0, 1));
    ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(7)), 0);
    join_ok(n);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(PTR2INT(r.item), 7);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(rendezvous_try_recv_takes_from_blocked_sender)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call s = {.tx = tx, .item = INT2PTR(9), .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, send_task, &s);
    ck_assert(wait_blocked(rx, 1, 0));
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 9);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);
    join_ok(n);
    ck_assert_int_eq(s.rc, 0);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

/* ---- deadlines and cancellation ---------------------------------------- */

START_TEST(send_past_deadline_times_out_and_keeps_item)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    reset_destroyed();
    ck_assert_int_eq(nursery_channel_create(1, count_destroy, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[0], nursery_after_ms(0)), 0);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[1], nursery_after_ms(0)), ETIMEDOUT);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[1], nursery_after_ms(20)), ETIMEDOUT);
    ck_assert_int_eq(destroyed_total(), 0);
    nursery_channel_stats_t st = stats_of(rx);
    ck_assert_uint_eq(st.buffered, 1);
    ck_assert_uint_eq(st.waiting_senders, 0);

    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, nursery_after_ms(0)), 0);
    ck_assert_ptr_eq(item, &destroyed[0]);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    ck_assert_int_eq(destroyed_total(), 0);
}
END_TEST

START_TEST(recv_past_deadline_times_out)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    void *item = INT2PTR(5);
    ck_assert_int_eq(nursery_channel_recv(rx, &item, nursery_after_ms(0)), ETIMEDOUT);
    nursery_time_t before = nursery_now();
    ck_assert_int_eq(nursery_channel_recv(rx, &item, nursery_after_ms(20)), ETIMEDOUT);
    ck_assert_int_ge(nursery_now() - before, 20 * 1000000);
    ck_assert_int_eq(PTR2INT(item), 5); /* untouched on failure */
    ck_assert_uint_eq(stats_of(rx).waiting_receivers, 0);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(cancel_wakes_blocked_recv)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(4, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call r = {.rx = rx, .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, recv_task, &r);
    ck_assert(wait_blocked(rx, 0, 1));
    ck_assert_int_eq(nursery_cancel(n), 0);
    join_ok(n);
    ck_assert_int_eq(r.rc, ECANCELED);
    ck_assert_uint_eq(stats_of(rx).waiting_receivers, 0);
    /* The channel still works. */
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_send(tx, INT2PTR(1)), 0);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 1);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(cancel_wakes_blocked_send_and_keeps_item)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call s = {.tx = tx, .item = INT2PTR(3), .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, send_task, &s);
    ck_assert(wait_blocked(rx, 1, 0));
    ck_assert_int_eq(nursery_cancel(n), 0);
    join_ok(n);
    ck_assert_int_eq(s.rc, ECANCELED);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN); /* not delivered */
    ck_assert_uint_eq(stats_of(rx).waiting_senders, 0);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

struct cancelled_call {
    nursery_t *n;
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    int send_rc, recv_rc, try_rc;
};

static int send_after_cancel_task(void *arg, void **value)
{
    (void)value;
    struct cancelled_call *c = arg;
    void *item = NULL;
    nursery_cancel(c->n);
    c->send_rc = nursery_channel_send(c->tx, INT2PTR(1), NURSERY_FOREVER);
    c->try_rc = nursery_channel_try_send(c->tx, INT2PTR(2));
    c->recv_rc = nursery_channel_recv(c->rx, &item, NURSERY_FOREVER);
    return 0;
}

START_TEST(blocking_calls_in_cancelled_task_fail_at_once)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(4, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct cancelled_call c = {.n = n, .tx = tx, .rx = rx, .send_rc = -1, .recv_rc = -1};
    ck_assert_int_eq(nursery_start_soon(n, send_after_cancel_task, &c, NULL), 0);
    join_ok(n);
    /* send and recv are cancellation points even when they could complete;
     * the try variants are not. */
    ck_assert_int_eq(c.send_rc, ECANCELED);
    ck_assert_int_eq(c.try_rc, 0);
    ck_assert_int_eq(c.recv_rc, ECANCELED);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
    ck_assert_int_eq(PTR2INT(item), 2);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

/* try_send and try_recv do not block, so they are not cancellation points:
 * in a cancelled task they succeed where send and recv, able to complete at
 * once as well, fail with ECANCELED. */
struct cancelled_try {
    nursery_t *n;
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    bool cancelled; /* what nursery_cancelled() said in the task */
    int send_rc, try_send_rc, recv_rc, try_recv_rc;
    void *item; /* what try_recv took */
};

static int try_after_cancel_task(void *arg, void **value)
{
    (void)value;
    struct cancelled_try *c = arg;
    void *item = INT2PTR(-1);
    nursery_cancel(c->n);
    c->cancelled = nursery_cancelled();
    c->send_rc = nursery_channel_send(c->tx, INT2PTR(1), NURSERY_FOREVER); /* room for it */
    c->try_send_rc = nursery_channel_try_send(c->tx, INT2PTR(2));
    c->recv_rc = nursery_channel_recv(c->rx, &item, NURSERY_FOREVER); /* 2 is there */
    c->try_recv_rc = nursery_channel_try_recv(c->rx, &c->item);
    return 0;
}

START_TEST(try_calls_in_cancelled_task_succeed)
{
    struct cancelled_try c = {.send_rc = -1, .try_send_rc = -1, .recv_rc = -1, .try_recv_rc = -1};
    ck_assert_int_eq(nursery_channel_create(4, NULL, &c.tx, &c.rx), 0);
    ck_assert_int_eq(nursery_open(&c.n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(c.n, try_after_cancel_task, &c, NULL), 0);
    join_ok(c.n);
    ck_assert(c.cancelled);
    ck_assert_int_eq(c.send_rc, ECANCELED);
    ck_assert_int_eq(c.try_send_rc, 0);
    ck_assert_int_eq(c.recv_rc, ECANCELED);
    ck_assert_int_eq(c.try_recv_rc, 0);
    ck_assert_int_eq(PTR2INT(c.item), 2);
    ck_assert_uint_eq(stats_of(c.rx).buffered, 0); /* send's 1 never went in */
    nursery_sender_free(c.tx);
    nursery_receiver_free(c.rx);
}
END_TEST

/* ---- closing ----------------------------------------------------------- */

START_TEST(last_sender_close_drains_then_eoc)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_create(4, NULL, &tx, &rx), 0);
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(nursery_channel_send(tx, INT2PTR(i), NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_sender_close(tx), 0);
    for (int i = 1; i <= 3; i++) {
        ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), 0);
        ck_assert_int_eq(PTR2INT(item), i);
    }
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), NURSERY_EEOC);
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), NURSERY_EEOC);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), NURSERY_EEOC);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(last_sender_close_wakes_blocked_receivers)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call r1 = {.rx = rx, .deadline = NURSERY_FOREVER, .rc = -1};
    struct chan_call r2 = {.rx = rx, .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, recv_task, &r1);
    start(n, recv_task, &r2);
    ck_assert(wait_blocked(rx, 0, 2));
    ck_assert_int_eq(nursery_sender_close(tx), 0);
    join_ok(n);
    ck_assert_int_eq(r1.rc, NURSERY_EEOC);
    ck_assert_int_eq(r2.rc, NURSERY_EEOC);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(last_receiver_close_destroys_buffered_items_once)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    reset_destroyed();
    ck_assert_int_eq(nursery_channel_create(4, count_destroy, &tx, &rx), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(nursery_channel_send(tx, &destroyed[i], NURSERY_FOREVER), 0);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), 0); /* now ours */
    ck_assert_int_eq(nursery_receiver_close(rx), 0);
    ck_assert_int_eq(atomic_load(&destroyed[0]), 0);
    for (int i = 1; i < 4; i++)
        ck_assert_int_eq(atomic_load(&destroyed[i]), 1);
    ck_assert_uint_eq(stats_of(rx).buffered, 0);

    /* Later sends fail and the item stays the caller's. */
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[4], NURSERY_FOREVER), EPIPE);
    ck_assert_int_eq(nursery_channel_try_send(tx, &destroyed[4]), EPIPE);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    ck_assert_int_eq(destroyed_total(), 3);
}
END_TEST

START_TEST(last_receiver_close_wakes_blocked_sender_with_epipe)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    reset_destroyed();
    ck_assert_int_eq(nursery_channel_create(1, count_destroy, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[0], NURSERY_FOREVER), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call s = {.tx = tx, .item = &destroyed[1], .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, send_task, &s);
    ck_assert(wait_blocked(rx, 1, 0));
    ck_assert_int_eq(nursery_receiver_close(rx), 0);
    join_ok(n);
    ck_assert_int_eq(s.rc, EPIPE);
    ck_assert_int_eq(atomic_load(&destroyed[0]), 1); /* was buffered */
    ck_assert_int_eq(atomic_load(&destroyed[1]), 0); /* still the sender's */
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(closed_end_is_eclosed)
{
    nursery_sender_t *tx, *tx2;
    nursery_receiver_t *rx, *rx2;
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_create(1, NULL, &tx, &rx), 0);
    ck_assert_int_eq(nursery_sender_close(tx), 0);
    ck_assert_int_eq(nursery_sender_close(tx), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_channel_send(tx, NULL, NURSERY_FOREVER), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_channel_try_send(tx, NULL), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_sender_clone(tx, &tx2), NURSERY_ECLOSED);
    ck_assert_ptr_null(tx2);

    ck_assert_int_eq(nursery_receiver_close(rx), 0);
    ck_assert_int_eq(nursery_receiver_close(rx), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), NURSERY_ECLOSED);
    ck_assert_int_eq(nursery_receiver_clone(rx, &rx2), NURSERY_ECLOSED);
    ck_assert_ptr_null(rx2);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(closing_an_end_fails_calls_blocked_on_it)
{
    nursery_sender_t *tx, *tx2;
    nursery_receiver_t *rx, *rx2;
    ck_assert_int_eq(nursery_channel_create(0, NULL, &tx, &rx), 0);
    ck_assert_int_eq(nursery_sender_clone(tx, &tx2), 0);
    ck_assert_int_eq(nursery_receiver_clone(rx, &rx2), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);

    /* A send blocked on tx ends when tx closes; tx2 keeps the channel open. */
    struct chan_call s = {.tx = tx, .item = INT2PTR(1), .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, send_task, &s);
    ck_assert(wait_blocked(rx, 1, 0));
    ck_assert_int_eq(nursery_sender_close(tx), 0);
    ck_assert(wait_blocked(rx, 0, 0));

    /* Same for a recv blocked on rx; rx2 keeps the channel open. */
    struct chan_call r = {.rx = rx, .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, recv_task, &r);
    ck_assert(wait_blocked(rx2, 0, 1));
    ck_assert_int_eq(nursery_receiver_close(rx), 0);
    join_ok(n);
    ck_assert_int_eq(s.rc, NURSERY_ECLOSED);
    ck_assert_int_eq(r.rc, NURSERY_ECLOSED);

    nursery_channel_stats_t st = stats_of(rx2);
    ck_assert_uint_eq(st.open_senders, 1);
    ck_assert_uint_eq(st.open_receivers, 1);
    ck_assert_uint_eq(st.waiting_senders + st.waiting_receivers, 0);
    nursery_sender_free(tx);
    nursery_sender_free(tx2);
    nursery_receiver_free(rx);
    nursery_receiver_free(rx2);
}
END_TEST

START_TEST(sender_clones_keep_channel_open)
{
    nursery_sender_t *tx, *tx2;
    nursery_receiver_t *rx;
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_create(2, NULL, &tx, &rx), 0);
    ck_assert_int_eq(nursery_sender_clone(tx, &tx2), 0);
    ck_assert_uint_eq(stats_of(rx).open_senders, 2);
    ck_assert_int_eq(nursery_sender_close(tx), 0);
    ck_assert_uint_eq(stats_of(rx).open_senders, 1);
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), EAGAIN); /* not EEOC */
    ck_assert_int_eq(nursery_channel_send(tx2, INT2PTR(5), NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), 0);
    ck_assert_int_eq(PTR2INT(item), 5);
    nursery_sender_free(tx2); /* closes the last send end */
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), NURSERY_EEOC);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

START_TEST(receiver_clones_keep_channel_open)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx, *rx2;
    void *item = NULL;
    reset_destroyed();
    ck_assert_int_eq(nursery_channel_create(2, count_destroy, &tx, &rx), 0);
    ck_assert_int_eq(nursery_receiver_clone(rx, &rx2), 0);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[0], NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_receiver_close(rx), 0);
    ck_assert_int_eq(destroyed_total(), 0); /* a receiver is still open */
    ck_assert_uint_eq(stats_of(rx2).open_receivers, 1);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[1], NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_channel_recv(rx2, &item, NURSERY_FOREVER), 0);
    ck_assert_ptr_eq(item, &destroyed[0]);
    nursery_receiver_free(rx2); /* the last receive end: destroys destroyed[1] */
    ck_assert_int_eq(atomic_load(&destroyed[1]), 1);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[2], NURSERY_FOREVER), EPIPE);
    ck_assert_int_eq(destroyed_total(), 1);
    nursery_receiver_free(rx);
    nursery_sender_free(tx);
}
END_TEST

START_TEST(free_closes_the_end)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    void *item = NULL;
    reset_destroyed();
    ck_assert_int_eq(nursery_channel_create(2, count_destroy, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[0], NURSERY_FOREVER), 0);
    nursery_sender_free(tx);
    ck_assert_uint_eq(stats_of(rx).open_senders, 0);
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_channel_recv(rx, &item, NURSERY_FOREVER), NURSERY_EEOC);
    nursery_receiver_free(rx);

    ck_assert_int_eq(nursery_channel_create(2, count_destroy, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[1], NURSERY_FOREVER), 0);
    ck_assert_int_eq(nursery_channel_send(tx, &destroyed[2], NURSERY_FOREVER), 0);
    nursery_receiver_free(rx);
    ck_assert_int_eq(atomic_load(&destroyed[1]), 1);
    ck_assert_int_eq(atomic_load(&destroyed[2]), 1);
    ck_assert_int_eq(nursery_channel_try_send(tx, &destroyed[3]), EPIPE);
    nursery_sender_free(tx);
    ck_assert_int_eq(destroyed_total(), 2);
}
END_TEST

/* ---- statistics -------------------------------------------------------- */

START_TEST(stats_count_items_ends_and_waiters)
{
    nursery_sender_t *tx, *tx2;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(3, NULL, &tx, &rx), 0);
    nursery_channel_stats_t st;
    ck_assert_int_eq(nursery_sender_stats(tx, &st), 0);
    ck_assert_uint_eq(st.buffered, 0);
    ck_assert_uint_eq(st.capacity, 3);
    ck_assert_uint_eq(st.open_senders, 1);
    ck_assert_uint_eq(st.open_receivers, 1);
    ck_assert_uint_eq(st.waiting_senders, 0);
    ck_assert_uint_eq(st.waiting_receivers, 0);

    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call r = {.rx = rx, .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, recv_task, &r);
    ck_assert(wait_blocked(rx, 0, 1));
    ck_assert_int_eq(nursery_channel_send(tx, INT2PTR(1), NURSERY_FOREVER), 0);
    join_ok(n);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(PTR2INT(r.item), 1);

    ck_assert_int_eq(nursery_sender_clone(tx, &tx2), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(nursery_channel_try_send(tx2, INT2PTR(i)), 0);
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call s = {.tx = tx, .item = INT2PTR(9), .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, send_task, &s);
    ck_assert(wait_blocked(rx, 1, 0));
    ck_assert_int_eq(nursery_sender_stats(tx2, &st), 0);
    ck_assert_uint_eq(st.buffered, 3);
    ck_assert_uint_eq(st.open_senders, 2);
    ck_assert_uint_eq(st.waiting_senders, 1);
    ck_assert_uint_eq(st.waiting_receivers, 0);
    ck_assert_int_eq(nursery_cancel(n), 0);
    join_ok(n);
    ck_assert_int_eq(s.rc, ECANCELED);
    st = stats_of(rx);
    ck_assert_uint_eq(st.buffered, 3);
    ck_assert_uint_eq(st.waiting_senders, 0);
    nursery_sender_free(tx2);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

/* ---- races ------------------------------------------------------------- */

#define STRESS_ITEMS 10000
#define RACE_ITEMS 2000
#define STRESS_PRODUCERS 4
#define STRESS_CONSUMERS 4

struct stress {
    nursery_receiver_t *rx;
    atomic_uchar seen[STRESS_PRODUCERS * STRESS_ITEMS];
    atomic_int errors;
    atomic_int received;
};

struct producer {
    struct stress *st;
    nursery_sender_t *tx; /* its own clone, freed when done */
    int index;
};

static int producer_task(void *arg, void **value)
{
    (void)value;
    struct producer *p = arg;
    for (int i = 0; i < STRESS_ITEMS; i++) {
        int item = p->index * STRESS_ITEMS + i + 1;
        if (nursery_channel_send(p->tx, INT2PTR(item), nursery_after_ms(TEST_HANG_MS)) != 0) {
            atomic_fetch_add(&p->st->errors, 1);
            break;
        }
    }
    nursery_sender_free(p->tx);
    return 0;
}

static int consumer_task(void *arg, void **value)
{
    (void)value;
    struct stress *st = arg;
    nursery_receiver_t *rx;
    if (nursery_receiver_clone(st->rx, &rx) != 0) {
        atomic_fetch_add(&st->errors, 1);
        return 0;
    }
    int last[STRESS_PRODUCERS];
    for (int p = 0; p < STRESS_PRODUCERS; p++)
        last[p] = -1;
    for (;;) {
        void *item;
        int rc = nursery_channel_recv(rx, &item, nursery_after_ms(TEST_HANG_MS));
        if (rc == NURSERY_EEOC)
            break;
        int v = PTR2INT(item) - 1;
        if (rc != 0 || v < 0 || v >= STRESS_PRODUCERS * STRESS_ITEMS) {
            atomic_fetch_add(&st->errors, 1);
            break;
        }
        /* FIFO: one consumer sees each producer's items in sending order. */
        int p = v / STRESS_ITEMS, i = v % STRESS_ITEMS;
        if (i <= last[p])
            atomic_fetch_add(&st->errors, 1);
        last[p] = i;
        atomic_fetch_add(&st->seen[v], 1);
        atomic_fetch_add(&st->received, 1);
    }
    nursery_receiver_free(rx);
    return 0;
}

START_TEST(mpmc_stress_delivers_every_item_once)
{
    nursery_pool_t *p8 = test_pool(STRESS_PRODUCERS + STRESS_CONSUMERS);
    struct stress *st = calloc(1, sizeof(*st));
    ck_assert_ptr_nonnull(st);
    nursery_sender_t *tx;
    ck_assert_int_eq(nursery_channel_create(16, NULL, &tx, &st->rx), 0);
    struct producer prod[STRESS_PRODUCERS];

    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, p8), 0);
    for (int c = 0; c < STRESS_CONSUMERS; c++)
        ck_assert_int_eq(nursery_start_soon(n, consumer_task, st, NULL), 0);
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        prod[i] = (struct producer){.st = st, .index = i};
        ck_assert_int_eq(nursery_sender_clone(tx, &prod[i].tx), 0);
        ck_assert_int_eq(nursery_start_soon(n, producer_task, &prod[i], NULL), 0);
    }
    nursery_sender_free(tx); /* the producers' clones now decide the end */
    join_ok(n);

    ck_assert_int_eq(atomic_load(&st->errors), 0);
    ck_assert_int_eq(atomic_load(&st->received), STRESS_PRODUCERS * STRESS_ITEMS);
    for (int v = 0; v < STRESS_PRODUCERS * STRESS_ITEMS; v++)
        ck_assert_int_eq(atomic_load(&st->seen[v]), 1);
    nursery_channel_stats_t s = stats_of(st->rx);
    ck_assert_uint_eq(s.buffered, 0);
    ck_assert_uint_eq(s.open_senders, 0);
    ck_assert_uint_eq(s.open_receivers, 1);
    nursery_receiver_free(st->rx);
    free(st);
    ck_assert_int_eq(nursery_pool_destroy(p8), 0);
}
END_TEST

/* Sends and receives with deadlines of a few microseconds on a rendezvous
 * channel, so that timeouts race with hand-offs: a send that timed out must
 * not have delivered its item, one that succeeded must have delivered it
 * exactly once. */
/* Well under the test's timeout, so a lost item fails an assertion. */
#define RACE_GIVE_UP_MS 20000

struct race {
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    int send_errors, recv_errors; /* each written by one task, read after join */
};

/* Deadlines of a few microseconds make timeouts race with hand-offs; after
 * many misses (a slow machine, valgrind) one long deadline lets the pair
 * meet, so the test checks what it means to, not how fast it runs. */
static nursery_time_t race_deadline(int64_t ns, int tries)
{
    return nursery_after_ns(tries > 0 && tries % 64 == 0 ? INT64_C(10000000) : ns);
}

static int race_sender(void *arg, void **value)
{
    (void)value;
    struct race *r = arg;
    nursery_time_t give_up = nursery_after_ms(RACE_GIVE_UP_MS);
    for (int i = 1; i <= RACE_ITEMS; i++) {
        int rc, tries = 0;
        do
            rc = nursery_channel_send(r->tx, INT2PTR(i), race_deadline(1000 * (i % 7), tries++));
        while (rc == ETIMEDOUT && nursery_now() < give_up);
        if (rc != 0)
            r->send_errors++;
    }
    return 0;
}

static int race_receiver(void *arg, void **value)
{
    (void)value;
    struct race *r = arg;
    nursery_time_t give_up = nursery_after_ms(RACE_GIVE_UP_MS);
    for (int i = 1; i <= RACE_ITEMS; i++) {
        int rc, tries = 0;
        void *item = NULL;
        do
            rc = nursery_channel_recv(r->rx, &item, race_deadline(1000 * (i % 5), tries++));
        while (rc == ETIMEDOUT && nursery_now() < give_up);
        if (rc != 0 || PTR2INT(item) != i)
            r->recv_errors++;
    }
    return 0;
}

START_TEST(timeouts_racing_with_hand_offs_lose_nothing)
{
    struct race r = {0};
    ck_assert_int_eq(nursery_channel_create(0, NULL, &r.tx, &r.rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    ck_assert_int_eq(nursery_start_soon(n, race_sender, &r, NULL), 0);
    ck_assert_int_eq(nursery_start_soon(n, race_receiver, &r, NULL), 0);
    join_ok(n);
    ck_assert_int_eq(r.send_errors, 0);
    ck_assert_int_eq(r.recv_errors, 0);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(r.rx, &item), EAGAIN); /* nothing left over */
    nursery_sender_free(r.tx);
    nursery_receiver_free(r.rx);
}
END_TEST

/* The last send end and the last receive end freed at the same moment by
 * two threads, with items buffered: the receiver's free destroys them, and
 * whichever free comes second frees the channel.  The items are on the heap
 * and counted, so an item_destroy handed a value read from a freed ring
 * shows as a wrong count, a crash, or a sanitizer report. */
#define FREE_RACE_ROUNDS 2000
#define FREE_RACE_ITEMS 512

struct counted_item {
    atomic_int *destroyed; /* this item's slot in free_race.destroyed */
};

static void counted_item_destroy(void *item)
{
    struct counted_item *it = item;
    atomic_fetch_add(it->destroyed, 1);
    free(it);
}

struct free_race {
    pthread_barrier_t go; /* releases both frees of a round together */
    nursery_sender_t *tx;
    atomic_int destroyed[FREE_RACE_ITEMS];
};

static void *free_sender_thread(void *arg)
{
    struct free_race *fr = arg;
    pthread_barrier_wait(&fr->go);
    nursery_sender_free(fr->tx);
    return NULL;
}

/* A channel with FREE_RACE_ITEMS heap items buffered; *rx gets its
 * receiver.  Per round, not per item, goes through Check's assertions:
 * each one that passes is a write to Check's log. */
static void fill_with_counted_items(struct free_race *fr, nursery_receiver_t **rx)
{
    ck_assert_int_eq(nursery_channel_create(FREE_RACE_ITEMS, counted_item_destroy, &fr->tx, rx), 0);
    int sent = 0;
    for (int i = 0; i < FREE_RACE_ITEMS; i++) {
        struct counted_item *it = malloc(sizeof(*it));
        if (!it)
            break;
        atomic_store(&fr->destroyed[i], 0);
        it->destroyed = &fr->destroyed[i];
        if (nursery_channel_try_send(fr->tx, it) != 0) {
            free(it);
            break;
        }
        sent++;
    }
    ck_assert_int_eq(sent, FREE_RACE_ITEMS);
}

/* The first item not destroyed exactly once, or -1. */
static int first_miscounted(struct free_race *fr)
{
    for (int i = 0; i < FREE_RACE_ITEMS; i++)
        if (atomic_load(&fr->destroyed[i]) != 1)
            return i;
    return -1;
}

START_TEST(frees_of_last_sender_and_receiver_race_safely)
{
    struct free_race *fr = calloc(1, sizeof(*fr));
    ck_assert_ptr_nonnull(fr);
    ck_assert_int_eq(pthread_barrier_init(&fr->go, NULL, 2), 0);
    for (int round = 0; round < FREE_RACE_ROUNDS; round++) {
        nursery_receiver_t *rx;
        fill_with_counted_items(fr, &rx);
        pthread_t sender;
        ck_assert_int_eq(pthread_create(&sender, NULL, free_sender_thread, fr), 0);
        pthread_barrier_wait(&fr->go);
        nursery_receiver_free(rx);
        ck_assert_int_eq(pthread_join(sender, NULL), 0);
        int i = first_miscounted(fr);
        ck_assert_msg(i < 0, "round %d: item %d destroyed %d times", round, i,
                      i < 0 ? 1 : atomic_load(&fr->destroyed[i]));
    }
    pthread_barrier_destroy(&fr->go);
    free(fr);
}
END_TEST

/* ---- fork -------------------------------------------------------------- */

/* A child of fork() checks what it is told to and reports through its exit
 * status: 0 when every step passed, else the number of the step that
 * failed.  Its ends are the parent's, so it does not free them (freeing
 * them does nothing there); these keep them reachable for leak checkers. */
static nursery_sender_t *volatile fork_child_keeps_tx; /* volatile: stores only, kept */
static nursery_receiver_t *volatile fork_child_keeps_rx;

static void run_in_child(int (*child)(nursery_sender_t *tx, nursery_receiver_t *rx),
                         nursery_sender_t *tx, nursery_receiver_t *rx)
{
    pid_t pid = fork_child(10);
    if (pid == 0) {
        fork_child_keeps_tx = tx;
        fork_child_keeps_rx = rx;
        _exit(child(tx, rx));
    }
    assert_child_passed(pid);
}

/* The receiver blocked in the parent does not exist in the child: a send
 * there must not hand it the item. */
static int child_sends_to_parent_receiver(nursery_sender_t *tx, nursery_receiver_t *rx)
{
    (void)rx;
    if (nursery_channel_send(tx, INT2PTR(1), NURSERY_FOREVER) != NURSERY_EFORKED)
        return 1;
    if (nursery_channel_send(tx, INT2PTR(1), nursery_after_ms(0)) != NURSERY_EFORKED)
        return 2;
    return 0;
}

START_TEST(fork_child_send_to_blocked_parent_receiver_is_eforked)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(1, NULL, &tx, &rx), 0);
    nursery_t *n;
    ck_assert_int_eq(nursery_open(&n, pool), 0);
    struct chan_call r = {.rx = rx, .deadline = NURSERY_FOREVER, .rc = -1};
    start(n, recv_task, &r);
    ck_assert(wait_blocked(rx, 0, 1));

    run_in_child(child_sends_to_parent_receiver, tx, rx);

    /* In the parent, the receiver is still waiting, for the parent's item. */
    ck_assert(wait_blocked(rx, 0, 1));
    ck_assert_int_eq(nursery_channel_send(tx, INT2PTR(2), NURSERY_FOREVER), 0);
    join_ok(n);
    ck_assert_int_eq(r.rc, 0);
    ck_assert_int_eq(PTR2INT(r.item), 2);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

/* Every call on the parent's ends refuses at once, and frees do nothing:
 * the buffered item is not destroyed. */
static int child_uses_parent_ends(nursery_sender_t *tx, nursery_receiver_t *rx)
{
    void *item = INT2PTR(-1);
    nursery_sender_t *tx2 = INT2PTR(1);
    nursery_receiver_t *rx2 = INT2PTR(1);
    nursery_channel_stats_t st = {.buffered = 99};
    if (nursery_channel_try_send(tx, &destroyed[1]) != NURSERY_EFORKED)
        return 1;
    if (nursery_channel_try_recv(rx, &item) != NURSERY_EFORKED || PTR2INT(item) != -1)
        return 2;
    if (nursery_channel_recv(rx, &item, NURSERY_FOREVER) != NURSERY_EFORKED || PTR2INT(item) != -1)
        return 3;
    if (nursery_sender_clone(tx, &tx2) != NURSERY_EFORKED || tx2 != NULL)
        return 4;
    if (nursery_receiver_clone(rx, &rx2) != NURSERY_EFORKED || rx2 != NULL)
        return 5;
    if (nursery_sender_stats(tx, &st) != NURSERY_EFORKED ||
        nursery_receiver_stats(rx, &st) != NURSERY_EFORKED || st.buffered != 99)
        return 6;
    if (nursery_sender_close(tx) != NURSERY_EFORKED)
        return 7;
    if (nursery_receiver_close(rx) != NURSERY_EFORKED)
        return 8;
    nursery_receiver_free(rx);
    nursery_sender_free(tx);
    if (destroyed_total() != 0)
        return 9;
    return 0;
}

START_TEST(fork_child_calls_on_parent_ends_are_eforked)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    reset_destroyed();
    ck_assert_int_eq(nursery_channel_create(2, count_destroy, &tx, &rx), 0);
    ck_assert_int_eq(nursery_channel_try_send(tx, &destroyed[0]), 0);

    run_in_child(child_uses_parent_ends, tx, rx);

    /* The parent's channel is as it was. */
    nursery_channel_stats_t st = stats_of(rx);
    ck_assert_uint_eq(st.buffered, 1);
    ck_assert_uint_eq(st.open_senders, 1);
    ck_assert_uint_eq(st.open_receivers, 1);
    void *item = NULL;
    ck_assert_int_eq(nursery_channel_try_recv(rx, &item), 0);
    ck_assert_ptr_eq(item, &destroyed[0]);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
    ck_assert_int_eq(destroyed_total(), 0);
}
END_TEST

/* A channel made in the child is the child's: it works there. */
static int child_makes_its_own_channel(nursery_sender_t *parent_tx, nursery_receiver_t *parent_rx)
{
    (void)parent_rx;
    if (nursery_channel_try_send(parent_tx, INT2PTR(1)) != NURSERY_EFORKED)
        return 1; /* this is the child of a fork */
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    void *item = NULL;
    if (nursery_channel_create(1, NULL, &tx, &rx) != 0)
        return 2;
    if (nursery_channel_send(tx, INT2PTR(7), NURSERY_FOREVER) != 0)
        return 3;
    if (nursery_channel_recv(rx, &item, NURSERY_FOREVER) != 0 || PTR2INT(item) != 7)
        return 4;
    if (nursery_channel_recv(rx, &item, nursery_after_ms(1)) != ETIMEDOUT)
        return 5;
    nursery_channel_stats_t st;
    if (nursery_sender_stats(tx, &st) != 0 || st.open_senders != 1 || st.open_receivers != 1)
        return 6;
    nursery_sender_free(tx);
    if (nursery_channel_recv(rx, &item, NURSERY_FOREVER) != NURSERY_EEOC)
        return 7;
    nursery_receiver_free(rx);
    return 0;
}

/* In a test case of its own, without the pool: the parent has one thread
 * when it forks, so the child may allocate even under the sanitizers,
 * whose allocators a thread that does not exist in the child could have
 * held locked at the fork. */
START_TEST(fork_child_channel_made_there_works)
{
    nursery_sender_t *tx;
    nursery_receiver_t *rx;
    ck_assert_int_eq(nursery_channel_create(1, NULL, &tx, &rx), 0);
    run_in_child(child_makes_its_own_channel, tx, rx);
    nursery_sender_free(tx);
    nursery_receiver_free(rx);
}
END_TEST

/* ---- the suite --------------------------------------------------------- */

static Suite *channel_suite(void)
{
    Suite *s = suite_create("channel");
    TCase *tc = tcase_with_timeout(s, "channel", 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, create_rejects_null_outputs);
    tcase_add_test(tc, null_arguments_are_einval);
    tcase_add_test(tc, items_arrive_in_fifo_order);
    tcase_add_test(tc, fifo_order_spans_buffer_and_blocked_senders);
    tcase_add_test(tc, full_buffer_try_send_is_eagain);
    tcase_add_test(tc, rendezvous_send_waits_for_a_receiver);
    tcase_add_test(tc, rendezvous_try_without_partner_is_eagain);
    tcase_add_test(tc, rendezvous_try_send_hands_to_blocked_receiver);
    tcase_add_test(tc, rendezvous_try_recv_takes_from_blocked_sender);
    tcase_add_test(tc, send_past_deadline_times_out_and_keeps_item);
    tcase_add_test(tc, recv_past_deadline_times_out);
    tcase_add_test(tc, cancel_wakes_blocked_recv);
    tcase_add_test(tc, cancel_wakes_blocked_send_and_keeps_item);
    tcase_add_test(tc, blocking_calls_in_cancelled_task_fail_at_once);
    tcase_add_test(tc, try_calls_in_cancelled_task_succeed);
    tcase_add_test(tc, last_sender_close_drains_then_eoc);
    tcase_add_test(tc, last_sender_close_wakes_blocked_receivers);
    tcase_add_test(tc, last_receiver_close_destroys_buffered_items_once);
    tcase_add_test(tc, last_receiver_close_wakes_blocked_sender_with_epipe);
    tcase_add_test(tc, closed_end_is_eclosed);
    tcase_add_test(tc, closing_an_end_fails_calls_blocked_on_it);
    tcase_add_test(tc, sender_clones_keep_channel_open);
    tcase_add_test(tc, receiver_clones_keep_channel_open);
    tcase_add_test(tc, free_closes_the_end);
    tcase_add_test(tc, stats_count_items_ends_and_waiters);
    tcase_add_test(tc, mpmc_stress_delivers_every_item_once);
    tcase_add_test(tc, timeouts_racing_with_hand_offs_lose_nothing);
    tcase_add_test(tc, frees_of_last_sender_and_receiver_race_safely);
    tcase_add_test(tc, fork_child_send_to_blocked_parent_receiver_is_eforked);
    tcase_add_test(tc, fork_child_calls_on_parent_ends_are_eforked);

    tc = tcase_with_timeout(s, "fork", 60);
    tcase_add_test(tc, fork_child_channel_made_there_works);
    return s;
}

int main(void)
{
    return run_suite(channel_suite());
}
