#pragma once
/// File helpers: atomic writes, so that an interrupted or failed run never leaves a partial file.

#include <string>

namespace bayesagg {

/// Writes `content` to `path` atomically: a temporary file in the same folder, flushed, then
/// renamed over `path`. Throws (naming the path) on any failure; `path` is untouched then.
void write_file_atomic(const std::string& path, const std::string& content);

/// Reads a whole file; throws naming the path when it cannot be opened or read.
std::string read_file(const std::string& path);

/// Creates a folder and its parents (no error if it exists); throws naming the path on failure.
void make_directories(const std::string& path);

}  // namespace bayesagg
