#pragma once
/// The training loop behind `Trainer::run`, in the parts of the algorithm (include/bayesagg/
/// train/trainer.h has the protocol): set-up (run folder, data, baselines, model and method,
/// resume), then per epoch: learning rates, steps, evaluation, selection, checkpoint, records.
/// Private to the library: the parts are the named places where distributed training and other
/// loops hook in.

#include "bayesagg/core/files.h"
#include "bayesagg/dist/process_group.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"
#include "bayesagg/train/batch_source.h"
#include "bayesagg/train/checkpoint.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/progress.h"
#include "bayesagg/train/records.h"

#include <ATen/core/Generator.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bayesagg {

/// One run of the trainer. Build, then `run()` once.
class TrainLoop {
 public:
  /// `given`: a benchmark built by the caller, else the one `options` names is built. `dist`:
  /// the process group of a data-parallel run; null = one process, or the group the torchrun
  /// environment describes (RANK, WORLD_SIZE, ...; docs/distributed.md).
  TrainLoop(TrainOptions options, const std::optional<Benchmark>& given, std::ostream* log,
            std::shared_ptr<DistGroup> dist = nullptr);
  ~TrainLoop();

  /// Set-up, the epochs up to `epochs` or `stop_after_epoch`, the final records.
  TrainSummary run();

 private:
  using Clock = std::chrono::steady_clock;

  // ------------------------------------------------------------------ set-up
  /// Checks the run folder (resume / overwrite rules), creates it.
  void prepare_run_folder();
  /// Reads the benchmark into `data_`.
  void load_data(const std::optional<Benchmark>& given);
  /// `--stl-task`: the task index, its loss mask and the selection rule.
  void set_up_single_task();
  /// The single-task baselines for Δm (none for a single-task run).
  void set_up_stl_baselines(bool given_benchmark);
  /// Model, Adam (trunk and head groups), learning-rate schedule, method, shuffling generator.
  void build_model_and_method();
  /// With `--resume`: the checkpoint's state and history (after checking the settings agree).
  void restore_checkpoint();
  /// Removes a replaced run's files, writes config.json.
  void write_config();
  void log_header() const;

  // ------------------------------------------------------------------ one epoch
  /// Sets both parameter groups' learning rate for the 0-based epoch `e`; returns the trunk's.
  double set_learning_rates(int64_t e);
  /// The epoch's batches (one permutation of the training items) and their augmentation seeds.
  struct EpochPlan {
    std::vector<at::Tensor> batches;
    std::vector<uint64_t> seeds;
    /// Items of every global batch (a rank's shard of batch s is `batches[s]`).
    std::vector<int64_t> global_sizes;
    int64_t items = 0;
  };
  EpochPlan plan_epoch(int64_t e);
  /// Trains epoch `e` (0-based) and returns its record (train loss, time; not yet evaluated).
  EpochRecord train_epoch(int64_t e);

  // ------------------------------------------------------------------ one step
  /// Per-task batch-mean losses [T] of every group's outputs, in group order.
  at::Tensor all_task_losses(const std::vector<at::Tensor>& outs, const Labels& labels) const;
  /// Forward, the method's backward, gradient norms, clipping, checks, Adam step, the method's
  /// after-step update. Returns the step's record (already appended to the history).
  const StepRecord& train_step(const ModelBatch& batch, int64_t global_size, int64_t e,
                               int64_t s, int64_t nb, double lr);
  /// The method's backward; a method failure is reported with the losses that caused it.
  void method_backward(Step& step, const at::Tensor& raw_losses, StepRecord& rec, int64_t e,
                       int64_t s, int64_t nb);
  /// Norms before clipping, clipping; fills rec's losses and norms (one host synchronisation)
  /// and returns the gradient norm of each group's head.
  std::vector<double> clip_and_report(const at::Tensor& raw_losses, int64_t e, StepRecord& rec);
  /// Stops the run on a non-finite loss or gradient norm in `rec` or `head_group_norms`.
  void check_step(const StepRecord& rec, const std::vector<double>& head_group_norms, int64_t e,
                  int64_t s, int64_t nb);
  void check_losses(const StepRecord& rec, int64_t e, int64_t s, int64_t nb);
  /// Records the failing step, then throws naming the epoch, the step and the last checkpoint.
  [[noreturn]] void fail_step(const std::string& what, StepRecord rec, int64_t e, int64_t s,
                              int64_t nb);
  std::string loss_text(const std::vector<double>& losses) const;

