// Tutorial 06: a block-sparse MLP.
//
// nn::BlockSparseLinear is a linear layer whose weight keeps only some blocks: it stores
// and multiplies those alone, so a quarter of the blocks is a quarter of the parameters and
// of the FLOPs. We train a block-sparse MLP next to a dense one on the same regression task,
// prune the trained dense MLP to the same density by block magnitude and fine-tune it, and
// save / reload a checkpoint, which restores the layout it was saved with. The program
// checks what it claims and exits non-zero if a check fails.
#include <cmath>
#include <iostream>

#include "tilegrad.h"

namespace {

constexpr std::int64_t kIn = 64, kHidden = 256, kBlock = 16;  // blocks of >= 16 on CUDA

// d -> 4d -> d with GELU, with dense layers or block-sparse ones.
template <typename Layer>
struct Mlp : tg::nn::Module {
  std::shared_ptr<Layer> fc, out;
  Mlp(std::shared_ptr<Layer> a, std::shared_ptr<Layer> b) : Module("Mlp") {
    fc = register_module("fc", std::move(a));
    out = register_module("out", std::move(b));
  }
  tg::Tensor forward(const tg::Tensor& x) { return out->forward(tg::gelu(fc->forward(x))); }
};
using DenseMlp = Mlp<tg::nn::Linear>;
using SparseMlp = Mlp<tg::nn::BlockSparseLinear>;

// Trains `model` to map x to y for `steps` AdamW steps; returns the final loss.
template <typename M>
double train(M& model, const tg::Tensor& x, const tg::Tensor& y, int steps, double lr) {
  tg::optim::AdamW opt(model.parameters(), {.lr = lr, .weight_decay = 0.0});
  double last = 0;
  for (int step = 0; step < steps; ++step) {
    opt.set_lr(tg::optim::warmup_cosine_lr(step, 10, steps, lr, lr / 20));
    const tg::Tensor loss = tg::mse_loss(model.forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step == steps - 1) last = loss.item<double>();
  }
  return last;
}

template <typename M>
double loss_of(M& model, const tg::Tensor& x, const tg::Tensor& y) {
  tg::NoGradGuard no_grad;
  const tg::Tensor loss = tg::mse_loss(model.forward(x), y);
  return loss.item<double>();
}

bool check(bool ok, const char* what) {
  std::cout << (ok ? "  ok: " : "  FAILED: ") << what << "\n";
  return ok;
}

}  // namespace

int main() {
  tg::Device dev = tg::default_device();
  const tg::TensorOptions opts{.device = dev};
  std::cout << "on " << dev << "\n";
  bool ok = true;

  // 1. Data: 1024 inputs and the outputs of a fixed random two-layer "teacher" network.
  tg::Tensor x = tg::randn_seeded({1024, kIn}, 1, opts);
  tg::nn::Linear t1(kIn, kHidden, true, opts, 2), t2(kHidden, kIn, true, opts, 3);
  tg::Tensor y;
  {
    tg::NoGradGuard no_grad;
    y = t2(tg::tanh(t1(x) * 2.0));
  }

  // 2. A layout is a block mask: here [1, 256/16, 64/16] for the d -> 4d weight [256, 64],
  // a quarter of its blocks, random (seeded). Each weight gets its own.
  tg::Layout l_fc = tg::random_layout(1, kHidden / kBlock, kIn / kBlock, kBlock, 0.25, 10);
  tg::Layout l_out = tg::random_layout(1, kIn / kBlock, kHidden / kBlock, kBlock, 0.25, 11);
  std::cout << "layout of the first weight: " << l_fc << "\n";

  SparseMlp sparse(std::make_shared<tg::nn::BlockSparseLinear>(l_fc, true, opts, 4),
                   std::make_shared<tg::nn::BlockSparseLinear>(l_out, true, opts, 5));
  DenseMlp dense(std::make_shared<tg::nn::Linear>(kIn, kHidden, true, opts, 4),
                 std::make_shared<tg::nn::Linear>(kHidden, kIn, true, opts, 5));
  std::cout << sparse << "\n" << dense << "\n";

  // 3. Train both the same way.
  const double start = loss_of(sparse, x, y);
  const double sparse_loss = train(sparse, x, y, 300, 3e-3);
  const double dense_loss = train(dense, x, y, 300, 3e-3);
  std::cout << "after 300 steps: block-sparse MLP loss " << sparse_loss << " (" << sparse.num_parameters()
            << " parameters, from " << start << "), dense MLP loss " << dense_loss << " (" << dense.num_parameters()
            << " parameters)\n";
  ok &= check(sparse_loss < 0.5 * start, "the block-sparse MLP learns (loss below half its start)");
  ok &= check(sparse.num_parameters() < dense.num_parameters() / 2, "it has less than half the parameters");

  // 4. Prune the trained dense MLP: keep the quarter of each weight's blocks with the
  // largest norms (magnitude_layout), copy them into block-sparse layers (from_dense),
  // then fine-tune. The pruned blocks' contribution is lost at first and mostly regained.
  auto prune = [](const tg::nn::Linear& lin) {
    tg::Tensor w3 = tg::reshape(lin.weight, {1, lin.out_features, lin.in_features});
    return tg::nn::BlockSparseLinear::from_dense(lin, tg::magnitude_layout(w3, kBlock, 0.25));
  };
  SparseMlp pruned(prune(*dense.fc), prune(*dense.out));
  const double after_prune = loss_of(pruned, x, y);
  const double tuned = train(pruned, x, y, 150, 1e-3);
  std::cout << "pruned to 25% of the blocks: loss " << after_prune << ", after 150 fine-tuning steps " << tuned << "\n";
  ok &= check(tuned < after_prune, "fine-tuning recovers part of what pruning lost");

  // 5. Under the module: one block-sparse product of the dense input and the stored
  // weight read transposed (no copy of W), then the bias.
  {
    tg::NoGradGuard no_grad;
    const tg::nn::BlockSparseLinear& fc = *pruned.fc;
    tg::Tensor by_hand =
        tg::matmul(tg::reshape(x, {1, 1024, kIn}), fc.weight_sparse(), tg::MatmulOptions{.transpose_y = true}) +
        fc.bias;
    const double diff = tg::max(tg::abs(tg::reshape(by_hand, {1024, kHidden}) - fc.forward(x))).item<double>();
    ok &= check(diff == 0.0, "the layer is that product plus the bias");
  }

  // 6. Checkpoints hold each layer's layout as a buffer: loading into a model built with
  // other layouts of the same block counts restores the saved ones.
  tg::nn::save(pruned, "sparse_mlp.safetensors");
  auto other_layout = [&](const tg::nn::BlockSparseLinear& like, std::uint64_t seed) {
    tg::Tensor scores = tg::rand_seeded({1, like.out_features, like.in_features}, seed);
    return tg::magnitude_layout(scores, kBlock, 0.25);  // the same count, other blocks
  };
  SparseMlp restored(std::make_shared<tg::nn::BlockSparseLinear>(other_layout(*pruned.fc, 20), true, opts),
                     std::make_shared<tg::nn::BlockSparseLinear>(other_layout(*pruned.out, 21), true, opts));
  tg::nn::load(restored, "sparse_mlp.safetensors");
  ok &= check(restored.fc->layout() == pruned.fc->layout() && restored.out->layout() == pruned.out->layout(),
              "the checkpoint restored the pruned layouts");
  ok &= check(loss_of(restored, x, y) == loss_of(pruned, x, y), "and the same outputs");
  return ok ? 0 : 1;
}
