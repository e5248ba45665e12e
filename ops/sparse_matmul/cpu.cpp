// CPU kernel of block-sparse matmul: GEMMs accumulated in f32 (f64) and rounded once into the
// output. 16-bit operands are widened to f32 once per call, so every product runs in f32.
// Output tiles are spread over the cores (parallel_ranges); each is computed by one thread in
// the plan's pair order, so results do not depend on the thread count. In f32 a panel's pairs
// run as one packed GEMM over their concatenated k where cpu_gemm_choice.h takes it (its
// registers hold the sum over every pair), else each pair is an Eigen GEMM added to the panel.
//
// A bs x bs x bs product is small for a GEMM (packing and call overhead weigh as much as
// the arithmetic at bs 16-32), so output tiles that read the same tiles of one operand and
// adjacent tiles of a dense other operand are computed as one panel: tiles of a block-row
// whose pairs read the same x tiles, over consecutive block-columns of a dense y (SDD,
// DSD), or tiles of a block-column whose pairs read the same y tiles, over consecutive
// block-rows of a dense x (DDS, and nn::BlockSparseLinear). A panel multiplies one shared
// tile by a strided slab of the dense operand: the same sums as per tile, in one GEMM.
#include <Eigen/Core>
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "ops/linalg/cpu_gemm_choice.h"
#include "ops/linalg/cpu_packed_gemm.h"
#include "ops/sparse_matmul/kernels.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

template <typename A>
using RowMat = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename A>
using TileMap = Eigen::Map<const RowMat<A>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Most tiles in a panel: bounds its accumulator (64 KiB at bs 32 in f32) and keeps enough
// panels to spread over the cores.
constexpr std::int64_t kMaxPanelTiles = 16;

// Output tiles computed together: `n` tiles o0's members share their pair lists' tiles of
// one operand and read consecutive tiles of the dense other one (see the file comment).
struct Panel {
  std::int32_t first = 0;  // index into PanelPlan::members of the first member
  std::int32_t n = 1;
};

// The panels of a plan, built once (cached on the plan).
struct PanelPlan {
  bool columns = false;  // members down a block-column (x dense) or along a row
  std::vector<Panel> panels;
  std::vector<std::int32_t> members;  // output tile ids, panel after panel
};

// Whether output tiles a and b (member `m` places after a) can share a panel along the
// axis: equal pair lists on the shared operand, and the other operand's tiles exactly
// m tiles further along its dense storage at every step.
bool same_panel(const MatmulPlan& p, bool columns, std::int32_t a, std::int32_t b, std::int64_t m) {
  const std::int32_t qa = p.pair_begin[static_cast<std::size_t>(a)], qb = p.pair_begin[static_cast<std::size_t>(b)];
  const std::int32_t na = p.pair_begin[static_cast<std::size_t>(a) + 1] - qa;
  if (p.pair_begin[static_cast<std::size_t>(b) + 1] - qb != na) return false;
  const std::vector<std::int32_t>& shared = columns ? p.pair_b : p.pair_a;
  const std::vector<std::int32_t>& dense = columns ? p.pair_a : p.pair_b;
  const TileAddr& addr = columns ? p.a : p.b;
  const bool trans = columns ? p.trans_a : p.trans_b;
  // Next tile along the panel: the next block-row of op(x) (columns) or block-column of
  // op(y) (rows), in the stored matrix a tile row (ld · bs elements) or a tile (bs) away.
  const std::int64_t step = (columns != trans ? addr.bs * addr.ld : addr.bs) * m;
  for (std::int32_t t = 0; t < na; ++t) {
    const auto ia = static_cast<std::size_t>(qa + t), ib = static_cast<std::size_t>(qb + t);
    if (shared[ia] != shared[ib]) return false;
    if (addr.offset(dense[ib]) != addr.offset(dense[ia]) + step) return false;
  }
  return true;
}

