// Batch sources of every benchmark kind, the prefetching loader, and that a run's numbers do not
// depend on prefetching (UTKFace: random crops and flips).
#include "bayesagg/train/batch_source.h"

#include "bayesagg/data/paper/utkface.h"
#include "bayesagg/models/model.h"
#include "bayesagg/train/checkpoint.h"
#include "bayesagg/train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "paper/paper_data.h"
#include "test_util.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>

using namespace bayesagg;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;
namespace pd = bayesagg::testing::paper_data;

namespace {

/// A source whose batch b is the indices as floats times 10 plus the seed's low bits, and which
/// fails on a batch holding index `fail_at`.
class CountingSource : public BatchSource {
 public:
  explicit CountingSource(int64_t n, int64_t fail_at = -1) : n_(n), fail_at_(fail_at) {
    labels_ = {at::arange(n, at::kLong)};
  }
  int64_t size() const override { return n_; }
  const Labels& labels() const override { return labels_; }
  ModelBatch batch(const at::Tensor& indices, bool train, uint64_t seed) const override {
    TORCH_CHECK(fail_at_ < 0 || !indices.eq(fail_at_).any().item<bool>(), "bad item ", fail_at_);
    ModelBatch b;
    b.inputs = indices.to(at::kDouble) * 10 + (train ? static_cast<double>(seed % 7) : 0.0);
    b.labels = {indices.clone()};
    return b;
  }

 private:
  int64_t n_, fail_at_;
  Labels labels_;
};

std::vector<at::Tensor> chunks(int64_t n, int64_t size) {
  std::vector<at::Tensor> out;
  for (int64_t s = 0; s < n; s += size) out.push_back(at::arange(s, std::min(n, s + size), at::kLong));
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Sets BAYESAGG_CACHE_DIR for the scope.
struct CacheDir {
  TempDir dir;
  CacheDir() { ::setenv("BAYESAGG_CACHE_DIR", dir.path.c_str(), 1); }
  ~CacheDir() { ::unsetenv("BAYESAGG_CACHE_DIR"); }
};

}  // namespace

TEST(Prefetcher, HandsOutExactlyTheSourcesBatchesInOrderAtAnyDepth) {
  auto src = std::make_shared<CountingSource>(23);
  const std::vector<uint64_t> seeds = {3, 4, 5, 6, 7};
  for (int64_t depth : {0, 1, 2, 8}) {
    Prefetcher p(src, chunks(23, 5), true, seeds, depth);
    ASSERT_EQ(p.num_batches(), 5);
    for (int64_t b = 0; b < 5; ++b) {
      const ModelBatch got = p.next();
      const ModelBatch want = src->batch(chunks(23, 5)[static_cast<size_t>(b)], true, seeds[static_cast<size_t>(b)]);
      EXPECT_TRUE(at::equal(got.inputs, want.inputs)) << "depth " << depth << " batch " << b;
      EXPECT_EQ(got.size(), b < 4 ? 5 : 3);
    }
    EXPECT_THROW(p.next(), c10::Error);
  }
}

TEST(Prefetcher, RethrowsAFailureAtTheFailingBatchAndStopsEarlyWithoutHanging) {
  auto src = std::make_shared<CountingSource>(20, 12);  // batch 2 (items 10..14) fails
  Prefetcher p(src, chunks(20, 5), false, {}, 3);
  EXPECT_EQ(p.next().size(), 5);
  EXPECT_EQ(p.next().size(), 5);
  EXPECT_TRUE(contains(error_of([&] { p.next(); }), "bad item 12"));
  // Destroyed with batches not taken: the thread is stopped and joined.
  auto big = std::make_shared<CountingSource>(1000);
  { Prefetcher q(big, chunks(1000, 1), false, {}, 2); q.next(); }
}

TEST(BatchSource, AugmentSeedsDifferPerEpochAndBatchAndRepeatPerRun) {
  EXPECT_EQ(augment_seed(1, 2, 3), augment_seed(1, 2, 3));
  EXPECT_NE(augment_seed(1, 2, 3), augment_seed(1, 2, 4));
  EXPECT_NE(augment_seed(1, 2, 3), augment_seed(1, 3, 3));
  EXPECT_NE(augment_seed(1, 2, 3), augment_seed(2, 2, 3));
}

#if BAYESAGG_WITH_IMAGES
TEST(BatchSource, ImageSourceAugmentsFromTheSeedOnlyWhenTraining) {
  CacheDir cache;
  TempDir dir;
  pd::write_faces(dir.path, /*patterned=*/true);
  const ImageBenchmark b = make_utkface_benchmark(
      UTKFaceOptions().data_dir(dir.path.string()).image_size(24).crop_size(16).use_cache(false));
  const TrainData d = make_train_data(b);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{3, 16, 16}));
  EXPECT_EQ(d.train->size(), 11);
  const at::Tensor idx = at::arange(11, at::kLong);
  const ModelBatch a = d.train->batch(idx, true, 5), a2 = d.train->batch(idx, true, 5);
  const ModelBatch c = d.train->batch(idx, true, 6);
  EXPECT_TRUE(at::equal(a.inputs, a2.inputs));
  EXPECT_FALSE(at::equal(a.inputs, c.inputs));
  // Exactly the reader's augmentation with a generator seeded with the batch's seed.
  at::Generator g5 = at::make_generator<at::CPUGeneratorImpl>(5);
  EXPECT_TRUE(at::equal(a.inputs, b.train.batch(idx, true, g5).inputs));
  // Evaluation: the centre crop, whatever the seed.
  EXPECT_TRUE(at::equal(d.train->batch(idx, false, 5).inputs, d.train->batch(idx, false, 6).inputs));
  EXPECT_TRUE(at::equal(d.train->batch(idx, false, 0).inputs, b.train.batch(idx).inputs));
  EXPECT_TRUE(at::equal(a.labels[2], b.train.labels[2]));
}
#endif  // BAYESAGG_WITH_IMAGES

