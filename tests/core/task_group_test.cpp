#include "bayesagg/core/losses.h"
#include "bayesagg/core/task_group.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

using namespace bayesagg;

TEST(TaskGroup, ParsesGroupListsInOrder) {
  const auto g = parse_groups("regression:11,binary:20,multiclass:5");
  ASSERT_EQ(g.size(), 3u);
  EXPECT_EQ(g[0].type, GroupType::regression);
  EXPECT_EQ(g[1].num_tasks(), 20);
  EXPECT_EQ(g[2].num_tasks(), 1);
  EXPECT_EQ(g[2].head_rows(), 5);
  EXPECT_EQ(total_tasks(g), 32);
  EXPECT_EQ(parse_group_type("binary_tasks"), GroupType::binary);
}

TEST(TaskGroup, RejectsBadSpecsWithTheBadValue) {
  EXPECT_THROW(parse_groups("regression"), c10::Error);
  EXPECT_THROW(parse_groups("regression:x"), c10::Error);
  EXPECT_THROW(parse_groups("poisson:3"), c10::Error);
  EXPECT_THROW(parse_groups("multiclass:1"), c10::Error);
  try {
    parse_groups("ternary:3");
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("ternary"), std::string::npos);
  }
}

TEST(TaskGroup, ChecksLabels) {
  const TaskGroup bin(GroupType::binary, 2), mc(GroupType::multiclass, 3);
  EXPECT_NO_THROW(check_labels(bin, at::tensor({0., 1., 1., 0.}).reshape({2, 2}), 2, "y"));
  EXPECT_THROW(check_labels(bin, at::tensor({0., 2., 1., 0.}).reshape({2, 2}), 2, "y"), c10::Error);
  EXPECT_THROW(check_labels(bin, at::zeros({3, 2}), 2, "y"), c10::Error);
  EXPECT_NO_THROW(check_labels(mc, at::tensor({0, 2}, at::kLong), 2, "y"));
  EXPECT_THROW(check_labels(mc, at::tensor({0, 3}, at::kLong), 2, "y"), c10::Error);
  EXPECT_THROW(check_labels(mc, at::tensor({0., 1.}), 2, "y"), c10::Error);
  const TaskGroup reg(GroupType::regression, 1);
  EXPECT_THROW(check_labels(reg, at::tensor({0., NAN}).reshape({2, 1}), 2, "y"), c10::Error);
}

TEST(Losses, MatchTheirDefinitions) {
  const at::Tensor out = at::tensor({0.5, -1.0, 2.0, 0.0}, at::kDouble).reshape({2, 2});
  // regression: mean over the batch of (out - y)^2, per output
  const at::Tensor y = at::tensor({1.0, -1.0, 0.0, 1.0}, at::kDouble).reshape({2, 2});
  const at::Tensor reg = task_losses(TaskGroup(GroupType::regression, 2), out, y);
  EXPECT_NEAR(reg[0].item<double>(), (0.25 + 4.0) / 2, 1e-12);
  EXPECT_NEAR(reg[1].item<double>(), (0.0 + 1.0) / 2, 1e-12);
  // binary: BCE with logits
  const at::Tensor yb = at::tensor({1.0, 0.0, 0.0, 1.0}, at::kDouble).reshape({2, 2});
  const at::Tensor bin = task_losses(TaskGroup(GroupType::binary, 2), out, yb);
  const auto bce = [](double z, double t) { return std::log1p(std::exp(-z)) + (1 - t) * z; };
  EXPECT_NEAR(bin[0].item<double>(), (bce(0.5, 1) + bce(2.0, 0)) / 2, 1e-12);
  // multiclass: cross-entropy, one task
  const at::Tensor mc = task_losses(TaskGroup(GroupType::multiclass, 2), out,
                                    at::tensor({1, 0}, at::kLong));
  ASSERT_EQ(mc.numel(), 1);
  const double l0 = std::log(std::exp(0.5) + std::exp(-1.0)) + 1.0;
  const double l1 = std::log(std::exp(2.0) + 1.0) - 2.0;
  EXPECT_NEAR(mc[0].item<double>(), (l0 + l1) / 2, 1e-12);
}
