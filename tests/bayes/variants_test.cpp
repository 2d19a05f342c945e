// The BayesAgg-MTL variants beside the reference: posterior centres (head, guarded Newton to the
// mode), running statistics, estimated regression noise, and the task / snr weightings.
#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/core/losses.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <sstream>

using namespace bayesagg;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

/// A small logistic problem whose plain Newton step from `phi` overshoots: separable-ish data and
/// a start far from the mode.
struct Logistic {
  TaskGroup group{GroupType::binary, 1};
  at::Tensor h, y;
  GaussianPosterior prior;
  Logistic(int64_t n, uint64_t seed) {
    auto r = gen(seed);
    h = at::randn({n, 2}, r, at::kDouble);
    y = (h.select(1, 0) + 0.3 * h.select(1, 1) + 0.2 * at::randn({n}, r, at::kDouble))
            .gt(0)
            .to(at::kDouble)
            .unsqueeze(1);
    prior = isotropic_prior(group, 2, /*gamma=*/4.0);
  }
  /// Gradient of the objective at phi [1, 3].
  at::Tensor gradient(const at::Tensor& phi) const {
    const PosteriorStats st = posterior_stats(group, h, y, phi);
    return st.rhs + at::matmul(prior.precision, (phi - prior.mean).unsqueeze(-1)).squeeze(-1);
  }
};

}  // namespace

TEST(PosteriorMode, NeverIncreasesTheObjectiveAndReachesTheMode) {
  const Logistic p(200, 1);
  const at::Tensor far = at::full({1, 3}, 6.0, at::kDouble);
  const double j0 = posterior_objective(p.group, p.prior, p.h, p.y, far);
  // The reference's single Newton step from there overshoots: the objective goes up.
  const GaussianPosterior newton =
      posterior_update(p.group, p.prior, posterior_stats(p.group, p.h, p.y, far), far);
  EXPECT_GT(posterior_objective(p.group, p.prior, p.h, p.y, newton.mean), j0);

  const ModeResult m = posterior_mode(p.group, p.prior, p.h, p.y, far,
                                      ModeOptions().max_iterations(50).tolerance(1e-14));
  ASSERT_TRUE(m.converged);
  ASSERT_GE(m.objective.size(), 2u);
  for (size_t i = 1; i < m.objective.size(); ++i) EXPECT_LE(m.objective[i], m.objective[i - 1]);
  EXPECT_DOUBLE_EQ(m.objective.front(), j0);
  // The objective is strictly convex, so zero gradient means the unique mode.
  EXPECT_LT(max_abs(p.gradient(m.posterior.mean)), 1e-6);
  // The posterior's precision is the prior's plus the GGN at the mode.
  const PosteriorStats at_mode = posterior_stats(p.group, p.h, p.y, m.posterior.mean);
  EXPECT_LT(max_abs(m.posterior.precision - p.prior.precision - at_mode.curvature), 1e-10);
  // Started at the mode it stays there, with no accepted step.
  const ModeResult again = posterior_mode(p.group, p.prior, p.h, p.y, m.posterior.mean);
  EXPECT_TRUE(again.converged);
  EXPECT_EQ(again.iterations, 0);
}

TEST(PosteriorMode, MulticlassModeHasZeroGradient) {
  const TaskGroup group(GroupType::multiclass, 3);
  auto r = gen(2);
  const at::Tensor h = at::randn({150, 2}, r, at::kDouble);
  const at::Tensor y = at::argmax(at::matmul(h, at::randn({2, 3}, r, at::kDouble)) * 3, 1);
  const GaussianPosterior prior = isotropic_prior(group, 2, 1.0);
  const at::Tensor start = at::randn({1, 9}, r, at::kDouble) * 5;
  const ModeResult m =
      posterior_mode(group, prior, h, y, start, ModeOptions().max_iterations(50).tolerance(1e-14));
  ASSERT_TRUE(m.converged);
  for (size_t i = 1; i < m.objective.size(); ++i) EXPECT_LE(m.objective[i], m.objective[i - 1]);
  const PosteriorStats st = posterior_stats(group, h, y, m.posterior.mean);
  const at::Tensor grad = st.rhs + m.posterior.mean / 1.0;  // prior N(0, I)
  EXPECT_LT(max_abs(grad), 1e-6);
}

