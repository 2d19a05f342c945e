#pragma once
/// The trainer-facing interface every multi-task method implements.
///
/// A method turns one step's per-task losses (and whatever else it declares it needs) into
/// gradients on every trainable parameter. The trainer computes only what the method's `needs()`
/// asks for, and a method that needs something a model cannot give fails at construction.

#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/core/task_group.h"
#include "bayesagg/methods/options.h"

#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace bayesagg {

/// What a method may ask the trainer for.
enum class Need {
  losses,                ///< per-task batch losses [T]
  shared_grads,          ///< per-task gradients of the shared (trunk) parameters
  representation_grads,  ///< per-task gradients of the representation h
  features_and_labels,   ///< the representation h (attached), the heads and the labels
  losses_after_step,     ///< the per-task losses on the same batch after the optimiser step
};

/// Everything the trainer hands a method for one step.
struct Step {
  /// Per-task batch-mean losses [T] (tasks of all groups, in group order), attached to the graph.
  at::Tensor losses;
  /// The shared representation [B, d], attached to the trunk's graph.
  at::Tensor representation;
  /// Per group: the head's parameters (leaves that require grad).
  std::vector<Head> heads;
  /// Per group labels.
  Labels labels;
  /// The trunk's trainable parameters.
  std::vector<at::Tensor> shared_parameters;
  int64_t epoch = 0;
  int64_t step = 0;
  /// Data-parallel training: sums a tensor of per-task gradients over the ranks, in place (each
  /// rank's `losses` carry its shard's share of the global batch's gradients). Unset in a
  /// one-process run. Methods with `Need::shared_grads` call it before they aggregate.
  std::function<void(const at::Tensor&)> reduce_task_gradients;
  /// Data-parallel training: sums the [T, T] Gram matrix of the per-task gradients of h over the
  /// ranks, in place (each rank holds its shard's rows of them). Unset in a one-process run.
  /// Representation-level methods whose weights depend on the gradients only through their Gram
  /// matrix (mgdaub, alignedmtlub) call it before they aggregate.
  std::function<void(const at::Tensor&)> reduce_gram;
};

/// The interface of every multi-task method (LS, BayesAgg-MTL, ...).
class Method {
 public:
  virtual ~Method() = default;
  /// The method's registry name, e.g. `ls`, `bayesagg`.
  virtual std::string name() const = 0;
  /// The method and its settings, for run logs, e.g. `BayesAgg(gamma_reg=0.005, ...)`.
  virtual std::string describe() const { return name(); }
  /// What the trainer must provide in `Step`.
  virtual std::set<Need> needs() const = 0;
  /// Number of training examples per epoch (lets methods preallocate storage).
  virtual void reserve(int64_t examples_per_epoch) {}
  virtual void on_epoch_start(int64_t epoch) {}
  virtual void on_epoch_end(int64_t epoch) {}
  /// Leaves `.grad()` on every trainable parameter of the heads and the trunk (accumulating).
  virtual void backward(Step& step) = 0;
  /// With `Need::losses_after_step`: the per-task losses [T] (detached) of the last step's batch,
  /// recomputed after the optimiser's step.
  virtual void after_step(const at::Tensor& losses) {}
  /// Numbers describing the last step (e.g. `dL_dh_norm`), for diagnostics.
  virtual std::map<std::string, double> diagnostics() const { return {}; }
  /// Saves and restores everything kept between steps.
  virtual void save(torch::serialize::OutputArchive& archive) const {}
  virtual void load(torch::serialize::InputArchive& archive) {}
};

/// Linear scalarisation: the gradient of sum_t L_t.
class LinearScalarization : public Method {
 public:
  std::string name() const override { return "ls"; }
  std::set<Need> needs() const override { return {Need::losses}; }
  void backward(Step& step) override;
};

/// BayesAgg-MTL with the reference trainers' protocol: `ls_epochs` linear-scalarisation warm-up
/// epochs (collecting features and labels), then Bayesian aggregation of dL/dh. Registered twice,
/// as `bayesagg` and `bayesagg-reference`: both run the options they are given; the names differ
/// in the defaults the training settings give them (train/options.h, `method_preset`).
class BayesAggMethod : public Method {
 public:
  BayesAggMethod(std::vector<TaskGroup> groups, int64_t dim, BayesAggOptions options,
                 int64_t ls_epochs, std::string name = "bayesagg");
  std::string name() const override { return name_; }
  std::string describe() const override;
  std::set<Need> needs() const override { return {Need::losses, Need::features_and_labels}; }
  void reserve(int64_t examples_per_epoch) override { agg_.reserve(examples_per_epoch); }
  void on_epoch_start(int64_t epoch) override { epoch_ = epoch; }
  void on_epoch_end(int64_t epoch) override { agg_.end_epoch(); }
  void backward(Step& step) override;
  std::map<std::string, double> diagnostics() const override { return diagnostics_; }
  void save(torch::serialize::OutputArchive& archive) const override { agg_.save(archive); }
  void load(torch::serialize::InputArchive& archive) override { agg_.load(archive); }
  const BayesAgg& aggregator() const { return agg_; }
  BayesAgg& aggregator() { return agg_; }

 private:
  BayesAgg agg_;
  int64_t ls_epochs_;
  std::string name_;
  int64_t epoch_ = 0;
  std::map<std::string, double> diagnostics_;
};

/// Settings a method may read (unused ones are ignored).
struct MethodConfig {
  BayesAggOptions bayesagg;
  int64_t ls_epochs = 1;
  /// Loss-weighting baselines (si, rlw, dwa, uw, famo, igbv2): methods/options.h.
  WeightingOptions weighting;
  /// Gradient baselines (mgda, mgdaub, pcgrad, graddrop, gradvac, cagrad, imtlg, nashmtl, upgrad,
  /// alignedmtl, alignedmtlub, dbmtl): methods/options.h.
  GradientOptions gradient;
  /// Seed of the baselines' random choices (rlw, pcgrad, graddrop, gradvac, igbv2).
  uint64_t seed = 0;
};

/// Whether `name` is one of BayesAgg-MTL's registry names (`bayesagg`, `bayesagg-reference`).
bool is_bayesagg_method(const std::string& name);
/// The methods `make_method` knows.
std::vector<std::string> method_names();
/// Builds a method by name for a model with `groups` heads on a `dim`-dimensional representation.
/// Unknown names fail with the list of known ones.
std::unique_ptr<Method> make_method(const std::string& name, const std::vector<TaskGroup>& groups,
                                    int64_t dim, const MethodConfig& config);

}  // namespace bayesagg
