// Tests of the block-sparse row ops (ops/sparse_rows): f64 references written as plain
// loops over a dense matrix masked by the layout, ties / nan / -inf for row_max,
// gradchecks, bad inputs, and CUDA against the CPU.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "util.h"

namespace test_sparse_rows {

using namespace tg;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }

// The layouts every reference test runs over: block sizes 1, 2, 16, 32, 64; batch 1-3;
// empty, one block, ~30%, full, and ~50% with a whole block-row and block-column left empty.
std::vector<Layout> test_layouts() {
  std::vector<Layout> out;
  std::uint64_t seed = 100;
  for (std::int64_t bs : {1, 2, 16, 32, 64}) {
    // block grid extent: 2x2 / 2x3 at block 64 keeps a layout at <= 74K elements
    const std::int64_t g = bs >= 64 ? 2 : bs >= 16 ? 3 : 5;
    for (int kind = 0; kind < 5; ++kind) {
      const std::int64_t B = 1 + (kind + bs) % 3, Mb = g, Nb = g + 1 - kind % 2;
      ++seed;
      switch (kind) {
        case 0: out.push_back(random_layout(B, Mb, Nb, bs, 0.0, seed)); break;
        case 1:
          out.push_back(tgt::layout_where(B, Mb, Nb, bs, [&](auto b, auto r, auto c) {
            return b == B - 1 && r == Mb / 2 && c == Nb - 1;
          }));
          break;
        case 2: out.push_back(random_layout(B, Mb, Nb, bs, 0.3, seed)); break;
        case 3: out.push_back(full_layout(B, Mb, Nb, bs)); break;
        default: {
          Layout r = random_layout(B, Mb, Nb, bs, 0.6, seed);
          out.push_back(tgt::layout_where(B, Mb, Nb, bs, [&](auto b, auto rr, auto c) {
            return rr != 1 && c != 0 && r.active(b, rr, c);
          }));
        }
      }
    }
  }
  return out;
}

std::string describe(const Layout& l) {
  return detail::concat("layout B=", l.batch(), " Mb=", l.block_rows(), " Nb=", l.block_cols(),
                        " bs=", l.block_size(), " active=", l.n_blocks());
}

// A random dense f64 [B, M, N] and its block-sparse part under l.
struct Sample {
  Tensor dense;
  std::vector<double> d;
  BlockSparseTensor x;
};
Sample sample(const Layout& l, std::uint64_t seed, double lo = -2.0, double hi = 2.0) {
  Sample s;
  s.dense = tgt::rand64({l.batch(), l.rows(), l.cols()}, seed, lo, hi);
  s.d = tgt::values(s.dense);
  s.x = to_sparse(s.dense, l);
  return s;
}

bool active(const Layout& l, std::int64_t b, std::int64_t i, std::int64_t j) {
  return l.active(b, i / l.block_size(), j / l.block_size());
}

// Dense [B, M, N] of f(b, i, j) at active positions and `fill` elsewhere.
Tensor masked_dense(const Layout& l, double fill,
                    const std::function<double(std::int64_t, std::int64_t, std::int64_t)>& f) {
  const std::int64_t B = l.batch(), M = l.rows(), N = l.cols();
  std::vector<double> out(at(B * M * N), fill);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j)
        if (active(l, b, i, j)) out[at((b * M + i) * N + j)] = f(b, i, j);
  return from_vector(out, {B, M, N});
}

double elem(const Sample& s, const Layout& l, std::int64_t b, std::int64_t i, std::int64_t j) {
  return s.d[at((b * l.rows() + i) * l.cols() + j)];
}

// row_sum, row_max and row_max's gradient on the GPU against the CPU for block data `vals`
// of layout l (Nb block-columns), in each dtype, aligned and one element off (misaligned
// data takes the element-wide units; an empty layout only aligned).
void check_row_reductions_cuda(const Layout& l, const std::vector<double>& vals, std::int64_t Nb,
                               const std::vector<DType>& dtypes, std::uint64_t& seed) {
  const std::int64_t bs = l.block_size(), n = l.n_blocks() * bs * bs;
  for (DType dt : dtypes) {
    for (bool misaligned : {false, true}) {
      if (misaligned && n == 0) continue;
      INFO(describe(l) << " dtype " << dtype_name(dt) << (misaligned ? " misaligned" : ""));
      const double rtol = dt == DType::bf16 ? 2e-2 : dt == DType::f16 ? 4e-3 : dt == DType::f32 ? 1e-5 : 1e-12;
      const double atol = rtol * std::sqrt(static_cast<double>(Nb * bs));
      Tensor d = from_vector(vals, {l.n_blocks(), bs, bs}).to(dt);
      Tensor xg = d.to(Device::cuda());
      if (misaligned) {
        xg = tgt::misaligned_view(zeros({n + 1}, {.dtype = dt, .device = Device::cuda()}), 1, d.shape());
        copy_bytes(xg, d.to(Device::cuda()));
      }
      Tensor g = rand_seeded({l.batch(), l.rows()}, ++seed, {.dtype = dt});
      auto run = [&](const Tensor& x) {
        Tensor xd = x.detach().requires_grad_();
        Tensor m = row_max(BlockSparseTensor(xd, l));
        m.backward(g.to(x.device()));
        return std::vector<Tensor>{row_sum(BlockSparseTensor(x, l)), m, xd.grad()};
      };
      std::vector<Tensor> want = run(d), got = run(xg);
      tgt::require_close(got[0], want[0], rtol, atol);
      tgt::require_close(got[1], want[1], 0, 0);
      tgt::require_close(got[2], want[2], 0, 0);  // the gradient lands on the same element
    }
  }
}

}  // namespace

