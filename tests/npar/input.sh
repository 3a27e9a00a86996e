#!/bin/sh
# SPDX-License-Identifier: MIT
# npar's inputs and command template: lines of stdin (last line without newline, empty lines,
# empty stdin), -0, -a FILE, ::: groups and their cross product, jobs numbered in input order,
# the replacement strings {} {.} {/} {//} {/.} {#} {N} {N.} {N/} {N//} {N/.}, braces left alone,
# the inputs appended when no word has a replacement string, no shell without --shell (one
# argument per word, whatever it holds), --shell and its quoting, --dry-run (input order,
# quoting, runs nothing), option parsing that stops at the command, and the job's stdin.
# Output order is pinned with -k where it matters.

. "$(dirname "$0")/lib.sh"

# --- stdin lines ------------------------------------------------------------------------------

printf 'a\nb\nc\n' >in
run_npar -k echo <in
check_status "stdin lines" 0
check_file_eq "stdin lines: one job per line, in order with -k" "a${nl}b${nl}c" out

printf 'a\nb' >in
run_npar -k echo <in
check_file_eq "stdin: a last line without newline is an input" "a${nl}b" out

printf 'a\n\nb\n' >in
run_npar -k echo 'x{}y' <in
check_file_eq "stdin: an empty line is an input (empty string)" "xay${nl}xy${nl}xby" out

run_npar echo hello </dev/null
check_status "empty stdin" 0
check_eq "empty stdin: no job runs" "" "$(cat out)"

printf '1\n2\n3\n4\n5\n6\n' >in
run_npar -j 3 echo <in
check_status "stdin, grouped" 0
check_eq "stdin without -k: every input ran once" "1 2 3 4 5 6" "$(sort -n out | tr '\n' ' ' | sed 's/ $//')"

# --- -0 / --null --------------------------------------------------------------------------------

printf 'a b\0c\nd\0e' >in0
run_npar -0 -k printf '[%s]\n' <in0
check_status "-0" 0
check_file_eq "-0: NUL-separated, newline kept inside an item, last item without NUL" \
    "[a b]${nl}[c${nl}d]${nl}[e]" out

run_npar --null -k printf '[%s]\n' <in0
check_file_eq "--null is -0" "[a b]${nl}[c${nl}d]${nl}[e]" out

# --- -a FILE --------------------------------------------------------------------------------------

printf 'f1\nf2 with space\n' >inputs
printf 'from-stdin\n' >in
run_npar -k -a inputs printf '[%s]\n' <in
check_status "-a FILE" 0
check_file_eq "-a FILE: one input per line of FILE, stdin not read" "[f1]${nl}[f2 with space]" out

printf 'z1\0z2\0' >inputs0
run_npar -k -0 -a inputs0 echo
check_file_eq "-a FILE with -0" "z1${nl}z2" out

# --- ::: and cross products -------------------------------------------------------------------

run_npar -k echo ::: a b c <in
check_status ":::" 0
check_file_eq "::: a b c: one job each, stdin not read" "a${nl}b${nl}c" out

run_npar -k echo ::: a b ::: 1 2
check_file_eq "two ::: groups: cross product, first group slowest" "a 1${nl}a 2${nl}b 1${nl}b 2" out

