// CPU kernels of the layer_norm family: loops over rows, statistics in the accumulation
// type (f32; f64 for f64), two passes over each row (mean, then the sum of squared
// deviations). Row sums use 16 interleaved partial sums combined pairwise: far less
// rounding error than one running f32 sum over a long row (and they vectorise).
// rms_norm runs the same loops with RMS = true: the mean is taken as 0 and there is no beta.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/layer_norm/kernels.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

/// Sum of f(c) for c in [0, n) over 16 interleaved partial sums, combined pairwise.
template <typename Acc, typename F>
Acc lane_sum(std::int64_t n, F&& f) {
  constexpr int kLanes = 16;
  Acc part[kLanes] = {};
  std::int64_t c = 0;
  for (; c + kLanes <= n; c += kLanes)
    for (int l = 0; l < kLanes; ++l) part[l] += f(c + l);
  for (int l = 0; c < n; ++c, ++l) part[l] += f(c);
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) part[l] += part[l + w];
  return part[0];
}

/// layer_norm's forward, or rms_norm's with RMS (beta and mean then undefined).
template <bool RMS>
void norm_fwd(const Tensor& x, const Tensor& gamma, const Tensor& beta, std::int64_t rows, std::int64_t D, double eps,
              const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  TG_DISPATCH_FLOATING(x.dtype(), RMS ? "rms_norm" : "layer_norm", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    const T* px = x.data<T>();
    const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
    const T* pb = beta.defined() ? beta.data<T>() : nullptr;
    T* py = y.data<T>();
    Acc* pm = RMS ? nullptr : mean.data<Acc>();
    Acc* pr = rstd.data<Acc>();
    // rows are independent: ranges of them on the cores, ~32K elements each
    parallel_ranges(rows, std::max<std::int64_t>(1, (std::int64_t{1} << 15) / std::max<std::int64_t>(D, 1)),
                    [&](std::int64_t r0, std::int64_t r1) {
                      for (std::int64_t r = r0; r < r1; ++r) {
                        const T* xr = px + r * D;
                        T* yr = py + r * D;
                        // The row statistics are summed in f64: this backend is the reference the CUDA one
                        // is tested against, and an f32 running sum of ~1000 offset values drifts by ~1e-5.
                        const double mu_d =
                            RMS ? 0.0
                                : lane_sum<double>(D, [&](std::int64_t c) { return static_cast<double>(xr[c]); }) /
                                      static_cast<double>(D);
                        const Acc mu = static_cast<Acc>(mu_d);
                        const double q = lane_sum<double>(D, [&](std::int64_t c) {
                          const double d = static_cast<double>(xr[c]) - mu_d;
                          return d * d;
                        });
                        const Acc rs = static_cast<Acc>(1.0 / std::sqrt(q / static_cast<double>(D) + eps));
                        for (std::int64_t c = 0; c < D; ++c) {
                          Acc v = (static_cast<Acc>(xr[c]) - mu) * rs;
                          if (pg) v *= static_cast<Acc>(pg[c]);
                          if (pb) v += static_cast<Acc>(pb[c]);
                          yr[c] = static_cast<T>(v);
                        }
                        if constexpr (!RMS) pm[r] = mu;
                        pr[r] = rs;
                      }
                    });
  });
}

