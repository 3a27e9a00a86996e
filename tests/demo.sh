#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the demo program, examples/checksum, the way `make demo` does, on a small directory that
# always exists (the library's own sources), and checks that it succeeds and prints something.
#
# Run by `make check`, which passes srcdir and abs_top_builddir.

srcdir=${srcdir:-.}
prog=${abs_top_builddir:-.}/examples/checksum
dir=$srcdir/src

out=$("$prog" "$dir")
status=$?
printf '%s\n' "$out"

if [ "$status" -ne 0 ]; then
    echo "FAIL: $prog $dir exited with status $status"
    exit 1
fi
if [ -z "$out" ]; then
    echo "FAIL: $prog $dir printed nothing"
    exit 1
fi
exit 0
