// CPU kernels of the optimizers and gradient clipping. Elements are spread over the cores
// (parallel_ranges); the sum of squares keeps one partial per range of a fixed grain and
// adds them in order, so every result is independent of the thread count.
#include <cmath>
#include <vector>

#include "ops/optim/kernels.h"
#include "ops/optim/update_math.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

using std::sqrt;

// Elements per range.
constexpr std::int64_t kGrain = 1 << 15;

void adamw_cpu(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& m,
               const std::vector<Tensor>& v, const AdamWHyper& h) {
  const double bc1 = 1 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bc2 = 1 - std::pow(h.beta2, static_cast<double>(h.step));
  for (std::size_t i = 0; i < params.size(); ++i) {
    TG_DISPATCH_FLOATING(params[i].dtype(), "adamw", [&] {
      using A = typename acc_type<scalar_t>::type;
      scalar_t* p = params[i].data<scalar_t>();
      const scalar_t* g = grads[i].data<scalar_t>();
      A* mm = m[i].data<A>();
      A* vv = v[i].data<A>();
      const A gs = A(h.grad_scale);
      parallel_ranges(params[i].numel(), kGrain, [&](std::int64_t j0, std::int64_t j1) {
        for (std::int64_t j = j0; j < j1; ++j) {
          p[j] = scalar_t(adamw_update<A>(A(p[j]), A(g[j]) * gs, mm[j], vv[j], A(h.lr), A(h.beta1), A(h.beta2),
                                          A(h.eps), A(h.weight_decay), A(bc1), A(bc2)));
        }
      });
    });
  }
}

void sgd_cpu(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& bufs,
             double lr, double momentum, double wd, double grad_scale) {
  for (std::size_t i = 0; i < params.size(); ++i) {
    TG_DISPATCH_FLOATING(params[i].dtype(), "sgd", [&] {
      using A = typename acc_type<scalar_t>::type;
      scalar_t* p = params[i].data<scalar_t>();
      const scalar_t* g = grads[i].data<scalar_t>();
      A* b = bufs[i].defined() ? bufs[i].data<A>() : nullptr;
      const A gs = A(grad_scale);
      parallel_ranges(params[i].numel(), kGrain, [&](std::int64_t j0, std::int64_t j1) {
        for (std::int64_t j = j0; j < j1; ++j)
          p[j] = scalar_t(sgd_update<A>(A(p[j]), A(g[j]) * gs, b ? b + j : nullptr, A(lr), A(momentum), A(wd)));
      });
    });
  }
}

void grad_squares_cpu(const std::vector<Tensor>& grads, Tensor& out) {
  double total = 0;
  for (const Tensor& g : grads) {
    TG_DISPATCH_FLOATING(g.dtype(), "clip_grad_norm", [&] {
      using A = typename acc_type<scalar_t>::type;
      const scalar_t* x = g.data<scalar_t>();
      const std::int64_t n = g.numel();
      std::vector<double> part(static_cast<std::size_t>((n + kGrain - 1) / kGrain), 0.0);
      parallel_ranges(n, kGrain, [&](std::int64_t j0, std::int64_t j1) {
        A s = 0;
        for (std::int64_t j = j0; j < j1; ++j) s += A(x[j]) * A(x[j]);
        part[static_cast<std::size_t>(j0 / kGrain)] = static_cast<double>(s);
      });
      for (double s : part) total += s;
    });
  }
  *out.data<double>() += total;
}

void grad_scale_cpu(const std::vector<Tensor>& grads, const Tensor& sumsq, double max_norm) {
  const double scale = clip_factor(sumsq.data<double>()[0], max_norm);
  if (scale == 1.0) return;
  for (const Tensor& g : grads) {
    TG_DISPATCH_FLOATING(g.dtype(), "clip_grad_norm", [&] {
      using A = typename acc_type<scalar_t>::type;
      scalar_t* x = g.data<scalar_t>();
      parallel_ranges(g.numel(), kGrain, [&](std::int64_t j0, std::int64_t j1) {
        for (std::int64_t j = j0; j < j1; ++j) x[j] = scalar_t(A(x[j]) * A(scale));
      });
    });
  }
}

}  // namespace

TG_REGISTER_KERNEL(adamw_kernel, CPU, &adamw_cpu);
TG_REGISTER_KERNEL(sgd_kernel, CPU, &sgd_cpu);
TG_REGISTER_KERNEL(grad_squares_kernel, CPU, &grad_squares_cpu);
TG_REGISTER_KERNEL(grad_scale_kernel, CPU, &grad_scale_cpu);

}  // namespace tg::ops
