// Whether differentiable ops record onto the tape (per thread).
#pragma once

namespace tg {

/// True when ops executed by this thread are recorded for backward.
bool grad_enabled();
void set_grad_enabled(bool on);

/// Disables recording for its lifetime (inference, optimizer steps, backward itself).
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace tg
