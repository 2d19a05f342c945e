// Checkpointing of the baselines' state (kept apart: the archive headers are heavy).
#include "bayesagg/methods/baselines.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/serialize/archive.h>

namespace bayesagg {
namespace {

using torch::serialize::InputArchive;
using torch::serialize::OutputArchive;

at::Tensor scalar(double v) { return at::full({}, v, at::kDouble); }
at::Tensor scalar(int64_t v) { return at::full({}, v, at::kLong); }

at::Tensor read(InputArchive& a, const std::string& key) {
  at::Tensor t;
  TORCH_CHECK(a.try_read(key, t), "method checkpoint has no entry '", key, "'");
  return t;
}

/// A possibly undefined tensor.
void put(OutputArchive& a, const std::string& key, const at::Tensor& t) {
  a.write(key + ".defined", scalar(static_cast<int64_t>(t.defined())));
  if (t.defined()) a.write(key, t.detach().clone());
}

at::Tensor get(InputArchive& a, const std::string& key) {
  if (read(a, key + ".defined").item<int64_t>() == 0) return {};
  return read(a, key);
}

int64_t get_int(InputArchive& a, const std::string& key) { return read(a, key).item<int64_t>(); }
double get_double(InputArchive& a, const std::string& key) { return read(a, key).item<double>(); }

void put_generator(OutputArchive& a, const std::string& key, const at::Generator& g) {
  a.write(key, g.get_state());
}

void get_generator(InputArchive& a, const std::string& key, at::Generator& g) {
  g.set_state(read(a, key));
}

/// Copies saved values into existing (possibly grad-requiring) tensors of the same shapes.
void copy_into(std::vector<at::Tensor>& dst, InputArchive& a, const std::string& key) {
  const int64_t n = get_int(a, key + ".count");
  TORCH_CHECK(n == static_cast<int64_t>(dst.size()), "method checkpoint: '", key, "' has ", n,
              " tensors, expected ", dst.size());
  at::NoGradGuard no_grad;
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor t = read(a, key + "." + std::to_string(i));
    TORCH_CHECK(t.sizes() == dst[static_cast<size_t>(i)].sizes(), "method checkpoint: '", key, ".",
                i, "' has shape ", t.sizes(), ", expected ", dst[static_cast<size_t>(i)].sizes());
    dst[static_cast<size_t>(i)].copy_(t);
  }
}

void put_all(OutputArchive& a, const std::string& key, const std::vector<at::Tensor>& ts) {
  a.write(key + ".count", scalar(static_cast<int64_t>(ts.size())));
  for (size_t i = 0; i < ts.size(); ++i) a.write(key + "." + std::to_string(i), ts[i].detach().clone());
}

void check_tasks(InputArchive& a, const std::string& key, int64_t tasks, const std::string& who) {
  const int64_t saved = get_int(a, key);
  TORCH_CHECK(saved == tasks, who, " checkpoint is for ", saved, " tasks, but this method has ",
              tasks);
}

}  // namespace

// ---------------------------------------------------------------- building blocks

void SmallAdam::save(OutputArchive& a, const std::string& p) const {
  a.write(p + ".steps", scalar(steps_));
  a.write(p + ".lr", scalar(lr_));
  put_all(a, p + ".m", m_);
  put_all(a, p + ".v", v_);
}

void SmallAdam::load(InputArchive& a, const std::string& p) {
  steps_ = get_int(a, p + ".steps");
  lr_ = get_double(a, p + ".lr");
  const int64_t n = get_int(a, p + ".m.count");
  m_.clear();
  v_.clear();
  for (int64_t i = 0; i < n; ++i) {
    m_.push_back(read(a, p + ".m." + std::to_string(i)));
    v_.push_back(read(a, p + ".v." + std::to_string(i)));
  }
}

void SacAgent::save(OutputArchive& a, const std::string& p) const {
  a.write(p + ".dims", at::tensor({state_dim_, action_dim_}, at::kLong));
  put_generator(a, p + ".generator", generator_);
  put_all(a, p + ".actor", actor_);
  put_all(a, p + ".critic", critic_);
  put_all(a, p + ".critic_target", critic_target_);
  a.write(p + ".log_alpha", log_alpha_.clone());
  a.write(p + ".alpha", scalar(alpha_));
  actor_opt_.save(a, p + ".actor_adam");
  critic_opt_.save(a, p + ".critic_adam");
  alpha_opt_.save(a, p + ".alpha_adam");
  a.write(p + ".buffer.capacity", scalar(capacity_));
  a.write(p + ".buffer.ptr", scalar(ptr_));
  a.write(p + ".buffer.size", scalar(size_));
  a.write(p + ".updates", scalar(updates_));
  a.write(p + ".buffer.states", states_.slice(0, 0, size_).clone());
  a.write(p + ".buffer.actions", actions_.slice(0, 0, size_).clone());
  a.write(p + ".buffer.rewards", rewards_.slice(0, 0, size_).clone());
  a.write(p + ".buffer.next_states", next_states_.slice(0, 0, size_).clone());
}

