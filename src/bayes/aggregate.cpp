#include "bayesagg/bayes/aggregate.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace bayesagg {

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
}  // namespace

at::Tensor aggregation_weights(const std::vector<at::Tensor>& tempered_vars) {
  check_parts(tempered_vars, "tempered variances");
  const at::Tensor precision = at::cat(tempered_vars, 1).reciprocal();
  return precision / precision.sum(1, /*keepdim=*/true);
}

at::Tensor aggregate(const std::vector<at::Tensor>& means,
                     const std::vector<at::Tensor>& tempered_vars) {
  check_parts(means, "gradient means");
  TORCH_CHECK(means.size() == tempered_vars.size(), "got ", means.size(), " mean groups but ",
              tempered_vars.size(), " variance groups");
  at::Tensor num, den;
  for (size_t g = 0; g < means.size(); ++g) {
    TORCH_CHECK(means[g].sizes() == tempered_vars[g].sizes(), "group ", g, ": mean ",
                means[g].sizes(), " and variance ", tempered_vars[g].sizes(), " differ in shape");
    const at::Tensor prec = tempered_vars[g].reciprocal();
    const at::Tensor n = (means[g] * prec).sum(1), p = prec.sum(1);
    num = num.defined() ? num + n : n;
    den = den.defined() ? den + p : p;
  }
  return num / den / static_cast<double>(means[0].size(0));
}

}  // namespace bayesagg
