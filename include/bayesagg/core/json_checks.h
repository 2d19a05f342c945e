#pragma once
/// Checks on JSON text that nlohmann's parser does not make: it keeps the last of duplicate keys
/// silently, so `{"lr": 0.1, "lr": 0.001}` would train with 0.001 without a word.

#include <string>

namespace bayesagg {

/// Throws, naming `what` (e.g. "--config 'run.json'"), the key and its object's path, when an
/// object anywhere in `text` holds a key twice. Does nothing for text that is not valid JSON
/// (the caller's parser reports that).
void check_unique_json_keys(const std::string& text, const std::string& what);

}  // namespace bayesagg
