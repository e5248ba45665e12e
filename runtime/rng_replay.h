// Random-stream offsets that can be recorded and replayed: what lets a recomputed forward
// (activation checkpointing, autograd/activation_checkpoint.h) draw the same dropout masks
// as the first run.
//
// Every stateful stream in the library (the default Generator, nn::Dropout's and
// nn::MultiHeadAttention's dropout counters) takes its offsets through next_rng_offset. A
// RngRecord scope appends each offset drawn on its thread to a list; a RngReplay scope
// hands the list's offsets out again, in order, without advancing the counters. Scopes
// nest (a checkpoint inside a checkpoint): a draw is served by the innermost replay scope
// and recorded by every record scope inside it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace tg {

/// `counter++`, unless a RngReplay scope is active on this thread (then the next recorded
/// offset); appended to the active RngRecord scopes. Throws tg::Error when a replay runs
/// out of offsets (the recomputation drew more than the first run: it is not the same
/// computation).
std::uint64_t next_rng_offset(std::uint64_t& counter);

/// Records the offsets drawn on this thread while it lives, into `offsets`.
class RngRecord {
 public:
  explicit RngRecord(std::shared_ptr<std::vector<std::uint64_t>> offsets);
  ~RngRecord();
  RngRecord(const RngRecord&) = delete;
  RngRecord& operator=(const RngRecord&) = delete;
};

/// Serves this thread's draws from `offsets` (from the first) while it lives.
class RngReplay {
 public:
  explicit RngReplay(std::shared_ptr<const std::vector<std::uint64_t>> offsets);
  ~RngReplay();
  RngReplay(const RngReplay&) = delete;
  RngReplay& operator=(const RngReplay&) = delete;
};

}  // namespace tg
