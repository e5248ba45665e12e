// Kernel slots of the linalg family.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "ops/dispatch.h"

namespace tg::ops {

/// One (strided, batched) row-major GEMM: for every i < batch,
///   out[i] (m x n) = op(a_i) (m x k) · op(b_i) (k x n)
/// where a_i starts `stride_a` elements after a_{i-1} (0: one matrix shared by the batch)
/// and is stored row-major as [m, k], or [k, m] when `trans_a` (op = transpose); likewise
/// b_i ([k, n], or [n, k] when `trans_b`). `out` holds batch·m·n contiguous elements.
struct GemmParams {
  std::int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  std::int64_t stride_a = 0, stride_b = 0;
};

/// a, b, out: same floating dtype and device (validated); batch, m, n, k > 0. 16-bit
/// dtypes accumulate in f32 and round once when storing out.
using GemmFn = void(const Tensor& a, const Tensor& b, const Tensor& out, const GemmParams& p);
TG_DECLARE_KERNEL(matmul_gemm, GemmFn);

/// out [m, n] = x [m, k] · wᵀ (w stored [n, k]) + bias [n] (added to every row), one GEMM
/// with the bias in its epilogue; x, w, bias, out of one floating dtype on one device.
/// Returns false, having done nothing, where the backend has no such fused GEMM for the
/// dtype / shape (the caller then composes matmul and add).
using LinearFwdFn = bool(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& out);
/// dw [n, k] = gᵀ · x (g [m, n], x [m, k]) and db [n] = Σ over the m rows of g, one GEMM
/// with the column sums in its epilogue. Returns false, having done nothing, where the
/// backend cannot fuse them.
using LinearWgradFn = bool(const Tensor& g, const Tensor& x, const Tensor& dw, const Tensor& db);
TG_DECLARE_KERNEL(linear_fwd_kernel, LinearFwdFn);
TG_DECLARE_KERNEL(linear_wgrad_kernel, LinearWgradFn);

/// Calls of linear whose forward / weight gradient ran fused (a kernel above returned
/// true), since the process started: tests check the fused paths ran.
std::int64_t linear_fused_forwards();
std::int64_t linear_fused_wgrads();

}  // namespace tg::ops
