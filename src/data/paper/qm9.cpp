#include "bayesagg/data/paper/qm9.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/paper/cache.h"
#include "bayesagg/data/paper/paper.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#if BAYESAGG_WITH_QM9
#include <GraphMol/FileParsers/FileParsers.h>
#include <GraphMol/GraphMol.h>
#include <GraphMol/MolOps.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <ostream>
#include <set>
#include <string_view>

namespace bayesagg {
namespace {

constexpr const char* kCsvHeader =
    "mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,"
    "h298_atom,g298_atom";
constexpr int64_t kCsvColumns = 20;
constexpr int64_t kHeaderLines = 9;  // of uncharacterized.txt

// ------------------------------------------------------------------ text helpers

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

/// A decimal integer filling `s` (after trimming); false otherwise.
bool parse_int(std::string_view s, int64_t* v) {
  s = trim(s);
  if (s.empty() || s.size() > 18) return false;
  bool neg = false;
  if (s.front() == '-' || s.front() == '+') {
    neg = s.front() == '-';
    s.remove_prefix(1);
    if (s.empty()) return false;
  }
  int64_t r = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    r = r * 10 + (c - '0');
  }
  *v = neg ? -r : r;
  return true;
}

/// A floating-point number filling `s` (after trimming); false otherwise. `finite`: also false
/// for inf and nan.
bool parse_double(std::string_view s, double* v, bool finite = true) {
  s = trim(s);
  if (s.empty() || s.size() > 64) return false;
  char buf[80];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  char* end = nullptr;
  const double r = std::strtod(buf, &end);
  if (end != buf + s.size() || (finite && !std::isfinite(r))) return false;
  *v = r;
  return true;
}

/// The largest target magnitude accepted (QM9's largest, the spatial extent r2, stays below 1e4).
constexpr double kMaxTargetMagnitude = 1e8;

/// The CSV columns (1-based, mol_id = 1) the targets are read from; others may be inf or nan.
bool is_target_column(int64_t c) {
  static const int64_t kUsed[kQM9Targets] = {5, 6, 7, 8, 10, 11, 16, 17, 18, 19, 20};
  return std::find(std::begin(kUsed), std::end(kUsed), c) != std::end(kUsed);
}

/// Lines of text[begin, end), '\n'-separated, a trailing '\r' removed.
std::vector<std::string_view> split_lines(const std::string& text, size_t begin, size_t end) {
  std::vector<std::string_view> lines;
  size_t pos = begin;
  while (pos < end) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos || nl > end) nl = end;
    std::string_view line(text.data() + pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.push_back(line);
    pos = nl + 1;
  }
  return lines;
}

std::string quoted(std::string_view s) {
  std::string q(s.substr(0, 60));
  if (s.size() > 60) q += "...";
  return "'" + q + "'";
}

// ------------------------------------------------------------------ SDF

/// One SDF block: byte range [begin, end) of the file and its first line's number (1-based).
struct BlockRange {
  size_t begin = 0, end = 0;
  int64_t first_line = 0;
};

struct Atom {
  int64_t z = 0;
  int64_t type = 0;  // 0..4: H, C, N, O, F
  double x = 0, y = 0, zc = 0;
};

struct Bond {
  int64_t a = 0, b = 0;  // 0-based
  int64_t type = 0;      // as written: 1 single, 2 double, 3 triple, 4 aromatic
};

/// A parsed (and, when included, featurised) molecule.
struct Molecule {
  std::string title;
  std::vector<Atom> atoms;
  std::vector<Bond> bonds;
  size_t text_end = 0;  // end of the `M  END` line (the mol block RDKit reads)
  std::vector<float> features;      // [n, 11]
  std::vector<int64_t> bond_types;  // 0..3 after perception
  std::string error;
};

bool element(std::string_view symbol, int64_t* z, int64_t* type) {
  static const std::pair<const char*, int64_t> kElements[5] = {
      {"H", 1}, {"C", 6}, {"N", 7}, {"O", 8}, {"F", 9}};
  for (int64_t t = 0; t < 5; ++t) {
    if (symbol == kElements[t].first) {
      *z = kElements[t].second;
      *type = t;
      return true;
    }
  }
  return false;
}

