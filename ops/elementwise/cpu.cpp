// CPU kernels of the element-wise family: one generic map loop over the functors of
// math.h, and a plain sum for sum_to (outputs spread over the cores).
#include <algorithm>
#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "ops/common.h"
#include "ops/elementwise/kernels.h"
#include "ops/elementwise/math.h"
#include "ops/elementwise/plan.h"
#include "runtime/parallel.h"

namespace tg::ops {
namespace {

template <typename T>
using acc_t = typename acc_type<T>::type;

// The row length shared by every Row input when no input is Strided (0 when there is no
// Row input, -1 when the rows differ or an input is Strided).
template <int N>
std::int64_t common_row_len(const MapPlan<N>& plan) {
  std::int64_t len = 0;
  for (int k = 0; k < N; ++k) {
    const InputPlan& p = plan.in[k];
    if (p.mode == InputMode::Strided) return -1;
    if (p.mode == InputMode::Row) {
      if (len != 0 && len != p.row_len) return -1;
      len = p.row_len;
    }
  }
  return len;
}

// Elements per range of the parallel map: large enough that a range's work outweighs the
// cost of handing it to a thread, small enough to split a training step's tensors.
constexpr std::int64_t kMapGrain = 1 << 15;

// out[m][i] = f(in[0][off0(i)], ...) for i in [0, n); a null output is not written. Ranges
// of the elements run in parallel (runtime/parallel.h).
template <typename T, typename F>
void map_cpu(const MapPlan<F::kIn>& plan, const std::array<const T*, F::kIn>& in, const std::array<T*, F::kOut>& out,
             std::int64_t n, const F& f) {
  using A = acc_t<T>;
  constexpr int N = F::kIn, M = F::kOut;
  std::int64_t row = plan.all_contiguous ? -1 : common_row_len(plan);
  if (row == 0) row = n;  // only scalars broadcast: one "row" of everything
  auto emit = [&](const A (&y)[M], std::int64_t i) {
    for (int m = 0; m < M; ++m) {
      if (out[m]) out[m][i] = T(y[m]);
    }
  };
  parallel_ranges(n, kMapGrain, [&](std::int64_t i0, std::int64_t i1) {
    A x[N], y[M];
    if (row > 0 && n % row == 0) {
      // A bias row or a scalar: runs to the end of a row, each input a pointer that steps
      // by one (contiguous, row) or stays (scalar), so that no element needs a division and
      // the common all-stepping case vectorises.
      std::int64_t j = i0 % row;
      for (std::int64_t i = i0; i < i1; j = 0) {
        const std::int64_t run = std::min(i1 - i, row - j);
        const T* p[N];
        bool steps = true;
        for (int k = 0; k < N; ++k) {
          const InputMode mode = plan.in[k].mode;
          p[k] = in[k] + (mode == InputMode::Contiguous ? i : mode == InputMode::Row ? j : 0);
          steps = steps && mode != InputMode::Scalar;
        }
        if (steps) {
          for (std::int64_t t = 0; t < run; ++t) {
            for (int k = 0; k < N; ++k) x[k] = static_cast<A>(p[k][t]);
            f(x, y);
            emit(y, i + t);
          }
        } else {
          for (std::int64_t t = 0; t < run; ++t) {
            for (int k = 0; k < N; ++k) x[k] = static_cast<A>(p[k][plan.in[k].mode == InputMode::Scalar ? 0 : t]);
            f(x, y);
            emit(y, i + t);
          }
        }
        i += run;
      }
    } else if (plan.all_contiguous) {
      for (std::int64_t i = i0; i < i1; ++i) {
        for (int k = 0; k < N; ++k) x[k] = static_cast<A>(in[k][i]);
        f(x, y);
        emit(y, i);
      }
    } else {
      for (std::int64_t i = i0; i < i1; ++i) {
        for (int k = 0; k < N; ++k) x[k] = static_cast<A>(in[k][plan.offset(k, i)]);
        f(x, y);
        emit(y, i);
      }
    }
  });
}

// tanh and the tanh form of GELU on f32 through Eigen's vectorised tanh (a rational
// approximation within a few ulp): glibc's scalar tanhf took a fifth of a CPU training
// step of the example GPT. Returns false where the generic loop must run (other ops and
// dtypes, broadcasting).
template <UnaryOp OP, typename T>
bool unary_fwd_vectorised(const Tensor& x, const Tensor& out) {
  if constexpr (std::is_same_v<T, float> && (OP == UnaryOp::Tanh || OP == UnaryOp::GeluTanh)) {
    if (x.numel() != out.numel()) return false;
    parallel_ranges(out.numel(), kMapGrain, [&](std::int64_t i0, std::int64_t i1) {
      const Eigen::Map<const Eigen::ArrayXf> in(cptr<float>(x) + i0, i1 - i0);
      Eigen::Map<Eigen::ArrayXf> y(mptr<float>(out) + i0, i1 - i0);
      if constexpr (OP == UnaryOp::Tanh) {
        y = in.tanh();
      } else {
        const float c = static_cast<float>(ew::kSqrt2OverPi), a = static_cast<float>(ew::kGeluCubic);
        y = 0.5f * in * (1.0f + (c * (in + a * in.cube())).tanh());
      }
    });
    return true;
  }
  return false;
}

template <UnaryOp OP, typename T>
bool unary_bwd_vectorised(const Tensor& saved, const Tensor& g, const Tensor& gi) {
  if constexpr (std::is_same_v<T, float> && OP == UnaryOp::GeluTanh) {
    parallel_ranges(gi.numel(), kMapGrain, [&](std::int64_t i0, std::int64_t i1) {
      const std::int64_t n = i1 - i0;
      const Eigen::Map<const Eigen::ArrayXf> x(cptr<float>(saved) + i0, n), dy(cptr<float>(g) + i0, n);
      const float c = static_cast<float>(ew::kSqrt2OverPi), a = static_cast<float>(ew::kGeluCubic);
      const Eigen::ArrayXf x2 = x.square();
      const Eigen::ArrayXf t = (c * x * (1.0f + a * x2)).tanh();
      Eigen::Map<Eigen::ArrayXf>(mptr<float>(gi) + i0, n) =
          dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t.square()) * (c * (1.0f + 3.0f * a * x2)));
    });
    return true;
  }
  return false;
}

