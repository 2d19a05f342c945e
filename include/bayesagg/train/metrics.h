#pragma once
/// Evaluation metrics, the benchmarks' metric plans and model-selection rules, and Δm%.
///
/// Metric values are keyed `task/metric`, e.g. `left/accuracy`, `task_3/mae`,
/// `all/argmax_accuracy` (spec: benchmarks.md, "Embedded benchmarks").

#include "bayesagg/core/task_group.h"  // Labels
#include "bayesagg/data/dataset.h"
#include "bayesagg/train/calibration.h"

#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bayesagg {

/// Metric values keyed `task/metric`.
using MetricMap = std::map<std::string, double>;

// ------------------------------------------------------------------ elementary metrics

/// Fraction of rows of `logits` [N, K] whose argmax equals `labels` [N] (integral).
double accuracy(const at::Tensor& logits, const at::Tensor& labels);
/// Fraction of `logits` [N] with (logit > 0) == (label > 0.5), `labels` [N] in {0, 1}.
double binary_accuracy(const at::Tensor& logits, const at::Tensor& labels);
/// Area under the ROC curve of `scores` [N] for binary `labels` [N] (Mann-Whitney statistic;
/// tied scores count one half). NaN when only one class is present.
double roc_auc(const at::Tensor& scores, const at::Tensor& labels);
/// Mean of |prediction - target| over all entries.
double mean_absolute_error(const at::Tensor& prediction, const at::Tensor& target);
/// Mean of (prediction - target)^2 over all entries.
double mean_squared_error(const at::Tensor& prediction, const at::Tensor& target);

/// Whether larger values are better: `accuracy`, `auc`, `argmax_accuracy` yes; `mse`, `mae`,
/// `loss`, `ece`, `brier` no. Accepts a bare metric name or a `task/metric` key; throws on
/// unknown names.
bool higher_is_better(const std::string& metric);

/// Whether `metric` (a bare name or a `task/metric` key) is a calibration metric (`ece`,
/// `brier`): reported for every classification task, but never part of Δm, of the mean rank of
/// `compare`, or of model selection.
bool is_calibration_metric(const std::string& metric);

// ------------------------------------------------------------------ benchmark metric plans

/// The metrics a benchmark reports (spec: benchmarks.md):
/// - multi-fashion: `<task>/accuracy` per task;
/// - fashion-binary: `<class>/accuracy` (logit > 0) and `<class>/auc` per task, and
///   `all/argmax_accuracy` (10-way argmax over the logits);
/// - multi-fashion-mixed: `<factor>/mse` (standardised) per factor, `<task>/accuracy` per class
///   task;
/// - synthetic-regression: `<task>/mae` on the original scale;
/// - cifar-mtl: as fashion-binary (`<class>/accuracy`, `<class>/auc`, `all/argmax_accuracy`);
/// - utkface: `age/mse` (standardised), `age/mae` (years), `gender/accuracy`, `race/accuracy`;
/// - chestx14: `<finding>/auc` per task;
/// - qm9: `<target>/mse` (standardised) and `<target>/mae` in the spec's reported units (meV for
///   homo, lumo, zpve, u0, u298, h298, g298; `qm9_report_units()`).
/// Other benchmarks: multiclass `accuracy`; binary `accuracy` and `auc`; regression `mse`
/// (as trained) and, when the group is standardised, `mae` on the original scale.
/// These are the metrics of Δm, of the mean rank and of model selection; the calibration
/// metrics are listed by `calibration_keys`.
std::vector<std::string> metric_keys(const Benchmark& benchmark);

/// The calibration metrics of a benchmark: `<task>/ece` (15 equal-width bins) and
/// `<task>/brier` for every classification task (multiclass and binary), in task order; empty for
/// a regression-only benchmark. Definitions: calibration.h.
std::vector<std::string> calibration_keys(const Benchmark& benchmark);

/// Computes `metric_keys(benchmark)` and `calibration_keys(benchmark)` from every group's outputs
/// [N, rows] and labels over one split (all N items at once: AUC is not a mean over batches).
MetricMap compute_metrics(const Benchmark& benchmark, const std::vector<at::Tensor>& outputs,
                          const Labels& labels);

