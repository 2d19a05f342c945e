#include "bayesagg/data/paper/qm9.h"

#include "bayesagg/core/files.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "paper_data.h"
#include "test_util.h"

#include <cmath>
#include <filesystem>
#include <random>
#include <string>

using namespace bayesagg;
namespace fs = std::filesystem;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;

namespace {

using namespace bayesagg::testing::paper_data;

struct Files {
  TempDir tmp;
  fs::path dir;
  explicit Files(const std::string& sub = "") {
    dir = sub.empty() ? tmp.path : tmp.path / sub;
    fs::create_directories(dir);
    std::string sdf, csv = std::string(qm9_csv_header()) + "\n";
    const auto mols = molecules();
    for (size_t k = 0; k < mols.size(); ++k) {
      sdf += sdf_block(mols[k]);
      csv += csv_row(mols[k].title, static_cast<int>(k)) + "\n";
    }
    write("gdb9.sdf", sdf);
    write("gdb9.sdf.csv", csv);
    write("uncharacterized.txt", uncharacterized({3}));
  }
  void write(const std::string& name, const std::string& text) const {
    write_file_atomic((dir / name).string(), text);
  }
  std::string path(const std::string& name) const { return (dir / name).string(); }
  QM9Options options() const {
    return QM9Options().data_dir(tmp.path.string()).val_size(1).test_size(1).use_cache(false);
  }
};

std::vector<float> row_of(const at::Tensor& t, int64_t i) {
  const at::Tensor r = t[i].contiguous();
  return std::vector<float>(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
}

using F = std::vector<float>;

}  // namespace

TEST(QM9, ParsesHandCheckedMoleculesIntoNodeFeatures) {
  Files f;
  std::vector<std::string> notes;
  const QM9Molecules m = load_qm9(f.options(), &notes);
  ASSERT_EQ(m.size(), 5);
  EXPECT_TRUE(at::equal(m.gdb_index, at::tensor({1, 2, 4, 5, 6}, at::kLong)));
  EXPECT_TRUE(at::equal(m.atom_offsets, at::tensor({0, 5, 9, 13, 25, 27}, at::kLong)));
  EXPECT_TRUE(at::equal(m.bond_offsets, at::tensor({0, 4, 7, 10, 22, 23}, at::kLong)));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_TRUE(contains(notes[0], "6 molecules") && contains(notes[0], "1 excluded") &&
              contains(notes[0], "5 kept"))
      << notes[0];

  //            H  C  N  O  F  Z  arom sp sp2 sp3 nH
  const F h = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0};
  // methane
  EXPECT_EQ(row_of(m.node_features, 0), (F{0, 1, 0, 0, 0, 6, 0, 0, 0, 1, 4}));
  for (int i = 1; i < 5; ++i) EXPECT_EQ(row_of(m.node_features, i), h);
  // ammonia
  EXPECT_EQ(row_of(m.node_features, 5), (F{0, 0, 1, 0, 0, 7, 0, 0, 0, 1, 3}));
  EXPECT_EQ(row_of(m.node_features, 6), h);
  // formaldehyde: C and O are sp2
  EXPECT_EQ(row_of(m.node_features, 9), (F{0, 1, 0, 0, 0, 6, 0, 0, 1, 0, 2}));
  EXPECT_EQ(row_of(m.node_features, 10), (F{0, 0, 0, 1, 0, 8, 0, 0, 1, 0, 0}));
  EXPECT_EQ(row_of(m.node_features, 11), h);
  // benzene: aromatic sp2 carbons with one hydrogen each
  for (int i = 13; i < 19; ++i) EXPECT_EQ(row_of(m.node_features, i), (F{0, 1, 0, 0, 0, 6, 1, 0, 1, 0, 1}));
  for (int i = 19; i < 25; ++i) EXPECT_EQ(row_of(m.node_features, i), h);
  // hydrogen fluoride: F has 4 electron domains (sp3)
  EXPECT_EQ(row_of(m.node_features, 25), (F{0, 0, 0, 0, 1, 9, 0, 0, 0, 1, 1}));
  EXPECT_EQ(row_of(m.node_features, 26), h);