/// Checks and parses one V2000 block; returns an error message (empty on success).
std::string parse_block(const std::string& text, const BlockRange& r, const std::string& path,
                        Molecule* mol) {
  const std::vector<std::string_view> lines = split_lines(text, r.begin, r.end);
  const auto at = [&](size_t i) { return "'" + path + "', line " + std::to_string(r.first_line + static_cast<int64_t>(i)); };
  const std::string name = lines.empty() ? std::string("?") : std::string(trim(lines[0]));
  mol->title = name;
  const std::string who = ": molecule '" + name + "'";
  if (lines.size() < 4) {
    return at(0) + who + ": the block ends after " + std::to_string(lines.size()) +
           " lines, before its counts line (line 4 of a block)";
  }
  const std::string_view counts = lines[3];
  if (counts.find("V3000") != std::string_view::npos) {
    return at(3) + who + ": V3000 blocks are not supported (expected V2000)";
  }
  int64_t n_atoms = 0, n_bonds = 0;
  if (counts.size() < 6 || !parse_int(counts.substr(0, 3), &n_atoms) ||
      !parse_int(counts.substr(3, 3), &n_bonds) || n_atoms < 0 || n_bonds < 0) {
    return at(3) + who + ": bad counts line " + quoted(counts) +
           " (expected the V2000 counts 'aaabbb...V2000')";
  }
  if (n_atoms == 0) return at(3) + who + ": the counts line announces no atoms";
  const std::string announced = " (the counts line, " + at(3) + ", announces " +
                                std::to_string(n_atoms) + " atoms and " +
                                std::to_string(n_bonds) + " bonds)";
  size_t i = 4;
  for (int64_t k = 0; k < n_atoms; ++k, ++i) {
    if (i >= lines.size()) {
      return at(i) + who + ": the block ends before atom " + std::to_string(k + 1) + announced;
    }
    const std::string_view l = lines[i];
    Atom a;
    if (l.size() < 34 || !parse_double(l.substr(0, 10), &a.x) ||
        !parse_double(l.substr(10, 10), &a.y) || !parse_double(l.substr(20, 10), &a.zc)) {
      return at(i) + who + ": expected atom " + std::to_string(k + 1) + ", found " + quoted(l) +
             " — the atom count is wrong?" + announced;
    }
    const std::string_view symbol = trim(l.substr(31, 3));
    if (!element(symbol, &a.z, &a.type)) {
      return at(i) + who + ": element '" + std::string(symbol) +
             "' is not one of QM9's H, C, N, O, F";
    }
    mol->atoms.push_back(a);
  }
  for (int64_t k = 0; k < n_bonds; ++k, ++i) {
    if (i >= lines.size()) {
      return at(i) + who + ": the block ends before bond " + std::to_string(k + 1) + announced;
    }
    const std::string_view l = lines[i];
    Bond b;
    if (l.size() < 9 || !parse_int(l.substr(0, 3), &b.a) || !parse_int(l.substr(3, 3), &b.b) ||
        !parse_int(l.substr(6, 3), &b.type)) {
      return at(i) + who + ": expected bond " + std::to_string(k + 1) + ", found " + quoted(l) +
             " — the atom or bond count is wrong?" + announced;
    }
    if (b.a < 1 || b.a > n_atoms || b.b < 1 || b.b > n_atoms || b.a == b.b) {
      return at(i) + who + ": bond " + std::to_string(k + 1) + " joins atoms " +
             std::to_string(b.a) + " and " + std::to_string(b.b) + ", not two of the " +
             std::to_string(n_atoms) + " atoms";
    }
    if (b.type < 1 || b.type > 4) {
      return at(i) + who + ": bond " + std::to_string(k + 1) + " has type " +
             std::to_string(b.type) + " (expected 1 single, 2 double, 3 triple or 4 aromatic)";
    }
    --b.a;
    --b.b;
    mol->bonds.push_back(b);
  }
  for (; i < lines.size(); ++i) {
    const std::string_view l = lines[i];
    if (trim(l) == "M  END" || l.substr(0, 6) == "M  END") {
      mol->text_end = static_cast<size_t>(l.data() + l.size() - text.data());
      return "";
    }
    if (l.substr(0, 3) != "M  ") {
      return at(i) + who + ": unexpected line " + quoted(l) +
             " before 'M  END' — the atom or bond count is wrong?" + announced;
    }
  }
  return at(lines.size() - 1) + who + ": the block has no 'M  END' line";
}

