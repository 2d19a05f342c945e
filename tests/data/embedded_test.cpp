#include "bayesagg/data/embedded.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "test_util.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <string>

using namespace bayesagg;
namespace fs = std::filesystem;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;

namespace {

/// The multi-fashion recipe written out pixel by pixel: a 36×36 zero canvas, the left image
/// (scaled to [0, 1], times its factor) at [0:28, 0:28], the right one at [6:34, 6:34] with a
/// pixel-wise max, then nearest resize 36 -> 28 reading canvas index floor(i * 36 / 28).
at::Tensor naive_compose(const at::Tensor& images, const at::Tensor& partners,
                         const at::Tensor& factors) {
  const int64_t m = partners.size(0);
  at::Tensor out = at::zeros({m, 1, 28, 28}, at::kFloat);
  const auto img = images.accessor<uint8_t, 3>();
  const auto part = partners.accessor<int64_t, 1>();
  auto o = out.accessor<float, 4>();
  for (int64_t k = 0; k < m; ++k) {
    const float fl = factors.defined() ? factors[k][0].item<float>() : 1.0f;
    const float fr = factors.defined() ? factors[k][1].item<float>() : 1.0f;
    float canvas[36][36] = {};
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) canvas[r][c] = static_cast<float>(img[k][r][c]) / 255.0f * fl;
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c)
        canvas[r + 6][c + 6] =
            std::max(canvas[r + 6][c + 6], static_cast<float>(img[part[k]][r][c]) / 255.0f * fr);
    for (int i = 0; i < 28; ++i)
      for (int j = 0; j < 28; ++j) o[k][0][i][j] = canvas[i * 36 / 28][j * 36 / 28];
  }
  return out;
}

/// Seeded random uint8 images with labels 0, 1, ..., 9, 0, 1, ...
RawImages random_raw(int64_t n, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return {at::randint(0, 256, {n, 28, 28}, gen, at::kLong).to(at::kByte),
          at::arange(n, at::kLong).remainder(10)};
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

void expect_splits_equal(const MultiTaskSplit& a, const MultiTaskSplit& b) {
  EXPECT_TRUE(at::equal(a.inputs, b.inputs));
  ASSERT_EQ(a.labels.size(), b.labels.size());
  for (size_t g = 0; g < a.labels.size(); ++g) EXPECT_TRUE(at::equal(a.labels[g], b.labels[g]));
  EXPECT_EQ(a.partners.defined(), b.partners.defined());
  if (a.partners.defined()) EXPECT_TRUE(at::equal(a.partners, b.partners));
}

void expect_benchmarks_equal(const Benchmark& a, const Benchmark& b) {
  expect_splits_equal(a.train, b.train);
  expect_splits_equal(a.val, b.val);
  expect_splits_equal(a.test, b.test);
}

/// Checks the multi-fashion(-mixed) invariants of one split built from `raw`.
void check_pair_split(const MultiTaskSplit& s, const RawImages& raw, bool mixed,
                      bool check_images = true) {
  const int64_t m = s.size();
  ASSERT_EQ(s.inputs.sizes(), c10::IntArrayRef({m, 1, 28, 28}));
  EXPECT_EQ(s.inputs.scalar_type(), at::kFloat);
  EXPECT_GE(s.inputs.min().item<float>(), 0.0f);
  EXPECT_LE(s.inputs.max().item<float>(), 1.0f);
  ASSERT_EQ(s.labels.size(), mixed ? 3u : 2u);
  const at::Tensor& left = s.labels[mixed ? 1 : 0];
  const at::Tensor& right = s.labels[mixed ? 2 : 1];
  EXPECT_EQ(left.scalar_type(), at::kLong);
  EXPECT_EQ(right.scalar_type(), at::kLong);
  ASSERT_TRUE(s.partners.defined());
  const at::Tensor own = at::arange(m, at::kLong);
  EXPECT_FALSE((s.partners == own).any().item<bool>()) << "an item is its own partner";
  EXPECT_GE(s.partners.min().item<int64_t>(), 0);
  EXPECT_LT(s.partners.max().item<int64_t>(), raw.images.size(0));
  EXPECT_TRUE(at::equal(left, raw.labels.narrow(0, 0, m)));
  EXPECT_TRUE(at::equal(right, raw.labels.index_select(0, s.partners)));
  at::Tensor factors;
  if (mixed) {
    ASSERT_EQ(s.labels[0].sizes(), c10::IntArrayRef({m, 2}));
    EXPECT_EQ(s.labels[0].scalar_type(), at::kFloat);
    factors = (s.labels[0] * 0.2165f + 0.625f).contiguous();
    EXPECT_GE(factors.min().item<float>(), 0.25f - 1e-6f);
    EXPECT_LE(factors.max().item<float>(), 1.0f + 1e-6f);
  }
  if (!check_images) return;
  // the inputs are the composition of each item with its partner (factors recovered from the
  // standardised labels, hence the float32 rounding tolerance)
  const at::Tensor expected = compose_pairs(raw.images, s.partners, factors);
  EXPECT_LE(max_abs_diff(s.inputs, expected), mixed ? 1e-5 : 0.0);
}

}  // namespace

