#include "bayesagg/data/embedded.h"

#include "bayesagg/data/idx.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <ostream>
#include <sstream>

namespace bayesagg {
namespace {

constexpr int64_t kSide = 28;       // Fashion-MNIST images are 28×28
constexpr int64_t kCanvas = 36;     // multi-fashion canvas
constexpr int64_t kRightShift = 6;  // the right image sits at [6:34, 6:34]
constexpr int64_t kClasses = 10;
constexpr double kFactorLow = 0.25;    // multi-fashion-mixed intensity factors ~ U[0.25, 1]
constexpr double kFactorMean = 0.625;  // analytic standardisation of the factors
constexpr double kFactorStd = 0.2165;
constexpr int64_t kSynthInputs = 32, kSynthHidden = 16, kSynthTasks = 10;
constexpr int64_t kSynthTrain = 20000, kSynthVal = 5000, kSynthTest = 5000;

const char* const kInstallHint =
    "install it with `apt-get install dataset-fashion-mnist` or pass --data-dir";

std::string known_names() {
  std::string s;
  for (const auto& info : embedded_benchmarks()) s += (s.empty() ? "" : ", ") + info.name;
  return s;
}

std::string find_fashion_file(const std::string& dir, const std::string& stem) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path gz = fs::path(dir) / (stem + ".gz");
  if (fs::is_regular_file(gz, ec)) return gz.string();
  const fs::path plain = fs::path(dir) / stem;
  if (fs::is_regular_file(plain, ec)) return plain.string();
  TORCH_CHECK(false, "Fashion-MNIST file '", gz.string(), "' not found; ", kInstallHint,
              " pointing to a folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz");
}

void check_raw(const RawImages& raw, const std::string& what) {
  TORCH_CHECK(raw.images.defined() && raw.images.dim() == 3 && raw.images.size(1) == kSide &&
                  raw.images.size(2) == kSide && raw.images.scalar_type() == at::kByte,
              what, ": expected images [N, 28, 28] uint8, got ",
              raw.images.defined() ? raw.images.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(raw.labels.defined() && raw.labels.dim() == 1 &&
                  raw.labels.size(0) == raw.images.size(0) && raw.labels.scalar_type() == at::kLong,
              what, ": expected labels [", raw.images.size(0), "] int64");
  if (raw.labels.numel() > 0) {
    const int64_t lo = raw.labels.min().item<int64_t>(), hi = raw.labels.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi < kClasses, what, ": labels must be in [0, 10), found [", lo, ", ",
                hi, "]");
  }
}

RawImages slice_raw(const RawImages& raw, int64_t start, int64_t length) {
  return {raw.images.narrow(0, start, length), raw.labels.narrow(0, start, length)};
}

/// Uniform factors in [0.25, 1) for the left and right images: [n, 2] float32.
at::Tensor draw_factors(int64_t n, at::Generator& gen) {
  return at::rand({n, 2}, gen, at::kFloat).mul_(1.0 - kFactorLow).add_(kFactorLow);
}

/// One split of multi-fashion(-mixed): the first `m` items of `raw` with their partners among
/// all of `raw`.
MultiTaskSplit pair_split(const RawImages& raw, const at::Tensor& partners,
                          const at::Tensor& factors, int64_t m) {
  MultiTaskSplit s;
  const at::Tensor p = partners.narrow(0, 0, m).contiguous();
  const at::Tensor f = factors.defined() ? factors.narrow(0, 0, m).contiguous() : at::Tensor();
  s.inputs = compose_pairs(raw.images, p, f);
  if (f.defined()) {
    s.labels.push_back(
        f.sub(static_cast<float>(kFactorMean)).div_(static_cast<float>(kFactorStd)).contiguous());
  }
  s.labels.push_back(raw.labels.narrow(0, 0, m).contiguous());
  s.labels.push_back(raw.labels.index_select(0, p));
  s.partners = p;
  return s;
}

MultiTaskSplit binary_split(const RawImages& raw, int64_t m) {
  MultiTaskSplit s;
  s.inputs = raw.images.narrow(0, 0, m).to(at::kFloat).div_(255.0f).unsqueeze(1).contiguous();
  s.labels.push_back(at::one_hot(raw.labels.narrow(0, 0, m), kClasses).to(at::kFloat));
  return s;
}

Benchmark make_synthetic_regression(const EmbeddedOptions& options) {
  Benchmark b;
  b.name = "synthetic-regression";
  b.seed = options.seed();
  b.groups = {TaskGroup(GroupType::regression, kSynthTasks, "targets")};
  for (int64_t t = 0; t < kSynthTasks; ++t) b.task_names.push_back("task_" + std::to_string(t));
  TORCH_CHECK(options.train_subset() <= kSynthTrain, "train_subset (", options.train_subset(),
              ") exceeds the ", kSynthTrain, " training items of synthetic-regression");

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed());
  const SyntheticRegressionParams p = draw_synthetic_regression_params(gen);
  const int64_t n = kSynthTrain + kSynthVal + kSynthTest;
  const at::Tensor x = at::randn({n, kSynthInputs}, gen, at::kDouble);
  const at::Tensor eps = at::randn({n, kSynthTasks}, gen, at::kDouble);
  const at::Tensor z = at::tanh(at::matmul(x, p.A.t()));
  const at::Tensor y = p.scales * (at::tanh(at::matmul(z, p.U.t())) + p.noise_levels * eps);