/// RDKit's aromaticity and hybridisation, then the node features and bond types.
std::string featurise(const std::string& text, const BlockRange& r, const std::string& path,
                      Molecule* mol) {
  const int64_t n = static_cast<int64_t>(mol->atoms.size());
  const std::string where = "'" + path + "', line " + std::to_string(r.first_line) +
                            ": molecule '" + mol->title + "'";
#if !BAYESAGG_WITH_QM9
  (void)n;
  return where + ": this bayesagg was built without RDKit";
#else
  std::unique_ptr<RDKit::RWMol> rd;
  try {
    rd.reset(RDKit::MolBlockToMol(text.substr(r.begin, mol->text_end - r.begin),
                                  /*sanitize=*/false, /*removeHs=*/false, /*strictParsing=*/true));
    if (!rd) return where + ": RDKit could not read the block";
    if (static_cast<int64_t>(rd->getNumAtoms()) != n ||
        rd->getNumBonds() != mol->bonds.size()) {
      return where + ": RDKit read " + std::to_string(rd->getNumAtoms()) + " atoms and " +
             std::to_string(rd->getNumBonds()) + " bonds, the block has " + std::to_string(n) +
             " and " + std::to_string(mol->bonds.size());
    }
    rd->updatePropertyCache(/*strict=*/false);
    unsigned int failed = 0;
    RDKit::MolOps::sanitizeMol(
        *rd, failed,
        RDKit::MolOps::SANITIZE_SYMMRINGS | RDKit::MolOps::SANITIZE_KEKULIZE |
            RDKit::MolOps::SANITIZE_SETAROMATICITY | RDKit::MolOps::SANITIZE_SETCONJUGATION |
            RDKit::MolOps::SANITIZE_SETHYBRIDIZATION);
  } catch (const std::exception& e) {
    return where + ": RDKit: " + e.what();
  }

  std::vector<int64_t> h_neighbours(static_cast<size_t>(n), 0);
  for (const Bond& b : mol->bonds) {
    if (mol->atoms[static_cast<size_t>(b.b)].z == 1) ++h_neighbours[static_cast<size_t>(b.a)];
    if (mol->atoms[static_cast<size_t>(b.a)].z == 1) ++h_neighbours[static_cast<size_t>(b.b)];
  }
  mol->features.assign(static_cast<size_t>(n * kQM9NodeFeatures), 0.0f);
  for (int64_t k = 0; k < n; ++k) {
    const RDKit::Atom* a = rd->getAtomWithIdx(static_cast<unsigned int>(k));
    const Atom& mine = mol->atoms[static_cast<size_t>(k)];
    if (a->getAtomicNum() != mine.z) {
      return where + ": RDKit reads atom " + std::to_string(k + 1) + " as element " +
             std::to_string(a->getAtomicNum()) + ", not " + std::to_string(mine.z);
    }
    float* f = mol->features.data() + k * kQM9NodeFeatures;
    f[mine.type] = 1.0f;
    f[5] = static_cast<float>(mine.z);
    f[6] = a->getIsAromatic() ? 1.0f : 0.0f;
    const auto hyb = a->getHybridization();
    f[7] = hyb == RDKit::Atom::SP ? 1.0f : 0.0f;
    f[8] = hyb == RDKit::Atom::SP2 ? 1.0f : 0.0f;
    f[9] = hyb == RDKit::Atom::SP3 ? 1.0f : 0.0f;
    f[10] = static_cast<float>(h_neighbours[static_cast<size_t>(k)]);
  }
  mol->bond_types.resize(mol->bonds.size());
  for (size_t k = 0; k < mol->bonds.size(); ++k) {
    const RDKit::Bond* b = rd->getBondWithIdx(static_cast<unsigned int>(k));
    const int64_t e0 = b->getBeginAtomIdx(), e1 = b->getEndAtomIdx();
    const int64_t m0 = mol->bonds[k].a, m1 = mol->bonds[k].b;
    if (std::min(e0, e1) != std::min(m0, m1) || std::max(e0, e1) != std::max(m0, m1)) {
      return where + ": RDKit reordered the bonds";
    }
    switch (b->getBondType()) {
      case RDKit::Bond::SINGLE: mol->bond_types[k] = 0; break;
      case RDKit::Bond::DOUBLE: mol->bond_types[k] = 1; break;
      case RDKit::Bond::TRIPLE: mol->bond_types[k] = 2; break;
      case RDKit::Bond::AROMATIC: mol->bond_types[k] = 3; break;
      default:
        return where + ": bond " + std::to_string(k + 1) + " has an RDKit bond type other than "
               "single, double, triple or aromatic";
    }
  }
  return "";
#endif
}

// ------------------------------------------------------------------ CSV

struct CsvTable {
  std::vector<std::string> ids;
  std::vector<int64_t> lines;
  std::vector<double> values;  // [rows, 19]: the columns after mol_id
};

CsvTable parse_csv(const std::string& text, const std::string& path) {
  CsvTable t;
  const std::vector<std::string_view> lines = split_lines(text, 0, text.size());
  bool header_seen = false;
  int64_t blank = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const int64_t line_no = static_cast<int64_t>(i) + 1;
    const std::string_view l = lines[i];
    if (trim(l).empty()) {
      if (blank == 0) blank = line_no;
      continue;
    }
    TORCH_CHECK(blank == 0, "qm9: '", path, "', line ", blank, ": empty line inside the file");
    if (!header_seen) {
      TORCH_CHECK(l == kCsvHeader, "qm9: '", path, "', line ", line_no, ": expected the header '",
                  kCsvHeader, "', found ", quoted(l));
      header_seen = true;
      continue;
    }
    std::vector<std::string_view> fields;
    size_t start = 0;
    while (true) {
      const size_t comma = l.find(',', start);
      fields.push_back(l.substr(start, comma == std::string_view::npos ? std::string_view::npos
                                                                       : comma - start));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    TORCH_CHECK(static_cast<int64_t>(fields.size()) == kCsvColumns, "qm9: '", path, "', line ",
                line_no, ": ", fields.size(), " columns, expected ", kCsvColumns, " (",
                kCsvHeader, ")");
    t.ids.emplace_back(trim(fields[0]));
    t.lines.push_back(line_no);
    for (int64_t c = 1; c < kCsvColumns; ++c) {
      double v = 0;
      const bool target = is_target_column(c + 1);
      TORCH_CHECK(parse_double(fields[static_cast<size_t>(c)], &v, target), "qm9: '", path,
                  "', line ", line_no, ", column ", c + 1, ": ",
                  quoted(fields[static_cast<size_t>(c)]),
                  target ? " is not a finite number" : " is not a number");
      // Larger magnitudes overflow the standardisation (variance in float64) or float32.
      TORCH_CHECK(!target || std::abs(v) <= kMaxTargetMagnitude, "qm9: '", path, "', line ",
                  line_no, ", column ", c + 1, ": ", quoted(fields[static_cast<size_t>(c)]),
                  " is outside +-", kMaxTargetMagnitude,
                  "; no QM9 property comes near it (a damaged file?)");
      t.values.push_back(v);
    }
  }
  TORCH_CHECK(header_seen, "qm9: '", path, "' is empty (expected the header '", kCsvHeader, "')");
  return t;
}

