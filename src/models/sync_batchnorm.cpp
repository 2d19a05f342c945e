#include "bayesagg/models/sync_batchnorm.h"

#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/nn/functional/batchnorm.h>
#include <torch/nn/init.h>

#include <vector>

namespace bayesagg {
namespace {

/// The reducer, carried through the autograd context to the backward pass.
struct ReducerCapsule : torch::CustomClassHolder {
  explicit ReducerCapsule(TensorReducer r) : reducer(std::move(r)) {}
  TensorReducer reducer;
};

/// global = Σ_ranks local (the reducer's all-reduce), differentiable.
///
/// Why the backward all-reduces the incoming gradient: rank q computes its loss ℓ_q from its own
/// copy global_q = Σ_r local_r (local_r: rank r's per-channel sums), and data-parallel training
/// differentiates L = Σ_q ℓ_q (the ranks' shares of the global batch's loss). As
/// ∂global_q/∂local_r = I for every q and r, ∂L/∂local_r = Σ_q ∂ℓ_q/∂global_q: the sum over the
/// ranks of the gradient each rank's backward pass holds for its global_q. Returning that sum
/// (the same on every rank) gives every tensor of rank r's graph its exact gradient of L, as the
/// rest of the graph is local; a parameter's gradient on rank r is then the part of dL/dθ that
/// flows through rank r's graph, and the trainer's sum of the ranks' parameter gradients is dL/dθ.
/// Without this all-reduce a rank would miss the terms of the other ranks' losses that depend on
/// its statistics. Each backward pass through the layer issues one all-reduce, so every rank must
/// run the same backward passes (torch::autograd::Function materialises an unused gradient as
/// zeros, so the all-reduce is issued even where this rank's losses do not reach the layer).
struct AllReduceSum : public torch::autograd::Function<AllReduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& local,
                            const c10::intrusive_ptr<ReducerCapsule>& reducer) {
    ctx->saved_data["reducer"] = at::IValue::make_capsule(reducer);
    at::Tensor global = local.detach().clone();
    reducer->reducer({global}, "BatchNorm statistics");
    return global;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto capsule = c10::static_intrusive_pointer_cast<ReducerCapsule>(
        ctx->saved_data["reducer"].toCapsule());
    at::Tensor grad = grads[0].contiguous().clone();
    capsule->reducer({grad}, "BatchNorm statistics' gradients");
    return {grad, at::Tensor()};
  }
};

}  // namespace

SyncBatchNorm2dImpl::SyncBatchNorm2dImpl(const torch::nn::BatchNormOptions& options)
    : options(options) {
  reset();
}

// As torch::nn::BatchNorm2d's reset (NormImplBase::reset): the same names, shapes and order.
void SyncBatchNorm2dImpl::reset() {
  const int64_t c = options.num_features();
  if (options.affine()) {
    weight = register_parameter("weight", at::empty({c}));
    bias = register_parameter("bias", at::empty({c}));
  } else {
    weight = register_parameter("weight", at::Tensor(), /*requires_grad=*/false);
    bias = register_parameter("bias", at::Tensor(), /*requires_grad=*/false);
  }
  if (options.track_running_stats()) {
    running_mean = register_buffer("running_mean", at::zeros({c}));
    running_var = register_buffer("running_var", at::ones({c}));
    num_batches_tracked = register_buffer("num_batches_tracked", at::zeros({}, at::kLong));
  } else {
    running_mean = register_buffer("running_mean", at::Tensor());
    running_var = register_buffer("running_var", at::Tensor());
    num_batches_tracked = register_buffer("num_batches_tracked", at::Tensor());
  }
  reset_parameters();
}

void SyncBatchNorm2dImpl::reset_parameters() {
  if (options.track_running_stats()) {
    running_mean.zero_();
    running_var.fill_(1);
    num_batches_tracked.zero_();
  }
  if (options.affine()) {
    torch::nn::init::ones_(weight);
    torch::nn::init::zeros_(bias);
  }
}

double SyncBatchNorm2dImpl::count_step() {
  double factor = options.momentum().has_value() ? *options.momentum() : 0.0;
  if (is_training() && options.track_running_stats() && num_batches_tracked.defined()) {
    num_batches_tracked += 1;
    // momentum = nullopt: the cumulative moving average.
    if (!options.momentum().has_value()) factor = 1.0 / num_batches_tracked.item<double>();
  }
  return factor;
}

at::Tensor SyncBatchNorm2dImpl::forward(const at::Tensor& input) {
  TORCH_CHECK_VALUE(input.dim() == 4, "expected 4D input (got ", input.dim(), "D input)");
  const double factor = count_step();
  if (is_training() && reducer_) return forward_synchronised(input, factor);
  // What torch::nn::BatchNorm2d::forward calls.
  return torch::nn::functional::detail::batch_norm(
      input, running_mean, running_var, weight, bias,
      is_training() || !options.track_running_stats(), /*momentum=*/factor, options.eps());
}

at::Tensor SyncBatchNorm2dImpl::forward_synchronised(const at::Tensor& input, double factor) {
  const int64_t c = options.num_features();
  TORCH_CHECK(input.size(1) == c, "SyncBatchNorm2d: expected ", c, " channels, got input of size ",
              input.sizes());
  // Sums in float64: the biased variance sum_sq / n - mean² then loses about 1e-16 · (1 +
  // mean² / var) relatively, far below the float32 rounding of the inputs themselves, and one
  // reduction of 2C + 1 values suffices (a two-pass, shifted formulation would need two).
  const at::Tensor x = input.to(at::kDouble);
  const std::vector<int64_t> dims{0, 2, 3};
  const at::Tensor local =
      at::cat({x.sum(dims), (x * x).sum(dims),
               at::full({1}, static_cast<double>(input.numel() / c), x.options())});
  const at::Tensor global =
      AllReduceSum::apply(local, c10::make_intrusive<ReducerCapsule>(reducer_));
  const double n = global[2 * c].item<double>();
  TORCH_CHECK(n > 1, "SyncBatchNorm2d: expected more than 1 value per channel in the global batch "
              "when training, got ", n, " (this process's input has size ", input.sizes(), ")");
  const at::Tensor mean = global.slice(0, 0, c) / n;
  const at::Tensor var = (global.slice(0, c, 2 * c) / n - mean * mean).clamp_min(0.0);
  if (options.track_running_stats()) {
    // As PyTorch: momentum · batch statistic + (1 - momentum) · running one, the variance
    // unbiased.
    at::NoGradGuard no_grad;
    const at::Tensor m = mean.detach(), v = var.detach() * (n / (n - 1.0));
    running_mean.copy_(m * factor + running_mean.to(at::kDouble) * (1.0 - factor));
    running_var.copy_(v * factor + running_var.to(at::kDouble) * (1.0 - factor));
  }
  // Normalised in float64 too, then rounded once: a float32 mean would shift every deviation
  // x - mean by its rounding error, which the gradient of the weight sums up (badly so for a
  // channel whose variance is tiny against its mean).
  at::Tensor scale = at::rsqrt(var + options.eps());
  if (weight.defined()) scale = scale * weight.to(at::kDouble);
  const std::vector<int64_t> shape{1, c, 1, 1};
  at::Tensor out = (x - mean.view(shape)) * scale.view(shape);
  if (bias.defined()) out = out + bias.to(at::kDouble).view(shape);
  return out.to(input.scalar_type());
}

}  // namespace bayesagg
