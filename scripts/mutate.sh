#!/usr/bin/env bash
# Mutation check of the failover decision (failover/decide.go), the
# executor's rules (failover/executor.go) and the operators' requests
# (failover/request.go, and how the leader applies them in cluster.go):
# each line below breaks one rule;
# `go test ./failover/` must fail for every one.
# The tree is never touched: each mutant is handed to the compiler with
# `go test -overlay`. Prints KILLED or SURVIVED per mutation and exits 1
# if any survived.
#
#   scripts/mutate.sh            # every mutation
#   scripts/mutate.sh -v         # and the failing tests' names
set -euo pipefail
cd "$(dirname "$0")/.."
verbose=0
[[ ${1:-} == -v ]] && verbose=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# rule | the exact text | its mutant [| its file, decide.go if none]
mutations=(
	'one observer never suffices|observers >= 2 \&\& len(n.UnreachableBy) >= quorum|observers >= 1 \&\& len(n.UnreachableBy) >= quorum'
	'a quorum of peers, not one|quorum := observers/2 + 1|quorum := 1'
	'a quorum, not a half|quorum := observers/2 + 1|quorum := observers / 2'
	'only alive peers observe|o.Name != n.Name \&\& o.Gossip == "alive"|o.Name != n.Name'
	'a left node is no accuser of itself|n.Health == "critical" \&\& n.Gossip != "left"|n.Health == "critical"'
	'refusals by a quorum, not one|len(n.RefusedBy) >= quorum|len(n.RefusedBy) >= 1'
	'dead nodes report no filesystem trouble|n.FSTrouble \&\& n.Gossip == "alive"|n.FSTrouble'
	'the filesystem freeze needs a majority|fsTrouble\*2 > mail|fsTrouble*2 >= mail'
	'max_failed_fraction is a strict bound|float64(failed) > p.MaxFailedFraction|float64(failed) >= p.MaxFailedFraction'
	'a frozen cluster moves nobody|if s.Frozen != nil {\n\t\treturn nil|if false {\n\t\treturn nil'
	'settle waits|now.Sub(c.n.FailingSince) < p.Settle|now.Sub(c.n.FailingSince) < 0'
	'the lease wait|now.Before(c.n.LeaseExpiry)|false'
	'an answer since failing ends the wait|!c.n.LastContact.After(c.n.FailingSince) \&\&|true \&\&'
	'disputed evidence holds a while|now.Sub(c.n.FailingSince) < disputed|now.Sub(c.n.FailingSince) < 0'
	'only a passing node disputes|c.n.Health == "passing" \&\& c.n.LastContact|c.n.LastContact'
	'sure evidence needs no wait|if !c.sure \&\& !c.n.LastContact|if !c.n.LastContact'
	'sure evidence is never disputed|if !c.sure \&\& c.n.Health|if c.n.Health'
	'an operator plan owns the node|if r.State != Recovering {\n\t\t\t\tcontinue|if false {\n\t\t\t\tcontinue'
	'the block period holds users|now.Sub(r.LastFailover) < p.BlockPeriod|now.Sub(r.LastFailover) < 0'
	'failback waits the hold-down|now.Sub(n.HealthySince) < p.FailbackHoldDown|now.Sub(n.HealthySince) < 0'
	'failback waits for the failover plan|if _, ok := s.Running(n.Name); ok {\n\t\t\tcontinue // its failover|if false {\n\t\t\tcontinue // its failover'
	'manual failback is never automatic|if p.Failback != "auto" {|if p.Failback == "never" {'
	'a failed node counts towards the freeze|case r.State == Failed \&\& n.HealthySince.IsZero():|case false:'
	'a failed node counts only until healthy|case r.State == Failed \&\& n.HealthySince.IsZero():|case r.State == Failed:'
	'a pause holds every automatic decision|if s.Paused != nil {\n\t\tif !s.Paused.Until|if false \&\& s.Paused != nil {\n\t\tif !s.Paused.Until'
	'a pause runs out|!now.Before(s.Paused.Until)|false'
	'a drain ends only once its time has come|now.Before(r.Until) {|false {'
	'a drain that ends on a failing node leaves it failed|if bad, fail := failing(n, view); bad {|if _, fail := failing(n, view); false {'
	'no plan places users on a cordoned node| r.Cordoned {\n\t\t\tcontinue| false {\n\t\t\tcontinue|executor.go'
	'a node that only warns takes users|n.Health == "warning"|n.Health == "none"|executor.go'
	'a rebalance lands users only on a node under its share|room[t.Node] == 0 {|room[t.Node] < 0 {|rebalance.go'
	'a rebalance moves no more than a node is over|over[src.Node]--\n\t\t\t\tif over[src.Node] == 0|over[src.Node]--\n\t\t\t\tif false|rebalance.go'
	'shares follow the weights|exact := float64(total) * t.Weight / sum|exact := float64(total) / float64(len(targets))|rebalance.go'
	'a rebalance stops at --max|size = min(size, p.Max-p.Moved)|size = size + 0*p.Max|executor.go'
	'max_users bounds a target|room[t.Node] = max(t.Max-counts[t.Host], 0)|room[t.Node] = math.MaxInt|executor.go'
	'a full target takes no more of the batch|if room[t.Node]--; room[t.Node] == 0 {|if room[t.Node]--; false {|executor.go'
	'a plan with no room stops, saying so|case errors.As(err, \&full):|case false \&\& errors.As(err, \&full):|executor.go'
	'a rebalance fills a bounded node only to its bound|if t.Max > 0 \&\& s[t.Node] > t.Max {|if false {|rebalance.go'
	'a move lands only on an active node|if r := l.state().Node(p.To); r.State != Active {|if r := l.state().Node(p.To); false {|executor.go'
	'a drain looks last once no move is in flight|e.moving.Lock()\n\t\tmoves, err = e.nextBatch(ctx, p, view, l.state(), hosts)|e.moving.Lock()|executor.go'
	'a move holds off the last look until written|p.Moved == 0 {\n\t\te.moving.RLock()\n\t\tdefer e.moving.RUnlock()\n|p.Moved == 0 {\n|executor.go'
	'a dry-run failover is marked so|State: Failed, Reason: reason, At: now, DryRun: nodeDry}|State: Failed, Reason: reason, At: now}'
	'a real failback ended by a dry-run failover leaves its node failed for real|nodeDry, reason := dry \&\& (r.State != Recovering|nodeDry, reason := dry \&\& (true'
	'a dry-run plan moves nobody|ok \&\& p.Status == PlanRunning \&\& p.DryRun {|ok \&\& false {|executor.go'
	'a dry run starts no block period|p.Kind.ownsNode() \&\& !p.DryRun {|p.Kind.ownsNode() {|state.go'
	'a plan that acts makes its node real|r.DryRun = false\n|\n|state.go'
	'a dry-run failback after a real failover keeps the node failed|if dry \&\& !r.DryRun {|if false {'
	'a dry-run failback says so once|!lp.Finished.Before(r.Since) {\n\t\t\t\tcontinue|false {\n\t\t\t\tcontinue'
	'enforcing decides a dry-run failure again|r.DryRun \&\& r.State == Failed \&\& !p.DryRun(ActionFailover) \&\& n.Mail|false \&\& n.Mail'
	'only a still failing dry-run failure is decided again|\&\& n.Mail \&\& failingNowOf(n, view) {|\&\& n.Mail {'
	'a request planned on a changed state is planned again|if c.fsm.appliedCount() != seen {|if false {|cluster.go'
	'a request is planned outside the decision lock|st, seen := c.fsm.readAt()\n\t\tcmds := plan(st)|c.decideMu.Lock()\n\t\tst, seen := c.fsm.readAt()\n\t\tcmds := plan(st)\n\t\tc.decideMu.Unlock()|cluster.go'
	'an alert leaves an operator drain alone|if held \&\& len(rec.Holds) == 0 {|if false {|request.go'
	'a resolved alert undoes only what it holds|case !slices.Contains(rec.Holds, q.Alert):|case false:|request.go'
	'a move refuses a cordoned node|if rec.Cordoned {\n\t\treturn reply, nil, opError|if false {\n\t\treturn reply, nil, opError|request.go'
	'a failed-over node is not drained|if rec.State == Failed \&\& !rec.DryRun {|if false {|request.go'
	'an undrain needs a healthy node|if err := unhealthy(q.node, q.view); err != nil {|if err := unhealthy(q.node, q.view); false \&\& err != nil {|request.go'
	'a dry-run drain changes nothing|case q.DryRun:\n\t\treply.Targets = counts|case false:\n\t\treply.Targets = counts|request.go'
)

