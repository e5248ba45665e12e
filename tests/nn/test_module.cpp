#include "util.h"

namespace test_module {

using namespace tg;

namespace {
struct TwoLayer : nn::Module {
  std::shared_ptr<nn::Linear> fc1, fc2;
  TwoLayer() : Module("TwoLayer") {
    fc1 = register_module("fc1", std::make_shared<nn::Linear>(4, 8, true, TensorOptions{.dtype = DType::f64}, 1));
    fc2 = register_module("fc2", std::make_shared<nn::Linear>(8, 2, false, TensorOptions{.dtype = DType::f64}, 2));
  }
  Tensor forward(const Tensor& x) { return fc2->forward(relu(fc1->forward(x))); }
};
}  // namespace

TEST_CASE("Module names parameters with dotted paths", "[nn][module]") {
  TwoLayer m;
  auto named = m.named_parameters();
  REQUIRE(named.size() == 3);
  REQUIRE(named[0].first == "fc1.weight");
  REQUIRE(named[1].first == "fc1.bias");
  REQUIRE(named[2].first == "fc2.weight");
  REQUIRE(m.num_parameters() == 4 * 8 + 8 + 8 * 2);
  for (auto& p : m.parameters()) REQUIRE(p.requires_grad());
  REQUIRE(m.summary().find("fc1: Linear (40 params)") != std::string::npos);
  m.eval();
  REQUIRE_FALSE(m.fc1->is_training());
  m.train();
  REQUIRE(m.fc2->is_training());
}

TEST_CASE("Linear matches x Wᵀ + b and passes gradcheck", "[nn][linear]") {
  nn::Linear lin(3, 2, true, {.dtype = DType::f64}, 5);
  Tensor x = tgt::rand64({2, 4, 3}, 6);
  Tensor y = lin(x);
  REQUIRE(y.shape() == Shape{2, 4, 2});
  auto xv = tgt::values(x), wv = tgt::values(lin.weight), bv = tgt::values(lin.bias), yv = tgt::values(y);
  for (int r = 0; r < 8; ++r)
    for (int o = 0; o < 2; ++o) {
      double ref = bv[static_cast<std::size_t>(o)];
      for (int k = 0; k < 3; ++k) ref += xv[static_cast<std::size_t>(r * 3 + k)] * wv[static_cast<std::size_t>(o * 3 + k)];
      REQUIRE(yv[static_cast<std::size_t>(r * 2 + o)] == Approx(ref).epsilon(1e-12));
    }
  Tensor xg = tgt::rand64({5, 3}, 7).requires_grad_();
  auto res = autograd::gradcheck(
      [&](const std::vector<Tensor>& in) {
        return add(matmul(in[0], in[1], false, true), in[2]);
      },
      {xg, lin.weight.detach().requires_grad_(), lin.bias.detach().requires_grad_()});
  INFO(res.report);
  REQUIRE(res.ok);
  // gradients reach the module's parameters
  sum(lin(xg)).backward();
  REQUIRE(lin.weight.grad().defined());
  REQUIRE(lin.bias.grad().shape() == Shape{2});
  lin.zero_grad();
  REQUIRE_FALSE(lin.weight.grad().defined());
  tgt::require_throws<ShapeError>([&] { lin(tgt::rand64({2, 4}, 1)); }, {"Linear", "in_features = 3", "[2, 4]"});
  tgt::require_throws<ShapeError>([] { nn::Linear(0, 3); }, {"Linear", "in=0"});
}

TEST_CASE("Sequential runs children in order; to(dtype) converts in place", "[nn][module]") {
  nn::Sequential seq;
  auto lin = std::make_shared<nn::Linear>(4, 3, true, TensorOptions{}, 3);
  seq.add(std::make_shared<nn::Wrap<nn::Linear>>(lin)).add(std::make_shared<nn::GELU>());
  REQUIRE(seq.size() == 2);
  REQUIRE(seq.named_parameters()[0].first == "0.0.weight");
  Tensor x = rand_seeded({2, 4}, 1);
  tgt::require_close(seq(x), gelu(lin->forward(x)));
  Tensor handle = lin->weight;
  seq.to(DType::f64);
  REQUIRE(handle.dtype() == DType::f64);  // the same tensor, converted in place
  REQUIRE(lin->forward(x.to(DType::f64)).dtype() == DType::f64);
}

TEST_CASE("Module::to(cuda) moves parameters in place", "[nn][module][cuda]") {
  TG_REQUIRE_CUDA();
  TwoLayer m;
  Tensor x = tgt::rand64({3, 4}, 2);
  Tensor ref = m.forward(x);
  m.to(Device::cuda());
  for (auto& p : m.parameters()) REQUIRE(p.device() == Device::cuda());
  tgt::require_close(m.forward(x.to(Device::cuda())), ref, 1e-10, 1e-12);
}

}  // namespace test_module
