#include "bayesagg/train/metrics.h"

#include "bayesagg/core/files.h"
#include "bayesagg/core/text.h"
#include "bayesagg/data/paper/paper.h"
#include "bayesagg/data/paper/qm9.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace bayesagg {
namespace {

std::string metric_name(const std::string& key) {
  const auto slash = key.rfind('/');
  return slash == std::string::npos ? key : key.substr(slash + 1);
}

at::Tensor cpu_double(const at::Tensor& t) { return t.detach().to(at::kCPU, at::kDouble); }

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

/// Task names of group g, in order.
std::vector<std::string> group_task_names(const Benchmark& b, size_t g) {
  int64_t first = 0;
  for (size_t i = 0; i < g; ++i) first += b.groups[i].num_tasks();
  std::vector<std::string> names;
  for (int64_t k = 0; k < b.groups[g].num_tasks(); ++k) {
    const size_t idx = static_cast<size_t>(first + k);
    names.push_back(idx < b.task_names.size() ? b.task_names[idx]
                                              : "task_" + std::to_string(idx));
  }
  return names;
}

/// Which metrics a group reports.
struct GroupPlan {
  bool accuracy = false, auc = false, argmax = false, mse = false, mae = false;
};

GroupPlan plan_for(const Benchmark& b, size_t g) {
  const TaskGroup& group = b.groups[g];
  GroupPlan p;
  const bool scaled = g < b.target_scaling.size() && b.target_scaling[g].defined();
  switch (group.type) {
    case GroupType::multiclass:
      p.accuracy = true;
      break;
    case GroupType::binary:
      p.accuracy = b.name != "chestx14";
      p.auc = true;
      p.argmax = b.name == "fashion-binary" || b.name == "cifar-mtl";
      break;
    case GroupType::regression:
      if (b.name == "synthetic-regression") {
        p.mae = true;
      } else if (b.name == "multi-fashion-mixed") {
        p.mse = true;
      } else {
        p.mse = true;
        p.mae = scaled;
      }
      break;
  }
  return p;
}

/// Group g's outputs on the CPU, checked against the benchmark and the labels.
at::Tensor group_outputs(const Benchmark& b, const std::vector<at::Tensor>& outputs,
                         const Labels& labels, size_t g, const char* what) {
  TORCH_CHECK(outputs.size() == b.groups.size() && labels.size() == b.groups.size(), what,
              ": expected outputs and labels for ", b.groups.size(), " groups, got ",
              outputs.size(), " and ", labels.size());
  const TaskGroup& group = b.groups[g];
  const at::Tensor out = outputs[g].detach().to(at::kCPU);
  const int64_t n = labels[g].size(0);
  TORCH_CHECK(out.dim() == 2 && out.size(1) == group.head_rows() && out.size(0) == n, what,
              ": outputs of group ", g, " (", group.str(), ") must be [", n, ", ",
              group.head_rows(), "], got ", out.sizes());
  return out;
}

}  // namespace

double accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 2 && labels.dim() == 1 && logits.size(0) == labels.size(0),
              "accuracy: expected logits [N, K] and labels [N], got ", logits.sizes(), " and ",
              labels.sizes());
  if (labels.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  return logits.argmax(1).eq(labels.to(at::kLong)).to(at::kDouble).mean().item<double>();
}

