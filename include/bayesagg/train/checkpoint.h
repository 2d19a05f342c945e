#pragma once
/// Checkpoints of a training run: model, optimiser (Adam moments and step counts), scheduler,
/// the method's state (`Method::save`), the shuffling generator, the epoch and the run's history.
/// Written atomically: the archive is serialised in memory, sealed with a SHA-256 checksum trailer
/// (core/checksum.h), written to a temporary file in the same folder and renamed over the old
/// checkpoint, so an interrupted or failed run always leaves the last good checkpoint intact.
/// The checkpoint it replaces is kept as `checkpoint.prev.pt`. Every load verifies the checksum
/// before LibTorch parses a byte (its unpickler is not hardened against damaged input).

#include <ATen/core/Generator.h>

#include <cstdint>
#include <string>
#include <vector>

namespace torch {
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace bayesagg {

class MultiTaskModel;
class Method;

/// The most epochs a run may have (the paper's longest protocol has 300); larger counts are
/// refused before anything runs.
constexpr int64_t kMaxEpochs = 1000000;

/// The scheduler of the reference trainers: MultiStepLR (× `gamma` at each milestone).
struct LrSchedule {
  /// Initial learning rate of each parameter group.
  std::vector<double> base_lrs;
  /// Epochs (0-based counts of completed epochs) at which the rate is multiplied by `gamma`.
  std::vector<int64_t> milestones;
  double gamma = 0.1;

  /// The spec's milestones for `epochs` epochs: max(1, round(0.6 E)) and max(1, round(0.8 E)).
  /// Throws unless 1 <= `epochs` <= `kMaxEpochs`.
  static std::vector<int64_t> milestones_for(int64_t epochs);
  /// gamma^(number of milestones <= epoch) for the 0-based `epoch` (PyTorch's MultiStepLR after
  /// `epoch` scheduler steps; repeated milestones count repeatedly).
  double factor(int64_t epoch) const;
  /// The learning rate of parameter group `group` during the 0-based `epoch`.
  double lr(size_t group, int64_t epoch) const;
};

/// PyTorch's ReduceLROnPlateau (mode `min`, relative threshold 1e-4, cooldown 0) replayed from
/// `base_lr` over `metrics`, the monitored value after each completed epoch (lower is better;
/// NaN never improves): the learning rate for the next epoch. After more than `patience` epochs
/// without improvement the rate becomes max(rate × `factor`, `min_lr`). A pure function of the
/// history, so resuming needs no scheduler state.
double plateau_lr(double base_lr, const std::vector<double>& metrics, double factor,
                  int64_t patience, double min_lr);

/// The parts of a checkpoint that are not live objects.
struct CheckpointState {
  /// Completed epochs.
  int64_t epoch = 0;
  LrSchedule schedule;
  /// The run's settings (`options_to_json`), checked on resume.
  std::string config_json;
  /// The run's history (`history_to_json`).
  std::string history_json;
};

/// Writes a checkpoint atomically to `path`; a verified checkpoint already at `path` is kept as
/// `NAME.prev.pt` (e.g. `checkpoint.prev.pt`) first.
void save_checkpoint(const std::string& path, const MultiTaskModel& model,
                     const torch::optim::Optimizer& optimizer, const Method& method,
                     const at::Generator& shuffle_generator, const CheckpointState& state);

/// Restores a checkpoint into live objects built with the same settings (the optimiser must
/// have the same parameter groups). Throws naming the file and the missing or mis-shaped part;
/// a file whose checksum does not verify is refused before it is parsed, and the message says
/// how to resume from `checkpoint.prev.pt` when that one verifies.
CheckpointState load_checkpoint(const std::string& path, MultiTaskModel& model,
                                torch::optim::Optimizer& optimizer, Method& method,
                                at::Generator& shuffle_generator);

/// Throws unless `path` (a run's checkpoint.pt) exists, saying how to resume from
/// `checkpoint.prev.pt` when that one verifies (a kill or a deletion can leave only it).
void check_resumable(const std::string& path);

/// Writes only the model's parameters (e.g. `best_model.pt`) and the epoch they are from (0 when
/// unknown), atomically and with a checksum trailer.
void save_model(const std::string& path, const MultiTaskModel& model, int64_t epoch = 0);
/// Reads parameters written by `save_model` (or a checkpoint) into `model`, after verifying the
/// file's checksum.
void load_model(const std::string& path, MultiTaskModel& model);
/// The epoch recorded in a model file written by `save_model`; -1 when the file is missing, does
/// not verify or records none.
int64_t saved_model_epoch(const std::string& path);
/// Called on resume with the model just restored from a checkpoint of `checkpoint_epoch`
/// completed epochs: when that epoch is the run's best (`best_epoch`) but the model file at
/// `path` does not hold it (a kill between the checkpoint and the best model, or a damaged file),
/// rewrites it from `model` and returns true. The checkpoint is written before the best model,
/// so this is the only way the two can disagree.
bool restore_best_model(const std::string& path, const MultiTaskModel& model, int64_t best_epoch,
                        int64_t checkpoint_epoch);

}  // namespace bayesagg
