#pragma once
/// Loss weightings: losses (and, for some, their history) in, task weights out. Each is a pure
/// function or a small checkpointable class; the `Method`s in methods/baselines.h wrap them.

#include "bayesagg/core/serialize_fwd.h"
#include "bayesagg/methods/options.h"
#include "bayesagg/methods/sac.h"
#include "bayesagg/methods/small_adam.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>


namespace bayesagg {

/// Mean training losses per epoch (float64 [T] each): the running sum of the current epoch and the
/// means of the last two finished epochs.
class EpochLossMeans {
 public:
  /// Adds one step's (detached) losses [T] to the current epoch.
  void add(const at::Tensor& losses);
  /// Closes the current epoch (an epoch without steps is skipped).
  void end_epoch();
  /// Finished epochs so far.
  int64_t epochs() const { return epochs_; }
  /// Mean losses of the last (`last()`) and the one before (`before_last()`) finished epochs;
  /// undefined when there are not that many.
  const at::Tensor& last() const { return last_; }
  const at::Tensor& before_last() const { return before_last_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix);

 private:
  at::Tensor sum_, last_, before_last_;
  int64_t count_ = 0, epochs_ = 0;
};

/// RLW (Lin et al., "Reasonable effectiveness of random weighting: a litmus test for multi-task
/// learning", TMLR 2022): `softmax(z)`, `z ~ N(0, I_T)` from `generator` (times T when
/// `scale_by_tasks`). Float64 [T].
at::Tensor rlw_weights(int64_t tasks, at::Generator& generator, const RlwOptions& options = {});

/// DWA (Liu et al., "End-to-end multi-task learning with attention", CVPR 2019):
/// `w = T softmax(r / temperature)` with `r_t = L_t(e-1) / L_t(e-2)` the ratio of the mean
/// training losses of the two previous epochs; all ones while fewer than two epochs are finished
/// (undefined `last` or `before_last`). Float64 [T].
at::Tensor dwa_weights(int64_t tasks, const at::Tensor& last, const at::Tensor& before_last,
                       const DwaOptions& options = {});

/// UW (Kendall et al., "Multi-task learning using uncertainty to weigh losses for scene geometry
/// and semantics", CVPR 2018), in the form of the Nash-MTL / IGB4MTL codes:
/// `sum_t (exp(-s_t) L_t + s_t) / 2` with learnable log-variances `s` (initially 0). The
/// log-variances are the method's own parameters: they are not in the trainer's optimiser, so
/// the weighting updates them itself with Adam (`UwOptions::lr`, the codes' `method-params-lr`
/// 0.025) from their exact gradient `(1 - exp(-s_t) L_t) / 2`, once per step.
class UncertaintyWeighting {
 public:
  UncertaintyWeighting(int64_t tasks, UwOptions options);
  /// The model's loss weights `exp(-s) / 2` [T] (float64).
  at::Tensor weights() const;
  /// One Adam step of the log-variances for the (detached) losses [T].
  void step(const at::Tensor& losses);
  const at::Tensor& log_variances() const { return log_vars_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix);

 private:
  UwOptions options_;
  at::Tensor log_vars_;
  SmallAdam adam_;
};

/// FAMO (Liu et al., "FAMO: fast adaptive multitask optimization", NeurIPS 2023; the official code
/// and LibMTL): logits `xi` (initially 0), `z = softmax(xi)`, `D_t = L_t - min_loss + 1e-8`; the
/// model minimises `sum_t (z_t / c) log D_t` with `c = sum_t z_t / D_t` (a constant), i.e. weights
/// `z_t / c` on the log-losses. After the model's step, `update(before, after)` moves the logits by
/// Adam (lr 0.025, L2 weight decay 1e-3) along `J_softmax(xi)^T delta`, `delta = log D(before) -
/// log D(after)`.
class FamoWeighting {
 public:
  FamoWeighting(int64_t tasks, FamoOptions options);
  /// The weights `z / c` [T] on `log D_t` for the (detached) losses.
  at::Tensor weights(const at::Tensor& losses) const;
  /// The objective `sum_t w_t log(L_t - min_loss + 1e-8)` (attached to `losses`).
  at::Tensor objective(const at::Tensor& losses) const;
  /// The logits' update from the losses before and after one model step.
  void update(const at::Tensor& before, const at::Tensor& after);
  const at::Tensor& logits() const { return logits_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix);

 private:
  FamoOptions options_;
  at::Tensor logits_;
  SmallAdam adam_;
};

/// IGBv2 (Dai, Fei & Lu, "Improvable gap balancing for multi-task learning", UAI 2023), as the
/// authors' IGB4MTL code (`ImprovableGapBalancing_v2`): weights on the log-losses,
/// `sum_t w_t log L_t`. Epochs before `start_epoch`: `w = T softmax(z)`, `z ~ N(0, I)`; then the
/// SAC agent's stochastic action for the state "this step's losses". From the end of epoch
/// `base_epoch` the base losses are that epoch's mean training losses, and every step adds the
/// transition (previous losses, previous weights, reward, losses) with reward
/// `reward_scale * min_t (L_t(prev) - L_t) / base_t`; from epoch `update_after` on, every
/// `update_every` steps the agent trains `int(update_every * k / 2)` times,
/// `k = 1 + buffer size / capacity`.
class IgbV2Weighting {
 public:
  IgbV2Weighting(int64_t tasks, IgbV2Options options, uint64_t seed);
  /// The weights [T] (float64) for this step's (detached) losses; advances the state.
  at::Tensor weights(const at::Tensor& losses, int64_t epoch);
  /// Closes an epoch with its mean training losses (sets the base losses at `base_epoch`).
  void end_epoch(int64_t epoch, const at::Tensor& mean_losses);
  const at::Tensor& base_losses() const { return base_; }
  const SacAgent& agent() const { return agent_; }
  int64_t steps() const { return steps_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix);

 private:
  int64_t tasks_;
  IgbV2Options options_;
  at::Generator generator_;
  SacAgent agent_;
  at::Tensor base_;                   // [T] float32, undefined before base_epoch ends
  at::Tensor batch_loss_, batch_w_;   // [2, T] float32: the last two steps
  int64_t slot_ = 0, steps_ = 0;
};

}  // namespace bayesagg
