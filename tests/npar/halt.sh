#!/bin/sh
# SPDX-License-Identifier: MIT
# npar's failure handling and exit statuses.
#   --halt now,fail=1: a failing job gets a sleeping one (and its grandchild) killed, pids gone,
#     its output so far printed, nothing queued starts (marker files), the halting line, exit 1
#     (the killed job is not counted);
#   --halt soon,fail=1: the running job finishes; --halt soon,fail=2 / now,fail=3 with -j 1
#     stop after exactly that many;
#   --halt soon,success=2, --first-success (with and without a job to kill), a success
#     condition never met;
#   --retries: attempts counted with marker files, only the last attempt printed and logged;
#   exit statuses: the number of failed jobs, a job killed by a signal, a command that cannot
#     start (127 in the joblog, its message in the job's stderr).
# Every job that could hang sleeps 1000 s: the watchdog (30 s) reports a halt that kills nothing.

. "$(dirname "$0")/lib.sh"
NPAR_LIMIT=30

# The jobs: role [name].
cat >job.sh <<'EOF'
. "$(dirname "$0")/jlib.sh"
case $1 in
    sleeper)            # runs until killed; its pid and its grandchild's in files
        echo $$ >"$T/pid.sleeper"
        sleep 1000 &
        echo $! >"$T/gpid.sleeper"
        echo "sleeper started"
        touch "$T/ready.sleeper"
        wait
        echo "sleeper was not killed" ;;
    failer)             # fails once the sleeper runs
        waitfor '[ -e "$T/ready.sleeper" ]' || echo "failer: no sleeper"
        echo "failer out"
        exit 1 ;;
    succeeder)          # succeeds once the sleeper runs
        waitfor '[ -e "$T/ready.sleeper" ]' || echo "succeeder: no sleeper"
        echo "succeeder out"
        exit 0 ;;
    slow)               # runs until npar has printed the failer's output, then a little more
        echo $$ >"$T/pid.slow"
        touch "$T/ready.sleeper"
        if waitfor 'grep -q "^failer out$" "$T/out"'; then sleep 0.5; echo "slow finished"; else echo "slow: failer not seen"; fi ;;
    q*)                 # a queued job: leaves a marker when it starts
        touch "$T/started.$1"
        echo "$1 ran" ;;
    f*)                 # fails at once
        touch "$T/started.$1"
        exit 3 ;;
    s*)                 # succeeds at once
        touch "$T/started.$1"
        exit 0 ;;
esac
EOF

reset() {
    rm -f started.* ready.* pid.* gpid.* att.*
}

# --- --halt now,fail=1 ----------------------------------------------------------------------------

reset
run_npar -j 2 --halt now,fail=1 sh job.sh ::: sleeper failer q3 q4 q5 q6
check_status "--halt now,fail=1 (1 failed, the killed job not counted)" 1
check_gone "--halt now,fail=1: the sleeping job" pid.sleeper
check_gone "--halt now,fail=1: the sleeping job's grandchild" gpid.sleeper
check_eq "--halt now,fail=1: no queued job started" 0 "$(count_files started.)"
check_line "--halt now,fail=1: the failed job's output" "failer out" out
check_line "--halt now,fail=1: the killed job's output so far is printed" "sleeper started" out
check_no_grep "--halt now,fail=1: the sleeper was killed" "was not killed" out
check_line "--halt now,fail=1: the halting line" \
    "npar: halting after 1 failed job (--halt now,fail=1): 1 job killed, 1 done, no more started" err

# --- --halt soon,fail=N -------------------------------------------------------------------------

reset
run_npar -j 2 --halt soon,fail=1 sh job.sh ::: slow failer q3 q4 q5
check_status "--halt soon,fail=1" 1
check_line "--halt soon,fail=1: the running job was let finish" "slow finished" out
check_eq "--halt soon,fail=1: no queued job started" 0 "$(count_files started.)"
check_grep "--halt soon,fail=1: the halting line" \
    '^npar: halting after 1 failed job \(--halt soon,fail=1\): ' err

reset
run_npar -j 1 --halt soon,fail=2 sh job.sh ::: f1 f2 f3 f4 f5 f6
check_status "--halt soon,fail=2 -j 1" 2
check_eq "--halt soon,fail=2 -j 1: 2 jobs started" 2 "$(count_files started.)"
check_grep "--halt soon,fail=2: the halting line" '^npar: halting after 2 failed jobs \(--halt soon,fail=2\): ' err

reset
run_npar -j 1 --halt now,fail=3 sh job.sh ::: s1 f2 s3 f4 f5 f6 f7 s8
check_status "--halt now,fail=3 -j 1" 3
check_eq "--halt now,fail=3 -j 1: 5 jobs started" "started.f2 started.f4 started.f5 started.s1 started.s3" \
    "$(echo started.*)"

# --- success conditions -------------------------------------------------------------------------

reset
run_npar -j 1 --halt soon,success=2 sh job.sh ::: f1 s2 f3 s4 s5 s6
check_status "--halt soon,success=2 -j 1 (met)" 0
check_eq "--halt soon,success=2 -j 1: 4 jobs started" "started.f1 started.f3 started.s2 started.s4" "$(echo started.*)"
check_grep "--halt soon,success=2: the halting line" \
    '^npar: halting after 2 successful jobs \(--halt soon,success=2\): ' err

