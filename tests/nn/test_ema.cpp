// Tests of optim::ExponentialMovingAverage: the shadows follow the recurrence with its
// warm-up decay (f64 reference), 16-bit parameters average in f32, Swap puts the shadows in
// the parameters and restores them, state round trip, errors, CUDA against the CPU.
#include <algorithm>
#include <vector>

#include "util.h"

namespace test_ema {

using namespace tg;

TEST_CASE("ExponentialMovingAverage follows its recurrence", "[optim][ema]") {
  Tensor p = tgt::rand64({5}, 1).requires_grad_();
  Tensor q = rand_seeded({2, 3}, 2, {.dtype = DType::bf16}).requires_grad_();
  optim::ExponentialMovingAverage ema({p, q}, 0.9);
  REQUIRE(ema.shadow(0).dtype() == DType::f64);
  REQUIRE(ema.shadow(1).dtype() == DType::f32);  // 16-bit parameters average in f32
  std::vector<double> sp = tgt::values(p), sq = tgt::values(q);
  for (int n = 1; n <= 30; ++n) {
    {
      NoGradGuard ng;  // a stand-in for an optimizer step
      copy_bytes(p, p * 0.97 + 0.01 * n);
      copy_bytes(q, to_dtype(q * 0.5 + 0.25, DType::bf16));
    }
    ema.update();
    const double d = std::min(0.9, (1.0 + n) / (10.0 + n));
    const std::vector<double> vp = tgt::values(p), vq = tgt::values(q);
    for (std::size_t i = 0; i < sp.size(); ++i) sp[i] = d * sp[i] + (1 - d) * vp[i];
    for (std::size_t i = 0; i < sq.size(); ++i) sq[i] = d * sq[i] + (1 - d) * vq[i];
    INFO("update " << n);
    tgt::require_close(ema.shadow(0), from_vector(sp, {5}), 1e-14, 1e-14);
    tgt::require_close(ema.shadow(1), from_vector(sq, {2, 3}), 1e-6, 1e-6);
  }
  REQUIRE(ema.num_updates() == 30);

  // Swap: the parameters hold the shadows (rounded to their dtype), then their own values.
  const Tensor p_before = clone(p), q_before = clone(q);
  {
    optim::ExponentialMovingAverage::Swap swap(ema);
    tgt::require_close(p, ema.shadow(0), 0.0, 0.0);
    tgt::require_close(q, to_dtype(ema.shadow(1), DType::bf16), 0.0, 0.0);
    REQUIRE(tgt::max_abs_diff(p, p_before) > 1e-3);
  }
  REQUIRE(tgt::max_abs_diff(p, p_before) == 0.0);
  REQUIRE(tgt::max_abs_diff(q, q_before) == 0.0);

  // State round trip into another average of the same parameters.
  optim::ExponentialMovingAverage other({p, q}, 0.9);
  other.load_state(ema.state());
  REQUIRE(other.num_updates() == 30);
  tgt::require_close(other.shadow(0), ema.shadow(0), 0.0, 0.0);
  tgt::require_close(other.shadow(1), ema.shadow(1), 0.0, 0.0);

  // The shadow never aliases its parameter.
  {
    NoGradGuard ng;
    copy_bytes(p, zeros({5}, {.dtype = DType::f64}));
  }
  REQUIRE(tgt::max_abs_diff(ema.shadow(0), zeros({5}, {.dtype = DType::f64})) > 0.0);

  tgt::require_throws<ValueError>([&] { optim::ExponentialMovingAverage e({p}, 1.0); },
                                  {"ExponentialMovingAverage", "decay", "1"});
  tgt::require_throws<ValueError>([&] { optim::ExponentialMovingAverage e({zeros({2}, {.dtype = DType::i32})}); },
                                  {"ExponentialMovingAverage", "parameter 0", "i32"});
  tgt::require_throws<ValueError>([&] { other.load_state({}); }, {"load_state", "shadow.0"});
  tgt::require_throws<ShapeError>(
      [&] {
        auto st = ema.state();
        st[1].second = zeros({4}, {.dtype = DType::f64});
        other.load_state(st);
      },
      {"load_state", "shadow.0", "[4]", "[5]"});
}

TEST_CASE("ExponentialMovingAverage on CUDA matches the CPU", "[optim][ema][cuda]") {
  TG_REQUIRE_CUDA();
  Tensor pc = rand_seeded({1000}, 3, {.dtype = DType::bf16}).requires_grad_();
  Tensor pg = to_device(pc, Device::cuda()).requires_grad_();
  optim::ExponentialMovingAverage ec({pc}, 0.99), eg({pg}, 0.99);
  for (int n = 0; n < 5; ++n) {
    {
      NoGradGuard ng;
      copy_bytes(pc, to_dtype(pc * 0.9 + 0.05, DType::bf16));
      copy_bytes(pg, to_dtype(pg * 0.9 + 0.05, DType::bf16));
    }
    ec.update();
    eg.update();
  }
  tgt::require_close(to_device(eg.shadow(0), Device::cpu()), ec.shadow(0), 1e-6, 1e-6);
}

}  // namespace test_ema
