#include "autograd/node.h"

#include "autograd/grad_mode.h"

namespace tg::autograd {

namespace {
// The tape's clock: each recorded node takes the next number of its thread.
thread_local std::uint64_t g_next_sequence_nr = 0;
}  // namespace

std::vector<Tensor> Node::apply(const std::vector<Tensor>& grad_outputs) {
  if (released_ || !backward_) {
    TG_THROW(ValueError, "backward: the graph through '", name_,
             "' was already freed by a previous backward(); call backward(grad, /*retain_graph=*/true) "
             "the first time to backward through it again");
  }
  return backward_(grad_outputs);
}

void Node::release() {
  backward_ = nullptr;
  released_ = true;
}

const std::shared_ptr<HookList>& Node::output_hooks(std::size_t i) const {
  static const std::shared_ptr<HookList> kNone;
  return i < output_hooks_.size() ? output_hooks_[i] : kNone;
}

void Node::set_output_hooks(int i, std::shared_ptr<HookList> hooks) {
  if (output_hooks_.size() < outputs_.size()) output_hooks_.resize(outputs_.size());
  output_hooks_[static_cast<std::size_t>(i)] = std::move(hooks);
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn) {
  auto node = std::make_shared<Node>(name, g_next_sequence_nr++);
  node->next_.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge e;
    if (t.defined() && t.requires_grad()) {
      if (t.grad_fn()) {
        e.fn = t.grad_fn();
        e.output_nr = t.impl().output_nr;
      } else {
        e.leaf = t.impl_ptr();
      }
    }
    node->next_.push_back(std::move(e));
    node->inputs_.push_back(t.defined() ? TensorMeta{t.shape(), t.dtype(), t.device()} : TensorMeta{});
  }
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl& o = outputs[i].impl();
    o.requires_grad = true;
    o.grad_fn = node;
    o.output_nr = static_cast<int>(i);
    node->outputs_.push_back({o.shape, o.dtype, o.device});
  }
  node->backward_ = std::move(fn);
}

}  // namespace tg::autograd
