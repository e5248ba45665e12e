#include "runtime/rng_replay.h"

#include "runtime/error.h"

namespace tg {

namespace {

struct Scope {
  bool replay = false;
  std::shared_ptr<std::vector<std::uint64_t>> record;
  std::shared_ptr<const std::vector<std::uint64_t>> source;
  std::size_t pos = 0;
};

thread_local std::vector<Scope> t_scopes;

// The offset scope `level` (and those outside it) gives: a replayed one, or the counter's.
std::uint64_t draw(std::uint64_t& counter, std::ptrdiff_t level) {
  if (level < 0) return counter++;
  Scope& s = t_scopes[static_cast<std::size_t>(level)];
  if (s.replay) {
    if (s.pos >= s.source->size()) {
      TG_THROW(Error, "activation checkpoint: the recomputed forward draws more random numbers (", s.pos + 1,
               " streams) than the first run (", s.source->size(),
               "); the function must do the same work each time (same modules in training mode, same shapes)");
    }
    return (*s.source)[s.pos++];
  }
  const std::uint64_t v = draw(counter, level - 1);
  s.record->push_back(v);
  return v;
}

}  // namespace

std::uint64_t next_rng_offset(std::uint64_t& counter) {
  return draw(counter, static_cast<std::ptrdiff_t>(t_scopes.size()) - 1);
}

RngRecord::RngRecord(std::shared_ptr<std::vector<std::uint64_t>> offsets) {
  t_scopes.push_back(Scope{false, std::move(offsets), nullptr, 0});
}
RngRecord::~RngRecord() { t_scopes.pop_back(); }

RngReplay::RngReplay(std::shared_ptr<const std::vector<std::uint64_t>> offsets) {
  t_scopes.push_back(Scope{true, nullptr, std::move(offsets), 0});
}
RngReplay::~RngReplay() { t_scopes.pop_back(); }

}  // namespace tg
