// The CLI under hostile conditions (issue 13): read-only and full output folders, kills at any
// moment (also in the middle of a checkpoint write) followed by --resume, two processes on one
// --out, non-UTF-8 and very long paths. Each test states what must hold: a clean one-line error,
// no partial file, earlier results byte for byte as they were, the same numbers after a resume.
#include "cli_util.h"
#include "test_util.h"

#include "bayesagg/core/files.h"
#include "bayesagg/train/records.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

namespace {

namespace fs = std::filesystem;
using bayesagg::testing::contains;
using bayesagg::testing::run_cli;
using bayesagg::testing::TempDir;

const std::string kTrain =
    "train --benchmark synthetic-regression --method ls --epochs 2 --train-subset 256 "
    "--batch-size 128 --threads 1 --progress none";
const std::string kCompare =
    "compare --benchmark synthetic-regression --methods ls --seeds 1 --epochs 1 "
    "--train-subset 256 --batch-size 128 --threads 1 --progress none";

std::string problem() { return bayesagg::testing::fixture_dir() + "/reg_o1.json"; }

/// Every regular file under `dir` (relative path -> contents).
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) {
      files[fs::relative(e.path(), dir).string()] = bayesagg::read_file(e.path().string());
    }
  }
  return files;
}

/// Temporary files of write_file_atomic (`.NAME.tmp.PID.RANDOM`) anywhere under `dir`.
std::vector<std::string> temp_files(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (contains(e.path().filename().string(), ".tmp.")) out.push_back(e.path().string());
  }
  return out;
}

bool one_line(const std::string& err) { return !err.empty() && err.find('\n') == err.size() - 1; }

/// Adds or removes the write permission of everything under `dir` (and `dir`).
void set_writable(const fs::path& dir, bool writable) {
  const auto opts = writable ? fs::perm_options::add : fs::perm_options::remove;
  const fs::perms w = fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write;
  fs::permissions(dir, w, opts);
  for (const auto& e : fs::recursive_directory_iterator(dir)) fs::permissions(e.path(), w, opts);
}

/// The test summary's numbers of a finished run folder.
bayesagg::TrainSummary summary_of(const fs::path& dir) {
  return bayesagg::summary_from_json(bayesagg::read_file((dir / "summary.json").string()));
}

void expect_same_numbers(const fs::path& a, const fs::path& b) {
  const bayesagg::TrainSummary x = summary_of(a), y = summary_of(b);
  EXPECT_TRUE(y.completed()) << b;
  EXPECT_EQ(x.best_epoch, y.best_epoch) << b;
  EXPECT_EQ(x.val, y.val) << b;  // exact equality of every number
  EXPECT_EQ(x.test, y.test) << b;
}

/// Starts the CLI with `args` (no shell: the pid is the CLI's), output discarded.
pid_t spawn_cli(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv{const_cast<char*>(BAYESAGG_CLI)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(BAYESAGG_CLI, argv.data());
    ::_exit(127);
  }
  return pid;
}

