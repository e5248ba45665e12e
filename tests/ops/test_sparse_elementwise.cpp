// Tests of the element-wise ops on block-sparse tensors (ops/sparse_elementwise) and of
// flatten_to_3d / unflatten (ops/shape/flatten): f64 references as plain loops masked by
// the layout, gradchecks, layout mismatches, and CUDA against the CPU.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "util.h"

namespace test_sparse_elementwise {

using namespace tg;

namespace {

std::size_t at(std::int64_t i) { return static_cast<std::size_t>(i); }
const double kNan = std::nan("");
const double kPi = 3.14159265358979323846;

// Block sizes 1, 2, 16, 32, 64 (2x2 / 3x2 grids from 16 up, which keeps block 64 at
// <= 74K elements a layout); batch 1-3; empty, one block, ~30%, full, and layouts with an
// empty block-row and block-column.
std::vector<Layout> test_layouts() {
  std::vector<Layout> out;
  std::uint64_t seed = 300;
  for (std::int64_t bs : {1, 2, 16, 32, 64}) {
    const std::int64_t g = bs >= 16 ? 2 : 4;
    for (int kind = 0; kind < 5; ++kind) {
      const std::int64_t B = 1 + (kind + bs) % 3, Mb = g + kind % 2, Nb = g;
      ++seed;
      switch (kind) {
        case 0: out.push_back(random_layout(B, Mb, Nb, bs, 0.0, seed)); break;
        case 1: out.push_back(tgt::layout_where(B, Mb, Nb, bs, [&](auto b, auto r, auto c) {
                  return b == 0 && r == Mb - 1 && c == 0;
                }));
                break;
        case 2: out.push_back(random_layout(B, Mb, Nb, bs, 0.3, seed)); break;
        case 3: out.push_back(full_layout(B, Mb, Nb, bs)); break;
        default: out.push_back(tgt::layout_where(B, Mb, Nb, bs, [&](auto b, auto r, auto c) {
                   return r != 0 && c != Nb - 1 && (b + r + c) % 3 != 1;
                 }));
      }
    }
  }
  return out;
}

std::string describe(const Layout& l) {
  return detail::concat("layout B=", l.batch(), " Mb=", l.block_rows(), " Nb=", l.block_cols(),
                        " bs=", l.block_size(), " active=", l.n_blocks());
}

// Dense [B, M, N] holding f(flat index) at active positions and `fill` elsewhere.
Tensor masked(const Layout& l, double fill, const std::function<double(std::size_t)>& f) {
  const std::int64_t B = l.batch(), M = l.rows(), N = l.cols(), bs = l.block_size();
  std::vector<double> out(at(B * M * N), fill);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j)
        if (l.active(b, i / bs, j / bs)) out[at((b * M + i) * N + j)] = f(at((b * M + i) * N + j));
  return from_vector(out, {B, M, N});
}

struct UnaryCase {
  std::string name;
  std::function<BlockSparseTensor(const BlockSparseTensor&)> op;
  std::function<double(double)> ref;
  double lo, hi;
};

std::vector<UnaryCase> unary_cases() {
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  return {
      {"neg", [](const BlockSparseTensor& x) { return neg(x); }, [](double x) { return -x; }, -3, 3},
      {"operator-", [](const BlockSparseTensor& x) { return -x; }, [](double x) { return -x; }, -3, 3},
      {"exp", [](const BlockSparseTensor& x) { return exp(x); }, [](double x) { return std::exp(x); }, -3, 3},
      {"log", [](const BlockSparseTensor& x) { return log(x); }, [](double x) { return std::log(x); }, 0.1, 4},
      {"sqrt", [](const BlockSparseTensor& x) { return sqrt(x); }, [](double x) { return std::sqrt(x); }, 0.1, 4},
      {"rsqrt", [](const BlockSparseTensor& x) { return rsqrt(x); },
       [](double x) { return 1.0 / std::sqrt(x); }, 0.1, 4},
      {"relu", [](const BlockSparseTensor& x) { return relu(x); }, [](double x) { return x > 0 ? x : 0.0; }, -2, 2},
      {"gelu", [](const BlockSparseTensor& x) { return gelu(x); },
       [](double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }, -3, 3},
      {"gelu_tanh", [](const BlockSparseTensor& x) { return gelu(x, GeluApprox::Tanh); },
       [](double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / kPi) * (x + 0.044715 * x * x * x))); },
       -3, 3},
      {"silu", [](const BlockSparseTensor& x) { return silu(x); }, [sig](double x) { return x * sig(x); }, -3, 3},
      {"tanh", [](const BlockSparseTensor& x) { return tanh(x); }, [](double x) { return std::tanh(x); }, -3, 3},
      {"sigmoid", [](const BlockSparseTensor& x) { return sigmoid(x); }, sig, -3, 3},
      {"abs", [](const BlockSparseTensor& x) { return abs(x); }, [](double x) { return std::fabs(x); }, -3, 3},
      {"pow3", [](const BlockSparseTensor& x) { return pow(x, 3.0); }, [](double x) { return x * x * x; }, -2, 2},
      {"pow-0.5", [](const BlockSparseTensor& x) { return pow(x, -0.5); },
       [](double x) { return std::pow(x, -0.5); }, 0.2, 3},
      {"add 1.5", [](const BlockSparseTensor& x) { return add(x, 1.5); }, [](double x) { return x + 1.5; }, -3, 3},
      {"sub 1.5", [](const BlockSparseTensor& x) { return sub(x, 1.5); }, [](double x) { return x - 1.5; }, -3, 3},
      {"mul -2", [](const BlockSparseTensor& x) { return mul(x, -2.0); }, [](double x) { return -2 * x; }, -3, 3},
      {"div 4", [](const BlockSparseTensor& x) { return div(x, 4.0); }, [](double x) { return x / 4; }, -3, 3},
      {"x + s", [](const BlockSparseTensor& x) { return x + 2.0; }, [](double x) { return x + 2; }, -3, 3},
      {"x - s", [](const BlockSparseTensor& x) { return x - 2.0; }, [](double x) { return x - 2; }, -3, 3},
      {"x * s", [](const BlockSparseTensor& x) { return x * 3.0; }, [](double x) { return x * 3; }, -3, 3},
      {"x / s", [](const BlockSparseTensor& x) { return x / 8.0; }, [](double x) { return x / 8; }, -3, 3},
      {"s + x", [](const BlockSparseTensor& x) { return 2.0 + x; }, [](double x) { return 2 + x; }, -3, 3},
      {"s - x", [](const BlockSparseTensor& x) { return 2.0 - x; }, [](double x) { return 2 - x; }, -3, 3},
      {"s * x", [](const BlockSparseTensor& x) { return 3.0 * x; }, [](double x) { return 3 * x; }, -3, 3},
      {"s / x", [](const BlockSparseTensor& x) { return 3.0 / x; }, [](double x) { return 3 / x; }, 0.5, 3},
  };
}

