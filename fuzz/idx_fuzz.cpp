// libFuzzer target: the IDX reader (plain and gzip'd) on arbitrary bytes. Errors must be
// c10::Error with a message; anything else (a crash, a sanitizer report, an allocation beyond
// -malloc_limit_mb) is a finding.
#include "bayesagg/data/idx.h"

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/bayesagg_fuzz_idx_" + std::to_string(::getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    bayesagg::read_idx(path);
  } catch (const c10::Error&) {
  }
  return 0;
}
