// Thread counts: refused beyond the bound or below 0, never truncated.
#include "bayesagg/core/json_checks.h"
#include "bayesagg/core/runtime.h"

#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>

namespace bayesagg {
namespace {

TEST(Runtime, ThreadCountsAreBoundedAndNeverTruncated) {
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  EXPECT_EQ(max_threads(), std::min<int64_t>(1024, std::max<int64_t>(4, 4 * hw)));
  EXPECT_EQ(resolve_threads(0), hw);
  // Ranks sharing the machine split it (at least one thread each); an explicit count is kept.
  EXPECT_EQ(resolve_threads(0, 2), std::max<int64_t>(1, hw / 2));
  EXPECT_EQ(resolve_threads(0, 4 * hw), 1);
  EXPECT_EQ(resolve_threads(3, 2), 3);
  EXPECT_THROW(resolve_threads(0, 0), c10::Error);
  EXPECT_EQ(resolve_threads(1), 1);
  EXPECT_EQ(resolve_threads(max_threads()), max_threads());
  // 4294967297 = 2^32 + 1 was truncated to 1 thread.
  for (const int64_t bad : {int64_t(4294967297LL), max_threads() + 1, int64_t(-1)}) {
    try {
      resolve_threads(bad);
      FAIL() << bad << " threads must be refused";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.msg()).find("--threads " + std::to_string(bad)), std::string::npos)
          << e.msg();
    }
  }
}

std::string duplicate_error(const std::string& text) {
  try {
    check_unique_json_keys(text, "--config 'x.json'");
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

TEST(JsonChecks, DuplicateKeysAreFoundAtAnyDepthAndNamed) {
  EXPECT_EQ(duplicate_error(R"({"lr": 0.1, "epochs": 3})"), "");
  EXPECT_EQ(duplicate_error(R"({"a": {"x": 1}, "b": {"x": 1}, "c": [{"x": 1}, {"x": 2}]})"), "");
  EXPECT_EQ(duplicate_error("not json {"), "");  // the caller's parser reports that
  const std::string top = duplicate_error(R"({"lr": 0.1, "epochs": 3, "lr": 0.001})");
  EXPECT_NE(top.find("--config 'x.json': key 'lr' appears twice in the top-level object"),
            std::string::npos)
      << top;
  const std::string nested = duplicate_error(R"({"a": [1, {"b": {"s": 1, "s": 2}}]})");
  EXPECT_NE(nested.find("key 's' appears twice in 'a[1].b'"), std::string::npos) << nested;
}

}  // namespace
}  // namespace bayesagg
