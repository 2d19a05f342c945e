#include "bayesagg/train/progress.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>

#include <unistd.h>

namespace bayesagg {

ProgressMode parse_progress_mode(const std::string& name, bool is_terminal) {
  if (name == "auto") return is_terminal ? ProgressMode::bar : ProgressMode::lines;
  if (name == "bar") return ProgressMode::bar;
  if (name == "lines") return ProgressMode::lines;
  if (name == "none") return ProgressMode::none;
  TORCH_CHECK(false, "progress mode must be auto, bar, lines or none, got '", name, "'");
}

bool stderr_is_terminal() { return ::isatty(::fileno(stderr)) == 1; }

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  std::ostringstream os;
  if (s < 60) {
    os << s << "s";
  } else if (s < 3600) {
    os << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  } else {
    os << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  }
  return os.str();
}

ProgressBar::ProgressBar(ProgressMode mode, std::ostream& os, double line_interval)
    : mode_(mode), os_(os), line_interval_(line_interval) {}

void ProgressBar::start(const std::string& label, int64_t total) {
  label_ = label;
  total_ = total;
  start_ = last_draw_ = Clock::now();
  drawn_ = false;
}

void ProgressBar::update(int64_t done, const std::string& extra) {
  if (mode_ == ProgressMode::none || total_ <= 0) return;
  const auto now = Clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  const bool last = done >= total_;
  if (mode_ == ProgressMode::bar && since_draw < 0.1 && !last && drawn_) return;
  if (mode_ == ProgressMode::lines && (since_draw < line_interval_ || last)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : NAN;
  std::ostringstream line;
  line << label_ << " ";
  if (mode_ == ProgressMode::bar) {
    constexpr int kWidth = 24;
    const int filled = static_cast<int>(kWidth * done / total_);
    line << "[" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] ";
  }
  line << done << "/" << total_ << " steps  " << std::fixed << std::setprecision(1) << rate
       << " steps/s  ETA " << format_duration(eta);
  if (!extra.empty()) line << "  " << extra;
  const std::string text = line.str();
  if (mode_ == ProgressMode::bar) {
    os_ << "\r" << text;
    if (text.size() < last_width_) os_ << std::string(last_width_ - text.size(), ' ');
    last_width_ = text.size();
  } else {
    os_ << text << "\n";
  }
  os_.flush();
  drawn_ = true;
}

void ProgressBar::finish() {
  if (mode_ == ProgressMode::bar && drawn_) {
    os_ << "\r" << std::string(last_width_, ' ') << "\r";
    os_.flush();
  }
  drawn_ = false;
  last_width_ = 0;
}

}  // namespace bayesagg
