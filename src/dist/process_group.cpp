// c10d's Gloo header is compiled only with USE_C10D_GLOO, which LibTorch's CMake target defines
// (Debian's build has it); it includes libgloo-dev's headers.
#include "bayesagg/dist/process_group.h"

#include "bayesagg/bayes/posterior.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

namespace bayesagg {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds to_ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000.0));
}

/// The integer in environment variable `name`, or nullopt when unset; throws when malformed.
std::optional<int64_t> env_int(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  TORCH_CHECK(end && *end == '\0', "environment variable ", name, "='", v,
              "' is not an integer");
  return x;
}

std::string env_string(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

/// Gloo's transport: the interface GLOO_SOCKET_IFNAME names, else loopback for a store on this
/// machine, else the address this machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> make_device(const DistOptions& o) {
  const std::string ifname = env_string("GLOO_SOCKET_IFNAME", "");
  if (!ifname.empty()) return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  if (o.master_addr() == "127.0.0.1" || o.master_addr() == "localhost") {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

void DistOptions::validate() const {
  TORCH_CHECK(world_size() >= 1, "distributed: world size ", world_size(), ": expected >= 1");
  TORCH_CHECK(rank() >= 0 && rank() < world_size(), "distributed: rank ", rank(),
              ": expected 0 to ", world_size() - 1, " (world size ", world_size(), ")");
  TORCH_CHECK(master_port() >= 1 && master_port() <= 65535, "distributed: master port ",
              master_port(), ": expected 1 to 65535");
  TORCH_CHECK(timeout() > 0 && timeout() <= 86400, "--dist-timeout ", timeout(),
              ": expected more than 0 and at most 86400 seconds");
  TORCH_CHECK(!master_addr().empty(), "distributed: MASTER_ADDR is empty");
  TORCH_CHECK(local_world_size() >= 1 && local_world_size() <= world_size(),
              "distributed: LOCAL_WORLD_SIZE ", local_world_size(), ": expected 1 to ",
              world_size(), " (the world size)");
}

std::optional<DistOptions> dist_options_from_env(double timeout) {
  const auto rank = env_int("RANK");
  const auto world = env_int("WORLD_SIZE");
  if (!rank && !world) return std::nullopt;
  TORCH_CHECK(rank && world, "the torchrun environment is incomplete: RANK is ",
              rank ? std::to_string(*rank) : "unset", " and WORLD_SIZE is ",
              world ? std::to_string(*world) : "unset", "; set both (and MASTER_ADDR, "
              "MASTER_PORT), or neither for a one-process run");
  DistOptions o;
  o.rank(*rank).world_size(*world).timeout(timeout);
  o.local_rank(env_int("LOCAL_RANK").value_or(*rank));
  o.local_world_size(env_int("LOCAL_WORLD_SIZE").value_or(1));
  o.master_addr(env_string("MASTER_ADDR", "127.0.0.1"));
  o.master_port(env_int("MASTER_PORT").value_or(29500));
  const std::string agent = env_string("TORCHELASTIC_USE_AGENT_STORE", "");
  o.host_store(*rank == 0 && agent != "True" && agent != "true" && agent != "1");
  o.validate();
  return o;
}

struct StoreHost::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

StoreHost::StoreHost(int64_t port, double timeout) : impl_(std::make_unique<Impl>()) {
  TORCH_CHECK(port >= 0 && port <= 65535, "store port ", port, ": expected 0 (any) to 65535");
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(port);
  so.isServer = true;
  so.waitWorkers = false;
  so.timeout = to_ms(timeout);
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", so);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "cannot host the c10d store on port ", port, ": ", e.what());
  }
}

StoreHost::~StoreHost() = default;

int64_t StoreHost::port() const { return impl_->store->getPort(); }

struct DistGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

DistGroup::DistGroup(DistOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  options_.validate();
  const auto timeout = to_ms(options_.timeout());
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(options_.master_port());
  so.isServer = options_.host_store();
  so.numWorkers = c10::nullopt;
  so.waitWorkers = false;
  so.timeout = timeout;
  try {
    auto tcp = c10::make_intrusive<c10d::TCPStore>(options_.master_addr(), so);
    impl_->store = c10::make_intrusive<c10d::PrefixStore>("bayesagg", tcp);
    auto go = c10d::ProcessGroupGloo::Options::create(timeout);
    go->devices.push_back(make_device(options_));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
        impl_->store, static_cast<int>(options_.rank()), static_cast<int>(options_.world_size()),
        go);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "rank ", options_.rank(), " of ", options_.world_size(),
                ": cannot join the process group at ", options_.master_addr(), ":",
                options_.master_port(), " within ", options_.timeout(),
                " s (--dist-timeout): ", e.what(),
                ". Are all ranks started, with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE?");
  }
}

