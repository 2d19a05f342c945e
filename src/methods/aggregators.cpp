#include "bayesagg/methods/aggregators.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

namespace bayesagg {
namespace {

at::Tensor as_matrix(const at::Tensor& G, const char* who) {
  TORCH_CHECK(G.defined() && G.dim() == 2 && G.size(0) >= 1,
              who, ": expected a gradient matrix [T, P] with T >= 1, got ",
              G.defined() ? G.sizes() : at::IntArrayRef{});
  return G.to(at::kDouble).contiguous();
}

at::Tensor to_tensor(const std::vector<double>& v) {
  return at::from_blob(const_cast<double*>(v.data()), {static_cast<int64_t>(v.size())},
                       at::kDouble)
      .clone();
}

std::vector<double> to_vector(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous().cpu();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

GradientAggregate weighted(const at::Tensor& G, const std::vector<double>& w, SolveReport report) {
  GradientAggregate out;
  out.weights = to_tensor(w);
  out.direction = at::matmul(out.weights, G);
  out.solve = std::move(report);
  return out;
}

double max_diag(const DenseMatrix& A) {
  double m = 0.0;
  for (int64_t i = 0; i < A.n; ++i) m = std::max(m, A(i, i));
  return m;
}

std::string fmt(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

DenseMatrix gram_matrix(const at::Tensor& G) {
  const at::Tensor g = as_matrix(G, "gram_matrix");
  const at::Tensor a = at::mm(g, g.t()).contiguous();
  const int64_t n = g.size(0);
  DenseMatrix out(n);
  const double* p = a.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) out(i, j) = 0.5 * (p[i * n + j] + p[j * n + i]);
  }
  return out;
}

// ---------------------------------------------------------------- MGDA

std::vector<double> min_norm_weights(const DenseMatrix& gram, const SolverOptions& options,
                                     SolveReport* report) {
  const int64_t n = gram.n;
  SolveReport local;
  std::vector<double> w(static_cast<size_t>(n), 1.0 / static_cast<double>(n));
  const double scale = max_diag(gram);
  if (!(scale > 0.0)) {
    // All gradients vanish: every point of the simplex is a minimiser.
    local.converged = std::isfinite(scale) || scale == 0.0;
    if (!local.converged) local.message = "the Gram matrix is not finite";
    if (report) *report = local;
    return w;
  }
  DenseMatrix Q(n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) Q(i, j) = gram(i, j) / scale;
    Q(i, i) += 1e-12;
  }
  local = active_set_qp(Q, std::vector<double>(static_cast<size_t>(n), 0.0),
                        std::vector<double>(static_cast<size_t>(n), 0.0), true, w, options);
  if (report) *report = local;
  return w;
}

GradientAggregate mgda(const at::Tensor& G, const MgdaOptions& options) {
  const at::Tensor g = as_matrix(G, "mgda");
  SolveReport report;
  std::vector<double> w = min_norm_weights(gram_matrix(g), options.solver(), &report);
  if (options.scale_by_tasks()) {
    for (double& v : w) v *= static_cast<double>(g.size(0));
  }
  return weighted(g, w, report);
}

// ---------------------------------------------------------------- PCGrad

GradientAggregate pcgrad(const at::Tensor& G, at::Generator& generator,
                         const PcGradOptions& options) {
  const at::Tensor g = as_matrix(G, "pcgrad");
  const int64_t T = g.size(0);
  const DenseMatrix A = gram_matrix(g);
  std::vector<double> total(static_cast<size_t>(T), 0.0);
  for (int64_t i = 0; i < T; ++i) {
    // g_i' = sum_k coef_k g_k, so g_i'.g_j = sum_k coef_k A_kj.
    std::vector<double> coef(static_cast<size_t>(T), 0.0);
    coef[static_cast<size_t>(i)] = 1.0;
    const at::Tensor order = at::randperm(T, generator, at::kLong);
    const int64_t* o = order.data_ptr<int64_t>();
    for (int64_t k = 0; k < T; ++k) {
      const int64_t j = o[k];
      double dot = 0.0;
      for (int64_t m = 0; m < T; ++m) dot += coef[static_cast<size_t>(m)] * A(m, j);
      if (dot < 0.0 && A(j, j) > 0.0) coef[static_cast<size_t>(j)] -= dot / A(j, j);
    }
    for (int64_t m = 0; m < T; ++m) total[static_cast<size_t>(m)] += coef[static_cast<size_t>(m)];
  }
  if (options.mean()) {
    for (double& v : total) v /= static_cast<double>(T);
  }
  return weighted(g, total, {});
}

// ---------------------------------------------------------------- GradDrop

GradientAggregate graddrop(const at::Tensor& G, at::Generator& generator,
                           const GradDropOptions& options, const at::Tensor& inputs) {
  TORCH_CHECK(G.defined() && (G.dim() == 2 || G.dim() == 3) && G.size(0) >= 1,
              "graddrop: expected gradients [T, P] or [T, B, d]");
  TORCH_CHECK(options.leak() >= 0.0 && options.leak() <= 1.0, "graddrop: leak must be in [0, 1], got ",
              options.leak());
  const at::Tensor g = G.to(at::kDouble);
  at::Tensor S;
  if (g.dim() == 3) {
    if (inputs.defined()) {
      TORCH_CHECK(inputs.dim() == 2 && inputs.size(0) == g.size(1) && inputs.size(1) == g.size(2),
                  "graddrop: inputs must be [B, d] = [", g.size(1), ", ", g.size(2), "], got ",
                  inputs.sizes());
      S = (g * at::sign(inputs.to(at::kDouble)).unsqueeze(0)).sum(1);
    } else {
      S = g.sum(1);
    }
  } else {
    S = g;
  }
  const at::Tensor purity = 0.5 * (1.0 + S.sum(0) / (S.abs().sum(0) + 1e-7));
  const at::Tensor U = at::rand(purity.sizes(), generator, at::kDouble);
  const at::Tensor keep =
      (at::gt(purity, U).unsqueeze(0) & at::gt(S, 0.0)) | (at::lt(purity, U).unsqueeze(0) & at::lt(S, 0.0));
  at::Tensor mask = options.leak() + (1.0 - options.leak()) * keep.to(at::kDouble);
  if (g.dim() == 3) mask = mask.unsqueeze(1);
  GradientAggregate out;
  out.direction = (g * mask).sum(0).reshape({-1});
  return out;
}

// ---------------------------------------------------------------- CAGrad

double cagrad_dual_objective(const DenseMatrix& A, const std::vector<double>& w, double c,
                             double eps) {
  const int64_t n = A.n;
  double lin = 0.0, quad = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double ab = 0.0, aw = 0.0;
    for (int64_t j = 0; j < n; ++j) {
      ab += A(i, j) / static_cast<double>(n);
      aw += A(i, j) * w[static_cast<size_t>(j)];
    }
    lin += w[static_cast<size_t>(i)] * ab;
    quad += w[static_cast<size_t>(i)] * aw;
  }
  return lin + c * std::sqrt(std::max(quad, 0.0) + eps);
}

