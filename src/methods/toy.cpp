#include "bayesagg/methods/toy.h"

#include "bayesagg/core/files.h"
#include "bayesagg/methods/baselines.h"
#include "bayesagg/methods/small_adam.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <sstream>

namespace bayesagg {
namespace {

constexpr double kLower = 5e-6;

std::string num(double v, int precision = 10) {
  std::ostringstream os;
  os << std::setprecision(precision) << v;
  return os.str();
}

}  // namespace

std::pair<double, double> toy_losses(double x1, double x2) {
  const double f1 = std::log(std::max(std::abs(0.5 * (-x1 - 7.0) - std::tanh(-x2)), kLower)) + 6.0;
  const double f2 = std::log(std::max(std::abs(0.5 * (-x1 + 3.0) + std::tanh(-x2) + 2.0), kLower)) + 6.0;
  const double g1 = ((-x1 + 7.0) * (-x1 + 7.0) + 0.1 * (-x2 - 8.0) * (-x2 - 8.0)) / 10.0 - 20.0;
  const double g2 = ((-x1 - 7.0) * (-x1 - 7.0) + 0.1 * (-x2 - 8.0) * (-x2 - 8.0)) / 10.0 - 20.0;
  const double c1 = std::max(std::tanh(0.5 * x2), 0.0);
  const double c2 = std::max(std::tanh(-0.5 * x2), 0.0);
  return {c1 * f1 + c2 * g1, c1 * f2 + c2 * g2};
}

at::Tensor toy_objectives(const at::Tensor& theta, double scale) {
  TORCH_CHECK(theta.numel() == 2, "toy: theta must have 2 values, got ", theta.numel());
  const at::Tensor x1 = theta.reshape({2})[0], x2 = theta.reshape({2})[1];
  const at::Tensor f1 =
      at::log(at::clamp_min(at::abs(0.5 * (-x1 - 7.0) - at::tanh(-x2)), kLower)) + 6.0;
  const at::Tensor f2 =
      at::log(at::clamp_min(at::abs(0.5 * (-x1 + 3.0) + at::tanh(-x2) + 2.0), kLower)) + 6.0;
  const at::Tensor g1 = ((-x1 + 7.0).pow(2) + 0.1 * (-x2 - 8.0).pow(2)) / 10.0 - 20.0;
  const at::Tensor g2 = ((-x1 - 7.0).pow(2) + 0.1 * (-x2 - 8.0).pow(2)) / 10.0 - 20.0;
  const at::Tensor c1 = at::clamp_min(at::tanh(0.5 * x2), 0.0);
  const at::Tensor c2 = at::clamp_min(at::tanh(-0.5 * x2), 0.0);
  return at::stack({scale * (c1 * f1 + c2 * g1), c1 * f2 + c2 * g2});
}

std::array<double, 6> toy_losses_and_gradients(double x1, double x2) {
  // f = log(clamp_min(|u|, lower)) + 6.
  const auto logabs = [](double u, double du_dx1, double du_dx2, double& d1, double& d2) {
    const double a = std::abs(u);
    const double m = std::max(a, kLower);
    const double da = a >= kLower ? (u > 0 ? 1.0 : (u < 0 ? -1.0 : 0.0)) / m : 0.0;
    d1 = da * du_dx1;
    d2 = da * du_dx2;
    return std::log(m) + 6.0;
  };
  const double th = std::tanh(-x2), dth = -(1.0 - th * th);  // d tanh(-x2) / dx2
  double f1_1, f1_2, f2_1, f2_2;
  const double f1 = logabs(0.5 * (-x1 - 7.0) - th, -0.5, -dth, f1_1, f1_2);
  const double f2 = logabs(0.5 * (-x1 + 3.0) + th + 2.0, -0.5, dth, f2_1, f2_2);
  const double g1 = ((-x1 + 7.0) * (-x1 + 7.0) + 0.1 * (-x2 - 8.0) * (-x2 - 8.0)) / 10.0 - 20.0;
  const double g2 = ((-x1 - 7.0) * (-x1 - 7.0) + 0.1 * (-x2 - 8.0) * (-x2 - 8.0)) / 10.0 - 20.0;
  const double g1_1 = -2.0 * (-x1 + 7.0) / 10.0, g2_1 = -2.0 * (-x1 - 7.0) / 10.0;
  const double g_2 = -0.2 * (-x2 - 8.0) / 10.0;  // the same for g1 and g2
  const double t1 = std::tanh(0.5 * x2), t2 = std::tanh(-0.5 * x2);
  const double c1 = std::max(t1, 0.0), c2 = std::max(t2, 0.0);
  const double c1_2 = t1 >= 0.0 ? 0.5 * (1.0 - t1 * t1) : 0.0;
  const double c2_2 = t2 >= 0.0 ? -0.5 * (1.0 - t2 * t2) : 0.0;
  return {c1 * f1 + c2 * g1,
          c1 * f2 + c2 * g2,
          c1 * f1_1 + c2 * g1_1,
          c1_2 * f1 + c1 * f1_2 + c2_2 * g1 + c2 * g_2,
          c1 * f2_1 + c2 * g2_1,
          c1_2 * f2 + c1 * f2_2 + c2_2 * g2 + c2 * g_2};
}

at::Tensor toy_objectives_linearised(const at::Tensor& theta, double scale) {
  TORCH_CHECK(theta.numel() == 2 && theta.scalar_type() == at::kDouble,
              "toy: theta must be 2 float64 values");
  const at::Tensor t0 = theta.detach().contiguous();
  const double x1 = t0.data_ptr<double>()[0], x2 = t0.data_ptr<double>()[1];
  const auto v = toy_losses_and_gradients(x1, x2);
  const at::Tensor J = at::tensor(std::vector<double>{scale * v[2], scale * v[3], v[4], v[5]}, at::kDouble)
                           .reshape({2, 2});
  const at::Tensor offset = at::tensor(
      std::vector<double>{scale * v[0] - scale * (v[2] * x1 + v[3] * x2), v[1] - (v[4] * x1 + v[5] * x2)},
      at::kDouble);
  return at::addmv(offset, J, theta.reshape({2}));
}

ToyResult run_toy(const std::string& method, const ToyOptions& options) {
  TORCH_CHECK(method != "bayesagg",
              "toy: BayesAgg-MTL needs task heads and labels; the toy has only the two objectives");
  TORCH_CHECK(options.steps() >= 1 && options.record_every() >= 1 && options.lr() > 0.0,
              "toy: steps and record_every must be >= 1 and lr > 0");
  TORCH_CHECK(!options.starts().empty(), "toy: no starting points");
  const std::vector<TaskGroup> groups{TaskGroup(GroupType::regression, 1, "loss1"),
                                      TaskGroup(GroupType::regression, 1, "loss2")};
  ToyResult result;
  result.method = method;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t s = 0; s < options.starts().size(); ++s) {
    const int64_t start = static_cast<int64_t>(s) + 1;
    std::unique_ptr<Method> m = make_method(method, groups, 2, options.config());
    const bool wants_losses_after = m->needs().count(Need::losses_after_step) > 0;
    const auto [sx, sy] = options.starts()[s];
    at::Tensor theta = at::tensor(std::vector<double>{sx, sy}, at::kDouble).requires_grad_();
    SmallAdam adam(options.lr());
    const auto record = [&](int64_t step) {
      const double x1 = theta[0].item<double>(), x2 = theta[1].item<double>();
      const auto [l1, l2] = toy_losses(x1, x2);
      result.points.push_back({start, step, x1, x2, options.scale() * l1, l2});
    };
    record(0);
    for (int64_t k = 0; k < options.steps(); ++k) {
      theta.mutable_grad() = at::Tensor();
      Step step;
      // The representation is theta itself (as [1, 2]); the objectives are computed from it, so
      // that representation-level methods reach theta through it.
      step.representation = theta.view({1, 2});
      step.losses = toy_objectives_linearised(step.representation, options.scale());
      step.shared_parameters = {theta};
      step.epoch = k;
      step.step = 0;
      m->on_epoch_start(k);
      try {
        m->backward(step);
      } catch (const c10::Error& e) {
        const std::string msg = e.msg();
        TORCH_CHECK(false, "toy: ", method, " failed at start ", start, " (", sx, ", ", sy,
                    "), step ", k + 1, ", theta (", theta[0].item<double>(), ", ",
                    theta[1].item<double>(), "): ", msg,
                    msg.find("logarithm") != std::string::npos
                        ? " (the toy's losses are negative in part of its domain)"
                        : "");
      }
      const at::Tensor g = theta.grad();
      TORCH_CHECK(g.defined(), "toy: ", method, " left no gradient on theta");
      const at::Tensor gc = g.to(at::kDouble).contiguous();
      if (!std::isfinite(gc.data_ptr<double>()[0]) || !std::isfinite(gc.data_ptr<double>()[1])) {
        const at::Tensor l = step.losses.detach();
        TORCH_CHECK(false, "toy: ", method, " produced a non-finite gradient at start ", start, " (",
                    sx, ", ", sy, "), step ", k + 1, ", theta (", theta[0].item<double>(), ", ",
                    theta[1].item<double>(), "), objectives (", l[0].item<double>(), ", ",
                    l[1].item<double>(), ")",
                    (l.min().item<double>() <= 0.0 ? " (the toy's losses are not positive here)" : ""));
      }
      adam.step({theta}, {g});
      m->on_epoch_end(k);
      if (wants_losses_after) {
        const auto v = toy_losses_and_gradients(theta[0].item<double>(), theta[1].item<double>());
        m->after_step(
            at::tensor(std::vector<double>{options.scale() * v[0], v[1]}, at::kDouble));
      }
      if ((k + 1) % options.record_every() == 0 || k + 1 == options.steps()) record(k + 1);
    }
    result.finals.push_back(result.points.back());
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!options.out_dir().empty()) {
    make_directories(options.out_dir());
    const std::filesystem::path dir(options.out_dir());
    result.csv_path = (dir / "trajectories.csv").string();
    result.svg_path = (dir / "trajectories.svg").string();
    write_file_atomic(result.csv_path, toy_csv(result));
    write_file_atomic(result.svg_path, toy_svg(result, options));
  }
  return result;
}