std::vector<BlockRange> split_blocks(const std::string& text) {
  std::vector<BlockRange> blocks;
  size_t pos = 0, block_begin = 0;
  int64_t line_no = 0, block_line = 1;
  bool content = false;  // the current block has a non-blank line
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view line(text.data() + pos, nl - pos);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == "$$$$") {
      blocks.push_back({block_begin, pos, block_line});
      block_begin = nl + 1;
      block_line = line_no + 1;
      content = false;
    } else if (!trim(line).empty()) {
      content = true;
    }
    pos = nl + 1;
  }
  if (content) blocks.push_back({block_begin, text.size(), block_line});
  return blocks;
}

std::vector<cache::TensorSpec> molecule_specs() {
  return {{"gdb_index", at::kLong, {-1}},
          {"atom_offsets", at::kLong, {-1}},
          {"node_features", at::kFloat, {-1, kQM9NodeFeatures}},
          {"positions", at::kFloat, {-1, 3}},
          {"bond_offsets", at::kLong, {-1}},
          {"bonds", at::kLong, {-1, 2}},
          {"bond_types", at::kLong, {-1}},
          {"targets", at::kDouble, {-1, kQM9Targets}}};
}

void check_molecules(const QM9Molecules& m) {
  const int64_t n = m.size();
  TORCH_CHECK(m.atom_offsets.numel() == n + 1 && m.bond_offsets.numel() == n + 1 &&
                  m.targets.size(0) == n,
              "qm9: inconsistent molecule tables");
  const int64_t atoms = m.atom_offsets[n].item<int64_t>(), bonds = m.bond_offsets[n].item<int64_t>();
  TORCH_CHECK(m.node_features.size(0) == atoms && m.positions.size(0) == atoms &&
                  m.bonds.size(0) == bonds && m.bond_types.size(0) == bonds,
              "qm9: inconsistent molecule tables");
}

}  // namespace

// ------------------------------------------------------------------ options and names

void QM9Options::validate() const {
  TORCH_CHECK(val_size() >= 1, "qm9: val_size must be >= 1, got ", val_size());
  TORCH_CHECK(test_size() >= 1, "qm9: test_size must be >= 1, got ", test_size());
}

std::ostream& operator<<(std::ostream& os, const QM9Options& o) {
  return os << "QM9Options(data_dir=" << o.data_dir() << ", seed=" << o.seed()
            << ", val_size=" << o.val_size() << ", test_size=" << o.test_size()
            << ", cache_dir=" << o.cache_dir() << ", use_cache=" << o.use_cache() << ")";
}

const std::vector<std::string>& qm9_task_names() {
  static const std::vector<std::string> names = {"mu",  "alpha", "homo", "lumo", "r2", "zpve",
                                                 "u0",  "u298",  "h298", "g298", "cv"};
  return names;
}

const std::vector<std::string>& qm9_units() {
  static const std::vector<std::string> units = {"D",  "a0^3", "eV", "eV", "a0^2",       "eV",
                                                 "eV", "eV",   "eV", "eV", "cal/(mol K)"};
  return units;
}

at::Tensor qm9_report_scale() {
  return at::tensor({1.0, 1.0, 1000.0, 1000.0, 1.0, 1000.0, 1000.0, 1000.0, 1000.0, 1000.0, 1.0},
                    at::kDouble);
}

const std::vector<std::string>& qm9_report_units() {
  static const std::vector<std::string> units = {"D",   "a0^3", "meV", "meV", "a0^2",       "meV",
                                                 "meV", "meV",  "meV", "meV", "cal/(mol K)"};
  return units;
}

QM9Files find_qm9_files(const std::string& data_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  TORCH_CHECK(!data_dir.empty(), "qm9: no data folder given (--data-dir: the folder of gdb9.sdf, "
                                 "gdb9.sdf.csv and uncharacterized.txt)");
  const fs::path root(data_dir);
  for (const fs::path& d : {root, root / "raw", root / "qm9"}) {
    if (!fs::is_regular_file(d / "gdb9.sdf", ec)) continue;
    QM9Files f{(d / "gdb9.sdf").string(), (d / "gdb9.sdf.csv").string(),
               (d / "uncharacterized.txt").string()};
    TORCH_CHECK(fs::is_regular_file(f.csv, ec), "qm9: '", f.csv, "' is missing (it comes with "
                                                               "gdb9.sdf in the QM9 archive)");
    TORCH_CHECK(fs::is_regular_file(f.uncharacterized, ec), "qm9: '", f.uncharacterized,
                "' is missing (the QM9 list of the 3054 uncharacterized molecules)");
    return f;
  }
  TORCH_CHECK(false, "qm9: gdb9.sdf not found in '", data_dir, "', '", (root / "raw").string(),
              "' or '", (root / "qm9").string(),
              "' (expected gdb9.sdf, gdb9.sdf.csv and uncharacterized.txt)");
}

