// The CUDA backend: one caching pool per device, per-thread current streams, copies and
// memsets ordered on streams, and per-thread cuBLAS handles.
#include "runtime/cuda/cuda_backend.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/deferred_checks.h"
#include "runtime/error.h"

namespace tg::cuda {
namespace {

// Devices beyond this many are not addressable; no single host comes close.
constexpr int kMaxDevices = 64;

void check_index(int device, const char* fn) {
  const int n = device_count();
  if (device < 0 || device >= n) {
    TG_THROW(DeviceError, fn, ": device cuda:", device, " does not exist (", n, " CUDA device(s) visible)");
  }
}

void check_device(Device device, const char* fn) {
  if (!device.is_cuda()) TG_THROW(DeviceError, fn, ": expected a CUDA device, got ", device);
  check_index(device.index, fn);
}

// RawDeviceApi over the CUDA runtime for one device. Every call switches to the device,
// because the pool may be used from a thread whose current device is another one.
class CudaRawApi final : public runtime::RawDeviceApi {
 public:
  explicit CudaRawApi(int device) : device_(device) {}

  void* raw_malloc(std::size_t bytes) override {
    DeviceGuard g(device_);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      // Not sticky, but it would stay in cudaGetLastError and be blamed on the next
      // kernel launch check.
      (void)cudaGetLastError();
      return nullptr;
    }
    TG_CUDA_CHECK(err);
    return p;
  }
  void raw_free(void* p) override {
    DeviceGuard g(device_);
    TG_CUDA_CHECK(cudaFree(p));
  }
  void* event_create() override {
    DeviceGuard g(device_);
    cudaEvent_t ev = nullptr;
    // Timing would make every record/query more expensive and is never needed here.
    TG_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    return ev;
  }
  void event_destroy(void* ev) override {
    DeviceGuard g(device_);
    TG_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(ev)));
  }
  void event_record(void* ev, void* stream) override {
    DeviceGuard g(device_);
    TG_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(ev), static_cast<cudaStream_t>(stream)));
  }
  bool event_query(void* ev) override {
    const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(ev));
    if (err == cudaErrorNotReady) {
      (void)cudaGetLastError();  // "not ready" is an answer, not an error to report later
      return false;
    }
    TG_CUDA_CHECK(err);
    return true;
  }
  void synchronize() override {
    DeviceGuard g(device_);
    TG_CUDA_CHECK(cudaDeviceSynchronize());
  }

 private:
  int device_;
};

// Pools are created on first use and deliberately never destroyed: at process exit the
// CUDA runtime may already be torn down, and cudaFree would then fail.
std::array<std::atomic<runtime::CachingPool*>, kMaxDevices> g_pools{};
std::mutex g_pools_mutex;

// The calling thread's current stream per device; nullptr = legacy default stream.
std::vector<cudaStream_t>& thread_streams() {
  thread_local std::vector<cudaStream_t> streams;
  if (streams.size() < static_cast<std::size_t>(device_count())) streams.resize(static_cast<std::size_t>(device_count()));
  return streams;
}

// ---- cuBLAS handles --------------------------------------------------------------------
// Creating a handle is expensive (milliseconds, allocates device memory), so handles are
// per thread and recycled through a process-wide free list when a thread exits. Like the
// pools, they are never destroyed.
struct CublasState {
  std::mutex mutex;
  std::array<std::vector<cublasHandle_t>, kMaxDevices> free_handles;
  // Workspace of each (handle, stream) pair: cuBLAS kernels of one handle on two streams
  // must not share a workspace, and cublasSetStream resets it to cuBLAS's own default.
  std::map<std::pair<cublasHandle_t, cudaStream_t>, std::pair<int, void*>> workspaces;
};

CublasState& cublas_state() {
  static auto* s = new CublasState;
  return *s;
}

struct ThreadHandles {
  std::array<cublasHandle_t, kMaxDevices> handles{};
  ~ThreadHandles() {
    CublasState& s = cublas_state();
    std::lock_guard<std::mutex> lock(s.mutex);
    for (int d = 0; d < kMaxDevices; ++d)
      if (handles[static_cast<std::size_t>(d)] != nullptr)
        s.free_handles[static_cast<std::size_t>(d)].push_back(handles[static_cast<std::size_t>(d)]);
  }
};

// The calling thread's handles, one per device (created on first use).
ThreadHandles& thread_handles() {
  thread_local ThreadHandles mine;
  return mine;
}

