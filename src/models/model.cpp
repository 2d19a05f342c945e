#include "bayesagg/models/model.h"

#include "bayesagg/data/paper/qm9.h"
#include "bayesagg/models/sync_batchnorm.h"
#include "nets.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <sstream>

namespace bayesagg {
namespace {

void init_layer(at::Tensor weight, at::Tensor bias, at::Generator& gen) {
  nets::init_default(std::move(weight), std::move(bias), gen);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
  return out;
}

at::Tensor read_entry(torch::serialize::InputArchive& a, const std::string& key,
                      const at::Tensor& like, bool is_buffer = false) {
  at::Tensor t;
  TORCH_CHECK(a.try_read(key, t, is_buffer), "model checkpoint has no entry '", key,
              "' (was it written by a different model?)");
  TORCH_CHECK(t.sizes() == like.sizes(), "model checkpoint entry '", key, "' has shape ",
              t.sizes(), " but the model's parameter has shape ", like.sizes(),
              " (different trunk or representation width?)");
  return t;
}

}  // namespace

void ModelOptions::validate() const {
  const auto names = trunk_names();
  TORCH_CHECK(trunk() == "auto" || std::find(names.begin(), names.end(), trunk()) != names.end(),
              "unknown trunk '", trunk(),
              "' (known: auto, cnn, mlp, cifar-cnn, resnet18, resnet34, mpnn)");
  TORCH_CHECK(representation_dim() >= 1, "representation_dim must be >= 1, got ",
              representation_dim());
  TORCH_CHECK(hidden_dim() >= 1, "hidden_dim must be >= 1, got ", hidden_dim());
}

std::ostream& operator<<(std::ostream& os, const ModelOptions& o) {
  return os << "ModelOptions(trunk=" << o.trunk() << ", representation_dim="
            << o.representation_dim() << ", hidden_dim=" << o.hidden_dim() << ", seed=" << o.seed()
            << (o.pretrained().empty() ? "" : ", pretrained=" + o.pretrained()) << ")";
}

std::vector<std::string> trunk_names() {
  return {"cnn", "mlp", "cifar-cnn", "resnet18", "resnet34", "mpnn"};
}

struct MultiTaskModel::Impl {
  std::vector<int64_t> input_shape;
  std::vector<TaskGroup> groups;
  ModelOptions options;
  std::string trunk_name;
  std::shared_ptr<nets::TrunkNet> trunk;
  std::vector<torch::nn::Linear> heads;
  bool training = true;
};

MultiTaskModel::MultiTaskModel(std::vector<int64_t> input_shape, std::vector<TaskGroup> groups,
                               ModelOptions options)
    : impl_(std::make_unique<Impl>()) {
  options.validate();
  TORCH_CHECK(!groups.empty(), "a multi-task model needs at least one task group");
  TORCH_CHECK(!input_shape.empty(), "a multi-task model needs a non-empty input shape");
  for (int64_t s : input_shape) {
    TORCH_CHECK(s >= 1, "input shape must be positive, got [", shape_str(input_shape), "]");
  }
  Impl& m = *impl_;
  m.input_shape = std::move(input_shape);
  m.groups = std::move(groups);
  m.options = options;
  m.trunk_name = options.trunk();
  if (m.trunk_name == "auto") m.trunk_name = m.input_shape.size() == 3 ? "cnn" : "mlp";

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed());
  const int64_t d = options.representation_dim();
  namespace nn = torch::nn;
  const std::string& t = m.trunk_name;
  const auto need_image = [&]() {
    TORCH_CHECK(m.input_shape.size() == 3, "the ", t, " trunk takes image inputs [C, H, W], got [",
                shape_str(m.input_shape), "]");
  };
  TORCH_CHECK(options.pretrained().empty() || t == "resnet18" || t == "resnet34",
              "pretrained weights (", options.pretrained(),
              ") are only for the resnet18 and resnet34 trunks, not ", t);
  if (t == "cnn") {
    TORCH_CHECK(m.input_shape.size() == 3, "the cnn trunk takes image inputs [C, H, W], got [",
                shape_str(m.input_shape), "]; use --trunk mlp");
    TORCH_CHECK(m.input_shape[1] >= 12 && m.input_shape[2] >= 12,
                "the cnn trunk needs images of at least 12x12, got [", shape_str(m.input_shape),
                "]");
    nn::Sequential seq;
    auto c1 = nn::Conv2d(nn::Conv2dOptions(m.input_shape[0], 10, 5));
    auto c2 = nn::Conv2d(nn::Conv2dOptions(10, 20, 5));
    init_layer(c1->weight, c1->bias, gen);
    init_layer(c2->weight, c2->bias, gen);
    seq->push_back(c1);
    seq->push_back(nn::ReLU());
    seq->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
    seq->push_back(c2);
    seq->push_back(nn::ReLU());
    seq->push_back(nn::MaxPool2d(nn::MaxPool2dOptions(2)));
    seq->push_back(nn::Flatten());
    const int64_t h1 = (m.input_shape[1] - 4) / 2, w1 = (m.input_shape[2] - 4) / 2;
    const int64_t flat = 20 * ((h1 - 4) / 2) * ((w1 - 4) / 2);  // 320 for 28x28
    auto fc = nn::Linear(flat, d);
    init_layer(fc->weight, fc->bias, gen);
    seq->push_back(fc);
    seq->push_back(nn::ELU());
    m.trunk = nets::sequential_trunk(seq);
  } else if (t == "mlp") {
    TORCH_CHECK(m.input_shape.size() == 1, "the mlp trunk takes vector inputs [D], got [",
                shape_str(m.input_shape), "]; use --trunk cnn");
    const int64_t w = options.hidden_dim();
    auto l1 = nn::Linear(m.input_shape[0], w);
    auto l2 = nn::Linear(w, w);
    auto l3 = nn::Linear(w, d);
    for (auto* l : {&l1, &l2, &l3}) init_layer((*l)->weight, (*l)->bias, gen);
    m.trunk = nets::sequential_trunk(
        nn::Sequential(l1, nn::ReLU(), l2, nn::ReLU(), l3, nn::ELU()));
  } else if (t == "cifar-cnn") {
    need_image();
    const int64_t hh = m.input_shape[1], ww = m.input_shape[2];
    TORCH_CHECK(hh >= 27 && hh < 54 && ww >= 27 && ww < 54,
                "the cifar-cnn trunk needs images of 27x27 to 53x53 (h = the flattened "
                "d x 1 x 1 map), got [", shape_str(m.input_shape), "]");
    m.trunk = nets::cifar_cnn(m.input_shape[0], d, hh, ww, gen);
  } else if (t == "resnet18" || t == "resnet34") {
    need_image();
    TORCH_CHECK(m.input_shape[1] >= 32 && m.input_shape[2] >= 32, "the ", t,
                " trunk needs images of at least 32x32, got [", shape_str(m.input_shape), "]");
    m.trunk = nets::resnet(t == "resnet18" ? 18 : 34, m.input_shape[0], d, gen);
    if (!options.pretrained().empty()) nets::load_resnet_encoder(*m.trunk, options.pretrained());
  } else {
    TORCH_CHECK(m.input_shape.size() == 2, "the mpnn trunk takes graph inputs: input_shape must "
                "be {node features, edge features} (QM9: {11, 5}), got [",
                shape_str(m.input_shape), "]");
    m.trunk = nets::mpnn(m.input_shape[0], m.input_shape[1], options.hidden_dim(), d, gen);
  }
  for (const auto& g : m.groups) {
    auto head = nn::Linear(d, g.head_rows());
    init_layer(head->weight, head->bias, gen);
    m.heads.push_back(head);
  }
}

