#pragma once
/// Task groups: the unit BayesAgg-MTL reasons about. A group shares one linear head
/// (weight [rows, d], bias [rows]) and one loss family.

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bayesagg {

/// What a group's head predicts and which loss trains it.
enum class GroupType {
  regression,  ///< o real outputs, loss sum_k (w_k^T h + b_k - y_k)^2
  binary,      ///< o binary tasks, loss sum_k BCEWithLogits(w_k^T h + b_k, y_k)
  multiclass,  ///< one task with K classes, loss CrossEntropy(W h + b, c)
};

/// Parses `regression`, `binary` (or the reference's `binary_tasks`) and `multiclass`.
GroupType parse_group_type(const std::string& name);
/// The canonical name of a group type.
std::string to_string(GroupType type);

/// One group of tasks with its own linear head.
struct TaskGroup {
  GroupType type = GroupType::regression;
  /// Regression outputs, binary tasks, or classes (multiclass).
  int64_t outputs = 1;
  /// Optional human-readable name used in logs and run records.
  std::string name;

  TaskGroup() = default;
  TaskGroup(GroupType type, int64_t outputs, std::string name = "");

  /// Number of tasks the group contributes (o, o, or 1 for multiclass).
  int64_t num_tasks() const;
  /// Number of rows of the group's head (o, o, or K).
  int64_t head_rows() const;
  /// Binary and multiclass groups use the Newton-step (GGN) posterior.
  bool is_classification() const { return type != GroupType::regression; }
  /// `regression:3`, `binary:20`, `multiclass:5`.
  std::string str() const;
};

/// Parses a comma-separated list such as `regression:11,binary:20,multiclass:5`.
std::vector<TaskGroup> parse_groups(const std::string& spec);
/// Total number of tasks over all groups.
int64_t total_tasks(const std::vector<TaskGroup>& groups);

/// Checks that `labels` fit `group` for a batch of `batch` examples: regression [B, o] floating,
/// binary [B, o] with values in {0, 1}, multiclass [B] integral in [0, K). `what` names the labels in
/// the error message.
void check_labels(const TaskGroup& group, const at::Tensor& labels, int64_t batch,
                  const std::string& what);

/// Labels of a batch, one tensor per task group (layouts as `check_labels`).
using Labels = std::vector<at::Tensor>;

/// A linear head: weight [rows, d], bias [rows].
struct Head {
  at::Tensor weight;
  at::Tensor bias;
};

}  // namespace bayesagg