#if BAYESAGG_WITH_QM9
TEST(BatchSource, GraphSourceGivesTheQM9GraphsAndTheModelTakesThem) {
  TempDir dir;
  pd::write_qm9(dir.path);
  const QM9Benchmark q =
      make_qm9_benchmark(QM9Options().data_dir(dir.path.string()).val_size(1).test_size(1).use_cache(false));
  const TrainData d = make_train_data(q);
  EXPECT_TRUE(d.graphs);
  EXPECT_EQ(d.input_shape, (std::vector<int64_t>{11, 5}));
  const ModelBatch b = d.train->batch(at::arange(3, at::kLong), true, 1);
  ASSERT_TRUE(b.graphs.has_value());
  EXPECT_EQ(b.size(), 3);
  EXPECT_EQ(b.labels[0].sizes(), (at::IntArrayRef{3, 11}));
  MultiTaskModel m(d.input_shape, d.meta.groups, ModelOptions().trunk("mpnn"));
  EXPECT_EQ(model_representation(m, b).sizes(), (at::IntArrayRef{3, 64}));
}
#endif  // BAYESAGG_WITH_QM9

#if BAYESAGG_WITH_IMAGES
TEST(PaperTrainer, ResultsDoNotDependOnPrefetching) {
  CacheDir cache;
  TempDir data, a, b;
  pd::write_faces(data.path, /*patterned=*/true);
  const auto run = [&](const TempDir& out, int64_t prefetch) {
    TrainOptions o;
    o.benchmark("utkface").data_dir(data.path.string()).epochs(1).ls_epochs(0).batch_size(4)
        .image_size(36).crop_size(32).trunk("cifar-cnn").representation_dim(8).threads(1)
        .progress("none")
        .prefetch(prefetch).out(out.file("run"));
    o.bayesagg().mc_samples(16);
    Trainer t(o);
    return t.run();
  };
  const TrainSummary sa = run(a, 0), sb = run(b, 3);
  EXPECT_EQ(sa.n_train, 11);
  EXPECT_EQ(sa.test, sb.test);
  EXPECT_EQ(sa.val, sb.val);
  const std::string steps_a = slurp(a.file("run") + "/steps.csv");
  EXPECT_EQ(steps_a, slurp(b.file("run") + "/steps.csv"));
  EXPECT_EQ(std::count(steps_a.begin(), steps_a.end(), '\n'), 4);  // header + 3 steps
}
#endif  // BAYESAGG_WITH_IMAGES

