// Checkpoints: save then load gives identical parameters, optimiser state, method state and
// generator, so the next step is identical too; files are replaced atomically.
#include "bayesagg/core/files.h"
#include "bayesagg/core/losses.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"
#include "bayesagg/train/checkpoint.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>
#include <torch/optim/adam.h>
#include <torch/serialize/archive.h>

#include <filesystem>

namespace bayesagg {
namespace {

const std::vector<TaskGroup> kGroups = {TaskGroup(GroupType::regression, 3, "reg"),
                                        TaskGroup(GroupType::multiclass, 4, "cls")};

/// A model, its two-group Adam, and BayesAgg-MTL (1 LS warm-up epoch, few MC samples).
struct Rig {
  MultiTaskModel model;
  torch::optim::Adam adam;
  std::unique_ptr<Method> method;
  at::Generator gen;

  static std::vector<torch::optim::OptimizerParamGroup> groups(const MultiTaskModel& m) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(m.trunk_parameters(), std::make_unique<torch::optim::AdamOptions>(1e-2));
    g.emplace_back(m.head_parameters(), std::make_unique<torch::optim::AdamOptions>(1e-2));
    return g;
  }
  explicit Rig(uint64_t seed)
      : model({8}, kGroups, ModelOptions().representation_dim(6).hidden_dim(12).seed(seed)),
        adam(groups(model), torch::optim::AdamOptions(1e-2)),
        method(make_method("bayesagg", kGroups, 6, [&] {
          MethodConfig c;
          c.bayesagg.mc_samples(64).seed(seed);
          c.ls_epochs = 1;
          return c;
        }())),
        gen(at::make_generator<at::CPUGeneratorImpl>(seed)) {
    method->reserve(32);
  }

