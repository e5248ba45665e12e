// Tests of the block-sparse softmax (ops/sparse_softmax): f64 references written as plain
// loops over a dense matrix whose inactive (and masked) elements are excluded, -inf rows,
// nan, gradchecks, bad inputs, and CUDA against the CPU.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ops/sparse_softmax/sparse_softmax.h"
#include "ops/sparse_softmax/staged_threads.h"
#include "sparse_softmax_cases.h"
#include "util.h"

namespace test_sparse_softmax {

using namespace tg;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
const double kNan = std::nan("");

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// Block sizes 1, 2, 16, 32, 64, 128; batch 1-3; empty, one block, ~30%, full, and ~60% with
// a whole block-row and block-column left empty.
std::vector<Layout> test_layouts() {
  std::vector<Layout> out;
  std::uint64_t seed = 300;
  for (std::int64_t bs : {1, 2, 16, 32, 64, 128}) {
    // block grid extent: 2x2 / 2x3 from block 64 (at 128: at most 3 x 256 x 384 logical
    // elements, 196K of them in blocks)
    const std::int64_t g = bs >= 64 ? 2 : bs >= 16 ? 3 : 5;
    for (int kind = 0; kind < 5; ++kind) {
      const std::int64_t B = 1 + (kind + bs) % 3, Mb = g, Nb = g + 1 - kind % 2;
      ++seed;
      switch (kind) {
        case 0:
          out.push_back(random_layout(B, Mb, Nb, bs, 0.0, seed));
          break;
        case 1:
          out.push_back(tgt::layout_where(
              B, Mb, Nb, bs, [&](auto b, auto r, auto c) { return b == B - 1 && r == Mb / 2 && c == Nb - 1; }));
          break;
        case 2:
          out.push_back(random_layout(B, Mb, Nb, bs, 0.3, seed));
          break;
        case 3:
          out.push_back(full_layout(B, Mb, Nb, bs));
          break;
        default: {
          Layout r = random_layout(B, Mb, Nb, bs, 0.6, seed);
          out.push_back(tgt::layout_where(
              B, Mb, Nb, bs, [&](auto b, auto rr, auto c) { return rr != 1 && c != 0 && r.active(b, rr, c); }));
        }
      }
    }
  }
  return out;
}

std::string describe(const Layout& l) {
  return detail::concat("layout B=", l.batch(), " Mb=", l.block_rows(), " Nb=", l.block_cols(), " bs=", l.block_size(),
                        " active=", l.n_blocks());
}

bool active(const Layout& l, std::int64_t b, std::int64_t i, std::int64_t j) {
  return l.active(b, i / l.block_size(), j / l.block_size());
}

// A random element mask: mask layout `ml` (its blocks may lie outside x's layout), each
// element of an active mask block true with probability `percent`/100. Returns the mask
// and, in `excl`, the dense [B, M, N] exclusion flags it stands for.
BlockSparseTensor random_mask(const Layout& ml, int percent, std::uint64_t seed, std::vector<char>& excl) {
  const std::int64_t B = ml.batch(), M = ml.rows(), N = ml.cols();
  std::mt19937_64 rng(seed);
  std::vector<double> m(at(B * M * N));
  for (double& v : m) v = static_cast<int>(rng() % 100) < percent ? 1.0 : 0.0;
  excl.assign(m.size(), 0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) {
        const std::size_t e = at((b * M + i) * N + j);
        excl[e] = active(ml, b, i, j) && m[e] != 0.0;
      }
  BlockSparseTensor md = to_sparse(from_vector(m, {B, M, N}), ml);
  return BlockSparseTensor(md.data().to(DType::boolean), ml);
}

// Expected softmax(scale * x) as a dense [B, M, N] (nan at inactive positions) from the
// dense values d of x; `excl` (dense flags, or empty) marks masked elements.
Tensor reference(const Layout& l, const std::vector<double>& d, const std::vector<char>& excl, double scale) {
  const std::int64_t B = l.batch(), M = l.rows(), N = l.cols();
  std::vector<double> y(at(B * M * N), kNan);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M; ++i) {
      double m = -kInf;
      bool nan = false;
      auto included = [&](std::int64_t j) {
        const std::size_t e = at((b * M + i) * N + j);
        return active(l, b, i, j) && (excl.empty() || !excl[e]);
      };
      for (std::int64_t j = 0; j < N; ++j) {
        if (!included(j)) continue;
        const double z = scale * d[at((b * M + i) * N + j)];
        if (std::isnan(z))
          nan = true;
        else
          m = std::max(m, z);
      }
      double s = 0;
      for (std::int64_t j = 0; j < N; ++j)
        if (included(j)) s += std::exp(scale * d[at((b * M + i) * N + j)] - m);
      for (std::int64_t j = 0; j < N; ++j) {
        if (!active(l, b, i, j)) continue;
        const std::size_t e = at((b * M + i) * N + j);
        if (!included(j))
          y[e] = 0.0;
        else if (nan)
          y[e] = kNan;
        else if (m == -kInf)
          y[e] = 0.0;
        else
          y[e] = std::exp(scale * d[e] - m) / s;
      }
    }
  return from_vector(y, {B, M, N});
}

// Expected input gradient as a dense [B, M, N] (nan at inactive positions) from the dense
// forward output y and output gradient g.
Tensor reference_grad(const Layout& l, const std::vector<double>& y, const std::vector<double>& g, double scale) {
  const std::int64_t B = l.batch(), M = l.rows(), N = l.cols();
  std::vector<double> dx(at(B * M * N), kNan);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M; ++i) {
      double s = 0;
      for (std::int64_t j = 0; j < N; ++j) {
        const std::size_t e = at((b * M + i) * N + j);
        if (active(l, b, i, j) && y[e] != 0.0) s += y[e] * g[e];
      }
      for (std::int64_t j = 0; j < N; ++j) {
        const std::size_t e = at((b * M + i) * N + j);
        if (active(l, b, i, j)) dx[e] = y[e] != 0.0 ? scale * y[e] * (g[e] - s) : 0.0;
      }
    }
  return from_vector(dx, {B, M, N});
}

// A random dense f64 [B, M, N], its values, and its block-sparse part under l.
struct Sample {
  std::vector<double> d;
  BlockSparseTensor x;
};
Sample sample(const Layout& l, std::uint64_t seed, double lo = -3.0, double hi = 3.0) {
  Tensor dense = tgt::rand64({l.batch(), l.rows(), l.cols()}, seed, lo, hi);
  return {tgt::values(dense), to_sparse(dense, l)};
}

// Values of a storage dtype, read back as f64 (what a bf16 / f16 kernel actually sees).
std::vector<double> rounded(const std::vector<double>& d, DType dt) {
  return tgt::values(from_vector(d, {static_cast<std::int64_t>(d.size())}).to(dt));
}

}  // namespace

TEST_CASE("block-sparse softmax matches a masked f64 reference", "[ops][sparse_softmax]") {
  std::uint64_t seed = 1;
  const double scales[] = {1.0, 0.37, -1.6};
  int q = 0;
  for (const Layout& l : test_layouts()) {
    const double scale = scales[q++ % 3];
    INFO(describe(l) << " scale " << scale);
    Sample s = sample(l, ++seed);
    BlockSparseTensor y = softmax(s.x, scale);
    REQUIRE(y.layout() == l);
    REQUIRE(y.dtype() == DType::f64);
    tgt::require_close(to_dense(y, kNan), reference(l, s.d, {}, scale), 1e-12, 1e-15);
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      INFO("dtype " << dtype_name(dt));
      BlockSparseTensor xl(s.x.data().to(dt), l);
      BlockSparseTensor yl = softmax(xl, scale);
      REQUIRE(yl.dtype() == dt);
      const double tol = dt == DType::f32 ? 1e-5 : dt == DType::f16 ? 2e-3 : 1e-2;
      tgt::require_close(to_dense(yl, kNan), reference(l, rounded(s.d, dt), {}, scale), tol, tol * 1e-2);
    }
  }
}

