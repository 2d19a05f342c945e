#!/usr/bin/env python3
"""Writes the seeds of the fuzz targets added for issue 13 (fuzz/seeds/TARGET/) from the same
generated files the readers' tests use (tests/paper/paper_data.h, mirrored here byte for byte).
Run from the repository root: /usr/bin/python3 fuzz/make_seeds.py"""
import hashlib
import math
import os
import struct

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---------------------------------------------------------------- CIFAR-100 binary
def cifar_bytes(f, n):
    out = bytearray()
    for r in range(n):
        out += bytes([(r * 3 + f) % 20, (r * 11 + f) % 100])
        out += bytes((f * 101 + r * 7 + p * 3) % 256 for p in range(3072))
    return bytes(out)


# ---------------------------------------------------------------- ChestX-ray14 CSV
CHESTX_HEADER = ("Image Index,Atelectasis,Cardiomegaly,Consolidation,Edema,Effusion,Emphysema,"
                 "Fibrosis,Hernia,Infiltration,Mass,Nodule,Pleural_Thickening,Pneumonia,"
                 "Pneumothorax")


def chestx_row(i):
    return "%08d_%03d.png" % (100 + i, i % 3) + "".join(
        ",1" if (i * 5 + k * 3) % 7 == 0 else ",0" for k in range(14))


def chestx_csv(items, crlf=False):
    nl = "\r\n" if crlf else "\n"
    return CHESTX_HEADER + nl + "".join(chestx_row(i) + nl for i in items)


# ---------------------------------------------------------------- QM9
def sdf_block(title, atoms, bonds):
    s = title + "\n     RDKit          3D\n\n"
    s += "%3d%3d  0  0  0  0  0  0  0  0999 V2000\n" % (len(atoms), len(bonds))
    for el, x, y, z in atoms:
        s += "%10.4f%10.4f%10.4f %-3s 0  0  0  0  0  0  0  0  0  0  0  0\n" % (x, y, z, el)
    for a, b, t in bonds:
        s += "%3d%3d%3d  0\n" % (a, b, t)
    return s + "M  END\n$$$$\n"


def molecules():
    t = 0.6291
    m = [("gdb_1", [("C", 0, 0, 0), ("H", t, t, t), ("H", -t, -t, t), ("H", -t, t, -t),
                    ("H", t, -t, -t)], [(1, 2, 1), (1, 3, 1), (1, 4, 1), (1, 5, 1)]),
         ("gdb_2", [("N", 0, 0, 0.1), ("H", 0.94, 0, -0.27), ("H", -0.47, 0.814, -0.27),
                    ("H", -0.47, -0.814, -0.27)], [(1, 2, 1), (1, 3, 1), (1, 4, 1)]),
         ("gdb_3", [("O", 0, 0, 0.12), ("H", 0.76, 0, -0.47), ("H", -0.76, 0, -0.47)],
          [(1, 2, 1), (1, 3, 1)]),
         ("gdb_4", [("C", 0, 0, 0), ("O", 0, 0, 1.21), ("H", 0.94, 0, -0.54),
                    ("H", -0.94, 0, -0.54)], [(1, 2, 2), (1, 3, 1), (1, 4, 1)])]
    atoms = [("C", 1.39 * math.cos(k * math.pi / 3), 1.39 * math.sin(k * math.pi / 3), 0.01 * k)
             for k in range(6)]
    atoms += [("H", 2.47 * math.cos(k * math.pi / 3), 2.47 * math.sin(k * math.pi / 3), 0.01 * k)
              for k in range(6)]
    bonds = [(k + 1, (k + 1) % 6 + 1, 2 if k % 2 == 0 else 1) for k in range(6)]
    bonds += [(k + 1, k + 7, 1) for k in range(6)]
    m.append(("gdb_5", atoms, bonds))
    m.append(("gdb_6", [("F", 0, 0, 0), ("H", 0, 0, 0.92)], [(1, 2, 1)]))
    return m


QM9_HEADER = ("mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,"
              "u298_atom,h298_atom,g298_atom")


def csv_values(r):
    return [1.5 + r, 2.5, 3.5, 0.1 * r + 0.05, 10.0 + r, -0.3 - 0.01 * r, 0.05 + 0.01 * r, 0.35,
            20.0 + 2 * r, 0.02 + 0.001 * r, -40.5 - r, -40.4 - r, -40.3 - r, -40.6 - r,
            6.0 + 0.5 * r, -400.0 - 10 * r, -401.0 - 10 * r, -402.0 - 10 * r, -380.0 - 10 * r]


def uncharacterized(indices):
    s = "".join(" header line %d\n" % (i + 1) for i in range(9))
    s += "".join("  %d    123456   -0.1  0.2  0.3\n" % i for i in indices)
    return s + "-------------------------------\n"


def qm9_input(mols, excluded):
    sdf = "".join(sdf_block(*m) for m in mols)
    csv = QM9_HEADER + "\n" + "".join(
        m[0] + "".join(",%.6f" % v for v in csv_values(k)) + "\n" for k, m in enumerate(mols))
    return sdf + "\n@@@@\n" + csv + "\n@@@@\n" + uncharacterized(excluded)


# ---------------------------------------------------------------- checksum trailer
def seal(payload):
    return (payload + hashlib.sha256(payload).digest() + struct.pack("<Q", len(payload)) +
            b"bayesagg-sha256\n")


def main():
    put("cifar", "two_records.bin", cifar_bytes(0, 2))
    put("cifar", "three_records.bin", cifar_bytes(1, 3))
    put("chestx14_csv", "train.csv", chestx_csv([0, 1, 2, 3]))
    put("chestx14_csv", "validation_crlf.csv", chestx_csv([4, 5], crlf=True))
    put("chestx14_csv", "header_only.csv", CHESTX_HEADER)
    for name in ["26_1_0_20170116171748226.jpg.chip.jpg", "1_0_4_20161221193016140.jpg",
                 "39_1_20170116174525125.jpg.chip.jpg", "61_3_2_20170109150557335.jpg.chip.jpg",
                 "116_0_3_2017.jpg"]:
        put("utkface_name", name.split(".")[0], name)
    put("qm9", "six_molecules.txt", qm9_input(molecules(), [3]))
    put("qm9", "benzene.txt", qm9_input(molecules()[4:5], []))
    # checkpoint: first byte = layout (see checkpoint_fuzz.cpp); the rest a file.
    put("checkpoint", "garbage.bin", b"\x00" + b"PK\x03\x04 not a checkpoint")
    put("checkpoint", "damaged_with_prev.bin", b"\x03" + seal(b"PK\x03\x04 archive")[:-3] + b"xyz")
    put("checkpoint", "truncated_trailer.bin", b"\x01" + seal(b"archive")[:40])


if __name__ == "__main__":
    main()
