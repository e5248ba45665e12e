// Problems, references and checks shared by the block-sparse matmul tests
// (test_sparse_matmul.cpp and test_sparse_matmul_transpose.cpp): the seven operand modes,
// the problem kinds, an f64 reference product, 16-bit tolerances and the gradcheck helpers.
// A problem is the product as the op reads it (op(x) · op(y)); the transposed tests derive
// the stored operands from it, so that both files run the same problem kinds.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "ops/sparse_matmul/path.h"
#include "ops/sparse_matmul/plan.h"
#include "ops/sparse_matmul/sparse_matmul.h"
#include "util.h"

namespace mmcases {

/// The plan of a DSD at block 16 whose x has 3 block-rows over 7 k-blocks with the k lists
/// {0, 1, 2, 3}, {0, 1, 2, 4} and {5, 6}, y dense with 4 block-columns: rows 0 and 1 pair over
/// the 5 k-blocks of their union (two of them a step one line sits out), row 2 stays alone.
inline std::shared_ptr<const tg::ops::MatmulPlan> union_pair_plan() {
  const std::int64_t bs = 16;
  const std::vector<std::vector<int>> ks = {{0, 1, 2, 3}, {0, 1, 2, 4}, {5, 6}};
  std::vector<bool> mask(21, false);
  for (std::size_t i = 0; i < ks.size(); ++i)
    for (const int k : ks[i]) mask[i * 7 + static_cast<std::size_t>(k)] = true;
  const tg::Layout lx(tg::from_vector(mask, {1, 3, 7}), bs);
  const tg::ops::OperandDesc a{lx, 1, 3 * bs, 7 * bs, false}, b{tg::Layout(), 1, 7 * bs, 4 * bs, false},
      c{tg::Layout(), 1, 3 * bs, 4 * bs, false};
  return tg::ops::matmul_plan(a, b, c, bs);
}

/// Puts back TF32 and the automatic kernel and block choices when a CUDA test that forces them ends,
/// however it ends (a failed REQUIRE throws).
struct CudaSettingsGuard {
  bool tf32 = tg::allow_tf32();
  CudaSettingsGuard() = default;
  CudaSettingsGuard(const CudaSettingsGuard&) = delete;
  CudaSettingsGuard& operator=(const CudaSettingsGuard&) = delete;
  ~CudaSettingsGuard() {
    tg::set_allow_tf32(tf32);
    tg::ops::spmm::set_mma_path(tg::ops::spmm::MmaPath::Auto);
    tg::ops::spmm::set_tma_max_ctas(0);
    tg::ops::spmm::set_coarse_blocks(tg::ops::spmm::CoarseBlocks::Auto);
    tg::ops::spmm::set_fine_stores(true);
  }
};

inline std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }
inline constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

// The operand combinations, named (output, x, y).
struct Mode {
  const char* name;
  bool out_sparse, x_sparse, y_sparse;
};
inline const std::vector<Mode> kModes = {
    {"SDD", true, false, false}, {"SSD", true, true, false},  {"SDS", true, false, true}, {"SSS", true, true, true},
    {"DSD", false, true, false}, {"DDS", false, false, true}, {"DSS", false, true, true}};

// A product as the op reads it: op(x) [B, M, K] under lx, op(y) [B, K, N] under ly, the
// output under lo (op() is the identity where nothing is transposed).
struct Problem {
  tg::Layout lx, ly, lo;
  std::int64_t B() const { return lo.batch(); }
  std::int64_t M() const { return lo.rows(); }
  std::int64_t K() const { return lx.cols(); }
  std::int64_t N() const { return lo.cols(); }
  std::int64_t bs() const { return lo.block_size(); }
};

inline Problem problem(std::int64_t B, std::int64_t Mb, std::int64_t Kb, std::int64_t Nb, std::int64_t bs, double dx,
                       double dy, double dout, std::uint64_t seed) {
  return {tg::random_layout(B, Mb, Kb, bs, dx, seed), tg::random_layout(B, Kb, Nb, bs, dy, seed + 1),
          tg::random_layout(B, Mb, Nb, bs, dout, seed + 2)};
}

