#include "bayesagg/data/paper/chestx14.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/paper/image_io.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "paper_data.h"
#include "test_util.h"

#include <filesystem>
#include <random>
#include <string>

using namespace bayesagg;
namespace fs = std::filesystem;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;

namespace {

using namespace bayesagg::testing::paper_data;

/// 8 images: train 0..3, validation 4..5, test 6..7. Image 5 is written as RGB (each channel
/// equal to chestx_grey_of(5), so L gives it back exactly), image 7 as 16-bit (grey * 257).
struct Fixture {
  TempDir tmp;
  fs::path data, split;
  explicit Fixture(const std::string& layout = "images") {
    data = tmp.path / "nih";
    split = tmp.path / "split";
    const fs::path images = layout == "flat" ? data : layout == "kaggle" ? data / "images_001" / "images"
                                                                         : data / "images";
    write_chestx(images, split);
  }
  void write_csv(const std::string& name, const std::vector<int>& items, bool crlf = false) const {
    std::string text = std::string(chestx_header()) + (crlf ? "\r\n" : "\n");
    for (int i : items) text += chestx_row(i) + (crlf ? "\r\n" : "\n");
    write_file_atomic((split / name).string(), text);
  }
  ChestX14Options options() const {
    return ChestX14Options().data_dir(data.string()).split_dir(split.string()).image_size(8).crop_size(6).use_cache(false);
  }
};

}  // namespace

TEST(ChestX14, BuildsFourteenTasksInCsvOrderWithExactPixels) {
  Fixture fx;
  const ImageBenchmark b = make_chestx14_benchmark(fx.options());
  EXPECT_EQ(b.name, "chestx14");
  ASSERT_EQ(b.groups.size(), 1u);
  EXPECT_EQ(b.groups[0].str(), "binary:14");
  EXPECT_EQ(b.task_names, chestx14_task_names());
  EXPECT_EQ(b.task_names[7], "Hernia");
  EXPECT_EQ(b.train.size(), 4);
  EXPECT_EQ(b.val.size(), 2);
  EXPECT_EQ(b.test.size(), 2);
  EXPECT_EQ(b.input_shape(), (std::vector<int64_t>{3, 6, 6}));

  const float mean[3] = {0.485f, 0.456f, 0.406f}, stdv[3] = {0.229f, 0.224f, 0.225f};
  const std::vector<std::pair<const ImageSplit*, std::vector<int>>> splits = {
      {&b.train, {0, 1, 2, 3}}, {&b.val, {4, 5}}, {&b.test, {6, 7}}};
  for (const auto& [s, items] : splits) {
    const at::Tensor idx = at::arange(s->size(), at::kLong);
    const at::Tensor stored = s->stored(idx);
    const MultiTaskBatch batch = s->batch(idx);
    for (size_t k = 0; k < items.size(); ++k) {
      const int i = items[k];
      EXPECT_EQ(s->files[k], chestx_image_name(i));
      EXPECT_TRUE(at::equal(stored[static_cast<int64_t>(k)], chestx_grey_of(i))) << chestx_image_name(i);
      for (int t = 0; t < 14; ++t) {
        EXPECT_EQ(s->labels[0][static_cast<int64_t>(k)][t].item<float>(), static_cast<float>(chestx_label(i, t)));
      }
      // evaluation input: centre 6×6 crop, / 255, replicated, ImageNet-normalised
      const at::Tensor win = chestx_grey_of(i)[0].narrow(0, 1, 6).narrow(1, 1, 6).to(at::kFloat).div(255.0f);
      for (int c = 0; c < 3; ++c) {
        EXPECT_TRUE(at::equal(batch.inputs[static_cast<int64_t>(k)][c], win.sub(mean[c]).div(stdv[c])));
      }
    }
  }
  const Benchmark mem = b.to_benchmark();
  mem.validate();
  EXPECT_EQ(mem.test.inputs.sizes(), (c10::IntArrayRef{2, 3, 6, 6}));
}

TEST(ChestX14, FindsTheImagesInEachLayoutAndResizes) {
  for (const std::string layout : {"flat", "kaggle"}) {
    Fixture fx(layout);
    const ImageBenchmark b = make_chestx14_benchmark(fx.options());
    EXPECT_TRUE(at::equal(b.train.stored(at::arange(4, at::kLong))[2], chestx_grey_of(2))) << layout;
  }
  Fixture fx;
  // a flat image resized 8 -> 4 stays flat
  write_png((fx.data / "images" / chestx_image_name(0)).string(), at::full({1, 8, 8}, 201, at::kByte));
  const ImageBenchmark b = make_chestx14_benchmark(fx.options().image_size(4).crop_size(4));
  EXPECT_TRUE(at::equal(b.train.stored(at::arange(1, at::kLong)), at::full({1, 1, 4, 4}, 201, at::kByte)));
}

