#include "nn/swiglu.h"

#include <sstream>

#include "ops/elementwise/elementwise.h"
#include "ops/shape/shape_ops.h"

namespace tg::nn {

SwiGLU::SwiGLU(std::int64_t d_model_, std::int64_t hidden_, bool bias, TensorOptions opts, std::uint64_t seed)
    : Module("SwiGLU"), d_model(d_model_), hidden(hidden_) {
  TG_CHECK(d_model > 0 && hidden > 0, ShapeError,
           "SwiGLU: d_model and hidden must be positive, got d_model = ", d_model, ", hidden = ", hidden);
  gate_up = register_module("gate_up", std::make_shared<Linear>(d_model, 2 * hidden, bias, opts, 2 * seed + 1));
  down = register_module("down", std::make_shared<Linear>(hidden, d_model, bias, opts, 2 * seed + 2));
}

Tensor SwiGLU::forward(const Tensor& x) const {
  const Tensor h = gate_up->forward(x);  // checks x's last extent
  const int last = h.dim() - 1;
  return down->forward(mul(silu(slice(h, last, 0, hidden)), slice(h, last, hidden, 2 * hidden)));
}

std::string SwiGLU::extra_info() const {
  std::ostringstream os;
  os << "d_model=" << d_model << ", hidden=" << hidden << ", bias=" << (gate_up->bias.defined() ? "true" : "false");
  return os.str();
}

}  // namespace tg::nn
