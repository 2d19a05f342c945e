// Multiclass moments: time per component (interleaved, medians) and accuracy of the estimators
// against a high-sample reference, on a bench-like problem (K classes, d, batch B, N full rows).
// Usage: moments_profile [threads] [mode: time|accuracy|all]
#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/core/runtime.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <string>
#include <vector>

using namespace bayesagg;

namespace {

struct Setup {
  TaskGroup group{GroupType::multiclass, 10};
  at::Tensor phi, h, y;
  GaussianPosterior full, batch;
};

Setup make(int64_t k, int64_t d, int64_t b, int64_t n, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Setup s;
  s.group = TaskGroup(GroupType::multiclass, k);
  const Head head{at::randn({k, d}, gen, at::kFloat) / std::sqrt(double(d)), at::zeros({k}, at::kFloat)};
  const at::Tensor hn = at::elu(at::randn({n, d}, gen, at::kFloat));
  s.h = at::elu(at::randn({b, d}, gen, at::kFloat)).to(at::kDouble);
  auto labels = [&](const at::Tensor& h) {
    return at::multinomial(at::softmax(at::matmul(h.to(at::kFloat), head.weight.t()), 1), 1, false, gen)
        .squeeze(1);
  };
  const at::Tensor yn = labels(hn);
  s.y = labels(s.h);
  s.phi = head_parameters(s.group, head);
  s.full = posterior_update(s.group, isotropic_prior(s.group, d, 5e-3),
                            posterior_stats(s.group, hn, yn, s.phi), s.phi);
  s.batch = posterior_update(s.group, s.full, posterior_stats(s.group, s.h, s.y, s.phi), s.phi);
  return s;
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  retain_freed_memory();
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  const std::string mode = argc > 2 ? argv[2] : "all";
  const int64_t reps = argc > 3 ? std::atoi(argv[3]) : 7;
  at::set_num_threads(threads);
  const Setup s = make(10, 64, 256, 10240, 0);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);

  using Fn = std::function<void()>;
  std::vector<std::pair<std::string, Fn>> parts = {
      {"stats", [&] { posterior_stats(s.group, s.h, s.y, s.phi); }},
      {"update", [&] {
         posterior_update(s.group, s.full, posterior_stats(s.group, s.h, s.y, s.phi), s.phi);
       }},
      {"cholesky", [&] { at::linalg_cholesky_ex(s.batch.precision); }},
      {"chol_inv", [&] { at::cholesky_inverse(s.batch.cholesky[0]); }},
      {"mc1024", [&] { multiclass_moments_mc(s.batch, s.h, s.y, MomentOptions(), gen); }},
  };
  for (int64_t n : {16, 32, 64}) {
    parts.push_back({"rb" + std::to_string(n), [&, n] {
                       multiclass_moments_rb(s.batch, s.h, s.y, MomentOptions().rb_samples(n), gen);
                     }});
  }
  if (mode == "time" || mode == "all") {
    std::map<std::string, std::vector<double>> ms;
    for (auto& [name, f] : parts) f();  // warm-up
    for (int64_t r = 0; r < reps; ++r) {
      for (auto& [name, f] : parts) {
        const double t0 = now_ms();
        f();
        ms[name].push_back(now_ms() - t0);
      }
    }
    for (auto& [name, f] : parts) {
      auto v = ms[name];
      std::sort(v.begin(), v.end());
      std::printf("time threads=%d %-10s median %8.2f ms  (min %.2f)\n", threads, name.c_str(),
                  v[v.size() / 2], v.front());
    }
  }
  if (mode == "accuracy" || mode == "all") {
    // Reference: RB with 2^16 antithetic samples; cross-checked against plain MC with 2^17.
    at::Generator g0 = at::make_generator<at::CPUGeneratorImpl>(99);
    const GradMoments ref =
        multiclass_moments_rb(s.batch, s.h, s.y, MomentOptions().rb_samples(1 << 16), g0);
    const GradMoments big =
        multiclass_moments_mc(s.batch, s.h, s.y, MomentOptions().mc_samples(1 << 17), g0);
    auto rel = [](const at::Tensor& a, const at::Tensor& b) {
      return ((a - b).norm() / b.norm()).item<double>();
    };
    std::printf("reference check: rb(65536) vs mc(131072): mean rel %.3e  var rel %.3e\n",
                rel(big.mean, ref.mean), rel(big.var, ref.var));
    struct Est {
      std::string name;
      std::function<GradMoments(at::Generator&)> f;
      int64_t samples;
    };
    std::vector<Est> ests = {
        {"mc1024", [&](at::Generator& g) { return multiclass_moments_mc(s.batch, s.h, s.y, MomentOptions(), g); }, 1024},
        {"mc256", [&](at::Generator& g) { return multiclass_moments_mc(s.batch, s.h, s.y, MomentOptions().mc_samples(256), g); }, 256},
    };
    for (int64_t n : {16, 32, 64, 128}) {
      ests.push_back({"rb" + std::to_string(n), [&, n](at::Generator& g) {
                        return multiclass_moments_rb(s.batch, s.h, s.y, MomentOptions().rb_samples(n), g);
                      }, n});
      ests.push_back({"rb" + std::to_string(n) + "-iid", [&, n](at::Generator& g) {
                        return multiclass_moments_rb(s.batch, s.h, s.y,
                                                     MomentOptions().rb_samples(n).antithetic(false), g);
                      }, n});
    }
    const int64_t runs = 12;
    const double mean_scale = ref.mean.pow(2).mean().item<double>();
    const double var_scale = ref.var.pow(2).mean().item<double>();
    double mc_mse_mean = 0, mc_mse_var = 0;
    for (auto& e : ests) {
      double mse_mean = 0, mse_var = 0;
      for (int64_t r = 0; r < runs; ++r) {
        at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1000 + r);
        const GradMoments m = e.f(g);
        mse_mean += (m.mean - ref.mean).pow(2).mean().item<double>() / runs;
        mse_var += (m.var - ref.var).pow(2).mean().item<double>() / runs;
      }
      if (e.name == "mc1024") mc_mse_mean = mse_mean, mc_mse_var = mse_var;
      // Per-sample variance ratio vs plain MC: (mse_mc * 1024) / (mse_est * samples).
      std::printf("%-10s rel-rms mean %.3e var %.3e | MSE/MSE(mc1024) mean %.3f var %.3f | "
                  "per-sample variance ratio MC/est mean %.1f var %.1f\n",
                  e.name.c_str(), std::sqrt(mse_mean / mean_scale), std::sqrt(mse_var / var_scale),
                  mse_mean / mc_mse_mean, mse_var / mc_mse_var,
                  mc_mse_mean * 1024 / (mse_mean * e.samples), mc_mse_var * 1024 / (mse_var * e.samples));
    }
  }
  return 0;
}