std::vector<int64_t> parse_qm9_uncharacterized(const std::string& text, const std::string& path) {
  const std::vector<std::string_view> lines = split_lines(text, 0, text.size());
  TORCH_CHECK(static_cast<int64_t>(lines.size()) >= kHeaderLines, "qm9: '", path, "' has ",
              lines.size(), " lines, fewer than its ", kHeaderLines, " header lines");
  std::vector<int64_t> out;
  std::set<int64_t> seen;
  int64_t closing = 0;
  for (size_t i = static_cast<size_t>(kHeaderLines); i < lines.size(); ++i) {
    const int64_t line_no = static_cast<int64_t>(i) + 1;
    const std::string_view l = trim(lines[i]);
    if (l.empty()) continue;
    const size_t space = l.find_first_of(" \t");
    int64_t index = 0;
    if (!parse_int(l.substr(0, space), &index)) {
      if (closing == 0) closing = line_no;
      continue;
    }
    TORCH_CHECK(closing == 0, "qm9: '", path, "', line ", line_no,
                ": an index line after the closing line (line ", closing, ")");
    TORCH_CHECK(index >= 1, "qm9: '", path, "', line ", line_no, ": index ", index,
                " is not a 1-based molecule index");
    TORCH_CHECK(seen.insert(index).second, "qm9: '", path, "', line ", line_no, ": index ", index,
                " is listed twice");
    out.push_back(index);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// ------------------------------------------------------------------ parsing

QM9Molecules parse_qm9(const std::string& sdf_text, const std::string& csv_text,
                       const std::string& uncharacterized_text, const QM9Files& files,
                       std::vector<std::string>* notes) {
  check_paper_benchmark_built("qm9");
  const std::vector<int64_t> excluded =
      parse_qm9_uncharacterized(uncharacterized_text, files.uncharacterized);
  const CsvTable csv = parse_csv(csv_text, files.csv);
  const std::vector<BlockRange> blocks = split_blocks(sdf_text);
  const int64_t total = static_cast<int64_t>(blocks.size());
  TORCH_CHECK(total > 0, "qm9: '", files.sdf, "' holds no molecule");
  TORCH_CHECK(static_cast<int64_t>(csv.ids.size()) == total, "qm9: '", files.sdf, "' has ", total,
              " molecules but '", files.csv, "' has ", csv.ids.size(), " rows");
  std::vector<char> keep(static_cast<size_t>(total), 1);
  for (int64_t e : excluded) {
    TORCH_CHECK(e <= total, "qm9: '", files.uncharacterized, "' excludes molecule ", e, ", but '",
                files.sdf, "' has only ", total);
    keep[static_cast<size_t>(e - 1)] = 0;
  }

  std::vector<Molecule> mols(static_cast<size_t>(total));
  at::parallel_for(0, total, 64, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      Molecule& m = mols[static_cast<size_t>(k)];
      const BlockRange& r = blocks[static_cast<size_t>(k)];
      m.error = parse_block(sdf_text, r, files.sdf, &m);
      if (m.error.empty() && keep[static_cast<size_t>(k)]) {
        m.error = featurise(sdf_text, r, files.sdf, &m);
      }
    }
  });
  for (int64_t k = 0; k < total; ++k) {
    const Molecule& m = mols[static_cast<size_t>(k)];
    TORCH_CHECK(m.error.empty(), "qm9: ", m.error);
    TORCH_CHECK(m.title == csv.ids[static_cast<size_t>(k)], "qm9: molecule ", k + 1, " is '",
                m.title, "' in '", files.sdf, "' (line ", blocks[static_cast<size_t>(k)].first_line,
                ") but '", csv.ids[static_cast<size_t>(k)], "' in '", files.csv, "' (line ",
                csv.lines[static_cast<size_t>(k)], ")");
  }

  int64_t kept = 0, atoms = 0, bonds = 0;
  for (int64_t k = 0; k < total; ++k) {
    if (!keep[static_cast<size_t>(k)]) continue;
    ++kept;
    atoms += static_cast<int64_t>(mols[static_cast<size_t>(k)].atoms.size());
    bonds += static_cast<int64_t>(mols[static_cast<size_t>(k)].bonds.size());
  }
  TORCH_CHECK(kept > 0, "qm9: every molecule is excluded by '", files.uncharacterized, "'");
  QM9Molecules out;
  out.gdb_index = at::empty({kept}, at::kLong);
  out.atom_offsets = at::empty({kept + 1}, at::kLong);
  out.bond_offsets = at::empty({kept + 1}, at::kLong);
  out.node_features = at::empty({atoms, kQM9NodeFeatures}, at::kFloat);
  out.positions = at::empty({atoms, 3}, at::kFloat);
  out.bonds = at::empty({bonds, 2}, at::kLong);
  out.bond_types = at::empty({bonds}, at::kLong);
  out.targets = at::empty({kept, kQM9Targets}, at::kDouble);
  int64_t* gi = out.gdb_index.data_ptr<int64_t>();
  int64_t* ao = out.atom_offsets.data_ptr<int64_t>();
  int64_t* bo = out.bond_offsets.data_ptr<int64_t>();
  float* nf = out.node_features.data_ptr<float>();
  float* pos = out.positions.data_ptr<float>();
  int64_t* bd = out.bonds.data_ptr<int64_t>();
  int64_t* bt = out.bond_types.data_ptr<int64_t>();
  double* tg = out.targets.data_ptr<double>();
  // CSV value columns (after mol_id): A0 B1 C2 mu3 alpha4 homo5 lumo6 gap7 r2_8 zpve9 u0_10
  // u298_11 h298_12 g298_13 cv14 u0_atom15 u298_atom16 h298_atom17 g298_atom18
  struct Column {
    int64_t index;
    double factor;
  };
  static const Column kTargets[kQM9Targets] = {
      {3, 1.0},  {4, 1.0},  {5, kHartreeToEv},     {6, kHartreeToEv},     {8, 1.0},
      {9, kHartreeToEv},    {15, kKcalPerMolToEv}, {16, kKcalPerMolToEv}, {17, kKcalPerMolToEv},
      {18, kKcalPerMolToEv}, {14, 1.0}};
  int64_t m = 0, a_off = 0, b_off = 0;
  for (int64_t k = 0; k < total; ++k) {
    if (!keep[static_cast<size_t>(k)]) continue;
    const Molecule& mol = mols[static_cast<size_t>(k)];
    gi[m] = k + 1;
    ao[m] = a_off;
    bo[m] = b_off;
    std::copy(mol.features.begin(), mol.features.end(), nf + a_off * kQM9NodeFeatures);
    for (size_t i = 0; i < mol.atoms.size(); ++i) {
      pos[(a_off + static_cast<int64_t>(i)) * 3 + 0] = static_cast<float>(mol.atoms[i].x);
      pos[(a_off + static_cast<int64_t>(i)) * 3 + 1] = static_cast<float>(mol.atoms[i].y);
      pos[(a_off + static_cast<int64_t>(i)) * 3 + 2] = static_cast<float>(mol.atoms[i].zc);
    }
    for (size_t i = 0; i < mol.bonds.size(); ++i) {
      bd[(b_off + static_cast<int64_t>(i)) * 2 + 0] = mol.bonds[i].a;
      bd[(b_off + static_cast<int64_t>(i)) * 2 + 1] = mol.bonds[i].b;
      bt[b_off + static_cast<int64_t>(i)] = mol.bond_types[i];
    }
    const double* row = csv.values.data() + k * (kCsvColumns - 1);
    for (int64_t t = 0; t < kQM9Targets; ++t) {
      tg[m * kQM9Targets + t] = row[kTargets[t].index] * kTargets[t].factor;
    }
    a_off += static_cast<int64_t>(mol.atoms.size());
    b_off += static_cast<int64_t>(mol.bonds.size());
    ++m;
  }
  ao[kept] = a_off;
  bo[kept] = b_off;
  if (notes) {
    notes->push_back("qm9: " + std::to_string(total) + " molecules in '" + files.sdf + "', " +
                     std::to_string(total - kept) + " excluded by '" + files.uncharacterized +
                     "', " + std::to_string(kept) + " kept");
  }
  return out;
}

