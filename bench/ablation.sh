#!/usr/bin/env bash
# BayesAgg-MTL ablation (issue 10): screen the variants at a reduced budget, then confirm the
# finalists at the full default protocol. Selection is on validation data only
# (bench/ablation_table.py ranks by validation Δm against LS).
#
#   bench/ablation.sh screen  BENCHMARK [OUT]   # the grid, reduced budget (seeds 1-2; Fashion: 1)
#   bench/ablation.sh confirm BENCHMARK [OUT] SPEC...   # finalists, full protocol, seeds 1-3
#
# Environment: BAYESAGG (the CLI, default build/bayesagg), THREADS (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
stage=${1:?screen or confirm}; bench=${2:?benchmark}; out=${3:-runs/ablation-$bench-$stage}
shift $(( $# < 3 ? $# : 3 ))
cli=${BAYESAGG:-build/bayesagg}; threads=${THREADS:-1}

# The grid: the reference, then one factor at a time (posterior centre, scale, weighting, refresh,
# noise) around the head-centred posterior with LS's gradient size, then combinations. Rows start
# from bayesagg-reference: `bayesagg[...]` would start from the bayesagg preset, and every key the
# row does not name would silently take the preset's value.
r=bayesagg-reference
h="posterior=head,scale=sum"
grid=(ls uw bayesagg-reference
  "$r[posterior=head,scale=average]" "$r[$h]" "$r[posterior=newton,scale=sum]"
  "$r[posterior=mode,scale=sum]" "$r[$h,weighting=snr]" "$r[$h,weighting=task]"
  "$r[$h,s-reg=0,s-cls=0]" "$r[$h,refresh=running]"
  "$r[$h,weighting=snr,refresh=running]")
# Noise estimation: regression outputs' noise, classification tasks' likelihood temperature.
grid+=("$r[$h,noise=estimated]" "$r[$h,noise=estimated,weighting=task]"
       "$r[$h,noise=estimated,s-reg=0,s-cls=0]" "$r[$h,noise=normalised,weighting=task]"
       "$r[$h,noise=normalised,s-reg=0,s-cls=0]")
case "$bench" in
  synthetic-regression|multi-fashion-mixed)
    grid+=("$r[$h,noise=estimated,weighting=snr]" "$r[$h,noise=estimated,refresh=running]") ;;
esac

case "$stage:$bench" in
  screen:synthetic-regression) budget=(--seeds 2) ;;   # full protocol: it is cheap
  screen:multi-fashion|screen:multi-fashion-mixed) budget=(--seeds 1 --train-subset 20000) ;;
  screen:fashion-binary) budget=(--seeds 1 --train-subset 10000) ;;
  confirm:*) budget=(--seeds 3); grid=(ls bayesagg-reference "$@") ;;
  *) echo "usage: $0 screen|confirm BENCHMARK [OUT] [SPEC...]" >&2; exit 2 ;;
esac

methods=$(IFS=,; echo "${grid[*]}")
"$cli" compare --benchmark "$bench" --methods "$methods" "${budget[@]}" --out "$out" \
  --threads "$threads" --progress none > "$out.log" 2>&1 || true
bench/ablation_table.py "$out" > "$out/ablation.md"
cat "$out/ablation.md"
