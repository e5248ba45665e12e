#include "optim/optimizer.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "autograd/grad_mode.h"
#include "ops/copy/copy.h"
#include "ops/elementwise/elementwise.h"
#include "ops/factory/factory.h"
#include "ops/optim/kernels.h"
#include "optim/grad_groups.h"
#include "optim/state_io.h"
#include "ops/shape/shape_ops.h"

namespace tg::optim {

namespace {
DType state_dtype(const Tensor& p) { return p.dtype() == DType::f64 ? DType::f64 : DType::f32; }

void check_grad(const Tensor& p, const Tensor& g, std::size_t i) {
  if (g.shape() != p.shape() || g.dtype() != p.dtype() || g.device() != p.device()) {
    TG_THROW(ShapeError, "optimizer step: gradient of parameter ", i, " is ", g.shape(), " ", g.dtype(), " on ",
             g.device(), ", expected ", p.shape(), " ", p.dtype(), " on ", p.device());
  }
}

// Parameters (and their gradients / state) that have a gradient this step.
struct Active {
  std::vector<Tensor> p, g, a, b;
};

// The parameters [range.first, range.second) with a gradient (checked against the
// parameter), with their entries of the state lists a and b (an empty list contributes
// nothing).
Active active(const std::vector<Tensor>& params, const std::vector<Tensor>& a, const std::vector<Tensor>& b,
              std::pair<std::size_t, std::size_t> range) {
  Active r;
  for (std::size_t i = range.first; i < range.second; ++i) {
    Tensor gi = params[i].grad();
    if (!gi.defined()) continue;
    check_grad(params[i], gi, i);
    r.p.push_back(params[i]);
    r.g.push_back(gi);
    if (!a.empty()) r.a.push_back(a[i]);
    if (!b.empty()) r.b.push_back(b[i]);
  }
  return r;
}

constexpr const char* kLoad = "optimizer load_state";

}  // namespace

std::vector<ParamGroup> decay_groups(const std::vector<Tensor>& params, double weight_decay) {
  ParamGroup decay{.params = {}, .weight_decay = weight_decay}, none{.params = {}, .weight_decay = 0.0};
  for (const Tensor& p : params) (p.defined() && p.dim() >= 2 ? decay : none).params.push_back(p);
  std::vector<ParamGroup> groups;
  for (ParamGroup* g : {&decay, &none})
    if (!g->params.empty()) groups.push_back(std::move(*g));
  return groups;
}

Optimizer::Optimizer(std::vector<Tensor> params, double lr)
    : Optimizer(std::vector<ParamGroup>{ParamGroup{.params = std::move(params)}}, lr) {}

Optimizer::Optimizer(std::vector<ParamGroup> groups, double lr) : groups_(std::move(groups)), lr_(lr) {
  begin_.push_back(0);
  std::unordered_map<const TensorImpl*, std::size_t> seen;
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& pg = groups_[g];
    if (!(pg.lr_scale >= 0)) TG_THROW(ValueError, "optimizer: group ", g, " has lr_scale ", pg.lr_scale, ", expected >= 0");
    if (pg.weight_decay && !(*pg.weight_decay >= 0)) {
      TG_THROW(ValueError, "optimizer: group ", g, " has weight_decay ", *pg.weight_decay, ", expected >= 0");
    }
    for (const Tensor& p : pg.params) {
      const std::size_t i = params_.size();
      if (!p.defined() || !p.requires_grad() || !p.is_leaf()) {
        // Say which of the three, and the usual cause of a non-leaf: a copy (to_device,
        // to_dtype, an arithmetic op) of a tensor that requires grad records a graph.
        const char* got = !p.defined()          ? "an undefined tensor"
                          : !p.requires_grad() ? "a tensor that does not require grad"
                                               : "a tensor computed from others (not a leaf: detach() it before "
                                                 "requires_grad_(), e.g. to_device(w.detach(), dev))";
        TG_THROW(ValueError, "optimizer: parameter ", i, " (group ", g, ") must be a leaf tensor requiring grad, got ",
                 got);
      }
      if (auto [it, fresh] = seen.emplace(&p.impl(), i); !fresh) {
        TG_THROW(ValueError, "optimizer: parameter ", i, " (group ", g, ") is parameter ", it->second,
                 " again; each may appear once");
      }
      params_.push_back(p);
    }
    begin_.push_back(params_.size());
  }
  if (!(lr >= 0)) TG_THROW(ValueError, "optimizer: learning rate must be >= 0, got ", lr);
}

