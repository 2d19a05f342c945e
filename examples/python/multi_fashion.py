#!/usr/bin/env python3
"""Multi-fashion with BayesAgg-MTL (or any other method) in a plain PyTorch training loop.

Your model, your optimiser, your data; bayesagg only computes the gradients. The benchmark is the
one `bayesagg train --benchmark multi-fashion` trains on (docs/data.md, "multi-fashion"):

* Fashion-MNIST from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/*.gz),
  read with gzip + numpy; the last 10 000 training items are the validation split;
* each item i is paired with a partner drawn uniformly from the *other* items of its split
  (`r = randint(0, n - 1)`, `partner = r + (r >= i)`, train, then validation, then test, from one
  generator seeded with --data-seed); on a 36x36 zero canvas the item's own image sits at
  [0:28, 0:28] and the partner's at [6:34, 6:34] (overlap: pixel-wise max), and the canvas is
  resized to 28x28 by nearest neighbour (source pixel floor(i*36/28));
* two 10-class tasks: the class of the left (own) image and of the right (partner's) image.

The network is the CLI's `cnn` trunk (docs/training.md, "Models": Conv(1->10, 5), ReLU,
MaxPool 2, Conv(10->20, 5), ReLU, MaxPool 2, Linear(320, 64), ELU) with one nn.Linear(64, 10) head
per task, trained as the CLI does: Adam lr 1e-3, x0.1 at 60% and 80% of the epochs, heads'
gradient norm clipped to 10, BayesAgg-MTL after --ls-epochs linear-scalarisation warm-up epochs.
(PyTorch's own initialisation and shuffling: the numbers match `bayesagg train` within seed
noise, not bit for bit.)

    python3 examples/python/multi_fashion.py                       # BayesAgg-MTL, 10 epochs
    python3 examples/python/multi_fashion.py --method nashmtl      # any of bayesagg.method_names()
    python3 examples/python/multi_fashion.py --epochs 1 --train-subset 2000   # a quick check
"""

import argparse
import gzip
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import bayesagg


# ---------------------------------------------------------------------------- data


def read_idx(path):
    """An IDX file (optionally gzipped) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_fashion_mnist(data_dir):
    def read(name):
        for suffix in (".gz", ""):
            path = os.path.join(data_dir, name + suffix)
            if os.path.exists(path):
                return torch.from_numpy(read_idx(path).copy())
        raise FileNotFoundError(f"{name}[.gz] not found in {data_dir} "
                                "(apt-get install dataset-fashion-mnist, or pass --data-dir)")
    return (read("train-images-idx3-ubyte"), read("train-labels-idx1-ubyte").long(),
            read("t10k-images-idx3-ubyte"), read("t10k-labels-idx1-ubyte").long())


def draw_partners(n, generator):
    r = torch.randint(0, n - 1, (n,), generator=generator)
    return r + (r >= torch.arange(n)).long()


def compose_pairs(images, partners):
    """[N, 28, 28] uint8 and partners [N] -> [N, 1, 28, 28] float32 in [0, 1]."""
    x = images.float() / 255
    canvas = torch.zeros(len(images), 36, 36)
    canvas[:, 0:28, 0:28] = x
    canvas[:, 6:34, 6:34] = torch.maximum(canvas[:, 6:34, 6:34], x[partners])
    src = torch.div(torch.arange(28) * 36, 28, rounding_mode="floor")
    return canvas[:, src][:, :, src].unsqueeze(1).contiguous()


def multi_fashion(data_dir, data_seed, val_size=10000):
    """Returns {split: (inputs [N, 1, 28, 28], [left labels [N], right labels [N]])}."""
    train_x, train_y, test_x, test_y = load_fashion_mnist(data_dir)
    n_train = len(train_x) - val_size
    raw = {"train": (train_x[:n_train], train_y[:n_train]),
           "val": (train_x[n_train:], train_y[n_train:]),
           "test": (test_x, test_y)}
    gen = torch.Generator().manual_seed(data_seed)
    out = {}
    for split in ("train", "val", "test"):
        images, labels = raw[split]
        partners = draw_partners(len(images), gen)
        out[split] = (compose_pairs(images, partners), [labels, labels[partners]])
    return out


# ---------------------------------------------------------------------------- model


class MultiFashionNet(nn.Module):
    """The CLI's `cnn` trunk and one linear head per task."""

    def __init__(self, dim=64, classes=(10, 10)):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 10, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(10, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(320, dim), nn.ELU())
        self.heads = nn.ModuleList(nn.Linear(dim, k) for k in classes)

    def forward(self, x):
        h = self.trunk(x)
        return h, [head(h) for head in self.heads]