// ------------------------------------------------------------------ composition

TEST(MultiFashion, ResizeReadsFloorOfIn36Over28) {
  const at::Tensor s = resize_source_index();
  ASSERT_EQ(s.numel(), 28);
  for (int64_t i = 0; i < 28; ++i) EXPECT_EQ(s[i].item<int64_t>(), (i * 36) / 28) << i;
  EXPECT_EQ(s[27].item<int64_t>(), 34);
}

TEST(MultiFashion, ComposesHandMadeImagesAsTheRecipe) {
  // image 0: a ramp; image 1: all 255; image 2: seeded noise; image 3: a single bright pixel
  at::Tensor images = at::zeros({4, 28, 28}, at::kByte);
  images[0] = (at::arange(28 * 28, at::kLong) % 256).to(at::kByte).reshape({28, 28});
  images[1].fill_(255);
  images[2] = random_raw(1, 5).images[0];
  images[3][0][0] = 200;
  const at::Tensor partners = at::tensor({1, 3, 0, 2}, at::kLong);
  const at::Tensor out = compose_pairs(images, partners);
  ASSERT_EQ(out.sizes(), c10::IntArrayRef({4, 1, 28, 28}));
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(out, naive_compose(images, partners, {})));

  // by hand, item 0 (left = ramp, right = all 255): output (i, j) reads canvas (s_i, s_j)
  const auto px = [&](int64_t k, int64_t i, int64_t j) { return out[k][0][i][j].item<float>(); };
  const auto ramp = [](int64_t r, int64_t c) {
    return static_cast<float>((r * 28 + c) % 256) / 255.0f;
  };
  EXPECT_EQ(px(0, 0, 0), ramp(0, 0));
  EXPECT_EQ(px(0, 4, 1), ramp(5, 1));  // canvas (5, 1): left only
  EXPECT_EQ(px(0, 5, 5), 1.0f);        // canvas (6, 6): the right image's all-255 corner
  EXPECT_EQ(px(0, 27, 27), 0.0f);      // canvas (34, 34): outside both images
  EXPECT_EQ(px(0, 27, 3), 0.0f);       // canvas (34, 3): below the left, left of the right
  // item 1 (right = one pixel at (0, 0), i.e. canvas (6, 6), read by output (5, 5))
  EXPECT_EQ(px(1, 5, 5), std::max(1.0f, 200.0f / 255.0f));
  // item 3 (left = one pixel, right = noise): output (22, 22) reads canvas (28, 28) = right (22,
  // 22)
  EXPECT_EQ(px(3, 22, 22), images[2][22][22].item<uint8_t>() / 255.0f);
  EXPECT_EQ(px(3, 0, 0), 200.0f / 255.0f);

  // with intensity factors, each image is scaled before the max
  const at::Tensor factors =
      at::tensor({0.5f, 0.25f, 1.0f, 0.3f, 0.7f, 0.9f, 0.26f, 0.99f}).reshape({4, 2});
  const at::Tensor scaled = compose_pairs(images, partners, factors);
  EXPECT_LE(max_abs_diff(scaled, naive_compose(images, partners, factors)), 1e-7);
  EXPECT_NEAR(scaled[0][0][5][5].item<float>(), std::max(0.25f, ramp(6, 6) * 0.5f), 1e-7);

  // fewer outputs than images: item k still takes images[k] as its left image
  const at::Tensor first_two = compose_pairs(images, partners.narrow(0, 0, 2));
  EXPECT_TRUE(at::equal(first_two, out.narrow(0, 0, 2)));
  EXPECT_THROW(compose_pairs(images, at::tensor({4}, at::kLong)), c10::Error);
  EXPECT_THROW(compose_pairs(images.to(at::kFloat), partners), c10::Error);
}

