// The trainer end to end on a tiny synthetic-regression run: records, resume equivalence,
// stopping on non-finite losses, settings and config files; and on a tiny classification
// benchmark: the calibration records.
#include "bayesagg/core/files.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/train/checkpoint.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/records.h"
#include "bayesagg/train/trainer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "meta_benchmark.h"
#include "test_util.h"

#include <filesystem>
#include <iomanip>
#include <limits>
#include <sstream>

namespace bayesagg {
namespace {

namespace fs = std::filesystem;

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("bayesagg_trainer_test_" + name);
  fs::remove_all(p);
  return p.string();
}

/// 512 training items, 3 epochs, BayesAgg-MTL after 1 LS epoch; silent.
TrainOptions tiny(const std::string& out) {
  return TrainOptions()
      .benchmark("synthetic-regression")
      .method("bayesagg")
      .epochs(3)
      .train_subset(512)
      .batch_size(128)
      .seed(4)
      .threads(1)
      .progress("none")
      .out(out);
}

const Benchmark& tiny_benchmark() {
  static const Benchmark b =
      make_benchmark("synthetic-regression", EmbeddedOptions().train_subset(512));
  return b;
}

TEST(Trainer, WritesTheRunRecords) {
  const std::string dir = temp_dir("records");
  const TrainSummary s = Trainer(tiny(dir).epochs(2), tiny_benchmark()).run();
  EXPECT_TRUE(s.completed());
  EXPECT_EQ(s.n_train, 512);
  EXPECT_EQ(s.tasks.size(), 10u);
  EXPECT_EQ(s.test.size(), 10u);
  EXPECT_TRUE(s.test.count("task_0/mae"));
  EXPECT_FALSE(s.delta_m.has_value());  // no baselines stored or given
  for (const char* f : {"config.json", "metrics.csv", "steps.csv", "summary.json", "curves.svg",
                        "checkpoint.pt", "best_model.pt"}) {
    EXPECT_TRUE(fs::is_regular_file(fs::path(dir) / f)) << f;
  }
  const std::string metrics = read_file(dir + "/metrics.csv");
  EXPECT_EQ(metrics.rfind("epoch,split,task,metric,value\n", 0), 0u);
  // 2 epochs x (10 train losses + 10 val + 10 test) rows + header.
  EXPECT_EQ(std::count(metrics.begin(), metrics.end(), '\n'), 61);
  const std::string steps = read_file(dir + "/steps.csv");
  EXPECT_NE(steps.find("trunk_grad_norm,head_grad_norm"), std::string::npos);
  EXPECT_NE(steps.find("dL_dh_norm"), std::string::npos);  // BayesAgg's diagnostics
  // 2 epochs x 4 steps + header.
  EXPECT_EQ(std::count(steps.begin(), steps.end(), '\n'), 9);
  const TrainSummary back = summary_from_json(read_file(dir + "/summary.json"));
  EXPECT_EQ(back.test, s.test);
  EXPECT_EQ(back.best_epoch, s.best_epoch);
  EXPECT_EQ(read_file(dir + "/curves.svg").rfind("<svg", 0), 0u);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "calibration.svg"));  // no classification task
  fs::remove_all(dir);
}

/// 192 / 64 / 64 items of 6 deterministic features; a 3-class task (argmax of the first three)
/// and two binary tasks (signs of the next two).
Benchmark tiny_classification() {
  Benchmark b = testing::meta_benchmark(
      "multi-fashion-mixed",
      {TaskGroup(GroupType::multiclass, 3, "left"), TaskGroup(GroupType::binary, 2, "flags")},
      {"left", "f0", "f1"});
  const auto split = [](int64_t n, double offset) {
    MultiTaskSplit s;
    s.inputs = at::sin(at::arange(n * 6, at::kFloat).reshape({n, 6}) * 0.37 + offset);
    s.labels = {s.inputs.slice(1, 0, 3).argmax(1),
                s.inputs.slice(1, 3, 5).gt(0).to(at::kFloat)};
    return s;
  };
  b.train = split(192, 0.0);
  b.val = split(64, 0.5);
  b.test = split(64, 1.0);
  return b;
}

