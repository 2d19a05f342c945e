// libFuzzer target: what loading a checkpoint or a model file (`--resume`, `--pretrained`,
// best_model.pt) does with an arbitrary file before LibTorch may read it: the file is read and
// its checksum trailer verified (with the advice about checkpoint.prev.pt when that one
// verifies). The first input byte chooses the layout: bit 0 also writes the rest as
// checkpoint.prev.pt, sealed when bit 1 is set (so that it verifies and the refusal must say how
// to resume from it). An unverified file must be refused with a c10::Error naming it, before its
// payload is parsed.
#include "bayesagg/core/checksum.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"
#include "bayesagg/train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/optim/adam.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <unistd.h>

namespace {

const std::vector<bayesagg::TaskGroup> kGroups = {
    bayesagg::TaskGroup(bayesagg::GroupType::regression, 2, "reg")};

struct Rig {
  bayesagg::MultiTaskModel model{
      {4}, kGroups, bayesagg::ModelOptions().representation_dim(3).hidden_dim(4).seed(0)};
  torch::optim::Adam adam{model.trunk_parameters(), torch::optim::AdamOptions(1e-2)};
  std::unique_ptr<bayesagg::Method> method =
      bayesagg::make_method("ls", kGroups, 3, bayesagg::MethodConfig{});
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
};

/// A plain write (write_file_atomic's fsync would make every run take milliseconds).
void put(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

void expect_refusal(const std::function<void()>& load, const std::string& path,
                    const std::string& advice) {
  try {
    load();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    if (msg.find(path) == std::string::npos || msg.size() > 4096) std::abort();
    if (!advice.empty() && msg.find(advice) == std::string::npos) std::abort();
    return;
  }
  std::abort();  // an unverified file was accepted
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Rig* rig = [] {
    at::set_num_threads(1);
    return new Rig;
  }();
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("bayesagg_fuzz_checkpoint_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string ckpt = (dir / "checkpoint.pt").string();
  const std::string prev = (dir / "checkpoint.prev.pt").string();
  const uint8_t mode = size > 0 ? data[0] : 0;
  const std::string bytes(reinterpret_cast<const char*>(data) + (size > 0 ? 1 : 0),
                          size > 0 ? size - 1 : 0);
  std::error_code ec;
  std::filesystem::remove(prev, ec);
  if (mode & 1) {
    put(prev, (mode & 2) ? bayesagg::seal_with_checksum(bytes) : bytes);
  }
  put(ckpt, bytes);
  const bool verifies = bayesagg::verify_checksum(bytes).ok;
  if (bayesagg::saved_model_epoch(ckpt) != -1 && !verifies) std::abort();
  if (verifies) return 0;  // a sealed payload: LibTorch's reader, not fuzzed (fuzz/README.md)
  const std::string advice = (mode & 3) == 3 ? prev : "";
  expect_refusal([&] { bayesagg::load_model(ckpt, rig->model); }, ckpt, "");
  expect_refusal(
      [&] { bayesagg::load_checkpoint(ckpt, rig->model, rig->adam, *rig->method, rig->gen); }, ckpt,
      advice);
  return 0;
}
