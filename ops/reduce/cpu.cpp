// CPU kernels of the reduce family (reference implementations; f32 accumulation for
// f32/bf16/f16, f64 for f64, pairwise so that long sums stay accurate).
#include <limits>

#include "ops/reduce/cpu_math.h"
#include "ops/reduce/kernels.h"

namespace tg::ops {
namespace {

// Sum or max/argmax of p[0, n); Max needs n > 0.
template <typename T, typename Acc>
void reduce_span(const T* p, std::int64_t n, ReduceKind kind, T* out, std::int64_t* index) {
  if (kind == ReduceKind::Max) {
    Acc best = static_cast<Acc>(p[0]);
    std::int64_t bi = 0;
    for (std::int64_t i = 1; i < n; ++i) {
      const Acc v = static_cast<Acc>(p[i]);
      if (cpu::argmax_before(v, i, best, bi)) {
        best = v;
        bi = i;
      }
    }
    *out = static_cast<T>(best);
    *index = bi;
    return;
  }
  const Acc s = cpu::pairwise_sum<Acc>(0, n, [p](std::int64_t i) { return static_cast<Acc>(p[i]); });
  // 0 / 0 = nan: the mean of nothing.
  *out = static_cast<T>(kind == ReduceKind::Mean ? s / static_cast<Acc>(n) : s);
}

void reduce_all_cpu(const Tensor& x, ReduceKind kind, const Tensor& out, const Tensor& index) {
  TG_DISPATCH_FLOATING(x.dtype(), "reduce", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    reduce_span<scalar_t, Acc>(x.data<scalar_t>(), x.numel(), kind, out.data<scalar_t>(),
                               index.defined() ? index.data<std::int64_t>() : nullptr);
  });
}

void reduce_rows_cpu(const Tensor& x, std::int64_t rows, std::int64_t cols, ReduceKind kind, const Tensor& out,
                     const Tensor& index) {
  TG_DISPATCH_FLOATING(x.dtype(), "reduce", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    const scalar_t* px = x.data<scalar_t>();
    scalar_t* po = out.data<scalar_t>();
    std::int64_t* pi = index.defined() ? index.data<std::int64_t>() : nullptr;
    for (std::int64_t r = 0; r < rows; ++r) {
      reduce_span<scalar_t, Acc>(px + r * cols, cols, kind, po + r, pi ? pi + r : nullptr);
    }
  });
}

void expand_cpu(const Tensor& g, std::int64_t cols, double factor, const Tensor& dx) {
  TG_DISPATCH_FLOATING(dx.dtype(), "reduce backward", [&] {
    using Acc = typename acc_type<scalar_t>::type;
    const scalar_t* pg = g.data<scalar_t>();
    scalar_t* pd = dx.data<scalar_t>();
    const std::int64_t n = dx.numel();
    for (std::int64_t i = 0; i < n; ++i) {
      pd[i] = static_cast<scalar_t>(static_cast<Acc>(pg[i / cols]) * static_cast<Acc>(factor));
    }
  });
}

void scatter_cpu(const Tensor& g, const Tensor& index, std::int64_t cols, const Tensor& dx) {
  TG_DISPATCH_FLOATING(dx.dtype(), "max backward", [&] {
    const scalar_t* pg = g.data<scalar_t>();
    const std::int64_t* pi = index.data<std::int64_t>();
    scalar_t* pd = dx.data<scalar_t>();
    const std::int64_t rows = dx.numel() / cols;
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t c = 0; c < cols; ++c) pd[r * cols + c] = static_cast<scalar_t>(0.0f);
      pd[r * cols + pi[r]] = pg[r];
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(reduce_all_kernel, CPU, &reduce_all_cpu);
TG_REGISTER_KERNEL(reduce_rows_kernel, CPU, &reduce_rows_cpu);
TG_REGISTER_KERNEL(reduce_expand_kernel, CPU, &expand_cpu);
TG_REGISTER_KERNEL(reduce_scatter_kernel, CPU, &scatter_cpu);

}  // namespace tg::ops
