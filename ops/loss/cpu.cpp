// CPU kernels of the loss family (reference implementations; f32 math for bf16/f16,
// f64 for f64). Cross-entropy rows are spread over the cores, each computed by one thread.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/loss/kernels.h"
#include "ops/reduce/cpu_math.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

// Logits a range of cross-entropy rows holds at least.
constexpr std::int64_t kRowsGrainElems = 1 << 15;

// Rows per range for rows of `classes` logits.
std::int64_t row_grain(std::int64_t classes) {
  return std::max<std::int64_t>(1, kRowsGrainElems / std::max<std::int64_t>(classes, 1));
}

// Calls f(const I*) with the target's index type.
template <typename F>
void with_target(const Tensor& target, F&& f) {
  if (target.dtype() == DType::i64)
    f(target.data<std::int64_t>());
  else
    f(target.data<std::int32_t>());
}

void cross_entropy_fwd_cpu(const Tensor& logits, const Tensor& target, std::int64_t ignore_index, const Tensor& out,
                           const Tensor& lse, const Tensor& count_out, const RangeVerdict& verdict) {
  const std::int64_t n = logits.size(0), classes = logits.size(1);
  std::int64_t count = 0, lo = std::numeric_limits<std::int64_t>::max(), hi = std::numeric_limits<std::int64_t>::min();
  with_target(target, [&](const auto* t) {
    for (std::int64_t r = 0; r < n; ++r) {
      const auto v = static_cast<std::int64_t>(t[r]);
      if (v == ignore_index) continue;
      ++count;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  });
  verdict(lo, hi);
  count_out.data<std::int64_t>()[0] = count;
  TG_DISPATCH_FLOATING(logits.dtype(), "cross_entropy", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();
    const scalar_t* x = logits.data<scalar_t>();
    Acc* pl = lse.data<Acc>();
    std::vector<Acc> loss(static_cast<std::size_t>(n), Acc(0));
    with_target(target, [&](const auto* t) {
      parallel_ranges(n, row_grain(classes), [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r) {
          const scalar_t* xr = x + r * classes;
          Acc m = kNegInf;
          for (std::int64_t c = 0; c < classes; ++c) m = cpu::nan_max(m, static_cast<Acc>(xr[c]));
          const Acc s = cpu::pairwise_sum<Acc>(
              0, classes, [&](std::int64_t c) { return cpu::exp_sub(static_cast<Acc>(xr[c]), m); });
          pl[r] = m == kNegInf ? kNegInf : m + std::log(s);
          const auto tr = static_cast<std::int64_t>(t[r]);
          if (tr != ignore_index) loss[static_cast<std::size_t>(r)] = pl[r] - static_cast<Acc>(xr[tr]);
        }
      });
    });
    const Acc total = cpu::pairwise_sum<Acc>(0, n, [&](std::int64_t r) { return loss[r]; });
    out.data<scalar_t>()[0] = static_cast<scalar_t>(count > 0 ? total / static_cast<Acc>(count) : Acc(0));
  });
}

void cross_entropy_bwd_cpu(const Tensor& logits, const Tensor& target, const Tensor& lse, const Tensor& grad,
                           std::int64_t ignore_index, const Tensor& count_t, const Tensor& dlogits) {
  const std::int64_t n = logits.size(0), classes = logits.size(1);
  const std::int64_t count = count_t.data<std::int64_t>()[0];
  TG_DISPATCH_FLOATING(logits.dtype(), "cross_entropy backward", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    const scalar_t* x = logits.data<scalar_t>();
    const Acc* pl = lse.data<Acc>();
    scalar_t* dx = dlogits.data<scalar_t>();
    const Acc coef = count > 0 ? static_cast<Acc>(grad.data<scalar_t>()[0]) / static_cast<Acc>(count) : Acc(0);
    with_target(target, [&](const auto* t) {
      parallel_ranges(n, row_grain(classes), [&](std::int64_t r0, std::int64_t r1) {
        for (std::int64_t r = r0; r < r1; ++r) {
          const auto tr = static_cast<std::int64_t>(t[r]);
          for (std::int64_t c = 0; c < classes; ++c) {
            const std::int64_t i = r * classes + c;
            if (tr == ignore_index) {
              dx[i] = static_cast<scalar_t>(Acc(0));
            } else {
              const Acc p = std::exp(static_cast<Acc>(x[i]) - pl[r]);
              dx[i] = static_cast<scalar_t>((p - (c == tr ? Acc(1) : Acc(0))) * coef);
            }
          }
        }
      });
    });
  });
}

void mse_fwd_cpu(const Tensor& a, const Tensor& b, const Tensor& out) {
  TG_DISPATCH_FLOATING(a.dtype(), "mse_loss", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    const std::int64_t n = a.numel();
    const Acc s = cpu::pairwise_sum<Acc>(0, n, [&](std::int64_t i) {
      const Acc d = static_cast<Acc>(pa[i]) - static_cast<Acc>(pb[i]);
      return d * d;
    });
    out.data<scalar_t>()[0] = static_cast<scalar_t>(s / static_cast<Acc>(n));  // n == 0: nan
  });
}

void mse_bwd_cpu(const Tensor& a, const Tensor& b, const Tensor& grad, const Tensor& da, const Tensor& db) {
  TG_DISPATCH_FLOATING(a.dtype(), "mse_loss backward", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    const scalar_t* pa = a.data<scalar_t>();
    const scalar_t* pb = b.data<scalar_t>();
    scalar_t* pda = da.data<scalar_t>();
    scalar_t* pdb = db.data<scalar_t>();
    const std::int64_t n = a.numel();
    const Acc coef = Acc(2) * static_cast<Acc>(grad.data<scalar_t>()[0]) / static_cast<Acc>(n);
    for (std::int64_t i = 0; i < n; ++i) {
      const Acc d = (static_cast<Acc>(pa[i]) - static_cast<Acc>(pb[i])) * coef;
      pda[i] = static_cast<scalar_t>(d);
      pdb[i] = static_cast<scalar_t>(-d);
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(cross_entropy_fwd_kernel, CPU, &cross_entropy_fwd_cpu);
TG_REGISTER_KERNEL(cross_entropy_bwd_kernel, CPU, &cross_entropy_bwd_cpu);
TG_REGISTER_KERNEL(mse_fwd_kernel, CPU, &mse_fwd_cpu);
TG_REGISTER_KERNEL(mse_bwd_kernel, CPU, &mse_bwd_cpu);

}  // namespace tg::ops