TEST(PosteriorMode, RegressionIsTheExactPosterior) {
  const TaskGroup group(GroupType::regression, 2);
  auto r = gen(3);
  const at::Tensor h = at::randn({40, 3}, r, at::kDouble), y = at::randn({40, 2}, r, at::kDouble);
  const GaussianPosterior prior = isotropic_prior(group, 3, 0.5);
  const at::Tensor phi = at::zeros({2, 3}, at::kDouble);
  const ModeResult m = posterior_mode(group, prior, h, y, phi);
  const GaussianPosterior exact = posterior_update(group, prior, posterior_stats(group, h, y, phi), phi);
  EXPECT_LT(max_abs(m.posterior.mean - exact.mean), 1e-12);
  EXPECT_EQ(m.iterations, 0);
}

TEST(PosteriorObjective, IsTheSummedLossPlusThePriorPenalty) {
  const Logistic p(5, 4);
  const at::Tensor phi = at::tensor({0.5, -1.0, 0.25}, at::kDouble).view({1, 3});
  const at::Tensor z = at::matmul(p.h, phi.narrow(1, 0, 2).t()).squeeze(1) + 0.25;
  const at::Tensor s = at::sigmoid(z), yy = p.y.squeeze(1);
  const double loss = -(yy * at::log(s) + (1 - yy) * at::log(1 - s)).sum().item<double>();
  const double penalty = 0.5 * (0.25 + 1.0 + 0.0625) / 4.0;  // |phi|^2 / (2 gamma), gamma = 4
  EXPECT_NEAR(posterior_objective(p.group, p.prior, p.h, p.y, phi), loss + penalty, 1e-12);
}

TEST(RegressionMoments, NoiseScaledMomentsMatchMonteCarlo) {
  // g = 2 (w^T h - y) w / s2 with w ~ N(m, s2 S); 400 000 samples: the relative standard error of
  // a mean is ~ sd / (mean sqrt(N)) < 1%, of a variance ~ sqrt(2 / N) ~ 0.2% (plus kurtosis);
  // tolerance 3% of the largest entry.
  auto r = gen(5);
  const int64_t d = 3, o = 2;
  GaussianPosterior post;
  post.mean = at::randn({o, d}, r, at::kDouble) * 0.7;
  const at::Tensor a = at::randn({d, d}, r, at::kDouble);
  post.precision = (at::matmul(a, a.t()) + 2 * at::eye(d, at::kDouble)).unsqueeze(0);
  post.cholesky = at::linalg_cholesky(post.precision);
  const at::Tensor h = at::randn({2, d}, r, at::kDouble), y = at::randn({2, o}, r, at::kDouble);
  const at::Tensor noise = at::tensor({0.25, 4.0}, at::kDouble);
  const GradMoments m = regression_moments(post, h, y, noise);
  const at::Tensor cov = post.covariance()[0];
  const at::Tensor chol = at::linalg_cholesky(cov);
  const int64_t n = 400000;
  for (int64_t k = 0; k < o; ++k) {
    const double s2 = noise[k].item<double>();
    const at::Tensor w = post.mean[k] + std::sqrt(s2) * at::matmul(at::randn({n, d}, r, at::kDouble), chol.t());
    for (int64_t i = 0; i < 2; ++i) {
      const at::Tensor res = at::matmul(w, h[i]) - y[i][k];           // [n]
      const at::Tensor g = 2 * res.unsqueeze(1) * w / s2;              // [n, d]
      const at::Tensor mc_mean = g.mean(0), mc_var = g.var(0, /*unbiased=*/false);
      const at::Tensor cf_mean = m.mean[i][k], cf_var = m.var[i][k];
      EXPECT_LT(max_abs(mc_mean - cf_mean), 0.03 * max_abs(cf_mean) + 1e-3) << "k " << k << " i " << i;
      EXPECT_LT(max_abs(mc_var - cf_var), 0.03 * max_abs(cf_var)) << "k " << k << " i " << i;
    }
  }
  // Noise 1 is the reference's closed form.
  const GradMoments ref = regression_moments(post, h, y);
  const GradMoments ones = regression_moments(post, h, y, at::ones({o}, at::kDouble));
  EXPECT_LT(max_abs(ref.mean - ones.mean), 1e-14);
  EXPECT_LT(max_abs(ref.var - ones.var), 1e-14);
}

