#include "runtime/caching_pool.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>

#include "runtime/error.h"

namespace tg::runtime {

// One contiguous range of a segment. Blocks of a segment form a doubly linked list in
// address order; a block is either free (in its pool's free set), live (in live_), or
// waiting for cross-stream events (in neither, `allocated` still true).
struct CachingPool::Block {
  Block(char* p, std::size_t n, void* s, bool is_small) : ptr(p), size(n), stream(s), small(is_small) {}

  char* ptr;
  std::size_t size;
  void* stream;  // the stream the segment was allocated for; never changes
  bool small;    // which pool the segment belongs to
  bool allocated = false;
  Block* prev = nullptr;
  Block* next = nullptr;
  int pending_events = 0;
  std::vector<void*> stream_uses;  // other streams recorded with record_stream
};

namespace {

constexpr std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

// Requests above this cannot be rounded to a large segment without overflowing size_t;
// no device can serve them anyway.
constexpr std::size_t kMaxRequest = std::numeric_limits<std::size_t>::max() - CachingPool::kLargeRound;

std::string oom_prefix(const std::string& device_name) {
  std::string kind = device_name.substr(0, device_name.find(':'));
  for (char& c : kind) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return kind + " out of memory";
}

}  // namespace

std::string format_bytes(std::size_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  while (v >= 1024.0 && unit < 5) {
    v /= 1024.0;
    ++unit;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, kUnits[unit]);
  return buf;
}

bool pool_disabled_by_env() {
  const char* env = std::getenv("TG_POOL");
  if (env == nullptr) return false;
  std::string v(env);
  for (char& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return v == "off" || v == "0" || v == "false" || v == "none" || v == "disabled";
}

bool CachingPool::BlockLess::operator()(const Block* a, const Block* b) const {
  // std::less gives a total order on unrelated pointers, which `<` does not promise.
  if (a->stream != b->stream) return std::less<void*>{}(a->stream, b->stream);
  if (a->size != b->size) return a->size < b->size;
  return std::less<char*>{}(a->ptr, b->ptr);
}

CachingPool::CachingPool(RawDeviceApi& api, std::string device_name, bool bypass)
    : api_(api), device_name_(std::move(device_name)), bypass_(bypass) {}

CachingPool::~CachingPool() {
  // Destructors must not throw; a device that fails here is being torn down anyway.
  try {
    for (const PendingEvent& pe : pending_) api_.event_destroy(pe.event);
    for (void* ev : spare_events_) api_.event_destroy(ev);
    for (Block* head : segments_) {
      api_.raw_free(head->ptr);
      for (Block* b = head; b != nullptr;) {
        Block* next = b->next;
        delete b;
        b = next;
      }
    }
    for (const auto& [ptr, size] : bypass_sizes_) api_.raw_free(const_cast<void*>(ptr));
  } catch (...) {
  }
}

std::size_t CachingPool::round_size(std::size_t bytes) {
  if (bytes == 0) return kMinBlockSize;
  return round_up(bytes, kMinBlockSize);
}

CachingPool::FreeSet& CachingPool::pool_of(const Block* b) { return b->small ? small_free_ : large_free_; }

void* CachingPool::allocate(std::size_t bytes, void* stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (bypass_) return allocate_bypass(bytes);
  if (bytes > kMaxRequest) throw_oom(bytes);

  const std::size_t size = round_size(bytes);
  const bool small = size <= kSmallSize;
  FreeSet& pool = small ? small_free_ : large_free_;

  // Blocks whose cross-stream events completed since the last call become reusable now.
  process_events();
  if (Block* b = find_free_block(pool, size, stream)) {
    ++stats_.cache_hits;
    return take_block(b, size);
  }

  const std::size_t segment_size = small ? kSmallSegment : round_up(size, kLargeRound);
  Block* block = new_segment(segment_size, stream, small);
  if (block == nullptr) {
    // The device is full. Memory may be tied up in blocks waiting on events (complete
    // once the device is idle) or cached for other streams or sizes (releasable).
    api_.synchronize();
    process_events();
    if (Block* b = find_free_block(pool, size, stream)) {
      ++stats_.cache_hits;
      return take_block(b, size);
    }
    release_cached_segments();
    ++stats_.oom_retries;
    block = new_segment(segment_size, stream, small);
    if (block == nullptr) throw_oom(bytes);
  }
  return take_block(block, size);
}

void* CachingPool::allocate_bypass(std::size_t bytes) {
  // Exact sizes (but never 0, to keep pointers unique) so that compute-sanitizer flags
  // any access past the requested end.
  const std::size_t size = std::max<std::size_t>(bytes, 1);
  void* p = api_.raw_malloc(size);
  if (p == nullptr) {
    // Nothing is cached, but queued frees of other streams may still be in flight.
    api_.synchronize();
    ++stats_.oom_retries;
    p = api_.raw_malloc(size);
    if (p == nullptr) throw_oom(bytes);
  }
  bypass_sizes_.emplace(p, size);
  ++stats_.device_allocs;
  stats_.bytes_reserved += size;
  ++stats_.num_allocs;
  stats_.bytes_in_use += size;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return p;
}

CachingPool::Block* CachingPool::find_free_block(FreeSet& pool, std::size_t size, void* stream) {
  Block key(nullptr, size, stream, false);
  auto it = pool.lower_bound(&key);
  if (it == pool.end() || (*it)->stream != stream) return nullptr;
  Block* b = *it;
  pool.erase(it);
  return b;
}

CachingPool::Block* CachingPool::new_segment(std::size_t segment_size, void* stream, bool small) {
  void* p = api_.raw_malloc(segment_size);
  if (p == nullptr) return nullptr;
  Block* b;
  try {
    b = new Block(static_cast<char*>(p), segment_size, stream, small);
    segments_.insert(b);
  } catch (...) {
    api_.raw_free(p);
    throw;
  }
  ++stats_.device_allocs;
  stats_.bytes_reserved += segment_size;
  return b;
}

void* CachingPool::take_block(Block* block, std::size_t size) {
  // Small segments are split down to the 512 B granularity. Large blocks are split only
  // when the rest is itself a large request, so that the large pool never holds slivers
  // that no large request can use.
  const std::size_t rest = block->size - size;
  const bool split = block->small ? rest >= kMinBlockSize : rest > kSmallSize;
  if (split) {
    auto* r = new Block(block->ptr + size, rest, block->stream, block->small);
    r->prev = block;
    r->next = block->next;
    if (block->next != nullptr) block->next->prev = r;
    block->next = r;
    block->size = size;
    pool_of(r).insert(r);
    ++stats_.splits;
  }
  block->allocated = true;
  live_.emplace(block->ptr, block);
  ++stats_.num_allocs;
  stats_.bytes_in_use += block->size;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  return block->ptr;
}

void CachingPool::deallocate(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (bypass_) return deallocate_bypass(ptr);

  auto it = live_.find(ptr);
  TG_CHECK(it != live_.end(), Error, "CachingPool::deallocate: pointer ", ptr, " was not allocated by the ",
           device_name_, " pool or was already freed");
  Block* b = it->second;
  live_.erase(it);
  ++stats_.num_frees;
  stats_.bytes_in_use -= b->size;

  if (b->stream_uses.empty()) {
    free_block(b);
    return;
  }
  // Other streams may still have queued work on this block: it becomes free only after
  // an event recorded now on each of them has completed. Should a device call fail
  // midway, the block stays out of the free lists for good (leaked, never reused too early).
  std::vector<void*> uses = std::move(b->stream_uses);
  b->stream_uses.clear();
  for (void* s : uses) {
    void* ev = get_event();
    try {
      api_.event_record(ev, s);
    } catch (...) {
      spare_events_.push_back(ev);
      ++b->pending_events;  // a count that never drops to 0: the block is never reused
      throw;
    }
    pending_.push_back({ev, b});
    ++b->pending_events;
  }
}

void CachingPool::deallocate_bypass(void* ptr) {
  auto it = bypass_sizes_.find(ptr);
  TG_CHECK(it != bypass_sizes_.end(), Error, "CachingPool::deallocate: pointer ", ptr,
           " was not allocated by the ", device_name_, " pool or was already freed");
  const std::size_t size = it->second;
  // In bypass mode the device free itself orders against queued work (cudaFree
  // synchronizes), so record_stream needs no events here.
  api_.raw_free(ptr);
  bypass_sizes_.erase(it);
  ++stats_.num_frees;
  ++stats_.device_frees;
  stats_.bytes_in_use -= size;
  stats_.bytes_reserved -= size;
}

void CachingPool::free_block(Block* block) {
  block->allocated = false;
  block->stream_uses.clear();
  FreeSet& pool = pool_of(block);
  // Fold into a free predecessor (so segment heads stay put), then absorb a free successor.
  if (Block* prev = block->prev; prev != nullptr && !prev->allocated) {
    pool.erase(prev);
    prev->size += block->size;
    prev->next = block->next;
    if (block->next != nullptr) block->next->prev = prev;
    delete block;
    block = prev;
    ++stats_.merges;
  }
  if (Block* next = block->next; next != nullptr && !next->allocated) {
    pool.erase(next);
    block->size += next->size;
    block->next = next->next;
    if (next->next != nullptr) next->next->prev = block;
    delete next;
    ++stats_.merges;
  }
  pool.insert(block);
}

void CachingPool::record_stream(void* ptr, void* stream) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (bypass_) {
    TG_CHECK(bypass_sizes_.count(ptr) != 0, Error, "CachingPool::record_stream: pointer ", ptr,
             " is not a live allocation of the ", device_name_, " pool");
    return;
  }
  auto it = live_.find(ptr);
  TG_CHECK(it != live_.end(), Error, "CachingPool::record_stream: pointer ", ptr,
           " is not a live allocation of the ", device_name_, " pool");
  Block* b = it->second;
  // The allocation stream is already covered by per-stream reuse.
  if (stream == b->stream) return;
  if (std::find(b->stream_uses.begin(), b->stream_uses.end(), stream) == b->stream_uses.end())
    b->stream_uses.push_back(stream);
}

void CachingPool::process_events() {
  std::size_t keep = 0;
  std::size_t i = 0;
  try {
    for (; i < pending_.size(); ++i) {
      const PendingEvent pe = pending_[i];
      if (!api_.event_query(pe.event)) {
        pending_[keep++] = pe;
        continue;
      }
      spare_events_.push_back(pe.event);
      if (--pe.block->pending_events == 0) free_block(pe.block);
    }
  } catch (...) {
    // Drop only the entries already handled; [i, end) were not looked at.
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(keep),
                   pending_.begin() + static_cast<std::ptrdiff_t>(i));
    throw;
  }
  pending_.resize(keep);
}

