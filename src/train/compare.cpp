#include "bayesagg/train/compare.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/paper/paper.h"
#include "bayesagg/train/trainer.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iterator>
#include <limits>
#include <memory>
#include <numeric>
#include <ostream>
#include <sstream>

namespace bayesagg {
namespace fs = std::filesystem;
namespace {

double mean_of(const std::vector<double>& v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

/// Sample standard deviation (n - 1); NaN below two values.
double std_of(const std::vector<double>& v) {
  if (v.size() < 2) return std::numeric_limits<double>::quiet_NaN();
  const double m = mean_of(v);
  double s = 0.0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "–";
  if (std::fabs(v) < 0.5 * std::pow(10.0, -digits)) v = 0.0;  // no "-0.00"
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

std::string csv_number(double v) {
  if (!std::isfinite(v)) return "";
  std::ostringstream os;
  os << std::setprecision(10) << v;
  return os.str();
}

std::string csv_number(const std::optional<double>& v) {
  return v ? csv_number(*v) : std::string();
}

/// Whether `key` is `<task>/<metric>`.
bool has_metric(const std::string& key, const std::string& metric) {
  const std::string suffix = "/" + metric;
  return key.size() > suffix.size() &&
         key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The mean over the keys of `keys` ending in `/<metric>` of the run's test values; nullopt
/// when there is no such key or the run lacks one.
std::optional<double> task_mean(const CompareRun& r, const std::vector<std::string>& keys,
                                const std::string& metric) {
  std::vector<double> v;
  for (const auto& key : keys) {
    if (!has_metric(key, metric)) continue;
    const auto it = r.test.find(key);
    if (it == r.test.end()) return std::nullopt;
    v.push_back(it->second);
  }
  if (v.empty()) return std::nullopt;
  return mean_of(v);
}

/// Mean and standard deviation over `runs` of `task_mean`; both absent unless every run has it.
void seed_statistics(const std::vector<const CompareRun*>& runs,
                     const std::vector<std::string>& keys, const std::string& metric,
                     std::optional<double>* mean, std::optional<double>* sd) {
  std::vector<double> v;
  for (const CompareRun* r : runs) {
    const auto m = task_mean(*r, keys, metric);
    if (!m) return;
    v.push_back(*m);
  }
  if (v.empty()) return;
  *mean = mean_of(v);
  *sd = std_of(v);
}

/// "mean ± std" with `digits` decimals ("–" when absent; no "±" part without a finite std).
std::string mean_pm_std(const std::optional<double>& mean, const std::optional<double>& sd,
                        int digits) {
  if (!mean) return "–";
  std::string out = fixed(*mean, digits);
  if (sd && std::isfinite(*sd)) out += " ± " + fixed(*sd, digits);
  return out;
}

/// Digits that show a metric's differences: 4 below 10, fewer above.
int digits_for(double v) {
  const double a = std::fabs(v);
  return a < 10 ? 4 : a < 1000 ? 2 : 1;
}

}  // namespace

TrainSummary train_or_reuse(TrainOptions o, const Benchmark* benchmark, std::ostream* log,
                            RunStatus* status) {
  o.validate();
  const fs::path dir = o.resolved_out();
  o.out(dir.string());
  const fs::path summary = dir / "summary.json", config = dir / "config.json",
                 checkpoint = dir / "checkpoint.pt";
  std::error_code ec;
  RunStatus st = RunStatus::trained;
  if (fs::is_regular_file(config, ec)) {
    std::string key;
    try {
      key = first_setting_difference(read_file(config.string()), options_to_json(o));
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "'", config.string(), "': ", e.msg());
    }
    TORCH_CHECK(key.empty(), "'", dir.string(), "' holds a run with another value of '", key,
                "' (see its config.json); choose another output folder or remove it");
    if (fs::is_regular_file(summary, ec)) {
      TrainSummary s;
      bool readable = true;
      try {
        s = summary_from_json(read_file(summary.string()));
      } catch (const c10::Error&) {
        readable = false;
      }
      if (readable && s.completed()) {
        if (status) *status = RunStatus::reused;
        return s;
      }
    }
    if (fs::is_regular_file(checkpoint, ec)) st = RunStatus::resumed;
  }
  o.resume(st == RunStatus::resumed);
  o.overwrite(st != RunStatus::resumed);
  auto trainer = benchmark ? std::make_unique<Trainer>(o, *benchmark) : std::make_unique<Trainer>(o);
  trainer->set_log(log);
  TrainSummary s = trainer->run();
  if (status) *status = st;
  return s;
}

double mean_epoch_train_seconds(const TrainSummary& s) {
  return s.epoch_train_seconds.empty() ? 0.0 : mean_of(s.epoch_train_seconds);
}

SingleTaskResult train_single_tasks(TrainOptions o, const Benchmark* benchmark,
                                    std::ostream* log) {
  o.method("ls");
  o.stl_task("");
  o.validate();
  const std::string out = o.resolved_out();
  SingleTaskResult result;
  nlohmann::ordered_json test = nlohmann::ordered_json::object(),
                         val = nlohmann::ordered_json::object();
  const std::vector<std::string> tasks =
      benchmark ? benchmark->task_names : paper_task_names(o.benchmark());
  for (size_t t = 0; t < tasks.size(); ++t) {
    if (log) {
      *log << "\n=== single-task learning of '" << tasks[t] << "' (" << t + 1 << "/"
           << tasks.size() << ")\n";
    }
    TrainOptions one = o;
    one.stl_task(tasks[t]).out((fs::path(out) / tasks[t]).string());
    RunStatus status = RunStatus::trained;
    const TrainSummary s = train_or_reuse(one, benchmark, log, &status);
    if (log && status == RunStatus::reused) {
      *log << "finished earlier in " << one.out() << "; reused\n";
    }
    // A single-task run's summary holds that task's metrics only.
    TORCH_CHECK(!s.test.empty(), "the single-task run in '", one.out(), "' has no test metrics");
    // The baseline file holds the task metrics of Δm; the result keeps the calibration too.
    for (const auto& [key, value] : s.test) {
      result.test[key] = value;
      if (!is_calibration_metric(key)) test[key] = value;
    }
    for (const auto& [key, value] : s.val) {
      result.val[key] = value;
      if (!is_calibration_metric(key)) val[key] = value;
    }
    result.epoch_seconds += mean_epoch_train_seconds(s);
  }
  nlohmann::ordered_json j;
  j["_note"] = "single-task baselines: each task trained alone (method ls on its loss only), "
               "metrics at its best validation epoch";
  j["_settings"] = nlohmann::ordered_json::parse(options_to_json(o));
  j["test"] = test;
  j["val"] = val;
  result.baseline_file = (fs::path(out) / "stl_baseline.json").string();
  write_file_atomic(result.baseline_file,
                    j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  return result;
}

CompareTable make_compare_table(const std::string& benchmark, const std::vector<std::string>& keys,
                                const std::vector<std::string>& methods,
                                const std::vector<CompareRun>& runs, MetricMap baseline,
                                std::string baseline_source) {
  CompareTable table;
  table.benchmark = benchmark;
  for (const auto& key : keys) {
    (is_calibration_metric(key) ? table.calibration_keys : table.keys).push_back(key);
  }
  std::map<std::string, std::vector<const CompareRun*>> done;
  for (const auto& r : runs) {
    TORCH_CHECK(std::find(methods.begin(), methods.end(), r.method) != methods.end(),
                "a run of method '", r.method, "' that the comparison does not list");
    if (r.error.empty()) done[r.method].push_back(&r);
  }
  // Baselines: STL of this comparison when it ran.
  if (done.count("stl")) {
    MetricMap b;
    for (const auto& [key, value] : done["stl"].front()->test) {
      if (is_calibration_metric(key)) continue;  // Δm is over the task metrics
      std::vector<double> v;
      for (const CompareRun* r : done["stl"]) {
        if (r->test.count(key)) v.push_back(r->test.at(key));
      }
      b[key] = mean_of(v);
    }
    baseline = b;
    baseline_source = "single-task learning in this comparison (mean over " +
                      std::to_string(done["stl"].size()) + " seed(s))";
  }
  for (auto it = baseline.begin(); it != baseline.end();) {
    it = is_calibration_metric(it->first) ? baseline.erase(it) : std::next(it);
  }
  table.baseline = baseline;
  table.baseline_source = baseline.empty() ? "none (Δm absent)" : baseline_source;

  std::optional<double> ls_seconds;
  if (done.count("ls")) {
    std::vector<double> t;
    for (const CompareRun* r : done["ls"]) t.push_back(r->epoch_seconds);
    ls_seconds = mean_of(t);
  }
  for (const auto& m : methods) {
    CompareRow row;
    row.method = m;
    for (const auto& r : runs) {
      if (r.method == m && !r.error.empty()) {
        row.errors.push_back("seed " + std::to_string(r.seed) + ": " + r.error);
      }
    }
    const auto& rs = done[m];
    row.seeds = static_cast<int64_t>(rs.size());
    if (!rs.empty()) {
      std::vector<std::string> all = table.keys;
      all.insert(all.end(), table.calibration_keys.begin(), table.calibration_keys.end());
      for (const auto& key : all) {
        std::vector<double> v;
        for (const CompareRun* r : rs) {
          if (r->test.count(key)) v.push_back(r->test.at(key));
        }
        if (v.size() != rs.size()) continue;  // not reported by this method (e.g. STL's argmax)
        row.mean[key] = mean_of(v);
        row.std[key] = std_of(v);
      }
      if (!baseline.empty()) {
        std::vector<double> dm;
        for (const CompareRun* r : rs) dm.push_back(*delta_m(r->test, baseline));
        row.delta_m = mean_of(dm);
        row.delta_m_std = std_of(dm);
      }
      seed_statistics(rs, table.calibration_keys, "ece", &row.ece, &row.ece_std);
      seed_statistics(rs, table.calibration_keys, "brier", &row.brier, &row.brier_std);
      std::vector<double> t;
      for (const CompareRun* r : rs) t.push_back(r->epoch_seconds);
      if (ls_seconds && *ls_seconds > 0) row.epoch_time_vs_ls = mean_of(t) / *ls_seconds;
    }
    table.rows.push_back(std::move(row));
  }
  // Mean rank over the task-metric keys each row reports (not the calibration keys).
  std::vector<double> rank_sum(table.rows.size(), 0.0);
  std::vector<int64_t> rank_count(table.rows.size(), 0);
  for (const auto& key : table.keys) {
    const bool higher = higher_is_better(key);
    std::vector<std::pair<double, size_t>> vals;
    for (size_t i = 0; i < table.rows.size(); ++i) {
      const auto it = table.rows[i].mean.find(key);
      if (it != table.rows[i].mean.end() && std::isfinite(it->second)) {
        vals.emplace_back(higher ? -it->second : it->second, i);
      }
    }
    std::sort(vals.begin(), vals.end());
    for (size_t a = 0; a < vals.size();) {
      size_t b = a;
      while (b + 1 < vals.size() && vals[b + 1].first == vals[a].first) ++b;
      const double rank = 0.5 * static_cast<double>(a + b) + 1.0;  // ties share the mean rank
      for (size_t c = a; c <= b; ++c) {
        rank_sum[vals[c].second] += rank;
        ++rank_count[vals[c].second];
      }
      a = b + 1;
    }
  }
  for (size_t i = 0; i < table.rows.size(); ++i) {
    if (rank_count[i] > 0) table.rows[i].mean_rank = rank_sum[i] / rank_count[i];
  }
  return table;
}

std::string compare_table_markdown(const CompareTable& t) {
  std::ostringstream os;
  const bool calibration = !t.calibration_keys.empty();
  os << "| method |";
  for (const auto& key : t.keys) os << " " << key << " |";
  if (calibration) os << " ECE ↓ | Brier ↓ |";
  os << " Δm% ↓ | mean rank ↓ | epoch time vs LS | seeds |\n|---|";
  for (size_t i = 0; i < t.keys.size() + (calibration ? 6 : 4); ++i) os << "---:|";
  os << "\n";
  for (const auto& r : t.rows) {
    os << "| " << r.method << " |";
    for (const auto& key : t.keys) {
      const auto it = r.mean.find(key);
      if (it == r.mean.end()) {
        os << " – |";
        continue;
      }
      const int digits = digits_for(it->second);
      os << " " << fixed(it->second, digits);
      const double sd = r.std.at(key);
      if (std::isfinite(sd)) os << " ± " << fixed(sd, digits);
      os << " |";
    }
    if (calibration) {
      os << " " << mean_pm_std(r.ece, r.ece_std, 4) << " | "
         << mean_pm_std(r.brier, r.brier_std, 4) << " |";
    }
    os << " " << (r.delta_m ? fixed(*r.delta_m, 2) : "–");
    if (r.delta_m_std && std::isfinite(*r.delta_m_std)) os << " ± " << fixed(*r.delta_m_std, 2);
    os << " | " << (r.mean_rank ? fixed(*r.mean_rank, 2) : "–") << " | "
       << (r.epoch_time_vs_ls ? fixed(*r.epoch_time_vs_ls, 2) + "×" : "–") << " | " << r.seeds
       << " |\n";
  }
  os << "\nTest metrics at each run's selected epoch, mean ± sample std over seeds. Δm% against "
     << t.baseline_source << " (lower is better). Mean rank over the metric columns a method "
     << "reports" << (calibration ? " (not ECE and Brier)" : "")
     << ". Epoch time: mean training seconds per epoch relative to ls"
     << " (stl: the sum over its single-task runs).\n";
  if (calibration) {
    os << "\nECE ↓: expected calibration error (" << kCalibrationBins
       << " equal-width confidence bins; binary tasks: predicted probability of the positive "
          "class against the fraction of positives), Brier ↓: Brier score; each the mean over the "
       << std::count_if(t.calibration_keys.begin(), t.calibration_keys.end(),
                        [](const std::string& k) { return has_metric(k, "ece"); })
       << " classification task(s) per seed, then mean ± std over seeds (per-task values in "
          "table.csv). Neither enters Δm% nor the mean rank.\n";
  }
  for (const auto& r : t.rows) {
    for (const auto& e : r.errors) os << "\n- " << r.method << " failed, " << e;
  }
  if (std::any_of(t.rows.begin(), t.rows.end(), [](const CompareRow& r) { return !r.errors.empty(); })) {
    os << "\n";
  }
  return os.str();
}

std::string compare_table_csv(const CompareTable& t) {
  std::ostringstream os;
  os << "method,delta_m,delta_m_std,mean_rank,epoch_time_vs_ls,seeds";
  const bool calibration = !t.calibration_keys.empty();
  for (const auto& key : t.keys) os << "," << key << "_mean," << key << "_std";
  if (calibration) {
    os << ",ece,ece_std,brier,brier_std";
    for (const auto& key : t.calibration_keys) os << "," << key << "_mean," << key << "_std";
  }
  os << "\n";
  for (const auto& r : t.rows) {
    os << r.method << "," << csv_number(r.delta_m) << "," << csv_number(r.delta_m_std) << ","
       << csv_number(r.mean_rank) << "," << csv_number(r.epoch_time_vs_ls) << "," << r.seeds;
    const auto key_cells = [&](const std::vector<std::string>& keys) {
      for (const auto& key : keys) {
        const auto it = r.mean.find(key);
        os << "," << (it == r.mean.end() ? "" : csv_number(it->second)) << ","
           << (it == r.mean.end() ? "" : csv_number(r.std.at(key)));
      }
    };
    key_cells(t.keys);
    if (calibration) {
      os << "," << csv_number(r.ece) << "," << csv_number(r.ece_std) << ","
         << csv_number(r.brier) << "," << csv_number(r.brier_std);
      key_cells(t.calibration_keys);
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace bayesagg
