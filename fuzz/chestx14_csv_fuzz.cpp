// libFuzzer target: the ChestX-ray14 split CSV reader (train.csv, validation.csv, test.csv of
// --split-dir) on arbitrary bytes. Errors must be c10::Error with a bounded message; an accepted
// file gives one name and 14 labels in {0, 1} per row.
#include "bayesagg/data/paper/chestx14.h"

#include "fuzz_file.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  at::set_num_threads(1);
  const std::string path = bayesagg::fuzz::write_input("chestx14_csv", data, size);
  if (path.empty()) return 0;
  try {
    const bayesagg::ChestX14Csv csv = bayesagg::read_chestx14_csv(path);
    const auto n = static_cast<int64_t>(csv.images.size());
    if (csv.labels.size(0) != n || csv.labels.size(1) != 14 ||
        static_cast<int64_t>(csv.lines.size()) != n) {
      std::abort();
    }
    if (n > 0 && !at::logical_or(csv.labels.eq(0), csv.labels.eq(1)).all().item<bool>()) {
      std::abort();
    }
    for (const auto& name : csv.images) {
      if (name.empty()) std::abort();
    }
  } catch (const c10::Error& e) {
    // Messages echo what they complain about, capped: never the whole (up to 1 MB) input.
    if (std::strlen(e.what_without_backtrace()) > 4096) std::abort();
  }
  return 0;
}