std::string fixed4(double v) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(4) << v;
  return os.str();
}

TEST(Trainer, RecordsCalibrationOfEveryClassificationTask) {
  const std::string dir = temp_dir("calibration");
  const TrainOptions o = TrainOptions()
                             .benchmark("multi-fashion-mixed")
                             .method("ls")
                             .epochs(2)
                             .batch_size(64)
                             .seed(1)
                             .threads(1)
                             .progress("none")
                             .out(dir);
  const TrainSummary s = Trainer(o, tiny_classification()).run();
  for (const char* task : {"left", "f0", "f1"}) {
    for (const MetricMap* m : {&s.val, &s.test}) {
      const std::string t = task;
      ASSERT_TRUE(m->count(t + "/ece") && m->count(t + "/brier")) << t;
      EXPECT_GE(m->at(t + "/ece"), 0.0);
      EXPECT_LE(m->at(t + "/ece"), 1.0);
      EXPECT_GE(m->at(t + "/brier"), 0.0);
      EXPECT_LE(m->at(t + "/brier"), t == "left" ? 2.0 : 1.0);
    }
  }
  const std::string metrics = read_file(dir + "/metrics.csv");
  EXPECT_NE(metrics.find("\n2,test,left,ece,"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\n1,val,f1,brier,"), std::string::npos) << metrics;
  EXPECT_EQ(summary_from_json(read_file(dir + "/summary.json")).test, s.test);
  // The diagrams are the best epoch's on test: their ECEs are the summary's.
  const std::string svg = read_file(dir + "/calibration.svg");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("left: ECE " + fixed4(s.test.at("left/ece")) + " (n = 64)"),
            std::string::npos) << svg;
  EXPECT_NE(svg.find("f1: ECE " + fixed4(s.test.at("f1/ece"))), std::string::npos) << svg;
  EXPECT_NE(svg.find("best epoch " + std::to_string(s.best_epoch)), std::string::npos);
  // Calibration stays out of the validation curves.
  EXPECT_EQ(read_file(dir + "/curves.svg").find("ece"), std::string::npos);

  // Single-task learning keeps the trained task's calibration only.
  const TrainSummary one =
      Trainer(TrainOptions(o).stl_task("f0").out(dir + "_f0"), tiny_classification()).run();
  EXPECT_EQ(one.test.size(), 4u);  // accuracy, auc, ece, brier
  EXPECT_TRUE(one.test.count("f0/ece") && one.test.count("f0/brier"));
  const std::string svg_f0 = read_file(dir + "_f0/calibration.svg");
  EXPECT_NE(svg_f0.find("f0: ECE "), std::string::npos);
  EXPECT_EQ(svg_f0.find("left: ECE "), std::string::npos);
  fs::remove_all(dir);
  fs::remove_all(dir + "_f0");
}

TEST(Trainer, ResumedRunEndsWithTheSameNumbersAsAnUninterruptedOne) {
  const std::string full = temp_dir("full"), split = temp_dir("split");
  const TrainSummary a = Trainer(tiny(full), tiny_benchmark()).run();

  const TrainSummary first = Trainer(tiny(split).stop_after_epoch(1), tiny_benchmark()).run();
  EXPECT_FALSE(first.completed());
  EXPECT_EQ(first.epochs_completed, 1);
  // Resume from the run folder's config.json (as `bayesagg train --resume DIR`).
  TrainOptions r = resume_options(split);
  r.progress("none");
  const TrainSummary b = Trainer(r, tiny_benchmark()).run();

  EXPECT_TRUE(b.completed());
  EXPECT_EQ(a.best_epoch, b.best_epoch);
  EXPECT_EQ(a.val, b.val);    // exact equality of every number
  EXPECT_EQ(a.test, b.test);
  // Every step's losses, gradient norms and diagnostics, and every epoch's metrics.
  EXPECT_EQ(read_file(full + "/steps.csv"), read_file(split + "/steps.csv"));
  EXPECT_EQ(read_file(full + "/metrics.csv"), read_file(split + "/metrics.csv"));
  fs::remove_all(full);
  fs::remove_all(split);
}

TEST(Trainer, GivesFamoTheLossesAfterEveryStep) {
  // FAMO declares Need::losses_after_step: the trainer recomputes the batch's losses after the
  // optimiser step, so no update falls back to the delayed estimate (steps.csv delayed_update).
  const std::string dir = temp_dir("famo");
  Trainer(tiny(dir).method("famo").epochs(1), tiny_benchmark()).run();
  std::istringstream csv(read_file(dir + "/steps.csv"));
  std::string header, line;
  std::getline(csv, header);
  std::vector<std::string> cols;
  for (std::stringstream hs(header); std::getline(hs, line, ',');) cols.push_back(line);
  const auto col = std::find(cols.begin(), cols.end(), "delayed_update") - cols.begin();
  ASSERT_LT(col, static_cast<long>(cols.size())) << header;
  int rows = 0;
  while (std::getline(csv, line)) {
    std::vector<std::string> cells;
    for (std::stringstream ls(line); std::getline(ls, header, ',');) cells.push_back(header);
    ASSERT_GT(static_cast<long>(cells.size()), col) << line;
    EXPECT_EQ(std::stod(cells[col]), 0.0) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 4);  // 512 items / batch 128
  fs::remove_all(dir);
}

TEST(TrainOptions, BaselineOptionsReachTheCommandLineAndConfigs) {
  TrainOptions o;
  apply_setting(o, "cagrad-c", "0.25");
  apply_setting(o, "nashmtl-update-every", "25");
  apply_setting(o, "pcgrad-reduction", "mean");
  apply_setting(o, "aligned-scale", "median");
  apply_setting(o, "famo-lr", "0.01");
  EXPECT_EQ(o.gradient().cagrad().c(), 0.25);
  EXPECT_EQ(o.gradient().nashmtl().update_weights_every(), 25);
  EXPECT_TRUE(o.gradient().pcgrad().mean());
  EXPECT_EQ(o.gradient().alignedmtl().scale(), AlignedScale::median);
  EXPECT_EQ(o.weighting().famo().lr(), 0.01);
  TrainOptions back;
  apply_config_json(back, options_to_json(o), "test");
  EXPECT_EQ(options_to_json(back), options_to_json(o));
  EXPECT_EQ(first_setting_difference(options_to_json(back), options_to_json(o)), "");
  EXPECT_EQ(first_setting_difference(options_to_json(TrainOptions()), options_to_json(o)),
            "pcgrad-reduction");  // registry order: the first that differs
  EXPECT_THROW(apply_setting(o, "aligned-scale", "max"), c10::Error);
  o.gradient().cagrad().c(-1);
  EXPECT_THROW(o.validate(), c10::Error);
}

TEST(Trainer, TrunkClipAfterWarmupLeavesTheWarmupUnclipped) {
  // steps.csv records the norms before clipping, so a clip shows in the steps after it.
  const auto steps_of = [](const std::string& dir, int64_t epoch) {
    std::vector<std::string> rows;
    std::istringstream in(read_file(dir + "/steps.csv"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind(std::to_string(epoch) + ",", 0) == 0) rows.push_back(line);
    }
    return rows;
  };
  const std::string none = temp_dir("clip_none"), after = temp_dir("clip_after"),
                    always = temp_dir("clip_always");
  Trainer(tiny(none).epochs(2), tiny_benchmark()).run();
  Trainer(tiny(after).epochs(2).trunk_clip(1e-3).trunk_clip_after_warmup(true), tiny_benchmark())
      .run();
  Trainer(tiny(always).epochs(2).trunk_clip(1e-3), tiny_benchmark()).run();
  ASSERT_EQ(steps_of(none, 1).size(), 4u);
  EXPECT_EQ(steps_of(after, 1), steps_of(none, 1));    // warm-up epoch: not clipped
  EXPECT_NE(steps_of(always, 1), steps_of(none, 1));   // clipped from the first step
  EXPECT_NE(steps_of(after, 2), steps_of(none, 2));    // clipped after the warm-up
  for (const auto& d : {none, after, always}) fs::remove_all(d);
}

TEST(Trainer, EvaluatesRegressionWithTheFullDataPosteriorMeanWhenAsked) {
  // Epoch 1 is the LS warm-up (no full-data posterior yet: both evaluate the head); in epoch 2
  // the posterior evaluation predicts with h · m_fullᵀ and so reports other numbers, while
  // training is the same (same losses).
  const std::string head = temp_dir("eval_head"), post = temp_dir("eval_post");
  Trainer(tiny(head).epochs(2).eval_regression("head"), tiny_benchmark()).run();
  Trainer(tiny(post).epochs(2).eval_regression("posterior"), tiny_benchmark()).run();
  const auto rows = [](const std::string& dir, const std::string& prefix) {
    std::istringstream csv(read_file(dir + "/metrics.csv"));
    std::vector<std::string> out;
    for (std::string line; std::getline(csv, line);) {
      if (line.rfind(prefix, 0) == 0) out.push_back(line);
    }
    return out;
  };
  EXPECT_EQ(rows(head, "1,test,"), rows(post, "1,test,"));
  EXPECT_EQ(rows(head, "2,train,"), rows(post, "2,train,"));
  ASSERT_EQ(rows(post, "2,test,").size(), 10u);
  EXPECT_NE(rows(head, "2,test,"), rows(post, "2,test,"));
  EXPECT_THROW(tiny(head).method("ls").eval_regression("posterior").validate(), c10::Error);
  EXPECT_EQ(TrainOptions().benchmark("utkface").resolved_eval_regression(), "posterior");
  EXPECT_EQ(TrainOptions().benchmark("utkface").method("ls").resolved_eval_regression(), "head");
  for (const auto& d : {head, post}) fs::remove_all(d);
}

TEST(Trainer, RefusesToOverwriteAnUnfinishedRun) {
  const std::string dir = temp_dir("unfinished");
  Trainer(tiny(dir).stop_after_epoch(1), tiny_benchmark()).run();
  try {
    Trainer(tiny(dir), tiny_benchmark()).run();
    FAIL() << "an unfinished run must not be replaced silently";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("--resume"), std::string::npos) << e.msg();
  }
  EXPECT_NO_THROW(Trainer(tiny(dir).epochs(1).overwrite(true), tiny_benchmark()).run());
  fs::remove_all(dir);
}