// cudaDeviceGetAttribute(attr, device) through a per-device cache of `slots` (value + 1;
// 0 means not read yet).
int cached_attribute(cudaDeviceAttr attr, int device, std::array<std::atomic<int>, kMaxDevices>& slots) {
  check_index(device, "device attribute");
  std::atomic<int>& slot = slots[static_cast<std::size_t>(device)];
  int n = slot.load(std::memory_order_relaxed);
  if (n == 0) {
    int value = 0;
    TG_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
    n = value + 1;
    slot.store(n, std::memory_order_relaxed);
  }
  return n - 1;
}

std::size_t cublas_workspace_size(int device) {
  // cuBLAS recommends 32 MiB on Hopper and later, 4 MiB before.
  return compute_capability_major(device) >= 9 ? (std::size_t{32} << 20) : (std::size_t{4} << 20);
}

// Frees the cuBLAS workspaces whose (handle, stream) key satisfies `doomed`.
template <typename Pred>
void release_cublas_workspaces_if(Pred doomed_key) {
  CublasState& s = cublas_state();
  std::vector<std::pair<int, void*>> doomed;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (auto it = s.workspaces.begin(); it != s.workspaces.end();) {
      if (doomed_key(it->first)) {
        doomed.push_back(it->second);
        it = s.workspaces.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Outside the lock: the pool may synchronize.
  for (const auto& [device, ptr] : doomed) pool(device).deallocate(ptr);
}

// Frees the cuBLAS workspaces bound to `stream` (which its owner is destroying).
void release_cublas_workspaces(cudaStream_t stream) {
  release_cublas_workspaces_if([stream](const auto& key) { return key.second == stream; });
}

// Destroys the spare handles and the calling thread's, and frees every workspace (a handle
// of another thread gets a new one on its next use: cublas_handle sets it each time).
void release_cublas() {
  CublasState& s = cublas_state();
  std::vector<std::pair<int, cublasHandle_t>> handles;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (int d = 0; d < kMaxDevices; ++d) {
      for (cublasHandle_t h : s.free_handles[static_cast<std::size_t>(d)]) handles.emplace_back(d, h);
      s.free_handles[static_cast<std::size_t>(d)].clear();
    }
  }
  ThreadHandles& mine = thread_handles();
  for (int d = 0; d < kMaxDevices; ++d) {
    cublasHandle_t& h = mine.handles[static_cast<std::size_t>(d)];
    if (h != nullptr) handles.emplace_back(d, h);
    h = nullptr;
  }
  for (const auto& [device, h] : handles) {
    DeviceGuard g(device);
    TG_CUBLAS_CHECK(cublasDestroy(h));
  }
  release_cublas_workspaces_if([](const auto&) { return true; });
}

// ---- the backend -----------------------------------------------------------------------

class CudaBackend final : public runtime::Backend {
 public:
  int device_count() const override { return cuda::device_count(); }

  void* allocate(std::size_t nbytes, Stream stream) override {
    check_device(stream.device, "allocate");
    return pool(stream.device.index).allocate(nbytes, stream.handle);
  }

  void deallocate(void* ptr, Device device) override {
    if (ptr == nullptr) return;
    check_device(device, "deallocate");
    pool(device.index).deallocate(ptr);
  }

  void record_stream(void* ptr, Stream stream) override {
    check_device(stream.device, "record_stream");
    pool(stream.device.index).record_stream(ptr, stream.handle);
  }

  void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t nbytes,
            Stream stream) override {
    if (nbytes == 0) return;
    if (dst_device.is_cpu() && src_device.is_cpu()) {
      std::memmove(dst, src, nbytes);
      return;
    }
    if (dst_device.is_cuda()) check_device(dst_device, "copy");
    if (src_device.is_cuda()) check_device(src_device, "copy");
    // The copy runs on `stream` when it is a CUDA stream, else on the current stream of
    // the CUDA side.
    const Device cuda_side = src_device.is_cuda() ? src_device : dst_device;
    if (!stream.device.is_cuda()) stream = Stream{cuda_side, current_cuda_stream(cuda_side.index)};
    check_device(stream.device, "copy");
    const cudaStream_t s = stream_of(stream);

    DeviceGuard g(stream.device.index);
    if (src_device.is_cuda() && dst_device.is_cuda()) {
      if (src_device.index == dst_device.index) {
        TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, s));
      } else {
        TG_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device.index, src, src_device.index, nbytes, s));
      }
    } else if (dst_device.is_cuda()) {
      // From pageable host memory this returns once the source has been staged, so the
      // caller may reuse it; from pinned memory the caller must keep it alive until
      // `stream` reaches the copy.
      TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, s));
    } else {
      TG_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, s));
      // The host reads dst as soon as we return.
      TG_CUDA_CHECK(cudaStreamSynchronize(s));
      runtime::run_deferred_checks(stream.device);
    }
  }

  void memset_zero(void* ptr, std::size_t nbytes, Stream stream) override {
    if (nbytes == 0) return;
    check_device(stream.device, "memset_zero");
    DeviceGuard g(stream.device.index);
    TG_CUDA_CHECK(cudaMemsetAsync(ptr, 0, nbytes, stream_of(stream)));
  }

  Stream current_stream(Device device) override {
    check_device(device, "current_stream");
    return Stream{device, thread_streams()[static_cast<std::size_t>(device.index)]};
  }

  void set_current_stream(Stream stream) override {
    check_device(stream.device, "set_current_stream");
    thread_streams()[static_cast<std::size_t>(stream.device.index)] = stream_of(stream);
  }

  Stream create_stream(Device device) override {
    check_device(device, "create_stream");
    DeviceGuard g(device.index);
    cudaStream_t s = nullptr;
    // Non-blocking: work on it must not serialize with the legacy default stream.
    TG_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return Stream{device, s};
  }

  void destroy_stream(Stream stream) override {
    check_device(stream.device, "destroy_stream");
    TG_CHECK(stream.handle != nullptr, ValueError, "destroy_stream: the default stream of ", stream.device,
             " cannot be destroyed");
    const cudaStream_t s = stream_of(stream);
    DeviceGuard g(stream.device.index);
    // Blocks cached for this stream stay in the pool under its handle value, which a
    // later stream may receive. Finishing the stream's work now makes that reuse safe.
    TG_CUDA_CHECK(cudaStreamSynchronize(s));
    release_cublas_workspaces(s);
    auto& mine = thread_streams()[static_cast<std::size_t>(stream.device.index)];
    if (mine == s) mine = nullptr;
    TG_CUDA_CHECK(cudaStreamDestroy(s));
  }

  void synchronize(Stream stream) override {
    check_device(stream.device, "synchronize");
    DeviceGuard g(stream.device.index);
    TG_CUDA_CHECK(cudaStreamSynchronize(stream_of(stream)));
    runtime::run_deferred_checks(stream.device);
  }

  void synchronize_device(Device device) override {
    check_device(device, "synchronize");
    DeviceGuard g(device.index);
    TG_CUDA_CHECK(cudaDeviceSynchronize());
    runtime::run_deferred_checks(device);
  }

  MemoryStats memory_stats(Device device) override {
    check_device(device, "memory_stats");
    return pool(device.index).stats();
  }
  void reset_peak_stats(Device device) override {
    check_device(device, "reset_peak_stats");
    pool(device.index).reset_peak_stats();
  }
  void empty_cache(Device device) override {
    check_device(device, "empty_cache");
    pool(device.index).empty_cache();
  }

  void release_resources() override {
    // Queued kernels may still use the workspaces and the blocks about to be released.
    for (int d = 0; d < kMaxDevices; ++d) {
      if (g_pools[static_cast<std::size_t>(d)].load(std::memory_order_acquire) == nullptr) continue;
      DeviceGuard g(d);
      TG_CUDA_CHECK(cudaDeviceSynchronize());
    }
    release_cublas();
    for (int d = 0; d < kMaxDevices; ++d) {
      if (runtime::CachingPool* p = g_pools[static_cast<std::size_t>(d)].load(std::memory_order_acquire)) {
        p->empty_cache();
      }
    }
    // Host slot pages, once every slot is back (a live PendingItem keeps them all).
    std::lock_guard<std::mutex> lock(slots_mu_);
    if (free_slots_.size() == slot_pages_.size() * kSlotsPerPage) {
      for (void* page : slot_pages_) TG_CUDA_CHECK(cudaFreeHost(page));
      slot_pages_.clear();
      free_slots_.clear();
    }
  }

  void* record_timing_event(Stream stream) override {
    check_device(stream.device, "record_timing_event");
    DeviceGuard g(stream.device.index);
    cudaEvent_t ev = nullptr;
    TG_CUDA_CHECK(cudaEventCreate(&ev));
    TG_CUDA_CHECK(cudaEventRecord(ev, static_cast<cudaStream_t>(stream.handle)));
    return ev;
  }
  double timing_event_elapsed_ms(void* start, void* end) override {
    TG_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(end)));
    float ms = 0;
    TG_CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)));
    return ms;
  }
  void destroy_timing_event(void* event) override { TG_CUDA_CHECK(cudaEventDestroy(static_cast<cudaEvent_t>(event))); }

  // Markers are events without timing, reused through a free list (an event is created
  // once and recorded many times).
  void* record_marker(Stream stream) override {
    check_device(stream.device, "record_marker");
    DeviceGuard g(stream.device.index);
    Marker* m = nullptr;
    {
      std::lock_guard<std::mutex> lock(markers_mu_);
      auto& free = free_markers_[static_cast<std::size_t>(stream.device.index)];
      if (!free.empty()) {
        m = free.back();
        free.pop_back();
      }
    }
    if (m == nullptr) {
      cudaEvent_t ev = nullptr;
      TG_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
      m = new Marker{stream.device.index, ev};
    }
    const cudaError_t err = cudaEventRecord(m->event, stream_of(stream));
    if (err != cudaSuccess) release_marker(m);
    TG_CUDA_CHECK(err);
    return m;
  }
  bool marker_reached(void* marker, bool wait) override {
    if (marker == nullptr) return true;
    const cudaEvent_t ev = static_cast<Marker*>(marker)->event;
    if (wait) {
      TG_CUDA_CHECK(cudaEventSynchronize(ev));
      return true;
    }
    const cudaError_t err = cudaEventQuery(ev);
    if (err == cudaErrorNotReady) return false;
    TG_CUDA_CHECK(err);
    return true;
  }
  void release_marker(void* marker) noexcept override {
    if (marker == nullptr) return;
    auto* m = static_cast<Marker*>(marker);
    try {
      std::lock_guard<std::mutex> lock(markers_mu_);
      free_markers_[static_cast<std::size_t>(m->device)].push_back(m);
    } catch (...) {
      // Out of memory growing the free list: the marker's event is leaked, not reused.
      delete m;
    }
  }

  // Host slots live in pinned memory (a device-to-host copy into pageable memory waits for
  // the stream), taken in pages of kSlotsPerPage from cudaHostAlloc and kept for reuse (a
  // loop reading one loss a step reuses the same few slots) until release_resources.
  void* copy_to_host_slot(const void* src, Device src_device, std::size_t nbytes, Stream stream) override {
    if (nbytes > kHostSlotBytes) {
      TG_THROW(ValueError, "copy_to_host_slot: at most ", kHostSlotBytes, " bytes, got ", nbytes);
    }
    if (!src_device.is_cuda()) {
      TG_THROW(DeviceError, "copy_to_host_slot: expected a source on a CUDA device, got ", src_device.str());
    }
    check_device(src_device, "copy_to_host_slot");
    if (!stream.device.is_cuda()) stream = Stream{src_device, current_cuda_stream(src_device.index)};
    DeviceGuard g(stream.device.index);
    void* slot = take_slot();
    const cudaError_t err = cudaMemcpyAsync(slot, src, nbytes, cudaMemcpyDeviceToHost, stream_of(stream));
    if (err != cudaSuccess) release_host_slot(slot);
    TG_CUDA_CHECK(err);
    return slot;
  }
  void release_host_slot(void* slot) noexcept override {
    if (slot == nullptr) return;
    try {
      std::lock_guard<std::mutex> lock(slots_mu_);
      free_slots_.push_back(slot);
    } catch (...) {
      // Out of memory growing the free list: the slot is not reused.
    }
  }

  int compute_capability(int index) override {
    check_index(index, "compute_capability");
    return 10 * cuda::compute_capability_major(index) + cuda::compute_capability_minor(index);
  }

 private:
  struct Marker {
    int device;
    cudaEvent_t event;
  };
  std::mutex markers_mu_;
  std::array<std::vector<Marker*>, kMaxDevices> free_markers_;

  static constexpr std::size_t kSlotsPerPage = 64;
  void* take_slot() {
    std::lock_guard<std::mutex> lock(slots_mu_);
    if (free_slots_.empty()) {
      void* page = nullptr;
      TG_CUDA_CHECK(cudaHostAlloc(&page, kSlotsPerPage * kHostSlotBytes, cudaHostAllocPortable));
      slot_pages_.push_back(page);
      free_slots_.reserve(free_slots_.size() + kSlotsPerPage);
      for (std::size_t i = 0; i < kSlotsPerPage; ++i) free_slots_.push_back(static_cast<unsigned char*>(page) + i * kHostSlotBytes);
    }
    void* slot = free_slots_.back();
    free_slots_.pop_back();
    return slot;
  }
  std::mutex slots_mu_;
  std::vector<void*> free_slots_;
  std::vector<void*> slot_pages_;  // what cudaHostAlloc returned
};