  const at::Tensor y_train = y.narrow(0, 0, kSynthTrain);
  TargetScaling scaling;
  scaling.mean = y_train.mean(0);
  scaling.std = y_train.std(0, /*unbiased=*/false);
  const at::Tensor inputs = x.to(at::kFloat);
  const at::Tensor labels = ((y - scaling.mean) / scaling.std).to(at::kFloat);

  const auto split = [&](int64_t start, int64_t length) {
    MultiTaskSplit s;
    s.inputs = inputs.narrow(0, start, length).clone(at::MemoryFormat::Contiguous);
    s.labels = {labels.narrow(0, start, length).clone(at::MemoryFormat::Contiguous)};
    return s;
  };
  b.train = split(0, options.train_subset() > 0 ? options.train_subset() : kSynthTrain);
  b.val = split(kSynthTrain, kSynthVal);
  b.test = split(kSynthTrain + kSynthVal, kSynthTest);
  b.target_scaling = {scaling};
  b.task_scales = p.scales;
  b.noise_levels = p.noise_levels;
  return b;
}

}  // namespace

void EmbeddedOptions::validate() const {
  TORCH_CHECK(train_subset() >= 0, "train_subset must be >= 0 (0 = all), got ", train_subset());
  TORCH_CHECK(val_size() >= 1, "val_size must be >= 1, got ", val_size());
}

std::ostream& operator<<(std::ostream& os, const EmbeddedOptions& o) {
  return os << "EmbeddedOptions(data_dir=" << o.data_dir() << ", seed=" << o.seed()
            << ", train_subset=" << o.train_subset() << ", val_size=" << o.val_size() << ")";
}

const std::vector<EmbeddedInfo>& embedded_benchmarks() {
  static const std::vector<EmbeddedInfo> list = {
      {"multi-fashion", "multiclass:10,multiclass:10",
       "two overlapping Fashion-MNIST items per image; classify the left and the right one", true},
      {"fashion-binary", "binary:10", "Fashion-MNIST as 10 one-vs-rest binary tasks", true},
      {"multi-fashion-mixed", "regression:2,multiclass:10,multiclass:10",
       "multi-fashion with a random intensity per item: regress both intensities, classify both",
       true},
      {"synthetic-regression", "regression:10",
       "10 regression tasks on R^32 inputs with scales from 0.1 to 100", false},
  };
  return list;
}