TEST_CASE("block-sparse softmax on the CPU: block-rows split over threads match the f64 reference",
          "[ops][sparse_softmax]") {
  // 24 block-rows of ~11K elements: the CPU kernels cut them into ranges of ~64K elements
  // (about five ranges), each with its own scratch; forward, masked forward and backward
  Layout l = random_layout(2, 12, 4, 64, 0.7, 7300);
  Sample s = sample(l, 7301);
  std::vector<char> excl;
  BlockSparseTensor mask = random_mask(random_layout(2, 12, 4, 64, 0.8, 7302), 30, 7303, excl);
  tgt::require_close(to_dense(softmax(s.x, 0.8), kNan), reference(l, s.d, {}, 0.8), 1e-12, 1e-15);
  BlockSparseTensor y = masked_softmax(s.x, mask, 0.8);
  const Tensor want = reference(l, s.d, excl, 0.8);
  tgt::require_close(to_dense(y, kNan), want, 1e-12, 1e-15);
  Tensor g = tgt::rand64({l.batch(), l.rows(), l.cols()}, 7304);
  BlockSparseTensor dy = to_sparse(g, l);
  tgt::require_close(to_dense(softmax_backward(y, dy, 0.8), kNan),
                     reference_grad(l, tgt::values(want), tgt::values(g), 0.8), 1e-11, 1e-14);
  BlockSparseTensor x32(s.x.data().to(DType::f32), l);
  tgt::require_close(to_dense(softmax(x32, 0.8), kNan), reference(l, rounded(s.d, DType::f32), {}, 0.8), 1e-5,
                     1e-7);
}

TEST_CASE("block-sparse softmax: -inf rows give zeros, nan propagates, empty rows stay unwritten",
          "[ops][sparse_softmax]") {
  // batch 0: block-row 0 has blocks (0,0), (0,2); block-row 1 is empty.
  const std::int64_t bs = 2, N = 3 * bs;
  Layout l = tgt::layout_where(1, 2, 3, bs, [](auto, auto r, auto c) { return r == 0 && c != 1; });
  std::vector<double> d(at(2 * bs * N), 0.0);
  auto set = [&](std::int64_t i, std::int64_t j, double v) { d[at(i * N + j)] = v; };
  set(0, 0, 1.0);
  set(0, 1, -kInf);
  set(0, 4, 2.0);
  set(0, 5, 0.5);  // one -inf among finite values
  set(1, 0, -kInf);
  set(1, 1, -kInf);
  set(1, 4, -kInf);
  set(1, 5, -kInf);  // all -inf
  BlockSparseTensor x = to_sparse(from_vector(d, {1, 2 * bs, N}), l);
  Tensor y = to_dense(softmax(x), 7.0);  // 7: never written
  const double e1 = std::exp(1.0), e2 = std::exp(2.0), e5 = std::exp(0.5), z = e1 + e2 + e5;
  std::vector<double> want = {e1 / z, 0.0, 7.0, 7.0, e2 / z, e5 / z,  // row 0
                              0.0,    0.0, 7.0, 7.0, 0.0,    0.0,     // row 1: zeros, not nan
                              7.0,    7.0, 7.0, 7.0, 7.0,    7.0,     // rows 2, 3: no blocks
                              7.0,    7.0, 7.0, 7.0, 7.0,    7.0};
  tgt::require_close(y, from_vector(want, {1, 2 * bs, N}), 1e-15, 0);
  // a nan makes its whole row nan and leaves the other rows alone
  set(1, 4, kNan);
  set(0, 5, kNan);
  Tensor yn = to_dense(softmax(to_sparse(from_vector(d, {1, 2 * bs, N}), l)), 7.0);
  auto v = tgt::values(yn);
  for (std::int64_t j : {0, 1, 4, 5}) {
    INFO("column " << j);
    REQUIRE(std::isnan(v[at(j)]));
    REQUIRE(std::isnan(v[at(N + j)]));
  }
  // f32 and bf16 agree on the same special rows
  for (DType dt : {DType::f32, DType::bf16}) {
    BlockSparseTensor xl(x.data().to(dt), l);
    tgt::require_close(to_dense(softmax(xl), 7.0), from_vector(want, {1, 2 * bs, N}), 1e-2, 1e-6);
  }
}

TEST_CASE("block-sparse softmax on a full layout equals the dense softmax", "[ops][sparse_softmax]") {
  Layout l = full_layout(2, 3, 4, 16);
  Tensor dense = tgt::rand64({2, 48, 64}, 17, -4.0, 4.0);
  Tensor yd = softmax(dense, 0.5);  // the dense overload keeps working next to the block-sparse one
  REQUIRE(yd.shape() == Shape{2, 48, 64});
  tgt::require_close(to_dense(softmax(to_sparse(dense, l), 0.5)), yd, 1e-13, 1e-15);
  Tensor g = tgt::rand64({2, 48, 64}, 18);
  tgt::require_close(to_dense(softmax_backward(to_sparse(yd, l), to_sparse(g, l), 0.5)), softmax_backward(yd, g, 0.5),
                     1e-13, 1e-15);
}

TEST_CASE("masked_softmax matches a masked f64 reference", "[ops][sparse_softmax]") {
  std::uint64_t seed = 40;
  for (const Layout& l : test_layouts()) {
    INFO(describe(l));
    // mask blocks: a random half of the grid, independent of x's layout
    Layout ml = random_layout(l.batch(), l.block_rows(), l.block_cols(), l.block_size(), 0.5, ++seed);
    std::vector<char> excl;
    BlockSparseTensor mask = random_mask(ml, 40, ++seed, excl);
    Sample s = sample(l, ++seed);
    const double scale = 0.8;
    BlockSparseTensor y = masked_softmax(s.x, mask, scale);
    REQUIRE(y.layout() == l);
    tgt::require_close(to_dense(y, kNan), reference(l, s.d, excl, scale), 1e-12, 1e-15);
    BlockSparseTensor x32(s.x.data().to(DType::f32), l);
    tgt::require_close(to_dense(masked_softmax(x32, mask, scale), kNan),
                       reference(l, rounded(s.d, DType::f32), excl, scale), 1e-5, 1e-7);
  }
}

TEST_CASE("masked_softmax: excluded rows give zeros, excluded nan is ignored", "[ops][sparse_softmax]") {
  const std::int64_t bs = 4;
  Layout l = full_layout(1, 2, 2, bs);  // [1, 8, 8]
  Sample s = sample(l, 5);
  // mask: one block (0, 0, 1) with row 1 fully true and element (2, 5) true; and a block
  // (0, 1, 0) with row 4 (in-block row 0) true
  Layout ml =
      tgt::layout_where(1, 2, 2, bs, [](auto, auto r, auto c) { return (r == 0 && c == 1) || (r == 1 && c == 0); });
  std::vector<double> m(64, 0.0);
  for (std::int64_t j = 0; j < 8; ++j) m[at(1 * 8 + j)] = 1.0;  // only columns 4-7 lie in the mask block
  m[at(2 * 8 + 5)] = 1.0;
  for (std::int64_t j = 0; j < 4; ++j) m[at(4 * 8 + j)] = 1.0;
  BlockSparseTensor mask(to_sparse(from_vector(m, {1, 8, 8}), ml).data().to(DType::boolean), ml);
  std::vector<char> excl(64, 0);
  for (std::int64_t j = 4; j < 8; ++j) excl[at(1 * 8 + j)] = 1;
  excl[at(2 * 8 + 5)] = 1;
  for (std::int64_t j = 0; j < 4; ++j) excl[at(4 * 8 + j)] = 1;
  // a nan at an excluded position changes nothing
  s.d[at(2 * 8 + 5)] = kNan;
  BlockSparseTensor x = to_sparse(from_vector(s.d, {1, 8, 8}), l);
  tgt::require_close(to_dense(masked_softmax(x, mask)), reference(l, s.d, excl, 1.0), 1e-12, 1e-15);
  // row 1 is half excluded: the other half sums to 1
  auto y = tgt::values(to_dense(masked_softmax(x, mask)));
  double row1 = 0;
  for (std::int64_t j = 0; j < 8; ++j) row1 += y[at(8 + j)];
  REQUIRE(row1 == Approx(1.0));
  // a fully excluded row gives zeros
  Layout lx = tgt::layout_where(1, 2, 2, bs, [](auto, auto r, auto c) { return r == 0 && c == 1; });
  BlockSparseTensor xs = to_sparse(from_vector(s.d, {1, 8, 8}), lx);
  auto ys = tgt::values(to_dense(masked_softmax(xs, mask), kNan));
  for (std::int64_t j = 4; j < 8; ++j) REQUIRE(ys[at(8 + j)] == 0.0);
  // a nan row stays nan where included and 0 where excluded
  s.d[at(2 * 8 + 1)] = kNan;
  auto yn = tgt::values(to_dense(masked_softmax(to_sparse(from_vector(s.d, {1, 8, 8}), l), mask)));
  for (std::int64_t j = 0; j < 8; ++j) {
    INFO("column " << j);
    if (j == 5)
      REQUIRE(yn[at(16 + j)] == 0.0);
    else
      REQUIRE(std::isnan(yn[at(16 + j)]));
  }
}

