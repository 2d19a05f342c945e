#include "train_loop.h"

#include "bayesagg/core/files.h"
#include "bayesagg/core/losses.h"
#include "bayesagg/core/runtime.h"
#include "bayesagg/core/text.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/data/paper/chestx14.h"
#include "bayesagg/data/paper/cifar_mtl.h"
#include "bayesagg/data/paper/paper.h"
#include "bayesagg/data/paper/qm9.h"
#include "bayesagg/data/paper/utkface.h"
#include "bayesagg/methods/baselines.h"
#include "bayesagg/train/metrics.h"
#include "bayesagg/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace bayesagg {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

/// Reads the paper benchmark named in `o` from `o.data_dir()`.
TrainData load_paper_benchmark(const TrainOptions& o, const c10::Device& device) {
  const std::string& name = o.benchmark();
  if (name == "cifar-mtl") {
    return make_train_data(
        make_cifar_mtl_benchmark(CifarMtlOptions().data_dir(o.data_dir()).seed(o.data_seed())),
        device);
  }
  if (name == "utkface") {
    UTKFaceOptions u = UTKFaceOptions().data_dir(o.data_dir()).seed(o.data_seed());
    if (o.image_size() > 0) u.image_size(o.image_size());
    if (o.crop_size() > 0) u.crop_size(o.crop_size());
    return make_train_data(make_utkface_benchmark(u));
  }
  if (name == "chestx14") {
    ChestX14Options c = ChestX14Options().data_dir(o.data_dir()).split_dir(o.split_dir());
    if (o.image_size() > 0) c.image_size(o.image_size());
    if (o.crop_size() > 0) c.crop_size(o.crop_size());
    return make_train_data(make_chestx14_benchmark(c));
  }
  TORCH_CHECK(name == "qm9", "unknown paper benchmark '", name, "'");
  return make_train_data(make_qm9_benchmark(QM9Options()
                                                .data_dir(o.data_dir())
                                                .seed(o.data_seed())
                                                .val_size(o.val_size())
                                                .test_size(o.test_size())));
}

/// || all gradients of `params` || (0 when none has a gradient).
at::Tensor grad_norm(const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> norms;
  for (const auto& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm().to(at::kDouble));
  }
  if (norms.empty()) {
    const c10::Device device = params.empty() ? c10::Device(c10::kCPU) : params[0].device();
    return at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(device));
  }
  return at::stack(norms).norm();
}

/// Scales the gradients of `params` by min(1, max_norm / (total_norm + 1e-6)), as PyTorch's
/// clip_grad_norm_ (no host synchronisation).
void clip_grads(const std::vector<at::Tensor>& params, const at::Tensor& total_norm,
                double max_norm) {
  const at::Tensor coef = (max_norm / (total_norm + 1e-6)).clamp_max(1.0);
  for (const auto& p : params) {
    if (p.grad().defined()) p.grad().mul_(coef.to(p.grad().dtype()));
  }
}

/// Outputs of every head over a whole split, in evaluation mode and without autograd. A group
/// with a defined `posterior_means[g]` ([outputs, d], a regression posterior mean without bias)
/// is predicted as h · meanᵀ instead of by its head.
std::vector<at::Tensor> predict(MultiTaskModel& model,
                                const std::shared_ptr<const BatchSource>& split,
                                int64_t batch_size, int64_t prefetch, const c10::Device& device,
                                const std::vector<at::Tensor>& posterior_means,
                                int64_t begin = 0, int64_t end = -1) {
  at::NoGradGuard no_grad;
  model.train(false);
  const size_t groups = model.groups().size();
  std::vector<std::vector<at::Tensor>> parts(groups);
  const int64_t n = end < 0 ? split->size() : end;
  std::vector<at::Tensor> batches;
  for (int64_t start = begin; start < n; start += batch_size) {
    batches.push_back(at::arange(start, std::min(batch_size, n - start) + start, at::kLong));
  }
  Prefetcher loader(split, std::move(batches), false, {}, prefetch, device);
  for (int64_t b = 0; b < loader.num_batches(); ++b) {
    const at::Tensor h = model_representation(model, loader.next());
    auto outs = model.head_outputs(h);
    for (size_t g = 0; g < groups; ++g) {
      if (g < posterior_means.size() && posterior_means[g].defined()) {
        outs[g] = at::matmul(h, posterior_means[g].t());
      }
      parts[g].push_back(outs[g]);
    }
  }
  model.train(true);
  std::vector<at::Tensor> out;
  for (size_t g = 0; g < groups; ++g) {
    out.push_back(parts[g].empty() ? at::Tensor() : at::cat(parts[g]));
  }
  return out;
}

/// Bounds --epochs and --stop-after-epoch (1e18 epochs would overflow the schedule's milestones).
void check_epoch_count(int64_t epochs, int64_t stop_after) {
  TORCH_CHECK(epochs >= 1 && epochs <= kMaxEpochs, "--epochs ", epochs, ": expected 1 to ",
              kMaxEpochs);
  TORCH_CHECK(stop_after >= 0 && stop_after <= kMaxEpochs, "--stop-after-epoch ", stop_after,
              ": expected 0 (off) to ", kMaxEpochs);
}

/// Evaluation needs items: an empty validation or test split would fail deep in LibTorch.
void check_evaluation_splits(const std::string& name, int64_t n_val, int64_t n_test) {
  TORCH_CHECK(n_val >= 1 && n_test >= 1, "the ", name, " data have ", n_val,
              " validation and ", n_test, " test items; model selection and evaluation need at "
              "least one of each (more data, or larger validation/test fractions)");
}

