// A scalar on its way from a device to the host, for loops that read a value each step
// (a loss, a norm) without waiting for the work queued after it.
#pragma once

#include <memory>

#include "core/tensor.h"

namespace tg {

/// The single element of a tensor, being copied to the host (Tensor::item_async). The copy
/// is queued on the tensor device's current stream and a marker after it; get() waits for
/// that marker alone, so that work queued after item_async (the next training step) keeps
/// the device busy while the host reads the value. On the CPU the value is there at once.
///
/// get() is a synchronisation with the device in the sense of runtime/deferred_checks.h:
/// it throws the calling thread's pending errors of checks whose work has finished. Cheap
/// to move; copies share the copy in flight (use them from one thread: ready() and get()
/// update the shared state unguarded). Destroying the last PendingItem of a copy that is
/// still running waits for it.
class PendingItem {
 public:
  PendingItem() = default;
  /// Starts the copy of the single element of `t`; throws tg::ShapeError when numel != 1.
  explicit PendingItem(const Tensor& t);

  /// Whether the value has arrived (never blocks).
  bool ready() const;
  /// The value as T, waiting for the copy if needed. Throws tg::ValueError for an empty
  /// PendingItem.
  template <typename T>
  T get() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace tg
