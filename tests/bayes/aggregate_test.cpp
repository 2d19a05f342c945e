#include "bayesagg/bayes/aggregate.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

using namespace bayesagg;

namespace {
struct Parts {
  std::vector<at::Tensor> means, vars;
};
Parts random_parts(uint64_t seed) {
  auto r = at::make_generator<at::CPUGeneratorImpl>(seed);
  Parts p;
  for (const int64_t t : {3, 1, 2}) {
    p.means.push_back(at::randn({5, t, 4}, r, at::kDouble));
    p.vars.push_back(at::rand({5, t, 4}, r, at::kDouble) * 3 + 1e-3);
  }
  return p;
}
}  // namespace

TEST(Aggregate, WeightsSumToOneOverTasks) {
  const Parts p = random_parts(1);
  std::vector<at::Tensor> tv;
  for (const auto& v : p.vars) tv.push_back(tempered_variance(v, 0.5));
  const at::Tensor w = aggregation_weights(tv);
  ASSERT_EQ(w.sizes(), (std::vector<int64_t>{5, 6, 4}));
  EXPECT_LT((w.sum(1) - 1).abs().max().item<double>(), 1e-14);
  EXPECT_GT(w.min().item<double>(), 0);
}

TEST(Aggregate, MatchesTheDefinitionElementwise) {
  const Parts p = random_parts(2);
  std::vector<at::Tensor> tv;
  for (const auto& v : p.vars) tv.push_back(tempered_variance(v, 0.3));
  const at::Tensor got = aggregate(p.means, tv);
  const at::Tensor mu = at::cat(p.means, 1), v = at::cat(p.vars, 1).clamp_min(1e-8).pow(0.3);
  const at::Tensor want = (mu / v).sum(1) / (1 / v).sum(1) / 5;
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-14);
}

TEST(Aggregate, ExponentZeroGivesThePlainMean) {
  const Parts p = random_parts(3);
  std::vector<at::Tensor> tv;
  for (const auto& v : p.vars) tv.push_back(tempered_variance(v, 0.0));
  const at::Tensor got = aggregate(p.means, tv);
  EXPECT_LT((got - at::cat(p.means, 1).mean(1) / 5).abs().max().item<double>(), 1e-14);
}

TEST(Aggregate, TaskOrderDoesNotMatter) {
  const Parts p = random_parts(4);
  std::vector<at::Tensor> tv;
  for (const auto& v : p.vars) tv.push_back(tempered_variance(v, 1.0));
  const at::Tensor a = aggregate(p.means, tv);
  // Reverse the groups, and permute the tasks inside the first one.
  const at::Tensor perm = at::tensor({2, 0, 1}, at::kLong);
  const at::Tensor b = aggregate({p.means[2], p.means[1], p.means[0].index_select(1, perm)},
                                 {tv[2], tv[1], tv[0].index_select(1, perm)});
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-14);
}

TEST(Aggregate, OneTaskGivesItsMeanOverB) {
  const Parts p = random_parts(5);
  const at::Tensor got = aggregate({p.means[1]}, {tempered_variance(p.vars[1], 0.7)});
  EXPECT_LT((got - p.means[1].squeeze(1) / 5).abs().max().item<double>(), 1e-15);
}

TEST(Aggregate, InverseVarianceWeightingAtExponentOne) {
  // Two tasks, variances 1 and 3: weights 3/4 and 1/4.
  const at::Tensor m1 = at::full({1, 1, 1}, 2.0, at::kDouble), m2 = at::full({1, 1, 1}, -2.0, at::kDouble);
  const at::Tensor v1 = at::full({1, 1, 1}, 1.0, at::kDouble), v2 = at::full({1, 1, 1}, 3.0, at::kDouble);
  const at::Tensor got = aggregate({m1, m2}, {tempered_variance(v1, 1), tempered_variance(v2, 1)});
  EXPECT_NEAR(got.item<double>(), 0.75 * 2 - 0.25 * 2, 1e-15);
  // The floor: a zero variance counts as 1e-8.
  EXPECT_NEAR(tempered_variance(at::zeros({1}, at::kDouble), 1.0).item<double>(), 1e-8, 1e-22);
}
