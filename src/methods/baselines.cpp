#include "bayesagg/methods/baselines.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <sstream>

namespace bayesagg {
namespace {

std::string fmt(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

/// Adds `g` to `p.grad()` (creating it when undefined).
void accumulate_grad(const at::Tensor& p, const at::Tensor& g) {
  at::NoGradGuard no_grad;
  at::Tensor& slot = p.mutable_grad();
  const at::Tensor v = g.detach().to(p.device(), p.scalar_type()).reshape(p.sizes());
  if (!slot.defined()) {
    slot = v.clone();
  } else {
    slot.add_(v);
  }
}

std::vector<at::Tensor> head_parameters(const std::vector<Head>& heads) {
  std::vector<at::Tensor> out;
  for (const auto& h : heads) {
    if (h.weight.defined() && h.weight.requires_grad()) out.push_back(h.weight);
    if (h.bias.defined() && h.bias.requires_grad()) out.push_back(h.bias);
  }
  return out;
}

/// Gradients of `objective` w.r.t. `inputs` (zeros for inputs it does not reach).
std::vector<at::Tensor> grads_of(const at::Tensor& objective, const std::vector<at::Tensor>& inputs,
                                 bool retain) {
  std::vector<at::Tensor> g =
      torch::autograd::grad({objective}, inputs, {}, retain, /*create_graph=*/false,
                            /*allow_unused=*/true);
  for (size_t i = 0; i < g.size(); ++i) {
    if (!g[i].defined()) g[i] = at::zeros_like(inputs[i]);
  }
  return g;
}

at::Tensor flatten_double(const std::vector<at::Tensor>& parts) {
  std::vector<at::Tensor> flat;
  for (const auto& p : parts) flat.push_back(p.detach().to(at::kDouble).reshape({-1}));
  return flat.empty() ? at::zeros({0}, at::kDouble) : at::cat(flat);
}

/// Methods that take the logarithm of the losses need them above `floor`; says which is not.
void check_log_domain(const at::Tensor& losses, double floor, const std::string& who) {
  const at::Tensor l = losses.detach().to(at::kCPU, at::kDouble).contiguous();
  for (int64_t t = 0; t < l.numel(); ++t) {
    const double v = l.data_ptr<double>()[t];
    TORCH_CHECK(v > floor, who, " takes the logarithm of the losses, but the loss of task ", t, " is ",
                v, floor == 0.0 ? " (not positive)" : " (not above " + fmt(floor) + ")");
  }
}

}  // namespace

// ---------------------------------------------------------------- loss weightings

int64_t LossWeightingMethod::check_losses(const Step& step, int64_t tasks) const {
  TORCH_CHECK(step.losses.defined() && step.losses.dim() == 1 && step.losses.size(0) == tasks,
              name(), ": expected the step's losses [", tasks, "], got ",
              step.losses.defined() ? step.losses.sizes() : at::IntArrayRef{});
  return tasks;
}

void LossWeightingMethod::record_weights(const at::Tensor& weights) {
  const at::Tensor w = weights.detach().to(at::kCPU, at::kDouble).contiguous();
  diagnostics_.clear();
  for (int64_t t = 0; t < w.numel(); ++t) {
    diagnostics_["weight_" + std::to_string(t)] = w.data_ptr<double>()[t];
  }
}

void ScaleInvariantMethod::backward(Step& step) {
  check_losses(step, tasks_);
  check_log_domain(step.losses, 0.0, "si");
  at::log(step.losses).sum().backward();
  record_weights(1.0 / step.losses.detach());
}

RandomLossWeightingMethod::RandomLossWeightingMethod(int64_t tasks, RlwOptions options, uint64_t seed)
    : tasks_(tasks), options_(options), generator_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

std::string RandomLossWeightingMethod::describe() const {
  return std::string("RLW(softmax of N(0, I)") + (options_.scale_by_tasks() ? " x T" : "") + ")";
}

void RandomLossWeightingMethod::backward(Step& step) {
  check_losses(step, tasks_);
  const at::Tensor w = rlw_weights(tasks_, generator_, options_);
  (w.to(step.losses.device(), step.losses.scalar_type()) * step.losses).sum().backward();
  record_weights(w);
}

DynamicWeightAverageMethod::DynamicWeightAverageMethod(int64_t tasks, DwaOptions options)
    : tasks_(tasks), options_(options) {
  TORCH_CHECK(options.temperature() > 0.0, "dwa: the temperature must be > 0");
}

std::string DynamicWeightAverageMethod::describe() const {
  return "DWA(temperature=" + fmt(options_.temperature()) + ")";
}

at::Tensor DynamicWeightAverageMethod::weights() const {
  return dwa_weights(tasks_, means_.last(), means_.before_last(), options_);
}

void DynamicWeightAverageMethod::backward(Step& step) {
  check_losses(step, tasks_);
  const at::Tensor w = weights();
  means_.add(step.losses.detach());
  (w.to(step.losses.device(), step.losses.scalar_type()) * step.losses).sum().backward();
  record_weights(w);
}

UncertaintyWeightingMethod::UncertaintyWeightingMethod(int64_t tasks, UwOptions options)
    : tasks_(tasks), options_(options), weighting_(tasks, options) {}

std::string UncertaintyWeightingMethod::describe() const {
  return "UW(log-variances by Adam, lr=" + fmt(options_.lr()) + ")";
}

void UncertaintyWeightingMethod::backward(Step& step) {
  check_losses(step, tasks_);
  const at::Tensor w = weighting_.weights();
  (w.to(step.losses.device(), step.losses.scalar_type()) * step.losses).sum().backward();
  record_weights(w);
  weighting_.step(step.losses.detach());
  const at::Tensor s = weighting_.log_variances();
  for (int64_t t = 0; t < tasks_; ++t) {
    diagnostics_["log_variance_" + std::to_string(t)] = s[t].item<double>();
  }
}

FamoMethod::FamoMethod(int64_t tasks, FamoOptions options)
    : tasks_(tasks), options_(options), weighting_(tasks, options) {}

std::string FamoMethod::describe() const {
  return "FAMO(lr=" + fmt(options_.lr()) + ", weight_decay=" + fmt(options_.weight_decay()) +
         ", min_loss=" + fmt(options_.min_loss()) + ")";
}

void FamoMethod::observe_losses_after_step(const at::Tensor& losses) {
  TORCH_CHECK(previous_.defined(), "famo: losses after a step, but no step was taken");
  weighting_.update(previous_, losses);
  updated_ = true;
}

void FamoMethod::backward(Step& step) {
  check_losses(step, tasks_);
  check_log_domain(step.losses, options_.min_loss() - 1e-8, "famo");
  const at::Tensor current = step.losses.detach().to(at::kCPU, at::kDouble);
  double delayed = 0.0;
  if (previous_.defined() && !updated_) {
    weighting_.update(previous_, current);
    delayed = 1.0;
  }
  const at::Tensor w = weighting_.weights(current);
  weighting_.objective(step.losses).backward();
  record_weights(w);
  diagnostics_["delayed_update"] = delayed;
  previous_ = current;
  updated_ = false;
}

IgbV2Method::IgbV2Method(int64_t tasks, IgbV2Options options, uint64_t seed)
    : tasks_(tasks), options_(options), weighting_(tasks, options, seed) {}

std::string IgbV2Method::describe() const {
  std::ostringstream os;
  os << "IGBv2(SAC lr=" << options_.sac_lr() << ", buffer=" << options_.buffer_size()
     << ", base_epoch=" << options_.base_epoch() << ", start_epoch=" << options_.start_epoch()
     << ", update_after=" << options_.update_after() << ", update_every=" << options_.update_every()
     << ", reward_scale=" << options_.reward_scale() << ")";
  return os.str();
}

void IgbV2Method::on_epoch_end(int64_t epoch) {
  means_.end_epoch();
  weighting_.end_epoch(epoch, means_.last());
}

void IgbV2Method::backward(Step& step) {
  check_losses(step, tasks_);
  check_log_domain(step.losses, 0.0, "igbv2");
  means_.add(step.losses.detach());
  const at::Tensor w = weighting_.weights(step.losses.detach(), step.epoch);
  (w.to(step.losses.device(), step.losses.scalar_type()) * at::log(step.losses)).sum().backward();
  record_weights(w);
  diagnostics_["sac_updates"] = static_cast<double>(weighting_.agent().updates());
  diagnostics_["sac_alpha"] = weighting_.agent().alpha();
  diagnostics_["replay_size"] = static_cast<double>(weighting_.agent().buffer_size());
}

// ---------------------------------------------------------------- gradient methods

GradientMethod::GradientMethod(std::string name, std::unique_ptr<Aggregator> aggregator,
                               GradientLevel level, HeadGradient heads, bool log_losses,
                               bool gram_only)
    : name_(std::move(name)),
      aggregator_(std::move(aggregator)),
      level_(level),
      heads_(heads),
      log_losses_(log_losses),
      gram_only_(gram_only) {
  TORCH_CHECK(aggregator_ != nullptr, name_, ": no aggregator");
}

GradientAggregate GradientMethod::aggregate_from_gram(const at::Tensor& G, Step& step) {
  const int64_t T = G.size(0);
  const at::Tensor rows = G.reshape({T, -1});
  at::Tensor A = at::mm(rows, rows.t()).contiguous();
  step.reduce_gram(A);
  // Any L with L Lᵀ = A has the same Gram matrix, so the aggregator gives the weights of the
  // whole batch's gradients: L = V sqrt(max(λ, 0)) from A's eigendecomposition.
  A = 0.5 * (A + A.t());
  auto [lambda, V] = at::linalg_eigh(A);
  const at::Tensor L = V * lambda.clamp_min(0.0).sqrt().unsqueeze(0);
  GradientAggregate agg = aggregator_->aggregate(L.reshape({T, 1, T}), at::Tensor());
  agg.direction = at::matmul(agg.weights.to(rows.scalar_type()), rows);
  return agg;
}

std::string GradientMethod::describe() const {
  return aggregator_->describe() + " on the " +
         (level_ == GradientLevel::shared ? "shared parameters" : "representation") +
         (log_losses_ ? " (log-losses)" : "") + ", heads: " +
         (heads_ == HeadGradient::sum ? "gradient of the sum of losses" : "weighted gradient");
}

std::set<Need> GradientMethod::needs() const {
  return {Need::losses,
          level_ == GradientLevel::shared ? Need::shared_grads : Need::representation_grads};
}

void GradientMethod::backward(Step& step) {
  TORCH_CHECK(step.losses.defined() && step.losses.dim() == 1 && step.losses.size(0) >= 1, name_,
              ": the step needs per-task losses [T]");
  if (log_losses_) check_log_domain(step.losses, -1e-8, name_);
  const at::Tensor objectives = log_losses_ ? at::log(step.losses + 1e-8) : step.losses;
  const int64_t T = objectives.size(0);
  const std::vector<at::Tensor> heads = head_parameters(step.heads);
  at::Tensor weights, direction;

  const auto head_objective = [&]() {
    if (heads_ == HeadGradient::weighted && weights.defined()) {
      return (weights.to(objectives.device(), objectives.scalar_type()) * objectives).sum();
    }
    return objectives.sum();
  };

  if (level_ == GradientLevel::shared) {
    std::vector<at::Tensor> params;
    for (const auto& p : step.shared_parameters) {
      if (p.defined() && p.requires_grad()) params.push_back(p);
    }
    TORCH_CHECK(!params.empty(), name_, ": the step has no trainable shared parameters");
    const at::Tensor reuse = aggregator_->reuse_weights();
    if (reuse.defined()) {
      TORCH_CHECK(reuse.numel() == T, name_, ": reused weights are for ", reuse.numel(),
                  " tasks, got ", T);
      weights = reuse;
      const at::Tensor obj = (reuse.to(objectives.device(), objectives.scalar_type()) * objectives).sum();
      const at::Tensor g = flatten_double(grads_of(obj, params, true));
      if (step.reduce_task_gradients) step.reduce_task_gradients(g);
      direction = aggregator_->finish(g);
    } else {
      std::vector<at::Tensor> rows;
      for (int64_t t = 0; t < T; ++t) rows.push_back(flatten_double(grads_of(objectives[t], params, true)));
      const at::Tensor G = at::stack(rows);
      if (step.reduce_task_gradients) step.reduce_task_gradients(G);
      const GradientAggregate agg = aggregator_->aggregate(G, {});
      weights = agg.weights;
      direction = agg.direction;
    }
    int64_t offset = 0;
    for (const auto& p : params) {
      const int64_t n = p.numel();
      accumulate_grad(p, direction.slice(0, offset, offset + n));
      offset += n;
    }
    if (!heads.empty()) {
      const std::vector<at::Tensor> hg = grads_of(head_objective(), heads, false);
      for (size_t i = 0; i < heads.size(); ++i) accumulate_grad(heads[i], hg[i]);
    }
  } else {
    const at::Tensor& h = step.representation;
    TORCH_CHECK(h.defined() && h.requires_grad(), name_,
                ": the step needs the representation h attached to the trunk's graph");
    std::vector<at::Tensor> rows;
    for (int64_t t = 0; t < T; ++t) {
      rows.push_back(grads_of(objectives[t], {h}, true)[0].detach().to(at::kDouble));
    }
    const at::Tensor G = at::stack(rows);  // [T, ...h]
    const at::Tensor G3 = h.dim() == 2 ? G : G.reshape({T, 1, -1});
    TORCH_CHECK(!step.reduce_gram || gram_only_, name_, " is not data-parallel: its weights need "
                "every example's gradients, not only their Gram matrix");
    const GradientAggregate agg =
        step.reduce_gram
            ? aggregate_from_gram(G, step)
            : aggregator_->aggregate(G3, h.dim() == 2 ? h.detach() : h.detach().reshape({1, -1}));
    weights = agg.weights;
    direction = agg.direction;
    if (!heads.empty()) {
      const std::vector<at::Tensor> hg = grads_of(head_objective(), heads, true);
      for (size_t i = 0; i < heads.size(); ++i) accumulate_grad(heads[i], hg[i]);
    }
    torch::autograd::backward({h}, {direction.reshape(h.sizes()).to(h.device(), h.scalar_type())});
  }

  diagnostics_ = aggregator_->diagnostics();
  diagnostics_["direction_norm"] = direction.norm().item<double>();
  if (weights.defined()) {
    const at::Tensor w = weights.to(at::kCPU, at::kDouble).contiguous();
    for (int64_t t = 0; t < w.numel(); ++t) {
      diagnostics_["weight_" + std::to_string(t)] = w.data_ptr<double>()[t];
    }
  }
}

std::map<std::string, double> GradientMethod::diagnostics() const { return diagnostics_; }

// ---------------------------------------------------------------- registry

std::vector<std::string> baseline_method_names() {
  return {"si",     "rlw",    "dwa",      "uw",     "famo",  "igbv2",      "mgda",
          "mgdaub", "pcgrad", "graddrop", "gradvac", "cagrad", "imtlg",     "nashmtl",
          "upgrad", "alignedmtl", "alignedmtlub", "dbmtl"};
}

std::unique_ptr<Method> make_baseline_method(const std::string& name,
                                             const std::vector<TaskGroup>& groups, int64_t dim,
                                             const MethodConfig& config) {
  const int64_t T = total_tasks(groups);
  const auto known = baseline_method_names();
  if (std::find(known.begin(), known.end(), name) == known.end()) return nullptr;
  TORCH_CHECK(T >= 1, name, ": the model has no tasks");
  const WeightingOptions& wo = config.weighting;
  const GradientOptions& go = config.gradient;
  const uint64_t seed = config.seed;
  if (name == "si") return std::make_unique<ScaleInvariantMethod>(T);
  if (name == "rlw") return std::make_unique<RandomLossWeightingMethod>(T, wo.rlw(), seed);
  if (name == "dwa") return std::make_unique<DynamicWeightAverageMethod>(T, wo.dwa());
  if (name == "uw") return std::make_unique<UncertaintyWeightingMethod>(T, wo.uw());
  if (name == "famo") return std::make_unique<FamoMethod>(T, wo.famo());
  if (name == "igbv2") return std::make_unique<IgbV2Method>(T, wo.igbv2(), seed);

  const auto gradient = [&](std::unique_ptr<Aggregator> agg, GradientLevel level, bool logs = false,
                            bool gram_only = false) {
    return std::make_unique<GradientMethod>(name, std::move(agg), level, go.heads(), logs,
                                            gram_only);
  };
  const auto function = [](std::string d, FunctionAggregator::Fn fn) {
    return std::make_unique<FunctionAggregator>(std::move(d), std::move(fn));
  };
  if (name == "mgda" || name == "mgdaub") {
    const MgdaOptions o = go.mgda();
    return gradient(function(std::string("MGDA") + (name == "mgdaub" ? "-UB" : "") +
                                 "(min-norm, active set, tolerance " + fmt(o.solver().tolerance()) +
                                 (o.scale_by_tasks() ? ", weights x T" : "") + ")",
                             [o](const at::Tensor& G) { return mgda(G, o); }),
                    name == "mgda" ? GradientLevel::shared : GradientLevel::representation,
                    /*logs=*/false, /*gram_only=*/true);
  }
  if (name == "pcgrad") {
    return gradient(std::make_unique<PcGradAggregator>(go.pcgrad(), seed), GradientLevel::shared);
  }
  if (name == "graddrop") {
    return gradient(std::make_unique<GradDropAggregator>(go.graddrop(), seed),
                    go.graddrop_on_representation() ? GradientLevel::representation
                                                    : GradientLevel::shared);
  }
  if (name == "gradvac") {
    return gradient(std::make_unique<GradVacAggregator>(go.gradvac(), seed), GradientLevel::shared);
  }
  if (name == "cagrad") {
    const CaGradOptions o = go.cagrad();
    return gradient(function("CAGrad(c=" + fmt(o.c()) + ", rescale=" + std::to_string(o.rescale()) +
                                 ")",
                             [o](const at::Tensor& G) { return cagrad(G, o); }),
                    GradientLevel::shared);
  }
  if (name == "imtlg") {
    const ImtlGOptions o = go.imtlg();
    return gradient(function("IMTL-G", [o](const at::Tensor& G) { return imtlg(G, o); }),
                    GradientLevel::shared);
  }
  if (name == "nashmtl") {
    return gradient(std::make_unique<NashMtlAggregator>(go.nashmtl()), GradientLevel::shared);
  }
  if (name == "upgrad") {
    const UpGradOptions o = go.upgrad();
    return gradient(function("UPGrad(norm_eps=" + fmt(o.norm_eps()) + ", reg_eps=" +
                                 fmt(o.reg_eps()) + ")",
                             [o](const at::Tensor& G) { return upgrad(G, o); }),
                    GradientLevel::shared);
  }
  if (name == "alignedmtl" || name == "alignedmtlub") {
    const AlignedMtlOptions o = go.alignedmtl();
    const char* scale = o.scale() == AlignedScale::min ? "min" : o.scale() == AlignedScale::median ? "median" : "rmse";
    return gradient(function(std::string("Aligned-MTL") + (name == "alignedmtlub" ? "-UB" : "") +
                                 "(scale=" + scale + ")",
                             [o](const at::Tensor& G) { return aligned_mtl(G, o); }),
                    name == "alignedmtl" ? GradientLevel::shared : GradientLevel::representation,
                    /*logs=*/false, /*gram_only=*/true);
  }
  if (name == "dbmtl") {
    return gradient(std::make_unique<DbMtlAggregator>(go.dbmtl()), GradientLevel::shared,
                    /*logs=*/true);
  }
  TORCH_CHECK(false, "baseline '", name, "' is listed but not built (a bug)");
}

}  // namespace bayesagg
