#include "bayesagg/data/paper/utkface.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/paper/image_io.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "paper_data.h"
#include "test_util.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <string>

using namespace bayesagg;
namespace fs = std::filesystem;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;

namespace {

using namespace bayesagg::testing::paper_data;

}  // namespace

TEST(UTKFace, ParsesFileNames) {
  UTKFaceItem it;
  ASSERT_TRUE(parse_utkface_name("26_1_0_20170116171748226.jpg.chip.jpg", &it));
  EXPECT_EQ(it.age, 26);
  EXPECT_EQ(it.gender, 1);
  EXPECT_EQ(it.race, 0);
  ASSERT_TRUE(parse_utkface_name("100_0_4_2017.jpg", &it));
  EXPECT_EQ(it.age, 100);
  EXPECT_EQ(it.race, 4);
  EXPECT_FALSE(parse_utkface_name("39_1_20170116174525125.jpg.chip.jpg", &it));  // race missing
  EXPECT_FALSE(parse_utkface_name("61_1_.jpg", &it));
  EXPECT_FALSE(parse_utkface_name("61_2_1_2017.jpg", &it));  // gender 2
  EXPECT_FALSE(parse_utkface_name("61_1_5_2017.jpg", &it));  // race 5
  EXPECT_FALSE(parse_utkface_name("x_1_1_2017.jpg", &it));
  EXPECT_FALSE(parse_utkface_name("photo.jpg", &it));
}

TEST(UTKFace, StratifiedSplitFollowsTheDocumentedDraws) {
  std::vector<int64_t> ages_v;
  for (const auto& f : faces()) ages_v.push_back(f.age);
  const at::Tensor ages = at::tensor(ages_v, at::kLong);
  const UTKFaceSplit s = utkface_split(ages, 3);

  // the documented procedure, written out: ages ascending 1 (rare), 5 (3 items), 30 (10), 70 (rare)
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(3);
  std::vector<int64_t> train = {15, 13, 14}, val, test;  // age 1 and age 70 -> train
  std::map<int, std::vector<int64_t>> rest;
  const std::vector<std::pair<int, std::vector<int64_t>>> strata = {
      {5, {10, 11, 12}}, {30, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}};
  for (const auto& [age, items] : strata) {
    const int64_t n = static_cast<int64_t>(items.size());
    const at::Tensor p = at::randperm(n, g, at::kLong);
    // sklearn's sizes: n_test = ceil(0.2 * 13) = 3; train 10 shared 2.31 / 7.69 -> 2 / 8 (the
    // larger remainder), so test 1 / 2.
    const int64_t n_test = age == 5 ? 1 : 2;
    for (int64_t k = 0; k < n; ++k) {
      (k < n_test ? test : rest[age]).push_back(items[static_cast<size_t>(p[k].item<int64_t>())]);
    }
  }
  for (const auto& [age, items] : rest) {
    const int64_t m = static_cast<int64_t>(items.size());
    const at::Tensor q = at::randperm(m, g, at::kLong);
    // n_val = ceil(0.125 * 10) = 2; train 8 shared 1.6 / 6.4 -> 2 / 6, so validation 0 / 2.
    const int64_t n_val = age == 5 ? 0 : 2;
    for (int64_t k = 0; k < m; ++k) {
      (k < n_val ? val : train).push_back(items[static_cast<size_t>(q[k].item<int64_t>())]);
    }
  }
  const auto sorted = [](std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    return at::tensor(v, at::kLong);
  };
  EXPECT_TRUE(at::equal(s.train, sorted(train))) << s.train;
  EXPECT_TRUE(at::equal(s.val, sorted(val))) << s.val;
  EXPECT_TRUE(at::equal(s.test, sorted(test))) << s.test;
  EXPECT_EQ(s.train.size(0), 11);
  EXPECT_EQ(s.val.size(0), 2);
  EXPECT_EQ(s.test.size(0), 3);
  // test: one item of age 5, two of age 30; validation: two of age 30
  EXPECT_EQ((ages.index_select(0, s.test) == 5).sum().item<int64_t>(), 1);
  EXPECT_EQ((ages.index_select(0, s.val) == 30).sum().item<int64_t>(), 2);
  // deterministic; another seed moves items
  EXPECT_TRUE(at::equal(utkface_split(ages, 3).test, s.test));
  bool differs = false;
  for (uint64_t seed = 4; seed < 10 && !differs; ++seed) {
    differs = !at::equal(utkface_split(ages, seed).test, s.test);
  }
  EXPECT_TRUE(differs);
}

