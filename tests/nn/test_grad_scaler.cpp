// Tests of optim::GradScaler (dynamic loss scaling for f16): gradients that underflow
// without it drive the update with it (the optimizer divides them by the scale in f32),
// steps with inf / NaN gradients are skipped with the scale backing off, the scale grows
// after finite steps, clipping acts on the true gradients, AdamW with the scaler equals
// AdamW without it, state round trip, misuse errors, CUDA.
#include <cmath>
#include <limits>

#include "util.h"

namespace test_grad_scaler {

using namespace tg;

namespace {

const TensorOptions kF16{.dtype = DType::f16};

// d/dw of 1e-7 · Σ (x · w): 1e-7 · x, below f16's smallest subnormal (~6e-8) for x in
// [0.01, 0.05].
Tensor tiny_loss(const Tensor& w, const Tensor& x) { return sum(w * x) * 1e-7; }

}  // namespace

TEST_CASE("GradScaler lets f16 gradients of a small loss drive the update", "[optim][grad_scaler]") {
  Tensor x = rand_seeded({64}, 1, kF16, 0.01, 0.05);
  // Without scaling every gradient rounds to zero in f16, and SGD moves nothing.
  Tensor w0 = zeros({64}, kF16).requires_grad_();
  tiny_loss(w0, x).backward();
  REQUIRE(tgt::max_abs_diff(w0.grad(), zeros({64}, kF16)) == 0.0);

  // With it the scaled gradients are representable; the step divides them back in f32:
  // w = -lr · 1e-7 · x up to f16 rounding.
  Tensor w = zeros({64}, kF16).requires_grad_();
  optim::SGD opt({w}, 1e4);
  optim::GradScaler scaler;
  scaler.scale(tiny_loss(w, x)).backward();
  REQUIRE(tgt::max_abs_diff(w.grad(), zeros({64}, kF16)) > 0.0);  // stored scaled
  REQUIRE(scaler.step(opt));
  scaler.update();
  tgt::require_close(w, x * -1e-3, 3e-3, 1.2e-7);  // f16 subnormals: steps of 6e-8
}

TEST_CASE("GradScaler skips steps with inf or NaN gradients and adapts its scale", "[optim][grad_scaler]") {
  Tensor w = ones({4}, kF16).requires_grad_();
  optim::AdamW opt({w}, {.lr = 0.1});
  optim::GradScaler scaler({.init_scale = 1024.0, .growth_factor = 2.0, .backoff_factor = 0.25, .growth_interval = 3});
  // 1000 · 1024 overflows f16 (max 65504): the step is skipped, w unchanged, scale / 4.
  scaler.scale(sum(w * 1000.0)).backward();
  REQUIRE_FALSE(scaler.step(opt));
  REQUIRE(scaler.last_step_skipped());
  scaler.update();
  REQUIRE(scaler.get_scale() == 256.0);
  REQUIRE(tgt::max_abs_diff(w, ones({4}, kF16)) == 0.0);
  REQUIRE(opt.step_count() == 0);
  // A NaN gradient is skipped too.
  opt.zero_grad();
  scaler.scale(sum(w * std::numeric_limits<double>::quiet_NaN())).backward();
  REQUIRE_FALSE(scaler.step(opt));
  scaler.update();
  REQUIRE(scaler.get_scale() == 64.0);
  // Three finite steps in a row: the scale doubles, the tracker restarts.
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    scaler.scale(sum(w * 2.0)).backward();
    REQUIRE(scaler.step(opt));
    scaler.update();
    REQUIRE(scaler.growth_tracker() == (s + 1) % 3);
  }
  REQUIRE(scaler.get_scale() == 128.0);
  REQUIRE(opt.step_count() == 3);
  REQUIRE(tgt::max_abs_diff(w, ones({4}, kF16)) > 0.1);  // AdamW moved it

  // State round trip.
  optim::GradScaler other;
  other.load_state(scaler.state());
  REQUIRE(other.get_scale() == 128.0);
  REQUIRE(other.growth_tracker() == 0);
}

