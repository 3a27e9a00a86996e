/* SPDX-License-Identifier: MIT */
/*
 * npar.c - main(): a parallel command runner built on libnursery, in the
 * family of xargs -P and GNU parallel.  See npar(1) and npar.h for its
 * parts.
 */
#include "npar.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

/* A closed stdin, stdout or stderr would be the first descriptor a pipe
 * takes, and a job's output would go astray: each is /dev/null instead. */
static void open_standard_descriptors(void)
{
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) < 0)
            exit(NPAR_EXIT_USAGE);
    }
}

int main(int argc, char **argv)
{
    open_standard_descriptors();
    struct npar_options o;
    npar_options_parse(&o, argc, argv);
    int status = npar_run(&o);
    npar_options_free(&o);
    return status;
}
