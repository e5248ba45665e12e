// A text progress bar for training loops (like tqdm):
//   [##########....................] 120/360 loss 2.345 val 2.501 | 9876 tok/s | ETA 1m02s
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

namespace tg {

struct ProgressOptions {
  std::string desc{};           ///< printed before the bar ("" for none)
  int width = 30;               ///< characters of the bar
  std::string unit = "it";      ///< the rate's unit: "<rate> <unit>/s"
  double units_per_step = 1.0;  ///< units one step counts for (tokens a step, samples a batch)
  /// 1: redraw one line in place (a terminal); 0: print lines only on print_line() (a log
  /// file); -1: 1 when stderr is a terminal, else 0.
  int redraw = -1;
  std::ostream* out = nullptr;  ///< where to print; nullptr: std::cerr
};

class ProgressBar {
 public:
  /// A bar over `total` steps (> 0; ValueError otherwise), timed from now.
  explicit ProgressBar(std::int64_t total, ProgressOptions options = {});
  /// Ends the line if the bar drew one.
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  /// `done` of the total steps are complete (0..total), with named values shown after the
  /// count (e.g. {{"loss", 2.3}}). Redraws the line in place when redrawing. The rate counts
  /// the steps done since the first update.
  void update(std::int64_t done, const std::vector<std::pair<std::string, double>>& values = {});
  /// Prints the current line as a permanent one (in place of the redrawn one when
  /// redrawing): e.g. after an evaluation, so that a log keeps it.
  void print_line();
  /// Ends the redrawn line (idempotent).
  void close();

  /// The line for `done` of `total` steps, `rate` units a second and `eta_s` seconds left
  /// (< 0: unknown), without timing: what update() draws.
  static std::string render(const ProgressOptions& options, std::int64_t done, std::int64_t total,
                            const std::vector<std::pair<std::string, double>>& values, double rate, double eta_s);
  /// "45s", "3m07s", "2h05m".
  static std::string format_duration(double seconds);

 private:
  std::ostream& out() const;
  std::int64_t total_;
  ProgressOptions opts_;
  bool redraw_;
  std::chrono::steady_clock::time_point t0_;
  std::int64_t first_done_ = -1;
  std::string line_;
  bool drawn_ = false, closed_ = false;
};

}  // namespace tg
