// matmul: validation, output allocation, dispatch to the GEMM kernel, autograd.
#include "ops/linalg/matmul.h"

#include <atomic>

#include "autograd/node.h"
#include "ops/common.h"
#include "ops/linalg/kernels.h"
#include "ops/shape/shape_ops.h"
#include "runtime/backend.h"

namespace tg {

namespace ops {
TG_DEFINE_KERNEL(matmul_gemm, GemmFn)
}  // namespace ops

namespace {

std::atomic<bool> g_allow_tf32{false};

// Extents of op(a) = [M, K] and op(b) = [K, N] (last two dims, after the trans flags).
struct MatmulDims {
  std::int64_t batch = 1, m = 0, k = 0, n = 0;
};

MatmulDims validate(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  ops::check_floating("matmul", "a", a);
  ops::check_floating("matmul", "b", b);
  ops::check_same_dtype("matmul", "a", a, "b", b);
  ops::check_same_device("matmul", "a", a, "b", b);
  ops::check_ndim_range("matmul", "a", a, 2, 3);
  ops::check_ndim_range("matmul", "b", b, 2, 3);
  if (a.dim() == 2 && b.dim() == 3) {
    TG_THROW(ShapeError, "matmul: b may be 3-d (batched) only when a is 3-d too; got a of shape ", a.shape(),
             " and b of shape ", b.shape());
  }
  const int a_k_dim = trans_a ? -2 : -1, b_k_dim = trans_b ? -1 : -2;
  MatmulDims d;
  d.m = a.size(trans_a ? -1 : -2);
  d.k = a.size(a_k_dim);
  d.n = b.size(trans_b ? -2 : -1);
  const std::int64_t kb = b.size(b_k_dim);
  if (d.k != kb) {
    TG_THROW(ShapeError, "matmul: inner extents differ: a has K=", d.k, " (dim ", a_k_dim, "), b has K=", kb,
             " (dim ", b_k_dim, ")", trans_a || trans_b ? " (after trans_a/trans_b)" : "");
  }
  if (a.dim() == 3 && b.dim() == 3 && a.size(0) != b.size(0)) {
    TG_THROW(ShapeError, "matmul: batch extents differ: a has B=", a.size(0), " (dim 0), b has B=", b.size(0),
             " (dim 0)");
  }
  d.batch = a.dim() == 3 ? a.size(0) : 1;
  return d;
}

// out = op(a) · op(b) into an allocated output; no autograd.
void run_gemm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, const MatmulDims& d, const Tensor& out) {
  if (out.numel() == 0) return;
  if (d.k == 0) {
    // An empty sum: the GEMM libraries' k = 0 behaviour varies, so zero the output here.
    runtime::Backend& be = runtime::backend(out.device());
    be.memset_zero(out.data_ptr(), out.nbytes(), be.current_stream(out.device()));
    return;
  }
  ops::GemmParams p;
  p.m = d.m;
  p.n = d.n;
  p.k = d.k;
  p.trans_a = trans_a;
  p.trans_b = trans_b;
  if (a.dim() == 3 && b.dim() == 2 && !trans_a) {
    // A shared b against a non-transposed batch is one tall GEMM: [B·M, K] x [K, N].
    p.batch = 1;
    p.m = d.batch * d.m;
  } else {
    p.batch = d.batch;
    p.stride_a = a.dim() == 3 ? d.m * d.k : 0;
    p.stride_b = b.dim() == 3 ? d.k * d.n : 0;
  }
  ops::matmul_gemm()(a.device())(a, b, out, p);
}

// The gradients of C = op(A) · op(B) given dC. With B shared across A's batch, dB sums
// over the batch, done as one GEMM over A viewed as [B·M, K].
std::vector<Tensor> matmul_backward(const Tensor& a, const Tensor& b, bool ta, bool tb, bool need_a, bool need_b,
                                    const Tensor& dc) {
  Tensor da, db;
  const bool shared_b = a.dim() == 3 && b.dim() == 2;
  if (need_a) {
    if (!ta) {
      da = matmul(dc, b, false, !tb);  // dC · op(B)ᵀ
    } else if (!shared_b) {
      da = matmul(b, dc, tb, true);  // (dC · op(B)ᵀ)ᵀ = op(B) · dCᵀ
    } else {
      da = transpose(matmul(dc, b, false, !tb));  // a 2-d left operand cannot take a batch
    }
  }
  if (need_b) {
    if (!shared_b) {
      db = tb ? matmul(dc, a, true, ta)    // (op(A)ᵀ · dC)ᵀ = dCᵀ · op(A)
              : matmul(a, dc, !ta, false);  // op(A)ᵀ · dC
    } else {
      const std::int64_t rows = dc.size(0) * dc.size(1);
      Tensor a_eff = ta ? transpose(a) : a;  // [B, M, K]
      Tensor a2 = reshape(a_eff, Shape{rows, a_eff.size(2)});
      Tensor dc2 = reshape(dc, Shape{rows, dc.size(2)});
      db = tb ? matmul(dc2, a2, true, false) : matmul(a2, dc2, true, false);
    }
  }
  return {da, db};
}

}  // namespace

void set_allow_tf32(bool on) { g_allow_tf32.store(on, std::memory_order_relaxed); }
bool allow_tf32() { return g_allow_tf32.load(std::memory_order_relaxed); }

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const MatmulDims d = validate(a, b, trans_a, trans_b);
  const Shape out_shape = a.dim() == 3 ? Shape{d.batch, d.m, d.n} : Shape{d.m, d.n};
  Tensor out = ops::empty_like(a, out_shape, a.dtype());
  run_gemm(a, b, trans_a, trans_b, d, out);
  if (autograd::needs_grad({a, b})) {
    autograd::record("matmul", {a, b}, {out},
                     [ad = a.detach(), bd = b.detach(), trans_a, trans_b, need_a = a.requires_grad(),
                      need_b = b.requires_grad()](const std::vector<Tensor>& g) {
                       return matmul_backward(ad, bd, trans_a, trans_b, need_a, need_b, g[0]);
                     });
  }
  return out;
}

}  // namespace tg
