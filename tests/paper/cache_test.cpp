#include "bayesagg/data/paper/cache.h"

#include "bayesagg/core/files.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include "test_util.h"

#include <filesystem>
#include <random>
#include <string>

using namespace bayesagg;
namespace fs = std::filesystem;
using bayesagg::testing::TempDir;

namespace {

/// A fresh temporary folder, removed at the end of the test.
std::vector<cache::TensorSpec> specs_of(const std::vector<std::string>& names,
                                        const std::vector<at::Tensor>& ts) {
  std::vector<cache::TensorSpec> s;
  for (size_t i = 0; i < names.size(); ++i) s.push_back({names[i], ts[i].scalar_type(), ts[i].sizes().vec()});
  return s;
}

size_t entries(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  return n;
}

}  // namespace

TEST(Cache, RoundTripsTensorsOfEveryTypeMappedOrCopied) {
  TempDir dir;
  const std::string path = dir.file("c.bin");
  const std::vector<std::string> names = {"bytes", "longs", "floats", "doubles", "empty"};
  const std::vector<at::Tensor> ts = {
      at::arange(0, 250, at::kLong).to(at::kByte).reshape({5, 50}),
      at::arange(-7, 5, at::kLong).reshape({3, 4}),
      at::linspace(-1, 1, 13, at::kFloat),
      at::rand({2, 3, 4}, at::kDouble),
      at::empty({0, 11}, at::kFloat)};
  cache::write_cache(path, 42, names, ts);
  for (bool map : {true, false}) {
    std::vector<at::Tensor> out;
    std::string reason;
    ASSERT_TRUE(cache::open_cache(path, 42, specs_of(names, ts), &out, &reason, map)) << reason;
    ASSERT_EQ(out.size(), ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      EXPECT_EQ(out[i].scalar_type(), ts[i].scalar_type());
      EXPECT_TRUE(at::equal(out[i], ts[i])) << names[i];
    }
  }
  // -1 sizes accept any size
  std::vector<cache::TensorSpec> loose = specs_of(names, ts);
  loose[1].sizes = {-1, 4};
  std::vector<at::Tensor> out;
  std::string reason;
  EXPECT_TRUE(cache::open_cache(path, 42, loose, &out, &reason));
  EXPECT_EQ(entries(dir.path), 1u);  // no temporary file left behind
}

TEST(Cache, StreamedWritesAcrossChunksEqualOneWrite) {
  TempDir dir;
  const at::Tensor big = at::randint(0, 256, {3 * (1 << 20) + 12345}, at::kLong).to(at::kByte);
  const at::Tensor small = at::arange(10, at::kFloat);
  {
    cache::CacheWriter w(dir.file("a.bin"), 7, {{"big", at::kByte, {big.size(0)}}, {"small", at::kFloat, {10}}});
    // uneven pieces, crossing the 1 MiB checksum chunks and the tensor boundary
    int64_t pos = 0;
    const int64_t pieces[] = {1, 999999, 1 << 20, 77};
    for (int64_t p : pieces) {
      w.write(big.narrow(0, pos, p));
      pos += p;
    }
    w.write(big.narrow(0, pos, big.size(0) - pos));
    w.write(small);
    w.commit();
  }
  cache::write_cache(dir.file("b.bin"), 7, {"big", "small"}, {big, small});
  EXPECT_EQ(read_file(dir.file("a.bin")), read_file(dir.file("b.bin")));
  std::vector<at::Tensor> out;
  std::string reason;
  ASSERT_TRUE(cache::open_cache(dir.file("a.bin"), 7,
                                {{"big", at::kByte, {big.size(0)}}, {"small", at::kFloat, {10}}},
                                &out, &reason))
      << reason;
  EXPECT_TRUE(at::equal(out[0], big));
  EXPECT_TRUE(at::equal(out[1], small));
}

