#pragma once
/// A minimal Adam for the few parameters a method owns (UW's log-variances, FAMO's logits, the
/// IGBv2 agent's networks) and for the toy problem: the arithmetic of `torch.optim.Adam`
/// (bias-corrected, L2 weight decay added to the gradient, no AMSGrad), checkpointable.

#include "bayesagg/core/serialize_fwd.h"
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>


namespace bayesagg {

class SmallAdam {
 public:
  SmallAdam() = default;
  explicit SmallAdam(double lr, double weight_decay = 0.0, double beta1 = 0.9, double beta2 = 0.999,
                     double eps = 1e-8);
  /// One step on `params` (updated in place, outside autograd) with gradients `grads`.
  void step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads);
  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  int64_t steps() const { return steps_; }
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix);

 private:
  double lr_ = 1e-3, weight_decay_ = 0.0, beta1_ = 0.9, beta2_ = 0.999, eps_ = 1e-8;
  int64_t steps_ = 0;
  std::vector<at::Tensor> m_, v_;
};

}  // namespace bayesagg