// Panels along one axis (columns: the plan needs a dense x; rows: a dense y).
PanelPlan panels_along(const MatmulPlan& p, bool columns) {
  PanelPlan r;
  r.columns = columns;
  // Output tiles in (b, j, i) order for columns, (b, i, j) for rows: neighbours on the axis.
  std::vector<std::int32_t> order(static_cast<std::size_t>(p.n_out));
  for (std::int32_t o = 0; o < static_cast<std::int32_t>(p.n_out); ++o) order[static_cast<std::size_t>(o)] = o;
  const auto coord = [&](std::int32_t o, int c) { return p.out_coord[3 * static_cast<std::size_t>(o) + c]; };
  if (columns) {
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      if (coord(a, 0) != coord(b, 0)) return coord(a, 0) < coord(b, 0);
      if (coord(a, 2) != coord(b, 2)) return coord(a, 2) < coord(b, 2);
      return coord(a, 1) < coord(b, 1);
    });
  }
  const int along = columns ? 1 : 2, across = columns ? 2 : 1;
  for (std::size_t s = 0; s < order.size();) {
    const std::int32_t head = order[s];
    std::size_t e = s + 1;
    while (e < order.size() && static_cast<std::int64_t>(e - s) < kMaxPanelTiles) {
      const std::int32_t o = order[e];
      const auto m = static_cast<std::int64_t>(e - s);
      if (coord(o, 0) != coord(head, 0) || coord(o, across) != coord(head, across) ||
          coord(o, along) != coord(head, along) + m || !same_panel(p, columns, head, o, m)) {
        break;
      }
      ++e;
    }
    r.panels.push_back({static_cast<std::int32_t>(r.members.size()), static_cast<std::int32_t>(e - s)});
    r.members.insert(r.members.end(), order.begin() + static_cast<std::ptrdiff_t>(s),
                     order.begin() + static_cast<std::ptrdiff_t>(e));
    s = e;
  }
  if (columns) {
    // Panels in (b, i, j) order of their first tiles, as single tiles would run: a
    // column's panels hold all of its work, and whole columns in one thread's range
    // would leave the threads unevenly loaded when the work sits in a few columns.
    std::stable_sort(r.panels.begin(), r.panels.end(), [&](const Panel& a, const Panel& b) {
      const std::int32_t ha = r.members[static_cast<std::size_t>(a.first)],
                         hb = r.members[static_cast<std::size_t>(b.first)];
      if (coord(ha, 0) != coord(hb, 0)) return coord(ha, 0) < coord(hb, 0);
      if (coord(ha, 1) != coord(hb, 1)) return coord(ha, 1) < coord(hb, 1);
      return coord(ha, 2) < coord(hb, 2);
    });
  }
  return r;
}

// The panels of the plan: along the axis whose dense operand gives the longer panels; one
// tile each when neither operand is dense.
std::shared_ptr<PanelPlan> build_panels(const MatmulPlan& p, bool x_dense, bool y_dense) {
  std::shared_ptr<PanelPlan> best;
  // TG_SPARSE_MATMUL_CPU_PANELS=off: one tile at a time, to measure what panels give.
  static const bool off = [] {
    const char* v = std::getenv("TG_SPARSE_MATMUL_CPU_PANELS");
    return v != nullptr && std::string(v) == "off";
  }();
  for (bool columns : {false, true}) {
    if (off) break;
    if (columns ? !x_dense : !y_dense) continue;
    auto cand = std::make_shared<PanelPlan>(panels_along(p, columns));
    if (!best || cand->panels.size() < best->panels.size()) best = cand;
  }
  if (!best) {
    best = std::make_shared<PanelPlan>();
    for (std::int32_t o = 0; o < static_cast<std::int32_t>(p.n_out); ++o) {
      best->panels.push_back({o, 1});
      best->members.push_back(o);
    }
  }
  return best;
}

// Elements a range of the widening loop converts at least.
constexpr std::int64_t kWidenGrain = 1 << 16;
// Multiply-adds a range of output tiles holds at least (about 0.1 ms on one core).
constexpr std::int64_t kTileWork = 1 << 21;

