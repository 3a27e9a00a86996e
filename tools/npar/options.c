/* SPDX-License-Identifier: MIT */
/*
 * options.c - npar's command line: options first (parsing stops at the
 * first word that is not one, so the command's own options are never
 * taken), then the command template, then the ::: groups.  Every usage
 * error names what is wrong and exits 255, as GNU parallel does.
 */
#include "npar.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GROUP_MARK ":::"
/* Each job at once takes a thread (waiting on its pipes) and, with -k,
 * two slots of the map's window: beyond this, -j is a mistake. */
#define MAX_JOBS 100000

static const char usage_text[] =
    "Usage: npar [OPTION]... COMMAND [ARG]... [::: INPUT... [::: INPUT...]...]\n"
    "Runs COMMAND once per input, several at once: inputs are the lines of stdin\n"
    "(or of -a FILE), or the words after :::, whose groups give their cross product.\n"
    "{} {.} {/} {//} {/.} {#} {N} in the command are replaced by the input, without\n"
    "extension, its basename, dirname, basename without extension, the job's number,\n"
    "the N-th group's input; with none, the input is appended.\n"
    "\n"
    "  -j, --jobs N           N jobs at once (default: the number of CPUs)\n"
    "  -0, --null             inputs are separated by NUL, not newline\n"
    "  -a, --arg-file FILE    read inputs from FILE instead of stdin\n"
    "  -k, --keep-order       print outputs in input order\n"
    "      --line-buffer      pass whole output lines through as they come\n"
    "      --shell            run the command with /bin/sh -c (inputs quoted)\n"
    "      --halt WHEN,fail=N | WHEN,success=N | never\n"
    "                         after N failed (succeeded) jobs start no more; WHEN is\n"
    "                         'soon' (let running jobs end) or 'now' (kill them)\n"
    "      --first-success    the same as --halt now,success=1\n"
    "      --retries N        run a failing job up to N times in all\n"
    "      --timeout SECONDS  kill a job that runs longer\n"
    "      --grace SECONDS    from SIGTERM to SIGKILL when killing a job (default 2)\n"
    "      --bar              a progress line on stderr, when it is a terminal\n"
    "      --joblog FILE      one line per job, GNU parallel's columns\n"
    "      --dry-run          print the commands, run nothing\n"
    "  -h, --help             this help\n"
    "  -V, --version          the version\n"
    "\n"
    "Exit status: 0 when every job succeeded; else the number of failed jobs, at\n"
    "most 101; 130 or 143 when interrupted by SIGINT or SIGTERM; 255 for a usage\n"
    "error.  See npar(1).\n";

static _Noreturn __attribute__((format(printf, 1, 2))) void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("npar: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'npar --help' for more information.\n", stderr);
    exit(NPAR_EXIT_USAGE);
}

/* A positive integer, or a usage error naming the option. */
static size_t parse_count(const char *option, const char *text)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (text[0] < '0' || text[0] > '9' || *end != '\0' || errno != 0 || v == 0 || v > SIZE_MAX / 2)
        usage_error("%s needs a positive whole number, not '%s'", option, text);
    return (size_t)v;
}

/* Seconds, > 0, as nanoseconds. */
static int64_t parse_seconds(const char *option, const char *text)
{
    char *end;
    errno = 0;
    double s = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !(s > 0) || s > 1e9 || isnan(s))
        usage_error("%s needs a positive number of seconds, not '%s'", option, text);
    int64_t ns = (int64_t)(s * 1e9);
    return ns > 0 ? ns : 1; /* 0 would mean "none" */
}

/* never | now,fail=N | soon,fail=N | now,success=N | soon,success=N */
static void parse_halt(struct npar_options *o, const char *text)
{
    o->halt_text = text;
    if (strcmp(text, "never") == 0) {
        o->halt_when = NPAR_HALT_NEVER;
        return;
    }
    const char *rest;
    if (strncmp(text, "now,", 4) == 0) {
        o->halt_when = NPAR_HALT_NOW;
        rest = text + 4;
    } else if (strncmp(text, "soon,", 5) == 0) {
        o->halt_when = NPAR_HALT_SOON;
        rest = text + 5;
    } else {
        usage_error("--halt needs never, now,fail=N, soon,fail=N, now,success=N or "
                    "soon,success=N, not '%s'",
                    text);
    }
    const char *count;
    if (strncmp(rest, "fail=", 5) == 0) {
        o->halt_on_success = false;
        count = rest + 5;
    } else if (strncmp(rest, "success=", 8) == 0) {
        o->halt_on_success = true;
        count = rest + 8;
    } else {
        usage_error("--halt %s: after the comma, fail=N or success=N", text);
    }
    if (strchr(count, '%') != NULL)
        usage_error("--halt %s: percentages are not supported, give a number of jobs", text);
    o->halt_count = parse_count("--halt", count);
}

