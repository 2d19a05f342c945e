#!/usr/bin/env python3
"""Tabulates a `bayesagg compare` folder for an ablation: validation and test metrics per method
spec (mean over seeds), and Δm% on validation and on test against a baseline row.

Selection happens on validation: the `val Δm%` column (against the `--baseline` row's validation
metrics, by default `ls`) is what a screening ranks by; test columns are reported, never used.

    bench/ablation_table.py DIR [--baseline ls] [--stl DIR/stl] > table.md
"""
import argparse
import glob
import json
import math
import os
import statistics
import sys

HIGHER = ("accuracy", "auc", "argmax_accuracy")


def higher_is_better(key):
    return key.rsplit("/", 1)[-1] in HIGHER


CALIBRATION = ("ece", "brier")


def is_calibration(key):
    return key.rsplit("/", 1)[-1] in CALIBRATION


def delta_m(metrics, base):
    """Δm% over the task metrics (calibration metrics are reported apart, never in Δm)."""
    keys = [k for k in base if k in metrics and base[k] != 0 and not is_calibration(k)]
    if not keys:
        return float("nan")
    total = 0.0
    for k in keys:
        rel = (metrics[k] - base[k]) / base[k]
        total += -rel if higher_is_better(k) else rel
    return 100.0 * total / len(keys)


# BayesAgg-MTL's variant settings, as config.json records them (absent in older runs: the
# reference's value).
VARIANT = (("posterior", "newton"), ("refresh", "epoch"), ("noise", "fixed"),
           ("weighting", "precision"), ("scale", "average"))
S_DEFAULTS = (("s-reg", 0.3), ("s-cls", 0.1), ("ls-epochs", 1), ("gamma-reg", 0.005),
              ("gamma-cls", 0.005), ("mc-samples", 1024), ("rb-samples", 16),
              ("binary-moments", "exact"), ("multiclass-moments", "rb"))


def label(folder_name, config):
    """The row label: the method; for BayesAgg-MTL, the settings in which the run differs from
    the reference (`bayesagg-reference` when none)."""
    method = config.get("method", folder_name)
    if not method.startswith("bayesagg"):
        return method
    parts = [f"{k}={config.get(k, d)}" for k, d in VARIANT + S_DEFAULTS if config.get(k, d) != d]
    return f"bayesagg[{','.join(parts)}]" if parts else "bayesagg-reference"


def load_runs(folder):
    """{row label: [summary, ...]} of the finished runs below `folder`."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(folder, "*", "seed*", "summary.json"))):
        with open(path) as f:
            s = json.load(f)
        if s.get("epochs_completed") != s.get("epochs"):
            continue
        with open(os.path.join(os.path.dirname(path), "config.json")) as f:
            config = json.load(f)
        name = label(path.split(os.sep)[-3], config)
        row = runs.setdefault(name, [])
        same_seed = [r for r in row if r["seed"] == s["seed"]]
        if not same_seed:
            row.append(s)
        elif same_seed[0]["test"] != s["test"]:
            # Two different runs under one label: a setting the label does not show differs.
            sys.exit(f"ablation_table: two different runs of seed {s['seed']} are both labelled "
                     f"{name} ({path}); add the setting that tells them apart to S_DEFAULTS")
        # else: one spec reachable by two names (the same run), counted once
    return runs


def mean_metrics(summaries, split):
    keys = summaries[0][split].keys()
    return {k: statistics.mean(s[split][k] for s in summaries) for k in keys}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--baseline", default="ls", help="row whose metrics are the Δm baseline")
    ap.add_argument("--stl", help="stl_baseline.json whose val/test metrics are the baseline")
    args = ap.parse_args()
    runs = load_runs(args.folder)
    runs.pop("stl", None)
    if not runs:
        sys.exit(f"no finished runs below {args.folder}")
    if args.stl:
        with open(args.stl) as f:
            stl = json.load(f)
        base_val, base_test, base_name = stl["val"], stl["test"], "STL"
    elif args.baseline in runs:
        base_val = mean_metrics(runs[args.baseline], "val")
        base_test = mean_metrics(runs[args.baseline], "test")
        base_name = args.baseline
    else:
        sys.exit(f"no baseline row '{args.baseline}' in {args.folder}")
    rows = []
    for name, summaries in runs.items():
        val_dm = [delta_m(s["val"], base_val) for s in summaries]
        test_dm = [delta_m(s["test"], base_test) for s in summaries]
        rows.append((statistics.mean(val_dm), name, summaries, val_dm, test_dm))
    rows.sort(key=lambda r: (math.isnan(r[0]), r[0]))
    print(f"Δm% against {base_name} (val against its val, test against its test); sorted by "
          f"val Δm (the selection criterion). Seeds per row in the last column.\n")
    print("| method | val Δm% ↓ | test Δm% ↓ | val ECE ↓ | val Brier ↓ | best epochs | seeds |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for vdm, name, summaries, val_dm, test_dm in rows:
        sd = lambda v: f" ± {statistics.stdev(v):.2f}" if len(v) > 1 else ""
        epochs = ",".join(str(s["best_epoch"]) for s in summaries)
        cal = []
        for metric in CALIBRATION:
            v = [x for s in summaries for k, x in s["val"].items()
                 if k.endswith("/" + metric) and x is not None]
            cal.append(f"{statistics.mean(v):.4f}" if v else "–")
        print(f"| {name} | {vdm:+.2f}{sd(val_dm)} | {statistics.mean(test_dm):+.2f}{sd(test_dm)} "
              f"| {cal[0]} | {cal[1]} | {epochs} | {len(summaries)} |")


if __name__ == "__main__":
    main()
