#include "bayesagg/bayes/posterior.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

using namespace bayesagg;

namespace {

at::Generator gen(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

struct Data {
  at::Tensor h, y;
  Head head;
};

Data make_data(const TaskGroup& g, int64_t n, int64_t d, uint64_t seed) {
  auto r = gen(seed);
  Data data;
  data.h = at::randn({n, d}, r, at::kDouble);
  data.head = {at::randn({g.head_rows(), d}, r, at::kDouble) * 0.5,
               at::randn({g.head_rows()}, r, at::kDouble) * 0.5};
  switch (g.type) {
    case GroupType::regression: data.y = at::randn({n, g.outputs}, r, at::kDouble); break;
    case GroupType::binary:
      data.y = at::bernoulli(at::full({n, g.outputs}, 0.4, at::kDouble), r);
      break;
    case GroupType::multiclass: data.y = at::randint(g.outputs, {n}, r, at::kLong); break;
  }
  return data;
}

}  // namespace

TEST(Posterior, RegressionMatchesDirectSolve) {
  const TaskGroup g(GroupType::regression, 3);
  const Data data = make_data(g, 40, 5, 1);
  const double gamma = 0.7;
  const auto post = posterior_update(g, isotropic_prior(g, 5, gamma),
                                     posterior_stats(g, data.h, data.y, {}), {});
  const at::Tensor lambda = at::eye(5, at::kDouble) / gamma + at::matmul(data.h.t(), data.h);
  const at::Tensor m = at::linalg_solve(lambda, at::matmul(data.h.t(), data.y));  // [d, o]
  EXPECT_LT(max_abs(post.mean - m.t()), 1e-12);
  EXPECT_LT(max_abs(post.covariance()[0] - at::inverse(lambda)), 1e-12);
  EXPECT_EQ(post.jitter, 0.0);
}

TEST(Posterior, RegressionBatchUpdateUsesFullDataPosteriorAsPrior) {
  // Lambda_B = Lambda_N + H_B^T H_B, M_B = Lambda_B^-1 (Lambda_N M_N + H_B^T Y_B)
  const TaskGroup g(GroupType::regression, 2);
  const Data full = make_data(g, 30, 4, 2), batch = make_data(g, 6, 4, 3);
  const auto post_n = posterior_update(g, isotropic_prior(g, 4, 1.0),
                                       posterior_stats(g, full.h, full.y, {}), {});
  const auto post_b = posterior_update(g, post_n, posterior_stats(g, batch.h, batch.y, {}), {});
  const at::Tensor lb = post_n.precision[0] + at::matmul(batch.h.t(), batch.h);
  const at::Tensor mb = at::linalg_solve(
      lb, at::matmul(post_n.precision[0], post_n.mean.t()) + at::matmul(batch.h.t(), batch.y));
  EXPECT_LT(max_abs(post_b.mean - mb.t()), 1e-12);
}

TEST(Posterior, StatisticsAreAdditiveOverExamplesAndChunks) {
  for (const auto& g : {TaskGroup(GroupType::regression, 2), TaskGroup(GroupType::binary, 3),
                        TaskGroup(GroupType::multiclass, 4)}) {
    const Data data = make_data(g, 50, 6, 4);
    const at::Tensor phi = head_parameters(g, data.head);
    const auto whole = posterior_stats(g, data.h, data.y, phi, /*chunk_rows=*/1000);
    auto parts = posterior_stats(g, data.h.narrow(0, 0, 20), data.y.narrow(0, 0, 20), phi);
    parts.add_(posterior_stats(g, data.h.narrow(0, 20, 30), data.y.narrow(0, 20, 30), phi));
    EXPECT_EQ(parts.count, 50);
    EXPECT_LT(max_abs(whole.curvature - parts.curvature), 1e-11) << g.str();
    EXPECT_LT(max_abs(whole.rhs - parts.rhs), 1e-11) << g.str();
  }
}

namespace {
/// Reference construction with explicit per-example Jacobians over the dense parameter vector
/// phi = vec([W | b]) (row-major): the way the authors' code builds the Newton step.
std::pair<at::Tensor, at::Tensor> dense_newton(const TaskGroup& g, const Data& data,
                                               const at::Tensor& lambda0, const at::Tensor& m0) {
  const int64_t n = data.h.size(0), d = data.h.size(1), k = g.outputs, q = d + 1, p = k * q;
  const at::Tensor phi = at::cat({data.head.weight, data.head.bias.unsqueeze(1)}, 1).reshape({p});
  at::Tensor lambda = lambda0.clone(), grad = at::matmul(lambda0, phi - m0);
  for (int64_t i = 0; i < n; ++i) {
    const at::Tensor ht = at::cat({data.h[i], at::ones({1}, at::kDouble)});
    const at::Tensor jac = at::kron(at::eye(k, at::kDouble), ht.unsqueeze(0));  // [K, p]
    const at::Tensor logits = at::matmul(jac, phi);
    at::Tensor resid, hess;
    if (g.type == GroupType::binary) {
      const at::Tensor s = at::sigmoid(logits);
      resid = s - data.y[i];
      hess = at::diag(s * (1 - s));
    } else {
      const at::Tensor s = at::softmax(logits, 0);
      resid = s - at::one_hot(data.y[i], k).to(at::kDouble);
      hess = at::diag(s) - at::outer(s, s);
    }
    lambda += at::matmul(at::matmul(jac.t(), hess), jac);
    grad += at::matmul(jac.t(), resid);
  }
  return {phi - at::linalg_solve(lambda, grad), lambda};
}
}  // namespace

TEST(Posterior, BinaryBlocksEqualTheDenseNewtonStep) {
  const TaskGroup g(GroupType::binary, 3);
  const Data data = make_data(g, 25, 4, 5);
  const double gamma = 0.3;
  const int64_t p = 3 * 5;
  const auto [mean, lambda] =
      dense_newton(g, data, at::eye(p, at::kDouble) / gamma, at::zeros({p}, at::kDouble));
  const at::Tensor phi = head_parameters(g, data.head);
  const auto post = posterior_update(g, isotropic_prior(g, 4, gamma),
                                     posterior_stats(g, data.h, data.y, phi), phi);
  EXPECT_LT(max_abs(post.mean.reshape({p}) - mean), 1e-12);
  // The dense precision is block-diagonal with exactly our blocks.
  for (int64_t k = 0; k < 3; ++k) {
    EXPECT_LT(max_abs(post.precision[k] - lambda.narrow(0, 5 * k, 5).narrow(1, 5 * k, 5)), 1e-11);
  }
  EXPECT_LT(max_abs(at::block_diag({post.precision[0], post.precision[1], post.precision[2]}) -
                    lambda),
            1e-11);
}

TEST(Posterior, MulticlassWideAndPackedLayoutsGiveTheDenseGgn) {
  // Beyond d + 1 = 160 the GGN blocks are accumulated in the wide layout instead of the packed one
  // (and for N larger than a chunk, over several chunks); both must give the dense precision.
  for (const int64_t d : {6, 170}) {
    const TaskGroup g(GroupType::multiclass, 3);
    const Data data = make_data(g, 70, d, 11);
    const double gamma = 0.2;
    const int64_t p = 3 * (d + 1);
    const auto [mean, lambda] =
        dense_newton(g, data, at::eye(p, at::kDouble) / gamma, at::zeros({p}, at::kDouble));
    const at::Tensor phi = head_parameters(g, data.head);
    const auto post = posterior_update(g, isotropic_prior(g, d, gamma),
                                       posterior_stats(g, data.h, data.y, phi, /*chunk_rows=*/8), phi);
    EXPECT_LT(max_abs(post.precision[0] - lambda), 1e-10) << "d = " << d;
    EXPECT_LT(max_abs(post.mean[0] - mean), 1e-10) << "d = " << d;
  }
}

TEST(Posterior, MulticlassGgnEqualsKroneckerSumAndNewtonStep) {
  const TaskGroup g(GroupType::multiclass, 3);
  const Data data = make_data(g, 30, 4, 6);
  const double gamma = 0.5;
  const int64_t p = 3 * 5;
  // Prior with a non-zero mean and a full precision, as for a batch posterior.
  auto r = gen(7);
  const at::Tensor a = at::randn({p, p}, r, at::kDouble);
  const at::Tensor lambda0 = at::matmul(a, a.t()) / p + at::eye(p, at::kDouble) / gamma;
  const at::Tensor m0 = at::randn({p}, r, at::kDouble) * 0.1;
  const auto [mean, lambda] = dense_newton(g, data, lambda0, m0);
  GaussianPosterior prior;
  prior.mean = m0.unsqueeze(0);
  prior.precision = lambda0.unsqueeze(0);
  const at::Tensor phi = head_parameters(g, data.head);
  const auto post = posterior_update(g, prior, posterior_stats(g, data.h, data.y, phi), phi);
  EXPECT_LT(max_abs(post.precision[0] - lambda), 1e-11);
  EXPECT_LT(max_abs(post.mean[0] - mean), 1e-11);
}

TEST(Posterior, ChecksShapes) {
  const TaskGroup g(GroupType::binary, 2);
  EXPECT_THROW(isotropic_prior(g, 4, 0.0), c10::Error);
  EXPECT_THROW(head_parameters(g, {at::zeros({3, 4}), at::zeros({3})}), c10::Error);
}
