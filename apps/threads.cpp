#include "commands.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <thread>

namespace bayesagg::cli {

int set_threads(int threads) {
  TORCH_CHECK(threads >= 0, "--threads must be >= 0 (0 = all cores), got ", threads);
  const int n = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  return n;
}

}  // namespace bayesagg::cli
