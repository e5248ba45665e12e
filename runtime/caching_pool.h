// A device-agnostic caching allocator in the spirit of PyTorch's CUDA caching allocator.
//
// The pool talks to the device only through `RawDeviceApi`, so the CUDA backend plugs in
// cudaMalloc/cudaFree/cudaEvent* while the tests plug in a mock and run on any CPU.
//
// Policy (see docs/DESIGN.md, "Memory"):
//  - every request is rounded up to a multiple of 512 B;
//  - requests <= 1 MiB ("small") are carved out of 2 MiB segments; larger requests get a
//    segment of their own rounded up to 2 MiB ("large"), and a cached large block is
//    reused best-fit, split when the remainder would be > 1 MiB;
//  - a freed block is coalesced with free neighbours of the same segment;
//  - free lists are per stream: a block is only reused by the stream it was allocated on,
//    so stream order alone guarantees the previous user's kernels have finished with it;
//  - `record_stream` marks a block as also used by another stream: on free the pool
//    records an event on each such stream and keeps the block out of the free lists until
//    every event has completed (checked at each allocation);
//  - when the device allocator fails: synchronize, process events, release every cached
//    segment, retry once, then throw tg::OutOfMemory with the request and the statistics;
//  - bypass mode (TG_POOL=off) forwards every request to the device allocator so tools
//    such as compute-sanitizer see each allocation with its exact size.
//
// Zero-byte requests: served like a 1-byte request (a 512 B block), so `allocate(0)`
// always returns a unique, non-null pointer that must be passed to `deallocate` like any
// other. `deallocate(nullptr)` is a no-op.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "runtime/memory.h"

namespace tg::runtime {

/// What the pool needs from a device. Streams and events are opaque handles.
struct RawDeviceApi {
  virtual ~RawDeviceApi() = default;
  /// Allocates `bytes` of device memory; returns nullptr on out-of-memory (never throws
  /// for that; may throw tg::DeviceError for other failures).
  virtual void* raw_malloc(std::size_t bytes) = 0;
  /// Returns memory obtained from raw_malloc.
  virtual void raw_free(void* p) = 0;
  /// Creates an event that can be recorded on a stream and queried for completion.
  virtual void* event_create() = 0;
  /// Destroys an event from event_create.
  virtual void event_destroy(void* ev) = 0;
  /// Records `ev` at the current end of `stream`'s queue.
  virtual void event_record(void* ev, void* stream) = 0;
  /// True once the work captured by the last event_record has completed.
  virtual bool event_query(void* ev) = 0;
  /// Waits until all work on the device has completed.
  virtual void synchronize() = 0;
};

/// Human-readable byte count: "512 B", "64.00 KiB", "1.50 GiB".
std::string format_bytes(std::size_t bytes);

/// True when the environment asks to bypass the caching pools (`TG_POOL=off`, also
/// accepts "0", "false", "none", "disabled"; case-insensitive).
bool pool_disabled_by_env();

/// Caching allocator over one device. Thread-safe: every public function takes one mutex.
class CachingPool {
 public:
  /// Every request is rounded up to a multiple of this.
  static constexpr std::size_t kMinBlockSize = 512;
  /// Largest request served from the small pool.
  static constexpr std::size_t kSmallSize = std::size_t{1} << 20;
  /// Size of small-pool segments.
  static constexpr std::size_t kSmallSegment = std::size_t{2} << 20;
  /// Large segments are rounded up to a multiple of this.
  static constexpr std::size_t kLargeRound = std::size_t{2} << 20;

  /// Creates a pool over `api` (which must outlive the pool). `device_name` (e.g.
  /// "cuda:0") names the device in error messages; its part before ':' upper-cased
  /// prefixes OOM messages ("CUDA out of memory: ..."). With `bypass`, every request goes
  /// straight to raw_malloc/raw_free (statistics are still kept).
  explicit CachingPool(RawDeviceApi& api, std::string device_name = "device", bool bypass = false);
  /// Returns every segment (cached or still handed out) and every event to the device.
  /// Pointers from this pool are invalid afterwards.
  ~CachingPool();
  CachingPool(const CachingPool&) = delete;
  CachingPool& operator=(const CachingPool&) = delete;

