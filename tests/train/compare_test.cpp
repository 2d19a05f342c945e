// Comparisons: the table's statistics (means, stds, Δm, ranks, epoch-time ratios) on hand-made
// runs, its CSV layout, and train_or_reuse's reuse / resume / mismatch rules on a tiny run.
#include "bayesagg/core/files.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/train/compare.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

namespace bayesagg {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::error_of;
using testing::TempDir;

CompareRun run(const std::string& method, uint64_t seed, double acc, double mae, double secs) {
  CompareRun r;
  r.method = method;
  r.seed = seed;
  r.test = {{"a/accuracy", acc}, {"b/mae", mae}};
  r.epoch_seconds = secs;
  return r;
}

TEST(CompareTable, StatisticsAgainstHandComputedValues) {
  const std::vector<std::string> keys = {"a/accuracy", "b/mae"};
  const std::vector<CompareRun> runs = {
      // Dyadic accuracies, so that the equal means below tie exactly.
      run("stl", 1, 0.75, 2.0, 3.0), run("stl", 2, 0.875, 4.0, 5.0),  // baseline 0.8125, 3.0
      run("ls", 1, 0.8125, 3.0, 1.0), run("ls", 2, 0.8125, 3.0, 1.0),  // Δm 0, 0
      run("x", 1, 0.875, 2.4, 2.0),  run("x", 2, 0.75, 2.4, 4.0),  // better mae, same mean acc
  };
  const CompareTable t = make_compare_table("demo", keys, {"stl", "ls", "x"}, runs, {}, "");
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_DOUBLE_EQ(t.baseline.at("a/accuracy"), 0.8125);
  EXPECT_DOUBLE_EQ(t.baseline.at("b/mae"), 3.0);
  const CompareRow& x = t.rows[2];
  EXPECT_EQ(x.seeds, 2);
  EXPECT_DOUBLE_EQ(x.mean.at("a/accuracy"), 0.8125);
  EXPECT_NEAR(x.std.at("a/accuracy"), std::sqrt(2 * 0.0625 * 0.0625), 1e-12);  // n - 1
  EXPECT_NEAR(x.std.at("b/mae"), 0.0, 1e-12);
  // Seed 1: (-(0.875-0.8125)/0.8125 + (2.4-3)/3) * 50 = (-1/13 - 0.2) * 50;
  // seed 2: (+1/13 - 0.2) * 50: mean -10, std 50 sqrt(2) / 13.
  EXPECT_NEAR(*x.delta_m, -10.0, 1e-9);
  EXPECT_NEAR(*x.delta_m_std, 50 * std::sqrt(2.0) / 13, 1e-9);
  EXPECT_NEAR(*t.rows[1].delta_m, 0.0, 1e-12);
  EXPECT_NEAR(*t.rows[0].delta_m, 0.0, 1e-12);  // STL against its own mean
  // Accuracy: all three means 0.85 tie at rank 2; MAE: x 2.4 (1), stl and ls 3.0 (2.5 each).
  EXPECT_DOUBLE_EQ(*x.mean_rank, (2.0 + 1.0) / 2);
  EXPECT_DOUBLE_EQ(*t.rows[0].mean_rank, (2.0 + 2.5) / 2);
  // Epoch time relative to ls (1 s): stl 4 s, x 3 s.
  EXPECT_DOUBLE_EQ(*t.rows[0].epoch_time_vs_ls, 4.0);
  EXPECT_DOUBLE_EQ(*x.epoch_time_vs_ls, 3.0);
}

TEST(CompareTable, FailedRunsAndMissingBaselines) {
  const std::vector<std::string> keys = {"a/accuracy", "b/mae"};
  CompareRun bad = run("x", 2, 0.0, 0.0, 0.0);
  bad.error = "non-finite loss";
  const CompareTable t = make_compare_table("demo", keys, {"x", "y"},
                                            {run("x", 1, 0.9, 2.0, 1.0), bad}, {}, "");
  EXPECT_EQ(t.rows[0].seeds, 1);
  ASSERT_EQ(t.rows[0].errors.size(), 1u);
  EXPECT_TRUE(std::isnan(t.rows[0].std.at("a/accuracy")));  // one seed: no std
  EXPECT_FALSE(t.rows[0].delta_m.has_value());               // no stl, no baselines given
  EXPECT_FALSE(t.rows[0].epoch_time_vs_ls.has_value());      // no ls
  EXPECT_EQ(t.rows[1].seeds, 0);
  EXPECT_FALSE(t.rows[1].mean_rank.has_value());
  const std::string md = compare_table_markdown(t);
  EXPECT_TRUE(contains(md, "x failed, seed 2: non-finite loss")) << md;
  EXPECT_TRUE(contains(md, "| x | 0.9000 | 2.0000 | – | 1.00 | – | 1 |")) << md;
  // Given baselines are used when stl did not run.
  const CompareTable g = make_compare_table("demo", keys, {"x"}, {run("x", 1, 0.9, 2.0, 1.0)},
                                            {{"a/accuracy", 0.9}, {"b/mae", 4.0}}, "file.json");
  EXPECT_NEAR(*g.rows[0].delta_m, -25.0, 1e-12);
  EXPECT_EQ(g.baseline_source, "file.json");
  EXPECT_THROW(make_compare_table("demo", keys, {"x"}, {run("z", 1, 0.9, 2.0, 1.0)}, {}, ""),
               c10::Error);
}

TEST(CompareTable, CsvHasTheDocumentedColumns) {
  const std::vector<std::string> keys = {"a/accuracy", "b/mae"};
  const CompareTable t = make_compare_table(
      "demo", keys, {"ls", "x"},
      {run("ls", 1, 0.75, 3.0, 2.0), run("ls", 2, 0.75, 3.0, 2.0), run("x", 1, 0.5, 1.0, 5.0)},
      {{"a/accuracy", 0.75}, {"b/mae", 3.0}}, "stored");
  std::istringstream csv(compare_table_csv(t));
  std::string header, ls, x;
  std::getline(csv, header);
  std::getline(csv, ls);
  std::getline(csv, x);
  EXPECT_EQ(header,
            "method,delta_m,delta_m_std,mean_rank,epoch_time_vs_ls,seeds,a/accuracy_mean,"
            "a/accuracy_std,b/mae_mean,b/mae_std");
  EXPECT_EQ(ls, "ls,0,0,1.5,1,2,0.75,0,3,0");
  // x: Δm = (-(0.5-0.75)/0.75 + (1-3)/3) * 50 = (1/3 - 2/3) * 50; one seed: empty std cells.
  const double dm = (0.25 / 0.75 - 2.0 / 3.0) * 50;
  std::ostringstream expect;
  expect.precision(10);
  expect << "x," << dm << ",,1.5,2.5,1,0.5,,1,";
  EXPECT_EQ(x, expect.str());
}

/// A run with task metrics a/accuracy, b/mae, c/accuracy and the calibration of a and c.
CompareRun calibrated(const std::string& method, uint64_t seed, double acc, double ece_a,
                      double ece_c, double brier_a, double brier_c) {
  CompareRun r = run(method, seed, acc, 2.0 + 0.5 * static_cast<double>(seed), 1.0);
  r.test["c/accuracy"] = acc - 0.125;
  r.test["a/ece"] = ece_a;
  r.test["c/ece"] = ece_c;
  r.test["a/brier"] = brier_a;
  r.test["c/brier"] = brier_c;
  return r;
}

TEST(CompareTable, CalibrationColumnsStayOutOfDeltaMAndTheMeanRank) {
  const std::vector<std::string> task_keys = {"a/accuracy", "b/mae", "c/accuracy"};
  std::vector<std::string> keys = task_keys;
  for (const char* k : {"a/ece", "a/brier", "c/ece", "c/brier"}) keys.push_back(k);
  const std::vector<CompareRun> runs = {
      calibrated("stl", 1, 0.75, 0.01, 0.02, 0.1, 0.2),
      calibrated("stl", 2, 0.875, 0.01, 0.02, 0.1, 0.2),
      // Better calibrated than stl but worse task metrics.
      calibrated("ls", 1, 0.625, 0.0, 0.0, 0.0, 0.0),
      calibrated("ls", 2, 0.625, 0.0, 0.0, 0.0, 0.0),
      calibrated("x", 1, 0.875, 0.1, 0.3, 0.2, 0.4),
      calibrated("x", 2, 0.75, 0.2, 0.4, 0.3, 0.5),
  };
  const std::vector<std::string> methods = {"stl", "ls", "x"};
  const CompareTable t = make_compare_table("demo", keys, methods, runs, {}, "");
  EXPECT_EQ(t.keys, task_keys);
  EXPECT_EQ(t.calibration_keys, (std::vector<std::string>{"a/ece", "a/brier", "c/ece", "c/brier"}));
  EXPECT_EQ(t.baseline.count("a/ece") + t.baseline.count("c/brier"), 0u);
  // Δm and the mean rank are those of the same runs without calibration metrics.
  std::vector<CompareRun> stripped = runs;
  for (auto& r : stripped) {
    for (const char* k : {"a/ece", "a/brier", "c/ece", "c/brier"}) r.test.erase(k);
  }
  const CompareTable plain = make_compare_table("demo", task_keys, methods, stripped, {}, "");
  EXPECT_EQ(t.baseline, plain.baseline);
  for (size_t i = 0; i < methods.size(); ++i) {
    EXPECT_EQ(*t.rows[i].delta_m, *plain.rows[i].delta_m) << methods[i];
    EXPECT_EQ(*t.rows[i].mean_rank, *plain.rows[i].mean_rank) << methods[i];
    EXPECT_FALSE(plain.rows[i].ece.has_value());
  }
  // x: per seed the mean over tasks a and c: ECE 0.2, 0.3 -> 0.25 ± sqrt(0.005); Brier 0.3,
  // 0.4 -> 0.35 ± sqrt(0.005).
  const CompareRow& x = t.rows[2];
  EXPECT_NEAR(*x.ece, 0.25, 1e-12);
  EXPECT_NEAR(*x.ece_std, std::sqrt(0.005), 1e-12);
  EXPECT_NEAR(*x.brier, 0.35, 1e-12);
  EXPECT_NEAR(*x.brier_std, std::sqrt(0.005), 1e-12);
  EXPECT_NEAR(x.mean.at("a/ece"), 0.15, 1e-12);
  EXPECT_NEAR(x.mean.at("c/brier"), 0.45, 1e-12);
  EXPECT_DOUBLE_EQ(*t.rows[1].ece, 0.0);

  const std::string md = compare_table_markdown(t);
  EXPECT_TRUE(contains(md, "| method | a/accuracy | b/mae | c/accuracy | ECE ↓ | Brier ↓ | Δm% ↓ |"))
      << md;
  EXPECT_TRUE(contains(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")) << md;
  EXPECT_TRUE(contains(md, " | 0.2500 ± 0.0707 | 0.3500 ± 0.0707 | ")) << md;
  EXPECT_TRUE(contains(md, "mean over the 2 classification task(s)")) << md;
  EXPECT_TRUE(contains(md, "(not ECE and Brier)")) << md;
  EXPECT_FALSE(contains(md, "a/ece")) << md;  // per-task values only in table.csv

  std::istringstream csv(compare_table_csv(t));
  std::string header, line;
  std::getline(csv, header);
  EXPECT_EQ(header,
            "method,delta_m,delta_m_std,mean_rank,epoch_time_vs_ls,seeds,a/accuracy_mean,"
            "a/accuracy_std,b/mae_mean,b/mae_std,c/accuracy_mean,c/accuracy_std,ece,ece_std,"
            "brier,brier_std,a/ece_mean,a/ece_std,a/brier_mean,a/brier_std,c/ece_mean,c/ece_std,"
            "c/brier_mean,c/brier_std");
  const auto cells = [](const std::string& l) { return std::count(l.begin(), l.end(), ',') + 1; };
  while (std::getline(csv, line)) EXPECT_EQ(cells(line), cells(header)) << line;

  // Without calibration keys (regression-only benchmarks) no ECE or Brier columns at all.
  const std::string plain_md = compare_table_markdown(plain);
  EXPECT_FALSE(contains(plain_md, "ECE")) << plain_md;
  EXPECT_FALSE(contains(compare_table_csv(plain), "ece")) << compare_table_csv(plain);
}

TrainOptions tiny(const std::string& out) {
  return TrainOptions()
      .benchmark("synthetic-regression")
      .method("ls")
      .epochs(2)
      .train_subset(256)
      .batch_size(128)
      .seed(3)
      .threads(1)
      .progress("none")
      .out(out);
}

TEST(TrainOrReuse, ReusesFinishedRunsResumesStoppedOnesAndRejectsOtherSettings) {
  TempDir dir("compare_reuse");
  const Benchmark bench =
      make_benchmark("synthetic-regression", EmbeddedOptions().train_subset(256));
  const std::string out = dir.file("ls");
  RunStatus status;
  // Stopped after one epoch, then continued: same numbers as an uninterrupted run.
  train_or_reuse(tiny(out).stop_after_epoch(1), &bench, nullptr, &status);
  EXPECT_EQ(status, RunStatus::trained);
  const TrainSummary resumed = train_or_reuse(tiny(out), &bench, nullptr, &status);
  EXPECT_EQ(status, RunStatus::resumed);
  const TrainSummary fresh = train_or_reuse(tiny(dir.file("fresh")), &bench, nullptr, &status);
  EXPECT_EQ(status, RunStatus::trained);
  EXPECT_EQ(resumed.test, fresh.test);
  // Finished: read back, not retrained (threads may differ).
  const TrainSummary again = train_or_reuse(tiny(out).threads(2), &bench, nullptr, &status);
  EXPECT_EQ(status, RunStatus::reused);
  EXPECT_EQ(again.test, resumed.test);
  // Another setting: an error naming it.
  const std::string err = error_of([&] { train_or_reuse(tiny(out).lr(2e-3), &bench, nullptr); });
  EXPECT_TRUE(contains(err, "another value of 'lr'")) << err;
}

TEST(SingleTasks, OneRunPerTaskAndABaselineFile) {
  TempDir dir("compare_stl");
  const Benchmark bench =
      make_benchmark("synthetic-regression", EmbeddedOptions().train_subset(256));
  const SingleTaskResult r = train_single_tasks(tiny(dir.path.string()).epochs(1), &bench, nullptr);
  EXPECT_EQ(r.test.size(), 10u);
  EXPECT_GT(r.epoch_seconds, 0.0);
  EXPECT_EQ(read_stl_baselines(r.baseline_file), r.test);
  for (const auto& task : bench.task_names) {
    const TrainSummary s = summary_from_json(read_file(dir.file(task + "/summary.json")));
    EXPECT_EQ(s.stl_task, task);
    EXPECT_EQ(s.test.at(task + "/mae"), r.test.at(task + "/mae"));
  }
}

}  // namespace
}  // namespace bayesagg
