#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# npar-bench.sh: the cost per job of npar, against xargs -P and GNU parallel.
#
#   bench/npar-bench.sh [--quick] [--floor SPAWN_FLOOR] NPAR
#
# NPAR is the npar binary to measure (tools/npar/npar of a build tree).  Each peer runs 2000
# jobs of `true` (200 with --quick), as many at once as there are CPUs (nproc), the inputs
# being the lines of `seq` (made before the timing, read from a file):
#
#   npar      NPAR -j CPUS true
#   xargs     xargs -P CPUS -n 1 true
#   parallel  parallel --will-cite -j CPUS true    (when `command -v parallel` finds it)
#   floor     SPAWN_FLOOR CPUS true                (with --floor: bench/spawn-floor, which
#             spawns and reaps from one thread and captures nothing: no runner can do less)
#
# `true` does nothing, so the time is what it costs to start, wait for and reap a job.  One
# untimed warm-up run each, then 5 rounds (3 with --quick); every round runs each peer once,
# in an order that rotates from round to round.  Per peer, the median of the rounds is
# reported, with the smallest and the largest, and the medians' ratios:
#
#   RATIO npar/xargs=1.07        target: at most 1.2
#   RATIO parallel/npar=31.2     target: at least 10
#
# and, with --floor, the time above the floor, which is each runner's own cost per job (on a
# machine where starting a process is slow, the floor bounds what the whole times' ratio can
# show, however cheap a runner is):
#
#   RATIO npar/floor=1.10
#   RATIO overhead parallel/npar=64
#
# The load average comes first (a warning on stderr when it is above half the CPUs: then the
# figures are unreliable).  Exits 1 when a run fails (a non-zero exit status), 2 on a usage
# error, and 0 otherwise, whatever the ratios.
set -euo pipefail
export LC_ALL=C # a decimal point in EPOCHREALTIME, awk and sort, whatever the locale

usage() {
    echo "usage: $0 [--quick] [--floor SPAWN_FLOOR] NPAR" >&2
    echo "  NPAR: the npar binary to measure, e.g. tools/npar/npar" >&2
    exit 2
}

quick=no
npar=
floor=
want_floor=no
for arg in "$@"; do
    if [[ $want_floor == yes ]]; then
        floor=$arg want_floor=no
        continue
    fi
    case $arg in
    --quick) quick=yes ;;
    --floor) want_floor=yes ;;
    -h | --help)
        sed -n '3,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    -*) usage ;;
    *)
        [[ -z $npar ]] || usage
        npar=$arg
        ;;
    esac
