#include "bayesagg/data/paper/image_io.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/paper/image_benchmark.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "test_util.h"

#include <zlib.h>

#include <array>
#include <filesystem>
#include <random>
#include <string>

using namespace bayesagg;
namespace fs = std::filesystem;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;

namespace {

at::Tensor pattern(int64_t c, int64_t h, int64_t w) {
  return (at::arange(c * h * w, at::kLong) * 37 % 256).to(at::kByte).reshape({c, h, w});
}

}  // namespace

TEST(Png, RoundTripsGreyRgbAndSixteenBitExactly) {
  TempDir dir;
  const at::Tensor grey = pattern(1, 5, 7);
  write_png(dir.file("g.png"), grey);
  EXPECT_TRUE(at::equal(read_png(dir.file("g.png"), 1), grey));
  // grey read as RGB: replicated
  EXPECT_TRUE(at::equal(read_png(dir.file("g.png"), 3), grey.expand({3, 5, 7})));

  const at::Tensor rgb = pattern(3, 4, 6);
  write_png(dir.file("c.png"), rgb);
  EXPECT_TRUE(at::equal(read_png(dir.file("c.png"), 3), rgb));
  // RGB read as grey: PIL's L = (19595 R + 38470 G + 7471 B + 32768) >> 16
  const at::Tensor r = rgb[0].to(at::kLong), g = rgb[1].to(at::kLong), b = rgb[2].to(at::kLong);
  const at::Tensor l = ((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536).to(at::kByte);
  EXPECT_TRUE(at::equal(read_png(dir.file("c.png"), 1), l.unsqueeze(0)));
  // hand-checked pixels: pure red, green, blue, white
  const at::Tensor prim = at::tensor({255, 0, 0, 255, 0, 255, 0, 255, 0, 0, 255, 255}, at::kByte)
                              .reshape({3, 1, 4});
  write_png(dir.file("p.png"), prim);
  EXPECT_TRUE(at::equal(read_png(dir.file("p.png"), 1),
                        at::tensor({76, 150, 29, 255}, at::kByte).reshape({1, 1, 4})));

  // alpha is dropped
  const at::Tensor rgba = at::cat({rgb, at::full({1, 4, 6}, 9, at::kByte)});
  write_png(dir.file("a.png"), rgba);
  EXPECT_TRUE(at::equal(read_png(dir.file("a.png"), 3), rgb));

  // 16-bit: round(v * 255 / 65535)
  const at::Tensor v16 = at::tensor({0, 257, 65535, 32896, 1000, 128}, at::kInt).reshape({1, 2, 3});
  write_png(dir.file("s.png"), v16);
  EXPECT_TRUE(at::equal(read_png(dir.file("s.png"), 1),
                        at::tensor({0, 1, 255, 128, 4, 0}, at::kByte).reshape({1, 2, 3})));
}

TEST(Png, BrokenFilesAreErrorsNamingTheFile) {
  TempDir dir;
  write_png(dir.file("ok.png"), pattern(1, 16, 16));
  const std::string good = read_file(dir.file("ok.png"));
  write_file_atomic(dir.file("cut.png"), good.substr(0, good.size() / 2));
  std::string msg = error_of([&] { read_png(dir.file("cut.png")); });
  EXPECT_TRUE(contains(msg, "cut.png")) << msg;
  write_file_atomic(dir.file("junk.png"), "this is not an image at all");
  msg = error_of([&] { read_png(dir.file("junk.png")); });
  EXPECT_TRUE(contains(msg, "junk.png") && contains(msg, "not a PNG")) << msg;
  std::string flipped = good;
  flipped[good.size() - 20] ^= 0x5a;  // inside IDAT or its CRC
  write_file_atomic(dir.file("crc.png"), flipped);
  msg = error_of([&] { read_png(dir.file("crc.png")); });
  EXPECT_TRUE(contains(msg, "crc.png")) << msg;
  msg = error_of([&] { read_png(dir.file("missing.png")); });
  EXPECT_TRUE(contains(msg, "missing.png")) << msg;
}

TEST(Jpeg, FlatColoursSurviveWithinTolerance) {
  TempDir dir;
  const std::vector<std::array<int, 3>> colours = {{200, 30, 90}, {0, 0, 0}, {255, 255, 255}, {12, 140, 250}};
  for (size_t k = 0; k < colours.size(); ++k) {
    at::Tensor img = at::empty({3, 24, 40}, at::kByte);
    for (int c = 0; c < 3; ++c) img[c].fill_(colours[k][c]);
    const std::string path = dir.file("c" + std::to_string(k) + ".jpg");
    write_jpeg(path, img, 100);
    const at::Tensor back = read_jpeg(path);
    ASSERT_EQ(back.sizes(), img.sizes());
    const int64_t err = (back.to(at::kInt) - img.to(at::kInt)).abs().max().item<int>();
    EXPECT_LE(err, 3) << "colour " << k;
  }
  at::Tensor grey = at::full({1, 8, 8}, 77, at::kByte);
  write_jpeg(dir.file("g.jpg"), grey, 100);
  const at::Tensor back = read_jpeg(dir.file("g.jpg"), 3);  // replicated to RGB
  EXPECT_EQ(back.sizes(), (c10::IntArrayRef{3, 8, 8}));
  EXPECT_LE((back.to(at::kInt) - 77).abs().max().item<int>(), 1);
}

TEST(Jpeg, BrokenFilesAreErrorsNamingTheFile) {
  TempDir dir;
  write_jpeg(dir.file("ok.jpg"), pattern(3, 32, 32), 90);
  const std::string good = read_file(dir.file("ok.jpg"));
  write_file_atomic(dir.file("cut.jpg"), good.substr(0, good.size() / 2));
  std::string msg = error_of([&] { read_jpeg(dir.file("cut.jpg")); });
  EXPECT_TRUE(contains(msg, "cut.jpg") && contains(msg, "not a readable JPEG")) << msg;
  write_file_atomic(dir.file("junk.jpg"), "GIF89a, not a JPEG");
  msg = error_of([&] { read_jpeg(dir.file("junk.jpg")); });
  EXPECT_TRUE(contains(msg, "junk.jpg")) << msg;
  write_file_atomic(dir.file("empty.jpg"), "");
  msg = error_of([&] { read_jpeg(dir.file("empty.jpg")); });
  EXPECT_TRUE(contains(msg, "empty.jpg")) << msg;
}

TEST(Resize, MatchesPilBilinearOnAHandCheckedRampAndKeepsFlatImages) {
  // 4×4 -> 2×2, rows [0, 70, 140, 210]: PIL's antialiased bilinear (support 2 at scale 2) gives
  // output column 0 = (0.75·0 + 0.75·70 + 0.25·140) / 1.75 = 50 and column 1 =
  // (0.25·70 + 0.75·140 + 0.75·210) / 1.75 = 160.
  const at::Tensor row = at::tensor({0, 70, 140, 210}, at::kByte);
  const at::Tensor img = row.expand({4, 4}).unsqueeze(0).contiguous();
  const at::Tensor out = resize_center(img, 2);
  EXPECT_TRUE(at::equal(out, at::tensor({50, 160, 50, 160}, at::kByte).reshape({1, 2, 2})))
      << out;
  // flat colours stay flat; a square image of the target size is unchanged
  const at::Tensor flat = at::full({3, 200, 200}, 123, at::kByte);
  EXPECT_TRUE(at::equal(resize_center(flat, 140), at::full({3, 140, 140}, 123, at::kByte)));
  const at::Tensor p = pattern(1, 9, 9);
  EXPECT_TRUE(at::equal(resize_center(p, 9), p));
  // non-square: shorter side to size, then the centre window (offset round((12 - 6) / 2) = 3)
  const at::Tensor wide = pattern(1, 6, 12);
  EXPECT_TRUE(at::equal(resize_center(wide, 6), wide.narrow(2, 3, 6)));
}

TEST(ImageTransform, CentreCropScalesAndNormalisesExactly) {
  const at::Tensor imgs = pattern(2, 6, 6).reshape({2, 1, 6, 6});
  ImageTransform t;
  t.crop = 4;
  t.channels = 3;
  t.mean = {0.5, 0.25, 0.0};
  t.std = {0.5, 2.0, 1.0};
  const at::Tensor x = t.apply(imgs, /*train=*/false);
  ASSERT_EQ(x.sizes(), (c10::IntArrayRef{2, 3, 4, 4}));
  const at::Tensor window = imgs.narrow(2, 1, 4).narrow(3, 1, 4).to(at::kFloat).div(255.0f);
  EXPECT_TRUE(at::equal(x.select(1, 0), (window.squeeze(1) - 0.5f) / 0.5f));
  EXPECT_TRUE(at::equal(x.select(1, 1), (window.squeeze(1) - 0.25f) / 2.0f));
  EXPECT_TRUE(at::equal(x.select(1, 2), window.squeeze(1)));
}

TEST(ImageTransform, TrainingCropsAndFlipsFollowTheDocumentedDraws) {
  const at::Tensor imgs = pattern(15, 8, 8).reshape({5, 3, 8, 8});
  ImageTransform t;
  t.crop = 5;
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(9);
  const at::Tensor x = t.apply(imgs, /*train=*/true, g1);
  at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(9);
  const at::Tensor tops = at::randint(0, 4, {5}, g2, at::kLong);
  const at::Tensor lefts = at::randint(0, 4, {5}, g2, at::kLong);
  const at::Tensor flips = at::randint(0, 2, {5}, g2, at::kLong);
  for (int64_t i = 0; i < 5; ++i) {
    at::Tensor w = imgs[i].narrow(1, tops[i].item<int64_t>(), 5).narrow(2, lefts[i].item<int64_t>(), 5);
    if (flips[i].item<int64_t>()) w = w.flip({2});
    EXPECT_TRUE(at::equal(x[i], w.to(at::kFloat).div(255.0f))) << i;
  }
  EXPECT_THROW(t.apply(imgs, true), c10::Error);  // training without a generator
}

namespace {
void put_be(std::string& s, size_t at, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s[at + i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
}
}  // namespace

// A 2.7 KB JPEG declaring 20000 x 20000 used to take 6 GB: sizes are checked on the header.
TEST(ImageSize, HeadersDeclaringHugeImagesAreRefusedBeforeDecoding) {
  TempDir dir;
  write_jpeg(dir.file("ok.jpg"), pattern(3, 16, 16), 90);
  std::string jpeg = read_file(dir.file("ok.jpg"));
  const size_t sof = jpeg.find("\xff\xc0");
  ASSERT_NE(sof, std::string::npos);
  put_be(jpeg, sof + 5, 20000, 2);  // height
  put_be(jpeg, sof + 7, 20000, 2);  // width
  std::string msg = error_of([&] { decode_jpeg(jpeg, "big.jpg"); });
  EXPECT_TRUE(contains(msg, "'big.jpg'") && contains(msg, "declares 20000 x 20000 pixels")) << msg;

  write_png(dir.file("ok.png"), pattern(1, 16, 16));
  std::string png = read_file(dir.file("ok.png"));
  ASSERT_EQ(png.substr(12, 4), "IHDR");
  put_be(png, 16, 100000, 4);  // width
  put_be(png, 20, 100000, 4);  // height
  const uLong crc = crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17);
  put_be(png, 29, static_cast<uint32_t>(crc), 4);
  msg = error_of([&] { decode_png(png, "big.png"); });
  EXPECT_TRUE(contains(msg, "'big.png'") && contains(msg, "declares 100000 x 100000")) << msg;

  EXPECT_TRUE(image_size_allowed(8192, 8192));
  EXPECT_FALSE(image_size_allowed(8193, 8192));
  EXPECT_FALSE(image_size_allowed(16385, 1));
  EXPECT_FALSE(image_size_allowed(0, 10));
}
