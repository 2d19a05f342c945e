#include "bayesagg/bayes/bayes_agg.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <ostream>

namespace bayesagg {
namespace {

/// The upper triangle of an n x n matrix, diagonal included: the linear indices (i n + j) of its
/// entries and (j n + i) of their mirror images.
struct UpperTriangle {
  explicit UpperTriangle(int64_t size) : n(size) {
    const at::Tensor ij = at::triu_indices(n, n, 0, at::kLong);
    upper = ij[0] * n + ij[1];
    mirror = ij[1] * n + ij[0];
  }
  int64_t n;
  at::Tensor upper, mirror;
};

/// The upper triangles of the symmetric matrices [..., n, n], flattened to [..., n (n + 1) / 2]:
/// what a data-parallel run sends of the posterior's curvature (half the bytes).
at::Tensor upper_triangle(const at::Tensor& m, const UpperTriangle& t) {
  return m.flatten(-2).index_select(-1, t.upper).contiguous();
}

/// The symmetric matrices [..., n, n] whose upper triangles are `packed` (`upper_triangle`'s
/// inverse).
at::Tensor from_upper_triangle(const at::Tensor& packed, const UpperTriangle& t) {
  const int64_t n = t.n;
  std::vector<int64_t> shape = packed.sizes().vec();
  shape.back() = n * n;
  at::Tensor out = at::empty(shape, packed.options());
  out.index_copy_(-1, t.mirror, packed);
  out.index_copy_(-1, t.upper, packed);
  shape.back() = n;
  shape.push_back(n);
  return out.view(shape);
}

/// Runs `f(g)` for every group g, concurrently over the lanes of `concurrent_group_lanes` (one
/// thread each) when there are several, else in order with every intra-op thread for each group's
/// own ops.
template <class F>
void for_each_group(const std::vector<TaskGroup>& groups, int64_t dim, const F& f) {
  const auto lanes = concurrent_group_lanes(groups, dim, at::get_num_threads());
  if (lanes.size() <= 1 || at::in_parallel_region()) {
    for (size_t g = 0; g < groups.size(); ++g) f(g);
    return;
  }
  at::parallel_for(0, static_cast<int64_t>(lanes.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t lane = begin; lane < end; ++lane) {
      for (const size_t g : lanes[lane]) f(g);
    }
  });
}

}  // namespace

void BayesAggOptions::validate() const {
  TORCH_CHECK(gamma_regression() > 0, "gamma_regression must be > 0, got ", gamma_regression());
  TORCH_CHECK(gamma_classification() > 0, "gamma_classification must be > 0, got ",
              gamma_classification());
  TORCH_CHECK(s_regression() >= 0, "s_regression must be >= 0, got ", s_regression());
  TORCH_CHECK(s_classification() >= 0, "s_classification must be >= 0, got ",
              s_classification());
  TORCH_CHECK(mc_samples() >= 2 && mc_samples() <= kMaxMcSamples, "mc_samples must be in [2, ",
              kMaxMcSamples, "], got ", mc_samples());
  TORCH_CHECK(mc_chunk() >= 0, "mc_chunk must be >= 0 (0 = automatic), got ", mc_chunk());
  TORCH_CHECK(quadrature_points() >= 2 && quadrature_points() <= kMaxQuadraturePoints,
              "quadrature_points must be in [2, ", kMaxQuadraturePoints, "], got ",
              quadrature_points());
  TORCH_CHECK(binary_moments() != MomentEstimator::rao_blackwell,
              "binary_moments must be exact or mc (rb is for multiclass groups)");
  TORCH_CHECK(multiclass_moments() != MomentEstimator::exact,
              "multiclass_moments must be mc or rb (there is no exact multiclass estimator)");
  TORCH_CHECK(rb_samples() >= 2 && rb_samples() <= kMaxRbSamples, "rb_samples must be in [2, ",
              kMaxRbSamples, "], got ", rb_samples());
  TORCH_CHECK(!antithetic() || rb_samples() % 2 == 0,
              "antithetic sampling needs an even rb_samples, got ", rb_samples());
  TORCH_CHECK(chunk_rows() >= 1, "chunk_rows must be >= 1, got ", chunk_rows());
  TORCH_CHECK(!(centre() == PosteriorCentre::mode && refresh() == PosteriorRefresh::running),
              "centre mode iterates on the data of the posterior, which running statistics do not "
              "keep: use refresh epoch with centre mode, or centre head or newton with refresh "
              "running");
}