MultiTaskModel::~MultiTaskModel() = default;
MultiTaskModel::MultiTaskModel(MultiTaskModel&&) noexcept = default;
MultiTaskModel& MultiTaskModel::operator=(MultiTaskModel&&) noexcept = default;

at::Tensor MultiTaskModel::representation(const at::Tensor& inputs) const {
  TORCH_CHECK(!impl_->trunk->takes_graphs(), "the ", impl_->trunk_name,
              " trunk takes graph batches, not tensors");
  const auto& shape = impl_->input_shape;
  TORCH_CHECK(inputs.dim() == static_cast<int64_t>(shape.size()) + 1 &&
                  std::equal(shape.begin(), shape.end(), inputs.sizes().begin() + 1),
              "model inputs must be [B, ", shape_str(shape), "], got ", inputs.sizes());
  return impl_->trunk->forward_tensor(inputs);
}

at::Tensor MultiTaskModel::representation(const GraphBatch& graphs) const {
  TORCH_CHECK(impl_->trunk->takes_graphs(), "the ", impl_->trunk_name,
              " trunk takes tensors, not graph batches");
  const auto& shape = impl_->input_shape;
  TORCH_CHECK(graphs.node_features.dim() == 2 && graphs.node_features.size(1) == shape[0],
              "graph batch: node features must be [N, ", shape[0], "], got ",
              graphs.node_features.sizes());
  TORCH_CHECK(graphs.edge_features.dim() == 2 && graphs.edge_features.size(1) == shape[1],
              "graph batch: edge features must be [E, ", shape[1], "], got ",
              graphs.edge_features.sizes());
  TORCH_CHECK(graphs.edge_index.dim() == 2 && graphs.edge_index.size(0) == 2,
              "graph batch: edge_index must be [2, E], got ", graphs.edge_index.sizes());
  return impl_->trunk->forward_graph(graphs);
}

