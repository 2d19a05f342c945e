#include "bayesagg/data/dataset.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <sstream>
#include <vector>

using namespace bayesagg;

namespace {

/// Concatenation of an epoch's batches, with their sizes.
at::Tensor flatten(const EpochBatches& batches, std::vector<int64_t>* sizes = nullptr) {
  std::vector<at::Tensor> parts;
  for (const at::Tensor& idx : batches) {
    parts.push_back(idx);
    if (sizes) sizes->push_back(idx.size(0));
  }
  return parts.empty() ? at::empty({0}, at::kLong) : at::cat(parts);
}

MultiTaskSplit toy_split(int64_t n) {
  MultiTaskSplit s;
  s.inputs = at::arange(n * 3, at::kFloat).reshape({n, 3});
  s.labels = {at::arange(n, at::kFloat).reshape({n, 1}), at::arange(n, at::kLong) % 4};
  return s;
}

}  // namespace

TEST(EpochBatches, CoversEveryIndexOncePerEpochKeepingTheLastPartialBatch) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  for (int epoch = 0; epoch < 3; ++epoch) {
    const EpochBatches batches(1000, 256, gen);
    EXPECT_EQ(batches.num_batches(), 4);
    std::vector<int64_t> sizes;
    const at::Tensor all = flatten(batches, &sizes);
    EXPECT_EQ(sizes, (std::vector<int64_t>{256, 256, 256, 232}));
    EXPECT_TRUE(at::equal(std::get<0>(all.sort()), at::arange(1000, at::kLong)));
    EXPECT_FALSE(at::equal(all, at::arange(1000, at::kLong)));  // shuffled
  }
  // exact multiple: no empty batch; fewer items than a batch: one batch
  EXPECT_EQ(EpochBatches(512, 256, gen).num_batches(), 2);
  EXPECT_EQ(EpochBatches(7, 256, gen).num_batches(), 1);
  EXPECT_EQ(EpochBatches(0, 256, gen).num_batches(), 0);
  EXPECT_EQ(flatten(EpochBatches(0, 256, gen)).numel(), 0);
}

TEST(EpochBatches, IsDeterministicPerSeedAndInOrderWithoutGenerator) {
  const auto epochs = [](uint64_t seed) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    std::vector<at::Tensor> orders;
    for (int e = 0; e < 3; ++e) orders.push_back(flatten(EpochBatches(300, 64, gen)));
    return orders;
  };
  const auto a = epochs(11), b = epochs(11), c = epochs(12);
  for (int e = 0; e < 3; ++e) {
    EXPECT_TRUE(at::equal(a[e], b[e]));
    EXPECT_FALSE(at::equal(a[e], c[e]));
  }
  EXPECT_FALSE(at::equal(a[0], a[1]));  // a new permutation each epoch
  const EpochBatches ordered(10, 4);
  EXPECT_TRUE(at::equal(flatten(ordered), at::arange(10, at::kLong)));
  EXPECT_TRUE(at::equal(ordered[2], at::tensor({8, 9}, at::kLong)));
  EXPECT_THROW(ordered[3], c10::Error);
  EXPECT_THROW(EpochBatches(10, 0), c10::Error);
}

TEST(MultiTaskSplit, BatchSelectsRowsOfInputsAndEveryLabel) {
  const MultiTaskSplit s = toy_split(10);
  EXPECT_EQ(s.size(), 10);
  const MultiTaskBatch b = s.batch(at::tensor({7, 2, 2}, at::kLong));
  EXPECT_TRUE(at::equal(
      b.inputs, at::tensor({21.f, 22.f, 23.f, 6.f, 7.f, 8.f, 6.f, 7.f, 8.f}).reshape({3, 3})));
  ASSERT_EQ(b.labels.size(), 2u);
  EXPECT_TRUE(at::equal(b.labels[0], at::tensor({7.f, 2.f, 2.f}).reshape({3, 1})));
  EXPECT_TRUE(at::equal(b.labels[1], at::tensor({3, 2, 2}, at::kLong)));
  // head copies the first rows; slice is a view
  const MultiTaskSplit h = s.head(4);
  EXPECT_EQ(h.size(), 4);
  EXPECT_TRUE(at::equal(h.labels[1], at::tensor({0, 1, 2, 3}, at::kLong)));
  EXPECT_NE(h.inputs.data_ptr(), s.inputs.data_ptr());
  const MultiTaskSplit v = s.slice(2, 3);
  EXPECT_EQ(v.inputs.data_ptr<float>(), s.inputs.data_ptr<float>() + 6);
  EXPECT_THROW(s.head(11), c10::Error);
  EXPECT_THROW(s.slice(8, 3), c10::Error);
}

TEST(MultiTaskSplit, CheckSplitNamesTheBadGroup) {
  const std::vector<TaskGroup> groups = {TaskGroup(GroupType::regression, 1),
                                         TaskGroup(GroupType::multiclass, 4)};
  MultiTaskSplit s = toy_split(6);
  EXPECT_NO_THROW(check_split(s, groups, "toy"));
  s.labels[1][0] = 4;  // out of range class
  try {
    check_split(s, groups, "toy");
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("group 1"), std::string::npos) << e.msg();
  }
  s = toy_split(6);
  s.labels.pop_back();
  EXPECT_THROW(check_split(s, groups, "toy"), c10::Error);
}

TEST(Benchmark, TargetScalingRoundTripsAndValidates) {
  TargetScaling t;
  t.mean = at::tensor({1.0, -2.0}, at::kDouble);
  t.std = at::tensor({10.0, 0.5}, at::kDouble);
  const at::Tensor z = at::tensor({0.5f, 2.f, -1.f, 0.f}).reshape({2, 2});
  const at::Tensor y = t.to_original(z);
  EXPECT_EQ(y.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::allclose(y, at::tensor({6.f, -1.f, -9.f, -2.f}).reshape({2, 2})));
  EXPECT_TRUE(at::allclose(t.to_standardised(y), z));
  EXPECT_TRUE(at::equal(TargetScaling{}.to_original(z), z));

  Benchmark b;
  b.name = "toy";
  b.groups = {TaskGroup(GroupType::regression, 1), TaskGroup(GroupType::multiclass, 4)};
  b.task_names = {"r", "c"};
  b.train = toy_split(6);
  b.val = toy_split(3);
  b.test = toy_split(2);
  b.target_scaling = {TargetScaling{at::tensor({1.0}, at::kDouble), at::tensor({2.0}, at::kDouble)},
                      TargetScaling{}};
  EXPECT_NO_THROW(b.validate());
  EXPECT_EQ(b.input_shape(), (std::vector<int64_t>{3}));
  EXPECT_TRUE(at::allclose(b.to_original(0, at::ones({1, 1})), at::full({1, 1}, 3.0f)));
  std::ostringstream os;
  os << b;
  EXPECT_EQ(os.str(), "toy: regression:1,multiclass:4; inputs [3]; train 6, val 3, test 2; seed 0");
  b.task_names.pop_back();
  EXPECT_THROW(b.validate(), c10::Error);
}
