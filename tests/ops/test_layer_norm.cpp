// layer_norm: an f64 plain-loop reference (forward and backward), gradchecks, edge cases,
// bad inputs, and [cuda] parity with the CPU backend.
#include <cmath>
#include <memory>
#include <vector>

#include "util.h"

namespace test_layer_norm {

using namespace tg;

namespace {

const std::vector<DType> kLnDtypes = {DType::f64, DType::f32, DType::bf16, DType::f16};

double ln_tol(DType dt) {
  switch (dt) {
    case DType::f64: return 1e-12;
    case DType::f32: return 2e-5;
    case DType::bf16: return 2e-2;
    default: return 4e-3;
  }
}

Tensor rnd(const Shape& s, std::uint64_t seed, DType dt, double lo = -1.0, double hi = 1.0,
           Device dev = Device::cpu()) {
  return rand_seeded(s, seed, {.dtype = dt, .device = dev}, lo, hi);
}

struct LnRef {
  std::vector<double> y, dx, dgamma, dbeta;
};

// Plain f64 loops over rows of length D: y and, for upstream gradient dy, dx, dgamma, dbeta.
// gamma / beta may be empty (scale 1 / shift 0).
LnRef ln_reference(const std::vector<double>& x, const std::vector<double>& gamma, const std::vector<double>& beta,
                   const std::vector<double>& dy, std::int64_t D, double eps) {
  const std::size_t d = static_cast<std::size_t>(D);
  const std::size_t rows = x.size() / d;
  LnRef r;
  r.y.resize(x.size());
  r.dx.resize(x.size());
  r.dgamma.assign(d, 0.0);
  r.dbeta.assign(d, 0.0);
  for (std::size_t i = 0; i < rows; ++i) {
    const double* xr = &x[i * d];
    double mu = 0;
    for (std::size_t c = 0; c < d; ++c) mu += xr[c];
    mu /= static_cast<double>(D);
    double var = 0;
    for (std::size_t c = 0; c < d; ++c) var += (xr[c] - mu) * (xr[c] - mu);
    var /= static_cast<double>(D);
    const double rs = 1.0 / std::sqrt(var + eps);
    std::vector<double> xhat(d), g(d);
    for (std::size_t c = 0; c < d; ++c) {
      xhat[c] = (xr[c] - mu) * rs;
      const double gm = gamma.empty() ? 1.0 : gamma[c];
      r.y[i * d + c] = xhat[c] * gm + (beta.empty() ? 0.0 : beta[c]);
      if (!dy.empty()) {
        g[c] = dy[i * d + c] * gm;
        r.dgamma[c] += dy[i * d + c] * xhat[c];
        r.dbeta[c] += dy[i * d + c];
      }
    }
    if (dy.empty()) continue;
    double m1 = 0, m2 = 0;
    for (std::size_t c = 0; c < d; ++c) {
      m1 += g[c];
      m2 += g[c] * xhat[c];
    }
    m1 /= static_cast<double>(D);
    m2 /= static_cast<double>(D);
    for (std::size_t c = 0; c < d; ++c) r.dx[i * d + c] = rs * (g[c] - m1 - xhat[c] * m2);
  }
  return r;
}

Tensor as_tensor(const std::vector<double>& v, const Shape& s) { return from_vector(v, s); }

}  // namespace

TEST_CASE("layer_norm forward and backward match an f64 reference", "[ops][layer_norm]") {
  std::uint64_t seed = 100;
  const std::vector<Shape> shapes = {{3, 5}, {2, 3, 17}, {4, 1}, {1, 8}, {7}, {6, 1030}};
  for (DType dt : kLnDtypes) {
    for (const Shape& s : shapes) {
      for (int affine = 0; affine < 2; ++affine) {
        INFO(dt << " " << s << " affine " << affine);
        const std::int64_t D = s[-1];
        // Offset inputs: a mean far from 0 checks that the variance is not computed as
        // E[x^2] - E[x]^2 (which cancels badly).
        Tensor x = rnd(s, ++seed, dt, 9.0, 11.0).requires_grad_();
        Tensor g = affine ? rnd({D}, ++seed, dt, 0.5, 1.5).requires_grad_() : Tensor();
        Tensor b = affine ? rnd({D}, ++seed, dt).requires_grad_() : Tensor();
        Tensor y = layer_norm(x, g, b, 1e-5);
        REQUIRE(y.shape() == s);
        REQUIRE(y.dtype() == dt);
        Tensor dy = rnd(s, ++seed, dt);
        y.backward(dy);
        const LnRef ref = ln_reference(tgt::values(x), affine ? tgt::values(g) : std::vector<double>{},
                                       affine ? tgt::values(b) : std::vector<double>{}, tgt::values(dy), D, 1e-5);
        const double t = ln_tol(dt);
        tgt::require_close(y, as_tensor(ref.y, s), t, t);
        REQUIRE(x.grad().dtype() == dt);
        // dx is a difference of O(1) terms scaled by rstd (~1.7 here); low-precision
        // dtypes also see dy rounded before the product.
        tgt::require_close(x.grad(), as_tensor(ref.dx, s), 4 * t, 4 * t);
        if (affine) {
          const double n = static_cast<double>(x.numel() / D);
          tgt::require_close(g.grad(), as_tensor(ref.dgamma, {D}), 4 * t, 4 * t * std::sqrt(n));
          tgt::require_close(b.grad(), as_tensor(ref.dbeta, {D}), 4 * t, 4 * t * std::sqrt(n));
        }
      }
    }
  }
}

TEST_CASE("layer_norm gradcheck in x, gamma and beta", "[ops][layer_norm]") {
  std::uint64_t seed = 200;
  for (const Shape& s : std::vector<Shape>{{3, 5}, {2, 2, 7}, {4, 1}, {1, 6}}) {
    INFO("shape " << s);
    const std::int64_t D = s[-1];
    Tensor x = tgt::rand64(s, ++seed).requires_grad_();
    Tensor g = tgt::rand64({D}, ++seed, 0.5, 1.5).requires_grad_();
    Tensor b = tgt::rand64({D}, ++seed).requires_grad_();
    auto res = autograd::gradcheck(
        [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-3); }, {x, g, b});
    INFO(res.report);
    REQUIRE(res.ok);
    // Without parameters, and with only one of them.
    auto res2 = autograd::gradcheck([](const std::vector<Tensor>& in) { return layer_norm(in[0], Tensor(), Tensor()); },
                                    {x});
    INFO(res2.report);
    REQUIRE(res2.ok);
    auto res3 = autograd::gradcheck(
        [](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], Tensor(), 1e-3); }, {x, g});
    INFO(res3.report);
    REQUIRE(res3.ok);
  }
  // Only the parameters require grad (x is data): dx is not computed, dgamma/dbeta are.
  Tensor x = tgt::rand64({5, 4}, ++seed);
  Tensor g = tgt::rand64({4}, ++seed).requires_grad_();
  Tensor b = tgt::rand64({4}, ++seed).requires_grad_();
  auto res = autograd::gradcheck([&](const std::vector<Tensor>& in) { return layer_norm(x, in[0], in[1]); }, {g, b});
  INFO(res.report);
  REQUIRE(res.ok);
}

