#include "runtime/profiler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <ostream>
#include <utility>

#include "runtime/backend.h"
#include "runtime/error.h"

namespace tg {
namespace runtime {
namespace {

struct Record {
  const std::string* name;
  Device device;
  std::int64_t host_ns;
  void* start_event;
  void* end_event;
};

// The one profiler run. Timers capture the generation at their start and drop their record
// when it has changed by their end (the run they belong to was stopped meanwhile), so a
// record never lands in a later run.
struct State {
  std::mutex mu;
  std::vector<Record> records;
  std::uint64_t generation = 0;
  std::chrono::steady_clock::time_point start;
};

State& state() {
  static State s;
  return s;
}

std::atomic<bool> g_active{false};
thread_local int t_depth = 0;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void destroy_events(const Record& r) {
  if (!r.start_event && !r.end_event) return;
  Backend& b = backend(r.device);
  if (r.start_event) b.destroy_timing_event(r.start_event);
  if (r.end_event) b.destroy_timing_event(r.end_event);
}

}  // namespace

bool profiling() { return g_active.load(std::memory_order_relaxed); }

KernelTimer::KernelTimer(const std::string& name, Device device) : device_(device) {
  if (t_depth++ > 0) return;  // inside another kernel's call: counted there
  {
    State& s = state();
    std::lock_guard<std::mutex> lock(s.mu);
    if (!g_active.load(std::memory_order_relaxed)) return;
    generation_ = s.generation;
  }
  name_ = &name;
  if (!device_.is_cpu()) {
    Backend& b = backend(device_);
    start_event_ = b.record_timing_event(b.current_stream(device_));
  }
  start_ns_ = now_ns();
}

KernelTimer::~KernelTimer() {
  --t_depth;
  if (!name_) return;
  Record r{name_, device_, now_ns() - start_ns_, start_event_, nullptr};
  if (start_event_) {
    Backend& b = backend(device_);
    r.end_event = b.record_timing_event(b.current_stream(device_));
  }
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (g_active.load(std::memory_order_relaxed) && s.generation == generation_) {
      s.records.push_back(r);
      return;
    }
  }
  destroy_events(r);
}

}  // namespace runtime

Profiler::Profiler() {
  runtime::State& s = runtime::state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (runtime::g_active.load()) TG_THROW(ValueError, "Profiler: another profiler is already running");
  s.records.clear();
  s.start = std::chrono::steady_clock::now();
  runtime::g_active.store(true);
}

Profiler::~Profiler() {
  if (!running_) return;
  try {
    (void)stop();
  } catch (...) {
    // a destructor must not throw; the profile is simply dropped
  }
}

Profile Profiler::stop() {
  TG_CHECK(running_, ValueError, "Profiler::stop: the profiler was already stopped");
  running_ = false;
  runtime::State& s = runtime::state();
  std::vector<runtime::Record> records;
  double wall_ms = 0;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    runtime::g_active.store(false);
    ++s.generation;
    records.swap(s.records);
    wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s.start).count();
  }
  std::map<std::pair<std::string, DeviceType>, ProfileEntry> sums;
  for (const runtime::Record& r : records) {
    ProfileEntry& e = sums[{*r.name, r.device.type}];
    e.name = *r.name;
    e.device = r.device.type;
    ++e.calls;
    const double host_ms = static_cast<double>(r.host_ns) * 1e-6;
    e.host_ms += host_ms;
    if (r.start_event && r.end_event) {
      e.device_ms += runtime::backend(r.device).timing_event_elapsed_ms(r.start_event, r.end_event);
    } else {
      e.device_ms += host_ms;
    }
    runtime::destroy_events(r);
  }
  std::vector<ProfileEntry> entries;
  entries.reserve(sums.size());
  for (auto& kv : sums) entries.push_back(std::move(kv.second));
  return Profile(std::move(entries), wall_ms);
}

Profile::Profile(std::vector<ProfileEntry> entries, double wall_ms) : entries_(std::move(entries)), wall_ms_(wall_ms) {
  std::stable_sort(entries_.begin(), entries_.end(),
                   [](const ProfileEntry& a, const ProfileEntry& b) { return a.device_ms > b.device_ms; });
}

const ProfileEntry* Profile::find(const std::string& name, DeviceType device) const {
  for (const ProfileEntry& e : entries_) {
    if (e.name == name && e.device == device) return &e;
  }
  return nullptr;
}

double Profile::total_device_ms() const {
  double t = 0;
  for (const ProfileEntry& e : entries_) t += e.device_ms;
  return t;
}

std::string Profile::table(std::size_t top) const {
  const double total = total_device_ms();
  std::size_t width = 6;
  for (const ProfileEntry& e : entries_) width = std::max(width, e.name.size());
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-*s %-6s %8s %11s %10s %11s %6s\n", static_cast<int>(width), "kernel", "device",
                "calls", "device ms", "mean us", "host ms", "%");
  out += line;
  const std::size_t n = top == 0 ? entries_.size() : std::min(top, entries_.size());
  double rest_ms = 0;
  std::int64_t rest_calls = 0;
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const ProfileEntry& e = entries_[i];
    if (i >= n) {
      rest_ms += e.device_ms;
      rest_calls += e.calls;
      continue;
    }
    std::snprintf(line, sizeof line, "%-*s %-6s %8lld %11.3f %10.2f %11.3f %6.1f\n", static_cast<int>(width),
                  e.name.c_str(), device_type_name(e.device), static_cast<long long>(e.calls), e.device_ms,
                  e.calls ? 1e3 * e.device_ms / static_cast<double>(e.calls) : 0.0, e.host_ms,
                  total > 0 ? 100 * e.device_ms / total : 0.0);
    out += line;
  }
  if (n < entries_.size()) {
    std::snprintf(line, sizeof line, "%-*s %-6s %8lld %11.3f %10s %11s %6.1f\n", static_cast<int>(width),
                  ("(" + std::to_string(entries_.size() - n) + " more)").c_str(), "", static_cast<long long>(rest_calls),
                  rest_ms, "", "", total > 0 ? 100 * rest_ms / total : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-*s %-6s %8s %11.3f %10s %11s %6s   (wall %.3f ms)\n", static_cast<int>(width),
                "total", "", "", total, "", "", "", wall_ms_);
  out += line;
  return out;
}

std::ostream& operator<<(std::ostream& os, const Profile& p) { return os << p.table(); }

}  // namespace tg
