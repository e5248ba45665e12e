#include "core/shape.h"

#include <ostream>

#include "runtime/error.h"

namespace tg {

int Shape::wrap_dim(int i, const char* op) const {
  int n = ndim();
  int w = i < 0 ? i + n : i;
  if (w < 0 || w >= n) TG_THROW(ShapeError, op, ": dim ", i, " out of range for a ", n, "-d shape ", *this);
  return w;
}

std::int64_t Shape::operator[](int i) const { return dims_[static_cast<std::size_t>(wrap_dim(i))]; }

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (auto d : dims_) n *= d;
  return n;
}

std::string Shape::str() const {
  std::string s = "[";
  for (std::size_t i = 0; i < dims_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  return s + "]";
}

std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

}  // namespace tg
