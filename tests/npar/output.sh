#!/bin/sh
# SPDX-License-Identifier: MIT
# npar's output modes.
#   grouped (default): stdout to stdout and stderr to stderr; jobs running together that print
#     many lines slowly never interleave; a job's output is printed when it ends, while others
#     still run (a job waits until npar has printed another job's line);
#   --keep-order: input order under scrambled job durations (stdout and stderr), and the
#     window: while job 1 blocks the head, only a bounded number of later jobs start;
#   --line-buffer: lines pass through while the job still runs, lines written in pieces by
#     concurrent jobs come out whole, a last line without newline is printed;
#   1 MiB on stdout and 1 MiB on stderr from each of 8 jobs arrive complete and ungrouped by
#     nobody: checksums of each job's block, grouped and with -k (a job writing its stderr
#     while npar drains only stdout would hang: the watchdog reports it);
#   --bar prints nothing when stderr is not a terminal.

. "$(dirname "$0")/lib.sh"

# --- grouped: no interleaving ------------------------------------------------------------------

# Four jobs wait for each other (a barrier on marker files) and then each writes 20 lines to
# stdout and 20 to stderr, sleeping between lines.
cat >grp.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
touch "$T/bar.$1"
waitfor '[ "$(count "$T/bar.")" -ge 4 ]' || echo "barrier timed out"
i=0
while [ "$i" -lt 20 ]; do
    echo "J$1 $i"
    echo "E$1 $i" >&2
    sleep 0.01
    i=$((i + 1))
done
EOF
run_npar -j 4 sh grp.sh ::: 1 2 3 4
check_status "grouped" 0
check_eq "grouped: stdout has the 80 stdout lines" 80 "$(grep -c '^J[1-4] [0-9]*$' out)"
check_eq "grouped: stderr has the 80 stderr lines" 80 "$(grep -c '^E[1-4] [0-9]*$' err)"
check_no_grep "grouped: no stderr line on stdout" '^E' out
check_no_grep "grouped: no stdout line on stderr" '^J' err
check_no_grep "grouped: the jobs ran together (barrier)" 'barrier timed out' out
# Each job's lines are one block, in order: 4 blocks, line i of a block is "Jn i".
verdict() {
    awk -v p="$1" '
        { job = $1; if (job != prev) { blocks++; n = 0; prev = job } if ($2 != n) bad = 1; n++ }
        END { printf "%d blocks%s\n", blocks, bad ? ", lines out of order" : "" }' "$2"
}
check_eq "grouped: each job's stdout is one block" "4 blocks" "$(verdict J out)"
check_eq "grouped: each job's stderr is one block" "4 blocks" "$(verdict E err)"

# A job's output is printed when it ends, while another runs: job 1 waits until job 2's line is
# in npar's stdout (a file), then prints.  Printed in the order they end: 2, then 1.
cat >seen.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
case $1 in
    first) if waitfor 'grep -q "^second done$" "$T/out"'; then echo "first saw second"; else echo "first did not see second"; fi ;;
    second) echo "second done" ;;
esac
EOF
run_npar -j 2 sh seen.sh ::: first second
check_status "grouped, printed at the end of each job" 0
check_file_eq "grouped: a job's output is printed when it ends, in the order jobs end" \
    "second done${nl}first saw second" out

# --- --keep-order -------------------------------------------------------------------------------

# 24 jobs with scrambled durations; job 1 moreover waits until job 3 has ended (its marker).
cat >ko.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
[ "$1" = 1 ] && { waitfor '[ -e "$T/end.3" ]' || echo "job 1 timed out waiting"; }
sleep "0.0$(( ($1 * 7) % 10 ))"
echo "out $1 a"
echo "err $1" >&2
echo "out $1 b"
touch "$T/end.$1"
EOF
run_npar -k -j 8 sh ko.sh ::: $(seq 1 24)
check_status "--keep-order" 0
check_eq "--keep-order: stdout in input order" \
    "$(seq 1 24 | awk '{ print "out " $1 " a"; print "out " $1 " b" }')" "$(cat out)"
check_eq "--keep-order: stderr in input order" "$(seq 1 24 | sed 's/^/err /')" "$(cat err)"

run_npar --keep-order -j 3 sh -c 'sleep "0.0$(( ($1 * 3) % 10 ))"; echo "$1"; exit $(($1 % 2))' sh ::: 1 2 3 4 5 6
check_status "--keep-order with failing jobs (3 failed)" 3
check_file_eq "--keep-order: failed jobs printed in order too" "$(seq 1 6)" out

# The window: with -j 2, while job 1 runs (it waits until another job has started, then
# 1 s more), at most 2 more jobs may wait ended, so only a few of the 100 quick jobs start.
# Counted generously (at most 2N+1 = 5 started), never on time.
rm -f start.*
cat >win.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
touch "$T/start.$1"
if [ "$1" = 1 ]; then
    waitfor '[ "$(count "$T/start.")" -ge 2 ]'
    sleep 1
    count "$T/start." >"$T/started_while_head_blocked"
fi
echo "$1"
EOF
run_npar -k -j 2 sh win.sh ::: $(seq 1 100)
check_status "--keep-order window" 0
check_eq "--keep-order window: all 100 jobs printed in order" "$(seq 1 100)" "$(cat out)"
n=$(cat started_while_head_blocked 2>/dev/null)
if [ -n "$n" ] && [ "$n" -ge 2 ] && [ "$n" -le 5 ]; then
    ok "--keep-order window: $n jobs started while job 1 blocked the head"