TEST_CASE("row_sum / row_max / col_sum match masked f64 references", "[ops][sparse_rows]") {
  std::uint64_t seed = 1;
  for (const Layout& l : test_layouts()) {
    INFO(describe(l));
    Sample s = sample(l, ++seed);
    const std::int64_t B = l.batch(), M = l.rows(), N = l.cols();
    std::vector<double> rs(at(B * M), 0.0), rm(at(B * M), -kInf), cs(at(B * N), 0.0);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < M; ++i)
        for (std::int64_t j = 0; j < N; ++j) {
          if (!active(l, b, i, j)) continue;
          const double v = elem(s, l, b, i, j);
          rs[at(b * M + i)] += v;
          rm[at(b * M + i)] = std::max(rm[at(b * M + i)], v);
          cs[at(b * N + j)] += v;
        }
    tgt::require_close(row_sum(s.x), from_vector(rs, {B, M}), 1e-12, 1e-12);
    tgt::require_close(row_max(s.x), from_vector(rm, {B, M}), 0, 0);
    tgt::require_close(col_sum(s.x), from_vector(cs, {B, N}), 1e-12, 1e-12);
    // f32 storage accumulates in f32 (and returns f32)
    BlockSparseTensor x32(s.x.data().to(DType::f32), l);
    Tensor rs32 = row_sum(x32);
    REQUIRE(rs32.dtype() == DType::f32);
    tgt::require_close(rs32, from_vector(rs, {B, M}), 1e-5, 1e-4);
    tgt::require_close(row_max(x32), from_vector(rm, {B, M}).to(DType::f32), 0, 0);
  }
}

TEST_CASE("row_add / row_sub / row_mul / row_div match masked f64 references", "[ops][sparse_rows]") {
  std::uint64_t seed = 50;
  for (const Layout& l : test_layouts()) {
    INFO(describe(l));
    Sample s = sample(l, ++seed);
    const std::int64_t M = l.rows();
    Tensor v = tgt::rand64({l.batch(), M}, ++seed, 0.5, 2.0);
    auto vv = tgt::values(v);
    auto vat = [&](std::int64_t b, std::int64_t i) { return vv[at(b * M + i)]; };
    const double nan = std::nan("");
    // inactive positions read back as nan: nothing may be written there
    auto check = [&](const BlockSparseTensor& y, const std::function<double(double, double)>& f) {
      REQUIRE(y.layout() == l);
      tgt::require_close(to_dense(y, nan), masked_dense(l, nan, [&](auto b, auto i, auto j) {
                           return f(elem(s, l, b, i, j), vat(b, i));
                         }),
                         1e-14, 1e-14);
    };
    check(row_add(s.x, v), [](double x, double w) { return x + w; });
    check(row_sub(s.x, v), [](double x, double w) { return x - w; });
    check(row_mul(s.x, v), [](double x, double w) { return x * w; });
    check(row_div(s.x, v), [](double x, double w) { return x / w; });
  }
}

TEST_CASE("broadcast_add / broadcast_sub match masked f64 references", "[ops][sparse_rows]") {
  std::uint64_t seed = 90;
  for (const Layout& l : test_layouts()) {
    INFO(describe(l));
    const std::int64_t M = l.rows(), N = l.cols();
    Tensor a = tgt::rand64({l.batch(), M}, ++seed), b = tgt::rand64({l.batch(), N}, ++seed);
    auto av = tgt::values(a), bv = tgt::values(b);
    const double nan = std::nan("");
    BlockSparseTensor y = broadcast_add(a, b, l), z = broadcast_sub(a, b, l);
    REQUIRE(y.layout() == l);
    REQUIRE(y.data().shape() == Shape{l.n_blocks(), l.block_size(), l.block_size()});
    tgt::require_close(to_dense(y, nan), masked_dense(l, nan, [&](auto bt, auto i, auto j) {
                         return av[at(bt * M + i)] + bv[at(bt * N + j)];
                       }),
                       1e-15, 1e-15);
    tgt::require_close(to_dense(z, nan), masked_dense(l, nan, [&](auto bt, auto i, auto j) {
                         return av[at(bt * M + i)] - bv[at(bt * N + j)];
                       }),
                       1e-15, 1e-15);
  }
}

