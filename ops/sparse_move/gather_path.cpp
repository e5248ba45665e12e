#include "ops/sparse_move/gather_path.h"

#include <atomic>

namespace tg::ops::smove {
namespace {
std::atomic<Dim1Path> g_dim1{Dim1Path::Auto};
}  // namespace

void set_dim1_path(Dim1Path path) { g_dim1.store(path, std::memory_order_relaxed); }

Dim1Path dim1_path() { return g_dim1.load(std::memory_order_relaxed); }

namespace {
thread_local Dim1Path t_last = Dim1Path::Auto;
}  // namespace

Dim1Path last_dim1_kernel() { return t_last; }

void note_dim1_kernel(Dim1Path ran) { t_last = ran; }

}  // namespace tg::ops::smove
