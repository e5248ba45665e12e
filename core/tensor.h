// Tensor: a contiguous, row-major, ref-counted n-d array on a device, with autograd
// metadata. Copies of a Tensor are cheap handles to the same data.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "runtime/device.h"
#include "runtime/error.h"

namespace tg {

namespace autograd {
class Node;
struct HookList;
}
class PendingItem;

/// Device memory owned by one or more tensors; returned to the device allocator when the
/// last owner goes away.
class StorageImpl {
 public:
  /// Allocates `nbytes` on `device` for the current stream of that device.
  StorageImpl(std::size_t nbytes, Device device);
  ~StorageImpl();
  StorageImpl(const StorageImpl&) = delete;
  StorageImpl& operator=(const StorageImpl&) = delete;
  void* data() const { return ptr_; }
  std::size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* ptr_ = nullptr;
  std::size_t nbytes_ = 0;
  Device device_;
};

/// The shared state behind a Tensor handle.
struct TensorImpl {
  std::shared_ptr<StorageImpl> storage;
  std::size_t offset = 0;  ///< byte offset of element 0 in storage
  Shape shape;
  DType dtype = DType::f32;
  Device device;
  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;            ///< accumulated gradient (leaves)
  std::shared_ptr<autograd::Node> grad_fn;     ///< the node that produced this tensor
  int output_nr = 0;                           ///< which output of grad_fn this is
  std::shared_ptr<autograd::HookList> hooks;    ///< gradient hooks, retain_grad (autograd/hooks.h)
  std::string name;                            ///< optional, shown in graph exports
};

/// What a factory creates: `{.dtype = DType::bf16, .device = Device::cuda()}`.
struct TensorOptions {
  DType dtype = DType::f32;
  Device device = Device::cpu();
  bool requires_grad = false;
};

class Tensor {
 public:
  /// An undefined tensor (`defined() == false`).
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int dim() const { return shape().ndim(); }
  /// Extent of dim `d` (negative counts from the end).
  std::int64_t size(int d) const { return shape()[d]; }
  std::int64_t numel() const { return shape().numel(); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().device; }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype()); }

  /// Raw pointer to element 0 (device memory for CUDA tensors).
  void* data_ptr() const;
  /// Typed pointer to element 0; throws tg::DTypeError when T does not match dtype().
  template <typename T>
  T* data() const {
    check_dtype(dtype_of<T>(), "Tensor::data");
    return static_cast<T*>(data_ptr());
  }

  // --- conversions (differentiable; defined in ops/copy) -----------------------------
  /// A copy on `device` (this tensor itself when already there).
  Tensor to(Device device) const;
  /// A copy converted to `dtype` (this tensor itself when already of that dtype).
  Tensor to(DType dtype) const;
  /// A deep copy (differentiable).
  Tensor clone() const;
  /// The same data without autograd history; never requires grad.
  Tensor detach() const;

  /// The single element as T (copied to the host). Throws tg::ShapeError when numel != 1.
  template <typename T>
  T item() const;
  /// The single element, copied to the host without waiting for work queued after this
  /// call (core/pending_item.h: get<T>() waits for the copy alone). Throws tg::ShapeError
  /// when numel != 1.
  PendingItem item_async() const;
  /// All elements as a host vector of T (converted from dtype()).
  template <typename T>
  std::vector<T> to_vector() const;

  // --- autograd (defined in autograd/) -------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  /// Marks a leaf tensor as needing a gradient; throws tg::ValueError for non-leaves
  /// when turning it off, and tg::DTypeError for non-floating dtypes.
  Tensor& requires_grad_(bool on = true);
  /// The accumulated gradient (undefined before the first backward).
  Tensor grad() const;
  void set_grad(const Tensor& g);
  /// Drops the accumulated gradient.
  void zero_grad();
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  /// Calls hook(grad) with this tensor's gradient in every backward pass that reaches it:
  /// for a leaf the pass's whole gradient before it is added to grad(); for a non-leaf its
  /// whole gradient before it flows on to the op that made it. A hook may return a
  /// replacement (same shape, dtype and device; it is what flows on or is accumulated) or
  /// an undefined tensor to leave the gradient as it is; hooks run in registration order,
  /// with gradients off. Returns an id for remove_hook. Throws ValueError when the tensor
  /// does not require grad or the hook is empty; backward throws Error when a hook returns
  /// a gradient of another kind.
  std::uint64_t register_hook(std::function<Tensor(const Tensor&)> hook);
  /// Removes the hook `id` of this tensor; false when it has none of that id.
  bool remove_hook(std::uint64_t id);
  /// Makes a non-leaf keep its gradient in grad() (accumulated over backward passes like a
  /// leaf's), e.g. to inspect an activation's gradient; nothing for a leaf. Throws
  /// ValueError when the tensor does not require grad.
  Tensor& retain_grad();
  /// Reverse-mode backward from this tensor (see tg::backward).
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;
  /// A name shown by graph exports and printing.
  Tensor& set_name(std::string name);
  const std::string& name() const { return impl().name; }

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  /// True when both handles refer to the same tensor.
  bool is_same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  void check_dtype(DType expected, const char* what) const;
  std::shared_ptr<TensorImpl> impl_;
};

/// Uninitialised tensor of `shape` (contents unspecified).
Tensor empty(const Shape& shape, TensorOptions opts = {});
/// A tensor sharing `base`'s storage with another shape of equal numel (no autograd).
Tensor alias_with_shape(const Tensor& base, const Shape& shape);
/// Copies host values into a new tensor of `shape` (numel must match).
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, TensorOptions opts = {.dtype = dtype_of<T>()});
/// Copies raw bytes between tensors of equal nbytes (any devices); no autograd.
void copy_bytes(const Tensor& dst, const Tensor& src);

/// PyTorch-like printing: values (abbreviated with ... beyond 1000 elements), shape,
/// dtype, device and requires_grad.
std::ostream& operator<<(std::ostream& os, const Tensor& t);

/// Print options: elements shown per dim at each end when abbreviated, and precision.
struct PrintOptions {
  int edge_items = 3;
  int threshold = 1000;
  int precision = 4;
};
void set_print_options(const PrintOptions& opts);

}  // namespace tg
