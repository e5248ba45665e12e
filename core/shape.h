// Tensor shapes.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <string>
#include <vector>

namespace tg {

/// The extents of a tensor, outermost first. A 0-d shape (scalar) has numel 1.
class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) : dims_(dims) {}
  explicit Shape(std::vector<std::int64_t> dims) : dims_(std::move(dims)) {}

  int ndim() const { return static_cast<int>(dims_.size()); }
  /// Extent of dim `i`; negative `i` counts from the end. Throws tg::ShapeError when out of range.
  std::int64_t operator[](int i) const;
  std::int64_t numel() const;
  /// Normalises a possibly negative dim index; throws tg::ShapeError naming `op`.
  int wrap_dim(int i, const char* op = "shape") const;
  const std::vector<std::int64_t>& dims() const { return dims_; }
  std::vector<std::int64_t>& dims() { return dims_; }
  std::string str() const;
  friend bool operator==(const Shape&, const Shape&) = default;

 private:
  std::vector<std::int64_t> dims_;
};

std::ostream& operator<<(std::ostream& os, const Shape& s);

}  // namespace tg
