// Tutorial 03: training an MLP on a synthetic problem.
//
// Two interleaved spirals (a classic non-linear classification task). We build a model
// from nn modules, train it with AdamW (weight decay on the weight matrices only) and a
// warm-up + cosine schedule, keep a moving average of the weights, evaluate, and save /
// reload a checkpoint.
#include <cmath>
#include <iostream>

#include "tilegrad.h"

int main() {
  tg::Device dev = tg::default_device();
  std::cout << "training on " << dev << "\n";

  // 1. Data: 2 classes x 200 points on two spirals, with a little noise.
  const int n = 200;
  std::vector<float> xs;
  std::vector<std::int64_t> ys;
  for (int c = 0; c < 2; ++c)
    for (int i = 0; i < n; ++i) {
      double r = 0.1 + 0.9 * i / n, t = 3.0 * i / n * 3.14159 + c * 3.14159;
      double noise = 0.03 * (tg::philox::uniform(42, static_cast<std::uint64_t>(c), static_cast<std::uint64_t>(i)) - 0.5);
      xs.push_back(static_cast<float>(r * std::cos(t) + noise));
      xs.push_back(static_cast<float>(r * std::sin(t) + noise));
      ys.push_back(c);
    }
  tg::Tensor x = tg::from_vector(xs, {2 * n, 2}, {.device = dev});
  tg::Tensor y = tg::from_vector(ys, {2 * n}, {.dtype = tg::DType::i64, .device = dev});

  // 2. Model: Sequential of Linear + GELU layers. Modules own named parameters.
  tg::nn::Sequential model;
  auto lin = [&](std::int64_t i, std::int64_t o, std::uint64_t s) {
    return std::make_shared<tg::nn::Wrap<tg::nn::Linear>>(
        std::make_shared<tg::nn::Linear>(i, o, true, tg::TensorOptions{.device = dev}, s));
  };
  model.add(lin(2, 64, 1)).add(std::make_shared<tg::nn::GELU>()).add(lin(64, 64, 2))
       .add(std::make_shared<tg::nn::GELU>()).add(lin(64, 2, 3));
  std::cout << model << "\n";

  // 3. Train: forward, loss, zero_grad, backward, step. Parameter groups: the weight
  //    matrices decay, biases do not (decay_groups); a moving average of the weights is
  //    updated after each step, to evaluate with below.
  const int steps = 300;
  tg::optim::AdamW opt(tg::optim::decay_groups(model.parameters(), 1e-4), {.lr = 1e-2});
  tg::optim::ExponentialMovingAverage ema(model.parameters(), 0.98);
  for (int step = 0; step < steps; ++step) {
    opt.set_lr(tg::optim::warmup_cosine_lr(step, 20, steps, 1e-2, 1e-4));
    tg::Tensor loss = tg::cross_entropy(model(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
    ema.update();
    // item() copies the loss to the host and so waits for the GPU to finish the step. Here
    // that happens every 50 steps; a loop that reads its loss every step lets the GPU run
    // ahead with loss.item_async(), read once the next step is queued (examples/train_gpt.cpp).
    if (step % 50 == 0 || step == steps - 1) std::cout << "step " << step << " loss " << loss.item<float>() << "\n";
  }

  // 4. Evaluate: accuracy of the argmax (computed on the host), with the last weights and
  //    with their moving average (Swap puts the average in the parameters for its scope).
  tg::NoGradGuard no_grad;
  auto accuracy = [&] {
    std::vector<float> logits = model(x).to_vector<float>();
    int correct = 0;
    for (int i = 0; i < 2 * n; ++i)
      correct += (logits[2 * i + 1] > logits[2 * i]) == (ys[static_cast<std::size_t>(i)] == 1);
    return correct / double(2 * n);
  };
  const double acc = accuracy();
  double acc_ema = 0;
  {
    tg::optim::ExponentialMovingAverage::Swap swap(ema);
    acc_ema = accuracy();
  }
  std::cout << "accuracy " << acc << " (moving average of the weights: " << acc_ema << ")\n";

  // 5. Checkpoint: save, perturb, load back.
  tg::nn::save(model, "mlp.safetensors");
  tg::Tensor w = model.parameters()[0];
  tg::copy_bytes(w, tg::zeros_like(w));
  tg::nn::load(model, "mlp.safetensors");
  std::cout << "reloaded checkpoint; accuracy still " << acc << "\n";
  return acc > 0.9 ? 0 : 1;
}
