#include "bayesagg/train/options.h"

#include "bayesagg/bayes/moments.h"
#include "bayesagg/methods/method.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>

namespace bayesagg {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

int64_t parse_int(const std::string& key, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  TORCH_CHECK(!text.empty() && end && *end == '\0' && errno == 0, "--", key,
              ": expected an integer, got '", text, "'");
  return static_cast<int64_t>(v);
}

uint64_t parse_uint(const std::string& key, const std::string& text) {
  TORCH_CHECK(!text.empty() && text[0] != '-', "--", key,
              ": expected a non-negative integer, got '", text, "'");
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  TORCH_CHECK(end && *end == '\0' && errno == 0, "--", key,
              ": expected a non-negative integer, got '", text, "'");
  return static_cast<uint64_t>(v);
}

double parse_double(const std::string& key, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  TORCH_CHECK(!text.empty() && end && *end == '\0' && errno == 0 && std::isfinite(v), "--", key,
              ": expected a finite number, got '", text, "'");
  return v;
}

bool parse_bool(const std::string& key, const std::string& text) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") return true;
  if (text == "false" || text == "0" || text == "no" || text == "off") return false;
  TORCH_CHECK(false, "--", key, ": expected true or false, got '", text, "'");
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
    if (m != "ls" && m != "bayesagg") rest.push_back(m);
  }
  return rest.empty() ? "" : ", or a baseline method: " + join(rest);
}

}  // namespace

int64_t default_epochs(const std::string& benchmark) {
  return benchmark == "synthetic-regression" ? 30 : 10;
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
  TORCH_CHECK(is_embedded_benchmark(benchmark()), "--benchmark: unknown benchmark '",
              benchmark(), "' (known: ", join(embedded_benchmark_names()), ")");
  const auto methods = method_names();
  TORCH_CHECK(std::find(methods.begin(), methods.end(), method()) != methods.end(),
              "--method: unknown method '", method(), "' (known: ", join(methods), ")");
  TORCH_CHECK(stl_task().empty() || method() == "ls", "--stl-task ", stl_task(),
              " trains one task alone, which needs --method ls, got '", method(), "'");
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
  TORCH_CHECK(representation_dim() >= 1, "--representation-dim must be >= 1, got ",
              representation_dim());
  TORCH_CHECK(trunk() == "auto" || trunk() == "cnn" || trunk() == "mlp",
              "--trunk must be auto, cnn or mlp, got '", trunk(), "'");
  TORCH_CHECK(eval_batch_size() >= 1, "eval batch size must be >= 1, got ", eval_batch_size());
  TORCH_CHECK(progress() == "auto" || progress() == "bar" || progress() == "lines" ||
                  progress() == "none",
              "--progress must be auto, bar, lines or none, got '", progress(), "'");
  TORCH_CHECK(stop_after_epoch() >= 0, "stop_after_epoch must be >= 0, got ",
              stop_after_epoch());
  const std::string& d = device();
  TORCH_CHECK(d == "cpu" || d.rfind("cuda", 0) == 0, "--device must be cpu or cuda[:N], got '",
              d, "'");
  bayesagg().validate();
}