TEST(MultiFashion, PartnersAreUniformOverTheOtherItems) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  // n = 2: each item's only other item
  EXPECT_TRUE(at::equal(draw_partners(2, gen), at::tensor({1, 0}, at::kLong)));
  // n = 5, many draws: never itself, each other item about 1/4 of the time
  const int64_t n = 5, rounds = 4000;
  at::Tensor counts = at::zeros({n, n}, at::kLong);
  for (int64_t r = 0; r < rounds; ++r) {
    const at::Tensor p = draw_partners(n, gen);
    counts.view({-1}).index_add_(0, at::arange(n, at::kLong) * n + p, at::ones({n}, at::kLong));
  }
  EXPECT_EQ(counts.diagonal().sum().item<int64_t>(), 0);
  const at::Tensor off = counts.masked_select(~at::eye(n, at::kBool)).to(at::kDouble);
  // binomial(4000, 1/4): sd ≈ 27, so ±6 sd = 164
  EXPECT_LT((off - rounds / 4.0).abs().max().item<double>(), 164);
  EXPECT_THROW(draw_partners(1, gen), c10::Error);
}

// ------------------------------------------------------------------ Fashion builders (hand-made
// data)

TEST(FashionBuilders, MultiFashionShapesLabelsAndDeterminism) {
  const RawImages train = random_raw(30, 1), test = random_raw(12, 2);
  const auto opts = EmbeddedOptions().val_size(8).seed(7);
  const Benchmark a = build_fashion_benchmark("multi-fashion", train, test, opts);
  EXPECT_NO_THROW(a.validate());
  ASSERT_EQ(a.groups.size(), 2u);
  EXPECT_EQ(a.groups[0].str(), "multiclass:10");
  EXPECT_EQ(a.groups[1].str(), "multiclass:10");
  EXPECT_EQ(a.task_names, (std::vector<std::string>{"left", "right"}));
  EXPECT_EQ(a.train.size(), 22);
  EXPECT_EQ(a.val.size(), 8);
  EXPECT_EQ(a.test.size(), 12);
  EXPECT_EQ(a.seed, 7u);
  check_pair_split(a.train, {train.images.narrow(0, 0, 22), train.labels.narrow(0, 0, 22)}, false);
  check_pair_split(a.val, {train.images.narrow(0, 22, 8), train.labels.narrow(0, 22, 8)}, false);
  check_pair_split(a.test, test, false);

  expect_benchmarks_equal(a, build_fashion_benchmark("multi-fashion", train, test, opts));
  const Benchmark c =
      build_fashion_benchmark("multi-fashion", train, test, EmbeddedOptions(opts).seed(8));
  EXPECT_FALSE(at::equal(a.train.partners, c.train.partners));
  EXPECT_FALSE(at::equal(a.test.partners, c.test.partners));
  EXPECT_FALSE(at::equal(a.train.inputs, c.train.inputs));
  // the partners are the documented draws: train, val, test from one generator seeded 7
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  EXPECT_TRUE(at::equal(a.train.partners, draw_partners(22, gen)));
  EXPECT_TRUE(at::equal(a.val.partners, draw_partners(8, gen)));
  EXPECT_TRUE(at::equal(a.test.partners, draw_partners(12, gen)));
}

