#pragma once
/// Combining per-task gradient moments into dL/dh: the reference's tempered precision weighting
/// (spec section 5) and two weightings that do not reward vanishing gradients.

#include "bayesagg/core/reducer.h"

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace bayesagg {

/// How the per-task gradient moments are combined.
enum class Weighting {
  /// Per example and dimension, weights proportional to 1 / max(v, 1e-8)^s, summing to one over
  /// tasks (the reference).
  precision,
  /// One weight per task, proportional to 1 / (the batch mean of its tempered variance), summing
  /// to one over tasks: a task's weight reflects how certain its gradients are overall, and an
  /// example whose gradient vanishes does not pull the weight of its task up.
  task,
  /// Per example and dimension, each task's mean shrunk by its signal-to-noise ratio,
  /// mu * mu^2 / (mu^2 + v) (the posterior-mean estimate of the gradient times the Wiener factor),
  /// averaged over tasks: certain gradients pass whole, uncertain ones are damped, and nothing is
  /// renormalised across tasks.
  snr,
  /// `task`'s weights normalised within each loss (regression outputs, binary tasks, multiclass
  /// tasks), each loss keeping its share of the tasks (n_loss / T): precision decides between
  /// tasks of one loss, never between losses whose variances are in different units. With one
  /// loss it is `task`, exactly.
  family,
};
/// `precision` / `task` / `snr` / `family`.
Weighting parse_weighting(const std::string& name);
std::string to_string(Weighting weighting);

/// The size of dL/dh. Every weighting gives a weighted average over the tasks (weights summing to
/// one), 1/T of linear scalarisation's sum when the weights are equal.
enum class GradientScale {
  /// The weighted average (the reference).
  average,
  /// T times the weighted average: linear scalarisation's size. After the LS warm-up epochs,
  /// Adam's second-moment estimate of the trunk's gradients remembers LS's size; an average T
  /// times smaller shrinks the trunk's steps by up to T for ~1 / (1 - beta2) steps.
  sum,
};
/// `average` / `sum`.
GradientScale parse_gradient_scale(const std::string& name);
std::string to_string(GradientScale scale);

/// The variance floor the reference applies before tempering.
constexpr double kVarianceFloor = 1e-8;

/// max(var, floor)^s, elementwise: the tempered variance of one group (s = its exponent).
at::Tensor tempered_variance(const at::Tensor& var, double s, double floor = kVarianceFloor);

/// Per-task weights [B, T, d] (T = all tasks of all groups, in the order given), proportional to
/// 1 / tempered variance and summing to one over tasks, per example and dimension.
at::Tensor aggregation_weights(const std::vector<at::Tensor>& tempered_vars);

/// dL/dh [B, d] = (sum_t mu_t / v_t) / (sum_t 1 / v_t) / B, from per-group means and tempered
/// variances [B, T_g, d].
at::Tensor aggregate(const std::vector<at::Tensor>& means,
                     const std::vector<at::Tensor>& tempered_vars);

/// dL/dh [B, d] with one weight per task: w_t = (1 / mean_{i,j} v_t) / sum_u (1 / mean_{i,j} v_u),
/// dL/dh = sum_t w_t mu_t / B, from per-group means and tempered variances [B, T_g, d]. With
/// `reducer` (data-parallel: each process holds a shard of the batch) the means over (i, j) are
/// those of the whole batch: the sums and counts are reduced; B stays the local rows.
at::Tensor aggregate_task_precision(const std::vector<at::Tensor>& means,
                                    const std::vector<at::Tensor>& tempered_vars,
                                    const TensorReducer& reducer = {});

/// `weighting = family`: as `aggregate_task_precision`, with `family[t]` (one entry per task
/// column of the concatenated groups, values 0..F-1) the loss of task t; w_t = (n_f / T) p_t /
/// sum_{u in f} p_u. One family gives `aggregate_task_precision`'s weights.
at::Tensor aggregate_family_precision(const std::vector<at::Tensor>& means,
                                      const std::vector<at::Tensor>& tempered_vars,
                                      const std::vector<int64_t>& family,
                                      const TensorReducer& reducer = {});

/// dL/dh [B, d] = mean_t mu_t^3 / (mu_t^2 + max(v_t, floor)) / B, from per-group means and raw
/// variances [B, T_g, d].
at::Tensor aggregate_snr(const std::vector<at::Tensor>& means, const std::vector<at::Tensor>& vars,
                         double floor = kVarianceFloor);

}  // namespace bayesagg
