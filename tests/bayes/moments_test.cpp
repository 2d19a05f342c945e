#include "bayesagg/bayes/moments.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

using namespace bayesagg;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

struct Problem {
  TaskGroup group;
  GaussianPosterior post;
  at::Tensor h, y;
};

/// A posterior fitted to random data, so its covariance has realistic structure.
Problem make_setup(const TaskGroup& g, int64_t b, int64_t d, double gamma, uint64_t seed) {
  auto r = gen(seed);
  Problem s{g, {}, at::randn({b, d}, r, at::kDouble), {}};
  const int64_t n = 30;
  const at::Tensor hn = at::randn({n, d}, r, at::kDouble);
  const Head head{at::randn({g.head_rows(), d}, r, at::kDouble) * 0.5,
                  at::randn({g.head_rows()}, r, at::kDouble) * 0.5};
  at::Tensor yn;
  switch (g.type) {
    case GroupType::regression:
      yn = at::randn({n, g.outputs}, r, at::kDouble);
      s.y = at::randn({b, g.outputs}, r, at::kDouble);
      break;
    case GroupType::binary:
      yn = at::bernoulli(at::full({n, g.outputs}, 0.5, at::kDouble), r);
      s.y = at::bernoulli(at::full({b, g.outputs}, 0.5, at::kDouble), r);
      break;
    case GroupType::multiclass:
      yn = at::randint(g.outputs, {n}, r, at::kLong);
      s.y = at::randint(g.outputs, {b}, r, at::kLong);
      break;
  }
  const at::Tensor phi = g.is_classification() ? head_parameters(g, head) : at::Tensor();
  s.post = posterior_update(g, isotropic_prior(g, d, gamma), posterior_stats(g, hn, yn, phi), phi);
  return s;
}

/// |estimate - truth| <= z * standard error, per element: the Monte-Carlo acceptance rule.
void expect_within_se(const at::Tensor& truth, const at::Tensor& estimate, const at::Tensor& se,
                      double z, const char* what) {
  const at::Tensor excess = (truth - estimate).abs() - z * se - 1e-12;
  EXPECT_LE(excess.max().item<double>(), 0.0) << what;
}

}  // namespace

TEST(Moments, RegressionClosedFormMatchesMonteCarlo) {
  // Sample w ~ N(m, S), g = 2 (w^T h - y) w; 200k samples. Tolerance: 5 standard errors of the
  // sample mean / variance (computed from the samples themselves).
  const Problem s = make_setup(TaskGroup(GroupType::regression, 2), 4, 3, 0.5, 11);
  const GradMoments exact = regression_moments(s.post, s.h, s.y);
  const int64_t n = 200000;
  auto r = gen(12);
  const at::Tensor lcov = at::linalg_cholesky(s.post.covariance()[0]);
  for (int64_t k = 0; k < 2; ++k) {
    const at::Tensor w = s.post.mean[k] + at::matmul(at::randn({n, 3}, r, at::kDouble), lcov.t());
    const at::Tensor resid = at::matmul(w, s.h.t()) - s.y.select(1, k);     // [n, B]
    const at::Tensor g = 2 * resid.unsqueeze(2) * w.unsqueeze(1);           // [n, B, d]
    const at::Tensor mean = g.mean(0), var = g.var(0, false);
    const at::Tensor dev2 = (g - mean).pow(2);
    expect_within_se(exact.mean.select(1, k), mean, (var / n).sqrt(), 5, "mean");
    expect_within_se(exact.var.select(1, k), var, (dev2.var(0, false) / n).sqrt(), 5, "var");
  }
}

