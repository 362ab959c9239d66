#!/usr/bin/env bash
# The tests of make test, in two lanes at once, so that it stays under 20
# minutes on 2 cores:
#   - every package's own tests with the race detector, then every fuzz
#     target for FUZZTIME (scripts/fuzz.sh), one package and one fuzz
#     worker at a time: this lane keeps to about one core, so that the
#     mail clusters beside it are not starved (a proxied login past
#     Dovecot's login_proxy_timeout fails);
#   - beside them, the cross-package tests (tests/: the mail cluster, real
#     Dovecot, HAProxy, databases, packages), without the race detector:
#     it would add over five minutes there, and the code they run is raced
#     in its own package's tests. The roostd they start is a plain build.
#     The end-to-end ones (TestE2E*: three or four Dovecot nodes, a
#     database, HAProxy and agents, the heaviest load) and those with
#     agents beside real Dovecot come last, once the first lane has ended:
#     beside the race detector a starved Dovecot 2.4 answered a proxied
#     login after login_proxy_timeout, and an agent's own checks failed.
# The first lane's output follows the second's; either failing fails.
#
#   scripts/check.sh 3s
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-3s}
go=${GO:-go}
lane=$(mktemp)
trap 'rm -f "$lane"' EXIT
pkgs=$($go list ./... | grep -v '/tests$') || exit 1
(
	$go test -race -p 1 -count=1 -timeout 20m $pkgs && FUZZ_PARALLEL=1 scripts/fuzz.sh "$fuzztime"
) >"$lane" 2>&1 &
first=$!
# Last, alone: the end-to-end mail clusters, and the tests that run
# agents beside real Dovecot nodes (tests/failover_dovecot_test.go), whose
# own checks starve beside the race detector.
late='^(TestE2E.*|TestFailoverKicksSessionsOnRealDovecot|TestSweepEndsSessionsOfUsersRoutedElsewhere|TestNodectlDrainWaitsUntilTheNodeIsEmpty|TestAgentEndsADeadMastersOrphans|TestTwoMailNodesAndAWitnessSurviveTheLossOfEither|TestFailoverDropsProxiedSessionsTowardsAHungNode)$'
$go test -count=1 -timeout 20m -skip "$late" ./tests/
rc=$?
wait "$first"
rc1=$?
$go test -count=1 -timeout 20m -run "$late" ./tests/ || rc=1
cat "$lane"
if [ $rc -ne 0 ] || [ $rc1 -ne 0 ]; then
	echo "check: tests/ exited $rc; the packages' tests and fuzzing exited $rc1"
	exit 1
fi
