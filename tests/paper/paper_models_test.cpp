// The paper networks (spec: benchmarks.md, "Paper benchmarks"): output shapes, parameter counts
// against hand counts, seeded determinism, pretrained weights, and one BayesAgg-MTL step on each.
#include "bayesagg/core/checksum.h"
#include "bayesagg/core/files.h"
#include "bayesagg/core/losses.h"
#include "bayesagg/data/paper/qm9.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/serialize/archive.h>

#include "test_util.h"

#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>

using namespace bayesagg;
using bayesagg::testing::TempDir;
using bayesagg::testing::contains;
using bayesagg::testing::error_of;

namespace {

std::vector<TaskGroup> utkface_groups() {
  return {TaskGroup(GroupType::regression, 1, "age"), TaskGroup(GroupType::multiclass, 2, "gender"),
          TaskGroup(GroupType::multiclass, 5, "race")};
}

/// Two molecules' complete directed graphs (3 and 4 atoms), features drawn from `seed`.
GraphBatch two_graphs(uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::vector<int64_t> sizes = {3, 4};
  std::vector<int64_t> src, dst, graph;
  int64_t offset = 0;
  for (size_t g = 0; g < sizes.size(); ++g) {
    for (int64_t i = 0; i < sizes[g]; ++i) {
      graph.push_back(static_cast<int64_t>(g));
      for (int64_t j = 0; j < sizes[g]; ++j) {
        if (i == j) continue;
        src.push_back(offset + i);
        dst.push_back(offset + j);
      }
    }
    offset += sizes[g];
  }
  GraphBatch b;
  const int64_t e = static_cast<int64_t>(src.size());
  b.node_features = at::rand({offset, 11}, gen);
  b.edge_features = at::rand({e, 5}, gen);
  b.edge_index = at::stack({at::tensor(src), at::tensor(dst)});
  b.graph_index = at::tensor(graph);
  b.num_nodes = at::tensor(sizes);
  b.positions = at::rand({offset, 3}, gen);
  b.num_graphs = 2;
  b.labels = {at::randn({2, 11}, gen)};
  return b;
}

/// One BayesAgg-MTL step (after its LS warm-up epoch, so the Bayesian aggregation runs) on `h`
/// and the heads of `m`: returns the trunk's gradient norm, checking that every parameter got a
/// finite gradient.
double bayesagg_step(MultiTaskModel& m, const std::function<at::Tensor()>& forward,
                     const Labels& labels) {
  MethodConfig mc;
  mc.ls_epochs = 1;
  mc.bayesagg.seed(3).mc_samples(64);
  auto method = make_method("bayesagg", m.groups(), m.representation_dim(), mc);
  const auto run = [&](int64_t epoch) {
    for (auto& p : m.trunk_parameters()) p.mutable_grad() = at::Tensor();
    for (auto& p : m.head_parameters()) p.mutable_grad() = at::Tensor();
    method->on_epoch_start(epoch);
    Step step;
    step.representation = forward();
    const auto outs = m.head_outputs(step.representation);
    std::vector<at::Tensor> parts;
    for (size_t g = 0; g < m.groups().size(); ++g) {
      parts.push_back(task_losses(m.groups()[g], outs[g], labels[g]));
    }
    step.losses = at::cat(parts);
    step.heads = m.heads();
    step.labels = labels;
    step.shared_parameters = m.trunk_parameters();
    step.epoch = epoch;
    method->backward(step);
    method->on_epoch_end(epoch);
  };
  run(0);  // LS warm-up: collects the features for the full-data posterior
  run(1);  // BayesAgg-MTL
  EXPECT_TRUE(method->diagnostics().count("dL_dh_norm")) << "the Bayesian aggregation did not run";
  double sq = 0.0;
  for (const auto& p : m.trunk_parameters()) {
    EXPECT_TRUE(p.grad().defined());
    if (!p.grad().defined()) continue;
    EXPECT_TRUE(p.grad().isfinite().all().item<bool>());
    sq += p.grad().pow(2).sum().item<double>();
  }
  for (const auto& p : m.head_parameters()) {
    EXPECT_TRUE(p.grad().defined() && p.grad().isfinite().all().item<bool>());
  }
  return std::sqrt(sq);
}

int64_t count(const std::vector<at::Tensor>& ps) {
  int64_t n = 0;
  for (const auto& p : ps) n += p.numel();
  return n;
}

}  // namespace

