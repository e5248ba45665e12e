// Tests of block-sparse matmul (ops/sparse_matmul) in all seven operand combinations:
// masked f64 references written as plain loops, 16-bit and f32 accuracy, exact zeros where
// no k-block overlaps, empty layouts and extents, backward against masked references,
// gradchecks, bad inputs, and CUDA against the CPU.
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "force_cpu_gemm.h"
#include "ops/linalg/cpu_packed_gemm.h"
#include "ops/sparse_matmul/kernels.h"
#include "ops/sparse_matmul/path.h"
#include "ops/sparse_matmul/plan.h"
#include "ops/sparse_matmul/regions.h"
#include "ops/sparse_matmul/row_groups.h"
#include "ops/sparse_matmul/sparse_matmul.h"
#include "sparse_matmul_cases.h"
#include "util.h"

namespace test_sparse_matmul {

using namespace tg;
using namespace mmcases;

namespace {

std::string describe(const Problem& p) {
  return detail::concat("B=", p.B(), " M=", p.M(), " K=", p.K(), " N=", p.N(), " bs=", p.bs(),
                        " blocks x/y/out=", p.lx.n_blocks(), "/", p.ly.n_blocks(), "/", p.lo.n_blocks());
}

// Calls the overload of `m` on inputs (block data or dense), without options; returns the
// output block data (sparse output) or the dense output.
Tensor apply(const Mode& m, const Problem& p, const Tensor& xin, const Tensor& yin) {
  return call(m, xin, p.lx, yin, p.ly, p.lo, {});
}

// The f64 reference of mode m for dense operands (masked by their layouts when sparse).
Tensor reference(const Mode& m, const Problem& p, const Tensor& xd, const Tensor& yd) {
  return reference_mm(host(xd, p.lx, m.x_sparse), host(yd, p.ly, m.y_sparse), p.B(), p.M(), p.K(), p.N(), false, false,
                      m.out_sparse ? &p.lo : nullptr, kNan);
}

// The kinds of problems() on grids of one or two blocks a side, for blocks of 64 and 128
// (a block product costs 8 and 64 times one at 32): non-square, batch 2 and 3, an empty x,
// an empty output, an empty x block-row and y block-column with an output block left out,
// and k-blocks without overlap.
std::vector<Problem> small_problems(std::int64_t bs, std::uint64_t seed) {
  std::vector<Problem> ps;
  ps.push_back(problem(2, 1, 2, 1, bs, 0.5, 0.7, 1.0, seed));
  ps.push_back(problem(1, 2, 1, 1, bs, 1.0, 1.0, 1.0, seed + 10));
  ps.push_back(problem(3, 1, 1, 1, bs, 0.7, 0.7, 0.7, seed + 20));
  ps.push_back(problem(2, 1, 1, 1, bs, 0.0, 1.0, 1.0, seed + 30));  // x empty
  ps.push_back(problem(1, 1, 2, 1, bs, 1.0, 1.0, 0.0, seed + 40));  // output empty
  ps.push_back({tgt::layout_where(1, 2, 2, bs, [](auto, auto r, auto) { return r != 1; }),
                tgt::layout_where(1, 2, 2, bs, [](auto, auto, auto c) { return c != 0; }),
                tgt::layout_where(1, 2, 2, bs, [](auto, auto r, auto c) { return r != 0 || c != 1; })});
  ps.push_back({tgt::layout_where(1, 1, 2, bs, [](auto, auto, auto c) { return c == 0; }),
                tgt::layout_where(1, 2, 1, bs, [](auto, auto r, auto) { return r == 1; }), full_layout(1, 1, 1, bs)});
  return ps;
}

struct Inputs {
  Tensor xd, yd;  // dense f64 values
};
Inputs inputs(const Problem& p, std::uint64_t seed) {
  return {tgt::rand64({p.B(), p.M(), p.K()}, seed), tgt::rand64({p.B(), p.K(), p.N()}, seed + 1)};
}

void check_gradcheck(const char* what, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                     const std::vector<Tensor>& in) {
  auto r = autograd::gradcheck(f, in);
  INFO(what << ": " << r.report);
  REQUIRE(r.ok);
}

}  // namespace

TEST_CASE("sparse matmul: every mode matches a masked f64 reference", "[ops][sparse_matmul]") {
  std::uint64_t seed = 1000;
  for (std::int64_t bs : {1, 2, 16, 32}) {
    for (const Problem& p : problems(bs, seed += 100)) {
      Inputs in = inputs(p, ++seed);
      for (const Mode& m : kModes) {
        INFO(m.name << " " << describe(p));
        Tensor out = apply(m, p, input_of(in.xd, p.lx, m.x_sparse), input_of(in.yd, p.ly, m.y_sparse));
        REQUIRE(out.dtype() == DType::f64);
        REQUIRE(out.shape() == (m.out_sparse ? Shape{p.lo.n_blocks(), bs, bs} : Shape{p.B(), p.M(), p.N()}));
        tgt::require_close(logical(out, p.lo, m.out_sparse), reference(m, p, in.xd, in.yd), 1e-12, 1e-12);
      }
    }
  }
}

TEST_CASE("sparse matmul on the CPU: output tiles split over threads match the f64 reference", "[ops][sparse_matmul]") {
  // block 64 with two k-blocks: ~2^19 multiply-adds a tile, so the CPU kernel cuts the
  // output tiles into ranges of four (six to eight ranges a call), and the bf16 operands
  // (98K elements) are widened in two ranges
  const Problem p = problem(2, 6, 2, 5, 64, 0.8, 0.8, 0.8, 7400);
  Inputs in = inputs(p, 7500);
  for (const Mode& m : kModes) {
    INFO(m.name << " " << describe(p));
    Tensor out = apply(m, p, input_of(in.xd, p.lx, m.x_sparse), input_of(in.yd, p.ly, m.y_sparse));
    tgt::require_close(logical(out, p.lo, m.out_sparse), reference(m, p, in.xd, in.yd), 1e-12, 1e-12);
  }
  const Mode& sdd = kModes[0];
  const Tensor xh = in.xd.to(DType::bf16), yh = in.yd.to(DType::bf16);
  Tensor out = apply(sdd, p, xh, yh).to(DType::f64);
  tgt::require_close(logical(out, p.lo, true), reference(sdd, p, xh.to(DType::f64), yh.to(DType::f64)), 2e-2, 5e-2);
}

TEST_CASE("sparse matmul: blocks without a common k are exactly zero", "[ops][sparse_matmul]") {
  for (std::int64_t bs : {1, 16}) {
    const Problem p = problems(bs, 7).back();
    Inputs in = inputs(p, 8);
    for (const Mode& m : kModes) {
      INFO(m.name << " bs=" << bs);
      const Tensor out = apply(m, p, input_of(in.xd, p.lx, m.x_sparse), input_of(in.yd, p.ly, m.y_sparse));
      if (m.x_sparse && m.y_sparse) {
        for (double v : tgt::values(out)) REQUIRE(v == 0.0);
      } else {
        // with one side dense, each k-block still overlaps: compare with the reference
        tgt::require_close(logical(out, p.lo, m.out_sparse), reference(m, p, in.xd, in.yd), 1e-12, 1e-12);
      }
    }
  }
  // a dense side whose values are 0 outside the other's k-blocks also gives exact zeros,
  // and an output block-row whose x block-row is empty too
  const std::int64_t bs = 2;
  Layout lx = tgt::layout_where(1, 2, 2, bs, [](auto, auto r, auto c) { return r == 0 && c == 0; });
  Layout lo = full_layout(1, 2, 2, bs);
  Tensor xd = to_dense(to_sparse(tgt::rand64({1, 4, 4}, 3), lx));
  Tensor yd = tgt::rand64({1, 4, 4}, 4);
  Tensor got = to_dense(matmul(to_sparse(xd, lx), yd, lo));
  auto v = tgt::values(got);
  for (std::int64_t i = 2; i < 4; ++i)
    for (std::int64_t j = 0; j < 4; ++j) REQUIRE(v[at(i * 4 + j)] == 0.0);
  tgt::require_close(matmul(to_sparse(xd, lx), yd), got, 0, 0);
}

TEST_CASE("sparse matmul: empty extents", "[ops][sparse_matmul]") {
  // K = 0: every output element is an empty sum
  Layout lo = full_layout(2, 2, 3, 2);
  Tensor x0 = zeros({2, 4, 0}, {.dtype = DType::f64}), y0 = zeros({2, 0, 6}, {.dtype = DType::f64});
  BlockSparseTensor o = matmul(x0, y0, lo);
  tgt::require_close(to_dense(o), zeros({2, 4, 6}, {.dtype = DType::f64}), 0, 0);
  Layout ly0 = full_layout(2, 0, 3, 2);
  tgt::require_close(matmul(x0, BlockSparseTensor(zeros({0, 2, 2}, {.dtype = DType::f64}), ly0)),
                     zeros({2, 4, 6}, {.dtype = DType::f64}), 0, 0);
  // M = 0 and B = 0: empty outputs
  Layout lx = full_layout(1, 0, 2, 2);
  Tensor y = tgt::rand64({1, 4, 6}, 1);
  REQUIRE(matmul(BlockSparseTensor(zeros({0, 2, 2}, {.dtype = DType::f64}), lx), y).shape() == Shape{1, 0, 6});
  Layout lb = full_layout(0, 2, 2, 2);
  Tensor xb = zeros({0, 4, 4}, {.dtype = DType::f64});
  REQUIRE(matmul(xb, xb, lb).data().shape() == Shape{0, 2, 2});
  // empty layouts with gradients: zero gradients of the right shapes
  Layout e = random_layout(2, 2, 2, 2, 0.0, 1);
  Tensor xd = tgt::rand64({2, 4, 4}, 2).requires_grad_();
  Tensor ys = zeros({0, 2, 2}, {.dtype = DType::f64}).requires_grad_();
  Tensor out = matmul(xd, BlockSparseTensor(ys, e));
  tgt::require_close(out, zeros({2, 4, 4}, {.dtype = DType::f64}), 0, 0);
  sum(out).backward();
  tgt::require_close(xd.grad(), zeros({2, 4, 4}, {.dtype = DType::f64}), 0, 0);
  REQUIRE(ys.grad().shape() == Shape{0, 2, 2});
}

namespace {

// REQUIREs that every element of an output block with no k-block present in both operands
// (a dense operand has every block) is exactly 0: such a block is an empty sum, whatever
// the dtype. `out` is the op's output (block data of p.lo, or dense [B, M, N]). Returns how
// many such blocks there were.
int require_exact_zeros(const Mode& m, const Problem& p, const Tensor& out) {
  int found = 0;
  const std::int64_t bs = p.bs(), Kb = p.K() / bs;
  const std::vector<double> v = tgt::values(out);
  std::int64_t k_out = 0;  // index of the output block among p.lo's active blocks
  for (std::int64_t b = 0; b < p.B(); ++b)
    for (std::int64_t i = 0; i < p.M() / bs; ++i)
      for (std::int64_t j = 0; j < p.N() / bs; ++j) {
        const bool stored = !m.out_sparse || p.lo.active(b, i, j);
        bool any = false;
        for (std::int64_t k = 0; k < Kb; ++k)
          any = any || ((!m.x_sparse || p.lx.active(b, i, k)) && (!m.y_sparse || p.ly.active(b, k, j)));
        if (stored && !any) {
          ++found;
          INFO("output block (" << b << ", " << i << ", " << j << ") has no common k-block: exactly 0");
          for (std::int64_t r = 0; r < bs; ++r)
            for (std::int64_t c = 0; c < bs; ++c) {
              const std::size_t e =
                  m.out_sparse ? at((k_out * bs + r) * bs + c) : at((b * p.M() + i * bs + r) * p.N() + j * bs + c);
              REQUIRE(v[e] == 0.0);
            }
        }
        if (m.out_sparse && stored) ++k_out;
      }
  return found;
}

// Forward of every mode in f32, bf16 and f16 against the f64 reference of the same rounded
// inputs (what is left is accumulation and the one final rounding), output blocks without a
// common k exactly 0. Returns how many such blocks were checked.
int check_dtype_forward(const std::vector<Problem>& ps, std::uint64_t seed) {
  int zero_blocks = 0;
  for (const Problem& p : ps) {
    Inputs in = inputs(p, ++seed);
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      Tensor xr = in.xd.to(dt).to(DType::f64), yr = in.yd.to(dt).to(DType::f64);
      for (const Mode& m : kModes) {
        INFO(m.name << " " << describe(p) << " " << dtype_name(dt));
        Tensor out = apply(m, p, input_of(in.xd.to(dt), p.lx, m.x_sparse), input_of(in.yd.to(dt), p.ly, m.y_sparse));
        REQUIRE(out.dtype() == dt);
        tgt::require_close(logical(out.to(DType::f64), p.lo, m.out_sparse), reference(m, p, xr, yr), rtol_16(dt),
                           atol_16(dt, p.K()));
        zero_blocks += require_exact_zeros(m, p, out.to(DType::f64));
      }
    }
  }
  return zero_blocks;
}

}  // namespace

