#include "bayesagg/methods/sac.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>

namespace bayesagg {
namespace {

/// torch.nn.Linear's initialisation: weight and bias uniform in +-1/sqrt(fan_in).
void add_linear(std::vector<at::Tensor>& params, int64_t in, int64_t out, at::Generator& gen) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  params.push_back((at::rand({out, in}, gen, at::kFloat) * (2 * bound) - bound).requires_grad_());
  params.push_back((at::rand({out}, gen, at::kFloat) * (2 * bound) - bound).requires_grad_());
}

}  // namespace

SacAgent::SacAgent(int64_t state_dim, int64_t action_dim, const IgbV2Options& options, uint64_t seed)
    : state_dim_(state_dim),
      action_dim_(action_dim),
      options_(options),
      generator_(at::make_generator<at::CPUGeneratorImpl>(seed)),
      alpha_(options.alpha()),
      actor_opt_(options.sac_lr()),
      critic_opt_(options.sac_lr()),
      alpha_opt_(options.sac_lr()),
      capacity_(options.buffer_size()) {
  TORCH_CHECK(state_dim >= 1 && action_dim >= 1, "SAC: dimensions must be >= 1");
  TORCH_CHECK(options.buffer_size() >= 1 && options.batch_size() >= 1 && options.hidden() >= 1,
              "SAC: buffer size, batch size and hidden width must be >= 1");
  TORCH_CHECK(options.alpha() > 0.0, "SAC: alpha must be > 0, got ", options.alpha());
  const int64_t H = options.hidden();
  add_linear(actor_, state_dim, H, generator_);
  add_linear(actor_, H, H, generator_);
  add_linear(actor_, H, action_dim, generator_);
  add_linear(actor_, H, action_dim, generator_);
  for (int q = 0; q < 2; ++q) {
    add_linear(critic_, state_dim + action_dim, H, generator_);
    add_linear(critic_, H, H, generator_);
    add_linear(critic_, H, 1, generator_);
  }
  for (const auto& p : critic_) critic_target_.push_back(p.detach().clone());
  log_alpha_ = at::full({}, std::log(options.alpha()), at::kDouble);
  states_ = at::zeros({capacity_, state_dim}, at::kFloat);
  actions_ = at::zeros({capacity_, action_dim}, at::kFloat);
  rewards_ = at::zeros({capacity_, 1}, at::kFloat);
  next_states_ = at::zeros({capacity_, state_dim}, at::kFloat);
}

std::pair<at::Tensor, at::Tensor> SacAgent::actor_forward(const at::Tensor& state,
                                                          bool deterministic, bool with_logprob) {
  const auto& p = actor_;
  at::Tensor x = at::relu(at::linear(state, p[0], p[1]));
  x = at::relu(at::linear(x, p[2], p[3]));
  const at::Tensor mu = at::linear(x, p[4], p[5]);
  const at::Tensor log_std = at::clamp(at::linear(x, p[6], p[7]), -20.0, 2.0);
  const at::Tensor std = at::exp(log_std);
  const at::Tensor u =
      deterministic ? mu : mu + std * at::randn(mu.sizes(), generator_, mu.options().requires_grad(false));
  const at::Tensor a = static_cast<double>(action_dim_) * at::softmax(u, -1);
  at::Tensor logp;
  if (with_logprob) {
    const double half_log_2pi = 0.5 * std::log(2.0 * M_PI);
    const at::Tensor normal = -(u - mu).pow(2) / (2.0 * std.pow(2)) - log_std - half_log_2pi;
    logp = normal.sum(1, /*keepdim=*/true) -
           (2.0 * (std::log(2.0) - u - at::softplus(-2.0 * u))).sum(1, /*keepdim=*/true);
  }
  return {a, logp};
}

std::pair<at::Tensor, at::Tensor> SacAgent::critic_forward(const std::vector<at::Tensor>& c,
                                                           const at::Tensor& state,
                                                           const at::Tensor& action) const {
  const at::Tensor sa = at::cat({state, action}, 1);
  const auto q = [&](size_t o) {
    at::Tensor x = at::relu(at::linear(sa, c[o], c[o + 1]));
    x = at::relu(at::linear(x, c[o + 2], c[o + 3]));
    return at::linear(x, c[o + 4], c[o + 5]);
  };
  return {q(0), q(6)};
}

at::Tensor SacAgent::act(const at::Tensor& state, bool deterministic) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(state.numel() == state_dim_, "SAC: state has ", state.numel(), " values, expected ",
              state_dim_);
  return actor_forward(state.to(at::kFloat).reshape({1, state_dim_}), deterministic, false)
      .first[0]
      .clone();
}

void SacAgent::add(const at::Tensor& state, const at::Tensor& action, double reward,
                   const at::Tensor& next_state) {
  at::NoGradGuard no_grad;
  states_[ptr_].copy_(state.reshape({state_dim_}));
  actions_[ptr_].copy_(action.reshape({action_dim_}));
  rewards_[ptr_].fill_(reward);
  next_states_[ptr_].copy_(next_state.reshape({state_dim_}));
  ptr_ = (ptr_ + 1) % capacity_;
  size_ = std::min(size_ + 1, capacity_);
}

void SacAgent::train(double k) {
  TORCH_CHECK(size_ > 0, "SAC: cannot train on an empty replay buffer");
  const int64_t bs = std::max<int64_t>(1, static_cast<int64_t>(options_.batch_size() * (k / 2.0)));
  const at::Tensor idx = at::randint(0, size_, {bs}, generator_, at::kLong);
  const at::Tensor s = states_.index_select(0, idx), a = actions_.index_select(0, idx);
  const at::Tensor r = rewards_.index_select(0, idx), s2 = next_states_.index_select(0, idx);

  // Critics.
  at::Tensor target;
  {
    at::NoGradGuard no_grad;
    auto [a2, logp2] = actor_forward(s2, false, true);
    auto [t1, t2] = critic_forward(critic_target_, s2, a2);
    target = r + options_.gamma() * (at::min(t1, t2) - alpha_ * logp2);
  }
  {
    auto [q1, q2] = critic_forward(critic_, s, a);
    const at::Tensor q_loss = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean();
    critic_opt_.step(critic_, torch::autograd::grad({q_loss}, critic_));
  }
  // Actor (the critics are not updated by this loss).
  at::Tensor logp_detached;
  {
    auto [a_new, logp] = actor_forward(s, false, true);
    auto [q1, q2] = critic_forward(critic_, s, a_new);
    const at::Tensor a_loss = (alpha_ * logp - at::min(q1, q2)).mean();
    logp_detached = logp.detach();
    actor_opt_.step(actor_, torch::autograd::grad({a_loss}, actor_));
  }
  // Temperature: d/dlog_alpha of -mean(log_alpha (log pi + target entropy)).
  {
    const double target_entropy = -static_cast<double>(action_dim_);
    const at::Tensor g = -(logp_detached.to(at::kDouble) + target_entropy).mean();
    alpha_opt_.step({log_alpha_}, {g});
    alpha_ = std::exp(log_alpha_.item<double>());
  }
  // Polyak averaging of the target critics.
  {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < critic_.size(); ++i) {
      critic_target_[i].mul_(1.0 - options_.tau()).add_(critic_[i].detach(), options_.tau());
    }
  }
  ++updates_;
}

}  // namespace bayesagg
