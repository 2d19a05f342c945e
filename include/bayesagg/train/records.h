#pragma once
/// What a run records: per-epoch and per-step history, and the files of the run folder
/// (metrics.csv, steps.csv, summary.json, curves.svg, calibration.svg), all written atomically.

#include "bayesagg/train/metrics.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bayesagg {

/// One finished epoch.
struct EpochRecord {
  /// 1-based.
  int64_t epoch = 0;
  /// Learning rate of the epoch (both parameter groups).
  double lr = 0.0;
  /// Wall time of the training steps, and of the evaluation on validation and test.
  double train_seconds = 0.0;
  double eval_seconds = 0.0;
  /// Per task: the mean of the training batches' losses (weighted by batch size).
  std::vector<double> train_loss;
  MetricMap val, test;
  SelectionScore score;
};

/// One training step (for investigating a run: losses, gradient norms, method diagnostics).
struct StepRecord {
  /// 1-based epoch and step within the epoch.
  int64_t epoch = 0;
  int64_t step = 0;
  double lr = 0.0;
  /// Per-task batch losses.
  std::vector<double> losses;
  /// Gradient norms before clipping: the whole trunk, all heads together.
  double trunk_grad_norm = 0.0;
  double head_grad_norm = 0.0;
  /// `Method::diagnostics()` after the step.
  std::map<std::string, double> diagnostics;
};

/// Everything a run has recorded so far; saved in every checkpoint.
struct RunHistory {
  std::vector<EpochRecord> epochs;
  std::vector<StepRecord> steps;
  /// 1-based epoch of the best validation score (0 before the first epoch).
  int64_t best_epoch = 0;
  /// Wall time of the completed epochs, summed over sessions (a resumed run adds to it).
  double wall_seconds = 0.0;
  /// The reliability diagrams of the best epoch's test split, one per classification task
  /// (empty for regression-only benchmarks, and in histories saved before they were recorded).
  std::vector<TaskReliability> best_reliability;

  /// Drops everything after `epoch` (completed epochs).
  void truncate(int64_t epoch);
  /// The record of the best epoch; throws when there is none.
  const EpochRecord& best() const;
};

/// Serialises the history as JSON (for checkpoints), and back.
std::string history_to_json(const RunHistory& history);
RunHistory history_from_json(const std::string& text);

/// What a run reports (summary.json).
struct TrainSummary {
  std::string benchmark, method, run_dir;
  uint64_t seed = 0;
  /// Configured epochs, and how many are done (less when the run was stopped).
  int64_t epochs = 0;
  int64_t epochs_completed = 0;
  int64_t best_epoch = 0;
  int64_t n_train = 0, n_val = 0, n_test = 0;
  std::vector<std::string> tasks;
  /// Metrics of the best epoch.
  MetricMap val, test;
  /// Δm% of the test metrics against `stl_baseline` (absent without baselines).
  std::optional<double> delta_m;
  MetricMap stl_baseline;
  /// Where the baselines came from (a file name, `stored`, or empty).
  std::string stl_source;
  /// Why Δm is absent although baselines are stored (empty otherwise).
  std::string stl_note;
  std::string selection;
  /// Single-task runs: the task trained (val and test then hold only its metrics).
  std::string stl_task;
  double wall_seconds = 0.0;
  /// Per epoch: training and evaluation seconds.
  std::vector<double> epoch_train_seconds, epoch_eval_seconds;

  bool completed() const { return epochs_completed >= epochs; }
};

/// summary.json: `benchmark`, `method`, `seed`, `epochs`, `best_epoch`, `n_train`, `n_val`,
/// `n_test`, `tasks`, `val`, `test` (`{"task/metric": value}`), `delta_m` (null when absent),
/// `wall_seconds`, and `epochs_completed`, `selection`, `stl_baseline`, `epoch_train_seconds`,
/// `epoch_eval_seconds`.
std::string summary_to_json(const TrainSummary& summary);
/// Reads what `summary_to_json` wrote (for resume checks and tests).
TrainSummary summary_from_json(const std::string& text);

/// metrics.csv: `epoch,split,task,metric,value`, one row per epoch × split × task metric; split
/// `train` holds the training losses (metric `loss`), `val` and `test` the benchmark's metrics.
std::string metrics_csv(const RunHistory& history, const std::vector<std::string>& tasks);
/// steps.csv: `epoch,step,lr,loss_<task>...,trunk_grad_norm,head_grad_norm,<diagnostics>...`
/// (the union of the diagnostics' names, sorted; empty cells when a step lacks one).
std::string steps_csv(const RunHistory& history, const std::vector<std::string>& tasks);
/// curves.svg: per-task validation metrics (left; the calibration metrics are left out) and
/// training losses (right) by epoch.
std::string curves_svg(const RunHistory& history, const std::vector<std::string>& tasks,
                       const std::string& title);
/// calibration.svg: one reliability diagram per task of `diagrams`: per confidence bin, a bar of
/// the mean outcome (accuracy; binary: fraction of positives), the gap to the bin's mean
/// confidence, the share of items per bin, and the diagonal; the task's ECE in its title.
/// Throws when `diagrams` is empty.
std::string calibration_svg(const std::vector<TaskReliability>& diagrams,
                            const std::string& title);
/// The final table: per-task metrics of the best epoch (val, test, STL baseline) and Δm.
std::string format_summary_table(const TrainSummary& summary);

}  // namespace bayesagg
