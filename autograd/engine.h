// Reverse-mode differentiation.
#pragma once

#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"

namespace tg {

/// Accumulates d(root)/d(leaf) into `.grad()` of every leaf requiring grad that `root`
/// depends on (and of non-leaves marked with retain_grad()), each leaf's gradient of the
/// pass summed first and passed through its hooks (Tensor::register_hook). `grad` is the gradient of `root` (default: 1 for a one-element root; any
/// other root needs it). Only nodes on a path from `root` to such a leaf run. Unless
/// `retain_graph`, the graph's saved tensors are freed and a second backward through it
/// throws tg::ValueError. Throws tg::ValueError when root does not require grad.
void backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);
/// The same for several roots in one pass (gradients that meet are summed first, each
/// node runs once): `grads` empty (every root one-element) or one per root. Throws
/// tg::ValueError (count mismatch, a root not requiring grad), tg::ShapeError (a grad
/// not matching its root).
void backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads = {}, bool retain_graph = false);

namespace autograd {

/// The graph behind `root` as Graphviz DOT (nodes: ops and leaves, edges: data flow),
/// written through Boost.Graph.
std::string to_dot(const Tensor& root);

}  // namespace autograd
}  // namespace tg
