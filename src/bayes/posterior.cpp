#include "bayesagg/bayes/posterior.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace bayesagg {
namespace {

int64_t block_size(const TaskGroup& group, int64_t dim) {
  switch (group.type) {
    case GroupType::regression: return dim;
    case GroupType::binary: return dim + 1;
    case GroupType::multiclass: return group.outputs * (dim + 1);
  }
  return 0;
}

int64_t num_blocks(const TaskGroup& group) {
  return group.type == GroupType::binary ? group.outputs : 1;
}

int64_t mean_rows(const TaskGroup& group) {
  return group.type == GroupType::multiclass ? 1 : group.outputs;
}

/// [n, d] -> [n, d + 1] with a trailing column of ones, float64.
at::Tensor with_bias_column(const at::Tensor& h) {
  return at::cat({h.to(at::kDouble), at::ones({h.size(0), 1}, h.options().dtype(at::kDouble))}, 1);
}

/// Rows per chunk so that a chunk's weighted copy of the features stays near 64 MiB.
int64_t rows_per_chunk(int64_t requested, int64_t columns) {
  const int64_t budget = (int64_t{64} << 20) / (8 * std::max<int64_t>(columns, 1));
  return std::max<int64_t>(64, std::min(requested, budget));
}

}  // namespace

at::Tensor GaussianPosterior::covariance() const {
  TORCH_CHECK(cholesky.defined(), "posterior has no Cholesky factor");
  return at::cholesky_inverse(cholesky);
}

at::Tensor GaussianPosterior::covariance_diagonal() const {
  return covariance().diagonal(0, -2, -1);
}

void PosteriorStats::add_(const PosteriorStats& other) {
  if (!curvature.defined()) {
    *this = other;
    curvature = other.curvature.clone();
    rhs = other.rhs.clone();
    return;
  }
  TORCH_CHECK(curvature.sizes() == other.curvature.sizes() && rhs.sizes() == other.rhs.sizes(),
              "cannot add posterior statistics of shapes ", other.curvature.sizes(), " to ",
              curvature.sizes());
  curvature.add_(other.curvature);
  rhs.add_(other.rhs);
  count += other.count;
}

at::Tensor head_parameters(const TaskGroup& group, const Head& head) {
  TORCH_CHECK(head.weight.defined() && head.weight.dim() == 2 &&
                  head.weight.size(0) == group.head_rows(),
              "head of ", group.str(), ": weight must have shape [", group.head_rows(),
              ", d], got ", head.weight.defined() ? head.weight.sizes() : at::IntArrayRef{});
  const at::Tensor w = head.weight.detach().to(at::kDouble);
  if (group.type == GroupType::regression) return w.contiguous();
  TORCH_CHECK(head.bias.defined() && head.bias.dim() == 1 && head.bias.size(0) == group.head_rows(),
              "head of ", group.str(), ": bias must have shape [", group.head_rows(), "]");
  at::Tensor phi = at::cat({w, head.bias.detach().to(at::kDouble).unsqueeze(1)}, 1);
  if (group.type == GroupType::multiclass) phi = phi.reshape({1, -1});
  return phi.contiguous();
}

GaussianPosterior isotropic_prior(const TaskGroup& group, int64_t dim, double gamma) {
  TORCH_CHECK(gamma > 0, "prior variance gamma must be > 0, got ", gamma);
  TORCH_CHECK(dim >= 1, "representation dimension must be >= 1, got ", dim);
  const int64_t p = block_size(group, dim);
  const int64_t nb = num_blocks(group);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  GaussianPosterior prior;
  prior.mean = at::zeros({mean_rows(group), p}, opts);
  prior.precision = (at::eye(p, opts) / gamma).expand({nb, p, p}).contiguous();
  prior.cholesky = (at::eye(p, opts) / std::sqrt(gamma)).expand({nb, p, p}).contiguous();
  return prior;
}