struct BinaryCase {
  std::string name;
  std::function<BlockSparseTensor(const BlockSparseTensor&, const BlockSparseTensor&)> op;
  std::function<double(double, double)> ref;
};

std::vector<BinaryCase> binary_cases() {
  using B = const BlockSparseTensor&;
  return {
      {"add", [](B a, B b) { return add(a, b); }, [](double a, double b) { return a + b; }},
      {"sub", [](B a, B b) { return sub(a, b); }, [](double a, double b) { return a - b; }},
      {"mul", [](B a, B b) { return mul(a, b); }, [](double a, double b) { return a * b; }},
      {"div", [](B a, B b) { return div(a, b); }, [](double a, double b) { return a / b; }},
      {"maximum", [](B a, B b) { return maximum(a, b); }, [](double a, double b) { return std::max(a, b); }},
      {"minimum", [](B a, B b) { return minimum(a, b); }, [](double a, double b) { return std::min(a, b); }},
      {"a + b", [](B a, B b) { return a + b; }, [](double a, double b) { return a + b; }},
      {"a - b", [](B a, B b) { return a - b; }, [](double a, double b) { return a - b; }},
      {"a * b", [](B a, B b) { return a * b; }, [](double a, double b) { return a * b; }},
      {"a / b", [](B a, B b) { return a / b; }, [](double a, double b) { return a / b; }},
  };
}

}  // namespace

TEST_CASE("block-sparse unary ops match masked f64 references", "[ops][sparse_elementwise]") {
  std::uint64_t seed = 1;
  for (const Layout& l : test_layouts()) {
    INFO(describe(l));
    for (const UnaryCase& c : unary_cases()) {
      INFO(c.name);
      Tensor dense = tgt::rand64({l.batch(), l.rows(), l.cols()}, ++seed, c.lo, c.hi);
      auto d = tgt::values(dense);
      BlockSparseTensor y = c.op(to_sparse(dense, l));
      REQUIRE(y.layout() == l);
      REQUIRE(y.dtype() == DType::f64);
      // nan at inactive positions on both sides: nothing is written outside the layout
      tgt::require_close(to_dense(y, kNan), masked(l, kNan, [&](std::size_t f) { return c.ref(d[f]); }), 1e-12,
                         1e-12);
    }
  }
}