void CachingPool::release_cached_segments() {
  for (FreeSet* pool : {&small_free_, &large_free_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* b = *it;
      // A free block without neighbours spans its whole segment (free neighbours would
      // have been merged into it).
      if (b->prev != nullptr || b->next != nullptr) {
        ++it;
        continue;
      }
      api_.raw_free(b->ptr);
      it = pool->erase(it);
      segments_.erase(b);
      ++stats_.device_frees;
      stats_.bytes_reserved -= b->size;
      delete b;
    }
  }
}

void CachingPool::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (bypass_) return;
  // Blocks waiting on events would otherwise keep their segments until a later call.
  if (!pending_.empty()) api_.synchronize();
  process_events();
  release_cached_segments();
}

void* CachingPool::get_event() {
  if (spare_events_.empty()) return api_.event_create();
  void* ev = spare_events_.back();
  spare_events_.pop_back();
  return ev;
}

std::size_t CachingPool::cached_bytes_locked() const {
  std::size_t total = 0;
  for (const Block* b : small_free_) total += b->size;
  for (const Block* b : large_free_) total += b->size;
  return total;
}

void CachingPool::throw_oom(std::size_t requested) const {
  const MemoryStats& s = stats_;
  std::string msg = oom_prefix(device_name_) + ": tried to allocate " + format_bytes(requested) + " (" +
                    std::to_string(requested) + " bytes) on " + device_name_ + "; pool: " +
                    format_bytes(s.bytes_in_use) + " in use, " + format_bytes(s.bytes_reserved) + " reserved";
  if (bypass_) {
    msg += ", peak " + format_bytes(s.peak_bytes_in_use) + ", " + std::to_string(bypass_sizes_.size()) +
           " live allocations; caching disabled (TG_POOL=off)";
  } else {
    const std::size_t cached = cached_bytes_locked();
    const std::size_t waiting = s.bytes_reserved - s.bytes_in_use - cached;
    msg += " (" + format_bytes(cached) + " free in split segments, " + format_bytes(waiting) +
           " awaiting other streams), peak " + format_bytes(s.peak_bytes_in_use) + ", " +
           std::to_string(segments_.size()) + " segments, " + std::to_string(s.device_allocs) +
           " device allocations; cached segments were released and the allocation retried";
  }
  throw OutOfMemory(msg, requested);
}

MemoryStats CachingPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CachingPool::reset_peak_stats() {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::size_t in_use = stats_.bytes_in_use;
  const std::size_t reserved = stats_.bytes_reserved;
  stats_ = MemoryStats{};
  stats_.bytes_in_use = in_use;
  stats_.bytes_reserved = reserved;
  stats_.peak_bytes_in_use = in_use;
}

std::size_t CachingPool::block_size(const void* ptr) const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (bypass_) {
    auto it = bypass_sizes_.find(ptr);
    TG_CHECK(it != bypass_sizes_.end(), Error, "CachingPool::block_size: pointer ", ptr,
             " is not a live allocation of the ", device_name_, " pool");
    return it->second;
  }
  auto it = live_.find(ptr);
  TG_CHECK(it != live_.end(), Error, "CachingPool::block_size: pointer ", ptr, " is not a live allocation of the ",
           device_name_, " pool");
  return it->second->size;
}

std::size_t CachingPool::num_segments() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return bypass_ ? bypass_sizes_.size() : segments_.size();
}

std::size_t CachingPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cached_bytes_locked();
}

}  // namespace tg::runtime