PosteriorRefresh parse_posterior_refresh(const std::string& name) {
  if (name == "epoch") return PosteriorRefresh::epoch;
  if (name == "running") return PosteriorRefresh::running;
  TORCH_CHECK(false, "unknown posterior refresh '", name, "' (expected epoch or running)");
}

std::string to_string(PosteriorRefresh refresh) {
  return refresh == PosteriorRefresh::running ? "running" : "epoch";
}

ObservationNoise parse_observation_noise(const std::string& name) {
  if (name == "fixed") return ObservationNoise::fixed;
  if (name == "estimated") return ObservationNoise::estimated;
  if (name == "normalised") return ObservationNoise::normalised;
  if (name == "balanced") return ObservationNoise::balanced;
  TORCH_CHECK(false, "unknown observation noise '", name,
              "' (expected fixed, estimated, normalised or balanced)");
}

std::string to_string(ObservationNoise noise) {
  switch (noise) {
    case ObservationNoise::estimated: return "estimated";
    case ObservationNoise::normalised: return "normalised";
    case ObservationNoise::balanced: return "balanced";
    case ObservationNoise::fixed: break;
  }
  return "fixed";
}

std::ostream& operator<<(std::ostream& os, const BayesAggOptions& o) {
  return os << "BayesAgg(gamma_reg=" << o.gamma_regression()
            << ", gamma_cls=" << o.gamma_classification() << ", s_reg=" << o.s_regression()
            << ", s_cls=" << o.s_classification() << ", mc_samples=" << o.mc_samples()
            << ", binary_moments=" << to_string(o.binary_moments())
            << ", multiclass_moments=" << to_string(o.multiclass_moments())
            << ", rb_samples=" << o.rb_samples() << ", antithetic=" << o.antithetic()
            << ", quadrature_points=" << o.quadrature_points() << ", centre=" << to_string(o.centre())
            << ", refresh=" << to_string(o.refresh()) << ", noise=" << to_string(o.noise())
            << ", weighting=" << to_string(o.weighting()) << ", scale=" << to_string(o.scale())
            << ", seed=" << o.seed() << ")";
}

double group_step_cost(const TaskGroup& group, int64_t dim) {
  const double d = static_cast<double>(dim), q = d + 1;
  switch (group.type) {
    case GroupType::regression: return d * d * d;
    case GroupType::binary: return group.outputs * q * q * q;
    case GroupType::multiclass: return std::pow(group.outputs * q, 3);
  }
  return 0;
}

std::vector<std::vector<size_t>> concurrent_group_lanes(const std::vector<TaskGroup>& groups,
                                                        int64_t dim, int threads) {
  const size_t lanes = std::min(groups.size(), static_cast<size_t>(std::max(threads, 1)));
  if (lanes <= 1) return {};
  std::vector<size_t> order(groups.size());
  std::vector<double> cost(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    order[g] = g;
    cost[g] = group_step_cost(groups[g], dim);
  }
  // Longest first, each to the least loaded lane.
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return cost[a] > cost[b]; });
  std::vector<std::vector<size_t>> out(lanes);
  std::vector<double> load(lanes, 0.0);
  double total = 0;
  for (const size_t g : order) {
    const size_t lane = std::min_element(load.begin(), load.end()) - load.begin();
    out[lane].push_back(g);
    load[lane] += cost[g];
    total += cost[g];
  }
  // Concurrent lanes pay off when they beat running the groups one by one on all threads, whose
  // large factorisations gain up to ~1.5x from intra-op threads.
  if (*std::max_element(load.begin(), load.end()) > total / 1.5) return {};
  for (auto& lane : out) std::sort(lane.begin(), lane.end());
  return out;
}

// ---------------------------------------------------------------- EpochStore

void EpochStore::reserve(int64_t rows, int64_t dim, const std::vector<TaskGroup>& groups) {
  TORCH_CHECK(rows >= 0, "cannot reserve ", rows, " rows");
  if (!features_.defined()) {
    features_ = at::empty({rows, dim}, at::kFloat);
    labels_.clear();
    for (const auto& g : groups) {
      labels_.push_back(g.type == GroupType::multiclass ? at::empty({rows}, at::kLong)
                                                        : at::empty({rows, g.outputs}, at::kFloat));
    }
    size_ = 0;
  } else if (rows > features_.size(0)) {
    grow(rows);
  }
}