TEST_CASE("block-sparse binary ops match masked f64 references", "[ops][sparse_elementwise]") {
  std::uint64_t seed = 1000;
  for (const Layout& l : test_layouts()) {
    INFO(describe(l));
    // an equal layout built separately: equality is by content, not identity
    Layout l2(l.mask(), l.block_size());
    for (const BinaryCase& c : binary_cases()) {
      INFO(c.name);
      Tensor da = tgt::rand64({l.batch(), l.rows(), l.cols()}, ++seed, -2, 2);
      Tensor db = tgt::rand64({l.batch(), l.rows(), l.cols()}, ++seed, 0.5, 2);
      auto va = tgt::values(da), vb = tgt::values(db);
      BlockSparseTensor y = c.op(to_sparse(da, l), to_sparse(db, l2));
      REQUIRE(y.layout() == l);
      tgt::require_close(to_dense(y, kNan), masked(l, kNan, [&](std::size_t f) { return c.ref(va[f], vb[f]); }),
                         1e-14, 1e-14);
    }
  }
}

TEST_CASE("block-sparse element-wise ops propagate nan and inf like the dense ops", "[ops][sparse_elementwise]") {
  Layout l = full_layout(1, 1, 1, 2);
  const double inf = std::numeric_limits<double>::infinity();
  BlockSparseTensor x(from_vector<double>({kNan, inf, -inf, 0.0}, {1, 2, 2}), l);
  auto v = tgt::values(exp(x).data());
  REQUIRE(std::isnan(v[0]));
  REQUIRE(v[1] == inf);
  REQUIRE(v[2] == 0.0);
  REQUIRE(v[3] == 1.0);
  auto w = tgt::values(log(x).data());
  REQUIRE(std::isnan(w[0]));
  REQUIRE(w[1] == inf);
  REQUIRE(std::isnan(w[2]));
  REQUIRE(w[3] == -inf);
}

TEST_CASE("block-sparse element-wise gradcheck", "[ops][sparse_elementwise][gradcheck]") {
  Layout l = tgt::layout_where(2, 3, 2, 2, [](auto b, auto r, auto c) { return r != 1 && (b + c) % 2 == 0; });
  REQUIRE(l.n_blocks() > 0);
  auto X = [&](const Tensor& d) { return BlockSparseTensor(d, l); };
  std::uint64_t seed = 40;
  for (const UnaryCase& c : unary_cases()) {
    INFO(c.name);
    // keep away from kinks (relu, abs at 0) where finite differences disagree
    Tensor d = tgt::rand64({l.n_blocks(), 2, 2}, ++seed, c.lo, c.hi);
    if (c.name == "relu" || c.name == "abs") {
      auto v = tgt::values(d);
      for (double& e : v) e = e >= 0 ? e + 0.2 : e - 0.2;
      d = from_vector(v, d.shape());
    }
    d.requires_grad_();
    auto r = autograd::gradcheck([&](const std::vector<Tensor>& in) { return c.op(X(in[0])).data(); }, {d});
    INFO(r.report);
    REQUIRE(r.ok);
  }
  for (const BinaryCase& c : binary_cases()) {
    INFO(c.name);
    Tensor a = tgt::rand64({l.n_blocks(), 2, 2}, ++seed, -2, 2).requires_grad_();
    Tensor b = tgt::rand64({l.n_blocks(), 2, 2}, ++seed, 0.5, 2).requires_grad_();
    auto r = autograd::gradcheck([&](const std::vector<Tensor>& in) { return c.op(X(in[0]), X(in[1])).data(); },
                                 {a, b});
    INFO(r.report);
    REQUIRE(r.ok);
  }
}

TEST_CASE("block-sparse element-wise backward reaches the dense input", "[ops][sparse_elementwise]") {
  // y = exp(x) * x + 2x on the active blocks; dy/ddense = exp(x)(1 + x) + 2 there, 0 elsewhere
  Layout l = tgt::layout_where(2, 2, 3, 16, [](auto b, auto r, auto c) { return (b + r * 2 + c) % 3 != 0; });
  Tensor dense = tgt::rand64({2, 32, 48}, 5).requires_grad_();
  BlockSparseTensor x = to_sparse(dense, l);
  BlockSparseTensor y = exp(x) * x + 2.0 * x;
  sum(to_dense(y)).backward();
  auto d = tgt::values(dense);
  tgt::require_close(dense.grad(), masked(l, 0.0, [&](std::size_t f) { return std::exp(d[f]) * (1 + d[f]) + 2; }),
                     1e-12, 1e-12);
}

