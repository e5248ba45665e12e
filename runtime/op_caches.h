// Process-wide caches of derived data that ops keep across calls (block-sparse matmul
// plans, attention tile lists). They hold device tensors, so whoever wants every byte back
// (a leak checker at exit, a program handing the GPU to another library) must be able to
// drop them: each cache registers a release function here.
#pragma once

#include <functional>
#include <list>
#include <mutex>

namespace tg::runtime {

/// Registers `release`, which must drop every entry of one op cache (thread-safe against
/// the cache's own users). Registered once per cache, when the cache is first created;
/// never unregistered (caches live for the whole process).
void register_op_cache(std::function<void()> release);

/// Calls every registered release function. Entries still in use by a running op stay
/// alive until that op lets go of them (the caches hand out shared pointers).
void release_op_caches();

/// The process-wide list of one op cache's entries (most recently used first, the
/// caller's policy), guarded by `mu`: created on first use, registered above, never
/// destroyed (its entries may hold device tensors, which must not be freed after the
/// device runtime is gone at exit). One list per `Entry` type.
template <typename Entry>
struct OpCacheList {
  std::mutex mu;
  std::list<Entry> entries;

  static OpCacheList& instance() {
    static OpCacheList* list = [] {
      auto* l = new OpCacheList;
      register_op_cache([l] {
        std::list<Entry> doomed;  // destroyed outside the lock
        std::lock_guard<std::mutex> lock(l->mu);
        doomed.swap(l->entries);
      });
      return l;
    }();
    return *list;
  }
};

}  // namespace tg::runtime
