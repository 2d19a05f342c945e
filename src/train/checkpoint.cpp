#include "bayesagg/train/checkpoint.h"

#include "bayesagg/core/checksum.h"
#include "bayesagg/core/files.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/models/model.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <filesystem>
#include <sstream>

namespace bayesagg {
namespace {

constexpr int64_t kFormatVersion = 1;

at::Tensor scalar(int64_t v) { return at::full({}, v, at::kLong); }
at::Tensor vec(const std::vector<double>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kDouble));
}
at::Tensor vec(const std::vector<int64_t>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong));
}

at::Tensor read_tensor(torch::serialize::InputArchive& a, const std::string& key,
                       const std::string& path) {
  at::Tensor t;
  TORCH_CHECK(a.try_read(key, t), "checkpoint '", path, "' has no entry '", key, "'");
  return t;
}

std::string read_string(torch::serialize::InputArchive& a, const std::string& key,
                        const std::string& path) {
  c10::IValue v;
  TORCH_CHECK(a.try_read(key, v) && v.isString(), "checkpoint '", path, "' has no entry '", key,
              "'");
  return v.toStringRef();
}

/// `checkpoint.pt` -> `checkpoint.prev.pt`.
std::string previous_path(const std::string& path) {
  const std::filesystem::path p(path);
  return (p.parent_path() / (p.stem().string() + ".prev" + p.extension().string())).string();
}

/// How to continue from `checkpoint.prev.pt` when that one verifies (a sentence starting with a
/// space), else "".
std::string previous_advice(const std::string& path) {
  std::error_code ec;
  const std::string prev = previous_path(path);
  if (!std::filesystem::is_regular_file(prev, ec) || !verify_checksum(read_file(prev)).ok)
    return "";
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return " The previous checkpoint '" + prev + "' verifies: to continue from it, `cp " + prev +
         " " + path + "` and run `bayesagg train --resume " +
         (dir.empty() ? std::string(".") : dir) + "` again (the epochs after it are redone).";
}

/// Reads the whole of `path` and checks its checksum trailer; throws naming the file otherwise.
/// `what` names the file's role ("checkpoint", "model file").
std::string read_verified(const std::string& path, const std::string& what) {
  std::error_code ec;
  TORCH_CHECK(std::filesystem::is_regular_file(path, ec), what, " '", path, "' does not exist.",
              previous_advice(path));
  std::string bytes = read_file(path);
  const ChecksumCheck check = verify_checksum(bytes);
  TORCH_CHECK(check.ok, "refusing to load ", what, " '", path, "': ", check.problem,
              ". Files are verified before LibTorch reads them, because its reader is not safe "
              "on damaged input.",
              previous_advice(path));
  bytes.resize(check.payload_size);
  return bytes;
}

/// The serialised archive with its checksum trailer, written atomically.
void save_archive_atomic(torch::serialize::OutputArchive& archive, const std::string& path) {
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(path, seal_with_checksum(bytes.str()));
}

void load_archive(torch::serialize::InputArchive& archive, const std::string& path,
                  const std::string& what) {
  const std::string payload = read_verified(path, what);
  try {
    archive.load_from(payload.data(), payload.size());
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "cannot read ", what, " '", path, "': ", e.msg());
  }
}

/// Keeps a verified `path` as `checkpoint.prev.pt` before it is replaced: a hard link renamed
/// into place, so that `path` itself exists at every moment (a copy where links are refused).
void keep_previous(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_regular_file(path, ec) || !verify_checksum(read_file(path)).ok) return;
  const std::string prev = previous_path(path);
  const std::string tmp = prev + ".link";
  fs::remove(tmp, ec);
  fs::create_hard_link(path, tmp, ec);
  if (ec) {
    write_file_atomic(prev, read_file(path));
    return;
  }
  fs::rename(tmp, prev, ec);
  TORCH_CHECK(!ec, "cannot keep the previous checkpoint as '", prev, "': ", ec.message());
}

}  // namespace

std::vector<int64_t> LrSchedule::milestones_for(int64_t epochs) {
  TORCH_CHECK(epochs >= 1 && epochs <= kMaxEpochs, "epochs must be in 1..", kMaxEpochs, ", got ",
              epochs);
  // round(0.6 E) and round(0.8 E) in integers (0.6 E and 0.8 E are never halfway for integer E).
  const int64_t m1 = std::max<int64_t>(1, (6 * epochs + 5) / 10);
  const int64_t m2 = std::max<int64_t>(1, (8 * epochs + 5) / 10);
  return {m1, m2};
}

double LrSchedule::factor(int64_t epoch) const {
  double f = 1.0;
  for (int64_t m : milestones) {
    if (m <= epoch) f *= gamma;
  }
  return f;
}

double LrSchedule::lr(size_t group, int64_t epoch) const {
  TORCH_CHECK(group < base_lrs.size(), "LrSchedule: no parameter group ", group);
  return base_lrs[group] * factor(epoch);
}

double plateau_lr(double base_lr, const std::vector<double>& metrics, double factor,
                  int64_t patience, double min_lr) {
  double lr = base_lr;
  double best = std::numeric_limits<double>::infinity();
  int64_t bad = 0;
  for (double m : metrics) {
    if (m < best * (1.0 - 1e-4)) {  // PyTorch's relative threshold, mode min
      best = m;
      bad = 0;
    } else {
      ++bad;
    }
    if (bad > patience) {
      const double next = std::max(lr * factor, min_lr);
      if (lr - next > 1e-8) lr = next;
      bad = 0;
    }
  }
  return lr;
}

