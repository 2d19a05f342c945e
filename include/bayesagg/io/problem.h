#pragma once
/// Aggregation problems in the fixture format (../shared/fixtures/README.md): reading, solving and
/// writing the `expected` block.

#include "bayesagg/bayes/bayes_agg.h"

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace bayesagg {

/// One aggregation problem: heads, a batch and the previous epoch's data.
struct Problem {
  std::string name;
  double gamma_regression = 1.0, gamma_classification = 1.0;
  double s_regression = 0.5, s_classification = 0.5;
  int64_t mc_samples = 1024;
  std::vector<TaskGroup> groups;
  std::vector<Head> heads;     ///< float64
  Labels labels, full_labels;  ///< per group
  at::Tensor features;         ///< [B, d] float64
  at::Tensor full_features;    ///< [N, d] float64
};

/// Parses a problem from JSON text. Throws c10::Error with a one-line message naming the bad
/// field (`groups[1].labels: expected shape [8], got [7]`) on any missing key, wrong shape, label
/// out of range or non-finite number, a key given twice in one object, or more than
/// `kMaxProblemMcSamples` samples. `expected`, if present, is ignored.
Problem parse_problem(const std::string& json_text);
/// Reads and parses a problem file; errors name the file.
Problem load_problem(const std::string& path);

/// The answers to a problem.
struct ProblemSolution {
  Aggregation aggregation;
  std::vector<GaussianPosterior> full_data;
};

/// The most Monte-Carlo samples a problem (or `--mc-samples`) may ask for: 2^26, 16 x the public
/// fixtures' 4 000 000. Samples are drawn in chunks of bounded memory, so this bounds the time.
/// A problem's sizes are those of its arrays, checked before any tensor is made; `n_outputs`
/// must match the weights' rows, so 10^9 is refused before anything is allocated.
constexpr int64_t kMaxProblemMcSamples = kMaxMcSamples;
/// Throws when `mc_samples` exceeds `kMaxProblemMcSamples` (or is below 1).
void check_problem_size(const Problem& problem, int64_t mc_samples);

/// Solves the problem with `options` (whose gamma, s and mc_samples should come from the
/// problem: see `options_for`).
ProblemSolution solve_problem(const Problem& problem, const BayesAggOptions& options);
/// The problem's hyper-parameters as BayesAgg options.
BayesAggOptions options_for(const Problem& problem);

/// The `expected` block in the fixture layout, as JSON text: per group `grad_mean`, `grad_var`,
/// `posterior_mean`, `posterior_cov_diag`, `full_data_posterior_mean`; and `dL_dh`. Throws,
/// naming the first field, when any value is not finite (JSON has no NaN: it would be `null`).
std::string solution_json(const Problem& problem, const ProblemSolution& solution);

}  // namespace bayesagg
