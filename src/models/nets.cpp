#include "nets.h"

#include "bayesagg/core/checksum.h"
#include "bayesagg/core/files.h"
#include "bayesagg/models/sync_batchnorm.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/modules/rnn.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

namespace bayesagg {
namespace nets {
namespace nn = torch::nn;

at::Tensor TrunkNet::forward_tensor(const at::Tensor&) {
  TORCH_CHECK(false, "this trunk takes graph batches, not tensors");
}

at::Tensor TrunkNet::forward_graph(const GraphBatch&) {
  TORCH_CHECK(false, "this trunk takes tensors, not graph batches");
}

void init_default(at::Tensor weight, at::Tensor bias, at::Generator& gen) {
  at::NoGradGuard no_grad;
  const int64_t fan_in = weight.numel() / weight.size(0);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight.uniform_(-bound, bound, gen);
  if (bias.defined()) bias.uniform_(-bound, bound, gen);
}

namespace {

// ------------------------------------------------------------------ sequential

class SequentialTrunk : public TrunkNet {
 public:
  explicit SequentialTrunk(nn::Sequential seq) : seq_(std::move(seq)) {
    for (const auto& item : seq_->named_children()) register_module(item.key(), item.value());
  }
  at::Tensor forward_tensor(const at::Tensor& inputs) override { return seq_->forward(inputs); }

 private:
  nn::Sequential seq_;  // not registered itself: its children are, under their indices
};

// ------------------------------------------------------------------ CIFAR-MTL CNN

class CifarCnn : public TrunkNet {
 public:
  CifarCnn(int64_t in, int64_t c, int64_t h, int64_t w, at::Generator& gen) {
    int64_t ch = in;
    for (int i = 0; i < 3; ++i) {
      auto conv = nn::Conv2d(nn::Conv2dOptions(ch, c, 3).padding(1).padding_mode(torch::kReflect));
      init_default(conv->weight, conv->bias, gen);
      convs_.push_back(register_module("conv" + std::to_string(i + 1), conv));
      ch = c;
      h /= 3;
      w /= 3;
    }
    TORCH_CHECK(h >= 1 && w >= 1, "the cifar-cnn trunk needs images of at least 27x27");
    bn_ = register_module("bn", SyncBatchNorm2d(c));
  }
  at::Tensor forward_tensor(const at::Tensor& inputs) override {
    at::Tensor x = inputs;
    for (auto& conv : convs_) x = at::max_pool2d(at::elu(conv->forward(x)), {3, 3}, {3, 3});
    return bn_->forward(x).flatten(1);
  }

 private:
  std::vector<nn::Conv2d> convs_;
  SyncBatchNorm2d bn_{nullptr};
};

// ------------------------------------------------------------------ ResNet

void kaiming_fan_out(const at::Tensor& weight, at::Generator& gen) {
  at::NoGradGuard no_grad;
  const int64_t fan_out = weight.size(0) * weight.size(2) * weight.size(3);
  weight.normal_(0.0, std::sqrt(2.0 / static_cast<double>(fan_out)), gen);
}

nn::Conv2d conv_no_bias(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad,
                        at::Generator& gen) {
  auto c = nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(false));
  kaiming_fan_out(c->weight, gen);
  return c;
}

class BasicBlockImpl : public nn::Module {
 public:
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride, at::Generator& gen) {
    conv1_ = register_module("conv1", conv_no_bias(in, out, 3, stride, 1, gen));
    bn1_ = register_module("bn1", SyncBatchNorm2d(out));
    conv2_ = register_module("conv2", conv_no_bias(out, out, 3, 1, 1, gen));
    bn2_ = register_module("bn2", SyncBatchNorm2d(out));
    if (stride != 1 || in != out) {
      nn::Sequential ds;
      ds->push_back(conv_no_bias(in, out, 1, stride, 0, gen));
      ds->push_back(SyncBatchNorm2d(out));
      downsample_ = register_module("downsample", ds);
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = at::relu(bn1_->forward(conv1_->forward(x)));
    y = bn2_->forward(conv2_->forward(y));
    return at::relu(y + (downsample_ ? downsample_->forward(x) : x));
  }

 private:
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  SyncBatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  nn::Sequential downsample_{nullptr};
};

class ResNetEncoderImpl : public nn::Module {
 public:
  ResNetEncoderImpl(const std::vector<int>& blocks, int64_t in, at::Generator& gen) {
    conv1_ = register_module("conv1", conv_no_bias(in, 64, 7, 2, 3, gen));
    bn1_ = register_module("bn1", SyncBatchNorm2d(64));
    int64_t ch = 64;
    for (size_t l = 0; l < 4; ++l) {
      const int64_t out = 64 << l;
      nn::Sequential layer;
      for (int b = 0; b < blocks[l]; ++b) {
        layer->push_back(std::make_shared<BasicBlockImpl>(ch, out, (b == 0 && l > 0) ? 2 : 1, gen));
        ch = out;
      }
      layers_.push_back(register_module("layer" + std::to_string(l + 1), layer));
    }
  }
  at::Tensor forward(const at::Tensor& inputs) {
    at::Tensor x = at::relu(bn1_->forward(conv1_->forward(inputs)));
    x = at::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
    for (auto& layer : layers_) x = layer->forward(x);
    return at::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  }