TEST_CASE("layer_norm edge cases", "[ops][layer_norm]") {
  SECTION("empty batch") {
    Tensor x = zeros({0, 4}).requires_grad_();
    Tensor g = ones({4}).requires_grad_(), b = zeros({4}).requires_grad_();
    Tensor y = layer_norm(x, g, b);
    REQUIRE(y.shape() == Shape{0, 4});
    sum(y).backward();
    REQUIRE(x.grad().shape() == Shape{0, 4});
    tgt::require_close(g.grad(), zeros({4}), 0, 0);
    tgt::require_close(b.grad(), zeros({4}), 0, 0);
    REQUIRE(layer_norm(zeros({2, 0, 3}), Tensor(), Tensor()).shape() == Shape{2, 0, 3});
  }
  SECTION("D = 1: the normalised value is 0, so y = beta and dx = 0") {
    Tensor x = from_vector<double>({3.0, -2.0, 7.5}, {3, 1}).requires_grad_();
    Tensor b = from_vector<double>({0.25}, {1});
    Tensor g = from_vector<double>({2.0}, {1}).requires_grad_();
    Tensor y = layer_norm(x, g, b);
    tgt::require_close(y, full({3, 1}, 0.25, {.dtype = DType::f64}), 0, 0);
    y.backward(from_vector<double>({1.0, 2.0, 3.0}, {3, 1}));
    tgt::require_close(x.grad(), zeros({3, 1}, {.dtype = DType::f64}), 0, 1e-12);
    tgt::require_close(g.grad(), zeros({1}, {.dtype = DType::f64}), 0, 1e-12);
  }
  SECTION("one row, a constant row, and a nan row") {
    Tensor x = from_vector<float>({1, 2, 3, 4, 5, 5, 5, 5, 1, NAN, 2, 3}, {3, 4});
    Tensor y = layer_norm(x, Tensor(), Tensor());
    auto v = tgt::values(y);
    // Row 0: mean 2.5, var 1.25.
    const double rs = 1.0 / std::sqrt(1.25 + 1e-5);
    for (int c = 0; c < 4; ++c) REQUIRE(v[static_cast<std::size_t>(c)] == Approx((c + 1 - 2.5) * rs).epsilon(1e-6));
    // Constant row: var 0, y = 0 (finite: eps keeps rstd finite).
    for (int c = 4; c < 8; ++c) REQUIRE(v[static_cast<std::size_t>(c)] == 0.0);
    // A nan poisons its own row only.
    for (int c = 8; c < 12; ++c) REQUIRE(std::isnan(v[static_cast<std::size_t>(c)]));
    // A single 1-d row gives the same as row 0.
    auto one = tgt::values(layer_norm(from_vector<float>({1, 2, 3, 4}, {4}), Tensor(), Tensor()));
    REQUIRE(one.size() == 4);
    for (std::size_t c = 0; c < 4; ++c) REQUIRE(one[c] == v[c]);
  }
}