TEST_CASE("block-sparse softmax backward matches the f64 reference", "[ops][sparse_softmax]") {
  std::uint64_t seed = 70;
  int q = 0;
  for (const Layout& l : test_layouts()) {
    const bool masked = q++ % 2 == 1;
    const double scale = masked ? 1.3 : 0.6;
    INFO(describe(l) << (masked ? " masked" : ""));
    Sample s = sample(l, ++seed);
    Tensor g = tgt::rand64({l.batch(), l.rows(), l.cols()}, ++seed);
    std::vector<char> excl;
    BlockSparseTensor mask;
    if (masked) {
      Layout ml = random_layout(l.batch(), l.block_rows(), l.block_cols(), l.block_size(), 0.7, ++seed);
      mask = random_mask(ml, 30, ++seed, excl);
    }
    Tensor xd = s.x.data().detach().requires_grad_();
    BlockSparseTensor x(xd, l);
    BlockSparseTensor y = masked ? masked_softmax(x, mask, scale) : softmax(x, scale);
    BlockSparseTensor dy = to_sparse(g, l);
    y.data().backward(dy.data());
    Tensor want = reference_grad(l, tgt::values(reference(l, s.d, excl, scale)), tgt::values(g), scale);
    tgt::require_close(to_dense(BlockSparseTensor(xd.grad(), l), kNan), want, 1e-11, 1e-14);
    tgt::require_close(to_dense(softmax_backward(y, dy, scale), kNan), want, 1e-11, 1e-14);
    BlockSparseTensor y32(y.data().detach().to(DType::f32), l), dy32(dy.data().to(DType::f32), l);
    tgt::require_close(to_dense(softmax_backward(y32, dy32, scale), kNan), want, 1e-4, 1e-6);
  }
}

TEST_CASE("block-sparse softmax backward: excluded elements get exactly 0", "[ops][sparse_softmax]") {
  Layout l = full_layout(1, 1, 2, 2);  // [1, 2, 4]
  std::vector<double> m = {1, 0, 0, 0, 0, 0, 1, 1};
  BlockSparseTensor mask(to_sparse(from_vector(m, {1, 2, 4}), l).data().to(DType::boolean), l);
  Tensor xd = to_sparse(tgt::rand64({1, 2, 4}, 3), l).data().detach().requires_grad_();
  BlockSparseTensor y = masked_softmax(BlockSparseTensor(xd, l), mask);
  // dy is nan and inf at excluded positions: neither reaches any gradient
  std::vector<double> g = {kNan, 0.5, -1.0, 2.0, 0.25, 3.0, kInf, kNan};
  y.data().backward(to_sparse(from_vector(g, {1, 2, 4}), l).data());
  auto dx = tgt::values(to_dense(BlockSparseTensor(xd.grad(), l)));
  REQUIRE(dx[0] == 0.0);
  REQUIRE(dx[6] == 0.0);
  REQUIRE(dx[7] == 0.0);
  for (std::size_t i : {1u, 2u, 3u, 4u, 5u}) REQUIRE(std::isfinite(dx[i]));
  // the included elements of each row: gradients sum to 0 (softmax is shift-invariant)
  REQUIRE(dx[1] + dx[2] + dx[3] == Approx(0.0).margin(1e-12));
  REQUIRE(dx[4] + dx[5] == Approx(0.0).margin(1e-12));
}

TEST_CASE("block-sparse softmax gradcheck", "[ops][sparse_softmax][gradcheck]") {
  auto check = [](const char* what, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                  const std::vector<Tensor>& in) {
    auto r = autograd::gradcheck(f, in);
    INFO(what << ": " << r.report);
    REQUIRE(r.ok);
  };
  // a block-row and a block-column without blocks, 2x2 blocks
  Layout l =
      tgt::layout_where(2, 3, 3, 2, [](auto b, auto r, auto c) { return r != 1 && c != 2 && (b + r + c) % 4 != 3; });
  REQUIRE(l.n_blocks() > 0);
  Tensor xd = tgt::rand64({l.n_blocks(), 2, 2}, 11, -2.0, 2.0).requires_grad_();
  check("softmax", [&](const std::vector<Tensor>& in) { return softmax(BlockSparseTensor(in[0], l), 0.7).data(); },
        {xd});
  std::vector<char> excl;
  BlockSparseTensor mask = random_mask(random_layout(2, 3, 3, 2, 0.6, 12), 40, 13, excl);
  check("masked_softmax",
        [&](const std::vector<Tensor>& in) { return masked_softmax(BlockSparseTensor(in[0], l), mask, -1.2).data(); },
        {xd});
  // bs 1, composed with other ops
  Layout l1 = random_layout(1, 4, 5, 1, 0.6, 14);
  Tensor x1 = tgt::rand64({l1.n_blocks(), 1, 1}, 15).requires_grad_();
  check("softmax bs 1",
        [&](const std::vector<Tensor>& in) { return mul(softmax(BlockSparseTensor(in[0], l1)).data(), in[0]); }, {x1});
}

namespace {

// A layout of Mb x Nb blocks with a block-row and a block-column left empty (when there
// are three of them) and a hole elsewhere, so rows of one and of several blocks.
Layout gradcheck_layout(std::int64_t B, std::int64_t Mb, std::int64_t Nb, std::int64_t bs) {
  return tgt::layout_where(B, Mb, Nb, bs, [=](auto b, auto r, auto c) {
    return !(Mb > 2 && r == 1) && !(Nb > 2 && c == Nb - 1) && !(Mb > 1 && Nb > 1 && r == 0 && c == b % Nb);
  });
}

void check_softmax_gradcheck(const std::string& what, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                             const std::vector<Tensor>& in, autograd::GradcheckOptions opts = {}) {
  auto r = autograd::gradcheck(f, in, opts);
  INFO(what << ": " << r.report);
  REQUIRE(r.ok);
}

}  // namespace

TEST_CASE("block-sparse softmax gradcheck at blocks 16 and 32, element by element",
          "[ops][sparse_softmax][gradcheck]") {
  // softmax at scale 0.7 and masked_softmax (a random mask on another layout) at -1.2; 2x3
  // blocks of 16 in two batches (rows of one and two blocks), 2x2 of 32 (an element-wise
  // check at 64 costs two softmax calls on 4096+ elements an element: seconds; the next test
  // takes 64 and 128)
  struct Case {
    std::int64_t B, Mb, Nb, bs;
  };
  std::uint64_t seed = 200;
  for (const Case& c : {Case{2, 2, 3, 16}, Case{1, 2, 2, 32}}) {
    const Layout l = gradcheck_layout(c.B, c.Mb, c.Nb, c.bs);
    INFO(describe(l));
    REQUIRE(l.n_blocks() > 0);
    Tensor xd = tgt::rand64({l.n_blocks(), c.bs, c.bs}, ++seed, -2.0, 2.0).requires_grad_();
    check_softmax_gradcheck(
        "softmax", [&](const std::vector<Tensor>& in) { return softmax(BlockSparseTensor(in[0], l), 0.7).data(); },
        {xd});
    std::vector<char> excl;
    BlockSparseTensor mask = random_mask(random_layout(c.B, c.Mb, c.Nb, c.bs, 0.6, seed + 1), 40, seed + 2, excl);
    seed += 2;
    check_softmax_gradcheck(
        "masked_softmax",
        [&](const std::vector<Tensor>& in) { return masked_softmax(BlockSparseTensor(in[0], l), mask, -1.2).data(); },
        {xd});
  }
}