/// Waits for `pid`; its exit status, or -signal when a signal ended it.
int wait_for(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

std::vector<std::string> split_args(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// ------------------------------------------------------------------ read-only --out

/// The command prefix that runs the CLI without the power to write into a read-only folder:
/// nothing for a normal user; as root (who may write anywhere), setpriv to user nobody.
std::string unprivileged_prefix(std::string* skip_reason) {
  if (::geteuid() != 0) return "";
  if (::access("/usr/bin/setpriv", X_OK) != 0) {
    *skip_reason =
        "running as root without /usr/bin/setpriv (util-linux): root writes into "
        "read-only folders, so the test cannot make one";
    return "";
  }
  return "/usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups ";
}

TEST(HostileCli, ReadOnlyOutGivesACleanErrorAndLeavesEarlierResultsUntouched) {
  std::string skip;
  const std::string as_user = unprivileged_prefix(&skip);
  if (!skip.empty()) GTEST_SKIP() << skip;
  TempDir dir("bayesagg_hostile_ro_");
  fs::permissions(dir.path, fs::perms::others_read | fs::perms::others_exec, fs::perm_options::add);
  ASSERT_EQ(run_cli(kTrain + " --out " + dir.file("run") + " > /dev/null").status, 0);
  ASSERT_EQ(run_cli(kCompare + " --out " + dir.file("cmp") + " > /dev/null").status, 0);
  fs::create_directories(dir.path / "agg");
  ASSERT_EQ(run_cli("aggregate --problem " + problem() + " --mc-samples 100 --out " +
                    dir.file("agg/answer.json"))
                .status,
            0);
  const auto before = snapshot(dir.path);
  set_writable(dir.path, false);

  struct Case {
    std::string args, expected;
  };
  const std::vector<Case> cases = {
      {kTrain + " --out " + dir.file("run") + " --overwrite", "Permission denied"},
      {kTrain + " --out " + dir.file("new"), "cannot create folder '" + dir.file("new")},
      {"train --resume " + dir.file("run"), "Permission denied"},
      {kCompare + " --out " + dir.file("cmp"), "Permission denied"},
      {"aggregate --problem " + problem() + " --mc-samples 100 --out " +
           dir.file("agg/answer.json"),
       "cannot write '" + dir.file("agg/answer.json") + "': Permission denied"},
  };
  for (const Case& c : cases) {
    const auto r = bayesagg::testing::run_cli_after(as_user, c.args + " > /dev/null");
    EXPECT_NE(r.status, 0) << c.args;
    EXPECT_TRUE(contains(r.err, c.expected)) << c.args << "\n" << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
  }
  set_writable(dir.path, true);
  EXPECT_EQ(snapshot(dir.path), before);  // nothing added, removed or changed
}

// ------------------------------------------------------------------ full disk

/// A tmpfs of `kib` KiB mounted on a folder, unmounted at scope exit. Needs root (and a kernel
/// that lets this process mount): `reason` says why not otherwise.
struct SmallTmpfs {
  TempDir dir{"bayesagg_hostile_tmpfs_"};
  bool mounted = false;
  std::string reason;
  explicit SmallTmpfs(int kib) {
    if (::geteuid() != 0) {
      reason = "mounting a small tmpfs needs root (FileSizeLimit covers the same paths without)";
      return;
    }
    const std::string cmd = "mount -t tmpfs -o size=" + std::to_string(kib) + "k tmpfs " +
                            dir.path.string() + " 2>/dev/null";
    mounted = std::system(cmd.c_str()) == 0;
    if (!mounted) reason = "root, but mount -t tmpfs is not permitted here (a container?)";
  }
  ~SmallTmpfs() {
    if (mounted) std::system(("umount " + dir.path.string()).c_str());
  }
};

/// Fills the file system of `dir` with one file until the disk is full.
void fill_disk(const fs::path& dir) {
  const int fd = ::open((dir / "filler").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  const std::string block(4096, 'x');
  while (::write(fd, block.data(), block.size()) > 0) {
  }
  while (::write(fd, block.data(), 1) > 0) {
  }
  ::close(fd);
}

TEST(HostileCli, FullDiskGivesACleanErrorNoPartialFileAndLeavesEarlierResultsUntouched) {
  SmallTmpfs disk(1024);
  if (!disk.mounted) GTEST_SKIP() << disk.reason;
  const fs::path root = disk.dir.path;
  ASSERT_EQ(run_cli(kTrain + " --out " + (root / "run").string() + " > /dev/null").status, 0);
  ASSERT_EQ(run_cli("aggregate --problem " + problem() + " --mc-samples 100 --out " +
                    (root / "answer.json").string())
                .status,
            0);
  const auto before = snapshot(root);
  fill_disk(root);

  const std::vector<std::string> commands = {
      kTrain + " --out " + (root / "run2").string(),
      kCompare + " --out " + (root / "cmp").string(),
      "aggregate --problem " + problem() + " --mc-samples 100 --out " +
          (root / "answer.json").string(),
  };
  for (const auto& args : commands) {
    const auto r = run_cli(args + " > /dev/null");
    EXPECT_NE(r.status, 0) << args;
    EXPECT_TRUE(contains(r.err, "No space left on device")) << args << "\n" << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
  }
  EXPECT_TRUE(temp_files(root).empty());
  fs::remove(root / "filler");
  auto after = snapshot(root);
  for (auto it = after.begin(); it != after.end();) {  // what the failed commands left
    const bool earlier = before.count(it->first) > 0;
    if (!earlier) {
      // Only complete records: an empty lock file, or a config.json that parses.
      const std::string name = fs::path(it->first).filename().string();
      EXPECT_TRUE(name == bayesagg::kFolderLockName || name == "config.json") << it->first;
      it = after.erase(it);
    } else {
      ++it;
    }
  }
  EXPECT_EQ(after, before);
}

TEST(HostileCli, FileSizeLimitFailsTheCheckpointWriteCleanly) {
  // RLIMIT_FSIZE with SIGXFSZ ignored: writes beyond 128 KiB fail with EFBIG, as on a full disk,
  // without root. The checkpoint (about 160 KiB) cannot be written; the small records can.
  TempDir dir("bayesagg_hostile_fsize_");
  const auto r = bayesagg::testing::run_cli_after(
      "trap '' XFSZ; ulimit -f 256; ", kTrain + " --out " + dir.file("run") + " > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(
      contains(r.err, "cannot write '" + dir.file("run/checkpoint.pt") + "': File too large"))
      << r.err;
  EXPECT_TRUE(one_line(r.err)) << r.err;
  EXPECT_TRUE(temp_files(dir.path).empty());
  EXPECT_FALSE(fs::exists(dir.path / "run" / "checkpoint.pt"));
  // Nothing to resume from, and the message says so.
  const auto resume = run_cli("train --resume " + dir.file("run"));
  EXPECT_NE(resume.status, 0);
  EXPECT_TRUE(contains(resume.err, "checkpoint.pt' does not exist")) << resume.err;
}

// ------------------------------------------------------------------ kills, then --resume

TEST(HostileCli, KillsAtAnyMomentThenResumeEndWithTheNumbersOfAnUninterruptedRun) {
  TempDir dir("bayesagg_hostile_kill_");
  const std::string args =
      "train --benchmark synthetic-regression --method bayesagg --epochs 3 --train-subset 256 "
      "--batch-size 128 --seed 3 --threads 1 --progress none";
  ASSERT_EQ(run_cli(args + " --out " + dir.file("reference") + " > /dev/null").status, 0);

  // During the second checkpoint write (half of the temporary file written), then at fixed
  // moments of the run: before, during and after the data load and the epochs.
  struct Kill {
    std::string env;
    int after_ms;
  };
  const std::vector<Kill> kills = {{"BAYESAGG_FAULT_KILL_WRITING=checkpoint.pt@2", -1},
                                   {"", 30},
                                   {"", 250},
                                   {"", 500},
                                   {"", 800},
                                   {"", 1200}};
  int n = 0;
  for (const Kill& k : kills) {
    const fs::path out = dir.path / ("run" + std::to_string(++n));
    auto argv = split_args(args);
    argv.push_back("--out");
    argv.push_back(out.string());
    const pid_t pid = spawn_cli(
        argv, k.env.empty() ? std::vector<std::string>{} : std::vector<std::string>{k.env});
    if (k.after_ms >= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(k.after_ms));
      ::kill(pid, SIGKILL);
    }
    const int status = wait_for(pid);
    if (k.after_ms < 0) {
      ASSERT_EQ(status, -SIGKILL) << "the fault hook did not kill the run";
      ASSERT_FALSE(temp_files(out).empty()) << "killed during the write: its temporary file";
    }
    // As a user would go on: resume when there is a checkpoint, else start the run again.
    std::string again;
    if (fs::exists(out / "checkpoint.pt")) {
      again = "train --resume " + out.string();
    } else if (status == 0) {
      again = "";  // the run ended before the kill
    } else {
      again = args + " --out " + out.string() + " --overwrite";
    }
    if (!again.empty()) {
      const auto r = run_cli(again + " > /dev/null");
      ASSERT_EQ(r.status, 0) << k.env << " " << k.after_ms << " ms: " << again << "\n" << r.err;
    }
    expect_same_numbers(dir.path / "reference", out);
    EXPECT_TRUE(temp_files(out).empty()) << k.after_ms << " ms";
  }
}

// ------------------------------------------------------------------ two processes, one --out

TEST(HostileCli, ASecondProcessOnALockedOutRefusesClearly) {
  TempDir dir("bayesagg_hostile_lock_");
  for (const char* sub : {"cmp", "run"}) {
    fs::create_directories(dir.path / sub);
    // This process holds the folder's lock, as a running compare or train would.
    const std::string lock_path = (dir.path / sub / bayesagg::kFolderLockName).string();
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    const std::string pid = std::to_string(::getpid());
    ASSERT_EQ(::write(fd, pid.data(), pid.size()), static_cast<ssize_t>(pid.size()));
    const std::string args = (std::string(sub) == "cmp" ? kCompare : kTrain) + " --out " +
                             dir.file(sub) + " > /dev/null";
    const auto r = run_cli(args);
    EXPECT_NE(r.status, 0);
    EXPECT_TRUE(contains(r.err, "'" + dir.file(sub) +
                                    "' is in use by another bayesagg process "
                                    "(process " +
                                    pid + ")"))
        << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_FALSE(fs::exists(dir.path / sub / "config.json"));
    EXPECT_FALSE(fs::exists(dir.path / sub / "table.csv"));
    ::close(fd);  // released: now it runs
    EXPECT_EQ(run_cli(args).status, 0);
  }
}

TEST(HostileCli, TwoComparesStartedTogetherEndConsistentOrOneRefuses) {
  TempDir dir("bayesagg_hostile_two_");
  // Two seeds and two methods: a run long enough for the two to overlap.
  const std::string cmd =
      "compare --benchmark synthetic-regression --methods ls,mgda --seeds 2 --epochs 1 "
      "--train-subset 256 --batch-size 128 --threads 1 --progress none --out " +
      dir.file("cmp");
  const pid_t a = spawn_cli(split_args(cmd)), b = spawn_cli(split_args(cmd));
  const int sa = wait_for(a), sb = wait_for(b);
  EXPECT_TRUE(sa == 0 || sb == 0) << sa << " " << sb;
  // A third call reuses every run they left (all finished, none half-written) and writes the
  // same table.
  const std::string table = bayesagg::read_file(dir.file("cmp/table.csv"));
  const auto third = run_cli(cmd + " > " + dir.file("third.log"));
  ASSERT_EQ(third.status, 0) << third.err;
  const std::string log = bayesagg::read_file(dir.file("third.log"));
  EXPECT_TRUE(contains(log, "reused")) << log;
  EXPECT_FALSE(contains(log, "epoch 1/1")) << log;
  EXPECT_EQ(bayesagg::read_file(dir.file("cmp/table.csv")), table);
  EXPECT_TRUE(temp_files(dir.path).empty());
}

// ------------------------------------------------------------------ unusual paths

TEST(HostileCli, NonUtf8OutPathsWork) {
  TempDir dir("bayesagg_hostile_utf8_");
  const std::string bad = "bad\xff\xfe";
  const auto train = run_cli(kTrain + " --out '" + dir.file(bad + "run") + "' > /dev/null");
  ASSERT_EQ(train.status, 0) << train.err;
  EXPECT_TRUE(summary_of(dir.path / (bad + "run")).completed());
  const auto resume = run_cli("train --resume '" + dir.file(bad + "run") + "' > /dev/null");
  EXPECT_EQ(resume.status, 0) << resume.err;
  const auto cmp = run_cli(kCompare + " --out '" + dir.file(bad + "cmp") + "' > /dev/null");
  EXPECT_EQ(cmp.status, 0) << cmp.err;
  EXPECT_TRUE(fs::is_regular_file(dir.path / (bad + "cmp") / "table.csv"));
  const auto agg = run_cli("aggregate --problem " + problem() + " --mc-samples 100 --out '" +
                           dir.file(bad + ".json") + "'");
  EXPECT_EQ(agg.status, 0) << agg.err;
  EXPECT_TRUE(fs::is_regular_file(dir.path / (bad + ".json")));
}

TEST(HostileCli, VeryLongPathsWorkUpToTheSystemLimitAndFailCleanlyBeyond) {
  TempDir dir("bayesagg_hostile_long_");
  fs::path deep = dir.path;
  while (deep.string().size() < 3600) deep /= std::string(240, 'd');  // NAME_MAX is 255
  const auto ok = run_cli(kTrain + " --out " + deep.string() + " > /dev/null");
  EXPECT_EQ(ok.status, 0) << ok.err;
  EXPECT_TRUE(fs::is_regular_file(deep / "summary.json"));
  fs::path too_deep = deep;
  while (too_deep.string().size() < 4200) too_deep /= std::string(240, 'e');  // > PATH_MAX
  for (const std::string& args : {kTrain + " --out " + too_deep.string(),
                                  "aggregate --problem " + problem() + " --mc-samples 100 --out " +
                                      too_deep.string() + "/a.json"}) {
    const auto r = run_cli(args + " > /dev/null");
    EXPECT_NE(r.status, 0);
    EXPECT_TRUE(contains(r.err, "File name too long")) << r.err;
    EXPECT_TRUE(one_line(r.err)) << r.err;
  }
  const fs::path long_leaf = dir.path / std::string(300, 'n');
  const auto r = run_cli(kTrain + " --out " + long_leaf.string() + " > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "File name too long")) << r.err;
}

}  // namespace
