#!/usr/bin/env python3
"""Writes a miniature CIFAR-100 in its binary format (random pixels, seeded labels) so that the
cifar-mtl benchmark and its paper network (cifar-cnn, or --trunk resnet18) can be timed without
the real data set, e.g. by bench/dist_scaling.sh.

Usage: bench/make_miniature_cifar.py DIR [train_records=1500] [test_records=300] [seed=0]
Writes DIR/cifar-100-binary/{train,test}.bin: per record 1 coarse label (0-19), 1 fine label
(0-99) and 3072 pixel bytes (R, G, B planes of 32x32), as the CIFAR-100 binary version.
"""
import os
import random
import sys


def records(n: int, rng: random.Random) -> bytes:
    out = bytearray()
    for _ in range(n):
        fine = rng.randrange(100)
        out += bytes([fine // 5, fine]) + rng.randbytes(3072)
    return bytes(out)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    n_train = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    n_test = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    if n_train < 2 or n_test < 1:
        raise ValueError(f"need at least 2 training and 1 test records, got {n_train} and {n_test}")
    rng = random.Random(seed)
    folder = os.path.join(root, "cifar-100-binary")
    os.makedirs(folder, exist_ok=True)
    for name, n in (("train.bin", n_train), ("test.bin", n_test)):
        path = os.path.join(folder, name)
        with open(path + ".tmp", "wb") as f:
            f.write(records(n, rng))
        os.replace(path + ".tmp", path)
    print(f"wrote {n_train} training and {n_test} test records to {folder}")


if __name__ == "__main__":
    main()
