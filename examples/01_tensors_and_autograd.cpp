// Tutorial 01: tensors and autograd.
//
// Read top to bottom; every step prints what it made. Build and run:
//   cmake --preset release && cmake --build --preset release
//   build/release/examples/01_tensors_and_autograd
#include <fstream>
#include <iostream>

#include "tilegrad.h"

int main() {
  // 1. Tensors are contiguous n-d arrays with a dtype and a device. Factories take
  //    options as designated initialisers.
  tg::Tensor a = tg::arange(6, {.dtype = tg::DType::f32}).to(tg::DType::f32);
  tg::Tensor m = tg::reshape(a, {2, 3});
  std::cout << "m = " << m << "\n";

  // 2. Random numbers come from a counter-based generator: the same seed gives the
  //    same numbers on the CPU and on the GPU.
  tg::Tensor r = tg::rand_seeded({2, 3}, /*seed=*/42);
  std::cout << "r = " << r << "\n";

  // 3. Element-wise ops broadcast a trailing row vector, like a bias.
  tg::Tensor bias = tg::from_vector<float>({10, 20, 30}, {3});
  std::cout << "m + bias = " << (m + bias) << "\n";

  // 4. Mark leaves that need gradients, compute, then call backward().
  tg::Tensor w = tg::from_vector<float>({0.5f, -1.0f, 2.0f}, {3, 1}).requires_grad_().set_name("w");
  tg::Tensor y = tg::matmul(m, w);           // [2, 1]
  tg::Tensor loss = tg::sum(tg::tanh(y));    // a scalar
  std::cout << "loss = " << loss << "\n";
  loss.backward();
  std::cout << "dloss/dw = " << w.grad() << "\n";

  // 5. Gradients accumulate until you clear them, like in PyTorch.
  tg::sum(tg::matmul(m, w)).backward();
  std::cout << "accumulated dloss/dw = " << w.grad() << "\n";
  w.zero_grad();

  // 6. The graph can be exported as Graphviz DOT (render with `dot -Tpng graph.dot`).
  tg::Tensor z = tg::sum(tg::relu(tg::matmul(m, w)) * 3.0);
  std::ofstream("graph.dot") << tg::autograd::to_dot(z);
  std::cout << "wrote graph.dot\n";

  // 7. Inside a NoGradGuard nothing is recorded (inference, optimizer steps).
  {
    tg::NoGradGuard no_grad;
    tg::Tensor p = tg::matmul(m, w);
    std::cout << "under NoGradGuard requires_grad = " << p.requires_grad() << "\n";
  }

  // 8. gradcheck compares backward with finite differences (f64, CPU).
  tg::Tensor x64 = tg::rand_seeded({3, 4}, 7, {.dtype = tg::DType::f64}).requires_grad_();
  auto check = tg::autograd::gradcheck([](const std::vector<tg::Tensor>& in) { return tg::softmax(in[0]); }, {x64});
  std::cout << "gradcheck(softmax) " << (check ? "passed" : "FAILED: " + check.report) << "\n";

  // 9. Activation checkpointing trades compute for memory: the function's intermediate
  // results are not kept for backward but recomputed there (dropout masks repeat). Pass
  // the parameters the function reads, like a module's parameters().
  auto layer = [&w](const tg::Tensor& in) { return tg::tanh(tg::matmul(tg::tanh(in), w)); };
  tg::Tensor mc = m.detach().requires_grad_();
  tg::sum(tg::activation_checkpoint(layer, mc, {w})).backward();
  tg::Tensor dm_checkpointed = mc.grad();
  mc.zero_grad();
  tg::sum(layer(mc)).backward();
  std::cout << "checkpointed and plain gradients differ by at most "
            << tg::max(tg::abs(dm_checkpointed - mc.grad())).item<float>() << "\n";
  w.zero_grad();

  // 10. Hooks see gradients as backward computes them: an intermediate's gradient before it
  // flows on (here halved: what reaches w halves too), and retain_grad() keeps
  // one in grad() for a look afterwards (intermediates keep none otherwise).
  tg::Tensor hidden = tg::tanh(tg::matmul(m, w));
  hidden.retain_grad();
  const std::uint64_t halve = hidden.register_hook([](const tg::Tensor& g) { return g * 0.5; });
  tg::sum(hidden * 5.0).backward();
  std::cout << "d/dhidden, kept by retain_grad (after the halving hook) = " << hidden.grad() << "\n";
  hidden.remove_hook(halve);
  w.zero_grad();

  // 11. Errors say which op, which argument, what was expected and what was given.
  try {
    tg::matmul(tg::zeros({2, 3}), tg::zeros({4, 5}));
  } catch (const tg::Error& e) {
    std::cout << "error: " << e.what() << "\n";
  }
  return check ? 0 : 1;
}