/// The reliability diagram (`kCalibrationBins` bins) of every classification task, in task
/// order, from every group's outputs [N, rows] and labels over one split.
std::vector<TaskReliability> reliability_diagrams(const Benchmark& benchmark,
                                                  const std::vector<at::Tensor>& outputs,
                                                  const Labels& labels);

/// A model-selection score: larger is better, compared lexicographically (primary, then
/// secondary as a tie breaker).
struct SelectionScore {
  double primary = 0.0;
  double secondary = 0.0;
  /// Strictly better than `other` (NaN is never better).
  bool better_than(const SelectionScore& other) const;
};

/// The validation criterion of a benchmark (spec: benchmarks.md, "Model selection"):
/// multi-fashion: mean accuracy of the classification tasks; multi-fashion-mixed: the same,
/// minus the mean standardised factor MSE as tie breaker; fashion-binary: the 10-way argmax
/// accuracy; synthetic-regression: minus the mean over tasks of MAE / sigma_t; cifar-mtl: the
/// 20-way argmax accuracy; chestx14: the mean AUC; utkface: minus the validation Δm against the
/// published validation STL numbers; qm9: minus the validation Δm (MAE) against the published
/// STL numbers (the spec publishes test ones only; they serve as the per-target scales). Other
/// benchmarks: mean accuracy when there are classification metrics, else minus the mean MSE.
SelectionScore selection_score(const Benchmark& benchmark, const MetricMap& val);
/// The validation metric that selects the epoch of single-task learning of `task`: its AUC for
/// a binary task (accuracy at logit 0 rewards predicting "no" on imbalanced tasks), otherwise
/// its first metric in `metric_keys` order (e.g. `left/accuracy`, `task_3/mae`).
std::string single_task_selection_key(const Benchmark& benchmark, const std::string& task);
/// `single_task_selection_key`'s value, negated when lower is better.
SelectionScore single_task_score(const Benchmark& benchmark, const MetricMap& val,
                                 const std::string& task);
/// The metric keys of one task (in `metric_keys` order); throws listing the task names when
/// `task` is not one of them.
std::vector<std::string> task_metric_keys(const Benchmark& benchmark, const std::string& task);
/// One phrase naming the criterion, e.g. `mean validation accuracy`.
std::string selection_rule(const Benchmark& benchmark);

// ------------------------------------------------------------------ Δm

/// Δm% = (100/K) Σ_k (−1)^{δ_k} (M_k − B_k) / B_k over the K keys of `baselines` (δ_k = 1 when
/// higher is better, so lower Δm is better and negative beats the baselines). Every key of
/// `baselines` must be in `values` and have a non-zero baseline; throws naming the key otherwise.
/// Returns nullopt when `baselines` is empty.
std::optional<double> delta_m(const MetricMap& values, const MetricMap& baselines);

/// The spec's published single-task numbers of a paper benchmark (paper.h `stl_baseline`) keyed
/// `task/metric` (e.g. `age/mse`, `Atelectasis/auc`, `homo/mae`); empty when the spec publishes
/// none for `split`.
MetricMap published_stl_baselines(const std::string& benchmark, const std::string& split = "test");

/// Reads single-task baselines from a JSON file: `{"task/metric": value, ...}`, or
/// `{"test": {...}}` (only the test block is used). Throws naming the file and the bad entry
/// (calibration metrics included: Δm does not use them).
MetricMap read_stl_baselines(const std::string& path);

/// Checks that every baseline key is a metric of `benchmark`; throws listing the known keys.
void check_stl_baselines(const Benchmark& benchmark, const MetricMap& baselines,
                         const std::string& source);

/// Single-task baselines stored in the library for `benchmark`, measured with `bayesagg train
/// --method stl` under the default protocol (docs/training.md); empty when none were measured, in
/// which case Δm is reported as absent. The trainer uses them only for runs of that protocol.
MetricMap stored_stl_baselines(const std::string& benchmark);

}  // namespace bayesagg
