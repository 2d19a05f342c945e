#pragma once
/// Gaussian posteriors over a group's linear head (spec sections 2 and 4).
///
/// Every posterior is built in two steps so that data-parallel training can sum the data part
/// across processes before solving:
///   1. `posterior_stats`: sums over examples (curvature and right-hand side), additive;
///   2. `posterior_update`: prior + statistics -> posterior (float64 Cholesky).
///
/// Parameter layouts (p = size of one block):
///   regression  p = d (no bias), one precision block shared by the o outputs, mean [o, d];
///   binary      p = d + 1 ([w_k, b_k]), o independent blocks, mean [o, d + 1];
///   multiclass  p = K (d + 1) (rows [w_k, b_k] row-major), one block, mean [1, K (d + 1)].

#include "bayesagg/core/linalg.h"
#include "bayesagg/core/task_group.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <string>
#include <vector>

namespace bayesagg {

/// Where a classification posterior is centred (regression posteriors are exact Gaussians, so
/// `newton` and `mode` coincide there; `head` replaces the regression mean by the head's weights).
enum class PosteriorCentre {
  newton,  ///< one unguarded Newton step from the heads (the reference)
  head,    ///< Laplace at the current heads: the precision at the heads, the heads as the mean
  mode,    ///< guarded Newton iterations to the mode of the regularised objective (`posterior_mode`)
};
/// `newton` / `head` / `mode`.
PosteriorCentre parse_posterior_centre(const std::string& name);
std::string to_string(PosteriorCentre centre);

/// A Gaussian N(mean, precision^-1) over a group's head, stored by its precision.
struct GaussianPosterior {
  /// [n, p]: one row per output (regression) or per block (classification). Float64.
  at::Tensor mean;
  /// [blocks, p, p], blocks = 1 (regression, multiclass) or o (binary). Float64.
  at::Tensor precision;
  /// Lower Cholesky factor of `precision`, same shape.
  at::Tensor cholesky;
  /// Jitter that had to be added to the precision's diagonal to factorise it (0 if none).
  double jitter = 0.0;