TEST(FashionBuilders, MixedAddsFactorsAndSharesPartnersWithMultiFashion) {
  const RawImages train = random_raw(30, 1), test = random_raw(12, 2);
  const auto opts = EmbeddedOptions().val_size(8).seed(3);
  const Benchmark mixed = build_fashion_benchmark("multi-fashion-mixed", train, test, opts);
  const Benchmark plain = build_fashion_benchmark("multi-fashion", train, test, opts);
  EXPECT_NO_THROW(mixed.validate());
  ASSERT_EQ(mixed.groups.size(), 3u);
  EXPECT_EQ(mixed.groups[0].str(), "regression:2");
  EXPECT_EQ(mixed.task_names,
            (std::vector<std::string>{"left_factor", "right_factor", "left", "right"}));
  check_pair_split(mixed.train, {train.images.narrow(0, 0, 22), train.labels.narrow(0, 0, 22)},
                   true);
  check_pair_split(mixed.val, {train.images.narrow(0, 22, 8), train.labels.narrow(0, 22, 8)}, true);
  check_pair_split(mixed.test, test, true);
  EXPECT_TRUE(at::equal(mixed.train.partners, plain.train.partners));
  EXPECT_TRUE(at::equal(mixed.test.labels[2], plain.test.labels[1]));
  // the analytic standardisation, exposed for reporting on the original scale
  ASSERT_TRUE(mixed.target_scaling.at(0).defined());
  EXPECT_TRUE(at::allclose(mixed.target_scaling[0].mean, at::full({2}, 0.625, at::kDouble)));
  EXPECT_TRUE(at::allclose(mixed.target_scaling[0].std, at::full({2}, 0.2165, at::kDouble)));
  EXPECT_FALSE(mixed.target_scaling[1].defined());
  const at::Tensor f = mixed.to_original(0, mixed.train.labels[0]);
  EXPECT_GE(f.min().item<float>(), 0.25f - 1e-6f);
  EXPECT_LT(f.max().item<float>(), 1.0f + 1e-6f);
  expect_benchmarks_equal(mixed, build_fashion_benchmark("multi-fashion-mixed", train, test, opts));
  const Benchmark other =
      build_fashion_benchmark("multi-fashion-mixed", train, test, EmbeddedOptions(opts).seed(4));
  EXPECT_FALSE(at::equal(mixed.train.labels[0], other.train.labels[0]));
}

TEST(FashionBuilders, FashionBinaryIsOneHotOfTheClass) {
  const RawImages train = random_raw(30, 1), test = random_raw(12, 2);
  const Benchmark b =
      build_fashion_benchmark("fashion-binary", train, test, EmbeddedOptions().val_size(10));
  EXPECT_NO_THROW(b.validate());
  ASSERT_EQ(b.groups.size(), 1u);
  EXPECT_EQ(b.groups[0].str(), "binary:10");
  EXPECT_EQ(b.task_names, fashion_mnist_class_names());
  EXPECT_EQ(b.train.size(), 20);
  EXPECT_EQ(b.val.size(), 10);
  EXPECT_EQ(b.test.size(), 12);
  EXPECT_FALSE(b.train.partners.defined());
  EXPECT_TRUE(at::equal(b.train.inputs,
                        train.images.narrow(0, 0, 20).to(at::kFloat).div(255.0f).unsqueeze(1)));
  const at::Tensor& y = b.val.labels[0];
  ASSERT_EQ(y.sizes(), c10::IntArrayRef({10, 10}));
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(y.sum(1), at::ones({10})));
  EXPECT_TRUE(at::equal(y.argmax(1), train.labels.narrow(0, 20, 10)));  // the last items
}

TEST(FashionBuilders, TrainSubsetIsAPrefixOfTheFullBuild) {
  const RawImages train = random_raw(30, 1), test = random_raw(12, 2);
  for (const std::string name : {"multi-fashion", "multi-fashion-mixed", "fashion-binary"}) {
    const auto opts = EmbeddedOptions().val_size(8).seed(5);
    const Benchmark full = build_fashion_benchmark(name, train, test, opts);
    const Benchmark sub =
        build_fashion_benchmark(name, train, test, EmbeddedOptions(opts).train_subset(6));
    EXPECT_EQ(sub.train.size(), 6) << name;
    expect_splits_equal(sub.train, full.train.slice(0, 6));
    expect_splits_equal(sub.val, full.val);
    expect_splits_equal(sub.test, full.test);
    EXPECT_THROW(build_fashion_benchmark(name, train, test, EmbeddedOptions(opts).train_subset(23)),
                 c10::Error);
  }
  EXPECT_THROW(
      build_fashion_benchmark("multi-fashion", train, test, EmbeddedOptions().val_size(29)),
      c10::Error);
  EXPECT_THROW(build_fashion_benchmark("synthetic-regression", train, test, EmbeddedOptions()),
               c10::Error);
}

