#include "bayesagg/core/text.h"

#include <cstdio>

namespace bayesagg {

std::string excerpt(const std::string& text, size_t max_chars) {
  size_t cut = text.size();
  if (cut > max_chars) {
    cut = max_chars;
    // Do not split a UTF-8 sequence: back up over continuation bytes (10xxxxxx).
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  }
  std::string out;
  out.reserve(cut + 32);
  for (size_t i = 0; i < cut; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (cut < text.size()) out += "\xE2\x80\xA6 (" + std::to_string(text.size()) + " bytes)";
  return out;
}

}  // namespace bayesagg
