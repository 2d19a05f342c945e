#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/bayes/posterior.h"
#include "bayesagg/dist/process_group.h"
#include "run_ranks.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <future>

namespace bayesagg {
namespace {

/// BayesAgg-MTL's full-data statistics of two ranks' halves of a data set, summed through the
/// reducer over Gloo, equal the statistics of the whole data set on one process.
TEST(DistStatistics, TwoRanksSumToTheOneProcessStatistics) {
  const std::vector<TaskGroup> groups{TaskGroup(GroupType::regression, 2),
                                      TaskGroup(GroupType::binary, 3),
                                      TaskGroup(GroupType::multiclass, 4)};
  const int64_t n = 301, d = 6;
  at::Generator r = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor h = at::randn({n, d}, r, at::kFloat);
  const Labels y{at::randn({n, 2}, r, at::kFloat), at::bernoulli(at::full({n, 3}, 0.5), r),
                 at::randint(4, {n}, r, at::kLong)};
  std::vector<Head> heads;
  for (const auto& g : groups) {
    heads.push_back({at::randn({g.head_rows(), d}, r, at::kFloat) * 0.3,
                     at::randn({g.head_rows()}, r, at::kFloat) * 0.1});
  }
  BayesAgg one(groups, d);
  const std::vector<PosteriorStats> want = one.statistics(h, y, heads);

  std::vector<PosteriorStats> got[2];
  const auto errors = testing::run_ranks(2, 30.0, [&](DistGroup& group) {
    // Rank 0 holds the first 150 rows, rank 1 the other 151.
    const int64_t rank = group.rank();
    const int64_t begin = rank == 0 ? 0 : 150, end = rank == 0 ? 150 : n;
    Labels part;
    for (const auto& l : y) part.push_back(l.slice(0, begin, end));
    BayesAgg agg(groups, d);
    got[rank] = agg.statistics(h.slice(0, begin, end), part, heads);
    all_reduce_statistics(group, got[rank]);
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  for (const auto& stats : got) {
    ASSERT_EQ(stats.size(), want.size());
    for (size_t g = 0; g < want.size(); ++g) {
      EXPECT_EQ(stats[g].count, want[g].count) << g;  // 150 + 151 rows: summed too
      const double scale = want[g].curvature.abs().max().item<double>();
      EXPECT_LE((stats[g].curvature - want[g].curvature).abs().max().item<double>(),
                1e-12 * scale) << g;
      EXPECT_LE((stats[g].rhs - want[g].rhs).abs().max().item<double>(),
                1e-12 * (want[g].rhs.abs().max().item<double>() + 1.0)) << g;
    }
  }
}

}  // namespace
}  // namespace bayesagg
