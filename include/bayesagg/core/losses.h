#pragma once
/// Per-task losses of task groups (spec section 1), as batch means.

#include "bayesagg/core/task_group.h"

#include <ATen/core/Tensor.h>

namespace bayesagg {

/// The head's output `h W^T + b` [B, rows].
at::Tensor head_forward(const Head& head, const at::Tensor& representation);

/// Batch-mean loss of every task of `group` [num_tasks()] from the head's `output` [B, rows]:
/// regression (output - y)^2 per output (no 1/2), binary BCE-with-logits per task, multiclass
/// cross-entropy (one task).
at::Tensor task_losses(const TaskGroup& group, const at::Tensor& output, const at::Tensor& labels);

}  // namespace bayesagg