run_npar -k echo {#} {} ::: a b ::: 1 2
check_file_eq "cross product: jobs numbered 1..4 in that order" "1 a 1${nl}2 a 2${nl}3 b 1${nl}4 b 2" out

run_npar -k printf '[%s]\n' {} ::: a b ::: 1 ::: x y
check_file_eq "three groups; {} is the inputs joined by one space, one word" \
    "[a 1 x]${nl}[a 1 y]${nl}[b 1 x]${nl}[b 1 y]" out

run_npar -k sh -c 'echo "$#:$1:$2"' sh ::: 'a b' c ::: 1
check_file_eq "no replacement string: each group's input appended as one argument" \
    "2:a b:1${nl}2:c:1" out

# --- replacement strings ----------------------------------------------------------------------

run_npar -k printf '%s|%s|%s|%s|%s\n' {} {.} {/} {//} {/.} ::: dir/a.tar.gz a.txt x/y.d/z noext /abs/p.c
check_status "{} {.} {/} {//} {/.}" 0
check_file_eq "{} {.} {/} {//} {/.}" \
    "dir/a.tar.gz|dir/a.tar|a.tar.gz|dir|a.tar${nl}a.txt|a|a.txt|.|a${nl}x/y.d/z|x/y.d/z|z|x/y.d|z${nl}noext|noext|noext|.|noext${nl}/abs/p.c|/abs/p|p.c|/abs|p" out

run_npar -k echo {#} ::: a b c
check_file_eq "{#} is the job number, and a replacement string: the input is not appended" \
    "1${nl}2${nl}3" out

printf 'l1\nl2\nl3\n' >in
run_npar -k echo {#}:{} <in
check_file_eq "{#} with stdin inputs" "1:l1${nl}2:l2${nl}3:l3" out

run_npar -k printf '<%s>\n' 'pre{}post' '{}-{}' '{}.out' ::: a
check_file_eq "replacement strings inside words, several in one word" "<preapost>${nl}<a-a>${nl}<a.out>" out

run_npar -k printf '%s|%s|%s|%s|%s|%s\n' {2} {1} {2.} {2/} {2//} {2/.} ::: a b ::: d/f.c
check_file_eq "{N} {N.} {N/} {N//} {N/.} on the N-th group" "d/f.c|a|d/f|f.c|d|f${nl}d/f.c|b|d/f|f.c|d|f" out

run_npar -k printf '%s|%s\n' {1.} {1/.} ::: x/p.q.r
check_file_eq "{1.} {1/.}" "x/p.q|p.q" out

run_npar -k printf '%s|%s|%s\n' '{x}' '{abc}' {} ::: a
check_file_eq "anything else in braces is left as it is" "{x}|{abc}|a" out

run_npar -k printf '%s|%s\n' '{x}' ::: a
check_file_eq "braces that are no replacement string: the input is appended" "{x}|a" out

run_npar -k echo pre ::: a b
check_file_eq "appended after the template's words" "pre a${nl}pre b" out

# --- no shell without --shell -----------------------------------------------------------------

# shellcheck disable=SC2016
run_npar -k printf '[%s]\n' ::: 'a b' '$HOME' '*' "it's" '`echo x`' '$(echo y)' ''
check_file_eq "without --shell: each input is one argument, nothing is expanded" \
    "[a b]${nl}[\$HOME]${nl}[*]${nl}[it's]${nl}[\`echo x\`]${nl}[\$(echo y)]${nl}[]" out

run_npar -k sh -c 'echo $#' sh {} 'x{}y' ::: 'a b c'
check_file_eq "without --shell: a replaced word with spaces stays one argument" "2" out

run_npar -k 'printf' '%s\n' '{} ; echo no' ::: a
check_file_eq "without --shell: a ; in a word is no command separator" "a ; echo no" out

# --- --shell ----------------------------------------------------------------------------------

mkdir sh1
(cd sh1 && run_npar --shell 'echo {} > {}.out' ::: a 'b c' >/dev/null)
check_file_eq "--shell 'echo {} > {}.out' ::: a" "a" sh1/a.out
check_file_eq "--shell: the quoted value in a word with a suffix ('b c'.out)" "b c" "sh1/b c.out"

run_npar -k --shell 'printf "[%s]\n" {}' ::: 'a b' '$HOME' '*' "it's" '`echo x`' '$(echo y)' 'a;b' 'x"y'
check_status "--shell quoting" 0
check_file_eq "--shell: replaced values quoted for the shell" \
    "[a b]${nl}[\$HOME]${nl}[*]${nl}[it's]${nl}[\`echo x\`]${nl}[\$(echo y)]${nl}[a;b]${nl}[x\"y]" out

run_npar -k --shell 'echo {} | tr a-z A-Z; echo {#}' ::: ab
check_file_eq "--shell: pipes and ; are the shell's" "AB${nl}1" out

run_npar -k --shell 'printf "[%s]\n"' ::: 'a b' "it's"
check_file_eq "--shell without replacement string: the input appended, quoted" "[a b]${nl}[it's]" out

run_npar -k --shell 'printf "[%s]\n" {.} {/.}' ::: 'x y/p q.txt'
check_file_eq "--shell: {.} and {/.} quoted too" "[x y/p q]${nl}[p q]" out

# --- --dry-run ------------------------------------------------------------------------------

run_npar --dry-run touch 'ran.{}' ::: 1 2
check_status "--dry-run" 0
check_file_eq "--dry-run prints the commands" "touch ran.1${nl}touch ran.2" out
check_eq "--dry-run runs nothing" 0 "$(count_files ran.)"

seq 1 30 >in
run_npar --dry-run -j 4 echo <in
check_eq "--dry-run: in input order, one line per job" "$(seq 1 30 | sed 's/^/echo /')" "$(cat out)"

run_npar --dry-run echo {} {#} ::: a 'b c' 'a=b,c:d/e.f%g+h@i_j-k'
check_file_eq "--dry-run: words quoted only when needed" \
    "echo a 1${nl}echo 'b c' 2${nl}echo a=b,c:d/e.f%g+h@i_j-k 3" out

# What --dry-run prints, run by a shell, does what the job does.
set -- 'a b' '$HOME' '*' "it's" '`echo x`' 'a;b' 'x"y' 'tab	tab'
run_npar -k printf '[%s]\n' {} ::: "$@"
cp out real
run_npar --dry-run printf '[%s]\n' {} ::: "$@"
check_eq "--dry-run: one line per job" 8 "$(wc -l <out | tr -d ' ')"
: >replayed
while IFS= read -r line; do
    sh -c "$line" >>replayed
done <out
check_eq "--dry-run's lines, run by sh, print what the jobs printed" "$(cat real)" "$(cat replayed)"
check_line "--dry-run: the format word quoted" "printf '[%s]\\n' 'a b'" out

mkdir sh2
run_npar --dry-run --shell 'echo {} > {}.out' ::: 'b c' "it's"
check_status "--dry-run --shell" 0
check_eq "--dry-run --shell: one line per job" 2 "$(wc -l <out | tr -d ' ')"
check_eq "--dry-run --shell ran nothing" "" "$(ls sh2)"
(
    cd sh2 || exit 1
    while IFS= read -r line; do
        sh -c "$line"
    done <../out
)
check_file_eq "--dry-run --shell: the shell string as it would be run (1)" "b c" "sh2/b c.out"
check_file_eq "--dry-run --shell: the shell string as it would be run (2)" "it's" "sh2/it's.out"

# --- option parsing stops at the command ------------------------------------------------------

run_npar -k echo --dry-run ::: a
check_file_eq "options after COMMAND are the command's" "--dry-run a" out

run_npar -k -- echo ::: a
check_file_eq "-- ends npar's options" "a" out

run_npar -k sh -c 'printf "%s|" "$@"; echo' sh -k -j 3 ::: a
check_file_eq "the command's -k -j 3 are not npar's" "-k|-j|3|a|" out

# --- the job's stdin is /dev/null -------------------------------------------------------------

printf 'npar-stdin-data\n' >in
run_npar sh -c 'cat; echo end' sh ::: x <in
check_file_eq "the job's stdin is /dev/null, not npar's" "end" out

finish
