#pragma once
/// The embedded benchmarks (spec: benchmarks.md, "Embedded benchmarks"): they need only Debian
/// packages. `multi-fashion`, `fashion-binary` and `multi-fashion-mixed` are built from
/// Fashion-MNIST (package `dataset-fashion-mnist`); `synthetic-regression` is generated.
/// Every random draw uses one explicit CPU generator seeded with the data seed, in a documented
/// order (docs/data.md), so a benchmark is a pure function of its name and options.

#include "bayesagg/data/dataset.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace bayesagg {

/// Where Debian's `dataset-fashion-mnist` installs Fashion-MNIST.
constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Options of the embedded benchmark builders.
struct EmbeddedOptions {
  /// Folder of `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (uncompressed files without
  /// `.gz` are accepted too).
  TORCH_ARG(std::string, data_dir) = kDefaultFashionMnistDir;
  /// Data seed: partners and intensity factors (Fashion family), everything (synthetic).
  TORCH_ARG(uint64_t, seed) = 0;
  /// 0 = every training item; otherwise only the first `train_subset` training items of the
  /// full benchmark (the same tensors as the first rows of the full build; validation and test
  /// are unchanged). For quick runs and tests.
  TORCH_ARG(int64_t, train_subset) = 0;
  /// Fashion family: validation = the last `val_size` items of the 60 000 training items.
  /// (synthetic-regression has fixed splits of 20 000 / 5 000 / 5 000.)
  TORCH_ARG(int64_t, val_size) = 10000;

 public:
  /// Throws naming the first invalid value.
  void validate() const;
};

/// Prints `EmbeddedOptions(data_dir=..., seed=..., train_subset=..., val_size=...)`.
std::ostream& operator<<(std::ostream& os, const EmbeddedOptions& o);

/// A known embedded benchmark.
struct EmbeddedInfo {
  std::string name;
  /// Task groups, e.g. `multiclass:10,multiclass:10`.
  std::string groups;
  /// One sentence.
  std::string description;
  /// Built from Fashion-MNIST (needs `data_dir`).
  bool needs_fashion_mnist;
};

/// The embedded benchmarks, in a fixed order: multi-fashion, fashion-binary,
/// multi-fashion-mixed, synthetic-regression.
const std::vector<EmbeddedInfo>& embedded_benchmarks();
/// Their names, in the same order.
std::vector<std::string> embedded_benchmark_names();
/// Whether `name` is an embedded benchmark.
bool is_embedded_benchmark(const std::string& name);

/// Builds an embedded benchmark. Throws listing the known names when `name` is unknown, and
/// telling to `apt-get install dataset-fashion-mnist` (or pass --data-dir) when Fashion-MNIST is
/// missing.
Benchmark make_benchmark(const std::string& name, const EmbeddedOptions& options = {});

// ------------------------------------------------------------------ Fashion-MNIST building blocks

/// Raw images and labels: images [N, 28, 28] uint8, labels [N] int64 in [0, 10).
struct RawImages {
  at::Tensor images;
  at::Tensor labels;
};

/// Fashion-MNIST as read from its IDX files: 60 000 training and 10 000 test items.
struct FashionMnist {
  RawImages train;
  RawImages test;
};

/// The ten Fashion-MNIST classes as task names: tshirt_top, trouser, pullover, dress, coat,
/// sandal, shirt, sneaker, bag, ankle_boot.
const std::vector<std::string>& fashion_mnist_class_names();

/// Reads Fashion-MNIST from `dir`. Throws when a file is missing (saying to
/// `apt-get install dataset-fashion-mnist` or pass --data-dir), or malformed.
FashionMnist load_fashion_mnist(const std::string& dir = kDefaultFashionMnistDir);

/// Builds `multi-fashion`, `fashion-binary` or `multi-fashion-mixed` from raw images: `train` is
/// the whole training file (split into train / validation by `options.val_size()`), `test` the
/// test file; `options.data_dir()` is not used. The function `make_benchmark` calls, exposed so
/// that the construction can be tested on hand-made images.
Benchmark build_fashion_benchmark(const std::string& name, const RawImages& train,
                                  const RawImages& test, const EmbeddedOptions& options);

/// For each of `n` >= 2 items, a partner drawn uniformly from the *other* n - 1 items:
/// `r = randint(0, n - 1, {n}, generator)`, partner = r + (r >= own index). [n] int64.
at::Tensor draw_partners(int64_t n, at::Generator& generator);

/// Row/column index into the 36×36 canvas read by output pixel i of the nearest-neighbour resize
/// 36 -> 28: floor(i * 36 / 28), i = 0..27. [28] int64.
at::Tensor resize_source_index();

/// Composes pairs as in multi-fashion: item k puts `images[k]` (the left image) at
/// [0:28, 0:28] of a 36×36 zero canvas and `images[partners[k]]` (the right) at [6:34, 6:34],
/// the overlap taking the pixel-wise max, then resizes the canvas to 28×28 by nearest neighbour
/// (`resize_source_index`). Pixels are scaled to [0, 1] (`/ 255` in float32) and, when `factors`
/// ([N, 2] float32: left, right) is given, multiplied by their image's factor before the max.
/// `images`: [N, 28, 28] uint8; `partners`: [M] int64 indices into `images` (the output has
/// M items, item k's left image being images[k], so M <= N). Returns [M, 1, 28, 28] float32.
at::Tensor compose_pairs(const at::Tensor& images, const at::Tensor& partners,
                         const at::Tensor& factors = {});

// ------------------------------------------------------------------ synthetic-regression

/// The fixed random parts of synthetic-regression.
struct SyntheticRegressionParams {
  /// Shared map z = tanh(A x): [16, 32] float64, N(0, 1/32) entries.
  at::Tensor A;
  /// Task vectors u_t as rows: [10, 16] float64, N(0, 1/16) entries.
  at::Tensor U;
  /// sigma_t: log-spaced over [0.1, 100], shuffled. [10] float64.
  at::Tensor scales;
  /// nu_t: linearly spaced over [0.01, 0.5], shuffled. [10] float64.
  at::Tensor noise_levels;
};

/// Draws the parameters from `generator`, in this order: A, U, the permutation of the scales,
/// the permutation of the noise levels. (`make_benchmark` then draws x [30000, 32] and
/// eps [30000, 10], all float64, from the same generator.)
SyntheticRegressionParams draw_synthetic_regression_params(at::Generator& generator);

}  // namespace bayesagg