TEST(PaperModels, CifarCnnShapesAndHandCount) {
  MultiTaskModel m({3, 32, 32}, {TaskGroup(GroupType::binary, 20, "coarse")},
                   ModelOptions().trunk("cifar-cnn").representation_dim(160).seed(1));
  // conv 3->160: 160*27+160; two conv 160->160: 160*1440+160 each; BatchNorm 2*160.
  EXPECT_EQ(count(m.trunk_parameters()), 4480 + 2 * 230560 + 320);
  EXPECT_EQ(count(m.head_parameters()), 20 * 160 + 20);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  const at::Tensor x = at::rand({4, 3, 32, 32}, gen) * 2 - 1;
  const at::Tensor h = m.representation(x);
  EXPECT_EQ(h.sizes(), (at::IntArrayRef{4, 160}));
  // Training mode: BatchNorm of a 1x1 map over the batch -> every channel has batch mean 0.
  EXPECT_LT(h.mean(0).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(m.head_outputs(h)[0].sizes(), (at::IntArrayRef{4, 20}));
  EXPECT_THROW(MultiTaskModel({3, 64, 64}, {TaskGroup(GroupType::binary, 20)},
                              ModelOptions().trunk("cifar-cnn")),
               c10::Error);
}

TEST(PaperModels, ResNet18And34MatchTorchvisionsParameterCounts) {
  // torchvision's resnet18 / resnet34 have 11 689 512 / 21 797 672 parameters, of which the
  // fc layer (512*1000 + 1000) is not part of the encoder.
  MultiTaskModel r18({3, 64, 64}, utkface_groups(),
                     ModelOptions().trunk("resnet18").representation_dim(256));
  EXPECT_EQ(count(r18.trunk_parameters()), 11689512 - 513000 + 512 * 256 + 256);
  EXPECT_EQ(count(r18.head_parameters()), 257 + 514 + 1285);
  MultiTaskModel r34({3, 64, 64}, {TaskGroup(GroupType::binary, 14, "findings")},
                     ModelOptions().trunk("resnet34").representation_dim(256));
  EXPECT_EQ(count(r34.trunk_parameters()), 21797672 - 513000 + 512 * 256 + 256);
  const at::Tensor h = r34.representation(at::rand({2, 3, 64, 64}));
  EXPECT_EQ(h.sizes(), (at::IntArrayRef{2, 256}));
  EXPECT_GT(h.min().item<double>(), -1.0);  // ELU
  EXPECT_EQ(r34.head_outputs(h)[0].sizes(), (at::IntArrayRef{2, 14}));
}

TEST(PaperModels, MpnnShapesAndHandCount) {
  MultiTaskModel m({11, 5}, {TaskGroup(GroupType::regression, 11, "targets")},
                   ModelOptions().trunk("mpnn").seed(2));
  EXPECT_TRUE(m.takes_graphs());
  // lin0 11*64+64; edge net 5*128+128 and 128*4096+4096; root 64*64 + bias 64;
  // GRU cell 2*(192*64) + 2*192; Set2Set LSTM cell 256*128 + 256*64 + 2*256; lin1 128*64+64.
  EXPECT_EQ(count(m.trunk_parameters()),
            768 + 768 + 528384 + 4160 + 24960 + 49664 + 8256);
  EXPECT_EQ(count(m.head_parameters()), 11 * 65);
  const GraphBatch g = two_graphs(7);
  const at::Tensor h = m.representation(g);
  EXPECT_EQ(h.sizes(), (at::IntArrayRef{2, 64}));
  EXPECT_GE(h.min().item<double>(), 0.0);  // ReLU
  EXPECT_EQ(m.head_outputs(h)[0].sizes(), (at::IntArrayRef{2, 11}));
  EXPECT_TRUE(contains(error_of([&] { m.representation(at::rand({2, 11})); }), "graph"));
}

TEST(PaperModels, MpnnIsInvariantToTheOrderOfGraphsInABatch) {
  MultiTaskModel m({11, 5}, {TaskGroup(GroupType::regression, 11)},
                   ModelOptions().trunk("mpnn").seed(2));
  const GraphBatch g = two_graphs(7);
  // The same two molecules, second first.
  GraphBatch r = g;
  const at::Tensor node_order = at::tensor(std::vector<int64_t>{3, 4, 5, 6, 0, 1, 2});
  const at::Tensor new_of_old = at::argsort(node_order);
  r.node_features = g.node_features.index_select(0, node_order);
  r.graph_index = at::tensor(std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1});
  const at::Tensor edge_order = at::cat({at::arange(6, 18), at::arange(0, 6)});
  r.edge_features = g.edge_features.index_select(0, edge_order);
  r.edge_index = new_of_old.index({g.edge_index.index_select(1, edge_order)});
  const at::Tensor a = m.representation(g), b = m.representation(r);
  EXPECT_TRUE(at::allclose(a[0], b[1], 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(a[1], b[0], 1e-5, 1e-6));
}

TEST(PaperModels, SameSeedSameNetworkOtherSeedOther) {
  for (const char* trunk : {"cifar-cnn", "resnet18", "mpnn"}) {
    const bool graph = std::string(trunk) == "mpnn";
    const std::vector<int64_t> shape = graph ? std::vector<int64_t>{11, 5}
                                             : std::vector<int64_t>{3, 32, 32};
    const std::vector<TaskGroup> groups = {TaskGroup(GroupType::regression, 2)};
    MultiTaskModel a(shape, groups, ModelOptions().trunk(trunk).seed(4));
    MultiTaskModel b(shape, groups, ModelOptions().trunk(trunk).seed(4));
    MultiTaskModel c(shape, groups, ModelOptions().trunk(trunk).seed(5));
    const auto pa = a.trunk_parameters(), pb = b.trunk_parameters(), pc = c.trunk_parameters();
    bool all_equal = true, any_differs = false;
    for (size_t i = 0; i < pa.size(); ++i) {
      all_equal = all_equal && at::equal(pa[i], pb[i]);
      any_differs = any_differs || !at::equal(pa[i], pc[i]);
    }
    EXPECT_TRUE(all_equal) << trunk;
    EXPECT_TRUE(any_differs) << trunk;
    const at::Tensor ha = graph ? a.representation(two_graphs(1))
                                : a.representation(at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(1)));
    const at::Tensor hb = graph ? b.representation(two_graphs(1))
                                : b.representation(at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(1)));
    EXPECT_TRUE(at::equal(ha, hb)) << trunk;
  }
}

