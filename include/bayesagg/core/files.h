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

/// Name of the lock file `FolderLock` keeps in a folder.
constexpr const char* kFolderLockName = ".bayesagg.lock";

/// An exclusive lock on an output folder (`flock` on `DIR/.bayesagg.lock`, which records the
/// holder's process id), held for the lifetime of the object: two bayesagg processes never write
/// into one run or comparison folder at once. The kernel releases the lock when its process
/// dies, so a killed run leaves no stale lock. Throws, naming the folder and the holder's process
/// id, when another process holds it. Where the lock file cannot be created (a read-only folder),
/// nobody can write there either: the object then holds nothing, and the first write reports
/// the folder's problem.
class FolderLock {
 public:
  /// `what` names the locking command in the message, e.g. "bayesagg compare".
  FolderLock(const std::string& dir, const std::string& what);
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

 private:
  int fd_ = -1;
};

/// Test hook (fault injection): when the environment variable BAYESAGG_FAULT_KILL_WRITING is
/// `NAME` or `NAME@N`, the first (N-th) `write_file_atomic` of a file named NAME in the process
/// writes half its temporary file and then kills the process (SIGKILL), as a kill during that
/// write would.
constexpr const char* kFaultKillWritingEnv = "BAYESAGG_FAULT_KILL_WRITING";

}  // namespace bayesagg
