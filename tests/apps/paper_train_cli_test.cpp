// `bayesagg train --benchmark cifar-mtl|utkface|chestx14|qm9` end to end on miniature data sets
// in the original formats (tests/paper/paper_data.h): the run folder's summary lists the tasks,
// the split sizes the spec's splits give, the metrics of each benchmark and finite numbers.
#include "paper/paper_data.h"
#include "test_util.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

namespace fs = std::filesystem;
namespace pd = bayesagg::testing::paper_data;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using nlohmann::json;

namespace {

struct CliRun {
  int status;
  std::string out, err;
};

/// Runs `bayesagg train <args> --out <dir>/run` with its image caches in `<dir>/cache`.
CliRun train(const TempDir& dir, const std::string& args) {
  const std::string err_file = dir.file("stderr.txt"), out_file = dir.file("stdout.txt");
  const std::string cmd = "BAYESAGG_CACHE_DIR=" + dir.file("cache") + " " + BAYESAGG_CLI +
                          " train " + args + " --out " + dir.file("run") +
                          " --progress none --threads 1 > " + out_file + " 2> " + err_file;
  const int rc = std::system(cmd.c_str());
  const auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out_file), slurp(err_file)};
}

json summary(const TempDir& dir) {
  std::ifstream in(dir.file("run") + "/summary.json");
  return json::parse(in);
}

std::vector<std::string> tasks_of(const json& s) { return s.at("tasks").get<std::vector<std::string>>(); }

/// Every test metric is a finite number (or null for an AUC of a split with one class).
void expect_metrics(const json& s, const std::vector<std::string>& keys) {
  for (const auto& key : keys) {
    ASSERT_TRUE(s.at("test").contains(key)) << key << " missing in " << s.at("test").dump();
    const json& v = s.at("test").at(key);
    if (v.is_null()) continue;
    EXPECT_TRUE(std::isfinite(v.get<double>())) << key;
  }
}

}  // namespace

TEST(PaperTrainCli, CifarMtl) {
  TempDir dir;
  pd::write_cifar(dir.path / "data", 20, 10);
  const CliRun r = train(dir, "--benchmark cifar-mtl --data-dir " + dir.file("data") +
                               " --epochs 1 --ls-epochs 0 --batch-size 6 --mc-samples 16");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  const json s = summary(dir);
  EXPECT_EQ(s.at("benchmark"), "cifar-mtl");
  EXPECT_EQ(s.at("n_train"), 18);  // 20 - round(0.1 * 20)
  EXPECT_EQ(s.at("n_val"), 2);
  EXPECT_EQ(s.at("n_test"), 10);
  const auto tasks = tasks_of(s);
  ASSERT_EQ(tasks.size(), 20u);
  EXPECT_EQ(tasks.front(), "aquatic_mammals");
  EXPECT_EQ(tasks.back(), "vehicles_2");
  expect_metrics(s, {"all/argmax_accuracy", "fish/accuracy", "fish/auc"});
  EXPECT_TRUE(contains(s.at("selection").get<std::string>(), "20-way argmax"));
  EXPECT_TRUE(contains(r.out, "cifar-cnn(3x32x32 -> 160)")) << r.out;
}

#if BAYESAGG_WITH_IMAGES
TEST(PaperTrainCli, UTKFace) {
  TempDir dir;
  pd::write_faces(dir.path / "data");
  const CliRun r = train(dir, "--benchmark utkface --data-dir " + dir.file("data") +
                               " --epochs 1 --ls-epochs 0 --batch-size 4 --image-size 40"
                               " --crop-size 32 --representation-dim 16 --mc-samples 16");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  const json s = summary(dir);
  // sklearn's sizes on ages 5 (3 faces) and 30 (10), 3 rare: test ceil(0.2 * 13) = 3, then
  // validation ceil(0.125 * 10) = 2 (one age-5 face by the largest remainder), train 8 + 3.
  EXPECT_EQ(s.at("n_train"), 11);
  EXPECT_EQ(s.at("n_val"), 2);
  EXPECT_EQ(s.at("n_test"), 3);
  EXPECT_EQ(tasks_of(s), (std::vector<std::string>{"age", "gender", "race"}));
  expect_metrics(s, {"age/mse", "age/mae", "gender/accuracy", "race/accuracy", "gender/ece",
                     "race/brier"});
  EXPECT_FALSE(s.at("test").contains("age/ece"));  // regression: no calibration
  EXPECT_TRUE(fs::is_regular_file(dir.path / "run" / "calibration.svg"));
  // Δm against the published STL numbers (spec).
  EXPECT_TRUE(s.contains("delta_m") && s.at("delta_m").is_number()) << s.dump();
  EXPECT_TRUE(contains(r.out, "resnet18(3x32x32 -> 16)")) << r.out;
  EXPECT_TRUE(contains(r.out, "skipped")) << r.out;  // the two badly named files
}
#endif  // BAYESAGG_WITH_IMAGES

