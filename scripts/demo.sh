#!/usr/bin/env bash
# make demo: a three-agent Roost cluster on loopback, from generated keys,
# certificates and configs in .demo/. It shows `nodectl status`, stops the
# leader to show a re-election, restarts it, and runs until Ctrl-C, then
# stops the agents it started (by pid) and nothing else.
#
# ROOST_DEMO_ONESHOT=1 exits after the show instead of waiting (for tests).
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${ROOST_DEMO_DIR:-$PWD/.demo}
BIN=${ROOST_BIN:-$PWD/bin}
BASE_PORT=${ROOST_DEMO_PORT:-17940}

elapsed() { local ms=$(( ($(date +%s%N) - $1) / 1000000 )); printf '%d.%01d' $((ms / 1000)) $((ms % 1000 / 100)); }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building roostd and nodectl"
make -s build BIN="$BIN"

rm -rf "$DEMO"
mkdir -p "$DEMO"
"$BIN/roostd" keygen > "$DEMO/gossip.key"
"$BIN/roostd" tls ca --dir "$DEMO/tls" >/dev/null

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # start N: runs agent N in the background, logging to .demo/nodeN.log
  "$BIN/roostd" run --config "$DEMO/node$1.yaml" >>"$DEMO/node$1.log" 2>&1 &
  pids[$1]=$!
}

step "writing configs for node1..node3 in $DEMO"
for i in 1 2 3; do
  "$BIN/roostd" tls cert --dir "$DEMO/tls" --name "node$i" --host 127.0.0.1 >/dev/null
  cat > "$DEMO/node$i.yaml" <<CFG
node:
  name: node$i
  proxy_host: 127.0.1.$i
  data_dir: $DEMO/node$i
gossip:
  bind: 127.0.0.1:$((BASE_PORT + i))
  join: [127.0.0.1:$((BASE_PORT + 1)), 127.0.0.1:$((BASE_PORT + 2)), 127.0.0.1:$((BASE_PORT + 3))]
  key_file: $DEMO/gossip.key
raft:
  bind: 127.0.0.1:$((BASE_PORT + 10 + i))
  tls:
    ca_file: $DEMO/tls/ca.pem
    cert_file: $DEMO/tls/node$i.pem
    key_file: $DEMO/tls/node$i-key.pem
api:
  socket: $DEMO/node$i.sock
CFG
  "$BIN/roostd" check-config --config "$DEMO/node$i.yaml"
done

step "starting three agents"
for i in 1 2 3; do start "$i"; done

nodectl() { "$BIN/nodectl" --socket "$DEMO/node$1.sock" "${@:2}"; }
leader() { nodectl "$1" status --json 2>/dev/null | sed -n 's/^  "leader": "\(.*\)",$/\1/p'; }
wait_leader() { # wait_leader ASK_NODE [NOT]: prints the leader node's name
  for _ in $(seq 1 150); do
    l=$(leader "$1")
    if [ -n "$l" ] && [ "$l" != "${2:-}" ]; then echo "$l"; return 0; fi
    sleep 0.2
  done
  echo "no leader after 30 s; see $DEMO/node*.log" >&2; return 1
}

t0=$(date +%s%N)
l=$(wait_leader 1)
printf 'cluster formed, leader %s, in %s s\n' "$l" "$(elapsed "$t0")"
step "nodectl status"
nodectl 1 status

n=${l#node}
ask=$(( n % 3 + 1 ))
step "stopping the leader ($l) with SIGKILL"
kill -9 "${pids[$n]}"; wait "${pids[$n]}" 2>/dev/null || true
t0=$(date +%s%N)
l2=$(wait_leader "$ask" "$l")
printf 'new leader %s after %s s\n' "$l2" "$(elapsed "$t0")"
nodectl "$ask" status

wait_gossip() { # wait_gossip ASK_NODE NODE STATE: until ASK_NODE's gossip shows NODE in STATE
  for _ in $(seq 1 100); do
    nodectl "$1" status --json 2>/dev/null | tr -d ' \n' | grep -q "\"name\":\"$2\",[^}]*\"gossip\":\"$3\"" && return 0
    sleep 0.2
  done
  return 1
}
t0=$(date +%s%N)
wait_gossip "$ask" "$l" dead
printf 'gossip declared %s dead after %s s (raft had re-elected already)\n' "$l" "$(elapsed "$t0")"
nodectl "$ask" status

step "restarting $l: it rejoins as a follower"
start "$n"
wait_gossip "$ask" "$l" alive
nodectl "$ask" status

if [ -n "${ROOST_DEMO_ONESHOT:-}" ]; then exit 0; fi
step "running; logs in $DEMO/node*.log. Try: bin/nodectl --socket $DEMO/node1.sock status. Ctrl-C stops the demo."
wait
