// Tests of the tensor factories (ops/factory).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "util.h"

namespace test_factory {

using namespace tg;

namespace {

const std::vector<DType> kAllDTypes = {DType::f32, DType::f64, DType::bf16, DType::f16,
                                       DType::i32, DType::i64, DType::boolean};
const std::vector<DType> kFloating = {DType::f32, DType::f64, DType::bf16, DType::f16};

struct Moments {
  double mean = 0, std = 0, min = INFINITY, max = -INFINITY;
};
Moments moments(const Tensor& t) {
  auto v = t.to_vector<double>();
  Moments m;
  double s = 0, s2 = 0;
  for (double x : v) {
    s += x;
    m.min = std::min(m.min, x);
    m.max = std::max(m.max, x);
  }
  m.mean = s / static_cast<double>(v.size());
  for (double x : v) s2 += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(s2 / static_cast<double>(v.size()));
  return m;
}

bool bytes_equal(const Tensor& a, const Tensor& b) {
  Tensor ha = a.to(Device::cpu()), hb = b.to(Device::cpu());
  return ha.dtype() == hb.dtype() && ha.shape() == hb.shape() &&
         std::memcmp(ha.data_ptr(), hb.data_ptr(), ha.nbytes()) == 0;
}

}  // namespace

TEST_CASE("zeros / ones / full: every dtype, value conversion, shapes", "[ops][factory]") {
  for (DType dt : kAllDTypes) {
    INFO("dtype " << dt);
    Tensor z = zeros({2, 3}, {.dtype = dt});
    REQUIRE(z.dtype() == dt);
    REQUIRE(z.shape() == Shape{2, 3});
    for (double v : z.to_vector<double>()) CHECK(v == 0.0);
    for (double v : ones({4}, {.dtype = dt}).to_vector<double>()) CHECK(v == 1.0);
    const double expected = dt == DType::boolean                        ? 1.0
                            : (dt == DType::i32 || dt == DType::i64)   ? -2.0
                            : dt == DType::bf16                         ? -2.75
                                                                        : -2.75;
    for (double v : full({3, 1}, -2.75, {.dtype = dt}).to_vector<double>()) CHECK(v == expected);
  }
  // Rounding of the fill value to the dtype.
  CHECK(full({1}, 0.1, {.dtype = DType::f32}).item<float>() == 0.1f);
  CHECK(full({1}, 1.00390625, {.dtype = DType::bf16}).item<double>() == 1.0);
  CHECK(full({1}, 1e300, {.dtype = DType::i64}).item<std::int64_t>() == std::numeric_limits<std::int64_t>::max());
  CHECK(std::isnan(full({2}, NAN).to_vector<float>()[1]));
  CHECK(std::signbit(full({1}, -0.0).item<float>()));
  // 0-d and empty shapes.
  Tensor s = full(Shape{}, 3.0);
  REQUIRE(s.dim() == 0);
  REQUIRE(s.numel() == 1);
  REQUIRE(s.item<float>() == 3.0f);
  REQUIRE(zeros({0, 5}).numel() == 0);
  REQUIRE(ones({5, 0, 2}, {.dtype = DType::i32}).shape() == Shape{5, 0, 2});
}

TEST_CASE("factories: requires_grad and *_like", "[ops][factory]") {
  Tensor w = zeros({2, 2}, {.dtype = DType::f64, .requires_grad = true});
  REQUIRE(w.requires_grad());
  REQUIRE(w.is_leaf());
  REQUIRE(randn({3}, {.requires_grad = true}).requires_grad());
  REQUIRE(rand_seeded({3}, 1, {.dtype = DType::bf16, .requires_grad = true}).requires_grad());
  REQUIRE_FALSE(ones({2}).requires_grad());

  Tensor x = from_vector<double>({1, 2, 3, 4, 5, 6}, {2, 3}).requires_grad_();
  for (Tensor t : {zeros_like(x), ones_like(x), full_like(x, 7.5)}) {
    REQUIRE(t.shape() == x.shape());
    REQUIRE(t.dtype() == DType::f64);
    REQUIRE(t.device() == x.device());
    REQUIRE_FALSE(t.requires_grad());
  }
  CHECK(zeros_like(x).to_vector<double>() == std::vector<double>(6, 0.0));
  CHECK(ones_like(x).to_vector<double>() == std::vector<double>(6, 1.0));
  CHECK(full_like(x, 7.5).to_vector<double>() == std::vector<double>(6, 7.5));
  Tensor i = full_like(from_vector<std::int32_t>({1, 2}, {2}), 9.9);
  CHECK(i.dtype() == DType::i32);
  CHECK(i.to_vector<std::int32_t>() == std::vector<std::int32_t>{9, 9});
}

TEST_CASE("arange: values, steps, dtypes, empty ranges", "[ops][factory]") {
  Tensor a = arange(5);
  REQUIRE(a.dtype() == DType::i64);
  REQUIRE(a.shape() == Shape{5});
  CHECK(a.to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2, 3, 4});
  CHECK(arange(1.0, 2.0, 0.25, {.dtype = DType::f32}).to_vector<float>() == std::vector<float>{1, 1.25f, 1.5f, 1.75f});
  CHECK(arange(5.0, 0.0, -2.0).to_vector<std::int64_t>() == std::vector<std::int64_t>{5, 3, 1});
  // The end is excluded even when the last step lands on it.
  CHECK(arange(0.0, 1.0, 0.5, {.dtype = DType::f64}).to_vector<double>() == std::vector<double>{0.0, 0.5});
  // Non-integer steps with an integer dtype truncate each value.
  CHECK(arange(0.0, 2.0, 0.75, {.dtype = DType::i32}).to_vector<std::int32_t>() == std::vector<std::int32_t>{0, 0, 1});
  // Each element is start + i*step (no accumulated drift).
  auto v = arange(0.0, 1.0, 0.1, {.dtype = DType::f64}).to_vector<double>();
  REQUIRE(v.size() == 10);
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == static_cast<double>(i) * 0.1);
  REQUIRE(arange(0).numel() == 0);
  REQUIRE(arange(3.0, 1.0).numel() == 0);
  REQUIRE(arange(0.0, 4.0, 1.0, {.dtype = DType::f32, .requires_grad = true}).requires_grad());
}

