// CPU-only tests of the caching pool, run against a mock device.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.h"
#include "runtime/caching_pool.h"
#include "runtime/error.h"

namespace test_caching_pool {

using tg::runtime::CachingPool;
using tg::runtime::RawDeviceApi;

namespace {

constexpr std::size_t KiB = std::size_t{1} << 10;
constexpr std::size_t MiB = std::size_t{1} << 20;

void* stream_handle(std::uintptr_t i) { return reinterpret_cast<void*>(i); }

// A fake device: hands out made-up, well-separated addresses (the pool never touches
// the memory), enforces a capacity, and has events that complete only when the test
// says so (or on synchronize).
class MockDevice final : public RawDeviceApi {
 public:
  struct Event {
    void* stream = nullptr;
    bool recorded = false;
    bool complete = true;
  };

  std::size_t capacity = ~std::size_t{0};
  std::size_t used = 0;
  int mallocs = 0;          // successful raw_malloc calls
  int failed_mallocs = 0;   // raw_malloc calls answered with nullptr
  int frees = 0;
  int syncs = 0;
  int events_created = 0;
  int events_destroyed = 0;
  int records = 0;
  std::map<std::uintptr_t, std::size_t> live;  // address -> size
  std::vector<std::size_t> malloc_sizes;

  void* raw_malloc(std::size_t bytes) override {
    if (bytes > capacity - used) {
      ++failed_mallocs;
      return nullptr;
    }
    used += bytes;
    ++mallocs;
    malloc_sizes.push_back(bytes);
    const std::uintptr_t addr = next_;
    // Leave a gap so that no two allocations are adjacent.
    next_ += (bytes + 2 * MiB - 1) / MiB * MiB;
    live[addr] = bytes;
    return reinterpret_cast<void*>(addr);
  }

  void raw_free(void* p) override {
    auto it = live.find(reinterpret_cast<std::uintptr_t>(p));
    if (it == live.end()) throw std::logic_error("MockDevice::raw_free: unknown pointer");
    used -= it->second;
    live.erase(it);
    ++frees;
  }

  void* event_create() override {
    ++events_created;
    return new Event;
  }
  void event_destroy(void* ev) override {
    ++events_destroyed;
    delete static_cast<Event*>(ev);
  }
  void event_record(void* ev, void* stream) override {
    auto* e = static_cast<Event*>(ev);
    e->stream = stream;
    e->recorded = true;
    e->complete = false;
    ++records;
    recorded_.push_back(e);
  }
  bool event_query(void* ev) override { return static_cast<Event*>(ev)->complete; }
  void synchronize() override {
    ++syncs;
    for (Event* e : recorded_) e->complete = true;
    recorded_.clear();
  }

  /// Completes every event recorded so far on `stream` (its queued work "finished").
  void finish_stream(void* stream) {
    std::erase_if(recorded_, [&](Event* e) {
      if (e->stream != stream) return false;
      e->complete = true;
      return true;
    });
  }
  std::size_t incomplete_events() const { return recorded_.size(); }

