// Loss weightings on given loss histories.
#include "bayesagg/methods/weightings.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <cmath>

using namespace bayesagg;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }
at::Tensor vec(std::vector<double> v) { return at::tensor(v, at::kDouble); }

}  // namespace

TEST(Dwa, WeightsByHandWithTemperatureTwo) {
  // r = L(e-1) / L(e-2) = (1/2, 2/1); w = 2 softmax(r / 2).
  const at::Tensor w = dwa_weights(2, vec({1.0, 2.0}), vec({2.0, 1.0}));
  const double e1 = std::exp(0.25), e2 = std::exp(1.0);
  EXPECT_NEAR(w[0].item<double>(), 2 * e1 / (e1 + e2), 1e-14);
  EXPECT_NEAR(w[1].item<double>(), 2 * e2 / (e1 + e2), 1e-14);
}

TEST(Dwa, AllOnesUntilTwoEpochsAreFinished) {
  EXPECT_TRUE(at::equal(dwa_weights(3, {}, {}), at::ones({3}, at::kDouble)));
  EXPECT_TRUE(at::equal(dwa_weights(3, vec({1, 2, 3}), {}), at::ones({3}, at::kDouble)));
}

TEST(EpochLossMeans, KeepsTheMeansOfTheLastTwoEpochs) {
  EpochLossMeans m;
  m.add(vec({1, 2}));
  m.add(vec({3, 4}));
  m.end_epoch();
  m.end_epoch();  // an epoch without steps is skipped
  m.add(vec({5, 5}));
  m.end_epoch();
  EXPECT_EQ(m.epochs(), 2);
  EXPECT_TRUE(at::allclose(m.before_last(), vec({2, 3})));
  EXPECT_TRUE(at::allclose(m.last(), vec({5, 5})));
}

TEST(Rlw, WeightsAreASoftmaxOfNormalsFromTheGenerator) {
  auto a = gen(3), b = gen(3);
  const at::Tensor w = rlw_weights(4, a);
  EXPECT_NEAR(w.sum().item<double>(), 1.0, 1e-14);
  EXPECT_GT(w.min().item<double>(), 0.0);
  EXPECT_TRUE(at::allclose(w, at::softmax(at::randn({4}, b, at::kDouble), 0)));
  EXPECT_NEAR(rlw_weights(4, a, RlwOptions().scale_by_tasks(true)).sum().item<double>(), 4.0, 1e-13);
}

TEST(Uw, LogVariancesTakeAnAdamStepOnTheirExactGradient) {
  UncertaintyWeighting uw(2, UwOptions());
  EXPECT_TRUE(at::allclose(uw.weights(), vec({0.5, 0.5})));
  // d/ds (e^-s L + s) / 2 at s = 0: (1 - L) / 2 = (-0.5, 0.25). Adam's first step: -lr * sign.
  uw.step(vec({2.0, 0.5}));
  EXPECT_NEAR(uw.log_variances()[0].item<double>(), 0.025, 1e-8);
  EXPECT_NEAR(uw.log_variances()[1].item<double>(), -0.025, 1e-8);
  EXPECT_NEAR(uw.weights()[0].item<double>(), 0.5 * std::exp(-0.025), 1e-8);
}

TEST(Famo, WeightsAndLogitUpdateByHand) {
  FamoWeighting famo(2, FamoOptions());
  // z = (1/2, 1/2), D = L + 1e-8; w = z / sum(z / D).
  const at::Tensor L = vec({1.0, 4.0});
  const double c = 0.5 / (1.0 + 1e-8) + 0.5 / (4.0 + 1e-8);
  EXPECT_NEAR(famo.weights(L)[0].item<double>(), 0.5 / c, 1e-12);
  EXPECT_NEAR(famo.weights(L)[1].item<double>(), 0.5 / c, 1e-12);
  // The objective's gradient w.r.t. L_t is w_t / D_t = z_t / (c D_t): proportional to 1/L_t.
  const at::Tensor Lg = L.clone().requires_grad_();
  famo.objective(Lg).backward();
  EXPECT_NEAR(Lg.grad()[0].item<double>() / Lg.grad()[1].item<double>(), 4.0, 1e-7);
  // Task 0 improved (log 1 -> log 0.5), task 1 did not: delta = (log 2, 0); the softmax Jacobian
  // product is z (delta - z.delta) = (log 2 / 4, -log 2 / 4); Adam's first step moves the logits by
  // -lr * sign: task 1 (which did not improve) gains weight.
  famo.update(vec({1.0, 4.0}), vec({0.5, 4.0}));
  EXPECT_NEAR(famo.logits()[0].item<double>(), -0.025, 1e-7);
  EXPECT_NEAR(famo.logits()[1].item<double>(), 0.025, 1e-7);
}

TEST(IgbV2, RandomWeightsFirstThenTheAgentsWeightsWhichItTrains) {
  const IgbV2Options o = IgbV2Options()
                             .base_epoch(0)
                             .start_epoch(2)
                             .update_after(1)
                             .update_every(2)
                             .hidden(8)
                             .batch_size(8)
                             .buffer_size(16);
  IgbV2Weighting igb(3, o, 5);
  auto g = gen(1);
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    at::Tensor sum = at::zeros({3}, at::kDouble);
    for (int step = 0; step < 6; ++step) {
      const at::Tensor L = at::rand({3}, g, at::kDouble) + 0.5;
      sum += L;
      const at::Tensor w = igb.weights(L, epoch);
      // Both phases give T softmax(.) weights.
      EXPECT_NEAR(w.sum().item<double>(), 3.0, 1e-5);
      EXPECT_GT(w.min().item<double>(), 0.0);
    }
    igb.end_epoch(epoch, sum / 6);
    if (epoch == 0) {
      ASSERT_TRUE(igb.base_losses().defined());
      EXPECT_EQ(igb.agent().buffer_size(), 0);  // transitions start once the base losses exist
    }
  }
  // 18 transitions after epoch 0 into a ring of 16; updates every 2 steps from epoch 1.
  EXPECT_EQ(igb.agent().buffer_size(), 16);
  EXPECT_GT(igb.agent().updates(), 0);
  EXPECT_EQ(igb.steps(), 24);
}

TEST(Sac, ActionsAreTScaledSoftmaxesAndTrainingKeepsThemFinite) {
  SacAgent agent(2, 2, IgbV2Options().hidden(16).batch_size(16).buffer_size(64), 3);
  auto g = gen(2);
  for (int i = 0; i < 40; ++i) {
    const at::Tensor s = at::rand({2}, g, at::kFloat);
    const at::Tensor a = agent.act(s, false);
    EXPECT_NEAR(a.sum().item<double>(), 2.0, 1e-5);
    // Reward the action that puts weight on the first task.
    agent.add(s, a, a[0].item<double>() - 1.0, at::rand({2}, g, at::kFloat));
  }
  for (int i = 0; i < 20; ++i) agent.train(1.5);
  EXPECT_EQ(agent.updates(), 20);
  EXPECT_TRUE(std::isfinite(agent.alpha()));
  EXPECT_TRUE(at::isfinite(agent.act(at::rand({2}, g, at::kFloat), true)).all().item<bool>());
}
