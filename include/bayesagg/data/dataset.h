#pragma once
/// In-memory multi-task data sets: a split holds every input and the labels of every task group;
/// a benchmark bundles the groups, the task names, the train/validation/test splits and what is
/// needed to report metrics on the original scale. `EpochBatches` cuts an epoch into mini-batches
/// of indices (shuffled with an explicit generator) without copying the data.

#include "bayesagg/core/task_group.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <iterator>
#include <string>
#include <vector>

namespace bayesagg {

/// One mini-batch: inputs [B, ...] and labels per task group (layouts as `check_labels`).
struct MultiTaskBatch {
  at::Tensor inputs;
  Labels labels;
};

/// One split of a data set, all in memory.
struct MultiTaskSplit {
  /// Inputs [N, ...], float32.
  at::Tensor inputs;
  /// Labels per task group, N rows each: regression [N, o] float32, binary [N, o] float32 0/1,
  /// multiclass [N] int64.
  Labels labels;
  /// Optional provenance, not used for training: for the multi-fashion family the index (within
  /// the split) of each item's partner (right) image, [N] int64; undefined otherwise.
  at::Tensor partners;

  /// Number of items N (0 for an empty split).
  int64_t size() const;
  /// The items at `indices` ([B] int64): `index_select` of the inputs and of every label tensor.
  MultiTaskBatch batch(const at::Tensor& indices) const;
  /// The first `n` items (0 <= n <= size()), as contiguous copies (so the rest can be freed).
  MultiTaskSplit head(int64_t n) const;
  /// The items [start, start + length), as views (no copy).
  MultiTaskSplit slice(int64_t start, int64_t length) const;
};

/// Throws (the message starts with `what`) unless `split` has floating inputs and one label
/// tensor per group, each fitting its group as `check_labels` (and `partners`, when defined, has
/// N entries).
void check_split(const MultiTaskSplit& split, const std::vector<TaskGroup>& groups,
                 const std::string& what);

/// How a regression group's labels were standardised: original = label * std + mean, per output.
/// Undefined tensors (the default) mean the labels are on their original scale.
struct TargetScaling {
  /// [o] float64.
  at::Tensor mean;
  /// [o] float64, > 0.
  at::Tensor std;

  bool defined() const { return mean.defined(); }
  /// `values` [B, o] (standardised) on the original scale: values * std + mean, in the dtype of
  /// `values`; returned unchanged when the scaling is undefined.
  at::Tensor to_original(const at::Tensor& values) const;
  /// `values` [B, o] (original scale) standardised: (values - mean) / std.
  at::Tensor to_standardised(const at::Tensor& values) const;
};

/// A benchmark: task groups, one name per task, three splits, and metadata for metrics.
struct Benchmark {
  /// E.g. `multi-fashion`.
  std::string name;
  std::vector<TaskGroup> groups;
  /// One name per task (`total_tasks(groups)` of them), in group order.
  std::vector<std::string> task_names;
  MultiTaskSplit train, val, test;
  /// Per group (same length as `groups`): how its labels were standardised; undefined for
  /// classification groups and for regression labels on their original scale.
  std::vector<TargetScaling> target_scaling;
  /// synthetic-regression: the scale sigma_t of each task, [T] float64 in task order; undefined
  /// for other benchmarks.
  at::Tensor task_scales;
  /// synthetic-regression: the noise level nu_t of each task, [T] float64; undefined otherwise.
  at::Tensor noise_levels;
  /// The data seed the benchmark was built with.
  uint64_t seed = 0;

  int64_t num_tasks() const { return total_tasks(groups); }
  /// The shape of one input (the inputs' sizes without the first), e.g. {1, 28, 28}.
  std::vector<int64_t> input_shape() const;
  /// Group `group`'s predictions or labels [B, o] on the original scale (unchanged when the group
  /// is not standardised).
  at::Tensor to_original(size_t group, const at::Tensor& values) const;
  /// Checks every split against the groups, and the metadata's lengths; throws naming the
  /// benchmark and the bad part.
  void validate() const;
};

/// One line: `multi-fashion: multiclass:10,multiclass:10; inputs [1, 28, 28]; train 50000,
/// val 10000, test 10000; seed 0`.
std::ostream& operator<<(std::ostream& os, const Benchmark& b);

/// The mini-batches of indices of one epoch over `size` items: a permutation of [0, size)
/// (`at::randperm` with `generator`; 0, 1, ..., size-1 when `generator` is undefined) cut into
/// consecutive batches of `batch_size`; the last batch keeps the remainder (it may be smaller).
/// Each batch is a view of the one permutation tensor: nothing is copied per batch. The generator
/// is a shared handle: building the batches advances its state, so successive epochs built with
/// the same generator get different permutations, and a run is reproducible from its seed. Iterate
/// with range-for or by index:
///
///     for (const at::Tensor& idx : EpochBatches(train.size(), 256, generator)) {
///       const MultiTaskBatch b = train.batch(idx);  ...
///     }
class EpochBatches {
 public:
  EpochBatches(int64_t size, int64_t batch_size, at::Generator generator = {});

  /// Number of batches: ceil(size / batch_size).
  int64_t num_batches() const;
  /// Indices [<= batch_size] int64 of batch `b` (0 <= b < num_batches()).
  at::Tensor operator[](int64_t b) const;
  /// The whole permutation [size] int64.
  const at::Tensor& order() const { return order_; }
  int64_t batch_size() const { return batch_size_; }

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = at::Tensor;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = at::Tensor;

    iterator(const EpochBatches* owner, int64_t b) : owner_(owner), b_(b) {}
    at::Tensor operator*() const { return (*owner_)[b_]; }
    iterator& operator++() {
      ++b_;
      return *this;
    }
    bool operator==(const iterator& o) const { return b_ == o.b_; }
    bool operator!=(const iterator& o) const { return b_ != o.b_; }

   private:
    const EpochBatches* owner_;
    int64_t b_;
  };
  iterator begin() const { return iterator(this, 0); }
  iterator end() const { return iterator(this, num_batches()); }

 private:
  at::Tensor order_;
  int64_t batch_size_;
};

}  // namespace bayesagg