TEST_CASE("block-sparse softmax gradcheck at blocks 64 and 128, along random directions",
          "[ops][sparse_softmax][gradcheck]") {
  // gradcheck's directional mode, four random directions D over every stored element: it
  // compares <dL/dx, D_i> from the backward (every element of dx weighs in) with central
  // differences, two softmax calls a direction instead of two an element (24K and 98K
  // elements here). Tighter than the default tolerances (a step of 1e-5: the difference is
  // off by ~1e-10 times the third derivative), so that an error in a few elements of dx is
  // not lost in the sum over all of them.
  autograd::GradcheckOptions opts;
  opts.eps = 1e-5;
  opts.rtol = 1e-6;
  opts.atol = 1e-8;
  opts.directions = 4;
  std::uint64_t seed = 250;
  for (std::int64_t bs : {64, 128}) {
    const Layout l = gradcheck_layout(2, 2, 2, bs);
    INFO(describe(l));
    const Tensor x0 = tgt::rand64({l.n_blocks(), bs, bs}, ++seed, -2.0, 2.0).requires_grad_();
    opts.seed = ++seed;
    std::vector<char> excl;
    BlockSparseTensor mask = random_mask(random_layout(2, 2, 2, bs, 0.6, seed + 1), 40, seed + 2, excl);
    seed += 2;
    check_softmax_gradcheck(
        "softmax",
        [&](const std::vector<Tensor>& in) { return softmax(BlockSparseTensor(in[0], l), 0.7).data(); }, {x0}, opts);
    check_softmax_gradcheck(
        "masked_softmax",
        [&](const std::vector<Tensor>& in) { return masked_softmax(BlockSparseTensor(in[0], l), mask, -1.2).data(); },
        {x0}, opts);
  }
}

namespace {

// REQUIREs that dx (logical dense f64 [B, M, N], active positions compared) from a forward
// and backward in a dtype of unit roundoff u matches the f64 reference gradient of the
// reference output y (from the same rounded x) and the rounded output gradient g, within
// the error the dtype's roundings allow: the stored y is off by u * y_e (+ `floor`, f16's
// subnormal spacing), which moves s = sum_j y_j g_j by u * S1 + floor * G1 (S1 = sum_j y_j |g_j|,
// G1 = sum_j |g_j|), and dx = scale * y * (g - s) is rounded once more. c: a margin.
void require_grad_within(const Layout& l, const Tensor& got, const std::vector<double>& y, const std::vector<double>& g,
                         double scale, double u, double floor, double c) {
  const std::int64_t B = l.batch(), M = l.rows(), N = l.cols();
  const std::vector<double> want = tgt::values(reference_grad(l, y, g, scale)), v = tgt::values(got);
  std::size_t bad = 0, first = 0;
  double worst_ratio = 0;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M; ++i) {
      double s = 0, s1 = 0, g1 = 0;
      for (std::int64_t j = 0; j < N; ++j) {
        const std::size_t e = at((b * M + i) * N + j);
        if (!active(l, b, i, j) || y[e] == 0.0) continue;
        s += y[e] * g[e];
        s1 += y[e] * std::fabs(g[e]);
        g1 += std::fabs(g[e]);
      }
      for (std::int64_t j = 0; j < N; ++j) {
        const std::size_t e = at((b * M + i) * N + j);
        if (!active(l, b, i, j)) continue;
        const double dy_e = u * y[e] + floor;
        const double bound = c * (u * std::fabs(want[e]) + floor +
                                  std::fabs(scale) * (dy_e * std::fabs(g[e] - s) + y[e] * (u * s1 + floor * g1))) +
                             1e-300;
        const double err = std::fabs(v[e] - want[e]);
        worst_ratio = std::max(worst_ratio, err / bound);
        if (!(err <= bound)) {
          if (!bad) first = e;
          ++bad;
        }
      }
    }
  INFO(bad << " elements outside their bound; first at flat index " << first << ": got " << v[first] << ", expected "
           << want[first] << ", y " << y[first] << "; worst |error| / bound " << worst_ratio);
  REQUIRE(bad == 0);
}

}  // namespace

TEST_CASE("block-sparse softmax backward in f32, bf16 and f16 matches the f64 reference", "[ops][sparse_softmax]") {
  // forward and autograd backward in the dtype, masked and not, at every test layout
  // (block sizes 1 to 128), against the f64 reference of the same rounded x and dy
  std::uint64_t seed = 400;
  int q = 0;
  for (const Layout& l : test_layouts()) {
    const bool masked = q++ % 2 == 0;
    const double scale = masked ? -0.9 : 1.3;
    Sample s = sample(l, ++seed);
    const std::vector<double> gv = tgt::values(tgt::rand64({l.batch(), l.rows(), l.cols()}, ++seed));
    std::vector<char> excl;
    BlockSparseTensor mask;
    if (masked) {
      mask = random_mask(random_layout(l.batch(), l.block_rows(), l.block_cols(), l.block_size(), 0.7, seed + 1), 30,
                         seed + 2, excl);
      seed += 2;
    }
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      INFO(describe(l) << (masked ? " masked" : "") << " scale " << scale << " dtype " << dtype_name(dt));
      // unit roundoff; f16's subnormal spacing (softmax outputs of long rows go below 2^-14)
      const double u = dt == DType::f32    ? std::ldexp(1.0, -24)
                       : dt == DType::bf16 ? std::ldexp(1.0, -8)
                                           : std::ldexp(1.0, -11);
      const double floor = dt == DType::f16 ? std::ldexp(1.0, -24) : 0.0;
      const std::vector<double> xr = rounded(s.d, dt), gr = rounded(gv, dt);
      Tensor xd = s.x.data().to(dt).detach().requires_grad_();
      BlockSparseTensor x(xd, l);
      BlockSparseTensor y = masked ? masked_softmax(x, mask, scale) : softmax(x, scale);
      y.data().backward(to_sparse(from_vector(gr, {l.batch(), l.rows(), l.cols()}), l).data().to(dt));
      REQUIRE(xd.grad().dtype() == dt);
      const std::vector<double> yref = tgt::values(reference(l, xr, excl, scale));
      // f32: the exponentials and sums of the forward add a few ulp of their own (measured:
      // errors up to ~0.45 of the bound at c = 16; 16-bit ones up to ~0.25 at c = 3)
      require_grad_within(l, to_dense(BlockSparseTensor(xd.grad().to(DType::f64), l), kNan), yref, gr, scale, u, floor,
                          dt == DType::f32 ? 16.0 : 3.0);
    }
  }
}

namespace {

// softmax and masked_softmax (a mask excluding nothing) of the [1, 4, 6] values d at block 2
// (blocks (0, 0), (0, 2) and (1, 1)), forward and autograd backward in f64, f32, bf16 and f16
// at the given scale: exactly 0 output and gradient at every -inf, and elsewhere the
// softmax of scale * x over the row's finite elements (with scale > 0, -inf is "excluded"),
// with its f64 gradient.
void check_minus_inf(const std::vector<double>& d, double scale) {
  const std::int64_t bs = 2, M = 4, N = 6;
  const Layout l =
      tgt::layout_where(1, 2, 3, bs, [](auto, auto r, auto c) { return (r == 0 && c != 1) || (r == 1 && c == 1); });
  auto finite = [&](std::int64_t i, std::int64_t j) { return active(l, 0, i, j) && std::isfinite(d[at(i * N + j)]); };
  std::vector<double> yw(at(M * N), kNan);
  for (std::int64_t i = 0; i < M; ++i) {
    double m = -kInf, sum = 0;
    for (std::int64_t j = 0; j < N; ++j)
      if (finite(i, j)) m = std::max(m, scale * d[at(i * N + j)]);
    for (std::int64_t j = 0; j < N; ++j)
      if (finite(i, j)) sum += std::exp(scale * d[at(i * N + j)] - m);
    for (std::int64_t j = 0; j < N; ++j)
      if (active(l, 0, i, j)) yw[at(i * N + j)] = finite(i, j) ? std::exp(scale * d[at(i * N + j)] - m) / sum : 0.0;
  }
  const std::vector<double> gv = tgt::values(tgt::rand64({1, M, N}, 77));
  const Tensor dxw = reference_grad(l, yw, gv, scale);
  for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    for (bool masked : {false, true}) {
      INFO("scale " << scale << " dtype " << dtype_name(dt) << (masked ? " masked (nothing excluded)" : ""));
      Tensor xd = to_sparse(from_vector(d, {1, M, N}), l).data().to(dt).detach().requires_grad_();
      BlockSparseTensor x(xd, l);
      const BlockSparseTensor none(zeros({l.n_blocks(), bs, bs}, {.dtype = DType::boolean}), l);
      BlockSparseTensor y = masked ? masked_softmax(x, none, scale) : softmax(x, scale);
      y.data().backward(to_sparse(from_vector(gv, {1, M, N}), l).data().to(dt));
      const Tensor yd = to_dense(BlockSparseTensor(y.data().to(DType::f64), l), kNan);
      const Tensor gd = to_dense(BlockSparseTensor(xd.grad().to(DType::f64), l), kNan);
      const std::vector<double> yv = tgt::values(yd), gx = tgt::values(gd);
      for (std::int64_t i = 0; i < M; ++i)
        for (std::int64_t j = 0; j < N; ++j) {
          if (!active(l, 0, i, j) || finite(i, j)) continue;
          INFO("-inf at (" << i << ", " << j << ")");
          REQUIRE(yv[at(i * N + j)] == 0.0);
          REQUIRE(gx[at(i * N + j)] == 0.0);
        }
      const double tol = dt == DType::f64 ? 1e-14 : dt == DType::f32 ? 1e-6 : dt == DType::f16 ? 2e-3 : 1e-2;
      tgt::require_close(yd, from_vector(yw, {1, M, N}), tol, tol * 1e-2);
      tgt::require_close(gd, dxw, 4 * tol, tol);
    }
  }
}

