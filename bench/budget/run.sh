#!/usr/bin/env bash
# Budgets that are real resources, measured: configs/budget_time.yaml and
# configs/budget_memory.yaml (20 virtual clients on simulated devices 1-4x
# slower than this machine, budgets in seconds per round / MiB of peak
# training memory), each with a profile measured in the same run (no cache).
# Prints every client's measured / budget (time: the scoring pass plus the
# local steps, on its simulated device; memory: the exact peak of tensor
# bytes) and writes bench/results/budget.txt. Run on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
out=bench/results/budget.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo "# bash bench/budget/run.sh $BUILD  ($(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
  for unit in time memory; do
    sed -e "s|^  cache_dir: .*|  cache_dir: \"\"|" -e "s|^  run_dir: .*|  run_dir: $tmp/$unit|" \
      configs/budget_$unit.yaml > "$tmp/$unit.yaml"
    echo
    echo "## budget.unit: $unit (configs/budget_$unit.yaml, profile measured in this run)"
    "$BUILD/bin/layerfl-sim" --config "$tmp/$unit.yaml" | sed -n '/^measured \//,$p'
  done
} | tee "$out"