survived=0
for m in "${mutations[@]}"; do
	IFS='|' read -r rule from to file <<<"$m"
	src=failover/${file:-decide.go}
	from=$(printf '%b' "$from" | sed 's/\\\*/*/g; s/\\&/\&/g')
	to=$(printf '%b' "$to" | sed 's/\\&/\&/g')
	mutant="$tmp/$(basename "$src")"
	if ! FROM="$from" TO="$to" python3 -c '
import os, sys
s = open(sys.argv[1]).read()
f, t = os.environ["FROM"], os.environ["TO"]
if s.count(f) != 1:
    sys.exit("mutation text found %d times: %r" % (s.count(f), f))
open(sys.argv[2], "w").write(s.replace(f, t))
' "$src" "$mutant"; then
		echo "BROKEN   $rule (the script no longer matches $src)"
		survived=1
		continue
	fi
	printf '{"Replace":{"%s":"%s"}}\n' "$PWD/$src" "$mutant" >"$tmp/overlay.json"
	if out=$(go test -count=1 -overlay "$tmp/overlay.json" ./failover/ 2>&1); then
		echo "SURVIVED $rule"
		survived=1
	else
		echo "KILLED   $rule"
		((verbose)) && grep -E '^\s*--- FAIL' <<<"$out" | sed 's/^/         /' || true
	fi
done
exit $survived
