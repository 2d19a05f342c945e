#!/usr/bin/env python3
"""Largest drop of a task's validation accuracy below its best so far, after the warm-up epochs,
per run (issue 10's stability check: no drop above 3 points).

    bench/stability.py RUN_DIR [RUN_DIR ...] [--after 1]
"""
import argparse
import csv
import os


def drops(run, after):
    series = {}
    with open(os.path.join(run, "metrics.csv")) as f:
        for row in csv.DictReader(f):
            if row["split"] == "val" and row["metric"] == "accuracy":
                series.setdefault(row["task"], []).append((int(row["epoch"]), float(row["value"])))
    worst = {}
    for task, values in series.items():
        best, drop, at = float("-inf"), 0.0, None
        for epoch, v in sorted(values):
            best = max(best, v)
            if epoch > after and best - v > drop:
                drop, at = best - v, epoch
        worst[task] = (drop, at)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--after", type=int, default=1, help="warm-up epochs to skip (default 1)")
    args = ap.parse_args()
    print("| run | largest drop below the best so far (points, epoch) | above 3 points |")
    print("|---|---|---|")
    for run in args.runs:
        w = drops(run, args.after)
        cells = ", ".join(f"{t} {100 * d:.2f} (e{a})" if a else f"{t} 0" for t, (d, a) in w.items())
        print(f"| {run} | {cells} | {'yes' if any(d > 0.03 for d, _ in w.values()) else 'no'} |")


if __name__ == "__main__":
    main()
