#include "runtime/progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>

#include "runtime/error.h"

namespace tg {

ProgressBar::ProgressBar(std::int64_t total, ProgressOptions options)
    : total_(total), opts_(std::move(options)), t0_(std::chrono::steady_clock::now()) {
  if (total <= 0) TG_THROW(ValueError, "ProgressBar: total must be > 0, got ", total);
  if (opts_.width < 1) TG_THROW(ValueError, "ProgressBar: width must be >= 1, got ", opts_.width);
  redraw_ = opts_.redraw < 0 ? (opts_.out == nullptr && isatty(2)) : opts_.redraw == 1;
}

ProgressBar::~ProgressBar() { close(); }

std::ostream& ProgressBar::out() const { return opts_.out ? *opts_.out : std::cerr; }

std::string ProgressBar::format_duration(double s) {
  char b[32];
  if (!(s >= 0) || !std::isfinite(s)) return "?";
  if (s >= 3600)
    std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60)
    std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else
    std::snprintf(b, sizeof b, "%.0fs", s);
  return b;
}

std::string ProgressBar::render(const ProgressOptions& o, std::int64_t done, std::int64_t total,
                                const std::vector<std::pair<std::string, double>>& values, double rate, double eta_s) {
  const std::int64_t d = done < 0 ? 0 : done > total ? total : done;
  const auto filled =
      static_cast<int>(static_cast<double>(o.width) * static_cast<double>(d) / static_cast<double>(total));
  std::string s;
  if (!o.desc.empty()) s.append(o.desc).append(" ");
  s.append("[").append(static_cast<std::size_t>(filled), '#').append(static_cast<std::size_t>(o.width - filled), '.');
  s.append("] ").append(std::to_string(d)).append("/").append(std::to_string(total));
  char b[64];
  for (const auto& [name, v] : values) {
    std::snprintf(b, sizeof b, " %.3f", v);
    s.append(" ").append(name).append(b);
  }
  if (rate >= 0 && std::isfinite(rate)) {
    std::snprintf(b, sizeof b, " | %.0f %s/s", rate, o.unit.c_str());
    s += b;
  }
  s.append(" | ETA ").append(eta_s >= 0 ? format_duration(eta_s) : std::string("?"));
  return s;
}

void ProgressBar::update(std::int64_t done, const std::vector<std::pair<std::string, double>>& values) {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  if (first_done_ < 0) {
    // Steps done before the first update (a resumed run) do not count toward the rate.
    first_done_ = done;
    t0_ = std::chrono::steady_clock::now();
  }
  const std::int64_t counted = done - first_done_;
  const double rate = counted > 0 && elapsed > 0 ? static_cast<double>(counted) * opts_.units_per_step / elapsed : -1;
  const double eta =
      counted > 0 && elapsed > 0 ? elapsed / static_cast<double>(counted) * static_cast<double>(total_ - done) : -1;
  const std::string line = render(opts_, done, total_, values, rate, eta);
  if (redraw_) {
    // Spaces clear what a longer previous line left.
    const std::size_t pad = line_.size() > line.size() ? line_.size() - line.size() : 0;
    out() << "\r" << line << std::string(pad, ' ') << std::flush;
    drawn_ = true;
  }
  line_ = line;
}

void ProgressBar::print_line() {
  if (line_.empty()) return;
  if (redraw_) {
    out() << "\r" << line_ << "\n" << std::flush;
    drawn_ = false;
  } else {
    out() << line_ << "\n" << std::flush;
  }
}

void ProgressBar::close() {
  if (closed_) return;
  closed_ = true;
  if (redraw_ && drawn_) out() << "\n" << std::flush;
}

}  // namespace tg
