#include "ops/sparse_softmax/two_pass.h"

#include <atomic>

namespace tg::ops {
namespace {
std::atomic<bool> g_force{false};
}  // namespace

void set_force_two_pass(bool on) { g_force.store(on, std::memory_order_relaxed); }

bool force_two_pass() { return g_force.load(std::memory_order_relaxed); }

}  // namespace tg::ops
