# SPDX-License-Identifier: MIT
# Shared helpers of the npar tests (tests/npar/*.sh), sourced by each of them:
#   . "$(dirname "$0")/lib.sh"
# POSIX sh (dash and bash).  It finds the binary ($abs_top_builddir/tools/npar/npar; by hand
# abs_top_builddir defaults to /work/main, NPAR overrides the path), skips (77) when it was not
# built, makes a temporary directory $T that is the working directory and is removed on exit,
# and gives the checks: each prints "ok: ..." or "FAIL: ... expected ..., got ...".  A script
# ends with `finish`, which exits 0 when every check passed and 1 otherwise.
#
# Nothing here asserts on speed.  Waits are bounded polls (wait_for: up to 20 s) on files that
# the jobs create; npar itself runs under a watchdog (NPAR_LIMIT seconds, default 60) so that a
# hang is reported as a failure instead of stalling `make check`.

abs_top_builddir=${abs_top_builddir:-/work/main}
abs_top_srcdir=${abs_top_srcdir:-$abs_top_builddir}
NPAR=${NPAR:-$abs_top_builddir/tools/npar/npar}
test_name=$(basename "$0" .sh)
failures=0
checks=0
npar_pid=
watch_pid=

if [ ! -x "$NPAR" ]; then
    echo "SKIP: $NPAR was not built"
    exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/npar-$test_name.XXXXXX") || exit 99
T=$(cd "$T" && pwd -P) || exit 99

# A newline, for the checks that build multi-line expectations.
nl='
'

# cleanup: kills what this test started and is still alive (npar run in the background, the
# watchdog, and any job or grandchild whose pid a job wrote to $T/pid.* or $T/gpid.*, so that a
# failing run leaves no `sleep 1000` behind), then removes $T.
cleanup() {
    if [ -n "$npar_pid" ] && kill -0 "$npar_pid" 2>/dev/null; then
        kill -KILL "$npar_pid" 2>/dev/null
    fi
    if [ -n "$watch_pid" ]; then
        kill "$watch_pid" 2>/dev/null
    fi
    for f in "$T"/pid.* "$T"/gpid.* "$T"/*/pid.* "$T"/*/gpid.*; do
        [ -f "$f" ] || continue
        p=$(cat "$f" 2>/dev/null)
        case $p in
            '' | *[!0-9]*) continue ;;
        esac
        if pid_alive "$p"; then
            kill -KILL "$p" 2>/dev/null
        fi
    done
    cd / && rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

cd "$T" || exit 99
exec </dev/null

# fail MESSAGE: one failed check.
fail() {
    checks=$((checks + 1))
    failures=$((failures + 1))
    echo "FAIL: $*"
}

# ok MESSAGE: one passed check.
ok() {
    checks=$((checks + 1))
    echo "ok: $*"
}

# check_eq WHAT EXPECTED ACTUAL
check_eq() {
    if [ "$2" = "$3" ]; then
        ok "$1"
    else
        fail "$1: expected [$2], got [$3]"
    fi
}

# check_status WHAT EXPECTED: the exit status of the last run_npar/wait_npar ($rc).
check_status() {
    check_eq "$1: exit status" "$2" "$rc"
}

# check_file_eq WHAT EXPECTED_TEXT FILE: FILE holds exactly EXPECTED_TEXT (trailing newlines
# aside).
check_file_eq() {
    check_eq "$1" "$2" "$(cat "$3" 2>/dev/null)"
}

# check_line WHAT LINE FILE: FILE has a line that is exactly LINE.
check_line() {
    if grep -Fxq -e "$2" "$3" 2>/dev/null; then
        ok "$1"
    else
        fail "$1: expected a line [$2] in $(basename "$3"), got [$(head -c 2000 "$3" 2>/dev/null)]"
    fi
}

# check_grep WHAT ERE FILE: FILE has a line matching the extended regular expression.
check_grep() {
    if grep -Eq -e "$2" "$3" 2>/dev/null; then
        ok "$1"
    else
        fail "$1: expected a line matching /$2/ in $(basename "$3"), got [$(head -c 2000 "$3" 2>/dev/null)]"
    fi
}

# check_no_grep WHAT ERE FILE: FILE has no line matching.
check_no_grep() {
    if grep -Eq -e "$2" "$3" 2>/dev/null; then
        fail "$1: expected no line matching /$2/ in $(basename "$3"), got [$(grep -E -e "$2" "$3" | head -5)]"
    else
        ok "$1"
    fi
}

# count_files GLOB_PREFIX: how many files match "$GLOB_PREFIX"* (e.g. count_files "$T/start.").
count_files() {
    n=0
    for f in "$1"*; do
        [ -e "$f" ] && n=$((n + 1))
    done
    echo "$n"
}

