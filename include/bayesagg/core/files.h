#pragma once
/// File helpers: atomic writes, so that an interrupted or failed run never leaves a partial file.

#include <cstddef>
#include <string>

namespace bayesagg {

/// Writes `content` to `path` atomically: a temporary file `.NAME.tmp.PID.RANDOM` in the same
/// folder (NAME cut to 96 characters, so any valid leaf name works), flushed, then renamed over
/// `path`. Refuses (before writing anything) when `path` is a symbolic link, a device node, a
/// FIFO, a socket or a folder: only regular files are replaced. Throws (naming the path) on any
/// failure; `path` is untouched then.
void write_file_atomic(const std::string& path, const std::string& content);

/// Removes the temporary files that `write_file_atomic` left in `dir` when its process was killed
/// (those whose process no longer exists); returns how many were removed.
size_t remove_stale_temp_files(const std::string& dir);

/// Reads a whole file; throws naming the path when it cannot be opened or read.
std::string read_file(const std::string& path);

/// Creates a folder and its parents (no error if it exists); throws naming the path on failure.
void make_directories(const std::string& path);

}  // namespace bayesagg
