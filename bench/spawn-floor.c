/* SPDX-License-Identifier: MIT */
/*
 * spawn-floor.c - the floor of a command runner, for bench/npar-bench.sh:
 * runs COMMAND once per line of stdin, the line appended, at most N at
 * once, with posix_spawnp() and wait() from one thread, capturing nothing.
 * No runner can start, wait for and reap a process for less, so the time
 * a runner takes above this one is its own overhead.
 *
 *   spawn-floor N COMMAND [ARG]...
 *
 * Exits 0 when every run exited 0, 1 otherwise, 2 on a usage error.
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

extern char **environ;

/* Reaps one child; false when it did not exit 0. */
static int reap_one(void)
{
    int status;
    if (wait(&status) < 0)
        return 0;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || atoi(argv[1]) < 1) {
        fprintf(stderr, "usage: spawn-floor N COMMAND [ARG]...\n");
        return 2;
    }
    int at_once = atoi(argv[1]), running = 0, ok = 1;
    int n = argc - 2;
    char **args = calloc((size_t)n + 2, sizeof *args);
    if (args == NULL)
        return 2;
    memcpy(args, argv + 2, (size_t)n * sizeof *args);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n')
            line[len - 1] = '\0';
        if (running == at_once) {
            ok &= reap_one();
            running--;
        }
        args[n] = line;
        pid_t pid;
        if (posix_spawnp(&pid, args[0], NULL, NULL, args, environ) != 0) {
            ok = 0;
            continue;
        }
        running++;
    }
    while (running-- > 0)
        ok &= reap_one();
    free(line);
    free(args);
    return ok ? 0 : 1;
}
