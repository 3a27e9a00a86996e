#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the demo program, examples/checksum, on a small directory that always exists (the
# library's own sources), with and without --latency, and on an empty and a missing directory.
# It checks what the demo says, never how fast it was: that every file was found, that every
# timed pass agreed with the first, that each part of the summary is there, and the exit
# statuses.  Small options keep it quick.
#
# Run by `make check`, which passes srcdir and abs_top_builddir.

srcdir=${srcdir:-.}
prog=${abs_top_builddir:-.}/examples/checksum
dir=$srcdir/src
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

# run ARGS...: runs the demo, sets out (its stdout) and status, and shows both.
run() {
    echo "--- checksum $*"
    out=$("$prog" "$@")
    status=$?
    printf '%s\n' "$out"
    echo "--- exit status $status"
}

# has TEXT: the last run printed a line that starts with TEXT.
has() {
    printf '%s\n' "$out" | grep -q "^$1" || fail "checksum $args: no line starting \"$1\""
}

# lacks TEXT: it did not.
lacks() {
    printf '%s\n' "$out" | grep -q "^$1" && fail "checksum $args: a line starting \"$1\""
}

# Two rounds, so that each kind of pass runs both first and second.
args="-r 2 $dir"
run -r 2 "$dir"
[ "$status" -eq 0 ] || fail "checksum $args exited with status $status"
files=$(find "$dir" -type f | wc -l | tr -d ' ')
has "files: *$files under $dir,"
has "CPUs: *[1-9]"
has "measured: .* 2 sequential and 2 parallel passes"
has "sequential: .* 2 passes)"
has "parallel: .* 2 passes)"
has "speed-up: "
has "pool threads: peak [1-9]"
has "checksums: *every pass agrees with the first"
lacks "latency:"

# --latency: one sequential pass and two parallel ones, which must agree with the first pass.
args="--latency 1 --files 10 -r 2 $dir"
run --latency 1 --files 10 -r 2 "$dir"
[ "$status" -eq 0 ] || fail "checksum $args exited with status $status"
has "files: *10 under $dir (the first 10 of $files, --files),"
has "latency: *1 ms per file"
has "measured: .* 1 sequential pass (only one with"
has "sequential: .* (1 pass)"
has "parallel: .* 2 passes)"
has "pool threads: peak [1-9]"
has "checksums: *every pass agrees with the first"

# An empty directory: nothing to time, and it says so.
empty=$(mktemp -d "${TMPDIR:-/tmp}/demo.XXXXXX") || exit 99
args=$empty
run "$empty"
rmdir "$empty"
[ "$status" -eq 0 ] || fail "checksum $args exited with status $status"
has "no regular files under $empty: nothing to checksum, nothing to time"
lacks "speed-up:"

# A missing directory: an error, and no results.
args=$empty
run "$empty" 2>/dev/null
[ "$status" -eq 1 ] || fail "checksum $args (missing) exited with status $status, not 1"
[ -z "$out" ] || fail "checksum $args (missing) printed results"

# A bad option value is a usage error.
args="--latency soon"
run --latency soon 2>/dev/null
[ "$status" -eq 2 ] || fail "checksum $args exited with status $status, not 2"

[ "$failures" -eq 0 ] || exit 1
exit 0
