// Aggregators on hand-computable gradient matrices, and the small solvers behind them.
#include "bayesagg/methods/aggregators.h"
#include "bayesagg/methods/small_qp.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

using namespace bayesagg;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

at::Tensor mat(std::initializer_list<std::initializer_list<double>> rows) {
  std::vector<at::Tensor> r;
  for (const auto& row : rows) r.push_back(at::tensor(std::vector<double>(row), at::kDouble));
  return at::stack(r);
}

double maxabs(const at::Tensor& t) { return t.abs().max().item<double>(); }

std::vector<double> vec(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
}

}  // namespace

// ---------------------------------------------------------------- solvers

TEST(SmallQp, DenseSolveSolvesAndDetectsSingularity) {
  DenseMatrix A(2);
  A(0, 0) = 2;
  A(0, 1) = 1;
  A(1, 0) = 1;
  A(1, 1) = 3;
  std::vector<double> b{3, 5};
  ASSERT_TRUE(dense_solve(A, b));
  EXPECT_NEAR(b[0], 0.8, 1e-14);
  EXPECT_NEAR(b[1], 1.4, 1e-14);
  DenseMatrix S(2);
  S(0, 0) = S(0, 1) = S(1, 0) = S(1, 1) = 1;
  std::vector<double> c{1, 2};
  EXPECT_FALSE(dense_solve(S, c));
}

TEST(SmallQp, SimplexQpMatchesABruteForceGridOnThreeVariables) {
  const at::Tensor L = at::randn({3, 3}, gen(3), at::kDouble);
  const at::Tensor Qt = at::matmul(L, L.t()) + 0.1 * at::eye(3, at::kDouble);
  DenseMatrix Q(3);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) Q(i, j) = Qt[i][j].item<double>();
  const std::vector<double> c{0.3, -0.8, 0.5};
  std::vector<double> x;
  const SolveReport r = active_set_qp(Q, c, {0, 0, 0}, true, x);
  ASSERT_TRUE(r.converged) << r.message;
  EXPECT_LE(r.residual, 1e-10);
  const auto f = [&](double a, double b, double d) {
    const double v[3] = {a, b, d};
    double s = 0;
    for (int i = 0; i < 3; ++i) {
      s += c[i] * v[i];
      for (int j = 0; j < 3; ++j) s += 0.5 * v[i] * Q(i, j) * v[j];
    }
    return s;
  };
  double best = std::numeric_limits<double>::infinity();
  for (int i = 0; i <= 400; ++i)
    for (int j = 0; i + j <= 400; ++j) best = std::min(best, f(i / 400.0, j / 400.0, (400 - i - j) / 400.0));
  const double mine = f(x[0], x[1], x[2]);
  EXPECT_LE(mine, best + 1e-12);
  EXPECT_GE(mine, best - 1e-3);
  EXPECT_NEAR(x[0] + x[1] + x[2], 1.0, 1e-14);
}

TEST(SmallQp, LowerBoundedQpSatisfiesKkt) {
  // min 1/2 x^T Q x with x >= u: the unconstrained minimum 0 is infeasible.
  DenseMatrix Q(2);
  Q(0, 0) = 1;
  Q(0, 1) = -0.9;
  Q(1, 0) = -0.9;
  Q(1, 1) = 1;
  std::vector<double> x;
  const SolveReport r = active_set_qp(Q, {0, 0}, {0.5, 0.0}, false, x);
  ASSERT_TRUE(r.converged) << r.message;
  // x0 = 0.5 active; x1 free: d/dx1 = -0.9 * 0.5 + x1 = 0.
  EXPECT_NEAR(x[0], 0.5, 1e-14);
  EXPECT_NEAR(x[1], 0.45, 1e-14);
}

// ---------------------------------------------------------------- MGDA