TEST_CASE("row reductions: empty rows, ties, nan and -inf", "[ops][sparse_rows]") {
  // batch 0: block-row 0 has blocks (0,0), (0,2); block-row 1 is empty.
  const std::int64_t bs = 2;
  Layout l = tgt::layout_where(1, 2, 3, bs, [](auto, auto r, auto c) { return r == 0 && c != 1; });
  // logical rows 0 and 1 (block-row 0); columns 0,1 and 4,5 are active
  std::vector<double> d(2 * bs * 3 * bs, 0.0);
  auto set = [&](std::int64_t i, std::int64_t j, double v) { d[at(i * 3 * bs + j)] = v; };
  set(0, 0, 3.0); set(0, 1, 7.0); set(0, 4, 7.0); set(0, 5, -1.0);   // tie: first 7 at column 1 wins
  set(1, 0, -kInf); set(1, 1, -kInf); set(1, 4, -kInf); set(1, 5, -kInf);  // all -inf: first element
  Tensor dense = from_vector(d, {1, 2 * bs, 3 * bs});
  BlockSparseTensor x = to_sparse(dense, l);
  x.requires_grad_();
  Tensor mx = row_max(x);
  tgt::require_close(mx, from_vector<double>({7.0, -kInf, -kInf, -kInf}, {1, 4}), 0, 0);
  tgt::require_close(row_sum(x), from_vector<double>({16.0, -kInf, 0.0, 0.0}, {1, 4}), 0, 0);
  Tensor g = from_vector<double>({10.0, 20.0, 30.0, 40.0}, {1, 4});
  mx.backward(g);
  // gradient to the first maximum of each row; rows without blocks send nothing anywhere
  std::vector<double> want(d.size(), 0.0);
  want[at(0 * 3 * bs + 1)] = 10.0;
  want[at(1 * 3 * bs + 0)] = 20.0;
  tgt::require_close(to_dense(x.grad()), from_vector(want, dense.shape()), 0, 0);

  // nan propagates, and its (first) position gets the gradient
  set(0, 4, std::nan(""));
  set(0, 5, std::nan(""));
  BlockSparseTensor xn = to_sparse(from_vector(d, {1, 2 * bs, 3 * bs}), l);
  xn.requires_grad_();
  Tensor mn = row_max(xn);
  REQUIRE(std::isnan(tgt::values(mn)[0]));
  mn.backward(g);
  std::vector<double> wantn(d.size(), 0.0);
  wantn[at(0 * 3 * bs + 4)] = 10.0;
  wantn[at(1 * 3 * bs + 0)] = 20.0;
  tgt::require_close(to_dense(xn.grad()), from_vector(wantn, dense.shape()), 0, 0);
}

TEST_CASE("row ops on an empty layout give defined results and gradients", "[ops][sparse_rows]") {
  Layout l = random_layout(2, 3, 4, 2, 0.0, 1);
  REQUIRE(l.n_blocks() == 0);
  Tensor dense = tgt::rand64({2, 6, 8}, 3).requires_grad_();
  BlockSparseTensor x = to_sparse(dense, l);
  tgt::require_close(row_sum(x), zeros({2, 6}, {.dtype = DType::f64}), 0, 0);
  tgt::require_close(col_sum(x), zeros({2, 8}, {.dtype = DType::f64}), 0, 0);
  tgt::require_close(row_max(x), full({2, 6}, -kInf, {.dtype = DType::f64}), 0, 0);
  Tensor v = tgt::rand64({2, 6}, 4).requires_grad_();
  BlockSparseTensor y = row_add(x, v);
  REQUIRE(y.data().shape() == Shape{0, 2, 2});
  sum(row_sum(y)).backward();
  tgt::require_close(v.grad(), zeros({2, 6}, {.dtype = DType::f64}), 0, 0);
  tgt::require_close(dense.grad(), zeros({2, 6, 8}, {.dtype = DType::f64}), 0, 0);
  Tensor a = tgt::rand64({2, 6}, 5), b = tgt::rand64({2, 8}, 6);
  REQUIRE(broadcast_add(a, b, l).data().numel() == 0);
}

TEST_CASE("backward of row ops to a dense input matches a masked reference", "[ops][sparse_rows]") {
  // loss = sum(w * to_dense(row_add(x, v))) + sum(u * row_sum(x)); dloss/ddense is
  // (w + u[row]) on active elements, 0 elsewhere; dloss/dv = sum of w over active row elements.
  Layout l = tgt::layout_where(2, 3, 4, 16, [](auto b, auto r, auto c) { return (b + r + c) % 3 != 0 && r != 2; });
  Tensor dense = tgt::rand64({2, 48, 64}, 7).requires_grad_();
  Tensor v = tgt::rand64({2, 48}, 8).requires_grad_();
  Tensor w = tgt::rand64({2, 48, 64}, 9), u = tgt::rand64({2, 48}, 10);
  BlockSparseTensor x = to_sparse(dense, l);
  Tensor loss = add(sum(mul(w, to_dense(row_add(x, v)))), sum(mul(u, row_sum(x))));
  loss.backward();
  auto wv = tgt::values(w), uv = tgt::values(u);
  std::vector<double> gv(at(2 * 48), 0.0);
  Tensor gd = masked_dense(l, 0.0, [&](auto b, auto i, auto j) {
    gv[at(b * 48 + i)] += wv[at((b * 48 + i) * 64 + j)];
    return wv[at((b * 48 + i) * 64 + j)] + uv[at(b * 48 + i)];
  });
  tgt::require_close(dense.grad(), gd, 1e-12, 1e-12);
  tgt::require_close(v.grad(), from_vector(gv, {2, 48}), 1e-12, 1e-12);
}