std::vector<double> cagrad_dual_weights(const DenseMatrix& A, double c, double eps,
                                        const SolverOptions& options, SolveReport* report) {
  const int64_t n = A.n;
  TORCH_CHECK(n >= 1, "cagrad: empty problem");
  TORCH_CHECK(c >= 0.0 && eps > 0.0, "cagrad: needs c >= 0 and eps > 0");
  SolveReport local;
  std::vector<double> u(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) u[static_cast<size_t>(i)] += A(i, j) / static_cast<double>(n);
  }
  const double ridge = 1e-12 * std::max(max_diag(A), 1e-300);
  const auto quad = [&](const std::vector<double>& w) {
    double q = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) q += w[static_cast<size_t>(i)] * A(i, j) * w[static_cast<size_t>(j)];
    }
    return std::max(q, 0.0) + eps;
  };
  // w(s) = argmin_w u^T w + c (w^T A w) / (2 s) over the simplex.
  int64_t qp_failures = 0;
  std::string qp_message;
  const auto inner = [&](double s, std::vector<double>& w) {
    DenseMatrix Q(n);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) Q(i, j) = c / s * A(i, j);
      Q(i, i) += c / s * ridge;
    }
    const SolveReport r = active_set_qp(Q, u, std::vector<double>(static_cast<size_t>(n), 0.0),
                                        true, w, options);
    if (!r.converged) {
      ++qp_failures;
      qp_message = r.message;
    }
  };
  std::vector<double> w(static_cast<size_t>(n), 1.0 / static_cast<double>(n));
  if (c == 0.0 || !(max_diag(A) > 0.0)) {
    // The objective is linear (or zero): the best vertex; every s gives the same w.
    inner(1.0, w);
  } else {
    double lo = std::sqrt(eps), hi = std::sqrt(max_diag(A) + eps);
    int64_t it = 0;
    for (; it < 200 && hi - lo > 1e-13 * hi; ++it) {
      const double s = 0.5 * (lo + hi);
      inner(s, w);
      if (s * s < quad(w)) {
        lo = s;
      } else {
        hi = s;
      }
    }
    local.iterations = it;
    inner(0.5 * (lo + hi), w);
  }
  // Certificate: the Frank-Wolfe gap of F(w) = u^T w + c sqrt(w^T A w + eps).
  const double root = std::sqrt(quad(w));
  std::vector<double> grad(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double aw = 0.0;
    for (int64_t j = 0; j < n; ++j) aw += A(i, j) * w[static_cast<size_t>(j)];
    grad[static_cast<size_t>(i)] = u[static_cast<size_t>(i)] + c * aw / root;
  }
  double inner_product = 0.0, gmin = grad[0];
  for (int64_t i = 0; i < n; ++i) {
    inner_product += grad[static_cast<size_t>(i)] * w[static_cast<size_t>(i)];
    gmin = std::min(gmin, grad[static_cast<size_t>(i)]);
  }
  const double value = cagrad_dual_objective(A, w, c, eps);
  local.residual = std::max(0.0, inner_product - gmin) / (1.0 + std::abs(value));
  local.converged = qp_failures == 0 && local.residual <= options.tolerance();
  if (qp_failures > 0) {
    local.message = "inner simplex QP failed " + std::to_string(qp_failures) + " time(s): " + qp_message;
  } else if (!local.converged) {
    local.message = "Frank-Wolfe gap " + fmt(local.residual) + " above the tolerance " +
                    fmt(options.tolerance());
  }
  if (report) *report = local;
  return w;
}

