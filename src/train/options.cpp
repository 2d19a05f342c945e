#include "bayesagg/train/options.h"

#include "bayesagg/bayes/moments.h"
#include "bayesagg/core/json_checks.h"
#include "bayesagg/core/text.h"
#include "bayesagg/data/paper/paper.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>

namespace bayesagg {
namespace {

std::string raw_setting_value(const TrainOptions& o, const std::string& key);

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

/// Bounds the sample counts with the flags' names (BayesAggOptions::validate bounds them too,
/// under the library's names): a count beyond them would run for days, not fail.
void check_sample_counts(const BayesAggOptions& b) {
  TORCH_CHECK(b.mc_samples() >= 2 && b.mc_samples() <= kMaxMcSamples, "--mc-samples ",
              b.mc_samples(), ": expected 2 to ", kMaxMcSamples);
  TORCH_CHECK(b.rb_samples() >= 2 && b.rb_samples() <= kMaxRbSamples, "--rb-samples ",
              b.rb_samples(), ": expected 2 to ", kMaxRbSamples);
  TORCH_CHECK(b.quadrature_points() >= 2 && b.quadrature_points() <= kMaxQuadraturePoints,
              "--quadrature-points ", b.quadrature_points(), ": expected 2 to ",
              kMaxQuadraturePoints);
}

int64_t parse_int(const std::string& key, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  TORCH_CHECK(!text.empty() && end && *end == '\0' && errno == 0, "--", key,
              ": expected an integer, got '", excerpt(text), "'");
  return static_cast<int64_t>(v);
}

uint64_t parse_uint(const std::string& key, const std::string& text) {
  TORCH_CHECK(!text.empty() && text[0] != '-', "--", key,
              ": expected a non-negative integer, got '", excerpt(text), "'");
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  TORCH_CHECK(end && *end == '\0' && errno == 0, "--", key,
              ": expected a non-negative integer, got '", excerpt(text), "'");
  return static_cast<uint64_t>(v);
}

double parse_double(const std::string& key, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  TORCH_CHECK(!text.empty() && end && *end == '\0' && errno == 0 && std::isfinite(v), "--", key,
              ": expected a finite number, got '", excerpt(text), "'");
  return v;
}

bool parse_bool(const std::string& key, const std::string& text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  TORCH_CHECK(false, "--", key, ": expected true or false, got '", excerpt(text), "'");
}

std::string num(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

/// The baselines `make_method` knows besides ls and bayesagg, as `, or a baseline: a, b, ...`.
std::string other_methods() {
  std::vector<std::string> rest;
  for (const auto& m : method_names()) {
    if (m != "ls" && !is_bayesagg_method(m)) rest.push_back(m);
  }
  return rest.empty() ? "" : ", or a baseline method: " + join(rest);
}

}  // namespace

int64_t default_epochs(const std::string& benchmark) {
  if (benchmark == "synthetic-regression") return 30;
  if (benchmark == "cifar-mtl") return 50;
  if (benchmark == "utkface" || benchmark == "chestx14") return 100;
  if (benchmark == "qm9") return 300;
  return 10;
}

std::string TrainOptions::resolved_trunk() const {
  if (trunk() != "auto") return trunk();
  if (benchmark() == "cifar-mtl") return "cifar-cnn";
  if (benchmark() == "utkface") return "resnet18";
  if (benchmark() == "chestx14") return "resnet34";
  if (benchmark() == "qm9") return "mpnn";
  return "auto";
}

std::string TrainOptions::resolved_lr_schedule() const {
  if (lr_schedule() != "auto") return lr_schedule();
  return benchmark() == "qm9" ? "plateau" : "multistep";
}

int64_t TrainOptions::resolved_representation_dim() const {
  if (representation_dim() > 0) return representation_dim();
  if (benchmark() == "cifar-mtl") return 160;
  if (benchmark() == "utkface" || benchmark() == "chestx14") return 256;
  return 64;
}

int64_t TrainOptions::resolved_epochs() const {
  return epochs() > 0 ? epochs() : default_epochs(benchmark());
}

std::string TrainOptions::resolved_out() const {
  if (!out().empty()) return out();
  if (!stl_task().empty()) {
    return "runs/" + benchmark() + "-stl-" + stl_task() + "-seed" + std::to_string(seed());
  }
  return "runs/" + benchmark() + "-" + method() + "-seed" + std::to_string(seed());
}

void TrainOptions::validate() const {
  TORCH_CHECK(is_embedded_benchmark(benchmark()) || is_paper_benchmark(benchmark()),
              "--benchmark: unknown benchmark '", excerpt(benchmark()),
              "' (known: ", join(embedded_benchmark_names()), ", ", join(paper_benchmark_names()),
              ")");
  TORCH_CHECK(!is_paper_benchmark(benchmark()) || data_dir() != kDefaultFashionMnistDir,
              "--benchmark ", benchmark(), " reads the data set you downloaded: pass --data-dir "
              "DIR (docs/benchmarks.md says what the folder must hold)");
  TORCH_CHECK(val_size() >= 1, "--val-size must be >= 1, got ", val_size());
  TORCH_CHECK(test_size() >= 1, "--test-size must be >= 1, got ", test_size());
  TORCH_CHECK(image_size() >= 0 && crop_size() >= 0 &&
                  (image_size() == 0 || crop_size() == 0 || crop_size() <= image_size()),
              "--image-size and --crop-size must be >= 0 (0 = the spec's) with crop <= image, "
              "got ", image_size(), " and ", crop_size());
  TORCH_CHECK(lr_schedule() == "auto" || lr_schedule() == "multistep" || lr_schedule() == "plateau",
              "--lr-schedule must be auto, multistep or plateau, got '", excerpt(lr_schedule()),
              "'");
  TORCH_CHECK(prefetch() >= 0, "--prefetch must be >= 0 (0 = off), got ", prefetch());
  TORCH_CHECK(nproc() >= 1 && nproc() <= 1024, "--nproc must be 1 to 1024, got ", nproc());
  TORCH_CHECK(dist_timeout() > 0 && dist_timeout() <= 86400,
              "--dist-timeout must be more than 0 and at most 86400 seconds, got ",
              dist_timeout());
  TORCH_CHECK(train_subset() == 0 || !is_paper_benchmark(benchmark()),
              "--train-subset is for the embedded benchmarks; give a paper benchmark a smaller "
              "data folder instead");
  const auto methods = method_names();
  TORCH_CHECK(std::find(methods.begin(), methods.end(), method()) != methods.end(),
              "--method: unknown method '", excerpt(method()), "' (known: ", join(methods), ")");
  TORCH_CHECK(stl_task().empty() || method() == "ls", "--stl-task ", stl_task(),
              " trains one task alone, which needs --method ls, got '", excerpt(method()), "'");
  TORCH_CHECK(epochs() >= 0, "--epochs must be >= 1 (or 0 for the benchmark's default), got ",
              epochs());
  TORCH_CHECK(batch_size() >= 1, "--batch-size must be >= 1, got ", batch_size());
  TORCH_CHECK(threads() >= 0, "--threads must be >= 0 (0 = all cores), got ", threads());
  TORCH_CHECK(train_subset() >= 0, "--train-subset must be >= 0 (0 = all), got ",
              train_subset());
  TORCH_CHECK(lr() > 0, "--lr must be > 0, got ", lr());
  TORCH_CHECK(head_clip() >= 0, "--head-clip must be >= 0 (0 = off), got ", head_clip());
  TORCH_CHECK(trunk_clip() >= 0, "--trunk-clip must be >= 0 (0 = off), got ", trunk_clip());
  TORCH_CHECK(ls_epochs() >= 0, "--ls-epochs must be >= 0, got ", ls_epochs());
  TORCH_CHECK(representation_dim() >= 0,
              "--representation-dim must be >= 1 (or 0 for the benchmark's), got ",
              representation_dim());
  const auto trunks = trunk_names();
  TORCH_CHECK(trunk() == "auto" || std::find(trunks.begin(), trunks.end(), trunk()) != trunks.end(),
              "--trunk must be auto or one of ", join(trunks), ", got '", excerpt(trunk()), "'");
  TORCH_CHECK(eval_batch_size() >= 1, "eval batch size must be >= 1, got ", eval_batch_size());
  TORCH_CHECK(
      progress() == "auto" || progress() == "bar" || progress() == "lines" || progress() == "none",
      "--progress must be auto, bar, lines or none, got '", excerpt(progress()), "'");
  TORCH_CHECK(stop_after_epoch() >= 0, "stop_after_epoch must be >= 0, got ",
              stop_after_epoch());
  const std::string& d = device();
  TORCH_CHECK(d == "cpu" || d.rfind("cuda", 0) == 0, "--device must be cpu or cuda[:N], got '",
              d, "'");
  check_sample_counts(bayesagg());
  bayesagg().validate();
  TORCH_CHECK(resolved_eval_regression() == "head" || is_bayesagg_method(method()),
              "--eval-regression posterior needs --method bayesagg (the full-data posterior), got '",
              method(), "'");
  const auto& g = gradient();
  TORCH_CHECK(g.graddrop().leak() >= 0 && g.graddrop().leak() <= 1,
              "--graddrop-leak must be in [0, 1], got ", g.graddrop().leak());
  TORCH_CHECK(g.gradvac().beta() > 0 && g.gradvac().beta() <= 1,
              "--gradvac-beta must be in (0, 1], got ", g.gradvac().beta());
  TORCH_CHECK(g.cagrad().c() >= 0, "--cagrad-c must be >= 0, got ", g.cagrad().c());
  TORCH_CHECK(g.nashmtl().update_weights_every() >= 1, "--nashmtl-update-every must be >= 1, got ",
              g.nashmtl().update_weights_every());
  TORCH_CHECK(g.nashmtl().max_norm() >= 0, "--nashmtl-max-norm must be >= 0 (0 = off), got ",
              g.nashmtl().max_norm());
  TORCH_CHECK(g.dbmtl().beta() >= 0 && g.dbmtl().beta() < 1, "--dbmtl-beta must be in [0, 1), got ",
              g.dbmtl().beta());
  const auto& w = weighting();
  TORCH_CHECK(w.dwa().temperature() > 0, "--dwa-temperature must be > 0, got ",
              w.dwa().temperature());
  TORCH_CHECK(w.uw().lr() > 0, "--uw-lr must be > 0, got ", w.uw().lr());
  TORCH_CHECK(w.famo().lr() > 0, "--famo-lr must be > 0, got ", w.famo().lr());
  TORCH_CHECK(w.famo().weight_decay() >= 0, "--famo-weight-decay must be >= 0, got ",
              w.famo().weight_decay());
}

std::string TrainOptions::resolved_eval_regression() const {
  if (eval_regression() != "auto") return eval_regression();
  return benchmark() == "utkface" && is_bayesagg_method(method()) ? "posterior" : "head";
}

std::vector<std::pair<std::string, std::string>> method_preset(const std::string& method,
                                                               const std::string& benchmark) {
  if (method == "bayesagg-reference") {
    return {{"posterior", "newton"}, {"refresh", "epoch"}, {"noise", "fixed"},
            {"weighting", "precision"}, {"scale", "average"}};
  }
  if (method == "bayesagg") {
    // Chosen on validation data (docs/results/ablation-*.md, docs/bayesagg.md).
    return {{"posterior", "head"}, {"refresh", "epoch"}, {"noise", "balanced"},
            {"weighting", "task"}, {"scale", "sum"}};
  }
  return {};
}

TrainOptions TrainOptions::with_method_preset() const {
  TrainOptions out = *this;
  const TrainOptions defaults;
  for (const auto& [key, value] : method_preset(method(), benchmark())) {
    if (explicit_settings.count(key)) continue;
    // A value changed in code (not through apply_setting) counts as explicit too.
    if (raw_setting_value(*this, key) != raw_setting_value(defaults, key)) continue;
    apply_setting(out, key, value);
    out.explicit_settings.erase(key);
  }
  return out;
}

MethodSpec parse_method_spec(const std::string& text) {
  MethodSpec spec;
  const auto open = text.find('[');
  if (open == std::string::npos) {
    TORCH_CHECK(text.find(']') == std::string::npos, "method spec '", excerpt(text),
                "': ']' without '['");
    spec.name = text;
    return spec;
  }
  TORCH_CHECK(open > 0 && text.back() == ']' && text.find('[', open + 1) == std::string::npos &&
                  text.find(']') == text.size() - 1,
              "method spec '", excerpt(text), "': expected name[key=value,...]");
  spec.name = text.substr(0, open);
  std::stringstream items(text.substr(open + 1, text.size() - open - 2));
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto eq = item.find('=');
    TORCH_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < item.size(), "method spec '",
                excerpt(text), "': '", excerpt(item), "' is not key=value");
    spec.overrides.emplace_back(item.substr(0, eq), item.substr(eq + 1));
  }
  TORCH_CHECK(!spec.overrides.empty(), "method spec '", excerpt(text),
              "': no overrides inside [ ]");
  return spec;
}

