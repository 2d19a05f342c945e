#include "bayesagg/bayes/posterior.h"
#include "bayesagg/core/losses.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

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

/// Rows per chunk so that a chunk's weighted copy of the features stays near 16 MiB: small enough
/// for the heap of a worker thread's malloc arena (64 MiB), so it is reused, not mmap'ed anew.
int64_t rows_per_chunk(int64_t requested, int64_t columns) {
  const int64_t budget = (int64_t{16} << 20) / (8 * std::max<int64_t>(columns, 1));
  return std::max<int64_t>(64, std::min(requested, budget));
}

/// Position of (lo, hi), lo <= hi < n, in the row-major upper triangle (with diagonal) of an n x n
/// matrix: the numbering of multiclass blocks (k, l) and of packed products h~_a h~_b.
int64_t upper_index(int64_t lo, int64_t hi, int64_t n) {
  return lo * n - lo * (lo - 1) / 2 + (hi - lo);
}

/// Positions, in the flattened block sums of `posterior_stats`, of every entry of the K q x K q
/// multiclass GGN: block (k, l) is the sum of pair (min, max); entry (a, b) of a block is product
/// (min, max) in the packed layout [pairs, q (q + 1) / 2] and (a, b) in the wide one [pairs, q, q].
/// Cached per shape: it only depends on (K, q, layout).
at::Tensor multiclass_gather_index(int64_t rows, int64_t q, bool packed) {
  static std::mutex mutex;
  static std::map<std::tuple<int64_t, int64_t, bool>, at::Tensor> cache;
  std::lock_guard<std::mutex> lock(mutex);
  at::Tensor& index = cache[{rows, q, packed}];
  if (index.defined()) return index;
  const int64_t nt = q * (q + 1) / 2, width = packed ? nt : q * q, p = rows * q;
  at::Tensor out = at::empty({p * p}, at::kLong);
  int64_t* ptr = out.data_ptr<int64_t>();
  for (int64_t k = 0; k < rows; ++k) {
    for (int64_t a = 0; a < q; ++a) {
      for (int64_t l = 0; l < rows; ++l) {
        const int64_t pair = upper_index(std::min(k, l), std::max(k, l), rows);
        for (int64_t b = 0; b < q; ++b) {
          *ptr++ = pair * width +
                   (packed ? upper_index(std::min(a, b), std::max(a, b), q) : a * q + b);
        }
      }
    }
  }
  index = out;
  return index;
}

/// Summed loss of the examples at `phi` (classification layouts), float64, in chunks.
double summed_loss(const TaskGroup& group, const at::Tensor& features, const at::Tensor& labels,
                   const at::Tensor& phi, int64_t chunk_rows) {
  const int64_t n = features.size(0), q = features.size(1) + 1;
  const at::Tensor w = phi.reshape({group.outputs, q});
  double total = 0.0;
  const int64_t step = rows_per_chunk(chunk_rows, group.outputs);
  for (int64_t s = 0; s < n; s += step) {
    const int64_t m = std::min(step, n - s);
    const at::Tensor logits = at::matmul(with_bias_column(features.narrow(0, s, m)), w.t());
    if (group.type == GroupType::binary) {
      const at::Tensor y = labels.narrow(0, s, m).to(at::kDouble);
      // BCE with logits, stably: max(z, 0) - z y + log(1 + exp(-|z|)).
      total += (logits.clamp_min(0) - logits * y + at::log1p(at::exp(-logits.abs())))
                   .sum()
                   .item<double>();
    } else {
      const at::Tensor c = labels.narrow(0, s, m).to(at::kLong).unsqueeze(1);
      total += (at::logsumexp(logits, 1) - logits.gather(1, c).squeeze(1)).sum().item<double>();
    }
  }
  return total;
}

}  // namespace

PosteriorCentre parse_posterior_centre(const std::string& name) {
  if (name == "newton") return PosteriorCentre::newton;
  if (name == "head") return PosteriorCentre::head;
  if (name == "mode") return PosteriorCentre::mode;
  TORCH_CHECK(false, "unknown posterior centre '", name, "' (expected newton, head or mode)");
}

