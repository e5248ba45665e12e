#include "core/tensor.h"

#include <cstring>

#include "runtime/backend.h"

namespace tg {

StorageImpl::StorageImpl(std::size_t nbytes, Device device) : nbytes_(nbytes), device_(device) {
  runtime::Backend& b = runtime::backend(device);
  ptr_ = b.allocate(nbytes, b.current_stream(device));
}

StorageImpl::~StorageImpl() {
  if (ptr_) runtime::backend(device_).deallocate(ptr_, device_);
}

TensorImpl& Tensor::impl() const {
  if (!impl_) TG_THROW(ValueError, "Tensor: use of an undefined tensor");
  return *impl_;
}

void* Tensor::data_ptr() const {
  const TensorImpl& t = impl();
  return t.storage ? static_cast<char*>(t.storage->data()) + t.offset : nullptr;
}

void Tensor::check_dtype(DType expected, const char* what) const {
  if (dtype() != expected) TG_THROW(DTypeError, what, ": tensor has dtype ", dtype(), ", requested ", expected);
}

Tensor Tensor::detach() const {
  auto t = std::make_shared<TensorImpl>();
  const TensorImpl& s = impl();
  t->storage = s.storage;
  t->offset = s.offset;
  t->shape = s.shape;
  t->dtype = s.dtype;
  t->device = s.device;
  t->name = s.name;
  return Tensor(std::move(t));
}

Tensor& Tensor::set_name(std::string name) {
  impl().name = std::move(name);
  return *this;
}

Tensor empty(const Shape& shape, TensorOptions opts) {
  for (auto d : shape.dims()) {
    if (d < 0) TG_THROW(ShapeError, "empty: expected non-negative extents, got shape ", shape);
  }
  auto t = std::make_shared<TensorImpl>();
  t->shape = shape;
  t->dtype = opts.dtype;
  t->device = opts.device;
  std::size_t nbytes = static_cast<std::size_t>(shape.numel()) * dtype_size(opts.dtype);
  t->storage = std::make_shared<StorageImpl>(nbytes, opts.device);
  Tensor out(std::move(t));
  if (opts.requires_grad) out.requires_grad_(true);
  return out;
}

Tensor alias_with_shape(const Tensor& base, const Shape& shape) {
  if (shape.numel() != base.numel()) {
    TG_THROW(ShapeError, "reshape: cannot view a tensor of shape ", base.shape(), " (", base.numel(),
             " elements) as shape ", shape, " (", shape.numel(), " elements)");
  }
  Tensor t = base.detach();
  t.impl().shape = shape;
  return t;
}

void copy_bytes(const Tensor& dst, const Tensor& src) {
  if (dst.nbytes() != src.nbytes()) {
    TG_THROW(ShapeError, "copy: destination has ", dst.nbytes(), " bytes, source has ", src.nbytes());
  }
  if (dst.nbytes() == 0) return;
  // The non-CPU side's backend knows how to move data across the host boundary.
  Device via = dst.device().is_cpu() ? src.device() : dst.device();
  runtime::Backend& b = runtime::backend(via);
  b.copy(dst.data_ptr(), dst.device(), src.data_ptr(), src.device(), dst.nbytes(), b.current_stream(via));
}

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts) {
  if (static_cast<std::int64_t>(values.size()) != shape.numel()) {
    TG_THROW(ShapeError, "from_vector: shape ", shape, " needs ", shape.numel(), " values, got ", values.size());
  }
  Tensor host = empty(shape, {.dtype = dtype_of<T>(), .device = Device::cpu()});
  if (!values.empty()) {
    if constexpr (std::is_same_v<T, bool>) {
      bool* d = host.data<bool>();
      for (std::size_t i = 0; i < values.size(); ++i) d[i] = values[i];
    } else {
      std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
    }
  }
  Tensor out = host.to(opts.dtype).to(opts.device);
  if (out.is_same(host)) out = host;
  if (opts.requires_grad) out.requires_grad_(true);
  return out;
}

template <typename T>
T Tensor::item() const {
  if (numel() != 1) TG_THROW(ShapeError, "item: expected a tensor with one element, got shape ", shape());
  return to_vector<T>()[0];
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  Tensor host = detach().to(Device::cpu()).to(dtype_of<T>());
  std::vector<T> out(static_cast<std::size_t>(numel()));
  const T* p = static_cast<const T*>(host.data_ptr());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = p[i];
  return out;
}

#define TG_INSTANTIATE(T)                                                                    \
  template Tensor from_vector<T>(const std::vector<T>&, const Shape&, TensorOptions);        \
  template T Tensor::item<T>() const;                                                        \
  template std::vector<T> Tensor::to_vector<T>() const;
TG_INSTANTIATE(float)
TG_INSTANTIATE(double)
TG_INSTANTIATE(bfloat16)
TG_INSTANTIATE(half)
TG_INSTANTIATE(std::int32_t)
TG_INSTANTIATE(std::int64_t)
TG_INSTANTIATE(bool)
#undef TG_INSTANTIATE

}  // namespace tg
