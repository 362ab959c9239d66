#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (make test: a
# few seconds; make bench: longer). A crasher is written under the
# package's testdata/fuzz/ and fails the run: commit it as a regression
# seed with the fix.
#
#   scripts/fuzz.sh 2s
#   FUZZ_PARALLEL=1 scripts/fuzz.sh 2s   (one fuzz worker; default GOMAXPROCS)
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-2s}
fail=0
while IFS=: read -r file name; do
	pkg=./$(dirname "$file")
	if ! out=$(go test -run '^$' -fuzz "^${name}\$" -fuzztime "$time" ${FUZZ_PARALLEL:+-parallel "$FUZZ_PARALLEL"} "$pkg" 2>&1); then
		echo "FAIL $pkg $name"
		echo "$out" | tail -20
		fail=1
		continue
	fi
	execs=$(grep -o 'execs: [0-9]*' <<<"$out" | tail -1 | cut -d' ' -f2)
	# The corpus entries that each reached code no other had: the
	# target's coverage, as the fuzzer counts it.
	corpus=$(grep -o 'total: [0-9]*' <<<"$out" | tail -1 | cut -d' ' -f2)
	echo "ok   $pkg $name (${execs:-?} executions in $time, ${corpus:-?} inputs of distinct coverage)"
done < <(git grep -o -E '^func Fuzz[A-Za-z0-9_]+' -- '*_test.go' | sed 's/:func /:/' | sort)
exit $fail
