// SHA-256 against Python's hashlib at every padding boundary, and the checksum trailer: any
// changed, cut or extended byte is detected.
#include "bayesagg/core/checksum.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace bayesagg {
namespace {

std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + 3) % 256);
  return s;
}

TEST(Sha256, MatchesReferenceDigestsAtEveryPaddingBoundary) {
  // hashlib.sha256(bytes((i*7+3)%256 for i in range(n))).hexdigest()
  const std::vector<std::pair<size_t, std::string>> cases = {
      {0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
      {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
      {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
      {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
      {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
      {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
      {1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"},
  };
  for (const auto& [n, hex] : cases) EXPECT_EQ(sha256_hex(pattern(n)), hex) << n << " bytes";
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(ChecksumTrailer, VerifiesTheSealedPayloadAndNothingElse) {
  const std::string payload = pattern(5000);
  const std::string sealed = seal_with_checksum(payload);
  ASSERT_EQ(sealed.size(), payload.size() + kChecksumTrailerSize);
  const ChecksumCheck ok = verify_checksum(sealed);
  EXPECT_TRUE(ok.ok) << ok.problem;
  EXPECT_EQ(ok.payload_size, payload.size());

  for (size_t pos : {size_t(0), size_t(2500), payload.size() - 1, payload.size() + 3}) {
    std::string bad = sealed;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x01);  // one bit, in the payload or the digest
    const ChecksumCheck c = verify_checksum(bad);
    EXPECT_FALSE(c.ok) << "bit flipped at " << pos;
    EXPECT_NE(c.problem.find("SHA-256"), std::string::npos) << c.problem;
  }
  EXPECT_FALSE(verify_checksum(payload).ok);  // no trailer
  EXPECT_FALSE(verify_checksum(sealed.substr(0, sealed.size() - 1)).ok);
  EXPECT_FALSE(verify_checksum(sealed.substr(1)).ok);  // cut at the front: the length differs
  EXPECT_FALSE(verify_checksum("x" + sealed).ok);
  EXPECT_FALSE(verify_checksum("").ok);
  EXPECT_TRUE(verify_checksum(seal_with_checksum("")).ok);
}

}  // namespace
}  // namespace bayesagg