void SacAgent::load(InputArchive& a, const std::string& p) {
  const at::Tensor dims = read(a, p + ".dims");
  TORCH_CHECK(dims[0].item<int64_t>() == state_dim_ && dims[1].item<int64_t>() == action_dim_,
              "IGBv2 checkpoint: the agent is for ", dims[0].item<int64_t>(), " tasks, expected ",
              state_dim_);
  TORCH_CHECK(get_int(a, p + ".buffer.capacity") == capacity_,
              "IGBv2 checkpoint: the replay buffer capacity differs from the options'");
  get_generator(a, p + ".generator", generator_);
  copy_into(actor_, a, p + ".actor");
  copy_into(critic_, a, p + ".critic");
  copy_into(critic_target_, a, p + ".critic_target");
  log_alpha_ = read(a, p + ".log_alpha").to(at::kDouble).clone();
  alpha_ = get_double(a, p + ".alpha");
  actor_opt_.load(a, p + ".actor_adam");
  critic_opt_.load(a, p + ".critic_adam");
  alpha_opt_.load(a, p + ".alpha_adam");
  ptr_ = get_int(a, p + ".buffer.ptr");
  size_ = get_int(a, p + ".buffer.size");
  updates_ = get_int(a, p + ".updates");
  states_.zero_();
  actions_.zero_();
  rewards_.zero_();
  next_states_.zero_();
  states_.slice(0, 0, size_).copy_(read(a, p + ".buffer.states"));
  actions_.slice(0, 0, size_).copy_(read(a, p + ".buffer.actions"));
  rewards_.slice(0, 0, size_).copy_(read(a, p + ".buffer.rewards"));
  next_states_.slice(0, 0, size_).copy_(read(a, p + ".buffer.next_states"));
}

void EpochLossMeans::save(OutputArchive& a, const std::string& p) const {
  put(a, p + ".sum", sum_);
  put(a, p + ".last", last_);
  put(a, p + ".before_last", before_last_);
  a.write(p + ".count", scalar(count_));
  a.write(p + ".epochs", scalar(epochs_));
}

void EpochLossMeans::load(InputArchive& a, const std::string& p) {
  sum_ = get(a, p + ".sum");
  last_ = get(a, p + ".last");
  before_last_ = get(a, p + ".before_last");
  count_ = get_int(a, p + ".count");
  epochs_ = get_int(a, p + ".epochs");
}

void UncertaintyWeighting::save(OutputArchive& a, const std::string& p) const {
  a.write(p + ".log_variances", log_vars_.clone());
  adam_.save(a, p + ".adam");
}

void UncertaintyWeighting::load(InputArchive& a, const std::string& p) {
  const at::Tensor s = read(a, p + ".log_variances");
  TORCH_CHECK(s.numel() == log_vars_.numel(), "UW checkpoint is for ", s.numel(), " tasks, expected ",
              log_vars_.numel());
  log_vars_ = s.to(at::kDouble).clone();
  adam_.load(a, p + ".adam");
}

void FamoWeighting::save(OutputArchive& a, const std::string& p) const {
  a.write(p + ".logits", logits_.clone());
  adam_.save(a, p + ".adam");
}

void FamoWeighting::load(InputArchive& a, const std::string& p) {
  const at::Tensor l = read(a, p + ".logits");
  TORCH_CHECK(l.numel() == logits_.numel(), "FAMO checkpoint is for ", l.numel(), " tasks, expected ",
              logits_.numel());
  logits_ = l.to(at::kDouble).clone();
  adam_.load(a, p + ".adam");
}

void IgbV2Weighting::save(OutputArchive& a, const std::string& p) const {
  a.write(p + ".tasks", scalar(tasks_));
  put_generator(a, p + ".generator", generator_);
  agent_.save(a, p + ".agent");
  put(a, p + ".base", base_);
  a.write(p + ".batch_loss", batch_loss_.clone());
  a.write(p + ".batch_weights", batch_w_.clone());
  a.write(p + ".slot", scalar(slot_));
  a.write(p + ".steps", scalar(steps_));
}

void IgbV2Weighting::load(InputArchive& a, const std::string& p) {
  check_tasks(a, p + ".tasks", tasks_, "IGBv2");
  get_generator(a, p + ".generator", generator_);
  agent_.load(a, p + ".agent");
  base_ = get(a, p + ".base");
  batch_loss_ = read(a, p + ".batch_loss").clone();
  batch_w_ = read(a, p + ".batch_weights").clone();
  slot_ = get_int(a, p + ".slot");
  steps_ = get_int(a, p + ".steps");
}

