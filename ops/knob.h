// A kernel-choice knob: a process-wide forced value, else an environment variable's choice of
// two values, else a fallback. The ops' choice files (attention's kernel_choice.cpp, the
// sparse matmul's path.cpp, linalg's cpu_gemm_choice.cpp) each hold theirs as constinit
// globals.
#pragma once

#include <atomic>
#include <mutex>

#include "ops/common.h"

namespace tg::ops {

/// One knob over an enum E with an E::Auto value (meaning: not forced). Constant-initialised,
/// so usable from other translation units' static initialisers.
template <typename E>
class Knob {
 public:
  /// `op` names the op in errors; `env` the variable, whose values `first` / `second` select
  /// v1 / v2; `fallback` is what get() gives when neither the setter nor the variable chose.
  constexpr Knob(const char* op, const char* env, const char* first, const char* second, E v1, E v2, E fallback)
      : op_(op), env_(env), first_(first), second_(second), v1_(v1), v2_(v2), fallback_(fallback) {}

  /// Forces the value of later get() calls (process-wide; E::Auto restores the environment's
  /// or the fallback).
  void set(E e) { forced_.store(e, std::memory_order_relaxed); }

  /// The forced value, else the variable's choice (read once), else the fallback. Throws
  /// tg::ValueError naming the op and the variable when it holds neither choice (every call).
  E get() {
    const E k = forced_.load(std::memory_order_relaxed);
    if (k != E::Auto) return k;
    std::call_once(read_, [this] { from_env_ = env_choice(op_, env_, first_, second_); });
    return from_env_ == 1 ? v1_ : from_env_ == 2 ? v2_ : fallback_;
  }

 private:
  std::atomic<E> forced_{E::Auto};
  std::once_flag read_;
  int from_env_ = 0;
  const char *op_, *env_, *first_, *second_;
  E v1_, v2_, fallback_;
};

}  // namespace tg::ops