 private:
  std::uintptr_t next_ = std::uintptr_t{1} << 40;
  std::vector<Event*> recorded_;  // recorded, not yet complete
};

char* cp(void* p) { return static_cast<char*>(p); }

}  // namespace

TEST_CASE("caching pool: a freed block is reused without a device call", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  void* s = nullptr;
  void* a = pool.allocate(1000, s);
  REQUIRE(a != nullptr);
  pool.deallocate(a);
  void* b = pool.allocate(1000, s);
  CHECK(b == a);
  CHECK(dev.mallocs == 1);
  const auto st = pool.stats();
  CHECK(st.device_allocs == 1);
  CHECK(st.cache_hits == 1);
  CHECK(st.num_allocs == 2);
  CHECK(st.num_frees == 1);
  pool.deallocate(b);
}

TEST_CASE("caching pool: sizes are rounded up to 512 bytes", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  void* a = pool.allocate(1, nullptr);
  CHECK(pool.block_size(a) == 512);
  CHECK(pool.stats().bytes_in_use == 512);
  void* b = pool.allocate(512, nullptr);
  CHECK(pool.block_size(b) == 512);
  void* c = pool.allocate(513, nullptr);
  CHECK(pool.block_size(c) == 1024);
  // Blocks are carved one after another from the same segment.
  CHECK(cp(b) == cp(a) + 512);
  CHECK(cp(c) == cp(b) + 512);
  CHECK(pool.stats().bytes_in_use == 2048);
  CHECK(CachingPool::round_size(0) == 512);
  CHECK(CachingPool::round_size(1024) == 1024);
  CHECK(CachingPool::round_size(1025) == 1536);

  SECTION("zero-byte requests give unique non-null pointers that must be freed") {
    void* z1 = pool.allocate(0, nullptr);
    void* z2 = pool.allocate(0, nullptr);
    REQUIRE(z1 != nullptr);
    REQUIRE(z2 != nullptr);
    CHECK(z1 != z2);
    CHECK(pool.block_size(z1) == 512);
    pool.deallocate(z1);
    pool.deallocate(z2);
  }
  pool.deallocate(a);
  pool.deallocate(b);
  pool.deallocate(c);
  CHECK(pool.stats().bytes_in_use == 0);
}

TEST_CASE("caching pool: small requests share 2 MiB segments, large ones get their own", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");

  void* s1 = pool.allocate(1 * MiB, nullptr);  // largest small request
  CHECK(dev.malloc_sizes == std::vector<std::size_t>{2 * MiB});
  void* s2 = pool.allocate(1 * MiB, nullptr);  // fits in the rest of the same segment
  CHECK(dev.mallocs == 1);
  CHECK(cp(s2) == cp(s1) + MiB);

  void* l1 = pool.allocate(1 * MiB + 1, nullptr);  // smallest large request
  CHECK(dev.malloc_sizes.back() == 2 * MiB);
  // The remainder (1 MiB - 512 B) is not > 1 MiB, so the whole segment is handed out.
  CHECK(pool.block_size(l1) == 2 * MiB);
  CHECK(pool.stats().splits == 1);  // only the first small-segment split

  void* l2 = pool.allocate(5 * MiB, nullptr);
  CHECK(dev.malloc_sizes.back() == 6 * MiB);
  CHECK(pool.block_size(l2) == 6 * MiB);  // the 1 MiB remainder is not split off
  CHECK(pool.stats().bytes_reserved == 2 * MiB + 2 * MiB + 6 * MiB);

  SECTION("a small request is never carved from a cached large block") {
    pool.deallocate(l1);
    const int before = dev.mallocs;
    void* s3 = pool.allocate(4 * KiB, nullptr);
    CHECK(dev.mallocs == before + 1);
    CHECK(dev.malloc_sizes.back() == 2 * MiB);
    pool.deallocate(s3);
    l1 = nullptr;
  }
  SECTION("a large request is never carved from a small segment") {
    pool.deallocate(s1);
    pool.deallocate(s2);  // the small segment is now entirely free (2 MiB)
    s1 = s2 = nullptr;
    const int before = dev.mallocs;
    void* l3 = pool.allocate(2 * MiB, nullptr);
    CHECK(dev.mallocs == before + 1);
    pool.deallocate(l3);
  }
  for (void* p : {s1, s2, l1, l2})
    if (p) pool.deallocate(p);
}

TEST_CASE("caching pool: large blocks are reused best-fit and split when the rest is large", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");

  void* big = pool.allocate(10 * MiB, nullptr);
  void* mid = pool.allocate(4 * MiB, nullptr);
  pool.deallocate(big);
  pool.deallocate(mid);
  REQUIRE(dev.mallocs == 2);

  // Best fit: the 4 MiB block, not the 10 MiB one.
  void* a = pool.allocate(3 * MiB, nullptr);
  CHECK(a == mid);
  CHECK(pool.block_size(a) == 4 * MiB);  // rest 1 MiB is not > 1 MiB: no split
  CHECK(pool.stats().splits == 0);

  // 10 MiB block serves 3 MiB and keeps a 7 MiB remainder.
  void* b = pool.allocate(3 * MiB, nullptr);
  CHECK(b == big);
  CHECK(pool.block_size(b) == 3 * MiB);
  CHECK(pool.stats().splits == 1);
  void* c = pool.allocate(7 * MiB, nullptr);
  CHECK(cp(c) == cp(big) + 3 * MiB);
  CHECK(dev.mallocs == 2);
  CHECK(pool.stats().cache_hits == 3);

  pool.deallocate(b);
  pool.deallocate(c);
  CHECK(pool.stats().merges == 1);
  // The 10 MiB segment is whole again.
  void* d = pool.allocate(10 * MiB, nullptr);
  CHECK(d == big);
  CHECK(dev.mallocs == 2);
  pool.deallocate(d);
  pool.deallocate(a);
}

TEST_CASE("caching pool: neighbouring free blocks of a segment are coalesced", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  void* a = pool.allocate(4 * KiB, nullptr);
  void* b = pool.allocate(4 * KiB, nullptr);
  void* c = pool.allocate(4 * KiB, nullptr);
  REQUIRE(cp(b) == cp(a) + 4 * KiB);
  REQUIRE(cp(c) == cp(b) + 4 * KiB);
  CHECK(pool.stats().splits == 3);

  pool.deallocate(a);
  CHECK(pool.stats().merges == 0);  // b is still in use
  pool.deallocate(b);
  CHECK(pool.stats().merges == 1);  // b folded into a

  // The merged 8 KiB block is the best fit for an 8 KiB request.
  void* ab = pool.allocate(8 * KiB, nullptr);
  CHECK(ab == a);
  pool.deallocate(ab);
  CHECK(pool.stats().merges == 1);  // its neighbours: none before, c (live) after

  // While c lives, the segment cannot be released.
  pool.empty_cache();
  CHECK(dev.frees == 0);
  CHECK(pool.num_segments() == 1);

  pool.deallocate(c);  // merges with the free front and the free tail
  CHECK(pool.stats().merges == 3);
  CHECK(pool.cached_bytes() == 2 * MiB);
  pool.empty_cache();
  CHECK(dev.frees == 1);
  CHECK(dev.live.empty());
  CHECK(pool.num_segments() == 0);
  const auto st = pool.stats();
  CHECK(st.bytes_reserved == 0);
  CHECK(st.device_frees == 1);
}

TEST_CASE("caching pool: statistics", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  void* a = pool.allocate(1000, nullptr);      // 1024 B, new small segment, split
  void* b = pool.allocate(3 * MiB, nullptr);   // 3 MiB in a 4 MiB segment, no split
  void* c = pool.allocate(2000, nullptr);      // 2048 B from the small segment, split
  auto st = pool.stats();
  CHECK(st.bytes_in_use == 1024 + 4 * MiB + 2048);
  CHECK(st.bytes_reserved == 2 * MiB + 4 * MiB);
  CHECK(st.peak_bytes_in_use == st.bytes_in_use);
  CHECK(st.num_allocs == 3);
  CHECK(st.num_frees == 0);
  CHECK(st.device_allocs == 2);
  CHECK(st.device_frees == 0);
  CHECK(st.cache_hits == 1);  // c came from the cached remainder of a's segment
  CHECK(st.splits == 2);
  CHECK(st.merges == 0);
  CHECK(st.oom_retries == 0);

  pool.deallocate(b);
  pool.deallocate(a);
  st = pool.stats();
  CHECK(st.bytes_in_use == 2048);
  CHECK(st.peak_bytes_in_use == 1024 + 4 * MiB + 2048);
  CHECK(st.num_frees == 2);
  CHECK(st.bytes_reserved == 6 * MiB);

  pool.reset_peak_stats();
  st = pool.stats();
  CHECK(st.peak_bytes_in_use == 2048);
  CHECK(st.bytes_in_use == 2048);
  CHECK(st.bytes_reserved == 6 * MiB);
  CHECK(st.num_allocs == 0);
  CHECK(st.device_allocs == 0);
  CHECK(st.cache_hits == 0);

  pool.empty_cache();  // releases the 4 MiB segment; the small one holds c
  st = pool.stats();
  CHECK(st.device_frees == 1);
  CHECK(st.bytes_reserved == 2 * MiB);
  pool.deallocate(c);
  pool.empty_cache();
  st = pool.stats();
  CHECK(st.bytes_reserved == 0);
  CHECK(st.bytes_in_use == 0);
}

TEST_CASE("caching pool: free lists are per stream", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  void* s1 = stream_handle(1);
  void* s2 = stream_handle(2);

  void* p = pool.allocate(4 * KiB, s1);
  pool.deallocate(p);
  void* q = pool.allocate(4 * KiB, s2);
  CHECK(q != p);
  CHECK(dev.mallocs == 2);  // s2 got a segment of its own
  void* r = pool.allocate(4 * KiB, s1);
  CHECK(r == p);
  CHECK(dev.mallocs == 2);

  // Large blocks too.
  void* big = pool.allocate(8 * MiB, s1);
  pool.deallocate(big);
  void* big2 = pool.allocate(8 * MiB, s2);
  CHECK(big2 != big);
  pool.deallocate(big2);
  pool.deallocate(q);
  pool.deallocate(r);
}

TEST_CASE("caching pool: record_stream holds a block until the other stream's event completes",
          "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  void* s1 = stream_handle(1);
  void* s2 = stream_handle(2);

  void* p = pool.allocate(4 * KiB, s1);
  pool.record_stream(p, s2);
  pool.deallocate(p);
  CHECK(dev.records == 1);
  CHECK(dev.incomplete_events() == 1);
  CHECK(pool.stats().bytes_in_use == 0);  // the user gave it back...

  void* q = pool.allocate(4 * KiB, s1);  // ...but s2 may still be using it
  CHECK(q != p);
  CHECK(cp(q) == cp(p) + 4 * KiB);

  // Finishing an unrelated stream changes nothing.
  dev.finish_stream(stream_handle(3));
  void* q2 = pool.allocate(4 * KiB, s1);
  CHECK(q2 != p);

  dev.finish_stream(s2);
  void* r = pool.allocate(4 * KiB, s1);
  CHECK(r == p);
  CHECK(dev.mallocs == 1);

  SECTION("the event is reused, not created per free") {
    pool.record_stream(r, s2);
    pool.deallocate(r);
    CHECK(dev.records == 2);
    CHECK(dev.events_created == 1);
    dev.finish_stream(s2);
    r = pool.allocate(4 * KiB, s1);
    CHECK(r == p);
  }
  SECTION("recording the allocation stream needs no event") {
    pool.record_stream(r, s1);
    pool.deallocate(r);
    CHECK(dev.records == 1);
    r = pool.allocate(4 * KiB, s1);
    CHECK(r == p);
  }
  SECTION("several streams: reusable only when all have completed") {
    void* s3 = stream_handle(3);
    pool.record_stream(r, s2);
    pool.record_stream(r, s3);
    pool.record_stream(r, s3);  // duplicates are recorded once
    pool.deallocate(r);
    CHECK(dev.records == 3);
    dev.finish_stream(s2);
    void* t = pool.allocate(4 * KiB, s1);
    CHECK(t != p);
    dev.finish_stream(s3);
    r = pool.allocate(4 * KiB, s1);
    CHECK(r == p);
    pool.deallocate(t);
  }
  SECTION("empty_cache waits for pending events and releases the segment") {
    pool.record_stream(r, s2);
    pool.deallocate(r);
    pool.deallocate(q);
    pool.deallocate(q2);
    r = q = q2 = nullptr;
    pool.empty_cache();
    CHECK(dev.syncs == 1);
    CHECK(dev.live.empty());
  }
  for (void* x : {q, q2, r})
    if (x) pool.deallocate(x);
  CHECK_THROWS_AS(pool.record_stream(stream_handle(0x1234000), s2), tg::Error);
}

TEST_CASE("caching pool: a failed device allocation empties the cache and retries", "[runtime][pool]") {
  MockDevice dev;
  dev.capacity = 8 * MiB;
  CachingPool pool(dev, "mock:0");

  void* big = pool.allocate(5 * MiB, nullptr);  // 6 MiB segment
  pool.deallocate(big);                         // cached, fully free
  void* small = pool.allocate(64 * KiB, nullptr);  // 2 MiB segment: 8 MiB used
  REQUIRE(dev.used == 8 * MiB);

  // A second small segment does not fit until the cached 6 MiB segment is released.
  void* s2 = stream_handle(2);
  void* other = pool.allocate(64 * KiB, s2);
  REQUIRE(other != nullptr);
  const auto st = pool.stats();
  CHECK(st.oom_retries == 1);
  CHECK(st.device_frees == 1);
  CHECK(st.bytes_reserved == 4 * MiB);
  CHECK(dev.failed_mallocs == 1);
  CHECK(dev.syncs == 1);
  pool.deallocate(small);
  pool.deallocate(other);
}

TEST_CASE("caching pool: on a full device, blocks awaiting events are reclaimed after a sync",
          "[runtime][pool]") {
  MockDevice dev;
  dev.capacity = 4 * MiB;
  CachingPool pool(dev, "mock:0");
  void* s1 = stream_handle(1);
  void* s2 = stream_handle(2);
  void* p = pool.allocate(3 * MiB, s1);  // the whole device
  pool.record_stream(p, s2);
  pool.deallocate(p);
  REQUIRE(dev.incomplete_events() == 1);

  void* q = pool.allocate(3 * MiB, s1);
  CHECK(q == p);  // synchronize completed the event; the block came back from the cache
  CHECK(dev.syncs == 1);
  CHECK(dev.mallocs == 1);
  pool.deallocate(q);
}

TEST_CASE("caching pool: out of memory throws tg::OutOfMemory and the pool keeps working",
          "[runtime][pool]") {
  MockDevice dev;
  dev.capacity = 4 * MiB;
  CachingPool pool(dev, "mock:0");
  void* a = pool.allocate(3 * MiB, nullptr);

  std::string msg;
  std::size_t requested = 0;
  try {
    pool.allocate(6 * MiB, nullptr);
    FAIL("expected tg::OutOfMemory");
  } catch (const tg::OutOfMemory& e) {
    msg = e.what();
    requested = e.requested();
  }
  INFO(msg);
  CHECK(requested == 6 * MiB);
  CHECK(msg.find("MOCK out of memory") == 0);
  CHECK(msg.find("6.00 MiB") != std::string::npos);
  CHECK(msg.find("6291456 bytes") != std::string::npos);
  CHECK(msg.find("mock:0") != std::string::npos);
  CHECK(msg.find("4.00 MiB in use") != std::string::npos);
  CHECK(msg.find("4.00 MiB reserved") != std::string::npos);
  CHECK(pool.stats().oom_retries == 1);

  // OutOfMemory is a tg::Error.
  CHECK_THROWS_AS(pool.allocate(6 * MiB, nullptr), tg::Error);
  // Absurd sizes fail cleanly instead of overflowing the rounding.
  CHECK_THROWS_AS(pool.allocate(~std::size_t{0}, nullptr), tg::OutOfMemory);
  CHECK_THROWS_AS(pool.allocate(~std::size_t{0} - 4 * MiB, nullptr), tg::OutOfMemory);

  // Nothing was lost: the live block is intact, and freeing it makes room again.
  CHECK(pool.block_size(a) == 4 * MiB);
  pool.deallocate(a);
  void* b = pool.allocate(3 * MiB, nullptr);
  CHECK(b == a);
  pool.deallocate(b);
  // A small request needs a new segment, which fits only once the cache is released.
  const auto retries = pool.stats().oom_retries;
  void* c = pool.allocate(64 * KiB, nullptr);
  REQUIRE(c != nullptr);
  CHECK(pool.stats().oom_retries == retries + 1);
  pool.deallocate(c);
  const auto st = pool.stats();
  CHECK(st.bytes_in_use == 0);
  CHECK(st.num_allocs == st.num_frees);
}

TEST_CASE("caching pool: freeing an unknown pointer throws", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  void* a = pool.allocate(100, nullptr);
  CHECK_THROWS_AS(pool.deallocate(cp(a) + 8), tg::Error);
  CHECK_THROWS_AS(pool.deallocate(stream_handle(0x42)), tg::Error);
  CHECK_THROWS_AS(pool.block_size(cp(a) + 512), tg::Error);
  pool.deallocate(a);
  try {
    pool.deallocate(a);  // double free
    FAIL("expected tg::Error");
  } catch (const tg::Error& e) {
    CHECK(std::string(e.what()).find("already freed") != std::string::npos);
  }
  pool.deallocate(nullptr);  // no-op
  CHECK(pool.stats().num_frees == 1);
}

TEST_CASE("caching pool: bypass mode forwards every request to the device", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0", /*bypass=*/true);
  REQUIRE(pool.bypass());
  void* a = pool.allocate(1000, nullptr);
  CHECK(dev.malloc_sizes.back() == 1000);  // exact sizes for compute-sanitizer
  CHECK(pool.block_size(a) == 1000);
  pool.deallocate(a);
  CHECK(dev.frees == 1);
  void* b = pool.allocate(1000, nullptr);
  CHECK(dev.mallocs == 2);
  pool.record_stream(b, stream_handle(2));
  CHECK(dev.records == 0);
  void* z1 = pool.allocate(0, nullptr);
  void* z2 = pool.allocate(0, nullptr);
  CHECK(z1 != nullptr);
  CHECK(z1 != z2);

  auto st = pool.stats();
  CHECK(st.num_allocs == 4);
  CHECK(st.num_frees == 1);
  CHECK(st.device_allocs == 4);
  CHECK(st.device_frees == 1);
  CHECK(st.cache_hits == 0);
  CHECK(st.bytes_in_use == 1002);
  CHECK(st.bytes_reserved == 1002);
  CHECK(st.peak_bytes_in_use == 1002);
  CHECK_THROWS_AS(pool.deallocate(a), tg::Error);

  dev.capacity = dev.used + 100;
  CHECK_THROWS_AS(pool.allocate(200, nullptr), tg::OutOfMemory);
  pool.deallocate(b);
  pool.deallocate(z1);
  pool.deallocate(z2);
  CHECK(dev.live.empty());
  CHECK(pool.stats().bytes_reserved == 0);
}

TEST_CASE("caching pool: the steady state of a training-like loop makes no device allocation",
          "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  // A step: parameters' grads (kept across the step), activations (kept until the
  // "backward"), and short-lived temporaries, on two streams.
  const std::vector<std::size_t> sizes = {4 * KiB,  12 * MiB, 300,       1 * MiB,   256 * KiB, 3 * MiB + 5,
                                          8 * MiB,  64,       2 * MiB,   17 * KiB,  1 * MiB + 1, 40 * MiB,
                                          96 * KiB, 5 * MiB,  768 * KiB, 1536,      7 * MiB,     33 * KiB};
  void* s1 = stream_handle(1);
  void* s2 = stream_handle(2);
  auto step = [&] {
    std::vector<void*> acts;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      void* stream = i % 5 == 4 ? s2 : s1;
      void* tmp = pool.allocate(sizes[(i + 7) % sizes.size()] / 2 + 1, stream);
      acts.push_back(pool.allocate(sizes[i], stream));
      pool.deallocate(tmp);
    }
    for (std::size_t i = acts.size(); i-- > 0;) {
      void* grad = pool.allocate(sizes[i], i % 5 == 4 ? s2 : s1);
      pool.deallocate(acts[i]);
      pool.deallocate(grad);
    }
  };
  step();
  const auto warm = pool.stats();
  const int mallocs = dev.mallocs;
  for (int it = 0; it < 50; ++it) step();
  const auto st = pool.stats();
  CHECK(dev.mallocs == mallocs);
  CHECK(st.device_allocs == warm.device_allocs);
  CHECK(st.device_frees == 0);
  CHECK(st.bytes_reserved == warm.bytes_reserved);
  CHECK(st.bytes_in_use == 0);
}