# wait_for [SECONDS] -- COMMAND...: polls COMMAND every 0.1 s until it succeeds, for at most
# SECONDS (default 20).  Returns 1 when it never did.
wait_for() {
    wf_limit=20
    if [ "$1" != -- ]; then
        wf_limit=$1
        shift
    fi
    shift
    wf_i=0
    while [ "$wf_i" -lt $((wf_limit * 10)) ]; do
        "$@" && return 0
        sleep 0.1
        wf_i=$((wf_i + 1))
    done
    "$@"
}

# at_least N GLOB_PREFIX: there are at least N such files (for wait_for).
at_least() {
    [ "$(count_files "$2")" -ge "$1" ]
}

# pid_alive PID: the process exists and is not a zombie (a zombie has ended: when its parent
# is init and init does not reap, it stays a zombie but it is gone for our purposes).
pid_alive() {
    if [ -r "/proc/$1/stat" ]; then
        pa_state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
        case $pa_state in
            '' | Z | X | x) return 1 ;;
            *) return 0 ;;
        esac
    fi
    kill -0 "$1" 2>/dev/null
}

pid_dead() {
    ! pid_alive "$1"
}

# check_gone WHAT PIDFILE: the pid written in PIDFILE is gone (after at most 5 s, for the
# kernel and init to finish with a grandchild).
check_gone() {
    cg_pid=$(cat "$2" 2>/dev/null)
    case $cg_pid in
        '' | *[!0-9]*)
            fail "$1: no pid in $(basename "$2") (the job did not start?)"
            return
            ;;
    esac
    if wait_for 5 -- pid_dead "$cg_pid"; then
        ok "$1: pid $cg_pid is gone"
    else
        fail "$1: expected pid $cg_pid to be gone, it is alive: $(cat "/proc/$cg_pid/stat" 2>/dev/null)"
    fi
}

# run_npar ARGS...: runs npar (under the watchdog) with stdout in $T/out and stderr in $T/err,
# sets rc; the caller redirects stdin when it wants (the default is /dev/null).
run_npar() {
    echo "--- npar $*"
    if command -v timeout >/dev/null 2>&1; then
        timeout --foreground -k 5 "${NPAR_LIMIT:-60}" "$NPAR" "$@" >"$T/out" 2>"$T/err"
        rc=$?
        if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
            fail "npar $*: did not end within ${NPAR_LIMIT:-60} s (killed by the test's watchdog)"
        fi
    else
        "$NPAR" "$@" >"$T/out" 2>"$T/err"
        rc=$?
    fi
    echo "--- exit status $rc"
}

# start_npar ARGS...: npar in the background (stdout $T/out, stderr $T/err), its pid in
# npar_pid, with SIGINT and SIGTERM at their default disposition (a non-interactive shell
# starts background commands with SIGINT ignored), and a watchdog that SIGKILLs it after
# NPAR_LIMIT seconds.  wait_npar sets rc.
start_npar() {
    echo "--- npar $* &"
    if env --default-signal=INT,TERM true 2>/dev/null; then
        env --default-signal=INT,TERM "$NPAR" "$@" >"$T/out" 2>"$T/err" &
    else
        "$NPAR" "$@" >"$T/out" 2>"$T/err" &
    fi
    npar_pid=$!
    sp_limit=$((${NPAR_LIMIT:-60} * 10))
    (
        i=0
        while [ "$i" -lt "$sp_limit" ] && kill -0 "$npar_pid" 2>/dev/null; do
            sleep 0.1
            i=$((i + 1))
        done
        if kill -0 "$npar_pid" 2>/dev/null; then
            echo "FAIL: npar did not end within ${NPAR_LIMIT:-60} s (killed by the test's watchdog)" >"$T/watchdog"
            kill -KILL "$npar_pid"
        fi
    ) >/dev/null 2>&1 &
    watch_pid=$!
}

wait_npar() {
    wait "$npar_pid"
    rc=$?
    wait "$watch_pid" 2>/dev/null
    if [ -s "$T/watchdog" ]; then
        fail "$(sed 's/^FAIL: //' "$T/watchdog")"
        rm -f "$T/watchdog"
    fi
    npar_pid=
    watch_pid=
    echo "--- exit status $rc"
}

# jlib: the helpers the job scripts source (. "$(dirname "$0")/jlib.sh"): waitfor CODE (a bounded poll,
# 20 s, returns 1 on timeout; CODE is eval'ed inside the function, so it must use variables,
# not $1) and count PREFIX (how many files match PREFIX*).
cat >"$T/jlib.sh" <<'EOF'
T=$(dirname "$0")
waitfor() {
    i=0
    while [ "$i" -lt 200 ]; do
        eval "$1" && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
count() {
    n=0
    for f in "$1"*; do [ -e "$f" ] && n=$((n + 1)); done
    echo "$n"
}
EOF

# finish: the verdict.
finish() {
    echo "=== $test_name: $checks checks, $failures failed"
    if [ "$failures" -gt 0 ]; then
        exit 1
    fi
    exit 0
}
