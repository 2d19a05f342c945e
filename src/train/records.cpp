#include "bayesagg/train/records.h"
#include "bayesagg/core/text.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>

namespace bayesagg {
namespace {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

/// Shortest text that reads back to the same double; `nan`/`inf` spelled out.
std::string fmt(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream os;
  os << std::setprecision(17) << v;
  std::string s = os.str();
  // Prefer a shorter representation when it round-trips.
  for (int p = 6; p < 17; ++p) {
    std::ostringstream o2;
    o2 << std::setprecision(p) << v;
    if (std::stod(o2.str()) == v) return o2.str();
  }
  return s;
}

/// JSON cannot hold NaN: such values become null (and read back as NaN).
ojson num(double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); }
double get_num(const json& j) {
  return j.is_null() ? std::numeric_limits<double>::quiet_NaN() : j.get<double>();
}

ojson metrics_json(const MetricMap& m) {
  ojson j = ojson::object();
  for (const auto& [k, v] : m) j[k] = num(v);
  return j;
}
MetricMap metrics_from(const json& j) {
  MetricMap m;
  for (const auto& [k, v] : j.items()) m[k] = get_num(v);
  return m;
}

ojson reliability_json(const TaskReliability& d) {
  ojson j;
  j["task"] = d.task;
  j["binary"] = d.binary;
  j["count"] = d.bins.count;
  ojson conf = ojson::array(), out = ojson::array();
  for (double v : d.bins.confidence) conf.push_back(num(v));
  for (double v : d.bins.outcome) out.push_back(num(v));
  j["confidence"] = conf;
  j["outcome"] = out;
  return j;
}
TaskReliability reliability_from(const json& j) {
  TaskReliability d;
  d.task = j.at("task").get<std::string>();
  d.binary = j.at("binary").get<bool>();
  d.bins.count = j.at("count").get<std::vector<int64_t>>();
  for (const auto& v : j.at("confidence")) d.bins.confidence.push_back(get_num(v));
  for (const auto& v : j.at("outcome")) d.bins.outcome.push_back(get_num(v));
  TORCH_CHECK(d.bins.confidence.size() == d.bins.count.size() &&
                  d.bins.outcome.size() == d.bins.count.size(),
              "the reliability diagram of '", d.task, "' has bins of different lengths");
  return d;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string split_task(const std::string& key, std::string* metric) {
  const auto slash = key.rfind('/');
  if (metric) *metric = slash == std::string::npos ? "" : key.substr(slash + 1);
  return slash == std::string::npos ? key : key.substr(0, slash);
}

}  // namespace

void RunHistory::truncate(int64_t epoch) {
  epochs.erase(std::remove_if(epochs.begin(), epochs.end(),
                              [&](const EpochRecord& r) { return r.epoch > epoch; }),
               epochs.end());
  steps.erase(std::remove_if(steps.begin(), steps.end(),
                             [&](const StepRecord& r) { return r.epoch > epoch; }),
              steps.end());
  if (best_epoch > epoch) {
    best_epoch = 0;
    best_reliability.clear();
  }
}

const EpochRecord& RunHistory::best() const {
  for (const auto& r : epochs) {
    if (r.epoch == best_epoch) return r;
  }
  TORCH_CHECK(false, "the run has no best epoch yet");
}

std::string history_to_json(const RunHistory& h) {
  ojson j;
  j["best_epoch"] = h.best_epoch;
  j["wall_seconds"] = h.wall_seconds;
  ojson epochs = ojson::array();
  for (const auto& r : h.epochs) {
    ojson e;
    e["epoch"] = r.epoch;
    e["lr"] = r.lr;
    e["train_seconds"] = r.train_seconds;
    e["eval_seconds"] = r.eval_seconds;
    ojson loss = ojson::array();
    for (double v : r.train_loss) loss.push_back(num(v));
    e["train_loss"] = loss;
    e["val"] = metrics_json(r.val);
    e["test"] = metrics_json(r.test);
    e["score"] = {num(r.score.primary), num(r.score.secondary)};
    epochs.push_back(e);
  }
  j["epochs"] = epochs;
  ojson steps = ojson::array();
  for (const auto& s : h.steps) {
    ojson e;
    e["e"] = s.epoch;
    e["s"] = s.step;
    e["lr"] = s.lr;
    ojson loss = ojson::array();
    for (double v : s.losses) loss.push_back(num(v));
    e["l"] = loss;
    e["t"] = num(s.trunk_grad_norm);
    e["h"] = num(s.head_grad_norm);
    ojson d = ojson::object();
    for (const auto& [k, v] : s.diagnostics) d[k] = num(v);
    e["d"] = d;
    steps.push_back(e);
  }
  j["steps"] = steps;
  ojson reliability = ojson::array();
  for (const auto& d : h.best_reliability) reliability.push_back(reliability_json(d));
  j["best_reliability"] = reliability;
  // Strings from the user (paths, names) need not be UTF-8; JSON must be: invalid bytes become
  // U+FFFD.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

RunHistory history_from_json(const std::string& text) {
  RunHistory h;
  json j;
  try {
    j = json::parse(text);
    h.best_epoch = j.at("best_epoch").get<int64_t>();
    h.wall_seconds = j.at("wall_seconds").get<double>();
    for (const auto& e : j.at("epochs")) {
      EpochRecord r;
      r.epoch = e.at("epoch").get<int64_t>();
      r.lr = e.at("lr").get<double>();
      r.train_seconds = e.at("train_seconds").get<double>();
      r.eval_seconds = e.at("eval_seconds").get<double>();
      for (const auto& v : e.at("train_loss")) r.train_loss.push_back(get_num(v));
      r.val = metrics_from(e.at("val"));
      r.test = metrics_from(e.at("test"));
      r.score.primary = get_num(e.at("score").at(0));
      r.score.secondary = get_num(e.at("score").at(1));
      h.epochs.push_back(std::move(r));
    }
    for (const auto& e : j.at("steps")) {
      StepRecord s;
      s.epoch = e.at("e").get<int64_t>();
      s.step = e.at("s").get<int64_t>();
      s.lr = e.at("lr").get<double>();
      for (const auto& v : e.at("l")) s.losses.push_back(get_num(v));
      s.trunk_grad_norm = get_num(e.at("t"));
      s.head_grad_norm = get_num(e.at("h"));
      for (const auto& [k, v] : e.at("d").items()) s.diagnostics[k] = get_num(v);
      h.steps.push_back(std::move(s));
    }
    if (j.contains("best_reliability")) {
      for (const auto& d : j.at("best_reliability")) {
        h.best_reliability.push_back(reliability_from(d));
      }
    }
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "the checkpoint's run history is unreadable: ", excerpt(e.what()));
  }
  return h;
}

std::string summary_to_json(const TrainSummary& s) {
  ojson j;
  j["benchmark"] = s.benchmark;
  j["method"] = s.method;
  j["seed"] = s.seed;
  j["epochs"] = s.epochs;
  j["epochs_completed"] = s.epochs_completed;
  j["best_epoch"] = s.best_epoch;
  j["n_train"] = s.n_train;
  j["n_val"] = s.n_val;
  j["n_test"] = s.n_test;
  j["tasks"] = s.tasks;
  j["selection"] = s.selection;
  if (!s.stl_task.empty()) j["stl_task"] = s.stl_task;
  j["val"] = metrics_json(s.val);
  j["test"] = metrics_json(s.test);
  j["delta_m"] = s.delta_m ? num(*s.delta_m) : ojson(nullptr);
  j["stl_baseline"] = metrics_json(s.stl_baseline);
  j["stl_source"] = s.stl_source;
  if (!s.stl_note.empty()) j["stl_note"] = s.stl_note;
  j["wall_seconds"] = s.wall_seconds;
  j["epoch_train_seconds"] = s.epoch_train_seconds;
  j["epoch_eval_seconds"] = s.epoch_eval_seconds;
  // run_dir and stl_source are paths, which need not be UTF-8 (invalid bytes become U+FFFD).
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

TrainSummary summary_from_json(const std::string& text) {
  TrainSummary s;
  try {
    const json j = json::parse(text);
    s.benchmark = j.at("benchmark").get<std::string>();
    s.method = j.at("method").get<std::string>();
    s.seed = j.at("seed").get<uint64_t>();
    s.epochs = j.at("epochs").get<int64_t>();
    s.epochs_completed = j.value("epochs_completed", s.epochs);
    s.best_epoch = j.at("best_epoch").get<int64_t>();
    s.n_train = j.at("n_train").get<int64_t>();
    s.n_val = j.at("n_val").get<int64_t>();
    s.n_test = j.at("n_test").get<int64_t>();
    s.tasks = j.at("tasks").get<std::vector<std::string>>();
    s.selection = j.value("selection", "");
    s.stl_task = j.value("stl_task", "");
    s.val = metrics_from(j.at("val"));
    s.test = metrics_from(j.at("test"));
    if (!j.at("delta_m").is_null()) s.delta_m = j.at("delta_m").get<double>();
    if (j.contains("stl_baseline")) s.stl_baseline = metrics_from(j.at("stl_baseline"));
    s.stl_source = j.value("stl_source", "");
    s.stl_note = j.value("stl_note", "");
    s.wall_seconds = j.at("wall_seconds").get<double>();
    if (j.contains("epoch_train_seconds")) {
      s.epoch_train_seconds = j.at("epoch_train_seconds").get<std::vector<double>>();
    }
    if (j.contains("epoch_eval_seconds")) {
      s.epoch_eval_seconds = j.at("epoch_eval_seconds").get<std::vector<double>>();
    }
  } catch (const json::exception& e) {
    TORCH_CHECK(false, "summary.json is unreadable: ", excerpt(e.what()));
  }
  return s;
}

std::string metrics_csv(const RunHistory& h, const std::vector<std::string>& tasks) {
  std::ostringstream os;
  os << "epoch,split,task,metric,value\n";
  for (const auto& r : h.epochs) {
    for (size_t t = 0; t < r.train_loss.size(); ++t) {
      const std::string task = t < tasks.size() ? tasks[t] : "task_" + std::to_string(t);
      os << r.epoch << ",train," << task << ",loss," << fmt(r.train_loss[t]) << "\n";
    }
    for (const auto* split : {&r.val, &r.test}) {
      const char* name = split == &r.val ? "val" : "test";
      for (const auto& [key, value] : *split) {
        std::string metric;
        const std::string task = split_task(key, &metric);
        os << r.epoch << "," << name << "," << task << "," << metric << "," << fmt(value) << "\n";
      }
    }
  }
  return os.str();
}

std::string steps_csv(const RunHistory& h, const std::vector<std::string>& tasks) {
  std::set<std::string> diag;
  for (const auto& s : h.steps) {
    for (const auto& [k, v] : s.diagnostics) diag.insert(k);
  }
  std::ostringstream os;
  os << "epoch,step,lr";
  for (const auto& t : tasks) os << ",loss_" << t;
  os << ",trunk_grad_norm,head_grad_norm";
  for (const auto& d : diag) os << "," << d;
  os << "\n";
  for (const auto& s : h.steps) {
    os << s.epoch << "," << s.step << "," << fmt(s.lr);
    for (size_t t = 0; t < tasks.size(); ++t) {
      os << "," << (t < s.losses.size() ? fmt(s.losses[t]) : "");
    }
    os << "," << fmt(s.trunk_grad_norm) << "," << fmt(s.head_grad_norm);
    for (const auto& d : diag) {
      const auto it = s.diagnostics.find(d);
      os << "," << (it == s.diagnostics.end() ? "" : fmt(it->second));
    }
    os << "\n";
  }
  return os.str();
}

namespace {

const char* const kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

/// One panel of the plot at (x0, y0) of size w × h.
void panel(std::ostringstream& os, double x0, double y0, double w, double h,
           const std::string& title, const std::vector<Series>& series, int64_t max_epoch) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (const auto& s : series) {
    for (const auto& p : s.points) {
      if (!std::isfinite(p.second)) continue;
      lo = std::min(lo, p.second);
      hi = std::max(hi, p.second);
    }
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  // Values spanning more than two decades (e.g. synthetic-regression's MAEs from 0.01 to 20)
  // are drawn on a log10 axis.
  const bool log_axis = lo > 0 && hi / lo > 100.0;
  const auto tr = [&](double v) { return log_axis ? std::log10(v) : v; };
  lo = tr(lo);
  hi = tr(hi);
  if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
  const double pad = 0.05 * (hi - lo);
  lo -= pad;
  hi += pad;
  const double left = x0 + 60, right = x0 + w - 10, top = y0 + 30, bottom = y0 + h - 40;
  const auto px = [&](double e) {
    return max_epoch <= 1 ? (left + right) / 2
                          : left + (e - 1) / static_cast<double>(max_epoch - 1) * (right - left);
  };
  // py takes axis units (log10 of the value on a log axis).
  const auto py = [&](double v) { return bottom - (v - lo) / (hi - lo) * (bottom - top); };
  os << "<text x=\"" << (left + right) / 2 << "\" y=\"" << y0 + 18
     << "\" text-anchor=\"middle\" font-size=\"14\">" << xml_escape(title)
     << (log_axis ? " (log scale)" : "") << "</text>\n";
  os << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << right - left
     << "\" height=\"" << bottom - top << "\" fill=\"none\" stroke=\"#444\"/>\n";
  for (int i = 0; i <= 4; ++i) {
    const double v = lo + (hi - lo) * i / 4.0;
    const double y = py(v);
    os << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << right << "\" y2=\"" << y
       << "\" stroke=\"#ddd\"/>\n";
    os << "<text x=\"" << left - 5 << "\" y=\"" << y + 4
       << "\" text-anchor=\"end\" font-size=\"11\">" << std::setprecision(3)
       << (log_axis ? std::pow(10.0, v) : v) << "</text>\n";
  }
  const int64_t step = std::max<int64_t>(1, max_epoch / 10);
  for (int64_t e = 1; e <= max_epoch; e += step) {
    os << "<text x=\"" << px(static_cast<double>(e)) << "\" y=\"" << bottom + 15
       << "\" text-anchor=\"middle\" font-size=\"11\">" << e << "</text>\n";
  }
  os << "<text x=\"" << (left + right) / 2 << "\" y=\"" << bottom + 32
     << "\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kPalette[i % 10];
    const char* dash = (i / 10) % 2 ? " stroke-dasharray=\"5,3\"" : "";
    std::ostringstream pts;
    for (const auto& p : series[i].points) {
      if (!std::isfinite(p.second) || (log_axis && p.second <= 0)) continue;
      pts << px(p.first) << "," << py(tr(p.second)) << " ";
    }
    os << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\"" << dash
       << " points=\"" << pts.str() << "\"/>\n";
    for (const auto& p : series[i].points) {
      if (!std::isfinite(p.second) || (log_axis && p.second <= 0)) continue;
      os << "<circle cx=\"" << px(p.first) << "\" cy=\"" << py(tr(p.second))
         << "\" r=\"2\" fill=\"" << color << "\"/>\n";
    }
  }
}

void legend(std::ostringstream& os, double x, double y, const std::vector<Series>& series) {
  for (size_t i = 0; i < series.size(); ++i) {
    const double yy = y + 16.0 * static_cast<double>(i);
    const char* dash = (i / 10) % 2 ? " stroke-dasharray=\"5,3\"" : "";
    os << "<line x1=\"" << x << "\" y1=\"" << yy << "\" x2=\"" << x + 20 << "\" y2=\"" << yy
       << "\" stroke=\"" << kPalette[i % 10] << "\" stroke-width=\"2\"" << dash << "/>\n";
    os << "<text x=\"" << x + 25 << "\" y=\"" << yy + 4 << "\" font-size=\"11\">"
       << xml_escape(series[i].name) << "</text>\n";
  }
}

}  // namespace

std::string curves_svg(const RunHistory& h, const std::vector<std::string>& tasks,
                       const std::string& title) {
  std::vector<Series> metrics, losses;
  std::map<std::string, size_t> index;
  int64_t max_epoch = 1;
  for (const auto& r : h.epochs) {
    max_epoch = std::max(max_epoch, r.epoch);
    for (const auto& [key, value] : r.val) {
      if (is_calibration_metric(key)) continue;  // calibration.svg shows them
      auto it = index.find(key);
      if (it == index.end()) {
        it = index.emplace(key, metrics.size()).first;
        metrics.push_back({key, {}});
      }
      metrics[it->second].points.emplace_back(static_cast<double>(r.epoch), value);
    }
    for (size_t t = 0; t < r.train_loss.size(); ++t) {
      if (losses.size() <= t) {
        losses.push_back({t < tasks.size() ? tasks[t] : "task_" + std::to_string(t), {}});
      }
      losses[t].points.emplace_back(static_cast<double>(r.epoch), r.train_loss[t]);
    }
  }
  const double pw = 460, ph = 340, legend_w = 200;
  const size_t rows = std::max(metrics.size(), losses.size());
  const double height = std::max(ph + 50, 60.0 + 16.0 * static_cast<double>(rows));
  const double width = 2 * (pw + legend_w);
  std::ostringstream os;
  os << std::setprecision(6);
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" viewBox=\"0 0 " << width << " " << height
     << "\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  os << "<text x=\"10\" y=\"" << height - 8 << "\" font-size=\"12\" fill=\"#555\">"
     << xml_escape(title) << "</text>\n";
  panel(os, 0, 10, pw, ph, "validation metrics", metrics, max_epoch);
  legend(os, pw + 5, 50, metrics);
  panel(os, pw + legend_w, 10, pw, ph, "training loss (epoch mean)", losses, max_epoch);
  legend(os, 2 * pw + legend_w + 5, 50, losses);
  os << "</svg>\n";
  return os.str();
}

namespace {

/// One reliability diagram with its top-left corner at (x0, y0): the plot [0, 1]² of
/// `kPlot` px, and below it the share of items per bin.
constexpr double kPlot = 200, kShare = 36;

void reliability_panel(std::ostringstream& os, double x0, double y0, const TaskReliability& d) {
  const ReliabilityBins& r = d.bins;
  const double left = x0 + 50, top = y0 + 35, right = left + kPlot, bottom = top + kPlot;
  const double share_top = bottom + 8, share_bottom = share_top + kShare;
  const auto px = [&](double c) { return left + c * kPlot; };
  const auto py = [&](double v) { return bottom - v * kPlot; };
  const double ece = r.ece();
  std::ostringstream head;
  head << d.task << ": ECE ";
  if (std::isfinite(ece)) head << std::fixed << std::setprecision(4) << ece;
  else head << "n/a";
  head << " (n = " << r.total() << ")";
  os << "<text x=\"" << (left + right) / 2 << "\" y=\"" << y0 + 20
     << "\" text-anchor=\"middle\" font-size=\"13\">" << xml_escape(head.str()) << "</text>\n";
  for (int i = 0; i <= 5; ++i) {
    const double v = i / 5.0;
    os << "<line x1=\"" << left << "\" y1=\"" << py(v) << "\" x2=\"" << right << "\" y2=\""
       << py(v) << "\" stroke=\"#eee\"/>\n";
    os << "<text x=\"" << left - 5 << "\" y=\"" << py(v) + 4
       << "\" text-anchor=\"end\" font-size=\"10\">" << v << "</text>\n";
    os << "<text x=\"" << px(v) << "\" y=\"" << share_bottom + 13
       << "\" text-anchor=\"middle\" font-size=\"10\">" << v << "</text>\n";
  }
  int64_t most = 0;
  for (int64_t c : r.count) most = std::max(most, c);
  const double w = kPlot / static_cast<double>(std::max<int64_t>(1, r.bins()));
  for (int64_t b = 0; b < r.bins(); ++b) {
    const auto i = static_cast<size_t>(b);
    if (r.count[i] == 0) continue;
    const double x = px(static_cast<double>(b) / static_cast<double>(r.bins()));
    const double acc = r.outcome[i], conf = r.confidence[i];
    os << "<rect x=\"" << x << "\" y=\"" << py(acc) << "\" width=\"" << w << "\" height=\""
       << bottom - py(acc) << "\" fill=\"#1f77b4\" stroke=\"white\"/>\n";
    os << "<rect x=\"" << x << "\" y=\"" << py(std::max(acc, conf)) << "\" width=\"" << w
       << "\" height=\"" << std::fabs(py(acc) - py(conf))
       << "\" fill=\"#d62728\" fill-opacity=\"0.35\" stroke=\"#d62728\" stroke-width=\"0.5\"/>\n";
    const double hh = kShare * static_cast<double>(r.count[i]) / static_cast<double>(most);
    os << "<rect x=\"" << x << "\" y=\"" << share_bottom - hh << "\" width=\"" << w
       << "\" height=\"" << hh << "\" fill=\"#999\" stroke=\"white\"/>\n";
  }
  os << "<line x1=\"" << left << "\" y1=\"" << bottom << "\" x2=\"" << right << "\" y2=\"" << top
     << "\" stroke=\"#444\" stroke-dasharray=\"4,3\"/>\n";
  os << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << kPlot << "\" height=\""
     << kPlot << "\" fill=\"none\" stroke=\"#444\"/>\n";
  os << "<rect x=\"" << left << "\" y=\"" << share_top << "\" width=\"" << kPlot
     << "\" height=\"" << kShare << "\" fill=\"none\" stroke=\"#bbb\"/>\n";
  os << "<text x=\"" << (left + right) / 2 << "\" y=\"" << share_bottom + 28
     << "\" text-anchor=\"middle\" font-size=\"11\">"
     << (d.binary ? "predicted P(positive)" : "confidence (max probability)") << "</text>\n";
  const double ly = (top + bottom) / 2;
  os << "<text x=\"" << x0 + 14 << "\" y=\"" << ly << "\" text-anchor=\"middle\" "
     << "font-size=\"11\" transform=\"rotate(-90 " << x0 + 14 << " " << ly << ")\">"
     << (d.binary ? "fraction positive" : "accuracy") << "</text>\n";
}

}  // namespace

std::string calibration_svg(const std::vector<TaskReliability>& diagrams,
                            const std::string& title) {
  TORCH_CHECK(!diagrams.empty(), "calibration_svg: no reliability diagram to draw");
  const double pw = kPlot + 70, ph = 35 + kPlot + 8 + kShare + 40;
  const auto n = static_cast<int64_t>(diagrams.size());
  const int64_t cols = std::min<int64_t>(n, 5), rows = (n + cols - 1) / cols;
  const double width = std::max(pw * static_cast<double>(cols), 560.0);
  const double height = ph * static_cast<double>(rows) + 64;
  std::ostringstream os;
  os << std::setprecision(6);
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" viewBox=\"0 0 " << width << " " << height
     << "\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (int64_t k = 0; k < n; ++k) {
    reliability_panel(os, pw * static_cast<double>(k % cols), 5 + ph * static_cast<double>(k / cols),
                      diagrams[static_cast<size_t>(k)]);
  }
  os << "<text x=\"10\" y=\"" << height - 40 << "\" font-size=\"12\" fill=\"#555\">"
     << xml_escape(title) << "</text>\n";
  os << "<text x=\"10\" y=\"" << height - 23 << "\" font-size=\"11\" fill=\"#555\">"
     << diagrams.front().bins.bins()
     << " equal-width bins; dashed: perfect calibration; grey: items per bin.</text>\n";
  os << "<text x=\"10\" y=\"" << height - 8 << "\" font-size=\"11\" fill=\"#555\">Blue: "
        "accuracy (binary: fraction of positives); red: gap to the bin's mean confidence.</text>\n";
  os << "</svg>\n";
  return os.str();
}

