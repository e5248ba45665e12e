#include "autograd/activation_checkpoint.h"

#include <memory>

#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "core/dtype.h"
#include "runtime/rng_replay.h"

namespace tg {

namespace {

// Sets grad mode for a scope (backward runs under NoGradGuard; the recomputation records).
class GradModeScope {
 public:
  explicit GradModeScope(bool on) : prev_(grad_enabled()) { set_grad_enabled(on); }
  ~GradModeScope() { set_grad_enabled(prev_); }
  GradModeScope(const GradModeScope&) = delete;
  GradModeScope& operator=(const GradModeScope&) = delete;

 private:
  bool prev_;
};

void check_outputs(const std::vector<Tensor>& outs) {
  if (outs.empty()) TG_THROW(ValueError, "activation_checkpoint: fn returned no tensor");
  for (std::size_t i = 0; i < outs.size(); ++i) {
    if (!outs[i].defined()) TG_THROW(ValueError, "activation_checkpoint: output ", i, " of fn is undefined");
  }
}

}  // namespace

std::vector<Tensor> activation_checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                                          const std::vector<Tensor>& params) {
  std::vector<Tensor> all = inputs;
  all.insert(all.end(), params.begin(), params.end());
  if (!autograd::needs_grad(all)) {
    std::vector<Tensor> outs = fn(inputs);
    check_outputs(outs);
    return outs;
  }

  // The first run: no graph, the random offsets it draws kept for the recomputation.
  auto offsets = std::make_shared<std::vector<std::uint64_t>>();
  std::vector<Tensor> outs;
  {
    NoGradGuard no_grad;
    RngRecord record(offsets);
    outs = fn(inputs);
  }
  check_outputs(outs);
  // Fresh handles: an output may be an input itself or a tensor fn keeps (a cached buffer),
  // whose own autograd state must not change.
  std::vector<Tensor> recorded;
  std::vector<std::size_t> where;  // recorded k is output where[k]
  for (std::size_t i = 0; i < outs.size(); ++i) {
    outs[i] = outs[i].detach();
    if (is_floating(outs[i].dtype())) {
      recorded.push_back(outs[i]);
      where.push_back(i);
    }
  }
  if (recorded.empty()) return outs;

  std::vector<Tensor> saved;
  std::vector<bool> need;
  for (const Tensor& t : inputs) {
    saved.push_back(t.defined() ? t.detach() : Tensor());
    need.push_back(t.defined() && t.requires_grad());
  }
  const std::size_t n_params = params.size(), n_outs = outs.size();
  autograd::record("activation_checkpoint", all, recorded,
                   [fn, saved, need, offsets, where, n_params, n_outs](const std::vector<Tensor>& grads) {
                     GradModeScope recording(true);
                     RngReplay replay(offsets);
                     std::vector<Tensor> in;
                     for (std::size_t i = 0; i < saved.size(); ++i) {
                       Tensor t = saved[i].defined() ? saved[i].detach() : Tensor();
                       if (need[i]) t.requires_grad_();
                       in.push_back(t);
                     }
                     std::vector<Tensor> again = fn(in);
                     if (again.size() != n_outs) {
                       TG_THROW(Error, "activation_checkpoint: the recomputed fn returned ", again.size(),
                                " tensors, the first run ", n_outs);
                     }
                     std::vector<Tensor> roots, root_grads;
                     for (std::size_t k = 0; k < where.size(); ++k) {
                       const Tensor& o = again[where[k]];
                       if (o.defined() && o.requires_grad()) {
                         roots.push_back(o);
                         root_grads.push_back(grads[k]);
                       }
                     }
                     // Parameters' gradients accumulate here; the inputs' are read back from the leaves.
                     if (!roots.empty()) backward(roots, root_grads);
                     std::vector<Tensor> result;
                     for (std::size_t i = 0; i < in.size(); ++i) result.push_back(need[i] ? in[i].grad() : Tensor());
                     result.resize(result.size() + n_params);
                     return result;
                   });
  return outs;
}

Tensor activation_checkpoint(const std::function<Tensor(const Tensor&)>& fn, const Tensor& x,
                             const std::vector<Tensor>& params) {
  // fn by value: the recomputation runs during backward, after this call returned.
  return activation_checkpoint([fn](const std::vector<Tensor>& in) { return std::vector<Tensor>{fn(in[0])}; }, {x},
                               params)[0];
}

}  // namespace tg
