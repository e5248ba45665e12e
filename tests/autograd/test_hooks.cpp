// Gradient hooks and retained gradients: what a hook sees (a leaf's whole gradient of the
// pass, a non-leaf's whole gradient before it flows on), replacement gradients, order and
// removal, retain_grad on non-leaves, and the errors.
#include <vector>

#include "util.h"

namespace test_hooks {

using namespace tg;

TEST_CASE("register_hook on a leaf sees the pass's summed gradient before it is accumulated", "[autograd][hooks]") {
  Tensor x = tgt::rand64({3}, 1).requires_grad_();
  std::vector<std::vector<double>> seen;
  x.register_hook([&](const Tensor& g) {
    seen.push_back(tgt::values(g));
    return Tensor();
  });
  // x reaches the loss twice: d/dx (sum(2x) + sum(x*x)) = 2 + 2x, seen once as a whole.
  const auto xv = tgt::values(x);
  (sum(x * 2.0) + sum(x * x)).backward();
  REQUIRE(seen.size() == 1);
  for (std::size_t i = 0; i < 3; ++i) REQUIRE(std::abs(seen[0][i] - (2 + 2 * xv[i])) < 1e-12);
  tgt::require_close(x.grad(), from_vector(seen[0], Shape{3}), 0, 0);
  // A second pass: the hook sees that pass's gradient, grad() holds the sum of both.
  sum(x * 3.0).backward();
  REQUIRE(seen.size() == 2);
  for (std::size_t i = 0; i < 3; ++i) {
    REQUIRE(seen[1][i] == 3.0);
    REQUIRE(std::abs(tgt::values(x.grad())[i] - (5 + 2 * xv[i])) < 1e-12);
  }
}

TEST_CASE("a hook's replacement gradient is what flows on and what is accumulated", "[autograd][hooks]") {
  Tensor x = tgt::rand64({4}, 2).requires_grad_();
  Tensor h = x * 3.0;  // non-leaf
  h.register_hook([](const Tensor& g) { return g * 10.0; });
  x.register_hook([](const Tensor& g) { return g + 1.0; });
  sum(h * h).backward();
  // d/dh = 2h, times 10 by h's hook, times 3 through h = 3x, plus 1 by x's hook.
  const auto xv = tgt::values(x), gv = tgt::values(x.grad());
  for (std::size_t i = 0; i < 4; ++i) REQUIRE(std::abs(gv[i] - (2 * 3 * xv[i] * 10 * 3 + 1)) < 1e-9);
}

TEST_CASE("hooks run in registration order and can be removed", "[autograd][hooks]") {
  Tensor x = ones({2}, {.dtype = DType::f64}).requires_grad_();
  std::vector<int> order;
  const auto a = x.register_hook([&](const Tensor& g) {
    order.push_back(1);
    return g * 2.0;
  });
  x.register_hook([&](const Tensor& g) {
    order.push_back(2);
    return g + 1.0;  // after the doubling: 2 * 1 + 1
  });
  sum(x).backward();
  REQUIRE(order == std::vector<int>{1, 2});
  REQUIRE(tgt::values(x.grad())[0] == 3.0);
  REQUIRE(x.remove_hook(a));
  REQUIRE_FALSE(x.remove_hook(a));
  x.zero_grad();
  sum(x).backward();
  REQUIRE(order == std::vector<int>{1, 2, 2});
  REQUIRE(tgt::values(x.grad())[0] == 2.0);
}

TEST_CASE("retain_grad keeps a non-leaf's gradient; other non-leaves keep none", "[autograd][hooks]") {
  Tensor x = tgt::rand64({2, 3}, 3).requires_grad_();
  Tensor h = x * x;
  Tensor k = h * 2.0;
  h.retain_grad();
  Tensor loss = sum(k * k);
  loss.backward();
  // d loss / dh = 2k * 2 = 8h.
  tgt::require_close(h.grad(), h.detach() * 8.0, 1e-12, 0);
  REQUIRE_FALSE(k.grad().defined());
  REQUIRE(x.retain_grad().grad().defined());  // a leaf: nothing changes
  // Shared outputs: a hook on the second output of a two-output op sees only its gradient.
  Tensor y = tgt::rand64({4}, 4).requires_grad_();
  std::vector<Tensor> parts = split_heads(reshape(y, {1, 1, 4}), {1, 1}, 2);
  Tensor second = parts[1];
  second.retain_grad();
  sum(parts[0] * 5.0 + parts[1] * 7.0).backward();
  tgt::require_close(second.grad(), full({1, 1, 2}, 7.0, {.dtype = DType::f64}), 0, 0);
}

TEST_CASE("hooks: errors name the problem", "[autograd][hooks]") {
  Tensor plain = zeros({2});
  tgt::require_throws<ValueError>([&] { plain.register_hook([](const Tensor& g) { return g; }); },
                                  {"register_hook", "does not require grad"});
  tgt::require_throws<ValueError>([&] { plain.retain_grad(); }, {"retain_grad", "does not require grad"});
  Tensor x = ones({2}).requires_grad_();
  tgt::require_throws<ValueError>([&] { x.register_hook(nullptr); }, {"register_hook", "empty"});
  x.register_hook([](const Tensor&) { return ones({3}); });
  tgt::require_throws<Error>([&] { sum(x).backward(); }, {"hook 1", "leaf", "[3]", "[2]"});
  Tensor y = ones({2}).requires_grad_();
  Tensor h = y * 2.0;
  h.register_hook([](const Tensor& g) { return g.to(DType::f64); });
  tgt::require_throws<Error>([&] { sum(h).backward(); }, {"hook 1", "output of 'mul", "f64", "f32"});
}

}  // namespace test_hooks
