#pragma once
/// The baseline multi-task methods as trainer-facing `Method`s: the loss weightings (si, rlw,
/// dwa, uw, famo, igbv2) and the gradient methods (mgda, mgdaub, pcgrad, graddrop, gradvac,
/// cagrad, imtlg, nashmtl, upgrad, alignedmtl, alignedmtlub, dbmtl). `ls` and `bayesagg` live in
/// method.h. docs/methods.md has the table of names, references, defaults and state.

#include "bayesagg/methods/aggregators.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/methods/options.h"
#include "bayesagg/methods/weightings.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace bayesagg {

// ---------------------------------------------------------------- loss weightings

/// Base of the loss-weighting methods: the model's gradient is that of one scalar objective of the
/// losses, so heads and trunk get it by one backward pass.
class LossWeightingMethod : public Method {
 public:
  std::set<Need> needs() const override { return {Need::losses}; }
  std::map<std::string, double> diagnostics() const override { return diagnostics_; }

 protected:
  /// Checks the step's losses ([T], finite) and returns T.
  int64_t check_losses(const Step& step, int64_t tasks) const;
  /// Records the weights as diagnostics `weight_<t>`.
  void record_weights(const at::Tensor& weights);
  std::map<std::string, double> diagnostics_;
};

/// SI: scale-invariant linear scalarisation, the gradient of `sum_t log L_t` (as the Nash-MTL
/// and IGB4MTL codes; the losses must be positive).
class ScaleInvariantMethod : public LossWeightingMethod {
 public:
  explicit ScaleInvariantMethod(int64_t tasks) : tasks_(tasks) {}
  std::string name() const override { return "si"; }
  std::string describe() const override { return "SI(sum_t log L_t)"; }
  void backward(Step& step) override;

 private:
  int64_t tasks_;
};

/// RLW: `sum_t w_t L_t` with fresh random weights every step (`rlw_weights`). State: the generator.
class RandomLossWeightingMethod : public LossWeightingMethod {
 public:
  RandomLossWeightingMethod(int64_t tasks, RlwOptions options, uint64_t seed);
  std::string name() const override { return "rlw"; }
  std::string describe() const override;
  void backward(Step& step) override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  int64_t tasks_;
  RlwOptions options_;
  at::Generator generator_;
};

/// DWA: `sum_t w_t L_t` with `dwa_weights` from the mean training losses of the two previous
/// epochs. State: the epoch means.
class DynamicWeightAverageMethod : public LossWeightingMethod {
 public:
  DynamicWeightAverageMethod(int64_t tasks, DwaOptions options);
  std::string name() const override { return "dwa"; }
  std::string describe() const override;
  void on_epoch_end(int64_t epoch) override { means_.end_epoch(); }
  void backward(Step& step) override;
  /// The weights of the current epoch.
  at::Tensor weights() const;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  int64_t tasks_;
  DwaOptions options_;
  EpochLossMeans means_;
};

/// UW: the model gets the gradient of `sum_t exp(-s_t) L_t / 2`; the log-variances `s` are the
/// method's own parameters, stepped by its own Adam after the model's gradient is computed (see
/// `UncertaintyWeighting`). State: `s` and their Adam moments.
class UncertaintyWeightingMethod : public LossWeightingMethod {
 public:
  UncertaintyWeightingMethod(int64_t tasks, UwOptions options);
  std::string name() const override { return "uw"; }
  std::string describe() const override;
  void backward(Step& step) override;
  const UncertaintyWeighting& weighting() const { return weighting_; }
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  int64_t tasks_;
  UwOptions options_;
  UncertaintyWeighting weighting_;
};

/// FAMO. The logits' update needs the losses before and after the model's step on the same batch,
/// as the official code recomputes them: the method declares `Need::losses_after_step`, and the
/// trainer (and the toy) pass them to `after_step` after the optimiser's step. A caller that
/// cannot recompute them may skip it: the update is then made at the next `backward` from the
/// previous and the current batch's losses (a delayed, noisier estimate of the same decrease;
/// counted in the `delayed_update` diagnostic). State: the logits, their Adam moments and the
/// last losses.
class FamoMethod : public LossWeightingMethod {
 public:
  FamoMethod(int64_t tasks, FamoOptions options);
  std::string name() const override { return "famo"; }
  std::string describe() const override;
  std::set<Need> needs() const override { return {Need::losses, Need::losses_after_step}; }
  void backward(Step& step) override;
  void after_step(const at::Tensor& losses) override { observe_losses_after_step(losses); }
  /// The losses on the last step's batch after the model's step.
  void observe_losses_after_step(const at::Tensor& losses);
  const FamoWeighting& weighting() const { return weighting_; }
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  int64_t tasks_;
  FamoOptions options_;
  FamoWeighting weighting_;
  at::Tensor previous_;  // losses of the last backward (detached, float64)
  bool updated_ = false; // the logits were updated for `previous_` already
};

