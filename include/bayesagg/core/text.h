#pragma once
/// Bounded echoes of user input in error messages: a message quotes what it complains about, but
/// never a whole file or JSON value (a 300 KB line or array would bury the message itself).

#include <cstddef>
#include <string>

namespace bayesagg {

/// The most characters of user input an error message quotes.
constexpr size_t kMaxEchoedChars = 200;

/// `text` as an error message may quote it: control bytes written as `\xNN`, and, beyond
/// `max_chars` bytes, cut at a character boundary and ended with "… (N bytes)".
std::string excerpt(const std::string& text, size_t max_chars = kMaxEchoedChars);

}  // namespace bayesagg