std::string method_spec_folder(const std::string& text) {
  const MethodSpec spec = parse_method_spec(text);
  std::string out = spec.name;
  for (const auto& [k, v] : spec.overrides) out += "-" + k + "_" + v;
  for (char& c : out) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '_';
  }
  return out;
}

bool is_default_protocol(const TrainOptions& o) {
  return o.data_seed() == 0 && o.train_subset() == 0 && o.trunk() == "auto" &&
         o.resolved_representation_dim() == 64 && o.batch_size() == 256 && o.lr() == 1e-3 &&
         o.resolved_epochs() == default_epochs(o.benchmark());
}

namespace {

/// The settings that do not change a run's numbers (they may differ when resuming).
const char* const kRunFree[] = {"threads", "progress", "overwrite", "out",  "data-dir",
                                "device",  "prefetch", "nproc",     "dist-timeout"};

/// The settings of a config.json text that change a run's numbers, in the file's order.
nlohmann::ordered_json comparable_config(const std::string& text) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "a run's config is not valid JSON: ", excerpt(e.what()));
  }
  TORCH_CHECK(j.is_object(), "a run's config must be a JSON object");
  for (const char* k : kRunFree) j.erase(k);
  for (auto it = j.begin(); it != j.end();) {
    it = (!it.key().empty() && it.key()[0] == '_') ? j.erase(it) : std::next(it);
  }
  return j;
}

}  // namespace

