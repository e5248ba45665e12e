// rms_norm: an f64 plain-loop reference (forward and backward), gradchecks, edge cases,
// the block-sparse overload, bad inputs, and [cuda] parity with the CPU backend.
#include <cmath>
#include <vector>

#include "util.h"

namespace test_rms_norm {

using namespace tg;

namespace {

const std::vector<DType> kRmsDtypes = {DType::f64, DType::f32, DType::bf16, DType::f16};

// Relative and absolute tolerance of one output element: the storage rounding of the
// result dominates for bf16 / f16, f32 statistics over up to 4096 elements for f32.
double rms_tol(DType dt) {
  switch (dt) {
    case DType::f64:
      return 1e-12;
    case DType::f32:
      return 2e-5;
    case DType::bf16:
      return 2e-2;
    default:
      return 4e-3;
  }
}

Tensor rnd(const Shape& s, std::uint64_t seed, DType dt, double lo = -1.0, double hi = 1.0,
           Device dev = Device::cpu()) {
  return rand_seeded(s, seed, {.dtype = dt, .device = dev}, lo, hi);
}

struct RmsRef {
  std::vector<double> y, dx, dgamma;
};

// Plain f64 loops over rows of length D: y and, for an upstream gradient dy (may be
// empty), dx and dgamma. gamma may be empty (scale 1). Derivation: with r = 1 / rms and
// xhat = x r, dy/dx_c = r (g_c - xhat_c mean_D(g xhat)) for g = dy * gamma.
RmsRef rms_reference(const std::vector<double>& x, const std::vector<double>& gamma, const std::vector<double>& dy,
                     std::int64_t D, double eps) {
  const std::size_t d = static_cast<std::size_t>(D);
  const std::size_t rows = x.size() / d;
  RmsRef r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.dgamma.assign(d, 0.0);
  for (std::size_t i = 0; i < rows; ++i) {
    const double* xr = &x[i * d];
    double ms = 0;
    for (std::size_t c = 0; c < d; ++c) ms += xr[c] * xr[c];
    const double rs = 1.0 / std::sqrt(ms / static_cast<double>(D) + eps);
    double m2 = 0;
    for (std::size_t c = 0; c < d; ++c) {
      const double gm = gamma.empty() ? 1.0 : gamma[c];
      r.y[i * d + c] = xr[c] * rs * gm;
      if (dy.empty()) continue;
      r.dgamma[c] += dy[i * d + c] * xr[c] * rs;
      m2 += dy[i * d + c] * gm * xr[c] * rs;
    }
    if (dy.empty()) continue;
    m2 /= static_cast<double>(D);
    for (std::size_t c = 0; c < d; ++c) {
      const double gm = gamma.empty() ? 1.0 : gamma[c];
      r.dx[i * d + c] = rs * (dy[i * d + c] * gm - xr[c] * rs * m2);
    }
  }
  return r;
}

Tensor as_tensor(const std::vector<double>& v, const Shape& s) { return from_vector(v, s); }

// A copy of t (undefined stays undefined) on `d`, a leaf that requires grad when `grad`.
Tensor leaf(const Tensor& t, Device d, bool grad) {
  if (!t.defined()) return Tensor();
  Tensor r = t.to(d).detach();
  if (grad) r.requires_grad_();
  return r;
}

}  // namespace

TEST_CASE("rms_norm forward and backward match an f64 reference", "[ops][rms_norm]") {
  std::uint64_t seed = 1100;
  const std::vector<Shape> shapes = {{5, 1}, {2, 3, 7},  {6, 64}, {3, 1000},   {2, 4096},
                                     {0, 7}, {2, 0, 64}, {7},     {1, 1, 3, 5}};
  for (DType dt : kRmsDtypes) {
    for (const Shape& s : shapes) {
      for (int affine = 0; affine < 2; ++affine) {
        INFO(dt << " " << s << " affine " << affine);
        const std::int64_t D = s[-1];
        Tensor x = rnd(s, ++seed, dt, -2.0, 3.0).requires_grad_();
        Tensor g = affine ? rnd({D}, ++seed, dt, 0.5, 1.5).requires_grad_() : Tensor();
        Tensor y = rms_norm(x, g, 1e-6);
        REQUIRE(y.shape() == s);
        REQUIRE(y.dtype() == dt);
        Tensor dy = rnd(s, ++seed, dt);
        y.backward(dy);
        const RmsRef ref =
            rms_reference(tgt::values(x), affine ? tgt::values(g) : std::vector<double>{}, tgt::values(dy), D, 1e-6);
        const double t = rms_tol(dt);
        tgt::require_close(y, as_tensor(ref.y, s), t, t);
        REQUIRE(x.grad().dtype() == dt);
        REQUIRE(x.grad().shape() == s);
        // dx is a difference of O(1) terms scaled by rstd; low-precision dtypes also see
        // the rounded dy before the product.
        tgt::require_close(x.grad(), as_tensor(ref.dx, s), 4 * t, 4 * t);
        if (affine) {
          // A column sum over n rows: rounding errors grow like sqrt(n).
          const double n = static_cast<double>(x.numel() / D);
          tgt::require_close(g.grad(), as_tensor(ref.dgamma, {D}), 4 * t, 4 * t * std::sqrt(std::max(n, 1.0)));
        }
      }
    }
  }
}

TEST_CASE("rms_norm gradcheck in x and gamma", "[ops][rms_norm]") {
  std::uint64_t seed = 1200;
  for (const Shape& s : std::vector<Shape>{{3, 5}, {2, 2, 7}, {4, 1}, {1, 6}, {9}}) {
    INFO("shape " << s);
    const std::int64_t D = s[-1];
    Tensor x = tgt::rand64(s, ++seed).requires_grad_();
    Tensor g = tgt::rand64({D}, ++seed, 0.5, 1.5).requires_grad_();
    // eps 1e-3 keeps rstd moderate where a D = 1 row holds a value near 0.
    auto res = autograd::gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-3); }, {x, g});
    INFO(res.report);
    REQUIRE(res.ok);
    auto res2 = autograd::gradcheck([](const std::vector<Tensor>& in) { return rms_norm(in[0], Tensor(), 1e-3); }, {x});
    INFO(res2.report);
    REQUIRE(res2.ok);
  }
  // Only gamma requires grad (x is data): dx is not computed, dgamma is.
  Tensor x = tgt::rand64({5, 4}, ++seed);
  Tensor g = tgt::rand64({4}, ++seed).requires_grad_();
  auto res = autograd::gradcheck([&](const std::vector<Tensor>& in) { return rms_norm(x, in[0]); }, {g});
  INFO(res.report);
  REQUIRE(res.ok);
}

