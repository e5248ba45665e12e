#include "runtime/memory.h"

#include <cstdio>
#include <ostream>
#include <string>

#include "runtime/backend.h"
#include "runtime/op_caches.h"

namespace tg {

namespace {
std::string human(std::size_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.2f GiB", b / double(1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.2f MiB", b / double(1ull << 20));
  else if (b >= (1ull << 10)) std::snprintf(buf, sizeof buf, "%.2f KiB", b / double(1ull << 10));
  else std::snprintf(buf, sizeof buf, "%zu B", b);
  return buf;
}
}  // namespace

std::ostream& operator<<(std::ostream& os, const MemoryStats& s) {
  return os << "in use " << human(s.bytes_in_use) << ", reserved " << human(s.bytes_reserved) << ", peak "
            << human(s.peak_bytes_in_use) << ", allocs " << s.num_allocs << ", frees " << s.num_frees
            << ", device allocs " << s.device_allocs << ", device frees " << s.device_frees << ", cache hits "
            << s.cache_hits << ", splits " << s.splits << ", merges " << s.merges << ", oom retries "
            << s.oom_retries;
}

MemoryStats memory_stats(Device device) { return runtime::backend(device).memory_stats(device); }
void reset_peak_stats(Device device) { runtime::backend(device).reset_peak_stats(device); }
void empty_cache(Device device) { runtime::backend(device).empty_cache(device); }

void release_device_resources() {
  // The caches first: their tensors go back to the pools, which the backends then empty.
  runtime::release_op_caches();
  for (int t = 0; t < kNumDeviceTypes; ++t) {
    if (runtime::Backend* b = runtime::find_backend(static_cast<DeviceType>(t))) b->release_resources();
  }
}

}  // namespace tg
