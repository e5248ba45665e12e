// Module: the base of every layer. Holds named parameters, buffers and child modules,
// like torch.nn.Module; names are dotted paths ("blocks.0.attn.qkv.weight") used by
// checkpoints.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tg::nn {

class Module {
 public:
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// All parameters, depth first, with dotted names (recurse = include children).
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  /// Total number of parameter elements.
  std::int64_t num_parameters() const;

  /// Training mode (Dropout active) for this module and its children.
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Moves every parameter and buffer to `device` in place (handles held elsewhere see it).
  void to(Device device);
  /// Converts every floating parameter and buffer to `dtype` in place.
  void to(DType dtype);
  /// Drops the gradients of every parameter.
  void zero_grad();
  /// Sets requires_grad on every parameter (children included): false freezes the module,
  /// so backward computes no gradient for it and optimizers skip its parameters (they step
  /// only parameters with a gradient); true unfreezes it.
  void requires_grad_(bool on = true);

  const std::string& type_name() const { return type_name_; }
  /// A multi-line summary: module tree with parameter shapes and counts.
  std::string summary() const;

  /// Called by nn::load after it copied the file's tensors into this module's parameters
  /// and buffers: a module whose configuration lives in a buffer (a block-sparse layout)
  /// re-derives it here. The default forwards to the children.
  virtual void on_loaded();

 protected:
  /// One line of configuration printed next to the type name by summary() (e.g. "in 64,
  /// out 32"); empty by default.
  virtual std::string extra_info() const { return {}; }

  /// Registers a parameter (made a leaf requiring grad) and returns a handle to it.
  Tensor register_parameter(std::string name, Tensor t);
  /// Registers a non-trained tensor saved in checkpoints (e.g. running statistics).
  Tensor register_buffer(std::string name, Tensor t);
  template <typename M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> m) {
    children_.emplace_back(std::move(name), m);
    return m;
  }

 private:
  void collect(const std::string& prefix, bool recurse, bool buffers,
               std::vector<std::pair<std::string, Tensor>>& out) const;
  void summary_into(std::ostream& os, const std::string& name, int depth) const;
  std::string type_name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

std::ostream& operator<<(std::ostream& os, const Module& m);

}  // namespace tg::nn
