#!/bin/sh
# SPDX-License-Identifier: MIT
# The shared library must export the public API and nothing else: every global function or
# object it defines starts with nursery_ (src/ is built with -fvisibility=hidden, and only
# declarations marked NURSERY_API in include/nursery.h are visible).
#
# Run by `make check`, which passes abs_top_builddir; by hand: sh tests/exports.sh [libnursery.so]
# Exit status: 0 ok, 1 a foreign symbol is exported or no nursery_ symbol is, 77 skipped (no
# shared library was built, or no nm).

lib=${1:-${abs_top_builddir:-.}/.libs/libnursery.so}

if [ ! -e "$lib" ]; then
    echo "SKIP: no shared library at $lib (configured with --disable-shared?)"
    exit 77
fi
if ! command -v "${NM:-nm}" >/dev/null 2>&1; then
    echo "SKIP: nm not found"
    exit 77
fi

# Defined dynamic symbols: "value type name".  Keep the global ones that are code or data
# (T text, D/G data, B/S bss, R read-only, V/W weak, i indirect function); drop the linker's
# own markers.  Symbol versions (name@VERSION) are cut off.
symbols=$("${NM:-nm}" -D --defined-only "$lib") || {
    echo "FAIL: ${NM:-nm} -D --defined-only $lib failed"
    exit 1
}
exported=$(printf '%s\n' "$symbols" |
    awk 'NF >= 3 && $2 ~ /^[TDGBSRVWi]$/ { sub(/@.*/, "", $3); print $3 }' |
    grep -v -x -e _init -e _fini -e _edata -e _end -e __bss_start |
    sort -u)

foreign=$(printf '%s\n' "$exported" | grep -v -e '^nursery_' -e '^$')
count=$(printf '%s\n' "$exported" | grep -c '^nursery_')

status=0
if [ -n "$foreign" ]; then
    echo "FAIL: $lib exports symbols outside the nursery_ namespace"
    echo "(make them static, or keep them out of NURSERY_API):"
    printf '  %s\n' $foreign
    status=1
fi
if [ "$count" -eq 0 ]; then
    echo "FAIL: $lib exports no nursery_ symbol (is NURSERY_API default visibility when"
    echo "NURSERY_BUILDING is defined?)"
    status=1
fi
[ "$status" -eq 0 ] && echo "ok: $lib exports $count nursery_ symbols and nothing else"
exit "$status"