 private:
  nn::Conv2d conv1_{nullptr};
  SyncBatchNorm2d bn1_{nullptr};
  std::vector<nn::Sequential> layers_;
};

class ResNetTrunk : public TrunkNet {
 public:
  ResNetTrunk(int64_t depth, int64_t in, int64_t d, at::Generator& gen) {
    TORCH_CHECK(depth == 18 || depth == 34, "ResNet depth must be 18 or 34, got ", depth);
    const std::vector<int> blocks =
        depth == 18 ? std::vector<int>{2, 2, 2, 2} : std::vector<int>{3, 4, 6, 3};
    encoder_ = register_module("encoder", std::make_shared<ResNetEncoderImpl>(blocks, in, gen));
    proj_ = register_module("proj", nn::Linear(512, d));
    init_default(proj_->weight, proj_->bias, gen);
  }
  at::Tensor forward_tensor(const at::Tensor& inputs) override {
    return at::elu(proj_->forward(encoder_->forward(inputs)));
  }
  nn::Module& encoder() { return *encoder_; }

 private:
  std::shared_ptr<ResNetEncoderImpl> encoder_;
  nn::Linear proj_{nullptr};
};

// ------------------------------------------------------------------ MPNN

class Mpnn : public TrunkNet {
 public:
  Mpnn(int64_t node, int64_t edge, int64_t w, int64_t d, at::Generator& gen) : w_(w) {
    lin0_ = register_module("lin0", nn::Linear(node, w));
    init_default(lin0_->weight, lin0_->bias, gen);
    auto e1 = nn::Linear(edge, 128);
    auto e2 = nn::Linear(128, w * w);
    init_default(e1->weight, e1->bias, gen);
    init_default(e2->weight, e2->bias, gen);
    edge_net_ = nn::Sequential(e1, nn::ReLU(), e2);
    register_module("edge_net", edge_net_);
    root_ = register_module("root", nn::Linear(nn::LinearOptions(w, w).bias(false)));
    init_default(root_->weight, at::Tensor(), gen);
    conv_bias_ = register_parameter("conv_bias", at::zeros({w}));
    gru_ = register_module("gru", nn::GRUCell(w, w));
    lstm_ = register_module("set2set", nn::LSTMCell(2 * w, w));
    at::NoGradGuard no_grad;
    const double bound = 1.0 / std::sqrt(static_cast<double>(w));
    for (auto& p : gru_->parameters()) p.uniform_(-bound, bound, gen);
    for (auto& p : lstm_->parameters()) p.uniform_(-bound, bound, gen);
    lin1_ = register_module("lin1", nn::Linear(2 * w, d));
    init_default(lin1_->weight, lin1_->bias, gen);
  }
  bool takes_graphs() const override { return true; }