TEST(Mgda, MatchesTheClosedFormMinNormPointOfTwoGradients) {
  const at::Tensor G = at::randn({2, 5}, gen(1), at::kDouble);
  const at::Tensor g1 = G[0], g2 = G[1];
  const double w1 = std::clamp(at::dot(g2 - g1, g2).item<double>() / (g1 - g2).pow(2).sum().item<double>(),
                               0.0, 1.0);
  const at::Tensor expected = w1 * g1 + (1 - w1) * g2;
  const GradientAggregate a = mgda(G, MgdaOptions().scale_by_tasks(false));
  ASSERT_TRUE(a.solve.converged) << a.solve.message;
  EXPECT_NEAR(a.weights[0].item<double>(), w1, 1e-9);
  EXPECT_LT(maxabs(a.direction - expected), 1e-9);
  // Default: the weights are multiplied by T (the Nash-MTL reference code's convention).
  EXPECT_LT(maxabs(mgda(G).direction - 2 * expected), 1e-9);
}

TEST(Mgda, TheClampedCaseGivesTheShorterGradient) {
  // g1 is the min-norm point of the segment: (g2 - g1).g1 >= 0.
  const at::Tensor G = mat({{1.0, 0.0}, {2.0, 0.5}});
  const GradientAggregate a = mgda(G, MgdaOptions().scale_by_tasks(false));
  EXPECT_NEAR(a.weights[0].item<double>(), 1.0, 1e-12);
  EXPECT_LT(maxabs(a.direction - G[0]), 1e-12);
}

TEST(Mgda, MinNormPointSatisfiesTheOptimalityConditionOnFourGradients) {
  // d = w^T G is the min-norm point iff d.g_i >= |d|^2 for all i, with equality where w_i > 0.
  const at::Tensor G = at::randn({4, 3}, gen(7), at::kDouble) + at::tensor({1.0, 0.5, 0.0}, at::kDouble);
  const GradientAggregate a = mgda(G, MgdaOptions().scale_by_tasks(false));
  ASSERT_TRUE(a.solve.converged) << a.solve.message;
  const double d2 = a.direction.pow(2).sum().item<double>();
  const std::vector<double> proj = vec(at::matmul(G, a.direction));
  const std::vector<double> w = vec(a.weights);
  for (int i = 0; i < 4; ++i) {
    EXPECT_GE(proj[i], d2 - 1e-9) << i;
    if (w[i] > 1e-9) EXPECT_NEAR(proj[i], d2, 1e-9) << i;
  }
}

// ---------------------------------------------------------------- PCGrad

TEST(PcGrad, ProjectsTwoConflictingGradientsOntoEachOthersNormalPlane) {
  // g1 = (1, 0), g2 = (-1, 1): g1' = g1 + g2 / 2 = (0.5, 0.5), g2' = g2 + g1 = (0, 1).
  const at::Tensor G = mat({{1.0, 0.0}, {-1.0, 1.0}});
  auto g = gen(0);
  const GradientAggregate a = pcgrad(G, g);
  EXPECT_LT(maxabs(a.direction - at::tensor({0.5, 1.5}, at::kDouble)), 1e-14);
  EXPECT_LT(maxabs(a.weights - at::tensor({2.0, 1.5}, at::kDouble)), 1e-14);
  EXPECT_LT(maxabs(pcgrad(G, g, PcGradOptions().mean(true)).direction - at::tensor({0.25, 0.75}, at::kDouble)),
            1e-14);
}

TEST(PcGrad, LeavesNonConflictingGradientsAlone) {
  const at::Tensor G = mat({{1.0, 0.2, 0.0}, {0.5, 1.0, 0.0}, {0.0, 0.1, 2.0}});
  auto g = gen(0);
  EXPECT_LT(maxabs(pcgrad(G, g).direction - G.sum(0)), 1e-14);
}

TEST(PcGrad, TheRandomTaskOrderComesFromTheGenerator) {
  // Three conflicting gradients in 2-D: for g1, projecting on g2 then g3 gives (0.2, -0.1), on g3
  // then g2 (0.2, 0.2).
  const at::Tensor G = mat({{1.0, 0.0}, {-1.0, 1.0}, {-1.0, -2.0}});
  auto a = gen(11), b = gen(11);
  for (int k = 0; k < 5; ++k) EXPECT_TRUE(at::equal(pcgrad(G, a).direction, pcgrad(G, b).direction));
  auto c = gen(12);
  bool differs = false;
  const at::Tensor first = pcgrad(G, c).direction;
  for (int k = 0; k < 20 && !differs; ++k) differs = maxabs(pcgrad(G, c).direction - first) > 1e-9;
  EXPECT_TRUE(differs);
}