// Problems at block size bs: non-square, batch 1-3, empty layouts, empty rows and columns,
// full layouts, and k-dimensions without overlapping blocks (last). Callers pick kinds by
// index ([3] x empty, [4] output empty, [5] empty rows and columns, [6] no common k), so
// the order is part of the contract.
inline std::vector<Problem> problems(std::int64_t bs, std::uint64_t seed) {
  const std::int64_t g = bs >= 16 ? 1 : 2;  // grid scale: more blocks when blocks are small
  std::vector<Problem> ps;
  ps.push_back(problem(2, 2 * g, 3 * g, 2 * g + 1, bs, 0.5, 0.5, 0.6, seed));
  ps.push_back(problem(1, 3 * g, 2 * g, 2, bs, 1.0, 1.0, 1.0, seed + 10));
  ps.push_back(problem(3, 2, 2 * g + 1, 3 * g, bs, 0.4, 0.7, 0.5, seed + 20));
  ps.push_back(problem(2, 2, 3, 2, bs, 0.0, 0.6, 0.7, seed + 30));  // x empty
  ps.push_back(problem(2, 3, 2, 2, bs, 0.7, 0.6, 0.0, seed + 40));  // output empty
  // op(x) without blocks in block-row 1, op(y) without blocks in block-column 0 (stored:
  // an empty block-column of x, an empty block-row of y, when transposed), and an output
  // block-row left out
  const std::int64_t B = 2, Mb = 3, Kb = 3 * g, Nb = 3;
  tg::Layout rx = tg::random_layout(B, Mb, Kb, bs, 0.8, seed + 50),
             ry = tg::random_layout(B, Kb, Nb, bs, 0.8, seed + 51);
  ps.push_back({tgt::layout_where(B, Mb, Kb, bs, [&](auto b, auto r, auto c) { return r != 1 && rx.active(b, r, c); }),
                tgt::layout_where(B, Kb, Nb, bs, [&](auto b, auto r, auto c) { return c != 0 && ry.active(b, r, c); }),
                tgt::layout_where(B, Mb, Nb, bs, [](auto, auto r, auto) { return r != 2; })});
  // no k-block active in both op(x) and op(y): every output block of SSS / DSS is exactly 0
  ps.push_back({tgt::layout_where(1, 2, 4, bs, [](auto, auto, auto c) { return c % 2 == 0; }),
                tgt::layout_where(1, 4, 3, bs, [](auto, auto r, auto) { return r % 2 == 1; }),
                tg::full_layout(1, 2, 3, bs)});
  return ps;
}

// A small problem for the gradchecks at block size bs: op(x) lacks one block of its last
// block-row (when it has two block-rows and k-blocks), op(y) one block of its first
// block-column (when it has two k-blocks), the output its last block (when it has two).
inline Problem gradcheck_problem(std::int64_t B, std::int64_t Mb, std::int64_t Kb, std::int64_t Nb, std::int64_t bs) {
  return {tgt::layout_where(B, Mb, Kb, bs,
                            [=](auto b, auto r, auto c) { return !(Mb > 1 && Kb > 1 && r == Mb - 1 && c == b % Kb); }),
          tgt::layout_where(B, Kb, Nb, bs,
                            [=](auto b, auto r, auto c) { return !(Kb > 1 && c == 0 && r == (b + 1) % Kb); }),
          tgt::layout_where(B, Mb, Nb, bs,
                            [=](auto, auto r, auto c) { return !(Mb * Nb > 1 && r == Mb - 1 && c == Nb - 1); })};
}

// The op's input for an operand stored as `dense`: block data under l when sparse, else
// the dense values; a new leaf either way, so that gradients never accumulate across cases.
inline tg::Tensor input_of(const tg::Tensor& dense, const tg::Layout& l, bool sparse) {
  return sparse ? tg::to_sparse(dense, l).data().detach() : dense.detach();
}

// The overload of mode m on x and y (block data under lx / ly where m takes them sparse,
// else dense) with options o; returns the output block data (checked to be under lo) or
// the dense output.
inline tg::Tensor call(const Mode& m, const tg::Tensor& x, const tg::Layout& lx, const tg::Tensor& y,
                       const tg::Layout& ly, const tg::Layout& lo, const tg::MatmulOptions& o) {
  auto X = [&] { return tg::BlockSparseTensor(x, lx); };
  auto Y = [&] { return tg::BlockSparseTensor(y, ly); };
  if (m.out_sparse) {
    tg::BlockSparseTensor out;
    if (!m.x_sparse && !m.y_sparse)
      out = tg::matmul(x, y, lo, o);
    else if (m.x_sparse && !m.y_sparse)
      out = tg::matmul(X(), y, lo, o);
    else if (!m.x_sparse)
      out = tg::matmul(x, Y(), lo, o);
    else
      out = tg::matmul(X(), Y(), lo, o);
    REQUIRE(out.layout() == lo);
    return out.data();
  }
  if (m.x_sparse && !m.y_sparse) return tg::matmul(X(), y, o);
  if (!m.x_sparse) return tg::matmul(x, Y(), o);
  return tg::matmul(X(), Y(), o);
}

// The logical dense value of a tensor in its stored form (block data under l, or dense);
// inactive positions of a sparse one: `fill`.
inline tg::Tensor logical(const tg::Tensor& t, const tg::Layout& l, bool sparse, double fill = kNan) {
  return sparse ? tg::to_dense(tg::BlockSparseTensor(t, l), fill) : t;
}