  /// One training step on a batch drawn (as the trainer does) from the rig's generator.
  void step(const at::Tensor& x, const Labels& y, int64_t epoch, int64_t s) {
    const at::Tensor idx = at::randperm(x.size(0), gen, at::kLong).narrow(0, 0, 16);
    adam.zero_grad();
    const at::Tensor h = model.representation(x.index_select(0, idx));
    const auto outs = model.head_outputs(h);
    Step st;
    st.losses = at::cat({task_losses(kGroups[0], outs[0], y[0].index_select(0, idx)),
                         task_losses(kGroups[1], outs[1], y[1].index_select(0, idx))});
    st.representation = h;
    st.heads = model.heads();
    st.labels = {y[0].index_select(0, idx), y[1].index_select(0, idx)};
    st.shared_parameters = model.trunk_parameters();
    st.epoch = epoch;
    st.step = s;
    method->backward(st);
    adam.step();
  }
};

std::vector<at::Tensor> all_params(const MultiTaskModel& m) {
  auto p = m.trunk_parameters();
  for (const auto& t : m.head_parameters()) p.push_back(t);
  return p;
}

TEST(Checkpoint, RoundTripRestoresParametersOptimiserMethodAndGenerator) {
  const auto dir = std::filesystem::temp_directory_path() / "bayesagg_checkpoint_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "checkpoint.pt").string();

  at::Generator data_gen = at::make_generator<at::CPUGeneratorImpl>(123);
  const at::Tensor x = at::randn({32, 8}, data_gen);
  const Labels y = {at::randn({32, 3}, data_gen), at::randint(0, 4, {32}, data_gen, at::kLong)};

  Rig a(1);
  a.method->on_epoch_start(0);
  a.step(x, y, 0, 0);
  a.step(x, y, 0, 1);
  a.method->on_epoch_end(0);
  a.method->on_epoch_start(1);
  a.step(x, y, 1, 0);  // BayesAgg-MTL: full-data posteriors from epoch 0's features

  CheckpointState st;
  st.epoch = 1;
  st.schedule = {{1e-2, 1e-2}, {2, 3}, 0.1};
  st.config_json = "{\"seed\": 1}";
  st.history_json = "{}";
  save_checkpoint(path, a.model, a.adam, *a.method, a.gen, st);
  // The atomic write leaves no temporary file behind.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);

  Rig b(99);  // different initialisation, generator and MC seed
  const CheckpointState back = load_checkpoint(path, b.model, b.adam, *b.method, b.gen);
  EXPECT_EQ(back.epoch, 1);
  EXPECT_EQ(back.schedule.milestones, st.schedule.milestones);
  EXPECT_EQ(back.config_json, st.config_json);

  const auto pa = all_params(a.model), pb = all_params(b.model);
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(at::equal(pa[i], pb[i])) << "parameter " << i;

  // Adam: moments and step counts of every parameter.
  for (size_t g = 0; g < 2; ++g) {
    const auto& ga = a.adam.param_groups()[g].params();
    const auto& gb = b.adam.param_groups()[g].params();
    for (size_t i = 0; i < ga.size(); ++i) {
      const auto& sa = static_cast<const torch::optim::AdamParamState&>(
          *a.adam.state().at(c10::guts::to_string(ga[i].unsafeGetTensorImpl())));
      const auto& sb = static_cast<const torch::optim::AdamParamState&>(
          *b.adam.state().at(c10::guts::to_string(gb[i].unsafeGetTensorImpl())));
      EXPECT_EQ(sa.step(), sb.step());
      EXPECT_TRUE(at::equal(sa.exp_avg(), sb.exp_avg()));
      EXPECT_TRUE(at::equal(sa.exp_avg_sq(), sb.exp_avg_sq()));
    }
  }

  // Method state: the same counters and full-data posteriors.
  const auto& ma = dynamic_cast<const BayesAggMethod&>(*a.method).aggregator();
  const auto& mb = dynamic_cast<const BayesAggMethod&>(*b.method).aggregator();
  EXPECT_EQ(ma.stats().steps, mb.stats().steps);
  ASSERT_EQ(ma.current_full_data_posteriors().size(), mb.current_full_data_posteriors().size());
  for (size_t g = 0; g < ma.current_full_data_posteriors().size(); ++g) {
    EXPECT_TRUE(at::equal(ma.current_full_data_posteriors()[g].mean,
                          mb.current_full_data_posteriors()[g].mean));
  }

  // And so the next steps (shuffling, Monte-Carlo draws, Adam update) are identical.
  b.method->on_epoch_start(1);
  a.step(x, y, 1, 1);
  b.step(x, y, 1, 1);
  a.method->on_epoch_end(1);
  b.method->on_epoch_end(1);
  a.method->on_epoch_start(2);
  b.method->on_epoch_start(2);
  a.step(x, y, 2, 0);
  b.step(x, y, 2, 0);
  const auto qa = all_params(a.model), qb = all_params(b.model);
  for (size_t i = 0; i < qa.size(); ++i) EXPECT_TRUE(at::equal(qa[i], qb[i])) << "parameter " << i;
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, MissingOrForeignFilesGiveClearErrors) {
  Rig a(1);
  try {
    load_checkpoint("/nonexistent/checkpoint.pt", a.model, a.adam, *a.method, a.gen);
    FAIL();
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("does not exist"), std::string::npos) << e.msg();
  }
  // A model of another width cannot load it.
  const auto dir = std::filesystem::temp_directory_path() / "bayesagg_checkpoint_test2";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "model.pt").string();
  save_model(path, a.model);
  MultiTaskModel other({8}, kGroups, ModelOptions().representation_dim(7).hidden_dim(12));
  EXPECT_THROW(load_model(path, other), c10::Error);
  MultiTaskModel same({8}, kGroups, ModelOptions().representation_dim(6).hidden_dim(12).seed(5));
  load_model(path, same);
  EXPECT_TRUE(at::equal(same.trunk_parameters()[0], a.model.trunk_parameters()[0]));
  std::filesystem::remove_all(dir);
}

