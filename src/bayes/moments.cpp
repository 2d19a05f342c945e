#include "bayesagg/bayes/moments.h"

#include "bayesagg/core/linalg.h"
#include "rb_kernel.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace bayesagg {
namespace {

at::Tensor with_bias_column(const at::Tensor& h) {
  return at::cat({h, at::ones({h.size(0), 1}, h.options())}, 1);
}

/// Draws posterior deviations L^-T z [blocks, p, n] (without the mean) in the factor's dtype.
/// Normals come from LibTorch's float32 path (vectorised, ~10x faster than its float64 one);
/// their 2^-24 rounding is far below any Monte-Carlo error.
at::Tensor sample_deviations(const at::Tensor& chol_t, int64_t n, at::Generator& gen) {
  const int64_t nb = chol_t.size(0), p = chol_t.size(1);
  at::Tensor z = at::randn({nb, p, n}, gen, at::TensorOptions().dtype(at::kFloat));
  if (chol_t.scalar_type() != at::kFloat) z = z.to(chol_t.scalar_type());
  return at::linalg_solve_triangular(chol_t, z, /*upper=*/true);
}

int64_t chunk_size(const MomentOptions& o, int64_t bytes_per_sample) {
  if (o.mc_chunk() > 0) return std::min(o.mc_chunk(), o.mc_samples());
  const int64_t budget = int64_t{32} << 20;
  return std::max<int64_t>(1, std::min(o.mc_samples(), budget / std::max<int64_t>(1, bytes_per_sample)));
}

void check_mc(const MomentOptions& o) {
  TORCH_CHECK(o.mc_samples() >= 2, "mc_samples must be >= 2, got ", o.mc_samples());
  TORCH_CHECK(o.mc_chunk() >= 0, "mc_chunk must be >= 0, got ", o.mc_chunk());
}

}  // namespace

MomentEstimator parse_moment_estimator(const std::string& name) {
  if (name == "mc" || name == "monte_carlo") return MomentEstimator::monte_carlo;
  if (name == "exact") return MomentEstimator::exact;
  if (name == "rb" || name == "rao_blackwell") return MomentEstimator::rao_blackwell;
  TORCH_CHECK(false, "unknown moment estimator '", name, "' (expected mc, exact or rb)");
}

std::string to_string(MomentEstimator e) {
  switch (e) {
    case MomentEstimator::exact: return "exact";
    case MomentEstimator::rao_blackwell: return "rb";
    case MomentEstimator::monte_carlo: break;
  }
  return "mc";
}

at::Tensor sample_posterior(const GaussianPosterior& posterior, int64_t n, at::Generator& gen,
                            at::ScalarType dtype) {
  TORCH_CHECK(n >= 1, "number of samples must be >= 1, got ", n);
  TORCH_CHECK(posterior.mean.size(0) == posterior.cholesky.size(0),
              "sampling needs one mean row per precision block");
  const at::Tensor dev =
      sample_deviations(posterior.cholesky.transpose(-2, -1).contiguous().to(dtype), n, gen);
  return (dev + posterior.mean.to(dtype).unsqueeze(-1)).permute({2, 0, 1}).contiguous();
}

GradMoments regression_moments(const GaussianPosterior& post, const at::Tensor& features,
                               const at::Tensor& labels, const at::Tensor& noise) {
  const at::Tensor h = features.to(at::kDouble);
  const at::Tensor y = labels.to(at::kDouble);
  const at::Tensor m = post.mean;             // [o, d]
  const at::Tensor s = post.covariance()[0];  // [d, d]
  TORCH_CHECK(m.size(1) == h.size(1), "regression posterior has dimension ", m.size(1),
              " but features have ", h.size(1));
  const at::Tensor c = at::matmul(h, s);                    // [B, d]   (S symmetric)
  const at::Tensor q = (c * h).sum(1);                      // [B]
  const at::Tensor r = at::matmul(h, m.t()) - y;            // [B, o]
  const at::Tensor sjj = s.diagonal();                      // [d]
  const at::Tensor r3 = r.unsqueeze(2), c3 = c.unsqueeze(1), m3 = m.unsqueeze(0);
  const at::Tensor q3 = q.view({-1, 1, 1});
  GradMoments out;
  if (!noise.defined()) {
    out.mean = 2 * (c3 + r3 * m3);
    out.var = 4 * ((r3.pow(2) + q3) * sjj + q3 * m3.pow(2) + 2 * r3 * m3 * c3 + c3.pow(2));
    return out;
  }
  TORCH_CHECK(noise.dim() == 1 && noise.size(0) == m.size(0), "regression noise must be [",
              m.size(0), "], got ", noise.sizes());
  TORCH_CHECK(noise.gt(0).all().item<bool>(), "regression noise variances must be > 0");
  // g = 2 r w / s2 with w ~ N(m, s2 S): every term scales with the output's noise s2.
  const at::Tensor inv = noise.to(at::kDouble).reciprocal().view({1, -1, 1});  // [1, o, 1]
  out.mean = 2 * (c3 + r3 * m3 * inv);
  out.var = 4 * ((r3.pow(2) * inv + q3) * sjj + q3 * m3.pow(2) * inv + 2 * r3 * m3 * c3 * inv +
                 c3.pow(2));
  return out;
}

