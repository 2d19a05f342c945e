#include "bayesagg/data/paper/cache.h"

#include "bayesagg/core/files.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bayesagg's cache files assume a little-endian machine"
#endif

namespace bayesagg::cache {
namespace {

constexpr char kMagic[8] = {'B', 'A', 'G', 'C', 'A', 'C', 'H', '1'};
constexpr char kEndMagic[8] = {'B', 'A', 'G', 'C', 'E', 'N', 'D', '1'};
constexpr size_t kChunk = size_t(1) << 20;
constexpr uint64_t kAlign = 64;
constexpr uint64_t kMaxHeader = uint64_t(1) << 24;
constexpr uint64_t kCombineSeed = 0x243F6A8885A308D3ULL;

uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

uint64_t fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

uint64_t chunk_hash(const unsigned char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ static_cast<uint64_t>(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h ^= w * 0x87c37b91114253d5ULL;
    h = rotl(h, 27) * 0x4cf5ad432745937fULL + 0x52dce729ULL;
  }
  if (i < n) {
    uint64_t w = 0;
    std::memcpy(&w, p + i, n - i);
    h ^= w * 0x87c37b91114253d5ULL;
    h = rotl(h, 27) * 0x4cf5ad432745937fULL + 0x52dce729ULL;
  }
  return fmix64(h);
}

uint64_t combine(uint64_t acc, uint64_t chunk) {
  return (rotl(acc, 29) ^ chunk) * 0x9FB21C651E98DF25ULL;
}

uint64_t finish(uint64_t acc, uint64_t total) { return fmix64(acc ^ total); }

uint64_t align_up(uint64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

uint32_t dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kByte: return 0;
    case at::kInt: return 1;
    case at::kLong: return 2;
    case at::kFloat: return 3;
    case at::kDouble: return 4;
    case at::kShort: return 5;
    case at::kChar: return 6;
    default: break;
  }
  TORCH_CHECK(false, "cache files cannot hold tensors of type ", t);
}

uint64_t spec_bytes(const TensorSpec& s) {
  uint64_t n = c10::elementSize(s.dtype);
  for (int64_t d : s.sizes) {
    TORCH_CHECK(d >= 0, "cache tensor '", s.name, "': sizes must be >= 0 when writing");
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

template <typename T>
void append(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

std::string header_bytes(uint64_t key, const std::vector<TensorSpec>& specs,
                         const std::vector<uint64_t>& offsets, const std::vector<uint64_t>& nbytes,
                         uint64_t header_len) {
  std::string h(kMagic, 8);
  append<uint64_t>(h, key);
  append<uint64_t>(h, specs.size());
  append<uint64_t>(h, header_len);
  for (size_t i = 0; i < specs.size(); ++i) {
    append<uint32_t>(h, static_cast<uint32_t>(specs[i].name.size()));
    h += specs[i].name;
    append<uint32_t>(h, dtype_code(specs[i].dtype));
    append<uint32_t>(h, static_cast<uint32_t>(specs[i].sizes.size()));
    for (int64_t d : specs[i].sizes) append<int64_t>(h, d);
    append<uint64_t>(h, offsets.empty() ? 0 : offsets[i]);
    append<uint64_t>(h, nbytes.empty() ? 0 : nbytes[i]);
  }
  return h;
}

/// A read-only mapping of a whole file.
struct Mapping {
  void* addr = MAP_FAILED;
  size_t length = 0;
  ~Mapping() {
    if (addr != MAP_FAILED && length > 0) ::munmap(addr, length);
  }
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

template <typename T>
bool take(const unsigned char*& p, const unsigned char* end, T* v) {
  if (static_cast<size_t>(end - p) < sizeof(T)) return false;
  std::memcpy(v, p, sizeof(T));
  p += sizeof(T);
  return true;
}

}  // namespace

KeyHasher& KeyHasher::bytes(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h_ ^= p[i];
    h_ *= 0x100000001b3ULL;
  }
  return *this;
}

KeyHasher& KeyHasher::str(const std::string& s) {
  i64(static_cast<int64_t>(s.size()));
  return bytes(s.data(), s.size());
}

KeyHasher& KeyHasher::i64(int64_t v) { return bytes(&v, sizeof v); }

KeyHasher& KeyHasher::f64(double v) { return bytes(&v, sizeof v); }

uint64_t checksum_bytes(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  const int64_t chunks = static_cast<int64_t>((n + kChunk - 1) / kChunk);
  std::vector<uint64_t> hashes(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const size_t start = static_cast<size_t>(c) * kChunk;
      hashes[static_cast<size_t>(c)] = chunk_hash(p + start, std::min(kChunk, n - start));
    }
  });
  uint64_t acc = kCombineSeed;
  for (uint64_t h : hashes) acc = combine(acc, h);
  return finish(acc, n);
}

uint64_t checksum_file(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY);
  TORCH_CHECK(f.fd >= 0, "cannot open '", path, "': ", std::strerror(errno));
  std::vector<unsigned char> buf(64 * kChunk);
  uint64_t acc = kCombineSeed, total = 0;
  size_t fill = 0;
  for (;;) {
    const ssize_t r = ::read(f.fd, buf.data() + fill, buf.size() - fill);
    if (r < 0) {
      if (errno == EINTR) continue;
      TORCH_CHECK(false, "cannot read '", path, "': ", std::strerror(errno));
    }
    fill += static_cast<size_t>(r);
    total += static_cast<uint64_t>(r);
    const bool eof = r == 0;
    if (fill == buf.size() || (eof && fill > 0)) {
      // whole chunks (and, at the end of the file, the last partial one)
      const size_t whole = eof ? fill : fill / kChunk * kChunk;
      const int64_t chunks = static_cast<int64_t>((whole + kChunk - 1) / kChunk);
      std::vector<uint64_t> hashes(static_cast<size_t>(chunks));
      at::parallel_for(0, chunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          const size_t s = static_cast<size_t>(c) * kChunk;
          hashes[static_cast<size_t>(c)] = chunk_hash(buf.data() + s, std::min(kChunk, whole - s));
        }
      });
      for (uint64_t h : hashes) acc = combine(acc, h);
      std::memmove(buf.data(), buf.data() + whole, fill - whole);
      fill -= whole;
    }
    if (eof) break;
  }
  return finish(acc, total);
}