CudaBackend& backend_instance() {
  static CudaBackend instance;
  return instance;
}

// Registers at load time without touching the CUDA API: machines without a driver must
// be able to load the library (device_count() then reports 0).
struct Registrar {
  Registrar() { runtime::register_backend(DeviceType::CUDA, &backend_instance()); }
};
const Registrar registrar;

}  // namespace

int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();  // no driver or no device: a CPU-only run, not an error
      return 0;
    }
    return std::min(n, kMaxDevices);
  }();
  return count;
}

DeviceGuard::DeviceGuard(int device) {
  int current = -1;
  TG_CUDA_CHECK(cudaGetDevice(&current));
  if (current != device) {
    TG_CUDA_CHECK(cudaSetDevice(device));
    prev_ = current;
  }
}

DeviceGuard::~DeviceGuard() {
  if (prev_ >= 0) (void)cudaSetDevice(prev_);  // destructors must not throw
}

cudaStream_t stream_of(tg::Stream stream) {
  TG_CHECK(stream.device.is_cuda(), DeviceError, "expected a CUDA stream, got a stream of ", stream.device);
  return static_cast<cudaStream_t>(stream.handle);
}

cudaStream_t current_cuda_stream(int device) {
  check_index(device, "current_cuda_stream");
  return thread_streams()[static_cast<std::size_t>(device)];
}

