#pragma once
// Shared helpers of the test suite.

#include <ATen/ATen.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace bayesagg::testing {

/// The public fixtures: $BAYESAGG_FIXTURES, else ../shared/fixtures/public beside the repository.
inline std::string fixture_dir() {
  if (const char* env = std::getenv("BAYESAGG_FIXTURES"); env && *env) return env;
  return BAYESAGG_DEFAULT_FIXTURES;
}

/// Every fixture file, sorted by name.
inline std::vector<std::string> fixture_files() {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(fixture_dir())) {
    if (e.path().extension() == ".json") files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

/// ||a - b|| / ||b||.
inline double rel_err(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  return (x - y).norm().item<double>() / y.norm().item<double>();
}

}  // namespace bayesagg::testing
