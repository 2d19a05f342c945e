#pragma once
// Miniature paper data sets in their original formats (CIFAR-100 binary, UTKFace JPEGs,
// ChestX-ray14 PNGs + split CSVs, QM9's gdb9.sdf / gdb9.sdf.csv / uncharacterized.txt), shared by
// the readers' tests (tests/paper) and the end-to-end training tests (tests/apps, tests/train).

#include "bayesagg/core/files.h"
#include "bayesagg/data/paper/image_io.h"

#include <ATen/ATen.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace bayesagg::testing::paper_data {

// ------------------------------------------------------------------ CIFAR-100 binary

/// Pixel `p` (0..3071, plane-major: R, G, B planes of 32×32) of record `r` of file `f`.
inline uint8_t cifar_pixel(int f, int r, int p) {
  return static_cast<uint8_t>((f * 101 + r * 7 + p * 3) % 256);
}
inline int cifar_coarse_of(int f, int r) { return (r * 3 + f) % 20; }
inline int cifar_fine_of(int f, int r) { return (r * 11 + f) % 100; }

/// A CIFAR-100 binary file of `n` records, written byte by byte as the format says.
inline std::string cifar_bytes(int f, int n) {
  std::string s;
  for (int r = 0; r < n; ++r) {
    s.push_back(static_cast<char>(cifar_coarse_of(f, r)));
    s.push_back(static_cast<char>(cifar_fine_of(f, r)));
    for (int p = 0; p < 3072; ++p) s.push_back(static_cast<char>(cifar_pixel(f, r, p)));
  }
  return s;
}

/// `root/cifar-100-binary/{train,test}.bin` with `n_train` and `n_test` records; returns the
/// folder.
inline std::filesystem::path write_cifar(const std::filesystem::path& root, int n_train,
                                         int n_test) {
  const auto dir = root / "cifar-100-binary";
  std::filesystem::create_directories(dir);
  write_file_atomic((dir / "train.bin").string(), cifar_bytes(0, n_train));
  write_file_atomic((dir / "test.bin").string(), cifar_bytes(1, n_test));
  return dir;
}

// ------------------------------------------------------------------ UTKFace

struct Face {
  int age, gender, race;
};

/// 16 labelled faces: age 30 ×10, age 5 ×3, age 70 ×2, age 1 ×1. The spec's split gives
/// train 12, validation 1, test 3.
inline std::vector<Face> faces() {
  std::vector<Face> f;
  for (int i = 0; i < 10; ++i) f.push_back({30, i % 2, i % 5});
  for (int i = 0; i < 3; ++i) f.push_back({5, 1, 4 - i});
  f.push_back({70, 0, 2});
  f.push_back({70, 1, 3});
  f.push_back({1, 0, 0});
  return f;
}

inline std::array<int, 3> face_colour(const Face& f, int i) {
  return {(f.age * 3 + i * 11) % 256, f.gender * 120 + 60, f.race * 50 + 10};
}

inline std::string face_name(const Face& f, int i) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%d_%d_%d_2017011617%07d.jpg%s", f.age, f.gender, f.race, i,
                i == 3 ? "" : ".chip.jpg");  // one plain .jpg
  return buf;
}

/// Writes the faces as flat-colour 20×20 JPEGs into `root/UTKFace`, plus two badly named JPEGs
/// and a text file. Returns the folder. `patterned`: each face gets a diagonal ramp added to its
/// colour (so that crops and flips change the pixels; the colours are then not exact).
inline std::filesystem::path write_faces(const std::filesystem::path& root,
                                         bool patterned = false) {
  const auto dir = root / "UTKFace";
  std::filesystem::create_directories(dir);
  const auto fs_ = faces();
  for (int i = 0; i < static_cast<int>(fs_.size()); ++i) {
    at::Tensor img = at::empty({3, 20, 20}, at::kByte);
    const auto c = face_colour(fs_[static_cast<size_t>(i)], i);
    for (int k = 0; k < 3; ++k) img[k].fill_(c[static_cast<size_t>(k)]);
    if (patterned) {
      const at::Tensor ramp = (at::arange(20, at::kInt).unsqueeze(1) * 6 +
                               at::arange(20, at::kInt).unsqueeze(0) * 3);
      img = ((img.to(at::kInt) + ramp.unsqueeze(0)) % 256).to(at::kByte).contiguous();
    }
    write_jpeg((dir / face_name(fs_[static_cast<size_t>(i)], i)).string(), img, 100);
  }
  const at::Tensor grey = at::full({3, 20, 20}, 128, at::kByte);
  write_jpeg((dir / "39_1_20170116174525125.jpg.chip.jpg").string(), grey, 90);  // no race
  write_jpeg((dir / "61_3_2_20170109150557335.jpg.chip.jpg").string(), grey, 90);  // gender 3
  write_file_atomic((dir / "notes.txt").string(), "not an image");
  return dir;
}