// [1, 4, 6] values for check_minus_inf: rows 0 (two blocks) and 2 (one block) all -inf,
// rows 1 and 3 finite; with `mixed`, one -inf among row 1's finite values.
std::vector<double> minus_inf_rows(bool mixed) {
  const std::int64_t N = 6;
  std::vector<double> d(24, 0.0);
  auto set = [&](std::int64_t i, std::int64_t j, double v) { d[at(i * N + j)] = v; };
  for (std::int64_t j : {0, 1, 4, 5}) set(0, j, -kInf);
  set(1, 0, 0.3);
  set(1, 1, mixed ? -kInf : 0.7);
  set(1, 4, -1.1);
  set(1, 5, 2.0);
  set(2, 2, -kInf);
  set(2, 3, -kInf);
  set(3, 2, 0.5);
  set(3, 3, -0.25);
  return d;
}

}  // namespace

TEST_CASE("block-sparse softmax: rows of -inf give exactly 0 and a 0 gradient at positive scales",
          "[ops][sparse_softmax]") {
  // OPS.md: a row whose active values are all -inf yields zeros (not nan).
  for (double scale : {1.0, 0.37, 2.5}) DYNAMIC_SECTION("scale " << scale) {
      check_minus_inf(minus_inf_rows(false), scale);
    }
}

TEST_CASE("block-sparse softmax: -inf elements among finite ones are excluded at positive scales",
          "[ops][sparse_softmax]") {
  // 0 at -inf, the softmax of the row's finite values elsewhere
  for (double scale : {1.0, 0.37, 2.5}) DYNAMIC_SECTION("scale " << scale) {
      check_minus_inf(minus_inf_rows(true), scale);
    }
}

TEST_CASE("block-sparse softmax: at scale <= 0 a -inf scales to nan or +inf (IEEE), which a mask avoids",
          "[ops][sparse_softmax]") {
  // sparse_softmax.h: scaling is IEEE arithmetic, so 0 * -inf = nan and -0.6 * -inf = +inf
  // make every output of a row holding a -inf nan; rows without one are plain softmaxes.
  // masked_softmax with those elements excluded gives zeros there and the softmax of the
  // rest at any scale.
  const std::int64_t bs = 2, M = 4, N = 6;
  const Layout l =
      tgt::layout_where(1, 2, 3, bs, [](auto, auto r, auto c) { return (r == 0 && c != 1) || (r == 1 && c == 1); });
  const std::vector<double> d = minus_inf_rows(true);
  std::vector<double> flags(d.size());
  for (std::size_t e = 0; e < d.size(); ++e) flags[e] = std::isinf(d[e]) ? 1.0 : 0.0;
  const BlockSparseTensor excl(to_sparse(from_vector(flags, {1, M, N}), l).data().to(DType::boolean), l);
  for (double scale : {0.0, -0.6}) {
    for (DType dt : {DType::f64, DType::f32}) {
      INFO("scale " << scale << " dtype " << dtype_name(dt));
      const BlockSparseTensor x(to_sparse(from_vector(d, {1, M, N}), l).data().to(dt), l);
      const std::vector<double> y = tgt::values(to_dense(BlockSparseTensor(softmax(x, scale).data().to(DType::f64), l), kNan));
      const std::vector<double> ym =
          tgt::values(to_dense(BlockSparseTensor(masked_softmax(x, excl, scale).data().to(DType::f64), l), kNan));
      for (std::int64_t i = 0; i < M; ++i) {
        bool has_inf = false;
        double m = -kInf, sum = 0;
        for (std::int64_t j = 0; j < N; ++j) {
          if (!active(l, 0, i, j)) continue;
          const double v = d[at(i * N + j)];
          has_inf = has_inf || std::isinf(v);
          if (!std::isinf(v)) m = std::max(m, scale * v);
        }
        for (std::int64_t j = 0; j < N; ++j)
          if (active(l, 0, i, j) && !std::isinf(d[at(i * N + j)])) sum += std::exp(scale * d[at(i * N + j)] - m);
        for (std::int64_t j = 0; j < N; ++j) {
          if (!active(l, 0, i, j)) continue;
          INFO("(" << i << ", " << j << ")");
          const double v = d[at(i * N + j)];
          const double want = std::isinf(v) ? 0.0 : std::exp(scale * v - m) / sum;
          if (has_inf) REQUIRE(std::isnan(y[at(i * N + j)]));
          else REQUIRE(y[at(i * N + j)] == Approx(want).epsilon(1e-6));
          REQUIRE(ym[at(i * N + j)] == Approx(want).epsilon(1e-6).margin(1e-12));
        }
      }
    }
  }
}

TEST_CASE("block-sparse softmax bad inputs", "[ops][sparse_softmax]") {
  Layout l = full_layout(2, 2, 3, 4);  // [2, 8, 12]
  BlockSparseTensor x(zeros({12, 4, 4}), l);
  BlockSparseTensor mask(zeros({12, 4, 4}, {.dtype = DType::boolean}), l);
  BlockSparseTensor xi(zeros({12, 4, 4}, {.dtype = DType::i32}), l);
  tgt::require_throws<DTypeError>([&] { softmax(xi); }, {"softmax", "x", "floating", "i32"});
  tgt::require_throws<DTypeError>([&] { masked_softmax(xi, mask); }, {"masked_softmax", "x", "floating", "i32"});
  tgt::require_throws<ValueError>([&] { softmax(BlockSparseTensor()); }, {"softmax", "x", "undefined"});
  tgt::require_throws<ValueError>([&] { softmax(x, kInf); }, {"softmax", "scale", "finite", "inf"});
  tgt::require_throws<ValueError>([&] { masked_softmax(x, mask, kNan); }, {"masked_softmax", "scale", "finite"});

  // mask: dtype, logical shape, block size, malformed
  BlockSparseTensor mf(zeros({12, 4, 4}), l);
  tgt::require_throws<DTypeError>([&] { masked_softmax(x, mf); }, {"masked_softmax", "mask", "bool", "f32"});
  BlockSparseTensor mshape(zeros({8, 4, 4}, {.dtype = DType::boolean}), full_layout(2, 2, 2, 4));
  tgt::require_throws<ShapeError>([&] { masked_softmax(x, mshape); },
                                  {"masked_softmax", "mask", "[2, 8, 12]", "[2, 8, 8]"});
  BlockSparseTensor mbs(zeros({4, 8, 8}, {.dtype = DType::boolean}), full_layout(1, 2, 2, 8));
  BlockSparseTensor x8(zeros({16, 4, 4}), full_layout(1, 4, 4, 4));  // [1, 16, 16] at block 4
  tgt::require_throws<LayoutError>([&] { masked_softmax(x8, mbs); },
                                   {"masked_softmax", "mask", "block size", "4", "8"});
  tgt::require_throws<ValueError>([&] { masked_softmax(x, BlockSparseTensor()); },
                                  {"masked_softmax", "mask", "undefined"});

  // backward: layouts, dtypes
  Layout half = tgt::layout_where(2, 2, 3, 4, [](auto b, auto r, auto c) { return (b + r + c) % 2 == 0; });
  REQUIRE(half.n_blocks() == 6);
  tgt::require_throws<LayoutError>(
      [&] {
        softmax_backward(x, BlockSparseTensor(zeros({6, 4, 4}), half));
      },
      {"softmax_backward", "y", "dy", "same layout", "12 active", "6 active"});
  tgt::require_throws<DTypeError>(
      [&] {
        softmax_backward(x, BlockSparseTensor(zeros({12, 4, 4}, {.dtype = DType::f64}), l));
      },
      {"softmax_backward", "y", "dy", "f32", "f64"});
  tgt::require_throws<DTypeError>([&] { softmax_backward(xi, x); }, {"softmax_backward", "y", "floating", "i32"});
  tgt::require_throws<ValueError>([&] { softmax_backward(x, x, -kInf); }, {"softmax_backward", "scale", "finite"});
}

