#pragma once
/// What the trainer reads: every benchmark (embedded `Benchmark`, `ImageBenchmark`,
/// `QM9Benchmark`) as three `BatchSource`s plus the metadata the metrics need, and a prefetching
/// loader that prepares the next batches on a background thread.
///
/// Determinism: a training batch is a pure function of its indices and its augmentation seed
/// (`augment_seed(seed, epoch, batch)`), so a run's numbers do not depend on whether or how far
/// batches are prefetched.

#include "bayesagg/data/dataset.h"
#include "bayesagg/data/paper/image_benchmark.h"
#include "bayesagg/data/paper/qm9.h"

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace bayesagg {

class MultiTaskModel;

/// One batch as a model takes it: a tensor (tensor trunks) or a graph batch (graph trunks), and
/// the labels per task group.
struct ModelBatch {
  /// [B, ...] float32; undefined for graph batches.
  at::Tensor inputs;
  /// Set for graph batches (QM9).
  std::optional<GraphBatch> graphs;
  Labels labels;

  /// B.
  int64_t size() const;
  /// Every tensor moved to `device` (unchanged when already there).
  ModelBatch to(const c10::Device& device) const;
};

/// One split of a benchmark, read batch by batch.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// Number of items N.
  virtual int64_t size() const = 0;
  /// The labels of all N items (for metrics over the whole split).
  virtual const Labels& labels() const = 0;
  /// The items `indices` ([B] int64 in [0, N)). Training batches (`train`) get the benchmark's
  /// augmentation (UTKFace, ChestX-ray14: random crop and flip), drawn from a generator seeded
  /// with `augment_seed`; evaluation batches are deterministic. Safe to call from another
  /// thread while the source is not modified.
  virtual ModelBatch batch(const at::Tensor& indices, bool train, uint64_t augment_seed) const = 0;
};

/// A split held in memory (embedded benchmarks, CIFAR-MTL); batches are `index_select`s on the
/// split's device.
std::unique_ptr<BatchSource> make_batch_source(MultiTaskSplit split);
/// Stored uint8 images through the split's `ImageTransform`.
std::unique_ptr<BatchSource> make_batch_source(ImageSplit split);
/// QM9 molecules as graph batches (`QM9Dataset::batch`).
std::unique_ptr<BatchSource> make_batch_source(QM9Dataset split);

/// The seed of the augmentation of training batch `batch` of epoch `epoch` (0-based) of a run
/// whose seed is `seed` (splitmix64 mixing).
uint64_t augment_seed(uint64_t seed, int64_t epoch, int64_t batch);

/// A benchmark ready for training.
struct TrainData {
  /// Name, groups, task names, target scaling (and synthetic-regression's scales): the metrics
  /// and selection rules read these. Its splits are empty; the data are in the sources.
  Benchmark meta;
  /// The shape of one input: [C, H, W] / [D] for tensors, {node features, edge features} for
  /// graphs.
  std::vector<int64_t> input_shape;
  /// Inputs are graph batches.
  bool graphs = false;
  std::shared_ptr<BatchSource> train, val, test;
  /// What the builder reported (skipped files, caches).
  std::vector<std::string> notes;
  /// One line for logs: name, groups, inputs, split sizes.
  std::string description;
};

/// `TrainData` of an in-memory benchmark (its splits moved to `device`).
TrainData make_train_data(const Benchmark& benchmark, const c10::Device& device = c10::kCPU);
TrainData make_train_data(const ImageBenchmark& benchmark);
TrainData make_train_data(const QM9Benchmark& benchmark);

/// The model's representation of a batch (tensor or graph input).
at::Tensor model_representation(const MultiTaskModel& model, const ModelBatch& batch);

/// Prepares the batches of one pass over a source on a background thread, at most `depth`
/// ahead, and hands them out in order. With `depth` 0 every batch is made on the caller's thread
/// when asked for. Either way `next()` returns exactly `source.batch(batches[i], train,
/// seeds[i])` moved to `device`. An exception in the background is rethrown by `next()` for the
/// batch that failed. The destructor stops the thread (batches not taken are dropped).
class Prefetcher {
 public:
  /// `seeds` has one entry per batch (ignored for evaluation).
  Prefetcher(std::shared_ptr<const BatchSource> source, std::vector<at::Tensor> batches,
             bool train, std::vector<uint64_t> seeds, int64_t depth,
             c10::Device device = c10::kCPU);
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  int64_t num_batches() const { return static_cast<int64_t>(batches_.size()); }
  /// The next batch, in order; throws after the last.
  ModelBatch next();

 private:
  ModelBatch make(size_t i) const;
  void work();

  std::shared_ptr<const BatchSource> source_;
  std::vector<at::Tensor> batches_;
  bool train_;
  std::vector<uint64_t> seeds_;
  size_t depth_;
  c10::Device device_;
  size_t taken_ = 0;

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<ModelBatch> ready_;
  std::exception_ptr error_;
  size_t produced_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace bayesagg
