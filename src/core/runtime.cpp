#include "bayesagg/core/runtime.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bayesagg {

int64_t max_threads() {
  const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
  return std::min<int64_t>(1024, std::max<int64_t>(4, 4 * hardware));
}

int resolve_threads(int64_t requested, int64_t processes_on_machine) {
  TORCH_CHECK(requested >= 0 && requested <= max_threads(), "--threads ", requested,
              ": expected 0 (all ", std::max(1u, std::thread::hardware_concurrency()),
              " hardware threads) to ", max_threads(), " (4 x the hardware threads)");
  TORCH_CHECK(processes_on_machine >= 1, "resolve_threads: processes_on_machine must be >= 1, got ",
              processes_on_machine);
  const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());
  return static_cast<int>(requested > 0 ? requested
                                        : std::max<int64_t>(1, hardware / processes_on_machine));
}

int set_threads(int64_t threads, int64_t processes_on_machine) {
  const int n = resolve_threads(threads, processes_on_machine);
  at::set_num_threads(n);
  return n;
}

bool retain_freed_memory() {
#if defined(__GLIBC__)
  // Blocks up to 1 GiB come from the heap (reused after free), the heap is never trimmed, and it
  // grows by at least 256 MiB at a time.
  const bool ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1 &&
                  mallopt(M_TOP_PAD, 256 << 20) == 1;
  return ok;
#else
  return false;
#endif
}

}  // namespace bayesagg
