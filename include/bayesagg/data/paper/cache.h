#pragma once
/// Caches of preprocessed data (decoded and resized images, parsed molecules): binary files of
/// named tensors, written atomically and validated before every reuse.
///
/// Layout of a cache file (all integers little-endian):
///
///     "BAGCACH1"                     8 bytes
///     key                            uint64: hash of the sources and settings it was built from
///     tensor count T                 uint64
///     header length H                uint64 (a multiple of 64)
///     T entries                      uint32 name length, name, uint32 dtype code, uint32 ndim,
///                                    int64 sizes[ndim], uint64 offset, uint64 bytes
///     zero padding up to H
///     the tensors' data              each at its (64-aligned) offset, zero padding between
///     checksum                       uint64: `checksum_bytes` of the file bytes [H, end of data)
///     "BAGCEND1"                     8 bytes
///
/// A cache is reused only when the magic numbers, the key, every entry (name, dtype, sizes) and
/// the file size match exactly and the checksum of the data is right; otherwise it is rebuilt
/// (and the reason reported). Writers stream into a temporary file in the cache folder, then
/// fsync and rename it, so a crash or an error never leaves a partial cache under the final name.

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace bayesagg::cache {

/// Incremental 64-bit hash of keys (FNV-1a over the bytes fed in, in order). Not cryptographic:
/// it tells apart different sources and settings, not adversaries.
class KeyHasher {
 public:
  KeyHasher& bytes(const void* data, size_t n);
  /// The string's length, then its bytes (so ("ab","c") and ("a","bc") differ).
  KeyHasher& str(const std::string& s);
  KeyHasher& i64(int64_t v);
  KeyHasher& f64(double v);
  uint64_t digest() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

/// Checksum of a byte range: the range is cut into 1 MiB chunks, each hashed word by word, and
/// the chunk hashes combined in order (chunks are hashed in parallel; the result does not
/// depend on the number of threads).
uint64_t checksum_bytes(const void* data, size_t n);

/// Checksum of a whole file's content (`checksum_bytes` of its bytes), read in large blocks.
/// Throws naming the file when it cannot be read.
uint64_t checksum_file(const std::string& path);

/// The expected shape of one cached tensor. A size of -1 accepts any size in that dimension.
struct TensorSpec {
  std::string name;
  at::ScalarType dtype = at::kByte;
  std::vector<int64_t> sizes;
};

/// Writes a cache file by streaming: the tensors' shapes are fixed up front, then their data are
/// appended in order (`write` may be called any number of times per tensor). `commit()` checks
/// that every byte was written, appends the checksum, fsyncs and renames the temporary file onto
/// `path`. A writer destroyed without `commit()` (an error while building) removes its temporary
/// file and leaves any existing cache untouched.
class CacheWriter {
 public:
  /// Every spec must have all sizes >= 0. Creates the folder of `path` if needed. Throws naming
  /// the path when the temporary file cannot be created.
  CacheWriter(std::string path, uint64_t key, std::vector<TensorSpec> specs);
  ~CacheWriter();
  CacheWriter(const CacheWriter&) = delete;
  CacheWriter& operator=(const CacheWriter&) = delete;

  /// Appends `n` bytes to the tensors' data (crossing into the next tensor when the current one
  /// is full). Throws when more bytes are written than the specs hold.
  void write(const void* data, size_t n);
  /// Appends a contiguous copy of `t`'s bytes (its dtype must be the current tensor's).
  void write(const at::Tensor& t);
  /// Finishes the file and moves it into place.
  void commit();

 private:
  void put(const void* data, size_t n);  // raw bytes through the checksum
  /// Moves past every tensor that is fully written, padding up to the next one's offset.
  void skip_full_tensors();
  void flush_chunk(bool final);
  void raw_write(const void* data, size_t n);

  std::string path_, tmp_;
  int fd_ = -1;
  std::vector<TensorSpec> specs_;
  std::vector<uint64_t> offsets_, nbytes_;
  size_t current_ = 0;        // tensor being written
  uint64_t written_ = 0;      // bytes of the current tensor written
  uint64_t position_ = 0;     // file offset of the next byte
  uint64_t header_bytes_ = 0;
  std::vector<unsigned char> chunk_;  // pending bytes of the current 1 MiB checksum chunk
  uint64_t combined_;
  bool committed_ = false;
};

/// Writes in-memory tensors (contiguous copies are made as needed) as one cache file.
void write_cache(const std::string& path, uint64_t key, const std::vector<std::string>& names,
                 const std::vector<at::Tensor>& tensors);

/// Opens `path` and validates it against `key` and `specs` (names, dtypes and sizes, in order).
/// On success returns true and sets `tensors` (one per spec, in order): views of a read-only
/// memory mapping of the file when `map` is true (the mapping lives as long as any of them), or
/// owned copies otherwise. On failure (missing file, other key, other shapes, wrong size,
/// checksum mismatch, unreadable) returns false and sets `reason` to one sentence.
bool open_cache(const std::string& path, uint64_t key, const std::vector<TensorSpec>& specs,
                std::vector<at::Tensor>* tensors, std::string* reason, bool map = true);

/// The default folder of caches: $BAYESAGG_CACHE_DIR, else $XDG_CACHE_HOME/bayesagg, else
/// $HOME/.cache/bayesagg, else `bayesagg-cache` in the system's temporary folder.
std::string default_cache_dir();

/// `{dir}/{stem}-{key as 16 hex digits}.bin`, `dir` being `default_cache_dir()` when empty.
std::string cache_path(const std::string& dir, const std::string& stem, uint64_t key);

}  // namespace bayesagg::cache
