#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/core/losses.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <sstream>

using namespace bayesagg;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

/// A tiny model: h = elu(x A^T) with A [d, 3]; mixed heads.
struct Model {
  std::vector<TaskGroup> groups{TaskGroup(GroupType::regression, 2),
                                TaskGroup(GroupType::binary, 2),
                                TaskGroup(GroupType::multiclass, 3)};
  at::Tensor a;
  std::vector<Head> heads;
  explicit Model(uint64_t seed, int64_t d = 4) {
    auto r = gen(seed);
    a = (at::randn({d, 3}, r, at::kFloat) * 0.5).requires_grad_();
    for (const auto& g : groups) {
      heads.push_back({(at::randn({g.head_rows(), d}, r, at::kFloat) * 0.3).requires_grad_(),
                       at::zeros({g.head_rows()}, at::kFloat).requires_grad_()});
    }
  }
  at::Tensor forward(const at::Tensor& x) const { return at::elu(at::matmul(x, a.t())); }
  at::Tensor losses(const at::Tensor& h, const Labels& y) const {
    std::vector<at::Tensor> l;
    for (size_t g = 0; g < groups.size(); ++g) {
      l.push_back(task_losses(groups[g], head_forward(heads[g], h), y[g]));
    }
    return at::cat(l);
  }
};

struct Batch {
  at::Tensor x;
  Labels y;
};

Batch make_batch(int64_t b, uint64_t seed) {
  auto r = gen(seed);
  return {at::randn({b, 3}, r, at::kFloat),
          {at::randn({b, 2}, r, at::kFloat), at::bernoulli(at::full({b, 2}, 0.5), r),
           at::randint(3, {b}, r, at::kLong)}};
}

std::vector<Head> detached(const std::vector<Head>& heads) {
  std::vector<Head> out;
  for (const auto& h : heads) out.push_back({h.weight.detach(), h.bias.detach()});
  return out;
}

BayesAggOptions small_options() { return BayesAggOptions().mc_samples(256).seed(9); }

}  // namespace

TEST(BayesAgg, ValidatesOptionsAtConstruction) {
  const std::vector<TaskGroup> g{TaskGroup(GroupType::binary, 2)};
  EXPECT_THROW(BayesAgg(g, 4, BayesAggOptions().gamma_classification(-1)), c10::Error);
  EXPECT_THROW(BayesAgg(g, 4, BayesAggOptions().mc_samples(1)), c10::Error);
  EXPECT_THROW(BayesAgg({}, 4), c10::Error);
  EXPECT_THROW(BayesAgg(g, 0), c10::Error);
}