TEST(PaperModels, BatchNormStatisticsAreSavedAndEvalModeUsesThem) {
  TempDir dir;
  const std::vector<TaskGroup> groups = {TaskGroup(GroupType::binary, 20)};
  MultiTaskModel a({3, 32, 32}, groups, ModelOptions().trunk("cifar-cnn").seed(1));
  const at::Tensor x = at::rand({8, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(2));
  a.representation(x);  // updates the running statistics
  a.train(false);
  const at::Tensor ha = a.representation(x);
  torch::serialize::OutputArchive out;
  a.save(out);
  const std::string path = dir.file("m.pt");
  out.save_to(path);
  MultiTaskModel b({3, 32, 32}, groups, ModelOptions().trunk("cifar-cnn").seed(9));
  torch::serialize::InputArchive in;
  in.load_from(path);
  b.load(in);
  b.train(false);
  EXPECT_TRUE(at::allclose(b.representation(x), ha));
}

TEST(PaperModels, PretrainedResNetFromAPickledStateDictOrALibTorchArchive) {
  TempDir dir;
  const std::vector<TaskGroup> groups = {TaskGroup(GroupType::binary, 14)};
  MultiTaskModel source({3, 32, 32}, groups, ModelOptions().trunk("resnet18").seed(11));
  // A torchvision-like state_dict: the encoder's entries under their torchvision names, plus an
  // fc layer that must be ignored.
  c10::Dict<std::string, at::Tensor> dict;
  torch::serialize::OutputArchive archive;
  std::vector<std::pair<std::string, at::Tensor>> entries;
  // MultiTaskModel saves the trunk's encoder under `trunk.encoder.<torchvision name>`: read
  // those entries back and strip the prefix.
  torch::serialize::OutputArchive full;
  source.save(full);
  const std::string full_path = dir.file("full.pt");
  full.save_to(full_path);
  torch::serialize::InputArchive full_in;
  full_in.load_from(full_path);
  for (const auto& key : full_in.keys()) {
    if (key.rfind("trunk.encoder.", 0) != 0) continue;
    at::Tensor t;
    ASSERT_TRUE(full_in.try_read(key, t) || full_in.try_read(key, t, true));
    entries.emplace_back(key.substr(14), t);
  }
  ASSERT_EQ(entries.size(), 120u);  // 60 parameters, 60 BatchNorm buffers (torchvision: 122 with fc)
  for (const auto& [k, t] : entries) {
    dict.insert(k, t);
    archive.write(k, t, k.find("running") != std::string::npos ||
                            k.find("num_batches") != std::string::npos);
  }
  dict.insert("fc.weight", at::zeros({1000, 512}));
  dict.insert("fc.bias", at::zeros({1000}));
  const std::string pickled = dir.file("resnet18.pt");
  {
    const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
    std::ofstream f(pickled, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  const std::string libtorch = dir.file("resnet18-archive.pt");
  archive.save_to(libtorch);

  const at::Tensor x = at::rand({2, 3, 32, 32}, at::make_generator<at::CPUGeneratorImpl>(3));
  for (const std::string& file : {pickled, libtorch}) {
    MultiTaskModel m({3, 32, 32}, groups,
                     ModelOptions().trunk("resnet18").seed(12).pretrained(file));
    // Same encoder as the source: the 512-d pooled features agree, hence the trunk outputs differ
    // only through the (freshly initialised) projection. Compare the first conv weights directly.
    const auto pm = m.trunk_parameters(), ps = source.trunk_parameters();
    for (size_t i = 0; i + 2 < pm.size(); ++i) {  // all but proj.weight, proj.bias
      ASSERT_TRUE(at::equal(pm[i], ps[i])) << file << " parameter " << i;
    }
  }

  // Errors: a missing entry, a mis-shaped entry, another depth, a missing file, a non-ResNet
  // trunk.
  const auto save_dict = [&](const c10::Dict<std::string, at::Tensor>& d, const std::string& name) {
    const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(d));
    std::ofstream(dir.file(name), std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return dir.file(name);
  };
  c10::Dict<std::string, at::Tensor> missing = dict.copy();
  ASSERT_EQ(missing.erase("layer3.1.bn2.running_var"), 1u);
  const std::string missing_path = save_dict(missing, "missing.pt");
  std::string err = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups, ModelOptions().trunk("resnet18").pretrained(missing_path));
  });
  EXPECT_TRUE(contains(err, "layer3.1.bn2.running_var")) << err;
  EXPECT_TRUE(contains(err, "lack 1 of the 120")) << err;

  c10::Dict<std::string, at::Tensor> misshaped = dict.copy();
  misshaped.insert_or_assign("layer2.0.downsample.0.weight", at::zeros({128, 64, 3, 3}));
  const std::string misshaped_path = save_dict(misshaped, "misshaped.pt");
  err = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups,
                   ModelOptions().trunk("resnet18").pretrained(misshaped_path));
  });
  EXPECT_TRUE(contains(err, "'layer2.0.downsample.0.weight' has shape [128, 64, 3, 3]")) << err;
  EXPECT_TRUE(contains(err, "[128, 64, 1, 1]")) << err;

  // A ResNet-18 file lacks ResNet-34's deeper blocks.
  err = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups, ModelOptions().trunk("resnet34").pretrained(pickled));
  });
  EXPECT_TRUE(contains(err, "layer1.2.")) << err;
  // Extra entries beyond fc.* (e.g. a ResNet-34 file given to resnet18) are refused too.
  c10::Dict<std::string, at::Tensor> deeper = dict.copy();
  deeper.insert("layer1.2.conv1.weight", at::zeros({64, 64, 3, 3}));
  const std::string deeper_path = save_dict(deeper, "deeper.pt");
  err = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups, ModelOptions().trunk("resnet18").pretrained(deeper_path));
  });
  EXPECT_TRUE(contains(err, "entries this ResNet encoder lacks, e.g. layer1.2.conv1.weight")) << err;
  err = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups,
                   ModelOptions().trunk("resnet18").pretrained(dir.file("nope.pt")));
  });
  EXPECT_TRUE(contains(err, "nope.pt")) << err;
  err = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups, ModelOptions().trunk("cifar-cnn").pretrained(pickled));
  });
  EXPECT_TRUE(contains(err, "only for the resnet18 and resnet34")) << err;
}

