#include "bayesagg/io/problem.h"

#include "bayesagg/core/files.h"
#include "bayesagg/core/json_checks.h"
#include "bayesagg/core/text.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <sstream>

namespace bayesagg {
namespace {

using nlohmann::json;

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  return os.str() + "]";
}

const json& field(const json& obj, const std::string& key, const std::string& where) {
  TORCH_CHECK(obj.is_object(), where, ": expected an object");
  const auto it = obj.find(key);
  TORCH_CHECK(it != obj.end(), where.empty() ? "" : where + ".", key, ": missing");
  return *it;
}

double number(const json& j, const std::string& where) {
  TORCH_CHECK(j.is_number(), where, ": expected a number");
  const double v = j.get<double>();
  TORCH_CHECK(std::isfinite(v), where, ": must be finite, got ", v);
  return v;
}

/// Shape of a nested array (following first elements).
std::vector<int64_t> shape_of(const json& j) {
  std::vector<int64_t> s;
  const json* cur = &j;
  while (cur->is_array()) {
    s.push_back(static_cast<int64_t>(cur->size()));
    if (cur->empty()) break;
    cur = &(*cur)[0];
  }
  return s;
}

void flatten(const json& j, const std::vector<int64_t>& shape, size_t depth, bool integral,
             std::vector<double>& out, const std::string& where) {
  if (depth == shape.size()) {
    TORCH_CHECK(j.is_number(), where, ": expected a number, got ", j.type_name());
    if (integral) {
      TORCH_CHECK(j.is_number_integer() ||
                      (j.is_number_float() && std::floor(j.get<double>()) == j.get<double>()),
                  where, ": expected an integer, got ", excerpt(j.dump()));
    }
    const double v = j.get<double>();
    TORCH_CHECK(std::isfinite(v), where, ": contains a non-finite number");
    out.push_back(v);
    return;
  }
  TORCH_CHECK(j.is_array() && static_cast<int64_t>(j.size()) == shape[depth], where,
              ": expected shape ", shape_str(shape), ", got ", shape_str(shape_of(j)));
  for (const auto& e : j) flatten(e, shape, depth + 1, integral, out, where);
}

at::Tensor tensor(const json& j, const std::vector<int64_t>& shape, const std::string& where,
                  bool integral = false) {
  std::vector<double> values;
  flatten(j, shape, 0, integral, values, where);
  at::Tensor t = at::tensor(values, at::kDouble).reshape(shape);
  return integral ? t.to(at::kLong) : t;
}

int64_t positive_int(const json& j, const std::string& where) {
  TORCH_CHECK(j.is_number_integer() && j.get<int64_t>() >= 1, where,
              ": expected a positive integer, got ", excerpt(j.dump()));
  return j.get<int64_t>();
}

at::Tensor read_labels(const json& j, const TaskGroup& g, int64_t rows, const std::string& where) {
  at::Tensor l = g.type == GroupType::multiclass ? tensor(j, {rows}, where, true)
                                                 : tensor(j, {rows, g.outputs}, where);
  check_labels(g, l, rows, where);
  return l;
}

json to_json(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous();
  if (c.dim() == 0) return c.item<double>();
  json arr = json::array();
  for (int64_t i = 0; i < c.size(0); ++i) arr.push_back(to_json(c[i]));
  return arr;
}

/// `t` as JSON; throws naming `where` when a value is not finite (JSON would hold `null`).
json finite_json(const at::Tensor& t, const std::string& where) {
  const at::Tensor flat = t.reshape({-1}).to(at::kDouble);
  const at::Tensor bad = at::logical_not(at::isfinite(flat)).nonzero();
  TORCH_CHECK(bad.size(0) == 0, "the solution is not finite: ", where, " has ", bad.size(0),
              " non-finite value(s) (the first: ",
              bad.size(0) > 0 ? flat[bad[0][0].item<int64_t>()].item<double>() : 0.0,
              "); nothing was written");
  return to_json(t);
}

}  // namespace

