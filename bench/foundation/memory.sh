#!/usr/bin/env bash
# bench/foundation/memory.sh BUILD_DIR [memory.py flags]: coordinator + client
# daemons on a ViT-B-sized model, per-process peak RSS against the model's
# bytes and against PyTorch doing the same work (bench/foundation/memory.py);
# the table goes to bench/results/foundation_memory.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:?usage: bench/foundation/memory.sh BUILD_DIR [flags]}
shift
exec /usr/bin/python3 "$ROOT/bench/foundation/memory.py" "$BUILD" \
  --out "$ROOT/bench/results/foundation_memory.txt" "$@"
