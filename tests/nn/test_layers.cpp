// nn::LayerNorm, nn::Dropout and nn::Embedding: parameters and their initial values,
// forward against the ops, training/eval behaviour, gradients to the parameters, bad
// arguments, and [cuda] modules on the GPU.
#include <cmath>
#include <vector>

#include "util.h"

namespace test_layers {

using namespace tg;

TEST_CASE("LayerNorm module: ones / zeros parameters, forward = layer_norm", "[nn][layers]") {
  nn::LayerNorm ln(6, 1e-3, {.dtype = DType::f64});
  auto named = ln.named_parameters();
  REQUIRE(named.size() == 2);
  REQUIRE(named[0].first == "weight");
  REQUIRE(named[1].first == "bias");
  REQUIRE(ln.weight.shape() == Shape{6});
  REQUIRE(ln.weight.dtype() == DType::f64);
  REQUIRE(ln.weight.requires_grad());
  REQUIRE(ln.bias.requires_grad());
  tgt::require_close(ln.weight, ones({6}, {.dtype = DType::f64}), 0, 0);
  tgt::require_close(ln.bias, zeros({6}, {.dtype = DType::f64}), 0, 0);
  REQUIRE(ln.eps == 1e-3);
  REQUIRE(ln.num_parameters() == 12);

  Tensor x = tgt::rand64({2, 3, 6}, 1);
  Tensor y = ln(x);
  REQUIRE(y.shape() == Shape{2, 3, 6});
  // Plain reference with gamma = 1, beta = 0.
  auto xv = tgt::values(x), yv = tgt::values(y);
  for (std::size_t r = 0; r < 6; ++r) {
    double mu = 0, var = 0;
    for (std::size_t c = 0; c < 6; ++c) mu += xv[r * 6 + c] / 6.0;
    for (std::size_t c = 0; c < 6; ++c) var += (xv[r * 6 + c] - mu) * (xv[r * 6 + c] - mu) / 6.0;
    for (std::size_t c = 0; c < 6; ++c)
      REQUIRE(yv[r * 6 + c] == Approx((xv[r * 6 + c] - mu) / std::sqrt(var + 1e-3)).epsilon(1e-12));
  }
  // Gradients reach the parameters.
  sum(mul(ln(x), tgt::rand64({2, 3, 6}, 2))).backward();
  REQUIRE(ln.weight.grad().shape() == Shape{6});
  REQUIRE(ln.bias.grad().shape() == Shape{6});
  tgt::require_throws<ShapeError>([] { nn::LayerNorm(0); }, {"LayerNorm", "dim", "0"});
  tgt::require_throws<ValueError>([] { nn::LayerNorm(4, -1.0); }, {"LayerNorm", "eps"});
  tgt::require_throws<ShapeError>([&] { (void)ln(tgt::rand64({2, 5}, 3)); }, {"layer_norm", "gamma", "[6]", "[2, 5]"});
}

TEST_CASE("Dropout module: identity in eval mode and for p = 0, fresh masks per call", "[nn][layers]") {
  Tensor x = ones({4096});
  nn::Dropout d(0.5, 17);
  REQUIRE(d.p == 0.5);
  REQUIRE(d.parameters().empty());
  Tensor a = d(x), b = d(x);
  // Each call uses the next Philox offset of the module's seed.
  tgt::require_close(a, dropout(x, 0.5, 17, 0), 0, 0);
  tgt::require_close(b, dropout(x, 0.5, 17, 1), 0, 0);
  REQUIRE(tgt::values(a) != tgt::values(b));
  // A second module with the same seed reproduces the sequence.
  nn::Dropout d2(0.5, 17);
  tgt::require_close(d2(x), a, 0, 0);
  // About half of the elements are kept, scaled by 2.
  std::int64_t kept = 0;
  for (double v : tgt::values(a)) {
    REQUIRE((v == 0.0 || v == 2.0));
    kept += v != 0.0;
  }
  REQUIRE(std::abs(kept - 2048) < 5 * 32);  // 5 sigma
  d.eval();
  REQUIRE(d(x).is_same(x));
  d.train();
  REQUIRE_FALSE(d(x).is_same(x));
  nn::Dropout d0(0.0);
  REQUIRE(d0(x).is_same(x));
  // Gradient flows through the same mask.
  Tensor xg = tgt::rand64({100}, 4).requires_grad_();
  nn::Dropout d3(0.25, 5);
  Tensor y = d3(xg);
  sum(y).backward();
  auto yv = tgt::values(y), xv = tgt::values(xg), gv = tgt::values(xg.grad());
  for (std::size_t i = 0; i < 100; ++i) {
    if (yv[i] == 0.0) REQUIRE(gv[i] == 0.0);
    else REQUIRE(gv[i] == Approx(1.0 / 0.75).epsilon(1e-14));
  }
  tgt::require_throws<ValueError>([] { nn::Dropout(1.0); }, {"Dropout", "p", "[0, 1)", "1"});
  tgt::require_throws<ValueError>([] { nn::Dropout(-0.5); }, {"Dropout", "p", "-0.5"});
  tgt::require_throws<ValueError>([] { nn::Dropout(NAN); }, {"Dropout", "p"});
}

TEST_CASE("Embedding module: N(0, 1) table from its seed, forward = embedding", "[nn][layers]") {
  nn::Embedding e(1000, 64, {.dtype = DType::f32}, 9);
  REQUIRE(e.weight.shape() == Shape{1000, 64});
  REQUIRE(e.weight.requires_grad());
  REQUIRE(e.named_parameters()[0].first == "weight");
  tgt::require_close(e.weight, randn_seeded({1000, 64}, 9), 0, 0);
  // Sample mean and variance of 64000 standard normals.
  const auto wv = tgt::values(e.weight);
  double m = 0, v = 0;
  for (double w : wv) m += w;
  m /= static_cast<double>(wv.size());
  for (double w : wv) v += (w - m) * (w - m);
  v /= static_cast<double>(wv.size());
  REQUIRE(std::fabs(m) < 0.02);
  REQUIRE(std::fabs(v - 1.0) < 0.03);
  // Another seed gives another table.
  nn::Embedding e2(1000, 64, {}, 10);
  REQUIRE(tgt::max_abs_diff(e.weight, e2.weight) > 0.1);

  Tensor idx = from_vector<std::int64_t>({5, 999, 5}, {3});
  Tensor y = e(idx);
  REQUIRE(y.shape() == Shape{3, 64});
  for (std::size_t c = 0; c < 64; ++c) {
    REQUIRE(tgt::values(y)[c] == wv[5 * 64 + c]);
    REQUIRE(tgt::values(y)[64 + c] == wv[999 * 64 + c]);
  }
  sum(y).backward();
  auto gv = tgt::values(e.weight.grad());
  REQUIRE(gv[5 * 64] == 2.0);
  REQUIRE(gv[999 * 64 + 3] == 1.0);
  REQUIRE(gv[0] == 0.0);
  tgt::require_throws<ShapeError>([] { nn::Embedding(0, 4); }, {"Embedding", "num=0"});
  tgt::require_throws<ShapeError>([] { nn::Embedding(4, -1); }, {"Embedding", "dim=-1"});
  tgt::require_throws<ValueError>([&] { (void)e(from_vector<std::int64_t>({1000}, {1})); },
                                  {"embedding", "indices[0]", "1000", "V = 1000"});
}

TEST_CASE("nn layers on CUDA match the CPU", "[nn][layers][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dt);
    const double t = dt == DType::f32 ? 2e-5 : 2e-2;
    // LayerNorm built on the GPU, and one moved there with to().
    nn::LayerNorm lg(256, 1e-5, {.dtype = dt, .device = gpu});
    nn::LayerNorm lc(256, 1e-5, {.dtype = dt});
    REQUIRE(lg.weight.device() == gpu);
    Tensor x = rand_seeded({33, 256}, 1, {.dtype = dt}, -2, 2);
    Tensor yg = lg(x.to(gpu)), yc = lc(x);
    tgt::require_close(yg.to(Device::cpu()), yc, t, t);
    Tensor g = rand_seeded({33, 256}, 2, {.dtype = dt}, -1, 1);
    yg.backward(g.to(gpu));
    yc.backward(g);
    tgt::require_close(lg.weight.grad().to(Device::cpu()), lc.weight.grad(), 4 * t, 4 * t);
    tgt::require_close(lg.bias.grad().to(Device::cpu()), lc.bias.grad(), 4 * t, 4 * t);
    lc.to(gpu);
    REQUIRE(lc.weight.device() == gpu);
    // Same parameters, same kernel: bit-identical to the module built on the GPU.
    tgt::require_close(lc(x.to(gpu)).to(Device::cpu()), yg.to(Device::cpu()), 0, 0);

    // Dropout: the same module seed gives the same masks on both devices.
    nn::Dropout dg(0.3, 99), dc(0.3, 99);
    for (int call = 0; call < 3; ++call) {
      Tensor a = dg(x.to(gpu)), b = dc(x);
      tgt::require_close(a.to(Device::cpu()), b, 0, 0);
    }

    // Embedding: the same table on both devices (Philox init), same rows out.
    nn::Embedding eg(500, 96, {.dtype = dt, .device = gpu}, 3), ec(500, 96, {.dtype = dt}, 3);
    tgt::require_close(eg.weight.to(Device::cpu()), ec.weight, t, t);
    Tensor idx = from_vector<std::int64_t>({0, 499, 7, 7, 250}, {5});
    tgt::require_close(eg(idx.to(gpu)).to(Device::cpu()), embedding(eg.weight.to(Device::cpu()).detach(), idx), 0, 0);
  }
}

}  // namespace test_layers
