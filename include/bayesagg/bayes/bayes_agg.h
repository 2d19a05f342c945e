#pragma once
/// BayesAgg-MTL: Bayesian uncertainty for gradient aggregation (Achituve et al., ICML 2024).
///
/// `BayesAgg` composes the three parts of the method (posterior, moments, aggregation) and owns
/// the epoch life-cycle of the reference trainers: the (detached) features and labels of every
/// training batch are collected in preallocated storage, and the full-data posteriors over the
/// heads are built from the previous epoch's collection at the first step of the next epoch.

#include "bayesagg/core/serialize_fwd.h"
#include "bayesagg/bayes/aggregate.h"
#include "bayesagg/bayes/moments.h"
#include "bayesagg/bayes/posterior.h"

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <functional>
#include <iosfwd>
#include <string>
#include <vector>


namespace bayesagg {

/// The most Monte-Carlo samples per step (`mc_samples`, `--mc-samples`): 2^26, 16 x the public
/// fixtures' 4 000 000. Samples are drawn in chunks of bounded memory, so this bounds the time.
constexpr int64_t kMaxMcSamples = int64_t(1) << 26;
/// The most logit samples per step of the rb estimator (`rb_samples`, `--rb-samples`): 2^20,
/// 65 536 x the default.
constexpr int64_t kMaxRbSamples = int64_t(1) << 20;
/// The most Gauss-Hermite points (`quadrature_points`, `--quadrature-points`).
constexpr int64_t kMaxQuadraturePoints = 200;

/// How the prior of every batch posterior (the full-data posterior) follows training.
enum class PosteriorRefresh {
  /// Built once per epoch, at its first step, from the previous epoch's features (the reference).
  /// The batch's own examples are in it as well as in the batch update.
  epoch,
  /// Running statistics: an exponential moving sum of the batches' statistics whose effective
  /// size is one epoch (decay 1 - B / N), started from the full-data statistics; every batch
  /// posterior's prior is N(0, gamma I) updated with the running statistics as they were before
  /// the batch, so the batch is not counted twice and the prior follows the trunk within the epoch.
  running,
};
/// `epoch` / `running`.
PosteriorRefresh parse_posterior_refresh(const std::string& name);
std::string to_string(PosteriorRefresh refresh);

/// The noise of every task's likelihood.
enum class ObservationNoise {
  /// Regression variance 1 and untempered classification likelihoods (the reference).
  fixed,
  /// Per task, the heads' mean loss on the previous epoch's features (`task_noise`), re-estimated
  /// at every epoch's first step: a regression output's noise variance (the moments are those of
  /// the Gaussian negative log-likelihood, `regression_moments` with noise), a classification
  /// task's likelihood temperature tau (mean / tau, variance / tau^2). Tasks the heads fit well
  /// weigh more, as uncertainty weighting (UW) learns them; here they are estimated, not learnt.
  estimated,
  /// `estimated`, then divided by the geometric mean of the estimates of every task with the same
  /// loss (all regression outputs; all binary tasks; all multiclass tasks). Within a loss the
  /// tasks keep `estimated`'s ratios; across losses the scale stays the reference's (mean-square
  /// errors and cross-entropies are not in one unit, and `estimated` lets whichever loss is
  /// numerically smaller dominate). A loss with a single task keeps the fixed noise.
  normalised,
  /// `normalised`, then multiplied by the geometric mean of the estimates of every task (all
  /// losses): the losses are put on one scale (their geometric means made equal) while the
  /// overall size of the estimates is `estimated`'s (and with it the step that grows as the heads
  /// fit). With a single loss (synthetic-regression, multi-fashion, fashion-binary) it is
  /// `estimated`, bit for bit; it differs only where losses mix (multi-fashion-mixed, UTKFace).
  balanced,
};
/// `fixed` / `estimated` / `normalised` / `balanced`.
ObservationNoise parse_observation_noise(const std::string& name);
std::string to_string(ObservationNoise noise);

/// Hyper-parameters of BayesAgg-MTL. Defaults are the reference's (the authors' method) with the
/// embedded benchmarks' settings (spec: benchmarks.md); `recommended()` is this project's variant.
struct BayesAggOptions {
  /// Prior variance of regression heads.
  TORCH_ARG(double, gamma_regression) = 5e-3;
  /// Prior variance of classification heads.
  TORCH_ARG(double, gamma_classification) = 5e-3;
  /// Exponent s of the variance in the weights of regression tasks.
  TORCH_ARG(double, s_regression) = 0.3;
  /// Exponent s of the variance in the weights of classification tasks.
  TORCH_ARG(double, s_classification) = 0.1;
  /// Monte-Carlo samples per step (multiclass groups with `multiclass_moments = mc`; binary groups
  /// with `binary_moments = mc`).
  TORCH_ARG(int64_t, mc_samples) = 1024;
  /// Samples per Monte-Carlo chunk (0 = automatic, bounded memory).
  TORCH_ARG(int64_t, mc_chunk) = 0;
  /// Estimator of binary groups' moments: exact (Stein + Gauss-Hermite) or mc.
  TORCH_ARG(MomentEstimator, binary_moments) = MomentEstimator::exact;
  /// Gauss-Hermite points of the exact binary estimator.
  TORCH_ARG(int64_t, quadrature_points) = 48;
  /// Estimator of multiclass groups' moments: mc (sampling the whole head, `mc_samples`) or rb
  /// (Rao-Blackwellised: sampling only the logits, `rb_samples`; see multiclass_moments_rb).
  /// rb is the default: with 16 antithetic logit samples it is more accurate than mc with the
  /// authors' 1024 (docs/bayesagg.md) at a fraction of the cost.
  TORCH_ARG(MomentEstimator, multiclass_moments) = MomentEstimator::rao_blackwell;
  /// Logit samples per step of the rb estimator (even when `antithetic`).
  TORCH_ARG(int64_t, rb_samples) = 16;
  /// Antithetic pairs in the rb estimator.
  TORCH_ARG(bool, antithetic) = true;
  /// Seed of the generator that draws every Monte-Carlo sample.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Rows per chunk when accumulating full-data statistics.
  TORCH_ARG(int64_t, chunk_rows) = 4096;
  /// Cholesky jitter policy.
  TORCH_ARG(CholeskyOptions, cholesky) = {};
  /// Where classification posteriors are centred: newton (reference), head or mode.
  TORCH_ARG(PosteriorCentre, centre) = PosteriorCentre::newton;
  /// Guarded Newton iterations of `centre = mode`.
  TORCH_ARG(ModeOptions, mode) = {};
  /// How the batch posteriors' prior follows training: epoch (reference) or running.
  TORCH_ARG(PosteriorRefresh, refresh) = PosteriorRefresh::epoch;
  /// Regression observation noise: fixed at 1 (reference) or estimated per output.
  TORCH_ARG(ObservationNoise, noise) = ObservationNoise::fixed;
  /// How the tasks' gradient moments are combined: precision (reference), task or snr.
  TORCH_ARG(Weighting, weighting) = Weighting::precision;
  /// The size of dL/dh: the weighted average over tasks (reference) or T times it (sum).
  TORCH_ARG(GradientScale, scale) = GradientScale::average;

