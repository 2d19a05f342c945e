#pragma once
/// ChestX-ray14 (spec: benchmarks.md, "Paper benchmarks"): the NIH chest X-rays (PNG) with the
/// patient-disjoint split of `data/chestx14/{train,validation,test}.csv` (shipped with bayesagg):
/// 14 binary tasks (findings).
///
/// Inputs: every image is decoded with libpng to 8-bit greyscale (RGB converted as PIL's
/// `convert("L")`), resized to `image_size` (256) × 256 (shorter side, then centre crop) and
/// stored as uint8 [1, 256, 256] in a validated, memory-mapped cache file (112 120 images: about
/// 7.3 GB at 256). Batches: a `crop_size` (224) crop (random when training, with a random
/// horizontal flip; centre when evaluating), scaled to [0, 1], replicated to 3 channels and
/// normalised with the ImageNet statistics (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225),
/// so that an ImageNet-pretrained ResNet-34 can be used: inputs [3, 224, 224].

#include "bayesagg/data/paper/image_benchmark.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace bayesagg {

struct ChestX14Options {
  /// The folder holding `images/` (the NIH archives images_001.tar.gz ... images_012.tar.gz all
  /// extract to `images/`), or the images folder itself; Kaggle's layout `images_NNN/images/` is
  /// found too.
  TORCH_ARG(std::string, data_dir) = "";
  /// Folder of train.csv, validation.csv and test.csv; empty = `default_chestx14_split_dir()`.
  TORCH_ARG(std::string, split_dir) = "";
  /// Stored side (the cache holds image_size × image_size greyscale images).
  TORCH_ARG(int64_t, image_size) = 256;
  /// Side of the crops fed to the model.
  TORCH_ARG(int64_t, crop_size) = 224;
  /// Folder of the image cache; empty = `cache::default_cache_dir()`.
  TORCH_ARG(std::string, cache_dir) = "";
  /// false: decode into memory (small data sets only), no cache file.
  TORCH_ARG(bool, use_cache) = true;

 public:
  void validate() const;
};

std::ostream& operator<<(std::ostream& os, const ChestX14Options& o);

/// The 14 findings in label order (the CSVs' columns 2..15): Atelectasis, Cardiomegaly,
/// Consolidation, Edema, Effusion, Emphysema, Fibrosis, Hernia, Infiltration, Mass, Nodule,
/// Pleural_Thickening, Pneumonia, Pneumothorax.
const std::vector<std::string>& chestx14_task_names();

/// The split shipped with bayesagg: $BAYESAGG_DATA_DIR/chestx14 when that variable is set, else
/// the source tree's `data/chestx14`.
std::string default_chestx14_split_dir();

/// One split CSV as read.
struct ChestX14Csv {
  std::string path;
  /// Image file names, in row order.
  std::vector<std::string> images;
  /// The line (1-based) of each row.
  std::vector<int64_t> lines;
  /// [N, 14] float32 0/1.
  at::Tensor labels;
};

/// Reads a split CSV: header `Image Index,Atelectasis,...,Pneumothorax` (exactly those 15
/// columns), then one row per image: its file name and 14 labels `0`/`1`. CRLF line ends and a
/// missing final newline are accepted. Throws naming the file and line for a missing or other
/// header, a row with the wrong column count, an empty name or a label other than 0/1.
ChestX14Csv read_chestx14_csv(const std::string& path);

/// The preprocessing of batches (see the file comment).
ImageTransform chestx14_transform(int64_t crop_size = 224);

/// Builds chestx14: group binary:14 (`findings`); splits in CSV row order. Throws naming the
/// image (and the CSV line listing it) when an image is missing, naming the file when a PNG does
/// not decode, and naming both places when an image is listed twice.
ImageBenchmark make_chestx14_benchmark(const ChestX14Options& options);

}  // namespace bayesagg
