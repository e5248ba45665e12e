// CPU GEMM: f32 products on the packed GEMM (cpu_packed_gemm.h) where cpu_gemm_choice.h takes
// it, else through Eigen, as are f64 ones. 16-bit dtypes are widened to f32 one matrix at a
// time, multiplied in f32 (f32 accumulation) and rounded once when stored.
#include <Eigen/Dense>
#include <type_traits>
#include <vector>

#include "ops/linalg/cpu_gemm_choice.h"
#include "ops/linalg/cpu_packed_gemm.h"
#include "ops/linalg/kernels.h"

namespace tg::ops {
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// c (m x n) = op(a) · op(b) for one matrix pair, all row-major.
template <typename T>
void gemm_one(const T* a, const T* b, T* c, const GemmParams& p) {
  using Idx = Eigen::Index;
  const Idx m = p.m, n = p.n, k = p.k;
  if constexpr (std::is_same_v<T, float>) {
    if (use_packed_gemm(m, n, k)) {
      packed_sgemm(a, b, c, m, n, k, p.trans_a, p.trans_b);
      return;
    }
  }
  Eigen::Map<const RowMat<T>> A(a, p.trans_a ? k : m, p.trans_a ? m : k);
  Eigen::Map<const RowMat<T>> B(b, p.trans_b ? n : k, p.trans_b ? k : n);
  Eigen::Map<RowMat<T>> C(c, m, n);
  if (!p.trans_a && !p.trans_b) C.noalias() = A * B;
  else if (p.trans_a && !p.trans_b) C.noalias() = A.transpose() * B;
  else if (!p.trans_a && p.trans_b) C.noalias() = A * B.transpose();
  else C.noalias() = A.transpose() * B.transpose();
}

template <typename T>
void widen(const T* src, std::int64_t n, std::vector<float>& dst) {
  dst.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) dst[static_cast<std::size_t>(i)] = static_cast<float>(src[i]);
}

template <typename T>
void gemm_typed(const Tensor& a, const Tensor& b, const Tensor& out, const GemmParams& p) {
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* pc = out.data<T>();
  const std::int64_t mn = p.m * p.n, mk = p.m * p.k, kn = p.k * p.n;
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    for (std::int64_t i = 0; i < p.batch; ++i) gemm_one<T>(pa + i * p.stride_a, pb + i * p.stride_b, pc + i * mn, p);
  } else {
    std::vector<float> fa, fb, fc(static_cast<std::size_t>(mn));
    // A shared operand (stride 0) is widened once for the whole batch.
    for (std::int64_t i = 0; i < p.batch; ++i) {
      if (i == 0 || p.stride_a != 0) widen(pa + i * p.stride_a, mk, fa);
      if (i == 0 || p.stride_b != 0) widen(pb + i * p.stride_b, kn, fb);
      gemm_one<float>(fa.data(), fb.data(), fc.data(), p);
      T* c = pc + i * mn;
      for (std::int64_t j = 0; j < mn; ++j) c[j] = T(fc[static_cast<std::size_t>(j)]);
    }
  }
}

void gemm_cpu(const Tensor& a, const Tensor& b, const Tensor& out, const GemmParams& p) {
  TG_DISPATCH_FLOATING(out.dtype(), "matmul", [&] { gemm_typed<scalar_t>(a, b, out, p); });
}

// f32 on the packed GEMM adds the bias as it stores its first sums (no pass over out of its
// own); elsewhere the linear op composes the GEMM and the bias.
bool linear_fwd_cpu(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out) {
  const std::int64_t m = x.size(0), k = x.size(1), n = w.size(0);
  if (x.dtype() != DType::f32 || !use_packed_gemm(m, n, k)) return false;
  packed_sgemm(x.data<float>(), w.data<float>(), out.data<float>(), m, n, k, false, true, bias.data<float>());
  return true;
}

// No fused bias gradient on the CPU: the linear op sums it apart.
bool linear_wgrad_cpu(const Tensor&, const Tensor&, const Tensor&, const Tensor&) { return false; }

}  // namespace

TG_REGISTER_KERNEL(matmul_gemm, CPU, &gemm_cpu);
TG_REGISTER_KERNEL(linear_fwd_kernel, CPU, &linear_fwd_cpu);
TG_REGISTER_KERNEL(linear_wgrad_kernel, CPU, &linear_wgrad_cpu);

}  // namespace tg::ops