TEST(EmbeddedBenchmarks, UnknownNamesAndMissingDataGiveHelpfulErrors) {
  EXPECT_EQ(embedded_benchmark_names(),
            (std::vector<std::string>{"multi-fashion", "fashion-binary", "multi-fashion-mixed",
                                      "synthetic-regression"}));
  EXPECT_TRUE(is_embedded_benchmark("fashion-binary"));
  EXPECT_FALSE(is_embedded_benchmark("mnist"));
  for (const auto& info : embedded_benchmarks()) {
    EXPECT_NO_THROW(parse_groups(info.groups)) << info.name;
  }
  std::string msg = error_of([] { make_benchmark("multi-mnist"); });
  EXPECT_TRUE(contains(msg, "multi-mnist")) << msg;
  for (const auto& name : embedded_benchmark_names()) EXPECT_TRUE(contains(msg, name)) << msg;

  msg = error_of([] {
    make_benchmark("multi-fashion", EmbeddedOptions().data_dir("/nonexistent/fashion-mnist"));
  });
  EXPECT_TRUE(contains(msg, "/nonexistent/fashion-mnist")) << msg;
  EXPECT_TRUE(contains(msg, "apt-get install dataset-fashion-mnist")) << msg;
  EXPECT_TRUE(contains(msg, "--data-dir")) << msg;
  // an existing folder without the files
  const fs::path empty =
      fs::temp_directory_path() / ("bayesagg_empty_" + std::to_string(std::random_device{}()));
  fs::create_directories(empty);
  msg = error_of(
      [&] { make_benchmark("fashion-binary", EmbeddedOptions().data_dir(empty.string())); });
  fs::remove_all(empty);
  EXPECT_TRUE(contains(msg, "train-images-idx3-ubyte.gz")) << msg;
  EXPECT_TRUE(contains(msg, "apt-get install dataset-fashion-mnist")) << msg;
  EXPECT_THROW(make_benchmark("synthetic-regression", EmbeddedOptions().train_subset(-1)),
               c10::Error);
}

// ------------------------------------------------------------------ synthetic-regression

class SyntheticRegression : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    bench_ = std::make_unique<Benchmark>(
        make_benchmark("synthetic-regression", EmbeddedOptions().seed(4)));
  }
  static void TearDownTestSuite() { bench_.reset(); }
  static std::unique_ptr<Benchmark> bench_;
};
std::unique_ptr<Benchmark> SyntheticRegression::bench_;

TEST_F(SyntheticRegression, HasTheSpecifiedSplitsAndGroups) {
  const Benchmark& b = *bench_;
  ASSERT_EQ(b.groups.size(), 1u);
  EXPECT_EQ(b.groups[0].str(), "regression:10");
  EXPECT_EQ(b.task_names.size(), 10u);
  EXPECT_EQ(b.train.inputs.sizes(), c10::IntArrayRef({20000, 32}));
  EXPECT_EQ(b.val.inputs.sizes(), c10::IntArrayRef({5000, 32}));
  EXPECT_EQ(b.test.inputs.sizes(), c10::IntArrayRef({5000, 32}));
  EXPECT_EQ(b.train.labels[0].sizes(), c10::IntArrayRef({20000, 10}));
  EXPECT_EQ(b.train.inputs.scalar_type(), at::kFloat);
  EXPECT_EQ(b.test.labels[0].scalar_type(), at::kFloat);
  EXPECT_EQ(b.input_shape(), (std::vector<int64_t>{32}));
}

