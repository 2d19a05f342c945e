#include "bayesagg/methods/weightings.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace bayesagg {

// ---------------------------------------------------------------- epoch means

void EpochLossMeans::add(const at::Tensor& losses) {
  const at::Tensor l = losses.detach().to(at::kCPU, at::kDouble).reshape({-1});
  if (!sum_.defined()) sum_ = at::zeros_like(l);
  TORCH_CHECK(sum_.sizes() == l.sizes(), "epoch loss means: ", sum_.numel(), " tasks, got ",
              l.numel());
  sum_.add_(l);
  ++count_;
}

void EpochLossMeans::end_epoch() {
  if (count_ == 0) return;
  before_last_ = last_;
  last_ = sum_ / static_cast<double>(count_);
  sum_.zero_();
  count_ = 0;
  ++epochs_;
}

// ---------------------------------------------------------------- RLW, DWA

at::Tensor rlw_weights(int64_t tasks, at::Generator& generator, const RlwOptions& options) {
  TORCH_CHECK(tasks >= 1, "rlw: needs at least one task");
  at::Tensor w = at::softmax(at::randn({tasks}, generator, at::kDouble), 0);
  if (options.scale_by_tasks()) w = w * static_cast<double>(tasks);
  return w;
}

at::Tensor dwa_weights(int64_t tasks, const at::Tensor& last, const at::Tensor& before_last,
                       const DwaOptions& options) {
  TORCH_CHECK(options.temperature() > 0.0, "dwa: the temperature must be > 0, got ",
              options.temperature());
  if (!last.defined() || !before_last.defined()) return at::ones({tasks}, at::kDouble);
  TORCH_CHECK(last.numel() == tasks && before_last.numel() == tasks, "dwa: loss history is for ",
              last.numel(), " tasks, expected ", tasks);
  const at::Tensor before = before_last.to(at::kDouble).reshape({-1});
  for (int64_t t = 0; t < tasks; ++t) {
    const double v = before[t].item<double>();
    TORCH_CHECK(v > 0.0, "dwa: the loss ratios need positive mean losses, but task ", t,
                " has mean loss ", v, " two epochs ago");
  }
  const at::Tensor r = last.to(at::kDouble).reshape({-1}) / before;
  return static_cast<double>(tasks) * at::softmax(r / options.temperature(), 0);
}

// ---------------------------------------------------------------- UW

UncertaintyWeighting::UncertaintyWeighting(int64_t tasks, UwOptions options)
    : options_(options), log_vars_(at::zeros({tasks}, at::kDouble)), adam_(options.lr()) {
  TORCH_CHECK(tasks >= 1, "uw: needs at least one task");
}

at::Tensor UncertaintyWeighting::weights() const { return 0.5 * at::exp(-log_vars_); }

void UncertaintyWeighting::step(const at::Tensor& losses) {
  const at::Tensor l = losses.detach().to(at::kCPU, at::kDouble).reshape({-1});
  TORCH_CHECK(l.numel() == log_vars_.numel(), "uw: ", log_vars_.numel(), " tasks, got ", l.numel());
  // d/ds of (exp(-s) L + s) / 2.
  adam_.step({log_vars_}, {0.5 * (1.0 - at::exp(-log_vars_) * l)});
}

// ---------------------------------------------------------------- FAMO

FamoWeighting::FamoWeighting(int64_t tasks, FamoOptions options)
    : options_(options),
      logits_(at::zeros({tasks}, at::kDouble)),
      adam_(options.lr(), options.weight_decay()) {
  TORCH_CHECK(tasks >= 1, "famo: needs at least one task");
}

at::Tensor FamoWeighting::weights(const at::Tensor& losses) const {
  const at::Tensor l = losses.detach().to(at::kCPU, at::kDouble).reshape({-1});
  TORCH_CHECK(l.numel() == logits_.numel(), "famo: ", logits_.numel(), " tasks, got ", l.numel());
  const at::Tensor z = at::softmax(logits_, 0);
  const at::Tensor D = l - options_.min_loss() + 1e-8;
  return z / (z / D).sum();
}