/// The files of a previous run in `dir` (before a new run starts there with --overwrite).
void remove_run_files(const std::string& dir) {
  std::error_code ec;
  for (const char* f : {"checkpoint.pt", "checkpoint.prev.pt", "best_model.pt", "summary.json",
                        "metrics.csv", "steps.csv", "curves.svg", "calibration.svg"}) {
    fs::remove(fs::path(dir) / f, ec);
  }
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

}  // namespace

TrainLoop::TrainLoop(TrainOptions options, const std::optional<Benchmark>& given,
                     std::ostream* log, std::shared_ptr<DistGroup> dist)
    : o_(std::move(options)), log_(log), given_benchmark_(given.has_value()),
      dist_(std::move(dist)) {
  session_start_ = Clock::now();
  o_ = o_.with_method_preset();
  o_.validate();
  if (!given) check_paper_benchmark_built(o_.benchmark());
  epochs_ = o_.resolved_epochs();
  check_epoch_count(epochs_, o_.stop_after_epoch());
  dir_ = o_.resolved_out();
  o_.out(dir_);
  ckpt_ = path("checkpoint.pt");
  device_ = parse_device(o_.device());
  join_process_group();
  // --threads 0 under several ranks on this machine: each takes its share of the cores.
  threads_ = set_threads(o_.threads(), dist_ ? dist_->options().local_world_size() : 1);
  prepare_run_folder();
  load_data(given);
  set_up_single_task();
  set_up_stl_baselines(given.has_value());
  build_model_and_method();
  check_data_parallel();
  restore_checkpoint();
  broadcast_parameters();
  write_config();
  log_header();
}

TrainLoop::~TrainLoop() = default;

std::string TrainLoop::path(const char* name) const { return (fs::path(dir_) / name).string(); }

// ==================================================================== set-up

void TrainLoop::prepare_run_folder() {
  std::error_code ec;
  if (!writes_files()) {
    // The other ranks read the checkpoint (shared folder) but write nothing.
    TORCH_CHECK(!o_.resume() || fs::is_regular_file(ckpt_, ec), "rank ", dist_->rank(),
                ": cannot resume: '", ckpt_, "' is not visible on this machine (the ranks read "
                "the run folder's checkpoint: share the folder, or copy it to the same path)");
    return;
  }
  if (o_.resume()) {
    check_resumable(ckpt_);
  } else if (fs::exists(ckpt_, ec) || fs::exists(path("summary.json"), ec)) {
    bool finished = false;
    if (fs::exists(path("summary.json"), ec)) {
      try {
        finished = summary_from_json(read_file(path("summary.json"))).completed();
      } catch (const c10::Error&) {
        finished = false;
      }
    }
    TORCH_CHECK(finished || o_.overwrite(), "'", dir_,
                "' holds an unfinished run; continue it with `bayesagg train --resume ", dir_,
                "`, or start over with --overwrite, or choose another --out");
    TORCH_CHECK(!finished || o_.overwrite(), "'", dir_,
                "' holds a finished run; its results are kept unless you start over with "
                "--overwrite (or choose another --out)");
    replace_previous_ = true;  // removed once the data are loaded
  }
  make_directories(dir_);
  folder_lock_ = std::make_unique<FolderLock>(dir_, "bayesagg train");
  remove_stale_temp_files(dir_);
}

void TrainLoop::load_data(const std::optional<Benchmark>& given) {
  const auto data_start = Clock::now();
  if (given) {
    TORCH_CHECK(given->name == o_.benchmark(), "the benchmark given to the trainer is '",
                given->name, "' but the options name '", o_.benchmark(), "'");
    given->validate();
    data_ = make_train_data(*given, device_);
  } else if (is_paper_benchmark(o_.benchmark())) {
    data_ = load_paper_benchmark(o_, device_);
  } else {
    data_ = make_train_data(*make_embedded_benchmark(o_), device_);
  }
  data_seconds_ = seconds_since(data_start);
  n_tasks_ = data_.meta.num_tasks();
  TORCH_CHECK(data_.train->size() >= 1, "the benchmark has no training items");
  check_evaluation_splits(data_.meta.name, data_.val->size(), data_.test->size());
}

void TrainLoop::set_up_single_task() {
  const Benchmark& bench = data_.meta;
  const std::vector<std::string>& tasks = bench.task_names;
  single_ = !o_.stl_task().empty();
  rule_ = selection_rule(bench);
  if (!single_) return;
  const std::string key = single_task_selection_key(bench, o_.stl_task());  // checks the name
  single_index_ = std::find(tasks.begin(), tasks.end(), o_.stl_task()) - tasks.begin();
  TORCH_CHECK(single_index_ < n_tasks_, "--stl-task '", o_.stl_task(),
              "' names a metric group, not a task of ", bench.name);
  single_mask_ = at::zeros({n_tasks_}, at::TensorOptions().dtype(at::kFloat).device(device_));
  single_mask_[single_index_] = 1.0f;
  rule_ = "validation " + key + (higher_is_better(key) ? "" : " (lower)") + ", single task";
}