// The elements of `t` as A: the data itself when T is A, else a widened copy in `buf`.
template <typename T, typename A>
const A* as_acc(const Tensor& t, std::vector<A>& buf) {
  const T* p = t.data<T>();
  if constexpr (std::is_same_v<T, A>) {
    return p;
  } else {
    buf.resize(static_cast<std::size_t>(t.numel()));
    parallel_ranges(t.numel(), kWidenGrain, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) buf[static_cast<std::size_t>(i)] = static_cast<A>(p[i]);
    });
    return buf.data();
  }
}

// fine (fine stores): out holds the blocks of fbs that fine_block_ids names, tile by tile.
template <typename T>
void matmul_t(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Tensor& out, const PanelPlan& pp,
              const std::int32_t* fine = nullptr, std::int64_t fbs = 0) {
  using A = typename acc_type<T>::type;
  using Idx = Eigen::Index;
  std::vector<A> wa, wb;
  const A* pa = as_acc<T, A>(a, wa);
  const A* pb = as_acc<T, A>(b, wb);
  T* pc = out.data<T>();
  const Idx bs = static_cast<Idx>(p.bs);
  // panels per range: about kTileWork multiply-adds at the plan's average pairs a tile
  const std::int64_t pairs = p.n_out > 0 ? p.pair_begin[static_cast<std::size_t>(p.n_out)] : 0;
  const auto n_panels = static_cast<std::int64_t>(pp.panels.size());
  const std::int64_t tiles_per_panel = (p.n_out + n_panels - 1) / std::max<std::int64_t>(n_panels, 1);
  const std::int64_t tile_work =
      std::max<std::int64_t>(1, (pairs + p.n_out - 1) / std::max<std::int64_t>(p.n_out, 1)) * p.bs * p.bs * p.bs;
  const std::int64_t grain = std::max<std::int64_t>(1, kTileWork / (tile_work * tiles_per_panel));
  parallel_ranges(n_panels, grain, [&](std::int64_t g0, std::int64_t g1) {
    RowMat<A> acc;
    std::vector<const A*> xs, ys;
    // acc's tiles into the output (rounded to T once), or into the fine blocks they cover
    auto store = [&](const Panel& pn) {
      for (std::int32_t m = 0; m < pn.n; ++m) {
        const std::int32_t o = pp.members[static_cast<std::size_t>(pn.first + m)];
        const Idx r0 = pp.columns ? static_cast<Idx>(m) * bs : 0, c0 = pp.columns ? 0 : static_cast<Idx>(m) * bs;
        if (fine != nullptr) {
          const Idx f = static_cast<Idx>(fbs), per = bs / f;
          const std::int32_t* ids = fine + static_cast<std::ptrdiff_t>(o) * per * per;
          for (Idx q = 0; q < per * per; ++q) {
            if (ids[q] < 0) continue;
            T* c = pc + static_cast<std::ptrdiff_t>(ids[q]) * f * f;
            const Idx i0 = r0 + (q / per) * f, j0 = c0 + (q % per) * f;
            for (Idx i = 0; i < f; ++i)
              for (Idx j = 0; j < f; ++j) c[i * f + j] = static_cast<T>(acc(i0 + i, j0 + j));
          }
          continue;
        }
        T* c = pc + p.c.offset(o);
        for (Idx i = 0; i < bs; ++i)
          for (Idx j = 0; j < bs; ++j) c[i * p.c.ld + j] = static_cast<T>(acc(r0 + i, c0 + j));
      }
    };
    for (std::int64_t g = g0; g < g1; ++g) {
      const Panel& pn = pp.panels[static_cast<std::size_t>(g)];
      const std::int32_t head = pp.members[static_cast<std::size_t>(pn.first)];
      const Idx w = static_cast<Idx>(pn.n) * bs;  // the panel's extent along its axis
      // columns: acc [n·bs, bs] = x slab · y tile; rows: acc [bs, n·bs] = x tile · y slab
      const Idx rows = pp.columns ? w : bs, cols = pp.columns ? bs : w;
      const std::int32_t q0 = p.pair_begin[static_cast<std::size_t>(head)];
      const std::int32_t q1 = p.pair_begin[static_cast<std::size_t>(head) + 1];
      if constexpr (std::is_same_v<A, float>) {
        // the pairs' products as one packed GEMM over their concatenated k (cpu_packed_gemm.h)
        if (q1 > q0 && use_packed_gemm(rows, cols, (q1 - q0) * bs)) {
          xs.clear();
          ys.clear();
          for (std::int32_t q = q0; q < q1; ++q) {
            xs.push_back(pa + p.a.offset(p.pair_a[static_cast<std::size_t>(q)]));
            ys.push_back(pb + p.b.offset(p.pair_b[static_cast<std::size_t>(q)]));
          }
          acc.resize(rows, cols);
          packed_sgemm_pieces({xs.data(), q1 - q0, bs, p.a.ld, p.trans_a}, {ys.data(), q1 - q0, bs, p.b.ld, p.trans_b},
                              acc.data(), rows, cols, false);
          store(pn);
          continue;
        }
      }
      acc.setZero(rows, cols);
      for (std::int32_t q = q0; q < q1; ++q) {
        const A* xa = pa + p.a.offset(p.pair_a[static_cast<std::size_t>(q)]);
        const A* yb = pb + p.b.offset(p.pair_b[static_cast<std::size_t>(q)]);
        // op(x) is [rows_x, bs] (or [bs, ...]) and op(y) likewise, as stored or transposed.
        const Idx xr = pp.columns ? w : bs, yc = pp.columns ? bs : w;
        TileMap<A> tx(xa, p.trans_a ? bs : xr, p.trans_a ? xr : bs, Eigen::OuterStride<>(p.a.ld));
        TileMap<A> ty(yb, p.trans_b ? yc : bs, p.trans_b ? bs : yc, Eigen::OuterStride<>(p.b.ld));
        if (!p.trans_a && !p.trans_b)
          acc.noalias() += tx * ty;
        else if (p.trans_a && !p.trans_b)
          acc.noalias() += tx.transpose() * ty;
        else if (!p.trans_a && p.trans_b)
          acc.noalias() += tx * ty.transpose();
        else
          acc.noalias() += tx.transpose() * ty.transpose();
      }
      store(pn);
    }
  });
}