// ------------------------------------------------------------------ ChestX-ray14

inline const char* chestx_header() {
  return "Image Index,Atelectasis,Cardiomegaly,Consolidation,Edema,Effusion,Emphysema,Fibrosis,"
         "Hernia,Infiltration,Mass,Nodule,Pleural_Thickening,Pneumonia,Pneumothorax";
}

inline std::string chestx_image_name(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08d_%03d.png", 100 + i, i % 3);
  return buf;
}

/// Label k of image i: a pattern with a few positives.
inline int chestx_label(int i, int k) { return (i * 5 + k * 3) % 7 == 0 ? 1 : 0; }

inline std::string chestx_row(int i) {
  std::string r = chestx_image_name(i);
  for (int k = 0; k < 14; ++k) r += chestx_label(i, k) ? ",1" : ",0";
  return r;
}

/// The stored greyscale image of i (8×8).
inline at::Tensor chestx_grey_of(int i) {
  return ((at::arange(64, at::kLong) * (i + 3) + i * 17) % 256).to(at::kByte).reshape({1, 8, 8});
}

/// A split CSV listing `items`.
inline void write_chestx_csv(const std::filesystem::path& file, const std::vector<int>& items,
                             bool crlf = false) {
  std::string text = std::string(chestx_header()) + (crlf ? "\r\n" : "\n");
  for (int i : items) text += chestx_row(i) + (crlf ? "\r\n" : "\n");
  write_file_atomic(file.string(), text);
}

/// Writes `n` 8×8 greyscale PNGs into `images` (image 5 as RGB with equal channels, image 7 as
/// 16-bit), and, when `split` is not empty, train.csv (items 0..3), validation.csv (4, 5) and
/// test.csv (6, 7) into `split`.
inline void write_chestx(const std::filesystem::path& images, const std::filesystem::path& split,
                         int n = 8) {
  std::filesystem::create_directories(images);
  for (int i = 0; i < n; ++i) {
    const std::string path = (images / chestx_image_name(i)).string();
    if (i == 5) {
      write_png(path, chestx_grey_of(i).expand({3, 8, 8}).contiguous());
    } else if (i == 7) {
      write_png(path, chestx_grey_of(i).to(at::kInt) * 257);
    } else {
      write_png(path, chestx_grey_of(i));
    }
  }
  if (split.empty()) return;
  std::filesystem::create_directories(split);
  write_chestx_csv(split / "train.csv", {0, 1, 2, 3});
  write_chestx_csv(split / "validation.csv", {4, 5});
  write_chestx_csv(split / "test.csv", {6, 7});
}

// ------------------------------------------------------------------ QM9

struct QAtom {
  const char* element;
  double x, y, z;
};
struct QBond {
  int a, b, type;
};
struct Mol {
  std::string title;
  std::vector<QAtom> atoms;
  std::vector<QBond> bonds;
};

/// A V2000 block as RDKit writes QM9's (title, program line, comment, counts, atoms, bonds,
/// `M  END`, `$$$$`). `atom_count` overrides the counts line's atom count when >= 0.
inline std::string sdf_block(const Mol& m, int atom_count = -1) {
  char buf[128];
  std::string s = m.title + "\n     RDKit          3D\n\n";
  std::snprintf(buf, sizeof buf, "%3d%3d  0  0  0  0  0  0  0  0999 V2000\n",
                atom_count >= 0 ? atom_count : static_cast<int>(m.atoms.size()),
                static_cast<int>(m.bonds.size()));
  s += buf;
  for (const QAtom& a : m.atoms) {
    std::snprintf(buf, sizeof buf, "%10.4f%10.4f%10.4f %-3s 0  0  0  0  0  0  0  0  0  0  0  0\n",
                  a.x, a.y, a.z, a.element);
    s += buf;
  }
  for (const QBond& b : m.bonds) {
    std::snprintf(buf, sizeof buf, "%3d%3d%3d  0\n", b.a, b.b, b.type);
    s += buf;
  }
  return s + "M  END\n$$$$\n";
}

