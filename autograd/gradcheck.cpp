#include "autograd/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "autograd/engine.h"
#include "runtime/philox.h"

namespace tg::autograd {

namespace {

Tensor fresh_copy(const Tensor& t) {
  Tensor c = empty(t.shape(), {.dtype = t.dtype(), .device = t.device()});
  copy_bytes(c, t);
  return c;
}

double projected(const Tensor& out, const std::vector<double>& r) {
  const double* p = out.data<double>();
  double s = 0;
  for (std::size_t i = 0; i < r.size(); ++i) s += r[i] * p[i];
  return s;
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, GradcheckOptions opts) {
  if (opts.directions < 0) TG_THROW(ValueError, "gradcheck: opts.directions must be >= 0, got ", opts.directions);
  std::vector<Tensor> leaves;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined()) {
      leaves.push_back(t);
      continue;
    }
    if (t.device() != Device::cpu()) TG_THROW(DeviceError, "gradcheck: input ", i, " must be on the CPU, got ", t.device());
    if (t.requires_grad() && t.dtype() != DType::f64) {
      TG_THROW(DTypeError, "gradcheck: input ", i, " requires grad and must be f64, got ", t.dtype());
    }
    Tensor c = fresh_copy(t);
    if (t.requires_grad()) c.requires_grad_(true);
    leaves.push_back(c);
  }

  Tensor out = f(leaves);
  if (out.dtype() != DType::f64 || out.device() != Device::cpu()) {
    TG_THROW(DTypeError, "gradcheck: f must return an f64 CPU tensor, got ", out.dtype(), " on ", out.device());
  }
  std::vector<double> r(static_cast<std::size_t>(out.numel()));
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = 2.0 * philox::uniform(opts.seed, 0, i) - 1.0;

  GradcheckResult res;
  std::ostringstream report;
  if (!out.requires_grad()) {
    bool any = false;
    for (const Tensor& l : leaves) any = any || (l.defined() && l.requires_grad());
    if (any) {
      res.ok = false;
      res.report = "gradcheck: the output does not depend differentiably on any input requiring grad";
      return res;
    }
    return res;
  }
  Tensor grad_out = from_vector(r, out.shape());
  backward(out, grad_out);

  NoGradGuard no_grad;
  int reported = 0;
  for (std::size_t k = 0; k < leaves.size(); ++k) {
    Tensor& x = leaves[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor analytic = x.grad();
    std::vector<double> a = analytic.defined() ? analytic.to_vector<double>()
                                               : std::vector<double>(static_cast<std::size_t>(x.numel()), 0.0);
    double* px = x.data<double>();
    if (opts.directions > 0) {
      // Along random directions: x moves as a whole, so one pair of calls checks a weighted
      // sum of every element's gradient.
      const std::size_t n = static_cast<std::size_t>(x.numel());
      const std::vector<double> orig(px, px + n);
      std::vector<double> d(n);
      for (std::int64_t i = 0; i < opts.directions; ++i) {
        for (std::size_t j = 0; j < n; ++j) {
          d[j] = 2.0 * philox::uniform(opts.seed, 1 + k * 1024 + static_cast<std::uint64_t>(i), j) - 1.0;
        }
        double analytic_d = 0;
        for (std::size_t j = 0; j < n; ++j) analytic_d += a[j] * d[j];
        for (std::size_t j = 0; j < n; ++j) px[j] = orig[j] + opts.eps * d[j];
        const double lp = projected(f(leaves), r);
        for (std::size_t j = 0; j < n; ++j) px[j] = orig[j] - opts.eps * d[j];
        const double lm = projected(f(leaves), r);
        std::copy(orig.begin(), orig.end(), px);
        const double numeric = (lp - lm) / (2 * opts.eps);
        const double err = std::fabs(analytic_d - numeric);
        if (std::isfinite(err)) res.max_abs_error = std::max(res.max_abs_error, err);
        if (!(err <= opts.atol + opts.rtol * std::fabs(numeric))) {
          res.ok = false;
          if (reported++ < 8) {
            report << "input " << k << " direction " << i << ": analytic " << analytic_d << ", numeric " << numeric
                   << ", |diff| " << err << "\n";
          }
        }
      }
      continue;
    }
    for (std::int64_t j = 0; j < x.numel(); ++j) {
      double orig = px[j];
      px[j] = orig + opts.eps;
      double lp = projected(f(leaves), r);
      px[j] = orig - opts.eps;
      double lm = projected(f(leaves), r);
      px[j] = orig;
      double numeric = (lp - lm) / (2 * opts.eps);
      double err = std::fabs(a[static_cast<std::size_t>(j)] - numeric);
      bool bad = !(err <= opts.atol + opts.rtol * std::fabs(numeric));
      if (std::isfinite(err)) res.max_abs_error = std::max(res.max_abs_error, err);
      if (bad) {
        res.ok = false;
        if (reported++ < 8) {
          report << "input " << k << " element " << j << ": analytic " << a[static_cast<std::size_t>(j)]
                 << ", numeric " << numeric << ", |diff| " << err << "\n";
        }
      }
    }
  }
  if (!res.ok) report << "(max |diff| " << res.max_abs_error << ")";
  res.report = report.str();
  return res;
}

}  // namespace tg::autograd
