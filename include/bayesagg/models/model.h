#pragma once
/// Multi-task models split into a shared trunk and one linear head per task group.
///
/// The trunk maps inputs to the shared representation h [B, d]; head g maps h to the
/// `groups[g].head_rows()` outputs of its group. The representation is exposed (methods such as
/// BayesAgg-MTL differentiate the losses with respect to it), and the heads are exposed as
/// `Head`s whose tensors *are* the trainable parameters.
///
/// Default networks (spec: benchmarks.md, "Default networks"):
/// - `cnn` (Fashion family, input [1, 28, 28]): Conv(1→10, 5) → ReLU → MaxPool 2 → Conv(10→20, 5)
///   → ReLU → MaxPool 2 → flatten (320) → Linear(320, d) → ELU.
/// - `mlp` (vector input [D]): Linear(D, w) → ReLU → Linear(w, w) → ReLU → Linear(w, d) → ELU.
///
/// Paper networks (spec: benchmarks.md, "Paper benchmarks"):
/// - `cifar-cnn` (CIFAR-MTL, input [3, 32, 32]): three blocks Conv 3×3 (reflect pad 1) → ELU →
///   MaxPool 3 with 3→d→d→d channels, BatchNorm(d), flatten → h ∈ R^d (d = 160 in the spec; the
///   images must be 27×27 to 53×53 so that the flattened map is d × 1 × 1).
/// - `resnet18` (UTKFace) and `resnet34` (ChestX-ray14), input [C, H, W]: torchvision's ResNet
///   encoder (7×7 stem, BasicBlocks [2,2,2,2] or [3,4,6,3], global average pooling → 512) under
///   `encoder.`, then Linear(512, d) + ELU → h ∈ R^d (d = 256 in the spec). Convolutions are
///   initialised as torchvision does (Kaiming normal, fan-out), BatchNorm with weight 1, bias 0.
///   `ModelOptions::pretrained` loads the encoder from a file (see there).
/// - `mpnn` (QM9, graph inputs: `input_shape` = {node features, edge features}, {11, 5}):
///   Linear(11 → w) + ReLU; 3 rounds of edge-conditioned convolution (NNConv: edge net
///   Linear(5, 128)–ReLU–Linear(128, w·w) shared by the rounds, messages x_src · W(e) averaged
///   at the target, plus a root weight and a bias, ReLU) each followed by a GRU cell (w, w);
///   Set2Set (w, 3 steps, LSTM cell); Linear(2w → d) + ReLU → h ∈ R^d (w = `hidden_dim`,
///   d = `representation_dim`, both 64 in the spec). Takes `GraphBatch`es (qm9.h).
///
/// Trunks with BatchNorm (`cifar-cnn`, `resnet*`) behave differently in training and evaluation
/// mode (`train(false)` uses the running statistics); their running statistics are saved and
/// loaded with the parameters. Their BatchNorm layers are `SyncBatchNorm2d`s
/// (bayesagg/models/sync_batchnorm.h: torch::nn::BatchNorm2d's names, defaults and, on one
/// process, computation): in data-parallel training (`set_batchnorm_reducer`) they normalise each
/// process's shard with the statistics of the global batch.
///
/// The implementation (torch::nn modules) is private: this header stays light.

#include "bayesagg/core/reducer.h"
#include "bayesagg/core/serialize_fwd.h"
#include "bayesagg/core/task_group.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <torch/arg.h>

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>


namespace bayesagg {

struct GraphBatch;

/// Options of `MultiTaskModel`.
struct ModelOptions {
  /// The trunk: `auto` (`cnn` for image inputs [C, H, W], `mlp` for vector inputs [D]), `cnn`,
  /// `mlp`, `cifar-cnn`, `resnet18`, `resnet34` or `mpnn` (see the file comment).
  TORCH_ARG(std::string, trunk) = "auto";
  /// Width d of the shared representation h.
  TORCH_ARG(int64_t, representation_dim) = 64;
  /// Width of the hidden layers of the `mlp` trunk, and of the node states of the `mpnn` trunk.
  TORCH_ARG(int64_t, hidden_dim) = 64;
  /// `resnet18` / `resnet34` only: a file of pretrained encoder weights, loaded after the
  /// initialisation (the projection Linear(512, d) and the heads stay freshly initialised). Two
  /// formats are read, both keyed by torchvision's names (`conv1.weight`, `bn1.weight`,
  /// `bn1.bias`, `bn1.running_mean`, `bn1.running_var`, `layer1.0.conv1.weight`, ...,
  /// `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.running_var`, ...):
  /// - Python's `torch.save(torchvision.models.resnet34(weights="IMAGENET1K_V1").state_dict(),
  ///   "resnet34.pt")` (a pickled dict of tensors, the default zip format); `fc.*` entries and
  ///   any other extra names are ignored;
  /// - a LibTorch archive (`torch::serialize::OutputArchive` written with `save_to`) holding the
  ///   same names.
  /// Every encoder parameter and BatchNorm statistic must be present (`num_batches_tracked` may
  /// be absent) with its shape; otherwise construction throws naming the missing (up to five)
  /// or mis-shaped entry. Before LibTorch parses the file it is verified where a checksum
  /// exists: bayesagg's own checksum trailer, torch.hub's `NAME-HASH.pth` naming (HASH = the
  /// first hex digits of the SHA-256, e.g. `resnet18-f37072fd.pth`) or a `FILE.sha256` beside
  /// it; a mismatch is refused. Empty = train from scratch.
  TORCH_ARG(std::string, pretrained) = "";
  /// Seed of the generator that initialises every parameter (PyTorch's default initialisation:
  /// weights and biases of a layer with fan-in n uniform in [-1/sqrt(n), 1/sqrt(n)]).
  TORCH_ARG(uint64_t, seed) = 0;

