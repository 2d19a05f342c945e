#include "bayesagg/core/checksum.h"

#include <cstring>

namespace bayesagg {
namespace {

constexpr char kMagic[17] = "bayesagg-sha256\n";  // 16 bytes, without the terminating zero

constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/// One 64-byte block into the state `h`.
void compress(uint32_t h[8], const uint8_t* block) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i) {
    w[i] = (uint32_t(block[4 * i]) << 24) | (uint32_t(block[4 * i + 1]) << 16) |
           (uint32_t(block[4 * i + 2]) << 8) | uint32_t(block[4 * i + 3]);
  }
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t t1 =
        k + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
    const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    k = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += k;
}

void put_u64_le(uint8_t* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t get_u64_le(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(in[i]) << (8 * i);
  return v;
}

}  // namespace

std::array<uint8_t, 32> sha256(const void* data, size_t size) {
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* p = static_cast<const uint8_t*>(data);
  size_t full = size / 64;
  for (size_t i = 0; i < full; ++i) compress(h, p + 64 * i);
  // The tail, 0x80, zeros, and the message length in bits (big-endian) in one or two blocks.
  uint8_t tail[128] = {};
  const size_t rest = size - 64 * full;
  if (rest > 0) std::memcpy(tail, p + 64 * full, rest);
  tail[rest] = 0x80;
  const size_t blocks = rest + 1 + 8 <= 64 ? 1 : 2;
  const uint64_t bits = static_cast<uint64_t>(size) * 8;
  for (int i = 0; i < 8; ++i) tail[64 * blocks - 1 - i] = static_cast<uint8_t>(bits >> (8 * i));
  for (size_t b = 0; b < blocks; ++b) compress(h, tail + 64 * b);
  std::array<uint8_t, 32> out{};
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(h[i] >> (24 - 8 * j));
  }
  return out;
}

std::string sha256_hex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  const auto d = sha256(bytes.data(), bytes.size());
  std::string s;
  for (uint8_t b : d) {
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

std::string seal_with_checksum(std::string payload) {
  uint8_t trailer[kChecksumTrailerSize];
  const auto digest = sha256(payload.data(), payload.size());
  std::memcpy(trailer, digest.data(), 32);
  put_u64_le(trailer + 32, payload.size());
  std::memcpy(trailer + 40, kMagic, 16);
  payload.append(reinterpret_cast<const char*>(trailer), kChecksumTrailerSize);
  return payload;
}

ChecksumCheck verify_checksum(const std::string& bytes) {
  ChecksumCheck c;
  const auto* end = reinterpret_cast<const uint8_t*>(bytes.data()) + bytes.size();
  if (bytes.size() < kChecksumTrailerSize ||
      std::memcmp(end - 16, kMagic, 16) != 0) {
    c.problem = "it has no bayesagg checksum trailer (it was not written by this version of "
                "bayesagg, or its end was cut off or changed)";
    return c;
  }
  const uint8_t* trailer = end - kChecksumTrailerSize;
  const uint64_t size = get_u64_le(trailer + 32);
  if (size != bytes.size() - kChecksumTrailerSize) {
    c.problem = "its length (" + std::to_string(bytes.size()) +
                " bytes) is not the recorded one (" + std::to_string(size) + " + " +
                std::to_string(kChecksumTrailerSize) + "): it was cut off or extended";
    return c;
  }
  const auto digest = sha256(bytes.data(), size);
  if (std::memcmp(digest.data(), trailer, 32) != 0) {
    c.problem = "its contents do not match its SHA-256 checksum (it was changed or damaged after "
                "it was written)";
    return c;
  }
  c.ok = true;
  c.payload_size = static_cast<size_t>(size);
  return c;
}

}  // namespace bayesagg