QM9Molecules load_qm9(const QM9Options& options, std::vector<std::string>* notes) {
  check_paper_benchmark_built("qm9");
  const QM9Files files = find_qm9_files(options.data_dir());
  const std::string sdf = read_file(files.sdf);
  const std::string csv = read_file(files.csv);
  const std::string unc = read_file(files.uncharacterized);
  if (!options.use_cache()) return parse_qm9(sdf, csv, unc, files, notes);

  const uint64_t key = cache::KeyHasher()
                           .str("qm9 parser v1")
                           .i64(static_cast<int64_t>(cache::checksum_bytes(sdf.data(), sdf.size())))
                           .i64(static_cast<int64_t>(cache::checksum_bytes(csv.data(), csv.size())))
                           .i64(static_cast<int64_t>(cache::checksum_bytes(unc.data(), unc.size())))
                           .digest();
  const std::string path = cache::cache_path(options.cache_dir(), "qm9", key);
  const auto specs = molecule_specs();
  std::vector<at::Tensor> t;
  std::string reason;
  if (cache::open_cache(path, key, specs, &t, &reason, /*map=*/false)) {
    QM9Molecules m{t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]};
    check_molecules(m);
    if (notes) {
      notes->push_back("qm9: reused the parsed-molecule cache '" + path + "' (" +
                       std::to_string(m.size()) + " molecules)");
    }
    return m;
  }
  QM9Molecules m = parse_qm9(sdf, csv, unc, files, notes);
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(s.name);
  cache::write_cache(path, key, names,
                     {m.gdb_index, m.atom_offsets, m.node_features, m.positions, m.bond_offsets,
                      m.bonds, m.bond_types, m.targets});
  if (notes) notes->push_back("qm9: built the parsed-molecule cache '" + path + "' (" + reason + ")");
  return m;
}

