#!/usr/bin/env bash
# A client daemon in a container with a small memory limit declares the
# budget its cgroup gives it and stays within the limit.
#
#   tests/container_budget_test.sh BUILD_DIR       (root; a Docker engine)
#
# The image layerfl:local is deploy/Dockerfile's runtime stage around
# BUILD_DIR's binaries (deploy/make_local_image.sh; the base image from
# deploy/make_base_images.sh when the engine has none). Both are cached by
# the engine, so only the first run on a machine pays for them.
#
# layerfl-coordinator runs on the host on 127.0.0.1 (a copy of
# configs/distributed_test.yaml: 2 rounds, 1 client, budget.unit memory,
# budgets declared by the clients); the client runs in a container on the
# host's network with --memory 512m (no swap) and --cpus 1.5, its share
# mounted read-only, no --budget_mb. Checks:
#   - the client declared budget_mb = 3/4 of what 512 MiB leaves beside its
#     resident memory (its log line), and the coordinator used that budget;
#   - the coordinator's metrics.jsonl reports the client's memory limit
#     (512 MiB), CPU quota (1.5) and process peak, below the limit;
#   - the container exited 0 and was not OOM-killed.
# Exit codes: 0 pass, 1 fail, 77 skipped (printed reason).
set -uo pipefail

readonly BUILD_DIR="$(cd "${1:?usage: container_budget_test.sh BUILD_DIR}" && pwd)"
readonly SRC="$(cd "$(dirname "$0")/.." && pwd)"
readonly BIN="$BUILD_DIR/bin"
readonly IMAGE=layerfl:local
readonly LIMIT_MB=512
readonly CPUS=1.5
readonly NAME="layerfl-budget-test-$$"

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; FAILED=1; }
log() { printf '[%3ds] %s\n' "$SECONDS" "$*"; }

