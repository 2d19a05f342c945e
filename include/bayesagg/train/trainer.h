#pragma once
/// The trainer: trains a multi-task model on an embedded or a paper benchmark (read through
/// `BatchSource`s and a prefetching loader, batch_source.h) with a `Method` (LS,
/// BayesAgg-MTL, ...) under the reference trainers' protocol, evaluates it after every epoch,
/// selects the best epoch on validation, and records the run (spec: benchmarks.md, "Default
/// training settings"; bayesagg-mtl.md section 6; docs/training.md).
///
/// Protocol, per epoch e = 1..E:
/// 1. learning rate of both Adam parameter groups (trunk, heads) = lr × 0.1^(milestones passed),
///    milestones max(1, round(0.6 E)) and max(1, round(0.8 E)) (or, with `lr_schedule` plateau,
///    the default for qm9, ReduceLROnPlateau replayed from the validation scores so far);
/// 2. `Method::on_epoch_start`, then for every shuffled mini-batch: forward (trunk, heads),
///    per-task batch-mean losses, `Method::backward(Step)`, gradient norms (trunk, heads),
///    head clipping (and trunk clipping when set), a finiteness check (a non-finite loss or
///    gradient stops the run naming the task, epoch and step), Adam step;
/// 3. `Method::on_epoch_end`; evaluation on validation and test; model selection;
/// 4. an atomic checkpoint, then the run records (metrics.csv, steps.csv, summary.json,
///    curves.svg, calibration.svg for benchmarks with classification tasks, best_model.pt when
///    the epoch is the best so far).

#include "bayesagg/data/dataset.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/records.h"

#include <iosfwd>
#include <memory>
#include <optional>

namespace bayesagg {

/// Derives independent seeds for the parts of a run from its seed (splitmix64 of seed and
/// `stream`): 1 model initialisation, 2 shuffling, 3 the method's Monte-Carlo generator.
uint64_t derive_seed(uint64_t seed, uint64_t stream);

/// The embedded benchmark `options` names, built from its data settings (data-dir, data-seed,
/// train-subset); nullopt for a paper benchmark (each run reads those itself).
std::optional<Benchmark> make_embedded_benchmark(const TrainOptions& options);

/// Parses `cpu` or `cuda[:N]`; throws with a clear message when CUDA is asked for but this
/// LibTorch has no CUDA support or no such GPU.
c10::Device parse_device(const std::string& name);

/// Trains one run. Not copyable; `run()` once.
class Trainer {
 public:
  /// Builds the benchmark named in `options` (from Fashion-MNIST or generated, or a paper
  /// benchmark read from `options.data_dir()`).
  explicit Trainer(TrainOptions options);
  /// Trains on a benchmark built by the caller (its name must still be a known benchmark, which
  /// sets the metrics and the selection rule).
  Trainer(TrainOptions options, Benchmark benchmark);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Where epoch summaries and the final table go (default: nowhere). Progress goes to stderr
  /// as `options.progress()` says.
  void set_log(std::ostream* log);

  /// Trains (or, with `options.resume()`, continues the run in `options.out()` from its
  /// checkpoint) up to the configured epochs or `stop_after_epoch`, and returns the summary.
  /// Throws on a non-finite loss or gradient; the last checkpoint is then left intact and
  /// steps.csv holds the steps up to the failure.
  TrainSummary run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Reads the settings of the run in `dir` (its config.json) and marks them for resuming.
TrainOptions resume_options(const std::string& dir);

}  // namespace bayesagg