  // bond types after perception: formaldehyde's C=O double, benzene's ring aromatic
  EXPECT_TRUE(at::equal(m.bond_types.narrow(0, 7, 3), at::tensor({1, 0, 0}, at::kLong)));
  EXPECT_TRUE(at::equal(m.bond_types.narrow(0, 10, 6), at::full({6}, 3, at::kLong)));
  EXPECT_TRUE(at::equal(m.bond_types.narrow(0, 16, 6), at::zeros({6}, at::kLong)));
  EXPECT_TRUE(at::equal(m.bonds[7], at::tensor({0, 1}, at::kLong)));
  EXPECT_NEAR(m.positions[10][2].item<float>(), 1.21f, 1e-6);
}

TEST(QM9, ConvertsTargetsToTheSpecUnitsInOrder) {
  Files f;
  const QM9Molecules m = load_qm9(f.options());
  const int rows[5] = {0, 1, 3, 4, 5};  // CSV rows of the kept molecules
  for (int k = 0; k < 5; ++k) {
    const auto v = csv_values(rows[k]);
    const double expected[11] = {v[3],         v[4],         v[5] * 27.211386, v[6] * 27.211386,
                                 v[8],         v[9] * 27.211386, v[15] * 0.0433641, v[16] * 0.0433641,
                                 v[17] * 0.0433641, v[18] * 0.0433641, v[14]};
    for (int t = 0; t < 11; ++t) {
      EXPECT_NEAR(m.targets[k][t].item<double>(), expected[t], 1e-9) << "molecule " << k << " target " << t;
    }
  }
  // hand-checked: molecule gdb_1's ε_HOMO -0.3 Ha = -8.1634158 eV, U0 -400 kcal/mol = -17.34564 eV
  EXPECT_NEAR(m.targets[0][2].item<double>(), -8.1634158, 1e-7);
  EXPECT_NEAR(m.targets[0][6].item<double>(), -17.34564, 1e-9);
  EXPECT_EQ(qm9_task_names(), (std::vector<std::string>{"mu", "alpha", "homo", "lumo", "r2", "zpve",
                                                        "u0", "u298", "h298", "g298", "cv"}));
  EXPECT_EQ(qm9_report_scale()[2].item<double>(), 1000.0);
  EXPECT_EQ(qm9_report_units()[6], "meV");
}

TEST(QM9, BuildsCompleteGraphsWithBondAndDistanceEdgeFeatures) {
  Files f;
  const QM9Molecules m = load_qm9(f.options());
  // formaldehyde (row 2) then methane (row 0)
  const GraphBatch g = build_graph_batch(m, at::tensor({2, 0}, at::kLong));
  EXPECT_EQ(g.num_graphs, 2);
  EXPECT_TRUE(at::equal(g.num_nodes, at::tensor({4, 5}, at::kLong)));
  EXPECT_TRUE(at::equal(g.graph_index, at::tensor({0, 0, 0, 0, 1, 1, 1, 1, 1}, at::kLong)));
  ASSERT_EQ(g.edge_index.sizes(), (c10::IntArrayRef{2, 12 + 20}));
  ASSERT_EQ(g.edge_features.sizes(), (c10::IntArrayRef{32, 5}));
  EXPECT_TRUE(at::equal(g.node_features.narrow(0, 0, 4), m.node_features.narrow(0, 9, 4)));
  EXPECT_TRUE(at::equal(g.node_features.narrow(0, 4, 5), m.node_features.narrow(0, 0, 5)));
  // edges of formaldehyde: i -> j for i != j, in order
  const auto mols = molecules();
  int64_t e = 0;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      if (i == j) continue;
      EXPECT_EQ(g.edge_index[0][e].item<int64_t>(), i);
      EXPECT_EQ(g.edge_index[1][e].item<int64_t>(), j);
      const QAtom& a = mols[3].atoms[static_cast<size_t>(i)];
      const QAtom& b = mols[3].atoms[static_cast<size_t>(j)];
      const double d = std::sqrt((a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y) + (a.z - b.z) * (a.z - b.z));
      F expect = {0, 0, 0, 0, static_cast<float>(d)};
      if ((i == 0 && j == 1) || (i == 1 && j == 0)) expect[1] = 1;  // C=O double
      if ((i == 0 && j >= 2) || (j == 0 && i >= 2)) expect[0] = 1;  // C-H single
      const F got = row_of(g.edge_features, e);
      for (int k = 0; k < 4; ++k) EXPECT_EQ(got[k], expect[k]) << i << "->" << j;
      EXPECT_NEAR(got[4], expect[4], 1e-5) << i << "->" << j;
      ++e;
    }
  }
  // methane's edges follow, offset by formaldehyde's 4 nodes; C-H at 1.0896 Å, H-H at 1.7794 Å
  EXPECT_EQ(g.edge_index[0][12].item<int64_t>(), 4);
  EXPECT_EQ(g.edge_index[1][12].item<int64_t>(), 5);
  EXPECT_NEAR(g.edge_features[12][4].item<float>(), 0.6291 * std::sqrt(3.0), 1e-5);
  EXPECT_EQ(g.edge_features[12][0].item<float>(), 1.0f);
  EXPECT_EQ(g.edge_index[0][16].item<int64_t>(), 5);  // H1 -> C, H1 -> H2, ...
  EXPECT_EQ(g.edge_index[1][17].item<int64_t>(), 6);
  EXPECT_NEAR(g.edge_features[17][4].item<float>(), 0.6291 * std::sqrt(8.0), 1e-5);
  EXPECT_EQ(g.edge_features.narrow(0, 17, 1).narrow(1, 0, 4).sum().item<float>(), 0.0f);
  // benzene: ring bonds aromatic, both directions
  const GraphBatch bz = build_graph_batch(m, at::tensor({3}, at::kLong));
  EXPECT_EQ(bz.edge_features[0][3].item<float>(), 1.0f);   // C1 -> C2
  EXPECT_EQ(bz.edge_features[11 * 1 + 0][3].item<float>(), 1.0f);  // C2 -> C1 (row 1 starts at 11)
  EXPECT_EQ(bz.edge_features[1].narrow(0, 0, 4).sum().item<float>(), 0.0f);  // C1 -> C3 unbonded
}