TEST(BayesAgg, BackwardGivesHeadsTheirOrdinaryGradientAndTheTrunkDLdh) {
  Model model(1);
  BayesAgg agg(model.groups, 4, small_options());
  const Batch warm = make_batch(32, 2), batch = make_batch(8, 3);
  agg.observe(model.forward(warm.x).detach(), warm.y);
  agg.end_epoch();

  const at::Tensor h = model.forward(batch.x);
  const at::Tensor losses = model.losses(h, batch.y);
  // What the heads should get: the gradient of the summed losses.
  std::vector<at::Tensor> head_params;
  for (const auto& hd : model.heads) {
    head_params.push_back(hd.weight);
    head_params.push_back(hd.bias);
  }
  const auto expected = torch::autograd::grad({losses.sum()}, head_params, {}, true);
  // What the trunk should get: dL/dh from a twin with the same generator state.
  BayesAgg twin(model.groups, 4, small_options());
  twin.observe(model.forward(warm.x).detach(), warm.y);
  twin.end_epoch();
  const auto full = twin.full_data_posteriors(
      twin.statistics(model.forward(warm.x).detach(), warm.y, detached(model.heads)),
      detached(model.heads));
  const Aggregation want = twin.aggregate(full, h.detach(), batch.y, detached(model.heads));
  const at::Tensor want_dh = want.dL_dh.to(at::kFloat);
  const at::Tensor ls_dh = torch::autograd::grad({losses.sum()}, {h}, {}, true)[0];

  const at::Tensor dh = agg.backward(losses, model.heads, h, batch.y);
  // Diagnostics: how far the batch posteriors' means are from the heads, and how the trunk's
  // gradient direction compares with linear scalarisation's.
  ASSERT_EQ(agg.stats().batch_shift.size(), 3u);
  for (size_t g = 0; g < 3; ++g) {
    const at::Tensor phi = head_parameters(model.groups[g], detached(model.heads)[g]);
    EXPECT_NEAR(agg.stats().batch_shift[g], (want.groups[g].posterior.mean - phi).norm().item<double>(),
                1e-9);
  }
  EXPECT_NEAR(agg.stats().dL_dh_norm, dh.norm().item<double>(), 1e-9);
  EXPECT_NEAR(agg.stats().ls_cosine,
              ((dh * ls_dh).sum() / (dh.norm() * ls_dh.norm())).item<double>(), 1e-6);
  EXPECT_LT((dh - want_dh).abs().max().item<double>(), 1e-7);
  for (size_t i = 0; i < head_params.size(); ++i) {
    EXPECT_LT((head_params[i].grad() - expected[i]).abs().max().item<double>(), 1e-6) << i;
  }
  // h = elu(x A^T): dL/dA = (dh * elu'(x A^T))^T x
  const at::Tensor pre = at::matmul(batch.x, model.a.detach().t());
  const at::Tensor elu_grad = at::where(pre > 0, at::ones_like(pre), at::exp(pre));
  const at::Tensor want_a = at::matmul((dh * elu_grad).t(), batch.x);
  EXPECT_LT((model.a.grad() - want_a).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(agg.stats().steps, 1);
}

TEST(BayesAgg, GroupsRunConcurrentlyWithResultsIndependentOfTheThreadCount) {
  // With several threads and groups that balance, the groups run concurrently, each on one
  // thread, drawing from its own generator (seeded in group order from the method's): so the
  // result is the same to the last bit as with one thread.
  Model model(12, 6);
  model.groups.push_back(TaskGroup(GroupType::multiclass, 3));
  {
    auto r = gen(13);
    model.heads.push_back({at::randn({3, 6}, r, at::kFloat) * 0.3, at::zeros({3}, at::kFloat)});
  }
  ASSERT_EQ(concurrent_group_lanes(model.groups, 6, 2).size(), 2u);
  auto r = gen(14);
  const at::Tensor hw = at::randn({40, 6}, r, at::kFloat), hb = at::randn({16, 6}, r, at::kFloat);
  const auto labels = [&](int64_t n) {
    return Labels{at::randn({n, 2}, r, at::kFloat), at::bernoulli(at::full({n, 2}, 0.5), r),
                  at::randint(3, {n}, r, at::kLong), at::randint(3, {n}, r, at::kLong)};
  };
  const Labels yw = labels(40), yb = labels(16);
  const auto heads = detached(model.heads);
  const auto run = [&](int threads) {
    const int before = at::get_num_threads();
    at::set_num_threads(threads);
    BayesAgg agg(model.groups, 6, small_options().rb_samples(64));
    const auto full = agg.full_data_posteriors(agg.statistics(hw, yw, heads), heads);
    Aggregation out = agg.aggregate(full, hb, yb, heads);
    at::set_num_threads(before);
    return out;
  };
  const Aggregation one = run(1), two = run(2);
  EXPECT_TRUE(at::equal(one.dL_dh, two.dL_dh));
  for (size_t g = 0; g < model.groups.size(); ++g) {
    EXPECT_TRUE(at::equal(one.groups[g].grad_mean, two.groups[g].grad_mean)) << g;
    EXPECT_TRUE(at::equal(one.groups[g].grad_var, two.groups[g].grad_var)) << g;
    EXPECT_TRUE(at::equal(one.groups[g].posterior.mean, two.groups[g].posterior.mean)) << g;
  }
  // The Monte-Carlo group really is random: another seed changes its moments, not the exact ones.
  BayesAgg other(model.groups, 6, small_options().rb_samples(64).seed(10));
  const auto full = other.full_data_posteriors(other.statistics(hw, yw, heads), heads);
  const Aggregation three = other.aggregate(full, hb, yb, heads);
  EXPECT_TRUE(at::equal(three.groups[0].grad_mean, one.groups[0].grad_mean));  // regression
  EXPECT_FALSE(at::equal(three.groups[3].grad_var, one.groups[3].grad_var));  // multiclass (rb)
}

TEST(BayesAgg, GroupsRunConcurrentlyOnlyWhenTheyBalance) {
  using Lanes = std::vector<std::vector<size_t>>;
  const TaskGroup mc10(GroupType::multiclass, 10), mc5(GroupType::multiclass, 5),
      mc2(GroupType::multiclass, 2), reg(GroupType::regression, 1), bin(GroupType::binary, 14);
  // Costs: (K (d + 1))^3, o (d + 1)^3, d^3.
  EXPECT_DOUBLE_EQ(group_step_cost(mc10, 64), std::pow(650.0, 3));
  EXPECT_DOUBLE_EQ(group_step_cost(bin, 64), 14 * std::pow(65.0, 3));
  EXPECT_DOUBLE_EQ(group_step_cost(reg, 64), std::pow(64.0, 3));
  // multi-fashion: two equal groups, one per thread.
  EXPECT_EQ(concurrent_group_lanes({mc10, mc10}, 64, 2), (Lanes{{0}, {1}}));
  EXPECT_EQ(concurrent_group_lanes({mc10, mc10}, 64, 1), Lanes{});
  EXPECT_EQ(concurrent_group_lanes({mc10}, 64, 2), Lanes{});
  // UTKFace: the 5-class group is 93% of the work; all threads go to each group in turn.
  EXPECT_EQ(concurrent_group_lanes({reg, mc2, mc5}, 256, 2), Lanes{});
  // Longest first onto the least loaded lane; lanes list their groups in order.
  EXPECT_EQ(concurrent_group_lanes({mc2, mc10, mc10, mc5}, 64, 2), (Lanes{{1, 3}, {0, 2}}));
  EXPECT_EQ(concurrent_group_lanes({mc10, mc10, mc10}, 64, 4), (Lanes{{0}, {1}, {2}}));
}

TEST(BayesAgg, FullDataPosteriorsComeFromThePreviousEpoch) {
  Model model(4);
  BayesAgg agg(model.groups, 4, small_options());
  agg.reserve(10);  // smaller than the epoch: storage must grow
  std::vector<at::Tensor> hs;
  Labels ys(3);
  for (int s = 0; s < 3; ++s) {
    const Batch b = make_batch(8, 10 + s);
    const at::Tensor h = model.forward(b.x).detach();
    agg.observe(h, b.y);
    hs.push_back(h);
    for (int g = 0; g < 3; ++g) ys[g] = ys[g].defined() ? at::cat({ys[g], b.y[g]}) : b.y[g];
  }
  agg.end_epoch();
  const Batch b = make_batch(8, 20);
  const at::Tensor h = model.forward(b.x);
  agg.backward(model.losses(h, b.y), model.heads, h, b.y);
  const auto want = agg.full_data_posteriors(
      agg.statistics(at::cat(hs), ys, detached(model.heads)), detached(model.heads));
  ASSERT_EQ(agg.current_full_data_posteriors().size(), 3u);
  for (size_t g = 0; g < 3; ++g) {
    EXPECT_LT((agg.current_full_data_posteriors()[g].mean - want[g].mean).abs().max().item<double>(),
              1e-9);
  }
}

TEST(BayesAgg, SaveAndLoadContinueIdentically) {
  Model model(5);
  BayesAgg agg(model.groups, 4, small_options());
  for (int epoch = 0; epoch < 2; ++epoch) {
    for (int s = 0; s < 2; ++s) {
      const Batch b = make_batch(8, 100 + 10 * epoch + s);
      const at::Tensor h = model.forward(b.x);
      if (epoch == 0) {
        agg.observe(h.detach(), b.y);
      } else {
        agg.backward(model.losses(h, b.y), model.heads, h, b.y);
      }
    }
    if (epoch == 0) agg.end_epoch();
  }
  std::stringstream buffer;
  {
    torch::serialize::OutputArchive out;
    agg.save(out);
    out.save_to(buffer);
  }
  BayesAgg restored(model.groups, 4, small_options().seed(123));  // seed must be overwritten
  {
    torch::serialize::InputArchive in;
    in.load_from(buffer);
    restored.load(in);
  }
  EXPECT_EQ(restored.stats().steps, agg.stats().steps);
  const Batch b = make_batch(8, 200);
  const at::Tensor h = model.forward(b.x).detach();
  const auto heads = detached(model.heads);
  const at::Tensor a = agg.aggregate(agg.current_full_data_posteriors(), h, b.y, heads).dL_dh;
  const at::Tensor r =
      restored.aggregate(restored.current_full_data_posteriors(), h, b.y, heads).dL_dh;
  EXPECT_TRUE(at::equal(a, r));
  // The next epoch's posteriors use what both collected.
  agg.end_epoch();
  restored.end_epoch();
  const at::Tensor h2 = model.forward(b.x);
  const at::Tensor d1 = agg.backward(model.losses(h2, b.y), model.heads, h2, b.y);
  const at::Tensor h3 = model.forward(b.x);
  const at::Tensor d2 = restored.backward(model.losses(h3, b.y), model.heads, h3, b.y);
  EXPECT_TRUE(at::equal(d1, d2));
}
