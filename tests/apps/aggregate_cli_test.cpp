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