runtime::CachingPool& pool(int device) {
  check_index(device, "pool");
  auto& slot = g_pools[static_cast<std::size_t>(device)];
  if (runtime::CachingPool* p = slot.load(std::memory_order_acquire)) return *p;
  std::lock_guard<std::mutex> lock(g_pools_mutex);
  if (runtime::CachingPool* p = slot.load(std::memory_order_relaxed)) return *p;
  auto* api = new CudaRawApi(device);  // lives as long as the (never destroyed) pool
  auto* p = new runtime::CachingPool(*api, "cuda:" + std::to_string(device), runtime::pool_disabled_by_env());
  slot.store(p, std::memory_order_release);
  return *p;
}

int multiprocessor_count(int device) {
  static std::array<std::atomic<int>, kMaxDevices> slots{};
  return cached_attribute(cudaDevAttrMultiProcessorCount, device, slots);
}

int compute_capability_major(int device) {
  static std::array<std::atomic<int>, kMaxDevices> slots{};
  return cached_attribute(cudaDevAttrComputeCapabilityMajor, device, slots);
}

int l2_cache_bytes(int device) {
  static std::array<std::atomic<int>, kMaxDevices> slots{};
  return cached_attribute(cudaDevAttrL2CacheSize, device, slots);
}

int compute_capability_minor(int device) {
  static std::array<std::atomic<int>, kMaxDevices> slots{};
  return cached_attribute(cudaDevAttrComputeCapabilityMinor, device, slots);
}

