#pragma once
// A benchmark without data (name, groups, task names), to check the metric plans and selection
// rules on hand-made outputs.

#include "bayesagg/data/dataset.h"

#include <string>
#include <utility>
#include <vector>

namespace bayesagg::testing {

inline Benchmark meta_benchmark(const std::string& name, std::vector<TaskGroup> groups,
                                std::vector<std::string> tasks) {
  Benchmark b;
  b.name = name;
  b.groups = std::move(groups);
  b.task_names = std::move(tasks);
  b.target_scaling.resize(b.groups.size());
  return b;
}

}  // namespace bayesagg::testing
