#include "bayesagg/train/trainer.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/data/paper/paper.h"
#include "train_loop.h"

#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <filesystem>
#include <optional>

namespace bayesagg {

uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

std::optional<Benchmark> make_embedded_benchmark(const TrainOptions& o) {
  if (is_paper_benchmark(o.benchmark())) return std::nullopt;
  return make_benchmark(o.benchmark(), EmbeddedOptions()
                                           .data_dir(o.data_dir())
                                           .seed(o.data_seed())
                                           .train_subset(o.train_subset()));
}

c10::Device parse_device(const std::string& name) {
  std::optional<c10::Device> d;
  try {
    d.emplace(name);
  } catch (const c10::Error&) {
    TORCH_CHECK(false, "--device: '", name, "' is not a device; use cpu or cuda[:N]");
  }
  TORCH_CHECK(d->is_cpu() || d->is_cuda(), "--device: '", name,
              "' is not supported; use cpu or cuda[:N]");
  if (d->is_cuda()) {
    TORCH_CHECK(torch::cuda::is_available(), "--device ", name,
                ": this LibTorch has no CUDA support (or no GPU is visible); use --device cpu, "
                "or build bayesagg against a CUDA build of LibTorch (see the README)");
    const auto count = static_cast<int64_t>(torch::cuda::device_count());
    const int64_t index = d->has_index() ? d->index() : 0;
    TORCH_CHECK(index < count, "--device ", name, ": only ", count, " CUDA device(s) visible");
  }
  return *d;
}

TrainOptions resume_options(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.json").string();
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_regular_file(path, ec), "--resume ", dir,
              ": no config.json there (is it a run folder?)");
  TrainOptions o;
  apply_config_json(o, read_file(path), "'" + path + "'");
  o.out(dir);
  o.resume(true);
  o.overwrite(false);
  return o;
}

struct Trainer::Impl {
  TrainOptions options;
  std::optional<Benchmark> given;
  std::ostream* log = nullptr;
};

Trainer::Trainer(TrainOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}

Trainer::Trainer(TrainOptions options, Benchmark benchmark) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->given = std::move(benchmark);
}

Trainer::~Trainer() = default;

void Trainer::set_log(std::ostream* log) { impl_->log = log; }

TrainSummary Trainer::run() {
  TrainLoop loop(impl_->options, impl_->given, impl_->log);
  return loop.run();
}

}  // namespace bayesagg