TEST(QM9, SplitsShuffledAndStandardisesWithTrainingStatistics) {
  Files f;
  const QM9Benchmark b = make_qm9_benchmark(f.options().seed(4));
  EXPECT_EQ(b.name, "qm9");
  ASSERT_EQ(b.groups.size(), 1u);
  EXPECT_EQ(b.groups[0].str(), "regression:11");
  EXPECT_EQ(b.train.size(), 3);
  EXPECT_EQ(b.val.size(), 1);
  EXPECT_EQ(b.test.size(), 1);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const at::Tensor p = at::randperm(5, gen, at::kLong);
  EXPECT_TRUE(at::equal(b.test.index(), p.narrow(0, 0, 1)));
  EXPECT_TRUE(at::equal(b.val.index(), p.narrow(0, 1, 1)));
  EXPECT_TRUE(at::equal(b.train.index(), std::get<0>(p.narrow(0, 2, 3).sort())));

  const QM9Molecules& m = b.train.molecules();
  const at::Tensor y = m.targets.index_select(0, b.train.index());
  const at::Tensor mean = y.mean(0), std = y.std(0, false);
  EXPECT_TRUE(at::allclose(b.target_scaling[0].mean, mean));
  EXPECT_TRUE(at::allclose(b.target_scaling[0].std, std));
  EXPECT_TRUE(at::allclose(b.train.labels[0], ((y - mean) / std).to(at::kFloat)));
  const at::Tensor yt = m.targets.index_select(0, b.test.index());
  EXPECT_TRUE(at::allclose(b.to_original(0, b.test.labels[0]).to(at::kDouble), yt, 1e-5, 1e-4));

  const GraphBatch g = b.train.batch(at::tensor({2, 0}, at::kLong));
  EXPECT_TRUE(at::equal(g.labels[0], b.train.labels[0].index_select(0, at::tensor({2, 0}, at::kLong))));
  EXPECT_EQ(g.num_graphs, 2);

  const std::string msg = error_of([&] { make_qm9_benchmark(f.options().val_size(2).test_size(3)); });
  EXPECT_TRUE(contains(msg, "no training molecule")) << msg;
}