TEST(PlateauSchedule, ReplaysPyTorchsReduceLROnPlateau) {
  // No history: the base rate.
  EXPECT_EQ(plateau_lr(1e-3, {}, 0.7, 5, 1e-5), 1e-3);
  // Improving every epoch: never reduced.
  EXPECT_EQ(plateau_lr(1e-3, {5, 4, 3, 2, 1, 0.5, 0.25}, 0.7, 5, 1e-5), 1e-3);
  // Best at epoch 1, then 5 worse epochs: not yet (patience 5); a 6th: x0.7.
  EXPECT_EQ(plateau_lr(1e-3, {1, 2, 2, 2, 2, 2}, 0.7, 5, 1e-5), 1e-3);
  EXPECT_DOUBLE_EQ(plateau_lr(1e-3, {1, 2, 2, 2, 2, 2, 2}, 0.7, 5, 1e-5), 7e-4);
  // The counter restarts after a reduction: 6 more bad epochs for the next one.
  EXPECT_DOUBLE_EQ(plateau_lr(1e-3, std::vector<double>(13, 1.0), 0.7, 5, 1e-5), 4.9e-4);
  // An improvement smaller than the relative threshold 1e-4 does not count.
  EXPECT_DOUBLE_EQ(plateau_lr(1e-3, {1, 0.99999, 0.99999, 0.99999, 0.99999, 0.99999, 0.99999},
                              0.7, 5, 1e-5), 7e-4);
  // Never below the minimum.
  EXPECT_DOUBLE_EQ(plateau_lr(2e-5, std::vector<double>(50, 1.0), 0.7, 5, 1e-5), 1e-5);
}

#if BAYESAGG_WITH_QM9
TEST(PaperTrainer, QM9ResumedRunEndsWithTheSameNumbers) {
  TempDir data, full, split;
  pd::write_qm9(data.path);
  CacheDir cache;
  const auto options = [&](const TempDir& out) {
    TrainOptions o;
    o.benchmark("qm9").data_dir(data.path.string()).val_size(1).test_size(1).epochs(3)
        .batch_size(2).threads(1).progress("none").out(out.file("run"));
    o.bayesagg().mc_samples(16);
    return o;
  };
  const TrainSummary a = Trainer(options(full)).run();
  EXPECT_EQ(a.n_train, 3);
  EXPECT_EQ(a.selection, "validation delta_m of the MAEs vs the published STL (lower)");
  EXPECT_TRUE(contains(slurp(full.file("run") + "/config.json"), "\"lr-schedule\": \"plateau\""));

  Trainer(options(split).stop_after_epoch(1)).run();
  TrainOptions r = resume_options(split.file("run"));
  r.progress("none");
  const TrainSummary b = Trainer(r).run();
  EXPECT_TRUE(b.completed());
  EXPECT_EQ(a.val, b.val);
  EXPECT_EQ(a.test, b.test);
  EXPECT_EQ(slurp(full.file("run") + "/steps.csv"), slurp(split.file("run") + "/steps.csv"));
  EXPECT_EQ(slurp(full.file("run") + "/metrics.csv"), slurp(split.file("run") + "/metrics.csv"));
}
#endif  // BAYESAGG_WITH_QM9
