// Optimizers, gradient clipping and learning-rate schedules.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace tg::optim {

/// Base: holds the parameters and the learning rate; `step()` updates every parameter that
/// has a gradient, in place, with one fused kernel launch per dtype.
class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params, double lr);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  /// Drops every parameter's gradient.
  void zero_grad();
  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }
  const std::vector<Tensor>& params() const { return params_; }
  /// Named state tensors for checkpoints ("m.3", "v.3", "step", ...).
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  /// Restores state saved by `state()`; throws tg::ValueError / ShapeError on mismatch.
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& state) = 0;

 protected:
  std::vector<Tensor> params_;
  double lr_;
};

/// SGD with optional momentum and (coupled) weight decay.
class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr, double momentum = 0.0, double weight_decay = 0.0);
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state) override;

 private:
  double momentum_, weight_decay_;
  std::vector<Tensor> bufs_;
};

struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

/// AdamW (decoupled weight decay). Moments are kept in f32 (f64 for f64 parameters).
class AdamW : public Optimizer {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions opts = {});
  void step() override;
  std::int64_t step_count() const { return step_; }
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state) override;

 private:
  AdamWOptions opts_;
  std::int64_t step_ = 0;
  std::vector<Tensor> m_, v_;
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
