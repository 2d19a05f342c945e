#pragma once
/// The collectives of data-parallel training as plain functions (a reducer summing tensors over
/// the processes, a gatherer concatenating them), taken by the pieces that need them
/// (BayesAgg-MTL's statistics and checkpoint, synchronised BatchNorm).

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace bayesagg {

/// Sums tensors in place over the processes of a data-parallel run (every process then holds the
/// sums); `what` names the values in errors. Every process must call it in the same order.
using TensorReducer =
    std::function<void(const std::vector<at::Tensor>& tensors, const char* what)>;

/// Every process's `tensor` concatenated in rank order along the first dimension (which may
/// differ between processes); `what` names the values in errors. A collective: every process must
/// call it in the same order.
using TensorGatherer = std::function<at::Tensor(const at::Tensor& tensor, const char* what)>;

}  // namespace bayesagg
