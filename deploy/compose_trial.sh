#!/usr/bin/env bash
# make compose-trial: deploy/docker-compose.yml for real, with faults.
#
#   deploy/compose_trial.sh [--local BUILD_DIR]   (root; Docker engine, docker-compose)
#
# 1. Images: deploy/make_base_images.sh (debian:bookworm and -slim from
#    Debian's packages when the engine has none), then deploy/Dockerfile
#    built as layerfl:latest (both cached by the engine). With --local (what
#    `make test` runs), layerfl:local instead: the Dockerfile's runtime stage
#    around BUILD_DIR's binaries (deploy/make_local_image.sh), no compile in
#    Docker.
# 2. Secrets and shares in a temp dir: deploy/make_secrets.sh (a CA, one
#    certificate, token and identity per client), the `shares` service
#    (layerfl-partition in the image) for configs/compose_trial.yaml.
# 3. `docker-compose --compatibility up` of the coordinator and the 8 clients
#    (each with its own memory and CPU limit: the compose file's
#    deploy.resources), project name layerfl-trial, and during the run:
#      after round 10 committed: docker kill one client container (docker
#        does not restart a killed container; the trial starts it again a
#        round deadline + 5 s later, as a device coming back, and it rejoins);
#      after round 30: docker restart the coordinator (it resumes from its
#        volume);
#      after round 50: one client disconnected from the network for longer
#        than a round deadline, then reconnected.
# 4. Checks: each fault happened while rounds were left to run and had its
#    effect (rounds committed without the killed and without the cut-off
#    client, and later with both again; the coordinator resumed from a
#    checkpoint); the
#    coordinator exits 0 with every round committed once (its metrics.jsonl,
#    copied out of its volume); no container was OOM-killed; each client's
#    reported peak RSS is below its container's limit.
# Everything it made (containers, network, volume, temp dir) is removed on
# exit (LAYERFL_KEEP_TRIAL=1 keeps the temp dir). Exit 0 pass, 1 fail, 77
# skipped (printed reason).
set -uo pipefail

readonly SRC="$(cd "$(dirname "$0")/.." && pwd)"
LOCAL_BUILD=""
if [[ "${1:-}" == --local ]]; then
  LOCAL_BUILD="$(cd "${2:?--local needs BUILD_DIR}" && pwd)"
  IMAGE=layerfl:local
else
  IMAGE=layerfl:latest
fi
readonly PROJECT=layerfl-trial
# federated.rounds of the config the compose file runs.
ROUNDS="$(sed -n 's/^  rounds: *\([0-9]*\).*/\1/p' "$SRC/configs/compose_trial.yaml")"
readonly ROUNDS
readonly DEADLINE_S=20
readonly TIME_LIMIT_S=${LAYERFL_TRIAL_TIME_LIMIT_S:-900}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; FAILED=1; }
log() { printf '[%4ds] %s\n' "$SECONDS" "$*"; }