TEST(PaperModels, PretrainedWeightsAreVerifiedAgainstTheHashInTheirNameOrBesideThem) {
  TempDir dir;
  const std::vector<TaskGroup> groups = {TaskGroup(GroupType::binary, 2)};
  MultiTaskModel source({3, 32, 32}, groups, ModelOptions().trunk("resnet18").seed(11));
  torch::serialize::OutputArchive full;
  source.save(full);
  std::ostringstream os;
  full.save_to(os);
  const std::string bytes = os.str();
  const std::string hash = sha256_hex(bytes);
  // A wrong hash in a torch.hub-style name: refused before parsing.
  const std::string wrong = dir.file("resnet18-0123abcd.pt");
  write_file_atomic(wrong, bytes);
  const std::string msg = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups, ModelOptions().trunk("resnet18").pretrained(wrong));
  });
  EXPECT_TRUE(contains(msg, "its SHA-256 begins " + hash.substr(0, 8) + ", not 0123abcd")) << msg;
  // The right one passes the check (the archive then lacks torchvision's names: that error).
  const std::string right = dir.file("resnet18-" + hash.substr(0, 10) + ".pt");
  write_file_atomic(right, bytes);
  const std::string msg2 = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups, ModelOptions().trunk("resnet18").pretrained(right));
  });
  EXPECT_FALSE(contains(msg2, "SHA-256")) << msg2;
  EXPECT_TRUE(contains(msg2, "conv1.weight")) << msg2;
  // A sha256sum file beside it that does not match.
  const std::string plain = dir.file("weights.pt");
  write_file_atomic(plain, bytes);
  write_file_atomic(plain + ".sha256", std::string(64, 'f') + "  weights.pt\n");
  const std::string msg3 = error_of([&] {
    MultiTaskModel({3, 32, 32}, groups, ModelOptions().trunk("resnet18").pretrained(plain));
  });
  EXPECT_TRUE(contains(msg3, "weights.pt.sha256' says")) << msg3;
}

