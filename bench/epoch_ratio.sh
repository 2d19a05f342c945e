#!/usr/bin/env bash
# The cost of a BayesAgg-MTL epoch relative to a linear-scalarisation epoch on the same benchmark
# (issue 3: at most 3x on multi-fashion). Runs LS and BayesAgg-MTL alternately, 2 epochs each (the
# first BayesAgg-MTL epoch is its LS warm-up; its second is a full BayesAgg-MTL epoch, including
# the full-data posteriors at its first step), and compares the second epochs' training seconds,
# pair by pair, so that slow phases of a shared machine hit both sides.
# Usage: bench/epoch_ratio.sh [repeats=3] [extra train options, e.g. --threads 2]
set -euo pipefail
BIN="${BAYESAGG_BIN:-$(dirname "$0")/../build/bayesagg}"
REPEATS="${1:-3}"
shift || true
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
second_epoch() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["epoch_train_seconds"][1])' "$1"
}
printf "%-6s %10s %12s %8s\n" repeat ls_s bayesagg_s ratio
for r in $(seq 1 "$REPEATS"); do
  for m in ls bayesagg; do
    "$BIN" train --benchmark multi-fashion --method "$m" --epochs 2 --progress none \
      --out "$TMP/$m$r" "$@" > "$TMP/$m$r.log" 2>&1 || { cat "$TMP/$m$r.log"; exit 1; }
  done
  python3 - "$r" "$(second_epoch "$TMP/ls$r/summary.json")" \
    "$(second_epoch "$TMP/bayesagg$r/summary.json")" <<'PY'
import sys
r, ls, ba = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
print(f"{r:<6} {ls:10.2f} {ba:12.2f} {ba / ls:7.2f}x")
PY
done
