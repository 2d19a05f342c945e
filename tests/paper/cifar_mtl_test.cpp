#include "bayesagg/data/paper/cifar_mtl.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/paper/paper.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "paper_data.h"
#include "test_util.h"

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

/// Expected input of record r of file f: [3, 32, 32], pixel / 127.5 - 1.
at::Tensor expected_input(int f, int r) {
  at::Tensor t = at::empty({3072}, at::kByte);
  for (int p = 0; p < 3072; ++p) t[p] = cifar_pixel(f, r, p);
  return t.reshape({3, 32, 32}).to(at::kFloat).div(127.5f).sub(1.0f);
}

}  // namespace

TEST(CifarMtl, ReadsRecordsExactly) {
  TempDir dir;
  const std::string path = (dir.path / "train.bin").string();
  write_file_atomic(path, cifar_bytes(0, 3));
  const Cifar100File f = read_cifar100_file(path);
  ASSERT_EQ(f.images.sizes(), (c10::IntArrayRef{3, 3, 32, 32}));
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(f.coarse[r].item<int64_t>(), cifar_coarse_of(0, r));
    EXPECT_EQ(f.fine[r].item<int64_t>(), cifar_fine_of(0, r));
    // R plane row 0 col 1 is pixel 1; G plane starts at 1024; B at 2048; row y col x at y*32+x
    EXPECT_EQ(f.images[r][0][0][1].item<uint8_t>(), cifar_pixel(0, r, 1));
    EXPECT_EQ(f.images[r][1][2][5].item<uint8_t>(), cifar_pixel(0, r, 1024 + 2 * 32 + 5));
    EXPECT_EQ(f.images[r][2][31][31].item<uint8_t>(), cifar_pixel(0, r, 3071));
  }
}