void EpochStore::grow(int64_t rows) {
  auto enlarge = [&](const at::Tensor& t) {
    auto sizes = t.sizes().vec();
    sizes[0] = rows;
    at::Tensor bigger = at::empty(sizes, t.options());
    bigger.narrow(0, 0, size_).copy_(t.narrow(0, 0, size_));
    return bigger;
  };
  features_ = enlarge(features_);
  for (auto& l : labels_) l = enlarge(l);
}

void EpochStore::append(const at::Tensor& features, const Labels& labels) {
  TORCH_CHECK(features_.defined(), "EpochStore::append before reserve");
  const int64_t b = features.size(0);
  if (size_ + b > features_.size(0)) grow(std::max<int64_t>(2 * features_.size(0), size_ + b));
  features_.narrow(0, size_, b).copy_(features.detach());
  for (size_t g = 0; g < labels_.size(); ++g) labels_[g].narrow(0, size_, b).copy_(labels[g]);
  size_ += b;
}

at::Tensor EpochStore::features() const { return features_.narrow(0, 0, size_); }

Labels EpochStore::labels() const {
  Labels out;
  for (const auto& l : labels_) out.push_back(l.narrow(0, 0, size_));
  return out;
}

// ---------------------------------------------------------------- BayesAgg

BayesAgg::BayesAgg(std::vector<TaskGroup> groups, int64_t dim, BayesAggOptions options)
    : groups_(std::move(groups)), dim_(dim), options_(std::move(options)) {
  TORCH_CHECK(!groups_.empty(), "BayesAgg needs at least one task group");
  TORCH_CHECK(dim_ >= 1, "representation dimension must be >= 1, got ", dim_);
  options_.validate();
  generator_ = at::make_generator<at::CPUGeneratorImpl>(options_.seed());
  reserve(0);
}

void BayesAgg::check_batch(const at::Tensor& features, const Labels& labels,
                           const std::vector<Head>& heads) const {
  TORCH_CHECK(features.dim() == 2 && features.size(1) == dim_, "representation must be [B, ",
              dim_, "], got ", features.sizes());
  TORCH_CHECK(labels.size() == groups_.size(), "expected labels for ", groups_.size(),
              " groups, got ", labels.size());
  TORCH_CHECK(heads.size() == groups_.size(), "expected ", groups_.size(), " heads, got ",
              heads.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    TORCH_CHECK(heads[g].weight.defined() && heads[g].weight.dim() == 2 &&
                    heads[g].weight.size(0) == groups_[g].head_rows() &&
                    heads[g].weight.size(1) == dim_,
                "head of group ", g, " (", groups_[g].str(), ") must be [", groups_[g].head_rows(),
                ", ", dim_, "]");
  }
}

void BayesAgg::note_jitter(double jitter, const char* what) {
  if (jitter <= 0) return;
  if (stats_.jitter_events == 0) {
    TORCH_WARN("BayesAgg: the ", what, " needed Cholesky jitter ", jitter,
               " to factorise (counted in stats().jitter_events)");
  }
  ++stats_.jitter_events;
  stats_.max_jitter = std::max(stats_.max_jitter, jitter);
}

std::vector<PosteriorStats> BayesAgg::statistics(const at::Tensor& features, const Labels& labels,
                                                 const std::vector<Head>& heads) const {
  at::NoGradGuard no_grad;
  std::vector<PosteriorStats> out(groups_.size());
  for_each_group(groups_, dim_, [&](size_t g) {
    at::NoGradGuard guard;  // grad mode is thread-local
    out[g] = posterior_stats(groups_[g], features, labels[g], head_parameters(groups_[g], heads[g]),
                             options_.chunk_rows());
  });
  return out;
}

GaussianPosterior BayesAgg::centred_posterior(size_t g, const GaussianPosterior& prior,
                                              const PosteriorStats& stats,
                                              const at::Tensor& features, const at::Tensor& labels,
                                              const at::Tensor& phi) const {
  const TaskGroup& group = groups_[g];
  if (options_.centre() == PosteriorCentre::mode && group.is_classification()) {
    TORCH_CHECK(features.defined() && labels.defined(),
                "centre mode needs the posterior's data (features and labels), not only its "
                "statistics");
    return posterior_mode(group, prior, features, labels, phi, options_.mode(),
                          options_.cholesky(), options_.chunk_rows())
        .posterior;
  }
  GaussianPosterior post = posterior_update(group, prior, stats, phi, options_.cholesky());
  if (options_.centre() == PosteriorCentre::head) post.mean = phi;
  return post;
}