double binary_accuracy(const at::Tensor& logits, const at::Tensor& labels) {
  TORCH_CHECK(logits.dim() == 1 && labels.dim() == 1 && logits.size(0) == labels.size(0),
              "binary_accuracy: expected logits [N] and labels [N], got ", logits.sizes(), " and ",
              labels.sizes());
  if (labels.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  return logits.gt(0).eq(labels.gt(0.5)).to(at::kDouble).mean().item<double>();
}

double roc_auc(const at::Tensor& scores, const at::Tensor& labels) {
  TORCH_CHECK(scores.dim() == 1 && labels.dim() == 1 && scores.size(0) == labels.size(0),
              "roc_auc: expected scores [N] and labels [N], got ", scores.sizes(), " and ",
              labels.sizes());
  const at::Tensor s = cpu_double(scores).contiguous();
  const at::Tensor y = cpu_double(labels).contiguous();
  const int64_t n = s.size(0);
  const double* sp = s.data_ptr<double>();
  const double* yp = y.data_ptr<double>();
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return sp[a] < sp[b]; });
  // Sum of the (1-based, tie-averaged) ranks of the positives.
  double rank_sum = 0.0;
  int64_t positives = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j + 1 < n && sp[order[j + 1]] == sp[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (int64_t k = i; k <= j; ++k) {
      if (yp[order[k]] > 0.5) {
        rank_sum += rank;
        ++positives;
      }
    }
    i = j + 1;
  }
  const int64_t negatives = n - positives;
  if (positives == 0 || negatives == 0) return std::numeric_limits<double>::quiet_NaN();
  const double p = static_cast<double>(positives), q = static_cast<double>(negatives);
  return (rank_sum - p * (p + 1.0) / 2.0) / (p * q);
}

