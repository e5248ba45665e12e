// The op registry: each op family declares its kernels' function types, and each backend
// registers its implementation per device type from its own file (cpu.cpp, cuda.cu).
// A public function looks up the kernel for its inputs' device; a missing kernel is an
// error naming the op and the device, never a crash. No #ifdefs in public functions.
#pragma once

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/profiler.h"

namespace tg::ops {

/// Registry entry of one kernel slot (e.g. "unary_fwd"), for introspection and tests.
class KernelSlot {
 public:
  explicit KernelSlot(std::string name);
  virtual ~KernelSlot() = default;
  const std::string& name() const { return name_; }
  virtual bool has(DeviceType t) const = 0;

 private:
  std::string name_;
};

/// Every kernel slot defined so far (all of them once static initialisation is done).
const std::vector<const KernelSlot*>& kernel_slots();

template <typename Fn>
class Kernel;

/// A kernel slot of function type R(A...): one implementation per device type.
template <typename R, typename... A>
class Kernel<R(A...)> final : public KernelSlot {
 public:
  using Fn = R(A...);
  using KernelSlot::KernelSlot;

  /// The implementation for one device, callable like the function itself; the call is
  /// timed when a tg::Profiler runs.
  class Bound {
   public:
    Bound(Fn* fn, const KernelSlot* slot, Device device) : fn_(fn), slot_(slot), device_(device) {}
    R operator()(A... args) const {
      if (!runtime::profiling()) return fn_(std::forward<A>(args)...);
      runtime::KernelTimer timer(slot_->name(), device_);
      return fn_(std::forward<A>(args)...);
    }

   private:
    Fn* fn_;
    const KernelSlot* slot_;
    Device device_;
  };

  void set(DeviceType t, Fn* fn) { fns_[static_cast<int>(t)] = fn; }
  bool has(DeviceType t) const override { return fns_[static_cast<int>(t)] != nullptr; }
  /// The implementation for `d`; throws tg::DeviceError naming the kernel when absent.
  Bound operator()(Device d) const {
    Fn* f = fns_[static_cast<int>(d.type)];
    if (!f) {
      TG_THROW(DeviceError, name(), ": no ", device_type_name(d.type), " kernel is registered",
               d.is_cuda() ? " (tilegrad was built without CUDA)" : "");
    }
    return Bound(f, this, d);
  }

 private:
  std::array<Fn*, kNumDeviceTypes> fns_{};
};

}  // namespace tg::ops

/// Declares kernel slot `name` with function type `Fn` (in a kernels.h).
#define TG_DECLARE_KERNEL(name, Fn) ::tg::ops::Kernel<Fn>& name()
/// Defines it (in exactly one .cpp); a function-local static avoids init-order issues.
#define TG_DEFINE_KERNEL(name, Fn)            \
  ::tg::ops::Kernel<Fn>& name() {             \
    static ::tg::ops::Kernel<Fn> k(#name);    \
    return k;                                 \
  }
#define TG_CONCAT_(a, b) a##b
#define TG_CONCAT(a, b) TG_CONCAT_(a, b)
/// Registers `fn` as the `CPU` or `CUDA` implementation of slot `name` at load time.
#define TG_REGISTER_KERNEL(name, device_type, fn)                                       \
  static const bool TG_CONCAT(tg_kernel_registered_, __LINE__) [[maybe_unused]] =       \
      (name().set(::tg::DeviceType::device_type, fn), true)