void TrainLoop::set_up_stl_baselines(bool given_benchmark) {
  const Benchmark& bench = data_.meta;
  if (single_) {
    // Δm compares multi-task runs with single-task ones; not for a single-task run itself.
  } else if (!o_.stl_baseline().empty()) {
    stl_ = read_stl_baselines(o_.stl_baseline());
    stl_source_ = o_.stl_baseline();
  } else if (is_paper_benchmark(bench.name)) {
    stl_ = published_stl_baselines(bench.name);
    if (!stl_.empty()) {
      stl_source_ = "the published single-task baselines (spec: benchmarks.md)";
      stl_note_ = "the published single-task baselines were measured with the paper's full "
                  "protocol (docs/benchmarks.md)";
    }
  } else {
    stl_ = stored_stl_baselines(bench.name);
    // The stored baselines were measured under the default protocol (docs/training.md); they do
    // not apply to other data, networks or budgets.
    const bool default_protocol = !given_benchmark && is_default_protocol(o_);
    if (!stl_.empty() && default_protocol) {
      stl_source_ = "the stored baselines of docs/training.md";
    } else if (!stl_.empty()) {
      stl_.clear();
      stl_note_ = "the stored single-task baselines of " + bench.name +
                  " apply to the default protocol only (data-seed 0, all training items, default "
                  "network, batch 256, lr 0.001, " + std::to_string(default_epochs(bench.name)) +
                  " epochs); pass --stl-baseline FILE";
    }
  }
  if (!stl_.empty()) check_stl_baselines(bench, stl_, stl_source_);
}

void TrainLoop::build_model_and_method() {
  const Benchmark& bench = data_.meta;
  model_ = std::make_unique<MultiTaskModel>(
      data_.input_shape, bench.groups,
      ModelOptions()
          .trunk(o_.resolved_trunk())
          .representation_dim(o_.resolved_representation_dim())
          .pretrained(o_.pretrained())
          .seed(derive_seed(o_.seed(), 1)));
  model_->to(device_);
  trunk_params_ = model_->trunk_parameters();
  head_params_ = model_->head_parameters();
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(trunk_params_, std::make_unique<torch::optim::AdamOptions>(o_.lr()));
  param_groups.emplace_back(head_params_, std::make_unique<torch::optim::AdamOptions>(o_.lr()));
  adam_ = std::make_unique<torch::optim::Adam>(std::move(param_groups),
                                               torch::optim::AdamOptions(o_.lr()));
  schedule_ = LrSchedule{{o_.lr(), o_.lr()}, LrSchedule::milestones_for(epochs_), 0.1};
  plateau_ = o_.resolved_lr_schedule() == "plateau";

  MethodConfig mc;
  mc.bayesagg = o_.bayesagg();
  mc.bayesagg.seed(derive_seed(o_.seed(), 3));
  // Data-parallel: every rank draws its own Monte-Carlo stream (rank 0 the one-process one).
  if (dist_ && dist_->rank() > 0) {
    mc.bayesagg.seed(derive_seed(mc.bayesagg.seed(), static_cast<uint64_t>(dist_->rank())));
  }
  mc.ls_epochs = o_.ls_epochs();
  mc.weighting = o_.weighting();
  mc.gradient = o_.gradient();
  mc.seed = derive_seed(o_.seed(), 4);
  method_ = make_method(o_.method(), bench.groups, model_->representation_dim(), mc);
  method_->reserve(data_.train->size());
  if (auto* bayes = dynamic_cast<BayesAggMethod*>(method_.get()); bayes && dist_) {
    TORCH_CHECK(bayes->aggregator().options().centre() != PosteriorCentre::mode,
                "--method ", o_.method(), " with --posterior mode is not data-parallel: the "
                "mode's Newton iterations run on the data itself; use newton or head with several "
                "ranks (docs/distributed.md)");
    bayes->aggregator().set_reducer(sum_over_ranks());
    bayes->aggregator().set_process(dist_->rank(), dist_->world_size());
  }
  wants_losses_after_ = method_->needs().count(Need::losses_after_step) > 0;
  posterior_eval_ = o_.resolved_eval_regression() == "posterior" &&
                    dynamic_cast<BayesAggMethod*>(method_.get());
  batchnorm_ = model_->has_batchnorm();
  if (batchnorm_ && dist_) {
    // Synchronised BatchNorm: the global batch's statistics (one all-reduce per layer forward,
    // one per backward pass through it).
    model_->set_batchnorm_reducer(sum_over_ranks());
  }
  shuffle_ = at::make_generator<at::CPUGeneratorImpl>(derive_seed(o_.seed(), 2));
  method_reduces_trunk_ = method_->needs().count(Need::shared_grads) > 0;
  config_ = options_to_json(o_);
}

void TrainLoop::restore_checkpoint() {
  if (o_.resume()) {
    const CheckpointState st = load_checkpoint(ckpt_, *model_, *adam_, *method_, shuffle_);
    const std::string key = first_setting_difference(st.config_json, config_);
    if (!key.empty()) {
      const nlohmann::json was = nlohmann::json::parse(st.config_json);
      const nlohmann::json now = nlohmann::json::parse(config_);
      TORCH_CHECK(false, "cannot resume '", dir_, "': setting '", excerpt(key), "' was ",
                  was.contains(key) ? excerpt(was[key].dump()) : "absent",
                  " in the checkpoint and is ", now.contains(key) ? excerpt(now[key].dump()) : "absent",
                  " now");
    }
    TORCH_CHECK(st.schedule.milestones == schedule_.milestones, "cannot resume '", dir_,
                "': the checkpoint's learning-rate milestones differ");
    check_resumed_world_size();
    history_ = history_from_json(st.history_json);
    start_epoch_ = st.epoch;
    history_.truncate(start_epoch_);
  }
  wall_before_ = history_.wall_seconds;
  if (o_.resume()) {
    restore_best_model(path("best_model.pt"), *model_, history_.best_epoch, start_epoch_);
  }
}

