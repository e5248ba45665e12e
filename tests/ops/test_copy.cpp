// Tests of to_device / to_dtype / clone (ops/copy).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "util.h"

namespace test_copy {

using namespace tg;

namespace {

const std::vector<DType> kAllDTypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i32, DType::i64, DType::boolean};

// Independent reference of the conversion rules, from an f64 source value.
double ref_convert(double v, DType to) {
  switch (to) {
    case DType::boolean: return v != 0 ? 1.0 : 0.0;  // nan != 0
    case DType::i32:
      if (std::isnan(v)) return 0;
      if (v >= 2147483647.0) return 2147483647.0;
      if (v <= -2147483648.0) return -2147483648.0;
      return std::trunc(v);
    case DType::i64:
      if (std::isnan(v)) return 0;
      if (v >= 9.2233720368547758e18) return 9.2233720368547758e18;
      if (v <= -9.2233720368547758e18) return -9.2233720368547758e18;
      return std::trunc(v);
    default: return v;  // floating targets checked separately
  }
}

}  // namespace

TEST_CASE("to_dtype: every pair of dtypes on small integers round-trips exactly", "[ops][copy]") {
  const std::vector<double> vals = {0, 1, 2, -3, 7, 100, -64, 1};
  for (DType from : kAllDTypes) {
    for (DType to : kAllDTypes) {
      INFO("from " << from << " to " << to);
      std::vector<double> src = vals;
      if (from == DType::boolean || to == DType::boolean) {
        for (double& v : src) v = v != 0 ? 1 : 0;
      }
      Tensor a = from_vector<double>(src, {2, 4}).to(from);
      Tensor b = a.to(to);
      REQUIRE(b.dtype() == to);
      REQUIRE(b.shape() == Shape{2, 4});
      auto got = b.to_vector<double>();
      for (std::size_t i = 0; i < src.size(); ++i) CHECK(got[i] == src[i]);
    }
  }
}

TEST_CASE("to_dtype: float to integer truncates and saturates, nan gives 0; to bool is != 0", "[ops][copy]") {
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> vals = {0.0, 1.5, -2.7, 0.99, -0.99, 3e9, -3e9, 1e30, -1e30, inf, -inf, NAN, -0.0};
  for (DType from : {DType::f64, DType::f32}) {
    Tensor x = from_vector<double>(vals, {static_cast<std::int64_t>(vals.size())}).to(from);
    for (DType to : {DType::i32, DType::i64, DType::boolean}) {
      INFO("from " << from << " to " << to);
      auto got = x.to(to).to_vector<double>();
      for (std::size_t i = 0; i < vals.size(); ++i) {
        const double v = from == DType::f32 ? static_cast<double>(static_cast<float>(vals[i])) : vals[i];
        INFO("value " << v);
        CHECK(got[i] == ref_convert(v, to));
      }
    }
  }
  // i64 extremes through the typed accessor (doubles cannot hold INT64_MAX exactly).
  auto big = from_vector<double>({1e300, -1e300}, {2}).to(DType::i64).to_vector<std::int64_t>();
  CHECK(big[0] == std::numeric_limits<std::int64_t>::max());
  CHECK(big[1] == std::numeric_limits<std::int64_t>::min());
}

TEST_CASE("to_dtype: 16-bit floats round to nearest even; integers to floats round", "[ops][copy]") {
  // 1 + 2^-8 is a tie between bf16 1.0 and 1.0078125 (even: 1.0); 1 + 3*2^-8 rounds up to 1.015625.
  auto bf = from_vector<float>({1.00390625f, 1.01171875f, -1.00390625f, 3.0e38f, 1e-40f}, {5}).to(DType::bf16);
  auto b = bf.to_vector<double>();
  CHECK(b[0] == 1.0);
  CHECK(b[1] == 1.015625);
  CHECK(b[2] == -1.0);
  CHECK(std::isfinite(b[3]));
  // f16: 1 + 2^-11 ties to 1.0; 65520 overflows to inf; 2^-24 is the smallest subnormal.
  auto h = from_vector<double>({1.0 + std::ldexp(1.0, -11), 65520.0, std::ldexp(1.0, -24), 0.1}, {4})
               .to(DType::f16)
               .to_vector<double>();
  CHECK(h[0] == 1.0);
  CHECK(std::isinf(h[1]));
  CHECK(h[2] == std::ldexp(1.0, -24));
  CHECK(h[3] == Approx(0.0999755859375));
  // i64 2^53 + 1 is not representable in f64 nor f32.
  auto f = from_vector<std::int64_t>({(std::int64_t{1} << 24) + 1, -7}, {2}).to(DType::f32).to_vector<float>();
  CHECK(f[0] == 16777216.0f);
  CHECK(f[1] == -7.0f);
  // i64 -> i32 wraps (two's complement).
  auto w = from_vector<std::int64_t>({(std::int64_t{1} << 32) + 5}, {1}).to(DType::i32).to_vector<std::int32_t>();
  CHECK(w[0] == 5);
}

TEST_CASE("to_dtype / to_device / clone: identity cases, empty and 0-d tensors", "[ops][copy]") {
  Tensor x = from_vector<float>({1, 2, 3}, {3});
  REQUIRE(x.to(DType::f32).is_same(x));
  REQUIRE(x.to(Device::cpu()).is_same(x));
  Tensor e = empty({0, 4}, {.dtype = DType::bf16});
  Tensor e2 = e.to(DType::i64);
  REQUIRE(e2.shape() == Shape{0, 4});
  REQUIRE(e2.dtype() == DType::i64);
  REQUIRE(e.clone().shape() == Shape{0, 4});
  Tensor s = from_vector<double>({2.5}, Shape{});
  REQUIRE(s.to(DType::i32).item<std::int32_t>() == 2);
  REQUIRE(s.clone().item<double>() == 2.5);
}