std::string toy_csv(const ToyResult& result) {
  std::ostringstream os;
  os << "start,step,x1,x2,loss1,loss2\n";
  for (const auto& p : result.points) {
    os << p.start << ',' << p.step << ',' << num(p.x1) << ',' << num(p.x2) << ',' << num(p.loss1)
       << ',' << num(p.loss2) << '\n';
  }
  return os.str();
}

std::string toy_svg(const ToyResult& result, const ToyOptions& options) {
  // Domain: [-10, 10]^2, grown to hold every trajectory.
  double xmin = -10, xmax = 10, ymin = -10, ymax = 10;
  for (const auto& p : result.points) {
    if (!std::isfinite(p.x1) || !std::isfinite(p.x2)) continue;
    xmin = std::min(xmin, p.x1 - 0.5);
    xmax = std::max(xmax, p.x1 + 0.5);
    ymin = std::min(ymin, p.x2 - 0.5);
    ymax = std::max(ymax, p.x2 + 0.5);
  }
  const double left = 64, top = 48, size = 560, legend_w = 230;
  const double width = left + size + 24 + legend_w, height = top + size + 56;
  const auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * size; };
  const auto py = [&](double y) { return top + (ymax - y) / (ymax - ymin) * size; };

  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" viewBox=\"0 0 " << width << ' ' << height
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";

  // Landscape: L1 + L2 on a grid, in quantile bands (contour-like filled levels).
  const int n = 100, levels = 14;
  std::vector<double> v(static_cast<size_t>(n * n));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      const double x = xmin + (j + 0.5) / n * (xmax - xmin);
      const double y = ymax - (i + 0.5) / n * (ymax - ymin);
      const auto [l1, l2] = toy_losses(x, y);
      v[static_cast<size_t>(i * n + j)] = l1 + l2;
    }
  }
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  std::vector<double> cuts;
  for (int k = 1; k < levels; ++k) cuts.push_back(sorted[static_cast<size_t>(k * n * n / levels)]);
  const auto level_of = [&](double x) {
    return static_cast<int>(std::upper_bound(cuts.begin(), cuts.end(), x) - cuts.begin());
  };
  const auto color = [&](int level) {
    // From a pale yellow (low) to a muted blue (high).
    const double t = static_cast<double>(level) / (levels - 1);
    const int r = static_cast<int>(std::lround(253 - t * (253 - 92)));
    const int g = static_cast<int>(std::lround(246 - t * (246 - 120)));
    const int b = static_cast<int>(std::lround(214 - t * (214 - 168)));
    char buf[8];
    std::snprintf(buf, sizeof(buf), "#%02x%02x%02x", r, g, b);
    return std::string(buf);
  };
  const double cw = size / n, ch = size / n;
  os << "<g shape-rendering=\"crispEdges\">\n";
  for (int i = 0; i < n; ++i) {
    int j = 0;
    while (j < n) {
      const int level = level_of(v[static_cast<size_t>(i * n + j)]);
      int k = j + 1;
      while (k < n && level_of(v[static_cast<size_t>(i * n + k)]) == level) ++k;
      os << "<rect x=\"" << left + j * cw << "\" y=\"" << top + i * ch << "\" width=\""
         << (k - j) * cw + 0.3 << "\" height=\"" << ch + 0.3 << "\" fill=\"" << color(level)
         << "\"/>\n";
      j = k;
    }
  }
  os << "</g>\n";

  // Frame, ticks, labels.
  os << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << size << "\" height=\"" << size
     << "\" fill=\"none\" stroke=\"#333\"/>\n";
  for (double t = std::ceil(xmin / 5) * 5; t <= xmax + 1e-9; t += 5) {
    os << "<line x1=\"" << px(t) << "\" y1=\"" << top + size << "\" x2=\"" << px(t) << "\" y2=\""
       << top + size + 5 << "\" stroke=\"#333\"/>";
    os << "<text x=\"" << px(t) << "\" y=\"" << top + size + 18 << "\" text-anchor=\"middle\">"
       << num(t, 3) << "</text>\n";
  }
  for (double t = std::ceil(ymin / 5) * 5; t <= ymax + 1e-9; t += 5) {
    os << "<line x1=\"" << left - 5 << "\" y1=\"" << py(t) << "\" x2=\"" << left << "\" y2=\""
       << py(t) << "\" stroke=\"#333\"/>";
    os << "<text x=\"" << left - 8 << "\" y=\"" << py(t) + 4 << "\" text-anchor=\"end\">"
       << num(t, 3) << "</text>\n";
  }
  os << "<text x=\"" << left + size / 2 << "\" y=\"" << top + size + 40
     << "\" text-anchor=\"middle\" font-size=\"14\">x1</text>\n";
  os << "<text x=\"" << left - 40 << "\" y=\"" << top + size / 2 << "\" text-anchor=\"middle\" "
     << "font-size=\"14\" transform=\"rotate(-90 " << left - 40 << ' ' << top + size / 2
     << ")\">x2</text>\n";
  int64_t steps = 0;
  for (const auto& p : result.points) steps = std::max(steps, p.step);
  os << "<text x=\"" << left + size / 2 << "\" y=\"" << top - 18
     << "\" text-anchor=\"middle\" font-size=\"16\">" << result.method << " on the toy problem ("
     << steps << " Adam steps, objectives " << num(options.scale(), 3) << " L1, L2)</text>\n";

  // Pareto set.
  os << "<line x1=\"" << px(-7) << "\" y1=\"" << py(kToyParetoX2) << "\" x2=\"" << px(7)
     << "\" y2=\"" << py(kToyParetoX2)
     << "\" stroke=\"#111\" stroke-width=\"5\" stroke-opacity=\"0.55\" stroke-linecap=\"round\"/>\n";

  // Trajectories.
  const char* colors[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e",
                          "#8c564b", "#e377c2", "#17becf"};
  std::vector<int64_t> starts;
  for (const auto& p : result.points) {
    if (starts.empty() || starts.back() != p.start) starts.push_back(p.start);
  }
  for (size_t si = 0; si < starts.size(); ++si) {
    const char* c = colors[si % 8];
    std::ostringstream pts;
    pts << std::fixed << std::setprecision(2);
    const ToyPoint* first = nullptr;
    const ToyPoint* last = nullptr;
    for (const auto& p : result.points) {
      if (p.start != starts[si] || !std::isfinite(p.x1) || !std::isfinite(p.x2)) continue;
      if (!first) first = &p;
      last = &p;
      pts << px(p.x1) << ',' << py(p.x2) << ' ';
    }
    if (!first) continue;
    os << "<polyline points=\"" << pts.str() << "\" fill=\"none\" stroke=\"" << c
       << "\" stroke-width=\"2\" stroke-linejoin=\"round\"/>\n";
    os << "<circle cx=\"" << px(first->x1) << "\" cy=\"" << py(first->x2)
       << "\" r=\"6\" fill=\"white\" stroke=\"" << c << "\" stroke-width=\"2.5\"/>\n";
    os << "<circle cx=\"" << px(last->x1) << "\" cy=\"" << py(last->x2) << "\" r=\"4\" fill=\"" << c
       << "\" stroke=\"#111\" stroke-width=\"0.8\"/>\n";
    // Legend entry.
    const double lx = left + size + 24, ly = top + 16 + 40 * static_cast<double>(si);
    os << "<circle cx=\"" << lx + 6 << "\" cy=\"" << ly - 4 << "\" r=\"5\" fill=\"white\" stroke=\""
       << c << "\" stroke-width=\"2.5\"/>";
    os << "<text x=\"" << lx + 18 << "\" y=\"" << ly << "\">start " << starts[si] << " ("
       << num(first->x1, 3) << ", " << num(first->x2, 3) << ")</text>\n";
    os << "<text x=\"" << lx + 18 << "\" y=\"" << ly + 16 << "\" fill=\"#444\">end ("
       << num(last->x1, 4) << ", " << num(last->x2, 5) << ")</text>\n";
  }
  const double ly = top + 16 + 40 * static_cast<double>(starts.size()) + 10;
  const double lx = left + size + 24;
  os << "<line x1=\"" << lx << "\" y1=\"" << ly - 4 << "\" x2=\"" << lx + 14 << "\" y2=\"" << ly - 4
     << "\" stroke=\"#111\" stroke-width=\"5\" stroke-opacity=\"0.55\"/>";
  os << "<text x=\"" << lx + 18 << "\" y=\"" << ly << "\">Pareto set x2 = " << kToyParetoX2
     << "</text>\n";
  os << "<rect x=\"" << lx << "\" y=\"" << ly + 14 << "\" width=\"14\" height=\"10\" fill=\""
     << color(0) << "\" stroke=\"#999\"/><rect x=\"" << lx << "\" y=\"" << ly + 26
     << "\" width=\"14\" height=\"10\" fill=\"" << color(levels - 1) << "\" stroke=\"#999\"/>";
  os << "<text x=\"" << lx + 18 << "\" y=\"" << ly + 29 << "\">L1 + L2 (" << levels
     << " quantile bands)</text>\n";
  os << "</svg>\n";
  return os.str();
}

}  // namespace bayesagg
