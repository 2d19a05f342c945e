#include "bayesagg/core/json_checks.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <set>
#include <vector>

namespace bayesagg {
namespace {

using json = nlohmann::json;

/// SAX handler that records the first key repeated within one object.
struct DuplicateKeyFinder : nlohmann::json_sax<json> {
  struct Level {
    bool object = false;
    std::set<std::string> keys;
    std::string name;  // the key or index under which this container sits
    size_t index = 0;  // next element of an array
  };
  std::vector<Level> stack;
  std::string pending;  // the key whose value comes next
  std::string duplicate, where;

  std::string path() const {
    std::string p;
    for (size_t i = 1; i < stack.size(); ++i) p += stack[i].name;
    return p.empty() ? "the top-level object" : "'" + p + "'";
  }
  /// A value starts: the name it gets in its parent.
  std::string child_name() {
    if (stack.empty()) return "";
    Level& parent = stack.back();
    if (parent.object) return (stack.size() > 1 ? "." : "") + pending;
    return "[" + std::to_string(parent.index++) + "]";
  }
  bool open(bool object) {
    Level l;
    l.object = object;
    l.name = child_name();
    stack.push_back(std::move(l));
    return true;
  }
  bool close() {
    stack.pop_back();
    return true;
  }
  bool value() {
    child_name();
    return true;
  }

  bool null() override { return value(); }
  bool boolean(bool) override { return value(); }
  bool number_integer(number_integer_t) override { return value(); }
  bool number_unsigned(number_unsigned_t) override { return value(); }
  bool number_float(number_float_t, const string_t&) override { return value(); }
  bool string(string_t&) override { return value(); }
  bool binary(binary_t&) override { return value(); }
  bool start_object(std::size_t) override { return open(true); }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(false); }
  bool end_array() override { return close(); }
  bool key(string_t& k) override {
    if (!stack.back().keys.insert(k).second) {
      duplicate = k;
      where = path();
      return false;  // stop parsing
    }
    pending = k;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;
  }
};

}  // namespace

void check_unique_json_keys(const std::string& text, const std::string& what) {
  DuplicateKeyFinder finder;
  json::sax_parse(text, &finder, json::input_format_t::json, /*strict=*/false);
  TORCH_CHECK(finder.duplicate.empty(), what, ": key '", finder.duplicate, "' appears twice in ",
              finder.where, "; JSON parsers keep only one of them, so remove the other");
}

}  // namespace bayesagg