/// gdb_1 methane, gdb_2 ammonia, gdb_3 water (excluded), gdb_4 formaldehyde (C=O),
/// gdb_5 benzene (Kekulé bonds in the file), gdb_6 hydrogen fluoride.
inline std::vector<Mol> molecules() {
  std::vector<Mol> m;
  const double t = 0.6291;
  m.push_back({"gdb_1",
               {{"C", 0, 0, 0}, {"H", t, t, t}, {"H", -t, -t, t}, {"H", -t, t, -t}, {"H", t, -t, -t}},
               {{1, 2, 1}, {1, 3, 1}, {1, 4, 1}, {1, 5, 1}}});
  m.push_back({"gdb_2",
               {{"N", 0, 0, 0.1}, {"H", 0.94, 0, -0.27}, {"H", -0.47, 0.814, -0.27}, {"H", -0.47, -0.814, -0.27}},
               {{1, 2, 1}, {1, 3, 1}, {1, 4, 1}}});
  m.push_back({"gdb_3", {{"O", 0, 0, 0.12}, {"H", 0.76, 0, -0.47}, {"H", -0.76, 0, -0.47}}, {{1, 2, 1}, {1, 3, 1}}});
  m.push_back({"gdb_4",
               {{"C", 0, 0, 0}, {"O", 0, 0, 1.21}, {"H", 0.94, 0, -0.54}, {"H", -0.94, 0, -0.54}},
               {{1, 2, 2}, {1, 3, 1}, {1, 4, 1}}});
  Mol benzene{"gdb_5", {}, {}};
  for (int k = 0; k < 6; ++k) {
    const double a = k * M_PI / 3;
    benzene.atoms.push_back({"C", 1.39 * std::cos(a), 1.39 * std::sin(a), 0.01 * k});
  }
  for (int k = 0; k < 6; ++k) {
    const double a = k * M_PI / 3;
    benzene.atoms.push_back({"H", 2.47 * std::cos(a), 2.47 * std::sin(a), 0.01 * k});
  }
  for (int k = 0; k < 6; ++k) benzene.bonds.push_back({k + 1, (k + 1) % 6 + 1, k % 2 == 0 ? 2 : 1});
  for (int k = 0; k < 6; ++k) benzene.bonds.push_back({k + 1, k + 7, 1});
  m.push_back(benzene);
  m.push_back({"gdb_6", {{"F", 0, 0, 0}, {"H", 0, 0, 0.92}}, {{1, 2, 1}}});
  return m;
}

/// The 19 numbers after mol_id of row r (0-based): A, B, C, mu, alpha, homo, lumo, gap, r2,
/// zpve, u0, u298, h298, g298, cv, u0_atom, u298_atom, h298_atom, g298_atom.
inline std::vector<double> csv_values(int r) {
  return {1.5 + r, 2.5, 3.5, 0.1 * r + 0.05, 10.0 + r, -0.3 - 0.01 * r, 0.05 + 0.01 * r, 0.35,
          20.0 + 2 * r, 0.02 + 0.001 * r, -40.5 - r, -40.4 - r, -40.3 - r, -40.6 - r, 6.0 + 0.5 * r,
          -400.0 - 10 * r, -401.0 - 10 * r, -402.0 - 10 * r, -380.0 - 10 * r};
}

inline std::string csv_row(const std::string& id, int r) {
  std::string s = id;
  char buf[32];
  for (double v : csv_values(r)) {
    std::snprintf(buf, sizeof buf, ",%.6f", v);
    s += buf;
  }
  return s;
}

inline const char* qm9_csv_header() {
  return "mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,"
         "h298_atom,g298_atom";
}

inline std::string uncharacterized(const std::vector<int>& indices) {
  std::string s;
  for (int i = 0; i < 9; ++i) s += " header line " + std::to_string(i + 1) + "\n";
  for (int i : indices) s += "  " + std::to_string(i) + "    123456   -0.1  0.2  0.3\n";
  return s + "-------------------------------\n";
}

/// gdb9.sdf, gdb9.sdf.csv (the `molecules()`, CSV row k = molecule k) and uncharacterized.txt
/// (excluding gdb_3) in `dir`: 5 molecules are kept.
inline void write_qm9(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::string sdf, csv = std::string(qm9_csv_header()) + "\n";
  const auto mols = molecules();
  for (size_t k = 0; k < mols.size(); ++k) {
    sdf += sdf_block(mols[k]);
    csv += csv_row(mols[k].title, static_cast<int>(k)) + "\n";
  }
  write_file_atomic((dir / "gdb9.sdf").string(), sdf);
  write_file_atomic((dir / "gdb9.sdf.csv").string(), csv);
  write_file_atomic((dir / "uncharacterized.txt").string(), uncharacterized({3}));
}

}  // namespace bayesagg::testing::paper_data
