#!/usr/bin/env bash
# An asynchronous (FedBuff) coordinator over gRPC at scale, with
# layerfl-loadgen on loopback (the load generator shares the two cores, so
# the rates are lower bounds): N connected clients, C places, a commit every
# B updates, K commits of the small test model. Reports updates folded a
# second while buffering, the coordinator's CPU per update after the joins
# (every task and update journaled with fdatasync, polls, selection,
# folding), and each commit's evaluation and checkpoint.
# Writes bench/results/scale_async.txt.
#   bash bench/scale/async.sh [build]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
out=bench/results/scale_async.txt
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

run() {  # N PLACES BUFFER COMMITS
  local n=$1 c=$2 b=$3 k=$4
  rm -rf "$tmp/run" "$tmp/port"
  sed -e "s|run_dir: .*|run_dir: $tmp/run|" -e "s|clients_per_round: 4|clients_per_round: $c|" \
      -e "s|min_clients: 2|min_clients: $c|" -e "s|num_clients: 4|num_clients: $n|" \
      -e "s|rounds: 3|rounds: $k\n  mode: async\n  buffer_size: $b\n  max_staleness: 1000|" \
      -e "s|round_deadline_s: 60|round_deadline_s: 600|" configs/distributed_test.yaml > "$tmp/run.yaml"
  printf "transport:\n  wait_for_clients: %s\n  wait_for_clients_s: 600\n  client_timeout_s: 600\n" "$n" \
    >> "$tmp/run.yaml"
  "$BUILD/bin/layerfl-coordinator" --config "$tmp/run.yaml" --listen 127.0.0.1:0 --port_file "$tmp/port" \
    --metrics_listen= > "$tmp/coord.log" 2>&1 &
  local cp=$!
  while [ ! -s "$tmp/port" ]; do sleep 0.1; done
  "$BUILD/bin/layerfl-loadgen" --coordinator "127.0.0.1:$(head -1 "$tmp/port")" --clients "$n" \
    --poll_ms 5000 --ramp_s $(( n / 1000 )) --give_up_s 600 > "$tmp/lg.log" 2>&1 &
  local lp=$!
  while [ "$(grep -c 'coordinator: join ' "$tmp/coord.log" || true)" -lt "$n" ]; do sleep 0.1; done
  local cpu0 cpu1
  cpu0=$(awk '{print ($14 + $15) / 100}' /proc/$cp/stat)
  while [ ! -s "$tmp/run/metrics.jsonl" ] || [ "$(wc -l < "$tmp/run/metrics.jsonl")" -lt "$k" ]; do
    sleep 0.05
  done
  cpu1=$(awk '{print ($14 + $15) / 100}' /proc/$cp/stat)
  wait $lp
  wait $cp
  /usr/bin/python3 - "$tmp/run/metrics.jsonl" "$n" "$c" "$b" "$cpu0" "$cpu1" "$(tail -1 "$tmp/lg.log")" <<'PY'
import json, sys
path, n, c, b, cpu0, cpu1, summary = sys.argv[1:]
recs = [json.loads(l) for l in open(path)]
ups = sum(1 for r in recs for x in r["clients"] if x.get("contributed"))
buffer_s = sum(r["timing_ms"].get("buffer", 0) for r in recs) / 1e3
mean = lambda k: sum(r["timing_ms"].get(k, 0) for r in recs) / len(recs)
stale = [x["staleness"] for r in recs for x in r["clients"] if x.get("staleness", -1) >= 0]
print(f"{n:>7} {c:>6} {b:>6} {len(recs):>7} {ups:>7} {ups / buffer_s:>9.0f} "
      f"{1e3 * (float(cpu1) - float(cpu0)) / ups:>12.2f} {mean('eval'):>7.1f} {mean('checkpoint'):>7.1f} "
      f"{sum(stale) / len(stale):>10.2f} {max(stale):>9}")
print("   " + summary.strip(), file=sys.stderr)
PY
}

{
  echo "# bash bench/scale/async.sh $BUILD  ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo "## federated.mode async, small model; ups/s: updates folded per second of buffering; cpu_ms/update:"
  echo "## the coordinator's CPU from the last join to the last commit / updates; eval, ckpt: ms per commit;"
  echo "## staleness: mean and largest commits between an update's version and its fold"
  printf "%7s %6s %6s %7s %7s %9s %12s %7s %7s %10s %9s\n" clients places buffer commits updates ups/s \
    cpu_ms/update eval_ms ckpt_ms stale_mean stale_max
  run 1000 100 10 50
  run 10000 1000 100 20
} 2>&1 | tee "$out"
