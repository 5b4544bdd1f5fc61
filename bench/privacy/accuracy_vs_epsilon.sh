#!/usr/bin/env bash
# Accuracy against the privacy budget on the demo setting (configs/demo.yaml:
# 20 clients, 10 a round, 15 rounds, Dirichlet 0.5, 1-4 layer budgets):
# user-level DP-FedAvg in central mode at epsilon = 1, 4, 8 (delta = 1e-5) and
# without DP, for `strategic` (which also releases privatised scores every
# round) and `top` (releases nothing but its updates), 3 seeds each. The
# noise multiplier of each epsilon comes from layerfl-privacy for q = 10/20
# and 15 compositions; strategic splits it between scores and updates
# (z_scores = z_updates = z * sqrt(2), jointly z), so both strategies spend
# the same epsilon. Clip norm 0.5 (the median update norm adaptive clipping
# settles at in this setting), uniform aggregation for every run, DP or not.
#   bash bench/privacy/accuracy_vs_epsilon.sh [OUT]   (~25 min on 1 core)
# Writes OUT/results.md and OUT/accuracy_vs_epsilon.png (default OUT:
# bench/results/privacy); the runs themselves go to runs/privacy_eps.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench/results/privacy}
BIN=build/bin
export OMP_WAIT_POLICY=PASSIVE
RUNS=runs/privacy_eps
mkdir -p "$OUT" "$RUNS/cfg"
ROUNDS=15; Q=0.5
rows=()
for eps in none 8 4 1; do
  if [[ $eps == none ]]; then
    z=0
  else
    z=$($BIN/layerfl-privacy --q $Q --steps $ROUNDS --target_epsilon "$eps" |
        sed -n 's/^sigma=//p')
  fi
  for strategy in strategic top; do
    for seed in 1 2 3; do
      name="${strategy}_eps${eps}_s${seed}"
      cfg="$RUNS/cfg/$name.yaml"
      run="$RUNS/$name"
      sed -e "s#run_dir: runs/demo/sim#run_dir: $run#" \
          -e "s/^seed: 1/seed: $seed/" \
          -e "s/aggregation: weighted/aggregation: uniform/" \
          -e "s/strategy: strategic/strategy: $strategy/" \
          configs/demo.yaml > "$cfg"
      if [[ $eps != none ]]; then
        if [[ $strategy == strategic ]]; then
          zu=$(/usr/bin/python3 -c "print($z * 2 ** 0.5)")
        else
          zu=$z
        fi
        cat >> "$cfg" <<YAML

privacy:
  dp:
    enabled: true
    mode: central
    clip_norm: 0.5
    noise_multiplier: $zu
    score_noise_multiplier: $zu
    delta: 1.0e-5
YAML
      fi
      if [[ ! -s "$run/metrics.jsonl" ]] ||
         [[ $(wc -l < "$run/metrics.jsonl") -lt $ROUNDS ]]; then
        rm -rf "$run"
        $BIN/layerfl-sim --config "$cfg" > "$RUNS/$name.log" 2>&1
      fi
      rows+=("$strategy $eps $seed $run/metrics.jsonl")
    done
  done
done
printf '%s\n' "${rows[@]}" > "$OUT/runs.txt"
/usr/bin/python3 - "$OUT" <<'PY'
import json, statistics, sys
out = sys.argv[1]
cells = {}
for line in open(f"{out}/runs.txt"):
    strategy, eps, seed, path = line.split()
    recs = [json.loads(l) for l in open(path)]
    accs = [r["accuracy"] for r in recs if "accuracy" in r]
    spent = recs[-1].get("privacy", {}).get("epsilon", float("inf"))
    cells.setdefault((strategy, eps), []).append(
        (accs[-1], statistics.mean(accs[-5:]), spent))
def ms(v):
    return f"{statistics.mean(v):.4f} ± {statistics.stdev(v):.4f}" if len(v) > 1 else f"{v[0]:.4f}"
lines = ["| strategy | target ε | spent ε (δ=1e-5) | final acc | mean acc, last 5 rounds |",
         "|---|---|---|---|---|"]
order = ["none", "8", "4", "1"]
for strategy in ["strategic", "top"]:
    for eps in order:
        v = cells[(strategy, eps)]
        spent = max(x[2] for x in v)
        lines.append(f"| {strategy} | {'no DP' if eps == 'none' else eps} | "
                     f"{'∞' if eps == 'none' else f'{spent:.3f}'} | "
                     f"{ms([x[0] for x in v])} | {ms([x[1] for x in v])} |")
open(f"{out}/results.md", "w").write(
    "Accuracy against epsilon, demo setting, 3 seeds (mean ± std)\n\n" +
    "\n".join(lines) + "\n")
print("\n".join(lines))
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [1, 4, 8]
    for strategy, marker in [("strategic", "o"), ("top", "s")]:
        m = [statistics.mean(x[1] for x in cells[(strategy, str(e))]) for e in xs]
        s = [statistics.stdev(x[1] for x in cells[(strategy, str(e))]) for e in xs]
        line = ax.errorbar(xs, m, yerr=s, marker=marker, capsize=3, label=strategy)
        base = statistics.mean(x[1] for x in cells[(strategy, "none")])
        ax.axhline(base, linestyle="--", color=line[0].get_color(),
                   label=f"{strategy}, no DP")
    ax.set_xlabel("ε (δ = 1e-5), 15 rounds")
    ax.set_ylabel("test accuracy, mean of last 5 rounds")
    ax.set_title("User-level DP-FedAvg, demo setting")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/accuracy_vs_epsilon.png", dpi=120)
except ImportError:
    print("matplotlib missing: no plot")
PY