void TrainLoop::write_config() {
  if (!writes_files()) return;
  if (replace_previous_) {
    if (log_) *log_ << "note: replacing the previous run in " << dir_ << "\n";
    remove_run_files(dir_);
  }
  nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(config_);
  cfg["_threads_used"] = threads_;
  cfg["_world_size"] = world_size();
  cfg["_note"] = "every effective setting; `bayesagg train --config` accepts this file";
  write_file_atomic(path("config.json"), cfg.dump(2) + "\n");
}

void TrainLoop::log_header() const {
  if (!log_) return;
  std::ostream& log = *log_;
  log << "bayesagg train: " << data_.description << "\n";
  for (const auto& note : data_.notes) log << "  note: " << note << "\n";
  log << "  data ready in " << fixed(data_seconds_, 1) << " s; model " << model_->describe()
      << "\n  method " << method_->describe()
      << (single_ ? " on the single task '" + o_.stl_task() + "'" : std::string()) << "\n  "
      << epochs_ << " epochs, batch " << o_.batch_size() << ", Adam lr " << o_.lr()
      << (plateau_ ? std::string(" (ReduceLROnPlateau x0.7, patience 5, min 1e-05)")
                   : " (x0.1 at epochs " + std::to_string(schedule_.milestones[0]) + ", " +
                         std::to_string(schedule_.milestones[1]) + ")")
      << ", head clip " << o_.head_clip() << ", trunk clip "
      << (o_.trunk_clip() > 0 ? fixed(o_.trunk_clip(), 1) +
                                    (o_.trunk_clip_after_warmup() ? " after the warm-up" : "")
                              : "off")
      << ", " << threads_ << " thread(s)"
      << (dist_ ? ", " + std::to_string(world_size()) + " data-parallel ranks (Gloo, timeout " +
                      fixed(o_.dist_timeout(), 0) + " s)"
                : std::string())
      << ", " << device_ << ", seed " << o_.seed()
      << "\n  run folder " << dir_ << "\n";
  if (o_.resume()) log << "  resuming after epoch " << start_epoch_ << "\n";
  log.flush();
}

// ==================================================================== the run

TrainSummary TrainLoop::run() {
  progress_ = std::make_unique<ProgressBar>(
      parse_progress_mode(writes_files() ? o_.progress() : "none", stderr_is_terminal()),
      std::cerr);
  const int64_t stop_at = o_.stop_after_epoch() > 0 ? o_.stop_after_epoch() : epochs_;
  for (int64_t e = start_epoch_; e < std::min(epochs_, stop_at); ++e) {
    const auto epoch_start = Clock::now();
    if (dist_) {
      epoch_bytes_ = dist_->bytes_reduced();
      epoch_collective_seconds_ = dist_->seconds_in_collectives();
    }
    EpochRecord er = train_epoch(e);
    const std::vector<at::Tensor> means = posterior_means();
    method_->on_epoch_end(e);
    progress_->finish();
    er.train_seconds = seconds_since(epoch_start);
    const std::vector<at::Tensor> test_outputs = evaluate(er, means);
    const bool best = select(er, test_outputs);
    gather_method_state();
    if (writes_files()) {
      checkpoint(e, best);
      write_records(make_summary());
    }
    log_epoch(er, best);
  }
  TrainSummary summary = make_summary();
  if (writes_files()) write_records(summary);
  if (log_) {
    if (!summary.completed()) {
      *log_ << "stopped after epoch " << summary.epochs_completed << " of " << epochs_
            << "; continue with `bayesagg train --resume " << dir_ << "`\n";
    }
    *log_ << "\n" << format_summary_table(summary);
    log_->flush();
  }
  return summary;
}

// ==================================================================== one epoch

double TrainLoop::set_learning_rates(int64_t e) {
  auto& groups = adam_->param_groups();
  std::vector<double> group_lr;
  if (plateau_) {
    // ReduceLROnPlateau on the validation selection score (qm9: validation delta_m), replayed
    // from the history (so a resumed run gets the same rates).
    std::vector<double> monitored;
    for (const auto& r : history_.epochs) monitored.push_back(-r.score.primary);
    group_lr.assign(groups.size(), plateau_lr(o_.lr(), monitored, 0.7, 5, 1e-5));
  } else {
    for (size_t g = 0; g < groups.size(); ++g) group_lr.push_back(schedule_.lr(g, e));
  }
  for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(group_lr[g]);
  return group_lr[0];
}

TrainLoop::EpochPlan TrainLoop::plan_epoch(int64_t e) {
  const EpochBatches batches(data_.train->size(), o_.batch_size(), shuffle_);
  int64_t nb = batches.num_batches();
  // BatchNorm cannot normalise a single item in training mode: a last (global) batch of one item
  // is left out of the epoch (as a data loader's drop_last would). Data-parallel, a rank's shard
  // may hold a single item: the synchronised BatchNorm normalises with the global batch's
  // statistics, which need more than one item in the global batch only.
  if (batchnorm_ && nb > 1 && batches[nb - 1].size(0) == 1) --nb;
  EpochPlan plan;
  for (int64_t s = 0; s < nb; ++s) {
    const at::Tensor batch = batches[s];
    TORCH_CHECK(batch.size(0) >= world_size(), "epoch ", e + 1, ": batch ", s + 1, " has ",
                batch.size(0), " items, fewer than the ", world_size(),
                " data-parallel ranks; choose --batch-size (and the training-set size) so that "
                "every batch, the last one included, has at least one item per rank");
    plan.items += batch.size(0);
    plan.global_sizes.push_back(batch.size(0));
    plan.batches.push_back(dist_ ? shard(batch) : batch);
    uint64_t seed = augment_seed(o_.seed(), e, s);
    // Data-parallel: each rank augments its shard from its own stream (rank 0 the one-process
    // one), not from copies of one stream that would give the shards' i-th items the same draws.
    if (dist_ && dist_->rank() > 0) seed = derive_seed(seed, static_cast<uint64_t>(dist_->rank()));
    plan.seeds.push_back(seed);
  }
  return plan;
}

