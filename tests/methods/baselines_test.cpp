// The baselines through the trainer-facing Method interface on a tiny model.
#include "bayesagg/core/losses.h"
#include "bayesagg/methods/baselines.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/serialize/archive.h>

#include <sstream>

using namespace bayesagg;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

/// h = tanh(x A^T + a) [B, 4]; a regression head with 2 outputs and a binary head with 1 task.
struct Tiny {
  std::vector<TaskGroup> groups{TaskGroup(GroupType::regression, 2), TaskGroup(GroupType::binary, 1)};
  at::Tensor A, a;
  std::vector<Head> heads;
  explicit Tiny(uint64_t seed) {
    auto r = gen(seed);
    A = (at::randn({4, 3}, r, at::kFloat) * 0.5).requires_grad_();
    a = (at::randn({4}, r, at::kFloat) * 0.1).requires_grad_();
    for (const auto& g : groups) {
      heads.push_back({(at::randn({g.head_rows(), 4}, r, at::kFloat) * 0.5).requires_grad_(),
                       (at::randn({g.head_rows()}, r, at::kFloat) * 0.1).requires_grad_()});
    }
  }
  std::vector<at::Tensor> params() const {
    std::vector<at::Tensor> p{A, a};
    for (const auto& h : heads) {
      p.push_back(h.weight);
      p.push_back(h.bias);
    }
    return p;
  }
  void zero_grad() {
    for (auto& p : params()) p.mutable_grad() = at::Tensor();
  }
  Step step(uint64_t batch_seed, int64_t epoch = 0, int64_t B = 16) {
    auto r = gen(batch_seed);
    const at::Tensor x = at::randn({B, 3}, r, at::kFloat);
    const Labels y{at::randn({B, 2}, r, at::kFloat), at::bernoulli(at::full({B, 1}, 0.5), r)};
    Step s;
    s.representation = at::tanh(at::linear(x, A, a));
    std::vector<at::Tensor> l;
    for (size_t g = 0; g < groups.size(); ++g) {
      l.push_back(task_losses(groups[g], head_forward(heads[g], s.representation), y[g]));
    }
    s.losses = at::cat(l);
    s.heads = heads;
    s.labels = y;
    s.shared_parameters = {A, a};
    s.epoch = epoch;
    return s;
  }
  std::vector<at::Tensor> grads() const {
    std::vector<at::Tensor> g;
    for (const auto& p : params()) g.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
    return g;
  }
};

at::Tensor flat(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> f;
  for (const auto& t : ts) f.push_back(t.reshape({-1}).to(at::kDouble));
  return at::cat(f);
}

/// Settings that let every stateful method reach its interesting phase within a few epochs.
MethodConfig small_config() {
  MethodConfig c;
  c.seed = 17;
  c.weighting.igbv2(IgbV2Options().base_epoch(0).start_epoch(1).update_after(1).update_every(2).hidden(8).batch_size(8).buffer_size(32));
  c.gradient.nashmtl(NashMtlOptions().update_weights_every(2));
  return c;
}

/// Runs `epochs` x `steps` backward passes (no parameter updates; the batch changes every step).
void run(Method& m, Tiny& model, int64_t epochs, int64_t steps, uint64_t seed0) {
  for (int64_t e = 0; e < epochs; ++e) {
    m.on_epoch_start(e);
    for (int64_t s = 0; s < steps; ++s) {
      model.zero_grad();
      Step st = model.step(seed0 + static_cast<uint64_t>(e * steps + s), e);
      m.backward(st);
    }
    m.on_epoch_end(e);
  }
}

}  // namespace

TEST(Baselines, EveryNameIsRegisteredAndLeavesFiniteGradientsOnAllParameters) {
  const auto names = method_names();
  for (const auto& n : baseline_method_names()) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
    Tiny model(1);
    auto m = make_method(n, model.groups, 4, small_config());
    EXPECT_EQ(m->name(), n);
    EXPECT_FALSE(m->describe().empty());
    EXPECT_TRUE(m->needs().count(Need::losses)) << n;
    run(*m, model, 2, 3, 100);
    for (const auto& g : model.grads()) {
      ASSERT_TRUE(g.defined()) << n;
      EXPECT_TRUE(at::isfinite(g).all().item<bool>()) << n;
    }
    EXPECT_GT(flat(model.grads()).abs().sum().item<double>(), 0.0) << n;
  }
  EXPECT_THROW(make_method("nope", Tiny(1).groups, 4, {}), c10::Error);
}

