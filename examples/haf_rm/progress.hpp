// progress.hpp: training progress on stdout. On a terminal, one self-redrawing bar with ETA and
// running loss/accuracy; otherwise (a pipe, a log file, CI) plain lines every `log_every` steps,
// because carriage returns make unreadable logs.
//
//   rm::Progress p(rm::Progress::resolve("auto"), total_steps, start_step);
//   p.update(step, "loss 0.41 acc 0.87");        // redraws the bar (throttled)
//   p.line("eval acc 0.91");                     // a line above the bar / a plain line
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace hafrm::examples::rm {

namespace detail {

// One number through a printf format ("%.4f", "%.2e"), for the lines the trainer prints.
inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace detail

inline std::string format_duration(double seconds) {
  if (!(seconds >= 0.0) || seconds > 1e7) return "--:--";
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  return buf;
}

class Progress {
 public:
  enum class Mode { kBar, kPlain, kNone };

  static Mode resolve(const std::string& spec) {
    if (spec == "auto") return ::isatty(STDOUT_FILENO) ? Mode::kBar : Mode::kPlain;
    if (spec == "bar") return Mode::kBar;
    if (spec == "plain") return Mode::kPlain;
    if (spec == "none") return Mode::kNone;
    throw std::invalid_argument("--progress must be auto, bar, plain or none, got \"" + spec +
                                "\"");
  }

  Progress(Mode mode, int64_t total, int64_t start)
      : mode_(mode), total_(total), start_(start), t0_(Clock::now()) {}
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  Mode mode() const { return mode_; }

  // Steps per second since this process started training, and the remaining time at that rate.
  double rate(int64_t step) const {
    const double dt = elapsed();
    return dt > 0.0 ? static_cast<double>(step - start_) / dt : 0.0;
  }
  std::string eta(int64_t step) const {
    const double r = rate(step);
    return r > 0.0 ? format_duration(static_cast<double>(total_ - step) / r) : "--:--";
  }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }

  void update(int64_t step, const std::string& stats) {
    if (mode_ != Mode::kBar) return;
    const auto now = Clock::now();
    if (step < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    const double frac = total_ > 0 ? static_cast<double>(step) / static_cast<double>(total_) : 1.0;
    const int filled = std::clamp(static_cast<int>(frac * kWidth + 0.5), 0, kWidth);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::printf("\r\033[K%lld/%lld [%s] %3d%%  %s  %.1f it/s  %s<%s", static_cast<long long>(step),
                static_cast<long long>(total_), bar.c_str(), static_cast<int>(frac * 100.0),
                stats.c_str(), rate(step), format_duration(elapsed()).c_str(), eta(step).c_str());
    std::fflush(stdout);
    drawn_ = true;
  }

  // A full line: above the bar on a terminal, as is otherwise.
  void line(const std::string& text) {
    if (mode_ == Mode::kNone) return;
    if (drawn_) std::printf("\r\033[K");
    std::printf("%s\n", text.c_str());
    std::fflush(stdout);
    drawn_ = false;
  }

  void finish() {
    if (drawn_) std::printf("\n");
    std::fflush(stdout);
    drawn_ = false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  Mode mode_;
  int64_t total_, start_;
  Clock::time_point t0_, last_draw_{};
  bool drawn_ = false;
};

}  // namespace hafrm::examples::rm