  // ------------------------------------------------------------------ evaluate, select, record
  /// `--eval-regression posterior`: this epoch's full-data posterior means (before the epoch's
  /// end lets the method drop them).
  std::vector<at::Tensor> posterior_means() const;
  /// Metrics on validation and test; returns the test outputs (for the reliability diagrams).
  std::vector<at::Tensor> evaluate(EpochRecord& er, const std::vector<at::Tensor>& means);
  /// Appends `er` to the history; true when it is the best epoch so far.
  bool select(const EpochRecord& er, const std::vector<at::Tensor>& test_outputs);
  /// The atomic checkpoint after epoch `e` (and best_model.pt when `best`).
  void checkpoint(int64_t e, bool best);
  TrainSummary make_summary() const;
  /// metrics.csv, steps.csv, summary.json, curves.svg, calibration.svg.
  void write_records(const TrainSummary& summary) const;
  void log_epoch(const EpochRecord& er, bool best) const;
  std::string path(const char* name) const;

  // ------------------------------------------------------------------ data parallel
  /// Joins the process group the torchrun environment describes (none: one process).
  void join_process_group();
  int64_t world_size() const { return dist_ ? dist_->world_size() : 1; }
  /// Rank 0 (or the only process) writes the run folder; the other ranks write nothing.
  bool writes_files() const { return !dist_ || dist_->rank() == 0; }
  /// Says clearly what a data-parallel run cannot do (methods, devices, too few items).
  void check_data_parallel() const;
  /// With `--resume`: the run must continue on as many ranks as it ran on.
  void check_resumed_world_size() const;
  /// The methods' and the model's reducer: sums tensors in place over the ranks.
  TensorReducer sum_over_ranks();
  /// Before rank 0 checkpoints (a collective on every rank): gathers the method's rank-local
  /// state (BayesAgg-MTL's feature shards and Monte-Carlo generators) into rank 0's checkpoint.
  void gather_method_state();
  /// Rank 0's parameters on every rank.
  void broadcast_parameters();
  /// This rank's part of a global batch: a contiguous slice of the global batch's indices.
  at::Tensor shard(const at::Tensor& indices) const;
  /// Sum over the ranks of `local` · `fraction` (the global batch means), float64 [T].
  at::Tensor global_losses(const at::Tensor& local, double fraction, const char* what);
  /// Sums the gradients over the ranks (each rank's are its shard's share of the global mean);
  /// the trunk's only when the method has not summed its per-task gradients already.
  void reduce_gradients();
  /// Evaluation outputs: each rank predicts a contiguous slice of `split`, all ranks get all.
  std::vector<at::Tensor> predict_split(const std::shared_ptr<const BatchSource>& split,
                                        const std::vector<at::Tensor>& means, const char* name);

  // ------------------------------------------------------------------ state
  TrainOptions o_;
  std::ostream* log_ = nullptr;
  bool given_benchmark_ = false;
  Clock::time_point session_start_;
  int64_t epochs_ = 0;
  std::string dir_, ckpt_;
  int threads_ = 1;
  c10::Device device_ = c10::Device(c10::kCPU);
  bool replace_previous_ = false;

  TrainData data_;
  double data_seconds_ = 0.0;
  int64_t n_tasks_ = 0;
  bool single_ = false;
  int64_t single_index_ = -1;
  at::Tensor single_mask_;
  std::string rule_;
  MetricMap stl_;
  std::string stl_source_, stl_note_;

  /// Held while the run writes its folder: one process per output folder.
  std::unique_ptr<FolderLock> folder_lock_;
  std::unique_ptr<MultiTaskModel> model_;
  std::vector<at::Tensor> trunk_params_, head_params_;
  std::unique_ptr<torch::optim::Adam> adam_;
  LrSchedule schedule_;
  bool plateau_ = false;
  std::unique_ptr<Method> method_;
  bool wants_losses_after_ = false;
  bool posterior_eval_ = false;
  bool batchnorm_ = false;
  at::Generator shuffle_;
  std::string config_;

  RunHistory history_;
  int64_t start_epoch_ = 0;
  double wall_before_ = 0.0;
  std::unique_ptr<ProgressBar> progress_;

  std::shared_ptr<DistGroup> dist_;
  /// The method sums its per-task gradients of the trunk over the ranks itself.
  bool method_reduces_trunk_ = false;
  /// Collective bytes and seconds at the start of the epoch (for the epoch's log line).
  int64_t epoch_bytes_ = 0;
  double epoch_collective_seconds_ = 0.0;
};

}  // namespace bayesagg
