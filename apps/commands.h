#pragma once
// Subcommands of the `bayesagg` command-line tool.

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>

namespace bayesagg::cli {

/// A registered subcommand and what to run when it is selected.
struct Command {
  CLI::App* app;
  std::function<int()> run;
};

Command add_aggregate(CLI::App& app);
Command add_bench(CLI::App& app);
Command add_train(CLI::App& app);
Command add_toy(CLI::App& app);
Command add_compare(CLI::App& app);

/// Starts `nproc` data-parallel ranks of this command on this machine (the same arguments, with
/// the torchrun environment; the c10d store is hosted here) and waits for them: 0 when every
/// rank succeeded, else the first failing rank's exit status.
int launch_local_ranks(int64_t nproc, double timeout);

/// Sets LibTorch's intra-op threads (0 = all cores) and returns the number used.
int set_threads(int64_t threads);

}  // namespace bayesagg::cli