TEST_CASE("sparse matmul: f32, bf16 and f16 accumulate in f32", "[ops][sparse_matmul]") {
  // every problem of problems() (non-square, batch 1-3, empty x / output layouts, empty
  // block-rows and -columns, k without overlap)
  std::uint64_t seed = 3000;
  int zero_blocks = 0;
  for (std::int64_t bs : {2, 16, 32}) {
    seed += 100;
    zero_blocks += check_dtype_forward(problems(bs, seed), seed + 50);
  }
  REQUIRE(zero_blocks > 0);  // the problems do hold such blocks
}

TEST_CASE("sparse matmul: f32, bf16 and f16 accumulate in f32 at block 64", "[ops][sparse_matmul]") {
  // the kinds of problems() on grids of one or two blocks a side
  REQUIRE(check_dtype_forward(small_problems(64, 3600), 3650) > 0);
}

TEST_CASE("sparse matmul: f32, bf16 and f16 accumulate in f32 at block 128", "[ops][sparse_matmul]") {
  REQUIRE(check_dtype_forward(small_problems(128, 3700), 3750) > 0);
}

TEST_CASE("sparse matmul: gradients match masked f64 references", "[ops][sparse_matmul]") {
  // loss = sum(W ⊙ out): dx = (W · yᵀ) on x's blocks, dy = (xᵀ · W) on y's blocks, with W,
  // x and y masked by their layouts.
  std::uint64_t seed = 5000;
  for (std::int64_t bs : {1, 16}) {
    for (const Problem& p : problems(bs, seed += 100)) {
      Inputs in = inputs(p, ++seed);
      Tensor wd = tgt::rand64({p.B(), p.M(), p.N()}, ++seed);
      for (const Mode& m : kModes) {
        INFO(m.name << " " << describe(p));
        Tensor xin = input_of(in.xd, p.lx, m.x_sparse).requires_grad_();
        Tensor yin = input_of(in.yd, p.ly, m.y_sparse).requires_grad_();
        Tensor win = input_of(wd, p.lo, m.out_sparse);
        sum(mul(apply(m, p, xin, yin), win)).backward();
        const auto xv = host(in.xd, p.lx, m.x_sparse), yv = host(in.yd, p.ly, m.y_sparse);
        const auto wv = host(wd, p.lo, m.out_sparse);
        // dx [B, M, K] = W [B, M, N] · yᵀ; dy [B, K, N] = xᵀ · W
        Tensor dx = reference_mm(wv, yv, p.B(), p.M(), p.N(), p.K(), false, true, m.x_sparse ? &p.lx : nullptr, 0.0);
        Tensor dy = reference_mm(xv, wv, p.B(), p.K(), p.M(), p.N(), true, false, m.y_sparse ? &p.ly : nullptr, 0.0);
        REQUIRE(xin.grad().shape() == xin.shape());
        REQUIRE(yin.grad().shape() == yin.shape());
        tgt::require_close(logical(xin.grad(), p.lx, m.x_sparse, 0.0), dx, 1e-12, 1e-12);
        tgt::require_close(logical(yin.grad(), p.ly, m.y_sparse, 0.0), dy, 1e-12, 1e-12);
      }
    }
  }
}

TEST_CASE("sparse matmul gradcheck, every mode", "[ops][sparse_matmul][gradcheck]") {
  // 2x2 blocks; x lacks block-row 1, y lacks block-column 0, the output lacks (1, 1)
  const std::int64_t B = 2, Mb = 2, Kb = 3, Nb = 2, bs = 2;
  Problem p{tgt::layout_where(B, Mb, Kb, bs, [](auto b, auto r, auto c) { return (r == 0 || c == b) && c != 2 - b; }),
            tgt::layout_where(B, Kb, Nb, bs, [](auto b, auto r, auto c) { return c != 0 || r == b; }),
            tgt::layout_where(B, Mb, Nb, bs, [](auto, auto r, auto c) { return r != 1 || c != 1; })};
  Inputs in = inputs(p, 77);
  for (const Mode& m : kModes) {
    INFO(m.name);
    Tensor xin = input_of(in.xd, p.lx, m.x_sparse).requires_grad_();
    Tensor yin = input_of(in.yd, p.ly, m.y_sparse).requires_grad_();
    check_gradcheck(m.name, [&](const std::vector<Tensor>& v) { return apply(m, p, v[0], v[1]); }, {xin, yin});
    // one argument requiring grad at a time
    Tensor xc = xin.detach(), yc = yin.detach();
    check_gradcheck(m.name, [&](const std::vector<Tensor>& v) { return apply(m, p, v[0], yc); }, {xin});
    check_gradcheck(m.name, [&](const std::vector<Tensor>& v) { return apply(m, p, xc, v[0]); }, {yin});
  }
  // chained: a sparse product feeding another (the backward of a sparse output reaching
  // a sparse input), at block size 1
  Layout l1 = random_layout(1, 3, 4, 1, 0.6, 5), l2 = random_layout(1, 4, 3, 1, 0.6, 6);
  Layout l3 = random_layout(1, 3, 3, 1, 0.7, 7);
  Tensor a = tgt::rand64({l1.n_blocks(), 1, 1}, 8).requires_grad_();
  Tensor b = tgt::rand64({1, 4, 3}, 9).requires_grad_();
  Tensor c = tgt::rand64({l2.n_blocks(), 1, 1}, 10).requires_grad_();
  check_gradcheck("chain",
                  [&](const std::vector<Tensor>& v) {
                    BlockSparseTensor s = matmul(BlockSparseTensor(v[0], l1), v[1], l3);              // [1, 3, 3]
                    BlockSparseTensor s2 = matmul(transpose(v[1]), BlockSparseTensor(v[2], l2), l3);  // [1, 3, 3]
                    return matmul(s, s2);
                  },
                  {a, b, c});
}

namespace {

// directional_gradcheck of mode m.
void check_directional(const Mode& m, const Problem& p, const Tensor& x0, const Tensor& y0, std::int64_t k,
                       std::uint64_t seed) {
  auto r = directional_gradcheck([&](const Tensor& x, const Tensor& y) { return apply(m, p, x, y); }, x0, y0, k, seed);
  INFO(m.name << " along " << k << " directions per operand: " << r.report);
  REQUIRE(r.ok);
}

}  // namespace

