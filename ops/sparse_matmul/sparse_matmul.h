// Block-sparse matrix products (OPS.md "matmul"), next to the dense matmul of ops/linalg.
//
// x is [B, M, K] and y is [B, K, N], each dense (a 3-d Tensor) or block-sparse; the output
// is block-sparse with a given `layout_out` [B, M/bs, N/bs], or dense [B, M, N]. Only
// active output blocks are computed; each is the sum, over the k-blocks present in both
// operands (a dense operand has every block), of the block products. An output block with
// no such k is exactly 0. Named by the letters (output, x, y) with S = sparse, D = dense:
// SDD, SSD, SDS, SSS, DSD, DDS, DSS.
//
// All block-sparse operands and layout_out share one block size bs, which divides every
// dense extent; on CUDA bs >= 16. dtypes f32, f64, bf16, f16, the same for x and y and
// kept by the output; products accumulate in f32 (f64 for f64) and round once per output
// element. On CUDA, bf16/f16 use tensor cores; f32 uses TF32 tensor cores only when
// tg::allow_tf32() is set, else exact f32 arithmetic. On a Hopper GPU a bf16/f16 product
// at block size 16 or 32 whose extents are multiples of 64 may run on the 64-blocks
// covering its blocks (covering_layout), the blocks they add read as zeros: the same sums,
// except that a non-finite value facing such a zero block gives NaN (ops/sparse_matmul/path.h
// CoarseBlocks says when, and turns it off).
//
// MatmulOptions::transpose_x / transpose_y read an operand transposed, like BLAS op():
// x is then stored as [B, K, M] (its layout [B, K/bs, M/bs]) and y as [B, N, K], and the
// product is xᵀ · y, x · yᵀ or xᵀ · yᵀ. No transposed copy is made: the kernels read the
// stored blocks transposed (the backward passes use the same reads). The gradient of a
// transposed operand has its stored shape and layout.
//
// Differentiable in x and y: dx = dO · yᵀ restricted to x's layout, dy = xᵀ · dO restricted
// to y's layout (dense operands get dense gradients), computed by the same kernels reading
// transposed blocks, never by transposed copies.
//
// Errors (before any kernel runs), with the op name "matmul", the argument (x, y,
// layout_out), what was expected and what was given: ShapeError (ranks, batch or inner
// extents differing (of op(x) and op(y)), extents not divisible by bs, layout_out of the wrong shape),
// LayoutError (malformed block-sparse operands, undefined layout_out, block sizes
// differing or below 16 on CUDA), DTypeError (non-floating or mixed dtypes), DeviceError
// (mixed devices).
#pragma once

#include "core/block_sparse.h"

namespace tg {

/// How a block-sparse product reads its operands (see the file comment).
struct MatmulOptions {
  bool transpose_x = false;  ///< use xᵀ: x stored [B, K, M]
  bool transpose_y = false;  ///< use yᵀ: y stored [B, N, K]
};

/// SDD: the blocks of layout_out of op(x) [B, M, K] · op(y) [B, K, N] (both dense).
BlockSparseTensor matmul(const Tensor& x, const Tensor& y, const Layout& layout_out,
                         const MatmulOptions& opts = {});

/// SSD: the blocks of layout_out of op(x) (block-sparse [B, M, K]) · op(y) (dense [B, K, N]).
BlockSparseTensor matmul(const BlockSparseTensor& x, const Tensor& y, const Layout& layout_out,
                         const MatmulOptions& opts = {});

/// SDS: the blocks of layout_out of op(x) (dense [B, M, K]) · op(y) (block-sparse [B, K, N]).
BlockSparseTensor matmul(const Tensor& x, const BlockSparseTensor& y, const Layout& layout_out,
                         const MatmulOptions& opts = {});

/// SSS: the blocks of layout_out of op(x) · op(y), both block-sparse.
BlockSparseTensor matmul(const BlockSparseTensor& x, const BlockSparseTensor& y, const Layout& layout_out,
                         const MatmulOptions& opts = {});

/// DSD: dense [B, M, N] = op(x) (block-sparse [B, M, K]) · op(y) (dense [B, K, N]).
Tensor matmul(const BlockSparseTensor& x, const Tensor& y, const MatmulOptions& opts = {});

/// DDS: dense [B, M, N] = op(x) (dense [B, M, K]) · op(y) (block-sparse [B, K, N]).
Tensor matmul(const Tensor& x, const BlockSparseTensor& y, const MatmulOptions& opts = {});

/// DSS: dense [B, M, N] = op(x) · op(y), both block-sparse.
Tensor matmul(const BlockSparseTensor& x, const BlockSparseTensor& y, const MatmulOptions& opts = {});

}  // namespace tg
