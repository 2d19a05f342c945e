#!/usr/bin/env bash
# Data-parallel scaling on one machine (docs/distributed.md, "Measured"): the second epoch's
# training and evaluation seconds of 1 process × 1 thread, 2 ranks × 1 thread (--nproc 2) and
# 1 process × 2 threads, for each method, run interleaved (configuration inside method inside
# repeat) so that slow phases of a shared machine hit every configuration; plus the megabytes
# each rank sent into collectives and their share of the epoch (from the rank-0 log).
# The second epoch is used because BayesAgg-MTL's first is its LS warm-up.
# Usage: bench/dist_scaling.sh [repeats=2] [methods=ls,bayesagg] [train options...]
#   e.g. bench/dist_scaling.sh 2 ls,bayesagg --benchmark multi-fashion --train-subset 6000
set -euo pipefail
BIN="${BAYESAGG_BIN:-$(dirname "$0")/../build/bayesagg}"
REPEATS="${1:-2}"
METHODS="${2:-ls,bayesagg}"
shift 2 || shift $# || true
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
RESULTS="$TMP/results.tsv"
: > "$RESULTS"
for r in $(seq 1 "$REPEATS"); do
  for m in ${METHODS//,/ }; do
    for config in "1x1:--threads 1" "2x1:--threads 1 --nproc 2" "1x2:--threads 2"; do
      name=${config%%:*}
      out="$TMP/$m-$name-$r"
      # shellcheck disable=SC2086
      "$BIN" train --method "$m" --epochs 2 --progress none --out "$out" ${config#*:} "$@" \
        > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
      /usr/bin/python3 - "$m" "$name" "$out.log" >> "$RESULTS" <<'PY'
import re, sys
method, config, log = sys.argv[1:4]
line = next(l for l in open(log) if l.startswith("epoch 2/2"))
train, ev = re.match(r"epoch 2/2\s+([\d.]+)s \(\+([\d.]+)s eval\)", line).groups()
coll = re.search(r"collectives ([\d.]+) MB, (\d+)% of the time", line)
mb, share = (coll.group(1), coll.group(2)) if coll else ("0", "0")
print(f"{method}\t{config}\t{train}\t{ev}\t{mb}\t{share}")
PY
    done
  done
done
/usr/bin/python3 - "$RESULTS" "$@" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for m, c, t, e, mb, share in rows:
    by.setdefault((m, c), []).append((float(t), float(e), float(mb), float(share)))
names = {"1x1": "1 process × 1 thread", "2x1": "2 ranks × 1 thread", "1x2": "1 process × 2 threads"}
print("| method | configuration | train s (epoch 2) | vs 1×1 | eval s | vs 1×1 | collectives MB/rank | share of the epoch |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for m in dict.fromkeys(r[0] for r in rows):
    base = by[(m, "1x1")]
    bt = statistics.median(x[0] for x in base)
    be = statistics.median(x[1] for x in base)
    for c in ("1x1", "2x1", "1x2"):
        v = by[(m, c)]
        t = statistics.median(x[0] for x in v)
        e = statistics.median(x[1] for x in v)
        mb = statistics.median(x[2] for x in v)
        sh = statistics.median(x[3] for x in v)
        coll = f"{mb:.1f}" if c == "2x1" else "–"
        shs = f"{sh:.0f}%" if c == "2x1" else "–"
        print(f"| {m} | {names[c]} | {t:.2f} | {t / bt:.2f}× | {e:.2f} | {e / be:.2f}× | {coll} | {shs} |")
print(f"\nmedians of {len(base)} repeat(s); training options: {' '.join(sys.argv[2:]) or '(none)'}")
PY
