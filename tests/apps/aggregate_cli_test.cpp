// `bayesagg aggregate` end to end: every public fixture through the command, and bad input.
#include "cli_util.h"
#include "json_util.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <sys/stat.h>

namespace fs = std::filesystem;
using bayesagg::testing::CliResult;
using bayesagg::testing::rel_err;
using bayesagg::testing::run_cli;
using nlohmann::json;

namespace {

at::Tensor tensor(const json& j) { return bayesagg::testing::json_tensor(j); }

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

fs::path temp_dir() {
  const fs::path d = fs::temp_directory_path() / ("bayesagg_cli_test_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(AggregateCli, EveryPublicFixtureWithinTolerance) {
  // Regression: 1e-6 (exact). Classification and mixed: 2e-2 at 200 000 samples.
  const auto files = bayesagg::testing::fixture_files();
  ASSERT_GE(files.size(), 8u);
  for (const auto& f : files) {
    const json fixture = read_json(f);
    bool classification = false;
    for (const auto& g : fixture["groups"]) classification |= g["type"] != "regression";
    const fs::path out = temp_dir() / (fs::path(f).stem().string() + ".out.json");
    fs::remove(out);
    const CliResult r = run_cli("aggregate --problem " + f + " --out " + out.string() +
                          " --mc-samples 200000");
    ASSERT_EQ(r.status, 0) << f << ": " << r.err;
    const json got = read_json(out);
    const json& want = fixture["expected"];
    const double tol = classification ? 2e-2 : 1e-6;
    EXPECT_LE(rel_err(tensor(got["dL_dh"]), tensor(want["dL_dh"])), tol) << f;
    ASSERT_EQ(got["groups"].size(), want["groups"].size());
    for (size_t g = 0; g < want["groups"].size(); ++g) {
      for (const char* key :
           {"grad_mean", "grad_var", "posterior_mean", "posterior_cov_diag", "full_data_posterior_mean"}) {
        const at::Tensor a = tensor(got["groups"][g][key]), b = tensor(want["groups"][g][key]);
        ASSERT_EQ(a.sizes(), b.sizes()) << f << " " << key;
        EXPECT_LE(rel_err(a, b), tol) << f << " group " << g << " " << key;
      }
    }
  }
}

namespace {
/// Writes a corrupted copy of a fixture, runs the CLI and checks the one-line error.
void expect_rejected(const std::string& name, const std::function<void(json&)>& corrupt,
                     const std::string& must_mention) {
  json problem = read_json(bayesagg::testing::fixture_dir() + "/mixed_utk.json");
  corrupt(problem);
  const fs::path in = temp_dir() / (name + ".json"), out = temp_dir() / (name + ".out.json");
  // "__INF__" stands for a number that overflows to infinity when parsed (JSON has no inf/nan).
  std::string text = problem.dump();
  for (size_t at = text.find("\"__INF__\""); at != std::string::npos; at = text.find("\"__INF__\"")) {
    text.replace(at, 9, "1e999");
  }
  std::ofstream(in) << text;
  fs::remove(out);
  const CliResult r = run_cli("aggregate --problem " + in.string() + " --out " + out.string());
  EXPECT_NE(r.status, 0) << name;
  EXPECT_FALSE(fs::exists(out)) << name << ": a failed run must not leave an output file";
  EXPECT_NE(r.err.find(must_mention), std::string::npos) << name << ": " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << name << ": " << r.err;
}
}  // namespace

TEST(AggregateCli, BadInputGetsOneLineErrorAndNoOutput) {
  expect_rejected("missing_key", [](json& p) { p.erase("features"); }, "features");
  expect_rejected("missing_hyper", [](json& p) { p["hyper"].erase("gamma_cls"); }, "hyper.gamma_cls");
  expect_rejected("wrong_shape", [](json& p) { p["groups"][1]["labels"].erase(0); },
                  "groups[1].labels");
  expect_rejected("label_range", [](json& p) { p["groups"][2]["labels"][0] = 5; },
                  "groups[2].labels");
  expect_rejected("weight_shape", [](json& p) { p["groups"][0]["weight"][0].erase(0); },
                  "groups[0].weight");
  expect_rejected("non_finite", [](json& p) { p["features"][0][0] = "__INF__"; }, "1e999");
  expect_rejected("non_finite_labels",
                  [](json& p) { p["groups"][0]["full_train_labels"][3][0] = "__INF__"; },
                  "numbers must be finite");
  expect_rejected("bad_type", [](json& p) { p["groups"][0]["type"] = "poisson"; },
                  "groups[0].type");
  // Not JSON at all, and a missing file.
  const fs::path in = temp_dir() / "garbage.json", out = temp_dir() / "garbage.out.json";
  std::ofstream(in) << "{\"hyper\": [1, 2,";
  fs::remove(out);
  CliResult r = run_cli("aggregate --problem " + in.string() + " --out " + out.string());
  EXPECT_NE(r.status, 0);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_NE(r.err.find("JSON"), std::string::npos) << r.err;
  r = run_cli("aggregate --problem /nonexistent/p.json --out " + out.string());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("/nonexistent/p.json"), std::string::npos) << r.err;
}

TEST(AggregateCli, AbsurdSizesAndDuplicateKeysAreRefusedBeforeAnyWork) {
  // n_outputs must match the weights' rows: 10^9 is refused before anything is allocated.
  expect_rejected("huge_outputs", [](json& p) { p["groups"][0]["n_outputs"] = 1000000000; },
                  "groups[0].weight");
  expect_rejected("huge_mc", [](json& p) { p["hyper"]["num_mc_samples"] = int64_t(1) << 40; },
                  "hyper.num_mc_samples: at most 67108864");
  // JSON parsers keep the last of two equal keys: the problem is refused instead.
  json problem = read_json(bayesagg::testing::fixture_dir() + "/reg_o1.json");
  std::string text = problem.dump();
  const size_t at = text.find("\"hyper\":{");
  ASSERT_NE(at, std::string::npos);
  text.insert(at + 9, "\"gamma_reg\":2.0,");
  const fs::path in = temp_dir() / "duplicate.json", out = temp_dir() / "duplicate.out.json";
  std::ofstream(in) << text;
  fs::remove(out);
  const CliResult r = run_cli("aggregate --problem " + in.string() + " --out " + out.string());
  EXPECT_NE(r.status, 0);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_NE(r.err.find("key 'gamma_reg' appears twice in 'hyper'"), std::string::npos) << r.err;
}

TEST(AggregateCli, ANonFiniteSolutionIsAnErrorNotNull) {
  // Finite but enormous regression labels: the gradient means overflow. JSON cannot hold inf or
  // NaN; the command used to write null and exit 0.
  expect_rejected("overflow",
                  [](json& p) {
                    p["hyper"]["num_mc_samples"] = 1000;  // the error comes after solving
                    for (const char* key : {"labels", "full_train_labels"}) {
                      for (auto& row : p["groups"][0][key]) {
                        for (auto& v : row) v = 1e300;
                      }
                    }
                  },
                  "the solution is not finite: groups[0].grad_mean has ");
}

TEST(AggregateCli, OutMustBeARegularFileAndMayHaveA250CharacterName) {
  const std::string problem = bayesagg::testing::fixture_dir() + "/reg_o1.json";
  struct stat before {};
  ASSERT_EQ(::stat("/dev/null", &before), 0);
  CliResult r = run_cli("aggregate --problem " + problem + " --out /dev/null --mc-samples 100");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("'/dev/null': it is a character device"), std::string::npos) << r.err;
  struct stat after {};
  ASSERT_EQ(::lstat("/dev/null", &after), 0);
  EXPECT_TRUE(S_ISCHR(after.st_mode));

