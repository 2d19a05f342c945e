// libFuzzer target: the checksum trailer of checkpoints and model files (read before LibTorch
// sees a byte). A file that verifies must be exactly a sealed payload.
#include "bayesagg/core/checksum.h"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const bayesagg::ChecksumCheck c = bayesagg::verify_checksum(bytes);
  if (c.ok && bayesagg::seal_with_checksum(bytes.substr(0, c.payload_size)) != bytes) std::abort();
  if (!bayesagg::verify_checksum(bayesagg::seal_with_checksum(bytes)).ok) std::abort();
  return 0;
}
