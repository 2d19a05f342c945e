#pragma once
/// The soft actor-critic agent of IGBv2 (Dai et al., UAI 2023), as in the authors' IGB4MTL code
/// (`methods/SAC_Agent.py`, itself after XinJingHao/SAC-Continuous-Pytorch), written with ATen
/// and autograd:
///
/// - actor: Linear(S, H) - ReLU - Linear(H, H) - ReLU, then Linear(H, A) for the mean and
///   Linear(H, A) for log std (clamped to [-20, 2]); action `a = A softmax(u)`, `u ~ N(mu, std)`
///   reparameterised; `log pi(a) = sum log N(u) - sum 2 (log 2 - u - softplus(-2u))` (the
///   reference's formula, kept as is);
/// - twin critics Linear(S + A, H) - ReLU - Linear(H, H) - ReLU - Linear(H, 1) with Polyak-averaged
///   targets (tau);
/// - adaptive entropy temperature (target entropy -A), all three optimised by Adam with `sac_lr`;
/// - a ring replay buffer of (state, action, reward, next state).
///
/// Layers are initialised like `torch.nn.Linear` (uniform in +-1/sqrt(fan_in)); every random
/// number comes from the agent's seeded generator. Float32 like the reference.

#include "bayesagg/methods/options.h"
#include "bayesagg/methods/small_adam.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bayesagg {

class SacAgent {
 public:
  SacAgent(int64_t state_dim, int64_t action_dim, const IgbV2Options& options, uint64_t seed);
  /// An action [A] for a state [S] (stochastic unless `deterministic`), without gradients.
  at::Tensor act(const at::Tensor& state, bool deterministic);
  /// Appends a transition to the replay buffer (overwriting the oldest when full).
  void add(const at::Tensor& state, const at::Tensor& action, double reward,
           const at::Tensor& next_state);
  /// One SAC update on a batch of `int(batch_size * k / 2)` transitions sampled from the buffer
  /// (the reference's `train(replay_buffer, k)`).
  void train(double k);
  int64_t buffer_size() const { return size_; }
  int64_t buffer_capacity() const { return capacity_; }
  double alpha() const { return alpha_; }
  int64_t updates() const { return updates_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix);

 private:
  std::pair<at::Tensor, at::Tensor> actor_forward(const at::Tensor& state, bool deterministic,
                                                  bool with_logprob);
  std::pair<at::Tensor, at::Tensor> critic_forward(const std::vector<at::Tensor>& critic,
                                                   const at::Tensor& state, const at::Tensor& action) const;

  int64_t state_dim_, action_dim_;
  IgbV2Options options_;
  at::Generator generator_;
  std::vector<at::Tensor> actor_;          // w1, b1, w2, b2, w_mu, b_mu, w_ls, b_ls
  std::vector<at::Tensor> critic_;         // Q1: w1, b1, w2, b2, w3, b3; Q2: the same
  std::vector<at::Tensor> critic_target_;  // detached copies
  at::Tensor log_alpha_;                   // float64 scalar, like the reference
  double alpha_;
  SmallAdam actor_opt_, critic_opt_, alpha_opt_;
  at::Tensor states_, actions_, rewards_, next_states_;
  int64_t capacity_, ptr_ = 0, size_ = 0, updates_ = 0;
};

}  // namespace bayesagg