TEST_F(SyntheticRegression, ScalesAndNoiseLevelsAreTheSpecifiedSets) {
  const Benchmark& b = *bench_;
  ASSERT_TRUE(b.task_scales.defined() && b.noise_levels.defined());
  const at::Tensor scales = std::get<0>(b.task_scales.sort());
  const at::Tensor noise = std::get<0>(b.noise_levels.sort());
  for (int64_t t = 0; t < 10; ++t) {
    EXPECT_NEAR(scales[t].item<double>(), 0.1 * std::pow(1000.0, t / 9.0),
                1e-12 * std::pow(1000.0, t / 9.0));
    EXPECT_NEAR(noise[t].item<double>(), 0.01 + 0.49 * t / 9.0, 1e-12);
  }
  // shuffled with the data seed: some seed among a few gives another order
  bool differs = false;
  for (uint64_t seed : {5, 6, 7}) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    const auto p = draw_synthetic_regression_params(gen);
    differs = differs || !at::equal(p.scales, b.task_scales) ||
              !at::equal(p.noise_levels, b.noise_levels);
  }
  EXPECT_TRUE(differs);
}

TEST_F(SyntheticRegression, StandardisesWithTrainingStatistics) {
  const Benchmark& b = *bench_;
  const at::Tensor& y = b.train.labels[0];
  EXPECT_LT(y.to(at::kDouble).mean(0).abs().max().item<double>(), 1e-6);
  EXPECT_LT((y.to(at::kDouble).std(0, /*unbiased=*/false) - 1).abs().max().item<double>(), 1e-6);
  ASSERT_EQ(b.target_scaling.size(), 1u);
  ASSERT_TRUE(b.target_scaling[0].defined());
  // targets are on the scale sigma_t: their training std is a sizeable fraction of it
  const at::Tensor ratio = b.target_scaling[0].std / b.task_scales;
  EXPECT_GT(ratio.min().item<double>(), 0.05);
  EXPECT_LT(ratio.max().item<double>(), 1.5);
}

TEST_F(SyntheticRegression, FollowsTheGenerativeModelExactly) {
  const Benchmark& b = *bench_;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const auto p = draw_synthetic_regression_params(gen);
  EXPECT_TRUE(at::equal(p.scales, b.task_scales));
  EXPECT_TRUE(at::equal(p.noise_levels, b.noise_levels));
  EXPECT_EQ(p.A.sizes(), c10::IntArrayRef({16, 32}));
  EXPECT_EQ(p.U.sizes(), c10::IntArrayRef({10, 16}));
  const at::Tensor x = at::randn({30000, 32}, gen, at::kDouble);
  const at::Tensor eps = at::randn({30000, 10}, gen, at::kDouble);
  const at::Tensor y = p.scales * (at::tanh(at::matmul(at::tanh(at::matmul(x, p.A.t())), p.U.t())) +
                                   p.noise_levels * eps);
  const at::Tensor inputs = at::cat({b.train.inputs, b.val.inputs, b.test.inputs});
  EXPECT_TRUE(at::equal(inputs, x.to(at::kFloat)));
  const at::Tensor labels = at::cat({b.train.labels[0], b.val.labels[0], b.test.labels[0]});
  const at::Tensor original = b.to_original(0, labels.to(at::kDouble));
  // float32 labels: relative error ~1e-7 of the standardised value
  EXPECT_LT(((original - y).abs() / b.target_scaling[0].std).max().item<double>(), 1e-5);
  EXPECT_TRUE(at::allclose(b.target_scaling[0].mean, y.narrow(0, 0, 20000).mean(0)));
  // entries of A and U have variances 1/32 and 1/16 (10% tolerance: 512 and 160 samples)
  EXPECT_NEAR(p.A.var().item<double>() * 32, 1.0, 0.2);
  EXPECT_NEAR(p.U.var().item<double>() * 16, 1.0, 0.35);
}

TEST_F(SyntheticRegression, IsDeterministicPerSeedAndSubsetsArePrefixes) {
  const Benchmark& a = *bench_;
  const Benchmark sub =
      make_benchmark("synthetic-regression", EmbeddedOptions().seed(4).train_subset(100));
  expect_splits_equal(sub.train, a.train.slice(0, 100));
  expect_splits_equal(sub.test, a.test);
  EXPECT_TRUE(at::equal(sub.target_scaling[0].std, a.target_scaling[0].std));
  const Benchmark c = make_benchmark("synthetic-regression", EmbeddedOptions().seed(5));
  EXPECT_FALSE(at::equal(a.train.inputs, c.train.inputs));
  EXPECT_THROW(make_benchmark("synthetic-regression", EmbeddedOptions().train_subset(20001)),
               c10::Error);
}

