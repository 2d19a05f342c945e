#pragma once
// Private to src/models: the trunk networks behind MultiTaskModel (spec: benchmarks.md, "Default
// networks" and "Paper benchmarks").

#include "bayesagg/data/paper/qm9.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bayesagg {
namespace nets {

/// A trunk: maps a batch of inputs (a tensor, or a graph batch) to h [B, d].
class TrunkNet : public torch::nn::Module {
 public:
  /// Tensor inputs [B, ...]; the default throws (graph trunks).
  virtual at::Tensor forward_tensor(const at::Tensor& inputs);
  /// Graph inputs; the default throws (tensor trunks).
  virtual at::Tensor forward_graph(const GraphBatch& graphs);
  virtual bool takes_graphs() const { return false; }
};

/// PyTorch's default initialisation of a Linear or Conv layer from `gen` (U(±1/sqrt(fan_in)) for
/// weight and bias).
void init_default(at::Tensor weight, at::Tensor bias, at::Generator& gen);

/// Wraps a Sequential; its parameters keep the Sequential's names (`0.weight`, ...).
std::shared_ptr<TrunkNet> sequential_trunk(torch::nn::Sequential seq);

/// CIFAR-MTL: three blocks Conv 3×3 (reflect pad 1) → ELU → MaxPool 3 with in→c→c→c channels,
/// BatchNorm(c), flatten (c × 1 × 1 for 32×32 inputs). Here and in the ResNets every BatchNorm is
/// a `SyncBatchNorm2d` (bayesagg/models/sync_batchnorm.h; `MultiTaskModel::set_batchnorm_reducer`
/// sets their reducer).
std::shared_ptr<TrunkNet> cifar_cnn(int64_t in_channels, int64_t channels, int64_t height,
                                    int64_t width, at::Generator& gen);

/// ResNet-18 ([2,2,2,2]) or ResNet-34 ([3,4,6,3]) encoder with torchvision's names under
/// `encoder.` (7×7 stem, BasicBlocks, global average pooling → 512), then Linear(512, d) + ELU
/// (`proj`).
std::shared_ptr<TrunkNet> resnet(int64_t depth, int64_t in_channels, int64_t d,
                                 at::Generator& gen);

/// Loads torchvision-named encoder parameters and BatchNorm statistics from `path` into a
/// `resnet` trunk (see model.h, `ModelOptions::pretrained`).
void load_resnet_encoder(TrunkNet& trunk, const std::string& path);

/// Gilmer et al.'s MPNN as in PyTorch Geometric's QM9 example: Linear(node → w) + ReLU; 3 rounds
/// of NNConv (edge net Linear(edge, 128)–ReLU–Linear(128, w·w), mean aggregation, root weight,
/// bias) + ReLU and a GRU cell; Set2Set(w, 3 steps); Linear(2w → d) + ReLU.
std::shared_ptr<TrunkNet> mpnn(int64_t node_features, int64_t edge_features, int64_t width,
                               int64_t d, at::Generator& gen);

}  // namespace nets
}  // namespace bayesagg
