#include "bayesagg/methods/method.h"
#include "bayesagg/methods/baselines.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <sstream>

namespace bayesagg {

void LinearScalarization::backward(Step& step) {
  TORCH_CHECK(step.losses.defined(), "ls: the step has no losses");
  step.losses.sum().backward();
}

BayesAggMethod::BayesAggMethod(std::vector<TaskGroup> groups, int64_t dim, BayesAggOptions options,
                               int64_t ls_epochs, std::string name)
    : agg_(std::move(groups), dim, std::move(options)), ls_epochs_(ls_epochs),
      name_(std::move(name)) {
  TORCH_CHECK(ls_epochs >= 0, "ls_epochs must be >= 0, got ", ls_epochs);
}

std::string BayesAggMethod::describe() const {
  std::ostringstream os;
  os << agg_.options() << " with " << ls_epochs_ << " linear-scalarisation warm-up epoch(s)";
  return os.str();
}

void BayesAggMethod::backward(Step& step) {
  TORCH_CHECK(step.representation.defined() && step.heads.size() == agg_.groups().size(),
              "bayesagg: the step needs the representation and one head per task group");
  if (epoch_ < ls_epochs_) {
    step.losses.sum().backward();
    agg_.observe(step.representation.detach(), step.labels);
    diagnostics_ = {{"warmup", 1.0}};
    return;
  }
  agg_.backward(step.losses, step.heads, step.representation, step.labels);
  const BayesAggStats& st = agg_.stats();
  diagnostics_ = {{"warmup", 0.0},
                  {"dL_dh_norm", st.dL_dh_norm},
                  {"jitter_events", static_cast<double>(st.jitter_events)}};
  for (size_t g = 0; g < st.full_data_shift.size(); ++g) {
    diagnostics_["full_data_shift_" + std::to_string(g)] = st.full_data_shift[g];
    diagnostics_["head_norm_" + std::to_string(g)] = st.head_norm[g];
  }
  for (size_t g = 0; g < st.batch_shift.size(); ++g) {
    diagnostics_["batch_shift_" + std::to_string(g)] = st.batch_shift[g];
  }
  for (size_t g = 0; g < agg_.observation_noise().size(); ++g) {
    if (agg_.observation_noise()[g].defined()) {
      diagnostics_["noise_" + std::to_string(g)] = st.noise[g];
    }
  }
  diagnostics_["ls_cosine"] = st.ls_cosine;
}

bool is_bayesagg_method(const std::string& name) {
  return name == "bayesagg" || name == "bayesagg-reference";
}

std::vector<std::string> method_names() {
  std::vector<std::string> names{"ls", "bayesagg", "bayesagg-reference"};
  for (const auto& n : baseline_method_names()) names.push_back(n);
  return names;
}

std::unique_ptr<Method> make_method(const std::string& name, const std::vector<TaskGroup>& groups,
                                    int64_t dim, const MethodConfig& config) {
  if (name == "ls") return std::make_unique<LinearScalarization>();
  if (is_bayesagg_method(name)) {
    return std::make_unique<BayesAggMethod>(groups, dim, config.bayesagg, config.ls_epochs, name);
  }
  if (auto baseline = make_baseline_method(name, groups, dim, config)) return baseline;
  std::string known;
  for (const auto& n : method_names()) known += (known.empty() ? "" : ", ") + n;
  TORCH_CHECK(false, "unknown method '", name, "' (known: ", known, ")");
}

}  // namespace bayesagg
