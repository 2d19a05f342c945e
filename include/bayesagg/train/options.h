#pragma once
/// Settings of a training run, and the registry that maps them to command-line options and
/// config-file keys (one name per setting: the long option without its dashes, e.g. `batch-size`).

#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/methods/options.h"

#include <torch/arg.h>

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace bayesagg {

/// Every setting of a training run. Defaults are the spec's "Default training settings" for the
/// embedded benchmarks.
struct TrainOptions {
  /// An embedded benchmark (multi-fashion, fashion-binary, multi-fashion-mixed,
  /// synthetic-regression) or a paper benchmark (cifar-mtl, utkface, chestx14, qm9: read from
  /// `data_dir`).
  TORCH_ARG(std::string, benchmark) = "multi-fashion";
  /// `bayesagg`, `bayesagg-reference`, `ls` or a baseline (see `method_names()`). The method's
  /// preset (`method_preset`) gives the defaults of the settings that were not set explicitly.
  TORCH_ARG(std::string, method) = "bayesagg";
  /// Single-task learning: when set (a task name), only this task's loss is trained (method
  /// `ls`), and the epoch is selected on this task's first validation metric. Used to measure
  /// the single-task baselines of Δm (`bayesagg train --method stl` runs every task).
  TORCH_ARG(std::string, stl_task) = "";
  /// Training epochs; 0 = the benchmark's default (`default_epochs`).
  TORCH_ARG(int64_t, epochs) = 0;
  TORCH_ARG(int64_t, batch_size) = 256;
  /// Seed of the model initialisation, the shuffling and the method's Monte-Carlo draws.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Seed of the data set (multi-fashion partners and factors, synthetic-regression); fixed by
  /// default so that runs with different `seed`s see the same benchmark.
  TORCH_ARG(uint64_t, data_seed) = 0;
  /// LibTorch intra-op threads; 0 = all cores.
  TORCH_ARG(int64_t, threads) = 0;
  /// `cpu` or `cuda[:N]`.
  TORCH_ARG(std::string, device) = "cpu";
  /// 0 = every training item; otherwise the first N.
  TORCH_ARG(int64_t, train_subset) = 0;
  /// Folder of Fashion-MNIST's IDX files, or of a paper benchmark's files (required for those).
  TORCH_ARG(std::string, data_dir) = kDefaultFashionMnistDir;
  /// ChestX-ray14: folder of train.csv, validation.csv and test.csv; empty = the project's
  /// data/chestx14.
  TORCH_ARG(std::string, split_dir) = "";
  /// QM9: validation molecules.
  TORCH_ARG(int64_t, val_size) = 10000;
  /// QM9: test molecules.
  TORCH_ARG(int64_t, test_size) = 10000;
  /// utkface, chestx14: stored image side; 0 = the spec's (140, 256). Smaller values make quick
  /// experiments (and the tests) cheap; the paper's numbers need the default.
  TORCH_ARG(int64_t, image_size) = 0;
  /// utkface, chestx14: side of the crops fed to the model; 0 = the spec's (128, 224).
  TORCH_ARG(int64_t, crop_size) = 0;
  /// resnet18 / resnet34 trunks: pretrained encoder weights (`ModelOptions::pretrained`).
  TORCH_ARG(std::string, pretrained) = "";
  /// Batches prepared ahead on a background thread (0 = none). Does not change any number.
  TORCH_ARG(int64_t, prefetch) = 2;
  /// Run folder; empty = `runs/<benchmark>-<method>-seed<S>`.
  TORCH_ARG(std::string, out) = "";
  /// JSON file of single-task baselines `{"task/metric": value}` for Δm; empty = the stored
  /// ones, if any.
  TORCH_ARG(std::string, stl_baseline) = "";
  /// Adam learning rate of both parameter groups.
  TORCH_ARG(double, lr) = 1e-3;
  /// `auto` (qm9: `plateau`; otherwise `multistep`), `multistep` (×0.1 at 60% and 80% of the
  /// epochs) or `plateau` (ReduceLROnPlateau: ×0.7 after 5 epochs without a better validation
  /// selection score, minimum 1e-5; the spec's QM9 schedule).
  TORCH_ARG(std::string, lr_schedule) = "auto";
  /// Gradient-norm clipping of the heads; 0 = off.
  TORCH_ARG(double, head_clip) = 10.0;
  /// Gradient-norm clipping of the trunk; 0 = off.
  TORCH_ARG(double, trunk_clip) = 0.0;
  /// Clip the trunk only after the linear-scalarisation warm-up (epochs >= `ls_epochs`), as the
  /// authors do on UTKFace.
  TORCH_ARG(bool, trunk_clip_after_warmup) = false;
  /// How regression tasks are predicted in evaluation: `head` (the trained linear head),
  /// `posterior` (BayesAgg-MTL only: the representation times the current full-data posterior
  /// mean of the regression group, no bias, as the authors' UTKFace evaluation; the head until
  /// the first full-data posterior exists), or `auto` (`posterior` for utkface with bayesagg,
  /// else `head`).
  TORCH_ARG(std::string, eval_regression) = "auto";
  /// Linear-scalarisation warm-up epochs of BayesAgg-MTL.
  TORCH_ARG(int64_t, ls_epochs) = 1;
  /// BayesAgg-MTL's hyper-parameters (its `seed` is derived from `seed`).
  TORCH_ARG(BayesAggOptions, bayesagg) = {};
  /// Options of the loss-weighting baselines (dwa, uw, famo, ...), methods/options.h.
  TORCH_ARG(WeightingOptions, weighting) = {};
  /// Options of the gradient baselines (cagrad, nashmtl, pcgrad, ...), methods/options.h.
  TORCH_ARG(GradientOptions, gradient) = {};
  /// `auto` (the benchmark's network: cnn or mlp for the embedded ones; cifar-cnn, resnet18,
  /// resnet34, mpnn for cifar-mtl, utkface, chestx14, qm9), or one of `trunk_names()`.
  TORCH_ARG(std::string, trunk) = "auto";
  /// Width of the shared representation; 0 = the benchmark's (64; cifar-mtl 160, utkface and
  /// chestx14 256).
  TORCH_ARG(int64_t, representation_dim) = 0;
  /// Batch size of evaluation.
  TORCH_ARG(int64_t, eval_batch_size) = 512;
  /// `auto` (a bar on a terminal, periodic lines otherwise), `bar`, `lines` or `none`.
  TORCH_ARG(std::string, progress) = "auto";
  /// Start over in a folder that holds an unfinished run.
  TORCH_ARG(bool, overwrite) = false;
  /// Data-parallel ranks the CLI starts on this machine (`bayesagg train --nproc N`); 1 = one
  /// process. A process started with the torchrun environment (RANK, WORLD_SIZE, ...) is one
  /// rank whatever this says (docs/distributed.md).
  TORCH_ARG(int64_t, nproc) = 1;
  /// Data-parallel runs: seconds every collective (and the start-up) may take before the run
  /// stops naming the rank that stopped answering.
  TORCH_ARG(double, dist_timeout) = 300.0;
  /// Continue the run in `out` from its checkpoint (set by `--resume DIR`).
  TORCH_ARG(bool, resume) = false;
  /// Stop (as if interrupted) after this many completed epochs; 0 = never. For tests; not a
  /// setting of the run (not recorded in config.json).
  TORCH_ARG(int64_t, stop_after_epoch) = 0;

 public:
  /// The registry keys set through `apply_setting` (the command line, a config file, a method
  /// spec's overrides): the method's preset does not change them.
  std::set<std::string> explicit_settings;

  /// These options with the method's preset applied to every preset setting that was neither set
  /// explicitly nor changed from its default in code (idempotent). The trainer runs, and
  /// config.json records, these.
  TrainOptions with_method_preset() const;
  /// Throws naming the first invalid value.
  void validate() const;
  /// `epochs`, or the benchmark's default when 0.
  int64_t resolved_epochs() const;
  /// `out`, or `runs/<benchmark>-<method>-seed<S>` when empty.
  std::string resolved_out() const;
  /// `trunk`, or the benchmark's network when `auto` (embedded benchmarks: `auto`, which the
  /// model resolves from the input shape).
  std::string resolved_trunk() const;
  /// `eval_regression`, resolved: `head` or `posterior`.
  std::string resolved_eval_regression() const;
  /// `lr_schedule`, or the benchmark's when `auto`.
  std::string resolved_lr_schedule() const;
  /// `representation_dim`, or the benchmark's width when 0.
  int64_t resolved_representation_dim() const;
};

/// Whether a run follows the default protocol under which the stored single-task baselines
/// were measured (data-seed 0, all training items, default network, batch 256, lr 1e-3, the
/// benchmark's default epochs); only then do the stored baselines give its Δm.
bool is_default_protocol(const TrainOptions& options);

/// The settings a method's name stands for beyond its algorithm, as (registry key, value) pairs:
/// `bayesagg` is BayesAgg-MTL with this project's variant (chosen on validation data,
/// docs/bayesagg.md), `bayesagg-reference` the authors' method (the settings' defaults); other
/// methods have none. `benchmark` may refine them.
std::vector<std::pair<std::string, std::string>> method_preset(const std::string& method,
                                                               const std::string& benchmark);

/// A method with setting overrides, as `bayesagg compare --methods` takes it:
/// `name` or `name[key=value,key=value]` (keys of the registry, e.g.
/// `bayesagg[posterior=head,s-reg=0.1]`).
struct MethodSpec {
  std::string name;
  std::vector<std::pair<std::string, std::string>> overrides;
};
/// Parses a method spec; throws on malformed text (unbalanced brackets, an item without `=`).
MethodSpec parse_method_spec(const std::string& text);
/// A folder name for a method spec: the name, then `-key_value` per override (characters other
/// than letters, digits, `.`, `_` and `-` become `_`).
std::string method_spec_folder(const std::string& text);

/// The first setting (a registry key) whose value differs between two config.json texts,
/// ignoring the settings that do not change a run's numbers (threads, progress, overwrite, out,
/// data-dir, device, prefetch, nproc, dist-timeout) and `_`-prefixed entries; empty when they agree. A setting absent from the
/// first (older) config counts as equal when the second has its default there (a setting added
/// since keeps old runs comparable); otherwise an absent setting counts as different.
std::string first_setting_difference(const std::string& config_a, const std::string& config_b);

/// The benchmark's default number of epochs: 10 (Fashion family), 30 (synthetic-regression),
/// 50 (cifar-mtl), 100 (utkface, chestx14), 300 (qm9) (spec: benchmarks.md, bayesagg-mtl.md 6).
int64_t default_epochs(const std::string& benchmark);

/// One setting of the registry.
struct SettingInfo {
  /// Long option name without dashes, also the config-file key, e.g. `batch-size`.
  std::string key;
  /// Value placeholder for help texts, e.g. `N`, `FILE`.
  std::string value_name;
  std::string help;
};

/// Every setting a run takes from the command line or a config file, in the order they are
/// applied (`gamma` comes before `gamma-reg` and `gamma-cls`, which override it).
const std::vector<SettingInfo>& train_settings();

/// Sets one setting from its text value and marks it explicit. Throws naming the option and the
/// bad value. `method` takes a method spec (`name[key=value,...]`): the name, then the overrides.
void apply_setting(TrainOptions& options, const std::string& key, const std::string& value);

/// The value of a setting as text (as `apply_setting` reads it back).
std::string setting_value(const TrainOptions& options, const std::string& key);

/// Applies a JSON config (an object whose keys are setting keys; `_`-prefixed keys are comments
/// and ignored; `batch_size` is accepted for `batch-size`) in registry order. `what` names the
/// source in errors.
void apply_config_json(TrainOptions& options, const std::string& json_text,
                       const std::string& what);

/// Every effective setting as a JSON object (epochs and out resolved), with registry keys, in a
/// form `apply_config_json` accepts.
std::string options_to_json(const TrainOptions& options);

}  // namespace bayesagg