TEST_CASE("sparse matmul gradcheck at blocks 16 and 32, every mode, element by element",
          "[ops][sparse_matmul][gradcheck]") {
  // block 16: x [1, 32, 32] without block (1, 0), y [1, 32, 16] without block (1, 0), the
  // output without block (1, 0): a k-block missing from y, an output block-row left out.
  // block 32: x [1, 32, 64], y [1, 64, 32] without block (1, 0): x's second k-block meets no
  // y block. (Two products an element: block 64 takes the directional check below.)
  const Problem p16 = gradcheck_problem(1, 2, 2, 1, 16), p32 = gradcheck_problem(1, 1, 2, 1, 32);
  REQUIRE(p16.lx.n_blocks() == 3);
  REQUIRE(p16.ly.n_blocks() == 1);
  REQUIRE(p16.lo.n_blocks() == 1);
  REQUIRE(p32.lx.n_blocks() == 2);
  REQUIRE(p32.ly.n_blocks() == 1);
  for (const Problem& p : {p16, p32}) {
    Inputs in = inputs(p, 91);
    for (const Mode& m : kModes) {
      INFO(m.name << " " << describe(p));
      Tensor xin = input_of(in.xd, p.lx, m.x_sparse).requires_grad_();
      Tensor yin = input_of(in.yd, p.ly, m.y_sparse).requires_grad_();
      check_gradcheck(m.name, [&](const std::vector<Tensor>& v) { return apply(m, p, v[0], v[1]); }, {xin, yin});
    }
  }
}

TEST_CASE("sparse matmul gradcheck at blocks 16 to 128, every mode, along random directions",
          "[ops][sparse_matmul][gradcheck]") {
  // 2x2 by 2x2 blocks with a block missing from x, y and the output; two batches (each
  // missing other blocks) at 16 and 32, one at 64 and 128
  std::uint64_t seed = 95;
  for (std::int64_t bs : {16, 32, 64, 128}) {
    const Problem p = gradcheck_problem(bs <= 32 ? 2 : 1, 2, 2, 2, bs);
    Inputs in = inputs(p, seed += 10);
    for (const Mode& m : kModes) {
      INFO(describe(p));
      check_directional(m, p, input_of(in.xd, p.lx, m.x_sparse), input_of(in.yd, p.ly, m.y_sparse), 3, ++seed);
    }
  }
}

TEST_CASE("sparse matmul gradcheck along random directions fails for a wrong gradient",
          "[ops][sparse_matmul][gradcheck]") {
  // the directional check's own control: the op's output plus sum(c * (x - x.detach())) on
  // every element is the same value, with x's gradient off at one element by c = 1e-6 times
  // the sum of the projection weights; the check must catch that
  const Problem p = gradcheck_problem(1, 2, 2, 2, 16);
  Inputs in = inputs(p, 97);
  const Mode& m = kModes[0];  // SDD
  std::vector<double> bump(static_cast<std::size_t>(in.xd.numel()), 0.0);
  bump[17] = 1e-6;
  const Tensor c = from_vector(bump, in.xd.shape());
  auto exact =
      directional_gradcheck([&](const Tensor& x, const Tensor& y) { return apply(m, p, x, y); }, in.xd, in.yd, 3, 98);
  INFO(exact.report);
  REQUIRE(exact.ok);
  auto wrong = directional_gradcheck(
      [&](const Tensor& x, const Tensor& y) { return add(apply(m, p, x, y), sum(mul(c, sub(x, x.detach())))); }, in.xd,
      in.yd, 3, 98);
  INFO(wrong.report);
  REQUIRE_FALSE(wrong.ok);
}

