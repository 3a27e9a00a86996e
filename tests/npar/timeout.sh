#!/bin/sh
# SPDX-License-Identifier: MIT
# npar --timeout and --grace.
#   - a job that forked a grandchild: after --timeout 1 both are gone, the job failed (exit 1),
#     the message "npar: job 1 timed out after 1 s: ..." is in npar's stderr, the joblog says
#     SIGTERM, and it all took well under 20 s (a generous bound, never a tight one);
#   - a grandchild that ignores SIGTERM is SIGKILLed once the job has ended;
#   - a job that traps SIGTERM gets it first (it writes a file), then SIGKILL after --grace
#     (joblog Signal 9), and is gone;
#   - no zombie: while npar still runs (-j 1, the next job started), the timed-out job is not a
#     zombie child of npar and no child of npar is;
#   - with -k the timeout message is in the job's stderr, in the job's place;
#   - decimal --timeout; a job that ends in time is not touched; --timeout with --retries.

. "$(dirname "$0")/lib.sh"
NPAR_LIMIT=30

cat >job.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
case $1 in
    grandchild)         # a job with a grandchild, both in the job's group
        echo $$ >"$T/pid.$1"
        sleep 1000 &
        echo $! >"$T/gpid.$1"
        echo "$1 started"
        wait ;;
    stubborn-grandchild)  # the grandchild ignores SIGTERM
        echo $$ >"$T/pid.$1"
        (trap '' TERM; exec sleep 1000) &
        echo $! >"$T/gpid.$1"
        wait ;;
    trapper)            # traps SIGTERM, notes it, keeps running
        echo $$ >"$T/pid.$1"
        trap 'echo TERM >>"$T/got-term"' TERM
        while :; do sleep 0.1; done ;;
    ignorer)            # ignores SIGTERM
        echo $$ >"$T/pid.$1"
        trap '' TERM
        exec sleep 1000 ;;
    next)               # the job after a timed-out one (-j 1): its marker, then it times out too
        echo $$ >"$T/pid.$1"
        touch "$T/started.next"
        exec sleep 1000 ;;
esac
EOF

now() {
    date +%s
}

# --- the job and its grandchild -------------------------------------------------------------------

t0=$(now)
run_npar --timeout 1 --joblog log sh job.sh ::: grandchild
t1=$(now)
check_status "--timeout 1: the job failed" 1
check_gone "--timeout 1: the job" pid.grandchild
check_gone "--timeout 1: its grandchild" gpid.grandchild
check_grep "--timeout 1: the message in the job's stderr" \
    '^npar: job 1 timed out after 1 s: sh job\.sh grandchild$' err
check_line "--timeout 1: the job's output so far is printed" "grandchild started" out
check_eq "--timeout 1: joblog Exitval 0, Signal 15 (SIGTERM)" "0 15" "$(sed -n 2p log | cut -f7,8 | tr '\t' ' ')"
if [ $((t1 - t0)) -lt 20 ]; then
    ok "--timeout 1 ended in under 20 s ($((t1 - t0)) s)"
else
    fail "--timeout 1: expected to end in under 20 s, took $((t1 - t0)) s"
fi

run_npar --timeout 1 sleep {} ::: 1000
check_status "--timeout 1 sleep 1000" 1
check_line "--timeout: the message names the job, the time and the command" \
    "npar: job 1 timed out after 1 s: sleep 1000" err

# --- a grandchild that ignores SIGTERM ---------------------------------------------------------

run_npar --timeout 1 --grace 1 sh job.sh ::: stubborn-grandchild
check_status "--timeout, grandchild ignoring SIGTERM" 1
check_gone "--timeout: the job with a stubborn grandchild" pid.stubborn-grandchild
check_gone "--timeout: the grandchild that ignored SIGTERM is SIGKILLed" gpid.stubborn-grandchild

# --- a job that traps / ignores SIGTERM: SIGKILL after --grace ----------------------------------

t0=$(now)
run_npar --timeout 1 --grace 1 --joblog log sh job.sh ::: trapper
t1=$(now)
check_status "--timeout --grace, a job trapping SIGTERM" 1
check_gone "--grace: the job that trapped SIGTERM" pid.trapper
check_grep "--grace: SIGTERM came first (the job's trap ran)" '^TERM$' got-term
check_eq "--grace: then SIGKILL (joblog Exitval 0, Signal 9)" "0 9" "$(sed -n 2p log | cut -f7,8 | tr '\t' ' ')"
if [ $((t1 - t0)) -lt 20 ]; then
    ok "--timeout 1 --grace 1 ended in under 20 s ($((t1 - t0)) s)"
else
    fail "--timeout 1 --grace 1: expected to end in under 20 s, took $((t1 - t0)) s"
fi

run_npar --timeout 0.5 --grace 0.5 sh job.sh ::: ignorer
check_status "--timeout 0.5 --grace 0.5, a job ignoring SIGTERM" 1
check_gone "--grace 0.5: the job that ignored SIGTERM" pid.ignorer

# --- no zombie while npar runs ------------------------------------------------------------------

rm -f pid.* gpid.* started.*
start_npar -j 1 --timeout 1 --grace 1 sh job.sh ::: stubborn-grandchild next
if wait_for -- [ -e started.next ]; then
    ok "-j 1: the next job started after the timed-out one"
    check_gone "while npar runs: the timed-out job" pid.stubborn-grandchild
    check_gone "while npar runs: its grandchild" gpid.stubborn-grandchild
    # The children of npar now: the next job only, none a zombie.
    zombies=
    for s in /proc/[0-9]*/stat; do
        line=$(cat "$s" 2>/dev/null) || continue
        rest=${line##*) }
        set -- $rest
        if [ "$2" = "$npar_pid" ] && [ "$1" = Z ]; then
            zombies="$zombies ${s#/proc/}"
        fi
    done
    check_eq "while npar runs: no zombie child of npar" "" "$zombies"
else
    fail "-j 1 --timeout 1: the second job did not start within 20 s"
fi
wait_npar
check_status "two timed-out jobs" 2
check_gone "the second timed-out job" pid.next

# --- the message stays with its job ------------------------------------------------------------

# -k: job 1 times out, job 2 writes to stderr at once; job 1's message comes first.
cat >tk.sh <<'EOF2'
if [ "$1" = 1 ]; then exec sleep 1000; else echo "job 2 err" >&2; fi
EOF2
run_npar -k -j 2 --timeout 1 sh tk.sh ::: 1 2
check_status "-k --timeout: job 1 timed out" 1
check_eq "-k --timeout: the message is in job 1's stderr, before job 2's" \
    "npar: job 1 timed out after 1 s: sh tk.sh 1${nl}job 2 err" "$(cat err)"

# --- the rest ---------------------------------------------------------------------------------

run_npar --timeout 30 sh -c 'echo in time' ::: x
check_status "a job that ends in time" 0
check_file_eq "a job that ends in time: its output" "in time" out
check_eq "a job that ends in time: no timeout message" "" "$(cat err)"

rm -f att
run_npar --timeout 0.5 --retries 2 sh -c 'echo x >>att; exec sleep 1000' ::: x
check_status "--timeout with --retries 2" 1
check_eq "--timeout with --retries 2: each attempt timed out, 2 attempts" 2 "$(wc -l <att | tr -d ' ')"

finish
