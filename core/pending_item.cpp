#include "core/pending_item.h"

#include <cstdint>
#include <type_traits>

#include "core/half.h"
#include "runtime/backend.h"
#include "runtime/deferred_checks.h"

namespace tg {

struct PendingItem::State {
  Tensor source;  // kept until the copy has finished, so its memory is not reused under it
  DType dtype = DType::f32;
  Device device = Device::cpu();
  runtime::Backend* backend = nullptr;
  void* slot = nullptr;
  void* marker = nullptr;
  bool arrived = false;

  void wait() {
    if (arrived) return;
    backend->marker_reached(marker, /*wait=*/true);
    arrived = true;
    source = Tensor();
  }
  ~State() {
    if (backend == nullptr) return;
    try {
      wait();
    } catch (...) {
      // A device error while waiting: the slot may still be written; leak it.
      backend->release_marker(marker);
      return;
    }
    backend->release_marker(marker);
    backend->release_host_slot(slot);
  }
};

PendingItem::PendingItem(const Tensor& t) {
  if (t.numel() != 1) TG_THROW(ShapeError, "item_async: expected a tensor with one element, got shape ", t.shape());
  auto s = std::make_shared<State>();
  s->source = t.detach();
  s->dtype = t.dtype();
  s->device = t.device();
  s->backend = &runtime::backend(t.device());
  const Stream stream = current_stream(t.device());
  s->slot = s->backend->copy_to_host_slot(t.data_ptr(), t.device(), dtype_size(t.dtype()), stream);
  s->marker = s->backend->record_marker(stream);
  if (s->marker == nullptr) {
    s->arrived = true;
    s->source = Tensor();
  }
  state_ = std::move(s);
}

PendingItem Tensor::item_async() const { return PendingItem(*this); }

bool PendingItem::ready() const {
  if (!state_) return false;
  if (!state_->arrived && state_->backend->marker_reached(state_->marker, /*wait=*/false)) {
    state_->arrived = true;
    state_->source = Tensor();
  }
  return state_->arrived;
}

template <typename T>
T PendingItem::get() const {
  if (!state_) TG_THROW(ValueError, "PendingItem::get: empty (default-constructed) PendingItem");
  state_->wait();
  if (state_->device.is_cuda()) runtime::run_deferred_checks(state_->device);
  const void* p = state_->slot;
  return TG_DISPATCH_ALL(state_->dtype, "item_async", [&] {
    const scalar_t v = *static_cast<const scalar_t*>(p);
    if constexpr (std::is_same_v<scalar_t, bfloat16> || std::is_same_v<scalar_t, half>)
      return static_cast<T>(static_cast<float>(v));
    else
      return static_cast<T>(v);
  });
}

template float PendingItem::get<float>() const;
template double PendingItem::get<double>() const;
template std::int32_t PendingItem::get<std::int32_t>() const;
template std::int64_t PendingItem::get<std::int64_t>() const;
template bool PendingItem::get<bool>() const;

}  // namespace tg
