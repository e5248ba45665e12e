#include "runtime/op_caches.h"

#include <mutex>
#include <vector>

namespace tg::runtime {

namespace {
struct Registry {
  std::mutex mu;
  std::vector<std::function<void()>> releases;
};
// Never destroyed, like the caches that register here.
Registry& registry() {
  static auto* r = new Registry;
  return *r;
}
}  // namespace

void register_op_cache(std::function<void()> release) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.releases.push_back(std::move(release));
}

void release_op_caches() {
  std::vector<std::function<void()>> releases;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    releases = r.releases;
  }
  // Outside the registry lock: a release frees tensors, which may call back into the pool.
  for (auto& release : releases) release();
}

}  // namespace tg::runtime
