#include "ops/layout/builders.h"

#include "runtime/philox.h"

namespace tg {

namespace {
void check_extents(const char* op, std::int64_t B, std::int64_t Mb, std::int64_t Nb) {
  if (B < 0 || Mb < 0 || Nb < 0) {
    TG_THROW(ShapeError, op, ": block extents must be non-negative, got [", B, ", ", Mb, ", ", Nb, "]");
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
  if (!dense.defined() || dense.dim() != 3) {
    TG_THROW(ShapeError, "layout_of: dense must be 3-d [B, M, N], got ",
             dense.defined() ? dense.shape().str() : std::string("an undefined tensor"));
  }
  if (block_size < 1 || (block_size & (block_size - 1))) {
    TG_THROW(LayoutError, "layout_of: block size must be a power of two >= 1, got ", block_size);
  }
  const std::int64_t B = dense.size(0), M = dense.size(1), N = dense.size(2);
  if (M % block_size || N % block_size) {
    TG_THROW(LayoutError, "layout_of: M = ", M, " and N = ", N, " must be divisible by the block size ", block_size);
  }
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

}  // namespace tg