namespace {

// out.backward(W) of every mode in f32, bf16 and f16: dx = (W · yᵀ) on x's blocks, dy =
// (xᵀ · W) on y's blocks, against f64 loops over the same rounded x, y and W.
void check_dtype_backward(const std::vector<Problem>& ps, std::uint64_t seed) {
  for (const Problem& p : ps) {
    Inputs in = inputs(p, ++seed);
    Tensor wd = tgt::rand64({p.B(), p.M(), p.N()}, ++seed);
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      const Tensor xr = in.xd.to(dt).to(DType::f64), yr = in.yd.to(dt).to(DType::f64), wr = wd.to(dt).to(DType::f64);
      for (const Mode& m : kModes) {
        INFO(m.name << " " << describe(p) << " " << dtype_name(dt));
        Tensor xin = input_of(in.xd.to(dt), p.lx, m.x_sparse).requires_grad_();
        Tensor yin = input_of(in.yd.to(dt), p.ly, m.y_sparse).requires_grad_();
        apply(m, p, xin, yin).backward(input_of(wd.to(dt), p.lo, m.out_sparse));
        REQUIRE(xin.grad().dtype() == dt);
        REQUIRE(yin.grad().dtype() == dt);
        REQUIRE(xin.grad().shape() == xin.shape());
        REQUIRE(yin.grad().shape() == yin.shape());
        const auto xv = host(xr, p.lx, m.x_sparse), yv = host(yr, p.ly, m.y_sparse), wv = host(wr, p.lo, m.out_sparse);
        // dx [B, M, K] = W [B, M, N] · yᵀ (N terms); dy [B, K, N] = xᵀ · W (M terms)
        Tensor dx = reference_mm(wv, yv, p.B(), p.M(), p.N(), p.K(), false, true, m.x_sparse ? &p.lx : nullptr, 0.0);
        Tensor dy = reference_mm(xv, wv, p.B(), p.K(), p.M(), p.N(), true, false, m.y_sparse ? &p.ly : nullptr, 0.0);
        {
          INFO("dx");
          tgt::require_close(logical(xin.grad().to(DType::f64), p.lx, m.x_sparse, 0.0), dx, rtol_16(dt),
                             atol_16(dt, p.N()));
        }
        {
          INFO("dy");
          tgt::require_close(logical(yin.grad().to(DType::f64), p.ly, m.y_sparse, 0.0), dy, rtol_16(dt),
                             atol_16(dt, p.M()));
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("sparse matmul: f32, bf16 and f16 gradients match masked f64 references", "[ops][sparse_matmul]") {
  std::uint64_t seed = 6000;
  for (std::int64_t bs : {2, 16, 32}) {
    seed += 100;
    check_dtype_backward(problems(bs, seed), seed + 50);
  }
}

TEST_CASE("sparse matmul: f32, bf16 and f16 gradients match masked f64 references at block 64",
          "[ops][sparse_matmul]") {
  check_dtype_backward(small_problems(64, 6600), 6650);  // the kinds of problems(), one or two blocks a side
}

TEST_CASE("sparse matmul: f32, bf16 and f16 gradients match masked f64 references at block 128",
          "[ops][sparse_matmul]") {
  check_dtype_backward(small_problems(128, 6700), 6750);
}

TEST_CASE("sparse matmul on the CPU: panels on the packed GEMM match the f64 references, forward and gradients",
          "[ops][sparse_matmul]") {
  // every problem kind at blocks 2 to 128 with the packed GEMM forced (the automatic choice
  // gives it only panels of 2^20 multiply-adds): panels of one tile and of many, op(A) packed
  // and read in place, f32 and the widened bf16 / f16
  if (!ops::packed_sgemm_available()) TG_SKIP("this CPU lacks AVX2 or FMA: the packed GEMM cannot run here");
  const tgt::ForceCpuGemm packed(ops::CpuGemm::Packed);
  std::uint64_t seed = 7800;
  int zero_blocks = 0;
  for (std::int64_t bs : {2, 16, 32}) {
    seed += 100;
    zero_blocks += check_dtype_forward(problems(bs, seed), seed + 50);
    check_dtype_backward(problems(bs, seed + 60), seed + 70);
  }
  for (std::int64_t bs : {64, 128}) {
    seed += 100;
    zero_blocks += check_dtype_forward(small_problems(bs, seed), seed + 50);
    check_dtype_backward(small_problems(bs, seed + 60), seed + 70);
  }
  REQUIRE(zero_blocks > 0);
}

TEST_CASE("sparse matmul: plans are built once per structure", "[ops][sparse_matmul]") {
  Layout lx = random_layout(2, 3, 4, 16, 0.5, 1), ly = random_layout(2, 4, 2, 16, 0.5, 2);
  Layout lx2 = random_layout(2, 3, 4, 16, 0.5, 1);  // equal masks, another object
  ops::OperandDesc a{lx, 2, 48, 64, false}, a2{lx2, 2, 48, 64, false}, b{ly, 2, 64, 32, false};
  ops::OperandDesc c{Layout(), 2, 48, 32, false};
  auto p1 = ops::matmul_plan(a, b, c, 16), p2 = ops::matmul_plan(a2, b, c, 16);
  REQUIRE(p1 == p2);
  ops::OperandDesc bt{ly.transposed(), 2, 32, 64, true};  // ly's transpose read transposed: same product
  auto p3 = ops::matmul_plan(a, bt, c, 16);
  REQUIRE(p3 != p1);
  REQUIRE(p3->pair_begin == p1->pair_begin);
  REQUIRE(p1->n_out == 2 * 3 * 2);
  // every pair's k and every output's (b, i, j) name the tiles the pair multiplies
  REQUIRE(p1->out_coord.size() == at(3 * p1->n_out));
  REQUIRE(p1->pair_k.size() == at(p1->n_pairs()));
  for (std::int64_t o = 0; o < p1->n_out; ++o) {
    const std::int32_t b = p1->out_coord[at(3 * o)], i = p1->out_coord[at(3 * o + 1)], j = p1->out_coord[at(3 * o + 2)];
    REQUIRE(o == (b * 3 + i) * 2 + j);  // the dense output's tile grid
    for (std::int32_t q = p1->pair_begin[at(o)]; q < p1->pair_begin[at(o + 1)]; ++q) {
      const std::int32_t k = p1->pair_k[at(q)];
      REQUIRE(lx.active(b, i, k));
      REQUIRE(ly.active(b, k, j));
      REQUIRE((q == p1->pair_begin[at(o)] || p1->pair_k[at(q - 1)] < k));  // increasing k
    }
  }
}

namespace {

// Integer "values" of x and y tiles by id, for checking on the host that a schedule sums
// exactly each output's pairs (sums of products of these are exact in i64).
std::int64_t tile_value_x(std::int64_t id) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(id) * 2654435761u) % 97) + 1;
}
std::int64_t tile_value_y(std::int64_t id) {
  return static_cast<std::int64_t>((static_cast<std::uint64_t>(id) * 40503u) % 89) + 1;
}

// Problems for the host-side schedule checks (block 16): partial, full (with a wide
// `full_n` block-row) and sparse layouts, then the edge cases of problems().
std::vector<Problem> schedule_problems(std::uint64_t seed, std::int64_t full_n) {
  const std::int64_t bs = 16;
  std::vector<Problem> ps = {problem(2, 5, 6, 3, bs, 0.5, 0.6, 0.5, seed),
                             problem(1, 4, full_n, full_n - 2, bs, 1.0, 1.0, 1.0, seed + 5),
                             problem(2, 7, 4, 6, bs, 0.2, 0.3, 0.25, seed + 10)};
  for (const Problem& pr : problems(bs, seed + 20)) ps.push_back(pr);
  return ps;
}

}  // namespace

TEST_CASE("sparse matmul: grouped regions sum exactly each output's pairs", "[ops][sparse_matmul]") {
  // The schedule of the grouped CUDA path, checked on the host: with integer tile "values"
  // va(id), vb(id), every stored output tile must get exactly the sum over its pairs from
  // its region's steps (ids -1 contributing nothing), and appear in exactly one region.
  const auto va = tile_value_x, vb = tile_value_y;
  const std::int64_t bs = 16;
  for (const Problem& p : schedule_problems(7100, 6)) {
    for (const Mode& m : kModes) {
      for (const bool ta : {false, true}) {
        // x read transposed: the same product from x's transposed storage
        ops::OperandDesc a = ta ? ops::OperandDesc{m.x_sparse ? p.lx.transposed() : Layout(), p.B(), p.K(), p.M(), true}
                                : ops::OperandDesc{m.x_sparse ? p.lx : Layout(), p.B(), p.M(), p.K(), false};
        ops::OperandDesc b{m.y_sparse ? p.ly : Layout(), p.B(), p.K(), p.N(), false};
        ops::OperandDesc c{m.out_sparse ? p.lo : Layout(), p.B(), p.M(), p.N(), false};
        const auto plan = ops::matmul_plan(a, b, c, bs);
        for (auto [gm, gn] : {std::pair<std::int64_t, std::int64_t>{2, 2}, {1, 2}, {2, 1}, {4, 4}, {2, 4}, {4, 2}}) {
          INFO(m.name << (ta ? " x transposed " : " ") << describe(p) << " regions " << gm << "x" << gn);
          const ops::RegionSchedule r = ops::region_schedule(*plan, gm, gn);
          REQUIRE(r.items.size() == at(4 * r.n_regions));
          REQUIRE(r.outs.size() == at(gm * gn * r.n_regions));
          REQUIRE(r.steps.size() == at((gm + gn) * r.total_steps));
          REQUIRE(r.work == r.total_steps * gm * gn);
          std::vector<int> times(at(plan->n_out), 0);
          for (std::int64_t g = 0; g < r.n_regions; ++g) {
            const std::int32_t* it = &r.items[at(4 * g)];
            REQUIRE(it[0] == g);
            REQUIRE(it[3] == -1);
            REQUIRE(it[2] - it[1] <= r.max_steps);
            for (std::int64_t gi = 0; gi < gm; ++gi)
              for (std::int64_t gj = 0; gj < gn; ++gj) {
                const std::int32_t o = r.outs[at(g * gm * gn + gi * gn + gj)];
                if (o < 0) continue;
                ++times[at(o)];
                std::int64_t want = 0, got = 0;
                for (std::int32_t q = plan->pair_begin[at(o)]; q < plan->pair_begin[at(o + 1)]; ++q)
                  want += va(plan->pair_a[at(q)]) * vb(plan->pair_b[at(q)]);
                for (std::int32_t st = it[1]; st < it[2]; ++st) {
                  const std::int32_t ia = r.steps[at(st * (gm + gn) + gi)], ib = r.steps[at(st * (gm + gn) + gm + gj)];
                  if (ia >= 0 && ib >= 0) got += va(ia) * vb(ib);
                }
                REQUIRE(got == want);
              }
          }
          for (std::int64_t o = 0; o < plan->n_out; ++o) REQUIRE(times[at(o)] == 1);
        }
      }
    }
  }
}

TEST_CASE("sparse matmul: pairs of row groups pair each row with the row sharing most of its columns",
          "[ops][sparse_matmul]") {
  // SDD, 7 block-rows x 8 block-columns, groups of 4: row 0 shares 4 columns with rows 2 and
  // 3 and takes row 2 (the first of equals), then pairs again with row 3 on its last tile
  // (column 5, which spares both a group of one line); row 1 then shares {1, 2, 3, 4} with
  // row 3. Rows 4 and 5 are equal rows of 2 tiles: one group of two lines of 2 spares each a
  // group. Row 6 shares 1 of its 2 with row 4, which would spare it nothing.
  const std::int64_t bs = 16, mb = 7;
  const std::vector<std::vector<int>> rows = {{0, 1, 2, 3, 5}, {1, 2, 3, 4, 6, 7}, {0, 1, 2, 3, 6}, {1, 2, 3, 4, 5},
                                              {0, 1},          {0, 1},          {1, 7}};
  std::vector<bool> mask(static_cast<std::size_t>(mb * 8), false);
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (const int j : rows[i]) mask[i * 8 + static_cast<std::size_t>(j)] = true;
  const Layout lo(from_vector(mask, {1, mb, 8}), bs);
  const ops::OperandDesc a{Layout(), 1, mb * bs, 3 * bs, false}, b{Layout(), 1, 3 * bs, 8 * bs, false},
      c{lo, 1, mb * bs, 8 * bs, false};
  const auto plan = ops::matmul_plan(a, b, c, bs);
  const ops::RowGroupSchedule r = ops::row_group_schedule(*plan, 4, 1000, ops::GroupAxis::Rows, 2);
  // (row, column) of each group's line 0 then line 1 members, (-1, -1) for none
  auto tile = [&](std::int32_t o) -> std::array<std::int32_t, 2> {
    if (o < 0) return {-1, -1};
    return {plan->out_coord[at(3 * o + 1)], plan->out_coord[at(3 * o + 2)]};
  };
  std::vector<std::vector<std::array<std::int32_t, 2>>> got;
  for (std::int64_t gr = 0; gr < r.n_groups; ++gr) {
    std::vector<std::array<std::int32_t, 2>> members;
    for (std::int64_t q = 0; q < 8; ++q) members.push_back(tile(r.outs[at(gr * 9 + q)]));
    got.push_back(members);
  }
  using T = std::array<std::int32_t, 2>;
  const T none{-1, -1};
  const std::vector<std::vector<T>> want = {
      {{0, 0}, {0, 1}, {0, 2}, {0, 3}, {2, 0}, {2, 1}, {2, 2}, {2, 3}},
      {{0, 5}, none, none, none, {3, 5}, none, none, none},
      {{1, 1}, {1, 2}, {1, 3}, {1, 4}, {3, 1}, {3, 2}, {3, 3}, {3, 4}},
      {{1, 6}, {1, 7}, none, none, none, none, none, none},
      {{2, 6}, none, none, none, none, none, none, none},
      {{4, 0}, {4, 1}, none, none, {5, 0}, {5, 1}, none, none},
      {{6, 1}, {6, 7}, none, none, none, none, none, none}};
  REQUIRE(got == want);
  REQUIRE(r.paired_steps == 4 * 3);  // four groups of two lines, 3 k steps each
  REQUIRE(r.members == plan->n_out);
}

TEST_CASE("sparse matmul: a row pairs again on what its first partner left", "[ops][sparse_matmul]") {
  // SDD, 3 block-rows x 8 block-columns, groups of 4: row 0 shares {0, 1, 2, 3} with row 1
  // and {4, 5, 6, 7} with row 2. It pairs with row 1, then with row 2 in a group of its own
  // (with one partner a row, its other four tiles and row 2's would run as two groups of one
  // line).
  const std::int64_t bs = 16;
  const std::vector<std::vector<int>> rows = {{0, 1, 2, 3, 4, 5, 6, 7}, {0, 1, 2, 3}, {4, 5, 6, 7}};
  std::vector<bool> mask(24, false);
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (const int j : rows[i]) mask[i * 8 + static_cast<std::size_t>(j)] = true;
  const Layout lo(from_vector(mask, {1, 3, 8}), bs);
  const ops::OperandDesc a{Layout(), 1, 3 * bs, 2 * bs, false}, b{Layout(), 1, 2 * bs, 8 * bs, false},
      c{lo, 1, 3 * bs, 8 * bs, false};
  const auto plan = ops::matmul_plan(a, b, c, bs);
  auto lines = [&](const ops::RowGroupSchedule& r) {
    // per group: the block-rows of its two lines (-1: none)
    std::vector<std::array<std::int32_t, 2>> out;
    for (std::int64_t gr = 0; gr < r.n_groups; ++gr) {
      const std::int32_t l0 = r.outs[at(gr * 9)], l1 = r.outs[at(gr * 9 + 4)];
      out.push_back({plan->out_coord[at(3 * l0 + 1)], l1 < 0 ? -1 : plan->out_coord[at(3 * l1 + 1)]});
    }
    return out;
  };
  using L = std::vector<std::array<std::int32_t, 2>>;
  const ops::RowGroupSchedule r = ops::row_group_schedule(*plan, 4, 1000, ops::GroupAxis::Rows, 2);
  CHECK(lines(r) == L{{0, 1}, {0, 2}});
  CHECK(r.paired_steps == 4);
  CHECK(r.members == plan->n_out);
}

TEST_CASE("sparse matmul: rows of different k lists pair over the union of their lists", "[ops][sparse_matmul]") {
  // DSD, x of 3 block-rows over 7 k-blocks, y dense with 4 block-columns, groups of 4: rows 0
  // ({0, 1, 2, 3}) and 1 ({0, 1, 2, 4}) share 3 of their k-blocks, so one group of two lines
  // over the 5 of the union (8 steps alone against 3 kPairStep + 2 kLoneStep = 5.9) saves
  // steps; row 2 ({5, 6}) shares none with either and stays alone. Each line of the pair
  // has no x tile at the other's own k-block, which its item's group says.
  const auto plan = union_pair_plan();
  const ops::RowGroupSchedule r = ops::row_group_schedule(*plan, 4, 1000, ops::GroupAxis::Rows, 2);
  REQUIRE(r.n_groups == 2);
  REQUIRE(r.n_items == 2);
  const std::int64_t no = 2 * 4 + 1, w = 2 + 4;
  auto row_of = [&](std::int32_t o) { return o < 0 ? -1 : plan->out_coord[at(3 * o + 1)]; };
  CHECK(row_of(r.outs[0]) == 0);
  CHECK(row_of(r.outs[4]) == 1);
  CHECK(r.items[0] == 0 + ops::kSitsOut);  // a line sits a step out
  CHECK(row_of(r.outs[at(no)]) == 2);
  CHECK(r.outs[at(no + 4)] == -1);
  CHECK(r.items[4] == -1 - 1);  // a group of one line
  CHECK(r.paired_steps == 5);
  CHECK(r.lone_steps == 2);
  // the pair's steps: the k-block of each line's x tile (-1: none), k 0 .. 4
  // (x's tiles are its stored blocks, in row-major order)
  const std::vector<int> stored_k = {0, 1, 2, 3, 0, 1, 2, 4, 5, 6};
  auto k_of = [&](std::int32_t tile) { return tile < 0 ? -1 : stored_k[at(tile)]; };
  std::vector<std::array<int, 2>> got;
  for (std::int32_t st = r.items[1]; st < r.items[2]; ++st)
    got.push_back({k_of(r.steps[at(st * w)]), k_of(r.steps[at(st * w + 1)])});
  CHECK(got == std::vector<std::array<int, 2>>{{0, 0}, {1, 1}, {2, 2}, {3, -1}, {-1, 4}});
}

TEST_CASE("sparse matmul: row and column groups sum exactly each output's pairs, split pieces included",
          "[ops][sparse_matmul]") {
  // The schedule of the wide Hopper tiles, checked on the host as the regions are: with
  // integer tile "values", each output tile must get exactly the sum over its pairs from
  // its group's steps, summed over the group's pieces (a piece's partial goes to slot
  // item slot + member * pieces, the slots the reduce entry of that output lists), and
  // appear in exactly one group; a line's members share a block-row and their x tiles (row
  // groups) or a block-column and their y tiles (column groups); the two lines of a pair
  // share the batch and each slot's other coordinate; a line of a pair without a shared tile
  // at a step (their k lists differ) adds nothing there.
  const auto va = tile_value_x, vb = tile_value_y;
  const std::int64_t bs = 16;
  bool grouped_some[2] = {false, false}, paired_some[2] = {false, false}, sat_out_some[2] = {false, false};
  bool split_some = false, mixed_some = false;
  for (const Problem& p : schedule_problems(7300, 9)) {
    for (const Mode& m : kModes) {
      const ops::OperandDesc a{m.x_sparse ? p.lx : Layout(), p.B(), p.M(), p.K(), false};
      const ops::OperandDesc b{m.y_sparse ? p.ly : Layout(), p.B(), p.K(), p.N(), false};
      const ops::OperandDesc c{m.out_sparse ? p.lo : Layout(), p.B(), p.M(), p.N(), false};
      const auto plan = ops::matmul_plan(a, b, c, bs);
      for (const ops::GroupAxis axis : {ops::GroupAxis::Rows, ops::GroupAxis::Columns}) {
        const bool cols = axis == ops::GroupAxis::Columns;
        const int line = cols ? 2 : 1, cross = cols ? 1 : 2;
        // (g, gm, chunk)
        for (auto [g, gm, chunk] : {std::array<std::int64_t, 3>{1, 1, 1000},
                                    {2, 1, 1000},
                                    {4, 1, 1000},
                                    {2, 1, 2},
                                    {4, 1, 3},
                                    {4, 2, 1000},
                                    {2, 2, 3},
                                    {1, 2, 1000}}) {
          INFO(m.name << " " << describe(p) << " g " << g << " gm " << gm << " chunk " << chunk
                      << (cols ? " columns" : " rows"));
          const ops::RowGroupSchedule r = ops::row_group_schedule(*plan, g, chunk, axis, gm);
          REQUIRE(r.axis == axis);
          // the counts alone are the whole schedule's, without its tables
          const ops::RowGroupSchedule rc = ops::row_group_schedule(*plan, g, chunk, axis, gm, true);
          REQUIRE((rc.items.empty() && rc.steps.empty() && rc.outs.empty() && rc.reduce.empty()));
          REQUIRE(rc.n_groups == r.n_groups);
          REQUIRE(rc.n_items == r.n_items);
          REQUIRE(rc.n_steps == r.n_steps);
          REQUIRE(rc.n_slots == r.n_slots);
          REQUIRE(rc.members == r.members);
          REQUIRE(rc.paired_steps == r.paired_steps);
          REQUIRE(rc.lone_steps == r.lone_steps);
          REQUIRE(r.gm == gm);
          const std::int64_t w = gm + g, no = gm * g + 1;  // steps and outs entries a row
          REQUIRE(r.items.size() == at(4 * r.n_items));
          REQUIRE(r.outs.size() == at(no * r.n_groups));
          REQUIRE(r.steps.size() == at(w * r.n_steps));
          REQUIRE(r.members == plan->n_out);
          std::vector<std::int64_t> slot_sum(at(r.n_slots), 0), direct(at(plan->n_out), -1);
          std::vector<int> times(at(plan->n_out), 0);
          for (std::int64_t t = 0; t < r.n_items; ++t) {
            const std::int32_t* it = &r.items[at(4 * t)];
            // groups of one line where gm is 2 come as -1 - group, those of two as the group
            // (+ kSitsOut where a line sits a step out)
            const std::int32_t group = it[0] < 0 ? -1 - it[0] : it[0] % ops::kSitsOut;
            REQUIRE((it[0] < 0) == (gm == 2 && r.outs[at(group * no + g)] < 0));
            const std::int32_t* outs = &r.outs[at(group * no)];
            const std::int32_t pieces = outs[gm * g];
            REQUIRE(it[1] <= it[2]);
            REQUIRE((pieces == 1) == (it[3] < 0));
            for (std::int64_t i = 0; i < gm; ++i)
              for (std::int64_t mm = 0; mm < g; ++mm) {
                const std::int32_t o = outs[i * g + mm];
                if (o < 0) continue;
                const std::int32_t first = outs[i * g], top = outs[mm];
                REQUIRE(first >= 0);
                REQUIRE(top >= 0);
                REQUIRE(plan->out_coord[at(3 * o)] == plan->out_coord[at(3 * outs[0])]);
                REQUIRE(plan->out_coord[at(3 * o + line)] == plan->out_coord[at(3 * first + line)]);
                REQUIRE(plan->out_coord[at(3 * o + cross)] == plan->out_coord[at(3 * top + cross)]);
                std::int64_t got = 0;
                for (std::int32_t st = it[1]; st < it[2]; ++st) {
                  const std::int32_t shared = r.steps[at(st * w + i)], own = r.steps[at(st * w + gm + mm)];
                  // a line without a shared tile sits the step out (as the kernel does)
                  if (shared < 0) continue;
                  REQUIRE(own >= 0);
                  got += cols ? va(own) * vb(shared) : va(shared) * vb(own);
                }
                if (it[3] < 0) {
                  direct[at(o)] = got;
                } else {
                  slot_sum[at(it[3] + (i * g + mm) * pieces)] += got;
                }
              }
          }
          for (std::size_t q = 0; q < r.reduce.size(); q += 3) {
            split_some = true;
            const std::int32_t o = r.reduce[q];
            REQUIRE(direct[at(o)] < 0);
            direct[at(o)] = 0;
            for (std::int32_t sl = r.reduce[q + 1]; sl < r.reduce[q + 1] + r.reduce[q + 2]; ++sl)
              direct[at(o)] += slot_sum[at(sl)];
          }
          std::int64_t paired_steps = 0, lone_steps = 0;
          std::vector<int> sits_out(at(r.n_groups), 0), flagged(at(r.n_groups), -1);
          for (std::int64_t t = 0; t < r.n_items; ++t) {
            const std::int32_t* it = &r.items[at(4 * t)];
            const std::int32_t group = it[0] < 0 ? -1 - it[0] : it[0] % ops::kSitsOut;
            const int flag = it[0] >= ops::kSitsOut ? 1 : 0;
            REQUIRE((flagged[at(group)] < 0 || flagged[at(group)] == flag));  // the same in every piece
            flagged[at(group)] = flag;
            if (gm == 2 && it[0] >= 0) paired_steps += it[2] - it[1];
            for (std::int32_t st = it[1]; st < it[2]; ++st) {
              // every step has work for a line; in a group of two lines, for one or both
              const bool l0 = r.steps[at(st * w)] >= 0, l1 = gm == 2 && it[0] >= 0 && r.steps[at(st * w + 1)] >= 0;
              REQUIRE((l0 || l1));
              if (gm == 2 && it[0] >= 0 && !(l0 && l1)) {
                sits_out[at(group)] = 1;
                ++lone_steps;
              }
              if (gm == 2 && it[0] < 0) REQUIRE(r.steps[at(st * w + 1)] == -1);
            }
          }
          for (std::int64_t gr = 0; gr < r.n_groups; ++gr) {
            // the items' flag says whether a line of the group sits a step out
            if (flagged[at(gr)] >= 0) REQUIRE(flagged[at(gr)] == sits_out[at(gr)]);
            if (sits_out[at(gr)] != 0) sat_out_some[cols] = true;
          }
          REQUIRE(r.paired_steps == paired_steps);
          REQUIRE(r.lone_steps == lone_steps);
          if (paired_steps > 0 && paired_steps < r.n_steps) mixed_some = true;
          for (std::int64_t gr = 0; gr < r.n_groups; ++gr) {
            // The kernel takes a group whose second line's first slot is empty for one of
            // one line; the two lines of a group have the same slots.
            if (gm == 2) {
              const bool two = r.outs[at(gr * no + g)] >= 0;
              for (std::int64_t mm = 0; mm < g; ++mm)
                REQUIRE((r.outs[at(gr * no + g + mm)] >= 0) == (two && r.outs[at(gr * no + mm)] >= 0));
            }
            int n = 0, lines = 0;
            for (std::int64_t i = 0; i < gm; ++i) {
              bool any = false;
              for (std::int64_t mm = 0; mm < g; ++mm) {
                const std::int32_t o = r.outs[at(gr * no + i * g + mm)];
                if (o < 0) continue;
                ++times[at(o)];
                ++n;
                any = true;
              }
              lines += any ? 1 : 0;
            }
            if (n > lines) grouped_some[cols] = true;
            if (lines > 1) paired_some[cols] = true;
          }
          for (std::int64_t o = 0; o < plan->n_out; ++o) {
            REQUIRE(times[at(o)] == 1);
            std::int64_t want = 0;
            for (std::int32_t q = plan->pair_begin[at(o)]; q < plan->pair_begin[at(o + 1)]; ++q)
              want += va(plan->pair_a[at(q)]) * vb(plan->pair_b[at(q)]);
            REQUIRE(direct[at(o)] == want);
          }
        }
      }
    }
  }
  // the cases do exercise groups of several tiles and of two lines along both axes, and
  // split pieces
  REQUIRE(grouped_some[0]);
  REQUIRE(grouped_some[1]);
  REQUIRE(paired_some[0]);
  REQUIRE(paired_some[1]);
  REQUIRE(sat_out_some[0]);  // pairs of lines over the union of different k lists
  REQUIRE(sat_out_some[1]);
  REQUIRE(split_some);
  REQUIRE(mixed_some);  // schedules with groups of two lines and of one
}

TEST_CASE("sparse matmul bad inputs", "[ops][sparse_matmul]") {
  const Layout lx = full_layout(2, 3, 4, 16), ly = full_layout(2, 4, 2, 16), lo = full_layout(2, 3, 2, 16);
  const BlockSparseTensor x(zeros({24, 16, 16}), lx), y(zeros({16, 16, 16}), ly);
  const Tensor xd = zeros({2, 48, 64}), yd = zeros({2, 64, 32});
  // ranks
  tgt::require_throws<ShapeError>([&] { matmul(zeros({48, 64}), yd, lo); }, {"matmul", "x", "3-d", "[48, 64]"});
  tgt::require_throws<ShapeError>([&] { matmul(x, zeros({64, 32})); }, {"matmul", "y", "3-d", "[64, 32]"});
  // inner extents
  tgt::require_throws<ShapeError>(
      [&] {
        matmul(xd, zeros({2, 48, 32}), lo);
      },
      {"matmul", "inner", "x has K=64", "y has K=48"});
  const BlockSparseTensor y3(zeros({12, 16, 16}), full_layout(2, 3, 2, 16));
  tgt::require_throws<ShapeError>([&] { matmul(x, y3); },
                                  {"matmul", "layout of x has 4 block-columns", "layout of y has 3 block-rows"});
  tgt::require_throws<ShapeError>(
      [&] {
        matmul(zeros({3, 48, 64}), y);
      },
      {"matmul", "batch", "x has B=3", "y has B=2"});
  // layout_out
  tgt::require_throws<ShapeError>([&] { matmul(x, yd, full_layout(2, 3, 3, 16)); },
                                  {"matmul", "layout_out", "[2, 3, 2]", "[2, 3, 3]"});
  tgt::require_throws<ShapeError>([&] { matmul(x, y, full_layout(1, 3, 2, 16)); },
                                  {"matmul", "layout_out", "[2, 3, 2]", "[1, 3, 2]"});
  tgt::require_throws<LayoutError>([&] { matmul(xd, yd, Layout()); }, {"matmul", "layout_out", "undefined"});
  // block sizes
  tgt::require_throws<LayoutError>([&] { matmul(x, yd, full_layout(2, 6, 4, 8)); },
                                   {"matmul", "block size", "x has block size 16", "layout_out has block size 8"});
  const BlockSparseTensor y8(zeros({64, 8, 8}), full_layout(2, 8, 4, 8));
  tgt::require_throws<LayoutError>([&] { matmul(x, y8); }, {"matmul", "x has block size 16", "y has block size 8"});
  // divisibility of dense extents by the block size
  tgt::require_throws<ShapeError>(
      [&] {
        matmul(x, zeros({2, 64, 40}));
      },
      {"matmul", "y has N=40", "multiple of the block size 16"});
  tgt::require_throws<ShapeError>(
      [&] {
        matmul(zeros({2, 40, 64}), y);
      },
      {"matmul", "x has M=40", "multiple of the block size 16"});
  // K not divisible by the block size (40 = 2.5 blocks of 16), in every mode with a dense
  // operand: next to a dense y (SDD) the divisibility check names x's K; next to a
  // block-sparse y (SDS, DDS), or as y's K next to a block-sparse x (SSD, DSD), K = 40 cannot
  // match the other operand's whole blocks and the inner-extent check names both. (The
  // divisibility message about y's K is unreachable from the public overloads: it equals
  // x's K, which is checked first when dense and whole blocks when not.)
  const Tensor xk = zeros({2, 48, 40}), yk = zeros({2, 40, 32});
  const Layout lyk = full_layout(2, 3, 2, 16);  // y's K = 48 as blocks
  const BlockSparseTensor ys(zeros({12, 16, 16}), lyk);
  tgt::require_throws<ShapeError>([&] { matmul(xk, yk, lo); },
                                  {"matmul", "x has K=40", "(dim 2)", "multiple of the block size 16"});
  for (auto call : std::vector<std::function<void()>>{[&] { matmul(xk, ys, lo); }, [&] { matmul(xk, ys); }}) {
    tgt::require_throws<ShapeError>(call, {"matmul", "inner extents", "x has K=40", "y has K=48"});
  }
  for (auto call : std::vector<std::function<void()>>{[&] { matmul(x, yk, lo); }, [&] { matmul(x, yk); }}) {
    tgt::require_throws<ShapeError>(call, {"matmul", "inner extents", "x has K=64", "y has K=40"});
  }
  // dtypes
  tgt::require_throws<DTypeError>(
      [&] {
        matmul(x, zeros({2, 64, 32}, {.dtype = DType::bf16}));
      },
      {"matmul", "x", "y", "same dtype", "f32", "bf16"});
  tgt::require_throws<DTypeError>(
      [&] {
        matmul(zeros({2, 48, 64}, {.dtype = DType::i32}), y);
      },
      {"matmul", "x", "floating", "i32"});
  const BlockSparseTensor yi(zeros({16, 16, 16}, {.dtype = DType::i64}), ly);
  tgt::require_throws<DTypeError>([&] { matmul(x, yi, lo); }, {"matmul", "y", "floating", "i64"});
  // malformed / undefined operands
  tgt::require_throws<ValueError>([&] { matmul(Tensor(), y); }, {"matmul", "x", "undefined"});
  tgt::require_throws<ValueError>([&] { matmul(x, BlockSparseTensor()); }, {"matmul", "y", "undefined"});
}

// ---- CUDA against the CPU -------------------------------------------------------------

namespace {

// Forward and backward of mode m on `dev` from the same host inputs (dtype dt); returns
// {out, dx, dy} on the CPU as f64.
std::vector<Tensor> run_on(Device dev, const Mode& m, const Problem& p, const Tensor& xin, const Tensor& yin,
                           const Tensor& w) {
  Tensor x = xin.to(dev).detach().requires_grad_(), y = yin.to(dev).detach().requires_grad_();
  Tensor out = apply(m, p, x, y);
  REQUIRE(out.device() == dev);
  out.backward(w.to(dev));
  return {out.to(Device::cpu()).to(DType::f64), x.grad().to(Device::cpu()).to(DType::f64),
          y.grad().to(Device::cpu()).to(DType::f64)};
}

double rtol_of(DType dt) {
  switch (dt) {
    case DType::bf16:
      return 1.6e-2;
    case DType::f16:
      return 2e-3;
    case DType::f64:
      return 1e-12;
    default:
      return allow_tf32() ? 4e-3 : 1e-5;
  }
}

// Runs mode m forward and backward on the CPU and CUDA from the same inputs (dtype dt) and
// compares; returns the CUDA {out, dx, dy} on the CPU as f64.
std::vector<Tensor> compare_cuda_cpu(const Mode& m, const Problem& p, DType dt, std::uint64_t seed) {
  const Inputs in = inputs(p, seed);
  Tensor xin = input_of(in.xd, p.lx, m.x_sparse).to(dt), yin = input_of(in.yd, p.ly, m.y_sparse).to(dt);
  Tensor w = input_of(tgt::rand64({p.B(), p.M(), p.N()}, seed + 7), p.lo, m.out_sparse).to(dt);
  const auto cpu = run_on(Device::cpu(), m, p, xin, yin, w);
  const auto gpu = run_on(Device::cuda(), m, p, xin, yin, w);
  const double rtol = rtol_of(dt);
  // sums of up to K products of values in [-1, 1]: scale the absolute tolerance with K
  const double atol = rtol * std::sqrt(static_cast<double>(std::max({p.K(), p.M(), p.N()})));
  const char* names[] = {"out", "dx", "dy"};
  for (std::size_t q = 0; q < 3; ++q) {
    INFO(names[q]);
    tgt::require_close(gpu[q], cpu[q], rtol, atol);
  }
  return gpu;
}

}  // namespace

TEST_CASE("sparse matmul CUDA matches the CPU: every mode, block size and dtype", "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  // Every block size in bf16, f16, exact f32 and TF32, on two random problems, problems()[5]
  // and the edge kinds of problems() (at 16 and 32) or small_problems() (at 64 and 128, a
  // cheaper CPU side): an empty x, an empty output, an empty x block-row and y block-column
  // with an output block left out, k-blocks without overlap. At block 128 bf16 and f16 also
  // on the per-block path forced (Auto takes the Hopper kernel there where it applies).
  // Output blocks without a common k-block hold exactly 0 on every path, dtype and block
  // size, dense output and sparse.
  using ops::spmm::MmaPath;
  CudaSettingsGuard restore;
  struct Pass {
    DType dt;
    bool tf32;
    MmaPath path;
    const char* name;
  };
  std::uint64_t seed = 9000;
  for (std::int64_t bs : {16, 32, 64, 128}) {
    const std::int64_t g = bs <= 32 ? 4 : bs == 64 ? 3 : 2;  // grid extent
    std::vector<Problem> ps = {problem(2, g, g + 1, g - 1, bs, 0.5, 0.6, 0.5, seed += 10),
                               problem(1, g + 1, g, g, bs, 1.0, 1.0, 1.0, seed += 10), problems(bs, seed += 10)[5]};
    const std::vector<Problem> edge = bs <= 32 ? problems(bs, seed += 10) : small_problems(bs, seed += 10);
    // x empty, output empty, empty x block-row and y block-column, no common k (last)
    for (std::size_t q = 3; q < edge.size(); ++q) ps.push_back(edge[q]);
    const std::size_t disjoint = ps.size() - 1;
    std::vector<Pass> passes = {{DType::bf16, false, MmaPath::Auto, "bf16"},
                                {DType::f16, false, MmaPath::Auto, "f16"},
                                {DType::f32, false, MmaPath::Auto, "f32 (exact kernel)"},
                                {DType::f32, true, MmaPath::Auto, "f32 (TF32)"}};
    if (bs == 128) {
      passes.push_back({DType::bf16, false, MmaPath::PerBlock, "bf16, per-block path forced"});
      passes.push_back({DType::f16, false, MmaPath::PerBlock, "f16, per-block path forced"});
    }
    for (const Pass& pass : passes) {
      set_allow_tf32(pass.tf32);
      ops::spmm::set_mma_path(pass.path);
      int disjoint_zero_blocks = 0;
      for (std::size_t q = 0; q < ps.size(); ++q) {
        const Problem& p = ps[q];
        for (const Mode& m : kModes) {
          INFO(m.name << " " << describe(p) << " " << pass.name);
          const std::vector<Tensor> gpu = compare_cuda_cpu(m, p, pass.dt, ++seed);
          // any output block without a common k-block is an empty sum: exactly 0
          const int zero_blocks = require_exact_zeros(m, p, gpu[0]);
          if (q == disjoint) disjoint_zero_blocks += zero_blocks;
        }
      }
      INFO("no common k, bs=" << bs << " " << pass.name);
      REQUIRE(disjoint_zero_blocks > 0);  // SSS and DSS: every output block
    }
  }
}

TEST_CASE("sparse matmul CUDA: f64, TF32, block 256, skewed and misaligned operands", "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  std::uint64_t seed = 9500;
  // f64 runs the exact kernel; block 256 covers several tiles per output block
  for (const Mode& m : kModes) {
    INFO(m.name << " f64 / bs 256");
    seed += 2;
    compare_cuda_cpu(m, problem(2, 3, 4, 2, 16, 0.5, 0.5, 0.5, seed), DType::f64, seed + 1);
    compare_cuda_cpu(m, problem(1, 2, 3, 2, 256, 0.7, 0.7, 0.7, seed), DType::bf16, seed + 1);
  }
  // TF32 when allowed
  set_allow_tf32(true);
  for (const Mode& m : kModes) {
    INFO(m.name << " tf32");
    seed += 2;
    compare_cuda_cpu(m, problem(2, 4, 5, 3, 32, 0.5, 0.6, 0.6, seed), DType::f32, seed + 1);
    compare_cuda_cpu(m, problem(1, 2, 3, 2, 128, 0.8, 0.8, 0.8, seed), DType::f32, seed + 1);
  }
  set_allow_tf32(false);
  // skewed: one full block-row of x and few, long output blocks (split over many CTAs);
  // and a single output block with a long k list
  for (std::int64_t bs : {16, 64}) {
    const std::int64_t Kb = bs == 16 ? 96 : 24;
    Problem skew{tgt::layout_where(1, 4, Kb, bs, [](auto, auto r, auto c) { return r == 1 || c % 7 == 0; }),
                 full_layout(1, Kb, 3, bs), full_layout(1, 4, 3, bs)};
    Problem one{full_layout(1, 1, Kb, bs), full_layout(1, Kb, 1, bs), full_layout(1, 1, 1, bs)};
    for (const Mode& m : kModes) {
      for (DType dt : {DType::bf16, DType::f32}) {
        INFO(m.name << " skewed bs=" << bs << " " << dtype_name(dt));
        compare_cuda_cpu(m, skew, dt, ++seed);
        compare_cuda_cpu(m, one, dt, ++seed);
      }
    }
  }
  // operands whose data does not start 16-byte aligned take the general kernel
  const Problem p = problem(2, 3, 4, 2, 16, 0.6, 1.0, 0.7, ++seed);
  const Inputs in = inputs(p, ++seed);
  for (DType dt : {DType::bf16, DType::f32}) {
    INFO("misaligned " << dtype_name(dt));
    Tensor xd = in.xd.to(dt).to(Device::cuda());
    Tensor big = zeros({xd.numel() + 1}, {.dtype = dt, .device = Device::cuda()});
    Tensor xm = tgt::misaligned_view(big, 1, xd.shape());
    copy_bytes(xm, xd);
    Tensor yd = in.yd.to(dt);
    Tensor want = matmul(xd.to(Device::cpu()), yd, p.lo).data().to(DType::f64);
    Tensor got = matmul(xm, yd.to(Device::cuda()), p.lo).data().to(Device::cpu()).to(DType::f64);
    tgt::require_close(got, want, rtol_of(dt), rtol_of(dt) * std::sqrt(static_cast<double>(p.K())));
  }
}

TEST_CASE("sparse matmul CUDA: grouped regions of blocks 32 and 64", "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  // Forces each grouped path (128 x 128, 64 x 128 and 128 x 64 regions of several blocks,
  // absent blocks read as zeros) on every mode, forward and backward (so every transpose
  // combination), against the CPU: regions cut by the grid edge, regions with only some
  // blocks stored or some operand blocks absent, empty rows and columns, empty operands
  // and outputs, k without overlap, batch > 1. Then the same problems on the per-block path.
  CudaSettingsGuard restore;
  ops::spmm::set_coarse_blocks(ops::spmm::CoarseBlocks::Never);  // blocks of 32 as they are
  std::uint64_t seed = 9700;
  using ops::spmm::MmaPath;
  const char* names[] = {"auto", "per-block", "grouped 128x128", "grouped 64x128", "grouped 128x64"};
  for (const MmaPath path : {MmaPath::Grouped, MmaPath::GroupedWide, MmaPath::GroupedTall, MmaPath::PerBlock}) {
    ops::spmm::set_mma_path(path);
    for (std::int64_t bs : {32, 64}) {
      const std::vector<Problem> all = problems(bs, seed += 100);
      std::vector<Problem> ps = {problem(2, 5, 6, 3, bs, 0.5, 0.6, 0.5, seed + 1),   // partial regions
                                 problem(1, 4, 5, 4, bs, 1.0, 1.0, 1.0, seed + 2),   // whole regions
                                 problem(2, 6, 4, 7, bs, 0.2, 0.3, 0.25, seed + 3),  // mostly absent blocks
                                 all[3],
                                 all[4],
                                 all[5],
                                 all[6]};
      for (const Problem& p : ps) {
        for (DType dt : {DType::bf16, DType::f16}) {
          if (dt == DType::f16 && path != MmaPath::Grouped) continue;  // same code as bf16 but the mma
          for (const Mode& m : kModes) {
            INFO(names[static_cast<int>(path)] << " " << m.name << " " << describe(p) << " " << dtype_name(dt));
            compare_cuda_cpu(m, p, dt, ++seed);
          }
        }
      }
    }
  }
}

// The Hopper kernel's forced paths, named for the tests' messages.
const std::pair<ops::spmm::MmaPath, const char*> kHopperPaths[] = {
    {ops::spmm::MmaPath::WgmmaTmaNarrow, "WgmmaTma, one block a tile"},
    {ops::spmm::MmaPath::WgmmaTmaWide, "WgmmaTma, row groups"},
    {ops::spmm::MmaPath::WgmmaTmaWideColumns, "WgmmaTma, column groups"},
    {ops::spmm::MmaPath::WgmmaTmaRowPairs, "WgmmaTma, pairs of row groups"},
    {ops::spmm::MmaPath::WgmmaTmaColumnPairs, "WgmmaTma, pairs of column groups"}};

TEST_CASE("sparse matmul CUDA: Hopper wgmma path, blocks 64 and 128", "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  if (!ops::spmm::wgmma_supported(Device::cuda().index))
    TG_SKIP("the GPU is not of compute capability 9.0: wgmma test skipped");
  // Forces the warpgroup-MMA kernel on every mode, forward and backward (operands read
  // plain and transposed as the backward does), bf16 and f16, against the CPU: batch > 1,
  // empty operands, outputs and output rows, k without overlap (exactly 0), pair lists long
  // enough to be split over several CTAs (split-K), and both operands transposed at once.
  CudaSettingsGuard restore;
  for (const auto& [path, path_name] : kHopperPaths) {
    ops::spmm::set_mma_path(path);
    INFO(path_name);
    std::uint64_t seed = 9900;
    for (std::int64_t bs : {64, 128}) {
      const std::vector<Problem> all = problems(bs, seed += 100);
      const std::int64_t Kb = bs == 64 ? 24 : 12;  // k of 1536: lists cut into pieces
      std::vector<Problem> ps = {
          problem(2, 3, 4, 2, bs, 0.6, 0.7, 0.6, seed + 1),  // batch 2, partial layouts
          problem(1, 2, 3, 3, bs, 1.0, 1.0, 1.0, seed + 2),  // full layouts
          all[3],                                            // x empty
          all[4],                                            // output empty
          all[5],                                            // empty block-rows and -columns
          all[6],                                            // no overlapping k
          {full_layout(1, 1, Kb, bs), full_layout(1, Kb, 1, bs), full_layout(1, 1, 1, bs)},  // one long list
          {tgt::layout_where(2, 2, Kb, bs, [](auto b, auto r, auto c) { return r == b || c % 5 == 0; }),
           full_layout(2, Kb, 2, bs), full_layout(2, 2, 2, bs)},  // skewed lists, batch 2
          // a row of 5 output blocks with long lists: a full group, a one-member one, split
          {full_layout(1, 1, Kb, bs), full_layout(1, Kb, 5, bs), full_layout(1, 1, 5, bs)},
          // the same for a column (column groups)
          {full_layout(1, 5, Kb, bs), full_layout(1, Kb, 1, bs), full_layout(1, 5, 1, bs)},
          // y sparse with distinct columns, x dense: DDS lists equal down a column only
          problem(2, 5, 6, 4, bs, 1.0, 0.4, 1.0, seed + 3),
          // pairs of row groups: two rows of long lists (split), groups of 4 and 1 columns
          {full_layout(1, 2, Kb, bs), full_layout(1, Kb, 5, bs), full_layout(1, 2, 5, bs)},
          // three rows (one without a partner) of 4 + 2 columns, batch 2
          {full_layout(2, 3, 4, bs), full_layout(2, 4, 6, bs), full_layout(2, 3, 6, bs)},
          // rows paired on some of their columns, the rest in groups of one line of the same
          // launch: an output at density 0.7 over 8 columns, then with long lists (split)
          problem(2, 6, 3, 8, bs, 1.0, 1.0, 0.7, seed + 4),
          problem(1, 4, Kb, 8, bs, 1.0, 1.0, 0.7, seed + 5)};
      for (const Problem& p : ps) {
        for (DType dt : {DType::bf16, DType::f16}) {
          for (const Mode& m : kModes) {
            INFO("wgmma " << m.name << " " << describe(p) << " " << dtype_name(dt));
            compare_cuda_cpu(m, p, dt, ++seed);
          }
        }
      }
      // No k-block in common: the output blocks hold exactly 0 (no pairs, nothing added).
      const Problem& z = all[6];
      const Inputs zin = inputs(z, ++seed);
      for (DType dt : {DType::bf16, DType::f16}) {
        const BlockSparseTensor x(to_sparse(zin.xd, z.lx).data().to(dt).to(Device::cuda()), z.lx);
        const BlockSparseTensor y(to_sparse(zin.yd, z.ly).data().to(dt).to(Device::cuda()), z.ly);
        for (const Tensor& out : {matmul(x, y, z.lo).data(), matmul(x, y)}) {
          INFO("exact zeros bs=" << bs << " " << dtype_name(dt));
          for (double v : tgt::values(out.to(Device::cpu()).to(DType::f64))) REQUIRE(v == 0.0);
        }
      }
      // Both operands read transposed (no public op does it): a plan over x stored [B, K, M]
      // (block-sparse) and y stored [B, N, K] (dense), run through the kernel slot on both.
      const std::int64_t B = 2, Mb = 3, Kbt = 4, Nb = 2;
      const Layout lxt = random_layout(B, Kbt, Mb, bs, 0.6, ++seed);
      const ops::OperandDesc a{lxt, B, Kbt * bs, Mb * bs, true}, b{Layout(), B, Nb * bs, Kbt * bs, true},
          c{Layout(), B, Mb * bs, Nb * bs, false};
      const auto plan = ops::matmul_plan(a, b, c, bs);
      for (DType dt : {DType::bf16, DType::f16}) {
        INFO("both transposed bs=" << bs << " " << dtype_name(dt));
        const Tensor xt = to_sparse(tgt::rand64({B, Kbt * bs, Mb * bs}, ++seed), lxt).data().to(dt);
        const Tensor yt = tgt::rand64({B, Nb * bs, Kbt * bs}, ++seed).to(dt);
        const Tensor want = zeros({B, Mb * bs, Nb * bs}, {.dtype = dt});
        const Tensor got = zeros({B, Mb * bs, Nb * bs}, {.dtype = dt, .device = Device::cuda()});
        ops::sparse_matmul_kernel()(Device::cpu())(*plan, xt, yt, want);
        ops::sparse_matmul_kernel()(Device::cuda())(*plan, xt.to(Device::cuda()), yt.to(Device::cuda()), got);
        tgt::require_close(got.to(Device::cpu()).to(DType::f64), want.to(DType::f64), rtol_of(dt),
                           rtol_of(dt) * std::sqrt(static_cast<double>(Kbt * bs)));
      }
    }
  }
}

TEST_CASE("sparse matmul CUDA: Hopper pairs of lines over different k lists", "[ops][sparse_matmul][cuda]") {
  // Block-rows of a sparse x (block-columns of a sparse y) pair over the union of their k
  // lists, a line multiplying zeros where it has no tile: forced on every mode, forward and
  // backward, bf16 and f16, against the CPU. Small enough for racecheck.
  const Problem p = problem(2, 8, 8, 8, 64, 0.5, 0.5, 0.5, 4242);
  // the forced schedules have such steps: rows of a DSD, columns of a DDS (checked on the
  // host, also without a GPU)
  for (const auto& [x_sparse, axis] : {std::pair{true, ops::GroupAxis::Rows}, {false, ops::GroupAxis::Columns}}) {
    const ops::OperandDesc a{x_sparse ? p.lx : Layout(), p.B(), p.M(), p.K(), false};
    const ops::OperandDesc b{x_sparse ? Layout() : p.ly, p.B(), p.K(), p.N(), false};
    const ops::OperandDesc c{Layout(), p.B(), p.M(), p.N(), false};
    const auto plan = ops::matmul_plan(a, b, c, 64);
    REQUIRE(ops::row_group_schedule(*plan, 4, 1000, axis, 2).lone_steps > 0);
  }
  TG_REQUIRE_CUDA();
  if (!ops::spmm::wgmma_supported(Device::cuda().index))
    TG_SKIP("the GPU is not of compute capability 9.0: wgmma test skipped");
  CudaSettingsGuard restore;
  using ops::spmm::MmaPath;
  std::uint64_t seed = 4300;
  for (const MmaPath path : {MmaPath::WgmmaTmaRowPairs, MmaPath::WgmmaTmaColumnPairs}) {
    ops::spmm::set_mma_path(path);
    for (DType dt : {DType::bf16, DType::f16}) {
      for (const Mode& m : kModes) {
        INFO((path == MmaPath::WgmmaTmaRowPairs ? "row" : "column") << " pairs " << m.name << " " << dtype_name(dt));
        compare_cuda_cpu(m, p, dt, ++seed);
      }
    }
  }
}

TEST_CASE("sparse matmul CUDA: Hopper queues of several items a CTA", "[ops][sparse_matmul][cuda]") {
  // The grid capped at 3 CTAs, so that each CTA (each ring) runs a queue of several items of
  // different costs (queues.h), its loads running on across items: every Hopper path, blocks
  // 64 and 128, every mode, forward and backward, against the CPU; random layouts (lists of
  // different lengths, empty rows) and long lists cut into pieces. Small enough for racecheck.
  TG_REQUIRE_CUDA();
  if (!ops::spmm::wgmma_supported(Device::cuda().index))
    TG_SKIP("the GPU is not of compute capability 9.0: wgmma test skipped");
  CudaSettingsGuard restore;
  ops::spmm::set_tma_max_ctas(3);
  std::uint64_t seed = 5100;
  for (const auto& [path, path_name] : kHopperPaths) {
    ops::spmm::set_mma_path(path);
    for (std::int64_t bs : {64, 128}) {
      const std::int64_t Kb = bs == 64 ? 24 : 12;  // k of 1536: lists cut into pieces
      // random layouts; and one long row of x among rows of one block, whose lists the
      // schedule cuts into pieces (a third of the steps is more than a list of 3 CTAs' share)
      const std::vector<Problem> ps = {
          problem(2, 5, 6, 8, bs, 0.6, 0.5, 0.6, ++seed),
          {tgt::layout_where(1, 3, Kb, bs, [](auto, auto r, auto c) { return r == 0 || c == r; }),
           full_layout(1, Kb, 5, bs), full_layout(1, 3, 5, bs)}};
      for (const Problem& p : ps) {
        for (const Mode& m : kModes) {
          INFO(path_name << " " << m.name << " " << describe(p));
          compare_cuda_cpu(m, p, DType::bf16, ++seed);
        }
      }
    }
  }
}

TEST_CASE("sparse matmul CUDA bad inputs", "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  const Layout l8 = full_layout(1, 2, 2, 8);
  tgt::require_throws<LayoutError>(
      [&] {
        matmul(zeros({1, 16, 16}, {.device = gpu}), zeros({1, 16, 16}, {.device = gpu}), l8);
      },
      {"matmul", "block size 8", "CUDA", "16"});
  const Layout l16 = full_layout(1, 1, 1, 16);
  tgt::require_throws<DeviceError>(
      [&] {
        matmul(zeros({1, 16, 16}, {.device = gpu}), zeros({1, 16, 16}), l16);
      },
      {"matmul", "x", "y", "same device"});
}

}  // namespace test_sparse_matmul
