#include "bayesagg/methods/small_adam.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace bayesagg {

SmallAdam::SmallAdam(double lr, double weight_decay, double beta1, double beta2, double eps)
    : lr_(lr), weight_decay_(weight_decay), beta1_(beta1), beta2_(beta2), eps_(eps) {
  TORCH_CHECK(lr >= 0.0 && weight_decay >= 0.0 && beta1 >= 0.0 && beta1 < 1.0 && beta2 >= 0.0 &&
                  beta2 < 1.0 && eps > 0.0,
              "SmallAdam: invalid settings (lr ", lr, ", weight decay ", weight_decay, ", betas ",
              beta1, ", ", beta2, ", eps ", eps, ")");
}

void SmallAdam::step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads) {
  TORCH_CHECK(params.size() == grads.size(), "SmallAdam: ", params.size(), " parameters but ",
              grads.size(), " gradients");
  at::NoGradGuard no_grad;
  if (m_.empty()) {
    for (const auto& p : params) {
      m_.push_back(at::zeros_like(p));
      v_.push_back(at::zeros_like(p));
    }
  }
  TORCH_CHECK(m_.size() == params.size(), "SmallAdam: state is for ", m_.size(),
              " parameters, got ", params.size());
  ++steps_;
  const double bc1 = 1.0 - std::pow(beta1_, static_cast<double>(steps_));
  const double bc2 = 1.0 - std::pow(beta2_, static_cast<double>(steps_));
  for (size_t i = 0; i < params.size(); ++i) {
    if (!grads[i].defined()) continue;
    at::Tensor g = grads[i].to(params[i].scalar_type());
    if (weight_decay_ != 0.0) g = g + weight_decay_ * params[i];
    m_[i].mul_(beta1_).add_(g, 1.0 - beta1_);
    v_[i].mul_(beta2_).addcmul_(g, g, 1.0 - beta2_);
    const at::Tensor denom = (v_[i].sqrt() / std::sqrt(bc2)).add_(eps_);
    at::Tensor p = params[i];
    p.addcdiv_(m_[i], denom, -lr_ / bc1);
  }
}

}  // namespace bayesagg
