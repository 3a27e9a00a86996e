/* SPDX-License-Identifier: MIT */
/*
 * test_deque.c - the work-stealing deque of src/deque.h on its own: the
 * order each end gives, refusal when full, keyed take and steal, indices
 * that wrap around the ring, and an owner racing thieves, where every item
 * must come out exactly once.
 *
 * deque.h only stores task pointers, so `struct task` here is the test's
 * own item: an id, the key it was pushed with, and how often it came out.
 * Nothing of the library is linked in.
 */
#include "helpers.h"

#include "../src/deque.h"

struct task {
    int id;
    const void *key;
    atomic_int got; /* times a take or a steal returned it */
};

/* Two keys, standing for two nurseries. */
static const char key_a, key_b;

static struct deque *deque_new(void)
{
    /* The struct asks for 64-byte alignment; calloc promises less. */
    struct deque *d = aligned_alloc(_Alignof(struct deque), sizeof(struct deque));
    ck_assert_ptr_nonnull(d);
    deque_init(d);
    return d;
}

/* `n` items with ids 0..n-1, every odd one under key_b, the rest key_a. */
static struct task *items_new(int n)
{
    struct task *items = calloc((size_t)n, sizeof(*items));
    ck_assert_ptr_nonnull(items);
    for (int i = 0; i < n; i++) {
        items[i].id = i;
        items[i].key = i % 2 ? &key_b : &key_a;
        atomic_init(&items[i].got, 0);
    }
    return items;
}

static void items_reset(struct task *items, int n)
{
    for (int i = 0; i < n; i++)
        atomic_store_explicit(&items[i].got, 0, memory_order_relaxed);
}

/* Every item came out exactly once. */
static void assert_each_once(struct task *items, int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_msg(atomic_load(&items[i].got) == 1, "item %d came out %d times", i,
                      atomic_load(&items[i].got));
}

static struct task *got(struct task *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->got, 1, memory_order_relaxed);
    return t;
}

/* ---- one thread ----------------------------------------------------------- */

START_TEST(empty_take_and_steal_return_null)
{
    struct deque *d = deque_new();
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_null(deque_take(d));
        ck_assert_ptr_null(deque_take_if(d, &key_a));
        ck_assert_ptr_null(deque_steal(d, NULL));
        ck_assert_ptr_null(deque_steal(d, &key_a));
        ck_assert_int_eq(deque_size(d), 0);
    }
    /* A take on the empty deque leaves it usable: bottom is put back. */
    struct task *items = items_new(1);
    ck_assert_int_eq(deque_push(d, &items[0], &key_a), 0);
    ck_assert_int_eq(deque_size(d), 1);
    ck_assert_ptr_eq(deque_take(d), &items[0]);
    ck_assert_ptr_null(deque_take(d));
    ck_assert_ptr_null(deque_steal(d, NULL));
    ck_assert_int_eq(deque_size(d), 0);
    free(items);
    free(d);
}
END_TEST

START_TEST(take_is_lifo)
{
    struct deque *d = deque_new();
    struct task *items = items_new(100);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(deque_push(d, &items[i], items[i].key), 0);
    ck_assert_int_eq(deque_size(d), 100);
    for (int i = 99; i >= 0; i--)
        ck_assert_ptr_eq(deque_take(d), &items[i]);
    ck_assert_ptr_null(deque_take(d));
    ck_assert_int_eq(deque_size(d), 0);
    free(items);
    free(d);
}
END_TEST

START_TEST(steal_is_fifo)
{
    struct deque *d = deque_new();
    struct task *items = items_new(100);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(deque_push(d, &items[i], items[i].key), 0);
    for (int i = 0; i < 100; i++)
        ck_assert_ptr_eq(deque_steal(d, NULL), &items[i]);
    ck_assert_ptr_null(deque_steal(d, NULL));
    ck_assert_ptr_null(deque_take(d));
    free(items);
    free(d);
}
END_TEST

