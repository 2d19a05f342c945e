#pragma once
/// Data-parallel training on LibTorch's c10d: the settings of one rank (`DistOptions`, read from
/// the torchrun environment), and `DistGroup`, a Gloo process group over a c10d `TCPStore` with
/// the collectives the trainer needs: bucketed all-reduces of tensor lists through flat buffers,
/// broadcasts from rank 0 and all-gathers of variable-length tensors (docs/distributed.md).
///
/// Every collective is bounded by the timeout; a failure (a rank that died or stalls) is
/// rethrown as a `c10::Error` naming this rank, the step being run and the rank(s) that stopped
/// answering. Collectives must be issued in the same order on every rank.

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace bayesagg {

struct PosteriorStats;

/// One rank's place in a data-parallel run.
struct DistOptions {
  /// Throws naming the bad value.
  void validate() const;

  /// This process's rank, 0 <= rank < world_size.
  TORCH_ARG(int64_t, rank) = 0;
  /// Number of processes.
  TORCH_ARG(int64_t, world_size) = 1;
  /// The rank among the processes of this machine (torchrun's LOCAL_RANK; selects the GPU).
  TORCH_ARG(int64_t, local_rank) = 0;
  /// The number of ranks on this machine (torchrun's LOCAL_WORLD_SIZE): `--threads 0` gives each
  /// its share of the cores.
  TORCH_ARG(int64_t, local_world_size) = 1;
  /// Host of the c10d TCPStore (rank 0's machine, or torchrun's agent).
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  /// Port of the TCPStore.
  TORCH_ARG(int64_t, master_port) = 29500;
  /// Seconds every collective (and the rendezvous) may take before the run stops.
  TORCH_ARG(double, timeout) = 300.0;
  /// Whether this rank hosts the store (rank 0 unless an agent, e.g. torchrun's or
  /// `bayesagg train --nproc`'s launcher, hosts it: TORCHELASTIC_USE_AGENT_STORE=True).
  TORCH_ARG(bool, host_store) = true;
};

/// The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
/// MASTER_PORT, TORCHELASTIC_USE_AGENT_STORE) with `timeout` seconds; nullopt when neither RANK nor
/// WORLD_SIZE is set. Throws when they are set but malformed or incomplete.
std::optional<DistOptions> dist_options_from_env(double timeout);

/// A c10d TCPStore server kept by a launcher (`bayesagg train --nproc`, tests), so that the
/// ranks are all clients and the store outlives any of them (the lost rank is then named even
/// when it is rank 0). The ranks see it as torchrun's agent store.
class StoreHost {
 public:
  /// Listens on `port` of this machine (0: a free port, see `port()`).
  explicit StoreHost(int64_t port = 0, double timeout = 300.0);
  ~StoreHost();
  StoreHost(const StoreHost&) = delete;
  StoreHost& operator=(const StoreHost&) = delete;
  /// The port it listens on.
  int64_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// How `DistGroup::all_reduce` combines the ranks' tensors.
enum class ReduceMode { sum, average };

/// A Gloo process group of `world_size` ranks. Not copyable; one per process.
class DistGroup {
 public:
  /// Connects to (or, with `host_store`, hosts) the store and forms the group; waits up to the
  /// timeout for every rank.
  explicit DistGroup(DistOptions options);
  ~DistGroup();
  DistGroup(const DistGroup&) = delete;
  DistGroup& operator=(const DistGroup&) = delete;

  int64_t rank() const { return options_.rank(); }
  int64_t world_size() const { return options_.world_size(); }
  const DistOptions& options() const { return options_; }

  /// What the run is doing (e.g. `epoch 2, step 17`), named in the errors of collectives.
  void set_context(std::string context) { context_ = std::move(context); }
  const std::string& context() const { return context_; }

  /// Reduces `tensors` in place over the ranks (sum or average), through flat buffers of at most
  /// `bucket_bytes` per dtype. Undefined tensors are skipped (they must be undefined on every
  /// rank). `what` names the values in errors (e.g. "gradients").
  void all_reduce(const std::vector<at::Tensor>& tensors, ReduceMode mode,
                  const std::string& what, int64_t bucket_bytes = 25 << 20);
  /// Overwrites `tensors` (in place) with rank `root`'s values.
  void broadcast(const std::vector<at::Tensor>& tensors, const std::string& what,
                 int64_t root = 0);
  /// Every rank's `tensor` (its first dimension may differ between ranks; the other dimensions
  /// and the dtype may not), concatenated in rank order along the first dimension.
  at::Tensor all_gather(const at::Tensor& tensor, const std::string& what);
  /// Waits for every rank.
  void barrier(const std::string& what);

  /// Bytes this rank sent into collectives so far (payload only), for the cost reports.
  int64_t bytes_reduced() const { return bytes_; }
  /// Seconds spent in collectives so far.
  double seconds_in_collectives() const { return seconds_; }

 private:
  struct Impl;
  /// Runs one collective: waits with the timeout, turns failures into a clear error.
  template <typename Launch>
  void run(const std::string& op, const std::string& what, Launch&& launch);
  [[noreturn]] void fail(const std::string& op, const std::string& what, const std::string& why);
  std::string lost_ranks();

  DistOptions options_;
  std::unique_ptr<Impl> impl_;
  std::string context_ = "start-up";
  int64_t bytes_ = 0;
  double seconds_ = 0.0;
};

/// Sums BayesAgg-MTL's additive posterior statistics (curvature, right-hand side and count of
/// every group) over the ranks in place: the reducer `BayesAgg::set_statistics_reducer` takes
/// (`[&group](auto& stats) { all_reduce_statistics(group, stats); }`). Statistics must have the
/// same layout on every rank.
void all_reduce_statistics(DistGroup& group, std::vector<PosteriorStats>& stats);

/// Flattens `tensors` (same dtype and device) into one contiguous 1-D buffer.
at::Tensor flatten_tensors(const std::vector<at::Tensor>& tensors);
/// Copies the 1-D `flat` back into `tensors` (the inverse of `flatten_tensors`).
void unflatten_into(const at::Tensor& flat, const std::vector<at::Tensor>& tensors);

}  // namespace bayesagg