std::string to_string(PosteriorCentre centre) {
  switch (centre) {
    case PosteriorCentre::head: return "head";
    case PosteriorCentre::mode: return "mode";
    case PosteriorCentre::newton: break;
  }
  return "newton";
}

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
  const bool multiclass = group.type == GroupType::multiclass;
  const at::Tensor w = phi.reshape({rows, q});  // [rows, d + 1]
  // Every GGN block is a weighted sum sum_i c_i h~_i h~_i^T, with one weight per block and example:
  //   binary:     o blocks, c_i = p_ik (1 - p_ik);
  //   multiclass: block (k, l) has c_i = H_i[k, l] = d_kl p_ik - p_ik p_il. Since the p_i sum to
  //               one, each row of blocks sums to zero, so only the K (K - 1) / 2 sums
  //               O_kl = sum_i p_ik p_il h~_i h~_i^T (k < l) are accumulated: block (k, l) = -O_kl
  //               and block (k, k) = sum_{l != k} O_kl. That is a sixth less arithmetic for K = 10,
  //               and the diagonal blocks come from p_k sum_{l != k} p_l, free of the cancellation
  //               in p_k - p_k^2 when p_k is near one.
  // Two equivalent GEMM layouts:
  //  * wide:   H~^T [c_1 H~ | c_2 H~ | ...]                        (sums x q^2 per row)
  //  * packed: C^T [h~_a h~_b]_{a <= b}, one row per product a <= b (sums x q (q + 1) / 2 per row)
  // Packed does half the arithmetic but streams a q (q + 1) / 2-wide product of every row; it wins
  // when many sums share that product (multiclass) and q is moderate.
  const int64_t ns = multiclass ? rows * (rows - 1) / 2 : rows;
  const bool packed = multiclass && q <= 160;
  const int64_t nt = q * (q + 1) / 2;
  // Multiclass pairs (k, l), k < l, in row-major order of the strict upper triangle.
  std::vector<int64_t> first, second;
  if (multiclass) {
    for (int64_t k = 0; k < rows; ++k) {
      for (int64_t l = k + 1; l < rows; ++l) first.push_back(k), second.push_back(l);
    }
  }
  const at::Tensor pk = at::tensor(first, at::kLong), pl = at::tensor(second, at::kLong);
  at::Tensor sums = packed ? at::zeros({ns, nt}, f64) : at::zeros({q, ns * q}, f64);
  at::Tensor grad = at::zeros({rows, q}, f64);
  at::Tensor products;  // packed: [nt, rows of the chunk], reused across chunks
  const int64_t step = rows_per_chunk(chunk_rows, packed ? nt : ns * q);
  for (int64_t s = 0; s < n; s += step) {
    const int64_t m = std::min(step, n - s);
    const at::Tensor ht = with_bias_column(features.narrow(0, s, m));  // [m, q]
    const at::Tensor logits = at::matmul(ht, w.t());                   // [m, rows]
    at::Tensor resid, weights_t;                                       // [m, rows], [ns, m]
    if (!multiclass) {
      const at::Tensor p = at::sigmoid(logits);
      resid = p - labels.narrow(0, s, m).to(at::kDouble);
      weights_t = (p * (1 - p)).t();
    } else {
      const at::Tensor p = at::softmax(logits, 1);
      resid = p - at::one_hot(labels.narrow(0, s, m).to(at::kLong), rows).to(at::kDouble);
      const at::Tensor pt = p.t().contiguous();  // [K, m]
      weights_t = pt.index_select(0, pk).mul_(pt.index_select(0, pl));
    }
    grad.addmm_(resid.t(), ht);
    if (ns == 0) continue;
    if (packed) {
      // Row a of the products holds h~_a h~_b for b >= a: one broadcast multiply per a.
      const at::Tensor htt = ht.t().contiguous();  // [q, m]
      if (!products.defined() || products.size(1) != m) products = at::empty({nt, m}, f64);
      for (int64_t a = 0, off = 0; a < q; off += q - a, ++a) {
        at::Tensor dst = products.narrow(0, off, q - a);
        at::mul_out(dst, htt.narrow(0, a, q - a), htt.narrow(0, a, 1));
      }
      sums.addmm_(weights_t, products.t());
    } else {
      const at::Tensor z = (weights_t.t().unsqueeze(2) * ht.unsqueeze(1)).reshape({m, ns * q});
      sums.addmm_(ht.t(), z);
    }
  }
  if (!multiclass) {
    stats.curvature = sums.reshape({q, ns, q}).permute({1, 0, 2}).contiguous();
    stats.rhs = grad;
    return stats;
  }
  // One row per sum (pair k < l), in the layout of multiclass_gather_index.
  const at::Tensor off =
      packed ? sums : sums.reshape({q, ns, q}).permute({1, 0, 2}).reshape({ns, q * q});
  // Blocks (k, l), k <= l, rows of the upper triangle: -O_kl off the diagonal, sums on it.
  const int64_t nb = rows * (rows + 1) / 2;
  std::vector<int64_t> off_block, diag_block, diag_source;
  for (int64_t j = 0; j < ns; ++j) {
    off_block.push_back(upper_index(first[j], second[j], rows));
    diag_block.push_back(upper_index(first[j], first[j], rows));
    diag_block.push_back(upper_index(second[j], second[j], rows));
    diag_source.push_back(j);
    diag_source.push_back(j);
  }
  at::Tensor blocks = at::zeros({nb, off.size(1)}, f64);
  if (ns > 0) {
    blocks.index_copy_(0, at::tensor(off_block, at::kLong), off.neg());
    blocks.index_add_(0, at::tensor(diag_block, at::kLong),
                      off.index_select(0, at::tensor(diag_source, at::kLong)));
  }
  // The K q x K q precision gathers every entry from its block (min, max) (each block is
  // symmetric) in one pass.
  stats.curvature = blocks.view({-1})
                        .index_select(0, multiclass_gather_index(rows, q, packed))
                        .view({1, rows * q, rows * q});
  stats.rhs = grad.reshape({1, rows * q});
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

