// rope: against an f64 reference written here (unreduced angles, plain sin / cos), both pair
// conventions, partial rotary, positions from an offset, [S] and [G, S] tensors; the
// properties that make it a position encoding (norms kept, scores depend on p_q − p_k);
// the gradient (the inverse rotation) and gradcheck; bad inputs; [cuda] against the CPU.
#include <cmath>
#include <cstdint>
#include <vector>

#include "util.h"

namespace test_rope {

using namespace tg;

namespace {

struct Case {
  Shape shape;
  RopeOptions opt;
};

// The rotation of x by the definition, in f64, position of row (n, s) from pos(n, s).
std::vector<double> reference(const std::vector<double>& x, std::int64_t N, std::int64_t S, std::int64_t D,
                              const RopeOptions& o, const std::vector<std::int64_t>& pos, std::int64_t groups,
                              bool inverse = false) {
  const std::int64_t rd = o.rotary_dim == 0 ? D : o.rotary_dim, half = rd / 2;
  std::vector<double> out = x;
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t s = 0; s < S; ++s) {
      const std::int64_t p = groups == 0 ? o.offset + s : pos[static_cast<std::size_t>(n / (N / groups) * S + s)];
      for (std::int64_t i = 0; i < half; ++i) {
        const double theta = static_cast<double>(p) * std::pow(o.base, -2.0 * static_cast<double>(i) / rd);
        const double c = std::cos(theta), sn = inverse ? -std::sin(theta) : std::sin(theta);
        const std::int64_t a = o.interleaved ? 2 * i : i, b = o.interleaved ? 2 * i + 1 : i + half;
        const std::size_t ia = static_cast<std::size_t>((n * S + s) * D + a);
        const std::size_t ib = static_cast<std::size_t>((n * S + s) * D + b);
        out[ia] = x[ia] * c - x[ib] * sn;
        out[ib] = x[ia] * sn + x[ib] * c;
      }
    }
  return out;
}

std::vector<Case> cases() {
  std::vector<Case> cs;
  for (bool inter : {false, true}) {
    cs.push_back({Shape{1, 1, 2}, {.interleaved = inter}});
    cs.push_back({Shape{3, 17, 8}, {.interleaved = inter}});
    cs.push_back({Shape{2, 3, 5, 64}, {.base = 500000.0, .interleaved = inter, .offset = 1000}});
    cs.push_back({Shape{4, 9, 130}, {.rotary_dim = 64, .interleaved = inter}});
    cs.push_back({Shape{2, 0, 16}, {.interleaved = inter}});
    cs.push_back({Shape{6, 11, 32}, {.interleaved = inter}});  // with positions [G, S] below
  }
  return cs;
}

// Positions for case k: none, or [S] / [G, S] tensors (i32 and i64) with large and
// negative values.
Tensor positions_for(const Case& c, int k, std::int64_t& groups, std::vector<std::int64_t>& pos) {
  const std::int64_t S = c.shape[c.shape.ndim() - 2];
  std::int64_t N = 1;
  for (int d = 0; d + 2 < c.shape.ndim(); ++d) N *= c.shape[d];
  groups = 0;
  pos.clear();
  if (k == 0 || S == 0) return Tensor();
  groups = k == 1 ? 1 : N / 2 > 0 && N % 2 == 0 ? 2 : 1;
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t s = 0; s < S; ++s) pos.push_back((s * 7919 + g * 100003) % 250007 - 1000);
  Tensor t = from_vector(pos, k == 1 ? Shape{S} : Shape{groups, S});
  return k == 2 ? t.to(DType::i32) : t;
}

// Calls f(case, k, groups, positions) for every case and positions kind k (see positions_for),
// the case's options holding those positions.
template <typename F>
void for_each_case(F&& f) {
  for (const Case& c0 : cases()) {
    for (int k = 0; k < 3; ++k) {
      Case c = c0;
      std::int64_t groups = 0;
      std::vector<std::int64_t> pos;
      c.opt.positions = positions_for(c, k, groups, pos);
      f(c, k, groups, pos);
    }
  }
}

}  // namespace