/* Both ends at once: steals from the oldest, takes from the newest, and
 * they meet in the middle without losing or repeating an item. */
START_TEST(take_and_steal_meet_in_the_middle)
{
    struct deque *d = deque_new();
    struct task *items = items_new(101);
    for (int i = 0; i < 101; i++)
        ck_assert_int_eq(deque_push(d, &items[i], items[i].key), 0);
    for (int i = 0; i < 50; i++) {
        ck_assert_ptr_eq(got(deque_steal(d, NULL)), &items[i]);
        ck_assert_ptr_eq(got(deque_take(d)), &items[100 - i]);
    }
    ck_assert_int_eq(deque_size(d), 1);
    ck_assert_ptr_eq(got(deque_take(d)), &items[50]); /* the last one, through the CAS */
    ck_assert_ptr_null(deque_take(d));
    ck_assert_ptr_null(deque_steal(d, NULL));
    assert_each_once(items, 101);
    free(items);
    free(d);
}
END_TEST

START_TEST(push_refuses_when_full_and_loses_nothing)
{
    struct deque *d = deque_new();
    struct task *items = items_new(DEQUE_CAPACITY + 2);
    for (int i = 0; i < DEQUE_CAPACITY; i++)
        ck_assert_int_eq(deque_push(d, &items[i], &key_a), 0);
    ck_assert_int_eq(deque_size(d), DEQUE_CAPACITY);
    /* Refused, and refused again: nothing was written. */
    ck_assert_int_eq(deque_push(d, &items[DEQUE_CAPACITY], &key_b), -1);
    ck_assert_int_eq(deque_push(d, &items[DEQUE_CAPACITY], &key_b), -1);
    ck_assert_int_eq(deque_size(d), DEQUE_CAPACITY);

    /* A steal frees the oldest slot, which the next push reuses; the item
     * stolen was not overwritten by the refused pushes. */
    ck_assert_ptr_eq(got(deque_steal(d, NULL)), &items[0]);
    ck_assert_int_eq(deque_push(d, &items[DEQUE_CAPACITY], &key_b), 0);
    ck_assert_int_eq(deque_push(d, &items[DEQUE_CAPACITY + 1], &key_b), -1);
    /* A take frees the newest. */
    ck_assert_ptr_eq(got(deque_take(d)), &items[DEQUE_CAPACITY]);
    ck_assert_int_eq(deque_push(d, &items[DEQUE_CAPACITY + 1], &key_b), 0);

    /* Everything is still there, in order. */
    for (int i = 1; i < DEQUE_CAPACITY; i++)
        ck_assert_ptr_eq(got(deque_steal(d, NULL)), &items[i]);
    ck_assert_ptr_eq(got(deque_take(d)), &items[DEQUE_CAPACITY + 1]);
    ck_assert_ptr_null(deque_take(d));
    assert_each_once(items, DEQUE_CAPACITY + 2);
    free(items);
    free(d);
}
END_TEST

START_TEST(keyed_take_and_steal_return_only_matching)
{
    struct deque *d = deque_new();
    struct task *items = items_new(4); /* keys a, b, a, b */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(deque_push(d, &items[i], items[i].key), 0);

    /* The newest is under b: take_if(a) refuses and removes nothing. */
    ck_assert_ptr_null(deque_take_if(d, &key_a));
    ck_assert_int_eq(deque_size(d), 4);
    /* The oldest is under a: steal(b) refuses and removes nothing. */
    ck_assert_ptr_null(deque_steal(d, &key_b));
    ck_assert_int_eq(deque_size(d), 4);
    /* A key never used matches nothing. */
    static const char key_c = 0;
    ck_assert_ptr_null(deque_take_if(d, &key_c));
    ck_assert_ptr_null(deque_steal(d, &key_c));
    ck_assert_int_eq(deque_size(d), 4);

    ck_assert_ptr_eq(deque_take_if(d, &key_b), &items[3]);
    ck_assert_ptr_eq(deque_take_if(d, &key_a), &items[2]);
    ck_assert_ptr_eq(deque_steal(d, &key_a), &items[0]);
    ck_assert_ptr_null(deque_steal(d, &key_a));
    ck_assert_ptr_null(deque_take_if(d, &key_a));
    /* The last one, under b, through take_if's race with thieves. */
    ck_assert_ptr_eq(deque_take_if(d, &key_b), &items[1]);
    ck_assert_ptr_null(deque_take_if(d, &key_b));
    ck_assert_ptr_null(deque_steal(d, &key_b));
    ck_assert_int_eq(deque_size(d), 0);

    /* An unkeyed steal takes any key. */
    ck_assert_int_eq(deque_push(d, &items[1], &key_b), 0);
    ck_assert_ptr_eq(deque_steal(d, NULL), &items[1]);
    free(items);
    free(d);
}
END_TEST

