#include "runtime/deferred_checks.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <utility>
#include <vector>

#include "runtime/backend.h"

namespace tg {
namespace {

// -1: not read from the environment yet.
std::atomic<int> g_sync_checks{-1};

// A verdict waiting for its marker, or the error a verdict raised, waiting for a
// synchronisation of its device.
struct Pending {
  Device device;
  void* marker = nullptr;
  std::function<void()> verdict;
};
struct Failure {
  Device device;
  std::exception_ptr error;
};

// Per thread, so that an error surfaces in the thread whose op found it.
struct ThreadChecks {
  std::deque<Pending> queue;
  std::vector<Failure> failures;

  ~ThreadChecks() {
    // Thread (or process) exit: nobody will synchronise any more. The verdicts' resources
    // go with them; the markers go back to their backends.
    for (Pending& p : queue) {
      if (runtime::Backend* b = runtime::find_backend(p.device.type)) b->release_marker(p.marker);
    }
  }

  // Runs every queued verdict of `device` whose work has finished (`wait_front`: waits for
  // the oldest first), keeping the errors they raise. The verdicts leave the queue before
  // any runs, so a verdict may itself synchronise (and re-enter here).
  void run_ready(Device device, bool wait_front) {
    runtime::Backend& b = runtime::backend(device);
    std::vector<std::function<void()>> ready;
    for (auto it = queue.begin(); it != queue.end();) {
      if (!(it->device == device) || !b.marker_reached(it->marker, wait_front && ready.empty())) {
        ++it;
        continue;
      }
      b.release_marker(it->marker);
      ready.push_back(std::move(it->verdict));
      it = queue.erase(it);
    }
    for (auto& verdict : ready) {
      try {
        verdict();
      } catch (...) {
        failures.push_back({device, std::current_exception()});
      }
    }
  }
};

thread_local ThreadChecks t_checks;

// Verdicts queued beyond this many make the next defer_check wait for the oldest one.
constexpr std::size_t kMaxQueued = 4096;

}  // namespace

void set_sync_checks(bool on) { g_sync_checks.store(on ? 1 : 0, std::memory_order_relaxed); }

bool sync_checks() {
  int v = g_sync_checks.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* env = std::getenv("TG_SYNC_CHECKS");
    const int from_env = env != nullptr && std::strcmp(env, "1") == 0 ? 1 : 0;
    // A concurrent set_sync_checks wins over the environment.
    g_sync_checks.compare_exchange_strong(v, from_env, std::memory_order_relaxed);
    v = g_sync_checks.load(std::memory_order_relaxed);
  }
  return v == 1;
}

namespace runtime {

void defer_check(Stream stream, std::function<void()> verdict) {
  Backend& b = backend(stream.device);
  void* marker = b.record_marker(stream);
  if (marker == nullptr) {  // synchronous backend: the values are final now
    verdict();
    return;
  }
  t_checks.queue.push_back({stream.device, marker, std::move(verdict)});
  if (sync_checks()) {
    b.synchronize(stream);  // the backend runs the verdicts of the stream's work and throws
    return;
  }
  t_checks.run_ready(stream.device, t_checks.queue.size() > kMaxQueued);
}

void run_deferred_checks(Device device) {
  ThreadChecks& tc = t_checks;
  tc.run_ready(device, false);
  std::exception_ptr first;
  for (auto it = tc.failures.begin(); it != tc.failures.end();) {
    if (it->device == device) {
      if (!first) first = it->error;
      it = tc.failures.erase(it);
    } else {
      ++it;
    }
  }
  if (first) std::rethrow_exception(first);
}

std::size_t pending_deferred_checks() { return t_checks.queue.size() + t_checks.failures.size(); }

}  // namespace runtime
}  // namespace tg
