// tilegrad demo: builds a small graph, runs backward, prints values, gradients and the
// memory pool statistics. Runs on the GPU when one is present.
#include <iostream>

#include <tilegrad/tilegrad.h>

int main(int argc, char** argv) {
  tg::Device dev = argc > 1 ? tg::Device::parse(argv[1]) : tg::default_device();
  std::cout << "tilegrad demo on " << dev << "\n\n";

  // A two-layer perceptron on a tiny batch: y = softmax(gelu(x W1 + b1) W2).
  tg::manual_seed(0);
  tg::Tensor x = tg::randn({4, 8}, {.device = dev});
  tg::Tensor w1 = tg::randn({8, 16}, {.device = dev}, 0.0, 0.3).requires_grad_().set_name("W1");
  tg::Tensor b1 = tg::zeros({16}, {.device = dev}).requires_grad_().set_name("b1");
  tg::Tensor w2 = tg::randn({16, 3}, {.device = dev}, 0.0, 0.3).requires_grad_().set_name("W2");
  tg::Tensor target = tg::from_vector<std::int64_t>({0, 2, 1, 2}, {4}, {.dtype = tg::DType::i64, .device = dev});

  tg::Tensor h = tg::gelu(tg::matmul(x, w1) + b1);
  tg::Tensor logits = tg::matmul(h, w2);
  tg::Tensor loss = tg::cross_entropy(logits, target);

  std::cout << "probabilities = " << tg::softmax(logits) << "\n\n";
  std::cout << "loss = " << loss << "\n\n";
  loss.backward();
  std::cout << "dloss/db1 = " << b1.grad() << "\n\n";
  std::cout << "dloss/dW2 = " << w2.grad() << "\n\n";

  // One SGD step must lower the loss.
  {
    tg::NoGradGuard no_grad;
    for (tg::Tensor* p : {&w1, &b1, &w2}) {
      tg::Tensor updated = *p - p->grad() * 0.5;
      tg::copy_bytes(*p, updated);
    }
    tg::Tensor loss2 = tg::cross_entropy(tg::matmul(tg::gelu(tg::matmul(x, w1) + b1), w2), target);
    std::cout << "loss after one SGD step = " << loss2.item<float>() << " (was " << loss.item<float>() << ")\n\n";
  }

  std::cout << "graph (Graphviz DOT):\n" << tg::autograd::to_dot(loss) << "\n";
  std::cout << "memory on " << dev << ": " << tg::memory_stats(dev) << "\n";
  return 0;
}