GradMoments binary_moments_mc(const GaussianPosterior& post, const at::Tensor& features,
                              const at::Tensor& labels, const MomentOptions& options,
                              at::Generator& gen) {
  check_mc(options);
  const auto dt = options.mc_dtype();
  const at::Tensor ht64 = with_bias_column(features.to(at::kDouble));  // [B, q]
  const int64_t b = ht64.size(0), q = ht64.size(1), d = q - 1, o = post.mean.size(0);
  const at::Tensor y64 = labels.to(at::kDouble).t().unsqueeze(-1);   // [o, B, 1]
  // Shift: g0 = m_w f0, the gradient at the posterior mean (float64). With deviations D = w - m,
  // g - g0 = f D + (f - f0) m, so sums of (g - g0) and (g - g0)^2 are GEMMs on small numbers.
  const at::Tensor m64 = post.mean.narrow(1, 0, d).unsqueeze(1);      // [o, 1, d]
  const at::Tensor f0_64 = at::sigmoid(at::matmul(post.mean.unsqueeze(1), ht64.t().unsqueeze(0)))
                               .transpose(1, 2) - y64;                 // [o, B, 1]
  const at::Tensor ht = ht64.to(dt), y = y64.to(dt), f0 = f0_64.to(dt), m = m64.to(dt);
  const at::Tensor mean_logit = at::matmul(post.mean.unsqueeze(1), ht64.t().unsqueeze(0))
                                    .transpose(1, 2).to(dt);           // [o, B, 1]
  const at::Tensor chol_t = post.cholesky.transpose(-2, -1).contiguous().to(dt);
  at::Tensor s1 = at::zeros({o, b, d}, at::kDouble), s2 = at::zeros({o, b, d}, at::kDouble);
  const int64_t total = options.mc_samples();
  const int64_t chunk = chunk_size(options, 8 * o * (4 * b + 2 * q));
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t n = std::min(chunk, total - done);
    const at::Tensor dev = sample_deviations(chol_t, n, gen);        // [o, q, n]
    const at::Tensor f = at::sigmoid(mean_logit + at::matmul(ht, dev)) - y;  // [o, B, n]
    const at::Tensor df = f - f0;                                     // [o, B, n]
    const at::Tensor dw = dev.narrow(1, 0, d).transpose(1, 2);        // [o, n, d]
    // sum_s (g - g0) = F D + (sum_s df) m
    s1.add_((at::matmul(f, dw) + df.sum(-1, true) * m).to(at::kDouble));
    // sum_s (g - g0)^2 = F^2 D^2 + 2 (F df) D m + (sum df^2) m^2
    s2.add_((at::matmul(f.pow(2), dw.pow(2)) + 2 * at::matmul(f * df, dw) * m +
             df.pow(2).sum(-1, true) * m.pow(2))
                .to(at::kDouble));
  }
  const at::Tensor e1 = s1 / total;
  GradMoments out;
  out.mean = (m64 * f0_64 + e1).permute({1, 0, 2}).contiguous();
  out.var = (s2 / total - e1.pow(2)).permute({1, 0, 2}).contiguous();
  return out;
}