Problem parse_problem(const std::string& text) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    TORCH_CHECK(false, "not valid JSON: ", excerpt(e.what()));
  } catch (const json::exception& e) {
    // e.g. a number that overflows to infinity ("1e999"): JSON numbers must be finite.
    TORCH_CHECK(false, "not valid JSON (numbers must be finite): ", excerpt(e.what()));
  }
  check_unique_json_keys(text, "problem");
  TORCH_CHECK(root.is_object(), "problem: expected a JSON object at the top level");
  Problem p;
  if (root.contains("name") && root["name"].is_string()) p.name = root["name"].get<std::string>();
  const json& hyper = field(root, "hyper", "");
  p.gamma_regression = number(field(hyper, "gamma_reg", "hyper"), "hyper.gamma_reg");
  p.gamma_classification = number(field(hyper, "gamma_cls", "hyper"), "hyper.gamma_cls");
  p.s_regression = number(field(hyper, "sqrt_power_reg", "hyper"), "hyper.sqrt_power_reg");
  p.s_classification = number(field(hyper, "sqrt_power_cls", "hyper"), "hyper.sqrt_power_cls");
  TORCH_CHECK(p.gamma_regression > 0, "hyper.gamma_reg: must be > 0, got ", p.gamma_regression);
  TORCH_CHECK(p.gamma_classification > 0, "hyper.gamma_cls: must be > 0, got ",
              p.gamma_classification);
  TORCH_CHECK(p.s_regression >= 0, "hyper.sqrt_power_reg: must be >= 0");
  TORCH_CHECK(p.s_classification >= 0, "hyper.sqrt_power_cls: must be >= 0");
  if (hyper.contains("obs_noise")) {
    const double noise = number(hyper["obs_noise"], "hyper.obs_noise");
    TORCH_CHECK(noise == 1.0, "hyper.obs_noise: only 1.0 is supported (the reference's value), got ",
                noise);
  }
  p.mc_samples = positive_int(field(hyper, "num_mc_samples", "hyper"), "hyper.num_mc_samples");
  TORCH_CHECK(p.mc_samples <= kMaxProblemMcSamples, "hyper.num_mc_samples: at most ",
              kMaxProblemMcSamples, ", got ", p.mc_samples);

  const json& feats = field(root, "features", "");
  const auto fshape = shape_of(feats);
  TORCH_CHECK(fshape.size() == 2 && fshape[0] >= 1 && fshape[1] >= 1,
              "features: expected a non-empty [B][d] array, got shape ", shape_str(fshape));
  const int64_t b = fshape[0], d = fshape[1];
  p.features = tensor(feats, {b, d}, "features");
  const json& full = field(root, "full_train_features", "");
  const auto nshape = shape_of(full);
  TORCH_CHECK(nshape.size() == 2 && nshape[0] >= 1,
              "full_train_features: expected a non-empty [N][d] array, got shape ",
              shape_str(nshape));
  const int64_t n = nshape[0];
  p.full_features = tensor(full, {n, d}, "full_train_features");

  const json& groups = field(root, "groups", "");
  TORCH_CHECK(groups.is_array() && !groups.empty(), "groups: expected a non-empty array");
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string w = "groups[" + std::to_string(i) + "]";
    const json& g = groups[i];
    const json& type = field(g, "type", w);
    TORCH_CHECK(type.is_string(), w, ".type: expected a string");
    GroupType gt;
    try {
      gt = parse_group_type(type.get<std::string>());
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, w, ".type: ", e.msg());
    }
    const int64_t o = positive_int(field(g, "n_outputs", w), w + ".n_outputs");
    TORCH_CHECK(gt != GroupType::multiclass || o >= 2, w,
                ".n_outputs: a multiclass group needs at least 2 classes, got ", o);
    TaskGroup group(gt, o);
    Head head;
    head.weight = tensor(field(g, "weight", w), {o, d}, w + ".weight");
    head.bias = tensor(field(g, "bias", w), {o}, w + ".bias");
    p.labels.push_back(read_labels(field(g, "labels", w), group, b, w + ".labels"));
    p.full_labels.push_back(
        read_labels(field(g, "full_train_labels", w), group, n, w + ".full_train_labels"));
    p.groups.push_back(group);
    p.heads.push_back(head);
  }
  return p;
}

Problem load_problem(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return parse_problem(text);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, path, ": ", e.msg());
  }
}

BayesAggOptions options_for(const Problem& p) {
  return BayesAggOptions()
      .gamma_regression(p.gamma_regression)
      .gamma_classification(p.gamma_classification)
      .s_regression(p.s_regression)
      .s_classification(p.s_classification)
      .mc_samples(p.mc_samples);
}

void check_problem_size(const Problem& p, int64_t mc_samples) {
  // Samples are drawn in chunks of bounded memory (moments.cpp): their count bounds the time.
  TORCH_CHECK(mc_samples >= 1 && mc_samples <= kMaxProblemMcSamples, "Monte-Carlo samples: 1 to ",
              kMaxProblemMcSamples, ", got ", mc_samples);
}

ProblemSolution solve_problem(const Problem& p, const BayesAggOptions& options) {
  check_problem_size(p, options.mc_samples());
  BayesAgg agg(p.groups, p.features.size(1), options);
  ProblemSolution s;
  s.full_data = agg.full_data_posteriors(agg.statistics(p.full_features, p.full_labels, p.heads),
                                         p.heads);
  s.aggregation = agg.aggregate(s.full_data, p.features, p.labels, p.heads);
  return s;
}

std::string solution_json(const Problem& p, const ProblemSolution& s) {
  json groups = json::array();
  for (size_t g = 0; g < p.groups.size(); ++g) {
    const auto& ga = s.aggregation.groups[g];
    const bool reg = p.groups[g].type == GroupType::regression;
    const auto layout = [&](const at::Tensor& t) {
      // regression [o, d] (the covariance diagonal is shared: repeat it per output);
      // classification: flattened rows [w | b].
      if (reg) return t.dim() == 2 && t.size(0) == 1 ? t.expand({p.groups[g].outputs, t.size(1)}) : t;
      return t.reshape({-1});
    };
    const std::string w = "groups[" + std::to_string(g) + "].";
    json jg;
    jg["grad_mean"] = finite_json(ga.grad_mean, w + "grad_mean");
    jg["grad_var"] = finite_json(ga.grad_var, w + "grad_var");
    jg["posterior_mean"] = finite_json(layout(ga.posterior.mean), w + "posterior_mean");
    jg["posterior_cov_diag"] =
        finite_json(layout(ga.posterior.covariance_diagonal()), w + "posterior_cov_diag");
    jg["full_data_posterior_mean"] =
        finite_json(layout(s.full_data[g].mean), w + "full_data_posterior_mean");
    groups.push_back(jg);
  }
  json out;
  out["groups"] = groups;
  out["dL_dh"] = finite_json(s.aggregation.dL_dh, "dL_dh");
  return out.dump(1) + "\n";
}

}  // namespace bayesagg