TEST_CASE("row ops gradcheck", "[ops][sparse_rows][gradcheck]") {
  // a block-row and a block-column without blocks, and 2x2 blocks
  Layout l = tgt::layout_where(2, 3, 3, 2, [](auto b, auto r, auto c) { return r != 1 && c != 2 && (b + r + c) % 4 != 3; });
  REQUIRE(l.n_blocks() > 0);
  Tensor xd = tgt::rand64({l.n_blocks(), 2, 2}, 11).requires_grad_();
  Tensor v = tgt::rand64({2, 6}, 12, 0.5, 1.5).requires_grad_();
  Tensor a = tgt::rand64({2, 6}, 13).requires_grad_(), b = tgt::rand64({2, 6}, 14).requires_grad_();
  auto X = [&](const Tensor& d) { return BlockSparseTensor(d, l); };
  auto check = [](const char* what, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                  const std::vector<Tensor>& in) {
    auto r = autograd::gradcheck(f, in);
    INFO(what << ": " << r.report);
    REQUIRE(r.ok);
  };
  check("row_sum", [&](const std::vector<Tensor>& in) { return row_sum(X(in[0])); }, {xd});
  // rows without blocks give -inf, which finite differences cannot handle: a layout with a
  // block in every row (and an empty block-column) for row_max
  Layout lm = tgt::layout_where(2, 3, 3, 2, [](auto b, auto r, auto c) { return c != 1 && (c == 0 || (b + r) % 2 == 0); });
  Tensor xm = tgt::rand64({lm.n_blocks(), 2, 2}, 15).requires_grad_();
  check("row_max", [&](const std::vector<Tensor>& in) { return row_max(BlockSparseTensor(in[0], lm)); }, {xm});
  check("col_sum", [&](const std::vector<Tensor>& in) { return col_sum(X(in[0])); }, {xd});
  check("row_add", [&](const std::vector<Tensor>& in) { return row_add(X(in[0]), in[1]).data(); }, {xd, v});
  check("row_sub", [&](const std::vector<Tensor>& in) { return row_sub(X(in[0]), in[1]).data(); }, {xd, v});
  check("row_mul", [&](const std::vector<Tensor>& in) { return row_mul(X(in[0]), in[1]).data(); }, {xd, v});
  check("row_div", [&](const std::vector<Tensor>& in) { return row_div(X(in[0]), in[1]).data(); }, {xd, v});
  check("broadcast_add", [&](const std::vector<Tensor>& in) { return broadcast_add(in[0], in[1], l).data(); }, {a, b});
  check("broadcast_sub", [&](const std::vector<Tensor>& in) { return broadcast_sub(in[0], in[1], l).data(); }, {a, b});
  // only one argument requiring grad
  Tensor vc = v.detach();
  check("row_mul (x only)", [&](const std::vector<Tensor>& in) { return row_mul(X(in[0]), vc).data(); }, {xd});
  Tensor xc = xd.detach();
  check("row_div (v only)", [&](const std::vector<Tensor>& in) { return row_div(X(xc), in[0]).data(); }, {v});
  // the softmax-like composition of the tutorial
  check("normalise", [&](const std::vector<Tensor>& in) {
    BlockSparseTensor z = exp(row_sub(X(in[0]), row_max(X(in[0]))));
    return row_div(z, row_sum(z)).data();
  }, {xd});
}

TEST_CASE("row ops bad inputs", "[ops][sparse_rows]") {
  Layout l = full_layout(2, 2, 3, 4);  // [2, 8, 12]
  BlockSparseTensor x(zeros({12, 4, 4}), l);
  tgt::require_throws<ShapeError>([&] { row_add(x, zeros({2, 12})); }, {"row_add", "v", "[2, 8]", "[2, 12]"});
  tgt::require_throws<ShapeError>([&] { row_sub(x, zeros({16})); }, {"row_sub", "v", "[2, 8]", "[16]"});
  tgt::require_throws<ShapeError>([&] { row_mul(x, zeros({1, 8})); }, {"row_mul", "[2, 8]", "[1, 8]"});
  tgt::require_throws<DTypeError>([&] { row_add(x, zeros({2, 8}, {.dtype = DType::f64})); },
                                  {"row_add", "x", "v", "f32", "f64"});
  tgt::require_throws<DTypeError>([&] { row_div(x, zeros({2, 8}, {.dtype = DType::i64})); },
                                  {"row_div", "v", "floating", "i64"});
  BlockSparseTensor xi(zeros({12, 4, 4}, {.dtype = DType::i32}), l);
  tgt::require_throws<DTypeError>([&] { row_sum(xi); }, {"row_sum", "x", "floating", "i32"});
  tgt::require_throws<DTypeError>([&] { row_max(xi); }, {"row_max", "x", "i32"});
  tgt::require_throws<DTypeError>([&] { col_sum(xi); }, {"col_sum", "x", "i32"});
  tgt::require_throws<ValueError>([&] { row_sum(BlockSparseTensor()); }, {"row_sum", "x", "undefined"});
  tgt::require_throws<ValueError>([&] { row_add(x, Tensor()); }, {"row_add", "v", "undefined"});

  tgt::require_throws<ShapeError>([&] { broadcast_add(zeros({2, 12}), zeros({2, 12}), l); },
                                  {"broadcast_add", "a", "[2, 8]", "[2, 12]"});
  tgt::require_throws<ShapeError>([&] { broadcast_sub(zeros({2, 8}), zeros({2, 8}), l); },
                                  {"broadcast_sub", "b", "[B, N]", "[2, 12]", "[2, 8]"});
  tgt::require_throws<ShapeError>([&] { broadcast_add(zeros({3, 8}), zeros({2, 12}), l); },
                                  {"broadcast_add", "a", "[3, 8]"});
  tgt::require_throws<DTypeError>(
      [&] { broadcast_add(zeros({2, 8}), zeros({2, 12}, {.dtype = DType::bf16}), l); },
      {"broadcast_add", "a", "b", "f32", "bf16"});
  tgt::require_throws<LayoutError>([&] { broadcast_add(zeros({2, 8}), zeros({2, 12}), Layout()); },
                                   {"broadcast_add", "layout_out", "undefined"});
}