TEST(QM9, CachesParsedMoleculesAndRebuildsACorruptCache) {
  Files f("raw");  // PyTorch Geometric's layout: data_dir/raw
  const std::string cache_dir = (f.tmp.path / "cache").string();
  const QM9Options opts = f.options().use_cache(true).cache_dir(cache_dir);
  std::vector<std::string> n1, n2, n3;
  const QM9Molecules a = load_qm9(opts, &n1);
  EXPECT_TRUE(contains(n1.back(), "built the parsed-molecule cache")) << n1.back();
  const QM9Molecules b = load_qm9(opts, &n2);
  EXPECT_TRUE(contains(n2.back(), "reused")) << n2.back();
  EXPECT_TRUE(at::equal(a.node_features, b.node_features));
  EXPECT_TRUE(at::equal(a.targets, b.targets));
  EXPECT_TRUE(at::equal(a.bonds, b.bonds));
  std::string cache_file;
  for (const auto& e : fs::directory_iterator(cache_dir)) cache_file = e.path().string();
  std::string bytes = read_file(cache_file);
  bytes[bytes.size() - 40] ^= 1;
  write_file_atomic(cache_file, bytes);
  const QM9Molecules c = load_qm9(opts, &n3);
  EXPECT_TRUE(contains(n3.back(), "checksum")) << n3.back();
  EXPECT_TRUE(at::equal(a.targets, c.targets));
}

