#!/bin/sh
# SPDX-License-Identifier: MIT
# Print libnursery's version numbers, read from the macros in include/nursery.h, so that the
# header is the one place where they are written down.
#
#   build-aux/version.sh            MAJOR.MINOR.PATCH (the package version, for AC_INIT)
#   build-aux/version.sh NAME...    the values of the NURSERY_<NAME> macros, on one line,
#                                   e.g. `version.sh ABI_CURRENT ABI_REVISION ABI_AGE` -> 0 0 0
#
# configure.ac runs it through m4_esyscmd_s, at autoconf time; it prints nothing on stdout and
# exits 1 when a macro is missing or is not a plain number.
set -eu

here=$(dirname "$0")
header=${NURSERY_HEADER:-$here/../include/nursery.h}

if [ ! -r "$header" ]; then
    echo "version.sh: cannot read $header" >&2
    exit 1
fi

# The value of `#define NURSERY_<name> <digits>`, or an error.
macro() {
    value=$(sed -n "s/^#define[ 	]\{1,\}NURSERY_$1[ 	]\{1,\}\([0-9]\{1,\}\)[ 	]*\$/\1/p" \
        "$header")
    case $value in
    '' | *[!0-9]*)
        echo "version.sh: no line '#define NURSERY_$1 <number>' in $header" >&2
        exit 1
        ;;
    esac
    echo "$value"
}

if [ $# -eq 0 ]; then
    major=$(macro VERSION_MAJOR)
    minor=$(macro VERSION_MINOR)
    patch=$(macro VERSION_PATCH)
    echo "$major.$minor.$patch"
else
    values=
    for name in "$@"; do
        value=$(macro "$name")
        values="$values${values:+ }$value"
    done
    echo "$values"
fi
