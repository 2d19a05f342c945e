#pragma once
/// SHA-256 (FIPS 180-4, implemented here: no dependency) and the checksum trailer that makes a
/// file self-verifying. bayesagg's own archives (`checkpoint.pt`, `best_model.pt`) are written as
///
///     payload | SHA-256(payload) [32 bytes] | payload size [8 bytes, little-endian] | magic [16]
///
/// and their trailer is verified before any byte of the payload reaches LibTorch's reader, whose
/// unpickler is not hardened against damaged or hostile input. Because the checksum lives in the
/// same file, one atomic rename replaces file and checksum together: no kill can leave a file
/// beside a checksum of another version.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace bayesagg {

/// The SHA-256 digest of `size` bytes at `data`.
std::array<uint8_t, 32> sha256(const void* data, size_t size);

/// The SHA-256 digest of `bytes` as 64 lower-case hexadecimal digits.
std::string sha256_hex(const std::string& bytes);

/// Size of the trailer appended by `seal_with_checksum`.
constexpr size_t kChecksumTrailerSize = 56;

/// `payload` followed by its checksum trailer.
std::string seal_with_checksum(std::string payload);

/// What `verify_checksum` found.
struct ChecksumCheck {
  /// True when the trailer is present and the payload hashes to the recorded digest.
  bool ok = false;
  /// The payload's size (the bytes before the trailer) when `ok`.
  size_t payload_size = 0;
  /// Why not `ok`, one phrase (e.g. "its contents do not match its SHA-256 checksum").
  std::string problem;
};

/// Checks the trailer of `bytes` (the whole file) without throwing.
ChecksumCheck verify_checksum(const std::string& bytes);

}  // namespace bayesagg
