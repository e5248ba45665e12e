// The CPU backend: aligned host allocations, synchronous copies, no streams.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "runtime/backend.h"
#include "runtime/error.h"

namespace tg::runtime {
namespace {

// 64-byte alignment lets Eigen and vectorised loops use aligned loads.
constexpr std::size_t kAlign = 64;

class CpuBackend final : public Backend {
 public:
  int device_count() const override { return 1; }

  void* allocate(std::size_t nbytes, Stream) override {
    std::size_t rounded = std::max<std::size_t>(kAlign, (nbytes + kAlign - 1) / kAlign * kAlign);
    void* p = std::aligned_alloc(kAlign, rounded);
    if (!p) {
      throw OutOfMemory(detail::concat("CPU out of memory: tried to allocate ", nbytes, " bytes"), nbytes);
    }
    std::lock_guard<std::mutex> lock(mu_);
    stats_.bytes_in_use += rounded;
    stats_.bytes_reserved = stats_.bytes_in_use;
    stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
    ++stats_.num_allocs;
    ++stats_.device_allocs;
    sizes_[p] = rounded;
    return p;
  }

  void deallocate(void* ptr, Device) override {
    if (!ptr) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = sizes_.find(ptr);
      if (it == sizes_.end()) TG_THROW(Error, "CPU allocator: free of a pointer it did not allocate");
      stats_.bytes_in_use -= it->second;
      stats_.bytes_reserved = stats_.bytes_in_use;
      ++stats_.num_frees;
      ++stats_.device_frees;
      sizes_.erase(it);
    }
    std::free(ptr);
  }

  void record_stream(void*, Stream) override {}

  void copy(void* dst, Device, const void* src, Device, std::size_t nbytes, Stream) override {
    if (nbytes) std::memmove(dst, src, nbytes);
  }
  void memset_zero(void* ptr, std::size_t nbytes, Stream) override {
    if (nbytes) std::memset(ptr, 0, nbytes);
  }

  Stream current_stream(Device device) override { return {device, nullptr}; }
  void set_current_stream(Stream) override {}
  Stream create_stream(Device device) override { return {device, nullptr}; }
  void destroy_stream(Stream) override {}
  void synchronize(Stream) override {}
  void synchronize_device(Device) override {}

  MemoryStats memory_stats(Device) override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak_stats(Device) override {
    std::lock_guard<std::mutex> lock(mu_);
    MemoryStats s;
    s.bytes_in_use = s.bytes_reserved = s.peak_bytes_in_use = stats_.bytes_in_use;
    stats_ = s;
  }
  void empty_cache(Device) override {}

 private:
  std::mutex mu_;
  MemoryStats stats_;
  std::unordered_map<void*, std::size_t> sizes_;
};

CpuBackend& instance() {
  static CpuBackend b;
  return b;
}

const bool registered = (register_backend(DeviceType::CPU, &instance()), true);

}  // namespace
}  // namespace tg::runtime