TEST_CASE("rand / randn: reference values from Philox, reproducibility, seeds", "[ops][factory]") {
  const std::uint64_t seed = 1234;
  Tensor u = rand_seeded({7, 9}, seed, {}, -2.0, 3.0);
  auto uv = u.to_vector<float>();
  for (std::size_t i = 0; i < uv.size(); ++i) {
    const double ui = static_cast<double>(philox::uniform(seed, 0, i));
    CHECK(uv[i] == static_cast<float>(-2.0 + 5.0 * ui));
  }
  Tensor n = randn_seeded({5, 5}, seed, {.dtype = DType::f64}, 1.0, 0.5);
  auto nv = n.to_vector<double>();
  for (std::size_t i = 0; i < nv.size(); ++i) CHECK(nv[i] == 1.0 + 0.5 * philox::normal(seed, 0, i));
  // Same seed, same numbers; another seed, other numbers.
  CHECK(bytes_equal(rand_seeded({100}, 5), rand_seeded({100}, 5)));
  CHECK_FALSE(bytes_equal(rand_seeded({100}, 5), rand_seeded({100}, 6)));
  CHECK_FALSE(bytes_equal(randn_seeded({100}, 5), randn_seeded({100}, 6)));
  // The global generator advances per draw and restarts with manual_seed.
  manual_seed(77);
  Tensor a = rand({64});
  Tensor b = rand({64});
  Tensor c = randn({64});
  CHECK_FALSE(bytes_equal(a, b));
  manual_seed(77);
  CHECK(bytes_equal(rand({64}), a));
  CHECK(bytes_equal(rand({64}), b));
  CHECK(bytes_equal(randn({64}), c));
  manual_seed(78);
  CHECK_FALSE(bytes_equal(rand({64}), a));
  // Lower-precision dtypes are the f64 value rounded once to f32 and then to the dtype.
  auto h = rand_seeded({50}, 3, {.dtype = DType::f16}).to_vector<double>();
  for (std::size_t i = 0; i < h.size(); ++i) {
    CHECK(h[i] == static_cast<double>(static_cast<float>(half(static_cast<float>(philox::uniform(3, 0, i))))));
  }
}