TEST_CASE("block-sparse softmax CUDA matches CPU, forward and backward", "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  struct Case {
    std::int64_t B, Mb, Nb, bs;
    double density;
    bool masked;
  };
  // Longest rows from 6 to 17408 elements. At bs >= 16 the staged plan takes rows of up to
  // 96 KiB of staged data (forward: x, plus a byte per element of a mask; backward: y and
  // dy), and the f32 backward of short rows at bs >= 32 the slices of block-rows (both have
  // their own cases below). What these cases leave to the other plans: the warp plans at
  // bs 1 and 2; the register block plans at bs 8 (rows of ~2200); the two passes over
  // global memory for the f64 forward of the 16384-, 16512- and 17408-long rows at bs 128
  // (over 96 KiB of f64), the f32 backward of those rows, and the f64 backward of rows from
  // 8192 (bs 64) up. Their f32 and 16-bit forwards (masked ones too) and 16-bit backwards
  // are staged. (The full layouts were written for the edges of the register plans, 512,
  // 1024, 528, 16384 and 16512 elements, which bs >= 16 no longer takes.)
  const std::vector<Case> cases = {
      {2, 5, 7, 1, 0.5, false},    {2, 4, 9, 2, 0.4, true},      {3, 3, 5, 16, 1.0, false},
      {2, 3, 6, 32, 0.5, true},    {2, 2, 24, 64, 0.7, false},   {1, 2, 20, 128, 0.8, true},
      {1, 2, 2, 16, 0.0, false},   {1, 2, 128, 64, 1.0, false},  {1, 2, 128, 64, 1.0, true},
      {1, 1, 300, 8, 0.9, false},  {1, 2, 48, 128, 0.9, false},  {1, 2, 32, 64, 1.0, false},
      {1, 3, 30, 64, 0.9, true},   {1, 1, 136, 128, 1.0, false}, {1, 1, 136, 128, 1.0, true},
      {2, 2, 8, 64, 1.0, false},   {2, 2, 8, 64, 1.0, true},     {1, 2, 16, 64, 1.0, false},
      {1, 2, 16, 64, 1.0, true},   {1, 3, 33, 16, 1.0, false},   {1, 3, 33, 16, 1.0, true},
      {1, 1, 128, 128, 1.0, true}, {1, 1, 129, 128, 1.0, false}, {2, 6, 40, 32, 0.2, true}};
  std::uint64_t seed = 900;
  for (const Case& c : cases) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    std::vector<char> excl;
    BlockSparseTensor mask;
    if (c.masked) {
      Layout ml = random_layout(c.B, c.Mb, c.Nb, c.bs, 0.6, ++seed);
      mask = random_mask(ml, 30, ++seed, excl);
    }
    // random values with an all -inf row, a row holding a nan and a -inf sprinkled in
    std::vector<double> d = tgt::values(tgt::rand64({l.n_blocks(), c.bs, c.bs}, ++seed, -4.0, 4.0));
    if (l.n_blocks() > 1 && c.bs > 1) {
      const std::int64_t bs = c.bs;
      for (std::int64_t k = 0; k < l.n_blocks(); ++k)  // in-block row 0 of every block: all -inf
        for (std::int64_t j = 0; j < bs; ++j) d[at(k * bs * bs + j)] = -kInf;
      d[at((l.n_blocks() - 1) * bs * bs + bs + bs / 2)] = kNan;  // one element of in-block row 1
      if (bs > 2) d[at(2 * bs + 1)] = -kInf;                     // block 0, in-block row 2
    }
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      INFO(describe(l) << (c.masked ? " masked" : "") << " dtype " << dtype_name(dt));
      const double rtol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : dt == DType::f32 ? 1e-5 : 1e-12;
      Tensor xd = from_vector(d, {l.n_blocks(), c.bs, c.bs}).to(dt);
      Tensor gd = rand_seeded({l.n_blocks(), c.bs, c.bs}, ++seed, {.dtype = dt}, -1.0, 1.0);
      const double scale = dt == DType::f64 ? 0.9 : 1.0;
      auto run = [&](Device dev) {
        Tensor x = xd.to(dev).detach().requires_grad_();
        BlockSparseTensor y = c.masked ? masked_softmax(BlockSparseTensor(x, l),
                                                        BlockSparseTensor(mask.data().to(dev), mask.layout()), scale)
                                       : softmax(BlockSparseTensor(x, l), scale);
        y.data().backward(gd.to(dev));
        return std::vector<Tensor>{y.data(), x.grad()};
      };
      std::vector<Tensor> cpu = run(Device::cpu()), cuda = run(gpu);
      REQUIRE(cuda[0].device() == gpu);
      {
        INFO("y");
        tgt::require_close(cuda[0], cpu[0], rtol, rtol * 1e-2);
      }
      {
        // the two devices' y may differ by an ulp in bf16 / f16, which dx inherits
        INFO("dx");
        tgt::require_close(cuda[1], cpu[1], 2 * rtol, rtol * 1e-1);
      }
      {
        INFO("softmax_backward on the same y");
        BlockSparseTensor yc(cpu[0].detach(), l), gc(gd, l);
        Tensor want = softmax_backward(yc, gc, scale).data();
        Tensor got =
            softmax_backward(BlockSparseTensor(yc.data().to(gpu), l), BlockSparseTensor(gd.to(gpu), l), scale).data();
        tgt::require_close(got, want, rtol, rtol * 1e-2);
      }
    }
  }
}

TEST_CASE("block-sparse softmax CUDA scalar path (misaligned data) matches CPU", "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (std::int64_t bs : {16, 64}) {
    Layout l = random_layout(2, 3, 40, bs, 0.6, 31 + static_cast<std::uint64_t>(bs));
    const Shape shape{l.n_blocks(), bs, bs};
    for (DType dt : {DType::f32, DType::bf16}) {
      INFO("bs " << bs << " dtype " << dtype_name(dt));
      const double tol = dt == DType::bf16 ? 1e-2 : 1e-5;
      Tensor base = rand_seeded({l.n_blocks() * bs * bs + 1}, 32, {.dtype = dt, .device = gpu}, -3.0, 3.0);
      Tensor x = tgt::misaligned_view(base, 1, shape);
      Tensor gbase = rand_seeded({l.n_blocks() * bs * bs + 1}, 33, {.dtype = dt, .device = gpu});
      Tensor g = tgt::misaligned_view(gbase, 1, shape);
      BlockSparseTensor y = softmax(BlockSparseTensor(x, l));
      BlockSparseTensor ycpu = softmax(BlockSparseTensor(x.to(Device::cpu()), l));
      tgt::require_close(y.data(), ycpu.data(), tol, tol * 1e-2);
      BlockSparseTensor yv(
          tgt::misaligned_view(rand_seeded({l.n_blocks() * bs * bs + 1}, 34, {.dtype = dt, .device = gpu}), 1, shape),
          l);
      Tensor dx = softmax_backward(yv, BlockSparseTensor(g, l)).data();
      Tensor dxc =
          softmax_backward(BlockSparseTensor(yv.data().to(Device::cpu()), l), BlockSparseTensor(g.to(Device::cpu()), l))
              .data();
      tgt::require_close(dx, dxc, tol, tol * 1e-1);
    }
  }
}