GradientAggregate cagrad(const at::Tensor& G, const CaGradOptions& options) {
  TORCH_CHECK(options.c() >= 0.0, "cagrad: c must be >= 0, got ", options.c());
  TORCH_CHECK(options.rescale() >= 0 && options.rescale() <= 2, "cagrad: rescale must be 0, 1 or 2");
  const at::Tensor g = as_matrix(G, "cagrad");
  const int64_t T = g.size(0);
  const DenseMatrix A = gram_matrix(g);
  double mean = 0.0;
  for (double v : A.a) mean += v;
  mean /= static_cast<double>(T * T);
  const double g0_norm = std::sqrt(std::max(mean, 0.0) + 1e-8);
  const double c = options.c() * g0_norm + 1e-8;
  SolveReport report;
  const std::vector<double> w = cagrad_dual_weights(A, c, options.eps(), options.solver(), &report);
  double gw2 = 0.0;
  for (int64_t i = 0; i < T; ++i) {
    for (int64_t j = 0; j < T; ++j) gw2 += w[static_cast<size_t>(i)] * A(i, j) * w[static_cast<size_t>(j)];
  }
  const double lambda = c / (std::sqrt(std::max(gw2, 0.0)) + 1e-8);
  double divide = 1.0;
  if (options.rescale() == 1) divide = 1.0 + options.c() * options.c();
  if (options.rescale() == 2) divide = 1.0 + options.c();
  const double times = options.scale_by_tasks() ? static_cast<double>(T) : 1.0;
  std::vector<double> weights(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    weights[static_cast<size_t>(i)] =
        times * (1.0 / static_cast<double>(T) + lambda * w[static_cast<size_t>(i)]) / divide;
  }
  return weighted(g, weights, report);
}

// ---------------------------------------------------------------- IMTL-G