std::vector<GaussianPosterior> BayesAgg::full_data_posteriors(
    const std::vector<PosteriorStats>& stats, const std::vector<Head>& heads,
    const at::Tensor& features, const Labels& labels) {
  TORCH_CHECK(stats.size() == groups_.size(), "expected statistics for ", groups_.size(),
              " groups, got ", stats.size());
  TORCH_CHECK(labels.empty() || labels.size() == groups_.size(), "expected labels for ",
              groups_.size(), " groups, got ", labels.size());
  at::NoGradGuard no_grad;
  std::vector<GaussianPosterior> out(groups_.size());
  for_each_group(groups_, dim_, [&](size_t g) {
    at::NoGradGuard guard;
    const GaussianPosterior prior = isotropic_prior(groups_[g], dim_, options_.gamma(groups_[g]));
    out[g] = centred_posterior(g, prior, stats[g], features,
                               labels.empty() ? at::Tensor() : labels[g],
                               head_parameters(groups_[g], heads[g]));
  });
  stats_.full_data_shift.assign(groups_.size(), 0.0);
  stats_.head_norm.assign(groups_.size(), 0.0);
  for (size_t g = 0; g < groups_.size(); ++g) {
    note_jitter(out[g].jitter, "full-data precision");
    const at::Tensor phi = head_parameters(groups_[g], heads[g]);
    stats_.full_data_shift[g] = (out[g].mean - phi).norm().item<double>();
    stats_.head_norm[g] = phi.norm().item<double>();
  }
  ++stats_.full_posteriors;
  return out;
}