const PanelPlan& panels(const MatmulPlan& p) {
  // A dense operand's tile grid has more than one tile column (ld > bs) or is a block
  // matrix of one column; block data has ld == bs and grid_cols == 1.
  const bool x_dense = p.a.grid_cols > 1 || p.a.ld > p.bs, y_dense = p.b.grid_cols > 1 || p.b.ld > p.bs;
  return p.cached<PanelPlan>("cpu_panels", [&] { return build_panels(p, x_dense, y_dense); });
}

void matmul_cpu(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Tensor& out) {
  const PanelPlan& pp = panels(p);
  TG_DISPATCH_FLOATING(out.dtype(), "matmul", [&] { matmul_t<scalar_t>(p, a, b, out, pp); });
}

// The table of fine_block_ids, kept with the plan.
struct FineIds {
  std::vector<std::int32_t> ids;
};

// Fine stores on the CPU: each panel's tiles written straight into the fine blocks (always
// taken: the CPU has no other reason to decline).
bool matmul_fine_cpu(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Layout& fine, const Tensor& out) {
  const PanelPlan& pp = panels(p);
  const FineIds& f =
      p.cached<FineIds>("cpu_fine/" + std::to_string(fine.block_size()) + "/" + std::to_string(fine.hash()),
                        [&] { return std::make_shared<FineIds>(FineIds{fine_block_ids(p, fine)}); });
  TG_DISPATCH_FLOATING(out.dtype(), "matmul",
                       [&] { matmul_t<scalar_t>(p, a, b, out, pp, f.ids.data(), fine.block_size()); });
  return true;
}

}  // namespace

TG_REGISTER_KERNEL(sparse_matmul_kernel, CPU, &matmul_cpu);
TG_REGISTER_KERNEL(sparse_matmul_fine_kernel, CPU, &matmul_fine_cpu);

}  // namespace tg::ops
