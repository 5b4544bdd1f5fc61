#!/usr/bin/env bash
# The coordinator at scale, measured with layerfl-loadgen on loopback (one
# machine: the load generator's threads share its cores with the
# coordinator, so times here are upper bounds):
#   idle:   coordinator RSS per idle connected client, N = 100, 1,000, 10,000,
#           with one malloc arena (the default) and with glibc's default
#           arenas, in the same run; and how long N joins took.
#   rounds: N connected clients, M per round (3 rounds of synthetic updates):
#           coordinator CPU per round, and the round's phases from
#           metrics.jsonl (score, train: waiting for the clients; aggregate,
#           eval, checkpoint: the coordinator's own work after the last
#           upload), the selection's time (largest) and gap, for the small
#           test model and a ~1M-parameter ViT; the time from the last
#           upload to the commit against what aggregation_bench folds the
#           same bytes in, measured in the same run.
# Writes bench/results/scale.txt.
#   bash bench/scale/run.sh [build] [quick]
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
QUICK=${2:-}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
out=bench/results/scale.txt
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

# config N M ROUNDS WAIT_FOR WAIT_S MODEL -> $tmp/run.yaml
config() {
  local n=$1 m=$2 rounds=$3 wait_for=$4 wait_s=$5 model=$6
  sed -e "s|run_dir: .*|run_dir: $tmp/run|" -e "s|clients_per_round: 4|clients_per_round: $m|" \
      -e "s|min_clients: 2|min_clients: $m|" -e "s|num_clients: 4|num_clients: $n|" \
      -e "s|rounds: 3|rounds: $rounds|" -e "s|round_deadline_s: 60|round_deadline_s: 600|" \
      configs/distributed_test.yaml > "$tmp/run.yaml"
  if [ "$model" = 1m ]; then
    sed -i -e "s|dim: 32|dim: 128|" -e "s|depth: 2|depth: 5|" -e "s|heads: 2|heads: 4|" \
        -e "s|mlp_dim: 64|mlp_dim: 512|" "$tmp/run.yaml"
  fi
  printf "transport:\n  wait_for_clients: %s\n  wait_for_clients_s: %s\n  client_timeout_s: 600\n  max_held_mb: 4096\n" \
    "$wait_for" "$wait_s" >> "$tmp/run.yaml"
}

start_coordinator() {  # ARENAS [RELEASE_S] -> $CP, $PORT
  rm -rf "$tmp/run" "$tmp/port"
  /usr/bin/time -f "%U %S %R" -o "$tmp/cpu" "$BUILD/bin/layerfl-coordinator" --config "$tmp/run.yaml" \
    --listen 127.0.0.1:0 --port_file "$tmp/port" --metrics_listen= --malloc_arenas "$1" \
    --release_memory_s "${2:-10}" \
    > "$tmp/coord.log" 2>&1 &
  CP=$!
  while [ ! -s "$tmp/port" ]; do sleep 0.1; done
  PORT=$(head -1 "$tmp/port")
  sleep 1
  CPID=$(pgrep -P $CP || echo $CP)
}
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
cpu() { awk '{print ($14 + $15) / 100}' /proc/$1/stat; }
joins() { grep -c "coordinator: join " "$tmp/coord.log" || true; }

idle() {  # N ARENAS [own]: own = every client on its own TCP connection
  local n=$1 arenas=$2 conns=${3:-shared} ramp
  ramp=$(( n / 500 ))
  config "$n" 10 1 $((n + 1)) 100000 small
  start_coordinator "$arenas"
  local before t0 t1 after a
  # The baseline: the least RSS over 11 s before any client, which spans
  # one release of free pages (--release_memory_s 10: after 10 s without
  # joins or transfers) of the start's garbage.
  before=$(rss $CPID)
  for _ in $(seq 22); do
    sleep 0.5
    a=$(rss $CPID)
    [ "$a" -lt "$before" ] && before=$a
  done
  t0=$(date +%s.%N)
  "$BUILD/bin/layerfl-loadgen" --coordinator 127.0.0.1:$PORT --clients "$n" --poll_ms 5000 \
    --ramp_s "$ramp" --give_up_s 600 --own_connections=$([ "$conns" = own ] && echo true || echo false) \
    > "$tmp/lg.log" 2>&1 &
  local LP=$!
  while [ "$(joins)" -lt "$n" ]; do sleep 0.2; done
  t1=$(date +%s.%N)
  sleep 3
  after=$(rss $CPID)
  # 12 s more, sampled every 0.5 s: the least (just after the coordinator
  # returned its free pages, 10 s after the last join) and the most.
  local lo=$after hi=$after
  for _ in $(seq 24); do
    sleep 0.5
    a=$(rss $CPID)
    [ "$a" -lt "$lo" ] && lo=$a
    [ "$a" -gt "$hi" ] && hi=$a
  done
  printf "%-8s %7s %7s %12s %12s %12s %12s %12s %10.1f %10s\n" "$n" "$([ "$arenas" = 1 ] && echo 1 || echo default)" \
    "$conns" "$before" "$after" "$(( (after - before) * 1024 / n ))" "$(( (lo - before) * 1024 / n ))" \
    "$(( (hi - before) * 1024 / n ))" "$(awk "BEGIN {print $t1 - $t0}")" "$ramp"
  # The coordinator itself ($CPID), not only /usr/bin/time above it.
  kill $LP $CPID $CP 2>/dev/null || true
  wait $LP $CP 2>/dev/null || true
}