GradientAggregate imtlg(const at::Tensor& G, const ImtlGOptions& options) {
  const at::Tensor g = as_matrix(G, "imtlg");
  const int64_t T = g.size(0);
  if (T == 1) return weighted(g, {1.0}, {});
  const at::Tensor norms = g.norm(2, {1}, /*keepdim=*/true);
  const at::Tensor U = g / norms;
  const at::Tensor D = g[0].unsqueeze(0) - g.slice(0, 1);
  const at::Tensor Ud = U[0].unsqueeze(0) - U.slice(0, 1);
  const at::Tensor first = at::matmul(Ud, g[0]);  // [T-1]: (g_1 U^T)^T
  const at::Tensor M = at::matmul(D, Ud.t());     // [T-1, T-1]
  SolveReport report;
  at::Tensor rest;
  const at::Tensor sv = at::linalg_svdvals(M);
  const double smax = sv.max().item<double>(), smin = sv.min().item<double>();
  const bool finite = at::isfinite(M).all().item<bool>() && at::isfinite(first).all().item<bool>();
  if (finite && smax > 0.0 && smin / smax >= options.singular_rcond()) {
    rest = at::linalg_solve(M.t(), first);  // a^T = first^T M^{-1}
  } else {
    report.converged = false;
    report.residual = smax > 0.0 ? smin / smax : 0.0;
    report.message = finite ? "singular system (reciprocal condition number " + fmt(report.residual) +
                                  "): solved by pseudo-inverse"
                            : "non-finite gradients (a task gradient vanishes?)";
    rest = finite ? at::matmul(at::linalg_pinv(M.t()), first) : at::zeros({T - 1}, at::kDouble);
  }
  std::vector<double> a = to_vector(rest);
  double s = 0.0;
  for (double v : a) s += v;
  a.insert(a.begin(), 1.0 - s);
  return weighted(g, a, report);
}

// ---------------------------------------------------------------- Nash-MTL

std::vector<double> nash_weights(const DenseMatrix& M, const std::vector<double>& start,
                                 const SolverOptions& options, SolveReport* report) {
  const int64_t n = M.n;
  TORCH_CHECK(n >= 1, "nash_weights: empty problem");
  SolveReport local;
  std::vector<double> a(static_cast<size_t>(n), 1.0);
  if (static_cast<int64_t>(start.size()) == n &&
      std::all_of(start.begin(), start.end(), [](double v) { return v > 0.0 && std::isfinite(v); })) {
    a = start;
  }
  const auto f = [&](const std::vector<double>& x) {
    double v = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double mx = 0.0;
      for (int64_t j = 0; j < n; ++j) mx += M(i, j) * x[static_cast<size_t>(j)];
      v += 0.5 * x[static_cast<size_t>(i)] * mx - std::log(x[static_cast<size_t>(i)]);
    }
    return v;
  };
  // r = M a - 1/a (the gradient of f); the scale-free residual max_t |a_t (M a)_t - 1| (which tends
  // to 1, not 0, when a runs off to infinity along a vanishing combination).
  const auto residual = [&](const std::vector<double>& x, std::vector<double>& r) {
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double mx = 0.0;
      for (int64_t j = 0; j < n; ++j) mx += M(i, j) * x[static_cast<size_t>(j)];
      r[static_cast<size_t>(i)] = mx - 1.0 / x[static_cast<size_t>(i)];
      worst = std::max(worst, std::abs(x[static_cast<size_t>(i)] * mx - 1.0));
    }
    return worst;
  };
  std::vector<double> r(static_cast<size_t>(n));
  double res = residual(a, r);
  int64_t it = 0;
  for (; it < options.max_iterations() && !(res <= options.tolerance()); ++it) {
    if (!std::isfinite(res)) break;
    DenseMatrix H(n);
    std::vector<double> step(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < n; ++j) H(i, j) = M(i, j);
      H(i, i) += 1.0 / (a[static_cast<size_t>(i)] * a[static_cast<size_t>(i)]);
      step[static_cast<size_t>(i)] = -r[static_cast<size_t>(i)];
    }
    if (!dense_solve(H, step)) {
      local.message = "singular Newton system";
      break;
    }
    double t = 1.0;
    for (int64_t i = 0; i < n; ++i) {
      const double d = step[static_cast<size_t>(i)];
      // Stay inside a > 0 (at most 99% of the way to the boundary).
      if (d < 0.0) t = std::min(t, -0.99 * a[static_cast<size_t>(i)] / d);
    }
    double slope = 0.0;
    for (int64_t i = 0; i < n; ++i) slope += r[static_cast<size_t>(i)] * step[static_cast<size_t>(i)];
    const double f0 = f(a);
    std::vector<double> next(static_cast<size_t>(n));
    bool decreased = false;
    for (int k = 0; k < 60 && !decreased; ++k) {
      for (int64_t i = 0; i < n; ++i) {
        next[static_cast<size_t>(i)] = a[static_cast<size_t>(i)] + t * step[static_cast<size_t>(i)];
      }
      decreased = f(next) <= f0 + 1e-4 * t * slope;
      if (!decreased) t *= 0.5;
    }
    if (!decreased) {
      local.message = "Newton's method stalled at max_t |a_t (M a)_t - 1| = " + fmt(res) +
                      " (no decrease within rounding; tolerance " + fmt(options.tolerance()) + ")";
      break;
    }
    a = next;
    res = residual(a, r);
  }
  local.iterations = it;
  local.residual = res;
  local.converged = res <= options.tolerance();
  if (!local.converged && local.message.empty()) {
    local.message = "Newton's method did not reach max_t |a_t (M a)_t - 1| <= " + fmt(options.tolerance()) +
                    " in " + std::to_string(options.max_iterations()) + " iterations (residual " +
                    fmt(res) + "; no solution exists when a non-negative combination of the "
                    "gradients vanishes)";
  }
  if (report) *report = local;
  return a;
}

