#pragma once
/// Tempered precision weighting of per-task gradient moments (spec section 5).

#include <ATen/core/Tensor.h>

#include <vector>

namespace bayesagg {

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

}  // namespace bayesagg
