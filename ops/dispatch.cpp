#include "ops/dispatch.h"

namespace tg::ops {

namespace {
std::vector<const KernelSlot*>& slots() {
  static std::vector<const KernelSlot*> s;
  return s;
}
}  // namespace

KernelSlot::KernelSlot(std::string name) : name_(std::move(name)) { slots().push_back(this); }

const std::vector<const KernelSlot*>& kernel_slots() { return slots(); }

}  // namespace tg::ops
