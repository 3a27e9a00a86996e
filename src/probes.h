/* SPDX-License-Identifier: MIT */
/*
 * probes.h - USDT static probes (provider "nursery"), for bpftrace, perf
 * and systemtap; nursery(7) lists them.  Built when configure found
 * <sys/sdt.h>: each probe is then a nop in the code and a note in the
 * library (readelf -n shows them), and costs nothing until a tracer
 * attaches.  Otherwise the arguments are only evaluated (they are cheap,
 * side-effect free expressions) so that nothing is left unused.
 */
#ifndef NURSERY_PROBES_H
#define NURSERY_PROBES_H

#ifdef NURSERY_PROBES
#include <sys/sdt.h>
#define NURSERY_PROBE1(name, a) DTRACE_PROBE1(nursery, name, a)
#define NURSERY_PROBE2(name, a, b) DTRACE_PROBE2(nursery, name, a, b)
#define NURSERY_PROBE3(name, a, b, c) DTRACE_PROBE3(nursery, name, a, b, c)
#else
#define NURSERY_PROBE1(name, a) ((void)(a))
#define NURSERY_PROBE2(name, a, b) ((void)(a), (void)(b))
#define NURSERY_PROBE3(name, a, b, c) ((void)(a), (void)(b), (void)(c))
#endif

#endif