TEST_CASE("row ops CUDA match CPU, forward and backward", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  // long rows (bs 64, 24 blocks) exercise the unrolled loop; bs 1 and 2 the narrow loads
  const std::vector<Case> cases = {{1, 5, 7, 1, 0.4}, {2, 4, 3, 2, 0.3}, {3, 3, 5, 16, 1.0}, {2, 3, 4, 32, 0.3},
                                   {2, 3, 24, 64, 0.7}, {1, 2, 2, 16, 0.0}, {2, 2, 3, 128, 0.5}, {1, 3, 2, 512, 0.5}};
  std::uint64_t seed = 500;
  for (const Case& c : cases) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      INFO(describe(l) << " dtype " << dtype_name(dt));
      const double rtol = dt == DType::bf16 ? 2e-2 : dt == DType::f16 ? 4e-3 : dt == DType::f32 ? 1e-5 : 1e-12;
      const double atol = rtol * std::sqrt(static_cast<double>(c.Nb * c.bs));
      const std::int64_t bs = c.bs, M = l.rows(), N = l.cols();
      Tensor d = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt}, -2.0, 2.0);
      Tensor v = rand_seeded({c.B, M}, ++seed, {.dtype = dt}, 0.5, 2.0);
      Tensor a = rand_seeded({c.B, M}, ++seed, {.dtype = dt}), b = rand_seeded({c.B, N}, ++seed, {.dtype = dt});
      Tensor gy = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt});
      Tensor gr = rand_seeded({c.B, M}, ++seed, {.dtype = dt}), gc = rand_seeded({c.B, N}, ++seed, {.dtype = dt});

      // forward + backward on a device: returns outputs then gradients
      auto run = [&](Device dev) {
        Tensor xd = d.to(dev).detach().requires_grad_(), vd = v.to(dev).detach().requires_grad_();
        Tensor ad = a.to(dev).detach().requires_grad_(), bd = b.to(dev).detach().requires_grad_();
        BlockSparseTensor x(xd, l);
        std::vector<Tensor> outs;
        Tensor rs = row_sum(x), rm = row_max(x), cs = col_sum(x);
        BlockSparseTensor ya = row_add(x, vd), ys = row_sub(x, vd), ym = row_mul(x, vd), yv = row_div(x, vd);
        BlockSparseTensor ba = broadcast_add(ad, bd, l), bsb = broadcast_sub(ad, bd, l);
        outs = {rs, rm, cs, ya.data(), ys.data(), ym.data(), yv.data(), ba.data(), bsb.data()};
        Tensor gyd = gy.to(dev), grd = gr.to(dev), gcd = gc.to(dev);
        Tensor loss = sum(mul(rs, grd));
        loss = add(loss, sum(mul(rm, grd)));
        loss = add(loss, sum(mul(cs, gcd)));
        for (const BlockSparseTensor* y : {&ya, &ys, &ym, &yv, &ba, &bsb}) loss = add(loss, sum(mul(y->data(), gyd)));
        loss.backward();
        outs.push_back(xd.grad());
        outs.push_back(vd.grad());
        outs.push_back(ad.grad());
        outs.push_back(bd.grad());
        return outs;
      };
      std::vector<Tensor> cpu = run(Device::cpu()), cuda = run(gpu);
      const char* names[] = {"row_sum", "row_max", "col_sum", "row_add", "row_sub", "row_mul", "row_div",
                             "broadcast_add", "broadcast_sub", "dx", "dv", "da", "db"};
      for (std::size_t q = 0; q < cpu.size(); ++q) {
        INFO(names[q]);
        REQUIRE(cuda[q].device() == gpu);
        if (q == 1) tgt::require_close(cuda[q], cpu[q], 0, 0);  // max is exact (and picks the same element)
        else tgt::require_close(cuda[q], cpu[q], rtol, atol);
      }
    }
  }
}