double posterior_objective(const TaskGroup& group, const GaussianPosterior& prior,
                           const at::Tensor& features, const at::Tensor& labels,
                           const at::Tensor& phi, int64_t chunk_rows) {
  TORCH_CHECK(group.is_classification(), "posterior_objective is for classification groups, got ",
              group.str());
  TORCH_CHECK(phi.sizes() == prior.mean.sizes(), "phi of ", group.str(), " must have shape ",
              prior.mean.sizes(), ", got ", phi.sizes());
  const at::Tensor dev = (phi - prior.mean).unsqueeze(-1);  // [blocks, p, 1]
  const double penalty =
      0.5 * at::matmul(dev.transpose(-2, -1), at::matmul(prior.precision, dev)).sum().item<double>();
  return summed_loss(group, features, labels, phi, chunk_rows) + penalty;
}

ModeResult posterior_mode(const TaskGroup& group, const GaussianPosterior& prior,
                          const at::Tensor& features, const at::Tensor& labels,
                          const at::Tensor& phi, const ModeOptions& options,
                          const CholeskyOptions& cholesky, int64_t chunk_rows) {
  TORCH_CHECK(options.max_iterations() >= 1 && options.max_halvings() >= 0 &&
                  options.tolerance() >= 0,
              "ModeOptions: max_iterations must be >= 1, max_halvings and tolerance >= 0, got ",
              options.max_iterations(), ", ", options.max_halvings(), ", ", options.tolerance());
  ModeResult out;
  if (!group.is_classification()) {
    out.posterior = posterior_update(group, prior, posterior_stats(group, features, labels, phi,
                                                                   chunk_rows),
                                     phi, cholesky);
    out.converged = true;
    return out;
  }
  at::Tensor x = phi.to(at::kDouble).contiguous();
  double j = posterior_objective(group, prior, features, labels, x, chunk_rows);
  out.objective.push_back(j);
  for (;;) {
    const PosteriorStats st = posterior_stats(group, features, labels, x, chunk_rows);
    GaussianPosterior step = posterior_update(group, prior, st, x, cholesky);
    const at::Tensor dir = step.mean - x;  // -Lambda^-1 a
    const at::Tensor a =
        st.rhs + at::matmul(prior.precision, (x - prior.mean).unsqueeze(-1)).squeeze(-1);
    const double slope = (a * dir).sum().item<double>();  // a^T dir = -a^T Lambda^-1 a <= 0
    step.mean = x;  // the posterior at the accepted point
    out.posterior = step;
    if (-0.5 * slope <= options.tolerance() * (1.0 + std::abs(j))) {
      out.converged = true;
      break;
    }
    if (out.iterations == options.max_iterations()) break;
    // Backtracking: the largest t = 2^-k with J(x + t dir) <= J(x) + 1e-4 t a^T dir.
    double t = 1.0, candidate = j;
    bool accepted = false;
    for (int64_t k = 0; k <= options.max_halvings(); ++k, t *= 0.5) {
      candidate = posterior_objective(group, prior, features, labels, x + t * dir, chunk_rows);
      if (std::isfinite(candidate) && candidate <= j + 1e-4 * t * slope) {
        accepted = true;
        break;
      }
    }
    if (!accepted) break;  // no decrease along the Newton direction: x is as good as it gets
    x = (x + t * dir).contiguous();
    j = candidate;
    out.objective.push_back(j);
    ++out.iterations;
  }
  return out;
}

