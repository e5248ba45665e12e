// Optimizers, gradient clipping and learning-rate schedules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tg::optim {

/// Parameters with settings of their own (PyTorch's param groups): a weight decay (unset:
/// the optimizer's) and a factor on the learning rate (the optimizer's lr, which schedules
/// set, times lr_scale).
struct ParamGroup {
  std::vector<Tensor> params;
  std::optional<double> weight_decay{};
  double lr_scale = 1.0;
};

/// The usual transformer recipe as two groups: tensors of two or more dims (weight
/// matrices, embeddings, block-sparse weight data) decay by `weight_decay`, the others
/// (biases, LayerNorm gains) not at all. Groups left empty are dropped.
std::vector<ParamGroup> decay_groups(const std::vector<Tensor>& params, double weight_decay);

class GradScaler;

/// Base: holds the parameters (in groups) and the learning rate; `step()` updates every
/// parameter that has a gradient, in place, with one fused kernel launch per group.
class Optimizer {
 public:
  /// One group of every parameter. Throws ValueError (a parameter that is not a leaf
  /// requiring grad, or listed twice; lr < 0; a group's lr_scale < 0 or weight decay < 0).
  explicit Optimizer(std::vector<Tensor> params, double lr);
  explicit Optimizer(std::vector<ParamGroup> groups, double lr);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  /// Drops every parameter's gradient.
  void zero_grad();
  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  /// Every parameter, group after group (the order of the state's indices).
  const std::vector<Tensor>& params() const { return params_; }
  /// The groups' settings; group g holds params()[group_begin(g) .. group_begin(g + 1)).
  std::size_t num_groups() const { return groups_.size(); }
  const ParamGroup& group(std::size_t g) const { return groups_.at(g); }
  /// Named state tensors for checkpoints ("m.3", "v.3", "step", ...).
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  /// Restores state saved by `state()`; throws tg::ValueError / ShapeError on mismatch.
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& state) = 0;

 protected:
  /// Parameters [begin, end) of params_ belonging to group g.
  std::pair<std::size_t, std::size_t> group_range(std::size_t g) const { return {begin_[g], begin_[g + 1]}; }
  std::vector<Tensor> params_;
  std::vector<ParamGroup> groups_;   ///< settings (their params lists mirror params_)
  std::vector<std::size_t> begin_;  ///< groups_.size() + 1 offsets into params_
  double lr_;
  /// Factor on every gradient as step() reads it (GradScaler sets the loss scale's inverse).
  double grad_scale_ = 1.0;
  friend class GradScaler;
};

/// SGD with optional momentum and (coupled) weight decay.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr, double momentum = 0.0, double weight_decay = 0.0);
  SGD(std::vector<ParamGroup> groups, double lr, double momentum = 0.0, double weight_decay = 0.0);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state) override;

 private:
  double momentum_, weight_decay_;
  std::vector<Tensor> bufs_;
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  /// Keep an f32 copy ("master weights") of every bf16 / f16 parameter: the step updates the
  /// copy and rounds it into the parameter. Without it, an update smaller than half a
  /// 16-bit step of the weight (bf16 keeps 8 bits: ~0.4% of it) is lost each time, which
  /// stalls training once the learning rate has decayed. Costs 4 bytes a parameter and
  /// two more launches a tensor each step. The copies are the weights from then on: values
  /// written into the parameters by other means (a checkpoint loaded into the model) are
  /// overwritten at the next step unless load_state() or sync_master_weights() follows.
  bool master_weights = false;
};

/// AdamW (decoupled weight decay). Moments are kept in f32 (f64 for f64 parameters), and
/// with master_weights the 16-bit parameters' values too.
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions opts = {});
  /// Groups with their own weight decay / lr factor (e.g. decay_groups(model.parameters(), 0.1)).
  AdamW(std::vector<ParamGroup> groups, AdamWOptions opts = {});
  void step() override;
  std::int64_t step_count() const { return step_; }
  /// Copies the parameters' current values into their master weights (after changing the
  /// parameters outside the optimizer). No-op without master weights.
  void sync_master_weights();
  /// "step", "m.i", "v.i", and "master.i" for parameters with master weights.
  std::vector<std::pair<std::string, Tensor>> state() const override;
  /// Restores state(); master weights missing from it (a checkpoint saved without them)
  /// start from the parameters.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state) override;

 private:
  AdamWOptions opts_;
  std::int64_t step_ = 0;
  std::vector<Tensor> m_, v_;
  std::vector<Tensor> master_;  ///< f32 copies of 16-bit parameters (undefined otherwise)
};

/// Scales all gradients in place so that their global L2 norm is at most `max_norm`
/// (factor max_norm / (norm + 1e-6) when norm > max_norm); returns the norm before
/// clipping as a 0-d f64 tensor on the gradients' device (on the CPU when they span
/// several devices, or none). Squares are summed in f32 (f64 for f64 gradients) and across
/// tensors in f64. With one device the host waits for nothing: the factor is computed and
/// applied there. Parameters without a gradient are skipped.
/// Errors: DTypeError (a gradient of an integer dtype).
Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

/// clip_grad_norm_ with the norm read back to the host (waits for the device).
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

/// Learning rate at `step` (0-based): linear warm-up over `warmup` steps to `peak`, then a
/// cosine decay to `min_lr` at `total` steps (constant min_lr after).
double warmup_cosine_lr(std::int64_t step, std::int64_t warmup, std::int64_t total, double peak, double min_lr = 0.0);

}  // namespace tg::optim
