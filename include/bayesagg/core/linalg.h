#pragma once
/// Float64 linear algebra helpers for posteriors.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>

namespace bayesagg {

/// Options of `safe_cholesky`.
struct CholeskyOptions {
  /// First jitter tried, relative to the mean of the matrix's diagonal.
  TORCH_ARG(double, initial_jitter) = 1e-10;
  /// Each retry multiplies the jitter by this factor.
  TORCH_ARG(double, growth) = 10.0;
  /// Retries before giving up with an error.
  TORCH_ARG(int64_t, max_tries) = 10;
};

/// The result of `safe_cholesky`: the lower factor and the absolute jitter that had to be added to
/// the diagonal (0 when the matrix factorised as it was).
struct CholeskyResult {
  at::Tensor factor;
  double jitter = 0.0;
  bool jitter_used() const { return jitter > 0.0; }
};

/// Lower Cholesky factor of a symmetric positive definite matrix or batch of matrices [..., p, p].
/// Jitter is added to the diagonal of the blocks that fail, only when needed, growing geometrically;
/// the largest jitter used is reported. Only the lower triangle is read. Throws (naming `what`)
/// when no jitter in range works or the lower triangle has a non-finite entry (detected from the
/// factorisation itself, without a separate pass over the matrix).
CholeskyResult safe_cholesky(const at::Tensor& a, const char* what = "matrix",
                             const CholeskyOptions& options = {});

/// Nodes and weights of the `n`-point Gauss-Hermite rule for the standard normal:
/// E[f(z)], z ~ N(0, 1), is approximated by sum_i weights[i] f(nodes[i]). Float64 tensors [n].
struct GaussHermite {
  at::Tensor nodes;
  at::Tensor weights;
};
/// Computes the rule by the Golub-Welsch eigenvalue method (n in [1, 200]).
GaussHermite gauss_hermite(int64_t n);

}  // namespace bayesagg