bool MultiTaskModel::takes_graphs() const { return impl_->trunk->takes_graphs(); }

std::vector<at::Tensor> MultiTaskModel::head_outputs(const at::Tensor& representation) const {
  TORCH_CHECK(representation.dim() == 2 &&
                  representation.size(1) == impl_->options.representation_dim(),
              "representation must be [B, ", impl_->options.representation_dim(), "], got ",
              representation.sizes());
  std::vector<at::Tensor> out;
  out.reserve(impl_->heads.size());
  for (auto& head : impl_->heads) out.push_back(head->forward(representation));
  return out;
}

std::vector<Head> MultiTaskModel::heads() const {
  std::vector<Head> out;
  out.reserve(impl_->heads.size());
  for (const auto& head : impl_->heads) out.push_back(Head{head->weight, head->bias});
  return out;
}

std::vector<at::Tensor> MultiTaskModel::trunk_parameters() const {
  return impl_->trunk->parameters();
}

std::vector<at::Tensor> MultiTaskModel::head_parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& head : impl_->heads) {
    out.push_back(head->weight);
    out.push_back(head->bias);
  }
  return out;
}

int64_t MultiTaskModel::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : trunk_parameters()) n += p.numel();
  for (const auto& p : head_parameters()) n += p.numel();
  return n;
}

int64_t MultiTaskModel::representation_dim() const { return impl_->options.representation_dim(); }
const std::vector<TaskGroup>& MultiTaskModel::groups() const { return impl_->groups; }
const std::vector<int64_t>& MultiTaskModel::input_shape() const { return impl_->input_shape; }
const std::string& MultiTaskModel::trunk_name() const { return impl_->trunk_name; }
const ModelOptions& MultiTaskModel::options() const { return impl_->options; }

std::string MultiTaskModel::describe() const {
  std::ostringstream os;
  os << impl_->trunk_name << "(" << shape_str(impl_->input_shape) << " -> "
     << representation_dim() << ") + heads [";
  for (size_t g = 0; g < impl_->groups.size(); ++g) os << (g ? ", " : "") << impl_->groups[g].str();
  os << "], " << num_parameters() << " parameters";
  return os.str();
}

void MultiTaskModel::to(const c10::Device& device) {
  impl_->trunk->to(device);
  for (auto& head : impl_->heads) head->to(device);
}

void MultiTaskModel::train(bool on) {
  impl_->training = on;
  impl_->trunk->train(on);
  for (auto& head : impl_->heads) head->train(on);
}

bool MultiTaskModel::is_training() const { return impl_->training; }

bool MultiTaskModel::has_batchnorm() const {
  for (const auto& module : impl_->trunk->modules()) {
    if (module->as<SyncBatchNorm2dImpl>() != nullptr) return true;
  }
  return false;
}

void MultiTaskModel::set_batchnorm_reducer(TensorReducer reducer) {
  for (const auto& module : impl_->trunk->modules()) {
    if (auto* bn = module->as<SyncBatchNorm2dImpl>()) bn->set_reducer(reducer);
  }
}

void MultiTaskModel::save(torch::serialize::OutputArchive& archive) const {
  for (const auto& item : impl_->trunk->named_parameters()) {
    archive.write("trunk." + item.key(), item.value());
  }
  for (const auto& item : impl_->trunk->named_buffers()) {
    archive.write("trunk." + item.key(), item.value(), /*is_buffer=*/true);
  }
  for (size_t g = 0; g < impl_->heads.size(); ++g) {
    archive.write("head." + std::to_string(g) + ".weight", impl_->heads[g]->weight);
    archive.write("head." + std::to_string(g) + ".bias", impl_->heads[g]->bias);
  }
}

void MultiTaskModel::load(torch::serialize::InputArchive& archive) {
  at::NoGradGuard no_grad;
  for (auto& item : impl_->trunk->named_parameters()) {
    const at::Tensor t = read_entry(archive, "trunk." + item.key(), item.value());
    item.value().copy_(t);
  }
  for (auto& item : impl_->trunk->named_buffers()) {
    const at::Tensor t = read_entry(archive, "trunk." + item.key(), item.value(), true);
    item.value().copy_(t);
  }
  for (size_t g = 0; g < impl_->heads.size(); ++g) {
    auto& head = impl_->heads[g];
    const std::string p = "head." + std::to_string(g);
    head->weight.copy_(read_entry(archive, p + ".weight", head->weight));
    head->bias.copy_(read_entry(archive, p + ".bias", head->bias));
  }
}

}  // namespace bayesagg
