/* SPDX-License-Identifier: MIT */
/*
 * static_link.c - a program with functions named like the library's
 * internals, linked against the static archive (libtool's -static), runs.
 *
 * Before the library's internal symbols were prefixed with nursery__, the
 * archive defined task_new, task_free, error_new, pool_submit and some
 * forty more: linking this program failed with "multiple definition".  Each
 * function here has a signature of its own, and the program checks that
 * its calls reach its own functions while the library works beside them.
 */
#include <nursery.h>

#include <stdio.h>

/* The program's own task list: nothing to do with libnursery's tasks. */
struct task {
    int id;
    int done;
};

static struct task tasks[4];
static int errors_made;
static int submitted;

struct task *task_new(int id);
void task_free(struct task *t);
int error_new(const char *what);
int pool_submit(struct task *t);

struct task *task_new(int id)
{
    tasks[id].id = id;
    return &tasks[id];
}

void task_free(struct task *t)
{
    t->done = 1;
}

int error_new(const char *what)
{
    (void)what;
    return ++errors_made;
}

int pool_submit(struct task *t)
{
    submitted += t->id;
    return 0;
}

static int add_one(void *arg, void **value)
{
    *value = (void *)((char *)arg + 1);
    return 0;
}

int main(void)
{
    for (int i = 0; i < 4; i++)
        pool_submit(task_new(i));
    task_free(&tasks[3]);

    nursery_t *n = NULL;
    nursery_result_t *r = NULL;
    int rc = nursery_open(&n, NULL);
    if (rc == 0)
        rc = nursery_capture_start_soon(n, add_one, (void *)41, NULL, &r);
    int join_rc = n ? nursery_join(n, NURSERY_FOREVER, NULL) : rc;
    void *value = NULL;
    if (rc == 0)
        rc = join_rc ? join_rc : nursery_result_value(r, &value);
    nursery_result_release(r);

    if (rc != 0 || value != (void *)42 || submitted != 6 || !tasks[3].done ||
        error_new("x") != 1) {
        fprintf(stderr, "static_link: rc %d (%s), value %p, submitted %d\n", rc,
                nursery_strerror(rc), value, submitted);
        return 1;
    }
    puts("static_link: the program's task_new, task_free, error_new and pool_submit live "
         "beside libnursery.a");
    return 0;
}
