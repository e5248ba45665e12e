#include <algorithm>
#include <cstdint>
#include <limits>

#include "ops/index_check/kernels.h"
#include "runtime/error.h"

namespace tg::ops {

void index_range_host(const Tensor& idx, std::int64_t& lo, std::int64_t& hi) {
  lo = std::numeric_limits<std::int64_t>::max();
  hi = std::numeric_limits<std::int64_t>::min();
  const auto scan = [&](const auto* id) {
    for (std::int64_t i = 0; i < idx.numel(); ++i) {
      lo = std::min<std::int64_t>(lo, id[i]);
      hi = std::max<std::int64_t>(hi, id[i]);
    }
  };
  if (idx.dtype() == DType::i32) scan(idx.data<std::int32_t>());
  else if (idx.dtype() == DType::i64) scan(idx.data<std::int64_t>());
  else TG_THROW(DTypeError, "index range: expected an i32 or i64 tensor, got ", dtype_name(idx.dtype()));
}

namespace {

void index_range_cpu(const Tensor& idx, const RangeVerdict& verdict) {
  std::int64_t lo = 0, hi = 0;
  index_range_host(idx, lo, hi);
  verdict(lo, hi);
}

}  // namespace

TG_REGISTER_KERNEL(index_range_kernel, CPU, &index_range_cpu);

}  // namespace tg::ops