std::vector<std::string> embedded_benchmark_names() {
  std::vector<std::string> names;
  for (const auto& info : embedded_benchmarks()) names.push_back(info.name);
  return names;
}

bool is_embedded_benchmark(const std::string& name) {
  for (const auto& info : embedded_benchmarks()) {
    if (info.name == name) return true;
  }
  return false;
}

const std::vector<std::string>& fashion_mnist_class_names() {
  static const std::vector<std::string> names = {"tshirt_top", "trouser",   "pullover", "dress",
                                                 "coat",       "sandal",    "shirt",    "sneaker",
                                                 "bag",        "ankle_boot"};
  return names;
}

FashionMnist load_fashion_mnist(const std::string& dir) {
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_directory(dir, ec), "Fashion-MNIST not found: folder '", dir,
              "' does not exist; ", kInstallHint);
  FashionMnist data;
  const std::string train_images = find_fashion_file(dir, "train-images-idx3-ubyte");
  const std::string train_labels = find_fashion_file(dir, "train-labels-idx1-ubyte");
  const std::string test_images = find_fashion_file(dir, "t10k-images-idx3-ubyte");
  const std::string test_labels = find_fashion_file(dir, "t10k-labels-idx1-ubyte");
  data.train = {read_idx_images(train_images), read_idx_labels(train_labels)};
  data.test = {read_idx_images(test_images), read_idx_labels(test_labels)};
  TORCH_CHECK(data.train.images.size(0) == data.train.labels.size(0), "'", train_images, "' has ",
              data.train.images.size(0), " images but '", train_labels, "' has ",
              data.train.labels.size(0), " labels");
  TORCH_CHECK(data.test.images.size(0) == data.test.labels.size(0), "'", test_images, "' has ",
              data.test.images.size(0), " images but '", test_labels, "' has ",
              data.test.labels.size(0), " labels");
  check_raw(data.train, "'" + train_images + "'");
  check_raw(data.test, "'" + test_images + "'");
  return data;
}

at::Tensor draw_partners(int64_t n, at::Generator& generator) {
  TORCH_CHECK(n >= 2, "drawing partners needs at least 2 items, got ", n);
  const at::Tensor r = at::randint(0, n - 1, {n}, generator, at::kLong);
  return r + (r >= at::arange(n, at::kLong)).to(at::kLong);
}

at::Tensor resize_source_index() {
  return at::div(at::arange(kSide, at::kLong) * kCanvas, kSide, "floor");
}