std::string format_summary_table(const TrainSummary& s) {
  std::ostringstream os;
  os << s.benchmark << " / " << s.method << " / seed " << s.seed << ": best epoch "
     << s.best_epoch << " of " << s.epochs_completed;
  if (!s.completed()) os << " (stopped; " << s.epochs << " planned)";
  os << ", selected on " << s.selection << "\n";
  std::vector<std::string> keys;
  for (const auto& [k, v] : s.test) keys.push_back(k);
  size_t task_w = 4, metric_w = 6;
  for (const auto& k : keys) {
    std::string metric;
    const std::string task = split_task(k, &metric);
    task_w = std::max(task_w, task.size());
    metric_w = std::max(metric_w, metric.size());
  }
  const bool stl = !s.stl_baseline.empty();
  os << std::left << std::setw(static_cast<int>(task_w) + 2) << "task"
     << std::setw(static_cast<int>(metric_w) + 2) << "metric" << std::right << std::setw(10)
     << "val" << std::setw(10) << "test";
  if (stl) os << std::setw(10) << "STL";
  os << "\n";
  const auto cell = [](const MetricMap& m, const std::string& k) {
    const auto it = m.find(k);
    if (it == m.end()) return std::string("-");
    std::ostringstream c;
    c << std::fixed << std::setprecision(4) << it->second;
    return c.str();
  };
  for (const auto& k : keys) {
    std::string metric;
    const std::string task = split_task(k, &metric);
    os << std::left << std::setw(static_cast<int>(task_w) + 2) << task
       << std::setw(static_cast<int>(metric_w) + 2) << metric << std::right << std::setw(10)
       << cell(s.val, k) << std::setw(10) << cell(s.test, k);
    if (stl) os << std::setw(10) << cell(s.stl_baseline, k);
    os << "\n";
  }
  if (!s.stl_task.empty()) {
    os << "single-task run of '" << s.stl_task << "' (delta_m does not apply)\n";
  } else if (s.delta_m) {
    os << "delta_m% (test, vs " << s.stl_baseline.size() << " single-task baselines from "
       << s.stl_source << "): " << std::fixed << std::setprecision(2) << *s.delta_m
       << "  (lower is better; negative beats single-task learning)\n";
  } else if (!s.stl_note.empty()) {
    os << "delta_m: n/a (" << s.stl_note << ")\n";
  } else {
    os << "delta_m: n/a (no single-task baselines stored for " << s.benchmark
       << "; pass --stl-baseline FILE with {\"task/metric\": value}, e.g. from "
          "`bayesagg train --method stl`)\n";
  }
  os << "wall time " << std::fixed << std::setprecision(1) << s.wall_seconds << " s; run folder "
     << s.run_dir << "\n";
  return os.str();
}

}  // namespace bayesagg
