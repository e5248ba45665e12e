// Where block-sparse matmul plans live: on a sparse operand's layout for its lifetime, and
// by value in a short process-wide list. A program with more structures than the list
// holds must not rebuild plans; plans must die with their layouts (no cycles between
// layouts holding each other's plans); release_device_resources() drops them all.
#include <memory>
#include <vector>

#include "ops/sparse_matmul/plan.h"
#include "util.h"

namespace test_sparse_matmul_plans {

using namespace tg;

namespace {

// A DSD-shaped product x [2, 3*16, 4*16] (sparse, layout lx) times dense y [2, 64, 32].
struct Product {
  ops::OperandDesc a, b, c;
};
Product dsd(const Layout& lx) {
  return {{lx, 2, 48, 64, false}, {Layout(), 2, 64, 32, false}, {Layout(), 2, 48, 32, false}};
}
std::shared_ptr<const ops::MatmulPlan> plan_of(const Product& p) { return ops::matmul_plan(p.a, p.b, p.c, 16); }

// More products of other structures than the value-matched list holds (16), kept alive.
std::vector<Layout> flood(int n, std::uint64_t seed) {
  std::vector<Layout> keep;
  for (int i = 0; i < n; ++i) {
    keep.push_back(random_layout(2, 3, 4, 16, 0.5, seed + static_cast<std::uint64_t>(i)));
    plan_of(dsd(keep.back()));
  }
  return keep;
}

}  // namespace

TEST_CASE("sparse matmul plans: kept on the layout past the value-matched list", "[ops][sparse_matmul][plans]") {
  const Layout lx = random_layout(2, 3, 4, 16, 0.5, 101);
  const auto p1 = plan_of(dsd(lx));
  const std::vector<Layout> others = flood(40, 1000);
  // The list has long forgotten lx's plan; its layout still holds it.
  REQUIRE(plan_of(dsd(lx)) == p1);
  // A copy of the layout shares its plans.
  const Layout copy = lx;
  REQUIRE(plan_of(dsd(copy)) == p1);
  // An equal layout made anew finds the plan by value while the list remembers it ...
  const auto fresh = plan_of(dsd(random_layout(2, 3, 4, 16, 0.5, 909)));
  REQUIRE(plan_of(dsd(random_layout(2, 3, 4, 16, 0.5, 909))) == fresh);
  // ... and builds an equal one after that, then kept on its own layout.
  const Layout equal = random_layout(2, 3, 4, 16, 0.5, 101);
  REQUIRE(equal == lx);
  const auto p2 = plan_of(dsd(equal));
  REQUIRE(p2 != p1);
  REQUIRE(p2->pair_begin == p1->pair_begin);
  REQUIRE(p2->pair_a == p1->pair_a);
  flood(20, 3000);
  REQUIRE(plan_of(dsd(equal)) == p2);
}

TEST_CASE("sparse matmul plans: freed with their layouts, also when two layouts hold each other's",
          "[ops][sparse_matmul][plans]") {
  std::weak_ptr<const ops::MatmulPlan> w1, w2, w3;
  {
    const Layout la = random_layout(1, 2, 2, 16, 0.75, 7), lb = random_layout(1, 2, 2, 16, 0.75, 8);
    // SSS both ways: a * b -> b keeps a plan on b that names a, and b * a -> a one on a
    // that names b: a cycle, were the stored keys layouts.
    const ops::OperandDesc a{la, 1, 32, 32, false}, b{lb, 1, 32, 32, false};
    w1 = ops::matmul_plan(a, b, b, 16);
    w2 = ops::matmul_plan(b, a, a, 16);
    w3 = plan_of(dsd(random_layout(2, 3, 4, 16, 0.5, 55)));  // its layout is a temporary
    REQUIRE_FALSE(w1.expired());
  }
  // The value-matched list still holds them until other products push them out.
  flood(20, 2000);
  CHECK(w1.expired());
  CHECK(w2.expired());
  CHECK(w3.expired());
}

TEST_CASE("sparse matmul plans: release_device_resources drops the plans kept on live layouts",
          "[ops][sparse_matmul][plans][release]") {
  const Layout lx = random_layout(2, 3, 4, 16, 0.5, 303);
  std::weak_ptr<const ops::MatmulPlan> w = plan_of(dsd(lx));
  REQUIRE_FALSE(w.expired());
  release_device_resources();
  REQUIRE(w.expired());
  // The next call builds it again, with the same content, and keeps it again.
  const auto p = plan_of(dsd(lx));
  REQUIRE(p->n_out == 2 * 3 * 2);
  REQUIRE(plan_of(dsd(lx)) == p);
}

}  // namespace test_sparse_matmul_plans