TEST(Moments, RegressionClosedFormMatchesTheReferenceSecondMomentMatrix) {
  // The reference: E[g g^T] = 4 E[(w^T h - y)^2 w w^T] via Isserlis, diag(E[gg^T]) - E[g]^2.
  const Problem s = make_setup(TaskGroup(GroupType::regression, 1), 3, 4, 1.0, 13);
  const GradMoments ours = regression_moments(s.post, s.h, s.y);
  const at::Tensor cov = s.post.covariance()[0], m = s.post.mean[0];
  for (int64_t i = 0; i < 3; ++i) {
    const at::Tensor h = s.h[i];
    const double y = s.y[i][0].item<double>();
    // E[(w^T h - y)^2 w w^T] for w ~ N(m, S): with a = w^T h - y, u = w:
    // E[a^2 u u^T] = E[a^2] E[uu^T] + 2 E[a u] E[a u]^T - 2 (E a)^2 m m^T  (Gaussian identity)
    const double ea = (m.dot(h)).item<double>() - y;
    const double va = h.dot(at::matmul(cov, h)).item<double>();
    const at::Tensor eau = at::matmul(cov, h) + ea * m;
    const at::Tensor euu = cov + at::outer(m, m);
    const at::Tensor second = 4 * ((ea * ea + va) * euu + 2 * at::outer(eau, eau) -
                                   2 * ea * ea * at::outer(m, m));
    const at::Tensor mean = 2 * eau;
    const at::Tensor var = second.diagonal() - mean.pow(2);
    EXPECT_LT((ours.mean[i][0] - mean).abs().max().item<double>(), 1e-12);
    EXPECT_LT((ours.var[i][0] - var).abs().max().item<double>(), 1e-10);
  }
}

TEST(Moments, BinaryExactMatchesMonteCarlo) {
  const Problem s = make_setup(TaskGroup(GroupType::binary, 3), 5, 4, 0.5, 14);
  const GradMoments exact = binary_moments_exact(s.post, s.h, s.y, MomentOptions());
  // Brute force with explicit samples, 400k: tolerance 5 standard errors.
  auto r = gen(15);
  const int64_t n = 400000;
  const at::Tensor smp = sample_posterior(s.post, n, r);  // [n, o, d + 1]
  const at::Tensor ht = at::cat(std::vector<at::Tensor>{s.h, at::ones({5, 1}, at::kDouble)}, 1);
  const at::Tensor f = at::sigmoid(at::einsum("bq,noq->nbo", {ht, smp})) - s.y;   // [n, B, o]
  const at::Tensor g = f.unsqueeze(3) * smp.narrow(2, 0, 4).unsqueeze(1);          // [n,B,o,d]
  const at::Tensor mean = g.mean(0), var = g.var(0, false);
  expect_within_se(exact.mean, mean, (var / n).sqrt(), 5, "mean");
  expect_within_se(exact.var, var, ((g - mean).pow(2).var(0, false) / n).sqrt(), 5, "var");
}

TEST(Moments, BinaryExactHasConvergedInQuadraturePoints) {
  const Problem s = make_setup(TaskGroup(GroupType::binary, 2), 6, 5, 2.0, 16);
  const GradMoments a = binary_moments_exact(s.post, s.h, s.y, MomentOptions());
  const GradMoments b = binary_moments_exact(s.post, s.h, s.y, MomentOptions().quadrature_points(150));
  EXPECT_LT((a.mean - b.mean).abs().max().item<double>() / b.mean.abs().max().item<double>(), 1e-9);
  EXPECT_LT((a.var - b.var).abs().max().item<double>() / b.var.abs().max().item<double>(), 1e-9);
}

