#!/usr/bin/env python3
"""Per-epoch medians of a run's per-step diagnostics (steps.csv): the evidence behind the
ablation's conclusions (trunk gradient norm, dL/dh norm, cosine with the LS gradient of h,
batch-posterior shift from the heads).

    bench/step_evidence.py RUN_DIR [RUN_DIR ...] [--columns trunk_grad_norm,ls_cosine]
"""
import argparse
import csv
import os
import statistics

DEFAULT = "trunk_grad_norm,dL_dh_norm,ls_cosine,batch_shift_0,batch_shift_1,full_data_shift_0"


def per_epoch(path, columns):
    rows = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            e = int(row["epoch"])
            for c in columns:
                v = row.get(c, "")
                if v not in ("", None):
                    rows.setdefault(e, {}).setdefault(c, []).append(float(v))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--columns", default=DEFAULT)
    args = ap.parse_args()
    columns = args.columns.split(",")
    for run in args.runs:
        rows = per_epoch(os.path.join(run, "steps.csv"), columns)
        present = [c for c in columns if any(c in r for r in rows.values())]
        print(f"\n{run}\n")
        print("| epoch | " + " | ".join(present) + " |")
        print("|---:|" + "---:|" * len(present))
        for e in sorted(rows):
            cells = [f"{statistics.median(rows[e][c]):.4g}" if c in rows[e] else "–" for c in present]
            print(f"| {e} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
