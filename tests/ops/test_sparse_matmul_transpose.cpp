// Tests of tg::MatmulOptions (transpose_x, transpose_y) on the seven block-sparse matmul
// overloads (ops/sparse_matmul/sparse_matmul.h): for every mode and each transposed
// combination (x only, y only, both), with x stored [B, K, M] (block-sparse under the
// transposed layout [B, K/bs, M/bs]) and y stored [B, N, K]:
//  - the forward against masked f64 references written as plain loops over the stored
//    values (block sizes 1 to 32, batch 1-3, non-square, empty layouts, empty block-rows
//    and -columns, k without overlap: exactly 0), and bf16 / f16 against the same;
//  - the gradients in their stored form (sparse ones on their own layout) against f64
//    references, and gradchecks (element by element at block 2, along random directions
//    at block 16);
//  - the options against explicit transposes (tg::transpose) of the operands, forward and
//    backward;
//  - bad inputs that only the transpose makes bad (inner extents, layout_out, divisibility);
//  - CUDA against the CPU at blocks 16, 64 and 128 in bf16 and f32, forward and backward,
//    on the Hopper (wgmma), grouped and per-block paths.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ops/sparse_matmul/path.h"
#include "ops/sparse_matmul/sparse_matmul.h"
#include "sparse_matmul_cases.h"
#include "util.h"