/* The indices grow without bound and wrap around the ring: many times
 * its capacity pass through it, at every fill level, in both orders. */
START_TEST(indices_wrap_around_the_ring)
{
    enum { TOTAL = 5 * DEQUE_CAPACITY + 123 };
    struct deque *d = deque_new();
    struct task *items = items_new(TOTAL);
    int next = 0;
    for (int round = 0; next < TOTAL; round++) {
        /* Fill to a level that varies from one to the whole capacity. */
        int batch = 1 + (round * 997) % DEQUE_CAPACITY;
        int first = next;
        for (int i = 0; i < batch && next < TOTAL; i++, next++)
            ck_assert_int_eq(deque_push(d, &items[next], items[next].key), 0);
        int last = next - 1;
        /* Drain from the top or the bottom, alternately, checking order. */
        if (round % 2) {
            for (int i = first; i <= last; i++)
                ck_assert_ptr_eq(got(deque_steal(d, NULL)), &items[i]);
        } else {
            for (int i = last; i >= first; i--)
                ck_assert_ptr_eq(got(deque_take(d)), &items[i]);
        }
        ck_assert_ptr_null(deque_take(d));
        ck_assert_int_eq(deque_size(d), 0);
    }
    assert_each_once(items, TOTAL);
    /* Fill it completely at an offset that is not a multiple of the size. */
    items_reset(items, DEQUE_CAPACITY + 1);
    for (int i = 0; i < DEQUE_CAPACITY; i++)
        ck_assert_int_eq(deque_push(d, &items[i], &key_a), 0);
    ck_assert_int_eq(deque_push(d, &items[DEQUE_CAPACITY], &key_a), -1);
    for (int i = 0; i < DEQUE_CAPACITY; i++)
        ck_assert_ptr_eq(got(i % 2 ? deque_steal(d, NULL) : deque_take(d)),
                         i % 2 ? &items[i / 2] : &items[DEQUE_CAPACITY - 1 - i / 2]);
    ck_assert_ptr_null(deque_steal(d, NULL));
    assert_each_once(items, DEQUE_CAPACITY);
    ck_assert_int_eq(atomic_load(&items[DEQUE_CAPACITY].got), 0);
    free(items);
    free(d);
}
END_TEST

/* ---- an owner and thieves -------------------------------------------------
 * One owner thread pushes every item once and takes some back; THIEVES
 * threads steal until the owner has drained the deque.  Each item must come
 * out exactly once, to exactly one of them, whatever the interleaving. */

#define THIEVES 3

struct arena {
    struct deque *dq;
    struct task *items;
    int n;
    atomic_bool go;   /* thieves start stealing once this is set */
    atomic_bool done; /* the owner has drained the deque and pushes no more */
};

struct thief {
    struct arena *a;
    const void *key; /* steal only items under this key (NULL: any) */
    pthread_t thread;
    long stolen;
    bool in_order; /* each steal got a newer item than the one before */
    bool key_ok;   /* every item stolen was under `key` */
};