TEST(Moments, BinaryMonteCarloEqualsBruteForceOnTheSameSamples) {
  // With one chunk, the streamed GEMM formulation sees exactly the samples sample_posterior draws.
  const Problem s = make_setup(TaskGroup(GroupType::binary, 2), 4, 3, 0.5, 17);
  const int64_t n = 500;
  auto r1 = gen(3), r2 = gen(3);
  const GradMoments mc =
      binary_moments_mc(s.post, s.h, s.y, MomentOptions().mc_samples(n).mc_chunk(n).mc_dtype(at::kDouble), r1);
  const at::Tensor smp = sample_posterior(s.post, n, r2);
  const at::Tensor ht = at::cat(std::vector<at::Tensor>{s.h, at::ones({4, 1}, at::kDouble)}, 1);
  const at::Tensor f = at::sigmoid(at::einsum("bq,noq->nbo", {ht, smp})) - s.y;
  const at::Tensor g = f.unsqueeze(3) * smp.narrow(2, 0, 3).unsqueeze(1);
  EXPECT_LT((mc.mean - g.mean(0)).abs().max().item<double>(), 1e-12);
  EXPECT_LT((mc.var - g.var(0, false)).abs().max().item<double>(), 1e-12);
  // float32 arithmetic on the same normals: the shifted accumulation keeps it to float32 rounding.
  auto r3 = gen(3);
  const GradMoments f32 =
      binary_moments_mc(s.post, s.h, s.y, MomentOptions().mc_samples(n).mc_chunk(n), r3);
  EXPECT_LT((f32.mean - mc.mean).abs().max().item<double>() / mc.mean.abs().max().item<double>(), 1e-5);
  EXPECT_LT((f32.var - mc.var).abs().max().item<double>() / mc.var.abs().max().item<double>(), 1e-4);
}

TEST(Moments, MulticlassMonteCarloEqualsBruteForceOnTheSameSamples) {
  const Problem s = make_setup(TaskGroup(GroupType::multiclass, 3), 4, 3, 0.5, 18);
  const int64_t n = 500;
  auto r1 = gen(4), r2 = gen(4);
  const GradMoments mc =
      multiclass_moments_mc(s.post, s.h, s.y, MomentOptions().mc_samples(n).mc_chunk(n).mc_dtype(at::kDouble), r1);
  const at::Tensor smp = sample_posterior(s.post, n, r2).select(1, 0).reshape({n, 3, 4});
  const at::Tensor ht = at::cat(std::vector<at::Tensor>{s.h, at::ones({4, 1}, at::kDouble)}, 1);
  at::Tensor g = at::empty({n, 4, 3}, at::kDouble);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < 4; ++i) {
      const at::Tensor p = at::softmax(at::matmul(smp[j], ht[i]), 0) -
                           at::one_hot(s.y[i], 3).to(at::kDouble);
      g[j][i] = at::matmul(smp[j].narrow(1, 0, 3).t(), p);
    }
  }
  EXPECT_LT((mc.mean.squeeze(1) - g.mean(0)).abs().max().item<double>(), 1e-12);
  EXPECT_LT((mc.var.squeeze(1) - g.var(0, false)).abs().max().item<double>(), 1e-12);
  auto r3 = gen(4);
  const GradMoments f32 =
      multiclass_moments_mc(s.post, s.h, s.y, MomentOptions().mc_samples(n).mc_chunk(n), r3);
  EXPECT_LT((f32.mean - mc.mean).abs().max().item<double>() / mc.mean.abs().max().item<double>(), 1e-5);
  EXPECT_LT((f32.var - mc.var).abs().max().item<double>() / mc.var.abs().max().item<double>(), 1e-4);
}

TEST(Moments, StreamingChunksAgreeStatistically) {
  // Chunked and unchunked Monte Carlo estimate the same moments: 64k samples each, compared to
  // the exact binary moments within 5 standard errors.
  const Problem s = make_setup(TaskGroup(GroupType::binary, 2), 3, 3, 0.5, 19);
  const GradMoments exact = binary_moments_exact(s.post, s.h, s.y, MomentOptions());
  for (const int64_t chunk : {int64_t{0}, int64_t{7}, int64_t{4096}}) {
    auto r = gen(5);
    const int64_t n = 65536;
    const GradMoments mc =
        binary_moments_mc(s.post, s.h, s.y, MomentOptions().mc_samples(n).mc_chunk(chunk), r);
    expect_within_se(exact.mean, mc.mean, (exact.var / n).sqrt(), 5, "chunked mean");
  }
}

