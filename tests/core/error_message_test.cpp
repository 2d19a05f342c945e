// Error messages about user files quote what they complain about, but boundedly (a 100 KB line,
// string or JSON value is cut to kMaxEchoedChars with its size), and name the file.
#include "bayesagg/core/files.h"
#include "bayesagg/core/text.h"
#include "bayesagg/data/paper/chestx14.h"
#include "bayesagg/io/problem.h"
#include "bayesagg/train/metrics.h"
#include "bayesagg/train/options.h"

#include "test_util.h"

#include <gtest/gtest.h>

namespace bayesagg {
namespace {

using testing::contains;
using testing::error_of;
using testing::TempDir;

/// A message short enough to read: the echoed part at most kMaxEchoedChars plus the sentence.
constexpr size_t kReadable = 2000;

TEST(Excerpt, KeepsShortTextAndCutsLongTextAtACharacterBoundaryWithItsSize) {
  EXPECT_EQ(excerpt("lr"), "lr");
  EXPECT_EQ(excerpt("a\nb\x01"), "a\\x0Ab\\x01");
  const std::string cut = excerpt(std::string(100000, 'x'));
  EXPECT_EQ(cut, std::string(200, 'x') + "\xE2\x80\xA6 (100000 bytes)");
  // 199 ASCII bytes then a 2-byte character across the cut: the character is not split.
  const std::string utf8 = std::string(199, 'a') + "\xC3\xA9" + std::string(10, 'b');
  EXPECT_EQ(excerpt(utf8), std::string(199, 'a') + "\xE2\x80\xA6 (211 bytes)");
}

TEST(ErrorMessages, ConfigValuesAndKeysAreEchoedBoundedly) {
  const std::string big(100000, 'q');
  for (const std::string& json :
       {"{\"method\": \"" + big + "\"}", "{\"epochs\": \"" + big + "\"}", "{\"" + big + "\": 1}",
        "{\"lr\": [" + std::string(100000, '1') + "]}",
        "{\"lr\": \"" + big /* unterminated: nlohmann's message quotes the token */}) {
    TrainOptions o;
    const std::string msg = error_of([&] {
      apply_config_json(o, json, "--config 'run.json'");
      o.validate();
    });
    EXPECT_LT(msg.size(), kReadable) << msg.substr(0, 300);
    EXPECT_TRUE(contains(msg, "(100")) << msg.substr(0, 300);  // the size of what was cut
  }
  TrainOptions o;
  const std::string named =
      error_of([&] { apply_config_json(o, "{\"lr\": \"x\"}", "--config 'r.json'"); });
  EXPECT_TRUE(contains(named, "--config 'r.json'")) << named;
}

TEST(ErrorMessages, ProblemAndBaselineFilesAreNamedAndTheirValuesEchoedBoundedly) {
  TempDir dir("bayesagg_messages_");
  std::string text = read_file(testing::fixture_dir() + "/reg_o1.json");
  const size_t at = text.find("\"n_outputs\": 1");
  ASSERT_NE(at, std::string::npos);
  std::string many = "7";
  for (int i = 0; i < 20000; ++i) many += ", 7";
  text.replace(at, 14, "\"n_outputs\": [" + many + "]");
  write_file_atomic(dir.file("p.json"), text);
  const std::string msg = error_of([&] { load_problem(dir.file("p.json")); });
  EXPECT_LT(msg.size(), kReadable) << msg.substr(0, 300);
  EXPECT_TRUE(contains(msg, "n_outputs")) << msg.substr(0, 600);
  EXPECT_TRUE(contains(msg, dir.file("p.json"))) << msg.substr(0, 300);

  write_file_atomic(dir.file("stl.json"), "{\"task_0/mae\": [" + std::string(60000, '3') + "]}");
  const std::string stl = error_of([&] { read_stl_baselines(dir.file("stl.json")); });
  EXPECT_LT(stl.size(), kReadable) << stl.substr(0, 300);
  EXPECT_TRUE(contains(stl, dir.file("stl.json"))) << stl.substr(0, 300);
}

TEST(ErrorMessages, ChestXSplitFileLinesAreEchoedBoundedly) {
  TempDir dir("bayesagg_messages_");
  write_file_atomic(dir.file("train.csv"), std::string(100000, 'h') + "\n");
  const std::string header = error_of([&] { read_chestx14_csv(dir.file("train.csv")); });
  EXPECT_LT(header.size(), kReadable) << header.substr(0, 300);
  EXPECT_TRUE(contains(header, dir.file("train.csv") + "', line 1")) << header.substr(0, 300);

  std::string csv = "Image Index";
  for (const auto& t : chestx14_task_names()) csv += "," + t;
  csv += "\nx.png," + std::string(100000, '2') + ",0,0,0,0,0,0,0,0,0,0,0,0,0\n";
  write_file_atomic(dir.file("test.csv"), csv);
  const std::string label = error_of([&] { read_chestx14_csv(dir.file("test.csv")); });
  EXPECT_LT(label.size(), kReadable) << label.substr(0, 300);
  EXPECT_TRUE(contains(label, dir.file("test.csv") + "', line 2")) << label.substr(0, 300);
}

}  // namespace
}  // namespace bayesagg