 public:
  /// The authors' BayesAgg-MTL (the defaults).
  static BayesAggOptions reference() { return {}; }

  /// Prior variance of a group.
  double gamma(const TaskGroup& g) const {
    return g.is_classification() ? gamma_classification() : gamma_regression();
  }
  /// Exponent of a group.
  double s(const TaskGroup& g) const {
    return g.is_classification() ? s_classification() : s_regression();
  }
  MomentOptions moment_options() const {
    return MomentOptions()
        .mc_samples(mc_samples())
        .mc_chunk(mc_chunk())
        .quadrature_points(quadrature_points())
        .rb_samples(rb_samples())
        .antithetic(antithetic());
  }
  /// Throws with a message naming the first invalid value.
  void validate() const;
};

/// Prints the options as `BayesAgg(gamma_reg=..., ...)`.
std::ostream& operator<<(std::ostream& os, const BayesAggOptions& o);

/// What one aggregation produced for one group.
struct GroupAggregation {
  /// Gradient mean [B, tasks, d] and tempered variance max(var, 1e-8)^s [B, tasks, d].
  at::Tensor grad_mean, grad_var;
  /// The raw variance [B, tasks, d] (before the floor and the exponent).
  at::Tensor raw_var;
  /// Batch posterior (the one the moments come from).
  GaussianPosterior posterior;
  /// The batch's own statistics, expanded at the heads.
  PosteriorStats batch_stats;
};

/// The result of one aggregation: per-group parts and dL/dh [B, d] (float64, divided by the
/// global batch size: B, or with a reducer the rows of every process's shard).
struct Aggregation {
  std::vector<GroupAggregation> groups;
  at::Tensor dL_dh;
  /// The rows of the whole batch (B; with a reducer, summed over the processes).
  int64_t batch_size = 0;
};

/// Counters a run log can show.
struct BayesAggStats {
  int64_t steps = 0;
  int64_t full_posteriors = 0;
  /// Cholesky factorisations that needed jitter, and the largest jitter added.
  int64_t jitter_events = 0;
  double max_jitter = 0.0;
  /// Per group, at the last full-data posterior: the distance ||M_N - phi|| between the
  /// posterior mean and the heads it was expanded at (regression: the weights), and ||phi||.
  std::vector<double> full_data_shift, head_norm;
  /// Per group, at the last aggregation: ||M_B - phi||, the distance between the mean of the batch
  /// posterior that the moments come from and the heads the losses come from.
  std::vector<double> batch_shift;
  /// Per group, at the last full-data posterior: the mean over its tasks of the estimated noise
  /// (1 with `noise = fixed`).
  std::vector<double> noise;
  /// At the last training step: the norm of dL/dh.
  double dL_dh_norm = 0.0;
  /// At the last training step: the cosine between dL/dh and the linear-scalarisation gradient
  /// d(sum_t L_t)/dh (1 = BayesAgg-MTL moves the representation as LS would).
  double ls_cosine = 0.0;
};

/// Relative cost of one BayesAgg step of a group whose representation has `dim` dimensions: the
/// posterior's factorisations, cubic in the block size, dominate.
double group_step_cost(const TaskGroup& group, int64_t dim);

/// How `BayesAgg` spreads its groups over `threads` intra-op threads: lanes of group indices that
/// run concurrently, one thread each (longest group first onto the least loaded lane), or empty
/// when the groups run one after the other with every thread each. Lanes are used only when they
/// beat that by at least the ~1.5x that intra-op threads give one large factorisation: two equal
/// groups on two threads run concurrently; UTKFace's one large multiclass group with two small
/// ones does not.
std::vector<std::vector<size_t>> concurrent_group_lanes(const std::vector<TaskGroup>& groups,
                                                        int64_t dim, int threads);

/// Growable, preallocated storage of an epoch's detached features and labels.
class EpochStore {
 public:
  /// Preallocates room for `rows` examples (more grow the storage geometrically).
  void reserve(int64_t rows, int64_t dim, const std::vector<TaskGroup>& groups);
  void append(const at::Tensor& features, const Labels& labels);
  int64_t size() const { return size_; }
  /// Views of the first `size()` rows.
  at::Tensor features() const;
  Labels labels() const;
  void clear() { size_ = 0; }
  /// Copies only the used rows (for checkpoints).
  void save(torch::serialize::OutputArchive& archive, const std::string& prefix) const;
  void load(torch::serialize::InputArchive& archive, const std::string& prefix,
            const std::vector<TaskGroup>& groups);

