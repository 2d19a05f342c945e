// libFuzzer target: the aggregation-problem JSON parser (`bayesagg aggregate --problem`).
#include "bayesagg/io/problem.h"

#include <c10/util/Exception.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    bayesagg::parse_problem(std::string(reinterpret_cast<const char*>(data), size));
  } catch (const c10::Error&) {
  }
  return 0;
}
