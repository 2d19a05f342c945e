#include "bayesagg/core/files.h"

#include <c10/util/Exception.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bayesagg {

namespace {

constexpr const char* kTempMarker = ".tmp.";
/// Characters of the target's name kept in a temporary name: with the marker, the process id
/// and 8 hexadecimal digits, a temporary name stays far below NAME_MAX (255) for any target.
constexpr size_t kTempNameChars = 96;

/// ".NAME.tmp.PID.RANDOM" in the folder of `target`, NAME cut to `kTempNameChars` characters.
std::filesystem::path temp_path_for(const std::filesystem::path& target) {
  const std::filesystem::path dir =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::random_device rd;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", static_cast<unsigned>(rd()));
  return dir / ("." + target.filename().string().substr(0, kTempNameChars) + kTempMarker +
                std::to_string(::getpid()) + "." + suffix);
}

/// Refuses to replace anything but a regular file: a rename over a device node, a FIFO, a socket
/// or a symbolic link would destroy it (`--out /dev/null` as root) or its target's meaning.
void check_replaceable(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;  // nothing there (or unreadable: open says why)
  const char* what = S_ISLNK(st.st_mode)    ? "a symbolic link"
                     : S_ISDIR(st.st_mode)  ? "a folder"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : nullptr;
  TORCH_CHECK(what == nullptr, "refusing to write '", path, "': it is ", what,
              ", not a regular file, and would be replaced; choose another output path");
}

/// BAYESAGG_FAULT_KILL_WRITING=NAME[@N] (see files.h): at the N-th (default first) write of a
/// file named NAME, dies after half of `content` went to `fd`.
void maybe_fault_kill(const std::filesystem::path& target, int fd, const std::string& content) {
  const char* env = std::getenv(kFaultKillWritingEnv);
  if (env == nullptr || *env == '\0') return;
  const std::string spec(env);
  const size_t at = spec.rfind('@');
  const std::string name = spec.substr(0, at);
  const long nth = at == std::string::npos ? 1 : std::atol(spec.c_str() + at + 1);
  static long seen = 0;
  if (target.filename().string() != name || ++seen != nth) return;
  const ssize_t n = ::write(fd, content.data(), content.size() / 2);
  (void)n;
  ::kill(::getpid(), SIGKILL);
}

}  // namespace

void write_file_atomic(const std::string& path, const std::string& content) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  TORCH_CHECK(!target.filename().empty(), "cannot write '", path, "': it names a folder");
  check_replaceable(path);
  const fs::path tmp = temp_path_for(target);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  TORCH_CHECK(fd >= 0, "cannot write '", path, "': ", std::strerror(errno));
  maybe_fault_kill(target, fd, content);
  size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      TORCH_CHECK(false, "cannot write '", path, "': ", std::strerror(err));
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    TORCH_CHECK(false, "cannot write '", path, "': ", std::strerror(err));
  }
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    TORCH_CHECK(false, "cannot move the new '", path, "' into place: ", std::strerror(err));
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in.good(), "cannot open '", path, "': ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  TORCH_CHECK(!in.bad(), "cannot read '", path, "'");
  return ss.str();
}

size_t remove_stale_temp_files(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  size_t removed = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    const size_t marker = name.rfind(kTempMarker);
    if (name.empty() || name[0] != '.' || marker == std::string::npos) continue;
    const std::string rest = name.substr(marker + std::strlen(kTempMarker));
    const size_t dot = rest.find('.');
    if (dot == 0 || dot == std::string::npos || dot > 9) continue;
    if (rest.find_first_not_of("0123456789") != dot) continue;
    const long pid = std::stol(rest.substr(0, dot));
    // A process that still exists may be writing it (two runs on one folder): left alone.
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    std::error_code rm;
    if (entry.is_regular_file(rm) && fs::remove(entry.path(), rm)) ++removed;
  }
  return removed;
}

void make_directories(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  TORCH_CHECK(!ec, "cannot create folder '", path, "': ", ec.message());
}

FolderLock::FolderLock(const std::string& dir, const std::string& what) {
  const std::string path = (std::filesystem::path(dir) / kFolderLockName).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) return;  // a folder nobody can write into: the first write says why
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) {
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) == 0) {
      const ssize_t n = ::pwrite(fd_, pid.data(), pid.size(), 0);
      (void)n;
    }
    return;
  }
  const int err = errno;
  char holder[32] = {0};
  const ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
  ::close(fd_);
  fd_ = -1;
  std::string pid = n > 0 ? std::string(holder, static_cast<size_t>(n)) : "";
  while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
  TORCH_CHECK(err != EWOULDBLOCK, what, ": '", dir, "' is in use by another bayesagg process",
              pid.empty() ? std::string() : " (process " + pid + ")",
              "; wait for it to end, or choose another --out");
  TORCH_CHECK(false, what, ": cannot lock '", path, "': ", std::strerror(err));
}

FolderLock::~FolderLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace bayesagg
