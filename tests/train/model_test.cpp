// The default networks: shapes, parameter counts, exposed heads, seeded initialisation.
#include "bayesagg/models/model.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

namespace bayesagg {
namespace {

std::vector<TaskGroup> two_multiclass() {
  return {TaskGroup(GroupType::multiclass, 10, "left"), TaskGroup(GroupType::multiclass, 10, "right")};
}

TEST(Model, FashionCnnHasTheSpecsShapesAndParameterCount) {
  MultiTaskModel m({1, 28, 28}, two_multiclass());
  EXPECT_EQ(m.trunk_name(), "cnn");
  // conv1 10*25+10, conv2 20*250+20, fc 320*64+64, heads 2*(10*64+10).
  EXPECT_EQ(m.num_parameters(), 260 + 5020 + 20544 + 1300);
  const at::Tensor h = m.representation(at::rand({3, 1, 28, 28}));
  EXPECT_EQ(h.sizes(), (at::IntArrayRef{3, 64}));
  const auto outs = m.head_outputs(h);
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[1].sizes(), (at::IntArrayRef{3, 10}));
  // ELU output is > -1.
  EXPECT_GT(h.min().item<double>(), -1.0);
}

TEST(Model, MlpTrunkAndRepresentationWidthOption) {
  MultiTaskModel m({32}, {TaskGroup(GroupType::regression, 10)},
                   ModelOptions().representation_dim(16));
  EXPECT_EQ(m.trunk_name(), "mlp");
  EXPECT_EQ(m.representation_dim(), 16);
  // 32*64+64, 64*64+64, 64*16+16, head 16*10+10.
  EXPECT_EQ(m.num_parameters(), 2112 + 4160 + 1040 + 170);
  EXPECT_EQ(m.representation(at::randn({5, 32})).sizes(), (at::IntArrayRef{5, 16}));
  EXPECT_THROW(m.representation(at::randn({5, 31})), c10::Error);
  EXPECT_THROW(MultiTaskModel({32}, {TaskGroup()}, ModelOptions().trunk("cnn")), c10::Error);
}

TEST(Model, HeadsAreTheRealParameters) {
  MultiTaskModel m({32}, {TaskGroup(GroupType::regression, 2), TaskGroup(GroupType::binary, 3)});
  const auto heads = m.heads();
  const auto params = m.head_parameters();
  ASSERT_EQ(heads.size(), 2u);
  EXPECT_EQ(heads[1].weight.sizes(), (at::IntArrayRef{3, 64}));
  EXPECT_TRUE(heads[0].weight.is_same(params[0]));
  EXPECT_TRUE(heads[1].bias.is_same(params[3]));
  // A change through the Head is a change of the model's output.
  const at::Tensor h = at::randn({4, 64});
  {
    at::NoGradGuard g;
    heads[0].bias.add_(1.0);
  }
  const at::Tensor out = m.head_outputs(h)[0];
  EXPECT_TRUE(at::allclose(out, at::linear(h, heads[0].weight, heads[0].bias)));
}

TEST(Model, InitialisationIsAPureFunctionOfTheSeed) {
  MultiTaskModel a({32}, {TaskGroup(GroupType::regression, 2)}, ModelOptions().seed(7));
  MultiTaskModel b({32}, {TaskGroup(GroupType::regression, 2)}, ModelOptions().seed(7));
  MultiTaskModel c({32}, {TaskGroup(GroupType::regression, 2)}, ModelOptions().seed(8));
  const auto pa = a.trunk_parameters(), pb = b.trunk_parameters(), pc = c.trunk_parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(at::equal(pa[i], pb[i]));
  EXPECT_FALSE(at::equal(pa[0], pc[0]));
  // PyTorch's default bound 1/sqrt(fan_in) = 1/sqrt(32).
  EXPECT_LE(pa[0].abs().max().item<double>(), 1.0 / std::sqrt(32.0));
}

}  // namespace
}  // namespace bayesagg
