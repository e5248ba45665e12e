// transpose, repeat, repeat_interleave, split, merge: validation, output layouts,
// dispatch and autograd. gather / scatter_reduce are in gather_scatter.cpp.
#include "ops/sparse_move/sparse_move.h"

#include <string>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/sparse_move/kernels.h"
#include "ops/sparse_move/layout_memo.h"

namespace tg {
namespace ops {
TG_DEFINE_KERNEL(sparse_transpose_kernel, TransposeBlocksFn)
TG_DEFINE_KERNEL(sparse_map_blocks_kernel, MapBlocksFn)
TG_DEFINE_KERNEL(sparse_reduce_blocks_kernel, ReduceBlocksFn)
}  // namespace ops

namespace {

using ops::BlockMap;

BlockMap make_map(int kind, const Layout& l, std::int64_t p0, std::int64_t p1 = 1, std::int64_t p2 = 1) {
  BlockMap m;
  m.kind = kind;
  m.B = l.batch();
  m.Mb = l.block_rows();
  m.Nb = l.block_cols();
  m.p0 = p0;
  m.p1 = p1;
  m.p2 = p2;
  m.oB = m.B;
  m.oMb = m.Mb;
  m.oNb = m.Nb;
  switch (kind) {
    case BlockMap::Repeat: m.oB = m.B * p0, m.oMb = m.Mb * p1, m.oNb = m.Nb * p2; break;
    case BlockMap::RepeatInterleave: m.oB = m.B * p0; break;
    case BlockMap::SplitCols: m.oB = m.B * p0, m.oNb = m.Nb / p0; break;
    case BlockMap::SplitRows: m.oB = m.B * p0, m.oMb = m.Mb / p0; break;
    case BlockMap::MergeCols: m.oB = m.B / p0, m.oNb = m.Nb * p0; break;
    case BlockMap::MergeRows: m.oB = m.B / p0, m.oMb = m.Mb * p0; break;
    default: break;
  }
  return m;
}

// The destination layout of `m`: every destination of every active source block.
Layout mapped_layout(const Layout& src, const BlockMap& m) {
  return ops::memo_layout("block_map", {m.kind, m.p0, m.p1, m.p2}, {src}, [&] {
    std::vector<bool> mask(static_cast<std::size_t>(m.oB * m.oMb * m.oNb), false);
    const auto& sm = src.mask_host();
    const std::int64_t copies = m.copies();
    for (std::int64_t b = 0; b < m.B; ++b)
      for (std::int64_t R = 0; R < m.Mb; ++R)
        for (std::int64_t C = 0; C < m.Nb; ++C) {
          if (!sm[static_cast<std::size_t>((b * m.Mb + R) * m.Nb + C)]) continue;
          for (std::int64_t c = 0; c < copies; ++c) mask[static_cast<std::size_t>(m.dest(b, R, C, c))] = true;
        }
    return Layout(from_vector(mask, {m.oB, m.oMb, m.oNb}), src.block_size());
  });
}

void check_layout_out(const char* op, const Layout& natural, const Layout& given) {
  if (given.block_size() != natural.block_size()) {
    TG_THROW(LayoutError, op, ": layout_out must have the block size of x (", natural.block_size(), "), got ",
             given.block_size());
  }
  Shape want{natural.batch(), natural.block_rows(), natural.block_cols()};
  Shape got{given.batch(), given.block_rows(), given.block_cols()};
  if (want != got) {
    TG_THROW(ShapeError, op, ": layout_out must have the output block grid [B, M/bs, N/bs] = ", want, ", got ", got);
  }
}

// Applies `m` to x's blocks into `out_layout` (a subset of the mapped layout), recording
// the adjoint (the sum over the copies) for autograd.
BlockSparseTensor apply_map(const char* op, const BlockSparseTensor& x, const BlockMap& m, const Layout& out_layout) {
  const std::int64_t bs = x.block_size();
  Tensor out = ops::empty_like(x.data(), {out_layout.n_blocks(), bs, bs}, x.dtype());
  if (out_layout.n_blocks() > 0) {
    ops::sparse_map_blocks_kernel()(x.device())(x.data(), x.layout(), m, out_layout, out);
  }
  if (autograd::needs_grad({x.data()})) {
    autograd::record(op, {x.data()}, {out}, [m, lx = x.layout(), lo = out_layout](const std::vector<Tensor>& g) {
      Tensor gx = ops::empty_like(g[0], {lx.n_blocks(), lx.block_size(), lx.block_size()}, g[0].dtype());
      if (lx.n_blocks() > 0) ops::sparse_reduce_blocks_kernel()(g[0].device())(g[0], lo, m, lx, gx);
      return std::vector<Tensor>{gx};
    });
  }
  return BlockSparseTensor(out, out_layout);
}

// dim -1/2 -> columns, 1/-2 -> rows.
bool columns_dim(const char* op, int dim) {
  if (dim == -1 || dim == 2) return true;
  if (dim == 1 || dim == -2) return false;
  TG_THROW(ValueError, op, ": dim must be -1 or 2 (columns) or 1 or -2 (rows), got ", dim);
}

}  // namespace

BlockSparseTensor transpose(const BlockSparseTensor& x) {
  check_block_sparse("transpose", "x", x);
  const Layout& lx = x.layout();
  Layout lt = ops::memo_layout("transpose", {}, {lx}, [&] { return lx.transposed(); });
  const std::int64_t bs = x.block_size();
  Tensor out = ops::empty_like(x.data(), {lt.n_blocks(), bs, bs}, x.dtype());
  if (lt.n_blocks() > 0) ops::sparse_transpose_kernel()(x.device())(x.data(), lx, out);
  if (autograd::needs_grad({x.data()})) {
    autograd::record("transpose", {x.data()}, {out}, [lt](const std::vector<Tensor>& g) {
      return std::vector<Tensor>{transpose(BlockSparseTensor(g[0], lt)).data()};
    });
  }
  return BlockSparseTensor(out, lt);
}

BlockSparseTensor repeat(const BlockSparseTensor& x, std::array<std::int64_t, 3> r, const Layout& layout_out) {
  check_block_sparse("repeat", "x", x);
  if (r[0] < 0 || r[1] < 0 || r[2] < 0) {
    TG_THROW(ValueError, "repeat: repeats {rB, rM, rN} must be >= 0, got {", r[0], ", ", r[1], ", ", r[2], "}");
  }
  BlockMap m = make_map(BlockMap::Repeat, x.layout(), r[0], r[1], r[2]);
  Layout natural = mapped_layout(x.layout(), m);
  if (layout_out.defined()) check_layout_out("repeat", natural, layout_out);
  return apply_map("repeat", x, m, layout_out.defined() ? ops::intersect_layouts(natural, layout_out) : natural);
}

BlockSparseTensor repeat_interleave(const BlockSparseTensor& x, std::int64_t r, const Layout& layout_out) {
  check_block_sparse("repeat_interleave", "x", x);
  if (r < 0) TG_THROW(ValueError, "repeat_interleave: repeats r must be >= 0, got ", r);
  BlockMap m = make_map(BlockMap::RepeatInterleave, x.layout(), r);
  Layout natural = mapped_layout(x.layout(), m);
  if (layout_out.defined()) check_layout_out("repeat_interleave", natural, layout_out);
  return apply_map("repeat_interleave", x, m,
                   layout_out.defined() ? ops::intersect_layouts(natural, layout_out) : natural);
}

BlockSparseTensor split(const BlockSparseTensor& x, std::int64_t parts, int dim) {
  check_block_sparse("split", "x", x);
  const bool cols = columns_dim("split", dim);
  if (parts < 1) TG_THROW(ValueError, "split: parts must be >= 1, got ", parts);
  const Layout& l = x.layout();
  const std::int64_t blocks = cols ? l.block_cols() : l.block_rows();
  if (blocks % parts) {
    TG_THROW(ShapeError, "split: the number of block-", cols ? "columns N/bs = " : "rows M/bs = ", blocks,
             " must be divisible by parts = ", parts, " (shape ", x.shape(), ", block size ", l.block_size(), ")");
  }
  BlockMap m = make_map(cols ? BlockMap::SplitCols : BlockMap::SplitRows, l, parts);
  return apply_map("split", x, m, mapped_layout(l, m));
}

BlockSparseTensor merge(const BlockSparseTensor& x, std::int64_t parts, int dim) {
  check_block_sparse("merge", "x", x);
  const bool cols = columns_dim("merge", dim);
  if (parts < 1) TG_THROW(ValueError, "merge: parts must be >= 1, got ", parts);
  const Layout& l = x.layout();
  if (l.batch() % parts) {
    TG_THROW(ShapeError, "merge: the batch B = ", l.batch(), " must be divisible by parts = ", parts, " (shape ",
             x.shape(), ")");
  }
  BlockMap m = make_map(cols ? BlockMap::MergeCols : BlockMap::MergeRows, l, parts);
  return apply_map("merge", x, m, mapped_layout(l, m));
}

}  // namespace tg
