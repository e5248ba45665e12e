#include "autograd/hooks.h"

#include "autograd/node.h"
#include "ops/elementwise/elementwise.h"

namespace tg {

namespace autograd {

Tensor run_hooks(const HookList& list, Tensor grad, const char* what) {
  // A copy: a hook may register or remove hooks of the same tensor while it runs.
  const auto hooks = list.hooks;
  for (const auto& [id, hook] : hooks) {
    Tensor r = hook(grad);
    if (!r.defined()) continue;
    if (r.shape() != grad.shape() || r.dtype() != grad.dtype() || r.device() != grad.device()) {
      TG_THROW(Error, "backward: hook ", id, " of ", what, " returned a gradient of shape ", r.shape(), ", ", r.dtype(),
               ", ", r.device(), " for one of shape ", grad.shape(), ", ", grad.dtype(), ", ", grad.device(),
               " (a hook must return the same kind of tensor, or an undefined one to keep it)");
    }
    grad = r.detach();
  }
  return grad;
}

void accumulate_grad(TensorImpl& t, const Tensor& g) {
  Tensor cur = t.grad ? Tensor(t.grad) : Tensor();
  Tensor sum = cur.defined() ? add(cur, g) : g.detach();
  t.grad = sum.impl_ptr();
}

}  // namespace autograd

namespace {

// The tensor's hook list, made on first use and, for a non-leaf, shared with its node.
autograd::HookList& hooks_of(const Tensor& t) {
  TensorImpl& impl = t.impl();
  if (!impl.hooks) {
    impl.hooks = std::make_shared<autograd::HookList>();
    impl.hooks->owner = t.impl_ptr();
  }
  if (impl.grad_fn) impl.grad_fn->set_output_hooks(impl.output_nr, impl.hooks);
  return *impl.hooks;
}

}  // namespace

std::uint64_t Tensor::register_hook(std::function<Tensor(const Tensor&)> hook) {
  if (!requires_grad()) {
    TG_THROW(ValueError,
             "register_hook: the tensor does not require grad, so no gradient will reach the hook "
             "(requires_grad_() on a leaf, or a tensor computed from one)");
  }
  if (!hook) TG_THROW(ValueError, "register_hook: the hook is an empty function");
  autograd::HookList& list = hooks_of(*this);
  const std::uint64_t id = list.next_id++;
  list.hooks.emplace_back(id, std::move(hook));
  return id;
}

bool Tensor::remove_hook(std::uint64_t id) {
  if (!impl().hooks) return false;
  auto& hooks = impl().hooks->hooks;
  for (auto it = hooks.begin(); it != hooks.end(); ++it) {
    if (it->first == id) {
      hooks.erase(it);
      return true;
    }
  }
  return false;
}

Tensor& Tensor::retain_grad() {
  if (!requires_grad()) {
    TG_THROW(ValueError, "retain_grad: the tensor does not require grad, so it will receive no gradient");
  }
  if (is_leaf()) return *this;  // leaves keep their gradients anyway
  hooks_of(*this).retain = true;
  return *this;
}

}  // namespace tg