PosteriorStats posterior_stats(const TaskGroup& group, const at::Tensor& features,
                               const at::Tensor& labels, const at::Tensor& phi,
                               int64_t chunk_rows) {
  TORCH_CHECK(features.dim() == 2, "features must be [N, d], got ", features.sizes());
  TORCH_CHECK(chunk_rows >= 1, "chunk_rows must be >= 1, got ", chunk_rows);
  const int64_t n = features.size(0);
  const int64_t d = features.size(1);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  PosteriorStats stats;
  stats.count = n;

  if (group.type == GroupType::regression) {
    stats.curvature = at::zeros({1, d, d}, f64);
    stats.rhs = at::zeros({d, group.outputs}, f64);
    const int64_t step = rows_per_chunk(chunk_rows * 4, d);
    for (int64_t s = 0; s < n; s += step) {
      const at::Tensor h = features.narrow(0, s, std::min(step, n - s)).to(at::kDouble);
      const at::Tensor y = labels.narrow(0, s, h.size(0)).to(at::kDouble);
      stats.curvature[0].addmm_(h.t(), h);
      stats.rhs.addmm_(h.t(), y);
    }
    return stats;
  }

  const int64_t q = d + 1;
  TORCH_CHECK(phi.defined() && phi.dim() == 2 && phi.size(1) == block_size(group, d),
              "expansion point of ", group.str(), " must have shape [", mean_rows(group), ", ",
              block_size(group, d), "], got ", phi.defined() ? phi.sizes() : at::IntArrayRef{});
  const int64_t rows = group.outputs;  // o tasks or K classes
  const at::Tensor w = phi.reshape({rows, q});  // [rows, d + 1]

  // Pairs (k, l), k <= l, whose weight vectors form the GGN blocks. Binary: only (k, k).
  std::vector<std::pair<int64_t, int64_t>> pairs;
  if (group.type == GroupType::binary) {
    for (int64_t k = 0; k < rows; ++k) pairs.emplace_back(k, k);
  } else {
    for (int64_t k = 0; k < rows; ++k)
      for (int64_t l = k; l < rows; ++l) pairs.emplace_back(k, l);
  }
  const int64_t np = static_cast<int64_t>(pairs.size());
  at::Tensor pk = at::empty({np}, at::kLong), pl = at::empty({np}, at::kLong);
  for (int64_t i = 0; i < np; ++i) {
    pk[i] = pairs[i].first;
    pl[i] = pairs[i].second;
  }
  // Two equivalent GEMM layouts for the blocks sum_i w_i,kl h~_i h~_i^T:
  //  * wide:      H~^T [w_1 H~ | w_2 H~ | ...]           (np q^2 multiply-adds per row)
  //  * symmetric: W^T [h~_a h~_b]_{a <= b}                (np q (q + 1) / 2 per row)
  // The symmetric one does half the arithmetic but streams a q(q+1)/2-wide product of every row;
  // it wins when many pairs share that product (multiclass) and q is moderate.
  const bool symmetric = group.type == GroupType::multiclass && q <= 160;
  const at::Tensor tri = at::triu_indices(q, q, 0, at::kLong);  // [2, q (q + 1) / 2]
  const int64_t nt = tri.size(1);
  at::Tensor blocks = symmetric ? at::zeros({np, nt}, f64) : at::zeros({q, np * q}, f64);
  at::Tensor grad = at::zeros({rows, q}, f64);
  const int64_t step = rows_per_chunk(chunk_rows, symmetric ? nt : np * q);
  for (int64_t s = 0; s < n; s += step) {
    const int64_t m = std::min(step, n - s);
    const at::Tensor ht = with_bias_column(features.narrow(0, s, m));  // [m, q]
    const at::Tensor logits = at::matmul(ht, w.t());                   // [m, rows]
    at::Tensor resid, weights;                                         // [m, rows], [m, np]
    if (group.type == GroupType::binary) {
      const at::Tensor p = at::sigmoid(logits);
      resid = p - labels.narrow(0, s, m).to(at::kDouble);
      weights = p * (1 - p);
    } else {
      const at::Tensor p = at::softmax(logits, 1);
      const at::Tensor onehot =
          at::one_hot(labels.narrow(0, s, m).to(at::kLong), rows).to(at::kDouble);
      resid = p - onehot;
      // H_i[k, l] = delta_kl p_k - p_k p_l
      const at::Tensor a = p.index_select(1, pk), b = p.index_select(1, pl);
      weights = at::where((pk == pl).unsqueeze(0), a, at::zeros_like(a)) - a * b;
    }
    grad.addmm_(resid.t(), ht);
    if (symmetric) {
      const at::Tensor outer = ht.index_select(1, tri[0]) * ht.index_select(1, tri[1]);  // [m, nt]
      blocks.addmm_(weights.t(), outer);
    } else {
      const at::Tensor z = (weights.unsqueeze(2) * ht.unsqueeze(1)).reshape({m, np * q});
      blocks.addmm_(ht.t(), z);
    }
  }
  at::Tensor pair_blocks;  // [np, q, q]
  if (symmetric) {
    // Gather each full q x q block from its packed upper triangle (row-major, a <= b).
    at::Tensor pos = at::empty({q, q}, at::kLong);
    int64_t* pp = pos.data_ptr<int64_t>();
    for (int64_t a = 0; a < q; ++a) {
      for (int64_t c = 0; c < q; ++c) {
        const int64_t lo = std::min(a, c), hi = std::max(a, c);
        pp[a * q + c] = lo * q - lo * (lo - 1) / 2 + (hi - lo);
      }
    }
    pair_blocks = blocks.index_select(1, pos.view({-1})).view({np, q, q});
  } else {
    pair_blocks = blocks.reshape({q, np, q}).permute({1, 0, 2});
  }
  if (group.type == GroupType::binary) {
    stats.curvature = pair_blocks.contiguous();
    stats.rhs = grad;
  } else {
    // Block (k, l) of the precision is pair (min, max)'s block (each is symmetric).
    at::Tensor pidx = at::empty({rows * rows}, at::kLong);
    int64_t* pi = pidx.data_ptr<int64_t>();
    for (int64_t k = 0; k < rows; ++k) {
      for (int64_t l = 0; l < rows; ++l) {
        const int64_t lo = std::min(k, l), hi = std::max(k, l);
        pi[k * rows + l] = lo * rows - lo * (lo - 1) / 2 + (hi - lo);
      }
    }
    stats.curvature = pair_blocks.index_select(0, pidx)
                          .view({rows, rows, q, q})
                          .permute({0, 2, 1, 3})
                          .reshape({1, rows * q, rows * q});
    stats.rhs = grad.reshape({1, rows * q});
  }
  return stats;
}

