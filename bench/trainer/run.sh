#!/usr/bin/env bash
# bench/trainer/run.sh BUILD_DIR [ROUNDS]: selective training step time, C++
# (BUILD_DIR/bin/trainer_bench) vs Python PyTorch (bench/trainer/trainer_bench.py
# under Debian's /usr/bin/python3), interleaved: per round, batch and mode one
# process of each (the order alternates by round). Runs ROUNDS rounds (default
# 5) but stops after the round that passes BUDGET_S seconds (default 150) once
# 3 are done. Prints the table of medians over rounds and writes it to
# bench/results/$NAME.txt, the raw result lines to bench/results/${NAME}_raw.txt.
# Environment: NAME (default trainer), THREADS (default 2), BATCHES (default
# "32 128"), STEPS (steps per timed Train call, default 8), REPS (timed calls
# per process, default 8), WARMUP (untimed steps, default 5), WAIT_POLICY
# (OMP_WAIT_POLICY for both languages, default PASSIVE; "default" leaves it
# unset). With libgomp's default spin-then-sleep waiting, 2 threads on a shared
# 2-core machine intermittently run a whole process 10-30x slower (see
# bench/results/trainer_ompdefault.txt); passive waiting avoids that.
# MALLOC_* (glibc tunables) pass through too and are recorded: see
# bench/results/trainer_malloc.txt for why they matter to the C++ side.
set -euo pipefail
BUILD=${1:?usage: bench/trainer/run.sh BUILD_DIR [ROUNDS]}
ROUNDS=${2:-5}
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-"32 128"}
STEPS=${STEPS:-8}
REPS=${REPS:-8}
WARMUP=${WARMUP:-5}
BUDGET_S=${BUDGET_S:-150}
NAME=${NAME:-trainer}
WAIT_POLICY=${WAIT_POLICY:-PASSIVE}
if [[ "$WAIT_POLICY" == default ]]; then unset OMP_WAIT_POLICY
else export OMP_WAIT_POLICY="$WAIT_POLICY"; fi
PY=/usr/bin/python3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CPP="$BUILD/bin/trainer_bench"
[[ -x "$CPP" ]] || { echo "run.sh: $CPP not built" >&2; exit 2; }
OUT="$ROOT/bench/results/$NAME.txt"
RAW="$ROOT/bench/results/${NAME}_raw.txt"
: >"$RAW"

args() { echo --mode "$1" --batch "$2" --threads "$THREADS" --steps "$STEPS" --reps "$REPS" \
  --warmup_steps "$WARMUP"; }
run_cpp() { "$CPP" $(args "$@") >>"$RAW"; }
run_py() { "$PY" "$ROOT/bench/trainer/trainer_bench.py" $(args "$@") >>"$RAW"; }

start=$(date +%s)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
done_rounds=0
for ((r = 1; r <= ROUNDS; r++)); do
  for b in $BATCHES; do
    for m in full last; do
      if ((r % 2)); then run_cpp "$m" "$b"; run_py "$m" "$b";
      else run_py "$m" "$b"; run_cpp "$m" "$b"; fi
    done
  done
  done_rounds=$r
  echo "round $r/$ROUNDS done ($(($(date +%s) - start)) s)" >&2
  if ((r >= 3 && $(date +%s) - start > BUDGET_S)); then break; fi
done

{
  echo "# trainer benchmark: selective training step time, C++ LibTorch vs Python PyTorch"
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "libtorch (C++): $(dpkg-query -W -f='${Version}' libtorch-dev 2>/dev/null || echo unknown)"
  echo "python torch:   $($PY -c 'import torch; print(torch.__version__)') ($($PY --version 2>&1))"
  echo "model: ViT defaults (dim 64, depth 4, heads 4, mlp 128, 28x28, patch 7), SGD lr 0.05 momentum 0.9"
  echo "threads: C++ SetTorchThreads / Python torch.set_num_threads = $THREADS (both link the same libtorch_cpu + libgomp + OpenBLAS-openmp)"
  echo "OpenMP/malloc environment: $(env | grep -E '^(OMP|GOMP|MALLOC)_' | tr '\n' ' ' || true)(unset = library defaults)"
  echo "load average before/after: $load0 / $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "per process: 1 first step (timed alone), $WARMUP warm-up steps, $REPS timed Train calls x $STEPS steps -> median ms/step;"
  echo "table: median over $done_rounds interleaved rounds (order alternates C++/Python per round); benchmark wall $(($(date +%s) - start)) s"
  echo "command: NAME=$NAME WAIT_POLICY=$WAIT_POLICY THREADS=$THREADS BATCHES=\"$BATCHES\" bench/trainer/run.sh $BUILD $ROUNDS"
  echo
  "$PY" "$ROOT/bench/trainer/summarize.py" "$RAW"
} | tee "$OUT"
