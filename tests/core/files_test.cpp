// Atomic writes replace only regular files, work for the longest leaf names, and the temporary
// files of killed processes are cleaned.
#include "bayesagg/core/files.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace bayesagg {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("bayesagg_files_test_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string refusal(const std::string& path) {
  try {
    write_file_atomic(path, "new");
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

TEST(WriteFileAtomic, RefusesToReplaceFifosSymlinksAndFolders) {
  const fs::path dir = fresh_dir("special");
  const fs::path fifo = dir / "fifo", link = dir / "link", target = dir / "target",
                 folder = dir / "folder";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  write_file_atomic(target.string(), "kept");
  fs::create_symlink(target, link);
  fs::create_directories(folder);

  EXPECT_NE(refusal(fifo.string()).find("is a FIFO"), std::string::npos) << refusal(fifo.string());
  EXPECT_NE(refusal(link.string()).find("is a symbolic link"), std::string::npos);
  EXPECT_NE(refusal(folder.string()).find("is a folder"), std::string::npos);
  EXPECT_TRUE(fs::is_fifo(fs::symlink_status(fifo)));
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(link)));
  EXPECT_EQ(read_file(target.string()), "kept");
  // Nothing else was left in the folder.
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) entries += e.exists() ? 1 : 0;
  EXPECT_EQ(entries, 4u);
  fs::remove_all(dir);
}

TEST(WriteFileAtomic, RefusesACharacterDeviceWithoutTouchingIt) {
  // /dev/null as root would be destroyed by a rename; the check runs before any file is made.
  struct stat before {};
  ASSERT_EQ(::stat("/dev/null", &before), 0);
  EXPECT_NE(refusal("/dev/null").find("character device"), std::string::npos);
  struct stat after {};
  ASSERT_EQ(::lstat("/dev/null", &after), 0);
  EXPECT_TRUE(S_ISCHR(after.st_mode));
  EXPECT_EQ(before.st_rdev, after.st_rdev);
}

TEST(WriteFileAtomic, WorksForA250CharacterName) {
  const fs::path dir = fresh_dir("long");
  const fs::path path = dir / std::string(250, 'n');
  write_file_atomic(path.string(), "content");
  EXPECT_EQ(read_file(path.string()), "content");
  write_file_atomic(path.string(), "again");  // replacing it too
  EXPECT_EQ(read_file(path.string()), "again");
  fs::remove_all(dir);
}

TEST(RemoveStaleTempFiles, RemovesThoseOfDeadProcessesOnly) {
  const fs::path dir = fresh_dir("stale");
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // its pid is now free
  const std::string dead = ".summary.json.tmp." + std::to_string(child) + ".1a2b3c4d";
  const std::string alive = ".summary.json.tmp." + std::to_string(::getpid()) + ".1a2b3c4d";
  for (const std::string& name : {dead, alive, std::string("summary.json"),
                                  std::string(".hidden.tmp.notapid")}) {
    write_file_atomic((dir / name).string(), "x");
  }
  EXPECT_EQ(remove_stale_temp_files(dir.string()), 1u);
  EXPECT_FALSE(fs::exists(dir / dead));
  EXPECT_TRUE(fs::exists(dir / alive));
  EXPECT_TRUE(fs::exists(dir / "summary.json"));
  EXPECT_TRUE(fs::exists(dir / ".hidden.tmp.notapid"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace bayesagg