std::string first_setting_difference(const std::string& config_a, const std::string& config_b) {
  const nlohmann::ordered_json a = comparable_config(config_a), b = comparable_config(config_b);
  // Defaults of a method without a preset: what a config written before a setting existed meant.
  static const nlohmann::ordered_json defaults =
      comparable_config(options_to_json(TrainOptions().method("ls")));
  for (const auto& [key, value] : b.items()) {
    if (!a.contains(key) && defaults.contains(key) && defaults[key] == value) continue;
    if (!a.contains(key) || a[key] != value) return key;
  }
  for (const auto& [key, value] : a.items()) {
    if (!b.contains(key)) return key;
  }
  return "";
}

const std::vector<SettingInfo>& train_settings() {
  static const std::vector<SettingInfo> settings = {
      {"benchmark", "NAME",
       "Embedded benchmark: multi-fashion, fashion-binary, multi-fashion-mixed, "
       "synthetic-regression; or paper benchmark (needs --data-dir): cifar-mtl, utkface, "
       "chestx14, qm9 (default: multi-fashion)"},
      {"method", "NAME",
       "bayesagg (BayesAgg-MTL, the default), ls (linear scalarisation)" + other_methods() +
           "; the CLI also takes stl: one single-task run per task, writing "
           "<out>/stl_baseline.json"},
      {"stl-task", "NAME",
       "Single-task learning: train only this task's loss with ls and select on its "
       "validation metric (`--method stl` trains every task and writes stl_baseline.json)"},
      {"epochs", "N",
       "Training epochs (default: 10 for the Fashion benchmarks, 30 for synthetic-regression, "
       "50 cifar-mtl, 100 utkface and chestx14, 300 qm9; `bayesagg train` without any argument "
       "runs 3)"},
      {"batch-size", "N", "Training batch size (default: 256)"},
      {"seed", "S",
       "Seed of the model initialisation, the shuffling and the Monte-Carlo draws (default: 0)"},
      {"data-seed", "S",
       "Seed of the benchmark's data (pairs, factors, synthetic data) (default: 0)"},
      {"threads", "T", "LibTorch intra-op threads, 0 = all cores (default: 0)"},
      {"device", "DEV", "cpu or cuda[:N] (default: cpu)"},
      {"train-subset", "N", "Train on the first N training items only, 0 = all (default: 0)"},
      {"data-dir", "DIR",
       "Folder of Fashion-MNIST's {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (default: " +
           std::string(kDefaultFashionMnistDir) +
           "), or of a paper benchmark's files (cifar-100-binary/, UTKFace/, the ChestX-ray14 "
           "images/, QM9's gdb9.sdf, gdb9.sdf.csv, uncharacterized.txt)"},
      {"split-dir", "DIR",
       "chestx14: folder of train.csv, validation.csv, test.csv (default: the project's "
       "data/chestx14)"},
      {"val-size", "N", "qm9: validation molecules (default: 10000)"},
      {"test-size", "N", "qm9: test molecules (default: 10000)"},
      {"image-size", "N",
       "utkface, chestx14: stored image side, 0 = the spec's 140 / 256 (default: 0)"},
      {"crop-size", "N",
       "utkface, chestx14: side of the crops the model sees, 0 = the spec's 128 / 224 "
       "(default: 0)"},
      {"pretrained", "FILE",
       "resnet18/resnet34 trunks: pretrained encoder weights, torchvision names (a Python "
       "torch.save'd state_dict or a LibTorch archive; docs/benchmarks.md)"},
      {"prefetch", "N",
       "Batches prepared ahead on a background thread, 0 = off (default: 2); results do not "
       "depend on it"},
      {"out", "DIR", "Run folder (default: runs/<benchmark>-<method>-seed<S>)"},
      {"stl-baseline", "FILE",
       "JSON {\"task/metric\": value} of single-task baselines for delta_m (default: none stored; "
       "delta_m is then reported as absent)"},
      {"lr", "X", "Adam learning rate of trunk and heads (default: 0.001)"},
      {"lr-schedule", "NAME",
       "auto (plateau for qm9, multistep otherwise), multistep (x0.1 at 60% and 80% of the "
       "epochs) or plateau (x0.7 after 5 epochs without a better validation score, min 1e-5)"},
      {"head-clip", "X", "Clip the heads' gradient norm to X, 0 = off (default: 10)"},
      {"trunk-clip", "X", "Clip the trunk's gradient norm to X, 0 = off (default: 0)"},
      {"eval-regression", "auto|head|posterior",
       "Predict regression tasks in evaluation with the trained head, or (BayesAgg-MTL) with the "
       "full-data posterior mean of the current epoch, as the authors evaluate UTKFace's age "
       "(default: auto = posterior for utkface with bayesagg, else head)"},
      {"trunk-clip-after-warmup", "BOOL",
       "Clip the trunk (--trunk-clip) only from epoch ls-epochs + 1 on, after the warm-up "
       "(the authors' UTKFace protocol) (default: false)"},
      {"ls-epochs", "N",
       "BayesAgg-MTL: linear-scalarisation warm-up epochs before aggregation (default: 1)"},
      {"gamma", "X", "BayesAgg-MTL: prior variance of every head (sets gamma-reg and gamma-cls)"},
      {"gamma-reg", "X", "BayesAgg-MTL: prior variance of regression heads (default: 0.005)"},
      {"gamma-cls", "X", "BayesAgg-MTL: prior variance of classification heads (default: 0.005)"},
      {"s-reg", "X",
       "BayesAgg-MTL: exponent s of the variance in regression tasks' weights (default: 0.3)"},
      {"s-cls", "X",
       "BayesAgg-MTL: exponent s of the variance in classification tasks' weights (default: 0.1)"},
      {"mc-samples", "N",
       "BayesAgg-MTL: Monte-Carlo samples per step for multiclass (and mc binary) groups "
       "(default: 1024)"},
      {"binary-moments", "exact|mc",
       "BayesAgg-MTL: binary groups' gradient moments, exact (Stein + Gauss-Hermite) or mc "
       "(default: exact)"},
      {"multiclass-moments", "rb|mc",
       "BayesAgg-MTL: multiclass groups' gradient moments, rb (Rao-Blackwellised: samples only "
       "the logits) or mc (samples the whole head, --mc-samples) (default: rb)"},
      {"rb-samples", "N",
       "BayesAgg-MTL: logit samples per step of the rb multiclass estimator (default: 16)"},
      {"quadrature-points", "N",
       "BayesAgg-MTL: Gauss-Hermite points of the exact binary moments (default: 48)"},
      {"posterior", "newton|head|mode",
       "BayesAgg-MTL: centre of the classification posteriors: one Newton step from the heads "
       "(newton, the reference), the heads themselves (head), or guarded Newton iterations to "
       "the mode (mode) (default: the method's; bayesagg-reference: newton)"},
      {"refresh", "epoch|running",
       "BayesAgg-MTL: the batch posteriors' prior, built once per epoch (epoch, the reference) "
       "or from running statistics that follow the trunk (running) (default: the method's; "
       "bayesagg-reference: epoch)"},
      {"noise", "fixed|estimated|normalised|balanced",
       "BayesAgg-MTL: each task's likelihood noise (regression variance, classification "
       "temperature): 1 (fixed, the reference), the heads' mean loss on the previous epoch "
       "(estimated), that divided by its geometric mean over the tasks with the same loss "
       "(normalised), or normalised times the geometric mean over all tasks, which differs from "
       "estimated only where losses mix (balanced) (default: the method's; bayesagg-reference: "
       "fixed)"},
      {"weighting", "precision|task|snr|family",
       "BayesAgg-MTL: how the tasks' gradient moments combine: tempered precision per example "
       "and dimension (precision, the reference), one precision weight per task (task), "
       "each mean shrunk by its signal-to-noise ratio and summed (snr), or task's weights "
       "normalised within each loss, each loss keeping its share of the tasks (family) "
       "(default: the method's; bayesagg-reference: precision)"},
      {"scale", "average|sum",
       "BayesAgg-MTL: dL/dh as the weighted average over tasks (average, the reference) or T "
       "times it, the size of linear scalarisation's sum (sum) (default: the method's; "
       "bayesagg-reference: average)"},
      {"head-gradient", "sum|weighted",
       "Gradient baselines: the heads get the gradient of the plain sum of losses (sum, MGDA's "
       "Algorithm 2) or of the method's weighted sum (weighted) (default: sum)"},
      {"pcgrad-reduction", "sum|mean",
       "PCGrad: sum (the paper) or average the projected gradients (default: sum)"},
      {"graddrop-leak", "X", "GradDrop: fraction of every gradient always kept (default: 0)"},
      {"gradvac-beta", "X", "GradVac: EMA decay of the target similarities (default: 0.01)"},
      {"cagrad-c", "X", "CAGrad: radius c of the ball around the mean gradient (default: 0.4)"},
      {"nashmtl-update-every", "N",
       "Nash-MTL: solve the bargaining problem every N steps (default: 1)"},
      {"nashmtl-max-norm", "X",
       "Nash-MTL: clip the aggregated shared gradient to this norm, 0 = off (default: 1)"},
      {"aligned-scale", "min|median|rmse",
       "Aligned-MTL: scale of the aligned gradients (default: min, the paper's)"},
      {"dbmtl-beta", "X", "DB-MTL: EMA factor of the log-loss gradients (default: 0.9)"},
      {"dwa-temperature", "X", "DWA: softmax temperature (default: 2)"},
      {"uw-lr", "X", "UW: Adam learning rate of the log-variances (default: 0.025)"},
      {"famo-lr", "X", "FAMO: learning rate of the task logits (default: 0.025)"},
      {"famo-weight-decay", "X", "FAMO: weight decay of the task logits (default: 0.001)"},
      {"trunk", "NAME",
       "Trunk network: auto (the benchmark's: cnn for images, mlp for vectors, cifar-cnn, "
       "resnet18, resnet34, mpnn for cifar-mtl, utkface, chestx14, qm9), or one of those"},
      {"representation-dim", "N",
       "Width of the shared representation h, 0 = the benchmark's (64; cifar-mtl 160, utkface "
       "and chestx14 256) (default: 0)"},
      {"progress", "MODE",
       "auto (a live bar on a terminal, periodic lines otherwise), bar, lines or none"},
      {"overwrite", "BOOL", "Start over in a run folder that holds a run (finished or not)"},
      {"nproc", "N",
       "Data-parallel training: start N ranks on this machine (one process each, same global "
       "batch; docs/distributed.md); 1 = one process (default: 1)"},
      {"dist-timeout", "X",
       "Data-parallel training: seconds a collective may wait for the other ranks before the run "
       "stops naming the lost rank (default: 300)"},
  };
  return settings;
}