TEST(TaskNoise, EstimatesKnownRegressionNoise) {
  // y = h W^T + b + sigma eps with sigma = (0.5, 2): the mean squared residual of the true head is
  // sigma^2 up to sampling error, sqrt(2 / N) sigma^2 ~ 0.3% of it for N = 200 000 (tolerance 2%).
  auto r = gen(6);
  const int64_t n = 200000;
  const TaskGroup group(GroupType::regression, 2);
  const at::Tensor h = at::randn({n, 4}, r, at::kFloat);
  const Head head{at::randn({2, 4}, r, at::kFloat), at::tensor({1.0f, -3.0f})};
  const at::Tensor sigma = at::tensor({0.5f, 2.0f});
  const at::Tensor y = at::matmul(h, head.weight.t()) + head.bias + sigma * at::randn({n, 2}, r, at::kFloat);
  const at::Tensor est = task_noise(group, h, y, head);
  EXPECT_NEAR(est[0].item<double>(), 0.25, 0.02 * 0.25);
  EXPECT_NEAR(est[1].item<double>(), 4.0, 0.02 * 4.0);
  // A perfect fit hits the floor instead of zero.
  EXPECT_DOUBLE_EQ(
      task_noise(group, h, at::matmul(h, head.weight.t()) + head.bias, head, 1e-3)[0].item<double>(),
      1e-3);
}

TEST(TaskNoise, ClassificationTemperatureIsTheMeanLoss) {
  // Binary, one example per row: logits 0 and log 3 with labels 1 and 0:
  // BCE = log 2 and log(1 + 3) = log 4, mean (log 2 + log 4) / 2 = 1.5 log 2.
  const TaskGroup binary(GroupType::binary, 1);
  const Head head{at::tensor({1.0f}).view({1, 1}), at::zeros({1})};
  const at::Tensor h = at::tensor({0.0f, static_cast<float>(std::log(3.0))}).view({2, 1});
  EXPECT_NEAR(task_noise(binary, h, at::tensor({1.0f, 0.0f}).view({2, 1}), head)[0].item<double>(),
              1.5 * std::log(2.0), 1e-7);
  // Multiclass with equal logits: cross-entropy log K for any label.
  const TaskGroup mc(GroupType::multiclass, 4);
  const Head zero{at::zeros({4, 3}), at::zeros({4})};
  const at::Tensor t = task_noise(mc, at::randn({5, 3}), at::tensor({0, 1, 2, 3, 0}), zero);
  ASSERT_EQ(t.numel(), 1);
  EXPECT_NEAR(t.item<double>(), std::log(4.0), 1e-12);
}

TEST(Weightings, TaskAndSnrByHand) {
  // B = 1, d = 2, two groups of one task each.
  const at::Tensor mu1 = at::tensor({1.0, -2.0}, at::kDouble).view({1, 1, 2});
  const at::Tensor mu2 = at::tensor({3.0, 0.5}, at::kDouble).view({1, 1, 2});
  const at::Tensor v1 = at::tensor({1.0, 3.0}, at::kDouble).view({1, 1, 2});  // mean 2
  const at::Tensor v2 = at::tensor({4.0, 4.0}, at::kDouble).view({1, 1, 2});  // mean 4
  // Task weights 1/2 and 1/4, normalised: 2/3 and 1/3.
  const at::Tensor task = aggregate_task_precision({mu1, mu2}, {v1, v2});
  EXPECT_NEAR(task[0][0].item<double>(), 2.0 / 3 * 1.0 + 1.0 / 3 * 3.0, 1e-14);
  EXPECT_NEAR(task[0][1].item<double>(), 2.0 / 3 * -2.0 + 1.0 / 3 * 0.5, 1e-14);
  // snr: mu^3 / (mu^2 + v), averaged over the two tasks.
  const at::Tensor snr = aggregate_snr({mu1, mu2}, {v1, v2});
  EXPECT_NEAR(snr[0][0].item<double>(), (1.0 / 2.0 + 27.0 / 13.0) / 2, 1e-14);
  EXPECT_NEAR(snr[0][1].item<double>(), (-8.0 / 7.0 + 0.125 / 4.25) / 2, 1e-14);
  // Divided by B.
  const at::Tensor two = aggregate_snr({at::cat({mu1, mu1}), at::cat({mu2, mu2})},
                                       {at::cat({v1, v1}), at::cat({v2, v2})});
  EXPECT_NEAR(two[0][0].item<double>(), snr[0][0].item<double>() / 2, 1e-14);
  EXPECT_EQ(parse_weighting("snr"), Weighting::snr);
  EXPECT_THROW(parse_weighting("nope"), c10::Error);
  // family: tasks 1 and 2 in one loss, task 3 (mean variance 1) alone in another. Within the
  // first loss 2/3 and 1/3 of its share 2/3; the third task keeps its share 1/3.
  const at::Tensor mu3 = at::tensor({-1.0, 2.0}, at::kDouble).view({1, 1, 2});
  const at::Tensor v3 = at::tensor({0.5, 1.5}, at::kDouble).view({1, 1, 2});
  const at::Tensor fam = aggregate_family_precision({mu1, mu2, mu3}, {v1, v2, v3}, {0, 0, 1});
  EXPECT_NEAR(fam[0][0].item<double>(), 4.0 / 9 * 1.0 + 2.0 / 9 * 3.0 + 1.0 / 3 * -1.0, 1e-14);
  EXPECT_NEAR(fam[0][1].item<double>(), 4.0 / 9 * -2.0 + 2.0 / 9 * 0.5 + 1.0 / 3 * 2.0, 1e-14);
  // One loss: task's weights exactly.
  EXPECT_TRUE(at::equal(aggregate_family_precision({mu1, mu2}, {v1, v2}, {1, 1}), task));
  EXPECT_THROW(aggregate_family_precision({mu1, mu2}, {v1, v2}, {0}), c10::Error);
  EXPECT_EQ(parse_weighting("family"), Weighting::family);
  EXPECT_EQ(to_string(Weighting::family), "family");
}