// ------------------------------------------------------------------ writer

CacheWriter::CacheWriter(std::string path, uint64_t key, std::vector<TensorSpec> specs)
    : path_(std::move(path)), specs_(std::move(specs)), combined_(kCombineSeed) {
  namespace fs = std::filesystem;
  for (const auto& s : specs_) nbytes_.push_back(spec_bytes(s));
  const uint64_t header_len =
      align_up(header_bytes(key, specs_, {}, {}, 0).size());
  header_bytes_ = header_len;
  uint64_t pos = header_len;
  for (size_t i = 0; i < specs_.size(); ++i) {
    offsets_.push_back(pos);
    pos = align_up(pos + nbytes_[i]);
  }
  const fs::path target(path_);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  make_directories(dir.string());
  std::random_device rd;
  tmp_ = (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                 std::to_string(rd())))
             .string();
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  TORCH_CHECK(fd_ >= 0, "cannot write the cache '", path_, "': ", std::strerror(errno));
  std::string header = header_bytes(key, specs_, offsets_, nbytes_, header_len);
  header.resize(header_len, '\0');
  raw_write(header.data(), header.size());
  position_ = header_len;
  chunk_.reserve(kChunk);
}

CacheWriter::~CacheWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void CacheWriter::raw_write(const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t r = ::write(fd_, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      TORCH_CHECK(false, "cannot write the cache '", path_, "': ", std::strerror(errno));
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
}

void CacheWriter::flush_chunk(bool final) {
  if (chunk_.empty() || (!final && chunk_.size() < kChunk)) return;
  combined_ = combine(combined_, chunk_hash(chunk_.data(), chunk_.size()));
  raw_write(chunk_.data(), chunk_.size());
  chunk_.clear();
}

void CacheWriter::put(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  while (n > 0) {
    const size_t take_n = std::min(n, kChunk - chunk_.size());
    chunk_.insert(chunk_.end(), p, p + take_n);
    p += take_n;
    n -= take_n;
    position_ += take_n;
    flush_chunk(false);
  }
}

void CacheWriter::skip_full_tensors() {
  while (current_ < specs_.size() && written_ == nbytes_[current_]) {
    ++current_;
    written_ = 0;
    if (current_ < specs_.size()) {
      const std::vector<unsigned char> zeros(offsets_[current_] - position_, 0);
      put(zeros.data(), zeros.size());
    }
  }
}

void CacheWriter::write(const void* data, size_t n) {
  TORCH_CHECK(!committed_, "cache '", path_, "': write after commit");
  const auto* p = static_cast<const unsigned char*>(data);
  while (n > 0) {
    skip_full_tensors();
    TORCH_CHECK(current_ < specs_.size(), "cache '", path_, "': more data written than its ",
                specs_.size(), " tensors hold");
    const size_t m = static_cast<size_t>(std::min<uint64_t>(n, nbytes_[current_] - written_));
    put(p, m);
    p += m;
    n -= m;
    written_ += m;
  }
}

void CacheWriter::write(const at::Tensor& t) {
  TORCH_CHECK(t.defined(), "cache '", path_, "': undefined tensor");
  if (t.numel() == 0) return;
  // the tensor that receives the next byte
  size_t idx = current_;
  uint64_t done = written_;
  while (idx < specs_.size() && done == nbytes_[idx]) {
    ++idx;
    done = 0;
  }
  TORCH_CHECK(idx < specs_.size() && t.scalar_type() == specs_[idx].dtype, "cache '", path_,
              "': tensor of type ", t.scalar_type(), " written where ",
              idx < specs_.size() ? c10::toString(specs_[idx].dtype) : "nothing", " is expected");
  const at::Tensor c = t.contiguous();
  write(c.data_ptr(), c.numel() * c.element_size());
}

void CacheWriter::commit() {
  TORCH_CHECK(!committed_, "cache '", path_, "': committed twice");
  skip_full_tensors();
  TORCH_CHECK(current_ >= specs_.size(), "cache '", path_, "': tensor '",
              current_ < specs_.size() ? specs_[current_].name : "", "' is incomplete (",
              written_, " of ", current_ < specs_.size() ? nbytes_[current_] : 0,
              " bytes written)");
  flush_chunk(true);
  const uint64_t sum = finish(combined_, position_ - header_bytes_);
  raw_write(&sum, sizeof sum);
  raw_write(kEndMagic, 8);
  if (::fsync(fd_) != 0) {
    TORCH_CHECK(false, "cannot write the cache '", path_, "': ", std::strerror(errno));
  }
  const int fd = fd_;
  fd_ = -1;
  TORCH_CHECK(::close(fd) == 0, "cannot write the cache '", path_, "': ", std::strerror(errno));
  TORCH_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "cannot move the new cache '", path_,
              "' into place: ", std::strerror(errno));
  committed_ = true;
}

