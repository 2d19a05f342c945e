// `bayesagg compare`: train several methods over several seeds on one benchmark and write the
// paper-style table (see docs/methods.md, "Comparing methods").
#include "commands.h"
#include "setting_flags.h"

#include "bayesagg/core/files.h"
#include "bayesagg/methods/method.h"
#include "bayesagg/train/compare.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/trainer.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace bayesagg::cli {
namespace {

/// Splits the method list at the commas outside brackets (`bayesagg[a=1,b=2]` is one item).
std::vector<std::string> split_methods(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  int depth = 0;
  for (const char c : text + ",") {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    TORCH_CHECK(depth >= 0 && depth <= 1, "--methods: unbalanced brackets in '", text, "'");
    if (c == ',' && depth == 0) {
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (!item.empty()) out.push_back(item);
      item.clear();
    } else {
      item += c;
    }
  }
  TORCH_CHECK(depth == 0, "--methods: unbalanced brackets in '", text, "'");
  return out;
}

/// Checks the method list: known names (or stl) with valid overrides, no repeats.
std::vector<std::string> parse_methods(const std::string& text) {
  const std::vector<std::string> methods = split_methods(text);
  TORCH_CHECK(!methods.empty(), "--methods: expected a comma-separated list, got '", text, "'");
  auto known = method_names();
  known.push_back("stl");
  for (size_t i = 0; i < methods.size(); ++i) {
    const MethodSpec spec = parse_method_spec(methods[i]);
    TORCH_CHECK(spec.overrides.empty() || spec.name != "stl",
                "--methods: stl takes no overrides, got '", methods[i], "'");
    if (!spec.overrides.empty()) {
      TrainOptions probe;
      apply_setting(probe, "method", methods[i]);  // throws on an unknown key or a bad value
    }
    TORCH_CHECK(std::find(known.begin(), known.end(), spec.name) != known.end(),
                "--methods: unknown method '", spec.name, "' (known: ",
                std::accumulate(known.begin() + 1, known.end(), known.front(),
                                [](std::string a, const std::string& b) { return a + ", " + b; }),
                ")");
    TORCH_CHECK(std::find(methods.begin(), methods.begin() + i, methods[i]) ==
                    methods.begin() + i,
                "--methods: '", methods[i], "' is listed twice");
  }
  return methods;
}

std::string runs_csv(const std::vector<CompareRun>& runs, const std::vector<std::string>& keys) {
  std::ostringstream os;
  os.precision(10);
  os << "method,seed,status,epoch_seconds";
  for (const auto& key : keys) os << "," << key;
  os << "\n";
  for (const auto& r : runs) {
    os << r.method << "," << r.seed << "," << (r.error.empty() ? "ok" : "failed") << ","
       << r.epoch_seconds;
    for (const auto& key : keys) {
      os << ",";
      if (const auto it = r.test.find(key); it != r.test.end()) os << it->second;
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace

Command add_compare(CLI::App& app) {
  struct Args {
    std::unique_ptr<SettingFlags> flags;
    std::string methods, out, config;
    int64_t seeds = 3;
    uint64_t first_seed = 1;
    CLI::Option* config_opt = nullptr;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "compare",
      "Train every method of --methods with --seeds seeds on one benchmark (resumable: finished "
      "runs are reused, stopped ones resumed) and write the paper-style table: per-task test "
      "metrics as mean ± std over seeds, Δm% against single-task learning, mean rank, and time "
      "per epoch relative to LS.");
  sub->add_option("--methods", a->methods,
                  "Comma-separated methods, e.g. stl,ls,nashmtl,bayesagg-reference,bayesagg; a "
                  "method may carry setting overrides, e.g. 'bayesagg[posterior=head,s-reg=0.1]' "
                  "(an ablation row); stl trains one model per task and gives the baselines of Δm")
      ->required()
      ->type_name("LIST");
  sub->add_option("--seeds", a->seeds, "Seeds per method (default: 3)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--first-seed", a->first_seed, "Seeds are first-seed, first-seed + 1, ... (default: 1)");
  sub->add_option("--out", a->out, "Folder of the comparison: <out>/<method>/seed<S> per run, "
                  "table.md, table.csv, runs.csv")
      ->required()
      ->type_name("DIR");
  a->config_opt = sub->add_option("--config", a->config,
                                  "JSON file of training settings (as `bayesagg train --config`); "
                                  "flags override it")
                      ->type_name("FILE");
  a->flags = std::make_unique<SettingFlags>(
      sub, std::set<std::string>{"method", "stl-task", "seed", "out", "overwrite", "nproc",
                                 "dist-timeout"});
  sub->footer("Every other option is a training setting of `bayesagg train` (same defaults). "
              "Without stl in --methods, Δm uses --stl-baseline FILE, or the stored baselines "
              "under the default protocol. Run the same command again to continue a stopped "
              "comparison.");

  return {sub, [a]() {
    TrainOptions base;
    if (a->config_opt->count() > 0) {
      apply_config_json(base, read_file(a->config), "--config '" + a->config + "'");
    }
    a->flags->apply(base);
    base.method("ls").seed(a->first_seed).out("");
    base.validate();
    const std::vector<std::string> methods = parse_methods(a->methods);
    // Embedded benchmarks are built once for every run; paper ones are read by each run (from
    // their caches after the first), and their metric keys come from the finished runs.
    const std::string name = base.benchmark();
    const std::optional<Benchmark> bench = make_embedded_benchmark(base);
    std::vector<std::string> keys;
    if (bench) {
      keys = metric_keys(*bench);
      const auto calibration = calibration_keys(*bench);  // columns apart from Δm and the rank
      keys.insert(keys.end(), calibration.begin(), calibration.end());
    }
    MetricMap baseline;
    std::string baseline_source;
    if (!base.stl_baseline().empty()) {
      baseline = read_stl_baselines(base.stl_baseline());
      baseline_source = base.stl_baseline();
    } else if (bench && is_default_protocol(base)) {
      baseline = stored_stl_baselines(name);
      baseline_source = "the stored baselines of docs/training.md";
    }
    if (!baseline.empty() && bench) check_stl_baselines(*bench, baseline, baseline_source);
    make_directories(a->out);
    const FolderLock lock(a->out, "bayesagg compare");

    const int64_t total = static_cast<int64_t>(methods.size()) * a->seeds;
    std::vector<CompareRun> runs;
    int64_t index = 0;
    const auto write_tables = [&]() {
      if (!bench) {
        // Paper benchmark: the keys of the multi-task runs, and (without stl or a baseline
        // file) the published baselines the trainer used.
        std::set<std::string> seen(keys.begin(), keys.end());
        for (const auto& r : runs) {
          if (r.method == "stl" || !r.error.empty()) continue;
          for (const auto& [key, value] : r.test) {
            if (seen.insert(key).second) keys.push_back(key);
          }
        }
      }
      const CompareTable t =
          make_compare_table(name, keys, methods, runs, baseline, baseline_source);
      const std::filesystem::path out(a->out);
      write_file_atomic((out / "table.md").string(),
                        "# " + name + ": " + std::to_string(a->seeds) + " seed(s)\n\n" +
                            compare_table_markdown(t));
      write_file_atomic((out / "table.csv").string(), compare_table_csv(t));
      write_file_atomic((out / "runs.csv").string(), runs_csv(runs, keys));
      return t;
    };
    for (const auto& m : methods) {
      for (int64_t k = 0; k < a->seeds; ++k) {
        const uint64_t seed = a->first_seed + static_cast<uint64_t>(k);
        TrainOptions o = base;
        o.seed(seed).out((std::filesystem::path(a->out) / method_spec_folder(m) /
                          ("seed" + std::to_string(seed)))
                             .string());
        if (m != "stl") apply_setting(o, "method", m);
        std::cout << "\n##### [" << ++index << "/" << total << "] " << m << ", seed " << seed
                  << " -> " << o.out() << std::endl;
        CompareRun run;
        run.method = m;
        run.seed = seed;
        try {
          if (m == "stl") {
            const SingleTaskResult r =
                train_single_tasks(o, bench ? &*bench : nullptr, &std::cout);
            run.test = r.test;
            run.epoch_seconds = r.epoch_seconds;
          } else {
            RunStatus status = RunStatus::trained;
            const TrainSummary s =
                train_or_reuse(o, bench ? &*bench : nullptr, &std::cout, &status);
            if (baseline.empty() && !s.stl_baseline.empty()) {
              baseline = s.stl_baseline;  // the published baselines of a paper benchmark
              baseline_source = s.stl_source;
            }
            if (status == RunStatus::reused) std::cout << "finished earlier; reused\n";
            run.test = s.test;
            run.epoch_seconds = mean_epoch_train_seconds(s);
          }
        } catch (const std::exception& e) {
          const c10::Error* ce = dynamic_cast<const c10::Error*>(&e);
          run.error = ce ? ce->msg() : e.what();
          std::cout << "FAILED: " << run.error << std::endl;
        }
        runs.push_back(run);
        write_tables();
      }
    }
    const CompareTable t = write_tables();
    std::cout << "\n" << compare_table_markdown(t) << "\nwritten: " << a->out << "/table.md, "
              << a->out << "/table.csv, " << a->out << "/runs.csv\n";
    const bool failed = std::any_of(runs.begin(), runs.end(),
                                    [](const CompareRun& r) { return !r.error.empty(); });
    return failed ? 1 : 0;
  }};
}

}  // namespace bayesagg::cli
