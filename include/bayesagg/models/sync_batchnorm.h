#pragma once
/// `SyncBatchNorm2d`: torch::nn::BatchNorm2d whose batch statistics, in training mode and with a
/// reducer, are those of the global batch of a data-parallel run (docs/distributed.md).
///
/// It has BatchNorm2d's parameters and buffers under the same names and shapes (`weight`,
/// `bias`, `running_mean`, `running_var`, `num_batches_tracked`), its options and defaults (eps
/// 1e-5, momentum 0.1, affine, track_running_stats) and its initialisation (weight 1, bias 0,
/// running mean 0, running variance 1), so that checkpoints and torchvision weights load into it
/// unchanged.
///
/// - Without a reducer, or in evaluation mode, `forward` runs exactly what
///   torch::nn::BatchNorm2d::forward runs (the same at::batch_norm call): one-process training is
///   bit-identical to BatchNorm2d's.
/// - With a reducer in training mode, each process normalises its shard of the global batch with
///   the global batch's statistics: per channel the local sum and sum of squares of the shard and
///   its element count (2C + 1 values, accumulated in float64) are summed over the processes in
///   ONE reduction; mean = sum / n and the biased variance sum_sq / n - mean² normalise; the
///   running mean and the running variance (unbiased: n / (n - 1)) move by `momentum`, and
///   `num_batches_tracked` counts the step. The gradients are exact: the backward of the
///   reduction sums the incoming gradient of those 2C + 1 values over the processes (one more
///   reduction of 2C + 1 values per backward pass through the layer), which makes the processes'
///   parameter gradients sum to the gradient of the sum of their losses. Every process must
///   therefore run the same forward and backward passes through the layer in the same order.

#include "bayesagg/core/reducer.h"

#include <ATen/core/Tensor.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/options/batchnorm.h>
#include <torch/nn/pimpl.h>

#include <cstdint>

namespace bayesagg {

/// See the file comment. Inputs [N, C, H, W].
class SyncBatchNorm2dImpl : public torch::nn::Cloneable<SyncBatchNorm2dImpl> {
 public:
  /// BatchNorm2d(num_features) with the defaults.
  explicit SyncBatchNorm2dImpl(int64_t num_features)
      : SyncBatchNorm2dImpl(torch::nn::BatchNormOptions(num_features)) {}
  explicit SyncBatchNorm2dImpl(const torch::nn::BatchNormOptions& options);

  /// Registers the parameters and buffers and initialises them (as BatchNorm2d's `reset`).
  void reset() override;
  /// Weight 1, bias 0, running mean 0, running variance 1, no batch tracked.
  void reset_parameters();

  /// Normalises `input` [N, C, H, W] (see the file comment for the statistics used).
  at::Tensor forward(const at::Tensor& input);

  /// Data-parallel training: `reducer` sums tensors over the processes (empty: one process).
  void set_reducer(TensorReducer reducer) { reducer_ = std::move(reducer); }
  bool has_reducer() const { return static_cast<bool>(reducer_); }

  torch::nn::BatchNormOptions options;
  /// The affine weight and bias [C] (undefined without `affine`).
  at::Tensor weight, bias;
  /// [C], [C] and a long scalar (undefined without `track_running_stats`).
  at::Tensor running_mean, running_var, num_batches_tracked;

 private:
  /// The factor the running statistics move by this step (BatchNorm2d's
  /// `exponential_average_factor`); counts the step in training mode.
  double count_step();
  /// Training with a reducer: the global batch's statistics.
  at::Tensor forward_synchronised(const at::Tensor& input, double factor);

  TensorReducer reducer_;
};

/// A `ModuleHolder` of `SyncBatchNorm2dImpl` (as `torch::nn::BatchNorm2d` holds its module).
TORCH_MODULE(SyncBatchNorm2d);

}  // namespace bayesagg