// ------------------------------------------------------------------ graphs

GraphBatch build_graph_batch(const QM9Molecules& molecules, const at::Tensor& rows) {
  TORCH_CHECK(rows.defined() && rows.dim() == 1 && rows.scalar_type() == at::kLong,
              "build_graph_batch: expected rows [B] int64");
  const int64_t b = rows.size(0), m_total = molecules.size();
  const at::Tensor r = rows.contiguous();
  const int64_t* rp = r.data_ptr<int64_t>();
  const int64_t* ao = molecules.atom_offsets.data_ptr<int64_t>();
  const int64_t* bo = molecules.bond_offsets.data_ptr<int64_t>();
  int64_t n_nodes = 0, n_edges = 0;
  for (int64_t k = 0; k < b; ++k) {
    TORCH_CHECK(rp[k] >= 0 && rp[k] < m_total, "build_graph_batch: row ", rp[k],
                " out of range of ", m_total, " molecules");
    const int64_t n = ao[rp[k] + 1] - ao[rp[k]];
    n_nodes += n;
    n_edges += n * (n - 1);
  }
  GraphBatch g;
  g.num_graphs = b;
  g.node_features = at::empty({n_nodes, kQM9NodeFeatures}, at::kFloat);
  g.positions = at::empty({n_nodes, 3}, at::kFloat);
  g.graph_index = at::empty({n_nodes}, at::kLong);
  g.num_nodes = at::empty({b}, at::kLong);
  g.edge_index = at::empty({2, n_edges}, at::kLong);
  g.edge_features = at::zeros({n_edges, kQM9EdgeFeatures}, at::kFloat);
  const float* nf = molecules.node_features.data_ptr<float>();
  const float* pos = molecules.positions.data_ptr<float>();
  const int64_t* bonds = molecules.bonds.data_ptr<int64_t>();
  const int64_t* btypes = molecules.bond_types.data_ptr<int64_t>();
  float* onf = g.node_features.data_ptr<float>();
  float* opos = g.positions.data_ptr<float>();
  int64_t* ogi = g.graph_index.data_ptr<int64_t>();
  int64_t* onn = g.num_nodes.data_ptr<int64_t>();
  int64_t* src = g.edge_index.data_ptr<int64_t>();
  int64_t* dst = src + n_edges;
  float* ef = g.edge_features.data_ptr<float>();
  int64_t node = 0, edge = 0;
  std::vector<int64_t> type;
  for (int64_t k = 0; k < b; ++k) {
    const int64_t m = rp[k], a0 = ao[m], n = ao[m + 1] - a0;
    onn[k] = n;
    std::copy(nf + a0 * kQM9NodeFeatures, nf + (a0 + n) * kQM9NodeFeatures,
              onf + node * kQM9NodeFeatures);
    std::copy(pos + a0 * 3, pos + (a0 + n) * 3, opos + node * 3);
    std::fill(ogi + node, ogi + node + n, k);
    type.assign(static_cast<size_t>(n * n), -1);
    for (int64_t q = bo[m]; q < bo[m + 1]; ++q) {
      const int64_t i = bonds[2 * q], j = bonds[2 * q + 1];
      type[static_cast<size_t>(i * n + j)] = type[static_cast<size_t>(j * n + i)] = btypes[q];
    }
    const float* p = pos + a0 * 3;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        if (i == j) continue;
        src[edge] = node + i;
        dst[edge] = node + j;
        float* e = ef + edge * kQM9EdgeFeatures;
        const int64_t t = type[static_cast<size_t>(i * n + j)];
        if (t >= 0) e[t] = 1.0f;
        const double dx = static_cast<double>(p[3 * i]) - p[3 * j];
        const double dy = static_cast<double>(p[3 * i + 1]) - p[3 * j + 1];
        const double dz = static_cast<double>(p[3 * i + 2]) - p[3 * j + 2];
        e[4] = static_cast<float>(std::sqrt(dx * dx + dy * dy + dz * dz));
        ++edge;
      }
    }
    node += n;
  }
  return g;
}

QM9Dataset::QM9Dataset(std::shared_ptr<const QM9Molecules> molecules, at::Tensor index,
                       at::Tensor labels_)
    : molecules_(std::move(molecules)), index_(std::move(index)) {
  TORCH_CHECK(molecules_ != nullptr, "QM9Dataset: no molecules");
  TORCH_CHECK(index_.defined() && index_.dim() == 1 && index_.scalar_type() == at::kLong,
              "QM9Dataset: expected index [N] int64");
  TORCH_CHECK(labels_.defined() && labels_.dim() == 2 && labels_.size(0) == index_.size(0) &&
                  labels_.size(1) == kQM9Targets,
              "QM9Dataset: expected labels [", index_.size(0), ", ", kQM9Targets, "]");
  labels = {std::move(labels_)};
}