double mean_absolute_error(const at::Tensor& prediction, const at::Tensor& target) {
  TORCH_CHECK(prediction.sizes() == target.sizes(), "mean_absolute_error: shapes differ: ",
              prediction.sizes(), " vs ", target.sizes());
  if (target.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  return (cpu_double(prediction) - cpu_double(target)).abs().mean().item<double>();
}

double mean_squared_error(const at::Tensor& prediction, const at::Tensor& target) {
  TORCH_CHECK(prediction.sizes() == target.sizes(), "mean_squared_error: shapes differ: ",
              prediction.sizes(), " vs ", target.sizes());
  if (target.numel() == 0) return std::numeric_limits<double>::quiet_NaN();
  return (cpu_double(prediction) - cpu_double(target)).pow(2).mean().item<double>();
}

bool higher_is_better(const std::string& metric) {
  const std::string m = metric_name(metric);
  if (m == "accuracy" || m == "auc" || m == "argmax_accuracy") return true;
  if (m == "mse" || m == "mae" || m == "loss" || is_calibration_metric(m)) return false;
  TORCH_CHECK(false, "unknown metric '", metric,
              "' (known: accuracy, auc, argmax_accuracy, mse, mae, loss, ece, brier)");
}

bool is_calibration_metric(const std::string& metric) {
  const std::string m = metric_name(metric);
  return m == "ece" || m == "brier";
}

std::vector<std::string> metric_keys(const Benchmark& b) {
  std::vector<std::string> keys;
  for (size_t g = 0; g < b.groups.size(); ++g) {
    const GroupPlan p = plan_for(b, g);
    for (const auto& task : group_task_names(b, g)) {
      if (p.mse) keys.push_back(task + "/mse");
      if (p.mae) keys.push_back(task + "/mae");
      if (p.accuracy) keys.push_back(task + "/accuracy");
      if (p.auc) keys.push_back(task + "/auc");
    }
    if (p.argmax) keys.push_back("all/argmax_accuracy");
  }
  return keys;
}

std::vector<std::string> calibration_keys(const Benchmark& b) {
  std::vector<std::string> keys;
  for (size_t g = 0; g < b.groups.size(); ++g) {
    if (!b.groups[g].is_classification()) continue;
    for (const auto& task : group_task_names(b, g)) {
      keys.push_back(task + "/ece");
      keys.push_back(task + "/brier");
    }
  }
  return keys;
}

MetricMap compute_metrics(const Benchmark& b, const std::vector<at::Tensor>& outputs,
                          const Labels& labels) {
  MetricMap m;
  for (size_t g = 0; g < b.groups.size(); ++g) {
    const TaskGroup& group = b.groups[g];
    const GroupPlan p = plan_for(b, g);
    const auto names = group_task_names(b, g);
    const at::Tensor out = group_outputs(b, outputs, labels, g, "compute_metrics");
    const at::Tensor y = labels[g].detach().to(at::kCPU);
    if (group.type == GroupType::multiclass) {
      m[names[0] + "/accuracy"] = accuracy(out, y);
      m[names[0] + "/ece"] = multiclass_reliability(out, y).ece();
      m[names[0] + "/brier"] = multiclass_brier(out, y);
      continue;
    }
    if (group.type == GroupType::binary) {
      for (size_t k = 0; k < names.size(); ++k) {
        const at::Tensor o = out.select(1, static_cast<int64_t>(k));
        const at::Tensor t = y.select(1, static_cast<int64_t>(k));
        if (p.accuracy) m[names[k] + "/accuracy"] = binary_accuracy(o, t);
        if (p.auc) m[names[k] + "/auc"] = roc_auc(o, t);
        m[names[k] + "/ece"] = binary_reliability(o, t).ece();
        m[names[k] + "/brier"] = binary_brier(o, t);
      }
      if (p.argmax) m["all/argmax_accuracy"] = accuracy(out, y.argmax(1));
      continue;
    }
    // Regression: mse as trained (standardised), mae on the original scale.
    at::Tensor pred_orig = p.mae ? b.to_original(g, out.to(at::kDouble)) : at::Tensor();
    at::Tensor y_orig = p.mae ? b.to_original(g, y.to(at::kDouble)) : at::Tensor();
    if (p.mae && b.name == "qm9" && group.outputs == kQM9Targets) {
      // Reported units: meV for the energies (spec: benchmarks.md, QM9).
      const at::Tensor scale = qm9_report_scale().to(at::kDouble);
      pred_orig = pred_orig * scale;
      y_orig = y_orig * scale;
    }
    for (size_t k = 0; k < names.size(); ++k) {
      const auto kk = static_cast<int64_t>(k);
      if (p.mse) m[names[k] + "/mse"] = mean_squared_error(out.select(1, kk), y.select(1, kk));
      if (p.mae) {
        m[names[k] + "/mae"] = mean_absolute_error(pred_orig.select(1, kk), y_orig.select(1, kk));
      }
    }
  }
  return m;
}

std::vector<TaskReliability> reliability_diagrams(const Benchmark& b,
                                                  const std::vector<at::Tensor>& outputs,
                                                  const Labels& labels) {
  std::vector<TaskReliability> out;
  for (size_t g = 0; g < b.groups.size(); ++g) {
    const TaskGroup& group = b.groups[g];
    if (!group.is_classification()) continue;
    const at::Tensor o = group_outputs(b, outputs, labels, g, "reliability_diagrams");
    const at::Tensor y = labels[g].detach().to(at::kCPU);
    const auto names = group_task_names(b, g);
    if (group.type == GroupType::multiclass) {
      out.push_back({names[0], false, multiclass_reliability(o, y)});
      continue;
    }
    for (size_t k = 0; k < names.size(); ++k) {
      const auto kk = static_cast<int64_t>(k);
      out.push_back({names[k], true, binary_reliability(o.select(1, kk), y.select(1, kk))});
    }
  }
  return out;
}

bool SelectionScore::better_than(const SelectionScore& o) const {
  if (std::isnan(primary)) return false;
  if (std::isnan(o.primary)) return true;
  if (primary != o.primary) return primary > o.primary;
  if (std::isnan(secondary)) return false;
  if (std::isnan(o.secondary)) return true;
  return secondary > o.secondary;
}

SelectionScore selection_score(const Benchmark& b, const MetricMap& val) {
  const auto get = [&](const std::string& key) {
    const auto it = val.find(key);
    TORCH_CHECK(it != val.end(), "selection: no validation metric '", key, "'");
    return it->second;
  };
  SelectionScore s;
  if (b.name == "fashion-binary" || b.name == "cifar-mtl") {
    s.primary = get("all/argmax_accuracy");
    return s;
  }
  if (b.name == "chestx14") {
    std::vector<double> auc;
    for (const auto& [key, value] : val) {
      if (metric_name(key) == "auc") auc.push_back(value);
    }
    s.primary = mean_of(auc);
    return s;
  }
  if (b.name == "utkface" || b.name == "qm9") {
    const MetricMap ref = published_stl_baselines(b.name, b.name == "utkface" ? "val" : "test");
    for (const auto& item : ref) get(item.first);
    s.primary = -delta_m(val, ref).value();
    return s;
  }
  if (b.name == "synthetic-regression" && b.task_scales.defined()) {
    const at::Tensor scales = b.task_scales.to(at::kCPU, at::kDouble).contiguous();
    std::vector<double> r;
    for (size_t t = 0; t < b.task_names.size(); ++t) {
      r.push_back(get(b.task_names[t] + "/mae") / scales[static_cast<int64_t>(t)].item<double>());
    }
    s.primary = -mean_of(r);
    return s;
  }
  std::vector<double> acc, mse;
  for (const auto& [key, value] : val) {
    const std::string m = metric_name(key);
    if (m == "accuracy") acc.push_back(value);
    if (m == "mse") mse.push_back(value);
  }
  if (!acc.empty()) {
    s.primary = mean_of(acc);
    s.secondary = mse.empty() ? 0.0 : -mean_of(mse);
  } else {
    s.primary = mse.empty() ? 0.0 : -mean_of(mse);
  }
  return s;
}

std::vector<std::string> task_metric_keys(const Benchmark& b, const std::string& task) {
  std::vector<std::string> keys;
  for (const auto& k : metric_keys(b)) {
    if (k.rfind(task + "/", 0) == 0) keys.push_back(k);
  }
  if (keys.empty()) {
    std::string known;
    for (const auto& t : b.task_names) known += (known.empty() ? "" : ", ") + t;
    TORCH_CHECK(false, "'", task, "' is not a task of ", b.name, " (its tasks: ", known, ")");
  }
  return keys;
}

std::string single_task_selection_key(const Benchmark& b, const std::string& task) {
  const auto keys = task_metric_keys(b, task);
  for (const auto& k : keys) {
    if (metric_name(k) == "auc") return k;
  }
  return keys.front();
}

SelectionScore single_task_score(const Benchmark& b, const MetricMap& val,
                                 const std::string& task) {
  const std::string key = single_task_selection_key(b, task);
  const auto it = val.find(key);
  TORCH_CHECK(it != val.end(), "selection: no validation metric '", key, "'");
  SelectionScore s;
  s.primary = higher_is_better(key) ? it->second : -it->second;
  return s;
}

std::string selection_rule(const Benchmark& b) {
  if (b.name == "fashion-binary") return "validation 10-way argmax accuracy";
  if (b.name == "cifar-mtl") return "validation 20-way argmax accuracy";
  if (b.name == "chestx14") return "validation mean AUC";
  if (b.name == "utkface") return "validation delta_m vs the published validation STL (lower)";
  if (b.name == "qm9") return "validation delta_m of the MAEs vs the published STL (lower)";
  if (b.name == "synthetic-regression") return "validation mean MAE / sigma_t (lower)";
  if (b.name == "multi-fashion-mixed") {
    return "validation mean accuracy (tie break: mean factor MSE)";
  }
  bool classification = false;
  for (const auto& g : b.groups) classification |= g.is_classification();
  return classification ? "validation mean accuracy" : "validation mean MSE (lower)";
}

std::optional<double> delta_m(const MetricMap& values, const MetricMap& baselines) {
  if (baselines.empty()) return std::nullopt;
  double sum = 0.0;
  for (const auto& [key, base] : baselines) {
    const auto it = values.find(key);
    TORCH_CHECK(it != values.end(), "delta_m: baseline '", key, "' has no value in the results");
    TORCH_CHECK(base != 0.0 && std::isfinite(base), "delta_m: baseline '", key,
                "' must be finite and non-zero, got ", base);
    const double sign = higher_is_better(key) ? -1.0 : 1.0;
    sum += sign * (it->second - base) / base;
  }
  return 100.0 * sum / static_cast<double>(baselines.size());
}

MetricMap published_stl_baselines(const std::string& benchmark, const std::string& split) {
  MetricMap out;
  if (!is_paper_benchmark(benchmark) || !has_stl_baseline(benchmark, split)) return out;
  const StlBaseline b = stl_baseline(benchmark, split);
  for (size_t i = 0; i < b.metrics.size(); ++i) {
    std::string key = b.metrics[i];
    const auto cut = key.rfind('_');
    key[cut] = '/';
    out[key] = b.values[i];
  }
  return out;
}

MetricMap read_stl_baselines(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    TORCH_CHECK(false, "STL baseline file '", path, "' is not valid JSON: ", excerpt(e.what()));
  }
  if (j.is_object() && j.contains("test") && j["test"].is_object()) j = j["test"];
  TORCH_CHECK(j.is_object(), "STL baseline file '", path,
              "' must hold an object {\"task/metric\": value, ...}");
  MetricMap out;
  for (const auto& [key, value] : j.items()) {
    TORCH_CHECK(value.is_number(), "STL baseline file '", path, "': '", excerpt(key),
                "' must be a number, got ", excerpt(value.dump()));
    TORCH_CHECK(key.find('/') != std::string::npos, "STL baseline file '", path, "': key '",
                excerpt(key), "' must be `task/metric`");
    higher_is_better(key);  // throws on unknown metric names
    TORCH_CHECK(!is_calibration_metric(key), "STL baseline file '", path, "': '", key,
                "' is a calibration metric; Δm uses the benchmark's task metrics only (remove "
                "it)");
    out[key] = value.get<double>();
    // delta_m divides by every baseline: refused here, not after the first epoch.
    TORCH_CHECK(std::isfinite(out[key]) && out[key] != 0.0, "STL baseline file '", path, "': '",
                key, "' is ", value.dump(), "; delta_m divides by it, so it must be finite and "
                "non-zero");
  }
  TORCH_CHECK(!out.empty(), "STL baseline file '", path, "' holds no baselines");
  return out;
}