else
    fail "--keep-order window: expected 2..5 jobs started while job 1 blocked the head (-j 2), got [$n]"
fi

# --- --line-buffer ----------------------------------------------------------------------------

# A line passes through while its job runs: the job waits until npar's stdout has it.
cat >lb.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
echo "hello $1"
echo "hello-err $1" >&2
job=$1
if waitfor 'grep -q "^hello $job\$" "$T/out"'; then echo "seen $1"; else echo "not seen $1"; fi
if waitfor 'grep -q "^hello-err $job\$" "$T/err"'; then echo "seen-err $1"; else echo "not seen-err $1"; fi
EOF
run_npar --line-buffer -j 2 sh lb.sh ::: 1 2
check_status "--line-buffer" 0
check_line "--line-buffer: job 1's line printed while it runs" "seen 1" out
check_line "--line-buffer: job 2's line printed while it runs" "seen 2" out
check_line "--line-buffer: a stderr line printed while its job runs" "seen-err 1" out
check_no_grep "--line-buffer: stdout lines stay on stdout" 'hello-err' out

# Concurrent jobs writing each line in three pieces: whole lines only.
cat >pieces.sh <<'EOF'
i=0
while [ "$i" -lt 30 ]; do
    printf 'J%s-%s ' "$1" "$i"
    printf 'aaaa'
    sleep 0.005
    printf 'bbbb\n'
    i=$((i + 1))
done
printf 'tail-%s' "$1"
EOF
run_npar --line-buffer -j 4 sh pieces.sh ::: 1 2 3 4
check_status "--line-buffer pieces" 0
check_eq "--line-buffer: 120 whole lines" 120 "$(grep -Ec '^(tail-[1-4])*J[1-4]-[0-9]+ aaaabbbb$' out)"
bad=$(grep -Ev '^(tail-[1-4])*J[1-4]-[0-9]+ aaaabbbb$|^(tail-[1-4])+$' out | head -3)
check_eq "--line-buffer: no line mixes pieces of two lines" "" "$bad"
check_eq "--line-buffer: the 4 last lines without newline are printed" 4 \
    "$(grep -o 'tail-[1-4]' out | sort -u | wc -l | tr -d ' ')"
for j in 1 2 3 4; do
    check_eq "--line-buffer: job $j's lines in order" "$(seq 0 29 | tr '\n' ' ')" \
        "$(sed -n "s/^\\(tail-[1-4]\\)*J$j-\\([0-9]*\\) .*/\\2/p" out | tr '\n' ' ')"
done

run_npar --line-buffer printf '%s' ::: 'no newline'
check_eq "--line-buffer: a last line without newline is printed when the job ends" "no newline" "$(cat out)"

# --- --bar when stderr is not a terminal ----------------------------------------------------------

run_npar --bar -k echo ::: a b
check_status "--bar" 0
check_file_eq "--bar: the jobs' output" "a${nl}b" out
check_eq "--bar: nothing on stderr when it is not a terminal" "" "$(cat err)"

# --- 1 MiB from each of 8 jobs ------------------------------------------------------------------

for i in 1 2 3 4 5 6 7 8; do
    head -c 1048576 /dev/urandom >"data.$i"
    head -c 1048576 /dev/urandom >"edata.$i"
done
cat >big.sh <<'EOF'
T=$(dirname "$0")
if [ $(($1 % 2)) = 0 ]; then
    cat "$T/data.$1"; cat "$T/edata.$1" >&2
else
    cat "$T/edata.$1" >&2; cat "$T/data.$1"
fi
EOF
sums() {
    for i in 1 2 3 4 5 6 7 8; do
        sha256sum <"$1.$i" | cut -d' ' -f1
    done | sort
}
blocks() {
    for k in 0 1 2 3 4 5 6 7; do
        dd if="$1" bs=1048576 skip="$k" count=1 2>/dev/null | sha256sum | cut -d' ' -f1
    done | sort
}
run_npar -j 8 sh big.sh ::: 1 2 3 4 5 6 7 8
check_status "8 x 1 MiB, grouped" 0
check_eq "8 x 1 MiB grouped: stdout size" 8388608 "$(wc -c <out | tr -d ' ')"
check_eq "8 x 1 MiB grouped: stderr size" 8388608 "$(wc -c <err | tr -d ' ')"
check_eq "8 x 1 MiB grouped: each MiB of stdout is one job's whole output" "$(sums data)" "$(blocks out)"
check_eq "8 x 1 MiB grouped: each MiB of stderr is one job's whole output" "$(sums edata)" "$(blocks err)"

run_npar -k -j 8 sh big.sh ::: 1 2 3 4 5 6 7 8
check_status "8 x 1 MiB, -k" 0
check_eq "8 x 1 MiB -k: stdout is the jobs' outputs in order" \
    "$(cat data.1 data.2 data.3 data.4 data.5 data.6 data.7 data.8 | sha256sum)" "$(sha256sum <out)"
check_eq "8 x 1 MiB -k: stderr is the jobs' outputs in order" \
    "$(cat edata.1 edata.2 edata.3 edata.4 edata.5 edata.6 edata.7 edata.8 | sha256sum)" "$(sha256sum <err)"

finish
