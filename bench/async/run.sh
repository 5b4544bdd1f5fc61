#!/usr/bin/env bash
# Time to accuracy, synchronous against asynchronous (FedBuff) rounds, on
# simulated devices 10x apart in speed (devices.speed_min 0.1, speed_max 1.0,
# log-uniform; a training task takes devices.train_s = 1 s / speed and a
# scoring pass 0.5 s / speed on the simulator's clock). configs/demo.yaml
# (pretrained 4-block ViT, 20 clients, Dirichlet 0.5, budgets of 1-4 layers)
# with the same 200 client updates in every run:
#   sync         10 clients a round, 20 rounds (a round waits for its slowest)
#   async-poly   10 places, a commit every 5 updates, 40 commits,
#                staleness weight 1/sqrt(1 + t) (FedBuff's)
#   async-const  the same with every staleness weight 1
#   async-cohort async-poly with each client's layers selected jointly with
#                the (up to 9) clients training at that moment
#                (federated.async_cohort: 9; strategic only: top's choice
#                does not depend on the other clients)
# for the strategic selection and the top baseline, seeds 1-3, two runs at a
# time. Writes bench/results/async.txt (and keeps the runs' metrics under
# runs/bench/async).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
out=runs/bench/async
rm -rf "$out" && mkdir -p "$out"
cells=()
for seed in 1 2 3; do
  for strategy in strategic top; do
    for mode in sync async-poly async-const async-cohort; do
      [ "$mode" = async-cohort ] && [ "$strategy" != strategic ] && continue
      name="$mode-$strategy-seed$seed"
      cfg="$out/$name.yaml"
      case $mode in
        sync) fed="  rounds: 20" ;;
        async-poly) fed=$'  rounds: 40\n  mode: async\n  buffer_size: 5\n  staleness: polynomial\n  staleness_exponent: 0.5' ;;
        async-const) fed=$'  rounds: 40\n  mode: async\n  buffer_size: 5\n  staleness: constant' ;;
        async-cohort) fed=$'  rounds: 40\n  mode: async\n  buffer_size: 5\n  staleness: polynomial\n  staleness_exponent: 0.5\n  async_cohort: 9' ;;
      esac
      awk -v fed="$fed" '/^  rounds: /{print fed; next} {print}' configs/demo.yaml |
        sed -e "s|^seed: .*|seed: $seed|" -e "s|run_dir: .*|run_dir: $out/$name|" \
            -e "s|resume: true|resume: false|" -e "s|strategy: .*|strategy: $strategy|" > "$cfg"
      printf "devices:\n  speed_min: 0.1\n  speed_max: 1.0\n  train_s: 1.0\n  score_s: 0.5\n" >> "$cfg"
      cells+=("$cfg")
    done
  done
done
# The pretrained checkpoint is built once, before the parallel runs.
"$BUILD/bin/layerfl-sim" --config "${cells[0]}" > /dev/null
printf '%s\n' "${cells[@]:1}" | xargs -P 2 -I{} sh -c "'$BUILD/bin/layerfl-sim' --config {} > {}.log 2>&1 || { cat {}.log; exit 255; }"
/usr/bin/python3 bench/async/summarize.py "$out" "$BUILD" | tee bench/results/async.txt
