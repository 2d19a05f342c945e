#pragma once
/// Moments of the per-example, per-task gradient g = d loss / d h under a head posterior
/// (spec sections 3 and 4). All results are float64 tensors [B, tasks, d]; `var` is the raw
/// per-dimension variance (before the clamp and exponent of the aggregation).

#include "bayesagg/bayes/posterior.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>

namespace bayesagg {

/// Mean and per-dimension variance of the gradient [B, tasks, d].
struct GradMoments {
  at::Tensor mean;
  at::Tensor var;
  /// Largest Cholesky jitter the estimator needed (rb: the examples' logit covariances), 0 if none.
  double jitter = 0.0;
};

/// How classification moments are estimated.
enum class MomentEstimator {
  monte_carlo,  ///< sampling the head, the reference's semantics (binary and multiclass)
  exact,        ///< binary: Stein's lemma + Gauss-Hermite, no sampling noise; multiclass: MC
  rao_blackwell,  ///< multiclass: sample the K logits per example, the weights analytically
};
/// `mc` / `exact` / `rb`.
MomentEstimator parse_moment_estimator(const std::string& name);
std::string to_string(MomentEstimator estimator);

/// Options of the classification moment estimators.
struct MomentOptions {
  /// Monte-Carlo samples of the head per step.
  TORCH_ARG(int64_t, mc_samples) = 1024;
  /// Samples processed at once; 0 picks a chunk that keeps the working set near 32 MiB. Memory does
  /// not grow with `mc_samples`.
  TORCH_ARG(int64_t, mc_chunk) = 0;
  /// Gauss-Hermite points of the exact binary estimator.
  TORCH_ARG(int64_t, quadrature_points) = 48;
  /// Precision of the Monte-Carlo arithmetic (samples, logits, gradients). The posterior itself is
  /// always float64; sampling runs in float32 by default (2x faster), accumulating deviations from
  /// the posterior-mean gradient so that E[g^2] - E[g]^2 does not cancel. kDouble reproduces
  /// the reference's arithmetic.
  TORCH_ARG(at::ScalarType, mc_dtype) = at::kFloat;
  /// Samples of the logits per step of the Rao-Blackwellised multiclass estimator.
  TORCH_ARG(int64_t, rb_samples) = 16;
  /// Antithetic pairs (xi, -xi) in the Rao-Blackwellised estimator: cancels the part of the
  /// sampling error that is linear in the logits' deviation.
  TORCH_ARG(bool, antithetic) = true;
};

/// Regression, closed form: with r = m^T h - y, c = S h, q = h^T S h,
/// E[g] = 2 (c + r m), Var[g_j] = 4 ((r^2 + q) S_jj + q m_j^2 + 2 r m_j c_j + c_j^2).
/// O(B o d^2) time (one GEMM H S), O(B o d) memory.
///
/// With `noise` (per-output observation noise variances s2 [o]; undefined = 1, the reference),
/// g is the gradient of the output's Gaussian negative log-likelihood r^2 / s2 and the weights'
/// covariance is s2 S (the prior variance scales with the noise, as in a conjugate prior):
/// E[g] = 2 (c + r m / s2), Var[g_j] = 4 ((r^2 / s2 + q) S_jj + (q m_j^2 + 2 r m_j c_j) / s2 + c_j^2).
GradMoments regression_moments(const GaussianPosterior& posterior, const at::Tensor& features,
                               const at::Tensor& labels, const at::Tensor& noise = {});

/// Binary tasks by Monte Carlo: g = w_k (sigmoid(w_k^T h + b_k) - y_k) with [w_k, b_k] sampled from
/// each task's block; mean and biased variance over the samples, streamed over sample chunks.
GradMoments binary_moments_mc(const GaussianPosterior& posterior, const at::Tensor& features,
                              const at::Tensor& labels, const MomentOptions& options,
                              at::Generator& generator);

/// Binary tasks, exact up to quadrature: a = phi^T h~ ~ N(m_a, v_a), c = (S h~)[:d],
/// E[g_j] = m_j E[f] + c_j E[f'],
/// E[g_j^2] = E[(m_j + c_j (a - m_a) / v_a)^2 f^2] + (S_jj - c_j^2 / v_a) E[f^2].
GradMoments binary_moments_exact(const GaussianPosterior& posterior, const at::Tensor& features,
                                 const at::Tensor& labels, const MomentOptions& options);

/// Multiclass by Monte Carlo: g = W^T (softmax(W h + b) - e_c) with [W, b] sampled jointly;
/// one task per group ([B, 1, d]), streamed over sample chunks.
GradMoments multiclass_moments_mc(const GaussianPosterior& posterior, const at::Tensor& features,
                                  const at::Tensor& labels, const MomentOptions& options,
                                  at::Generator& generator);

/// Multiclass, Rao-Blackwellised (spec section 4, "ours"). Per example the logits z = W~ h~ are
/// Gaussian N(m, Sigma_z) with Sigma_z = J Sigma J^T; given z, the weight column w_{:,j} is Gaussian
/// with mean mu_{:,j} + D_j xi (z = m + L_z xi, D = Sigma J^T L_z^-T) and covariance
/// V_j = Sigma_{jj} - D_j D_j^T. With r = softmax(z) - e_c:
///   E[g_j] = E_z[r^T (mu_j + D_j xi)],  E[g_j^2] = E_z[(r^T (mu_j + D_j xi))^2] + tr(V_j E_z[r r^T]),
/// so only the K-dimensional xi is sampled (`rb_samples` per example, antithetic pairs by default);
/// the weights' remaining uncertainty enters in closed form. Unbiased for the mean and E[g^2];
/// one task per group ([B, 1, d]).
GradMoments multiclass_moments_rb(const GaussianPosterior& posterior, const at::Tensor& features,
                                  const at::Tensor& labels, const MomentOptions& options,
                                  at::Generator& generator);

/// Dispatches on the group type and estimator (`noise`: regression groups only).
GradMoments gradient_moments(const TaskGroup& group, const GaussianPosterior& posterior,
                             const at::Tensor& features, const at::Tensor& labels,
                             MomentEstimator estimator, const MomentOptions& options,
                             at::Generator& generator, const at::Tensor& noise = {});

/// Draws `n` samples [n, blocks, p] from N(mean_b, precision_b^-1) for each block b (classification
/// layouts), through `generator`, in `dtype`. The Monte-Carlo estimators draw exactly these
/// samples when they process all of them in one chunk.
at::Tensor sample_posterior(const GaussianPosterior& posterior, int64_t n, at::Generator& generator,
                            at::ScalarType dtype = at::kDouble);

}  // namespace bayesagg