// ---------------------------------------------------------------- GradDrop

TEST(GradDrop, KeepsUnanimousComponentsAndOneSignOfMixedOnes) {
  // Column 0: all positive; column 1: all negative; column 2: mixed.
  const at::Tensor G = mat({{1.0, -2.0, 3.0}, {2.0, -1.0, -1.0}});
  auto g = gen(4);
  for (int k = 0; k < 20; ++k) {
    const at::Tensor d = graddrop(G, g).direction;
    EXPECT_DOUBLE_EQ(d[0].item<double>(), 3.0);
    EXPECT_DOUBLE_EQ(d[1].item<double>(), -3.0);
    const double mixed = d[2].item<double>();
    EXPECT_TRUE(mixed == 3.0 || mixed == -1.0) << mixed;
  }
  // Leak 1 keeps everything.
  EXPECT_LT(maxabs(graddrop(G, g, GradDropOptions().leak(1.0)).direction - G.sum(0)), 1e-15);
}

TEST(GradDrop, BatchSeparatedGradientsUseTheSignOfTheInputs) {
  // [T=2, B=2, d=1]; with inputs of sign (+, -) the batch-summed signed gradients are
  // task 0: 1*1 + (-1)*(-1) = 2 > 0, task 1: 1*1 + (-1)*(3) = -2 < 0 -> purity 1/2.
  const at::Tensor G = at::tensor({1.0, -1.0, 1.0, 3.0}, at::kDouble).reshape({2, 2, 1});
  const at::Tensor h = at::tensor({0.5, -0.5}, at::kDouble).reshape({2, 1});
  auto g = gen(2);
  int kept0 = 0, kept1 = 0;
  for (int k = 0; k < 200; ++k) {
    const at::Tensor d = graddrop(G, g, {}, h).direction;  // [B * d]
    if (at::allclose(d, G[0].reshape({-1}))) ++kept0;
    if (at::allclose(d, G[1].reshape({-1}))) ++kept1;
  }
  EXPECT_EQ(kept0 + kept1, 200);
  EXPECT_GT(kept0, 60);
  EXPECT_GT(kept1, 60);
}

// ---------------------------------------------------------------- GradVac

TEST(GradVac, FirstStepWithZeroTargetsIsPcGradOnTwoTasks) {
  const at::Tensor G = mat({{1.0, 0.0}, {-1.0, 1.0}});
  GradVacAggregator a(GradVacOptions(), 0);
  const GradientAggregate out = a.aggregate(G, {});
  EXPECT_LT(maxabs(out.direction - at::tensor({0.5, 1.5}, at::kDouble)), 1e-7);
  // The EMA moved by beta towards the observed cosine -1/sqrt(2).
  const double cos12 = -1.0 / std::sqrt(2.0);
  EXPECT_NEAR(a.targets()[0][1].item<double>(), 0.01 * cos12, 1e-9);
  EXPECT_NEAR(a.targets()[1][0].item<double>(), 0.01 * cos12, 1e-9);
}

TEST(GradVac, AlteredGradientReachesTheTargetCosine) {
  // beta = 1: after step 1 the targets are the observed cosines (0.8 for this pair); at step 2 the
  // pair is less aligned, and g_1' = g_1 + w g_2 must have cosine exactly 0.8 with g_2.
  GradVacAggregator a(GradVacOptions().beta(1.0), 0);
  a.aggregate(mat({{1.0, 0.0}, {0.8, 0.6}}), {});
  EXPECT_NEAR(a.targets()[0][1].item<double>(), 0.8, 1e-7);  // cos = dot / (|g1||g2| + 1e-8)
  const at::Tensor G = mat({{1.0, 0.0}, {0.0, 2.0}});
  const GradientAggregate out = a.aggregate(G, {});
  // weights = (1 + w21, 1 + w12): g_1' = g_1 + (weights[1] - 1) g_2.
  const at::Tensor g1p = G[0] + (out.weights[1].item<double>() - 1.0) * G[1];
  const double cos = at::dot(g1p, G[1]).item<double>() / (g1p.norm().item<double>() * 2.0);
  EXPECT_NEAR(cos, 0.8, 1e-6);
}