static void *thief_main(void *arg)
{
    struct thief *th = arg;
    struct arena *a = th->a;
    int last = -1;
    while (!atomic_load_explicit(&a->go, memory_order_acquire))
        ;
    for (;;) {
        /* Read before the steal: a steal that fails after the owner has
         * drained means the deque stays empty. */
        bool done = atomic_load_explicit(&a->done, memory_order_acquire);
        struct task *t = got(deque_steal(a->dq, th->key));
        if (t) {
            th->stolen++;
            /* Items are pushed in id order and leave from both ends, so
             * the top only ever moves to newer items. */
            if (t->id <= last)
                th->in_order = false;
            last = t->id;
            if (th->key && t->key != th->key)
                th->key_ok = false;
        } else if (done) {
            return NULL;
        }
    }
}

static void thieves_start(struct arena *a, struct thief *th, bool keyed)
{
    atomic_store(&a->go, false);
    atomic_store(&a->done, false);
    for (int i = 0; i < THIEVES; i++) {
        /* Keyed: one thief takes anything, the others one key each. */
        const void *key = !keyed || i == 0 ? NULL : i % 2 ? &key_a : &key_b;
        th[i] = (struct thief){.a = a, .key = key, .in_order = true, .key_ok = true};
        ck_assert_int_eq(pthread_create(&th[i].thread, NULL, thief_main, &th[i]), 0);
    }
}

/* Drains what is left, lets the thieves go, and checks the outcome.  Every
 * item must have been pushed by now.  Returns how many the thieves got. */
static long thieves_finish(struct arena *a, struct thief *th, long taken)
{
    while (got(deque_take(a->dq)))
        taken++;
    ck_assert_int_eq(deque_size(a->dq), 0);
    atomic_store_explicit(&a->go, true, memory_order_release); /* if not yet */
    atomic_store_explicit(&a->done, true, memory_order_release);
    long stolen = 0;
    for (int i = 0; i < THIEVES; i++) {
        ck_assert_int_eq(pthread_join(th[i].thread, NULL), 0);
        ck_assert_msg(th[i].in_order, "thief %d stole out of order", i);
        ck_assert_msg(th[i].key_ok, "thief %d stole an item under another key", i);
        stolen += th[i].stolen;
    }
    ck_assert_int_eq(taken + stolen, a->n);
    assert_each_once(a->items, a->n);
    return stolen;
}

/* Bursts of pushes with takes in between (plain and keyed), while plain and
 * keyed thieves steal from the top. */
START_TEST(owner_and_thieves_get_each_item_once)
{
    enum { ITEMS = 16000, ROUNDS = 6 };
    struct arena a = {.dq = deque_new(), .items = items_new(ITEMS), .n = ITEMS};
    for (int round = 0; round < ROUNDS; round++) {
        items_reset(a.items, ITEMS);
        struct thief th[THIEVES];
        thieves_start(&a, th, round % 2 == 1);
        atomic_store_explicit(&a.go, true, memory_order_release);
        long taken = 0;
        unsigned seed = (unsigned)round * 2654435761u + 1;
        for (int i = 0; i < ITEMS; i++) {
            while (deque_push(a.dq, &a.items[i], a.items[i].key) != 0)
                taken += got(deque_take(a.dq)) != NULL; /* full: make room */
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) % 16;
            if (r == 0) {
                taken += got(deque_take(a.dq)) != NULL;
            } else if (r == 1) {
                struct task *t = got(deque_take_if(a.dq, &key_b));
                ck_assert(!t || t->key == &key_b);
                taken += t != NULL;
            } else if (r == 2) {
                /* A burst of takes: down to (often) nothing. */
                for (int k = 0; k < 8; k++)
                    taken += got(deque_take(a.dq)) != NULL;
            }
        }
        thieves_finish(&a, th, taken);
    }
    free(a.items);
    free(a.dq);
}
END_TEST

/* The deque holds zero, one or two items at a time, so the owner's take
 * and the thieves' steals keep racing for the last element: in one round
 * the owner pushes one item and takes one back, in the next it pushes two
 * and takes two. */
