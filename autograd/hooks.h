// Gradient hooks: functions a tensor calls with its gradient during backward
// (Tensor::register_hook), and the retained gradients of non-leaf tensors
// (Tensor::retain_grad). A tensor's hooks live in one HookList that its TensorImpl holds,
// and, for a non-leaf, the node that produced it too (the engine reaches a non-leaf's
// gradient through that node, not through the tensor).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tg::autograd {

/// Called with a tensor's gradient; returns a replacement of the same shape, dtype and
/// device, or an undefined tensor to keep the gradient as it is.
using GradHook = std::function<Tensor(const Tensor& grad)>;

struct HookList {
  std::vector<std::pair<std::uint64_t, GradHook>> hooks;  ///< in registration order
  std::uint64_t next_id = 1;
  bool retain = false;              ///< a non-leaf keeps its gradient in grad()
  std::weak_ptr<TensorImpl> owner;  ///< where a retained gradient goes
};

/// The gradient after every hook of `list` (in registration order), checked against
/// `grad`'s shape, dtype and device: Error naming `what` when a hook returns another.
Tensor run_hooks(const HookList& list, Tensor grad, const char* what);

/// Adds g to t's accumulated gradient (a fresh tensor each time, so that a gradient a
/// caller holds from an earlier backward stays as it was).
void accumulate_grad(TensorImpl& t, const Tensor& g);

}  // namespace tg::autograd
