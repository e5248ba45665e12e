// CPU kernels of the block-sparse row family: plain loops over the layout's index tables.
#include <cmath>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "ops/sparse_rows/kernels.h"

namespace tg::ops {
namespace {

template <typename T>
using acc_t = typename acc_type<T>::type;

// Calls f(k, b, r, c, e0) for every active block k = (b, r, c), with e0 = k * bs * bs the
// flat index of its first element.
template <typename F>
void for_each_block(const Layout& l, F&& f) {
  const std::int64_t* coords = l.tables(Device::cpu()).block_coords.data<std::int64_t>();
  const std::int64_t bs2 = l.block_size() * l.block_size();
  for (std::int64_t k = 0; k < l.n_blocks(); ++k) f(k, coords[3 * k], coords[3 * k + 1], coords[3 * k + 2], k * bs2);
}

template <typename T>
void row_reduce_t(const Tensor& data, const Layout& l, RowReduce kind, const Tensor& out, const Tensor& index) {
  using A = acc_t<T>;
  const std::int64_t B = l.batch(), Mb = l.block_rows(), bs = l.block_size(), M = l.rows();
  const std::int64_t* row_off = l.tables(Device::cpu()).row_offsets.data<std::int64_t>();
  const T* x = static_cast<const T*>(data.data_ptr());
  T* o = out.data<T>();
  std::int64_t* idx = kind == RowReduce::Max ? index.data<std::int64_t>() : nullptr;
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t r = 0; r < Mb; ++r) {
      const std::int64_t k0 = row_off[b * Mb + r], k1 = row_off[b * Mb + r + 1];
      for (std::int64_t i = 0; i < bs; ++i) {
        const std::int64_t row = b * M + r * bs + i;
        if (kind == RowReduce::Sum) {
          A s = 0;
          for (std::int64_t k = k0; k < k1; ++k) {
            const T* p = x + (k * bs + i) * bs;
            for (std::int64_t j = 0; j < bs; ++j) s += static_cast<A>(p[j]);
          }
          o[row] = static_cast<T>(s);
        } else {
          // Elements are visited in increasing column order: keep the first maximum, and
          // the first nan once one is seen.
          A m = -std::numeric_limits<A>::infinity();
          std::int64_t best = -1;
          for (std::int64_t k = k0; k < k1; ++k) {
            const std::int64_t e0 = (k * bs + i) * bs;
            for (std::int64_t j = 0; j < bs; ++j) {
              const A v = static_cast<A>(x[e0 + j]);
              if (best < 0 || (!std::isnan(m) && (std::isnan(v) || v > m))) {
                m = v;
                best = e0 + j;
              }
            }
          }
          o[row] = static_cast<T>(m);
          idx[row] = best;
        }
      }
    }
  }
}

template <typename T>
void col_sum_t(const Tensor& data, const Layout& l, const Tensor& out) {
  using A = acc_t<T>;
  const std::int64_t bs = l.block_size(), N = l.cols();
  const T* x = static_cast<const T*>(data.data_ptr());
  std::vector<A> acc(static_cast<std::size_t>(out.numel()), A(0));
  for_each_block(l, [&](std::int64_t, std::int64_t b, std::int64_t, std::int64_t c, std::int64_t e0) {
    A* dst = acc.data() + b * N + c * bs;
    for (std::int64_t i = 0; i < bs; ++i)
      for (std::int64_t j = 0; j < bs; ++j) dst[j] += static_cast<A>(x[e0 + i * bs + j]);
  });
  T* o = out.data<T>();
  for (std::size_t q = 0; q < acc.size(); ++q) o[q] = static_cast<T>(acc[q]);
}

