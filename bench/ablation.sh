#!/usr/bin/env bash
# BayesAgg-MTL ablation (issue 10): screen the variants at a reduced budget, then confirm the
# finalists at the full default protocol. Selection is on validation data only
# (bench/ablation_table.py ranks by validation Δm against LS).
#
#   bench/ablation.sh screen  BENCHMARK [OUT]   # the grid, reduced budget, seeds 1-2
#   bench/ablation.sh confirm BENCHMARK [OUT] SPEC...   # finalists, full protocol, seeds 1-3
#
# Environment: BAYESAGG (the CLI, default build/bayesagg), THREADS (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?screen or confirm}; bench=${2:?benchmark}; out=${3:-runs/ablation-$bench-$stage}
shift $(( $# < 3 ? $# : 3 ))
cli=${BAYESAGG:-build/bayesagg}; threads=${THREADS:-1}

# The grid: one factor at a time from the head-centred posterior, then combinations.
grid=(ls bayesagg-reference
  "bayesagg[posterior=head]" "bayesagg[posterior=mode]"
  "bayesagg[posterior=head,refresh=running]" "bayesagg[posterior=newton,refresh=running]"
  "bayesagg[posterior=head,weighting=task]" "bayesagg[posterior=head,weighting=snr]"
  "bayesagg[posterior=head,s-reg=0,s-cls=0]")
case "$bench" in
  synthetic-regression|multi-fashion-mixed)
    grid+=("bayesagg[posterior=head,noise=estimated]" "bayesagg[posterior=head,noise=estimated,weighting=snr]"
           "bayesagg[posterior=head,noise=estimated,weighting=task]" "bayesagg[noise=estimated]") ;;
esac

case "$stage:$bench" in
  screen:synthetic-regression) budget=(--seeds 2) ;;   # full protocol: it is cheap
  screen:multi-fashion|screen:multi-fashion-mixed) budget=(--seeds 2 --train-subset 20000) ;;
  screen:fashion-binary) budget=(--seeds 2 --train-subset 10000) ;;
  confirm:*) budget=(--seeds 3); grid=(ls bayesagg-reference "$@") ;;
  *) echo "usage: $0 screen|confirm BENCHMARK [OUT] [SPEC...]" >&2; exit 2 ;;
esac

methods=$(IFS=,; echo "${grid[*]}")
"$cli" compare --benchmark "$bench" --methods "$methods" "${budget[@]}" --out "$out" \
  --threads "$threads" --progress none > "$out.log" 2>&1 || true
bench/ablation_table.py "$out" > "$out/ablation.md"
cat "$out/ablation.md"
