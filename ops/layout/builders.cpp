#include "ops/layout/builders.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/philox.h"

namespace tg {

namespace {
void check_extents(const char* op, std::int64_t B, std::int64_t Mb, std::int64_t Nb) {
  if (B < 0 || Mb < 0 || Nb < 0) {
    TG_THROW(ShapeError, op, ": block extents must be non-negative, got [", B, ", ", Mb, ", ", Nb, "]");
  }
}

// The checks layout_of and magnitude_layout share: a 3-d dense whose M and N divide by a
// power-of-two block size.
void check_dense_blocks(const char* op, const Tensor& dense, std::int64_t block_size) {
  if (!dense.defined() || dense.dim() != 3) {
    TG_THROW(ShapeError, op, ": dense must be 3-d [B, M, N], got ",
             dense.defined() ? dense.shape().str() : std::string("an undefined tensor"));
  }
  if (block_size < 1 || (block_size & (block_size - 1))) {
    TG_THROW(LayoutError, op, ": block size must be a power of two >= 1, got ", block_size);
  }
  const std::int64_t M = dense.size(1), N = dense.size(2);
  if (M % block_size || N % block_size) {
    TG_THROW(LayoutError, op, ": M = ", M, " and N = ", N, " must be divisible by the block size ", block_size);
  }
}

}  // namespace

Layout full_layout(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t block_size) {
  check_extents("full_layout", B, Mb, Nb);
  return Layout(from_vector(std::vector<bool>(static_cast<std::size_t>(B * Mb * Nb), true), {B, Mb, Nb}), block_size);
}

Layout random_layout(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t block_size, double density,
                     std::uint64_t seed) {
  check_extents("random_layout", B, Mb, Nb);
  if (!(density >= 0.0 && density <= 1.0)) TG_THROW(ValueError, "random_layout: density must be in [0, 1], got ", density);
  std::vector<bool> m(static_cast<std::size_t>(B * Mb * Nb));
  for (std::size_t i = 0; i < m.size(); ++i) m[i] = philox::uniform(seed, 0x1a70u, i) < density;
  return Layout(from_vector(m, {B, Mb, Nb}), block_size);
}

Layout layout_of(const Tensor& dense, std::int64_t block_size) {
  check_dense_blocks("layout_of", dense, block_size);
  const std::int64_t B = dense.size(0), M = dense.size(1), N = dense.size(2);
  const std::int64_t Mb = M / block_size, Nb = N / block_size;
  std::vector<double> v = dense.to_vector<double>();
  std::vector<bool> m(static_cast<std::size_t>(B * Mb * Nb), false);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j)
        if (v[static_cast<std::size_t>((b * M + i) * N + j)] != 0.0)  // NaN != 0 holds
          m[static_cast<std::size_t>((b * Mb + i / block_size) * Nb + j / block_size)] = true;
  return Layout(from_vector(m, {B, Mb, Nb}), block_size);
}

Layout magnitude_layout(const Tensor& dense, std::int64_t block_size, double density) {
  check_dense_blocks("magnitude_layout", dense, block_size);
  if (!is_floating(dense.dtype())) {
    TG_THROW(DTypeError, "magnitude_layout: dense must have a floating dtype, got ", dense.dtype());
  }
  if (!(density >= 0.0 && density <= 1.0)) {
    TG_THROW(ValueError, "magnitude_layout: density must be in [0, 1], got ", density);
  }
  const std::int64_t B = dense.size(0), M = dense.size(1), N = dense.size(2);
  const std::int64_t Mb = M / block_size, Nb = N / block_size, per = Mb * Nb;
  const auto keep = static_cast<std::int64_t>(std::llround(density * static_cast<double>(per)));
  std::vector<double> v = dense.to_vector<double>();
  std::vector<bool> m(static_cast<std::size_t>(B * per), false);
  std::vector<double> norm(static_cast<std::size_t>(per));
  std::vector<std::int64_t> order(static_cast<std::size_t>(per));
  for (std::int64_t b = 0; b < B; ++b) {
    std::fill(norm.begin(), norm.end(), 0.0);
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) {
        const double x = v[static_cast<std::size_t>((b * M + i) * N + j)];
        norm[static_cast<std::size_t>(i / block_size * Nb + j / block_size)] += x * x;
      }
    std::iota(order.begin(), order.end(), 0);
    // NaN first (a NaN block is never silently pruned), then larger norms, then lower index.
    auto before = [&](std::int64_t a, std::int64_t c) {
      const double na = norm[static_cast<std::size_t>(a)], nc = norm[static_cast<std::size_t>(c)];
      if (std::isnan(na) != std::isnan(nc)) return std::isnan(na);
      if (!std::isnan(na) && na != nc) return na > nc;
      return a < c;
    };
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), before);
    for (std::int64_t k = 0; k < keep; ++k) {
      m[static_cast<std::size_t>(b * per + order[static_cast<std::size_t>(k)])] = true;
    }
  }
  return Layout(from_vector(m, {B, Mb, Nb}), block_size);
}

}  // namespace tg