// ---------------------------------------------------------------- CAGrad

TEST(CaGrad, DualMatchesABruteForceGridOnTwoTasks) {
  for (uint64_t seed : {1, 2, 3}) {
    at::Tensor G = at::randn({2, 6}, gen(seed), at::kDouble);
    G[1] = -0.6 * G[0] + 0.4 * G[1];  // conflicting
    const DenseMatrix A = gram_matrix(G);
    const double c = 0.4 * std::sqrt(at::matmul(G, G.t()).mean().item<double>() + 1e-8) + 1e-8;
    SolveReport r;
    const std::vector<double> w = cagrad_dual_weights(A, c, 1e-8, SolverOptions().tolerance(1e-9), &r);
    ASSERT_TRUE(r.converged) << r.message;
    double best = std::numeric_limits<double>::infinity(), best_t = 0;
    for (int i = 0; i <= 100000; ++i) {
      const double t = i / 100000.0;
      const double f = cagrad_dual_objective(A, {t, 1 - t}, c, 1e-8);
      if (f < best) best = f, best_t = t;
    }
    EXPECT_LE(cagrad_dual_objective(A, w, c, 1e-8), best + 1e-12) << seed;
    EXPECT_NEAR(w[0], best_t, 2e-4) << seed;
  }
}

TEST(CaGrad, DirectionIsTheReferenceFormula) {
  at::Tensor G = at::randn({3, 5}, gen(9), at::kDouble);
  const GradientAggregate a = cagrad(G);
  ASSERT_TRUE(a.solve.converged) << a.solve.message;
  const DenseMatrix A = gram_matrix(G);
  const double c = 0.4 * std::sqrt(at::matmul(G, G.t()).mean().item<double>() + 1e-8) + 1e-8;
  const std::vector<double> w = cagrad_dual_weights(A, c, 1e-8, SolverOptions().tolerance(1e-9));
  const at::Tensor gw = at::matmul(at::tensor(w, at::kDouble), G);
  const at::Tensor g = G.mean(0) + c / (gw.norm().item<double>() + 1e-8) * gw;
  EXPECT_LT(maxabs(a.direction - 3 * g / (1 + 0.16)), 1e-10);
  // c = 0: the mean gradient (times T, no rescale needed).
  EXPECT_LT(maxabs(cagrad(G, CaGradOptions().c(0.0)).direction - G.sum(0)), 1e-6);
}

TEST(CaGrad, DirectionImprovesTheWorstTaskOverTheMean) {
  // The point of CAGrad: min_i g_i.d is larger than for the average gradient.
  const at::Tensor G = mat({{1.0, 0.1}, {-0.8, 0.3}});
  const at::Tensor d = cagrad(G).direction;
  const at::Tensor m = G.mean(0);
  const double worst_d = (at::matmul(G, d) / d.norm()).min().item<double>();
  const double worst_m = (at::matmul(G, m) / m.norm()).min().item<double>();
  EXPECT_GT(worst_d, worst_m);
}

// ---------------------------------------------------------------- IMTL-G

TEST(ImtlG, DirectionHasEqualProjectionsOnTheUnitTaskGradients) {
  const at::Tensor G = at::randn({4, 10}, gen(2), at::kDouble) * at::tensor({1.0, 5.0, 0.2, 2.0}, at::kDouble).unsqueeze(1);
  const GradientAggregate a = imtlg(G);
  ASSERT_TRUE(a.solve.converged) << a.solve.message;
  const at::Tensor U = G / G.norm(2, {1}, true);
  const std::vector<double> proj = vec(at::matmul(U, a.direction));
  for (int i = 1; i < 4; ++i) EXPECT_NEAR(proj[i], proj[0], 1e-9 * std::abs(proj[0]) + 1e-12);
  EXPECT_NEAR(a.weights.sum().item<double>(), 1.0, 1e-12);
}

TEST(ImtlG, ReportsASingularSystemInsteadOfHidingIt) {
  const at::Tensor G = mat({{1.0, 2.0}, {1.0, 2.0}, {0.0, 1.0}});
  const GradientAggregate a = imtlg(G);
  EXPECT_FALSE(a.solve.converged);
  EXPECT_FALSE(a.solve.message.empty());
}