GradMoments binary_moments_exact(const GaussianPosterior& post, const at::Tensor& features,
                                 const at::Tensor& labels, const MomentOptions& options) {
  const GaussHermite rule = gauss_hermite(options.quadrature_points());
  const at::Tensor ht = with_bias_column(features.to(at::kDouble));  // [B, q]
  const int64_t q = ht.size(1), d = q - 1;
  const at::Tensor s = post.covariance();                    // [o, q, q]
  const at::Tensor mean = post.mean;                         // [o, q]
  const at::Tensor cfull = at::matmul(ht, s);                // [o, B, q]  = (S h~)^T per example
  const at::Tensor va = (cfull * ht).sum(-1).clamp_min(1e-300);  // [o, B]
  const at::Tensor ma = at::matmul(mean, ht.t());            // [o, B]
  const at::Tensor y = labels.to(at::kDouble).t();           // [o, B]
  const at::Tensor sd = va.sqrt().unsqueeze(-1);
  const at::Tensor z = sd * rule.nodes;                      // [o, B, Q] = a - m_a
  const at::Tensor sig = at::sigmoid(ma.unsqueeze(-1) + z);
  const at::Tensor f = sig - y.unsqueeze(-1);
  const at::Tensor f2 = f.pow(2);
  const at::Tensor& wq = rule.weights;
  const at::Tensor e_f = at::matmul(f, wq), e_fp = at::matmul(sig * (1 - sig), wq);
  const at::Tensor e_f2 = at::matmul(f2, wq), e_zf2 = at::matmul(z * f2, wq);
  const at::Tensor e_z2f2 = at::matmul(z.pow(2) * f2, wq);  // all [o, B]
  const at::Tensor c = cfull.narrow(-1, 0, d);               // [o, B, d]
  const at::Tensor mj = mean.narrow(1, 0, d).unsqueeze(1);   // [o, 1, d]
  const at::Tensor sjj = s.diagonal(0, -2, -1).narrow(-1, 0, d).unsqueeze(1);  // [o, 1, d]
  const auto col = [](const at::Tensor& t) { return t.unsqueeze(-1); };
  const at::Tensor g_mean = mj * col(e_f) + c * col(e_fp);
  const at::Tensor g2 = (mj.pow(2) + sjj) * col(e_f2) + 2 * mj * c * col(e_zf2 / va) +
                        c.pow(2) * col(e_z2f2 / va.pow(2) - e_f2 / va);
  GradMoments out;
  out.mean = g_mean.permute({1, 0, 2}).contiguous();
  out.var = (g2 - g_mean.pow(2)).permute({1, 0, 2}).contiguous();
  return out;
}

GradMoments multiclass_moments_mc(const GaussianPosterior& post, const at::Tensor& features,
                                  const at::Tensor& labels, const MomentOptions& options,
                                  at::Generator& gen) {
  check_mc(options);
  const auto dt = options.mc_dtype();
  const at::Tensor ht64 = with_bias_column(features.to(at::kDouble));  // [B, q]
  const int64_t b = ht64.size(0), q = ht64.size(1), d = q - 1;
  const int64_t k = post.mean.size(1) / q;
  TORCH_CHECK(k * q == post.mean.size(1), "multiclass posterior of size ", post.mean.size(1),
              " does not split into rows of ", q);
  const at::Tensor onehot64 = at::one_hot(labels.to(at::kLong), k).to(at::kDouble);  // [B, K]
  const at::Tensor mphi = post.mean.reshape({k, q});                  // [K, q]
  const at::Tensor mlogit64 = at::matmul(ht64, mphi.t());             // [B, K]
  // Shift: g0 = M^T r0, the gradient at the posterior mean; sums run over g - g0.
  const at::Tensor r0_64 = at::softmax(mlogit64, 1) - onehot64;       // [B, K]
  const at::Tensor mw64 = mphi.narrow(1, 0, d);                       // [K, d]
  const at::Tensor g0 = at::matmul(r0_64, mw64);                      // [B, d]
  const at::Tensor ht = ht64.to(dt), onehot = onehot64.to(dt);
  const at::Tensor g0f = g0.to(dt);
  const at::Tensor mphi_dt = mphi.to(dt), onehot_t = onehot.t().unsqueeze(0);  // [1, K, B]
  const at::Tensor chol_t = post.cholesky.transpose(-2, -1).contiguous().to(dt);
  at::Tensor s1 = at::zeros({b, d}, at::kDouble), s2 = at::zeros({b, d}, at::kDouble);
  const int64_t total = options.mc_samples();
  // Samples are drawn chunk by chunk (bounded memory); each chunk's gradients [n, B, d] are then
  // formed in sub-chunks small enough to stay in cache, since those passes are memory-bound.
  const int64_t chunk = chunk_size(options, 4 * (2 * b * k + 3 * k * q));
  const int64_t sub = std::max<int64_t>(1, (int64_t{256} << 10) / (4 * b * d));
  const at::Tensor htt = ht.t();
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t n = std::min(chunk, total - done);
    // Sampled heads [n, K, q] and logits [n, K, B] -> residuals r [n, K, B].
    const at::Tensor w = sample_deviations(chol_t, n, gen)[0].t().reshape({n, k, q}).add_(mphi_dt);
    at::Tensor r = at::matmul(w.reshape({n * k, q}), htt).reshape({n, k, b});
    r = at::softmax(r, 1).sub_(onehot_t);
    const at::Tensor ww = w.narrow(2, 0, d);  // [n, K, d]
    for (int64_t s0 = 0; s0 < n; s0 += sub) {
      const int64_t m = std::min(sub, n - s0);
      // e = W_s^T r_s - g0 [m, B, d]; its size is that of the deviation, so float32 squares and
      // sums of e keep the variance's relative precision.
      at::Tensor e = at::bmm(r.narrow(0, s0, m).transpose(1, 2), ww.narrow(0, s0, m));
      e.sub_(g0f);
      s1.add_(e.sum(0).to(at::kDouble));
      s2.add_(e.mul_(e).sum(0).to(at::kDouble));
    }
  }
  const at::Tensor e1 = s1 / total;
  GradMoments out;
  out.mean = (g0 + e1).unsqueeze(1);
  out.var = (s2 / total - e1.pow(2)).unsqueeze(1);
  return out;
}

