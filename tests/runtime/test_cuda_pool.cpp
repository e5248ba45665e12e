// The CUDA caching pool on a real GPU, through the generic backend interface (so this
// file also compiles in CPU-only builds, where every case is skipped).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "catch.h"
#include "runtime/backend.h"
#include "runtime/caching_pool.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/stream.h"

namespace test_cuda_pool {

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

// The CUDA backend when it is built in and a GPU is visible, else nullptr.
tg::runtime::Backend* cuda_backend() {
  tg::runtime::Backend* b = tg::runtime::find_backend(tg::DeviceType::CUDA);
  if (b == nullptr || tg::cuda_device_count() == 0) return nullptr;
  return b;
}

// Skips without a GPU or with the cache disabled; otherwise starts from an empty cache so
// that blocks cached by earlier tests (maybe under a reused stream handle) do not change
// which block best fits.
#define TG_REQUIRE_CUDA_POOL()                                                           \
  tg::runtime::Backend* be = cuda_backend();                                              \
  if (be == nullptr) TG_SKIP("no CUDA device: [cuda] test skipped");                       \
  if (tg::runtime::pool_disabled_by_env()) TG_SKIP("TG_POOL=off: caching tests skipped"); \
  const tg::Device dev = tg::Device::cuda(0);                                             \
  be->synchronize_device(dev);                                                            \
  be->empty_cache(dev)

// Fills `n` bytes at device pointer `p` with `value` via a host copy, on `s`.
void fill(tg::runtime::Backend& be, void* p, std::size_t n, unsigned char value, tg::Stream s) {
  std::vector<unsigned char> host(n, value);
  be.copy(p, s.device, host.data(), tg::Device::cpu(), n, s);
  be.synchronize(s);  // the host buffer dies at return (pinned or not, be safe)
}

std::vector<unsigned char> read(tg::runtime::Backend& be, const void* p, std::size_t n, tg::Stream s) {
  std::vector<unsigned char> host(n);
  be.copy(host.data(), tg::Device::cpu(), p, s.device, n, s);
  return host;
}

bool all_equal(const std::vector<unsigned char>& v, unsigned char x) {
  for (unsigned char c : v)
    if (c != x) return false;
  return true;
}

}  // namespace

TEST_CASE("cuda pool: freed blocks are reused without cudaMalloc", "[runtime][pool][cuda]") {
  TG_REQUIRE_CUDA_POOL();
  const tg::Stream s = be->current_stream(dev);
  void* p = be->allocate(1000, s);
  REQUIRE(p != nullptr);
  be->deallocate(p, dev);
  const auto before = be->memory_stats(dev);
  void* q = be->allocate(1000, s);
  const auto after = be->memory_stats(dev);
  CHECK(q == p);
  CHECK(after.device_allocs == before.device_allocs);
  CHECK(after.cache_hits == before.cache_hits + 1);

  // The memory works.
  be->memset_zero(q, 1000, s);
  CHECK(all_equal(read(*be, q, 1000, s), 0));
  fill(*be, q, 1000, 7, s);
  CHECK(all_equal(read(*be, q, 1000, s), 7));
  be->deallocate(q, dev);
}

TEST_CASE("cuda pool: statistics", "[runtime][pool][cuda]") {
  TG_REQUIRE_CUDA_POOL();
  const tg::Stream s = be->current_stream(dev);
  be->synchronize_device(dev);
  be->reset_peak_stats(dev);
  const auto s0 = be->memory_stats(dev);
  CHECK(s0.peak_bytes_in_use == s0.bytes_in_use);
  CHECK(s0.num_allocs == 0);

  void* a = be->allocate(1, s);            // 512 B
  void* b = be->allocate(24 * MiB + 1, s);  // large: 24 MiB + 512 B
  const auto s1 = be->memory_stats(dev);
  CHECK(s1.bytes_in_use - s0.bytes_in_use >= 512 + 24 * MiB + 512);
  CHECK(s1.bytes_reserved >= s1.bytes_in_use);
  CHECK(s1.num_allocs == 2);
  CHECK(s1.peak_bytes_in_use == s1.bytes_in_use);
  be->deallocate(b, dev);
  be->deallocate(a, dev);
  const auto s2 = be->memory_stats(dev);
  CHECK(s2.bytes_in_use == s0.bytes_in_use);
  CHECK(s2.num_frees == 2);
  CHECK(s2.peak_bytes_in_use == s1.peak_bytes_in_use);
  CHECK(s2.bytes_reserved == s1.bytes_reserved);  // cached, not returned
  // tg::memory_stats is the same counters.
  CHECK(tg::memory_stats(dev).num_allocs == s2.num_allocs);
}

