#pragma once
/// The reducer of data-parallel training: a function summing tensors over the processes, taken by
/// the pieces that need global sums (BayesAgg-MTL's statistics, synchronised BatchNorm).

#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

namespace bayesagg {

/// Sums tensors in place over the processes of a data-parallel run (every process then holds the
/// sums); `what` names the values in errors. Every process must call it in the same order.
using TensorReducer =
    std::function<void(const std::vector<at::Tensor>& tensors, const char* what)>;

}  // namespace bayesagg
