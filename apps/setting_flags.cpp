#include "setting_flags.h"

#include "bayesagg/train/options.h"

namespace bayesagg::cli {

SettingFlags::SettingFlags(CLI::App* sub, const std::set<std::string>& skip) {
  for (const auto& s : train_settings()) {
    if (skip.count(s.key)) continue;
    keys_.push_back(s.key);
    if (s.value_name == "BOOL") {
      options_[s.key] = sub->add_flag("--" + s.key, flags_[s.key], s.help);
    } else {
      options_[s.key] =
          sub->add_option("--" + s.key, values_[s.key], s.help)->type_name(s.value_name);
    }
  }
}

std::vector<std::string> SettingFlags::given() const {
  std::vector<std::string> out;
  for (const auto& key : keys_) {
    if (options_.at(key)->count() > 0) out.push_back(key);
  }
  return out;
}

std::string SettingFlags::value(const std::string& key) const {
  if (const auto it = flags_.find(key); it != flags_.end()) return it->second ? "true" : "false";
  return values_.at(key);
}

void SettingFlags::apply(TrainOptions& options) const {
  for (const auto& key : given()) apply_setting(options, key, value(key));
}

}  // namespace bayesagg::cli
