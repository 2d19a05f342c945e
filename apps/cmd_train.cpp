// `bayesagg train`: train a multi-task model on an embedded or a paper benchmark (see
// docs/training.md, docs/benchmarks.md).
#include "commands.h"

#include "bayesagg/core/files.h"
#include "bayesagg/data/embedded.h"
#include "bayesagg/data/paper/chestx14.h"
#include "bayesagg/data/paper/cifar_mtl.h"
#include "bayesagg/data/paper/paper.h"
#include "bayesagg/data/paper/qm9.h"
#include "bayesagg/train/metrics.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/trainer.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <iostream>
#include <map>
#include <memory>
#include <string>

namespace bayesagg::cli {
namespace {

/// Epochs of `bayesagg train` run without any argument: long enough to be meaningful, short
/// enough for a few minutes on 2 cores (docs/training.md).
constexpr int64_t kQuickEpochs = 3;

/// Settings a resumed run may change (they do not alter its numbers, except threads).
bool resume_may_change(const std::string& key) {
  return key == "threads" || key == "progress" || key == "data-dir" || key == "device" ||
         key == "prefetch";
}

/// `--method stl`: one single-task run per task (linear scalarisation on that task's loss alone,
/// same network and budget), then `<out>/stl_baseline.json` with each task's metrics at its best
/// validation epoch, in the format `--stl-baseline` reads.
int train_single_task_baselines(TrainOptions o) {
  o.method("ls");
  o.stl_task("");
  o.validate();
  const std::string out = o.out().empty() ? "runs/" + o.benchmark() + "-stl-seed" +
                                                std::to_string(o.seed())
                                          : o.out();
  // Embedded benchmarks are built once and handed to every run; paper ones are read by each
  // run (from their caches after the first).
  const bool paper = is_paper_benchmark(o.benchmark());
  Benchmark bench;
  std::vector<std::string> tasks;
  if (paper) {
    const std::string& b = o.benchmark();
    tasks = b == "cifar-mtl"  ? cifar100_coarse_names()
            : b == "utkface"  ? std::vector<std::string>{"age", "gender", "race"}
            : b == "chestx14" ? chestx14_task_names()
                              : qm9_task_names();
  } else {
    bench = make_benchmark(o.benchmark(), EmbeddedOptions()
                                              .data_dir(o.data_dir())
                                              .seed(o.data_seed())
                                              .train_subset(o.train_subset()));
    tasks = bench.task_names;
  }
  nlohmann::ordered_json test = nlohmann::ordered_json::object(),
                         val = nlohmann::ordered_json::object();
  for (size_t i = 0; i < tasks.size(); ++i) {
    const std::string& task = tasks[i];
    std::cout << "\n=== single-task learning of '" << task << "' (" << i + 1 << "/"
              << tasks.size() << ")\n";
    TrainOptions t = o;
    t.stl_task(task).out(out + "/" + task);
    std::unique_ptr<Trainer> trainer =
        paper ? std::make_unique<Trainer>(t) : std::make_unique<Trainer>(t, bench);
    trainer->set_log(&std::cout);
    const TrainSummary s = trainer->run();
    // A single-task run's summary holds that task's metrics only.
    for (const auto& [key, value] : s.test) test[key] = value;
    for (const auto& [key, value] : s.val) val[key] = value;
  }
  nlohmann::ordered_json j;
  j["_note"] = "single-task baselines: each task trained alone (bayesagg train --method stl), "
               "metrics at its best validation epoch";
  j["_settings"] = nlohmann::ordered_json::parse(options_to_json(o));
  j["test"] = test;
  j["val"] = val;
  const std::string path = out + "/stl_baseline.json";
  write_file_atomic(path, j.dump(2) + "\n");
  std::cout << "\nsingle-task baselines (test) written to " << path << ":\n"
            << test.dump(2) << "\nuse them with --stl-baseline " << path << "\n";
  return 0;
}

}  // namespace

Command add_train(CLI::App& app) {
  struct Args {
    std::map<std::string, std::string> values;
    std::map<std::string, CLI::Option*> options;
    bool overwrite = false;
    std::string config, resume;
    CLI::Option* config_opt = nullptr;
    CLI::Option* resume_opt = nullptr;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand(
      "train",
      "Train a multi-task model on an embedded or a paper benchmark with BayesAgg-MTL or linear "
      "scalarisation, evaluate it after every epoch, and record the run.\n"
      "Without arguments: BayesAgg-MTL on multi-fashion for " +
          std::to_string(kQuickEpochs) +
          " epochs (a few minutes on 2 cores), then the table of test metrics.");
  for (const auto& s : train_settings()) {
    if (s.value_name == "BOOL") {
      a->options[s.key] = sub->add_flag("--" + s.key, a->overwrite, s.help);
    } else {
      a->options[s.key] =
          sub->add_option("--" + s.key, a->values[s.key], s.help)->type_name(s.value_name);
    }
  }
  a->config_opt = sub->add_option("--config", a->config,
                                  "JSON file of settings: the long option names without dashes "
                                  "as keys (e.g. {\"batch-size\": 128}); flags override it")
                      ->type_name("FILE");
  a->resume_opt = sub->add_option("--resume", a->resume,
                                  "Continue the stopped run in DIR from its checkpoint with the "
                                  "settings of DIR/config.json; it ends with the same numbers as "
                                  "an uninterrupted run with the same seed and threads")
                      ->type_name("DIR");
  a->resume_opt->excludes(a->config_opt);
  sub->footer(
      "Defaults (spec: benchmarks.md): batch 256, Adam lr 1e-3 (no weight decay) with separate "
      "trunk and head groups, MultiStepLR x0.1 at max(1, round(0.6E)) and max(1, round(0.8E)), "
      "head gradients clipped to norm 10, trunk unclipped; BayesAgg-MTL gamma 0.005, s 0.3 "
      "(regression) / 0.1 (classification), 1024 MC samples, 1 LS warm-up epoch.\n"
      "The run folder gets config.json, metrics.csv (epoch,split,task,metric,value), steps.csv "
      "(per-step losses, gradient norms, method diagnostics), summary.json, curves.svg, "
      "checkpoint.pt (after every epoch, atomic) and best_model.pt. See docs/training.md.\n"
      "Paper benchmarks (cifar-mtl, utkface, chestx14, qm9) read the data set in --data-dir, use "
      "the spec's network, split, preprocessing, metrics and selection rule, and compute delta_m "
      "against the published single-task numbers; docs/benchmarks.md gives the commands that "
      "reproduce the paper's rows.");

  return {sub, [a, sub]() {
    TrainOptions o;
    std::vector<std::string> given;
    for (const auto& s : train_settings()) {
      if (a->options.at(s.key)->count() > 0) given.push_back(s.key);
    }
    const auto value_of = [&](const std::string& key) {
      return key == "overwrite" ? std::string(a->overwrite ? "true" : "false")
                                : a->values.at(key);
    };
    if (a->resume_opt->count() > 0) {
      o = resume_options(a->resume);
      for (const auto& key : given) {
        if (resume_may_change(key)) {
          apply_setting(o, key, value_of(key));
          continue;
        }
        TrainOptions changed = o;
        apply_setting(changed, key, value_of(key));
        TORCH_CHECK(setting_value(changed, key) == setting_value(o, key), "--", key,
                    " cannot change a resumed run (its config.json has ",
                    setting_value(o, key), "); start a new run with --out to change it");
      }
    } else {
      if (a->config_opt->count() > 0) {
        apply_config_json(o, read_file(a->config), "--config '" + a->config + "'");
      }
      for (const auto& key : given) apply_setting(o, key, value_of(key));
      if (given.empty() && a->config_opt->count() == 0) {
        o.epochs(kQuickEpochs);
        std::cout << "bayesagg train: no arguments, so the quick default run: BayesAgg-MTL on "
                     "multi-fashion for "
                  << kQuickEpochs
                  << " epochs (`bayesagg train --help` lists the options; the spec's protocol "
                     "is --epochs 10)\n";
      }
    }
    if (o.method() == "stl") {
      TORCH_CHECK(a->resume_opt->count() == 0, "--method stl cannot be resumed as a whole; "
                  "resume the stopped task's folder (<out>/<task>) instead");
      return train_single_task_baselines(o);
    }
    Trainer trainer(o);
    trainer.set_log(&std::cout);
    trainer.run();
    return 0;
  }};
}

}  // namespace bayesagg::cli
