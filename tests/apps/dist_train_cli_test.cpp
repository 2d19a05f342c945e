// Data-parallel `bayesagg train --nproc 2` (two ranks on 127.0.0.1, c10d Gloo) against the
// one-process run with the same global batch: final parameters, records written once, a rank
// killed mid-epoch, resuming the two-rank run, and a BatchNorm trunk (synchronised BatchNorm)
// (docs/distributed.md).
#include "cli_util.h"
#include "test_util.h"

#include "bayesagg/core/checksum.h"
#include "bayesagg/core/files.h"

#include "bayesagg/models/model.h"
#include "bayesagg/train/batch_source.h"
#include "bayesagg/train/checkpoint.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/serialize/archive.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <thread>

namespace {

using bayesagg::testing::contains;
using bayesagg::testing::read;
using bayesagg::testing::run_cli;
using bayesagg::testing::run_cli_after;
using bayesagg::testing::TempDir;


size_t count_lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

/// The model of a run of `benchmark` (with `train_subset` items), with `file`'s parameters (or
/// the initial ones when `file` is empty); trunk parameters, then head parameters.
std::vector<at::Tensor> parameters(const std::string& benchmark, int64_t train_subset,
                                   const std::string& file) {
  const bayesagg::TrainOptions o =
      bayesagg::TrainOptions().benchmark(benchmark).train_subset(train_subset);
  const bayesagg::TrainData data = bayesagg::make_train_data(*bayesagg::make_embedded_benchmark(o));
  bayesagg::MultiTaskModel model(data.input_shape, data.meta.groups,
                                 bayesagg::ModelOptions()
                                     .trunk(o.resolved_trunk())
                                     .representation_dim(o.resolved_representation_dim())
                                     .seed(bayesagg::derive_seed(o.seed(), 1)));
  if (!file.empty()) bayesagg::load_model(file, model);
  std::vector<at::Tensor> p = model.trunk_parameters();
  for (const auto& h : model.head_parameters()) p.push_back(h);
  for (auto& t : p) t = t.detach().to(at::kDouble).clone();
  return p;
}

/// max over tensors of ||a - b|| / ||b||.
double relative_difference(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0.0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = (a[i] - b[i]).norm().item<double>() / (b[i].norm().item<double>() + 1e-12);
    worst = std::max(worst, d);
  }
  return worst;
}

struct RunSpec {
  std::string benchmark;
  std::string method;
  int64_t train_subset;
  int64_t epochs = 2;
  int64_t batch_size = 64;
  /// More options (e.g. BayesAgg-MTL's settings).
  std::string extra = "";
};

std::string train_args(const RunSpec& r, const std::string& out) {
  return "train --benchmark " + r.benchmark + " --method " + r.method + " --train-subset " +
         std::to_string(r.train_subset) + " --epochs " + std::to_string(r.epochs) +
         " --batch-size " + std::to_string(r.batch_size) +
         " --threads 1 --seed 3 --progress none --out " + out + (r.extra.empty() ? "" : " ") +
         r.extra;
}

/// Trains `r` on one process and on two ranks; the final parameters agree within 1e-5
/// relative, the training moved them, and the two-rank run wrote each record once.
void expect_two_ranks_equal_one(const RunSpec& r) {
  TempDir dir("bayesagg_dist_cli_");
  const std::string one = dir.file("one"), two = dir.file("two");
  const auto a = run_cli(train_args(r, one) + " > " + dir.file("one.log"));
  ASSERT_EQ(a.status, 0) << a.err;
  const auto b = run_cli(train_args(r, two) + " --nproc 2 > " + dir.file("two.log"));
  ASSERT_EQ(b.status, 0) << b.err;
  const auto p1 = parameters(r.benchmark, r.train_subset, one + "/checkpoint.pt");
  const auto p2 = parameters(r.benchmark, r.train_subset, two + "/checkpoint.pt");
  const auto p0 = parameters(r.benchmark, r.train_subset, "");
  EXPECT_LT(relative_difference(p2, p1), 1e-5) << r.method << " on " << r.benchmark;
  EXPECT_GT(relative_difference(p0, p1), 1e-3) << "the run did not train";
  // One writer: each step and each metric once, the log once (rank 0's).
  const std::string steps1 = read(one + "/steps.csv"), steps2 = read(two + "/steps.csv");
  EXPECT_EQ(count_lines(steps2), count_lines(steps1));
  EXPECT_EQ(count_lines(read(two + "/metrics.csv")), count_lines(read(one + "/metrics.csv")));
  const std::string log = read(dir.file("two.log"));
  EXPECT_TRUE(contains(log, "2 data-parallel ranks")) << log;
  EXPECT_EQ(log.find("epoch 2/2"), log.rfind("epoch 2/2")) << log;
  EXPECT_TRUE(contains(read(two + "/config.json"), "\"_world_size\": 2"));
}