rounds() {  # N M MODEL [RELEASE_S]
  local n=$1 m=$2 model=$3 release=${4:-10}
  config "$n" "$m" 3 "$n" 600 "$model"
  start_coordinator 1 "$release"
  local cpu0
  cpu0=$(cpu $CPID)
  "$BUILD/bin/layerfl-loadgen" --coordinator 127.0.0.1:$PORT --clients "$n" --poll_ms 5000 \
    --ramp_s $(( n / 500 )) --give_up_s 600 > "$tmp/lg.log" 2>&1
  wait $CP
  local total
  total=$(awk '{print $1 + $2}' "$tmp/cpu")
  /usr/bin/python3 - "$tmp/run/metrics.jsonl" "$n" "$m" "$model" "$cpu0" "$total" "$(cat "$tmp/lg.log")" "$FOLD_GBPS" \
    "$(cat "$tmp/cpu")" "$release" <<'PY'
import json, sys
path, n, m, model, cpu0, total, summary, fold, times, release = sys.argv[1:]
_, sys_s, faults = times.split()
recs = [json.loads(l) for l in open(path)]
def mean(key):
    return sum(r["timing_ms"].get(key, 0) for r in recs) / len(recs)
after = mean("aggregate") + mean("eval") + mean("checkpoint")
mb = sum(r["wire_bytes_up"] for r in recs) / len(recs) / 1e6
solve_max = max(r["timing_ms"].get("solve", 0) for r in recs)
gap_max = max(r["selection"]["gap"] or 0 for r in recs)
status = "/".join(sorted({r["selection"]["status"] for r in recs}))
# What aggregation_bench folds the same float32 bytes in (its vit-11M rate,
# measured in this run), and the coordinator's time after the last upload
# over it.
agg = sum(r["bytes_up"] for r in recs) / len(recs) / (float(fold) * 1e9) * 1e3
print(f"{n:>7} {m:>6} {model:>6} {len(recs):>3} {(float(total) - float(cpu0)) / len(recs):>10.2f} "
      f"{mean('score'):>9.0f} {mean('train'):>9.0f} {mean('aggregate'):>9.1f} {mean('eval'):>7.1f} "
      f"{mean('checkpoint'):>7.1f} {after:>9.1f} {mb:>9.1f} {agg:>7.1f} {after / agg:>9.2f} "
      f"{solve_max:>10.1f} {gap_max:>8.4f} {float(sys_s) / len(recs):>8.2f} {int(faults) // len(recs):>9} "
      f"{release:>7} {status}")
print("   " + summary.strip().splitlines()[-1], file=sys.stderr)
PY
}

{
  echo "# bash bench/scale/run.sh $BUILD $QUICK  ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  echo
  echo "## idle connected clients (each holds a session and a 5 s long poll, re-polled at once; no heartbeat"
  echo "## goes out while a poll is in flight;"
  echo "## conns: shared = gRPC multiplexes the load generator's clients over one TCP connection,"
  echo "## own = one connection per client, as separate devices;"
  echo "## rss0: the coordinator before any client (least over 11 s); bytes/client: 3 s after the last"
  echo "## join; min, max: over the next 12 s, which span one release of free pages)"
  printf "%-8s %7s %7s %12s %12s %12s %12s %12s %10s %10s\n" clients arenas conns rss0_kb rss_kb bytes/client \
    min_b/client max_b/client join_s ramp_s
  sizes="100 1000 10000"
  [ -n "$QUICK" ] && sizes="100 1000"
  for n in $sizes; do
    idle "$n" 1
    idle "$n" 0
    # One connection per client: 10,000 of them do not finish joining on
    # these 2 cores (the load generator's 10,000 channels), so 3,000.
    if [ "$n" -le 1000 ]; then idle "$n" 1 own; fi
  done
  [ -z "$QUICK" ] && idle 3000 1 own
  echo
  FOLD_GBPS=$("$BUILD/bin/aggregation_bench" --quick | awk '/^vit-11M/ {print $5; exit}')
  echo "## rounds (3 rounds; coordinator CPU s per round; phase means in ms; after = aggregate + eval + checkpoint,"
  echo "## the time from the last upload to the commit; agg_ms = what aggregation_bench --quick folds the round's"
  echo "## float32 update bytes in, at its vit-11M rate measured in this run: $FOLD_GBPS GB/s;"
  echo "## sys_s/rd, faults/rd: the coordinator's system CPU and minor page faults over the whole run / rounds;"
  echo "## release: --release_memory_s (10: free pages go back after 10 s without transfers; 0: never))"
  printf "%7s %6s %6s %3s %10s %9s %9s %9s %7s %7s %9s %9s %7s %9s %10s %8s %8s %9s %7s %s\n" clients per_rd model rds \
    cpu_s/rd score_ms train_ms aggr_ms eval_ms ckpt_ms after_ms MB_up/rd agg_ms after/agg solve_max_ms gap_max \
    sys_s/rd faults/rd release status
  # The last: the same round with the heap never released (--release_memory_s 0),
  # against the default (released only after 10 s without transfers).
  runs="100:10:small 1000:100:small 1000:1000:small 10000:1000:small 1000:100:1m 1000:1000:1m 1000:1000:1m:0"
  [ -n "$QUICK" ] && runs="100:10:small 1000:100:small"
  for r in $runs; do
    IFS=: read -r n m model release <<< "$r"
    rounds "$n" "$m" "$model" "${release:-10}"
  done
} 2>&1 | tee "$out"
