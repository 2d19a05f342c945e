#include "bayesagg/data/dataset.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <ostream>
#include <sstream>

namespace bayesagg {

int64_t MultiTaskSplit::size() const { return inputs.defined() ? inputs.size(0) : 0; }

MultiTaskBatch MultiTaskSplit::batch(const at::Tensor& indices) const {
  TORCH_CHECK(indices.defined() && indices.dim() == 1 && indices.scalar_type() == at::kLong,
              "MultiTaskSplit::batch: expected indices [B] int64");
  MultiTaskBatch b;
  b.inputs = inputs.index_select(0, indices);
  b.labels.reserve(labels.size());
  for (const auto& y : labels) b.labels.push_back(y.index_select(0, indices));
  return b;
}

MultiTaskSplit MultiTaskSplit::slice(int64_t start, int64_t length) const {
  TORCH_CHECK(start >= 0 && length >= 0 && start + length <= size(), "MultiTaskSplit::slice(",
              start, ", ", length, "): out of range for a split of ", size(), " items");
  MultiTaskSplit s;
  s.inputs = inputs.narrow(0, start, length);
  for (const auto& y : labels) s.labels.push_back(y.narrow(0, start, length));
  if (partners.defined()) s.partners = partners.narrow(0, start, length);
  return s;
}

MultiTaskSplit MultiTaskSplit::head(int64_t n) const {
  TORCH_CHECK(n >= 0 && n <= size(), "MultiTaskSplit::head(", n, "): a split of ", size(),
              " items");
  MultiTaskSplit s = slice(0, n);
  s.inputs = s.inputs.clone(at::MemoryFormat::Contiguous);
  for (auto& y : s.labels) y = y.clone(at::MemoryFormat::Contiguous);
  if (s.partners.defined()) s.partners = s.partners.clone(at::MemoryFormat::Contiguous);
  return s;
}

void check_split(const MultiTaskSplit& split, const std::vector<TaskGroup>& groups,
                 const std::string& what) {
  TORCH_CHECK(split.inputs.defined() && split.inputs.dim() >= 1, what, ": inputs are missing");
  TORCH_CHECK(at::isFloatingType(split.inputs.scalar_type()), what,
              ": inputs must be floating, got ", split.inputs.scalar_type());
  TORCH_CHECK(split.labels.size() == groups.size(), what, ": ", split.labels.size(),
              " label tensors for ", groups.size(), " task groups");
  const int64_t n = split.size();
  for (size_t g = 0; g < groups.size(); ++g) {
    check_labels(groups[g], split.labels[g], n,
                 what + " labels of group " + std::to_string(g) + " (" + groups[g].str() + ")");
  }
  if (split.partners.defined()) {
    TORCH_CHECK(split.partners.dim() == 1 && split.partners.size(0) == n, what,
                ": partners must be [", n, "], got ", split.partners.sizes());
  }
}

at::Tensor TargetScaling::to_original(const at::Tensor& values) const {
  if (!defined()) return values;
  return (values.to(at::kDouble) * std + mean).to(values.scalar_type());
}

at::Tensor TargetScaling::to_standardised(const at::Tensor& values) const {
  if (!defined()) return values;
  return ((values.to(at::kDouble) - mean) / std).to(values.scalar_type());
}

std::vector<int64_t> Benchmark::input_shape() const {
  TORCH_CHECK(train.inputs.defined(), "benchmark '", name, "' has no training inputs");
  const auto s = train.inputs.sizes();
  return std::vector<int64_t>(s.begin() + 1, s.end());
}

at::Tensor Benchmark::to_original(size_t group, const at::Tensor& values) const {
  TORCH_CHECK(group < groups.size(), "benchmark '", name, "': no group ", group);
  if (group >= target_scaling.size()) return values;
  return target_scaling[group].to_original(values);
}

void Benchmark::validate() const {
  TORCH_CHECK(!groups.empty(), "benchmark '", name, "' has no task groups");
  TORCH_CHECK(static_cast<int64_t>(task_names.size()) == num_tasks(), "benchmark '", name,
              "': ", task_names.size(), " task names for ", num_tasks(), " tasks");
  TORCH_CHECK(target_scaling.empty() || target_scaling.size() == groups.size(), "benchmark '", name,
              "': ", target_scaling.size(), " target scalings for ", groups.size(), " groups");
  for (size_t g = 0; g < target_scaling.size(); ++g) {
    const auto& s = target_scaling[g];
    if (!s.defined()) continue;
    TORCH_CHECK(groups[g].type == GroupType::regression, "benchmark '", name,
                "': target scaling on non-regression group ", g);
    TORCH_CHECK(s.std.defined() && s.mean.numel() == groups[g].outputs &&
                    s.std.numel() == groups[g].outputs && (s.std > 0).all().item<bool>(),
                "benchmark '", name, "': bad target scaling of group ", g);
  }
  const std::string prefix = "benchmark '" + name + "' ";
  check_split(train, groups, prefix + "train");
  check_split(val, groups, prefix + "val");
  check_split(test, groups, prefix + "test");
  const auto shape = input_shape();
  for (const auto* s : {&val, &test}) {
    const auto sz = s->inputs.sizes();
    TORCH_CHECK(std::vector<int64_t>(sz.begin() + 1, sz.end()) == shape, prefix,
                ": inputs of the splits differ in shape");
  }
  for (const auto* t : {&task_scales, &noise_levels}) {
    TORCH_CHECK(!t->defined() || t->numel() == num_tasks(), prefix,
                ": per-task metadata must have one entry per task");
  }
}

std::ostream& operator<<(std::ostream& os, const Benchmark& b) {
  os << b.name << ": ";
  for (size_t g = 0; g < b.groups.size(); ++g) os << (g ? "," : "") << b.groups[g].str();
  const std::vector<int64_t> shape =
      b.train.inputs.defined() ? b.input_shape() : std::vector<int64_t>{};
  os << "; inputs " << c10::IntArrayRef(shape) << "; train " << b.train.size() << ", val "
     << b.val.size() << ", test " << b.test.size() << "; seed " << b.seed;
  return os;
}

EpochBatches::EpochBatches(int64_t size, int64_t batch_size, at::Generator generator)
    : batch_size_(batch_size) {
  TORCH_CHECK(size >= 0, "EpochBatches: size must be >= 0, got ", size);
  TORCH_CHECK(batch_size >= 1, "EpochBatches: batch size must be >= 1, got ", batch_size);
  order_ =
      generator.defined() ? at::randperm(size, generator, at::kLong) : at::arange(size, at::kLong);
}

int64_t EpochBatches::num_batches() const {
  return (order_.size(0) + batch_size_ - 1) / batch_size_;
}

at::Tensor EpochBatches::operator[](int64_t b) const {
  TORCH_CHECK(b >= 0 && b < num_batches(), "EpochBatches: batch ", b, " out of range (",
              num_batches(), " batches)");
  const int64_t start = b * batch_size_;
  return order_.narrow(0, start, std::min(batch_size_, order_.size(0) - start));
}

}  // namespace bayesagg
