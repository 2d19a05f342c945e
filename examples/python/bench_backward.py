#!/usr/bin/env python3
"""Times one `bayesagg.BayesAgg.backward` from Python on the shapes of `bayesagg bench`'s presets.

For each preset (batch B, representation d, groups) it builds random heads, a previous epoch of
`--full-n` feature rows (observed, then `end_epoch()`), runs one backward (which builds the
full-data posteriors: not timed) and then reports the median of `--repeats` further
`backward(losses, heads, h, labels)` calls of the same epoch (the forward pass is not timed). One call is what a training step
costs beyond the forward pass: the heads' LS gradient, the aggregation and the backward of dL/dh
into h (here a leaf, so the trunk costs nothing). `bayesagg bench` reports the aggregation
(`step_ms`) and the LS backward (`ls_ms`) separately; with `--cli PATH` this script runs it too
and prints both, so `python_ms - (step_ms + ls_ms)` is the Python layer's overhead.

    PYTHONPATH=build/python /usr/bin/python3 examples/python/bench_backward.py --cli build/bayesagg
"""

import argparse
import json
import statistics
import subprocess
import time

import torch

import bayesagg

PRESETS = {  # as apps/cmd_bench.cpp
    "qm9": (120, 64, "regression:11"),
    "utkface": (128, 256, "regression:1,multiclass:2,multiclass:5"),
    "cifar": (128, 160, "binary:20"),
    "chestx": (256, 256, "binary:14"),
}


def random_labels(groups, heads, h, gen):
    out = []
    with torch.no_grad():
        for g, (w, b) in zip(groups, heads):
            logits = h @ w.T + b
            if g.type == "regression":
                out.append(logits + torch.randn(logits.shape, generator=gen))
            elif g.type == "binary":
                out.append(torch.bernoulli(torch.sigmoid(logits), generator=gen))
            else:
                out.append(torch.multinomial(torch.softmax(logits, 1), 1, generator=gen)
                           .squeeze(1))
    return out


def time_preset(name, full_n, repeats, seed):
    batch, dim, spec = PRESETS[name]
    groups = bayesagg.parse_groups(spec)
    gen = torch.Generator().manual_seed(seed)
    heads = [((torch.randn(g.head_rows, dim, generator=gen) / dim ** 0.5).requires_grad_(),
              torch.zeros(g.head_rows).requires_grad_()) for g in groups]
    full_h = torch.nn.functional.elu(torch.randn(full_n, dim, generator=gen))
    h0 = torch.nn.functional.elu(torch.randn(batch, dim, generator=gen))
    full_y = random_labels(groups, heads, full_h, gen)
    y = random_labels(groups, heads, h0, gen)
    agg = bayesagg.BayesAgg(groups, dim, seed=seed)
    agg.reserve(full_n + (repeats + 2) * batch)
    agg.observe(full_h, full_y)
    agg.end_epoch()

    def step():
        """The forward pass (not timed), then the timed backward."""
        h = h0.clone().requires_grad_()
        outputs = [h @ w.T + b for w, b in heads]
        losses = bayesagg.task_losses(groups, outputs, y)
        t0 = time.perf_counter()
        agg.backward(losses, heads, h, y)
        return (time.perf_counter() - t0) * 1e3

    step()  # builds the full-data posteriors (not timed)
    step()  # warm-up
    return statistics.median(step() for _ in range(repeats))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="qm9,utkface,cifar,chestx")
    p.add_argument("--full-n", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cli", help="path of the bayesagg CLI: run `bayesagg bench` too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bayesagg.retain_freed_memory()
    print("| preset | Python backward | bench step_ms + ls_ms | ratio |")
    print("|---|---|---|---|")
    for name in args.presets.split(","):
        py_ms = time_preset(name, args.full_n, args.repeats, args.seed)
        cli = "—"
        ratio = ""
        if args.cli:
            out = subprocess.run([args.cli, "bench", "--preset", name, "--threads",
                                  str(args.threads), "--repeats", str(args.repeats),
                                  "--full-n", str(args.full_n), "--full-repeats", "1"],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            c_ms = r["step_ms"] + r["ls_ms"]
            cli = f"{r['step_ms']:.1f} + {r['ls_ms']:.2f} = {c_ms:.1f} ms"
            ratio = f"{py_ms / c_ms:.2f}x"
        print(f"| {name} | {py_ms:.1f} ms | {cli} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