TEST_CASE("GradScaler: the same AdamW steps as without it, and clipping of the true gradients",
          "[optim][grad_scaler]") {
  // f32 parameters, where no gradient underflows either way: the scaled run matches.
  Tensor a = rand_seeded({5, 3}, 2).requires_grad_(), b = a.detach().clone().requires_grad_();
  optim::AdamW plain({a}, {.lr = 0.01}), scaled({b}, {.lr = 0.01});
  optim::GradScaler scaler({.init_scale = 4096.0});
  for (int s = 0; s < 4; ++s) {
    plain.zero_grad();
    scaled.zero_grad();
    sum(a * a * a).backward();
    scaler.scale(sum(b * b * b)).backward();
    plain.step();
    REQUIRE(scaler.step(scaled));
    scaler.update();
  }
  tgt::require_close(b, a, 1e-6, 1e-7);

  // Clipping: true gradient 2w = (6, 8), norm 10, clipped to norm 5: (3, 4).
  Tensor w = from_vector<float>({3.0f, 4.0f}, {2}, kF16).requires_grad_();
  optim::SGD opt({w}, 0.1);
  optim::GradScaler s2({.init_scale = 256.0});
  s2.scale(sum(w * w)).backward();
  REQUIRE(std::abs(s2.clip_grad_norm_(opt, 5.0).item<double>() - 10.0) < 1e-2);
  REQUIRE(s2.step(opt));  // w -= 0.1 · (3, 4)
  tgt::require_close(w, from_vector<float>({2.7f, 3.6f}, {2}, kF16), 2e-3, 2e-3);

  // Misuse, each named.
  tgt::require_throws<ValueError>([&] { s2.step(opt); }, {"GradScaler::step", "update()"});
  s2.update();
  tgt::require_throws<ValueError>([&] { s2.update(); }, {"GradScaler::update", "step()"});
  tgt::require_throws<ValueError>([] { optim::GradScaler({.backoff_factor = 1.5}); },
                                  {"GradScaler", "backoff_factor", "1.5"});
  tgt::require_throws<ValueError>([] { optim::GradScaler({.init_scale = 0.0}); }, {"GradScaler", "init_scale"});
  tgt::require_throws<ValueError>([] { optim::GradScaler().load_state({}); }, {"GradScaler::load_state", "scale"});
}

TEST_CASE("GradScaler on CUDA", "[optim][grad_scaler][cuda]") {
  TG_REQUIRE_CUDA();
  const TensorOptions o{.dtype = DType::f16, .device = Device::cuda()};
  Tensor x = rand_seeded({4096}, 3, o, 0.01, 0.05);
  Tensor w = zeros({4096}, o).requires_grad_();
  optim::SGD opt({w}, 1e4);
  optim::GradScaler scaler;
  scaler.scale(tiny_loss(w, x)).backward();
  REQUIRE(scaler.step(opt));
  scaler.update();
  tgt::require_close(to_device(w, Device::cpu()), to_device(x * -1e-3, Device::cpu()), 3e-3, 1.2e-7);
  // AdamW on the GPU with the scaler equals the CPU.
  Tensor ac = rand_seeded({1000}, 4).requires_grad_(), ag = to_device(ac.detach(), Device::cuda()).requires_grad_();
  optim::AdamW oc({ac}, {.lr = 0.01}), og({ag}, {.lr = 0.01});
  optim::GradScaler sc, sg;
  for (int s = 0; s < 3; ++s) {
    oc.zero_grad();
    og.zero_grad();
    sc.scale(sum(ac * ac)).backward();
    sg.scale(sum(ag * ag)).backward();
    REQUIRE(sc.step(oc));
    REQUIRE(sg.step(og));
    sc.update();
    sg.update();
  }
  tgt::require_close(to_device(ag, Device::cpu()), ac, 1e-5, 1e-6);
  // Overflow on the GPU is found and skipped.
  opt.zero_grad();
  scaler.scale(sum(w * 1e4)).backward();
  REQUIRE_FALSE(scaler.step(opt));
  scaler.update();
  REQUIRE(scaler.get_scale() == 16384.0);
}

}  // namespace test_grad_scaler