GraphBatch QM9Dataset::batch(const at::Tensor& indices) const {
  TORCH_CHECK(molecules_ != nullptr, "QM9Dataset::batch: empty data set");
  TORCH_CHECK(indices.defined() && indices.dim() == 1 && indices.scalar_type() == at::kLong,
              "QM9Dataset::batch: expected indices [B] int64");
  GraphBatch g = build_graph_batch(*molecules_, index_.index_select(0, indices));
  g.labels = {labels[0].index_select(0, indices)};
  return g;
}

at::Tensor QM9Benchmark::to_original(size_t group, const at::Tensor& values) const {
  TORCH_CHECK(group < groups.size(), "benchmark '", name, "': no group ", group);
  if (group >= target_scaling.size()) return values;
  return target_scaling[group].to_original(values);
}

void QM9Benchmark::validate() const {
  const std::string prefix = "benchmark '" + name + "'";
  TORCH_CHECK(groups.size() == 1 && groups[0].type == GroupType::regression &&
                  groups[0].outputs == kQM9Targets,
              prefix, ": expected one group regression:11");
  TORCH_CHECK(static_cast<int64_t>(task_names.size()) == kQM9Targets, prefix, ": ",
              task_names.size(), " task names for 11 tasks");
  TORCH_CHECK(target_scaling.size() == 1 && target_scaling[0].defined() &&
                  target_scaling[0].mean.numel() == kQM9Targets &&
                  target_scaling[0].std.numel() == kQM9Targets &&
                  (target_scaling[0].std > 0).all().item<bool>(),
              prefix, ": bad target scaling");
  for (const auto& [split, what] : {std::pair<const QM9Dataset*, const char*>{&train, "train"},
                                    {&val, "val"},
                                    {&test, "test"}}) {
    TORCH_CHECK(split->labels.size() == 1, prefix, " ", what, ": expected one label tensor");
    check_labels(groups[0], split->labels[0], split->size(),
                 prefix + " " + what + " labels of group 0 (regression:11)");
    if (split->size() > 0) {
      TORCH_CHECK(split->index().min().item<int64_t>() >= 0 &&
                      split->index().max().item<int64_t>() < split->molecules().size(),
                  prefix, " ", what, ": molecule index out of range");
    }
  }
}

std::ostream& operator<<(std::ostream& os, const QM9Benchmark& b) {
  os << b.name << ": ";
  for (size_t g = 0; g < b.groups.size(); ++g) os << (g ? "," : "") << b.groups[g].str();
  return os << "; graphs (node features " << kQM9NodeFeatures << ", edge features "
            << kQM9EdgeFeatures << "); train " << b.train.size() << ", val " << b.val.size()
            << ", test " << b.test.size() << "; seed " << b.seed;
}

QM9Benchmark build_qm9_benchmark(std::shared_ptr<const QM9Molecules> molecules,
                                 const QM9Options& options) {
  options.validate();
  TORCH_CHECK(molecules != nullptr, "qm9: no molecules");
  const int64_t m = molecules->size();
  TORCH_CHECK(options.test_size() + options.val_size() < m, "qm9: test_size (",
              options.test_size(), ") + val_size (", options.val_size(),
              ") leave no training molecule of the ", m);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed());
  const at::Tensor perm = at::randperm(m, gen, at::kLong);
  const int64_t nt = options.test_size(), nv = options.val_size();
  const at::Tensor test_idx = std::get<0>(perm.narrow(0, 0, nt).sort());
  const at::Tensor val_idx = std::get<0>(perm.narrow(0, nt, nv).sort());
  const at::Tensor train_idx = std::get<0>(perm.narrow(0, nt + nv, m - nt - nv).sort());

  QM9Benchmark b;
  b.seed = options.seed();
  b.groups = {TaskGroup(GroupType::regression, kQM9Targets, "targets")};
  b.task_names = qm9_task_names();
  const at::Tensor y_train = molecules->targets.index_select(0, train_idx);
  TargetScaling s;
  s.mean = y_train.mean(0);
  s.std = y_train.std(0, /*unbiased=*/false);
  const at::Tensor constant = s.std <= 0;
  if (constant.any().item<bool>()) {
    s.std = at::where(constant, at::ones_like(s.std), s.std);
    b.notes.push_back("qm9: some targets are constant over the training molecules; their std is "
                      "set to 1");
  }
  b.target_scaling = {s};
  const auto split = [&](const at::Tensor& idx) {
    const at::Tensor y = molecules->targets.index_select(0, idx);
    return QM9Dataset(molecules, idx, ((y - s.mean) / s.std).to(at::kFloat));
  };
  b.train = split(train_idx);
  b.val = split(val_idx);
  b.test = split(test_idx);
  return b;
}

QM9Benchmark make_qm9_benchmark(const QM9Options& options) {
  options.validate();
  std::vector<std::string> notes;
  auto molecules = std::make_shared<const QM9Molecules>(load_qm9(options, &notes));
  QM9Benchmark b = build_qm9_benchmark(molecules, options);
  notes.insert(notes.end(), b.notes.begin(), b.notes.end());
  b.notes = notes;
  b.validate();
  return b;
}

}  // namespace bayesagg
