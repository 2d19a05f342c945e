#pragma once
/// Small dense solvers for the sub-problems of the gradient aggregators (T x T, T = number of
/// tasks): a primal active-set QP solver and a dense linear solve, in plain float64 C++ (the
/// problems are tiny; tensor dispatch would cost more than the arithmetic).
///
/// Every solve returns a `SolveReport`; a solve that does not meet its tolerance says so
/// (`converged = false`) and the caller counts it. Nothing falls back silently.

#include "bayesagg/methods/options.h"

#include <cstdint>
#include <string>
#include <vector>

namespace bayesagg {

/// What a solver did.
struct SolveReport {
  bool converged = true;
  int64_t iterations = 0;
  /// The optimality measure at the returned point (KKT violation, duality gap or equation
  /// residual; what it is is documented by each solver).
  double residual = 0.0;
  /// Why a solve failed (empty when it converged).
  std::string message;
};

/// A dense row-major square matrix of doubles.
struct DenseMatrix {
  int64_t n = 0;
  std::vector<double> a;
  DenseMatrix() = default;
  explicit DenseMatrix(int64_t size) : n(size), a(static_cast<size_t>(size * size), 0.0) {}
  double& operator()(int64_t i, int64_t j) { return a[static_cast<size_t>(i * n + j)]; }
  double operator()(int64_t i, int64_t j) const { return a[static_cast<size_t>(i * n + j)]; }
};

/// Solves `A x = b` by Gaussian elimination with partial pivoting. Returns false (and leaves `b`
/// unspecified) when a pivot is below `1e-14` times the largest entry of `A`.
bool dense_solve(DenseMatrix A, std::vector<double>& b);

/// Minimises `1/2 x^T Q x + c^T x` subject to `x >= lower` and, when `sum_to_one`, `sum(x) = 1`,
/// for a symmetric positive (semi)definite `Q`, by the primal active-set method (Nocedal & Wright,
/// Numerical Optimization, Algorithm 16.3). Exact up to rounding in finitely many steps when `Q`
/// is positive definite on the free variables; callers regularise semidefinite `Q`.
///
/// `residual` is the largest violation of the KKT conditions (stationarity on the free variables,
/// sign of the multipliers on the active bounds) relative to `max(|Q|, |c|, 1)`; the solve
/// converged when it is at most `options.tolerance()` within `options.max_iterations()` steps.
SolveReport active_set_qp(const DenseMatrix& Q, const std::vector<double>& c,
                          const std::vector<double>& lower, bool sum_to_one,
                          std::vector<double>& x, const SolverOptions& options = {});

}  // namespace bayesagg
