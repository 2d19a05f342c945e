// Checkpointing of BayesAgg's state (kept apart: the archive headers are heavy).
#include "bayesagg/bayes/bayes_agg.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/serialize/archive.h>

namespace bayesagg {
namespace {

at::Tensor scalar(double v) { return at::full({}, v, at::kDouble); }
at::Tensor scalar(int64_t v) { return at::full({}, v, at::kLong); }

at::Tensor read(torch::serialize::InputArchive& a, const std::string& key) {
  at::Tensor t;
  TORCH_CHECK(a.try_read(key, t), "BayesAgg checkpoint has no entry '", key, "'");
  return t;
}

}  // namespace

void EpochStore::save(torch::serialize::OutputArchive& a, const std::string& prefix) const {
  a.write(prefix + ".features", features().clone());
  const Labels ls = labels();
  for (size_t g = 0; g < ls.size(); ++g) {
    a.write(prefix + ".labels." + std::to_string(g), ls[g].clone());
  }
}

void EpochStore::load(torch::serialize::InputArchive& a, const std::string& prefix,
                      const std::vector<TaskGroup>& groups) {
  const at::Tensor f = read(a, prefix + ".features");
  features_ = at::Tensor();
  reserve(f.size(0), f.size(1), groups);
  Labels ls;
  for (size_t g = 0; g < groups.size(); ++g) {
    ls.push_back(read(a, prefix + ".labels." + std::to_string(g)));
  }
  append(f, ls);
}

void BayesAgg::save(torch::serialize::OutputArchive& a) const {
  a.write("bayesagg.dim", scalar(dim_));
  a.write("bayesagg.groups", scalar(static_cast<int64_t>(groups_.size())));
  a.write("bayesagg.generator", generator_.get_state());
  a.write("bayesagg.steps", scalar(stats_.steps));
  a.write("bayesagg.full_posteriors", scalar(stats_.full_posteriors));
  a.write("bayesagg.jitter_events", scalar(stats_.jitter_events));
  a.write("bayesagg.max_jitter", scalar(stats_.max_jitter));
  if (world_size_ > 1) {
    save_gathered(a);
  } else {
    current_.save(a, "bayesagg.current");
    previous_.save(a, "bayesagg.previous");
  }
  a.write("bayesagg.has_full", scalar(static_cast<int64_t>(full_.size())));
  for (size_t g = 0; g < full_.size(); ++g) {
    const std::string p = "bayesagg.full." + std::to_string(g);
    a.write(p + ".mean", full_[g].mean);
    a.write(p + ".precision", full_[g].precision);
    a.write(p + ".cholesky", full_[g].cholesky);
    a.write(p + ".jitter", scalar(full_[g].jitter));
  }
  a.write("bayesagg.has_running", scalar(static_cast<int64_t>(running_.size())));
  for (size_t g = 0; g < running_.size(); ++g) {
    const std::string p = "bayesagg.running." + std::to_string(g);
    a.write(p + ".curvature", running_[g].curvature);
    a.write(p + ".rhs", running_[g].rhs);
    a.write(p + ".count", scalar(running_[g].count));
  }
  for (size_t g = 0; g < noise_.size(); ++g) {
    if (noise_[g].defined()) a.write("bayesagg.noise." + std::to_string(g), noise_[g]);
  }
}

void BayesAgg::load(torch::serialize::InputArchive& a) {
  const int64_t dim = read(a, "bayesagg.dim").item<int64_t>();
  const int64_t ng = read(a, "bayesagg.groups").item<int64_t>();
  TORCH_CHECK(dim == dim_ && ng == static_cast<int64_t>(groups_.size()),
              "BayesAgg checkpoint is for dim ", dim, " and ", ng, " groups, but this method has dim ",
              dim_, " and ", groups_.size(), " groups");
  generator_.set_state(read(a, "bayesagg.generator"));
  stats_.steps = read(a, "bayesagg.steps").item<int64_t>();
  stats_.full_posteriors = read(a, "bayesagg.full_posteriors").item<int64_t>();
  stats_.jitter_events = read(a, "bayesagg.jitter_events").item<int64_t>();
  stats_.max_jitter = read(a, "bayesagg.max_jitter").item<double>();
  at::Tensor written;
  const int64_t processes =
      a.try_read("bayesagg.world_size", written) ? written.item<int64_t>() : 1;
  TORCH_CHECK(processes == world_size_, "BayesAgg checkpoint was written by a run of ", processes,
              " process(es) but this one has ", world_size_,
              "; resume with the same number of processes");
  if (processes > 1) {
    load_own_part(a);
  } else {
    current_.load(a, "bayesagg.current", groups_);
    previous_.load(a, "bayesagg.previous", groups_);
  }
  full_.clear();
  const int64_t nf = read(a, "bayesagg.has_full").item<int64_t>();
  for (int64_t g = 0; g < nf; ++g) {
    const std::string p = "bayesagg.full." + std::to_string(g);
    GaussianPosterior post;
    post.mean = read(a, p + ".mean");
    post.precision = read(a, p + ".precision");
    post.cholesky = read(a, p + ".cholesky");
    post.jitter = read(a, p + ".jitter").item<double>();
    full_.push_back(post);
  }
  // Running statistics and noise estimates (absent from checkpoints of the reference variants).
  running_.clear();
  at::Tensor count;
  const int64_t nr = a.try_read("bayesagg.has_running", count) ? count.item<int64_t>() : 0;
  TORCH_CHECK(nr == 0 || nr == static_cast<int64_t>(groups_.size()),
              "BayesAgg checkpoint has running statistics for ", nr, " groups, expected ",
              groups_.size());
  for (int64_t g = 0; g < nr; ++g) {
    const std::string p = "bayesagg.running." + std::to_string(g);
    PosteriorStats st;
    st.curvature = read(a, p + ".curvature");
    st.rhs = read(a, p + ".rhs");
    st.count = read(a, p + ".count").item<int64_t>();
    running_.push_back(st);
  }
  noise_.assign(groups_.size(), at::Tensor());
  for (size_t g = 0; g < groups_.size(); ++g) {
    a.try_read("bayesagg.noise." + std::to_string(g), noise_[g]);
  }
}

void BayesAgg::save_gathered(torch::serialize::OutputArchive& a) const {
  const GatheredState& g = gathered_;
  TORCH_CHECK(g.step == stats_.steps && g.generators.defined() &&
                  g.generators.size(0) == world_size_ &&
                  g.current_rows[rank_].item<int64_t>() == current_.size() &&
                  g.previous_rows[rank_].item<int64_t>() == previous_.size(),
              "BayesAgg::save on ", world_size_, " processes: call gather_for_checkpoint on "
              "every process after the last step and observation, before saving");
  a.write("bayesagg.world_size", scalar(world_size_));
  g.current.save(a, "bayesagg.current");
  a.write("bayesagg.current.rows", g.current_rows);
  g.previous.save(a, "bayesagg.previous");
  a.write("bayesagg.previous.rows", g.previous_rows);
  a.write("bayesagg.generators", g.generators);
}

void BayesAgg::load_own_part(torch::serialize::InputArchive& a) {
  auto own_rows = [&](const std::string& prefix, EpochStore& store) {
    EpochStore all;
    all.load(a, prefix, groups_);
    const at::Tensor rows = read(a, prefix + ".rows");
    TORCH_CHECK(rows.scalar_type() == at::kLong && rows.dim() == 1 &&
                    rows.size(0) == world_size_ && (rows >= 0).all().item<bool>() &&
                    rows.sum().item<int64_t>() == all.size(),
                "BayesAgg checkpoint: '", prefix, ".rows' does not split its ", all.size(),
                " rows over ", world_size_, " processes");
    const int64_t begin = rows.narrow(0, 0, rank_).sum().item<int64_t>();
    const int64_t n = rows[rank_].item<int64_t>();
    Labels labels;
    for (const auto& l : all.labels()) labels.push_back(l.narrow(0, begin, n));
    store = EpochStore();
    store.reserve(n, dim_, groups_);
    store.append(all.features().narrow(0, begin, n), labels);
  };
  own_rows("bayesagg.current", current_);
  own_rows("bayesagg.previous", previous_);
  const at::Tensor gens = read(a, "bayesagg.generators");
  const at::Tensor mine = generator_.get_state();
  TORCH_CHECK(gens.scalar_type() == mine.scalar_type() && gens.dim() == 2 &&
                  gens.size(0) == world_size_ && gens.size(1) == mine.numel(),
              "BayesAgg checkpoint: 'bayesagg.generators' has shape ", gens.sizes(),
              ", expected [", world_size_, ", ", mine.numel(), "]");
  generator_.set_state(gens[rank_].clone());
}

}  // namespace bayesagg
