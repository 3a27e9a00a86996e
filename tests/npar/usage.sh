#!/bin/sh
# SPDX-License-Identifier: MIT
# npar's usage errors and informational options.  Each bad command line exits 255, runs no job
# (the command would leave a marker file), prints nothing on stdout, and says on stderr
# "npar: ..." naming the bad option or value; usage errors add "Try 'npar --help' for more
# information.".  Cases: unknown options, -j 0/-1/x/1000000, a missing -j value, a missing command,
# --line-buffer with -k, empty ::: groups, -a with :::, bad --halt/--timeout/--retries values,
# an unreadable -a file (cannot read ...), a joblog that cannot be created.  --help/-h exit 0
# with usage on stdout; --version/-V print "npar (libnursery) X.Y.Z".

. "$(dirname "$0")/lib.sh"

try="Try 'npar --help' for more information."

# bad WHAT ERE ARGS...: npar ARGS fails as a usage error whose message matches ERE.
bad() {
    bad_what=$1
    bad_re=$2
    shift 2
    rm -f ran*
    run_npar "$@"
    check_status "$bad_what" 255
    check_eq "$bad_what: nothing on stdout" "" "$(cat out)"
    check_eq "$bad_what: no job ran" 0 "$(count_files ran)"
    check_grep "$bad_what: the message names it" "^npar: .*($bad_re)" err
    check_line "$bad_what: the hint" "$try" err
}

bad "unknown long option" 'frobnicate' --frobnicate touch ran ::: 1
bad "unknown short option" "Q" -Q touch ran ::: 1
bad "-j 0" "-j|jobs|'j'" -j 0 touch ran ::: 1
bad "--jobs 0" "-j|jobs|'j'" --jobs 0 touch ran ::: 1
bad "-j -1" "-j|jobs|'j'" -j -1 touch ran ::: 1
bad "-j x" "-j|jobs|'j'" -j x touch ran ::: 1
bad "-j above the most" "-j|jobs|'j'" -j 1000000 touch ran ::: 1
bad "-j 2x" "-j|jobs|'j'" -j 2x touch ran ::: 1
bad "-j without a value" "-j|jobs|'j'" -j
bad "no command" 'command|COMMAND' -j 2
bad "no command at all" 'command|COMMAND'
bad "--line-buffer with --keep-order" 'line-buffer|keep-order|-k' --line-buffer -k touch ran ::: 1
bad "--keep-order with --line-buffer" 'line-buffer|keep-order|-k' --keep-order --line-buffer touch ran ::: 1
bad "::: with nothing after it" ':::' touch ran :::
bad "an empty first ::: group" ':::' touch ran ::: ::: 1
bad "an empty last ::: group" ':::' touch ran ::: 1 :::
printf '1\n' >list
bad "-a with :::" '-a|:::' -a list touch ran ::: 1
bad "--halt with a percentage" '10%' --halt now,fail=10% touch ran ::: 1
bad "--halt with a bad when" 'sometime' --halt sometime,fail=1 touch ran ::: 1
bad "--halt fail=0" 'halt|fail=0' --halt now,fail=0 touch ran ::: 1
bad "--halt garbage" 'halt|garbage' --halt garbage touch ran ::: 1
bad "--timeout 0" 'timeout' --timeout 0 touch ran ::: 1
bad "--timeout -1" 'timeout' --timeout -1 touch ran ::: 1
bad "--timeout x" 'timeout' --timeout x touch ran ::: 1
bad "--retries x" 'retries' --retries x touch ran ::: 1
bad "--grace x" 'grace' --grace x touch ran ::: 1

# Inputs that cannot be read, a joblog that cannot be created: 255 with their message.
rm -f ran*
run_npar -a "$T/missing-file" touch ran
check_status "-a of a missing file" 255
check_line "-a of a missing file: the message" "npar: cannot read $T/missing-file: No such file or directory" err
check_eq "-a of a missing file: no job ran" 0 "$(count_files ran)"

if [ "$(id -u)" != 0 ]; then
    printf 'x\n' >unreadable
    chmod 000 unreadable
    run_npar -a unreadable touch ran
    check_status "-a of an unreadable file" 255
    check_line "-a of an unreadable file: the message" "npar: cannot read unreadable: Permission denied" err
    chmod 600 unreadable
else
    echo "(running as root: the unreadable -a file is not checked)"
fi

run_npar -a "$T" touch ran
check_status "-a of a directory" 255
check_grep "-a of a directory: the message" "^npar: cannot read $T: " err

run_npar --joblog "$T/no/such/dir/log" touch ran ::: 1
check_status "a joblog that cannot be created" 255
check_grep "a joblog that cannot be created: the message names it" "^npar: .*$T/no/such/dir/log" err
check_eq "a joblog that cannot be created: no job ran" 0 "$(count_files ran)"

# --- --help and --version -------------------------------------------------------------------------

for opt in --help -h; do
    run_npar "$opt"
    check_status "$opt" 0
    check_grep "$opt: usage on stdout" 'npar' out
    check_grep "$opt: it mentions :::" ':::' out
    check_eq "$opt: nothing on stderr" "" "$(cat err)"
done

version=
if [ -r "$abs_top_srcdir/build-aux/version.sh" ]; then
    version=$(cd "$abs_top_srcdir" && sh build-aux/version.sh 2>/dev/null)
fi
for opt in --version -V; do
    run_npar "$opt"
    check_status "$opt" 0
    if [ -n "$version" ]; then
        check_file_eq "$opt" "npar (libnursery) $version" out
    else
        check_grep "$opt" '^npar \(libnursery\) [0-9]+\.[0-9]+\.[0-9]+$' out
    fi
done

finish