void apply_setting(TrainOptions& o, const std::string& key, const std::string& v) {
  auto& b = o.bayesagg();
  if (key != "method") o.explicit_settings.insert(key);
  if (key == "benchmark") {
    o.benchmark(v);
  } else if (key == "method") {
    const MethodSpec spec = parse_method_spec(v);
    o.method(spec.name);
    o.explicit_settings.insert(key);
    for (const auto& [k, value] : spec.overrides) {
      TORCH_CHECK(k != "method", "--method ", v, ": a method spec cannot override 'method'");
      apply_setting(o, k, value);
    }
  } else if (key == "stl-task") {
    o.stl_task(v);
  } else if (key == "epochs") {
    o.epochs(parse_int(key, v));
    TORCH_CHECK(o.epochs() >= 1, "--epochs must be >= 1, got ", v);
  } else if (key == "batch-size") {
    o.batch_size(parse_int(key, v));
  } else if (key == "seed") {
    o.seed(parse_uint(key, v));
  } else if (key == "data-seed") {
    o.data_seed(parse_uint(key, v));
  } else if (key == "threads") {
    o.threads(parse_int(key, v));
  } else if (key == "device") {
    o.device(v);
  } else if (key == "train-subset") {
    o.train_subset(parse_int(key, v));
  } else if (key == "data-dir") {
    o.data_dir(v);
  } else if (key == "split-dir") {
    o.split_dir(v);
  } else if (key == "val-size") {
    o.val_size(parse_int(key, v));
  } else if (key == "test-size") {
    o.test_size(parse_int(key, v));
  } else if (key == "image-size") {
    o.image_size(parse_int(key, v));
  } else if (key == "crop-size") {
    o.crop_size(parse_int(key, v));
  } else if (key == "pretrained") {
    o.pretrained(v);
  } else if (key == "prefetch") {
    o.prefetch(parse_int(key, v));
  } else if (key == "out") {
    o.out(v);
  } else if (key == "stl-baseline") {
    o.stl_baseline(v);
  } else if (key == "lr") {
    o.lr(parse_double(key, v));
  } else if (key == "lr-schedule") {
    o.lr_schedule(v);
  } else if (key == "head-clip") {
    o.head_clip(parse_double(key, v));
  } else if (key == "trunk-clip") {
    o.trunk_clip(parse_double(key, v));
  } else if (key == "eval-regression") {
    TORCH_CHECK(v == "auto" || v == "head" || v == "posterior",
                "--eval-regression must be auto, head or posterior, got '", excerpt(v), "'");
    o.eval_regression(v);
  } else if (key == "trunk-clip-after-warmup") {
    o.trunk_clip_after_warmup(parse_bool(key, v));
  } else if (key == "ls-epochs") {
    o.ls_epochs(parse_int(key, v));
  } else if (key == "gamma") {
    const double g = parse_double(key, v);
    b.gamma_regression(g).gamma_classification(g);
  } else if (key == "gamma-reg") {
    b.gamma_regression(parse_double(key, v));
  } else if (key == "gamma-cls") {
    b.gamma_classification(parse_double(key, v));
  } else if (key == "s-reg") {
    b.s_regression(parse_double(key, v));
  } else if (key == "s-cls") {
    b.s_classification(parse_double(key, v));
  } else if (key == "mc-samples") {
    b.mc_samples(parse_int(key, v));
  } else if (key == "binary-moments") {
    TORCH_CHECK(v == "exact" || v == "mc", "--binary-moments must be exact or mc, got '",
                excerpt(v), "'");
    b.binary_moments(parse_moment_estimator(v));
  } else if (key == "multiclass-moments") {
    TORCH_CHECK(v == "rb" || v == "mc", "--multiclass-moments must be rb or mc, got '", excerpt(v),
                "'");
    b.multiclass_moments(parse_moment_estimator(v));
  } else if (key == "rb-samples") {
    b.rb_samples(parse_int(key, v));
  } else if (key == "quadrature-points") {
    b.quadrature_points(parse_int(key, v));
  } else if (key == "posterior") {
    b.centre(parse_posterior_centre(v));
  } else if (key == "refresh") {
    b.refresh(parse_posterior_refresh(v));
  } else if (key == "noise") {
    b.noise(parse_observation_noise(v));
  } else if (key == "weighting") {
    b.weighting(parse_weighting(v));
  } else if (key == "scale") {
    b.scale(parse_gradient_scale(v));
  } else if (key == "head-gradient") {
    TORCH_CHECK(v == "sum" || v == "weighted", "--head-gradient must be sum or weighted, got '",
                v, "'");
    o.gradient().heads(v == "sum" ? HeadGradient::sum : HeadGradient::weighted);
  } else if (key == "pcgrad-reduction") {
    TORCH_CHECK(v == "sum" || v == "mean", "--pcgrad-reduction must be sum or mean, got '", v,
                "'");
    o.gradient().pcgrad().mean(v == "mean");
  } else if (key == "graddrop-leak") {
    o.gradient().graddrop().leak(parse_double(key, v));
  } else if (key == "gradvac-beta") {
    o.gradient().gradvac().beta(parse_double(key, v));
  } else if (key == "cagrad-c") {
    o.gradient().cagrad().c(parse_double(key, v));
  } else if (key == "nashmtl-update-every") {
    o.gradient().nashmtl().update_weights_every(parse_int(key, v));
  } else if (key == "nashmtl-max-norm") {
    o.gradient().nashmtl().max_norm(parse_double(key, v));
  } else if (key == "aligned-scale") {
    TORCH_CHECK(v == "min" || v == "median" || v == "rmse",
                "--aligned-scale must be min, median or rmse, got '", excerpt(v), "'");
    o.gradient().alignedmtl().scale(v == "min"      ? AlignedScale::min
                                    : v == "median" ? AlignedScale::median
                                                    : AlignedScale::rmse);
  } else if (key == "dbmtl-beta") {
    o.gradient().dbmtl().beta(parse_double(key, v));
  } else if (key == "dwa-temperature") {
    o.weighting().dwa().temperature(parse_double(key, v));
  } else if (key == "uw-lr") {
    o.weighting().uw().lr(parse_double(key, v));
  } else if (key == "famo-lr") {
    o.weighting().famo().lr(parse_double(key, v));
  } else if (key == "famo-weight-decay") {
    o.weighting().famo().weight_decay(parse_double(key, v));
  } else if (key == "trunk") {
    o.trunk(v);
  } else if (key == "representation-dim") {
    o.representation_dim(parse_int(key, v));
  } else if (key == "progress") {
    o.progress(v);
  } else if (key == "overwrite") {
    o.overwrite(parse_bool(key, v));
  } else if (key == "nproc") {
    o.nproc(parse_int(key, v));
  } else if (key == "dist-timeout") {
    o.dist_timeout(parse_double(key, v));
  } else {
    std::vector<std::string> keys;
    for (const auto& s : train_settings()) keys.push_back(s.key);
    TORCH_CHECK(false, "unknown setting '", key, "' (known: ", join(keys), ")");
  }
}