TEST(PaperModels, OneBayesAggStepOnTheCifarCnn) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
  MultiTaskModel m({3, 32, 32}, {TaskGroup(GroupType::binary, 20, "coarse")},
                   ModelOptions().trunk("cifar-cnn").representation_dim(160).seed(1));
  const at::Tensor x = at::rand({6, 3, 32, 32}, gen) * 2 - 1;
  const Labels y = {at::one_hot(at::tensor(std::vector<int64_t>{0, 3, 3, 7, 19, 1}), 20)
                        .to(at::kFloat)};
  EXPECT_GT(bayesagg_step(m, [&] { return m.representation(x); }, y), 0.0);
}

TEST(PaperModels, OneBayesAggStepOnTheResNet18) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(22);
  const Labels utk = {at::randn({4, 1}, gen), at::tensor(std::vector<int64_t>{0, 1, 1, 0}),
                      at::tensor(std::vector<int64_t>{0, 4, 2, 1})};
  MultiTaskModel m({3, 32, 32}, utkface_groups(),
                   ModelOptions().trunk("resnet18").representation_dim(32).seed(1));
  const at::Tensor x = at::rand({4, 3, 32, 32}, gen);
  EXPECT_GT(bayesagg_step(m, [&] { return m.representation(x); }, utk), 0.0);
}

TEST(PaperModels, OneBayesAggStepOnTheResNet34) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  MultiTaskModel m({3, 32, 32}, {TaskGroup(GroupType::binary, 14, "findings")},
                   ModelOptions().trunk("resnet34").representation_dim(32).seed(1));
  const at::Tensor x = at::rand({4, 3, 32, 32}, gen);
  const Labels y = {at::randint(0, 2, {4, 14}, gen).to(at::kFloat)};
  EXPECT_GT(bayesagg_step(m, [&] { return m.representation(x); }, y), 0.0);
}

TEST(PaperModels, OneBayesAggStepOnTheMpnn) {
  MultiTaskModel m({11, 5}, {TaskGroup(GroupType::regression, 11, "targets")},
                   ModelOptions().trunk("mpnn").seed(1));
  const GraphBatch g = two_graphs(3);
  EXPECT_GT(bayesagg_step(m, [&] { return m.representation(g); }, g.labels), 0.0);
}