// ---------------------------------------------------------------- UPGrad

GradientAggregate upgrad(const at::Tensor& G, const UpGradOptions& options) {
  const at::Tensor g = as_matrix(G, "upgrad");
  const int64_t T = g.size(0);
  DenseMatrix A = gram_matrix(g);
  double trace = 0.0;
  for (int64_t i = 0; i < T; ++i) trace += A(i, i);
  for (double& v : A.a) v = trace < options.norm_eps() ? 0.0 : v / trace;
  for (int64_t i = 0; i < T; ++i) A(i, i) += options.reg_eps();
  std::vector<double> total(static_cast<size_t>(T), 0.0);
  SolveReport report;
  for (int64_t i = 0; i < T; ++i) {
    std::vector<double> lower(static_cast<size_t>(T), 0.0), v;
    lower[static_cast<size_t>(i)] = 1.0 / static_cast<double>(T);
    const SolveReport r = active_set_qp(A, std::vector<double>(static_cast<size_t>(T), 0.0), lower,
                                        false, v, options.solver());
    report.iterations += r.iterations;
    report.residual = std::max(report.residual, r.residual);
    if (!r.converged) {
      report.converged = false;
      report.message = "projection of task " + std::to_string(i) + ": " + r.message;
    }
    for (int64_t k = 0; k < T; ++k) total[static_cast<size_t>(k)] += v[static_cast<size_t>(k)];
  }
  return weighted(g, total, report);
}

// ---------------------------------------------------------------- Aligned-MTL

GradientAggregate aligned_mtl(const at::Tensor& G, const AlignedMtlOptions& options) {
  const at::Tensor g = as_matrix(G, "aligned_mtl");
  const int64_t T = g.size(0);
  at::Tensor A = at::mm(g, g.t());
  A = 0.5 * (A + A.t());
  SolveReport report;
  if (!at::isfinite(A).all().item<bool>()) {
    report.converged = false;
    report.message = "non-finite gradients";
    return weighted(g, std::vector<double>(static_cast<size_t>(T), 1.0), report);
  }
  auto [lambda, V] = at::linalg_eigh(A);
  const double lmax = lambda.max().item<double>();
  const double tol = lmax * static_cast<double>(T) * 1.1920928955078125e-07;
  const at::Tensor order = at::argsort(lambda, /*dim=*/-1, /*descending=*/true);
  lambda = lambda.index_select(0, order);
  V = V.index_select(1, order);
  const int64_t rank = at::gt(lambda, tol).sum().item<int64_t>();
  if (rank == 0 || !(lmax > 0.0)) {
    // Zero gradients: TorchJD's identity transformation (the direction is their sum, zero).
    return weighted(g, std::vector<double>(static_cast<size_t>(T), 1.0), report);
  }
  lambda = lambda.slice(0, 0, rank);
  V = V.slice(1, 0, rank);
  double scale = 0.0;
  switch (options.scale()) {
    case AlignedScale::min: scale = lambda[rank - 1].item<double>(); break;
    case AlignedScale::median: scale = lambda.median().item<double>(); break;
    case AlignedScale::rmse: scale = lambda.mean().item<double>(); break;
  }
  const at::Tensor B = std::sqrt(scale) * at::matmul(V * lambda.rsqrt().unsqueeze(0), V.t());
  return weighted(g, to_vector(B.sum(1)), report);
}

// ---------------------------------------------------------------- stateful wrappers

void SolveCounter::add(const SolveReport& report) {
  ++solves;
  if (!report.converged) ++failures;
  last = report;
}

void SolveCounter::put(std::map<std::string, double>& d) const {
  d["solver_failures"] = static_cast<double>(failures);
  d["solver_iterations"] = static_cast<double>(last.iterations);
  d["solver_residual"] = last.residual;
  d["solver_converged"] = last.converged ? 1.0 : 0.0;
}