TEST(DistTrainCli, LinearScalarisationOnSyntheticRegression) {
  expect_two_ranks_equal_one({"synthetic-regression", "ls", 300});
}

TEST(DistTrainCli, FamoOnSyntheticRegression) {
  expect_two_ranks_equal_one({"synthetic-regression", "famo", 300});
}

TEST(DistTrainCli, NashMtlOnSyntheticRegression) {
  expect_two_ranks_equal_one({"synthetic-regression", "nashmtl", 300});
}

TEST(DistTrainCli, LinearScalarisationAndNashMtlOnFashionBinary) {
  expect_two_ranks_equal_one({"fashion-binary", "ls", 256});
  expect_two_ranks_equal_one({"fashion-binary", "nashmtl", 256});
}

// BayesAgg-MTL with one linear-scalarisation warm-up epoch, then two aggregating epochs: the
// batch and full-data statistics, the noise estimates and the task weights are all-reduced.
TEST(DistTrainCli, BayesAggOnSyntheticRegression) {
  expect_two_ranks_equal_one({"synthetic-regression", "bayesagg", 300, 3});
}

TEST(DistTrainCli, BayesAggWithRunningStatisticsOnSyntheticRegression) {
  expect_two_ranks_equal_one(
      {"synthetic-regression", "bayesagg", 300, 3, 64, "--refresh running --noise normalised"});
}

TEST(DistTrainCli, BayesAggAndTheReferenceOnFashionBinary) {
  expect_two_ranks_equal_one({"fashion-binary", "bayesagg", 256, 3});
  expect_two_ranks_equal_one({"fashion-binary", "bayesagg-reference", 256, 3});
}

// BayesAgg-MTL keeps rank-local state between epochs (each rank's shard of the epoch's features,
// its Monte-Carlo generator: multi-fashion's multiclass moments sample). A two-rank run stopped
// after epoch 2 and resumed for 3 more epochs at full learning rate ends exactly as the
// uninterrupted two-rank run; restoring rank 0's generator on rank 1 instead moves the final
// parameters by ~1e-4 relative.
TEST(DistTrainCli, BayesAggResumesOnTwoRanksAsAnUninterruptedRun) {
  TempDir dir("bayesagg_dist_cli_");
  const RunSpec spec{"multi-fashion", "bayesagg", 512, 5, 64, "--rb-samples 4"};
  const std::string run = dir.file("run"), whole = dir.file("whole");
  const auto first = run_cli(train_args(spec, run) + " --nproc 2 --stop-after-epoch 2 > /dev/null");
  ASSERT_EQ(first.status, 0) << first.err;
  const auto resumed = run_cli("train --resume " + run + " > " + dir.file("resume.log"));
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_TRUE(contains(read(dir.file("resume.log")), "resuming after epoch 2"));
  const auto uninterrupted = run_cli(train_args(spec, whole) + " --nproc 2 > /dev/null");
  ASSERT_EQ(uninterrupted.status, 0) << uninterrupted.err;
  const auto p_resumed = parameters(spec.benchmark, spec.train_subset, run + "/checkpoint.pt");
  const auto p_whole = parameters(spec.benchmark, spec.train_subset, whole + "/checkpoint.pt");
  EXPECT_EQ(relative_difference(p_resumed, p_whole), 0.0);
  // The checkpoint cannot be resumed on one process: its features are split over two.
  const auto other = run_cli("train --resume " + run + " --nproc 1 > /dev/null");
  EXPECT_NE(other.status, 0);
}