TEST(Baselines, GradientMethodWritesTheAggregatedDirectionAndTheHeadsGetTheSumsGradient) {
  Tiny model(2);
  auto m = make_method("mgda", model.groups, 4, {});
  EXPECT_TRUE(m->needs().count(Need::shared_grads));
  Step st = model.step(5);
  // Expected: G of the trunk, MGDA on it; heads: gradient of sum_t L_t.
  std::vector<at::Tensor> rows;
  for (int64_t t = 0; t < 3; ++t) {
    rows.push_back(flat(torch::autograd::grad({st.losses[t]}, {model.A, model.a}, {}, true)));
  }
  const at::Tensor expected = mgda(at::stack(rows)).direction;
  const auto head_params = std::vector<at::Tensor>{model.heads[0].weight, model.heads[0].bias,
                                                   model.heads[1].weight, model.heads[1].bias};
  const at::Tensor expected_heads = flat(torch::autograd::grad({st.losses.sum()}, head_params, {}, true));
  m->backward(st);
  EXPECT_LT((flat({model.A.grad(), model.a.grad()}) - expected).abs().max().item<double>(), 1e-6);
  EXPECT_LT((flat({model.heads[0].weight.grad(), model.heads[0].bias.grad(), model.heads[1].weight.grad(),
                   model.heads[1].bias.grad()}) -
             expected_heads)
                .abs()
                .max()
                .item<double>(),
            1e-6);
}

TEST(Baselines, WeightedHeadsOptionScalesTheHeadGradientsByTheWeights) {
  Tiny model(2);
  MethodConfig c;
  c.gradient.heads(HeadGradient::weighted);
  auto m = make_method("imtlg", model.groups, 4, c);
  Step st = model.step(5);
  m->backward(st);
  const auto d = m->diagnostics();
  // Head 1 (binary, task 2) gets w_2 dL_2.
  Tiny ref(2);
  Step rs = ref.step(5);
  const at::Tensor g = torch::autograd::grad({rs.losses[2]}, {ref.heads[1].weight})[0];
  EXPECT_LT((model.heads[1].weight.grad() - d.at("weight_2") * g).abs().max().item<double>(), 1e-6);
}

TEST(Baselines, RepresentationLevelVariantBackpropagatesTheAggregatedDLdh) {
  Tiny model(3);
  auto m = make_method("mgdaub", model.groups, 4, {});
  EXPECT_TRUE(m->needs().count(Need::representation_grads));
  Step st = model.step(6);
  std::vector<at::Tensor> rows;
  for (int64_t t = 0; t < 3; ++t) {
    rows.push_back(torch::autograd::grad({st.losses[t]}, {st.representation}, {}, true)[0].to(at::kDouble).reshape({-1}));
  }
  const at::Tensor dh = mgda(at::stack(rows)).direction.reshape(st.representation.sizes()).to(at::kFloat);
  const auto expected = torch::autograd::grad({st.representation}, {model.A, model.a}, {dh}, true);
  m->backward(st);
  EXPECT_LT((model.A.grad() - expected[0]).abs().max().item<double>(), 1e-6);
  EXPECT_LT((model.a.grad() - expected[1]).abs().max().item<double>(), 1e-6);
}

