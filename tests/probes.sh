#!/bin/sh
# SPDX-License-Identifier: MIT
# The library carries its USDT probes (src/probes.h): each is a stapsdt note of provider
# "nursery" in the built library, which is how bpftrace, perf and systemtap find them, e.g.
#   bpftrace -l 'usdt:.libs/libnursery.so:nursery:*'
#
# Run by `make check`, which passes abs_top_builddir and probes_built (yes when configure built
# the probes: <sys/sdt.h> was there); by hand:
#   probes_built=yes sh tests/probes.sh [libnursery.so or libnursery.a]
# Exit status: 0 every probe is there, 1 one is missing, 77 skipped (the probes were not built,
# no readelf, or no library).

probes="task__start task__finish nursery__open nursery__join cancel steal park wake"
dir=${abs_top_builddir:-.}/.libs
readelf=${READELF:-readelf}

if [ "$probes_built" != yes ]; then
    echo "SKIP: the probes were not built (probes_built=${probes_built:-unset})"
    exit 77
fi
if ! command -v "$readelf" >/dev/null 2>&1; then
    echo "SKIP: $readelf not found"
    exit 77
fi
lib=$1
if [ -z "$lib" ]; then
    if [ -e "$dir/libnursery.so" ]; then
        lib=$dir/libnursery.so
    else
        lib=$dir/libnursery.a # configured with --disable-shared
    fi
fi
if [ ! -e "$lib" ]; then
    echo "SKIP: no $lib"
    exit 77
fi

notes=$("$readelf" -n "$lib") || {
    echo "FAIL: $readelf -n $lib failed"
    exit 1
}
# readelf prints each stapsdt note as "Provider: P", then "Name: N": the names of provider
# nursery, one a line.
found=$(printf '%s\n' "$notes" | awk '
    $1 == "Provider:" { provider = $2; next }
    $1 == "Name:" { if (provider == "nursery") print $2; provider = "" }' | sort -u)

status=0
for probe in $probes; do
    if ! printf '%s\n' "$found" | grep -q -x -e "$probe"; then
        echo "FAIL: no probe nursery:$probe in $lib"
        status=1
    fi
done
if [ "$status" -eq 0 ]; then
    echo "ok: $lib has the probes nursery:{$(echo $probes | tr ' ' ',')}"
else
    echo "the probes of provider nursery in $lib: ${found:-none}" | tr '\n' ' '
    echo
fi
exit "$status"