namespace {

/// The value of a setting as `o` holds it, without the method's preset.
std::string raw_setting_value(const TrainOptions& o, const std::string& key) {
  const auto& b = o.bayesagg();
  if (key == "benchmark") return o.benchmark();
  if (key == "method") return o.method();
  if (key == "stl-task") return o.stl_task();
  if (key == "epochs") return std::to_string(o.resolved_epochs());
  if (key == "batch-size") return std::to_string(o.batch_size());
  if (key == "seed") return std::to_string(o.seed());
  if (key == "data-seed") return std::to_string(o.data_seed());
  if (key == "threads") return std::to_string(o.threads());
  if (key == "device") return o.device();
  if (key == "train-subset") return std::to_string(o.train_subset());
  if (key == "data-dir") return o.data_dir();
  if (key == "split-dir") return o.split_dir();
  if (key == "val-size") return std::to_string(o.val_size());
  if (key == "test-size") return std::to_string(o.test_size());
  if (key == "image-size") return std::to_string(o.image_size());
  if (key == "crop-size") return std::to_string(o.crop_size());
  if (key == "pretrained") return o.pretrained();
  if (key == "prefetch") return std::to_string(o.prefetch());
  if (key == "out") return o.resolved_out();
  if (key == "stl-baseline") return o.stl_baseline();
  if (key == "lr") return num(o.lr());
  if (key == "lr-schedule") return o.resolved_lr_schedule();
  if (key == "head-clip") return num(o.head_clip());
  if (key == "trunk-clip") return num(o.trunk_clip());
  if (key == "eval-regression") return o.eval_regression();
  if (key == "trunk-clip-after-warmup") return o.trunk_clip_after_warmup() ? "true" : "false";
  if (key == "ls-epochs") return std::to_string(o.ls_epochs());
  if (key == "gamma") {
    return b.gamma_regression() == b.gamma_classification() ? num(b.gamma_regression()) : "";
  }
  if (key == "gamma-reg") return num(b.gamma_regression());
  if (key == "gamma-cls") return num(b.gamma_classification());
  if (key == "s-reg") return num(b.s_regression());
  if (key == "s-cls") return num(b.s_classification());
  if (key == "mc-samples") return std::to_string(b.mc_samples());
  if (key == "binary-moments") return to_string(b.binary_moments());
  if (key == "multiclass-moments") return to_string(b.multiclass_moments());
  if (key == "rb-samples") return std::to_string(b.rb_samples());
  if (key == "quadrature-points") return std::to_string(b.quadrature_points());
  if (key == "posterior") return to_string(b.centre());
  if (key == "refresh") return to_string(b.refresh());
  if (key == "noise") return to_string(b.noise());
  if (key == "weighting") return to_string(b.weighting());
  if (key == "scale") return to_string(b.scale());
  const auto& g = o.gradient();
  const auto& w = o.weighting();
  if (key == "head-gradient") return g.heads() == HeadGradient::sum ? "sum" : "weighted";
  if (key == "pcgrad-reduction") return g.pcgrad().mean() ? "mean" : "sum";
  if (key == "graddrop-leak") return num(g.graddrop().leak());
  if (key == "gradvac-beta") return num(g.gradvac().beta());
  if (key == "cagrad-c") return num(g.cagrad().c());
  if (key == "nashmtl-update-every") return std::to_string(g.nashmtl().update_weights_every());
  if (key == "nashmtl-max-norm") return num(g.nashmtl().max_norm());
  if (key == "aligned-scale") {
    const AlignedScale a = g.alignedmtl().scale();
    return a == AlignedScale::min ? "min" : a == AlignedScale::median ? "median" : "rmse";
  }
  if (key == "dbmtl-beta") return num(g.dbmtl().beta());
  if (key == "dwa-temperature") return num(w.dwa().temperature());
  if (key == "uw-lr") return num(w.uw().lr());
  if (key == "famo-lr") return num(w.famo().lr());
  if (key == "famo-weight-decay") return num(w.famo().weight_decay());
  if (key == "trunk") return o.trunk();
  if (key == "representation-dim") return std::to_string(o.resolved_representation_dim());
  if (key == "progress") return o.progress();
  if (key == "overwrite") return o.overwrite() ? "true" : "false";
  if (key == "nproc") return std::to_string(o.nproc());
  if (key == "dist-timeout") return num(o.dist_timeout());
  TORCH_CHECK(false, "unknown setting '", key, "'");
}

}  // namespace