TEST_CASE("block-sparse softmax CUDA scalar forward plans (misaligned data or mask) match CPU",
          "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  // Rows of 4, 40, 200 and 400 blocks of 16 (up to ~6400 elements), each with and without a
  // mask, with x misaligned, or x aligned and only the mask misaligned. Written for the
  // register plans' scalar loads (warp, block, two passes); at bs 16 these rows (well under
  // the staged plan's 96 KiB) all take the staged forward now, which stages a misaligned x
  // or mask element by element instead of in 16-byte copies.
  std::uint64_t seed = 1300;
  for (std::int64_t nb : {4, 40, 200, 400}) {
    const std::int64_t bs = 16;
    Layout l = random_layout(2, 2, nb, bs, nb == 4 ? 1.0 : 0.8, ++seed);
    Layout ml = random_layout(2, 2, nb, bs, 0.7, ++seed);
    std::vector<char> excl;
    BlockSparseTensor mask = random_mask(ml, 30, ++seed, excl);
    const Shape shape{l.n_blocks(), bs, bs};
    const Shape mshape{ml.n_blocks(), bs, bs};
    std::vector<double> d = tgt::values(tgt::rand64(shape, ++seed, -4.0, 4.0));
    for (std::int64_t j = 0; j < bs; ++j) d[at(j)] = -kInf;  // one all -inf row (unless masked in)
    d[at(bs * bs + 3)] = kNan;                               // and a nan
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : 1e-5;
      Tensor xc = from_vector(d, shape).to(dt);
      Tensor xbase = zeros({l.n_blocks() * bs * bs + 1}, {.dtype = dt, .device = gpu});
      Tensor xmis = tgt::misaligned_view(xbase, 1, shape);
      copy_bytes(xmis, xc.to(gpu));
      Tensor mbase = zeros({ml.n_blocks() * bs * bs + 1}, {.dtype = DType::boolean, .device = gpu});
      Tensor mmis = tgt::misaligned_view(mbase, 1, mshape);
      copy_bytes(mmis, mask.data().to(gpu));
      for (int variant = 0; variant < 3; ++variant) {
        INFO("blocks per row " << nb << " dtype " << dtype_name(dt) << " variant " << variant);
        // 0: x misaligned, no mask; 1: x misaligned, mask aligned; 2: x aligned, mask misaligned
        Tensor x = variant == 2 ? xc.to(gpu) : xmis;
        Tensor y = variant == 0 ? softmax(BlockSparseTensor(x, l)).data()
                   : masked_softmax(BlockSparseTensor(x, l),
                                    BlockSparseTensor(variant == 1 ? mask.data().to(gpu) : mmis, ml))
                         .data();
        Tensor want = variant == 0 ? softmax(BlockSparseTensor(xc, l)).data()
                                   : masked_softmax(BlockSparseTensor(xc, l), mask).data();
        tgt::require_close(y, want, tol, tol * 1e-2);
      }
    }
  }
}

TEST_CASE("masked_softmax CUDA with the mask on x's own layout matches CPU", "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  // A mask whose layout equals x's reads its bytes at x's flat indices (no block lookup):
  // the same Layout object, an equal copy, and a misaligned mask (staged element by
  // element); block sizes 1 to 256: the warp plan at bs 1, the staged plan from bs 16, up to
  // rows of 18432 elements at bs 256 (90 KiB of f32 and mask bytes, inside the staged plan's
  // 96 KiB: no case here reaches the two-pass kernels); an all -inf row, a nan, scale 0.5.
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  std::uint64_t seed = 1700;
  for (const Case& c : {Case{2, 6, 40, 1, 0.6}, Case{2, 3, 7, 16, 0.7}, Case{1, 2, 24, 64, 0.8},
                        Case{1, 2, 40, 128, 0.9}, Case{1, 1, 3, 256, 1.0}, Case{1, 1, 72, 256, 1.0}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    Layout copy = tgt::layout_where(c.B, c.Mb, c.Nb, c.bs, [&](auto b, auto r, auto cc) { return l.active(b, r, cc); });
    REQUIRE(copy == l);
    std::vector<char> excl;
    BlockSparseTensor mask = random_mask(l, 30, ++seed, excl);
    const std::int64_t bs = c.bs, n = l.n_blocks() * bs * bs;
    const Shape shape{l.n_blocks(), bs, bs};
    std::vector<double> d = tgt::values(tgt::rand64(shape, ++seed, -4.0, 4.0));
    for (std::int64_t j = 0; j < bs; ++j) d[at(j)] = -kInf;  // in-block row 0 of block 0: all -inf
    if (n > 2 * bs) d[at(n - bs / 2 - 1)] = kNan;            // a nan in the last row
    Tensor mmis = tgt::misaligned_view(zeros({n + 1}, {.dtype = DType::boolean, .device = gpu}), 1, shape);
    copy_bytes(mmis, mask.data().to(gpu));
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : 1e-5;
      Tensor xc = from_vector(d, shape).to(dt);
      Tensor want = masked_softmax(BlockSparseTensor(xc, l), mask, 0.5).data();
      for (int variant = 0; variant < 3; ++variant) {
        INFO(describe(l) << " dtype " << dtype_name(dt) << " variant " << variant);
        // 0: the same Layout object; 1: an equal copy; 2: the mask misaligned
        BlockSparseTensor mg(variant == 2 ? mmis : mask.data().to(gpu), variant == 1 ? copy : l);
        Tensor got = masked_softmax(BlockSparseTensor(xc.to(gpu), l), mg, 0.5).data();
        tgt::require_close(got, want, tol, tol * 1e-2);
      }
    }
  }
}

TEST_CASE("block-sparse softmax CUDA slices of block-rows (bs >= 32) match CPU", "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  // At bs >= 32 rows up to 256 * P elements (4096 f32, 8192 bf16/f16, 2048 f64 and for
  // misaligned data) take a CUDA block per 32 rows of a block-row, with threads per row
  // from that block-row's own length: 1 block of 32 f32 (2 threads) up to 4096 (256 threads,
  // across warps through shared memory), varying within one launch (random layouts), empty
  // block-rows, masked and not, aligned and misaligned, an all -inf row and a nan. The
  // backward's slices (rows up to 4096, f64 and misaligned 2048) on the CPU's y. Slices
  // hold one row unless there are many rows: the 4608 rows of the last case give 4-row
  // slices on 132 multiprocessors, two waves of 2 rows each for f32. (The f32 backward of
  // these short rows runs the slices; the forwards and 16-bit backwards the staged plan.)
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  std::uint64_t seed = 1900;
  for (const Case& c : {Case{2, 3, 1, 32, 1.0}, Case{2, 4, 20, 32, 0.4}, Case{1, 2, 128, 32, 1.0},
                        Case{2, 5, 40, 64, 0.3}, Case{1, 2, 64, 64, 1.0}, Case{1, 3, 48, 64, 0.7},
                        Case{1, 2, 12, 128, 0.6}, Case{1, 2, 5, 256, 0.8}, Case{2, 36, 20, 64, 0.9}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    std::vector<char> excl;
    const Layout mask_layout = random_layout(c.B, c.Mb, c.Nb, c.bs, 0.6, ++seed);
    BlockSparseTensor mask = random_mask(mask_layout, 30, ++seed, excl);
    const std::int64_t bs = c.bs, n = l.n_blocks() * bs * bs;
    const Shape shape{l.n_blocks(), bs, bs};
    std::vector<double> d = tgt::values(tgt::rand64(shape, ++seed, -4.0, 4.0));
    for (std::int64_t j = 0; j < bs; ++j) d[at(j)] = -kInf;  // in-block row 0 of block 0: all -inf
    if (n > 2 * bs) d[at(n - bs / 2 - 1)] = kNan;            // a nan in the last row
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : dt == DType::f32 ? 1e-5 : 1e-12;
      Tensor xc = from_vector(d, shape).to(dt);
      Tensor xmis = tgt::misaligned_view(zeros({n + 1}, {.dtype = dt, .device = gpu}), 1, shape);
      copy_bytes(xmis, xc.to(gpu));
      for (bool misaligned : {false, true}) {
        for (bool masked : {false, true}) {
          INFO(describe(l) << " dtype " << dtype_name(dt) << (misaligned ? " misaligned" : "")
                           << (masked ? " masked" : ""));
          BlockSparseTensor x(misaligned ? xmis : xc.to(gpu), l), xh(xc, l);
          Tensor got = masked ? masked_softmax(x, BlockSparseTensor(mask.data().to(gpu), mask.layout()), 0.7).data()
                              : softmax(x, 0.7).data();
          Tensor want = masked ? masked_softmax(xh, mask, 0.7).data() : softmax(xh, 0.7).data();
          tgt::require_close(got, want, tol, tol * 1e-2);
          if (masked) continue;
          INFO("softmax_backward on the CPU's y");
          Tensor dyc = rand_seeded(shape, ++seed, {.dtype = dt}, -1.0, 1.0);
          auto on_gpu = [&](const Tensor& t) {
            if (!misaligned) return t.to(gpu);
            Tensor v = tgt::misaligned_view(zeros({n + 1}, {.dtype = dt, .device = gpu}), 1, shape);
            copy_bytes(v, t.to(gpu));
            return v;
          };
          Tensor dx = softmax_backward(BlockSparseTensor(on_gpu(want), l), BlockSparseTensor(on_gpu(dyc), l), 0.7)
                          .data();
          Tensor dxc = softmax_backward(BlockSparseTensor(want, l), BlockSparseTensor(dyc, l), 0.7).data();
          tgt::require_close(dx, dxc, tol, tol * 1e-1);
        }
      }
    }
  }
}

