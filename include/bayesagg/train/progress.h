#pragma once
/// Progress display of a training epoch: a live bar with rate and ETA on a terminal, plain
/// periodic lines otherwise (logs, CI), or nothing.

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>

namespace bayesagg {

/// How progress is shown.
enum class ProgressMode {
  none,   ///< nothing
  bar,    ///< a bar redrawn in place (`\r`), at most 10 times a second
  lines,  ///< one line every `line_interval` seconds
};

/// `auto` → bar when `is_terminal`, lines otherwise; `bar`, `lines`, `none` as named.
ProgressMode parse_progress_mode(const std::string& name, bool is_terminal);

/// Whether standard error is a terminal.
bool stderr_is_terminal();

/// Formats seconds as `42s`, `3m07s` or `1h02m`.
std::string format_duration(double seconds);

/// Progress of one epoch of `total` steps.
class ProgressBar {
 public:
  /// Draws on `os` (usually std::cerr).
  ProgressBar(ProgressMode mode, std::ostream& os, double line_interval = 10.0);
  /// Starts a new epoch: `label` is e.g. `epoch 3/10`.
  void start(const std::string& label, int64_t total);
  /// `done` steps are finished; `extra` (e.g. the loss) is shown after the ETA.
  void update(int64_t done, const std::string& extra = "");
  /// Clears the bar (bar mode), so that the epoch's summary line can follow.
  void finish();

 private:
  using Clock = std::chrono::steady_clock;
  ProgressMode mode_;
  std::ostream& os_;
  double line_interval_;
  std::string label_;
  int64_t total_ = 0;
  Clock::time_point start_, last_draw_;
  bool drawn_ = false;
  size_t last_width_ = 0;
};

}  // namespace bayesagg