TEST_CASE("row_max CUDA picks the same first maximum as the CPU among ties", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  Layout l = random_layout(2, 4, 6, 16, 0.6, 77);
  // four distinct values: every row has many ties
  std::vector<double> vals(at(l.n_blocks() * 16 * 16));
  std::uint64_t st = 12345;
  for (double& v : vals) {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    v = static_cast<double>((st >> 33) % 4);
  }
  Tensor g = rand_seeded({2, 64}, 79, {.dtype = DType::f32});
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dtype_name(dt));
    Tensor d = from_vector(vals, {l.n_blocks(), 16, 16}).to(dt);
    auto grad_on = [&](Device dev) {
      Tensor xd = d.to(dev).detach().requires_grad_();
      row_max(BlockSparseTensor(xd, l)).backward(g.to(dt).to(dev));
      return xd.grad();
    };
    tgt::require_close(grad_on(Device::cuda()), grad_on(Device::cpu()), 0, 0);
  }
}

TEST_CASE("row_max CUDA: nan, -inf rows, signed zeros and ties match the CPU value and index",
          "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  // bs 64 with up to 24 blocks per row: several 4-unit steps per lane (and the tail loop);
  // bs 8: units of one f32 / bf16 pair. Misaligned data takes the narrowest loads.
  for (std::int64_t bs : {8, 64}) {
    Layout l = random_layout(2, 3, 24, bs, 0.6, 91 + static_cast<std::uint64_t>(bs));
    const std::int64_t n = l.n_blocks() * bs * bs;
    std::vector<double> vals(at(n));
    std::uint64_t st = 777;
    for (double& v : vals) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      const int k = static_cast<int>((st >> 33) % 8);
      v = k == 0 ? -kInf : k == 1 ? -0.0 : k == 2 ? 0.0 : static_cast<double>(k % 3) - 3.0;  // no positive values
    }
    // in-block row 0 of every block: all -inf; row 1: a nan late in the row's last block;
    // row 2 of the first block: a nan and a later one
    for (std::int64_t k = 0; k < l.n_blocks(); ++k)
      for (std::int64_t j = 0; j < bs; ++j) vals[at(k * bs * bs + j)] = -kInf;
    vals[at((l.n_blocks() - 1) * bs * bs + bs + bs - 2)] = std::nan("");
    vals[at(2 * bs + 3)] = std::nan("");
    vals[at(2 * bs + 5)] = std::nan("");
    for (DType dt : {DType::f32, DType::bf16, DType::f16}) {
      for (bool misaligned : {false, true}) {
        INFO("bs " << bs << " dtype " << dtype_name(dt) << (misaligned ? " misaligned" : ""));
        Tensor d = from_vector(vals, {l.n_blocks(), bs, bs}).to(dt);
        Tensor xg = d.to(Device::cuda());
        if (misaligned) {
          Tensor base = zeros({n + 1}, {.dtype = dt, .device = Device::cuda()});
          xg = tgt::misaligned_view(base, 1, d.shape());
          copy_bytes(xg, d.to(Device::cuda()));
        }
        Tensor g = rand_seeded({2, l.rows()}, 93, {.dtype = dt});
        auto run = [&](const Tensor& x) {
          Tensor xd = x.detach().requires_grad_();
          Tensor m = row_max(BlockSparseTensor(xd, l));
          m.backward(g.to(x.device()));
          return std::vector<Tensor>{m, xd.grad()};
        };
        std::vector<Tensor> want = run(d), got = run(xg);
        tgt::require_close(got[0], want[0], 0, 0);  // the same values (nan where nan)
        tgt::require_close(got[1], want[1], 0, 0);  // the gradient lands on the same element
        // signed zeros: the reported maximum is the element's own value
        auto gv = tgt::values(got[0]), wv = tgt::values(want[0]);
        for (std::size_t i = 0; i < gv.size(); ++i) {
          if (gv[i] == 0.0) REQUIRE(std::signbit(gv[i]) == std::signbit(wv[i]));
        }
      }
    }
  }
}

TEST_CASE("broadcast_add/sub CUDA with narrow loads of b and small blocks match CPU", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  // bs 64 with b misaligned: the per-block kernel with element-wide units; bs 4 and 8: the
  // per-unit map (a block holds fewer units than a CUDA block has threads); bs 256 f64:
  // 256 units per block-row.
  struct Case { std::int64_t Mb, Nb, bs; };
  for (const Case& c : {Case{3, 5, 64}, Case{4, 6, 4}, Case{3, 7, 8}, Case{2, 2, 256}}) {
    Layout l = random_layout(2, c.Mb, c.Nb, c.bs, 0.6, 200 + static_cast<std::uint64_t>(c.bs));
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      for (bool misaligned : {false, true}) {
        INFO("bs " << c.bs << " dtype " << dtype_name(dt) << (misaligned ? " misaligned b" : ""));
        const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : 1e-6;
        Tensor a = rand_seeded({2, l.rows()}, 201, {.dtype = dt}, -2.0, 2.0);
        Tensor b = rand_seeded({2, l.cols()}, 202, {.dtype = dt}, -2.0, 2.0);
        Tensor bg = b.to(Device::cuda());
        if (misaligned) {
          Tensor base = zeros({2 * l.cols() + 1}, {.dtype = dt, .device = Device::cuda()});
          bg = tgt::misaligned_view(base, 1, b.shape());
          copy_bytes(bg, b.to(Device::cuda()));
        }
        Tensor ag = a.to(Device::cuda());
        tgt::require_close(broadcast_add(ag, bg, l).data(), broadcast_add(a, b, l).data(), tol, tol);
        tgt::require_close(broadcast_sub(ag, bg, l).data(), broadcast_sub(a, b, l).data(), tol, tol);
      }
    }
  }
}