namespace {

/// A regression + multiclass model with a warm-up epoch observed.
struct MixedSetup {
  std::vector<TaskGroup> groups{TaskGroup(GroupType::regression, 2),
                                TaskGroup(GroupType::multiclass, 3)};
  std::vector<Head> heads;
  at::Tensor warm_h, h;
  Labels warm_y, y;
  MixedSetup() {
    auto r = gen(7);
    for (const auto& g : groups) {
      heads.push_back({(at::randn({g.head_rows(), 4}, r, at::kFloat) * 0.3).requires_grad_(),
                       (at::randn({g.head_rows()}, r, at::kFloat) * 0.5).requires_grad_()});
    }
    warm_h = at::randn({64, 4}, r, at::kFloat);
    warm_y = {at::randn({64, 2}, r, at::kFloat) * 2, at::randint(3, {64}, r, at::kLong)};
    h = at::randn({16, 4}, r, at::kFloat);
    y = {at::randn({16, 2}, r, at::kFloat), at::randint(3, {16}, r, at::kLong)};
  }
  at::Tensor losses(const at::Tensor& rep) const {
    return at::cat({task_losses(groups[0], head_forward(heads[0], rep), y[0]),
                    task_losses(groups[1], head_forward(heads[1], rep), y[1])});
  }
  /// One training step of `agg` (after a warm-up epoch); returns dL/dh.
  at::Tensor step(BayesAgg& agg) const {
    const at::Tensor rep = h.clone().requires_grad_();
    return agg.backward(losses(rep), heads, rep, y);
  }
  void warm_up(BayesAgg& agg) const {
    agg.observe(warm_h, warm_y);
    agg.end_epoch();
  }
};

}  // namespace

TEST(BayesAggVariants, HeadCentredPosteriorsSitAtTheHeads) {
  const MixedSetup s;
  BayesAgg agg(s.groups, 4, BayesAggOptions().centre(PosteriorCentre::head).seed(1));
  s.warm_up(agg);
  s.step(agg);
  for (size_t g = 0; g < s.groups.size(); ++g) {
    EXPECT_LT(agg.stats().batch_shift[g], 1e-6) << g;
    EXPECT_LT(agg.stats().full_data_shift[g], 1e-6) << g;
  }
  // The regression moments are the closed form at the head, bias included: E[g] = 2 (S h + r w)
  // with r = w^T h + b - y.
  const Aggregation a = agg.aggregate(agg.current_full_data_posteriors(), s.h, s.y, s.heads);
  const at::Tensor w = s.heads[0].weight.detach().to(at::kDouble);
  const at::Tensor hd = s.h.to(at::kDouble);
  const at::Tensor cov = a.groups[0].posterior.covariance()[0];
  const at::Tensor r = at::matmul(hd, w.t()) + s.heads[0].bias.detach().to(at::kDouble) -
                       s.y[0].to(at::kDouble);  // [B, o]
  const at::Tensor expect = 2 * (at::matmul(hd, cov).unsqueeze(1) + r.unsqueeze(2) * w.unsqueeze(0));
  EXPECT_LT(max_abs(a.groups[0].grad_mean - expect), 1e-10);
}