Aggregation BayesAgg::aggregate(const std::vector<GaussianPosterior>& full_data,
                                const at::Tensor& features, const Labels& labels,
                                const std::vector<Head>& heads) {
  check_batch(features, labels, heads);
  const bool running = options_.refresh() == PosteriorRefresh::running;
  TORCH_CHECK(running ? running_.size() == groups_.size() : full_data.size() == groups_.size(),
              running ? "refresh running: the running statistics have not been started (call "
                        "backward, or load a checkpoint)"
                      : "expected one full-data posterior per group");
  at::NoGradGuard no_grad;
  const at::Tensor h = features.detach().to(at::kDouble);
  const MomentOptions mopts = options_.moment_options();
  // One generator per group and step, seeded in group order from the method's generator, so that
  // the groups can run concurrently and the draws do not depend on the thread count.
  std::vector<at::Generator> gens;
  {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    auto* main = at::check_generator<at::CPUGeneratorImpl>(generator_);
    for (size_t g = 0; g < groups_.size(); ++g) {
      gens.push_back(at::make_generator<at::CPUGeneratorImpl>(main->random64()));
    }
  }
  Aggregation out;
  out.groups.resize(groups_.size());
  // 1. The batch statistics (with a reducer: the whole batch's, summed over the shards).
  for_each_group(groups_, dim_, [&](size_t g) {
    at::NoGradGuard guard;
    out.groups[g].batch_stats = posterior_stats(groups_[g], h, labels[g],
                                                head_parameters(groups_[g], heads[g]),
                                                options_.chunk_rows());
  });
  out.batch_size = h.size(0);
  if (tensor_reducer_) {
    std::vector<PosteriorStats> batch;
    for (const auto& ga : out.groups) batch.push_back(ga.batch_stats);
    reduce_statistics(batch, out.batch_size, "BayesAgg-MTL's batch statistics");
    for (size_t g = 0; g < groups_.size(); ++g) out.groups[g].batch_stats = batch[g];
  }
  // 2. Per group: the batch posterior and the (local, per-example) gradient moments.
  std::vector<double> moment_jitter(groups_.size(), 0.0), shift(groups_.size(), 0.0);
  for_each_group(groups_, dim_, [&](size_t g) {
    at::NoGradGuard guard;
    const TaskGroup& group = groups_[g];
    const at::Tensor phi = head_parameters(group, heads[g]);
    GroupAggregation& ga = out.groups[g];
    if (running) {
      // The batch's prior: N(0, gamma I) with the running statistics, which exclude the batch.
      PosteriorStats all;
      all.add_(running_[g]);  // a copy: add_ accumulates in place
      all.add_(ga.batch_stats);
      ga.posterior = centred_posterior(g, isotropic_prior(group, dim_, options_.gamma(group)), all,
                                       h, labels[g], phi);
    } else {
      ga.posterior = centred_posterior(g, full_data[g], ga.batch_stats, h, labels[g], phi);
    }
    shift[g] = (ga.posterior.mean - phi).norm().item<double>();
    // A head-centred regression posterior predicts with the head's bias too.
    const bool with_bias = group.type == GroupType::regression &&
                           options_.centre() == PosteriorCentre::head && heads[g].bias.defined();
    const at::Tensor y = with_bias ? labels[g].to(at::kDouble) - heads[g].bias.detach().to(at::kDouble)
                                   : labels[g];
    const MomentEstimator est = group.type == GroupType::multiclass ? options_.multiclass_moments()
                                                                    : options_.binary_moments();
    const at::Tensor noise = g < noise_.size() ? noise_[g] : at::Tensor();
    const bool regression = group.type == GroupType::regression;
    GradMoments m = gradient_moments(group, ga.posterior, h, y, est, mopts, gens[g],
                                     regression ? noise : at::Tensor());
    if (noise.defined() && !regression) {
      // The likelihood tempered by the task's mean loss: g / tau, Var / tau^2.
      const at::Tensor tau = noise.view({1, -1, 1});
      m.mean = m.mean / tau;
      m.var = m.var / (tau * tau);
    }
    moment_jitter[g] = m.jitter;
    ga.grad_mean = m.mean;
    ga.raw_var = m.var;
    ga.grad_var = tempered_variance(m.var, options_.s(group));
  });
  stats_.batch_shift = shift;
  std::vector<at::Tensor> means, vars, raw;
  for (size_t g = 0; g < groups_.size(); ++g) {
    note_jitter(out.groups[g].posterior.jitter, "batch precision");
    note_jitter(moment_jitter[g], "rb estimator's logit covariance");
    means.push_back(out.groups[g].grad_mean);
    vars.push_back(out.groups[g].grad_var);
    raw.push_back(out.groups[g].raw_var);
  }
  switch (options_.weighting()) {
    case Weighting::precision: out.dL_dh = bayesagg::aggregate(means, vars); break;
    case Weighting::task:
      out.dL_dh = aggregate_task_precision(means, vars, tensor_reducer_);
      break;
    case Weighting::snr: out.dL_dh = aggregate_snr(means, raw); break;
    case Weighting::family: {
      std::vector<int64_t> family;
      for (size_t g = 0; g < groups_.size(); ++g) {
        for (int64_t t = 0; t < means[g].size(1); ++t) {
          family.push_back(static_cast<int64_t>(groups_[g].type));
        }
      }
      out.dL_dh = aggregate_family_precision(means, vars, family, tensor_reducer_);
      break;
    }
  }
  // Divided by the local rows above; the processes' shares sum to the whole batch's gradient.
  if (out.batch_size != h.size(0)) {
    out.dL_dh.mul_(static_cast<double>(h.size(0)) / static_cast<double>(out.batch_size));
  }
  if (options_.scale() == GradientScale::sum) {
    int64_t tasks = 0;
    for (const auto& m : means) tasks += m.size(1);
    out.dL_dh.mul_(static_cast<double>(tasks));
  }
  return out;
}

void BayesAgg::start_epoch_posteriors(const std::vector<Head>& heads) {
  at::NoGradGuard no_grad;
  const bool running = options_.refresh() == PosteriorRefresh::running;
  // After their start, running statistics already summarise the last epoch's worth of batches.
  const bool from_running = running && !running_.empty();
  if (previous_.size() == 0 && !from_running) {
    TORCH_WARN("BayesAgg: no features were collected in a previous epoch; the first epoch's "
               "full-data posteriors are the priors N(0, gamma I). Use at least one "
               "linear-scalarisation warm-up epoch to avoid this.");
  }
  if (from_running) {
    full_ = full_data_posteriors(running_, heads);
  } else {
    auto st = statistics(previous_.features(), previous_.labels(), heads);
    if (reducer_) {
      reducer_(st);
    } else if (tensor_reducer_) {
      int64_t rows = previous_.size();
      reduce_statistics(st, rows, "BayesAgg-MTL's full-data statistics");
    }
    full_ = full_data_posteriors(st, heads, previous_.features(), previous_.labels());
    if (running) running_ = st;
  }
  estimate_noise(heads);
}

