#include "nn/module.h"

#include <ostream>
#include <sstream>

#include "ops/copy/copy.h"

namespace tg::nn {

namespace {
// Replaces the tensor's contents in place so every handle to it (the module member, an
// optimizer's list) sees the new device/dtype.
void replace_in_place(const Tensor& t, const Tensor& src) {
  TensorImpl& d = t.impl();
  const TensorImpl& s = src.impl();
  d.storage = s.storage;
  d.offset = s.offset;
  d.dtype = s.dtype;
  d.device = s.device;
  d.grad = nullptr;
}
}  // namespace

Tensor Module::register_parameter(std::string name, Tensor t) {
  if (!t.defined()) TG_THROW(ValueError, type_name_, ": parameter '", name, "' is undefined");
  if (!t.is_leaf()) t = t.detach();
  t.requires_grad_(true);
  if (t.name().empty()) t.set_name(name);
  params_.emplace_back(std::move(name), t);
  return t;
}

Tensor Module::register_buffer(std::string name, Tensor t) {
  buffers_.emplace_back(std::move(name), t);
  return t;
}

void Module::collect(const std::string& prefix, bool recurse, bool buffers,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [n, t] : buffers ? buffers_ : params_) out.emplace_back(prefix + n, t);
  if (!recurse) return;
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", true, buffers, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", recurse, false, out);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", recurse, true, out);
  return out;
}

std::int64_t Module::num_parameters() const {
  std::int64_t n = 0;
  for (const auto& t : parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

void Module::to(Device device) {
  for (auto* list : {&params_, &buffers_}) {
    for (auto& [n, t] : *list) replace_in_place(t, to_device(t.detach(), device));
  }
  for (auto& [n, c] : children_) c->to(device);
}

void Module::to(DType dtype) {
  for (auto* list : {&params_, &buffers_}) {
    for (auto& [n, t] : *list) {
      if (is_floating(t.dtype())) replace_in_place(t, to_dtype(t.detach(), dtype));
    }
  }
  for (auto& [n, c] : children_) c->to(dtype);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.zero_grad();
}

void Module::summary_into(std::ostream& os, const std::string& name, int depth) const {
  std::string pad(static_cast<std::size_t>(2 * depth), ' ');
  os << pad << (name.empty() ? "" : name + ": ") << type_name_;
  if (std::string info = extra_info(); !info.empty()) os << " [" << info << "]";
  std::int64_t own = 0;
  for (const auto& [n, t] : params_) own += t.numel();
  if (own) os << " (" << own << " params)";
  os << "\n";
  for (const auto& [n, t] : params_) os << pad << "  ." << n << " " << t.shape() << " " << t.dtype() << "\n";
  for (const auto& [n, c] : children_) c->summary_into(os, n, depth + 1);
}

void Module::requires_grad_(bool on) {
  for (Tensor t : parameters()) t.requires_grad_(on);
}

void Module::on_loaded() {
  for (const auto& [n, c] : children_) c->on_loaded();
}

std::string Module::summary() const {
  std::ostringstream os;
  summary_into(os, "", 0);
  os << "total parameters: " << num_parameters();
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Module& m) { return os << m.summary(); }

}  // namespace tg::nn
