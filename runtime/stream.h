// Streams: ordered queues of device work. On the CPU everything is synchronous and the
// stream is a placeholder; on CUDA `handle` is a cudaStream_t (nullptr = legacy default).
#pragma once

#include "runtime/device.h"

namespace tg {

/// A stream on a device. Cheap value; the handle is owned by the backend.
struct Stream {
  Device device = Device::cpu();
  void* handle = nullptr;
  friend bool operator==(const Stream&, const Stream&) = default;
};

/// The stream new work on `device` is queued on by the calling thread.
Stream current_stream(Device device);
/// Sets the calling thread's current stream for `stream.device`.
void set_current_stream(Stream stream);
/// Creates a new (non-blocking) stream on `device`; destroyed by `destroy_stream`.
Stream create_stream(Device device);
void destroy_stream(Stream stream);
/// Blocks until all work queued on `stream` has finished.
void synchronize(Stream stream);
/// Blocks until all work on `device` has finished.
void synchronize(Device device);

/// Makes `stream` current for its device for the lifetime of the guard.
class StreamGuard {
 public:
  explicit StreamGuard(Stream stream) : prev_(current_stream(stream.device)) { set_current_stream(stream); }
  ~StreamGuard() { set_current_stream(prev_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream prev_;
};

}  // namespace tg
