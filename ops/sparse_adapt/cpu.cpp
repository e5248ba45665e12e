// CPU kernels of adapt_layout: an element-wise lookup of each output element's source.
#include <cmath>
#include <cstring>

#include "ops/sparse_adapt/kernels.h"

namespace tg::ops {
namespace {

void adapt_cpu(const Tensor& src, const Layout& sl, const Layout& ol, Tensor& out) {
  const std::int64_t bo = ol.block_size(), bi = sl.block_size(), n = ol.n_blocks();
  const std::int64_t sM = sl.rows(), sN = sl.cols(), sMb = sl.block_rows(), sNb = sl.block_cols();
  const std::int64_t* coords = ol.tables(Device::cpu()).block_coords.data<std::int64_t>();
  const std::int64_t* sidx = sl.tables(Device::cpu()).block_index.data<std::int64_t>();
  const std::size_t es = dtype_size(src.dtype());
  const char* s = static_cast<const char*>(src.data_ptr());
  char* o = static_cast<char*>(out.data_ptr());
  // Runs of min(bo, bi) elements of an output row come from one source block row.
  const std::int64_t run = std::min(bo, bi);
  const std::size_t run_bytes = static_cast<std::size_t>(run) * es;
  for (std::int64_t k = 0; k < n; ++k) {
    const std::int64_t b = coords[3 * k], r0 = coords[3 * k + 1] * bo, c0 = coords[3 * k + 2] * bo;
    for (std::int64_t i = 0; i < bo; ++i) {
      for (std::int64_t j = 0; j < bo; j += run) {
        char* dst = o + static_cast<std::size_t>((k * bo + i) * bo + j) * es;
        const std::int64_t r = r0 + i, c = c0 + j;
        const std::int64_t blk = (r < sM && c < sN) ? sidx[(b * sMb + r / bi) * sNb + c / bi] : -1;
        if (blk < 0) std::memset(dst, 0, run_bytes);
        else std::memcpy(dst, s + static_cast<std::size_t>((blk * bi + r % bi) * bi + c % bi) * es, run_bytes);
      }
    }
  }
}

void nonzero_blocks_cpu(const Tensor& src, Tensor& flags) {
  const std::int64_t n = src.size(0), bb = src.size(1) * src.size(2);
  bool* f = flags.data<bool>();
  TG_DISPATCH_ALL(src.dtype(), "adapted_layout", [&] {
    const scalar_t* s = src.data<scalar_t>();
    for (std::int64_t k = 0; k < n; ++k) {
      bool any = false;
      for (std::int64_t e = 0; e < bb && !any; ++e) {
        if constexpr (std::is_same_v<scalar_t, bool>) any = s[k * bb + e];
        else if constexpr (std::is_integral_v<scalar_t>) any = s[k * bb + e] != 0;
        else any = static_cast<double>(s[k * bb + e]) != 0.0;  // NaN != 0
      }
      f[k] = any;
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(sparse_adapt_kernel, CPU, &adapt_cpu);
TG_REGISTER_KERNEL(sparse_nonzero_blocks_kernel, CPU, &nonzero_blocks_cpu);

}  // namespace tg::ops