at::Tensor task_noise(const TaskGroup& group, const at::Tensor& features, const at::Tensor& labels,
                      const Head& head, double floor) {
  TORCH_CHECK(features.dim() == 2 && features.size(0) == labels.size(0),
              "task_noise: expected features [N, d] and labels with N rows, got ", features.sizes(),
              " and ", labels.sizes());
  TORCH_CHECK(features.size(0) >= 1, "task_noise needs at least one example");
  TORCH_CHECK(floor > 0, "task_noise: floor must be > 0, got ", floor);
  const Head h64{head.weight.detach().to(at::kDouble),
                 head.bias.defined() ? head.bias.detach().to(at::kDouble) : at::Tensor()};
  const at::Tensor y = group.type == GroupType::multiclass ? labels : labels.to(at::kDouble);
  return task_losses(group, head_forward(h64, features.to(at::kDouble)), y).clamp_min(floor);
}

namespace {

/// Mean of log(noise) over the defined entries of the groups `pick` selects; nullopt if none.
template <class Pick>
std::optional<double> mean_log_noise(const std::vector<TaskGroup>& groups,
                                     const std::vector<at::Tensor>& noise, Pick pick) {
  std::vector<at::Tensor> logs;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (!pick(groups[g]) || !noise[g].defined()) continue;
    TORCH_CHECK((noise[g] > 0).all().item<bool>(),
                "normalise_per_loss: noise estimates must be positive, got ", noise[g]);
    logs.push_back(noise[g].to(at::kDouble).log().flatten());
  }
  if (logs.empty()) return std::nullopt;
  return at::cat(logs).mean().item<double>();
}

}  // namespace

std::vector<at::Tensor> normalise_per_loss(const std::vector<TaskGroup>& groups,
                                           const std::vector<at::Tensor>& noise,
                                           bool keep_overall_scale) {
  TORCH_CHECK(noise.size() == groups.size(), "normalise_per_loss: expected ", groups.size(),
              " noise tensors, got ", noise.size());
  const std::optional<double> log_all =
      mean_log_noise(groups, noise, [](const TaskGroup&) { return true; });
  std::vector<at::Tensor> out = noise;
  for (GroupType type : {GroupType::regression, GroupType::binary, GroupType::multiclass}) {
    const std::optional<double> log_type =
        mean_log_noise(groups, noise, [type](const TaskGroup& g) { return g.type == type; });
    if (!log_type) continue;
    // A single type: log_all and log_type are the same sum in the same order, the divisor 1.
    const double divisor = std::exp(*log_type - (keep_overall_scale ? *log_all : 0.0));
    for (size_t g = 0; g < groups.size(); ++g) {
      if (groups[g].type == type && noise[g].defined()) out[g] = noise[g] / divisor;
    }
  }
  return out;
}

}  // namespace bayesagg