FAILED=0
TMP=""
compose() {
  LAYERFL_IMAGE="$IMAGE" LAYERFL_CONFIG=compose_trial.yaml LAYERFL_SHARES="$TMP/shares" LAYERFL_CERTS="$TMP/certs" \
    LAYERFL_SECRETS="$TMP/secrets" docker-compose --compatibility -p "$PROJECT" \
    -f "$SRC/deploy/docker-compose.yml" "$@"
}
cleanup() {
  local rc=$?
  if [[ -n "$TMP" ]]; then
    compose logs --no-color >"$TMP/compose.log" 2>&1
    compose down -v --remove-orphans >/dev/null 2>&1
    if [[ -z "${LAYERFL_KEEP_TRIAL:-}" ]]; then rm -rf "$TMP"; else echo "kept $TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || skip "not root (the base images are made with debootstrap)"
command -v docker-compose >/dev/null || skip "no docker-compose"
timeout 10 docker info >/dev/null 2>&1 || skip "no Docker engine answers"
[[ -d /usr/share/datasets/fashion-mnist ]] || skip "no Fashion-MNIST (dataset-fashion-mnist)"

log "images"
t0=$SECONDS
bash "$SRC/deploy/make_base_images.sh" || { echo "FAIL: base images"; exit 1; }
t1=$SECONDS
if [[ -n "$LOCAL_BUILD" ]]; then
  bash "$SRC/deploy/make_local_image.sh" "$LOCAL_BUILD" "$IMAGE" >/dev/null ||
    { echo "FAIL: make_local_image.sh"; exit 1; }
else
  docker build -q -f "$SRC/deploy/Dockerfile" -t "$IMAGE" "$SRC" >/dev/null ||
    { echo "FAIL: docker build"; exit 1; }
fi
t2=$SECONDS
size="$(docker image inspect -f '{{.Size}}' "$IMAGE")"
log "base images $((t1 - t0)) s, $IMAGE $((t2 - t1)) s, $((size / 1000000)) MB"

TMP="$(mktemp -d /tmp/layerfl-trial.XXXXXX)"
bash "$SRC/deploy/make_secrets.sh" "$TMP/secrets" "$TMP/certs" >/dev/null ||
  { echo "FAIL: make_secrets.sh"; exit 1; }
mkdir -p "$TMP/shares"
compose run --rm shares >/dev/null 2>&1 || { echo "FAIL: the shares service"; exit 1; }
compose down -v --remove-orphans >/dev/null 2>&1  # a fresh run state

log "up: coordinator + 8 clients"
compose up -d --no-build coordinator client0 client1 client2 client3 client4 client5 client6 \
  client7 >"$TMP/up.log" 2>&1 || { cat "$TMP/up.log"; echo "FAIL: up"; exit 1; }
cid() { compose ps -q "$1"; }
coordinator="$(cid coordinator)"
network="$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}' "$coordinator")"

# The committed round, from the coordinator's log ("round N committed").
committed() {
  docker logs "$coordinator" 2>&1 | sed -n 's/.*round \([0-9]*\) committed.*/\1/p' | tail -1
}
wait_round() {
  local want=$1 r
  while ((SECONDS < TIME_LIMIT_S)); do
    r="$(committed)"
    [[ -n "$r" && "$r" -ge "$want" ]] && return 0
    [[ "$(docker inspect -f '{{.State.Running}}' "$coordinator")" == true ]] ||
      [[ "$(docker inspect -f '{{.State.Restarting}}' "$coordinator")" == true ]] || return 1
    sleep 0.2
  done
  return 1
}

# A fault counts only while rounds are left to run.
midrun() {
  local r
  r="$(committed)"
  [[ -n "$r" && "$r" -lt $((ROUNDS - 2)) ]] || fail "$1 came too late: round ${r:-?} of $ROUNDS"
}
wait_round 10 || fail "round 10 was not committed"
log "round $(committed) committed: docker kill client3"
midrun "the kill"
victim="$(cid client3)"
docker kill "$victim" >/dev/null
# Down for longer than a round deadline: a round commits without it.
sleep $((DEADLINE_S + 5))
docker start "$victim" >/dev/null
log "round $(committed) committed: client3 started again"
wait_round 30 || fail "round 30 was not committed"
log "round $(committed) committed: docker restart coordinator"
midrun "the coordinator's restart"
docker restart -t 30 "$coordinator" >/dev/null
wait_round 50 || fail "round 50 was not committed after the restart"
cut="$(cid client5)"
log "round $(committed) committed: client5 off the network for $((DEADLINE_S + 10)) s"
midrun "the cut"
docker network disconnect "$network" "$cut"
sleep $((DEADLINE_S + 10))
docker network connect --alias client5 "$network" "$cut"
log "round $(committed) committed: client5 reconnected"
midrun "the reconnection"

while ((SECONDS < TIME_LIMIT_S)) &&
  [[ "$(docker inspect -f '{{.State.Running}}' "$coordinator")" == true ]]; do
  sleep 1
done
coord_rc="$(docker inspect -f '{{.State.ExitCode}}' "$coordinator")"
[[ "$(docker inspect -f '{{.State.Running}}' "$coordinator")" == false ]] ||
  fail "the run did not finish within ${TIME_LIMIT_S} s"
[[ "$coord_rc" == 0 ]] || fail "the coordinator exited $coord_rc"
docker cp "$coordinator:/var/lib/layerfl/runs/compose_trial/metrics.jsonl" "$TMP/metrics.jsonl" ||
  fail "no metrics.jsonl in the coordinator's volume"
resumed="$(docker logs "$coordinator" 2>&1 | grep -m1 'resumed from round')"
[[ -n "$resumed" ]] || fail "the restarted coordinator did not resume from a checkpoint"
log "coordinator: ${resumed#coordinator: }"
for s in coordinator client0 client1 client2 client3 client4 client5 client6 client7; do
  oom="$(docker inspect -f '{{.State.OOMKilled}}' "$(cid "$s")" 2>/dev/null)"
  [[ "$oom" == false ]] || fail "$s was OOM-killed ($oom)"
done
python3 - "$TMP/metrics.jsonl" "$ROUNDS" <<'EOF' || FAILED=1
import json, sys
rounds = [json.loads(l) for l in open(sys.argv[1])]
want = int(sys.argv[2])
ok = True
def check(cond, what):
    global ok
    print(("ok    " if cond else "FAIL  ") + what)
    ok = ok and cond
got = [r["round"] for r in rounds]
check(got == list(range(1, want + 1)),
      "rounds 1..%d committed once each%s" % (want, "" if got == list(range(1, want + 1))
                                               else ": %s" % got))
peak = {}
last = None
for r in rounds:
    ids = sorted(c["id"][-1] for c in r["clients"] if c["contributed"])
    if ids != last:  # one line per change of who contributed
        print("from round %3d: %d contributors, clients %s" % (r["round"], len(ids), "".join(ids)))
        last = ids
    for u in r.get("usage", []):
        if "process_peak_mb" in u and "memory_limit_mb" in u:
            p = peak.setdefault(u["id"], [0, u["memory_limit_mb"], 0])
            p[0] = max(p[0], u["process_peak_mb"])
    for c in r["clients"]:
        if c["id"] in peak:
            peak[c["id"]][2] = c["budget"]
check(len(peak) == 8, "all 8 clients reported their peak and limit (%d)" % len(peak))
for cid, what in (("client-003", "killed"), ("client-005", "cut-off")):
    has = [any(c["id"] == cid and c["contributed"] for c in r["clients"]) for r in rounds]
    gap = [i for i, h in enumerate(has) if not h]
    first_gap = gap[0] + 1 if gap else None
    check(bool(gap), "rounds committed without the %s %s (from round %s)" % (what, cid, first_gap))
    check(bool(gap) and any(has[gap[0]:]),
          "the %s %s contributed again after it (%d of the %d rounds from then on)"
          % (what, cid, sum(has[gap[0]:]) if gap else 0, len(has) - gap[0] if gap else 0))
for cid, (p, limit, budget) in sorted(peak.items()):
    check(p < limit, "%s: peak RSS %.0f MiB of its %.0f MiB limit (%.2f); declared budget %.0f MiB"
          % (cid, p, limit, p / limit, budget))
sys.exit(0 if ok else 1)
EOF
# The weight check: layerfl-sim runs the committed rounds again with their
# recorded participants and layers (the clients rounded from the config's
# privacy.dp.noise_seed) and must end with the coordinator's weights, bit for
# bit. It runs with the clients' BLAS settings: OpenBLAS picks its kernels
# from OPENBLAS_CORETYPE (set on this host, not in the image), and another
# kernel rounds the last bit of some products differently. It needs a host
# build of layerfl-sim (--local, or build/).
sim="${LOCAL_BUILD:-$SRC/build}/bin/layerfl-sim"
if [[ -x "$sim" ]]; then
  docker cp "$coordinator:/var/lib/layerfl/runs/compose_trial" "$TMP/run" ||
    fail "cannot copy the run directory out of the coordinator"
  sed -e "s#^  run_dir: .*#  run_dir: $TMP/replay#" -e 's#^  resume: true.*#  resume: false#' \
    "$SRC/configs/compose_trial.yaml" >"$TMP/replay.yaml"
  blas_env=(env)
  for v in $(compgen -e | grep -E '^(OPENBLAS_|OMP_|GOMP_|MKL_)' || true); do blas_env+=(-u "$v"); done
  while IFS= read -r kv; do
    [[ "$kv" =~ ^(OPENBLAS_|OMP_|GOMP_|MKL_) ]] && blas_env+=("$kv")
  done < <(docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$(cid client0)")
  t0=$SECONDS
  if "${blas_env[@]}" "$sim" --config "$TMP/replay.yaml" \
    --replay "$TMP/run/metrics.jsonl" --expect_run_dir "$TMP/run" >"$TMP/replay.log" 2>&1; then
    echo "ok    weights: $(tail -1 "$TMP/replay.log") (replayed in $((SECONDS - t0)) s)"
  else
    first="$(python3 -c '
import json, sys
def rounds(path):
    return {r["round"]: (r.get("loss"), r.get("accuracy")) for r in map(json.loads, open(path))}
a, b = rounds(sys.argv[1]), rounds(sys.argv[2])
print(next((k for k in sorted(a) if a[k] != b.get(k)), "none"))
' "$TMP/run/metrics.jsonl" "$TMP/replay/metrics.jsonl" 2>/dev/null)"
    echo "FAIL  weights: $(tail -1 "$TMP/replay.log" | sed 's/^layerfl-sim: //') (first round whose evaluation differs: ${first:-?})"
    keep=/tmp/layerfl-trial-weights
    rm -rf "$keep" && mkdir -p "$keep" && cp -r "$TMP/run" "$TMP/replay.yaml" "$TMP/replay.log" "$keep"/ &&
      { [[ ! -d "$TMP/replay" ]] || cp -r "$TMP/replay" "$keep"/; } &&
      echo "      the run and its replay are kept in $keep"
    FAILED=1
  fi
else
  echo "SKIP  weights: no host build of layerfl-sim at $sim"
fi
if [[ $FAILED -ne 0 ]]; then
  for s in coordinator client3 client5; do
    compose logs --no-color --tail 30 "$s" 2>&1 | tail -30
  done
  exit 1
fi
log "pass"
