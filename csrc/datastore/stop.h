// Cooperative cancellation of long native loops (suffix sorting phases, verification, REST and
// tree drafting, batch queries). A loop calls check() every few thousand steps; it throws
// Interrupted once stop was requested. The core knows nothing about Python: the bindings pass a
// `poll` function that checks for pending signals (Ctrl-C, SIGTERM) and run it only on the thread
// that made the Stop, at most every 20 ms; worker threads only read the shared flag.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <thread>

namespace verispec::ds {

struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

class Stop {
 public:
  explicit Stop(std::function<bool()> poll = nullptr) : poll_(std::move(poll)), owner_(std::this_thread::get_id()) {}
  Stop(const Stop&) = delete;
  Stop& operator=(const Stop&) = delete;

  void request() const { flag_.store(true, std::memory_order_relaxed); }
  bool requested() const { return flag_.load(std::memory_order_relaxed); }

  // Throws Interrupted when stop was requested (here or by the poll function).
  void check() const {
    if (poll_ && std::this_thread::get_id() == owner_) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_poll_) {
        next_poll_ = now + std::chrono::milliseconds(20);
        if (poll_()) request();
      }
    }
    if (requested()) throw Interrupted();
  }

 private:
  mutable std::atomic<bool> flag_{false};
  std::function<bool()> poll_;
  std::thread::id owner_;
  mutable std::chrono::steady_clock::time_point next_poll_{};  // read and written by the owner only
};

// For hot loops: check every 4096 steps (a counter increment otherwise).
class StopTicker {
 public:
  explicit StopTicker(const Stop* s) : s_(s) {}
  void tick() {
    if (s_ && (++n_ & 4095) == 0) s_->check();
  }
  void check() const {
    if (s_) s_->check();
  }

 private:
  const Stop* s_;
  uint64_t n_ = 0;
};

}  // namespace verispec::ds
