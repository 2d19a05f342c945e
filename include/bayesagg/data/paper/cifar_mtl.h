#pragma once
/// CIFAR-MTL (spec: benchmarks.md, "Paper benchmarks"): CIFAR-100, binary version, as 20 binary
/// tasks, one per coarse class.
///
/// Files: `train.bin` (50 000 records) and `test.bin` (10 000), each a sequence of 3 074-byte
/// records: coarse label (0..19), fine label (0..99), then 3 072 pixel bytes: the R, G and B
/// planes of a 32×32 image, each row-major. `data_dir` is the folder `cifar-100-binary/` the
/// archive `cifar-100-binary.tar.gz` extracts to, or its parent.

#include "bayesagg/data/dataset.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace bayesagg {

/// Bytes of one CIFAR-100 binary record.
constexpr int64_t kCifar100RecordBytes = 3074;

struct CifarMtlOptions {
  /// `cifar-100-binary/` or its parent.
  TORCH_ARG(std::string, data_dir) = "";
  /// Split seed: the 90/10 train/validation split of train.bin.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Fraction of train.bin held out for validation (0 < f < 1): round(f * N) items.
  TORCH_ARG(double, val_fraction) = 0.1;

 public:
  /// Throws naming the first invalid value.
  void validate() const;
};

std::ostream& operator<<(std::ostream& os, const CifarMtlOptions& o);

/// One CIFAR-100 binary file as read.
struct Cifar100File {
  /// [N, 3, 32, 32] uint8 (R, G, B planes).
  at::Tensor images;
  /// [N] int64 in [0, 20).
  at::Tensor coarse;
  /// [N] int64 in [0, 100).
  at::Tensor fine;
};

/// Reads a CIFAR-100 binary file. Throws naming the file when it is missing or empty, when its
/// size is not a multiple of 3 074 bytes (a short record: the message gives the number of whole
/// records and the short record's length), or when a record's labels are out of range (the
/// message names the record).
Cifar100File read_cifar100_file(const std::string& path);

/// The 20 coarse classes of CIFAR-100 in label order (the distribution's
/// coarse_label_names.txt): aquatic_mammals, fish, ..., vehicles_2.
const std::vector<std::string>& cifar100_coarse_names();

/// The folder holding train.bin and test.bin: `dir` itself or `dir/cifar-100-binary`. Throws
/// saying what was looked for when neither holds them.
std::string find_cifar100_dir(const std::string& dir);

/// Builds cifar-mtl from two files as read (the part of `make_cifar_mtl_benchmark` after
/// reading). Split: p = randperm(N, generator seeded with `seed`); validation = the items
/// p[N - n_val :], train = p[: N - n_val], n_val = round(val_fraction * N), each split in file
/// order. Inputs: float32 [N, 3, 32, 32], pixel / 127.5 - 1 (in [-1, 1]). Labels: one group
/// `binary:20` ("coarse"), [N, 20] float32 one-hot of the coarse label. Test = test.bin in file
/// order.
Benchmark build_cifar_mtl_benchmark(const Cifar100File& train, const Cifar100File& test,
                                    const CifarMtlOptions& options);

/// Reads `train.bin` and `test.bin` from `options.data_dir()` and builds cifar-mtl.
Benchmark make_cifar_mtl_benchmark(const CifarMtlOptions& options);

}  // namespace bayesagg