DistGroup::~DistGroup() = default;

std::string DistGroup::lost_ranks() {
  // Every rank that sees a failure says so in the store; ranks that do not within a grace
  // period stopped answering.
  try {
    impl_->store->setTimeout(std::chrono::milliseconds(2000));
    impl_->store->set("failed/" + std::to_string(rank()), std::vector<uint8_t>{1});
    std::vector<int64_t> missing;
    const auto deadline = Clock::now() + std::chrono::milliseconds(2000);
    do {
      missing.clear();
      for (int64_t r = 0; r < world_size(); ++r) {
        if (!impl_->store->check({"failed/" + std::to_string(r)})) missing.push_back(r);
      }
      if (missing.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < deadline);
    if (missing.empty()) return "every rank reports the failure (no rank is lost)";
    std::string s = missing.size() == 1 ? "lost rank " : "lost ranks ";
    for (size_t i = 0; i < missing.size(); ++i) s += (i ? ", " : "") + std::to_string(missing[i]);
    return s + " (it stopped answering: killed, crashed or stalled)";
  } catch (const std::exception&) {
    return "the store at " + options_.master_addr() + ":" +
           std::to_string(options_.master_port()) +
           " is unreachable too: lost the store's host (rank 0, or the launcher)";
  }
}

void DistGroup::fail(const std::string& op, const std::string& what, const std::string& why) {
  const std::string lost = lost_ranks();
  TORCH_CHECK(false, "rank ", rank(), " of ", world_size(), ": the ", op, " of ", what, " at ",
              context_, " failed (", lost, "): ", why,
              ". Every rank stops; the last checkpoint is intact.");
}

template <typename Launch>
void DistGroup::run(const std::string& op, const std::string& what, Launch&& launch) {
  const auto start = Clock::now();
  std::string error;
  try {
    c10::intrusive_ptr<c10d::Work> work = launch();
    if (!work->wait(to_ms(options_.timeout()))) error = "timed out";
  } catch (const std::exception& e) {
    error = e.what();
    const auto cut = error.find("\nException raised from");
    if (cut != std::string::npos) error.resize(cut);
  }
  seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  if (!error.empty()) fail(op, what, error);
}

at::Tensor flatten_tensors(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> flat;
  flat.reserve(tensors.size());
  for (const auto& t : tensors) flat.push_back(t.reshape({-1}));
  return at::cat(flat);
}

void unflatten_into(const at::Tensor& flat, const std::vector<at::Tensor>& tensors) {
  int64_t offset = 0;
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(flat.narrow(0, offset, n).view_as(t));
    offset += n;
  }
}

void DistGroup::all_reduce(const std::vector<at::Tensor>& tensors, ReduceMode mode,
                           const std::string& what, int64_t bucket_bytes) {
  TORCH_CHECK(bucket_bytes > 0, "all_reduce: bucket size ", bucket_bytes, ": expected > 0");
  std::vector<at::Tensor> bucket;
  int64_t bucket_size = 0;
  const auto flush = [&]() {
    if (bucket.empty()) return;
    std::vector<at::Tensor> flat{flatten_tensors(bucket)};
    bytes_ += flat[0].numel() * static_cast<int64_t>(flat[0].element_size());
    run("all-reduce", what, [&]() { return impl_->group->allreduce(flat); });
    if (mode == ReduceMode::average) flat[0].div_(static_cast<double>(world_size()));
    unflatten_into(flat[0], bucket);
    bucket.clear();
    bucket_size = 0;
  };
  for (const auto& t : tensors) {
    if (!t.defined() || t.numel() == 0) continue;
    TORCH_CHECK(t.device().is_cpu(), "all_reduce of ", what, ": tensors on ", t.device(),
                " need the NCCL backend, which this LibTorch build does not have; train on cpu");
    const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (!bucket.empty() &&
        (bucket[0].scalar_type() != t.scalar_type() || bucket_size + bytes > bucket_bytes)) {
      flush();
    }
    bucket.push_back(t);
    bucket_size += bytes;
  }
  flush();
}

