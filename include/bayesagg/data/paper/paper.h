#pragma once
/// The paper benchmarks (spec: benchmarks.md, "Paper benchmarks"): data sets the user downloads,
/// read from their original distribution files. One header per benchmark:
///
/// | name        | header         | builder                   | returns          |
/// |-------------|----------------|---------------------------|------------------|
/// | `cifar-mtl` | cifar_mtl.h    | `make_cifar_mtl_benchmark` | `Benchmark`      |
/// | `utkface`   | utkface.h      | `make_utkface_benchmark`   | `ImageBenchmark` |
/// | `chestx14`  | chestx14.h     | `make_chestx14_benchmark`  | `ImageBenchmark` |
/// | `qm9`       | qm9.h          | `make_qm9_benchmark`       | `QM9Benchmark`   |
///
/// This header lists them and holds the published numbers the spec gives (STL baselines for Δm,
/// and the published Δm of methods), so that runs can be compared with the paper.

#include <string>
#include <vector>

namespace bayesagg {

/// A paper benchmark.
struct PaperInfo {
  std::string name;
  /// Task groups, e.g. `binary:20`.
  std::string groups;
  /// One sentence.
  std::string description;
  /// The distribution the user downloads (official name), as the data folder must hold it.
  std::string distribution;
};

/// cifar-mtl, utkface, chestx14, qm9 (in this order).
const std::vector<PaperInfo>& paper_benchmarks();
std::vector<std::string> paper_benchmark_names();
bool is_paper_benchmark(const std::string& name);
/// The task names of a paper benchmark, in model order (cifar-mtl: the 20 CIFAR-100 superclasses;
/// utkface: age, gender, race; chestx14: the 14 findings; qm9: the 11 targets). Throws on other
/// names.
std::vector<std::string> paper_task_names(const std::string& name);

/// Whether this build reads benchmark `name`: utkface and chestx14 need the CMake option
/// BAYESAGG_WITH_IMAGES (libpng, libjpeg), qm9 needs BAYESAGG_WITH_QM9 (RDKit, Boost); true for
/// every other name.
bool paper_benchmark_built(const std::string& name);
/// Throws, in one line, which packages to install and that bayesagg must be rebuilt, when
/// `paper_benchmark_built(name)` is false.
void check_paper_benchmark_built(const std::string& name);

/// Published single-task-learning results for Δm (spec, "Paper benchmarks").
struct StlBaseline {
  std::string benchmark;
  /// Split the numbers were measured on (`test` or `val`).
  std::string split;
  /// One metric per entry, e.g. `age_mse`, `gender_accuracy`, `Atelectasis_auc`, `homo_mae`.
  std::vector<std::string> metrics;
  /// Whether a higher value is better (δ_k = 1 in Δm).
  std::vector<bool> higher_is_better;
  std::vector<double> values;
  /// Units or scale of the values, one phrase (e.g. "QM9 MAE: meV for ε_HOMO, ...").
  std::string units;
};

/// Whether the spec publishes STL numbers for `name` on `split` (utkface: test and val;
/// chestx14, qm9: test; cifar-mtl: none).
bool has_stl_baseline(const std::string& name, const std::string& split = "test");
/// The published STL numbers; throws when there are none.
StlBaseline stl_baseline(const std::string& name, const std::string& split = "test");

/// A published Δm% (lower is better).
struct PublishedDeltaM {
  std::string benchmark;
  std::string method;
  double delta_m;
};
/// Every Δm the spec publishes: utkface BayesAgg-MTL; qm9 LS, Nash-MTL, FAMO, BayesAgg-MTL.
const std::vector<PublishedDeltaM>& published_delta_m();

}  // namespace bayesagg