/// layer_norm's backward, or rms_norm's with RMS (mean and dbeta then undefined).
template <bool RMS>
void norm_bwd(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
              std::int64_t rows, std::int64_t D, const Tensor& dx, const Tensor& dgamma, const Tensor& dbeta) {
  TG_DISPATCH_FLOATING(x.dtype(), RMS ? "rms_norm" : "layer_norm", [&] {
    using T = scalar_t;
    using Acc = typename acc_type<T>::type;
    const T* pdy = dy.data<T>();
    const T* px = x.data<T>();
    const T* pg = gamma.defined() ? gamma.data<T>() : nullptr;
    const Acc* pm = RMS ? nullptr : mean.data<Acc>();
    const Acc* pr = rstd.data<Acc>();
    T* pdx = dx.defined() ? dx.data<T>() : nullptr;
    const bool cols = dgamma.defined() || dbeta.defined();
    std::vector<Acc> acc_g(cols ? static_cast<std::size_t>(D) : 0, Acc(0));
    std::vector<Acc> acc_b(cols && !RMS ? static_cast<std::size_t>(D) : 0, Acc(0));
    const Acc inv_d = Acc(1) / static_cast<Acc>(D);
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* dyr = pdy + r * D;
      const T* xr = px + r * D;
      const Acc mu = RMS ? Acc(0) : pm[r], rs = pr[r];
      if (cols) {
        for (std::int64_t c = 0; c < D; ++c) {
          const Acc d = static_cast<Acc>(dyr[c]);
          acc_g[static_cast<std::size_t>(c)] += d * (static_cast<Acc>(xr[c]) - mu) * rs;
          if constexpr (!RMS) acc_b[static_cast<std::size_t>(c)] += d;
        }
      }
      if (!pdx) continue;
      auto g_at = [&](std::int64_t c) { return static_cast<Acc>(dyr[c]) * (pg ? static_cast<Acc>(pg[c]) : Acc(1)); };
      const Acc s1 = RMS ? Acc(0) : lane_sum<Acc>(D, g_at);  // sum(g): rms_norm subtracts no mean
      const Acc s2 = lane_sum<Acc>(D, [&](std::int64_t c) { return g_at(c) * (static_cast<Acc>(xr[c]) - mu) * rs; });
      const Acc m1 = s1 * inv_d, m2 = s2 * inv_d;
      T* dxr = pdx + r * D;
      for (std::int64_t c = 0; c < D; ++c) {
        const Acc g = static_cast<Acc>(dyr[c]) * (pg ? static_cast<Acc>(pg[c]) : Acc(1));
        const Acc xhat = (static_cast<Acc>(xr[c]) - mu) * rs;
        dxr[c] = static_cast<T>(rs * (g - m1 - xhat * m2));
      }
    }
    if (dgamma.defined()) {
      T* p = dgamma.data<T>();
      for (std::int64_t c = 0; c < D; ++c) p[c] = static_cast<T>(acc_g[static_cast<std::size_t>(c)]);
    }
    if (!RMS && dbeta.defined()) {
      T* p = dbeta.data<T>();
      for (std::int64_t c = 0; c < D; ++c) p[c] = static_cast<T>(acc_b[static_cast<std::size_t>(c)]);
    }
  });
}

void layer_norm_fwd_cpu(const Tensor& x, const Tensor& gamma, const Tensor& beta, std::int64_t rows, std::int64_t D,
                        double eps, const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  norm_fwd<false>(x, gamma, beta, rows, D, eps, y, mean, rstd);
}

void layer_norm_bwd_cpu(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd,
                        std::int64_t rows, std::int64_t D, const Tensor& dx, const Tensor& dgamma,
                        const Tensor& dbeta) {
  norm_bwd<false>(dy, x, gamma, mean, rstd, rows, D, dx, dgamma, dbeta);
}

void rms_norm_fwd_cpu(const Tensor& x, const Tensor& gamma, std::int64_t rows, std::int64_t D, double eps,
                      const Tensor& y, const Tensor& rstd) {
  norm_fwd<true>(x, gamma, Tensor(), rows, D, eps, y, Tensor(), rstd);
}

void rms_norm_bwd_cpu(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& rstd, std::int64_t rows,
                      std::int64_t D, const Tensor& dx, const Tensor& dgamma) {
  norm_bwd<true>(dy, x, gamma, Tensor(), rstd, rows, D, dx, dgamma, Tensor());
}

}  // namespace

TG_REGISTER_KERNEL(layer_norm_fwd_kernel, CPU, &layer_norm_fwd_cpu);
TG_REGISTER_KERNEL(layer_norm_bwd_kernel, CPU, &layer_norm_bwd_cpu);
TG_REGISTER_KERNEL(rms_norm_fwd_kernel, CPU, &rms_norm_fwd_cpu);
TG_REGISTER_KERNEL(rms_norm_bwd_kernel, CPU, &rms_norm_bwd_cpu);

}  // namespace tg::ops
