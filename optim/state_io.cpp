#include "optim/state_io.h"

#include "autograd/grad_mode.h"
#include "ops/copy/copy.h"

namespace tg::optim::detail {

Tensor find_state(const StateList& st, const std::string& name, const char* owner) {
  for (const auto& [n, t] : st)
    if (n == name) return t;
  TG_THROW(ValueError, owner, ": missing state tensor \"", name, "\"");
}

void restore_state(Tensor& dst, const Tensor& src, const std::string& name, const char* owner) {
  if (src.shape() != dst.shape()) {
    TG_THROW(ShapeError, owner, ": \"", name, "\" has shape ", src.shape(), ", expected ", dst.shape());
  }
  NoGradGuard ng;
  copy_bytes(dst, to_device(to_dtype(src, dst.dtype()), dst.device()));
}

}  // namespace tg::optim::detail
