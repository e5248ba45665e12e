#include "ops/layout/derived.h"

#include <algorithm>

#include "ops/factory/factory.h"
#include "ops/index_check/kernels.h"
#include "ops/sparse_adapt/kernels.h"
#include "ops/sparse_move/kernels.h"
#include "runtime/stream.h"

namespace tg {

namespace {
bool is_pow2(std::int64_t v) { return v >= 1 && (v & (v - 1)) == 0; }
}  // namespace

Layout matmul_layout(const Layout& lx, const Layout& ly) {
  if (!lx.defined() || !ly.defined()) TG_THROW(LayoutError, "matmul_layout: lx and ly must be defined layouts");
  if (lx.block_size() != ly.block_size()) {
    TG_THROW(LayoutError, "matmul_layout: lx and ly must have the same block size, got ", lx.block_size(), " and ",
             ly.block_size());
  }
  if (lx.batch() != ly.batch()) {
    TG_THROW(ShapeError, "matmul_layout: lx has batch ", lx.batch(), " but ly has batch ", ly.batch());
  }
  if (lx.block_cols() != ly.block_rows()) {
    TG_THROW(ShapeError, "matmul_layout: lx has ", lx.block_cols(), " block-columns but ly has ", ly.block_rows(),
             " block-rows");
  }
  const std::int64_t B = lx.batch(), Mb = lx.block_rows(), Kb = lx.block_cols(), Nb = ly.block_cols();
  const auto &mx = lx.mask_host(), &my = ly.mask_host();
  std::vector<std::uint8_t> out(static_cast<std::size_t>(B * Mb * Nb), 0);
  // Row i of the product is the union of the rows k of ly that row i of lx selects.
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < Mb; ++i) {
      std::uint8_t* o = out.data() + (b * Mb + i) * Nb;
      for (std::int64_t k = 0; k < Kb; ++k) {
        if (!mx[static_cast<std::size_t>((b * Mb + i) * Kb + k)]) continue;
        const std::uint8_t* y = my.data() + (b * Kb + k) * Nb;
        for (std::int64_t j = 0; j < Nb; ++j) o[j] |= y[j];
      }
    }
  return Layout(from_vector(std::vector<bool>(out.begin(), out.end()), {B, Mb, Nb}), lx.block_size());
}

namespace {

// The layout at bs_to of the blocks overlapping l's active blocks k with keep(k) (all when
// keep is empty).
Layout cover(const Layout& l, std::int64_t bs_to, const std::vector<bool>& keep) {
  const std::int64_t bs = l.block_size(), B = l.batch(), n = l.n_blocks();
  const std::int64_t tMb = (l.rows() + bs_to - 1) / bs_to, tNb = (l.cols() + bs_to - 1) / bs_to;
  std::vector<bool> m(static_cast<std::size_t>(B * tMb * tNb), false);
  if (n > 0) {
    const std::int64_t* coords = l.tables(Device::cpu()).block_coords.data<std::int64_t>();
    for (std::int64_t k = 0; k < n; ++k) {
      if (!keep.empty() && !keep[static_cast<std::size_t>(k)]) continue;
      const std::int64_t b = coords[3 * k], R = coords[3 * k + 1], C = coords[3 * k + 2];
      // Target blocks overlapping the source block's rows [R*bs, (R+1)*bs) and columns.
      for (std::int64_t tr = R * bs / bs_to; tr <= ((R + 1) * bs - 1) / bs_to; ++tr)
        for (std::int64_t tc = C * bs / bs_to; tc <= ((C + 1) * bs - 1) / bs_to; ++tc)
          m[static_cast<std::size_t>((b * tMb + tr) * tNb + tc)] = true;
    }
  }
  return Layout(from_vector(m, {B, tMb, tNb}), bs_to);
}

}  // namespace