TEST(DistTrainCli, BayesAggWithThePosteriorModeIsRefused) {
  TempDir dir("bayesagg_dist_cli_");
  const auto r = run_cli(train_args({"fashion-binary", "bayesagg", 256}, dir.file("run")) +
                         " --posterior mode --nproc 2 > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "--posterior mode is not data-parallel")) << r.err;
  EXPECT_TRUE(contains(r.err, "rank 1 of 2 exited")) << r.err;
}

// MGDA-UB and Aligned-MTL-UB weigh the per-task gradients of h through their Gram matrix only:
// the ranks sum their [T, T] Gram matrices and each weighs its own rows.
TEST(DistTrainCli, MgdaUbAndAlignedMtlUbOnSyntheticRegression) {
  expect_two_ranks_equal_one({"synthetic-regression", "mgdaub", 300});
  expect_two_ranks_equal_one({"synthetic-regression", "alignedmtlub", 300});
}

TEST(DistTrainCli, GradDropOnTheRepresentationIsRefused) {
  TempDir dir("bayesagg_dist_cli_");
  const auto r = run_cli(train_args({"synthetic-regression", "graddrop", 300}, dir.file("run")) +
                         " --nproc 2 > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "--method graddrop is not data-parallel yet")) << r.err;
}

// ---------------------------------------------------------------- BatchNorm trunks

/// `root/cifar-100-binary/{train,test}.bin` with `n_train` and `n_test` records of random pixels
/// (the CIFAR-100 binary format: coarse label, fine label, 3072 bytes). Random images keep the
/// BatchNorm statistics well conditioned.
void write_random_cifar(const std::filesystem::path& root, int n_train, int n_test) {
  std::filesystem::create_directories(root / "cifar-100-binary");
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(17);
  for (const auto& [name, n] : {std::make_pair("train.bin", n_train), std::make_pair("test.bin", n_test)}) {
    std::string bytes;
    for (int r = 0; r < n; ++r) {
      bytes.push_back(static_cast<char>((r * 3) % 20));
      bytes.push_back(static_cast<char>((r * 11) % 100));
      const at::Tensor pixels = at::randint(0, 256, {3072}, gen, at::kByte);
      bytes.append(reinterpret_cast<const char*>(pixels.data_ptr<uint8_t>()), 3072);
    }
    bayesagg::write_file_atomic((root / "cifar-100-binary" / name).string(), bytes);
  }
}

/// Every BatchNorm running mean and variance of a checkpoint's model, in the archive's order.
std::vector<at::Tensor> running_statistics(const std::string& file) {
  const std::string bytes = bayesagg::read_file(file);
  const bayesagg::ChecksumCheck check = bayesagg::verify_checksum(bytes);
  EXPECT_TRUE(check.ok) << check.problem;
  torch::serialize::InputArchive root, model;
  root.load_from(bytes.data(), check.payload_size);
  root.read("model", model);
  std::vector<at::Tensor> out;
  for (const auto& key : model.keys()) {
    const bool mean = contains(key, "running_mean"), var = contains(key, "running_var");
    if (!mean && !var) continue;
    at::Tensor t;
    model.read(key, t, /*is_buffer=*/true);
    out.push_back(t.to(at::kDouble));
  }
  return out;
}

/// steps.csv's per-task losses and gradient norms (the global batch's on both runs), by row.
std::vector<std::vector<double>> step_values(const std::string& file) {
  std::istringstream in(read(file));
  std::string line, cell;
  std::getline(in, line);
  std::vector<bool> keep;
  std::istringstream header(line);
  while (std::getline(header, cell, ',')) {
    keep.push_back(cell.rfind("loss_", 0) == 0 || contains(cell, "grad_norm"));
  }
  std::vector<std::vector<double>> rows;
  while (std::getline(in, line)) {
    std::istringstream row(line);
    rows.emplace_back();
    for (size_t c = 0; std::getline(row, cell, ','); ++c) {
      if (c < keep.size() && keep[c]) rows.back().push_back(std::stod(cell));
    }
  }
  return rows;
}

/// A trunk with BatchNorm trained on cifar-mtl (18 training images of random pixels) for 2
/// epochs on one process and on two ranks. cifar-cnn takes batches of 5, 5, 5 and 3 items: the
/// last batch's shards hold 1 and 2 items (rank 0's single item is normalised with the global
/// batch's statistics). resnet18 takes batches of 6 (shards of 3): with 3 images its layer4
/// BatchNorm normalises 3 values per channel, which amplifies float32 rounding into the
/// gradients beyond 1e-5 on one process already (SyncBatchNorm.AResNet18TrunkOnTwoRanks* test
/// that case against float64).
///
/// With Adam, runs of BatchNorm networks cannot agree to 1e-5 after a few steps: gradients that
/// cancel to rounding noise (cifar-cnn's convolution biases before BatchNorm, whose input
/// gradient sums to zero per channel; several of the ResNet's BatchNorm biases) still get
/// full-size steps ±lr from Adam, and the runs diverge chaotically (one process with 1 and with 2
/// threads: cifar-cnn's conv3.bias 4 % apart after 8 steps, ResNet-18 BatchNorm biases 40 %).
/// So the learning rate is 1e-9: the parameters stay put to float32 rounding, and every step's
/// losses and gradient norms (both ranks' shards included) and the BatchNorm running statistics
/// after them (one momentum update per step from the global batch's statistics) must agree
/// within 1e-5 relative. Without the backward all-reduce the gradients would be wrong by far
/// more; with per-rank statistics the losses and running statistics would be.
void expect_batchnorm_two_ranks_equal_one(const std::string& trunk, const std::string& method,
                                          const std::string& extra) {
  const int64_t batch = trunk == "cifar-cnn" ? 5 : 6, steps = trunk == "cifar-cnn" ? 8 : 6;
  TempDir dir("bayesagg_dist_cli_");
  write_random_cifar(dir.path / "data", 20, 4);
  const std::string one = dir.file("one"), two = dir.file("two");
  const auto args = [&](const std::string& out) {
    return "train --benchmark cifar-mtl --data-dir " + dir.file("data") + " --trunk " + trunk +
           " --method " + method +
           " --epochs 2 --batch-size " + std::to_string(batch) +
           " --lr 1e-9 --representation-dim 16 --threads 1 --seed 3 --progress none --out " + out +
           " " + extra;
  };
  const std::string env = "BAYESAGG_CACHE_DIR=" + dir.file("cache") + " ";
  const auto a = run_cli_after(env, args(one) + " > " + dir.file("one.log"));
  ASSERT_EQ(a.status, 0) << a.err;
  const auto b = run_cli_after(env, args(two) + " --nproc 2 > " + dir.file("two.log"));
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_TRUE(contains(read(dir.file("two.log")), "2 data-parallel ranks"));
  EXPECT_TRUE(contains(read(dir.file("two.log")), trunk + "(3x32x32 -> 16)"));

  const auto steps1 = step_values(one + "/steps.csv"), steps2 = step_values(two + "/steps.csv");
  ASSERT_EQ(steps1.size(), static_cast<size_t>(steps));
  ASSERT_EQ(steps2.size(), steps1.size());
  for (size_t s = 0; s < steps1.size(); ++s) {
    ASSERT_EQ(steps1[s].size(), 22u);  // 20 losses, trunk and head gradient norms
    ASSERT_EQ(steps2[s].size(), steps1[s].size());
    for (size_t c = 0; c < steps1[s].size(); ++c) {
      EXPECT_NEAR(steps2[s][c], steps1[s][c], 1e-5 * std::abs(steps1[s][c]))
          << trunk << ", " << method << ": step " << s + 1 << ", column " << c;
    }
  }
  const auto stats1 = running_statistics(one + "/checkpoint.pt");
  const auto stats2 = running_statistics(two + "/checkpoint.pt");
  ASSERT_EQ(stats1.size(), trunk == "cifar-cnn" ? 2u : 40u);
  EXPECT_LT(relative_difference(stats2, stats1), 1e-5) << trunk << ", " << method;
  // The running means moved from 0 (the statistics were updated).
  EXPECT_GT(stats1[0].abs().max().item<double>(), 1e-3);
}

TEST(DistTrainCli, LinearScalarisationOnTheBatchNormTrunks) {
  expect_batchnorm_two_ranks_equal_one("cifar-cnn", "ls", "");
  expect_batchnorm_two_ranks_equal_one("resnet18", "ls", "");
}

// One linear-scalarisation epoch, then one aggregating epoch (exact binary moments).
TEST(DistTrainCli, BayesAggOnTheBatchNormTrunks) {
  const std::string bayes = "--ls-epochs 1 --binary-moments exact";
  expect_batchnorm_two_ranks_equal_one("cifar-cnn", "bayesagg", bayes);
  expect_batchnorm_two_ranks_equal_one("resnet18", "bayesagg", bayes);
}

// The gradient methods run one backward pass per task (20) through the retained graph, each
// all-reducing every BatchNorm layer's statistics' gradient in the same order on both ranks.
// (FAMO, whose second forward pass after the step all-reduces the statistics too, is left out:
// at lr 1e-9 its weights follow the rounding noise of loss_before / loss_after.)
TEST(DistTrainCli, GradientMethodsOnTheCifarCnnTrunk) {
  expect_batchnorm_two_ranks_equal_one("cifar-cnn", "pcgrad", "");
  expect_batchnorm_two_ranks_equal_one("cifar-cnn", "nashmtl", "");
}

/// The pid of the child of `parent` whose environment has RANK=`rank` (0 when none).
pid_t rank_process(pid_t parent, int rank) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::istringstream stat(read(entry.path().string() + "/stat"));
    std::string pid, comm, state;
    pid_t ppid = 0;
    stat >> pid >> comm >> state >> ppid;
    if (ppid != parent) continue;
    const std::string env = read(entry.path().string() + "/environ");
    if (contains(env, std::string("\0RANK=", 6) + std::to_string(rank) + '\0')) {
      return static_cast<pid_t>(std::stol(name));
    }
  }
  return 0;
}

