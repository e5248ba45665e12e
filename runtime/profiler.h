// Kernel-level profiler: while a tg::Profiler is alive, every kernel that an op dispatches
// through the op registry is timed (host time of the call and, on CUDA, device time from
// events recorded on the current stream around it) and the calls are summed per kernel
// slot. Costs nothing measurable when no profiler runs (one relaxed atomic load per call).
//
//   tg::Profiler prof;
//   for (int i = 0; i < 10; ++i) train_step();
//   std::cout << prof.stop();            // table sorted by device time
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "runtime/device.h"

namespace tg {

/// Time spent in one kernel slot on one device type over a profiled stretch.
struct ProfileEntry {
  std::string name;          ///< kernel slot, e.g. "attention_fwd_kernel"
  DeviceType device = DeviceType::CPU;
  std::int64_t calls = 0;
  double host_ms = 0;        ///< time the calling thread spent in the calls
  double device_ms = 0;      ///< device time between the events around the calls (CPU: host_ms)
};

/// The result of a profiled stretch: entries sorted by device time, largest first.
class Profile {
 public:
  Profile() = default;
  Profile(std::vector<ProfileEntry> entries, double wall_ms);
  const std::vector<ProfileEntry>& entries() const { return entries_; }
  /// The entry of `name` on `device`, or nullptr when no such kernel ran.
  const ProfileEntry* find(const std::string& name, DeviceType device) const;
  /// Sum of device_ms over all entries.
  double total_device_ms() const;
  /// Host wall-clock time from the profiler's start to stop().
  double wall_ms() const { return wall_ms_; }
  /// A table of the `top` largest entries (0: all) with calls, total and mean time and the
  /// share of the total device time.
  std::string table(std::size_t top = 0) const;

 private:
  std::vector<ProfileEntry> entries_;
  double wall_ms_ = 0;
};

std::ostream& operator<<(std::ostream& os, const Profile& p);

/// Records the kernels of all threads from construction until stop() (or destruction).
/// One profiler at a time: constructing a second one while one runs throws tg::ValueError.
/// Kernels called from inside another kernel's call are counted in the outer one only.
class Profiler {
 public:
  Profiler();
  ~Profiler();
  Profiler(const Profiler&) = delete;
  Profiler& operator=(const Profiler&) = delete;
  /// Ends recording, waits for the recorded device work and returns the profile. Throws
  /// tg::ValueError when called twice.
  Profile stop();

 private:
  bool running_ = true;
};

namespace runtime {

/// True while a Profiler runs.
bool profiling();

/// Times one kernel call when profiling (see Kernel in ops/dispatch.h).
class KernelTimer {
 public:
  KernelTimer(const std::string& name, Device device);
  ~KernelTimer();
  KernelTimer(const KernelTimer&) = delete;
  KernelTimer& operator=(const KernelTimer&) = delete;

 private:
  const std::string* name_ = nullptr;  ///< null: not recorded (nested, or profiling ended)
  Device device_;
  void* start_event_ = nullptr;
  std::int64_t start_ns_ = 0;
  std::uint64_t generation_ = 0;  ///< the profiler run it belongs to
};

}  // namespace runtime
}  // namespace tg
