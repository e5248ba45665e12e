// CPU kernels of the block-sparse softmax family: plain loops over the layout's CSR
// tables, one logical row at a time (f32 math for bf16/f16, f64 for f64). The sums are
// pairwise, as in the dense softmax, so that long rows stay close to the CUDA tree sums.
// Block-rows are spread over the cores (parallel_ranges); a row is one thread's, so the
// results do not depend on the thread count.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "ops/reduce/cpu_math.h"
#include "ops/sparse_softmax/kernels.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

template <typename T>
using acc_t = typename acc_type<T>::type;

// Longest logical row, in elements.
std::int64_t max_row_len(const Layout& l) {
  const std::int64_t* off = l.tables(Device::cpu()).row_offsets.data<std::int64_t>();
  std::int64_t m = 0;
  for (std::int64_t q = 0; q < l.batch() * l.block_rows(); ++q) m = std::max(m, off[q + 1] - off[q]);
  return m * l.block_size();
}

// Elements a range of block-rows holds at least, on average.
constexpr std::int64_t kRowsGrainElems = 1 << 16;

// Calls make() once per range of block-rows, on the cores in parallel, and the functor it
// returns as g(b, r, k0, k1) for every block-row (b, r) of the range holding blocks
// k0 .. k1 - 1 (k1 > k0): make() gives each range its own scratch.
template <typename Make>
void for_each_block_row(const Layout& l, Make&& make) {
  const std::int64_t* off = l.tables(Device::cpu()).row_offsets.data<std::int64_t>();
  const std::int64_t n = l.batch() * l.block_rows(), bs = l.block_size();
  const std::int64_t avg = n > 0 ? std::max<std::int64_t>(1, l.n_blocks() * bs * bs / n) : 1;
  parallel_ranges(n, std::max<std::int64_t>(1, kRowsGrainElems / avg), [&](std::int64_t q0, std::int64_t q1) {
    auto g = make();
    for (std::int64_t q = q0; q < q1; ++q)
      if (off[q + 1] > off[q]) g(q / l.block_rows(), q % l.block_rows(), off[q], off[q + 1]);
  });
}

template <typename T>
void fwd_t(const Tensor& x, const Layout& l, const BlockSparseTensor& mask, double scale, const Tensor& y) {
  using A = acc_t<T>;
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  const std::int64_t bs = l.block_size(), Mb = l.block_rows(), Nb = l.block_cols();
  const T* xp = static_cast<const T*>(x.data_ptr());
  T* yp = y.data<T>();
  const std::int64_t* coords = l.tables(Device::cpu()).block_coords.data<std::int64_t>();
  const bool* mp = mask.defined() ? static_cast<const bool*>(mask.data().data_ptr()) : nullptr;
  const std::int64_t* mindex = mp ? mask.layout().tables(Device::cpu()).block_index.data<std::int64_t>() : nullptr;
  const A sc = static_cast<A>(scale);
  const std::size_t cap = static_cast<std::size_t>(max_row_len(l));
  for_each_block_row(l, [&] {
    return [&, z = std::vector<A>(cap), excl = std::vector<unsigned char>(cap),
            mblk = std::vector<std::int64_t>(static_cast<std::size_t>(Nb))](  // mask block of each segment, or -1
               std::int64_t b, std::int64_t r, std::int64_t k0, std::int64_t k1) mutable {
      const std::int64_t nseg = k1 - k0, len = nseg * bs;
      for (std::int64_t s = 0; s < nseg; ++s) {
        mblk[static_cast<std::size_t>(s)] = mindex ? mindex[(b * Mb + r) * Nb + coords[3 * (k0 + s) + 2]] : -1;
      }
      for (std::int64_t i = 0; i < bs; ++i) {
        auto at = [&](std::int64_t q) { return ((k0 + q / bs) * bs + i) * bs + q % bs; };
        A m = kNegInf;
        for (std::int64_t q = 0; q < len; ++q) {
          const std::int64_t mk = mblk[static_cast<std::size_t>(q / bs)];
          const bool out = mk >= 0 && mp[(mk * bs + i) * bs + q % bs];
          excl[static_cast<std::size_t>(q)] = out;
          z[static_cast<std::size_t>(q)] = out ? kNegInf : sc * static_cast<A>(xp[at(q)]);
          m = cpu::nan_max(m, z[static_cast<std::size_t>(q)]);
        }
        const A s = cpu::pairwise_sum<A>(
            0, len, [&](std::int64_t q) { return cpu::exp_sub(z[static_cast<std::size_t>(q)], m); });
        const A inv = m == kNegInf ? A(0) : A(1) / s;  // every element -inf or excluded: zeros
        for (std::int64_t q = 0; q < len; ++q) {
          const std::size_t u = static_cast<std::size_t>(q);
          yp[at(q)] = static_cast<T>(excl[u] ? A(0) : cpu::exp_sub(z[u], m) * inv);
        }
      }
    };
  });
}

template <typename T>
void bwd_t(const Tensor& y, const Tensor& dy, const Layout& l, double scale, const Tensor& dx) {
  using A = acc_t<T>;
  const std::int64_t bs = l.block_size();
  const T* yp = static_cast<const T*>(y.data_ptr());
  const T* gp = static_cast<const T*>(dy.data_ptr());
  T* op = dx.data<T>();
  const A sc = static_cast<A>(scale);
  for_each_block_row(l, [&] {
    return [&](std::int64_t, std::int64_t, std::int64_t k0, std::int64_t k1) {
      const std::int64_t len = (k1 - k0) * bs;
      for (std::int64_t i = 0; i < bs; ++i) {
        auto at = [&](std::int64_t q) { return ((k0 + q / bs) * bs + i) * bs + q % bs; };
        const A s = cpu::pairwise_sum<A>(0, len, [&](std::int64_t q) {
          const A yv = static_cast<A>(yp[at(q)]);
          return yv != A(0) ? yv * static_cast<A>(gp[at(q)]) : A(0);
        });
        for (std::int64_t q = 0; q < len; ++q) {
          const A yv = static_cast<A>(yp[at(q)]);
          op[at(q)] = static_cast<T>(yv != A(0) ? sc * yv * (static_cast<A>(gp[at(q)]) - s) : A(0));
        }
      }
    };
  });
}

void fwd_cpu(const Tensor& x, const Layout& l, const BlockSparseTensor& mask, double scale, const Tensor& y) {
  TG_DISPATCH_FLOATING(x.dtype(), "softmax", [&] { fwd_t<scalar_t>(x, l, mask, scale, y); });
}

void bwd_cpu(const Tensor& y, const Tensor& dy, const Layout& l, double scale, const Tensor& dx) {
  TG_DISPATCH_FLOATING(y.dtype(), "softmax_backward", [&] { bwd_t<scalar_t>(y, dy, l, scale, dx); });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_softmax_fwd_kernel, CPU, &fwd_cpu);
TG_REGISTER_KERNEL(sparse_softmax_bwd_kernel, CPU, &bwd_cpu);

}  // namespace tg::ops