void DistGroup::broadcast(const std::vector<at::Tensor>& tensors, const std::string& what,
                          int64_t root) {
  TORCH_CHECK(root >= 0 && root < world_size(), "broadcast: root ", root, ": expected 0 to ",
              world_size() - 1);
  std::vector<at::Tensor> same;
  for (const auto& t : tensors) {
    if (t.defined() && t.numel() > 0) same.push_back(t);
  }
  // One flat buffer per dtype, in the order of first appearance.
  while (!same.empty()) {
    std::vector<at::Tensor> group, rest;
    for (const auto& t : same) {
      (t.scalar_type() == same[0].scalar_type() ? group : rest).push_back(t);
    }
    std::vector<at::Tensor> flat{flatten_tensors(group)};
    bytes_ += flat[0].numel() * static_cast<int64_t>(flat[0].element_size());
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    run("broadcast", what, [&]() { return impl_->group->broadcast(flat, bo); });
    unflatten_into(flat[0], group);
    same = std::move(rest);
  }
}

at::Tensor DistGroup::all_gather(const at::Tensor& tensor, const std::string& what) {
  TORCH_CHECK(tensor.defined() && tensor.dim() >= 1, "all_gather of ", what,
              ": expected a tensor with at least one dimension");
  const auto world = static_cast<size_t>(world_size());
  // The ranks' lengths first, then the tensors padded to the longest.
  std::vector<at::Tensor> len{at::full({1}, tensor.size(0), at::kLong)};
  std::vector<std::vector<at::Tensor>> lens(1);
  for (size_t r = 0; r < world; ++r) lens[0].push_back(at::empty({1}, at::kLong));
  run("all-gather", what + " (lengths)", [&]() { return impl_->group->allgather(lens, len); });
  int64_t longest = 0;
  std::vector<int64_t> n(world);
  for (size_t r = 0; r < world; ++r) {
    n[r] = lens[0][r].item<int64_t>();
    longest = std::max(longest, n[r]);
  }
  std::vector<int64_t> shape = tensor.sizes().vec();
  shape[0] = longest;
  at::Tensor padded = at::zeros(shape, tensor.options());
  padded.narrow(0, 0, tensor.size(0)).copy_(tensor);
  std::vector<at::Tensor> in{padded};
  std::vector<std::vector<at::Tensor>> out(1);
  for (size_t r = 0; r < world; ++r) out[0].push_back(at::empty(shape, tensor.options()));
  bytes_ += padded.numel() * static_cast<int64_t>(padded.element_size());
  run("all-gather", what, [&]() { return impl_->group->allgather(out, in); });
  std::vector<at::Tensor> parts;
  for (size_t r = 0; r < world; ++r) parts.push_back(out[0][r].narrow(0, 0, n[r]));
  return at::cat(parts);
}

void DistGroup::barrier(const std::string& what) {
  // Gloo's barrier: an all-reduce of one element keeps the timeout handling in one place.
  std::vector<at::Tensor> one{at::zeros({1}, at::kFloat)};
  run("barrier", what, [&]() { return impl_->group->allreduce(one); });
}

void all_reduce_statistics(DistGroup& group, std::vector<PosteriorStats>& stats) {
  std::vector<at::Tensor> parts;
  at::Tensor counts = at::empty({static_cast<int64_t>(stats.size())}, at::kLong);
  for (size_t g = 0; g < stats.size(); ++g) {
    parts.push_back(stats[g].curvature);
    parts.push_back(stats[g].rhs);
    counts[static_cast<int64_t>(g)] = stats[g].count;
  }
  parts.push_back(counts);
  group.all_reduce(parts, ReduceMode::sum, "BayesAgg-MTL's posterior statistics");
  for (size_t g = 0; g < stats.size(); ++g) {
    stats[g].count = counts[static_cast<int64_t>(g)].item<int64_t>();
  }
}

}  // namespace bayesagg