TEST_CASE("cuda pool: empty_cache returns cached segments to the driver", "[runtime][pool][cuda]") {
  TG_REQUIRE_CUDA_POOL();
  const tg::Stream s = be->current_stream(dev);
  void* p = be->allocate(64 * MiB, s);
  be->deallocate(p, dev);
  const auto before = be->memory_stats(dev);
  be->empty_cache(dev);
  const auto after = be->memory_stats(dev);
  CHECK(after.bytes_reserved + 64 * MiB <= before.bytes_reserved);
  CHECK(after.device_frees > before.device_frees);
  CHECK(after.bytes_in_use == before.bytes_in_use);

  // Allocating again needs the driver.
  void* q = be->allocate(64 * MiB, s);
  CHECK(be->memory_stats(dev).device_allocs == after.device_allocs + 1);
  be->deallocate(q, dev);
}

TEST_CASE("cuda pool: an impossible request throws tg::OutOfMemory and the pool keeps working",
          "[runtime][pool][cuda][oom]") {
  tg::runtime::Backend* be = cuda_backend();
  if (be == nullptr) TG_SKIP("no CUDA device: [cuda] test skipped");
  const tg::Device dev = tg::Device::cuda(0);
  const tg::Stream s = be->current_stream(dev);
  void* live = be->allocate(MiB, s);
  fill(*be, live, MiB, 3, s);

  const std::size_t pib = std::size_t{1} << 50;
  std::string msg;
  try {
    be->allocate(pib, s);
    FAIL("expected tg::OutOfMemory");
  } catch (const tg::OutOfMemory& e) {
    msg = e.what();
    CHECK(e.requested() == pib);
  }
  INFO(msg);
  CHECK(msg.find("CUDA out of memory") == 0);
  CHECK(msg.find("1.00 PiB") != std::string::npos);
  CHECK(msg.find("cuda:0") != std::string::npos);
  CHECK(msg.find("reserved") != std::string::npos);

  // Live memory is untouched and new requests are served; the failed cudaMalloc left no
  // error behind for later checks to trip over.
  CHECK(all_equal(read(*be, live, MiB, s), 3));
  void* more = be->allocate(8 * MiB, s);
  be->memset_zero(more, 8 * MiB, s);
  CHECK(all_equal(read(*be, more, 8 * MiB, s), 0));
  be->deallocate(more, dev);
  be->deallocate(live, dev);
  be->synchronize_device(dev);
}

