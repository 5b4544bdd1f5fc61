#!/bin/bash
# The round time with and without a scoring phase, over gRPC on loopback: a
# layerfl-coordinator and 4 layerfl-client daemons run configs/distributed_test.yaml
# (strategic, every client every round) for ROUNDS rounds, once with the
# paper's scoring pass every round (importance.source: pass) and once with
# scores from training (source: train: only round 1 scores). Prints the mean
# committed round (the sum of its timing_ms phases) of the rounds with a
# scoring phase and of those without, per run.
#   bash bench/selection/round_time.sh [BUILD_DIR] [ROUNDS]
# -> bench/results/round_time.txt
set -euo pipefail
BUILD=${1:-build}
ROUNDS=${2:-12}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /tmp/layerfl_round_time.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=PASSIVE

run() {  # run NAME IMPORTANCE_SECTION
  local name=$1 section=$2
  local cfg=$WORK/$name.yaml
  sed -e "s|run_dir: .*|run_dir: $WORK/$name|" \
      -e "s|rounds: 3|rounds: $ROUNDS|" \
      -e "s|importance:\n  batches: 2||" "$ROOT/configs/distributed_test.yaml" |
    python3 -c "import sys; s=sys.stdin.read(); print(s.replace('importance:\n  batches: 2\n', '''$section'''))" > "$cfg"
  "$ROOT/$BUILD/bin/layerfl-coordinator" --config="$cfg" --listen=127.0.0.1:0 \
    --port_file="$WORK/$name.port" --tick_ms=20 --metrics_listen= \
    > "$WORK/$name.coordinator.log" 2>&1 &
  local coord=$!
  for _ in $(seq 200); do [ -s "$WORK/$name.port" ] && break; sleep 0.05; done
  local port
  port=$(head -1 "$WORK/$name.port")
  local clients=()
  for i in 0 1 2 3; do
    "$ROOT/$BUILD/bin/layerfl-client" --coordinator=127.0.0.1:"$port" \
      --partition=$i --threads=1 --poll_ms=20 > "$WORK/$name.client$i.log" 2>&1 &
    clients+=($!)
  done
  wait "$coord"
  for c in "${clients[@]}"; do wait "$c" || true; done
  python3 - "$WORK/$name/metrics.jsonl" "$name" <<'EOF'
import json, sys
scoring, plain = [], []
for line in open(sys.argv[1]):
    r = json.loads(line)
    t = r["timing_ms"]
    # The coordinator records its phases (no total): their sum.
    (scoring if "score" in t else plain).append(sum(t.values()))
def mean(v):
    return "%.0f ms (%d rounds)" % (sum(v) / len(v), len(v)) if v else "-"
print("%-7s round with a scoring phase: %s; without: %s" %
      (sys.argv[2], mean(scoring), mean(plain)))
EOF
}

echo "# bash bench/selection/round_time.sh $BUILD $ROUNDS  ($(date -u +%F), $(nproc) cores)"
run pass $'importance:\n  batches: 2\n'
run train $'importance:\n  source: train\n  batches: 1\n'
