// `bayesagg train --nproc N`: N data-parallel ranks of this command on this machine.
#include "commands.h"

#include "bayesagg/dist/process_group.h"

#include <c10/util/Exception.h>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace bayesagg::cli {
namespace {

using Clock = std::chrono::steady_clock;

/// This process's arguments, as started.
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  std::string cur;
  for (char c : all) {
    if (c == '\0') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  TORCH_CHECK(!args.empty(), "--nproc: cannot read this command's arguments (/proc/self/cmdline)");
  return args;
}

/// This environment without torchrun's variables, plus those of rank `rank`.
std::vector<std::string> rank_environment(int64_t rank, int64_t world, int64_t port) {
  const char* const ours[] = {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=",
                              "MASTER_ADDR=", "MASTER_PORT=", "TORCHELASTIC_USE_AGENT_STORE="};
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    bool keep = true;
    for (const char* p : ours) keep = keep && std::strncmp(*e, p, std::strlen(p)) != 0;
    if (keep) env.emplace_back(*e);
  }
  env.push_back("RANK=" + std::to_string(rank));
  env.push_back("LOCAL_RANK=" + std::to_string(rank));
  env.push_back("WORLD_SIZE=" + std::to_string(world));
  env.push_back("LOCAL_WORLD_SIZE=" + std::to_string(world));
  env.push_back("MASTER_ADDR=127.0.0.1");
  env.push_back("MASTER_PORT=" + std::to_string(port));
  env.push_back("TORCHELASTIC_USE_AGENT_STORE=True");
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

int launch_local_ranks(int64_t nproc, double timeout) {
  TORCH_CHECK(nproc >= 2, "--nproc ", nproc, ": launching needs at least 2 ranks");
  // The store lives here, so that it outlives any rank (a lost rank 0 is then named too).
  StoreHost host(0, timeout);
  std::vector<std::string> args = own_arguments();
  std::vector<char*> argv = pointers(args);
  std::vector<pid_t> pids;
  std::cout.flush();
  std::cerr.flush();
  for (int64_t r = 0; r < nproc; ++r) {
    std::vector<std::string> env = rank_environment(r, nproc, host.port());
    std::vector<char*> envp = pointers(env);
    const pid_t pid = fork();
    if (pid == 0) {
      execve("/proc/self/exe", argv.data(), envp.data());
      _exit(127);
    }
    TORCH_CHECK(pid > 0, "--nproc: cannot start rank ", r, ": ", std::strerror(errno));
    pids.push_back(pid);
  }
  // Wait for every rank; once one has failed, the others stop by themselves within the timeout
  // (their collectives fail); any still running 15 s after that are terminated.
  int first_failure = 0;
  std::vector<bool> running(pids.size(), true);
  size_t remaining = pids.size();
  Clock::time_point deadline = Clock::time_point::max();
  while (remaining > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, first_failure ? WNOHANG : 0);
    if (pid == 0) {
      if (Clock::now() > deadline) {
        for (size_t r = 0; r < pids.size(); ++r) {
          if (running[r]) kill(pids[r], SIGTERM);
        }
        deadline = Clock::time_point::max();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    if (pid < 0) break;
    size_t r = 0;
    while (r < pids.size() && pids[r] != pid) ++r;
    if (r == pids.size()) continue;
    running[r] = false;
    --remaining;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0) continue;
    std::cerr << "bayesagg train: rank " << r << " of " << nproc << " exited with status "
              << code << (WIFSIGNALED(status) ? " (killed by a signal)" : "") << "\n";
    if (!first_failure) {
      first_failure = code;
      deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)) +
                 std::chrono::seconds(15);
    }
  }
  return first_failure;
}

}  // namespace bayesagg::cli