at::Tensor FamoWeighting::objective(const at::Tensor& losses) const {
  const at::Tensor w = weights(losses).to(losses.device(), losses.scalar_type());
  return (w * at::log(losses - options_.min_loss() + 1e-8)).sum();
}

void FamoWeighting::update(const at::Tensor& before, const at::Tensor& after) {
  const at::Tensor b = before.detach().to(at::kCPU, at::kDouble).reshape({-1});
  const at::Tensor a = after.detach().to(at::kCPU, at::kDouble).reshape({-1});
  TORCH_CHECK(b.numel() == logits_.numel() && a.numel() == logits_.numel(), "famo: ",
              logits_.numel(), " tasks, got ", b.numel(), " and ", a.numel());
  const at::Tensor delta = at::log(b - options_.min_loss() + 1e-8) - at::log(a - options_.min_loss() + 1e-8);
  // J_softmax^T delta = z * (delta - z^T delta).
  const at::Tensor z = at::softmax(logits_, 0);
  adam_.step({logits_}, {z * (delta - (z * delta).sum())});
}

// ---------------------------------------------------------------- IGBv2

IgbV2Weighting::IgbV2Weighting(int64_t tasks, IgbV2Options options, uint64_t seed)
    : tasks_(tasks),
      options_(options),
      generator_(at::make_generator<at::CPUGeneratorImpl>(seed)),
      agent_(tasks, tasks, options, seed + 0x9e3779b97f4a7c15ULL),
      batch_loss_(at::zeros({2, tasks}, at::kFloat)),
      batch_w_(at::zeros({2, tasks}, at::kFloat)) {
  TORCH_CHECK(tasks >= 1, "igbv2: needs at least one task");
  TORCH_CHECK(options.update_every() >= 1 && options.base_epoch() >= 0 && options.start_epoch() >= 0 &&
                  options.update_after() >= 0,
              "igbv2: invalid epoch settings");
}

at::Tensor IgbV2Weighting::weights(const at::Tensor& losses, int64_t epoch) {
  const at::Tensor l = losses.detach().to(at::kCPU, at::kFloat).reshape({-1});
  TORCH_CHECK(l.numel() == tasks_, "igbv2: ", tasks_, " tasks, got ", l.numel());
  const int64_t other = 1 - slot_;
  batch_loss_[slot_].copy_(l);
  if (base_.defined()) {
    const at::Tensor decrease = (batch_loss_[other] - batch_loss_[slot_]) / base_;
    const double reward = decrease.min().item<double>() * options_.reward_scale();
    agent_.add(batch_loss_[other], batch_w_[other], reward, batch_loss_[slot_]);
  }
  if (epoch >= options_.update_after() && steps_ % options_.update_every() == 0 &&
      agent_.buffer_size() > 0) {
    const double k = 1.0 + static_cast<double>(agent_.buffer_size()) /
                               static_cast<double>(agent_.buffer_capacity());
    const int64_t n = static_cast<int64_t>(static_cast<double>(options_.update_every()) * (k / 2.0));
    for (int64_t i = 0; i < n; ++i) agent_.train(k);
  }
  at::Tensor w;
  if (epoch < options_.start_epoch()) {
    w = static_cast<double>(tasks_) * at::softmax(at::randn({tasks_}, generator_, at::kFloat), 0);
  } else {
    w = agent_.act(batch_loss_[slot_], /*deterministic=*/false);
  }
  batch_w_[slot_].copy_(w);
  ++steps_;
  slot_ = other;
  return w.to(at::kDouble);
}

void IgbV2Weighting::end_epoch(int64_t epoch, const at::Tensor& mean_losses) {
  if (epoch == options_.base_epoch() && mean_losses.defined()) {
    base_ = mean_losses.detach().to(at::kCPU, at::kFloat).reshape({-1}).clone();
  }
}

}  // namespace bayesagg
