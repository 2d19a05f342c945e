#include "bayesagg/data/paper/paper.h"

#include "bayesagg/data/paper/chestx14.h"
#include "bayesagg/data/paper/cifar_mtl.h"
#include "bayesagg/data/paper/qm9.h"

#include <c10/util/Exception.h>

namespace bayesagg {

const std::vector<PaperInfo>& paper_benchmarks() {
  static const std::vector<PaperInfo> list = {
      {"cifar-mtl", "binary:20", "CIFAR-100 as 20 binary tasks, one per coarse class",
       "CIFAR-100 binary version (cifar-100-binary: train.bin, test.bin)"},
      {"utkface", "regression:1,multiclass:2,multiclass:5",
       "faces: age regression, gender and race classification",
       "UTKFace aligned & cropped faces (UTKFace/: AGE_GENDER_RACE_DATETIME.jpg.chip.jpg)"},
      {"chestx14", "binary:14", "chest X-rays: 14 findings, patient-disjoint split",
       "NIH ChestX-ray14 PNG images (images/) and the split CSVs of data/chestx14"},
      {"qm9", "regression:11", "molecules: 11 quantum-chemical properties",
       "QM9 raw files gdb9.sdf, gdb9.sdf.csv, uncharacterized.txt"},
  };
  return list;
}

std::vector<std::string> paper_benchmark_names() {
  std::vector<std::string> names;
  for (const auto& p : paper_benchmarks()) names.push_back(p.name);
  return names;
}

bool is_paper_benchmark(const std::string& name) {
  for (const auto& p : paper_benchmarks()) {
    if (p.name == name) return true;
  }
  return false;
}

std::vector<std::string> paper_task_names(const std::string& name) {
  if (name == "cifar-mtl") return cifar100_coarse_names();
  if (name == "utkface") return {"age", "gender", "race"};
  if (name == "chestx14") return chestx14_task_names();
  if (name == "qm9") return qm9_task_names();
  TORCH_CHECK(false, "'", name, "' is not a paper benchmark (known: cifar-mtl, utkface, "
              "chestx14, qm9)");
}

bool has_stl_baseline(const std::string& name, const std::string& split) {
  if (name == "utkface") return split == "test" || split == "val";
  if (name == "chestx14" || name == "qm9") return split == "test";
  return false;
}

StlBaseline stl_baseline(const std::string& name, const std::string& split) {
  TORCH_CHECK(has_stl_baseline(name, split), "no published STL numbers for '", name, "' on ",
              split, " (the spec publishes them for utkface test/val, chestx14 test, qm9 test)");
  StlBaseline b;
  b.benchmark = name;
  b.split = split;
  if (name == "utkface") {
    b.metrics = {"age_mse", "gender_accuracy", "race_accuracy"};
    b.higher_is_better = {false, true, true};
    b.values = split == "test" ? std::vector<double>{0.1400, 0.9232, 0.8242}
                               : std::vector<double>{0.1276, 0.9197, 0.8456};
    b.units = "age MSE on the standardised age; accuracies in [0, 1]";
  } else if (name == "chestx14") {
    for (const auto& t : chestx14_task_names()) b.metrics.push_back(t + "_auc");
    b.higher_is_better.assign(14, true);
    b.values = {0.7543, 0.8615, 0.7132, 0.8212, 0.8224, 0.6333, 0.7357,
                0.7647, 0.6830, 0.6208, 0.5894, 0.6389, 0.5710, 0.7701};
    b.units = "per-task ROC AUC";
  } else {
    for (const auto& t : qm9_task_names()) b.metrics.push_back(t + "_mae");
    b.higher_is_better.assign(11, false);
    b.values = {0.0671, 0.1814, 60.576, 53.915, 0.5027, 4.539,
                58.838, 64.244, 63.852, 66.223, 0.07212};
    b.units = "MAE in the units of qm9_report_units(): meV for homo, lumo, zpve, u0, u298, h298, "
              "g298";
  }
  return b;
}

bool paper_benchmark_built(const std::string& name) {
  if (name == "utkface" || name == "chestx14") return BAYESAGG_WITH_IMAGES;
  if (name == "qm9") return BAYESAGG_WITH_QM9;
  return true;
}

void check_paper_benchmark_built(const std::string& name) {
  if (paper_benchmark_built(name)) return;
  const bool qm9 = name == "qm9";
  TORCH_CHECK(false, "--benchmark ", name, ": this bayesagg was built without ",
              qm9 ? "RDKit" : "libpng and libjpeg", "; install ",
              qm9 ? "librdkit-dev libboost-dev" : "libpng-dev libjpeg-dev",
              " (apt-get install, or scripts/setup.sh) and rebuild (cmake -S . -B build -D",
              qm9 ? "BAYESAGG_WITH_QM9" : "BAYESAGG_WITH_IMAGES",
              "=ON && cmake --build build)");
}

const std::vector<PublishedDeltaM>& published_delta_m() {
  static const std::vector<PublishedDeltaM> list = {
      {"utkface", "bayesagg", -2.23}, {"qm9", "ls", 177.6},      {"qm9", "nash-mtl", 62.0},
      {"qm9", "famo", 58.5},          {"qm9", "bayesagg", 53.7},
  };
  return list;
}

}  // namespace bayesagg