// Data-parallel MGDA-UB / Aligned-MTL-UB, one process emulating rank 0 of two: its step sees the
// first 8 of 16 rows of h (the losses are the whole batch's, so its gradients of h are those rows
// of the one-process ones), and `reduce_gram` adds the other rows' Gram matrix. The weights are
// the one-process weights, and the trunk gets the one-process direction's first 8 rows.
TEST(Baselines, RepresentationLevelWeightsFromTheRanksGramMatricesEqualOneProcess) {
  for (const std::string name : {"mgdaub", "alignedmtlub"}) {
    Tiny model(3);
    auto r = gen(6);
    const at::Tensor x = at::randn({16, 3}, r, at::kFloat);
    const Labels y{at::randn({16, 2}, r, at::kFloat), at::bernoulli(at::full({16, 1}, 0.5), r)};
    const auto losses_of = [&](const at::Tensor& h) {
      std::vector<at::Tensor> l;
      for (size_t g = 0; g < model.groups.size(); ++g) {
        l.push_back(task_losses(model.groups[g], head_forward(model.heads[g], h), y[g]));
      }
      return at::cat(l);
    };
    // One process: the rows G [T, 16 * 4] and the aggregate.
    const at::Tensor h_full = at::tanh(at::linear(x, model.A, model.a));
    const at::Tensor l_full = losses_of(h_full);
    std::vector<at::Tensor> rows;
    for (int64_t t = 0; t < 3; ++t) {
      rows.push_back(torch::autograd::grad({l_full[t]}, {h_full}, {}, true)[0].to(at::kDouble).reshape({-1}));
    }
    const at::Tensor G = at::stack(rows);
    const GradientAggregate want = name == "mgdaub" ? mgda(G) : aligned_mtl(G);
    const at::Tensor other = G.slice(1, 32, 64);
    // Rank 0's step.
    const at::Tensor h = at::tanh(at::linear(x, model.A, model.a));
    const at::Tensor h0 = h.slice(0, 0, 8);
    Step st;
    st.representation = h0;
    st.losses = losses_of(at::cat({h0, h.slice(0, 8, 16).detach()}));
    st.heads = model.heads;
    st.labels = y;
    st.shared_parameters = {model.A, model.a};
    st.reduce_gram = [&](const at::Tensor& A) { A.add_(at::mm(other, other.t())); };
    const at::Tensor dh0 =
        want.direction.reshape({16, 4}).slice(0, 0, 8).to(at::kFloat).contiguous();
    const auto expected = torch::autograd::grad({h0}, {model.A, model.a}, {dh0}, true);
    auto m = make_method(name, model.groups, 4, {});
    m->backward(st);
    const auto d = m->diagnostics();
    for (int64_t t = 0; t < 3; ++t) {
      EXPECT_NEAR(d.at("weight_" + std::to_string(t)), want.weights[t].item<double>(), 1e-9)
          << name << " task " << t;
    }
    EXPECT_LT((model.A.grad() - expected[0]).abs().max().item<double>(), 1e-6) << name;
    EXPECT_LT((model.a.grad() - expected[1]).abs().max().item<double>(), 1e-6) << name;
  }
  // GradDrop on the representation needs every example's gradients: refused with a reducer.
  Tiny model(3);
  auto m = make_method("graddrop", model.groups, 4, {});
  Step st = model.step(6);
  st.reduce_gram = [](const at::Tensor&) {};
  EXPECT_THROW(m->backward(st), c10::Error);
}

TEST(Baselines, GradientsAccumulateIntoExistingGrad) {
  Tiny model(4);
  auto m = make_method("pcgrad", model.groups, 4, {});
  Step s1 = model.step(1);
  m->backward(s1);
  const at::Tensor once = model.A.grad().clone();
  auto m2 = make_method("pcgrad", model.groups, 4, {});
  Step s2 = model.step(1);
  m2->backward(s2);
  EXPECT_TRUE(at::allclose(model.A.grad(), 2 * once, 1e-5, 1e-6));
}

TEST(Baselines, NashMtlReusesItsWeightsBetweenUpdates) {
  Tiny model(5);
  MethodConfig c;
  c.gradient.nashmtl(NashMtlOptions().update_weights_every(2));
  auto m = make_method("nashmtl", model.groups, 4, c);
  run(*m, model, 1, 1, 1);
  const auto d1 = m->diagnostics();
  run(*m, model, 1, 1, 2);
  const auto d2 = m->diagnostics();
  for (const char* k : {"weight_0", "weight_1", "weight_2"}) EXPECT_EQ(d1.at(k), d2.at(k)) << k;
  run(*m, model, 1, 1, 3);
  EXPECT_NE(m->diagnostics().at("weight_0"), d1.at("weight_0"));
  EXPECT_LE(m->diagnostics().at("direction_norm"), 1.0 + 1e-6);  // max_norm 1
  EXPECT_EQ(m->diagnostics().at("solver_failures"), 0.0);
}