void SolveCounter::save(OutputArchive& a, const std::string& p) const {
  a.write(p + ".solves", scalar(solves));
  a.write(p + ".failures", scalar(failures));
}

void SolveCounter::load(InputArchive& a, const std::string& p) {
  solves = get_int(a, p + ".solves");
  failures = get_int(a, p + ".failures");
}

void FunctionAggregator::save(OutputArchive& a, const std::string& p) const {
  counter_.save(a, p + ".counter");
}

void FunctionAggregator::load(InputArchive& a, const std::string& p) {
  counter_.load(a, p + ".counter");
}

void PcGradAggregator::save(OutputArchive& a, const std::string& p) const {
  put_generator(a, p + ".generator", generator_);
}

void PcGradAggregator::load(InputArchive& a, const std::string& p) {
  get_generator(a, p + ".generator", generator_);
}

void GradDropAggregator::save(OutputArchive& a, const std::string& p) const {
  put_generator(a, p + ".generator", generator_);
}

void GradDropAggregator::load(InputArchive& a, const std::string& p) {
  get_generator(a, p + ".generator", generator_);
}

void GradVacAggregator::save(OutputArchive& a, const std::string& p) const {
  put_generator(a, p + ".generator", generator_);
  put(a, p + ".targets", targets_);
}

void GradVacAggregator::load(InputArchive& a, const std::string& p) {
  get_generator(a, p + ".generator", generator_);
  targets_ = get(a, p + ".targets");
  if (targets_.defined()) targets_ = targets_.to(at::kDouble).contiguous().clone();
}

void NashMtlAggregator::save(OutputArchive& a, const std::string& p) const {
  put(a, p + ".alpha", alpha_);
  a.write(p + ".step", scalar(step_));
  counter_.save(a, p + ".counter");
}

void NashMtlAggregator::load(InputArchive& a, const std::string& p) {
  alpha_ = get(a, p + ".alpha");
  step_ = get_int(a, p + ".step");
  counter_.load(a, p + ".counter");
}

void DbMtlAggregator::save(OutputArchive& a, const std::string& p) const {
  put(a, p + ".buffer", buffer_);
  a.write(p + ".step", scalar(step_));
}

void DbMtlAggregator::load(InputArchive& a, const std::string& p) {
  buffer_ = get(a, p + ".buffer");
  step_ = get_int(a, p + ".step");
}

// ---------------------------------------------------------------- methods

void RandomLossWeightingMethod::save(OutputArchive& a) const {
  a.write("rlw.tasks", scalar(tasks_));
  put_generator(a, "rlw.generator", generator_);
}

void RandomLossWeightingMethod::load(InputArchive& a) {
  check_tasks(a, "rlw.tasks", tasks_, "RLW");
  get_generator(a, "rlw.generator", generator_);
}

void DynamicWeightAverageMethod::save(OutputArchive& a) const {
  a.write("dwa.tasks", scalar(tasks_));
  means_.save(a, "dwa.means");
}

void DynamicWeightAverageMethod::load(InputArchive& a) {
  check_tasks(a, "dwa.tasks", tasks_, "DWA");
  means_.load(a, "dwa.means");
}

void UncertaintyWeightingMethod::save(OutputArchive& a) const {
  a.write("uw.tasks", scalar(tasks_));
  weighting_.save(a, "uw");
}

void UncertaintyWeightingMethod::load(InputArchive& a) {
  check_tasks(a, "uw.tasks", tasks_, "UW");
  weighting_.load(a, "uw");
}

void FamoMethod::save(OutputArchive& a) const {
  a.write("famo.tasks", scalar(tasks_));
  weighting_.save(a, "famo");
  put(a, "famo.previous", previous_);
  a.write("famo.updated", scalar(static_cast<int64_t>(updated_)));
}

void FamoMethod::load(InputArchive& a) {
  check_tasks(a, "famo.tasks", tasks_, "FAMO");
  weighting_.load(a, "famo");
  previous_ = get(a, "famo.previous");
  updated_ = get_int(a, "famo.updated") != 0;
}

void IgbV2Method::save(OutputArchive& a) const {
  a.write("igbv2.tasks", scalar(tasks_));
  weighting_.save(a, "igbv2");
  means_.save(a, "igbv2.means");
}

void IgbV2Method::load(InputArchive& a) {
  check_tasks(a, "igbv2.tasks", tasks_, "IGBv2");
  weighting_.load(a, "igbv2");
  means_.load(a, "igbv2.means");
}

void GradientMethod::save(OutputArchive& a) const {
  a.write(name_ + ".level", scalar(static_cast<int64_t>(level_)));
  aggregator_->save(a, name_);
}

void GradientMethod::load(InputArchive& a) {
  TORCH_CHECK(get_int(a, name_ + ".level") == static_cast<int64_t>(level_), name_,
              " checkpoint was written for the other gradient level");
  aggregator_->load(a, name_);
}

}  // namespace bayesagg
