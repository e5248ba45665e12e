// nn::SwiGLU: against the definition computed here in f64 from the module's weights, a
// gradcheck through every weight, the parameters and their names, bad arguments, and CUDA.
#include <cmath>
#include <vector>

#include "util.h"

namespace test_swiglu {

using namespace tg;

namespace {

using tgt::kF64;

// down(silu(gate·x) ⊙ (up·x)) for rows of x [n, d], gate/up the halves of W1 [2h, d].
std::vector<double> reference(const std::vector<double>& x, std::int64_t n, std::int64_t d, std::int64_t h,
                              const std::vector<double>& w1, const std::vector<double>& w2) {
  std::vector<double> y(static_cast<std::size_t>(n * d), 0.0);
  for (std::int64_t r = 0; r < n; ++r) {
    std::vector<double> z(static_cast<std::size_t>(h));
    for (std::int64_t j = 0; j < h; ++j) {
      double g = 0, u = 0;
      for (std::int64_t c = 0; c < d; ++c) {
        g += w1[static_cast<std::size_t>(j * d + c)] * x[static_cast<std::size_t>(r * d + c)];
        u += w1[static_cast<std::size_t>((h + j) * d + c)] * x[static_cast<std::size_t>(r * d + c)];
      }
      z[static_cast<std::size_t>(j)] = g / (1 + std::exp(-g)) * u;
    }
    for (std::int64_t o = 0; o < d; ++o) {
      double s = 0;
      for (std::int64_t j = 0; j < h; ++j)
        s += w2[static_cast<std::size_t>(o * h + j)] * z[static_cast<std::size_t>(j)];
      y[static_cast<std::size_t>(r * d + o)] = s;
    }
  }
  return y;
}

}  // namespace

TEST_CASE("SwiGLU is down(silu(gate x) * up x)", "[nn][swiglu]") {
  nn::SwiGLU m(12, 20, false, kF64, 3);
  REQUIRE(m.parameters().size() == 2);
  REQUIRE(m.gate_up->weight.shape() == Shape{40, 12});
  REQUIRE(m.down->weight.shape() == Shape{12, 20});
  REQUIRE(m.extra_info() == "d_model=12, hidden=20, bias=false");
  const Tensor x = tgt::rand64({2, 5, 12}, 4);
  const auto want = reference(tgt::values(x), 10, 12, 20, tgt::values(m.gate_up->weight), tgt::values(m.down->weight));
  tgt::require_close(m(x), from_vector(want, Shape{2, 5, 12}), 1e-12, 1e-12);
  nn::SwiGLU b(12, 20, true, kF64, 3);
  REQUIRE(b.parameters().size() == 4);
}

TEST_CASE("SwiGLU gradients: gradcheck through x, finite differences through every weight", "[nn][swiglu]") {
  nn::SwiGLU m(6, 8, true, kF64, 5);
  const auto fx = autograd::gradcheck([&](const std::vector<Tensor>& in) { return m(in[0]); },
                                      {tgt::rand64({3, 6}, 6).requires_grad_()});
  INFO(fx.report);
  REQUIRE(fx.ok);
  m.zero_grad();  // gradcheck's passes reached the weights too
  const Tensor x = tgt::rand64({3, 6}, 7);
  auto loss = [&] { return sum(mul(m(x), m(x))); };
  loss().backward();
  for (const auto& [name, p] : m.named_parameters()) {
    INFO("parameter " << name);
    REQUIRE(p.grad().defined());
    const auto analytic = tgt::values(p.grad());
    std::vector<double> v = tgt::values(p);
    for (std::size_t k = 0; k < v.size(); k += 3) {
      NoGradGuard ng;
      const double h = 1e-6, keep = v[k];
      v[k] = keep + h;
      copy_bytes(p, from_vector(v, p.shape(), kF64));
      const double up = loss().item<double>();
      v[k] = keep - h;
      copy_bytes(p, from_vector(v, p.shape(), kF64));
      const double dn = loss().item<double>();
      v[k] = keep;
      copy_bytes(p, from_vector(v, p.shape(), kF64));
      REQUIRE(std::abs((up - dn) / (2 * h) - analytic[k]) < 1e-6 * (1 + std::abs(analytic[k])));
    }
  }
}

TEST_CASE("SwiGLU refuses bad sizes and inputs", "[nn][swiglu]") {
  tgt::require_throws<ShapeError>([] { nn::SwiGLU(0, 4); }, {"SwiGLU", "d_model = 0"});
  tgt::require_throws<ShapeError>([] { nn::SwiGLU(4, -1); }, {"SwiGLU", "hidden = -1"});
  nn::SwiGLU m(4, 6);
  tgt::require_throws<ShapeError>([&] { (void)m(zeros({2, 5})); }, {"Linear", "in_features = 4"});
}

TEST_CASE("SwiGLU on CUDA matches the CPU", "[nn][swiglu][cuda]") {
  TG_REQUIRE_CUDA();
  nn::SwiGLU c(64, 96, false, {}, 7), g(64, 96, false, {.device = Device::cuda()}, 8);
  {
    NoGradGuard ng;
    const auto pc = c.parameters(), pg = g.parameters();
    for (std::size_t i = 0; i < pc.size(); ++i) copy_bytes(pg[i], pc[i].to(Device::cuda()));
  }
  const Tensor x = tgt::rand64({16, 64}, 9).to(DType::f32);
  tgt::require_close(g(x.to(Device::cuda())).to(Device::cpu()), c(x), 1e-3, 1e-3);
}

}  // namespace test_swiglu
