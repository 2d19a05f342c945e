#pragma once
// Internal: the per-example part of the Rao-Blackwellised multiclass moments (moments.cpp).

#include <cstdint>

namespace bayesagg {
namespace detail {

/// Shapes and inputs of one chunk of logit samples, all of type T (float or double) and contiguous,
/// for B examples,
/// K classes, q = d + 1 head columns and n samples per example:
///   cov   [B, K, K, q]  Cov(z_l, phi_ka) as [i, l, k, a] (logit l, head row k, column a)
///   linv  [B, K, K]     inverse of the lower Cholesky factor L of each example's logit covariance
///   xi    [B, n, K]     standard normal draws; the logits are z = m_z + L xi
///   resid [B, n, K]     softmax(z) - onehot(label)
///   mean  [K, q]        posterior mean of the head (rows [w_k, b_k])
///   g0    [B, q]        gradient at the posterior mean, M^T (softmax(m_z) - onehot)
template <typename T>
struct RbChunk {
  int64_t batch = 0, classes = 0, cols = 0, samples = 0;
  const T* cov = nullptr;
  const T* linv = nullptr;
  const T* xi = nullptr;
  const T* resid = nullptr;
  const T* mean = nullptr;
  const T* g0 = nullptr;
};

/// Sums over the chunk's samples, added into float64 accumulators (per example):
///   sum_e  [B, q]    e = E[g | z] - g0 = r^T (M + D^T xi) - g0, with D = L^-1 Cov(z, phi)
///   sum_e2 [B, q]    e^2
///   sum_ex [B, q]    ||D_a r||^2 = r^T Cov(phi_a, z) Sigma_z^-1 Cov(z, phi_a) r, the part of the
///                    head's variance that the logits explain
///   sum_rr [B, K, K] r r^T
/// Examples are split over threads unless called inside a parallel region.
void rb_accumulate(const RbChunk<float>& chunk, double* sum_e, double* sum_e2, double* sum_ex,
                   double* sum_rr);
void rb_accumulate(const RbChunk<double>& chunk, double* sum_e, double* sum_e2, double* sum_ex,
                   double* sum_rr);

/// Logit covariances Sigma_z[i, l, m] = sum_a Cov(z_l, phi_ma) h~_a for every example, from
/// `cov` [B, K, K, q] (as in RbChunk) and `features` [B, q] (with the bias column), into
/// `out` [B, K, K] (float64), symmetrised.
void logit_covariances(const float* cov, const float* features, int64_t batch, int64_t classes,
                       int64_t cols, double* out);
void logit_covariances(const double* cov, const double* features, int64_t batch, int64_t classes,
                       int64_t cols, double* out);

}  // namespace detail
}  // namespace bayesagg