 private:
  void grow(int64_t rows);
  at::Tensor features_;
  Labels labels_;
  int64_t size_ = 0;
};

/// BayesAgg-MTL for a model whose shared representation has `dim` dimensions and whose heads are
/// `groups` (any mix of regression, binary and multiclass groups, in any order).
class BayesAgg {
 public:
  BayesAgg(std::vector<TaskGroup> groups, int64_t dim, BayesAggOptions options = {});

  const std::vector<TaskGroup>& groups() const { return groups_; }
  int64_t dim() const { return dim_; }
  const BayesAggOptions& options() const { return options_; }
  const BayesAggStats& stats() const { return stats_; }

  // ------------------------------------------------------------ pure computation
  /// Additive statistics of (features, labels) for every group, expanded at the heads.
  std::vector<PosteriorStats> statistics(const at::Tensor& features, const Labels& labels,
                                         const std::vector<Head>& heads) const;
  /// Full-data posteriors: prior N(0, gamma I) updated with `stats` (from `statistics`, possibly
  /// summed across processes), expanded at the heads and centred as `options().centre()` says.
  /// `centre = mode` needs the data itself: pass `features` and `labels` (those of `stats`).
  std::vector<GaussianPosterior> full_data_posteriors(const std::vector<PosteriorStats>& stats,
                                                      const std::vector<Head>& heads,
                                                      const at::Tensor& features = {},
                                                      const Labels& labels = {});
  /// One aggregation: batch posteriors with the full-data posteriors as priors (with
  /// `refresh = running`: N(0, gamma I) updated with the running statistics), moments, the
  /// weighting and dL/dh. Uses (and advances) the method's generator.
  Aggregation aggregate(const std::vector<GaussianPosterior>& full_data, const at::Tensor& features,
                        const Labels& labels, const std::vector<Head>& heads);

