// Dynamic loss scaling for f16 training (PyTorch's torch.amp.GradScaler).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "optim/optimizer.h"

namespace tg::optim {

struct GradScalerOptions {
  /// The first scale: 2^15, the largest power of two f16 holds (its max is 65504), since
  /// backward starts from d(scaled loss)/d(loss) = scale in the loss's dtype.
  double init_scale = 32768.0;
  double growth_factor = 2.0;           ///< the scale's factor after growth_interval finite steps
  double backoff_factor = 0.5;          ///< the scale's factor after a step with inf / NaN gradients
  std::int64_t growth_interval = 2000;  ///< finite steps in a row before the scale grows
};

/// f16 gradients of a small loss underflow to zero (f16's smallest value is ~6e-8). The
/// scaler multiplies the loss by a large scale before backward, so the gradients stay
/// representable, and has the optimizer divide them by it as it reads them, in f32 (16-bit
/// gradients divided in place would underflow again). When the scale is too large some
/// gradient overflows to inf (or is NaN): that step is skipped and the scale reduced;
/// after growth_interval finite steps in a row it grows again. bf16 has f32's range and
/// needs none of this. The loop:
///
///     scaler.scale(loss).backward();
///     scaler.clip_grad_norm_(opt, 1.0);   // optional: clips the true gradients
///     scaler.step(opt);                   // skipped when a gradient is inf / NaN
///     scaler.update();
///
/// The parameters' .grad() stay scaled (divide by get_scale() to read true values).
class GradScaler {
 public:
  /// Throws ValueError (init_scale <= 0, growth_factor <= 1, backoff_factor outside (0, 1),
  /// growth_interval < 1).
  explicit GradScaler(GradScalerOptions options = {});

  /// loss · scale (differentiable; the loss's dtype and device).
  Tensor scale(const Tensor& loss) const;
  /// clip_grad_norm_ of opt's parameters for the true (unscaled) gradients: scales the
  /// stored ones so that the true norm is at most max_norm; returns the true norm before
  /// clipping (0-d f64; inf / NaN when a gradient is). Call between backward and step().
  Tensor clip_grad_norm_(Optimizer& opt, double max_norm) const;
  /// opt.step() with every gradient divided by the scale, unless some gradient is inf or
  /// NaN (then nothing changes). Reads one number back (the host waits for the device).
  /// Returns whether the step ran. Throws ValueError when called twice without update().
  /// Squares are summed to find inf / NaN: a finite scaled gradient past ~1e19 also counts
  /// as an overflow.
  bool step(Optimizer& opt);
  /// Ends the step: the scale backs off after a skipped step, grows after growth_interval
  /// finite ones in a row. Throws ValueError when no step() came before.
  void update();

  double get_scale() const { return scale_; }
  /// Finite steps in a row since the scale last changed.
  std::int64_t growth_tracker() const { return tracker_; }
  /// Whether the last step() skipped the optimizer (a gradient was inf / NaN).
  bool last_step_skipped() const { return skipped_; }

  /// "scale" and "growth_tracker" (f64 / i64 tensors of one element), for checkpoints.
  std::vector<std::pair<std::string, Tensor>> state() const;
  /// Restores state(); throws ValueError when an entry is missing.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state);

 private:
  GradScalerOptions opts_;
  double scale_;
  std::int64_t tracker_ = 0;
  bool stepped_ = false, skipped_ = false;
};

}  // namespace tg::optim
