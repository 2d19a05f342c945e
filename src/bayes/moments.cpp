#include "bayesagg/bayes/moments.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace bayesagg {
namespace {

at::Tensor with_bias_column(const at::Tensor& h) {
  return at::cat({h, at::ones({h.size(0), 1}, h.options())}, 1);
}

/// Samples [blocks, p, n] from each block's N(mean, precision^-1): mean + L^-T z.
at::Tensor sample_blocks(const GaussianPosterior& post, int64_t n, at::Generator& gen) {
  const int64_t nb = post.cholesky.size(0), p = post.cholesky.size(1);
  TORCH_CHECK(post.mean.size(0) == nb, "sampling needs one mean row per block");
  // Normals are drawn in float32 (LibTorch's vectorised path, ~10x faster than float64) and
  // widened: their rounding (2^-24) is far below any Monte-Carlo error.
  const at::Tensor z = at::randn({nb, p, n}, gen, at::TensorOptions().dtype(at::kFloat)).to(at::kDouble);
  const at::Tensor x = at::linalg_solve_triangular(post.cholesky.transpose(-2, -1), z,
                                                   /*upper=*/true);
  return x + post.mean.unsqueeze(-1);
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
  TORCH_CHECK(false, "unknown moment estimator '", name, "' (expected mc or exact)");
}

std::string to_string(MomentEstimator e) {
  return e == MomentEstimator::exact ? "exact" : "mc";
}

at::Tensor sample_posterior(const GaussianPosterior& posterior, int64_t n, at::Generator& gen) {
  TORCH_CHECK(n >= 1, "number of samples must be >= 1, got ", n);
  return sample_blocks(posterior, n, gen).permute({2, 0, 1}).contiguous();
}

GradMoments regression_moments(const GaussianPosterior& post, const at::Tensor& features,
                               const at::Tensor& labels) {
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
  GradMoments out;
  out.mean = 2 * (c3 + r3 * m3);
  out.var = 4 * ((r3.pow(2) + q.view({-1, 1, 1})) * sjj + q.view({-1, 1, 1}) * m3.pow(2) +
                 2 * r3 * m3 * c3 + c3.pow(2));
  return out;
}

GradMoments binary_moments_mc(const GaussianPosterior& post, const at::Tensor& features,
                              const at::Tensor& labels, const MomentOptions& options,
                              at::Generator& gen) {
  check_mc(options);
  const at::Tensor ht = with_bias_column(features.to(at::kDouble));  // [B, q]
  const int64_t b = ht.size(0), q = ht.size(1), d = q - 1, o = post.mean.size(0);
  const at::Tensor yt = labels.to(at::kDouble).t().unsqueeze(-1);  // [o, B, 1]
  at::Tensor sum_g = at::zeros({o, b, d}, at::kDouble), sum_g2 = at::zeros({o, b, d}, at::kDouble);
  const int64_t total = options.mc_samples();
  const int64_t chunk = chunk_size(options, 8 * o * (3 * b + 2 * q));
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t n = std::min(chunk, total - done);
    const at::Tensor smp = sample_blocks(post, n, gen);            // [o, q, n]
    const at::Tensor f = at::sigmoid(at::matmul(ht, smp)) - yt;    // [o, B, n]
    const at::Tensor w = smp.narrow(1, 0, d).transpose(1, 2);      // [o, n, d]
    sum_g.add_(at::matmul(f, w));
    sum_g2.add_(at::matmul(f.pow(2), w.pow(2)));
  }
  GradMoments out;
  out.mean = (sum_g / total).permute({1, 0, 2}).contiguous();
  out.var = (sum_g2 / total).permute({1, 0, 2}) - out.mean.pow(2);
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
  const at::Tensor ht = with_bias_column(features.to(at::kDouble));  // [B, q]
  const int64_t b = ht.size(0), q = ht.size(1), d = q - 1;
  const int64_t k = post.mean.size(1) / q;
  TORCH_CHECK(k * q == post.mean.size(1), "multiclass posterior of size ", post.mean.size(1),
              " does not split into rows of ", q);
  const at::Tensor onehot = at::one_hot(labels.to(at::kLong), k).to(at::kDouble);  // [B, K]
  at::Tensor sum_g = at::zeros({b, d}, at::kDouble), sum_g2 = at::zeros({b, d}, at::kDouble);
  const int64_t total = options.mc_samples();
  const int64_t chunk = chunk_size(options, 8 * (2 * b * d + 2 * b * k + k * q));
  for (int64_t done = 0; done < total; done += chunk) {
    const int64_t n = std::min(chunk, total - done);
    const at::Tensor smp = sample_blocks(post, n, gen)[0].t().reshape({n, k, q});  // [n, K, q]
    const at::Tensor r = at::softmax(at::matmul(ht, smp.transpose(1, 2)), -1) - onehot;  // [n,B,K]
    const at::Tensor g = at::matmul(r, smp.narrow(2, 0, d));  // [n, B, d]
    sum_g.add_(g.sum(0));
    sum_g2.add_(g.pow(2).sum(0));
  }
  GradMoments out;
  out.mean = (sum_g / total).unsqueeze(1);
  out.var = (sum_g2 / total).unsqueeze(1) - out.mean.pow(2);
  return out;
}

GradMoments gradient_moments(const TaskGroup& group, const GaussianPosterior& posterior,
                             const at::Tensor& features, const at::Tensor& labels,
                             MomentEstimator estimator, const MomentOptions& options,
                             at::Generator& generator) {
  switch (group.type) {
    case GroupType::regression: return regression_moments(posterior, features, labels);
    case GroupType::binary:
      return estimator == MomentEstimator::exact
                 ? binary_moments_exact(posterior, features, labels, options)
                 : binary_moments_mc(posterior, features, labels, options, generator);
    case GroupType::multiclass:
      return multiclass_moments_mc(posterior, features, labels, options, generator);
  }
  TORCH_CHECK(false, "unreachable");
}

}  // namespace bayesagg