  // ------------------------------------------------------------ training life-cycle
  /// Preallocates the epoch storage for `examples_per_epoch` rows.
  void reserve(int64_t examples_per_epoch);
  /// Records a training batch's detached features and labels for the next epoch's posteriors.
  void observe(const at::Tensor& features, const Labels& labels);
  /// Ends the epoch: what was observed becomes the data of the next full-data posteriors.
  void end_epoch();
  /// The training step. Leaves the ordinary gradient of sum(losses) on the heads' parameters and
  /// backpropagates the aggregated dL/dh through `representation` (attached to the trunk's
  /// graph) into the trunk. Builds the full-data posteriors first if this is the epoch's first
  /// step, and observes the batch. Returns dL/dh (in the representation's dtype).
  at::Tensor backward(const at::Tensor& losses, const std::vector<Head>& heads,
                      const at::Tensor& representation, const Labels& labels);
  /// Sums statistics across processes before the full-data posteriors are solved (data-parallel
  /// training: pass an all-reduce). Called with every group's statistics.
  void set_statistics_reducer(std::function<void(std::vector<PosteriorStats>&)> reducer) {
    reducer_ = std::move(reducer);
  }
  /// Data-parallel training: `reducer` sums tensors over the processes, each of which holds a
  /// shard of every batch and of every epoch. BayesAgg then reduces (in this order, the same on
  /// every process): at an epoch's first step the full-data statistics (unless
  /// `set_statistics_reducer` gave another reducer) and the noise estimates' sums and counts;
  /// at every aggregation the batch statistics with the global batch size, and with
  /// `weighting = task` the per-task variance sums. dL/dh is divided by the global batch size,
  /// so that the processes' gradients sum to the one-process gradient. The per-example moments
  /// stay local. `centre = mode` iterates on local data and is refused.
  void set_reducer(TensorReducer reducer);
  /// Data-parallel checkpoints. Each process keeps its own shard of both epochs' collected
  /// features and its own Monte-Carlo generator; the rest of the state is the same on every
  /// process. `gather_for_checkpoint` (a collective: every process calls it, after the step and
  /// before process 0 saves) concatenates the shards and generator states with `gather`, so
  /// that process 0's `save` writes every process's part. `load` on process `rank` of
  /// `world_size` (set here) then takes back its own part; a checkpoint written by another
  /// number of processes is refused.
  void set_process(int64_t rank, int64_t world_size);
  void gather_for_checkpoint(const TensorGatherer& gather);
  /// Full-data posteriors of the current epoch (empty before its first step).
  const std::vector<GaussianPosterior>& current_full_data_posteriors() const { return full_; }

  /// Running statistics of `refresh = running` (empty before the first aggregation epoch).
  const std::vector<PosteriorStats>& running_statistics() const { return running_; }
  /// Per group, the noise estimates the moments use ([T_g] with `noise = estimated` after the
  /// epoch's first step; undefined otherwise).
  const std::vector<at::Tensor>& observation_noise() const { return noise_; }

  /// Saves and restores everything kept between steps: both epochs' collections, the current
  /// full-data posteriors, the running statistics, the noise estimates, the generator state and
  /// the counters.
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  void check_batch(const at::Tensor& features, const Labels& labels,
                   const std::vector<Head>& heads) const;
  void note_jitter(double jitter, const char* what);
  /// The posterior of group g from `prior` and `stats`, centred as the options say (`mode`
  /// iterates on `features` and `labels`).
  GaussianPosterior centred_posterior(size_t g, const GaussianPosterior& prior,
                                      const PosteriorStats& stats, const at::Tensor& features,
                                      const at::Tensor& labels, const at::Tensor& phi) const;
  /// The epoch's first step: full-data posteriors (or, with running statistics after their start,
  /// their current state), the noise estimates.
  void start_epoch_posteriors(const std::vector<Head>& heads);
  /// Folds a step's batch statistics into the running statistics (refresh = running).
  void update_running(const Aggregation& aggregation, int64_t batch);

  std::vector<TaskGroup> groups_;
  int64_t dim_;
  BayesAggOptions options_;
  at::Generator generator_;
  EpochStore current_, previous_;
  std::vector<GaussianPosterior> full_;
  std::vector<PosteriorStats> running_;
  std::vector<at::Tensor> noise_;
  BayesAggStats stats_;
  /// Sums `stats` and `rows` over the processes with `tensor_reducer_`.
  void reduce_statistics(std::vector<PosteriorStats>& stats, int64_t& rows, const char* what) const;
  /// The noise estimates of `noise = estimated / normalised` from the previous epoch's features.
  void estimate_noise(const std::vector<Head>& heads);

  std::function<void(std::vector<PosteriorStats>&)> reducer_;
  TensorReducer tensor_reducer_;

  /// Every process's rank-local state, gathered for process 0's checkpoint.
  struct GatheredState {
    int64_t step = -1;  ///< `stats_.steps` when gathered (a stale gathering is refused)
    EpochStore current, previous;
    at::Tensor current_rows, previous_rows;  ///< [world size] rows of each process
    at::Tensor generators;                   ///< [world size, state bytes]
  };
  int64_t rank_ = 0, world_size_ = 1;
  GatheredState gathered_;
  /// Saves the state of every process (world size > 1) from `gathered_`.
  void save_gathered(torch::serialize::OutputArchive& archive) const;
  /// Takes this process's rows and generator from a checkpoint written with `save_gathered`.
  void load_own_part(torch::serialize::InputArchive& archive);
};

}  // namespace bayesagg