// ---------------------------------------------------------------- Nash-MTL

TEST(NashMtl, SolutionSatisfiesGtGAlphaEqualsOneOverAlpha) {
  for (uint64_t seed : {1, 2, 3, 4}) {
    const at::Tensor G = at::randn({4, 9}, gen(seed), at::kDouble);
    DenseMatrix M = gram_matrix(G);
    double fro = 0;
    for (double v : M.a) fro += v * v;
    for (double& v : M.a) v /= std::sqrt(fro);
    SolveReport r;
    const std::vector<double> a = nash_weights(M, {}, NashMtlOptions().solver(), &r);
    ASSERT_TRUE(r.converged) << r.message;
    for (int i = 0; i < 4; ++i) {
      double ma = 0;
      for (int j = 0; j < 4; ++j) ma += M(i, j) * a[j];
      EXPECT_GT(a[i], 0);
      EXPECT_NEAR(ma * a[i], 1.0, 1e-8) << "seed " << seed << " task " << i;
      EXPECT_NEAR(ma, 1.0 / a[i], 1e-8 / a[i]) << "seed " << seed << " task " << i;
    }
  }
}

TEST(NashMtl, OrthogonalGradientsGetInverseNormWeights) {
  // G G^T diagonal: a_i = 1 / sqrt(M_ii), so every task's weighted gradient has the same norm.
  const at::Tensor G = mat({{2.0, 0.0}, {0.0, 0.5}});
  NashMtlAggregator agg(NashMtlOptions().max_norm(0.0));
  const GradientAggregate out = agg.aggregate(G, {});
  const double fro = std::sqrt(16.0 + 0.0625);
  EXPECT_NEAR(out.weights[0].item<double>(), 1.0 / std::sqrt(4.0 / fro), 1e-10);
  EXPECT_NEAR(out.weights[1].item<double>(), 1.0 / std::sqrt(0.25 / fro), 1e-10);
}

TEST(NashMtl, OpposedGradientsHaveNoSolutionAndTheFailureIsCounted) {
  // g2 = -g1: a = (1, 1) makes a^T G vanish, so f is unbounded below.
  NashMtlAggregator agg{NashMtlOptions()};
  const GradientAggregate first = agg.aggregate(mat({{1.0, 0.5}, {0.2, 1.0}}), {});
  ASSERT_TRUE(first.solve.converged);
  const GradientAggregate out = agg.aggregate(mat({{1.0, 0.0}, {-1.0, 0.0}}), {});
  EXPECT_FALSE(out.solve.converged);
  EXPECT_FALSE(out.solve.message.empty());
  EXPECT_TRUE(at::equal(out.weights, first.weights));  // the previous weights are kept
  EXPECT_EQ(agg.diagnostics().at("solver_failures"), 1.0);
}

TEST(NashMtl, ClipsTheDirectionToMaxNorm) {
  NashMtlAggregator agg(NashMtlOptions().max_norm(1.0));
  const GradientAggregate out = agg.aggregate(mat({{30.0, 0.0}, {0.0, 40.0}}), {});
  EXPECT_NEAR(out.direction.norm().item<double>(), 1.0, 1e-5);
}

TEST(NashMtl, ReusesTheWeightsBetweenUpdates) {
  NashMtlAggregator agg(NashMtlOptions().update_weights_every(3));
  EXPECT_FALSE(agg.reuse_weights().defined());  // nothing to reuse yet
  const GradientAggregate out = agg.aggregate(mat({{1.0, 0.2}, {0.1, 2.0}}), {});
  ASSERT_TRUE(agg.reuse_weights().defined());
  EXPECT_TRUE(at::equal(agg.reuse_weights(), out.weights));
  agg.finish(at::ones({2}, at::kDouble));
  ASSERT_TRUE(agg.reuse_weights().defined());
  agg.finish(at::ones({2}, at::kDouble));
  EXPECT_FALSE(agg.reuse_weights().defined());  // step 3: solve again
}

// ---------------------------------------------------------------- UPGrad

