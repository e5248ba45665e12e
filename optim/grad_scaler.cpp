#include "optim/grad_scaler.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "ops/elementwise/elementwise.h"
#include "optim/grad_groups.h"
#include "optim/state_io.h"

namespace tg::optim {

GradScaler::GradScaler(GradScalerOptions o) : opts_(o), scale_(o.init_scale) {
  if (!(o.init_scale > 0)) TG_THROW(ValueError, "GradScaler: init_scale must be > 0, got ", o.init_scale);
  if (!(o.growth_factor > 1)) TG_THROW(ValueError, "GradScaler: growth_factor must be > 1, got ", o.growth_factor);
  if (!(o.backoff_factor > 0 && o.backoff_factor < 1)) {
    TG_THROW(ValueError, "GradScaler: backoff_factor must be in (0, 1), got ", o.backoff_factor);
  }
  if (o.growth_interval < 1) TG_THROW(ValueError, "GradScaler: growth_interval must be >= 1, got ", o.growth_interval);
}

Tensor GradScaler::scale(const Tensor& loss) const {
  if (!loss.defined()) TG_THROW(ValueError, "GradScaler::scale: the loss is undefined");
  return mul(loss, scale_);
}

Tensor GradScaler::clip_grad_norm_(Optimizer& opt, double max_norm) const {
  // The stored gradients are the true ones times the scale: so are their norm and the
  // bound, and the clipping factor is the same.
  return div(optim::clip_grad_norm_(opt.params(), max_norm * scale_), scale_);
}

bool GradScaler::step(Optimizer& opt) {
  if (stepped_) TG_THROW(ValueError, "GradScaler::step: already called for this step; call update() first");
  NoGradGuard ng;
  // inf and NaN survive the sum of squares (as does a square past f32's range).
  bool finite = true;
  for (const Tensor& sum : detail::square_sums(detail::grads_by_device(opt.params(), "GradScaler::step"))) {
    finite = finite && std::isfinite(sum.item<double>());
  }
  skipped_ = !finite;
  stepped_ = true;
  if (skipped_) return false;
  struct Restore {
    Optimizer& o;
    ~Restore() { o.grad_scale_ = 1.0; }
  } restore{opt};
  opt.grad_scale_ = 1.0 / scale_;
  opt.step();
  return true;
}

void GradScaler::update() {
  if (!stepped_) TG_THROW(ValueError, "GradScaler::update: call step() first");
  if (skipped_) {
    scale_ *= opts_.backoff_factor;
    tracker_ = 0;
  } else if (++tracker_ >= opts_.growth_interval) {
    scale_ *= opts_.growth_factor;
    tracker_ = 0;
  }
  stepped_ = false;
}

std::vector<std::pair<std::string, Tensor>> GradScaler::state() const {
  return {{"scale", from_vector<double>({scale_}, {1})},
          {"growth_tracker", from_vector<std::int64_t>({tracker_}, {1})}};
}

void GradScaler::load_state(const std::vector<std::pair<std::string, Tensor>>& st) {
  const char* owner = "GradScaler::load_state";
  scale_ = detail::find_state(st, "scale", owner).to_vector<double>().at(0);
  tracker_ = detail::find_state(st, "growth_tracker", owner).to_vector<std::int64_t>().at(0);
  stepped_ = false;
}

}  // namespace tg::optim