TEST(Baselines, DwaMethodUsesTheEpochMeansOfTheTwoPreviousEpochs) {
  auto m = make_method("dwa", {TaskGroup(GroupType::regression, 1), TaskGroup(GroupType::regression, 1)}, 1, {});
  const auto epoch = [&](int64_t e, std::vector<std::vector<double>> losses) {
    m->on_epoch_start(e);
    for (const auto& l : losses) {
      at::Tensor x = at::ones({2}, at::kDouble).requires_grad_();
      Step s;
      s.losses = x * at::tensor(l, at::kDouble);
      m->backward(s);
    }
    m->on_epoch_end(e);
    return m->diagnostics();
  };
  EXPECT_EQ(epoch(0, {{1, 3}, {3, 1}}).at("weight_0"), 1.0);  // means (2, 2)
  EXPECT_EQ(epoch(1, {{1, 4}}).at("weight_1"), 1.0);          // means (1, 4)
  const auto d = epoch(2, {{1, 1}});
  // r = (1/2, 4/2) -> w = 2 softmax(r / 2).
  const double e1 = std::exp(0.25), e2 = std::exp(1.0);
  EXPECT_NEAR(d.at("weight_0"), 2 * e1 / (e1 + e2), 1e-12);
  EXPECT_NEAR(d.at("weight_1"), 2 * e2 / (e1 + e2), 1e-12);
}

TEST(Baselines, StateRoundTripGivesAnIdenticalNextStep) {
  // For every baseline (stateful or not): run, checkpoint, restore into a fresh instance; the
  // next step of both must give the same gradients bit for bit.
  for (const auto& n : baseline_method_names()) {
    Tiny model(7);
    const MethodConfig c = small_config();
    auto a = make_method(n, model.groups, 4, c);
    run(*a, model, 3, 2, 40);
    std::stringstream buffer;
    {
      torch::serialize::OutputArchive out;
      a->save(out);
      out.save_to(buffer);
    }
    auto b = make_method(n, model.groups, 4, c);
    {
      torch::serialize::InputArchive in;
      in.load_from(buffer);
      b->load(in);
    }
    for (int k = 0; k < 2; ++k) {
      a->on_epoch_start(3);
      b->on_epoch_start(3);
      model.zero_grad();
      Step sa = model.step(90 + k, 3);
      a->backward(sa);
      const auto ga = model.grads();
      model.zero_grad();
      Step sb = model.step(90 + k, 3);
      b->backward(sb);
      const auto gb = model.grads();
      for (size_t i = 0; i < ga.size(); ++i) {
        EXPECT_TRUE(at::equal(ga[i], gb[i])) << n << " step " << k << " parameter " << i;
      }
      EXPECT_EQ(a->diagnostics(), b->diagnostics()) << n;
    }
  }
}

TEST(Baselines, AFreshInstanceDiffersFromARestoredOneForStatefulMethods) {
  // Guards the round-trip test: state that matters must change the next step. (PCGrad's and
  // GradDrop's only state is their generator, whose draws change nothing when no pair conflicts or
  // all signs agree, as on this batch; they are left out.)
  for (const char* n : {"rlw", "dwa", "uw", "famo", "igbv2", "gradvac", "nashmtl", "dbmtl"}) {
    Tiny model(7);
    const MethodConfig c = small_config();
    auto a = make_method(n, model.groups, 4, c);
    run(*a, model, 3, 2, 40);
    run(*a, model, 1, 1, 60);  // Nash-MTL (update every 2): the next step reuses the weights
    auto fresh = make_method(n, model.groups, 4, c);
    a->on_epoch_start(3);
    fresh->on_epoch_start(3);
    model.zero_grad();
    Step sa = model.step(90, 3);
    a->backward(sa);
    const at::Tensor ga = flat(model.grads());
    model.zero_grad();
    Step sb = model.step(90, 3);
    fresh->backward(sb);
    EXPECT_FALSE(at::equal(ga, flat(model.grads()))) << n;
  }
}

TEST(Baselines, CheckpointForAnotherTaskCountIsRejected) {
  Tiny model(1);
  auto a = make_method("uw", model.groups, 4, {});
  torch::serialize::OutputArchive out;
  a->save(out);
  std::stringstream buffer;
  out.save_to(buffer);
  auto b = make_method("uw", {TaskGroup(GroupType::regression, 1)}, 4, {});
  torch::serialize::InputArchive in;
  in.load_from(buffer);
  EXPECT_THROW(b->load(in), c10::Error);
}