TEST_CASE("rms_norm edge cases", "[ops][rms_norm]") {
  SECTION("empty batch: empty outputs, zero gradient for gamma") {
    Tensor x = zeros({0, 4}).requires_grad_();
    Tensor g = ones({4}).requires_grad_();
    Tensor y = rms_norm(x, g);
    REQUIRE(y.shape() == Shape{0, 4});
    sum(y).backward();
    REQUIRE(x.grad().shape() == Shape{0, 4});
    tgt::require_close(g.grad(), zeros({4}), 0, 0);
    REQUIRE(rms_norm(zeros({2, 0, 3}), Tensor()).shape() == Shape{2, 0, 3});
  }
  SECTION("known values, a zero row, a nan row, and a 1-d x") {
    Tensor x = from_vector<float>({1, 2, 3, 4, 0, 0, 0, 0, 1, NAN, 2, 3}, {3, 4});
    auto v = tgt::values(rms_norm(x, Tensor()));
    // Row 0: mean of squares (1 + 4 + 9 + 16) / 4 = 7.5.
    const double rs = 1.0 / std::sqrt(7.5 + 1e-6);
    for (int c = 0; c < 4; ++c) REQUIRE(v[static_cast<std::size_t>(c)] == Approx((c + 1) * rs).epsilon(1e-6));
    // A zero row (padding) stays 0: eps keeps rstd finite.
    for (int c = 4; c < 8; ++c) REQUIRE(v[static_cast<std::size_t>(c)] == 0.0);
    // A nan poisons its own row only.
    for (int c = 8; c < 12; ++c) REQUIRE(std::isnan(v[static_cast<std::size_t>(c)]));
    auto one = tgt::values(rms_norm(from_vector<float>({1, 2, 3, 4}, {4}), Tensor()));
    REQUIRE(one.size() == 4);
    for (std::size_t c = 0; c < 4; ++c) REQUIRE(one[c] == v[c]);
  }
  SECTION("D = 1: y = gamma * x / sqrt(x^2 + eps)") {
    Tensor x = from_vector<double>({3.0, -2.0, 0.0}, {3, 1});
    Tensor y = rms_norm(x, from_vector<double>({2.0}, {1}), 1e-2);
    auto v = tgt::values(y);
    REQUIRE(v[0] == Approx(2 * 3.0 / std::sqrt(9.01)).epsilon(1e-14));
    REQUIRE(v[1] == Approx(2 * -2.0 / std::sqrt(4.01)).epsilon(1e-14));
    REQUIRE(v[2] == 0.0);
  }
  SECTION("on rows of mean 0, rms_norm equals layer_norm") {
    // With the mean subtracted first, the mean square is the (biased) variance.
    Tensor x = tgt::rand64({6, 33}, 7, -1.0, 2.0);
    Tensor xc = sub(x, mean(x, -1, true));
    Tensor g = tgt::rand64({33}, 8, 0.5, 1.5);
    tgt::require_close(rms_norm(xc, g, 1e-5), layer_norm(x, g, Tensor(), 1e-5), 1e-12, 1e-12);
  }
  SECTION("scale invariance: rms_norm(a x) = rms_norm(x) up to eps") {
    Tensor x = tgt::rand64({4, 16}, 9);
    tgt::require_close(rms_norm(mul(x, 1000.0), Tensor(), 1e-12), rms_norm(x, Tensor(), 1e-12), 1e-9, 1e-9);
  }
}

