#pragma once
// Shared by the libFuzzer targets whose readers take a path: the input written to a file of the
// process's own (one per target and process, reused), so the reader sees it as a user's file.
#include <cstdint>
#include <cstdio>
#include <string>

#include <unistd.h>

namespace bayesagg::fuzz {

/// Writes `size` bytes at `data` to `/tmp/bayesagg_fuzz_<name>_<pid><suffix>` and returns the
/// path ("" when the file cannot be written).
inline std::string write_input(const std::string& name, const uint8_t* data, size_t size,
                               const std::string& suffix = "") {
  const std::string path = "/tmp/bayesagg_fuzz_" + name + "_" + std::to_string(::getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return "";
  const bool ok = std::fwrite(data, 1, size, f) == size;
  if (std::fclose(f) != 0 || !ok) return "";
  return path;
}

}  // namespace bayesagg::fuzz
