#include "bayesagg/dist/process_group.h"
#include "run_ranks.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <future>
#include <thread>

namespace bayesagg {
namespace {

using testing::run_ranks;

TEST(DistGroup, AllReduceSumsAndAveragesThroughSeveralBuckets) {
  std::vector<at::Tensor> results[2];
  const auto errors = run_ranks(2, 30.0, [&](DistGroup& g) {
    const double r = static_cast<double>(g.rank());
    // Mixed dtypes and a 64-byte bucket: several flat buffers, one dtype each.
    std::vector<at::Tensor> t{at::full({3, 2}, 1.0 + r, at::kFloat),
                              at::arange(5, at::kDouble) * (r + 1.0),
                              at::full({20}, 0.25 * (r + 1.0), at::kDouble), at::Tensor()};
    g.all_reduce(t, ReduceMode::sum, "test values", 64);
    std::vector<at::Tensor> a{at::full({4}, 2.0 * r, at::kDouble)};
    g.all_reduce(a, ReduceMode::average, "test averages");
    t.push_back(a[0]);
    results[g.rank()] = t;
  });
  ASSERT_EQ(errors, (std::vector<std::string>{"", ""}));
  for (const auto& t : results) {
    EXPECT_TRUE(at::equal(t[0], at::full({3, 2}, 3.0, at::kFloat)));
    EXPECT_TRUE(at::equal(t[1], at::arange(5, at::kDouble) * 3.0));
    EXPECT_TRUE(at::equal(t[2], at::full({20}, 0.75, at::kDouble)));
    EXPECT_FALSE(t[3].defined());
    EXPECT_TRUE(at::equal(t[4], at::full({4}, 1.0, at::kDouble)));
  }
}

TEST(DistGroup, BroadcastCopiesRankZerosValues) {
  std::vector<at::Tensor> results[2];
  const auto errors = run_ranks(2, 30.0, [&](DistGroup& g) {
    // One generator per rank (the ranks are threads: the global generator would be shared).
    at::Generator r = at::make_generator<at::CPUGeneratorImpl>(100 + g.rank());
    std::vector<at::Tensor> p{at::randn({4, 3}, r), at::randn({7}, r, at::kDouble),
                              at::randn({2}, r)};
    g.broadcast(p, "parameters");
    results[g.rank()] = p;
  });
  ASSERT_EQ(errors, (std::vector<std::string>{"", ""}));
  at::Generator r = at::make_generator<at::CPUGeneratorImpl>(100);
  const at::Tensor a = at::randn({4, 3}, r), b = at::randn({7}, r, at::kDouble),
                   c = at::randn({2}, r);
  for (const auto& p : results) {
    EXPECT_TRUE(at::equal(p[0], a));
    EXPECT_TRUE(at::equal(p[1], b));
    EXPECT_TRUE(at::equal(p[2], c));
  }
}

TEST(DistGroup, AllGatherConcatenatesRanksOfDifferentLengths) {
  at::Tensor results[3];
  const auto errors = run_ranks(3, 30.0, [&](DistGroup& g) {
    const int64_t r = g.rank();
    // Rank r holds r + 1 rows [r, 10 r + k].
    at::Tensor rows = at::stack({at::full({r + 1}, static_cast<double>(r), at::kDouble),
                                 at::arange(r + 1, at::kDouble) + 10.0 * r},
                                1);
    results[r] = g.all_gather(rows, "scores");
  });
  ASSERT_EQ(errors, (std::vector<std::string>{"", "", ""}));
  const at::Tensor expected = at::tensor({0., 0., 1., 10., 1., 11., 2., 20., 2., 21., 2., 22.},
                                         at::kDouble)
                                  .view({6, 2});
  for (const auto& r : results) EXPECT_TRUE(at::equal(r, expected)) << r;
}

TEST(DistGroup, ALostRankStopsTheOtherWithinTheTimeoutNamingIt) {
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_ranks(2, 2.0, [&](DistGroup& g) {
    g.set_context("epoch 1, step 3");
    std::vector<at::Tensor> t{at::ones({8})};
    g.all_reduce(t, ReduceMode::sum, "gradients");
    // Rank 1 stalls past the timeout; rank 0 goes on to the next all-reduce.
    if (g.rank() == 1) std::this_thread::sleep_for(std::chrono::seconds(6));
    g.all_reduce(t, ReduceMode::sum, "gradients");
  });
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(errors[0].find("rank 0 of 2: the all-reduce of gradients at epoch 1, step 3 failed"),
            std::string::npos)
      << errors[0];
  EXPECT_NE(errors[0].find("lost rank 1"), std::string::npos) << errors[0];
  EXPECT_LT(seconds, 6.0 + 2.0 + 4.0);  // rank 1's stall, its own timeout, the grace period
}

TEST(DistOptions, ReadsTheTorchrunEnvironment) {
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"}) {
    unsetenv(v);
  }
  EXPECT_FALSE(dist_options_from_env(10.0).has_value());
  setenv("RANK", "1", 1);
  EXPECT_THROW(dist_options_from_env(10.0), c10::Error);  // WORLD_SIZE missing
  setenv("WORLD_SIZE", "4", 1);
  setenv("LOCAL_RANK", "0", 1);
  setenv("MASTER_ADDR", "10.0.0.7", 1);
  setenv("MASTER_PORT", "29612", 1);
  const DistOptions o = *dist_options_from_env(12.5);
  EXPECT_EQ(o.rank(), 1);
  EXPECT_EQ(o.world_size(), 4);
  EXPECT_EQ(o.local_rank(), 0);
  EXPECT_EQ(o.master_addr(), "10.0.0.7");
  EXPECT_EQ(o.master_port(), 29612);
  EXPECT_EQ(o.timeout(), 12.5);
  EXPECT_FALSE(o.host_store());
  EXPECT_EQ(o.local_world_size(), 1);  // unset: one rank on this machine
  setenv("LOCAL_WORLD_SIZE", "2", 1);
  EXPECT_EQ(dist_options_from_env(10.0)->local_world_size(), 2);
  setenv("LOCAL_WORLD_SIZE", "5", 1);
  EXPECT_THROW(dist_options_from_env(10.0), c10::Error);  // more than the world
  setenv("LOCAL_WORLD_SIZE", "2", 1);
  setenv("RANK", "0", 1);
  EXPECT_TRUE(dist_options_from_env(10.0)->host_store());
  setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  EXPECT_FALSE(dist_options_from_env(10.0)->host_store());
  setenv("RANK", "4", 1);
  try {
    dist_options_from_env(10.0);
    ADD_FAILURE() << "rank 4 of 4 accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(e.msg().find("rank 4: expected 0 to 3"), std::string::npos) << e.msg();
  }
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"}) {
    unsetenv(v);
  }
}

}  // namespace
}  // namespace bayesagg
