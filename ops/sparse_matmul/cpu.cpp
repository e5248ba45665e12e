// CPU kernel of block-sparse matmul: one Eigen GEMM per (output tile, pair), accumulated
// in an f32 (f64) tile and rounded once into the output. 16-bit operands are widened to
// f32 once per call, so every tile product runs in Eigen's f32 GEMM. Output tiles are
// spread over the cores (parallel_ranges); each is computed by one thread in the plan's
// pair order, so results do not depend on the thread count.
#include <Eigen/Core>
#include <algorithm>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "ops/sparse_matmul/kernels.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

template <typename A>
using RowMat = Eigen::Matrix<A, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename A>
using TileMap = Eigen::Map<const RowMat<A>, Eigen::Unaligned, Eigen::OuterStride<>>;

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

template <typename T>
void matmul_t(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Tensor& out) {
  using A = typename acc_type<T>::type;
  using Idx = Eigen::Index;
  std::vector<A> wa, wb;
  const A* pa = as_acc<T, A>(a, wa);
  const A* pb = as_acc<T, A>(b, wb);
  T* pc = out.data<T>();
  const Idx bs = static_cast<Idx>(p.bs);
  // output tiles per range: about kTileWork multiply-adds at the plan's average pairs a tile
  const std::int64_t pairs = p.n_out > 0 ? p.pair_begin[static_cast<std::size_t>(p.n_out)] : 0;
  const std::int64_t tile_work =
      std::max<std::int64_t>(1, (pairs + p.n_out - 1) / std::max<std::int64_t>(p.n_out, 1)) * p.bs * p.bs * p.bs;
  const std::int64_t grain = std::max<std::int64_t>(1, kTileWork / tile_work);
  parallel_ranges(p.n_out, grain, [&](std::int64_t o0, std::int64_t o1) {
    RowMat<A> acc(bs, bs);
    for (std::int64_t o = o0; o < o1; ++o) {
      acc.setZero();
      for (std::int32_t q = p.pair_begin[static_cast<std::size_t>(o)];
           q < p.pair_begin[static_cast<std::size_t>(o + 1)]; ++q) {
        TileMap<A> ta(pa + p.a.offset(p.pair_a[static_cast<std::size_t>(q)]), bs, bs, Eigen::OuterStride<>(p.a.ld));
        TileMap<A> tb(pb + p.b.offset(p.pair_b[static_cast<std::size_t>(q)]), bs, bs, Eigen::OuterStride<>(p.b.ld));
        if (!p.trans_a && !p.trans_b)
          acc.noalias() += ta * tb;
        else if (p.trans_a && !p.trans_b)
          acc.noalias() += ta.transpose() * tb;
        else if (!p.trans_a && p.trans_b)
          acc.noalias() += ta * tb.transpose();
        else
          acc.noalias() += ta.transpose() * tb.transpose();
      }
      T* c = pc + p.c.offset(o);
      for (Idx i = 0; i < bs; ++i)
        for (Idx j = 0; j < bs; ++j) c[i * p.c.ld + j] = static_cast<T>(acc(i, j));
    }
  });
}

void matmul_cpu(const MatmulPlan& p, const Tensor& a, const Tensor& b, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), "matmul", [&] { matmul_t<scalar_t>(p, a, b, out); });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_matmul_kernel, CPU, &matmul_cpu);

}  // namespace tg::ops