TEST(ChestX14, CachesTheResizedImages) {
  Fixture fx;
  const auto opts = fx.options().use_cache(true).cache_dir((fx.tmp.path / "cache").string());
  const ImageBenchmark a = make_chestx14_benchmark(opts);
  EXPECT_TRUE(contains(a.notes.back(), "built the image cache")) << a.notes.back();
  const ImageBenchmark b = make_chestx14_benchmark(opts);
  EXPECT_TRUE(contains(b.notes.back(), "reused the image cache")) << b.notes.back();
  EXPECT_TRUE(at::equal(a.test.stored(at::arange(2, at::kLong)), b.test.stored(at::arange(2, at::kLong))));
  EXPECT_TRUE(at::equal(b.test.stored(at::arange(2, at::kLong))[1], chestx_grey_of(7)));
}

TEST(ChestX14, MalformedSplitsAndImagesAreErrorsNamingThem) {
  Fixture fx;
  const std::string train = (fx.split / "train.csv").string();
  // a row with the wrong column count
  write_file_atomic(train, std::string(chestx_header()) + "\n" + chestx_row(0) + "\n" + chestx_row(1) + ",0\n");
  std::string msg = error_of([&] { make_chestx14_benchmark(fx.options()); });
  EXPECT_TRUE(contains(msg, train) && contains(msg, "line 3") && contains(msg, "16 columns")) << msg;
  // another header
  write_file_atomic(train, "Image,Atelectasis\n" + chestx_row(0) + "\n");
  msg = error_of([&] { read_chestx14_csv(train); });
  EXPECT_TRUE(contains(msg, train) && contains(msg, "line 1") && contains(msg, "header")) << msg;
  // a label that is not 0/1
  std::string r = chestx_row(0);
  r.back() = '2';
  write_file_atomic(train, std::string(chestx_header()) + "\n" + r + "\n");
  msg = error_of([&] { read_chestx14_csv(train); });
  EXPECT_TRUE(contains(msg, "line 2") && contains(msg, "Pneumothorax")) << msg;
  // an empty line inside
  write_file_atomic(train, std::string(chestx_header()) + "\n" + chestx_row(0) + "\n\n" + chestx_row(1) + "\n");
  msg = error_of([&] { read_chestx14_csv(train); });
  EXPECT_TRUE(contains(msg, "line 3") && contains(msg, "empty line")) << msg;
  // CRLF and a missing final newline are fine
  fx.write_csv("train.csv", {0, 1, 2, 3}, /*crlf=*/true);
  EXPECT_EQ(read_chestx14_csv(train).images.size(), 4u);

  // a missing image
  fs::remove(fx.data / "images" / chestx_image_name(6));
  msg = error_of([&] { make_chestx14_benchmark(fx.options()); });
  EXPECT_TRUE(contains(msg, chestx_image_name(6)) && contains(msg, "test.csv' line 2") &&
              contains(msg, "1 of the 8 images"))
      << msg;
  // a PNG that does not decode
  write_file_atomic((fx.data / "images" / chestx_image_name(6)).string(), "\x89PNG\r\n\x1a\n broken");
  msg = error_of([&] { make_chestx14_benchmark(fx.options()); });
  EXPECT_TRUE(contains(msg, chestx_image_name(6)) && contains(msg, "not a readable PNG")) << msg;
  // an image listed twice
  write_png((fx.data / "images" / chestx_image_name(6)).string(), chestx_grey_of(6));
  fx.write_csv("test.csv", {6, 1});
  msg = error_of([&] { make_chestx14_benchmark(fx.options()); });
  EXPECT_TRUE(contains(msg, chestx_image_name(1)) && contains(msg, "listed twice")) << msg;
  // missing split files
  msg = error_of([&] { make_chestx14_benchmark(fx.options().split_dir((fx.tmp.path / "none").string())); });
  EXPECT_TRUE(contains(msg, "train.csv") && contains(msg, "--split-dir")) << msg;
}

TEST(ChestX14, ReadsTheShippedSplit) {
  const std::string dir = default_chestx14_split_dir();
  const ChestX14Csv train = read_chestx14_csv(dir + "/train.csv");
  const ChestX14Csv val = read_chestx14_csv(dir + "/validation.csv");
  const ChestX14Csv test = read_chestx14_csv(dir + "/test.csv");
  EXPECT_EQ(train.images.size(), 69438u);
  EXPECT_EQ(val.images.size(), 17086u);
  EXPECT_EQ(test.images.size(), 25596u);
  EXPECT_EQ(train.images[0], "00008084_000.png");
  EXPECT_EQ(train.labels.sizes(), (c10::IntArrayRef{69438, 14}));
  // every finding occurs in every split
  for (const ChestX14Csv* c : {&train, &val, &test}) {
    EXPECT_GT(c->labels.sum(0).min().item<float>(), 0.0f);
  }
}
