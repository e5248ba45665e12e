// CPU kernel of the rope family: sequences in parallel; each row's angles are formed once
// per pair and applied to the pair.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "ops/rope/angle.h"
#include "ops/rope/kernels.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

template <typename T>
void rope_rows(const T* x, const Tensor& positions, const RopeGeometry& g, T* out) {
  using Acc = typename acc_type<T>::type;
  const std::int64_t half = g.rotary_dim / 2, per_group = g.groups > 0 ? g.n / g.groups : 1;
  std::vector<double> freq(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i)
    freq[static_cast<std::size_t>(i)] = rope_math::frequency(i, g.rotary_dim, g.log2_base);
  const bool wide = positions.defined() && positions.dtype() == DType::i64;
  const void* pdata = positions.defined() ? positions.data_ptr() : nullptr;
  parallel_ranges(g.n * g.s, std::max<std::int64_t>(1, 4096 / std::max<std::int64_t>(g.d, 1)),
                  [&](std::int64_t r0, std::int64_t r1) {
                    for (std::int64_t r = r0; r < r1; ++r) {
                      const std::int64_t n = r / g.s, s = r % g.s;
                      std::int64_t p = g.offset + s;
                      if (pdata != nullptr) {
                        const std::int64_t k = n / per_group * g.s + s;
                        p = wide ? static_cast<const std::int64_t*>(pdata)[k]
                                 : static_cast<const std::int32_t*>(pdata)[k];
                      }
                      const T* xr = x + r * g.d;
                      T* orow = out + r * g.d;
                      for (std::int64_t i = 0; i < half; ++i) {
                        const double angle = rope_math::reduced_angle(p, freq[static_cast<std::size_t>(i)]);
                        const Acc a = static_cast<Acc>(angle);
                        const Acc c = std::cos(a), sn = g.inverse ? -std::sin(a) : std::sin(a);
                        const std::int64_t ia = g.interleaved ? 2 * i : i, ib = g.interleaved ? 2 * i + 1 : i + half;
                        const Acc va = static_cast<Acc>(xr[ia]), vb = static_cast<Acc>(xr[ib]);
                        orow[ia] = static_cast<T>(va * c - vb * sn);
                        orow[ib] = static_cast<T>(va * sn + vb * c);
                      }
                      for (std::int64_t j = g.rotary_dim; j < g.d; ++j) orow[j] = xr[j];
                    }
                  });
}

void rope_cpu(const Tensor& x, const Tensor& positions, const RopeGeometry& g, const Tensor& out) {
  TG_DISPATCH_FLOATING(x.dtype(), "rope",
                       [&] { rope_rows<scalar_t>(x.data<scalar_t>(), positions, g, out.data<scalar_t>()); });
}

}  // namespace

TG_REGISTER_KERNEL(rope_kernel, CPU, &rope_cpu);

}  // namespace tg::ops
