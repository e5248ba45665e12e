// The autograd members of Tensor.
#include "autograd/engine.h"
#include "core/tensor.h"

namespace tg {

Tensor& Tensor::requires_grad_(bool on) {
  TensorImpl& t = impl();
  if (on && !is_floating(t.dtype)) {
    TG_THROW(DTypeError, "requires_grad_: only floating tensors can require gradients, got dtype ", t.dtype);
  }
  if (!on && t.grad_fn) {
    TG_THROW(ValueError, "requires_grad_: cannot turn off gradients of a non-leaf tensor (produced by '",
             t.grad_fn->name(), "'); use detach()");
  }
  t.requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const {
  const auto& g = impl().grad;
  return g ? Tensor(g) : Tensor();
}

void Tensor::set_grad(const Tensor& g) {
  if (g.defined() && (g.shape() != shape() || g.dtype() != dtype() || g.device() != device())) {
    TG_THROW(ShapeError, "set_grad: gradient must match the tensor (shape ", shape(), ", ", dtype(), ", ",
             device(), "), got shape ", g.shape(), ", ", g.dtype(), ", ", g.device());
  }
  impl().grad = g.defined() ? g.impl_ptr() : nullptr;
}

void Tensor::zero_grad() { impl().grad = nullptr; }

void Tensor::backward(const Tensor& grad, bool retain_graph) const { tg::backward(*this, grad, retain_graph); }

}  // namespace tg
