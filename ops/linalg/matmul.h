// Dense matrix products. f32, f64, bf16, f16 (bf16/f16 accumulate in f32). CPU: Eigen;
// CUDA: cuBLAS. Differentiable.
#pragma once

#include "core/tensor.h"

namespace tg {

/// a [M,K] x b [K,N] -> [M,N]; a [B,M,K] x b [B,K,N] -> [B,M,N]; a [B,M,K] x b [K,N] -> [B,M,N]
/// (b shared across the batch, as for a Linear weight). Also `trans_a` / `trans_b` use the
/// transpose of the last two dims of a / b without materialising it.
/// Errors: ShapeError (ranks, inner extents, batch), DTypeError, DeviceError.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

/// If true (default false), f32 matmuls on CUDA may use TF32 tensor cores.
void set_allow_tf32(bool on);
bool allow_tf32();

}  // namespace tg
