// Tests of activation checkpointing (autograd/activation_checkpoint.h) and of the backward
// over several roots it uses: gradients equal to the plain computation's (inputs and
// parameters, nested checkpoints, several outputs, unused inputs, retain_graph), random
// draws replayed (nn::Dropout, attention dropout, the default generator), intermediates not
// kept, and errors.
#include <vector>

#include "util.h"

namespace test_activation_checkpoint {

using namespace tg;

namespace {

using tgt::kF64;

// A two-layer MLP with dropout between the layers (f64).
struct Mlp : nn::Module {
  std::shared_ptr<nn::Linear> a, b;
  std::shared_ptr<nn::Dropout> drop;
  explicit Mlp(double p) : Module("Mlp") {
    a = register_module("a", std::make_shared<nn::Linear>(6, 16, true, kF64, 1));
    b = register_module("b", std::make_shared<nn::Linear>(16, 6, true, kF64, 2));
    drop = register_module("drop", std::make_shared<nn::Dropout>(p, 3));
  }
  Tensor forward(const Tensor& x) { return b->forward(drop->forward(gelu(a->forward(x)))); }
};

// Gradients of every parameter of m, in order.
std::vector<Tensor> grads_of(const nn::Module& m) {
  std::vector<Tensor> g;
  for (const Tensor& p : m.parameters()) g.push_back(p.grad());
  return g;
}

void require_same_grads(const nn::Module& got, const nn::Module& want) {
  const auto g = grads_of(got), w = grads_of(want);
  REQUIRE(g.size() == w.size());
  for (std::size_t i = 0; i < g.size(); ++i) {
    INFO("parameter " << i);
    REQUIRE(g[i].defined());
    tgt::require_close(g[i], w[i], 1e-13, 1e-13);
  }
}

// Runs plain.forward and, checkpointed, ck.forward (modules built alike) on copies of x0,
// backpropagates g through both and requires equal outputs and gradients (input and
// parameters). Returns the plain run's input gradient.
template <typename M>
Tensor require_same_as_plain(M& plain, M& ck, const Tensor& x0, const Tensor& g, double tol) {
  Tensor x1 = x0.detach().requires_grad_(), x2 = x0.detach().requires_grad_();
  Tensor y1 = plain.forward(x1);
  Tensor y2 = activation_checkpoint([&ck](const Tensor& t) { return ck.forward(t); }, x2, ck.parameters());
  tgt::require_close(y2, y1, 0.0, 0.0);
  backward(y1, g);
  backward(y2, g);
  tgt::require_close(x2.grad(), x1.grad(), tol, tol);
  require_same_grads(ck, plain);
  return x1.grad();
}

}  // namespace

TEST_CASE("backward over several roots sums where they meet and runs each node once", "[autograd]") {
  Tensor x = tgt::rand64({3}, 1).requires_grad_();
  Tensor h = x * 3.0;
  Tensor y1 = h * 2.0, y2 = exp(h);
  Tensor g1 = tgt::rand64({3}, 2), g2 = tgt::rand64({3}, 3);
  backward({y1, y2}, {g1, g2});
  // d/dx = 3 (2 g1 + exp(3x) g2)
  tgt::require_close(x.grad(), (g1 * 2.0 + exp(x * 3.0) * g2) * 3.0, 1e-14, 1e-14);
  // A leaf root takes its gradient directly; counts must match.
  Tensor leaf = tgt::rand64({2}, 4).requires_grad_();
  Tensor s = sum(leaf * leaf);
  backward({s, leaf}, {Tensor(), ones({2}, kF64)});
  tgt::require_close(leaf.grad(), leaf * 2.0 + 1.0, 1e-14, 1e-14);
  tgt::require_throws<ValueError>([&] { backward({s, leaf}, {Tensor()}); }, {"backward", "2 roots", "1 gradients"});
}

TEST_CASE("activation_checkpoint gives the plain computation's gradients", "[autograd][checkpoint_act]") {
  Mlp plain(0.0), ck(0.0);
  Tensor x0 = tgt::rand64({4, 5, 6}, 10);
  Tensor g = tgt::rand64({4, 5, 6}, 11);
  const Tensor dx = require_same_as_plain(plain, ck, x0, g, 1e-13);

  // retain_graph: a second backward recomputes again and accumulates once more.
  Mlp again(0.0);
  Tensor x3 = x0.detach().requires_grad_();
  Tensor y3 = activation_checkpoint([&](const Tensor& t) { return again.forward(t); }, x3, again.parameters());
  backward(y3, g, /*retain_graph=*/true);
  backward(y3, g);
  tgt::require_close(x3.grad(), dx * 2.0, 1e-13, 1e-13);
}

TEST_CASE("activation_checkpoint gradcheck", "[autograd][checkpoint_act][gradcheck]") {
  // Weights passed as inputs, so that gradcheck perturbs them too; one checkpoint nested
  // in another.
  auto f = [](const std::vector<Tensor>& in) {
    auto inner = [](const std::vector<Tensor>& v) { return std::vector<Tensor>{tanh(matmul(v[0], v[1]))}; };
    auto outer = [&](const std::vector<Tensor>& v) {
      Tensor h = activation_checkpoint(inner, {v[0], v[1]})[0];
      return std::vector<Tensor>{matmul(h * h, v[2]), sigmoid(h)};
    };
    std::vector<Tensor> o = activation_checkpoint(outer, in);
    return sum(o[0]) + sum(o[1] * o[1]);
  };
  auto r = autograd::gradcheck(f, {tgt::rand64({3, 4}, 20).requires_grad_(), tgt::rand64({4, 5}, 21).requires_grad_(),
                                   tgt::rand64({5, 2}, 22).requires_grad_()});
  INFO(r.report);
  REQUIRE(r.ok);
}

TEST_CASE("activation_checkpoint replays dropout masks and random draws", "[autograd][checkpoint_act]") {
  // nn::Dropout: the recomputation uses the first run's mask, and the module's counter
  // advances once per forward, as without the checkpoint.
  Mlp plain(0.5), ck(0.5);
  Tensor x0 = tgt::rand64({8, 6}, 30);
  Tensor g = tgt::rand64({8, 6}, 31);
  for (int step = 0; step < 3; ++step) {
    INFO("step " << step);
    plain.zero_grad();
    ck.zero_grad();
    require_same_as_plain(plain, ck, x0, g, 1e-13);
  }

  // The default generator (tg::rand without a seed).
  auto noisy = [](const Tensor& t) { return t * rand(t.shape(), kF64); };
  Tensor xa = x0.detach().requires_grad_(), xb = x0.detach().requires_grad_();
  manual_seed(77);
  Tensor ya = noisy(xa);
  Tensor after_plain = rand({2}, kF64);
  manual_seed(77);
  Tensor yb = activation_checkpoint(noisy, xb);
  backward(yb, g);
  Tensor after_ck = rand({2}, kF64);
  tgt::require_close(yb, ya, 0.0, 0.0);
  backward(ya, g);
  tgt::require_close(xb.grad(), xa.grad(), 0.0, 0.0);   // the same noise multiplied back
  tgt::require_close(after_ck, after_plain, 0.0, 0.0);  // the recomputation drew nothing new

  // Attention dropout inside MultiHeadAttention.
  nn::MultiHeadAttentionOptions o{.dropout = 0.3, .causal = true, .tensor = kF64, .seed = 5};
  nn::MultiHeadAttention mp(8, 2, o), mc(8, 2, o);
  require_same_as_plain(mp, mc, tgt::rand64({2, 8, 8}, 40), tgt::rand64({2, 8, 8}, 41), 1e-12);
}

TEST_CASE("activation_checkpoint: parameters only, several outputs, unused inputs", "[autograd][checkpoint_act]") {
  nn::Linear lin(4, 3, true, kF64, 50), ref(4, 3, true, kF64, 50);
  Tensor x = tgt::rand64({5, 4}, 51);  // no gradient wanted for x
  Tensor unused = tgt::rand64({2}, 52).requires_grad_();
  auto fn = [&](const std::vector<Tensor>& in) {
    Tensor y = lin(in[0]);
    // an integer output, an input returned as is, and a floating output
    return std::vector<Tensor>{y, to_dtype(y, DType::i64), in[1], y * y};
  };
  std::vector<Tensor> out = activation_checkpoint(fn, {x, unused}, lin.parameters());
  REQUIRE(out.size() == 4);
  REQUIRE(out[1].dtype() == DType::i64);
  REQUIRE_FALSE(out[1].requires_grad());
  REQUIRE(out[0].requires_grad());
  // The returned input is a new handle: `unused` itself stays a leaf.
  REQUIRE(unused.grad_fn() == nullptr);
  backward({out[0], out[3]}, {ones({5, 3}, kF64), ones({5, 3}, kF64)});
  Tensor yr = ref(x);
  backward(sum(yr + yr * yr));
  tgt::require_close(lin.weight.grad(), ref.weight.grad(), 1e-13, 1e-13);
  tgt::require_close(lin.bias.grad(), ref.bias.grad(), 1e-13, 1e-13);
  // Reached only through the input returned as is, whose gradient was not asked for: none
  // or zeros.
  if (unused.grad().defined()) REQUIRE(tgt::max_abs_diff(unused.grad(), zeros({2}, kF64)) == 0.0);
}

TEST_CASE("activation_checkpoint keeps no intermediate activations", "[autograd][checkpoint_act]") {
  // Ten element-wise steps on 1 MiB tensors: the plain graph keeps each step's output for
  // backward, the checkpointed one only the input and the output.
  const Shape shape{256, 512};
  auto chain = [](const Tensor& t) {
    Tensor h = t;
    for (int i = 0; i < 10; ++i) h = tanh(h * 1.01);
    return h;
  };
  Tensor x = tgt::rand64(shape, 60).requires_grad_();
  auto in_use = [] { return memory_stats(Device::cpu()).bytes_in_use; };
  const std::size_t base = in_use();
  std::size_t plain_bytes, ck_bytes;
  Tensor gp, gc;
  {
    Tensor y = chain(x);
    plain_bytes = in_use() - base;
    backward(sum(y));
    gp = x.grad();
  }
  x.zero_grad();
  {
    Tensor y = activation_checkpoint(chain, x);
    ck_bytes = in_use() - base;
    backward(sum(y));
    gc = x.grad();
  }
  INFO("plain " << plain_bytes << " bytes, checkpointed " << ck_bytes);
  const std::size_t one = static_cast<std::size_t>(shape.numel()) * 8;
  CHECK(plain_bytes >= 10 * one);
  CHECK(ck_bytes <= 2 * one);
  tgt::require_close(gc, gp, 1e-14, 1e-14);
}

TEST_CASE("activation_checkpoint errors", "[autograd][checkpoint_act]") {
  Tensor x = tgt::rand64({3}, 70).requires_grad_();
  tgt::require_throws<ValueError>(
      [&] { activation_checkpoint([](const std::vector<Tensor>&) { return std::vector<Tensor>{}; }, {x}); },
      {"activation_checkpoint", "no tensor"});
  tgt::require_throws<ValueError>(
      [&] {
        activation_checkpoint([](const std::vector<Tensor>& in) { return std::vector<Tensor>{in[0], Tensor()}; }, {x});
      },
      {"activation_checkpoint", "output 1", "undefined"});
  // A recomputation that draws more random numbers than the first run.
  int calls = 0;
  auto changing = [&](const Tensor& t) {
    Tensor r = t * rand({3}, kF64);
    if (++calls > 1) r = r * rand({3}, kF64);
    return r;
  };
  Tensor y = activation_checkpoint(changing, x);
  tgt::require_throws<Error>([&] { backward(sum(y)); }, {"activation checkpoint", "more random numbers"});
  // Nothing requires grad: fn simply runs.
  Tensor plain = activation_checkpoint([](const Tensor& t) { return t * 2.0; }, x.detach());
  REQUIRE_FALSE(plain.requires_grad());
}

TEST_CASE("activation_checkpoint on CUDA gives the plain computation's gradients", "[autograd][checkpoint_act][cuda]") {
  TG_REQUIRE_CUDA();
  // A transformer-like block on the GPU (bf16 attention on tensor cores, dropout in the
  // attention and after it), checkpointed and not, from the same seeds.
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(dt);
    const TensorOptions o{.dtype = dt, .device = Device::cuda()};
    nn::MultiHeadAttentionOptions ao{.dropout = 0.2, .causal = true, .tensor = o, .seed = 9};
    nn::MultiHeadAttention ap(128, 2, ao), ac(128, 2, ao);
    nn::Dropout dp(0.1, 4), dc(0.1, 4);
    Tensor x0 = rand_seeded({2, 128, 128}, 80, o, -1, 1), g = rand_seeded({2, 128, 128}, 81, o, -1, 1);
    Tensor x1 = x0.detach().requires_grad_(), x2 = x0.detach().requires_grad_();
    Tensor y1 = x1 + dp(ap(x1));
    Tensor y2 = activation_checkpoint([&](const Tensor& t) { return t + dc(ac(t)); }, x2, ac.parameters());
    REQUIRE(tgt::max_abs_diff(y2, y1) == 0.0);
    backward(y1, g);
    backward(y2, g);
    // The same kernels on the same values: equal up to the order of atomics in the kernels.
    const double tol = dt == DType::bf16 ? 2e-2 : 1e-5;
    tgt::require_close(x2.grad(), x1.grad(), tol, tol);
    const auto pc = ac.parameters(), pp = ap.parameters();
    for (std::size_t i = 0; i < pc.size(); ++i) tgt::require_close(pc[i].grad(), pp[i].grad(), tol, tol);
  }
}

}  // namespace test_activation_checkpoint