at::Tensor compose_pairs(const at::Tensor& images, const at::Tensor& partners,
                         const at::Tensor& factors) {
  TORCH_CHECK(images.defined() && images.dim() == 3 && images.size(1) == kSide &&
                  images.size(2) == kSide && images.scalar_type() == at::kByte,
              "compose_pairs: expected images [N, 28, 28] uint8");
  const int64_t n = images.size(0);
  TORCH_CHECK(partners.defined() && partners.dim() == 1 && partners.scalar_type() == at::kLong,
              "compose_pairs: expected partners [M] int64");
  const int64_t m = partners.size(0);
  TORCH_CHECK(m <= n, "compose_pairs: ", m, " partners for ", n, " images");
  if (m > 0) {
    TORCH_CHECK(partners.min().item<int64_t>() >= 0 && partners.max().item<int64_t>() < n,
                "compose_pairs: partner indices must be in [0, ", n, ")");
  }
  if (factors.defined()) {
    TORCH_CHECK(factors.dim() == 2 && factors.size(0) == m && factors.size(1) == 2 &&
                    factors.scalar_type() == at::kFloat,
                "compose_pairs: expected factors [", m, ", 2] float32, got ", factors.sizes());
  }

  // Output pixel (i, j) reads canvas pixel (s_i, s_j), s = resize_source_index(). The canvas
  // holds the left image at [0:28, 0:28] and the right one at [6:34, 6:34], zero elsewhere, so
  // each output pixel reads at most one pixel of each image (-1: none, i.e. zero).
  const at::Tensor src = resize_source_index();
  const auto s = src.accessor<int64_t, 1>();
  constexpr int64_t pixels = kSide * kSide;
  std::array<int32_t, pixels> left_index{}, right_index{};
  for (int64_t i = 0; i < kSide; ++i) {
    for (int64_t j = 0; j < kSide; ++j) {
      const int64_t r = s[i], c = s[j], rr = r - kRightShift, rc = c - kRightShift;
      left_index[i * kSide + j] =
          (r < kSide && c < kSide) ? static_cast<int32_t>(r * kSide + c) : -1;
      right_index[i * kSide + j] = (rr >= 0 && rr < kSide && rc >= 0 && rc < kSide)
                                       ? static_cast<int32_t>(rr * kSide + rc)
                                       : -1;
    }
  }
  // pixel / 255 in float32, as `tensor.to(kFloat) / 255`
  std::array<float, 256> scale{};
  for (int v = 0; v < 256; ++v) scale[v] = static_cast<float>(v) / 255.0f;

  // One fused pass writing the output directly: on this kind of machine the cost of a build is
  // dominated by touching freshly allocated memory, so no intermediate tensors are made.
  const at::Tensor img = images.contiguous();
  const at::Tensor part = partners.contiguous();
  const at::Tensor fac = factors.defined() ? factors.contiguous() : at::Tensor();
  at::Tensor out = at::empty({m, 1, kSide, kSide}, at::kFloat);
  const uint8_t* img_ptr = img.data_ptr<uint8_t>();
  const int64_t* part_ptr = part.data_ptr<int64_t>();
  const float* fac_ptr = fac.defined() ? fac.data_ptr<float>() : nullptr;
  float* out_ptr = out.data_ptr<float>();
  at::parallel_for(0, m, 256, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const uint8_t* left = img_ptr + k * pixels;
      const uint8_t* right = img_ptr + part_ptr[k] * pixels;
      float* o = out_ptr + k * pixels;
      if (fac_ptr == nullptr) {
        for (int64_t q = 0; q < pixels; ++q) {
          const uint8_t l = left_index[q] >= 0 ? left[left_index[q]] : 0;
          const uint8_t r = right_index[q] >= 0 ? right[right_index[q]] : 0;
          o[q] = scale[std::max(l, r)];
        }
      } else {
        const float fl = fac_ptr[2 * k], fr = fac_ptr[2 * k + 1];
        for (int64_t q = 0; q < pixels; ++q) {
          const float l = left_index[q] >= 0 ? scale[left[left_index[q]]] * fl : 0.0f;
          const float r = right_index[q] >= 0 ? scale[right[right_index[q]]] * fr : 0.0f;
          o[q] = std::max(l, r);
        }
      }
    }
  });
  return out;
}

