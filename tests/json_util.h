#pragma once
// JSON helpers of the fixture tests.

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <vector>

namespace bayesagg::testing {

/// A nested JSON array of numbers as a float64 tensor of the same shape.
inline at::Tensor json_tensor(const nlohmann::json& j) {
  std::vector<double> flat;
  std::vector<int64_t> shape;
  std::function<void(const nlohmann::json&, size_t)> walk = [&](const nlohmann::json& v,
                                                                size_t depth) {
    if (v.is_array()) {
      if (shape.size() <= depth) shape.push_back(static_cast<int64_t>(v.size()));
      for (const auto& e : v) walk(e, depth + 1);
    } else {
      flat.push_back(v.get<double>());
    }
  };
  walk(j, 0);
  return at::tensor(flat, at::kDouble).reshape(shape);
}

}  // namespace bayesagg::testing