void BayesAgg::estimate_noise(const std::vector<Head>& heads) {
  noise_.assign(groups_.size(), at::Tensor());
  stats_.noise.assign(groups_.size(), 1.0);
  if (options_.noise() == ObservationNoise::fixed || previous_.size() == 0) return;
  const Labels labels = previous_.labels();
  if (tensor_reducer_) {
    // The whole epoch's mean losses: the shards' sums and counts, summed, then floored.
    const auto rows = static_cast<double>(previous_.size());
    std::vector<at::Tensor> sums;
    for (size_t g = 0; g < groups_.size(); ++g) {
      sums.push_back(
          (task_noise(groups_[g], previous_.features(), labels[g], heads[g], 1e-300) * rows)
              .contiguous());
    }
    at::Tensor count = at::full({1}, rows, at::kDouble);
    sums.push_back(count);
    tensor_reducer_(sums, "BayesAgg-MTL's noise estimates");
    const double total = count.item<double>();
    for (size_t g = 0; g < groups_.size(); ++g) noise_[g] = (sums[g] / total).clamp_min(kTaskNoiseFloor);
  } else {
    for (size_t g = 0; g < groups_.size(); ++g) {
      noise_[g] = task_noise(groups_[g], previous_.features(), labels[g], heads[g]);
    }
  }
  if (options_.noise() == ObservationNoise::normalised) noise_ = normalise_per_loss(groups_, noise_);
  if (options_.noise() == ObservationNoise::balanced) {
    noise_ = normalise_per_loss(groups_, noise_, /*keep_overall_scale=*/true);
  }
  for (size_t g = 0; g < groups_.size(); ++g) stats_.noise[g] = noise_[g].mean().item<double>();
}

void BayesAgg::set_reducer(TensorReducer reducer) {
  TORCH_CHECK(!reducer || options_.centre() != PosteriorCentre::mode,
              "BayesAgg: centre = mode iterates on the data itself and is not data-parallel; "
              "use centre = newton or head with a reducer (several processes)");
  tensor_reducer_ = std::move(reducer);
}

void BayesAgg::set_process(int64_t rank, int64_t world_size) {
  TORCH_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "BayesAgg::set_process: rank ",
              rank, " of ", world_size, " processes is not a place in a run");
  rank_ = rank;
  world_size_ = world_size;
}

void BayesAgg::gather_for_checkpoint(const TensorGatherer& gather) {
  TORCH_CHECK(gather, "BayesAgg::gather_for_checkpoint needs a gatherer");
  auto gather_store = [&](const EpochStore& local, EpochStore& all, at::Tensor& rows,
                          const char* what) {
    rows = gather(at::full({1}, local.size(), at::kLong), what);
    all = EpochStore();
    const int64_t total = rows.sum().item<int64_t>();
    all.reserve(total, dim_, groups_);
    if (total == 0) return;  // the same on every process: no empty collectives
    const at::Tensor features = gather(local.features().contiguous(), what);
    Labels labels;
    for (const auto& l : local.labels()) labels.push_back(gather(l.contiguous(), what));
    all.append(features, labels);
  };
  gather_store(current_, gathered_.current, gathered_.current_rows,
               "BayesAgg-MTL's features of this epoch");
  gather_store(previous_, gathered_.previous, gathered_.previous_rows,
               "BayesAgg-MTL's features of the previous epoch");
  gathered_.generators =
      gather(generator_.get_state().unsqueeze(0), "BayesAgg-MTL's generator states");
  gathered_.step = stats_.steps;
}

void BayesAgg::reduce_statistics(std::vector<PosteriorStats>& stats, int64_t& rows,
                                 const char* what) const {
  std::vector<at::Tensor> parts;
  std::vector<UpperTriangle> triangles;
  at::Tensor counts = at::empty({static_cast<int64_t>(stats.size()) + 1}, at::kLong);
  for (size_t g = 0; g < stats.size(); ++g) {
    // The curvature is symmetric: its upper triangle carries it in half the bytes.
    triangles.emplace_back(stats[g].curvature.size(-1));
    parts.push_back(upper_triangle(stats[g].curvature, triangles.back()));
    parts.push_back(stats[g].rhs);
    counts[static_cast<int64_t>(g)] = stats[g].count;
  }
  counts[static_cast<int64_t>(stats.size())] = rows;
  parts.push_back(counts);
  tensor_reducer_(parts, what);
  for (size_t g = 0; g < stats.size(); ++g) {
    stats[g].curvature = from_upper_triangle(parts[2 * g], triangles[g]);
    stats[g].count = counts[static_cast<int64_t>(g)].item<int64_t>();
  }
  rows = counts[static_cast<int64_t>(stats.size())].item<int64_t>();
}