// Host f64 values of a dense [B, R, C], zeroed outside l's blocks when `mask`.
inline std::vector<double> host(const tg::Tensor& dense, const tg::Layout& l, bool mask) {
  std::vector<double> v = tgt::values(dense);
  if (!mask) return v;
  const std::int64_t R = dense.size(1), C = dense.size(2), bs = l.block_size();
  for (std::int64_t b = 0; b < dense.size(0); ++b)
    for (std::int64_t i = 0; i < R; ++i)
      for (std::int64_t j = 0; j < C; ++j)
        if (!l.active(b, i / bs, j / bs)) v[at((b * R + i) * C + j)] = 0.0;
  return v;
}

// [B, M, N] = op(a) · op(b) in f64 with plain loops; a is stored [B, M, K] (or [B, K, M]
// when ta), b [B, K, N] (or [B, N, K] when tb). Outside `lo`'s blocks (when given): fill.
inline tg::Tensor reference_mm(const std::vector<double>& a, const std::vector<double>& b, std::int64_t B,
                               std::int64_t M, std::int64_t K, std::int64_t N, bool ta, bool tb, const tg::Layout* lo,
                               double fill) {
  std::vector<double> out(at(B * M * N), fill);
  // op(a)'s rows and op(b)'s columns copied out contiguous first, so that the sums run over
  // unit strides in four interleaved partial sums (together ~6x faster at blocks of 128 than
  // one sum reading op(b) down its columns; the 16-bit tests at 128 spend most of their time
  // here)
  std::vector<double> ra(at(M * K)), cb(at(N * K));
  for (std::int64_t bt = 0; bt < B; ++bt) {
    const double* pa = a.data() + bt * M * K;
    const double* pb = b.data() + bt * K * N;
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t k = 0; k < K; ++k) ra[at(i * K + k)] = ta ? pa[k * M + i] : pa[i * K + k];
    for (std::int64_t j = 0; j < N; ++j)
      for (std::int64_t k = 0; k < K; ++k) cb[at(j * K + k)] = tb ? pb[j * K + k] : pb[k * N + j];
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) {
        if (lo && !lo->active(bt, i / lo->block_size(), j / lo->block_size())) continue;
        const double* x = ra.data() + i * K;
        const double* y = cb.data() + j * K;
        double s[4] = {0, 0, 0, 0};
        std::int64_t k = 0;
        for (; k + 4 <= K; k += 4)
          for (int u = 0; u < 4; ++u) s[u] += x[k + u] * y[k + u];
        for (; k < K; ++k) s[0] += x[k] * y[k];
        out[at((bt * M + i) * N + j)] = (s[0] + s[1]) + (s[2] + s[3]);
      }
  }
  return tg::from_vector(out, {B, M, N});
}

// Tolerances of a product of `inner` terms in dtype dt against the f64 reference of the same
// rounded inputs: what is left is the f32 accumulation (absolute, growing like sqrt(inner)
// for random signs) and the one final rounding (relative: bf16 2^-8, f16 2^-11, f32 2^-24).
inline double rtol_16(tg::DType dt) { return dt == tg::DType::f32 ? 1e-6 : dt == tg::DType::bf16 ? 8e-3 : 1e-3; }
inline double atol_16(tg::DType dt, std::int64_t inner) {
  return (dt == tg::DType::f32 ? 1e-6 : 1e-3) * std::sqrt(static_cast<double>(std::max<std::int64_t>(inner, 1)));
}

// autograd::gradcheck of f(x, y) in its directional mode, k random directions per operand
// instead of every element (two products an element, out of reach from block 32 up): each
// check compares <dL/dx, D_i> from the backward (every element of dx weighs in) with a
// central difference along D_i. A product is linear in x alone and in y alone, so the
// difference is exact up to rounding at any step: a step of 0.25 and tolerances of 1e-9
// leave no room for a wrong gradient element (test_sparse_matmul.cpp's control shows it
// failing for one).
inline tg::autograd::GradcheckResult directional_gradcheck(
    const std::function<tg::Tensor(const tg::Tensor&, const tg::Tensor&)>& f, const tg::Tensor& x0,
    const tg::Tensor& y0, std::int64_t k, std::uint64_t seed) {
  tg::autograd::GradcheckOptions opts;
  opts.eps = 0.25;
  opts.atol = 1e-9;
  opts.rtol = 1e-9;
  opts.seed = seed;
  opts.directions = k;
  return tg::autograd::gradcheck([&](const std::vector<tg::Tensor>& v) { return f(v[0], v[1]); },
                                 {x0.detach().requires_grad_(), y0.detach().requires_grad_()}, opts);
}

}  // namespace mmcases
