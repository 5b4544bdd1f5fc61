#!/usr/bin/env bash
# Multi-host trial on one machine: network namespaces stand in for hosts.
#
#   deploy/netns_trial.sh BUILD_DIR        (root; BUILD_DIR/bin holds the daemons)
#
# Creates its own namespaces: a switch (a bridge) and one "host" per process,
# each host joined to the switch by a veth pair, on the private subnet
# 10.77.0.0/24 that exists only inside these namespaces (the root namespace is
# not touched). Runs layerfl-coordinator on 10.77.0.1 and 4 layerfl-client
# daemons on 10.77.0.10-13 with a shared token file, over a copy of
# configs/distributed_test.yaml (no pretraining, 10 rounds, min_clients 2).
# Once a round is committed it SIGKILLs client 3 (the coordinator drops it
# after transport.client_timeout_s 4), then checks that the run still finishes: the
# coordinator exits 0, the final round is committed in its run_dir's
# metrics.jsonl, the killed client contributed to no round that started after
# the kill, the other clients exit 0, and every client's traffic went over its
# veth link.
# Everything it created (processes, namespaces with their links, the temp dir)
# is removed on every exit path. Exit codes: 0 pass, 1 fail, 77 skipped
# (printed reason: not root, no `ip netns`, no veth/bridge, no dataset).
set -uo pipefail

readonly BUILD_DIR="$(cd "${1:?usage: netns_trial.sh BUILD_DIR}" && pwd)"
readonly SRC="$(cd "$(dirname "$0")/.." && pwd)"
readonly BIN="$BUILD_DIR/bin"
readonly CLIENTS=4
readonly VICTIM=3
readonly ROUNDS=10
readonly TIME_LIMIT_S=75   # the whole trial; ctest's TIMEOUT is 90
readonly TAG="lflnt$$"     # every namespace this run creates starts with it
readonly SUBNET=10.77.0
readonly PORT=50051

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; FAILED=1; }
log() { printf '[%3ds] %s\n' "$SECONDS" "$*"; }

FAILED=0
NAMESPACES=()
TMP=""

# Whether our background job `pid` is still running (bash's own job table, so
# a pid reused by another process never matches).
running() { jobs -pr | grep -qx "$1"; }