TEST_CASE("rope matches the f64 definition: conventions, partial rotary, positions", "[ops][rope]") {
  for_each_case([](const Case& c, int k, std::int64_t groups, const std::vector<std::int64_t>& pos) {
    const std::int64_t D = c.shape[c.shape.ndim() - 1], S = c.shape[c.shape.ndim() - 2];
    const std::int64_t N = S == 0 ? 0 : c.shape.numel() / (S * D);
    const Tensor x64 = tgt::rand64(c.shape, 11 + static_cast<std::uint64_t>(k));
    const auto ref = reference(tgt::values(x64), N, S, D, c.opt, pos, groups);
    for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
      INFO("shape " << c.shape << " interleaved " << c.opt.interleaved << " positions " << k << " dtype " << dt);
      const Tensor x = x64.to(dt);
      const Tensor y = rope(x, c.opt);
      REQUIRE(y.dtype() == dt);
      // The reference rotates the rounded input, so the tolerance is the output rounding.
      const auto xr = tgt::values(x);
      const auto want = reference(xr, N, S, D, c.opt, pos, groups);
      // f64: angles of ~2.5e5 rad are formed to ~|θ|·2e-16 by either side.
      const double tol = dt == DType::f64 ? 1e-10 : dt == DType::f32 ? 2e-6 : dt == DType::bf16 ? 1.6e-2 : 2e-3;
      tgt::require_close(y, from_vector(want, c.shape), tol, tol);
      if (dt == DType::f64) tgt::require_close(y, from_vector(ref, c.shape), 1e-10, 1e-10);
    }
  });
}

TEST_CASE("rope keeps norms and makes scores depend on the position difference only", "[ops][rope]") {
  const std::int64_t D = 64;
  const Tensor q = tgt::rand64({1, 1, D}, 3), k = tgt::rand64({1, 1, D}, 4);
  auto score = [&](std::int64_t pq, std::int64_t pk) {
    const Tensor a = rope(q, {.offset = pq}), b = rope(k, {.offset = pk});
    const auto va = tgt::values(a), vb = tgt::values(b);
    double s = 0;
    for (std::int64_t i = 0; i < D; ++i) s += va[static_cast<std::size_t>(i)] * vb[static_cast<std::size_t>(i)];
    return s;
  };
  for (std::int64_t delta : {0, 1, 5, 37, -3}) {
    const double s0 = score(100 + delta, 100);
    REQUIRE(std::abs(score(7 + delta, 7) - s0) < 1e-10);
    REQUIRE(std::abs(score(123456 + delta, 123456) - s0) < 1e-9);
  }
  // Different differences give different scores (the test above cannot pass by a constant).
  REQUIRE(std::abs(score(10, 0) - score(0, 0)) > 1e-3);
  const Tensor x = tgt::rand64({2, 5, D}, 5);
  const auto vx = tgt::values(x), vy = tgt::values(rope(x, {.interleaved = true, .offset = 99}));
  for (std::size_t r = 0; r < 10; ++r)
    for (std::size_t i = 0; i < static_cast<std::size_t>(D); i += 2) {
      const std::size_t a = r * D + i;
      REQUIRE(std::abs(std::hypot(vx[a], vx[a + 1]) - std::hypot(vy[a], vy[a + 1])) < 1e-12);
    }
}

TEST_CASE("rope gradient is the inverse rotation; gradcheck", "[ops][rope]") {
  for (bool inter : {false, true}) {
    const RopeOptions o{.rotary_dim = 6, .interleaved = inter, .offset = 3};
    Tensor x = tgt::rand64({2, 4, 10}, 6).requires_grad_();
    Tensor g = tgt::rand64({2, 4, 10}, 7);
    rope(x, o).backward(g);
    const auto want = reference(tgt::values(g), 2, 4, 10, o, {}, 0, true);
    tgt::require_close(x.grad(), from_vector(want, Shape{2, 4, 10}), 1e-12, 1e-12);
    // Undoing: the inverse rotation of the rotation is the identity.
    const auto res = autograd::gradcheck([o](const std::vector<Tensor>& in) { return rope(in[0], o); },
                                         {tgt::rand64({3, 5, 10}, 8).requires_grad_()});
    INFO(res.report);
    REQUIRE(res.ok);
  }
  RopeOptions o;
  o.positions = from_vector(std::vector<std::int64_t>{5, -2, 40}, Shape{3});
  const auto res =
      autograd::gradcheck([o](const std::vector<Tensor>& in) { return mul(rope(in[0], o), in[1]); },
                          {tgt::rand64({2, 3, 4}, 9).requires_grad_(), tgt::rand64({2, 3, 4}, 10).requires_grad_()});
  INFO(res.report);
  REQUIRE(res.ok);
}