TEST(BayesAggVariants, ModeCentreHasZeroGradientForTheFullData) {
  const MixedSetup s;
  BayesAgg agg(s.groups, 4,
               BayesAggOptions().centre(PosteriorCentre::mode).seed(1).mode(
                   ModeOptions().max_iterations(50).tolerance(1e-14)));
  s.warm_up(agg);
  s.step(agg);
  const GaussianPosterior& full = agg.current_full_data_posteriors()[1];
  const PosteriorStats st =
      posterior_stats(s.groups[1], s.warm_h, s.warm_y[1], full.mean);
  EXPECT_LT(max_abs(st.rhs + full.mean / 5e-3), 1e-6);  // prior N(0, 0.005 I)
}

TEST(BayesAggVariants, RunningStatisticsExcludeTheBatchAndDecay) {
  const MixedSetup s;
  BayesAgg agg(s.groups, 4, BayesAggOptions().refresh(PosteriorRefresh::running).seed(1));
  s.warm_up(agg);
  s.step(agg);
  // Started from the warm-up epoch's statistics, then one batch of 16 folded in: 48/64 of them.
  const auto phi0 = std::vector<Head>{{s.heads[0].weight.detach(), s.heads[0].bias.detach()},
                                      {s.heads[1].weight.detach(), s.heads[1].bias.detach()}};
  const auto warm = agg.statistics(s.warm_h, s.warm_y, phi0);
  const auto batch = agg.statistics(s.h, s.y, phi0);
  ASSERT_EQ(agg.running_statistics().size(), 2u);
  for (size_t g = 0; g < 2; ++g) {
    const PosteriorStats& run = agg.running_statistics()[g];
    EXPECT_EQ(run.count, 64);
    EXPECT_LT(max_abs(run.curvature - (0.75 * warm[g].curvature + batch[g].curvature)), 1e-9) << g;
    EXPECT_LT(max_abs(run.rhs - (0.75 * warm[g].rhs + batch[g].rhs)), 1e-9) << g;
  }
  // The next batch posterior's precision: prior + running statistics + the batch, once.
  const Aggregation a = agg.aggregate({}, s.h, s.y, s.heads);
  const PosteriorStats& run = agg.running_statistics()[0];
  const at::Tensor expect = at::eye(4, at::kDouble) / 5e-3 + run.curvature[0] + batch[0].curvature[0];
  EXPECT_LT(max_abs(a.groups[0].posterior.precision[0] - expect), 1e-9);
  EXPECT_THROW(BayesAgg(s.groups, 4,
                        BayesAggOptions().refresh(PosteriorRefresh::running).centre(
                            PosteriorCentre::mode)),
               c10::Error);
}

TEST(BayesAggVariants, EstimatedNoiseComesFromThePreviousEpoch) {
  const MixedSetup s;
  BayesAgg agg(s.groups, 4, BayesAggOptions().noise(ObservationNoise::estimated).seed(1));
  BayesAgg fixed(s.groups, 4, BayesAggOptions().seed(1));
  s.warm_up(agg);
  s.warm_up(fixed);
  s.step(agg);
  ASSERT_EQ(agg.observation_noise().size(), 2u);
  for (size_t g = 0; g < 2; ++g) {
    const at::Tensor expect = task_noise(s.groups[g], s.warm_h, s.warm_y[g], s.heads[g]);
    EXPECT_LT(max_abs(agg.observation_noise()[g] - expect), 1e-12) << g;
  }
  // The multiclass group's moments are the untempered ones divided by its temperature.
  const Aggregation a = agg.aggregate(agg.current_full_data_posteriors(), s.h, s.y, s.heads);
  s.step(fixed);
  const Aggregation b = fixed.aggregate(fixed.current_full_data_posteriors(), s.h, s.y, s.heads);
  const double tau = agg.observation_noise()[1].item<double>();
  EXPECT_LT(max_abs(a.groups[1].grad_mean * tau - b.groups[1].grad_mean), 1e-9);
  EXPECT_LT(max_abs(a.groups[1].raw_var * tau * tau - b.groups[1].raw_var), 1e-9);
}

