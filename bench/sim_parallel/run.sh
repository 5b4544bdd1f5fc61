#!/usr/bin/env bash
# sim.parallel_clients on this machine: configs/distributed.yaml (8 virtual
# clients a round, 5 rounds, pretrained ViT) with the two cores used as
#   parallel_clients 1, threads 1   (one client at a time, one core)
#   parallel_clients 2, threads 1   (two clients at once, a core each)
#   parallel_clients 1, threads 2   (one client at a time, both cores intra-op)
# alternated 3 times; the rounds' own seconds (layerfl-sim's wall, no data
# loading or pretraining), medians and ratios from the same run. Writes
# bench/results/sim_parallel.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() {  # PARALLEL THREADS -> seconds
  sed -e "s|run_dir: .*|run_dir: $tmp/run|" -e "s|rounds: 20|rounds: 5|" -e "s|resume: true|resume: false|" \
      -e "s|^threads: .*|threads: $2|" configs/distributed.yaml > "$tmp/c.yaml"
  printf "sim:\n  parallel_clients: %s\n" "$1" >> "$tmp/c.yaml"
  rm -rf "$tmp/run"
  "$BUILD/bin/layerfl-sim" --config "$tmp/c.yaml" | sed -n 's/^sim: .*, \([0-9.]*\)s; metrics.*/\1/p'
}
run 1 1 > /dev/null  # warm: the pretrained checkpoint and page cache
a=(); b=(); t=()
for i in 1 2 3; do a+=("$(run 1 1)"); b+=("$(run 2 1)"); t+=("$(run 1 2)"); done
/usr/bin/python3 - "$BUILD" "${a[*]}" "${b[*]}" "${t[*]}" <<'PY' | tee bench/results/sim_parallel.txt
import statistics, subprocess, sys
build, a, b, t = sys.argv[1], *[list(map(float, x.split())) for x in sys.argv[2:]]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
ma, mb, mt = map(statistics.median, (a, b, t))
print(f"# bash bench/sim_parallel/run.sh {build}  (2 cores, {cpu})")
print("setting                          runs (s)              median s")
print(f"parallel_clients 1, threads 1    {a}   {ma:.2f}")
print(f"parallel_clients 2, threads 1    {b}   {mb:.2f}")
print(f"parallel_clients 1, threads 2    {t}   {mt:.2f}")
print(f"speedup of parallel_clients 2 over 1 (threads 1): {ma / mb:.2f}x")
print(f"parallel_clients 2 vs threads 2 (both cores):     {mt / mb:.2f}x")
PY
