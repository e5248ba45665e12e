// Dense matrix products. f32, f64, bf16, f16 (bf16/f16 accumulate in f32). CPU: Eigen;
// CUDA: cuBLAS. Differentiable.
#pragma once

#include "core/tensor.h"

namespace tg {

/// a [M,K] x b [K,N] -> [M,N]; a [B,M,K] x b [B,K,N] -> [B,M,N]; a [B,M,K] x b [K,N] -> [B,M,N]
/// (b shared across the batch, as for a Linear weight). Also `trans_a` / `trans_b` use the
/// transpose of the last two dims of a / b without materialising it (a is then stored as
/// [.., K, M], b as [.., N, K]). Any extent may be 0 (K = 0 gives zeros). bf16/f16
/// accumulate in f32 and round once per output element.
/// Errors: ShapeError (ranks, inner extents, batch), DTypeError (non-floating or mixed
/// dtypes), DeviceError (mixed devices), e.g.
///   "matmul: inner extents differ: a has K=4 (dim -1), b has K=3 (dim -2)".
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

/// If true (default false), f32 matmuls on CUDA may use TF32 tensor cores.
void set_allow_tf32(bool on);
bool allow_tf32();

}  // namespace tg
