// CPU kernel of the dropout family: one Philox block per 4 consecutive elements, the same
// element-to-random-word mapping as philox::uniform(seed, offset, i).
#include "ops/dropout/kernels.h"

namespace tg::ops {
namespace {

void dropout_cpu(const Tensor& x, std::uint32_t threshold, double scale, std::uint64_t seed, std::uint64_t offset,
                 const Tensor& out) {
  TG_DISPATCH_FLOATING(x.dtype(), "dropout", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const Acc s = static_cast<Acc>(scale);
    const std::uint64_t n = static_cast<std::uint64_t>(x.numel());
    for (std::uint64_t b = 0; b * 4 < n; ++b) {
      const philox::U32x4 r = philox::block(seed, offset, b);
      for (int k = 0; k < 4 && b * 4 + static_cast<std::uint64_t>(k) < n; ++k) {
        const std::uint64_t i = b * 4 + static_cast<std::uint64_t>(k);
        const bool keep = (philox::word(r, k) >> 8) >= threshold;
        po[i] = keep ? static_cast<T>(static_cast<Acc>(px[i]) * s) : static_cast<T>(Acc(0));
      }
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(dropout_kernel, CPU, &dropout_cpu);

}  // namespace tg::ops