/* Splits the words after the options into the template and the groups. */
static void parse_words(struct npar_options *o, int argc, char **argv)
{
    int first = optind;
    int i = first;
    while (i < argc && strcmp(argv[i], GROUP_MARK) != 0)
        i++;
    o->words = argv + first;
    o->nwords = (size_t)(i - first);
    if (o->nwords == 0)
        usage_error("no command given");
    if (i == argc)
        return;
    if (o->arg_file != NULL)
        usage_error("-a FILE and ::: both give the inputs: use one");
    for (int j = i; j < argc; j++)
        o->ngroups += strcmp(argv[j], GROUP_MARK) == 0;
    o->groups = npar_xmalloc(o->ngroups * sizeof *o->groups);
    o->group_sizes = npar_xmalloc(o->ngroups * sizeof *o->group_sizes);
    for (size_t g = 0; g < o->ngroups; g++) {
        int start = ++i; /* past the ::: */
        while (i < argc && strcmp(argv[i], GROUP_MARK) != 0)
            i++;
        if (i == start)
            usage_error("::: group %zu is empty: give it at least one input", g + 1);
        o->groups[g] = argv + start;
        o->group_sizes[g] = (size_t)(i - start);
    }
}

static size_t cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        n = CPU_COUNT(&set);
#endif
    return n > 0 ? (size_t)n : 1;
}

enum {
    OPT_LINE_BUFFER = 256,
    OPT_SHELL,
    OPT_HALT,
    OPT_FIRST_SUCCESS,
    OPT_RETRIES,
    OPT_TIMEOUT,
    OPT_GRACE,
    OPT_BAR,
    OPT_JOBLOG,
    OPT_DRY_RUN,
};

static const struct option long_options[] = {
    {"jobs", required_argument, NULL, 'j'},
    {"null", no_argument, NULL, '0'},
    {"arg-file", required_argument, NULL, 'a'},
    {"keep-order", no_argument, NULL, 'k'},
    {"line-buffer", no_argument, NULL, OPT_LINE_BUFFER},
    {"shell", no_argument, NULL, OPT_SHELL},
    {"halt", required_argument, NULL, OPT_HALT},
    {"first-success", no_argument, NULL, OPT_FIRST_SUCCESS},
    {"retries", required_argument, NULL, OPT_RETRIES},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"grace", required_argument, NULL, OPT_GRACE},
    {"bar", no_argument, NULL, OPT_BAR},
    {"joblog", required_argument, NULL, OPT_JOBLOG},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* The option getopt_long() stopped at: by optopt, which names it (a short
 * option's letter, a long option's value), else as the user wrote it.
 * Where optind is then differs between C libraries (musl moves it past
 * the end for an option that lacks its value), so it is checked. */
static const char *bad_option(int argc, char **argv)
{
    static char name[64];
    if (optopt > 0 && optopt < 256) {
        snprintf(name, sizeof name, "-%c", optopt);
        return name;
    }
    for (const struct option *lo = long_options; optopt != 0 && lo->name != NULL; lo++) {
        if (lo->val == optopt) {
            snprintf(name, sizeof name, "--%s", lo->name);
            return name;
        }
    }
    return optind - 1 > 0 && optind - 1 < argc ? argv[optind - 1] : "?";
}

void npar_options_parse(struct npar_options *o, int argc, char **argv)
{
    *o = (struct npar_options){
        .jobs = cpu_count(),
        .separator = '\n',
        .attempts = 1,
        .grace_ns = 2 * (int64_t)1000000000,
        .halt_text = "never",
    };
    opterr = 0; /* our own messages, which name the option */
    int c;
    /* "+": stop at the command; ":": report a missing argument as ':'. */
    while ((c = getopt_long(argc, argv, "+:j:0a:khV", long_options, NULL)) != -1) {
        switch (c) {
        case 'j':
            if (strcmp(optarg, "0") == 0)
                usage_error("-j 0: the number of jobs at once must be at least 1");
            o->jobs = parse_count("-j", optarg);
            if (o->jobs > MAX_JOBS)
                usage_error("-j %s: at most %d jobs at once", optarg, MAX_JOBS);
            break;
        case '0':
            o->separator = '\0';
            break;
        case 'a':
            o->arg_file = optarg;
            break;
        case 'k':
            o->keep_order = true;
            break;
        case OPT_LINE_BUFFER:
            o->line_buffer = true;
            break;
        case OPT_SHELL:
            o->shell = true;
            break;
        case OPT_HALT:
            parse_halt(o, optarg);
            break;
        case OPT_FIRST_SUCCESS:
            parse_halt(o, "now,success=1");
            break;
        case OPT_RETRIES: {
            size_t n = strcmp(optarg, "0") == 0 ? 1 : parse_count("--retries", optarg);
            o->attempts = n > 1000000 ? 1000000 : (unsigned)n;
            break;
        }
        case OPT_TIMEOUT:
            o->timeout_ns = parse_seconds("--timeout", optarg);
            break;
        case OPT_GRACE:
            o->grace_ns = parse_seconds("--grace", optarg);
            break;
        case OPT_BAR:
            o->bar = true;
            break;
        case OPT_JOBLOG:
            o->joblog = optarg;
            break;
        case OPT_DRY_RUN:
            o->dry_run = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            exit(0);
        case 'V':
            printf("npar (libnursery) %d.%d.%d\n", NURSERY_VERSION_MAJOR, NURSERY_VERSION_MINOR,
                   NURSERY_VERSION_PATCH);
            exit(0);
        case ':':
            usage_error("option '%s' needs a value", bad_option(argc, argv));
        default:
            usage_error("unknown option '%s'", bad_option(argc, argv));
        }
    }
    if (o->line_buffer && o->keep_order)
        usage_error("--line-buffer and --keep-order cannot be combined");
    parse_words(o, argc, argv);
    o->bar = o->bar && isatty(STDERR_FILENO);
}

void npar_options_free(struct npar_options *o)
{
    free(o->groups);
    free(o->group_sizes);
}