// ------------------------------------------------------------------ real Fashion-MNIST

class RealFashionMnist : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (fs::exists(fs::path(kDefaultFashionMnistDir) / "train-images-idx3-ubyte.gz")) {
      data_ = std::make_unique<FashionMnist>(load_fashion_mnist());
    }
  }
  static void TearDownTestSuite() { data_.reset(); }
  void SetUp() override {
    if (!data_) {
      GTEST_SKIP() << "Fashion-MNIST is not installed in " << kDefaultFashionMnistDir
                   << " (apt-get install dataset-fashion-mnist)";
    }
  }
  static std::unique_ptr<FashionMnist> data_;
};
std::unique_ptr<FashionMnist> RealFashionMnist::data_;

TEST_F(RealFashionMnist, ReadsTheKnownFiles) {
  const FashionMnist& d = *data_;
  EXPECT_EQ(d.train.images.sizes(), c10::IntArrayRef({60000, 28, 28}));
  EXPECT_EQ(d.test.images.sizes(), c10::IntArrayRef({10000, 28, 28}));
  EXPECT_TRUE(at::equal(d.train.labels.narrow(0, 0, 4), at::tensor({9, 0, 0, 3}, at::kLong)));
  EXPECT_TRUE(at::equal(d.test.labels.narrow(0, 0, 4), at::tensor({9, 2, 1, 1}, at::kLong)));
  EXPECT_TRUE(at::equal(at::bincount(d.train.labels), at::full({10}, 6000, at::kLong)));
  EXPECT_TRUE(at::equal(at::bincount(d.test.labels), at::full({10}, 1000, at::kLong)));
  EXPECT_EQ(d.train.images[0].to(at::kLong).sum().item<int64_t>(), 76247);
}

TEST_F(RealFashionMnist, BuildsEachBenchmarkWithASubset) {
  const FashionMnist& d = *data_;
  const auto opts = EmbeddedOptions().train_subset(1000).seed(1);
  const RawImages val_raw{d.train.images.narrow(0, 50000, 10000),
                          d.train.labels.narrow(0, 50000, 10000)};
  for (const std::string name : {"multi-fashion", "fashion-binary", "multi-fashion-mixed"}) {
    const Benchmark b = build_fashion_benchmark(name, d.train, d.test, opts);
    EXPECT_NO_THROW(b.validate()) << name;
    EXPECT_EQ(b.train.size(), 1000) << name;
    EXPECT_EQ(b.val.size(), 10000) << name;
    EXPECT_EQ(b.test.size(), 10000) << name;
    EXPECT_EQ(b.input_shape(), (std::vector<int64_t>{1, 28, 28})) << name;
    if (name != "fashion-binary") {
      const bool mixed = name == "multi-fashion-mixed";
      check_pair_split(b.val, val_raw, mixed);
      check_pair_split(b.test, d.test, mixed, /*check_images=*/false);
      EXPECT_LT(b.train.partners.max().item<int64_t>(), 50000);  // partners from the whole split
    }
  }
  // the public entry point, with the default folder
  const Benchmark b = make_benchmark("multi-fashion", opts);
  expect_splits_equal(b.train,
                      build_fashion_benchmark("multi-fashion", d.train, d.test, opts).train);
}

/// Timing of the full builds (run with --gtest_also_run_disabled_tests).
TEST_F(RealFashionMnist, DISABLED_TimesFullBuilds) {
  using clock = std::chrono::steady_clock;
  for (const auto& name : embedded_benchmark_names()) {
    const auto t0 = clock::now();
    const Benchmark b = make_benchmark(name);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    std::cout << b << ": " << s << " s (make_benchmark, including reading the files)\n";
  }
  const auto t0 = clock::now();
  const FashionMnist d = load_fashion_mnist();
  std::cout << "load_fashion_mnist: " << std::chrono::duration<double>(clock::now() - t0).count()
            << " s\n";
}