  at::Tensor forward_graph(const GraphBatch& g) override {
    const int64_t n = g.node_features.size(0), e = g.edge_index.size(1), b = g.num_graphs;
    TORCH_CHECK(g.graph_index.dim() == 1 && g.graph_index.size(0) == n,
                "graph batch: graph_index must have one entry per node (", n, "), got ",
                g.graph_index.sizes());
    TORCH_CHECK(g.edge_features.size(0) == e, "graph batch: ", e, " edges but ",
                g.edge_features.size(0), " edge feature rows");
    at::Tensor x = at::relu(lin0_->forward(g.node_features));
    at::Tensor hidden = x;
    const at::Tensor src = g.edge_index[0], dst = g.edge_index[1];
    // The edge network is shared by the three rounds: one weight matrix per edge.
    const at::Tensor weights = edge_net_->forward(g.edge_features).view({e, w_, w_});
    const at::Tensor degree = at::zeros({n}, x.options())
                                  .index_add_(0, dst, at::ones({e}, x.options()))
                                  .clamp_min(1.0)
                                  .unsqueeze(1);
    for (int round = 0; round < 3; ++round) {
      const at::Tensor msg = at::bmm(x.index_select(0, src).unsqueeze(1), weights).squeeze(1);
      const at::Tensor agg = at::zeros({n, w_}, x.options()).index_add(0, dst, msg) / degree;
      const at::Tensor m = at::relu(agg + root_->forward(x) + conv_bias_);
      hidden = gru_->forward(m, hidden);
      x = hidden;
    }
    // Set2Set, 3 processing steps.
    const at::Tensor batch = g.graph_index;
    at::Tensor q_star = at::zeros({b, 2 * w_}, x.options());
    at::Tensor h = at::zeros({b, w_}, x.options()), c = at::zeros({b, w_}, x.options());
    for (int step = 0; step < 3; ++step) {
      std::tie(h, c) = lstm_->forward(q_star, std::make_tuple(h, c));
      const at::Tensor score = (x * h.index_select(0, batch)).sum(1);
      const at::Tensor top = at::zeros({b}, x.options())
                                 .scatter_reduce(0, batch, score.detach(), "amax", false);
      const at::Tensor ex = at::exp(score - top.index_select(0, batch));
      const at::Tensor denom = at::zeros({b}, x.options()).index_add(0, batch, ex);
      const at::Tensor a = ex / denom.index_select(0, batch);
      const at::Tensor r = at::zeros({b, w_}, x.options()).index_add(0, batch, a.unsqueeze(1) * x);
      q_star = at::cat({h, r}, 1);
    }
    return at::relu(lin1_->forward(q_star));
  }

