#pragma once
/// Calibration of classification tasks: the expected calibration error (ECE) over equal-width
/// confidence bins, the Brier score, and the per-bin statistics of a reliability diagram.
///
/// Definitions (docs/training.md, "Calibration"):
/// - bins: B equal-width bins on [0, 1] (B = 15 by default); bin i holds the confidences c with
///   i/B < c <= (i+1)/B (the edges computed as `i / double(B)`), and bin 0 also holds c = 0;
/// - multiclass task: confidence = max_k softmax(logits)_k, outcome = 1 when argmax(logits)
///   equals the label (the first maximum on ties, as `accuracy`), else 0;
/// - binary task (the reliability form of a binary classifier): confidence = sigmoid(logit), the
///   predicted probability of the positive class, and outcome = the label (0 or 1), so a bin
///   compares the mean predicted probability with the fraction of positives;
/// - ECE = Σ_b (n_b / N) |mean outcome_b − mean confidence_b| (empty bins contribute nothing);
/// - Brier: multiclass mean_n Σ_k (p_nk − [k = y_n])² (in [0, 2]); binary mean_n (p_n − y_n)²
///   (in [0, 1]).
/// Probabilities are computed in double precision.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bayesagg {

/// Number of equal-width confidence bins of the reported ECE and reliability diagrams.
constexpr int64_t kCalibrationBins = 15;

/// Per-bin statistics of one task's predictions (a reliability diagram).
struct ReliabilityBins {
  /// Items per bin.
  std::vector<int64_t> count;
  /// Mean confidence and mean outcome (accuracy; binary: fraction of positives) per bin, NaN
  /// for an empty bin.
  std::vector<double> confidence, outcome;

  /// Number of bins.
  int64_t bins() const { return static_cast<int64_t>(count.size()); }
  /// Number of items over all bins.
  int64_t total() const;
  /// Σ_b (n_b / N) |outcome_b − confidence_b|; NaN when there are no items.
  double ece() const;
};

/// One classification task's reliability diagram.
struct TaskReliability {
  std::string task;
  /// A binary task (confidence = P(positive)) rather than a multiclass one (max probability).
  bool binary = false;
  ReliabilityBins bins;
};

/// The bin of `confidence` in [0, 1] among `bins` equal-width bins (see the header); throws on a
/// value outside [0, 1].
int64_t calibration_bin(double confidence, int64_t bins = kCalibrationBins);

/// Bins `confidence` [N] (values in [0, 1]) with the matching `outcome` [N] (0/1 or a fraction).
/// A NaN confidence (e.g. from non-finite logits) makes the result empty, so its ECE is NaN.
ReliabilityBins reliability_bins(const at::Tensor& confidence, const at::Tensor& outcome,
                                 int64_t bins = kCalibrationBins);

/// A multiclass task's bins: `logits` [N, K], integral `labels` [N].
ReliabilityBins multiclass_reliability(const at::Tensor& logits, const at::Tensor& labels,
                                       int64_t bins = kCalibrationBins);
/// A binary task's bins: `logits` [N], `labels` [N] in {0, 1}.
ReliabilityBins binary_reliability(const at::Tensor& logits, const at::Tensor& labels,
                                   int64_t bins = kCalibrationBins);

/// Brier score of a multiclass task: mean over items of Σ_k (softmax_k − one_hot_k)²; NaN when
/// N = 0.
double multiclass_brier(const at::Tensor& logits, const at::Tensor& labels);
/// Brier score of a binary task: mean over items of (sigmoid(logit) − label)²; NaN when N = 0.
double binary_brier(const at::Tensor& logits, const at::Tensor& labels);

}  // namespace bayesagg
