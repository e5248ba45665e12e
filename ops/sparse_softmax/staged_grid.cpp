#include "ops/sparse_softmax/staged_grid.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "runtime/error.h"

namespace tg::ops {
namespace {

std::atomic<StagedGrid> g_grid{StagedGrid::Auto};
std::atomic<std::int64_t> g_max_ctas{0};

StagedGrid grid_from_environment() {
  const char* v = std::getenv("TG_SOFTMAX_GRID");
  if (v == nullptr || *v == '\0') return StagedGrid::Persistent;
  const std::string s(v);
  if (s == "persistent") return StagedGrid::Persistent;
  if (s == "slice") return StagedGrid::OnePerSlice;
  TG_THROW(ValueError, "softmax: environment variable TG_SOFTMAX_GRID: expected persistent or slice, got '", s, "'");
}

}  // namespace

void set_staged_grid(StagedGrid g, std::int64_t max_ctas) {
  g_grid.store(g, std::memory_order_relaxed);
  g_max_ctas.store(g == StagedGrid::Persistent && max_ctas > 0 ? max_ctas : 0, std::memory_order_relaxed);
}

StagedGrid staged_grid() {
  const StagedGrid g = g_grid.load(std::memory_order_relaxed);
  if (g != StagedGrid::Auto) return g;
  static const StagedGrid env = grid_from_environment();
  return env;
}

std::int64_t staged_grid_max_ctas() { return g_max_ctas.load(std::memory_order_relaxed); }

}  // namespace tg::ops
