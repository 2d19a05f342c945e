// `bayesagg toy`: the two-objective toy of the benchmarks spec, optimised by a baseline method.
#include "commands.h"

#include "bayesagg/methods/toy.h"

#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

namespace bayesagg::cli {

Command add_toy(CLI::App& app) {
  struct Args {
    std::string method, out;
    int64_t steps = 35000, record_every = 50;
    uint64_t seed = 0;
    int threads = 1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "toy", "Optimise the two-objective toy from its five starts with a method; writes "
             "trajectories.csv and trajectories.svg (loss landscape, Pareto set, trajectories)");
  sub->add_option("--method", a->method, "Method name (any baseline; not bayesagg, which needs heads)")
      ->required();
  sub->add_option("--out", a->out, "Output folder")->required();
  sub->add_option("--steps", a->steps, "Adam steps per start")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--record-every", a->record_every, "Record every N-th step in the CSV")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed of the method's random choices")->capture_default_str();
  sub->add_option("--threads", a->threads, "Intra-op threads (0 = all cores)")
      ->capture_default_str();
  return {sub, [a]() {
    set_threads(a->threads);
    MethodConfig config;
    config.seed = a->seed;
    const ToyResult r = run_toy(a->method, ToyOptions()
                                               .steps(a->steps)
                                               .record_every(a->record_every)
                                               .out_dir(a->out)
                                               .config(config));
    std::printf("toy / %s: %zu starts, %.1f s\n", r.method.c_str(), r.finals.size(), r.seconds);
    std::printf("start  final x1   final x2   |x2 - pareto|\n");
    for (const auto& p : r.finals) {
      std::printf("%5lld  %8.4f  %9.5f  %10.5f\n", static_cast<long long>(p.start), p.x1, p.x2,
                  std::abs(p.x2 - kToyParetoX2));
    }
    std::printf("wrote %s and %s\n", r.csv_path.c_str(), r.svg_path.c_str());
    return 0;
  }};
}

}  // namespace bayesagg::cli