  /// Covariance blocks precision^-1 [blocks, p, p] (from the Cholesky factor).
  at::Tensor covariance() const;
  /// Diagonal of the covariance [blocks, p].
  at::Tensor covariance_diagonal() const;
  bool defined() const { return mean.defined(); }
};

/// Additive sufficient statistics of a batch (sums over its examples).
///   regression:     curvature = H^T H [1, d, d],  rhs = H^T Y [d, o]
///   classification: curvature = sum_i J_i^T H_i J_i [blocks, p, p] (GGN),
///                   rhs = sum_i J_i^T (p_i - y_i) [n, p] (gradient of the summed loss at phi)
struct PosteriorStats {
  at::Tensor curvature;
  at::Tensor rhs;
  int64_t count = 0;
  /// Adds another batch's statistics in place (same group, same phi).
  void add_(const PosteriorStats& other);
};

/// Head parameters as the posterior's layout expects them: regression [o, d] (weight only),
/// binary [o, d + 1], multiclass [1, K (d + 1)]; float64.
at::Tensor head_parameters(const TaskGroup& group, const Head& head);

/// The prior N(0, gamma I) of a group whose representation has `dim` dimensions.
GaussianPosterior isotropic_prior(const TaskGroup& group, int64_t dim, double gamma);

/// Statistics of the examples (`features` [N, d], `labels` as `check_labels`). `phi` (from
/// `head_parameters`) is the expansion point of classification groups and unused for regression.
/// Works through the rows in chunks of `chunk_rows` so that memory stays bounded for any N; GGN
/// blocks are accumulated as weighted GEMMs, never via per-example Jacobians.
PosteriorStats posterior_stats(const TaskGroup& group, const at::Tensor& features,
                               const at::Tensor& labels, const at::Tensor& phi,
                               int64_t chunk_rows = 4096);

/// Posterior given `prior` and the data statistics:
///   regression:     Lambda = Lambda0 + H^T H,  M = Lambda^-1 (Lambda0 M0 + H^T Y)   (exact)
///   classification: Lambda = Lambda0 + GGN,    M = phi - Lambda^-1 (g + Lambda0 (phi - M0))
///                   (one Newton step around phi).
GaussianPosterior posterior_update(const TaskGroup& group, const GaussianPosterior& prior,
                                   const PosteriorStats& stats, const at::Tensor& phi,
                                   const CholeskyOptions& cholesky = {});

/// The regularised objective a classification posterior approximates, at `phi`:
/// J(phi) = sum_i loss_i(phi) + 1/2 sum_blocks (phi - M0)^T Lambda0 (phi - M0), with the summed
/// (not averaged) BCE-with-logits or cross-entropy losses of the examples. Float64.
double posterior_objective(const TaskGroup& group, const GaussianPosterior& prior,
                           const at::Tensor& features, const at::Tensor& labels,
                           const at::Tensor& phi, int64_t chunk_rows = 4096);

/// Options of `posterior_mode`.
struct ModeOptions {
  /// Newton iterations at most.
  TORCH_ARG(int64_t, max_iterations) = 10;
  /// Stop when half the squared Newton decrement, a^T Lambda^-1 a / 2 (the objective's predicted
  /// decrease), is below `tolerance * (1 + |J|)`.
  TORCH_ARG(double, tolerance) = 1e-8;
  /// Step halvings of the backtracking line search before an iteration gives up.
  TORCH_ARG(int64_t, max_halvings) = 30;
};

/// The result of `posterior_mode`.
struct ModeResult {
  /// N(mode, Lambda(mode)^-1): the GGN precision at the accepted point, which is the mean.
  GaussianPosterior posterior;
  /// The objective at the start and after every accepted step (never increasing).
  std::vector<double> objective;
  int64_t iterations = 0;
  bool converged = false;
};

/// Guarded Newton iterations from `phi` to the mode of `posterior_objective` (classification
/// groups): each step is the Newton direction with the GGN, shortened by backtracking (Armijo,
/// halving) until the objective decreases, so the objective never increases. Regression
/// posteriors are exact: for them this is `posterior_update` (zero iterations).
ModeResult posterior_mode(const TaskGroup& group, const GaussianPosterior& prior,
                          const at::Tensor& features, const at::Tensor& labels,
                          const at::Tensor& phi, const ModeOptions& options = {},
                          const CholeskyOptions& cholesky = {}, int64_t chunk_rows = 4096);

/// The smallest noise estimate `task_noise` returns by default (a task fitted perfectly must not
/// get an infinite weight).
constexpr double kTaskNoiseFloor = 1e-4;

/// Per-task mean loss [T_g] of a head on (features, labels) (`task_losses`: regression the mean
/// squared residual (w_k^T h_i + b_k - y_ik)^2 per output, binary BCE per task, multiclass
/// cross-entropy), floored at `floor`, in float64. The noise estimate of `noise = estimated`:
/// a regression output's observation noise variance, a classification task's likelihood
/// temperature.
at::Tensor task_noise(const TaskGroup& group, const at::Tensor& features, const at::Tensor& labels,
                      const Head& head, double floor = kTaskNoiseFloor);

/// `noise = normalised`: each group's noise estimates [T_g] (positive) divided by the geometric
/// mean of the estimates of all tasks of the same group type (regression, binary, multiclass),
/// over every group of that type. Undefined entries stay undefined. With `keep_overall_scale`
/// (`noise = balanced`) they are then multiplied by the geometric mean over every task of every
/// type: a single type's estimates come back unchanged (the factor is exactly 1).
std::vector<at::Tensor> normalise_per_loss(const std::vector<TaskGroup>& groups,
                                           const std::vector<at::Tensor>& noise,
                                           bool keep_overall_scale = false);

}  // namespace bayesagg
