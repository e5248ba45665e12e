// The per-element optimizer updates, shared by the CPU and CUDA kernels so that both
// compute exactly the same function.
#pragma once

#include <cmath>

#include "runtime/macros.h"

namespace tg::ops {

/// One AdamW step for one element. `bc1` = 1 - beta1^t, `bc2` = 1 - beta2^t.
template <typename A>
TG_HOST_DEVICE TG_INLINE A adamw_update(A p, A g, A& m, A& v, A lr, A b1, A b2, A eps, A wd, A bc1, A bc2) {
  m = b1 * m + (A(1) - b1) * g;
  v = b2 * v + (A(1) - b2) * g * g;
  using std::sqrt;
  A mhat = m / bc1;
  A vhat = v / bc2;
  return p - lr * (mhat / (sqrt(vhat) + eps) + wd * p);
}

template <typename A>
TG_HOST_DEVICE TG_INLINE A sgd_update(A p, A g, A* buf, A lr, A momentum, A wd) {
  A d = g + wd * p;
  if (buf) {
    *buf = momentum * *buf + d;
    d = *buf;
  }
  return p - lr * d;
}

}  // namespace tg::ops