@torch.no_grad()
def accuracies(model, split, batch_size=1024):
    x, labels = split
    model.eval()
    correct = torch.zeros(len(labels))
    for start in range(0, len(x), batch_size):
        _, outputs = model(x[start:start + batch_size])
        for t, (out, y) in enumerate(zip(outputs, labels)):
            correct[t] += (out.argmax(1) == y[start:start + batch_size]).sum()
    model.train()
    return (correct / len(x)).tolist()


# ---------------------------------------------------------------------------- training


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="bayesagg",
                   help="bayesagg (bayesagg.BayesAgg), or any of bayesagg.method_names() "
                        "through bayesagg.method (default: bayesagg)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ls-epochs", type=int, default=1,
                   help="BayesAgg-MTL: linear-scalarisation warm-up epochs (default: 1)")
    p.add_argument("--seed", type=int, default=0, help="model, shuffling and method seed")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the pairs")
    p.add_argument("--train-subset", type=int, default=0, help="first N training items, 0 = all")
    p.add_argument("--threads", type=int, default=0, help="torch threads, 0 = torch's default")
    p.add_argument("--head-clip", type=float, default=10.0)
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    args = p.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    bayesagg.retain_freed_memory()  # as the CLI does: large temporaries without page faults
    torch.manual_seed(args.seed)

    t0 = time.perf_counter()
    data = multi_fashion(args.data_dir, args.data_seed)
    train_x, train_labels = data["train"]
    if args.train_subset > 0:
        train_x = train_x[:args.train_subset]
        train_labels = [y[:args.train_subset] for y in train_labels]
    n = len(train_x)
    print(f"multi-fashion: {n} train, {len(data['val'][0])} val, {len(data['test'][0])} test "
          f"items ({time.perf_counter() - t0:.1f} s)")

    groups = bayesagg.parse_groups("multiclass:10,multiclass:10")
    model = MultiFashionNet()
    head_params = list(model.heads.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    milestones = [max(1, round(0.6 * args.epochs)), max(1, round(0.8 * args.epochs))]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)

    if args.method == "bayesagg":
        agg = bayesagg.BayesAgg(groups, dim=64, seed=args.seed)
        agg.reserve(n)
        print(f"method: {agg!r}, after {args.ls_epochs} LS warm-up epoch(s)")
    else:
        m = bayesagg.method(args.method, groups, dim=64, seed=args.seed)
        m.reserve(n)
        print(f"method: {m!r}")

    shuffle = torch.Generator().manual_seed(args.seed)
    best = None
    for epoch in range(args.epochs):
        start = time.perf_counter()
        loss_sum = torch.zeros(2)
        order = torch.randperm(n, generator=shuffle)
        for s in range(math.ceil(n / args.batch_size)):
            idx = order[s * args.batch_size:(s + 1) * args.batch_size]
            x, labels = train_x[idx], [y[idx] for y in train_labels]
            opt.zero_grad()
            h, outputs = model(x)
            losses = torch.stack([F.cross_entropy(o, y) for o, y in zip(outputs, labels)])
            if args.method == "bayesagg":
                if epoch < args.ls_epochs:
                    losses.sum().backward()          # warm-up: linear scalarisation,
                    agg.observe(h.detach(), labels)  # collecting the features
                else:
                    agg.backward(losses, model.heads, h, labels)
            else:
                m.backward(losses, representation=h, heads=model.heads, labels=labels,
                           shared_parameters=model.trunk.parameters())
            if args.head_clip > 0:
                nn.utils.clip_grad_norm_(head_params, args.head_clip)
            opt.step()
            if args.method != "bayesagg" and "losses_after_step" in m.needs:
                with torch.no_grad():
                    _, outputs = model(x)
                    m.after_step(torch.stack([F.cross_entropy(o, y)
                                              for o, y in zip(outputs, labels)]))
            loss_sum += losses.detach() * len(idx)
        if args.method == "bayesagg":
            agg.end_epoch()
        else:
            m.end_epoch()
        sched.step()
        train_seconds = time.perf_counter() - start
        val, test = accuracies(model, data["val"]), accuracies(model, data["test"])
        if best is None or sum(val) > sum(best[1]):
            best = (epoch + 1, val, test)
        loss = (loss_sum / n).tolist()
        print(f"epoch {epoch + 1}/{args.epochs}: train loss left {loss[0]:.4f} right "
              f"{loss[1]:.4f} | val acc left {val[0]:.4f} right {val[1]:.4f} | test acc left "
              f"{test[0]:.4f} right {test[1]:.4f} | {train_seconds:.1f} s", flush=True)
    epoch, val, test = best
    print(f"best epoch {epoch} (validation mean accuracy {sum(val) / 2:.4f}): test accuracy "
          f"left {test[0]:.4f} right {test[1]:.4f}")


if __name__ == "__main__":
    main()