template <UnaryOp OP, typename T>
void unary_fwd_t(const Tensor& x, const Tensor& out, double s) {
  if (unary_fwd_vectorised<OP, T>(x, out)) return;
  auto plan = make_map_plan<1>(out.shape(), {x.shape()}, unary_op_name(OP));
  map_cpu<T>(plan, {cptr<T>(x)}, {mptr<T>(out)}, out.numel(), ew::UnaryFwd<OP, acc_t<T>>{static_cast<acc_t<T>>(s)});
}

void unary_fwd_cpu(UnaryOp op, const Tensor& x, const Tensor& out, double s) {
  TG_DISPATCH_FLOATING(out.dtype(), unary_op_name(op), [&] {
    with_op(op, [&](auto o) { unary_fwd_t<decltype(o)::value, scalar_t>(x, out, s); });
  });
}

template <UnaryOp OP, typename T>
void unary_bwd_t(const Tensor& saved, const Tensor& g, const Tensor& gi, double s) {
  if (unary_bwd_vectorised<OP, T>(saved, g, gi)) return;
  MapPlan<2> plan;  // all three share one shape
  map_cpu<T>(plan, {cptr<T>(saved), cptr<T>(g)}, {mptr<T>(gi)}, gi.numel(),
             ew::UnaryBwd<OP, acc_t<T>>{static_cast<acc_t<T>>(s)});
}

void unary_bwd_cpu(UnaryOp op, const Tensor& saved, const Tensor& g, const Tensor& gi, double s) {
  TG_DISPATCH_FLOATING(gi.dtype(), unary_op_name(op), [&] {
    with_op(op, [&](auto o) { unary_bwd_t<decltype(o)::value, scalar_t>(saved, g, gi, s); });
  });
}

template <BinaryOp OP, typename T>
void binary_fwd_t(const Tensor& a, const Tensor& b, const Tensor& out) {
  auto plan = make_map_plan<2>(out.shape(), {a.shape(), b.shape()}, binary_op_name(OP));
  map_cpu<T>(plan, {cptr<T>(a), cptr<T>(b)}, {mptr<T>(out)}, out.numel(), ew::BinaryFwd<OP, acc_t<T>>{});
}

