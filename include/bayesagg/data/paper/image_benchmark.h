#pragma once
/// Image benchmarks too large for float inputs in memory (UTKFace: 23 708 images; ChestX-ray14:
/// 112 120): each split keeps its images as uint8 (in memory, or as views of a memory-mapped,
/// validated cache file, see cache.h) at the stored resolution, and turns a batch of them into
/// float inputs on demand: random or centre crop, horizontal flip (training only), scaling to
/// [0, 1], channel replication and normalisation.
///
/// The types mirror `MultiTaskSplit` / `Benchmark` (dataset.h): `size()`, `labels`,
/// `batch(indices)` (evaluation preprocessing), plus `batch(indices, train, generator)` for
/// training batches; `to_benchmark()` materialises everything with the evaluation preprocessing as
/// an ordinary in-memory `Benchmark` (for small data sets and tests).

#include "bayesagg/data/dataset.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

namespace bayesagg {

/// Per-batch preprocessing of stored uint8 images [B, C, H, W].
struct ImageTransform {
  /// Output side: crop a `crop` × `crop` window (random when training and `random_crop`, else the
  /// centre window at offset round((H - crop) / 2), halves to even); 0 = keep the whole image.
  int64_t crop = 0;
  /// Training batches take a uniformly random crop offset (else the centre one).
  bool random_crop = true;
  /// Training batches are flipped horizontally with probability 1/2, per image.
  bool random_flip = true;
  /// Output channels: equal to the stored ones, or 3 from stored greyscale (replicated).
  int64_t channels = 0;
  /// After scaling to [0, 1]: (x - mean[c]) / std[c] per output channel; empty = no normalisation.
  std::vector<double> mean, std;

  /// float32 [B, channels, crop, crop] (or the stored H, W when `crop` is 0) from uint8
  /// [B, C, H, W]. Training (with `train` true): per batch, draws from `generator` in this order:
  /// crop tops randint(0, H - crop + 1, [B]), crop lefts randint(0, W - crop + 1, [B]) (only when
  /// `random_crop` and `crop` > 0), flips randint(0, 2, [B]) (only when `random_flip`; 1 = flip).
  /// `generator` must be defined when training draws anything.
  at::Tensor apply(const at::Tensor& images, bool train, at::Generator generator = {}) const;
  /// The output shape of one image stored as [C, H, W].
  std::vector<int64_t> output_shape(int64_t c, int64_t h, int64_t w) const;
};

/// One split: stored images, labels, and the benchmark's preprocessing.
struct ImageSplit {
  /// [M, C, H, W] uint8, the store of images (usually shared by the three splits): in memory, or
  /// a view of a memory-mapped cache file (read-only).
  at::Tensor images;
  /// [N] int64: the rows of `images` that make up this split, in split order; undefined = every
  /// row of `images` in order (N = M).
  at::Tensor index;
  /// Labels per task group, N rows each (layouts as `check_labels`).
  Labels labels;
  /// The file each item came from (relative to the data folder), N names.
  std::vector<std::string> files;
  ImageTransform transform;

  /// Number of items N.
  int64_t size() const {
    return index.defined() ? index.size(0) : (images.defined() ? images.size(0) : 0);
  }
  /// The stored (uint8) images of items `indices` ([B] int64 in [0, N)): [B, C, H, W].
  at::Tensor stored(const at::Tensor& indices) const;
  /// The stored images at `indices` ([B] int64) through `transform` (see `ImageTransform::apply`),
  /// with their labels.
  MultiTaskBatch batch(const at::Tensor& indices, bool train, at::Generator generator = {}) const;
  /// Evaluation batch (centre crop, no flip): `batch(indices, false)`.
  MultiTaskBatch batch(const at::Tensor& indices) const { return batch(indices, false); }
  /// Every item through the evaluation preprocessing, in memory (float32: small data sets only).
  MultiTaskSplit materialize() const;
};

/// An image benchmark whose splits are `ImageSplit`s. Fields as `Benchmark`'s.
struct ImageBenchmark {
  std::string name;
  std::vector<TaskGroup> groups;
  std::vector<std::string> task_names;
  ImageSplit train, val, test;
  std::vector<TargetScaling> target_scaling;
  uint64_t seed = 0;
  /// What the builder found worth reporting, one sentence each: files skipped and why, whether a
  /// cache was reused or rebuilt (and why).
  std::vector<std::string> notes;

  int64_t num_tasks() const { return total_tasks(groups); }
  /// The shape of one preprocessed input, e.g. {3, 128, 128}.
  std::vector<int64_t> input_shape() const;
  /// Group `group`'s predictions or labels on the original scale (as `Benchmark::to_original`).
  at::Tensor to_original(size_t group, const at::Tensor& values) const;
  /// Checks the splits (uint8 [M, C, H, W] images, same C, H, W in every split, indices in range,
  /// labels as the groups say, file names) and the metadata; throws naming the benchmark and the
  /// bad part.
  void validate() const;
  /// Every split materialised with the evaluation preprocessing, as a `Benchmark` (float32 in
  /// memory: only for small data sets, e.g. the tests' miniature ones).
  Benchmark to_benchmark() const;
};

/// How `load_image_store` decodes and caches.
struct ImageStoreOptions {
  /// Cache file name stem, e.g. `utkface` (the file is `{stem}-{key}.bin`).
  std::string stem;
  /// Folder of the cache; empty = `cache::default_cache_dir()`.
  std::string cache_dir;
  /// false: decode into memory, no cache file.
  bool use_cache = true;
  /// Shape [C, H, W] every decoded image must have.
  std::vector<int64_t> shape;
  /// Hash of everything else the decoding depends on (decoder version, sizes, channels).
  uint64_t settings_key = 0;
  /// Prefix of notes and errors, e.g. `utkface`.
  std::string what;
};

/// Decodes the images `paths` (`decode(path)` -> uint8 [C, H, W] of `options.shape`) into one
/// uint8 [N, C, H, W] store, in parallel (`at::parallel_for`). With a cache (the default) the
/// store is a memory-mapped cache file whose key hashes `options.settings_key` and each file's
/// name (`names[i]`), size and modification time: a valid cache is reused (validated as
/// `cache::open_cache` says), otherwise the images are decoded in chunks streamed into a new
/// cache file, committed only when every image decoded. The first image that fails to decode
/// (lowest index) is an error naming it; nothing is cached then. Notes (reused / built and why)
/// are appended to `notes` when given.
at::Tensor load_image_store(const std::vector<std::string>& paths,
                            const std::vector<std::string>& names,
                            const std::function<at::Tensor(const std::string&)>& decode,
                            const ImageStoreOptions& options, std::vector<std::string>* notes);

/// One line, as `operator<<(Benchmark)`: name, groups, input shape, split sizes, seed.
std::ostream& operator<<(std::ostream& os, const ImageBenchmark& b);

}  // namespace bayesagg
