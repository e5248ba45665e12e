#include "runtime/philox.h"

#include <cmath>

#include "catch.h"

namespace test_philox {

using namespace tg;

TEST_CASE("Philox-4x32-10 matches the published known-answer vectors", "[runtime][philox]") {
  philox::U32x4 z = philox::philox4x32_10({0, 0, 0, 0}, 0, 0);
  CHECK(z.x == 0x6627e8d5u);
  CHECK(z.y == 0xe169c58du);
  CHECK(z.z == 0xbc57ac4cu);
  CHECK(z.w == 0x9b00dbd8u);
  philox::U32x4 f = philox::philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu, 0xffffffffu);
  CHECK(f.x == 0x408f276du);
  CHECK(f.y == 0x41c83b0eu);
  CHECK(f.z == 0xa20bc7c6u);
  CHECK(f.w == 0x6d5451fdu);
}

TEST_CASE("Philox streams: offsets and seeds give different numbers; uniform and normal look right",
          "[runtime][philox]") {
  REQUIRE(philox::bits(1, 0, 5) != philox::bits(2, 0, 5));
  REQUIRE(philox::bits(1, 0, 5) != philox::bits(1, 1, 5));
  REQUIRE(philox::bits(1, 0, 5) == philox::bits(1, 0, 5));
  const int n = 200000;
  double s = 0, s2 = 0, ns = 0, ns2 = 0;
  float umin = 1, umax = 0;
  for (int i = 0; i < n; ++i) {
    float u = philox::uniform(7, 3, static_cast<std::uint64_t>(i));
    umin = std::min(umin, u);
    umax = std::max(umax, u);
    s += u;
    s2 += u * u;
    double g = philox::normal(7, 3, static_cast<std::uint64_t>(i));
    REQUIRE(std::isfinite(g));
    ns += g;
    ns2 += g * g;
  }
  REQUIRE(umin >= 0.0f);
  REQUIRE(umax < 1.0f);
  REQUIRE(s / n == Approx(0.5).margin(0.01));
  REQUIRE(s2 / n - (s / n) * (s / n) == Approx(1.0 / 12).margin(0.005));
  REQUIRE(ns / n == Approx(0.0).margin(0.02));
  REQUIRE(ns2 / n == Approx(1.0).margin(0.03));
}

TEST_CASE("Generator advances its offset per draw", "[runtime][philox]") {
  Generator g(11);
  REQUIRE(g.next_offset() == 0);
  REQUIRE(g.next_offset() == 1);
  g.manual_seed(3);
  REQUIRE(g.seed() == 3);
  REQUIRE(g.next_offset() == 0);
}

}  // namespace test_philox