TEST_CASE("layer_norm rejects bad inputs", "[ops][layer_norm]") {
  Tensor x = zeros({2, 3});
  tgt::require_throws<ValueError>([&] { (void)layer_norm(Tensor(), Tensor(), Tensor()); }, {"layer_norm", "x", "undefined"});
  tgt::require_throws<ShapeError>([&] { (void)layer_norm(zeros({}), Tensor(), Tensor()); }, {"layer_norm", "x", "0-d"});
  tgt::require_throws<ShapeError>([&] { (void)layer_norm(zeros({2, 0}), Tensor(), Tensor()); },
                                  {"layer_norm", "last extent", "[2, 0]"});
  tgt::require_throws<ShapeError>([&] { (void)layer_norm(x, zeros({4}), Tensor()); },
                                  {"layer_norm", "gamma", "[3]", "[4]"});
  tgt::require_throws<ShapeError>([&] { (void)layer_norm(x, Tensor(), zeros({1, 3})); },
                                  {"layer_norm", "beta", "[3]", "[1, 3]"});
  tgt::require_throws<DTypeError>([&] { (void)layer_norm(x, zeros({3}, {.dtype = DType::f64}), Tensor()); },
                                  {"layer_norm", "gamma", "f32", "f64"});
  tgt::require_throws<DTypeError>([&] { (void)layer_norm(zeros({2, 3}, {.dtype = DType::i32}), Tensor(), Tensor()); },
                                  {"layer_norm", "x", "floating", "i32"});
  tgt::require_throws<ValueError>([&] { (void)layer_norm(x, Tensor(), Tensor(), -1.0); }, {"layer_norm", "eps", "-1"});
  tgt::require_throws<ValueError>([&] { (void)layer_norm(x, Tensor(), Tensor(), NAN); }, {"layer_norm", "eps"});
}

