// BayesAgg-MTL data-parallel (threads as ranks, Gloo on 127.0.0.1): with a reducer, every rank
// holds the one-process full-data and batch statistics, noise estimates and running statistics,
// and its shard's rows of the one-process dL/dh (divided by the global batch size).
#include "bayesagg/bayes/bayes_agg.h"
#include "bayesagg/bayes/posterior.h"
#include "bayesagg/dist/process_group.h"
#include "run_ranks.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <torch/serialize/archive.h>

#include <future>
#include <memory>
#include <sstream>

namespace bayesagg {
namespace {

struct Problem {
  std::vector<TaskGroup> groups{TaskGroup(GroupType::regression, 2),
                                TaskGroup(GroupType::binary, 3)};
  int64_t n = 101, d = 5;
  at::Tensor h_epoch, h_batch;
  Labels y_epoch, y_batch;
  std::vector<Head> heads;

  Problem() {
    at::Generator r = at::make_generator<at::CPUGeneratorImpl>(11);
    h_epoch = at::randn({n, d}, r, at::kFloat);
    h_batch = at::randn({n, d}, r, at::kFloat);
    for (const at::Tensor* h : {&h_epoch, &h_batch}) {
      Labels& y = h == &h_epoch ? y_epoch : y_batch;
      y = {at::randn({n, 2}, r, at::kFloat), at::bernoulli(at::full({n, 3}, 0.5), r)};
    }
    for (const auto& g : groups) {
      heads.push_back({at::randn({g.head_rows(), d}, r, at::kFloat) * 0.3,
                       at::randn({g.head_rows()}, r, at::kFloat) * 0.1});
    }
  }
};

/// What a rank ends with after a warm-up epoch on rows [begin, end) and one BayesAgg step on the
/// same rows of the next batch.
struct Outcome {
  std::vector<GaussianPosterior> full;
  std::vector<PosteriorStats> running;
  std::vector<at::Tensor> noise;
  at::Tensor dL_dh;
  Aggregation agg;
};

Outcome run_rows(const Problem& p, const BayesAggOptions& o, int64_t begin, int64_t end,
                 const TensorReducer& reducer) {
  BayesAgg agg(p.groups, p.d, o);
  if (reducer) agg.set_reducer(reducer);
  auto rows = [&](const Labels& y) {
    Labels part;
    for (const auto& l : y) part.push_back(l.slice(0, begin, end));
    return part;
  };
  agg.reserve(end - begin);
  agg.observe(p.h_epoch.slice(0, begin, end), rows(p.y_epoch));
  agg.end_epoch();
  const at::Tensor rep = p.h_batch.slice(0, begin, end).clone().requires_grad_(true);
  const at::Tensor losses = rep.sum(1).pow(2).mean().unsqueeze(0);
  Outcome out;
  out.dL_dh = agg.backward(losses, p.heads, rep, rows(p.y_batch)).to(at::kDouble);
  out.full = agg.current_full_data_posteriors();
  out.running = agg.running_statistics();
  out.noise = agg.observation_noise();
  // The batch statistics of the step, as the next step would reduce them.
  out.agg = agg.aggregate(out.full, p.h_batch.slice(0, begin, end), rows(p.y_batch), p.heads);
  return out;
}

double relative(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         (b.to(at::kDouble).abs().max().item<double>() + 1e-300);
}

void expect_two_ranks_equal_one(const BayesAggOptions& o) {
  const Problem p;
  const Outcome want = run_rows(p, o, 0, p.n, {});
  const int64_t cut = 50;  // rank 0: rows [0, 50), rank 1: [50, 101)
  Outcome got[2];
  const auto errors = testing::run_ranks(2, 30.0, [&](DistGroup& group) {
    const int64_t rank = group.rank();
    got[rank] = run_rows(p, o, rank == 0 ? 0 : cut, rank == 0 ? cut : p.n,
                         [&group](const std::vector<at::Tensor>& t, const char* what) {
                           group.all_reduce(t, ReduceMode::sum, what);
                         });
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  for (int64_t rank = 0; rank < 2; ++rank) {
    const Outcome& g = got[rank];
    ASSERT_EQ(g.full.size(), want.full.size());
    for (size_t k = 0; k < want.full.size(); ++k) {
      EXPECT_LE(relative(g.full[k].mean, want.full[k].mean), 1e-12) << rank << " group " << k;
      EXPECT_LE(relative(g.full[k].precision, want.full[k].precision), 1e-12) << k;
      const PosteriorStats& b = g.agg.groups[k].batch_stats;
      const PosteriorStats& w = want.agg.groups[k].batch_stats;
      EXPECT_EQ(b.count, w.count) << k;
      EXPECT_LE(relative(b.curvature, w.curvature), 1e-12) << rank << " group " << k;
      EXPECT_LE(relative(b.rhs, w.rhs), 1e-12) << rank << " group " << k;
      EXPECT_LE(relative(g.agg.groups[k].posterior.mean, want.agg.groups[k].posterior.mean),
                1e-12) << k;
    }
    EXPECT_EQ(g.agg.batch_size, p.n);
    ASSERT_EQ(g.noise.size(), want.noise.size());
    for (size_t k = 0; k < want.noise.size(); ++k) {
      ASSERT_EQ(g.noise[k].defined(), want.noise[k].defined());
      if (want.noise[k].defined()) EXPECT_LE(relative(g.noise[k], want.noise[k]), 1e-12) << k;
    }
    ASSERT_EQ(g.running.size(), want.running.size());
    for (size_t k = 0; k < want.running.size(); ++k) {
      EXPECT_EQ(g.running[k].count, want.running[k].count);
      EXPECT_LE(relative(g.running[k].curvature, want.running[k].curvature), 1e-12) << k;
      EXPECT_LE(relative(g.running[k].rhs, want.running[k].rhs), 1e-12) << k;
    }
    // The shard's rows of the one-process dL/dh (dL/dh is float32 here, as the representation).
    const at::Tensor rows = want.dL_dh.slice(0, rank == 0 ? 0 : cut, rank == 0 ? cut : p.n);
    EXPECT_LE(relative(g.dL_dh, rows), 1e-6) << rank;
    EXPECT_LE(relative(g.agg.dL_dh, want.agg.dL_dh.slice(0, rank == 0 ? 0 : cut,
                                                         rank == 0 ? cut : p.n)),
              1e-12) << rank;
  }
}

TEST(DistBayesAgg, TheReferenceOnTwoRanksEqualsOneProcess) {
  expect_two_ranks_equal_one(BayesAggOptions::reference());
}

TEST(DistBayesAgg, TaskWeightingEstimatedNoiseAndSumOnTwoRanksEqualOneProcess) {
  expect_two_ranks_equal_one(BayesAggOptions()
                                 .centre(PosteriorCentre::head)
                                 .noise(ObservationNoise::estimated)
                                 .weighting(Weighting::task)
                                 .scale(GradientScale::sum));
}

TEST(DistBayesAgg, RunningStatisticsAndNormalisedNoiseOnTwoRanksEqualOneProcess) {
  expect_two_ranks_equal_one(BayesAggOptions()
                                 .refresh(PosteriorRefresh::running)
                                 .noise(ObservationNoise::normalised)
                                 .weighting(Weighting::snr));
}

/// A rank's BayesAgg after a warm-up epoch on rows [begin, end) and one step on the same rows of
/// the next batch (the step draws from the rank's generator).
std::unique_ptr<BayesAgg> rank_after_a_step(const Problem& p, int64_t rank, int64_t begin,
                                            int64_t end, DistGroup& group) {
  auto agg = std::make_unique<BayesAgg>(
      p.groups, p.d, BayesAggOptions().seed(static_cast<uint64_t>(7 + rank)));
  agg->set_reducer([&group](const std::vector<at::Tensor>& t, const char* what) {
    group.all_reduce(t, ReduceMode::sum, what);
  });
  agg->set_process(rank, 2);
  Labels y_epoch, y_batch;
  for (const auto& l : p.y_epoch) y_epoch.push_back(l.slice(0, begin, end));
  for (const auto& l : p.y_batch) y_batch.push_back(l.slice(0, begin, end));
  agg->reserve(end - begin);
  agg->observe(p.h_epoch.slice(0, begin, end), y_epoch);
  agg->end_epoch();
  const at::Tensor rep = p.h_batch.slice(0, begin, end).clone().requires_grad_(true);
  agg->backward(rep.sum(1).pow(2).mean().unsqueeze(0), p.heads, rep, y_batch);
  return agg;
}

/// What `gather_for_checkpoint` hands to the gatherer: the rank-local state, in order.
std::vector<at::Tensor> local_state(BayesAgg& agg) {
  std::vector<at::Tensor> seen;
  agg.gather_for_checkpoint([&seen](const at::Tensor& t, const char*) {
    seen.push_back(t.clone());
    return t;  // one process's "concatenation"
  });
  return seen;
}

TEST(DistBayesAgg, ACheckpointOfTwoRanksGivesEachRankBackItsOwnShardAndGenerator) {
  const Problem p;
  const int64_t cut = 50;
  std::string archive;
  std::vector<at::Tensor> state[2];
  const auto errors = testing::run_ranks(2, 30.0, [&](DistGroup& group) {
    const int64_t rank = group.rank();
    auto agg = rank_after_a_step(p, rank, rank == 0 ? 0 : cut, rank == 0 ? cut : p.n, group);
    agg->gather_for_checkpoint([&](const at::Tensor& t, const char* what) {
      state[rank].push_back(t.clone());
      return group.all_gather(t, what);
    });
    if (rank == 0) {
      torch::serialize::OutputArchive out;
      agg->save(out);
      std::ostringstream bytes;
      out.save_to(bytes);
      archive = bytes.str();
    }
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  // Per epoch (this one holds the step's batch) the row count, the features and the two groups'
  // labels, then the generator: 2 x (1 + 1 + 2) + 1.
  ASSERT_EQ(state[0].size(), 9u);
  for (int64_t rank = 0; rank < 2; ++rank) {
    BayesAgg restored(p.groups, p.d);
    restored.set_process(rank, 2);
    std::istringstream bytes(archive);
    torch::serialize::InputArchive in;
    in.load_from(bytes);
    restored.load(in);
    const std::vector<at::Tensor> got = local_state(restored);
    ASSERT_EQ(got.size(), state[rank].size()) << rank;
    for (size_t k = 0; k < got.size(); ++k) {
      EXPECT_TRUE(at::equal(got[k], state[rank][k])) << "rank " << rank << ", part " << k;
    }
  }
  EXPECT_FALSE(at::equal(state[0].back(), state[1].back())) << "the generators should differ";
  // One process cannot take a two-process checkpoint.
  BayesAgg single(p.groups, p.d);
  std::istringstream bytes(archive);
  torch::serialize::InputArchive in;
  in.load_from(bytes);
  try {
    single.load(in);
    FAIL() << "a two-process checkpoint loaded on one process";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("written by a run of 2 process(es) but this one has 1"),
              std::string::npos) << e.msg();
  }
}

TEST(DistBayesAgg, SavingOnTwoProcessesWithoutGatheringIsRefused) {
  BayesAgg agg({TaskGroup(GroupType::binary, 2)}, 3);
  agg.set_process(0, 2);
  torch::serialize::OutputArchive out;
  try {
    agg.save(out);
    FAIL() << "saved a two-process state without gathering it";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("call gather_for_checkpoint"), std::string::npos)
        << e.msg();
  }
  EXPECT_THROW(agg.set_process(2, 2), c10::Error);
}

// The ranks send only the upper triangle of each (symmetric) curvature: the reduced multiclass
// batch statistics [1, K q, K q] are the one-process ones, both triangles.
TEST(DistBayesAgg, MulticlassBatchStatisticsSummedFromUpperTrianglesEqualOneProcess) {
  const std::vector<TaskGroup> groups{TaskGroup(GroupType::multiclass, 4)};
  const int64_t n = 37, d = 3;
  at::Generator r = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor h = at::randn({n, d}, r, at::kFloat);
  const Labels y{at::randint(4, {n}, r, at::kLong)};
  const std::vector<Head> heads{{at::randn({4, d}, r, at::kFloat) * 0.3,
                                 at::randn({4}, r, at::kFloat) * 0.1}};
  BayesAgg one(groups, d);
  const std::vector<GaussianPosterior> prior = one.full_data_posteriors(one.statistics(h, y, heads), heads);
  const PosteriorStats want = one.aggregate(prior, h, y, heads).groups[0].batch_stats;
  PosteriorStats got[2];
  const auto errors = testing::run_ranks(2, 30.0, [&](DistGroup& group) {
    const int64_t rank = group.rank(), begin = rank == 0 ? 0 : 20, end = rank == 0 ? 20 : n;
    BayesAgg agg(groups, d);
    agg.set_reducer([&group](const std::vector<at::Tensor>& t, const char* what) {
      group.all_reduce(t, ReduceMode::sum, what);
    });
    got[rank] = agg.aggregate(prior, h.slice(0, begin, end), {y[0].slice(0, begin, end)}, heads)
                    .groups[0].batch_stats;
  });
  for (const auto& e : errors) ASSERT_EQ(e, "");
  for (const auto& g : got) {
    ASSERT_EQ(g.curvature.sizes(), want.curvature.sizes());
    EXPECT_EQ(g.count, want.count);
    EXPECT_LE(relative(g.curvature, want.curvature), 1e-12);
    EXPECT_LE(relative(g.rhs, want.rhs), 1e-12);
    EXPECT_TRUE(at::equal(g.curvature, g.curvature.transpose(-1, -2)));
  }
}

TEST(DistBayesAgg, CentreModeIsRefusedWithAReducer) {
  BayesAgg agg({TaskGroup(GroupType::binary, 2)}, 3, BayesAggOptions().centre(PosteriorCentre::mode));
  try {
    agg.set_reducer([](const std::vector<at::Tensor>&, const char*) {});
    FAIL() << "centre = mode with a reducer was accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("centre = mode"), std::string::npos) << e.msg();
  }
}

}  // namespace
}  // namespace bayesagg
