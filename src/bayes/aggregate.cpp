#include "bayesagg/bayes/aggregate.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>

namespace bayesagg {

Weighting parse_weighting(const std::string& name) {
  if (name == "precision") return Weighting::precision;
  if (name == "task") return Weighting::task;
  if (name == "snr") return Weighting::snr;
  if (name == "family") return Weighting::family;
  TORCH_CHECK(false, "unknown weighting '", name, "' (expected precision, task, snr or family)");
}

GradientScale parse_gradient_scale(const std::string& name) {
  if (name == "average") return GradientScale::average;
  if (name == "sum") return GradientScale::sum;
  TORCH_CHECK(false, "unknown gradient scale '", name, "' (expected average or sum)");
}

std::string to_string(GradientScale scale) {
  return scale == GradientScale::sum ? "sum" : "average";
}

std::string to_string(Weighting weighting) {
  switch (weighting) {
    case Weighting::task: return "task";
    case Weighting::snr: return "snr";
    case Weighting::family: return "family";
    case Weighting::precision: break;
  }
  return "precision";
}

at::Tensor tempered_variance(const at::Tensor& var, double s, double floor) {
  TORCH_CHECK(s >= 0, "aggregation exponent must be >= 0, got ", s);
  TORCH_CHECK(floor > 0, "variance floor must be > 0, got ", floor);
  return var.clamp_min(floor).pow(s);
}

namespace {
void check_parts(const std::vector<at::Tensor>& parts, const char* what) {
  TORCH_CHECK(!parts.empty(), "aggregation needs at least one task group");
  for (const auto& t : parts) {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == parts[0].size(0) && t.size(2) == parts[0].size(2),
                what, " must all be [B, tasks, d] with one B and d, got ", t.sizes(), " and ",
                parts[0].sizes());
  }
}

void check_pairs(const std::vector<at::Tensor>& means, const std::vector<at::Tensor>& vars) {
  check_parts(means, "gradient means");
  TORCH_CHECK(means.size() == vars.size(), "got ", means.size(), " mean groups but ", vars.size(),
              " variance groups");
  for (size_t g = 0; g < means.size(); ++g) {
    TORCH_CHECK(means[g].sizes() == vars[g].sizes(), "group ", g, ": mean ", means[g].sizes(),
                " and variance ", vars[g].sizes(), " differ in shape");
  }
}

}  // namespace

at::Tensor aggregation_weights(const std::vector<at::Tensor>& tempered_vars) {
  check_parts(tempered_vars, "tempered variances");
  const at::Tensor precision = at::cat(tempered_vars, 1).reciprocal();
  return precision / precision.sum(1, /*keepdim=*/true);
}

at::Tensor aggregate(const std::vector<at::Tensor>& means,
                     const std::vector<at::Tensor>& tempered_vars) {
  check_pairs(means, tempered_vars);
  at::Tensor num, den;
  for (size_t g = 0; g < means.size(); ++g) {
    const at::Tensor prec = tempered_vars[g].reciprocal();
    const at::Tensor n = (means[g] * prec).sum(1), p = prec.sum(1);
    num = num.defined() ? num + n : n;
    den = den.defined() ? den + p : p;
  }
  return num / den / static_cast<double>(means[0].size(0));
}

namespace {

/// Per task (columns of the concatenated groups), 1 / the batch mean of its tempered variance;
/// with `reducer` the whole batch's mean (the shards' sums and counts reduced).
at::Tensor task_precisions(const at::Tensor& v, const TensorReducer& reducer) {
  if (!reducer) return v.mean(at::IntArrayRef{0, 2}).reciprocal();  // [T]
  at::Tensor sums = v.sum(at::IntArrayRef{0, 2}).to(at::kDouble).contiguous();  // [T]
  at::Tensor count = at::full({1}, static_cast<double>(v.size(0) * v.size(2)), at::kDouble);
  reducer({sums, count}, "BayesAgg-MTL's per-task variance sums");
  return (count / sums).to(v.scalar_type());
}

}  // namespace

at::Tensor aggregate_task_precision(const std::vector<at::Tensor>& means,
                                    const std::vector<at::Tensor>& tempered_vars,
                                    const TensorReducer& reducer) {
  check_pairs(means, tempered_vars);
  const at::Tensor mu = at::cat(means, 1);                                  // [B, T, d]
  const at::Tensor prec = task_precisions(at::cat(tempered_vars, 1), reducer);
  const at::Tensor w = (prec / prec.sum()).view({1, -1, 1});
  return (mu * w).sum(1) / static_cast<double>(mu.size(0));
}

at::Tensor aggregate_family_precision(const std::vector<at::Tensor>& means,
                                      const std::vector<at::Tensor>& tempered_vars,
                                      const std::vector<int64_t>& family,
                                      const TensorReducer& reducer) {
  check_pairs(means, tempered_vars);
  const at::Tensor mu = at::cat(means, 1);                                  // [B, T, d]
  const int64_t T = mu.size(1);
  TORCH_CHECK(static_cast<int64_t>(family.size()) == T, "aggregate_family_precision: ",
              family.size(), " family labels for ", T, " tasks");
  if (std::all_of(family.begin(), family.end(), [&](int64_t f) { return f == family[0]; })) {
    return aggregate_task_precision(means, tempered_vars, reducer);  // one loss: `task`, exactly
  }
  const at::Tensor prec = task_precisions(at::cat(tempered_vars, 1), reducer);
  const at::Tensor fam = at::tensor(family, at::kLong);
  TORCH_CHECK(fam.min().item<int64_t>() >= 0, "aggregate_family_precision: negative family");
  const int64_t F = fam.max().item<int64_t>() + 1;
  // Per family: the sum of its precisions and its task count; then each task's weight.
  const at::Tensor sums = at::zeros({F}, prec.options()).index_add_(0, fam, prec);
  const at::Tensor counts = at::zeros({F}, prec.options()).index_add_(0, fam, at::ones_like(prec));
  const at::Tensor w = (prec / sums.index_select(0, fam) * counts.index_select(0, fam) /
                        static_cast<double>(T)).view({1, -1, 1});
  return (mu * w).sum(1) / static_cast<double>(mu.size(0));
}

at::Tensor aggregate_snr(const std::vector<at::Tensor>& means, const std::vector<at::Tensor>& vars,
                         double floor) {
  check_pairs(means, vars);
  TORCH_CHECK(floor > 0, "variance floor must be > 0, got ", floor);
  const at::Tensor mu = at::cat(means, 1), v = at::cat(vars, 1).clamp_min(floor);
  const at::Tensor mu2 = mu * mu;
  return (mu * mu2 / (mu2 + v)).mean(1) / static_cast<double>(mu.size(0));
}

}  // namespace bayesagg