TEST(UpGrad, ProjectsAConflictingPairOntoTheDualCone) {
  // pi(g1) = (0.5, 0.5), pi(g2) = (0, 1); their mean (0.25, 0.75).
  const at::Tensor G = mat({{1.0, 0.0}, {-1.0, 1.0}});
  const GradientAggregate a = upgrad(G, UpGradOptions().reg_eps(0.0));
  ASSERT_TRUE(a.solve.converged) << a.solve.message;
  EXPECT_LT(maxabs(a.direction - at::tensor({0.25, 0.75}, at::kDouble)), 1e-12);
  // The default regularisation moves it only slightly.
  EXPECT_LT(maxabs(upgrad(G).direction - at::tensor({0.25, 0.75}, at::kDouble)), 1e-3);
}

TEST(UpGrad, AveragesGradientsThatDoNotConflict) {
  const at::Tensor G = mat({{1.0, 0.2, 0.0}, {0.5, 1.0, 0.0}, {0.0, 0.1, 2.0}});
  const GradientAggregate a = upgrad(G);
  EXPECT_LT(maxabs(a.direction - G.mean(0)), 1e-12);
}

TEST(UpGrad, DirectionConflictsWithNoTask) {
  // 5 tasks in 3 dimensions: many conflicts; G d >= 0 up to the regularisation.
  const at::Tensor G = at::randn({5, 3}, gen(8), at::kDouble);
  const GradientAggregate a = upgrad(G);
  ASSERT_TRUE(a.solve.converged) << a.solve.message;
  const double trace = G.pow(2).sum().item<double>();
  const at::Tensor proj = at::matmul(G, a.direction) / trace;
  EXPECT_GE(proj.min().item<double>(), -1e-4 * a.weights.abs().max().item<double>() - 1e-12);
}

// ---------------------------------------------------------------- Aligned-MTL

TEST(AlignedMtl, OrthogonalGradientsAreRescaledToTheSmallestNorm) {
  // G G^T = diag(9, 1): B = diag(1/3, 1), d = g1 / 3 + g2 = (1, 1).
  const GradientAggregate a = aligned_mtl(mat({{3.0, 0.0}, {0.0, 1.0}}));
  EXPECT_LT(maxabs(a.weights - at::tensor({1.0 / 3.0, 1.0}, at::kDouble)), 1e-12);
  EXPECT_LT(maxabs(a.direction - at::tensor({1.0, 1.0}, at::kDouble)), 1e-12);
}

TEST(AlignedMtl, AlignedGradientsAreOrthonormalTimesTheSmallestSingularValue) {
  // With B G G^T B = l_min I, |d|^2 = |1^T B G|^2 = T l_min.
  const at::Tensor G = at::randn({3, 6}, gen(4), at::kDouble);
  const double lmin = std::get<0>(at::linalg_eigh(at::matmul(G, G.t()))).min().item<double>();
  const GradientAggregate a = aligned_mtl(G);
  EXPECT_NEAR(a.direction.pow(2).sum().item<double>(), 3 * lmin, 1e-9 * 3 * lmin);
}

// ---------------------------------------------------------------- DB-MTL

TEST(DbMtl, EveryTaskContributesWithTheLargestBufferedGradientNorm) {
  DbMtlAggregator agg{DbMtlOptions()};
  const at::Tensor G1 = mat({{1.0, 0.0}, {0.0, 0.1}});
  const GradientAggregate a = agg.aggregate(G1, {});
  // Step 1: buffer = G - 0.9 G = 0.1 G; scales (1, 10): d = 0.1 * (1, 1).
  EXPECT_LT(maxabs(a.direction - at::tensor({0.1, 0.1}, at::kDouble)), 1e-6);  // scales max / (norm + 1e-8)
  // Step 2: buffer = G2 + 0.9 / sqrt(2) (0.1 G1 - G2).
  const at::Tensor G2 = mat({{2.0, 0.0}, {0.0, 1.0}});
  const double f = 0.9 / std::sqrt(2.0);
  const at::Tensor buffer = G2 + f * (0.1 * G1 - G2);
  const at::Tensor norms = buffer.norm(2, {1});
  const at::Tensor expected = at::matmul(norms.max() / (norms + 1e-8), buffer);
  EXPECT_LT(maxabs(agg.aggregate(G2, {}).direction - expected), 1e-12);
}
