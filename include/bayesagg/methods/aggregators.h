#pragma once
/// Gradient aggregators: pure functions (and, where a method keeps state, small classes) that turn
/// a matrix of per-task gradients `G` [T, P] (row t: the gradient of task t's loss) into one
/// update direction [P]. Arithmetic is float64 whatever the dtype of `G`.
///
/// Most aggregators are *weightings*: their direction is `w^T G` for weights `w` [T] computed
/// from the Gram matrix `G G^T`, and `GradientAggregate::weights` holds them. Every sub-problem is
/// solved here (methods/small_qp.h and ATen's eigendecomposition); a solver that misses its
/// tolerance reports it in `GradientAggregate::solve`, and the stateful classes count it.

#include "bayesagg/core/serialize_fwd.h"
#include "bayesagg/methods/options.h"
#include "bayesagg/methods/small_qp.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>


namespace bayesagg {

/// One aggregation.
struct GradientAggregate {
  /// The update direction [P], float64.
  at::Tensor direction;
  /// Weights [T] (float64) with `direction = weights^T G`, when the aggregator is a weighting;
  /// undefined otherwise (GradDrop, DB-MTL).
  at::Tensor weights;
  /// The sub-problem's solver report (trivially converged for closed forms).
  SolveReport solve;
};

/// `G G^T` of a [T, P] matrix, float64.
DenseMatrix gram_matrix(const at::Tensor& G);

// ---------------------------------------------------------------- pure aggregators

/// Weights (on the simplex) of the min-norm point of the convex hull of the rows of a matrix with
/// Gram matrix `gram`: `argmin_{w in simplex} w^T gram w`, solved exactly by the active-set method
/// on `gram / max(diag)` plus `1e-12 I` (so that affinely dependent gradients stay solvable).
std::vector<double> min_norm_weights(const DenseMatrix& gram, const SolverOptions& options,
                                     SolveReport* report = nullptr);

/// MGDA (Sener & Koltun, "Multi-task learning as multi-objective optimization", NeurIPS 2018):
/// the min-norm point of the convex hull of the task gradients, times T when
/// `scale_by_tasks` (the Nash-MTL reference code's `sol * n_tasks`).
GradientAggregate mgda(const at::Tensor& G, const MgdaOptions& options = {});

/// PCGrad (Yu et al., "Gradient surgery for multi-task learning", NeurIPS 2020; the reference code
/// the Nash-MTL repository uses): for every task i, a copy g_i' of its gradient is projected, in a
/// random order of all tasks j drawn from `generator`, onto the normal plane of every g_j it
/// conflicts with (`g_i'.g_j < 0`: `g_i' -= (g_i'.g_j / |g_j|^2) g_j`); the direction is
/// `sum_i g_i'` (or the mean). Computed exactly on the Gram matrix, so it is a weighting.
GradientAggregate pcgrad(const at::Tensor& G, at::Generator& generator,
                         const PcGradOptions& options = {});

/// GradDrop (Chen et al., "Just pick a sign: optimizing deep multitask models with gradient sign
/// dropout", NeurIPS 2020). `G` is [T, P], or [T, B, d] for gradients of a batch of activations
/// `inputs` [B, d]; then the sign purity is computed per activation unit from the batch-summed
/// `sum_b sign(inputs_b) * G_tb` (the paper's batch-separated rule, as in LibMTL), otherwise per
/// column of `G`. With P = (1 + sum_t S_t / sum_t |S_t|) / 2 and U ~ Uniform(0, 1) drawn from
/// `generator`, task t keeps its positive components where P > U and its negative ones where
/// P < U; the direction is `sum_t (leak + (1 - leak) M_t) G_t`, flattened to [P] or [B * d].
GradientAggregate graddrop(const at::Tensor& G, at::Generator& generator,
                           const GradDropOptions& options = {}, const at::Tensor& inputs = {});

/// The weights `w` (on the simplex) of CAGrad's dual: `min_w w^T A b + c' sqrt(w^T A w + eps)`
/// with `A = G G^T`, `b = 1/T`, `c' = c |g_0| + 1e-8` and `|g_0| = sqrt(mean(A) + 1e-8)` (the
/// reference code's constants). Solved natively: for fixed `s > 0` the problem
/// `min_w w^T A b + c' (w^T A w + eps) / (2 s) + c' s / 2` is a simplex QP (active set), and its
/// value is convex in `s` with derivative of the sign of `s^2 - (w(s)^T A w(s) + eps)`; `s` is found
/// by bisection. `report->residual` is the Frank-Wolfe duality gap of the dual at the returned
/// weights, relative to `1 + |objective|`.
std::vector<double> cagrad_dual_weights(const DenseMatrix& A, double c, double eps,
                                        const SolverOptions& options, SolveReport* report = nullptr);

/// The value of CAGrad's dual objective at `w` (for checking the solver).
double cagrad_dual_objective(const DenseMatrix& A, const std::vector<double>& w, double c,
                             double eps);

/// CAGrad (Liu et al., "Conflict-averse gradient descent for multi-task learning", NeurIPS 2021;
/// the authors' code as used in the Nash-MTL repository): `d = g_0 + c' / (|g_w| + 1e-8) g_w` with
/// `g_0` the mean gradient and `g_w = w^T G` for the dual weights above, divided by `1 + c^2`
/// (rescale 1) and multiplied by T ("to match the sum loss").
GradientAggregate cagrad(const at::Tensor& G, const CaGradOptions& options = {});

/// IMTL-G (Liu et al., "Towards impartial multi-task learning", ICLR 2021): the weights `a`
/// (summing to 1) for which `d = a^T G` has equal projections on all unit task gradients
/// `u_t = g_t / |g_t|`: `a_{2:T} = g_1 U^T (D U^T)^{-1}` with `D = g_1 - g_{2:T}` and
/// `U = u_1 - u_{2:T}`. A singular system (reciprocal condition number below
/// `singular_rcond`) is solved by pseudo-inverse and reported as not converged.
GradientAggregate imtlg(const at::Tensor& G, const ImtlGOptions& options = {});

/// Solves `M a = 1 / a`, `a > 0` (the Nash bargaining solution's condition, Navon et al. 2022) by
/// damped Newton's method on the strictly convex `f(a) = a^T M a / 2 - sum_t log a_t` (whose
/// stationary point is the solution), with backtracking that keeps `a > 0`, starting from
/// `start` (all ones when empty or not positive). `report->residual` is the scale-free
/// `max_t |a_t (M a)_t - 1|` (0 exactly at the solution; it tends to 1 when the iterates run off
/// to infinity); the solve converged when it is at most `options.tolerance()`. When no solution exists (a non-negative
/// combination of the gradients vanishes, so `f` is unbounded below) Newton does not converge
/// and says so.
std::vector<double> nash_weights(const DenseMatrix& M, const std::vector<double>& start,
                                 const SolverOptions& options, SolveReport* report = nullptr);

/// UPGrad (Quinton & Rey, "Jacobian descent for multi-objective optimization", 2024; as TorchJD's
/// UPGrad): every task gradient is projected onto the dual cone of all of them
/// (`{x : G x >= 0}`), and the projections are averaged. With the Gramian normalised by its
/// trace and regularised (`reg_eps I`), projection t has weights
/// `v_t = argmin_{v >= e_t / T} v^T A v` (a lower-bounded QP, active set); the direction is
/// `(sum_t v_t)^T G`.
GradientAggregate upgrad(const at::Tensor& G, const UpGradOptions& options = {});

/// Aligned-MTL (Senushkin et al., "Independent component alignment for multi-task learning",
/// CVPR 2023; the authors' ProcrustesSolver): with `G G^T = V diag(l) V^T` restricted to its
/// numerical rank (eigenvalues above `max(l) * T * 1.19e-7`, the reference's float32 tolerance),
/// the aligned gradients `B G`, `B = sqrt(l_scale) V diag(l^{-1/2}) V^T`, are orthogonal with equal
/// norms `sqrt(l_scale)` (`l_scale` the smallest eigenvalue by default); the direction is their sum
/// `(B 1)^T G` (the reference sums over tasks).
GradientAggregate aligned_mtl(const at::Tensor& G, const AlignedMtlOptions& options = {});

// ---------------------------------------------------------------- the interface methods use

/// An aggregator as gradient methods use it: possibly stateful, checkpointable.
class Aggregator {
 public:
  virtual ~Aggregator() = default;
  /// The aggregator and its settings, e.g. `CAGrad(c=0.4)`.
  virtual std::string describe() const = 0;
  /// Aggregates `G` [T, P] (or [T, B, d] with the activations `inputs` [B, d], GradDrop only).
  virtual GradientAggregate aggregate(const at::Tensor& G, const at::Tensor& inputs) = 0;
  /// When defined, this step needs no gradient matrix: the direction is the gradient of
  /// `sum_t w_t L_t` for these weights, which the caller computes and passes to `finish`
  /// (Nash-MTL between weight updates).
  virtual at::Tensor reuse_weights() const { return {}; }
  virtual at::Tensor finish(const at::Tensor& direction) { return direction; }
  /// Numbers describing the last aggregation (e.g. solver failures so far).
  virtual std::map<std::string, double> diagnostics() const { return {}; }
  virtual void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const {}
  virtual void load(torch::serialize::InputArchive& archive, const std::string& prefix) {}
};

/// Counts the solves of a (stateless) aggregator function and its failures.
struct SolveCounter {
  int64_t solves = 0;
  int64_t failures = 0;
  SolveReport last;
  void add(const SolveReport& report);
  void put(std::map<std::string, double>& diagnostics) const;
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix);
};

