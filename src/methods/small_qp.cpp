#include "bayesagg/methods/small_qp.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace bayesagg {

bool dense_solve(DenseMatrix A, std::vector<double>& b) {
  const int64_t n = A.n;
  TORCH_CHECK(static_cast<int64_t>(b.size()) == n, "dense_solve: right-hand side has size ",
              b.size(), " for a ", n, "x", n, " matrix");
  double scale = 0.0;
  for (double v : A.a) scale = std::max(scale, std::abs(v));
  if (n == 0) return true;
  if (!(scale > 0.0) || !std::isfinite(scale)) return false;
  const double tiny = 1e-14 * scale;
  for (int64_t k = 0; k < n; ++k) {
    int64_t p = k;
    for (int64_t i = k + 1; i < n; ++i) {
      if (std::abs(A(i, k)) > std::abs(A(p, k))) p = i;
    }
    if (!(std::abs(A(p, k)) > tiny)) return false;
    if (p != k) {
      for (int64_t j = 0; j < n; ++j) std::swap(A(k, j), A(p, j));
      std::swap(b[static_cast<size_t>(k)], b[static_cast<size_t>(p)]);
    }
    for (int64_t i = k + 1; i < n; ++i) {
      const double f = A(i, k) / A(k, k);
      if (f == 0.0) continue;
      for (int64_t j = k; j < n; ++j) A(i, j) -= f * A(k, j);
      b[static_cast<size_t>(i)] -= f * b[static_cast<size_t>(k)];
    }
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    double s = b[static_cast<size_t>(i)];
    for (int64_t j = i + 1; j < n; ++j) s -= A(i, j) * b[static_cast<size_t>(j)];
    b[static_cast<size_t>(i)] = s / A(i, i);
  }
  return true;
}

namespace {

/// The QP objective's gradient Q x + c.
std::vector<double> qp_gradient(const DenseMatrix& Q, const std::vector<double>& c,
                                const std::vector<double>& x) {
  const int64_t n = Q.n;
  std::vector<double> g(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = c[static_cast<size_t>(i)];
    for (int64_t j = 0; j < n; ++j) s += Q(i, j) * x[static_cast<size_t>(j)];
    g[static_cast<size_t>(i)] = s;
  }
  return g;
}

/// KKT violation of x for the QP (relative to `scale`); `active` marks the bounds treated as
/// active.
double kkt_violation(const DenseMatrix& Q, const std::vector<double>& c,
                     const std::vector<double>& lower, bool sum_to_one,
                     const std::vector<double>& x, const std::vector<bool>& active, double scale) {
  const int64_t n = Q.n;
  const std::vector<double> g = qp_gradient(Q, c, x);
  double nu = 0.0;
  if (sum_to_one) {
    int64_t nf = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (!active[static_cast<size_t>(i)]) {
        nu += g[static_cast<size_t>(i)];
        ++nf;
      }
    }
    nu = nf > 0 ? nu / static_cast<double>(nf) : 0.0;
  }
  double worst = 0.0, total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = static_cast<size_t>(i);
    const double lam = g[k] - nu;
    worst = std::max(worst, active[k] ? std::max(0.0, -lam) : std::abs(lam));
    worst = std::max(worst, std::max(0.0, lower[k] - x[k]));
    total += x[k];
  }
  if (sum_to_one) worst = std::max(worst, std::abs(total - 1.0));
  return worst / scale;
}

}  // namespace