Benchmark build_fashion_benchmark(const std::string& name, const RawImages& train,
                                  const RawImages& test, const EmbeddedOptions& options) {
  options.validate();
  const bool pairs = name == "multi-fashion" || name == "multi-fashion-mixed";
  const bool mixed = name == "multi-fashion-mixed";
  TORCH_CHECK(pairs || name == "fashion-binary", "'", name,
              "' is not a Fashion-MNIST benchmark (expected multi-fashion, fashion-binary or "
              "multi-fashion-mixed)");
  check_raw(train, name + " training data");
  check_raw(test, name + " test data");
  const int64_t n_all = train.images.size(0);
  const int64_t n_val = options.val_size();
  const int64_t n_train = n_all - n_val;
  const int64_t min_items = pairs ? 2 : 1;
  TORCH_CHECK(n_train >= min_items && n_val >= min_items, name, ": val_size ", n_val, " leaves ",
              n_train, " of the ", n_all, " training items for training (", name,
              " needs at least ", min_items, " in each split)");
  TORCH_CHECK(test.images.size(0) >= min_items, name, ": needs at least ", min_items,
              " test items, got ", test.images.size(0));
  TORCH_CHECK(options.train_subset() <= n_train, "train_subset (", options.train_subset(),
              ") exceeds the ", n_train, " training items of ", name);
  const int64_t m_train = options.train_subset() > 0 ? options.train_subset() : n_train;

  const RawImages raw_train = slice_raw(train, 0, n_train);
  const RawImages raw_val = slice_raw(train, n_train, n_val);

  Benchmark b;
  b.name = name;
  b.seed = options.seed();
  if (!pairs) {
    b.groups = {TaskGroup(GroupType::binary, kClasses, "classes")};
    b.task_names = fashion_mnist_class_names();
    b.train = binary_split(raw_train, m_train);
    b.val = binary_split(raw_val, n_val);
    b.test = binary_split(test, test.images.size(0));
    b.target_scaling = {TargetScaling{}};
    return b;
  }

  // Draw order: partners of train, val, test; then (mixed) factors of train, val, test. So
  // multi-fashion and multi-fashion-mixed share their partners for a given seed.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed());
  const at::Tensor p_train = draw_partners(n_train, gen);
  const at::Tensor p_val = draw_partners(n_val, gen);
  const at::Tensor p_test = draw_partners(test.images.size(0), gen);
  at::Tensor f_train, f_val, f_test;
  if (mixed) {
    f_train = draw_factors(n_train, gen);
    f_val = draw_factors(n_val, gen);
    f_test = draw_factors(test.images.size(0), gen);
    b.groups.emplace_back(GroupType::regression, 2, "factors");
    b.task_names = {"left_factor", "right_factor"};
    TargetScaling scaling;
    scaling.mean = at::full({2}, kFactorMean, at::kDouble);
    scaling.std = at::full({2}, kFactorStd, at::kDouble);
    b.target_scaling.push_back(scaling);
  }
  b.groups.emplace_back(GroupType::multiclass, kClasses, "left");
  b.groups.emplace_back(GroupType::multiclass, kClasses, "right");
  b.task_names.push_back("left");
  b.task_names.push_back("right");
  b.target_scaling.resize(b.groups.size());
  b.train = pair_split(raw_train, p_train, f_train, m_train);
  b.val = pair_split(raw_val, p_val, f_val, n_val);
  b.test = pair_split(test, p_test, f_test, test.images.size(0));
  return b;
}

SyntheticRegressionParams draw_synthetic_regression_params(at::Generator& generator) {
  SyntheticRegressionParams p;
  p.A = at::randn({kSynthHidden, kSynthInputs}, generator, at::kDouble)
            .div_(std::sqrt(static_cast<double>(kSynthInputs)));
  p.U = at::randn({kSynthTasks, kSynthHidden}, generator, at::kDouble)
            .div_(std::sqrt(static_cast<double>(kSynthHidden)));
  const at::Tensor scales = at::logspace(-1.0, 2.0, kSynthTasks, 10.0, at::kDouble);
  const at::Tensor noise = at::linspace(0.01, 0.5, kSynthTasks, at::kDouble);
  p.scales = scales.index_select(0, at::randperm(kSynthTasks, generator, at::kLong));
  p.noise_levels = noise.index_select(0, at::randperm(kSynthTasks, generator, at::kLong));
  return p;
}

Benchmark make_benchmark(const std::string& name, const EmbeddedOptions& options) {
  TORCH_CHECK(is_embedded_benchmark(name), "unknown benchmark '", name,
              "'; known benchmarks: ", known_names());
  options.validate();
  Benchmark b;
  if (name == "synthetic-regression") {
    b = make_synthetic_regression(options);
  } else {
    const FashionMnist data = load_fashion_mnist(options.data_dir());
    b = build_fashion_benchmark(name, data.train, data.test, options);
  }
  b.validate();
  return b;
}

}  // namespace bayesagg
