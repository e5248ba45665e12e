// The per-device-type backend interface. The CPU backend is always present; the CUDA
// backend registers itself when the library is built with CUDA. Code above runtime/
// reaches a backend only through `backend(device)`, so no public function needs #ifdefs.
#pragma once

#include <cstddef>
#include <cstring>

#include "runtime/device.h"
#include "runtime/memory.h"
#include "runtime/stream.h"

namespace tg::runtime {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual int device_count() const = 0;

  /// Allocates `nbytes` on `device` for use on `stream`; throws tg::OutOfMemory.
  virtual void* allocate(std::size_t nbytes, Stream stream) = 0;
  /// Returns memory from `allocate`. Safe to call while kernels using it are queued on
  /// the allocation stream (and streams recorded with record_stream).
  virtual void deallocate(void* ptr, Device device) = 0;
  /// Marks `ptr` as used by `stream` too, so it is not reused before that stream's
  /// queued work completes.
  virtual void record_stream(void* ptr, Stream stream) = 0;

  /// Copies `nbytes` between host and this backend's devices (either side may be CPU),
  /// ordered on `stream`; returns once the data is safe to read on the host when dst is CPU.
  virtual void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes,
                    Stream stream) = 0;
  virtual void memset_zero(void* ptr, std::size_t nbytes, Stream stream) = 0;

  virtual Stream current_stream(Device device) = 0;
  virtual void set_current_stream(Stream stream) = 0;
  virtual Stream create_stream(Device device) = 0;
  virtual void destroy_stream(Stream stream) = 0;
  virtual void synchronize(Stream stream) = 0;
  virtual void synchronize_device(Device device) = 0;

  virtual MemoryStats memory_stats(Device device) = 0;
  virtual void reset_peak_stats(Device device) = 0;
  virtual void empty_cache(Device device) = 0;
  /// Frees what the backend keeps for reuse beyond the pools' caches (library handles and
  /// their workspaces), then empties the pools of every device it has touched. Later
  /// calls re-create what they need. No other thread may use the backend meanwhile.
  virtual void release_resources() {}

  /// Records a timing event on `stream` and returns it, for the profiler; nullptr where the
  /// backend has no device clock (CPU kernels run synchronously: host time is their time).
  virtual void* record_timing_event(Stream stream) {
    (void)stream;
    return nullptr;
  }
  /// Milliseconds from `start` to `end` (both from record_timing_event on one device);
  /// waits for `end` to complete. Destroys neither.
  virtual double timing_event_elapsed_ms(void* start, void* end) {
    (void)start;
    (void)end;
    return 0;
  }
  virtual void destroy_timing_event(void* event) { (void)event; }

  /// Marks the end of the work queued on `stream` so far, for checks that read what the
  /// device writes (runtime/deferred_checks.h); nullptr where work runs synchronously (CPU).
  virtual void* record_marker(Stream stream) {
    (void)stream;
    return nullptr;
  }
  /// Whether the work before `marker` (from record_marker) has finished; with `wait`, blocks
  /// until it has (and returns true). A nullptr marker is always reached.
  virtual bool marker_reached(void* marker, bool wait) {
    (void)marker;
    (void)wait;
    return true;
  }
  /// Gives a marker back for reuse; never throws (also called at thread exit).
  virtual void release_marker(void* marker) noexcept { (void)marker; }

  /// Largest copy copy_to_host_slot takes.
  static constexpr std::size_t kHostSlotBytes = 64;
  /// Starts copying `nbytes` (at most kHostSlotBytes) from `src` on `src_device` into a
  /// slot of host memory the backend owns, ordered on `stream`, and returns the slot
  /// without waiting for the copy: it may be read once a marker recorded after this call is
  /// reached. Give the slot back with release_host_slot. Here (synchronous work) the copy
  /// is done on return.
  virtual void* copy_to_host_slot(const void* src, Device src_device, std::size_t nbytes, Stream stream) {
    (void)src_device;
    (void)stream;
    auto* slot = new unsigned char[kHostSlotBytes];
    std::memcpy(slot, src, nbytes);
    return slot;
  }
  /// Gives back a slot of copy_to_host_slot whose copy has finished; never throws.
  virtual void release_host_slot(void* slot) noexcept { delete[] static_cast<unsigned char*>(slot); }

  /// Compute capability of device `index` as 10 * major + minor (90 for an H100 / H200);
  /// 0 where the notion does not apply (CPU).
  virtual int compute_capability(int index) {
    (void)index;
    return 0;
  }
};

/// The backend of `type`, or nullptr when not built in.
Backend* find_backend(DeviceType type);
/// The backend of `device`; throws tg::DeviceError when it is not built in or the index
/// is out of range.
Backend& backend(Device device);
/// Installs the backend for `type` (called by static registrars; last one wins).
void register_backend(DeviceType type, Backend* b);

}  // namespace tg::runtime