cublasHandle_t cublas_handle(int device) {
  check_index(device, "cublas_handle");
  cublasHandle_t& h = thread_handles().handles[static_cast<std::size_t>(device)];
  CublasState& state = cublas_state();
  if (h == nullptr) {
    {
      std::lock_guard<std::mutex> lock(state.mutex);
      auto& spare = state.free_handles[static_cast<std::size_t>(device)];
      if (!spare.empty()) {
        h = spare.back();
        spare.pop_back();
      }
    }
    if (h == nullptr) {
      DeviceGuard g(device);
      TG_CUBLAS_CHECK(cublasCreate(&h));
    }
  }
  const cudaStream_t stream = current_cuda_stream(device);
  TG_CUBLAS_CHECK(cublasSetStream(h, stream));

  void* workspace = nullptr;
  const std::size_t size = cublas_workspace_size(device);
  {
    std::lock_guard<std::mutex> lock(state.mutex);
    auto it = state.workspaces.find({h, stream});
    if (it != state.workspaces.end()) workspace = it->second.second;
  }
  if (workspace == nullptr) {
    // Allocated outside the state lock: the pool may synchronize on OOM.
    workspace = pool(device).allocate(size, stream);
    std::lock_guard<std::mutex> lock(state.mutex);
    state.workspaces[{h, stream}] = {device, workspace};
  }
  TG_CUBLAS_CHECK(cublasSetWorkspace(h, workspace, size));
  return h;
}

}  // namespace tg::cuda