FunctionAggregator::FunctionAggregator(std::string description, Fn fn)
    : description_(std::move(description)), fn_(std::move(fn)) {}

GradientAggregate FunctionAggregator::aggregate(const at::Tensor& G, const at::Tensor& inputs) {
  GradientAggregate out = fn_(G.dim() == 2 ? G : G.reshape({G.size(0), -1}));
  counter_.add(out.solve);
  return out;
}

std::map<std::string, double> FunctionAggregator::diagnostics() const {
  std::map<std::string, double> d;
  counter_.put(d);
  return d;
}

PcGradAggregator::PcGradAggregator(PcGradOptions options, uint64_t seed)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

std::string PcGradAggregator::describe() const {
  return std::string("PCGrad(reduction=") + (options_.mean() ? "mean" : "sum") + ")";
}

GradientAggregate PcGradAggregator::aggregate(const at::Tensor& G, const at::Tensor& inputs) {
  return pcgrad(G.dim() == 2 ? G : G.reshape({G.size(0), -1}), generator_, options_);
}

GradDropAggregator::GradDropAggregator(GradDropOptions options, uint64_t seed)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

std::string GradDropAggregator::describe() const {
  return "GradDrop(leak=" + fmt(options_.leak()) + ")";
}

GradientAggregate GradDropAggregator::aggregate(const at::Tensor& G, const at::Tensor& inputs) {
  return graddrop(G, generator_, options_, inputs);
}

GradVacAggregator::GradVacAggregator(GradVacOptions options, uint64_t seed)
    : options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {
  TORCH_CHECK(options.beta() >= 0.0 && options.beta() <= 1.0, "gradvac: beta must be in [0, 1], got ",
              options.beta());
}

std::string GradVacAggregator::describe() const { return "GradVac(beta=" + fmt(options_.beta()) + ")"; }

GradientAggregate GradVacAggregator::aggregate(const at::Tensor& G, const at::Tensor& inputs) {
  const at::Tensor g = as_matrix(G.dim() == 2 ? G : G.reshape({G.size(0), -1}), "gradvac");
  const int64_t T = g.size(0);
  if (!targets_.defined()) targets_ = at::zeros({T, T}, at::kDouble);
  TORCH_CHECK(targets_.size(0) == T, "gradvac: state is for ", targets_.size(0), " tasks, got ", T);
  const DenseMatrix A = gram_matrix(g);
  double* phi_hat = targets_.data_ptr<double>();
  const double beta = options_.beta();
  std::vector<double> total(static_cast<size_t>(T), 0.0);
  for (int64_t i = 0; i < T; ++i) {
    std::vector<double> coef(static_cast<size_t>(T), 0.0);
    coef[static_cast<size_t>(i)] = 1.0;
    const at::Tensor order = at::randperm(T, generator_, at::kLong);
    const int64_t* o = order.data_ptr<int64_t>();
    for (int64_t k = 0; k < T; ++k) {
      const int64_t j = o[k];
      if (j == i) continue;
      double dot = 0.0, nrm2 = 0.0;
      for (int64_t m = 0; m < T; ++m) {
        dot += coef[static_cast<size_t>(m)] * A(m, j);
        for (int64_t l = 0; l < T; ++l) {
          nrm2 += coef[static_cast<size_t>(m)] * A(m, l) * coef[static_cast<size_t>(l)];
        }
      }
      const double ni = std::sqrt(std::max(nrm2, 0.0)), nj = std::sqrt(std::max(A(j, j), 0.0));
      const double phi = dot / (ni * nj + 1e-8);
      double& target = phi_hat[i * T + j];
      if (phi < target) {
        const double w = ni * (target * std::sqrt(std::max(0.0, 1.0 - phi * phi)) -
                               phi * std::sqrt(std::max(0.0, 1.0 - target * target))) /
                         (nj * std::sqrt(std::max(0.0, 1.0 - target * target)) + 1e-8);
        coef[static_cast<size_t>(j)] += w;
      }
      target = (1.0 - beta) * target + beta * phi;
    }
    for (int64_t m = 0; m < T; ++m) total[static_cast<size_t>(m)] += coef[static_cast<size_t>(m)];
  }
  return weighted(g, total, {});
}

