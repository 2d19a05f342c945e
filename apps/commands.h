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

/// Sets LibTorch's intra-op threads (0 = all cores) and returns the number used.
int set_threads(int64_t threads);

}  // namespace bayesagg::cli