TEST_CASE("caching pool: randomized use never hands out overlapping or early-reused memory",
          "[runtime][pool]") {
  MockDevice dev;
  dev.capacity = 256 * MiB;
  CachingPool pool(dev, "mock:0");
  std::mt19937_64 rng(1234);
  struct Live {
    std::uintptr_t addr;
    std::size_t size;
    void* stream;
  };
  std::vector<Live> live;
  // Ranges freed with a pending event on some stream: must not be handed out until then.
  struct Held {
    std::uintptr_t addr;
    std::size_t size;
    void* stream;
  };
  std::vector<Held> held;
  const std::vector<std::size_t> choices = {1, 100, 512, 4000, 65536, 300000, 1 * MiB, 1 * MiB + 1, 3 * MiB, 9 * MiB + 77};

  auto overlaps = [](std::uintptr_t a, std::size_t n, std::uintptr_t b, std::size_t m) {
    return a < b + m && b < a + n;
  };
  int ooms = 0;
  for (int op = 0; op < 4000; ++op) {
    const int what = static_cast<int>(rng() % 10);
    if (what < 5 || live.empty()) {
      const std::size_t n = choices[rng() % choices.size()];
      void* stream = stream_handle(1 + rng() % 2);
      void* p = nullptr;
      const int syncs = dev.syncs;
      try {
        p = pool.allocate(n, stream);
      } catch (const tg::OutOfMemory&) {
        ++ooms;
      }
      if (dev.syncs != syncs) held.clear();  // an OOM retry synchronized the device
      if (p == nullptr) continue;
      const auto addr = reinterpret_cast<std::uintptr_t>(p);
      REQUIRE(pool.block_size(p) >= n);
      // Inside a device allocation.
      auto seg = dev.live.upper_bound(addr);
      REQUIRE(seg != dev.live.begin());
      --seg;
      REQUIRE(addr + n <= seg->first + seg->second);
      for (const Live& l : live) REQUIRE_FALSE(overlaps(addr, n, l.addr, l.size));
      for (const Held& h : held) REQUIRE_FALSE(overlaps(addr, n, h.addr, h.size));
      live.push_back({addr, n, stream});
    } else if (what < 9) {
      const std::size_t i = rng() % live.size();
      const Live l = live[i];
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      if (rng() % 4 == 0) {
        void* other = stream_handle(l.stream == stream_handle(1) ? 2 : 1);
        pool.record_stream(reinterpret_cast<void*>(l.addr), other);
        held.push_back({l.addr, l.size, other});
      }
      pool.deallocate(reinterpret_cast<void*>(l.addr));
    } else {
      void* s = stream_handle(1 + rng() % 2);
      dev.finish_stream(s);
      std::erase_if(held, [&](const Held& h) { return h.stream == s; });
    }
  }
  // The run must have exercised the interesting paths.
  INFO("OOMs " << ooms << ", events " << dev.records << ", syncs " << dev.syncs << ", retries "
               << pool.stats().oom_retries);
  CHECK(ooms > 0);
  CHECK(dev.records > 50);
  CHECK(pool.stats().oom_retries > static_cast<std::uint64_t>(ooms));
  CHECK(pool.stats().merges > 100);
  for (const Live& l : live) pool.deallocate(reinterpret_cast<void*>(l.addr));
  pool.empty_cache();
  CHECK(dev.live.empty());
  const auto st = pool.stats();
  CHECK(st.bytes_in_use == 0);
  CHECK(st.bytes_reserved == 0);
  CHECK(st.num_allocs == st.num_frees);
}

