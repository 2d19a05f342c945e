// `bayesagg aggregate`: solve one aggregation problem in the fixture format.
#include "commands.h"

#include "bayesagg/core/files.h"
#include "bayesagg/io/problem.h"

#include <c10/util/Exception.h>

#include <iostream>
#include <memory>
#include <string>

namespace bayesagg::cli {

Command add_aggregate(CLI::App& app) {
  struct Args {
    std::string problem, out, moments = "mc", multiclass_moments = "mc";
    int64_t rb_samples = 0;
    int64_t mc_samples = 0;
    uint64_t seed = 0;
    int64_t threads = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "aggregate",
      "Solve one BayesAgg-MTL aggregation problem (fixture format) and write its expected block");
  sub->add_option("--problem", a->problem, "Problem JSON (the fixture format; `expected` ignored)")
      ->required();
  sub->add_option("--out", a->out, "Where to write the answers (JSON, written atomically)")
      ->required();
  sub->add_option("--mc-samples", a->mc_samples,
                  "Monte-Carlo samples (default: the problem's hyper.num_mc_samples)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--moments", a->moments,
                  "Binary-task moments: mc (the reference's sampling) or exact (Stein + "
                  "Gauss-Hermite)")
      ->check(CLI::IsMember({"mc", "exact"}))
      ->capture_default_str();
  sub->add_option("--multiclass-moments", a->multiclass_moments,
                  "Multiclass moments: mc (the reference's sampling, the problem's sample count) or "
                  "rb (Rao-Blackwellised, --rb-samples logit samples)")
      ->check(CLI::IsMember({"mc", "rb"}))
      ->capture_default_str();
  sub->add_option("--rb-samples", a->rb_samples,
                  "Logit samples of the rb estimator (default: the library's)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--seed", a->seed, "Seed of the Monte-Carlo generator")->capture_default_str();
  sub->add_option("--threads", a->threads, "Intra-op threads (0 = all cores)")
      ->capture_default_str();
  return {sub, [a]() {
    set_threads(a->threads);
    // Before the problem is read: a count beyond these would run for days, not fail.
    TORCH_CHECK(a->mc_samples <= kMaxMcSamples, "--mc-samples ", a->mc_samples, ": expected 1 to ",
                kMaxMcSamples);
    TORCH_CHECK(a->rb_samples <= kMaxRbSamples, "--rb-samples ", a->rb_samples, ": expected 2 to ",
                kMaxRbSamples);
    const Problem problem = load_problem(a->problem);
    BayesAggOptions options = options_for(problem);
    if (a->mc_samples > 0) options.mc_samples(a->mc_samples);
    options.binary_moments(parse_moment_estimator(a->moments))
        .multiclass_moments(parse_moment_estimator(a->multiclass_moments))
        .seed(a->seed);
    if (a->rb_samples > 0) options.rb_samples(a->rb_samples);
    std::string answer;
    try {
      answer = solution_json(problem, solve_problem(problem, options));
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, a->problem, ": ", e.msg());
    }
    write_file_atomic(a->out, answer);
    return 0;
  }};
}

}  // namespace bayesagg::cli
