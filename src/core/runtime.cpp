#include "bayesagg/core/runtime.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <thread>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace bayesagg {

int set_threads(int threads) {
  TORCH_CHECK(threads >= 0, "threads must be >= 0 (0 = all cores), got ", threads);
  const int n =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
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