Layout adapted_layout(const BlockSparseTensor& x, std::int64_t bs_to) {
  check_block_sparse("adapted_layout", "x", x);
  if (!is_pow2(bs_to)) TG_THROW(LayoutError, "adapted_layout: bs_to must be a power of two >= 1, got ", bs_to);
  const std::int64_t n = x.layout().n_blocks();
  std::vector<bool> nz;
  if (n > 0) {
    Tensor flags = empty({n}, {.dtype = DType::boolean, .device = x.device()});
    ops::sparse_nonzero_blocks_kernel()(x.device())(x.data(), flags);
    nz = flags.to_vector<bool>();
  }
  return cover(x.layout(), bs_to, nz);
}

Layout covering_layout(const Layout& l, std::int64_t bs_to) {
  if (!l.defined()) TG_THROW(LayoutError, "covering_layout: l must be a defined layout");
  if (!is_pow2(bs_to)) TG_THROW(LayoutError, "covering_layout: bs_to must be a power of two >= 1, got ", bs_to);
  return cover(l, bs_to, {});
}

Layout distribution_layout(const BlockSparseTensor& idx, int dim, const Shape& target_shape, std::int64_t bs) {
  check_block_sparse("distribution_layout", "idx", idx);
  if (idx.dtype() != DType::i32 && idx.dtype() != DType::i64) {
    TG_THROW(DTypeError, "distribution_layout: idx must be an i32 or i64 tensor, got ", dtype_name(idx.dtype()));
  }
  if (dim < -3 || dim > 2) TG_THROW(ValueError, "distribution_layout: dim must be in [-3, 2], got ", dim);
  const int d = dim < 0 ? dim + 3 : dim;
  if (target_shape.ndim() != 3) {
    TG_THROW(ShapeError, "distribution_layout: target_shape must be [B, M, N], got ", target_shape);
  }
  if (!is_pow2(bs)) TG_THROW(LayoutError, "distribution_layout: bs must be a power of two >= 1, got ", bs);
  const std::int64_t tB = target_shape[0], tM = target_shape[1], tN = target_shape[2];
  if (tB < 0 || tM < 0 || tN < 0) TG_THROW(ShapeError, "distribution_layout: target_shape must be non-negative, got ", target_shape);
  if (tM % bs || tN % bs) {
    TG_THROW(LayoutError, "distribution_layout: target M = ", tM, " and N = ", tN, " must be divisible by bs = ", bs);
  }
  const Layout& l = idx.layout();
  const std::int64_t have[3] = {l.batch(), l.rows(), l.cols()}, tgt[3] = {tB, tM, tN};
  for (int k = 0; k < 3; ++k) {
    if (k != d && have[k] > tgt[k]) {
      TG_THROW(ShapeError, "distribution_layout: idx extent along dim ", k, " (", have[k],
               ") may not exceed the target's (", tgt[k], "); idx shape ", idx.shape(), ", target_shape ",
               target_shape);
    }
  }
  const std::int64_t tMb = tM / bs, tNb = tN / bs;
  Tensor flags = zeros({tB, tMb, tNb}, {.dtype = DType::boolean, .device = idx.device()});
  if (l.n_blocks() > 0) {
    const std::int64_t limit = tgt[d];
    ops::index_range_kernel()(idx.device())(idx.data(), [limit, d](std::int64_t lo, std::int64_t hi) {
      if (lo < 0 || hi >= limit) {
        TG_THROW(ValueError, "distribution_layout: idx values must lie in [0, ", limit,
                 ") (the target extent along dim ", d, "), got values in [", lo, ", ", hi, "]");
      }
    });
    // The layout is built on the host from the flags anyway: wait for the check here so
    // that the distribution kernel only ever sees valid values.
    synchronize(current_stream(idx.device()));
    ops::sparse_distribution_kernel()(idx.device())(idx.data(), l, d, bs, tB, tMb, tNb, flags);
  }
  return Layout(flags, bs);
}

}  // namespace tg