template <typename T>
void row_map_t(RowMapOp op, const Tensor& x, const Tensor& v, double alpha, const Layout& l, const Tensor& out) {
  using A = acc_t<T>;
  const std::int64_t bs = l.block_size(), M = l.rows();
  const T* xp = x.defined() ? x.data<T>() : nullptr;
  const T* vp = v.data<T>();
  T* o = out.data<T>();
  const A al = static_cast<A>(alpha);
  for_each_block(l, [&](std::int64_t, std::int64_t b, std::int64_t r, std::int64_t, std::int64_t e0) {
    for (std::int64_t i = 0; i < bs; ++i) {
      const A s = al * static_cast<A>(vp[b * M + r * bs + i]);
      for (std::int64_t j = 0; j < bs; ++j) {
        const std::int64_t e = e0 + i * bs + j;
        const A xv = xp ? static_cast<A>(xp[e]) : A(0);
        A y;
        switch (op) {
          case RowMapOp::Add: y = xv + s; break;
          case RowMapOp::Mul: y = xv * s; break;
          default: y = xv / s; break;
        }
        o[e] = static_cast<T>(y);
      }
    }
  });
}

template <typename T>
void outer_t(const Tensor& a, const Tensor& b, double alpha_b, const Layout& l, const Tensor& out) {
  using A = acc_t<T>;
  const std::int64_t bs = l.block_size(), M = l.rows(), N = l.cols();
  const T* ap = a.defined() ? a.data<T>() : nullptr;
  const T* bp = b.defined() ? b.data<T>() : nullptr;
  T* o = out.data<T>();
  const A al = static_cast<A>(alpha_b);
  for_each_block(l, [&](std::int64_t, std::int64_t bt, std::int64_t r, std::int64_t c, std::int64_t e0) {
    for (std::int64_t i = 0; i < bs; ++i) {
      const A av = ap ? static_cast<A>(ap[bt * M + r * bs + i]) : A(0);
      for (std::int64_t j = 0; j < bs; ++j) {
        const A bv = bp ? static_cast<A>(bp[bt * N + c * bs + j]) : A(0);
        o[e0 + i * bs + j] = static_cast<T>(av + al * bv);
      }
    }
  });
}

template <typename T>
void row_max_bwd_t(const Tensor& g, const Tensor& index, const Layout& l, const Tensor& dx) {
  const std::int64_t bs = l.block_size(), M = l.rows();
  const T* gp = g.data<T>();
  const std::int64_t* idx = index.data<std::int64_t>();
  T* o = dx.data<T>();
  for_each_block(l, [&](std::int64_t, std::int64_t b, std::int64_t r, std::int64_t, std::int64_t e0) {
    for (std::int64_t i = 0; i < bs; ++i) {
      const std::int64_t row = b * M + r * bs + i;
      for (std::int64_t j = 0; j < bs; ++j) {
        const std::int64_t e = e0 + i * bs + j;
        o[e] = e == idx[row] ? gp[row] : static_cast<T>(0.0f);
      }
    }
  });
}

void row_reduce_cpu(const Tensor& data, const Layout& l, RowReduce kind, const Tensor& out, const Tensor& index) {
  TG_DISPATCH_FLOATING(data.dtype(), "row_reduce", [&] { row_reduce_t<scalar_t>(data, l, kind, out, index); });
}
void col_sum_cpu(const Tensor& data, const Layout& l, const Tensor& out) {
  TG_DISPATCH_FLOATING(data.dtype(), "col_sum", [&] { col_sum_t<scalar_t>(data, l, out); });
}
void row_map_cpu(RowMapOp op, const Tensor& x, const Tensor& v, double alpha, const Layout& l, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), "row_map", [&] { row_map_t<scalar_t>(op, x, v, alpha, l, out); });
}
void outer_cpu(const Tensor& a, const Tensor& b, double alpha_b, const Layout& l, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), "broadcast", [&] { outer_t<scalar_t>(a, b, alpha_b, l, out); });
}
void row_max_bwd_cpu(const Tensor& g, const Tensor& index, const Layout& l, const Tensor& dx) {
  TG_DISPATCH_FLOATING(dx.dtype(), "row_max backward", [&] { row_max_bwd_t<scalar_t>(g, index, l, dx); });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_row_reduce_kernel, CPU, &row_reduce_cpu);
TG_REGISTER_KERNEL(sparse_col_sum_kernel, CPU, &col_sum_cpu);
TG_REGISTER_KERNEL(sparse_row_map_kernel, CPU, &row_map_cpu);
TG_REGISTER_KERNEL(sparse_outer_kernel, CPU, &outer_cpu);
TG_REGISTER_KERNEL(sparse_row_max_bwd_kernel, CPU, &row_max_bwd_cpu);

}  // namespace tg::ops
