#include "bayesagg/core/task_group.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <sstream>

namespace bayesagg {

GroupType parse_group_type(const std::string& name) {
  if (name == "regression") return GroupType::regression;
  if (name == "binary" || name == "binary_tasks") return GroupType::binary;
  if (name == "multiclass") return GroupType::multiclass;
  TORCH_CHECK(false, "unknown task group type '", name,
              "' (expected regression, binary, binary_tasks or multiclass)");
}

std::string to_string(GroupType type) {
  switch (type) {
    case GroupType::regression: return "regression";
    case GroupType::binary: return "binary";
    case GroupType::multiclass: return "multiclass";
  }
  return "?";
}

TaskGroup::TaskGroup(GroupType type_, int64_t outputs_, std::string name_)
    : type(type_), outputs(outputs_), name(std::move(name_)) {
  TORCH_CHECK(outputs >= 1, "a ", to_string(type), " group needs at least one output, got ",
              outputs);
  TORCH_CHECK(type != GroupType::multiclass || outputs >= 2,
              "a multiclass group needs at least 2 classes, got ", outputs);
}

int64_t TaskGroup::num_tasks() const { return type == GroupType::multiclass ? 1 : outputs; }

int64_t TaskGroup::head_rows() const { return outputs; }

std::string TaskGroup::str() const { return to_string(type) + ":" + std::to_string(outputs); }

std::vector<TaskGroup> parse_groups(const std::string& spec) {
  std::vector<TaskGroup> groups;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const auto colon = item.find(':');
    TORCH_CHECK(colon != std::string::npos, "group '", item,
                "' must look like TYPE:COUNT, e.g. regression:11 or multiclass:5");
    const std::string type = item.substr(0, colon);
    const std::string count = item.substr(colon + 1);
    int64_t n = 0;
    try {
      size_t used = 0;
      n = std::stoll(count, &used);
      TORCH_CHECK(used == count.size(), "trailing characters");
    } catch (const std::exception&) {
      TORCH_CHECK(false, "group '", item, "': count '", count, "' is not an integer");
    }
    groups.emplace_back(parse_group_type(type), n);
  }
  TORCH_CHECK(!groups.empty(), "no task groups in '", spec, "'");
  return groups;
}

int64_t total_tasks(const std::vector<TaskGroup>& groups) {
  int64_t t = 0;
  for (const auto& g : groups) t += g.num_tasks();
  return t;
}

void check_labels(const TaskGroup& group, const at::Tensor& labels, int64_t batch,
                  const std::string& what) {
  TORCH_CHECK(labels.defined(), what, ": labels are missing");
  switch (group.type) {
    case GroupType::regression:
    case GroupType::binary: {
      TORCH_CHECK(labels.dim() == 2 && labels.size(0) == batch && labels.size(1) == group.outputs,
                  what, ": expected shape [", batch, ", ", group.outputs, "], got ",
                  labels.sizes());
      TORCH_CHECK(labels.is_floating_point(), what, ": expected floating-point labels, got ",
                  labels.scalar_type());
      TORCH_CHECK(at::isfinite(labels).all().item<bool>(), what, ": labels must be finite");
      if (group.type == GroupType::binary) {
        TORCH_CHECK(((labels == 0) | (labels == 1)).all().item<bool>(), what,
                    ": binary labels must be 0 or 1");
      }
      break;
    }
    case GroupType::multiclass: {
      TORCH_CHECK(labels.dim() == 1 && labels.size(0) == batch, what, ": expected shape [", batch,
                  "], got ", labels.sizes());
      TORCH_CHECK(!labels.is_floating_point() && !labels.is_complex(), what,
                  ": class labels must be integers, got ", labels.scalar_type());
      if (batch > 0) {
        const int64_t lo = labels.min().item<int64_t>();
        const int64_t hi = labels.max().item<int64_t>();
        TORCH_CHECK(lo >= 0 && hi < group.outputs, what, ": class labels must lie in [0, ",
                    group.outputs, "), got values in [", lo, ", ", hi, "]");
      }
      break;
    }
  }
}

}  // namespace bayesagg