TEST(Trainer, NonFiniteLossStopsNamingTaskEpochAndStepAndKeepsTheCheckpoint) {
  const std::string dir = temp_dir("nonfinite");
  Benchmark poisoned = tiny_benchmark();
  poisoned.train.labels[0] = poisoned.train.labels[0].clone();
  // A finite label (it passes the data checks) whose squared error overflows float32.
  poisoned.train.labels[0][100][3] = 1e30f;

  // In the first epoch: no checkpoint yet.
  try {
    Trainer(tiny(dir), poisoned).run();
    FAIL() << "a NaN label must stop the run";
  } catch (const c10::Error& e) {
    const std::string msg = e.msg();
    EXPECT_NE(msg.find("non-finite loss of task 'task_3'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("at epoch 1, step "), std::string::npos) << msg;
  }
  fs::remove_all(dir);

  // In the second epoch of a resumed run: the epoch-1 checkpoint stays as it was.
  Trainer(tiny(dir).stop_after_epoch(1), tiny_benchmark()).run();
  const std::string before = read_file(dir + "/checkpoint.pt");
  TrainOptions r = resume_options(dir);
  r.progress("none");
  try {
    Trainer(r, poisoned).run();
    FAIL() << "a NaN label must stop the run";
  } catch (const c10::Error& e) {
    const std::string msg = e.msg();
    EXPECT_NE(msg.find("task_3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("at epoch 2, step "), std::string::npos) << msg;
    EXPECT_NE(msg.find("checkpoint (epoch 1) is intact"), std::string::npos) << msg;
  }
  EXPECT_EQ(read_file(dir + "/checkpoint.pt"), before);
  // steps.csv holds the steps up to the failing one, whose task_3 loss is inf.
  const std::string steps = read_file(dir + "/steps.csv");
  EXPECT_NE(steps.find("\n2,"), std::string::npos);
  EXPECT_NE(steps.find(",inf,"), std::string::npos);
  fs::remove_all(dir);
}

TEST(Trainer, ResumesFromThePreviousCheckpointWhenTheLastIsDamaged) {
  const std::string full = temp_dir("prev_full"), split = temp_dir("prev_split");
  const TrainSummary a = Trainer(tiny(full), tiny_benchmark()).run();
  Trainer(tiny(split).stop_after_epoch(2), tiny_benchmark()).run();
  // 256 bytes flipped inside the tensor data of the epoch-2 checkpoint.
  std::string bytes = read_file(split + "/checkpoint.pt");
  for (size_t i = 0; i < 256; ++i) bytes[bytes.size() / 2 + i] ^= static_cast<char>(0xff);
  write_file_atomic(split + "/checkpoint.pt", bytes);
  TrainOptions r = resume_options(split);
  r.progress("none");
  try {
    Trainer(r, tiny_benchmark()).run();
    FAIL() << "a damaged checkpoint must be refused";
  } catch (const c10::Error& e) {
    const std::string msg = e.msg();
    EXPECT_NE(msg.find("SHA-256"), std::string::npos) << msg;
    EXPECT_NE(msg.find("checkpoint.prev.pt' verifies"), std::string::npos) << msg;
  }
  // As the message says: copy the previous checkpoint back and resume; epoch 2 is redone.
  fs::copy_file(split + "/checkpoint.prev.pt", split + "/checkpoint.pt",
                fs::copy_options::overwrite_existing);
  const TrainSummary b = Trainer(r, tiny_benchmark()).run();
  EXPECT_TRUE(b.completed());
  EXPECT_EQ(a.best_epoch, b.best_epoch);
  EXPECT_EQ(a.test, b.test);
  EXPECT_EQ(read_file(full + "/metrics.csv"), read_file(split + "/metrics.csv"));
  fs::remove_all(full);
  fs::remove_all(split);
}

TEST(Trainer, AMissingCheckpointSaysHowToResumeFromThePreviousOne) {
  const std::string full = temp_dir("missing_full"), split = temp_dir("missing_split");
  const TrainSummary a = Trainer(tiny(full), tiny_benchmark()).run();
  Trainer(tiny(split).stop_after_epoch(2), tiny_benchmark()).run();
  fs::remove(split + "/checkpoint.pt");  // deleted by hand, or lost with its disk
  TrainOptions r = resume_options(split);
  r.progress("none");
  const std::string msg = testing::error_of([&] { Trainer(r, tiny_benchmark()).run(); });
  EXPECT_NE(msg.find("checkpoint.pt' does not exist"), std::string::npos) << msg;
  EXPECT_NE(msg.find("checkpoint.prev.pt' verifies: to continue from it, `cp "), std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("before its first epoch"), std::string::npos) << msg;
  // Without a verifying previous checkpoint, the message says what it said before.
  const std::string prev = read_file(split + "/checkpoint.prev.pt");
  write_file_atomic(split + "/checkpoint.prev.pt", prev.substr(0, prev.size() / 2));
  const std::string none = testing::error_of([&] { Trainer(r, tiny_benchmark()).run(); });
  EXPECT_NE(none.find("before its first epoch ended"), std::string::npos) << none;
  EXPECT_EQ(none.find("verifies"), std::string::npos) << none;
  // As the first message said: copy the previous checkpoint into place and resume.
  write_file_atomic(split + "/checkpoint.pt", prev);
  const TrainSummary b = Trainer(r, tiny_benchmark()).run();
  EXPECT_TRUE(b.completed());
  EXPECT_EQ(a.test, b.test);
  fs::remove_all(full);
  fs::remove_all(split);
}

TEST(TrainOptions, SampleCountsAreBoundedWithTheFlagsNames) {
  struct Case {
    const char* key;
    std::string value;
    const char* expected;
  };
  const std::vector<Case> cases = {
      {"mc-samples", std::to_string(kMaxMcSamples + 1), "--mc-samples 67108865: expected 2 to "},
      {"mc-samples", "1", "--mc-samples 1: expected 2 to 67108864"},
      {"rb-samples", std::to_string(kMaxRbSamples + 2), "--rb-samples 1048578: expected 2 to "},
      {"quadrature-points", "201", "--quadrature-points 201: expected 2 to 200"},
      {"mc-samples", "99999999999999999999", "--mc-samples: expected an integer"},
  };
  for (const Case& c : cases) {
    const std::string msg = testing::error_of([&] {
      TrainOptions o = tiny("unused");
      apply_setting(o, c.key, c.value);
      o.validate();
    });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << c.key << " " << c.value << ": " << msg;
  }
  TrainOptions at_max = tiny("unused");
  apply_setting(at_max, "mc-samples", std::to_string(kMaxMcSamples));
  apply_setting(at_max, "rb-samples", std::to_string(kMaxRbSamples));
  apply_setting(at_max, "quadrature-points", "200");
  EXPECT_NO_THROW(at_max.validate());
}

TEST(Trainer, AKillBetweenCheckpointAndBestModelIsRepairedOnResume) {
  const std::string dir = temp_dir("stale_best");
  Trainer(tiny(dir).stop_after_epoch(1), tiny_benchmark()).run();
  const std::string best_after_1 = read_file(dir + "/best_model.pt");
  TrainOptions r = resume_options(dir);
  r.progress("none");
  r.stop_after_epoch(2);
  const TrainSummary s = Trainer(r, tiny_benchmark()).run();
  ASSERT_EQ(s.best_epoch, 2);  // the loss falls on this run: epoch 2 is the best
  // As if killed after checkpoint.pt of epoch 2 was written but before best_model.pt was.
  write_file_atomic(dir + "/best_model.pt", best_after_1);
  ASSERT_EQ(saved_model_epoch(dir + "/best_model.pt"), 1);
  r.stop_after_epoch(0);
  Trainer(r, tiny_benchmark()).run();
  // Epoch 3 may or may not be better; either way best_model.pt holds the best epoch.
  const TrainSummary done = summary_from_json(read_file(dir + "/summary.json"));
  EXPECT_EQ(saved_model_epoch(dir + "/best_model.pt"), done.best_epoch);
  fs::remove_all(dir);
}

TEST(Trainer, KeepsAFinishedRunUnlessOverwriteAndUntilTheDataAreLoaded) {
  const std::string dir = temp_dir("finished");
  Trainer(tiny(dir).epochs(1), tiny_benchmark()).run();
  const std::string summary = read_file(dir + "/summary.json");
  try {
    Trainer(tiny(dir).epochs(1), tiny_benchmark()).run();
    FAIL() << "a finished run must not be replaced without --overwrite";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("--overwrite"), std::string::npos) << e.msg();
  }
  // With --overwrite, but a data load that fails: the old results are untouched.
  try {
    Trainer(tiny(dir).epochs(1).overwrite(true).train_subset(0).benchmark("cifar-mtl").data_dir(
                dir + "/nowhere"))
        .run();
    FAIL() << "the data load must fail";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find(dir + "/nowhere"), std::string::npos) << e.msg();
  }
  EXPECT_EQ(read_file(dir + "/summary.json"), summary);
  EXPECT_TRUE(fs::is_regular_file(dir + "/checkpoint.pt"));
  EXPECT_TRUE(fs::is_regular_file(dir + "/best_model.pt"));
  fs::remove_all(dir);
}

TEST(Trainer, RefusesEmptyValidationOrTestSplitsBeforeTraining) {
  for (const bool empty_val : {true, false}) {
    const std::string dir = temp_dir("empty_split");
    Benchmark b = tiny_benchmark();
    MultiTaskSplit& s = empty_val ? b.val : b.test;
    s = s.head(0);
    try {
      Trainer(tiny(dir).epochs(1), b).run();
      FAIL() << "an empty " << (empty_val ? "validation" : "test") << " split must be refused";
    } catch (const c10::Error& e) {
      const std::string msg = e.msg();
      EXPECT_NE(msg.find(empty_val ? "have 0 validation" : " and 0 test items"),
                std::string::npos)
          << msg;
    }
    EXPECT_FALSE(fs::exists(dir + "/checkpoint.pt"));
    fs::remove_all(dir);
  }
}

TEST(Trainer, RefusesAZeroOrNonFiniteStlBaselineAtStart) {
  const std::string dir = temp_dir("stl_zero");
  fs::create_directories(dir);
  for (const std::string value : {"0", "0.0", "-0"}) {
    write_file_atomic(dir + "/stl.json", "{\"task_0/mae\": " + value + "}");
    try {
      Trainer(tiny(dir + "/run").epochs(1).stl_baseline(dir + "/stl.json"), tiny_benchmark()).run();
      FAIL() << "baseline " << value << " must be refused";
    } catch (const c10::Error& e) {
      const std::string msg = e.msg();
      EXPECT_NE(msg.find("must be finite and non-zero"), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(dir + "/run/checkpoint.pt"));  // refused before the first epoch
  }
  fs::remove_all(dir);
}

TEST(Trainer, RefusesAbsurdThreadAndEpochCountsAtStart) {
  const std::string dir = temp_dir("absurd");
  const auto error = [&](const TrainOptions& o) -> std::string {
    try {
      Trainer(o, tiny_benchmark()).run();
    } catch (const c10::Error& e) {
      return e.msg();
    }
    return "";
  };
  // 2^32 + 1 threads used to become 1 thread (truncated to int).
  EXPECT_NE(error(tiny(dir).threads(4294967297LL)).find("--threads 4294967297"), std::string::npos);
  // ~1.5e18 epochs used to overflow the schedule's milestones.
  EXPECT_NE(error(tiny(dir).epochs(1500000000000000000LL)).find("--epochs 1500000000000000000"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(dir));  // refused before the run folder is made
}

TEST(TrainOptions, ConfigWithADuplicateKeyIsRefused) {
  TrainOptions o;
  try {
    apply_config_json(o, R"({"lr": 0.1, "batch-size": 64, "lr": 0.001})", "--config 'c.json'");
    FAIL() << "a duplicate key must be refused";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("--config 'c.json': key 'lr' appears twice"),
              std::string::npos)
        << e.msg();
  }
}

TEST(TrainOptions, ConfigJsonRoundTripsAndFlagsOverride) {
  TrainOptions o;
  apply_setting(o, "benchmark", "synthetic-regression");
  apply_setting(o, "gamma", "0.01");
  apply_setting(o, "gamma-cls", "0.02");  // specific beats --gamma
  apply_setting(o, "mc-samples", "256");
  apply_setting(o, "binary-moments", "mc");
  EXPECT_DOUBLE_EQ(o.bayesagg().gamma_regression(), 0.01);
  EXPECT_DOUBLE_EQ(o.bayesagg().gamma_classification(), 0.02);
  EXPECT_EQ(o.resolved_epochs(), 30);
  EXPECT_EQ(o.resolved_out(), "runs/synthetic-regression-bayesagg-seed0");

  TrainOptions back;
  apply_config_json(back, options_to_json(o), "test");
  for (const auto& s : train_settings()) {
    EXPECT_EQ(setting_value(back, s.key), setting_value(o, s.key)) << s.key;
  }
  // Underscored keys are accepted, `_`-prefixed ones ignored, unknown ones rejected by name.
  TrainOptions c;
  apply_config_json(c, R"({"batch_size": 64, "_comment": "x", "lr": 0.01})", "cfg");
  EXPECT_EQ(c.batch_size(), 64);
  EXPECT_DOUBLE_EQ(c.lr(), 0.01);
  try {
    apply_config_json(c, R"({"learning-rate": 0.1})", "cfg.json");
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("learning-rate"), std::string::npos) << e.msg();
  }
  EXPECT_THROW(apply_setting(c, "batch-size", "12x"), c10::Error);
  EXPECT_THROW(apply_setting(c, "binary-moments", "fast"), c10::Error);
  EXPECT_THROW(TrainOptions().benchmark("cifar").validate(), c10::Error);
}

TEST(TrainOptions, CudaWithoutCudaGivesAClearError) {
  EXPECT_TRUE(parse_device("cpu").is_cpu());
  EXPECT_THROW(parse_device("tpu"), c10::Error);
  if (!at::hasCUDA()) {
    try {
      parse_device("cuda:0");
      FAIL();
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.msg()).find("no CUDA"), std::string::npos) << e.msg();
    }
  }
}