void check_stl_baselines(const Benchmark& b, const MetricMap& baselines,
                         const std::string& source) {
  const auto keys = metric_keys(b);
  for (const auto& [key, value] : baselines) {
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
    std::string known;
    for (const auto& k : keys) known += (known.empty() ? "" : ", ") + k;
    TORCH_CHECK(false, source, ": '", key, "' is not a metric of ", b.name, " (its metrics: ",
                known, ")");
  }
}

MetricMap stored_stl_baselines(const std::string& benchmark) {
  // Measured with this library, never invented: `bayesagg train --benchmark B --method stl`
  // (one run per task, linear scalarisation on that task's loss alone) under the default
  // protocol: seed 0, data-seed 0, all training items, the default network, batch 256, Adam
  // 1e-3, the benchmark's default epochs; test metrics at each task's best validation epoch
  // (docs/training.md, "Stored single-task baselines"). Benchmarks without measured baselines
  // return nothing, and Δm is then reported as absent.
  if (benchmark == "multi-fashion") {
    return {{"left/accuracy", 0.8022}, {"right/accuracy", 0.812}};
  }
  if (benchmark == "synthetic-regression") {
    return {
        {"task_0/mae", 0.5483400324721965},  {"task_1/mae", 0.03551529033039379},
        {"task_2/mae", 17.746480373220578},  {"task_3/mae", 6.292259393572049},
        {"task_4/mae", 0.01954223040946115}, {"task_5/mae", 15.933818008511228},
        {"task_6/mae", 0.11411902210547197}, {"task_7/mae", 0.008072371343890635},
        {"task_8/mae", 1.5449006667925151},  {"task_9/mae", 4.163025569322812},
    };
  }
  return {};
}

}  // namespace bayesagg