TEST_CASE("rand / randn / randint: statistics over 1e5 samples", "[ops][factory]") {
  const std::int64_t n = 100000;
  for (DType dt : kFloating) {
    INFO("dtype " << dt);
    Moments u = moments(rand_seeded({n}, 42, {.dtype = dt}, 2.0, 5.0));
    CHECK(u.min >= 2.0);
    CHECK(u.max < 5.0);
    CHECK(u.mean == Approx(3.5).margin(0.02));
    CHECK(u.std == Approx(3.0 / std::sqrt(12.0)).margin(0.02));
    // Values that would round up to hi in a coarse dtype stay below it.
    Moments u01 = moments(rand_seeded({n}, 43, {.dtype = dt}));
    CHECK(u01.min >= 0.0);
    CHECK(u01.max < 1.0);
    Moments z = moments(randn_seeded({n}, 42, {.dtype = dt}, 3.0, 2.0));
    CHECK(z.mean == Approx(3.0).margin(0.03));
    CHECK(z.std == Approx(2.0).margin(0.03));
    auto zv = randn_seeded({n}, 44, {.dtype = dt}).to_vector<double>();
    std::int64_t within1 = 0, within2 = 0;
    for (double v : zv) {
      within1 += std::fabs(v) < 1.0;
      within2 += std::fabs(v) < 2.0;
    }
    CHECK(static_cast<double>(within1) / n == Approx(0.6827).margin(0.01));
    CHECK(static_cast<double>(within2) / n == Approx(0.9545).margin(0.01));
  }
  // randint: every value of [-3, 4) about equally often, nothing outside.
  manual_seed(5);
  for (DType dt : {DType::i64, DType::i32, DType::f32}) {
    INFO("dtype " << dt);
    auto r = randint(-3, 4, {70000}, {.dtype = dt}).to_vector<double>();
    std::vector<int> counts(7, 0);
    for (double v : r) {
      REQUIRE(v >= -3);
      REQUIRE(v < 4);
      REQUIRE(v == std::trunc(v));
      ++counts[static_cast<int>(v) + 3];
    }
    for (int c : counts) CHECK(std::abs(c - 10000) < 500);
  }
  // A range wider than 2^32 uses all 64 bits.
  auto wide = randint(-(std::int64_t{1} << 62), std::int64_t{1} << 62, {1000}).to_vector<std::int64_t>();
  std::int64_t above = 0;
  for (auto v : wide) above += v > (std::int64_t{1} << 61);
  CHECK(above > 150);
  CHECK(above < 350);
  // A one-value range.
  CHECK(randint(9, 10, {5}).to_vector<std::int64_t>() == std::vector<std::int64_t>(5, 9));
}

TEST_CASE("factories: bad inputs", "[ops][factory]") {
  tgt::require_throws<DTypeError>([] { (void)rand({3}, {.dtype = DType::i32}); }, {"rand", "dtype", "i32"});
  tgt::require_throws<DTypeError>([] { (void)randn({3}, {.dtype = DType::i64}); }, {"randn", "i64"});
  tgt::require_throws<DTypeError>([] { (void)rand_seeded({3}, 1, {.dtype = DType::boolean}); },
                                  {"rand_seeded", "bool"});
  tgt::require_throws<DTypeError>([] { (void)randint(0, 2, {3}, {.dtype = DType::boolean}); }, {"randint", "bool"});
  tgt::require_throws<ShapeError>([] { (void)zeros({2, -1}); }, {"full", "non-negative", "-1"});
  tgt::require_throws<ShapeError>([] { (void)rand({-3}); }, {"rand", "non-negative", "-3"});
  tgt::require_throws<ShapeError>([] { (void)randn_seeded({4, -2}, 1); }, {"randn_seeded", "-2"});
  tgt::require_throws<ShapeError>([] { (void)randint(0, 3, {-1}); }, {"randint", "-1"});
  tgt::require_throws<ValueError>([] { (void)rand({3}, {}, 1.0, 1.0); }, {"rand", "lo < hi"});
  tgt::require_throws<ValueError>([] { (void)rand({3}, {}, 0.0, INFINITY); }, {"rand", "hi", "finite"});
  tgt::require_throws<ValueError>([] { (void)randn({3}, {}, 0.0, -1.0); }, {"randn", "std", ">= 0"});
  tgt::require_throws<ValueError>([] { (void)randint(5, 5, {3}); }, {"randint", "lo < hi"});
  tgt::require_throws<ValueError>([] { (void)randint(0, std::int64_t{1} << 40, {3}, {.dtype = DType::i32}); },
                                  {"randint", "i32"});
  tgt::require_throws<ValueError>([] { (void)arange(0.0, 5.0, 0.0); }, {"arange", "step", "non-zero"});
  tgt::require_throws<ValueError>([] { (void)arange(0.0, NAN); }, {"arange", "end", "finite"});
  tgt::require_throws<DTypeError>([] { (void)zeros({2}, {.dtype = DType::i32, .requires_grad = true}); },
                                  {"full", "requires_grad", "i32"});
  tgt::require_throws<DeviceError>([] { (void)ones({2}, {.device = Device::cuda(9)}); }, {"full", "cuda:9"});
  tgt::require_throws<ValueError>([] { (void)zeros_like(Tensor()); }, {"zeros_like", "undefined"});
}

