#include "bayesagg/data/paper/cifar_mtl.h"

#include "bayesagg/core/files.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <filesystem>
#include <ostream>

namespace bayesagg {
namespace {

constexpr int64_t kPixels = 3 * 32 * 32;
constexpr int64_t kCoarse = 20, kFine = 100;

MultiTaskSplit cifar_split(const Cifar100File& f, const at::Tensor& index) {
  MultiTaskSplit s;
  const at::Tensor images = index.defined() ? f.images.index_select(0, index) : f.images;
  const at::Tensor coarse = index.defined() ? f.coarse.index_select(0, index) : f.coarse;
  s.inputs = images.to(at::kFloat).div_(127.5f).sub_(1.0f);
  s.labels = {at::one_hot(coarse, kCoarse).to(at::kFloat)};
  return s;
}

void check_file(const Cifar100File& f, const std::string& what) {
  TORCH_CHECK(f.images.defined() && f.images.dim() == 4 && f.images.size(1) == 3 &&
                  f.images.size(2) == 32 && f.images.size(3) == 32 &&
                  f.images.scalar_type() == at::kByte,
              what, ": expected images [N, 3, 32, 32] uint8");
  TORCH_CHECK(f.coarse.defined() && f.coarse.dim() == 1 && f.coarse.size(0) == f.images.size(0) &&
                  f.coarse.scalar_type() == at::kLong,
              what, ": expected coarse labels [N] int64");
}

}  // namespace

void CifarMtlOptions::validate() const {
  TORCH_CHECK(val_fraction() > 0.0 && val_fraction() < 1.0,
              "cifar-mtl: val_fraction must be in (0, 1), got ", val_fraction());
}

std::ostream& operator<<(std::ostream& os, const CifarMtlOptions& o) {
  return os << "CifarMtlOptions(data_dir=" << o.data_dir() << ", seed=" << o.seed()
            << ", val_fraction=" << o.val_fraction() << ")";
}

const std::vector<std::string>& cifar100_coarse_names() {
  static const std::vector<std::string> names = {
      "aquatic_mammals",
      "fish",
      "flowers",
      "food_containers",
      "fruit_and_vegetables",
      "household_electrical_devices",
      "household_furniture",
      "insects",
      "large_carnivores",
      "large_man-made_outdoor_things",
      "large_natural_outdoor_scenes",
      "large_omnivores_and_herbivores",
      "medium_mammals",
      "non-insect_invertebrates",
      "people",
      "reptiles",
      "small_mammals",
      "trees",
      "vehicles_1",
      "vehicles_2"};
  return names;
}

std::string find_cifar100_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const fs::path& d : {fs::path(dir), fs::path(dir) / "cifar-100-binary"}) {
    if (fs::is_regular_file(d / "train.bin", ec) || fs::is_regular_file(d / "test.bin", ec)) {
      return d.string();
    }
  }
  TORCH_CHECK(false, "cifar-mtl: CIFAR-100 (binary version) not found: neither '",
              (fs::path(dir) / "train.bin").string(), "' nor '",
              (fs::path(dir) / "cifar-100-binary" / "train.bin").string(),
              "' exists; extract cifar-100-binary.tar.gz and pass its folder (or the folder "
              "holding it) as --data-dir");
}

Cifar100File read_cifar100_file(const std::string& path) {
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_regular_file(path, ec), "CIFAR-100 file '", path,
              "' does not exist or is not a regular file");
  const std::string bytes = read_file(path);
  const int64_t size = static_cast<int64_t>(bytes.size());
  TORCH_CHECK(size > 0, "CIFAR-100 file '", path, "' is empty");
  const int64_t n = size / kCifar100RecordBytes;
  const int64_t rest = size % kCifar100RecordBytes;
  TORCH_CHECK(rest == 0, "CIFAR-100 file '", path, "' is truncated or not the binary version: ",
              size, " bytes is not a multiple of the ", kCifar100RecordBytes, "-byte record (",
              n, " whole records, then a short record of ", rest, " bytes)");
  const at::Tensor raw =
      at::from_blob(const_cast<char*>(bytes.data()), {n, kCifar100RecordBytes}, at::kByte);
  Cifar100File f;
  f.coarse = raw.select(1, 0).to(at::kLong);
  f.fine = raw.select(1, 1).to(at::kLong);
  f.images = raw.narrow(1, 2, kPixels).reshape({n, 3, 32, 32}).clone();
  const auto check = [&](const at::Tensor& labels, int64_t limit, const char* which) {
    const at::Tensor bad = (labels >= limit).nonzero();
    if (bad.numel() > 0) {
      const int64_t r = bad[0][0].item<int64_t>();
      TORCH_CHECK(false, "CIFAR-100 file '", path, "', record ", r, " (byte offset ",
                  r * kCifar100RecordBytes, "): ", which, " label ", labels[r].item<int64_t>(),
                  " is out of range [0, ", limit, ") — not the CIFAR-100 binary version?");
    }
  };
  check(f.coarse, kCoarse, "coarse");
  check(f.fine, kFine, "fine");
  return f;
}

Benchmark build_cifar_mtl_benchmark(const Cifar100File& train, const Cifar100File& test,
                                    const CifarMtlOptions& options) {
  options.validate();
  check_file(train, "cifar-mtl training file");
  check_file(test, "cifar-mtl test file");
  const int64_t n = train.images.size(0);
  const int64_t n_val = static_cast<int64_t>(std::llround(options.val_fraction() * n));
  TORCH_CHECK(n_val >= 1 && n - n_val >= 1, "cifar-mtl: val_fraction ", options.val_fraction(),
              " of ", n, " training records leaves an empty split");
  TORCH_CHECK(test.images.size(0) >= 1, "cifar-mtl: the test file has no records");

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed());
  const at::Tensor perm = at::randperm(n, gen, at::kLong);
  const at::Tensor train_idx = std::get<0>(perm.narrow(0, 0, n - n_val).sort());
  const at::Tensor val_idx = std::get<0>(perm.narrow(0, n - n_val, n_val).sort());

  Benchmark b;
  b.name = "cifar-mtl";
  b.seed = options.seed();
  b.groups = {TaskGroup(GroupType::binary, kCoarse, "coarse")};
  b.task_names = cifar100_coarse_names();
  b.target_scaling = {TargetScaling{}};
  b.train = cifar_split(train, train_idx);
  b.val = cifar_split(train, val_idx);
  b.test = cifar_split(test, {});
  return b;
}

Benchmark make_cifar_mtl_benchmark(const CifarMtlOptions& options) {
  options.validate();
  const std::string dir = find_cifar100_dir(options.data_dir());
  const Cifar100File train = read_cifar100_file((std::filesystem::path(dir) / "train.bin").string());
  const Cifar100File test = read_cifar100_file((std::filesystem::path(dir) / "test.bin").string());
  Benchmark b = build_cifar_mtl_benchmark(train, test, options);
  b.validate();
  return b;
}

}  // namespace bayesagg