TEST_CASE("block-sparse rms_norm normalises each logical row of a row-striped tensor", "[ops][rms_norm]") {
  // Block-rows 0 and 2 of batch 0 and 1, 2 of batch 1 active (2 x 3 block-rows of 4 x 4 blocks).
  const std::vector<bool> rows = {true, false, true, false, true, true};
  Layout l =
      tgt::layout_where(2, 3, 2, 4, [&](auto b, auto r, auto) { return rows[static_cast<std::size_t>(b * 3 + r)]; });
  Tensor xd = tgt::rand64({2, 12, 8}, 5, -2.0, 3.0);
  BlockSparseTensor x = to_sparse(xd, l);
  Tensor g = tgt::rand64({8}, 6, 0.5, 1.5);
  BlockSparseTensor y = rms_norm(x, g);
  REQUIRE(y.layout() == l);
  tgt::require_close(to_dense(y), to_dense(to_sparse(rms_norm(xd, g), l)), 1e-12, 1e-12);
  auto res = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) { return rms_norm(BlockSparseTensor(in[0], l), in[1], 1e-3).data(); },
      {x.data().detach().requires_grad_(), g.detach().requires_grad_()});
  INFO(res.report);
  REQUIRE(res.ok);
  Layout partial = tgt::layout_where(1, 2, 2, 4, [](auto, auto r, auto c) { return r == 0 && c == 0; });
  tgt::require_throws<LayoutError>(
      [&] {
        (void)rms_norm(to_sparse(tgt::rand64({1, 8, 8}, 1), partial), Tensor());
      },
      {"rms_norm", "x", "row-striped"});
}