void write_cache(const std::string& path, uint64_t key, const std::vector<std::string>& names,
                 const std::vector<at::Tensor>& tensors) {
  TORCH_CHECK(names.size() == tensors.size(), "write_cache: ", names.size(), " names for ",
              tensors.size(), " tensors");
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < names.size(); ++i) {
    specs.push_back({names[i], tensors[i].scalar_type(), tensors[i].sizes().vec()});
  }
  CacheWriter w(path, key, specs);
  for (const auto& t : tensors) w.write(t);
  w.commit();
}

// ------------------------------------------------------------------ reader

bool open_cache(const std::string& path, uint64_t key, const std::vector<TensorSpec>& specs,
                std::vector<at::Tensor>* tensors, std::string* reason, bool map) {
  const auto fail = [&](const std::string& why) {
    if (reason) *reason = why;
    return false;
  };
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY);
  if (f.fd < 0) return fail(errno == ENOENT ? "no cache yet" : std::string("cannot open it: ") +
                                                                   std::strerror(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) return fail(std::string("cannot stat it: ") + std::strerror(errno));
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 32 + 16) return fail("it is truncated (" + std::to_string(size) + " bytes)");

  auto mapping = std::make_shared<Mapping>();
  mapping->addr = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, f.fd, 0);
  if (mapping->addr == MAP_FAILED) return fail(std::string("cannot map it: ") + std::strerror(errno));
  mapping->length = size;
  const auto* base = static_cast<const unsigned char*>(mapping->addr);

  if (std::memcmp(base, kMagic, 8) != 0) return fail("it is not a bayesagg cache (bad magic)");
  uint64_t file_key, count, header_len;
  std::memcpy(&file_key, base + 8, 8);
  std::memcpy(&count, base + 16, 8);
  std::memcpy(&header_len, base + 24, 8);
  if (file_key != key) return fail("it was built from other files or settings (key mismatch)");
  if (count != specs.size()) return fail("it holds other tensors than expected");
  if (header_len < 32 || header_len % kAlign != 0 || header_len > kMaxHeader ||
      header_len > size) {
    return fail("its header is corrupt");
  }
  const unsigned char* p = base + 32;
  const unsigned char* hend = base + header_len;
  uint64_t expected_offset = header_len;
  uint64_t data_end = header_len;
  std::vector<uint64_t> offsets, nbytes;
  std::vector<std::vector<int64_t>> sizes;
  for (size_t i = 0; i < specs.size(); ++i) {
    uint32_t name_len, code, ndim;
    if (!take(p, hend, &name_len) || name_len > static_cast<size_t>(hend - p)) {
      return fail("its header is corrupt");
    }
    const std::string name(reinterpret_cast<const char*>(p), name_len);
    p += name_len;
    if (!take(p, hend, &code) || !take(p, hend, &ndim) || ndim > 16) {
      return fail("its header is corrupt");
    }
    std::vector<int64_t> dims(ndim);
    for (auto& d : dims) {
      if (!take(p, hend, &d) || d < 0) return fail("its header is corrupt");
    }
    uint64_t off, nb;
    if (!take(p, hend, &off) || !take(p, hend, &nb)) return fail("its header is corrupt");
    const TensorSpec& s = specs[i];
    if (name != s.name || code != dtype_code(s.dtype) || dims.size() != s.sizes.size()) {
      return fail("tensor " + std::to_string(i) + " is '" + name + "', not '" + s.name +
                  "' of the expected type and rank");
    }
    uint64_t expect_nb = c10::elementSize(s.dtype);
    for (size_t d = 0; d < dims.size(); ++d) {
      if (s.sizes[d] >= 0 && dims[d] != s.sizes[d]) {
        return fail("tensor '" + name + "' has other sizes than expected");
      }
      if (dims[d] > 0 && expect_nb > (uint64_t(1) << 62) / static_cast<uint64_t>(dims[d])) {
        return fail("its header is corrupt");
      }
      expect_nb *= static_cast<uint64_t>(dims[d]);
    }
    if (off != expected_offset || nb != expect_nb) return fail("its header is corrupt");
    offsets.push_back(off);
    nbytes.push_back(nb);
    sizes.push_back(dims);
    data_end = off + nb;
    expected_offset = align_up(off + nb);
  }
  if (size != data_end + 16) {
    return fail("its size (" + std::to_string(size) + " bytes) is not what its header says (" +
                std::to_string(data_end + 16) + "): truncated or corrupt");
  }
  if (std::memcmp(base + data_end + 8, kEndMagic, 8) != 0) return fail("its end marker is missing");
  uint64_t stored_sum;
  std::memcpy(&stored_sum, base + data_end, 8);
  if (checksum_bytes(base + header_len, data_end - header_len) != stored_sum) {
    return fail("its checksum does not match its data (corrupt)");
  }

  tensors->clear();
  for (size_t i = 0; i < specs.size(); ++i) {
    void* ptr = const_cast<unsigned char*>(base + offsets[i]);
    at::Tensor t = at::from_blob(
        ptr, sizes[i], [mapping](void*) {}, at::TensorOptions().dtype(specs[i].dtype));
    tensors->push_back(map ? t : t.clone());
  }
  return true;
}

std::string default_cache_dir() {
  namespace fs = std::filesystem;
  if (const char* v = std::getenv("BAYESAGG_CACHE_DIR"); v && *v) return v;
  if (const char* v = std::getenv("XDG_CACHE_HOME"); v && *v) return (fs::path(v) / "bayesagg").string();
  if (const char* v = std::getenv("HOME"); v && *v) {
    return (fs::path(v) / ".cache" / "bayesagg").string();
  }
  return (fs::temp_directory_path() / "bayesagg-cache").string();
}

std::string cache_path(const std::string& dir, const std::string& stem, uint64_t key) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key));
  const std::string d = dir.empty() ? default_cache_dir() : dir;
  return (std::filesystem::path(d) / (stem + "-" + hex + ".bin")).string();
}

}  // namespace bayesagg::cache