namespace test_sparse_matmul_transpose {

using namespace tg;
using namespace mmcases;

namespace {

// The transposed combinations of MatmulOptions.
struct Trans {
  bool tx, ty;
  const char* name;
};
const std::vector<Trans> kTrans = {{true, false, "transpose_x"}, {false, true, "transpose_y"}, {true, true, "both"}};

// A problem with its operands stored as the options say: x [B, K, M] under sx =
// lx.transposed() when transpose_x (else [B, M, K] under lx), y [B, N, K] under
// ly.transposed() when transpose_y.
struct Case {
  Problem p;
  Trans t;
  MatmulOptions o;
  Layout sx, sy;
  Shape x_shape, y_shape;
  std::int64_t B() const { return p.B(); }
  std::int64_t M() const { return p.M(); }
  std::int64_t K() const { return p.K(); }
  std::int64_t N() const { return p.N(); }
  std::int64_t bs() const { return p.bs(); }
};

Case stored(const Problem& p, const Trans& t) {
  Case c{p,
         t,
         MatmulOptions{t.tx, t.ty},
         t.tx ? p.lx.transposed() : p.lx,
         t.ty ? p.ly.transposed() : p.ly,
         t.tx ? Shape{p.B(), p.K(), p.M()} : Shape{p.B(), p.M(), p.K()},
         t.ty ? Shape{p.B(), p.N(), p.K()} : Shape{p.B(), p.K(), p.N()}};
  // the stored layouts hold the blocks of op(x) and op(y) at swapped coordinates
  REQUIRE(c.sx.rows() == c.x_shape[1]);
  REQUIRE(c.sx.cols() == c.x_shape[2]);
  REQUIRE(c.sy.rows() == c.y_shape[1]);
  REQUIRE(c.sy.cols() == c.y_shape[2]);
  const std::int64_t Mb = p.lx.block_rows(), Kb = p.lx.block_cols(), Nb = p.ly.block_cols();
  for (std::int64_t b = 0; b < p.B(); ++b)
    for (std::int64_t k = 0; k < Kb; ++k) {
      for (std::int64_t i = 0; i < Mb; ++i)
        REQUIRE(p.lx.active(b, i, k) == (t.tx ? c.sx.active(b, k, i) : c.sx.active(b, i, k)));
      for (std::int64_t j = 0; j < Nb; ++j)
        REQUIRE(p.ly.active(b, k, j) == (t.ty ? c.sy.active(b, j, k) : c.sy.active(b, k, j)));
    }
  return c;
}

std::string describe(const Case& c) {
  return detail::concat(c.t.name, " B=", c.B(), " M=", c.M(), " K=", c.K(), " N=", c.N(), " bs=", c.bs(),
                        " blocks x/y/out=", c.p.lx.n_blocks(), "/", c.p.ly.n_blocks(), "/", c.p.lo.n_blocks());
}

// Mode m of case c on its stored inputs, with c's options.
Tensor apply(const Mode& m, const Case& c, const Tensor& xin, const Tensor& yin) {
  return call(m, xin, c.sx, yin, c.sy, c.p.lo, c.o);
}

// mmcases::reference_mm on stored values, REQUIRing first that they hold B·M·K and B·K·N
// elements: the stored shapes swap extents when transposed, and a swap in the wrong place
// here would otherwise read past the values, or the wrong ones, without a word.
Tensor stored_mm(const std::vector<double>& a, const std::vector<double>& b, std::int64_t B, std::int64_t M,
                 std::int64_t K, std::int64_t N, bool ta, bool tb, const Layout* lo, double fill) {
  REQUIRE(a.size() == at(B * M * K));
  REQUIRE(b.size() == at(B * K * N));
  return reference_mm(a, b, B, M, K, N, ta, tb, lo, fill);
}

// The f64 reference of mode m on stored dense values xs, ys (masked by their stored layouts
// where m takes them sparse): op(x) · op(y), NaN outside lo's blocks for a sparse output.
Tensor reference(const Mode& m, const Case& c, const Tensor& xs, const Tensor& ys) {
  return stored_mm(host(xs, c.sx, m.x_sparse), host(ys, c.sy, m.y_sparse), c.B(), c.M(), c.K(), c.N(), c.t.tx, c.t.ty,
                   m.out_sparse ? &c.p.lo : nullptr, kNan);
}

// The f64 references of the gradients in their stored forms for the upstream gradient w
// [B, M, N] (masked by lo for a sparse output), restricted to the stored layouts (0
// elsewhere). With G = dL/d(op(x) · op(y)):
//   d op(x) = G · op(y)ᵀ, stored dx = that, or op(y) · Gᵀ when x is read transposed;
//   d op(y) = op(x)ᵀ · G, stored dy = that, or Gᵀ · op(x) when y is read transposed.
std::pair<Tensor, Tensor> reference_grads(const Mode& m, const Case& c, const Tensor& xs, const Tensor& ys,
                                          const Tensor& w) {
  const auto xv = host(xs, c.sx, m.x_sparse), yv = host(ys, c.sy, m.y_sparse), wv = host(w, c.p.lo, m.out_sparse);
  const Layout* mx = m.x_sparse ? &c.sx : nullptr;
  const Layout* my = m.y_sparse ? &c.sy : nullptr;
  const bool tx = c.t.tx, ty = c.t.ty;
  const std::int64_t B = c.B(), M = c.M(), K = c.K(), N = c.N();
  // op(y) is ys read transposed iff ty; op(y)ᵀ is ys read transposed iff !ty (likewise x)
  Tensor dx = tx ? stored_mm(yv, wv, B, K, N, M, ty, true, mx, 0.0)     // [B, K, M] = op(y) · Gᵀ
                 : stored_mm(wv, yv, B, M, N, K, false, !ty, mx, 0.0);  // [B, M, K] = G · op(y)ᵀ
  Tensor dy = ty ? stored_mm(wv, xv, B, N, M, K, true, tx, my, 0.0)     // [B, N, K] = Gᵀ · op(x)
                 : stored_mm(xv, wv, B, K, M, N, !tx, false, my, 0.0);  // [B, K, N] = op(x)ᵀ · G
  return {dx, dy};
}

// Stored f64 inputs of case c: x in its stored shape, y in its, values in [-1, 1).
struct Inputs {
  Tensor xs, ys;
};
Inputs inputs(const Case& c, std::uint64_t seed) {
  return {tgt::rand64(c.x_shape, seed), tgt::rand64(c.y_shape, seed + 1)};
}

}  // namespace

TEST_CASE("sparse matmul transposed: every mode and combination matches a masked f64 reference",
          "[ops][sparse_matmul]") {
  std::uint64_t seed = 21000;
  int zero_checked = 0;
  for (std::int64_t bs : {1, 2, 16, 32}) {
    const std::vector<Problem> ps = problems(bs, seed += 100);
    for (std::size_t q = 0; q < ps.size(); ++q) {
      for (const Trans& t : kTrans) {
        const Case c = stored(ps[q], t);
        const Inputs in = inputs(c, ++seed);
        for (const Mode& m : kModes) {
          INFO(m.name << " " << describe(c));
          const Tensor out = apply(m, c, input_of(in.xs, c.sx, m.x_sparse), input_of(in.ys, c.sy, m.y_sparse));
          REQUIRE(out.dtype() == DType::f64);
          REQUIRE(out.shape() == (m.out_sparse ? Shape{c.p.lo.n_blocks(), bs, bs} : Shape{c.B(), c.M(), c.N()}));
          tgt::require_close(logical(out, c.p.lo, m.out_sparse), reference(m, c, in.xs, in.ys), 1e-12, 1e-12);
          if (q == ps.size() - 1 && m.x_sparse && m.y_sparse) {
            // no k-block in common: every output element is an empty sum
            for (double v : tgt::values(out)) REQUIRE(v == 0.0);
            ++zero_checked;
          }
        }
      }
    }
  }
  REQUIRE(zero_checked == 4 * 3 * 2);
}

TEST_CASE("sparse matmul transposed: the options are read (a control of the reference)", "[ops][sparse_matmul]") {
  // On square operands each option changes the product: the op with an option must differ
  // from the op without it, and the reference must tell them apart, so that the comparisons
  // above would see an ignored or swapped option.
  const std::int64_t bs = 2;
  const Problem p = problem(2, 3, 3, 3, bs, 1.0, 1.0, 1.0, 21900);
  for (const Trans& t : kTrans) {
    const Case c = stored(p, t);
    const Inputs in = inputs(c, 21950);
    for (const Mode& m : kModes) {
      INFO(m.name << " " << describe(c));
      const Tensor xin = input_of(in.xs, c.sx, m.x_sparse), yin = input_of(in.ys, c.sy, m.y_sparse);
      const Tensor with = logical(apply(m, c, xin, yin), c.p.lo, m.out_sparse);
      const Tensor without = logical(call(m, xin, c.sx, yin, c.sy, c.p.lo, {}), c.p.lo, m.out_sparse);
      const Tensor want = reference(m, c, in.xs, in.ys);
      tgt::require_close(with, want, 1e-12, 1e-12);
      REQUIRE(tgt::max_abs_diff(without, want) > 0.1);
      // each option alone, the other one dropped, differs too
      for (const MatmulOptions& other : {MatmulOptions{t.tx, !t.ty}, MatmulOptions{!t.tx, t.ty}}) {
        const Tensor o = logical(call(m, xin, c.sx, yin, c.sy, c.p.lo, other), c.p.lo, m.out_sparse);
        REQUIRE(tgt::max_abs_diff(o, want) > 0.1);
      }
    }
  }
}

TEST_CASE("sparse matmul transposed: gradients in stored form match masked f64 references", "[ops][sparse_matmul]") {
  // out.backward(W): dx and dy have x's and y's stored shapes (block data of the stored
  // layouts when sparse); see reference_grads.
  std::uint64_t seed = 22000;
  for (std::int64_t bs : {1, 2, 16, 32}) {
    for (const Problem& p : problems(bs, seed += 100)) {
      const Tensor wd = tgt::rand64({p.B(), p.M(), p.N()}, ++seed);
      for (const Trans& t : kTrans) {
        const Case c = stored(p, t);
        const Inputs in = inputs(c, ++seed);
        for (const Mode& m : kModes) {
          INFO(m.name << " " << describe(c));
          Tensor xin = input_of(in.xs, c.sx, m.x_sparse).requires_grad_();
          Tensor yin = input_of(in.ys, c.sy, m.y_sparse).requires_grad_();
          apply(m, c, xin, yin).backward(input_of(wd, c.p.lo, m.out_sparse));
          REQUIRE(xin.grad().defined());
          REQUIRE(yin.grad().defined());
          REQUIRE(xin.grad().shape() == xin.shape());
          REQUIRE(yin.grad().shape() == yin.shape());
          const auto [dx, dy] = reference_grads(m, c, in.xs, in.ys, wd);
          {
            INFO("dx");
            tgt::require_close(logical(xin.grad(), c.sx, m.x_sparse, 0.0), dx, 1e-12, 1e-12);
          }
          {
            INFO("dy");
            tgt::require_close(logical(yin.grad(), c.sy, m.y_sparse, 0.0), dy, 1e-12, 1e-12);
          }
        }
      }
    }
  }
}

TEST_CASE("sparse matmul transposed gradcheck at block 2, every mode and combination, element by element",
          "[ops][sparse_matmul][gradcheck]") {
  // op(x) [2, 4, 6], op(y) [2, 6, 4], blocks missing from x, y and the output
  const Problem p = gradcheck_problem(2, 2, 3, 2, 2);
  REQUIRE(p.lx.n_blocks() == 10);
  REQUIRE(p.ly.n_blocks() == 10);
  REQUIRE(p.lo.n_blocks() == 6);
  std::uint64_t seed = 23000;
  for (const Trans& t : kTrans) {
    const Case c = stored(p, t);
    const Inputs in = inputs(c, seed += 10);
    for (const Mode& m : kModes) {
      INFO(m.name << " " << describe(c));
      Tensor xin = input_of(in.xs, c.sx, m.x_sparse).requires_grad_();
      Tensor yin = input_of(in.ys, c.sy, m.y_sparse).requires_grad_();
      const auto r =
          autograd::gradcheck([&](const std::vector<Tensor>& v) { return apply(m, c, v[0], v[1]); }, {xin, yin});
      INFO(r.report);
      REQUIRE(r.ok);
    }
  }
}

TEST_CASE("sparse matmul transposed gradcheck at block 16, every mode and combination, along random directions",
          "[ops][sparse_matmul][gradcheck]") {
  // op(x) [2, 32, 48], op(y) [2, 48, 32] with blocks missing. Three random directions per
  // operand; a product is linear in each operand, so a central difference with a large
  // step is exact up to rounding and the tolerances can be tight: directional_gradcheck,
  // the same check whose control in test_sparse_matmul.cpp fails for a wrong gradient.
  const Problem p = gradcheck_problem(2, 2, 3, 2, 16);
  std::uint64_t seed = 23500;
  for (const Trans& t : kTrans) {
    const Case c = stored(p, t);
    const Inputs in = inputs(c, seed += 10);
    for (const Mode& m : kModes) {
      INFO(m.name << " " << describe(c));
      const auto r =
          directional_gradcheck([&](const Tensor& x, const Tensor& y) { return apply(m, c, x, y); },
                                input_of(in.xs, c.sx, m.x_sparse), input_of(in.ys, c.sy, m.y_sparse), 3, ++seed);
      INFO(r.report);
      REQUIRE(r.ok);
    }
  }
}

TEST_CASE("sparse matmul transposed: options equal products of explicit transposes, forward and backward",
          "[ops][sparse_matmul]") {
  // matmul(x, y, {tx, ty}) against matmul(op(x), op(y)) with op() an explicit tg::transpose
  // (block-sparse: transposed blocks under the transposed layout; dense: a row-major copy)
  // of the same leaves: the same products, summed in another order at most.
  std::uint64_t seed = 24000;
  for (std::int64_t bs : {2, 16}) {
    const Problem p = problem(2, 3, 2, 4, bs, 0.6, 0.7, 0.7, seed += 100);
    const Tensor wd = tgt::rand64({p.B(), p.M(), p.N()}, ++seed);
    for (const Trans& t : kTrans) {
      const Case c = stored(p, t);
      const Inputs in = inputs(c, ++seed);
      for (const Mode& m : kModes) {
        INFO(m.name << " " << describe(c));
        const Tensor w = input_of(wd, c.p.lo, m.out_sparse);
        // with the options
        Tensor x1 = input_of(in.xs, c.sx, m.x_sparse).requires_grad_();
        Tensor y1 = input_of(in.ys, c.sy, m.y_sparse).requires_grad_();
        const Tensor out1 = apply(m, c, x1, y1);
        out1.backward(w);
        // on explicit transposes
        Tensor x2 = input_of(in.xs, c.sx, m.x_sparse).requires_grad_();
        Tensor y2 = input_of(in.ys, c.sy, m.y_sparse).requires_grad_();
        auto op = [](const Tensor& v, const Layout& l, bool sparse, bool trans) -> std::pair<Tensor, Layout> {
          if (!trans) return {v, l};
          if (!sparse) return {transpose(v), Layout()};
          const BlockSparseTensor tv = transpose(BlockSparseTensor(v, l));
          return {tv.data(), tv.layout()};
        };
        const auto [xo, lxo] = op(x2, c.sx, m.x_sparse, t.tx);
        const auto [yo, lyo] = op(y2, c.sy, m.y_sparse, t.ty);
        if (m.x_sparse) REQUIRE(lxo == c.p.lx);
        if (m.y_sparse) REQUIRE(lyo == c.p.ly);
        const Tensor out2 = call(m, xo, lxo, yo, lyo, c.p.lo, {});
        out2.backward(w);
        tgt::require_close(out1, out2, 1e-13, 1e-13);
        {
          INFO("dx");
          tgt::require_close(x1.grad(), x2.grad(), 1e-13, 1e-13);
        }
        {
          INFO("dy");
          tgt::require_close(y1.grad(), y2.grad(), 1e-13, 1e-13);
        }
      }
    }
  }
}

TEST_CASE("sparse matmul transposed: bf16 and f16 accumulate in f32", "[ops][sparse_matmul]") {
  // The forward of every mode and combination on problems() at blocks 2, 16 and 32, and
  // the gradients at block 16, against the f64 references of the same rounded inputs.
  std::uint64_t seed = 25000;
  for (std::int64_t bs : {2, 16, 32}) {
    for (const Problem& p : problems(bs, seed += 100)) {
      const Tensor wd = tgt::rand64({p.B(), p.M(), p.N()}, ++seed);
      for (const Trans& t : kTrans) {
        const Case c = stored(p, t);
        const Inputs in = inputs(c, ++seed);
        for (DType dt : {DType::bf16, DType::f16}) {
          const Tensor xr = in.xs.to(dt).to(DType::f64), yr = in.ys.to(dt).to(DType::f64);
          const Tensor wr = wd.to(dt).to(DType::f64);
          for (const Mode& m : kModes) {
            INFO(m.name << " " << describe(c) << " " << dtype_name(dt));
            Tensor xin = input_of(in.xs.to(dt), c.sx, m.x_sparse).requires_grad_(bs == 16);
            Tensor yin = input_of(in.ys.to(dt), c.sy, m.y_sparse).requires_grad_(bs == 16);
            const Tensor out = apply(m, c, xin, yin);
            REQUIRE(out.dtype() == dt);
            tgt::require_close(logical(out.to(DType::f64), c.p.lo, m.out_sparse), reference(m, c, xr, yr), rtol_16(dt),
                               atol_16(dt, c.K()));
            if (bs != 16) continue;
            out.backward(input_of(wr.to(dt), c.p.lo, m.out_sparse));
            REQUIRE(xin.grad().dtype() == dt);
            REQUIRE(yin.grad().dtype() == dt);
            const auto [dx, dy] = reference_grads(m, c, xr, yr, wr);
            {
              INFO("dx");
              tgt::require_close(logical(xin.grad().to(DType::f64), c.sx, m.x_sparse, 0.0), dx, rtol_16(dt),
                                 atol_16(dt, c.N()));
            }
            {
              INFO("dy");
              tgt::require_close(logical(yin.grad().to(DType::f64), c.sy, m.y_sparse, 0.0), dy, rtol_16(dt),
                                 atol_16(dt, c.M()));
            }
          }
        }
      }
    }
  }
}

TEST_CASE("sparse matmul transposed: bad inputs name the transposed operands", "[ops][sparse_matmul]") {
  const std::int64_t bs = 16;
  // x [1, 32, 64] · y [1, 64, 32] is a valid product; with transpose_x, op(x) is [1, 64, 32]
  // and K = 32 against y's 64
  const Tensor x = zeros({1, 32, 64}), y = zeros({1, 64, 32});
  const Layout lo22 = full_layout(1, 2, 2, bs), lo44 = full_layout(1, 4, 4, bs);
  REQUIRE(matmul(x, y, lo22).data().shape() == Shape{4, bs, bs});  // control: valid untransposed
  tgt::require_throws<ShapeError>([&] { matmul(x, y, lo44, {.transpose_x = true}); },
                                  {"matmul", "inner extents", "x (transposed) has K=32", "(dim 1)", "y has K=64"});
  // with transpose_y, op(y) is [1, 32, 64]: K = 32 against x's 64
  tgt::require_throws<ShapeError>([&] { matmul(x, y, lo22, {.transpose_y = true}); },
                                  {"matmul", "inner extents", "x has K=64", "y (transposed) has K=32", "(dim 2)"});
  // both: op(x) [1, 64, 32] · op(y) [1, 32, 64] is valid again (a [1, 64, 64] output)
  REQUIRE(matmul(x, y, lo44, {.transpose_x = true, .transpose_y = true}).data().shape() == Shape{16, bs, bs});
  // x [1, 32, 64] and y [1, 32, 64]: only one transposed side matches
  tgt::require_throws<ShapeError>([&] { matmul(x, x, lo22, {.transpose_x = true, .transpose_y = true}); },
                                  {"matmul", "x (transposed) has K=32", "y (transposed) has K=64"});

  // the same with block-sparse operands, in the overloads without layout_out
  const BlockSparseTensor xs(zeros({8, bs, bs}), full_layout(1, 2, 4, bs));  // stored [1, 32, 64]
  const BlockSparseTensor ys(zeros({8, bs, bs}), full_layout(1, 4, 2, bs));  // stored [1, 64, 32]
  REQUIRE(matmul(xs, ys).shape() == Shape{1, 32, 32});                       // control
  tgt::require_throws<ShapeError>(
      [&] { matmul(xs, ys, {.transpose_x = true}); },
      {"matmul", "layout of x (transposed) has 2 block-columns", "K=32", "layout of y has 4 block-rows", "K=64"});
  tgt::require_throws<ShapeError>(
      [&] { matmul(xs, ys, {.transpose_y = true}); },
      {"matmul", "layout of x has 4 block-columns", "K=64", "layout of y (transposed) has 2 block-rows", "K=32"});
  tgt::require_throws<ShapeError>([&] { matmul(xs, y, {.transpose_x = true}); },
                                  {"matmul", "x (transposed) has K=32", "y has K=64"});
  tgt::require_throws<ShapeError>([&] { matmul(x, ys, {.transpose_y = true}); },
                                  {"matmul", "x has K=64", "y (transposed) has K=32"});

  // layout_out must have the transposed product's shape: x [1, 32, 64] with transpose_x
  // and y [1, 32, 48] give [1, 64, 48], blocks [1, 4, 3]; [1, 2, 3] (x's stored rows) fails
  const Tensor y48 = zeros({1, 32, 48});
  REQUIRE(matmul(x, y48, full_layout(1, 4, 3, bs), {.transpose_x = true}).data().shape() == Shape{12, bs, bs});
  tgt::require_throws<ShapeError>([&] { matmul(x, y48, full_layout(1, 2, 3, bs), {.transpose_x = true}); },
                                  {"matmul", "layout_out", "[1, 4, 3]", "M=64", "N=48", "got [1, 2, 3]"});
  // transpose_y: x [1, 32, 64] · op(y [1, 48, 64]) gives [1, 32, 48], blocks [1, 2, 3]
  const Tensor yt48 = zeros({1, 48, 64});
  tgt::require_throws<ShapeError>([&] { matmul(x, yt48, full_layout(1, 2, 4, bs), {.transpose_y = true}); },
                                  {"matmul", "layout_out", "[1, 2, 3]", "M=32", "N=48", "got [1, 2, 4]"});
  // block-sparse x [1, 32, 64] (blocks [1, 2, 4]) with transpose_x: [1, 64, 48] again
  REQUIRE(matmul(xs, y48, full_layout(1, 4, 3, bs), {.transpose_x = true}).data().shape() == Shape{12, bs, bs});
  tgt::require_throws<ShapeError>([&] { matmul(xs, y48, full_layout(1, 2, 3, bs), {.transpose_x = true}); },
                                  {"matmul", "layout_out", "[1, 4, 3]", "got [1, 2, 3]"});
  // block-sparse y stored [1, 48, 64] (blocks [1, 3, 4]) with transpose_y: [1, 32, 48]
  const BlockSparseTensor yts(zeros({12, bs, bs}), full_layout(1, 3, 4, bs));
  REQUIRE(matmul(x, yts, full_layout(1, 2, 3, bs), {.transpose_y = true}).data().shape() == Shape{6, bs, bs});
  tgt::require_throws<ShapeError>([&] { matmul(x, yts, full_layout(1, 2, 4, bs), {.transpose_y = true}); },
                                  {"matmul", "layout_out", "[1, 2, 3]", "got [1, 2, 4]"});

  // divisibility of a transposed dense operand names its stored dim: x stored [1, 40, 32]
  // read transposed has K=40 in dim 1; stored [1, 32, 40], M=40 in dim 2
  tgt::require_throws<ShapeError>(
      [&] {
        matmul(zeros({1, 40, 32}), zeros({1, 40, 32}), full_layout(1, 2, 2, bs), {.transpose_x = true});
      },
      {"matmul", "x has K=40 (dim 1)", "multiple of the block size 16"});
  tgt::require_throws<ShapeError>(
      [&] {
        matmul(zeros({1, 32, 40}), BlockSparseTensor(zeros({4, bs, bs}), full_layout(1, 2, 2, bs)),
               {.transpose_x = true});
      },
      {"matmul", "x has M=40 (dim 2)", "multiple of the block size 16"});
  tgt::require_throws<ShapeError>(
      [&] {
        matmul(BlockSparseTensor(zeros({4, bs, bs}), full_layout(1, 2, 2, bs)), zeros({1, 40, 32}),
               {.transpose_y = true});
      },
      {"matmul", "y has N=40 (dim 1)", "multiple of the block size 16"});
}

// ---- CUDA against the CPU -------------------------------------------------------------

namespace {

// Forward and backward of mode m of case c on `dev` from the same host inputs; returns
// {out, dx, dy} on the CPU as f64.
std::vector<Tensor> run_on(Device dev, const Mode& m, const Case& c, const Tensor& xin, const Tensor& yin,
                           const Tensor& w) {
  Tensor x = xin.to(dev).detach().requires_grad_(), y = yin.to(dev).detach().requires_grad_();
  Tensor out = apply(m, c, x, y);
  REQUIRE(out.device() == dev);
  out.backward(w.to(dev));
  return {out.to(Device::cpu()).to(DType::f64), x.grad().to(Device::cpu()).to(DType::f64),
          y.grad().to(Device::cpu()).to(DType::f64)};
}

}  // namespace

TEST_CASE("sparse matmul transposed CUDA matches the CPU: every mode and combination, blocks 16 to 128",
          "[ops][sparse_matmul][cuda]") {
  TG_REQUIRE_CUDA();
  // bf16 and exact f32 (TF32 off), forward and backward, batch 2 on grids of 4 to 8 blocks a
  // side with densities 0.3 to 1 (at 64 and 128 the Hopper kernel where the GPU has it),
  // and the edge kinds of problems() (empty operands and outputs, k without overlap).
  // In bf16 at blocks 64 and 128 also each path forced: per-block, the grouped regions
  // (block 64) and every wgmma tiling (compute capability 9.0), against one CPU result.
  using ops::spmm::MmaPath;
  CudaSettingsGuard restore;
  set_allow_tf32(false);
  const bool hopper = ops::spmm::wgmma_supported(Device::cuda().index);
  std::uint64_t seed = 26000;
  for (std::int64_t bs : {16, 64, 128}) {
    const std::int64_t g = bs == 16 ? 8 : bs == 64 ? 6 : 4;  // grid extent
    std::vector<Problem> ps = {problem(2, g, g - 1, g, bs, 0.3, 0.5, 0.6, seed += 10),
                               problem(2, g - 1, g, g - 2, bs, 0.7, 0.6, 0.4, seed += 10),
                               problem(2, g, g, g, bs, 1.0, 1.0, 1.0, seed += 10)};
    // and the edge kinds of problems(): x empty, output empty, empty op(x) block-row and
    // op(y) block-column with an output block-row left out, k without overlap
    const std::vector<Problem> edge = problems(bs, seed += 10);
    ps.insert(ps.end(), edge.begin() + 3, edge.end());
    std::vector<std::pair<MmaPath, const char*>> paths = {{MmaPath::Auto, "auto"}};
    if (bs >= 64) {
      paths.push_back({MmaPath::PerBlock, "per-block"});
      if (bs == 64) {
        paths.push_back({MmaPath::Grouped, "grouped 128x128"});
        paths.push_back({MmaPath::GroupedWide, "grouped 64x128"});
        paths.push_back({MmaPath::GroupedTall, "grouped 128x64"});
      }
      if (hopper) {
        paths.push_back({MmaPath::WgmmaTmaNarrow, "wgmma, one block a tile"});
        paths.push_back({MmaPath::WgmmaTmaWide, "wgmma, row groups"});
        paths.push_back({MmaPath::WgmmaTmaWideColumns, "wgmma, column groups"});
        paths.push_back({MmaPath::WgmmaTmaRowPairs, "wgmma, pairs of row groups"});
        paths.push_back({MmaPath::WgmmaTmaColumnPairs, "wgmma, pairs of column groups"});
      }
    }
    for (const Problem& p : ps) {
      for (const Trans& t : kTrans) {
        const Case c = stored(p, t);
        const Inputs in = inputs(c, ++seed);
        const Tensor wd = tgt::rand64({p.B(), p.M(), p.N()}, ++seed);
        for (DType dt : {DType::bf16, DType::f32}) {
          const double rtol = dt == DType::bf16 ? 1.6e-2 : 1e-5;
          // sums of up to K products of values in [-1, 1]
          const double atol = rtol * std::sqrt(static_cast<double>(std::max({c.K(), c.M(), c.N()})));
          for (const Mode& m : kModes) {
            INFO(m.name << " " << describe(c) << " " << dtype_name(dt));
            const Tensor xin = input_of(in.xs, c.sx, m.x_sparse).to(dt), yin = input_of(in.ys, c.sy, m.y_sparse).to(dt);
            const Tensor w = input_of(wd, c.p.lo, m.out_sparse).to(dt);
            ops::spmm::set_mma_path(MmaPath::Auto);
            const std::vector<Tensor> cpu = run_on(Device::cpu(), m, c, xin, yin, w);
            for (const auto& [path, path_name] : paths) {
              if (dt != DType::bf16 && path != MmaPath::Auto) continue;  // the forced paths are 16-bit ones
              INFO(path_name);
              ops::spmm::set_mma_path(path);
              const std::vector<Tensor> gpu = run_on(Device::cuda(), m, c, xin, yin, w);
              const char* names[] = {"out", "dx", "dy"};
              for (std::size_t q = 0; q < 3; ++q) {
                INFO(names[q]);
                tgt::require_close(gpu[q], cpu[q], rtol, atol);
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace test_sparse_matmul_transpose
