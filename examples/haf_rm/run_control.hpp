// run_control.hpp: the one place a haf_rm run learns that it should stop early (RunControl).
//
// A stop is requested through the API (request_stop(), from a callback or another thread) or by
// SIGINT / SIGTERM while a StopSignals guard routes them to the object; the run loop reads only
// this object, after each optimizer step, and then checkpoints and exits with exit_code(). The
// first request wins: its cause is what the log and the exit code report.
//
//   hafrm::examples::rm::RunControl control;
//   {
//     hafrm::examples::rm::StopSignals signals(control);  // SIGINT/SIGTERM -> control
//     while (training && !control.stop_requested()) { ... }
//   }
//   control.request_stop();  // any thread, any time: stops after the current step
#pragma once

#include <signal.h>

#include <atomic>
#include <csignal>
#include <string>

namespace hafrm::examples::rm {

class RunControl {
 public:
  RunControl() = default;
  RunControl(const RunControl&) = delete;
  RunControl& operator=(const RunControl&) = delete;

  // Asks the run to checkpoint and stop after the current step. `signal` is the signal that asked
  // (what StopSignals passes), 0 for a request through the API. Thread-safe and
  // async-signal-safe (one lock-free compare-and-swap).
  void request_stop(int signal = 0) noexcept {
    int none = kNone;
    cause_.compare_exchange_strong(none, signal > 0 ? signal : kApiRequest);
  }
  bool stop_requested() const noexcept { return cause_.load() != kNone; }
  // The signal that asked for the stop; 0 for an API request or when none was asked for.
  int stop_signal() const noexcept {
    const int c = cause_.load();
    return c > 0 ? c : 0;
  }
  // What asked, for the log: "SIGINT", "SIGTERM", "signal N" or "a stop request".
  std::string cause() const {
    switch (const int s = stop_signal()) {
      case 0:
        return "a stop request";
      case SIGINT:
        return "SIGINT";
      case SIGTERM:
        return "SIGTERM";
      default:
        return "signal " + std::to_string(s);
    }
  }
  // The exit code of a run stopped early: 128 + the signal, 130 (as for SIGINT) for an API
  // request.
  int exit_code() const noexcept {
    const int s = stop_signal();
    return 128 + (s != 0 ? s : SIGINT);
  }

 private:
  static constexpr int kNone = 0, kApiRequest = -1;
  static_assert(std::atomic<int>::is_always_lock_free, "a signal handler writes it");
  std::atomic<int> cause_{kNone};
};

namespace detail {

// The RunControl the signal handler feeds (a handler gets no argument but the signal).
inline std::atomic<RunControl*> g_signal_target{nullptr};
static_assert(std::atomic<RunControl*>::is_always_lock_free, "a signal handler reads it");

extern "C" inline void on_stop_signal(int sig) {
  if (RunControl* c = g_signal_target.load()) c->request_stop(sig);
}

}  // namespace detail

// For its lifetime, SIGINT and SIGTERM request a stop on `control` instead of ending the process.
// SA_RESETHAND makes a second signal terminate at once. The previous handlers (and the previous
// guard's target, for nested guards) come back on destruction.
class StopSignals {
 public:
  explicit StopSignals(RunControl& control)
      : previous_target_(detail::g_signal_target.exchange(&control)) {
    struct sigaction sa {};
    sa.sa_handler = detail::on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
    detail::g_signal_target.store(previous_target_);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  RunControl* previous_target_;
  struct sigaction old_int_ {
  }, old_term_{};
};

}  // namespace hafrm::examples::rm
