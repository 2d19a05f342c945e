// UTKFace's split sizes equal those of the authors' sklearn calls: train_test_split(test_size=0.2,
// stratify=age) on the ages seen at least 3 times, then 12.5 % of train to validation, stratified.
// Expected sizes were computed with scikit-learn 1.2.1 (Debian 12's python3-sklearn,
// random_state=42) on cases without ties among remainders, where sklearn's sizes do not depend on
// its generator; with ties, the lowest class index gets the unit (our documented rule).
#include "bayesagg/data/paper/utkface.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>
#include <tuple>
#include <vector>

namespace bayesagg {
namespace {

struct Case {
  std::vector<int64_t> counts, test, val;
};

// sklearn: test = bincount of y_test of train_test_split(X, y, test_size=0.2, stratify=y,
// random_state=42); val likewise with test_size=0.125 on the remaining counts.
const std::vector<Case> kSklearnCases = {
    {{40, 25, 12}, {8, 5, 3}, {4, 3, 1}},
    {{1000, 333, 77, 12}, {200, 67, 16, 2}, {101, 33, 8, 1}},
    {{50, 31, 17, 8}, {10, 6, 4, 2}, {5, 3, 2, 1}},
    {{100, 7, 13, 29, 3}, {20, 1, 3, 6, 1}, {11, 1, 1, 3, 0}},
    {{10, 3}, {2, 1}, {2, 0}},
};

std::vector<int64_t> minus(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<int64_t> r;
  for (size_t i = 0; i < a.size(); ++i) r.push_back(a[i] - b[i]);
  return r;
}

TEST(UTKFaceSplit, SizesPerClassEqualSklearns) {
  for (const Case& c : kSklearnCases) {
    const StratifiedSizes t = stratified_split_sizes(c.counts, 0.2);
    EXPECT_EQ(t.test, c.test) << "counts[0] " << c.counts[0];
    EXPECT_EQ(t.train, minus(c.counts, c.test));
    EXPECT_EQ(stratified_split_sizes(t.train, 0.125).test, c.val) << "counts[0] " << c.counts[0];
  }
}

TEST(UTKFaceSplit, ApproximateModeFloorsThenGivesTheLargestRemaindersAndBreaksTiesByIndex) {
  // 7 draws from 10/5/5: 3.5, 1.75, 1.75 -> 3, 1, 1 and two units: remainders .5, .75, .75.
  EXPECT_EQ(approximate_mode({10, 5, 5}, 7), (std::vector<int64_t>{3, 2, 2}));
  // 2 draws over four equal classes: ties, the lowest indices get them.
  EXPECT_EQ(approximate_mode({12, 12, 12, 12}, 2), (std::vector<int64_t>{1, 1, 0, 0}));
  EXPECT_EQ(approximate_mode({3, 4}, 0), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(approximate_mode({3, 4}, 7), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(approximate_mode({}, 0), std::vector<int64_t>{});
  EXPECT_THROW(approximate_mode({3, 4}, 8), c10::Error);
}

/// Ages: `per_age[a]` faces of age 10 + a, then the given rare ages.
at::Tensor ages_of(const std::vector<int64_t>& per_age, const std::vector<int64_t>& rare) {
  std::vector<int64_t> v;
  for (size_t a = 0; a < per_age.size(); ++a) v.insert(v.end(), per_age[a], 10 + int64_t(a));
  v.insert(v.end(), rare.begin(), rare.end());
  return at::tensor(v, at::kLong);
}

std::vector<int64_t> per_age(const at::Tensor& ages, const at::Tensor& idx, size_t n_ages) {
  std::vector<int64_t> c(n_ages, 0);
  const at::Tensor a = ages.index_select(0, idx);
  for (int64_t i = 0; i < a.size(0); ++i) {
    const int64_t k = a[i].item<int64_t>() - 10;
    if (k >= 0 && k < static_cast<int64_t>(n_ages)) ++c[static_cast<size_t>(k)];
  }
  return c;
}

TEST(UTKFaceSplit, TheIssuesCaseGives44Train6Validation12Test) {
  // 4 ages x 15 faces + 2 faces of rare ages: sklearn gives 44 / 6 / 12 (per-age rounding gave
  // 42 / 8 / 12).
  const at::Tensor ages = ages_of({15, 15, 15, 15}, {90, 91});
  const UTKFaceSplit s = utkface_split(ages, 0);
  EXPECT_EQ(s.train.size(0), 44);
  EXPECT_EQ(s.val.size(0), 6);
  EXPECT_EQ(s.test.size(0), 12);
  EXPECT_EQ(per_age(ages, s.test, 4), (std::vector<int64_t>{3, 3, 3, 3}));
  // 48 training faces, 42 kept: 10.5 per age, the two units to the lowest ages.
  EXPECT_EQ(per_age(ages, s.val, 4), (std::vector<int64_t>{1, 1, 2, 2}));
  // The rare ages are in train.
  const at::Tensor train_ages = ages.index_select(0, s.train);
  EXPECT_EQ((train_ages >= 90).sum().item<int64_t>(), 2);
}

TEST(UTKFaceSplit, SplitsHaveSklearnsSizesPerAgeAndPartitionTheItems) {
  for (const Case& c : kSklearnCases) {
    const at::Tensor ages = ages_of(c.counts, {3, 3, 7});
    const UTKFaceSplit s = utkface_split(ages, 5);
    EXPECT_EQ(per_age(ages, s.test, c.counts.size()), c.test);
    EXPECT_EQ(per_age(ages, s.val, c.counts.size()), c.val);
    const at::Tensor all = std::get<0>(at::cat({s.train, s.val, s.test}).sort());
    EXPECT_TRUE(at::equal(all, at::arange(ages.size(0), at::kLong)));  // each item exactly once
  }
}

}  // namespace
}  // namespace bayesagg
