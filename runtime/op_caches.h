// Process-wide caches of derived data that ops keep across calls (block-sparse matmul
// plans, attention tile lists). They hold device tensors, so whoever wants every byte back
// (a leak checker at exit, a program handing the GPU to another library) must be able to
// drop them: each cache registers a release function here.
#pragma once

#include <functional>

namespace tg::runtime {

/// Registers `release`, which must drop every entry of one op cache (thread-safe against
/// the cache's own users). Registered once per cache, when the cache is first created;
/// never unregistered (caches live for the whole process).
void register_op_cache(std::function<void()> release);

/// Calls every registered release function. Entries still in use by a running op stay
/// alive until that op lets go of them (the caches hand out shared pointers).
void release_op_caches();

}  // namespace tg::runtime
