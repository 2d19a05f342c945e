#pragma once
// Running the `bayesagg` CLI from the tests (BAYESAGG_CLI is the built executable).

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace bayesagg::testing {

struct CliResult {
  int status;
  std::string err;
};

/// Runs the CLI with `args` (a shell fragment; stdout goes where `args` redirects it),
/// capturing stderr. One stderr file per process and call: ctest runs tests of one binary in
/// parallel processes.
inline CliResult run_cli_after(const std::string& before, const std::string& args);
inline CliResult run_cli(const std::string& args) { return run_cli_after("", args); }

/// As `run_cli`, with shell text `before` the CLI's path: a command that runs it
/// (`setpriv ... `) or commands before it (`ulimit -f 256; `).
inline CliResult run_cli_after(const std::string& before, const std::string& args) {
  static int calls = 0;
  const std::filesystem::path err_file =
      std::filesystem::temp_directory_path() /
      ("bayesagg_cli_stderr_" + std::to_string(::getpid()) + "_" + std::to_string(++calls) +
       ".txt");
  const std::string cmd =
      before + std::string(BAYESAGG_CLI) + " " + args + " 2> " + err_file.string();
  const int rc = std::system(cmd.c_str());
  std::ifstream in(err_file);
  std::string err((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(err_file);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, err};
}

/// The whole text of `path`, or "" when it cannot be read (a run that failed may not have
/// written it; a /proc entry may be gone).
inline std::string read(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace bayesagg::testing