EpochRecord TrainLoop::train_epoch(int64_t e) {
  const double lr = set_learning_rates(e);
  model_->train(true);
  method_->on_epoch_start(e);
  EpochPlan plan = plan_epoch(e);
  const auto nb = static_cast<int64_t>(plan.batches.size());
  Prefetcher loader(data_.train, std::move(plan.batches), true, std::move(plan.seeds),
                    o_.prefetch(), device_);
  progress_->start("epoch " + std::to_string(e + 1) + "/" + std::to_string(epochs_), nb);
  std::vector<double> loss_sum(static_cast<size_t>(n_tasks_), 0.0);
  double running = 0.0;
  for (int64_t s = 0; s < nb; ++s) {
    const ModelBatch batch = loader.next();
    const auto bsz = static_cast<double>(plan.global_sizes[s]);
    const StepRecord& rec = train_step(batch, plan.global_sizes[s], e, s, nb, lr);
    double total = 0.0;
    for (int64_t t = 0; t < n_tasks_; ++t) {
      loss_sum[t] += rec.losses[t] * bsz;
      total += rec.losses[t];
    }
    running = s == 0 ? total : 0.9 * running + 0.1 * total;
    progress_->update(s + 1, "loss " + fixed(running, 4));
  }
  EpochRecord er;
  er.epoch = e + 1;
  er.lr = lr;
  for (double v : loss_sum) er.train_loss.push_back(v / static_cast<double>(plan.items));
  return er;
}

// ==================================================================== one step

at::Tensor TrainLoop::all_task_losses(const std::vector<at::Tensor>& outs,
                                      const Labels& labels) const {
  const Benchmark& bench = data_.meta;
  std::vector<at::Tensor> parts;
  for (size_t g = 0; g < bench.groups.size(); ++g) {
    parts.push_back(task_losses(bench.groups[g], outs[g], labels[g]));
  }
  return at::cat(parts);
}

const StepRecord& TrainLoop::train_step(const ModelBatch& batch, int64_t global_size, int64_t e,
                                        int64_t s, int64_t nb, double lr) {
  adam_->zero_grad();
  const at::Tensor h = model_representation(*model_, batch);
  const std::vector<at::Tensor> outs = model_->head_outputs(h);
  at::Tensor raw_losses = all_task_losses(outs, batch.labels);
  Step step;
  step.losses = single_ ? raw_losses * single_mask_ : raw_losses;
  const double fraction =
      static_cast<double>(batch.size()) / static_cast<double>(global_size);
  if (dist_) {
    // The methods see the global batch's losses (their values), and the gradients of this
    // shard's share of them: fraction · dL_shard, summed over the ranks after the backward.
    dist_->set_context("epoch " + std::to_string(e + 1) + ", step " + std::to_string(s + 1));
    const at::Tensor global = global_losses(raw_losses, fraction, "losses")
                                  .to(raw_losses.device(), raw_losses.scalar_type());
    const at::Tensor share = step.losses * fraction;
    step.losses = (single_ ? global * single_mask_ : global) + (share - share.detach());
    raw_losses = global;
    step.reduce_task_gradients = [this](const at::Tensor& g) {
      dist_->all_reduce({g}, ReduceMode::sum, "per-task gradients");
    };
    step.reduce_gram = [this](const at::Tensor& gram) {
      dist_->all_reduce({gram}, ReduceMode::sum, "the Gram matrix of the per-task gradients");
    };
  }
  step.representation = h;
  step.heads = model_->heads();
  step.labels = batch.labels;
  step.shared_parameters = trunk_params_;
  step.epoch = e;
  step.step = s;

  StepRecord rec;
  rec.epoch = e + 1;
  rec.step = s + 1;
  rec.lr = lr;
  method_backward(step, raw_losses, rec, e, s, nb);
  if (dist_) reduce_gradients();
  const std::vector<double> head_group_norms = clip_and_report(raw_losses, e, rec);
  rec.diagnostics = method_->diagnostics();
  check_step(rec, head_group_norms, e, s, nb);
  adam_->step();
  if (wants_losses_after_) {
    // The losses on the same batch after the step (FAMO's update), without autograd.
    at::NoGradGuard no_grad;
    at::Tensor l =
        all_task_losses(model_->head_outputs(model_representation(*model_, batch)), batch.labels);
    if (dist_) {
      l = global_losses(l, fraction, "losses after the step").to(l.device(), l.scalar_type());
    }
    method_->after_step(single_ ? l * single_mask_ : l);
  }
  history_.steps.push_back(std::move(rec));
  return history_.steps.back();
}