/// A stateless aggregator function with a solve counter (mgda, cagrad, imtlg, upgrad, alignedmtl).
class FunctionAggregator : public Aggregator {
 public:
  using Fn = std::function<GradientAggregate(const at::Tensor&)>;
  FunctionAggregator(std::string description, Fn fn);
  std::string describe() const override { return description_; }
  GradientAggregate aggregate(const at::Tensor& G, const at::Tensor& inputs) override;
  std::map<std::string, double> diagnostics() const override;
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const override;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) override;

 private:
  std::string description_;
  Fn fn_;
  SolveCounter counter_;
};

/// PCGrad with its own seeded generator (the random task orders).
class PcGradAggregator : public Aggregator {
 public:
  PcGradAggregator(PcGradOptions options, uint64_t seed);
  std::string describe() const override;
  GradientAggregate aggregate(const at::Tensor& G, const at::Tensor& inputs) override;
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const override;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) override;

 private:
  PcGradOptions options_;
  at::Generator generator_;
};

/// GradDrop with its own seeded generator.
class GradDropAggregator : public Aggregator {
 public:
  GradDropAggregator(GradDropOptions options, uint64_t seed);
  std::string describe() const override;
  GradientAggregate aggregate(const at::Tensor& G, const at::Tensor& inputs) override;
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const override;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) override;

 private:
  GradDropOptions options_;
  at::Generator generator_;
};

