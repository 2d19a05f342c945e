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
/// The implementation (torch::nn modules) is private: this header stays light.

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

/// Options of `MultiTaskModel`.
struct ModelOptions {
  /// The trunk: `auto` (`cnn` for image inputs [C, H, W], `mlp` for vector inputs [D]), `cnn` or
  /// `mlp`.
  TORCH_ARG(std::string, trunk) = "auto";
  /// Width d of the shared representation h.
  TORCH_ARG(int64_t, representation_dim) = 64;
  /// Width of the hidden layers of the `mlp` trunk.
  TORCH_ARG(int64_t, hidden_dim) = 64;
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

  /// The shared representation h [B, d] of `inputs` [B, ...input_shape].
  at::Tensor representation(const at::Tensor& inputs) const;
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
  /// The resolved trunk name (`cnn` or `mlp`).
  const std::string& trunk_name() const;
  const ModelOptions& options() const;
  /// E.g. `cnn(1x28x28 -> 64) + heads [multiclass:10, multiclass:10], 33 094 parameters`.
  std::string describe() const;

  /// Moves every parameter to `device`.
  void to(const c10::Device& device);
  /// Training (true) or evaluation mode (the default networks behave the same in both).
  void train(bool on = true);
  bool is_training() const;

  /// Writes every parameter under `trunk.*` and `head.<g>.{weight,bias}`.
  void save(torch::serialize::OutputArchive& archive) const;
  /// Reads what `save` wrote into the existing parameters; throws naming a missing or
  /// mis-shaped entry.
  void load(torch::serialize::InputArchive& archive);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bayesagg