START_TEST(owner_take_races_steal_for_the_last_item)
{
    enum { ITEMS = 12000, ROUNDS = 4 };
    struct arena a = {.dq = deque_new(), .items = items_new(ITEMS), .n = ITEMS};
    for (int round = 0; round < ROUNDS; round++) {
        items_reset(a.items, ITEMS);
        struct thief th[THIEVES];
        thieves_start(&a, th, false);
        atomic_store_explicit(&a.go, true, memory_order_release);
        long taken = 0;
        bool pairs = round % 2 == 1;
        for (int i = 0; i < ITEMS; i++) {
            ck_assert_int_eq(deque_push(a.dq, &a.items[i], &key_a), 0);
            ck_assert_int_le(deque_size(a.dq), pairs ? 2 : 1);
            if (pairs && i % 2 == 0)
                continue;
            /* Only the newest can come back first, then the one before
             * it; a NULL means the thieves emptied the deque. */
            struct task *t = got(deque_take(a.dq));
            ck_assert(!t || t == &a.items[i]);
            taken += t != NULL;
            if (pairs) {
                struct task *u = got(deque_take(a.dq));
                ck_assert(!u || (t && u == &a.items[i - 1]));
                taken += u != NULL;
            }
            ck_assert_int_eq(deque_size(a.dq), 0);
        }
        thieves_finish(&a, th, taken);
    }
    free(a.items);
    free(a.dq);
}
END_TEST

/* The owner fills the deque to the brim before the thieves start, then keeps
 * it full while they steal: each slot a thief frees is written again at
 * once, so a thief that read a slot and loses its claim must not get the
 * item that replaced it. */
START_TEST(full_deque_refills_while_thieves_steal)
{
    enum { ITEMS = 3 * DEQUE_CAPACITY, ROUNDS = 4 };
    struct arena a = {.dq = deque_new(), .items = items_new(ITEMS), .n = ITEMS};
    for (int round = 0; round < ROUNDS; round++) {
        items_reset(a.items, ITEMS);
        struct thief th[THIEVES];
        thieves_start(&a, th, round % 2 == 1);
        int i = 0;
        for (; i < DEQUE_CAPACITY; i++)
            ck_assert_int_eq(deque_push(a.dq, &a.items[i], a.items[i].key), 0);
        ck_assert_int_eq(deque_push(a.dq, &a.items[i], a.items[i].key), -1);
        atomic_store_explicit(&a.go, true, memory_order_release);
        long taken = 0;
        int refused = 0;
        while (i < ITEMS) {
            if (deque_push(a.dq, &a.items[i], a.items[i].key) == 0) {
                i++;
            } else if (++refused % 64 == 0) {
                /* Now and then make room ourselves, so that the test does
                 * not depend on the thieves being scheduled. */
                taken += got(deque_take(a.dq)) != NULL;
            }
        }
        thieves_finish(&a, th, taken);
    }
    free(a.items);
    free(a.dq);
}
END_TEST

static Suite *deque_suite(void)
{
    Suite *s = suite_create("deque");
    TCase *tc = tcase_with_timeout(s, "one thread", 30);
    tcase_add_test(tc, empty_take_and_steal_return_null);
    tcase_add_test(tc, take_is_lifo);
    tcase_add_test(tc, steal_is_fifo);
    tcase_add_test(tc, take_and_steal_meet_in_the_middle);
    tcase_add_test(tc, push_refuses_when_full_and_loses_nothing);
    tcase_add_test(tc, keyed_take_and_steal_return_only_matching);
    tcase_add_test(tc, indices_wrap_around_the_ring);

    tc = tcase_with_timeout(s, "thieves", 60);
    tcase_add_test(tc, owner_and_thieves_get_each_item_once);
    tcase_add_test(tc, owner_take_races_steal_for_the_last_item);
    tcase_add_test(tc, full_deque_refills_while_thieves_steal);
    return s;
}

int main(void)
{
    return run_suite(deque_suite());
}
