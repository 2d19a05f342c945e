#include "bayesagg/train/trainer.h"

#include "bayesagg/core/files.h"
#include "bayesagg/core/losses.h"
#include "bayesagg/core/runtime.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/data/paper/chestx14.h"
#include "bayesagg/data/paper/cifar_mtl.h"
#include "bayesagg/data/paper/paper.h"
#include "bayesagg/data/paper/qm9.h"
#include "bayesagg/data/paper/utkface.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"
#include "bayesagg/train/batch_source.h"
#include "bayesagg/train/checkpoint.h"
#include "bayesagg/train/metrics.h"
#include "bayesagg/train/progress.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

namespace bayesagg {
namespace {

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
                                const std::vector<at::Tensor>& posterior_means) {
  at::NoGradGuard no_grad;
  model.train(false);
  const size_t groups = model.groups().size();
  std::vector<std::vector<at::Tensor>> parts(groups);
  const int64_t n = split->size();
  std::vector<at::Tensor> batches;
  for (int64_t start = 0; start < n; start += batch_size) {
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
    std::filesystem::remove(std::filesystem::path(dir) / f, ec);
  }
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::optional<Benchmark> make_embedded_benchmark(const TrainOptions& o) {
  if (is_paper_benchmark(o.benchmark())) return std::nullopt;
  return make_benchmark(o.benchmark(), EmbeddedOptions()
                                           .data_dir(o.data_dir())
                                           .seed(o.data_seed())
                                           .train_subset(o.train_subset()));
}

c10::Device parse_device(const std::string& name) {
  std::optional<c10::Device> d;
  try {
    d.emplace(name);
  } catch (const c10::Error&) {
    TORCH_CHECK(false, "--device: '", name, "' is not a device; use cpu or cuda[:N]");
  }
  TORCH_CHECK(d->is_cpu() || d->is_cuda(), "--device: '", name,
              "' is not supported; use cpu or cuda[:N]");
  if (d->is_cuda()) {
    TORCH_CHECK(torch::cuda::is_available(), "--device ", name,
                ": this LibTorch has no CUDA support (or no GPU is visible); use --device cpu, "
                "or build bayesagg against a CUDA build of LibTorch (see the README)");
    const auto count = static_cast<int64_t>(torch::cuda::device_count());
    const int64_t index = d->has_index() ? d->index() : 0;
    TORCH_CHECK(index < count, "--device ", name, ": only ", count, " CUDA device(s) visible");
  }
  return *d;
}

TrainOptions resume_options(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_regular_file(path, ec), "--resume ", dir,
              ": no config.json there (is it a run folder?)");
  TrainOptions o;
  apply_config_json(o, read_file(path), "'" + path + "'");
  o.out(dir);
  o.resume(true);
  o.overwrite(false);
  return o;
}

struct Trainer::Impl {
  TrainOptions options;
  std::optional<Benchmark> given;
  std::ostream* log = nullptr;
};

Trainer::Trainer(TrainOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}

Trainer::Trainer(TrainOptions options, Benchmark benchmark) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->given = std::move(benchmark);
}

Trainer::~Trainer() = default;

void Trainer::set_log(std::ostream* log) { impl_->log = log; }