// Runs f with the staged CUDA kernels on CTAs of 128 and of 256 threads (each size takes
// other groups of threads per row); the per-call choice is restored however f leaves.
template <typename F>
void each_staged_threads(F&& f) {
  struct Restore {
    ~Restore() { ops::set_staged_threads(0); }
  } restore;
  for (int n : {128, 256}) {
    INFO("staged CTAs of " << n << " threads");
    ops::set_staged_threads(n);
    f();
  }
}

TEST_CASE("block-sparse softmax CUDA staged rows (bs >= 16) match CPU", "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  // The staged plan (block size >= 16, rows up to 96 KiB of staged data) takes R rows of a
  // block-row per CTA, a group of NT / R threads per row, NT = 128 and 256 (every call runs
  // on both). On a GPU of 132 multiprocessors the first five cases take R = 32 (groups of 8
  // lanes at 256, 4 at 128), 8 (a warp at 256), 4, 2 (groups across warps, through shared
  // memory) and 1 (R shrinks until the grid has 16 CTAs per multiprocessor; smaller GPUs
  // take larger R). Empty block-rows, rows of different
  // lengths in one launch, an all -inf row, a nan row and a +inf row. Forward at scale 0.7
  // (max pass on raw values), -0.6 and 0 (max pass on scaled values); masked, with a mask
  // on x's layout and one on another layout; the backward on the CPU's y. The small cases
  // take every dtype and also misaligned x (scalar copies and stores), y, dy and mask; the
  // large ones f32 and bf16 only, to keep the CPU references short. The last two cases sit
  // at the plan's row limit: 24576 elements stage the f32 and bf16 forwards, the masked
  // bf16 forward and the bf16 backward, while the masked f32 forward (5 bytes per element)
  // and the f32 backward (8) take the two passes; rows of 51200 elements take the two
  // passes everywhere.
  struct Case { std::int64_t B, Mb, Nb, bs; double density; bool small; };
  std::uint64_t seed = 2300;
  for (const Case& c : {Case{2, 1056, 1, 32, 0.5, false}, Case{1, 1056, 6, 16, 0.6, false},
                        Case{1, 264, 5, 32, 0.7, false}, Case{1, 66, 4, 64, 0.5, false},
                        Case{2, 3, 7, 128, 0.6, true}, Case{1, 2, 20, 64, 0.8, true},
                        Case{1, 1, 1536, 16, 1.0, false}, Case{1, 1, 3200, 16, 1.0, false}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    if (l.n_blocks() == 0) continue;
    std::vector<char> excl;
    BlockSparseTensor own = random_mask(l, 30, ++seed, excl);
    const Layout ml = random_layout(c.B, c.Mb, c.Nb, c.bs, 0.6, ++seed);
    BlockSparseTensor other = random_mask(ml, 30, ++seed, excl);
    const std::int64_t bs = c.bs;
    const Shape shape{l.n_blocks(), bs, bs};
    std::vector<double> d = tgt::values(tgt::rand64(shape, ++seed, -4.0, 4.0));
    tgt::plant_special_rows(l, d);
    const std::vector<DType> dtypes =
        c.small ? std::vector<DType>{DType::f32, DType::bf16, DType::f16, DType::f64}
                : std::vector<DType>{DType::f32, DType::bf16};
    for (DType dt : dtypes) {
      const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : dt == DType::f32 ? 1e-5 : 1e-12;
      Tensor xc = from_vector(d, shape).to(dt);
      auto misaligned = [&](const Tensor& t) {
        Tensor v = tgt::misaligned_view(zeros({t.numel() + 1}, {.dtype = t.dtype(), .device = gpu}), 1, t.shape());
        copy_bytes(v, t.to(gpu));
        return v;
      };
      BlockSparseTensor xh(xc, l), xg(xc.to(gpu), l), xm(c.small ? misaligned(xc) : xc.to(gpu), l);
      for (double scale : {0.7, -0.6, 0.0}) {
        INFO(describe(l) << " dtype " << dtype_name(dt) << " scale " << scale);
        Tensor want = softmax(xh, scale).data();
        each_staged_threads([&] {
          tgt::require_close(softmax(xg, scale).data(), want, tol, tol * 1e-2);
          if (c.small && scale == 0.7) {
            INFO("misaligned x");
            tgt::require_close(softmax(xm, scale).data(), want, tol, tol * 1e-2);
          }
        });
      }
      for (const BlockSparseTensor* mask : {&own, &other}) {
        INFO(describe(l) << " dtype " << dtype_name(dt) << (mask == &own ? " mask on x's layout" : " mask on another"));
        Tensor want = masked_softmax(xh, *mask, 0.7).data();
        BlockSparseTensor mg(mask->data().to(gpu), mask->layout());
        BlockSparseTensor mm(c.small ? misaligned(mask->data()) : mg.data(), mask->layout());
        each_staged_threads([&] {
          tgt::require_close(masked_softmax(xg, mg, 0.7).data(), want, tol, tol * 1e-2);
          if (c.small) {
            INFO("misaligned mask, then misaligned x");
            tgt::require_close(masked_softmax(xg, mm, 0.7).data(), want, tol, tol * 1e-2);
            tgt::require_close(masked_softmax(xm, mg, 0.7).data(), want, tol, tol * 1e-2);
          }
        });
      }
      {
        INFO(describe(l) << " dtype " << dtype_name(dt) << " softmax_backward on the CPU's y");
        Tensor y = softmax(xh, 0.7).data(), dyc = rand_seeded(shape, ++seed, {.dtype = dt}, -1.0, 1.0);
        Tensor want = softmax_backward(BlockSparseTensor(y, l), BlockSparseTensor(dyc, l), 0.7).data();
        each_staged_threads([&] {
          Tensor got =
              softmax_backward(BlockSparseTensor(y.to(gpu), l), BlockSparseTensor(dyc.to(gpu), l), 0.7).data();
          tgt::require_close(got, want, tol, tol * 1e-1);
          if (c.small) {
            INFO("misaligned y and dy");
            got = softmax_backward(BlockSparseTensor(misaligned(y), l), BlockSparseTensor(misaligned(dyc), l), 0.7)
                      .data();
            tgt::require_close(got, want, tol, tol * 1e-1);
          }
        });
      }
    }
  }
}

TEST_CASE("block-sparse softmax: the staged thread setting takes 0, 128 or 256", "[ops][sparse_softmax]") {
  struct Restore {
    ~Restore() { ops::set_staged_threads(0); }
  } restore;
  ops::set_staged_threads(128);
  CHECK(ops::staged_threads() == 128);
  ops::set_staged_threads(256);
  CHECK(ops::staged_threads() == 256);
  tgt::require_throws<ValueError>([] { ops::set_staged_threads(64); },
                                  {"set_staged_threads", "argument n", "0, 128 or 256", "64"});
  CHECK(ops::staged_threads() == 256);  // a refused setting changes nothing
}

TEST_CASE("block-sparse softmax with mixed devices throws", "[ops][sparse_softmax][cuda]") {
  TG_REQUIRE_CUDA();
  Layout l = full_layout(1, 2, 2, 4);
  BlockSparseTensor x(zeros({4, 4, 4}), l);
  BlockSparseTensor mask(zeros({4, 4, 4}, {.dtype = DType::boolean, .device = Device::cuda()}), l);
  tgt::require_throws<DeviceError>([&] { masked_softmax(x, mask); }, {"masked_softmax", "x", "mask", "same device"});
  BlockSparseTensor dy(zeros({4, 4, 4}, {.device = Device::cuda()}), l);
  tgt::require_throws<DeviceError>([&] { softmax_backward(x, dy); }, {"softmax_backward", "y", "dy", "same device"});
}

}  // namespace test_sparse_softmax
