#include "bayesagg/train/calibration.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace bayesagg {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

at::Tensor cpu_double(const at::Tensor& t) {
  return t.detach().to(at::kCPU, at::kDouble).contiguous();
}

/// Upper edge of bin i - 1, i.e. i / bins.
double edge(int64_t i, int64_t bins) { return static_cast<double>(i) / static_cast<double>(bins); }

ReliabilityBins empty_bins(int64_t bins) {
  ReliabilityBins r;
  r.count.assign(static_cast<size_t>(bins), 0);
  r.confidence.assign(static_cast<size_t>(bins), kNaN);
  r.outcome.assign(static_cast<size_t>(bins), kNaN);
  return r;
}

void check_logits(const char* what, const at::Tensor& logits, int64_t dim,
                  const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == dim && labels.dim() == 1 && logits.size(0) == labels.size(0), what,
              ": expected logits [N", dim == 2 ? ", K" : "", "] and labels [N], got ",
              logits.sizes(), " and ", labels.sizes());
}

}  // namespace

int64_t ReliabilityBins::total() const {
  int64_t n = 0;
  for (int64_t c : count) n += c;
  return n;
}

double ReliabilityBins::ece() const {
  const int64_t n = total();
  if (n == 0) return kNaN;
  double sum = 0.0;
  for (size_t b = 0; b < count.size(); ++b) {
    if (count[b] == 0) continue;
    sum += static_cast<double>(count[b]) * std::fabs(outcome[b] - confidence[b]);
  }
  return sum / static_cast<double>(n);
}

int64_t calibration_bin(double confidence, int64_t bins) {
  TORCH_CHECK(bins >= 1, "calibration_bin: bins must be >= 1, got ", bins);
  TORCH_CHECK(confidence >= 0.0 && confidence <= 1.0,
              "calibration_bin: confidence must be in [0, 1], got ", confidence);
  // A first guess, then exact comparisons with the edges i / bins: bin b holds
  // edge(b) < c <= edge(b + 1), and bin 0 also holds 0.
  int64_t b = std::min<int64_t>(bins - 1, static_cast<int64_t>(confidence * bins));
  while (b > 0 && confidence <= edge(b, bins)) --b;
  while (b < bins - 1 && confidence > edge(b + 1, bins)) ++b;
  return b;
}

ReliabilityBins reliability_bins(const at::Tensor& confidence, const at::Tensor& outcome,
                                 int64_t bins) {
  TORCH_CHECK(bins >= 1, "reliability_bins: bins must be >= 1, got ", bins);
  TORCH_CHECK(confidence.dim() == 1 && outcome.dim() == 1 &&
                  confidence.size(0) == outcome.size(0),
              "reliability_bins: expected confidence [N] and outcome [N], got ",
              confidence.sizes(), " and ", outcome.sizes());
  const at::Tensor c = cpu_double(confidence), y = cpu_double(outcome);
  const double* cp = c.data_ptr<double>();
  const double* yp = y.data_ptr<double>();
  ReliabilityBins r = empty_bins(bins);
  std::vector<double> sum_c(static_cast<size_t>(bins), 0.0), sum_y(sum_c);
  for (int64_t i = 0; i < c.size(0); ++i) {
    if (std::isnan(cp[i])) return empty_bins(bins);
    const auto b = static_cast<size_t>(calibration_bin(cp[i], bins));
    ++r.count[b];
    sum_c[b] += cp[i];
    sum_y[b] += yp[i];
  }
  for (size_t b = 0; b < r.count.size(); ++b) {
    if (r.count[b] == 0) continue;
    r.confidence[b] = sum_c[b] / static_cast<double>(r.count[b]);
    r.outcome[b] = sum_y[b] / static_cast<double>(r.count[b]);
  }
  return r;
}

ReliabilityBins multiclass_reliability(const at::Tensor& logits, const at::Tensor& labels,
                                       int64_t bins) {
  check_logits("multiclass_reliability", logits, 2, labels);
  const at::Tensor z = cpu_double(logits);
  const at::Tensor confidence = at::softmax(z, 1).amax(1);
  const at::Tensor correct = z.argmax(1).eq(labels.to(at::kCPU, at::kLong)).to(at::kDouble);
  return reliability_bins(confidence, correct, bins);
}

ReliabilityBins binary_reliability(const at::Tensor& logits, const at::Tensor& labels,
                                   int64_t bins) {
  check_logits("binary_reliability", logits, 1, labels);
  const at::Tensor positive = cpu_double(labels).gt(0.5).to(at::kDouble);
  return reliability_bins(at::sigmoid(cpu_double(logits)), positive, bins);
}

double multiclass_brier(const at::Tensor& logits, const at::Tensor& labels) {
  check_logits("multiclass_brier", logits, 2, labels);
  if (labels.numel() == 0) return kNaN;
  const at::Tensor p = at::softmax(cpu_double(logits), 1);
  const at::Tensor onehot = at::one_hot(labels.to(at::kCPU, at::kLong), p.size(1)).to(at::kDouble);
  return (p - onehot).pow(2).sum(1).mean().item<double>();
}

double binary_brier(const at::Tensor& logits, const at::Tensor& labels) {
  check_logits("binary_brier", logits, 1, labels);
  if (labels.numel() == 0) return kNaN;
  const at::Tensor positive = cpu_double(labels).gt(0.5).to(at::kDouble);
  return (at::sigmoid(cpu_double(logits)) - positive).pow(2).mean().item<double>();
}

}  // namespace bayesagg
