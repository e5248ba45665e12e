// An exponential moving average of parameters (a model's "EMA weights").
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tg::optim {

/// Keeps shadow = decay · shadow + (1 − decay) · param for each parameter, updated after
/// each optimizer step; evaluating with the shadow weights often beats the last weights.
/// The shadows are f32 copies (f64 for f64 parameters) on each parameter's device, so
/// 16-bit parameters average without rounding each step. Warm-up: the decay used at update
/// n (1-based) is min(decay, (1 + n) / (10 + n)), so early shadows follow the parameters
/// instead of their random start.
///
///     ema.update();                          // after opt.step()
///     { ExponentialMovingAverage::Swap s(ema); evaluate(); }   // shadows in the parameters
class ExponentialMovingAverage {
 public:
  /// Throws ValueError (decay outside [0, 1), a parameter undefined or not floating).
  ExponentialMovingAverage(std::vector<Tensor> params, double decay = 0.999);

  /// One averaging step from the parameters' current values (no gradient recorded).
  void update();
  /// Writes the shadows into the parameters (rounded to their dtype).
  void copy_to() const;
  /// The shadow of parameter i (f32 / f64).
  const Tensor& shadow(std::size_t i) const { return shadows_.at(i); }
  std::int64_t num_updates() const { return updates_; }
  double decay() const { return decay_; }

  /// "shadow.i" and "num_updates", for checkpoints.
  std::vector<std::pair<std::string, Tensor>> state() const;
  /// Restores state(); throws ValueError (missing entry) or ShapeError (shape mismatch).
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state);

  /// For its lifetime the parameters hold the shadows; the parameters' own values come back
  /// when it ends (e.g. evaluate with the average, then keep training).
  class Swap {
   public:
    explicit Swap(const ExponentialMovingAverage& ema);
    ~Swap();
    Swap(const Swap&) = delete;
    Swap& operator=(const Swap&) = delete;

   private:
    const ExponentialMovingAverage& ema_;
    std::vector<Tensor> saved_;
  };

 private:
  std::vector<Tensor> params_, shadows_;
  double decay_;
  std::int64_t updates_ = 0;
};

}  // namespace tg::optim