TEST(UTKFace, BuildsLabelsImagesAndSplitsFromTheFolder) {
  TempDir tmp;
  write_faces(tmp.path);
  const UTKFaceScan scan = scan_utkface(tmp.path.string());  // the parent of UTKFace/
  EXPECT_EQ(scan.items.size(), 16u);
  EXPECT_EQ(scan.skipped, (std::vector<std::string>{"39_1_20170116174525125.jpg.chip.jpg",
                                                    "61_3_2_20170109150557335.jpg.chip.jpg"}));
  EXPECT_EQ(scan.ignored, 1);

  const auto opts = UTKFaceOptions().data_dir(tmp.path.string()).image_size(12).crop_size(10).use_cache(false);
  const ImageBenchmark b = make_utkface_benchmark(opts);
  EXPECT_EQ(b.name, "utkface");
  ASSERT_EQ(b.groups.size(), 3u);
  EXPECT_EQ(b.groups[0].str(), "regression:1");
  EXPECT_EQ(b.groups[1].str(), "multiclass:2");
  EXPECT_EQ(b.groups[2].str(), "multiclass:5");
  EXPECT_EQ(b.task_names, (std::vector<std::string>{"age", "gender", "race"}));
  EXPECT_EQ(b.train.size(), 11);
  EXPECT_EQ(b.val.size(), 2);
  EXPECT_EQ(b.test.size(), 3);
  EXPECT_EQ(b.input_shape(), (std::vector<int64_t>{3, 10, 10}));
  ASSERT_FALSE(b.notes.empty());
  EXPECT_TRUE(contains(b.notes[0], "skipped 2")) << b.notes[0];

  // labels and pixels of every item, from its own file name
  const auto all = faces();
  std::map<std::string, int> index_of;
  for (int i = 0; i < static_cast<int>(all.size()); ++i) index_of[face_name(all[static_cast<size_t>(i)], i)] = i;
  int64_t seen = 0;
  for (const ImageSplit* s : {&b.train, &b.val, &b.test}) {
    const at::Tensor idx = at::arange(s->size(), at::kLong);
    const at::Tensor stored = s->stored(idx);
    const MultiTaskBatch batch = s->batch(idx);
    for (int64_t k = 0; k < s->size(); ++k) {
      const int i = index_of.at(s->files[static_cast<size_t>(k)]);
      const Face& f = all[static_cast<size_t>(i)];
      EXPECT_FLOAT_EQ(s->labels[0][k][0].item<float>(),
                      static_cast<float>((f.age - 33.327) / 19.927));
      EXPECT_EQ(s->labels[1][k].item<int64_t>(), f.gender);
      EXPECT_EQ(s->labels[2][k].item<int64_t>(), f.race);
      const auto c = face_colour(f, i);
      for (int ch = 0; ch < 3; ++ch) {
        const int64_t err = (stored[k][ch].to(at::kInt) - c[static_cast<size_t>(ch)]).abs().max().item<int>();
        EXPECT_LE(err, 3) << s->files[static_cast<size_t>(k)] << " channel " << ch;
      }
      // evaluation input: the centre 10×10 of the stored 12×12, / 255
      EXPECT_TRUE(at::equal(batch.inputs[k],
                            stored[k].narrow(1, 1, 10).narrow(2, 1, 10).to(at::kFloat).div(255.0f)));
      ++seen;
    }
  }
  EXPECT_EQ(seen, 16);
  // age on the original scale
  const at::Tensor back = b.to_original(0, b.test.labels[0]);
  for (int64_t k = 0; k < b.test.size(); ++k) {
    const Face& f = all[static_cast<size_t>(index_of.at(b.test.files[static_cast<size_t>(k)]))];
    EXPECT_NEAR(back[k][0].item<float>(), f.age, 1e-4);
  }
  const Benchmark mem = b.to_benchmark();
  mem.validate();
  EXPECT_EQ(mem.train.inputs.sizes(), (c10::IntArrayRef{11, 3, 10, 10}));
}