  const fs::path dir = temp_dir() / "outs";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path target = dir / "target.json", link = dir / "link.json";
  std::ofstream(target) << "{}";
  fs::create_symlink(target, link);
  r = run_cli("aggregate --problem " + problem + " --out " + link.string() + " --mc-samples 100");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("is a symbolic link"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::is_symlink(link));

  const fs::path long_name = dir / (std::string(245, 'x') + ".json");  // 250 characters
  r = run_cli("aggregate --problem " + problem + " --out " + long_name.string() +
              " --mc-samples 100");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::is_regular_file(long_name));
  fs::remove_all(dir);
}

TEST(AggregateCli, ThreadsAreBoundedNotTruncated) {
  const std::string problem = bayesagg::testing::fixture_dir() + "/reg_o1.json";
  const fs::path out = temp_dir() / "threads.out.json";
  for (const char* threads : {"4294967297", "100000", "-1"}) {
    fs::remove(out);
    const CliResult r = run_cli("aggregate --problem " + problem + " --out " + out.string() +
                                " --threads " + threads);
    EXPECT_NE(r.status, 0) << threads;
    EXPECT_NE(r.err.find("--threads"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
}

namespace {

TEST(AggregateCli, SampleCountsAreBoundedBeforeTheProblemIsRead) {
  const fs::path out = temp_dir() / "bounded.out.json";
  for (const std::string& flag : {"--mc-samples 67108865", "--rb-samples 1048577"}) {
    // The problem does not exist: the bound is checked first.
    const CliResult r =
        run_cli("aggregate --problem /nonexistent.json --out " + out.string() + " " + flag);
    EXPECT_NE(r.status, 0) << flag;
    EXPECT_NE(r.err.find(flag + ": expected "), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
  }
}

}  // namespace
