// libFuzzer target: the UTKFace file-name parser (AGE_GENDER_RACE_DATETIME.jpg.chip.jpg) on
// arbitrary names. It must not throw, and what it accepts must be labels in range that print
// back into the name's first three fields.
#include "bayesagg/data/paper/utkface.h"

#include <cstdint>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name(reinterpret_cast<const char*>(data), size);
  bayesagg::UTKFaceItem item;
  if (!bayesagg::parse_utkface_name(name, &item)) return 0;
  if (item.age < 0 || item.age > 999999999 || item.gender < 0 || item.gender > 1 || item.race < 0 ||
      item.race > 4 || item.file != name) {
    std::abort();
  }
  // The three fields, without leading zeros, are the stem's first three '_' fields.
  const std::string stem = name.substr(0, name.find('.'));
  size_t pos = 0;
  for (int64_t v : {item.age, item.gender, item.race}) {
    const size_t us = stem.find('_', pos);
    std::string field = stem.substr(pos, us == std::string::npos ? std::string::npos : us - pos);
    while (field.size() > 1 && field[0] == '0') field.erase(0, 1);
    if (field != std::to_string(v)) std::abort();
    pos = us == std::string::npos ? stem.size() : us + 1;
  }
  return 0;
}
