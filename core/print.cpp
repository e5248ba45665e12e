// PyTorch-like printing of tensors.
#include <cmath>
#include <cstdio>
#include <ostream>
#include <sstream>

#include "autograd/node.h"
#include "core/tensor.h"

namespace tg {

namespace {

PrintOptions& options() {
  static PrintOptions o;
  return o;
}

struct Formatter {
  bool integral = false;
  bool scientific = false;
  int precision = 4;
  int width = 1;

  std::string fmt(double v) const {
    char buf[64];
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    if (integral) std::snprintf(buf, sizeof buf, "%.0f", v);
    else if (scientific) std::snprintf(buf, sizeof buf, "%.*e", precision, v);
    else std::snprintf(buf, sizeof buf, "%.*f", precision, v);
    return buf;
  }
};

void print_rec(std::ostream& os, const std::vector<double>& v, const Shape& s, int d, std::int64_t base,
               bool abbreviate, const Formatter& f, int indent) {
  const auto& dims = s.dims();
  std::int64_t n = dims[static_cast<std::size_t>(d)];
  std::int64_t stride = 1;
  for (std::size_t k = static_cast<std::size_t>(d) + 1; k < dims.size(); ++k) stride *= dims[k];
  int edge = options().edge_items;
  os << "[";
  for (std::int64_t i = 0; i < n; ++i) {
    if (abbreviate && n > 2 * edge && i == edge) {
      os << (d + 1 == s.ndim() ? "..., " : "...,\n" + std::string(static_cast<std::size_t>(indent + 1), ' '));
      i = n - edge - 1;
      continue;
    }
    if (d + 1 == s.ndim()) {
      std::string x = f.fmt(v[static_cast<std::size_t>(base + i)]);
      os << std::string(static_cast<std::size_t>(std::max(0, f.width - static_cast<int>(x.size()))), ' ') << x;
    } else {
      print_rec(os, v, s, d + 1, base + i * stride, abbreviate, f, indent + 1);
    }
    if (i + 1 < n) {
      if (d + 1 == s.ndim()) os << ", ";
      else os << "," << std::string(static_cast<std::size_t>(s.ndim() - d - 1), '\n')
              << std::string(static_cast<std::size_t>(indent + 1), ' ');
    }
  }
  os << "]";
}

}  // namespace

void set_print_options(const PrintOptions& opts) { options() = opts; }

std::ostream& operator<<(std::ostream& os, const Tensor& t) {
  if (!t.defined()) return os << "tensor(undefined)";
  std::vector<double> v = t.to_vector<double>();
  Formatter f;
  f.precision = options().precision;
  f.integral = !is_floating(t.dtype());
  double amax = 0, amin_nz = INFINITY;
  bool all_int = true;
  for (double x : v) {
    if (!std::isfinite(x)) continue;
    amax = std::max(amax, std::fabs(x));
    if (x != 0) amin_nz = std::min(amin_nz, std::fabs(x));
    if (x != std::floor(x)) all_int = false;
  }
  if (!f.integral && (amax >= 1e8 || (amin_nz < 1e-4 && amax > 0))) f.scientific = true;
  if (!f.integral && all_int && !f.scientific && amax < 1e8) f.precision = 1;
  bool abbreviate = t.numel() > options().threshold;
  for (double x : v) f.width = std::max(f.width, static_cast<int>(f.fmt(x).size()));

  os << "tensor(";
  if (t.dim() == 0) os << f.fmt(v.empty() ? 0.0 : v[0]);
  else if (t.numel() == 0) os << "[]";
  else print_rec(os, v, t.shape(), 0, 0, abbreviate, f, 7);
  os << ", shape=" << t.shape() << ", dtype=" << t.dtype() << ", device=" << t.device();
  if (t.grad_fn()) os << ", grad_fn=" << t.grad_fn()->name();
  else if (t.requires_grad()) os << ", requires_grad";
  return os << ")";
}

}  // namespace tg