void Optimizer::zero_grad() {
  for (auto& p : params_) p.zero_grad();
}

SGD::SGD(std::vector<Tensor> params, double lr, double momentum, double weight_decay)
    : SGD(std::vector<ParamGroup>{ParamGroup{.params = std::move(params)}}, lr, momentum, weight_decay) {}

SGD::SGD(std::vector<ParamGroup> groups, double lr, double momentum, double weight_decay)
    : Optimizer(std::move(groups), lr), momentum_(momentum), weight_decay_(weight_decay) {
  if (momentum < 0) TG_THROW(ValueError, "SGD: momentum must be >= 0, got ", momentum);
  for (auto& p : params_) {
    bufs_.push_back(momentum > 0 ? zeros(p.shape(), {.dtype = state_dtype(p), .device = p.device()}) : Tensor());
  }
}

void SGD::step() {
  NoGradGuard ng;
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    Active s = active(params_, bufs_, {}, group_range(g));
    if (s.p.empty()) continue;
    const ParamGroup& pg = groups_[g];
    ops::sgd_kernel()(s.p[0].device())(s.p, s.g, s.a, lr_ * pg.lr_scale, momentum_,
                                       pg.weight_decay.value_or(weight_decay_), grad_scale_);
  }
}

std::vector<std::pair<std::string, Tensor>> SGD::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (std::size_t i = 0; i < bufs_.size(); ++i)
    if (bufs_[i].defined()) s.emplace_back("momentum." + std::to_string(i), bufs_[i]);
  return s;
}

void SGD::load_state(const std::vector<std::pair<std::string, Tensor>>& st) {
  for (std::size_t i = 0; i < bufs_.size(); ++i) {
    if (!bufs_[i].defined()) continue;
    const std::string name = "momentum." + std::to_string(i);
    detail::restore_state(bufs_[i], detail::find_state(st, name, kLoad), name, kLoad);
  }
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions opts)
    : AdamW(std::vector<ParamGroup>{ParamGroup{.params = std::move(params)}}, opts) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions opts) : Optimizer(std::move(groups), opts.lr), opts_(opts) {
  if (!(opts.beta1 >= 0 && opts.beta1 < 1 && opts.beta2 >= 0 && opts.beta2 < 1)) {
    TG_THROW(ValueError, "AdamW: betas must be in [0, 1), got (", opts.beta1, ", ", opts.beta2, ")");
  }
  NoGradGuard ng;
  for (auto& p : params_) {
    m_.push_back(zeros(p.shape(), {.dtype = state_dtype(p), .device = p.device()}));
    v_.push_back(zeros(p.shape(), {.dtype = state_dtype(p), .device = p.device()}));
    const bool half = p.dtype() == DType::bf16 || p.dtype() == DType::f16;
    master_.push_back(opts.master_weights && half ? to_dtype(p.detach(), DType::f32) : Tensor());
  }
}

void AdamW::step() {
  NoGradGuard ng;
  std::vector<Active> per_group;
  bool any = false;
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    per_group.push_back(active(params_, m_, v_, group_range(g)));
    any = any || !per_group.back().p.empty();
  }
  if (!any) return;
  ++step_;  // one step for every group: the bias corrections stay in line
  for (std::size_t g = 0; g < groups_.size(); ++g) {
    const Active& s = per_group[g];
    if (s.p.empty()) continue;
    const ParamGroup& pg = groups_[g];
    const ops::AdamWHyper h{lr_ * pg.lr_scale, opts_.beta1, opts_.beta2, opts_.eps,
                            pg.weight_decay.value_or(opts_.weight_decay), step_, grad_scale_};
    // Parameters with master weights step on their f32 copy with f32 gradients (the kernel
    // takes gradients of its parameters' dtype), then take the copy rounded.
    Active direct, mastered;
    std::vector<Tensor> targets;
    const auto [begin, end] = group_range(g);
    for (std::size_t k = 0, i = begin; i < end; ++i) {
      if (k >= s.p.size() || &s.p[k].impl() != &params_[i].impl()) continue;  // no gradient this step
      Active& into = master_[i].defined() ? mastered : direct;
      into.p.push_back(master_[i].defined() ? master_[i] : s.p[k]);
      into.g.push_back(master_[i].defined() ? to_dtype(s.g[k], DType::f32) : s.g[k]);
      into.a.push_back(s.a[k]);
      into.b.push_back(s.b[k]);
      if (master_[i].defined()) targets.push_back(s.p[k]);
      ++k;
    }
    for (const Active* a : {&direct, &mastered}) {
      if (!a->p.empty()) ops::adamw_kernel()(a->p[0].device())(a->p, a->g, a->a, a->b, h);
    }
    for (std::size_t t = 0; t < targets.size(); ++t) {
      copy_bytes(targets[t], to_dtype(mastered.p[t], targets[t].dtype()));
    }
  }
}