TEST_CASE("layer_norm on CUDA matches the CPU, forward and backward", "[ops][layer_norm][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  std::uint64_t seed = 300;
  struct Case {
    Shape s;
    const char* what;
  };
  // Warp path with every register-chunk count (D up to 1024, with and without the
  // 16-byte vector path), the block path (D > 1024), many rows (grid-stride loops and
  // many partial column sums), and a single row.
  const std::vector<Case> cases = {
      {{5, 1}, "D=1"},          {{33, 7}, "D=7"},           {{64, 32}, "D=32"},       {{50, 100}, "D=100"},
      {{40, 128}, "D=128"},     {{30, 250}, "D=250"},       {{20, 768}, "D=768"},     {{17, 1000}, "D=1000"},
      {{2, 9, 1024}, "D=1024"}, {{9, 1025}, "D=1025"},      {{5, 3000}, "D=3000"},    {{3, 4096}, "D=4096"},
      {{1, 512}, "one row"},    {{5000, 64}, "many rows"},  {{3001, 1024}, "many rows D=1024"},
      {{700, 2048}, "many rows, block path"},
      // Row batches (several rows per warp / block) with a partial last batch, every
      // backward plan (1, 2, 4 warps per row), and rows longer than the register plans.
      {{5, 1024}, "partial batch D=1024"},  {{4097, 1024}, "many rows, partial batch"},
      {{13, 1536}, "D=1536"},               {{6, 8192}, "D=8192"},
      {{9, 520}, "D=520"},                  {{11, 264}, "D=264"},
  };
  for (DType dt : kLnDtypes) {
    for (const Case& c : cases) {
      for (int mode = 0; mode < 4; ++mode) {
        // mode 0: affine, all grads; 1: no gamma/beta; 2: only gamma/beta need grads;
        // 3: gamma without beta, only x needs a grad.
        INFO(dt << " " << c.s << " (" << c.what << ") mode " << mode);
        const std::int64_t D = c.s[-1];
        const bool has_g = mode != 1, has_b = mode == 0 || mode == 2;
        Tensor xc = rnd(c.s, ++seed, dt, -2.0, 3.0);
        Tensor gc = has_g ? rnd({D}, ++seed, dt, 0.5, 1.5) : Tensor();
        Tensor bc = has_b ? rnd({D}, ++seed, dt) : Tensor();
        Tensor dyc = rnd(c.s, ++seed, dt);
        const bool want_x = mode != 2, want_p = mode == 0 || mode == 2;
        auto prep = [&](const Tensor& t, Device d, bool grad) {
          if (!t.defined()) return Tensor();
          Tensor r = t.to(d).detach();
          if (grad) r.requires_grad_();
          return r;
        };
        Tensor xh = prep(xc, Device::cpu(), want_x), gh = prep(gc, Device::cpu(), want_p),
               bh = prep(bc, Device::cpu(), want_p);
        Tensor xd = prep(xc, gpu, want_x), gd = prep(gc, gpu, want_p), bd = prep(bc, gpu, want_p);
        Tensor yh = layer_norm(xh, gh, bh), yd = layer_norm(xd, gd, bd);
        REQUIRE(yd.device() == gpu);
        const double t = ln_tol(dt);
        tgt::require_close(yd.to(Device::cpu()), yh, t, t);
        if (!want_x && !want_p) continue;
        yh.backward(dyc);
        yd.backward(dyc.to(gpu));
        if (want_x) tgt::require_close(xd.grad().to(Device::cpu()), xh.grad(), 4 * t, 4 * t);
        if (want_p) {
          // Column sums over many rows in different orders: allow for f32 rounding.
          const double n = static_cast<double>(xc.numel() / D);
          const double at = 4 * t + (dt == DType::f64 ? 0.0 : 1e-6 * n);
          if (gd.defined()) tgt::require_close(gd.grad().to(Device::cpu()), gh.grad(), 4 * t, at);
          if (bd.defined()) tgt::require_close(bd.grad().to(Device::cpu()), bh.grad(), 4 * t, at);
        }
      }
    }
    // Data pointers that are not 16-byte aligned force the scalar path.
    {
      INFO("misaligned " << dt);
      Tensor base = rnd({37 * 256 + 3}, ++seed, dt, -1, 1, gpu);
      Tensor xd = tgt::misaligned_view(base, 3, {37, 256});
      Tensor gbase = rnd({257}, ++seed, dt, 0.5, 1.5, gpu);
      Tensor gd = tgt::misaligned_view(gbase, 1, {256});
      Tensor xh = xd.to(Device::cpu()), gh = gd.to(Device::cpu());
      tgt::require_close(layer_norm(xd, gd, Tensor()).to(Device::cpu()), layer_norm(xh, gh, Tensor()), ln_tol(dt),
                         ln_tol(dt));
    }
  }
  // The parameter gradients are deterministic: two backward passes agree bit for bit.
  {
    Tensor x = rnd({4099, 1024}, ++seed, DType::f32, -1, 1, gpu);
    Tensor g = rnd({1024}, ++seed, DType::f32, 0.5, 1.5, gpu).requires_grad_();
    Tensor b = rnd({1024}, ++seed, DType::f32, -1, 1, gpu).requires_grad_();
    Tensor dy = rnd({4099, 1024}, ++seed, DType::f32, -1, 1, gpu);
    layer_norm(x, g, b).backward(dy);
    Tensor g1 = g.grad().to(Device::cpu()), b1 = b.grad().to(Device::cpu());
    g.zero_grad();
    b.zero_grad();
    layer_norm(x, g, b).backward(dy);
    tgt::require_close(g.grad().to(Device::cpu()), g1, 0, 0);
    tgt::require_close(b.grad().to(Device::cpu()), b1, 0, 0);
  }
  // Empty batch on the GPU.
  {
    Tensor x = zeros({0, 64}, {.device = gpu}).requires_grad_();
    Tensor g = ones({64}, {.device = gpu}).requires_grad_();
    Tensor y = layer_norm(x, g, Tensor());
    REQUIRE(y.shape() == Shape{0, 64});
    sum(y).backward();
    tgt::require_close(g.grad().to(Device::cpu()), zeros({64}), 0, 0);
  }
  tgt::require_throws<DeviceError>([&] { (void)layer_norm(zeros({2, 3}, {.device = gpu}), zeros({3}), Tensor()); },
                                   {"layer_norm", "gamma", "same device", "cuda:0", "cpu"});
}

}  // namespace test_layer_norm
