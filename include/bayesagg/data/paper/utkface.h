#pragma once
/// UTKFace (spec: benchmarks.md, "Paper benchmarks"): the aligned-and-cropped faces, a folder
/// `UTKFace/` of 23 708 JPEGs named `AGE_GENDER_RACE_DATETIME.jpg.chip.jpg` (200×200; age
/// 0..116, gender 0/1, race 0..4). Tasks: age regression (standardised), gender (2 classes) and
/// race (5 classes).
///
/// Images are decoded with libjpeg, resized to `image_size` (140) × 140 and stored as uint8 (in a
/// validated, memory-mapped cache file by default); batches are cropped to `crop_size` (128):
/// random crop and horizontal flip for training, centre crop for evaluation, pixels / 255.

#include "bayesagg/data/paper/image_benchmark.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace bayesagg {

/// The authors' training statistics of the age: label = (age - mean) / std.
constexpr double kUTKFaceAgeMean = 33.327;
constexpr double kUTKFaceAgeStd = 19.927;

struct UTKFaceOptions {
  /// The folder `UTKFace/` (the archive's) or its parent.
  TORCH_ARG(std::string, data_dir) = "";
  /// Split seed (the stratified split; fixed by default).
  TORCH_ARG(uint64_t, seed) = 0;
  /// Stored side: images are resized to image_size × image_size before storing.
  TORCH_ARG(int64_t, image_size) = 140;
  /// Side of the crops fed to the model.
  TORCH_ARG(int64_t, crop_size) = 128;
  /// Folder of the image cache; empty = `cache::default_cache_dir()`.
  TORCH_ARG(std::string, cache_dir) = "";
  /// false: decode into memory every time, no cache file.
  TORCH_ARG(bool, use_cache) = true;

 public:
  void validate() const;
};

std::ostream& operator<<(std::ostream& os, const UTKFaceOptions& o);

/// One labelled UTKFace file.
struct UTKFaceItem {
  /// File name (no folder), e.g. `26_1_0_20170116171748226.jpg.chip.jpg`.
  std::string file;
  int64_t age = 0;
  int64_t gender = 0;
  int64_t race = 0;
};

/// Parses a UTKFace file name: the part before the first '.' split at '_' must start with three
/// non-negative integers AGE, GENDER (0 or 1), RACE (0..4); more fields (the date) may follow.
/// Returns false (leaving `item` unspecified) otherwise.
bool parse_utkface_name(const std::string& name, UTKFaceItem* item);

/// The labelled files of a UTKFace folder.
struct UTKFaceScan {
  /// The folder holding the images.
  std::string dir;
  /// Files ending in `.jpg` whose names parse, sorted by name.
  std::vector<UTKFaceItem> items;
  /// Files ending in `.jpg` whose names lack the three labels (skipped), sorted.
  std::vector<std::string> skipped;
  /// Other files (not `.jpg`), ignored.
  int64_t ignored = 0;
};

/// Finds the folder (`data_dir/UTKFace` when it exists, else `data_dir`) and lists it. Throws
/// when the folder does not exist or holds no parsable `.jpg`.
UTKFaceScan scan_utkface(const std::string& data_dir);

/// sklearn's `_approximate_mode(class_counts, n_draws)`: per class, floor(count / total *
/// n_draws) (float64, as numpy), then the units still missing go one each to the classes with the
/// largest remainders. sklearn draws among equal remainders with its generator; here the lowest
/// class index wins (a deterministic rule: numpy's draws cannot be reproduced).
std::vector<int64_t> approximate_mode(const std::vector<int64_t>& class_counts, int64_t n_draws);

/// Per-class sizes of sklearn's `train_test_split(test_size=test_fraction, stratify=y)`.
struct StratifiedSizes {
  std::vector<int64_t> train, test;
};
/// n_test = ceil(test_fraction · n), n_train = n − n_test; train per class =
/// `approximate_mode(class_counts, n_train)` (StratifiedShuffleSplit allocates train first),
/// test = the rest of each class.
StratifiedSizes stratified_split_sizes(const std::vector<int64_t>& class_counts,
                                       double test_fraction);

/// The spec's split, as indices into `ages` ([N] int64), each sorted ascending, with the sizes of
/// the authors' sklearn calls: on the ages occurring at least 3 times (the strata, ascending),
/// test gets `stratified_split_sizes(counts, 0.2).test` items per age, then validation gets
/// `stratified_split_sizes(remaining counts, 0.125).test` per age. Which items: for each age in
/// increasing order p = randperm(n_a, generator) over its items (in index order), the first
/// test_a (by p) go to test; then for each age q = randperm(m_a, generator) over its m_a
/// remaining items (in the order p left them), the first val_a go to validation. Rarer ages go
/// to train. One generator seeded with `seed`.
struct UTKFaceSplit {
  at::Tensor train, val, test;
};
UTKFaceSplit utkface_split(const at::Tensor& ages, uint64_t seed);

/// The preprocessing of batches: crop `crop_size`, random crop and flip when training, /255.
ImageTransform utkface_transform(int64_t crop_size = 128);

/// Preprocesses a batch of stored images (uint8 [B, 3, S, S], S >= crop_size) as
/// `utkface_transform(crop_size).apply(images, train, generator)`: float32 [B, 3, crop, crop] in
/// [0, 1]; training draws random crops and flips from `generator`.
at::Tensor utkface_augment(const at::Tensor& images, bool train, at::Generator generator = {},
                           int64_t crop_size = 128);

/// Builds utkface: groups regression:1 (`age`), multiclass:2 (`gender`), multiclass:5 (`race`);
/// target scaling of the age (33.327, 19.927); notes say how many files were skipped (and
/// which, up to 10) and how the cache was used. Throws naming the file when a JPEG does not
/// decode.
ImageBenchmark make_utkface_benchmark(const UTKFaceOptions& options);

}  // namespace bayesagg