void save_checkpoint(const std::string& path, const MultiTaskModel& model,
                     const torch::optim::Optimizer& optimizer, const Method& method,
                     const at::Generator& shuffle_generator, const CheckpointState& state) {
  torch::serialize::OutputArchive root;
  root.write("format_version", scalar(kFormatVersion));
  root.write("epoch", scalar(state.epoch));
  root.write("schedule.base_lrs", vec(state.schedule.base_lrs));
  root.write("schedule.milestones", vec(state.schedule.milestones));
  root.write("schedule.gamma", vec(std::vector<double>{state.schedule.gamma}));
  root.write("config", c10::IValue(state.config_json));
  root.write("history", c10::IValue(state.history_json));
  {
    at::Generator gen = shuffle_generator;
    std::lock_guard<std::mutex> lock(gen.mutex());
    root.write("shuffle_generator", gen.get_state());
  }
  torch::serialize::OutputArchive m, o, me;
  model.save(m);
  optimizer.save(o);
  method.save(me);
  root.write("model", m);
  root.write("optimizer", o);
  root.write("method", me);
  keep_previous(path);
  save_archive_atomic(root, path);
}

CheckpointState load_checkpoint(const std::string& path, MultiTaskModel& model,
                                torch::optim::Optimizer& optimizer, Method& method,
                                at::Generator& shuffle_generator) {
  torch::serialize::InputArchive root;
  load_archive(root, path, "checkpoint");
  const int64_t version = read_tensor(root, "format_version", path).item<int64_t>();
  TORCH_CHECK(version == kFormatVersion, "checkpoint '", path, "' has format version ", version,
              "; this bayesagg reads version ", kFormatVersion);
  CheckpointState st;
  st.epoch = read_tensor(root, "epoch", path).item<int64_t>();
  const at::Tensor lrs = read_tensor(root, "schedule.base_lrs", path).contiguous();
  st.schedule.base_lrs.assign(lrs.data_ptr<double>(), lrs.data_ptr<double>() + lrs.numel());
  const at::Tensor ms = read_tensor(root, "schedule.milestones", path).contiguous();
  st.schedule.milestones.assign(ms.data_ptr<int64_t>(), ms.data_ptr<int64_t>() + ms.numel());
  st.schedule.gamma = read_tensor(root, "schedule.gamma", path)[0].item<double>();
  st.config_json = read_string(root, "config", path);
  st.history_json = read_string(root, "history", path);
  torch::serialize::InputArchive m, o, me;
  TORCH_CHECK(root.try_read("model", m), "checkpoint '", path, "' has no model");
  TORCH_CHECK(root.try_read("optimizer", o), "checkpoint '", path, "' has no optimiser state");
  TORCH_CHECK(root.try_read("method", me), "checkpoint '", path, "' has no method state");
  try {
    model.load(m);
    optimizer.load(o);
    method.load(me);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "checkpoint '", path, "' does not fit this run: ", e.msg());
  }
  const at::Tensor gen_state = read_tensor(root, "shuffle_generator", path);
  {
    std::lock_guard<std::mutex> lock(shuffle_generator.mutex());
    shuffle_generator.set_state(gen_state);
  }
  return st;
}

void check_resumable(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return;
  const std::string advice = previous_advice(path);
  TORCH_CHECK(false, "cannot resume: '", path, "' does not exist",
              advice.empty() ? " (the run stopped before its first epoch ended?)" : ".", advice);
}

void save_model(const std::string& path, const MultiTaskModel& model, int64_t epoch) {
  torch::serialize::OutputArchive root, m;
  model.save(m);
  root.write("model", m);
  root.write("epoch", scalar(epoch));
  save_archive_atomic(root, path);
}

void load_model(const std::string& path, MultiTaskModel& model) {
  torch::serialize::InputArchive root, m;
  load_archive(root, path, "model file");
  TORCH_CHECK(root.try_read("model", m), "'", path, "' holds no model");
  try {
    model.load(m);
  } catch (const c10::Error& e) {
    TORCH_CHECK(false, "model file '", path, "' does not fit this model: ", e.msg());
  }
}

int64_t saved_model_epoch(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return -1;
  std::string bytes = read_file(path);
  const ChecksumCheck check = verify_checksum(bytes);
  if (!check.ok) return -1;
  torch::serialize::InputArchive root;
  at::Tensor epoch;
  try {
    root.load_from(bytes.data(), check.payload_size);
    if (!root.try_read("epoch", epoch) || epoch.numel() != 1) return -1;
    return epoch.item<int64_t>();
  } catch (const c10::Error&) {
    return -1;
  }
}

bool restore_best_model(const std::string& path, const MultiTaskModel& model, int64_t best_epoch,
                        int64_t checkpoint_epoch) {
  if (best_epoch <= 0 || best_epoch != checkpoint_epoch) return false;
  if (saved_model_epoch(path) == best_epoch) return false;
  save_model(path, model, best_epoch);
  return true;
}

}  // namespace bayesagg
