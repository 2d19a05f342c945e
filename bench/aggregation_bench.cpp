// Google Benchmark: the estimators of the classification moments, side by side in one process.
#include "bayesagg/bayes/bayes_agg.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <benchmark/benchmark.h>

namespace {

using namespace bayesagg;

struct Setup {
  GaussianPosterior post;
  at::Tensor h, y;
};

Setup binary_setup(int64_t b, int64_t d, int64_t o) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
  const TaskGroup g(GroupType::binary, o);
  Setup s;
  s.h = at::randn({b, d}, gen, at::kDouble);
  s.y = at::bernoulli(at::full({b, o}, 0.5, at::kDouble), gen);
  const Head head{at::randn({o, d}, gen, at::kDouble) / std::sqrt(double(d)),
                  at::zeros({o}, at::kDouble)};
  const at::Tensor phi = head_parameters(g, head);
  const auto prior = isotropic_prior(g, d, 5e-3);
  s.post = posterior_update(g, prior, posterior_stats(g, s.h, s.y, phi), phi);
  return s;
}

void BM_BinaryMomentsMC(benchmark::State& state) {
  const Setup s = binary_setup(state.range(0), state.range(1), state.range(2));
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        binary_moments_mc(s.post, s.h, s.y, MomentOptions().mc_samples(1024), gen).mean);
  }
}

void BM_BinaryMomentsExact(benchmark::State& state) {
  const Setup s = binary_setup(state.range(0), state.range(1), state.range(2));
  for (auto _ : state) {
    benchmark::DoNotOptimize(binary_moments_exact(s.post, s.h, s.y, MomentOptions()).mean);
  }
}

BENCHMARK(BM_BinaryMomentsMC)->Args({128, 160, 20})->Args({256, 256, 14})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BinaryMomentsExact)->Args({128, 160, 20})->Args({256, 256, 14})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