TEST(TrainOptions, MethodPresetsGiveDefaultsThatExplicitSettingsOverride) {
  // bayesagg: the project's variant; bayesagg-reference: the authors' method (the defaults).
  const TrainOptions variant = TrainOptions().method("bayesagg").with_method_preset();
  for (const auto& [key, value] : method_preset("bayesagg", "multi-fashion")) {
    EXPECT_EQ(setting_value(variant, key), value) << key;
  }
  const TrainOptions ref = TrainOptions().method("bayesagg-reference").with_method_preset();
  const BayesAggOptions r = ref.bayesagg();
  EXPECT_EQ(r.centre(), PosteriorCentre::newton);
  EXPECT_EQ(r.refresh(), PosteriorRefresh::epoch);
  EXPECT_EQ(r.noise(), ObservationNoise::fixed);
  EXPECT_EQ(r.weighting(), Weighting::precision);
  // An explicit setting wins over the preset, in either order.
  TrainOptions o;
  apply_setting(o, "posterior", "mode");
  apply_setting(o, "method", "bayesagg");
  EXPECT_EQ(o.with_method_preset().bayesagg().centre(), PosteriorCentre::mode);
  // A value changed in code counts as explicit too.
  TrainOptions c = TrainOptions().method("bayesagg");
  c.bayesagg().weighting(Weighting::task);
  EXPECT_EQ(c.with_method_preset().bayesagg().weighting(), Weighting::task);
  // Idempotent, and config.json records the resolved values, which resume reads back.
  EXPECT_EQ(options_to_json(variant), options_to_json(variant.with_method_preset()));
  TrainOptions back;
  apply_config_json(back, options_to_json(TrainOptions().method("bayesagg")), "config");
  EXPECT_EQ(options_to_json(back), options_to_json(TrainOptions().method("bayesagg")));
}

