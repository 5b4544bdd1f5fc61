#!/usr/bin/env bash
# Runs every benchmark against the build in $1 (default build/) and writes
# their results under bench/results/. Each prints ratios measured in the same
# run; expect ~22 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
"$BUILD/bin/selection_bench" | tee bench/results/selection.txt
"$BUILD/bin/aggregation_bench" | tee bench/results/aggregation.txt
"$BUILD/bin/secagg_bench" | tee bench/results/secagg.txt
bash bench/trainer/run.sh "$BUILD"
# Cheap importance scores against the full pass; the round with and without
# a scoring phase over gRPC.
{ echo "# $BUILD/bin/score_variance --config configs/experiments/base.yaml"
  "$BUILD/bin/score_variance" --config configs/experiments/base.yaml 2>/dev/null
} | tee bench/results/score_variance.txt
bash bench/selection/round_time.sh "$BUILD" | tee bench/results/round_time.txt
# Broadcast vs raw TCP, the codec alone, and a held update spilled to disk.
"$BUILD/bin/transfer_bench" --reps 15 --spill_dir "$BUILD" | tee bench/results/transfer.txt
bash bench/budget/run.sh "$BUILD"
# The coordinator with 100-10,000 connected synthetic clients (layerfl-loadgen).
bash bench/scale/run.sh "$BUILD"
bash bench/scale/async.sh "$BUILD"
# sim.parallel_clients 1 vs 2 vs threads 2.
bash bench/sim_parallel/run.sh "$BUILD"
# The asynchronous buffer's journal: a durable append vs the write alone.
{ echo "# build/bin/journal_bench $BUILD"; "$BUILD/bin/journal_bench" "$BUILD"; } | tee bench/results/journal.txt
# Time to accuracy: synchronous vs asynchronous (FedBuff) rounds, devices 10x apart.
bash bench/async/run.sh "$BUILD"
# Foundation-model sized Hugging Face checkpoints (ViT-B, BERT-base; BERT-large
# for the coordinator): peak memory against PyTorch, round time split,
# first-download throughput, a client killed mid-download.
/usr/bin/python3 bench/foundation/run.py "$BUILD" --out bench/results/foundation.txt