TEST_CASE("clone is a deep copy", "[ops][copy]") {
  Tensor x = from_vector<float>({1, 2, 3, 4}, {2, 2});
  Tensor c = x.clone();
  REQUIRE_FALSE(c.is_same(x));
  REQUIRE(c.data_ptr() != x.data_ptr());
  x.data<float>()[0] = 42.0f;
  REQUIRE(c.to_vector<float>() == std::vector<float>{1, 2, 3, 4});
}

TEST_CASE("copy ops: gradients", "[ops][copy]") {
  Tensor x = tgt::rand64({3, 4}, 11).requires_grad_();
  {
    auto r = autograd::gradcheck([](const std::vector<Tensor>& in) { return clone(in[0]); }, {x});
    INFO(r.report);
    REQUIRE(r);
  }
  {
    // f64 -> f32 -> f64 is the identity up to f32 rounding: a larger step keeps the
    // rounding error of the finite difference below the tolerance.
    autograd::GradcheckOptions o;
    o.eps = 1e-3;
    o.atol = 1e-4;
    auto r = autograd::gradcheck([](const std::vector<Tensor>& in) { return in[0].to(DType::f32).to(DType::f64); },
                                 {x}, o);
    INFO(r.report);
    REQUIRE(r);
  }
  // The gradient of a cast is cast back to the source dtype.
  Tensor y = x.to(DType::bf16);
  REQUIRE(y.requires_grad());
  REQUIRE(y.grad_fn() != nullptr);
  y.backward(full({3, 4}, 0.5, {.dtype = DType::bf16}));
  REQUIRE(x.grad().dtype() == DType::f64);
  tgt::require_close(x.grad(), full({3, 4}, 0.5, {.dtype = DType::f64}));
  // Integer results carry no gradient.
  Tensor z = x.to(DType::i32);
  REQUIRE_FALSE(z.requires_grad());
}

TEST_CASE("copy ops: bad inputs", "[ops][copy]") {
  Tensor x = from_vector<float>({1, 2}, {2});
  tgt::require_throws<DeviceError>([&] { (void)x.to(Device::cuda(7)); }, {"to_device", "cuda:7"});
  tgt::require_throws<ValueError>([&] { (void)to_dtype(Tensor(), DType::f32); }, {"to_dtype", "x", "undefined"});
  tgt::require_throws<ValueError>([&] { (void)clone(Tensor()); }, {"clone", "undefined"});
  tgt::require_throws<ValueError>([&] { (void)to_device(Tensor(), Device::cpu()); }, {"to_device", "undefined"});
}

TEST_CASE("copy ops on CUDA: round trips, casts match the CPU, gradients flow back", "[ops][copy][cuda]") {
  TG_REQUIRE_CUDA();
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> vals = {0.0, 1.5, -2.7, 0.99, -0.99, 3e9, -3e9, 1e30, -1e30, inf, -inf, NAN, -0.0, 65519.0, 7.0};
  // A larger random block too, so that the grid-stride loop runs more than one block.
  Tensor big = tgt::rand64({1000, 37}, 5, -300.0, 300.0);
  for (DType from : kAllDTypes) {
    Tensor src_small = from_vector<double>(vals, {static_cast<std::int64_t>(vals.size())}).to(from);
    Tensor src_big = big.to(from);
    for (Tensor src : {src_small, src_big}) {
      Tensor g = src.to(Device::cuda());
      REQUIRE(g.device() == Device::cuda());
      REQUIRE(g.dtype() == from);
      // Byte-exact round trip.
      Tensor back = g.to(Device::cpu());
      REQUIRE(std::memcmp(back.data_ptr(), src.data_ptr(), src.nbytes()) == 0);
      for (DType to : kAllDTypes) {
        INFO("from " << from << " to " << to << ", numel " << src.numel());
        Tensor cpu = src.to(to);
        Tensor gpu = g.to(to).to(Device::cpu());
        REQUIRE(gpu.dtype() == to);
        REQUIRE(std::memcmp(cpu.data_ptr(), gpu.data_ptr(), cpu.nbytes()) == 0);
      }
    }
  }
  // Empty tensors.
  Tensor e = empty({0, 3}, {.dtype = DType::f32, .device = Device::cuda()});
  REQUIRE(e.to(DType::i64).shape() == Shape{0, 3});
  REQUIRE(e.to(Device::cpu()).numel() == 0);
  REQUIRE(e.clone().numel() == 0);
  // clone on the device is a deep copy.
  Tensor c = big.to(Device::cuda()).clone();
  REQUIRE(c.device() == Device::cuda());
  tgt::require_close(c, big, 0, 0);
  // The gradient of to(device) goes back to the source device.
  Tensor x = tgt::rand64({5, 3}, 3).requires_grad_();
  Tensor y = x.to(Device::cuda());
  REQUIRE(y.requires_grad());
  y.backward(full({5, 3}, 2.0, {.dtype = DType::f64, .device = Device::cuda()}));
  REQUIRE(x.grad().device() == Device::cpu());
  tgt::require_close(x.grad(), full({5, 3}, 2.0, {.dtype = DType::f64}));
  auto r = autograd::gradcheck(
      [](const std::vector<Tensor>& in) { return in[0].to(Device::cuda()).clone().to(Device::cpu()); }, {x});
  INFO(r.report);
  REQUIRE(r);
}

}  // namespace test_copy