TEST_CASE("row_sum / row_max CUDA with a lane group per row match CPU at block sizes 1 to 256",
          "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  // A row is reduced by G lanes, G = the vector units of one segment (at most 32): block
  // sizes 1 to 256 give G = 1 to 32; rows of more than 8 units per lane take two steps of
  // the loop; row counts that leave part of the last warp without a row; empty block-rows;
  // misaligned data (element-wide units, G = min(32, bs)); -inf rows, nans, ties.
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  std::uint64_t seed = 2100;
  for (const Case& c : {Case{3, 7, 5, 1, 0.5}, Case{2, 3, 9, 4, 0.6}, Case{1, 3, 40, 16, 0.8}, Case{2, 3, 20, 32, 0.9},
                        Case{3, 1, 20, 64, 0.9}, Case{2, 2, 3, 64, 0.3}, Case{1, 2, 12, 128, 0.7},
                        Case{1, 1, 5, 256, 0.8}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    const std::int64_t bs = c.bs, n = l.n_blocks() * bs * bs;
    std::vector<double> vals(at(n));
    std::uint64_t st = seed;
    for (double& v : vals) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      v = static_cast<double>((st >> 33) % 64) / 16.0 - 2.0;  // few distinct values: ties
    }
    if (l.n_blocks() > 1 && bs > 2) {
      for (std::int64_t k = 0; k < l.n_blocks(); ++k) vals[at(k * bs * bs)] = -kInf;  // in-block row 0 starts -inf
      for (std::int64_t j = 0; j < bs; ++j) vals[at(bs * bs + j)] = -kInf;            // block 1, row 0: all -inf
      vals[at((l.n_blocks() - 1) * bs * bs + bs + bs - 1)] = std::nan("");            // a nan at a row's very end
    }
    check_row_reductions_cuda(l, vals, c.Nb, {DType::f32, DType::bf16, DType::f16, DType::f64}, seed);
  }
}

TEST_CASE("broadcast_add/sub and row_add CUDA at block sizes 16 to 256 match CPU", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  // The warp-per-block broadcast (a block-row of 2 to 32 units: bs 16 to 256 in 16-bit,
  // up to 128 in f32, 64 in f64), the CUDA-block-per-block one beyond (f32 256, f64 128 and
  // 256) and the map (bs 4); hardware 16-bit rounding in the stores.
  std::uint64_t seed = 2200;
  for (std::int64_t bs : {4, 16, 32, 64, 128, 256}) {
    const std::int64_t g = bs >= 128 ? 2 : 4;
    Layout l = random_layout(2, g, g + 1, bs, 0.6, ++seed);
    for (DType dt : {DType::f32, DType::bf16, DType::f16, DType::f64}) {
      INFO(describe(l) << " dtype " << dtype_name(dt));
      const double tol = dt == DType::bf16 ? 1e-2 : dt == DType::f16 ? 2e-3 : 1e-6;
      Tensor a = rand_seeded({2, l.rows()}, ++seed, {.dtype = dt}, -2.0, 2.0);
      Tensor b = rand_seeded({2, l.cols()}, ++seed, {.dtype = dt}, -2.0, 2.0);
      Tensor d = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt}, -2.0, 2.0);
      Tensor ag = a.to(Device::cuda()), bg = b.to(Device::cuda());
      tgt::require_close(broadcast_add(ag, bg, l).data(), broadcast_add(a, b, l).data(), tol, tol);
      tgt::require_close(broadcast_sub(ag, bg, l).data(), broadcast_sub(a, b, l).data(), tol, tol);
      BlockSparseTensor x(d, l), xg(d.to(Device::cuda()), l);
      tgt::require_close(row_add(xg, ag).data(), row_add(x, a).data(), tol, tol);
      Tensor v = rand_seeded({2, l.rows()}, ++seed, {.dtype = dt}, 0.5, 2.0);
      tgt::require_close(row_div(xg, v.to(Device::cuda())).data(), row_div(x, v).data(), tol, tol);
    }
  }
}

TEST_CASE("row ops with mixed devices throw", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  Layout l = full_layout(1, 2, 2, 4);
  BlockSparseTensor x(zeros({4, 4, 4}), l);
  tgt::require_throws<DeviceError>([&] { row_add(x, zeros({1, 8}, {.device = Device::cuda()})); },
                                   {"row_add", "x", "v", "same device"});
  tgt::require_throws<DeviceError>(
      [&] { broadcast_add(zeros({1, 8}), zeros({1, 8}, {.device = Device::cuda()}), l); },
      {"broadcast_add", "a", "b", "same device"});
}