void binary_fwd_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& out) {
  TG_DISPATCH_FLOATING(out.dtype(), binary_op_name(op), [&] {
    with_op(op, [&](auto o) { binary_fwd_t<decltype(o)::value, scalar_t>(a, b, out); });
  });
}

template <BinaryOp OP, typename T>
void binary_bwd_t(const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga, const Tensor& gb) {
  auto plan = make_map_plan<3>(g.shape(), {a.shape(), b.shape(), g.shape()}, binary_op_name(OP));
  map_cpu<T>(plan, {cptr<T>(a), cptr<T>(b), cptr<T>(g)}, {mptr<T>(ga), mptr<T>(gb)}, g.numel(),
             ew::BinaryBwd<OP, acc_t<T>>{});
}

void binary_bwd_cpu(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& g, const Tensor& ga,
                    const Tensor& gb) {
  TG_DISPATCH_FLOATING(g.dtype(), binary_op_name(op), [&] {
    with_op(op, [&](auto o) { binary_bwd_t<decltype(o)::value, scalar_t>(a, b, g, ga, gb); });
  });
}

void sum_to_cpu(const Tensor& x, const Tensor& out) {
  const SumToPlan plan = make_sum_to_plan(x.shape(), out.shape(), "sum_to");
  // Outputs are spread over the cores, each summed by one thread over the reduced
  // positions in order: the result does not depend on the thread count.
  const std::int64_t grain = std::max<std::int64_t>(1, kMapGrain / std::max<std::int64_t>(plan.n_red, 1));
  TG_DISPATCH_FLOATING(x.dtype(), "sum_to", [&] {
    // The reference backend sums sequentially, so it accumulates in f64 whatever the dtype
    // (a sequential f32 sum of 10^5 terms would be less accurate than the GPU's tree).
    using A = double;
    const scalar_t* px = cptr<scalar_t>(x);
    scalar_t* po = mptr<scalar_t>(out);
    if (plan.inner_reduced) {
      parallel_ranges(plan.n_out, grain, [&](std::int64_t k0, std::int64_t k1) {
        for (std::int64_t k = k0; k < k1; ++k) {
          const scalar_t* base = px + plan.koff(k);
          A acc = 0;
          for (std::int64_t r = 0; r < plan.n_red; ++r) acc += static_cast<A>(base[plan.roff(r)]);
          po[k] = scalar_t(acc);
        }
      });
    } else {
      // Kept dims innermost: walk x in memory order (within a range of outputs), one
      // accumulator per output.
      parallel_ranges(plan.n_out, grain, [&](std::int64_t k0, std::int64_t k1) {
        std::vector<A> acc(static_cast<std::size_t>(k1 - k0), A(0));
        // one contiguous kept dim (a bias gradient): a plain, vectorisable row add
        const bool unit = plan.nk == 1 && plan.kstrides[0] == 1;
        for (std::int64_t r = 0; r < plan.n_red; ++r) {
          const scalar_t* base = px + plan.roff(r);
          if (unit) {
            A* a = acc.data();
            const scalar_t* row = base + k0;
            for (std::int64_t i = 0; i < k1 - k0; ++i) a[i] += static_cast<A>(row[i]);
          } else {
            for (std::int64_t k = k0; k < k1; ++k) acc[static_cast<std::size_t>(k - k0)] += static_cast<A>(base[plan.koff(k)]);
          }
        }
        for (std::int64_t k = k0; k < k1; ++k) po[k] = scalar_t(acc[static_cast<std::size_t>(k - k0)]);
      });
    }
  });
}

}  // namespace

TG_REGISTER_KERNEL(unary_fwd, CPU, &unary_fwd_cpu);
TG_REGISTER_KERNEL(unary_bwd, CPU, &unary_bwd_cpu);
TG_REGISTER_KERNEL(binary_fwd, CPU, &binary_fwd_cpu);
TG_REGISTER_KERNEL(binary_bwd, CPU, &binary_bwd_cpu);
TG_REGISTER_KERNEL(sum_to_kernel, CPU, &sum_to_cpu);

}  // namespace tg::ops
