// The backward pass: run the recorded nodes the root depends on in reverse tape order.
#include "autograd/engine.h"

#include "autograd/hooks.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "ops/elementwise/elementwise.h"
#include "ops/factory/factory.h"

namespace tg {

namespace {

using autograd::Node;

// Adds `g` into the slot, converting dtype/device where an op produced a gradient in
// another dtype than the tensor it flows to would use.
void accumulate(Tensor& slot, const Tensor& g) {
  if (!g.defined()) return;
  slot = slot.defined() ? add(slot, g) : g;
}

void check_grad(const Node& node, std::size_t i, const Tensor& g) {
  const autograd::TensorMeta& m = node.inputs()[i];
  if (g.shape() != m.shape || g.dtype() != m.dtype || g.device() != m.device) {
    TG_THROW(Error, "backward of '", node.name(), "' returned a gradient of shape ", g.shape(), ", ", g.dtype(),
             ", ", g.device(), " for input ", i, " of shape ", m.shape, ", ", m.dtype, ", ", m.device,
             " (a bug in that op)");
  }
}

// The gradients that reach leaves in one pass, summed per leaf (in the order they were
// first reached) and added to grad() at the end, after the leaf's hooks saw the sum.
struct LeafGrads {
  std::vector<std::pair<std::shared_ptr<TensorImpl>, Tensor>> sums;
  std::unordered_map<TensorImpl*, std::size_t> at;
  void add_to(const std::shared_ptr<TensorImpl>& leaf, const Tensor& g) {
    auto [it, fresh] = at.emplace(leaf.get(), sums.size());
    if (fresh) sums.emplace_back(leaf, Tensor());
    accumulate(sums[it->second].second, g);
  }
  void flush() {
    for (auto& [leaf, g] : sums) {
      if (leaf->hooks) g = autograd::run_hooks(*leaf->hooks, g, "a leaf tensor");
      autograd::accumulate_grad(*leaf, g);
    }
  }
};

// The gradient a root starts with: `grad` checked against it, or 1 for a one-element root.
Tensor root_gradient(const Tensor& root, const Tensor& grad) {
  if (!root.defined()) TG_THROW(ValueError, "backward: root is an undefined tensor");
  if (!root.requires_grad()) {
    TG_THROW(ValueError, "backward: the tensor does not require grad and has no grad_fn (did you forget "
                         "requires_grad_() on a leaf, or compute it under NoGradGuard?)");
  }
  if (!grad.defined()) {
    if (root.numel() != 1) {
      TG_THROW(ShapeError, "backward: grad can be implicit only for a one-element root, got shape ", root.shape(),
               "; pass grad explicitly");
    }
    return ones(root.shape(), {.dtype = root.dtype(), .device = root.device()});
  }
  if (grad.shape() != root.shape() || grad.dtype() != root.dtype() || grad.device() != root.device()) {
    TG_THROW(ShapeError, "backward: grad must match root (shape ", root.shape(), ", ", root.dtype(), ", ",
             root.device(), "), got shape ", grad.shape(), ", ", grad.dtype(), ", ", grad.device());
  }
  return grad;
}

}  // namespace

void backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  backward(std::vector<Tensor>{root}, std::vector<Tensor>{grad}, retain_graph);
}

void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  if (!grads.empty() && grads.size() != roots.size()) {
    TG_THROW(ValueError, "backward: ", roots.size(), " roots but ", grads.size(), " gradients (give one per root, "
             "or none)");
  }
  std::vector<Tensor> root_grads;
  for (std::size_t r = 0; r < roots.size(); ++r) {
    root_grads.push_back(root_gradient(roots[r], grads.empty() ? Tensor() : grads[r]));
  }

  NoGradGuard no_grad;
  // Roots that are leaves take their gradient at once; the others seed the pass.
  std::vector<std::shared_ptr<Node>> nodes;
  std::unordered_set<Node*> seen;
  std::vector<std::shared_ptr<Node>> stack;
  std::unordered_map<Node*, std::vector<Tensor>> pending;
  LeafGrads leaves;
  for (std::size_t r = 0; r < roots.size(); ++r) {
    const Tensor& root = roots[r];
    if (!root.grad_fn()) {
      leaves.add_to(root.impl_ptr(), root_grads[r]);
      continue;
    }
    auto& slots = pending[root.grad_fn().get()];
    slots.resize(root.grad_fn()->outputs().size());
    accumulate(slots[static_cast<std::size_t>(root.impl().output_nr)], root_grads[r]);
    if (seen.insert(root.grad_fn().get()).second) stack.push_back(root.grad_fn());
  }

  // Collect the nodes reachable from the roots.
  while (!stack.empty()) {
    auto n = std::move(stack.back());
    stack.pop_back();
    if (n->released()) n->apply({});  // throws the "already freed" error
    for (const auto& e : n->next_edges()) {
      if (e.fn && seen.insert(e.fn.get()).second) stack.push_back(e.fn);
    }
    nodes.push_back(std::move(n));
  }
  // Descending sequence number = reverse tape order: every consumer runs before its producers.
  std::sort(nodes.begin(), nodes.end(),
            [](const auto& a, const auto& b) { return a->sequence_nr() > b->sequence_nr(); });

  // Prune: a node matters only if some path from it reaches a leaf requiring grad.
  std::unordered_set<Node*> useful;
  for (auto it = nodes.rbegin(); it != nodes.rend(); ++it) {  // producers first
    for (const auto& e : (*it)->next_edges()) {
      if (e.leaf || (e.fn && useful.count(e.fn.get()))) {
        useful.insert(it->get());
        break;
      }
    }
  }

  for (const auto& node : nodes) {
    auto it = pending.find(node.get());
    if (it == pending.end() || !useful.count(node.get())) {
      if (!retain_graph) node->release();
      continue;
    }
    std::vector<Tensor> grad_out = std::move(it->second);
    pending.erase(it);
    grad_out.resize(node->outputs().size());
    for (std::size_t i = 0; i < grad_out.size(); ++i) {
      const auto& hooks = node->output_hooks(i);
      if (hooks && grad_out[i].defined()) {
        grad_out[i] = autograd::run_hooks(*hooks, grad_out[i], ("output of '" + node->name() + "'").c_str());
        if (hooks->retain) {
          if (auto owner = hooks->owner.lock()) autograd::accumulate_grad(*owner, grad_out[i]);
        }
      }
      if (!grad_out[i].defined()) {
        const auto& m = node->outputs()[i];
        grad_out[i] = zeros(m.shape, {.dtype = m.dtype, .device = m.device});
      }
    }
    std::vector<Tensor> grad_in = node->apply(grad_out);
    grad_out.clear();
    if (!retain_graph) node->release();
    if (grad_in.size() != node->next_edges().size()) {
      TG_THROW(Error, "backward of '", node->name(), "' returned ", grad_in.size(), " gradients for ",
               node->next_edges().size(), " inputs (a bug in that op)");
    }
    for (std::size_t i = 0; i < grad_in.size(); ++i) {
      const auto& e = node->next_edges()[i];
      if (!e.valid() || !grad_in[i].defined()) continue;
      check_grad(*node, i, grad_in[i]);
      if (e.leaf) {
        leaves.add_to(e.leaf, grad_in[i]);
      } else if (useful.count(e.fn.get())) {
        auto& slots = pending[e.fn.get()];
        slots.resize(e.fn->outputs().size());
        accumulate(slots[static_cast<std::size_t>(e.output_nr)], grad_in[i]);
      }
    }
  }
  leaves.flush();
}

}  // namespace tg
