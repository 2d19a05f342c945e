#include "commands.h"

#include "bayesagg/core/runtime.h"

namespace bayesagg::cli {

int set_threads(int64_t threads) { return bayesagg::set_threads(threads); }

}  // namespace bayesagg::cli
