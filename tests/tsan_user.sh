#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs tests/tsan_user, a program built with -fsanitize=thread against the library as
# configured (see tests/tsan_user.c), and fails if ThreadSanitizer reports anything.
#
# gcc 12's TSan runtime cannot start in some address-space layouts that ASLR picks when
# vm.mmap_rnd_bits is above 28 ("FATAL: ThreadSanitizer: unexpected memory mapping").  When
# the runtime fails to start, the program runs again with ASLR off for it (setarch -R); if it
# still cannot start, or setarch cannot help, the test is skipped, saying why.  A race report
# is never retried: it fails.
#
# Run by `make check`, which passes abs_top_builddir; by hand: sh tests/tsan_user.sh [edge ...]
# Exit status: 0 no report, 1 a race report or a failed check, 77 skipped (the TSan runtime
# cannot run here, or is missing, as with musl).

prog=${abs_top_builddir:-.}/tests/tsan_user

if [ ! -x "$prog" ]; then
    echo "FAIL: $prog was not built"
    exit 1
fi

# Ours last, so that they win over the caller's: the first report ends the program with 66.
TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS }halt_on_error=1 exitcode=66"
export TSAN_OPTIONS

# The runtime's own failure to start (not a report about the program).
runtime_failed() {
    printf '%s\n' "$output" | grep -q 'FATAL: ThreadSanitizer'
}

status=0
output=$("$prog" "$@" 2>&1) || status=$?

# 127: the program could not be loaded at all, its TSan runtime missing for this C library
# (musl-gcc links against glibc's libtsan, which musl's loader does not find).
if [ "$status" -eq 127 ] && ! printf '%s\n' "$output" | grep -q 'ThreadSanitizer'; then
    printf '%s\n' "$output" | head -n 3
    echo "SKIP: $prog cannot be loaded (exit status 127): this C library has no"
    echo "ThreadSanitizer runtime"
    exit 77
fi

if runtime_failed; then
    printf '%s\n' "$output"
    why=$(printf '%s\n' "$output" | grep -m 1 'FATAL: ThreadSanitizer')
    arch=$(uname -m)
    if ! setarch "$arch" -R true >/dev/null 2>&1; then
        echo "SKIP: the ThreadSanitizer runtime cannot start here ($why), and setarch -R,"
        echo "which may help, does not work"
        exit 77
    fi
    echo "tsan_user: the ThreadSanitizer runtime could not start; again with ASLR off:" \
        "setarch $arch -R"
    status=0
    output=$(setarch "$arch" -R "$prog" "$@" 2>&1) || status=$?
    if runtime_failed; then
        printf '%s\n' "$output"
        echo "SKIP: the ThreadSanitizer runtime cannot start here, even with ASLR off ($why)"
        exit 77
    fi
fi

printf '%s\n' "$output"
if printf '%s\n' "$output" | grep -q 'WARNING: ThreadSanitizer'; then
    echo "FAIL: ThreadSanitizer reported a race (exit status $status): an edge that the"
    echo "library orders is not visible to TSan (see src/annotate.h)"
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "FAIL: $prog exited with status $status"
    exit 1
fi
echo "ok: no ThreadSanitizer report"
exit 0