/// IGBv2: `sum_t w_t log L_t` with `IgbV2Weighting`'s weights. State: the agent (networks, Adam
/// moments, temperature, replay buffer), the base losses, the last two steps and the epoch means.
class IgbV2Method : public LossWeightingMethod {
 public:
  IgbV2Method(int64_t tasks, IgbV2Options options, uint64_t seed);
  std::string name() const override { return "igbv2"; }
  std::string describe() const override;
  void on_epoch_end(int64_t epoch) override;
  void backward(Step& step) override;
  const IgbV2Weighting& weighting() const { return weighting_; }
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;

 private:
  int64_t tasks_;
  IgbV2Options options_;
  IgbV2Weighting weighting_;
  EpochLossMeans means_;
};

// ---------------------------------------------------------------- gradient methods

/// Where a gradient method takes its per-task gradients.
enum class GradientLevel {
  shared,          ///< of the trunk's parameters (`Step::shared_parameters`)
  representation,  ///< of the representation h (`Step::representation`), the "-UB" variants
};

/// A gradient method: per-task gradients (`torch::autograd::grad` per task, retaining the graph)
/// of the shared parameters or of the representation, aggregated by an `Aggregator`, written into
/// the shared parameters' `.grad()` (representation level: backpropagated from h). The heads get
/// the gradient of `sum_t L_t` (or `sum_t w_t L_t`, `HeadGradient::weighted`). With
/// `log_losses`, the objectives are `log(L_t + 1e-8)` instead of `L_t` (DB-MTL).
class GradientMethod : public Method {
 public:
  /// `gram_only`: the aggregator's weights depend on the task gradients only through their Gram
  /// matrix G Gᵀ (MGDA, Aligned-MTL), so that on the representation a data-parallel run sums the
  /// ranks' [T, T] Gram matrices (`Step::reduce_gram`) and each rank weighs its own rows.
  GradientMethod(std::string name, std::unique_ptr<Aggregator> aggregator, GradientLevel level,
                 HeadGradient heads = HeadGradient::sum, bool log_losses = false,
                 bool gram_only = false);
  std::string name() const override { return name_; }
  std::string describe() const override;
  std::set<Need> needs() const override;
  void backward(Step& step) override;
  std::map<std::string, double> diagnostics() const override;
  void save(torch::serialize::OutputArchive& archive) const override;
  void load(torch::serialize::InputArchive& archive) override;
  Aggregator& aggregator() { return *aggregator_; }
  GradientLevel level() const { return level_; }
  /// Whether the method runs data-parallel: on the shared parameters always (the per-task
  /// gradients are summed), on the representation when its weights need only the Gram matrix.
  bool data_parallel() const { return level_ == GradientLevel::shared || gram_only_; }

 private:
  /// Representation level: the weights from the Gram matrix summed over the ranks, applied to
  /// this rank's rows `G` [T, B*d]; returns the aggregate (direction of this rank's rows).
  GradientAggregate aggregate_from_gram(const at::Tensor& G, Step& step);

  std::string name_;
  std::unique_ptr<Aggregator> aggregator_;
  GradientLevel level_;
  HeadGradient heads_;
  bool log_losses_;
  bool gram_only_;
  std::map<std::string, double> diagnostics_;
};

// ---------------------------------------------------------------- registry

/// The baseline names `make_baseline_method` knows, in the table's order.
std::vector<std::string> baseline_method_names();

/// Builds a baseline method by name (nullptr for a name it does not know). `config.seed` seeds
/// every random choice; `config.weighting` and `config.gradient` hold the options.
std::unique_ptr<Method> make_baseline_method(const std::string& name,
                                             const std::vector<TaskGroup>& groups, int64_t dim,
                                             const MethodConfig& config);

}  // namespace bayesagg
