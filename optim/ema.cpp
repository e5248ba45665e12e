#include "optim/ema.h"

#include <algorithm>

#include "autograd/grad_mode.h"
#include "ops/copy/copy.h"
#include "ops/elementwise/elementwise.h"
#include "optim/state_io.h"

namespace tg::optim {

ExponentialMovingAverage::ExponentialMovingAverage(std::vector<Tensor> params, double decay)
    : params_(std::move(params)), decay_(decay) {
  if (!(decay >= 0.0 && decay < 1.0))
    TG_THROW(ValueError, "ExponentialMovingAverage: decay must be in [0, 1), got ", decay);
  NoGradGuard ng;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i];
    if (!p.defined() || !is_floating(p.dtype())) {
      TG_THROW(ValueError, "ExponentialMovingAverage: parameter ", i, " must be a defined floating tensor, got ",
               p.defined() ? dtype_name(p.dtype()) : "an undefined tensor");
    }
    // A new tensor even when the dtype already matches: the shadow must not alias p.
    shadows_.push_back(clone(to_dtype(p.detach(), p.dtype() == DType::f64 ? DType::f64 : DType::f32)));
  }
}

void ExponentialMovingAverage::update() {
  NoGradGuard ng;
  ++updates_;
  const double d = std::min(decay_, (1.0 + static_cast<double>(updates_)) / (10.0 + static_cast<double>(updates_)));
  for (std::size_t i = 0; i < params_.size(); ++i) {
    Tensor& s = shadows_[i];
    copy_bytes(s, s * d + to_dtype(params_[i].detach(), s.dtype()) * (1.0 - d));
  }
}

void ExponentialMovingAverage::copy_to() const {
  NoGradGuard ng;
  for (std::size_t i = 0; i < params_.size(); ++i) copy_bytes(params_[i], to_dtype(shadows_[i], params_[i].dtype()));
}

std::vector<std::pair<std::string, Tensor>> ExponentialMovingAverage::state() const {
  std::vector<std::pair<std::string, Tensor>> st;
  st.emplace_back("num_updates", from_vector<std::int64_t>({updates_}, {1}));
  for (std::size_t i = 0; i < shadows_.size(); ++i) st.emplace_back("shadow." + std::to_string(i), shadows_[i]);
  return st;
}

void ExponentialMovingAverage::load_state(const std::vector<std::pair<std::string, Tensor>>& st) {
  const char* owner = "ExponentialMovingAverage::load_state";
  for (std::size_t i = 0; i < shadows_.size(); ++i) {
    const std::string name = "shadow." + std::to_string(i);
    detail::restore_state(shadows_[i], detail::find_state(st, name, owner), name, owner);
  }
  updates_ = detail::find_state(st, "num_updates", owner).to_vector<std::int64_t>().at(0);
}

ExponentialMovingAverage::Swap::Swap(const ExponentialMovingAverage& ema) : ema_(ema) {
  NoGradGuard ng;
  for (const Tensor& p : ema_.params_) saved_.push_back(clone(p.detach()));
  ema_.copy_to();
}

ExponentialMovingAverage::Swap::~Swap() {
  NoGradGuard ng;
  for (std::size_t i = 0; i < saved_.size(); ++i) copy_bytes(ema_.params_[i], saved_[i]);
}

}  // namespace tg::optim