TEST_CASE("caching pool: concurrent use from several threads", "[runtime][pool]") {
  MockDevice dev;
  CachingPool pool(dev, "mock:0");
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      std::vector<void*> mine;
      for (int i = 0; i < 2000; ++i) {
        try {
          if (mine.empty() || rng() % 2 == 0) {
            mine.push_back(pool.allocate(512 * (1 + rng() % 64), stream_handle(1 + t % 2)));
          } else {
            pool.deallocate(mine.back());
            mine.pop_back();
          }
        } catch (...) {
          ++errors;
        }
      }
      for (void* p : mine) pool.deallocate(p);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(errors == 0);
  const auto st = pool.stats();
  CHECK(st.bytes_in_use == 0);
  CHECK(st.num_allocs == st.num_frees);
}

TEST_CASE("caching pool: destruction returns all memory and events to the device", "[runtime][pool]") {
  MockDevice dev;
  {
    CachingPool pool(dev, "mock:0");
    void* a = pool.allocate(4 * KiB, nullptr);
    void* b = pool.allocate(20 * MiB, nullptr);
    pool.allocate(100, nullptr);  // still live when the pool dies
    pool.record_stream(a, stream_handle(2));
    pool.deallocate(a);  // pending event
    pool.deallocate(b);  // cached
  }
  CHECK(dev.live.empty());
  CHECK(dev.events_created == dev.events_destroyed);
}

TEST_CASE("caching pool: helpers", "[runtime][pool]") {
  using tg::runtime::format_bytes;
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(64 * KiB) == "64.00 KiB");
  CHECK(format_bytes(3 * MiB / 2) == "1.50 MiB");
  CHECK(format_bytes(std::size_t{40} << 30) == "40.00 GiB");
  CHECK(format_bytes(std::size_t{1} << 50) == "1.00 PiB");
}

}  // namespace test_caching_pool