#if BAYESAGG_WITH_IMAGES
TEST(PaperTrainCli, ChestX14) {
  TempDir dir;
  pd::write_chestx(dir.path / "data" / "images", dir.path / "split");
  const CliRun r = train(dir, "--benchmark chestx14 --data-dir " + dir.file("data") +
                               " --split-dir " + dir.file("split") +
                               " --epochs 1 --ls-epochs 0 --batch-size 2 --image-size 36"
                               " --crop-size 32 --representation-dim 16");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  const json s = summary(dir);
  EXPECT_EQ(s.at("n_train"), 4);
  EXPECT_EQ(s.at("n_val"), 2);
  EXPECT_EQ(s.at("n_test"), 2);
  const auto tasks = tasks_of(s);
  ASSERT_EQ(tasks.size(), 14u);
  EXPECT_EQ(tasks[11], "Pleural_Thickening");
  expect_metrics(s, {"Atelectasis/auc", "Pleural_Thickening/auc", "Pneumothorax/auc",
                     "Atelectasis/ece", "Pneumothorax/brier"});
  EXPECT_TRUE(fs::is_regular_file(dir.path / "run" / "calibration.svg"));
  EXPECT_FALSE(s.at("test").contains("Atelectasis/accuracy"));
  EXPECT_EQ(s.at("selection"), "validation mean AUC");
  EXPECT_TRUE(contains(r.out, "resnet34(3x32x32 -> 16)")) << r.out;

}

TEST(PaperTrainCli, ChestX14NamesAMissingSplitFolder) {
  TempDir dir;
  pd::write_chestx(dir.path / "data" / "images", {});
  const CliRun bad = train(dir, "--benchmark chestx14 --data-dir " + dir.file("data") +
                                    " --split-dir " + dir.file("nowhere") + " --epochs 1");
  EXPECT_NE(bad.status, 0);
  EXPECT_TRUE(contains(bad.err, "nowhere")) << bad.err;
}
#endif  // BAYESAGG_WITH_IMAGES

#if BAYESAGG_WITH_QM9
TEST(PaperTrainCli, QM9) {
  TempDir dir;
  pd::write_qm9(dir.path / "data");
  const CliRun r = train(dir, "--benchmark qm9 --data-dir " + dir.file("data") +
                               " --val-size 1 --test-size 1 --epochs 2 --batch-size 2");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  const json s = summary(dir);
  EXPECT_EQ(s.at("n_train"), 3);  // 6 molecules - 1 uncharacterized - 1 val - 1 test
  EXPECT_EQ(s.at("n_val"), 1);
  EXPECT_EQ(s.at("n_test"), 1);
  EXPECT_EQ(tasks_of(s), (std::vector<std::string>{"mu", "alpha", "homo", "lumo", "r2", "zpve",
                                                   "u0", "u298", "h298", "g298", "cv"}));
  expect_metrics(s, {"mu/mae", "homo/mae", "u0/mae", "cv/mae", "homo/mse"});
  EXPECT_TRUE(s.at("delta_m").is_number());
  EXPECT_TRUE(contains(r.out, "mpnn(11x5 -> 64)")) << r.out;
}
#endif  // BAYESAGG_WITH_QM9

TEST(PaperTrainCli, PaperBenchmarksNeedADataDir) {
  TempDir dir;
  const CliRun r = train(dir, "--benchmark qm9 --epochs 1");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "pass --data-dir")) << r.err;
}

#if BAYESAGG_WITH_QM9
TEST(PaperTrainCli, SingleTaskBaselinesOfAPaperBenchmark) {
  TempDir dir;
  pd::write_qm9(dir.path / "data");
  const CliRun r = train(dir, "--benchmark qm9 --data-dir " + dir.file("data") +
                               " --val-size 1 --test-size 1 --epochs 1 --batch-size 3 --method stl");
  ASSERT_EQ(r.status, 0) << r.err << r.out;
  std::ifstream in(dir.file("run") + "/stl_baseline.json");
  const json j = json::parse(in);
  // One run per target, each reporting its standardised MSE and its MAE.
  EXPECT_EQ(j.at("test").size(), 22u);
  EXPECT_TRUE(j.at("test").contains("homo/mae") && j.at("test").contains("cv/mse"));
  EXPECT_TRUE(fs::exists(dir.file("run") + "/g298/summary.json"));
}
#endif  // BAYESAGG_WITH_QM9

// In a build without the optional libraries, one line says what to install, and no run folder
// is made.
#if !BAYESAGG_WITH_QM9
TEST(PaperTrainCli, QM9WithoutRDKitSaysWhatToInstallAndRebuild) {
  TempDir dir;
  const CliRun r = train(dir, "--benchmark qm9 --data-dir " + dir.file("data") + " --epochs 1");
  EXPECT_EQ(r.status, 1);
  EXPECT_TRUE(contains(r.err, "built without RDKit; install librdkit-dev libboost-dev")) << r.err;
  EXPECT_TRUE(contains(r.err, "rebuild")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(fs::exists(dir.file("run")));
}
#endif
#if !BAYESAGG_WITH_IMAGES
TEST(PaperTrainCli, ImageBenchmarksWithoutLibpngAndLibjpegSayWhatToInstallAndRebuild) {
  for (const std::string name : {"utkface", "chestx14"}) {
    TempDir dir;
    const CliRun r = train(dir, "--benchmark " + name + " --data-dir " + dir.file("data") +
                                    " --epochs 1");
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(contains(r.err, "built without libpng and libjpeg; install libpng-dev "
                                "libjpeg-dev"))
        << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(fs::exists(dir.file("run")));
  }
}
#endif