cleanup() {
  local rc=$?
  local pid ns
  for pid in $(jobs -pr); do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for ns in "${NAMESPACES[@]}"; do
    # Anything still inside one of our namespaces was started by this script.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  if ip netns list 2>/dev/null | grep -q "^$TAG-"; then
    echo "netns_trial: WARNING: namespaces left behind:"; ip netns list | grep "^$TAG-"
  fi
  if [[ -n "$TMP" && -z "${LAYERFL_KEEP_TRIAL:-}" ]]; then rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A namespace of ours, registered for cleanup before anything goes into it.
add_ns() {
  ip netns add "$1" 2>/dev/null || return 1
  NAMESPACES+=("$1")
  ip -n "$1" link set lo up
}

# Host namespace $1 with address $2, joined to the switch.
add_host() {
  local ns="$1" addr="$2" port="p${#NAMESPACES[@]}"
  add_ns "$ns" || return 1
  ip -n "$TAG-sw" link add "$port" type veth peer name eth0 netns "$ns" || return 1
  ip -n "$TAG-sw" link set "$port" master br0 up || return 1
  ip -n "$ns" addr add "$addr/24" dev eth0 || return 1
  ip -n "$ns" link set eth0 up
}

[[ $(id -u) -eq 0 ]] || skip "needs root to create network namespaces (uid $(id -u))"
command -v ip > /dev/null || skip "no 'ip' command (Debian package iproute2)"
ip netns list > /dev/null 2>&1 || skip "'ip netns' is not supported here"
[[ -d /usr/share/datasets/fashion-mnist ]] ||
  skip "Fashion-MNIST is not installed (scripts/setup.sh installs dataset-fashion-mnist)"
for b in layerfl-coordinator layerfl-client; do
  [[ -x "$BIN/$b" ]] || { echo "FAIL: $BIN/$b is not built"; exit 1; }
done

# Namespaces (with the daemons still in them) and temp dirs left by an earlier
# trial that was killed before its trap ran: their creator, the pid in the
# name, is gone (or a zombie).
alive() { [[ -r /proc/$1/stat ]] && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat"; }
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^lflnt[0-9]+-'); do
  owner="${ns#lflnt}"; owner="${owner%%-*}"
  if ! alive "$owner"; then
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null && log "removed stale namespace $ns"
  fi
done
for dir in /tmp/netns_trial.*; do
  [[ "$dir" =~ ^/tmp/netns_trial\.([0-9]+)\.[A-Za-z0-9]{6}$ && -d "$dir" ]] || continue
  alive "${BASH_REMATCH[1]}" || { rm -rf "$dir" && log "removed stale $dir"; }
done

add_ns "$TAG-sw" || skip "cannot create a network namespace ('ip netns add' failed)"
ip -n "$TAG-sw" link add br0 type bridge 2>/dev/null ||
  skip "cannot create a bridge inside a namespace (no bridge support)"
ip -n "$TAG-sw" link set br0 up
add_host "$TAG-c" "$SUBNET.1" 2>/dev/null || skip "cannot create veth pairs between namespaces"
for ((i = 0; i < CLIENTS; ++i)); do
  add_host "$TAG-$i" "$SUBNET.$((10 + i))" || { echo "FAIL: cannot set up host $i"; exit 1; }
done
log "namespaces: ${NAMESPACES[*]} (coordinator $SUBNET.1, clients $SUBNET.10-$((9 + CLIENTS)))"

TMP="$(mktemp -d "/tmp/netns_trial.$$.XXXXXX")"
sed -e "s|^\( *run_dir:\).*|\1 $TMP/run|" \
    -e "s|^\( *rounds:\).*|\1 $ROUNDS|" \
    -e "s|^\( *round_deadline_s:\).*|\1 20|" \
    "$SRC/configs/distributed_test.yaml" > "$TMP/config.yaml"
grep -q "run_dir: $TMP/run" "$TMP/config.yaml" || { echo "FAIL: config rewrite"; exit 1; }
# Short timeouts so that the killed client leaves the run within seconds.
cat >> "$TMP/config.yaml" <<EOF
transport:
  wait_for_clients: $CLIENTS
  wait_for_clients_s: 30
  client_timeout_s: 4
  heartbeat_s: 1
  linger_s: 3
EOF
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$TMP/token"

# Each process: `ip netns exec` execs env, env execs the daemon: one pid.
ip netns exec "$TAG-c" env OMP_WAIT_POLICY=PASSIVE "$BIN/layerfl-coordinator" \
  --config="$TMP/config.yaml" --listen="$SUBNET.1:$PORT" --token_file="$TMP/token" \
  --tick_ms=50 > "$TMP/coordinator.log" 2>&1 &
COORD=$!
CLIENT_PIDS=()
for ((i = 0; i < CLIENTS; ++i)); do
  ip netns exec "$TAG-$i" env OMP_WAIT_POLICY=PASSIVE "$BIN/layerfl-client" \
    --config="$TMP/config.yaml" --partition=$i --coordinator="$SUBNET.1:$PORT" \
    --token_file="$TMP/token" --poll_ms=1000 --give_up_s=40 --backoff_max_ms=1000 \
    > "$TMP/client$i.log" 2>&1 &
  CLIENT_PIDS+=("$!")
done
log "started the coordinator (pid $COORD) and $CLIENTS clients (pids ${CLIENT_PIDS[*]})"

metrics_lines() { [[ -f "$TMP/run/metrics.jsonl" ]] && wc -l < "$TMP/run/metrics.jsonl" || echo 0; }

# Wait for round 1 to be committed (bounded in count and time).
for ((n = 0; n < 10 * TIME_LIMIT_S; ++n)); do
  (($(metrics_lines) >= 1)) && break
  running "$COORD" || break
  ((SECONDS < TIME_LIMIT_S)) || break
  sleep 0.1
done
COMMITTED_BEFORE_KILL=$(metrics_lines)
if ((COMMITTED_BEFORE_KILL < 1)); then
  fail "round 1 was not committed within ${SECONDS}s"
else
  kill -KILL "${CLIENT_PIDS[$VICTIM]}"
  wait "${CLIENT_PIDS[$VICTIM]}" 2>/dev/null
  log "SIGKILLed client $VICTIM (client-00$VICTIM) with $COMMITTED_BEFORE_KILL of $ROUNDS rounds committed"
  ((COMMITTED_BEFORE_KILL <= ROUNDS - 2)) ||
    fail "the run was nearly over before the kill ($COMMITTED_BEFORE_KILL of $ROUNDS rounds)"
fi

# Wait for the coordinator to finish (bounded).
for ((n = 0; n < 10 * TIME_LIMIT_S; ++n)); do
  running "$COORD" || break
  ((SECONDS < TIME_LIMIT_S)) || break
  sleep 0.1
done
if running "$COORD"; then
  fail "the coordinator was still running after ${SECONDS}s"
  COORD_RC=-1
else
  wait "$COORD"
  COORD_RC=$?
  log "coordinator exited with $COORD_RC"
  grep -m1 "client-00$VICTIM timed out" "$TMP/coordinator.log" | sed 's/^/    coordinator: /'
  ((COORD_RC == 0)) || fail "coordinator exit code $COORD_RC (want 0)"
fi

# The surviving clients leave with 0 once told the run is over (bounded).
for ((i = 0; i < CLIENTS; ++i)); do
  ((i == VICTIM)) && continue
  for ((n = 0; n < 150; ++n)); do
    running "${CLIENT_PIDS[$i]}" || break
    ((SECONDS < TIME_LIMIT_S + 5)) || break
    sleep 0.1
  done
  if running "${CLIENT_PIDS[$i]}"; then
    fail "client $i still running"
  else
    wait "${CLIENT_PIDS[$i]}"
    rc=$?
    ((rc == 0)) || fail "client $i exit code $rc (want 0)"
  fi
done

METRICS="$TMP/run/metrics.jsonl"
if [[ -f "$METRICS" ]]; then
  last_round=$(tail -n 1 "$METRICS" | grep -o '^{"round":[0-9]*' | grep -o '[0-9]*$')
  [[ "$last_round" == "$ROUNDS" ]] ||
    fail "last committed round in metrics.jsonl is '${last_round}' (want $ROUNDS)"
  # Rounds that started after the kill (the one in flight at the kill may
  # hold an update uploaded just before it) must not count the dead client.
  while IFS= read -r line; do
    r=$(grep -o '^{"round":[0-9]*' <<< "$line" | grep -o '[0-9]*$')
    ((r > COMMITTED_BEFORE_KILL + 1)) || continue
    if grep -q "\"id\":\"client-00$VICTIM\",[^}]*\"contributed\":true" <<< "$line"; then
      fail "round $r counts an update from the killed client-00$VICTIM"
    fi
    contributed=$(grep -o '"contributed":true' <<< "$line" | wc -l)
    log "round $r committed with $contributed contributing clients"
  done < "$METRICS"
else
  fail "no $METRICS"
fi

# The clients' traffic crossed the veth links (bytes received by each host).
for ((i = 0; i < CLIENTS; ++i)); do
  rx=$(ip -n "$TAG-$i" -s -j link show eth0 2>/dev/null |
       grep -o '"rx":{"bytes":[0-9]*' | grep -o '[0-9]*$')
  log "client $i ($SUBNET.$((10 + i))) received ${rx:-?} bytes over its veth"
  ((${rx:-0} > 10000)) || fail "client $i received only ${rx:-0} bytes over its veth"
done

if ((FAILED)); then
  for f in "$TMP"/coordinator.log "$TMP"/client*.log; do
    echo "---- $(basename "$f") (last 25 lines)"; tail -n 25 "$f"
  done
  echo "netns_trial: FAILED after ${SECONDS}s"
  exit 1
fi
log "netns_trial: passed (coordinator exit 0, round $ROUNDS committed after client $VICTIM was killed)"
exit 0
