#pragma once
// Command-line flags of the training settings registry (train/options.h), shared by the
// subcommands that start training runs (`train`, `compare`).

#include <CLI/CLI.hpp>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace bayesagg {
struct TrainOptions;
}

namespace bayesagg::cli {

/// The values of the registry's flags on one subcommand.
class SettingFlags {
 public:
  /// Adds one `--<key>` option per registry setting to `sub`, except the keys in `skip`.
  SettingFlags(CLI::App* sub, const std::set<std::string>& skip);
  /// The keys given on the command line, in registry order.
  std::vector<std::string> given() const;
  /// The text of a given key's value (`true`/`false` for flags).
  std::string value(const std::string& key) const;
  /// Applies every given flag to `options` (after a config file, so flags override it).
  void apply(TrainOptions& options) const;

 private:
  std::vector<std::string> keys_;
  std::map<std::string, std::string> values_;
  std::map<std::string, bool> flags_;
  std::map<std::string, CLI::Option*> options_;
};

}  // namespace bayesagg::cli