void BayesAgg::update_running(const Aggregation& aggregation, int64_t batch) {
  if (options_.refresh() != PosteriorRefresh::running) return;
  at::NoGradGuard no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    PosteriorStats& r = running_[g];
    const PosteriorStats& b = aggregation.groups[g].batch_stats;
    // Decay 1 - B / N keeps the running sum at the size of one epoch (N examples).
    const double n = static_cast<double>(std::max<int64_t>(r.count, batch));
    const double keep = std::max(0.0, 1.0 - static_cast<double>(batch) / n);
    r.curvature.mul_(keep).add_(b.curvature);
    r.rhs.mul_(keep).add_(b.rhs);
    r.count = static_cast<int64_t>(n);
  }
}

void BayesAgg::reserve(int64_t examples_per_epoch) {
  current_.reserve(examples_per_epoch, dim_, groups_);
  previous_.reserve(0, dim_, groups_);
}

void BayesAgg::observe(const at::Tensor& features, const Labels& labels) {
  TORCH_CHECK(features.dim() == 2 && features.size(1) == dim_, "representation must be [B, ",
              dim_, "], got ", features.sizes());
  TORCH_CHECK(labels.size() == groups_.size(), "expected labels for ", groups_.size(),
              " groups, got ", labels.size());
  current_.append(features.detach(), labels);
}

void BayesAgg::end_epoch() {
  std::swap(current_, previous_);
  current_.clear();
  // The next epoch's storage should hold at least as many rows as this one did.
  current_.reserve(previous_.size(), dim_, groups_);
  full_.clear();
}

at::Tensor BayesAgg::backward(const at::Tensor& losses, const std::vector<Head>& heads,
                              const at::Tensor& representation, const Labels& labels) {
  check_batch(representation, labels, heads);
  TORCH_CHECK(representation.requires_grad(),
              "BayesAgg::backward: the representation must be attached to the trunk's graph");
  // 1. Heads: the ordinary gradient of the summed task losses. The same backward pass through the
  // heads also gives the linear-scalarisation gradient of the representation, for a diagnostic.
  std::vector<at::Tensor> params;
  for (const auto& head : heads) {
    for (const auto& p : {head.weight, head.bias}) {
      if (p.defined() && p.requires_grad()) params.push_back(p);
    }
  }
  at::Tensor ls_dh;
  {
    std::vector<at::Tensor> inputs = params;
    inputs.push_back(representation);
    const auto grads = torch::autograd::grad({losses.sum()}, inputs, {}, /*retain_graph=*/true,
                                             /*create_graph=*/false, /*allow_unused=*/true);
    ls_dh = grads.back();
    for (size_t i = 0; i < params.size(); ++i) {
      if (!grads[i].defined()) continue;
      at::Tensor& g = params[i].mutable_grad();
      if (g.defined()) {
        g.add_(grads[i]);
      } else {
        g = grads[i].clone();
      }
    }
  }
  // 2. Full-data posteriors at the first step of the epoch.
  const at::Tensor h = representation.detach();
  if (full_.empty()) start_epoch_posteriors(heads);
  // 3. The trunk: dL/dh.
  const Aggregation agg = aggregate(full_, h, labels, heads);
  update_running(agg, agg.batch_size);
  const at::Tensor dl_dh = agg.dL_dh.to(representation.dtype());
  representation.backward(dl_dh);
  {
    // One host synchronisation for both diagnostics: |dL/dh|, |LS gradient| and their product.
    const at::Tensor ls = ls_dh.defined() ? ls_dh : at::zeros_like(dl_dh);
    const at::Tensor v = at::stack({dl_dh.norm(), ls.norm(), (dl_dh * ls).sum()}).to(at::kDouble);
    const double* x = v.contiguous().data_ptr<double>();
    stats_.dL_dh_norm = x[0];
    stats_.ls_cosine = x[0] * x[1] > 0 ? x[2] / (x[0] * x[1]) : 0.0;
  }
  observe(h, labels);
  ++stats_.steps;
  return dl_dh;
}

}  // namespace bayesagg