NashMtlAggregator::NashMtlAggregator(NashMtlOptions options) : options_(options) {
  TORCH_CHECK(options.update_weights_every() >= 1, "nashmtl: update_weights_every must be >= 1, got ",
              options.update_weights_every());
  TORCH_CHECK(options.max_norm() >= 0.0, "nashmtl: max_norm must be >= 0, got ", options.max_norm());
}

std::string NashMtlAggregator::describe() const {
  return "Nash-MTL(update_weights_every=" + std::to_string(options_.update_weights_every()) +
         ", max_norm=" + fmt(options_.max_norm()) + ", Newton tolerance=" +
         fmt(options_.solver().tolerance()) + ")";
}

at::Tensor NashMtlAggregator::clip(const at::Tensor& direction) const {
  if (options_.max_norm() <= 0.0) return direction;
  // torch.nn.utils.clip_grad_norm_'s rule.
  const double norm = direction.norm().item<double>();
  const double coef = options_.max_norm() / (norm + 1e-6);
  return coef < 1.0 ? direction * coef : direction;
}

at::Tensor NashMtlAggregator::reuse_weights() const {
  if (alpha_.defined() && step_ % options_.update_weights_every() != 0) return alpha_;
  return {};
}

at::Tensor NashMtlAggregator::finish(const at::Tensor& direction) {
  ++step_;
  return clip(direction);
}

GradientAggregate NashMtlAggregator::aggregate(const at::Tensor& G, const at::Tensor& inputs) {
  const at::Tensor g = as_matrix(G.dim() == 2 ? G : G.reshape({G.size(0), -1}), "nashmtl");
  const int64_t T = g.size(0);
  if (alpha_.defined()) {
    TORCH_CHECK(alpha_.size(0) == T, "nashmtl: state is for ", alpha_.size(0), " tasks, got ", T);
  }
  const std::vector<double> previous =
      alpha_.defined() ? to_vector(alpha_) : std::vector<double>(static_cast<size_t>(T), 1.0);
  std::vector<double> a = previous;
  SolveReport report;
  if (reuse_weights().defined()) {
    // Between updates (a caller that computes G anyway).
  } else {
    DenseMatrix M = gram_matrix(g);
    double fro = 0.0;
    for (double v : M.a) fro += v * v;
    fro = std::sqrt(fro);
    if (!(fro > 0.0) || !std::isfinite(fro)) {
      report.converged = false;
      report.message = "the gradients vanish or are not finite: no bargaining solution";
    } else {
      for (double& v : M.a) v /= fro;
      a = nash_weights(M, previous, options_.solver(), &report);
    }
    if (!report.converged) a = previous;
    counter_.add(report);
  }
  alpha_ = to_tensor(a);
  ++step_;
  GradientAggregate out;
  out.weights = alpha_;
  out.direction = clip(at::matmul(alpha_, g));
  out.solve = report;
  return out;
}

std::map<std::string, double> NashMtlAggregator::diagnostics() const {
  std::map<std::string, double> d;
  counter_.put(d);
  return d;
}

DbMtlAggregator::DbMtlAggregator(DbMtlOptions options) : options_(options) {}

std::string DbMtlAggregator::describe() const {
  return "DB-MTL(beta=" + fmt(options_.beta()) + ", beta_sigma=" + fmt(options_.beta_sigma()) + ")";
}

GradientAggregate DbMtlAggregator::aggregate(const at::Tensor& G, const at::Tensor& inputs) {
  const at::Tensor g = as_matrix(G.dim() == 2 ? G : G.reshape({G.size(0), -1}), "dbmtl");
  if (!buffer_.defined()) buffer_ = at::zeros_like(g);
  TORCH_CHECK(buffer_.sizes() == g.sizes(), "dbmtl: state is for gradients ", buffer_.sizes(),
              ", got ", g.sizes());
  ++step_;
  const double f = options_.beta() / std::pow(static_cast<double>(step_), options_.beta_sigma());
  buffer_ = g + f * (buffer_ - g);
  const at::Tensor norms = buffer_.norm(2, {1});
  const at::Tensor alpha = norms.max() / (norms + 1e-8);
  GradientAggregate out;
  out.direction = at::matmul(alpha, buffer_);
  diagnostics_.clear();
  const std::vector<double> a = to_vector(alpha);
  for (size_t t = 0; t < a.size(); ++t) diagnostics_["scale_" + std::to_string(t)] = a[t];
  return out;
}

}  // namespace bayesagg
