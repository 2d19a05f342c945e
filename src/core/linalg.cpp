#include "bayesagg/core/linalg.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace bayesagg {

CholeskyResult safe_cholesky(const at::Tensor& a, const char* what,
                             const CholeskyOptions& options) {
  TORCH_CHECK(a.dim() >= 2 && a.size(-1) == a.size(-2), what,
              ": Cholesky needs square matrices, got shape ", a.sizes());
  TORCH_CHECK(options.max_tries() >= 0 && options.initial_jitter() > 0 && options.growth() > 1,
              "invalid CholeskyOptions");
  CholeskyResult result;
  auto [factor, info] = at::linalg_cholesky_ex(a, /*upper=*/false, /*check_errors=*/false);
  // LAPACK stops at a NaN or non-positive pivot, and a non-finite entry of the lower triangle
  // makes some later pivot NaN or -inf; only +inf on the diagonal passes, leaving +inf on the
  // factor's diagonal. So a finite factor diagonal and no failed pivot mean a finite input,
  // without a pass over the whole matrix.
  const bool factored = info.eq(0).all().item<bool>();
  if (!factored || !at::isfinite(factor.diagonal(0, -2, -1)).all().item<bool>()) {
    TORCH_CHECK(at::isfinite(a.tril()).all().item<bool>(), what,
                ": matrix has non-finite entries; cannot factorise it");
  }
  if (factored) {
    result.factor = factor;
    return result;
  }
  // Scale of the jitter: the mean diagonal of each block.
  const at::Tensor scale = a.diagonal(0, -2, -1).abs().mean(-1).clamp_min(1e-300);
  const int64_t p = a.size(-1);
  const at::Tensor eye = at::eye(p, a.options());
  double rel = options.initial_jitter();
  for (int64_t t = 0; t < options.max_tries(); ++t, rel *= options.growth()) {
    // Only the blocks that failed get jitter.
    const at::Tensor failed = info.ne(0).to(a.scalar_type());
    const at::Tensor jitter = failed * scale * rel;  // [...]
    const at::Tensor shifted = a + jitter.unsqueeze(-1).unsqueeze(-1) * eye;
    auto [f2, info2] = at::linalg_cholesky_ex(shifted, false, false);
    if (info2.eq(0).all().item<bool>()) {
      result.factor = at::where(failed.unsqueeze(-1).unsqueeze(-1).to(at::kBool), f2, factor);
      result.jitter = jitter.max().item<double>();
      return result;
    }
  }
  TORCH_CHECK(false, what, ": not positive definite even with jitter ",
              rel / options.growth(), " x mean diagonal (", options.max_tries(),
              " tries); the posterior is degenerate (check gamma and the features)");
}

GaussHermite gauss_hermite(int64_t n) {
  TORCH_CHECK(n >= 1 && n <= 200, "Gauss-Hermite points must be in [1, 200], got ", n);
  // Jacobi matrix of the probabilists' Hermite polynomials: off-diagonal sqrt(k).
  at::Tensor j = at::zeros({n, n}, at::kDouble);
  for (int64_t k = 1; k < n; ++k) {
    const double v = std::sqrt(static_cast<double>(k));
    j[k][k - 1] = v;
    j[k - 1][k] = v;
  }
  auto [values, vectors] = at::linalg_eigh(j);
  GaussHermite rule;
  rule.nodes = values.contiguous();
  rule.weights = vectors.select(0, 0).pow(2).contiguous();
  return rule;
}

}  // namespace bayesagg
