#!/bin/sh
# SPDX-License-Identifier: MIT
# Many jobs, the exit status as a count, the joblog, and -j.
#   - 10 000 jobs of `true` (inputs from stdin): exit 0, no output, the joblog has the header and
#     10 000 lines of 9 tab-separated columns, each Seq once, Host ":", times with 3 decimals,
#     Send 0, Receive 0, Exitval 0, Signal 0, Command "true N";
#   - the exit status is the number of failed jobs, capped: 3 -> 3, 100 -> 100, 101 -> 101,
#     150 -> 101;
#   - the joblog's Receive (bytes of stdout + stderr), Exitval, Command (as --dry-run prints it),
#     and a joblog that existed before is truncated;
#   - -j N: never more than N jobs at once, and N at once when they wait for each other; the
#     default is the number of CPUs (nproc) the process may run on.

. "$(dirname "$0")/lib.sh"
NPAR_LIMIT=60

tab=$(printf '\t')

# --- 10 000 jobs --------------------------------------------------------------------------------

seq 1 10000 >in
# Spawning 10 000 processes is slow on a loaded machine: the watchdog is only for hangs.
NPAR_LIMIT=600
run_npar -j 8 --joblog log true <in
NPAR_LIMIT=60
check_status "10 000 jobs of true" 0
check_eq "10 000 jobs: no output" "" "$(cat out err)"
check_eq "10 000 jobs: the joblog has 10 001 lines" 10001 "$(wc -l <log | tr -d ' ')"
check_eq "joblog header" \
    "Seq${tab}Host${tab}Starttime${tab}JobRuntime${tab}Send${tab}Receive${tab}Exitval${tab}Signal${tab}Command" \
    "$(head -n 1 log)"
check_eq "joblog: every line has 9 tab-separated columns" 0 "$(awk -F '\t' 'NF != 9' log | wc -l | tr -d ' ')"
check_eq "joblog: each Seq 1..10000 once" "$(seq 1 10000 | sha256sum)" \
    "$(tail -n +2 log | cut -f1 | sort -n | sha256sum)"
bad=$(tail -n +2 log | awk -F '\t' '
    $2 != ":" || $3 !~ /^ *[0-9]+\.[0-9][0-9][0-9]$/ || $4 !~ /^ *[0-9]+\.[0-9][0-9][0-9]$/ ||
    $5 != "0" || $6 != "0" || $7 != "0" || $8 != "0" || $9 != "true " $1' | head -n 3)
# (GNU parallel pads JobRuntime to 10 characters, "%10.3f": leading spaces are allowed.)
check_eq "joblog: Host :, times with 3 decimals, Send/Receive/Exitval/Signal 0, Command true SEQ" "" "$bad"
start=$(tail -n +2 log | head -n 1 | cut -f3 | cut -d. -f1)
nowsec=$(date +%s)
if [ -n "$start" ] && [ $((nowsec - start)) -ge 0 ] && [ $((nowsec - start)) -lt 86400 ]; then
    ok "joblog: Starttime is seconds since the epoch"
else
    fail "joblog: Starttime: expected seconds since the epoch near $nowsec, got [$start]"
fi

# --- the exit status counts failed jobs, up to 101 ------------------------------------------------

seq 1 3 >in
run_npar -j 4 false <in
check_status "3 failing jobs" 3
seq 1 100 >in
run_npar -j 8 false <in
check_status "100 failing jobs" 100
seq 1 101 >in
run_npar -j 8 false <in
check_status "101 failing jobs" 101
seq 1 150 >in
run_npar -j 8 false <in
check_status "150 failing jobs" 101
seq 1 20 >in
run_npar -j 4 sh -c 'exit $(($1 % 4 == 0))' sh <in
check_status "5 of 20 failing" 5

# --- joblog columns -------------------------------------------------------------------------------

printf 'stale line\n' >log2
run_npar -k --joblog log2 sh -c 'printf abc; printf de >&2; exit "$1"' sh ::: 0 3
check_status "joblog details" 1
check_eq "joblog: an existing file is truncated (header + 2)" 3 "$(wc -l <log2 | tr -d ' ')"
check_no_grep "joblog: the old content is gone" 'stale line' log2
check_eq "joblog: Receive counts stdout and stderr bytes" "5 5" "$(tail -n +2 log2 | cut -f6 | tr '\n' ' ' | sed 's/ $//')"
check_eq "joblog: Exitval" "0 3" "$(tail -n +2 log2 | sort -n | cut -f7 | tr '\n' ' ' | sed 's/ $//')"

run_npar --joblog log3 printf '[%s]\n' ::: 'a b'
run_npar --dry-run printf '[%s]\n' ::: 'a b'
check_eq "joblog: Command is what --dry-run prints" "$(cat out)" "$(sed -n 2p log3 | cut -f9)"

# --- -j -------------------------------------------------------------------------------------------

# Each job makes a directory while it runs and notes how many exist; with -j 3 the most is 3,
# and since the first three wait until three have started, 3 is reached.
cat >conc.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
mkdir "$T/run/$1"
touch "$T/begun.$1"
want=$2
[ "$1" -le "$want" ] && waitfor '[ "$(count "$T/begun.")" -ge "$want" ]'
count "$T/run/" >"$T/seen.$1"
sleep 0.05
rmdir "$T/run/$1"
EOF
mkdir run
run_npar -j 3 sh conc.sh ::: $(seq 1 12) ::: 3
check_status "-j 3" 0
max=$(cat seen.* | sort -n | tail -n 1)
check_eq "-j 3: at most and at least 3 jobs at once" 3 "$max"

ncpu=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)
if [ -n "$ncpu" ] && [ "$ncpu" -le 16 ]; then
    rm -f begun.* seen.*
    run_npar sh conc.sh ::: $(seq 1 $((ncpu + 4))) ::: "$ncpu"
    check_status "default -j" 0
    max=$(cat seen.* | sort -n | tail -n 1)
    check_eq "default -j: the number of CPUs ($ncpu) at once" "$ncpu" "$max"
else
    echo "(default -j not checked: $ncpu CPUs)"
fi

finish
