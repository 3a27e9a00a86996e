#!/bin/sh
# SPDX-License-Identifier: MIT
# libnursery keeps to its namespace, in both forms it is installed in:
#   - the shared library exports the public API and nothing else: every global function or
#     object it exports starts with nursery_ (src/ is built with -fvisibility=hidden, and only
#     declarations marked NURSERY_API in include/nursery.h are visible);
#   - the static archive defines no global symbol outside nursery_ (internals are nursery__),
#     so that it links into a program that has its own task_free or pool_submit.
#
# Run by `make check`, which passes abs_top_builddir; by hand:
#   sh tests/exports.sh [libnursery.so [libnursery.a]]
# Exit status: 0 ok, 1 a foreign symbol is defined or no nursery_ symbol is, 77 skipped (neither
# library was built, or no nm).

dir=${abs_top_builddir:-.}/.libs
shared=${1:-$dir/libnursery.so}
archive=${2:-$dir/libnursery.a}

if ! command -v "${NM:-nm}" >/dev/null 2>&1; then
    echo "SKIP: nm not found"
    exit 77
fi
if [ ! -e "$shared" ] && [ ! -e "$archive" ]; then
    echo "SKIP: neither $shared nor $archive was built"
    exit 77
fi

status=0

# Reads "value type name" lines (nm's output; an archive's member headers and blank lines have
# fewer fields) and prints the names of global code and data (T text, D/G data, B/S bss,
# R read-only, V/W weak, i indirect function, C common), symbol versions (name@VERSION) cut
# off, without the linker's own markers, the sanitizers' instrumentation, and <sys/sdt.h>'s
# _.stapsdt.base (the USDT probes' anchor: no C name can be spelled like it).
globals() {
    awk 'NF >= 3 && $2 ~ /^[TDGBSRVWiC]$/ { sub(/@.*/, "", $3); print $3 }' |
        grep -v -x -e _init -e _fini -e _edata -e _end -e __bss_start -e _.stapsdt.base |
        grep -v -e '^__odr_asan' -e '^__asan_' -e '^___asan' -e '^__tsan_' -e '^__ubsan_' |
        sort -u
}

# check LIBRARY WHAT SYMBOLS: fails on any name outside nursery_, and on none inside it.
check() {
    foreign=$(printf '%s\n' "$3" | grep -v -e '^nursery_' -e '^$')
    count=$(printf '%s\n' "$3" | grep -c '^nursery_')
    if [ -n "$foreign" ]; then
        echo "FAIL: $1 $2 symbols outside the nursery_ namespace"
        echo "(make them static, prefix them nursery__, or keep them out of NURSERY_API):"
        printf '  %s\n' $foreign
        status=1
    elif [ "$count" -eq 0 ]; then
        echo "FAIL: $1 $2 no nursery_ symbol (is NURSERY_API default visibility when"
        echo "NURSERY_BUILDING is defined?)"
        status=1
    else
        echo "ok: $1 $2 $count nursery_ symbols and nothing else"
    fi
}

# check_file LIBRARY WHAT NM-OPTION: the library's global names, if it was built.
check_file() {
    if [ ! -e "$1" ]; then
        echo "note: no $1 (configured with --disable-shared or --disable-static?)"
        return
    fi
    symbols=$("${NM:-nm}" "$3" --defined-only "$1") || {
        echo "FAIL: ${NM:-nm} $3 --defined-only $1 failed"
        status=1
        return
    }
    check "$1" "$2" "$(printf '%s\n' "$symbols" | globals)"
}

check_file "$shared" exports -D
check_file "$archive" defines -g
exit "$status"