TEST_CASE("block-sparse element-wise bad inputs", "[ops][sparse_elementwise]") {
  Layout la = tgt::layout_where(2, 4, 4, 16, [](auto b, auto r, auto c) { return (b + r + c) % 2 == 0; });  // 16 blocks
  Layout lb = tgt::layout_where(2, 4, 4, 16, [](auto b, auto r, auto c) { return (b + r + c) % 3 == 0; });
  auto make = [](const Layout& l, DType dt = DType::f32) {
    return BlockSparseTensor(zeros({l.n_blocks(), l.block_size(), l.block_size()}, {.dtype = dt}), l);
  };
  const std::string na = std::to_string(la.n_blocks()), nb = std::to_string(lb.n_blocks());
  const std::string want = "add: layouts of a and b differ (a: " + na + " active blocks of [2, 4, 4] at block 16, b: " +
                           nb + " active blocks of [2, 4, 4] at block 16)";
  tgt::require_throws<LayoutError>([&] { add(make(la), make(lb)); }, {want, "masks differ"});
  tgt::require_throws<LayoutError>([&] { maximum(make(la), make(lb)); }, {"maximum: layouts of a and b differ"});
  Layout lbs = full_layout(2, 4, 4, 8), lfull = full_layout(2, 4, 4, 16);
  tgt::require_throws<LayoutError>([&] { mul(make(lfull), make(lbs)); },
                                   {"mul: layouts of a and b differ", "at block 16", "at block 8",
                                    "block sizes differ"});
  Layout lgrid = full_layout(2, 4, 2, 16);
  tgt::require_throws<LayoutError>([&] { sub(make(lfull), make(lgrid)); },
                                   {"sub", "of [2, 4, 4]", "of [2, 4, 2]", "block grids differ"});
  tgt::require_throws<LayoutError>([&] { make(lfull) / make(full_layout(3, 4, 4, 16)); },
                                   {"div", "[3, 4, 4]", "block grids differ"});
  tgt::require_throws<DTypeError>([&] { add(make(la), make(la, DType::f64)); }, {"add", "a", "b", "f32", "f64"});
  tgt::require_throws<DTypeError>([&] { exp(make(la, DType::i32)); }, {"exp", "x", "floating", "i32"});
  tgt::require_throws<DTypeError>([&] { sub(make(la, DType::i64), 1.0); }, {"sub", "x", "i64"});
  tgt::require_throws<DTypeError>([&] { minimum(make(la, DType::i32), make(la, DType::i32)); },
                                  {"minimum", "a", "i32"});
  tgt::require_throws<ValueError>([&] { relu(BlockSparseTensor()); }, {"relu", "x", "undefined"});
  tgt::require_throws<ValueError>([&] { add(make(la), BlockSparseTensor()); }, {"add", "b", "undefined"});
  tgt::require_throws<LayoutError>([&] { check_same_layout("my_op", make(la), make(lb)); },
                                   {"my_op: layouts of a and b differ"});
}

TEST_CASE("block-sparse element-wise with mixed devices throws", "[ops][sparse_elementwise][cuda]") {
  TG_REQUIRE_CUDA();
  Layout l = full_layout(1, 2, 2, 4);
  BlockSparseTensor a(zeros({4, 4, 4}), l), b(zeros({4, 4, 4}, {.device = Device::cuda()}), l);
  tgt::require_throws<DeviceError>([&] { add(a, b); }, {"add", "a", "b", "same device"});
}

