#pragma once
/// The two-objective toy problem of the benchmarks spec (shared/spec/benchmarks.md, "toy"; after
/// CAGrad's and Nash-MTL's toy): theta = (x1, x2), objectives (0.1 L1, L2), five starts, Adam
/// lr 1e-3 for 35 000 steps, optimised by any baseline method through its `Method` interface
/// (theta is the only shared parameter and, for the "-UB" variants, the representation [1, 2];
/// there are no heads). `run_toy` does everything the `bayesagg toy` command needs.

#include "bayesagg/methods/method.h"

#include <ATen/core/Tensor.h>
#include <torch/arg.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace bayesagg {

/// A starting point (x1, x2).
using ToyStart = std::pair<double, double>;

/// Settings of a toy run. Defaults: the spec's.
struct ToyOptions {
  /// Adam steps per start.
  TORCH_ARG(int64_t, steps) = 35000;
  /// Adam learning rate of theta.
  TORCH_ARG(double, lr) = 1e-3;
  /// Record every this many steps (the start, step 0, and the last step are always recorded).
  TORCH_ARG(int64_t, record_every) = 50;
  /// Weight of L1 in the first objective.
  TORCH_ARG(double, scale) = 0.1;
  /// The starting points (x1, x2).
  TORCH_ARG(std::vector<ToyStart>, starts) = {
      {-8.5, 7.5}, {0.0, 0.0}, {9.0, 9.0}, {-7.5, -0.5}, {9.0, -1.0}};
  /// Folder for `trajectories.csv` and `trajectories.svg` (created if missing); empty: no files.
  TORCH_ARG(std::string, out_dir) = "";
  /// Options and seed of the method (a fresh method is built for every start, as in the Nash-MTL
  /// reference toy). Every step counts as one epoch (the problem is deterministic, full batch), so
  /// epoch-based methods (DWA, IGBv2) see per-step loss histories.
  TORCH_ARG(MethodConfig, config) = {};
};

/// One recorded point of a trajectory.
struct ToyPoint {
  /// 1-based index of the start in `ToyOptions::starts`.
  int64_t start = 0;
  /// Adam steps taken (0: the start).
  int64_t step = 0;
  double x1 = 0.0, x2 = 0.0;
  /// The objectives the method optimises: `scale * L1` and `L2`.
  double loss1 = 0.0, loss2 = 0.0;
};

/// What `run_toy` produced.
struct ToyResult {
  std::string method;
  /// Every recorded point, by start then step.
  std::vector<ToyPoint> points;
  /// The last point of every start.
  std::vector<ToyPoint> finals;
  /// Wall-clock seconds of the optimisation.
  double seconds = 0.0;
  /// The files written (empty when `out_dir` is empty).
  std::string csv_path, svg_path;
};

/// The x2 of the Pareto set (x1 in [-7, 7]).
constexpr double kToyParetoX2 = -8.3552;

/// L1 and L2 of the spec at (x1, x2) (unscaled).
std::pair<double, double> toy_losses(double x1, double x2);

/// The objectives `[scale * L1, L2]` of `theta` [2] (attached to theta's graph), written with ATen
/// ops as the reference writes them.
at::Tensor toy_objectives(const at::Tensor& theta, double scale = 0.1);

/// L1, L2 and their exact partial derivatives at (x1, x2), with autograd's conventions at the kinks
/// (the derivative of `clamp_min(u, m)` is 1 where `u >= m`, of `|u|` is `sign(u)`):
/// `{L1, L2, dL1/dx1, dL1/dx2, dL2/dx1, dL2/dx2}`.
std::array<double, 6> toy_losses_and_gradients(double x1, double x2);

/// The objectives of `theta` as the first-order expansion `J (theta - theta_0) + f(theta_0)` at the
/// current point: the same values and the same gradients as `toy_objectives`, in three tensor ops
/// (what `run_toy` hands the methods, which use first-order information only).
at::Tensor toy_objectives_linearised(const at::Tensor& theta, double scale = 0.1);

/// Runs `method` (a name of `method_names()`, except `bayesagg`, which needs task heads) from every
/// start and, when `out_dir` is set, writes `trajectories.csv` (`start,step,x1,x2,loss1,loss2`)
/// and `trajectories.svg` atomically. Fails, naming the start and step, when the method's gradient
/// becomes non-finite (e.g. methods that take the logarithm of the losses, which are negative in
/// part of the toy's domain).
ToyResult run_toy(const std::string& method, const ToyOptions& options = {});

/// `trajectories.csv` of a result.
std::string toy_csv(const ToyResult& result);

/// The SVG picture: the landscape of L1 + L2 in quantile bands, the Pareto set, the trajectories
/// with their start (open circle) and end (dot) markers.
std::string toy_svg(const ToyResult& result, const ToyOptions& options = {});

}  // namespace bayesagg