TEST(DistTrainCli, AKilledRankStopsTheOtherNamingItAndTheRunResumes) {
  TempDir dir("bayesagg_dist_cli_");
  // Long enough epochs (4000 items, batch 8) that the kill lands in the second epoch.
  const RunSpec spec{"synthetic-regression", "ls", 4000, 3, 8};
  const std::string run = dir.file("run"), whole = dir.file("whole");
  const std::string args = train_args(spec, run) + " --nproc 2 --dist-timeout 20";
  const auto start = std::chrono::steady_clock::now();
  const pid_t launcher = fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    const std::string cmd = "exec " + std::string(BAYESAGG_CLI) + " " + args + " > " +
                            dir.file("run.log") + " 2> " + dir.file("run.err");
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // After the first epoch's checkpoint: kill rank 1.
  const std::string ckpt = run + "/checkpoint.pt";
  while (!std::filesystem::exists(ckpt) &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(120)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(std::filesystem::exists(ckpt)) << read(dir.file("run.err"));
  const pid_t rank1 = rank_process(launcher, 1);
  ASSERT_GT(rank1, 0);
  const auto killed = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(rank1, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(launcher, &status, 0), launcher);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  EXPECT_LT(seconds, 20.0 + 5.0);
  const std::string err = read(dir.file("run.err"));
  EXPECT_TRUE(contains(err, "rank 0 of 2: the all-reduce")) << err;
  EXPECT_TRUE(contains(err, "lost rank 1")) << err;
  EXPECT_TRUE(contains(err, "epoch 2, step")) << err;
  EXPECT_TRUE(contains(err, "rank 1 of 2 exited with status 137")) << err;
  // The checkpoint of epoch 1 loads; the records stop at epoch 1.
  EXPECT_NO_THROW(parameters(spec.benchmark, spec.train_subset, ckpt));
  EXPECT_FALSE(contains(read(run + "/metrics.csv"), "\n2,"));
  // Another number of ranks is refused.
  const auto other = run_cli("train --resume " + run + " --nproc 1 > /dev/null");
  EXPECT_NE(other.status, 0);
  EXPECT_TRUE(contains(other.err, "on 1 rank(s): it ran on 2; resume with --nproc 2"))
      << other.err;

  // Resumed (on the 2 ranks its config.json records), it ends as an uninterrupted run.
  const auto resumed = run_cli("train --resume " + run + " > " + dir.file("resume.log"));
  ASSERT_EQ(resumed.status, 0) << resumed.err;
  EXPECT_TRUE(contains(read(dir.file("resume.log")), "resuming after epoch 1"));
  const auto uninterrupted = run_cli(train_args(spec, whole) + " --nproc 2 > /dev/null");
  ASSERT_EQ(uninterrupted.status, 0) << uninterrupted.err;
  EXPECT_LT(relative_difference(parameters(spec.benchmark, spec.train_subset, ckpt),
                                parameters(spec.benchmark, spec.train_subset,
                                           whole + "/checkpoint.pt")),
            1e-12);
}

}  // namespace
