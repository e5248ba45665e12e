// CPU kernels of the copy family.
#include <cstdint>

#include "ops/copy/cast.h"
#include "ops/copy/kernels.h"

namespace tg::ops {
namespace {

void cast_cpu(const Tensor& src, const Tensor& dst) {
  const std::int64_t n = src.numel();
  TG_DISPATCH_ALL(src.dtype(), "to_dtype", [&] {
    using src_t = scalar_t;
    const src_t* s = static_cast<const src_t*>(src.data_ptr());
    TG_DISPATCH_ALL(dst.dtype(), "to_dtype", [&] {
      using dst_t = scalar_t;
      dst_t* d = static_cast<dst_t*>(dst.data_ptr());
      for (std::int64_t i = 0; i < n; ++i) d[i] = cast_value<dst_t>(s[i]);
    });
  });
}

}  // namespace

TG_REGISTER_KERNEL(cast_dtype, CPU, &cast_cpu);

}  // namespace tg::ops