namespace {

/// Plain Monte Carlo of the multiclass gradient from explicit posterior samples, float64:
/// per-element mean, biased variance and their standard errors.
struct BruteForce {
  at::Tensor mean, var, se_mean, se_var;
};

BruteForce multiclass_brute_force(const Problem& s, int64_t k, int64_t n, uint64_t seed) {
  auto r = gen(seed);
  const int64_t b = s.h.size(0), d = s.h.size(1);
  const at::Tensor smp = sample_posterior(s.post, n, r).select(1, 0).reshape({n, k, d + 1});
  const at::Tensor ht = at::cat(std::vector<at::Tensor>{s.h, at::ones({b, 1}, at::kDouble)}, 1);
  const at::Tensor logits = at::einsum("nkq,bq->nbk", {smp, ht});
  const at::Tensor res = at::softmax(logits, -1) - at::one_hot(s.y, k).to(at::kDouble);
  const at::Tensor g = at::einsum("nbk,nkd->nbd", {res, smp.narrow(2, 0, d)});  // [n, B, d]
  BruteForce out;
  out.mean = g.mean(0);
  out.var = g.var(0, false);
  out.se_mean = (out.var / n).sqrt();
  out.se_var = ((g - out.mean).pow(2).var(0, false) / n).sqrt();
  return out;
}

}  // namespace

TEST(Moments, MulticlassRaoBlackwellMatchesMonteCarlo) {
  // E[g] and E[g^2] are conditional expectations given the logits, so with independent samples the
  // Rao-Blackwellised per-sample variance is at most plain MC's: with n samples each, the
  // difference of the two estimates has a standard error <= sqrt(2) x plain MC's. Bound: 5 of those.
  const Problem s = make_setup(TaskGroup(GroupType::multiclass, 3), 5, 4, 0.5, 21);
  const int64_t n = 1 << 17;
  const BruteForce mc = multiclass_brute_force(s, 3, n, 22);
  for (const bool anti : {false, true}) {
    auto r = gen(23);
    const GradMoments rb = multiclass_moments_rb(
        s.post, s.h, s.y, MomentOptions().rb_samples(n).antithetic(anti).mc_dtype(at::kDouble), r);
    ASSERT_EQ(rb.mean.sizes(), (at::IntArrayRef{5, 1, 4}));
    expect_within_se(mc.mean, rb.mean.squeeze(1), std::sqrt(2.0) * mc.se_mean, 5, "rb mean");
    expect_within_se(mc.var, rb.var.squeeze(1), std::sqrt(2.0) * mc.se_var, 5, "rb var");
  }
}

TEST(Moments, MulticlassRaoBlackwellFloat32AgreesWithFloat64OnTheSameNormals) {
  // The normals are drawn in float32 either way, so the two runs see the same samples.
  const Problem s = make_setup(TaskGroup(GroupType::multiclass, 4), 6, 5, 0.5, 24);
  auto r1 = gen(25), r2 = gen(25);
  const auto o = MomentOptions().rb_samples(256);
  const GradMoments a = multiclass_moments_rb(s.post, s.h, s.y, MomentOptions(o).mc_dtype(at::kDouble), r1);
  const GradMoments b = multiclass_moments_rb(s.post, s.h, s.y, o, r2);
  EXPECT_LT((a.mean - b.mean).abs().max().item<double>() / a.mean.abs().max().item<double>(), 1e-5);
  EXPECT_LT((a.var - b.var).abs().max().item<double>() / a.var.abs().max().item<double>(), 1e-4);
}

TEST(Moments, MulticlassRaoBlackwellRejectsBadOptions) {
  const Problem s = make_setup(TaskGroup(GroupType::multiclass, 3), 2, 3, 0.5, 28);
  auto r = gen(29);
  EXPECT_THROW(multiclass_moments_rb(s.post, s.h, s.y, MomentOptions().rb_samples(7), r), c10::Error);
  EXPECT_THROW(multiclass_moments_rb(s.post, s.h, s.y, MomentOptions().rb_samples(1).antithetic(false), r),
               c10::Error);
  EXPECT_EQ(parse_moment_estimator("rb"), MomentEstimator::rao_blackwell);
  EXPECT_EQ(to_string(MomentEstimator::rao_blackwell), "rb");
}
