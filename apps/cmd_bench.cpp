// `bayesagg bench`: time one BayesAgg-MTL aggregation step, the full-data posterior step and the
// same heads' linear-scalarisation backward, for a given shape or one of the paper's presets.
#include "commands.h"

#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/core/losses.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/train/options.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <map>
#include <memory>

#include <sys/resource.h>

namespace bayesagg::cli {
namespace {

struct Preset {
  int64_t batch, dim;
  const char* groups;
};

// Shapes of spec section 6 and the QM9 MPNN.
const std::map<std::string, Preset>& presets() {
  static const std::map<std::string, Preset> p = {
      {"qm9", {120, 64, "regression:11"}},
      {"utkface", {128, 256, "regression:1,multiclass:2,multiclass:5"}},
      {"cifar", {128, 160, "binary:20"}},
      {"chestx", {256, 256, "binary:14"}},
  };
  return p;
}

double peak_rss_mb() {
  struct rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

template <class F>
double median_ms(int64_t repeats, F&& f) {
  std::vector<double> ms;
  for (int64_t r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

Labels random_labels(const std::vector<TaskGroup>& groups, int64_t n, at::Generator& gen,
                     const std::vector<Head>& heads, const at::Tensor& h) {
  // Labels drawn from the heads' own predictive model, so the problem looks like training.
  Labels out;
  for (size_t g = 0; g < groups.size(); ++g) {
    const at::Tensor logits = head_forward(heads[g], h);
    switch (groups[g].type) {
      case GroupType::regression:
        out.push_back(logits + at::randn(logits.sizes(), gen, logits.options()));
        break;
      case GroupType::binary:
        out.push_back(at::bernoulli(at::sigmoid(logits), gen));
        break;
      case GroupType::multiclass:
        out.push_back(at::multinomial(at::softmax(logits, 1), 1, false, gen).squeeze(1));
        break;
    }
  }
  return out;
}

}  // namespace

Command add_bench(CLI::App& app) {
  struct Args {
    std::string preset, groups, moments = "exact", multiclass_moments,
        method = "bayesagg-reference";
    int64_t batch = 0, dim = 0, full_n = 10000, mc_samples = 1024, rb_samples = 0, repeats = 10,
            full_repeats = 3;
    int threads = 0;
    uint64_t seed = 0;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "bench", "Time one aggregation step, the full-data posterior step and the LS backward");
  sub->add_option("--method", a->method,
                  "bayesagg-reference (the authors' method, default) or bayesagg (this project's "
                  "variant: its posterior centre, weighting, scale and noise settings)")
      ->capture_default_str();
  sub->add_option("--preset", a->preset, "Shape preset: qm9, utkface, cifar or chestx")
      ->check(CLI::IsMember({"qm9", "utkface", "cifar", "chestx"}));
  sub->add_option("--groups", a->groups,
                  "Task groups, e.g. regression:11,binary:20,multiclass:5 (overrides the preset)");
  sub->add_option("--batch", a->batch, "Batch size (overrides the preset)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--dim", a->dim, "Representation size d (overrides the preset)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--full-n", a->full_n, "Rows of the full-data posterior step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--mc-samples", a->mc_samples, "Monte-Carlo samples per step")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--moments", a->moments, "Binary-task moments: exact or mc")
      ->check(CLI::IsMember({"mc", "exact"}))
      ->capture_default_str();
  sub->add_option("--multiclass-moments", a->multiclass_moments,
                  "Multiclass moments: mc or rb (default: the library's)")
      ->check(CLI::IsMember({"mc", "rb"}));
  sub->add_option("--rb-samples", a->rb_samples, "Logit samples of the rb estimator (default: the "
                  "library's)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--repeats", a->repeats, "Timed aggregation steps (the median is reported)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--full-repeats", a->full_repeats, "Timed full-data posterior steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--threads", a->threads, "Intra-op threads (0 = all cores)")
      ->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed of the random problem")->capture_default_str();
  return {sub, [a]() {
    const int threads = set_threads(a->threads);
    Preset shape{a->batch, a->dim, ""};
    std::string group_spec = a->groups;
    if (!a->preset.empty()) {
      const Preset& p = presets().at(a->preset);
      if (shape.batch == 0) shape.batch = p.batch;
      if (shape.dim == 0) shape.dim = p.dim;
      if (group_spec.empty()) group_spec = p.groups;
    }
    TORCH_CHECK(shape.batch > 0 && shape.dim > 0 && !group_spec.empty(),
                "give --preset, or all of --batch, --dim and --groups");
    const std::vector<TaskGroup> groups = parse_groups(group_spec);
    const int64_t b = shape.batch, d = shape.dim;

    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(a->seed);
    std::vector<Head> heads;
    for (const auto& g : groups) {
      heads.push_back({(at::randn({g.head_rows(), d}, gen, at::kFloat) / std::sqrt(double(d)))
                           .requires_grad_(),
                       at::zeros({g.head_rows()}, at::kFloat).requires_grad_()});
    }
    at::Tensor full_h, h;
    Labels full_y, y;
    {
      at::NoGradGuard ng;
      full_h = at::elu(at::randn({a->full_n, d}, gen, at::kFloat));
      h = at::elu(at::randn({b, d}, gen, at::kFloat));
      full_y = random_labels(groups, a->full_n, gen, heads, full_h);
      y = random_labels(groups, b, gen, heads, h);
    }
    TORCH_CHECK(is_bayesagg_method(a->method), "--method must be bayesagg or bayesagg-reference, got '",
                a->method, "'");
    BayesAggOptions options = TrainOptions().method(a->method).with_method_preset().bayesagg();
    TORCH_CHECK(options.refresh() == PosteriorRefresh::epoch,
                "bench times the epoch-refreshed prior; this method's preset uses running statistics");
    options.mc_samples(a->mc_samples)
                                  .binary_moments(parse_moment_estimator(a->moments))
                                  .seed(a->seed);
    if (!a->multiclass_moments.empty()) {
      options.multiclass_moments(parse_moment_estimator(a->multiclass_moments));
    }
    if (a->rb_samples > 0) options.rb_samples(a->rb_samples);
    BayesAgg agg(groups, d, options);
    std::vector<GaussianPosterior> full;
    const double full_ms = median_ms(a->full_repeats, [&] {
      full = agg.full_data_posteriors(agg.statistics(full_h, full_y, heads), heads);
    });
    agg.aggregate(full, h, y, heads);  // warm-up
    const double step_ms = median_ms(a->repeats, [&] { agg.aggregate(full, h, y, heads); });
    const double ls_ms = median_ms(a->repeats, [&] {
      const at::Tensor hr = h.detach().requires_grad_();
      at::Tensor total = at::zeros({}, at::kFloat);
      for (size_t g = 0; g < groups.size(); ++g) {
        total = total + task_losses(groups[g], head_forward(heads[g], hr), y[g]).sum();
      }
      total.backward();
    });
    nlohmann::json out;
    out["preset"] = a->preset;
    out["method"] = a->method;
    out["groups"] = group_spec;
    out["batch"] = b;
    out["dim"] = d;
    out["full_n"] = a->full_n;
    out["mc_samples"] = a->mc_samples;
    out["moments"] = a->moments;
    out["multiclass_moments"] = to_string(options.multiclass_moments());
    out["rb_samples"] = options.rb_samples();
    out["threads"] = threads;
    out["step_ms"] = step_ms;
    out["full_posterior_ms"] = full_ms;
    out["ls_ms"] = ls_ms;
    out["peak_rss_mb"] = peak_rss_mb();
    out["jitter_events"] = agg.stats().jitter_events;
    std::cout << out.dump() << std::endl;
    return 0;
  }};
}

}  // namespace bayesagg::cli
