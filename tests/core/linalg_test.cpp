#include "bayesagg/core/files.h"
#include "bayesagg/core/linalg.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include <filesystem>

using namespace bayesagg;

TEST(SafeCholesky, NoJitterForPositiveDefinite) {
  const at::Tensor a = at::tensor({4.0, 2.0, 2.0, 3.0}, at::kDouble).reshape({2, 2});
  const auto r = safe_cholesky(a);
  EXPECT_FALSE(r.jitter_used());
  EXPECT_NEAR((at::matmul(r.factor, r.factor.t()) - a).abs().max().item<double>(), 0, 1e-14);
}

TEST(SafeCholesky, AddsAndReportsJitterOnlyForTheFailingBlock) {
  // Block 0 is singular (rank one), block 1 is fine.
  const at::Tensor v = at::tensor({1.0, 2.0}, at::kDouble);
  const at::Tensor singular = at::outer(v, v);
  const at::Tensor good = at::eye(2, at::kDouble) * 3;
  const auto r = safe_cholesky(at::stack({singular, good}));
  EXPECT_TRUE(r.jitter_used());
  EXPECT_GT(r.jitter, 0);
  EXPECT_LT(r.jitter, 1e-3);
  EXPECT_NEAR((r.factor[1] - good.sqrt()).abs().max().item<double>(), 0, 1e-14);
  const at::Tensor back = at::matmul(r.factor[0], r.factor[0].t());
  EXPECT_NEAR((back - singular).abs().max().item<double>(), r.jitter, 1e-12);
}

TEST(SafeCholesky, ThrowsOnIndefiniteAndNonFinite) {
  const at::Tensor neg = -at::eye(3, at::kDouble);
  EXPECT_THROW(safe_cholesky(neg, "test"), c10::Error);
  // Only the lower triangle is factorised; a non-finite entry anywhere in it is an error with its
  // own message, whether LAPACK fails on it (NaN, -inf, inf off the diagonal) or not (+inf pivot).
  for (const auto& [i, j, v] : std::vector<std::tuple<int, int, double>>{
           {1, 0, NAN}, {2, 1, INFINITY}, {2, 0, -INFINITY}, {1, 1, INFINITY}, {2, 2, NAN}}) {
    at::Tensor bad = at::eye(3, at::kDouble) * 4;
    bad[i][j] = v;
    try {
      safe_cholesky(bad, "test");
      ADD_FAILURE() << "no error for " << v << " at (" << i << ", " << j << ")";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
    }
  }
  // In a batch, one bad block is enough.
  at::Tensor batch = at::eye(3, at::kDouble).expand({4, 3, 3}).contiguous();
  batch[2][1][1] = INFINITY;
  EXPECT_THROW(safe_cholesky(batch, "test"), c10::Error);
}

TEST(GaussHermite, IntegratesNormalMomentsExactly) {
  // An n-point rule is exact for polynomials of degree 2n - 1: E[z^2] = 1, E[z^4] = 3, E[z^6] = 15.
  const auto rule = gauss_hermite(5);
  const auto moment = [&](int k) { return (rule.weights * rule.nodes.pow(k)).sum().item<double>(); };
  EXPECT_NEAR(moment(0), 1.0, 1e-13);
  EXPECT_NEAR(moment(1), 0.0, 1e-13);
  EXPECT_NEAR(moment(2), 1.0, 1e-13);
  EXPECT_NEAR(moment(4), 3.0, 1e-12);
  EXPECT_NEAR(moment(6), 15.0, 1e-11);
  EXPECT_THROW(gauss_hermite(0), c10::Error);
}

TEST(Files, AtomicWriteReplacesWholeFileAndFailsCleanly) {
  const auto dir = std::filesystem::temp_directory_path() / "bayesagg_files_test";
  std::filesystem::remove_all(dir);
  make_directories(dir.string());
  const std::string path = (dir / "out.txt").string();
  write_file_atomic(path, "first");
  write_file_atomic(path, "second");
  EXPECT_EQ(read_file(path), "second");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);  // no temp files left
  EXPECT_THROW(write_file_atomic((dir / "missing" / "x.txt").string(), "x"), c10::Error);
  EXPECT_THROW(read_file((dir / "nope").string()), c10::Error);
  std::filesystem::remove_all(dir);
}