 private:
  int64_t w_;
  nn::Linear lin0_{nullptr}, root_{nullptr}, lin1_{nullptr};
  nn::Sequential edge_net_{nullptr};
  at::Tensor conv_bias_;
  nn::GRUCell gru_{nullptr};
  nn::LSTMCell lstm_{nullptr};
};

std::string shape_text(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace

std::shared_ptr<TrunkNet> sequential_trunk(nn::Sequential seq) {
  return std::make_shared<SequentialTrunk>(std::move(seq));
}

std::shared_ptr<TrunkNet> cifar_cnn(int64_t in_channels, int64_t channels, int64_t height,
                                    int64_t width, at::Generator& gen) {
  return std::make_shared<CifarCnn>(in_channels, channels, height, width, gen);
}

std::shared_ptr<TrunkNet> resnet(int64_t depth, int64_t in_channels, int64_t d,
                                 at::Generator& gen) {
  return std::make_shared<ResNetTrunk>(depth, in_channels, d, gen);
}

std::shared_ptr<TrunkNet> mpnn(int64_t node_features, int64_t edge_features, int64_t width,
                               int64_t d, at::Generator& gen) {
  return std::make_shared<Mpnn>(node_features, edge_features, width, d, gen);
}

namespace {

bool is_lower_hex(const std::string& s) {
  return s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

/// The bytes of a pretrained-weights file, verified wherever a checksum exists, before LibTorch's
/// unpickler (not hardened against damaged input) sees them: bayesagg's own checksum trailer
/// (verified and stripped); torch.hub's naming NAME-HASH.EXT, HASH being the first 8 to 64 hex
/// digits of the file's SHA-256 (what torch.hub's check_hash verifies); a `PATH.sha256` file
/// beside it (`sha256sum` output). A file with none of them is read as it is.
std::string verified_pretrained_bytes(const std::string& path) {
  std::string bytes = read_file(path);
  const ChecksumCheck own = verify_checksum(bytes);
  if (own.ok) {
    bytes.resize(own.payload_size);
    return bytes;
  }
  std::string expected, source;
  const std::string stem = std::filesystem::path(path).stem().string();
  const size_t dash = stem.rfind('-');
  const std::string named = dash == std::string::npos ? "" : stem.substr(dash + 1);
  std::error_code ec;
  if (named.size() >= 8 && named.size() <= 64 && is_lower_hex(named)) {
    expected = named;
    source = "as its name says (torch.hub's NAME-HASH naming)";
  } else if (std::filesystem::is_regular_file(path + ".sha256", ec)) {
    std::istringstream in(read_file(path + ".sha256"));
    in >> expected;
    TORCH_CHECK(expected.size() == 64 && is_lower_hex(expected), "pretrained weights: '", path,
                ".sha256' does not start with a SHA-256 (64 hexadecimal digits)");
    source = "as '" + path + ".sha256' says";
  }
  if (expected.empty()) return bytes;
  const std::string actual = sha256_hex(bytes);
  TORCH_CHECK(actual.compare(0, expected.size(), expected) == 0, "pretrained weights: '", path,
              "': its SHA-256 begins ", actual.substr(0, expected.size()), ", not ", expected,
              " ", source, "; the file is damaged or not the one named, so it is not loaded");
  return bytes;
}

}  // namespace

void load_resnet_encoder(TrunkNet& trunk, const std::string& path) {
  auto* net = dynamic_cast<ResNetTrunk*>(&trunk);
  TORCH_CHECK(net != nullptr, "pretrained weights (", path,
              ") can only be loaded into the resnet18 and resnet34 trunks");
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_regular_file(path, ec), "pretrained weights: '", path,
              "' does not exist or is not a file");

  // Two formats: Python's torch.save of a state_dict (a pickled dict of tensors in the zip
  // format), or a LibTorch archive (torch::serialize::OutputArchive::save_to) with the same names.
  std::map<std::string, at::Tensor> dict;
  bool is_dict = false;
  const std::string bytes = verified_pretrained_bytes(path);
  {
    try {
      const c10::IValue v = torch::jit::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
      if (v.isGenericDict()) {
        is_dict = true;
        for (const auto& item : v.toGenericDict()) {
          if (item.key().isString() && item.value().isTensor()) {
            dict[item.key().toStringRef()] = item.value().toTensor();
          }
        }
      }
    } catch (const c10::Error&) {
    } catch (const std::exception&) {
    }
  }
  torch::serialize::InputArchive archive;
  if (!is_dict) {
    try {
      archive.load_from(bytes.data(), bytes.size());
    } catch (const c10::Error& e) {
      TORCH_CHECK(false, "pretrained weights: '", path,
                  "' is neither a torch.save'd state_dict (a dict of tensors) nor a LibTorch "
                  "archive (", e.what_without_backtrace(), ")");
    }
  }
  const auto find = [&](const std::string& key, at::Tensor& out) {
    if (is_dict) {
      auto it = dict.find(key);
      if (it == dict.end()) return false;
      out = it->second;
      return true;
    }
    return archive.try_read(key, out);
  };

  at::NoGradGuard no_grad;
  std::vector<std::string> missing;
  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (const auto& item : net->encoder().named_parameters()) targets.emplace_back(item.key(), item.value());
  for (const auto& item : net->encoder().named_buffers()) targets.emplace_back(item.key(), item.value());
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  for (const auto& [key, param] : targets) {
    at::Tensor t;
    if (!find(key, t)) {
      // Older torchvision files lack num_batches_tracked; it does not affect the network.
      if (key.size() < 19 || key.substr(key.size() - 19) != "num_batches_tracked") {
        missing.push_back(key);
      }
      continue;
    }
    TORCH_CHECK(t.sizes() == param.sizes(), "pretrained weights '", path, "': entry '", key,
                "' has shape ", shape_text(t), " but the ResNet expects ", shape_text(param),
                " (a ResNet of another depth, or another network?)");
    copies.emplace_back(param, t);
  }
  // Entries the encoder lacks (other than the classifier) mean another network, e.g. a deeper
  // ResNet whose first layers would otherwise load silently.
  std::vector<std::string> all_keys;
  if (is_dict) {
    for (const auto& item : dict) all_keys.push_back(item.first);
  } else {
    all_keys = archive.keys();
  }
  std::vector<std::string> extra;
  for (const auto& key : all_keys) {
    if (key.rfind("fc.", 0) == 0) continue;
    bool known = false;
    for (const auto& target : targets) known = known || target.first == key;
    if (!known) extra.push_back(key);
  }
  if (!extra.empty()) {
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 5; ++i) list += (i ? ", " : "") + extra[i];
    TORCH_CHECK(false, "pretrained weights '", path, "' have ", extra.size(),
                " entries this ResNet encoder lacks, e.g. ", list,
                " (weights of a ResNet of another depth, or of another network?)");
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
    TORCH_CHECK(false, "pretrained weights '", path, "' lack ", missing.size(), " of the ",
                targets.size(), " encoder entries, e.g. ", list,
                " (expected torchvision's names: conv1.weight, bn1.running_mean, "
                "layer1.0.conv1.weight, ...; fc.* is ignored)");
  }
  for (auto& [param, t] : copies) param.copy_(t.to(param.dtype()));
}

}  // namespace nets
}  // namespace bayesagg