void TrainLoop::method_backward(Step& step, const at::Tensor& raw_losses, StepRecord& rec,
                                int64_t e, int64_t s, int64_t nb) {
  try {
    method_->backward(step);
  } catch (const c10::Error& err) {
    // A method may fail on non-finite inputs (e.g. a Cholesky of NaN): report the cause.
    const at::Tensor l = raw_losses.detach().to(at::kCPU, at::kDouble).contiguous();
    rec.losses.assign(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
    check_losses(rec, e, s, nb);
    TORCH_CHECK(false, o_.method(), " failed at epoch ", e + 1, ", step ", s + 1, ": ",
                err.msg());
  }
}

std::vector<double> TrainLoop::clip_and_report(const at::Tensor& raw_losses, int64_t e,
                                               StepRecord& rec) {
  const Benchmark& bench = data_.meta;
  const at::Tensor trunk_norm = grad_norm(trunk_params_);
  std::vector<at::Tensor> head_norm_parts;
  for (size_t g = 0; g < bench.groups.size(); ++g) {
    head_norm_parts.push_back(grad_norm({head_params_[2 * g], head_params_[2 * g + 1]}));
  }
  const at::Tensor head_norms = at::stack(head_norm_parts);
  const at::Tensor head_norm = head_norms.norm();
  if (o_.head_clip() > 0) clip_grads(head_params_, head_norm, o_.head_clip());
  if (o_.trunk_clip() > 0 && (!o_.trunk_clip_after_warmup() || e >= o_.ls_epochs())) {
    clip_grads(trunk_params_, trunk_norm, o_.trunk_clip());
  }
  const at::Tensor report =
      at::cat({raw_losses.detach().to(at::kDouble).flatten(), trunk_norm.reshape({1}),
               head_norm.reshape({1}), head_norms})
          .to(at::kCPU)
          .contiguous();
  const double* r = report.data_ptr<double>();
  rec.losses.assign(r, r + n_tasks_);
  rec.trunk_grad_norm = r[n_tasks_];
  rec.head_grad_norm = r[n_tasks_ + 1];
  return std::vector<double>(r + n_tasks_ + 2, r + report.numel());
}

std::string TrainLoop::loss_text(const std::vector<double>& l) const {
  std::ostringstream os;
  for (int64_t t = 0; t < n_tasks_; ++t) {
    os << (t ? ", " : "") << data_.meta.task_names[t] << " " << l[t];
  }
  return os.str();
}

void TrainLoop::check_losses(const StepRecord& rec, int64_t e, int64_t s, int64_t nb) {
  const std::vector<std::string>& tasks = data_.meta.task_names;
  std::string bad;
  int64_t count = 0;
  for (int64_t t = 0; t < n_tasks_; ++t) {
    if (std::isfinite(rec.losses[t]) || (single_ && t != single_index_)) continue;
    bad += (count++ ? ", '" : "'") + tasks[t] + "'";
  }
  if (count == 0) return;
  fail_step(std::string("non-finite loss of task") + (count > 1 ? "s " : " ") + bad + " (" +
                loss_text(rec.losses) + ")",
            rec, e, s, nb);
}

void TrainLoop::check_step(const StepRecord& rec, const std::vector<double>& head_group_norms,
                           int64_t e, int64_t s, int64_t nb) {
  const Benchmark& bench = data_.meta;
  check_losses(rec, e, s, nb);
  if (!std::isfinite(rec.trunk_grad_norm)) {
    fail_step("non-finite gradient of the trunk (norm " + std::to_string(rec.trunk_grad_norm) +
                  "; it aggregates all tasks: " + loss_text(rec.losses) + ")",
              rec, e, s, nb);
  }
  for (size_t g = 0; g < bench.groups.size(); ++g) {
    const double v = head_group_norms[g];
    if (std::isfinite(v)) continue;
    std::string names;
    int64_t first = 0;
    for (size_t i = 0; i < g; ++i) first += bench.groups[i].num_tasks();
    for (int64_t k = 0; k < bench.groups[g].num_tasks(); ++k) {
      names += (k ? ", " : "") + bench.task_names[first + k];
    }
    fail_step("non-finite gradient of the head of task(s) '" + names + "' (norm " +
                  std::to_string(v) + ")",
              rec, e, s, nb);
  }
}

void TrainLoop::fail_step(const std::string& what, StepRecord rec, int64_t e, int64_t s,
                          int64_t nb) {
  history_.steps.push_back(std::move(rec));
  try {
    if (writes_files()) {
      write_file_atomic(path("steps.csv"), steps_csv(history_, data_.meta.task_names));
    }
  } catch (const c10::Error&) {
  }
  progress_->finish();
  const std::string last =
      e == 0 ? std::string("No checkpoint was written (the failure is in the first epoch)")
             : "The last good checkpoint (epoch " + std::to_string(e) + ") is intact in " +
                   ckpt_ + "; `bayesagg train --resume " + dir_ + "` continues from it";
  TORCH_CHECK(false, what, " at epoch ", e + 1, ", step ", s + 1, " of ", nb,
              "; the run stopped before the optimiser step. ", last,
              ". steps.csv has the per-step losses and gradient norms up to here.");
}

// ==================================================================== evaluate, select, record

std::vector<at::Tensor> TrainLoop::posterior_means() const {
  const Benchmark& bench = data_.meta;
  std::vector<at::Tensor> means(bench.groups.size());
  if (!posterior_eval_) return means;
  const auto& full =
      static_cast<const BayesAggMethod&>(*method_).aggregator().current_full_data_posteriors();
  for (size_t g = 0; g < full.size() && g < bench.groups.size(); ++g) {
    if (bench.groups[g].type == GroupType::regression && full[g].defined()) {
      means[g] = full[g].mean.to(device_, at::kFloat);
    }
  }
  return means;
}

std::vector<at::Tensor> TrainLoop::evaluate(EpochRecord& er,
                                            const std::vector<at::Tensor>& means) {
  const Benchmark& bench = data_.meta;
  const auto eval_start = Clock::now();
  er.val = compute_metrics(bench, predict_split(data_.val, means, "validation outputs"),
                           data_.val->labels());
  std::vector<at::Tensor> test_outputs = predict_split(data_.test, means, "test outputs");
  er.test = compute_metrics(bench, test_outputs, data_.test->labels());
  er.score = single_ ? single_task_score(bench, er.val, o_.stl_task())
                     : selection_score(bench, er.val);
  er.eval_seconds = seconds_since(eval_start);
  return test_outputs;
}

bool TrainLoop::select(const EpochRecord& er, const std::vector<at::Tensor>& test_outputs) {
  bool best = history_.best_epoch == 0;
  if (!best) best = er.score.better_than(history_.best().score);
  history_.epochs.push_back(er);
  if (best) {
    history_.best_epoch = er.epoch;
    history_.best_reliability =
        reliability_diagrams(data_.meta, test_outputs, data_.test->labels());
  }
  history_.wall_seconds = wall_before_ + seconds_since(session_start_);
  return best;
}

void TrainLoop::checkpoint(int64_t e, bool best) {
  CheckpointState st;
  st.epoch = e + 1;
  st.schedule = schedule_;
  st.config_json = config_;
  st.history_json = history_to_json(history_);
  save_checkpoint(ckpt_, *model_, *adam_, *method_, shuffle_, st);
  if (best) save_model(path("best_model.pt"), *model_, e + 1);
}

TrainSummary TrainLoop::make_summary() const {
  const Benchmark& bench = data_.meta;
  TrainSummary s;
  s.benchmark = bench.name;
  s.method = o_.method();
  s.run_dir = dir_;
  s.seed = o_.seed();
  s.epochs = epochs_;
  s.epochs_completed = history_.epochs.empty() ? 0 : history_.epochs.back().epoch;
  s.best_epoch = history_.best_epoch;
  s.n_train = data_.train->size();
  s.n_val = data_.val->size();
  s.n_test = data_.test->size();
  s.tasks = bench.task_names;
  s.selection = rule_;
  if (history_.best_epoch > 0) {
    s.val = history_.best().val;
    s.test = history_.best().test;
  }
  if (single_) {
    s.stl_task = o_.stl_task();
    MetricMap v, t;
    std::vector<std::string> keys = task_metric_keys(bench, o_.stl_task());
    for (const char* metric : {"/ece", "/brier"}) keys.push_back(o_.stl_task() + metric);
    for (const auto& key : keys) {
      if (s.val.count(key)) v[key] = s.val.at(key);
      if (s.test.count(key)) t[key] = s.test.at(key);
    }
    s.val = v;
    s.test = t;
  }
  s.stl_baseline = stl_;
  s.stl_source = stl_source_;
  s.stl_note = stl_note_;
  if (!stl_.empty() && !s.test.empty()) s.delta_m = delta_m(s.test, stl_);
  s.wall_seconds = wall_before_ + seconds_since(session_start_);
  for (const auto& r : history_.epochs) {
    s.epoch_train_seconds.push_back(r.train_seconds);
    s.epoch_eval_seconds.push_back(r.eval_seconds);
  }
  return s;
}

void TrainLoop::write_records(const TrainSummary& s) const {
  const std::vector<std::string>& tasks = data_.meta.task_names;
  const std::string title =
      data_.meta.name + " / " + o_.method() + " / seed " + std::to_string(o_.seed());
  write_file_atomic(path("metrics.csv"), metrics_csv(history_, tasks));
  write_file_atomic(path("steps.csv"), steps_csv(history_, tasks));
  write_file_atomic(path("summary.json"), summary_to_json(s));
  write_file_atomic(path("curves.svg"), curves_svg(history_, tasks, title));
  std::vector<TaskReliability> diagrams;
  for (const auto& d : history_.best_reliability) {
    if (!single_ || d.task == o_.stl_task()) diagrams.push_back(d);
  }
  if (!diagrams.empty()) {
    write_file_atomic(path("calibration.svg"),
                      calibration_svg(diagrams, title + " / test split, best epoch " +
                                                    std::to_string(history_.best_epoch)));
  }
}

void TrainLoop::log_epoch(const EpochRecord& er, bool best) const {
  if (!log_) return;
  std::ostringstream line;
  line << "epoch " << er.epoch << "/" << epochs_ << "  " << fixed(er.train_seconds, 1) << "s (+"
       << fixed(er.eval_seconds, 1) << "s eval)  lr " << er.lr << "  loss";
  for (int64_t t = 0; t < n_tasks_ && t < 4; ++t) line << " " << fixed(er.train_loss[t], 4);
  if (n_tasks_ > 4) line << " ... (" << n_tasks_ << " tasks)";
  // The task metrics only: the calibration metrics are in metrics.csv and the summary.
  const auto shown = [](const MetricMap& m) {
    std::vector<std::pair<std::string, double>> kv;
    for (const auto& [k, v] : m) {
      if (!is_calibration_metric(k)) kv.emplace_back(k, v);
    }
    return kv;
  };
  const auto val_shown = shown(er.val);
  if (val_shown.size() <= 4) {
    line << "  val";
    for (const auto& [k, v] : val_shown) line << " " << k << " " << fixed(v, 4);
    line << "  test";
    for (const auto& [k, v] : shown(er.test)) line << " " << fixed(v, 4);
  } else {
    const bool lower = rule_.find("(lower)") != std::string::npos;
    line << "  " << rule_ << " " << fixed(lower ? -er.score.primary : er.score.primary, 4);
  }
  if (best) line << "  *best";
  if (dist_) {
    const double mb = static_cast<double>(dist_->bytes_reduced() - epoch_bytes_) / 1e6;
    const double share = (dist_->seconds_in_collectives() - epoch_collective_seconds_) /
                         std::max(er.train_seconds + er.eval_seconds, 1e-9);
    line << "  collectives " << fixed(mb, 1) << " MB, " << fixed(100.0 * share, 0)
         << "% of the time";
  }
  *log_ << line.str() << "\n";
  log_->flush();
}

// ==================================================================== data parallel

void TrainLoop::join_process_group() {
  if (!dist_) {
    const std::optional<DistOptions> env = dist_options_from_env(o_.dist_timeout());
    if (env && env->world_size() > 1) dist_ = std::make_shared<DistGroup>(*env);
  }
  if (dist_ && dist_->rank() != 0) log_ = nullptr;
}

void TrainLoop::check_data_parallel() const {
  if (!dist_) return;
  const std::set<Need> needs = method_->needs();
  const bool reps = needs.count(Need::representation_grads) > 0;
  const bool features = needs.count(Need::features_and_labels) > 0;
  const bool bayes = dynamic_cast<const BayesAggMethod*>(method_.get()) != nullptr;
  const auto* gradient = dynamic_cast<const GradientMethod*>(method_.get());
  const bool gram = gradient && gradient->data_parallel();
  TORCH_CHECK((!reps || gram) && (!features || bayes), "--method ", o_.method(), " is not "
              "data-parallel yet: it aggregates every example's gradients of the representation "
              "(not only their Gram matrix, as mgdaub and alignedmtlub do); data-parallel "
              "training runs ls, bayesagg, bayesagg-reference, the loss weightings, the gradient "
              "methods on the shared parameters, mgdaub and alignedmtlub (docs/distributed.md)");
  TORCH_CHECK(device_.is_cpu(), "data-parallel training runs on cpu (Gloo); --device ",
              o_.device(), " needs NCCL, which this LibTorch build does not have");
  TORCH_CHECK(o_.batch_size() >= world_size(), "--batch-size ", o_.batch_size(),
              " is smaller than the ", world_size(), " data-parallel ranks");
  TORCH_CHECK(data_.val->size() >= world_size() && data_.test->size() >= world_size(),
              "evaluation is split over the ", world_size(), " ranks but the validation and "
              "test splits have ", data_.val->size(), " and ", data_.test->size(), " items");
}

TensorReducer TrainLoop::sum_over_ranks() {
  return [this](const std::vector<at::Tensor>& t, const char* what) {
    dist_->all_reduce(t, ReduceMode::sum, what);
  };
}

void TrainLoop::gather_method_state() {
  if (!dist_) return;
  if (auto* bayes = dynamic_cast<BayesAggMethod*>(method_.get())) {
    bayes->aggregator().gather_for_checkpoint([this](const at::Tensor& t, const char* what) {
      return dist_->all_gather(t, what);
    });
  }
}

void TrainLoop::check_resumed_world_size() const {
  std::error_code ec;
  int64_t recorded = 1;
  if (fs::is_regular_file(path("config.json"), ec)) {
    const nlohmann::json cfg = nlohmann::json::parse(read_file(path("config.json")));
    if (cfg.contains("_world_size")) recorded = cfg["_world_size"].get<int64_t>();
  }
  TORCH_CHECK(recorded == world_size(), "cannot resume '", dir_, "' on ", world_size(),
              " rank(s): it ran on ", recorded, "; resume with --nproc ", recorded,
              " (the shards and the order of the sums depend on the number of ranks)");
}

void TrainLoop::broadcast_parameters() {
  if (!dist_) return;
  std::vector<at::Tensor> params = trunk_params_;
  params.insert(params.end(), head_params_.begin(), head_params_.end());
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> data;
  for (const auto& p : params) data.push_back(p.detach());
  dist_->broadcast(data, "the initial parameters");
}

at::Tensor TrainLoop::shard(const at::Tensor& indices) const {
  const int64_t n = indices.size(0), r = dist_->rank(), w = dist_->world_size();
  const int64_t begin = n * r / w, end = n * (r + 1) / w;
  return indices.slice(0, begin, end);
}

at::Tensor TrainLoop::global_losses(const at::Tensor& local, double fraction, const char* what) {
  at::Tensor sum = (local.detach().to(at::kCPU, at::kDouble) * fraction).contiguous();
  dist_->all_reduce({sum}, ReduceMode::sum, what);
  return sum;
}

void TrainLoop::reduce_gradients() {
  std::vector<at::Tensor> grads;
  if (!method_reduces_trunk_) {
    for (const auto& p : trunk_params_) grads.push_back(p.grad());
  }
  for (const auto& p : head_params_) grads.push_back(p.grad());
  dist_->all_reduce(grads, ReduceMode::sum, "gradients");
}

std::vector<at::Tensor> TrainLoop::predict_split(const std::shared_ptr<const BatchSource>& split,
                                                 const std::vector<at::Tensor>& means,
                                                 const char* name) {
  if (!dist_) {
    return predict(*model_, split, o_.eval_batch_size(), o_.prefetch(), device_, means);
  }
  const int64_t n = split->size(), r = dist_->rank(), w = dist_->world_size();
  std::vector<at::Tensor> outs = predict(*model_, split, o_.eval_batch_size(), o_.prefetch(),
                                         device_, means, n * r / w, n * (r + 1) / w);
  for (auto& out : outs) {
    if (out.defined()) out = dist_->all_gather(out.contiguous(), name);
  }
  return outs;
}

}  // namespace bayesagg
