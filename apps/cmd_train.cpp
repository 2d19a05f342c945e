// `bayesagg train`: train a multi-task model on an embedded or a paper benchmark (see
// docs/training.md, docs/benchmarks.md).
#include "commands.h"
#include "setting_flags.h"

#include "bayesagg/core/files.h"
#include "bayesagg/train/compare.h"
#include "bayesagg/train/options.h"
#include "bayesagg/train/trainer.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace bayesagg::cli {
namespace {

/// Epochs of `bayesagg train` run without any argument: long enough to be meaningful, short
/// enough for a few minutes on 2 cores (docs/training.md).
constexpr int64_t kQuickEpochs = 3;

/// Settings a resumed run may change (they do not alter its numbers, except threads).
bool resume_may_change(const std::string& key) {
  return key == "threads" || key == "progress" || key == "data-dir" || key == "device" ||
         key == "prefetch" || key == "nproc" || key == "dist-timeout";
}

}  // namespace

Command add_train(CLI::App& app) {
  struct Args {
    std::unique_ptr<SettingFlags> flags;
    std::string config, resume;
    int64_t stop_after_epoch = 0;
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
  a->flags = std::make_unique<SettingFlags>(sub, std::set<std::string>{});
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
  sub->add_option("--stop-after-epoch", a->stop_after_epoch,
                  "Stop after this many completed epochs, as if interrupted: the run stays "
                  "resumable with --resume (e.g. jobs with a time limit); 0 = run every epoch. "
                  "Not a setting of the run (config.json does not record it)")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  sub->footer(
      "Defaults (spec: benchmarks.md): batch 256, Adam lr 1e-3 (no weight decay) with separate "
      "trunk and head groups, MultiStepLR x0.1 at max(1, round(0.6E)) and max(1, round(0.8E)), "
      "head gradients clipped to norm 10, trunk unclipped; BayesAgg-MTL gamma 0.005, s 0.3 "
      "(regression) / 0.1 (classification), 1024 MC samples, 1 LS warm-up epoch.\n"
      "The run folder gets config.json, metrics.csv (epoch,split,task,metric,value), steps.csv "
      "(per-step losses, gradient norms, method diagnostics), summary.json, curves.svg, "
      "calibration.svg (reliability diagrams of the classification tasks), checkpoint.pt (after every epoch, atomic) and best_model.pt. See docs/training.md.\n"
      "Paper benchmarks (cifar-mtl, utkface, chestx14, qm9) read the data set in --data-dir, use "
      "the spec's network, split, preprocessing, metrics and selection rule, and compute delta_m "
      "against the published single-task numbers; docs/benchmarks.md gives the commands that "
      "reproduce the paper's rows.");

  return {sub, [a, sub]() {
    TrainOptions o;
    const std::vector<std::string> given = a->flags->given();
    const auto value_of = [&](const std::string& key) { return a->flags->value(key); };
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
      a->flags->apply(o);
      if (given.empty() && a->config_opt->count() == 0) {
        o.epochs(kQuickEpochs);
        std::cout << "bayesagg train: no arguments, so the quick default run: BayesAgg-MTL on "
                     "multi-fashion for "
                  << kQuickEpochs
                  << " epochs (`bayesagg train --help` lists the options; the spec's protocol "
                     "is --epochs 10)\n";
      }
    }
    o.stop_after_epoch(a->stop_after_epoch);
    // --nproc N: this command again as N ranks; a process with the torchrun environment is
    // one rank of a run (docs/distributed.md).
    if (o.nproc() > 1 && !std::getenv("RANK")) {
      TORCH_CHECK(o.method() != "stl", "--method stl runs one task after the other; it is not "
                  "data-parallel (drop --nproc)");
      return launch_local_ranks(o.nproc(), o.dist_timeout());
    }
    if (o.method() == "stl") {
      TORCH_CHECK(a->resume_opt->count() == 0, "--method stl is not resumed with --resume: run "
                  "the same command again (finished task runs are reused, a stopped one resumes)");
      o.method("ls");
      o.validate();
      const std::string out = o.out().empty() ? "runs/" + o.benchmark() + "-stl-seed" +
                                                    std::to_string(o.seed())
                                              : o.out();
      // Embedded benchmarks are built once and handed to every task's run; paper ones are read
      // by each run (from their caches after the first).
      const std::optional<Benchmark> bench = make_embedded_benchmark(o);
      const SingleTaskResult r =
          train_single_tasks(o.out(out), bench ? &*bench : nullptr, &std::cout);
      std::cout << "\nsingle-task baselines (test) written to " << r.baseline_file << "; use "
                << "them with --stl-baseline " << r.baseline_file << "\n";
      return 0;
    }
    Trainer trainer(o);
    trainer.set_log(&std::cout);
    trainer.run();
    return 0;
  }};
}

}  // namespace bayesagg::cli
