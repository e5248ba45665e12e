// nn::RMSNorm: its parameter and initial value, forward = the op, gradients, no-affine
// variant, checkpoint round trip, bad arguments, block-sparse input, and [cuda] on the GPU.
#include <cmath>
#include <filesystem>
#include <string>

#include "util.h"

namespace test_rms_norm_module {

using namespace tg;

TEST_CASE("RMSNorm module: ones weight, forward = rms_norm", "[nn][layers][rms_norm]") {
  nn::RMSNorm rn(6, 1e-3, true, {.dtype = DType::f64});
  auto named = rn.named_parameters();
  REQUIRE(named.size() == 1);
  REQUIRE(named[0].first == "weight");
  REQUIRE(rn.weight.shape() == Shape{6});
  REQUIRE(rn.weight.dtype() == DType::f64);
  REQUIRE(rn.weight.requires_grad());
  tgt::require_close(rn.weight, ones({6}, {.dtype = DType::f64}), 0, 0);
  REQUIRE(rn.eps == 1e-3);
  REQUIRE(rn.num_parameters() == 6);
  REQUIRE(nn::RMSNorm(4).eps == 1e-6);

  Tensor x = tgt::rand64({2, 3, 6}, 1);
  Tensor y = rn(x);
  REQUIRE(y.shape() == Shape{2, 3, 6});
  // Plain reference with weight = 1.
  auto xv = tgt::values(x), yv = tgt::values(y);
  for (std::size_t r = 0; r < 6; ++r) {
    double ms = 0;
    for (std::size_t c = 0; c < 6; ++c) ms += xv[r * 6 + c] * xv[r * 6 + c] / 6.0;
    for (std::size_t c = 0; c < 6; ++c)
      REQUIRE(yv[r * 6 + c] == Approx(xv[r * 6 + c] / std::sqrt(ms + 1e-3)).epsilon(1e-12));
  }
  // A trained weight is used as gamma, and gradients reach it.
  nn::init::uniform_(rn.weight, 0.5, 1.5, 4);
  tgt::require_close(rn(x), rms_norm(x, rn.weight, 1e-3), 0, 0);
  sum(mul(rn(x), tgt::rand64({2, 3, 6}, 2))).backward();
  REQUIRE(rn.weight.grad().shape() == Shape{6});
  REQUIRE(rn.summary().find("RMSNorm") != std::string::npos);

  // Without the affine weight: no parameters, the op with no gamma.
  nn::RMSNorm plain(6, 1e-3, false, {.dtype = DType::f64});
  REQUIRE(plain.parameters().empty());
  REQUIRE_FALSE(plain.weight.defined());
  tgt::require_close(plain(x), rms_norm(x, Tensor(), 1e-3), 0, 0);

  tgt::require_throws<ShapeError>([] { nn::RMSNorm(0); }, {"RMSNorm", "dim", "0"});
  tgt::require_throws<ValueError>([] { nn::RMSNorm(4, 0.0); }, {"RMSNorm", "eps", "> 0"});
  tgt::require_throws<ValueError>([] { nn::RMSNorm(4, NAN); }, {"RMSNorm", "eps"});
  tgt::require_throws<ShapeError>([&] { (void)rn(tgt::rand64({2, 5}, 3)); }, {"rms_norm", "gamma", "[6]", "[2, 5]"});
}

TEST_CASE("RMSNorm module: checkpoint round trip and block-sparse input", "[nn][layers][rms_norm]") {
  const std::string path = (std::filesystem::temp_directory_path() / "tilegrad_test_rms_norm.safetensors").string();
  nn::RMSNorm a(8, 1e-6, true, {.dtype = DType::f64});
  nn::init::uniform_(a.weight, 0.5, 1.5, 7);
  nn::save(a, path);
  nn::RMSNorm b(8, 1e-6, true, {.dtype = DType::f64});
  nn::load(b, path);
  std::filesystem::remove(path);
  tgt::require_close(b.weight, a.weight, 0, 0);
  Tensor x = tgt::rand64({3, 8}, 8);
  tgt::require_close(b(x), a(x), 0, 0);

  Layout l = tgt::layout_where(1, 2, 2, 4, [](auto, auto r, auto) { return r == 1; });
  BlockSparseTensor xs = to_sparse(tgt::rand64({1, 8, 8}, 9), l);
  BlockSparseTensor ys = a(xs);
  REQUIRE(ys.layout() == l);
  tgt::require_close(ys.data(), rms_norm(xs, a.weight, 1e-6).data(), 0, 0);
}

TEST_CASE("RMSNorm module on CUDA matches the CPU", "[nn][layers][rms_norm][cuda]") {
  TG_REQUIRE_CUDA();
  const Device gpu = Device::cuda();
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dt);
    const double t = dt == DType::f32 ? 2e-5 : 2e-2;
    nn::RMSNorm rg(256, 1e-6, true, {.dtype = dt, .device = gpu});
    nn::RMSNorm rc(256, 1e-6, true, {.dtype = dt});
    REQUIRE(rg.weight.device() == gpu);
    Tensor x = rand_seeded({33, 256}, 1, {.dtype = dt}, -2, 2);
    Tensor yg = rg(x.to(gpu)), yc = rc(x);
    tgt::require_close(yg.to(Device::cpu()), yc, t, t);
    Tensor g = rand_seeded({33, 256}, 2, {.dtype = dt}, -1, 1);
    yg.backward(g.to(gpu));
    yc.backward(g);
    tgt::require_close(rg.weight.grad().to(Device::cpu()), rc.weight.grad(), 4 * t, 4 * t);
    rc.to(gpu);
    REQUIRE(rc.weight.device() == gpu);
    // Same parameters, same kernel: bit-identical to the module built on the GPU.
    tgt::require_close(rc(x.to(gpu)).to(Device::cpu()), yg.to(Device::cpu()), 0, 0);
  }
}

}  // namespace test_rms_norm_module
