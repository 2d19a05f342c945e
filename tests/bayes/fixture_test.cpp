// The public fixtures through the library: regression exactly, classification within Monte-Carlo
// tolerance (and the exact binary estimator within the fixtures' own sampling error).
#include "bayesagg/io/problem.h"

#include "json_util.h"
#include "test_util.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>

using namespace bayesagg;
using bayesagg::testing::rel_err;

namespace {

at::Tensor from_json(const nlohmann::json& j) { return bayesagg::testing::json_tensor(j); }

struct Case {
  std::string path;
  Problem problem;
  nlohmann::json expected;
  bool classification = false;
};

Case load(const std::string& path) {
  Case c;
  c.path = path;
  c.problem = load_problem(path);
  std::ifstream in(path);
  c.expected = nlohmann::json::parse(in)["expected"];
  for (const auto& g : c.problem.groups) c.classification |= g.is_classification();
  return c;
}

/// Checks every field; `mc_tol` applies to Monte-Carlo quantities, `exact_tol` to the rest.
void check(const Case& c, const ProblemSolution& s, double mc_tol, double exact_tol) {
  const auto got = nlohmann::json::parse(solution_json(c.problem, s));
  for (size_t g = 0; g < c.problem.groups.size(); ++g) {
    const auto& eg = c.expected["groups"][g];
    const auto& og = got["groups"][g];
    const double tol = c.problem.groups[g].is_classification() ? mc_tol : exact_tol;
    for (const char* key : {"grad_mean", "grad_var"}) {
      EXPECT_LE(rel_err(from_json(og[key]), from_json(eg[key])), tol)
          << c.path << " group " << g << " " << key;
    }
    for (const char* key : {"posterior_mean", "posterior_cov_diag", "full_data_posterior_mean"}) {
      const at::Tensor e = from_json(eg[key]), o = from_json(og[key]);
      ASSERT_EQ(e.sizes(), o.sizes()) << c.path << " " << key;
      EXPECT_LE(rel_err(o, e), 1e-9) << c.path << " group " << g << " " << key;
    }
  }
  EXPECT_LE(rel_err(from_json(got["dL_dh"]), from_json(c.expected["dL_dh"])),
            c.classification ? mc_tol : exact_tol)
      << c.path << " dL_dh";
}

}  // namespace

TEST(Fixtures, PublicFixturesArePresent) {
  EXPECT_GE(bayesagg::testing::fixture_files().size(), 8u) << bayesagg::testing::fixture_dir();
}

TEST(Fixtures, RegressionIsExact) {
  int n = 0;
  for (const auto& f : bayesagg::testing::fixture_files()) {
    const Case c = load(f);
    if (c.classification) continue;
    check(c, solve_problem(c.problem, options_for(c.problem)), 0, 1e-10);
    ++n;
  }
  EXPECT_GE(n, 3);
}

TEST(Fixtures, ClassificationMonteCarloWithinTolerance) {
  // 200 000 samples: expected relative error ~ mc_rel_std * sqrt(4e6 / 2e5) ~ 2e-3; bound 2e-2.
  for (const auto& f : bayesagg::testing::fixture_files()) {
    const Case c = load(f);
    if (!c.classification) continue;
    const auto opts = options_for(c.problem)
                          .mc_samples(200000)
                          .binary_moments(MomentEstimator::monte_carlo)
                          .multiclass_moments(MomentEstimator::monte_carlo)
                          .seed(1);
    check(c, solve_problem(c.problem, opts), 2e-2, 1e-10);
  }
}

TEST(Fixtures, BinaryExactMomentsWithinTheFixturesOwnSamplingError) {
  // The exact estimator has no sampling noise; the fixtures carry mc_rel_std ~3e-4 (4e6 samples).
  // Bound: 5 x the fixture's stated relative standard deviation.
  for (const auto& f : bayesagg::testing::fixture_files()) {
    const Case c = load(f);
    bool binary_only = true;
    for (const auto& g : c.problem.groups) binary_only &= g.type == GroupType::binary;
    if (!binary_only) continue;
    const auto s = solve_problem(c.problem, options_for(c.problem).binary_moments(MomentEstimator::exact));
    const auto got = nlohmann::json::parse(solution_json(c.problem, s));
    const auto& std_ = c.expected["groups"][0]["mc_rel_std"];
    for (const char* key : {"grad_mean", "grad_var"}) {
      EXPECT_LE(rel_err(from_json(got["groups"][0][key]), from_json(c.expected["groups"][0][key])),
                5 * std_[key].get<double>())
          << f << " " << key;
    }
  }
}

TEST(Fixtures, MulticlassRaoBlackwellWithinTolerance) {
  // The rb estimator with 2^15 antithetic logit samples per step. Its sampling error is well below
  // the fixtures' own (mc_rel_std, ~3e-4 .. 7e-4 for the multiclass groups), so the bound is
  // 5 x mc_rel_std plus 2e-3 for our own Monte-Carlo error (measured: see bench/moments_profile).
  for (const auto& f : bayesagg::testing::fixture_files()) {
    const Case c = load(f);
    bool multiclass = false;
    for (const auto& g : c.problem.groups) multiclass |= g.type == GroupType::multiclass;
    if (!multiclass) continue;
    const auto opts = options_for(c.problem)
                          .multiclass_moments(MomentEstimator::rao_blackwell)
                          .rb_samples(1 << 15)
                          .seed(2);
    const auto got = nlohmann::json::parse(solution_json(c.problem, solve_problem(c.problem, opts)));
    for (size_t g = 0; g < c.problem.groups.size(); ++g) {
      if (c.problem.groups[g].type != GroupType::multiclass) continue;
      const auto& eg = c.expected["groups"][g];
      for (const char* key : {"grad_mean", "grad_var"}) {
        const double err = rel_err(from_json(got["groups"][g][key]), from_json(eg[key]));
        EXPECT_LE(err, 5 * eg["mc_rel_std"][key].get<double>() + 2e-3) << f << " group " << g << " " << key;
        std::printf("[ rb fixture ] %s group %zu %s rel err %.2e (mc_rel_std %.1e)\n", f.c_str(), g,
                    key, err, eg["mc_rel_std"][key].get<double>());
      }
    }
  }
}