TEST(Cache, RejectsOtherKeysShapesTruncationAndCorruption) {
  TempDir dir;
  const std::string path = dir.file("c.bin");
  const at::Tensor t = at::arange(1000, at::kFloat);
  cache::write_cache(path, 1, {"t"}, {t});
  const std::vector<cache::TensorSpec> spec = {{"t", at::kFloat, {1000}}};
  std::vector<at::Tensor> out;
  std::string reason;

  EXPECT_FALSE(cache::open_cache(dir.file("missing.bin"), 1, spec, &out, &reason));
  EXPECT_EQ(reason, "no cache yet");
  EXPECT_FALSE(cache::open_cache(path, 2, spec, &out, &reason));
  EXPECT_NE(reason.find("key"), std::string::npos) << reason;
  EXPECT_FALSE(cache::open_cache(path, 1, {{"t", at::kFloat, {999}}}, &out, &reason));
  EXPECT_NE(reason.find("sizes"), std::string::npos) << reason;
  EXPECT_FALSE(cache::open_cache(path, 1, {{"t", at::kDouble, {1000}}}, &out, &reason));
  EXPECT_FALSE(cache::open_cache(path, 1, {{"u", at::kFloat, {1000}}}, &out, &reason));

  const std::string good = read_file(path);
  write_file_atomic(path, good.substr(0, good.size() - 100));
  EXPECT_FALSE(cache::open_cache(path, 1, spec, &out, &reason));
  EXPECT_NE(reason.find("truncated"), std::string::npos) << reason;

  std::string bad = good;
  bad[bad.size() / 2] ^= 0x40;  // a data byte
  write_file_atomic(path, bad);
  EXPECT_FALSE(cache::open_cache(path, 1, spec, &out, &reason));
  EXPECT_NE(reason.find("checksum"), std::string::npos) << reason;

  write_file_atomic(path, good);
  EXPECT_TRUE(cache::open_cache(path, 1, spec, &out, &reason)) << reason;
}

TEST(Cache, AWriterThatIsNotCommittedLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("c.bin");
  cache::write_cache(path, 1, {"t"}, {at::ones({4}, at::kFloat)});
  const std::string before = read_file(path);
  {
    cache::CacheWriter w(path, 1, {{"t", at::kFloat, {4}}});
    w.write(at::zeros({2}, at::kFloat));
    // an error while building: destroyed without commit
  }
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(entries(dir.path), 1u);
  {
    cache::CacheWriter w(path, 1, {{"t", at::kFloat, {4}}});
    w.write(at::zeros({2}, at::kFloat));
    EXPECT_THROW(w.commit(), c10::Error);  // incomplete
    EXPECT_THROW(w.write(at::zeros({3}, at::kFloat)), c10::Error);  // too much
  }
  EXPECT_EQ(read_file(path), before);
}

TEST(Cache, ChecksumDoesNotDependOnChunkingAndKeysDiffer) {
  const at::Tensor data = at::randint(0, 256, {5 * (1 << 20) + 3}, at::kLong).to(at::kByte);
  const uint64_t a = cache::checksum_bytes(data.data_ptr(), data.numel());
  EXPECT_EQ(a, cache::checksum_bytes(data.data_ptr(), data.numel()));
  at::Tensor other = data.clone();
  other[12345] = static_cast<uint8_t>(other[12345].item<uint8_t>() ^ 1);
  EXPECT_NE(a, cache::checksum_bytes(other.data_ptr(), other.numel()));

  TempDir dir;
  const std::string path = dir.file("f.bin");
  write_file_atomic(path, std::string(reinterpret_cast<const char*>(data.data_ptr()), data.numel()));
  EXPECT_EQ(cache::checksum_file(path), a);

  EXPECT_NE(cache::KeyHasher().str("ab").str("c").digest(),
            cache::KeyHasher().str("a").str("bc").digest());
  EXPECT_EQ(cache::cache_path("/x", "qm9", 0xabc), "/x/qm9-0000000000000abc.bin");
}
