// What the span kernel of a CUDA gather along dim 1 found the last time it ran on an idx
// layout, so that the automatic kernel choice follows the index pattern
// (ops/sparse_move/gather_path.h): where most idx blocks read rows outside their own span of
// a few source blocks (scattered rows), the span kernel gathers them element by element and
// the column-strip kernel is 4-5x faster; elsewhere the span kernel is the faster one. The
// kernels cannot see the pattern before they run, so the span kernel counts, per CTA, the
// items it gathered directly into mapped pinned memory, and a later call on the same idx
// layout reads those counts once the launch's event has completed (never waiting for it).
// The choice changes speed only: every kernel gives the same result. Include only from .cu
// files.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <mutex>

#include "core/layout.h"

namespace tg::ops::smove {

/// The most CTAs of a span launch that reports its counts.
constexpr unsigned kSpanHistoryCtas = 4096;
/// While a layout runs on strips, every this many calls run the span kernel again to
/// re-measure the pattern (a cost of about 3% where it is scattered).
constexpr std::uint64_t kSpanReprobeCalls = 128;

/// The history of the dim-1 gathers on one idx layout and device (an attachment of the
/// layout). Callers hold `mu` from prefer_strips() to launched().
class SpanHistory {
 public:
  /// The history of idx layout `il` on CUDA device `device` (made on first use).
  static std::shared_ptr<SpanHistory> of(const Layout& il, int device);

  explicit SpanHistory(int device) : device_(device) {}
  ~SpanHistory();
  SpanHistory(const SpanHistory&) = delete;
  SpanHistory& operator=(const SpanHistory&) = delete;

  /// Folds in the counts of the last reporting launch where it has completed, and says
  /// whether this call should run the strip kernel: the last counts had more than half
  /// of the items gathered directly, and this call is not a re-probe. Counts the call.
  bool prefer_strips();
  /// Where a span launch of `grid` CTAs writes its counts (CTA c at [c]); null while an
  /// earlier launch's counts are unread, or for grids over kSpanHistoryCtas.
  int* sink(unsigned grid);
  /// After a launch given a non-null sink(): an event on `stream` marks when its counts of
  /// `items` idx blocks are complete.
  void launched(cudaStream_t stream, unsigned grid, std::int64_t items);

  std::mutex mu;

 private:
  int device_;
  std::shared_ptr<int> counts_;  // mapped pinned, kSpanHistoryCtas entries
  cudaEvent_t event_ = nullptr;
  bool pending_ = false;
  unsigned grid_ = 0;
  std::int64_t items_ = 0;
  bool strips_ = false;
  std::uint64_t calls_ = 0;
};

}  // namespace tg::ops::smove