TEST_CASE("rms_norm rejects bad inputs", "[ops][rms_norm]") {
  Tensor x = zeros({2, 3});
  tgt::require_throws<ValueError>([&] { (void)rms_norm(Tensor(), Tensor()); }, {"rms_norm", "x", "undefined"});
  tgt::require_throws<ShapeError>([&] { (void)rms_norm(zeros({}), Tensor()); }, {"rms_norm", "x", "0-d"});
  tgt::require_throws<ShapeError>(
      [&] {
        (void)rms_norm(zeros({2, 0}), Tensor());
      },
      {"rms_norm", "last extent", "[2, 0]"});
  tgt::require_throws<ShapeError>([&] { (void)rms_norm(x, zeros({4})); }, {"rms_norm", "gamma", "[3]", "[4]"});
  tgt::require_throws<ShapeError>([&] { (void)rms_norm(x, zeros({1, 3})); }, {"rms_norm", "gamma", "[3]", "[1, 3]"});
  tgt::require_throws<DTypeError>([&] { (void)rms_norm(x, zeros({3}, {.dtype = DType::f64})); },
                                  {"rms_norm", "gamma", "f32", "f64"});
  tgt::require_throws<DTypeError>(
      [&] {
        (void)rms_norm(zeros({2, 3}, {.dtype = DType::i32}), Tensor());
      },
      {"rms_norm", "x", "floating", "i32"});
  tgt::require_throws<ValueError>([&] { (void)rms_norm(x, Tensor(), -1.0); }, {"rms_norm", "eps", "> 0", "-1"});
  tgt::require_throws<ValueError>([&] { (void)rms_norm(x, Tensor(), 0.0); }, {"rms_norm", "eps", "> 0", "0"});
  tgt::require_throws<ValueError>([&] { (void)rms_norm(x, Tensor(), NAN); }, {"rms_norm", "eps", "finite"});
  tgt::require_throws<ValueError>([&] { (void)rms_norm(x, Tensor(), INFINITY); }, {"rms_norm", "eps", "inf"});
}

