// Metrics and selection rules of the paper benchmarks, on values checked by hand.
#include "bayesagg/data/paper/qm9.h"
#include "bayesagg/train/metrics.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "meta_benchmark.h"

#include <cmath>

using namespace bayesagg;

namespace {

Benchmark meta(const std::string& name, std::vector<TaskGroup> groups,
               std::vector<std::string> tasks) {
  return bayesagg::testing::meta_benchmark(name, std::move(groups), std::move(tasks));
}

at::Tensor fvec(std::vector<float> v, int64_t cols) {
  return at::tensor(v, at::kFloat).reshape({-1, cols});
}

}  // namespace

TEST(PaperMetrics, CifarMtlReportsAccuracyAucAndSelectsOnTheArgmaxAccuracy) {
  const Benchmark b = meta("cifar-mtl", {TaskGroup(GroupType::binary, 3, "coarse")}, {"a", "b", "c"});
  const auto keys = metric_keys(b);
  EXPECT_EQ(keys, (std::vector<std::string>{"a/accuracy", "a/auc", "b/accuracy", "b/auc",
                                            "c/accuracy", "c/auc", "all/argmax_accuracy"}));
  // Rows' argmax: 0, 2, 1, 2 vs one-hot labels 0, 1, 1, 2: 3 of 4.
  const at::Tensor out = fvec({2, -1, -1, -1, 0, 1, -2, 1, 0, -3, -3, -1}, 3);
  const at::Tensor y = fvec({1, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1}, 3);
  const MetricMap m = compute_metrics(b, {out}, {y});
  EXPECT_DOUBLE_EQ(m.at("all/argmax_accuracy"), 0.75);
  // Task a: logits 2, -1, -2, -3 vs labels 1, 0, 0, 0: every prediction right, AUC 1.
  EXPECT_DOUBLE_EQ(m.at("a/accuracy"), 1.0);
  EXPECT_DOUBLE_EQ(m.at("a/auc"), 1.0);
  EXPECT_DOUBLE_EQ(selection_score(b, m).primary, 0.75);
  EXPECT_EQ(selection_rule(b), "validation 20-way argmax accuracy");
}

TEST(PaperMetrics, ChestX14ReportsAucOnlyAndSelectsOnTheMeanAuc) {
  const Benchmark b =
      meta("chestx14", {TaskGroup(GroupType::binary, 2, "findings")}, {"Hernia", "Mass"});
  EXPECT_EQ(metric_keys(b), (std::vector<std::string>{"Hernia/auc", "Mass/auc"}));
  // Hernia: scores 0.1, 0.4, 0.35, 0.8 for labels 0, 0, 1, 1: AUC 0.75; Mass: perfect, 1.
  const at::Tensor out = fvec({0.1f, 0.0f, 0.4f, 1.0f, 0.35f, 2.0f, 0.8f, 3.0f}, 2);
  const at::Tensor y = fvec({0, 0, 0, 0, 1, 1, 1, 1}, 2);
  const MetricMap m = compute_metrics(b, {out}, {y});
  EXPECT_EQ(m.size(), 6u);  // and per task an ECE and a Brier score
  EXPECT_DOUBLE_EQ(m.at("Hernia/auc"), 0.75);
  EXPECT_DOUBLE_EQ(m.at("Mass/auc"), 1.0);
  EXPECT_DOUBLE_EQ(selection_score(b, m).primary, 0.875);
}

TEST(PaperMetrics, QM9ReportsMaeInMeVForTheEnergies) {
  Benchmark b = meta("qm9", {TaskGroup(GroupType::regression, 11, "targets")}, qm9_task_names());
  // Stored units: label = (target - 1) / 2.
  b.target_scaling[0].mean = at::ones({11}, at::kDouble);
  b.target_scaling[0].std = at::full({11}, 2.0, at::kDouble);
  const at::Tensor y = at::zeros({2, 11});
  const at::Tensor out = at::full({2, 11}, 0.001f);  // 0.002 in stored units
  const MetricMap m = compute_metrics(b, {out}, {y});
  EXPECT_NEAR(m.at("mu/mae"), 0.002, 1e-9);     // D
  EXPECT_NEAR(m.at("homo/mae"), 2.0, 1e-6);     // eV -> meV
  EXPECT_NEAR(m.at("zpve/mae"), 2.0, 1e-6);
  EXPECT_NEAR(m.at("g298/mae"), 2.0, 1e-6);
  EXPECT_NEAR(m.at("cv/mae"), 0.002, 1e-9);     // cal/(mol K)
  EXPECT_NEAR(m.at("homo/mse"), 1e-6, 1e-12);   // standardised, as trained
  // Selection: minus Δm against the published STL MAEs; each MAE at its STL value gives 0,
  // then mu 10% worse: Δm = 10 / 11.
  MetricMap val = published_stl_baselines("qm9");
  ASSERT_EQ(val.size(), 11u);
  EXPECT_DOUBLE_EQ(val.at("homo/mae"), 60.576);
  EXPECT_NEAR(selection_score(b, val).primary, 0.0, 1e-12);
  val["mu/mae"] = 0.0671 * 1.1;
  EXPECT_NEAR(selection_score(b, val).primary, -10.0 / 11.0, 1e-9);
}

TEST(PaperMetrics, UTKFaceSelectsOnDeltaMAgainstThePublishedValidationStl) {
  const Benchmark b = meta("utkface",
                           {TaskGroup(GroupType::regression, 1, "age"),
                            TaskGroup(GroupType::multiclass, 2, "gender"),
                            TaskGroup(GroupType::multiclass, 5, "race")},
                           {"age", "gender", "race"});
  const MetricMap ref = published_stl_baselines("utkface", "val");
  EXPECT_EQ(ref, (MetricMap{{"age/mse", 0.1276}, {"gender/accuracy", 0.9197},
                            {"race/accuracy", 0.8456}}));
  MetricMap val = ref;
  val["age/mae"] = 5.0;  // not part of the reference
  val["age/mse"] = 0.1276 * 1.3;        // 30% worse
  val["gender/accuracy"] = 0.9197 * 1.15;  // 15% better
  EXPECT_NEAR(selection_score(b, val).primary, -100.0 * (0.3 - 0.15) / 3.0, 1e-9);
  EXPECT_EQ(published_stl_baselines("utkface").at("race/accuracy"), 0.8242);
  EXPECT_EQ(published_stl_baselines("chestx14").at("Pleural_Thickening/auc"), 0.6389);
  EXPECT_TRUE(published_stl_baselines("cifar-mtl").empty());
}
