// The autograd graph: one Node per recorded op execution.
//
// The tape is the per-thread sequence of recorded nodes: each node gets the next sequence
// number of its thread, so descending sequence numbers are a topological order of any
// graph recorded on one thread. Nodes are owned by the tensors they produced (and by the
// nodes downstream of them), so a graph nobody can reach is freed at once: a training loop
// that never calls backward (evaluation without NoGradGuard) does not leak.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tg::autograd {

struct HookList;

/// Where the gradient of one op input goes: into another node's output, or into a leaf.
struct Edge {
  std::shared_ptr<Node> fn;          ///< producer of the input (non-leaf), or null
  int output_nr = 0;                 ///< which output of `fn`
  std::shared_ptr<TensorImpl> leaf;  ///< the input itself when it is a leaf requiring grad
  bool valid() const { return fn != nullptr || leaf != nullptr; }
};

/// Given the gradients of every output (zeros where none flowed), returns one gradient
/// per input (an undefined Tensor where an input needs none).
using BackwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs)>;

struct TensorMeta {
  Shape shape;
  DType dtype = DType::f32;
  Device device;
};

class Node {
 public:
  Node(std::string name, std::uint64_t sequence_nr) : name_(std::move(name)), seq_(sequence_nr) {}
  const std::string& name() const { return name_; }
  std::uint64_t sequence_nr() const { return seq_; }
  const std::vector<Edge>& next_edges() const { return next_; }
  const std::vector<TensorMeta>& inputs() const { return inputs_; }
  const std::vector<TensorMeta>& outputs() const { return outputs_; }
  bool released() const { return released_; }

  /// Runs the backward function; throws tg::ValueError when the graph was freed.
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs);
  /// Drops the backward function and everything it saved.
  void release();
  /// The hooks of output i (null when it has none), shared with the tensor.
  const std::shared_ptr<HookList>& output_hooks(std::size_t i) const;
  void set_output_hooks(int i, std::shared_ptr<HookList> hooks);

 private:
  friend void record(const char*, const std::vector<Tensor>&, const std::vector<Tensor>&, BackwardFn);
  std::string name_;
  std::uint64_t seq_;
  std::vector<Edge> next_;
  std::vector<TensorMeta> inputs_;
  std::vector<TensorMeta> outputs_;
  BackwardFn backward_;
  std::vector<std::shared_ptr<HookList>> output_hooks_;  ///< per output; empty until a hook is set
  bool released_ = false;
};

/// True when grad mode is on and any of `inputs` requires grad: the op must record.
bool needs_grad(const std::vector<Tensor>& inputs);

/// Records an op: makes `outputs` non-leaves produced by a new node named `name` whose
/// backward is `fn`. Call only when needs_grad(inputs). `fn` must capture saved tensors
/// through `detach()` so that the graph has no reference cycles.
void record(const char* name, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs, BackwardFn fn);

}  // namespace tg::autograd