/// GradVac (Wang et al., "Gradient vaccine: investigating and improving multi-task optimization in
/// massively multilingual models", ICLR 2021), whole-model granularity: for every task i and every
/// other task j in a random order, with `phi = cos(g_i', g_j)` and the EMA target `phi_ij`
/// (initially 0): if `phi < phi_ij`, `g_i' += |g_i'| (phi_ij sqrt(1 - phi^2) - phi
/// sqrt(1 - phi_ij^2)) / (|g_j| sqrt(1 - phi_ij^2)) g_j` (the paper's Eq. 2, which makes the
/// cosine equal to the target); then `phi_ij <- (1 - beta) phi_ij + beta phi` (Algorithm 1: the
/// EMA is updated at every step, not only when the gradient is altered). The direction is
/// `sum_i g_i'`. State: the targets `phi` [T, T] and the generator.
class GradVacAggregator : public Aggregator {
 public:
  GradVacAggregator(GradVacOptions options, uint64_t seed);
  std::string describe() const override;
  GradientAggregate aggregate(const at::Tensor& G, const at::Tensor& inputs) override;
  /// The EMA targets [T, T] (undefined before the first aggregation).
  const at::Tensor& targets() const { return targets_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const override;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) override;

 private:
  GradVacOptions options_;
  at::Generator generator_;
  at::Tensor targets_;
};

/// Nash-MTL (Navon et al., "Multi-task learning as a bargaining game", ICML 2022). Every
/// `update_weights_every` steps the weights solve `M a = 1/a` with `M = G G^T / |G G^T|_F` (the
/// reference's normalisation), warm-started from the previous weights (`nash_weights`, Newton;
/// the reference uses 20 CCP iterations of cvxpy/ECOS instead); in between they are reused. The
/// direction `a^T G` is clipped to norm `max_norm`. A failed solve keeps the previous weights
/// (as the reference does when its solver fails), and is counted and reported.
/// State: the weights, the step counter and the failure counts.
class NashMtlAggregator : public Aggregator {
 public:
  explicit NashMtlAggregator(NashMtlOptions options);
  std::string describe() const override;
  GradientAggregate aggregate(const at::Tensor& G, const at::Tensor& inputs) override;
  at::Tensor reuse_weights() const override;
  at::Tensor finish(const at::Tensor& direction) override;
  std::map<std::string, double> diagnostics() const override;
  /// The current weights [T] (undefined before the first aggregation).
  const at::Tensor& weights() const { return alpha_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const override;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) override;

 private:
  at::Tensor clip(const at::Tensor& direction) const;
  NashMtlOptions options_;
  at::Tensor alpha_;
  int64_t step_ = 0;
  SolveCounter counter_;
};

/// DB-MTL's gradient balancing (Lin et al., "Dual-balancing for multi-task learning", 2023; as in
/// LibMTL): `G` holds the gradients of the log-losses `log(L_t + 1e-8)`; an EMA buffer
/// `b = G + beta / k^beta_sigma (b - G)` (k: the step count) is kept, and the direction is
/// `sum_t (max_s |b_s| / (|b_t| + 1e-8)) b_t`: every task contributes with the largest
/// gradient magnitude. State: the buffer [T, P] and the step count.
class DbMtlAggregator : public Aggregator {
 public:
  explicit DbMtlAggregator(DbMtlOptions options);
  std::string describe() const override;
  GradientAggregate aggregate(const at::Tensor& G, const at::Tensor& inputs) override;
  std::map<std::string, double> diagnostics() const override { return diagnostics_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const override;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix) override;

 private:
  DbMtlOptions options_;
  at::Tensor buffer_;
  int64_t step_ = 0;
  std::map<std::string, double> diagnostics_;
};

}  // namespace bayesagg