TEST_CASE("cuda pool: blocks stay on their stream; record_stream hands a block over", "[runtime][pool][cuda]") {
  TG_REQUIRE_CUDA_POOL();
  const tg::Stream s1 = be->create_stream(dev);
  const tg::Stream s2 = be->create_stream(dev);
  REQUIRE(s1.handle != nullptr);
  REQUIRE(s1.handle != s2.handle);
  const std::size_t n = 4 * MiB;

  SECTION("a block freed on one stream is not reused by another") {
    void* p = be->allocate(n, s1);
    be->deallocate(p, dev);
    void* q = be->allocate(n, s2);
    CHECK(q != p);
    void* r = be->allocate(n, s1);
    CHECK(r == p);
    be->deallocate(q, dev);
    be->deallocate(r, dev);
  }
  SECTION("record_stream: reusable once the other stream has caught up") {
    void* src = be->allocate(n, s1);
    fill(*be, src, n, 5, s1);
    void* dst = be->allocate(n, s2);
    // s2 reads src; the block must not be recycled under it.
    be->copy(dst, dev, src, dev, n, s2);
    be->record_stream(src, s2);
    be->deallocate(src, dev);
    // Whatever s1 writes into new blocks must not reach the bytes s2 is copying.
    void* other = be->allocate(n, s1);
    be->memset_zero(other, n, s1);
    CHECK(all_equal(read(*be, dst, n, s2), 5));

    be->synchronize(s2);
    be->synchronize(s1);
    // The event has completed: the block is back in s1's free list. (If s2 had already
    // finished when `other` was requested, `other` legitimately took it.)
    void* again = be->allocate(n, s1);
    CHECK((again == src || other == src));
    be->deallocate(again, dev);
    be->deallocate(other, dev);
    be->deallocate(dst, dev);
  }
  SECTION("record_stream on an unknown pointer throws") {
    int x = 0;
    CHECK_THROWS_AS(be->record_stream(&x, s2), tg::Error);
    CHECK_THROWS_AS(be->deallocate(&x, dev), tg::Error);
  }
  be->synchronize_device(dev);
  be->destroy_stream(s1);
  be->destroy_stream(s2);
}

TEST_CASE("cuda pool: a training-like loop stops calling cudaMalloc after warm-up", "[runtime][pool][cuda]") {
  TG_REQUIRE_CUDA_POOL();
  const tg::Stream s = be->current_stream(dev);
  const std::vector<std::size_t> sizes = {4096, 12 * MiB, 300, MiB, 256 * 1024, 3 * MiB + 5, 64, 40 * MiB, 1536};
  auto step = [&] {
    std::vector<void*> acts;
    for (std::size_t sz : sizes) {
      void* tmp = be->allocate(sz / 3 + 1, s);
      acts.push_back(be->allocate(sz, s));
      be->deallocate(tmp, dev);
    }
    for (std::size_t i = acts.size(); i-- > 0;) be->deallocate(acts[i], dev);
  };
  step();
  const auto warm = be->memory_stats(dev);
  for (int i = 0; i < 20; ++i) step();
  const auto st = be->memory_stats(dev);
  CHECK(st.device_allocs == warm.device_allocs);
  CHECK(st.bytes_reserved == warm.bytes_reserved);
}

TEST_CASE("cuda backend: streams and devices are validated", "[runtime][pool][cuda]") {
  tg::runtime::Backend* be = cuda_backend();
  if (be == nullptr) TG_SKIP("no CUDA device: [cuda] test skipped");
  const tg::Device dev = tg::Device::cuda(0);
  CHECK_THROWS_AS(be->allocate(16, tg::Stream{tg::Device::cuda(1000), nullptr}), tg::DeviceError);
  CHECK_THROWS_AS(be->destroy_stream(tg::Stream{dev, nullptr}), tg::Error);

  // The current stream is per thread and settable.
  const tg::Stream s = be->create_stream(dev);
  {
    tg::StreamGuard g(s);
    CHECK(tg::current_stream(dev) == s);
  }
  CHECK(tg::current_stream(dev).handle == nullptr);
  be->destroy_stream(s);
}

TEST_CASE("cuda_compute_capability: the device's, or DeviceError for a device that does not exist",
          "[runtime][device]") {
  CHECK_THROWS_AS(tg::cuda_compute_capability(-1), tg::DeviceError);
  CHECK_THROWS_AS(tg::cuda_compute_capability(tg::cuda_device_count()), tg::DeviceError);
  if (!tg::cuda_available()) return;  // on a GPU machine, also a plausible value (sm_50 .. sm_12x)
  const int cc = tg::cuda_compute_capability(0);
  CHECK(cc >= 50);
  CHECK(cc < 130);
}

}  // namespace test_cuda_pool
