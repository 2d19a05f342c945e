// `bayesagg compare` end to end on a tiny synthetic-regression comparison: the tables, reuse of
// finished runs on a second call, and bad method lists.
#include "cli_util.h"
#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>

namespace {

using bayesagg::testing::contains;
using bayesagg::testing::read;
using bayesagg::testing::run_cli;
using bayesagg::testing::TempDir;


TEST(CompareCli, WritesTablesAndReusesFinishedRuns) {
  TempDir dir("bayesagg_compare_cli_");
  const std::string args = "compare --benchmark synthetic-regression --methods stl,ls,mgda "
                           "--seeds 2 --epochs 1 --train-subset 256 --batch-size 128 "
                           "--threads 1 --progress none --out " + dir.path.string();
  const auto first = run_cli(args + " > " + dir.file("first.log"));
  ASSERT_EQ(first.status, 0) << first.err;
  const std::string csv = read(dir.file("table.csv"));
  std::istringstream lines(csv);
  std::string header, line;
  std::getline(lines, header);
  EXPECT_EQ(header.rfind("method,delta_m,delta_m_std,mean_rank,epoch_time_vs_ls,seeds,"
                         "task_0/mae_mean,task_0/mae_std,",
                         0),
            0u)
      << header;
  std::vector<std::string> methods;
  while (std::getline(lines, line)) methods.push_back(line.substr(0, line.find(',')));
  EXPECT_EQ(methods, (std::vector<std::string>{"stl", "ls", "mgda"}));
  EXPECT_TRUE(contains(csv, "\nls,")) << csv;
  EXPECT_TRUE(contains(read(dir.file("table.md")), "| ls |"));
  // 3 methods x 2 seeds; stl holds one run folder per task.
  for (const char* run : {"ls/seed1", "ls/seed2", "mgda/seed2", "stl/seed1/task_9"}) {
    EXPECT_TRUE(std::filesystem::is_regular_file(dir.path / run / "summary.json")) << run;
  }
  // Second call: nothing is retrained, the table is the same.
  const auto second = run_cli(args + " > " + dir.file("second.log"));
  ASSERT_EQ(second.status, 0) << second.err;
  const std::string log = read(dir.file("second.log"));
  size_t reused = 0;
  for (size_t p = log.find("reused"); p != std::string::npos; p = log.find("reused", p + 1)) {
    ++reused;
  }
  EXPECT_EQ(reused, 2u + 2u + 2u * 10u) << log;  // ls, mgda, and stl's 10 tasks per seed
  EXPECT_EQ(read(dir.file("table.csv")), csv);
}

TEST(CompareCli, RejectsUnknownAndRepeatedMethods) {
  TempDir dir("bayesagg_compare_cli_");
  auto r = run_cli("compare --benchmark synthetic-regression --methods ls,nope --out " +
                   dir.path.string() + " > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "unknown method 'nope'")) << r.err;
  r = run_cli("compare --benchmark synthetic-regression --methods ls,ls --out " +
              dir.path.string() + " > /dev/null");
  EXPECT_NE(r.status, 0);
  EXPECT_TRUE(contains(r.err, "'ls' is listed twice")) << r.err;
}

TEST(CompareCli, MethodSpecsAreRowsOfTheirOwn) {
  TempDir dir("bayesagg_compare_cli_");
  const auto r = run_cli(
      "compare --benchmark synthetic-regression --methods "
      "'ls,bayesagg-reference,bayesagg[posterior=head,weighting=snr,ls-epochs=1]' --seeds 1 "
      "--epochs 2 --train-subset 256 --batch-size 128 --threads 1 --progress none --out " +
      dir.path.string() + " > " + dir.file("log"));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string md = read(dir.file("table.md"));
  EXPECT_TRUE(contains(md, "| bayesagg[posterior=head,weighting=snr,ls-epochs=1] |")) << md;
  EXPECT_TRUE(contains(md, "| bayesagg-reference |")) << md;
  const std::string config =
      read(dir.file("bayesagg-posterior_head-weighting_snr-ls-epochs_1/seed1/config.json"));
  EXPECT_TRUE(contains(config, "\"weighting\": \"snr\"")) << config;
  EXPECT_TRUE(contains(read(dir.file("bayesagg-reference/seed1/config.json")),
                       "\"posterior\": \"newton\""));
  const auto bad = run_cli("compare --benchmark synthetic-regression --methods "
                           "'ls,bayesagg[posterior=sideways]' --out " + dir.path.string() +
                           " > /dev/null");
  EXPECT_NE(bad.status, 0);
  EXPECT_TRUE(contains(bad.err, "sideways")) << bad.err;
}

}  // namespace

namespace {

TEST(CompareCli, ADamagedRunConfigIsNamedInTheError) {
  TempDir dir("bayesagg_compare_cli_");
  const std::string args = "compare --benchmark synthetic-regression --methods ls --seeds 1 "
                           "--epochs 1 --train-subset 256 --batch-size 128 --threads 1 "
                           "--progress none --out " + dir.path.string();
  ASSERT_EQ(run_cli(args + " > /dev/null").status, 0);
  const std::string config = dir.file("ls/seed1/config.json");
  std::ofstream(config) << "{\"method\": ";  // cut short
  const auto r = run_cli(args + " > " + dir.file("log.txt"));
  // The run's failure is reported (in the log and the table) naming the damaged file.
  const std::string log = read(dir.file("log.txt"));
  EXPECT_TRUE(contains(log, "'" + config + "': a run's config is not valid")) << log << r.err;
}

}  // namespace
