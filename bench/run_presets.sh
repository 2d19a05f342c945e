#!/usr/bin/env bash
# Runs `bayesagg bench` on every preset and prints a table: our step and full-data step times, the
# ratio to the same heads' linear-scalarisation backward (measured in the same process), and the
# speed-up over the reference implementation's published per-step cost on this kind of machine
# (2 threads, OpenBLAS; issue 2). Usage: bench/run_presets.sh [extra bench options...]
set -euo pipefail
BIN="${BAYESAGG_BIN:-$(dirname "$0")/../build/bayesagg}"
declare -A REF_STEP_MS=([qm9]=75 [utkface]=990 [cifar]=3200 [chestx]=5700)
declare -A REF_FULL=([utkface]="2500 10000" [cifar]="136000 44928" [chestx]="160000 69438")
printf "%-8s %10s %8s %12s %10s %10s %9s %10s\n" preset step_ms vs_ls ref_step_ms speedup full_ms full_n peak_mb
for p in qm9 utkface cifar chestx; do
  full_n=10000
  if [ -n "${REF_FULL[$p]:-}" ]; then full_n=$(echo "${REF_FULL[$p]}" | cut -d' ' -f2); fi
  json=$("$BIN" bench --preset "$p" --full-n "$full_n" --full-repeats 1 "$@")
  python3 - "$p" "$json" "${REF_STEP_MS[$p]}" <<'PY'
import json, sys
p, j, ref = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
print(f"{p:<8} {j['step_ms']:10.1f} {j['step_ms']/j['ls_ms']:8.0f}x {ref:12.0f} {ref/j['step_ms']:9.1f}x "
      f"{j['full_posterior_ms']:10.0f} {j['full_n']:9d} {j['peak_rss_mb']:10.0f}")
PY
done
