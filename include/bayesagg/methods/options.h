#pragma once
/// Options of the baseline multi-task methods (the loss weightings and the gradient aggregators).
///
/// Every default is the one of the method's paper or, where the paper leaves it open, of the
/// reference implementation named in the method's doc comment (aggregators.h, weightings.h); the
/// table in docs/methods.md lists them all.

#include <torch/arg.h>

#include <cstdint>

namespace bayesagg {

/// Tolerances of the small dense solvers (methods/small_qp.h) that aggregators use.
struct SolverOptions {
  /// Relative tolerance of the optimality (KKT / Frank-Wolfe gap / residual) check.
  TORCH_ARG(double, tolerance) = 1e-10;
  /// Iteration cap; a solve that reaches it is reported as not converged.
  TORCH_ARG(int64_t, max_iterations) = 500;
};

/// MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the gradients.
struct MgdaOptions {
  /// Multiply the min-norm weights (which sum to 1) by the number of tasks, as the Nash-MTL
  /// reference code (`sol * n_tasks`) does, so that the step compares to the sum of losses.
  TORCH_ARG(bool, scale_by_tasks) = true;
  TORCH_ARG(SolverOptions, solver) = {};
};

/// PCGrad (Yu et al., NeurIPS 2020).
struct PcGradOptions {
  /// Average instead of sum the projected gradients (the reference's `reduction`).
  TORCH_ARG(bool, mean) = false;
};

/// GradDrop (Chen et al., NeurIPS 2020).
struct GradDropOptions {
  /// Leak: the fraction of every gradient that is always kept (the paper's default 0).
  TORCH_ARG(double, leak) = 0.0;
};

/// GradVac (Wang et al., ICLR 2021).
struct GradVacOptions {
  /// EMA decay of the target cosine similarities (the paper's beta = 1e-2).
  TORCH_ARG(double, beta) = 1e-2;
};

/// CAGrad (Liu et al., NeurIPS 2021).
struct CaGradOptions {
  /// Radius of the ball around the average gradient, relative to its norm.
  TORCH_ARG(double, c) = 0.4;
  /// 0: no rescaling; 1: divide by 1 + c^2 (the reference's default); 2: divide by 1 + c.
  TORCH_ARG(int64_t, rescale) = 1;
  /// Multiply the direction by the number of tasks (the reference's `overwrite_grad`, "to match
  /// the sum loss").
  TORCH_ARG(bool, scale_by_tasks) = true;
  /// Smoothing inside the square root of the dual objective (the reference's 1e-8).
  TORCH_ARG(double, eps) = 1e-8;
  TORCH_ARG(SolverOptions, solver) = SolverOptions().tolerance(1e-9);
};

/// IMTL-G (Liu et al., ICLR 2021).
struct ImtlGOptions {
  /// Reciprocal condition number below which the (T-1)x(T-1) system counts as singular (it is
  /// then solved by pseudo-inverse, and the failure is counted).
  TORCH_ARG(double, singular_rcond) = 1e-12;
};

/// Nash-MTL (Navon et al., ICML 2022).
struct NashMtlOptions {
  /// Solve the bargaining problem every this many steps, reusing the weights in between.
  TORCH_ARG(int64_t, update_weights_every) = 1;
  /// Clip the norm of the shared parameters' aggregated gradient to this (0: no clipping).
  TORCH_ARG(double, max_norm) = 1.0;
  /// Newton's method on M a = 1/a, M = G G^T / ||G G^T||_F: stop when
  /// max_t |a_t (M a)_t - 1| <= tolerance (a relative error of the optimality condition; with
  /// nearly dependent gradients rounding floors it around 1e-10).
  TORCH_ARG(SolverOptions, solver) = SolverOptions().tolerance(1e-8).max_iterations(100);
};

/// UPGrad (Quinton & Rey, 2024, "Jacobian descent for multi-objective optimization").
struct UpGradOptions {
  /// Below this trace the Gramian counts as zero (TorchJD's `norm_eps`).
  TORCH_ARG(double, norm_eps) = 1e-4;
  /// Added to the diagonal of the trace-normalised Gramian (TorchJD's `reg_eps`).
  TORCH_ARG(double, reg_eps) = 1e-4;
  TORCH_ARG(SolverOptions, solver) = {};
};

/// How Aligned-MTL scales the aligned (orthogonal) gradients.
enum class AlignedScale { min, median, rmse };

/// Aligned-MTL (Senushkin et al., CVPR 2023).
struct AlignedMtlOptions {
  /// The scale of the aligned gradients: the smallest singular value (the paper's default).
  TORCH_ARG(AlignedScale, scale) = AlignedScale::min;
};

/// DB-MTL (Lin et al., 2023, "Dual-balancing for multi-task learning").
struct DbMtlOptions {
  /// EMA of the log-loss gradients: buffer = g + beta / step^beta_sigma * (buffer - g).
  TORCH_ARG(double, beta) = 0.9;
  TORCH_ARG(double, beta_sigma) = 0.5;
};

/// Which gradient the task heads get from a gradient method.
enum class HeadGradient {
  sum,       ///< the ordinary gradient of sum_t L_t (MGDA's Algorithm 2: heads use their own losses)
  weighted,  ///< the gradient of sum_t w_t L_t with the aggregator's weights, when it has any
};

/// Options of the gradient methods (mgda, mgdaub, pcgrad, graddrop, gradvac, cagrad, imtlg,
/// nashmtl, upgrad, alignedmtl, alignedmtlub, dbmtl).
struct GradientOptions {
  TORCH_ARG(HeadGradient, heads) = HeadGradient::sum;
  /// GradDrop on the representation (the paper's and the reference codes' placement: a layer of
  /// activations) or on the shared parameters.
  TORCH_ARG(bool, graddrop_on_representation) = true;
  TORCH_ARG(MgdaOptions, mgda) = {};
  TORCH_ARG(PcGradOptions, pcgrad) = {};
  TORCH_ARG(GradDropOptions, graddrop) = {};
  TORCH_ARG(GradVacOptions, gradvac) = {};
  TORCH_ARG(CaGradOptions, cagrad) = {};
  TORCH_ARG(ImtlGOptions, imtlg) = {};
  TORCH_ARG(NashMtlOptions, nashmtl) = {};
  TORCH_ARG(UpGradOptions, upgrad) = {};
  TORCH_ARG(AlignedMtlOptions, alignedmtl) = {};
  TORCH_ARG(DbMtlOptions, dbmtl) = {};
};

/// RLW (Lin et al., TMLR 2022): weights softmax(z), z ~ N(0, I), drawn every step.
struct RlwOptions {
  /// Multiply the weights (which sum to 1) by the number of tasks (IGB4MTL's variant).
  TORCH_ARG(bool, scale_by_tasks) = false;
};

/// DWA (Liu et al., CVPR 2019).
struct DwaOptions {
  /// Softmax temperature T.
  TORCH_ARG(double, temperature) = 2.0;
};

/// UW (Kendall et al., CVPR 2018): learnable log-variances s_t, objective sum_t (e^{-s_t} L_t + s_t) / 2.
struct UwOptions {
  /// Adam learning rate of the log-variances (the Nash-MTL / IGB4MTL codes' `method-params-lr`).
  TORCH_ARG(double, lr) = 0.025;
};

/// FAMO (Liu et al., NeurIPS 2023).
struct FamoOptions {
  /// Adam learning rate and weight decay of the task logits.
  TORCH_ARG(double, lr) = 0.025;
  TORCH_ARG(double, weight_decay) = 1e-3;
  /// Lower bound of the losses (`min_losses`; 0 for non-negative losses).
  TORCH_ARG(double, min_loss) = 0.0;
};

/// IGBv2 (Dai et al., UAI 2023, "Improvable gap balancing for multi-task learning"): soft
/// actor-critic weights on log-losses. Defaults of the authors' IGB4MTL code.
struct IgbV2Options {
  /// The mean training losses of this epoch (0-based) are the base losses of the rewards.
  TORCH_ARG(int64_t, base_epoch) = 1;
  /// Epochs of random (RLW, scaled by T) weights before the agent chooses the weights.
  TORCH_ARG(int64_t, start_epoch) = 5;
  /// The agent trains from this epoch on, every `update_every` steps.
  TORCH_ARG(int64_t, update_after) = 3;
  TORCH_ARG(int64_t, update_every) = 50;
  /// Reward multiplier (the reference sets it to initial lr / current lr each epoch; a method
  /// does not see the learning rate, so it is a constant here).
  TORCH_ARG(double, reward_scale) = 1.0;
  TORCH_ARG(double, sac_lr) = 3e-4;
  TORCH_ARG(int64_t, buffer_size) = 10000;
  TORCH_ARG(int64_t, batch_size) = 256;
  TORCH_ARG(int64_t, hidden) = 128;
  TORCH_ARG(double, gamma) = 0.99;
  TORCH_ARG(double, tau) = 0.005;
  TORCH_ARG(double, alpha) = 0.2;
};

/// Options of the loss-weighting methods (si, rlw, dwa, uw, famo, igbv2).
struct WeightingOptions {
  TORCH_ARG(RlwOptions, rlw) = {};
  TORCH_ARG(DwaOptions, dwa) = {};
  TORCH_ARG(UwOptions, uw) = {};
  TORCH_ARG(FamoOptions, famo) = {};
  TORCH_ARG(IgbV2Options, igbv2) = {};
};

}  // namespace bayesagg
