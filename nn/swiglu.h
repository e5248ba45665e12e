// The gated MLP of LLaMA-style transformer blocks (Shazeer 2020): down(silu(gate(x)) ⊙ up(x)).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nn/linear.h"
#include "nn/module.h"

namespace tg::nn {

class SwiGLU : public Module {
 public:
  /// d_model -> hidden -> d_model. The gate and up projections are one Linear "gate_up"
  /// [2·hidden, d_model] (rows [0, hidden) the gate), so that both take one GEMM; "down" is
  /// [d_model, hidden]. No biases unless `bias` (LLaMA has none). LLaMA's width for a 4·d
  /// dense MLP of the same parameter count is hidden ≈ 8·d / 3. Throws ShapeError when
  /// d_model or hidden is not positive.
  SwiGLU(std::int64_t d_model, std::int64_t hidden, bool bias = false, TensorOptions opts = {}, std::uint64_t seed = 0);
  /// x [..., d_model] -> [..., d_model]. Throws ShapeError for another last extent.
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  std::string extra_info() const override;

  std::shared_ptr<Linear> gate_up, down;
  std::int64_t d_model, hidden;
};

}  // namespace tg::nn