TEST(CifarMtl, BuildsTwentyBinaryTasksWithASeededSplitAndScaledInputs) {
  TempDir dir;
  const fs::path sub = dir.path / "cifar-100-binary";  // the archive's folder; pass its parent
  fs::create_directories(sub);
  write_file_atomic((sub / "train.bin").string(), cifar_bytes(0, 30));
  write_file_atomic((sub / "test.bin").string(), cifar_bytes(1, 7));
  const Benchmark b =
      make_cifar_mtl_benchmark(CifarMtlOptions().data_dir(dir.path.string()).seed(5));
  EXPECT_EQ(b.name, "cifar-mtl");
  ASSERT_EQ(b.groups.size(), 1u);
  EXPECT_EQ(b.groups[0].str(), "binary:20");
  EXPECT_EQ(b.task_names.size(), 20u);
  EXPECT_EQ(b.task_names[0], "aquatic_mammals");
  EXPECT_EQ(b.task_names[19], "vehicles_2");
  EXPECT_EQ(b.input_shape(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_EQ(b.train.size(), 27);
  EXPECT_EQ(b.val.size(), 3);
  EXPECT_EQ(b.test.size(), 7);

  // the documented split: validation = the last round(0.1 N) of randperm(N, seed), file order
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor perm = at::randperm(30, gen, at::kLong);
  const at::Tensor val_idx = std::get<0>(perm.narrow(0, 27, 3).sort());
  const at::Tensor train_idx = std::get<0>(perm.narrow(0, 0, 27).sort());
  const auto check = [&](const MultiTaskSplit& s, const at::Tensor& idx, int f) {
    for (int64_t k = 0; k < idx.size(0); ++k) {
      const int r = static_cast<int>(idx[k].item<int64_t>());
      EXPECT_TRUE(at::equal(s.inputs[k], expected_input(f, r))) << "record " << r;
      at::Tensor y = at::zeros({20}, at::kFloat);
      y[cifar_coarse_of(f, r)] = 1.0f;
      EXPECT_TRUE(at::equal(s.labels[0][k], y)) << "record " << r;
    }
  };
  check(b.train, train_idx, 0);
  check(b.val, val_idx, 0);
  check(b.test, at::arange(7, at::kLong), 1);
  EXPECT_GE(b.train.inputs.min().item<float>(), -1.0f);
  EXPECT_LE(b.train.inputs.max().item<float>(), 1.0f);

  // the folder itself works too; another seed, another split
  const Benchmark same = make_cifar_mtl_benchmark(CifarMtlOptions().data_dir(sub.string()).seed(5));
  EXPECT_TRUE(at::equal(same.val.inputs, b.val.inputs));
  const Benchmark other = make_cifar_mtl_benchmark(CifarMtlOptions().data_dir(sub.string()).seed(6));
  EXPECT_FALSE(at::equal(other.val.inputs, b.val.inputs));
}

TEST(CifarMtl, PixelScalingEndPoints) {
  Cifar100File f;
  f.images = at::tensor({0, 255, 51, 204}, at::kByte).repeat({768}).reshape({1, 3, 32, 32});
  f.coarse = at::tensor({3}, at::kLong);
  f.fine = at::tensor({0}, at::kLong);
  Cifar100File train;
  train.images = f.images.repeat({10, 1, 1, 1});
  train.coarse = at::full({10}, 3, at::kLong);
  train.fine = at::zeros({10}, at::kLong);
  const Benchmark b = build_cifar_mtl_benchmark(train, f, CifarMtlOptions());
  const at::Tensor x = b.test.inputs.reshape({-1}).narrow(0, 0, 4);
  EXPECT_TRUE(at::allclose(x, at::tensor({-1.0f, 1.0f, -0.6f, 0.6f}), 0, 1e-6)) << x;
}

TEST(CifarMtl, MalformedFilesAreErrorsNamingTheFile) {
  TempDir dir;
  const std::string train = (dir.path / "train.bin").string();
  const std::string test = (dir.path / "test.bin").string();
  write_file_atomic(test, cifar_bytes(1, 2));

  // a short last record
  std::string bytes = cifar_bytes(0, 4);
  write_file_atomic(train, bytes.substr(0, bytes.size() - 10));
  std::string msg = error_of([&] { make_cifar_mtl_benchmark(CifarMtlOptions().data_dir(dir.path.string())); });
  EXPECT_TRUE(contains(msg, train) && contains(msg, "3074") && contains(msg, "3 whole records") &&
              contains(msg, "short record of 3064 bytes"))
      << msg;

  // a label out of range (CIFAR-10's files would have these)
  bytes = cifar_bytes(0, 4);
  bytes[2 * 3074] = static_cast<char>(57);
  write_file_atomic(train, bytes);
  msg = error_of([&] { read_cifar100_file(train); });
  EXPECT_TRUE(contains(msg, train) && contains(msg, "record 2") && contains(msg, "coarse label 57"))
      << msg;

  write_file_atomic(train, "");
  msg = error_of([&] { read_cifar100_file(train); });
  EXPECT_TRUE(contains(msg, train) && contains(msg, "empty")) << msg;

  msg = error_of([&] { make_cifar_mtl_benchmark(CifarMtlOptions().data_dir((dir.path / "nowhere").string())); });
  EXPECT_TRUE(contains(msg, "cifar-100-binary")) << msg;
  msg = error_of([&] { CifarMtlOptions().val_fraction(1.0).validate(); });
  EXPECT_TRUE(contains(msg, "val_fraction")) << msg;
}

TEST(PaperBenchmarks, ListAndPublishedNumbers) {
  EXPECT_EQ(paper_benchmark_names(), (std::vector<std::string>{"cifar-mtl", "utkface", "chestx14", "qm9"}));
  EXPECT_TRUE(is_paper_benchmark("qm9"));
  EXPECT_FALSE(is_paper_benchmark("multi-fashion"));
  const StlBaseline q = stl_baseline("qm9");
  ASSERT_EQ(q.values.size(), 11u);
  EXPECT_EQ(q.metrics[2], "homo_mae");
  EXPECT_DOUBLE_EQ(q.values[2], 60.576);
  EXPECT_FALSE(q.higher_is_better[0]);
  const StlBaseline c = stl_baseline("chestx14");
  ASSERT_EQ(c.values.size(), 14u);
  EXPECT_EQ(c.metrics[13], "Pneumothorax_auc");
  EXPECT_DOUBLE_EQ(c.values[13], 0.7701);
  const StlBaseline u = stl_baseline("utkface", "val");
  EXPECT_DOUBLE_EQ(u.values[2], 0.8456);
  EXPECT_FALSE(has_stl_baseline("cifar-mtl"));
  EXPECT_THROW(stl_baseline("cifar-mtl"), c10::Error);
  EXPECT_EQ(published_delta_m().size(), 5u);
}