TEST_CASE("rms_norm on CUDA matches the CPU, forward and backward", "[ops][rms_norm][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  std::uint64_t seed = 1300;
  struct Case {
    Shape s;
    const char* what;
  };
  // The layer_norm kernels in RMS mode, through every path: the warp-per-row forward with
  // each register-chunk count NV (D <= 1024, scalar and 16-byte vector loads), the
  // block-per-row forward and backward (D > 1024), each backward plan (1, 2, 4 warps per
  // row, NV up to 8), partial row batches, and many rows (grid-stride loops, many partial
  // column sums).
  const std::vector<Case> cases = {
      {{5, 1}, "D=1"},
      {{33, 7}, "D=7"},
      {{64, 32}, "D=32"},
      {{40, 64}, "D=64"},
      {{50, 100}, "D=100"},
      {{40, 128}, "D=128"},
      {{11, 264}, "D=264"},
      {{30, 250}, "D=250"},
      {{9, 520}, "D=520"},
      {{20, 768}, "D=768"},
      {{17, 1000}, "D=1000"},
      {{2, 9, 1024}, "D=1024"},
      {{5, 1024}, "partial batch D=1024"},
      {{7, 63}, "D=63, scalar NV=2"},
      {{10, 256}, "D=256"},
      {{6, 301}, "D=301, scalar NV=16"},
      {{5, 999}, "D=999, scalar NV=32"},
      {{9, 1025}, "D=1025, block path"},
      {{13, 1536}, "D=1536"},
      {{5, 3000}, "D=3000"},
      {{3, 4096}, "D=4096"},
      {{6, 8192}, "D=8192"},
      {{1, 512}, "one row"},
      {{5000, 64}, "many rows"},
      {{4097, 1024}, "many rows, partial batch"},
      {{700, 2048}, "many rows, block path"},
  };
  for (DType dt : kRmsDtypes) {
    const double t = rms_tol(dt);
    for (const Case& c : cases) {
      for (int mode = 0; mode < 4; ++mode) {
        // mode 0: gamma, all grads; 1: no gamma; 2: only gamma needs a grad; 3: gamma,
        // only x needs a grad.
        INFO(dt << " " << c.s << " (" << c.what << ") mode " << mode);
        const std::int64_t D = c.s[-1];
        const bool has_g = mode != 1, want_x = mode != 2, want_g = mode == 0 || mode == 2;
        Tensor xc = rnd(c.s, ++seed, dt, -2.0, 3.0);
        Tensor gc = has_g ? rnd({D}, ++seed, dt, 0.5, 1.5) : Tensor();
        Tensor dyc = rnd(c.s, ++seed, dt);
        Tensor xh = leaf(xc, Device::cpu(), want_x), gh = leaf(gc, Device::cpu(), want_g);
        Tensor xd = leaf(xc, gpu, want_x), gd = leaf(gc, gpu, want_g);
        Tensor yh = rms_norm(xh, gh), yd = rms_norm(xd, gd);
        REQUIRE(yd.device() == gpu);
        tgt::require_close(yd.to(Device::cpu()), yh, t, t);
        yh.backward(dyc);
        yd.backward(dyc.to(gpu));
        if (want_x) tgt::require_close(xd.grad().to(Device::cpu()), xh.grad(), 4 * t, 4 * t);
        if (want_g) {
          // Column sums over many rows in different orders: allow for f32 rounding.
          const double n = static_cast<double>(xc.numel() / D);
          const double at = 4 * t + (dt == DType::f64 ? 0.0 : 1e-6 * n);
          tgt::require_close(gd.grad().to(Device::cpu()), gh.grad(), 4 * t, at);
        }
      }
    }
    // Data pointers that are not 16-byte aligned force the scalar path.
    {
      INFO("misaligned " << dt);
      Tensor xd = tgt::misaligned_view(rnd({37 * 256 + 3}, ++seed, dt, -1, 1, gpu), 3, {37, 256});
      Tensor gd = tgt::misaligned_view(rnd({257}, ++seed, dt, 0.5, 1.5, gpu), 1, {256});
      Tensor xh = xd.to(Device::cpu()), gh = gd.to(Device::cpu());
      tgt::require_close(rms_norm(xd, gd).to(Device::cpu()), rms_norm(xh, gh), t, t);
    }
  }
  // The gradient of gamma is deterministic: two backward passes agree bit for bit.
  for (std::int64_t D : {1024, 4096}) {
    INFO("deterministic D=" << D);
    Tensor x = rnd({4099, D}, ++seed, DType::f32, -1, 1, gpu);
    Tensor g = rnd({D}, ++seed, DType::f32, 0.5, 1.5, gpu).requires_grad_();
    Tensor dy = rnd({4099, D}, ++seed, DType::f32, -1, 1, gpu);
    rms_norm(x, g).backward(dy);
    Tensor g1 = g.grad().to(Device::cpu());
    g.zero_grad();
    rms_norm(x, g).backward(dy);
    tgt::require_close(g.grad().to(Device::cpu()), g1, 0, 0);
  }
  // Empty batch on the GPU.
  {
    Tensor x = zeros({0, 64}, {.device = gpu}).requires_grad_();
    Tensor g = ones({64}, {.device = gpu}).requires_grad_();
    Tensor y = rms_norm(x, g);
    REQUIRE(y.shape() == Shape{0, 64});
    sum(y).backward();
    tgt::require_close(g.grad().to(Device::cpu()), zeros({64}), 0, 0);
  }
  tgt::require_throws<DeviceError>(
      [&] {
        (void)rms_norm(zeros({2, 3}, {.device = gpu}), zeros({3}));
      },
      {"rms_norm", "gamma", "same device", "cuda:0", "cpu"});
}

}  // namespace test_rms_norm