TEST_CASE("factories on CUDA: the same numbers as the CPU", "[ops][factory][cuda]") {
  TG_REQUIRE_CUDA();
  const Device g = Device::cuda();
  // Odd sizes so that partial blocks and the grid-stride loop are covered.
  for (std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{300007}}) {
    for (DType dt : kFloating) {
      INFO("dtype " << dt << ", n " << n);
      Tensor uc = rand_seeded({n}, 99, {.dtype = dt}, -1.5, 2.5);
      Tensor ug = rand_seeded({n}, 99, {.dtype = dt, .device = g}, -1.5, 2.5);
      REQUIRE(ug.device() == g);
      CHECK(bytes_equal(uc, ug));
      CHECK(bytes_equal(rand_seeded({n}, 7, {.dtype = dt}), rand_seeded({n}, 7, {.dtype = dt, .device = g})));
      // Box-Muller uses the f64 log/sin/cos of each side's math library, which may differ in
      // the last f64 bit: compare to a few ulps of the f32 result; 16-bit results must agree.
      Tensor nc = randn_seeded({n}, 99, {.dtype = dt}, 0.5, 2.0);
      Tensor ng = randn_seeded({n}, 99, {.dtype = dt, .device = g}, 0.5, 2.0);
      if (dt == DType::bf16 || dt == DType::f16) {
        auto a = nc.to_vector<double>(), b = ng.to_vector<double>();
        std::int64_t differ = 0;
        for (std::size_t i = 0; i < a.size(); ++i) differ += a[i] != b[i];
        CHECK(differ <= 1);
      } else {
        tgt::require_close(ng, nc, 1e-6, 1e-6);
      }
    }
    for (DType dt : {DType::i64, DType::i32, DType::f32, DType::bf16}) {
      INFO("randint dtype " << dt << ", n " << n);
      manual_seed(12);
      Tensor rc = randint(-1000, 1000, {n}, {.dtype = dt});
      manual_seed(12);
      Tensor rg = randint(-1000, 1000, {n}, {.dtype = dt, .device = g});
      CHECK(bytes_equal(rc, rg));
    }
  }
  // The global generator gives the same stream on both devices.
  manual_seed(3);
  Tensor a = rand({1000});
  manual_seed(3);
  Tensor b = rand({1000}, {.device = g});
  CHECK(bytes_equal(a, b));
  // fill: every dtype, zero and non-zero values, large odd sizes, empty tensors.
  for (DType dt : kAllDTypes) {
    INFO("fill dtype " << dt);
    for (double v : {0.0, -0.0, 1.0, -2.75, 1e300}) {
      CHECK(bytes_equal(full({1001, 3}, v, {.dtype = dt}), full({1001, 3}, v, {.dtype = dt, .device = g})));
    }
    REQUIRE(zeros({0, 3}, {.dtype = dt, .device = g}).numel() == 0);
    CHECK(bytes_equal(zeros_like(ones({5}, {.dtype = dt, .device = g})), zeros({5}, {.dtype = dt})));
  }
  CHECK(bytes_equal(arange(0.0, 10.0, 0.5, {.dtype = DType::f32, .device = g}),
                    arange(0.0, 10.0, 0.5, {.dtype = DType::f32})));
  Tensor p = ones({4}, {.device = g, .requires_grad = true});
  REQUIRE(p.requires_grad());
  REQUIRE(p.device() == g);
}

}  // namespace test_factory