  /// Returns at least `bytes` bytes for use on `stream` (an opaque handle; nullptr is a
  /// valid stream). Blocks start at multiples of 512 B from their segment, so they keep
  /// the device allocator's alignment (256 B for cudaMalloc). Throws tg::OutOfMemory when
  /// the device is full even after releasing the cache.
  void* allocate(std::size_t bytes, void* stream);
  /// Returns a block from `allocate`. Safe while work using it is still queued on its
  /// allocation stream (and on streams given to record_stream). nullptr is a no-op;
  /// a pointer this pool did not hand out (or already freed) throws tg::Error.
  void deallocate(void* ptr);
  /// Marks the live block `ptr` as used by `stream` too, so that after it is freed it is
  /// not reused until the work queued on `stream` up to the free has completed. Throws
  /// tg::Error for an unknown pointer.
  void record_stream(void* ptr, void* stream);

  /// Snapshot of the counters.
  MemoryStats stats() const;
  /// Sets the peak to the current bytes in use and zeroes the event counters.
  void reset_peak_stats();
  /// Returns every fully free cached segment to the device (waits for pending
  /// cross-stream events first so their blocks can be released too).
  void empty_cache();

  /// Size in bytes of the block behind the live pointer `ptr` (the rounded request; the
  /// exact request in bypass mode). Throws tg::Error for an unknown pointer.
  std::size_t block_size(const void* ptr) const;
  /// Number of segments currently obtained from the device (in bypass mode: the number of
  /// live allocations, each being its own segment).
  std::size_t num_segments() const;
  /// Bytes held in free cached blocks (reserved but neither in use nor awaiting events).
  std::size_t cached_bytes() const;
  /// True when the pool forwards every request to the device allocator.
  bool bypass() const { return bypass_; }
  /// The name given at construction.
  const std::string& device_name() const { return device_name_; }

  /// `bytes` rounded up to a multiple of kMinBlockSize (0 becomes kMinBlockSize).
  static std::size_t round_size(std::size_t bytes);

 private:
  struct Block;
  // Orders free blocks by (stream, size, address): a lower_bound on (stream, size) is the
  // best fit among that stream's blocks, which makes one set act as per-stream lists.
  struct BlockLess {
    bool operator()(const Block* a, const Block* b) const;
  };
  using FreeSet = std::set<Block*, BlockLess>;

  // An event recorded on a stream that used a freed block; the block returns to its free
  // list once all of its events have completed.
  struct PendingEvent {
    void* event;
    Block* block;
  };

  void* allocate_bypass(std::size_t bytes);
  void deallocate_bypass(void* ptr);
  Block* find_free_block(FreeSet& pool, std::size_t size, void* stream);
  Block* new_segment(std::size_t segment_size, void* stream, bool small);
  void* take_block(Block* block, std::size_t size);
  void free_block(Block* block);
  void process_events();
  void release_cached_segments();
  [[noreturn]] void throw_oom(std::size_t requested) const;
  std::size_t cached_bytes_locked() const;
  void* get_event();
  FreeSet& pool_of(const Block* b);

  RawDeviceApi& api_;
  std::string device_name_;
  bool bypass_;

  mutable std::mutex mutex_;
  MemoryStats stats_;
  FreeSet small_free_;
  FreeSet large_free_;
  // Live (handed-out) blocks by address; in bypass mode `bypass_sizes_` instead.
  std::unordered_map<const void*, Block*> live_;
  std::unordered_map<const void*, std::size_t> bypass_sizes_;
  // First block of each segment. Merges always fold a block into its predecessor, so a
  // segment's first block lives as long as the segment and owns the chain behind it.
  std::unordered_set<Block*> segments_;
  std::vector<PendingEvent> pending_;
  // Completed events kept for reuse: creating one per free would cost a driver call.
  std::vector<void*> spare_events_;
};

}  // namespace tg::runtime
