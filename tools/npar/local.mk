# SPDX-License-Identifier: MIT
# npar, the parallel command runner built on the library (tools/npar/), included by
# Makefile.am; paths are relative to the top directory.  Installed with its man page,
# man/npar.1 (listed in man/local.mk).

bin_PROGRAMS = tools/npar/npar

tools_npar_npar_SOURCES = \
	tools/npar/npar.h \
	tools/npar/npar.c \
	tools/npar/buf.c \
	tools/npar/options.c \
	tools/npar/input.c \
	tools/npar/template.c \
	tools/npar/job.c \
	tools/npar/output.c \
	tools/npar/runner.c
tools_npar_npar_CPPFLAGS = $(AM_CPPFLAGS) -D_GNU_SOURCE
tools_npar_npar_LDADD = libnursery.la $(PTHREAD_LIBS)

# Its tests: shell scripts run by `make check` (tests/npar/lib.sh is what they share).
npar_tests = \
	tests/npar/usage.sh \
	tests/npar/input.sh \
	tests/npar/output.sh \
	tests/npar/halt.sh \
	tests/npar/timeout.sh \
	tests/npar/signal.sh \
	tests/npar/many.sh
