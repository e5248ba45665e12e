// Activation modules and Sequential.
#pragma once

#include <functional>

#include "nn/module.h"
#include "ops/elementwise/elementwise.h"

namespace tg::nn {

/// A module whose forward is a Tensor -> Tensor function.
class Forward : public Module {
 public:
  using Module::Module;
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }
};

class GELU : public Forward {
 public:
  explicit GELU(GeluApprox approx = GeluApprox::None) : Forward("GELU"), approx_(approx) {}
  Tensor forward(const Tensor& x) override { return gelu(x, approx_); }

 private:
  GeluApprox approx_;
};

class ReLU : public Forward {
 public:
  ReLU() : Forward("ReLU") {}
  Tensor forward(const Tensor& x) override { return relu(x); }
};

/// Wraps any module with a `Tensor forward(const Tensor&)` (e.g. Linear) as a Forward.
template <typename M>
class Wrap : public Forward {
 public:
  explicit Wrap(std::shared_ptr<M> m) : Forward(m->type_name()), m_(register_module("0", std::move(m))) {}
  Tensor forward(const Tensor& x) override { return m_->forward(x); }

 private:
  std::shared_ptr<M> m_;
};

/// Runs its children in order; children are named "0", "1", ... in checkpoints.
class Sequential : public Forward {
 public:
  Sequential() : Forward("Sequential") {}
  /// Appends a Forward module; returns *this for chaining.
  Sequential& add(std::shared_ptr<Forward> m) {
    layers_.push_back(register_module(std::to_string(layers_.size()), std::move(m)));
    return *this;
  }
  Tensor forward(const Tensor& x) override {
    Tensor h = x;
    for (auto& l : layers_) h = l->forward(h);
    return h;
  }
  std::size_t size() const { return layers_.size(); }

 private:
  std::vector<std::shared_ptr<Forward>> layers_;
};

}  // namespace tg::nn
