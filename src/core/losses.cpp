#include "bayesagg/core/losses.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace bayesagg {

at::Tensor head_forward(const Head& head, const at::Tensor& representation) {
  return at::linear(representation, head.weight, head.bias);
}

at::Tensor task_losses(const TaskGroup& group, const at::Tensor& output, const at::Tensor& labels) {
  TORCH_CHECK(output.dim() == 2 && output.size(1) == group.head_rows(), "output of ", group.str(),
              " must be [B, ", group.head_rows(), "], got ", output.sizes());
  switch (group.type) {
    case GroupType::regression:
      return (output - labels.to(output.dtype())).pow(2).mean(0);
    case GroupType::binary:
      return at::binary_cross_entropy_with_logits(output, labels.to(output.dtype()), {}, {},
                                                  at::Reduction::None)
          .mean(0);
    case GroupType::multiclass:
      return at::cross_entropy_loss(output, labels.to(at::kLong)).reshape({1});
  }
  TORCH_CHECK(false, "unreachable");
}

}  // namespace bayesagg