TEST_CASE("row_sum / row_max CUDA with lane groups wider than a segment match CPU", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  // Long rows against few units per segment widen the lane group past one block (bs 16 at
  // 64 block-columns: up to 32 lanes over 16 blocks at once), rows of more than 8 units per
  // lane take several rounds (bs 64 at 48 full block-columns), one empty block-row per
  // layout, all -inf in-block rows, nans early and late, ties; misaligned data takes the
  // element-wide predicated loads; an empty layout gives 0 / -inf / -1.
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  std::uint64_t seed = 2300;
  for (const Case& c : {Case{2, 3, 64, 16, 0.9}, Case{1, 2, 48, 64, 1.0}, Case{2, 2, 40, 32, 0.25},
                        Case{1, 2, 20, 128, 0.5}, Case{2, 2, 6, 16, 0.0}}) {
    Layout base = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    Layout l = tgt::layout_where(c.B, c.Mb, c.Nb, c.bs, [&](auto b, auto r, auto cc) {
      return !(b == 0 && r == 1) && base.active(b, r, cc);
    });
    const std::int64_t bs = c.bs, n = l.n_blocks() * bs * bs;
    std::vector<double> vals(at(n));
    std::uint64_t st = seed;
    for (double& v : vals) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      v = static_cast<double>((st >> 33) % 32) / 8.0 - 2.0;
    }
    if (l.n_blocks() > 2) {
      for (std::int64_t k = 0; k < l.n_blocks(); ++k)
        for (std::int64_t j = 0; j < bs; ++j) vals[at(k * bs * bs + j)] = -kInf;  // in-block row 0: all -inf
      vals[at(bs + 1)] = std::nan("");                                             // row 1: a nan at the start
      vals[at((l.n_blocks() - 1) * bs * bs + 2 * bs + bs - 1)] = std::nan("");       // row 2: one at the end
      vals[at(3 * bs + 2)] = 5.0;                                                 // row 3: a tie for the maximum
      vals[at((l.n_blocks() - 1) * bs * bs + 3 * bs + 4)] = 5.0;
    }
    check_row_reductions_cuda(l, vals, c.Nb, {DType::f32, DType::bf16, DType::f16}, seed);
  }
}

TEST_CASE("row_sum CUDA with more row groups than resident warps matches CPU", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  // The streaming sum runs persistent warps (an H200 holds 132 x 5 x 8 of them in 16-bit):
  // 400 block rows of 64 give 6,400 groups of 4 rows (16-bit) and 12,800 of 2 (f32); 6,000
  // of 16 put 16 rows, a whole block row, in a 16-bit warp; 120 of 128 give 7,680 groups
  // of 2 rows in 16-bit. Warps go on to further groups with offsets fetched ahead; random
  // layouts leave empty block rows in between.
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  std::uint64_t seed = 2350;
  for (const Case& c : {Case{2, 200, 3, 64, 0.6}, Case{1, 6000, 2, 16, 0.7}, Case{1, 120, 5, 128, 0.5}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    const std::int64_t n = l.n_blocks() * c.bs * c.bs;
    std::vector<double> vals(at(n));
    std::uint64_t st = seed;
    for (double& v : vals) {
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      v = static_cast<double>((st >> 33) % 64) / 16.0 - 2.0;
    }
    check_row_reductions_cuda(l, vals, c.Nb, {DType::f32, DType::bf16, DType::f16}, seed);
  }
}

TEST_CASE("broadcast_add/sub CUDA in 16-bit with several blocks per warp match CPU", "[ops][sparse_rows][cuda]") {
  TG_REQUIRE_CUDA();
  // More blocks than the grid has warps (132 SMs x 16 CUDA blocks x 8 warps on an H200),
  // so warps go on to a second block with coordinates loaded ahead; bs 16 and 32 leave
  // lanes without an a value to hold; bs 128 uses four 32-row chunks of a; b misaligned
  // takes element-wide units.
  struct Case { std::int64_t B, Mb, Nb, bs; double density; };
  std::uint64_t seed = 2400;
  for (const Case& c : {Case{1, 132, 132, 16, 1.0}, Case{2, 5, 7, 32, 0.6}, Case{2, 3, 5, 64, 0.5},
                        Case{1, 3, 4, 128, 0.7}}) {
    Layout l = random_layout(c.B, c.Mb, c.Nb, c.bs, c.density, ++seed);
    for (DType dt : {DType::bf16, DType::f16}) {
      for (bool misaligned : {false, true}) {
        INFO(describe(l) << " dtype " << dtype_name(dt) << (misaligned ? " misaligned b" : ""));
        const double tol = dt == DType::bf16 ? 1e-2 : 2e-3;
        Tensor a = rand_seeded({c.B, l.rows()}, ++seed, {.dtype = dt}, -2.0, 2.0);
        Tensor b = rand_seeded({c.B, l.cols()}, ++seed, {.dtype = dt}, -2.0, 2.0);
        Tensor bg = b.to(Device::cuda());
        if (misaligned) {
          bg = tgt::misaligned_view(zeros({c.B * l.cols() + 1}, {.dtype = dt, .device = Device::cuda()}), 1,
                                    b.shape());
          copy_bytes(bg, b.to(Device::cuda()));
        }
        Tensor ag = a.to(Device::cuda());
        tgt::require_close(broadcast_add(ag, bg, l).data(), broadcast_add(a, b, l).data(), tol, tol);
        tgt::require_close(broadcast_sub(ag, bg, l).data(), broadcast_sub(a, b, l).data(), tol, tol);
      }
    }
  }
}

}  // namespace test_sparse_rows