/// Noise estimates of every loss: two regression groups (3 outputs together), one binary and two
/// multiclass tasks.
struct NoiseOfEveryLoss {
  std::vector<TaskGroup> groups{TaskGroup(GroupType::regression, 2), TaskGroup(GroupType::binary, 1),
                                TaskGroup(GroupType::multiclass, 3),
                                TaskGroup(GroupType::regression, 1),
                                TaskGroup(GroupType::multiclass, 4)};
  at::TensorOptions d = at::TensorOptions().dtype(at::kDouble);
  std::vector<at::Tensor> noise{at::tensor({0.5, 2.0}, d), at::tensor({0.7}, d),
                                at::tensor({2.0}, d), at::tensor({8.0}, d), at::tensor({0.5}, d)};
};

TEST(BayesAggVariants, NormalisedNoiseDividesByTheGeometricMeanOfEachLoss) {
  const NoiseOfEveryLoss x;
  const auto& [groups, d, noise] = x;
  const std::vector<at::Tensor> out = normalise_per_loss(groups, noise);
  // Regression: geometric mean of 0.5, 2, 8 is 2. Binary: one task -> 1. Multiclass: of 2 and
  // 0.5 it is 1.
  EXPECT_LT(max_abs(out[0] - at::tensor({0.25, 1.0}, d)), 1e-15);
  EXPECT_LT(max_abs(out[1] - at::tensor({1.0}, d)), 1e-15);
  EXPECT_LT(max_abs(out[2] - at::tensor({2.0}, d)), 1e-15);
  EXPECT_LT(max_abs(out[3] - at::tensor({4.0}, d)), 1e-15);
  EXPECT_LT(max_abs(out[4] - at::tensor({0.5}, d)), 1e-15);
  EXPECT_THROW(normalise_per_loss(groups, {noise[0]}), c10::Error);
  std::vector<at::Tensor> bad = noise;
  bad[1] = at::tensor({0.0}, d);
  EXPECT_THROW(normalise_per_loss(groups, bad), c10::Error);
}

TEST(BayesAggVariants, BalancedNoiseEqualisesTheLossesAndKeepsTheOverallScale) {
  const NoiseOfEveryLoss x;
  const auto& [groups, d, noise] = x;
  const std::vector<at::Tensor> out = normalise_per_loss(groups, noise, true);
  // The geometric mean of all six estimates: (0.5 * 2 * 0.7 * 2 * 8 * 0.5)^(1/6) = 5.6^(1/6);
  // each loss's estimates are the normalised ones (test above) times it.
  const double all = std::pow(5.6, 1.0 / 6.0);
  EXPECT_LT(max_abs(out[0] - at::tensor({0.25 * all, all}, d)), 1e-14);
  EXPECT_LT(max_abs(out[1] - at::tensor({all}, d)), 1e-14);
  EXPECT_LT(max_abs(out[2] - at::tensor({2.0 * all}, d)), 1e-14);
  EXPECT_LT(max_abs(out[3] - at::tensor({4.0 * all}, d)), 1e-14);
  EXPECT_LT(max_abs(out[4] - at::tensor({0.5 * all}, d)), 1e-14);
  // One loss only: the estimates come back bit for bit (so `balanced` is `estimated` there).
  const std::vector<TaskGroup> binary{TaskGroup(GroupType::binary, 3), TaskGroup(GroupType::binary, 1)};
  const std::vector<at::Tensor> b{at::tensor({0.3, 0.05, 0.21}, d), at::tensor({0.9}, d)};
  const std::vector<at::Tensor> same = normalise_per_loss(binary, b, true);
  EXPECT_TRUE(at::equal(same[0], b[0]));
  EXPECT_TRUE(at::equal(same[1], b[1]));
  EXPECT_EQ(parse_observation_noise("balanced"), ObservationNoise::balanced);
  EXPECT_EQ(to_string(ObservationNoise::balanced), "balanced");
}

