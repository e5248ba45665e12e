#include "optim/grad_groups.h"

#include <algorithm>

#include "ops/factory/factory.h"
#include "ops/optim/kernels.h"

namespace tg::optim::detail {

std::vector<std::vector<Tensor>> grads_by_device(const std::vector<Tensor>& params, const char* op) {
  std::vector<std::vector<Tensor>> by_device;
  for (const auto& p : params) {
    Tensor g = p.grad();
    if (!g.defined() || g.numel() == 0) continue;
    if (!is_floating(g.dtype())) TG_THROW(DTypeError, op, ": gradients must be floating, got ", dtype_name(g.dtype()));
    auto it = std::find_if(by_device.begin(), by_device.end(),
                           [&](const std::vector<Tensor>& v) { return v[0].device() == g.device(); });
    if (it == by_device.end())
      by_device.push_back({g});
    else
      it->push_back(g);
  }
  return by_device;
}

std::vector<Tensor> square_sums(const std::vector<std::vector<Tensor>>& groups) {
  std::vector<Tensor> sums;
  for (const auto& grads : groups) {
    Tensor acc = zeros({1}, {.dtype = DType::f64, .device = grads[0].device()});
    ops::grad_squares_kernel()(grads[0].device())(grads, acc);
    sums.push_back(acc);
  }
  return sums;
}

}  // namespace tg::optim::detail
