#!/bin/sh
# SPDX-License-Identifier: MIT
# Signals to npar, and the jobs' process state.
#   - SIGINT while 4 jobs sleep (and one failed job has ended): the 4 jobs and their
#     grandchildren are gone, nothing queued started, the ended job's output and the killed
#     jobs' output so far are printed, the summary line, exit 130;
#   - SIGTERM while 1 job sleeps (one that ignores SIGTERM, --grace 1): it is gone, "1 job
#     killed" in the singular, exit 143;
#   - a reader of npar's output that goes away (EPIPE): the sleeping jobs and their grandchildren
#     are gone, nothing queued started, exit 141;
#   - each job is in its own process group (pid = pgid, not npar's group), with default signal
#     dispositions (npar started with SIGUSR1 and SIGHUP ignored) and an empty signal mask
#     (glibc's signals 32 and 33 aside).
# npar is started in the background with SIGINT/SIGTERM at their default (start_npar); the
# test waits for marker files (bounded) before it signals.

. "$(dirname "$0")/lib.sh"
NPAR_LIMIT=30

cat >job.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
case $1 in
    s*)                 # sleeps until killed, with a grandchild
        echo $$ >"$T/pid.$1"
        sleep 1000 &
        echo $! >"$T/gpid.$1"
        echo "$1 started"
        touch "$T/ready.$1"
        wait
        echo "$1 was not killed" ;;
    fail)               # fails at once
        echo "fail ended"
        exit 1 ;;
    ignorer)            # ignores SIGTERM
        echo $$ >"$T/pid.$1"
        trap '' TERM
        touch "$T/ready.$1"
        exec sleep 1000 ;;
    q*)                 # queued: a marker when it starts
        touch "$T/started.$1" ;;
    late)               # prints once the test says so (its reader is gone by then)
        waitfor '[ -e "$T/go.late" ]'
        echo "late ended" ;;
esac
EOF

# --- SIGINT ---------------------------------------------------------------------------------------

# -j 4: "fail" and s1..s3 start, "fail" ends and s4 takes its place; q1..q3 stay queued.

start_npar -j 4 sh job.sh ::: fail s1 s2 s3 s4 q1 q2 q3
if wait_for -- at_least 4 ready.s && wait_for -- grep -q '^fail ended$' out; then
    ok "SIGINT: the 4 sleeping jobs run and the failed one has ended"
else
    fail "SIGINT: expected 4 ready.s* markers and 'fail ended' in stdout within 20 s, got $(count_files ready.s) markers, stdout [$(cat out)]"
fi
kill -INT "$npar_pid"
wait_npar
check_status "SIGINT" 130
for j in s1 s2 s3 s4; do
    check_gone "SIGINT: job $j" "pid.$j"
    check_gone "SIGINT: job $j's grandchild" "gpid.$j"
done
check_eq "SIGINT: no queued job started" 0 "$(count_files started.)"
check_line "SIGINT: the summary line" \
    "npar: interrupted by SIGINT: 4 jobs killed, 1 done (1 failed), no more started" err
check_line "SIGINT: the ended job's output is printed" "fail ended" out
check_eq "SIGINT: the killed jobs' output so far is printed" 4 "$(grep -c '^s[1-4] started$' out)"
check_no_grep "SIGINT: every sleeping job was killed" 'was not killed' out

# --- SIGTERM --------------------------------------------------------------------------------------

rm -f ready.* pid.* gpid.* started.*
start_npar -j 1 --grace 1 sh job.sh ::: ignorer q1 q2
if wait_for -- [ -e ready.ignorer ]; then
    ok "SIGTERM: the job runs"
else
    fail "SIGTERM: expected ready.ignorer within 20 s"
fi
kill -TERM "$npar_pid"
wait_npar
check_status "SIGTERM" 143
check_gone "SIGTERM: the job that ignored SIGTERM (SIGKILL after --grace)" pid.ignorer
check_eq "SIGTERM: no queued job started" 0 "$(count_files started.)"
check_grep "SIGTERM: the summary line, '1 job' in the singular" \
    '^npar: interrupted by SIGTERM: 1 job killed, 0 done( \(0 failed\))?, no more started$' err

# --- a closed output: npar ... | a reader that has gone -----------------------------------

# npar writes into a FIFO whose only reader closes it while s1 and s2 sleep; then "late" ends
# and npar's write of its output meets EPIPE: s1, s2 and their grandchildren are killed, q1
# never starts, and npar exits 141 (as if SIGPIPE had ended it), not leaving its jobs behind.
rm -f ready.* pid.* gpid.* started.* go.late
mkfifo fifo
echo "--- npar -j 3 sh job.sh ::: s1 s2 late q1 >fifo &"
timeout -k 5 "$NPAR_LIMIT" "$NPAR" -j 3 sh job.sh ::: s1 s2 late q1 >fifo 2>err &
npar_pid=$!
exec 3<fifo
if wait_for -- at_least 2 ready.s; then
    ok "closed output: s1 and s2 run"
else
    fail "closed output: expected 2 ready.s* markers within 20 s, got $(count_files ready.s)"
fi
exec 3<&-
touch go.late
wait "$npar_pid"
rc=$?
echo "--- exit status $rc"
check_status "closed output" 141
for j in s1 s2; do
    check_gone "closed output: job $j" "pid.$j"
    check_gone "closed output: job $j's grandchild" "gpid.$j"
done
check_eq "closed output: the queued job did not start" 0 "$(count_files started.)"

# --- the job's process group, signal dispositions and mask ------------------------------------

if [ -r /proc/self/stat ] && [ -r /proc/self/status ]; then
    run_npar sh -c 'echo "$$ $(sed "s/.*) //" /proc/$$/stat | cut -d" " -f3)"' ::: x
    set -- $(cat out)
    check_eq "the job is the leader of its own process group (pid = pgid)" "$1" "$2"
    mypg=$(sed 's/.*) //' /proc/$$/stat | cut -d' ' -f3)
    if [ -n "$2" ] && [ "$2" != "$mypg" ]; then
        ok "the job's process group is not npar's"
    else
        fail "the job's process group: expected a group of its own, got [$2] (the test's is $mypg)"
    fi

    # npar started with SIGUSR1 and SIGHUP ignored: the job still has every default.
    echo "--- (npar with SIGUSR1 and SIGHUP ignored)"
    sh -c 'trap "" USR1 HUP; exec "$@"' sh "$NPAR" grep -h -E '^Sig(Ign|Blk):' /proc/self/status ::: /dev/null >out 2>err
    rc=$?
    check_status "the job's signal state" 0
    # Signals 32 and 33 are glibc's own (SIGCANCEL, SIGSETXID): its posix_spawn leaves them
    # ignored in the child and sigaddset refuses them, so they are left out of the check.
    for what in Ign Blk; do
        hex=$(sed -n "s/^Sig$what:[[:space:]]*//p" out)
        if [ -n "$hex" ] && [ $((0x$hex & ~0x180000000)) = 0 ]; then
            ok "the job's Sig$what is empty (signals 32 and 33 aside): $hex"
        else
            fail "the job's Sig$what: expected no signal (32 and 33 aside), got [$hex]"
        fi
    done
else
    echo "(no /proc: process group and signal state not checked)"
fi

finish