TEST_CASE("block-sparse element-wise CUDA matches CPU, forward and backward", "[ops][sparse_elementwise][cuda]") {
  TG_REQUIRE_CUDA();
  std::uint64_t seed = 700;
  for (std::int64_t bs : {1, 2, 16, 64}) {
    Layout l = random_layout(2, 3, 4, bs, 0.5, static_cast<std::uint64_t>(bs));
    for (DType dt : {DType::f32, DType::bf16}) {
      INFO(describe(l) << " " << dtype_name(dt));
      const double rtol = dt == DType::bf16 ? 1.6e-2 : 2e-5, atol = dt == DType::bf16 ? 1e-2 : 1e-5;
      for (const UnaryCase& c : unary_cases()) {
        INFO(c.name);
        Tensor d = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt}, c.lo, c.hi);
        Tensor g = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt});
        auto run = [&](Device dev) {
          Tensor xd = d.to(dev).detach().requires_grad_();
          BlockSparseTensor y = c.op(BlockSparseTensor(xd, l));
          REQUIRE(y.device() == dev);
          y.data().backward(g.to(dev));
          return std::vector<Tensor>{y.data(), xd.grad()};
        };
        auto cpu = run(Device::cpu()), gpu = run(Device::cuda());
        tgt::require_close(gpu[0], cpu[0], rtol, atol);
        tgt::require_close(gpu[1], cpu[1], rtol, atol);
      }
      for (const BinaryCase& c : binary_cases()) {
        INFO(c.name);
        Tensor da = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt}, -2, 2);
        Tensor db = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt}, 0.5, 2);
        Tensor g = rand_seeded({l.n_blocks(), bs, bs}, ++seed, {.dtype = dt});
        auto run = [&](Device dev) {
          Tensor a = da.to(dev).detach().requires_grad_(), b = db.to(dev).detach().requires_grad_();
          BlockSparseTensor y = c.op(BlockSparseTensor(a, l), BlockSparseTensor(b, l));
          y.data().backward(g.to(dev));
          return std::vector<Tensor>{y.data(), a.grad(), b.grad()};
        };
        auto cpu = run(Device::cpu()), gpu = run(Device::cuda());
        for (std::size_t q = 0; q < cpu.size(); ++q) tgt::require_close(gpu[q], cpu[q], rtol, atol);
      }
    }
  }
}

TEST_CASE("flatten_to_3d / unflatten", "[ops][sparse_elementwise][flatten]") {
  Tensor x = tgt::rand64({2, 3, 4, 5}, 1);
  auto [x3, shape] = flatten_to_3d(x);
  REQUIRE(x3.shape() == Shape{6, 4, 5});
  REQUIRE(shape == Shape{2, 3, 4, 5});
  tgt::require_close(x3, from_vector(tgt::values(x), {6, 4, 5}), 0, 0);
  tgt::require_close(unflatten(x3, shape), x, 0, 0);
  // the last two dims may change between flatten and unflatten (e.g. a matmul)
  REQUIRE(unflatten(zeros({6, 4, 7}), shape).shape() == Shape{2, 3, 4, 7});
  // 3-d is unchanged, 2-d gets a batch of 1, 5-d merges three dims
  Tensor y = zeros({3, 4, 5});
  REQUIRE(flatten_to_3d(y).first.is_same(y));
  REQUIRE(flatten_to_3d(zeros({4, 5})).first.shape() == Shape{1, 4, 5});
  REQUIRE(unflatten(zeros({1, 4, 6}), Shape{4, 5}).shape() == Shape{4, 6});
  REQUIRE(flatten_to_3d(zeros({2, 1, 3, 4, 5})).first.shape() == Shape{6, 4, 5});
  REQUIRE(flatten_to_3d(zeros({2, 0, 4, 5})).first.shape() == Shape{0, 4, 5});
  // gradients flow through both
  Tensor xg = tgt::rand64({2, 2, 2, 3}, 2).requires_grad_();
  auto r = autograd::gradcheck(
      [](const std::vector<Tensor>& in) {
        auto [t3, s] = flatten_to_3d(in[0]);
        return unflatten(mul(t3, t3), s);
      },
      {xg});
  INFO(r.report);
  REQUIRE(r.ok);
  tgt::require_throws<ShapeError>([&] { flatten_to_3d(zeros({5})); }, {"flatten_to_3d", "at least 2 dims", "[5]"});
  tgt::require_throws<ValueError>([&] { flatten_to_3d(Tensor()); }, {"flatten_to_3d", "x", "undefined"});
  tgt::require_throws<ShapeError>([&] { unflatten(zeros({6, 4}), shape); }, {"unflatten", "x3", "3-d", "[6, 4]"});
  tgt::require_throws<ShapeError>([&] { unflatten(zeros({5, 4, 5}), shape); },
                                  {"unflatten", "batch 6", "[2, 3, 4, 5]", "[5, 4, 5]"});
  tgt::require_throws<ShapeError>([&] { unflatten(zeros({1, 4, 5}), Shape{5}); }, {"unflatten", "original_shape"});
}

}  // namespace test_sparse_elementwise