FAILED=0
TMP=""
COORD=""
cleanup() {
  local rc=$?
  docker rm -f "$NAME" >/dev/null 2>&1
  [[ -n "$COORD" ]] && kill -KILL "$COORD" 2>/dev/null
  wait 2>/dev/null
  if [[ -n "$TMP" && -z "${LAYERFL_KEEP_TRIAL:-}" ]]; then rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || skip "not root (the base image is made with debootstrap)"
command -v docker >/dev/null || skip "no docker client"
timeout 10 docker info >/dev/null 2>&1 || skip "no Docker engine answers"
[[ -x "$BIN/layerfl-client" && -x "$BIN/layerfl-coordinator" ]] || skip "no daemons in $BIN"
[[ -d /usr/share/datasets/fashion-mnist ]] || skip "no Fashion-MNIST (dataset-fashion-mnist)"

TMP="$(mktemp -d /tmp/layerfl-budget.XXXXXX)"

# --- the image ---------------------------------------------------------------
log "building $IMAGE"
bash "$SRC/deploy/make_local_image.sh" "$BUILD_DIR" "$IMAGE" >"$TMP/build.log" 2>&1 ||
  { cat "$TMP/build.log"; echo "FAIL: the image"; exit 1; }

# --- the run ---------------------------------------------------------------
config="$TMP/run.yaml"
sed -e "s|run_dir: .*|run_dir: $TMP/run|" \
    -e 's|rounds: 3|rounds: 2|' -e 's|clients_per_round: 4|clients_per_round: 1|' \
    -e 's|min_clients: 2|min_clients: 1|' -e 's|num_clients: 4|num_clients: 2|' \
    "$SRC/configs/distributed_test.yaml" >"$config"
cat >>"$config" <<EOF
profile:
  cache_dir: ""
  steps: 1
  reps: 1
transport:
  wait_for_clients: 1
EOF
# budget: declared in memory (the copied budget section is replaced).
python3 - "$config" <<'EOF'
import re, sys
p = sys.argv[1]
s = open(p).read()
s = re.sub(r"budget:\n(  .*\n)+", "budget:\n  unit: memory\n  distribution: declared\n", s)
open(p, "w").write(s)
EOF
"$BIN/layerfl-partition" --config="$config" --out="$TMP/shares" >/dev/null ||
  { echo "FAIL: layerfl-partition"; exit 1; }
"$BIN/layerfl-coordinator" --config="$config" --listen=127.0.0.1:0 --port_file="$TMP/port" \
  --metrics_listen= >"$TMP/coordinator.log" 2>&1 &
COORD=$!
for _ in $(seq 1 300); do [[ -s "$TMP/port" ]] && break; sleep 0.1; done
[[ -s "$TMP/port" ]] || { cat "$TMP/coordinator.log"; echo "FAIL: no port"; exit 1; }
port="$(awk '{print $1}' "$TMP/port")"
log "coordinator on 127.0.0.1:$port; client in a container, --memory ${LIMIT_MB}m --cpus $CPUS"
docker run --name "$NAME" --network host --memory "${LIMIT_MB}m" --memory-swap "${LIMIT_MB}m" \
  --cpus "$CPUS" -v "$TMP/shares/client-000:/data:ro" "$IMAGE" \
  layerfl-client --coordinator="127.0.0.1:$port" --id=client-000 --data_dir=/data \
  --threads=1 --poll_ms=200 >"$TMP/client.log" 2>&1
client_rc=$?
for _ in $(seq 1 300); do kill -0 "$COORD" 2>/dev/null || break; sleep 0.1; done
wait "$COORD"; coord_rc=$?; COORD=""
oom="$(docker inspect -f '{{.State.OOMKilled}}' "$NAME" 2>/dev/null)"

# --- checks ----------------------------------------------------------------
[[ $client_rc -eq 0 ]] || fail "the client container exited $client_rc"
[[ $coord_rc -eq 0 ]] || fail "the coordinator exited $coord_rc"
[[ "$oom" == "false" ]] || fail "the client container was OOM-killed ($oom)"
declared="$(sed -n 's/.*cgroup memory limit \([0-9]*\) MiB.* declares budget_mb \([0-9.]*\).*/\1 \2/p' \
  "$TMP/client.log" | head -1)"
[[ -n "$declared" ]] || fail "the client did not declare a budget from its cgroup"
python3 - "$TMP/run/metrics.jsonl" "$LIMIT_MB" "$CPUS" $declared <<'EOF' || FAILED=1
import json, sys
path, limit_mb, cpus, seen_limit, budget = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), \
    float(sys.argv[4]), float(sys.argv[5])
ok = True
def check(cond, what):
    global ok
    print(("ok    " if cond else "FAIL  ") + what)
    ok = ok and cond
check(seen_limit == limit_mb, "the client read its limit: %g MiB" % seen_limit)
check(0 < budget < 0.75 * limit_mb, "declared budget_mb %g < 3/4 of the limit" % budget)
rounds = [json.loads(l) for l in open(path)]
check(len(rounds) == 2, "2 rounds committed (%d)" % len(rounds))
for r in rounds:
    c = [c for c in r["clients"] if c["id"] == "client-000"]
    u = [u for u in r.get("usage", []) if u["id"] == "client-000"]
    check(bool(c) and abs(c[0]["budget"] - budget) < 1e-9,
          "round %d: the coordinator's budget for client-000 is the declared %g (%s)"
          % (r["round"], budget, c[0]["budget"] if c else None))
    if not u:
        check(False, "round %d: usage reported" % r["round"])
        continue
    u = u[0]
    check(u.get("memory_limit_mb") == limit_mb and u.get("cpus") == cpus,
          "round %d: limit %s MiB, cpus %s reported" % (r["round"], u.get("memory_limit_mb"),
                                                       u.get("cpus")))
    peak = u.get("process_peak_mb", -1)
    check(0 < peak < limit_mb, "round %d: process peak %.0f MiB < limit %g MiB (%.2f)"
          % (r["round"], peak, limit_mb, u.get("process_peak_over_limit", -1)))
sys.exit(0 if ok else 1)
EOF
if [[ $FAILED -ne 0 ]]; then
  echo "--- client log"; tail -20 "$TMP/client.log"
  echo "--- coordinator log"; tail -20 "$TMP/coordinator.log"
  exit 1
fi
log "pass"