 public:
  /// Throws naming the first invalid value.
  void validate() const;
};

/// Prints `ModelOptions(trunk=..., representation_dim=..., hidden_dim=..., seed=...)`.
std::ostream& operator<<(std::ostream& os, const ModelOptions& o);

/// The trunk names `ModelOptions::trunk` accepts.
std::vector<std::string> trunk_names();

/// A shared trunk with one linear head per task group.
class MultiTaskModel {
 public:
  /// Builds the model for inputs of shape `input_shape` (without the batch dimension) and the
  /// task groups `groups`. Throws when the trunk cannot take such inputs.
  MultiTaskModel(std::vector<int64_t> input_shape, std::vector<TaskGroup> groups,
                 ModelOptions options = {});
  ~MultiTaskModel();
  MultiTaskModel(MultiTaskModel&&) noexcept;
  MultiTaskModel& operator=(MultiTaskModel&&) noexcept;

  /// The shared representation h [B, d] of `inputs` [B, ...input_shape] (tensor trunks).
  at::Tensor representation(const at::Tensor& inputs) const;
  /// The shared representation h [B, d] of a graph batch (B = `graphs.num_graphs`; graph trunks,
  /// i.e. `mpnn`; node and edge feature widths must match `input_shape`).
  at::Tensor representation(const GraphBatch& graphs) const;
  /// Whether the trunk takes `GraphBatch`es (`mpnn`) rather than tensors.
  bool takes_graphs() const;
  /// The outputs of every head on `representation` [B, d]: one [B, head_rows] tensor per group.
  std::vector<at::Tensor> head_outputs(const at::Tensor& representation) const;
  /// Per group: the head's weight [rows, d] and bias [rows], the real parameters (not copies).
  std::vector<Head> heads() const;
  /// The trunk's trainable parameters.
  std::vector<at::Tensor> trunk_parameters() const;
  /// The heads' trainable parameters: weight and bias of group 0, then of group 1, ...
  std::vector<at::Tensor> head_parameters() const;
  /// Number of scalar parameters (trunk and heads).
  int64_t num_parameters() const;

  /// d, the width of the representation.
  int64_t representation_dim() const;
  const std::vector<TaskGroup>& groups() const;
  const std::vector<int64_t>& input_shape() const;
  /// The resolved trunk name (never `auto`).
  const std::string& trunk_name() const;
  const ModelOptions& options() const;
  /// E.g. `cnn(1x28x28 -> 64) + heads [multiclass:10, multiclass:10], 33 094 parameters`.
  std::string describe() const;

  /// Moves every parameter to `device`.
  void to(const c10::Device& device);
  /// Training (true) or evaluation mode (the default networks behave the same in both; BatchNorm
  /// uses batch statistics in training, those of the global batch with
  /// `set_batchnorm_reducer`, and running statistics in evaluation).
  void train(bool on = true);
  bool is_training() const;

  /// Whether the trunk has BatchNorm layers (`cifar-cnn`, `resnet18`, `resnet34`).
  bool has_batchnorm() const;
  /// Data-parallel training: `reducer` sums tensors over the processes, each of which holds a
  /// shard of every global batch. In training mode every BatchNorm layer of the trunk then
  /// normalises with the global batch's mean and variance and updates its running statistics
  /// with them: per layer of C channels, one reduction of 2C + 1 values (float64) in the forward
  /// pass and one in every backward pass through it, in the order of the layers, so every
  /// process must run the same forward and backward passes. Evaluation mode communicates
  /// nothing. The processes then train as one process on the global batch. An empty reducer
  /// returns to per-process statistics. No effect on trunks without BatchNorm.
  void set_batchnorm_reducer(TensorReducer reducer);

  /// Writes every parameter (and BatchNorm statistic) under `trunk.*` and
  /// `head.<g>.{weight,bias}`.
  void save(torch::serialize::OutputArchive& archive) const;
  /// Reads what `save` wrote into the existing parameters; throws naming a missing or
  /// mis-shaped entry.
  void load(torch::serialize::InputArchive& archive);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bayesagg