TEST(TrainOptions, MethodSpecsCarryOverrides) {
  TrainOptions o;
  apply_setting(o, "s-cls", "0.5");
  apply_setting(o, "method", "bayesagg[posterior=head,s-reg=0.1,weighting=snr]");
  EXPECT_EQ(o.method(), "bayesagg");
  EXPECT_DOUBLE_EQ(o.bayesagg().s_regression(), 0.1);
  EXPECT_DOUBLE_EQ(o.bayesagg().s_classification(), 0.5);
  EXPECT_EQ(o.bayesagg().weighting(), Weighting::snr);
  EXPECT_EQ(method_spec_folder("bayesagg[posterior=head,s-reg=0.1]"),
            "bayesagg-posterior_head-s-reg_0.1");
  EXPECT_EQ(method_spec_folder("ls"), "ls");
  EXPECT_THROW(parse_method_spec("bayesagg[posterior]"), c10::Error);
  EXPECT_THROW(parse_method_spec("bayesagg[posterior=head"), c10::Error);
  EXPECT_THROW(parse_method_spec("bayesagg[]"), c10::Error);
  EXPECT_THROW(apply_setting(o, "method", "bayesagg[posterior=sideways]"), c10::Error);
  EXPECT_THROW(apply_setting(o, "method", "bayesagg[nope=1]"), c10::Error);
}

TEST(TrainOptions, OlderConfigsWithoutANewSettingStayComparable) {
  // A config written before `weighting` existed: equal when the new one has the default there.
  const std::string now = options_to_json(TrainOptions().method("ls"));
  auto old = nlohmann::ordered_json::parse(now);
  old.erase("weighting");
  EXPECT_EQ(first_setting_difference(old.dump(), now), "");
  TrainOptions snr = TrainOptions().method("ls");
  apply_setting(snr, "weighting", "snr");
  EXPECT_EQ(first_setting_difference(old.dump(), options_to_json(snr)), "weighting");
}

}  // namespace
}  // namespace bayesagg