std::string setting_value(const TrainOptions& o, const std::string& key) {
  return raw_setting_value(o.with_method_preset(), key);
}

void apply_config_json(TrainOptions& options, const std::string& json_text,
                       const std::string& what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, what, " is not valid JSON: ", excerpt(e.what()));
  }
  check_unique_json_keys(json_text, what);
  TORCH_CHECK(j.is_object(), what, " must hold a JSON object of settings");
  std::map<std::string, std::string> values;
  std::vector<std::string> keys;
  for (const auto& s : train_settings()) keys.push_back(s.key);
  for (const auto& [raw_key, value] : j.items()) {
    if (!raw_key.empty() && raw_key[0] == '_') continue;  // comments and informational entries
    std::string key = raw_key;
    std::replace(key.begin(), key.end(), '_', '-');
    TORCH_CHECK(key != "config" && key != "resume", what, ": '", raw_key,
                "' cannot be set in a config file");
    TORCH_CHECK(std::find(keys.begin(), keys.end(), key) != keys.end(), what, ": unknown setting '",
                excerpt(raw_key), "' (known: ", join(keys), ")");
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_boolean()) {
      text = value.get<bool>() ? "true" : "false";
    } else if (value.is_number_integer() || value.is_number_unsigned()) {
      text = value.dump();
    } else if (value.is_number_float()) {
      text = num(value.get<double>());
    } else if (value.is_null()) {
      continue;
    } else {
      TORCH_CHECK(false, what, ": '", raw_key, "' must be a string, number or boolean, got ",
                  excerpt(value.dump()));
    }
    values[key] = text;
  }
  for (const auto& key : keys) {
    const auto it = values.find(key);
    if (it == values.end() || (key == "gamma" && it->second.empty())) continue;
    try {
      apply_setting(options, key, it->second);
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, what, ": ", e.msg());
    }
  }
}

std::string options_to_json(const TrainOptions& unresolved) {
  const TrainOptions options = unresolved.with_method_preset();
  nlohmann::ordered_json j;
  for (const auto& s : train_settings()) {
    if (s.key == "gamma") continue;  // recorded as gamma-reg and gamma-cls
    const std::string v = raw_setting_value(options, s.key);
    nlohmann::ordered_json value;
    if (s.value_name == "N" || s.value_name == "T") {
      value = std::stoll(v);
    } else if (s.value_name == "S") {
      value = static_cast<uint64_t>(std::stoull(v));
    } else if (s.value_name == "X") {
      value = std::stod(v);
    } else if (s.value_name == "BOOL") {
      value = v == "true";
    } else {
      value = v;
    }
    j[s.key] = value;
  }
  // Paths (out, data_dir) need not be UTF-8; JSON must be: invalid bytes become U+FFFD.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace bayesagg