GaussianPosterior posterior_update(const TaskGroup& group, const GaussianPosterior& prior,
                                   const PosteriorStats& stats, const at::Tensor& phi,
                                   const CholeskyOptions& cholesky) {
  TORCH_CHECK(prior.defined() && stats.curvature.defined(),
              "posterior_update needs a prior and statistics");
  TORCH_CHECK(prior.precision.sizes() == stats.curvature.sizes(), "prior precision ",
              prior.precision.sizes(), " does not match the statistics' curvature ",
              stats.curvature.sizes(), " for group ", group.str());
  GaussianPosterior post;
  post.precision = prior.precision + stats.curvature;
  auto chol = safe_cholesky(post.precision, "posterior precision", cholesky);
  post.cholesky = chol.factor;
  post.jitter = chol.jitter;
  if (group.type == GroupType::regression) {
    // [d, o] right-hand side: Lambda0 M0^T + H^T Y
    const at::Tensor rhs = at::matmul(prior.precision[0], prior.mean.t()) + stats.rhs;
    post.mean = at::cholesky_solve(rhs, post.cholesky[0]).t().contiguous();
  } else {
    TORCH_CHECK(phi.defined() && phi.sizes() == prior.mean.sizes(), "expansion point of ",
                group.str(), " must have shape ", prior.mean.sizes());
    // a = g + Lambda0 (phi - M0), per block
    const at::Tensor a =
        stats.rhs + at::matmul(prior.precision, (phi - prior.mean).unsqueeze(-1)).squeeze(-1);
    post.mean = (phi - at::cholesky_solve(a.unsqueeze(-1), post.cholesky).squeeze(-1)).contiguous();
  }
  return post;
}

}  // namespace bayesagg
