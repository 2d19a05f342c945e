// Metrics, Δm, model selection and the learning-rate schedule, on values checked by hand.
#include "bayesagg/data/embedded.h"
#include "bayesagg/train/checkpoint.h"
#include "bayesagg/train/metrics.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "meta_benchmark.h"

#include <cmath>
#include <filesystem>
#include <fstream>

namespace bayesagg {
namespace {

at::Tensor dvec(std::vector<double> v) { return at::tensor(v, at::kDouble); }

TEST(Metrics, AccuracyCountsArgmaxMatches) {
  const at::Tensor logits = dvec({0.1, 0.9, 0.8, 0.2, 0.3, 0.7, 0.6, 0.4}).reshape({4, 2});
  const at::Tensor labels = at::tensor(std::vector<int64_t>{1, 0, 0, 0}, at::kLong);
  // argmax: 1, 0, 1, 0 -> matches 1, 1, 0, 1 = 3/4.
  EXPECT_DOUBLE_EQ(accuracy(logits, labels), 0.75);
}

TEST(Metrics, BinaryAccuracyThresholdsLogitsAtZero) {
  const at::Tensor logits = dvec({-1.0, 0.5, 2.0, -0.1, 0.0});
  const at::Tensor labels = dvec({0, 1, 0, 0, 1});
  // predictions (logit > 0): 0, 1, 1, 0, 0 -> matches 1, 1, 0, 1, 0 = 3/5.
  EXPECT_DOUBLE_EQ(binary_accuracy(logits, labels), 0.6);
}

TEST(Metrics, AucMatchesPairCountingByHand) {
  // Positives 0.35, 0.8; negatives 0.1, 0.4: ordered pairs (pos > neg): 0.35>0.1, 0.8>0.1,
  // 0.8>0.4 -> 3 of 4 (the scikit-learn documentation's example).
  EXPECT_DOUBLE_EQ(roc_auc(dvec({0.1, 0.4, 0.35, 0.8}), dvec({0, 0, 1, 1})), 0.75);
  // A tie between a positive and a negative counts one half: pairs (0.5 vs 0.5) = 1/2,
  // (0.9 vs 0.5) = 1 -> 1.5 / 2.
  EXPECT_DOUBLE_EQ(roc_auc(dvec({0.5, 0.5, 0.9}), dvec({0, 1, 1})), 0.75);
  EXPECT_DOUBLE_EQ(roc_auc(dvec({3, 2, 1}), dvec({1, 1, 0})), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc(dvec({3, 2, 1}), dvec({0, 0, 1})), 0.0);
  EXPECT_TRUE(std::isnan(roc_auc(dvec({1, 2}), dvec({1, 1}))));
}

TEST(Metrics, MaeAndMseByHand) {
  const at::Tensor p = dvec({1.0, 2.0, 4.0}), y = dvec({1.5, 2.0, 1.0});
  EXPECT_DOUBLE_EQ(mean_absolute_error(p, y), (0.5 + 0.0 + 3.0) / 3.0);
  EXPECT_DOUBLE_EQ(mean_squared_error(p, y), (0.25 + 0.0 + 9.0) / 3.0);
}

TEST(Metrics, HigherIsBetterByMetricName) {
  EXPECT_TRUE(higher_is_better("left/accuracy"));
  EXPECT_TRUE(higher_is_better("auc"));
  EXPECT_TRUE(higher_is_better("all/argmax_accuracy"));
  EXPECT_FALSE(higher_is_better("task_3/mae"));
  EXPECT_FALSE(higher_is_better("mse"));
  EXPECT_THROW(higher_is_better("task/f1"), c10::Error);
}

TEST(DeltaM, SignsFollowHigherOrLowerIsBetter) {
  // accuracy 0.8 vs STL 0.75 (higher is better): -(0.8 - 0.75) / 0.75 = -1/15;
  // mae 1.1 vs STL 1.0 (lower is better): +(1.1 - 1.0) / 1.0 = 0.1;
  // delta_m = 100 / 2 * (-1/15 + 0.1) = 5/3.
  const MetricMap values = {{"a/accuracy", 0.8}, {"b/mae", 1.1}, {"c/mse", 7.0}};
  const MetricMap stl = {{"a/accuracy", 0.75}, {"b/mae", 1.0}};
  ASSERT_TRUE(delta_m(values, stl).has_value());
  EXPECT_NEAR(*delta_m(values, stl), 5.0 / 3.0, 1e-12);
  // Beating STL everywhere gives a negative delta_m: acc +10% (-10), mse -20% (-20) -> -15.
  EXPECT_NEAR(*delta_m({{"a/accuracy", 0.55}, {"c/mse", 0.8}}, {{"a/accuracy", 0.5}, {"c/mse", 1.0}}),
              -15.0, 1e-12);
  // Equal to the baselines: 0.
  EXPECT_DOUBLE_EQ(*delta_m(stl, stl), 0.0);
}

TEST(DeltaM, AbsentWithoutBaselinesAndErrorsOnMissingOrZero) {
  EXPECT_FALSE(delta_m({{"a/accuracy", 0.8}}, {}).has_value());
  EXPECT_THROW(delta_m({{"a/accuracy", 0.8}}, {{"b/accuracy", 0.7}}), c10::Error);
  EXPECT_THROW(delta_m({{"a/mae", 0.8}}, {{"a/mae", 0.0}}), c10::Error);
}

TEST(DeltaM, ReadsBaselineFilesFlatOrWithTestBlock) {
  const auto dir = std::filesystem::temp_directory_path() / "bayesagg_metrics_test";
  std::filesystem::create_directories(dir);
  const std::string flat = (dir / "flat.json").string(), nested = (dir / "nested.json").string(),
                    bad = (dir / "bad.json").string();
  std::ofstream(flat) << R"({"left/accuracy": 0.8, "right/accuracy": 0.78})";
  std::ofstream(nested) << R"({"test": {"task_0/mae": 1.5}, "val": {"task_0/mae": 1.4}})";
  std::ofstream(bad) << R"({"left/accuracy": "high"})";
  const MetricMap a = read_stl_baselines(flat);
  EXPECT_EQ(a.size(), 2u);
  EXPECT_DOUBLE_EQ(a.at("right/accuracy"), 0.78);
  EXPECT_DOUBLE_EQ(read_stl_baselines(nested).at("task_0/mae"), 1.5);
  try {
    read_stl_baselines(bad);
    FAIL() << "a non-numeric baseline must be rejected";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("left/accuracy"), std::string::npos) << e.msg();
  }
  std::filesystem::remove_all(dir);
}

Benchmark tiny(const std::string& name, std::vector<TaskGroup> groups,
               std::vector<std::string> tasks) {
  return bayesagg::testing::meta_benchmark(name, std::move(groups), std::move(tasks));
}

TEST(Metrics, FashionBinaryPlanHasAccuracyAucAndArgmax) {
  Benchmark b = tiny("fashion-binary", {TaskGroup(GroupType::binary, 3, "classes")},
                     {"a", "b", "c"});
  // 4 items of classes 0, 1, 2, 0 as one-hot labels.
  const at::Tensor y = at::one_hot(at::tensor(std::vector<int64_t>{0, 1, 2, 0}), 3).to(at::kFloat);
  const at::Tensor out =
      at::tensor(std::vector<float>{2, -1, -3, -1, 1, 0.5, -2, -1, -0.5, -1, -2, -3})
          .reshape({4, 3});
  const MetricMap m = compute_metrics(b, {out}, {y});
  EXPECT_EQ(m.size(), 13u);  // 3 accuracies, 3 AUCs, 1 argmax accuracy, 3 ECEs, 3 Briers
  // argmax per row: 0, 1, 2, 0 -> all right.
  EXPECT_DOUBLE_EQ(m.at("all/argmax_accuracy"), 1.0);
  // Task c: logits -3, 0.5, -0.5, -3 vs labels 0, 0, 1, 0: predictions 0, 1, 0, 0 -> 2/4.
  EXPECT_DOUBLE_EQ(m.at("c/accuracy"), 0.5);
  // Task c AUC: positive -0.5 beats negatives -3, -3 but not 0.5 -> 2/3.
  EXPECT_NEAR(m.at("c/auc"), 2.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(selection_score(b, m).primary, 1.0);
}

TEST(Metrics, SyntheticRegressionReportsMaeOnTheOriginalScale) {
  Benchmark b = tiny("synthetic-regression", {TaskGroup(GroupType::regression, 2, "targets")},
                     {"t0", "t1"});
  b.target_scaling[0].mean = dvec({10.0, 0.0});
  b.target_scaling[0].std = dvec({2.0, 100.0});
  b.task_scales = dvec({2.0, 100.0});
  const at::Tensor y = at::zeros({2, 2}, at::kFloat);
  const at::Tensor out = at::tensor(std::vector<float>{0.5f, 0.1f, -0.5f, 0.3f}).reshape({2, 2});
  const MetricMap m = compute_metrics(b, {out}, {y});
  ASSERT_EQ(m.size(), 2u);
  // Original scale: errors 0.5*2 and 0.5*2 -> 1.0; 0.1*100 and 0.3*100 -> 20.
  EXPECT_NEAR(m.at("t0/mae"), 1.0, 1e-6);
  EXPECT_NEAR(m.at("t1/mae"), 20.0, 1e-4);
  // Selection: minus the mean of MAE / sigma: -(1/2 + 20/100) / 2 = -0.35.
  EXPECT_NEAR(selection_score(b, m).primary, -0.35, 1e-6);
}

TEST(Metrics, MixedSelectsOnAccuracyThenFactorMse) {
  Benchmark b = tiny("multi-fashion-mixed",
                     {TaskGroup(GroupType::regression, 2, "factors"),
                      TaskGroup(GroupType::multiclass, 3, "left")},
                     {"lf", "rf", "left"});
  const auto keys = metric_keys(b);
  EXPECT_EQ(keys, (std::vector<std::string>{"lf/mse", "rf/mse", "left/accuracy"}));
  const SelectionScore s1 = selection_score(b, {{"lf/mse", 0.2}, {"rf/mse", 0.4}, {"left/accuracy", 0.7}});
  const SelectionScore s2 = selection_score(b, {{"lf/mse", 0.1}, {"rf/mse", 0.1}, {"left/accuracy", 0.7}});
  const SelectionScore s3 = selection_score(b, {{"lf/mse", 9.0}, {"rf/mse", 9.0}, {"left/accuracy", 0.71}});
  EXPECT_TRUE(s2.better_than(s1));  // same accuracy, lower MSE
  EXPECT_TRUE(s3.better_than(s2));  // higher accuracy wins whatever the MSE
  EXPECT_FALSE(s1.better_than(s1));
}

TEST(LrSchedule, MilestonesAtSixtyAndEightyPercent) {
  EXPECT_EQ(LrSchedule::milestones_for(10), (std::vector<int64_t>{6, 8}));
  EXPECT_EQ(LrSchedule::milestones_for(30), (std::vector<int64_t>{18, 24}));
  EXPECT_EQ(LrSchedule::milestones_for(3), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(LrSchedule::milestones_for(1), (std::vector<int64_t>{1, 1}));
  const LrSchedule s{{1e-3, 1e-3}, LrSchedule::milestones_for(10), 0.1};
  EXPECT_DOUBLE_EQ(s.lr(0, 0), 1e-3);
  EXPECT_DOUBLE_EQ(s.lr(0, 5), 1e-3);
  EXPECT_NEAR(s.lr(1, 6), 1e-4, 1e-18);
  EXPECT_NEAR(s.lr(0, 9), 1e-5, 1e-18);
  // Repeated milestones count twice, as PyTorch's MultiStepLR.
  const LrSchedule r{{1.0}, LrSchedule::milestones_for(3), 0.1};
  EXPECT_NEAR(r.lr(0, 2), 0.01, 1e-15);
}

}  // namespace
}  // namespace bayesagg
