#pragma once
// The two-rank (or W-rank) harness of the data-parallel tests: ranks as threads of the test
// process, joined through a c10d store hosted here.

#include "bayesagg/dist/process_group.h"

#include <c10/util/Exception.h>

#include <functional>
#include <future>
#include <string>
#include <vector>

namespace bayesagg::testing {

/// Runs `body(group)` on `world` ranks (threads of this process) joined through a store hosted
/// here; returns each rank's error message ("" when it finished).
inline std::vector<std::string> run_ranks(int64_t world, double timeout,
                                          const std::function<void(DistGroup&)>& body) {
  StoreHost host(0, timeout);
  std::vector<std::future<std::string>> ranks;
  for (int64_t r = 0; r < world; ++r) {
    ranks.push_back(std::async(std::launch::async, [&, r]() -> std::string {
      try {
        DistGroup group(DistOptions()
                            .rank(r)
                            .world_size(world)
                            .master_port(host.port())
                            .timeout(timeout)
                            .host_store(false));
        body(group);
        return "";
      } catch (const c10::Error& e) {
        return e.msg();
      }
    }));
  }
  std::vector<std::string> errors;
  for (auto& f : ranks) errors.push_back(f.get());
  return errors;
}

}  // namespace bayesagg::testing