TEST(QM9, MalformedFilesAreOneClearErrorNamingFileAndLine) {
  const auto mols = molecules();
  const auto all_blocks = [&](int bad_index, int atom_count) {
    std::string s;
    for (size_t k = 0; k < mols.size(); ++k) {
      s += sdf_block(mols[k], static_cast<int>(k) == bad_index ? atom_count : -1);
    }
    return s;
  };
  {  // atom count too large: methane says 6 atoms; line 10 is its first bond line
    Files f;
    f.write("gdb9.sdf", all_blocks(0, 6));
    const std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, f.path("gdb9.sdf") + "', line 10") && contains(msg, "gdb_1") &&
                contains(msg, "atom count") && contains(msg, "announces 6 atoms"))
        << msg;
  }
  {  // atom count too small: ammonia (block from line 16) says 3 atoms; line 23 is its 4th atom
    Files f;
    f.write("gdb9.sdf", all_blocks(1, 3));
    const std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "line 23") && contains(msg, "gdb_2") && contains(msg, "expected bond 1"))
        << msg;
  }
  {  // an element QM9 does not have
    Files f;
    Mol cl{"gdb_1", {{"C", 0, 0, 0}, {"Cl", 0, 0, 1.7}}, {{1, 2, 1}}};
    std::string s = sdf_block(cl);
    for (size_t k = 1; k < mols.size(); ++k) s += sdf_block(mols[k]);
    f.write("gdb9.sdf", s);
    const std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "line 6") && contains(msg, "'Cl'")) << msg;
  }
  {  // a truncated file: the last block has no M  END, or is cut inside its bond line
    Files f;
    const std::string full = all_blocks(-1, -1);
    const size_t tail = std::string("M  END\n$$$$\n").size();
    f.write("gdb9.sdf", full.substr(0, full.size() - tail));
    std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "gdb_6") && contains(msg, "no 'M  END'")) << msg;
    f.write("gdb9.sdf", full.substr(0, full.size() - tail - 5));
    msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "gdb_6") && contains(msg, "expected bond 1")) << msg;
  }
  {  // a CSV row with the wrong column count (line 3 = molecule 2)
    Files f;
    std::string csv = std::string(qm9_csv_header()) + "\n";
    for (size_t k = 0; k < mols.size(); ++k) {
      std::string r = csv_row(mols[k].title, static_cast<int>(k));
      if (k == 1) r = r.substr(0, r.rfind(','));
      csv += r + "\n";
    }
    f.write("gdb9.sdf.csv", csv);
    const std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, f.path("gdb9.sdf.csv") + "', line 3") && contains(msg, "19 columns")) << msg;
  }
  {  // a field that is not a number, and a mol_id that is not the block's title
    Files f;
    std::string csv = std::string(qm9_csv_header()) + "\n";
    for (size_t k = 0; k < mols.size(); ++k) csv += csv_row(k == 4 ? "gdb_99" : mols[k].title, static_cast<int>(k)) + "\n";
    f.write("gdb9.sdf.csv", csv);
    std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "gdb_99") && contains(msg, "gdb_5") && contains(msg, "line 6")) << msg;
    f.write("gdb9.sdf.csv", std::string(qm9_csv_header()) + "\ngdb_1,x" + std::string(18, ',') + "\n");
    msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "line 2") && contains(msg, "column 2") && contains(msg, "not a number")) << msg;
    // inf/nan are accepted in the columns no target is read from (A here), not in a target's
    const auto with = [&](int column, const std::string& value) {
      std::string csv = std::string(qm9_csv_header()) + "\n";
      for (size_t k = 0; k < mols.size(); ++k) {
        std::string r = csv_row(mols[k].title, static_cast<int>(k));
        if (k == 0) {
          size_t start = 0;
          for (int c = 1; c < column; ++c) start = r.find(',', start) + 1;
          const size_t end = r.find(',', start);
          r = r.substr(0, start) + value + r.substr(end);
        }
        csv += r + "\n";
      }
      return csv;
    };
    f.write("gdb9.sdf.csv", with(2, "nan"));
    EXPECT_EQ(load_qm9(f.options()).size(), 5);
    f.write("gdb9.sdf.csv", with(7, "inf"));  // homo
    msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "line 2") && contains(msg, "column 7") && contains(msg, "finite")) << msg;
    // A finite target too large for the standardisation (it gave NaN metrics and exit 0).
    f.write("gdb9.sdf.csv", with(6, "1e300"));  // alpha
    msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "line 2") && contains(msg, "column 6") && contains(msg, "'1e300'") &&
                contains(msg, "is outside +-1e+08"))
        << msg;
    f.write("gdb9.sdf.csv", with(6, "-99999999"));  // within the bound: read
    EXPECT_EQ(load_qm9(f.options()).size(), 5);
  }
  {  // SDF and CSV disagree on the number of molecules; a bad header
    Files f;
    std::string csv = std::string(qm9_csv_header()) + "\n";
    for (size_t k = 0; k + 1 < mols.size(); ++k) csv += csv_row(mols[k].title, static_cast<int>(k)) + "\n";
    f.write("gdb9.sdf.csv", csv);
    std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "6 molecules") && contains(msg, "5 rows")) << msg;
    f.write("gdb9.sdf.csv", "id,a,b\n");
    msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "line 1") && contains(msg, "header")) << msg;
  }
  {  // uncharacterized.txt: an index after the closing line, an index beyond the molecules
    Files f;
    f.write("uncharacterized.txt", uncharacterized({3}) + "  4  1 2 3\n");
    std::string msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "uncharacterized.txt', line 12") && contains(msg, "closing")) << msg;
    f.write("uncharacterized.txt", uncharacterized({3, 60}));
    msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "excludes molecule 60")) << msg;
    f.write("uncharacterized.txt", "too short\n");
    msg = error_of([&] { load_qm9(f.options()); });
    EXPECT_TRUE(contains(msg, "9 header lines")) << msg;
  }
  {  // missing files
    TempDir t;
    std::string msg = error_of([&] { load_qm9(QM9Options().data_dir(t.path.string())); });
    EXPECT_TRUE(contains(msg, "gdb9.sdf not found")) << msg;
    write_file_atomic((t.path / "gdb9.sdf").string(), "");
    msg = error_of([&] { load_qm9(QM9Options().data_dir(t.path.string())); });
    EXPECT_TRUE(contains(msg, "gdb9.sdf.csv") && contains(msg, "missing")) << msg;
  }
}

TEST(QM9, ExcludedIndicesParse) {
  EXPECT_EQ(parse_qm9_uncharacterized(uncharacterized({21725, 5, 9}), "u.txt"),
            (std::vector<int64_t>{5, 9, 21725}));
  EXPECT_TRUE(parse_qm9_uncharacterized(uncharacterized({}), "u.txt").empty());
  const std::string msg = error_of([&] { parse_qm9_uncharacterized(uncharacterized({5, 5}), "u.txt"); });
  EXPECT_TRUE(contains(msg, "listed twice") && contains(msg, "line 11")) << msg;
}
