#include "bayesagg/data/idx.h"

#include "bayesagg/core/files.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace bayesagg {
namespace {

/// Largest number of data bytes accepted (guards against absurd headers): 16 GiB.
constexpr uint64_t kMaxIdxBytes = uint64_t(1) << 34;
/// Largest single gzread (its length is an unsigned int, its result an int).
constexpr uint64_t kMaxRead = uint64_t(1) << 30;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

uint32_t big_endian32(const unsigned char* b) {
  return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
}

struct GzCloser {
  void operator()(gzFile_s* f) const {
    if (f) gzclose(f);
  }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

std::string gz_message(gzFile f) {
  int code = Z_OK;
  const char* msg = gzerror(f, &code);
  if (code == Z_ERRNO) return std::strerror(errno);
  return msg && *msg ? msg : "read error";
}

/// Reads up to `n` bytes; returns how many were read (fewer only at the end of the file). Throws
/// (naming the file) on a read or decompression error.
uint64_t read_bytes(gzFile f, void* dst, uint64_t n, const std::string& path, const char* what) {
  auto* out = static_cast<unsigned char*>(dst);
  uint64_t got = 0;
  while (got < n) {
    const uint64_t want = std::min(n - got, kMaxRead);
    const int r = gzread(f, out + got, static_cast<unsigned>(want));
    if (r < 0) {
      TORCH_CHECK(false, "'", path, "' is truncated or corrupt while reading its ", what, " (", got,
                  " of ", n, " bytes read): ", gz_message(f));
    }
    if (r == 0) {
      // A gzip stream cut short reads as an early end with Z_BUF_ERROR ("unexpected end of file").
      int code = Z_OK;
      gzerror(f, &code);
      TORCH_CHECK(code != Z_BUF_ERROR, "'", path, "' is truncated or corrupt while reading its ",
                  what, " (", got, " of ", n, " bytes read): ", gz_message(f));
      break;
    }
    got += static_cast<uint64_t>(r);
  }
  return got;
}

}  // namespace

at::Tensor read_idx(const std::string& path) {
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_regular_file(path, ec), "IDX file '", path,
              "' does not exist or is not a regular file");
  GzFile file(gzopen(path.c_str(), "rb"));
  TORCH_CHECK(file != nullptr, "cannot open IDX file '", path, "': ", std::strerror(errno));
  gzbuffer(file.get(), 1 << 18);

  unsigned char magic_bytes[4];
  const uint64_t got_magic = read_bytes(file.get(), magic_bytes, 4, path, "magic number");
  TORCH_CHECK(got_magic == 4, "'", path, "' is too short to be an IDX file (", got_magic,
              " bytes)");
  const uint32_t magic = big_endian32(magic_bytes);
  const int ndims = magic_bytes[3];
  TORCH_CHECK(magic_bytes[0] == 0 && magic_bytes[1] == 0 && magic_bytes[2] == 0x08 && ndims >= 1 &&
                  ndims <= 8,
              "'", path, "' is not an unsigned-byte IDX file: bad magic number ", hex32(magic),
              " (expected 0x000008NN with 1 <= NN <= 8, e.g. ", hex32(kIdxImagesMagic),
              " for images, ", hex32(kIdxLabelsMagic), " for labels)");

