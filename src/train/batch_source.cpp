#include "bayesagg/train/batch_source.h"

#include "bayesagg/models/model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <sstream>

namespace bayesagg {
namespace {

ModelBatch model_batch(const MultiTaskBatch& b) {
  ModelBatch out;
  out.inputs = b.inputs;
  out.labels = b.labels;
  return out;
}

class TensorSource : public BatchSource {
 public:
  explicit TensorSource(MultiTaskSplit split) : split_(std::move(split)) {}
  int64_t size() const override { return split_.size(); }
  const Labels& labels() const override { return split_.labels; }
  ModelBatch batch(const at::Tensor& indices, bool, uint64_t) const override {
    return model_batch(split_.batch(indices.to(split_.inputs.device())));
  }

 private:
  MultiTaskSplit split_;
};

class ImageSource : public BatchSource {
 public:
  explicit ImageSource(ImageSplit split) : split_(std::move(split)) {}
  int64_t size() const override { return split_.size(); }
  const Labels& labels() const override { return split_.labels; }
  ModelBatch batch(const at::Tensor& indices, bool train, uint64_t seed) const override {
    at::Generator gen;
    if (train) gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    return model_batch(split_.batch(indices, train, gen));
  }

 private:
  ImageSplit split_;
};

class GraphSource : public BatchSource {
 public:
  explicit GraphSource(QM9Dataset split) : split_(std::move(split)) {}
  int64_t size() const override { return split_.size(); }
  const Labels& labels() const override { return split_.labels; }
  ModelBatch batch(const at::Tensor& indices, bool, uint64_t) const override {
    ModelBatch out;
    out.graphs = split_.batch(indices);
    out.labels = out.graphs->labels;
    return out;
  }

 private:
  QM9Dataset split_;
};

MultiTaskSplit split_to(const MultiTaskSplit& s, const c10::Device& device) {
  if (device.is_cpu()) return s;
  MultiTaskSplit out;
  out.inputs = s.inputs.to(device);
  for (const auto& y : s.labels) out.labels.push_back(y.to(device));
  out.partners = s.partners;
  return out;
}

at::Tensor moved(const at::Tensor& t, const c10::Device& device) {
  return t.defined() ? t.to(device) : t;
}

}  // namespace

int64_t ModelBatch::size() const {
  if (graphs) return graphs->num_graphs;
  return inputs.defined() ? inputs.size(0) : 0;
}

ModelBatch ModelBatch::to(const c10::Device& device) const {
  ModelBatch out;
  out.inputs = moved(inputs, device);
  if (graphs) {
    GraphBatch g = *graphs;
    g.node_features = moved(g.node_features, device);
    g.edge_index = moved(g.edge_index, device);
    g.edge_features = moved(g.edge_features, device);
    g.graph_index = moved(g.graph_index, device);
    g.num_nodes = moved(g.num_nodes, device);
    g.positions = moved(g.positions, device);
    for (auto& y : g.labels) y = moved(y, device);
    out.graphs = std::move(g);
  }
  for (const auto& y : labels) out.labels.push_back(moved(y, device));
  return out;
}

std::unique_ptr<BatchSource> make_batch_source(MultiTaskSplit split) {
  return std::make_unique<TensorSource>(std::move(split));
}
std::unique_ptr<BatchSource> make_batch_source(ImageSplit split) {
  return std::make_unique<ImageSource>(std::move(split));
}
std::unique_ptr<BatchSource> make_batch_source(QM9Dataset split) {
  return std::make_unique<GraphSource>(std::move(split));
}

uint64_t augment_seed(uint64_t seed, int64_t epoch, int64_t batch) {
  const auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  uint64_t z = mix(seed + 0x9E3779B97F4A7C15ULL * 6);
  z = mix(z + 0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(epoch) + 1));
  return mix(z + 0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(batch) + 1));
}

namespace {

/// What every kind of benchmark gives the trainer alike: its metadata and description.
template <class B>
TrainData train_data_of(const B& b) {
  TrainData d;
  d.meta.name = b.name;
  d.meta.groups = b.groups;
  d.meta.task_names = b.task_names;
  d.meta.target_scaling = b.target_scaling;
  d.meta.seed = b.seed;
  std::ostringstream os;
  os << b;
  d.description = os.str();
  return d;
}

}  // namespace

TrainData make_train_data(const Benchmark& b, const c10::Device& device) {
  TrainData d = train_data_of(b);
  d.meta.task_scales = b.task_scales;
  d.meta.noise_levels = b.noise_levels;
  d.input_shape = b.input_shape();
  d.train = make_batch_source(split_to(b.train, device));
  d.val = make_batch_source(split_to(b.val, device));
  d.test = make_batch_source(split_to(b.test, device));
  return d;
}

TrainData make_train_data(const ImageBenchmark& b) {
  TrainData d = train_data_of(b);
  d.input_shape = b.input_shape();
  d.train = make_batch_source(b.train);
  d.val = make_batch_source(b.val);
  d.test = make_batch_source(b.test);
  d.notes = b.notes;
  return d;
}

TrainData make_train_data(const QM9Benchmark& b) {
  TrainData d = train_data_of(b);
  d.input_shape = {kQM9NodeFeatures, kQM9EdgeFeatures};
  d.graphs = true;
  d.train = make_batch_source(b.train);
  d.val = make_batch_source(b.val);
  d.test = make_batch_source(b.test);
  d.notes = b.notes;
  return d;
}

at::Tensor model_representation(const MultiTaskModel& model, const ModelBatch& batch) {
  if (batch.graphs) return model.representation(*batch.graphs);
  return model.representation(batch.inputs);
}

// ------------------------------------------------------------------ Prefetcher

Prefetcher::Prefetcher(std::shared_ptr<const BatchSource> source, std::vector<at::Tensor> batches,
                       bool train, std::vector<uint64_t> seeds, int64_t depth,
                       c10::Device device)
    : source_(std::move(source)),
      batches_(std::move(batches)),
      train_(train),
      seeds_(std::move(seeds)),
      depth_(static_cast<size_t>(std::max<int64_t>(depth, 0))),
      device_(device) {
  TORCH_CHECK(source_ != nullptr, "Prefetcher: no source");
  TORCH_CHECK(!train_ || seeds_.size() == batches_.size(), "Prefetcher: ", batches_.size(),
              " batches but ", seeds_.size(), " augmentation seeds");
  if (depth_ > 0 && !batches_.empty()) thread_ = std::thread([this] { work(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ModelBatch Prefetcher::make(size_t i) const {
  const uint64_t seed = train_ ? seeds_[i] : 0;
  ModelBatch b = source_->batch(batches_[i], train_, seed);
  return device_.is_cpu() ? b : b.to(device_);
}

void Prefetcher::work() {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < batches_.size(); ++i) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || ready_.size() < depth_; });
      if (stop_) return;
    }
    ModelBatch b;
    try {
      b = make(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.push_back(std::move(b));
      ++produced_;
    }
    cv_.notify_all();
  }
}

ModelBatch Prefetcher::next() {
  TORCH_CHECK(taken_ < batches_.size(), "Prefetcher: all ", batches_.size(),
              " batches were taken");
  if (depth_ == 0) return make(taken_++);
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_ != nullptr; });
  if (ready_.empty()) std::rethrow_exception(error_);
  ModelBatch b = std::move(ready_.front());
  ready_.pop_front();
  ++taken_;
  lock.unlock();
  cv_.notify_all();
  return b;
}

}  // namespace bayesagg