const std::vector<SettingInfo>& train_settings() {
  static const std::vector<SettingInfo> settings = {
      {"benchmark", "NAME",
       "Embedded benchmark: multi-fashion, fashion-binary, multi-fashion-mixed, "
       "synthetic-regression (default: multi-fashion)"},
      {"method", "NAME",
       "bayesagg (BayesAgg-MTL, the default), ls (linear scalarisation)" + other_methods() +
           "; the CLI also takes stl: one single-task run per task, writing "
           "<out>/stl_baseline.json"},
      {"stl-task", "NAME",
       "Single-task learning: train only this task's loss with ls and select on its "
       "validation metric (`--method stl` trains every task and writes stl_baseline.json)"},
      {"epochs", "N",
       "Training epochs (default: 10 for the Fashion benchmarks, 30 for synthetic-regression; "
       "`bayesagg train` without any argument runs 3)"},
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
           std::string(kDefaultFashionMnistDir) + ")"},
      {"out", "DIR", "Run folder (default: runs/<benchmark>-<method>-seed<S>)"},
      {"stl-baseline", "FILE",
       "JSON {\"task/metric\": value} of single-task baselines for delta_m (default: none stored; "
       "delta_m is then reported as absent)"},
      {"lr", "X", "Adam learning rate of trunk and heads (default: 0.001)"},
      {"head-clip", "X", "Clip the heads' gradient norm to X, 0 = off (default: 10)"},
      {"trunk-clip", "X", "Clip the trunk's gradient norm to X, 0 = off (default: 0)"},
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
       "BayesAgg-MTL: logit samples per step of the rb multiclass estimator (default: 32)"},
      {"quadrature-points", "N",
       "BayesAgg-MTL: Gauss-Hermite points of the exact binary moments (default: 48)"},
      {"trunk", "NAME", "Trunk network: auto (cnn for images, mlp for vectors), cnn or mlp"},
      {"representation-dim", "N", "Width of the shared representation h (default: 64)"},
      {"progress", "MODE",
       "auto (a live bar on a terminal, periodic lines otherwise), bar, lines or none"},
      {"overwrite", "BOOL", "Start over in a run folder that holds an unfinished run"},
  };
  return settings;
}

void apply_setting(TrainOptions& o, const std::string& key, const std::string& v) {
  auto& b = o.bayesagg();
  if (key == "benchmark") {
    o.benchmark(v);
  } else if (key == "method") {
    o.method(v);
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
  } else if (key == "out") {
    o.out(v);
  } else if (key == "stl-baseline") {
    o.stl_baseline(v);
  } else if (key == "lr") {
    o.lr(parse_double(key, v));
  } else if (key == "head-clip") {
    o.head_clip(parse_double(key, v));
  } else if (key == "trunk-clip") {
    o.trunk_clip(parse_double(key, v));
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
    TORCH_CHECK(v == "exact" || v == "mc", "--binary-moments must be exact or mc, got '", v, "'");
    b.binary_moments(parse_moment_estimator(v));
  } else if (key == "multiclass-moments") {
    TORCH_CHECK(v == "rb" || v == "mc", "--multiclass-moments must be rb or mc, got '", v, "'");
    b.multiclass_moments(parse_moment_estimator(v));
  } else if (key == "rb-samples") {
    b.rb_samples(parse_int(key, v));
  } else if (key == "quadrature-points") {
    b.quadrature_points(parse_int(key, v));
  } else if (key == "trunk") {
    o.trunk(v);
  } else if (key == "representation-dim") {
    o.representation_dim(parse_int(key, v));
  } else if (key == "progress") {
    o.progress(v);
  } else if (key == "overwrite") {
    o.overwrite(parse_bool(key, v));
  } else {
    std::vector<std::string> keys;
    for (const auto& s : train_settings()) keys.push_back(s.key);
    TORCH_CHECK(false, "unknown setting '", key, "' (known: ", join(keys), ")");
  }
}

std::string setting_value(const TrainOptions& o, const std::string& key) {
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
  if (key == "out") return o.resolved_out();
  if (key == "stl-baseline") return o.stl_baseline();
  if (key == "lr") return num(o.lr());
  if (key == "head-clip") return num(o.head_clip());
  if (key == "trunk-clip") return num(o.trunk_clip());
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
  if (key == "trunk") return o.trunk();
  if (key == "representation-dim") return std::to_string(o.representation_dim());
  if (key == "progress") return o.progress();
  if (key == "overwrite") return o.overwrite() ? "true" : "false";
  TORCH_CHECK(false, "unknown setting '", key, "'");
}

void apply_config_json(TrainOptions& options, const std::string& json_text,
                       const std::string& what) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, what, " is not valid JSON: ", e.what());
  }
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
    TORCH_CHECK(std::find(keys.begin(), keys.end(), key) != keys.end(), what,
                ": unknown setting '", raw_key, "' (known: ", join(keys), ")");
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
                  value.dump());
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

std::string options_to_json(const TrainOptions& options) {
  nlohmann::ordered_json j;
  for (const auto& s : train_settings()) {
    if (s.key == "gamma") continue;  // recorded as gamma-reg and gamma-cls
    const std::string v = setting_value(options, s.key);
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
  return j.dump(2) + "\n";
}

}  // namespace bayesagg