GradMoments multiclass_moments_rb(const GaussianPosterior& post, const at::Tensor& features,
                                  const at::Tensor& labels, const MomentOptions& options,
                                  at::Generator& gen) {
  TORCH_CHECK(options.rb_samples() >= 2, "rb_samples must be >= 2, got ", options.rb_samples());
  TORCH_CHECK(!options.antithetic() || options.rb_samples() % 2 == 0,
              "antithetic sampling needs an even rb_samples, got ", options.rb_samples());
  TORCH_CHECK(options.mc_chunk() >= 0, "mc_chunk must be >= 0, got ", options.mc_chunk());
  const auto dt = options.mc_dtype();
  const at::Tensor ht64 = with_bias_column(features.to(at::kDouble));  // [B, q]
  const int64_t b = ht64.size(0), q = ht64.size(1), d = q - 1;
  const int64_t p = post.mean.size(1), k = p / q;
  TORCH_CHECK(k * q == p, "multiclass posterior of size ", p, " does not split into rows of ", q);
  const at::Tensor onehot64 = at::one_hot(labels.to(at::kLong), k).to(at::kDouble);  // [B, K]
  const at::Tensor mphi = post.mean.reshape({k, q});                  // [K, q]
  const at::Tensor mlogit64 = at::matmul(ht64, mphi.t());             // [B, K]
  const at::Tensor r0_64 = at::softmax(mlogit64, 1) - onehot64;       // [B, K]
  const at::Tensor g0 = at::matmul(r0_64, mphi);                      // [B, q] (last column unused)
  // Posterior covariance Sigma[k, a, l, b] (float64, from the precision's factor).
  const at::Tensor sigma64 = at::cholesky_inverse(post.cholesky[0]).reshape({k, q, k, q});
  // C[i, l, k, a] = Cov(z_{i l}, phi_{k a}) = (Sigma J_i^T)^T: one GEMM over all examples.
  const at::Tensor ht = ht64.to(dt);
  const at::Tensor sig_lkab = sigma64.permute({2, 0, 1, 3}).to(dt).contiguous();  // [K, K, q, q]
  const at::Tensor c = at::matmul(ht, sig_lkab.view({k * k * q, q}).t()).view({b, k, k * q});
  const at::Tensor cov = c.contiguous(), htc = ht.contiguous();
  // Logit covariances Sigma_z[i, l, k] = sum_a C[i, l, k, a] h~_{i a} and their factors.
  at::Tensor sz = at::empty({b, k, k}, at::kDouble);
  AT_DISPATCH_FLOATING_TYPES(dt, "logit_covariances", [&] {
    detail::logit_covariances(cov.data_ptr<scalar_t>(), htc.data_ptr<scalar_t>(), b, k, q,
                              sz.data_ptr<double>());
  });
  const CholeskyResult lz_chol = safe_cholesky(sz, "logit covariance");
  const at::Tensor& lz64 = lz_chol.factor;  // [B, K, K]
  const at::Tensor lz = lz64.to(dt);
  const at::Tensor lz_inv = at::linalg_solve_triangular(
      lz64, at::eye(k, at::kDouble).expand({b, k, k}), /*upper=*/false).to(dt);
  const at::Tensor mlogit = mlogit64.to(dt).unsqueeze(1), onehot = onehot64.to(dt).unsqueeze(1);
  const at::Tensor mphi_t = mphi.to(dt).contiguous(), g0f = g0.to(dt).contiguous();
  const at::Tensor linv = lz_inv.contiguous();
  // Sums over the samples of e = E[g | z] - g0, e^2, the explained variance and r r^T (float64).
  at::Tensor s1 = at::zeros({b, q}, at::kDouble), s2 = at::zeros({b, q}, at::kDouble);
  at::Tensor sx = at::zeros({b, q}, at::kDouble), rr = at::zeros({b, k, k}, at::kDouble);
  const int64_t total = options.rb_samples();
  const bool anti = options.antithetic();
  int64_t chunk = chunk_size(MomentOptions(options).mc_samples(total), 4 * b * (4 * k));
  if (anti) chunk = std::max<int64_t>(2, chunk - chunk % 2);
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t n = std::min(chunk, total - done);
    at::Tensor xi = at::randn({b, anti ? n / 2 : n, k}, gen, at::TensorOptions().dtype(at::kFloat));
    if (xi.scalar_type() != dt) xi = xi.to(dt);
    if (anti) xi = at::cat({xi, -xi}, 1);                               // [B, n, K]
    const at::Tensor z = at::baddbmm(mlogit, xi, lz.transpose(1, 2));   // [B, n, K]
    const at::Tensor r = at::softmax(z, -1).sub_(onehot).contiguous();  // [B, n, K]
    AT_DISPATCH_FLOATING_TYPES(dt, "multiclass_moments_rb", [&] {
      detail::RbChunk<scalar_t> ch;
      ch.batch = b, ch.classes = k, ch.cols = q, ch.samples = n;
      ch.cov = cov.data_ptr<scalar_t>(), ch.linv = linv.data_ptr<scalar_t>();
      ch.xi = xi.data_ptr<scalar_t>(), ch.resid = r.data_ptr<scalar_t>();
      ch.mean = mphi_t.data_ptr<scalar_t>(), ch.g0 = g0f.data_ptr<scalar_t>();
      detail::rb_accumulate(ch, s1.data_ptr<double>(), s2.data_ptr<double>(),
                            sx.data_ptr<double>(), rr.data_ptr<double>());
    });
  }
  const at::Tensor e1 = (s1 / total).narrow(1, 0, d);
  // E[g_j^2 | z] adds r^T V_j r with V_j = Sigma_jj - D_j^T D_j, the weights' covariance given the
  // logits: tr(Sigma_jj E[r r^T]) minus the explained part E||D_j r||^2 accumulated above. The
  // explained part is a small fraction of Sigma_jj (K of the head's K (d + 1) directions), so its
  // float32 arithmetic loses no significant digits in the difference.
  const at::Tensor sjj = sigma64.diagonal(0, 1, 3).narrow(2, 0, d);  // [K, K, d]
  const at::Tensor vfull = at::matmul(rr.view({b, k * k}), sjj.reshape({k * k, d})) / total;
  GradMoments out;
  out.mean = (g0.narrow(1, 0, d) + e1).unsqueeze(1);
  out.var = ((s2 / total).narrow(1, 0, d) - e1.pow(2) + vfull - (sx / total).narrow(1, 0, d))
                .unsqueeze(1);
  out.jitter = lz_chol.jitter;
  return out;
}

GradMoments gradient_moments(const TaskGroup& group, const GaussianPosterior& posterior,
                             const at::Tensor& features, const at::Tensor& labels,
                             MomentEstimator estimator, const MomentOptions& options,
                             at::Generator& generator, const at::Tensor& noise) {
  switch (group.type) {
    case GroupType::regression: return regression_moments(posterior, features, labels, noise);
    case GroupType::binary:
      TORCH_CHECK(estimator != MomentEstimator::rao_blackwell,
                  "the rb estimator applies to multiclass groups only (binary: exact or mc)");
      return estimator == MomentEstimator::exact
                 ? binary_moments_exact(posterior, features, labels, options)
                 : binary_moments_mc(posterior, features, labels, options, generator);
    case GroupType::multiclass:
      if (estimator == MomentEstimator::rao_blackwell) {
        return multiclass_moments_rb(posterior, features, labels, options, generator);
      }
      return multiclass_moments_mc(posterior, features, labels, options, generator);
  }
  TORCH_CHECK(false, "unreachable");
}

}  // namespace bayesagg
