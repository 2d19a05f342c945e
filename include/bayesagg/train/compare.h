#pragma once
/// Comparing methods (`bayesagg compare`): training runs that reuse finished work, single-task
/// learning, and the paper-style table of a method × seed comparison (docs/methods.md).

#include "bayesagg/data/dataset.h"
#include "bayesagg/train/metrics.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/records.h"

#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bayesagg {

/// How `train_or_reuse` treated a run folder.
enum class RunStatus {
  trained,  ///< started (over) and trained to the end
  resumed,  ///< continued from its checkpoint
  reused,   ///< already finished with the same settings: read back, not retrained
};

/// Trains the run `options` describes (in `options.resolved_out()`) on `benchmark` (nullptr: the
/// trainer builds the benchmark `options` names), reusing the
/// folder: a finished run with the same settings (ignoring threads, progress, data-dir, device)
/// is read back, an unfinished one with a checkpoint is resumed, anything else is started over.
/// A folder holding a run with other settings is an error naming the first differing setting.
TrainSummary train_or_reuse(TrainOptions options, const Benchmark* benchmark, std::ostream* log,
                            RunStatus* status = nullptr);

/// Mean training seconds per completed epoch of a run (0 before its first epoch).
double mean_epoch_train_seconds(const TrainSummary& summary);

/// What single-task learning of every task gives.
struct SingleTaskResult {
  /// Each task's metrics at its own best validation epoch (keys `task/metric`; calibration
  /// metrics included).
  MetricMap val, test;
  /// Sum over the task runs of their mean training seconds per epoch: the cost of one epoch of
  /// single-task learning of every task.
  double epoch_seconds = 0.0;
  /// `<out>/stl_baseline.json`, in the format `--stl-baseline` reads (the task metrics of Δm:
  /// no calibration metrics).
  std::string baseline_file;
};

/// Single-task learning (STL): for every task of the benchmark, a run of that task's loss alone
/// (method `ls`, `stl_task` set) with `options`' network and budget in `<out>/<task>`, each
/// reused or resumed as `train_or_reuse` does; then writes `<out>/stl_baseline.json`.
/// `benchmark`: the embedded benchmark built once for all runs, or nullptr (each run builds the
/// benchmark `options` names; the tasks of a paper benchmark come from `paper_task_names`).
SingleTaskResult train_single_tasks(TrainOptions options, const Benchmark* benchmark,
                                    std::ostream* log);

/// One method × seed of a comparison.
struct CompareRun {
  std::string method;
  uint64_t seed = 0;
  /// Test metrics at the selected epoch (for `stl`, each task's at its own best epoch).
  MetricMap test;
  /// Mean training seconds per epoch (for `stl`, summed over the task runs).
  double epoch_seconds = 0.0;
  /// Non-empty when the run failed: its error. Failed runs are left out of every statistic.
  std::string error;
};

/// One method's row of the table.
struct CompareRow {
  std::string method;
  /// Seeds that finished, and the errors of those that failed.
  int64_t seeds = 0;
  std::vector<std::string> errors;
  /// Per metric key (calibration keys included): mean and sample standard deviation (n - 1)
  /// over the finished seeds (the standard deviation is NaN with fewer than two seeds).
  MetricMap mean, std;
  /// Δm% against the baselines: mean and standard deviation over seeds of each seed's Δm.
  std::optional<double> delta_m, delta_m_std;
  /// Mean over the metric keys this method reports of its rank among the rows (1 = best mean,
  /// ties share the average rank); the calibration keys are not ranked.
  std::optional<double> mean_rank;
  /// Per seed, the mean over the calibration keys' tasks of the ECE (of the Brier score); then
  /// the mean and standard deviation over seeds. Absent when a finished seed lacks one of them.
  std::optional<double> ece, ece_std, brier, brier_std;
  /// Mean training time per epoch divided by that of `ls` in the same comparison.
  std::optional<double> epoch_time_vs_ls;
};

/// A comparison's table.
struct CompareTable {
  std::string benchmark;
  /// The metric keys of the columns (the benchmark's, in its order): the task metrics of Δm
  /// and of the mean rank.
  std::vector<std::string> keys;
  /// The calibration keys (`<task>/ece`, `<task>/brier`; `is_calibration_metric`), in the order
  /// given; empty for regression-only benchmarks.
  std::vector<std::string> calibration_keys;
  std::vector<CompareRow> rows;
  /// The single-task baselines of Δm (empty: Δm absent) and where they come from.
  MetricMap baseline;
  std::string baseline_source;
};

/// Builds the table of `runs` with one row per method of `methods` (in that order). `keys` may
/// mix task and calibration metrics: the calibration ones go to `calibration_keys`, and never
/// enter Δm or the mean rank. When `stl` is among the methods and has finished seeds, the
/// baselines are the mean over seeds of its test task metrics; otherwise `baseline` (possibly
/// empty; calibration keys in it are ignored).
CompareTable make_compare_table(const std::string& benchmark, const std::vector<std::string>& keys,
                                const std::vector<std::string>& methods,
                                const std::vector<CompareRun>& runs, MetricMap baseline,
                                std::string baseline_source);

/// table.md: one row per method with the per-key `mean ± std`, then (when there are calibration
/// keys) `ECE ↓` and `Brier ↓` (the row's `ece` and `brier`: means over the classification
/// tasks), Δm% (lower is better), the mean rank, the epoch time relative to LS and the number of
/// seeds; then the baselines' source.
std::string compare_table_markdown(const CompareTable& table);

/// table.csv: one row per method with columns `method`, `delta_m`, `delta_m_std`, `mean_rank`,
/// `epoch_time_vs_ls`, `seeds`, then `<key>_mean` and `<key>_std` for every metric key; when
/// there are calibration keys, then `ece`, `ece_std`, `brier`, `brier_std` (means over the
/// tasks) and `<key>_mean`, `<key>_std` for every calibration key (empty cells for absent
/// values).
std::string compare_table_csv(const CompareTable& table);

}  // namespace bayesagg