TEST_CASE("rope refuses bad inputs with messages naming the argument", "[ops][rope]") {
  const Tensor x = zeros({2, 3, 8});
  tgt::require_throws<DTypeError>([] { (void)rope(zeros({2, 4}, {.dtype = DType::i32})); }, {"rope", "x", "i32"});
  tgt::require_throws<ShapeError>([] { (void)rope(zeros({8})); }, {"rope", "x", "at least 2 dims", "[8]"});
  tgt::require_throws<ShapeError>([&] { (void)rope(x, {.rotary_dim = 3}); }, {"rope", "rotary_dim", "even", "3"});
  tgt::require_throws<ShapeError>([&] { (void)rope(x, {.rotary_dim = 10}); }, {"rope", "rotary_dim", "D = 8", "10"});
  tgt::require_throws<ShapeError>([] { (void)rope(zeros({2, 3, 7})); }, {"rope", "rotary_dim", "D = 7", "odd"});
  tgt::require_throws<ValueError>([&] { (void)rope(x, {.base = 0.0}); }, {"rope", "base", "> 0", "0"});
  tgt::require_throws<ValueError>([&] { (void)rope(x, {.base = NAN}); }, {"rope", "base", "nan"});
  RopeOptions o;
  o.positions = zeros({3}, {.dtype = DType::f32});
  tgt::require_throws<DTypeError>([&] { (void)rope(x, o); }, {"rope", "positions", "i32 or i64", "f32"});
  o.positions = zeros({4}, {.dtype = DType::i64});
  tgt::require_throws<ShapeError>([&] { (void)rope(x, o); }, {"rope", "positions", "S = 3", "[4]"});
  o.positions = zeros({3, 3}, {.dtype = DType::i64});
  tgt::require_throws<ShapeError>([&] { (void)rope(x, o); }, {"rope", "G = 3", "N = 2"});
  o.positions = zeros({1, 3, 1}, {.dtype = DType::i64});
  tgt::require_throws<ShapeError>([&] { (void)rope(x, o); }, {"rope", "positions", "[G, S]", "[1, 3, 1]"});
}

TEST_CASE("rope on CUDA matches the CPU", "[ops][rope][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for_each_case([&](const Case& c, int k, std::int64_t, const std::vector<std::int64_t>&) {
    for (DType dt : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
      INFO("shape " << c.shape << " interleaved " << c.opt.interleaved << " positions " << k << " dtype " << dt);
      const Tensor x = tgt::rand64(c.shape, 21).to(dt);
      Tensor xg = x.to(gpu).requires_grad_();
      RopeOptions og = c.opt;
      if (k == 2 && og.positions.defined()) og.positions = og.positions.to(gpu);  // on the GPU; k == 1 stays on the CPU
      const Tensor yg = rope(xg, og);
      const Tensor yc = rope(x, c.opt);
      // sin / cos of the same f64-reduced angle in f32 on both sides: an ulp or two apart.
      const double tol = dt == DType::f64 ? 1e-10 : dt == DType::f32 ? 1e-6 : dt == DType::bf16 ? 8e-3 : 1e-3;
      tgt::require_close(yg.to(Device::cpu()), yc, tol, tol);
      const Tensor g = tgt::rand64(c.shape, 22).to(dt);
      yg.backward(g.to(gpu));
      Tensor xc = x.detach().requires_grad_();
      rope(xc, c.opt).backward(g);
      tgt::require_close(xg.grad().to(Device::cpu()), xc.grad(), tol, tol);
    }
  });
  // More pairs a position than a CTA's items hold: the row kernel, forward and backward.
  {
    const Tensor x = tgt::rand64({2, 3, 4100}, 24);
    Tensor xg = x.to(gpu).requires_grad_();
    const Tensor yg = rope(xg, {.offset = 5});
    tgt::require_close(yg.to(Device::cpu()), rope(x, {.offset = 5}), 1e-10, 1e-10);
    yg.backward(x.to(gpu));
    Tensor xc = x.detach().requires_grad_();
    rope(xc, {.offset = 5}).backward(x);
    tgt::require_close(xg.grad().to(Device::cpu()), xc.grad(), 1e-10, 1e-10);
  }
  // A view one element past an aligned start: the same layouts without 16-byte runs.
  for (DType dt : {DType::f32, DType::bf16}) {
    for (bool inter : {false, true}) {
      INFO("misaligned " << dt << " interleaved " << inter);
      const Tensor base = tgt::rand64({3 * 17 * 64 + 1}, 25).to(dt).to(gpu);
      const Tensor xm = tgt::misaligned_view(base, 1, {3, 17, 64});
      const RopeOptions o{.interleaved = inter, .offset = 3};
      const double tol = dt == DType::f32 ? 1e-6 : 8e-3;
      tgt::require_close(rope(xm, o).to(Device::cpu()), rope(xm.to(Device::cpu()), o), tol, tol);
    }
  }
  // A long sequence: runs of positions, their angles shared by many sequences.
  const Tensor x = tgt::rand64({4, 4096, 128}, 23).to(DType::bf16);
  tgt::require_close(rope(x.to(gpu), {.rotary_dim = 96, .offset = 17}).to(Device::cpu()),
                     rope(x, {.rotary_dim = 96, .offset = 17}), 8e-3, 8e-3);
}

}  // namespace test_rope