TrainSummary Trainer::run() {
  namespace fs = std::filesystem;
  const auto session_start = Clock::now();
  TrainOptions o = impl_->options.with_method_preset();
  o.validate();
  if (!impl_->given) check_paper_benchmark_built(o.benchmark());
  std::ostream* log = impl_->log;
  const int64_t epochs = o.resolved_epochs();
  check_epoch_count(epochs, o.stop_after_epoch());
  const std::string dir = o.resolved_out();
  o.out(dir);
  const auto path = [&](const char* name) { return (fs::path(dir) / name).string(); };
  const std::string ckpt = path("checkpoint.pt");

  // ---------------------------------------------------------------- environment
  const int threads = set_threads(o.threads());
  const c10::Device device = parse_device(o.device());

  std::error_code ec;
  bool replace_previous = false;
  if (o.resume()) {
    check_resumable(ckpt);
  } else if (fs::exists(ckpt, ec) || fs::exists(path("summary.json"), ec)) {
    bool finished = false;
    if (fs::exists(path("summary.json"), ec)) {
      try {
        finished = summary_from_json(read_file(path("summary.json"))).completed();
      } catch (const c10::Error&) {
        finished = false;
      }
    }
    TORCH_CHECK(finished || o.overwrite(), "'", dir,
                "' holds an unfinished run; continue it with `bayesagg train --resume ", dir,
                "`, or start over with --overwrite, or choose another --out");
    TORCH_CHECK(!finished || o.overwrite(), "'", dir,
                "' holds a finished run; its results are kept unless you start over with "
                "--overwrite (or choose another --out)");
    replace_previous = true;  // removed once the data are loaded
  }
  make_directories(dir);
  const FolderLock lock(dir, "bayesagg train");
  remove_stale_temp_files(dir);

  // ---------------------------------------------------------------- data
  const auto data_start = Clock::now();
  TrainData data;
  if (impl_->given) {
    const Benchmark& given = *impl_->given;
    TORCH_CHECK(given.name == o.benchmark(), "the benchmark given to the trainer is '", given.name,
                "' but the options name '", o.benchmark(), "'");
    given.validate();
    data = make_train_data(given, device);
  } else if (is_paper_benchmark(o.benchmark())) {
    data = load_paper_benchmark(o, device);
  } else {
    data = make_train_data(*make_embedded_benchmark(o), device);
  }
  const Benchmark& bench = data.meta;
  // Per-task batch-mean losses [T] of every group's outputs, in group order.
  const auto all_task_losses = [&bench](const std::vector<at::Tensor>& outs,
                                        const Labels& labels) {
    std::vector<at::Tensor> parts;
    for (size_t g = 0; g < bench.groups.size(); ++g) {
      parts.push_back(task_losses(bench.groups[g], outs[g], labels[g]));
    }
    return at::cat(parts);
  };
  const double data_seconds = seconds_since(data_start);
  const std::vector<std::string>& tasks = bench.task_names;
  const int64_t n_tasks = bench.num_tasks();
  TORCH_CHECK(data.train->size() >= 1, "the benchmark has no training items");
  check_evaluation_splits(bench.name, data.val->size(), data.test->size());

  // Single-task learning: one task's loss only, selected on that task's metric.
  const bool single = !o.stl_task().empty();
  int64_t single_index = -1;
  at::Tensor single_mask;
  std::string rule = selection_rule(bench);
  if (single) {
    const std::string key = single_task_selection_key(bench, o.stl_task());  // checks the name
    single_index = std::find(tasks.begin(), tasks.end(), o.stl_task()) - tasks.begin();
    TORCH_CHECK(single_index < n_tasks, "--stl-task '", o.stl_task(),
                "' names a metric group, not a task of ", bench.name);
    single_mask = at::zeros({n_tasks}, at::TensorOptions().dtype(at::kFloat).device(device));
    single_mask[single_index] = 1.0f;
    rule = "validation " + key + (higher_is_better(key) ? "" : " (lower)") + ", single task";
  }

  MetricMap stl;
  std::string stl_source, stl_note;
  if (single) {
    // Δm compares multi-task runs with single-task ones; not for a single-task run itself.
  } else if (!o.stl_baseline().empty()) {
    stl = read_stl_baselines(o.stl_baseline());
    stl_source = o.stl_baseline();
  } else if (is_paper_benchmark(bench.name)) {
    stl = published_stl_baselines(bench.name);
    if (!stl.empty()) {
      stl_source = "the published single-task baselines (spec: benchmarks.md)";
      stl_note = "the published single-task baselines were measured with the paper's full "
                 "protocol (docs/benchmarks.md)";
    }
  } else {
    stl = stored_stl_baselines(bench.name);
    // The stored baselines were measured under the default protocol (docs/training.md); they do
    // not apply to other data, networks or budgets.
    const bool default_protocol = !impl_->given && is_default_protocol(o);
    if (!stl.empty() && default_protocol) {
      stl_source = "the stored baselines of docs/training.md";
    } else if (!stl.empty()) {
      stl.clear();
      stl_note = "the stored single-task baselines of " + bench.name +
                 " apply to the default protocol only (data-seed 0, all training items, default "
                 "network, batch 256, lr 0.001, " + std::to_string(default_epochs(bench.name)) +
                 " epochs); pass --stl-baseline FILE";
    }
  }
  if (!stl.empty()) check_stl_baselines(bench, stl, stl_source);

  // ---------------------------------------------------------------- model, optimiser, method
  MultiTaskModel model(data.input_shape, bench.groups,
                       ModelOptions()
                           .trunk(o.resolved_trunk())
                           .representation_dim(o.resolved_representation_dim())
                           .pretrained(o.pretrained())
                           .seed(derive_seed(o.seed(), 1)));
  model.to(device);
  const std::vector<at::Tensor> trunk_params = model.trunk_parameters();
  const std::vector<at::Tensor> head_params = model.head_parameters();
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(trunk_params, std::make_unique<torch::optim::AdamOptions>(o.lr()));
  param_groups.emplace_back(head_params, std::make_unique<torch::optim::AdamOptions>(o.lr()));
  torch::optim::Adam adam(std::move(param_groups), torch::optim::AdamOptions(o.lr()));
  LrSchedule schedule{{o.lr(), o.lr()}, LrSchedule::milestones_for(epochs), 0.1};
  const bool plateau = o.resolved_lr_schedule() == "plateau";

  MethodConfig mc;
  mc.bayesagg = o.bayesagg();
  mc.bayesagg.seed(derive_seed(o.seed(), 3));
  mc.ls_epochs = o.ls_epochs();
  mc.weighting = o.weighting();
  mc.gradient = o.gradient();
  mc.seed = derive_seed(o.seed(), 4);
  std::unique_ptr<Method> method =
      make_method(o.method(), bench.groups, model.representation_dim(), mc);
  method->reserve(data.train->size());
  const bool wants_losses_after = method->needs().count(Need::losses_after_step) > 0;
  const bool posterior_eval =
      o.resolved_eval_regression() == "posterior" && dynamic_cast<BayesAggMethod*>(method.get());
  at::Generator shuffle = at::make_generator<at::CPUGeneratorImpl>(derive_seed(o.seed(), 2));

  const std::string config = options_to_json(o);
  RunHistory history;
  int64_t start_epoch = 0;
  if (o.resume()) {
    const CheckpointState st = load_checkpoint(ckpt, model, adam, *method, shuffle);
    const std::string key = first_setting_difference(st.config_json, config);
    if (!key.empty()) {
      const nlohmann::json was = nlohmann::json::parse(st.config_json);
      const nlohmann::json now = nlohmann::json::parse(config);
      TORCH_CHECK(false, "cannot resume '", dir, "': setting '", key, "' was ",
                  was.contains(key) ? was[key].dump() : "absent", " in the checkpoint and is ",
                  now.contains(key) ? now[key].dump() : "absent", " now");
    }
    TORCH_CHECK(st.schedule.milestones == schedule.milestones, "cannot resume '", dir,
                "': the checkpoint's learning-rate milestones differ");
    history = history_from_json(st.history_json);
    start_epoch = st.epoch;
    history.truncate(start_epoch);
  }
  const double wall_before = history.wall_seconds;
  if (o.resume()) restore_best_model(path("best_model.pt"), model, history.best_epoch, start_epoch);
  if (replace_previous) {
    if (log) *log << "note: replacing the previous run in " << dir << "\n";
    remove_run_files(dir);
  }
  {
    nlohmann::ordered_json cfg = nlohmann::ordered_json::parse(config);
    cfg["_threads_used"] = threads;
    cfg["_note"] = "every effective setting; `bayesagg train --config` accepts this file";
    write_file_atomic(path("config.json"), cfg.dump(2) + "\n");
  }

  if (log) {
    *log << "bayesagg train: " << data.description << "\n";
    for (const auto& note : data.notes) *log << "  note: " << note << "\n";
    *log
         << "  data ready in " << fixed(data_seconds, 1) << " s; model " << model.describe()
         << "\n  method " << method->describe()
         << (single ? " on the single task '" + o.stl_task() + "'" : std::string()) << "\n  " << epochs << " epochs, batch "
         << o.batch_size() << ", Adam lr " << o.lr()
         << (plateau ? std::string(" (ReduceLROnPlateau x0.7, patience 5, min 1e-05)")
                     : " (x0.1 at epochs " + std::to_string(schedule.milestones[0]) + ", " +
                           std::to_string(schedule.milestones[1]) + ")")
         << ", head clip "
         << o.head_clip() << ", trunk clip "
         << (o.trunk_clip() > 0 ? fixed(o.trunk_clip(), 1) +
                                      (o.trunk_clip_after_warmup() ? " after the warm-up" : "")
                                : "off")
         << ", " << threads << " thread(s), " << device << ", seed " << o.seed()
         << "\n  run folder " << dir << "\n";
    if (o.resume()) *log << "  resuming after epoch " << start_epoch << "\n";
    log->flush();
  }

  // ---------------------------------------------------------------- records
  const auto make_summary = [&]() {
    TrainSummary s;
    s.benchmark = bench.name;
    s.method = o.method();
    s.run_dir = dir;
    s.seed = o.seed();
    s.epochs = epochs;
    s.epochs_completed = history.epochs.empty() ? 0 : history.epochs.back().epoch;
    s.best_epoch = history.best_epoch;
    s.n_train = data.train->size();
    s.n_val = data.val->size();
    s.n_test = data.test->size();
    s.tasks = tasks;
    s.selection = rule;
    if (history.best_epoch > 0) {
      s.val = history.best().val;
      s.test = history.best().test;
    }
    if (single) {
      s.stl_task = o.stl_task();
      MetricMap v, t;
      std::vector<std::string> keys = task_metric_keys(bench, o.stl_task());
      for (const char* metric : {"/ece", "/brier"}) keys.push_back(o.stl_task() + metric);
      for (const auto& key : keys) {
        if (s.val.count(key)) v[key] = s.val.at(key);
        if (s.test.count(key)) t[key] = s.test.at(key);
      }
      s.val = v;
      s.test = t;
    }
    s.stl_baseline = stl;
    s.stl_source = stl_source;
    s.stl_note = stl_note;
    if (!stl.empty() && !s.test.empty()) s.delta_m = delta_m(s.test, stl);
    s.wall_seconds = wall_before + seconds_since(session_start);
    for (const auto& r : history.epochs) {
      s.epoch_train_seconds.push_back(r.train_seconds);
      s.epoch_eval_seconds.push_back(r.eval_seconds);
    }
    return s;
  };
  const std::string title = bench.name + " / " + o.method() + " / seed " + std::to_string(o.seed());
  const auto write_records = [&](const TrainSummary& s) {
    write_file_atomic(path("metrics.csv"), metrics_csv(history, tasks));
    write_file_atomic(path("steps.csv"), steps_csv(history, tasks));
    write_file_atomic(path("summary.json"), summary_to_json(s));
    write_file_atomic(path("curves.svg"), curves_svg(history, tasks, title));
    std::vector<TaskReliability> diagrams;
    for (const auto& d : history.best_reliability) {
      if (!single || d.task == o.stl_task()) diagrams.push_back(d);
    }
    if (!diagrams.empty()) {
      write_file_atomic(path("calibration.svg"),
                        calibration_svg(diagrams, title + " / test split, best epoch " +
                                                      std::to_string(history.best_epoch)));
    }
  };

  // ---------------------------------------------------------------- epochs
  ProgressBar progress(parse_progress_mode(o.progress(), stderr_is_terminal()), std::cerr);
  const int64_t n_train = data.train->size();
  const bool batchnorm = model.trunk_name() == "cifar-cnn" || model.trunk_name() == "resnet18" ||
                         model.trunk_name() == "resnet34";
  const int64_t stop_at = o.stop_after_epoch() > 0 ? o.stop_after_epoch() : epochs;
  for (int64_t e = start_epoch; e < std::min(epochs, stop_at); ++e) {
    const auto epoch_start = Clock::now();
    std::vector<double> group_lr;
    if (plateau) {
      // ReduceLROnPlateau on the validation selection score (qm9: validation delta_m), replayed
      // from the history (so a resumed run gets the same rates).
      std::vector<double> monitored;
      for (const auto& r : history.epochs) monitored.push_back(-r.score.primary);
      group_lr.assign(adam.param_groups().size(), plateau_lr(o.lr(), monitored, 0.7, 5, 1e-5));
    } else {
      for (size_t g = 0; g < adam.param_groups().size(); ++g) group_lr.push_back(schedule.lr(g, e));
    }
    const double lr = group_lr[0];
    for (size_t g = 0; g < adam.param_groups().size(); ++g) {
      adam.param_groups()[g].options().set_lr(group_lr[g]);
    }
    model.train(true);
    method->on_epoch_start(e);
    const EpochBatches batches(n_train, o.batch_size(), shuffle);
    int64_t nb = batches.num_batches();
    // BatchNorm cannot normalise a single item in training mode: a last batch of one item is
    // left out of the epoch (as a data loader's drop_last would).
    if (batchnorm && nb > 1 && batches[nb - 1].size(0) == 1) --nb;
    std::vector<at::Tensor> batch_indices;
    std::vector<uint64_t> seeds;
    int64_t n_seen = 0;
    for (int64_t s = 0; s < nb; ++s) {
      n_seen += batches[s].size(0);
      batch_indices.push_back(batches[s]);
      seeds.push_back(augment_seed(o.seed(), e, s));
    }
    Prefetcher loader(data.train, std::move(batch_indices), true, std::move(seeds), o.prefetch(),
                      device);
    progress.start("epoch " + std::to_string(e + 1) + "/" + std::to_string(epochs), nb);
    std::vector<double> loss_sum(static_cast<size_t>(n_tasks), 0.0);
    double running = 0.0;
    for (int64_t s = 0; s < nb; ++s) {
      const ModelBatch batch = loader.next();
      const int64_t bsz = batch.size();
      adam.zero_grad();
      const at::Tensor h = model_representation(model, batch);
      const std::vector<at::Tensor> outs = model.head_outputs(h);
      const at::Tensor raw_losses = all_task_losses(outs, batch.labels);
      Step step;
      step.losses = single ? raw_losses * single_mask : raw_losses;
      step.representation = h;
      step.heads = model.heads();
      step.labels = batch.labels;
      step.shared_parameters = trunk_params;
      step.epoch = e;
      step.step = s;

      StepRecord rec;
      rec.epoch = e + 1;
      rec.step = s + 1;
      rec.lr = lr;
      const auto fail = [&](const std::string& what) {
        history.steps.push_back(rec);
        try {
          write_file_atomic(path("steps.csv"), steps_csv(history, tasks));
        } catch (const c10::Error&) {
        }
        progress.finish();
        const std::string last =
            e == 0 ? std::string("No checkpoint was written (the failure is in the first epoch)")
                : "The last good checkpoint (epoch " + std::to_string(e) + ") is intact in " + ckpt +
                      "; `bayesagg train --resume " + dir + "` continues from it";
        TORCH_CHECK(false, what, " at epoch ", e + 1, ", step ", s + 1, " of ", nb,
                    "; the run stopped before the optimiser step. ", last,
                    ". steps.csv has the per-step losses and gradient norms up to here.");
      };
      const auto loss_text = [&](const std::vector<double>& l) {
        std::ostringstream os;
        for (int64_t t = 0; t < n_tasks; ++t) os << (t ? ", " : "") << tasks[t] << " " << l[t];
        return os.str();
      };

      const auto check_losses = [&](const std::vector<double>& l) {
        std::string bad;
        int64_t count = 0;
        for (int64_t t = 0; t < n_tasks; ++t) {
          if (std::isfinite(l[t]) || (single && t != single_index)) continue;
          bad += (count++ ? ", '" : "'") + tasks[t] + "'";
        }
        if (count == 0) return;
        fail(std::string("non-finite loss of task") + (count > 1 ? "s " : " ") + bad + " (" +
             loss_text(l) + ")");
      };

      try {
        method->backward(step);
      } catch (const c10::Error& err) {
        // A method may fail on non-finite inputs (e.g. a Cholesky of NaN): report the cause.
        const at::Tensor l = raw_losses.detach().to(at::kCPU, at::kDouble).contiguous();
        rec.losses.assign(l.data_ptr<double>(), l.data_ptr<double>() + l.numel());
        check_losses(rec.losses);
        TORCH_CHECK(false, o.method(), " failed at epoch ", e + 1, ", step ", s + 1, ": ",
                    err.msg());
      }

      // Gradient norms (before clipping), clipping, and one host synchronisation per step.
      const at::Tensor trunk_norm = grad_norm(trunk_params);
      std::vector<at::Tensor> head_norm_parts;
      for (size_t g = 0; g < bench.groups.size(); ++g) {
        head_norm_parts.push_back(grad_norm({head_params[2 * g], head_params[2 * g + 1]}));
      }
      const at::Tensor head_norms = at::stack(head_norm_parts);
      const at::Tensor head_norm = head_norms.norm();
      if (o.head_clip() > 0) clip_grads(head_params, head_norm, o.head_clip());
      if (o.trunk_clip() > 0 && (!o.trunk_clip_after_warmup() || e >= o.ls_epochs())) {
        clip_grads(trunk_params, trunk_norm, o.trunk_clip());
      }
      const at::Tensor report =
          at::cat({raw_losses.detach().to(at::kDouble).flatten(), trunk_norm.reshape({1}),
                   head_norm.reshape({1}), head_norms})
              .to(at::kCPU)
              .contiguous();
      const double* r = report.data_ptr<double>();
      rec.losses.assign(r, r + n_tasks);
      rec.trunk_grad_norm = r[n_tasks];
      rec.head_grad_norm = r[n_tasks + 1];
      rec.diagnostics = method->diagnostics();
      check_losses(rec.losses);
      if (!std::isfinite(rec.trunk_grad_norm)) {
        fail("non-finite gradient of the trunk (norm " + std::to_string(rec.trunk_grad_norm) +
             "; it aggregates all tasks: " + loss_text(rec.losses) + ")");
      }
      for (size_t g = 0; g < bench.groups.size(); ++g) {
        const double v = r[n_tasks + 2 + static_cast<int64_t>(g)];
        if (!std::isfinite(v)) {
          std::string names;
          int64_t first = 0;
          for (size_t i = 0; i < g; ++i) first += bench.groups[i].num_tasks();
          for (int64_t k = 0; k < bench.groups[g].num_tasks(); ++k) {
            names += (k ? ", " : "") + tasks[first + k];
          }
          fail("non-finite gradient of the head of task(s) '" + names + "' (norm " +
               std::to_string(v) + ")");
        }
      }
      adam.step();
      if (wants_losses_after) {
        // The losses on the same batch after the step (FAMO's update), without autograd.
        at::NoGradGuard no_grad;
        const at::Tensor l = all_task_losses(
            model.head_outputs(model_representation(model, batch)), batch.labels);
        method->after_step(single ? l * single_mask : l);
      }
      double total = 0.0;
      for (int64_t t = 0; t < n_tasks; ++t) {
        loss_sum[t] += rec.losses[t] * static_cast<double>(bsz);
        total += rec.losses[t];
      }
      running = s == 0 ? total : 0.9 * running + 0.1 * total;
      history.steps.push_back(std::move(rec));
      progress.update(s + 1, "loss " + fixed(running, 4));
    }
    // Regression tasks predicted by this epoch's full-data posterior mean (--eval-regression
    // posterior), taken before the epoch's end lets the method drop it.
    std::vector<at::Tensor> posterior_means(bench.groups.size());
    if (posterior_eval) {
      const auto& full =
          static_cast<const BayesAggMethod&>(*method).aggregator().current_full_data_posteriors();
      for (size_t g = 0; g < full.size() && g < bench.groups.size(); ++g) {
        if (bench.groups[g].type == GroupType::regression && full[g].defined()) {
          posterior_means[g] = full[g].mean.to(device, at::kFloat);
        }
      }
    }
    method->on_epoch_end(e);
    progress.finish();
    const double train_seconds = seconds_since(epoch_start);

    // Evaluation and model selection.
    const auto eval_start = Clock::now();
    EpochRecord er;
    er.epoch = e + 1;
    er.lr = lr;
    er.train_seconds = train_seconds;
    for (double v : loss_sum) er.train_loss.push_back(v / static_cast<double>(n_seen));
    er.val = compute_metrics(
        bench, predict(model, data.val, o.eval_batch_size(), o.prefetch(), device, posterior_means),
        data.val->labels());
    const std::vector<at::Tensor> test_outputs =
        predict(model, data.test, o.eval_batch_size(), o.prefetch(), device, posterior_means);
    er.test = compute_metrics(bench, test_outputs, data.test->labels());
    er.score = single ? single_task_score(bench, er.val, o.stl_task())
                      : selection_score(bench, er.val);
    er.eval_seconds = seconds_since(eval_start);
    bool best = history.best_epoch == 0;
    if (!best) best = er.score.better_than(history.best().score);
    history.epochs.push_back(er);
    if (best) {
      history.best_epoch = er.epoch;
      history.best_reliability = reliability_diagrams(bench, test_outputs, data.test->labels());
    }
    history.wall_seconds = wall_before + seconds_since(session_start);

    // Checkpoint first (atomically), then the records derived from it.
    CheckpointState st;
    st.epoch = e + 1;
    st.schedule = schedule;
    st.config_json = config;
    st.history_json = history_to_json(history);
    save_checkpoint(ckpt, model, adam, *method, shuffle, st);
    if (best) save_model(path("best_model.pt"), model, er.epoch);
    write_records(make_summary());

    if (log) {
      std::ostringstream line;
      line << "epoch " << e + 1 << "/" << epochs << "  " << fixed(train_seconds, 1) << "s (+"
           << fixed(er.eval_seconds, 1) << "s eval)  lr " << lr << "  loss";
      for (int64_t t = 0; t < n_tasks && t < 4; ++t) line << " " << fixed(er.train_loss[t], 4);
      if (n_tasks > 4) line << " ... (" << n_tasks << " tasks)";
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
        const bool lower = rule.find("(lower)") != std::string::npos;
        line << "  " << rule << " " << fixed(lower ? -er.score.primary : er.score.primary, 4);
      }
      if (best) line << "  *best";
      *log << line.str() << "\n";
      log->flush();
    }
  }

  TrainSummary summary = make_summary();
  write_records(summary);
  if (log) {
    if (!summary.completed()) {
      *log << "stopped after epoch " << summary.epochs_completed << " of " << epochs
           << "; continue with `bayesagg train --resume " << dir << "`\n";
    }
    *log << "\n" << format_summary_table(summary);
    log->flush();
  }
  return summary;
}

}  // namespace bayesagg