void AdamW::sync_master_weights() {
  NoGradGuard ng;
  for (std::size_t i = 0; i < master_.size(); ++i) {
    if (master_[i].defined()) copy_bytes(master_[i], to_dtype(params_[i].detach(), DType::f32));
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  s.emplace_back("step", from_vector<std::int64_t>({step_}, {1}));
  for (std::size_t i = 0; i < m_.size(); ++i) {
    s.emplace_back("m." + std::to_string(i), m_[i]);
    s.emplace_back("v." + std::to_string(i), v_[i]);
    if (master_[i].defined()) s.emplace_back("master." + std::to_string(i), master_[i]);
  }
  return s;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& st) {
  step_ = detail::find_state(st, "step", kLoad).to_vector<std::int64_t>().at(0);
  for (std::size_t i = 0; i < m_.size(); ++i) {
    for (auto [state, key] : {std::pair{&m_[i], "m."}, std::pair{&v_[i], "v."}}) {
      const std::string name = key + std::to_string(i);
      detail::restore_state(*state, detail::find_state(st, name, kLoad), name, kLoad);
    }
    if (!master_[i].defined()) continue;
    const std::string name = "master." + std::to_string(i);
    const bool saved = std::any_of(st.begin(), st.end(), [&](const auto& e) { return e.first == name; });
    if (saved) {
      detail::restore_state(master_[i], detail::find_state(st, name, kLoad), name, kLoad);
    } else {
      NoGradGuard ng;
      copy_bytes(master_[i], to_dtype(params_[i].detach(), DType::f32));
    }
  }
}

Tensor clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard ng;
  // Per device: one multi-tensor launch sums every gradient's squares into an f64 scalar
  // on that device, one more scales them by the factor it computes from that scalar. With
  // one device the host reads nothing (a read-back per step stalled the training loop
  // between backward and optimizer); several devices add their sums on the host.
  const std::vector<std::vector<Tensor>> by_device = detail::grads_by_device(params, "clip_grad_norm");
  if (by_device.empty()) return zeros({}, {.dtype = DType::f64});
  const std::vector<Tensor> sums = detail::square_sums(by_device);
  Tensor total = sums[0];
  if (by_device.size() > 1) {
    double t = 0;
    for (const Tensor& s : sums) t += s.item<double>();
    total = from_vector(std::vector<double>{t}, {1});
  }
  for (const auto& grads : by_device) {
    const Tensor ss = total.to(grads[0].device());
    ops::grad_scale_kernel()(grads[0].device())(grads, ss, max_norm);
  }
  return tg::reshape(tg::sqrt(total), Shape{});
}

double clip_grad_norm(const std::vector<Tensor>& params, double max_norm) {
  return clip_grad_norm_(params, max_norm).item<double>();
}

double warmup_cosine_lr(std::int64_t step, std::int64_t warmup, std::int64_t total, double peak, double min_lr) {
  if (step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (step >= total) return min_lr;
  double t = static_cast<double>(step - warmup) / static_cast<double>(std::max<std::int64_t>(1, total - warmup));
  return min_lr + 0.5 * (peak - min_lr) * (1 + std::cos(3.14159265358979323846 * t));
}

}  // namespace tg::optim
