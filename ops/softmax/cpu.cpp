// CPU kernels of the softmax family (reference implementations; f32 math for bf16/f16,
// f64 for f64). The formulas match the CUDA kernels' so both treat -inf and nan alike.
#include <cmath>
#include <limits>
#include <vector>

#include "ops/reduce/cpu_math.h"
#include "ops/softmax/kernels.h"

namespace tg::ops {
namespace {

template <typename T>
void softmax_fwd_rows(const T* x, std::int64_t rows, std::int64_t cols, double scale, bool log, T* y) {
  using Acc = typename acc_type<T>::type;
  constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();
  const Acc sc = static_cast<Acc>(scale);
  std::vector<Acc> z(static_cast<std::size_t>(cols));
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    Acc m = kNegInf;
    for (std::int64_t c = 0; c < cols; ++c) {
      z[c] = sc * static_cast<Acc>(xr[c]);
      m = cpu::nan_max(m, z[c]);
    }
    const Acc s = cpu::pairwise_sum<Acc>(0, cols, [&](std::int64_t c) { return cpu::exp_sub(z[c], m); });
    if (log) {
      const Acc lse_rest = std::log(s);
      for (std::int64_t c = 0; c < cols; ++c) {
        yr[c] = static_cast<T>(m == kNegInf ? kNegInf : z[c] - m - lse_rest);
      }
    } else {
      const Acc inv = m == kNegInf ? Acc(0) : Acc(1) / s;  // all -inf row: zeros
      for (std::int64_t c = 0; c < cols; ++c) yr[c] = static_cast<T>(cpu::exp_sub(z[c], m) * inv);
    }
  }
}

template <typename T>
void softmax_bwd_rows(const T* y, const T* dy, std::int64_t rows, std::int64_t cols, double scale, bool log, T* dx) {
  using Acc = typename acc_type<T>::type;
  const Acc sc = static_cast<Acc>(scale);
  for (std::int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    T* dxr = dx + r * cols;
    if (log) {
      const Acc s = cpu::pairwise_sum<Acc>(0, cols, [&](std::int64_t c) { return static_cast<Acc>(dyr[c]); });
      for (std::int64_t c = 0; c < cols; ++c) {
        dxr[c] = static_cast<T>(sc * (static_cast<Acc>(dyr[c]) - std::exp(static_cast<Acc>(yr[c])) * s));
      }
    } else {
      const Acc s = cpu::pairwise_sum<Acc>(
          0, cols, [&](std::int64_t c) { return static_cast<Acc>(dyr[c]) * static_cast<Acc>(yr[c]); });
      for (std::int64_t c = 0; c < cols; ++c) {
        dxr[c] = static_cast<T>(sc * static_cast<Acc>(yr[c]) * (static_cast<Acc>(dyr[c]) - s));
      }
    }
  }
}

void softmax_fwd_cpu(const Tensor& x, std::int64_t cols, double scale, bool log, const Tensor& y) {
  TG_DISPATCH_FLOATING(x.dtype(), log ? "log_softmax" : "softmax", [&] {
    softmax_fwd_rows<scalar_t>(x.data<scalar_t>(), x.numel() / cols, cols, scale, log, y.data<scalar_t>());
  });
}

void softmax_bwd_cpu(const Tensor& y, const Tensor& dy, std::int64_t cols, double scale, bool log, const Tensor& dx) {
  TG_DISPATCH_FLOATING(y.dtype(), log ? "log_softmax_backward" : "softmax_backward", [&] {
    softmax_bwd_rows<scalar_t>(y.data<scalar_t>(), dy.data<scalar_t>(), y.numel() / cols, cols, scale, log,
                               dx.data<scalar_t>());
  });
}

}  // namespace

TG_REGISTER_KERNEL(softmax_fwd_kernel, CPU, &softmax_fwd_cpu);
TG_REGISTER_KERNEL(softmax_bwd_kernel, CPU, &softmax_bwd_cpu);

}  // namespace tg::ops