reset
run_npar -j 1 --first-success sh job.sh ::: f1 f2 s3 q4 q5
check_status "--first-success -j 1 (met after 2 failures)" 0
check_eq "--first-success -j 1: 3 jobs started" "started.f1 started.f2 started.s3" "$(echo started.*)"
check_grep "--first-success: the halting line" '^npar: halting after 1 successful job \(--halt now,success=1\): ' err

reset
run_npar -j 2 --first-success sh job.sh ::: sleeper succeeder q3 q4
check_status "--first-success: a success kills the sleeper" 0
check_gone "--first-success: the sleeping job" pid.sleeper
check_gone "--first-success: the sleeping job's grandchild" gpid.sleeper
check_eq "--first-success: no queued job started" 0 "$(count_files started.)"
check_line "--first-success: the halting line" \
    "npar: halting after 1 successful job (--halt now,success=1): 1 job killed, 1 done, no more started" err

reset
run_npar -j 2 --halt now,success=1 sh job.sh ::: f1 f2 f3
check_status "--halt now,success=1 never met: 3 failed" 3
check_eq "--halt now,success=1 never met: every job ran" 3 "$(count_files started.)"
check_no_grep "--halt now,success=1 never met: no halting line" 'halting' err

reset
run_npar -j 2 --halt never sh job.sh ::: f1 s2 f3 s4
check_status "--halt never: 2 failed" 2
check_eq "--halt never: every job ran" 4 "$(count_files started.)"

# --- --retries ------------------------------------------------------------------------------------

cat >retry.sh <<'EOF'
# retry.sh NAME SUCCEED_AT: each attempt appends to att.NAME; succeeds at attempt SUCCEED_AT.
T=$(dirname "$0")
echo x >>"$T/att.$1"
n=$(wc -l <"$T/att.$1" | tr -d ' ')
echo "$1 attempt $n"
echo "$1 err attempt $n" >&2
[ "$n" -ge "$2" ] || exit 7
EOF

reset
run_npar --retries 3 --joblog log sh retry.sh ::: never ::: 99
check_status "--retries 3, always failing" 1
check_eq "--retries 3, always failing: 3 attempts" 3 "$(wc -l <att.never | tr -d ' ')"
check_file_eq "--retries 3: only the last attempt's stdout is printed" "never attempt 3" out
check_file_eq "--retries 3: only the last attempt's stderr is printed" "never err attempt 3" err
check_eq "--retries 3: the joblog has one line for the job" 2 "$(wc -l <log | tr -d ' ')"
check_eq "--retries 3: the joblog's Exitval is the last attempt's" 7 "$(sed -n 2p log | cut -f7)"

reset
run_npar --retries 3 sh retry.sh ::: second ::: 2
check_status "--retries 3, succeeding at the 2nd attempt" 0
check_eq "--retries 3, succeeding at the 2nd: 2 attempts" 2 "$(wc -l <att.second | tr -d ' ')"
check_file_eq "--retries: the successful attempt's output only" "second attempt 2" out

reset
run_npar -j 2 --retries 0 sh retry.sh ::: a b ::: 99
check_status "--retries 0" 2
check_eq "--retries 0: one attempt" "1 1" "$(wc -l <att.a | tr -d ' ') $(wc -l <att.b | tr -d ' ')"
reset
run_npar --retries 1 sh retry.sh ::: one ::: 99
check_status "--retries 1" 1
check_eq "--retries 1: one attempt" 1 "$(wc -l <att.one | tr -d ' ')"

reset
run_npar -j 1 --retries 3 --halt now,fail=1 sh retry.sh ::: r1 r2 ::: 3
check_status "--retries with --halt: only the last attempt counts" 0
check_eq "--retries with --halt: both jobs ran 3 attempts" "3 3" \
    "$(wc -l <att.r1 | tr -d ' ') $(wc -l <att.r2 | tr -d ' ')"

# --- exit statuses --------------------------------------------------------------------------------

run_npar -j 2 sh -c 'exit $1' sh ::: 0 1 0 7 0 255
check_status "exit status: the number of failed jobs (3), not their statuses" 3

run_npar -j 2 true ::: 1 2 3
check_status "exit status: all succeeded" 0

run_npar --joblog log sh -c 'kill -9 $$' ::: x
check_status "a job killed by a signal fails" 1
check_eq "a job killed by SIGKILL: joblog Exitval 0, Signal 9" "0 9" "$(sed -n 2p log | cut -f7,8 | tr '\t' ' ')"

run_npar --joblog log ./no-such-command-here ::: a
check_status "a command that cannot start fails" 1
check_grep "cannot start: the message in the job's stderr" \
    '^npar: \./no-such-command-here: No such file or directory$' err
check_eq "cannot start: joblog Exitval 127" 127 "$(sed -n 2p log | cut -f7)"

run_npar -j 2 no-such-command-in-path-npar ::: a b
check_status "a command not in PATH: 2 jobs failed" 2
check_eq "not in PATH: one message per job" 2 "$(grep -c '^npar: no-such-command-in-path-npar: ' err)"

finish