done
[[ -n $npar ]] || usage
if [[ $npar != */* ]]; then
    name=$npar
    npar=$(command -v "$name") || { echo "npar-bench: $name: not found" >&2; exit 2; }
fi
if [[ ! -x $npar ]]; then
    echo "npar-bench: $npar: not an executable file" >&2
    exit 2
fi

if [[ $quick == yes ]]; then
    jobs=200 rounds=3
else
    jobs=2000 rounds=5
fi
cpus=$(nproc)

# The peers, by name; parallel only when it is installed.
peers=(npar xargs)
if [[ -n $floor ]]; then
    [[ -x $floor ]] || { echo "npar-bench: $floor: not an executable file" >&2; exit 2; }
    peers+=(floor)
fi
if command -v parallel >/dev/null 2>&1; then
    peers+=(parallel)
else
    echo "npar-bench: GNU parallel not found: no parallel peer (./bootstrap --bench installs" \
        "it: the Debian package parallel)" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/npar-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
seq "$jobs" >"$tmp/inputs.$jobs"

# The time of one run of a peer on the N inputs of $tmp/inputs.N, in seconds, on stdout; a
# run that fails ends the script.
run() {
    local peer=$1 n=$2 start end status=0
    local cmd
    case $peer in
    npar) cmd=("$npar" -j "$cpus" true) ;;
    xargs) cmd=(xargs -P "$cpus" -n 1 true) ;;
    parallel) cmd=(parallel --will-cite -j "$cpus" true) ;;
    floor) cmd=("$floor" "$cpus" true) ;;
    esac
    # EPOCHREALTIME (bash 5) costs no process; else date, the same before and after.
    start=${EPOCHREALTIME:-$(date +%s.%N)}
    "${cmd[@]}" <"$tmp/inputs.$n" >"$tmp/out" 2>"$tmp/err" || status=$?
    end=${EPOCHREALTIME:-$(date +%s.%N)}
    if ((status != 0)); then
        echo "npar-bench: $peer failed (exit status $status): ${cmd[*]}, $n inputs" >&2
        sed 's/^/  /' "$tmp/err" | head -20 >&2
        exit 1
    fi
    awk -v s="$start" -v e="$end" 'BEGIN { printf "%.6f\n", e - s }'
}

# The load average of the last minute, and whether it is above half the CPUs.
load=$(cut -d ' ' -f 1 /proc/loadavg 2>/dev/null ||
    uptime | sed 's/.*load averages*: *//; s/,.*//')
echo "LOAD load1=$load cpus=$cpus jobs=$jobs rounds=$rounds"
if awk -v l="$load" -v c="$cpus" 'BEGIN { exit !(l > c / 2) }'; then
    echo "npar-bench: warning: the load average ($load) is above half the CPUs ($cpus):" \
        "other work competes for them, and the figures are unreliable" >&2
fi

# Warm-up: a tenth of the inputs, untimed, so that every binary is in the page cache.
warm=$((jobs / 10))
head -n "$warm" "$tmp/inputs.$jobs" >"$tmp/inputs.$warm"
for peer in "${peers[@]}"; do
    run "$peer" "$warm" >/dev/null
done

declare -A samples
npeers=${#peers[@]}
for ((r = 0; r < rounds; r++)); do
    for ((k = 0; k < npeers; k++)); do
        peer=${peers[(r + k) % npeers]}
        t=$(run "$peer" "$jobs")
        samples[$peer]+="$t "
        echo "npar-bench: round $((r + 1))/$rounds $peer ${t}s" >&2
    done
done

# Median, smallest and largest of a peer's samples: "median min max".
stats() {
    # shellcheck disable=SC2086 # the samples are numbers, split on purpose
    printf '%s\n' $1 | sort -g | awk '
        { v[NR] = $1 }
        END {
            m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%.6f %.6f %.6f\n", m, v[1], v[NR]
        }'
}

# A ratio with three significant digits, never in exponent form.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (b <= 0) { print "inf"; exit }
        q = a / b
        if (q >= 100) printf "%.0f\n", q
        else if (q >= 10) printf "%.1f\n", q
        else printf "%.2f\n", q
    }'
}

declare -A median
echo "peer         median s   per job µs      min s      max s"
for peer in "${peers[@]}"; do
    read -r m lo hi < <(stats "${samples[$peer]}")
    median[$peer]=$m
    awk -v p="$peer" -v m="$m" -v lo="$lo" -v hi="$hi" -v n="$jobs" 'BEGIN {
        printf "%-10s %10.3f %12.1f %10.3f %10.3f\n", p, m, m / n * 1e6, lo, hi
    }'
done

echo "RATIO npar/xargs=$(ratio "${median[npar]}" "${median[xargs]}")"
if [[ -n ${median[parallel]:-} ]]; then
    echo "RATIO parallel/npar=$(ratio "${median[parallel]}" "${median[npar]}")"
fi
if [[ -n ${median[floor]:-} ]]; then
    echo "RATIO npar/floor=$(ratio "${median[npar]}" "${median[floor]}")"
    # The time above the floor; a runner faster than the floor (noise) counts as 1 ms.
    above() {
        awk -v a="$1" -v f="${median[floor]}" 'BEGIN {
            d = a - f
            printf "%.6f\n", (d > 0.001 ? d : 0.001)
        }'
    }
    echo "RATIO overhead npar/xargs=$(ratio "$(above "${median[npar]}")" "$(above "${median[xargs]}")")"
    if [[ -n ${median[parallel]:-} ]]; then
        echo "RATIO overhead parallel/npar=$(ratio "$(above "${median[parallel]}")" \
            "$(above "${median[npar]}")")"
    fi
fi
echo "npar-bench: targets: npar/xargs at most 1.2, parallel/npar at least 10" >&2