std::string load_error(const std::string& path, Rig& r) {
  try {
    load_checkpoint(path, r.model, r.adam, *r.method, r.gen);
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

/// Flips `count` bytes from the middle of the file (inside the tensor data of a checkpoint).
void corrupt_middle(const std::string& path, size_t count) {
  std::string bytes = read_file(path);
  ASSERT_GT(bytes.size(), 2 * count);
  for (size_t i = 0; i < count; ++i) bytes[bytes.size() / 2 + i] ^= static_cast<char>(0x5a);
  write_file_atomic(path, bytes);
}

CheckpointState state_at(int64_t epoch) {
  CheckpointState st;
  st.epoch = epoch;
  st.schedule = {{1e-2, 1e-2}, {2, 3}, 0.1};
  st.config_json = "{}";
  st.history_json = "{}";
  return st;
}

TEST(Checkpoint, CorruptedTensorBytesAreRefusedByTheChecksumBeforeParsing) {
  const auto dir = std::filesystem::temp_directory_path() / "bayesagg_checkpoint_corrupt";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "checkpoint.pt").string();
  Rig a(1);
  save_checkpoint(path, a.model, a.adam, *a.method, a.gen, state_at(1));
  corrupt_middle(path, 256);
  Rig b(2);
  const auto before = all_params(b.model)[0].clone();
  const std::string msg = load_error(path, b);
  EXPECT_NE(msg.find("refusing to load checkpoint '" + path + "'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("do not match its SHA-256 checksum"), std::string::npos) << msg;
  EXPECT_TRUE(at::equal(all_params(b.model)[0], before));  // nothing was loaded

  // Cut off, or written without a checksum (a bare LibTorch archive): refused the same way.
  const std::string sealed = [&] {
    save_checkpoint(path, a.model, a.adam, *a.method, a.gen, state_at(1));
    return read_file(path);
  }();
  write_file_atomic(path, sealed.substr(0, sealed.size() / 2));
  EXPECT_NE(load_error(path, b).find("no bayesagg checksum trailer"), std::string::npos);
  torch::serialize::OutputArchive bare;
  bare.write("format_version", at::full({}, int64_t(1), at::kLong));
  std::filesystem::remove(path);
  bare.save_to(path);
  EXPECT_NE(load_error(path, b).find("no bayesagg checksum trailer"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, KeepsThePreviousCheckpointAndSaysHowToResumeFromIt) {
  const auto dir = std::filesystem::temp_directory_path() / "bayesagg_checkpoint_prev";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "checkpoint.pt").string();
  const std::string prev = (dir / "checkpoint.prev.pt").string();
  Rig a(1);
  save_checkpoint(path, a.model, a.adam, *a.method, a.gen, state_at(1));
  EXPECT_FALSE(std::filesystem::exists(prev));
  const std::string first = read_file(path);
  save_checkpoint(path, a.model, a.adam, *a.method, a.gen, state_at(2));
  EXPECT_EQ(read_file(prev), first);  // the epoch-1 checkpoint, byte for byte

  corrupt_middle(path, 256);
  Rig b(2);
  const std::string msg = load_error(path, b);
  EXPECT_NE(msg.find("The previous checkpoint '" + prev + "' verifies"), std::string::npos) << msg;
  EXPECT_NE(msg.find("`cp " + prev + " " + path + "`"), std::string::npos) << msg;
  EXPECT_EQ(load_checkpoint(prev, b.model, b.adam, *b.method, b.gen).epoch, 1);

  // A damaged checkpoint is not kept as the previous one: the next save keeps the good one.
  save_checkpoint(path, a.model, a.adam, *a.method, a.gen, state_at(3));
  EXPECT_EQ(read_file(prev), first);
  std::filesystem::remove_all(dir);
}

TEST(Checkpoint, BestModelIsVerifiedAndRestoredWhenTheCheckpointIsNewer) {
  const auto dir = std::filesystem::temp_directory_path() / "bayesagg_checkpoint_best";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "best_model.pt").string();
  Rig a(1), b(2);
  EXPECT_EQ(saved_model_epoch(path), -1);
  save_model(path, b.model, 3);
  EXPECT_EQ(saved_model_epoch(path), 3);
  // The checkpoint's epoch 4 is the best but the file holds epoch 3 (killed in between).
  EXPECT_FALSE(restore_best_model(path, a.model, 3, 4));  // best is older: nothing to do
  EXPECT_TRUE(restore_best_model(path, a.model, 4, 4));
  EXPECT_EQ(saved_model_epoch(path), 4);
  EXPECT_FALSE(restore_best_model(path, a.model, 4, 4));  // already right
  MultiTaskModel c({8}, kGroups, ModelOptions().representation_dim(6).hidden_dim(12).seed(7));
  load_model(path, c);
  EXPECT_TRUE(at::equal(c.trunk_parameters()[0], a.model.trunk_parameters()[0]));

  corrupt_middle(path, 64);
  EXPECT_EQ(saved_model_epoch(path), -1);
  try {
    load_model(path, c);
    FAIL() << "a damaged model file must be refused";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.msg()).find("refusing to load model file"), std::string::npos)
        << e.msg();
  }
  EXPECT_TRUE(restore_best_model(path, a.model, 4, 4));  // a damaged best model is rewritten
  EXPECT_EQ(saved_model_epoch(path), 4);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace bayesagg