SolveReport active_set_qp(const DenseMatrix& Q, const std::vector<double>& c,
                          const std::vector<double>& lower, bool sum_to_one,
                          std::vector<double>& x, const SolverOptions& options) {
  const int64_t n = Q.n;
  TORCH_CHECK(n >= 1, "active_set_qp: empty problem");
  TORCH_CHECK(static_cast<int64_t>(c.size()) == n && static_cast<int64_t>(lower.size()) == n,
              "active_set_qp: sizes of Q (", n, "), c (", c.size(), ") and lower (", lower.size(),
              ") differ");
  SolveReport report;
  double scale = 1.0;
  for (double v : Q.a) scale = std::max(scale, std::abs(v));
  for (double v : c) scale = std::max(scale, std::abs(v));
  for (double v : Q.a) {
    if (!std::isfinite(v)) {
      report.converged = false;
      report.message = "the matrix is not finite";
      x.assign(static_cast<size_t>(n), sum_to_one ? 1.0 / static_cast<double>(n) : 0.0);
      return report;
    }
  }
  const auto objective = [&](const std::vector<double>& y) {
    double f = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) s += Q(i, j) * y[static_cast<size_t>(j)];
      f += y[static_cast<size_t>(i)] * (0.5 * s + c[static_cast<size_t>(i)]);
    }
    return f;
  };

  // Feasible start: the bounds, plus (simplex) the best vertex.
  std::vector<bool> active(static_cast<size_t>(n), true);
  x = lower;
  if (sum_to_one) {
    double slack = 1.0;
    for (double v : lower) slack -= v;
    if (slack < 0.0) {
      report.converged = false;
      report.message = "infeasible: the lower bounds sum to more than 1";
      return report;
    }
    int64_t best = 0;
    double best_f = std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      std::vector<double> y = lower;
      y[static_cast<size_t>(j)] += slack;
      const double f = objective(y);
      if (f < best_f) {
        best_f = f;
        best = j;
      }
    }
    x[static_cast<size_t>(best)] += slack;
    active[static_cast<size_t>(best)] = false;
  }

  const double tol = options.tolerance();
  for (int64_t it = 0; it < options.max_iterations(); ++it) {
    report.iterations = it + 1;
    std::vector<int64_t> free;
    for (int64_t i = 0; i < n; ++i) {
      if (!active[static_cast<size_t>(i)]) free.push_back(i);
    }
    const int64_t m = static_cast<int64_t>(free.size());
    bool at_face_optimum = (m == 0);
    if (m > 0) {
      // Equality-constrained QP on the free variables, the others fixed at their bounds.
      const int64_t k = m + (sum_to_one ? 1 : 0);
      DenseMatrix K(k);
      std::vector<double> rhs(static_cast<size_t>(k), 0.0);
      double fixed_sum = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        if (active[static_cast<size_t>(j)]) fixed_sum += x[static_cast<size_t>(j)];
      }
      for (int64_t a = 0; a < m; ++a) {
        const int64_t i = free[static_cast<size_t>(a)];
        double r = -c[static_cast<size_t>(i)];
        for (int64_t j = 0; j < n; ++j) {
          if (active[static_cast<size_t>(j)]) r -= Q(i, j) * x[static_cast<size_t>(j)];
        }
        rhs[static_cast<size_t>(a)] = r;
        for (int64_t b = 0; b < m; ++b) K(a, b) = Q(i, free[static_cast<size_t>(b)]);
        if (sum_to_one) {
          K(a, m) = 1.0;
          K(m, a) = 1.0;
        }
      }
      if (sum_to_one) rhs[static_cast<size_t>(m)] = 1.0 - fixed_sum;
      if (!dense_solve(K, rhs)) {
        report.converged = false;
        report.message = "singular equality-constrained subproblem (the matrix is not positive "
                         "definite on the free variables)";
        report.residual = kkt_violation(Q, c, lower, sum_to_one, x, active, scale);
        return report;
      }
      double pmax = 0.0, xmax = 0.0;
      for (int64_t a = 0; a < m; ++a) {
        const size_t i = static_cast<size_t>(free[static_cast<size_t>(a)]);
        pmax = std::max(pmax, std::abs(rhs[static_cast<size_t>(a)] - x[i]));
        xmax = std::max(xmax, std::abs(rhs[static_cast<size_t>(a)]));
      }
      if (pmax <= 1e-15 * (1.0 + xmax)) {
        at_face_optimum = true;
      } else {
        // Step towards the face's minimiser, stopping at the first bound.
        double alpha = 1.0;
        int64_t blocking = -1;
        for (int64_t a = 0; a < m; ++a) {
          const size_t i = static_cast<size_t>(free[static_cast<size_t>(a)]);
          const double p = rhs[static_cast<size_t>(a)] - x[i];
          if (p < 0.0) {
            const double s = (lower[i] - x[i]) / p;
            if (s < alpha) {
              alpha = s;
              blocking = static_cast<int64_t>(i);
            }
          }
        }
        alpha = std::max(alpha, 0.0);
        for (int64_t a = 0; a < m; ++a) {
          const size_t i = static_cast<size_t>(free[static_cast<size_t>(a)]);
          x[i] += alpha * (rhs[static_cast<size_t>(a)] - x[i]);
        }
        if (blocking >= 0) {
          x[static_cast<size_t>(blocking)] = lower[static_cast<size_t>(blocking)];
          active[static_cast<size_t>(blocking)] = true;
          continue;
        }
        at_face_optimum = true;
      }
    }
    if (!at_face_optimum) continue;
    // Multipliers of the active bounds; release the most negative one, or stop.
    const std::vector<double> g = qp_gradient(Q, c, x);
    double nu = 0.0;
    if (sum_to_one && m > 0) {
      for (int64_t i : free) nu += g[static_cast<size_t>(i)];
      nu /= static_cast<double>(m);
    }
    int64_t release = -1;
    double most_negative = -tol * scale;
    for (int64_t i = 0; i < n; ++i) {
      if (!active[static_cast<size_t>(i)]) continue;
      const double lam = g[static_cast<size_t>(i)] - nu;
      if (lam < most_negative) {
        most_negative = lam;
        release = i;
      }
    }
    if (release < 0) {
      report.residual = kkt_violation(Q, c, lower, sum_to_one, x, active, scale);
      report.converged = report.residual <= tol;
      if (!report.converged) {
        std::ostringstream os;
        os << "KKT violation " << report.residual << " above the tolerance " << tol;
        report.message = os.str();
      }
      return report;
    }
    active[static_cast<size_t>(release)] = false;
  }
  report.converged = false;
  report.residual = kkt_violation(Q, c, lower, sum_to_one, x, active, scale);
  std::ostringstream os;
  os << "no optimum within " << options.max_iterations() << " active-set iterations (KKT violation "
     << report.residual << ")";
  report.message = os.str();
  return report;
}

}  // namespace bayesagg
