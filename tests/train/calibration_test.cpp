// Calibration: ECE (15 equal-width bins) and Brier scores on hand-computed cases (bin edges, empty
// bins, binary and multiclass), the calibration keys of the metric plans, their exclusion from
// Δm, the history's reliability diagrams and calibration.svg.
#include "bayesagg/train/calibration.h"
#include "bayesagg/train/metrics.h"
#include "bayesagg/train/records.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "meta_benchmark.h"
#include "test_util.h"

#include <cmath>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>

namespace bayesagg {
namespace {

using testing::contains;

at::Tensor dvec(std::vector<double> v) { return at::tensor(v, at::kDouble); }

TEST(Calibration, BinsAreLeftOpenRightClosedAndTheFirstHoldsZero) {
  EXPECT_EQ(calibration_bin(0.0), 0);
  EXPECT_EQ(calibration_bin(1.0), 14);
  EXPECT_EQ(calibration_bin(0.5), 7);  // 7.5 / 15
  for (int i = 1; i <= 15; ++i) {
    const double e = i / 15.0;
    EXPECT_EQ(calibration_bin(e), i - 1) << "edge " << i << "/15 closes bin " << i - 1;
    if (i < 15) {
      EXPECT_EQ(calibration_bin(std::nextafter(e, 2.0)), i) << "just above " << i << "/15";
    }
  }
  EXPECT_EQ(calibration_bin(0.2), 2);  // 3/15: the upper edge of bin 2
  EXPECT_EQ(calibration_bin(0.5, 2), 0);
  EXPECT_EQ(calibration_bin(0.51, 2), 1);
  EXPECT_THROW(calibration_bin(-0.01), c10::Error);
  EXPECT_THROW(calibration_bin(1.01), c10::Error);
  EXPECT_THROW(calibration_bin(std::nan("")), c10::Error);
  EXPECT_THROW(calibration_bin(0.5, 0), c10::Error);
}

TEST(Calibration, EceOfConfidencesOnBinEdgesByHand) {
  // Confidences 0, 1/15, 0.2, 0.2, 0.5, 1 with outcomes 0, 1, 1, 0, 1, 1:
  // bin 0 {0, 1/15}: confidence 1/30, accuracy 1/2 -> |gap| 7/15, weight 2;
  // bin 2 {0.2, 0.2}: confidence 0.2, accuracy 1/2 -> 0.3, weight 2 (per item it would be
  // 0.8 + 0.2: the bin's means are compared, not the items);
  // bin 7 {0.5}: 0.5 vs 1 -> 0.5; bin 14 {1}: 1 vs 1 -> 0. ECE = (14/15 + 0.6 + 0.5) / 6.
  const ReliabilityBins r = reliability_bins(dvec({0.0, 1.0 / 15, 0.2, 0.2, 0.5, 1.0}),
                                             dvec({0, 1, 1, 0, 1, 1}));
  ASSERT_EQ(r.bins(), 15);
  const std::vector<int64_t> count = {2, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1};
  EXPECT_EQ(r.count, count);
  EXPECT_EQ(r.total(), 6);
  EXPECT_NEAR(r.confidence[0], 1.0 / 30, 1e-15);
  EXPECT_DOUBLE_EQ(r.outcome[0], 0.5);
  EXPECT_DOUBLE_EQ(r.outcome[14], 1.0);
  EXPECT_TRUE(std::isnan(r.confidence[1]) && std::isnan(r.outcome[1]));  // empty bin
  EXPECT_NEAR(r.ece(), 61.0 / 180.0, 1e-15);
}

TEST(Calibration, EmptyAndNonFiniteInputsGiveNaN) {
  const ReliabilityBins empty = reliability_bins(dvec({}), dvec({}));
  EXPECT_EQ(empty.total(), 0);
  EXPECT_TRUE(std::isnan(empty.ece()));
  EXPECT_TRUE(std::isnan(binary_brier(dvec({}), dvec({}))));
  EXPECT_TRUE(std::isnan(multiclass_brier(at::zeros({0, 3}, at::kDouble),
                                          at::zeros({0}, at::kLong))));
  EXPECT_TRUE(std::isnan(binary_reliability(dvec({0.0, std::nan("")}), dvec({0, 1})).ece()));
  EXPECT_THROW(reliability_bins(dvec({0.5, 1.5}), dvec({1, 1})), c10::Error);
  EXPECT_THROW(reliability_bins(dvec({0.5}), dvec({1, 1})), c10::Error);
}

TEST(Calibration, MulticlassEceAndBrierByHand) {
  // Three classes; softmax rows:
  // A logits (0, 0, 0): (1/3, 1/3, 1/3), confidence 1/3 = 5/15 on an edge -> bin 4; argmax 0
  //   (first maximum) = label 0: correct.
  // B (ln 2, 0, 0): (1/2, 1/4, 1/4), confidence 1/2 -> bin 7; label 1: wrong.
  // C (0, ln 6, 0): (1/8, 3/4, 1/8), confidence 3/4 -> bin 11; label 1: correct.
  // D (0, 0, ln 18): (1/20, 1/20, 9/10), confidence 0.9 -> bin 13; label 2: correct.
  const double l2 = std::log(2.0), l6 = std::log(6.0), l18 = std::log(18.0);
  const at::Tensor logits = dvec({0, 0, 0, l2, 0, 0, 0, l6, 0, 0, 0, l18}).reshape({4, 3});
  const at::Tensor labels = at::tensor(std::vector<int64_t>{0, 1, 1, 2}, at::kLong);
  const ReliabilityBins r = multiclass_reliability(logits, labels);
  EXPECT_EQ(r.count[4], 1);
  EXPECT_EQ(r.count[5], 0);
  EXPECT_EQ(r.count[7], 1);
  EXPECT_EQ(r.count[11], 1);
  EXPECT_EQ(r.count[13], 1);
  EXPECT_EQ(r.total(), 4);
  // ECE = (|1 - 1/3| + |0 - 1/2| + |1 - 3/4| + |1 - 0.9|) / 4 = 91/240.
  EXPECT_NEAR(r.ece(), 91.0 / 240.0, 1e-12);
  // Brier: A (2/3)² + 2 (1/3)² = 2/3; B (1/2)² + (3/4)² + (1/4)² = 7/8;
  // C 2 (1/8)² + (1/4)² = 3/32; D 2 (1/20)² + (1/10)² = 3/200.
  EXPECT_NEAR(multiclass_brier(logits, labels), (2.0 / 3 + 7.0 / 8 + 3.0 / 32 + 3.0 / 200) / 4,
              1e-12);
  // Float logits give the same numbers (computed in double precision).
  EXPECT_NEAR(multiclass_reliability(logits.to(at::kFloat), labels).ece(), 91.0 / 240.0, 1e-6);
}

TEST(Calibration, BinaryUsesThePositiveClassProbabilityAgainstTheFractionOfPositives) {
  // sigmoid: 0 -> 1/2 (twice, bin 7), ln 3 -> 3/4 (bin 11), -ln 3 -> 1/4 (bin 3), ln 9 -> 0.9
  // (bin 13); labels 1, 0 | 1 | 1 | 0.
  // bin 7: mean p 1/2, fraction positive 1/2 -> 0; bin 11: 3/4 vs 1 -> 1/4; bin 3: 1/4 vs 1 ->
  // 3/4; bin 13: 0.9 vs 0 -> 0.9. ECE = (0 + 1/4 + 3/4 + 0.9) / 5 = 0.38 (the max-probability
  // form would put the 1/4 item in bin 11 as a wrong prediction of confidence 3/4).
  const double l3 = std::log(3.0), l9 = std::log(9.0);
  const at::Tensor logits = dvec({0, 0, l3, -l3, l9});
  const at::Tensor labels = dvec({1, 0, 1, 1, 0});
  const ReliabilityBins r = binary_reliability(logits, labels);
  EXPECT_EQ(r.count[7], 2);
  EXPECT_EQ(r.count[3], 1);
  EXPECT_EQ(r.count[11], 1);
  EXPECT_EQ(r.count[13], 1);
  EXPECT_NEAR(r.outcome[7], 0.5, 1e-15);
  EXPECT_NEAR(r.ece(), 0.38, 1e-12);
  // Brier: (1/4 + 1/4 + 1/16 + 9/16 + 0.81) / 5 = 0.387.
  EXPECT_NEAR(binary_brier(logits, labels), 0.387, 1e-12);
  // Saturated logits: probabilities exactly 0 (bin 0 includes 0) and 1 (last bin).
  const double inf = std::numeric_limits<double>::infinity();
  const ReliabilityBins sat = binary_reliability(dvec({-inf, inf}), dvec({0, 1}));
  EXPECT_EQ(sat.count[0], 1);
  EXPECT_EQ(sat.count[14], 1);
  EXPECT_DOUBLE_EQ(sat.ece(), 0.0);
  EXPECT_DOUBLE_EQ(binary_brier(dvec({-inf, inf}), dvec({0, 1})), 0.0);
}

TEST(Calibration, LowerIsBetterAndNeverPartOfDeltaM) {
  EXPECT_FALSE(higher_is_better("left/ece"));
  EXPECT_FALSE(higher_is_better("brier"));
  EXPECT_TRUE(is_calibration_metric("left/ece"));
  EXPECT_TRUE(is_calibration_metric("all/brier"));
  EXPECT_FALSE(is_calibration_metric("left/accuracy"));
  // Δm is over the baselines' keys: calibration values beside them change nothing.
  const MetricMap stl = {{"a/accuracy", 0.8}, {"b/mae", 2.0}};
  const MetricMap with = {{"a/accuracy", 0.9}, {"b/mae", 1.0}, {"a/ece", 0.3}, {"a/brier", 0.5}};
  const MetricMap without = {{"a/accuracy", 0.9}, {"b/mae", 1.0}};
  EXPECT_EQ(*delta_m(with, stl), *delta_m(without, stl));
  // A baseline file may not hold calibration metrics.
  const testing::TempDir dir;
  const std::string file = dir.file("stl.json");
  std::ofstream(file) << R"({"test": {"left/accuracy": 0.8, "left/ece": 0.05}})";
  const std::string err = testing::error_of([&] { read_stl_baselines(file); });
  EXPECT_TRUE(contains(err, "'left/ece' is a calibration metric")) << err;
}

TEST(Calibration, MetricPlansAddEceAndBrierPerClassificationTask) {
  const Benchmark mixed = testing::meta_benchmark(
      "multi-fashion-mixed",
      {TaskGroup(GroupType::regression, 2, "factors"), TaskGroup(GroupType::multiclass, 3, "left"),
       TaskGroup(GroupType::binary, 2, "flags")},
      {"lf", "rf", "left", "f0", "f1"});
  EXPECT_EQ(calibration_keys(mixed),
            (std::vector<std::string>{"left/ece", "left/brier", "f0/ece", "f0/brier", "f1/ece",
                                      "f1/brier"}));
  // metric_keys (Δm, mean rank, selection) are unchanged.
  for (const auto& key : metric_keys(mixed)) EXPECT_FALSE(is_calibration_metric(key)) << key;
  const at::Tensor factors = at::zeros({4, 2});
  const at::Tensor logits = at::tensor(std::vector<float>{0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3})
                                .reshape({4, 3});
  const at::Tensor classes = at::tensor(std::vector<int64_t>{0, 0, 1, 2}, at::kLong);
  const at::Tensor flags_out =
      at::tensor(std::vector<float>{-2, 1, 0.5f, -1, 3, 0, -4, 2}).reshape({4, 2});
  const at::Tensor flags = at::tensor(std::vector<float>{0, 1, 1, 0, 1, 1, 0, 0}).reshape({4, 2});
  const std::vector<at::Tensor> outs = {factors, logits, flags_out};
  const Labels labels = {factors, classes, flags};
  const MetricMap m = compute_metrics(mixed, outs, labels);
  EXPECT_EQ(m.size(), metric_keys(mixed).size() + 6);
  EXPECT_NEAR(m.at("left/ece"), multiclass_reliability(logits, classes).ece(), 1e-15);
  EXPECT_NEAR(m.at("left/brier"), multiclass_brier(logits, classes), 1e-15);
  EXPECT_NEAR(m.at("f1/ece"), binary_reliability(flags_out.select(1, 1), flags.select(1, 1)).ece(),
              1e-15);
  EXPECT_NEAR(m.at("f0/brier"), binary_brier(flags_out.select(1, 0), flags.select(1, 0)), 1e-15);
  const auto diagrams = reliability_diagrams(mixed, outs, labels);
  ASSERT_EQ(diagrams.size(), 3u);
  EXPECT_EQ(diagrams[0].task, "left");
  EXPECT_FALSE(diagrams[0].binary);
  EXPECT_EQ(diagrams[2].task, "f1");
  EXPECT_TRUE(diagrams[2].binary);
  EXPECT_DOUBLE_EQ(diagrams[2].bins.ece(), m.at("f1/ece"));
  // A regression-only benchmark has none.
  const Benchmark reg = testing::meta_benchmark(
      "synthetic-regression", {TaskGroup(GroupType::regression, 2, "t")}, {"t0", "t1"});
  EXPECT_TRUE(calibration_keys(reg).empty());
}

TEST(Calibration, HistoryKeepsTheBestEpochsDiagramsAndTheSvgShowsThem) {
  RunHistory h;
  h.best_epoch = 1;
  EpochRecord e;
  e.epoch = 1;
  h.epochs.push_back(e);
  h.best_reliability = {
      {"left", false, multiclass_reliability(dvec({0, 0, 0, 2, 0, 0}).reshape({2, 3}),
                                             at::tensor(std::vector<int64_t>{0, 1}, at::kLong))},
      {"f<0>", true, binary_reliability(dvec({1.0}), dvec({1}))}};
  const RunHistory back = history_from_json(history_to_json(h));
  ASSERT_EQ(back.best_reliability.size(), 2u);
  EXPECT_EQ(back.best_reliability[0].task, "left");
  EXPECT_EQ(back.best_reliability[0].bins.count, h.best_reliability[0].bins.count);
  EXPECT_EQ(back.best_reliability[1].binary, true);
  EXPECT_DOUBLE_EQ(back.best_reliability[0].bins.ece(), h.best_reliability[0].bins.ece());
  EXPECT_TRUE(std::isnan(back.best_reliability[0].bins.confidence[0]));  // empty bin: null
  // A history written before diagrams were recorded reads back without them.
  std::string old = history_to_json(RunHistory());
  const std::string field = ",\"best_reliability\":[]";
  ASSERT_NE(old.find(field), std::string::npos) << old;
  old.replace(old.find(field), field.size(), "");
  EXPECT_TRUE(history_from_json(old).best_reliability.empty());
  // Truncating below the best epoch drops them with it.
  RunHistory cut = back;
  cut.truncate(0);
  EXPECT_TRUE(cut.best_reliability.empty());

  const std::string svg = calibration_svg(back.best_reliability, "demo / ls / seed 1");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  std::ostringstream ece;
  ece << std::fixed << std::setprecision(4) << h.best_reliability[0].bins.ece();
  EXPECT_TRUE(contains(svg, "left: ECE " + ece.str() + " (n = 2)")) << svg;
  EXPECT_TRUE(contains(svg, "f&lt;0&gt;: ECE ")) << svg;  // escaped
  EXPECT_TRUE(contains(svg, "fraction positive"));
  EXPECT_TRUE(contains(svg, "confidence (max probability)"));
  EXPECT_THROW(calibration_svg({}, "none"), c10::Error);
}

}  // namespace
}  // namespace bayesagg
