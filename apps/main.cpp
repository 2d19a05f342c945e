// bayesagg: multi-task learning with BayesAgg-MTL. See README.md.
#include "commands.h"

#include "bayesagg/core/runtime.h"

#include <c10/util/Exception.h>

#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"bayesagg: multi-task learning with BayesAgg-MTL (Bayesian gradient aggregation)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("bayesagg 0.1.0"));
  const std::vector<bayesagg::cli::Command> commands = {
      bayesagg::cli::add_aggregate(app),
      bayesagg::cli::add_bench(app),
      bayesagg::cli::add_train(app),
      bayesagg::cli::add_toy(app),
      bayesagg::cli::add_compare(app),
  };
  bayesagg::retain_freed_memory();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& command : commands) {
      if (command.app->parsed()) return command.run();
    }
  } catch (const c10::Error& e) {
    std::cerr << "bayesagg: error: " << e.msg() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "bayesagg: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