TEST(BayesAggVariants, NormalisedNoiseKeepsTheRatiosOfTheEstimates) {
  const MixedSetup s;
  BayesAgg est(s.groups, 4, BayesAggOptions().noise(ObservationNoise::estimated).seed(1));
  BayesAgg norm(s.groups, 4, BayesAggOptions().noise(ObservationNoise::normalised).seed(1));
  s.warm_up(est);
  s.warm_up(norm);
  s.step(est);
  s.step(norm);
  // The regression outputs keep their ratio and have geometric mean 1; the single multiclass
  // task's temperature becomes 1, so its moments are the fixed-noise ones.
  const at::Tensor e = est.observation_noise()[0], n = norm.observation_noise()[0];
  EXPECT_NEAR((n[0] / n[1]).item<double>(), (e[0] / e[1]).item<double>(), 1e-12);
  EXPECT_NEAR((n[0] * n[1]).item<double>(), 1.0, 1e-12);
  EXPECT_NEAR(norm.observation_noise()[1].item<double>(), 1.0, 1e-15);
  EXPECT_EQ(parse_observation_noise("normalised"), ObservationNoise::normalised);
  EXPECT_EQ(to_string(ObservationNoise::normalised), "normalised");
  EXPECT_THROW(parse_observation_noise("estimate"), c10::Error);
  // balanced: the same ratios within a loss, and the geometric mean over all three tasks of the
  // estimates (the two regression outputs and the multiclass temperature) is estimated's.
  BayesAgg bal(s.groups, 4, BayesAggOptions().noise(ObservationNoise::balanced).seed(1));
  s.warm_up(bal);
  s.step(bal);
  const at::Tensor b = bal.observation_noise()[0];
  const double tau_e = est.observation_noise()[1].item<double>();
  const double tau_b = bal.observation_noise()[1].item<double>();
  EXPECT_NEAR((b[0] / b[1]).item<double>(), (e[0] / e[1]).item<double>(), 1e-12);
  EXPECT_NEAR((b[0] * b[1]).item<double>() * tau_b, (e[0] * e[1]).item<double>() * tau_e,
              1e-12 * (e[0] * e[1]).item<double>() * tau_e);
  // ... and each loss's geometric mean is the same: sqrt(b0 b1) = tau_b.
  EXPECT_NEAR(std::sqrt((b[0] * b[1]).item<double>()), tau_b, 1e-12 * tau_b);
}

TEST(BayesAggVariants, CheckpointKeepsRunningStatisticsAndNoise) {
  const MixedSetup s;
  const BayesAggOptions o = BayesAggOptions()
                                .refresh(PosteriorRefresh::running)
                                .noise(ObservationNoise::estimated)
                                .weighting(Weighting::snr)
                                .centre(PosteriorCentre::head)
                                .seed(3);
  BayesAgg a(s.groups, 4, o);
  s.warm_up(a);
  s.step(a);
  torch::serialize::OutputArchive out;
  a.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  BayesAgg b(s.groups, 4, o);
  torch::serialize::InputArchive in;
  std::istringstream is(bytes.str());
  in.load_from(is);
  b.load(in);
  // Both continue identically.
  const at::Tensor da = s.step(a), db = s.step(b);
  EXPECT_TRUE(at::equal(da, db));
  EXPECT_TRUE(at::equal(a.running_statistics()[1].curvature, b.running_statistics()[1].curvature));
  EXPECT_TRUE(at::equal(a.observation_noise()[0], b.observation_noise()[0]));
}

TEST(BayesAggVariants, ReferenceOptionsAreTheDefaults) {
  const BayesAggOptions r = BayesAggOptions::reference();
  EXPECT_EQ(r.centre(), PosteriorCentre::newton);
  EXPECT_EQ(r.refresh(), PosteriorRefresh::epoch);
  EXPECT_EQ(r.noise(), ObservationNoise::fixed);
  EXPECT_EQ(r.weighting(), Weighting::precision);
  EXPECT_EQ(r.scale(), GradientScale::average);
  std::ostringstream os;
  os << r;
  EXPECT_NE(os.str().find("centre=newton, refresh=epoch, noise=fixed, weighting=precision, "
                          "scale=average"),
            std::string::npos)
      << os.str();
}

TEST(BayesAggVariants, SumScaleIsTheAverageTimesTheTaskCount) {
  const MixedSetup s;  // 2 regression outputs + 1 multiclass group: 3 tasks
  BayesAgg avg(s.groups, 4, BayesAggOptions().seed(5));
  BayesAgg sum(s.groups, 4, BayesAggOptions().seed(5).scale(GradientScale::sum));
  s.warm_up(avg);
  s.warm_up(sum);
  const at::Tensor a = s.step(avg), b = s.step(sum);
  EXPECT_LT(max_abs(b - 3 * a), 1e-6 * max_abs(b));
  EXPECT_EQ(parse_gradient_scale("sum"), GradientScale::sum);
  EXPECT_THROW(parse_gradient_scale("max"), c10::Error);
}