  std::vector<unsigned char> header(4 * static_cast<size_t>(ndims));
  const uint64_t got_header = read_bytes(file.get(), header.data(), header.size(), path, "header");
  TORCH_CHECK(got_header == header.size(), "'", path, "' is truncated: its header needs ",
              header.size(), " bytes of sizes after the magic number, found ", got_header);
  std::vector<int64_t> sizes(ndims);
  uint64_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    const uint32_t s = big_endian32(header.data() + 4 * d);
    sizes[d] = static_cast<int64_t>(s);
    TORCH_CHECK(s == 0 || total <= kMaxIdxBytes / s, "'", path, "': header sizes ", sizes,
                " are implausibly large");
    total *= s;
  }
  TORCH_CHECK(total <= kMaxIdxBytes, "'", path, "': header sizes are implausibly large (", total,
              " bytes)");

  // Read in chunks before allocating the tensor: a 20-byte file whose header announces 16 GiB
  // must fail on its missing data, not allocate first.
  constexpr uint64_t kChunk = uint64_t(1) << 24;
  std::vector<unsigned char> bytes;
  bytes.reserve(static_cast<size_t>(std::min(total, kChunk)));
  while (bytes.size() < total) {
    const uint64_t want = std::min<uint64_t>(kChunk, total - bytes.size());
    const size_t before = bytes.size();
    bytes.resize(before + static_cast<size_t>(want));
    const uint64_t n = read_bytes(file.get(), bytes.data() + before, want, path, "data");
    bytes.resize(before + static_cast<size_t>(n));
    if (n < want) break;
  }
  const uint64_t got = bytes.size();
  TORCH_CHECK(got == total, "'", path, "' is truncated: its header (sizes ", sizes, ") announces ",
              total, " data bytes, found only ", got);
  unsigned char extra = 0;
  const uint64_t trailing = read_bytes(file.get(), &extra, 1, path, "end");
  TORCH_CHECK(trailing == 0, "'", path, "' has trailing bytes after the ", total,
              " data bytes its header (sizes ", sizes, ") announces");
  at::Tensor data = at::empty(sizes, at::kByte);
  if (total > 0) std::memcpy(data.data_ptr<uint8_t>(), bytes.data(), static_cast<size_t>(total));
  return data;
}

at::Tensor read_idx_images(const std::string& path) {
  at::Tensor data = read_idx(path);
  TORCH_CHECK(data.dim() == 3, "'", path, "' is not an IDX image file: magic number ",
              hex32(0x0800u | static_cast<uint32_t>(data.dim())), ", expected ",
              hex32(kIdxImagesMagic));
  return data;
}

at::Tensor read_idx_labels(const std::string& path) {
  at::Tensor data = read_idx(path);
  TORCH_CHECK(data.dim() == 1, "'", path, "' is not an IDX label file: magic number ",
              hex32(0x0800u | static_cast<uint32_t>(data.dim())), ", expected ",
              hex32(kIdxLabelsMagic));
  return data.to(at::kLong);
}

void write_idx(const std::string& path, const at::Tensor& data, bool gzip) {
  TORCH_CHECK(data.defined() && data.scalar_type() == at::kByte, "write_idx('", path,
              "'): expected a uint8 tensor, got ",
              data.defined() ? std::string(c10::toString(data.scalar_type())) : "undefined");
  TORCH_CHECK(data.dim() >= 1 && data.dim() <= 8, "write_idx('", path,
              "'): expected 1 to 8 dimensions, got ", data.dim());
  const at::Tensor c = data.contiguous();
  std::string raw;
  raw.reserve(4 + 4 * c.dim() + c.numel());
  const auto put32 = [&raw](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8)
      raw.push_back(static_cast<char>((v >> shift) & 0xff));
  };
  put32(0x0800u | static_cast<uint32_t>(c.dim()));
  for (int64_t s : c.sizes()) {
    TORCH_CHECK(s <= std::numeric_limits<uint32_t>::max(), "write_idx('", path, "'): size ", s,
                " does not fit the IDX header");
    put32(static_cast<uint32_t>(s));
  }
  raw.append(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), c.numel());
  if (!gzip) {
    write_file_atomic(path, raw);
    return;
  }
  TORCH_CHECK(raw.size() < (uint64_t(1) << 31), "write_idx('", path,
              "'): gzip'd writing is limited to 2 GiB");
  z_stream zs{};
  // windowBits 15 + 16: a gzip wrapper, as gzopen/gzip write.
  TORCH_CHECK(
      deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
      "write_idx('", path, "'): cannot initialise zlib");
  std::string out(deflateBound(&zs, raw.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(raw.data());
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  const uint64_t written = zs.total_out;
  deflateEnd(&zs);
  TORCH_CHECK(rc == Z_STREAM_END, "write_idx('", path, "'): zlib compression failed (", rc, ")");
  out.resize(written);
  write_file_atomic(path, out);
}

}  // namespace bayesagg