TEST(UTKFace, CachesImagesAndRebuildsWhenAFileChanges) {
  TempDir tmp;
  const fs::path dir = write_faces(tmp.path);
  const std::string cache_dir = (tmp.path / "cache").string();
  const auto opts = UTKFaceOptions().data_dir(dir.string()).image_size(12).crop_size(10).cache_dir(cache_dir);
  const ImageBenchmark a = make_utkface_benchmark(opts);
  ASSERT_GE(a.notes.size(), 1u);
  EXPECT_TRUE(contains(a.notes.back(), "built the image cache")) << a.notes.back();
  const ImageBenchmark b = make_utkface_benchmark(opts);
  EXPECT_TRUE(contains(b.notes.back(), "reused the image cache")) << b.notes.back();
  EXPECT_TRUE(at::equal(a.train.images, b.train.images));
  const ImageBenchmark mem = make_utkface_benchmark(UTKFaceOptions(opts).use_cache(false));
  EXPECT_TRUE(at::equal(mem.train.images, b.train.images));

  // a changed file changes the key: rebuilt
  const auto all = faces();
  write_jpeg((dir / face_name(all[0], 0)).string(), at::full({3, 20, 20}, 7, at::kByte), 100);
  const ImageBenchmark c = make_utkface_benchmark(opts);
  EXPECT_TRUE(contains(c.notes.back(), "built the image cache")) << c.notes.back();
  EXPECT_FALSE(at::equal(a.train.images, c.train.images));
}

TEST(UTKFace, AJpegThatDoesNotDecodeIsAnErrorNamingItAndNothingIsCached) {
  TempDir tmp;
  const fs::path dir = write_faces(tmp.path);
  const std::string bad = (dir / "45_0_1_20170117000000000.jpg.chip.jpg").string();
  write_jpeg(bad, at::full({3, 20, 20}, 99, at::kByte), 100);
  const std::string good = read_file(bad);
  write_file_atomic(bad, good.substr(0, good.size() / 2));
  const std::string cache_dir = (tmp.path / "cache").string();
  const std::string msg = error_of([&] {
    make_utkface_benchmark(UTKFaceOptions().data_dir(dir.string()).image_size(12).crop_size(10).cache_dir(cache_dir));
  });
  EXPECT_TRUE(contains(msg, bad)) << msg;
  size_t files = 0;
  if (fs::exists(cache_dir)) {
    for (const auto& e : fs::directory_iterator(cache_dir)) {
      (void)e;
      ++files;
    }
  }
  EXPECT_EQ(files, 0u);

  TempDir empty;
  EXPECT_TRUE(contains(error_of([&] { scan_utkface(empty.path.string()); }), "no file named"));
  EXPECT_TRUE(contains(error_of([&] { scan_utkface((empty.path / "nope").string()); }), "does not exist"));
}

TEST(UTKFace, AugmentCropsAndFlipsReproducibly) {
  const at::Tensor imgs = (at::arange(4 * 3 * 14 * 14, at::kLong) % 251).to(at::kByte).reshape({4, 3, 14, 14});
  const at::Tensor eval = utkface_augment(imgs, false, {}, 12);
  EXPECT_TRUE(at::equal(eval, imgs.narrow(2, 1, 12).narrow(3, 1, 12).to(at::kFloat).div(255.0f)));
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(1);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(1);
  const at::Tensor t1 = utkface_augment(imgs, true, g1, 12);
  const at::Tensor t2 = utkface_augment(imgs, true, g2, 12);
  EXPECT_EQ(t1.sizes(), (c10::IntArrayRef{4, 3, 12, 12}));
  EXPECT_TRUE(at::equal(t1, t2));
  EXPECT_GE(t1.min().item<float>(), 0.0f);
  EXPECT_LE(t1.max().item<float>(), 1.0f);
  // the default crop of 128 from 140
  const at::Tensor big = at::zeros({2, 3, 140, 140}, at::kByte);
  EXPECT_EQ(utkface_augment(big, false).sizes(), (c10::IntArrayRef{2, 3, 128, 128}));
}
