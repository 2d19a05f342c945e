#include "bayesagg/data/idx.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "test_util.h"

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace bayesagg;
namespace fs = std::filesystem;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;

namespace {


void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST(Idx, ReadsHandWrittenPlainFilesExactly) {
  TempDir dir;
  // labels: magic 0x00000801, N = 3, then 7 8 9
  write_bytes(dir.file("labels"), {0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9});
  const at::Tensor labels = read_idx_labels(dir.file("labels"));
  EXPECT_EQ(labels.scalar_type(), at::kLong);
  EXPECT_TRUE(at::equal(labels, at::tensor({7, 8, 9}, at::kLong)));
  // images: magic 0x00000803, [2, 2, 3], values 0, 1, ..., 11 (one value 255 to check unsigned)
  std::vector<unsigned char> bytes = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
  for (int v = 0; v < 11; ++v) bytes.push_back(static_cast<unsigned char>(v));
  bytes.push_back(255);
  write_bytes(dir.file("images"), bytes);
  const at::Tensor images = read_idx_images(dir.file("images"));
  EXPECT_EQ(images.scalar_type(), at::kByte);
  ASSERT_EQ(images.sizes(), c10::IntArrayRef({2, 2, 3}));
  at::Tensor expected = at::arange(12, at::kLong);
  expected[11] = 255;
  EXPECT_TRUE(at::equal(images.to(at::kLong), expected.reshape({2, 2, 3})));
  // sizes above 2^16 use every header byte: [0x00010002] labels would be 65538 bytes
  std::vector<unsigned char> big = {0, 0, 8, 1, 0, 1, 0, 2};
  big.resize(big.size() + 65538, 3);
  write_bytes(dir.file("big"), big);
  EXPECT_EQ(read_idx_labels(dir.file("big")).size(0), 65538);
}

TEST(Idx, RoundTripsGzipAndPlainImagesAndLabels) {
  TempDir dir;
  const at::Tensor images =
      (at::arange(5 * 28 * 28, at::kLong) * 7 % 256).to(at::kByte).reshape({5, 28, 28});
  const at::Tensor labels = at::tensor({3, 0, 9, 9, 1}, at::kLong).to(at::kByte);
  for (const bool gzip : {true, false}) {
    const std::string suffix = gzip ? ".gz" : "";
    write_idx(dir.file("images" + suffix), images, gzip);
    write_idx(dir.file("labels" + suffix), labels, gzip);
    const auto raw = read_bytes(dir.file("images" + suffix));
    if (gzip) {  // the gzip magic number, and smaller than the raw data
      ASSERT_GE(raw.size(), 2u);
      EXPECT_EQ(raw[0], 0x1f);
      EXPECT_EQ(raw[1], 0x8b);
      EXPECT_LT(raw.size(), 16u + 5 * 28 * 28);
    } else {
      EXPECT_EQ(raw.size(), 16u + 5 * 28 * 28);
      EXPECT_EQ(raw[2], 0x08);
      EXPECT_EQ(raw[3], 0x03);
    }
    EXPECT_TRUE(at::equal(read_idx_images(dir.file("images" + suffix)), images)) << suffix;
    EXPECT_TRUE(at::equal(read_idx_labels(dir.file("labels" + suffix)), labels.to(at::kLong)))
        << suffix;
    EXPECT_TRUE(at::equal(read_idx(dir.file("labels" + suffix)), labels)) << suffix;
  }
}

TEST(Idx, TruncatedFilesAreErrorsNamingTheFile) {
  TempDir dir;
  // plain: the header announces 5 labels, 3 follow
  write_bytes(dir.file("short-labels"), {0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3});
  std::string msg = error_of([&] { read_idx_labels(dir.file("short-labels")); });
  EXPECT_TRUE(contains(msg, dir.file("short-labels"))) << msg;
  EXPECT_TRUE(contains(msg, "truncated")) << msg;
  // plain: header itself cut short
  write_bytes(dir.file("short-header"), {0, 0, 8, 3, 0, 0, 0, 2, 0, 0});
  msg = error_of([&] { read_idx_images(dir.file("short-header")); });
  EXPECT_TRUE(contains(msg, dir.file("short-header"))) << msg;
  // gzip'd: the compressed stream cut in half
  const at::Tensor images =
      (at::arange(20 * 28 * 28, at::kLong) * 31 % 251).to(at::kByte).reshape({20, 28, 28});
  write_idx(dir.file("images.gz"), images, true);
  auto bytes = read_bytes(dir.file("images.gz"));
  bytes.resize(bytes.size() / 2);
  write_bytes(dir.file("cut.gz"), bytes);
  msg = error_of([&] { read_idx_images(dir.file("cut.gz")); });
  EXPECT_TRUE(contains(msg, dir.file("cut.gz"))) << msg;
  EXPECT_TRUE(contains(msg, "truncated")) << msg;
  // gzip'd: only the gzip trailer (CRC, length) missing
  bytes = read_bytes(dir.file("images.gz"));
  bytes.resize(bytes.size() - 8);
  write_bytes(dir.file("no-trailer.gz"), bytes);
  msg = error_of([&] { read_idx_images(dir.file("no-trailer.gz")); });
  EXPECT_TRUE(contains(msg, dir.file("no-trailer.gz"))) << msg;
}

TEST(Idx, BadMagicAndWrongKindAreErrors) {
  TempDir dir;
  write_bytes(dir.file("bad"), {0x12, 0x34, 0x56, 0x78, 0, 0, 0, 1, 5});
  std::string msg = error_of([&] { read_idx(dir.file("bad")); });
  EXPECT_TRUE(contains(msg, dir.file("bad"))) << msg;
  EXPECT_TRUE(contains(msg, "0x12345678")) << msg;
  // signed bytes (0x09) are not supported
  write_bytes(dir.file("signed"), {0, 0, 9, 1, 0, 0, 0, 1, 5});
  msg = error_of([&] { read_idx_labels(dir.file("signed")); });
  EXPECT_TRUE(contains(msg, "0x00000901")) << msg;
  // a label file is not an image file, and vice versa
  write_bytes(dir.file("labels"), {0, 0, 8, 1, 0, 0, 0, 1, 5});
  msg = error_of([&] { read_idx_images(dir.file("labels")); });
  EXPECT_TRUE(contains(msg, dir.file("labels")) && contains(msg, "0x00000801")) << msg;
  write_bytes(dir.file("images"), {0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 5});
  msg = error_of([&] { read_idx_labels(dir.file("images")); });
  EXPECT_TRUE(contains(msg, dir.file("images")) && contains(msg, "0x00000803")) << msg;
  // too short for a magic number
  write_bytes(dir.file("tiny"), {0, 0});
  msg = error_of([&] { read_idx(dir.file("tiny")); });
  EXPECT_TRUE(contains(msg, dir.file("tiny"))) << msg;
}

TEST(Idx, TrailingBytesAndMissingFilesAreErrors) {
  TempDir dir;
  write_bytes(dir.file("trailing"), {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3});
  std::string msg = error_of([&] { read_idx_labels(dir.file("trailing")); });
  EXPECT_TRUE(contains(msg, dir.file("trailing")) && contains(msg, "trailing")) << msg;
  msg = error_of([&] { read_idx(dir.file("missing.gz")); });
  EXPECT_TRUE(contains(msg, dir.file("missing.gz")) && contains(msg, "does not exist")) << msg;
  EXPECT_THROW(write_idx(dir.file("float"), at::zeros({2}), false), c10::Error);
}

// A 20-byte file whose header announces 8 GiB used to allocate them before finding the data
// missing. Checked in a child process whose address space leaves no room for 8 GiB.
TEST(Idx, AHugeHeaderOnATinyFileFailsWithoutAllocatingItsSize) {
  TempDir dir;
  const std::string path = dir.file("huge.idx");
  {
    std::ofstream f(path, std::ios::binary);
    const unsigned char bytes[20] = {0, 0, 8, 3, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 8, 0, 1, 2, 3, 4};
    f.write(reinterpret_cast<const char*>(bytes), sizeof bytes);  // 2048^3 bytes announced
  }
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    long pages = 0;
    std::ifstream("/proc/self/statm") >> pages;  // virtual size, in pages
    const rlim_t limit = static_cast<rlim_t>(pages) * ::sysconf(_SC_PAGESIZE) + (rlim_t(1) << 30);
    const rlimit rl{limit, limit};
    ::setrlimit(RLIMIT_AS, &rl);
    const std::string msg = error_of([&] { read_idx(path); });
    ::_exit(contains(msg, "is truncated") && contains(msg, "8589934592") ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
