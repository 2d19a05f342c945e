// libFuzzer target: the training config JSON (`bayesagg train --config`, a run's config.json).
#include "bayesagg/train/options.h"

#include <c10/util/Exception.h>

#include <cstdint>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    bayesagg::TrainOptions o;
    bayesagg::apply_config_json(o, std::string(reinterpret_cast<const char*>(data), size),
                                "fuzz");
    o.validate();
  } catch (const c10::Error&) {
  }
  return 0;
}
